//! The 14 activations of std::act against PyTorch float64 (values and derivatives, both sides
//! of every kink and in the tails): `tests/reference/torch_activations.py` writes
//! `tests/fixtures/act/activations.json`. Each runs as a model `Chain(act)` on the interpreter,
//! and its derivative comes from fluxc's autodiff.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use fluxc_core::interp::{Array, Run, eval};
use fluxc_core::ir::{Op, ReduceOp};

#[test]
fn activations_match_pytorch_with_their_derivatives() {
    let path = fluxc_tests::repo_dir().join("tests/fixtures/act/activations.json");
    let all: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let all = all.as_object().unwrap();
    assert_eq!(all.len(), 14, "every activation of §7");
    for (name, case) in all {
        let xs: Vec<f64> = case["x"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let n = xs.len();
        let src = format!("model M: f32[B, {n}] -> f32[B, {n}] = Chain({name})\n");
        let mut g = fluxc_tests::source_model(&src, false);
        let x = g
            .nodes
            .iter()
            .position(|nd| nd.op == Op::Input(0))
            .map(|i| fluxc_core::ir::ValueId(i as u32))
            .unwrap();
        let y = g.outputs[0].1;
        let total = g.reduce(ReduceOp::Sum, y, vec![0, 1]).unwrap();
        let dx = fluxc_core::autodiff::backward(&mut g, total, &[x]).unwrap()[0].unwrap_or(x);
        let vals = eval(&g, &[Array::new(vec![1, n], xs.clone())], &[], &Run { batch: 1, seed: 0, step: 0 })
            .unwrap();
        for (key, v) in [("y", y), ("dy", dx)] {
            let want: Vec<f64> = case[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            for (i, (a, b)) in vals[v.index()].data.iter().zip(&want).enumerate() {
                // The constants of std::act are f32 literals.
                assert!((a - b).abs() <= 1e-6 * b.abs() + 1e-9, "{name} {key}({}) = {a}, PyTorch {b}", xs[i]);
            }
        }
    }
}
