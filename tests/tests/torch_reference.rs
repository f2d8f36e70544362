//! Gradients and losses against PyTorch float64 references: each `tests/fixtures/torch/*.json`
//! (written by `tests/reference/torch_fixtures.py`) gives a model, a loss, inputs, parameters,
//! the loss value and the gradient of every trainable parameter. fluxc's train step with
//! `Descent(lr = 1.0)` on the same values must give the same loss and move each parameter by
//! minus the same gradient.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use fluxc_core::interp::{Array, Run, eval};
use fluxc_core::ir::Graph;
use serde_json::Value;

fn train_step(model: &str, loss: &str) -> Graph {
    let text = format!(
        "{model}\ndata d = npy(x = \"x.npy\", y = \"y.npy\")\ntrain M on d {{\n    loss = {loss}\n    optimizer = Descent(lr = 1.0)\n}}\n"
    );
    fluxc_tests::source_train_step(&text).0
}

fn array(v: &Value) -> Array {
    let shape = v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
    let data = v["data"].as_array().unwrap().iter().map(|d| d.as_f64().unwrap()).collect();
    Array::new(shape, data)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn train_steps_match_pytorch() {
    let dir = fluxc_tests::repo_dir().join("tests/fixtures/torch");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 33, "expected the PyTorch fixtures in {}", dir.display());
    for path in files {
        let case: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = case["case"].as_str().unwrap();
        let g = train_step(case["model"].as_str().unwrap(), case["loss"].as_str().unwrap());
        let x = array(&case["x"]);
        let target = array(&case["target"]);
        let batch = x.shape[0] as i64;
        let params: Vec<Array> = g
            .params
            .iter()
            .map(|slot| match case["params"].get(&slot.name) {
                Some(v) => array(v),
                // States (BatchNorm's running statistics) do not enter a training-mode loss.
                None => {
                    assert!(!slot.trainable, "{name}: no value for parameter {}", slot.name);
                    let shape: Vec<usize> =
                        slot.ty.shape.iter().map(|d| d.as_constant().unwrap() as usize).collect();
                    Array::zeros(shape)
                }
            })
            .collect();
        let inputs = vec![x, target, Array::scalar(1.0), Array::scalar(1.0)];
        assert_eq!(inputs.len(), g.inputs.len(), "{name}: Descent has no optimizer state");
        let vals = eval(&g, &inputs, &params, &Run { batch, seed: 0, step: 0 }).unwrap();
        let out = |n: &str| {
            vals[g
                .outputs
                .iter()
                .find(|(o, _)| o == n)
                .unwrap_or_else(|| panic!("{name}: no output {n}"))
                .1
                .index()]
            .clone()
        };
        let loss = out("loss").data[0];
        let want = case["loss_value"].as_f64().unwrap();
        assert!(close(loss, want), "{name}: loss {loss}, PyTorch {want}");
        let grads = case["grads"].as_object().unwrap();
        for (k, slot) in g.params.iter().enumerate().filter(|(_, s)| s.trainable) {
            let want = array(
                grads
                    .get(&slot.name)
                    .unwrap_or_else(|| panic!("{name}: PyTorch has no gradient for {}", slot.name)),
            );
            let new = out(&format!("param:{}", slot.name));
            for e in 0..want.data.len() {
                let applied = params[k].data[e] - new.data[e];
                assert!(
                    close(applied, want.data[e]),
                    "{name}: d/d{}[{e}]: {applied}, PyTorch {}",
                    slot.name,
                    want.data[e]
                );
            }
        }
    }
}
