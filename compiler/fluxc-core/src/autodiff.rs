//! Reverse-mode symbolic differentiation on the IR: [`backward`] appends to a graph the nodes
//! that compute the gradient of a scalar with respect to chosen values. Each primitive has one
//! vector-Jacobian rule in [`vjp`] (the table); nodes that do not lie between the wanted values
//! and the loss are skipped, so dead gradients are never built.

use std::collections::HashMap;

use crate::dims::Dim;
use crate::ir::{BinaryOp, DType, Graph, IrError, Op, ReduceOp, TensorTy, UnaryOp, ValueId};

/// Appends the gradient of the scalar `loss` with respect to each of `wrt`; `None` where the loss
/// does not depend on it.
pub fn backward(g: &mut Graph, loss: ValueId, wrt: &[ValueId]) -> Result<Vec<Option<ValueId>>, IrError> {
    let n = loss.index() + 1;
    // Forward reachability from `wrt`: only these nodes can carry a gradient to them.
    let mut live = vec![false; n];
    for w in wrt {
        if let Some(l) = live.get_mut(w.index()) {
            *l = true;
        }
    }
    for i in 0..n {
        let Some(node) = g.nodes.get(i) else { break };
        if node.args.iter().any(|a| live.get(a.index()).copied().unwrap_or(false))
            && let Some(l) = live.get_mut(i)
        {
            *l = true;
        }
    }
    let loss_ty = g.ty(loss).cloned().ok_or_else(|| IrError("no loss".into()))?;
    if !loss_ty.shape.is_empty() || loss_ty.dtype != DType::F32 {
        return Err(IrError(format!("the loss must be a scalar f32, got {loss_ty}")));
    }
    let mut adj: HashMap<ValueId, ValueId> = HashMap::new();
    let one = g.constant(1.0, DType::F32)?;
    adj.insert(loss, one);
    for i in (0..n).rev() {
        let v = ValueId(i as u32);
        if !live.get(i).copied().unwrap_or(false) {
            continue;
        }
        let Some(gv) = adj.get(&v).copied() else { continue };
        let node = g.nodes.get(i).cloned().ok_or_else(|| IrError("missing node".into()))?;
        let contributions = vjp(g, &node.op, &node.args, v, gv)?;
        for (arg, grad) in node.args.iter().zip(contributions) {
            let Some(grad) = grad else { continue };
            if !live.get(arg.index()).copied().unwrap_or(false) {
                continue;
            }
            let total = match adj.get(arg) {
                Some(prev) => g.binary(BinaryOp::Add, *prev, grad)?,
                None => grad,
            };
            adj.insert(*arg, total);
        }
    }
    Ok(wrt.iter().map(|w| adj.get(w).copied()).collect())
}

fn ty(g: &Graph, v: ValueId) -> Result<TensorTy, IrError> {
    g.ty(v).cloned().ok_or_else(|| IrError(format!("{v} does not exist")))
}

fn scalar(g: &mut Graph, c: f64) -> Result<ValueId, IrError> {
    g.constant(c, DType::F32)
}

fn mul(g: &mut Graph, a: ValueId, b: ValueId) -> Result<ValueId, IrError> {
    g.binary(BinaryOp::Mul, a, b)
}

fn cast_f32(g: &mut Graph, b: ValueId) -> Result<ValueId, IrError> {
    g.push(Op::Cast(DType::F32), &[b], None)
}

/// Sums `grad` down to `shape` (the adjoint of numpy broadcasting).
pub fn sum_to(g: &mut Graph, grad: ValueId, shape: &[Dim]) -> Result<ValueId, IrError> {
    let gt = ty(g, grad)?;
    if gt.shape == shape {
        return Ok(grad);
    }
    let extra = gt.rank() - shape.len();
    let mut axes: Vec<usize> = (0..extra).collect();
    for (k, d) in shape.iter().enumerate() {
        if *d == Dim::constant(1) && gt.shape.get(extra + k) != Some(d) {
            axes.push(extra + k);
        }
    }
    let summed = g.reduce(ReduceOp::Sum, grad, axes)?;
    g.reshape(summed, shape.to_vec())
}

/// The gradient of a reduction's result, broadcast back over the reduced axes of `input`.
fn unreduce(g: &mut Graph, grad: ValueId, input: &TensorTy, axes: &[usize]) -> Result<ValueId, IrError> {
    let keep: Vec<Dim> = input
        .shape
        .iter()
        .enumerate()
        .map(|(i, d)| if axes.contains(&i) { Dim::constant(1) } else { d.clone() })
        .collect();
    let r = g.reshape(grad, keep)?;
    g.broadcast_to(r, &input.shape)
}

/// The vector-Jacobian product of one node: for each operand, its share of the gradient (None:
/// none flows, e.g. integer or boolean operands, `floor`, `sign`, comparisons).
pub fn vjp(
    g: &mut Graph,
    op: &Op,
    args: &[ValueId],
    out: ValueId,
    gy: ValueId,
) -> Result<Vec<Option<ValueId>>, IrError> {
    let a =
        |k: usize| args.get(k).copied().ok_or_else(|| IrError(format!("{}: missing operand {k}", op.name())));
    Ok(match op {
        Op::Input(_) | Op::Param(_) | Op::Const(_) | Op::Size(_) | Op::Iota | Op::Random { .. } => Vec::new(),
        Op::Unary(u) => {
            let x = a(0)?;
            let d = match u {
                UnaryOp::Neg => Some(g.unary(UnaryOp::Neg, gy)?),
                UnaryOp::Exp => Some(mul(g, gy, out)?),
                UnaryOp::Log => Some(g.binary(BinaryOp::Div, gy, x)?),
                UnaryOp::Sqrt => {
                    let half = scalar(g, 0.5)?;
                    let t = g.binary(BinaryOp::Div, half, out)?;
                    Some(mul(g, gy, t)?)
                }
                UnaryOp::Rsqrt => {
                    // d/dx x^(-1/2) = -1/2 * y / x
                    let m = scalar(g, -0.5)?;
                    let t = g.binary(BinaryOp::Div, out, x)?;
                    let t = mul(g, m, t)?;
                    Some(mul(g, gy, t)?)
                }
                UnaryOp::Abs => {
                    let s = g.unary(UnaryOp::Sign, x)?;
                    Some(mul(g, gy, s)?)
                }
                UnaryOp::Sin => {
                    let c = g.unary(UnaryOp::Cos, x)?;
                    Some(mul(g, gy, c)?)
                }
                UnaryOp::Cos => {
                    let s = g.unary(UnaryOp::Sin, x)?;
                    let s = g.unary(UnaryOp::Neg, s)?;
                    Some(mul(g, gy, s)?)
                }
                UnaryOp::Tanh => {
                    let one = scalar(g, 1.0)?;
                    let y2 = mul(g, out, out)?;
                    let t = g.binary(BinaryOp::Sub, one, y2)?;
                    Some(mul(g, gy, t)?)
                }
                UnaryOp::Sigmoid => {
                    let one = scalar(g, 1.0)?;
                    let t = g.binary(BinaryOp::Sub, one, out)?;
                    let t = mul(g, out, t)?;
                    Some(mul(g, gy, t)?)
                }
                UnaryOp::Relu => {
                    let zero = scalar(g, 0.0)?;
                    let pos = g.binary(BinaryOp::Gt, x, zero)?;
                    let pos = cast_f32(g, pos)?;
                    Some(mul(g, gy, pos)?)
                }
                UnaryOp::Erf => {
                    // 2/sqrt(pi) * exp(-x^2)
                    let x2 = mul(g, x, x)?;
                    let n = g.unary(UnaryOp::Neg, x2)?;
                    let e = g.unary(UnaryOp::Exp, n)?;
                    let c = scalar(g, 2.0 / std::f64::consts::PI.sqrt())?;
                    let t = mul(g, c, e)?;
                    Some(mul(g, gy, t)?)
                }
                UnaryOp::ErfInv => {
                    // sqrt(pi)/2 * exp(y^2)
                    let y2 = mul(g, out, out)?;
                    let e = g.unary(UnaryOp::Exp, y2)?;
                    let c = scalar(g, std::f64::consts::PI.sqrt() / 2.0)?;
                    let t = mul(g, c, e)?;
                    Some(mul(g, gy, t)?)
                }
                UnaryOp::Sign | UnaryOp::Floor | UnaryOp::Not => None,
            };
            vec![d]
        }
        Op::Binary(b) => {
            let (x, y) = (a(0)?, a(1)?);
            if ty(g, x)?.dtype != DType::F32 || b.is_comparison() || matches!(b, BinaryOp::And | BinaryOp::Or)
            {
                return Ok(vec![None, None]);
            }
            match b {
                BinaryOp::Add => vec![Some(gy), Some(gy)],
                BinaryOp::Sub => vec![Some(gy), Some(g.unary(UnaryOp::Neg, gy)?)],
                BinaryOp::Mul => vec![Some(mul(g, gy, y)?), Some(mul(g, gy, x)?)],
                BinaryOp::Div => {
                    let dx = g.binary(BinaryOp::Div, gy, y)?;
                    // -gy * x / y^2 = -dx * out / y ... written as -(gy * out) / y
                    let t = mul(g, gy, out)?;
                    let t = g.binary(BinaryOp::Div, t, y)?;
                    let dy = g.unary(UnaryOp::Neg, t)?;
                    vec![Some(dx), Some(dy)]
                }
                BinaryOp::Pow => {
                    // d/dx = y * x^(y-1); d/dy = ln(x) * x^y (0 where x <= 0, as PyTorch)
                    let one = scalar(g, 1.0)?;
                    let ym1 = g.binary(BinaryOp::Sub, y, one)?;
                    let p = g.binary(BinaryOp::Pow, x, ym1)?;
                    let t = mul(g, y, p)?;
                    let dx = mul(g, gy, t)?;
                    let zero = scalar(g, 0.0)?;
                    let pos = g.binary(BinaryOp::Gt, x, zero)?;
                    let one_b = g.broadcast_to(one, &ty(g, x)?.shape)?;
                    let safe = g.push(Op::Select, &[pos, x, one_b], None)?;
                    let lnx = g.unary(UnaryOp::Log, safe)?;
                    let t = mul(g, lnx, out)?;
                    let t = mul(g, gy, t)?;
                    let zeros = g.broadcast_to(zero, &ty(g, x)?.shape)?;
                    let dy = g.push(Op::Select, &[pos, t, zeros], None)?;
                    vec![Some(dx), Some(dy)]
                }
                BinaryOp::Max | BinaryOp::Min => {
                    // Ties go to the first operand.
                    let first = if *b == BinaryOp::Max { BinaryOp::Ge } else { BinaryOp::Le };
                    let m = g.binary(first, x, y)?;
                    let zero = scalar(g, 0.0)?;
                    let zeros = g.broadcast_to(zero, &ty(g, x)?.shape)?;
                    let dx = g.push(Op::Select, &[m, gy, zeros], None)?;
                    let dy = g.push(Op::Select, &[m, zeros, gy], None)?;
                    vec![Some(dx), Some(dy)]
                }
                _ => vec![None, None],
            }
        }
        Op::Select => {
            let (c, x) = (a(0)?, a(1)?);
            if ty(g, x)?.dtype != DType::F32 {
                return Ok(vec![None, None, None]);
            }
            let zero = scalar(g, 0.0)?;
            let zeros = g.broadcast_to(zero, &ty(g, x)?.shape)?;
            let da = g.push(Op::Select, &[c, gy, zeros], None)?;
            let db = g.push(Op::Select, &[c, zeros, gy], None)?;
            vec![None, Some(da), Some(db)]
        }
        Op::Cast(d) => {
            let x = a(0)?;
            if *d == DType::F32 && ty(g, x)?.dtype == DType::F32 { vec![Some(gy)] } else { vec![None] }
        }
        Op::Reduce { op: r, axes } => {
            let x = a(0)?;
            let xt = ty(g, x)?;
            let back = unreduce(g, gy, &xt, axes)?;
            let d = match r {
                ReduceOp::Sum => back,
                ReduceOp::Prod => {
                    let yb = unreduce(g, out, &xt, axes)?;
                    let t = g.binary(BinaryOp::Div, yb, x)?;
                    mul(g, back, t)?
                }
                ReduceOp::Max | ReduceOp::Min => {
                    // Shared evenly among the elements that attain the extremum (torch.amax).
                    let yb = unreduce(g, out, &xt, axes)?;
                    let hit = g.binary(BinaryOp::Eq, x, yb)?;
                    let hit = cast_f32(g, hit)?;
                    let count = g.reduce(ReduceOp::Sum, hit, axes.clone())?;
                    let count = unreduce(g, count, &xt, axes)?;
                    let share = g.binary(BinaryOp::Div, hit, count)?;
                    mul(g, back, share)?
                }
            };
            vec![Some(d)]
        }
        Op::ArgMax { .. } => vec![None],
        Op::Reshape => {
            let xt = ty(g, a(0)?)?;
            vec![Some(g.reshape(gy, xt.shape)?)]
        }
        Op::Transpose { perm } => {
            let mut inv = vec![0; perm.len()];
            for (i, p) in perm.iter().enumerate() {
                if let Some(slot) = inv.get_mut(*p) {
                    *slot = i;
                }
            }
            vec![Some(g.push(Op::Transpose { perm: inv }, &[gy], None)?)]
        }
        Op::Broadcast => {
            let xt = ty(g, a(0)?)?;
            vec![Some(sum_to(g, gy, &xt.shape)?)]
        }
        Op::Slice { axis, start, end } => {
            let xt = ty(g, a(0)?)?;
            let size = xt.shape.get(*axis).and_then(Dim::as_constant).unwrap_or(0);
            let mut parts = Vec::new();
            let zero = scalar(g, 0.0)?;
            for (lo, hi) in [(0, *start), (*end, size)] {
                if hi > lo {
                    let mut shape = xt.shape.clone();
                    if let Some(d) = shape.get_mut(*axis) {
                        *d = Dim::constant(hi - lo);
                    }
                    parts.push(g.broadcast_to(zero, &shape)?);
                }
                if lo == 0 {
                    parts.push(gy);
                }
            }
            vec![Some(if parts.len() == 1 { gy } else { g.push(Op::Concat { axis: *axis }, &parts, None)? })]
        }
        Op::Concat { axis } => {
            let mut out_grads = Vec::new();
            let mut offset = 0;
            for arg in args {
                let t = ty(g, *arg)?;
                let len = t.shape.get(*axis).and_then(Dim::as_constant).unwrap_or(0);
                out_grads.push(Some(g.push(
                    Op::Slice { axis: *axis, start: offset, end: offset + len },
                    &[gy],
                    None,
                )?));
                offset += len;
            }
            out_grads
        }
        Op::MatMul => {
            let (x, y) = (a(0)?, a(1)?);
            let r = ty(g, x)?.rank();
            let mut perm: Vec<usize> = (0..r).collect();
            perm.swap(r - 1, r - 2);
            let yt = g.push(Op::Transpose { perm: perm.clone() }, &[y], None)?;
            let xt = g.push(Op::Transpose { perm }, &[x], None)?;
            vec![Some(g.push(Op::MatMul, &[gy, yt], None)?), Some(g.push(Op::MatMul, &[xt, gy], None)?)]
        }
        Op::Conv(w) => {
            let (x, k) = (a(0)?, a(1)?);
            let (xt, kt) = (ty(g, x)?, ty(g, k)?);
            let dx = g.push(Op::ConvTranspose(w.clone()), &[gy, k], Some(xt))?;
            let dk = g.push(Op::ConvWeightGrad(w.clone()), &[x, gy], Some(kt))?;
            vec![Some(dx), Some(dk)]
        }
        Op::ConvTranspose(w) => {
            let (x, k) = (a(0)?, a(1)?);
            let kt = ty(g, k)?;
            let dx = g.push(Op::Conv(w.clone()), &[gy, k], None)?;
            let dk = g.push(Op::ConvWeightGrad(w.clone()), &[gy, x], Some(kt))?;
            vec![Some(dx), Some(dk)]
        }
        Op::Pool { kind, window, stride, pad } => {
            let x = a(0)?;
            let op = Op::PoolGrad {
                kind: *kind,
                window: window.clone(),
                stride: stride.clone(),
                pad: pad.clone(),
            };
            vec![Some(g.push(op, &[x, gy], None)?)]
        }
        Op::ConvWeightGrad(_) | Op::PoolGrad { .. } | Op::Orthogonalize => {
            return Err(IrError(format!(
                "{} has no derivative rule (second derivatives are not supported)",
                op.name()
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    //! Every rule against central finite differences in f64 on fresh random inputs.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::needless_range_loop)]

    use super::*;
    use crate::interp::{Array, Run, eval};
    use crate::ir::{PoolKind, Window, verify};
    use crate::rng::Stream;

    const RUN: Run = Run { batch: 2, seed: 0, step: 0 };

    /// A test case: a graph whose inputs are all f32 and whose output 0 is any f32 tensor; the
    /// checked loss is `sum(out * r)` for a fixed random `r`.
    struct Case {
        g: Graph,
        out: ValueId,
        inputs: Vec<Array>,
    }

    fn random_array(shape: &[usize], seed: u64, positive: bool) -> Array {
        let s = Stream::new(seed, 7, 0);
        let n: usize = shape.iter().product();
        let data = (0..n as u64)
            .map(|e| {
                let v = f64::from(s.normal(e));
                if positive { 0.5 + v.abs() } else { v }
            })
            .collect();
        Array::new(shape.to_vec(), data)
    }

    fn check(mut case: Case, name: &str) {
        let out_ty = case.g.ty(case.out).unwrap().clone();
        let out_shape = crate::interp::concrete(&out_ty.shape, RUN.batch).unwrap();
        let r = case.g.input("r", out_ty.clone()).unwrap();
        let prod = case.g.binary(BinaryOp::Mul, case.out, r).unwrap();
        let axes: Vec<usize> = (0..out_ty.rank()).collect();
        let loss = case.g.reduce(ReduceOp::Sum, prod, axes).unwrap();
        let mut inputs = case.inputs.clone();
        inputs.push(random_array(&out_shape, 99, false));
        let wrt: Vec<ValueId> = (0..case.inputs.len())
            .map(|k| ValueId(case.g.nodes.iter().position(|n| n.op == Op::Input(k)).unwrap() as u32))
            .collect();
        let grads = backward(&mut case.g, loss, &wrt).unwrap();
        verify(&case.g).unwrap_or_else(|e| panic!("{name}: {e}"));
        let vals = eval(&case.g, &inputs, &[], &RUN).unwrap();
        let loss_at = |inputs: &[Array]| eval(&case.g, inputs, &[], &RUN).unwrap()[loss.index()].data[0];
        for (k, grad) in grads.iter().enumerate() {
            let analytic: Vec<f64> = match grad {
                Some(gv) => vals[gv.index()].data.clone(),
                None => vec![0.0; inputs[k].len()],
            };
            for e in 0..inputs[k].len() {
                let h = 1e-6 * inputs[k].data[e].abs().max(1.0);
                let mut plus = inputs.clone();
                plus[k].data[e] += h;
                let mut minus = inputs.clone();
                minus[k].data[e] -= h;
                let numeric = (loss_at(&plus) - loss_at(&minus)) / (2.0 * h);
                let err = (analytic[e] - numeric).abs() / analytic[e].abs().max(numeric.abs()).max(1.0);
                assert!(err < 1e-6, "{name}: d/dinput{k}[{e}]: analytic {} numeric {numeric}", analytic[e]);
            }
        }
    }

    fn dims(shape: &[i64]) -> Vec<Dim> {
        shape.iter().map(|d| Dim::constant(*d)).collect()
    }

    fn unary_case(u: UnaryOp, positive: bool) -> Case {
        let mut g = Graph::default();
        let x = g.input("x", TensorTy::f32(&[3, 4])).unwrap();
        let out = g.unary(u, x).unwrap();
        Case { g, out, inputs: vec![random_array(&[3, 4], 1, positive)] }
    }

    #[test]
    fn unary_rules() {
        use UnaryOp::*;
        for (u, positive) in [
            (Neg, false),
            (Exp, false),
            (Log, true),
            (Sqrt, true),
            (Rsqrt, true),
            (Abs, false),
            (Sin, false),
            (Cos, false),
            (Tanh, false),
            (Sigmoid, false),
            (Relu, false),
            (Sign, false),
            (Floor, false),
            (Erf, false),
        ] {
            check(unary_case(u, positive), &format!("{u:?}"));
        }
    }

    #[test]
    fn binary_rules_with_broadcasting() {
        use BinaryOp::*;
        for b in [Add, Sub, Mul, Div, Pow, Max, Min] {
            let mut g = Graph::default();
            let x = g.input("x", TensorTy::f32(&[3, 4])).unwrap();
            let y = g.input("y", TensorTy::f32(&[4])).unwrap();
            let out = g.binary(b, x, y).unwrap();
            let positive = matches!(b, Div | Pow);
            let inputs = vec![random_array(&[3, 4], 2, positive), random_array(&[4], 3, positive)];
            check(Case { g, out, inputs }, &format!("{b:?}"));
        }
    }

    #[test]
    fn batch_dimension_and_size_one_broadcast() {
        let mut g = Graph::default();
        let b = Dim::var("B");
        let x = g.input("x", TensorTy::new(DType::F32, vec![b.clone(), Dim::constant(3)])).unwrap();
        let y = g.input("y", TensorTy::new(DType::F32, vec![b, Dim::constant(1)])).unwrap();
        let out = g.binary(BinaryOp::Mul, x, y).unwrap();
        check(
            Case { g, out, inputs: vec![random_array(&[2, 3], 4, false), random_array(&[2, 1], 5, false)] },
            "B",
        );
    }

    #[test]
    fn select_and_reductions_over_each_axis() {
        for axes in [vec![0], vec![1], vec![2], vec![0, 2], vec![0, 1, 2]] {
            for r in [ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Max, ReduceOp::Min] {
                let mut g = Graph::default();
                let x = g.input("x", TensorTy::f32(&[2, 3, 4])).unwrap();
                let out = g.reduce(r, x, axes.clone()).unwrap();
                check(
                    Case { g, out, inputs: vec![random_array(&[2, 3, 4], 6, false)] },
                    &format!("{r:?} {axes:?}"),
                );
            }
        }
        let mut g = Graph::default();
        let x = g.input("x", TensorTy::f32(&[3, 4])).unwrap();
        let y = g.input("y", TensorTy::f32(&[3, 4])).unwrap();
        let zero = g.constant(0.0, DType::F32).unwrap();
        let c = g.binary(BinaryOp::Gt, x, zero).unwrap();
        let out = g.push(Op::Select, &[c, x, y], None).unwrap();
        check(
            Case { g, out, inputs: vec![random_array(&[3, 4], 7, false), random_array(&[3, 4], 8, false)] },
            "select",
        );
    }

    #[test]
    fn movement_rules() {
        let mut g = Graph::default();
        let x = g.input("x", TensorTy::f32(&[2, 3, 4])).unwrap();
        let t = g.push(Op::Transpose { perm: vec![2, 0, 1] }, &[x], None).unwrap();
        let r = g.reshape(t, dims(&[4, 6])).unwrap();
        let s = g.push(Op::Slice { axis: 1, start: 1, end: 5 }, &[r], None).unwrap();
        let y = g.input("y", TensorTy::f32(&[4, 2])).unwrap();
        let out = g.push(Op::Concat { axis: 1 }, &[s, y], None).unwrap();
        check(
            Case {
                g,
                out,
                inputs: vec![random_array(&[2, 3, 4], 9, false), random_array(&[4, 2], 10, false)],
            },
            "movement",
        );
    }

    #[test]
    fn matmul_batched() {
        let mut g = Graph::default();
        let x = g.input("x", TensorTy::f32(&[2, 3, 4])).unwrap();
        let y = g.input("y", TensorTy::f32(&[2, 4, 5])).unwrap();
        let out = g.push(Op::MatMul, &[x, y], None).unwrap();
        check(
            Case {
                g,
                out,
                inputs: vec![random_array(&[2, 3, 4], 11, false), random_array(&[2, 4, 5], 12, false)],
            },
            "matmul",
        );
    }

    fn window(n: usize, s: i64, p: i64, d: i64) -> Window {
        Window { stride: vec![s; n], pad: vec![p; n], dilation: vec![d; n] }
    }

    #[test]
    fn convolutions_strided_padded_dilated() {
        for (s, p, d) in [(1, 0, 1), (2, 1, 1), (1, 2, 2), (2, 0, 2), (3, 1, 1)] {
            let mut g = Graph::default();
            let x = g.input("x", TensorTy::f32(&[2, 3, 7, 6])).unwrap();
            let k = g.input("k", TensorTy::f32(&[4, 3, 3, 2])).unwrap();
            let out = g.push(Op::Conv(window(2, s, p, d)), &[x, k], None).unwrap();
            let inputs = vec![random_array(&[2, 3, 7, 6], 13, false), random_array(&[4, 3, 3, 2], 14, false)];
            check(Case { g, out, inputs }, &format!("conv2d s{s} p{p} d{d}"));

            let mut g = Graph::default();
            let x = g.input("x", TensorTy::f32(&[2, 3, 9])).unwrap();
            let k = g.input("k", TensorTy::f32(&[2, 3, 3])).unwrap();
            let out = g.push(Op::Conv(window(1, s, p, d)), &[x, k], None).unwrap();
            let inputs = vec![random_array(&[2, 3, 9], 15, false), random_array(&[2, 3, 3], 16, false)];
            check(Case { g, out, inputs }, &format!("conv1d s{s} p{p} d{d}"));

            let mut g = Graph::default();
            let x = g.input("x", TensorTy::f32(&[2, 3, 4, 3])).unwrap();
            let k = g.input("k", TensorTy::f32(&[3, 2, 3, 3])).unwrap();
            let (h, w) = ((4 - 1) * s - 2 * p + d * 2 + 1, (3 - 1) * s - 2 * p + d * 2 + 1);
            if h >= 1 && w >= 1 {
                let t = TensorTy::f32(&[2, 2, h, w]);
                let out = g.push(Op::ConvTranspose(window(2, s, p, d)), &[x, k], Some(t)).unwrap();
                let inputs =
                    vec![random_array(&[2, 3, 4, 3], 17, false), random_array(&[3, 2, 3, 3], 18, false)];
                check(Case { g, out, inputs }, &format!("conv_transpose2d s{s} p{p} d{d}"));
            }
        }
    }

    #[test]
    fn pooling_away_from_ties() {
        for kind in [PoolKind::Max, PoolKind::Mean] {
            for (s, p) in [(2, 0), (1, 1), (3, 1)] {
                let mut g = Graph::default();
                let x = g.input("x", TensorTy::f32(&[2, 2, 6, 5])).unwrap();
                let op = Op::Pool { kind, window: vec![2, 3], stride: vec![s, s], pad: vec![p, p] };
                let out = g.push(op, &[x], None).unwrap();
                // Normal samples have no ties.
                check(
                    Case { g, out, inputs: vec![random_array(&[2, 2, 6, 5], 19, false)] },
                    &format!("{kind:?} s{s} p{p}"),
                );
            }
        }
    }

    #[test]
    fn max_pool_ties_send_the_gradient_to_the_first_maximum() {
        let mut g = Graph::default();
        let x = g.input("x", TensorTy::f32(&[1, 1, 2, 2])).unwrap();
        let op = Op::Pool { kind: PoolKind::Max, window: vec![2, 2], stride: vec![2, 2], pad: vec![0, 0] };
        let y = g.push(op, &[x], None).unwrap();
        let loss = g.reduce(ReduceOp::Sum, y, vec![0, 1, 2, 3]).unwrap();
        let grads = backward(&mut g, loss, &[x]).unwrap();
        let vals = eval(&g, &[Array::new(vec![1, 1, 2, 2], vec![1.0, 3.0, 3.0, 0.0])], &[], &RUN).unwrap();
        assert_eq!(vals[grads[0].unwrap().index()].data, vec![0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn dead_gradients_are_not_built() {
        let mut g = Graph::default();
        let x = g.input("x", TensorTy::f32(&[3])).unwrap();
        let y = g.input("y", TensorTy::f32(&[3])).unwrap();
        let e = g.unary(UnaryOp::Exp, y).unwrap();
        let s = g.binary(BinaryOp::Add, x, e).unwrap();
        let loss = g.reduce(ReduceOp::Sum, s, vec![0]).unwrap();
        let before = g.nodes.len();
        let grads = backward(&mut g, loss, &[x]).unwrap();
        assert!(grads[0].is_some());
        // Only the path to x is differentiated: no exp' (a multiplication by exp(y)) is built.
        assert!(!g.nodes[before..].iter().any(|n| n.op == Op::Binary(BinaryOp::Mul)));
    }
}
