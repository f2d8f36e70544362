//! The reference interpreter: evaluates an IR graph in f64, op by op, with plain loops. It is the
//! oracle every faster backend is tested against (DESIGN.md rule 10), so clarity beats speed.
//! Booleans are 0/1 and integers are integral values in the same f64 arrays.

// Kernels index with `[]`: every operand's shape was checked against its node's type before the
// kernel runs (`take_slot` and the per-node check in `eval`), and the indices derive from those shapes.
#![allow(clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::fmt;

use crate::dims::Dim;
use crate::ir::{BinaryOp, DType, Dist, Graph, Op, PoolKind, RandSource, ReduceOp, UnaryOp, Window};
use crate::rng::Stream;

/// A dense row-major f64 array.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Array {
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Array {
        Array { shape, data }
    }

    pub fn scalar(v: f64) -> Array {
        Array { shape: Vec::new(), data: vec![v] }
    }

    pub fn zeros(shape: Vec<usize>) -> Array {
        let n = shape.iter().product();
        Array { shape, data: vec![0.0; n] }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// What one run needs besides the graph's inputs and parameters.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// The value of the batch dimension `B`.
    pub batch: i64,
    /// The run's seed and step (for `RandSource::Stream`).
    pub seed: u64,
    pub step: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalError(pub String);

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail<T>(msg: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError(msg.into()))
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// The concrete shape of a node's type for this run.
pub fn concrete(shape: &[Dim], batch: i64) -> Result<Vec<usize>, EvalError> {
    let vars = BTreeMap::from([("B".to_owned(), batch)]);
    shape
        .iter()
        .map(|d| {
            d.eval(&vars, &BTreeMap::new())
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| EvalError(format!("dimension {d} has no value for B = {batch}")))
        })
        .collect()
}

/// Evaluates every node; returns the value of each (index = `ValueId`).
pub fn eval(g: &Graph, inputs: &[Array], params: &[Array], run: &Run) -> Result<Vec<Array>, EvalError> {
    let mut vals: Vec<Array> = Vec::with_capacity(g.nodes.len());
    eval_more(g, inputs, params, run, &mut vals)?;
    Ok(vals)
}

/// Evaluates the nodes after those already in `vals` (a graph that grows, as a script runs).
pub fn eval_more(
    g: &Graph,
    inputs: &[Array],
    params: &[Array],
    run: &Run,
    vals: &mut Vec<Array>,
) -> Result<(), EvalError> {
    for (i, n) in g.nodes.iter().enumerate().skip(vals.len()) {
        let shape = concrete(&n.ty.shape, run.batch)?;
        let arg = |k: usize| -> Result<&Array, EvalError> {
            n.args
                .get(k)
                .and_then(|a| vals.get(a.index()))
                .ok_or_else(|| EvalError(format!("%{i}: missing operand {k}")))
        };
        let v = match &n.op {
            Op::Input(k) => take_slot(inputs.get(*k), &shape, &format!("input {k}"))?,
            Op::Param(k) => take_slot(params.get(*k), &shape, &format!("parameter {k}"))?,
            Op::Const(c) => Array::scalar(*c),
            Op::Size(d) => Array::scalar(
                concrete(std::slice::from_ref(d), run.batch)?.first().copied().unwrap_or(0) as f64,
            ),
            Op::Iota => Array::new(
                shape.clone(),
                (0..shape.first().copied().unwrap_or(0)).map(|x| x as f64).collect(),
            ),
            Op::Random { dist, source } => random(*dist, *source, shape.clone(), run),
            Op::Unary(u) => map1(arg(0)?, |x| unary(*u, x)),
            Op::Binary(b) => map2(arg(0)?, arg(1)?, |x, y| binary(*b, x, y))?,
            Op::Select => {
                let (c, a, b) = (arg(0)?, arg(1)?, arg(2)?);
                let data = c
                    .data
                    .iter()
                    .zip(a.data.iter().zip(&b.data))
                    .map(|(c, (a, b))| if *c != 0.0 { *a } else { *b })
                    .collect();
                Array::new(a.shape.clone(), data)
            }
            Op::Cast(d) => map1(arg(0)?, |x| match d {
                DType::F32 => x,
                DType::I32 => x.trunc(),
                DType::Bool => f64::from(u8::from(x != 0.0)),
            }),
            Op::Reduce { op, axes } => reduce(arg(0)?, *op, axes),
            Op::ArgMax { axis } => argmax(arg(0)?, *axis),
            Op::Reshape => Array::new(shape.clone(), arg(0)?.data.clone()),
            Op::Transpose { perm } => transpose(arg(0)?, perm),
            Op::Broadcast => broadcast(arg(0)?, &shape),
            Op::Slice { axis, start, end } => slice(arg(0)?, *axis, *start as usize, *end as usize),
            Op::Concat { axis } => {
                let parts: Vec<&Array> = (0..n.args.len()).map(arg).collect::<Result<_, _>>()?;
                concat(&parts, *axis, &shape)
            }
            Op::MatMul => matmul(arg(0)?, arg(1)?),
            Op::Conv(w) => conv(arg(0)?, arg(1)?, w, &shape),
            Op::ConvTranspose(w) => conv_transpose(arg(0)?, arg(1)?, w, &shape),
            Op::ConvWeightGrad(w) => conv_weight_grad(arg(0)?, arg(1)?, w, &shape),
            Op::Pool { kind, window, stride, pad } => pool(arg(0)?, *kind, window, stride, pad, &shape),
            Op::PoolGrad { kind, window, stride, pad } => {
                pool_grad(arg(0)?, arg(1)?, *kind, window, stride, pad)
            }
            Op::Orthogonalize => orthogonalize(arg(0)?),
        };
        if v.shape != shape || v.data.len() != shape.iter().product::<usize>() {
            return fail(format!("%{i} ({}): computed shape {:?}, expected {shape:?}", n.op.name(), v.shape));
        }
        vals.push(v);
    }
    Ok(())
}

fn take_slot(a: Option<&Array>, shape: &[usize], what: &str) -> Result<Array, EvalError> {
    match a {
        Some(a) if a.shape == shape && a.data.len() == shape.iter().product::<usize>() => Ok(a.clone()),
        Some(a) => fail(format!("{what} has shape {:?}, the graph needs {shape:?}", a.shape)),
        None => fail(format!("{what} is missing")),
    }
}

fn random(dist: Dist, source: RandSource, shape: Vec<usize>, run: &Run) -> Array {
    let stream = match source {
        RandSource::Seed(s) => Stream::new(s, 0, 0),
        RandSource::Stream(k) => Stream::new(run.seed, k, run.step),
    };
    let n: usize = shape.iter().product();
    let data = (0..n as u64)
        .map(|e| match dist {
            Dist::Uniform => f64::from(stream.uniform(e)),
            Dist::Normal => f64::from(stream.normal(e)),
        })
        .collect();
    Array::new(shape, data)
}

fn map1(a: &Array, f: impl Fn(f64) -> f64) -> Array {
    Array::new(a.shape.clone(), a.data.iter().map(|x| f(*x)).collect())
}

fn map2(a: &Array, b: &Array, f: impl Fn(f64, f64) -> f64) -> Result<Array, EvalError> {
    if a.shape != b.shape {
        return fail(format!("elementwise operands {:?} and {:?}", a.shape, b.shape));
    }
    Ok(Array::new(a.shape.clone(), a.data.iter().zip(&b.data).map(|(x, y)| f(*x, *y)).collect()))
}

pub fn unary(u: UnaryOp, x: f64) -> f64 {
    match u {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::Floor => x.floor(),
        UnaryOp::Erf => erf(x),
        UnaryOp::ErfInv => erfinv(x),
        UnaryOp::Not => f64::from(u8::from(x == 0.0)),
    }
}

pub fn binary(b: BinaryOp, x: f64, y: f64) -> f64 {
    let t = |c: bool| f64::from(u8::from(c));
    match b {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
        BinaryOp::Div => x / y,
        BinaryOp::Pow => x.powf(y),
        BinaryOp::Max => x.max(y),
        BinaryOp::Min => x.min(y),
        BinaryOp::Eq => t(x == y),
        BinaryOp::Ne => t(x != y),
        BinaryOp::Lt => t(x < y),
        BinaryOp::Le => t(x <= y),
        BinaryOp::Gt => t(x > y),
        BinaryOp::Ge => t(x >= y),
        BinaryOp::And => t(x != 0.0 && y != 0.0),
        BinaryOp::Or => t(x != 0.0 || y != 0.0),
    }
}

pub use fluxc_kernels::math::{erf, erfinv};

/// `Q` of a QR decomposition with positive `diag(R)` (the kernels' f64 routine).
fn orthogonalize(a: &Array) -> Array {
    let (r, c) = (a.shape[0], a.shape[1]);
    Array::new(a.shape.clone(), fluxc_kernels::ops::orthogonalize(r, c, &a.data))
}

/// Visits every multi-index of `shape` in row-major order.
fn for_each_index(shape: &[usize], mut f: impl FnMut(&[usize])) {
    let n: usize = shape.iter().product();
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        f(&idx);
        for k in (0..shape.len()).rev() {
            idx[k] += 1;
            if idx[k] < shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

fn reduce(a: &Array, op: ReduceOp, axes: &[usize]) -> Array {
    let out_shape: Vec<usize> =
        a.shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, d)| *d).collect();
    let init = match op {
        ReduceOp::Sum => 0.0,
        ReduceOp::Prod => 1.0,
        ReduceOp::Max => f64::NEG_INFINITY,
        ReduceOp::Min => f64::INFINITY,
    };
    let mut out = Array::new(out_shape.clone(), vec![init; out_shape.iter().product()]);
    let os = strides(&out_shape);
    let mut flat = 0;
    for_each_index(&a.shape, |idx| {
        let mut o = 0;
        let mut k = 0;
        for (i, x) in idx.iter().enumerate() {
            if !axes.contains(&i) {
                o += x * os[k];
                k += 1;
            }
        }
        let v = a.data[flat];
        let acc = &mut out.data[o];
        *acc = match op {
            ReduceOp::Sum => *acc + v,
            ReduceOp::Prod => *acc * v,
            ReduceOp::Max => acc.max(v),
            ReduceOp::Min => acc.min(v),
        };
        flat += 1;
    });
    out
}

fn argmax(a: &Array, axis: usize) -> Array {
    let out_shape: Vec<usize> =
        a.shape.iter().enumerate().filter(|(i, _)| *i != axis).map(|(_, d)| *d).collect();
    let n: usize = out_shape.iter().product();
    let mut best = vec![f64::NEG_INFINITY; n];
    let mut at = vec![0.0; n];
    let os = strides(&out_shape);
    let mut flat = 0;
    for_each_index(&a.shape, |idx| {
        let mut o = 0;
        let mut k = 0;
        for (i, x) in idx.iter().enumerate() {
            if i != axis {
                o += x * os[k];
                k += 1;
            }
        }
        let v = a.data[flat];
        // The first maximum wins (strictly greater replaces).
        if v > best[o] || (idx[axis] == 0) {
            best[o] = v;
            at[o] = idx[axis] as f64;
        }
        flat += 1;
    });
    Array::new(out_shape, at)
}

fn transpose(a: &Array, perm: &[usize]) -> Array {
    let out_shape: Vec<usize> = perm.iter().map(|p| a.shape[*p]).collect();
    let is = strides(&a.shape);
    let mut data = Vec::with_capacity(a.data.len());
    for_each_index(&out_shape, |idx| {
        let src: usize = idx.iter().zip(perm).map(|(x, p)| x * is[*p]).sum();
        data.push(a.data[src]);
    });
    Array::new(out_shape, data)
}

fn broadcast(a: &Array, shape: &[usize]) -> Array {
    let off = shape.len() - a.shape.len();
    let is = strides(&a.shape);
    let mut data = Vec::with_capacity(shape.iter().product());
    for_each_index(shape, |idx| {
        let mut src = 0;
        for (k, d) in a.shape.iter().enumerate() {
            let x = if *d == 1 { 0 } else { idx[off + k] };
            src += x * is[k];
        }
        data.push(a.data[src]);
    });
    Array::new(shape.to_vec(), data)
}

fn slice(a: &Array, axis: usize, start: usize, end: usize) -> Array {
    let mut out_shape = a.shape.clone();
    out_shape[axis] = end - start;
    let is = strides(&a.shape);
    let mut data = Vec::with_capacity(out_shape.iter().product());
    for_each_index(&out_shape, |idx| {
        let src: usize =
            idx.iter().enumerate().map(|(k, x)| (if k == axis { x + start } else { *x }) * is[k]).sum();
        data.push(a.data[src]);
    });
    Array::new(out_shape, data)
}

fn concat(parts: &[&Array], axis: usize, shape: &[usize]) -> Array {
    let mut out = Array::zeros(shape.to_vec());
    let os = strides(shape);
    let mut offset = 0;
    for p in parts {
        let mut flat = 0;
        for_each_index(&p.shape, |idx| {
            let dst: usize =
                idx.iter().enumerate().map(|(k, x)| (if k == axis { x + offset } else { *x }) * os[k]).sum();
            out.data[dst] = p.data[flat];
            flat += 1;
        });
        offset += p.shape[axis];
    }
    out
}

fn matmul(a: &Array, b: &Array) -> Array {
    let r = a.shape.len();
    let (m, k, n) = (a.shape[r - 2], a.shape[r - 1], b.shape[r - 1]);
    let batch: usize = a.shape[..r - 2].iter().product();
    let mut shape = a.shape.clone();
    shape[r - 1] = n;
    let mut data = vec![0.0; batch * m * n];
    for bt in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for t in 0..k {
                    s += a.data[bt * m * k + i * k + t] * b.data[bt * k * n + t * n + j];
                }
                data[bt * m * n + i * n + j] = s;
            }
        }
    }
    Array::new(shape, data)
}

/// Spatial options as two axes (a 1-D op is a 2-D one with height 1).
struct Geom {
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    oh: usize,
    ow: usize,
    s: (i64, i64),
    p: (i64, i64),
    d: (i64, i64),
}

fn geom(x: &[usize], k: &[usize], out: &[usize], stride: &[i64], pad: &[i64], dilation: &[i64]) -> Geom {
    let two = |v: &[usize]| if v.len() == 1 { (1, v[0]) } else { (v[0], v[1]) };
    let two_i = |v: &[i64], fill: i64| if v.len() == 1 { (fill, v[0]) } else { (v[0], v[1]) };
    let (h, w) = two(&x[2..]);
    let (kh, kw) = two(k);
    let (oh, ow) = two(&out[2..]);
    Geom { h, w, kh, kw, oh, ow, s: two_i(stride, 1), p: two_i(pad, 0), d: two_i(dilation, 1) }
}

/// The input position read by output `o` and kernel tap `t` on one axis, if inside.
fn src(o: usize, t: usize, s: i64, p: i64, d: i64, size: usize) -> Option<usize> {
    let i = o as i64 * s - p + t as i64 * d;
    (0..size as i64).contains(&i).then_some(i as usize)
}

fn conv(x: &Array, w: &Array, win: &Window, shape: &[usize]) -> Array {
    let g = geom(&x.shape, &w.shape[2..], shape, &win.stride, &win.pad, &win.dilation);
    let (b, ci, co) = (x.shape[0], x.shape[1], w.shape[0]);
    let mut out = Array::zeros(shape.to_vec());
    for n in 0..b {
        for c_out in 0..co {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut s = 0.0;
                    for c_in in 0..ci {
                        for ty in 0..g.kh {
                            let Some(iy) = src(oy, ty, g.s.0, g.p.0, g.d.0, g.h) else { continue };
                            for tx in 0..g.kw {
                                let Some(ix) = src(ox, tx, g.s.1, g.p.1, g.d.1, g.w) else { continue };
                                s += x.data[((n * ci + c_in) * g.h + iy) * g.w + ix]
                                    * w.data[((c_out * ci + c_in) * g.kh + ty) * g.kw + tx];
                            }
                        }
                    }
                    out.data[((n * co + c_out) * g.oh + oy) * g.ow + ox] = s;
                }
            }
        }
    }
    out
}

/// `x [B, Cin, H, W]`, `w [Cin, Cout, KH, KW]`: each input element scatters into the output.
fn conv_transpose(x: &Array, w: &Array, win: &Window, shape: &[usize]) -> Array {
    let g = geom(&x.shape, &w.shape[2..], shape, &win.stride, &win.pad, &win.dilation);
    let (b, ci, co) = (x.shape[0], x.shape[1], w.shape[1]);
    let mut out = Array::zeros(shape.to_vec());
    for n in 0..b {
        for c_in in 0..ci {
            for iy in 0..g.h {
                for ix in 0..g.w {
                    let v = x.data[((n * ci + c_in) * g.h + iy) * g.w + ix];
                    for c_out in 0..co {
                        for ty in 0..g.kh {
                            // The output position that reads input iy through tap ty in the forward conv.
                            let Some(oy) = src(iy, ty, g.s.0, g.p.0, g.d.0, g.oh) else { continue };
                            for tx in 0..g.kw {
                                let Some(ox) = src(ix, tx, g.s.1, g.p.1, g.d.1, g.ow) else { continue };
                                out.data[((n * co + c_out) * g.oh + oy) * g.ow + ox] +=
                                    v * w.data[((c_in * co + c_out) * g.kh + ty) * g.kw + tx];
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

/// `dW[co, ci, t] = sum over b, o of grad[b, co, o] * x[b, ci, o*s - p + t*d]`.
fn conv_weight_grad(x: &Array, gr: &Array, win: &Window, shape: &[usize]) -> Array {
    let g = geom(&x.shape, &shape[2..], &gr.shape, &win.stride, &win.pad, &win.dilation);
    let (b, ci, co) = (x.shape[0], x.shape[1], shape[0]);
    let mut out = Array::zeros(shape.to_vec());
    for c_out in 0..co {
        for c_in in 0..ci {
            for ty in 0..g.kh {
                for tx in 0..g.kw {
                    let mut s = 0.0;
                    for n in 0..b {
                        for oy in 0..g.oh {
                            let Some(iy) = src(oy, ty, g.s.0, g.p.0, g.d.0, g.h) else { continue };
                            for ox in 0..g.ow {
                                let Some(ix) = src(ox, tx, g.s.1, g.p.1, g.d.1, g.w) else { continue };
                                s += gr.data[((n * co + c_out) * g.oh + oy) * g.ow + ox]
                                    * x.data[((n * ci + c_in) * g.h + iy) * g.w + ix];
                            }
                        }
                    }
                    out.data[((c_out * ci + c_in) * g.kh + ty) * g.kw + tx] = s;
                }
            }
        }
    }
    out
}

/// For each pooling window: the positions it covers (inside the input) in row-major order.
fn windows(
    x: &[usize],
    window: &[i64],
    stride: &[i64],
    pad: &[i64],
    out: &[usize],
    mut f: impl FnMut(usize, usize, &[(usize, usize)]),
) {
    let g = geom(x, &window.iter().map(|v| *v as usize).collect::<Vec<_>>(), out, stride, pad, &[1, 1]);
    let mut cells = Vec::with_capacity(g.kh * g.kw);
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            cells.clear();
            for ty in 0..g.kh {
                let Some(iy) = src(oy, ty, g.s.0, g.p.0, 1, g.h) else { continue };
                for tx in 0..g.kw {
                    let Some(ix) = src(ox, tx, g.s.1, g.p.1, 1, g.w) else { continue };
                    cells.push((iy, ix));
                }
            }
            f(oy, ox, &cells);
        }
    }
}

fn pool(x: &Array, kind: PoolKind, window: &[i64], stride: &[i64], pad: &[i64], shape: &[usize]) -> Array {
    let (b, c) = (x.shape[0], x.shape[1]);
    let (h, w) = (x.shape[2], x.shape[3]);
    let (oh, ow) = (shape[2], shape[3]);
    let area = (window.iter().product::<i64>()) as f64;
    let mut out = Array::zeros(shape.to_vec());
    for plane in 0..b * c {
        windows(&x.shape, window, stride, pad, shape, |oy, ox, cells| {
            let vals = cells.iter().map(|(iy, ix)| x.data[(plane * h + iy) * w + ix]);
            let v = match kind {
                PoolKind::Max => vals.fold(f64::NEG_INFINITY, f64::max),
                // Mean counts the padding (PyTorch's count_include_pad, NNlib's meanpool).
                PoolKind::Mean => vals.sum::<f64>() / area,
            };
            out.data[(plane * oh + oy) * ow + ox] = v;
        });
    }
    out
}

fn pool_grad(x: &Array, gr: &Array, kind: PoolKind, window: &[i64], stride: &[i64], pad: &[i64]) -> Array {
    let (b, c) = (x.shape[0], x.shape[1]);
    let (h, w) = (x.shape[2], x.shape[3]);
    let (oh, ow) = (gr.shape[2], gr.shape[3]);
    let area = (window.iter().product::<i64>()) as f64;
    let mut out = Array::zeros(x.shape.clone());
    for plane in 0..b * c {
        windows(&x.shape, window, stride, pad, &gr.shape, |oy, ox, cells| {
            let g = gr.data[(plane * oh + oy) * ow + ox];
            match kind {
                PoolKind::Max => {
                    // The first maximal element takes the gradient (§12.12).
                    let mut best: Option<(f64, usize)> = None;
                    for (iy, ix) in cells {
                        let at = (plane * h + iy) * w + ix;
                        if best.is_none_or(|(v, _)| x.data[at] > v) {
                            best = Some((x.data[at], at));
                        }
                    }
                    if let Some((_, at)) = best {
                        out.data[at] += g;
                    }
                }
                PoolKind::Mean => {
                    for (iy, ix) in cells {
                        out.data[(plane * h + iy) * w + ix] += g / area;
                    }
                }
            }
        });
    }
    out
}

#[cfg(test)]
mod tests {
    //! Forward kernels on small cases worked out by hand.
    #![allow(clippy::unwrap_used, clippy::cloned_ref_to_slice_refs)]

    use super::*;
    use crate::ir::{TensorTy, ValueId};

    const RUN: Run = Run { batch: 1, seed: 0, step: 0 };

    fn run1(g: &Graph, out: ValueId, inputs: &[Array]) -> Array {
        crate::ir::verify(g).unwrap();
        eval(g, inputs, &[], &RUN).unwrap()[out.index()].clone()
    }

    fn a(shape: &[usize], data: &[f64]) -> Array {
        Array::new(shape.to_vec(), data.to_vec())
    }

    #[test]
    fn matmul_transpose_broadcast_reduce() {
        let mut g = Graph::default();
        let x = g.input("x", TensorTy::f32(&[2, 3])).unwrap();
        let y = g.input("y", TensorTy::f32(&[3, 2])).unwrap();
        let m = g.push(Op::MatMul, &[x, y], None).unwrap();
        let t = g.push(Op::Transpose { perm: vec![1, 0] }, &[m], None).unwrap();
        let s = g.reduce(ReduceOp::Sum, t, vec![1]).unwrap();
        let xs = a(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let ys = a(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        // x @ y = [[4, 5], [10, 11]]; transposed [[4, 10], [5, 11]]; row sums [14, 16].
        assert_eq!(run1(&g, m, &[xs.clone(), ys.clone()]).data, vec![4.0, 5.0, 10.0, 11.0]);
        assert_eq!(run1(&g, t, &[xs.clone(), ys.clone()]).data, vec![4.0, 10.0, 5.0, 11.0]);
        assert_eq!(run1(&g, s, &[xs, ys]).data, vec![14.0, 16.0]);
    }

    #[test]
    fn conv2d_with_padding_and_stride() {
        let mut g = Graph::default();
        let x = g.input("x", TensorTy::f32(&[1, 1, 3, 3])).unwrap();
        let k = g.input("k", TensorTy::f32(&[1, 1, 2, 2])).unwrap();
        let w = Window { stride: vec![2, 2], pad: vec![1, 1], dilation: vec![1, 1] };
        let y = g.push(Op::Conv(w), &[x, k], None).unwrap();
        let xs = a(&[1, 1, 3, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        let ks = a(&[1, 1, 2, 2], &[1.0, 10.0, 100.0, 1000.0]);
        // Output 2x2; each window sees one to four inputs of the padded image.
        // (0,0): only x[0,0] under tap (1,1): 1000*1
        // (0,1): x[0,1] tap (1,0) = 100*2, x[0,2] tap (1,1) = 1000*3
        // (1,0): x[1,0] tap (0,1) = 10*4, x[2,0] tap (1,1) = 1000*7
        // (1,1): x[1,1]*1 + x[1,2]*10 + x[2,1]*100 + x[2,2]*1000
        assert_eq!(run1(&g, y, &[xs, ks]).data, vec![1000.0, 3200.0, 7040.0, 5.0 + 60.0 + 800.0 + 9000.0]);
    }

    #[test]
    fn pooling_and_argmax_take_the_first_maximum() {
        let mut g = Graph::default();
        let x = g.input("x", TensorTy::f32(&[1, 1, 2, 4])).unwrap();
        let op = Op::Pool { kind: PoolKind::Max, window: vec![2, 2], stride: vec![2, 2], pad: vec![0, 0] };
        let p = g.push(op, &[x], None).unwrap();
        let mean = Op::Pool { kind: PoolKind::Mean, window: vec![2, 2], stride: vec![2, 2], pad: vec![0, 0] };
        let q = g.push(mean, &[x], None).unwrap();
        let am = g.push(Op::ArgMax { axis: 3 }, &[x], None).unwrap();
        let xs = a(&[1, 1, 2, 4], &[1.0, 5.0, 2.0, 2.0, 5.0, 0.0, 2.0, 1.0]);
        assert_eq!(run1(&g, p, &[xs.clone()]).data, vec![5.0, 2.0]);
        assert_eq!(run1(&g, q, &[xs.clone()]).data, vec![2.75, 1.75]);
        assert_eq!(run1(&g, am, &[xs]).data, vec![1.0, 0.0]);
    }

    #[test]
    fn broadcast_slice_concat() {
        let mut g = Graph::default();
        let x = g.input("x", TensorTy::f32(&[3])).unwrap();
        let b = g.broadcast_to(x, &[crate::dims::Dim::constant(2), crate::dims::Dim::constant(3)]).unwrap();
        let s = g.push(Op::Slice { axis: 1, start: 1, end: 3 }, &[b], None).unwrap();
        let c = g.push(Op::Concat { axis: 0 }, &[s, s], None).unwrap();
        let xs = a(&[3], &[1.0, 2.0, 3.0]);
        assert_eq!(run1(&g, b, &[xs.clone()]).data, vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
        assert_eq!(run1(&g, c, &[xs]).data, vec![2.0, 3.0, 2.0, 3.0, 2.0, 3.0, 2.0, 3.0]);
    }

    #[test]
    fn erf_and_erfinv_to_double_precision() {
        // Reference values (Abramowitz & Stegun; mpmath).
        for (x, want) in [
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (3.5, 0.999_999_256_901_627_7),
            (-1.5, -0.966_105_146_475_310_7),
        ] {
            assert!((erf(x) - want).abs() < 1e-14, "erf({x}) = {}", erf(x));
        }
        assert!((erfinv(0.5) - 0.476_936_276_204_469_9).abs() < 1e-13);
        for y in [-0.999, -0.3, 0.0, 0.1, 0.9, 0.999_999] {
            assert!((erf(erfinv(y)) - y).abs() < 1e-14, "erfinv({y})");
        }
    }

    #[test]
    fn orthogonalize_gives_orthonormal_rows_or_columns_with_positive_r() {
        for (r, c) in [(4, 3), (3, 5), (3, 3)] {
            let n = r * c;
            let s = crate::rng::Stream::new(9, 0, 0);
            let a = Array::new(vec![r, c], (0..n as u64).map(|e| f64::from(s.normal(e))).collect());
            let q = orthogonalize(&a);
            let (m, k) = if r >= c { (r, c) } else { (c, r) };
            let get =
                |x: &Array, i: usize, j: usize| if r >= c { x.data[i * c + j] } else { x.data[j * c + i] };
            for p in 0..k {
                for t in 0..k {
                    let dot: f64 = (0..m).map(|i| get(&q, i, p) * get(&q, i, t)).sum();
                    assert!((dot - if p == t { 1.0 } else { 0.0 }).abs() < 1e-12);
                }
                // diag(R) = q_p . a_p > 0
                let d: f64 = (0..m).map(|i| get(&q, i, p) * get(&a, i, p)).sum();
                assert!(d > 0.0);
            }
        }
    }

    #[test]
    fn seeded_random_is_reproducible() {
        let mut g = Graph::default();
        let t = TensorTy::f32(&[4]);
        let r = g.push(Op::Random { dist: Dist::Normal, source: RandSource::Seed(1) }, &[], Some(t)).unwrap();
        assert_eq!(run1(&g, r, &[]), run1(&g, r, &[]));
    }
}
