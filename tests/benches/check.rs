//! Benchmark (not a timed test): how long `fluxc check` takes on a generated 5,000-line file of
//! functions, layers, models and top-level statements. Prints the median of several runs.
//! Run with `cargo bench -p fluxc-tests --bench check`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::fmt::Write as _;
use std::time::Instant;

/// About `lines` lines of varied, valid source.
fn generate(lines: usize) -> String {
    let mut s = String::new();
    let mut i = 0;
    while s.lines().count() < lines {
        let w = 8 + (i % 5) * 8;
        writeln!(s, "/// Block {i}.").unwrap();
        writeln!(s, "fn norm{i}[B, N](x: f32[B, N]) -> f32[B, N] {{").unwrap();
        writeln!(s, "    let m = mean(x, axis = 1)").unwrap();
        writeln!(s, "    let s = sqrt(mean((x - m[:, new]) ^ 2, axis = 1) + 1e-5)").unwrap();
        writeln!(s, "    (x - m[:, new]) / s[:, new]").unwrap();
        writeln!(s, "}}").unwrap();
        writeln!(s, "layer Block{i}[D](act: Activation = relu) {{").unwrap();
        writeln!(s, "    param weight: f32[D, D] = glorot_uniform()").unwrap();
        writeln!(s, "    param bias: f32[D] = zeros()").unwrap();
        writeln!(s, "    inner = Dense(D => D, act)").unwrap();
        writeln!(s, "    forward[B](x: f32[B, D]) -> f32[B, D] {{ norm{i}(inner(x) @ weight.T + bias) }}")
            .unwrap();
        writeln!(s, "}}").unwrap();
        writeln!(s, "model M{i}: f32[B, {w}] -> f32[B, 10] = Chain(Block{i}({w}), Dense({w} => 32, relu), Dense(32 => 10))").unwrap();
        writeln!(s, "let x{i} = norm{i}(randn[4, {w}](seed = {i}))").unwrap();
        writeln!(s, "print(M{i}(x{i})[:, 0 .. 5])").unwrap();
        i += 1;
    }
    s
}

fn main() {
    let text = generate(5000);
    let lines = text.lines().count();
    let mut times = Vec::new();
    for _ in 0..11 {
        let mut sources = fluxc_syntax::SourceMap::new();
        let id = sources.add("bench.flx", text.clone());
        let start = Instant::now();
        let checked = fluxc_core::check(&mut sources, id, &mut fluxc_core::NoFiles);
        times.push(start.elapsed().as_secs_f64() * 1e3);
        assert!(checked.diagnostics.is_empty(), "the generated file must check clean");
    }
    let mut parse_times = Vec::new();
    for _ in 0..11 {
        let start = Instant::now();
        let parsed = fluxc_syntax::parse_file(fluxc_syntax::FileId(0), &text);
        parse_times.push(start.elapsed().as_secs_f64() * 1e3);
        assert!(parsed.diagnostics.is_empty());
    }
    parse_times.sort_by(f64::total_cmp);
    println!("parse alone: median {:.1} ms", parse_times[parse_times.len() / 2]);
    times.sort_by(f64::total_cmp);
    println!(
        "check, generated file of {lines} lines ({} bytes): median {:.1} ms, min {:.1} ms, max {:.1} ms (target < 200 ms)",
        text.len(),
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
