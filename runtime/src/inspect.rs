//! Summaries of tensors and data sets (`fluxc inspect`, §9) and the data anomaly screen that
//! `inspect` reports and `train` logs at start (§11.1 `anomaly` events): duplicated rows,
//! per-feature outliers by robust z-score, class imbalance, near-constant features.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::tensor::Tensor;

/// Value statistics of a tensor: finite min, max, mean, standard deviation, and the NaN and
/// infinity counts.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
    pub nan: usize,
    pub inf: usize,
}

pub fn stats(values: &[f64]) -> Stats {
    let (mut min, mut max, mut sum, mut n, mut nan, mut inf) =
        (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize, 0, 0);
    for &v in values {
        if v.is_nan() {
            nan += 1;
        } else if v.is_infinite() {
            inf += 1;
        } else {
            min = min.min(v);
            max = max.max(v);
            sum += v;
            n += 1;
        }
    }
    let mean = if n > 0 { sum / n as f64 } else { f64::NAN };
    let var = values.iter().filter(|v| v.is_finite()).map(|v| (v - mean) * (v - mean)).sum::<f64>()
        / n.max(1) as f64;
    Stats { min, max, mean, std: var.sqrt(), nan, inf }
}

/// One line: `NAME  DTYPE [shape]  min … max … mean … std …  NaN n  Inf n`.
pub fn describe(name: &str, t: &Tensor) -> String {
    let s = stats(&t.values);
    let mut line = format!("{name}  {} {:?}  {} values", t.dtype.safetensors_name(), t.shape, t.values.len());
    if s.min <= s.max {
        let _ =
            write!(line, "  min {}  max {}  mean {:.6}  std {:.6}", fmt(s.min), fmt(s.max), s.mean, s.std);
    }
    let _ = write!(line, "  NaN {}  Inf {}", s.nan, s.inf);
    line
}

fn fmt(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v:.6}") }
}

/// A label histogram: each class and its count, in class order.
pub fn histogram(labels: &[u32]) -> Vec<(u32, usize)> {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for l in labels {
        *counts.entry(*l).or_default() += 1;
    }
    let mut h: Vec<(u32, usize)> = counts.into_iter().collect();
    h.sort_unstable();
    h
}

/// A finding of the anomaly screen.
#[derive(Clone, Debug, PartialEq)]
pub struct Anomaly {
    /// `duplicates`, `outliers`, `imbalance` or `constant`.
    pub kind: &'static str,
    pub count: usize,
    pub detail: String,
}

/// A robust z-score beyond this marks an outlier (|x − median| / (1.4826 · MAD)).
pub const OUTLIER_Z: f64 = 6.0;
/// The largest class over the smallest beyond this is an imbalance.
pub const IMBALANCE_RATIO: f64 = 10.0;
/// A feature whose standard deviation is below this (relative to its magnitude, or absolutely
/// near zero) is near-constant.
pub const CONSTANT_REL_STD: f64 = 1e-6;
/// The screen looks at this many rows at most (a prefix; it is a screen, not a proof).
pub const SCREEN_ROWS: usize = 200_000;

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v.get(m).copied().unwrap_or(f64::NAN)
    } else {
        (v.get(m - 1).copied().unwrap_or(0.0) + v.get(m).copied().unwrap_or(0.0)) / 2.0
    }
}

/// Screens `rows` rows of `width` features (`x`, row-major) and their classes.
pub fn screen(x: &[f32], rows: usize, width: usize, classes: Option<&[u32]>) -> Vec<Anomaly> {
    let rows = rows.min(SCREEN_ROWS);
    let mut found = Vec::new();
    if width == 0 || rows == 0 {
        return found;
    }
    let row = |r: usize| x.get(r * width..(r + 1) * width).unwrap_or_default();
    // Duplicated rows (inputs and class alike), by exact bits.
    let mut seen: HashMap<(Vec<u32>, Option<u32>), usize> = HashMap::new();
    let mut dups = 0;
    let mut first_dup = None;
    for r in 0..rows {
        let key = (
            row(r).iter().map(|v| v.to_bits()).collect::<Vec<u32>>(),
            classes.and_then(|c| c.get(r).copied()),
        );
        match seen.get(&key) {
            Some(&earlier) => {
                dups += 1;
                first_dup.get_or_insert((earlier, r));
            }
            None => {
                seen.insert(key, r);
            }
        }
    }
    if let Some((a, b)) = first_dup {
        found.push(Anomaly {
            kind: "duplicates",
            count: dups,
            detail: format!(
                "{dups} rows repeat an earlier row (the first: row {} repeats row {})",
                b + 1,
                a + 1
            ),
        });
    }
    // Per feature: outliers by robust z-score, and near-constant features.
    let (mut outliers, mut worst) = (0usize, None::<(usize, usize, f64)>);
    let mut constant = Vec::new();
    for f in 0..width {
        let mut col: Vec<f64> = (0..rows).filter_map(|r| row(r).get(f).map(|v| f64::from(*v))).collect();
        let s = stats(&col);
        if s.std <= CONSTANT_REL_STD * s.mean.abs().max(1.0) {
            constant.push(f);
            continue;
        }
        let values = col.clone();
        let med = median(&mut col);
        let mut dev: Vec<f64> = values.iter().map(|v| (v - med).abs()).collect();
        let mad = median(&mut dev) * 1.4826;
        if mad <= 0.0 {
            continue;
        }
        for (r, v) in values.iter().enumerate() {
            let z = (v - med).abs() / mad;
            if z > OUTLIER_Z {
                outliers += 1;
                if worst.is_none_or(|w| z > w.2) {
                    worst = Some((r, f, z));
                }
            }
        }
    }
    if let Some((r, f, z)) = worst {
        found.push(Anomaly {
            kind: "outliers",
            count: outliers,
            detail: format!(
                "{outliers} values lie beyond a robust z-score of {OUTLIER_Z} (the largest: row {}, feature {}, z = {z:.1})",
                r + 1,
                f + 1
            ),
        });
    }
    if !constant.is_empty() {
        let shown: Vec<String> = constant.iter().take(8).map(|f| (f + 1).to_string()).collect();
        found.push(Anomaly {
            kind: "constant",
            count: constant.len(),
            detail: format!(
                "{} features are (nearly) constant: {}{}",
                constant.len(),
                shown.join(", "),
                if constant.len() > 8 { ", …" } else { "" }
            ),
        });
    }
    if let Some(c) = classes {
        let h = histogram(c.get(..rows).unwrap_or(c));
        if let (Some(most), Some(least)) = (h.iter().max_by_key(|x| x.1), h.iter().min_by_key(|x| x.1))
            && most.1 as f64 > IMBALANCE_RATIO * least.1 as f64
        {
            found.push(Anomaly {
                kind: "imbalance",
                count: h.len(),
                detail: format!(
                    "class {} has {} rows, class {} only {} (more than {IMBALANCE_RATIO}x)",
                    most.0, most.1, least.0, least.1
                ),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn the_screen_finds_what_it_should_and_nothing_else() {
        // 40 rows of 3 features: feature 3 constant, row 7 duplicates row 2, one outlier.
        let mut x = Vec::new();
        for r in 0..40 {
            x.extend([r as f32 * 0.1, (r % 7) as f32, 5.0]);
        }
        x[6 * 3] = x[3];
        x[6 * 3 + 1] = x[4];
        x[30 * 3 + 1] = 1000.0;
        let classes: Vec<u32> = (0..40).map(|r| u32::from(r >= 38)).collect();
        let found = screen(&x, 40, 3, Some(&classes));
        let kinds: Vec<&str> = found.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, vec!["duplicates", "outliers", "constant", "imbalance"], "{found:?}");
        assert!(found[0].detail.contains("row 7 repeats row 2"), "{found:?}");
        assert!(found[1].detail.contains("row 31, feature 2"), "{found:?}");
        // Clean data: nothing.
        let clean: Vec<f32> = (0..40).flat_map(|r| [r as f32, (r * r % 13) as f32]).collect();
        let balanced: Vec<u32> = (0..40).map(|r| r % 2).collect();
        assert!(screen(&clean, 40, 2, Some(&balanced)).is_empty());
    }
}
