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

/// Schedules, callbacks and the metric of train blocks (§7).
const TRAIN_BUILTINS: [&str; 9] = [
    "constant",
    "step_decay",
    "cosine",
    "warmup",
    "log",
    "checkpoint",
    "early_stop",
    "nan_guard",
    "accuracy",
];

#[test]
fn every_section_7_name_has_a_documented_reference_entry() {
    let entries = fluxc_core::reference::entries();
    for (module, names) in SECTION_7 {
        for name in names.iter() {
            let e = entries
                .iter()
                .find(|e| e.name == *name && e.module == module)
                .unwrap_or_else(|| panic!("std::{module}::{name} has no reference entry"));
            assert!(e.doc.len() >= 20, "std::{module}::{name} needs a doc comment, has {:?}", e.doc);
            assert!(!e.signature.is_empty(), "{name}");
        }
    }
    for name in TRAIN_BUILTINS {
        let e = entries.iter().find(|e| e.name == name && e.module == "train").unwrap();
        assert!(e.doc.len() >= 20, "{name}");
    }
    // And nothing public of std goes undocumented, §7 or not.
    for e in &entries {
        assert!(!e.doc.is_empty(), "std::{}::{} has no doc comment", e.module, e.name);
    }
}

/// The words of the texts that reference tests compare against PyTorch, torch.optim, Flux's
/// definitions or hand computations: the fixtures' model/loss/optimizer/train lines and the
/// test files that name what they check.
fn reference_corpus() -> std::collections::HashSet<String> {
    let root = fluxc_tests::repo_dir();
    let mut text = String::new();
    for folder in ["tests/fixtures/torch", "tests/fixtures/optim", "tests/fixtures/optim_rules"] {
        for entry in std::fs::read_dir(root.join(folder)).unwrap() {
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(entry.unwrap().path()).unwrap()).unwrap();
            for key in ["model", "loss", "optimizer", "train"] {
                if let Some(s) = v.get(key).and_then(|s| s.as_str()) {
                    text.push_str(s);
                    text.push('\n');
                }
            }
        }
    }
    let acts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/act/activations.json")).unwrap(),
    )
    .unwrap();
    for name in acts.as_object().unwrap().keys() {
        text.push_str(name);
        text.push('\n');
    }
    // Tests whose cases are written in the test itself.
    for file in [
        "tests/tests/initialisers.rs",
        "tests/tests/train_vs_inference.rs",
        "compiler/fluxc-cli/tests/train.rs",
    ] {
        text.push_str(&std::fs::read_to_string(root.join(file)).unwrap());
    }
    text.split(|c: char| !(c.is_alphanumeric() || c == '_')).map(str::to_owned).collect()
}

#[test]
fn every_section_7_name_has_a_reference_test() {
    let words = reference_corpus();
    let mut missing = Vec::new();
    for (module, names) in SECTION_7 {
        for name in names.iter() {
            if !words.contains(*name) {
                missing.push(format!("std::{module}::{name}"));
            }
        }
    }
    for name in TRAIN_BUILTINS {
        // `log`, `checkpoint`, `early_stop` and `nan_guard` are the CLI tests' (train.rs).
        if !words.contains(name) {
            missing.push(name.to_owned());
        }
    }
    assert!(missing.is_empty(), "no reference test names {missing:?}");
}

#[test]
fn the_reference_page_is_current() {
    let path = fluxc_tests::repo_dir().join("docs/REFERENCE.md");
    let page = fluxc_core::reference::page();
    if std::env::var_os("FLUXC_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &page).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == page,
        "docs/REFERENCE.md is out of date: run `FLUXC_BLESS=1 cargo test --release -p fluxc-tests --test std_names`"
    );
}
