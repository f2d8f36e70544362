//! `.safetensors` files: an 8-byte little-endian header length, a JSON header, the data. Read
//! strictly (the reference reader accepts some of these silently): duplicate names, unknown
//! dtypes, sizes that disagree with shapes, overlapping or gapped offsets, trailing bytes and
//! non-string metadata are all rejected, before any tensor is allocated.

use std::fmt;
use std::path::Path;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::limits::{MAX_RANK, MAX_SAFETENSORS_HEADER_BYTES, MAX_SAFETENSORS_TENSORS};
use crate::npy::{read_bounded, write_atomically};
use crate::tensor::{Dtype, Tensor, element_count};

#[derive(Clone, Debug, PartialEq)]
pub struct SafeTensors {
    /// In header order.
    pub tensors: Vec<(String, Tensor)>,
    pub metadata: Vec<(String, String)>,
}

impl SafeTensors {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

pub fn read(path: &Path) -> Result<SafeTensors, String> {
    parse(&read_bounded(path)?)
}

/// A JSON object's entries in order, duplicates kept (so they can be refused).
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Entries, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    out.push((k, v));
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

pub fn parse(bytes: &[u8]) -> Result<SafeTensors, String> {
    let len: [u8; 8] =
        bytes.get(..8).and_then(|b| b.try_into().ok()).ok_or("the file is too short to be safetensors")?;
    let n = u64::from_le_bytes(len);
    if n > MAX_SAFETENSORS_HEADER_BYTES {
        return Err(format!("the header is {n} bytes; the limit is {MAX_SAFETENSORS_HEADER_BYTES}"));
    }
    let n = usize::try_from(n).map_err(|_| "the header length overflows")?;
    let header = bytes.get(8..8 + n).ok_or("the header runs past the end of the file")?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not UTF-8")?;
    let Entries(entries) =
        serde_json::from_str(header).map_err(|e| format!("the header is not a JSON object: {e}"))?;
    if entries.len() > MAX_SAFETENSORS_TENSORS + 1 {
        return Err(format!("more than {MAX_SAFETENSORS_TENSORS} tensors"));
    }
    let data = bytes.get(8 + n..).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    let mut metadata = Vec::new();
    let mut specs: Vec<(String, Dtype, Vec<usize>, usize, usize)> = Vec::new();
    for (name, v) in entries {
        if !seen.insert(name.clone()) {
            return Err(format!("the name \"{name}\" appears twice"));
        }
        if name == "__metadata__" {
            let Value::Object(m) = v else { return Err("__metadata__ is not an object".into()) };
            for (k, v) in m {
                let Value::String(s) = v else { return Err(format!("metadata \"{k}\" is not a string")) };
                metadata.push((k, s));
            }
            continue;
        }
        let bad = |what: &str| format!("tensor \"{name}\": {what}");
        let Value::Object(o) = v else { return Err(bad("its entry is not an object")) };
        let dtype_name = o.get("dtype").and_then(Value::as_str).ok_or_else(|| bad("no dtype"))?;
        let dtype = Dtype::from_safetensors(dtype_name)
            .ok_or_else(|| bad(&format!("unsupported dtype {dtype_name}")))?;
        let shape: Vec<usize> = o
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no shape"))?
            .iter()
            .map(|d| {
                d.as_u64()
                    .and_then(|d| usize::try_from(d).ok())
                    .ok_or_else(|| bad("a dimension is not a natural number"))
            })
            .collect::<Result<_, _>>()?;
        if shape.len() > MAX_RANK {
            return Err(bad(&format!("more than {MAX_RANK} dimensions")));
        }
        let offsets =
            o.get("data_offsets").and_then(Value::as_array).ok_or_else(|| bad("no data_offsets"))?;
        let [begin, end] = offsets.as_slice() else { return Err(bad("data_offsets is not [begin, end]")) };
        let (begin, end) = (
            begin.as_u64().and_then(|v| usize::try_from(v).ok()).ok_or_else(|| bad("a bad offset"))?,
            end.as_u64().and_then(|v| usize::try_from(v).ok()).ok_or_else(|| bad("a bad offset"))?,
        );
        let want = element_count(&shape)
            .map_err(|e| bad(&e))?
            .checked_mul(dtype.width())
            .ok_or_else(|| bad("its size overflows"))?;
        if end < begin || end - begin != want {
            return Err(bad(&format!(
                "its shape {shape:?} of {dtype_name} needs {want} bytes, its offsets give {}",
                end.saturating_sub(begin)
            )));
        }
        if end > data.len() {
            return Err(bad("its data runs past the end of the file"));
        }
        specs.push((name, dtype, shape, begin, end));
    }
    // The data section is exactly the tensors, back to back: no gaps, overlaps or trailing bytes.
    let mut spans: Vec<(usize, usize, &str)> =
        specs.iter().map(|(n, _, _, b, e)| (*b, *e, n.as_str())).collect();
    spans.sort_unstable();
    let mut at = 0;
    for (b, e, name) in &spans {
        if *b != at {
            return Err(if *b < at {
                format!("tensor \"{name}\" overlaps another")
            } else {
                format!("a gap of {} bytes before tensor \"{name}\"", b - at)
            });
        }
        at = *e;
    }
    if at != data.len() {
        return Err(format!("{} bytes after the last tensor", data.len() - at));
    }
    let total: usize = specs.iter().map(|(_, d, _, b, e)| (e - b) / d.width().max(1)).sum();
    if total > crate::limits::MAX_TENSOR_ELEMENTS {
        return Err(format!(
            "the file holds {total} values; the limit is {}",
            crate::limits::MAX_TENSOR_ELEMENTS
        ));
    }
    let mut tensors = Vec::with_capacity(specs.len());
    for (name, dtype, shape, b, e) in specs {
        let raw = data.get(b..e).unwrap_or_default();
        let values = raw
            .chunks_exact(dtype.width())
            .map(|c| dtype.decode(c))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|m| format!("tensor \"{name}\": {m}"))?;
        tensors.push((name, Tensor { dtype, shape, values }));
    }
    Ok(SafeTensors { tensors, metadata })
}

/// The data section of a file holding `tensors` in this order (what `fluxc.sha256` digests).
pub fn data_section(tensors: &[(String, Tensor)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (_, t) in tensors {
        for v in &t.values {
            t.dtype.encode(*v, &mut data);
        }
    }
    data
}

/// Writes tensors (in the given order) and string metadata, atomically.
pub fn write(path: &Path, file: &SafeTensors) -> Result<(), String> {
    let mut header = serde_json::Map::new();
    if !file.metadata.is_empty() {
        let m: serde_json::Map<String, Value> =
            file.metadata.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
        header.insert("__metadata__".into(), Value::Object(m));
    }
    let data = data_section(&file.tensors);
    let mut end = 0usize;
    for (name, t) in &file.tensors {
        let begin = end;
        end += t.values.len() * t.dtype.width();
        let mut o = serde_json::Map::new();
        o.insert("dtype".into(), Value::String(t.dtype.safetensors_name().into()));
        o.insert("shape".into(), Value::Array(t.shape.iter().map(|d| Value::from(*d as u64)).collect()));
        o.insert(
            "data_offsets".into(),
            Value::Array(vec![Value::from(begin as u64), Value::from(end as u64)]),
        );
        header.insert(name.clone(), Value::Object(o));
    }
    let mut text = serde_json::to_string(&Value::Object(header)).map_err(|e| e.to_string())?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(text.as_bytes());
    bytes.extend_from_slice(&data);
    write_atomically(path, &bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn file_with(header: &str, data: &[u8]) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("fluxc-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("w.safetensors");
        let f = SafeTensors {
            tensors: vec![
                (
                    "0.weight".into(),
                    Tensor { dtype: Dtype::F32, shape: vec![2, 2], values: vec![1.0, 2.0, 3.0, 4.5] },
                ),
                ("0.bias".into(), Tensor { dtype: Dtype::I32, shape: vec![2], values: vec![-1.0, 7.0] }),
            ],
            metadata: vec![("fluxc.model".into(), "Mlp".into())],
        };
        write(&p, &f).unwrap();
        assert_eq!(read(&p).unwrap(), f);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn strict_rejections() {
        let t = r#""dtype":"F32","shape":[1],"data_offsets""#;
        let dup = file_with(&format!(r#"{{"a":{{{t}:[0,4]}},"a":{{{t}:[4,8]}}}}"#), &[0; 8]);
        assert!(parse(&dup).unwrap_err().contains("twice"));
        let gap = file_with(&format!(r#"{{"a":{{{t}:[4,8]}}}}"#), &[0; 8]);
        assert!(parse(&gap).unwrap_err().contains("gap"));
        let overlap = file_with(&format!(r#"{{"a":{{{t}:[0,4]}},"b":{{{t}:[2,6]}}}}"#), &[0; 8]);
        assert!(parse(&overlap).unwrap_err().contains("overlaps"));
        let trailing = file_with(&format!(r#"{{"a":{{{t}:[0,4]}}}}"#), &[0; 6]);
        assert!(parse(&trailing).unwrap_err().contains("after the last"));
        let meta = file_with(r#"{"__metadata__":{"k":1}}"#, &[]);
        assert!(parse(&meta).unwrap_err().contains("not a string"));
        let size = file_with(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, &[0; 4]);
        assert!(parse(&size).unwrap_err().contains("needs 8 bytes"));
        let huge = (u64::MAX).to_le_bytes().to_vec();
        assert!(parse(&huge).unwrap_err().contains("limit"));
        assert!(parse(&[1, 2]).is_err());
        let dtype = file_with(r#"{"a":{"dtype":"Q8","shape":[1],"data_offsets":[0,1]}}"#, &[0]);
        assert!(parse(&dtype).unwrap_err().contains("unsupported dtype"));
    }
}
