//! Lowering: the checked AST becomes IR (DESIGN.md: monomorphise, inline functions and layers,
//! one variant for training and one for inference).
//!
//! The lowering is an evaluator over the AST whose values are compile-time things (dimensions,
//! booleans, strings, functions, layers) or IR values. Every call is inlined: a function's
//! dimensions are solved from its arguments' (concrete) shapes, then its body is evaluated with
//! them bound. Only the batch `B` stays symbolic. The checker has proven the program, so a
//! failure here is either an internal error or, when a script runs, a run-time problem with
//! outside data; both are reported as a [`LowerError`] with the source span, never a panic.

mod layers;
mod prims;
pub mod setup;
mod train;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;

use fluxc_syntax::ast::{
    self, ArgKind, BinOp, ExprKind, GenericArg, IndexKind, PatternKind, StmtKind, TypeKind,
    UnaryOp as AstUnary,
};
use fluxc_syntax::{FileId, Span};

use crate::check::prims::Prim;
use crate::check::ty::{Elem, Sh, Ty};
use crate::check::unify::Unifier;
use crate::check::{Global, Index};
use crate::dims::Dim;
use crate::ir::{BinaryOp, DType, Graph, IrError, Op, ReduceOp, TensorTy, UnaryOp, ValueId};

pub use layers::{LayerInst, LayerKind, LayerRow, format_tensor};
pub use train::{eval_step, matches_pattern, train_step};

/// A failure while lowering or running: a message and, where known, the source span.
#[derive(Clone, Debug, PartialEq)]
pub struct LowerError {
    pub span: Option<Span>,
    pub message: String,
}

impl From<IrError> for LowerError {
    fn from(e: IrError) -> LowerError {
        LowerError { span: None, message: format!("internal error in the IR: {}", e.0) }
    }
}

pub type LResult<T> = Result<T, LowerError>;

pub(crate) fn fail<T>(span: Span, message: impl Into<String>) -> LResult<T> {
    Err(LowerError { span: Some(span), message: message.into() })
}

/// A function value: an item, a primitive, or (for the I/O handle) nothing else.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FnRef {
    Item(usize),
    Prim(Prim),
}

/// What an expression evaluates to while lowering.
#[derive(Clone, Debug)]
pub enum Val {
    T(ValueId),
    Dim(Dim),
    Bool(bool),
    Str(String),
    Tuple(Vec<Val>),
    Fn(FnRef),
    Layer(Rc<LayerInst>),
    Model(usize),
    /// A model with given parameter values (`load[MODEL](path)`).
    Loaded(usize, Rc<Vec<ValueId>>),
}

impl Val {
    pub fn unit() -> Val {
        Val::Tuple(Vec::new())
    }
}

/// How a layer's `param`/`state` members become values.
#[derive(Clone, Debug)]
pub enum ParamMode {
    /// As graph parameters (a model's forward or train-step graph).
    Slots,
    /// By running their initialisers inline (scripts, and the init graph).
    Init,
    /// From these values, in creation order (`load[MODEL](path)`).
    Given(Rc<Vec<ValueId>>),
}

/// A parameter created while constructing layers: its path, type and whether it is trainable.
#[derive(Clone, Debug)]
pub struct ParamSpec {
    pub name: String,
    pub ty: TensorTy,
    pub trainable: bool,
}

/// The lowering's environment for one body.
#[derive(Clone, Default)]
pub(crate) struct LEnv {
    pub file: Option<FileId>,
    pub scopes: Vec<HashMap<String, Val>>,
    pub shapes: HashMap<String, Vec<Sh>>,
    /// State members assignable with `:=` here (name → parameter index).
    pub states: HashMap<String, usize>,
    /// The layer path, for parameter names.
    pub path: String,
}

impl LEnv {
    pub fn new(file: FileId) -> LEnv {
        LEnv { file: Some(file), scopes: vec![HashMap::new()], ..LEnv::default() }
    }

    pub fn get(&self, name: &str) -> Option<&Val> {
        self.scopes.iter().rev().find_map(|s| s.get(name))
    }

    pub fn bind(&mut self, name: &str, v: Val) {
        if let Some(s) = self.scopes.last_mut() {
            s.insert(name.to_owned(), v);
        }
    }

    pub fn file(&self) -> FileId {
        self.file.unwrap_or_default()
    }
}

/// The I/O the lowering needs while running a script (the runtime implements it; DESIGN.md rule 1).
pub trait Io {
    fn print(&mut self, line: &str);
    /// Loads a tensor file (`.npy` or `.safetensors`), relative to the script, checked against
    /// the declared type (shape and element type).
    fn load(&mut self, path: &str, want: &TensorTy) -> Result<crate::interp::Array, String>;
    fn save(&mut self, path: &str, value: &crate::interp::Array, ty: &TensorTy) -> Result<(), String>;
    fn read_text(&mut self, path: &str) -> Result<String, String>;
    fn write_text(&mut self, path: &str, text: &str) -> Result<(), String>;
    fn now(&mut self) -> f64;
    fn env(&mut self, name: &str) -> String;
    /// Loads trained weights for a model: its parameters by name, in the order given.
    fn load_weights(&mut self, path: &str, params: &[ParamSpec])
    -> Result<Vec<crate::interp::Array>, String>;
    /// Computes the nodes of `g` from `vals.len()` on, appending one value each (a script's
    /// values as its statements need them). The default is the f64 reference interpreter; the
    /// CLI compiles them with the JIT.
    fn evaluate(
        &mut self,
        g: &Graph,
        inputs: &[crate::interp::Array],
        run: &crate::interp::Run,
        vals: &mut Vec<crate::interp::Array>,
    ) -> Result<(), crate::interp::EvalError> {
        crate::interp::eval_more(g, inputs, &[], run, vals)
    }
}

pub struct Lowerer<'a> {
    pub(crate) idx: &'a Index<'a>,
    pub g: Graph,
    /// The variant: `training` is this value everywhere (§3.2).
    pub training: bool,
    pub mode: ParamMode,
    /// Parameters created so far (creation order = manifest order).
    pub params: Vec<ParamSpec>,
    /// Parameter values created so far (graph slots or initialised values).
    pub param_values: Vec<ValueId>,
    /// `state := value` updates made in the training variant (parameter index → new value).
    pub state_updates: BTreeMap<usize, ValueId>,
    /// The next stream for rng sites outside initialisers (dropout, rand_* in a forward).
    pub(crate) next_stream: u32,
    /// Inlining depth (the checker bounds it; this guards against internal errors).
    depth: usize,
    fresh: usize,
    /// Running a script: I/O and the values computed so far.
    pub(crate) script: Option<layers::Script<'a>>,
    /// While a `param`/`state` initialiser runs: the declared shape (§10.4) and its stream.
    pub(crate) init_shape: Option<Vec<Dim>>,
    pub(crate) init_stream: Option<u32>,
    /// Each parameter's index in manifest order (trainable ones first, then layer state; §12.5,
    /// §12.11), the rng stream of its initialiser; creation order when absent.
    pub(crate) manifest_index: Option<HashMap<String, u32>>,
    /// The layers applied, in order (for `fluxc summary`).
    pub layer_log: Vec<layers::LayerRow>,
}

/// The first stream used by rng sites that are not initialisers (initialisers use the
/// parameter's index, §12.11).
pub const SITE_STREAM_BASE: u32 = 1 << 31;

impl<'a> Lowerer<'a> {
    pub fn new(idx: &'a Index<'a>, training: bool, mode: ParamMode) -> Lowerer<'a> {
        Lowerer {
            idx,
            g: Graph::default(),
            training,
            mode,
            params: Vec::new(),
            param_values: Vec::new(),
            state_updates: BTreeMap::new(),
            next_stream: SITE_STREAM_BASE,
            depth: 0,
            fresh: 0,
            script: None,
            init_shape: None,
            init_stream: None,
            manifest_index: None,
            layer_log: Vec::new(),
        }
    }

    pub(crate) fn fresh(&mut self, name: &str) -> String {
        self.fresh += 1;
        format!("{name}#{}", self.fresh)
    }

    pub(crate) fn global(&self, env: &LEnv, name: &str) -> Option<Global> {
        self.idx.global(env.file(), name)
    }

    // ------------------------------------------------------------------------ values

    pub(crate) fn tensor(&mut self, v: &Val, span: Span) -> LResult<ValueId> {
        match v {
            Val::T(t) => Ok(*t),
            Val::Dim(d) => self.dim_value(d, DType::I32),
            Val::Bool(b) => Ok(self.g.constant(f64::from(u8::from(*b)), DType::Bool)?),
            _ => fail(span, "expected a tensor"),
        }
    }

    /// A dimension as a scalar value (a constant, or computed from `B` at run time).
    pub(crate) fn dim_value(&mut self, d: &Dim, dtype: DType) -> LResult<ValueId> {
        match d.as_constant() {
            Some(c) => Ok(self.g.constant(c as f64, dtype)?),
            None => Ok(self.g.push(Op::Size(d.clone()), &[], Some(TensorTy::new(dtype, Vec::new())))?),
        }
    }

    pub(crate) fn ty_of(&self, v: ValueId) -> TensorTy {
        self.g.ty(v).cloned().unwrap_or(TensorTy { dtype: DType::F32, shape: Vec::new() })
    }

    /// Two operands for an elementwise op: dims and booleans take the other side's dtype.
    pub(crate) fn operands(&mut self, a: &Val, b: &Val, span: Span) -> LResult<(ValueId, ValueId)> {
        let want = |v: &Val, me: &Self| match v {
            Val::T(t) => Some(me.ty_of(*t).dtype),
            _ => None,
        };
        let (da, db) = (want(a, self), want(b, self));
        let x = match (a, db) {
            (Val::Dim(d), Some(dt)) if dt != DType::Bool => self.dim_value(d, dt)?,
            _ => self.tensor(a, span)?,
        };
        let y = match (b, da) {
            (Val::Dim(d), Some(dt)) if dt != DType::Bool => self.dim_value(d, dt)?,
            _ => self.tensor(b, span)?,
        };
        // Two dims (a comparison or a division mixing in a float): both i32 already.
        Ok((x, y))
    }

    pub(crate) fn f32_of(&mut self, v: &Val, span: Span) -> LResult<ValueId> {
        match v {
            Val::Dim(d) => self.dim_value(d, DType::F32),
            other => {
                let t = self.tensor(other, span)?;
                if self.ty_of(t).dtype == DType::F32 {
                    Ok(t)
                } else {
                    Ok(self.g.push(Op::Cast(DType::F32), &[t], None)?)
                }
            }
        }
    }

    /// The checker's view of a value's type, for unification against signatures.
    pub(crate) fn check_ty(&self, v: &Val) -> Ty {
        match v {
            Val::T(t) => {
                let ty = self.ty_of(*t);
                let elem = match ty.dtype {
                    DType::F32 => Elem::F32,
                    DType::I32 => Elem::I32,
                    DType::Bool => Elem::Bool,
                };
                Ty::Tensor(elem, ty.shape.into_iter().map(Sh::Dim).collect())
            }
            Val::Dim(d) => Ty::Dim(d.clone()),
            Val::Bool(b) => Ty::ConstBool(Some(*b)),
            Val::Str(_) => Ty::Str,
            Val::Tuple(items) => Ty::Tuple(items.iter().map(|i| self.check_ty(i)).collect()),
            _ => Ty::Error,
        }
    }

    // -------------------------------------------------------------------- statements

    pub(crate) fn block(&mut self, env: &mut LEnv, b: &ast::Block) -> LResult<Val> {
        env.scopes.push(HashMap::new());
        let mut last = Val::unit();
        let n = b.stmts.len();
        for (i, s) in b.stmts.iter().enumerate() {
            let v = self.stmt(env, s)?;
            if i + 1 == n {
                last = if matches!(s.kind, StmtKind::Expr(_)) { v } else { Val::unit() };
            }
        }
        // `:=` inside a block is visible after it (§12.18): carry state bindings out.
        let inner = env.scopes.pop().unwrap_or_default();
        for (name, v) in inner {
            if env.states.contains_key(&name) {
                env.bind(&name, v);
            }
        }
        Ok(last)
    }

    pub(crate) fn stmt(&mut self, env: &mut LEnv, s: &ast::Stmt) -> LResult<Val> {
        match &s.kind {
            StmtKind::Let { pattern, value, .. } => {
                let v = self.expr(env, value)?;
                self.bind_pattern(env, pattern, v, value.span)?;
                Ok(Val::unit())
            }
            StmtKind::Assign { target, value } => {
                let v = self.expr(env, value)?;
                if let Some(&p) = env.states.get(&target.name) {
                    let t = self.tensor(&v, value.span)?;
                    let want = self.ty_of(self.param_values.get(p).copied().unwrap_or(t));
                    let t = self.g.broadcast_to(t, &want.shape)?;
                    self.state_updates.insert(p, t);
                    // Sequential semantics (§12.1): later statements see the new value.
                    if let Some(scope) = env.scopes.iter_mut().rev().find(|s| s.contains_key(&target.name)) {
                        scope.insert(target.name.clone(), Val::T(t));
                    } else {
                        env.bind(&target.name, Val::T(t));
                    }
                }
                Ok(Val::unit())
            }
            StmtKind::Expr(e) => self.expr(env, e),
        }
    }

    fn bind_pattern(&mut self, env: &mut LEnv, p: &ast::Pattern, v: Val, span: Span) -> LResult<()> {
        match (&p.kind, v) {
            (PatternKind::Name(id), v) => {
                env.bind(&id.name, v);
                Ok(())
            }
            (PatternKind::Wildcard, _) => Ok(()),
            (PatternKind::Tuple(ps), Val::Tuple(vs)) if ps.len() == vs.len() => {
                for (p, v) in ps.iter().zip(vs) {
                    self.bind_pattern(env, p, v, span)?;
                }
                Ok(())
            }
            _ => fail(span, "internal: pattern does not fit its value"),
        }
    }

    // ------------------------------------------------------------------- expressions

    pub(crate) fn expr(&mut self, env: &mut LEnv, e: &ast::Expr) -> LResult<Val> {
        match &e.kind {
            ExprKind::Int(v) => Ok(Val::Dim(Dim::constant(i64::try_from(*v).unwrap_or(i64::MAX)))),
            ExprKind::Float(v) => Ok(Val::T(self.g.constant(*v, DType::F32)?)),
            ExprKind::Bool(b) => Ok(Val::Bool(*b)),
            ExprKind::Str(s) => Ok(Val::Str(s.clone())),
            ExprKind::Training => Ok(Val::Bool(self.training)),
            ExprKind::Name(id) => self.name(env, id),
            ExprKind::Tuple(items) | ExprKind::List(items) => {
                let vs = items.iter().map(|i| self.expr(env, i)).collect::<LResult<Vec<_>>>()?;
                Ok(Val::Tuple(vs))
            }
            ExprKind::Unary { op, operand } => {
                let v = self.expr(env, operand)?;
                match (op, v) {
                    (AstUnary::Neg, Val::Dim(d)) => Ok(Val::Dim(d.neg().map_err(|_| overflow(e.span))?)),
                    (AstUnary::Not, Val::Bool(b)) => Ok(Val::Bool(!b)),
                    (AstUnary::Neg, v) => {
                        let t = self.tensor(&v, e.span)?;
                        Ok(Val::T(self.g.unary(UnaryOp::Neg, t)?))
                    }
                    (AstUnary::Not, v) => {
                        let t = self.tensor(&v, e.span)?;
                        Ok(Val::T(self.g.unary(UnaryOp::Not, t)?))
                    }
                }
            }
            ExprKind::Binary { lhs, rest } => {
                let mut acc = self.expr(env, lhs)?;
                for tail in rest {
                    let r = self.expr(env, &tail.rhs)?;
                    acc = self.binary(tail.op, acc, r, tail.rhs.span)?;
                }
                Ok(acc)
            }
            ExprKind::Call { callee, generics, args } => {
                self.call(env, e.span, callee, generics.as_deref(), args)
            }
            ExprKind::Index { base, indices } => {
                let b = self.expr(env, base)?;
                let t = self.tensor(&b, base.span)?;
                self.index(env, t, indices, e.span)
            }
            ExprKind::Field { base, name } => {
                let b = self.expr(env, base)?;
                match b {
                    Val::Layer(l) => self.layer_field(&l, &name.name, name.span),
                    v => {
                        let t = self.tensor(&v, base.span)?;
                        let r = self.ty_of(t).rank();
                        let mut perm: Vec<usize> = (0..r).collect();
                        perm.swap(r - 1, r - 2);
                        Ok(Val::T(self.g.push(Op::Transpose { perm }, &[t], None)?))
                    }
                }
            }
            ExprKind::If { branches, otherwise } => self.if_expr(env, branches, otherwise.as_ref(), e.span),
            ExprKind::Error => fail(e.span, "internal: an erroneous expression reached lowering"),
        }
    }

    fn name(&mut self, env: &mut LEnv, id: &ast::Ident) -> LResult<Val> {
        if let Some(v) = env.get(&id.name) {
            return Ok(v.clone());
        }
        match self.global(env, &id.name) {
            Some(Global::Prim(p)) => Ok(Val::Fn(FnRef::Prim(p))),
            Some(Global::Item(i)) => match self.idx.items.get(i).map(|x| x.item) {
                Some(ast::Item::Fn(_) | ast::Item::Loss(_)) => Ok(Val::Fn(FnRef::Item(i))),
                Some(ast::Item::Layer(_)) => self.construct_user_layer(env, i, &[], None, id.span),
                Some(ast::Item::Model(_)) => Ok(Val::Model(i)),
                _ => fail(id.span, format!("`{}` cannot be used as a value here", id.name)),
            },
            None => fail(id.span, format!("internal: unknown name `{}`", id.name)),
        }
    }

    pub(crate) fn binary(&mut self, op: BinOp, a: Val, b: Val, span: Span) -> LResult<Val> {
        if let (Val::Dim(x), Val::Dim(y)) = (&a, &b) {
            let r = match op {
                BinOp::Add => Some(x.add(y)),
                BinOp::Sub => Some(x.sub(y)),
                BinOp::Mul => Some(x.mul(y)),
                BinOp::Div => Some(x.floor_div(y)),
                _ => None,
            };
            if let Some(r) = r {
                return Ok(Val::Dim(r.map_err(|_| overflow(span))?));
            }
            if let (Some(p), Some(q)) = (x.as_constant(), y.as_constant()) {
                let v = match op {
                    BinOp::Lt => Some(p < q),
                    BinOp::Le => Some(p <= q),
                    BinOp::Gt => Some(p > q),
                    BinOp::Ge => Some(p >= q),
                    BinOp::Eq => Some(p == q),
                    BinOp::Ne => Some(p != q),
                    _ => None,
                };
                if let Some(v) = v {
                    return Ok(Val::Bool(v));
                }
            }
        }
        if let (Val::Bool(x), Val::Bool(y), BinOp::And | BinOp::Or) = (&a, &b, op) {
            return Ok(Val::Bool(if op == BinOp::And { *x && *y } else { *x || *y }));
        }
        // `^` of two dims, or dims in a float context, are floats.
        let (x, y) = if op == BinOp::Pow {
            (self.f32_of(&a, span)?, self.f32_of(&b, span)?)
        } else {
            self.operands(&a, &b, span)?
        };
        let v = match op {
            BinOp::MatMul => self.matmul(x, y)?,
            _ => {
                let bop = match op {
                    BinOp::Or => BinaryOp::Or,
                    BinOp::And => BinaryOp::And,
                    BinOp::Eq => BinaryOp::Eq,
                    BinOp::Ne => BinaryOp::Ne,
                    BinOp::Lt => BinaryOp::Lt,
                    BinOp::Le => BinaryOp::Le,
                    BinOp::Gt => BinaryOp::Gt,
                    BinOp::Ge => BinaryOp::Ge,
                    BinOp::Add => BinaryOp::Add,
                    BinOp::Sub => BinaryOp::Sub,
                    BinOp::Mul => BinaryOp::Mul,
                    BinOp::Div => BinaryOp::Div,
                    BinOp::Pow => BinaryOp::Pow,
                    BinOp::MatMul => BinaryOp::Mul,
                };
                self.g.binary(bop, x, y)?
            }
        };
        Ok(Val::T(v))
    }

    /// numpy `matmul`: vectors are promoted, batch dimensions broadcast.
    pub(crate) fn matmul(&mut self, x: ValueId, y: ValueId) -> LResult<ValueId> {
        let (tx, ty) = (self.ty_of(x), self.ty_of(y));
        let one = Dim::constant(1);
        let (mut x2, mut y2) = (x, y);
        let (mut sx, mut sy) = (tx.shape.clone(), ty.shape.clone());
        let x_vec = sx.len() == 1;
        let y_vec = sy.len() == 1;
        if x_vec {
            sx.insert(0, one.clone());
            x2 = self.g.reshape(x, sx.clone())?;
        }
        if y_vec {
            sy.push(one);
            y2 = self.g.reshape(y, sy.clone())?;
        }
        // Rows in a batch times one matrix (`[.., m, k] @ [k, n]`: a dense layer on a sequence):
        // one product over all the rows, `[batch·m, k] @ [k, n]`, rather than the matrix
        // broadcast over the batch and multiplied batch element by batch element (its gradient
        // is then one product too, not a sum over the batch).
        let (lead, k) = sx.split_at(sx.len().saturating_sub(1));
        let rows = lead.iter().try_fold(Dim::constant(1), |acc, d| acc.mul(d).ok());
        if let (false, false, true, true, Some(rows)) = (x_vec, y_vec, sx.len() > 2, sy.len() == 2, rows) {
            let mut flat = vec![rows];
            flat.extend(k.iter().cloned());
            let x2 = self.g.reshape(x, flat)?;
            let r = self.g.push(Op::MatMul, &[x2, y], None)?;
            let mut out = lead.to_vec();
            out.extend(sy.get(1..).unwrap_or_default().iter().cloned());
            return Ok(self.g.reshape(r, out)?);
        }
        let bx = sx.get(..sx.len() - 2).unwrap_or_default().to_vec();
        let by = sy.get(..sy.len() - 2).unwrap_or_default().to_vec();
        let batch = crate::ir::broadcast_shapes(&bx, &by)?;
        let mut fx = batch.clone();
        fx.extend(sx.get(sx.len() - 2..).unwrap_or_default().iter().cloned());
        let mut fy = batch.clone();
        fy.extend(sy.get(sy.len() - 2..).unwrap_or_default().iter().cloned());
        let x3 = self.g.broadcast_to(x2, &fx)?;
        let y3 = self.g.broadcast_to(y2, &fy)?;
        let mut r = self.g.push(Op::MatMul, &[x3, y3], None)?;
        let mut out = self.ty_of(r).shape;
        if y_vec {
            out.pop();
        }
        if x_vec {
            let n = out.len();
            out.remove(n - if y_vec { 1 } else { 2 });
        }
        if out != self.ty_of(r).shape {
            r = self.g.reshape(r, out)?;
        }
        Ok(r)
    }

    fn index(&mut self, env: &mut LEnv, t: ValueId, items: &[ast::IndexItem], span: Span) -> LResult<Val> {
        let shape = self.ty_of(t).shape;
        let rest_at = items.iter().position(|i| matches!(i.kind, IndexKind::Rest)).unwrap_or(items.len());
        let consumes =
            |k: &IndexKind| matches!(k, IndexKind::At(_) | IndexKind::Full | IndexKind::Range { .. });
        let n_right =
            items.get(rest_at + 1..).unwrap_or_default().iter().filter(|i| consumes(&i.kind)).count();
        let mut out_shape: Vec<Dim> = Vec::new();
        let mut cur = t;
        // Axis positions: left items from 0, right items from the end.
        let mut axis_of = Vec::new();
        let mut a = 0usize;
        for (k, it) in items.iter().enumerate() {
            if k == rest_at {
                a = shape.len() - n_right;
                axis_of.push(None);
                continue;
            }
            if consumes(&it.kind) {
                axis_of.push(Some(a));
                a += 1;
            } else {
                axis_of.push(None);
            }
        }
        // Slice every ranged or indexed axis first (axes keep their places), then reshape.
        let mut dropped = BTreeSet::new();
        for (it, ax) in items.iter().zip(&axis_of) {
            let Some(ax) = ax else { continue };
            let size = shape.get(*ax).and_then(Dim::as_constant);
            let pos = |v: i64, size: Option<i64>| -> LResult<i64> {
                if v < 0 {
                    size.map(|s| s + v)
                        .ok_or(())
                        .or_else(|_| fail(it.span, "a negative index needs a known axis size"))
                } else {
                    Ok(v)
                }
            };
            match &it.kind {
                IndexKind::At(e) => {
                    let i = self.const_dim(env, e)?;
                    let i = pos(i, size)?;
                    cur = self.g.push(Op::Slice { axis: *ax, start: i, end: i + 1 }, &[cur], None)?;
                    dropped.insert(*ax);
                }
                IndexKind::Range { start, end } => {
                    let s = match start {
                        Some(e) => {
                            let v = self.const_dim(env, e)?;
                            pos(v, size)?
                        }
                        None => 0,
                    };
                    let en = match end {
                        Some(e) => {
                            let v = self.const_dim(env, e)?;
                            pos(v, size)?
                        }
                        None => size
                            .ok_or(())
                            .or_else(|_| fail(it.span, "an open range needs a known axis size"))?,
                    };
                    if Some(s) != Some(0) || Some(en) != size {
                        cur = self.g.push(Op::Slice { axis: *ax, start: s, end: en }, &[cur], None)?;
                    }
                }
                _ => {}
            }
        }
        let sliced = self.ty_of(cur).shape;
        // Build the result shape in item order, with `new` axes and the untouched middle.
        let mut a = 0usize;
        for (k, it) in items.iter().enumerate() {
            if k == rest_at {
                let upto = shape.len() - n_right;
                while a < upto {
                    out_shape.push(sliced.get(a).cloned().unwrap_or_default());
                    a += 1;
                }
                continue;
            }
            match it.kind {
                IndexKind::New => out_shape.push(Dim::constant(1)),
                _ if consumes(&it.kind) => {
                    if !dropped.contains(&a) {
                        out_shape.push(sliced.get(a).cloned().unwrap_or_default());
                    }
                    a += 1;
                }
                _ => {}
            }
        }
        if rest_at == items.len() {
            while a < shape.len() {
                out_shape.push(sliced.get(a).cloned().unwrap_or_default());
                a += 1;
            }
        }
        let _ = span;
        Ok(Val::T(self.g.reshape(cur, out_shape)?))
    }

    /// An index or bound: a dimension expression whose value is known.
    pub(crate) fn const_dim(&mut self, env: &mut LEnv, e: &ast::Expr) -> LResult<i64> {
        match self.expr(env, e)? {
            Val::Dim(d) => {
                d.as_constant().ok_or(()).or_else(|_| fail(e.span, "an index must be a constant here"))
            }
            _ => fail(e.span, "internal: an index is not a dimension"),
        }
    }

    fn if_expr(
        &mut self,
        env: &mut LEnv,
        branches: &[ast::IfBranch],
        otherwise: Option<&ast::Block>,
        span: Span,
    ) -> LResult<Val> {
        let Some((first, rest)) = branches.split_first() else { return Ok(Val::unit()) };
        let c = self.expr(env, &first.cond)?;
        match c {
            Val::Bool(true) => self.block(env, &first.then),
            Val::Bool(false) => {
                if rest.is_empty() {
                    match otherwise {
                        Some(b) => self.block(env, b),
                        None => Ok(Val::unit()),
                    }
                } else {
                    self.if_expr(env, rest, otherwise, span)
                }
            }
            c => {
                // A bool tensor: where(c, a, b), both branches evaluated.
                let cv = self.tensor(&c, first.cond.span)?;
                let a = self.block(env, &first.then)?;
                let b = if rest.is_empty() {
                    match otherwise {
                        Some(b) => self.block(env, b)?,
                        None => return fail(span, "internal: tensor `if` without else"),
                    }
                } else {
                    self.if_expr(env, rest, otherwise, span)?
                };
                let (x, y) = self.operands(&a, &b, span)?;
                let shape = crate::ir::broadcast_shapes(&self.ty_of(cv).shape, &self.ty_of(x).shape)?;
                let shape = crate::ir::broadcast_shapes(&shape, &self.ty_of(y).shape)?;
                let (cv, x, y) = (
                    self.g.broadcast_to(cv, &shape)?,
                    self.g.broadcast_to(x, &shape)?,
                    self.g.broadcast_to(y, &shape)?,
                );
                Ok(Val::T(self.g.push(Op::Select, &[cv, x, y], None)?))
            }
        }
    }

    // ------------------------------------------------------------------------- calls

    fn call(
        &mut self,
        env: &mut LEnv,
        span: Span,
        callee: &ast::Expr,
        generics: Option<&[GenericArg]>,
        args: &[ast::Arg],
    ) -> LResult<Val> {
        if let ExprKind::Name(id) = &callee.kind
            && id.name == "product"
            && env.get("product").is_none()
            && self.global(env, "product").is_none()
            && let [ast::Arg { kind: ArgKind::Positional(e), .. }] = args
            && let ExprKind::Name(s) = &e.kind
        {
            let shape = env.shapes.get(&s.name).cloned().unwrap_or_default();
            return Ok(Val::Dim(crate::check::ty::product(&shape).map_err(|_| overflow(span))?));
        }
        let gens = match generics {
            Some(g) => Some(self.generic_args(env, g)?),
            None => None,
        };
        let argv = self.eval_args(env, args)?;
        let f = match &callee.kind {
            ExprKind::Name(id) if env.get(&id.name).is_none() => match self.global(env, &id.name) {
                Some(Global::Item(i)) => match self.idx.items.get(i).map(|x| x.item) {
                    Some(ast::Item::Layer(_)) => {
                        return self.construct_user_layer(env, i, &argv, gens.as_deref(), span);
                    }
                    Some(ast::Item::Model(_)) => Val::Model(i),
                    _ => Val::Fn(FnRef::Item(i)),
                },
                Some(Global::Prim(p)) => Val::Fn(FnRef::Prim(p)),
                None => return fail(id.span, format!("internal: unknown `{}`", id.name)),
            },
            _ => self.expr(env, callee)?,
        };
        self.apply(env, f, gens.as_deref(), &argv, span)
    }

    /// Calls a value (function, layer, model) with evaluated arguments.
    pub(crate) fn apply(
        &mut self,
        env: &mut LEnv,
        f: Val,
        gens: Option<&[GenVal]>,
        args: &[ArgVal],
        span: Span,
    ) -> LResult<Val> {
        match f {
            Val::Fn(FnRef::Prim(p)) => self.prim(env, p, gens, args, span),
            Val::Fn(FnRef::Item(i)) => self.call_fn(i, gens, args, span),
            Val::Layer(l) => {
                let x = args
                    .first()
                    .map(|a| a.val.clone())
                    .ok_or(())
                    .or_else(|_| fail(span, "a layer takes one input"))?;
                self.apply_layer(&l, x, span)
            }
            Val::Model(m) => {
                let x = args
                    .first()
                    .map(|a| a.val.clone())
                    .ok_or(())
                    .or_else(|_| fail(span, "a model takes one input"))?;
                self.apply_model(m, None, x, span)
            }
            Val::Loaded(m, params) => {
                let x = args
                    .first()
                    .map(|a| a.val.clone())
                    .ok_or(())
                    .or_else(|_| fail(span, "a model takes one input"))?;
                self.apply_model(m, Some(params), x, span)
            }
            _ => {
                let _ = env;
                fail(span, "internal: not callable")
            }
        }
    }

    pub(crate) fn generic_args(&mut self, env: &mut LEnv, gens: &[GenericArg]) -> LResult<Vec<GenVal>> {
        let mut out = Vec::new();
        for g in gens {
            match g {
                GenericArg::Expr(e) => {
                    if let ExprKind::Name(id) = &e.kind
                        && env.get(&id.name).is_none()
                        && let Some(Global::Item(i)) = self.global(env, &id.name)
                        && matches!(self.idx.items.get(i).map(|x| x.item), Some(ast::Item::Model(_)))
                    {
                        out.push(GenVal::Model(i));
                        continue;
                    }
                    match self.expr(env, e)? {
                        Val::Dim(d) => out.push(GenVal::Dim(d)),
                        _ => return fail(e.span, "internal: not a dimension"),
                    }
                }
                GenericArg::Type(t) => {
                    let ty = self.resolve_type(env, t)?;
                    out.push(GenVal::Type(ty));
                }
                GenericArg::Spread { name, .. } => {
                    out.push(GenVal::Shape(env.shapes.get(&name.name).cloned().unwrap_or_default()))
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn eval_args(&mut self, env: &mut LEnv, args: &[ast::Arg]) -> LResult<Vec<ArgVal>> {
        args.iter()
            .map(|a| {
                Ok(match &a.kind {
                    ArgKind::Positional(e) => ArgVal { name: None, val: self.expr(env, e)?, span: e.span },
                    ArgKind::Named { name, value } => ArgVal {
                        name: Some(name.name.clone()),
                        val: self.expr(env, value)?,
                        span: value.span,
                    },
                    ArgKind::Pair { from, to } => {
                        let f = self.expr(env, from)?;
                        let t = self.expr(env, to)?;
                        ArgVal { name: None, val: Val::Tuple(vec![f, t]), span: a.span }
                    }
                })
            })
            .collect()
    }

    /// A written type with its dimensions evaluated in `env`.
    pub(crate) fn resolve_type(&mut self, env: &mut LEnv, t: &ast::Type) -> LResult<Ty> {
        Ok(match &t.kind {
            TypeKind::Tensor { elem, dims } => {
                let Some(e) = Elem::from_ast(*elem) else {
                    return Ok(Ty::Str);
                };
                let mut shape = Vec::new();
                for d in dims {
                    match d {
                        ast::Dim::Expr(x) => match self.expr(env, x)? {
                            Val::Dim(v) => shape.push(Sh::Dim(v)),
                            _ => return fail(x.span, "internal: not a dimension"),
                        },
                        ast::Dim::Spread { name, .. } => shape.extend(
                            env.shapes
                                .get(&name.name)
                                .cloned()
                                .unwrap_or_else(|| vec![Sh::Spread(name.name.clone())]),
                        ),
                    }
                }
                Ty::Tensor(e, shape)
            }
            TypeKind::Tuple(items) => {
                Ty::Tuple(items.iter().map(|i| self.resolve_type(env, i)).collect::<LResult<_>>()?)
            }
            TypeKind::Fn { .. } | TypeKind::Named(_) => Ty::Error,
        })
    }

    /// Inlines a function or loss: solves its dimensions from the arguments, binds parameters
    /// (defaults for the missing ones) and evaluates the body.
    pub(crate) fn call_fn(
        &mut self,
        item: usize,
        gens: Option<&[GenVal]>,
        args: &[ArgVal],
        span: Span,
    ) -> LResult<Val> {
        let Some(info) = self.idx.items.get(item) else { return fail(span, "internal: no such item") };
        let (ast::Item::Fn(f) | ast::Item::Loss(f)) = info.item else {
            return fail(span, "internal: not a function");
        };
        let file = info.file;
        self.depth += 1;
        if self.depth > fluxc_syntax::limits::MAX_DEPENDENCY_DEPTH {
            return fail(span, "definitions nest too deeply");
        }
        let mut env = LEnv::new(file);
        let unknowns = self.bind_dims(&mut env, &f.dims)?;
        let slots = bind_args(f.params.iter().map(|p| p.name.name.as_str()), args);
        let mut u_ref = Unifier::new(&unknowns);
        if let Some(g) = gens {
            apply_generics(&f.dims, &env, g, &mut u_ref);
        }
        let mut subst = u_ref.subst.clone();
        let mut vals = Vec::new();
        // Solve dimensions from the arguments' types.
        {
            let mut u = Unifier::new(&unknowns);
            u.subst = subst.clone();
            for (p, slot) in f.params.iter().zip(&slots) {
                let Some(a) = slot.and_then(|k| args.get(k)) else { continue };
                let pt = self.resolve_type(&mut env, &p.ty)?;
                let at = self.check_ty(&a.val);
                if matches!(pt, Ty::Tensor(_, ref s) if s.is_empty())
                    && matches!(at, Ty::Tensor(_, ref s) if !s.is_empty())
                {
                    continue; // a lifted scalar parameter
                }
                let _ = u.ty(&pt, &at);
            }
            let _ = u.finish();
            // An initialiser's declared type gives the dimensions its arguments leave open (§10.4).
            if let (Some(shape), Some(ret)) = (self.init_shape.clone(), &f.ret)
                && !u.unsolved().is_empty()
            {
                let rt = self.resolve_type(&mut env, ret)?;
                let _ = u.ty(&rt, &Ty::Tensor(Elem::F32, shape.into_iter().map(Sh::Dim).collect()));
                let _ = u.finish();
            }
            subst = u.subst;
        }
        let hint = self.init_shape.take();
        self.rebind_dims(&mut env, &f.dims, &subst)?;
        for (p, slot) in f.params.iter().zip(&slots) {
            let v = match slot.and_then(|k| args.get(k)) {
                Some(a) => a.val.clone(),
                None => match &p.default {
                    Some(d) => self.expr(&mut env, d)?,
                    None => return fail(span, format!("internal: missing argument `{}`", p.name.name)),
                },
            };
            vals.push((p.name.name.clone(), v));
        }
        for (n, v) in vals {
            env.bind(&n, v);
        }
        let out = self.block(&mut env, &f.body);
        self.init_shape = hint;
        self.depth -= 1;
        out
    }

    /// Binds dimension parameters to fresh variables (solved later); returns the unknowns.
    pub(crate) fn bind_dims(&mut self, env: &mut LEnv, dims: &[ast::DimParam]) -> LResult<BTreeSet<String>> {
        let mut unknowns = BTreeSet::new();
        for d in dims {
            match &d.kind {
                ast::DimParamKind::Dim { name, .. } => {
                    let fresh = self.fresh(&name.name);
                    env.bind(&name.name, Val::Dim(Dim::var(&fresh)));
                    unknowns.insert(fresh);
                }
                ast::DimParamKind::Shape { name } => {
                    let fresh = self.fresh(&name.name);
                    env.shapes.insert(name.name.clone(), vec![Sh::Spread(fresh.clone())]);
                    unknowns.insert(fresh);
                }
            }
        }
        Ok(unknowns)
    }

    /// Replaces the fresh variables of `dims` by their solutions (defaults where unsolved).
    pub(crate) fn rebind_dims(
        &mut self,
        env: &mut LEnv,
        dims: &[ast::DimParam],
        s: &crate::check::ty::Subst,
    ) -> LResult<()> {
        for d in dims {
            match &d.kind {
                ast::DimParamKind::Dim { name, default } => {
                    let Some(Val::Dim(v)) = env.get(&name.name).cloned() else { continue };
                    let solved = s.dim(&v).map_err(|_| overflow(d.span))?;
                    let value = if solved == v {
                        match default {
                            Some(e) => match self.expr(env, e)? {
                                Val::Dim(x) => x,
                                _ => solved,
                            },
                            None => solved,
                        }
                    } else {
                        solved
                    };
                    env.bind(&name.name, Val::Dim(value));
                }
                ast::DimParamKind::Shape { name } => {
                    let cur = env.shapes.get(&name.name).cloned().unwrap_or_default();
                    let solved = s.shape(&cur).map_err(|_| overflow(d.span))?;
                    env.shapes.insert(name.name.clone(), solved);
                }
            }
        }
        Ok(())
    }

    /// Sums a reduction and divides: `mean` over `axes`.
    pub(crate) fn mean(&mut self, x: ValueId, axes: Vec<usize>) -> LResult<ValueId> {
        let shape = self.ty_of(x).shape;
        let mut count = Dim::constant(1);
        for a in &axes {
            count = count
                .mul(shape.get(*a).unwrap_or(&Dim::constant(1)))
                .map_err(|_| IrError("overflow".into()))?;
        }
        let s = self.g.reduce(ReduceOp::Sum, x, axes)?;
        let n = self.dim_value(&count, DType::F32)?;
        Ok(self.g.binary(BinaryOp::Div, s, n)?)
    }
}

/// An evaluated argument.
#[derive(Clone, Debug)]
pub struct ArgVal {
    pub name: Option<String>,
    pub val: Val,
    pub span: Span,
}

/// An evaluated explicit `[…]` argument.
#[derive(Clone, Debug)]
pub enum GenVal {
    Dim(Dim),
    Shape(Vec<Sh>),
    Type(Ty),
    Model(usize),
}

/// Positional arguments in order, then named ones by name (the checker validated them).
pub(crate) fn bind_args<'n>(params: impl Iterator<Item = &'n str>, args: &[ArgVal]) -> Vec<Option<usize>> {
    let names: Vec<&str> = params.collect();
    let mut slots = vec![None; names.len()];
    let mut next = 0;
    for (k, a) in args.iter().enumerate() {
        match &a.name {
            None => {
                if let Some(s) = slots.get_mut(next) {
                    *s = Some(k);
                }
                next += 1;
            }
            Some(n) => {
                if let Some(p) = names.iter().position(|x| x == n)
                    && let Some(s) = slots.get_mut(p)
                {
                    *s = Some(k);
                }
            }
        }
    }
    slots
}

/// Explicit dimensions in the order of the parameters (a shape parameter takes the rest).
fn apply_generics(dims: &[ast::DimParam], env: &LEnv, gens: &[GenVal], u: &mut Unifier<'_>) {
    let shape_params = dims.iter().filter(|d| matches!(d.kind, ast::DimParamKind::Shape { .. })).count();
    let fixed = dims.len() - shape_params;
    let mut gi = 0;
    for (k, d) in dims.iter().enumerate() {
        match &d.kind {
            ast::DimParamKind::Dim { name, .. } => {
                let Some(GenVal::Dim(v)) = gens.get(gi) else { break };
                gi += 1;
                if let Some(Val::Dim(var)) = env.get(&name.name) {
                    u.subst.dims.insert(var.to_string(), v.clone());
                }
            }
            ast::DimParamKind::Shape { name } => {
                let after = dims.get(k + 1..).map_or(0, |r| {
                    r.iter().filter(|x| matches!(x.kind, ast::DimParamKind::Dim { .. })).count()
                });
                let take = gens.len().saturating_sub(gi + after);
                let mut shape = Vec::new();
                for g in gens.get(gi..gi + take).unwrap_or_default() {
                    match g {
                        GenVal::Dim(v) => shape.push(Sh::Dim(v.clone())),
                        GenVal::Shape(s) => shape.extend(s.iter().cloned()),
                        _ => {}
                    }
                }
                gi += take;
                if let Some([Sh::Spread(var)]) = env.shapes.get(&name.name).map(Vec::as_slice) {
                    u.subst.shapes.insert(var.clone(), shape);
                }
            }
        }
    }
    let _ = fixed;
}

pub(crate) fn overflow(span: Span) -> LowerError {
    LowerError { span: Some(span), message: "dimension arithmetic overflows".into() }
}

/// A model's graph: input `x` (the model's input type, `B` symbolic), output `y`, parameters
/// as slots named by their paths (§3.2). In the training variant, state updates are outputs
/// `state:NAME`.
pub fn lower_model(idx: &Index<'_>, model: usize, training: bool) -> LResult<Graph> {
    let (mut lw, _) = apply_model(idx, model, training)?;
    let updates: Vec<(usize, ValueId)> = lw.state_updates.iter().map(|(k, v)| (*k, *v)).collect();
    for (k, v) in updates {
        let name = lw.params.get(k).map(|p| p.name.clone()).unwrap_or_default();
        lw.g.outputs.push((format!("state:{name}"), v));
    }
    crate::ir::verify(&lw.g)?;
    Ok(lw.g)
}

/// The lowerer after placing model `model` and applying it to its input (`x`, or `x0`, `x1`, …
/// for a tuple), with the output `y`; and the model's input type.
fn apply_model<'a>(idx: &'a Index<'a>, model: usize, training: bool) -> LResult<(Lowerer<'a>, Ty)> {
    let mut lw = Lowerer::new(idx, training, ParamMode::Slots);
    let Some(info) = idx.items.get(model) else {
        return Err(LowerError { span: None, message: "no such model".into() });
    };
    let ast::Item::Model(m) = info.item else {
        return Err(LowerError { span: None, message: "not a model".into() });
    };
    let mut env = LEnv::new(info.file);
    env.bind("B", Val::Dim(Dim::var("B")));
    let in_ty = lw.resolve_type(&mut env, &m.input)?;
    let l = lw.model_layer(model, m.value.span)?;
    lw.place(&l, "", m.value.span)?;
    let x = match &in_ty {
        Ty::Tuple(items) => {
            let mut vs = Vec::new();
            for (k, t) in items.iter().enumerate() {
                let tt = Lowerer::tensor_ty_of(t)
                    .ok_or(())
                    .or_else(|_| fail(m.input.span, "unsupported input type"))?;
                vs.push(Val::T(lw.g.input(&format!("x{k}"), tt)?));
            }
            Val::Tuple(vs)
        }
        t => {
            let tt = Lowerer::tensor_ty_of(t)
                .ok_or(())
                .or_else(|_| fail(m.input.span, "unsupported input type"))?;
            Val::T(lw.g.input("x", tt)?)
        }
    };
    let y = lw.apply_layer(&l, x, m.value.span)?;
    let y = lw.tensor(&y, m.value.span)?;
    lw.g.outputs.push(("y".into(), y));
    Ok((lw, in_ty))
}

/// `fluxc summary` (§12.15): each layer's path, kind, output type and parameter count (its own,
/// not its children's), the totals, and the static scratch memory of the inference forward.
pub fn summary(idx: &Index<'_>, model: usize) -> LResult<String> {
    let (lw, in_ty) = apply_model(idx, model, false)?;
    let Some(ast::Item::Model(m)) = idx.items.get(model).map(|i| i.item) else {
        return Err(LowerError { span: None, message: "not a model".into() });
    };
    if matches!(in_ty, Ty::Tuple(_)) {
        return fail(m.input.span, "tuple inputs are not summarised yet");
    }
    let count = |t: &TensorTy| t.shape.iter().map(|d| d.as_constant().unwrap_or(0)).product::<i64>();
    let own = |path: &str| -> i64 {
        lw.params
            .iter()
            .filter(|p| {
                let parent = p.name.rsplit_once('.').map_or("", |(a, _)| a);
                parent == path
            })
            .map(|p| count(&p.ty))
            .sum()
    };
    let mut rows: Vec<(String, String, String, i64)> = Vec::new();
    let mut log = lw.layer_log.clone();
    // Parents before children, siblings in index order (`1`, `1.conv1`, `2`, …, `10`).
    let key = |p: &str| -> Vec<(u64, String)> {
        if p.is_empty() {
            return Vec::new();
        }
        p.split('.').map(|part| (part.parse::<u64>().unwrap_or(u64::MAX), part.to_owned())).collect()
    };
    log.sort_by_key(|r| key(&r.path));
    for r in &log {
        let shown = if r.path.is_empty() { format!("{} (model)", m.name.name) } else { r.path.clone() };
        rows.push((shown, r.kind.clone(), r.output.clone(), own(&r.path)));
    }
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(5).max(5);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(4).max(4);
    let w2 = rows.iter().map(|r| r.2.chars().count()).max().unwrap_or(12).max(12);
    let mut out = format!("{:w0$}  {:w1$}  {:w2$}  {:>10}\n", "Layer", "Kind", "Output shape", "Params");
    for (p, k, o, n) in &rows {
        out.push_str(&format!("{p:w0$}  {k:w1$}  {o:w2$}  {:>10}\n", group(*n)));
    }
    let trainable: i64 = lw.params.iter().filter(|p| p.trainable).map(|p| count(&p.ty)).sum();
    let state: i64 = lw.params.iter().filter(|p| !p.trainable).map(|p| count(&p.ty)).sum();
    out.push_str(&format!(
        "Total parameters: {} (trainable {}, state {})\n",
        group(trainable + state),
        group(trainable),
        group(state)
    ));
    out.push_str(&format!("Parameter bytes: {}\n", group(4 * (trainable + state))));
    crate::ir::verify(&lw.g)?;
    let kir = crate::kir::schedule(&lw.g)?;
    let (fixed, per_row) = kir.scratch_bytes();
    out.push_str(&format!(
        "Peak scratch (inference): {} bytes + {} bytes per batch row\n",
        group(fixed),
        group(per_row)
    ));
    Ok(out)
}

/// `1234567` as `1,234,567`.
pub fn group(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A model's initialiser graph: no inputs; one output per parameter (manifest order), each
/// computed by its initialiser with the run's seed on the parameter's stream (§12.11).
pub fn init_graph(idx: &Index<'_>, model: usize) -> LResult<Graph> {
    let mut lw = Lowerer::new(idx, false, ParamMode::Init);
    let span = idx.items.get(model).map(|i| i.name_span).unwrap_or_default();
    let order = manifest_order(idx, model, span)?;
    lw.manifest_index = Some(order.clone());
    let l = lw.model_layer(model, span)?;
    lw.place(&l, "", span)?;
    let mut outs: Vec<(String, ValueId)> =
        lw.params.iter().zip(&lw.param_values).map(|(p, v)| (p.name.clone(), *v)).collect();
    outs.sort_by_key(|(n, _)| order.get(n).copied().unwrap_or(u32::MAX));
    lw.g.outputs = outs;
    crate::ir::verify(&lw.g)?;
    Ok(lw.g)
}

/// A model's parameters in manifest order — the trainable ones in creation order, then the layer
/// state tensors (§12.5) — as name → index.
pub(crate) fn manifest_order(
    idx: &Index<'_>,
    model: usize,
    span: fluxc_syntax::Span,
) -> LResult<HashMap<String, u32>> {
    let mut probe = Lowerer::new(idx, false, ParamMode::Slots);
    let l = probe.model_layer(model, span)?;
    probe.place(&l, "", span)?;
    let ordered =
        probe.params.iter().filter(|p| p.trainable).chain(probe.params.iter().filter(|p| !p.trainable));
    Ok(ordered.enumerate().map(|(k, p)| (p.name.clone(), u32::try_from(k).unwrap_or(u32::MAX))).collect())
}

/// Runs the top-level statements of `file` (a script), in order, on the reference interpreter.
pub fn run_script(idx: &Index<'_>, file: FileId, ast: &ast::File, io: &mut dyn Io) -> LResult<()> {
    let mut lw = Lowerer::new(idx, false, ParamMode::Init);
    lw.script = Some(layers::Script {
        io,
        run: crate::interp::Run { batch: 1, seed: 0, step: 0 },
        vals: Vec::new(),
        inputs: Vec::new(),
    });
    let mut env = LEnv::new(file);
    for top in &ast.tops {
        if let ast::Top::Stmt(s) = top {
            lw.stmt(&mut env, s)?;
        }
    }
    Ok(())
}
