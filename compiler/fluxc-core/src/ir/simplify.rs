//! Peephole simplification before scheduling (the egg optimizer will subsume it): transposes
//! that undo each other vanish, and a transposed matrix product becomes the product of the
//! transposes in reverse order, `(a @ b)ᵀ = bᵀ @ aᵀ`, so that every transpose ends up feeding a
//! product, where the kernels read it through strides instead of copying it.

use std::collections::HashMap;

use super::{Graph, IrError, Node, Op, ValueId};

fn swaps_last_two(perm: &[usize]) -> bool {
    let r = perm.len();
    r >= 2
        && perm
            .iter()
            .enumerate()
            .all(|(i, p)| if i + 2 < r { *p == i } else { *p == if i == r - 1 { r - 2 } else { r - 1 } })
}

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
    Ok(dead_code(b.new))
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
