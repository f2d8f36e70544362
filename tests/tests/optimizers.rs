//! Every optimizer against torch.optim (Lion against its paper): ten steps of `Dense(3 => 2)`
//! under `mse` on a fixed batch, from the same start, with non-default hyperparameters; the
//! weight and bias after each step match torch's float64 sequence
//! (`tests/reference/torch_optimizers.py` writes `tests/fixtures/optim/*.json`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use std::collections::HashMap;

use fluxc_core::interp::{Array, Run, eval};
use fluxc_core::pipeline::{Outcome, after_check};
use fluxc_syntax::SourceMap;

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn train_step(optimizer: &str) -> fluxc_core::ir::Graph {
    let src = format!(
        "model Lin: f32[B, 3] -> f32[B, 2] = Dense(3 => 2)\n\
         data d = npy(x = \"x.npy\", y = \"y.npy\")\n\
         train Lin on d {{\n    loss = mse\n    optimizer = {optimizer}\n}}\n"
    );
    let mut sources = SourceMap::new();
    let id = sources.add("optim.flx", &src);
    let out = after_check(&mut sources, id, &mut fluxc_core::NoFiles, move |idx, _| {
        let k = (0..idx.items.len())
            .find(|&i| {
                matches!(idx.items[i].item, fluxc_syntax::ast::Item::Train(_)) && idx.items[i].file == id
            })
            .unwrap();
        fluxc_core::lower::train_step(idx, k)
    });
    match out {
        Outcome::Done(g) => g,
        Outcome::Rejected(d) => {
            panic!("{optimizer}: {:?}", d.iter().map(|d| d.message.clone()).collect::<Vec<_>>())
        }
        Outcome::Failed(e) => panic!("{optimizer}: {}", e.message),
    }
}

#[test]
fn optimizers_follow_torch_optim_step_by_step() {
    let dir = fluxc_tests::repo_dir().join("tests/fixtures/optim");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 13, "one fixture per optimizer");
    for path in files {
        let case: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let opt = case["optimizer"].as_str().unwrap();
        let g = train_step(opt);
        let mut params: HashMap<String, Array> = HashMap::from([
            ("weight".to_owned(), Array::new(vec![2, 3], floats(&case["weight0"]))),
            ("bias".to_owned(), Array::new(vec![2], floats(&case["bias0"]))),
        ]);
        let mut state: HashMap<String, Array> = HashMap::new();
        for (k, want) in case["steps"].as_array().unwrap().iter().enumerate() {
            let t = (k + 1) as f64;
            let inputs: Vec<Array> = g
                .inputs
                .iter()
                .map(|s| match s.name.as_str() {
                    "x" => Array::new(vec![4, 3], floats(&case["x"])),
                    "target" => Array::new(vec![4, 2], floats(&case["target"])),
                    "step" => Array::scalar(t),
                    "epoch" => Array::scalar(1.0),
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
                        "{opt} step {}: {p}[{i}] = {a}, torch {b}",
                        k + 1
                    );
                }
            }
        }
    }
}
