//! `fluxc build`: a model's graphs → a shared library with the C ABI of LANGUAGE.md §8, §11.3
//! and §12.5, its header and its JSON manifest.
//!
//! The loops are compiled by Cranelift for x86-64-v3 into one object file; a small generated C
//! file holds the plans and loop tables and defines the `fluxc_NAME_*` functions as calls of the
//! kernels' C entry points (`fluxc_kernels::abi`); the system `cc` links the three with the
//! kernels' static library (embedded in this binary) into `libNAME.so`, exporting only the
//! model's functions. The library needs the C library, libm, libpthread and libgcc_s, nothing
//! else.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use cranelift_module::Linkage;
use cranelift_object::{ObjectBuilder, ObjectModule};
use fluxc_core::dims::Dim;
use fluxc_core::ir::{DType, Graph, TensorTy};
use fluxc_core::kir::{Kir, linear_in_b};
use fluxc_kernels::abi::OPT_HEADER_BYTES;
use fluxc_kernels::plan::{dest, source};

use super::CpuError;
use crate::codegen;
use crate::plan::{Bindings, encode};

/// The kernels' static library for x86-64-v3 (built by `build.rs`).
static KERNELS_ARCHIVE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libfluxc_kernels.a"));

pub use fluxc_core::pipeline::ModelGraphs;

/// What `build` wrote and the totals it prints.
pub struct Built {
    pub library: PathBuf,
    pub header: PathBuf,
    pub manifest: PathBuf,
    pub parameters: i64,
    pub param_bytes: i64,
    /// Scratch bytes of a call: at most `fixed + per_row * batch`, forward and train step.
    pub forward_scratch: (i64, i64),
    pub train_scratch: Option<(i64, i64)>,
}

fn err(m: impl Into<String>) -> CpuError {
    CpuError(m.into())
}

/// The elements of a batch-free tensor type.
fn elements(t: &TensorTy) -> Result<i64, CpuError> {
    t.shape.iter().try_fold(1i64, |p, d| {
        let v = d.as_constant().ok_or_else(|| err(format!("the size {d} is not fixed")))?;
        p.checked_mul(v).ok_or_else(|| err("a size overflows"))
    })
}

fn dtype_code(t: &TensorTy) -> i64 {
    i64::from(matches!(t.dtype, DType::I32))
}

fn safetensors_dtype(d: DType) -> &'static str {
    match d {
        DType::I32 => "I32",
        DType::Bool => "BOOL",
        _ => "F32",
    }
}

fn c_type(d: DType) -> &'static str {
    match d {
        DType::I32 => "int32_t",
        _ => "float",
    }
}

/// A shape for the manifest: numbers, and the batch dimension as its expression (`"B"`).
fn shape_json(shape: &[Dim]) -> serde_json::Value {
    shape
        .iter()
        .map(|d| match d.as_constant() {
            Some(v) => serde_json::Value::from(v),
            None => serde_json::Value::from(d.to_string()),
        })
        .collect()
}

/// Upper bound of a plan's scratch bytes: `fixed + per_row * B` (what `abi::scratch_bytes`
/// computes, with each slot's rounding taken at its worst).
fn scratch_bound(kir: &Kir, int_inputs: &[(i64, i64)]) -> (i64, i64) {
    let mut fixed = 64;
    let mut per_row = 0;
    for (f, r) in kir.slots.iter().chain(int_inputs) {
        fixed += 4 * (f + 15);
        per_row += 4 * r;
    }
    (fixed, per_row)
}

/// Sizes of the integer inputs a plan converts in scratch.
fn int_inputs(kir: &Kir, bindings: &Bindings) -> Result<Vec<(i64, i64)>, CpuError> {
    let mut v = Vec::new();
    for b in &kir.buffers {
        if let fluxc_core::kir::Storage::Input(k) = b.storage
            && bindings.inputs.get(k).is_some_and(|i| i.2 == 1)
        {
            v.push(linear_in_b(&b.elements).map_err(|e| err(e.0))?);
        }
    }
    Ok(v)
}

/// Builds `libNAME.so`, `NAME.h` and `NAME.json` for `m` into `out_dir`.
pub fn build(m: &ModelGraphs, source_name: &str, out_dir: &Path) -> Result<Built, CpuError> {
    let name = &m.name;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(err(format!("the model name `{name}` is not a C identifier")));
    }
    // The parameter block: every tensor the initialiser makes, in its (manifest) order.
    let mut offsets = std::collections::HashMap::new();
    let mut tensors = serde_json::Map::new();
    let mut total = 0i64;
    let mut trainable_count = 0i64;
    for (pname, v) in &m.init.outputs {
        let t = m.init.ty(*v).ok_or_else(|| err("an initialiser output without a type"))?;
        let n = elements(t)?;
        let state = m
            .forward
            .params
            .iter()
            .chain(m.train.iter().flat_map(|g| g.params.iter()))
            .any(|p| &p.name == pname && !p.trainable);
        if !state {
            trainable_count += n;
        }
        let mut entry = serde_json::Map::new();
        entry.insert("dtype".into(), safetensors_dtype(t.dtype).into());
        entry.insert("shape".into(), shape_json(&t.shape));
        entry.insert("offset".into(), (total * 4).into());
        if state {
            entry.insert("state".into(), true.into());
        }
        tensors.insert(pname.clone(), entry.into());
        offsets.insert(pname.clone(), total);
        total += n;
    }
    let param_offsets = |g: &Graph| -> Result<Vec<i64>, CpuError> {
        g.params
            .iter()
            .map(|p| {
                offsets
                    .get(&p.name)
                    .copied()
                    .ok_or_else(|| err(format!("no parameter `{}` in the block", p.name)))
            })
            .collect()
    };

    // init: every output into the parameter block.
    let init_kir = fluxc_core::kir::schedule(&m.init).map_err(|e| err(e.0))?;
    let init_b = Bindings {
        inputs: Vec::new(),
        param_offsets: param_offsets(&m.init)?,
        outputs: m
            .init
            .outputs
            .iter()
            .map(|(n, _)| {
                offsets.get(n).map(|o| (dest::PARAM, *o)).ok_or_else(|| err("an unknown parameter"))
            })
            .collect::<Result<_, _>>()?,
    };
    // forward: x in, y out.
    let fwd_kir = fluxc_core::kir::schedule(&m.forward).map_err(|e| err(e.0))?;
    let x_ty = m.forward.inputs.first().map(|s| s.ty.clone()).ok_or_else(|| err("the model has no input"))?;
    let y_ty = m
        .forward
        .outputs
        .first()
        .and_then(|(_, v)| m.forward.ty(*v))
        .cloned()
        .ok_or_else(|| err("the model has no output"))?;
    let fwd_b = Bindings {
        inputs: vec![(source::ARG, 0, dtype_code(&x_ty))],
        param_offsets: param_offsets(&m.forward)?,
        outputs: vec![(dest::ARG, 0)],
    };
    // train step: x, target, step, epoch and the optimizer's states in; loss, parameters,
    // states and layer states out.
    let mut opt_layout = std::collections::HashMap::new();
    let mut opt_bytes = 0i64;
    let mut target_ty = None;
    let train = match &m.train {
        None => None,
        Some(g) => {
            let kir = fluxc_core::kir::schedule(g).map_err(|e| err(e.0))?;
            let mut at = OPT_HEADER_BYTES as i64;
            let mut inputs = Vec::new();
            for s in &g.inputs {
                inputs.push(match s.name.as_str() {
                    "x" => (source::ARG, 0, dtype_code(&s.ty)),
                    "target" => {
                        target_ty = Some(s.ty.clone());
                        (source::ARG, 1, dtype_code(&s.ty))
                    }
                    "step" => (source::STEP, 0, 0),
                    "epoch" => (source::EPOCH, 0, 0),
                    other => {
                        let key = other
                            .strip_prefix("opt.")
                            .ok_or_else(|| err(format!("unknown train input `{other}`")))?;
                        opt_layout.insert(key.to_owned(), at);
                        let b = (source::OPT, at, 0);
                        at += 4 * elements(&s.ty)?;
                        b
                    }
                });
            }
            opt_bytes = at;
            let mut outputs = Vec::new();
            for (n, _) in &g.outputs {
                outputs.push(if n == "loss" {
                    (dest::ARG, 0)
                } else if n == "lr" || n == "grad_norm" {
                    (dest::NONE, 0)
                } else if let Some(p) = n.strip_prefix("param:").or_else(|| n.strip_prefix("state:")) {
                    (dest::PARAM, *offsets.get(p).ok_or_else(|| err(format!("no parameter `{p}`")))?)
                } else if let Some(k) = n.strip_prefix("opt:") {
                    (dest::OPT, *opt_layout.get(k).ok_or_else(|| err(format!("no optimizer state `{k}`")))?)
                } else {
                    return Err(err(format!("unknown train output `{n}`")));
                });
            }
            let b = Bindings { inputs, param_offsets: param_offsets(g)?, outputs };
            Some((kir, b))
        }
    };

    // The object file: every loop of the three plans.
    let isa = codegen::x86_64_v3_isa()?;
    let builder = ObjectBuilder::new(isa, format!("fluxc_{name}"), cranelift_module::default_libcall_names())
        .map_err(|e| err(format!("the object writer: {e}")))?;
    let mut module = ObjectModule::new(builder);
    let mut c = String::new();
    let _ = writeln!(
        c,
        "/* Generated by fluxc {} from {source_name}: model {name}. */",
        env!("CARGO_PKG_VERSION")
    );
    c.push_str(C_PRELUDE);
    let mut entries = Vec::new();
    let mut scratch = Vec::new();
    for (label, kir, bindings) in [("init", &init_kir, &init_b), ("forward", &fwd_kir, &fwd_b)]
        .into_iter()
        .chain(train.as_ref().map(|(k, b)| ("train", k, b)))
    {
        let (plan, loops) = encode(kir, bindings)?;
        let mut symbols = Vec::new();
        for &k in &loops {
            let Some(kern) = kir.kernels.get(k) else {
                return Err(err("a loop index that is not a loop"));
            };
            let symbol = format!("fluxc_{name}_{label}_k{k}");
            codegen::define_loop(&mut module, k, &symbol, Linkage::Export, kern, None)?;
            let _ = writeln!(c, "extern void {symbol}(float *const *, int64_t, int64_t, int64_t);");
            symbols.push(symbol);
        }
        let _ = write!(c, "static const int64_t {label}_plan[] = {{");
        for (i, w) in plan.iter().enumerate() {
            if i % 16 == 0 {
                c.push_str("\n   ");
            }
            let _ = write!(c, " {w}LL,");
        }
        c.push_str("\n};\n");
        if symbols.is_empty() {
            let _ = writeln!(c, "#define {label}_loops ((const fluxc_loop *)0)");
        } else {
            let _ = writeln!(c, "static const fluxc_loop {label}_loops[] = {{ {} }};", symbols.join(", "));
        }
        entries.push((label, plan.len(), symbols.len()));
        if label != "init" {
            scratch.push(scratch_bound(kir, &int_inputs(kir, bindings)?));
        }
    }
    let entry = |label: &str| match entries.iter().find(|e| e.0 == label) {
        Some((l, n, k)) => format!("{{ {l}_plan, {n}, {l}_loops, {k} }}"),
        None => "{ 0, 0, 0, 0 }".into(),
    };
    let _ = writeln!(
        c,
        "static const struct fluxc_rt_model model = {{ {}, {}, {}, {total}, {} }};\n",
        entry("init"),
        entry("forward"),
        entry("train"),
        if train.is_some() { opt_bytes } else { 0 }
    );
    let x_c = c_type(x_ty.dtype);
    let _ = write!(
        c,
        "size_t fluxc_{name}_param_bytes(void) {{ return fluxc_rt_param_bytes(&model); }}\n\
         size_t fluxc_{name}_scratch_bytes(int64_t batch) {{ return fluxc_rt_scratch_bytes(&model, batch); }}\n\
         int32_t fluxc_{name}_init(float *params, uint64_t seed) {{ return fluxc_rt_init(&model, params, seed); }}\n\
         int32_t fluxc_{name}_forward(const float *params, const {x_c} *x, float *y, int64_t batch, void *scratch) {{\n\
         \x20   return fluxc_rt_forward(&model, params, x, y, batch, scratch);\n}}\n\
         int32_t fluxc_{name}_set_threads(int32_t n) {{ return fluxc_rt_set_threads(n); }}\n"
    );
    let t_c = target_ty.as_ref().map_or("float", |t| c_type(t.dtype));
    if train.is_some() {
        let _ = write!(
            c,
            "size_t fluxc_{name}_opt_state_bytes(void) {{ return fluxc_rt_opt_state_bytes(&model); }}\n\
             int32_t fluxc_{name}_train_step(float *params, float *opt_state, const {x_c} *x, const {t_c} *target,\n\
             \x20                               int64_t batch, float *loss, void *scratch) {{\n\
             \x20   return fluxc_rt_train_step(&model, params, opt_state, x, target, batch, loss, scratch);\n}}\n"
        );
    }
    let object = module.finish().emit().map_err(|e| err(format!("writing the object file: {e}")))?;

    // Header and manifest.
    let table: Vec<(String, i64, i64)> = m
        .init
        .outputs
        .iter()
        .map(|(n, v)| {
            let bytes = m.init.ty(*v).map_or(Ok(0), elements)? * 4;
            Ok((n.clone(), offsets.get(n).copied().unwrap_or(0) * 4, bytes))
        })
        .collect::<Result<_, CpuError>>()?;
    let header = header_text(name, source_name, &x_ty, &y_ty, target_ty.as_ref(), train.is_some(), &table);
    let fwd_scratch = scratch.first().copied().unwrap_or((64, 0));
    let train_scratch = scratch.get(1).copied();
    let mut manifest = serde_json::Map::new();
    manifest.insert("format".into(), 1.into());
    manifest.insert("model".into(), name.as_str().into());
    manifest.insert("source".into(), source_name.into());
    manifest.insert("target".into(), "x86-64-v3".into());
    let io = |t: &TensorTy| serde_json::json!({"dtype": safetensors_dtype(t.dtype), "shape": shape_json(&t.shape)});
    manifest.insert("input".into(), io(&x_ty));
    manifest.insert("output".into(), io(&y_ty));
    if let Some(t) = &target_ty {
        manifest.insert("target_input".into(), io(t));
    }
    manifest.insert("tensors".into(), tensors.into());
    manifest.insert("parameters".into(), trainable_count.into());
    manifest.insert("param_bytes".into(), (total * 4).into());
    manifest.insert("opt_state_bytes".into(), if train.is_some() { opt_bytes } else { 0 }.into());
    let bytes = |(f, r): (i64, i64)| serde_json::json!({"fixed": f, "per_row": r});
    let mut sb = serde_json::Map::new();
    sb.insert("forward".into(), bytes(fwd_scratch));
    if let Some(t) = train_scratch {
        sb.insert("train_step".into(), bytes(t));
    }
    manifest.insert("scratch_bytes".into(), sb.into());
    let manifest = serde_json::to_string_pretty(&serde_json::Value::Object(manifest))
        .map_err(|e| err(format!("the manifest: {e}")))?;

    // Link.
    std::fs::create_dir_all(out_dir).map_err(|e| err(format!("creating {}: {e}", out_dir.display())))?;
    let work = tempdir(out_dir)?;
    let result = link(name, &work, &object, &c, out_dir);
    let _ = std::fs::remove_dir_all(&work);
    let library = result?;
    let header_path = out_dir.join(format!("{name}.h"));
    let manifest_path = out_dir.join(format!("{name}.json"));
    write_atomic(&header_path, header.as_bytes())?;
    write_atomic(&manifest_path, format!("{manifest}\n").as_bytes())?;
    Ok(Built {
        library,
        header: header_path,
        manifest: manifest_path,
        parameters: trainable_count,
        param_bytes: total * 4,
        forward_scratch: fwd_scratch,
        train_scratch,
    })
}

const C_PRELUDE: &str = r#"#include <stddef.h>
#include <stdint.h>

typedef void (*fluxc_loop)(float *const *, int64_t, int64_t, int64_t);
struct fluxc_rt_entry { const int64_t *plan; size_t plan_len; const fluxc_loop *loops; size_t n_loops; };
struct fluxc_rt_model { struct fluxc_rt_entry init, forward, train; int64_t param_elements; int64_t opt_bytes; };
extern size_t fluxc_rt_param_bytes(const struct fluxc_rt_model *);
extern size_t fluxc_rt_opt_state_bytes(const struct fluxc_rt_model *);
extern size_t fluxc_rt_scratch_bytes(const struct fluxc_rt_model *, int64_t);
extern int32_t fluxc_rt_init(const struct fluxc_rt_model *, float *, uint64_t);
extern int32_t fluxc_rt_forward(const struct fluxc_rt_model *, const float *, const void *, float *, int64_t, void *);
extern int32_t fluxc_rt_train_step(const struct fluxc_rt_model *, float *, void *, const void *, const void *, int64_t, float *, void *);
extern int32_t fluxc_rt_set_threads(int32_t);

"#;

fn header_text(
    name: &str,
    source: &str,
    x: &TensorTy,
    y: &TensorTy,
    target: Option<&TensorTy>,
    train: bool,
    tensors: &[(String, i64, i64)],
) -> String {
    let guard = format!("FLUXC_{}_H", name.to_ascii_uppercase());
    let mut h = String::new();
    let _ = writeln!(
        h,
        "/* {name}.h: the C interface of model {name}, built by fluxc {} from {source}.",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(h, " *");
    let _ = writeln!(
        h,
        " * Input x: {x}. Output y: {y}.{}",
        target.map(|t| format!(" Training target: {t}.")).unwrap_or_default()
    );
    h.push_str(
        " * Parameters lie in one block of fluxc_NAME_param_bytes() bytes; NAME.json gives each\n\
         \x20* tensor's byte offset. scratch must hold fluxc_NAME_scratch_bytes(batch) bytes; distinct\n\
         \x20* scratch buffers make calls thread-safe. Buffers need only 4-byte alignment.\n\
         \x20* Return codes: 0 ok, 1 invalid batch (< 1), 2 null pointer, 3 non-finite loss (no update\n\
         \x20* applied), 4 internal error.\n",
    );
    if train {
        h.push_str(
            " * opt_state: zero-fill it to start. Its first 8 bytes are the step count (u64, little-\n\
             \x20* endian), the next 8 the epoch for epoch-based schedules (0 reads as 1), the next 8 the\n\
             \x20* seed of the step's randomness (dropout); then the optimizer's tensors. train_step\n\
             \x20* reports the loss computed before its update.\n",
        );
    }
    h.push_str(" */\n");
    let _ = writeln!(h, "#ifndef {guard}\n#define {guard}\n\n#include <stddef.h>\n#include <stdint.h>\n");
    h.push_str("#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n");
    let (xc, tc) = (c_type(x.dtype), target.map_or("float", |t| c_type(t.dtype)));
    let _ = writeln!(h, "size_t  fluxc_{name}_param_bytes(void);");
    let _ = writeln!(h, "size_t  fluxc_{name}_scratch_bytes(int64_t batch);");
    let _ = writeln!(h, "int32_t fluxc_{name}_init(float *params, uint64_t seed);");
    let _ = writeln!(
        h,
        "int32_t fluxc_{name}_forward(const float *params, const {xc} *x, float *y, int64_t batch, void *scratch);"
    );
    let _ = writeln!(h, "int32_t fluxc_{name}_set_threads(int32_t n);");
    if train {
        let _ = writeln!(h, "size_t  fluxc_{name}_opt_state_bytes(void);");
        let _ = writeln!(
            h,
            "int32_t fluxc_{name}_train_step(float *params, float *opt_state, const {xc} *x, const {tc} *target,\n\
             \x20                               int64_t batch, float *loss, void *scratch);"
        );
    }
    // The parameter block's tensors as an X-macro: X(name, byte offset, bytes), manifest order.
    let _ = writeln!(h, "\n/* The tensors of the parameter block: X(name, byte offset, bytes). */");
    let _ = write!(h, "#define FLUXC_{name}_TENSORS(X)");
    for (n, off, bytes) in tensors {
        let _ = write!(h, " \\\n    X(\"{n}\", {off}, {bytes})");
    }
    h.push('\n');
    let _ = writeln!(h, "#define FLUXC_{name}_TENSOR_COUNT {}", tensors.len());
    // Values per batch row of the input and output (their shapes are [B, ...]).
    for (what, t) in [("INPUT", x), ("OUTPUT", y)] {
        let per_row =
            t.shape.iter().skip(1).try_fold(1i64, |p, d| d.as_constant().and_then(|v| p.checked_mul(v)));
        if let (Some(n), true) = (per_row, t.shape.first().is_some_and(|d| d.as_constant().is_none())) {
            let _ = writeln!(h, "#define FLUXC_{name}_{what}_PER_ROW {n}");
        }
    }
    h.push_str("\n#ifdef __cplusplus\n}\n#endif\n\n");
    let _ = writeln!(h, "#endif /* {guard} */");
    h
}

/// A fresh working folder inside `out_dir`.
fn tempdir(out_dir: &Path) -> Result<PathBuf, CpuError> {
    for k in 0..1000u32 {
        let p = out_dir.join(format!(".fluxc-build-{}-{k}", std::process::id()));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(err(format!("creating a working folder in {}: {e}", out_dir.display()))),
        }
    }
    Err(err(format!("could not create a working folder in {}", out_dir.display())))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CpuError> {
    use std::io::Write as _;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(format!("writing {}: {e}", path.display()))
    })
}

/// Compiles the C file and links everything into `out_dir/libNAME.so` (via a temporary name and
/// a rename, so a failed link never leaves a torn library).
fn link(name: &str, work: &Path, object: &[u8], c: &str, out_dir: &Path) -> Result<PathBuf, CpuError> {
    let write = |file: &str, bytes: &[u8]| -> Result<PathBuf, CpuError> {
        let p = work.join(file);
        std::fs::write(&p, bytes).map_err(|e| err(format!("writing {}: {e}", p.display())))?;
        Ok(p)
    };
    let obj = write("loops.o", object)?;
    let csrc = write("model.c", c.as_bytes())?;
    let archive = write("libfluxc_kernels.a", KERNELS_ARCHIVE)?;
    let script = write("exports.map", exports(name).as_bytes())?;
    let tmp_lib = work.join(format!("lib{name}.so"));
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let output = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-march=x86-64-v3", "-o"])
        .arg(&tmp_lib)
        .arg(&csrc)
        .arg(&obj)
        .arg(&archive)
        .arg(format!("-Wl,--version-script={}", script.display()))
        .args([
            "-Wl,--gc-sections",
            "-Wl,--strip-debug",
            "-Wl,-z,noexecstack",
            "-lm",
            "-lpthread",
            "-ldl",
            "-lc",
        ])
        .output()
        .map_err(|e| {
            err(format!("could not run the C compiler `{}` to link the library: {e}", cc.to_string_lossy()))
        })?;
    if !output.status.success() {
        let text = String::from_utf8_lossy(&output.stderr);
        let first: Vec<&str> = text.lines().take(20).collect();
        return Err(err(format!("linking lib{name}.so failed:\n{}", first.join("\n"))));
    }
    let dest = out_dir.join(format!("lib{name}.so"));
    std::fs::rename(&tmp_lib, &dest).map_err(|e| err(format!("writing {}: {e}", dest.display())))?;
    Ok(dest)
}

/// The linker's version script: the model's functions are the library's only exports.
fn exports(name: &str) -> String {
    let fns =
        ["param_bytes", "scratch_bytes", "init", "forward", "set_threads", "opt_state_bytes", "train_step"];
    let list: Vec<String> = fns.iter().map(|f| format!("fluxc_{name}_{f};")).collect();
    format!("{{ global: {} local: *; }};\n", list.join(" "))
}
