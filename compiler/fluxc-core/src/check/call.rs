//! Calls: argument binding, instantiation of generic signatures, scalar-function lifting, the
//! typing rules of the primitives (§6, §10.6), and effects at each call (§5).

use std::collections::BTreeSet;

use fluxc_syntax::ast::{self, ArgKind, ExprKind, GenericArg};
use fluxc_syntax::{Code, Label, Span};

use super::expr::{Proof, prove_eq, prove_le};
use super::prims::Prim;
use super::ty::{Callee, Effect, FnVal, Sh, Shape, Subst, Ty, dim_below_one, show_dim};
use super::unify::Unifier;
use super::{Checker, Constraint, ConstraintKind, Ctx, DimParamSig, Env, FnSig, Global, Sig, Witness};
use crate::dims::Dim;

/// An evaluated call argument.
#[derive(Clone, Debug)]
pub(crate) struct ArgV<'e> {
    pub name: Option<&'e ast::Ident>,
    pub ty: Ty,
    pub span: Span,
    /// `a => b`: both sides' types.
    pub pair: Option<(Ty, Ty)>,
    /// The argument's expression (for configuration values checked by value).
    pub expr: Option<&'e ast::Expr>,
}

/// An evaluated explicit argument in `f[...]`.
#[derive(Clone, Debug)]
pub(crate) enum GenV {
    Dim(Dim, Span),
    Shape(Shape, Span),
    Type(Ty, Span),
}

impl GenV {
    pub fn span(&self) -> Span {
        match self {
            GenV::Dim(_, s) | GenV::Shape(_, s) | GenV::Type(_, s) => *s,
        }
    }
}

/// A parameter as argument binding sees it.
pub(crate) struct PSpec<'n> {
    pub name: &'n str,
    pub required: bool,
}

pub(crate) fn spec<'n>(list: &[(&'n str, bool)]) -> Vec<PSpec<'n>> {
    list.iter().map(|(name, required)| PSpec { name, required: *required }).collect()
}

impl<'a> Checker<'a> {
    pub(crate) fn call(
        &mut self,
        env: &mut Env,
        span: Span,
        callee: &ast::Expr,
        generics: Option<&[GenericArg]>,
        args: &[ast::Arg],
    ) -> Ty {
        let hint = env.init_hint.take();
        // `product(S)` of a shape variable is a dimension (§12.12).
        if let ExprKind::Name(id) = &callee.kind
            && id.name == "product"
            && env.lookup("product").is_none()
            && self.global(env.file, "product").is_none()
        {
            return self.product_call(env, span, args);
        }
        let gens = generics.map(|g| self.generic_args(env, g));
        let argv = self.eval_args(env, args);
        let callee_ty = match &callee.kind {
            // Item names are resolved here so that a layer or optimizer is constructed with its
            // arguments rather than first as a bare value.
            ExprKind::Name(id) if env.lookup(&id.name).is_none() => {
                let builtin =
                    if env.train_value { super::config::train_builtin_value(&id.name) } else { None };
                match (builtin, self.global(env.file, &id.name)) {
                    (Some(t), _) => {
                        return self.call_train_builtin(env, &t, span, callee.span, &argv);
                    }
                    (None, Some(Global::Item(i))) => {
                        return self.call_item(env, i, span, callee.span, gens.as_deref(), &argv, hint);
                    }
                    (None, Some(Global::Prim(p))) => {
                        let t = self.call_prim(env, p, span, callee.span, gens.as_deref(), &argv, hint);
                        self.record_callee(env, callee.span, &Ty::Fn(FnVal::Prim(p)));
                        return t;
                    }
                    (None, None) => self.expr(env, callee),
                }
            }
            _ => self.expr(env, callee),
        };
        match callee_ty {
            Ty::Error => Ty::Error,
            Ty::Fn(f) => self.call_fnval(env, &f, span, callee.span, gens.as_deref(), &argv, hint),
            Ty::Layer(l) => {
                self.no_generics(gens.as_deref(), "a layer value");
                self.apply_layer_args(env, &l, callee.span, &argv)
            }
            Ty::Model(id) => {
                self.no_generics(gens.as_deref(), "a model");
                self.apply_model(env, id, span, callee.span, &argv)
            }
            other => {
                let shown = self.show_ty(&other);
                self.error(Code::E0302, callee.span, format!("{shown} is not callable")).primary.message =
                    format!("this is {}", other.describe_kind());
                Ty::Error
            }
        }
    }

    fn record_callee(&mut self, env: &Env, span: Span, t: &Ty) {
        if env.file == self.main {
            let ty = self.show_ty(t);
            self.info.exprs.push(super::ExprInfo { span, ty, effect: Effect::Pure });
        }
    }

    fn no_generics(&mut self, gens: Option<&[GenV]>, what: &str) {
        if let Some(first) = gens.and_then(|g| g.first()) {
            self.error(Code::E0303, first.span(), format!("{what} takes no `[…]` arguments"))
                .primary
                .message = "unexpected".into();
        }
    }

    fn product_call(&mut self, env: &mut Env, span: Span, args: &[ast::Arg]) -> Ty {
        if let [ast::Arg { kind: ArgKind::Positional(e), .. }] = args {
            if let ExprKind::Name(id) = &e.kind
                && env.shape_vars.contains(&id.name)
            {
                return Ty::Dim(Dim::product_of(&id.name));
            }
            self.error(Code::E0302, e.span, "`product` takes a shape variable").primary.message =
                "not a shape variable".into();
            return Ty::Error;
        }
        self.error(Code::E0303, span, "`product` takes one shape variable: `product(S)`").primary.message =
            "wrong arguments".into();
        Ty::Error
    }

    pub(crate) fn generic_args(&mut self, env: &mut Env, gens: &[GenericArg]) -> Vec<GenV> {
        let mut out = Vec::new();
        for g in gens {
            match g {
                GenericArg::Expr(e) => {
                    if let ExprKind::Name(id) = &e.kind
                        && env.lookup(&id.name).is_none()
                        && let Some(Global::Item(i)) = self.global(env.file, &id.name)
                        && matches!(self.idx.items.get(i).map(|x| x.item), Some(ast::Item::Model(_)))
                    {
                        out.push(GenV::Type(Ty::Model(i), e.span));
                        continue;
                    }
                    match self.dim_value(env, e) {
                        Some(d) => out.push(GenV::Dim(d, e.span)),
                        None => out.push(GenV::Type(Ty::Error, e.span)),
                    }
                }
                GenericArg::Type(t) => {
                    let ty = self.resolve_type(env, t);
                    out.push(GenV::Type(ty, t.span));
                }
                GenericArg::Spread { name, span } => {
                    if env.shape_vars.contains(&name.name) {
                        out.push(GenV::Shape(vec![Sh::Spread(name.name.clone())], *span));
                    } else {
                        self.unknown_name(env, name, "shape variable");
                        out.push(GenV::Type(Ty::Error, *span));
                    }
                }
            }
        }
        out
    }

    pub(crate) fn eval_args<'e>(&mut self, env: &mut Env, args: &'e [ast::Arg]) -> Vec<ArgV<'e>> {
        args.iter()
            .map(|a| match &a.kind {
                ArgKind::Positional(e) => {
                    ArgV { name: None, ty: self.expr(env, e), span: e.span, pair: None, expr: Some(e) }
                }
                ArgKind::Named { name, value } => ArgV {
                    name: Some(name),
                    ty: self.expr(env, value),
                    span: value.span,
                    pair: None,
                    expr: Some(value),
                },
                ArgKind::Pair { from, to } => {
                    let f = self.expr(env, from);
                    let t = self.expr(env, to);
                    ArgV { name: None, ty: Ty::Error, span: a.span, pair: Some((f, t)), expr: None }
                }
            })
            .collect()
    }

    /// Binds arguments to parameters: positional in order, then by name. Reports E0303 for too
    /// many, unknown, repeated or missing arguments. Returns, per parameter, the argument index.
    pub(crate) fn bind_args(
        &mut self,
        params: &[PSpec<'_>],
        args: &[ArgV<'_>],
        call: Span,
        what: &str,
    ) -> Option<Vec<Option<usize>>> {
        let mut slots: Vec<Option<usize>> = vec![None; params.len()];
        let mut ok = true;
        let mut next = 0;
        for (ai, a) in args.iter().enumerate() {
            if a.pair.is_some() {
                self.error(
                    Code::E0303,
                    a.span,
                    format!("`=>` arguments only build layers; {what} takes none"),
                )
                .primary
                .message = "unexpected `=>`".into();
                ok = false;
                continue;
            }
            match a.name {
                None => {
                    if next >= params.len() {
                        let d = self.error(
                            Code::E0303,
                            a.span,
                            format!(
                                "{what} takes {} argument{}, but more were given",
                                params.len(),
                                plural(params.len())
                            ),
                        );
                        d.primary.message = "unexpected argument".into();
                        ok = false;
                        continue;
                    }
                    if let Some(s) = slots.get_mut(next) {
                        *s = Some(ai);
                    }
                    next += 1;
                }
                Some(n) => match params.iter().position(|p| p.name == n.name) {
                    Some(pi) => {
                        if slots.get(pi).copied().flatten().is_some() {
                            self.error(
                                Code::E0303,
                                n.span,
                                format!("argument `{}` is given twice", n.name),
                            )
                            .primary
                            .message = "repeated".into();
                            ok = false;
                        } else if let Some(s) = slots.get_mut(pi) {
                            *s = Some(ai);
                        }
                    }
                    None => {
                        let d =
                            self.error(Code::E0303, n.span, format!("{what} has no parameter `{}`", n.name));
                        d.primary.message = "unknown argument".into();
                        if let Some(s) = super::suggest(&n.name, params.iter().map(|p| p.name)) {
                            d.help = Some(format!("did you mean `{s}`?"));
                        } else if !params.is_empty() {
                            let names: Vec<String> = params.iter().map(|p| format!("`{}`", p.name)).collect();
                            d.notes.push(format!("its parameters are {}", names.join(", ")));
                        }
                        ok = false;
                    }
                },
            }
        }
        let missing: Vec<&str> = params
            .iter()
            .zip(&slots)
            .filter(|(p, s)| p.required && s.is_none())
            .map(|(p, _)| p.name)
            .collect();
        if !missing.is_empty() && ok {
            let list: Vec<String> = missing.iter().map(|m| format!("`{m}`")).collect();
            let d = self.error(
                Code::E0303,
                call,
                format!("{what} is missing the argument{} {}", plural(missing.len()), list.join(", ")),
            );
            d.primary.message = "missing arguments".into();
            ok = false;
        }
        ok.then_some(slots)
    }

    // ------------------------------------------------------------------------- effects

    /// Applies a call's effect to the body; in a context that forbids it, E0401/E0402 at the call
    /// with labels down the chain to the primitive.
    pub(crate) fn apply_effect(&mut self, env: &mut Env, effect: Effect, w: Witness) {
        if effect == Effect::Pure {
            return;
        }
        if env.ctx.forbids(effect) {
            let (code, what) =
                if effect == Effect::Io { (Code::E0401, "I/O") } else { (Code::E0402, "randomness") };
            let place = match env.ctx {
                Ctx::Forward => "a layer's forward",
                Ctx::LayerInit => "a layer's initialiser",
                Ctx::Model => "a model definition",
                Ctx::Loss => "a loss",
                Ctx::OptUpdate | Ctx::OptInit => "an optimizer",
                _ => "this context",
            };
            let owner = env.owner.as_ref().map(|(n, k)| format!(" (in {k} `{n}`)")).unwrap_or_default();
            let mut d = fluxc_syntax::Diagnostic::error(code, w.span, format!("{what} in {place}{owner}"))
                .with_primary_label(if w.callee_is_prim() {
                    format!("`{}` is {}", w.name, effect.as_str())
                } else {
                    format!("`{}` is {} through the calls below", w.name, effect.as_str())
                });
            for l in self.chain_labels(&w, effect) {
                d = d.with_label(l.span, l.message);
            }
            d = d.with_note(if effect == Effect::Io {
                "layers, losses and optimizers may not touch files, the network, the clock or the environment, so that a model from an untrusted source is safe to compile and run"
            } else {
                "losses and optimizers must be deterministic functions of their inputs"
            });
            self.diags.push(d);
        }
        env.effects.add(effect, &w);
    }

    fn chain_labels(&self, w: &Witness, effect: Effect) -> Vec<Label> {
        let mut out = Vec::new();
        let mut callee = w.callee;
        let mut seen = BTreeSet::new();
        while let Callee::Item(id) = callee {
            if !seen.insert(id) {
                break;
            }
            let Some(super::SigState::Done(sig)) = self.sigs.get(id) else { break };
            let effects = match &**sig {
                Sig::Fn(f) => &f.effects,
                Sig::Layer(l) => match &l.forward {
                    Some(f) => &f.effects,
                    None => break,
                },
                _ => break,
            };
            let next = if effect == Effect::Io {
                effects.io.as_ref()
            } else {
                effects.rng.as_ref().or(effects.io.as_ref())
            };
            let Some(next) = next else { break };
            let from = self.idx.items.get(id).map(|i| i.name.clone()).unwrap_or_default();
            out.push(Label { span: next.span, message: format!("`{from}` calls `{}` here", next.name) });
            callee = next.callee;
        }
        out
    }

    // -------------------------------------------------------------------- item calls

    #[allow(clippy::too_many_arguments)]
    fn call_item(
        &mut self,
        env: &mut Env,
        id: usize,
        span: Span,
        callee_span: Span,
        gens: Option<&[GenV]>,
        args: &[ArgV<'_>],
        hint: Option<Ty>,
    ) -> Ty {
        let Some(info) = self.idx.items.get(id) else { return Ty::Error };
        let name = info.name.clone();
        match info.item {
            ast::Item::Fn(_) | ast::Item::Loss(_) => {
                self.call_fnval(env, &FnVal::Item(id), span, callee_span, gens, args, hint)
            }
            ast::Item::Layer(_) => {
                self.note_call(callee_span);
                let t = self.construct_layer_with(env, id, span, gens, args);
                self.record_callee(env, callee_span, &t);
                t
            }
            ast::Item::Optimizer(_) => {
                self.no_generics(gens, "an optimizer");
                self.construct_optimizer(env, id, span, args);
                Ty::Optimizer(name)
            }
            ast::Item::Model(_) => {
                self.no_generics(gens, "a model");
                self.apply_model(env, id, span, callee_span, args)
            }
            _ => {
                self.error(Code::E0302, callee_span, format!("`{name}` is not callable")).primary.message =
                    "not a function, layer or model".into();
                Ty::Error
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn call_fnval(
        &mut self,
        env: &mut Env,
        f: &FnVal,
        span: Span,
        callee_span: Span,
        gens: Option<&[GenV]>,
        args: &[ArgV<'_>],
        hint: Option<Ty>,
    ) -> Ty {
        match f {
            FnVal::Prim(p) => self.call_prim(env, *p, span, callee_span, gens, args, hint),
            FnVal::Item(id) => {
                self.note_call(callee_span);
                let id = *id;
                let name = self.idx.items.get(id).map(|i| i.name.clone()).unwrap_or_default();
                let Some(Sig::Fn(sig)) = self.sig(id, Some(callee_span)) else { return Ty::Error };
                if env.elementwise_only && !is_scalar_fn(&sig) && sig.effects.effect == Effect::Pure {
                    self.not_elementwise(callee_span, &format!("`{name}`"));
                }
                let t = self.instantiate(env, &sig, &name, span, callee_span, gens, args, hint);
                let w = Witness { span: callee_span, callee: Callee::Item(id), name };
                self.apply_effect(env, sig.effects.effect, w);
                t
            }
            FnVal::Param { params, ret } => {
                self.no_generics(gens, "a function parameter");
                let sig = FnSig {
                    dims: Vec::new(),
                    params: params
                        .iter()
                        .enumerate()
                        .map(|(i, t)| super::ParamSig { name: format!("#{i}"), ty: t.clone(), default: None })
                        .collect(),
                    ret: (**ret).clone(),
                    effects: Default::default(),
                    constraints: Vec::new(),
                };
                if args.iter().any(|a| a.name.is_some()) {
                    if let Some(a) = args.iter().find(|a| a.name.is_some()) {
                        self.error(
                            Code::E0303,
                            a.span,
                            "a function parameter takes positional arguments only",
                        )
                        .primary
                        .message = "named argument".into();
                    }
                    return Ty::Error;
                }
                self.instantiate(env, &sig, "function", span, callee_span, None, args, None)
            }
        }
    }

    /// Calls a signature: binds arguments, solves dimensions, lifts scalar functions, checks the
    /// deferred constraints of its body, and returns the result type.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn instantiate(
        &mut self,
        env: &mut Env,
        sig: &FnSig,
        name: &str,
        span: Span,
        callee_span: Span,
        gens: Option<&[GenV]>,
        args: &[ArgV<'_>],
        hint: Option<Ty>,
    ) -> Ty {
        let specs: Vec<PSpec<'_>> =
            sig.params.iter().map(|p| PSpec { name: &p.name, required: p.default.is_none() }).collect();
        let what = format!("`{name}`");
        let Some(slots) = self.bind_args(&specs, args, span, &what) else {
            return Ty::Error;
        };
        let (rename, unknowns) = self.renaming(&sig.dims);
        let params: Vec<Ty> = sig.params.iter().map(|p| rename.ty(&p.ty).unwrap_or(Ty::Error)).collect();
        let ret = rename.ty(&sig.ret).unwrap_or(Ty::Error);
        let mut u = Unifier::new(&unknowns);
        if let Some(g) = gens
            && !self.apply_generics(&sig.dims, &rename, g, &mut u, span, &what)
        {
            return Ty::Error;
        }
        // Scalar functions lift over tensors of one broadcast shape (§3.1).
        if is_scalar_fn(sig) {
            let shapes: Vec<(Shape, Span)> = slots
                .iter()
                .flatten()
                .filter_map(|ai| args.get(*ai))
                .filter_map(|a| a.ty.as_tensor().map(|(_, s)| (s, a.span)))
                .collect();
            if shapes.iter().any(|(s, _)| !s.is_empty()) {
                let mut common: Shape = Vec::new();
                let mut common_span = span;
                for (s, sp) in &shapes {
                    match self.broadcast2(&common, common_span, s, *sp, name) {
                        Some(c) => {
                            common = c;
                            common_span = *sp;
                        }
                        None => return Ty::Error,
                    }
                }
                let mut ok = true;
                for (pi, slot) in slots.iter().enumerate() {
                    let (Some(ai), Some(p)) = (slot, params.get(pi)) else { continue };
                    let Some(a) = args.get(*ai) else { continue };
                    let lifted = match (&a.ty, p) {
                        (Ty::Tensor(e, _), Ty::Tensor(..)) => Ty::Tensor(*e, Vec::new()),
                        (other, _) => other.clone(),
                    };
                    ok &= self.check_arg(env, &mut u, p, &lifted, &a.ty, a.span, callee_span, name);
                }
                if !ok {
                    return Ty::Error;
                }
                return match ret {
                    Ty::Tensor(e, _) => Ty::Tensor(e, common),
                    other => other,
                };
            }
        }
        let mut ok = true;
        for (pi, slot) in slots.iter().enumerate() {
            let (Some(ai), Some(p)) = (slot, params.get(pi)) else { continue };
            let Some(a) = args.get(*ai) else { continue };
            ok &= self.check_arg(env, &mut u, p, &a.ty, &a.ty, a.span, callee_span, name);
        }
        if !ok {
            return Ty::Error;
        }
        if let Err(m) = u.finish() {
            self.error(m.code, span, format!("the arguments of `{name}` do not fit together"))
                .notes
                .push(m.note);
            return Ty::Error;
        }
        // Dimension defaults, then the declared type of an initialiser (§10.4).
        self.fill_defaults(&sig.dims, &rename, &mut u);
        if let Some(h) = hint
            && !u.unsolved().is_empty()
        {
            let _ = u.ty(&ret, &h);
            let _ = u.finish();
        }
        let open = u.unsolved();
        if !open.is_empty() {
            self.cannot_infer(span, name, &open, &sig.dims);
            return Ty::Error;
        }
        self.check_constraints(env, &sig.constraints, &rename, &u.subst, span, name);
        let out = match rename_then(&u.subst, &ret) {
            Some(t) => t,
            None => return self.overflow(span),
        };
        if let Some(v) = dim_below_one(&out) {
            self.below_one(span, name, &out, v);
            return Ty::Error;
        }
        out
    }

    pub(crate) fn below_one(&mut self, span: Span, name: &str, out: &Ty, v: i64) {
        let shown = self.show_ty(out);
        let d = self.error(Code::E0301, span, format!("`{name}` would produce a dimension of {v}: {shown}"));
        d.primary.message = "dimension below 1".into();
        d.notes.push("every dimension must be at least 1 once its variables are known".into());
    }

    pub(crate) fn cannot_infer(
        &mut self,
        span: Span,
        name: &str,
        open: &BTreeSet<String>,
        dims: &[DimParamSig],
    ) {
        let names: Vec<String> = open.iter().map(|n| format!("`{}`", super::ty::strip(n))).collect();
        let d = self.error(Code::E0304, span, format!("cannot infer {} for `{name}`", names.join(", ")));
        d.primary.message = "give the dimensions explicitly".into();
        let all: Vec<String> =
            dims.iter().map(|d| if d.shape { format!("..{}", d.name) } else { d.name.clone() }).collect();
        d.help = Some(format!("write `{name}[{}](…)`", all.join(", ")));
        d.notes.push(
            "dimensions are solved from the argument types (`V`, `c*V`, `c*V + d`); never from the expected result".into(),
        );
    }

    pub(crate) fn fill_defaults(&mut self, dims: &[DimParamSig], rename: &Subst, u: &mut Unifier<'_>) {
        for d in dims {
            let Some(default) = &d.default else { continue };
            let Some(Dim { .. }) = rename.dims.get(&d.name) else { continue };
            let Some(fresh) = rename.dims.get(&d.name).map(|v| v.to_string()) else { continue };
            if u.subst.dims.contains_key(&fresh) {
                continue;
            }
            if let Ok(v) = rename.dim(default).and_then(|x| u.subst.dim(&x)) {
                u.subst.dims.insert(fresh, v);
            }
        }
    }

    /// `f[a, b, ..]`: explicit dimensions in the order of the signature's parameters; a shape
    /// parameter takes what the others leave.
    pub(crate) fn apply_generics(
        &mut self,
        dims: &[DimParamSig],
        rename: &Subst,
        gens: &[GenV],
        u: &mut Unifier<'_>,
        span: Span,
        what: &str,
    ) -> bool {
        let shape_params = dims.iter().filter(|d| d.shape).count();
        let fixed = dims.len() - shape_params;
        if (shape_params == 0 && gens.len() > dims.len()) || gens.len() < fixed.min(gens.len()) {
            let at = gens.get(dims.len()).map_or(span, GenV::span);
            self.error(
                Code::E0303,
                at,
                format!("{what} takes {} dimension argument{}", dims.len(), plural(dims.len())),
            )
            .primary
            .message = "too many `[…]` arguments".into();
            return false;
        }
        let mut gi = 0;
        for (k, d) in dims.iter().enumerate() {
            let fresh_name = |d: &DimParamSig| -> String {
                if d.shape {
                    match rename.shapes.get(&d.name).and_then(|s| s.first()) {
                        Some(Sh::Spread(v)) => v.clone(),
                        _ => d.name.clone(),
                    }
                } else {
                    rename.dims.get(&d.name).map(|v| v.to_string()).unwrap_or_default()
                }
            };
            if d.shape {
                let after = dims.get(k + 1..).map_or(0, |r| r.iter().filter(|x| !x.shape).count());
                let take = gens.len().saturating_sub(gi + after);
                let mut shape = Vec::new();
                for g in gens.get(gi..gi + take).unwrap_or_default() {
                    match g {
                        GenV::Dim(v, _) => shape.push(Sh::Dim(v.clone())),
                        GenV::Shape(s, _) => shape.extend(s.iter().cloned()),
                        GenV::Type(Ty::Error, _) => return false,
                        GenV::Type(_, sp) => {
                            self.error(Code::E0302, *sp, "expected a dimension").primary.message =
                                "a type".into();
                            return false;
                        }
                    }
                }
                gi += take;
                u.subst.shapes.insert(fresh_name(d), shape);
            } else {
                let Some(g) = gens.get(gi) else { break };
                gi += 1;
                match g {
                    GenV::Dim(v, sp) => {
                        if v.as_constant().is_some_and(|c| c < 1) {
                            self.error(
                                Code::E0301,
                                *sp,
                                format!("dimension `{}` must be at least 1", d.name),
                            )
                            .primary
                            .message = format!("this is {}", show_dim(v));
                            return false;
                        }
                        u.subst.dims.insert(fresh_name(d), v.clone());
                    }
                    GenV::Type(Ty::Error, _) => return false,
                    GenV::Shape(_, sp) | GenV::Type(_, sp) => {
                        self.error(Code::E0302, *sp, format!("expected a dimension for `{}`", d.name))
                            .primary
                            .message = "not a dimension".into();
                        return false;
                    }
                }
            }
        }
        if gi < gens.len() {
            if let Some(g) = gens.get(gi) {
                self.error(
                    Code::E0303,
                    g.span(),
                    format!("{what} takes {} dimension argument{}", dims.len(), plural(dims.len())),
                )
                .primary
                .message = "too many `[…]` arguments".into();
            }
            return false;
        }
        true
    }

    /// One argument against its parameter; E0301/E0302 at the argument with a label at the callee.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn check_arg(
        &mut self,
        env: &mut Env,
        u: &mut Unifier<'_>,
        param: &Ty,
        actual: &Ty,
        shown_actual: &Ty,
        span: Span,
        callee_span: Span,
        name: &str,
    ) -> bool {
        if let Ty::Fn(FnVal::Param { params, ret }) = param {
            return self.check_fn_arg(env, params, ret, actual, span);
        }
        if matches!(param, Ty::Tensor(..) | Ty::Tuple(_)) {
            if let Err(m) = u.ty(param, actual) {
                let want = u.subst.ty(param).unwrap_or(Ty::Error);
                let (want, found) = (self.show_ty(&want), self.show_ty(shown_actual));
                let d = self.error(m.code, span, format!("expected {want}, found {found}"));
                d.primary.message = format!("this is {found}");
                d.labels.push(Label { span: callee_span, message: format!("`{name}` expects {want}") });
                d.notes.push(m.note);
                return false;
            }
            return true;
        }
        if matches!(param, Ty::Str) && !matches!(actual, Ty::Str | Ty::Error) {
            let d = self.error(Code::E0302, span, format!("expected str, found {}", self.show_ty(actual)));
            d.primary.message = "not a string".into();
            return false;
        }
        true
    }

    /// A function passed where `fn(P…) -> R` is expected: call it (in a scratch context) with the
    /// parameter types and compare the result; its effect counts at the argument.
    fn check_fn_arg(&mut self, env: &mut Env, params: &[Ty], ret: &Ty, actual: &Ty, span: Span) -> bool {
        let f = match actual {
            Ty::Error => return true,
            Ty::Fn(f) => f.clone(),
            other => {
                let want = Ty::Fn(FnVal::Param { params: params.to_vec(), ret: Box::new(ret.clone()) });
                let d =
                    self.error(Code::E0302, span, format!("expected {want}, found {}", self.show_ty(other)));
                d.primary.message = format!("this is {}", other.describe_kind());
                return false;
            }
        };
        let before = self.diags.len();
        let mut scratch = Env::new(env.file, Ctx::Top);
        let probe: Vec<ArgV<'_>> =
            params.iter().map(|t| ArgV { name: None, ty: t.clone(), span, pair: None, expr: None }).collect();
        let got = self.call_fnval(&mut scratch, &f, span, span, None, &probe, None);
        let failed = self.diags.len() > before || !self.expect_exact_silent(ret, &got);
        self.diags.truncate(before);
        if failed {
            let want = Ty::Fn(FnVal::Param { params: params.to_vec(), ret: Box::new(ret.clone()) });
            let d = self.error(
                Code::E0302,
                span,
                format!("expected a function `{want}`, found {} which does not fit", self.show_fn(&f)),
            );
            d.primary.message = "wrong function type".into();
            return false;
        }
        // Passing a function lets the callee run it: its effect counts here.
        let (effect, callee, name) = match &f {
            FnVal::Item(id) => {
                let e = match self.sig(*id, Some(span)) {
                    Some(Sig::Fn(s)) => s.effects.effect,
                    _ => Effect::Pure,
                };
                (e, Callee::Item(*id), self.idx.items.get(*id).map(|i| i.name.clone()).unwrap_or_default())
            }
            FnVal::Prim(p) => (p.effect(), Callee::Prim(*p), p.name().to_owned()),
            FnVal::Param { .. } => (Effect::Pure, Callee::Prim(Prim::Exp), String::new()),
        };
        self.apply_effect(env, effect, Witness { span, callee, name });
        true
    }

    /// Re-checks a body's deferred shape facts for this instantiation.
    pub(crate) fn check_constraints(
        &mut self,
        env: &mut Env,
        cs: &[Constraint],
        rename: &Subst,
        solved: &Subst,
        span: Span,
        name: &str,
    ) {
        // One error per instantiation: the first fact that fails.
        let mut reported = false;
        for c in cs {
            let sub = |d: &Dim| rename.dim(d).and_then(|x| solved.dim(&x));
            let (kind, proof) = match &c.kind {
                ConstraintKind::Eq(a, b) => {
                    let (Ok(a), Ok(b)) = (sub(a), sub(b)) else { continue };
                    let p = prove_eq(&a, &b);
                    (ConstraintKind::Eq(a, b), p)
                }
                ConstraintKind::Le(a, b) => {
                    let (Ok(a), Ok(b)) = (sub(a), sub(b)) else { continue };
                    let p = prove_le(&a, &b);
                    (ConstraintKind::Le(a, b), p)
                }
            };
            match proof {
                Proof::Yes => {}
                Proof::No if reported => {}
                Proof::No => {
                    reported = true;
                    let d = self.error(Code::E0301, span, format!("`{name}` cannot take these dimensions"));
                    d.primary.message = "shape error inside".into();
                    d.notes.push(c.message.clone());
                    d.notes.push(match &kind {
                        ConstraintKind::Eq(a, b) => format!("here {} ≠ {}", show_dim(a), show_dim(b)),
                        ConstraintKind::Le(a, b) => format!("here {} > {}", show_dim(a), show_dim(b)),
                    });
                }
                Proof::Unknown => env.constraints.push(Constraint { kind, message: c.message.clone() }),
            }
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn rename_then(solved: &Subst, t: &Ty) -> Option<Ty> {
    solved.ty(t).ok()
}

/// A function whose parameters and result are scalars (and which has no dimensions) lifts.
pub(crate) fn is_scalar_fn(sig: &FnSig) -> bool {
    sig.dims.is_empty()
        && !sig.params.is_empty()
        && sig.params.iter().all(|p| matches!(&p.ty, Ty::Tensor(_, s) if s.is_empty()))
        && matches!(&sig.ret, Ty::Tensor(_, s) if s.is_empty())
}

impl Witness {
    pub fn callee_is_prim(&self) -> bool {
        matches!(self.callee, Callee::Prim(_))
    }
}
