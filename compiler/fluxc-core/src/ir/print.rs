//! The stable text form of a graph (`fluxc build --emit ir`, snapshots):
//!
//! ```text
//! input 0 x: f32[B, 4]
//! param 0 weight: f32[2, 4]
//! %0 = input 0 : f32[B, 4]
//! %3 = matmul %0, %2 : f32[B, 2]
//! output y = %3
//! ```

use std::fmt::Write as _;

use super::Graph;

pub fn print_graph(g: &Graph) -> String {
    let mut out = String::new();
    for (i, s) in g.inputs.iter().enumerate() {
        let _ = writeln!(out, "input {i} {}: {}", s.name, s.ty);
    }
    for (i, s) in g.params.iter().enumerate() {
        let kind = if s.trainable { "param" } else { "state" };
        let _ = writeln!(out, "{kind} {i} {}: {}", s.name, s.ty);
    }
    for (i, n) in g.nodes.iter().enumerate() {
        let args: Vec<String> = n.args.iter().map(ToString::to_string).collect();
        let sep = if args.is_empty() { "" } else { " " };
        let _ = writeln!(out, "%{i} = {}{sep}{} : {}", n.op.name(), args.join(", "), n.ty);
    }
    for (name, v) in &g.outputs {
        let _ = writeln!(out, "output {name} = {v}");
    }
    out
}
