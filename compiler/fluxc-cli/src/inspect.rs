//! `fluxc inspect FILE` (§9): one weights or data file through the same validating loader that
//! training uses, summarised (tensors or columns, dtypes, shapes, value statistics, NaN/Inf
//! counts, label histogram, the anomaly screen), or rejected with one line naming the file and
//! the problem.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use fluxc_runtime::Tensor;
use fluxc_runtime::inspect::{describe, histogram, screen, stats};

pub struct Options {
    pub format: Option<String>,
    pub check_finite: bool,
    pub num_classes: Option<usize>,
    pub label_column: Option<String>,
    pub labels: Option<PathBuf>,
    pub as_labels: bool,
    pub expect_manifest: Option<PathBuf>,
}

/// The summary text, or an error line naming the file.
pub fn inspect(path: &Path, o: &Options) -> Result<String, String> {
    let named = |e: String| format!("{}: {e}", path.display());
    let format = match &o.format {
        Some(f) => f.to_ascii_lowercase(),
        None => path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default(),
    };
    let mut out = String::new();
    let _ = writeln!(out, "{}: {format}", path.display());
    match format.as_str() {
        "safetensors" => {
            let bytes = fluxc_runtime::npy::read_bounded(path).map_err(named)?;
            let file = fluxc_runtime::safetensors::parse(&bytes).map_err(named)?;
            for (k, v) in &file.metadata {
                if !k.starts_with("fluxc.sig") && !k.starts_with("fluxc.key") {
                    let _ = writeln!(out, "metadata {k} = {v}");
                }
            }
            if file.metadata.iter().any(|(k, _)| k == "fluxc.sha256") {
                // The digest check of the weights loader.
                let n = bytes
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_le_bytes)
                    .unwrap_or(0);
                let data = usize::try_from(n).ok().and_then(|n| bytes.get(8 + n..)).unwrap_or_default();
                let want = file.metadata.iter().find(|(k, _)| k == "fluxc.sha256").map(|(_, v)| v.as_str());
                if want != Some(fluxc_runtime::weights::sha256(data).as_str()) {
                    return Err(named(
                        "the data does not match its fluxc.sha256 digest: the file was modified or damaged"
                            .into(),
                    ));
                }
                let _ = writeln!(out, "digest: matches fluxc.sha256");
            }
            if file.metadata.iter().any(|(k, _)| k == "fluxc.sig.ed25519") {
                let _ = writeln!(out, "signed: yes (check it with `fluxc verify --trusted-keys`)");
            }
            let _ = writeln!(out, "{} tensors", file.tensors.len());
            for (name, t) in &file.tensors {
                finite(name, t, o).map_err(named)?;
                let _ = writeln!(out, "  {}", describe(name, t));
            }
            if let Some(m) = &o.expect_manifest {
                manifest_check(&file, m).map_err(named)?;
                let _ = writeln!(out, "manifest {}: every tensor matches", m.display());
            }
        }
        "npy" => {
            let t = fluxc_runtime::npy::read(path).map_err(named)?;
            finite("array", &t, o).map_err(named)?;
            let _ = writeln!(out, "  {}", describe("array", &t));
            if o.as_labels || o.num_classes.is_some() {
                labels_summary(&t, o, &mut out).map_err(named)?;
            } else {
                rows_screen(&t, None, &mut out);
            }
        }
        "idx" => {
            let t = fluxc_runtime::idx::read(path).map_err(named)?;
            finite("values", &t, o).map_err(named)?;
            let _ = writeln!(out, "  {}", describe("values", &t));
            if t.shape.len() == 1 || o.as_labels {
                labels_summary(&t, o, &mut out).map_err(named)?;
            } else {
                let classes = match &o.labels {
                    Some(lp) => {
                        let l = fluxc_runtime::idx::read(lp).map_err(|e| format!("{}: {e}", lp.display()))?;
                        if l.shape.first() != t.shape.first() {
                            return Err(format!(
                                "{}: {} labels for {} images in {}",
                                lp.display(),
                                l.shape.first().copied().unwrap_or(0),
                                t.shape.first().copied().unwrap_or(0),
                                path.display()
                            ));
                        }
                        Some(labels_summary(&l, o, &mut out).map_err(|e| format!("{}: {e}", lp.display()))?)
                    }
                    None => None,
                };
                rows_screen(&t, classes.as_deref(), &mut out);
            }
        }
        "csv" => {
            let c = fluxc_runtime::csv::read(path, o.label_column.as_deref()).map_err(named)?;
            let rows = c.labels.len();
            let width = c.feature_names.len();
            let _ = writeln!(out, "{rows} rows, {width} feature columns, label column \"{}\"", c.label_name);
            for (f, name) in c.feature_names.iter().enumerate() {
                let col: Vec<f64> =
                    (0..rows).filter_map(|r| c.features.values.get(r * width + f).copied()).collect();
                let s = stats(&col);
                let _ = writeln!(
                    out,
                    "  {name}  min {}  max {}  mean {:.6}  std {:.6}",
                    s.min, s.max, s.mean, s.std
                );
            }
            let numeric: Option<Vec<i64>> = c.labels.iter().map(|l| l.parse().ok()).collect();
            let classes: Vec<u32> = match numeric {
                Some(v) => {
                    if let Some(n) = o.num_classes
                        && let Some((r, bad)) =
                            v.iter().enumerate().find(|(_, l)| **l < 0 || **l as usize >= n)
                    {
                        return Err(named(format!("row {}: the label {bad} is outside 0..{n}", r + 1)));
                    }
                    v.iter().map(|l| u32::try_from(*l).unwrap_or(u32::MAX)).collect()
                }
                None => {
                    let mut names = c.labels.clone();
                    names.sort();
                    names.dedup();
                    if let Some(n) = o.num_classes
                        && names.len() != n
                    {
                        return Err(named(format!("{} distinct labels, but --num-classes {n}", names.len())));
                    }
                    let _ = writeln!(out, "classes (sorted): {}", names.join(", "));
                    c.labels.iter().map(|l| names.binary_search(l).map_or(0, |i| i as u32)).collect()
                }
            };
            let _ = writeln!(out, "label histogram: {}", hist_text(&classes));
            let x: Vec<f32> = c.features.values.iter().map(|v| *v as f32).collect();
            anomalies(&screen(&x, rows, width, Some(&classes)), &mut out);
        }
        "" => {
            return Err(named(
                "no extension to tell the format by; give --format safetensors|idx|npy|csv".into(),
            ));
        }
        other => return Err(named(format!("unknown format `{other}` (safetensors, idx, npy or csv)"))),
    }
    Ok(out)
}

fn finite(name: &str, t: &Tensor, o: &Options) -> Result<(), String> {
    if o.check_finite {
        t.check_finite().map_err(|e| format!("`{name}`: {e}"))?;
    }
    Ok(())
}

fn hist_text(classes: &[u32]) -> String {
    histogram(classes).iter().map(|(c, n)| format!("{c}: {n}")).collect::<Vec<_>>().join(", ")
}

/// Labels: integers, in `0..num_classes` when given; prints the histogram.
fn labels_summary(t: &Tensor, o: &Options, out: &mut String) -> Result<Vec<u32>, String> {
    let mut classes = Vec::with_capacity(t.values.len());
    for (i, v) in t.values.iter().enumerate() {
        if v.fract() != 0.0 || *v < 0.0 || !v.is_finite() {
            return Err(format!("label {} is {v}, not a class number", i + 1));
        }
        if let Some(n) = o.num_classes
            && *v >= n as f64
        {
            return Err(format!("label {} is {v}, outside 0..{n}", i + 1));
        }
        classes.push(*v as u32);
    }
    let _ = writeln!(out, "label histogram: {}", hist_text(&classes));
    Ok(classes)
}

fn rows_screen(t: &Tensor, classes: Option<&[u32]>, out: &mut String) {
    let rows = t.shape.first().copied().unwrap_or(0);
    let width = t.values.len().checked_div(rows).unwrap_or(0);
    let x: Vec<f32> = t.values.iter().map(|v| *v as f32).collect();
    anomalies(&screen(&x, rows, width, classes), out);
}

fn anomalies(found: &[fluxc_runtime::inspect::Anomaly], out: &mut String) {
    if found.is_empty() {
        let _ = writeln!(out, "anomaly screen: nothing found");
    }
    for a in found {
        let _ = writeln!(out, "anomaly {}: {}", a.kind, a.detail);
    }
}

/// Every tensor of the manifest's `tensors` map, by name, shape and dtype (§10.14: `offset`
/// and other keys are optional).
fn manifest_check(file: &fluxc_runtime::safetensors::SafeTensors, manifest: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", manifest.display()))?;
    let tensors = json
        .get("tensors")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| format!("{}: no `tensors` map", manifest.display()))?;
    let mut problems = Vec::new();
    for (name, spec) in tensors {
        let shape: Option<Vec<usize>> = spec
            .get("shape")
            .and_then(serde_json::Value::as_array)
            .map(|a| a.iter().filter_map(|d| d.as_u64().map(|d| d as usize)).collect());
        let dtype = spec.get("dtype").and_then(serde_json::Value::as_str);
        match file.get(name) {
            None => problems.push(format!("missing `{name}`")),
            Some(t) => {
                if let Some(s) = &shape
                    && s != &t.shape
                {
                    problems.push(format!("`{name}` has shape {:?}, the manifest says {s:?}", t.shape));
                }
                if let Some(d) = dtype
                    && d != t.dtype.safetensors_name()
                {
                    problems
                        .push(format!("`{name}` is {}, the manifest says {d}", t.dtype.safetensors_name()));
                }
            }
        }
    }
    for (name, _) in &file.tensors {
        if !tensors.contains_key(name) {
            problems.push(format!("unexpected `{name}`"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("does not fit {}: {}", manifest.display(), problems.join("; ")))
    }
}
