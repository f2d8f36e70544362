//! The IR verifier: every operand defined before use, every node's type what [`infer`] gives,
//! sources consistent with the graph's slots, the batch `B` the only variable, outputs defined.

use super::{Graph, IrError, Op, infer};

pub fn verify(g: &Graph) -> Result<(), IrError> {
    for (i, n) in g.nodes.iter().enumerate() {
        let at = |msg: String| IrError(format!("%{i} ({}): {msg}", n.op.name()));
        let mut tys = Vec::with_capacity(n.args.len());
        for a in &n.args {
            if a.index() >= i {
                return Err(at(format!("operand {a} is not defined before use")));
            }
            tys.push(&g.nodes.get(a.index()).ok_or_else(|| at(format!("operand {a} does not exist")))?.ty);
        }
        let want = infer(&n.op, &tys, Some(&n.ty)).map_err(|e| at(e.0))?;
        if want != n.ty {
            return Err(at(format!("declared {}, but the operands give {want}", n.ty)));
        }
        for d in &n.ty.shape {
            if d.variables().iter().any(|v| v != "B") {
                return Err(at(format!("dimension {d} mentions a variable other than the batch `B`")));
            }
        }
        let slot = match &n.op {
            Op::Input(k) => Some(g.inputs.get(*k)),
            Op::Param(k) => Some(g.params.get(*k)),
            _ => None,
        };
        if let Some(slot) = slot {
            match slot {
                Some(s) if s.ty == n.ty => {}
                Some(s) => return Err(at(format!("slot type {} differs from the node's {}", s.ty, n.ty))),
                None => return Err(at("no such slot".into())),
            }
        }
    }
    for (name, v) in &g.outputs {
        if v.index() >= g.nodes.len() {
            return Err(IrError(format!("output {name} = {v} does not exist")));
        }
    }
    Ok(())
}
