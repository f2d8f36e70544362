//! Every optimizer against torch.optim (Lion against its paper): ten steps of `Dense(3 => 2)`
//! under `mse` on a fixed batch, from the same start, with non-default hyperparameters; the
//! weight and bias after each step match torch's float64 sequence
//! (`tests/reference/torch_optimizers.py` writes `tests/fixtures/optim/*.json`). The gradient
//! rules (ClipNorm, ClipValue, WeightDecay, OptimiserChain) and the schedules (§12.7) likewise,
//! against torch's clip_grad_norm_/clip_grad_value_, SGD's weight_decay and LambdaLR
//! (`tests/fixtures/optim_rules/*.json`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use std::collections::HashMap;

use fluxc_core::interp::{Array, Run, eval};

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// The train step of `Dense(3 => 2)` under `mse` with the train-block `lines` (optimizer, clip,
/// schedule).
fn train_step(lines: &str) -> fluxc_core::ir::Graph {
    let src = format!(
        "model Lin: f32[B, 3] -> f32[B, 2] = Dense(3 => 2)\n\
         data d = npy(x = \"x.npy\", y = \"y.npy\")\n\
         train Lin on d {{\n    loss = mse\n    {lines}\n}}\n"
    );
    fluxc_tests::source_train_step(&src).0
}

fn cases(folder: &str) -> Vec<serde_json::Value> {
    let dir = fluxc_tests::repo_dir().join(folder);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files.iter().map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()).collect()
}

/// Ten steps of the case's train block from its start, each compared with torch's weights.
fn follow(case: &serde_json::Value, lines: &str) {
    let g = train_step(lines);
    let mut params: HashMap<String, Array> = HashMap::from([
        ("weight".to_owned(), Array::new(vec![2, 3], floats(&case["weight0"]))),
        ("bias".to_owned(), Array::new(vec![2], floats(&case["bias0"]))),
    ]);
    let epochs = case.get("epochs").map(floats);
    let mut state: HashMap<String, Array> = HashMap::new();
    for (k, want) in case["steps"].as_array().unwrap().iter().enumerate() {
        let t = (k + 1) as f64;
        let epoch = epochs.as_ref().map_or(1.0, |e| e[k]);
        let inputs: Vec<Array> = g
            .inputs
            .iter()
            .map(|s| match s.name.as_str() {
                "x" => Array::new(vec![4, 3], floats(&case["x"])),
                "target" => Array::new(vec![4, 2], floats(&case["target"])),
                "step" => Array::scalar(t),
                "epoch" => Array::scalar(epoch),
                other => {
                    let key = other.trim_start_matches("opt.");
                    let shape = fluxc_core::interp::concrete(&s.ty.shape, 4).unwrap();
                    state.get(key).cloned().unwrap_or_else(|| Array::zeros(shape))
                }
            })
            .collect();
        let ps: Vec<Array> = g.params.iter().map(|p| params[&p.name].clone()).collect();
        let run = Run { batch: 4, seed: 0, step: k as u64 + 1 };
        let vals = eval(&g, &inputs, &ps, &run).unwrap();
        for (name, v) in &g.outputs {
            let value = vals[v.index()].clone();
            if let Some(p) = name.strip_prefix("param:") {
                params.insert(p.to_owned(), value);
            } else if let Some(s) = name.strip_prefix("opt:") {
                state.insert(s.to_owned(), value);
            }
        }
        for (p, key) in [("weight", "weight"), ("bias", "bias")] {
            let got = &params[p].data;
            let exp = floats(&want[key]);
            for (i, (a, b)) in got.iter().zip(&exp).enumerate() {
                // Hyperparameters are f32 literals in fluxc (0.05f32 is not 0.05).
                assert!(
                    (a - b).abs() <= 2e-6 * b.abs().max(1.0),
                    "{lines} step {}: {p}[{i}] = {a}, torch {b}",
                    k + 1
                );
            }
        }
    }
}

#[test]
fn optimizers_follow_torch_optim_step_by_step() {
    let all = cases("tests/fixtures/optim");
    assert_eq!(all.len(), 13, "one fixture per optimizer");
    for case in &all {
        follow(case, &format!("optimizer = {}", case["optimizer"].as_str().unwrap()));
    }
}

#[test]
fn gradient_rules_and_schedules_follow_torch_step_by_step() {
    let all = cases("tests/fixtures/optim_rules");
    assert_eq!(all.len(), 9, "the rule and schedule fixtures");
    for case in &all {
        follow(case, case["train"].as_str().unwrap());
    }
}
