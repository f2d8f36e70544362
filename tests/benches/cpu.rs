//! Benchmark (not a timed test) of the CPU path: compile times and medians of GEMM, an MLP
//! 784-256-256-10 forward and Adam train step. Prints one line per figure:
//! `fluxc NAME median_us=… (runs=…)`, which `tests/reference/bench_compare.py` reads to print
//! ratios against PyTorch and JAX on the same machine.
//! Run with `cargo bench -p fluxc-tests --bench cpu`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Instant;

use fluxc_core::interp::{Array, Run, eval};
use fluxc_core::ir::Graph;

const MLP: &str = "
model Mlp: f32[B, 784] -> f32[B, 10] = Chain(Dense(784 => 256, relu), Dense(256 => 256, relu), Dense(256 => 10))
data digits = npy(x = \"x.npy\", y = \"y.npy\")
train Mlp on digits {
    loss = logitcrossentropy
    optimizer = Adam(lr = 0.001)
}
";

const LENET: &str = "
model LeNet: f32[B, 1, 28, 28] -> f32[B, 10] = Chain(
    Conv2d((5, 5), 1 => 6, relu, Pad = 2), MaxPool2d((2, 2)),
    Conv2d((5, 5), 6 => 16, relu), MaxPool2d((2, 2)),
    Flatten, Dense(400 => 120, relu), Dense(120 => 84, relu), Dense(84 => 10))
data d = npy(x = \"x.npy\", y = \"y.npy\")
train LeNet on d {
    loss = logitcrossentropy
    optimizer = Adam(lr = 0.001)
}
";

const LSTM: &str = "
model Seq: f32[B, 50, 32] -> f32[B, 50, 128] = LSTM(32 => 128)
data d = npy(x = \"x.npy\", y = \"y.npy\")
train Seq on d {
    loss = mse
    optimizer = Descent(lr = 0.01)
}
";

/// (train step, init graph) of a source's first train block.
fn train_graphs(src: &str) -> (Graph, Graph) {
    fluxc_tests::source_train_step(src)
}

/// (forward graph, train step, init graph) of `MLP`.
fn graphs() -> (Graph, Graph, Graph) {
    let all = fluxc_tests::source_graphs(MLP);
    let find = |name: &str| all.iter().find(|g| g.0 == name).unwrap();
    let (forward, (_, step, init)) = (find("Mlp training=false").1.clone(), find("train Mlp").clone());
    (forward, step, init)
}

fn median_us(mut f: impl FnMut(), runs: usize) -> f64 {
    f(); // warm up
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// `FLUXC_BENCH=mlp_adam,lenet` runs only the workloads whose names contain one of the words
/// (for profiling one at a time); unset, everything runs.
fn wanted(name: &str) -> bool {
    match std::env::var("FLUXC_BENCH") {
        Ok(v) if !v.is_empty() => v.split(',').any(|w| name.contains(w)),
        _ => true,
    }
}

fn report(name: &str, us: f64, runs: usize) {
    println!("fluxc {name} median_us={us:.1} (runs={runs})");
}

/// The median time of a train step at `batch` on constant inputs, from the initial weights.
#[allow(clippy::too_many_arguments)]
fn step_median(
    step: &Graph,
    init: &Graph,
    kir: &fluxc_core::kir::Kir,
    bin: &fluxc_cpu::Compiled,
    batch: usize,
    x_len: usize,
    y_len: usize,
    runs: usize,
) -> f64 {
    let run0 = Run { batch: 1, seed: 0, step: 0 };
    let init_vals = eval(init, &[], &[], &run0).unwrap();
    let by: std::collections::HashMap<&str, Array> =
        init.outputs.iter().map(|(n, v)| (n.as_str(), init_vals[v.index()].clone())).collect();
    let mut state = fluxc_cpu::State {
        params: step
            .params
            .iter()
            .map(|p| by[p.name.as_str()].data.iter().map(|v| *v as f32).collect())
            .collect(),
        ..Default::default()
    };
    let mut inputs = vec![vec![0.5f32; batch * x_len], vec![0.1f32; batch * y_len], vec![1.0], vec![1.0]];
    for slot in step.inputs.iter().skip(4) {
        inputs.push(vec![0.0; slot.ty.shape.iter().map(|d| d.as_constant().unwrap() as usize).product()]);
    }
    let r = Run { batch: batch as i64, seed: 0, step: 1 };
    let views: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
    median_us(
        || {
            let _ = fluxc_cpu::step(bin, kir, &mut state, &views, &r).unwrap();
        },
        runs,
    )
}

/// The e-graph optimizer on each benchmark train step: graph sizes and work before and after,
/// optimization and compile time, and the step's median with and without it.
fn optimizer_figures() {
    for (name, src, batch, x_len, y_len) in [
        ("mlp_adam_b128", MLP, 128usize, 784, 10),
        ("lenet5_adam_b64", LENET, 64, 28 * 28, 10),
        ("lstm_b32", LSTM, 32, 50 * 32, 50 * 128),
    ] {
        if !wanted(&format!("opt_{name}")) {
            continue;
        }
        let (step, init) = train_graphs(src);
        // The fastest of three, for the optimizer and the whole compile alike (the first call
        // of each also pays for warming the allocator).
        let (mut optimize_ms, mut compile_ms) = (f64::MAX, f64::MAX);
        let mut optimized = None;
        let mut compiled = None;
        for _ in 0..3 {
            let s = Instant::now();
            optimized = Some(fluxc_core::opt::optimize(&step));
            optimize_ms = optimize_ms.min(s.elapsed().as_secs_f64() * 1e3);
            let s = Instant::now();
            let kir = fluxc_core::kir::schedule(&step).unwrap();
            let bin = fluxc_cpu::compile(&kir).unwrap();
            compile_ms = compile_ms.min(s.elapsed().as_secs_f64() * 1e3);
            compiled = Some((kir, bin));
        }
        let (o, (kir, bin)) = (optimized.unwrap(), compiled.unwrap());
        let r = &o.report;
        let plain = fluxc_core::kir::schedule_unoptimized(&step).unwrap();
        let plain_bin = fluxc_cpu::compile(&plain).unwrap();
        let runs = if name.starts_with("lstm") { 10 } else { 30 };
        // Alternating rounds, so that a noisy neighbour slows both alike; the fastest round's
        // median of each (this machine's neighbours steal a core now and then).
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for _ in 0..9 {
            without.push(step_median(&step, &init, &plain, &plain_bin, batch, x_len, y_len, runs));
            with.push(step_median(&step, &init, &kir, &bin, batch, x_len, y_len, runs));
        }
        without.sort_by(f64::total_cmp);
        with.sort_by(f64::total_cmp);
        let (without, with) = (without[0], with[0]);
        println!(
            "fluxc opt_{name} nodes={}->{} flops={}->{} bytes={}->{} optimize_ms={:.1} compile_ms={compile_ms:.1} \
             ({:.0}%) step_us_without={without:.1} step_us_with={with:.1} speedup={:.3} stop=\"{}\"",
            r.nodes_before,
            r.nodes_after,
            r.before.flops,
            r.after.flops,
            r.before.bytes,
            r.after.bytes,
            optimize_ms,
            100.0 * optimize_ms / compile_ms.max(1e-9),
            without / with,
            r.stop
        );
    }
}

fn main() {
    optimizer_figures();
    // Compile times: source to scheduled, compiled kernels.
    let start = Instant::now();
    let (fwd, step, init) = graphs();
    let lowered = start.elapsed().as_secs_f64() * 1e6;
    let s = Instant::now();
    let fwd_kir = fluxc_core::kir::schedule(&fwd).unwrap();
    let fwd_bin = fluxc_cpu::compile(&fwd_kir).unwrap();
    let fwd_compile = s.elapsed().as_secs_f64() * 1e6;
    let s = Instant::now();
    let step_kir = fluxc_core::kir::schedule(&step).unwrap();
    let step_bin = fluxc_cpu::compile(&step_kir).unwrap();
    let step_compile = s.elapsed().as_secs_f64() * 1e6;
    report("mlp_check_and_lower", lowered, 1);
    report("mlp_forward_compile", fwd_compile, 1);
    report("mlp_train_step_compile", step_compile, 1);

    let run = Run { batch: 1, seed: 0, step: 0 };
    let init_vals = eval(&init, &[], &[], &run).unwrap();
    let by_name: std::collections::HashMap<&str, Array> =
        init.outputs.iter().map(|(n, v)| (n.as_str(), init_vals[v.index()].clone())).collect();
    let to_f32 = |a: &Array| a.data.iter().map(|v| *v as f32).collect::<Vec<f32>>();
    let params = |g: &Graph| g.params.iter().map(|p| to_f32(&by_name[p.name.as_str()])).collect::<Vec<_>>();

    for batch in [1usize, 256] {
        if !wanted(&format!("mlp_forward_b{batch}")) {
            continue;
        }
        let mut state = fluxc_cpu::State { params: params(&fwd), ..Default::default() };
        let x = vec![0.5f32; batch * 784];
        let r = Run { batch: batch as i64, seed: 0, step: 0 };
        let runs = if batch == 1 { 2000 } else { 200 };
        let us = median_us(
            || {
                let _ = fluxc_cpu::step(&fwd_bin, &fwd_kir, &mut state, &[&x], &r).unwrap();
            },
            runs,
        );
        report(&format!("mlp_forward_b{batch}"), us, runs);
    }
    for batch in [1usize, 32, 128] {
        if !wanted(&format!("mlp_adam_train_step_b{batch}")) {
            continue;
        }
        let mut state = fluxc_cpu::State { params: params(&step), ..Default::default() };
        let r = Run { batch: batch as i64, seed: 0, step: 1 };
        let mut inputs = vec![vec![0.5f32; batch * 784], vec![0.1f32; batch * 10], vec![1.0], vec![1.0]];
        for slot in step.inputs.iter().skip(4) {
            inputs.push(vec![0.0; slot.ty.shape.iter().map(|d| d.as_constant().unwrap() as usize).product()]);
        }
        let runs = if batch == 1 { 500 } else { 100 };
        let views: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        let us = median_us(
            || {
                let _ = fluxc_cpu::step(&step_bin, &step_kir, &mut state, &views, &r).unwrap();
            },
            runs,
        );
        report(&format!("mlp_adam_train_step_b{batch}"), us, runs);
    }
    // LeNet-5 (Adam step, batch 64) and an LSTM(32 => 128) over T = 50 (forward + backward, batch 32).
    for (name, src, batch, x_len, y_len) in [
        ("lenet5_adam_train_step_b64", LENET, 64usize, 28 * 28, 10),
        ("lstm_train_step_b32", LSTM, 32, 50 * 32, 50 * 128),
    ] {
        if !wanted(name) {
            continue;
        }
        let s = Instant::now();
        let (step, init) = train_graphs(src);
        let kir = fluxc_core::kir::schedule(&step).unwrap();
        let bin = fluxc_cpu::compile(&kir).unwrap();
        report(&format!("{name}_compile"), s.elapsed().as_secs_f64() * 1e6, 1);
        let us = step_median(&step, &init, &kir, &bin, batch, x_len, y_len, 20);
        report(name, us, 20);
    }
    // GEMM through a one-op graph.
    for n in [256i64, 512, 1024] {
        if !wanted(&format!("gemm_{n}")) {
            continue;
        }
        let mut g = Graph::default();
        let a = g.input("a", fluxc_core::ir::TensorTy::f32(&[n, n])).unwrap();
        let b = g.input("b", fluxc_core::ir::TensorTy::f32(&[n, n])).unwrap();
        let c = g.push(fluxc_core::ir::Op::MatMul, &[a, b], None).unwrap();
        g.outputs.push(("c".into(), c));
        let kir = fluxc_core::kir::schedule(&g).unwrap();
        let bin = fluxc_cpu::compile(&kir).unwrap();
        let mut state = fluxc_cpu::State::default();
        let m = vec![0.5f32; (n * n) as usize];
        let r = Run { batch: 1, seed: 0, step: 0 };
        let runs = if n == 1024 { 10 } else { 50 };
        let us = median_us(
            || {
                let _ = fluxc_cpu::step(&bin, &kir, &mut state, &[&m, &m], &r).unwrap();
            },
            runs,
        );
        let gflops = 2.0 * (n * n * n) as f64 / us / 1e3;
        println!("fluxc gemm_{n} median_us={us:.1} (runs={runs}) gflops={gflops:.1}");
    }
}
