//! The train-step graph of a `train` block (§3.7, §12.6–§12.7): the model's training variant,
//! the loss, the gradients of every trainable (not frozen) parameter, clipping, the optimizer's
//! elementwise `update` per parameter with its states, the learning-rate schedule, and the layer
//! state updates (BatchNorm's running statistics).
//!
//! Inputs: `x`, `target`, `step` (the step count from 1, f32) and `epoch` (from 1, f32); then one
//! input per optimizer state and parameter, `opt.PARAM.STATE`. Zero-filled optimizer state means
//! "before step 1": at step 1 each state starts from its initialiser (`zeros_like(p)`,
//! `ones_like(p)`, …). Outputs: `loss` (computed before the update), `param:NAME` for every
//! trainable parameter, `opt:PARAM.STATE`, `lr` (the scheduled learning rate of this step),
//! `grad_norm` (the global L2 norm of the gradients before clipping), and `state:NAME` for
//! layer states.

use std::collections::HashMap;

use fluxc_syntax::ast::{self, ExprKind};
use fluxc_syntax::{FileId, Span};

use super::{ArgVal, LEnv, LResult, LowerError, Lowerer, ParamMode, Val, bind_args, fail};
use crate::check::Index;
use crate::check::prims::Prim;
use crate::check::ty::Ty;
use crate::dims::Dim;
use crate::ir::{BinaryOp, DType, Graph, Op, ReduceOp, TensorTy, UnaryOp, ValueId};

/// One gradient-transforming rule of the optimizer chain, or the optimizer itself.
enum Rule {
    WeightDecay(Val),
    ClipValue(Val),
    ClipNorm(Val),
    Optimizer { item: usize, args: Vec<ArgVal> },
}

/// The schedule, as a factor of `lr` computed from `step` and `epoch` (§12.7).
enum Schedule {
    Constant,
    StepDecay(Val, Val),
    Cosine(Val),
    Warmup(Val, Box<Schedule>),
}

/// The common start of a train block's graphs: the model's variant (`training`) placed, and the
/// inputs `x` and `target`.
struct Start<'a> {
    lw: Lowerer<'a>,
    env: LEnv,
    t: &'a ast::TrainDef,
    layer: std::rc::Rc<super::layers::LayerInst>,
    span: fluxc_syntax::Span,
    x: ValueId,
    target: ValueId,
}

fn start<'a>(idx: &'a Index<'a>, train: usize, training: bool) -> LResult<Start<'a>> {
    let Some(info) = idx.items.get(train) else { return Err(err("no such train block")) };
    let ast::Item::Train(t) = info.item else { return Err(err("not a train block")) };
    let file = info.file;
    let Some(model) = idx.item(file, &t.model.name) else { return fail(t.model.span, "no such model") };
    let ast::Item::Model(m) = idx.items.get(model).map(|i| i.item).ok_or_else(|| err("no such model"))?
    else {
        return fail(t.model.span, "not a model");
    };
    let mut lw = Lowerer::new(idx, training, ParamMode::Slots);
    let mut env = LEnv::new(file);
    env.bind("B", Val::Dim(Dim::var("B")));
    let in_ty = lw.resolve_type(&mut env, &m.input)?;
    let out_ty = lw.resolve_type(&mut env, &m.output)?;
    let layer = lw.model_layer(model, m.value.span)?;
    lw.place(&layer, "", m.value.span)?;
    let x_ty =
        Lowerer::tensor_ty_of(&in_ty).ok_or_else(|| err("tuple model inputs cannot be trained yet"))?;
    let x = lw.g.input("x", x_ty)?;
    let target_ty = target_type(idx, file, &t.source.name, &out_ty)?;
    let target = lw.g.input("target", target_ty)?;
    Ok(Start { lw, env, t, layer, span: m.value.span, x, target })
}

pub fn train_step(idx: &Index<'_>, train: usize) -> LResult<Graph> {
    let Start { mut lw, mut env, t, layer, span, x, target } = start(idx, train, true)?;
    let scalar = TensorTy::new(DType::F32, Vec::new());
    let step = lw.g.input("step", scalar.clone())?;
    let epoch = lw.g.input("epoch", scalar)?;
    let yhat = lw.apply_layer(&layer, Val::T(x), span)?;

    // The train block's values.
    let entry = |key: &str| t.entries.iter().find(|e| e.key.name == key).map(|e| &e.value);
    let loss_expr = entry("loss").ok_or_else(|| err("no loss"))?;
    let loss = lw.train_loss(&mut env, loss_expr, yhat, target)?;
    let mut rules = Vec::new();
    if let Some(clip) = entry("clip") {
        rules.extend(lw.rules(&mut env, clip)?);
    }
    let opt_expr = entry("optimizer").ok_or_else(|| err("no optimizer"))?;
    rules.extend(lw.rules(&mut env, opt_expr)?);
    let schedule = match entry("schedule") {
        Some(e) => lw.schedule(&mut env, e)?,
        None => Schedule::Constant,
    };
    let frozen: Vec<String> = match entry("freeze").map(|e| &e.kind) {
        Some(ExprKind::List(items)) => items
            .iter()
            .filter_map(|i| if let ExprKind::Str(s) = &i.kind { Some(s.clone()) } else { None })
            .collect(),
        _ => Vec::new(),
    };

    // Gradients of the trainable, unfrozen parameters.
    let trainable: Vec<(usize, ValueId)> = lw
        .params
        .iter()
        .zip(&lw.param_values)
        .enumerate()
        .filter(|(_, (p, _))| p.trainable && !frozen.iter().any(|f| matches_pattern(f, &p.name)))
        .map(|(k, (_, v))| (k, *v))
        .collect();
    let wrt: Vec<ValueId> = trainable.iter().map(|(_, v)| *v).collect();
    let grads = crate::autodiff::backward(&mut lw.g, loss, &wrt)?;
    let mut gs = Vec::new();
    for ((_, p), g) in trainable.iter().zip(grads) {
        gs.push(match g {
            Some(g) => g,
            None => {
                let zero = lw.g.constant(0.0, DType::F32)?;
                let shape = lw.ty_of(*p).shape;
                lw.g.broadcast_to(zero, &shape)?
            }
        });
    }
    let grad_norm = global_norm(&mut lw, &gs)?;
    let factor = lw.schedule_factor(&schedule, step, epoch)?;
    // Gradient rules in order, then the optimizer's update per parameter.
    let mut outputs = vec![("loss".to_owned(), loss)];
    let mut optimizer = None;
    for r in &rules {
        match r {
            Rule::ClipValue(v) => {
                let v = lw.f32_of(v, t.span)?;
                let lo = lw.g.unary(UnaryOp::Neg, v)?;
                for g in gs.iter_mut() {
                    let a = lw.g.binary(BinaryOp::Max, *g, lo)?;
                    *g = lw.g.binary(BinaryOp::Min, a, v)?;
                }
            }
            Rule::ClipNorm(n) => {
                // torch.nn.utils.clip_grad_norm_: scale by min(1, n / (norm + 1e-6)).
                let n = lw.f32_of(n, t.span)?;
                let norm = global_norm(&mut lw, &gs)?;
                let tiny = lw.g.constant(1e-6, DType::F32)?;
                let d = lw.g.binary(BinaryOp::Add, norm, tiny)?;
                let c = lw.g.binary(BinaryOp::Div, n, d)?;
                let one = lw.g.constant(1.0, DType::F32)?;
                let c = lw.g.binary(BinaryOp::Min, c, one)?;
                for g in gs.iter_mut() {
                    *g = lw.g.binary(BinaryOp::Mul, *g, c)?;
                }
            }
            Rule::WeightDecay(wd) => {
                let wd = lw.f32_of(wd, t.span)?;
                for (g, (_, p)) in gs.iter_mut().zip(&trainable) {
                    let d = lw.g.binary(BinaryOp::Mul, wd, *p)?;
                    *g = lw.g.binary(BinaryOp::Add, *g, d)?;
                }
            }
            Rule::Optimizer { item, args } => optimizer = Some((*item, args.clone())),
        }
    }
    let Some((opt, opt_args)) = optimizer else { return fail(opt_expr.span, "no optimizer in the chain") };
    let names: Vec<String> = trainable
        .iter()
        .map(|(k, _)| lw.params.get(*k).map(|s| s.name.clone()).unwrap_or_default())
        .collect();
    let mut lr = None;
    for (((_, p), g), name) in trainable.iter().zip(&gs).zip(&names) {
        let (new_p, states, scheduled) = lw.optimizer_update(opt, &opt_args, *p, *g, step, factor, name)?;
        outputs.push((format!("param:{name}"), new_p));
        outputs.extend(states);
        lr = lr.or(scheduled);
    }
    // What the log reports (§8): the learning rate this step used and the gradients' global L2
    // norm before clipping (torch's `clip_grad_norm_` value).
    if let Some(lr) = lr {
        outputs.push(("lr".to_owned(), lr));
    }
    outputs.push(("grad_norm".to_owned(), grad_norm));
    let updates: Vec<(usize, ValueId)> = lw.state_updates.iter().map(|(k, v)| (*k, *v)).collect();
    for (k, v) in updates {
        let name = lw.params.get(k).map(|p| p.name.clone()).unwrap_or_default();
        outputs.push((format!("state:{name}"), v));
    }
    lw.g.outputs = outputs;
    crate::ir::verify(&lw.g)?;
    Ok(lw.g)
}

/// An optimizer's update of one parameter: the new value, its states' new values by output
/// name, and the scheduled learning rate it used.
type Update = (ValueId, Vec<(String, ValueId)>, Option<ValueId>);

/// The evaluation graph of a train block: the model's inference forward and the block's loss.
/// Inputs `x` and `target`; outputs `loss` and `y` (the model's output). `fluxc train` runs it
/// on the validation data, `fluxc eval` on any declared source.
pub fn eval_step(idx: &Index<'_>, train: usize) -> LResult<Graph> {
    let Start { mut lw, mut env, t, layer, span, x, target } = start(idx, train, false)?;
    let yhat = lw.apply_layer(&layer, Val::T(x), span)?;
    let loss_expr =
        t.entries.iter().find(|e| e.key.name == "loss").map(|e| &e.value).ok_or_else(|| err("no loss"))?;
    let Val::T(y) = yhat else { return Err(err("tuple model outputs cannot be evaluated yet")) };
    let loss = lw.train_loss(&mut env, loss_expr, yhat, target)?;
    lw.g.outputs = vec![("loss".to_owned(), loss), ("y".to_owned(), y)];
    crate::ir::verify(&lw.g)?;
    Ok(lw.g)
}

/// The L2 norm of all the gradients together.
fn global_norm(lw: &mut Lowerer<'_>, gs: &[ValueId]) -> LResult<ValueId> {
    let mut total = lw.g.constant(0.0, DType::F32)?;
    for g in gs {
        let sq = lw.g.binary(BinaryOp::Mul, *g, *g)?;
        let axes: Vec<usize> = (0..lw.ty_of(sq).rank()).collect();
        let s = lw.g.reduce(ReduceOp::Sum, sq, axes)?;
        total = lw.g.binary(BinaryOp::Add, total, s)?;
    }
    Ok(lw.g.unary(UnaryOp::Sqrt, total)?)
}

fn err(message: &str) -> LowerError {
    LowerError { span: None, message: message.into() }
}

/// `"0.*"` matches every name under `0.`; otherwise names match exactly.
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The target's type: `target_shape = S` gives `f32[B, ..S]`, and `classes = N` one-hot labels of
/// that shape, `f32[B, ..S, N]` (`f32[B, N]` without `target_shape`); otherwise the model's output type.
fn target_type(idx: &Index<'_>, file: FileId, source: &str, out: &Ty) -> LResult<TensorTy> {
    let fallback = Lowerer::tensor_ty_of(out).ok_or_else(|| err("tuple model outputs cannot be trained yet"));
    let Some(mut item) = idx.item(file, source) else { return fallback };
    // Follow `split(src, …)` to the source it splits.
    for _ in 0..64 {
        let Some(ast::Item::Data(d)) = idx.items.get(item).map(|i| i.item) else { return fallback };
        let ExprKind::Call { callee, args, .. } = &d.value.kind else { return fallback };
        let is_split = matches!(&callee.kind, ExprKind::Name(n) if n.name == "split");
        if is_split {
            let Some(ast::Arg { kind: ast::ArgKind::Positional(src), .. }) = args.first() else {
                return fallback;
            };
            let ExprKind::Name(n) = &src.kind else { return fallback };
            match idx.item(file, &n.name) {
                Some(i) => item = i,
                None => return fallback,
            }
            continue;
        }
        let named = |key: &str| {
            args.iter().find_map(|a| match &a.kind {
                ast::ArgKind::Named { name, value } if name.name == key => Some(value),
                _ => None,
            })
        };
        let mut shape = vec![Dim::var("B")];
        let declared = named("target_shape");
        if let Some(ExprKind::List(items)) = declared.map(|v| &v.kind) {
            for i in items {
                if let ExprKind::Int(n) = i.kind {
                    shape.push(Dim::constant(i64::try_from(n).unwrap_or(1)));
                }
            }
        }
        if let Some(ExprKind::Int(n)) = named("classes").map(|v| &v.kind) {
            shape.push(Dim::constant(i64::try_from(*n).unwrap_or(1)));
            return Ok(TensorTy::new(DType::F32, shape));
        }
        if declared.is_some() {
            return Ok(TensorTy::new(DType::F32, shape));
        }
        return fallback;
    }
    fallback
}

impl<'a> Lowerer<'a> {
    /// `loss = mse` or `loss = huber_loss(delta = 0.5)`, applied to the output and the target.
    fn train_loss(&mut self, env: &mut LEnv, e: &ast::Expr, yhat: Val, target: ValueId) -> LResult<ValueId> {
        let (callee, hyper): (&ast::Expr, &[ast::Arg]) = match &e.kind {
            ExprKind::Call { callee, args, .. } => (callee, args),
            _ => (e, &[]),
        };
        let ExprKind::Name(n) = &callee.kind else {
            return fail(e.span, "internal: a loss that is not a name");
        };
        let Some(item) = self.idx.item(env.file(), &n.name) else {
            return fail(e.span, "internal: unknown loss");
        };
        let mut args = vec![
            ArgVal { name: None, val: yhat, span: e.span },
            ArgVal { name: None, val: Val::T(target), span: e.span },
        ];
        args.extend(self.eval_args(env, hyper)?);
        let l = self.call_fn(item, None, &args, e.span)?;
        self.tensor(&l, e.span)
    }

    /// The rules an `optimizer` or `clip` value stands for, in order.
    fn rules(&mut self, env: &mut LEnv, e: &ast::Expr) -> LResult<Vec<Rule>> {
        let (callee, args): (&ast::Expr, &[ast::Arg]) = match &e.kind {
            ExprKind::Call { callee, args, .. } => (callee, args),
            _ => (e, &[]),
        };
        let ExprKind::Name(n) = &callee.kind else {
            return fail(e.span, "internal: an optimizer that is not a name");
        };
        let first = |me: &mut Self, env: &mut LEnv, default: f64| -> LResult<Val> {
            match args.first() {
                Some(ast::Arg {
                    kind: ast::ArgKind::Positional(v) | ast::ArgKind::Named { value: v, .. },
                    ..
                }) => me.expr(env, v),
                _ => Ok(Val::T(me.g.constant(default, DType::F32)?)),
            }
        };
        Ok(match Prim::from_name(&n.name) {
            Some(Prim::ClipValue) => vec![Rule::ClipValue(first(self, env, 0.0)?)],
            Some(Prim::ClipNorm) => vec![Rule::ClipNorm(first(self, env, 1.0)?)],
            Some(Prim::WeightDecay) => vec![Rule::WeightDecay(first(self, env, 0.0005)?)],
            Some(Prim::OptimiserChain) => {
                let mut out = Vec::new();
                for a in args {
                    if let ast::ArgKind::Positional(v) = &a.kind {
                        out.extend(self.rules(env, v)?);
                    }
                }
                out
            }
            _ => {
                let Some(item) = self.idx.item(env.file(), &n.name) else {
                    return fail(e.span, "internal: unknown optimizer");
                };
                let argv = self.eval_args(env, args)?;
                vec![Rule::Optimizer { item, args: argv }]
            }
        })
    }

    fn schedule(&mut self, env: &mut LEnv, e: &ast::Expr) -> LResult<Schedule> {
        let (callee, args): (&ast::Expr, &[ast::Arg]) = match &e.kind {
            ExprKind::Call { callee, args, .. } => (callee, args),
            _ => (e, &[]),
        };
        let ExprKind::Name(n) = &callee.kind else { return Ok(Schedule::Constant) };
        let names: &[&str] = match n.name.as_str() {
            "step_decay" => &["every", "gamma"],
            "cosine" => &["total_steps"],
            "warmup" => &["steps", "then"],
            _ => &[],
        };
        let argv = self.eval_args_keep(env, args)?;
        let slots =
            bind_args(names.iter().copied(), &argv.iter().map(|(a, _)| a.clone()).collect::<Vec<_>>());
        let get = |k: usize| slots.get(k).copied().flatten().and_then(|i| argv.get(i));
        Ok(match n.name.as_str() {
            "step_decay" => match (get(0), get(1)) {
                (Some(a), Some(b)) => Schedule::StepDecay(a.0.val.clone(), b.0.val.clone()),
                _ => Schedule::Constant,
            },
            "cosine" => match get(0) {
                Some(a) => Schedule::Cosine(a.0.val.clone()),
                None => Schedule::Constant,
            },
            "warmup" => match (get(0), get(1)) {
                (Some(a), Some(b)) => Schedule::Warmup(a.0.val.clone(), Box::new(self.schedule(env, b.1)?)),
                _ => Schedule::Constant,
            },
            _ => Schedule::Constant,
        })
    }

    /// Arguments with their expressions (schedules nest: `warmup(100, cosine(1000))`).
    fn eval_args_keep<'e>(
        &mut self,
        env: &mut LEnv,
        args: &'e [ast::Arg],
    ) -> LResult<Vec<(ArgVal, &'e ast::Expr)>> {
        let mut out = Vec::new();
        for a in args {
            let (name, e) = match &a.kind {
                ast::ArgKind::Positional(e) => (None, e),
                ast::ArgKind::Named { name, value } => (Some(name.name.clone()), value),
                ast::ArgKind::Pair { from, .. } => (None, from),
            };
            // A nested schedule is a name or a call of a train built-in: not evaluated here.
            let val = match &e.kind {
                ExprKind::Name(_) | ExprKind::Call { .. } => Val::unit(),
                _ => self.expr(env, e)?,
            };
            out.push((ArgVal { name, val, span: e.span }, e));
        }
        Ok(out)
    }

    fn schedule_factor(&mut self, s: &Schedule, step: ValueId, epoch: ValueId) -> LResult<ValueId> {
        let span = Span::default();
        Ok(match s {
            Schedule::Constant => self.g.constant(1.0, DType::F32)?,
            Schedule::StepDecay(every, gamma) => {
                // gamma ^ floor((epoch - 1) / every)
                let every = self.f32_of(every, span)?;
                let gamma = self.f32_of(gamma, span)?;
                let one = self.g.constant(1.0, DType::F32)?;
                let e1 = self.g.binary(BinaryOp::Sub, epoch, one)?;
                let q = self.g.binary(BinaryOp::Div, e1, every)?;
                let f = self.g.unary(UnaryOp::Floor, q)?;
                self.g.binary(BinaryOp::Pow, gamma, f)?
            }
            Schedule::Cosine(total) => {
                // 0.5 * (1 + cos(pi * min(step, total) / total))
                let total = self.f32_of(total, span)?;
                let m = self.g.binary(BinaryOp::Min, step, total)?;
                let pi = self.g.constant(std::f64::consts::PI, DType::F32)?;
                let a = self.g.binary(BinaryOp::Mul, pi, m)?;
                let a = self.g.binary(BinaryOp::Div, a, total)?;
                let c = self.g.unary(UnaryOp::Cos, a)?;
                let one = self.g.constant(1.0, DType::F32)?;
                let half = self.g.constant(0.5, DType::F32)?;
                let s1 = self.g.binary(BinaryOp::Add, one, c)?;
                self.g.binary(BinaryOp::Mul, half, s1)?
            }
            Schedule::Warmup(steps, then) => {
                // step / steps for the first `steps` steps, then `then`'s factor
                let steps = self.f32_of(steps, span)?;
                let ramp = self.g.binary(BinaryOp::Div, step, steps)?;
                let after = self.schedule_factor(then, step, epoch)?;
                let early = self.g.binary(BinaryOp::Le, step, steps)?;
                self.g.push(Op::Select, &[early, ramp, after], None)?
            }
        })
    }

    /// One parameter's optimizer step: the optimizer's `update(p, g, t)` body, with `lr`
    /// scaled by the schedule and each state read from its input (or, at step 1, its initialiser).
    #[allow(clippy::too_many_arguments)]
    fn optimizer_update(
        &mut self,
        item: usize,
        args: &[ArgVal],
        p: ValueId,
        g: ValueId,
        step: ValueId,
        factor: ValueId,
        name: &str,
    ) -> LResult<Update> {
        let Some(info) = self.idx.items.get(item) else { return Err(err("no such optimizer")) };
        let mut scheduled_lr = None;
        let ast::Item::Optimizer(o) = info.item else { return Err(err("not an optimizer")) };
        let mut env = LEnv::new(info.file);
        let slots = bind_args(o.params.iter().map(|p| p.name.name.as_str()), args);
        for (prm, slot) in o.params.iter().zip(slots) {
            let v = match slot.and_then(|k| args.get(k)) {
                Some(a) => a.val.clone(),
                None => match &prm.default {
                    Some(d) => self.expr(&mut env, d)?,
                    None => return fail(o.span, format!("missing hyperparameter `{}`", prm.name.name)),
                },
            };
            let v = if prm.name.name == "lr" {
                let lr = self.f32_of(&v, o.span)?;
                let lr = self.g.binary(BinaryOp::Mul, lr, factor)?;
                scheduled_lr = Some(lr);
                Val::T(lr)
            } else {
                v
            };
            env.bind(&prm.name.name, v);
        }
        let Some(update) = o
            .members
            .iter()
            .find_map(|m| if let ast::OptimizerMember::Update(u) = m { Some(u) } else { None })
        else {
            return Err(err("an optimizer without update"));
        };
        let names: Vec<&str> = update.params.iter().map(|i| i.name.as_str()).collect();
        if let Some(pn) = names.first() {
            env.bind(pn, Val::T(p));
        }
        let p_ty = self.ty_of(p);
        let one = self.g.constant(1.0, DType::F32)?;
        let first_step = self.g.binary(BinaryOp::Le, step, one)?;
        let first_step = self.g.broadcast_to(first_step, &p_ty.shape)?;
        let mut state_names = Vec::new();
        let mut opt_states: HashMap<String, ValueId> = HashMap::new();
        for m in &o.members {
            let ast::OptimizerMember::State(s) = m else { continue };
            let slot = self.g.input(&format!("opt.{name}.{}", s.name.name), p_ty.clone())?;
            let init = self.expr(&mut env, &s.init)?;
            let init = self.tensor(&init, s.init.span)?;
            let init = self.g.broadcast_to(init, &p_ty.shape)?;
            let v = self.g.push(Op::Select, &[first_step, init, slot], None)?;
            env.bind(&s.name.name, Val::T(v));
            opt_states.insert(s.name.name.clone(), v);
            state_names.push(s.name.name.clone());
        }
        env.scopes.push(HashMap::new());
        for (i, n) in names.iter().enumerate() {
            let v = match i {
                0 => p,
                1 => g,
                _ => step,
            };
            env.bind(n, Val::T(v));
        }
        // Sequential `:=` (§12.1): assignments rebind the state names; read them back after.
        let mut last = Val::unit();
        for s in &update.body.stmts {
            match &s.kind {
                ast::StmtKind::Assign { target, value } => {
                    let v = self.expr(&mut env, value)?;
                    let t = self.tensor(&v, value.span)?;
                    let t = self.g.broadcast_to(t, &p_ty.shape)?;
                    env.bind(&target.name, Val::T(t));
                    opt_states.insert(target.name.clone(), t);
                    last = Val::unit();
                }
                _ => last = self.stmt(&mut env, s)?,
            }
        }
        let new_p = self.tensor(&last, update.span)?;
        let new_p = self.g.broadcast_to(new_p, &p_ty.shape)?;
        let states = state_names
            .iter()
            .filter_map(|s| opt_states.get(s).map(|v| (format!("opt:{name}.{s}"), *v)))
            .collect();
        Ok((new_p, states, scheduled_lr))
    }
}
