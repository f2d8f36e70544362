//! What `fluxc train` needs besides the graphs: a checked train block's configuration (§3.7,
//! §11.1, §12.7–§12.8) and its data sources (§3.6) as plain values, with every default filled
//! in. The checker has proven the block; the values read here are literals (the checker's
//! range checks apply to literals too).

use fluxc_syntax::FileId;
use fluxc_syntax::ast::{self, ExprKind};

use super::{LResult, LowerError};
use crate::check::Index;

/// Where a data source's rows come from.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceKind {
    Idx {
        images: String,
        labels: String,
    },
    /// `label`: the label column's name (the last column when absent).
    Csv {
        path: String,
        label: Option<String>,
    },
    Npy {
        x: String,
        y: String,
    },
    Safetensors {
        path: String,
        x: String,
        y: String,
    },
}

/// A data source: the file(s), the declared transforms, and which rows: a `split` takes a
/// seeded fraction of its source (`take`), and a source that is split elsewhere in the file
/// denotes the rest (`minus`, one entry per split of it).
#[derive(Clone, Debug, PartialEq)]
pub struct DataSpec {
    pub name: String,
    pub kind: SourceKind,
    pub classes: Option<usize>,
    pub scale: Option<f64>,
    pub shape: Option<Vec<usize>>,
    pub target_shape: Option<Vec<usize>>,
    pub take: Option<(f64, u64)>,
    pub minus: Vec<(f64, u64)>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Callback {
    Log { every: u64 },
    Checkpoint { path: String, every: u64 },
    EarlyStop { patience: u64, monitor: String },
    NanGuard,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub model: String,
    pub data: DataSpec,
    pub validation: Option<DataSpec>,
    pub batch: usize,
    pub epochs: usize,
    pub shuffle: bool,
    pub seed: u64,
    pub metrics: Vec<String>,
    /// The callbacks in order; `nan_guard` is always present (on by default, §12.8).
    pub callbacks: Vec<Callback>,
}

fn err(span: fluxc_syntax::Span, message: impl Into<String>) -> LowerError {
    LowerError { span: Some(span), message: message.into() }
}

fn named<'e>(args: &'e [ast::Arg], key: &str) -> Option<&'e ast::Expr> {
    args.iter().find_map(|a| match &a.kind {
        ast::ArgKind::Named { name, value } if name.name == key => Some(value),
        _ => None,
    })
}

fn positional(args: &[ast::Arg], k: usize) -> Option<&ast::Expr> {
    args.iter()
        .filter_map(|a| match &a.kind {
            ast::ArgKind::Positional(e) => Some(e),
            _ => None,
        })
        .nth(k)
}

/// A value by position or by name.
fn arg<'e>(args: &'e [ast::Arg], k: usize, key: &str) -> Option<&'e ast::Expr> {
    named(args, key).or_else(|| positional(args, k))
}

/// A literal number.
fn number(idx: &Index<'_>, file: FileId, e: &ast::Expr, depth: usize) -> Option<f64> {
    let _ = (idx, file);
    match &e.kind {
        ExprKind::Int(v) => Some(*v as f64),
        ExprKind::Float(v) => Some(*v),
        ExprKind::Unary { op: ast::UnaryOp::Neg, operand } if depth < 4 => {
            number(idx, file, operand, depth + 1).map(|v| -v)
        }
        _ => None,
    }
}

fn integer(idx: &Index<'_>, file: FileId, e: &ast::Expr, what: &str) -> LResult<u64> {
    match number(idx, file, e, 0) {
        Some(v) if v >= 0.0 && v.fract() == 0.0 && v < 9.0e15 => Ok(v as u64),
        _ => Err(err(e.span, format!("`{what}` must be a whole number written in the file"))),
    }
}

fn string(e: &ast::Expr, what: &str) -> LResult<String> {
    match &e.kind {
        ExprKind::Str(s) => Ok(s.clone()),
        _ => Err(err(e.span, format!("`{what}` must be a string literal"))),
    }
}

fn shape(idx: &Index<'_>, file: FileId, e: &ast::Expr, what: &str) -> LResult<Vec<usize>> {
    let ExprKind::List(items) = &e.kind else { return Err(err(e.span, format!("`{what}` must be a list"))) };
    items.iter().map(|i| integer(idx, file, i, what).map(|v| v as usize)).collect()
}

/// The data source named `name` in `file`, following `split`s.
pub fn data_spec(idx: &Index<'_>, file: FileId, name: &str, at: fluxc_syntax::Span) -> LResult<DataSpec> {
    let mut current = name.to_owned();
    let mut take = None;
    for _ in 0..64 {
        let item = idx.item(file, &current).ok_or_else(|| err(at, format!("no data source `{current}`")))?;
        let Some(ast::Item::Data(d)) = idx.items.get(item).map(|i| i.item) else {
            return Err(err(at, format!("`{current}` is not a data source")));
        };
        let ExprKind::Call { callee, args, .. } = &d.value.kind else {
            return Err(err(d.value.span, "not a data source"));
        };
        let ExprKind::Name(kind) = &callee.kind else { return Err(err(d.value.span, "not a data source")) };
        if kind.name == "split" {
            let src = arg(args, 0, "source").ok_or_else(|| err(d.value.span, "`split` needs a source"))?;
            let ExprKind::Name(src) = &src.kind else {
                return Err(err(src.span, "`split` takes a source name"));
            };
            let f = arg(args, 1, "fraction").and_then(|e| number(idx, file, e, 0));
            let f = f.ok_or_else(|| err(d.value.span, "`split` needs a fraction"))?;
            let seed = match arg(args, 2, "seed") {
                Some(e) => integer(idx, file, e, "seed")?,
                None => 0,
            };
            // Only the outermost split decides the rows; a split of a split narrows further,
            // which the runtime does not express yet.
            if take.is_some() {
                return Err(err(d.value.span, "a split of a split is not supported yet"));
            }
            take = Some((f, seed));
            current = src.name.clone();
            continue;
        }
        let path = |k: usize, key: &str| -> LResult<String> {
            let e = arg(args, k, key).ok_or_else(|| err(d.value.span, format!("missing `{key}`")))?;
            string(e, key)
        };
        let kind = match kind.name.as_str() {
            "idx" => SourceKind::Idx { images: path(0, "images")?, labels: path(1, "labels")? },
            "csv" => SourceKind::Csv {
                path: path(0, "path")?,
                label: arg(args, 1, "label").map(|e| string(e, "label")).transpose()?,
            },
            "npy" => SourceKind::Npy { x: path(0, "x")?, y: path(1, "y")? },
            "safetensors" => {
                SourceKind::Safetensors { path: path(0, "path")?, x: path(1, "x")?, y: path(2, "y")? }
            }
            other => return Err(err(kind.span, format!("unknown data source kind `{other}`"))),
        };
        // The splits taken out of this source elsewhere in the file.
        let mut minus = Vec::new();
        for info in idx.items.iter().filter(|i| i.file == file) {
            let ast::Item::Data(o) = info.item else { continue };
            let ExprKind::Call { callee, args, .. } = &o.value.kind else { continue };
            if !matches!(&callee.kind, ExprKind::Name(n) if n.name == "split") {
                continue;
            }
            if !matches!(arg(args, 0, "source").map(|e| &e.kind), Some(ExprKind::Name(n)) if n.name == current)
            {
                continue;
            }
            let f = arg(args, 1, "fraction").and_then(|e| number(idx, file, e, 0)).unwrap_or(0.0);
            let seed = match arg(args, 2, "seed") {
                Some(e) => integer(idx, file, e, "seed")?,
                None => 0,
            };
            minus.push((f, seed));
        }
        let classes = named(args, "classes").map(|e| integer(idx, file, e, "classes")).transpose()?;
        let scale = match named(args, "scale") {
            Some(e) => Some(number(idx, file, e, 0).ok_or_else(|| err(e.span, "`scale` must be a number"))?),
            None => None,
        };
        return Ok(DataSpec {
            name: name.to_owned(),
            kind,
            classes: classes.map(|c| c as usize),
            scale,
            shape: named(args, "shape").map(|e| shape(idx, file, e, "shape")).transpose()?,
            target_shape: named(args, "target_shape")
                .map(|e| shape(idx, file, e, "target_shape"))
                .transpose()?,
            // A split denotes its fraction, never "the rest" of itself.
            minus: if take.is_some() { Vec::new() } else { minus },
            take,
        });
    }
    Err(err(at, "data sources nest too deeply"))
}

/// The configuration of train block `train`.
pub fn train_config(idx: &Index<'_>, train: usize) -> LResult<TrainConfig> {
    let Some(info) = idx.items.get(train) else {
        return Err(LowerError { span: None, message: "no such train block".into() });
    };
    let ast::Item::Train(t) = info.item else {
        return Err(LowerError { span: None, message: "not a train block".into() });
    };
    let file = info.file;
    let entry = |key: &str| t.entries.iter().find(|e| e.key.name == key).map(|e| &e.value);
    let count = |key: &str, default: u64| -> LResult<u64> {
        match entry(key) {
            Some(e) => integer(idx, file, e, key),
            None => Ok(default),
        }
    };
    let shuffle = match entry("shuffle").map(|e| &e.kind) {
        None | Some(ExprKind::Bool(true)) => true,
        Some(ExprKind::Bool(false)) => false,
        Some(_) => return Err(err(t.span, "`shuffle` must be `true` or `false`")),
    };
    let validation = match entry("validation") {
        Some(e) => match &e.kind {
            ExprKind::Name(n) => Some(data_spec(idx, file, &n.name, e.span)?),
            _ => return Err(err(e.span, "`validation` names a data source")),
        },
        None => None,
    };
    let names = |key: &str| -> Vec<&ast::Expr> {
        match entry(key).map(|e| &e.kind) {
            Some(ExprKind::List(items)) => items.iter().collect(),
            _ => entry(key).into_iter().collect(),
        }
    };
    let mut metrics = Vec::new();
    for m in names("metrics") {
        if let ExprKind::Name(n) = &m.kind {
            metrics.push(n.name.clone());
        }
    }
    let mut callbacks = Vec::new();
    for c in names("callbacks") {
        let (name, args): (&str, &[ast::Arg]) = match &c.kind {
            ExprKind::Name(n) => (n.name.as_str(), &[]),
            ExprKind::Call { callee, args, .. } => match &callee.kind {
                ExprKind::Name(n) => (n.name.as_str(), args.as_slice()),
                _ => continue,
            },
            _ => continue,
        };
        let every = |k: usize| -> LResult<u64> {
            match arg(args, k, "every") {
                Some(e) => integer(idx, file, e, "every"),
                None => Ok(1),
            }
        };
        callbacks.push(match name {
            "log" => Callback::Log { every: every(0)? },
            "checkpoint" => Callback::Checkpoint {
                path: string(
                    arg(args, 0, "path").ok_or_else(|| err(c.span, "`checkpoint` needs a path"))?,
                    "path",
                )?,
                every: every(1)?,
            },
            "early_stop" => Callback::EarlyStop {
                patience: integer(
                    idx,
                    file,
                    arg(args, 0, "patience").ok_or_else(|| err(c.span, "`early_stop` needs `patience`"))?,
                    "patience",
                )?,
                monitor: match arg(args, 1, "monitor").map(|e| &e.kind) {
                    Some(ExprKind::Name(n)) => n.name.clone(),
                    _ => "val_loss".into(),
                },
            },
            "nan_guard" => Callback::NanGuard,
            _ => continue,
        });
    }
    if !callbacks.contains(&Callback::NanGuard) {
        callbacks.push(Callback::NanGuard);
    }
    Ok(TrainConfig {
        model: t.model.name.clone(),
        data: data_spec(idx, file, &t.source.name, t.source.span)?,
        validation,
        batch: count("batch", 32)? as usize,
        epochs: count("epochs", 1)? as usize,
        shuffle,
        seed: count("seed", 0)?,
        metrics,
        callbacks,
    })
}
