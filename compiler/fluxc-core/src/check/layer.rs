//! Functions, layers, optimizers and models: checking their definitions, constructing layer
//! values, applying them to inputs, and reading their fields.

use std::collections::BTreeSet;

use fluxc_syntax::ast::{self, DimParamKind};
use fluxc_syntax::{Code, Label, Span};

use super::call::{ArgV, GenV, PSpec};
use super::ty::{Callee, Elem, FnVal, LayerVal, Sh, Subst, Ty, dim_below_one, show_dim, tensor_to_string};
use super::unify::Unifier;
use super::{Checker, Ctx, DimParamSig, Env, FnSig, LayerSig, MemberKind, OptSig, ParamSig, Sig, Witness};
use crate::dims::Dim;

impl<'a> Checker<'a> {
    /// Binds dimension parameters in `env`; a default may use the earlier ones.
    pub(crate) fn declare_dims(&mut self, env: &mut Env, dims: &[ast::DimParam]) -> Vec<DimParamSig> {
        let mut out: Vec<DimParamSig> = Vec::new();
        for d in dims {
            let (name, shape, default) = match &d.kind {
                DimParamKind::Dim { name, default } => {
                    let v = default.as_ref().and_then(|e| self.dim_value(env, e));
                    (name, false, v)
                }
                DimParamKind::Shape { name } => (name, true, None),
            };
            if out.iter().any(|o| o.name == name.name) {
                self.error(Code::E0203, name.span, format!("dimension `{}` is declared twice", name.name))
                    .primary
                    .message = "second declaration".into();
                continue;
            }
            if shape {
                env.shape_vars.insert(name.name.clone());
            } else {
                env.bind(&name.name, Ty::Dim(Dim::var(&name.name)));
            }
            out.push(DimParamSig { name: name.name.clone(), shape, default });
        }
        out
    }

    /// Value parameters: types, defaults (checked against the type), bound in `env`.
    fn declare_params(&mut self, env: &mut Env, params: &[ast::Param]) -> Vec<ParamSig> {
        let mut out: Vec<ParamSig> = Vec::new();
        for p in params {
            let ty = self.resolve_type(env, &p.ty);
            if let Some(d) = &p.default {
                let t = self.expr(env, d);
                let none = BTreeSet::new();
                let mut u = Unifier::new(&none);
                self.check_arg(env, &mut u, &ty, &t, &t, d.span, p.name.span, &p.name.name);
            }
            if out.iter().any(|o| o.name == p.name.name) {
                self.error(
                    Code::E0203,
                    p.name.span,
                    format!("parameter `{}` is declared twice", p.name.name),
                )
                .primary
                .message = "second declaration".into();
                continue;
            }
            env.bind(&p.name.name, ty.clone());
            out.push(ParamSig {
                name: p.name.name.clone(),
                ty,
                default: p.default.as_ref().map(default_text),
            });
        }
        out
    }

    /// `found` (a body's value) against the declared result; E0301/E0302 at the final expression.
    fn check_result(&mut self, name: &str, declared: &Ty, found: &Ty, tail: Span, ret_span: Span) {
        let none = BTreeSet::new();
        let mut u = Unifier::new(&none);
        if let Err(m) = u.ty(declared, found) {
            let (want, got) = (self.show_ty(declared), self.show_ty(found));
            let d = self.error(
                m.code,
                tail,
                format!("`{name}` is declared to return {want}, but its body gives {got}"),
            );
            d.primary.message = format!("this is {got}");
            d.labels.push(Label { span: ret_span, message: "declared here".into() });
            d.notes.push(m.note);
        }
    }

    pub(crate) fn check_fn(
        &mut self,
        file: fluxc_syntax::FileId,
        f: &ast::FnDef,
        ctx: Ctx,
        kind: &'static str,
    ) -> Sig {
        let mut env = Env::new(file, ctx);
        env.owner = Some((f.name.name.clone(), kind));
        let dims = self.declare_dims(&mut env, &f.dims);
        let params = self.declare_params(&mut env, &f.params);
        let ret = f.ret.as_ref().map(|t| (self.resolve_type(&mut env, t), t.span));
        let (body, tail) = self.block(&mut env, &f.body);
        let ret = match ret {
            Some((declared, span)) => {
                self.check_result(&f.name.name, &declared, &body, tail, span);
                if ctx == Ctx::Loss
                    && !matches!(&declared, Ty::Tensor(Elem::F32, s) if s.is_empty())
                    && !declared.is_error()
                {
                    self.error(
                        Code::E0302,
                        span,
                        format!("a loss returns a scalar f32, not {}", self.show_ty(&declared)),
                    )
                    .primary
                    .message = "not f32".into();
                }
                declared
            }
            None => body,
        };
        Sig::Fn(FnSig { dims, params, ret, effects: env.effects, constraints: env.constraints })
    }

    // ---------------------------------------------------------------------------- layers

    pub(crate) fn check_layer(&mut self, file: fluxc_syntax::FileId, l: &ast::LayerDef) -> Sig {
        let mut env = Env::new(file, Ctx::LayerInit);
        env.owner = Some((l.name.name.clone(), "layer"));
        let dims = self.declare_dims(&mut env, &l.dims);
        let params = self.declare_params(&mut env, &l.params);
        let mut members: Vec<(String, MemberKind, Ty)> = Vec::new();
        let mut forward: Option<&ast::ForwardDef> = None;
        let mut seen = std::collections::HashMap::<String, Span>::new();
        for m in &l.members {
            let (name, kind, ty) = match m {
                ast::LayerMember::Param(p) => {
                    let ty = self.resolve_type(&mut env, &p.ty);
                    self.check_init(&mut env, &ty, &p.init);
                    (&p.name, MemberKind::Param, ty)
                }
                ast::LayerMember::State(s) => {
                    let ty = match &s.ty {
                        Some(t) => {
                            let ty = self.resolve_type(&mut env, t);
                            self.check_init(&mut env, &ty, &s.init);
                            ty
                        }
                        None => self.expr(&mut env, &s.init),
                    };
                    (&s.name, MemberKind::State, ty)
                }
                ast::LayerMember::Field(f) => {
                    let t = self.expr(&mut env, &f.value);
                    let ty = match self.as_layer(&t, f.value.span) {
                        Some(lv) => Ty::Layer(lv),
                        None => Ty::Error,
                    };
                    (&f.name, MemberKind::Field, ty)
                }
                ast::LayerMember::Forward(fw) => {
                    if forward.is_some() {
                        self.error(
                            Code::E0203,
                            fw.span,
                            format!("layer `{}` has two `forward`s", l.name.name),
                        )
                        .primary
                        .message = "second forward".into();
                    } else {
                        forward = Some(fw);
                    }
                    continue;
                }
            };
            if let Some(first) = seen.get(&name.name) {
                let first = *first;
                let d =
                    self.error(Code::E0203, name.span, format!("member `{}` is defined twice", name.name));
                d.primary.message = "second definition".into();
                d.labels.push(Label { span: first, message: "first defined here".into() });
                continue;
            }
            seen.insert(name.name.clone(), name.span);
            env.bind(&name.name, ty.clone());
            members.push((name.name.clone(), kind, ty));
        }
        let init_constraints = std::mem::take(&mut env.constraints);
        let forward = match forward {
            Some(fw) => Some(self.check_forward(&mut env, &l.name.name, fw, &members)),
            None => {
                self.error(Code::E0201, l.name.span, format!("layer `{}` has no `forward`", l.name.name))
                    .primary
                    .message = "every layer needs exactly one `forward`".into();
                None
            }
        };
        Sig::Layer(Box::new(LayerSig { dims, params, members, forward, constraints: init_constraints }))
    }

    /// A `param`/`state` initialiser: its dims may come from the declared type (§10.4); it may use
    /// `rng` but not `io`.
    fn check_init(&mut self, env: &mut Env, declared: &Ty, init: &ast::Expr) {
        if !matches!(declared, Ty::Tensor(..) | Ty::Error) {
            let shown = self.show_ty(declared);
            self.error(Code::E0302, init.span, format!("parameters and states are tensors, not {shown}"))
                .primary
                .message = "not a tensor".into();
            return;
        }
        env.init_hint = Some(declared.clone());
        let t = self.expr(env, init);
        env.init_hint = None;
        self.expect_exact(env, declared, &t, init.span, "the declared type");
    }

    fn check_forward(
        &mut self,
        env: &mut Env,
        layer: &str,
        fw: &ast::ForwardDef,
        members: &[(String, MemberKind, Ty)],
    ) -> FnSig {
        env.ctx = Ctx::Forward;
        env.effects = Default::default();
        env.states = members.iter().filter(|m| m.1 == MemberKind::State).map(|m| m.0.clone()).collect();
        env.push();
        let dims = self.declare_dims(env, &fw.dims);
        let params = self.declare_params(env, &fw.params);
        let ret = fw.ret.as_ref().map(|t| (self.resolve_type(env, t), t.span));
        let (body, tail) = self.block(env, &fw.body);
        env.pop();
        let ret = match ret {
            Some((declared, span)) => {
                self.check_result(&format!("{layer}.forward"), &declared, &body, tail, span);
                declared
            }
            None => body,
        };
        FnSig {
            dims,
            params,
            ret,
            effects: std::mem::take(&mut env.effects),
            constraints: std::mem::take(&mut env.constraints),
        }
    }

    fn layer_sig(&mut self, item: usize, span: Span) -> Option<LayerSig> {
        match self.sig(item, Some(span)) {
            Some(Sig::Layer(l)) => Some(*l),
            _ => None,
        }
    }

    /// The layer's own dimension names → the values it was built with.
    fn layer_subst(sig: &LayerSig, dims: &[Dim]) -> Subst {
        let mut s = Subst::default();
        for (p, d) in sig.dims.iter().zip(dims) {
            s.dims.insert(p.name.clone(), d.clone());
        }
        s
    }

    /// `Dense(784 => 256, relu)`, `Conv2d((3, 3), 16 => 32, Stride = 2)`, `Flatten`: flattens the
    /// leading dimension arguments into the dimension parameters (§3.2).
    pub(crate) fn construct_layer_with(
        &mut self,
        env: &mut Env,
        item: usize,
        span: Span,
        gens: Option<&[GenV]>,
        args: &[ArgV<'_>],
    ) -> Ty {
        let name = self.idx.items.get(item).map(|i| i.name.clone()).unwrap_or_default();
        let Some(sig) = self.layer_sig(item, span) else { return Ty::Error };
        let what = format!("`{name}`");
        let (lead, rest) = self.leading_dims(gens, args, &what);
        let Some(lead) = lead else { return Ty::Error };
        let dim_names: Vec<&str> = sig.dims.iter().filter(|d| !d.shape).map(|d| d.name.as_str()).collect();
        let mut given: Vec<Option<Dim>> = vec![None; sig.dims.len()];
        if lead.len() > dim_names.len() {
            let at = args.get(dim_names.len().min(args.len().saturating_sub(1))).map_or(span, |a| a.span);
            let d = self.error(
                Code::E0303,
                at,
                format!(
                    "{what} takes {} dimension{}, but {} were given",
                    dim_names.len(),
                    plural(dim_names.len()),
                    lead.len()
                ),
            );
            d.primary.message = "too many dimensions".into();
            if !dim_names.is_empty() {
                d.notes.push(format!("its dimensions are [{}]", dim_names.join(", ")));
            }
            return Ty::Error;
        }
        for (i, v) in lead.into_iter().enumerate() {
            if let Some(g) = given.get_mut(i) {
                *g = Some(v);
            }
        }
        // Named dimension arguments (`Stride = 2`), then value arguments.
        let mut values: Vec<ArgV<'_>> = Vec::new();
        for a in rest {
            if let Some(n) = a.name
                && let Some(pi) = sig.dims.iter().position(|d| d.name == n.name)
            {
                match &a.ty {
                    Ty::Dim(v) => {
                        if given.get(pi).is_some_and(Option::is_some) {
                            self.error(
                                Code::E0303,
                                n.span,
                                format!("dimension `{}` is given twice", n.name),
                            )
                            .primary
                            .message = "repeated".into();
                            return Ty::Error;
                        }
                        if v.as_constant().is_some_and(|c| c < 1) {
                            self.error(
                                Code::E0301,
                                a.span,
                                format!("dimension `{}` must be at least 1", n.name),
                            )
                            .primary
                            .message = format!("this is {}", show_dim(v));
                            return Ty::Error;
                        }
                        if let Some(g) = given.get_mut(pi) {
                            *g = Some(v.clone());
                        }
                    }
                    Ty::Error => return Ty::Error,
                    other => {
                        let shown = self.show_ty(other);
                        self.error(
                            Code::E0302,
                            a.span,
                            format!("dimension `{}` must be a dimension, found {shown}", n.name),
                        )
                        .primary
                        .message = "not a dimension".into();
                        return Ty::Error;
                    }
                }
                continue;
            }
            values.push(a.clone());
        }
        // Defaults (in terms of earlier dimensions) and missing ones.
        let mut dims: Vec<Dim> = Vec::new();
        let mut so_far = Subst::default();
        for (p, g) in sig.dims.iter().zip(given) {
            let v = match (g, &p.default) {
                (Some(v), _) => v,
                (None, Some(def)) => match so_far.dim(def) {
                    Ok(v) => v,
                    Err(_) => return self.overflow(span),
                },
                (None, None) => {
                    let d = self.error(
                        Code::E0303,
                        span,
                        format!("{what} is missing its dimension `{}`", p.name),
                    );
                    d.primary.message = "missing dimension".into();
                    d.help = Some(format!("its dimensions are [{}]", dim_names.join(", ")));
                    return Ty::Error;
                }
            };
            so_far.dims.insert(p.name.clone(), v.clone());
            dims.push(v);
        }
        // Value arguments against the parameters, with the dimensions substituted.
        let specs: Vec<PSpec<'_>> =
            sig.params.iter().map(|p| PSpec { name: &p.name, required: p.default.is_none() }).collect();
        let Some(slots) = self.bind_args(&specs, &values, span, &what) else { return Ty::Error };
        let none = BTreeSet::new();
        for (pi, slot) in slots.iter().enumerate() {
            let (Some(ai), Some(p)) = (slot, sig.params.get(pi)) else { continue };
            let Some(a) = values.get(*ai) else { continue };
            let want = so_far.ty(&p.ty).unwrap_or(Ty::Error);
            let mut u = Unifier::new(&none);
            self.check_arg(env, &mut u, &want, &a.ty, &a.ty, a.span, span, &name);
        }
        // Facts of the body that these dimensions decide (a `Heads` that does not divide `D`).
        let empty = Subst::default();
        let mut all = sig.constraints.clone();
        if let Some(f) = &sig.forward {
            all.extend(f.constraints.iter().cloned());
        }
        let before = self.diags.len();
        let mut scratch = Vec::new();
        std::mem::swap(&mut scratch, &mut env.constraints);
        self.check_constraints(env, &all, &so_far, &empty, span, &name);
        // Undecided facts of a forward are checked again where the layer is applied.
        env.constraints = scratch;
        if self.diags.len() > before {
            return Ty::Error;
        }
        for (_, _, t) in &sig.members {
            if let Ok(t) = so_far.ty(t)
                && let Some(v) = dim_below_one(&t)
            {
                self.below_one(span, &name, &t, v);
                return Ty::Error;
            }
        }
        Ty::Layer(LayerVal::User { item, dims })
    }

    /// `layer_value.name`: a param, state or sub-layer (§10.7).
    pub(crate) fn layer_field(&mut self, env: &mut Env, l: &LayerVal, _base: Span, name: &ast::Ident) -> Ty {
        let _ = env;
        match l {
            LayerVal::User { item, dims } => {
                let Some(sig) = self.layer_sig(*item, name.span) else { return Ty::Error };
                let s = Self::layer_subst(&sig, dims);
                match sig.members.iter().find(|m| m.0 == name.name) {
                    Some((_, _, t)) => s.ty(t).unwrap_or(Ty::Error),
                    None => {
                        let lname = self.show_layer(l);
                        let d = self.error(
                            Code::E0201,
                            name.span,
                            format!("`{lname}` has no field `{}`", name.name),
                        );
                        d.primary.message = "unknown field".into();
                        if let Some(sug) =
                            super::suggest(&name.name, sig.members.iter().map(|m| m.0.as_str()))
                        {
                            d.help = Some(format!("did you mean `{sug}`?"));
                        } else if !sig.members.is_empty() {
                            let names: Vec<String> =
                                sig.members.iter().map(|m| format!("`{}`", m.0)).collect();
                            d.notes.push(format!("its fields are {}", names.join(", ")));
                        }
                        Ty::Error
                    }
                }
            }
            LayerVal::Recur(cell) if name.name == "cell" => Ty::Layer((**cell).clone()),
            LayerVal::BatchNorm { c }
                if ["weight", "bias", "running_mean", "running_var"].contains(&name.name.as_str()) =>
            {
                Ty::f32s(vec![Sh::Dim(c.clone())])
            }
            LayerVal::GroupNorm { c, .. } if ["weight", "bias"].contains(&name.name.as_str()) => {
                Ty::f32s(vec![Sh::Dim(c.clone())])
            }
            _ => {
                let lname = self.show_layer(l);
                self.error(Code::E0201, name.span, format!("`{lname}` has no field `{}`", name.name))
                    .primary
                    .message = "unknown field".into();
                Ty::Error
            }
        }
    }

    pub(crate) fn apply_layer_args(
        &mut self,
        env: &mut Env,
        l: &LayerVal,
        span: Span,
        args: &[ArgV<'_>],
    ) -> Ty {
        match args {
            [a] if a.name.is_none() && a.pair.is_none() => self.apply_layer(env, l, &a.ty, a.span, span),
            _ => {
                let at = args.get(1).or(args.first()).map_or(span, |a| a.span);
                let d = self.error(Code::E0303, at, "a layer is called with one input");
                d.primary.message = "wrong arguments".into();
                d.help = Some("a `forward` with several inputs takes a tuple: `layer((a, b))`".into());
                Ty::Error
            }
        }
    }

    /// Applies a layer value to an input of type `input` (the argument at `arg`).
    pub(crate) fn apply_layer(
        &mut self,
        env: &mut Env,
        l: &LayerVal,
        input: &Ty,
        arg: Span,
        call: Span,
    ) -> Ty {
        if input.is_error() {
            return Ty::Error;
        }
        let probe = |t: &Ty, sp: Span| ArgV { name: None, ty: t.clone(), span: sp, pair: None, expr: None };
        match l {
            LayerVal::User { item, dims } => {
                let Some(sig) = self.layer_sig(*item, call) else { return Ty::Error };
                let Some(fwd) = &sig.forward else { return Ty::Error };
                let s = Self::layer_subst(&sig, dims);
                let sub_ty = |t: &Ty| s.ty(t).unwrap_or(Ty::Error);
                let inst = FnSig {
                    dims: fwd.dims.clone(),
                    params: fwd
                        .params
                        .iter()
                        .map(|p| ParamSig {
                            name: p.name.clone(),
                            ty: sub_ty(&p.ty),
                            default: p.default.clone(),
                        })
                        .collect(),
                    ret: sub_ty(&fwd.ret),
                    effects: Default::default(),
                    constraints: fwd
                        .constraints
                        .iter()
                        .filter_map(|c| {
                            let kind = match &c.kind {
                                super::ConstraintKind::Eq(a, b) => {
                                    super::ConstraintKind::Eq(s.dim(a).ok()?, s.dim(b).ok()?)
                                }
                                super::ConstraintKind::Le(a, b) => {
                                    super::ConstraintKind::Le(s.dim(a).ok()?, s.dim(b).ok()?)
                                }
                            };
                            Some(super::Constraint { kind, message: c.message.clone() })
                        })
                        .collect(),
                };
                let name = self.show_layer(l);
                let t = self.instantiate(env, &inst, &name, call, call, None, &[probe(input, arg)], None);
                // The layer's own check reported any effect its context forbids; record it only.
                let w = Witness { span: call, callee: Callee::Item(*item), name: name.clone() };
                if !env.ctx.forbids(fwd.effects.effect) {
                    self.apply_effect(env, fwd.effects.effect, w);
                } else {
                    env.effects.add(fwd.effects.effect, &w);
                }
                t
            }
            LayerVal::Chain(ls) => {
                let mut t = input.clone();
                for sub in ls {
                    t = self.apply_layer(env, sub, &t, arg, call);
                    if t.is_error() {
                        return Ty::Error;
                    }
                }
                t
            }
            LayerVal::Parallel(conn, ls) => {
                let mut outs = Vec::new();
                for sub in ls {
                    let t = self.apply_layer(env, sub, input, arg, call);
                    if t.is_error() {
                        return Ty::Error;
                    }
                    outs.push(probe(&t, call));
                }
                self.call_fnval(env, conn, call, call, None, &outs, None)
            }
            LayerVal::Skip(sub, conn) => {
                let t = self.apply_layer(env, sub, input, arg, call);
                if t.is_error() {
                    return Ty::Error;
                }
                self.call_fnval(env, conn, call, call, None, &[probe(&t, call), probe(input, arg)], None)
            }
            LayerVal::Recur(cell) => self.apply_recur(env, cell, input, arg, call),
            LayerVal::BatchNorm { c } | LayerVal::GroupNorm { c, .. } => {
                let kind = if matches!(l, LayerVal::BatchNorm { .. }) { "BatchNorm" } else { "GroupNorm" };
                match input {
                    Ty::Tensor(Elem::F32, s)
                        if matches!(s.get(1), Some(Sh::Dim(d)) if d == c)
                            && matches!(s.first(), Some(Sh::Dim(_))) =>
                    {
                        input.clone()
                    }
                    other => {
                        let shown = self.show_ty(other);
                        let d = self.error(
                            Code::E0301,
                            arg,
                            format!("expected f32[B, {}, ..S], found {shown}", show_dim(c)),
                        );
                        d.primary.message = format!("this is {shown}");
                        d.labels.push(Label {
                            span: call,
                            message: format!("`{kind}[{}]` normalises over axis 1", show_dim(c)),
                        });
                        Ty::Error
                    }
                }
            }
            LayerVal::Func(f) => self.call_fnval(env, f, call, call, None, &[probe(input, arg)], None),
        }
    }

    /// `Recur(cell)` over `[B, T, ..In]`: the cell maps `(x_t, state)` to `(y_t, state)` from a
    /// zero state; the result stacks every `y_t` on axis 1.
    fn apply_recur(&mut self, env: &mut Env, cell: &LayerVal, input: &Ty, arg: Span, call: Span) -> Ty {
        let bad = |c: &mut Self, msg: String| {
            c.error(Code::E0301, arg, msg).primary.message = "wrong input for `Recur`".into();
            Ty::Error
        };
        let Ty::Tensor(e, s) = input else {
            let shown = self.show_ty(input);
            return bad(self, format!("`Recur` takes a sequence [B, T, …], found {shown}"));
        };
        let (Some(b), Some(Sh::Dim(t))) = (s.first(), s.get(1)) else {
            return bad(
                self,
                format!("`Recur` takes a sequence [B, T, …], found {}", tensor_to_string(*e, s)),
            );
        };
        let mut step: Vec<Sh> = vec![b.clone()];
        step.extend(s.iter().skip(2).cloned());
        let x_t = Ty::Tensor(*e, step);
        // The cell's state type: from its forward's second input, once B and the cell's dims are known.
        let LayerVal::User { item, dims } = cell else {
            return bad(
                self,
                "`Recur` takes a cell layer (`RNNCell`, `LSTMCell`, `GRUCell` or a layer of that form)"
                    .into(),
            );
        };
        let Some(sig) = self.layer_sig(*item, call) else { return Ty::Error };
        let Some(fwd) = sig.forward.clone() else { return Ty::Error };
        let ls = Self::layer_subst(&sig, dims);
        let (rename, unknowns) = self.renaming(&fwd.dims);
        let Some(Ok(param)) = fwd.params.first().map(|p| ls.ty(&p.ty).and_then(|t| rename.ty(&t))) else {
            return Ty::Error;
        };
        let Ty::Tuple(parts) = &param else {
            return bad(self, "a `Recur` cell's forward takes `(x, state)`".into());
        };
        let (Some(px), Some(pstate)) = (parts.first(), parts.get(1)) else {
            return bad(self, "a `Recur` cell's forward takes `(x, state)`".into());
        };
        let mut u = Unifier::new(&unknowns);
        if let Err(m) = u.ty(px, &x_t) {
            let want = u.subst.ty(px).unwrap_or(Ty::Error);
            let (xs, ws, is) = (self.show_ty(&x_t), self.show_ty(&want), self.show_ty(input));
            let d = self.error(
                m.code,
                arg,
                format!("each step of the sequence is {xs}, but the cell takes {ws}"),
            );
            d.primary.message = format!("this is {is}");
            d.notes.push(m.note);
            return Ty::Error;
        }
        let Ok(state) = u.subst.ty(pstate) else { return Ty::Error };
        if !u.unsolved().is_empty() {
            return bad(self, "the cell's state type cannot be determined from the input".into());
        }
        let out = self.apply_layer(env, cell, &Ty::Tuple(vec![x_t, state.clone()]), arg, call);
        match out {
            Ty::Tuple(items) if items.len() == 2 => {
                let (Some(y), Some(new_state)) = (items.first(), items.get(1)) else { return Ty::Error };
                if !self.expect_exact_silent(&state, new_state) {
                    return bad(self, "the cell returns a state of another type than it takes".into());
                }
                match y {
                    Ty::Tensor(ye, ys) if !ys.is_empty() => {
                        let mut o = ys.clone();
                        o.insert(1, Sh::Dim(t.clone()));
                        Ty::Tensor(*ye, o)
                    }
                    _ => bad(self, "the cell's output must be a tensor [B, …]".into()),
                }
            }
            Ty::Error => Ty::Error,
            _ => bad(self, "a `Recur` cell's forward returns `(output, state)`".into()),
        }
    }

    // ------------------------------------------------------------------------ optimizers

    pub(crate) fn check_optimizer(&mut self, file: fluxc_syntax::FileId, o: &ast::OptimizerDef) -> Sig {
        let mut env = Env::new(file, Ctx::OptInit);
        env.owner = Some((o.name.name.clone(), "optimizer"));
        let params = self.declare_params(&mut env, &o.params);
        for p in &params {
            if !matches!(&p.ty, Ty::Tensor(Elem::F32, s) if s.is_empty())
                && !p.ty.is_error()
                && let Some(ast_p) = o.params.iter().find(|x| x.name.name == p.name)
            {
                self.error(Code::E0302, ast_p.ty.span, "optimizer hyperparameters are f32 scalars")
                    .primary
                    .message = "not f32".into();
            }
        }
        let update = o.members.iter().find_map(|m| match m {
            ast::OptimizerMember::Update(u) => Some(u),
            _ => None,
        });
        let Some(update) = update else {
            self.error(Code::E0201, o.name.span, format!("optimizer `{}` has no `update`", o.name.name))
                .primary
                .message = "every optimizer needs `update(p, g, t) { … }`".into();
            return Sig::Optimizer(OptSig { params });
        };
        if update.params.len() != 3 {
            self.error(Code::E0303, update.span, "`update` takes three parameters: `update(p, g, t)`")
                .primary
                .message = format!("{} given", update.params.len());
            return Sig::Optimizer(OptSig { params });
        }
        let shape_var = "P".to_owned();
        let pty = Ty::f32s(vec![Sh::Spread(shape_var.clone())]);
        env.shape_vars.insert(shape_var);
        let names: Vec<&str> = update.params.iter().map(|p| p.name.as_str()).collect();
        // State initialisers may refer to `p` (§12.1).
        if let Some(p) = names.first() {
            env.bind(p, pty.clone());
        }
        let mut states = Vec::new();
        for m in &o.members {
            let ast::OptimizerMember::State(s) = m else { continue };
            let t = match &s.ty {
                Some(t) => {
                    let declared = self.resolve_type(&mut env, t);
                    let got = self.expr(&mut env, &s.init);
                    self.expect_exact(&env, &declared, &got, s.init.span, "the declared type");
                    declared
                }
                None => self.expr(&mut env, &s.init),
            };
            if !t.is_error() && !self.expect_exact_silent(&pty, &t) {
                let shown = self.show_ty(&t);
                self.error(
                    Code::E0301,
                    s.init.span,
                    format!("an optimizer state has the parameter's shape f32[..P], found {shown}"),
                )
                .primary
                .message = format!("this is {shown}");
            }
            env.bind(&s.name.name, pty.clone());
            states.push(s.name.name.clone());
        }
        env.ctx = Ctx::OptUpdate;
        env.elementwise_only = true;
        env.states = states.into_iter().collect();
        env.push();
        for (i, n) in names.iter().enumerate() {
            env.bind(n, if i == 2 { Ty::scalar(Elem::F32) } else { pty.clone() });
        }
        let (body, tail) = self.block(&mut env, &update.body);
        env.pop();
        if !body.is_error() && !self.expect_exact_silent(&pty, &body) {
            let shown = self.show_ty(&body);
            let d = self.error(
                Code::E0301,
                tail,
                format!("`update` returns the new parameter f32[..P], found {shown}"),
            );
            d.primary.message = format!("this is {shown}");
        }
        Sig::Optimizer(OptSig { params })
    }

    /// `Adam(lr = 0.001)`: hyperparameters by name or position, f32 scalars, not negative.
    pub(crate) fn construct_optimizer(&mut self, _env: &mut Env, item: usize, span: Span, args: &[ArgV<'_>]) {
        let name = self.idx.items.get(item).map(|i| i.name.clone()).unwrap_or_default();
        let Some(Sig::Optimizer(sig)) = self.sig(item, Some(span)) else { return };
        let specs: Vec<PSpec<'_>> =
            sig.params.iter().map(|p| PSpec { name: &p.name, required: p.default.is_none() }).collect();
        let Some(slots) = self.bind_args(&specs, args, span, &format!("`{name}`")) else { return };
        for (pi, slot) in slots.iter().enumerate() {
            let Some(a) = slot.and_then(|ai| args.get(ai)) else { continue };
            let pname = sig.params.get(pi).map(|p| p.name.clone()).unwrap_or_default();
            match &a.ty {
                Ty::Dim(_) | Ty::Error => {}
                Ty::Tensor(Elem::F32, s) if s.is_empty() => {}
                other => {
                    let shown = self.show_ty(other);
                    self.error(Code::E0302, a.span, format!("`{pname}` is an f32 scalar, found {shown}"))
                        .primary
                        .message = format!("this is {}", other.describe_kind());
                    continue;
                }
            }
            self.positive_value(a, &pname, true);
        }
    }

    // ---------------------------------------------------------------------------- models

    pub(crate) fn check_model(&mut self, file: fluxc_syntax::FileId, m: &ast::ModelDef) -> Sig {
        let mut env = Env::new(file, Ctx::Model);
        env.owner = Some((m.name.name.clone(), "model"));
        env.bind("B", Ty::Dim(Dim::var("B")));
        let before = self.diags.len();
        let input = self.resolve_type(&mut env, &m.input);
        let output = self.resolve_type(&mut env, &m.output);
        for d in self.diags.iter_mut().skip(before) {
            if d.code == Code::E0201 {
                d.help = Some("a model signature leaves only the batch dimension `B` free (§12.12)".into());
            }
        }
        for (t, sp) in [(&input, m.input.span), (&output, m.output.span)] {
            let batch_first = match t {
                Ty::Tensor(_, s) => matches!(s.first(), Some(Sh::Dim(d)) if *d == Dim::var("B")),
                Ty::Tuple(items) => items.iter().all(|i| matches!(i, Ty::Tensor(_, s) if matches!(s.first(), Some(Sh::Dim(d)) if *d == Dim::var("B")))),
                _ => t.is_error(),
            };
            if !batch_first && !t.is_error() {
                let shown = self.show_ty(t);
                self.error(
                    Code::E0301,
                    sp,
                    format!("a model's input and output are batched: [B, …], found {shown}"),
                )
                .primary
                .message = "the first dimension must be `B`".into();
            }
        }
        let value = self.expr(&mut env, &m.value);
        let Some(layer) = self.as_layer(&value, m.value.span) else {
            return Sig::Model { input, output };
        };
        if input.is_error() || output.is_error() {
            return Sig::Model { input, output };
        }
        let out = self.apply_model_layer(&mut env, &layer, &input, &m.value, m.input.span);
        if !out.is_error() && !self.expect_exact_silent(&output, &out) {
            let none = BTreeSet::new();
            let mut u = Unifier::new(&none);
            let note = u.ty(&output, &out).err().map(|m| (m.code, m.note));
            let (code, note) = note.unwrap_or((Code::E0301, String::new()));
            let (want, got) = (self.show_ty(&output), self.show_ty(&out));
            let d = self.error(
                code,
                m.value.span,
                format!("model `{}` is declared to return {want}, but its layers produce {got}", m.name.name),
            );
            d.primary.message = format!("this produces {got}");
            d.labels.push(Label { span: m.output.span, message: "declared here".into() });
            if !note.is_empty() {
                d.notes.push(note);
            }
        }
        Sig::Model { input, output }
    }

    /// Applies a model's layer; inside a `Chain` written in place, an error points at the
    /// sub-layer that cannot take its input.
    fn apply_model_layer(
        &mut self,
        env: &mut Env,
        layer: &LayerVal,
        input: &Ty,
        value: &ast::Expr,
        input_span: Span,
    ) -> Ty {
        let elements: Option<Vec<Span>> = match (&value.kind, layer) {
            (ast::ExprKind::Call { callee, args, .. }, LayerVal::Chain(ls))
                if matches!(&callee.kind, ast::ExprKind::Name(n) if n.name == "Chain")
                    && args.len() == ls.len() =>
            {
                Some(args.iter().map(|a| a.span).collect())
            }
            _ => None,
        };
        let (Some(spans), LayerVal::Chain(ls)) = (elements, layer) else {
            return self.apply_layer(env, layer, input, value.span, value.span);
        };
        let mut t = input.clone();
        let mut from = (input_span, "the model's input is".to_owned());
        for (sub, span) in ls.iter().zip(spans) {
            let before = self.diags.len();
            let shown = self.show_ty(&t);
            let next = self.apply_layer(env, sub, &t, span, span);
            // Point at the sub-layer that cannot take its input, and at where that input comes from.
            for d in self.diags.iter_mut().skip(before) {
                if d.primary.span == span {
                    // The label that named what the layer expects becomes the primary one.
                    if let Some(own) = d.labels.iter().find(|l| l.span == span) {
                        d.primary.message = own.message.clone();
                    }
                    d.labels.retain(|l| l.span != span);
                    d.labels.push(Label { span: from.0, message: format!("{} {shown}", from.1) });
                }
            }
            if next.is_error() {
                return Ty::Error;
            }
            t = next;
            from = (span, "this produces".to_owned());
        }
        t
    }

    pub(crate) fn apply_model(
        &mut self,
        env: &mut Env,
        item: usize,
        span: Span,
        callee_span: Span,
        args: &[ArgV<'_>],
    ) -> Ty {
        let name = self.idx.items.get(item).map(|i| i.name.clone()).unwrap_or_default();
        let Some(Sig::Model { input, output }) = self.sig(item, Some(span)) else { return Ty::Error };
        let sig = FnSig {
            dims: vec![DimParamSig { name: "B".into(), shape: false, default: None }],
            params: vec![ParamSig { name: "x".into(), ty: input, default: None }],
            ret: output,
            effects: Default::default(),
            constraints: Vec::new(),
        };
        self.instantiate(env, &sig, &name, span, callee_span, None, args, None)
    }
}

/// A parameter default as users wrote it, for signatures on hover and in snapshots.
fn default_text(e: &ast::Expr) -> String {
    match &e.kind {
        ast::ExprKind::Int(v) => v.to_string(),
        ast::ExprKind::Float(v) => format!("{v:?}"),
        ast::ExprKind::Bool(b) => b.to_string(),
        ast::ExprKind::Str(s) => format!("{s:?}"),
        ast::ExprKind::Name(n) => n.name.clone(),
        ast::ExprKind::Unary { op: ast::UnaryOp::Neg, operand } => format!("-{}", default_text(operand)),
        _ => "…".into(),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[allow(dead_code)]
fn _unused(_: FnVal) {}
