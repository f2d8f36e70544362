//! Unification of a signature's types (the pattern, with unknown dimension and shape variables)
//! against the types of actual arguments (§2: `V`, `c*V`, `c*V + d` are solved; anything else
//! must be given explicitly).

use std::collections::BTreeSet;

use fluxc_syntax::Code;

use super::ty::{Elem, Sh, Subst, Ty, show_dim};
use crate::dims::{Dim, Solution, solve};

/// Why a pattern did not match: the code (E0301 shape, E0302 dtype) and a note naming the part.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    pub code: Code,
    pub note: String,
}

fn shape_err(note: impl Into<String>) -> Mismatch {
    Mismatch { code: Code::E0301, note: note.into() }
}

pub struct Unifier<'a> {
    pub unknowns: &'a BTreeSet<String>,
    pub subst: Subst,
    /// Dimension equations not solvable yet (`N*N = 4`, `N/2 = H`): retried as others get solved.
    deferred: Vec<(Dim, Dim, String)>,
}

impl<'a> Unifier<'a> {
    pub fn new(unknowns: &'a BTreeSet<String>) -> Unifier<'a> {
        Unifier { unknowns, subst: Subst::default(), deferred: Vec::new() }
    }

    fn open(&self) -> BTreeSet<String> {
        self.unknowns
            .iter()
            .filter(|v| !self.subst.dims.contains_key(*v) && !self.subst.shapes.contains_key(*v))
            .cloned()
            .collect()
    }

    /// The names still unsolved.
    pub fn unsolved(&self) -> BTreeSet<String> {
        self.open()
    }

    pub fn ty(&mut self, pattern: &Ty, actual: &Ty) -> Result<(), Mismatch> {
        match (pattern, actual) {
            (Ty::Error, _) | (_, Ty::Error) => Ok(()),
            (Ty::Tensor(pe, ps), _) => {
                let Some((ae, as_)) = actual.as_tensor() else {
                    return Err(shape_err(format!("expected a tensor, found {}", actual.describe_kind())));
                };
                let elem_ok = match actual {
                    Ty::Dim(_) => *pe != Elem::Bool,
                    _ => *pe == ae,
                };
                if !elem_ok {
                    return Err(Mismatch {
                        code: Code::E0302,
                        note: format!("element type: expected {}, found {}", pe.as_str(), ae.as_str()),
                    });
                }
                self.shape(ps, &as_)
            }
            (Ty::Tuple(ps), Ty::Tuple(as_)) => {
                if ps.len() != as_.len() {
                    return Err(shape_err(format!(
                        "expected a tuple of {} items, found one of {}",
                        ps.len(),
                        as_.len()
                    )));
                }
                for (p, a) in ps.iter().zip(as_) {
                    self.ty(p, a)?;
                }
                Ok(())
            }
            (Ty::Tuple(ps), _) => Err(shape_err(format!(
                "expected {}, found {}",
                if ps.is_empty() { "`()`".to_owned() } else { format!("a tuple of {} items", ps.len()) },
                actual.describe_kind()
            ))),
            // Function and other values are compared by the caller, which knows how to call them.
            _ => Ok(()),
        }
    }

    pub fn shape(&mut self, pattern: &[Sh], actual: &[Sh]) -> Result<(), Mismatch> {
        let pattern = self.subst.shape(pattern).map_err(|_| shape_err("dimension arithmetic overflows"))?;
        let open = self.open();
        let spread_at = pattern.iter().position(|s| matches!(s, Sh::Spread(_)));
        let actual_spread = actual.iter().position(|s| matches!(s, Sh::Spread(_)));
        let rank_note = || format!("rank: expected {}, found {}", rank_text(&pattern), rank_text(actual));
        match spread_at {
            Some(at) => {
                let Some(Sh::Spread(name)) = pattern.get(at) else { return Ok(()) };
                let prefix = at;
                let suffix = pattern.len() - at - 1;
                if open.contains(name) {
                    // `..S` unknown: it takes the middle of the actual shape.
                    let fits = match actual_spread {
                        Some(a) => a >= prefix && actual.len() - a > suffix,
                        None => actual.len() >= prefix + suffix,
                    };
                    if !fits {
                        return Err(shape_err(rank_note()));
                    }
                    let middle: Vec<Sh> =
                        actual.get(prefix..actual.len() - suffix).unwrap_or_default().to_vec();
                    self.subst.shapes.insert(name.clone(), middle);
                    self.pairs(&pattern, actual, prefix, suffix)
                } else {
                    // A known shape variable: the actual must have the same one at the same place.
                    match actual_spread {
                        Some(a)
                            if a == prefix
                                && actual.len() == pattern.len()
                                && actual.get(a) == pattern.get(at) =>
                        {
                            self.pairs(&pattern, actual, prefix, suffix)
                        }
                        _ => Err(shape_err(rank_note())),
                    }
                }
            }
            None => {
                if actual_spread.is_some() || actual.len() != pattern.len() {
                    return Err(shape_err(rank_note()));
                }
                self.pairs(&pattern, actual, pattern.len(), 0)
            }
        }
    }

    /// Unifies the first `prefix` and the last `suffix` dimensions pairwise.
    fn pairs(&mut self, pattern: &[Sh], actual: &[Sh], prefix: usize, suffix: usize) -> Result<(), Mismatch> {
        let n = pattern.len();
        let m = actual.len();
        let mut idx: Vec<(usize, usize)> = (0..prefix).map(|i| (i, i)).collect();
        idx.extend((0..suffix).map(|k| (n - suffix + k, m - suffix + k)));
        for (pi, ai) in idx {
            if let (Some(Sh::Dim(p)), Some(Sh::Dim(a))) = (pattern.get(pi), actual.get(ai)) {
                self.dim(p, a, &format!("dimension {ai}"))?;
            }
        }
        Ok(())
    }

    pub fn dim(&mut self, pattern: &Dim, actual: &Dim, what: &str) -> Result<(), Mismatch> {
        let p = self.subst.dim(pattern).map_err(|_| shape_err("dimension arithmetic overflows"))?;
        match solve(&p, &self.open(), actual) {
            Solution::Solved(name, value) => {
                self.subst.dims.insert(name, value);
                Ok(())
            }
            Solution::NoUnknown if p == *actual => Ok(()),
            Solution::NoUnknown | Solution::NoNaturalSolution => {
                Err(shape_err(format!("{what}: expected {}, found {}", show_dim(&p), show_dim(actual))))
            }
            Solution::NotSolvable => {
                self.deferred.push((pattern.clone(), actual.clone(), what.to_owned()));
                Ok(())
            }
        }
    }

    /// Retries the deferred equations until nothing changes; what still mentions an unknown is
    /// left for the caller (E0304).
    pub fn finish(&mut self) -> Result<(), Mismatch> {
        loop {
            let pending = std::mem::take(&mut self.deferred);
            let before = pending.len();
            for (p, a, what) in pending {
                self.dim(&p, &a, &what)?;
            }
            if self.deferred.len() == before {
                return Ok(());
            }
        }
    }
}

fn rank_text(shape: &[Sh]) -> String {
    let fixed = shape.iter().filter(|s| matches!(s, Sh::Dim(_))).count();
    let spread = shape.iter().any(|s| matches!(s, Sh::Spread(_)));
    let plural = if fixed == 1 { "" } else { "s" };
    if spread {
        format!("{fixed} dimension{plural} and a shape variable")
    } else {
        format!("{fixed} dimension{plural}")
    }
}
