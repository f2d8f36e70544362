//! Semantic checking (LANGUAGE.md §2–§7, §10, §12): names, types and static shapes, effects, and
//! the configuration of models, data sources and train blocks.
//!
//! Items are checked lazily, on first use, and memoised: a function's signature (with an inferred
//! result type and effect) is ready when a caller needs it, in any source order. A use of an item
//! still being checked is a cycle (E0204). Every error is recorded and checking goes on with
//! `Ty::Error`, which unifies with everything, so one run reports every independent error.

mod call;
mod config;
mod expr;
mod index;
mod layer;
mod prim_rules;
pub mod prims;
pub mod ty;
pub(crate) mod unify;

use std::collections::{HashMap, HashSet};

use fluxc_syntax::ast::{self, Item};
use fluxc_syntax::limits::MAX_DEPENDENCY_DEPTH;
use fluxc_syntax::{Code, Diagnostic, FileId, Span};

use crate::dims::Dim;
pub use index::{Global, Index, ItemInfo};
use prims::Prim;
use ty::{Callee, Effect, Ty};

/// Where a path must stay (§3, §10.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Folder {
    Project,
    Output,
}

/// What the checker asks of the outside world: whether a path written in a file stays inside
/// the project (or output) folder. Implemented on disk by the CLI, in memory by tests.
pub trait PathPolicy: Sync {
    /// `from` is the name of the file the path is written in (as the source map knows it).
    fn stays_inside(&self, from: &str, path: &str, folder: Folder) -> bool;
}

/// One source file's parsed items, and which std module it is (None for user files).
pub struct Unit<'a> {
    pub file: FileId,
    pub name: &'a str,
    pub ast: &'a ast::File,
    pub std_module: Option<&'static str>,
    /// Files this one brings into scope with `use "…"` (already loaded and parsed).
    pub uses: Vec<FileId>,
}

/// A per-binding summary line (`name : type !effect`) and per-expression types, for hover,
/// `--emit` and the pass-fixture snapshots.
#[derive(Clone, Debug, Default)]
pub struct CheckInfo {
    pub bindings: Vec<BindingInfo>,
    pub exprs: Vec<ExprInfo>,
}

/// One expression of the main file: its type (dtype and shape) and effect, as hover shows them.
#[derive(Clone, Debug)]
pub struct ExprInfo {
    pub span: Span,
    pub ty: String,
    pub effect: Effect,
}

#[derive(Clone, Debug)]
pub struct BindingInfo {
    pub span: Span,
    pub text: String,
    /// An item (function, layer, model …) rather than a `let` inside a body.
    pub is_item: bool,
}

/// An effect's origin: the call that brought it into a body, for the chain of labels (§5).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Witness {
    pub span: Span,
    pub callee: Callee,
    pub name: String,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Effects {
    pub effect: Effect,
    pub rng: Option<Witness>,
    pub io: Option<Witness>,
}

impl Effects {
    pub fn add(&mut self, e: Effect, w: &Witness) {
        self.effect = self.effect.max(e);
        if e == Effect::Rng && self.rng.is_none() {
            self.rng = Some(w.clone());
        }
        if e == Effect::Io && self.io.is_none() {
            self.io = Some(w.clone());
        }
    }

    /// Adds what another part of the same body did (keeping the first witness of each effect).
    pub fn merge(&mut self, other: &Effects) {
        self.effect = self.effect.max(other.effect);
        if self.rng.is_none() {
            self.rng.clone_from(&other.rng);
        }
        if self.io.is_none() {
            self.io.clone_from(&other.io);
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct DimParamSig {
    pub name: String,
    pub shape: bool,
    pub default: Option<Dim>,
}

#[derive(Clone, Debug)]
pub(crate) struct ParamSig {
    pub name: String,
    pub ty: Ty,
    /// The default as written (`0.001`, `identity`), if there is one.
    pub default: Option<String>,
}

/// A deferred shape fact of a generic body, checked again at each instantiation (E0301 there).
#[derive(Clone, Debug)]
pub(crate) struct Constraint {
    pub kind: ConstraintKind,
    pub message: String,
}

#[derive(Clone, Debug)]
pub(crate) enum ConstraintKind {
    /// `a == b`
    Eq(Dim, Dim),
    /// `a <= b`
    Le(Dim, Dim),
}

#[derive(Clone, Debug)]
pub(crate) struct FnSig {
    pub dims: Vec<DimParamSig>,
    pub params: Vec<ParamSig>,
    pub ret: Ty,
    pub effects: Effects,
    pub constraints: Vec<Constraint>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemberKind {
    Param,
    State,
    Field,
}

#[derive(Clone, Debug)]
pub(crate) struct LayerSig {
    pub dims: Vec<DimParamSig>,
    pub params: Vec<ParamSig>,
    pub members: Vec<(String, MemberKind, Ty)>,
    pub forward: Option<FnSig>,
    pub constraints: Vec<Constraint>,
}

#[derive(Clone, Debug)]
pub(crate) struct OptSig {
    pub params: Vec<ParamSig>,
}

#[derive(Clone, Debug)]
pub(crate) enum Sig {
    Fn(FnSig),
    Layer(Box<LayerSig>),
    Optimizer(OptSig),
    Model {
        input: Ty,
        output: Ty,
    },
    Data(Box<ty::DataTy>),
    Train,
    /// Checked already, and what it would give is an error (reported once).
    Error,
}

enum SigState {
    Todo,
    InProgress,
    Done(Box<Sig>),
}

/// The kind of body being checked: what effects and statements it allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ctx {
    Fn,
    Loss,
    Forward,
    /// `param`/`state` initialisers and sub-layer fields of a layer.
    LayerInit,
    OptUpdate,
    OptInit,
    Model,
    Top,
    Data,
    Train,
}

impl Ctx {
    /// What the context is called in messages, and the effects it forbids.
    pub fn forbids(self, e: Effect) -> bool {
        match self {
            Ctx::Forward | Ctx::LayerInit | Ctx::Model => e == Effect::Io,
            Ctx::Loss | Ctx::OptUpdate | Ctx::OptInit => e >= Effect::Rng,
            _ => false,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Local {
    pub ty: Ty,
}

/// The environment of one body.
pub(crate) struct Env {
    pub file: FileId,
    pub ctx: Ctx,
    /// The item whose body this is (for messages), and its kind word ("layer", "loss"…).
    pub owner: Option<(String, &'static str)>,
    pub scopes: Vec<HashMap<String, Local>>,
    pub shape_vars: HashSet<String>,
    pub effects: Effects,
    pub in_training: bool,
    /// Names that `:=` may assign here.
    pub states: HashSet<String>,
    /// In an optimizer's `update`: only elementwise operations (§12.17).
    pub elementwise_only: bool,
    /// The declared type of a `param`/`state` initialiser (§10.4: omitted dims come from it).
    pub init_hint: Option<Ty>,
    pub constraints: Vec<Constraint>,
    /// Inside a train value: train built-ins are looked up first (§3.7).
    pub train_value: bool,
}

impl Env {
    pub fn new(file: FileId, ctx: Ctx) -> Env {
        Env {
            file,
            ctx,
            owner: None,
            scopes: vec![HashMap::new()],
            shape_vars: HashSet::new(),
            effects: Effects::default(),
            in_training: false,
            states: HashSet::new(),
            elementwise_only: false,
            init_hint: None,
            constraints: Vec::new(),
            train_value: false,
        }
    }

    pub fn lookup(&self, name: &str) -> Option<&Local> {
        self.scopes.iter().rev().find_map(|s| s.get(name))
    }

    pub fn bind(&mut self, name: &str, ty: Ty) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.insert(name.to_owned(), Local { ty });
        }
    }

    pub fn push(&mut self) {
        self.scopes.push(HashMap::new());
    }

    pub fn pop(&mut self) {
        if self.scopes.len() > 1 {
            self.scopes.pop();
        }
    }

    /// Every name visible here (for "did you mean").
    pub fn names(&self) -> Vec<String> {
        self.scopes.iter().flat_map(|s| s.keys().cloned()).collect()
    }
}

pub struct Checker<'a> {
    pub(crate) idx: Index<'a>,
    sigs: Vec<SigState>,
    /// Items being checked, with the call currently being made from each (for E0204).
    stack: Vec<(usize, Span)>,
    reported_cycles: HashSet<Vec<usize>>,
    fresh: usize,
    pub(crate) diags: Vec<Diagnostic>,
    pub(crate) info: CheckInfo,
    pub(crate) paths: &'a dyn PathPolicy,
    /// The file whose bindings are summarised (the file given to the command).
    main: FileId,
    pub(crate) file_names: HashMap<FileId, String>,
    too_deep_reported: bool,
}

/// Checks `units` (std modules and user files; `main` is the file given to the command) and
/// returns every diagnostic, sorted by position, and the per-binding summary of `main`.
pub fn check_units(units: &[Unit<'_>], main: FileId, paths: &dyn PathPolicy) -> (Vec<Diagnostic>, CheckInfo) {
    let mut checker = Checker::new(units, main, paths);
    checker.run(units);
    let mut diags = checker.diags;
    diags.sort_by_key(|d| (d.primary.span.file, d.primary.span.start));
    diags.dedup();
    (diags, checker.info)
}

impl<'a> Checker<'a> {
    fn new(units: &[Unit<'a>], main: FileId, paths: &'a dyn PathPolicy) -> Checker<'a> {
        let (idx, diags) = Index::build(units);
        let n = idx.items.len();
        Checker {
            idx,
            sigs: (0..n).map(|_| SigState::Todo).collect(),
            stack: Vec::new(),
            reported_cycles: HashSet::new(),
            fresh: 0,
            diags,
            info: CheckInfo::default(),
            paths,
            main,
            file_names: units.iter().map(|u| (u.file, u.name.to_owned())).collect(),
            too_deep_reported: false,
        }
    }

    fn run(&mut self, units: &[Unit<'a>]) {
        for unit in units {
            for top in &unit.ast.tops {
                if let ast::Top::Item(Item::Use(u)) = top {
                    self.check_use(u);
                }
            }
        }
        for id in 0..self.idx.items.len() {
            self.sig(id, None);
        }
        for unit in units {
            if unit.file != self.main {
                continue;
            }
            let mut env = Env::new(unit.file, Ctx::Top);
            for top in &unit.ast.tops {
                if let ast::Top::Stmt(s) = top {
                    self.stmt(&mut env, s);
                }
            }
            // Effects at the top level are all allowed; nothing more to report.
        }
        self.summarise();
    }

    fn check_use(&mut self, u: &ast::UseDecl) {
        let ast::UseTarget::Path { segments, tail } = &u.target else { return };
        let Some(first) = segments.first() else { return };
        if first.name != "std" {
            self.diags.push(
                Diagnostic::error(Code::E0202, first.span, format!("unknown module `{}`", first.name))
                    .with_primary_label("not a module")
                    .with_help(
                        "modules are `std::act`, `std::init`, `std::layers`, `std::losses`, `std::optim`",
                    ),
            );
            return;
        }
        let (module, name): (Option<&ast::Ident>, Option<&ast::Ident>) = match tail {
            ast::UseTail::Single => match segments.len() {
                1 => return, // `use std`
                2 => (segments.get(1), None),
                _ => (segments.get(1), segments.get(2)),
            },
            _ => (segments.get(1), None),
        };
        let Some(module) = module else { return };
        let Some(exports) = self.idx.modules.get(module.name.as_str()) else {
            let names: Vec<&str> = prims::STD_MODULES.to_vec();
            let mut d =
                Diagnostic::error(Code::E0202, module.span, format!("unknown module `std::{}`", module.name))
                    .with_primary_label("no such module in std");
            if let Some(s) = suggest(&module.name, names.iter().copied()) {
                d = d.with_help(format!("did you mean `std::{s}`?"));
            }
            self.diags.push(d);
            return;
        };
        if segments.len() > 3 {
            if let Some(extra) = segments.get(3) {
                self.diags.push(
                    Diagnostic::error(Code::E0202, extra.span, "std modules have no submodules")
                        .with_primary_label("unexpected path segment"),
                );
            }
            return;
        }
        let mut wanted: Vec<&ast::Ident> = Vec::new();
        if let Some(n) = name {
            wanted.push(n);
        }
        if let ast::UseTail::Group(names) = tail {
            wanted.extend(names.iter());
        }
        let mut missing = Vec::new();
        for n in wanted {
            if !exports.contains(&n.name) {
                missing.push(n.clone());
            }
        }
        for n in missing {
            let mut d = Diagnostic::error(
                Code::E0201,
                n.span,
                format!("`{}` is not in `std::{}`", n.name, module.name),
            )
            .with_primary_label("unknown name");
            let exports = self.idx.modules.get(module.name.as_str());
            if let Some(s) = exports.and_then(|e| suggest(&n.name, e.iter().map(String::as_str))) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            self.diags.push(d);
        }
    }

    // ----------------------------------------------------------------------------- names

    pub(crate) fn global(&self, file: FileId, name: &str) -> Option<Global> {
        self.idx.global(file, name)
    }

    /// E0201 with a "did you mean" drawn from everything visible.
    pub(crate) fn unknown_name(&mut self, env: &Env, ident: &ast::Ident, what: &str) {
        let mut candidates: Vec<String> = env.names();
        if let Some(s) = self.idx.scopes.get(&env.file) {
            candidates.extend(s.keys().cloned());
        }
        candidates.extend(self.idx.prelude.keys().cloned());
        candidates.extend(Prim::ALL.iter().map(|p| p.name().to_owned()));
        let mut d = Diagnostic::error(Code::E0201, ident.span, format!("unknown {what} `{}`", ident.name))
            .with_primary_label("not found in this scope");
        if let Some(s) = suggest(&ident.name, candidates.iter().map(String::as_str)) {
            d = d.with_help(format!("did you mean `{s}`?"));
        }
        self.diags.push(d);
    }

    /// Dimension arithmetic left the range of i64: E0301 at `span` (never a silent error type).
    pub(crate) fn overflow(&mut self, span: Span) -> Ty {
        self.error(Code::E0301, span, "dimension arithmetic overflows (a dimension beyond 2^63)")
            .primary
            .message = "dimensions too large".into();
        Ty::Error
    }

    pub(crate) fn fresh_suffix(&mut self) -> String {
        self.fresh += 1;
        format!("#{}", self.fresh)
    }

    pub(crate) fn error(&mut self, code: Code, span: Span, message: impl Into<String>) -> &mut Diagnostic {
        self.diags.push(Diagnostic::error(code, span, message));
        let last = self.diags.len() - 1;
        #[allow(clippy::indexing_slicing)] // just pushed
        &mut self.diags[last]
    }

    // ------------------------------------------------------------------------------ sigs

    /// The signature of an item, checking it first if needed. `call` is the span of the use that
    /// asks (for E0204); `None` when the driver walks every item.
    pub(crate) fn sig(&mut self, id: usize, call: Option<Span>) -> Option<Sig> {
        match self.sigs.get(id) {
            Some(SigState::Done(sig)) => return Some((**sig).clone()),
            Some(SigState::InProgress) => {
                self.report_cycle(id, call);
                return None;
            }
            Some(SigState::Todo) => {}
            None => return None,
        }
        if self.stack.len() >= MAX_DEPENDENCY_DEPTH {
            if let Some(span) = call
                && !self.too_deep_reported
            {
                self.too_deep_reported = true;
                let d = self.error(
                    Code::E0102,
                    span,
                    format!("definitions depend on each other more than {MAX_DEPENDENCY_DEPTH} levels deep"),
                );
                d.primary.message = "this use is too deep".into();
            }
            return None;
        }
        if let Some(s) = self.sigs.get_mut(id) {
            *s = SigState::InProgress;
        }
        self.stack.push((id, Span::default()));
        let sig = self.check_item(id);
        self.stack.pop();
        if let Some(s) = self.sigs.get_mut(id) {
            *s = SigState::Done(Box::new(sig.clone()));
        }
        Some(sig)
    }

    /// Records which call the body being checked is making (the next link of a possible cycle).
    pub(crate) fn note_call(&mut self, span: Span) {
        if let Some(top) = self.stack.last_mut() {
            top.1 = span;
        }
    }

    fn report_cycle(&mut self, id: usize, call: Option<Span>) {
        if let (Some(span), Some(top)) = (call, self.stack.last_mut()) {
            top.1 = span;
        }
        let Some(start) = self.stack.iter().position(|(i, _)| *i == id) else { return };
        let cycle: Vec<(usize, Span)> = self.stack.get(start..).unwrap_or_default().to_vec();
        let mut key: Vec<usize> = cycle.iter().map(|(i, _)| *i).collect();
        key.sort_unstable();
        if !self.reported_cycles.insert(key) {
            return;
        }
        // Report at the call in the cycle's first item in source order (§10.1).
        let Some(first) = cycle
            .iter()
            .min_by_key(|(i, _)| self.idx.items.get(*i).map(|it| (it.file, it.name_span.start)))
            .cloned()
        else {
            return;
        };
        let names: Vec<String> = cycle
            .iter()
            .filter_map(|(i, _)| self.idx.items.get(*i).map(|it| format!("`{}`", it.name)))
            .collect();
        let first_name = self.idx.items.get(first.0).map(|i| i.name.clone()).unwrap_or_default();
        let message = if cycle.len() == 1 {
            format!("`{first_name}` calls itself")
        } else {
            format!("recursive cycle: {} and back", names.join(" → "))
        };
        let mut d =
            Diagnostic::error(Code::E0204, first.1, message).with_primary_label("this use closes the cycle");
        for (i, span) in &cycle {
            if *span != first.1
                && let Some(it) = self.idx.items.get(*i)
            {
                d = d.with_label(*span, format!("`{}` calls on from here", it.name));
            }
        }
        self.diags.push(d.with_note("functions and layers are inlined at compile time, so recursion (direct or mutual) is not allowed"));
    }

    fn check_item(&mut self, id: usize) -> Sig {
        let Some(info) = self.idx.items.get(id) else { return Sig::Error };
        let item = info.item;
        let file = info.file;
        match item {
            Item::Fn(f) => self.check_fn(file, f, Ctx::Fn, "function"),
            Item::Loss(f) => self.check_fn(file, f, Ctx::Loss, "loss"),
            Item::Layer(l) => self.check_layer(file, l),
            Item::Optimizer(o) => self.check_optimizer(file, o),
            Item::Model(m) => self.check_model(file, m),
            Item::Data(d) => self.check_data(file, d),
            Item::Train(t) => {
                self.check_train(file, t);
                Sig::Train
            }
            Item::Use(_) => Sig::Error,
        }
    }

    // ------------------------------------------------------------------------- summaries

    fn summarise(&mut self) {
        for id in 0..self.idx.items.len() {
            let Some(info) = self.idx.items.get(id) else { continue };
            if info.file != self.main {
                continue;
            }
            let name = info.name.clone();
            let span = info.name_span;
            let is_loss = matches!(info.item, Item::Loss(_));
            let text = match self.sigs.get(id) {
                Some(SigState::Done(sig)) if is_loss => {
                    self.describe_sig(&name, sig).replacen(" : fn", " : loss", 1)
                }
                Some(SigState::Done(sig)) => self.describe_sig(&name, sig),
                _ => continue,
            };
            self.info.bindings.push(BindingInfo { span, text, is_item: true });
        }
        self.info.bindings.sort_by_key(|b| b.span.start);
    }

    pub(crate) fn describe_sig(&self, name: &str, sig: &Sig) -> String {
        let dims = |ds: &[DimParamSig]| {
            if ds.is_empty() {
                String::new()
            } else {
                let parts: Vec<String> = ds
                    .iter()
                    .map(|d| {
                        let base = if d.shape { format!("..{}", d.name) } else { d.name.clone() };
                        match &d.default {
                            Some(v) => format!("{base} = {}", ty::show_dim(v)),
                            None => base,
                        }
                    })
                    .collect();
                format!("[{}]", parts.join(", "))
            }
        };
        let params = |ps: &[ParamSig]| {
            let parts: Vec<String> = ps
                .iter()
                .map(|p| match &p.default {
                    Some(d) => format!("{}: {} = {d}", p.name, self.show_ty(&p.ty)),
                    None => format!("{}: {}", p.name, self.show_ty(&p.ty)),
                })
                .collect();
            parts.join(", ")
        };
        match sig {
            Sig::Fn(f) => format!(
                "{name} : fn{}({}) -> {} !{}",
                dims(&f.dims),
                params(&f.params),
                self.show_ty(&f.ret),
                f.effects.effect.as_str()
            ),
            Sig::Layer(l) => {
                let fwd = l
                    .forward
                    .as_ref()
                    .map(|f| {
                        format!(
                            " forward{}({}) -> {} !{}",
                            dims(&f.dims),
                            params(&f.params),
                            self.show_ty(&f.ret),
                            f.effects.effect.as_str()
                        )
                    })
                    .unwrap_or_default();
                let members: Vec<String> = l
                    .members
                    .iter()
                    .map(|(n, k, t)| {
                        let kw = match k {
                            MemberKind::Param => "param ",
                            MemberKind::State => "state ",
                            MemberKind::Field => "",
                        };
                        format!("{kw}{n}: {}", self.show_ty(t))
                    })
                    .collect();
                format!(
                    "{name} : layer{}({}) {{ {} }}{fwd}",
                    dims(&l.dims),
                    params(&l.params),
                    members.join("; ")
                )
            }
            Sig::Optimizer(o) => format!("{name} : optimizer({}) !pure", params(&o.params)),
            Sig::Model { input, output } => {
                format!("{name} : model {} -> {}", self.show_ty(input), self.show_ty(output))
            }
            Sig::Data(d) => format!("{name} : data {}", self.show_data(d)),
            Sig::Train => format!("train {name}"),
            Sig::Error => format!("{name} : {{error}}"),
        }
    }

    pub(crate) fn show_data(&self, d: &ty::DataTy) -> String {
        let part = |p: &Option<(ty::Elem, ty::Shape)>| match p {
            Some((e, s)) => ty::tensor_to_string(*e, s),
            None => "?".to_owned(),
        };
        format!("{} -> {}", part(&d.input), part(&d.target))
    }

    /// A type as users read it, with layer values named by their constructors.
    pub(crate) fn show_ty(&self, t: &Ty) -> String {
        match t {
            Ty::Layer(l) => self.show_layer(l),
            Ty::Model(id) => {
                format!("model {}", self.idx.items.get(*id).map(|i| i.name.as_str()).unwrap_or("?"))
            }
            Ty::Fn(f) => self.show_fn(f),
            Ty::Tuple(items) => {
                let parts: Vec<String> = items.iter().map(|t| self.show_ty(t)).collect();
                if parts.len() == 1 {
                    format!("({},)", parts.join(", "))
                } else {
                    format!("({})", parts.join(", "))
                }
            }
            Ty::Data(d) => format!("data {}", self.show_data(d)),
            other => other.to_string(),
        }
    }

    pub(crate) fn show_fn(&self, f: &ty::FnVal) -> String {
        match f {
            ty::FnVal::Item(id) => {
                format!("fn {}", self.idx.items.get(*id).map(|i| i.name.as_str()).unwrap_or("?"))
            }
            ty::FnVal::Prim(p) => format!("fn {}", p.name()),
            ty::FnVal::Param { .. } => Ty::Fn(f.clone()).to_string(),
        }
    }

    pub(crate) fn show_layer(&self, l: &ty::LayerVal) -> String {
        use ty::LayerVal as L;
        match l {
            L::User { item, dims } => {
                let name = self.idx.items.get(*item).map(|i| i.name.as_str()).unwrap_or("?");
                if dims.is_empty() {
                    name.to_owned()
                } else {
                    let parts: Vec<String> = dims.iter().map(ty::show_dim).collect();
                    format!("{name}[{}]", parts.join(", "))
                }
            }
            L::Chain(ls) => {
                let parts: Vec<String> = ls.iter().map(|l| self.show_layer(l)).collect();
                format!("Chain({})", parts.join(", "))
            }
            L::Parallel(f, ls) => {
                let parts: Vec<String> = ls.iter().map(|l| self.show_layer(l)).collect();
                format!("Parallel({}, {})", self.show_fn(f), parts.join(", "))
            }
            L::Skip(l, f) => format!("SkipConnection({}, {})", self.show_layer(l), self.show_fn(f)),
            L::Recur(l) => format!("Recur({})", self.show_layer(l)),
            L::BatchNorm { c } => format!("BatchNorm[{}]", ty::show_dim(c)),
            L::GroupNorm { g, c } => format!("GroupNorm[{}, {}]", ty::show_dim(g), ty::show_dim(c)),
            L::Func(f) => self.show_fn(f),
        }
    }
}

/// The closest candidate by edit distance, if it is close enough to be a likely typo.
pub(crate) fn suggest<'s>(name: &str, candidates: impl Iterator<Item = &'s str>) -> Option<String> {
    let limit = (name.chars().count() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        if c == name {
            continue;
        }
        let d = edit_distance(name, c);
        if d <= limit && best.is_none_or(|(bd, bc)| d < bd || (d == bd && c < bc)) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c.to_owned())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != cb);
            let del = prev.get(j + 1).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}
