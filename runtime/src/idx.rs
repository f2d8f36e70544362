//! IDX files (the MNIST format): a 4-byte magic `0 0 TYPE RANK`, RANK big-endian u32 sizes, then
//! the values big-endian in row-major order. Every size is checked against the file's length
//! before anything is allocated from it.

use std::path::Path;

use crate::limits::{MAX_RANK, MAX_TENSOR_FILE_BYTES};
use crate::tensor::{Dtype, Tensor};

/// Reads and validates an IDX file.
pub fn read(path: &Path) -> Result<Tensor, String> {
    let bytes = crate::npy::read_bounded(path)?;
    parse(&bytes)
}

/// Parses an IDX file's bytes.
pub fn parse(bytes: &[u8]) -> Result<Tensor, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    let Some(&[z0, z1, code, rank]) = bytes.get(..4).and_then(|m| <&[u8; 4]>::try_from(m).ok()) else {
        return Err("the file is shorter than an IDX header (4 bytes)".into());
    };
    if z0 != 0 || z1 != 0 {
        return Err(format!("not an IDX file: the magic starts {z0:#04x} {z1:#04x}, not 0x00 0x00"));
    }
    // (dtype as read, bytes per value)
    let (kind, width) = match code {
        0x08 => ("u8", 1),
        0x09 => ("i8", 1),
        0x0B => ("i16", 2),
        0x0C => ("i32", 4),
        0x0D => ("f32", 4),
        0x0E => ("f64", 8),
        other => return Err(format!("unknown IDX value type {other:#04x}")),
    };
    let rank = usize::from(rank);
    if rank == 0 || rank > MAX_RANK {
        return Err(format!("an IDX rank of {rank} (1 to {MAX_RANK} are read)"));
    }
    let header = 4 + 4 * rank;
    let dims = bytes
        .get(4..header)
        .ok_or_else(|| format!("the header declares {rank} sizes but the file ends first"))?;
    let mut shape = Vec::with_capacity(rank);
    let mut count: u64 = 1;
    for c in dims.chunks_exact(4) {
        let d = u32::from_be_bytes(be::<4>(c));
        count = count.checked_mul(u64::from(d)).ok_or("the declared sizes overflow")?;
        shape.push(d as usize);
    }
    if count > crate::limits::MAX_TENSOR_ELEMENTS as u64 {
        return Err(format!(
            "the declared shape {shape:?} holds {count} values; the limit is {}",
            crate::limits::MAX_TENSOR_ELEMENTS
        ));
    }
    let data_bytes = count.checked_mul(width as u64).ok_or("the declared sizes overflow")?;
    if data_bytes > MAX_TENSOR_FILE_BYTES {
        return Err(format!("the declared shape {shape:?} holds {data_bytes} bytes, more than the limit"));
    }
    let have = (bytes.len() - header) as u64;
    if have != data_bytes {
        let what = if have < data_bytes { "truncated" } else { "longer than its header says" };
        return Err(format!(
            "{what}: the shape {shape:?} of {kind} needs {data_bytes} bytes of values, the file has {have}"
        ));
    }
    let data = bytes.get(header..).unwrap_or_default();
    let values: Vec<f64> = data
        .chunks_exact(width)
        .map(|c| match code {
            0x08 => f64::from(be::<1>(c)[0]),
            0x09 => f64::from(i8::from_be_bytes(be::<1>(c))),
            0x0B => f64::from(i16::from_be_bytes(be::<2>(c))),
            0x0C => f64::from(i32::from_be_bytes(be::<4>(c))),
            0x0D => f64::from(f32::from_be_bytes(be::<4>(c))),
            _ => f64::from_be_bytes(be::<8>(c)),
        })
        .collect();
    let dtype = match code {
        0x0D | 0x0E => Dtype::F32,
        0x08 => Dtype::U8,
        _ => Dtype::I32,
    };
    Ok(Tensor { dtype, shape, values })
}

/// The first `N` bytes of a chunk (chunks are exactly that long).
fn be<const N: usize>(c: &[u8]) -> [u8; N] {
    c.get(..N).and_then(|b| <[u8; N]>::try_from(b).ok()).unwrap_or([0; N])
}

/// Writes `t` (integers as u8 when they fit, else i32; floats as f32) as an IDX file.
pub fn encode(t: &Tensor) -> Result<Vec<u8>, String> {
    if t.shape.is_empty() || t.shape.len() > MAX_RANK {
        return Err("an IDX file holds a tensor of rank 1 or more".into());
    }
    let ints = !t.dtype.is_float();
    let bytes_u8 = ints && t.values.iter().all(|v| (0.0..=255.0).contains(v));
    let code: u8 = if bytes_u8 {
        0x08
    } else if ints {
        0x0C
    } else {
        0x0D
    };
    let mut out = vec![0, 0, code, t.shape.len() as u8];
    for d in &t.shape {
        out.extend(u32::try_from(*d).map_err(|_| "a size above 2^32")?.to_be_bytes());
    }
    for v in &t.values {
        match code {
            0x08 => out.push(*v as u8),
            0x0C => out.extend((*v as i32).to_be_bytes()),
            _ => out.extend((*v as f32).to_be_bytes()),
        }
    }
    Ok(out)
}
