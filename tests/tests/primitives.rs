//! Every primitive on its own, JIT against the f64 interpreter, on fresh random inputs at batch
//! sizes 1, 3 and 64 with an odd trailing size (13) so vector bodies and scalar tails both run:
//! each unary and binary op (with broadcasting from a row and from a scalar), select, casts,
//! every reduction over every axis set, argmax, transposes, slices, concatenation, batched and
//! plain matrix products, iota and both random distributions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use fluxc_core::dims::Dim;
use fluxc_core::interp::{Array, Run, concrete, eval};
use fluxc_core::ir::{BinaryOp, DType, Dist, Graph, Op, RandSource, ReduceOp, TensorTy, UnaryOp, ValueId};
use fluxc_core::kir::Kernel;
use fluxc_core::rng::Stream;

const UNARY: [UnaryOp; 16] = [
    UnaryOp::Neg,
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Sqrt,
    UnaryOp::Rsqrt,
    UnaryOp::Abs,
    UnaryOp::Sign,
    UnaryOp::Sin,
    UnaryOp::Cos,
    UnaryOp::Tanh,
    UnaryOp::Sigmoid,
    UnaryOp::Relu,
    UnaryOp::Floor,
    UnaryOp::Not,
    UnaryOp::Erf,
    UnaryOp::ErfInv,
];

const BINARY: [BinaryOp; 15] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Pow,
    BinaryOp::Max,
    BinaryOp::Min,
    BinaryOp::Eq,
    BinaryOp::Ne,
    BinaryOp::Lt,
    BinaryOp::Le,
    BinaryOp::Gt,
    BinaryOp::Ge,
    BinaryOp::And,
    BinaryOp::Or,
];

fn b() -> Dim {
    Dim::var("B")
}

fn ty(dims: &[Dim]) -> TensorTy {
    TensorTy::new(DType::F32, dims.to_vec())
}

/// Inputs for `g` at `batch`: normals, made positive (or within (-1, 1)) where an op needs it,
/// rounded to small integers for comparisons so that ties occur.
fn inputs(g: &Graph, batch: i64, seed: u64, kind: &str) -> Vec<Array> {
    g.inputs
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let shape = concrete(&s.ty.shape, batch).unwrap();
            let n: usize = shape.iter().product();
            let st = Stream::new(seed, k as u32, batch as u64);
            let data = (0..n as u64)
                .map(|e| {
                    let v = f64::from(st.normal(e));
                    match kind {
                        "positive" => v.abs() + 0.1,
                        "unit" => (v * 0.3).tanh(),
                        "ties" => v.round(),
                        _ => v,
                    }
                })
                .collect();
            Array::new(shape, data)
        })
        .collect()
}

/// Runs `g` on the interpreter and the JIT at batch sizes 1, 3, 64 and compares every output.
fn agree(what: &str, g: &Graph, kind: &str) {
    let kir = fluxc_core::kir::schedule(g).unwrap_or_else(|e| panic!("{what}: {e}"));
    let compiled = fluxc_cpu::compile(&kir).unwrap_or_else(|e| panic!("{what}: {e}"));
    for batch in [1, 3, 64] {
        let run = Run { batch, seed: 5, step: 2 };
        let ins = inputs(g, batch, 17, kind);
        let want = eval(g, &ins, &[], &run).unwrap_or_else(|e| panic!("{what}: {}", e.0));
        let got =
            fluxc_cpu::execute(&compiled, &kir, &ins, &[], &run).unwrap_or_else(|e| panic!("{what}: {e}"));
        for (name, value) in got {
            let v = g.outputs.iter().find(|(n, _)| *n == name).unwrap().1;
            let exact = &want[v.index()];
            assert_eq!(exact.shape, value.shape, "{what} batch {batch}");
            for (i, (a, e)) in value.data.iter().zip(&exact.data).enumerate() {
                let tol = 1e-4 * e.abs().max(1.0);
                assert!(
                    (a - e).abs() <= tol || (a.is_nan() && e.is_nan()) || (a.is_infinite() && a == e),
                    "{what} batch {batch}: [{i}] = {a}, interpreter {e}"
                );
            }
        }
    }
}

fn single(f: impl FnOnce(&mut Graph) -> ValueId) -> Graph {
    let mut g = Graph::default();
    let out = f(&mut g);
    g.outputs.push(("out".into(), out));
    g
}

#[test]
fn unary_ops() {
    for u in UNARY {
        let kind = match u {
            UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt => "positive",
            UnaryOp::ErfInv => "unit",
            UnaryOp::Not | UnaryOp::Sign => "ties",
            _ => "normal",
        };
        let g = single(|g| {
            let x = g.input("x", ty(&[b(), Dim::constant(13)])).unwrap();
            // `not` takes booleans.
            let x = if u == UnaryOp::Not { g.push(Op::Cast(DType::Bool), &[x], None).unwrap() } else { x };
            g.unary(u, x).unwrap()
        });
        agree(&format!("{u:?}"), &g, kind);
    }
}

#[test]
fn binary_ops_with_broadcasting() {
    for op in BINARY {
        let kind = if op == BinaryOp::Pow { "positive" } else { "ties" };
        for (label, rhs) in
            [("same", vec![b(), Dim::constant(13)]), ("row", vec![Dim::constant(13)]), ("scalar", vec![])]
        {
            let g = single(|g| {
                let x = g.input("x", ty(&[b(), Dim::constant(13)])).unwrap();
                let y = g.input("y", ty(&rhs)).unwrap();
                let logical = matches!(op, BinaryOp::And | BinaryOp::Or);
                let (x, y) = if logical {
                    // `and`/`or` take booleans.
                    (
                        g.push(Op::Cast(DType::Bool), &[x], None).unwrap(),
                        g.push(Op::Cast(DType::Bool), &[y], None).unwrap(),
                    )
                } else {
                    (x, y)
                };
                let y = g.broadcast_to(y, &[b(), Dim::constant(13)]).unwrap();
                g.binary(op, x, y).unwrap()
            });
            agree(&format!("{op:?} {label}"), &g, kind);
        }
    }
}

/// Broadcasts along trailing axes (a bias per channel, a row per batch element, both at once)
/// run row by row on lanes in the compiled loops; every pattern agrees with the interpreter,
/// through a vectorisable body (add, relu) and one that is not (pow).
#[test]
fn broadcasts_along_rows() {
    let c = Dim::constant;
    let out = [b(), c(3), c(5), c(7)];
    let shapes: [(&str, Vec<Dim>, Vec<Dim>); 6] = [
        ("channel bias", vec![c(3), c(1), c(1)], vec![c(7)]),
        ("plane", vec![c(5), c(7)], vec![c(3), c(5), c(1)]),
        ("per batch", vec![b(), c(1), c(5), c(7)], vec![b(), c(3), c(1), c(1)]),
        ("last axis", vec![c(1), c(3), c(1), c(7)], vec![c(3), c(5), c(7)]),
        ("mixed", vec![c(3), c(1), c(7)], vec![c(5), c(1)]),
        ("scalar and same", vec![], vec![b(), c(3), c(5), c(7)]),
    ];
    for (label, ys, zs) in shapes {
        for pow in [false, true] {
            let g = single(|g| {
                let x = g.input("x", ty(&out)).unwrap();
                let y = g.input("y", ty(&ys)).unwrap();
                let z = g.input("z", ty(&zs)).unwrap();
                let y = g.broadcast_to(y, &out).unwrap();
                let z = g.broadcast_to(z, &out).unwrap();
                let s = g.binary(BinaryOp::Add, x, y).unwrap();
                let s = if pow {
                    g.binary(BinaryOp::Pow, s, z).unwrap()
                } else {
                    g.binary(BinaryOp::Mul, s, z).unwrap()
                };
                g.push(Op::Unary(UnaryOp::Relu), &[s], None).unwrap()
            });
            agree(&format!("{label} pow={pow}"), &g, "positive");
        }
    }
}

/// Loops long enough to be split over the threads (at batch 64) agree with the interpreter in
/// every form: contiguous on lanes, row by row with broadcasts, per element (pow), with a sum
/// over short rows fused in (which runs whole in one part), and with a further output.
#[test]
fn long_loops_split_over_threads() {
    let c = Dim::constant;
    let out = [b(), c(75), c(8), c(17)];
    let graphs: [(&str, Graph); 4] = [
        (
            "lanes",
            single(|g| {
                let x = g.input("x", ty(&out)).unwrap();
                let y = g.binary(BinaryOp::Mul, x, x).unwrap();
                let y = g.binary(BinaryOp::Add, y, x).unwrap();
                g.unary(UnaryOp::Tanh, y).unwrap()
            }),
        ),
        (
            "rows and pow",
            single(|g| {
                let x = g.input("x", ty(&out)).unwrap();
                let y = g.input("y", ty(&[c(8), c(17)])).unwrap();
                let z = g.input("z", ty(&[c(75), c(1), c(1)])).unwrap();
                let y = g.broadcast_to(y, &out).unwrap();
                let z = g.broadcast_to(z, &out).unwrap();
                let s = g.binary(BinaryOp::Add, x, y).unwrap();
                g.binary(BinaryOp::Pow, s, z).unwrap()
            }),
        ),
        (
            "fused sum",
            single(|g| {
                let x = g.input("x", ty(&out)).unwrap();
                let e = g.unary(UnaryOp::Exp, x).unwrap();
                g.reduce(ReduceOp::Sum, e, vec![3]).unwrap()
            }),
        ),
        ("two outputs", {
            let mut g = Graph::default();
            let x = g.input("x", ty(&out)).unwrap();
            let y = g.input("y", ty(&out)).unwrap();
            let s = g.binary(BinaryOp::Add, x, y).unwrap();
            let e = g.unary(UnaryOp::Exp, s).unwrap();
            let p = g.binary(BinaryOp::Mul, e, y).unwrap();
            g.outputs.push(("e".into(), e));
            g.outputs.push(("p".into(), p));
            g
        }),
    ];
    for (label, g) in graphs {
        agree(label, &g, "positive");
    }
}

/// exp, sigmoid and tanh on lanes (a polynomial and exponent bits, not libm) at the edges of
/// their ranges: within a few ulp of the f64 value, subnormal results, 0 and ∞ past the
/// limits, infinities and NaN kept.
#[test]
fn lane_math_at_the_edges() {
    let edges = [
        -f64::INFINITY,
        -200.0,
        -103.9,
        -100.0,
        -88.0,
        -87.3,
        -50.0,
        -10.0,
        -1.0,
        -0.62,
        -1e-3,
        0.0,
        1e-3,
        0.3,
        0.625,
        0.7,
        1.0,
        9.0,
        20.0,
        50.0,
        88.0,
        88.7,
        88.8,
        200.0,
        f64::INFINITY,
        f64::NAN,
    ];
    // A multiple of eight, so every value goes through the vector body.
    let n = edges.len().div_ceil(8) * 8;
    let data: Vec<f64> = (0..n).map(|i| edges[i % edges.len()]).collect();
    for (u, exact) in [
        (UnaryOp::Exp, f64::exp as fn(f64) -> f64),
        (UnaryOp::Sigmoid, |x: f64| 1.0 / (1.0 + (-x).exp())),
        (UnaryOp::Tanh, f64::tanh),
    ] {
        let g = single(|g| {
            let x = g.input("x", ty(&[Dim::constant(n as i64)])).unwrap();
            g.unary(u, x).unwrap()
        });
        let kir = fluxc_core::kir::schedule(&g).unwrap();
        let compiled = fluxc_cpu::compile(&kir).unwrap();
        let run = Run { batch: 1, seed: 0, step: 0 };
        let input = Array::new(vec![n], data.iter().map(|v| f64::from(*v as f32)).collect());
        let got = fluxc_cpu::execute(&compiled, &kir, &[input], &[], &run).unwrap();
        for (x, y) in data.iter().zip(&got[0].1.data) {
            let want = f64::from(exact(f64::from(*x as f32)) as f32);
            let ok = if want.is_nan() {
                y.is_nan()
            } else if want.is_infinite() || want == 0.0 {
                *y == want
            } else {
                // A few ulp of the f32 result (absolute for subnormals).
                (y - want).abs() <= (want.abs() * 4.0 * f64::from(f32::EPSILON)).max(4.0 * 1.4e-45)
            };
            assert!(ok, "{u:?}({x}) = {y}, want {want}");
        }
    }
}

#[test]
fn select_and_casts() {
    let g = single(|g| {
        let c = g.input("c", ty(&[b(), Dim::constant(13)])).unwrap();
        let x = g.input("x", ty(&[b(), Dim::constant(13)])).unwrap();
        let y = g.input("y", ty(&[b(), Dim::constant(13)])).unwrap();
        let zero = g.constant(0.0, DType::F32).unwrap();
        let zero = g.broadcast_to(zero, &[b(), Dim::constant(13)]).unwrap();
        let c = g.binary(BinaryOp::Gt, c, zero).unwrap();
        g.push(Op::Select, &[c, x, y], None).unwrap()
    });
    agree("select", &g, "normal");
    for d in [DType::I32, DType::Bool, DType::F32] {
        let g = single(|g| {
            let x = g.input("x", ty(&[b(), Dim::constant(13)])).unwrap();
            let s = g.push(Op::Cast(d), &[x], None).unwrap();
            g.push(Op::Cast(DType::F32), &[s], None).unwrap()
        });
        agree(&format!("cast {d:?}"), &g, "normal");
    }
}

#[test]
fn reductions_and_argmax() {
    let dims = [b(), Dim::constant(5), Dim::constant(13)];
    for op in [ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Max, ReduceOp::Min] {
        for axes in [vec![0], vec![1], vec![2], vec![0, 1], vec![1, 2], vec![0, 2], vec![0, 1, 2]] {
            let g = single(|g| {
                let x = g.input("x", ty(&dims)).unwrap();
                // A chain before the reduction, so fused and unfused sums both run.
                let e = g.unary(UnaryOp::Tanh, x).unwrap();
                g.reduce(op, e, axes.clone()).unwrap()
            });
            agree(&format!("{op:?} over {axes:?}"), &g, "normal");
        }
    }
    for axis in 0..3 {
        let g = single(|g| {
            let x = g.input("x", ty(&dims)).unwrap();
            g.push(Op::ArgMax { axis }, &[x], None).unwrap()
        });
        agree(&format!("argmax {axis}"), &g, "ties");
    }
}

#[test]
fn movement() {
    let dims = [b(), Dim::constant(3), Dim::constant(13)];
    for perm in [vec![0, 2, 1], vec![2, 1, 0], vec![1, 0, 2], vec![1, 2, 0]] {
        let g = single(|g| {
            let x = g.input("x", ty(&dims)).unwrap();
            g.push(Op::Transpose { perm: perm.clone() }, &[x], None).unwrap()
        });
        agree(&format!("transpose {perm:?}"), &g, "normal");
    }
    // The last two axes swapped in 16 × 16 blocks, with ragged edges.
    let g = single(|g| {
        let x = g.input("x", ty(&[b(), Dim::constant(19), Dim::constant(37)])).unwrap();
        g.push(Op::Transpose { perm: vec![0, 2, 1] }, &[x], None).unwrap()
    });
    agree("transpose of 19 x 37 matrices", &g, "normal");
    for (axis, start, end) in [(1, 1, 3), (2, 0, 7), (2, 5, 13)] {
        let g = single(|g| {
            let x = g.input("x", ty(&dims)).unwrap();
            g.push(Op::Slice { axis, start, end }, &[x], None).unwrap()
        });
        agree(&format!("slice {axis} {start}..{end}"), &g, "normal");
    }
    for axis in [0, 1, 2] {
        let g = single(|g| {
            let x = g.input("x", ty(&dims)).unwrap();
            let y = g.input("y", ty(&dims)).unwrap();
            g.push(Op::Concat { axis }, &[x, y, x], None).unwrap()
        });
        agree(&format!("concat {axis}"), &g, "normal");
    }
}

#[test]
fn products_and_sources() {
    let g = single(|g| {
        let x = g.input("x", ty(&[b(), Dim::constant(7), Dim::constant(5)])).unwrap();
        let y = g.input("y", ty(&[b(), Dim::constant(5), Dim::constant(13)])).unwrap();
        g.push(Op::MatMul, &[x, y], None).unwrap()
    });
    agree("batched matmul", &g, "normal");
    // Enough small products at batch 64 to be split over the threads by batch element, one
    // operand transposed.
    let g = single(|g| {
        let x = g.input("x", ty(&[b(), Dim::constant(16), Dim::constant(32)])).unwrap();
        let y = g.input("y", ty(&[b(), Dim::constant(24), Dim::constant(32)])).unwrap();
        let yt = g.push(Op::Transpose { perm: vec![0, 2, 1] }, &[y], None).unwrap();
        g.push(Op::MatMul, &[x, yt], None).unwrap()
    });
    agree("many small batched products", &g, "normal");
    let g = single(|g| {
        let x = g.input("x", ty(&[b(), Dim::constant(37)])).unwrap();
        let w = g.input("w", ty(&[Dim::constant(13), Dim::constant(37)])).unwrap();
        let wt = g.push(Op::Transpose { perm: vec![1, 0] }, &[w], None).unwrap();
        g.push(Op::MatMul, &[x, wt], None).unwrap()
    });
    agree("matmul with a transposed weight", &g, "normal");
    // A transposed weight that three products read is copied once (a recurrent weight read at
    // every time step), not read transposed by each.
    let g = single(|g| {
        let w = g.input("w", ty(&[Dim::constant(13), Dim::constant(37)])).unwrap();
        let wt = g.push(Op::Transpose { perm: vec![1, 0] }, &[w], None).unwrap();
        let mut h = g.input("x", ty(&[b(), Dim::constant(37)])).unwrap();
        for _ in 0..3 {
            let y = g.push(Op::MatMul, &[h, wt], None).unwrap();
            let y = g.unary(UnaryOp::Tanh, y).unwrap();
            h = g.push(Op::MatMul, &[y, w], None).unwrap();
        }
        h
    });
    let kir = fluxc_core::kir::schedule(&g).unwrap();
    let copies =
        kir.kernels.iter().filter(|k| matches!(k, Kernel::Call { op: Op::Transpose { .. }, .. })).count();
    assert_eq!(copies, 1, "one transposed copy for the three products");
    agree("three products with one transposed weight", &g, "normal");
    let g =
        single(|g| g.push(Op::Iota, &[], Some(TensorTy::new(DType::I32, vec![Dim::constant(13)]))).unwrap());
    agree("iota", &g, "normal");
    for dist in [Dist::Uniform, Dist::Normal] {
        for source in [RandSource::Seed(3), RandSource::Stream(7)] {
            let g = single(|g| {
                let t = TensorTy::new(DType::F32, vec![b(), Dim::constant(13)]);
                g.push(Op::Random { dist, source }, &[], Some(t)).unwrap()
            });
            agree(&format!("{dist:?} {source:?}"), &g, "normal");
        }
    }
}
