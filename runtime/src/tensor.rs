//! Host tensors: a dtype, a shape and the values (held as f64, exactly for every dtype the
//! runtime reads except 64-bit integers beyond 2^53, which are rejected).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F64,
    I32,
    I64,
    U8,
    Bool,
}

impl Dtype {
    /// The name safetensors uses (and fluxc's manifests, §8).
    pub fn safetensors_name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::I32 => "I32",
            Dtype::I64 => "I64",
            Dtype::U8 => "U8",
            Dtype::Bool => "BOOL",
        }
    }

    pub fn from_safetensors(name: &str) -> Option<Dtype> {
        Some(match name {
            "F32" => Dtype::F32,
            "F64" => Dtype::F64,
            "I32" => Dtype::I32,
            "I64" => Dtype::I64,
            "U8" => Dtype::U8,
            "BOOL" => Dtype::Bool,
            _ => return None,
        })
    }

    pub fn width(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::U8 | Dtype::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Dtype::F32 | Dtype::F64)
    }

    /// One element from its little-endian bytes (`bytes.len() == self.width()`).
    pub fn decode(self, bytes: &[u8]) -> Result<f64, String> {
        let arr4 = || <[u8; 4]>::try_from(bytes).map_err(|_| "truncated element".to_owned());
        let arr8 = || <[u8; 8]>::try_from(bytes).map_err(|_| "truncated element".to_owned());
        Ok(match self {
            Dtype::F32 => f64::from(f32::from_le_bytes(arr4()?)),
            Dtype::F64 => f64::from_le_bytes(arr8()?),
            Dtype::I32 => f64::from(i32::from_le_bytes(arr4()?)),
            Dtype::I64 => {
                let v = i64::from_le_bytes(arr8()?);
                if v.unsigned_abs() > (1 << 53) {
                    return Err(format!("the integer {v} is too large to hold exactly"));
                }
                v as f64
            }
            Dtype::U8 => f64::from(bytes.first().copied().ok_or("truncated element")?),
            Dtype::Bool => match bytes.first() {
                Some(0) => 0.0,
                Some(1) => 1.0,
                _ => return Err("a boolean byte that is neither 0 nor 1".into()),
            },
        })
    }

    /// Appends one element in little-endian bytes.
    pub fn encode(self, v: f64, out: &mut Vec<u8>) {
        match self {
            Dtype::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            Dtype::F64 => out.extend_from_slice(&v.to_le_bytes()),
            Dtype::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
            Dtype::I64 => out.extend_from_slice(&(v as i64).to_le_bytes()),
            Dtype::U8 => out.push(v as u8),
            Dtype::Bool => out.push(u8::from(v != 0.0)),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

impl Tensor {
    /// Rejects NaN and infinities (§12.13: non-finite inputs are rejected at load).
    pub fn check_finite(&self) -> Result<(), String> {
        match self.values.iter().position(|v| !v.is_finite()) {
            Some(i) => Err(format!(
                "element {i} is not finite ({})",
                self.values.get(i).copied().unwrap_or(f64::NAN)
            )),
            None => Ok(()),
        }
    }
}

/// The element count of a shape, or an error if it overflows or passes
/// [`MAX_TENSOR_ELEMENTS`](crate::limits::MAX_TENSOR_ELEMENTS).
pub fn element_count(shape: &[usize]) -> Result<usize, String> {
    let n = shape
        .iter()
        .try_fold(1usize, |p, d| p.checked_mul(*d))
        .ok_or_else(|| "the shape's element count overflows".to_owned())?;
    if n > crate::limits::MAX_TENSOR_ELEMENTS {
        return Err(format!(
            "the shape {shape:?} holds {n} values; the limit is {}",
            crate::limits::MAX_TENSOR_ELEMENTS
        ));
    }
    Ok(n)
}
