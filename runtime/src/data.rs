//! Data sets for training (§3.6, §12.13): rows of inputs and targets as f32, built from the
//! loaded files with the declaration's transforms (`classes` one-hot targets, `scale`, `shape`,
//! `target_shape`), every label and value checked; seeded splits and shuffles.

use fluxc_kernels::rng::Stream;

use crate::csv::Csv;
use crate::tensor::Tensor;

/// What a data declaration asks of its rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transform {
    pub classes: Option<usize>,
    pub scale: Option<f64>,
    pub shape: Option<Vec<usize>>,
    pub target_shape: Option<Vec<usize>>,
}

/// `rows` rows: input row `i` is `x[i*x_len..]` of shape `x_shape`, target row `i` likewise.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    pub rows: usize,
    pub x: Vec<f32>,
    pub x_shape: Vec<usize>,
    pub y: Vec<f32>,
    pub y_shape: Vec<usize>,
    /// Each row's classes (with `classes`; one per label position): what accuracy compares against.
    pub class: Option<Vec<u32>>,
    /// Class names when the labels were strings (sorted, §12.13).
    pub class_names: Option<Vec<String>>,
    /// The inputs are whole numbers (integer files): what an `i32` model input needs.
    pub x_integer: bool,
}

impl Dataset {
    pub fn x_len(&self) -> usize {
        self.x_shape.iter().product()
    }

    pub fn y_len(&self) -> usize {
        self.y_shape.iter().product()
    }

    /// How many class labels each row holds (1 unless `target_shape` gives a label per position).
    pub fn labels_per_row(&self) -> usize {
        self.class.as_ref().map_or(0, |c| c.len() / self.rows.max(1))
    }

    /// The rows `picks`, in that order.
    pub fn select(&self, picks: &[usize]) -> Dataset {
        let (xl, yl, per) = (self.x_len(), self.y_len(), self.labels_per_row());
        let mut out = Dataset {
            rows: picks.len(),
            x: Vec::with_capacity(picks.len() * xl),
            x_shape: self.x_shape.clone(),
            y: Vec::with_capacity(picks.len() * yl),
            y_shape: self.y_shape.clone(),
            class: self.class.as_ref().map(|_| Vec::with_capacity(picks.len() * per)),
            class_names: self.class_names.clone(),
            x_integer: self.x_integer,
        };
        for &r in picks {
            out.x.extend_from_slice(self.x.get(r * xl..(r + 1) * xl).unwrap_or_default());
            out.y.extend_from_slice(self.y.get(r * yl..(r + 1) * yl).unwrap_or_default());
            if let (Some(dst), Some(src)) = (out.class.as_mut(), self.class.as_ref()) {
                dst.extend_from_slice(src.get(r * per..(r + 1) * per).unwrap_or_default());
            }
        }
        out
    }
}

/// A permutation of `0..n` from `(seed, stream, step)`: Fisher–Yates on Philox bits.
pub fn permutation(n: usize, seed: u64, stream: u32, step: u64) -> Vec<usize> {
    let s = Stream::new(seed, stream, step);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (s.bits(i as u64) as usize) % (i + 1);
        p.swap(i, j);
    }
    p
}

/// The rows a `split(src, fraction, seed = k)` takes: the first `round(fraction * n)` of a
/// seeded permutation (stream 0x5eed, step 0), sorted.
pub fn split_rows(n: usize, fraction: f64, seed: u64) -> Vec<usize> {
    let take = ((fraction * n as f64).round() as usize).min(n);
    let mut rows: Vec<usize> = permutation(n, seed, 0x5eed, 0).into_iter().take(take).collect();
    rows.sort_unstable();
    rows
}

fn reshape(have: &[usize], want: &Option<Vec<usize>>, what: &str) -> Result<Vec<usize>, String> {
    match want {
        None => Ok(have.to_vec()),
        Some(w) => {
            let (a, b): (usize, usize) = (have.iter().product(), w.iter().product());
            if a != b {
                return Err(format!(
                    "each {what} has {a} values ({have:?}), but the declared shape {w:?} holds {b}"
                ));
            }
            Ok(w.clone())
        }
    }
}

/// The shape of a row's labels under `classes`: `target_shape` when declared (a label per
/// position, each one-hot), else one label.
fn label_shape(have: &[usize], t: &Transform) -> Result<Vec<usize>, String> {
    let count: usize = have.iter().product();
    match &t.target_shape {
        Some(_) => reshape(have, &t.target_shape, "target row"),
        None if count == 1 => Ok(Vec::new()),
        None => Err(format!(
            "`classes` needs one label per row, but each target row has {count} values \
             (declare `target_shape = {have:?}` for a label per position)"
        )),
    }
}

/// One-hot targets from class indices (`per_row` labels a row), checked against `classes` (§12.13).
fn one_hot(labels: &[f64], classes: usize, per_row: usize) -> Result<(Vec<f32>, Vec<u32>), String> {
    let mut y = vec![0f32; labels.len() * classes];
    let mut class = Vec::with_capacity(labels.len());
    for (r, v) in labels.iter().enumerate() {
        if v.fract() != 0.0 || *v < 0.0 || *v >= classes as f64 {
            return Err(format!("row {}: the label {v} is outside 0..{classes}", r / per_row.max(1) + 1));
        }
        let c = *v as usize;
        if let Some(slot) = y.get_mut(r * classes + c) {
            *slot = 1.0;
        }
        class.push(c as u32);
    }
    Ok((y, class))
}

fn inputs(x: &Tensor, t: &Transform) -> Result<(usize, Vec<f32>, Vec<usize>, bool), String> {
    let rows = *x.shape.first().ok_or("the inputs are a scalar, not rows")?;
    let row_shape = reshape(x.shape.get(1..).unwrap_or_default(), &t.shape, "input row")?;
    let scale = t.scale.unwrap_or(1.0);
    let row_len: usize = x.shape.get(1..).unwrap_or_default().iter().product();
    let mut out = Vec::with_capacity(x.values.len());
    for (i, v) in x.values.iter().enumerate() {
        if !v.is_finite() {
            return Err(format!("row {}: a non-finite input value ({v})", i / row_len.max(1) + 1));
        }
        out.push((v * scale) as f32);
    }
    let integer = !x.dtype.is_float() && t.scale.is_none();
    Ok((rows, out, row_shape, integer))
}

/// Rows from an inputs tensor `[N, ...]` and a targets tensor `[N, ...]` (IDX, NPY,
/// safetensors).
pub fn from_tensors(x: &Tensor, y: &Tensor, t: &Transform) -> Result<Dataset, String> {
    let (rows, xs, x_shape, x_integer) = inputs(x, t)?;
    let y_rows = *y.shape.first().ok_or("the targets are a scalar, not rows")?;
    if y_rows != rows {
        return Err(format!("{rows} input rows but {y_rows} target rows"));
    }
    if let Some((r, v)) = y.values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        let per = y.values.len() / rows.max(1);
        return Err(format!("row {}: a non-finite target value ({v})", r / per.max(1) + 1));
    }
    let mut d = Dataset { rows, x: xs, x_shape, x_integer, ..Dataset::default() };
    match t.classes {
        Some(c) => {
            let labels = label_shape(y.shape.get(1..).unwrap_or_default(), t)?;
            let (ys, class) = one_hot(&y.values, c, labels.iter().product())?;
            d.y = ys;
            d.y_shape = labels;
            d.y_shape.push(c);
            d.class = Some(class);
        }
        None => {
            d.y = y.values.iter().map(|v| *v as f32).collect();
            d.y_shape = reshape(y.shape.get(1..).unwrap_or_default(), &t.target_shape, "target row")?;
        }
    }
    Ok(d)
}

/// Rows from a CSV file: features as inputs, the label column as targets (§12.13: labels that
/// are all integers are numeric; otherwise the classes are the distinct strings, sorted).
pub fn from_csv(c: &Csv, t: &Transform) -> Result<Dataset, String> {
    let (rows, xs, x_shape, _) = inputs(&c.features, t)?;
    let numeric: Option<Vec<f64>> =
        c.labels.iter().map(|l| l.parse::<i64>().ok().map(|v| v as f64)).collect();
    let mut d = Dataset { rows, x: xs, x_shape, ..Dataset::default() };
    match (numeric, t.classes) {
        (Some(v), Some(k)) => {
            let (ys, class) = one_hot(&v, k, 1)?;
            d.y = ys;
            d.y_shape = label_shape(&[1], t)?;
            d.y_shape.push(k);
            d.class = Some(class);
        }
        (None, Some(k)) => {
            let mut names: Vec<String> = c.labels.clone();
            names.sort();
            names.dedup();
            if names.len() != k {
                return Err(format!(
                    "the label column \"{}\" has {} distinct values ({}), but `classes = {k}`",
                    c.label_name,
                    names.len(),
                    preview(&names)
                ));
            }
            let idx: Vec<f64> =
                c.labels.iter().map(|l| names.binary_search(l).map_or(0.0, |i| i as f64)).collect();
            let (ys, class) = one_hot(&idx, k, 1)?;
            d.y = ys;
            d.y_shape = label_shape(&[1], t)?;
            d.y_shape.push(k);
            d.class = Some(class);
            d.class_names = Some(names);
        }
        (Some(v), None) => {
            d.y = v.iter().map(|x| *x as f32).collect();
            d.y_shape = reshape(&[1], &t.target_shape, "target row")?;
        }
        (None, None) => {
            return Err(format!(
                "the label column \"{}\" holds strings; declare `classes = N` to use them as classes",
                c.label_name
            ));
        }
    }
    Ok(d)
}

fn preview(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    if names.len() > 5 { format!("{}, …", shown.join(", ")) } else { shown.join(", ") }
}
