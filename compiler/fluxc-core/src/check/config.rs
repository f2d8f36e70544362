//! Data sources (§3.6, §10.9, §12.13) and train blocks (§3.7, §7, §10.11, §12.6–§12.8,
//! §12.14, §12.18): keys, values, built-ins, path confinement, and how data and losses fit the model.

use std::collections::HashMap;

use fluxc_syntax::ast::{self, ExprKind, UnaryOp};
use fluxc_syntax::{Code, FileId, Label, Span};

use super::call::{ArgV, PSpec};
use super::prim_rules::slot;
use super::prims::TRAIN_BUILTINS;
use super::ty::{DataTy, Elem, FnVal, Sh, Shape, Ty, shape_to_string, tensor_to_string};
use super::{Checker, Ctx, Env, Folder, Global, Sig};
use crate::dims::Dim;

/// A train built-in named as a value (only inside train values).
pub(crate) fn train_builtin_value(name: &str) -> Option<Ty> {
    TRAIN_BUILTINS.iter().find(|b| **b == name).map(|b| Ty::TrainBuiltin(b))
}

const TRAIN_KEYS: [&str; 12] = [
    "loss",
    "optimizer",
    "batch",
    "epochs",
    "shuffle",
    "seed",
    "validation",
    "metrics",
    "schedule",
    "clip",
    "callbacks",
    "freeze",
];

/// The value of a numeric literal (with an optional minus), for range checks.
pub(crate) fn const_number(e: &ast::Expr) -> Option<f64> {
    match &e.kind {
        ExprKind::Int(v) => Some(*v as f64),
        ExprKind::Float(v) => Some(*v),
        ExprKind::Unary { op: UnaryOp::Neg, operand } => const_number(operand).map(|v| -v),
        _ => None,
    }
}

impl<'a> Checker<'a> {
    /// E0501 when a literal hyperparameter is negative (or zero where that is not allowed).
    pub(crate) fn positive_value(&mut self, a: &ArgV<'_>, name: &str, allow_zero: bool) {
        let Some(v) = a.expr.and_then(const_number) else { return };
        if v < 0.0 || (!allow_zero && v == 0.0) || !v.is_finite() {
            let bound = if allow_zero { "at least 0" } else { "greater than 0" };
            self.error(Code::E0501, a.span, format!("`{name}` must be {bound}, found {v}")).primary.message =
                "out of range".into();
        }
    }

    fn path_arg(&mut self, file: FileId, a: &ArgV<'_>, folder: Folder) {
        match (a.expr.map(|e| &e.kind), &a.ty) {
            (Some(ExprKind::Str(path)), _) => {
                let from = self.file_names.get(&file).cloned().unwrap_or_default();
                if !self.paths.stays_inside(&from, path, folder) {
                    let (what, fix) = match folder {
                        Folder::Project => (
                            "the project folder",
                            "data and `use` paths stay inside the folder of the `.flx` file",
                        ),
                        Folder::Output => {
                            ("the output folder", "files written by callbacks land in the output folder")
                        }
                    };
                    let d = self.error(Code::E0502, a.span, format!("the path \"{path}\" leaves {what}"));
                    d.primary.message = "outside the allowed folder".into();
                    d.notes.push(fix.into());
                }
            }
            (_, Ty::Error) => {}
            _ => {
                self.error(Code::E0302, a.span, "expected a path as a string literal").primary.message =
                    "not a string literal".into();
            }
        }
    }

    fn dim_const(&mut self, a: &ArgV<'_>, name: &str, min: i64) -> Option<i64> {
        match &a.ty {
            Ty::Dim(d) => match d.as_constant() {
                Some(v) if v >= min => Some(v),
                Some(v) => {
                    self.error(Code::E0501, a.span, format!("`{name}` must be at least {min}, found {v}"))
                        .primary
                        .message = "out of range".into();
                    None
                }
                None => {
                    self.error(Code::E0302, a.span, format!("`{name}` must be an integer literal"))
                        .primary
                        .message = "not a constant".into();
                    None
                }
            },
            Ty::Error => None,
            other => {
                let shown = self.show_ty(other);
                self.error(Code::E0302, a.span, format!("`{name}` must be an integer, found {shown}"))
                    .primary
                    .message = "not an integer".into();
                None
            }
        }
    }

    fn shape_list(&mut self, a: &ArgV<'_>, name: &str) -> Option<Shape> {
        let items = match &a.ty {
            Ty::List(items) | Ty::Tuple(items) => items.clone(),
            Ty::Error => return None,
            _ => {
                self.error(
                    Code::E0302,
                    a.span,
                    format!("`{name}` is a list of dimensions: `{name} = [1, 8, 8]`"),
                )
                .primary
                .message = "not a list".into();
                return None;
            }
        };
        let mut out = Vec::new();
        for t in items {
            match t {
                Ty::Dim(d) if d.as_constant().is_some_and(|v| v >= 1) => out.push(Sh::Dim(d)),
                _ => {
                    self.error(Code::E0501, a.span, format!("`{name}` needs positive integer dimensions"))
                        .primary
                        .message = "bad dimension".into();
                    return None;
                }
            }
        }
        Some(out)
    }

    // ----------------------------------------------------------------------------- data

    pub(crate) fn check_data(&mut self, file: FileId, d: &ast::DataDef) -> Sig {
        let mut env = Env::new(file, Ctx::Data);
        let ExprKind::Call { callee, generics: None, args } = &d.value.kind else {
            self.error(
                Code::E0501,
                d.value.span,
                "a data source is `idx(…)`, `csv(…)`, `npy(…)`, `safetensors(…)` or `split(…)`",
            )
            .primary
            .message = "not a data source".into();
            return Sig::Error;
        };
        let ExprKind::Name(kind) = &callee.kind else {
            self.error(Code::E0501, callee.span, "expected a data source kind").primary.message =
                "here".into();
            return Sig::Error;
        };
        if kind.name == "split" {
            return self.check_split(&mut env, d, args);
        }
        let common: [(&str, bool); 4] =
            [("classes", false), ("scale", false), ("shape", false), ("target_shape", false)];
        let (own, paths): (Vec<(&str, bool)>, usize) = match kind.name.as_str() {
            "idx" => (vec![("images", true), ("labels", true)], 2),
            "csv" => (vec![("path", true), ("label", false)], 1),
            "npy" => (vec![("x", true), ("y", true)], 2),
            "safetensors" => (vec![("path", true), ("x", true), ("y", true)], 1),
            _ => {
                let d =
                    self.error(Code::E0201, kind.span, format!("unknown data source kind `{}`", kind.name));
                d.primary.message = "not a data source".into();
                if let Some(s) =
                    super::suggest(&kind.name, ["idx", "csv", "npy", "safetensors", "split"].into_iter())
                {
                    d.help = Some(format!("did you mean `{s}`?"));
                }
                return Sig::Error;
            }
        };
        let mut all = own.clone();
        all.extend(common);
        let specs: Vec<PSpec<'_>> = all.iter().map(|(n, r)| PSpec { name: n, required: *r }).collect();
        let argv = self.eval_args(&mut env, args);
        let what = format!("`{}`", kind.name);
        let Some(slots) = self.bind_args(&specs, &argv, d.value.span, &what) else { return Sig::Error };
        for i in 0..own.len() {
            let Some(a) = slot(&argv, &slots, i) else { continue };
            if i < paths || (kind.name == "npy") {
                self.path_arg(file, a, Folder::Project);
            } else if !matches!(a.ty, Ty::Str | Ty::Error) {
                self.error(Code::E0302, a.span, "expected a string").primary.message = "not a string".into();
            }
        }
        let base = own.len();
        let classes = slot(&argv, &slots, base).and_then(|a| self.dim_const(a, "classes", 1));
        if let Some(a) = slot(&argv, &slots, base + 1) {
            if !matches!(&a.ty, Ty::Dim(_) | Ty::Error)
                && !matches!(&a.ty, Ty::Tensor(Elem::F32, s) if s.is_empty())
            {
                self.error(Code::E0302, a.span, "`scale` is a number").primary.message =
                    "not a number".into();
            }
            self.positive_value(a, "scale", false);
        }
        let shape = slot(&argv, &slots, base + 2).and_then(|a| self.shape_list(a, "shape"));
        let target_shape = slot(&argv, &slots, base + 3).and_then(|a| self.shape_list(a, "target_shape"));
        // With `classes`, `target_shape` is the shape of each row's labels, each one-hot.
        let target = match (classes, target_shape) {
            (Some(n), s) => {
                let mut s = s.unwrap_or_default();
                s.push(Sh::Dim(Dim::constant(n)));
                Some((Elem::F32, s))
            }
            (None, Some(s)) => Some((Elem::F32, s)),
            (None, None) => None,
        };
        Sig::Data(Box::new(DataTy { input: shape.map(|s| (Elem::F32, s)), target, classes }))
    }

    fn check_split(&mut self, env: &mut Env, d: &ast::DataDef, args: &[ast::Arg]) -> Sig {
        let argv = self.eval_args(env, args);
        let specs = super::call::spec(&[("source", true), ("fraction", true), ("seed", false)]);
        let Some(slots) = self.bind_args(&specs, &argv, d.value.span, "`split`") else { return Sig::Error };
        if let Some(a) = slot(&argv, &slots, 1) {
            let v = a.expr.and_then(const_number);
            match v {
                Some(f) if f > 0.0 && f < 1.0 => {}
                Some(f) => {
                    self.error(
                        Code::E0501,
                        a.span,
                        format!("a split fraction is between 0 and 1, found {f}"),
                    )
                    .primary
                    .message = "out of range".into();
                }
                None => {
                    self.error(Code::E0302, a.span, "a split fraction is a number literal").primary.message =
                        "not a number".into();
                }
            }
        }
        if let Some(a) = slot(&argv, &slots, 2) {
            self.dim_const(a, "seed", 0);
        }
        match slot(&argv, &slots, 0).map(|a| (&a.ty, a.span)) {
            Some((Ty::Data(src), _)) => Sig::Data(src.clone()),
            Some((Ty::Error, _)) | None => Sig::Error,
            Some((other, sp)) => {
                let shown = self.show_ty(other);
                self.error(Code::E0302, sp, format!("`split` takes a data source, found {shown}"))
                    .primary
                    .message = "not a data source".into();
                Sig::Error
            }
        }
    }

    // --------------------------------------------------------------------------- train

    pub(crate) fn check_train(&mut self, file: FileId, t: &ast::TrainDef) {
        let mut env = Env::new(file, Ctx::Train);
        env.train_value = true;
        // The model and the source.
        let model = match self.global(file, &t.model.name) {
            Some(Global::Item(i)) => match self.sig(i, Some(t.model.span)) {
                Some(Sig::Model { input, output }) => Some((i, input, output)),
                Some(_) => {
                    self.error(Code::E0302, t.model.span, format!("`{}` is not a model", t.model.name))
                        .primary
                        .message = "a train block trains a `model`".into();
                    None
                }
                None => None,
            },
            _ => {
                self.unknown_name(&env, &t.model, "model");
                None
            }
        };
        let data = match env.lookup(&t.source.name).cloned() {
            Some(_) => None,
            None => match self.global(file, &t.source.name) {
                Some(Global::Item(i)) => match self.sig(i, Some(t.source.span)) {
                    Some(Sig::Data(d)) => Some(d),
                    Some(Sig::Error) | None => None,
                    Some(_) => {
                        self.error(
                            Code::E0302,
                            t.source.span,
                            format!("`{}` is not a data source", t.source.name),
                        )
                        .primary
                        .message = "expected a `data` name".into();
                        None
                    }
                },
                _ => {
                    self.unknown_name(&env, &t.source, "data source");
                    None
                }
            },
        };
        // Does the data fit the model (E0503)? If not, the loss is not checked against it.
        let mut target = model.as_ref().map(|(_, _, out)| out.clone());
        let mut data_fits = true;
        if let (Some((_, input, output)), Some(d)) = (&model, &data) {
            data_fits = self.data_fits(t, input, output, d);
            if let Some((e, s)) = &d.target {
                let mut full = vec![Sh::Dim(Dim::var("B"))];
                full.extend(s.iter().cloned());
                target = Some(Ty::Tensor(*e, full));
            }
        }
        let mut seen: HashMap<String, Span> = HashMap::new();
        for entry in &t.entries {
            let key = entry.key.name.as_str();
            if !TRAIN_KEYS.contains(&key) {
                let d = self.error(Code::E0501, entry.key.span, format!("unknown train key `{key}`"));
                d.primary.message = "not a train key".into();
                match super::suggest(key, TRAIN_KEYS.iter().copied()) {
                    Some(s) => d.help = Some(format!("did you mean `{s}`?")),
                    None => d.notes.push(format!("train keys are {}", TRAIN_KEYS.join(", "))),
                }
                continue;
            }
            if let Some(first) = seen.get(key) {
                let first = *first;
                let d = self.error(Code::E0501, entry.key.span, format!("train key `{key}` is given twice"));
                d.primary.message = "repeated key".into();
                d.labels.push(Label { span: first, message: "first given here".into() });
                continue;
            }
            seen.insert(key.to_owned(), entry.key.span);
            self.train_value(&mut env, key, &entry.value, model.as_ref(), target.as_ref(), data_fits);
        }
        let missing: Vec<&str> =
            ["loss", "optimizer"].into_iter().filter(|k| !seen.contains_key(*k)).collect();
        if !missing.is_empty() {
            let list: Vec<String> = missing.iter().map(|k| format!("`{k}`")).collect();
            let start = Span { end: t.span.start + 5, ..t.span };
            let d = self.error(
                Code::E0501,
                start,
                format!("train block for `{}` is missing {}", t.model.name, list.join(" and ")),
            );
            d.primary.message = "missing required keys".into();
            d.help =
                Some("`loss` and `optimizer` are required, e.g. `loss = mse`, `optimizer = Adam()`".into());
        }
    }

    /// E0503 at the source name when the declared element shape or class count cannot fit.
    fn data_fits(&mut self, t: &ast::TrainDef, input: &Ty, output: &Ty, d: &DataTy) -> bool {
        let rest = |ty: &Ty| -> Option<Shape> {
            match ty {
                Ty::Tensor(_, s) => Some(s.iter().skip(1).cloned().collect()),
                _ => None,
            }
        };
        let mut problems = Vec::new();
        if let (Some((_, shape)), Some(want)) = (&d.input, rest(input))
            && *shape != want
        {
            problems.push(format!(
                "its elements are [{}] but the model takes {}",
                shape_to_string(shape),
                self.show_ty(input)
            ));
        }
        if let (Some(n), Some((_, ts)), Some(out)) = (d.classes, &d.target, rest(output)) {
            if *ts != out && ts.len() == 1 {
                problems.push(format!("it has {n} classes but the model returns {}", self.show_ty(output)));
            } else if *ts != out {
                problems.push(format!(
                    "its targets are [{}] (labels of {n} classes) but the model returns {}",
                    shape_to_string(ts),
                    self.show_ty(output)
                ));
            }
        } else if let (Some((_, ts)), Some(out)) = (&d.target, rest(output))
            && *ts != out
        {
            problems.push(format!(
                "its targets are [{}] but the model returns {}",
                shape_to_string(ts),
                self.show_ty(output)
            ));
        }
        if problems.is_empty() {
            return true;
        }
        let d = self.error(
            Code::E0503,
            t.source.span,
            format!("data source `{}` cannot fit model `{}`", t.source.name, t.model.name),
        );
        d.primary.message = "this source does not fit".into();
        d.notes.extend(problems);
        false
    }

    fn train_value(
        &mut self,
        env: &mut Env,
        key: &str,
        value: &ast::Expr,
        model: Option<&(usize, Ty, Ty)>,
        target: Option<&Ty>,
        data_fits: bool,
    ) {
        match key {
            "loss" => self.train_loss(env, value, model, target, data_fits),
            "optimizer" | "clip" => {
                let t = self.expr(env, value);
                match (&t, key) {
                    (Ty::Error, _) => {}
                    (Ty::Optimizer(n), "clip") if !matches!(n.as_str(), "ClipNorm" | "ClipValue") => {
                        self.error(Code::E0302, value.span, "`clip` is `ClipNorm(n)` or `ClipValue(v)`")
                            .primary
                            .message = format!("this is `{n}`");
                    }
                    (Ty::Optimizer(_), _) => {}
                    (other, _) => {
                        let shown = self.show_ty(other);
                        let want = if key == "clip" {
                            "`ClipNorm(n)` or `ClipValue(v)`"
                        } else {
                            "an optimizer such as `Adam(lr = 0.001)`"
                        };
                        self.error(Code::E0302, value.span, format!("`{key}` takes {want}, found {shown}"))
                            .primary
                            .message = format!("this is {}", other.describe_kind());
                    }
                }
            }
            "batch" | "epochs" | "seed" => {
                let t = self.expr(env, value);
                let a = ArgV { name: None, ty: t, span: value.span, pair: None, expr: Some(value) };
                self.dim_const(&a, key, if key == "seed" { 0 } else { 1 });
            }
            "shuffle" => {
                let t = self.expr(env, value);
                if !matches!(t, Ty::ConstBool(Some(_)) | Ty::Error) {
                    let shown = self.show_ty(&t);
                    self.error(
                        Code::E0302,
                        value.span,
                        format!("`shuffle` is `true` or `false`, found {shown}"),
                    )
                    .primary
                    .message = "not a boolean".into();
                }
            }
            "validation" => {
                let t = self.expr(env, value);
                if !matches!(t, Ty::Data(_) | Ty::Error) {
                    let shown = self.show_ty(&t);
                    self.error(
                        Code::E0302,
                        value.span,
                        format!("`validation` names a data source, found {shown}"),
                    )
                    .primary
                    .message = "not a data source".into();
                }
            }
            "metrics" | "callbacks" | "freeze" => {
                let ExprKind::List(items) = &value.kind else {
                    self.error(Code::E0302, value.span, format!("`{key}` is a list: `{key} = [ … ]`"))
                        .primary
                        .message = "not a list".into();
                    return;
                };
                for item in items {
                    let t = self.expr(env, item);
                    let ok = match (key, &t) {
                        (_, Ty::Error) => true,
                        ("metrics", Ty::TrainBuiltin(n)) => ["accuracy", "loss"].contains(n),
                        ("callbacks", Ty::TrainBuiltin(n)) => {
                            ["log", "checkpoint", "early_stop", "nan_guard"].contains(n)
                        }
                        ("freeze", Ty::Str) => true,
                        _ => false,
                    };
                    if !ok {
                        let want = match key {
                            "metrics" => "a metric (`accuracy`)",
                            "callbacks" => "a callback (`log`, `checkpoint`, `early_stop`, `nan_guard`)",
                            _ => "a parameter name pattern such as \"0.*\"",
                        };
                        let shown = self.show_ty(&t);
                        self.error(Code::E0302, item.span, format!("expected {want}, found {shown}"))
                            .primary
                            .message = "wrong kind of value".into();
                    }
                }
            }
            "schedule" => {
                let t = self.expr(env, value);
                self.expect_schedule(&t, value.span);
            }
            _ => {}
        }
    }

    fn expect_schedule(&mut self, t: &Ty, span: Span) {
        if !matches!(t, Ty::TrainBuiltin("constant" | "step_decay" | "cosine" | "warmup") | Ty::Error) {
            let shown = self.show_ty(t);
            self.error(
                Code::E0302,
                span,
                format!("expected a schedule (`constant`, `step_decay`, `cosine`, `warmup`), found {shown}"),
            )
            .primary
            .message = "not a schedule".into();
        }
    }

    /// Calls of train built-ins: schedules and callbacks, with their arguments checked.
    pub(crate) fn call_train_builtin(
        &mut self,
        env: &mut Env,
        t: &Ty,
        span: Span,
        callee_span: Span,
        args: &[ArgV<'_>],
    ) -> Ty {
        let Ty::TrainBuiltin(name) = t else { return Ty::Error };
        let what = format!("`{name}`");
        let params: &[(&str, bool)] = match *name {
            "constant" | "nan_guard" => &[],
            "step_decay" => &[("every", true), ("gamma", true)],
            "cosine" => &[("total_steps", true)],
            "warmup" => &[("steps", true), ("then", true)],
            "log" => &[("every", false)],
            "checkpoint" => &[("path", true), ("every", false)],
            "early_stop" => &[("patience", true), ("monitor", false)],
            _ => {
                self.error(Code::E0302, callee_span, format!("{what} is not callable")).primary.message =
                    "a name, not a function".into();
                return Ty::Error;
            }
        };
        let Some(slots) = self.bind_args(&super::call::spec(params), args, span, &what) else {
            return Ty::Error;
        };
        for (i, (pname, _)) in params.iter().enumerate() {
            let Some(a) = slot(args, &slots, i) else { continue };
            match *pname {
                "every" | "total_steps" | "steps" | "patience" => {
                    self.dim_const(a, pname, 1);
                }
                "gamma" => {
                    if !matches!(&a.ty, Ty::Dim(_) | Ty::Error)
                        && !matches!(&a.ty, Ty::Tensor(Elem::F32, s) if s.is_empty())
                    {
                        self.error(Code::E0302, a.span, "`gamma` is a number").primary.message =
                            "not a number".into();
                    }
                    self.positive_value(a, "gamma", false);
                }
                "then" => self.expect_schedule(&a.ty, a.span),
                "path" => self.path_arg(env.file, a, Folder::Output),
                "monitor"
                    if !matches!(
                        a.ty,
                        Ty::TrainBuiltin("loss" | "val_loss" | "val_accuracy") | Ty::Error
                    ) =>
                {
                    self.error(Code::E0302, a.span, "`monitor` is `loss`, `val_loss` or `val_accuracy`")
                        .primary
                        .message = "not a metric name".into();
                }
                _ => {}
            }
        }
        Ty::TrainBuiltin(name)
    }

    /// `loss = mse` or `loss = huber_loss(delta = 0.5)`: a loss that takes the model's output and
    /// the data's targets (E0301 on the `loss =` line, §3.7).
    fn train_loss(
        &mut self,
        env: &mut Env,
        value: &ast::Expr,
        model: Option<&(usize, Ty, Ty)>,
        target: Option<&Ty>,
        data_fits: bool,
    ) {
        let (callee, hyper): (&ast::Expr, &[ast::Arg]) = match &value.kind {
            ExprKind::Call { callee, generics: None, args } => (callee, args),
            _ => (value, &[]),
        };
        let t = self.expr(env, callee);
        let Ty::Fn(f @ FnVal::Item(id)) = &t else {
            if !t.is_error() {
                let shown = self.show_ty(&t);
                self.error(Code::E0302, value.span, format!("`loss` takes a loss function, found {shown}"))
                    .primary
                    .message = "not a loss".into();
            }
            return;
        };
        let id = *id;
        let Some(Sig::Fn(sig)) = self.sig(id, Some(callee.span)) else { return };
        if sig.params.len() < 2 {
            self.error(Code::E0303, value.span, "a loss takes the model's output and the target")
                .primary
                .message = "takes fewer than two arguments".into();
            return;
        }
        // Hyperparameters by name only; the first two arguments come from training.
        let mut argv = self.eval_args(env, hyper);
        for a in &argv {
            if a.name.is_none() {
                self.error(
                    Code::E0303,
                    a.span,
                    "a loss's hyperparameters are given by name: `huber_loss(delta = 0.5)`",
                )
                .primary
                .message = "positional argument".into();
                return;
            }
            if let Some(n) = a.name
                && (sig.params.iter().take(2).any(|p| p.name == n.name)
                    || !sig.params.iter().any(|p| p.name == n.name))
            {
                let d = self.error(
                    Code::E0303,
                    n.span,
                    format!("`{}` has no hyperparameter `{}`", self.show_fn(f), n.name),
                );
                d.primary.message = "unknown argument".into();
                let names: Vec<&str> = sig.params.iter().skip(2).map(|p| p.name.as_str()).collect();
                if let Some(s) = super::suggest(&n.name, names.iter().copied()) {
                    d.help = Some(format!("did you mean `{s}`?"));
                }
                return;
            }
        }
        let (Some((_, _, out)), Some(target), true) = (model, target, data_fits) else { return };
        let mut probe = vec![
            ArgV { name: None, ty: out.clone(), span: value.span, pair: None, expr: None },
            ArgV { name: None, ty: target.clone(), span: value.span, pair: None, expr: None },
        ];
        probe.append(&mut argv);
        let name = self.idx.items.get(id).map(|i| i.name.clone()).unwrap_or_default();
        let before = self.diags.len();
        let mut scratch = Env::new(env.file, Ctx::Top);
        scratch.bind("B", Ty::Dim(Dim::var("B")));
        let got = self.instantiate(&mut scratch, &sig, &name, value.span, value.span, None, &probe, None);
        let new: Vec<_> = self.diags.drain(before..).collect();
        // Named hyperparameter errors keep their own place; shape errors become one loss/model message.
        let (hyper_errs, shape_errs): (Vec<_>, Vec<_>) =
            new.into_iter().partition(|d| d.primary.span != value.span);
        self.diags.extend(hyper_errs);
        if !shape_errs.is_empty()
            || !matches!(&got, Ty::Tensor(Elem::F32, s) if s.is_empty()) && !got.is_error()
        {
            let d = self.error(
                Code::E0301,
                value.span,
                format!(
                    "loss `{name}` cannot take the model's output {} and the targets {}",
                    self.show_ty(out),
                    self.show_ty(target)
                ),
            );
            d.primary.message = "this loss does not fit the model".into();
            for note in shape_errs.into_iter().flat_map(|e| std::iter::once(e.message).chain(e.notes)) {
                if !d.notes.contains(&note) {
                    d.notes.push(note);
                }
            }
        }
        let _ = tensor_to_string;
    }
}
