//! Dimension expressions in normal form (LANGUAGE.md §2, §10.5, §12.12).
//!
//! A dimension is a sum of terms, each an integer coefficient times a product of atoms; an atom
//! is a dimension variable, `product(S)` of a shape variable, or a floor division that does not
//! divide out (kept opaque, with its numerator and divisor normalised). So `2*H + H` is `3*H`,
//! `(2*H)/2` is `H`, and two dimensions are equal exactly when their normal forms are.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

/// An indivisible factor of a term.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Atom {
    Var(String),
    /// `product(S)`: the product of a shape variable's dimensions (1 for an empty shape).
    Product(String),
    /// `num / den` (floor division) that does not divide out.
    FloorDiv(Box<Dim>, Box<Dim>),
}

/// A product of atoms, sorted, with repetition (`H*H*W`). Empty: the constant term.
type Monomial = Vec<Atom>;

/// A dimension in normal form: monomial → non-zero coefficient. Shared, so that cloning a
/// dimension (every type in a graph holds several, and the optimizer's analysis copies types by
/// the thousand) costs a reference count, not a map.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dim {
    terms: Arc<BTreeMap<Monomial, i64>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DimError {
    /// A coefficient left the range of i64.
    Overflow,
    DivisionByZero,
}

type DimResult = Result<Dim, DimError>;

impl Dim {
    pub fn constant(c: i64) -> Dim {
        let mut terms = BTreeMap::new();
        if c != 0 {
            terms.insert(Vec::new(), c);
        }
        Dim { terms: Arc::new(terms) }
    }

    pub fn var(name: &str) -> Dim {
        Dim::atom(Atom::Var(name.to_owned()))
    }

    pub fn product_of(shape: &str) -> Dim {
        Dim::atom(Atom::Product(shape.to_owned()))
    }

    fn atom(atom: Atom) -> Dim {
        Dim { terms: Arc::new(BTreeMap::from([(vec![atom], 1)])) }
    }

    /// The value when the dimension has no variables.
    pub fn as_constant(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    /// The least value over every assignment of naturals (variables and products at least 1),
    /// when that is plain to see: no opaque division, and no negative coefficient on a
    /// non-constant term (then every variable at 1 gives the minimum).
    pub fn min_over_naturals(&self) -> Option<i64> {
        let mut sum: i64 = 0;
        for (m, c) in self.terms.iter() {
            if m.iter().any(|a| matches!(a, Atom::FloorDiv(..))) || (!m.is_empty() && *c < 0) {
                return None;
            }
            sum = sum.checked_add(*c)?;
        }
        Some(sum)
    }

    /// The dimension variables (and shape variables of `product`) it mentions, sorted.
    pub fn variables(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for monomial in self.terms.keys() {
            for atom in monomial {
                match atom {
                    Atom::Var(v) | Atom::Product(v) => {
                        out.insert(v.clone());
                    }
                    Atom::FloorDiv(n, d) => {
                        out.extend(n.variables());
                        out.extend(d.variables());
                    }
                }
            }
        }
        out
    }

    fn add_term(&mut self, monomial: Monomial, c: i64) -> Result<(), DimError> {
        let terms = Arc::make_mut(&mut self.terms);
        let entry = terms.entry(monomial).or_insert(0);
        *entry = entry.checked_add(c).ok_or(DimError::Overflow)?;
        terms.retain(|_, c| *c != 0);
        Ok(())
    }

    pub fn add(&self, other: &Dim) -> DimResult {
        let mut out = self.clone();
        for (m, c) in other.terms.iter() {
            out.add_term(m.clone(), *c)?;
        }
        Ok(out)
    }

    pub fn neg(&self) -> DimResult {
        let mut out = Dim::default();
        for (m, c) in self.terms.iter() {
            Arc::make_mut(&mut out.terms).insert(m.clone(), c.checked_neg().ok_or(DimError::Overflow)?);
        }
        Ok(out)
    }

    pub fn sub(&self, other: &Dim) -> DimResult {
        self.add(&other.neg()?)
    }

    pub fn mul(&self, other: &Dim) -> DimResult {
        let mut out = Dim::default();
        for (m1, c1) in self.terms.iter() {
            for (m2, c2) in other.terms.iter() {
                let mut m: Monomial = m1.iter().chain(m2.iter()).cloned().collect();
                m.sort();
                out.add_term(m, c1.checked_mul(*c2).ok_or(DimError::Overflow)?)?;
            }
        }
        Ok(out)
    }

    /// Floor division. Divides out exactly when every term of `self` is a multiple of the single
    /// term `den` (`(2*H)/2 = H`, `(H*W)/W = H`); evaluates when both are constants; otherwise an
    /// opaque atom over the normalised parts.
    pub fn floor_div(&self, den: &Dim) -> DimResult {
        if let Some(d) = den.as_constant() {
            if d == 0 {
                return Err(DimError::DivisionByZero);
            }
            if let Some(n) = self.as_constant() {
                return Ok(Dim::constant(floor_div_i64(n, d).ok_or(DimError::Overflow)?));
            }
        }
        if self == den {
            return Ok(Dim::constant(1));
        }
        if let Some(q) = self.exact_quotient(den) {
            return Ok(q);
        }
        Ok(Dim::atom(Atom::FloorDiv(Box::new(self.clone()), Box::new(den.clone()))))
    }

    /// `self / den` when `den` is one term that divides every term of `self`.
    fn exact_quotient(&self, den: &Dim) -> Option<Dim> {
        let (dm, dc) = match den.terms.iter().collect::<Vec<_>>().as_slice() {
            [(m, c)] => ((*m).clone(), **c),
            _ => return None,
        };
        let mut out = Dim::default();
        for (m, c) in self.terms.iter() {
            if c % dc != 0 {
                return None;
            }
            let mut rest = m.clone();
            for atom in &dm {
                let at = rest.iter().position(|a| a == atom)?;
                rest.remove(at);
            }
            out.add_term(rest, c / dc).ok()?;
        }
        Some(out)
    }

    /// Replaces variables by dimensions (and `product(S)` by a dimension), renormalising.
    pub fn substitute(&self, vars: &BTreeMap<String, Dim>, products: &BTreeMap<String, Dim>) -> DimResult {
        let mut out = Dim::default();
        for (m, c) in self.terms.iter() {
            let mut term = Dim::constant(*c);
            for atom in m {
                let factor = match atom {
                    Atom::Var(v) => vars.get(v).cloned().unwrap_or_else(|| Dim::var(v)),
                    Atom::Product(s) => products.get(s).cloned().unwrap_or_else(|| Dim::product_of(s)),
                    Atom::FloorDiv(n, d) => {
                        n.substitute(vars, products)?.floor_div(&d.substitute(vars, products)?)?
                    }
                };
                term = term.mul(&factor)?;
            }
            out = out.add(&term)?;
        }
        Ok(out)
    }

    /// The value under an assignment of every variable, or `None` if one is missing.
    pub fn eval(&self, vars: &BTreeMap<String, i64>, products: &BTreeMap<String, i64>) -> Option<i64> {
        let vars: BTreeMap<String, Dim> = vars.iter().map(|(k, v)| (k.clone(), Dim::constant(*v))).collect();
        let products: BTreeMap<String, Dim> =
            products.iter().map(|(k, v)| (k.clone(), Dim::constant(*v))).collect();
        self.substitute(&vars, &products).ok()?.as_constant()
    }
}

/// Integer floor division (rounds toward negative infinity), `None` on overflow.
fn floor_div_i64(n: i64, d: i64) -> Option<i64> {
    let q = n.checked_div(d)?;
    let r = n.checked_rem(d)?;
    Some(if r != 0 && ((r < 0) != (d < 0)) { q - 1 } else { q })
}

/// What solving `pattern = actual` for one unknown gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Solution {
    /// `name = value`.
    Solved(String, Dim),
    /// The pattern has no unknown: the caller compares the two sides.
    NoUnknown,
    /// The pattern is `c*V + d` but `actual - d` is not a multiple of `c`, or the solution is not
    /// a natural number.
    NoNaturalSolution,
    /// Any other form: the dimension must be given explicitly (E0304).
    NotSolvable,
}

/// Solves `pattern = actual` where `pattern` mentions the unknowns only as `c*V + d` (one unknown,
/// linearly, with `d` free of unknowns), as §2 and §10.5 allow.
pub fn solve(pattern: &Dim, unknowns: &BTreeSet<String>, actual: &Dim) -> Solution {
    let mentions_unknown = |m: &Monomial| {
        m.iter().any(|a| match a {
            Atom::Var(v) | Atom::Product(v) => unknowns.contains(v),
            Atom::FloorDiv(n, d) => {
                n.variables().iter().chain(d.variables().iter()).any(|v| unknowns.contains(v))
            }
        })
    };
    let with_unknown: Vec<(&Monomial, &i64)> =
        pattern.terms.iter().filter(|(m, _)| mentions_unknown(m)).collect();
    let (name, c) = match with_unknown.as_slice() {
        [] => return Solution::NoUnknown,
        [(m, c)] => match m.as_slice() {
            [Atom::Var(v)] => (v.clone(), **c),
            _ => return Solution::NotSolvable,
        },
        _ => return Solution::NotSolvable,
    };
    let mut rest = pattern.clone();
    Arc::make_mut(&mut rest.terms).remove(&vec![Atom::Var(name.clone())]);
    let Ok(target) = actual.sub(&rest) else { return Solution::NoNaturalSolution };
    let value = if c == 1 {
        target
    } else {
        match target.exact_quotient(&Dim::constant(c)) {
            Some(v) => v,
            None => return Solution::NoNaturalSolution,
        }
    };
    if value.as_constant().is_some_and(|v| v < 1) {
        return Solution::NoNaturalSolution;
    }
    Solution::Solved(name, value)
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Var(v) => f.write_str(v),
            Atom::Product(s) => write!(f, "product({s})"),
            Atom::FloorDiv(n, d) => {
                let wrap = |d: &Dim| {
                    if d.terms.len() > 1 || d.terms.keys().any(|m| m.len() > 1) {
                        format!("({d})")
                    } else {
                        d.to_string()
                    }
                };
                write!(f, "{}/{}", if n.terms.len() > 1 { format!("({n})") } else { n.to_string() }, wrap(d))
            }
        }
    }
}

impl fmt::Display for Dim {
    /// Positive terms first, higher degrees first, the constant last: `2*H*W + H - 1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        let mut terms: Vec<(&Monomial, &i64)> = self.terms.iter().collect();
        // Positive terms first (so `H + 2*Pad - Dilation*KH - 1` reads as written), then by degree.
        terms.sort_by(|a, b| (*b.1 > 0).cmp(&(*a.1 > 0)).then(b.0.len().cmp(&a.0.len())).then(a.0.cmp(b.0)));
        for (k, (m, c)) in terms.into_iter().enumerate() {
            let (sign, magnitude) = if *c < 0 { ("-", c.unsigned_abs()) } else { ("+", c.unsigned_abs()) };
            match (k, sign) {
                (0, "-") => f.write_str("-")?,
                (0, _) => {}
                (_, s) => write!(f, " {s} ")?,
            }
            let atoms: Vec<String> = m.iter().map(ToString::to_string).collect();
            match (magnitude, atoms.is_empty()) {
                (n, true) => write!(f, "{n}")?,
                (1, false) => f.write_str(&atoms.join("*"))?,
                (n, false) => write!(f, "{n}*{}", atoms.join("*"))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn v(name: &str) -> Dim {
        Dim::var(name)
    }
    fn c(n: i64) -> Dim {
        Dim::constant(n)
    }

    #[test]
    fn sums_of_products_normalise() {
        let h = v("H");
        let three_h = c(2).mul(&h).unwrap().add(&h).unwrap();
        assert_eq!(three_h, c(3).mul(&h).unwrap());
        assert_eq!(three_h.to_string(), "3*H");
        let e = h.add(&c(1)).unwrap().mul(&h.sub(&c(1)).unwrap()).unwrap(); // (H+1)(H-1)
        assert_eq!(e.to_string(), "H*H - 1");
        assert_eq!(h.sub(&h).unwrap(), c(0));
    }

    #[test]
    fn floor_division_divides_out_or_stays_opaque() {
        let h = v("H");
        assert_eq!(c(2).mul(&h).unwrap().floor_div(&c(2)).unwrap(), h);
        assert_eq!(h.mul(&v("W")).unwrap().floor_div(&v("W")).unwrap(), h);
        assert_eq!(c(7).floor_div(&c(2)).unwrap(), c(3));
        assert_eq!(c(-7).floor_div(&c(2)).unwrap(), c(-4));
        assert_eq!(c(7).floor_div(&c(-2)).unwrap(), c(-4));
        assert_eq!(c(-8).floor_div(&c(-2)).unwrap(), c(4));
        assert_eq!(h.floor_div(&c(0)), Err(DimError::DivisionByZero));
        let opaque = h.add(&c(1)).unwrap().floor_div(&c(2)).unwrap();
        assert_eq!(opaque.to_string(), "(H + 1)/2");
        // Numerators are normalised before two opaque divisions are compared (§10.5).
        let other = c(1).add(&h).unwrap().floor_div(&c(2)).unwrap();
        assert_eq!(opaque, other);
    }

    #[test]
    fn the_conv_output_formula_evaluates() {
        // (H + 2*Pad - Dilation*(KH - 1) - 1)/Stride + 1 with H = 28, KH = 5, Pad = 2, Stride = 1.
        let h = v("H");
        let kh = v("KH");
        let num = h
            .add(&c(2).mul(&v("Pad")).unwrap())
            .unwrap()
            .sub(&v("Dilation").mul(&kh.sub(&c(1)).unwrap()).unwrap())
            .unwrap()
            .sub(&c(1))
            .unwrap();
        let out = num.floor_div(&v("Stride")).unwrap().add(&c(1)).unwrap();
        let env: BTreeMap<String, i64> = [("H", 28), ("KH", 5), ("Pad", 2), ("Stride", 1), ("Dilation", 1)]
            .map(|(k, x)| (k.to_owned(), x))
            .into();
        assert_eq!(out.eval(&env, &BTreeMap::new()), Some(28));
        let env2: BTreeMap<String, i64> = [("H", 28), ("KH", 2), ("Pad", 0), ("Stride", 2), ("Dilation", 1)]
            .map(|(k, x)| (k.to_owned(), x))
            .into();
        assert_eq!(out.eval(&env2, &BTreeMap::new()), Some(14));
    }

    #[test]
    fn products_of_shape_variables_substitute() {
        let p = Dim::product_of("S");
        let shapes = BTreeMap::from([("S".to_owned(), c(8).mul(&c(8)).unwrap())]);
        assert_eq!(p.substitute(&BTreeMap::new(), &shapes).unwrap(), c(64));
        assert_eq!(p.to_string(), "product(S)");
    }

    #[test]
    fn solving_covers_v_cv_v_plus_c_and_cv_plus_d() {
        let unknowns = BTreeSet::from(["N".to_owned()]);
        let n = v("N");
        assert_eq!(solve(&n, &unknowns, &c(64)), Solution::Solved("N".into(), c(64)));
        assert_eq!(solve(&c(2).mul(&n).unwrap(), &unknowns, &c(64)), Solution::Solved("N".into(), c(32)));
        assert_eq!(solve(&c(2).mul(&n).unwrap(), &unknowns, &c(63)), Solution::NoNaturalSolution);
        assert_eq!(solve(&n.add(&c(1)).unwrap(), &unknowns, &c(10)), Solution::Solved("N".into(), c(9)));
        assert_eq!(solve(&n.add(&c(1)).unwrap(), &unknowns, &c(1)), Solution::NoNaturalSolution);
        let cv_d = c(3).mul(&n).unwrap().add(&c(2)).unwrap();
        assert_eq!(solve(&cv_d, &unknowns, &c(11)), Solution::Solved("N".into(), c(3)));
        // Symbolic: 2*N = 2*H gives N = H; 2*N = H cannot be solved exactly.
        let h = v("H");
        assert_eq!(
            solve(&c(2).mul(&n).unwrap(), &unknowns, &c(2).mul(&h).unwrap()),
            Solution::Solved("N".into(), h.clone())
        );
        assert_eq!(solve(&c(2).mul(&n).unwrap(), &unknowns, &h), Solution::NoNaturalSolution);
        // N*N and N/2 are not solvable forms; a pattern without the unknown is compared instead.
        assert_eq!(solve(&n.mul(&n).unwrap(), &unknowns, &c(4)), Solution::NotSolvable);
        assert_eq!(solve(&n.floor_div(&c(2)).unwrap(), &unknowns, &c(4)), Solution::NotSolvable);
        assert_eq!(solve(&c(4), &unknowns, &c(4)), Solution::NoUnknown);
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        assert_eq!(c(i64::MAX).add(&c(1)), Err(DimError::Overflow));
        assert_eq!(c(i64::MIN).neg(), Err(DimError::Overflow));
        assert_eq!(c(i64::MAX).mul(&c(2)), Err(DimError::Overflow));
        assert_eq!(c(i64::MIN).floor_div(&c(-1)), Err(DimError::Overflow));
    }
}
