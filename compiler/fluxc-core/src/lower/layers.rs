//! Layers while lowering: construction (a recipe: the definition, its dimensions and value
//! arguments), materialisation at a path (parameters become graph slots, or run their
//! initialisers, or take given values; sub-layers are materialised at `path.field`), application
//! (the forward inlined), models, and running scripts.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use fluxc_syntax::ast;
use fluxc_syntax::{FileId, Span};

use super::{ArgVal, FnRef, GenVal, LEnv, LResult, Lowerer, ParamMode, ParamSpec, Val, bind_args, fail};
use crate::check::prims::Prim;
use crate::check::ty::{Sh, Ty};
use crate::check::unify::Unifier;
use crate::dims::Dim;
use crate::interp::{Array, Run};
use crate::ir::{BinaryOp, DType, Op, TensorTy, UnaryOp, ValueId};

/// A layer value: what its constructor was given, and once placed, its parameters.
#[derive(Debug)]
pub struct LayerInst {
    pub kind: LayerKind,
    /// The materialised layer (its environment for `forward`), set once it has a path.
    placed: RefCell<Option<Placed>>,
}

#[derive(Clone, Debug)]
pub enum LayerKind {
    /// A `layer` item: its file, its environment after construction (dims and value arguments).
    User {
        item: usize,
        env: LEnvBox,
    },
    Chain(Vec<Rc<LayerInst>>),
    Parallel(FnRef, Vec<Rc<LayerInst>>),
    Skip(Rc<LayerInst>, FnRef),
    Recur(Rc<LayerInst>),
    BatchNorm {
        c: Dim,
        act: Option<FnRef>,
        momentum: Val,
        eps: Val,
    },
    GroupNorm {
        groups: Dim,
        c: Dim,
        eps: Val,
    },
    Func(FnRef),
}

/// An environment snapshot (boxed to keep `LayerKind` small).
#[derive(Clone, Debug)]
pub struct LEnvBox(pub Box<SnapEnv>);

#[derive(Clone, Debug, Default)]
pub struct SnapEnv {
    pub file: Option<FileId>,
    pub vars: HashMap<String, Val>,
    pub shapes: HashMap<String, Vec<Sh>>,
}

/// A placed layer: the values of its members (params, states, sub-layers) by name, and for
/// states their parameter indices.
#[derive(Clone, Debug, Default)]
struct Placed {
    members: Vec<(String, Val)>,
    states: HashMap<String, usize>,
    /// Where it was placed (`1.conv1`; empty for the root).
    path: String,
}

impl std::fmt::Debug for LEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LEnv")
    }
}

/// One row of a model summary: a layer's path, kind and output type.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerRow {
    pub path: String,
    pub kind: String,
    pub output: String,
}

/// A running script: its I/O, the run, the values computed so far and the loaded inputs.
pub(crate) struct Script<'a> {
    pub io: &'a mut dyn super::Io,
    pub run: Run,
    pub vals: Vec<Array>,
    pub inputs: Vec<Array>,
}

fn inst(kind: LayerKind) -> Rc<LayerInst> {
    Rc::new(LayerInst { kind, placed: RefCell::new(None) })
}

/// The dimensions a constructor is given: explicit `[…]` ones, then the leading arguments
/// flattened (§3.2); and how many arguments that used.
fn leading_dims(gens: Option<&[GenVal]>, args: &[ArgVal]) -> (Vec<Dim>, usize) {
    let mut dims: Vec<Dim> = gens
        .unwrap_or_default()
        .iter()
        .filter_map(|g| if let GenVal::Dim(d) = g { Some(d.clone()) } else { None })
        .collect();
    let mut used = 0;
    for a in args {
        if a.name.is_some() || !flatten_dims(&a.val, &mut dims) {
            break;
        }
        used += 1;
    }
    (dims, used)
}

/// Flattens leading dimension arguments: dims, `a => b` pairs and tuples of dims (§3.2).
fn flatten_dims(v: &Val, out: &mut Vec<Dim>) -> bool {
    match v {
        Val::Dim(d) => {
            out.push(d.clone());
            true
        }
        Val::Tuple(items) if !items.is_empty() => {
            let mut tmp = Vec::new();
            for i in items {
                if !flatten_dims(i, &mut tmp) {
                    return false;
                }
            }
            out.extend(tmp);
            true
        }
        _ => false,
    }
}

impl<'a> Lowerer<'a> {
    /// `Dense(784 => 256, relu)`: binds the layer's dimensions and value arguments.
    pub(crate) fn construct_user_layer(
        &mut self,
        env: &mut LEnv,
        item: usize,
        args: &[ArgVal],
        gens: Option<&[GenVal]>,
        span: Span,
    ) -> LResult<Val> {
        let _ = env;
        let Some(info) = self.idx.items.get(item) else { return fail(span, "internal: no such layer") };
        let ast::Item::Layer(def) = info.item else { return fail(span, "internal: not a layer") };
        let mut lenv = LEnv::new(info.file);
        let (dims, used) = leading_dims(gens, args);
        let dim_names: Vec<&str> = def
            .dims
            .iter()
            .filter_map(|d| match &d.kind {
                ast::DimParamKind::Dim { name, .. } => Some(name.name.as_str()),
                ast::DimParamKind::Shape { .. } => None,
            })
            .collect();
        let rest = args.get(used..).unwrap_or_default();
        let named_dims: HashMap<&str, Dim> = rest
            .iter()
            .filter_map(|a| match (&a.name, &a.val) {
                (Some(n), Val::Dim(d)) if dim_names.contains(&n.as_str()) => Some((n.as_str(), d.clone())),
                _ => None,
            })
            .collect();
        let mut given = dims.into_iter();
        for d in &def.dims {
            let ast::DimParamKind::Dim { name, default } = &d.kind else { continue };
            let v = match (named_dims.get(name.name.as_str()), given.next()) {
                (Some(v), _) => v.clone(),
                (None, Some(v)) => v,
                (None, None) => match default {
                    Some(e) => match self.expr(&mut lenv, e)? {
                        Val::Dim(v) => v,
                        _ => return fail(e.span, "internal: a dimension default is not a dimension"),
                    },
                    None => return fail(span, format!("internal: missing dimension `{}`", name.name)),
                },
            };
            lenv.bind(&name.name, Val::Dim(v));
        }
        let values: Vec<ArgVal> = rest
            .iter()
            .filter(|a| a.name.as_ref().is_none_or(|n| !dim_names.contains(&n.as_str())))
            .cloned()
            .collect();
        let slots = bind_args(def.params.iter().map(|p| p.name.name.as_str()), &values);
        for (p, slot) in def.params.iter().zip(slots) {
            let v = match slot.and_then(|k| values.get(k)) {
                Some(a) => a.val.clone(),
                None => match &p.default {
                    Some(d) => self.expr(&mut lenv, d)?,
                    None => return fail(span, format!("internal: missing argument `{}`", p.name.name)),
                },
            };
            lenv.bind(&p.name.name, v);
        }
        let snap = SnapEnv {
            file: lenv.file,
            vars: lenv.scopes.into_iter().flatten().collect(),
            shapes: lenv.shapes,
        };
        Ok(Val::Layer(inst(LayerKind::User { item, env: LEnvBox(Box::new(snap)) })))
    }

    pub(crate) fn builtin_layer(
        &mut self,
        env: &mut LEnv,
        p: Prim,
        gens: Option<&[GenVal]>,
        args: &[ArgVal],
        span: Span,
    ) -> LResult<Val> {
        let _ = env;
        let layer_of = |v: &Val| -> Option<Rc<LayerInst>> {
            match v {
                Val::Layer(l) => Some(l.clone()),
                Val::Fn(f) => Some(inst(LayerKind::Func(*f))),
                _ => None,
            }
        };
        let bad = || fail(span, "internal: a built-in layer got the wrong arguments");
        let kind = match p {
            Prim::Chain => LayerKind::Chain(args.iter().filter_map(|a| layer_of(&a.val)).collect()),
            Prim::Parallel => {
                let Some((c, rest)) = args.split_first() else { return bad() };
                let Some(f) = Self::fn_of(&c.val) else { return bad() };
                LayerKind::Parallel(f, rest.iter().filter_map(|a| layer_of(&a.val)).collect())
            }
            Prim::SkipConnection => {
                let slots = bind_args(["layer", "connection"].into_iter(), args);
                let l =
                    slots.first().copied().flatten().and_then(|k| args.get(k)).and_then(|a| layer_of(&a.val));
                let f = slots
                    .get(1)
                    .copied()
                    .flatten()
                    .and_then(|k| args.get(k))
                    .and_then(|a| Self::fn_of(&a.val));
                let (Some(l), Some(f)) = (l, f) else { return bad() };
                LayerKind::Skip(l, f)
            }
            Prim::Recur => {
                let Some(l) = args.first().and_then(|a| layer_of(&a.val)) else { return bad() };
                LayerKind::Recur(l)
            }
            Prim::BatchNorm | Prim::GroupNorm => {
                let (dims, used) = leading_dims(gens, args);
                let rest = args.get(used..).unwrap_or_default();
                let momentum_default = Val::T(self.g.constant(0.1, DType::F32)?);
                let eps_default = Val::T(self.g.constant(1e-5, DType::F32)?);
                if p == Prim::BatchNorm {
                    let slots = bind_args(["act", "momentum", "eps"].into_iter(), rest);
                    let get = |k: usize| {
                        slots.get(k).copied().flatten().and_then(|i| rest.get(i)).map(|a| a.val.clone())
                    };
                    LayerKind::BatchNorm {
                        c: dims.first().cloned().unwrap_or_default(),
                        act: get(0).as_ref().and_then(Self::fn_of),
                        momentum: get(1).unwrap_or(momentum_default),
                        eps: get(2).unwrap_or(eps_default),
                    }
                } else {
                    let slots = bind_args(["eps"].into_iter(), rest);
                    let get = |k: usize| {
                        slots.get(k).copied().flatten().and_then(|i| rest.get(i)).map(|a| a.val.clone())
                    };
                    LayerKind::GroupNorm {
                        groups: dims.first().cloned().unwrap_or_default(),
                        c: dims.get(1).cloned().unwrap_or_default(),
                        eps: get(0).unwrap_or(eps_default),
                    }
                }
            }
            _ => return bad(),
        };
        Ok(Val::Layer(inst(kind)))
    }

    // --------------------------------------------------------------------- placement

    /// Creates a parameter or state member named `name` of type `ty`.
    fn new_param(
        &mut self,
        name: &str,
        ty: TensorTy,
        trainable: bool,
        init: Option<(&mut LEnv, &ast::Expr)>,
        span: Span,
    ) -> LResult<ValueId> {
        let index = self.params.len();
        self.params.push(ParamSpec { name: name.to_owned(), ty: ty.clone(), trainable });
        let v = match self.mode.clone() {
            ParamMode::Slots => self.g.param(name, ty, trainable)?,
            ParamMode::Given(values) => match values.get(index) {
                Some(v) => *v,
                None => return fail(span, format!("no value for parameter `{name}`")),
            },
            ParamMode::Init => {
                let Some((env, e)) = init else {
                    return fail(span, "internal: a parameter without an initialiser");
                };
                let saved = (self.init_shape.take(), self.init_stream.take());
                self.init_shape = Some(ty.shape.clone());
                let stream = self.manifest_index.as_ref().and_then(|m| m.get(name).copied());
                self.init_stream = Some(stream.unwrap_or_else(|| u32::try_from(index).unwrap_or(u32::MAX)));
                let r = self.expr(env, e);
                (self.init_shape, self.init_stream) = saved;
                let t = self.tensor(&r?, e.span)?;
                let t = if self.ty_of(t).dtype != ty.dtype {
                    self.g.push(Op::Cast(ty.dtype), &[t], None)?
                } else {
                    t
                };
                self.g.broadcast_to(t, &ty.shape)?
            }
        };
        self.param_values.push(v);
        Ok(v)
    }

    /// Places a layer at `path`: creates its parameters and places its sub-layers.
    pub(crate) fn place(&mut self, l: &Rc<LayerInst>, path: &str, span: Span) -> LResult<()> {
        if l.placed.borrow().is_some() {
            return Ok(());
        }
        let join = |p: &str, n: &str| if p.is_empty() { n.to_owned() } else { format!("{p}.{n}") };
        let mut placed = Placed::default();
        match &l.kind {
            LayerKind::User { item, env } => {
                let Some(info) = self.idx.items.get(*item) else {
                    return fail(span, "internal: no such layer");
                };
                let ast::Item::Layer(def) = info.item else { return fail(span, "internal: not a layer") };
                let mut lenv = snap_to_env(env);
                lenv.path = path.to_owned();
                for m in &def.members {
                    match m {
                        ast::LayerMember::Param(pm) => {
                            let ty = self.member_ty(&mut lenv, &pm.ty)?;
                            let v = self.new_param(
                                &join(path, &pm.name.name),
                                ty,
                                true,
                                Some((&mut lenv, &pm.init)),
                                pm.span,
                            )?;
                            lenv.bind(&pm.name.name, Val::T(v));
                            placed.members.push((pm.name.name.clone(), Val::T(v)));
                        }
                        ast::LayerMember::State(sm) => {
                            let ty = match &sm.ty {
                                Some(t) => self.member_ty(&mut lenv, t)?,
                                None => {
                                    // The type of the initialiser (evaluated on the side).
                                    let saved = self.mode.clone();
                                    let v = self.expr(&mut lenv, &sm.init)?;
                                    self.mode = saved;
                                    let t = self.tensor(&v, sm.init.span)?;
                                    self.ty_of(t)
                                }
                            };
                            let index = self.params.len();
                            let v = self.new_param(
                                &join(path, &sm.name.name),
                                ty,
                                false,
                                Some((&mut lenv, &sm.init)),
                                sm.span,
                            )?;
                            lenv.bind(&sm.name.name, Val::T(v));
                            placed.states.insert(sm.name.name.clone(), index);
                            placed.members.push((sm.name.name.clone(), Val::T(v)));
                        }
                        ast::LayerMember::Field(fm) => {
                            let v = self.expr(&mut lenv, &fm.value)?;
                            let child = match v {
                                Val::Layer(c) => c,
                                Val::Fn(f) => inst(LayerKind::Func(f)),
                                _ => return fail(fm.value.span, "internal: a field is not a layer"),
                            };
                            self.place(&child, &join(path, &fm.name.name), fm.span)?;
                            lenv.bind(&fm.name.name, Val::Layer(child.clone()));
                            placed.members.push((fm.name.name.clone(), Val::Layer(child)));
                        }
                        ast::LayerMember::Forward(_) => {}
                    }
                }
            }
            LayerKind::Chain(ls) | LayerKind::Parallel(_, ls) => {
                for (i, c) in ls.iter().enumerate() {
                    self.place(c, &join(path, &i.to_string()), span)?;
                }
            }
            LayerKind::Skip(c, _) => self.place(c, &join(path, "0"), span)?,
            LayerKind::Recur(c) => self.place(c, &join(path, "cell"), span)?,
            LayerKind::BatchNorm { c, .. } | LayerKind::GroupNorm { c, .. } => {
                let ty = TensorTy::new(DType::F32, vec![c.clone()]);
                let is_bn = matches!(l.kind, LayerKind::BatchNorm { .. });
                let mut specs: Vec<(&str, bool, f64)> = vec![("weight", true, 1.0), ("bias", true, 0.0)];
                if is_bn {
                    specs.push(("running_mean", false, 0.0));
                    specs.push(("running_var", false, 1.0));
                }
                for (name, trainable, fill) in specs {
                    let index = self.params.len();
                    let v = self.const_param(&join(path, name), ty.clone(), trainable, fill, span)?;
                    if !trainable {
                        placed.states.insert(name.to_owned(), index);
                    }
                    placed.members.push((name.to_owned(), Val::T(v)));
                }
            }
            LayerKind::Func(_) => {}
        }
        placed.path = path.to_owned();
        *l.placed.borrow_mut() = Some(placed);
        Ok(())
    }

    /// A built-in parameter initialised to a constant (BatchNorm's weight 1, bias 0, …).
    fn const_param(
        &mut self,
        name: &str,
        ty: TensorTy,
        trainable: bool,
        fill: f64,
        span: Span,
    ) -> LResult<ValueId> {
        if matches!(self.mode, ParamMode::Init) {
            let index = self.params.len();
            self.params.push(ParamSpec { name: name.to_owned(), ty: ty.clone(), trainable });
            let _ = index;
            let c = self.g.constant(fill, DType::F32)?;
            let v = self.g.broadcast_to(c, &ty.shape)?;
            self.param_values.push(v);
            return Ok(v);
        }
        self.new_param(name, ty, trainable, None, span)
    }

    fn member_ty(&mut self, env: &mut LEnv, t: &ast::Type) -> LResult<TensorTy> {
        let ty = self.resolve_type(env, t)?;
        Self::tensor_ty_of(&ty).ok_or(()).or_else(|_| fail(t.span, "internal: a member is not a tensor"))
    }

    pub(crate) fn layer_field(&mut self, l: &Rc<LayerInst>, name: &str, span: Span) -> LResult<Val> {
        self.place(l, "", span)?;
        if let LayerKind::Recur(c) = &l.kind
            && name == "cell"
        {
            return Ok(Val::Layer(c.clone()));
        }
        let placed = l.placed.borrow();
        placed
            .as_ref()
            .and_then(|p| p.members.iter().find(|m| m.0 == name).map(|m| m.1.clone()))
            .ok_or(())
            .or_else(|_| fail(span, format!("internal: no field `{name}`")))
    }

    // -------------------------------------------------------------------- application

    pub(crate) fn apply_layer(&mut self, l: &Rc<LayerInst>, x: Val, span: Span) -> LResult<Val> {
        self.place(l, "", span)?;
        let y = self.apply_placed(l, x, span)?;
        // The summary's row for this layer (§12.15): its path, kind and output type.
        let path = l.placed.borrow().as_ref().map(|p| p.path.clone()).unwrap_or_default();
        let kind = self.layer_kind_name(l);
        let out = self.val_type_text(&y);
        if !self.layer_log.iter().any(|r| r.path == path && r.output == out) {
            self.layer_log.push(LayerRow { path, kind, output: out });
        }
        Ok(y)
    }

    /// A value's type as the summary shows it; tuples nest (LSTMCell's `(h, (h, c))`).
    fn val_type_text(&self, v: &Val) -> String {
        match v {
            Val::T(t) => self.ty_of(*t).to_string(),
            Val::Tuple(items) => {
                let parts: Vec<String> = items.iter().map(|i| self.val_type_text(i)).collect();
                format!("({})", parts.join(", "))
            }
            _ => "?".into(),
        }
    }

    fn layer_kind_name(&self, l: &LayerInst) -> String {
        match &l.kind {
            LayerKind::User { item, env } => {
                let name = self.idx.items.get(*item).map(|i| i.name.clone()).unwrap_or_default();
                let Some(ast::Item::Layer(def)) = self.idx.items.get(*item).map(|i| i.item) else {
                    return name;
                };
                let dims: Vec<String> = def
                    .dims
                    .iter()
                    .filter_map(|d| match &d.kind {
                        ast::DimParamKind::Dim { name, .. } => match env.0.vars.get(&name.name) {
                            Some(Val::Dim(v)) => Some(v.to_string()),
                            _ => None,
                        },
                        ast::DimParamKind::Shape { .. } => None,
                    })
                    .collect();
                if dims.is_empty() { name } else { format!("{name}[{}]", dims.join(", ")) }
            }
            LayerKind::Chain(_) => "Chain".into(),
            LayerKind::Parallel(..) => "Parallel".into(),
            LayerKind::Skip(..) => "SkipConnection".into(),
            LayerKind::Recur(_) => "Recur".into(),
            LayerKind::BatchNorm { c, .. } => format!("BatchNorm[{c}]"),
            LayerKind::GroupNorm { groups, c, .. } => format!("GroupNorm[{groups}, {c}]"),
            LayerKind::Func(FnRef::Item(i)) => {
                self.idx.items.get(*i).map(|x| x.name.clone()).unwrap_or_default()
            }
            LayerKind::Func(FnRef::Prim(p)) => p.name().to_owned(),
        }
    }

    fn apply_placed(&mut self, l: &Rc<LayerInst>, x: Val, span: Span) -> LResult<Val> {
        match &l.kind {
            LayerKind::User { item, env } => {
                let Some(info) = self.idx.items.get(*item) else {
                    return fail(span, "internal: no such layer");
                };
                let ast::Item::Layer(def) = info.item else { return fail(span, "internal: not a layer") };
                let Some(fw) = def
                    .members
                    .iter()
                    .find_map(|m| if let ast::LayerMember::Forward(f) = m { Some(f) } else { None })
                else {
                    return fail(span, "internal: a layer without forward");
                };
                let mut lenv = snap_to_env(env);
                let placed = l.placed.borrow().clone().unwrap_or_default();
                for (n, v) in &placed.members {
                    lenv.bind(n, v.clone());
                }
                lenv.states = placed.states.clone();
                lenv.scopes.push(HashMap::new());
                let unknowns = self.bind_dims(&mut lenv, &fw.dims)?;
                let mut u = Unifier::new(&unknowns);
                if let Some(p) = fw.params.first() {
                    let pt = self.resolve_type(&mut lenv, &p.ty)?;
                    let _ = u.ty(&pt, &self.check_ty(&x));
                }
                let _ = u.finish();
                self.rebind_dims(&mut lenv, &fw.dims, &u.subst)?;
                if let Some(p) = fw.params.first() {
                    lenv.bind(&p.name.name, x);
                }
                self.block(&mut lenv, &fw.body)
            }
            LayerKind::Chain(ls) => {
                let mut v = x;
                for c in ls {
                    v = self.apply_layer(c, v, span)?;
                }
                Ok(v)
            }
            LayerKind::Parallel(conn, ls) => {
                let mut outs = Vec::new();
                for c in ls {
                    outs.push(self.apply_layer(c, x.clone(), span)?);
                }
                self.call_value(*conn, outs, span)
            }
            LayerKind::Skip(c, conn) => {
                let y = self.apply_layer(c, x.clone(), span)?;
                self.call_value(*conn, vec![y, x], span)
            }
            LayerKind::Recur(cell) => self.apply_recur(cell, x, span),
            LayerKind::BatchNorm { act, momentum, eps, .. } => {
                let placed = l.placed.borrow().clone().unwrap_or_default();
                let member = |n: &str| {
                    placed
                        .members
                        .iter()
                        .find(|m| m.0 == n)
                        .and_then(|m| if let Val::T(v) = m.1 { Some(v) } else { None })
                };
                let (Some(w), Some(b), Some(rm), Some(rv)) =
                    (member("weight"), member("bias"), member("running_mean"), member("running_var"))
                else {
                    return fail(span, "internal: BatchNorm members");
                };
                let xv = self.tensor(&x, span)?;
                let shape = self.ty_of(xv).shape;
                let rank = shape.len();
                let axes: Vec<usize> = (0..rank).filter(|a| *a != 1).collect();
                let chan = |me: &mut Self, v: ValueId| -> LResult<ValueId> {
                    let mut s = vec![Dim::constant(1); rank];
                    if let (Some(slot), Some(c)) = (s.get_mut(1), shape.get(1)) {
                        *slot = c.clone();
                    }
                    Ok(me.g.reshape(v, s)?)
                };
                let eps = self.f32_of(&num_val(eps), span)?;
                let (mean, var) = if self.training {
                    let m = self.mean(xv, axes.clone())?;
                    let mc = chan(self, m)?;
                    let d = self.g.binary(BinaryOp::Sub, xv, mc)?;
                    let d2 = self.g.binary(BinaryOp::Mul, d, d)?;
                    let v = self.mean(d2, axes.clone())?;
                    // Running statistics: (1 - momentum) * old + momentum * batch (PyTorch; the
                    // running variance uses the unbiased batch variance).
                    let mom = self.f32_of(&num_val(momentum), span)?;
                    let one = self.g.constant(1.0, DType::F32)?;
                    let keep = self.g.binary(BinaryOp::Sub, one, mom)?;
                    let mut n = Dim::constant(1);
                    for a in &axes {
                        n = n
                            .mul(shape.get(*a).unwrap_or(&Dim::constant(1)))
                            .map_err(|_| super::overflow(span))?;
                    }
                    let nv = self.dim_value(&n, DType::F32)?;
                    let nm1 = self.g.binary(BinaryOp::Sub, nv, one)?;
                    let unbias = self.g.binary(BinaryOp::Div, nv, nm1)?;
                    let vu = self.g.binary(BinaryOp::Mul, v, unbias)?;
                    for (stat, batch) in [("running_mean", m), ("running_var", vu)] {
                        if let (Some(&pi), Some(old)) = (placed.states.get(stat), member(stat)) {
                            let a = self.g.binary(BinaryOp::Mul, keep, old)?;
                            let bb = self.g.binary(BinaryOp::Mul, mom, batch)?;
                            let nv = self.g.binary(BinaryOp::Add, a, bb)?;
                            self.state_updates.insert(pi, nv);
                        }
                    }
                    (m, v)
                } else {
                    (rm, rv)
                };
                let (mc, vc, wc, bc) = (chan(self, mean)?, chan(self, var)?, chan(self, w)?, chan(self, b)?);
                let d = self.g.binary(BinaryOp::Sub, xv, mc)?;
                let ve = self.g.binary(BinaryOp::Add, vc, eps)?;
                let s = self.g.unary(UnaryOp::Rsqrt, ve)?;
                let y = self.g.binary(BinaryOp::Mul, d, s)?;
                let y = self.g.binary(BinaryOp::Mul, y, wc)?;
                let y = self.g.binary(BinaryOp::Add, y, bc)?;
                match act {
                    Some(f) => self.call_value(*f, vec![Val::T(y)], span),
                    None => Ok(Val::T(y)),
                }
            }
            LayerKind::GroupNorm { groups, c, eps } => {
                let placed = l.placed.borrow().clone().unwrap_or_default();
                let member = |n: &str| {
                    placed
                        .members
                        .iter()
                        .find(|m| m.0 == n)
                        .and_then(|m| if let Val::T(v) = m.1 { Some(v) } else { None })
                };
                let (Some(w), Some(b)) = (member("weight"), member("bias")) else {
                    return fail(span, "internal: GroupNorm members");
                };
                let xv = self.tensor(&x, span)?;
                let shape = self.ty_of(xv).shape;
                let rank = shape.len();
                let per = c.floor_div(groups).map_err(|_| super::overflow(span))?;
                // [B, C, ..S] -> [B, G, C/G, ..S]; normalise over every axis after G.
                let mut gs = vec![shape.first().cloned().unwrap_or_default(), groups.clone(), per];
                gs.extend(shape.iter().skip(2).cloned());
                let xg = self.g.reshape(xv, gs.clone())?;
                let axes: Vec<usize> = (2..gs.len()).collect();
                let mut kept = gs.clone();
                for a in &axes {
                    if let Some(d) = kept.get_mut(*a) {
                        *d = Dim::constant(1);
                    }
                }
                let m = self.mean(xg, axes.clone())?;
                let m = self.g.reshape(m, kept.clone())?;
                let d = self.g.binary(BinaryOp::Sub, xg, m)?;
                let d2 = self.g.binary(BinaryOp::Mul, d, d)?;
                let v = self.mean(d2, axes)?;
                let v = self.g.reshape(v, kept)?;
                let e = self.f32_of(&num_val(eps), span)?;
                let ve = self.g.binary(BinaryOp::Add, v, e)?;
                let s = self.g.unary(UnaryOp::Rsqrt, ve)?;
                let y = self.g.binary(BinaryOp::Mul, d, s)?;
                let y = self.g.reshape(y, shape.clone())?;
                let mut cs = vec![Dim::constant(1); rank];
                if let (Some(slot), Some(cc)) = (cs.get_mut(1), shape.get(1)) {
                    *slot = cc.clone();
                }
                let wc = self.g.reshape(w, cs.clone())?;
                let bc = self.g.reshape(b, cs)?;
                let y = self.g.binary(BinaryOp::Mul, y, wc)?;
                Ok(Val::T(self.g.binary(BinaryOp::Add, y, bc)?))
            }
            LayerKind::Func(f) => self.call_value(*f, vec![x], span),
        }
    }

    /// `Recur(cell)` over `[B, T, ..]`: the cell unrolled over the time axis from a zero state.
    fn apply_recur(&mut self, cell: &Rc<LayerInst>, x: Val, span: Span) -> LResult<Val> {
        let xv = self.tensor(&x, span)?;
        let shape = self.ty_of(xv).shape;
        let t = shape
            .get(1)
            .and_then(Dim::as_constant)
            .ok_or(())
            .or_else(|_| fail(span, "Recur needs a known sequence length"))?;
        // The zero state: from the cell's forward (its second input's type).
        let LayerKind::User { item, env } = &cell.kind else {
            return fail(span, "internal: Recur of a non-layer");
        };
        let Some(info) = self.idx.items.get(*item) else { return fail(span, "internal: no such layer") };
        let ast::Item::Layer(def) = info.item else { return fail(span, "internal: not a layer") };
        let Some(fw) = def
            .members
            .iter()
            .find_map(|m| if let ast::LayerMember::Forward(f) = m { Some(f) } else { None })
        else {
            return fail(span, "internal: a layer without forward");
        };
        let mut step_shape = vec![shape.first().cloned().unwrap_or_default()];
        step_shape.extend(shape.iter().skip(2).cloned());
        let mut lenv = snap_to_env(env);
        let unknowns = self.bind_dims(&mut lenv, &fw.dims)?;
        let mut u = Unifier::new(&unknowns);
        let pt = match fw.params.first() {
            Some(p) => self.resolve_type(&mut lenv, &p.ty)?,
            None => return fail(span, "internal: a cell without input"),
        };
        let Ty::Tuple(parts) = &pt else { return fail(span, "internal: a cell takes (x, state)") };
        if let Some(px) = parts.first() {
            let elem = crate::check::ty::Elem::F32;
            let _ = u.ty(px, &Ty::Tensor(elem, step_shape.iter().cloned().map(Sh::Dim).collect()));
        }
        let _ = u.finish();
        let state_ty = parts
            .get(1)
            .map(|s| u.subst.ty(s))
            .transpose()
            .map_err(|_| super::overflow(span))?
            .unwrap_or(Ty::Error);
        let mut state = self.zeros_like_ty(&state_ty, span)?;
        let mut outs = Vec::new();
        for i in 0..t {
            let s = self.g.push(Op::Slice { axis: 1, start: i, end: i + 1 }, &[xv], None)?;
            let xt = self.g.reshape(s, step_shape.clone())?;
            let r = self.apply_layer(cell, Val::Tuple(vec![Val::T(xt), state]), span)?;
            let Val::Tuple(mut pair) = r else { return fail(span, "internal: a cell returns (y, state)") };
            let (Some(new_state), Some(y)) = (pair.pop(), pair.pop()) else {
                return fail(span, "internal: a cell returns (y, state)");
            };
            state = new_state;
            let y = self.tensor(&y, span)?;
            let mut ys = self.ty_of(y).shape;
            ys.insert(1, Dim::constant(1));
            outs.push(self.g.reshape(y, ys)?);
        }
        Ok(Val::T(self.g.push(Op::Concat { axis: 1 }, &outs, None)?))
    }

    fn zeros_like_ty(&mut self, t: &Ty, span: Span) -> LResult<Val> {
        match t {
            Ty::Tuple(items) => {
                Ok(Val::Tuple(items.iter().map(|i| self.zeros_like_ty(i, span)).collect::<LResult<_>>()?))
            }
            other => match Self::tensor_ty_of(other) {
                Some(tt) => {
                    let z = self.g.constant(0.0, tt.dtype)?;
                    Ok(Val::T(self.g.broadcast_to(z, &tt.shape)?))
                }
                None => fail(span, "internal: a state type that is not a tensor"),
            },
        }
    }

    // ------------------------------------------------------------------------- models

    /// The layer value a model is defined as (constructed, not yet placed).
    pub(crate) fn model_layer(&mut self, model: usize, span: Span) -> LResult<Rc<LayerInst>> {
        let Some(info) = self.idx.items.get(model) else { return fail(span, "internal: no such model") };
        let ast::Item::Model(m) = info.item else { return fail(span, "internal: not a model") };
        let mut env = LEnv::new(info.file);
        env.bind("B", Val::Dim(Dim::var("B")));
        match self.expr(&mut env, &m.value)? {
            Val::Layer(l) => Ok(l),
            Val::Fn(f) => Ok(inst(LayerKind::Func(f))),
            _ => fail(m.value.span, "internal: a model that is not a layer"),
        }
    }

    /// Calls a model at the top level: freshly initialised (seed 0), or with loaded parameters.
    pub(crate) fn apply_model(
        &mut self,
        model: usize,
        params: Option<Rc<Vec<ValueId>>>,
        x: Val,
        span: Span,
    ) -> LResult<Val> {
        let l = self.model_layer(model, span)?;
        let order = super::manifest_order(self.idx, model, span)?;
        let saved = (
            self.mode.clone(),
            std::mem::take(&mut self.params),
            std::mem::take(&mut self.param_values),
            self.manifest_index.replace(order),
        );
        self.mode = match params {
            Some(p) => ParamMode::Given(p),
            None => ParamMode::Init,
        };
        let r = self.place(&l, "", span);
        (self.mode, self.params, self.param_values, self.manifest_index) = saved;
        r?;
        self.apply_layer(&l, x, span)
    }

    // ---------------------------------------------------------------------- I/O

    pub(crate) fn io_prim(
        &mut self,
        env: &mut LEnv,
        p: Prim,
        gens: Option<&[GenVal]>,
        args: &[ArgVal],
        span: Span,
    ) -> LResult<Val> {
        let _ = env;
        if self.script.is_none() {
            return fail(span, format!("`{}` runs only in scripts (top-level statements)", p.name()));
        }
        let text = |v: &Val| match v {
            Val::Str(s) => s.clone(),
            _ => String::new(),
        };
        match p {
            Prim::Print => {
                let mut parts = Vec::new();
                for a in args {
                    parts.push(self.show(&a.val, a.span)?);
                }
                if let Some(s) = self.script.as_mut() {
                    s.io.print(&parts.join(" "));
                }
                Ok(Val::unit())
            }
            Prim::Load => {
                let path = args.first().map(|a| text(&a.val)).unwrap_or_default();
                match gens.and_then(|g| g.first()) {
                    Some(GenVal::Model(m)) => self.load_model(*m, &path, span),
                    Some(GenVal::Type(t)) => {
                        let Some(tt) = Self::tensor_ty_of(t) else {
                            return fail(span, "`load` of this type is not supported");
                        };
                        let arr = match self.script.as_mut() {
                            Some(s) => {
                                s.io.load(&path, &tt)
                                    .map_err(|m| super::LowerError { span: Some(span), message: m })?
                            }
                            None => return fail(span, "no I/O"),
                        };
                        let v = self.g.input(&path, tt)?;
                        if let Some(s) = self.script.as_mut() {
                            s.inputs.push(arr);
                        }
                        Ok(Val::T(v))
                    }
                    _ => fail(span, "internal: `load` without a type"),
                }
            }
            Prim::Save => {
                let path = args.first().map(|a| text(&a.val)).unwrap_or_default();
                let Some(x) = args.get(1) else { return fail(span, "internal: save without a value") };
                let t = self.tensor(&x.val, x.span)?;
                let arr = self.value(t, span)?;
                let ty = self.ty_of(t);
                if let Some(s) = self.script.as_mut() {
                    s.io.save(&path, &arr, &ty)
                        .map_err(|m| super::LowerError { span: Some(span), message: m })?;
                }
                Ok(Val::unit())
            }
            Prim::ReadText => {
                let path = args.first().map(|a| text(&a.val)).unwrap_or_default();
                match self.script.as_mut() {
                    Some(s) => Ok(Val::Str(
                        s.io.read_text(&path)
                            .map_err(|m| super::LowerError { span: Some(span), message: m })?,
                    )),
                    None => fail(span, "no I/O"),
                }
            }
            Prim::WriteText => {
                let path = args.first().map(|a| text(&a.val)).unwrap_or_default();
                let body = args.get(1).map(|a| text(&a.val)).unwrap_or_default();
                if let Some(s) = self.script.as_mut() {
                    s.io.write_text(&path, &body)
                        .map_err(|m| super::LowerError { span: Some(span), message: m })?;
                }
                Ok(Val::unit())
            }
            Prim::Now => {
                let t = self.script.as_mut().map(|s| s.io.now()).unwrap_or(0.0);
                Ok(Val::T(self.g.constant(t, DType::F32)?))
            }
            _ => {
                let name = args.first().map(|a| text(&a.val)).unwrap_or_default();
                Ok(Val::Str(self.script.as_mut().map(|s| s.io.env(&name)).unwrap_or_default()))
            }
        }
    }

    fn load_model(&mut self, model: usize, path: &str, span: Span) -> LResult<Val> {
        // The parameter list of the model, in manifest order (placed on a scratch lowerer).
        let mut probe = Lowerer::new(self.idx, self.training, ParamMode::Slots);
        let l = probe.model_layer(model, span)?;
        probe.place(&l, "", span)?;
        let specs = probe.params.clone();
        let arrays = match self.script.as_mut() {
            Some(s) => {
                s.io.load_weights(path, &specs)
                    .map_err(|m| super::LowerError { span: Some(span), message: m })?
            }
            None => return fail(span, "no I/O"),
        };
        let mut ids = Vec::new();
        for (spec, arr) in specs.iter().zip(arrays) {
            let v = self.g.input(&spec.name, spec.ty.clone())?;
            if let Some(s) = self.script.as_mut() {
                s.inputs.push(arr);
            }
            ids.push(v);
        }
        Ok(Val::Loaded(model, Rc::new(ids)))
    }

    /// Computes a value now (scripts).
    pub(crate) fn value(&mut self, t: ValueId, span: Span) -> LResult<Array> {
        let Some(s) = self.script.as_mut() else { return fail(span, "no script") };
        s.io.evaluate(&self.g, &s.inputs, &s.run, &mut s.vals)
            .map_err(|e| super::LowerError { span: Some(span), message: e.0 })?;
        s.vals.get(t.index()).cloned().ok_or(()).or_else(|_| fail(span, "internal: no value"))
    }

    /// How `print` shows a value.
    fn show(&mut self, v: &Val, span: Span) -> LResult<String> {
        Ok(match v {
            Val::Str(s) => s.clone(),
            Val::Dim(d) => d.to_string(),
            Val::Bool(b) => b.to_string(),
            Val::Tuple(items) => {
                let parts = items.iter().map(|i| self.show(i, span)).collect::<LResult<Vec<_>>>()?;
                format!("({})", parts.join(", "))
            }
            Val::T(t) => {
                let ty = self.ty_of(*t);
                let a = self.value(*t, span)?;
                format_tensor(&a, ty.dtype)
            }
            Val::Fn(_) => "<function>".into(),
            Val::Layer(_) => "<layer>".into(),
            Val::Model(_) | Val::Loaded(..) => "<model>".into(),
        })
    }
}

/// A number option of a built-in layer, as a value.
fn num_val(v: &Val) -> Val {
    v.clone()
}

fn snap_to_env(b: &LEnvBox) -> LEnv {
    let mut env = LEnv {
        file: b.0.file,
        scopes: vec![b.0.vars.clone()],
        shapes: b.0.shapes.clone(),
        ..LEnv::default()
    };
    env.scopes.push(HashMap::new());
    env
}

/// A tensor as text: nested brackets in row-major order, f32 values shown as f32.
pub fn format_tensor(a: &Array, dtype: DType) -> String {
    let item = |x: f64| match dtype {
        DType::F32 => {
            let f = x as f32;
            if f.fract() == 0.0 && f.abs() < 1e16 {
                format!("{f:.1}")
            } else if f.abs() < 1e-4 || f.abs() >= 1e16 {
                format!("{f:e}")
            } else {
                format!("{f}")
            }
        }
        DType::I32 => format!("{}", x as i64),
        DType::Bool => (x != 0.0).to_string(),
    };
    fn rec(a: &Array, dim: usize, offset: usize, item: &dyn Fn(f64) -> String, out: &mut String) {
        let Some(&n) = a.shape.get(dim) else {
            out.push_str(&item(a.data.get(offset).copied().unwrap_or(0.0)));
            return;
        };
        let stride: usize = a.shape.iter().skip(dim + 1).product();
        out.push('[');
        for i in 0..n {
            if i > 0 {
                out.push_str(", ");
            }
            rec(a, dim + 1, offset + i * stride, item, out);
        }
        out.push(']');
    }
    let mut out = String::new();
    rec(a, 0, 0, &item, &mut out);
    out
}
