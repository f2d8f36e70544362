//! The tensor IR: an SSA graph over a small closed set of primitive ops (DESIGN.md rule 7).
//!
//! Shapes are static except for the batch: a dimension is a [`Dim`] whose only variable may be
//! `B`. Elementwise ops take operands of one shape (the builder inserts explicit `Broadcast`s),
//! which keeps kernels and derivative rules simple. One function, [`infer`], computes an op's
//! result type from its operands; the builder uses it to type new nodes and the verifier to
//! re-check every node.

mod print;
mod simplify;
mod verify;

use std::fmt;

use crate::dims::Dim;

pub use print::print_graph;
pub use simplify::simplify;
pub use verify::verify;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DType {
    F32,
    I32,
    Bool,
}

impl DType {
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::Bool => "bool",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TensorTy {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorTy {
    pub fn new(dtype: DType, shape: Vec<Dim>) -> TensorTy {
        TensorTy { dtype, shape }
    }

    pub fn f32(shape: &[i64]) -> TensorTy {
        TensorTy { dtype: DType::F32, shape: shape.iter().map(|d| Dim::constant(*d)).collect() }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

impl fmt::Display for TensorTy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(ToString::to_string).collect();
        if dims.is_empty() {
            f.write_str(self.dtype.as_str())
        } else {
            write!(f, "{}[{}]", self.dtype.as_str(), dims.join(", "))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Abs,
    Sign,
    Sin,
    Cos,
    Tanh,
    Sigmoid,
    Relu,
    Floor,
    Not,
    /// The error function and its inverse (for `truncated_normal`, as Flux draws it).
    Erf,
    ErfInv,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

impl BinaryOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Prod,
    Max,
    Min,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolKind {
    Max,
    Mean,
}

/// Where a random op's numbers come from (§12.11).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RandSource {
    /// `randn[..S](seed = k)`: pure, its own seed.
    Seed(u64),
    /// The run's seed and step, on this stream (initialisers: the parameter's index).
    Stream(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dist {
    /// Uniform on [0, 1).
    Uniform,
    /// Standard normal.
    Normal,
}

/// Spatial options of convolution and pooling, one entry per spatial axis.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub stride: Vec<i64>,
    pub pad: Vec<i64>,
    pub dilation: Vec<i64>,
}

/// The closed set of primitive operations, by class.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    // ---- sources
    /// The model input (0) or the training target (1), …
    Input(usize),
    /// A parameter or state tensor (index into `Graph::params`).
    Param(usize),
    /// A scalar constant of the node's dtype.
    Const(f64),
    /// `arange`: `0, 1, …, N-1` as i32[N].
    Iota,
    /// The value of a dimension (it may mention the batch `B`) as a scalar of the node's dtype.
    Size(Dim),
    Random {
        dist: Dist,
        source: RandSource,
    },
    // ---- elementwise (operands of one shape)
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `where(c, a, b)`.
    Select,
    Cast(DType),
    // ---- reductions (the axes are removed)
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
    },
    ArgMax {
        axis: usize,
    },
    // ---- movement
    Reshape,
    Transpose {
        perm: Vec<usize>,
    },
    /// numpy broadcasting of the operand to the node's shape (aligned from the right).
    Broadcast,
    Slice {
        axis: usize,
        start: i64,
        end: i64,
    },
    Concat {
        axis: usize,
    },
    // ---- linear algebra and NN
    /// `[..., M, K] @ [..., K, N]` with equal batch dimensions.
    MatMul,
    /// `x [B, Cin, ..spatial]`, `w [Cout, Cin, ..kernel]`.
    Conv(Window),
    /// `x [B, Cin, ..spatial]`, `w [Cin, Cout, ..kernel]`; the output size is the node's (at least
    /// `(H - 1)*stride - 2*pad + dilation*(K - 1) + 1`, at most `stride - 1` more).
    ConvTranspose(Window),
    /// The gradient of `Conv` with respect to its weight: args `(x, grad_out)`, result the
    /// weight's shape.
    ConvWeightGrad(Window),
    Pool {
        kind: PoolKind,
        window: Vec<i64>,
        stride: Vec<i64>,
        pad: Vec<i64>,
    },
    /// The gradient of `Pool`: args `(x, grad_out)`, result `x`'s shape. Max sends each
    /// gradient to the first maximal element of its window (§12.12).
    PoolGrad {
        kind: PoolKind,
        window: Vec<i64>,
        stride: Vec<i64>,
        pad: Vec<i64>,
    },
    /// The orthogonal factor of a matrix `[rows, cols]`: `Q` of its QR decomposition with a
    /// positive diagonal in `R` (rows >= cols), or of its transpose (for `orthogonal`).
    Orthogonalize,
}

impl Op {
    pub fn name(&self) -> String {
        match self {
            Op::Input(i) => format!("input {i}"),
            Op::Param(i) => format!("param {i}"),
            Op::Const(v) => format!("const {v}"),
            Op::Iota => "iota".into(),
            Op::Size(d) => format!("size {d}"),
            Op::Random { dist, source } => {
                let d = match dist {
                    Dist::Uniform => "uniform",
                    Dist::Normal => "normal",
                };
                match source {
                    RandSource::Seed(s) => format!("random.{d} seed={s}"),
                    RandSource::Stream(s) => format!("random.{d} stream={s}"),
                }
            }
            Op::Unary(u) => format!("{u:?}").to_lowercase(),
            Op::Binary(b) => format!("{b:?}").to_lowercase(),
            Op::Select => "select".into(),
            Op::Cast(d) => format!("cast {}", d.as_str()),
            Op::Reduce { op, axes } => format!("reduce.{} axes={axes:?}", format!("{op:?}").to_lowercase()),
            Op::ArgMax { axis } => format!("argmax axis={axis}"),
            Op::Reshape => "reshape".into(),
            Op::Transpose { perm } => format!("transpose perm={perm:?}"),
            Op::Broadcast => "broadcast".into(),
            Op::Slice { axis, start, end } => format!("slice axis={axis} {start}..{end}"),
            Op::Concat { axis } => format!("concat axis={axis}"),
            Op::MatMul => "matmul".into(),
            Op::Conv(w) => format!("conv stride={:?} pad={:?} dilation={:?}", w.stride, w.pad, w.dilation),
            Op::ConvTranspose(w) => {
                format!("conv_transpose stride={:?} pad={:?} dilation={:?}", w.stride, w.pad, w.dilation)
            }
            Op::ConvWeightGrad(w) => {
                format!("conv_weight_grad stride={:?} pad={:?} dilation={:?}", w.stride, w.pad, w.dilation)
            }
            Op::Pool { kind, window, stride, pad } => {
                format!(
                    "pool.{} window={window:?} stride={stride:?} pad={pad:?}",
                    format!("{kind:?}").to_lowercase()
                )
            }
            Op::Orthogonalize => "orthogonalize".into(),
            Op::PoolGrad { kind, window, stride, pad } => format!(
                "pool_grad.{} window={window:?} stride={stride:?} pad={pad:?}",
                format!("{kind:?}").to_lowercase()
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub op: Op,
    pub args: Vec<ValueId>,
    pub ty: TensorTy,
}

/// A named input or parameter slot.
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    pub name: String,
    pub ty: TensorTy,
    /// Parameters: trainable (false for layer `state`).
    pub trainable: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub inputs: Vec<Slot>,
    pub params: Vec<Slot>,
    pub outputs: Vec<(String, ValueId)>,
}

/// Why an op cannot take its operands (a broken invariant: the checker proved the program).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrError(pub String);

impl fmt::Display for IrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a permutation swaps the last two axes and keeps the others (a matrix transpose).
pub fn swaps_last_two(perm: &[usize]) -> bool {
    let r = perm.len();
    r >= 2
        && perm
            .iter()
            .enumerate()
            .all(|(i, p)| if i + 2 < r { *p == i } else { *p == if i == r - 1 { r - 2 } else { r - 1 } })
}

fn err<T>(msg: impl Into<String>) -> Result<T, IrError> {
    Err(IrError(msg.into()))
}

fn c(v: i64) -> Dim {
    Dim::constant(v)
}

/// The result type of `op` on operands of types `args`; `declared` is the node's own type for
/// ops whose result shape is an attribute of the node (sources, reshape, broadcast, conv
/// transpose, conv weight gradients).
pub fn infer(op: &Op, args: &[&TensorTy], declared: Option<&TensorTy>) -> Result<TensorTy, IrError> {
    let arity = |n: usize| -> Result<(), IrError> {
        if args.len() == n {
            Ok(())
        } else {
            err(format!("{} takes {n} operands, got {}", op.name(), args.len()))
        }
    };
    let need_declared =
        || declared.cloned().ok_or_else(|| IrError(format!("{} needs a declared type", op.name())));
    let arg = |i: usize| -> Result<&TensorTy, IrError> {
        args.get(i).copied().ok_or_else(|| IrError(format!("{}: missing operand {i}", op.name())))
    };
    match op {
        Op::Input(_) | Op::Param(_) | Op::Random { .. } => {
            arity(0)?;
            need_declared()
        }
        Op::Const(_) => {
            arity(0)?;
            let t = need_declared()?;
            if !t.shape.is_empty() {
                return err("const is a scalar");
            }
            Ok(t)
        }
        Op::Size(_) => {
            arity(0)?;
            let t = need_declared()?;
            if !t.shape.is_empty() {
                return err("size is a scalar");
            }
            Ok(t)
        }
        Op::Iota => {
            arity(0)?;
            let t = need_declared()?;
            if t.rank() != 1 || t.dtype != DType::I32 {
                return err("iota is i32[N]");
            }
            Ok(t)
        }
        Op::Unary(u) => {
            arity(1)?;
            let a = arg(0)?;
            let ok = match u {
                UnaryOp::Not => a.dtype == DType::Bool,
                UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sign => a.dtype != DType::Bool,
                _ => a.dtype == DType::F32,
            };
            if !ok {
                return err(format!("{} on {}", op.name(), a));
            }
            Ok(a.clone())
        }
        Op::Binary(b) => {
            arity(2)?;
            let (x, y) = (arg(0)?, arg(1)?);
            if x != y {
                return err(format!("{} needs one type, got {x} and {y}", op.name()));
            }
            let logical = matches!(b, BinaryOp::And | BinaryOp::Or);
            if logical != (x.dtype == DType::Bool) && !matches!(b, BinaryOp::Eq | BinaryOp::Ne) {
                return err(format!("{} on {x}", op.name()));
            }
            let dtype = if b.is_comparison() || logical { DType::Bool } else { x.dtype };
            Ok(TensorTy::new(dtype, x.shape.clone()))
        }
        Op::Select => {
            arity(3)?;
            let (cnd, a, b) = (arg(0)?, arg(1)?, arg(2)?);
            if cnd.dtype != DType::Bool || cnd.shape != a.shape || a != b {
                return err(format!("select on {cnd}, {a}, {b}"));
            }
            Ok(a.clone())
        }
        Op::Cast(d) => {
            arity(1)?;
            Ok(TensorTy::new(*d, arg(0)?.shape.clone()))
        }
        Op::Reduce { axes, .. } => {
            arity(1)?;
            let a = arg(0)?;
            let mut sorted = axes.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != axes.len() || axes.iter().any(|x| *x >= a.rank()) {
                return err(format!("{} on {a}", op.name()));
            }
            let shape = a
                .shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, d)| d.clone())
                .collect();
            Ok(TensorTy::new(a.dtype, shape))
        }
        Op::ArgMax { axis } => {
            arity(1)?;
            let a = arg(0)?;
            if *axis >= a.rank() {
                return err(format!("{} on {a}", op.name()));
            }
            let shape =
                a.shape.iter().enumerate().filter(|(i, _)| i != axis).map(|(_, d)| d.clone()).collect();
            Ok(TensorTy::new(DType::I32, shape))
        }
        Op::Reshape => {
            arity(1)?;
            let a = arg(0)?;
            let t = need_declared()?;
            let count =
                |s: &[Dim]| s.iter().try_fold(c(1), |p, d| p.mul(d)).map_err(|_| IrError("overflow".into()));
            if count(&a.shape)? != count(&t.shape)? || t.dtype != a.dtype {
                return err(format!("reshape {a} to {t}"));
            }
            Ok(t)
        }
        Op::Transpose { perm } => {
            arity(1)?;
            let a = arg(0)?;
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if sorted != (0..a.rank()).collect::<Vec<_>>() {
                return err(format!("{} on {a}", op.name()));
            }
            let shape = perm.iter().filter_map(|i| a.shape.get(*i).cloned()).collect();
            Ok(TensorTy::new(a.dtype, shape))
        }
        Op::Broadcast => {
            arity(1)?;
            let a = arg(0)?;
            let t = need_declared()?;
            if t.dtype != a.dtype || a.rank() > t.rank() {
                return err(format!("broadcast {a} to {t}"));
            }
            let off = t.rank() - a.rank();
            for (i, d) in a.shape.iter().enumerate() {
                let to = t.shape.get(off + i).cloned().unwrap_or_default();
                if *d != to && *d != c(1) {
                    return err(format!("broadcast {a} to {t}"));
                }
            }
            Ok(t)
        }
        Op::Slice { axis, start, end } => {
            arity(1)?;
            let a = arg(0)?;
            let Some(size) = a.shape.get(*axis).and_then(Dim::as_constant) else {
                return err(format!("{} on {a}", op.name()));
            };
            if *start < 0 || start >= end || *end > size {
                return err(format!("{} on {a}", op.name()));
            }
            let mut shape = a.shape.clone();
            if let Some(d) = shape.get_mut(*axis) {
                *d = c(end - start);
            }
            Ok(TensorTy::new(a.dtype, shape))
        }
        Op::Concat { axis } => {
            let first = arg(0)?;
            let mut total = c(0);
            for a in args {
                let same = a.dtype == first.dtype
                    && a.rank() == first.rank()
                    && a.shape.iter().zip(&first.shape).enumerate().all(|(i, (x, y))| i == *axis || x == y);
                if !same || *axis >= a.rank() {
                    return err(format!("{} on {a} and {first}", op.name()));
                }
                total =
                    total.add(a.shape.get(*axis).unwrap_or(&c(0))).map_err(|_| IrError("overflow".into()))?;
            }
            let mut shape = first.shape.clone();
            if let Some(d) = shape.get_mut(*axis) {
                *d = total;
            }
            Ok(TensorTy::new(first.dtype, shape))
        }
        Op::MatMul => {
            arity(2)?;
            let (a, b) = (arg(0)?, arg(1)?);
            let (n, m) = (a.rank(), b.rank());
            if n < 2
                || n != m
                || a.shape.get(..n - 2) != b.shape.get(..m - 2)
                || a.shape.get(n - 1) != b.shape.get(m - 2)
                || a.dtype != b.dtype
            {
                return err(format!("matmul {a} @ {b}"));
            }
            let mut shape = a.shape.clone();
            if let (Some(last), Some(nb)) = (shape.last_mut(), b.shape.last()) {
                *last = nb.clone();
            }
            Ok(TensorTy::new(a.dtype, shape))
        }
        Op::Conv(w) => {
            arity(2)?;
            let (x, k) = (arg(0)?, arg(1)?);
            let n = spatial(x, w)?;
            if k.rank() != n + 2 || x.shape.get(1) != k.shape.get(1) {
                return err(format!("conv {x} with {k}"));
            }
            let mut shape = vec![
                x.shape.first().cloned().unwrap_or_default(),
                k.shape.first().cloned().unwrap_or_default(),
            ];
            for i in 0..n {
                let (h, kk) = (konst(x, 2 + i)?, konst(k, 2 + i)?);
                let (s, p, d) = (at(&w.stride, i), at(&w.pad, i), at(&w.dilation, i));
                let o = (h + 2 * p - d * (kk - 1) - 1).div_euclid(s.max(1)) + 1;
                if o < 1 {
                    return err(format!("conv output below 1: {x} with {k}"));
                }
                shape.push(c(o));
            }
            Ok(TensorTy::new(DType::F32, shape))
        }
        Op::ConvTranspose(w) => {
            arity(2)?;
            let (x, k) = (arg(0)?, arg(1)?);
            let n = spatial(x, w)?;
            let t = need_declared()?;
            if k.rank() != n + 2 || x.shape.get(1) != k.shape.first() || t.rank() != n + 2 {
                return err(format!("conv_transpose {x} with {k}"));
            }
            if t.shape.first() != x.shape.first() || t.shape.get(1) != k.shape.get(1) {
                return err(format!("conv_transpose {x} with {k} to {t}"));
            }
            for i in 0..n {
                let (h, kk, o) = (konst(x, 2 + i)?, konst(k, 2 + i)?, konst(&t, 2 + i)?);
                let (s, p, d) = (at(&w.stride, i), at(&w.pad, i), at(&w.dilation, i));
                let base = (h - 1) * s - 2 * p + d * (kk - 1) + 1;
                if o < base || o >= base + s.max(1) || o < 1 {
                    return err(format!("conv_transpose output size {o} (from {base})"));
                }
            }
            Ok(t)
        }
        Op::ConvWeightGrad(w) => {
            arity(2)?;
            let (x, g) = (arg(0)?, arg(1)?);
            let t = need_declared()?;
            let n = spatial(x, w)?;
            if g.rank() != n + 2
                || t.rank() != n + 2
                || t.shape.get(1) != x.shape.get(1)
                || t.shape.first() != g.shape.get(1)
            {
                return err(format!("conv_weight_grad {x}, {g} to {t}"));
            }
            Ok(t)
        }
        Op::Pool { window, stride, pad, .. } => {
            arity(1)?;
            let x = arg(0)?;
            let n = window.len();
            if x.rank() != n + 2 || stride.len() != n || pad.len() != n {
                return err(format!("{} on {x}", op.name()));
            }
            let mut shape: Vec<Dim> = x.shape.iter().take(2).cloned().collect();
            for i in 0..n {
                let h = konst(x, 2 + i)?;
                let o = (h + 2 * at(pad, i) - at(window, i)).div_euclid(at(stride, i).max(1)) + 1;
                if o < 1 {
                    return err(format!("pool output below 1 on {x}"));
                }
                shape.push(c(o));
            }
            Ok(TensorTy::new(x.dtype, shape))
        }
        Op::Orthogonalize => {
            arity(1)?;
            let a = arg(0)?;
            if a.rank() != 2 || a.dtype != DType::F32 || a.shape.iter().any(|d| d.as_constant().is_none()) {
                return err(format!("orthogonalize on {a}"));
            }
            Ok(a.clone())
        }
        Op::PoolGrad { kind, window, stride, pad } => {
            arity(2)?;
            let (x, g) = (arg(0)?, arg(1)?);
            let fwd = infer(
                &Op::Pool { kind: *kind, window: window.clone(), stride: stride.clone(), pad: pad.clone() },
                &[x],
                None,
            )?;
            if fwd != *g {
                return err(format!("pool_grad: gradient {g} for output {fwd}"));
            }
            Ok(x.clone())
        }
    }
}

fn at(v: &[i64], i: usize) -> i64 {
    v.get(i).copied().unwrap_or(1)
}

fn konst(t: &TensorTy, i: usize) -> Result<i64, IrError> {
    t.shape
        .get(i)
        .and_then(Dim::as_constant)
        .ok_or_else(|| IrError(format!("dimension {i} of {t} must be a constant")))
}

fn spatial(x: &TensorTy, w: &Window) -> Result<usize, IrError> {
    let n = x.rank().saturating_sub(2);
    if !(1..=2).contains(&n) || w.stride.len() != n || w.pad.len() != n || w.dilation.len() != n {
        return err(format!("convolution over {x} with {} spatial options", w.stride.len()));
    }
    Ok(n)
}

impl Graph {
    pub fn ty(&self, v: ValueId) -> Option<&TensorTy> {
        self.nodes.get(v.index()).map(|n| &n.ty)
    }

    /// Appends a node, typing it with [`infer`]. `declared` is required for ops whose result
    /// shape is an attribute (see `infer`).
    pub fn push(&mut self, op: Op, args: &[ValueId], declared: Option<TensorTy>) -> Result<ValueId, IrError> {
        let tys: Vec<&TensorTy> = args
            .iter()
            .map(|a| self.ty(*a).ok_or_else(|| IrError(format!("operand {a} does not exist"))))
            .collect::<Result<_, _>>()?;
        let ty = infer(&op, &tys, declared.as_ref())?;
        self.nodes.push(Node { op, args: args.to_vec(), ty });
        Ok(ValueId((self.nodes.len() - 1) as u32))
    }

    pub fn input(&mut self, name: &str, ty: TensorTy) -> Result<ValueId, IrError> {
        self.inputs.push(Slot { name: name.to_owned(), ty: ty.clone(), trainable: false });
        self.push(Op::Input(self.inputs.len() - 1), &[], Some(ty))
    }

    pub fn param(&mut self, name: &str, ty: TensorTy, trainable: bool) -> Result<ValueId, IrError> {
        self.params.push(Slot { name: name.to_owned(), ty: ty.clone(), trainable });
        self.push(Op::Param(self.params.len() - 1), &[], Some(ty))
    }

    pub fn constant(&mut self, value: f64, dtype: DType) -> Result<ValueId, IrError> {
        self.push(Op::Const(value), &[], Some(TensorTy::new(dtype, Vec::new())))
    }

    pub fn unary(&mut self, u: UnaryOp, a: ValueId) -> Result<ValueId, IrError> {
        self.push(Op::Unary(u), &[a], None)
    }

    /// A binary op with numpy broadcasting: operands are broadcast to their common shape first.
    pub fn binary(&mut self, b: BinaryOp, x: ValueId, y: ValueId) -> Result<ValueId, IrError> {
        let (tx, ty) = (self.ty(x).cloned(), self.ty(y).cloned());
        let (Some(tx), Some(ty)) = (tx, ty) else { return err("missing operand") };
        let shape = broadcast_shapes(&tx.shape, &ty.shape)?;
        let x = self.broadcast_to(x, &shape)?;
        let y = self.broadcast_to(y, &shape)?;
        self.push(Op::Binary(b), &[x, y], None)
    }

    pub fn broadcast_to(&mut self, x: ValueId, shape: &[Dim]) -> Result<ValueId, IrError> {
        let Some(t) = self.ty(x).cloned() else { return err("missing operand") };
        if t.shape == shape {
            return Ok(x);
        }
        self.push(Op::Broadcast, &[x], Some(TensorTy::new(t.dtype, shape.to_vec())))
    }

    pub fn reshape(&mut self, x: ValueId, shape: Vec<Dim>) -> Result<ValueId, IrError> {
        let Some(t) = self.ty(x).cloned() else { return err("missing operand") };
        if t.shape == shape {
            return Ok(x);
        }
        self.push(Op::Reshape, &[x], Some(TensorTy::new(t.dtype, shape)))
    }

    pub fn reduce(&mut self, op: ReduceOp, x: ValueId, axes: Vec<usize>) -> Result<ValueId, IrError> {
        if axes.is_empty() {
            return Ok(x);
        }
        self.push(Op::Reduce { op, axes }, &[x], None)
    }
}

/// numpy broadcasting of two shapes (aligned from the right; equal or 1).
pub fn broadcast_shapes(a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>, IrError> {
    let n = a.len().max(b.len());
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let x = (i + a.len()).checked_sub(n).and_then(|j| a.get(j));
        let y = (i + b.len()).checked_sub(n).and_then(|j| b.get(j));
        let d = match (x, y) {
            (Some(x), Some(y)) if x == y => x.clone(),
            (Some(x), Some(y)) if *y == c(1) => x.clone(),
            (Some(x), Some(y)) if *x == c(1) => y.clone(),
            (Some(x), None) => x.clone(),
            (None, Some(y)) => y.clone(),
            _ => return err(format!("cannot broadcast {a:?} with {b:?}")),
        };
        out.push(d);
    }
    Ok(out)
}
