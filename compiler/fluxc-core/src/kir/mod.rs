//! Kernel IR (KIR): a graph scheduled into kernels over planned buffers (DESIGN.md data flow).
//!
//! Scheduling fuses every chain of elementwise ops into one loop over its output: a value is
//! materialised in a buffer only when something needs it whole (a non-elementwise op, a graph
//! output, several consumers, or a broadcast of it); everything else is recomputed inside its
//! consumer's loop from loads of materialised buffers. Reshapes are views of their operand's
//! buffer. The memory plan gives each scratch buffer a slot, reusing slots whose buffers are dead
//! (liveness over the kernel order); a slot's size is `fixed + per_row * B` elements, so one plan
//! serves every batch size and the peak scratch per batch row is known at compile time.

mod exec;

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::dims::Dim;
use crate::ir::{BinaryOp, DType, Graph, IrError, Op, ReduceOp, TensorTy, UnaryOp, ValueId};

pub use exec::{ExecError, execute, run_call};

/// A buffer: where a materialised value lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub u32);

#[derive(Clone, Debug, PartialEq)]
pub enum Storage {
    Input(usize),
    Param(usize),
    /// Scratch memory: this slot of the plan.
    Slot(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub elements: Dim,
    pub dtype: DType,
    pub storage: Storage,
    /// Where in its slot the buffer starts (elements): zero, except for a part of a
    /// concatenation built in place.
    pub at: Dim,
}

/// One step of a fused loop body, in SSA order; the last is the kernel's result.
#[derive(Clone, Debug, PartialEq)]
pub enum Fused {
    /// Element `i` of the output reads input `k` (a buffer of `shape`, broadcast to the output).
    Load(usize),
    Const(f64, DType),
    /// The value of a dimension (the batch), as a scalar.
    Size(Dim, DType),
    Unary(UnaryOp, usize),
    Binary(BinaryOp, usize, usize),
    Select(usize, usize, usize),
    Cast(DType, usize),
}

/// A buffer a loop reads, as an array of `shape` broadcast to the loop's shape.
#[derive(Clone, Debug, PartialEq)]
pub struct LoopInput {
    pub buf: BufId,
    pub shape: Vec<Dim>,
    /// Read in place through strides instead of contiguously (a slice of the buffer).
    pub view: Option<View>,
}

/// Element `(i₀, i₁, …)` of a view is element `at + Σ iₖ·strides[k]` of its buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct View {
    pub at: Dim,
    pub strides: Vec<Dim>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kernel {
    /// `out[i] = body` for every element `i` of `shape`; `inputs` are the buffers it reads. With
    /// `sum`, the loop is a reduction fused with its operand: `out` has the shape's first `sum`
    /// axes and holds the sum of the body over the remaining (trailing) ones. `also` are further
    /// outputs of the same shape, `(buffer, body value)`, stored at every element too (values
    /// that only this loop reads, or that are graph outputs, computed where they are used).
    Loop {
        out: BufId,
        shape: Vec<Dim>,
        dtype: DType,
        inputs: Vec<LoopInput>,
        body: Vec<Fused>,
        sum: Option<usize>,
        also: Vec<(BufId, usize)>,
        /// `Some((axis, stride))` when `out` is a part of a concatenation along `axis` built in
        /// place: the output's rows (its axes from `axis` on) lie `stride` elements apart.
        out_rows: Option<(usize, Dim)>,
    },
    /// Any other op on whole buffers (its operands' and result's types as in the graph).
    Call { op: Op, args: Vec<(BufId, TensorTy)>, out: BufId, ty: TensorTy },
    /// `out = op(a) @ op(b)` where `op` transposes the last two axes when the flag is set: a
    /// transpose feeding a matrix product is read through strides, never copied.
    Gemm { a: (BufId, TensorTy, bool), b: (BufId, TensorTy, bool), out: BufId, ty: TensorTy },
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Kir {
    pub buffers: Vec<Buffer>,
    pub kernels: Vec<Kernel>,
    /// The slots of scratch memory: `(fixed, per_row)` elements each.
    pub slots: Vec<(i64, i64)>,
    pub outputs: Vec<(String, BufId, TensorTy)>,
}

impl Kir {
    /// Scratch bytes for a batch of `b` rows: `fixed + per_row * b` (4 bytes an element).
    pub fn scratch_bytes(&self) -> (i64, i64) {
        self.slots.iter().fold((0, 0), |(f, r), (sf, sr)| (f + 4 * sf, r + 4 * sr))
    }
}

/// The most buffers one loop may read and write (the plan interpreter's pointer table).
const MAX_LOOP_BUFFERS: usize = 63;
/// The most buffers a value computed inside a loop may read (see `schedule_exact`).
const MAX_INLINE_READS: usize = 20;

/// The longest run a sum fused into its operand's loop may add up (see `schedule_exact`).
const MAX_FUSED_SUM_RUN: i64 = 4096;

/// An elementwise operation on values of one shape (no constant, size or broadcast).
fn elementwise(op: &Op) -> bool {
    matches!(op, Op::Unary(_) | Op::Binary(_) | Op::Select | Op::Cast(_))
}

fn fusible(op: &Op) -> bool {
    elementwise(op) || matches!(op, Op::Const(_) | Op::Size(_) | Op::Broadcast)
}

/// `(fixed, per_row)` with `d = fixed + per_row * B`, or an error if `d` is not linear in `B`.
pub fn linear_in_b(d: &Dim) -> Result<(i64, i64), IrError> {
    let at = |b: i64| d.eval(&std::collections::BTreeMap::from([("B".to_owned(), b)]), &Default::default());
    let (Some(f0), Some(f1), Some(f2)) = (at(0), at(1), at(2)) else {
        return Err(IrError(format!("the size {d} is not known for every batch")));
    };
    if f2 - f1 != f1 - f0 {
        return Err(IrError(format!("the size {d} grows faster than the batch")));
    }
    Ok((f0, f1 - f0))
}

fn elements(t: &TensorTy) -> Result<Dim, IrError> {
    t.shape.iter().try_fold(Dim::constant(1), |p, d| p.mul(d)).map_err(|_| IrError("size overflow".into()))
}

/// Schedules a verified graph into kernels and plans its memory, after the e-graph optimizer
/// and the peephole simplification of transposes and sums of products.
pub fn schedule(g: &Graph) -> Result<Kir, IrError> {
    // The sums of per-step products are joined first (the e-graph has no n-ary rule for them
    // and would otherwise reorder the sums out of the shape the peephole pass recognises).
    let optimized = crate::opt::optimize(&crate::ir::simplify(g)?).graph;
    schedule_exact(&crate::ir::simplify(&optimized)?)
}

/// Schedules a graph without the e-graph optimizer (the bench's baseline).
pub fn schedule_unoptimized(g: &Graph) -> Result<Kir, IrError> {
    schedule_exact(&crate::ir::simplify(g)?)
}

/// Matrix products reading one transposed value from which it is copied once rather than read
/// transposed by each.
const MANY_PRODUCTS: usize = 3;

/// Schedules a graph as it is.
pub fn schedule_exact(g: &Graph) -> Result<Kir, IrError> {
    let n = g.nodes.len();
    // Consumers of each value.
    let mut uses: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in g.nodes.iter().enumerate() {
        for a in &node.args {
            if let Some(u) = uses.get_mut(a.index()) {
                u.push(i);
            }
        }
    }
    let is_output: Vec<bool> = (0..n).map(|i| g.outputs.iter().any(|(_, v)| v.index() == i)).collect();
    let node = |i: usize| g.nodes.get(i).ok_or_else(|| IrError(format!("no node %{i}")));
    // A transpose of the last two axes read only by matrix products is absorbed into them,
    // unless many read it (a recurrent weight, once per time step): then one copy serves
    // them all, and each reads its operand untransposed (measured: a 32-row product with a
    // transposed [512, 128] weight takes 1.4× as long).
    let swaps_last_two = |op: &Op| matches!(op, Op::Transpose { perm } if crate::ir::swaps_last_two(perm));
    let absorbed: Vec<bool> = (0..n)
        .map(|i| {
            g.nodes.get(i).is_some_and(|nd| swaps_last_two(&nd.op))
                && !is_output.get(i).copied().unwrap_or(false)
                && uses.get(i).is_some_and(|u| {
                    (1..MANY_PRODUCTS).contains(&u.len())
                        && u.iter().all(|&c| g.nodes.get(c).is_some_and(|cn| cn.op == Op::MatMul))
                })
        })
        .collect();
    // Sums over trailing axes of a value that only they read take that value's chain into
    // their own loop (the operand is never materialised).
    let fused_sum: Vec<bool> = (0..n)
        .map(|i| {
            let Some(nd) = g.nodes.get(i) else { return false };
            let Op::Reduce { op: ReduceOp::Sum, axes } = &nd.op else { return false };
            let Some(a) = nd.args.first() else { return false };
            let Some(an) = g.nodes.get(a.index()) else { return false };
            let rank = an.ty.rank();
            let mut sorted = axes.clone();
            sorted.sort_unstable();
            let trailing =
                !sorted.is_empty() && sorted.iter().rev().enumerate().all(|(k, x)| *x + k + 1 == rank);
            // Short runs only (class rows, feature rows): the fused loop accumulates one element
            // at a time, where a long sum is faster as its own kernel with parallel partial sums.
            let run: Option<i64> = sorted
                .iter()
                .try_fold(1i64, |p, x| an.ty.shape.get(*x).and_then(|d| d.as_constant()).map(|d| p * d));
            trailing
                && run.is_some_and(|r| r <= MAX_FUSED_SUM_RUN)
                && elementwise(&an.op)
                && uses.get(a.index()).is_some_and(|u| u.len() == 1)
                && !is_output.get(a.index()).copied().unwrap_or(false)
        })
        .collect();
    // Which values live in buffers. Decided from the outputs back: a fusible value stays
    // unmaterialised when every use lands in the same loop kernel (its `root`), so a value read
    // twice by one loop body is computed once there; a broadcast (a load through strides) may
    // also be recomputed in each of several loops.
    let mut materialised = vec![false; n];
    let mut root: Vec<usize> = (0..n).collect();
    for i in (0..n).rev() {
        let nd = node(i)?;
        let scalar_const = matches!(nd.op, Op::Const(_) | Op::Size(_));
        let output = is_output.get(i).copied().unwrap_or(false);
        let users: &[usize] = uses.get(i).map_or(&[], Vec::as_slice);
        let mut needed = !fusible(&nd.op)
            || output
            || users.iter().any(|&c| {
                g.nodes.get(c).is_some_and(|cn| {
                    (!fusible(&cn.op) && !fused_sum.get(c).copied().unwrap_or(false))
                        || (matches!(cn.op, Op::Broadcast) && !scalar_const)
                })
            });
        if !needed && !scalar_const {
            let mut roots: Vec<usize> = users
                .iter()
                .map(|&c| {
                    if materialised.get(c).copied().unwrap_or(true) {
                        c
                    } else {
                        root.get(c).copied().unwrap_or(c)
                    }
                })
                .collect();
            roots.sort_unstable();
            roots.dedup();
            match roots.as_slice() {
                [r] => {
                    if let Some(x) = root.get_mut(i) {
                        *x = *r;
                    }
                }
                _ => needed = !matches!(nd.op, Op::Broadcast),
            }
        }
        if let Some(m) = materialised.get_mut(i) {
            *m = needed
                && !absorbed.get(i).copied().unwrap_or(false)
                && !(scalar_const
                    && !output
                    && users.iter().all(|&c| g.nodes.get(c).is_some_and(|cn| fusible(&cn.op))));
        }
    }
    // A slice of a buffer that only elementwise ops read (directly, or through a reshape that
    // only drops or adds axes of size 1) is no copy: the loops that compute them read the
    // buffer in place through a strided view.
    let mut view = vec![false; n];
    // Whether `i` has readers and every one, `(index, node)`, passes `ok`.
    let all_readers = |i: usize, ok: &dyn Fn(usize, &crate::ir::Node) -> bool| {
        uses.get(i)
            .is_some_and(|u| !u.is_empty() && u.iter().all(|&c| g.nodes.get(c).is_some_and(|cn| ok(c, cn))))
    };
    let elementwise_only = |i: usize| all_readers(i, &|_, cn| elementwise(&cn.op));
    let private = |i: usize| !is_output.get(i).copied().unwrap_or(true);
    for i in 0..n {
        let nd = node(i)?;
        let Op::Slice { .. } = nd.op else { continue };
        let of_buffer =
            nd.args.first().is_some_and(|a| materialised.get(a.index()).copied().unwrap_or(false));
        let reshapes: Vec<usize> = uses
            .get(i)
            .map(|u| {
                u.iter().copied().filter(|&c| g.nodes.get(c).is_some_and(|cn| cn.op == Op::Reshape)).collect()
            })
            .unwrap_or_default();
        let readers_ok = all_readers(i, &|c, cn| {
            elementwise(&cn.op)
                || (cn.op == Op::Reshape
                    && non_unit(&cn.ty.shape) == non_unit(&nd.ty.shape)
                    && private(c)
                    && elementwise_only(c))
        });
        if of_buffer && readers_ok && private(i) {
            for v in std::iter::once(i).chain(reshapes) {
                if let Some(x) = view.get_mut(v) {
                    *x = true;
                }
                if let Some(m) = materialised.get_mut(v) {
                    *m = false;
                }
            }
        }
    }
    // A cheap elementwise value materialised only because several loops read it, whose own
    // operands all live in buffers (or are broadcasts and constants), is recomputed in each of
    // those loops instead: one operation per use beats a store and a load per element, and the
    // loops that read it stay single passes. (Common subexpressions the optimizer shares would
    // otherwise cost a buffer each.)
    for i in 0..n {
        let nd = node(i)?;
        let cheap = cheap_to_recompute(&nd.op);
        let loops_only = uses.get(i).is_some_and(|u| {
            u.iter().all(|&c| {
                g.nodes.get(c).is_some_and(|cn| fusible(&cn.op) && !matches!(cn.op, Op::Broadcast))
                    || fused_sum.get(c).copied().unwrap_or(false)
            })
        });
        let from_buffers = nd.args.iter().all(|a| {
            materialised.get(a.index()).copied().unwrap_or(false)
                || view.get(a.index()).copied().unwrap_or(false)
                || g.nodes
                    .get(a.index())
                    .is_some_and(|an| matches!(an.op, Op::Broadcast | Op::Const(_) | Op::Size(_)))
        });
        if cheap
            && loops_only
            && from_buffers
            && !is_output.get(i).copied().unwrap_or(false)
            && let Some(m) = materialised.get_mut(i)
        {
            *m = false;
        }
    }
    // A loop reads at most `MAX_LOOP_BUFFERS` buffers (the kernels' pointer table). A value a
    // loop would compute in place from more than `MAX_INLINE_READS` buffers is stored instead,
    // by a loop of its own: with at most three operands, no loop then reads more than 60 (a sum
    // of a hundred per-step gradients would otherwise be one loop over a hundred buffers).
    let mut loads: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut capped = vec![false; n];
    for i in 0..n {
        let nd = node(i)?;
        let mut set: Vec<usize> = Vec::new();
        match &nd.op {
            Op::Const(_) | Op::Size(_) => {}
            Op::Slice { .. } if view.get(i).copied().unwrap_or(false) => {
                set.extend(nd.args.first().map(|a| a.index()));
            }
            Op::Reshape if view.get(i).copied().unwrap_or(false) => {
                for a in &nd.args {
                    set.extend(loads.get(a.index()).map(Vec::as_slice).unwrap_or_default());
                }
            }
            Op::Broadcast => {
                let scalar = nd
                    .args
                    .first()
                    .and_then(|a| g.nodes.get(a.index()))
                    .is_some_and(|an| matches!(an.op, Op::Const(_) | Op::Size(_)));
                if !scalar {
                    set.extend(nd.args.first().map(|a| a.index()));
                }
            }
            op if fusible(op) => {
                for a in &nd.args {
                    for b in loads.get(a.index()).map(Vec::as_slice).unwrap_or_default() {
                        if !set.contains(b) {
                            set.push(*b);
                        }
                    }
                }
            }
            _ => {}
        }
        let stored = materialised.get(i).copied().unwrap_or(false);
        if !stored && set.len() > MAX_INLINE_READS && fusible(&nd.op) {
            if let Some(m) = materialised.get_mut(i) {
                *m = true;
            }
            if let Some(c) = capped.get_mut(i) {
                *c = true;
            }
        }
        if let Some(l) = loads.get_mut(i) {
            *l = if materialised.get(i).copied().unwrap_or(false) { vec![i] } else { set };
        }
    }
    // The buffers the loop computing materialised value `i` reads.
    let reads_of = |i: usize| -> Vec<usize> {
        let mut set: Vec<usize> = Vec::new();
        for a in g.nodes.get(i).map(|nd| nd.args.as_slice()).unwrap_or_default() {
            for b in loads.get(a.index()).map(Vec::as_slice).unwrap_or_default() {
                if !set.contains(b) {
                    set.push(*b);
                }
            }
        }
        set
    };
    let mut loop_reads: HashMap<usize, Vec<usize>> = HashMap::new();
    // A materialised f32 value that only one plain loop of its own shape reads (element by
    // element) rides along in that loop: computed there and stored as a second output, instead
    // of by a loop of its own whose result the other reads back (an optimizer's new moments and
    // the parameter they update are one pass over memory).
    let mut rides: Vec<Option<usize>> = vec![None; n];
    for i in (0..n).rev() {
        let nd = node(i)?;
        let candidate =
            materialised.get(i).copied().unwrap_or(false) && elementwise(&nd.op) && nd.ty.dtype == DType::F32;
        let users: &[usize] = uses.get(i).map_or(&[], Vec::as_slice);
        if !candidate || users.is_empty() {
            continue;
        }
        let mut target: Option<usize> = None;
        let mut ok = true;
        for &c in users {
            let cn = node(c)?;
            let c_materialised = materialised.get(c).copied().unwrap_or(false);
            let l = if c_materialised { c } else { root.get(c).copied().unwrap_or(c) };
            // A user recomputed in several loops, or not computed by a loop, has no one loop.
            if !fusible(&cn.op)
                || matches!(cn.op, Op::Broadcast)
                || (!c_materialised && l == c)
                || !materialised.get(l).copied().unwrap_or(false)
            {
                ok = false;
                break;
            }
            let l = rides.get(l).copied().flatten().unwrap_or(l);
            match target {
                None => target = Some(l),
                Some(t) if t == l => {}
                Some(_) => {
                    ok = false;
                    break;
                }
            }
        }
        let Some(t) = target.filter(|_| ok) else { continue };
        let tn = node(t)?;
        let plain_loop = elementwise(&tn.op) && tn.ty.dtype == DType::F32 && tn.ty.shape == nd.ty.shape;
        // The loop's pointer table holds its reads and its outputs.
        let reads = loop_reads.entry(t).or_insert_with(|| reads_of(t));
        let mut joined = reads.clone();
        for b in reads_of(i) {
            if !joined.contains(&b) && b != i {
                joined.push(b);
            }
        }
        let riders = rides.iter().filter(|r| **r == Some(t)).count();
        let fits = joined.len() + riders + 2 <= MAX_LOOP_BUFFERS;
        if plain_loop
            && fits
            && !capped.get(i).copied().unwrap_or(false)
            && let Some(r) = rides.get_mut(i)
        {
            *r = Some(t);
            *reads = joined;
        }
    }
    // A rider that is no graph output needs no buffer: its loop is its only reader.
    for i in 0..n {
        if rides.get(i).copied().flatten().is_some() && !is_output.get(i).copied().unwrap_or(false) {
            if let Some(r) = rides.get_mut(i) {
                *r = None;
            }
            if let Some(m) = materialised.get_mut(i) {
                *m = false;
            }
        }
    }
    // A concatenation whose parts are contiguous blocks of its result (every axis before the
    // joined one has size 1) is built in place: each part's kernel writes straight into the
    // result's memory, and no copy runs. Each part must be a buffer of its own that a kernel
    // here writes (not an input, a parameter or a graph output), in one such concatenation.
    let owner = |mut v: usize| {
        while let Some(nd) = g.nodes.get(v).filter(|nd| nd.op == Op::Reshape) {
            match nd.args.first() {
                Some(a) => v = a.index(),
                None => break,
            }
        }
        v
    };
    // Along a later axis the parts are rows at a stride: then each part must be a loop's own
    // result (it writes its rows at that stride) that nothing but the concatenation reads, and
    // the rows must have constant lengths.
    let mut in_place = vec![false; n];
    let mut strided = vec![false; n];
    let mut is_part = vec![false; n];
    for i in 0..n {
        let nd = node(i)?;
        let Op::Concat { axis } = nd.op else { continue };
        let contiguous =
            nd.ty.shape.get(..axis).is_some_and(|s| s.iter().all(|d| d.as_constant() == Some(1)));
        let constant_rows =
            nd.ty.shape.get(axis..).is_some_and(|s| s.iter().all(|d| d.as_constant().is_some()));
        let own_loop = |o: usize| {
            g.nodes.get(o).is_some_and(|on| {
                elementwise(&on.op)
                    && rides.get(o).copied().flatten().is_none()
                    && uses.get(o).is_some_and(|u| u.as_slice() == [i])
            })
        };
        let owners: Vec<usize> = nd.args.iter().map(|a| owner(a.index())).collect();
        let eligible = |o: usize| {
            materialised.get(o).copied().unwrap_or(false)
                && g.nodes
                    .get(o)
                    .is_some_and(|on| !matches!(on.op, Op::Input(_) | Op::Param(_) | Op::Reshape))
                && !is_part.get(o).copied().unwrap_or(true)
                && !is_output.get(o).copied().unwrap_or(true)
        };
        let distinct =
            owners.iter().enumerate().all(|(k, o)| !owners.get(..k).unwrap_or_default().contains(o));
        let views_private = nd.args.iter().all(|a| !is_output.get(a.index()).copied().unwrap_or(true));
        let rows_ok = contiguous
            || (constant_rows && nd.args.iter().zip(&owners).all(|(a, o)| a.index() == *o && own_loop(*o)));
        if rows_ok
            && distinct
            && views_private
            && materialised.get(i).copied().unwrap_or(false)
            && owners.iter().all(|o| eligible(*o))
        {
            for (flags, value) in [(&mut in_place, true), (&mut strided, !contiguous)] {
                if let Some(f) = flags.get_mut(i) {
                    *f = value;
                }
            }
            for o in owners {
                if let Some(p) = is_part.get_mut(o) {
                    *p = true;
                }
            }
        }
    }
    // (part, whole, where the part starts in the whole).
    let mut parts: HashMap<BufId, (BufId, Dim)> = HashMap::new();
    let readable: Vec<bool> = (0..n)
        .map(|i| materialised.get(i).copied().unwrap_or(false) || view.get(i).copied().unwrap_or(false))
        .collect();
    let mut kir = Kir::default();
    let mut buf_of: HashMap<usize, BufId> = HashMap::new();
    let new_buffer = |kir: &mut Kir, ty: &TensorTy, storage: Storage| -> Result<BufId, IrError> {
        kir.buffers.push(Buffer { elements: elements(ty)?, dtype: ty.dtype, storage, at: Dim::constant(0) });
        Ok(BufId((kir.buffers.len() - 1) as u32))
    };
    for i in 0..n {
        if !materialised.get(i).copied().unwrap_or(false) {
            continue;
        }
        let nd = node(i)?;
        match &nd.op {
            Op::Input(k) => {
                let b = new_buffer(&mut kir, &nd.ty, Storage::Input(*k))?;
                buf_of.insert(i, b);
            }
            Op::Param(k) => {
                let b = new_buffer(&mut kir, &nd.ty, Storage::Param(*k))?;
                buf_of.insert(i, b);
            }
            // A view: the operand's buffer.
            Op::Reshape => {
                let src = nd
                    .args
                    .first()
                    .and_then(|a| buf_of.get(&a.index()))
                    .copied()
                    .ok_or_else(|| IrError("reshape of nothing".into()))?;
                buf_of.insert(i, src);
            }
            // A rider: its buffer now, its values from the loop it rides.
            _ if rides.get(i).copied().flatten().is_some() => {
                let out = new_buffer(&mut kir, &nd.ty, Storage::Slot(usize::MAX))?;
                buf_of.insert(i, out);
            }
            op if fusible(op) => {
                let out = new_buffer(&mut kir, &nd.ty, Storage::Slot(usize::MAX))?;
                let mut f = Fuser::new(g, &materialised, &readable, &buf_of, &rides, i);
                fuse(&mut f, ValueId(i as u32), true)?;
                kir.kernels.push(Kernel::Loop {
                    out,
                    shape: nd.ty.shape.clone(),
                    dtype: nd.ty.dtype,
                    inputs: f.inputs,
                    body: f.body,
                    sum: None,
                    also: f.also,
                    out_rows: None,
                });
                buf_of.insert(i, out);
            }
            Op::Reduce { .. } if fused_sum.get(i).copied().unwrap_or(false) => {
                let a = nd.args.first().copied().ok_or_else(|| IrError("reduce operand".into()))?;
                let shape = g.ty(a).map(|t| t.shape.clone()).ok_or_else(|| IrError("no type".into()))?;
                let out = new_buffer(&mut kir, &nd.ty, Storage::Slot(usize::MAX))?;
                let mut f = Fuser::new(g, &materialised, &readable, &buf_of, &rides, i);
                fuse(&mut f, a, true)?;
                let kept = nd.ty.rank();
                kir.kernels.push(Kernel::Loop {
                    out,
                    shape,
                    dtype: nd.ty.dtype,
                    inputs: f.inputs,
                    body: f.body,
                    sum: Some(kept),
                    also: f.also,
                    out_rows: None,
                });
                buf_of.insert(i, out);
            }
            Op::Concat { axis } if in_place.get(i).copied().unwrap_or(false) => {
                let out = new_buffer(&mut kir, &nd.ty, Storage::Slot(usize::MAX))?;
                let overflow = || IrError("a concatenation's size overflows".into());
                let rows_of = |t: &TensorTy| -> Result<(Dim, Dim), IrError> {
                    let product = |d: &[Dim]| d.iter().try_fold(Dim::constant(1), |p, x| p.mul(x));
                    let (outer, row) = t.shape.split_at((*axis).min(t.shape.len()));
                    Ok((product(outer).map_err(|_| overflow())?, product(row).map_err(|_| overflow())?))
                };
                let stride = rows_of(&nd.ty)?.1;
                let mut at = Dim::constant(0);
                for a in &nd.args {
                    let b = buf_of
                        .get(&a.index())
                        .copied()
                        .ok_or_else(|| IrError(format!("%{i}: operand {a} not materialised")))?;
                    parts.insert(b, (out, at.clone()));
                    let t = g.ty(*a).ok_or_else(|| IrError("no type".into()))?;
                    if strided.get(i).copied().unwrap_or(false) {
                        // The part's loop writes rows `stride` apart; its buffer spans from its
                        // first element to its last.
                        let (rows, row) = rows_of(t)?;
                        for k in kir.kernels.iter_mut().rev() {
                            if let Kernel::Loop { out: o, out_rows, .. } = k
                                && *o == b
                            {
                                *out_rows = Some((*axis, stride.clone()));
                                break;
                            }
                        }
                        let span = rows.mul(&stride).and_then(|x| x.sub(&stride)).and_then(|x| x.add(&row));
                        if let Some(buf) = kir.buffers.get_mut(b.0 as usize) {
                            buf.elements = span.map_err(|_| overflow())?;
                        }
                        at = at.add(&row).map_err(|_| overflow())?;
                    } else {
                        at = at.add(&elements(t)?).map_err(|_| overflow())?;
                    }
                }
                buf_of.insert(i, out);
            }
            Op::MatMul => {
                let out = new_buffer(&mut kir, &nd.ty, Storage::Slot(usize::MAX))?;
                let operand = |k: usize| -> Result<(BufId, TensorTy, bool), IrError> {
                    let a = nd.args.get(k).copied().ok_or_else(|| IrError("matmul operand".into()))?;
                    let (src, trans) = match g.nodes.get(a.index()) {
                        Some(t) if absorbed.get(a.index()).copied().unwrap_or(false) => (
                            t.args.first().copied().ok_or_else(|| IrError("transpose operand".into()))?,
                            true,
                        ),
                        _ => (a, false),
                    };
                    let b = buf_of
                        .get(&src.index())
                        .copied()
                        .ok_or_else(|| IrError(format!("%{i}: operand not materialised")))?;
                    let t = g.ty(src).cloned().ok_or_else(|| IrError("no type".into()))?;
                    Ok((b, t, trans))
                };
                let (a, b) = (operand(0)?, operand(1)?);
                kir.kernels.push(Kernel::Gemm { a, b, out, ty: nd.ty.clone() });
                buf_of.insert(i, out);
            }
            op => {
                let out = new_buffer(&mut kir, &nd.ty, Storage::Slot(usize::MAX))?;
                let mut args = Vec::new();
                for a in &nd.args {
                    let b = buf_of
                        .get(&a.index())
                        .copied()
                        .ok_or_else(|| IrError(format!("%{i}: operand {a} not materialised")))?;
                    let t = g.ty(*a).cloned().ok_or_else(|| IrError("no type".into()))?;
                    args.push((b, t));
                }
                kir.kernels.push(Kernel::Call { op: op.clone(), args, out, ty: nd.ty.clone() });
                buf_of.insert(i, out);
            }
        }
    }
    for (name, v) in &g.outputs {
        let b = buf_of
            .get(&v.index())
            .copied()
            .ok_or_else(|| IrError(format!("output {name} not materialised")))?;
        let t = g.ty(*v).cloned().ok_or_else(|| IrError("no type".into()))?;
        kir.outputs.push((name.clone(), b, t));
    }
    plan(&mut kir, &parts)?;
    Ok(kir)
}

/// Builds one loop's body: what the loop rooted at `this` computes, its inputs, and the values
/// that ride along in it.
struct Fuser<'a> {
    g: &'a Graph,
    materialised: &'a [bool],
    /// Values a loop can load: materialised, or views of buffers.
    readable: &'a [bool],
    buf_of: &'a HashMap<usize, BufId>,
    rides: &'a [Option<usize>],
    this: usize,
    body: Vec<Fused>,
    inputs: Vec<LoopInput>,
    memo: HashMap<usize, usize>,
    also: Vec<(BufId, usize)>,
}

impl<'a> Fuser<'a> {
    fn new(
        g: &'a Graph,
        materialised: &'a [bool],
        readable: &'a [bool],
        buf_of: &'a HashMap<usize, BufId>,
        rides: &'a [Option<usize>],
        this: usize,
    ) -> Fuser<'a> {
        Fuser {
            g,
            materialised,
            readable,
            buf_of,
            rides,
            this,
            body: Vec::new(),
            inputs: Vec::new(),
            memo: HashMap::new(),
            also: Vec::new(),
        }
    }
}

/// Elementwise ops a loop may compute again rather than read from memory: a lane operation or
/// two (no transcendental function, division or power).
fn cheap_to_recompute(op: &Op) -> bool {
    match op {
        Op::Unary(u) => {
            matches!(u, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu | UnaryOp::Sign | UnaryOp::Not)
        }
        Op::Binary(b) => !matches!(b, BinaryOp::Div | BinaryOp::Pow),
        Op::Select | Op::Cast(_) => true,
        _ => false,
    }
}

/// Whether a loop should compute materialised value `i` again rather than load it: a cheap
/// elementwise op of at most one buffer (the rest constants and broadcasts), like the `g * g`
/// that a gradient norm keeps in a buffer while the optimizer's loop reads `g` anyway: one
/// load either way, and no second pass over memory for the buffer's sake.
fn rereads_cheaply(g: &Graph, readable: &[bool], i: usize) -> bool {
    let Some(nd) = g.nodes.get(i) else { return false };
    let cheap = cheap_to_recompute(&nd.op);
    let mut buffers: Vec<usize> = Vec::new();
    for a in &nd.args {
        let Some(an) = g.nodes.get(a.index()) else { return false };
        if matches!(an.op, Op::Const(_) | Op::Size(_) | Op::Broadcast) {
            continue;
        }
        if !readable.get(a.index()).copied().unwrap_or(false) {
            return false;
        }
        if !buffers.contains(&a.index()) {
            buffers.push(a.index());
        }
    }
    cheap && buffers.len() <= 1
}

/// A shape's axes of other sizes than 1.
fn non_unit(shape: &[Dim]) -> Vec<&Dim> {
    shape.iter().filter(|d| d.as_constant() != Some(1)).collect()
}

/// Slice node `i` of a buffer, as a strided view of that buffer.
fn slice_view(g: &Graph, buf_of: &HashMap<usize, BufId>, i: usize) -> Result<LoopInput, IrError> {
    let nd = g.nodes.get(i).ok_or_else(|| IrError(format!("no node %{i}")))?;
    let Op::Slice { axis, start, .. } = nd.op else {
        return Err(IrError(format!("%{i} is no slice to view")));
    };
    let a = nd.args.first().copied().ok_or_else(|| IrError(format!("%{i}: missing operand")))?;
    let b =
        buf_of.get(&a.index()).copied().ok_or_else(|| IrError(format!("slice of %{a} without a buffer")))?;
    let whole_shape = g.ty(a).map(|t| t.shape.clone()).ok_or_else(|| IrError("no type".into()))?;
    let overflow = || IrError("a slice's offset overflows".into());
    let mut strides = vec![Dim::constant(1); whole_shape.len()];
    for k in (0..whole_shape.len().saturating_sub(1)).rev() {
        let (Some(next), Some(d)) = (strides.get(k + 1).cloned(), whole_shape.get(k + 1)) else {
            continue;
        };
        if let Some(st) = strides.get_mut(k) {
            *st = next.mul(d).map_err(|_| overflow())?;
        }
    }
    let step = strides.get(axis).cloned().ok_or_else(|| IrError("slice axis out of range".into()))?;
    let at = step.mul(&Dim::constant(start)).map_err(|_| overflow())?;
    Ok(LoopInput { buf: b, shape: nd.ty.shape.clone(), view: Some(View { at, strides }) })
}

/// Adds value `v` to the loop body (once); returns its index in `body`.
fn fuse(f: &mut Fuser<'_>, v: ValueId, root: bool) -> Result<usize, IrError> {
    let (g, materialised, buf_of) = (f.g, f.materialised, f.buf_of);
    let i = v.index();
    if let Some(k) = f.memo.get(&i) {
        return Ok(*k);
    }
    let rider = f.rides.get(i).copied().flatten() == Some(f.this);
    let nd = g.nodes.get(i).ok_or_else(|| IrError(format!("no node %{i}")))?;
    let load = |input: LoopInput, body: &mut Vec<Fused>, inputs: &mut Vec<LoopInput>| {
        let k = match inputs.iter().position(|x| *x == input) {
            Some(k) => k,
            None => {
                inputs.push(input);
                inputs.len() - 1
            }
        };
        body.push(Fused::Load(k));
        body.len() - 1
    };
    let whole = |buf: BufId, shape: Vec<Dim>| LoopInput { buf, shape, view: None };
    if !root && !rider && materialised.get(i).copied().unwrap_or(false) && !rereads_cheaply(g, f.readable, i)
    {
        let b = buf_of.get(&i).copied().ok_or_else(|| IrError(format!("%{i} has no buffer yet")))?;
        let k = load(whole(b, nd.ty.shape.clone()), &mut f.body, &mut f.inputs);
        f.memo.insert(i, k);
        return Ok(k);
    }
    let arg = |k: usize| nd.args.get(k).copied().ok_or_else(|| IrError(format!("%{i}: missing operand")));
    let k = match &nd.op {
        Op::Const(c) => {
            f.body.push(Fused::Const(*c, nd.ty.dtype));
            f.body.len() - 1
        }
        Op::Size(d) => {
            f.body.push(Fused::Size(d.clone(), nd.ty.dtype));
            f.body.len() - 1
        }
        Op::Broadcast => {
            let a = arg(0)?;
            let an = g.nodes.get(a.index()).ok_or_else(|| IrError("no operand".into()))?;
            match &an.op {
                Op::Const(c) => {
                    f.body.push(Fused::Const(*c, an.ty.dtype));
                    f.body.len() - 1
                }
                Op::Size(d) => {
                    f.body.push(Fused::Size(d.clone(), an.ty.dtype));
                    f.body.len() - 1
                }
                _ => {
                    let b = buf_of
                        .get(&a.index())
                        .copied()
                        .ok_or_else(|| IrError(format!("broadcast of %{} without a buffer", a.index())))?;
                    load(whole(b, an.ty.shape.clone()), &mut f.body, &mut f.inputs)
                }
            }
        }
        // A slice the scheduler left unmaterialised: its buffer read in place.
        Op::Slice { .. } => {
            let input = slice_view(g, buf_of, i)?;
            load(input, &mut f.body, &mut f.inputs)
        }
        // A reshape of such a slice that only drops or adds axes of size 1: the same view.
        Op::Reshape => {
            let a = arg(0)?;
            let mut input = slice_view(g, buf_of, a.index())?;
            let strides: Vec<Dim> = input
                .shape
                .iter()
                .zip(input.view.as_ref().map(|v| v.strides.clone()).unwrap_or_default())
                .filter(|(d, _)| d.as_constant() != Some(1))
                .map(|(_, st)| st)
                .collect();
            let mut kept = strides.into_iter();
            let remapped: Vec<Dim> = nd
                .ty
                .shape
                .iter()
                .map(|d| {
                    if d.as_constant() == Some(1) {
                        Dim::constant(0)
                    } else {
                        kept.next().unwrap_or_else(|| Dim::constant(0))
                    }
                })
                .collect();
            if let Some(v) = input.view.as_mut() {
                v.strides = remapped;
            }
            input.shape = nd.ty.shape.clone();
            load(input, &mut f.body, &mut f.inputs)
        }
        Op::Unary(u) => {
            let x = fuse(f, arg(0)?, false)?;
            f.body.push(Fused::Unary(*u, x));
            f.body.len() - 1
        }
        Op::Binary(b) => {
            let x = fuse(f, arg(0)?, false)?;
            let y = fuse(f, arg(1)?, false)?;
            f.body.push(Fused::Binary(*b, x, y));
            f.body.len() - 1
        }
        Op::Select => {
            let c = fuse(f, arg(0)?, false)?;
            let x = fuse(f, arg(1)?, false)?;
            let y = fuse(f, arg(2)?, false)?;
            f.body.push(Fused::Select(c, x, y));
            f.body.len() - 1
        }
        Op::Cast(d) => {
            let x = fuse(f, arg(0)?, false)?;
            f.body.push(Fused::Cast(*d, x));
            f.body.len() - 1
        }
        other => return Err(IrError(format!("{} cannot be fused", other.name()))),
    };
    f.memo.insert(i, k);
    if rider {
        let b = buf_of.get(&i).copied().ok_or_else(|| IrError(format!("rider %{i} has no buffer")))?;
        f.also.push((b, k));
    }
    Ok(k)
}

/// Assigns scratch slots by liveness: a buffer's slot is free again after its last reader. A
/// part of a concatenation built in place (`parts`: part → (whole, offset)) lives inside the
/// outermost whole's slot, which is taken when its first part is written and kept until the
/// last read of the whole or of any part.
fn plan(kir: &mut Kir, parts: &HashMap<BufId, (BufId, Dim)>) -> Result<(), IrError> {
    // The outermost whole holding `b`, and where `b` starts in it.
    let place = |b: BufId| -> Result<(BufId, Dim), IrError> {
        let (mut whole, mut at) = (b, Dim::constant(0));
        for _ in 0..=parts.len() {
            let Some((w, off)) = parts.get(&whole) else { return Ok((whole, at)) };
            at = at.add(off).map_err(|_| IrError("a concatenation's offset overflows".into()))?;
            whole = *w;
        }
        Err(IrError("concatenation parts form a cycle".into()))
    };
    let placed: Vec<(BufId, Dim)> =
        (0..kir.buffers.len()).map(|b| place(BufId(b as u32))).collect::<Result<_, _>>()?;
    let root = |b: &BufId| placed.get(b.0 as usize).map_or(*b, |p| p.0);
    // The last kernel touching each slot owner: its reads, and for a whole built in place the
    // writes of its parts too (its slot must outlive the last part written).
    let mut last_use: HashMap<BufId, usize> = HashMap::new();
    for (k, kern) in kir.kernels.iter().enumerate() {
        let mut reads: Vec<BufId> = match kern {
            Kernel::Loop { inputs, .. } => inputs.iter().map(|x| x.buf).collect(),
            Kernel::Call { args, .. } => args.iter().map(|x| x.0).collect(),
            Kernel::Gemm { a, b, .. } => vec![a.0, b.0],
        };
        reads.extend(kernel_outputs(kern).into_iter().filter(|o| parts.contains_key(o)));
        for b in reads {
            last_use.insert(root(&b), k);
        }
    }
    let outputs: Vec<BufId> = kir.outputs.iter().map(|o| root(&o.1)).collect();
    let mut free: Vec<usize> = Vec::new();
    let mut slot_of: HashMap<BufId, usize> = HashMap::new();
    for (k, kern) in kir.kernels.iter().enumerate() {
        let outs: Vec<BufId> = kernel_outputs(kern).iter().map(&root).collect();
        let mut own_slots = Vec::new();
        for out in &outs {
            if let Some(s) = slot_of.get(out) {
                // A whole whose earlier part took its slot.
                own_slots.push(*s);
                continue;
            }
            let size = linear_in_b(
                &kir.buffers.get(out.0 as usize).ok_or_else(|| IrError("no buffer".into()))?.elements,
            )?;
            // Reuse a dead slot (never one an operand of this kernel still occupies).
            let slot = match free.pop() {
                Some(s) => s,
                None => {
                    kir.slots.push((0, 0));
                    kir.slots.len() - 1
                }
            };
            if let Some(sz) = kir.slots.get_mut(slot) {
                sz.0 = sz.0.max(size.0);
                sz.1 = sz.1.max(size.1);
            }
            slot_of.insert(*out, slot);
            own_slots.push(slot);
        }
        // Owners whose last use is this kernel are dead now (outputs never die).
        let dead: Vec<BufId> = last_use
            .iter()
            .filter(|(b, last)| **last == k && !outputs.contains(b))
            .map(|(b, _)| *b)
            .collect();
        let mut dead_slots: Vec<usize> =
            dead.iter().filter_map(|b| slot_of.get(b).copied()).filter(|s| !own_slots.contains(s)).collect();
        dead_slots.sort_unstable();
        dead_slots.dedup();
        for s in dead_slots {
            // A slot is free only if no live buffer shares it.
            let still_used = slot_of
                .iter()
                .any(|(b, sl)| *sl == s && !dead.contains(b) && last_use.get(b).is_some_and(|l| *l > k));
            if !still_used && !free.contains(&s) {
                free.push(s);
            }
        }
        // A value written but never read frees its slot at once.
        for (out, slot) in outs.iter().zip(&own_slots) {
            if !last_use.contains_key(out) && !outputs.contains(out) {
                free.push(*slot);
            }
        }
    }
    for ((whole, at), buf) in placed.into_iter().zip(kir.buffers.iter_mut()) {
        if let Some(slot) = slot_of.get(&whole) {
            buf.storage = Storage::Slot(*slot);
            buf.at = at;
        }
    }
    Ok(())
}

/// The buffers a kernel writes.
fn kernel_outputs(kern: &Kernel) -> Vec<BufId> {
    match kern {
        Kernel::Loop { out, also, .. } => std::iter::once(*out).chain(also.iter().map(|a| a.0)).collect(),
        Kernel::Call { out, .. } | Kernel::Gemm { out, .. } => vec![*out],
    }
}

/// The stable text form (`fluxc build --emit kir`).
pub fn print_kir(k: &Kir) -> String {
    let mut out = String::new();
    for (i, b) in k.buffers.iter().enumerate() {
        let st = match &b.storage {
            Storage::Input(x) => format!("input {x}"),
            Storage::Param(x) => format!("param {x}"),
            Storage::Slot(x) if b.at.as_constant() == Some(0) => format!("slot {x}"),
            Storage::Slot(x) => format!("slot {x} at {}", b.at),
        };
        let _ = writeln!(out, "buffer b{i}: {} x {} ({st})", b.dtype.as_str(), b.elements);
    }
    for (i, (f, r)) in k.slots.iter().enumerate() {
        let _ = writeln!(out, "slot {i}: {f} + {r}*B elements");
    }
    for kern in &k.kernels {
        match kern {
            Kernel::Loop { out: o, shape, dtype, inputs, body, sum, also, out_rows } => {
                let dims: Vec<String> = shape.iter().map(ToString::to_string).collect();
                if let Some(kept) = sum {
                    let _ = writeln!(out, "sum over the axes from {kept} of:");
                }
                let ins: Vec<String> = inputs
                    .iter()
                    .map(|x| {
                        let d: Vec<String> = x.shape.iter().map(ToString::to_string).collect();
                        let view = match &x.view {
                            Some(v) => {
                                let st: Vec<String> = v.strides.iter().map(ToString::to_string).collect();
                                format!(" at {} strides ({})", v.at, st.join(", "))
                            }
                            None => String::new(),
                        };
                        format!("b{}[{}]{view}", x.buf.0, d.join(", "))
                    })
                    .collect();
                let rows = match out_rows {
                    Some((axis, stride)) => format!(" (rows from axis {axis}, {stride} apart)"),
                    None => String::new(),
                };
                let _ = writeln!(
                    out,
                    "loop b{} = {}[{}]{rows} <- {}",
                    o.0,
                    dtype.as_str(),
                    dims.join(", "),
                    ins.join(", ")
                );
                for (j, f) in body.iter().enumerate() {
                    let t = match f {
                        Fused::Load(k) => format!("load {k}"),
                        Fused::Const(c, d) => format!("const {c} {}", d.as_str()),
                        Fused::Size(d, t) => format!("size {d} {}", t.as_str()),
                        Fused::Unary(u, x) => format!("{} t{x}", format!("{u:?}").to_lowercase()),
                        Fused::Binary(b, x, y) => format!("{} t{x}, t{y}", format!("{b:?}").to_lowercase()),
                        Fused::Select(c, x, y) => format!("select t{c}, t{x}, t{y}"),
                        Fused::Cast(d, x) => format!("cast {} t{x}", d.as_str()),
                    };
                    let _ = writeln!(out, "  t{j} = {t}");
                }
                for (b, j) in also {
                    let _ = writeln!(out, "  also b{} = t{j}", b.0);
                }
            }
            Kernel::Call { op, args, out: o, ty } => {
                let a: Vec<String> = args.iter().map(|(b, _)| format!("b{}", b.0)).collect();
                let _ = writeln!(out, "call b{} = {} {} : {ty}", o.0, op.name(), a.join(", "));
            }
            Kernel::Gemm { a, b, out: o, ty } => {
                let side = |x: &(BufId, TensorTy, bool)| format!("b{}{}", x.0.0, if x.2 { "ᵀ" } else { "" });
                let _ = writeln!(out, "gemm b{} = {} @ {} : {ty}", o.0, side(a), side(b));
            }
        }
    }
    for (name, b, _) in &k.outputs {
        let _ = writeln!(out, "output {name} = b{}", b.0);
    }
    let (f, r) = k.scratch_bytes();
    let _ = writeln!(out, "scratch: {f} + {r}*B bytes");
    out
}
