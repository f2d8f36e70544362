//! Every name LANGUAGE.md §7 lists exists in its std module: `use std::MODULE::{…}` of the whole
//! list checks clean, and each name is usable without a `use` (the prelude).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use fluxc_core::{NoFiles, render_text};
use fluxc_syntax::SourceMap;

const SECTION_7: [(&str, &[&str]); 5] = [
    (
        "act",
        &[
            "identity",
            "relu",
            "leakyrelu",
            "elu",
            "gelu",
            "swish",
            "sigmoid",
            "tanh",
            "softplus",
            "softsign",
            "hardtanh",
            "relu6",
            "celu",
            "selu",
        ],
    ),
    (
        "init",
        &[
            "zeros",
            "ones",
            "glorot_uniform",
            "glorot_normal",
            "kaiming_uniform",
            "kaiming_normal",
            "orthogonal",
            "truncated_normal",
        ],
    ),
    (
        "layers",
        &[
            "Dense",
            "Bilinear",
            "Chain",
            "Parallel",
            "SkipConnection",
            "Conv1d",
            "Conv2d",
            "ConvTranspose2d",
            "DepthwiseConv2d",
            "MaxPool2d",
            "MeanPool2d",
            "GlobalMeanPool",
            "GlobalMaxPool",
            "Flatten",
            "Embedding",
            "BatchNorm",
            "LayerNorm",
            "GroupNorm",
            "Dropout",
            "RNNCell",
            "LSTMCell",
            "GRUCell",
            "Recur",
            "RNN",
            "LSTM",
            "GRU",
            "MultiHeadAttention",
        ],
    ),
    (
        "losses",
        &[
            "mse",
            "mae",
            "msle",
            "huber_loss",
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
        ],
    ),
    (
        "optim",
        &[
            "Descent",
            "Momentum",
            "Nesterov",
            "RMSProp",
            "Adam",
            "AdamW",
            "RAdam",
            "AdaMax",
            "AdaGrad",
            "AdaDelta",
            "AMSGrad",
            "NAdam",
            "Lion",
            "ClipValue",
            "ClipNorm",
            "WeightDecay",
            "OptimiserChain",
        ],
    ),
];

fn diagnostics(text: &str) -> String {
    let mut sources = SourceMap::new();
    let id = sources.add("t.flx", text);
    let checked = fluxc_core::check(&mut sources, id, &mut NoFiles);
    render_text(&checked.diagnostics, &sources, fluxc_core::TextStyle { color: false })
}

#[test]
fn every_section_7_name_can_be_imported_from_its_module() {
    for (module, names) in SECTION_7 {
        let text = format!("use std::{module}::{{{}}}\n", names.join(", "));
        assert_eq!(diagnostics(&text), "", "std::{module}");
        for name in names {
            assert_eq!(diagnostics(&format!("use std::{module}::{name}\n")), "", "std::{module}::{name}");
        }
    }
}

#[test]
fn names_are_not_exported_by_the_wrong_module() {
    let d = diagnostics("use std::act::Dense\n");
    assert!(d.contains("E0201") && d.contains("`Dense` is not in `std::act`"), "{d}");
}

#[test]
fn every_section_7_name_is_in_the_prelude() {
    for (_, names) in SECTION_7 {
        for name in names {
            // Referring to the name as a value must not be an unknown-name error.
            let d = diagnostics(&format!("fn probe() {{ let f = {name} }}\n"));
            assert!(!d.contains("E0201"), "{name}: {d}");
        }
    }
}
