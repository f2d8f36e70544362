//! `fluxc train` and `fluxc infer` as a user runs them: the examples reach their accuracy, two
//! runs with one seed give identical weights, the log and the files are as §8 says, and bad data
//! or a diverging run is one clear error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fluxc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fluxc"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run fluxc: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn repo(relative: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(relative).display().to_string()
}

fn temp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fluxc-train-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn events(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("train.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn last_epoch(ev: &[serde_json::Value]) -> &serde_json::Value {
    ev.iter().rev().find(|e| e["event"] == "epoch").unwrap()
}

fn train(example: &str, out: &Path) -> Output {
    let o = fluxc(&["train", &repo(example), "--out", &out.to_string_lossy()]);
    assert!(o.status.success(), "{example}: {}{}", text(&o.stdout), text(&o.stderr));
    o
}

#[test]
fn iris_trains_to_90_percent_reproducibly_and_infers() {
    let (a, b) = (temp("iris-a"), temp("iris-b"));
    let said = text(&train("examples/iris/iris.flx", &a).stdout);
    assert!(said.contains("epoch 60/60"), "{said}");
    let ev = events(&a);
    let acc = last_epoch(&ev)["val_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.9, "iris validation accuracy {acc}");
    // The events of §8 with their fields.
    let step = ev.iter().find(|e| e["event"] == "step").unwrap();
    for k in ["step", "epoch", "loss", "lr", "grad_norm"] {
        assert!(step.get(k).is_some(), "step event without {k}: {step}");
    }
    assert!((step["lr"].as_f64().unwrap() - 0.02).abs() < 1e-6);
    let done = ev.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["epochs"], 60);
    for k in ["steps", "seconds", "loss"] {
        assert!(done.get(k).is_some(), "done event without {k}");
    }
    let svg = std::fs::read_to_string(a.join("train.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("polyline"), "{svg}");
    // One seed, one result: bit-identical weights and optimizer state.
    train("examples/iris/iris.flx", &b);
    for f in ["Iris.safetensors", "Iris.opt.safetensors"] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between runs"
        );
    }
    // Inference with the trained weights: a setosa and a virginica.
    let x = a.join("x.npy");
    let t = fluxc_runtime::Tensor {
        dtype: fluxc_runtime::Dtype::F32,
        shape: vec![2, 4],
        values: vec![5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3],
    };
    fluxc_runtime::npy::write(&x, &t).unwrap();
    let weights = a.join("Iris.safetensors");
    let o = fluxc(&[
        "infer",
        &repo("examples/iris/iris.flx"),
        "--model",
        "Iris",
        "--weights",
        &weights.to_string_lossy(),
        "--input",
        &x.to_string_lossy(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let rows: Vec<Vec<f32>> =
        text(&o.stdout).lines().map(|l| l.split(' ').map(|v| v.parse().unwrap()).collect()).collect();
    let argmax = |r: &Vec<f32>| (0..r.len()).max_by(|i, j| r[*i].total_cmp(&r[*j])).unwrap();
    assert_eq!((argmax(&rows[0]), argmax(&rows[1])), (0, 2), "{rows:?}");
    let y = a.join("y.npy");
    let o = fluxc(&[
        "infer",
        &repo("examples/iris/iris.flx"),
        "--model",
        "Iris",
        "--weights",
        &weights.to_string_lossy(),
        "--input",
        &x.to_string_lossy(),
        "--output",
        &y.to_string_lossy(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(fluxc_runtime::npy::read(&y).unwrap().shape, vec![2, 3]);
    // Tampered weights: the digest says so, in one line.
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0x10;
    let bad = a.join("bad.safetensors");
    std::fs::write(&bad, &bytes).unwrap();
    let o = fluxc(&[
        "infer",
        &repo("examples/iris/iris.flx"),
        "--model",
        "Iris",
        "--weights",
        &bad.to_string_lossy(),
        "--input",
        &x.to_string_lossy(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("digest") && err.trim().lines().count() == 1, "{err}");
    let _ = (std::fs::remove_dir_all(&a), std::fs::remove_dir_all(&b));
}

#[test]
fn digits_trains_to_95_percent_with_checkpoints() {
    let out = temp("digits");
    train("examples/digits/digits.flx", &out);
    let ev = events(&out);
    let acc = last_epoch(&ev)["val_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.95, "digits validation accuracy {acc}");
    assert!(ev.iter().any(|e| e["event"] == "checkpoint" && e["path"] == "digits-checkpoint.safetensors"));
    // The digits' corner pixels are always blank: the anomaly screen logs them at the start.
    let constant = ev.iter().find(|e| e["event"] == "anomaly" && e["kind"] == "constant").unwrap();
    assert!(constant["detail"].as_str().unwrap().contains("features are (nearly) constant"), "{constant}");
    for f in [
        "Digits.safetensors",
        "Digits.opt.safetensors",
        "digits-checkpoint.safetensors",
        "digits-checkpoint.opt.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Trains an example (with `extra` arguments) in a fresh folder; its epoch events.
fn epochs_of(example: &str, tag: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let (out, path) = (temp(tag), repo(example));
    let mut args = vec!["train", path.as_str(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    let o = fluxc(&args);
    assert!(o.status.success(), "{example}: {}{}", text(&o.stdout), text(&o.stderr));
    let epochs = events(&out).into_iter().filter(|e| e["event"] == "epoch").collect();
    let _ = std::fs::remove_dir_all(&out);
    epochs
}

#[test]
fn the_digits_cnn_learns() {
    let epochs = epochs_of("examples/digits/cnn.flx", "cnn", &[]);
    let (first, last) = (epochs.first().unwrap(), epochs.last().unwrap());
    assert!(
        last["loss"].as_f64().unwrap() < 0.5 * first["loss"].as_f64().unwrap(),
        "the loss falls: {first} … {last}"
    );
    let acc = last["val_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.9, "digits CNN validation accuracy {acc}");
}

#[test]
fn the_sonnets_char_lstm_learns_a_label_per_position() {
    let epochs = epochs_of("examples/sonnets/sonnets.flx", "sonnets", &["--epochs", "4"]);
    assert_eq!(epochs.len(), 4);
    let (first, last) = (epochs.first().unwrap(), epochs.last().unwrap());
    assert!(
        last["val_loss"].as_f64().unwrap() < 0.85 * first["val_loss"].as_f64().unwrap(),
        "the loss falls: {first} … {last}"
    );
    // Accuracy counts every position of every row: a frequency-only guess (the space) gets ~0.2.
    let acc = last["val_accuracy"].as_f64().unwrap();
    assert!(acc > 0.4, "next-character validation accuracy {acc}");
}

#[test]
fn the_transformer_learns_to_sort() {
    let epochs = epochs_of("examples/sort/sort.flx", "sort", &["--epochs", "3"]);
    let (first, last) = (epochs.first().unwrap(), epochs.last().unwrap());
    assert!(
        last["val_loss"].as_f64().unwrap() < 0.2 * first["val_loss"].as_f64().unwrap(),
        "the loss falls: {first} … {last}"
    );
    // Every position of every held-out row: chance is 0.1.
    let acc = last["val_accuracy"].as_f64().unwrap();
    assert!(acc > 0.95, "sorting accuracy {acc}");
}

fn project(tag: &str, flx: &str, csv: &str) -> PathBuf {
    let d = temp(tag);
    std::fs::write(d.join("m.flx"), flx).unwrap();
    std::fs::write(d.join("d.csv"), csv).unwrap();
    d
}

const SMALL: &str = "model M: f32[B, 2] -> f32[B, 2] = Dense(2 => 2)
data d = csv(\"d.csv\", label = \"y\", classes = 2)
train M on d {
    loss = logitcrossentropy
    optimizer = OPT
    epochs = 3
}
";

#[test]
fn bad_data_and_divergence_are_one_clear_error() {
    let d = project("badlabel", &SMALL.replace("OPT", "Adam()"), "a,b,y\n1,2,0\n3,4,1\n5,6,2\n");
    let o = fluxc(&["train", &d.join("m.flx").to_string_lossy()]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(err.contains("d.csv") && err.contains("row 3: the label 2 is outside 0..2"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let d = project("ragged", &SMALL.replace("OPT", "Adam()"), "a,b,y\n1,2,0\n3,1\n");
    let err = text(&fluxc(&["train", &d.join("m.flx").to_string_lossy()]).stderr);
    assert!(err.contains("d.csv: line 3: 2 fields, the header has 3"), "{err}");

    let d = project("nan", &SMALL.replace("OPT", "Descent(lr = 1e30)"), "a,b,y\n1e10,2,0\n3,-4e10,1\n");
    let o = fluxc(&["train", &d.join("m.flx").to_string_lossy()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    assert!(text(&o.stderr).contains("nan_guard"), "{}", text(&o.stderr));
    let ev = events(&d.join("out"));
    assert!(ev.iter().any(|e| e["event"] == "nan"), "{ev:?}");
    assert!(d.join("out/M.safetensors").is_file(), "the last good weights are kept");

    let o = fluxc(&["train", &d.join("m.flx").to_string_lossy(), "--epochs", "0"]);
    assert_eq!(o.status.code(), Some(1));
    let o = fluxc(&["train", &repo("examples/mlp.flx")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("no train block"), "{}", text(&o.stderr));
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn keygen_sign_verify_eval_and_trusted_init() {
    let d = temp("sign");
    train("examples/iris/iris.flx", &d);
    let (key, w) = (d.join("key"), d.join("Iris.safetensors"));
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let o = fluxc(&["keygen", "--out", &s(&key)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let public = d.join("key.pub");
    // Unsigned weights are refused where trust is required, accepted where it is not.
    let o = fluxc(&["verify", &s(&w), "--trusted-keys", &s(&public)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("not signed"), "{}", text(&o.stderr));
    let init = |extra: &[&str]| {
        let mut args = vec!["train", "--epochs", "1", "--out"];
        let out = d.join("again");
        let out = s(&out);
        args.push(&out);
        let file = repo("examples/iris/iris.flx");
        args.push(&file);
        let wp = s(&w);
        args.extend(["--init", &wp]);
        args.extend(extra);
        fluxc(&args)
    };
    assert_eq!(init(&["--trusted-keys", &s(&public)]).status.code(), Some(1));
    assert!(init(&[]).status.success());
    // Signed: verify and a trusted --init pass.
    let o = fluxc(&["sign", &s(&w), "--key", &s(&key)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = fluxc(&["verify", &s(&w), "--trusted-keys", &s(&public)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(init(&["--trusted-keys", &s(&public)]).status.success());
    // Another key is not trusted; a second keygen to the same name is refused.
    let other = d.join("other");
    assert!(fluxc(&["keygen", "--out", &s(&other)]).status.success());
    let o = fluxc(&["verify", &s(&w), "--trusted-keys", &s(&d.join("other.pub"))]);
    assert!(text(&o.stderr).contains("not among the trusted keys"), "{}", text(&o.stderr));
    assert_eq!(fluxc(&["keygen", "--out", &s(&key)]).status.code(), Some(1));
    // eval on the validation source reports what training logged.
    let o = fluxc(&[
        "eval",
        &repo("examples/iris/iris.flx"),
        "--model",
        "Iris",
        "--weights",
        &s(&w),
        "--data",
        "iris_valid",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let said = text(&o.stdout);
    let acc: f64 = said.lines().find_map(|l| l.strip_prefix("accuracy ")).unwrap().parse().unwrap();
    let logged = last_epoch(&events(&d))["val_accuracy"].as_f64().unwrap();
    assert!((acc - logged).abs() < 1e-6, "eval {acc}, training logged {logged}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_interrupted_run_resumes_bit_for_bit() {
    let (whole, cut) = (temp("whole"), temp("cut"));
    let file = repo("examples/digits/digits.flx");
    train("examples/digits/digits.flx", &whole);
    // Interrupted after step 100 (mid-epoch): exit 130, a checkpoint, no torn file.
    let o = Command::new(env!("CARGO_BIN_EXE_fluxc"))
        .args(["train", &file, "--out", &cut.to_string_lossy()])
        .env("FLUXC_TEST_INTERRUPT_AFTER_STEP", "100")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("--resume"), "{}", text(&o.stderr));
    for f in std::fs::read_dir(&cut).unwrap() {
        let name = f.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "a temporary file was left: {name}");
    }
    let checkpoint = cut.join("Digits.safetensors");
    let o =
        fluxc(&["train", &file, "--out", &cut.to_string_lossy(), "--resume", &checkpoint.to_string_lossy()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for f in ["Digits.safetensors", "Digits.opt.safetensors"] {
        assert_eq!(
            std::fs::read(whole.join(f)).unwrap(),
            std::fs::read(cut.join(f)).unwrap(),
            "{f}: the resumed run differs"
        );
    }
    // The log continues where the checkpoint was: the same epochs, once each.
    let strip = |ev: Vec<serde_json::Value>| -> Vec<String> {
        ev.into_iter()
            .filter(|e| e["event"] == "epoch")
            .map(|mut e| {
                e.as_object_mut().unwrap().remove("seconds");
                e.to_string()
            })
            .collect()
    };
    assert_eq!(strip(events(&whole)), strip(events(&cut)));
    // Resuming from an epoch checkpoint also reaches the same weights.
    let again = cut.join("digits-checkpoint.safetensors");
    let o = fluxc(&["train", &file, "--out", &cut.to_string_lossy(), "--resume", &again.to_string_lossy()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(
        std::fs::read(whole.join("Digits.safetensors")).unwrap(),
        std::fs::read(cut.join("Digits.safetensors")).unwrap()
    );
    let _ = (std::fs::remove_dir_all(&whole), std::fs::remove_dir_all(&cut));
}

#[test]
fn inspect_summarises_or_rejects() {
    let o = fluxc(&[
        "inspect",
        &repo("examples/iris/iris.csv"),
        "--label-column",
        "species",
        "--num-classes",
        "3",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let said = text(&o.stdout);
    for want in [
        "150 rows, 4 feature columns",
        "classes (sorted): setosa, versicolor, virginica",
        "label histogram: 0: 50, 1: 50, 2: 50",
        "anomaly duplicates",
    ] {
        assert!(said.contains(want), "{want:?} not in {said}");
    }
    let o = fluxc(&[
        "inspect",
        &repo("examples/digits/digits-images.idx"),
        "--labels",
        &repo("examples/digits/digits-labels.idx"),
        "--num-classes",
        "10",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("U8 [1797, 8, 8]"), "{}", text(&o.stdout));
    let o = fluxc(&["inspect", &repo("examples/digits/digits-labels.idx"), "--num-classes", "5"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("outside 0..5"), "{}", text(&o.stderr));
    // A weights file against a build manifest.
    let d = temp("inspect");
    train("examples/iris/iris.flx", &d);
    let o = fluxc(&["build", &repo("examples/iris/iris.flx"), "--out", &d.to_string_lossy()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let w = d.join("Iris.safetensors").to_string_lossy().into_owned();
    let o = fluxc(&[
        "inspect",
        &w,
        "--expect-manifest",
        &d.join("Iris.json").to_string_lossy(),
        "--check-finite",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("digest: matches") && text(&o.stdout).contains("every tensor matches"));
    let bad = d.join("x.bin");
    std::fs::write(&bad, b"hello").unwrap();
    let o = fluxc(&["inspect", &bad.to_string_lossy()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("unknown format `bin`"), "{}", text(&o.stderr));
    let o = fluxc(&["inspect", &bad.to_string_lossy(), "--format", "npy"]);
    assert!(text(&o.stderr).contains("not a .npy file"), "{}", text(&o.stderr));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn convert_maps_a_pytorch_state_dict() {
    use fluxc_runtime::{Dtype, Tensor};
    let d = temp("convert");
    let flx = d.join("m.flx");
    std::fs::write(
        &flx,
        "model Seq: f32[B, 5, 3] -> f32[B, 5, 2] = Chain(LSTM(3 => 4), BatchNorm(5), Dense(4 => 2))\n",
    )
    .unwrap();
    let t = |shape: &[usize], dtype: Dtype| {
        let n: usize = shape.iter().product();
        Tensor { dtype, shape: shape.to_vec(), values: (0..n).map(|i| (i % 7) as f64 * 0.1).collect() }
    };
    // As `torch.nn.Sequential(nn.LSTM(3, 4, batch_first=True), nn.BatchNorm1d(5), nn.Linear(4, 2))`
    // names its state dict.
    let mut tensors = vec![
        ("0.weight_ih_l0".to_owned(), t(&[16, 3], Dtype::F32)),
        ("0.weight_hh_l0".to_owned(), t(&[16, 4], Dtype::F32)),
        ("0.bias_ih_l0".to_owned(), t(&[16], Dtype::F32)),
        ("0.bias_hh_l0".to_owned(), t(&[16], Dtype::F32)),
        ("1.weight".to_owned(), t(&[5], Dtype::F32)),
        ("1.bias".to_owned(), t(&[5], Dtype::F32)),
        ("1.running_mean".to_owned(), t(&[5], Dtype::F32)),
        ("1.running_var".to_owned(), t(&[5], Dtype::F32)),
        ("1.num_batches_tracked".to_owned(), t(&[], Dtype::I64)),
        ("2.weight".to_owned(), t(&[2, 4], Dtype::F32)),
        ("2.bias".to_owned(), t(&[2], Dtype::F32)),
    ];
    let state = d.join("torch.safetensors");
    let write = |tensors: &[(String, Tensor)]| {
        let f = fluxc_runtime::safetensors::SafeTensors { tensors: tensors.to_vec(), metadata: Vec::new() };
        fluxc_runtime::safetensors::write(&state, &f).unwrap();
    };
    write(&tensors);
    let out = d.join("Seq.safetensors");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let o =
        fluxc(&["convert", "--from", "pytorch", &s(&state), &s(&flx), "--model", "Seq", "--out", &s(&out)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("dropped 1.num_batches_tracked"), "{}", text(&o.stdout));
    let w = fluxc_runtime::safetensors::read(&out).unwrap();
    let names: Vec<&str> = w.tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..4], ["0.cell.weight_ih", "0.cell.weight_hh", "0.cell.bias_ih", "0.cell.bias_hh"]);
    assert_eq!(
        w.get("0.cell.weight_hh").unwrap().values,
        tensors[1].1.values.iter().map(|v| f64::from(*v as f32)).collect::<Vec<_>>()
    );
    // The converted file is a checked fluxc weights file: inference runs on it.
    let x = d.join("x.npy");
    fluxc_runtime::npy::write(&x, &t(&[2, 5, 3], Dtype::F32)).unwrap();
    let o = fluxc(&["infer", &s(&flx), "--model", "Seq", "--weights", &s(&out), "--input", &s(&x)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // What cannot map is reported, and nothing is written.
    let _ = std::fs::remove_file(&out);
    tensors[9].1 = t(&[4, 2], Dtype::F32);
    tensors.push(("0.weight_ih_l1".to_owned(), t(&[16, 4], Dtype::F32)));
    write(&tensors);
    let o =
        fluxc(&["convert", "--from", "pytorch", &s(&state), &s(&flx), "--model", "Seq", "--out", &s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.contains("`2.weight` has shape [4, 2], `2.weight` needs [2, 4]")
            && err.contains("`0.weight_ih_l1` has no fluxc counterpart"),
        "{err}"
    );
    assert!(!out.exists());
    let o = fluxc(&[
        "convert",
        "--from",
        "tensorflow",
        &s(&state),
        &s(&flx),
        "--model",
        "Seq",
        "--out",
        &s(&out),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn accuracy_counts_first_maximal_scores_per_label() {
    use fluxc_cli::train::correct_predictions;
    // Three rows of three classes: right, wrong, and a tie that goes to the first maximum
    // (Flux's onecold, torch's argmax).
    let scores = [0.1, 0.7, 0.2, 0.9, 0.05, 0.05, 0.4, 0.4, 0.2];
    assert_eq!(correct_predictions(&scores, &[1, 1, 0]), 2);
    assert_eq!(correct_predictions(&scores, &[1, 0, 1]), 2);
    assert_eq!(correct_predictions(&scores, &[0, 1, 2]), 0);
    // A label per position: the same scores as one row of three positions.
    assert_eq!(correct_predictions(&scores, &[1, 0, 0]), 3);
    assert_eq!(correct_predictions(&[], &[]), 0);
}

#[test]
fn early_stop_waits_patience_epochs_for_its_monitor() {
    let rows = "a,b,y\n1,2,0\n3,4,1\n-1,0,0\n2,5,1\n0,1,0\n4,3,1\n-2,1,0\n3,3,1\n1,1,0\n5,5,1\n";
    let flx = |opt: &str, extra: &str, stop: &str| {
        format!(
            "model M: f32[B, 2] -> f32[B, 2] = Dense(2 => 2)\n\
             data d = csv(\"d.csv\", label = \"y\", classes = 2)\n{extra}\
             train M on d {{\n    loss = logitcrossentropy\n    optimizer = {opt}\n    epochs = 8\n    \
             shuffle = false\n    callbacks = [{stop}]\n    {}\n}}\n",
            if extra.is_empty() { "" } else { "validation = v\n    metrics = [accuracy]" }
        )
    };
    let run = |tag: &str, text: String| {
        let d = project(tag, &text, rows);
        let o = fluxc(&["train", &d.join("m.flx").to_string_lossy()]);
        assert!(o.status.success(), "{}", self::text(&o.stderr));
        let ev = events(&d.join("out"));
        let epochs = ev.iter().filter(|e| e["event"] == "epoch").count();
        let stop = ev.iter().find(|e| e["event"] == "early_stop").cloned();
        let _ = std::fs::remove_dir_all(&d);
        (epochs, stop)
    };
    // A zero learning rate never improves the loss: epoch 1 sets the best, 2 and 3 wait, stop.
    let (epochs, stop) =
        run("es_loss", flx("Descent(lr = 0.0)", "", "early_stop(patience = 2, monitor = loss)"));
    assert_eq!(epochs, 3);
    let stop = stop.expect("an early_stop event");
    assert_eq!((stop["epoch"].as_u64(), stop["monitor"].as_str()), (Some(3), Some("loss")));
    // val_accuracy is maximised; constant, it stops after 1 + patience epochs too.
    let (epochs, stop) = run(
        "es_acc",
        flx(
            "Descent(lr = 0.0)",
            "data v = split(d, 0.3, seed = 1)\n",
            "early_stop(patience = 3, monitor = val_accuracy)",
        ),
    );
    assert_eq!(epochs, 4);
    assert_eq!(stop.unwrap()["monitor"], "val_accuracy");
    // Full-batch gradient descent with a small step improves the loss every epoch: no stop.
    let (epochs, stop) =
        run("es_none", flx("Descent(lr = 0.01)", "", "early_stop(patience = 1, monitor = loss)"));
    assert_eq!(epochs, 8);
    assert!(stop.is_none(), "{stop:?}");
}
