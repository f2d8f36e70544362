//! KIR → the plan `fluxc_kernels::plan` interprets: every kernel becomes a step whose sizes are
//! `fixed + per_row * B` pairs, and the bindings say where each input comes from and each output
//! goes (in the JIT, the caller's slices; in a built library, the C ABI's arguments, the
//! parameter block and the optimizer state).

use fluxc_core::dims::Dim;
use fluxc_core::ir::{Dist, Op, PoolKind, RandSource, ReduceOp, TensorTy, Window};
use fluxc_core::kir::{BufId, Kernel, Kir, Storage, linear_in_b};
use fluxc_kernels::plan::{MAGIC, VERSION, dest, op, source, storage};

use super::CpuError;

/// Where each graph input comes from, each parameter lies and each output goes.
#[derive(Clone, Debug, Default)]
pub struct Bindings {
    /// `(source, value, dtype)` per graph input (dtype 0 f32, 1 i32).
    pub inputs: Vec<(i64, i64, i64)>,
    /// Element offset of each parameter in the parameter block.
    pub param_offsets: Vec<i64>,
    /// `(dest, value)` per graph output.
    pub outputs: Vec<(i64, i64)>,
}

impl Bindings {
    /// The JIT's: input `k` is the caller's slice `k`, output `k` the result `k`.
    pub fn direct(kir: &Kir) -> Bindings {
        let mut n_inputs = 0;
        let mut n_params = 0;
        for b in &kir.buffers {
            match b.storage {
                Storage::Input(k) => n_inputs = n_inputs.max(k + 1),
                Storage::Param(k) => n_params = n_params.max(k + 1),
                Storage::Slot(_) => {}
            }
        }
        Bindings {
            inputs: (0..n_inputs as i64).map(|k| (source::ARG, k, 0)).collect(),
            param_offsets: vec![0; n_params],
            outputs: (0..kir.outputs.len() as i64).map(|k| (dest::ARG, k)).collect(),
        }
    }
}

fn err(m: impl Into<String>) -> CpuError {
    CpuError(m.into())
}

fn pair(d: &Dim) -> Result<[i64; 2], CpuError> {
    let (f, r) = linear_in_b(d).map_err(|e| err(e.0))?;
    Ok([f, r])
}

fn product(dims: &[Dim]) -> Result<[i64; 2], CpuError> {
    let p = dims.iter().try_fold(Dim::constant(1), |p, d| p.mul(d)).map_err(|_| err("a size overflows"))?;
    pair(&p)
}

/// `[outer, extent, inner]` around `axis` of `shape`.
fn around(shape: &[Dim], axis: usize) -> Result<Vec<i64>, CpuError> {
    let extent = shape.get(axis).ok_or_else(|| err("axis out of range"))?;
    let mut w = Vec::new();
    w.extend(product(shape.get(..axis).unwrap_or_default())?);
    w.extend(pair(extent)?);
    w.extend(product(shape.get(axis + 1..).unwrap_or_default())?);
    Ok(w)
}

/// A 1-D or 2-D spatial extent as two (height 1 for 1-D).
fn two(v: &[Dim]) -> Result<[Dim; 2], CpuError> {
    match v {
        [w] => Ok([Dim::constant(1), w.clone()]),
        [h, w] => Ok([h.clone(), w.clone()]),
        _ => Err(err("only 1-D and 2-D convolutions and pooling have CPU kernels")),
    }
}

fn two_i(v: &[i64], fill: i64) -> Result<[i64; 2], CpuError> {
    match v {
        [w] => Ok([fill, *w]),
        [h, w] => Ok([*h, *w]),
        _ => Err(err("only 1-D and 2-D windows have CPU kernels")),
    }
}

/// A convolution's geometry words: the conv from `x` with `kernel` taps to `out`.
fn geom(x: &[Dim], kernel: &[Dim], out: &[Dim], win: &Window) -> Result<Vec<i64>, CpuError> {
    let (Some(b), Some(cin), Some(cout)) = (x.first(), x.get(1), out.get(1)) else {
        return Err(err("convolution operands of rank below 3"));
    };
    let [h, w] = two(x.get(2..).unwrap_or_default())?;
    let [kh, kw] = two(kernel)?;
    let [oh, ow] = two(out.get(2..).unwrap_or_default())?;
    let mut words = Vec::new();
    for d in [b, cin, cout, &h, &w, &kh, &kw, &oh, &ow] {
        words.extend(pair(d)?);
    }
    words.extend(two_i(&win.stride, 1)?);
    words.extend(two_i(&win.pad, 0)?);
    words.extend(two_i(&win.dilation, 1)?);
    Ok(words)
}

/// Encodes `kir` with `bindings`; returns the plan and the kernel index of each loop (in loop
/// order).
pub fn encode(kir: &Kir, bindings: &Bindings) -> Result<(Vec<i64>, Vec<usize>), CpuError> {
    let mut steps: Vec<Vec<i64>> = Vec::new();
    let mut loops = Vec::new();
    let id = |b: &BufId| i64::from(b.0);
    for (k, kern) in kir.kernels.iter().enumerate() {
        let mut s: Vec<i64> = Vec::new();
        match kern {
            Kernel::Loop { out, inputs, also, .. } => {
                s.extend([op::LOOP, id(out), loops.len() as i64, inputs.len() as i64]);
                s.extend(inputs.iter().map(|x| id(&x.buf)));
                s.push(also.len() as i64);
                s.extend(also.iter().map(|(b, _)| id(b)));
                loops.push(k);
            }
            Kernel::Gemm { a, b, out, ty } => {
                let r = ty.shape.len();
                let (Some(m), Some(n)) = (ty.shape.get(r.wrapping_sub(2)), ty.shape.get(r.wrapping_sub(1)))
                else {
                    return Err(err("a matrix product of rank below 2"));
                };
                let ar = a.1.shape.len();
                let kd = a.1.shape.get(if a.2 { ar.wrapping_sub(2) } else { ar.wrapping_sub(1) });
                let kd = kd.ok_or_else(|| err("a matrix product of rank below 2"))?;
                s.extend([op::GEMM, id(out), id(&a.0), id(&b.0), i64::from(a.2), i64::from(b.2)]);
                s.extend(product(ty.shape.get(..r - 2).unwrap_or_default())?);
                s.extend(pair(m)?);
                s.extend(pair(kd)?);
                s.extend(pair(n)?);
            }
            Kernel::Call { op: o, args, out, ty } => {
                let arg = |i: usize| -> Result<&(BufId, TensorTy), CpuError> {
                    args.get(i).ok_or_else(|| err(format!("{}: missing operand", o.name())))
                };
                match o {
                    Op::Transpose { perm } => {
                        let (a, t) = arg(0)?;
                        s.extend([op::TRANSPOSE, id(out), id(a), t.shape.len() as i64]);
                        for d in &t.shape {
                            s.extend(pair(d)?);
                        }
                        s.extend(perm.iter().map(|p| *p as i64));
                    }
                    Op::Slice { axis, start, end } => {
                        let (a, t) = arg(0)?;
                        s.extend([op::SLICE, id(out), id(a)]);
                        s.extend(around(&t.shape, *axis)?);
                        s.extend([*start, *end]);
                    }
                    Op::Concat { axis } => {
                        // Each operand is `[outer, width]` with width its axes from `axis` on.
                        s.extend([op::CONCAT, id(out), args.len() as i64]);
                        for (a, t) in args {
                            s.push(id(a));
                            s.extend(product(t.shape.get(*axis..).unwrap_or_default())?);
                        }
                        s.extend(product(ty.shape.get(..*axis).unwrap_or_default())?);
                        s.extend(product(ty.shape.get(*axis..).unwrap_or_default())?);
                    }
                    Op::Reduce { op: red, axes } => {
                        let (a, t) = arg(0)?;
                        let code = match red {
                            ReduceOp::Sum => 0,
                            ReduceOp::Prod => 1,
                            ReduceOp::Max => 2,
                            ReduceOp::Min => 3,
                        };
                        s.extend([op::REDUCE, id(out), id(a), code, t.shape.len() as i64]);
                        for d in &t.shape {
                            s.extend(pair(d)?);
                        }
                        s.push(axes.len() as i64);
                        s.extend(axes.iter().map(|x| *x as i64));
                    }
                    Op::ArgMax { axis } => {
                        let (a, t) = arg(0)?;
                        s.extend([op::ARGMAX, id(out), id(a)]);
                        s.extend(around(&t.shape, *axis)?);
                    }
                    Op::Iota => {
                        s.extend([op::IOTA, id(out)]);
                        s.extend(product(&ty.shape)?);
                    }
                    Op::Random { dist, source: src } => {
                        s.extend([op::RANDOM, id(out)]);
                        s.extend(product(&ty.shape)?);
                        s.push(match dist {
                            Dist::Uniform => 0,
                            Dist::Normal => 1,
                        });
                        match src {
                            RandSource::Seed(seed) => s.extend([0, *seed as i64]),
                            RandSource::Stream(k) => s.extend([1, i64::from(*k)]),
                        }
                    }
                    Op::Conv(w) => {
                        let ((x, tx), (k, tk)) = (arg(0)?, arg(1)?);
                        s.extend([op::CONV, id(out), id(x), id(k)]);
                        s.extend(geom(&tx.shape, tk.shape.get(2..).unwrap_or_default(), &ty.shape, w)?);
                    }
                    Op::ConvWeightGrad(w) => {
                        let ((x, tx), (g, tg)) = (arg(0)?, arg(1)?);
                        s.extend([op::CONV_WEIGHT_GRAD, id(out), id(x), id(g)]);
                        s.extend(geom(&tx.shape, ty.shape.get(2..).unwrap_or_default(), &tg.shape, w)?);
                    }
                    Op::ConvTranspose(w) => {
                        let ((x, tx), (k, tk)) = (arg(0)?, arg(1)?);
                        s.extend([op::CONV_TRANSPOSE, id(out), id(x), id(k)]);
                        // The transpose of the conv from the result's shape to the operand's.
                        s.extend(geom(&ty.shape, tk.shape.get(2..).unwrap_or_default(), &tx.shape, w)?);
                    }
                    Op::Pool { kind, window, stride, pad } | Op::PoolGrad { kind, window, stride, pad } => {
                        let (x, tx) = arg(0)?;
                        let grad = matches!(o, Op::PoolGrad { .. });
                        let small = if grad { &arg(1)?.1.shape } else { &ty.shape };
                        if grad {
                            s.extend([op::POOL_GRAD, id(out), id(x), id(&arg(1)?.0)]);
                        } else {
                            s.extend([op::POOL, id(out), id(x)]);
                        }
                        s.push(match kind {
                            PoolKind::Max => 0,
                            PoolKind::Mean => 1,
                        });
                        s.extend(product(tx.shape.get(..2).unwrap_or_default())?);
                        let [h, w] = two(tx.shape.get(2..).unwrap_or_default())?;
                        let [oh, ow] = two(small.get(2..).unwrap_or_default())?;
                        for d in [&h, &w, &oh, &ow] {
                            s.extend(pair(d)?);
                        }
                        s.extend(two_i(window, 1)?);
                        s.extend(two_i(stride, 1)?);
                        s.extend(two_i(pad, 0)?);
                    }
                    Op::Orthogonalize => {
                        let (a, t) = arg(0)?;
                        let [rows, cols] = match t.shape.as_slice() {
                            [r, c] => [pair(r)?, pair(c)?],
                            _ => return Err(err("orthogonalize needs a matrix")),
                        };
                        s.extend([op::ORTHOGONALIZE, id(out), id(a)]);
                        s.extend(rows);
                        s.extend(cols);
                    }
                    other => return Err(err(format!("the CPU back end has no kernel for {}", other.name()))),
                }
            }
        }
        steps.push(s);
    }

    let mut words = vec![
        MAGIC,
        VERSION,
        bindings.inputs.len() as i64,
        bindings.param_offsets.len() as i64,
        kir.buffers.len() as i64,
        kir.slots.len() as i64,
        steps.len() as i64,
        kir.outputs.len() as i64,
    ];
    for (s, v, d) in &bindings.inputs {
        words.extend([*s, *v, *d]);
    }
    words.extend(&bindings.param_offsets);
    for b in &kir.buffers {
        let (kind, index) = match b.storage {
            Storage::Input(k) => (storage::INPUT, k),
            Storage::Param(k) => (storage::PARAM, k),
            Storage::Slot(k) => (storage::SLOT, k),
        };
        words.extend([kind, index as i64]);
        words.extend(pair(&b.elements)?);
        words.extend(pair(&b.at)?);
    }
    for (f, r) in &kir.slots {
        words.extend([*f, *r]);
    }
    for s in steps {
        words.push(s.len() as i64 + 1);
        words.extend(s);
    }
    if bindings.outputs.len() != kir.outputs.len() {
        return Err(err("every output needs a binding"));
    }
    for ((_, b, _), (d, v)) in kir.outputs.iter().zip(&bindings.outputs) {
        words.extend([id(b), *d, *v]);
    }
    fluxc_kernels::plan::Plan::parse(&words).map_err(|e| err(e.0))?;
    Ok((words, loops))
}
