//! The I/O handle scripts run with (`fluxc run`): printing to stdout, `.npy` tensors read and
//! written relative to the script's folder (validated before anything is allocated from a
//! header), text files, the clock and the environment.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use fluxc_core::interp::Array;
use fluxc_core::ir::{DType, TensorTy};
use fluxc_core::lower::{Io, ParamSpec};

/// Largest `.npy` file a script may load (elements are read as f64).
pub const MAX_NPY_BYTES: u64 = 1 << 30;
/// Largest `.npy` header.
pub const MAX_NPY_HEADER: usize = 64 * 1024;

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

impl Io for ScriptIo {
    fn print(&mut self, line: &str) {
        let _ = writeln!(self.out, "{line}");
    }

    fn load(&mut self, path: &str) -> Result<Array, String> {
        if !path.ends_with(".npy") {
            return Err(format!(
                "cannot load \"{path}\": only .npy files can be loaded into a tensor so far"
            ));
        }
        read_npy(&self.path(path)).map_err(|e| format!("cannot load \"{path}\": {e}"))
    }

    fn save(&mut self, path: &str, value: &Array, ty: &TensorTy) -> Result<(), String> {
        if !path.ends_with(".npy") {
            return Err(format!("cannot save \"{path}\": only .npy files can be saved so far"));
        }
        write_npy(&self.path(path), value, ty.dtype).map_err(|e| format!("cannot save \"{path}\": {e}"))
    }

    fn read_text(&mut self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(self.path(path))
            .map_err(|e| format!("cannot read \"{path}\": {}", reason(&e)))
    }

    fn write_text(&mut self, path: &str, text: &str) -> Result<(), String> {
        std::fs::write(self.path(path), text).map_err(|e| format!("cannot write \"{path}\": {}", reason(&e)))
    }

    fn now(&mut self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn env(&mut self, name: &str) -> String {
        std::env::var(name).unwrap_or_default()
    }

    fn load_weights(&mut self, path: &str, params: &[ParamSpec]) -> Result<Vec<Array>, String> {
        let _ = params;
        Err(format!("cannot load \"{path}\": loading trained weights (safetensors) is not built yet"))
    }
}

fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// Reads a `.npy` file (versions 1–3, little-endian `f4 f8 i4 i8 u1 b1`, C order).
pub fn read_npy(path: &Path) -> Result<Array, String> {
    let file = std::fs::File::open(path).map_err(|e| reason(&e))?;
    let len = file.metadata().map_err(|e| reason(&e))?.len();
    if len > MAX_NPY_BYTES {
        return Err(format!("the file is {len} bytes; the limit is {MAX_NPY_BYTES}"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_NPY_BYTES).read_to_end(&mut bytes).map_err(|e| reason(&e))?;
    parse_npy(&bytes)
}

pub fn parse_npy(bytes: &[u8]) -> Result<Array, String> {
    let magic = bytes.get(..6).ok_or("the file is too short to be .npy")?;
    if magic != b"\x93NUMPY" {
        return Err("not a .npy file (bad magic)".into());
    }
    let major = *bytes.get(6).ok_or("truncated header")?;
    let (hlen, start) = match major {
        1 => {
            let b: [u8; 2] = bytes.get(8..10).and_then(|b| b.try_into().ok()).ok_or("truncated header")?;
            (usize::from(u16::from_le_bytes(b)), 10)
        }
        2 | 3 => {
            let b: [u8; 4] = bytes.get(8..12).and_then(|b| b.try_into().ok()).ok_or("truncated header")?;
            (u32::from_le_bytes(b) as usize, 12)
        }
        v => return Err(format!("unsupported .npy version {v}")),
    };
    if hlen > MAX_NPY_HEADER {
        return Err(format!("the header is {hlen} bytes; the limit is {MAX_NPY_HEADER}"));
    }
    let header = bytes.get(start..start + hlen).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))?;
        let rest = header.get(at + key.len() + 2..)?;
        let rest = rest.trim_start().strip_prefix(':')?.trim_start();
        Some(rest)
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .ok_or("the header has no 'descr'")?;
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        return Err("Fortran-order arrays are not supported".into());
    }
    let shape_text = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .ok_or("the header has no 'shape'")?;
    let mut shape = Vec::new();
    for part in shape_text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        shape.push(part.parse::<usize>().map_err(|_| format!("bad dimension `{part}` in the shape"))?);
    }
    let (width, read): (usize, fn(&[u8]) -> f64) = match descr {
        "<f4" => (4, |b| b.try_into().map_or(0.0, |x| f64::from(f32::from_le_bytes(x)))),
        "<f8" => (8, |b| b.try_into().map_or(0.0, f64::from_le_bytes)),
        "<i4" => (4, |b| b.try_into().map_or(0.0, |x| f64::from(i32::from_le_bytes(x)))),
        "<i8" => (8, |b| b.try_into().map_or(0.0, |x| i64::from_le_bytes(x) as f64)),
        "|u1" => (1, |b| f64::from(b.first().copied().unwrap_or(0))),
        "|b1" => (1, |b| f64::from(u8::from(b.first().copied().unwrap_or(0) != 0))),
        other => {
            return Err(format!(
                "unsupported dtype '{other}' (little-endian f4, f8, i4, i8, u1 or b1 only; never object arrays)"
            ));
        }
    };
    let count = shape
        .iter()
        .try_fold(1usize, |p, d| p.checked_mul(*d))
        .ok_or("the shape's element count overflows")?;
    let data_bytes = count.checked_mul(width).ok_or("the shape's byte count overflows")?;
    let body = bytes.get(start + hlen..).unwrap_or_default();
    if body.len() != data_bytes {
        return Err(format!("the header declares {data_bytes} bytes of data, the file holds {}", body.len()));
    }
    let data: Vec<f64> = body.chunks_exact(width).map(read).collect();
    if data.iter().any(|v| !v.is_finite()) {
        return Err("the array holds NaN or infinite values".into());
    }
    Ok(Array::new(shape, data))
}

/// Writes a `.npy` file (version 1.0) of the tensor's dtype, atomically (temp file, rename).
pub fn write_npy(path: &Path, a: &Array, dtype: DType) -> Result<(), String> {
    let (descr, width) = match dtype {
        DType::F32 => ("<f4", 4),
        DType::I32 => ("<i4", 4),
        DType::Bool => ("|b1", 1),
    };
    let shape: Vec<String> = a.shape.iter().map(ToString::to_string).collect();
    let shape =
        if shape.len() == 1 { format!("({},)", shape.join("")) } else { format!("({})", shape.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&u16::try_from(header.len()).map_err(|_| "header too long")?.to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.reserve(a.data.len() * width);
    for v in &a.data {
        match dtype {
            DType::F32 => bytes.extend_from_slice(&(*v as f32).to_le_bytes()),
            DType::I32 => bytes.extend_from_slice(&(*v as i32).to_le_bytes()),
            DType::Bool => bytes.push(u8::from(*v != 0.0)),
        }
    }
    let tmp = path.with_extension("npy.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| reason(&e))?;
    f.write_all(&bytes).map_err(|e| reason(&e))?;
    f.sync_all().map_err(|e| reason(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| reason(&e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn npy_round_trip_and_rejections() {
        let dir = std::env::temp_dir().join(format!("fluxc-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        let a = Array::new(vec![2, 3], vec![1.0, 2.5, -3.0, 4.0, 5.0, 6.0]);
        write_npy(&p, &a, DType::F32).unwrap();
        assert_eq!(read_npy(&p).unwrap(), a);
        let bytes = std::fs::read(&p).unwrap();
        assert!(parse_npy(&bytes[..bytes.len() - 1]).unwrap_err().contains("declares"));
        assert!(parse_npy(b"hello").unwrap_err().contains("short") || parse_npy(b"hello").is_err());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(parse_npy(&bad).unwrap_err().contains("magic"));
        let obj = b"\x93NUMPY\x01\x00\x20\x00{'descr': '|O', 'shape': (1,), }  \n";
        assert!(parse_npy(obj).unwrap_err().contains("object"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
