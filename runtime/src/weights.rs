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

/// What a signature covers: the model, its architecture and the data's digest.
fn signed_message(metadata: &[(String, String)]) -> Result<Vec<u8>, String> {
    let get = |k: &str| metadata.iter().find(|(m, _)| m == k).map(|(_, v)| v.as_str());
    let digest = get("fluxc.sha256").ok_or("the file has no fluxc.sha256 digest to sign")?;
    Ok(format!(
        "fluxc-weights-v1\nmodel {}\nsignature {}\nsha256 {digest}\n",
        get("fluxc.model").unwrap_or(""),
        get("fluxc.signature").unwrap_or("")
    )
    .into_bytes())
}

fn unhex<const N: usize>(text: &str, what: &str) -> Result<[u8; N], String> {
    let t = text.trim();
    if t.len() != 2 * N || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{what} is not {N} bytes of hex"));
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(t.get(2 * i..2 * i + 2).unwrap_or("00"), 16)
            .map_err(|_| format!("{what} is not hex"))?;
    }
    Ok(out)
}

/// A new ed25519 key pair from the operating system's randomness: (secret hex, public hex).
pub fn keygen() -> Result<(String, String), String> {
    let mut seed = [0u8; 32];
    let mut f = std::fs::File::open("/dev/urandom").map_err(|e| format!("/dev/urandom: {e}"))?;
    std::io::Read::read_exact(&mut f, &mut seed).map_err(|e| format!("/dev/urandom: {e}"))?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    Ok((hex(&seed), hex(key.verifying_key().as_bytes())))
}

/// Signs the weights file at `path` in place (atomically), adding `fluxc.sig.ed25519` and
/// `fluxc.key.ed25519` (§11.4). The data digest is checked first.
pub fn sign(path: &Path, secret_hex: &str) -> Result<String, String> {
    let bytes = crate::npy::read_bounded(path)?;
    let mut file = safetensors::parse(&bytes)?;
    check_digest(&bytes, &file.metadata)?;
    let seed: [u8; 32] = unhex(secret_hex, "the secret key")?;
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    file.metadata.retain(|(k, _)| k != "fluxc.sig.ed25519" && k != "fluxc.key.ed25519");
    let message = signed_message(&file.metadata)?;
    let sig = ed25519_dalek::Signer::sign(&key, &message);
    let public = hex(key.verifying_key().as_bytes());
    file.metadata.push(("fluxc.sig.ed25519".into(), hex(&sig.to_bytes())));
    file.metadata.push(("fluxc.key.ed25519".into(), public.clone()));
    safetensors::write(path, &file)?;
    Ok(public)
}

fn check_digest(bytes: &[u8], metadata: &[(String, String)]) -> Result<(), String> {
    let Some(want) = metadata.iter().find(|(k, _)| k == "fluxc.sha256").map(|(_, v)| v) else {
        return Ok(());
    };
    let n = bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_le_bytes).unwrap_or(0);
    let data = usize::try_from(n).ok().and_then(|n| bytes.get(8 + n..)).unwrap_or_default();
    if &sha256(data) != want {
        return Err(
            "the data does not match its fluxc.sha256 digest: the file was modified or damaged".into()
        );
    }
    Ok(())
}

/// Reads a file of trusted public keys (hex, one per line; blank lines and `#` comments skipped).
pub fn trusted_keys(path: &Path) -> Result<Vec<[u8; 32]>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::npy::reason(&e))?;
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        keys.push(unhex::<32>(l, &format!("line {}", i + 1))?);
    }
    if keys.is_empty() {
        return Err("no public keys in the file".into());
    }
    Ok(keys)
}

/// Checks the digest and that the file is signed by one of `trusted`; returns the signer's key.
pub fn verify(path: &Path, trusted: &[[u8; 32]]) -> Result<String, String> {
    let bytes = crate::npy::read_bounded(path)?;
    let file = safetensors::parse(&bytes)?;
    check_digest(&bytes, &file.metadata)?;
    verify_metadata(&file.metadata, trusted)
}

fn verify_metadata(metadata: &[(String, String)], trusted: &[[u8; 32]]) -> Result<String, String> {
    let get = |k: &str| metadata.iter().find(|(m, _)| m == k).map(|(_, v)| v.as_str());
    let (Some(sig), Some(key)) = (get("fluxc.sig.ed25519"), get("fluxc.key.ed25519")) else {
        return Err("the file is not signed (no fluxc.sig.ed25519)".into());
    };
    let key_bytes: [u8; 32] = unhex(key, "fluxc.key.ed25519")?;
    if !trusted.contains(&key_bytes) {
        return Err(format!("the file is signed by key {key}, which is not among the trusted keys"));
    }
    let sig = ed25519_dalek::Signature::from_bytes(&unhex::<64>(sig, "fluxc.sig.ed25519")?);
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes)
        .map_err(|_| "fluxc.key.ed25519 is not a valid key")?;
    let others: Vec<(String, String)> = metadata
        .iter()
        .filter(|(k, _)| k != "fluxc.sig.ed25519" && k != "fluxc.key.ed25519")
        .cloned()
        .collect();
    vk.verify_strict(&signed_message(&others)?, &sig).map_err(|_| {
        "the signature does not match: the file was changed after signing, or signed by another key"
            .to_owned()
    })?;
    Ok(key.to_owned())
}

/// [`load`] that also requires a valid signature by one of `trusted`.
pub fn load_trusted(
    path: &Path,
    model: &str,
    slots: &[Slot],
    trusted: &[[u8; 32]],
) -> Result<Loaded, String> {
    let loaded = load(path, model, slots)?;
    verify_metadata(&loaded.metadata, trusted)?;
    Ok(loaded)
}

#[cfg(test)]
mod signing {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn sign_verify_and_reject() {
        let dir = std::env::temp_dir().join(format!("fluxc-sign-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.safetensors");
        let slots = vec![Slot { name: "w".into(), shape: vec![2] }];
        save(&p, "M", &slots, &[&[1.0, 2.0]], &[]).unwrap();
        let (secret, public) = keygen().unwrap();
        let (_, other) = keygen().unwrap();
        assert_eq!(sign(&p, &secret).unwrap(), public);
        let key: [u8; 32] = unhex(&public, "k").unwrap();
        let wrong: [u8; 32] = unhex(&other, "k").unwrap();
        assert_eq!(verify(&p, &[wrong, key]).unwrap(), public);
        assert!(verify(&p, &[wrong]).unwrap_err().contains("not among the trusted keys"));
        assert!(load_trusted(&p, "M", &slots, &[key]).is_ok());
        // Metadata changed after signing: the signature no longer matches.
        let mut f = safetensors::read(&p).unwrap();
        for (k, v) in f.metadata.iter_mut() {
            if k == "fluxc.model" {
                *v = "N".into();
            }
        }
        safetensors::write(&p, &f).unwrap();
        assert!(verify(&p, &[key]).unwrap_err().contains("signature does not match"));
        // An unsigned file.
        save(&p, "M", &slots, &[&[1.0, 2.0]], &[]).unwrap();
        assert!(verify(&p, &[key]).unwrap_err().contains("not signed"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
