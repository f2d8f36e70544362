//! The e-graph optimizer (egg): a graph becomes an e-graph (sharing equal subterms, so common
//! subexpressions of the forward and backward graphs become one), the rules of `rules.rs` and
//! the constant folding of the analysis saturate it within fixed iteration and node limits (no
//! time limit, so every machine stops at the same place), and the cheapest equivalent graph by
//! the cost model of `cost.rs` is extracted. Dead code does not survive extraction.

mod cost;
mod lang;
mod rules;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::time::Duration;

use egg::{Extractor, Id, Runner, StopReason};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::ir::{Graph, IrError, Op, ValueId};
pub use cost::{Work, work};
use lang::{EG, ENode, Typed};

/// Saturation stops after this many iterations…
pub const ITER_LIMIT: usize = 8;
/// …or when the e-graph holds more e-nodes than this plus four per graph node.
pub const NODE_BASE: usize = 20_000;

/// What one optimization did, as `fluxc build --emit opt-ir` prints it: the same on every
/// machine (the core reads no clock; the bench times the optimizer from outside).
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub stop: String,
    pub iterations: usize,
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    /// (rule, times it changed the e-graph), in rule order, rules that fired only.
    pub fired: Vec<(String, usize)>,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub before: Work,
    pub after: Work,
}

impl Report {
    /// The deterministic part, one `# ` comment line each.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# optimizer: stopped by {} after {} iterations ({} e-nodes in {} e-classes)",
            self.stop, self.iterations, self.egraph_nodes, self.egraph_classes
        );
        let fired: Vec<String> = self.fired.iter().map(|(r, n)| format!("{r} ×{n}")).collect();
        let fired = if fired.is_empty() { "none".to_owned() } else { fired.join(", ") };
        let _ = writeln!(s, "# rules fired: {fired}");
        let _ = writeln!(
            s,
            "# nodes {} -> {}; at batch 64: flops {} -> {}, bytes {} -> {}",
            self.nodes_before,
            self.nodes_after,
            self.before.flops,
            self.after.flops,
            self.before.bytes,
            self.after.bytes
        );
        s
    }
}

/// An optimized graph and what it took.
pub struct Optimized {
    pub graph: Graph,
    pub report: Report,
}

fn stop_text(s: Option<&StopReason>) -> String {
    match s {
        Some(StopReason::Saturated) => "saturation".into(),
        Some(StopReason::IterationLimit(n)) => format!("the iteration limit ({n})"),
        Some(StopReason::NodeLimit(n)) => format!("the node limit ({n})"),
        Some(StopReason::TimeLimit(_)) => "the time limit".into(),
        Some(StopReason::Other(o)) => o.clone(),
        None => "nothing".into(),
    }
}

/// The graph as an e-graph, and the e-class of every node.
fn to_egraph(g: &Graph) -> (EG, Vec<Id>) {
    let mut egraph = EG::default();
    let mut ids: Vec<Id> = Vec::with_capacity(g.nodes.len());
    for n in &g.nodes {
        let args: Vec<Id> = n.args.iter().filter_map(|a| ids.get(a.index()).copied()).collect();
        egraph.analysis.hint = Some(n.ty.clone());
        ids.push(egraph.add(ENode::new(n.op.clone(), Some(n.ty.clone()), args)));
        egraph.analysis.hint = None;
    }
    egraph.rebuild();
    (egraph, ids)
}

/// The cheapest graph the e-graph holds for the outputs. Nodes keep the original's order as
/// far as they can — a class sits where its first original node sat, a new class right after
/// its last operand — because the scheduler fuses and plans memory in program order: the
/// original's inputs and parameters first (used or not), then each needed class once.
fn extract(g: &Graph, egraph: &EG, ids: &[Id], roots: &[Id]) -> Result<Graph, IrError> {
    use std::collections::BTreeSet;
    let extractor = Extractor::new(egraph, cost::TreeCost::new(egraph));
    // Where each class first appeared in the original.
    let mut first: FxHashMap<Id, usize> = FxHashMap::default();
    for (i, id) in ids.iter().enumerate() {
        first.entry(egraph.find(*id)).or_insert(i);
    }
    // The needed classes and their chosen nodes (iteratively: graphs are thousands deep).
    let mut chosen: FxHashMap<Id, &ENode> = FxHashMap::default();
    let mut stack: Vec<Id> = roots.iter().map(|r| egraph.find(*r)).collect();
    while let Some(id) = stack.pop() {
        if chosen.contains_key(&id) {
            continue;
        }
        let best = extractor.find_best_node(id);
        chosen.insert(id, best);
        stack.extend(best.args.iter().map(|a| egraph.find(*a)).filter(|a| !chosen.contains_key(a)));
    }
    // Topological order by position: a ready class with the smallest key goes next; a new class
    // gets its operands' largest key (it is ready only after them anyway).
    let mut users: FxHashMap<Id, Vec<Id>> = FxHashMap::default();
    let mut waiting: FxHashMap<Id, usize> = FxHashMap::default();
    for (id, n) in &chosen {
        let operands: FxHashSet<Id> = n.args.iter().map(|a| egraph.find(*a)).collect();
        waiting.insert(*id, operands.len());
        for a in operands {
            users.entry(a).or_default().push(*id);
        }
    }
    let mut key: FxHashMap<Id, usize> = FxHashMap::default();
    let mut ready: BTreeSet<(usize, Id)> = BTreeSet::new();
    for (id, w) in &waiting {
        if *w == 0 {
            let k = first.get(id).copied().unwrap_or(0);
            key.insert(*id, k);
            ready.insert((k, *id));
        }
    }
    let mut out =
        Graph { nodes: Vec::new(), inputs: g.inputs.clone(), params: g.params.clone(), outputs: Vec::new() };
    let mut done: FxHashMap<Id, ValueId> = FxHashMap::default();
    for (n, id) in g.nodes.iter().zip(ids) {
        if matches!(n.op, Op::Input(_) | Op::Param(_)) {
            let v = out.push(n.op.clone(), &[], Some(n.ty.clone()))?;
            done.entry(egraph.find(*id)).or_insert(v);
        }
    }
    while let Some((k, id)) = ready.pop_first() {
        let best = chosen.get(&id).ok_or_else(|| IrError("extraction lost a class".into()))?;
        if !done.contains_key(&id) {
            let args: Vec<ValueId> = best
                .args
                .iter()
                .map(|a| {
                    done.get(&egraph.find(*a)).copied().ok_or_else(|| IrError("extraction order".into()))
                })
                .collect::<Result<_, _>>()?;
            let v = out.push(best.key.op.clone(), &args, best.key.declared.clone())?;
            done.insert(id, v);
        }
        for u in users.get(&id).map(Vec::as_slice).unwrap_or_default() {
            let w = waiting.get_mut(u).ok_or_else(|| IrError("extraction users".into()))?;
            *w -= 1;
            let ku = key.entry(*u).or_insert(0);
            *ku = (*ku).max(k);
            if *w == 0 {
                let kf = first.get(u).copied().unwrap_or(*ku).max(*ku);
                ready.insert((kf, *u));
            }
        }
    }
    for ((name, _), root) in g.outputs.iter().zip(roots) {
        let v =
            done.get(&egraph.find(*root)).copied().ok_or_else(|| IrError(format!("output {name} lost")))?;
        out.outputs.push((name.clone(), v));
    }
    crate::ir::verify(&out)?;
    Ok(out)
}

/// Optimizes `g`: an equivalent graph, never more costly by the model, and the report. On any
/// internal failure the graph comes back unchanged, with the reason as the stop reason.
pub fn optimize(g: &Graph) -> Optimized {
    let before = work(g);
    let mut report = Report { nodes_before: g.nodes.len(), before, ..Report::default() };
    let unchanged = |mut report: Report, why: String| {
        report.stop = why;
        report.nodes_after = g.nodes.len();
        report.after = report.before;
        Optimized { graph: g.clone(), report }
    };
    let rules = match rules::all() {
        Ok(r) => r,
        Err(e) => return unchanged(report, format!("a broken rule: {e}")),
    };
    let (egraph, ids) = to_egraph(g);
    let roots: Vec<Id> = g.outputs.iter().filter_map(|(_, v)| ids.get(v.index()).copied()).collect();
    if roots.len() != g.outputs.len() {
        return unchanged(report, "an output outside the graph".into());
    }
    let runner = Runner::<ENode, Typed>::new(Typed::default())
        .with_egraph(egraph)
        .with_iter_limit(ITER_LIMIT)
        .with_node_limit(NODE_BASE + 4 * g.nodes.len())
        .with_time_limit(Duration::from_secs(u64::from(u32::MAX)))
        .with_scheduler(egg::SimpleScheduler)
        .run(&rules);
    report.stop = stop_text(runner.stop_reason.as_ref());
    report.iterations = runner.iterations.len();
    report.egraph_nodes = runner.egraph.total_size();
    report.egraph_classes = runner.egraph.number_of_classes();
    for name in rules::names() {
        let n: usize =
            runner.iterations.iter().filter_map(|it| it.applied.get(&egg::Symbol::from(name))).sum();
        if n > 0 {
            report.fired.push((name.to_owned(), n));
        }
    }
    let graph = match extract(g, &runner.egraph, &ids, &roots) {
        Ok(x) => x,
        Err(e) => return unchanged(report, format!("extraction failed: {e}")),
    };
    let after = work(&graph);
    // The cost model is a heuristic over trees; a graph that came out costlier as a DAG is not
    // taken.
    if after.total() > before.total() {
        let why = format!("{}, but the result cost more", report.stop);
        return unchanged(report, why);
    }
    report.nodes_after = graph.nodes.len();
    report.after = after;
    Optimized { graph, report }
}
