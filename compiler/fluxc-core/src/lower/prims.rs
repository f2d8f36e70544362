//! Lowering of the primitives (§6): each becomes a few IR ops. Composite ones are decomposed
//! here (`mean` = sum / count, `softmax` through `logsumexp`, `dropout` through a uniform mask,
//! `onehot` through a comparison with `iota`), so the IR's op set stays small.

use fluxc_syntax::Span;

use super::{ArgVal, FnRef, GenVal, LEnv, LResult, Lowerer, Val, bind_args, fail};
use crate::check::prims::Prim;
use crate::check::ty::{Sh, Ty};
use crate::dims::Dim;
use crate::ir::{
    BinaryOp, DType, Dist, Op, PoolKind, RandSource, ReduceOp, TensorTy, UnaryOp, ValueId, Window,
};

impl<'a> Lowerer<'a> {
    pub(crate) fn prim(
        &mut self,
        env: &mut LEnv,
        p: Prim,
        gens: Option<&[GenVal]>,
        args: &[ArgVal],
        span: Span,
    ) -> LResult<Val> {
        let names: &[&str] = match p {
            Prim::Full => &["v"],
            Prim::ZerosLike | Prim::OnesLike | Prim::Flatten | Prim::Reshape | Prim::Broadcast => &["x"],
            Prim::Randn => &["seed"],
            Prim::RandUniform => &["lo", "hi"],
            Prim::RandNormal => &["mean", "std"],
            Prim::Onehot => &["labels", "n"],
            Prim::Pow => &["x", "y"],
            Prim::Clamp => &["x", "lo", "hi"],
            Prim::Where => &["c", "a", "b"],
            Prim::Max | Prim::Min => &["x", "y", "axis"],
            Prim::Sum
            | Prim::Mean
            | Prim::Prod
            | Prim::Logsumexp
            | Prim::Argmax
            | Prim::Softmax
            | Prim::Logsoftmax => &["x", "axis"],
            Prim::Transpose => &["x", "perm"],
            Prim::Concat => &["xs", "axis"],
            Prim::Conv1d | Prim::Conv2d | Prim::ConvTranspose2d => &["x", "w", "stride", "pad", "dilation"],
            Prim::Maxpool2d | Prim::Meanpool2d => &["x", "window", "stride", "pad"],
            Prim::Dropout => &["x", "p"],
            Prim::Orthogonal => &["gain"],
            Prim::TruncatedNormal => &["mean", "std", "lo", "hi"],
            _ if p.is_unary_elementwise() => &["x"],
            _ => &[],
        };
        let slots = bind_args(names.iter().copied(), args);
        let arg = |k: usize| slots.get(k).copied().flatten().and_then(|i| args.get(i));
        let shape_of_gens = |env: &LEnv| -> Option<Vec<Dim>> {
            let _ = env;
            gens.map(|g| {
                let mut out = Vec::new();
                for x in g {
                    match x {
                        GenVal::Dim(d) => out.push(d.clone()),
                        GenVal::Shape(s) => out.extend(
                            s.iter().filter_map(|e| if let Sh::Dim(d) = e { Some(d.clone()) } else { None }),
                        ),
                        _ => {}
                    }
                }
                out
            })
        };
        let creation = |me: &Self, env: &LEnv| -> LResult<Vec<Dim>> {
            match shape_of_gens(env) {
                Some(s) => Ok(s),
                None => match &me.init_shape {
                    Some(s) => Ok(s.clone()),
                    None => fail(span, "internal: a creation function without a shape"),
                },
            }
        };
        let f32s = |shape: Vec<Dim>| TensorTy::new(DType::F32, shape);
        Ok(match p {
            Prim::Zeros | Prim::Ones => {
                let shape = creation(self, env)?;
                let c = self.g.constant(if p == Prim::Zeros { 0.0 } else { 1.0 }, DType::F32)?;
                Val::T(self.g.broadcast_to(c, &shape)?)
            }
            Prim::Full => {
                let shape = creation(self, env)?;
                let v =
                    self.f32_of(&arg(0).map(|a| a.val.clone()).unwrap_or(Val::Dim(Dim::constant(0))), span)?;
                Val::T(self.g.broadcast_to(v, &shape)?)
            }
            Prim::ZerosLike | Prim::OnesLike => {
                let x = self.tensor_arg(arg(0), span)?;
                let t = self.ty_of(x);
                let c = self.g.constant(if p == Prim::ZerosLike { 0.0 } else { 1.0 }, t.dtype)?;
                Val::T(self.g.broadcast_to(c, &t.shape)?)
            }
            Prim::Arange => {
                let shape = shape_of_gens(env).unwrap_or_default();
                Val::T(self.g.push(Op::Iota, &[], Some(TensorTy::new(DType::I32, shape)))?)
            }
            Prim::Randn => {
                let shape = creation(self, env)?;
                let seed = match arg(0).map(|a| &a.val) {
                    Some(Val::Dim(d)) => d.as_constant().unwrap_or(0) as u64,
                    _ => 0,
                };
                Val::T(self.g.push(
                    Op::Random { dist: Dist::Normal, source: RandSource::Seed(seed) },
                    &[],
                    Some(f32s(shape)),
                )?)
            }
            Prim::RandUniform | Prim::RandNormal => {
                let shape = creation(self, env)?;
                let source = self.rng_source();
                let dist = if p == Prim::RandUniform { Dist::Uniform } else { Dist::Normal };
                let r = self.g.push(Op::Random { dist, source }, &[], Some(f32s(shape)))?;
                let (a, b) = (self.f32_or(arg(0), 0.0, span)?, self.f32_or(arg(1), 1.0, span)?);
                // uniform: lo + (hi - lo) * u; normal: mean + std * z
                let scale = if p == Prim::RandUniform { self.g.binary(BinaryOp::Sub, b, a)? } else { b };
                let s = self.g.binary(BinaryOp::Mul, scale, r)?;
                Val::T(self.g.binary(BinaryOp::Add, a, s)?)
            }
            Prim::TruncatedNormal => {
                // As Flux draws it: a uniform mapped through the normal's inverse CDF between
                // lo and hi, u -> erfinv(2*(l + (h - l)*u) - 1) * std * sqrt(2) + mean.
                let shape = creation(self, env)?;
                let source = self.rng_source();
                let u = self.g.push(Op::Random { dist: Dist::Uniform, source }, &[], Some(f32s(shape)))?;
                let mean = self.f32_or(arg(0), 0.0, span)?;
                let std = self.f32_or(arg(1), 1.0, span)?;
                let lo = self.f32_or(arg(2), -2.0, span)?;
                let hi = self.f32_or(arg(3), 2.0, span)?;
                let cdf = |me: &mut Self, bound: ValueId| -> LResult<ValueId> {
                    // 0.5 * (1 + erf((bound - mean) / std / sqrt(2)))
                    let d = me.g.binary(BinaryOp::Sub, bound, mean)?;
                    let z = me.g.binary(BinaryOp::Div, d, std)?;
                    let r2 = me.g.constant(std::f64::consts::SQRT_2, DType::F32)?;
                    let z = me.g.binary(BinaryOp::Div, z, r2)?;
                    let e = me.g.unary(UnaryOp::Erf, z)?;
                    let one = me.g.constant(1.0, DType::F32)?;
                    let half = me.g.constant(0.5, DType::F32)?;
                    let s = me.g.binary(BinaryOp::Add, one, e)?;
                    Ok(me.g.binary(BinaryOp::Mul, half, s)?)
                };
                let l = cdf(self, lo)?;
                let h = cdf(self, hi)?;
                let two = self.g.constant(2.0, DType::F32)?;
                let one = self.g.constant(1.0, DType::F32)?;
                let w = self.g.binary(BinaryOp::Sub, h, l)?;
                let v = self.g.binary(BinaryOp::Mul, w, u)?;
                let v = self.g.binary(BinaryOp::Add, l, v)?;
                let v = self.g.binary(BinaryOp::Mul, two, v)?;
                let v = self.g.binary(BinaryOp::Sub, v, one)?;
                let v = self.g.unary(UnaryOp::ErfInv, v)?;
                let r2 = self.g.constant(std::f64::consts::SQRT_2, DType::F32)?;
                let sc = self.g.binary(BinaryOp::Mul, std, r2)?;
                let v = self.g.binary(BinaryOp::Mul, v, sc)?;
                let v = self.g.binary(BinaryOp::Add, v, mean)?;
                let v = self.g.binary(BinaryOp::Max, v, lo)?;
                Val::T(self.g.binary(BinaryOp::Min, v, hi)?)
            }
            Prim::Orthogonal => {
                // PyTorch's layout: the first axis against all others flattened; the Q factor of
                // a normal matrix (positive diag(R)), times the gain.
                let shape = creation(self, env)?;
                let rows = shape.first().cloned().unwrap_or(Dim::constant(1));
                let cols = shape
                    .iter()
                    .skip(1)
                    .try_fold(Dim::constant(1), |p, d| p.mul(d))
                    .map_err(|_| super::overflow(span))?;
                let source = self.rng_source();
                let z = self.g.push(
                    Op::Random { dist: Dist::Normal, source },
                    &[],
                    Some(f32s(vec![rows, cols])),
                )?;
                let q = self.g.push(Op::Orthogonalize, &[z], None)?;
                let gain = self.f32_or(arg(0), 1.0, span)?;
                let q = self.g.binary(BinaryOp::Mul, gain, q)?;
                Val::T(self.g.reshape(q, shape)?)
            }
            Prim::Onehot => {
                let labels = self.tensor_arg(arg(0), span)?;
                let n = match arg(1).map(|a| &a.val) {
                    Some(Val::Dim(d)) => d.clone(),
                    _ => return fail(span, "internal: onehot without N"),
                };
                let mut shape = self.ty_of(labels).shape;
                let iota = self.g.push(Op::Iota, &[], Some(TensorTy::new(DType::I32, vec![n.clone()])))?;
                let mut keep = shape.clone();
                keep.push(Dim::constant(1));
                let l = self.g.reshape(labels, keep)?;
                shape.push(n);
                let eq = self.g.binary(BinaryOp::Eq, l, iota)?;
                let _ = shape;
                Val::T(self.g.push(Op::Cast(DType::F32), &[eq], None)?)
            }
            _ if p.is_unary_elementwise() => {
                let v = arg(0).map(|a| a.val.clone()).unwrap_or(Val::unit());
                let x = match v {
                    Val::Dim(ref d) => self.dim_value(d, DType::F32)?,
                    ref other => self.tensor(other, span)?,
                };
                let u = match p {
                    Prim::Exp => UnaryOp::Exp,
                    Prim::Log => UnaryOp::Log,
                    Prim::Sqrt => UnaryOp::Sqrt,
                    Prim::Rsqrt => UnaryOp::Rsqrt,
                    Prim::Abs => UnaryOp::Abs,
                    Prim::Sign => UnaryOp::Sign,
                    Prim::Sin => UnaryOp::Sin,
                    Prim::Cos => UnaryOp::Cos,
                    Prim::Tanh => UnaryOp::Tanh,
                    Prim::Sigmoid => UnaryOp::Sigmoid,
                    Prim::Relu => UnaryOp::Relu,
                    _ => UnaryOp::Floor,
                };
                Val::T(self.g.unary(u, x)?)
            }
            Prim::Pow => {
                let (x, y) = self.two(arg(0), arg(1), span, true)?;
                Val::T(self.g.binary(BinaryOp::Pow, x, y)?)
            }
            Prim::Max | Prim::Min if arg(1).is_some() => {
                let (x, y) = self.two(arg(0), arg(1), span, false)?;
                Val::T(self.g.binary(if p == Prim::Max { BinaryOp::Max } else { BinaryOp::Min }, x, y)?)
            }
            Prim::Clamp => {
                let (x, lo) = self.two(arg(0), arg(1), span, false)?;
                let (x2, hi) = self.two(arg(0), arg(2), span, false)?;
                let _ = x2;
                let m = self.g.binary(BinaryOp::Max, x, lo)?;
                Val::T(self.g.binary(BinaryOp::Min, m, hi)?)
            }
            Prim::Where => {
                let c = self.tensor_arg(arg(0), span)?;
                let (a, b) = self.two(arg(1), arg(2), span, false)?;
                let shape = crate::ir::broadcast_shapes(&self.ty_of(c).shape, &self.ty_of(a).shape)?;
                let shape = crate::ir::broadcast_shapes(&shape, &self.ty_of(b).shape)?;
                let (c, a, b) = (
                    self.g.broadcast_to(c, &shape)?,
                    self.g.broadcast_to(a, &shape)?,
                    self.g.broadcast_to(b, &shape)?,
                );
                Val::T(self.g.push(Op::Select, &[c, a, b], None)?)
            }
            Prim::Max | Prim::Min | Prim::Sum | Prim::Mean | Prim::Prod | Prim::Logsumexp | Prim::Argmax => {
                let x = self.tensor_arg(arg(0), span)?;
                let rank = self.ty_of(x).rank();
                let axis_arg = if matches!(p, Prim::Max | Prim::Min) { arg(2) } else { arg(1) };
                let axes = match axis_arg {
                    Some(a) => axes_of(&a.val, rank),
                    None => (0..rank).collect(),
                };
                let v = match p {
                    Prim::Sum => self.g.reduce(ReduceOp::Sum, x, axes)?,
                    Prim::Prod => self.g.reduce(ReduceOp::Prod, x, axes)?,
                    Prim::Max => self.g.reduce(ReduceOp::Max, x, axes)?,
                    Prim::Min => self.g.reduce(ReduceOp::Min, x, axes)?,
                    Prim::Mean => self.mean(x, axes)?,
                    Prim::Logsumexp => self.logsumexp(x, &axes, false)?,
                    _ => match axes.as_slice() {
                        [a] => self.g.push(Op::ArgMax { axis: *a }, &[x], None)?,
                        _ => {
                            // argmax over everything: of the flattened tensor.
                            let n = self
                                .ty_of(x)
                                .shape
                                .iter()
                                .try_fold(Dim::constant(1), |p, d| p.mul(d))
                                .map_err(|_| super::overflow(span))?;
                            let flat = self.g.reshape(x, vec![n])?;
                            self.g.push(Op::ArgMax { axis: 0 }, &[flat], None)?
                        }
                    },
                };
                Val::T(v)
            }
            Prim::Softmax | Prim::Logsoftmax => {
                let x = self.tensor_arg(arg(0), span)?;
                let rank = self.ty_of(x).rank();
                let axes = match arg(1) {
                    Some(a) => axes_of(&a.val, rank),
                    None => vec![rank.saturating_sub(1)],
                };
                let lse = self.logsumexp(x, &axes, true)?;
                let ls = self.g.binary(BinaryOp::Sub, x, lse)?;
                Val::T(if p == Prim::Softmax { self.g.unary(UnaryOp::Exp, ls)? } else { ls })
            }
            Prim::Reshape | Prim::Broadcast => {
                let x = self.tensor_arg(arg(0), span)?;
                let shape = shape_of_gens(env).unwrap_or_default();
                Val::T(if p == Prim::Reshape {
                    self.g.reshape(x, shape)?
                } else {
                    self.g.broadcast_to(x, &shape)?
                })
            }
            Prim::Transpose => {
                let x = self.tensor_arg(arg(0), span)?;
                let rank = self.ty_of(x).rank();
                let perm = match arg(1) {
                    Some(a) => axes_of(&a.val, rank),
                    None => (0..rank).rev().collect(),
                };
                Val::T(self.g.push(Op::Transpose { perm }, &[x], None)?)
            }
            Prim::Concat => {
                let parts = match arg(0).map(|a| &a.val) {
                    Some(Val::Tuple(items)) => items.clone(),
                    _ => return fail(span, "internal: concat of a non-tuple"),
                };
                let ids = parts.iter().map(|v| self.tensor(v, span)).collect::<LResult<Vec<_>>>()?;
                let rank = ids.first().map(|i| self.ty_of(*i).rank()).unwrap_or(0);
                let axis = match arg(1) {
                    Some(a) => axes_of(&a.val, rank).first().copied().unwrap_or(0),
                    None => 0,
                };
                Val::T(self.g.push(Op::Concat { axis }, &ids, None)?)
            }
            Prim::Flatten => {
                let x = self.tensor_arg(arg(0), span)?;
                let shape = self.ty_of(x).shape;
                let rest = shape
                    .iter()
                    .skip(1)
                    .try_fold(Dim::constant(1), |p, d| p.mul(d))
                    .map_err(|_| super::overflow(span))?;
                let first = shape.first().cloned().unwrap_or(Dim::constant(1));
                Val::T(self.g.reshape(x, vec![first, rest])?)
            }
            Prim::Conv1d | Prim::Conv2d | Prim::ConvTranspose2d => {
                let x = self.tensor_arg(arg(0), span)?;
                let w = self.tensor_arg(arg(1), span)?;
                let n = self.ty_of(x).rank().saturating_sub(2);
                let win = Window {
                    stride: pair(arg(2).map(|a| &a.val), n, 1),
                    pad: pair(arg(3).map(|a| &a.val), n, 0),
                    dilation: pair(arg(4).map(|a| &a.val), n, 1),
                };
                if p == Prim::ConvTranspose2d {
                    let (xt, wt) = (self.ty_of(x), self.ty_of(w));
                    let mut shape = vec![
                        xt.shape.first().cloned().unwrap_or_default(),
                        wt.shape.get(1).cloned().unwrap_or_default(),
                    ];
                    for i in 0..n {
                        let h = xt.shape.get(2 + i).and_then(Dim::as_constant).unwrap_or(1);
                        let k = wt.shape.get(2 + i).and_then(Dim::as_constant).unwrap_or(1);
                        let at = |v: &[i64], default: i64| v.get(i).copied().unwrap_or(default);
                        let (s, pd, d) = (at(&win.stride, 1), at(&win.pad, 0), at(&win.dilation, 1));
                        shape.push(Dim::constant((h - 1) * s - 2 * pd + d * (k - 1) + 1));
                    }
                    Val::T(self.g.push(
                        Op::ConvTranspose(win),
                        &[x, w],
                        Some(TensorTy::new(DType::F32, shape)),
                    )?)
                } else {
                    Val::T(self.g.push(Op::Conv(win), &[x, w], None)?)
                }
            }
            Prim::Maxpool2d | Prim::Meanpool2d => {
                let x = self.tensor_arg(arg(0), span)?;
                let window = pair(arg(1).map(|a| &a.val), 2, 1);
                let stride = match arg(2) {
                    Some(a) => pair(Some(&a.val), 2, 1),
                    None => window.clone(),
                };
                let pad = pair(arg(3).map(|a| &a.val), 2, 0);
                let kind = if p == Prim::Maxpool2d { PoolKind::Max } else { PoolKind::Mean };
                Val::T(self.g.push(Op::Pool { kind, window, stride, pad }, &[x], None)?)
            }
            Prim::Dropout => {
                let x = self.tensor_arg(arg(0), span)?;
                if !self.training {
                    return Ok(Val::T(x));
                }
                let pv =
                    self.f32_of(&arg(1).map(|a| a.val.clone()).unwrap_or(Val::Dim(Dim::constant(0))), span)?;
                let t = self.ty_of(x);
                let source = self.rng_source();
                let u = self.g.push(
                    Op::Random { dist: Dist::Uniform, source },
                    &[],
                    Some(TensorTy::new(DType::F32, t.shape)),
                )?;
                // keep with probability 1 - p, scaled by 1 / (1 - p)
                let keep = self.g.binary(BinaryOp::Ge, u, pv)?;
                let keep = self.g.push(Op::Cast(DType::F32), &[keep], None)?;
                let one = self.g.constant(1.0, DType::F32)?;
                let q = self.g.binary(BinaryOp::Sub, one, pv)?;
                let m = self.g.binary(BinaryOp::Mul, x, keep)?;
                Val::T(self.g.binary(BinaryOp::Div, m, q)?)
            }
            Prim::Print
            | Prim::Load
            | Prim::Save
            | Prim::ReadText
            | Prim::WriteText
            | Prim::Now
            | Prim::Env => {
                return self.io_prim(env, p, gens, args, span);
            }
            Prim::Chain
            | Prim::Parallel
            | Prim::SkipConnection
            | Prim::Recur
            | Prim::BatchNorm
            | Prim::GroupNorm => {
                return self.builtin_layer(env, p, gens, args, span);
            }
            Prim::ClipValue | Prim::ClipNorm | Prim::WeightDecay | Prim::OptimiserChain => {
                return fail(span, format!("`{}` is used in train blocks only", p.name()));
            }
            _ => return fail(span, format!("internal: `{}` has no lowering", p.name())),
        })
    }

    /// The rng source of a site: an initialiser uses its parameter's stream (§12.11); other
    /// sites get streams of their own.
    fn rng_source(&mut self) -> RandSource {
        match self.init_stream {
            Some(k) => RandSource::Stream(k),
            None => {
                let k = self.next_stream;
                self.next_stream = self.next_stream.wrapping_add(1);
                RandSource::Stream(k)
            }
        }
    }

    /// An f32 scalar argument, or a constant default when it is not given.
    fn f32_or(&mut self, a: Option<&ArgVal>, default: f64, span: Span) -> LResult<ValueId> {
        match a {
            Some(a) => self.f32_of(&a.val, span),
            None => Ok(self.g.constant(default, DType::F32)?),
        }
    }

    pub(crate) fn tensor_arg(&mut self, a: Option<&ArgVal>, span: Span) -> LResult<ValueId> {
        match a {
            Some(a) => self.tensor(&a.val, a.span),
            None => fail(span, "internal: missing argument"),
        }
    }

    /// Two elementwise operands (dims take the other's dtype; `float` makes both f32).
    fn two(
        &mut self,
        a: Option<&ArgVal>,
        b: Option<&ArgVal>,
        span: Span,
        float: bool,
    ) -> LResult<(ValueId, ValueId)> {
        let (Some(a), Some(b)) = (a, b) else { return fail(span, "internal: missing argument") };
        if float {
            return Ok((self.f32_of(&a.val, span)?, self.f32_of(&b.val, span)?));
        }
        self.operands(&a.val, &b.val, span)
    }

    /// `log(sum(exp(x - m))) + m` with `m` the maximum over `axes` (kept as size-1 axes when
    /// `keep`, for broadcasting back).
    pub(crate) fn logsumexp(&mut self, x: ValueId, axes: &[usize], keep: bool) -> LResult<ValueId> {
        let shape = self.ty_of(x).shape;
        let kept: Vec<Dim> = shape
            .iter()
            .enumerate()
            .map(|(i, d)| if axes.contains(&i) { Dim::constant(1) } else { d.clone() })
            .collect();
        let m = self.g.reduce(ReduceOp::Max, x, axes.to_vec())?;
        let mk = self.g.reshape(m, kept.clone())?;
        let d = self.g.binary(BinaryOp::Sub, x, mk)?;
        let e = self.g.unary(UnaryOp::Exp, d)?;
        let s = self.g.reduce(ReduceOp::Sum, e, axes.to_vec())?;
        let l = self.g.unary(UnaryOp::Log, s)?;
        let r = self.g.binary(BinaryOp::Add, l, m)?;
        Ok(if keep { self.g.reshape(r, kept)? } else { r })
    }

    /// The function value a `Val` names, for connections and activations.
    pub(crate) fn fn_of(v: &Val) -> Option<FnRef> {
        match v {
            Val::Fn(f) => Some(*f),
            _ => None,
        }
    }

    /// Calls a function value on already-lowered arguments.
    pub(crate) fn call_value(&mut self, f: FnRef, args: Vec<Val>, span: Span) -> LResult<Val> {
        let argv: Vec<ArgVal> = args.into_iter().map(|val| ArgVal { name: None, val, span }).collect();
        let mut env = LEnv::default();
        env.scopes.push(Default::default());
        self.apply(&mut env, Val::Fn(f), None, &argv, span)
    }

    /// The declared type of a value as the checker sees it (for `load[T]`).
    pub(crate) fn tensor_ty_of(t: &Ty) -> Option<TensorTy> {
        match t {
            Ty::Tensor(e, s) => {
                let dtype = match e {
                    crate::check::ty::Elem::F32 => DType::F32,
                    crate::check::ty::Elem::I32 => DType::I32,
                    crate::check::ty::Elem::Bool => DType::Bool,
                };
                let shape = s
                    .iter()
                    .map(|x| if let Sh::Dim(d) = x { Some(d.clone()) } else { None })
                    .collect::<Option<Vec<_>>>()?;
                Some(TensorTy::new(dtype, shape))
            }
            _ => None,
        }
    }
}

/// An axis or a tuple of axes (negative from the end), as positions.
fn axes_of(v: &Val, rank: usize) -> Vec<usize> {
    let one = |d: &Dim| d.as_constant().map(|a| if a < 0 { (a + rank as i64) as usize } else { a as usize });
    match v {
        Val::Dim(d) => one(d).into_iter().collect(),
        Val::Tuple(items) => {
            items.iter().filter_map(|i| if let Val::Dim(d) = i { one(d) } else { None }).collect()
        }
        _ => Vec::new(),
    }
}

/// A dimension option or a tuple of them, one value per spatial axis.
fn pair(v: Option<&Val>, n: usize, default: i64) -> Vec<i64> {
    match v {
        Some(Val::Dim(d)) => vec![d.as_constant().unwrap_or(default); n],
        Some(Val::Tuple(items)) => items
            .iter()
            .map(|i| if let Val::Dim(d) = i { d.as_constant().unwrap_or(default) } else { default })
            .collect(),
        _ => vec![default; n],
    }
}
