//! Peephole simplification before scheduling (the egg optimizer will subsume it): transposes
//! that undo each other vanish, and a transposed matrix product becomes the product of the
//! transposes in reverse order, `(a @ b)ᵀ = bᵀ @ aᵀ`, so that every transpose ends up feeding a
//! product, where the kernels read it through strides instead of copying it. A sum of matrix
//! products (the weight gradient of a layer applied at every time step) becomes one product of
//! concatenations, `Σ Pₜ @ Qₜ = [P₁ … Pₙ] @ [Q₁; …; Qₙ]`: one large GEMM instead of many small
//! ones and an n-way sum. And the products of a sequence's steps with one matrix (an RNN's
//! input projection, `x[:, t] @ W` at every step) become one product of the whole sequence,
//! `(x @ W)[:, t]`, whose steps the loops then read in place.

use std::collections::HashMap;

use super::{BinaryOp, Graph, IrError, Node, Op, ReduceOp, TensorTy, ValueId, swaps_last_two};
use crate::dims::Dim;

struct Builder<'g> {
    old: &'g Graph,
    new: Graph,
    map: HashMap<usize, ValueId>,
    uses: Vec<usize>,
}

impl Builder<'_> {
    fn node(&self, v: ValueId) -> Option<&Node> {
        self.new.nodes.get(v.index())
    }

    /// A transpose of `v` by `perm`, simplified against what `v` is.
    fn transpose(&mut self, v: ValueId, perm: &[usize], old_uses: usize) -> Result<ValueId, IrError> {
        if perm.iter().enumerate().all(|(i, p)| i == *p) {
            return Ok(v);
        }
        if let Some(n) = self.node(v).cloned() {
            match &n.op {
                // T(T(x)): one transpose, or none.
                Op::Transpose { perm: inner } => {
                    let composed: Vec<usize> =
                        perm.iter().map(|p| inner.get(*p).copied().unwrap_or(*p)).collect();
                    let src = n.args.first().copied().ok_or_else(|| IrError("transpose operand".into()))?;
                    return self.transpose(src, &composed, old_uses);
                }
                // (a @ b)ᵀ = bᵀ @ aᵀ when the product has no other reader.
                Op::MatMul if swaps_last_two(perm) && old_uses == 1 => {
                    let (Some(a), Some(b)) = (n.args.first().copied(), n.args.get(1).copied()) else {
                        return Err(IrError("matmul operands".into()));
                    };
                    let bt = self.transpose(b, perm, 1)?;
                    let at = self.transpose(a, perm, 1)?;
                    return self.new.push(Op::MatMul, &[bt, at], None);
                }
                _ => {}
            }
        }
        self.new.push(Op::Transpose { perm: perm.to_vec() }, &[v], None)
    }
}

pub fn simplify(g: &Graph) -> Result<Graph, IrError> {
    let mut uses = vec![0usize; g.nodes.len()];
    for n in &g.nodes {
        for a in &n.args {
            if let Some(u) = uses.get_mut(a.index()) {
                *u += 1;
            }
        }
    }
    for (_, v) in &g.outputs {
        if let Some(u) = uses.get_mut(v.index()) {
            *u += 1;
        }
    }
    let mut b = Builder {
        old: g,
        new: Graph {
            nodes: Vec::new(),
            inputs: g.inputs.clone(),
            params: g.params.clone(),
            outputs: Vec::new(),
        },
        map: HashMap::new(),
        uses,
    };
    for (i, n) in b.old.nodes.iter().enumerate() {
        let args: Vec<ValueId> = n
            .args
            .iter()
            .map(|a| {
                b.map.get(&a.index()).copied().ok_or_else(|| IrError("operand before definition".into()))
            })
            .collect::<Result<_, _>>()?;
        let v = match &n.op {
            Op::Transpose { perm } => {
                let src = args.first().copied().ok_or_else(|| IrError("transpose operand".into()))?;
                // How often the operand's product is read in the original graph.
                let operand_uses = n.args.first().and_then(|a| b.uses.get(a.index())).copied().unwrap_or(2);
                b.transpose(src, perm, operand_uses)?
            }
            op => {
                b.new.nodes.push(Node { op: op.clone(), args, ty: n.ty.clone() });
                ValueId((b.new.nodes.len() - 1) as u32)
            }
        };
        b.map.insert(i, v);
    }
    for (name, v) in &g.outputs {
        let nv = b.map.get(&v.index()).copied().ok_or_else(|| IrError(format!("output {name}")))?;
        b.new.outputs.push((name.clone(), nv));
    }
    super::verify(&b.new)?;
    let fused = fuse_product_sums(&dead_code(b.new))?;
    super::verify(&fused)?;
    let hoisted = hoist_step_products(&dead_code(fused))?;
    super::verify(&hoisted)?;
    Ok(dead_code(hoisted))
}

/// How a product's operand is stored: itself, or the transpose of a matrix.
fn stored(g: &Graph, v: ValueId) -> (ValueId, bool) {
    match g.nodes.get(v.index()) {
        Some(n) if matches!(&n.op, Op::Transpose { perm } if perm.as_slice() == [1, 0]) => {
            (n.args.first().copied().unwrap_or(v), true)
        }
        _ => (v, false),
    }
}

/// Rewrites every sum (a tree of single-use additions) of at least two single-use 2-D matrix
/// products whose left operands are all stored alike, and right operands too, into one product
/// of concatenations plus the sum's other terms. The old nodes are left for `dead_code`.
fn fuse_product_sums(g: &Graph) -> Result<Graph, IrError> {
    let n = g.nodes.len();
    let mut uses = vec![0usize; n];
    for node in &g.nodes {
        for a in &node.args {
            if let Some(u) = uses.get_mut(a.index()) {
                *u += 1;
            }
        }
    }
    for (_, v) in &g.outputs {
        if let Some(u) = uses.get_mut(v.index()) {
            *u += 1;
        }
    }
    let is_add = |i: usize| g.nodes.get(i).is_some_and(|x| x.op == Op::Binary(BinaryOp::Add));
    let once = |i: usize| uses.get(i).copied() == Some(1);
    // An addition absorbed into the one that reads it.
    let mut interior = vec![false; n];
    for (i, node) in g.nodes.iter().enumerate() {
        if is_add(i) {
            for a in &node.args {
                if is_add(a.index())
                    && once(a.index())
                    && g.nodes.get(a.index()).map(|x| &x.ty) == Some(&node.ty)
                    && let Some(x) = interior.get_mut(a.index())
                {
                    *x = true;
                }
            }
        }
    }
    let mut out =
        Graph { nodes: Vec::new(), inputs: g.inputs.clone(), params: g.params.clone(), outputs: Vec::new() };
    let mut map: Vec<ValueId> = Vec::with_capacity(n);
    // Concatenations made here, shared by every rewrite that joins the same parts alike.
    let mut concats: HashMap<(usize, Vec<ValueId>), ValueId> = HashMap::new();
    for (i, node) in g.nodes.iter().enumerate() {
        let m = |v: &ValueId| {
            map.get(v.index()).copied().ok_or_else(|| IrError("operand before definition".into()))
        };
        let mut rewritten = None;
        // Only sums of batch-free results contracted over the batch (weight gradients): there
        // the joined operands are activations, never parameters copied at every step.
        let batch_free = node.ty.shape.iter().all(|d| d.as_constant().is_some());
        if batch_free && is_add(i) && !interior.get(i).copied().unwrap_or(false) {
            // The terms of the sum rooted here.
            let mut terms = Vec::new();
            let mut stack: Vec<ValueId> = node.args.iter().rev().copied().collect();
            while let Some(v) = stack.pop() {
                if interior.get(v.index()).copied().unwrap_or(false) {
                    if let Some(x) = g.nodes.get(v.index()) {
                        stack.extend(x.args.iter().rev().copied());
                    }
                } else {
                    terms.push(v);
                }
            }
            // The contraction's length: the first axis of the right operand.
            let contracted_over_batch = |x: &Node| {
                x.args
                    .get(1)
                    .and_then(|q| g.ty(*q))
                    .and_then(|t| t.shape.first())
                    .is_some_and(|d| d.as_constant().is_none())
            };
            let products: Vec<ValueId> = terms
                .iter()
                .copied()
                .filter(|t| {
                    once(t.index())
                        && g.nodes.get(t.index()).is_some_and(|x| {
                            x.op == Op::MatMul && x.ty.rank() == 2 && contracted_over_batch(x)
                        })
                })
                .collect();
            let sides = |k: usize| -> Vec<(ValueId, bool)> {
                products
                    .iter()
                    .filter_map(|p| g.nodes.get(p.index()).and_then(|x| x.args.get(k)).map(|a| stored(g, *a)))
                    .collect()
            };
            let (left, right) = (sides(0), sides(1));
            let alike =
                |s: &[(ValueId, bool)]| s.windows(2).all(|w| w.first().map(|x| x.1) == w.get(1).map(|x| x.1));
            if node.ty.rank() == 2
                && products.len() >= 2
                && left.len() == products.len()
                && right.len() == products.len()
                && alike(&left)
                && alike(&right)
            {
                // P = [P₁ … Pₙ] joins along the contraction (its last axis), Q = [Q₁; …; Qₙ]
                // along its first; a transposed operand joins its stored matrix the other way.
                let mut join = |out: &mut Graph,
                                side: &[(ValueId, bool)],
                                contraction_last: bool|
                 -> Result<ValueId, IrError> {
                    let parts: Vec<ValueId> = side.iter().map(|(v, _)| m(v)).collect::<Result<_, _>>()?;
                    let transposed = side.first().is_some_and(|x| x.1);
                    let axis = usize::from(contraction_last != transposed);
                    let cat = concat(out, &mut concats, axis, parts)?;
                    if transposed {
                        out.push(Op::Transpose { perm: vec![1, 0] }, &[cat], None)
                    } else {
                        Ok(cat)
                    }
                };
                let p = join(&mut out, &left, true)?;
                let q = join(&mut out, &right, false)?;
                let mut acc = out.push(Op::MatMul, &[p, q], None)?;
                for t in terms.iter().filter(|t| !products.contains(t)) {
                    let tv = m(t)?;
                    acc = out.binary(BinaryOp::Add, acc, tv)?;
                }
                rewritten = Some(acc);
            }
            // A sum of batch sums of matrices (a bias's gradient at every time step) is one
            // batch sum of their concatenation: `Σ sum₀(Gₜ) = sum₀([G₁; …; Gₙ])`, the same
            // concatenation the weight's gradient product reads.
            let batch_sum = |t: &ValueId| -> Option<ValueId> {
                let x = g.nodes.get(t.index())?;
                let a = *x.args.first()?;
                let at = g.ty(a)?;
                let over_batch =
                    at.rank() == 2 && at.shape.first().is_some_and(|d| d.as_constant().is_none());
                (once(t.index())
                    && matches!(&x.op, Op::Reduce { op: ReduceOp::Sum, axes } if axes.as_slice() == [0])
                    && over_batch)
                    .then_some(a)
            };
            let sums: Vec<(ValueId, ValueId)> =
                terms.iter().filter_map(|t| batch_sum(t).map(|a| (*t, a))).collect();
            let alike = sums.windows(2).all(|w| match w {
                [(_, a), (_, b)] => g.ty(*a).map(|t| t.shape.get(1)) == g.ty(*b).map(|t| t.shape.get(1)),
                _ => true,
            });
            if rewritten.is_none() && sums.len() >= 2 && alike {
                let parts: Vec<ValueId> = sums.iter().map(|(_, a)| m(a)).collect::<Result<_, _>>()?;
                let cat = concat(&mut out, &mut concats, 0, parts)?;
                let mut acc = out.reduce(ReduceOp::Sum, cat, vec![0])?;
                for t in terms.iter().filter(|t| !sums.iter().any(|(s, _)| s == *t)) {
                    let tv = m(t)?;
                    acc = out.binary(BinaryOp::Add, acc, tv)?;
                }
                rewritten = Some(acc);
            }
        }
        let v = match rewritten {
            Some(v) => v,
            None => copy_node(&mut out, node, &map)?,
        };
        map.push(v);
    }
    with_outputs(out, g, &map)
}

/// `node` of the old graph appended to `out` unchanged, its operands through `map`.
fn copy_node(out: &mut Graph, node: &Node, map: &[ValueId]) -> Result<ValueId, IrError> {
    let args = node
        .args
        .iter()
        .map(|a| map.get(a.index()).copied().ok_or_else(|| IrError("operand before definition".into())))
        .collect::<Result<Vec<_>, _>>()?;
    out.nodes.push(Node { op: node.op.clone(), args, ty: node.ty.clone() });
    Ok(ValueId((out.nodes.len() - 1) as u32))
}

/// `out` with the old graph's outputs, through `map`.
fn with_outputs(mut out: Graph, g: &Graph, map: &[ValueId]) -> Result<Graph, IrError> {
    for (name, v) in &g.outputs {
        let nv = map.get(v.index()).copied().ok_or_else(|| IrError(format!("output {name}")))?;
        out.outputs.push((name.clone(), nv));
    }
    Ok(out)
}

/// `concat(parts)` along `axis`, made once.
fn concat(
    out: &mut Graph,
    made: &mut HashMap<(usize, Vec<ValueId>), ValueId>,
    axis: usize,
    parts: Vec<ValueId>,
) -> Result<ValueId, IrError> {
    if let Some(v) = made.get(&(axis, parts.clone())) {
        return Ok(*v);
    }
    let v = out.push(Op::Concat { axis }, &parts, None)?;
    made.insert((axis, parts), v);
    Ok(v)
}

/// The sequence, step axis and step of a product's left operand when it is one step of a
/// sequence, `reshape(slice(x, axis, t..t+1))` as a matrix with the sequence's last axis, and
/// the product's right operand a matrix.
fn step_product(g: &Graph, node: &Node) -> Option<(ValueId, usize, i64, ValueId)> {
    if node.op != Op::MatMul {
        return None;
    }
    let (l, r) = (*node.args.first()?, *node.args.get(1)?);
    let ln = g.nodes.get(l.index())?;
    let s = *ln.args.first()?;
    let sn = g.nodes.get(s.index())?;
    let Op::Slice { axis, start, end } = sn.op else { return None };
    let x = *sn.args.first()?;
    let xt = g.ty(x)?;
    let rt = g.ty(r)?;
    let d = xt.shape.last()?;
    let is_step = ln.op == Op::Reshape
        && end == start + 1
        && axis + 1 < xt.rank()
        && ln.ty.rank() == 2
        && ln.ty.shape.get(1) == Some(d)
        && rt.rank() == 2
        && rt.shape.first() == Some(d);
    is_step.then_some((x, axis, start, r))
}

/// Rewrites the products of at least half the steps of one sequence with one matrix into
/// slices of a single product over the whole sequence. The old nodes are left for `dead_code`.
fn hoist_step_products(g: &Graph) -> Result<Graph, IrError> {
    let mut groups: HashMap<(ValueId, usize, ValueId), usize> = HashMap::new();
    for node in &g.nodes {
        if let Some((x, axis, _, r)) = step_product(g, node) {
            *groups.entry((x, axis, r)).or_default() += 1;
        }
    }
    let worth = |key: &(ValueId, usize, ValueId), count: usize| {
        let steps = g.ty(key.0).and_then(|t| t.shape.get(key.1)).and_then(Dim::as_constant);
        count >= 2 && steps.is_some_and(|t| 2 * count as i64 >= t)
    };
    let mut out =
        Graph { nodes: Vec::new(), inputs: g.inputs.clone(), params: g.params.clone(), outputs: Vec::new() };
    let mut map: Vec<ValueId> = Vec::with_capacity(g.nodes.len());
    // The whole-sequence product of each group, once made: `[..., T, N]`.
    let mut whole: HashMap<(ValueId, usize, ValueId), ValueId> = HashMap::new();
    for node in &g.nodes {
        let m = |v: &ValueId| {
            map.get(v.index()).copied().ok_or_else(|| IrError("operand before definition".into()))
        };
        let step = step_product(g, node).filter(|(x, axis, _, r)| {
            let key = (*x, *axis, *r);
            groups.get(&key).is_some_and(|c| worth(&key, *c))
        });
        let v = match step {
            Some((x, axis, t, r)) => {
                let key = (x, axis, r);
                let p = match whole.get(&key) {
                    Some(p) => *p,
                    None => {
                        let xt = g.ty(x).cloned().ok_or_else(|| IrError("no type".into()))?;
                        let n =
                            node.ty.shape.get(1).cloned().ok_or_else(|| IrError("product shape".into()))?;
                        let (lead, d) = xt.shape.split_at(xt.rank() - 1);
                        let rows = lead
                            .iter()
                            .try_fold(Dim::constant(1), |p, x| p.mul(x))
                            .map_err(|_| IrError("a sequence's size overflows".into()))?;
                        let mut flat_shape = vec![rows];
                        flat_shape.extend(d.iter().cloned());
                        let flat =
                            out.push(Op::Reshape, &[m(&x)?], Some(TensorTy::new(xt.dtype, flat_shape)))?;
                        let prod = out.push(Op::MatMul, &[flat, m(&r)?], None)?;
                        let mut shape = lead.to_vec();
                        shape.push(n);
                        let p = out.push(Op::Reshape, &[prod], Some(TensorTy::new(node.ty.dtype, shape)))?;
                        whole.insert(key, p);
                        p
                    }
                };
                let one = out.push(Op::Slice { axis, start: t, end: t + 1 }, &[p], None)?;
                out.push(Op::Reshape, &[one], Some(node.ty.clone()))?
            }
            None => copy_node(&mut out, node, &map)?,
        };
        map.push(v);
    }
    with_outputs(out, g, &map)
}

/// Drops nodes no output depends on (keeping parameters and inputs, whose slots are the ABI).
fn dead_code(g: Graph) -> Graph {
    let n = g.nodes.len();
    let mut live = vec![false; n];
    for (_, v) in &g.outputs {
        if let Some(l) = live.get_mut(v.index()) {
            *l = true;
        }
    }
    for i in (0..n).rev() {
        let keep = live.get(i).copied().unwrap_or(false)
            || matches!(g.nodes.get(i).map(|x| &x.op), Some(Op::Input(_) | Op::Param(_)));
        if keep {
            if let Some(l) = live.get_mut(i) {
                *l = true;
            }
            if let Some(node) = g.nodes.get(i) {
                for a in &node.args {
                    if let Some(l) = live.get_mut(a.index()) {
                        *l = true;
                    }
                }
            }
        }
    }
    let mut remap = vec![None; n];
    let mut out = Graph { nodes: Vec::new(), inputs: g.inputs, params: g.params, outputs: Vec::new() };
    for (i, node) in g.nodes.into_iter().enumerate() {
        if !live.get(i).copied().unwrap_or(false) {
            continue;
        }
        let args = node.args.iter().filter_map(|a| remap.get(a.index()).copied().flatten()).collect();
        out.nodes.push(Node { op: node.op, args, ty: node.ty });
        if let Some(r) = remap.get_mut(i) {
            *r = Some(ValueId((out.nodes.len() - 1) as u32));
        }
    }
    out.outputs = g
        .outputs
        .iter()
        .filter_map(|(name, v)| remap.get(v.index()).copied().flatten().map(|nv| (name.clone(), nv)))
        .collect();
    out
}
