//! The `fluxc` command as a user runs it: exit codes, streams, and one clear line per error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use std::path::PathBuf;
use std::process::{Command, Output};

fn fluxc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fluxc"))
        .args(args)
        .env_remove("FLUXC_TEST_INTERNAL_ERROR")
        .output()
        .unwrap_or_else(|e| panic!("cannot run fluxc: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn scratch(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fluxc-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn repo(relative: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative).display().to_string()
}

#[test]
fn check_accepts_the_examples() {
    for example in ["examples/mlp.flx", "examples/resnet.flx"] {
        let out = fluxc(&["check", &repo(example)]);
        assert!(out.status.success(), "{example}: {}", text(&out.stderr));
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn check_reports_a_syntax_error_in_text_and_json() {
    let path = scratch("bad.flx", b"let x = (1 +\n");
    let out = fluxc(&["check", path.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("[E0101]") && err.contains("found end of file"), "{err}");
    assert!(err.contains("unclosed `(`"), "{err}");

    let out = fluxc(&["check", "--format", "json", path.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap_or_default();
    assert_eq!(v["code"], "E0101");
    assert_eq!((v["line"].as_u64(), v["column"].as_u64()), (Some(2), Some(1)));
    assert!(out.stderr.is_empty(), "json mode keeps stderr clean: {}", text(&out.stderr));
}

#[test]
fn unreadable_inputs_get_one_clear_line() {
    let missing = fluxc(&["check", "no/such/file.flx"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(text(&missing.stderr), "error: cannot read no/such/file.flx: no such file\n");

    let latin1 = scratch("latin1.flx", b"let x = 1 // caf\xe9\n");
    let out = fluxc(&["check", latin1.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("error: cannot read") && err.contains("not valid UTF-8 (bad byte at offset 16)"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);

    let dir = std::env::temp_dir();
    let out = fluxc(&["check", dir.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("is a directory"));
}

#[test]
fn a_file_over_4_mib_is_e0102() {
    let big = scratch("big.flx", &vec![b' '; 4 * 1024 * 1024 + 10]);
    let out = fluxc(&["check", "--format", "json", big.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap_or_default();
    assert_eq!(v["code"], "E0102");
}

#[test]
fn usage_errors_exit_1_and_help_and_version_exit_0() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["check"],
        &["check", "x.flx", "--bogus"],
        &["check", "x.flx", "--format", "xml"],
    ] {
        let out = fluxc(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains("fluxc --help"), "{err}");
    }
    let out = fluxc(&["--version"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), format!("fluxc {}\n", env!("CARGO_PKG_VERSION")));
    assert!(fluxc(&["--help"]).status.success());
}

#[test]
fn explain_covers_every_code() {
    for code in fluxc_syntax::Code::ALL {
        let out = fluxc(&["explain", code.as_str()]);
        assert!(out.status.success(), "{code}");
        let body = text(&out.stdout);
        assert!(body.starts_with(code.as_str()) && body.contains("Erroneous example"), "{code}");
    }
    let out = fluxc(&["explain", "E9999"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("unknown diagnostic code `E9999`"));
}

#[test]
fn build_emit_ast_prints_the_tree() {
    let out = fluxc(&["build", &repo("examples/mlp.flx"), "--emit", "ast"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ast = text(&out.stdout);
    assert!(ast.starts_with("file  @1:1"), "{ast}");
    assert!(ast.contains("model Mlp: f32[B, 64] -> f32[B, 10]"), "{ast}");
}

#[test]
fn build_emit_clif_prints_the_loops_deterministically() {
    let run = || fluxc(&["build", &repo("examples/mlp.flx"), "--emit", "clif"]);
    let (a, b) = (run(), run());
    assert!(a.status.success(), "{}", text(&a.stderr));
    let clif = text(&a.stdout);
    assert!(clif.starts_with("# model Mlp: forward (inference)"), "{clif}");
    assert!(
        clif.contains("function u0:") && clif.contains("block0(v0: i64, v1: i64, v2: i64, v3: i64):"),
        "{clif}"
    );
    assert_eq!(a.stdout, b.stdout, "the same text on every run");
}

#[test]
fn build_emit_opt_ir_prints_the_report_and_the_optimized_graphs() {
    let run = || fluxc(&["build", &repo("examples/digits/digits.flx"), "--emit", "opt-ir"]);
    let (a, b) = (run(), run());
    assert!(a.status.success(), "{}", text(&a.stderr));
    let out = text(&a.stdout);
    assert!(out.starts_with("# model Digits: forward (inference)\n# optimizer: stopped by "), "{out}");
    assert!(out.contains("# train Digits on digits: train step"), "{out}");
    assert!(out.contains("# rules fired: ") && out.contains("mul-one"), "{out}");
    assert!(out.contains("output loss = %"), "{out}");
    assert_eq!(a.stdout, b.stdout, "the same text on every run");
    let o = fluxc(&["build", &repo("examples/digits/digits.flx"), "--emit", "opt-ir", "--model", "Nope"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("digits.flx: there is no model `Nope` in this file"), "{err}");
}

#[test]
fn build_writes_the_library_header_and_manifest() {
    let dir = std::env::temp_dir().join(format!("fluxc-cli-build-{}", std::process::id()));
    let out = fluxc(&["build", &repo("examples/mlp.flx"), "--out", &dir.to_string_lossy()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("model Mlp: 3,466 parameters (13,864 bytes)"), "{said}");
    assert!(said.contains("*B bytes"), "{said}");
    for f in ["libMlp.so", "Mlp.h", "Mlp.json"] {
        assert!(dir.join(f).is_file(), "{f} missing after: {said}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("Mlp.json")).unwrap()).unwrap();
    assert_eq!(manifest["format"], 1);
    assert_eq!(manifest["input"]["shape"], serde_json::json!(["B", 64]));
    assert_eq!(manifest["tensors"]["0.bias"]["offset"], 8192);
    let header = std::fs::read_to_string(dir.join("Mlp.h")).unwrap();
    assert!(
        header.contains("int32_t fluxc_Mlp_forward(const float *params, const float *x, float *y"),
        "{header}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    // An unknown model and an unbuilt device are one clear line each.
    let out =
        fluxc(&["build", &repo("examples/mlp.flx"), "--model", "Nope", "--out", &dir.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no model `Nope`"), "{}", text(&out.stderr));
    let out = fluxc(&["build", &repo("examples/mlp.flx"), "--device", "gpu"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--device cpu"), "{}", text(&out.stderr));
    assert!(!dir.exists());
}

#[test]
fn an_internal_error_asks_for_a_bug_report() {
    let out = Command::new(env!("CARGO_BIN_EXE_fluxc"))
        .args(["check", "x.flx"])
        .env("FLUXC_TEST_INTERNAL_ERROR", "1")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("internal compiler error") && err.contains("please report"), "{err}");
    assert!(!err.contains("stack backtrace"), "{err}");
}

#[test]
fn run_executes_a_script_and_reports_run_time_errors_with_the_line() {
    let out = fluxc(&["run", &repo("examples/mlp.flx")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(printed.starts_with("[[") && printed.lines().count() == 1, "{printed}");

    let script =
        scratch("missing.flx", b"let a = ones[2]()\nlet x = load[f32[2, 3]](\"nowhere.npy\")\nprint(x)\n");
    let out = fluxc(&["run", &script.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("missing.flx:2:9") && err.contains("nowhere.npy") && err.contains("no such file"),
        "{err}"
    );

    // A shape mismatch in loaded data is caught when it is loaded.
    let data = scratch("wrong.npy", b"");
    let a = fluxc_cli_npy(&data);
    assert!(a.is_ok());
    let script = scratch("wrong_shape.flx", b"let x = load[f32[3, 3]](\"wrong.npy\")\n");
    let out = fluxc(&["run", &script.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("wrong_shape.flx:1:9") && err.contains("shape [2, 3]"), "{err}");
}

/// Writes a 2×3 `.npy` through the same code `save` uses.
fn fluxc_cli_npy(path: &std::path::Path) -> Result<(), String> {
    let t =
        fluxc_runtime::Tensor { dtype: fluxc_runtime::Dtype::F32, shape: vec![2, 3], values: vec![1.0; 6] };
    fluxc_runtime::npy::write(path, &t)
}

#[test]
fn build_emit_ir_prints_graphs() {
    let out = fluxc(&["build", &repo("examples/mlp.flx"), "--emit", "ir"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ir = text(&out.stdout);
    assert!(
        ir.contains("# model Mlp: forward (inference)") && ir.contains("param 0 0.weight: f32[32, 64]"),
        "{ir}"
    );
    let out = fluxc(&["build", &repo("examples/mlp.flx"), "--emit", "ir", "--model", "Nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no model `Nope`"));
}

#[test]
fn run_loads_trained_weights_for_a_model_and_diffs_a_wrong_file() {
    use fluxc_runtime::safetensors::{SafeTensors, write};
    use fluxc_runtime::{Dtype, Tensor};
    let t = |shape: Vec<usize>, values: Vec<f64>| Tensor { dtype: Dtype::F32, shape, values };
    let good = scratch("good.safetensors", b"");
    write(
        &good,
        &SafeTensors {
            tensors: vec![
                ("weight".into(), t(vec![1, 2], vec![1.0, 2.0])),
                ("bias".into(), t(vec![1], vec![0.5])),
            ],
            metadata: vec![("fluxc.model".into(), "M".into())],
        },
    )
    .unwrap();
    let bad = scratch("bad.safetensors", b"");
    write(
        &bad,
        &SafeTensors {
            tensors: vec![
                ("weight".into(), t(vec![2, 2], vec![1.0; 4])),
                ("extra".into(), t(vec![1], vec![0.0])),
            ],
            metadata: vec![],
        },
    )
    .unwrap();
    let script = scratch(
        "weights.flx",
        b"model M: f32[B, 2] -> f32[B, 1] = Dense(2 => 1)\nlet m = load[M](\"good.safetensors\")\nprint(m(ones[1, 2]()))\nlet b = load[M](\"bad.safetensors\")\n",
    );
    let out = fluxc(&["run", &script.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "[[3.5]]\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("weights.flx:4:9")
            && err.contains("missing `bias`")
            && err.contains("unexpected `extra`")
            && err.contains("`weight` has shape [2, 2]"),
        "{err}"
    );
}

#[test]
fn paths_are_judged_from_the_files_folder_when_it_is_the_working_directory() {
    let file = scratch(
        "bare.flx",
        b"model M: f32[B, 2] -> f32[B, 1] = Dense(2 => 1)\ndata d = npy(x = \"x.npy\", y = \"data/y.npy\")\ntrain M on d {\n    loss = mse\n    optimizer = Adam()\n    callbacks = [checkpoint(\"m.safetensors\")]\n}\n",
    );
    let dir = file.parent().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fluxc"))
        .args(["check", "bare.flx"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let escape = scratch("escape.flx", b"data d = npy(x = \"../x.npy\", y = \"y.npy\")\n");
    let out = Command::new(env!("CARGO_BIN_EXE_fluxc"))
        .args(["check", "escape.flx"])
        .current_dir(escape.parent().unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("E0502"));
}

#[test]
fn summary_lists_layers_shapes_and_parameter_counts() {
    let out = fluxc(&["summary", &repo("examples/resnet.flx")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert!(lines[1].starts_with("Layer") && lines[2].starts_with("ResNet (model)"), "{s}");
    assert!(s.contains("1.conv1") && s.contains("f32[B, 8, 8, 8]") && s.contains("Dense[8, 10]"), "{s}");
    // 8*1*9+8 + 4*(8*8*9+8) + 8*10+10 parameters.
    assert!(s.contains("Total parameters: 2,506 (trainable 2,506, state 0)"), "{s}");
    assert!(s.contains("per batch row"), "{s}");
    let out = fluxc(&["summary", &repo("examples/resnet.flx"), "--model", "Nope"]);
    assert_eq!(out.status.code(), Some(1));
}
