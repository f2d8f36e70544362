//! The cost model: floating-point operations plus bytes moved, per op, at a nominal batch of 64
//! (the batch is the only symbolic dimension). Extraction ranks terms by it; the report and the
//! bench print it for whole graphs.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use egg::{CostFunction, Id};

use super::lang::{EG, ENode};
use crate::dims::Dim;
use crate::ir::{BinaryOp, Graph, Op, TensorTy, UnaryOp};

/// The batch at which costs are counted.
const NOMINAL_BATCH: i64 = 64;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Work {
    pub flops: u64,
    pub bytes: u64,
}

impl Work {
    /// One number to compare: a byte moved counts as a quarter of a flop (one f32 per flop).
    pub fn total(&self) -> f64 {
        self.flops as f64 + self.bytes as f64 / 4.0
    }
}

/// Dimension values at the nominal batch, remembered (evaluating a symbolic dimension
/// substitutes into its normal form, and graphs repeat a handful of dimensions thousands of times).
#[derive(Default)]
pub struct Sizes(FxHashMap<Dim, u64>);

impl Sizes {
    fn dim(&mut self, d: &Dim) -> u64 {
        if let Some(c) = d.as_constant() {
            return c.max(0) as u64;
        }
        *self.0.entry(d.clone()).or_insert_with(|| {
            let vars = BTreeMap::from([("B".to_owned(), NOMINAL_BATCH)]);
            d.eval(&vars, &BTreeMap::new()).unwrap_or(1).max(0) as u64
        })
    }

    fn elems(&mut self, t: &TensorTy) -> u64 {
        t.shape.iter().map(|d| self.dim(d)).fold(1u64, u64::saturating_mul)
    }
}

/// The work of one op with operand types `args` and result type `out`.
pub fn op_work(op: &Op, args: &[&TensorTy], out: &TensorTy, sizes: &mut Sizes) -> Work {
    let n = sizes.elems(out);
    let moved: u64 = args.iter().map(|a| sizes.elems(a)).sum::<u64>().saturating_add(n).saturating_mul(4);
    let first = args.first().map_or(1, |a| sizes.elems(a));
    let flops = match op {
        // Sources and views: nothing computed, nothing moved.
        Op::Input(_) | Op::Param(_) | Op::Const(_) | Op::Size(_) | Op::Reshape => {
            return Work { flops: 0, bytes: 0 };
        }
        // Broadcasts are recomputed inside the loops that read them.
        Op::Broadcast => return Work { flops: 0, bytes: n.saturating_mul(4) / 4 },
        Op::Iota => n,
        Op::Random { .. } => n.saturating_mul(10),
        Op::Unary(u) => match u {
            UnaryOp::Exp
            | UnaryOp::Log
            | UnaryOp::Sin
            | UnaryOp::Cos
            | UnaryOp::Tanh
            | UnaryOp::Sigmoid
            | UnaryOp::Erf
            | UnaryOp::ErfInv => n.saturating_mul(8),
            UnaryOp::Sqrt | UnaryOp::Rsqrt => n.saturating_mul(4),
            _ => n,
        },
        // A vector division costs several multiplications; a power, a log and an exp.
        Op::Binary(BinaryOp::Div) => n.saturating_mul(4),
        Op::Binary(BinaryOp::Pow) => n.saturating_mul(16),
        Op::Binary(_) | Op::Select | Op::Cast(_) => n,
        Op::Transpose { .. } => n,
        Op::Reduce { .. } | Op::ArgMax { .. } => first,
        Op::Slice { .. } | Op::Concat { .. } => n,
        Op::MatMul => {
            // [.., M, K] @ [.., K, N]: 2·M·N·K per batch matrix.
            let k = args.first().and_then(|a| a.shape.last()).map_or(1, |d| sizes.dim(d));
            n.saturating_mul(k).saturating_mul(2)
        }
        Op::Conv(_) | Op::ConvTranspose(_) | Op::ConvWeightGrad(_) => {
            // Every output element sums over the weight's input channels and kernel window.
            let w = args.get(1).map_or(1, |w| sizes.elems(w));
            let cout = args.get(1).and_then(|w| w.shape.first()).map_or(1, |d| sizes.dim(d));
            n.max(first).saturating_mul(w / cout.max(1)).saturating_mul(2)
        }
        Op::Pool { window, .. } | Op::PoolGrad { window, .. } => {
            let k: i64 = window.iter().product();
            n.max(first).saturating_mul(k.max(1) as u64)
        }
        Op::Orthogonalize => n.saturating_mul(n.isqrt().max(1)),
    };
    Work { flops, bytes: moved }
}

/// The work of a whole graph (each node once, dead nodes included).
pub fn work(g: &Graph) -> Work {
    let mut w = Work::default();
    let mut sizes = Sizes::default();
    for n in &g.nodes {
        let args: Vec<&TensorTy> = n.args.iter().filter_map(|a| g.ty(*a)).collect();
        let o = op_work(&n.op, &args, &n.ty, &mut sizes);
        w.flops = w.flops.saturating_add(o.flops);
        w.bytes = w.bytes.saturating_add(o.bytes);
    }
    w
}

/// Extraction's cost of a term: its work summed over the tree (shared subterms count once per
/// use), then its depth, so that among equally costly terms the shallower wins — which also
/// keeps a class from choosing a term that contains itself. Each e-node's own work is counted
/// once, up front (extraction visits every node several times).
///
/// The sums are exact, up to 2^512: over an unrolled recurrence a tree's cost doubles with
/// every step (an LSTM of 50 steps reaches about 10^75, of 100 steps 10^145), far past where an
/// f64 still tells two terms that differ by one small node apart, so that a late step's cheaper
/// form tied with its dearer one. Longer recurrences saturate, and such ties come back.
pub struct TreeCost {
    own: FxHashMap<ENode, Exact>,
}

/// A non-negative integer of 512 bits, most significant word first (so that the derived order
/// is the numeric one); sums that would overflow stop at the largest value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Exact([u64; 8]);

impl Exact {
    fn from_u64(v: u64) -> Exact {
        let mut w = [0; 8];
        w[7] = v;
        Exact(w)
    }

    fn add(self, other: Exact) -> Exact {
        let mut w = [0u64; 8];
        let mut carry = false;
        // From the least significant word up.
        for ((out, x), y) in w.iter_mut().zip(self.0).zip(other.0).rev() {
            let (s, c1) = x.overflowing_add(y);
            let (s, c2) = s.overflowing_add(u64::from(carry));
            *out = s;
            carry = c1 || c2;
        }
        if carry { Exact([u64::MAX; 8]) } else { Exact(w) }
    }
}

/// A node's own work in quarter flops (a byte moved is a quarter of a flop), plus one flop for
/// being a node at all.
fn own_work(w: Work) -> Exact {
    Exact::from_u64(w.flops.saturating_mul(4).saturating_add(w.bytes).saturating_add(4))
}

/// What a node whose types are unknown costs: more than any real graph (it is never preferred
/// by accident), far from the sums' ceiling.
const UNKNOWN: Exact = Exact([0, 0, 0, 0, 0, 0, 1, 0]);

impl TreeCost {
    pub fn new(egraph: &EG) -> TreeCost {
        let mut own = FxHashMap::default();
        let mut sizes = Sizes::default();
        for class in egraph.classes() {
            for n in &class.nodes {
                let tys: Option<Vec<&TensorTy>> =
                    n.args.iter().map(|a| egraph[*a].data.ty.as_ref()).collect();
                let w = tys.and_then(|tys| {
                    let out = class.data.ty.as_ref()?;
                    Some(own_work(op_work(&n.key.op, &tys, out, &mut sizes)))
                });
                own.insert(n.clone(), w.unwrap_or(UNKNOWN));
            }
        }
        TreeCost { own }
    }
}

impl CostFunction<ENode> for TreeCost {
    type Cost = (Exact, u32);

    fn cost<C>(&mut self, enode: &ENode, mut costs: C) -> Self::Cost
    where
        C: FnMut(Id) -> Self::Cost,
    {
        // Extraction hands over canonical e-nodes; one not seen up front costs what its class
        // would say, so it is never preferred by accident.
        let (mut total, mut depth) = (self.own.get(enode).copied().unwrap_or(UNKNOWN), 0u32);
        for a in &enode.args {
            let (c, d) = costs(*a);
            total = total.add(c);
            depth = depth.max(d);
        }
        (total, depth.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::Exact;

    /// Carries cross words, the order is numeric across words, and a sum past 512 bits stops
    /// at the largest value instead of wrapping.
    #[test]
    fn exact_sums_carry_order_and_saturate() {
        let big = Exact::from_u64(u64::MAX);
        let two_words = big.add(Exact::from_u64(1));
        assert_eq!(two_words.0[6..], [1, 0]);
        assert!(two_words > big && big > Exact::from_u64(u64::MAX - 1));
        let mut x = two_words;
        for _ in 0..600 {
            x = x.add(x);
        }
        assert_eq!(x, Exact([u64::MAX; 8]));
        assert_eq!(x.add(Exact::from_u64(1)), x);
    }
}
