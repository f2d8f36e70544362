//! The whole path from source to a train step, on the reference interpreter: the gradient the
//! train-step graph applies matches central finite differences of its own loss, and training a
//! small network lowers its loss.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use fluxc_core::interp::{Array, Run, eval};
use fluxc_core::ir::Graph;
use fluxc_core::rng::Stream;

fn random(shape: &[usize], seed: u64) -> Array {
    let s = Stream::new(seed, 3, 0);
    let n: usize = shape.iter().product();
    Array::new(shape.to_vec(), (0..n as u64).map(|e| f64::from(s.normal(e))).collect())
}

fn output(g: &Graph, vals: &[Array], name: &str) -> Array {
    let (_, v) = g.outputs.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no output {name}"));
    vals[v.index()].clone()
}

const NET: &str = "
model Net: f32[B, 4] -> f32[B, 3] = Chain(Dense(4 => 5, tanh), Dense(5 => 3))
data d = npy(x = \"x.npy\", y = \"y.npy\")
";

/// Inputs of a train-step graph: x, target, step, epoch, then optimizer states (zeros).
fn inputs(g: &Graph, x: &Array, y: &Array, step: f64, states: &[Array]) -> Vec<Array> {
    let mut v = vec![x.clone(), y.clone(), Array::scalar(step), Array::scalar(1.0)];
    v.extend(states.iter().cloned());
    assert_eq!(v.len(), g.inputs.len());
    v
}

/// With `Descent(lr = 1.0)` a train step moves each parameter by minus its gradient: compare
/// that with central differences of the step's own loss, element by element.
fn check_gradients(model: &str, loss: &str, x_shape: &[usize], y_shape: &[usize], positive_target: bool) {
    let text = format!(
        "{model}\ndata d = npy(x = \"x.npy\", y = \"y.npy\")\ntrain M on d {{\n    loss = {loss}\n    optimizer = Descent(lr = 1.0)\n}}\n"
    );
    let (step, init) = fluxc_tests::source_train_step(&text);
    let run = Run { batch: x_shape[0] as i64, seed: 0, step: 0 };
    let init_vals = eval(&init, &[], &[], &run).unwrap();
    let params: Vec<Array> = init.outputs.iter().map(|(_, v)| init_vals[v.index()].clone()).collect();
    let x = random(x_shape, 1);
    let mut y = random(y_shape, 2);
    if positive_target {
        // Probabilities per row of the last axis (for cross-entropy-like losses).
        let c = *y_shape.last().unwrap();
        for row in y.data.chunks_mut(c) {
            let s: f64 = row.iter().map(|v| v.exp()).sum();
            for v in row.iter_mut() {
                *v = v.exp() / s;
            }
        }
    }
    let ins = inputs(&step, &x, &y, 1.0, &[]);
    let vals = eval(&step, &ins, &params, &run).unwrap();
    let loss_of = |ps: &[Array]| output(&step, &eval(&step, &ins, ps, &run).unwrap(), "loss").data[0];
    for (k, slot) in step.params.iter().enumerate().filter(|(_, s)| s.trainable) {
        let new = output(&step, &vals, &format!("param:{}", slot.name));
        for e in 0..params[k].len() {
            let applied = params[k].data[e] - new.data[e]; // lr 1: p - new = gradient
            let h = 1e-6 * params[k].data[e].abs().max(1.0);
            let mut plus = params.clone();
            plus[k].data[e] += h;
            let mut minus = params.clone();
            minus[k].data[e] -= h;
            let numeric = (loss_of(&plus) - loss_of(&minus)) / (2.0 * h);
            let tol = 1e-6 * numeric.abs().max(applied.abs()).max(1.0);
            assert!(
                (applied - numeric).abs() < tol,
                "{model} / {loss}: {}[{e}]: {applied} vs {numeric}",
                slot.name
            );
        }
    }
}

#[test]
fn dense_gradients_match_finite_differences() {
    let model = "model M: f32[B, 4] -> f32[B, 3] = Chain(Dense(4 => 5, tanh), Dense(5 => 3))";
    check_gradients(model, "mse", &[6, 4], &[6, 3], false);
}

#[test]
fn conv_pool_gradients_match_finite_differences() {
    check_gradients(
        "model M: f32[B, 2, 6, 6] -> f32[B, 3] = Chain(Conv2d((3, 3), 2 => 3, relu, Pad = 1, Stride = 2), MaxPool2d((2, 2)), Flatten, Dense(3 => 3))",
        "logitcrossentropy",
        &[2, 2, 6, 6],
        &[2, 3],
        true,
    );
}

#[test]
fn lstm_and_gru_gradients_match_finite_differences() {
    check_gradients(
        "model M: f32[B, 4, 3] -> f32[B, 4, 2] = LSTM(3 => 2)",
        "mse",
        &[2, 4, 3],
        &[2, 4, 2],
        false,
    );
    check_gradients(
        "model M: f32[B, 3, 2] -> f32[B, 3, 3] = GRU(2 => 3)",
        "mae",
        &[2, 3, 2],
        &[2, 3, 3],
        false,
    );
}

#[test]
fn normalisation_gradients_match_finite_differences() {
    check_gradients(
        "model M: f32[B, 3, 2, 2] -> f32[B, 3, 2, 2] = BatchNorm(3)",
        "mse",
        &[4, 3, 2, 2],
        &[4, 3, 2, 2],
        false,
    );
    check_gradients(
        "model M: f32[B, 5] -> f32[B, 5] = Chain(Dense(5 => 5), LayerNorm(5))",
        "mse",
        &[3, 5],
        &[3, 5],
        false,
    );
    check_gradients(
        "model M: f32[B, 4, 2, 2] -> f32[B, 4, 2, 2] = GroupNorm(2, 4)",
        "mse",
        &[2, 4, 2, 2],
        &[2, 4, 2, 2],
        false,
    );
}

#[test]
fn slicing_with_negative_bounds_concat_and_indexing_have_finite_difference_gradients() {
    let model = "layer Pick[N] {
    param w: f32[N, N] = glorot_uniform()
    forward[B](x: f32[B, N]) -> f32[B, 3] {
        let h = x @ w.T
        let tail = h[:, -2 ..]
        let head = h[:, new, 0][:, 0]
        concat((tail, head[:, new] * h[:, -1][:, new]), axis = 1)
    }
}
model M: f32[B, 4] -> f32[B, 3] = Pick(4)";
    check_gradients(model, "mse", &[3, 4], &[3, 3], false);
}

#[test]
fn attention_gradients_match_finite_differences() {
    let model = "model M: f32[B, 3, 4] -> f32[B, 3, 4] = MultiHeadAttention(4, 2, causal = true)";
    check_gradients(model, "mse", &[2, 3, 4], &[2, 3, 4], false);
}

#[test]
fn every_std_loss_has_finite_difference_gradients() {
    let model = "model M: f32[B, 4] -> f32[B, 3] = Chain(Dense(4 => 3), softmax)";
    for loss in [
        "mse",
        "mae",
        "msle",
        "huber_loss(delta = 0.5)",
        "crossentropy",
        "logitcrossentropy",
        "binarycrossentropy",
        "logitbinarycrossentropy",
        "kldivergence",
        "poisson_loss",
        "hinge_loss",
        "squared_hinge_loss",
        "focal_loss",
        "dice_coeff_loss",
        "tversky_loss",
    ] {
        check_gradients(model, loss, &[5, 4], &[5, 3], true);
    }
}

#[test]
fn adam_with_clipping_and_a_schedule_lowers_the_loss() {
    let text = format!(
        "{NET}train Net on d {{\n    loss = mse\n    optimizer = Adam(lr = 0.05)\n    clip = ClipNorm(5.0)\n    schedule = warmup(5, cosine(200))\n}}\n"
    );
    let (step, init) = fluxc_tests::source_train_step(&text);
    let run = Run { batch: 8, seed: 0, step: 0 };
    let init_vals = eval(&init, &[], &[], &run).unwrap();
    let mut params: Vec<Array> = init.outputs.iter().map(|(_, v)| init_vals[v.index()].clone()).collect();
    let (x, y) = (random(&[8, 4], 5), random(&[8, 3], 6));
    let mut states: Vec<Array> = step
        .inputs
        .iter()
        .skip(4)
        .map(|s| Array::zeros(s.ty.shape.iter().map(|d| d.as_constant().unwrap() as usize).collect()))
        .collect();
    let mut first = None;
    let mut last = 0.0;
    for t in 1..=100 {
        let vals = eval(&step, &inputs(&step, &x, &y, f64::from(t), &states), &params, &run).unwrap();
        last = output(&step, &vals, "loss").data[0];
        first.get_or_insert(last);
        for (k, slot) in step.params.iter().enumerate() {
            params[k] = output(&step, &vals, &format!("param:{}", slot.name));
        }
        for (k, s) in step.inputs.iter().skip(4).enumerate() {
            let name = s.name.replacen("opt.", "opt:", 1);
            states[k] = output(&step, &vals, &name);
        }
    }
    let first = first.unwrap();
    assert!(last < 0.5 * first, "loss went from {first} to {last}");
}
