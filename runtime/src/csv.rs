//! Numeric CSV files with a header line and one label column (§3.6, §12.13): every other column
//! is a feature and must hold finite numbers; labels may be integers or strings. Quoted fields
//! are not read. Errors name the line and column.

use std::path::Path;

use crate::limits::MAX_CSV_COLUMNS;
use crate::tensor::{Dtype, Tensor};

/// A CSV file's features `[rows, columns]` and its label column's raw values.
#[derive(Clone, Debug, PartialEq)]
pub struct Csv {
    pub features: Tensor,
    pub feature_names: Vec<String>,
    pub label_name: String,
    pub labels: Vec<String>,
}

pub fn read(path: &Path, label: Option<&str>) -> Result<Csv, String> {
    let bytes = crate::npy::read_bounded(path)?;
    parse(&bytes, label)
}

pub fn parse(bytes: &[u8], label: Option<&str>) -> Result<Csv, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
        return Err("the file starts with a byte-order mark; save it as plain UTF-8 without one".into());
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes.get(..e.valid_up_to()).map_or(1, |b| b.iter().filter(|c| **c == b'\n').count() + 1);
        format!("line {line}: not UTF-8 text")
    })?;
    let mut lines = text.split('\n').enumerate().map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
    let (_, header) = lines.find(|(_, l)| !l.trim().is_empty()).ok_or("the file has no header line")?;
    let names: Vec<String> = header.split(',').map(|s| s.trim().to_owned()).collect();
    if names.len() > MAX_CSV_COLUMNS {
        return Err(format!("the header has {} columns; the limit is {MAX_CSV_COLUMNS}", names.len()));
    }
    if names.len() < 2 {
        return Err("the header names fewer than two columns (features and a label)".into());
    }
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() {
            return Err(format!("line 1: column {} has no name", i + 1));
        }
        if n.contains('"') {
            return Err("line 1: quoted fields are not supported".into());
        }
        if names.iter().take(i).any(|m| m == n) {
            return Err(format!("line 1: the column name \"{n}\" appears twice"));
        }
    }
    let label_col = match label {
        Some(l) => names
            .iter()
            .position(|n| n == l)
            .ok_or_else(|| format!("no column \"{l}\" (the columns are {})", names.join(", ")))?,
        None => names.len() - 1,
    };
    let width = names.len();
    let name = |c: usize| names.get(c).map_or("", String::as_str);
    let mut values = Vec::new();
    let mut labels = Vec::new();
    for (line, l) in lines {
        if l.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = l.split(',').collect();
        if fields.len() != width {
            return Err(format!("line {line}: {} fields, the header has {width}", fields.len()));
        }
        for (c, f) in fields.iter().enumerate() {
            let f = f.trim();
            if f.contains('"') {
                return Err(format!("line {line}, column {}: quoted fields are not supported", c + 1));
            }
            if c == label_col {
                if f.is_empty() {
                    return Err(format!("line {line}, column {} ({}): an empty label", c + 1, name(c)));
                }
                labels.push(f.to_owned());
                continue;
            }
            let v: f64 = f.parse().map_err(|_| {
                format!("line {line}, column {} ({}): \"{}\" is not a number", c + 1, name(c), shorten(f))
            })?;
            if !v.is_finite() {
                return Err(format!(
                    "line {line}, column {} ({}): {f} is not a finite number",
                    c + 1,
                    name(c)
                ));
            }
            values.push(v);
        }
        if values.len() > crate::limits::MAX_TENSOR_ELEMENTS {
            return Err(format!("line {line}: more than {} values", crate::limits::MAX_TENSOR_ELEMENTS));
        }
    }
    if labels.is_empty() {
        return Err("the file has a header but no rows".into());
    }
    let rows = labels.len();
    let feature_names: Vec<String> =
        names.iter().enumerate().filter(|(i, _)| *i != label_col).map(|(_, n)| n.clone()).collect();
    Ok(Csv {
        features: Tensor { dtype: Dtype::F32, shape: vec![rows, width - 1], values },
        feature_names,
        label_name: names.get(label_col).cloned().unwrap_or_default(),
        labels,
    })
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 24 {
        format!("{}…", s.chars().take(24).collect::<String>())
    } else {
        s.to_owned()
    }
}
