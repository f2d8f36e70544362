//! The scheduled kernels and their memory plan compute what the graph means: for every model of
//! the examples and the check_pass fixtures (forward in both variants) and every train step,
//! executing the KIR in f32 on its planned slots — with the reference executor, and with the
//! loops compiled by Cranelift — agrees with the f64 interpreter at batch sizes 1, 3 and 64.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use fluxc_core::interp::{Array, Run, eval};
use fluxc_core::ir::Graph;
use fluxc_tests::{graphs, random_input};

fn check_file(relative: &str) {
    for (name, g, init) in graphs(relative) {
        let kir = fluxc_core::kir::schedule(&g).unwrap_or_else(|e| panic!("{relative} {name}: {e}"));
        let compiled = fluxc_cpu::compile(&kir).unwrap_or_else(|e| panic!("{relative} {name}: {e}"));
        for batch in [1, 3, 64] {
            let run = Run { batch, seed: 0, step: 0 };
            let init_vals = eval(&init, &[], &[], &run).unwrap();
            let by_name: std::collections::HashMap<&str, Array> =
                init.outputs.iter().map(|(n, v)| (n.as_str(), init_vals[v.index()].clone())).collect();
            let params: Vec<Array> = g.params.iter().map(|p| by_name[p.name.as_str()].clone()).collect();
            let inputs: Vec<Array> = (0..g.inputs.len()).map(|k| random_input(&g, k, batch, 5)).collect();
            let want = eval(&g, &inputs, &params, &run).unwrap();
            let reference = fluxc_core::kir::execute(&kir, &inputs, &params, &run)
                .unwrap_or_else(|e| panic!("{relative} {name}: {}", e.0));
            let jit = fluxc_cpu::execute(&compiled, &kir, &inputs, &params, &run)
                .unwrap_or_else(|e| panic!("{relative} {name}: {e}"));
            for (out, value) in reference.into_iter().chain(jit) {
                let v = g.outputs.iter().find(|(n, _)| *n == out).unwrap().1;
                let exact = &want[v.index()];
                assert_eq!(exact.shape, value.shape, "{relative} {name} {out}");
                for (e, (a, b)) in value.data.iter().zip(&exact.data).enumerate() {
                    let tol = 2e-3 * b.abs().max(1.0);
                    assert!(
                        (a - b).abs() <= tol || (a.is_nan() && b.is_nan()),
                        "{relative} {name} batch {batch}: {out}[{e}] = {a}, interpreter {b}"
                    );
                }
            }
        }
    }
}

/// `kir` (scheduled from `g`), run by the reference executor and compiled, agrees with the
/// interpreter on `g` at batch sizes 1, 3 and 64, output by output.
fn agrees_with_the_interpreter(g: &Graph, kir: &fluxc_core::kir::Kir, seed: u64) {
    let compiled = fluxc_cpu::compile(kir).unwrap();
    for batch in [1, 3, 64] {
        let run = Run { batch, seed: 0, step: 0 };
        let inputs: Vec<Array> = (0..g.inputs.len()).map(|k| random_input(g, k, batch, seed)).collect();
        let want = eval(g, &inputs, &[], &run).unwrap();
        let reference = fluxc_core::kir::execute(kir, &inputs, &[], &run).unwrap();
        let jit = fluxc_cpu::execute(&compiled, kir, &inputs, &[], &run).unwrap();
        for (name, got) in reference.into_iter().chain(jit) {
            let v = g.outputs.iter().find(|(n, _)| *n == name).unwrap().1;
            let exact = &want[v.index()];
            assert_eq!(got.shape, exact.shape, "{name}");
            for (a, b) in got.data.iter().zip(&exact.data) {
                assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{name} at batch {batch}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn kernels_agree_with_the_interpreter_on_every_model_and_train_step() {
    let mut files: Vec<String> = fluxc_tests::flx_files("examples").into_iter().map(|(_, p)| p).collect();
    files.extend(fluxc_tests::fixtures("check_pass").into_iter().map(|(_, p)| p));
    files.extend(fluxc_tests::fixtures("ir").into_iter().map(|(_, p)| p));
    for f in files {
        check_file(&f);
    }
}

/// The loops' vectorised exp, sigmoid and tanh agree with the f64 functions to a few ulp over
/// their whole range (tails, zero, large values, NaN), on lanes and tails alike.
#[test]
fn vector_math_is_accurate() {
    use fluxc_core::ir::{TensorTy, UnaryOp};
    let xs: Vec<f32> = (-2000..=2000)
        .map(|i| i as f32 * 0.05)
        .chain([0.0, -0.0, 1e-7, -1e-7, 0.624, 0.626, -0.626, 88.0, -88.0, 100.0, -100.0, f32::NAN])
        .collect();
    let n = xs.len() as i64;
    for (u, f) in [
        (UnaryOp::Exp, (|x: f64| x.exp()) as fn(f64) -> f64),
        (UnaryOp::Sigmoid, |x: f64| 1.0 / (1.0 + (-x).exp())),
        (UnaryOp::Tanh, f64::tanh),
    ] {
        let mut g = Graph::default();
        let x = g.input("x", TensorTy::f32(&[n])).unwrap();
        let y = g.unary(u, x).unwrap();
        g.outputs.push(("y".into(), y));
        let kir = fluxc_core::kir::schedule(&g).unwrap();
        let bin = fluxc_cpu::compile(&kir).unwrap();
        let mut state = fluxc_cpu::State::default();
        let outs =
            fluxc_cpu::step(&bin, &kir, &mut state, &[&xs], &Run { batch: 1, seed: 0, step: 0 }).unwrap();
        for (x, got) in xs.iter().zip(outs[0]) {
            let want = f(f64::from(*x));
            let got = f64::from(*got);
            if want.is_nan() {
                assert!(got.is_nan(), "{u:?}({x}) = {got}, want NaN");
                continue;
            }
            let ok = if want.is_infinite() || want > f64::from(f32::MAX) {
                got.is_infinite() || got > 3.0e38
            } else {
                (got - want).abs() <= 4e-7 * want.abs() + 1e-38 + if u == UnaryOp::Tanh { 1e-7 } else { 0.0 }
            };
            assert!(ok, "{u:?}({x}) = {got}, want {want}");
        }
    }
}

/// A value computed from more buffers than one loop may read (a sum of a hundred per-step
/// gradients, as an LSTM over 100 steps has) is split over loops, and still computes the sum.
#[test]
fn a_sum_of_a_hundred_buffers_is_split_over_loops() {
    use fluxc_core::dims::Dim;
    use fluxc_core::ir::{BinaryOp, TensorTy};
    let mut g = Graph::default();
    let ty = TensorTy::new(fluxc_core::ir::DType::F32, vec![Dim::var("B"), Dim::constant(5)]);
    let xs: Vec<_> = (0..100).map(|k| g.input(&format!("x{k}"), ty.clone()).unwrap()).collect();
    let mut acc = xs[0];
    for x in &xs[1..] {
        acc = g.binary(BinaryOp::Add, acc, *x).unwrap();
    }
    g.outputs.push(("sum".into(), acc));
    let kir = fluxc_core::kir::schedule(&g).unwrap();
    for k in &kir.kernels {
        if let fluxc_core::kir::Kernel::Loop { inputs, also, .. } = k {
            assert!(inputs.len() + also.len() < 64, "a loop over {} buffers", inputs.len());
        }
    }
    let compiled = fluxc_cpu::compile(&kir).unwrap();
    let run = Run { batch: 3, seed: 0, step: 0 };
    let inputs: Vec<Array> = (0..g.inputs.len()).map(|k| random_input(&g, k, 3, 9)).collect();
    let want = eval(&g, &inputs, &[], &run).unwrap();
    let got = fluxc_cpu::execute(&compiled, &kir, &inputs, &[], &run).unwrap();
    let exact = &want[acc.index()];
    for (a, b) in got[0].1.data.iter().zip(&exact.data) {
        assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{a} vs {b}");
    }
}

/// A concatenation along the first axis whose parts are loop results is built in place: no
/// copy step runs, the parts' kernels write into the whole's slot at their offsets, a product
/// reads one part while a loop writes the next, and the values match the interpreter.
#[test]
fn a_concatenation_of_kernel_results_is_built_in_place() {
    use fluxc_core::dims::Dim;
    use fluxc_core::ir::{BinaryOp, DType, Op, TensorTy, UnaryOp};
    use fluxc_core::kir::{Kernel, Storage};
    let mut g = Graph::default();
    let ty = TensorTy::new(DType::F32, vec![Dim::var("B"), Dim::constant(5)]);
    let x = g.input("x", ty.clone()).unwrap();
    let w = g.input("w", TensorTy::new(DType::F32, vec![Dim::constant(5), Dim::constant(5)])).unwrap();
    let a = g.unary(UnaryOp::Exp, x).unwrap();
    let p = g.push(Op::MatMul, &[a, w], None).unwrap();
    let b = g.binary(BinaryOp::Mul, p, x).unwrap();
    let whole = g.push(Op::Concat { axis: 0 }, &[a, p, b], None).unwrap();
    g.outputs.push(("whole".into(), whole));
    let kir = fluxc_core::kir::schedule(&g).unwrap();
    assert!(
        !kir.kernels.iter().any(|k| matches!(k, Kernel::Call { op: Op::Concat { .. }, .. })),
        "{}",
        fluxc_core::kir::print_kir(&kir)
    );
    let slot = |k: &Kernel| {
        let out = match k {
            Kernel::Loop { out, .. } | Kernel::Gemm { out, .. } | Kernel::Call { out, .. } => out,
        };
        let buf = &kir.buffers[out.0 as usize];
        (buf.storage.clone(), buf.at.to_string())
    };
    let places: Vec<_> = kir.kernels.iter().map(slot).collect();
    assert_eq!(places.len(), 3, "{}", fluxc_core::kir::print_kir(&kir));
    assert!(places.iter().all(|(s, _)| matches!(s, Storage::Slot(_)) && *s == places[0].0));
    let ats: Vec<&str> = places.iter().map(|(_, at)| at.as_str()).collect();
    assert_eq!(ats, ["0", "5*B", "10*B"]);
    agrees_with_the_interpreter(&g, &kir, 11);
}

/// A concatenation along a later axis whose parts are loops read by nothing else is built in
/// place too: each loop writes its rows at the whole's row stride (an `exp` that would
/// otherwise run as a whole-run map, a broadcast read, rows of 3, 6 and 5 with vector tails).
#[test]
fn a_concatenation_along_a_later_axis_is_written_in_rows() {
    use fluxc_core::dims::Dim;
    use fluxc_core::ir::{BinaryOp, DType, Op, TensorTy, UnaryOp};
    use fluxc_core::kir::Kernel;
    let mut g = Graph::default();
    let ty = |c: i64| TensorTy::new(DType::F32, vec![Dim::var("B"), Dim::constant(c)]);
    let x = g.input("x", ty(3)).unwrap();
    let y = g.input("y", ty(6)).unwrap();
    let bias = g.input("bias", TensorTy::new(DType::F32, vec![Dim::constant(5)])).unwrap();
    let z = g.input("z", ty(5)).unwrap();
    let a = g.unary(UnaryOp::Exp, x).unwrap();
    let b = g.unary(UnaryOp::Tanh, y).unwrap();
    let wide = g.push(Op::Broadcast, &[bias], Some(ty(5))).unwrap();
    let c = g.binary(BinaryOp::Mul, z, wide).unwrap();
    let whole = g.push(Op::Concat { axis: 1 }, &[a, b, c], None).unwrap();
    g.outputs.push(("whole".into(), whole));
    let kir = fluxc_core::kir::schedule(&g).unwrap();
    let text = fluxc_core::kir::print_kir(&kir);
    assert!(!kir.kernels.iter().any(|k| matches!(k, Kernel::Call { .. })), "{text}");
    let strided = kir.kernels.iter().filter(|k| matches!(k, Kernel::Loop { out_rows: Some(_), .. })).count();
    assert_eq!(strided, 3, "{text}");
    agrees_with_the_interpreter(&g, &kir, 13);
}

/// A slice that only elementwise ops read is no copy: their loop reads the sliced buffer in
/// place through a strided view (columns of a matrix, one step of a sequence, a block of rows;
/// rows of 5 with vector tails, a broadcast beside it), and the values match the interpreter.
#[test]
fn slices_read_by_loops_are_views() {
    use fluxc_core::dims::Dim;
    use fluxc_core::ir::{BinaryOp, DType, Op, TensorTy, UnaryOp};
    use fluxc_core::kir::Kernel;
    let mut g = Graph::default();
    let b = Dim::var("B");
    let f32_ty = |shape: Vec<Dim>| TensorTy::new(DType::F32, shape);
    let x = g.input("x", f32_ty(vec![b.clone(), Dim::constant(15)])).unwrap();
    let seq = g.input("seq", f32_ty(vec![b.clone(), Dim::constant(3), Dim::constant(5)])).unwrap();
    let rows = g.input("rows", f32_ty(vec![Dim::constant(7), Dim::constant(5)])).unwrap();
    let bias = g.input("bias", f32_ty(vec![Dim::constant(5)])).unwrap();
    let slice =
        |g: &mut Graph, v, axis, start, end| g.push(Op::Slice { axis, start, end }, &[v], None).unwrap();
    let left = slice(&mut g, x, 1, 0, 5);
    let right = slice(&mut g, x, 1, 10, 15);
    let sum = g.binary(BinaryOp::Add, left, right).unwrap();
    let wide = g.push(Op::Broadcast, &[bias], Some(f32_ty(vec![b.clone(), Dim::constant(5)]))).unwrap();
    let cols = g.binary(BinaryOp::Mul, sum, wide).unwrap();
    let step = slice(&mut g, seq, 1, 1, 2);
    let step = g.unary(UnaryOp::Exp, step).unwrap();
    let block = slice(&mut g, rows, 0, 2, 6);
    let block = g.unary(UnaryOp::Tanh, block).unwrap();
    g.outputs.push(("cols".into(), cols));
    g.outputs.push(("step".into(), step));
    g.outputs.push(("block".into(), block));
    let kir = fluxc_core::kir::schedule(&g).unwrap();
    let text = fluxc_core::kir::print_kir(&kir);
    assert!(!kir.kernels.iter().any(|k| matches!(k, Kernel::Call { .. })), "{text}");
    let views = kir
        .kernels
        .iter()
        .map(|k| match k {
            Kernel::Loop { inputs, .. } => inputs.iter().filter(|x| x.view.is_some()).count(),
            _ => 0,
        })
        .sum::<usize>();
    assert_eq!(views, 4, "{text}");
    agrees_with_the_interpreter(&g, &kir, 17);
}

/// The products of a sequence's steps with one matrix (an RNN's input projection) become one
/// product over the whole sequence, whose steps the loops read in place; the values match the
/// interpreter on the original graph. A sequence used at too few steps keeps its products.
#[test]
fn step_products_become_one_product_of_the_sequence() {
    use fluxc_core::dims::Dim;
    use fluxc_core::ir::{DType, Op, TensorTy, UnaryOp};
    use fluxc_core::kir::Kernel;
    let build = |steps: &[i64]| {
        let mut g = Graph::default();
        let b = Dim::var("B");
        let seq = TensorTy::new(DType::F32, vec![b.clone(), Dim::constant(4), Dim::constant(3)]);
        let x = g.input("x", seq).unwrap();
        let w = g.input("w", TensorTy::new(DType::F32, vec![Dim::constant(3), Dim::constant(5)])).unwrap();
        for &t in steps {
            let s = g.push(Op::Slice { axis: 1, start: t, end: t + 1 }, &[x], None).unwrap();
            let row = TensorTy::new(DType::F32, vec![b.clone(), Dim::constant(3)]);
            let r = g.push(Op::Reshape, &[s], Some(row)).unwrap();
            let p = g.push(Op::MatMul, &[r, w], None).unwrap();
            let y = g.unary(UnaryOp::Tanh, p).unwrap();
            g.outputs.push((format!("y{t}"), y));
        }
        g
    };
    // (steps used, whether they become one product: at least two, at least half of the four)
    for (steps, hoisted) in
        [(&[0i64, 1, 2, 3][..], true), (&[2][..], false), (&[0, 3][..], true), (&[1, 2, 3][..], true)]
    {
        let g = build(steps);
        let kir = fluxc_core::kir::schedule(&g).unwrap();
        let text = fluxc_core::kir::print_kir(&kir);
        let gemms: Vec<String> = kir
            .kernels
            .iter()
            .filter_map(|k| match k {
                Kernel::Gemm { ty, .. } => Some(ty.to_string()),
                _ => None,
            })
            .collect();
        let want = if hoisted {
            vec!["f32[4*B, 5]".to_string()]
        } else {
            vec!["f32[B, 5]".to_string(); steps.len()]
        };
        assert_eq!(gemms, want, "{text}");
        agrees_with_the_interpreter(&g, &kir, 19);
    }
}

/// A sum of batch sums (a bias's gradient over time steps) becomes one batch sum of the
/// concatenated steps, sharing the concatenation that the weight gradient's product of
/// concatenations reads: one copy, one reduction, one product; values match the interpreter.
#[test]
fn sums_of_batch_sums_share_the_weight_gradients_concatenation() {
    use fluxc_core::dims::Dim;
    use fluxc_core::ir::{BinaryOp, DType, Op, ReduceOp, TensorTy};
    use fluxc_core::kir::Kernel;
    let mut g = Graph::default();
    let b = Dim::var("B");
    let mat = |c: i64| TensorTy::new(DType::F32, vec![b.clone(), Dim::constant(c)]);
    let gs: Vec<_> = (0..3).map(|t| g.input(&format!("g{t}"), mat(4)).unwrap()).collect();
    let hs: Vec<_> = (0..3).map(|t| g.input(&format!("h{t}"), mat(5)).unwrap()).collect();
    let (mut bias, mut weight) = (None, None);
    for (gt, ht) in gs.iter().zip(&hs) {
        let s = g.reduce(ReduceOp::Sum, *gt, vec![0]).unwrap();
        let gt_t = g.push(Op::Transpose { perm: vec![1, 0] }, &[*gt], None).unwrap();
        let p = g.push(Op::MatMul, &[gt_t, *ht], None).unwrap();
        bias = Some(match bias {
            None => s,
            Some(acc) => g.binary(BinaryOp::Add, acc, s).unwrap(),
        });
        weight = Some(match weight {
            None => p,
            Some(acc) => g.binary(BinaryOp::Add, acc, p).unwrap(),
        });
    }
    let (bias, weight) = (bias.unwrap(), weight.unwrap());
    g.outputs.push(("bias".into(), bias));
    g.outputs.push(("weight".into(), weight));
    let kir = fluxc_core::kir::schedule(&g).unwrap();
    let text = fluxc_core::kir::print_kir(&kir);
    let count = |f: &dyn Fn(&Kernel) -> bool| kir.kernels.iter().filter(|k| f(k)).count();
    assert_eq!(count(&|k| matches!(k, Kernel::Call { op: Op::Concat { .. }, .. })), 2, "{text}");
    assert_eq!(count(&|k| matches!(k, Kernel::Call { op: Op::Reduce { .. }, .. })), 1, "{text}");
    assert_eq!(count(&|k| matches!(k, Kernel::Gemm { .. })), 1, "{text}");
    agrees_with_the_interpreter(&g, &kir, 23);
}

/// A loop that ends in exp, sigmoid or tanh of what it computes (a bias and an activation)
/// stores the argument and then calls the kernels' map on its output in place: contiguous,
/// row by row with a broadcast operand, and into the rows of a concatenation; the values
/// match the interpreter at every batch (vector tails included).
#[test]
fn a_loop_ending_in_a_map_calls_it_in_place() {
    use fluxc_core::dims::Dim;
    use fluxc_core::ir::{BinaryOp, DType, Op, TensorTy, UnaryOp};
    let mut g = Graph::default();
    let ty = |c: i64| TensorTy::new(DType::F32, vec![Dim::var("B"), Dim::constant(c)]);
    let x = g.input("x", ty(5)).unwrap();
    let y = g.input("y", ty(5)).unwrap();
    let bias = g.input("bias", TensorTy::new(DType::F32, vec![Dim::constant(5)])).unwrap();
    let sum = g.binary(BinaryOp::Add, x, y).unwrap();
    let plain = g.unary(UnaryOp::Tanh, sum).unwrap();
    let wide = g.push(Op::Broadcast, &[bias], Some(ty(5))).unwrap();
    let shifted = g.binary(BinaryOp::Sub, x, wide).unwrap();
    let rows = g.unary(UnaryOp::Sigmoid, shifted).unwrap();
    let sq = g.binary(BinaryOp::Mul, y, y).unwrap();
    let part = g.unary(UnaryOp::Exp, sq).unwrap();
    let prod = g.binary(BinaryOp::Mul, x, y).unwrap();
    let other = g.unary(UnaryOp::Tanh, prod).unwrap();
    let whole = g.push(Op::Concat { axis: 1 }, &[part, other], None).unwrap();
    for (name, v) in [("plain", plain), ("rows", rows), ("whole", whole)] {
        g.outputs.push((name.into(), v));
    }
    let kir = fluxc_core::kir::schedule(&g).unwrap();
    let clif = fluxc_cpu::clif_text(&kir).unwrap();
    // Four loops, each ending with one call whose output and input are the same pointer.
    let in_place = clif
        .lines()
        .filter(|l| {
            let Some(args) = l.trim().strip_prefix("call fn").and_then(|r| r.split_once('(')) else {
                return false;
            };
            let args: Vec<&str> = args.1.trim_end_matches(')').split(", ").collect();
            args.len() == 3 && args[0] == args[1]
        })
        .count();
    assert_eq!(in_place, 4, "{}", fluxc_core::kir::print_kir(&kir));
    agrees_with_the_interpreter(&g, &kir, 17);
}
