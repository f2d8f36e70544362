//! The e-graph optimizer keeps meaning: for every model (forward in both variants) and train
//! step of the examples and the check_pass and IR fixtures, the optimized graph gives what the
//! original gives on the f64 interpreter, on fresh random inputs at batch 1 and 5; the optimizer
//! never makes a graph costlier, always stops within its limits, and is deterministic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use fluxc_core::interp::{Array, Run, eval};
use fluxc_tests::{graphs, random_input};

fn files() -> Vec<String> {
    let mut files: Vec<String> = fluxc_tests::flx_files("examples").into_iter().map(|(_, p)| p).collect();
    files.extend(fluxc_tests::fixtures("check_pass").into_iter().map(|(_, p)| p));
    files.extend(fluxc_tests::fixtures("ir").into_iter().map(|(_, p)| p));
    files
}

#[test]
fn optimized_graphs_compute_what_the_originals_compute() {
    let mut fired = 0;
    for f in files() {
        for (name, g, init) in graphs(&f) {
            let o = fluxc_core::opt::optimize(&g);
            let r = &o.report;
            assert!(
                r.stop.starts_with("saturation") || r.stop.contains("limit"),
                "{f} {name}: the optimizer stopped by {}",
                r.stop
            );
            assert!(r.after.total() <= r.before.total(), "{f} {name}: costlier");
            fired += r.fired.len();
            for (batch, seed) in [(1, 11), (5, 12)] {
                let run = Run { batch, seed: 3, step: 2 };
                let init_vals = eval(&init, &[], &[], &run).unwrap();
                let by_name: std::collections::HashMap<&str, Array> =
                    init.outputs.iter().map(|(n, v)| (n.as_str(), init_vals[v.index()].clone())).collect();
                let params: Vec<Array> = g.params.iter().map(|p| by_name[p.name.as_str()].clone()).collect();
                let inputs: Vec<Array> =
                    (0..g.inputs.len()).map(|k| random_input(&g, k, batch, seed)).collect();
                let want = eval(&g, &inputs, &params, &run).unwrap();
                let got = eval(&o.graph, &inputs, &params, &run).unwrap();
                for ((out, v), (out2, v2)) in g.outputs.iter().zip(&o.graph.outputs) {
                    assert_eq!(out, out2);
                    let (a, b) = (&want[v.index()], &got[v2.index()]);
                    assert_eq!(a.shape, b.shape, "{f} {name} {out}");
                    for (e, (x, y)) in a.data.iter().zip(&b.data).enumerate() {
                        // Reassociation (factoring, moved negations) changes rounding only.
                        let tol = 1e-9 * x.abs().max(1.0);
                        assert!(
                            (x - y).abs() <= tol || (x.is_nan() && y.is_nan()),
                            "{f} {name} batch {batch}: {out}[{e}] = {y} optimized, {x} original"
                        );
                    }
                }
            }
        }
    }
    assert!(fired > 50, "the rules fire on real graphs ({fired})");
}

#[test]
fn optimizing_is_deterministic() {
    for (_, g, _) in graphs("examples/digits/digits.flx").into_iter().chain(graphs("examples/sort/sort.flx"))
    {
        let a = fluxc_core::opt::optimize(&g);
        let b = fluxc_core::opt::optimize(&g);
        assert_eq!(fluxc_core::ir::print_graph(&a.graph), fluxc_core::ir::print_graph(&b.graph));
        assert_eq!(a.report.text(), b.report.text());
    }
}

/// An LSTM over 50 steps: the gradient of each step's four gate slices becomes one
/// concatenation at every step, the early ones too. (Summed as plain floats, the tree costs of
/// the late terms grow past 10^70, two forms of one step differ by less than a float can
/// tell, and a third of the steps kept three padded concatenations and their sum.)
#[test]
fn every_step_of_a_long_recurrence_is_simplified_alike() {
    let (step, _) = fluxc_tests::source_train_step(
        "model Seq: f32[B, 50, 32] -> f32[B, 50, 128] = LSTM(32 => 128)
         data d = npy(x = \"x.npy\", y = \"y.npy\")
         train Seq on d { loss = mse\n optimizer = Descent(lr = 0.01) }",
    );
    let g = fluxc_core::opt::optimize(&step).graph;
    let concat =
        |v: &fluxc_core::ir::ValueId| matches!(g.nodes[v.index()].op, fluxc_core::ir::Op::Concat { .. });
    let padded_sums = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, fluxc_core::ir::Op::Binary(fluxc_core::ir::BinaryOp::Add)))
        .filter(|n| n.args.iter().any(concat))
        .count();
    assert_eq!(padded_sums, 0);
    let gate_gradients = g
        .nodes
        .iter()
        .filter(|n| matches!(n.op, fluxc_core::ir::Op::Concat { .. }) && n.args.len() == 4)
        .count();
    assert_eq!(gate_gradients, 50);
}
