//! One test per rule: a small expression over `x, y: f32[B, 3]` ⇒ what the optimizer makes of
//! it (printed as an s-expression of the extracted graph), and that the rule fired.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::optimize;
use crate::dims::Dim;
use crate::ir::{BinaryOp as B, DType, Graph, IrError, Op, ReduceOp, TensorTy, UnaryOp as U, ValueId};

fn ty(shape: &[Dim]) -> TensorTy {
    TensorTy::new(DType::F32, shape.to_vec())
}

fn bx() -> Vec<Dim> {
    vec![Dim::var("B"), Dim::constant(3)]
}

/// The output as an s-expression: inputs by name, constants by value.
fn sexpr(g: &Graph, v: ValueId) -> String {
    let n = &g.nodes[v.index()];
    match &n.op {
        Op::Input(i) => g.inputs[*i].name.clone(),
        Op::Const(c) => format!("{c}"),
        op => {
            let args: Vec<String> = n.args.iter().map(|a| sexpr(g, *a)).collect();
            format!("({} {})", op.name(), args.join(" "))
        }
    }
}

/// Builds `out = f(g, x, y)`, optimizes, and returns the result's s-expression, the rules that
/// fired, and the optimized graph.
fn run(
    f: impl FnOnce(&mut Graph, ValueId, ValueId) -> Result<ValueId, IrError>,
) -> (String, Vec<String>, Graph) {
    let mut g = Graph::default();
    let x = g.input("x", ty(&bx())).unwrap();
    let y = g.input("y", ty(&bx())).unwrap();
    let out = f(&mut g, x, y).unwrap();
    g.outputs.push(("out".into(), out));
    let o = optimize(&g);
    let fired = o.report.fired.iter().map(|(r, _)| r.clone()).collect();
    let v = o.graph.outputs[0].1;
    (sexpr(&o.graph, v), fired, o.graph)
}

/// `rule` rewrites the expression `f` builds to `want`.
fn rewrites(
    rule: &str,
    f: impl FnOnce(&mut Graph, ValueId, ValueId) -> Result<ValueId, IrError>,
    want: &str,
) {
    let (got, fired, _) = run(f);
    assert_eq!(got, want, "{rule}");
    assert!(fired.iter().any(|r| r == rule), "{rule} did not fire: {fired:?}");
}

fn k(g: &mut Graph, v: f64) -> Result<ValueId, IrError> {
    g.constant(v, DType::F32)
}

fn count(g: &Graph, name: &str) -> usize {
    g.nodes.iter().filter(|n| n.op.name() == name).count()
}

#[test]
fn mul_one() {
    rewrites(
        "mul-one",
        |g, x, _| {
            let c = k(g, 1.0)?;
            g.binary(B::Mul, x, c)
        },
        "x",
    );
}

#[test]
fn mul_one_left() {
    rewrites(
        "mul-one-left",
        |g, x, _| {
            let c = k(g, 1.0)?;
            g.binary(B::Mul, c, x)
        },
        "x",
    );
}

#[test]
fn mul_minus_one() {
    rewrites(
        "mul-minus-one",
        |g, x, _| {
            let c = k(g, -1.0)?;
            g.binary(B::Mul, x, c)
        },
        "(neg x)",
    );
}

#[test]
fn add_zero() {
    rewrites(
        "add-zero",
        |g, x, _| {
            let c = k(g, 0.0)?;
            g.binary(B::Add, x, c)
        },
        "x",
    );
}

#[test]
fn add_zero_left() {
    rewrites(
        "add-zero-left",
        |g, x, _| {
            let c = k(g, 0.0)?;
            g.binary(B::Add, c, x)
        },
        "x",
    );
}

#[test]
fn sub_zero() {
    rewrites(
        "sub-zero",
        |g, x, _| {
            let c = k(g, 0.0)?;
            g.binary(B::Sub, x, c)
        },
        "x",
    );
}

#[test]
fn div_one() {
    rewrites(
        "div-one",
        |g, x, _| {
            let c = k(g, 1.0)?;
            g.binary(B::Div, x, c)
        },
        "x",
    );
}

#[test]
fn neg_neg() {
    rewrites(
        "neg-neg",
        |g, x, _| {
            let n = g.unary(U::Neg, x)?;
            g.unary(U::Neg, n)
        },
        "x",
    );
}

#[test]
fn sub_neg() {
    rewrites(
        "sub-neg",
        |g, x, y| {
            let n = g.unary(U::Neg, y)?;
            g.binary(B::Sub, x, n)
        },
        "(add x y)",
    );
}

#[test]
fn add_neg() {
    rewrites(
        "add-neg",
        |g, x, y| {
            let n = g.unary(U::Neg, y)?;
            g.binary(B::Add, x, n)
        },
        "(sub x y)",
    );
}

#[test]
fn add_neg_left() {
    rewrites(
        "add-neg-left",
        |g, x, y| {
            let n = g.unary(U::Neg, y)?;
            g.binary(B::Add, n, x)
        },
        "(sub x y)",
    );
}

#[test]
fn neg_sub() {
    rewrites(
        "neg-sub",
        |g, x, y| {
            let d = g.binary(B::Sub, x, y)?;
            g.unary(U::Neg, d)
        },
        "(sub y x)",
    );
}

#[test]
fn mul_neg_neg() {
    rewrites(
        "mul-neg-neg",
        |g, x, y| {
            let (a, b) = (g.unary(U::Neg, x)?, g.unary(U::Neg, y)?);
            g.binary(B::Mul, a, b)
        },
        "(mul x y)",
    );
}

#[test]
fn log_exp() {
    rewrites(
        "log-exp",
        |g, x, _| {
            let e = g.unary(U::Exp, x)?;
            g.unary(U::Log, e)
        },
        "x",
    );
}

#[test]
fn log_softmax() {
    rewrites(
        "log-softmax",
        |g, x, y| {
            let e = g.unary(U::Exp, x)?;
            let d = g.binary(B::Div, e, y)?;
            g.unary(U::Log, d)
        },
        "(sub x (log y))",
    );
}

#[test]
fn mul_comm_shares_both_orders() {
    let (_, fired, g) = run(|g, x, y| {
        let (a, b) = (g.binary(B::Mul, x, y)?, g.binary(B::Mul, y, x)?);
        g.binary(B::Sub, a, b)
    });
    assert!(fired.iter().any(|r| r == "mul-comm"), "{fired:?}");
    assert_eq!(count(&g, "mul"), 1, "x*y and y*x are one node");
}

#[test]
fn add_comm_shares_both_orders() {
    let (_, fired, g) = run(|g, x, y| {
        let (a, b) = (g.binary(B::Add, x, y)?, g.binary(B::Add, y, x)?);
        g.binary(B::Mul, a, b)
    });
    assert!(fired.iter().any(|r| r == "add-comm"), "{fired:?}");
    assert_eq!(count(&g, "add"), 1, "x+y and y+x are one node");
}

#[test]
fn factor_mul() {
    let (got, fired, g) = run(|g, x, y| {
        let (a, b) = (g.binary(B::Mul, x, y)?, g.binary(B::Mul, x, x)?);
        g.binary(B::Add, a, b)
    });
    assert!(fired.iter().any(|r| r == "factor-mul"), "{fired:?}");
    assert_eq!((count(&g, "mul"), count(&g, "add")), (1, 1), "{got}");
}

#[test]
fn transpose_transpose() {
    rewrites(
        "transpose-transpose",
        |g, x, _| {
            let t = g.push(Op::Transpose { perm: vec![1, 0] }, &[x], None)?;
            g.push(Op::Transpose { perm: vec![1, 0] }, &[t], None)
        },
        "x",
    );
}

#[test]
fn reshape_reshape() {
    rewrites(
        "reshape-reshape",
        |g, x, _| {
            let r = g.reshape(x, vec![Dim::var("B"), Dim::constant(3), Dim::constant(1)])?;
            g.reshape(r, bx())
        },
        "x",
    );
}

#[test]
fn broadcast_broadcast() {
    rewrites(
        "broadcast-broadcast",
        |g, x, _| {
            let s = g.reduce(ReduceOp::Sum, x, vec![0])?;
            let b1 = g.broadcast_to(s, &[Dim::constant(2), Dim::constant(3)])?;
            let b2 = g.broadcast_to(b1, &[Dim::constant(4), Dim::constant(2), Dim::constant(3)])?;
            g.unary(U::Relu, b2)
        },
        "(relu (broadcast (reduce.sum axes=[0] x)))",
    );
}

#[test]
fn transpose_matmul() {
    rewrites(
        "transpose-matmul",
        |g, x, y| {
            let yt = g.push(Op::Transpose { perm: vec![1, 0] }, &[y], None)?;
            let p = g.push(Op::MatMul, &[x, yt], None)?;
            g.push(Op::Transpose { perm: vec![1, 0] }, &[p], None)
        },
        "(matmul y (transpose perm=[1, 0] x))",
    );
}

#[test]
fn sum_neg() {
    rewrites(
        "sum-neg",
        |g, x, _| {
            let n = g.unary(U::Neg, x)?;
            g.reduce(ReduceOp::Sum, n, vec![1])
        },
        "(neg (reduce.sum axes=[1] x))",
    );
}

#[test]
fn unary_broadcast() {
    rewrites(
        "unary-broadcast",
        |g, x, _| {
            let s = g.reduce(ReduceOp::Sum, x, vec![0])?;
            let b = g.broadcast_to(s, &bx())?;
            g.unary(U::Log, b)
        },
        "(broadcast (log (reduce.sum axes=[0] x)))",
    );
}

#[test]
fn div_broadcast() {
    rewrites(
        "div-broadcast",
        |g, x, _| {
            let s = g.reduce(ReduceOp::Sum, x, vec![0])?;
            let b = g.broadcast_to(s, &bx())?;
            g.binary(B::Div, x, b)
        },
        "(mul x (broadcast (div (broadcast 1) (reduce.sum axes=[0] x))))",
    );
}

#[test]
fn add_concat() {
    rewrites(
        "add-concat",
        |g, x, y| {
            let zero = k(g, 0.0)?;
            let zeros = g.broadcast_to(zero, &bx())?;
            let a = g.push(Op::Concat { axis: 1 }, &[x, zeros], None)?;
            let b = g.push(Op::Concat { axis: 1 }, &[zeros, y], None)?;
            g.binary(B::Add, a, b)
        },
        "(concat axis=1 x y)",
    );
}

#[test]
fn sum_squares() {
    rewrites(
        "sum-squares",
        |g, x, _| {
            let sq = g.binary(B::Mul, x, x)?;
            g.push(Op::Reduce { op: ReduceOp::Sum, axes: vec![0, 1] }, &[sq], None)
        },
        "(reshape (matmul (reshape x) (reshape x)))",
    );
}

#[test]
fn pool_grad_relu() {
    use crate::ir::PoolKind;
    // x and y spread over [B, 3, n, n] images; a 2×2 max pool of stride 2.
    let image = |n: i64| vec![Dim::var("B"), Dim::constant(3), Dim::constant(n), Dim::constant(n)];
    let column = vec![Dim::var("B"), Dim::constant(3), Dim::constant(1), Dim::constant(1)];
    let pool = || (PoolKind::Max, vec![2, 2], vec![2, 2], vec![0, 0]);
    rewrites(
        "pool-grad-relu",
        |g, x, y| {
            let x = g.push(Op::Reshape, &[x], Some(ty(&column)))?;
            let x = g.broadcast_to(x, &image(4))?;
            let grad = g.push(Op::Reshape, &[y], Some(ty(&column)))?;
            let grad = g.broadcast_to(grad, &image(2))?;
            let r = g.unary(U::Relu, x)?;
            let (kind, window, stride, pad) = pool();
            let routed = g.push(Op::PoolGrad { kind, window, stride, pad }, &[r, grad], None)?;
            let zeros = k(g, 0.0)?;
            let zeros = g.broadcast_to(zeros, &image(4))?;
            let positive = g.binary(B::Gt, x, zeros)?;
            let mask = g.push(Op::Cast(DType::F32), &[positive], None)?;
            g.binary(B::Mul, routed, mask)
        },
        "(pool_grad.max window=[2, 2] stride=[2, 2] pad=[0, 0] (relu (broadcast (reshape x))) \
         (mul (broadcast (reshape y)) (cast f32 (gt (pool.max window=[2, 2] stride=[2, 2] pad=[0, 0] \
         (relu (broadcast (reshape x)))) (broadcast 0)))))",
    );
}

#[test]
fn constants_fold() {
    let (got, _, _) = run(|g, x, _| {
        let (a, b) = (k(g, 2.0)?, k(g, 3.0)?);
        let c = g.binary(B::Add, a, b)?;
        g.binary(B::Mul, x, c)
    });
    assert_eq!(got, "(mul x (broadcast 5))");
}

#[test]
fn common_subexpressions_and_dead_code_go() {
    let (got, _, g) = run(|g, x, _| {
        let _dead = g.unary(U::Sin, x)?;
        let (a, b) = (g.unary(U::Exp, x)?, g.unary(U::Exp, x)?);
        g.binary(B::Sub, a, b)
    });
    assert_eq!(got, "(sub (exp x) (exp x))");
    assert_eq!((count(&g, "exp"), count(&g, "sin")), (1, 0));
}

#[test]
fn every_rule_has_a_test_here() {
    let text = include_str!("tests.rs");
    for name in super::rules::names() {
        assert!(text.contains(&format!("\"{name}\"")), "rule {name} has no test");
    }
}
