//! `.npy` files (versions 1–3): little-endian `f4 f8 i4 i8 u1 b1`, C order. Never pickle,
//! never object arrays. The header is validated before anything is allocated from it.

use std::io::{Read as _, Write as _};
use std::path::Path;

use crate::limits::{MAX_NPY_HEADER_BYTES, MAX_RANK, MAX_TENSOR_FILE_BYTES};
use crate::tensor::{Dtype, Tensor, element_count};

pub fn read(path: &Path) -> Result<Tensor, String> {
    parse(&read_bounded(path)?)
}

/// Reads a whole file, refusing one larger than [`MAX_TENSOR_FILE_BYTES`].
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| reason(&e))?;
    let len = file.metadata().map_err(|e| reason(&e))?.len();
    if len > MAX_TENSOR_FILE_BYTES {
        return Err(format!("the file is {len} bytes; the limit is {MAX_TENSOR_FILE_BYTES}"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_TENSOR_FILE_BYTES).read_to_end(&mut bytes).map_err(|e| reason(&e))?;
    Ok(bytes)
}

pub fn reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            let text = e.to_string();
            text.split(" (os error").next().unwrap_or(&text).to_owned()
        }
    }
}

pub fn parse(bytes: &[u8]) -> Result<Tensor, String> {
    if bytes.get(..6) != Some(b"\x93NUMPY".as_slice()) {
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
    if hlen > MAX_NPY_HEADER_BYTES {
        return Err(format!("the header is {hlen} bytes; the limit is {MAX_NPY_HEADER_BYTES}"));
    }
    let header = bytes.get(start..start + hlen).ok_or("truncated header")?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}'"))?;
        let rest = header.get(at + key.len() + 2..)?;
        Some(rest.trim_start().strip_prefix(':')?.trim_start())
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
        if shape.len() > MAX_RANK {
            return Err(format!("more than {MAX_RANK} dimensions"));
        }
    }
    let dtype = match descr {
        "<f4" => Dtype::F32,
        "<f8" => Dtype::F64,
        "<i4" => Dtype::I32,
        "<i8" => Dtype::I64,
        "|u1" => Dtype::U8,
        "|b1" => Dtype::Bool,
        other => {
            return Err(format!(
                "unsupported dtype '{other}' (little-endian f4, f8, i4, i8, u1 or b1 only; never object arrays)"
            ));
        }
    };
    let count = element_count(&shape)?;
    let data_bytes = count.checked_mul(dtype.width()).ok_or("the shape's byte count overflows")?;
    let body = bytes.get(start + hlen..).unwrap_or_default();
    if body.len() != data_bytes {
        return Err(format!("the header declares {data_bytes} bytes of data, the file holds {}", body.len()));
    }
    let values = body.chunks_exact(dtype.width()).map(|b| dtype.decode(b)).collect::<Result<Vec<_>, _>>()?;
    Ok(Tensor { dtype, shape, values })
}

/// Writes a `.npy` file (version 1.0) atomically: a temporary file in the same folder, synced,
/// then renamed (a crash never leaves a torn file).
pub fn write(path: &Path, t: &Tensor) -> Result<(), String> {
    let descr = match t.dtype {
        Dtype::F32 => "<f4",
        Dtype::F64 => "<f8",
        Dtype::I32 => "<i4",
        Dtype::I64 => "<i8",
        Dtype::U8 => "|u1",
        Dtype::Bool => "|b1",
    };
    let dims: Vec<String> = t.shape.iter().map(ToString::to_string).collect();
    let shape =
        if dims.len() == 1 { format!("({},)", dims.join("")) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&u16::try_from(header.len()).map_err(|_| "header too long")?.to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in &t.values {
        t.dtype.encode(*v, &mut bytes);
    }
    write_atomically(path, &bytes)
}

/// A temporary file beside `path`, synced, then renamed over it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| reason(&e))?;
    f.write_all(bytes).map_err(|e| reason(&e))?;
    f.sync_all().map_err(|e| reason(&e))?;
    std::fs::rename(&tmp, path).map_err(|e| reason(&e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let dir = std::env::temp_dir().join(format!("fluxc-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        let t = Tensor { dtype: Dtype::F32, shape: vec![2, 3], values: vec![1.0, 2.5, -3.0, 4.0, 5.0, 6.0] };
        write(&p, &t).unwrap();
        assert_eq!(read(&p).unwrap(), t);
        let bytes = std::fs::read(&p).unwrap();
        assert!(parse(&bytes[..bytes.len() - 1]).unwrap_err().contains("declares"));
        assert!(parse(b"hello").unwrap_err().contains("magic"));
        let obj = b"\x93NUMPY\x01\x00\x20\x00{'descr': '|O', 'shape': (1,), }  \n";
        assert!(parse(obj).unwrap_err().contains("object"));
        let huge =
            b"\x93NUMPY\x01\x00\x40\x00{'descr': '<f4', 'shape': (99999999999, 99999999999, 9999), }\n";
        assert!(parse(huge).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
