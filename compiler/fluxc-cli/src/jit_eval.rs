//! Scripts on the JIT (`fluxc run`): the nodes a statement added to the script's graph are
//! compiled and run as one program whose inputs are the values computed before and the
//! script's inputs (loaded files, weights). What the JIT cannot take — a parameter slot, a size
//! that is not known — falls back to the reference interpreter, which stays the oracle.

use fluxc_core::interp::{Array, EvalError, Run, concrete};
use fluxc_core::ir::{Graph, Node, Op, ValueId};

/// Appends to `vals` the value of every node of `g` from `vals.len()` on.
pub fn evaluate(g: &Graph, inputs: &[Array], run: &Run, vals: &mut Vec<Array>) -> Result<(), EvalError> {
    if vals.len() >= g.nodes.len() {
        return Ok(());
    }
    match on_jit(g, inputs, run, vals) {
        Some(new) => {
            vals.extend(new);
            Ok(())
        }
        None => fluxc_core::interp::eval_more(g, inputs, &[], run, vals),
    }
}

/// Where an input of the compiled program comes from.
enum Feed {
    /// The value of an earlier node.
    Earlier(usize),
    /// A script input (a loaded file).
    Script(usize),
}

/// The nodes from `vals.len()` on as one program: every node an output, in order.
fn on_jit(g: &Graph, inputs: &[Array], run: &Run, vals: &[Array]) -> Option<Vec<Array>> {
    let start = vals.len();
    let mut sub = Graph::default();
    let mut feeds: Vec<Feed> = Vec::new();
    // Node of `g` → its value in `sub`.
    let mut map: Vec<Option<ValueId>> = vec![None; g.nodes.len()];
    for (i, node) in g.nodes.iter().enumerate().skip(start) {
        let mut args = Vec::with_capacity(node.args.len());
        for a in &node.args {
            let j = a.index();
            let v = match map.get(j).copied().flatten() {
                Some(v) => v,
                None if j < start => {
                    let v = sub.input(&format!("v{j}"), g.ty(*a)?.clone()).ok()?;
                    feeds.push(Feed::Earlier(j));
                    *map.get_mut(j)? = Some(v);
                    v
                }
                None => return None,
            };
            args.push(v);
        }
        let v = match &node.op {
            Op::Input(k) => {
                feeds.push(Feed::Script(*k));
                sub.input(&format!("input{k}"), node.ty.clone()).ok()?
            }
            Op::Param(_) => return None,
            op => {
                sub.nodes.push(Node { op: op.clone(), args, ty: node.ty.clone() });
                ValueId((sub.nodes.len() - 1) as u32)
            }
        };
        *map.get_mut(i)? = Some(v);
        sub.outputs.push((format!("n{i}"), v));
    }
    let kir = fluxc_core::kir::schedule(&sub).ok()?;
    let compiled = fluxc_cpu::compile(&kir).ok()?;
    let data: Vec<Vec<f32>> = feeds
        .iter()
        .map(|f| {
            let a = match f {
                Feed::Earlier(j) => vals.get(*j),
                Feed::Script(k) => inputs.get(*k),
            };
            a.map(|a| a.data.iter().map(|x| *x as f32).collect())
        })
        .collect::<Option<_>>()?;
    let views: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
    let mut state = fluxc_cpu::State::default();
    let outs = fluxc_cpu::step(&compiled, &kir, &mut state, &views, &Run { batch: 1, ..*run }).ok()?;
    let mut result = Vec::with_capacity(outs.len());
    for (node, out) in g.nodes.iter().skip(start).zip(outs) {
        let shape = concrete(&node.ty.shape, 1).ok()?;
        result.push(Array::new(shape, out.iter().map(|v| f64::from(*v)).collect()));
    }
    (result.len() == g.nodes.len() - start).then_some(result)
}
