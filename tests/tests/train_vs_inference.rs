//! Dropout and BatchNorm behave as PyTorch's do in training and in inference: inverted dropout
//! (zeros with probability p, survivors scaled by 1/(1 − p)) in training and the identity in
//! inference; BatchNorm normalising by the batch's statistics in training and by the running
//! statistics in inference.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::needless_range_loop)] // tests may panic

use fluxc_core::interp::{Array, Run, eval};
use fluxc_core::ir::Graph;

fn model(src: &str, training: bool) -> Graph {
    fluxc_tests::source_model(src, training)
}

#[test]
fn dropout_is_inverted_in_training_and_the_identity_in_inference() {
    let src = "model M: f32[B, 4000] -> f32[B, 4000] = Chain(Dropout(0.3))\n";
    let x = Array::new(vec![2, 4000], (0..8000).map(|i| 1.0 + (i % 5) as f64).collect());
    let run = Run { batch: 2, seed: 9, step: 1 };
    let g = model(src, true);
    let y = &eval(&g, std::slice::from_ref(&x), &[], &run).unwrap()[g.outputs[0].1.index()];
    let mut zeros = 0usize;
    for (a, b) in y.data.iter().zip(&x.data) {
        if *a == 0.0 {
            zeros += 1;
        } else {
            assert!((a - b / 0.7).abs() < 1e-5 * b, "a survivor is scaled by 1/(1 - p): {a} from {b}");
        }
    }
    // 8000 draws of p = 0.3: mean 2400, sd ≈ 41.
    assert!((2200..2600).contains(&zeros), "{zeros} zeros of 8000 at p = 0.3");
    let again = &eval(&g, std::slice::from_ref(&x), &[], &run).unwrap()[g.outputs[0].1.index()];
    assert_eq!(y.data, again.data, "the same seed and step give the same mask");
    let next =
        &eval(&g, std::slice::from_ref(&x), &[], &Run { step: 2, ..run }).unwrap()[g.outputs[0].1.index()];
    assert_ne!(y.data, next.data, "another step draws another mask");
    let g = model(src, false);
    let y = &eval(&g, std::slice::from_ref(&x), &[], &run).unwrap()[g.outputs[0].1.index()];
    assert_eq!(y.data, x.data, "inference: the identity");
}

#[test]
fn batchnorm_uses_batch_statistics_in_training_and_running_ones_in_inference() {
    let src = "model M: f32[B, 2] -> f32[B, 2] = BatchNorm(2)\n";
    let x = Array::new(vec![4, 2], vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 6.0, 60.0]);
    let params = |g: &Graph| -> Vec<Array> {
        g.params
            .iter()
            .map(|p| match p.name.as_str() {
                "weight" => Array::new(vec![2], vec![2.0, 0.5]),
                "bias" => Array::new(vec![2], vec![1.0, -1.0]),
                "running_mean" => Array::new(vec![2], vec![1.0, 5.0]),
                "running_var" => Array::new(vec![2], vec![4.0, 25.0]),
                other => panic!("unexpected parameter {other}"),
            })
            .collect()
    };
    let run = Run { batch: 4, seed: 0, step: 0 };
    // Training: (x − batch mean) / sqrt(biased batch variance + eps) · weight + bias.
    let g = model(src, true);
    let y = &eval(&g, std::slice::from_ref(&x), &params(&g), &run).unwrap()[g.outputs[0].1.index()];
    for c in 0..2 {
        let col: Vec<f64> = (0..4).map(|r| x.data[r * 2 + c]).collect();
        let mean = col.iter().sum::<f64>() / 4.0;
        let var = col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / 4.0;
        let (w, b) = ([2.0, 0.5][c], [1.0, -1.0][c]);
        for r in 0..4 {
            let want = (col[r] - mean) / (var + 1e-5).sqrt() * w + b;
            assert!(
                (y.data[r * 2 + c] - want).abs() < 1e-5,
                "training [{r}, {c}]: {} vs {want}",
                y.data[r * 2 + c]
            );
        }
    }
    // Inference: the running statistics.
    let g = model(src, false);
    let y = &eval(&g, std::slice::from_ref(&x), &params(&g), &run).unwrap()[g.outputs[0].1.index()];
    for r in 0..4 {
        for c in 0..2 {
            let (m, v, w, b) = ([1.0, 5.0][c], [4.0, 25.0][c], [2.0, 0.5][c], [1.0, -1.0][c]);
            let want = (x.data[r * 2 + c] - m) / (v + 1e-5f64).sqrt() * w + b;
            assert!(
                (y.data[r * 2 + c] - want).abs() < 1e-5,
                "inference [{r}, {c}]: {} vs {want}",
                y.data[r * 2 + c]
            );
        }
    }
}
