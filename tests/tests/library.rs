//! `fluxc build` libraries do what the JIT does: for every model of the examples and the IR
//! fixtures, the library built for x86-64-v3 and driven from C (`tests/c/abi_driver.c`) gives
//! the JIT's initial weights for a seed, its forward outputs, and — with a train block — its
//! losses and updated parameters and optimizer state over two steps, through the documented
//! ABI (parameter block at the manifest's offsets, zero-filled optimizer state, step count).
//! The C example `examples/c/infer.c` loads a safetensors file and agrees with the JIT too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use fluxc_core::interp::{Run, concrete};
use fluxc_core::ir::{DType, Graph};
use fluxc_core::pipeline::{ModelGraphs, Outcome, model_graphs};
use fluxc_core::rng::Stream;

const SEED: u64 = 7;
const BATCH: i64 = 3;

fn models(relative: &str) -> Vec<ModelGraphs> {
    let (mut sources, id) = fluxc_tests::load(relative).unwrap();
    let root = fluxc_tests::repo_dir();
    let mut loader = fluxc_cli::loader::DiskLoader::new(&root, Path::new(relative), None);
    match model_graphs(&mut sources, id, &mut loader, None) {
        Outcome::Done(v) => v,
        Outcome::Rejected(d) => {
            panic!("{relative}: {:?}", d.iter().map(|d| d.message.clone()).collect::<Vec<_>>())
        }
        Outcome::Failed(e) => panic!("{relative}: {}", e.message),
    }
}

fn scratch_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fluxc-library-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Values for graph input `name` of type `ty`: f32 normals, class indices below `classes`.
fn data(g: &Graph, name: &str, classes: usize, salt: u32) -> (Vec<f32>, Vec<u8>) {
    let slot = g.inputs.iter().find(|s| s.name == name).unwrap();
    let n: usize = concrete(&slot.ty.shape, BATCH).unwrap().iter().product();
    let s = Stream::new(11, salt, 0);
    let mut bytes = Vec::new();
    let values: Vec<f32> = (0..n as u64)
        .map(|e| match slot.ty.dtype {
            DType::I32 => {
                let v = (s.bits(e) as usize % classes.max(1)) as i32;
                bytes.extend(v.to_le_bytes());
                v as f32
            }
            _ => {
                let v = if name == "target" { s.uniform(e) } else { s.normal(e) };
                bytes.extend(v.to_le_bytes());
                v
            }
        })
        .collect();
    (values, bytes)
}

fn parse_line(out: &str, label: &str) -> Vec<f32> {
    let line = out
        .lines()
        .find(|l| l.split(' ').next() == Some(label))
        .unwrap_or_else(|| panic!("no `{label}` in {out}"));
    line.split(' ').skip(1).map(|v| v.parse::<f32>().unwrap()).collect()
}

fn close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol * b.abs().max(1.0), "{what}[{i}]: library {a}, JIT {b}");
    }
}

fn cc(args: &[&str], what: &str) {
    let out = Command::new("cc").args(args).output().expect("a C compiler `cc`");
    assert!(out.status.success(), "compiling {what}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The JIT's run of graph `g` on named inputs and the parameters by name.
fn jit(
    g: &Graph,
    inputs: &HashMap<String, Vec<f32>>,
    params: &HashMap<String, Vec<f32>>,
    step: u64,
) -> HashMap<String, Vec<f32>> {
    let kir = fluxc_core::kir::schedule(g).unwrap();
    let compiled = fluxc_cpu::compile(&kir).unwrap();
    let mut state = fluxc_cpu::State {
        params: g.params.iter().map(|p| params[&p.name].clone()).collect(),
        ..Default::default()
    };
    let ins: Vec<&[f32]> = g.inputs.iter().map(|s| inputs[&s.name].as_slice()).collect();
    let run = Run { batch: BATCH, seed: SEED, step };
    let outs = fluxc_cpu::step(&compiled, &kir, &mut state, &ins, &run).unwrap();
    kir.outputs.iter().zip(outs).map(|((n, _, _), v)| (n.clone(), v.to_vec())).collect()
}

fn check_model(relative: &str, m: &ModelGraphs) {
    let dir = scratch_dir(&m.name);
    let built =
        fluxc_cpu::library::build(m, relative, &dir).unwrap_or_else(|e| panic!("{relative} {}: {e}", m.name));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&built.manifest).unwrap()).unwrap();
    // §12.5: layer state lives in the parameter block after the trainable tensors.
    let tensors = manifest["tensors"].as_object().unwrap();
    let last_trainable =
        tensors.values().filter(|t| t.get("state").is_none()).map(|t| t["offset"].as_u64().unwrap()).max();
    let first_state =
        tensors.values().filter(|t| t.get("state").is_some()).map(|t| t["offset"].as_u64().unwrap()).min();
    if let (Some(a), Some(b)) = (last_trainable, first_state) {
        assert!(a < b, "{relative} {}: a state tensor lies before a trainable one", m.name);
    }
    let driver = dir.join("driver");
    let define = format!("-DMODEL={}", m.name);
    let mut args = vec!["-O1", "-Wall", "-Werror", &define];
    if m.train.is_some() {
        args.push("-DTRAIN");
    }
    let inc = format!("-I{}", dir.display());
    let lib = format!("-L{}", dir.display());
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    let link = format!("-l{}", m.name);
    let src = fluxc_tests::repo_dir().join("tests/c/abi_driver.c");
    let (src, out) = (src.to_string_lossy().into_owned(), driver.to_string_lossy().into_owned());
    args.extend([
        inc.as_str(),
        src.as_str(),
        lib.as_str(),
        link.as_str(),
        rpath.as_str(),
        "-o",
        out.as_str(),
    ]);
    cc(&args, "the ABI driver");

    // The parameter block as the manifest lays it out, from the JIT's initialiser.
    let init = jit(&m.init, &HashMap::new(), &HashMap::new(), 0);
    let offset = |name: &str| manifest["tensors"][name]["offset"].as_u64().unwrap() as usize / 4;
    let total = manifest["param_bytes"].as_u64().unwrap() as usize / 4;
    let mut block = vec![0f32; total];
    for (name, v) in &init {
        block[offset(name)..offset(name) + v.len()].copy_from_slice(v);
    }
    let classes = concrete(
        &m.forward.outputs.first().map(|(_, v)| m.forward.ty(*v).unwrap().shape.clone()).unwrap(),
        1,
    )
    .unwrap()
    .last()
    .copied()
    .unwrap_or(1);
    let (x, x_bytes) = data(&m.forward, "x", 3, 1);
    std::fs::write(dir.join("x.bin"), &x_bytes).unwrap();
    let mut cmd = Command::new(&driver);
    cmd.args([SEED.to_string(), BATCH.to_string(), dir.join("x.bin").to_string_lossy().into_owned()]);
    let mut target = Vec::new();
    if let Some(t) = &m.train {
        let (tv, tb) = data(t, "target", classes, 2);
        target = tv;
        std::fs::write(dir.join("target.bin"), &tb).unwrap();
        cmd.args([dir.join("target.bin").to_string_lossy().into_owned(), "2".into()]);
    }
    let run = cmd.output().unwrap();
    assert!(run.status.success(), "{relative} {}: {}", m.name, String::from_utf8_lossy(&run.stderr));
    let text = String::from_utf8(run.stdout).unwrap();
    let what = format!("{relative} {}", m.name);

    // The same initial weights for a seed (§12.11), the same forward, the documented codes.
    close(&format!("{what} init"), &parse_line(&text, "init"), &block, 1e-6);
    let params: HashMap<String, Vec<f32>> = init.clone();
    let fwd = jit(&m.forward, &HashMap::from([("x".to_owned(), x.clone())]), &params, 0);
    let y_name = &m.forward.outputs[0].0;
    close(&format!("{what} forward"), &parse_line(&text, "forward"), &fwd[y_name], 1e-4);
    assert_eq!(parse_line(&text, "codes"), vec![1.0, 2.0, 1.0], "{what}: return codes");

    // Two train steps from zero-filled optimizer state.
    if let Some(t) = &m.train {
        let mut params = params;
        let mut opt: HashMap<String, Vec<f32>> = HashMap::new();
        for s in &t.inputs {
            if let Some(k) = s.name.strip_prefix("opt.") {
                let n: usize = concrete(&s.ty.shape, 1).unwrap().iter().product();
                opt.insert(k.to_owned(), vec![0.0; n]);
            }
        }
        let mut losses = Vec::new();
        for step in 1..=2u64 {
            let mut inputs = HashMap::from([
                ("x".to_owned(), x.clone()),
                ("target".to_owned(), target.clone()),
                ("step".to_owned(), vec![step as f32]),
                ("epoch".to_owned(), vec![1.0]),
            ]);
            for (k, v) in &opt {
                inputs.insert(format!("opt.{k}"), v.clone());
            }
            let out = jit(t, &inputs, &params, step);
            losses.push(out["loss"][0]);
            for (name, v) in out {
                if let Some(p) = name.strip_prefix("param:").or_else(|| name.strip_prefix("state:")) {
                    params.insert(p.to_owned(), v);
                } else if let Some(k) = name.strip_prefix("opt:") {
                    opt.insert(k.to_owned(), v);
                }
            }
        }
        for (step, loss) in losses.iter().enumerate() {
            let line = text.lines().find(|l| l.starts_with(&format!("step {} ", step + 1))).unwrap();
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f[3], "0", "{what}: {line}");
            assert_eq!(f[7], (step + 1).to_string(), "{what}: the step count in opt_state: {line}");
            let got: f32 = f[5].parse().unwrap();
            assert!(
                (got - loss).abs() <= 1e-4 * loss.abs().max(1.0),
                "{what} step {}: loss {got}, JIT {loss}",
                step + 1
            );
        }
        let mut want = block.clone();
        for (name, v) in &params {
            want[offset(name)..offset(name) + v.len()].copy_from_slice(v);
        }
        close(&format!("{what} params after two steps"), &parse_line(&text, "params"), &want, 1e-3);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn built_libraries_agree_with_the_jit() {
    let mut files: Vec<String> = fluxc_tests::flx_files("examples").into_iter().map(|(_, p)| p).collect();
    files.extend(fluxc_tests::fixtures("ir").into_iter().map(|(_, p)| p));
    for f in files {
        for m in models(&f) {
            check_model(&f, &m);
        }
    }
}

/// The C example: weights from a safetensors file, inference from C, the JIT's outputs; a file
/// missing a tensor is one clear line.
#[test]
fn the_c_example_loads_weights_and_matches_the_jit() {
    let m = models("examples/mlp.flx").into_iter().next().unwrap();
    let dir = scratch_dir("infer");
    fluxc_cpu::library::build(&m, "mlp.flx", &dir).unwrap();
    let exe = dir.join("infer").to_string_lossy().into_owned();
    let src = fluxc_tests::repo_dir().join("examples/c/infer.c").to_string_lossy().into_owned();
    let (inc, lib, rpath) = (
        format!("-I{}", dir.display()),
        format!("-L{}", dir.display()),
        format!("-Wl,-rpath,{}", dir.display()),
    );
    cc(
        &["-O2", "-Wall", "-Wextra", "-Werror", "-DMODEL=Mlp", &inc, &src, &lib, "-lMlp", &rpath, "-o", &exe],
        "infer.c",
    );

    // Weights: the initialiser's values at another seed, written as safetensors.
    let params = jit(&m.init, &HashMap::new(), &HashMap::new(), 0);
    let tensors: Vec<(String, fluxc_runtime::Tensor)> = m
        .init
        .outputs
        .iter()
        .map(|(n, v)| {
            let shape = concrete(&m.init.ty(*v).unwrap().shape, 1).unwrap();
            let values = params[n].iter().map(|x| f64::from(*x) * 1.5).collect();
            (n.clone(), fluxc_runtime::Tensor { dtype: fluxc_runtime::Dtype::F32, shape, values })
        })
        .collect();
    let scaled: HashMap<String, Vec<f32>> =
        tensors.iter().map(|(n, t)| (n.clone(), t.values.iter().map(|v| *v as f32).collect())).collect();
    let weights = dir.join("w.safetensors");
    let file = fluxc_runtime::safetensors::SafeTensors { tensors: tensors.clone(), metadata: Vec::new() };
    fluxc_runtime::safetensors::write(&weights, &file).unwrap();
    let (x, x_bytes) = data(&m.forward, "x", 3, 9);
    std::fs::write(dir.join("x.f32"), &x_bytes).unwrap();
    let run = Command::new(&exe)
        .args([
            weights.to_string_lossy().as_ref(),
            dir.join("x.f32").to_string_lossy().as_ref(),
            &BATCH.to_string(),
        ])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let got: Vec<f32> =
        String::from_utf8(run.stdout).unwrap().split_whitespace().map(|v| v.parse().unwrap()).collect();
    let want = jit(&m.forward, &HashMap::from([("x".to_owned(), x)]), &scaled, 0);
    close("infer.c", &got, &want[&m.forward.outputs[0].0], 1e-4);

    // A weights file without `2.bias`.
    let partial = fluxc_runtime::safetensors::SafeTensors {
        tensors: tensors.into_iter().filter(|(n, _)| n != "2.bias").collect(),
        metadata: Vec::new(),
    };
    fluxc_runtime::safetensors::write(&weights, &partial).unwrap();
    let run = Command::new(&exe)
        .args([weights.to_string_lossy().as_ref(), dir.join("x.f32").to_string_lossy().as_ref(), "3"])
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(err.contains("no tensor \"2.bias\"") && err.lines().count() == 1, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
