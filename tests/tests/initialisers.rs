//! The initialisers of std::init against their definitions (Flux.jl's formulas on PyTorch's
//! layouts, §7, §12.10–12.12), measured on large draws: uniform bounds and spread, normal
//! standard deviations, orthogonality with its gain, truncated-normal bounds and mean.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use fluxc_core::interp::Array;
use fluxc_core::ir::TensorTy;
use fluxc_core::lower::{Io, ParamSpec};
use fluxc_core::pipeline::Outcome;
use fluxc_syntax::SourceMap;

/// An `Io` that keeps what the script prints.
#[derive(Default)]
struct Capture(Vec<String>);

impl Io for Capture {
    fn print(&mut self, line: &str) {
        self.0.push(line.to_owned());
    }
    fn load(&mut self, _: &str, _: &TensorTy) -> Result<Array, String> {
        Err("no files".into())
    }
    fn save(&mut self, _: &str, _: &Array, _: &TensorTy) -> Result<(), String> {
        Err("no files".into())
    }
    fn read_text(&mut self, _: &str) -> Result<String, String> {
        Err("no files".into())
    }
    fn write_text(&mut self, _: &str, _: &str) -> Result<(), String> {
        Err("no files".into())
    }
    fn now(&mut self) -> f64 {
        0.0
    }
    fn env(&mut self, _: &str) -> String {
        String::new()
    }
    fn load_weights(&mut self, _: &str, _: &[ParamSpec]) -> Result<Vec<Array>, String> {
        Err("no files".into())
    }
}

/// Runs a script; each printed line as numbers.
fn run(src: &str) -> Vec<Vec<f64>> {
    let mut sources = SourceMap::new();
    let id = sources.add("init.flx", src);
    let mut io = Capture::default();
    match fluxc_core::pipeline::run(&mut sources, id, &mut fluxc_core::NoFiles, &mut io) {
        Outcome::Done(()) => {}
        Outcome::Rejected(d) => panic!("{:?}", d.iter().map(|d| d.message.clone()).collect::<Vec<_>>()),
        Outcome::Failed(e) => panic!("{}", e.message),
    }
    io.0.iter()
        .map(|l| {
            l.split([' ', '[', ']', ',']).filter(|t| !t.is_empty()).map(|t| t.parse().unwrap()).collect()
        })
        .collect()
}

fn close(what: &str, got: f64, want: f64, rel: f64) {
    assert!((got - want).abs() <= rel * want.abs(), "{what}: {got}, expected {want} (±{:.0}%)", rel * 100.0);
}

#[test]
fn initialisers_follow_their_definitions() {
    // A conv-shaped weight [64, 32, 3, 3]: fan_in = 32·9 = 288, fan_out = 64·9 = 576.
    let (fan_in, fan_out) = (288.0f64, 576.0f64);
    let lines = run("\
let a = glorot_uniform[64, 32, 3, 3]()
print(max(a), min(a), mean(a), mean(a * a))
let b = glorot_normal[64, 32, 3, 3]()
print(mean(b), mean(b * b))
let c = kaiming_uniform[64, 32, 3, 3]()
print(max(c), min(c), mean(c * c))
let d = kaiming_normal[64, 32, 3, 3]()
print(mean(d), mean(d * d))
let e = glorot_uniform[64, 32, 3, 3](gain = 0.5)
print(max(e))
let t = truncated_normal[20000](mean = 1.0, std = 2.0, lo = -1.0, hi = 2.0)
print(max(t), min(t), mean(t))
let q = orthogonal[6, 10](gain = 2.0)
print(q @ transpose(q, perm = (1, 0)))
print(zeros[3]() + ones[3]())
");
    let n: f64 = 64.0 * 32.0 * 9.0;
    // glorot_uniform: U(-b, b), b = sqrt(6 / (fan_in + fan_out)); variance b²/3.
    let b = (6.0 / (fan_in + fan_out)).sqrt();
    let [mx, mn, mean, sq] = lines[0][..] else { panic!() };
    assert!(
        mx <= b && mn >= -b && mx > 0.99 * b && mn < -0.99 * b,
        "glorot_uniform range {mn}..{mx}, bound {b}"
    );
    assert!(mean.abs() < 4.0 * b / (3.0 * n).sqrt(), "glorot_uniform mean {mean}");
    close("glorot_uniform variance", sq, b * b / 3.0, 0.03);
    // glorot_normal: std = sqrt(2 / (fan_in + fan_out)).
    let std = (2.0 / (fan_in + fan_out)).sqrt();
    assert!(lines[1][0].abs() < 4.0 * std / n.sqrt(), "glorot_normal mean");
    close("glorot_normal variance", lines[1][1], std * std, 0.03);
    // kaiming_uniform: b = sqrt(2) · sqrt(3 / fan_in).
    let kb = 2f64.sqrt() * (3.0 / fan_in).sqrt();
    assert!(lines[2][0] <= kb && lines[2][1] >= -kb && lines[2][0] > 0.99 * kb, "kaiming_uniform range");
    close("kaiming_uniform variance", lines[2][2], kb * kb / 3.0, 0.03);
    // kaiming_normal: std = sqrt(2) / sqrt(fan_in).
    let ks = 2f64.sqrt() / fan_in.sqrt();
    close("kaiming_normal variance", lines[3][1], ks * ks, 0.03);
    // The gain scales the bound.
    assert!(lines[4][0] <= 0.5 * b && lines[4][0] > 0.49 * b, "gain 0.5");
    // truncated_normal(1, 2) on [-1, 2]: inside the bounds, with the truncated mean
    // μ + σ (φ(α) − φ(β)) / (Φ(β) − Φ(α)), α = −1, β = 0.5.
    let [tmax, tmin, tmean] = lines[5][..] else { panic!() };
    assert!(tmax <= 2.0 && tmin >= -1.0, "truncated_normal range {tmin}..{tmax}");
    let phi = |z: f64| (-z * z / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let cdf = |z: f64| 0.5 * (1.0 + fluxc_core::interp::erf(z / 2f64.sqrt()));
    let want = 1.0 + 2.0 * (phi(-1.0) - phi(0.5)) / (cdf(0.5) - cdf(-1.0));
    close("truncated_normal mean", tmean, want, 0.02);
    // orthogonal[6, 10](gain = 2): the rows are orthogonal with norm 2, so q qᵀ = 4 I.
    for (k, v) in lines[6].iter().enumerate() {
        let want = if k / 6 == k % 6 { 4.0 } else { 0.0 };
        assert!((v - want).abs() < 1e-5, "orthogonal: (q qᵀ)[{}, {}] = {v}", k / 6, k % 6);
    }
    assert_eq!(lines[7], vec![1.0, 1.0, 1.0]);
}
