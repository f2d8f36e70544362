//! Weights files (§8, §11.2, §12.5): safetensors with the `fluxc.*` metadata — the model's name,
//! the architecture's signature, the SHA-256 of the data section, the format version — written
//! atomically and checked on load (digest, signature when present, every name, shape and dtype,
//! with a per-tensor diff when they do not fit).

use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::safetensors::{self, SafeTensors};
use crate::tensor::{Dtype, Tensor};

/// One tensor of a model's parameter block: its name and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    pub shape: Vec<usize>,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The architecture's signature: the SHA-256 of every tensor's `name:dtype:shape` line.
pub fn signature(slots: &[Slot]) -> String {
    let mut h = Sha256::new();
    for s in slots {
        let dims: Vec<String> = s.shape.iter().map(ToString::to_string).collect();
        h.update(format!("{}:F32:[{}]\n", s.name, dims.join(",")).as_bytes());
    }
    hex(&h.finalize())
}

pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Writes `values` (one per slot, in order) as `path` with the fluxc metadata and `extra`.
pub fn save(
    path: &Path,
    model: &str,
    slots: &[Slot],
    values: &[&[f32]],
    extra: &[(String, String)],
) -> Result<(), String> {
    let tensors: Vec<(String, Tensor)> = slots
        .iter()
        .zip(values)
        .map(|(s, v)| {
            (
                s.name.clone(),
                Tensor {
                    dtype: Dtype::F32,
                    shape: s.shape.clone(),
                    values: v.iter().map(|x| f64::from(*x)).collect(),
                },
            )
        })
        .collect();
    let digest = sha256(&safetensors::data_section(&tensors));
    let mut metadata = vec![
        ("fluxc.format".to_owned(), "1".to_owned()),
        ("fluxc.model".to_owned(), model.to_owned()),
        ("fluxc.signature".to_owned(), signature(slots)),
        ("fluxc.sha256".to_owned(), digest),
    ];
    metadata.extend(extra.iter().cloned());
    safetensors::write(path, &SafeTensors { tensors, metadata })
}

/// A loaded weights file: the values by slot, and its metadata.
pub struct Loaded {
    pub values: Vec<Vec<f32>>,
    pub metadata: Vec<(String, String)>,
}

impl Loaded {
    pub fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Reads `path` and checks it against the model: the digest and the fluxc metadata when present
/// (§10.14: files exported elsewhere may lack them), then every slot by name, shape and dtype.
pub fn load(path: &Path, model: &str, slots: &[Slot]) -> Result<Loaded, String> {
    let bytes = crate::npy::read_bounded(path)?;
    let file = safetensors::parse(&bytes)?;
    let meta = |k: &str| file.metadata.iter().find(|(m, _)| m == k).map(|(_, v)| v.clone());
    if let Some(want) = meta("fluxc.sha256") {
        let n = bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_le_bytes).unwrap_or(0);
        let data = usize::try_from(n).ok().and_then(|n| bytes.get(8 + n..)).unwrap_or_default();
        if sha256(data) != want {
            return Err(
                "the data does not match its fluxc.sha256 digest: the file was modified or damaged".into()
            );
        }
    }
    if let Some(m) = meta("fluxc.model")
        && m != model
    {
        return Err(format!("these are weights of model `{m}`, not `{model}`"));
    }
    let mut problems = Vec::new();
    let mut values = Vec::new();
    for s in slots {
        match file.get(&s.name) {
            None => problems.push(format!("missing `{}` {:?}", s.name, s.shape)),
            Some(t) if t.shape != s.shape => {
                problems.push(format!("`{}` has shape {:?}, the model's is {:?}", s.name, t.shape, s.shape))
            }
            Some(t) if t.dtype != Dtype::F32 => {
                problems.push(format!("`{}` is {}, the model's is F32", s.name, t.dtype.safetensors_name()))
            }
            Some(t) => {
                if let Err(e) = t.check_finite() {
                    problems.push(format!("`{}`: {e}", s.name));
                }
                values.push(t.values.iter().map(|v| *v as f32).collect());
            }
        }
    }
    for (name, _) in &file.tensors {
        if !slots.iter().any(|s| &s.name == name) {
            problems.push(format!("unexpected `{name}`"));
        }
    }
    if !problems.is_empty() {
        return Err(format!("the weights do not fit model `{model}`: {}", problems.join("; ")));
    }
    if let Some(sig) = meta("fluxc.signature")
        && sig != signature(slots)
    {
        return Err("the fluxc.signature does not match the model's architecture".into());
    }
    Ok(Loaded { values, metadata: file.metadata })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn round_trip_digest_and_diff() {
        let dir = std::env::temp_dir().join(format!("fluxc-weights-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.safetensors");
        let slots =
            vec![Slot { name: "w".into(), shape: vec![2, 2] }, Slot { name: "b".into(), shape: vec![2] }];
        let (w, b) = ([1.0f32, 2.0, 3.0, 4.0], [0.5f32, -0.5]);
        save(&p, "M", &slots, &[&w, &b], &[]).unwrap();
        let l = load(&p, "M", &slots).unwrap();
        assert_eq!(l.values, vec![w.to_vec(), b.to_vec()]);
        assert_eq!(l.meta("fluxc.format"), Some("1"));
        // Tampered data: the digest catches it.
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        std::fs::write(&p, &bytes).unwrap();
        assert!(load(&p, "M", &slots).err().unwrap().contains("digest"));
        // Another model's shapes: a per-tensor diff.
        save(&p, "M", &slots, &[&w, &b], &[]).unwrap();
        let other =
            vec![Slot { name: "w".into(), shape: vec![4] }, Slot { name: "c".into(), shape: vec![2] }];
        let e = load(&p, "M", &other).err().unwrap();
        assert!(
            e.contains("`w` has shape [2, 2]") && e.contains("missing `c`") && e.contains("unexpected `b`"),
            "{e}"
        );
        assert!(load(&p, "N", &slots).err().unwrap().contains("model `M`"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
