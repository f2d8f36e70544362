//! The I/O handle scripts run with (`fluxc run`): printing to stdout; `.npy` and `.safetensors`
//! tensors read and written relative to the script's folder through the runtime's validating
//! readers, each checked against the type the script declares; trained weights for
//! `load[MODEL](path)` checked name by name; text files, the clock and the environment.

use std::path::{Path, PathBuf};
use std::time::Instant;

use fluxc_core::interp::Array;
use fluxc_core::ir::{DType, TensorTy};
use fluxc_core::lower::{Io, ParamSpec};
use fluxc_runtime::safetensors::{self, SafeTensors};
use fluxc_runtime::{Dtype, Tensor, npy};

pub struct ScriptIo {
    folder: PathBuf,
    start: Instant,
    pub out: Box<dyn std::io::Write + Send>,
}

impl ScriptIo {
    pub fn new(script: &Path) -> ScriptIo {
        let folder = match script.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        ScriptIo { folder, start: Instant::now(), out: Box::new(std::io::stdout()) }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.folder.join(p)
    }
}

/// The concrete shape of a declared type (scripts have no free dimension).
fn concrete(t: &TensorTy) -> Option<Vec<usize>> {
    t.shape.iter().map(|d| d.as_constant().and_then(|c| usize::try_from(c).ok())).collect()
}

/// A tensor from a file against the declared element type and shape.
pub fn accept(t: Tensor, want: &TensorTy, what: &str) -> Result<Array, String> {
    let fits = match want.dtype {
        DType::F32 => t.dtype.is_float(),
        DType::I32 => matches!(t.dtype, Dtype::I32 | Dtype::I64 | Dtype::U8),
        DType::Bool => t.dtype == Dtype::Bool,
    };
    if !fits {
        return Err(format!(
            "{what} holds {} values, but the program declares {want}",
            t.dtype.safetensors_name()
        ));
    }
    if Some(&t.shape) != concrete(want).as_ref() {
        return Err(format!("{what} has shape {:?}, but the program declares {want}", t.shape));
    }
    if t.dtype.is_float() {
        t.check_finite().map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(Array::new(t.shape, t.values))
}

fn runtime_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::I32 => Dtype::I32,
        DType::Bool => Dtype::Bool,
    }
}

impl Io for ScriptIo {
    fn print(&mut self, line: &str) {
        let _ = writeln!(self.out, "{line}");
    }

    fn load(&mut self, path: &str, want: &TensorTy) -> Result<Array, String> {
        let full = self.path(path);
        let what = format!("\"{path}\"");
        if path.ends_with(".safetensors") {
            let file = safetensors::read(&full).map_err(|e| format!("cannot load {what}: {e}"))?;
            let mut tensors = file.tensors.into_iter();
            return match (tensors.next(), tensors.next()) {
                (Some((_, t)), None) => accept(t, want, &what),
                (None, _) => Err(format!("cannot load {what}: the file holds no tensor")),
                (Some(_), Some(_)) => Err(format!(
                    "cannot load {what}: the file holds several tensors; `load[T]` reads a file of one"
                )),
            };
        }
        if !path.ends_with(".npy") {
            return Err(format!("cannot load {what}: only .npy and .safetensors files hold tensors"));
        }
        let t = npy::read(&full).map_err(|e| format!("cannot load {what}: {e}"))?;
        accept(t, want, &what)
    }

    fn save(&mut self, path: &str, value: &Array, ty: &TensorTy) -> Result<(), String> {
        let t =
            Tensor { dtype: runtime_dtype(ty.dtype), shape: value.shape.clone(), values: value.data.clone() };
        let full = self.path(path);
        let result = if path.ends_with(".safetensors") {
            safetensors::write(
                &full,
                &SafeTensors { tensors: vec![("tensor".into(), t)], metadata: Vec::new() },
            )
        } else if path.ends_with(".npy") {
            npy::write(&full, &t)
        } else {
            Err("only .npy and .safetensors files hold tensors".into())
        };
        result.map_err(|e| format!("cannot save \"{path}\": {e}"))
    }

    fn read_text(&mut self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(self.path(path))
            .map_err(|e| format!("cannot read \"{path}\": {}", npy::reason(&e)))
    }

    fn write_text(&mut self, path: &str, text: &str) -> Result<(), String> {
        npy::write_atomically(&self.path(path), text.as_bytes())
            .map_err(|e| format!("cannot write \"{path}\": {e}"))
    }

    fn now(&mut self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn env(&mut self, name: &str) -> String {
        std::env::var(name).unwrap_or_default()
    }

    /// Trained weights: every parameter by name with its shape and dtype; a per-tensor diff
    /// (missing, unexpected, wrong shape) when they do not match (§8). Digests and signatures
    /// are checked by the weights loader of the training runtime.
    /// Scripts run on the JIT (falling back to the interpreter where it cannot).
    fn evaluate(
        &mut self,
        g: &fluxc_core::ir::Graph,
        inputs: &[Array],
        run: &fluxc_core::interp::Run,
        vals: &mut Vec<Array>,
    ) -> Result<(), fluxc_core::interp::EvalError> {
        crate::jit_eval::evaluate(g, inputs, run, vals)
    }

    fn load_weights(&mut self, path: &str, params: &[ParamSpec]) -> Result<Vec<Array>, String> {
        let file = safetensors::read(&self.path(path))
            .map_err(|e| format!("cannot load weights \"{path}\": {e}"))?;
        let mut problems = Vec::new();
        let mut out = Vec::new();
        for p in params {
            match file.get(&p.name) {
                None => problems.push(format!("missing `{}` ({})", p.name, p.ty)),
                Some(t) => match accept(t.clone(), &p.ty, &format!("`{}`", p.name)) {
                    Ok(a) => out.push(a),
                    Err(e) => problems.push(e),
                },
            }
        }
        for (name, _) in &file.tensors {
            if !params.iter().any(|p| &p.name == name) {
                problems.push(format!("unexpected `{name}`"));
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(format!("the weights \"{path}\" do not fit the model: {}", problems.join("; ")))
        }
    }
}

use std::io::Write as _;
