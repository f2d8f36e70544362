//! Every rewrite rule of the optimizer, by name. Pattern rules are written as egg patterns over
//! the ops without attributes; structural rules (transposes, reshapes, broadcasts, reductions)
//! read the attributes and types of the e-nodes they match. Each rule is an identity of real
//! arithmetic that also holds for every finite f32 input; each has a one-line test in
//! `opt/tests.rs`. Constant folding is the analysis's job (`lang.rs`), CSE the e-graph's own.

use egg::{Applier, Id, Pattern, PatternAst, Rewrite, SearchMatches, Searcher, Subst, Symbol, Var};

use super::lang::{EG, ENode, Typed};
use crate::dims::Dim;
use crate::ir::{BinaryOp, DType, Op, PoolKind, ReduceOp, TensorTy, UnaryOp, infer, swaps_last_two};

pub type Rule = Rewrite<ENode, Typed>;

/// A condition: the class bound to `var` is the uniform constant `value`.
fn is_const(var: &str, value: f64) -> impl Fn(&mut EG, Id, &Subst) -> bool + Send + Sync + use<> {
    let var: Option<Var> = var.parse().ok();
    move |egraph, _, subst| {
        var.and_then(|v| subst.get(v)).is_some_and(|c| egraph[*c].data.konst == Some(value))
    }
}

type Condition = Box<dyn Fn(&mut EG, Id, &Subst) -> bool + Send + Sync>;

/// (name, left-hand side, right-hand side, condition).
fn pattern_rules() -> Vec<(&'static str, &'static str, &'static str, Option<Condition>)> {
    vec![
        ("mul-one", "(mul ?x ?c)", "?x", Some(Box::new(is_const("?c", 1.0)))),
        ("mul-one-left", "(mul ?c ?x)", "?x", Some(Box::new(is_const("?c", 1.0)))),
        ("mul-minus-one", "(mul ?x ?c)", "(neg ?x)", Some(Box::new(is_const("?c", -1.0)))),
        ("add-zero", "(add ?x ?c)", "?x", Some(Box::new(is_const("?c", 0.0)))),
        ("add-zero-left", "(add ?c ?x)", "?x", Some(Box::new(is_const("?c", 0.0)))),
        ("sub-zero", "(sub ?x ?c)", "?x", Some(Box::new(is_const("?c", 0.0)))),
        ("div-one", "(div ?x ?c)", "?x", Some(Box::new(is_const("?c", 1.0)))),
        ("neg-neg", "(neg (neg ?x))", "?x", None),
        ("sub-neg", "(sub ?x (neg ?y))", "(add ?x ?y)", None),
        ("add-neg", "(add ?x (neg ?y))", "(sub ?x ?y)", None),
        ("add-neg-left", "(add (neg ?y) ?x)", "(sub ?x ?y)", None),
        ("neg-sub", "(neg (sub ?x ?y))", "(sub ?y ?x)", None),
        ("mul-neg-neg", "(mul (neg ?x) (neg ?y))", "(mul ?x ?y)", None),
        ("log-exp", "(log (exp ?x))", "?x", None),
        // log(exp(x) / s) = x - log(s): the stable form of a log-softmax (and so of a
        // cross entropy over a softmax), without exp's overflow.
        ("log-softmax", "(log (div (exp ?x) ?s))", "(sub ?x (log ?s))", None),
        ("mul-comm", "(mul ?x ?y)", "(mul ?y ?x)", None),
        ("add-comm", "(add ?x ?y)", "(add ?y ?x)", None),
        ("factor-mul", "(add (mul ?a ?b) (mul ?a ?c))", "(mul ?a (add ?b ?c))", None),
    ]
}

/// A structural rule: for an e-class, the terms equal to it.
pub type Finder = fn(&EG, Id) -> Vec<Build>;

/// A term a structural rule found equal to the class it searched: an existing class, or an op
/// over terms (added to the e-graph when it types).
pub enum Build {
    Class(Id),
    Node(Op, Option<TensorTy>, Vec<Build>),
}

fn node(op: Op, declared: Option<TensorTy>, args: Vec<Build>) -> Build {
    Build::Node(op, declared, args)
}

fn ty(egraph: &EG, id: Id) -> Option<&TensorTy> {
    egraph[id].data.ty.as_ref()
}

/// The nodes of class `id` with the op `want` matches.
fn nodes_where<'a>(
    egraph: &'a EG,
    id: Id,
    want: impl Fn(&Op) -> bool + 'a,
) -> impl Iterator<Item = &'a ENode> + 'a {
    egraph[id].nodes.iter().filter(move |n| want(&n.key.op))
}

/// transpose(transpose(x)) = transpose(x) by the composed permutation, or x when that is the
/// identity; a transpose by the identity is its operand.
fn transpose_transpose(egraph: &EG, id: Id) -> Vec<Build> {
    let mut out = Vec::new();
    for n in nodes_where(egraph, id, |op| matches!(op, Op::Transpose { .. })) {
        let (Op::Transpose { perm: outer }, Some(&x)) = (&n.key.op, n.args.first()) else { continue };
        if outer.iter().enumerate().all(|(i, p)| i == *p) {
            out.push(Build::Class(x));
            continue;
        }
        for m in nodes_where(egraph, x, |op| matches!(op, Op::Transpose { .. })) {
            let (Op::Transpose { perm: inner }, Some(&y)) = (&m.key.op, m.args.first()) else { continue };
            let composed: Vec<usize> = outer.iter().map(|p| inner.get(*p).copied().unwrap_or(*p)).collect();
            if composed.iter().enumerate().all(|(i, p)| i == *p) {
                out.push(Build::Class(y));
            } else {
                out.push(node(Op::Transpose { perm: composed }, None, vec![Build::Class(y)]));
            }
        }
    }
    out
}

/// reshape(reshape(x)) = reshape(x); a reshape to the operand's own shape is the operand.
fn reshape_reshape(egraph: &EG, id: Id) -> Vec<Build> {
    let mut out = Vec::new();
    for n in nodes_where(egraph, id, |op| matches!(op, Op::Reshape)) {
        let Some(&x) = n.args.first() else { continue };
        if ty(egraph, x) == n.key.declared.as_ref() {
            out.push(Build::Class(x));
        }
        for m in nodes_where(egraph, x, |op| matches!(op, Op::Reshape)) {
            let Some(&y) = m.args.first() else { continue };
            if ty(egraph, y) == n.key.declared.as_ref() {
                out.push(Build::Class(y));
            } else {
                out.push(node(Op::Reshape, n.key.declared.clone(), vec![Build::Class(y)]));
            }
        }
    }
    out
}

/// broadcast(broadcast(x)) = broadcast(x) (numpy broadcasting composes); a broadcast to the
/// operand's own type is the operand.
fn broadcast_broadcast(egraph: &EG, id: Id) -> Vec<Build> {
    let mut out = Vec::new();
    for n in nodes_where(egraph, id, |op| matches!(op, Op::Broadcast)) {
        let Some(&x) = n.args.first() else { continue };
        if ty(egraph, x) == n.key.declared.as_ref() {
            out.push(Build::Class(x));
        }
        for m in nodes_where(egraph, x, |op| matches!(op, Op::Broadcast)) {
            let Some(&y) = m.args.first() else { continue };
            out.push(node(Op::Broadcast, n.key.declared.clone(), vec![Build::Class(y)]));
        }
    }
    out
}

/// (a @ b)ᵀ = bᵀ @ aᵀ: the transposes move onto the operands, where the matrix-product kernels
/// read them through strides instead of copying.
fn transpose_matmul(egraph: &EG, id: Id) -> Vec<Build> {
    let mut out = Vec::new();
    for n in nodes_where(egraph, id, |op| matches!(op, Op::Transpose { perm } if swaps_last_two(perm))) {
        let (Op::Transpose { perm }, Some(&p)) = (&n.key.op, n.args.first()) else { continue };
        for m in nodes_where(egraph, p, |op| matches!(op, Op::MatMul)) {
            let (Some(&a), Some(&b)) = (m.args.first(), m.args.get(1)) else { continue };
            let t = |x: Id| node(Op::Transpose { perm: perm.clone() }, None, vec![Build::Class(x)]);
            out.push(node(Op::MatMul, None, vec![t(b), t(a)]));
        }
    }
    out
}

/// sum(-x) = -sum(x) over any axes: the negation runs on the smaller tensor.
fn reduce_neg(egraph: &EG, id: Id) -> Vec<Build> {
    let mut out = Vec::new();
    for n in nodes_where(egraph, id, |op| matches!(op, Op::Reduce { op: ReduceOp::Sum, .. })) {
        let Some(&x) = n.args.first() else { continue };
        for m in nodes_where(egraph, x, |op| matches!(op, Op::Unary(UnaryOp::Neg))) {
            let Some(&y) = m.args.first() else { continue };
            let sum = node(n.key.op.clone(), None, vec![Build::Class(y)]);
            out.push(node(Op::Unary(UnaryOp::Neg), None, vec![sum]));
        }
    }
    out
}

/// log(broadcast(s)) = broadcast(log(s)), and likewise for exp: the function runs once per
/// value instead of once per copy.
fn unary_broadcast(egraph: &EG, id: Id) -> Vec<Build> {
    let mut out = Vec::new();
    let hoisted =
        |op: &Op| matches!(op, Op::Unary(UnaryOp::Log | UnaryOp::Exp | UnaryOp::Neg | UnaryOp::Sqrt));
    for n in nodes_where(egraph, id, hoisted) {
        let Some(&x) = n.args.first() else { continue };
        for m in nodes_where(egraph, x, |op| matches!(op, Op::Broadcast)) {
            let Some(&y) = m.args.first() else { continue };
            let once = node(n.key.op.clone(), None, vec![Build::Class(y)]);
            out.push(node(Op::Broadcast, m.key.declared.clone(), vec![once]));
        }
    }
    out
}

/// x / broadcast(s) = x * broadcast(1 / s): one division per value of `s` and a multiplication
/// per element, instead of a division per element (several times slower in the vector units).
fn div_broadcast(egraph: &EG, id: Id) -> Vec<Build> {
    let mut out = Vec::new();
    for n in nodes_where(egraph, id, |op| matches!(op, Op::Binary(BinaryOp::Div))) {
        let (Some(&x), Some(&d)) = (n.args.first(), n.args.get(1)) else { continue };
        for m in nodes_where(egraph, d, |op| matches!(op, Op::Broadcast)) {
            let Some(&s) = m.args.first() else { continue };
            let Some(sty) = ty(egraph, s).cloned() else { continue };
            if sty.dtype != DType::F32 {
                continue;
            }
            let one = node(Op::Const(1.0), Some(TensorTy::new(sty.dtype, Vec::new())), Vec::new());
            let one =
                if sty.shape.is_empty() { one } else { node(Op::Broadcast, Some(sty.clone()), vec![one]) };
            let inverse = node(Op::Binary(BinaryOp::Div), None, vec![one, Build::Class(s)]);
            let spread = node(Op::Broadcast, m.key.declared.clone(), vec![inverse]);
            out.push(node(Op::Binary(BinaryOp::Mul), None, vec![Build::Class(x), spread]));
        }
    }
    out
}

/// sum(x · x) over every axis = the matrix product [1, n] @ [n, 1] of x with itself (both
/// reshapes of x, no copy): the product kernel reads x once, where a loop would write the
/// squares and a reduction read them back (a gradient's squared norm, every train step).
fn sum_squares(egraph: &EG, id: Id) -> Vec<Build> {
    let mut out = Vec::new();
    for n in nodes_where(egraph, id, |op| matches!(op, Op::Reduce { op: ReduceOp::Sum, .. })) {
        let (Op::Reduce { axes, .. }, Some(&sq)) = (&n.key.op, n.args.first()) else { continue };
        let Some(t) = ty(egraph, sq) else { continue };
        let every_axis = axes.len() == t.shape.len() && (0..t.shape.len()).all(|a| axes.contains(&a));
        if t.dtype != DType::F32 || t.shape.is_empty() || !every_axis {
            continue;
        }
        let Ok(count) = t.shape.iter().try_fold(Dim::constant(1), |acc, d| acc.mul(d)) else { continue };
        for m in nodes_where(egraph, sq, |op| matches!(op, Op::Binary(BinaryOp::Mul))) {
            let (Some(&a), Some(&b)) = (m.args.first(), m.args.get(1)) else { continue };
            if egraph.find(a) != egraph.find(b) {
                continue;
            }
            let matrix = |shape: Vec<Dim>| {
                node(Op::Reshape, Some(TensorTy::new(DType::F32, shape)), vec![Build::Class(a)])
            };
            let (row, column) = (
                matrix(vec![Dim::constant(1), count.clone()]),
                matrix(vec![count.clone(), Dim::constant(1)]),
            );
            let product = node(Op::MatMul, None, vec![row, column]);
            out.push(node(Op::Reshape, Some(TensorTy::new(DType::F32, Vec::new())), vec![product]));
        }
    }
    out
}

/// The class holds `[x > 0]` as f32 (a ReLU's derivative, as autodiff writes it).
fn is_positive_mask(egraph: &EG, mask: Id, x: Id) -> bool {
    let x = egraph.find(x);
    nodes_where(egraph, mask, |op| matches!(op, Op::Cast(DType::F32))).any(|c| {
        c.args.first().is_some_and(|gt| {
            nodes_where(egraph, *gt, |op| matches!(op, Op::Binary(BinaryOp::Gt))).any(|g| {
                matches!(g.args.as_slice(), [a, z] if egraph.find(*a) == x && egraph[*z].data.konst == Some(0.0))
            })
        })
    })
}

/// maxpool_grad(relu(x), g) · [x > 0] = maxpool_grad(relu(x), g · [maxpool(relu(x)) > 0]): a max
/// pool routes each window's gradient to a position holding the window's maximum, and there
/// the ReLU's mask is 1 exactly when that maximum is positive. The mask is then taken at the
/// pooled size (a quarter of the elements for a 2×2 pool), from the forward pass's own pooled
/// values, and the gradient no longer needs `x` at full size.
fn pool_grad_relu(egraph: &EG, id: Id) -> Vec<Build> {
    let mut out = Vec::new();
    for n in nodes_where(egraph, id, |op| matches!(op, Op::Binary(BinaryOp::Mul))) {
        let [a, b] = n.args.as_slice() else { continue };
        for (routed, mask) in [(*a, *b), (*b, *a)] {
            let max_grad = |op: &Op| matches!(op, Op::PoolGrad { kind: PoolKind::Max, .. });
            for p in nodes_where(egraph, routed, max_grad) {
                let (Op::PoolGrad { window, stride, pad, .. }, [r, g]) = (&p.key.op, p.args.as_slice())
                else {
                    continue;
                };
                let Some(gty) = ty(egraph, *g) else { continue };
                let relu = nodes_where(egraph, *r, |op| matches!(op, Op::Unary(UnaryOp::Relu)));
                if !relu.filter_map(|m| m.args.first()).any(|x| is_positive_mask(egraph, mask, *x)) {
                    continue;
                }
                let pool = Op::Pool {
                    kind: PoolKind::Max,
                    window: window.clone(),
                    stride: stride.clone(),
                    pad: pad.clone(),
                };
                let pooled = node(pool, None, vec![Build::Class(*r)]);
                let zero = node(Op::Const(0.0), Some(TensorTy::new(DType::F32, Vec::new())), Vec::new());
                let zeros = node(Op::Broadcast, Some(gty.clone()), vec![zero]);
                let positive = node(Op::Binary(BinaryOp::Gt), None, vec![pooled, zeros]);
                let small_mask = node(Op::Cast(DType::F32), None, vec![positive]);
                let masked = node(Op::Binary(BinaryOp::Mul), None, vec![Build::Class(*g), small_mask]);
                out.push(node(p.key.op.clone(), None, vec![Build::Class(*r), masked]));
            }
        }
    }
    out
}

/// The parts of a concatenation along `axis`: (class, start, end) in the result.
fn concat_parts(egraph: &EG, n: &ENode, axis: usize) -> Option<Vec<(Id, i64, i64)>> {
    let mut at = 0;
    let mut parts = Vec::new();
    for a in &n.args {
        let len = ty(egraph, *a)?.shape.get(axis)?.as_constant()?;
        parts.push((*a, at, at + len));
        at += len;
    }
    Some(parts)
}

/// The piece `[lo, hi)` (along `axis`, in the concatenation's coordinates) of the part that
/// covers it: the part itself, or a constant of the piece's shape when the part is constant.
fn piece(egraph: &EG, parts: &[(Id, i64, i64)], axis: usize, lo: i64, hi: i64) -> Option<Build> {
    let &(id, start, end) = parts.iter().find(|(_, s, e)| *s <= lo && hi <= *e)?;
    if (start, end) == (lo, hi) {
        return Some(Build::Class(id));
    }
    let t = ty(egraph, id)?;
    if let Some(v) = egraph[id].data.konst {
        let mut shape = t.shape.clone();
        *shape.get_mut(axis)? = crate::dims::Dim::constant(hi - lo);
        let c = node(Op::Const(v), Some(TensorTy::new(t.dtype, Vec::new())), Vec::new());
        return Some(node(Op::Broadcast, Some(TensorTy::new(t.dtype, shape)), vec![c]));
    }
    // Cutting a computed part would add a copy for each cut: not worth it.
    None
}

/// concat(a₁ … aₙ) + concat(b₁ … bₘ) = concat of the pieces' sums, cut where either side has a
/// boundary: the gradient of several slices of one tensor (each a concatenation with zeros)
/// becomes one concatenation of the slices' gradients once the zeros fold away.
fn add_concat(egraph: &EG, id: Id) -> Vec<Build> {
    let mut out = Vec::new();
    for n in nodes_where(egraph, id, |op| matches!(op, Op::Binary(BinaryOp::Add))) {
        let (Some(&x), Some(&y)) = (n.args.first(), n.args.get(1)) else { continue };
        for cx in nodes_where(egraph, x, |op| matches!(op, Op::Concat { .. })) {
            let Op::Concat { axis } = cx.key.op else { continue };
            for cy in nodes_where(egraph, y, |op| matches!(op, Op::Concat { axis: a } if *a == axis)) {
                let (Some(px), Some(py)) = (concat_parts(egraph, cx, axis), concat_parts(egraph, cy, axis))
                else {
                    continue;
                };
                let mut cuts: Vec<i64> = px.iter().chain(&py).flat_map(|(_, s, e)| [*s, *e]).collect();
                cuts.sort_unstable();
                cuts.dedup();
                let mut sums = Vec::new();
                for w in cuts.windows(2) {
                    let &[lo, hi] = w else { break };
                    let (Some(a), Some(b)) =
                        (piece(egraph, &px, axis, lo, hi), piece(egraph, &py, axis, lo, hi))
                    else {
                        break;
                    };
                    sums.push(node(Op::Binary(BinaryOp::Add), None, vec![a, b]));
                }
                if sums.len() + 1 == cuts.len() {
                    out.push(node(Op::Concat { axis }, None, sums));
                }
            }
        }
    }
    out
}

/// The structural rules: (name, finder).
fn structural_rules() -> Vec<(&'static str, Finder)> {
    vec![
        ("transpose-transpose", transpose_transpose),
        ("reshape-reshape", reshape_reshape),
        ("broadcast-broadcast", broadcast_broadcast),
        ("transpose-matmul", transpose_matmul),
        ("sum-neg", reduce_neg),
        ("unary-broadcast", unary_broadcast),
        ("div-broadcast", div_broadcast),
        ("add-concat", add_concat),
        ("sum-squares", sum_squares),
        ("pool-grad-relu", pool_grad_relu),
    ]
}

/// Finds the classes where a structural rule proposes something; the applier recomputes the
/// proposals against the e-graph as it then is.
struct Structural {
    find: Finder,
}

impl Searcher<ENode, Typed> for Structural {
    fn search_eclass_with_limit(
        &self,
        egraph: &EG,
        eclass: Id,
        limit: usize,
    ) -> Option<SearchMatches<'_, ENode>> {
        // Only a proposal the class does not already hold is a match: re-adding what an earlier
        // iteration added would change nothing, and costs most of the rule's time.
        let eclass = egraph.find(eclass);
        if limit == 0 || (self.find)(egraph, eclass).iter().all(|b| existing(egraph, b) == Some(eclass)) {
            return None;
        }
        Some(SearchMatches { eclass, substs: vec![Subst::with_capacity(0)], ast: None })
    }

    fn vars(&self) -> Vec<Var> {
        Vec::new()
    }
}

impl Applier<ENode, Typed> for Structural {
    fn apply_one(
        &self,
        egraph: &mut EG,
        eclass: Id,
        _subst: &Subst,
        _ast: Option<&PatternAst<ENode>>,
        _rule: Symbol,
    ) -> Vec<Id> {
        let want = egraph[eclass].data.ty.clone();
        let mut changed = Vec::new();
        for b in (self.find)(egraph, eclass) {
            if let Some(id) = build(egraph, b)
                && egraph[id].data.ty == want
                && egraph.union(eclass, id)
            {
                changed.push(eclass);
            }
        }
        changed
    }
}

/// The class a term already has in the e-graph, if every node of it is there.
fn existing(egraph: &EG, b: &Build) -> Option<Id> {
    match b {
        Build::Class(c) => Some(egraph.find(*c)),
        Build::Node(op, declared, args) => {
            let ids = args.iter().map(|a| existing(egraph, a)).collect::<Option<Vec<Id>>>()?;
            egraph.lookup(ENode::new(op.clone(), declared.clone(), ids))
        }
    }
}

/// Adds a term's nodes, each only when it types (so no class is ever untyped).
fn build(egraph: &mut EG, b: Build) -> Option<Id> {
    match b {
        Build::Class(c) => Some(c),
        Build::Node(op, declared, args) => {
            let mut ids = Vec::new();
            for a in args {
                ids.push(build(egraph, a)?);
            }
            let tys: Option<Vec<TensorTy>> = ids.iter().map(|a| egraph[*a].data.ty.clone()).collect();
            let tys = tys?;
            let refs: Vec<&TensorTy> = tys.iter().collect();
            infer(&op, &refs, declared.as_ref()).ok()?;
            Some(egraph.add(ENode::new(op, declared, ids)))
        }
    }
}

/// Every rule, in the order the report lists them.
pub fn all() -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    for (name, lhs, rhs, cond) in pattern_rules() {
        let l: Pattern<ENode> = lhs.parse().map_err(|e| format!("{name}: {e}"))?;
        let r: Pattern<ENode> = rhs.parse().map_err(|e| format!("{name}: {e}"))?;
        rules.push(match cond {
            Some(c) => Rewrite::new(name, l, egg::ConditionalApplier { condition: c, applier: r })?,
            None => Rewrite::new(name, l, r)?,
        });
    }
    for (name, find) in structural_rules() {
        rules.push(Rewrite::new(name, Structural { find }, Structural { find })?);
    }
    Ok(rules)
}

/// The rule names, in order.
pub fn names() -> Vec<&'static str> {
    pattern_rules().into_iter().map(|r| r.0).chain(structural_rules().into_iter().map(|r| r.0)).collect()
}
