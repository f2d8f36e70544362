//! Statements, expressions, written types and dimension expressions.

use fluxc_syntax::ast::{self, BinOp, ExprKind, IndexKind, PatternKind, StmtKind, TypeKind, UnaryOp};
use fluxc_syntax::{Code, Span};

use super::ty::{Elem, FnVal, Sh, Shape, Subst, Ty, show_dim, tensor_to_string};
use super::unify::Unifier;
use super::{BindingInfo, Checker, Constraint, ConstraintKind, Ctx, Env, Global};
use crate::dims::Dim;

/// What a proof about dimensions gave: every size the variables can take (all at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proof {
    Yes,
    No,
    Unknown,
}

/// The least value `d` can take when every variable is at least 1, when that is easy to see:
/// no opaque division and every non-constant term with a non-negative coefficient.
pub(crate) fn min_value(d: &Dim) -> Option<i64> {
    let text_has_div = d.to_string().contains('/');
    if text_has_div {
        return d.as_constant();
    }
    d.min_over_naturals()
}

/// Is `a <= b` for every size?
pub(crate) fn prove_le(a: &Dim, b: &Dim) -> Proof {
    let Ok(diff) = b.sub(a) else { return Proof::Unknown };
    if min_value(&diff).is_some_and(|m| m >= 0) {
        return Proof::Yes;
    }
    let Ok(neg) = a.sub(b) else { return Proof::Unknown };
    if min_value(&neg).is_some_and(|m| m >= 1) {
        return Proof::No;
    }
    Proof::Unknown
}

pub(crate) fn prove_eq(a: &Dim, b: &Dim) -> Proof {
    if a == b {
        return Proof::Yes;
    }
    match (a.as_constant(), b.as_constant()) {
        (Some(_), Some(_)) => Proof::No,
        _ => {
            let div = a.to_string().contains('/') || b.to_string().contains('/');
            if div { Proof::Unknown } else { Proof::No }
        }
    }
}

impl<'a> Checker<'a> {
    // --------------------------------------------------------------------------- blocks

    pub(crate) fn block(&mut self, env: &mut Env, block: &ast::Block) -> (Ty, Span) {
        env.push();
        let mut last = (Ty::unit(), block.span);
        let n = block.stmts.len();
        for (i, s) in block.stmts.iter().enumerate() {
            let t = self.stmt(env, s);
            if i + 1 == n {
                last = match &s.kind {
                    StmtKind::Expr(e) => (t, e.span),
                    _ => (Ty::unit(), s.span),
                };
            }
        }
        env.pop();
        last
    }

    pub(crate) fn stmt(&mut self, env: &mut Env, s: &ast::Stmt) -> Ty {
        match &s.kind {
            StmtKind::Let { pattern, ty, value } => {
                let saved = std::mem::take(&mut env.effects);
                let mut t = self.expr(env, value);
                let effect = env.effects.effect;
                let inner = std::mem::replace(&mut env.effects, saved);
                env.effects.merge(&inner);
                if let Some(declared) = ty {
                    let want = self.resolve_type(env, declared);
                    self.expect_exact(env, &want, &t, value.span, "the declared type");
                    t = want;
                }
                self.bind_pattern(env, pattern, &t, value.span);
                if env.file == self.main {
                    self.record_pattern(pattern, &t, effect);
                }
                Ty::unit()
            }
            StmtKind::Assign { target, value } => {
                let t = self.expr(env, value);
                self.assign(env, s.span, target, &t, value.span);
                Ty::unit()
            }
            StmtKind::Expr(e) => self.expr(env, e),
        }
    }

    fn record_pattern(&mut self, pattern: &ast::Pattern, t: &Ty, effect: super::ty::Effect) {
        match (&pattern.kind, t) {
            (PatternKind::Name(id), _) => self.info.bindings.push(BindingInfo {
                span: id.span,
                text: format!("let {} : {} !{}", id.name, self.show_ty(t), effect.as_str()),
                is_item: false,
            }),
            (PatternKind::Tuple(ps), Ty::Tuple(ts)) => {
                for (p, t) in ps.iter().zip(ts) {
                    self.record_pattern(p, t, effect);
                }
            }
            _ => {}
        }
    }

    fn assign(&mut self, env: &mut Env, stmt: Span, target: &ast::Ident, t: &Ty, value: Span) {
        let allowed_here = match env.ctx {
            Ctx::OptUpdate => true,
            Ctx::Forward => env.in_training,
            _ => false,
        };
        if !env.states.contains(&target.name) {
            if env.lookup(&target.name).is_none() && self.global(env.file, &target.name).is_none() {
                self.unknown_name(env, target, "name");
                return;
            }
            let where_ = match env.ctx {
                Ctx::Forward | Ctx::OptUpdate => "only `state` members can be updated with `:=`",
                _ => "`:=` updates a layer's or optimizer's `state`",
            };
            self.error(Code::E0403, stmt, format!("`{}` cannot be assigned with `:=`", target.name))
                .primary
                .message = where_.to_owned();
            return;
        }
        if !allowed_here {
            let (msg, help) = match env.ctx {
                Ctx::Forward => (
                    format!("state `{}` is updated outside `if training`", target.name),
                    "wrap the update in `if training { … }`: inference must not change the state",
                ),
                _ => (
                    format!("state `{}` is updated outside an optimizer's `update`", target.name),
                    "state updates belong in `if training { … }` of a forward, or in `update`",
                ),
            };
            let d = self.error(Code::E0403, stmt, msg);
            d.primary.message = "state update here".into();
            d.help = Some(help.into());
            return;
        }
        if let Some(local) = env.lookup(&target.name).cloned() {
            self.expect_exact(env, &local.ty, t, value, &format!("the type of state `{}`", target.name));
        }
    }

    pub(crate) fn bind_pattern(&mut self, env: &mut Env, pattern: &ast::Pattern, t: &Ty, value: Span) {
        match &pattern.kind {
            PatternKind::Name(id) => env.bind(&id.name, t.clone()),
            PatternKind::Wildcard => {}
            PatternKind::Tuple(ps) => match t {
                Ty::Tuple(ts) if ts.len() == ps.len() => {
                    for (p, t) in ps.iter().zip(ts) {
                        self.bind_pattern(env, p, t, value);
                    }
                }
                Ty::Error => {
                    for p in ps {
                        self.bind_pattern(env, p, &Ty::Error, value);
                    }
                }
                _ => {
                    let shown = self.show_ty(t);
                    self.error(
                        Code::E0301,
                        value,
                        format!("cannot destructure {shown} into {} names", ps.len()),
                    )
                    .primary
                    .message = format!("this is {shown}");
                    for p in ps {
                        self.bind_pattern(env, p, &Ty::Error, value);
                    }
                }
            },
        }
    }

    /// `found` must be exactly `want` (no unknowns): E0301/E0302 at `span` otherwise.
    pub(crate) fn expect_exact(&mut self, _env: &Env, want: &Ty, found: &Ty, span: Span, what: &str) -> bool {
        let none = Default::default();
        let mut u = Unifier::new(&none);
        let outcome = match (want, found) {
            (Ty::Tuple(_) | Ty::Tensor(..), _) => u.ty(want, found),
            _ => Ok(()),
        };
        match outcome {
            Ok(()) => true,
            Err(m) => {
                let d = self.error(
                    m.code,
                    span,
                    format!("expected {}, found {}", self.show_ty(want), self.show_ty(found)),
                );
                d.primary.message = format!("this does not have {what}");
                d.notes.push(m.note);
                false
            }
        }
    }

    // -------------------------------------------------------------------------- types

    pub(crate) fn resolve_type(&mut self, env: &mut Env, t: &ast::Type) -> Ty {
        match &t.kind {
            TypeKind::Tensor { elem, dims } => {
                let Some(e) = Elem::from_ast(*elem) else {
                    if *elem == ast::ElemType::Str && dims.is_empty() {
                        return Ty::Str;
                    }
                    let msg = if *elem == ast::ElemType::Str {
                        "`str` values never enter tensors".to_owned()
                    } else {
                        format!("`{}` is reserved and not supported yet; use `f32`", elem.as_str())
                    };
                    self.error(Code::E0302, t.span, msg).primary.message = "unsupported element type".into();
                    return Ty::Error;
                };
                let mut shape = Vec::new();
                let mut spreads = 0;
                for d in dims {
                    match d {
                        ast::Dim::Expr(e) => match self.dim_value(env, e) {
                            Some(v) => shape.push(Sh::Dim(v)),
                            None => return Ty::Error,
                        },
                        ast::Dim::Spread { name, span } => {
                            spreads += 1;
                            if spreads > 1 {
                                self.error(
                                    Code::E0301,
                                    *span,
                                    "at most one shape variable per tensor type",
                                )
                                .primary
                                .message = "second shape variable".into();
                                return Ty::Error;
                            }
                            if !env.shape_vars.contains(&name.name) {
                                self.unknown_name(env, name, "shape variable");
                                return Ty::Error;
                            }
                            shape.push(Sh::Spread(name.name.clone()));
                        }
                    }
                }
                Ty::Tensor(e, shape)
            }
            TypeKind::Tuple(items) => Ty::Tuple(items.iter().map(|t| self.resolve_type(env, t)).collect()),
            TypeKind::Fn { params, ret } => Ty::Fn(FnVal::Param {
                params: params.iter().map(|t| self.resolve_type(env, t)).collect(),
                ret: Box::new(self.resolve_type(env, ret)),
            }),
            TypeKind::Named(id) => match id.name.as_str() {
                "Activation" => Ty::Fn(FnVal::Param {
                    params: vec![Ty::scalar(Elem::F32)],
                    ret: Box::new(Ty::scalar(Elem::F32)),
                }),
                _ => match self.global(env.file, &id.name) {
                    Some(Global::Item(i))
                        if matches!(self.idx.items.get(i).map(|x| x.item), Some(ast::Item::Model(_))) =>
                    {
                        Ty::Model(i)
                    }
                    _ => {
                        self.unknown_name(env, id, "type");
                        Ty::Error
                    }
                },
            },
        }
    }

    /// A dimension expression (in a type, an index, a generic argument): its normal form.
    pub(crate) fn dim_value(&mut self, env: &mut Env, e: &ast::Expr) -> Option<Dim> {
        match self.expr(env, e) {
            Ty::Dim(d) => Some(d),
            Ty::Error => None,
            other => {
                let shown = self.show_ty(&other);
                self.error(Code::E0302, e.span, format!("expected a dimension expression, found {shown}"))
                    .primary
                    .message = "not a dimension".into();
                None
            }
        }
    }

    // ---------------------------------------------------------------------- expressions

    pub(crate) fn expr(&mut self, env: &mut Env, e: &ast::Expr) -> Ty {
        if env.file != self.main {
            return self.expr_inner(env, e);
        }
        // Record the type and the effect of this expression alone (for hover and `--emit`).
        let outer = std::mem::take(&mut env.effects);
        let t = self.expr_inner(env, e);
        let inner = std::mem::replace(&mut env.effects, outer);
        env.effects.merge(&inner);
        let ty = self.show_ty(&t);
        self.info.exprs.push(super::ExprInfo { span: e.span, ty, effect: inner.effect });
        t
    }

    fn expr_inner(&mut self, env: &mut Env, e: &ast::Expr) -> Ty {
        match &e.kind {
            ExprKind::Int(v) => match i64::try_from(*v) {
                Ok(v) => Ty::Dim(Dim::constant(v)),
                Err(_) => {
                    self.error(Code::E0301, e.span, "integer literal too large").primary.message =
                        "above 2^63 - 1".into();
                    Ty::Error
                }
            },
            ExprKind::Float(_) => Ty::scalar(Elem::F32),
            ExprKind::Bool(b) => Ty::ConstBool(Some(*b)),
            ExprKind::Str(_) => Ty::Str,
            ExprKind::Training => Ty::ConstBool(None),
            ExprKind::Name(id) => self.name(env, id),
            ExprKind::Tuple(items) => Ty::Tuple(items.iter().map(|i| self.expr(env, i)).collect()),
            ExprKind::List(items) => Ty::List(items.iter().map(|i| self.expr(env, i)).collect()),
            ExprKind::Unary { op, operand } => {
                let t = self.expr(env, operand);
                self.unary(*op, &t, operand.span)
            }
            ExprKind::Binary { lhs, rest } => {
                let mut acc = self.expr(env, lhs);
                let mut acc_span = lhs.span;
                for tail in rest {
                    let rt = self.expr(env, &tail.rhs);
                    if env.elementwise_only && tail.op == BinOp::MatMul {
                        self.not_elementwise(tail.op_span, "`@`");
                    }
                    acc = self.binary(tail.op, &acc, acc_span, &rt, tail.rhs.span);
                    acc_span = acc_span.to(tail.rhs.span);
                }
                acc
            }
            ExprKind::Call { callee, generics, args } => {
                self.call(env, e.span, callee, generics.as_deref(), args)
            }
            ExprKind::Index { base, indices } => {
                let t = self.expr(env, base);
                if env.elementwise_only {
                    self.not_elementwise(e.span, "indexing");
                }
                self.index(env, &t, base.span, indices)
            }
            ExprKind::Field { base, name } => {
                let t = self.expr(env, base);
                self.field(env, &t, base.span, name)
            }
            ExprKind::If { branches, otherwise } => self.if_expr(env, e.span, branches, otherwise.as_ref()),
            ExprKind::Error => Ty::Error,
        }
    }

    fn name(&mut self, env: &mut Env, id: &ast::Ident) -> Ty {
        if let Some(local) = env.lookup(&id.name) {
            return local.ty.clone();
        }
        if env.train_value
            && let Some(t) = super::config::train_builtin_value(&id.name)
        {
            return t;
        }
        match self.global(env.file, &id.name) {
            Some(Global::Prim(p)) if p.is_layer() => Ty::Fn(FnVal::Prim(p)),
            Some(Global::Prim(p)) => Ty::Fn(FnVal::Prim(p)),
            Some(Global::Item(i)) => self.item_value(env, i, id.span),
            None => {
                if env.shape_vars.contains(&id.name) {
                    self.error(
                        Code::E0302,
                        id.span,
                        format!(
                            "`{}` is a shape variable; use `..{}` in a type or `product({})`",
                            id.name, id.name, id.name
                        ),
                    )
                    .primary
                    .message = "not a value".into();
                    return Ty::Error;
                }
                self.unknown_name(env, id, "name");
                Ty::Error
            }
        }
    }

    /// An item named as a value: a function, a layer without arguments, a model, a data source.
    pub(crate) fn item_value(&mut self, env: &mut Env, id: usize, span: Span) -> Ty {
        let Some(info) = self.idx.items.get(id) else { return Ty::Error };
        match info.item {
            ast::Item::Fn(_) | ast::Item::Loss(_) => Ty::Fn(FnVal::Item(id)),
            ast::Item::Layer(_) => self.construct_layer_with(env, id, span, None, &[]),
            ast::Item::Model(_) => Ty::Model(id),
            ast::Item::Optimizer(_) => {
                let name = info.name.clone();
                self.construct_optimizer(env, id, span, &[]);
                Ty::Optimizer(name)
            }
            ast::Item::Data(_) => match self.sig(id, Some(span)) {
                Some(super::Sig::Data(d)) => Ty::Data(d),
                _ => Ty::Error,
            },
            _ => Ty::Error,
        }
    }

    fn unary(&mut self, op: UnaryOp, t: &Ty, span: Span) -> Ty {
        match (op, t) {
            (_, Ty::Error) => Ty::Error,
            (UnaryOp::Neg, Ty::Dim(d)) => match d.neg() {
                Ok(v) => Ty::Dim(v),
                Err(_) => Ty::Error,
            },
            (UnaryOp::Neg, Ty::Tensor(e @ (Elem::F32 | Elem::I32), s)) => Ty::Tensor(*e, s.clone()),
            (UnaryOp::Not, Ty::ConstBool(b)) => Ty::ConstBool(b.map(|b| !b)),
            (UnaryOp::Not, Ty::Tensor(Elem::Bool, s)) => Ty::Tensor(Elem::Bool, s.clone()),
            _ => {
                let shown = self.show_ty(t);
                let want = if op == UnaryOp::Neg { "a number" } else { "a bool" };
                self.error(Code::E0302, span, format!("`{}` needs {want}, found {shown}", op.as_str()))
                    .primary
                    .message = format!("this is {shown}");
                Ty::Error
            }
        }
    }

    pub(crate) fn not_elementwise(&mut self, span: Span, what: &str) {
        let d = self.error(Code::E0301, span, format!("{what} is not elementwise"));
        d.primary.message = "not allowed in an optimizer's `update`".into();
        d.notes.push(
            "an optimizer's `update` is applied to every parameter elementwise: use arithmetic and scalar functions of `p`, `g`, `t` and the states".into(),
        );
    }

    pub(crate) fn binary(&mut self, op: BinOp, l: &Ty, ls: Span, r: &Ty, rs: Span) -> Ty {
        if l.is_error() || r.is_error() {
            return match op {
                BinOp::Eq
                | BinOp::Ne
                | BinOp::Lt
                | BinOp::Le
                | BinOp::Gt
                | BinOp::Ge
                | BinOp::And
                | BinOp::Or => Ty::Error,
                _ => Ty::Error,
            };
        }
        // Compile-time arithmetic on dimensions stays a dimension.
        if let (Ty::Dim(a), Ty::Dim(b)) = (l, r) {
            let v = match op {
                BinOp::Add => Some(a.add(b)),
                BinOp::Sub => Some(a.sub(b)),
                BinOp::Mul => Some(a.mul(b)),
                BinOp::Div => Some(a.floor_div(b)),
                BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne => {
                    if let (Some(x), Some(y)) = (a.as_constant(), b.as_constant()) {
                        let v = match op {
                            BinOp::Lt => x < y,
                            BinOp::Le => x <= y,
                            BinOp::Gt => x > y,
                            BinOp::Ge => x >= y,
                            BinOp::Eq => x == y,
                            _ => x != y,
                        };
                        return Ty::ConstBool(Some(v));
                    }
                    None
                }
                _ => None,
            };
            match v {
                Some(Ok(d)) => return Ty::Dim(d),
                Some(Err(e)) => {
                    let msg = match e {
                        crate::dims::DimError::DivisionByZero => "division by zero in a dimension",
                        crate::dims::DimError::Overflow => "dimension arithmetic overflows",
                    };
                    self.error(Code::E0301, rs, msg).primary.message = "here".into();
                    return Ty::Error;
                }
                None => {}
            }
        }
        if matches!(op, BinOp::And | BinOp::Or)
            && let (Ty::ConstBool(a), Ty::ConstBool(b)) = (l, r)
        {
            let v = match (a, b, op) {
                (Some(x), Some(y), BinOp::And) => Some(*x && *y),
                (Some(x), Some(y), _) => Some(*x || *y),
                _ => None,
            };
            return Ty::ConstBool(v);
        }
        let (Some((le, lsh)), Some((re, rsh))) = (self.operand(l, ls), self.operand(r, rs)) else {
            return Ty::Error;
        };
        // Integer literals and dimensions take the other side's element type (§1).
        let le = if matches!(l, Ty::Dim(_)) && re != Elem::Bool { re } else { le };
        let re = if matches!(r, Ty::Dim(_)) && le != Elem::Bool { le } else { re };
        let elem_ok = match op {
            BinOp::And | BinOp::Or => le == Elem::Bool && re == Elem::Bool,
            BinOp::Eq | BinOp::Ne => le == re,
            _ => le == re && le != Elem::Bool,
        };
        if !elem_ok {
            let want = match op {
                BinOp::And | BinOp::Or => "bool operands".to_owned(),
                BinOp::Eq | BinOp::Ne => format!("the same element type ({})", le.as_str()),
                _ if le == Elem::Bool => "numbers, not bool".to_owned(),
                _ => format!("the same element type ({})", le.as_str()),
            };
            let d = self.error(
                Code::E0302,
                rs,
                format!(
                    "`{}` needs {want}: found {} and {}",
                    op.as_str(),
                    tensor_to_string(le, &lsh),
                    tensor_to_string(re, &rsh)
                ),
            );
            d.primary.message = format!("this is {}", tensor_to_string(re, &rsh));
            d.labels.push(fluxc_syntax::Label {
                span: ls,
                message: format!("this is {}", tensor_to_string(le, &lsh)),
            });
            return Ty::Error;
        }
        if op == BinOp::MatMul {
            return self.matmul(le, &lsh, ls, &rsh, rs);
        }
        let Some(shape) = self.broadcast2(&lsh, ls, &rsh, rs, op.as_str()) else { return Ty::Error };
        let elem = match op {
            BinOp::Eq
            | BinOp::Ne
            | BinOp::Lt
            | BinOp::Le
            | BinOp::Gt
            | BinOp::Ge
            | BinOp::And
            | BinOp::Or => Elem::Bool,
            _ => le,
        };
        Ty::Tensor(elem, shape)
    }

    /// A tensor view of an operand, or E0302.
    pub(crate) fn operand(&mut self, t: &Ty, span: Span) -> Option<(Elem, Shape)> {
        match t.as_tensor() {
            Some(x) => Some(x),
            None => {
                if !t.is_error() {
                    let shown = self.show_ty(t);
                    self.error(Code::E0302, span, format!("expected a tensor, found {shown}"))
                        .primary
                        .message = format!("this is {}", t.describe_kind());
                }
                None
            }
        }
    }

    pub(crate) fn broadcast2(
        &mut self,
        a: &[Sh],
        asp: Span,
        b: &[Sh],
        bsp: Span,
        what: &str,
    ) -> Option<Shape> {
        match broadcast(a, b) {
            Ok(s) => Some(s),
            Err(note) => {
                let d = self.error(
                    Code::E0301,
                    bsp,
                    format!(
                        "cannot broadcast f32[{}] with f32[{}] in `{what}`",
                        super::ty::shape_to_string(a),
                        super::ty::shape_to_string(b)
                    ),
                );
                d.primary.message = format!("this has shape [{}]", super::ty::shape_to_string(b));
                d.labels.push(fluxc_syntax::Label {
                    span: asp,
                    message: format!("this has shape [{}]", super::ty::shape_to_string(a)),
                });
                d.notes.push(note);
                None
            }
        }
    }

    fn matmul(&mut self, elem: Elem, a: &[Sh], asp: Span, b: &[Sh], bsp: Span) -> Ty {
        let err = |c: &mut Self, note: String| {
            let d = c.error(
                Code::E0301,
                bsp,
                format!("cannot multiply {} @ {}", tensor_to_string(elem, a), tensor_to_string(elem, b)),
            );
            d.primary.message = format!("this is {}", tensor_to_string(elem, b));
            d.labels.push(fluxc_syntax::Label {
                span: asp,
                message: format!("this is {}", tensor_to_string(elem, a)),
            });
            d.notes.push(note);
            Ty::Error
        };
        let last_fixed = |s: &[Sh], k: usize| -> Option<Dim> {
            // The k-th dimension from the end, if it is a fixed one.
            let i = s.len().checked_sub(k + 1)?;
            let spread_before = s.iter().position(|x| matches!(x, Sh::Spread(_))).is_some_and(|p| p >= i);
            if spread_before {
                return None;
            }
            match s.get(i) {
                Some(Sh::Dim(d)) => Some(d.clone()),
                _ => None,
            }
        };
        if a.is_empty() || b.is_empty() {
            return err(self, "`@` needs operands with at least one dimension".into());
        }
        let Some(k_a) = last_fixed(a, 0) else {
            return err(self, "the last dimension of the left operand must be known".into());
        };
        let b_has_spread = b.iter().any(|x| matches!(x, Sh::Spread(_)));
        // Vector on the right: [.., K] @ [K] → [..].
        if b.len() == 1 && !b_has_spread {
            let Some(Sh::Dim(k_b)) = b.first() else { return Ty::Error };
            if *k_b != k_a {
                return err(
                    self,
                    format!("inner dimensions differ: {} vs {}", show_dim(&k_a), show_dim(k_b)),
                );
            }
            return Ty::Tensor(elem, a.get(..a.len() - 1).unwrap_or_default().to_vec());
        }
        let (Some(k_b), Some(n)) = (last_fixed(b, 1), last_fixed(b, 0)) else {
            return err(self, "the last two dimensions of the right operand must be known".into());
        };
        if k_a != k_b {
            return err(
                self,
                format!(
                    "inner dimensions differ: the left operand's last is {}, the right operand's second-to-last is {}",
                    show_dim(&k_a),
                    show_dim(&k_b)
                ),
            );
        }
        if b.len() == 2 && !b_has_spread {
            // [.., M, K] @ [K, N] → [.., M, N] (also a vector [K] on the left: [N]).
            let mut out = a.get(..a.len() - 1).unwrap_or_default().to_vec();
            out.push(Sh::Dim(n));
            return Ty::Tensor(elem, out);
        }
        // Batched: [..A, M, K] @ [..B, K, N] → [broadcast(A, B), M, N].
        let Some(m) = last_fixed(a, 1) else {
            return err(self, "a batched `@` needs the left operand's last two dimensions known".into());
        };
        let a_batch = a.get(..a.len() - 2).unwrap_or_default();
        let b_batch = b.get(..b.len() - 2).unwrap_or_default();
        match broadcast(a_batch, b_batch) {
            Ok(mut batch) => {
                batch.push(Sh::Dim(m));
                batch.push(Sh::Dim(n));
                Ty::Tensor(elem, batch)
            }
            Err(note) => err(self, format!("batch dimensions: {note}")),
        }
    }

    // ------------------------------------------------------------------------- indexing

    fn index(&mut self, env: &mut Env, t: &Ty, base_span: Span, items: &[ast::IndexItem]) -> Ty {
        // Evaluate index expressions first (they report their own errors).
        enum It {
            At(Dim),
            Full,
            New,
            Rest,
            Range(Option<Dim>, Option<Dim>),
            Bad,
        }
        let mut its = Vec::new();
        for item in items {
            let it = match &item.kind {
                IndexKind::At(e) => self.dim_value(env, e).map_or(It::Bad, It::At),
                IndexKind::Full => It::Full,
                IndexKind::New => It::New,
                IndexKind::Rest => It::Rest,
                IndexKind::Range { start, end } => {
                    let s = match start {
                        Some(e) => match self.dim_value(env, e) {
                            Some(d) => Some(d),
                            None => {
                                its.push((It::Bad, item.span));
                                continue;
                            }
                        },
                        None => None,
                    };
                    let en = match end {
                        Some(e) => match self.dim_value(env, e) {
                            Some(d) => Some(d),
                            None => {
                                its.push((It::Bad, item.span));
                                continue;
                            }
                        },
                        None => None,
                    };
                    It::Range(s, en)
                }
            };
            its.push((it, item.span));
        }
        let Some((elem, shape)) = (match t {
            Ty::Tensor(e, s) => Some((*e, s.clone())),
            Ty::Error => None,
            other => {
                let shown = self.show_ty(other);
                self.error(Code::E0302, base_span, format!("cannot index {shown}")).primary.message =
                    format!("this is {}", other.describe_kind());
                None
            }
        }) else {
            return Ty::Error;
        };
        if its.iter().any(|(i, _)| matches!(i, It::Bad)) {
            return Ty::Error;
        }
        let rests = its.iter().filter(|(i, _)| matches!(i, It::Rest)).count();
        if rests > 1 {
            if let Some((_, sp)) = its.iter().filter(|(i, _)| matches!(i, It::Rest)).nth(1) {
                self.error(Code::E0301, *sp, "`..` may appear once in an index").primary.message =
                    "second `..`".into();
            }
            return Ty::Error;
        }
        let rest_at = its.iter().position(|(i, _)| matches!(i, It::Rest)).unwrap_or(its.len());
        let (left, right) = its.split_at(rest_at);
        let right = right.get(1..).unwrap_or_default();
        let consumes = |i: &It| matches!(i, It::At(_) | It::Full | It::Range(..));
        let n_left = left.iter().filter(|(i, _)| consumes(i)).count();
        let n_right = right.iter().filter(|(i, _)| consumes(i)).count();
        let spread = shape.iter().position(|s| matches!(s, Sh::Spread(_)));
        let (avail_left, avail_right) = match spread {
            Some(p) => (p, shape.len() - p - 1),
            None => (shape.len(), shape.len()),
        };
        let fits = match spread {
            Some(_) => n_left <= avail_left && n_right <= avail_right,
            None => n_left + n_right <= shape.len(),
        };
        if !fits {
            let first_bad = items.first().map_or(base_span, |i| i.span);
            let d = self.error(
                Code::E0301,
                first_bad,
                format!(
                    "too many indices for {}: {} given",
                    tensor_to_string(elem, &shape),
                    n_left + n_right
                ),
            );
            d.primary.message = "index out of range of the rank".into();
            if spread.is_some() {
                d.notes.push(
                    "indices cannot reach into a shape variable `..S`; index from the other end".into(),
                );
            }
            return Ty::Error;
        }
        let mut out_left = Vec::new();
        let mut axis = 0usize;
        let mut ok = true;
        for (it, sp) in left {
            if let It::New = it {
                out_left.push(Sh::Dim(Dim::constant(1)));
                continue;
            }
            let Some(Sh::Dim(size)) = shape.get(axis) else { continue };
            if let Some(d) = self.index_one(env, it_ref(it), size, *sp, axis, &elem, &shape) {
                out_left.extend(d);
            } else {
                ok = false;
            }
            axis += 1;
        }
        let mut out_right = Vec::new();
        let mut raxis = shape.len() - n_right;
        let middle_start = axis;
        for (it, sp) in right {
            if let It::New = it {
                out_right.push(Sh::Dim(Dim::constant(1)));
                continue;
            }
            let Some(Sh::Dim(size)) = shape.get(raxis) else { continue };
            if let Some(d) = self.index_one(env, it_ref(it), size, *sp, raxis, &elem, &shape) {
                out_right.extend(d);
            } else {
                ok = false;
            }
            raxis += 1;
        }
        if !ok {
            return Ty::Error;
        }
        let mut out = out_left;
        out.extend(shape.get(middle_start..shape.len() - n_right).unwrap_or_default().iter().cloned());
        out.extend(out_right);
        return Ty::Tensor(elem, out);

        fn it_ref(it: &It) -> IndexRef<'_> {
            match it {
                It::At(d) => IndexRef::At(d),
                It::Range(s, e) => IndexRef::Range(s.as_ref(), e.as_ref()),
                _ => IndexRef::Full,
            }
        }
    }

    /// One axis of an index: `Some(dims it leaves)` or `None` after reporting E0301.
    #[allow(clippy::too_many_arguments)]
    fn index_one(
        &mut self,
        env: &mut Env,
        it: IndexRef<'_>,
        size: &Dim,
        span: Span,
        axis: usize,
        elem: &Elem,
        shape: &[Sh],
    ) -> Option<Vec<Sh>> {
        let here = tensor_to_string(*elem, shape);
        let normalise = |v: &Dim| -> Option<Dim> {
            // Negative positions count from the end (overflow: reported below as out of bounds).
            if v.as_constant().is_some_and(|c| c < 0) {
                Some(size.add(v).unwrap_or(Dim::constant(-1)))
            } else {
                Some(v.clone())
            }
        };
        match it {
            IndexRef::Full => Some(vec![Sh::Dim(size.clone())]),
            IndexRef::At(v) => {
                let negative = v.as_constant().is_some_and(|c| c < 0);
                let pos = normalise(v)?;
                // 0 <= pos and pos + 1 <= size
                let Ok(next) = pos.add(&Dim::constant(1)) else {
                    self.overflow(span);
                    return None;
                };
                let lower = prove_le(&Dim::constant(0), &pos);
                let upper = prove_le(&next, size);
                let msg = format!(
                    "index {} is out of bounds for axis {axis} of size {} in {here}",
                    show_dim(v),
                    show_dim(size)
                );
                if lower == Proof::No || upper == Proof::No || (negative && lower != Proof::Yes) {
                    let d = self.error(Code::E0301, span, msg);
                    d.primary.message = "out of bounds".into();
                    if negative && size.as_constant().is_none() {
                        d.notes.push(format!(
                            "a negative index on a symbolic axis must fit every size it can take (down to {})",
                            min_value(size).unwrap_or(1)
                        ));
                    }
                    return None;
                }
                self.defer(env, lower, ConstraintKind::Le(Dim::constant(0), pos.clone()), &msg);
                self.defer(env, upper, ConstraintKind::Le(next, size.clone()), &msg);
                Some(Vec::new())
            }
            IndexRef::Range(s, e) => {
                let start = match s {
                    Some(v) => normalise(v)?,
                    None => Dim::constant(0),
                };
                let end = match e {
                    Some(v) => normalise(v)?,
                    None => size.clone(),
                };
                let msg = format!(
                    "range {} .. {} does not fit axis {axis} of size {} in {here}",
                    s.map_or("".into(), show_dim),
                    e.map_or("".into(), show_dim),
                    show_dim(size)
                );
                let Ok(start1) = start.add(&Dim::constant(1)) else {
                    self.overflow(span);
                    return None;
                };
                let checks = [
                    (
                        prove_le(&Dim::constant(0), &start),
                        ConstraintKind::Le(Dim::constant(0), start.clone()),
                    ),
                    (prove_le(&start1, &end), ConstraintKind::Le(start1.clone(), end.clone())),
                    (prove_le(&end, size), ConstraintKind::Le(end.clone(), size.clone())),
                ];
                if checks.iter().any(|(p, _)| *p == Proof::No) {
                    let empty = prove_le(&start1, &end) == Proof::No;
                    let d = self.error(Code::E0301, span, msg);
                    d.primary.message =
                        if empty { "empty or reversed range".into() } else { "out of bounds".into() };
                    return None;
                }
                for (p, k) in checks {
                    self.defer(env, p, k, &msg);
                }
                let Ok(len) = end.sub(&start) else {
                    self.overflow(span);
                    return None;
                };
                Some(vec![Sh::Dim(len)])
            }
        }
    }

    /// Records a fact that could not be decided in a generic body, for each instantiation.
    pub(crate) fn defer(&mut self, env: &mut Env, p: Proof, kind: ConstraintKind, message: &str) {
        if p == Proof::Unknown {
            env.constraints.push(Constraint { kind, message: message.to_owned() });
        }
    }

    fn field(&mut self, env: &mut Env, t: &Ty, base_span: Span, name: &ast::Ident) -> Ty {
        match t {
            Ty::Error => Ty::Error,
            Ty::Tensor(e, s) if name.name == "T" => {
                if env.elementwise_only {
                    self.not_elementwise(name.span, "`.T`");
                }
                let n = s.len();
                let spread = s.iter().position(|x| matches!(x, Sh::Spread(_)));
                if n < 2 || spread.is_some_and(|p| p + 2 >= n) {
                    let d = self.error(
                        Code::E0301,
                        name.span,
                        format!(
                            "`.T` swaps the last two dimensions, but {} has fewer known",
                            tensor_to_string(*e, s)
                        ),
                    );
                    d.primary.message = "needs at least two trailing dimensions".into();
                    return Ty::Error;
                }
                let mut out = s.clone();
                out.swap(n - 1, n - 2);
                Ty::Tensor(*e, out)
            }
            Ty::Layer(l) => self.layer_field(env, l, base_span, name),
            other => {
                let shown = self.show_ty(other);
                let d = self.error(Code::E0201, name.span, format!("{shown} has no field `{}`", name.name));
                d.primary.message = "unknown field".into();
                if matches!(other, Ty::Tensor(..)) {
                    d.help = Some("tensors have one field, `.T`".into());
                }
                Ty::Error
            }
        }
    }

    fn if_expr(
        &mut self,
        env: &mut Env,
        span: Span,
        branches: &[ast::IfBranch],
        otherwise: Option<&ast::Block>,
    ) -> Ty {
        // Fold from the last branch: `if a {x} else if b {y} else {z}` = `if a {x} else {if b {y} else {z}}`.
        let mut results: Vec<(Ty, Span)> = Vec::new();
        let mut conds: Vec<(Ty, Span)> = Vec::new();
        for b in branches {
            let c = self.expr(env, &b.cond);
            let training = matches!(b.cond.kind, ExprKind::Training);
            let saved = env.in_training;
            env.in_training |= training;
            let r = self.block(env, &b.then);
            env.in_training = saved;
            conds.push((c, b.cond.span));
            results.push(r);
        }
        let mut acc = match otherwise {
            Some(b) => self.block(env, b),
            None => (Ty::unit(), span),
        };
        for ((c, cs), (t, ts)) in conds.into_iter().zip(results).rev() {
            acc = (self.select(&c, cs, &t, ts, &acc.0, acc.1, otherwise.is_some()), ts);
        }
        acc.0
    }

    #[allow(clippy::too_many_arguments)]
    fn select(&mut self, c: &Ty, cs: Span, t: &Ty, ts: Span, f: &Ty, fs: Span, has_else: bool) -> Ty {
        match c {
            Ty::Error => Ty::Error,
            Ty::ConstBool(Some(true)) => t.clone(),
            Ty::ConstBool(Some(false)) => f.clone(),
            Ty::ConstBool(None) => {
                if t.is_error() || f.is_error() {
                    return Ty::Error;
                }
                if !has_else && *t != Ty::unit() {
                    return Ty::unit();
                }
                if !self.expect_exact_silent(t, f) {
                    let (tt, ft) = (self.show_ty(t), self.show_ty(f));
                    let d = self.error(
                        Code::E0301,
                        fs,
                        format!("the branches of `if training` differ: {tt} and {ft}"),
                    );
                    d.primary.message = format!("this is {ft}");
                    d.labels.push(fluxc_syntax::Label { span: ts, message: format!("this is {tt}") });
                    return Ty::Error;
                }
                t.clone()
            }
            _ => {
                // A bool tensor: `where(c, a, b)` with broadcasting.
                let Some((ce, csh)) = self.operand(c, cs) else { return Ty::Error };
                if ce != Elem::Bool {
                    self.error(
                        Code::E0302,
                        cs,
                        format!("an `if` condition must be bool, found {}", tensor_to_string(ce, &csh)),
                    )
                    .primary
                    .message = "not a bool".into();
                    return Ty::Error;
                }
                if !has_else {
                    self.error(
                        Code::E0301,
                        cs,
                        "an `if` on a bool tensor needs an `else` (it is `where(c, a, b)`)",
                    )
                    .primary
                    .message = "tensor condition".into();
                    return Ty::Error;
                }
                let (Some((te, tsh)), Some((fe, fsh))) = (self.operand(t, ts), self.operand(f, fs)) else {
                    return Ty::Error;
                };
                let te2 = if matches!(t, Ty::Dim(_)) { fe } else { te };
                let fe2 = if matches!(f, Ty::Dim(_)) { te } else { fe };
                if te2 != fe2 {
                    self.error(
                        Code::E0302,
                        fs,
                        format!("the branches differ in element type: {} and {}", te2.as_str(), fe2.as_str()),
                    )
                    .primary
                    .message = "this branch".into();
                    return Ty::Error;
                }
                let Some(s1) = self.broadcast2(&csh, cs, &tsh, ts, "if") else { return Ty::Error };
                let Some(s2) = self.broadcast2(&s1, ts, &fsh, fs, "if") else { return Ty::Error };
                Ty::Tensor(te2, s2)
            }
        }
    }

    pub(crate) fn expect_exact_silent(&self, want: &Ty, found: &Ty) -> bool {
        let none = Default::default();
        let mut u = Unifier::new(&none);
        match (want, found) {
            (Ty::Tensor(..) | Ty::Tuple(_), _) => u.ty(want, found).is_ok(),
            (Ty::Layer(a), Ty::Layer(b)) => a == b,
            _ => std::mem::discriminant(want) == std::mem::discriminant(found),
        }
    }

    /// Renames a signature's dimension and shape variables apart for one instantiation.
    pub(crate) fn renaming(
        &mut self,
        dims: &[super::DimParamSig],
    ) -> (Subst, std::collections::BTreeSet<String>) {
        let suffix = self.fresh_suffix();
        let mut s = Subst::default();
        let mut unknowns = std::collections::BTreeSet::new();
        for d in dims {
            let fresh = format!("{}{suffix}", d.name);
            if d.shape {
                s.shapes.insert(d.name.clone(), vec![Sh::Spread(fresh.clone())]);
            } else {
                s.dims.insert(d.name.clone(), Dim::var(&fresh));
            }
            unknowns.insert(fresh);
        }
        (s, unknowns)
    }
}

pub(crate) enum IndexRef<'x> {
    At(&'x Dim),
    Range(Option<&'x Dim>, Option<&'x Dim>),
    Full,
}

/// numpy broadcasting on shapes that may hold one shape variable each: dimensions are aligned
/// from the right; equal ones or a 1 broadcast; what is left of the two prefixes must agree.
pub(crate) fn broadcast(a: &[Sh], b: &[Sh]) -> Result<Shape, String> {
    if a == b {
        return Ok(a.to_vec());
    }
    let tail_len = |s: &[Sh]| s.iter().rev().take_while(|x| matches!(x, Sh::Dim(_))).count();
    let common = tail_len(a).min(tail_len(b));
    let mut out_tail = Vec::new();
    for k in 0..common {
        let (Some(Sh::Dim(x)), Some(Sh::Dim(y))) = (a.get(a.len() - 1 - k), b.get(b.len() - 1 - k)) else {
            return Err("internal: tail".into());
        };
        let one = Dim::constant(1);
        let d = if x == y {
            x.clone()
        } else if *x == one {
            y.clone()
        } else if *y == one {
            x.clone()
        } else {
            return Err(format!(
                "dimension {} from the end: {} vs {} (they must be equal or one of them 1)",
                k + 1,
                show_dim(x),
                show_dim(y)
            ));
        };
        out_tail.push(Sh::Dim(d));
    }
    out_tail.reverse();
    let pa = a.get(..a.len() - common).unwrap_or_default();
    let pb = b.get(..b.len() - common).unwrap_or_default();
    let prefix: Vec<Sh> = if pa.is_empty() {
        pb.to_vec()
    } else if pb.is_empty() || pa == pb {
        pa.to_vec()
    } else if !pa.iter().any(|x| matches!(x, Sh::Spread(_))) && !pb.iter().any(|x| matches!(x, Sh::Spread(_)))
    {
        return broadcast(pa, pb).map(|mut p| {
            p.extend(out_tail.clone());
            p
        });
    } else {
        return Err(format!(
            "[{}] and [{}] cannot be aligned",
            super::ty::shape_to_string(pa),
            super::ty::shape_to_string(pb)
        ));
    };
    let mut out = prefix;
    out.extend(out_tail);
    Ok(out)
}
