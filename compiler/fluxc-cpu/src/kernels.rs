//! Native f32 kernels for whole-buffer ops: matrix products through a packed, threaded GEMM
//! (`matrixmultiply`), movement (transpose, slice, concat), reductions, argmax, iota and random
//! numbers. Other ops (convolutions, pooling, orthogonalisation) run on the reference kernels
//! until their native versions land; `None` says so.

// Indexing with `[]` below stays within shapes the caller checked against the buffers.
#![allow(clippy::indexing_slicing)]

use fluxc_core::interp::Run;
use fluxc_core::ir::{Dist, Op, RandSource, ReduceOp};
use fluxc_core::rng::Stream;

use super::CpuError;

/// Runs `op` natively if it has a native kernel: `args` are (data, shape) of the operands, `out`
/// the result buffer of `out_shape`. `Ok(false)` when the op has no native kernel.
pub fn run(
    op: &Op,
    args: &[(&[f32], Vec<usize>)],
    out: &mut [f32],
    out_shape: &[usize],
    r: &Run,
) -> Result<bool, CpuError> {
    let n: usize = out_shape.iter().product();
    let out = out.get_mut(..n).ok_or_else(|| CpuError("the output buffer is too small".into()))?;
    let arg = |k: usize| args.get(k).ok_or_else(|| CpuError(format!("{}: missing operand", op.name())));
    match op {
        Op::MatMul => {
            let ((a, sa), (b, sb)) = (arg(0)?, arg(1)?);
            matmul(a, sa, b, sb, out)?;
        }
        Op::Transpose { perm } => {
            let (a, sa) = arg(0)?;
            transpose(a, sa, perm, out)?;
        }
        Op::Slice { axis, start, end } => {
            let (a, sa) = arg(0)?;
            let outer: usize = sa.get(..*axis).unwrap_or_default().iter().product();
            let inner: usize = sa.get(axis + 1..).unwrap_or_default().iter().product();
            let extent = sa.get(*axis).copied().unwrap_or(0);
            let (s, e) = (usize::try_from(*start).unwrap_or(0), usize::try_from(*end).unwrap_or(0));
            let w = (e - s) * inner;
            for o in 0..outer {
                let src = a
                    .get(o * extent * inner + s * inner..o * extent * inner + e * inner)
                    .ok_or_else(|| CpuError("slice out of range".into()))?;
                if let Some(dst) = out.get_mut(o * w..(o + 1) * w) {
                    dst.copy_from_slice(src);
                }
            }
        }
        Op::Concat { axis } => {
            let outer: usize = out_shape.get(..*axis).unwrap_or_default().iter().product();
            let inner: usize = out_shape.get(axis + 1..).unwrap_or_default().iter().product();
            let total = out_shape.get(*axis).copied().unwrap_or(0) * inner;
            let mut offset = 0;
            for (a, sa) in args {
                let w = sa.get(*axis).copied().unwrap_or(0) * inner;
                for o in 0..outer {
                    let src = a
                        .get(o * w..(o + 1) * w)
                        .ok_or_else(|| CpuError("concat operand too small".into()))?;
                    if let Some(dst) = out.get_mut(o * total + offset..o * total + offset + w) {
                        dst.copy_from_slice(src);
                    }
                }
                offset += w;
            }
        }
        Op::Reduce { op: red, axes } => {
            let (a, sa) = arg(0)?;
            reduce(a, sa, *red, axes, out);
        }
        Op::ArgMax { axis } => {
            let (a, sa) = arg(0)?;
            let outer: usize = sa.get(..*axis).unwrap_or_default().iter().product();
            let inner: usize = sa.get(axis + 1..).unwrap_or_default().iter().product();
            let extent = sa.get(*axis).copied().unwrap_or(0);
            for o in 0..outer {
                for i in 0..inner {
                    let mut best = (f32::NEG_INFINITY, 0usize);
                    for k in 0..extent {
                        let v = a.get((o * extent + k) * inner + i).copied().unwrap_or(f32::NEG_INFINITY);
                        if k == 0 || v > best.0 {
                            best = (v, k);
                        }
                    }
                    if let Some(d) = out.get_mut(o * inner + i) {
                        *d = best.1 as f32;
                    }
                }
            }
        }
        Op::Iota => {
            for (i, d) in out.iter_mut().enumerate() {
                *d = i as f32;
            }
        }
        Op::Random { dist, source } => {
            let s = match source {
                RandSource::Seed(seed) => Stream::new(*seed, 0, 0),
                RandSource::Stream(k) => Stream::new(r.seed, *k, r.step),
            };
            match dist {
                Dist::Uniform => s.fill_uniform(0.0, 1.0, out),
                Dist::Normal => s.fill_normal(0.0, 1.0, out),
            }
        }
        Op::Conv(w) => {
            let ((x, sx), (k, sk)) = (arg(0)?, arg(1)?);
            let g = Geom::new(sx, &sk[2..], out_shape, w);
            conv(x, k, &g, out);
        }
        Op::ConvWeightGrad(w) => {
            let ((x, sx), (gr, sg)) = (arg(0)?, arg(1)?);
            let g = Geom::new(sx, &out_shape[2..], sg, w);
            conv_weight_grad(x, gr, &g, out);
        }
        Op::ConvTranspose(w) => {
            let ((x, sx), (k, sk)) = (arg(0)?, arg(1)?);
            // The transpose of a conv from `out_shape` to `sx`: geometry of that forward conv.
            let g = Geom::new(out_shape, &sk[2..], sx, w);
            conv_transpose(x, k, &g, out);
        }
        Op::Pool { kind, window, stride, pad } => {
            let (x, sx) = arg(0)?;
            pool(x, sx, *kind, window, stride, pad, out_shape, None, out);
        }
        Op::PoolGrad { kind, window, stride, pad } => {
            let ((x, sx), (gr, sg)) = (arg(0)?, arg(1)?);
            out.iter_mut().for_each(|v| *v = 0.0);
            pool(x, sx, *kind, window, stride, pad, sg, Some(gr), out);
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// Pooling over `[B, C, H, W]` windows: the forward (`grad` None: write each window's max or
/// mean to `out`) or the gradient (`grad` given: add each window's gradient to the input
/// positions it came from; max sends it to the first maximum, §12.12).
#[allow(clippy::too_many_arguments)]
fn pool(
    x: &[f32],
    sx: &[usize],
    kind: fluxc_core::ir::PoolKind,
    window: &[i64],
    stride: &[i64],
    pad: &[i64],
    so: &[usize],
    grad: Option<&[f32]>,
    out: &mut [f32],
) {
    use fluxc_core::ir::PoolKind;
    let (h, w) = (sx[2], sx[3]);
    let (oh, ow) = (so[2], so[3]);
    let (kh, kw) = (window[0] as usize, window[1] as usize);
    let area = (kh * kw) as f32;
    for plane in 0..sx[0] * sx[1] {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = (f32::NEG_INFINITY, usize::MAX);
                let mut sum = 0.0f32;
                let g = grad.map(|gr| gr[(plane * oh + oy) * ow + ox]);
                for ty in 0..kh {
                    let Some(iy) = Geom::src(oy, ty, stride[0], pad[0], 1, h) else { continue };
                    for tx in 0..kw {
                        let Some(ix) = Geom::src(ox, tx, stride[1], pad[1], 1, w) else { continue };
                        let at = (plane * h + iy) * w + ix;
                        match kind {
                            PoolKind::Max => {
                                if best.1 == usize::MAX || x[at] > best.0 {
                                    best = (x[at], at);
                                }
                            }
                            PoolKind::Mean => match g {
                                Some(g) => out[at] += g / area,
                                None => sum += x[at],
                            },
                        }
                    }
                }
                match (kind, g) {
                    (PoolKind::Max, None) => out[(plane * oh + oy) * ow + ox] = best.0,
                    (PoolKind::Max, Some(g)) => {
                        if best.1 != usize::MAX {
                            out[best.1] += g;
                        }
                    }
                    (PoolKind::Mean, None) => out[(plane * oh + oy) * ow + ox] = sum / area,
                    (PoolKind::Mean, Some(_)) => {}
                }
            }
        }
    }
}

/// A convolution's geometry, 1-D treated as 2-D of height 1: `x [B, Cin, H, W]` (the conv's
/// input side), kernel `[KH, KW]`, output `[B, Cout, OH, OW]`.
struct Geom {
    b: usize,
    cin: usize,
    cout: usize,
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

impl Geom {
    fn new(x: &[usize], k: &[usize], out: &[usize], win: &fluxc_core::ir::Window) -> Geom {
        let two = |v: &[usize]| if v.len() == 1 { (1, v[0]) } else { (v[0], v[1]) };
        let two_i = |v: &[i64], fill: i64| if v.len() == 1 { (fill, v[0]) } else { (v[0], v[1]) };
        let (h, w) = two(&x[2..]);
        let (kh, kw) = two(k);
        let (oh, ow) = two(&out[2..]);
        Geom {
            b: x[0],
            cin: x[1],
            cout: out[1],
            h,
            w,
            kh,
            kw,
            oh,
            ow,
            s: two_i(&win.stride, 1),
            p: two_i(&win.pad, 0),
            d: two_i(&win.dilation, 1),
        }
    }

    /// The input position output `o` reads through tap `t` on an axis, if inside.
    fn src(o: usize, t: usize, s: i64, p: i64, d: i64, size: usize) -> Option<usize> {
        let i = o as i64 * s - p + t as i64 * d;
        (0..size as i64).contains(&i).then_some(i as usize)
    }

    /// `cols [Cin*KH*KW, OH*OW]` of batch element `n` (zeros where padding is read).
    fn im2col(&self, x: &[f32], n: usize, cols: &mut [f32]) {
        let plane = self.oh * self.ow;
        // For each output column and tap, the input column it reads (or none): computed once.
        let xs: Vec<Vec<Option<usize>>> = (0..self.kw)
            .map(|tx| {
                (0..self.ow).map(|ox| Geom::src(ox, tx, self.s.1, self.p.1, self.d.1, self.w)).collect()
            })
            .collect();
        for ci in 0..self.cin {
            let base = (n * self.cin + ci) * self.h;
            for ty in 0..self.kh {
                for (tx, cols_x) in xs.iter().enumerate() {
                    let row = ((ci * self.kh + ty) * self.kw + tx) * plane;
                    for oy in 0..self.oh {
                        let dst = &mut cols[row + oy * self.ow..row + (oy + 1) * self.ow];
                        match Geom::src(oy, ty, self.s.0, self.p.0, self.d.0, self.h) {
                            None => dst.iter_mut().for_each(|v| *v = 0.0),
                            Some(iy) => {
                                let src = &x[(base + iy) * self.w..(base + iy + 1) * self.w];
                                for (d, ix) in dst.iter_mut().zip(cols_x) {
                                    *d = ix.map_or(0.0, |i| src[i]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `out [B, Cout, OH*OW]`: one GEMM `weight [Cout, Cin*KH*KW] @ cols [Cin*KH*KW, B*OH*OW]` over
/// the whole batch's im2col columns, then the batch moved back in front.
fn conv(x: &[f32], k: &[f32], g: &Geom, out: &mut [f32]) {
    let (kk, plane) = (g.cin * g.kh * g.kw, g.oh * g.ow);
    let wide = g.b * plane;
    let mut cols = vec![0.0f32; kk * wide];
    let mut one = vec![0.0f32; kk * plane];
    for n in 0..g.b {
        g.im2col(x, n, &mut one);
        for r in 0..kk {
            cols[r * wide + n * plane..r * wide + (n + 1) * plane]
                .copy_from_slice(&one[r * plane..(r + 1) * plane]);
        }
    }
    let mut prod = vec![0.0f32; g.cout * wide];
    gemm(g.cout, kk, wide, k, &cols, &mut prod);
    for co in 0..g.cout {
        for n in 0..g.b {
            out[(n * g.cout + co) * plane..(n * g.cout + co + 1) * plane]
                .copy_from_slice(&prod[co * wide + n * plane..co * wide + (n + 1) * plane]);
        }
    }
}

/// `dW [Cout, Cin*KH*KW] = grad [Cout, B*OH*OW] @ cols [Cin*KH*KW, B*OH*OW]ᵀ`: one GEMM over the
/// whole batch.
fn conv_weight_grad(x: &[f32], gr: &[f32], g: &Geom, out: &mut [f32]) {
    let (kk, plane) = (g.cin * g.kh * g.kw, g.oh * g.ow);
    let wide = g.b * plane;
    let mut cols = vec![0.0f32; kk * wide];
    let mut one = vec![0.0f32; kk * plane];
    for n in 0..g.b {
        g.im2col(x, n, &mut one);
        for r in 0..kk {
            cols[r * wide + n * plane..r * wide + (n + 1) * plane]
                .copy_from_slice(&one[r * plane..(r + 1) * plane]);
        }
    }
    let mut gt = vec![0.0f32; g.cout * wide];
    for n in 0..g.b {
        for co in 0..g.cout {
            gt[co * wide + n * plane..co * wide + (n + 1) * plane]
                .copy_from_slice(&gr[(n * g.cout + co) * plane..(n * g.cout + co + 1) * plane]);
        }
    }
    gemm_t(g.cout, wide, kk, &gt, false, &cols, true, &mut out[..g.cout * kk]);
}

/// The transpose of `conv` (its gradient with respect to the input): `x [B, Cout, OH, OW]`,
/// `k [Cout, Cin, KH, KW]` (the forward conv's weight), `out [B, Cin, H, W]`:
/// `cols = kᵀ @ x[n]`, scattered back through the conv's taps (col2im).
fn conv_transpose(x: &[f32], k: &[f32], g: &Geom, out: &mut [f32]) {
    let (kk, plane) = (g.cin * g.kh * g.kw, g.oh * g.ow);
    let mut cols = vec![0.0f32; kk * plane];
    out[..g.b * g.cin * g.h * g.w].iter_mut().for_each(|v| *v = 0.0);
    for n in 0..g.b {
        // cols [Cin*KH*KW, OH*OW] = k [Cout, Cin*KH*KW]ᵀ @ x[n] [Cout, OH*OW]
        gemm_t(
            kk,
            g.cout,
            plane,
            k,
            true,
            &x[n * g.cout * plane..(n + 1) * g.cout * plane],
            false,
            &mut cols,
        );
        for ci in 0..g.cin {
            for ty in 0..g.kh {
                for tx in 0..g.kw {
                    let row = ((ci * g.kh + ty) * g.kw + tx) * plane;
                    for oy in 0..g.oh {
                        let Some(iy) = Geom::src(oy, ty, g.s.0, g.p.0, g.d.0, g.h) else { continue };
                        for ox in 0..g.ow {
                            let Some(ix) = Geom::src(ox, tx, g.s.1, g.p.1, g.d.1, g.w) else { continue };
                            out[((n * g.cin + ci) * g.h + iy) * g.w + ix] += cols[row + oy * g.ow + ox];
                        }
                    }
                }
            }
        }
    }
}

/// `[.., M, K] @ [.., K, N]` with equal batch dimensions, one GEMM per batch.
fn matmul(a: &[f32], sa: &[usize], b: &[f32], sb: &[usize], out: &mut [f32]) -> Result<(), CpuError> {
    let r = sa.len();
    let (Some(&m), Some(&k), Some(&n)) =
        (sa.get(r.wrapping_sub(2)), sa.get(r.wrapping_sub(1)), sb.get(r.wrapping_sub(1)))
    else {
        return Err(CpuError("matmul operands of rank below 2".into()));
    };
    let batch: usize = sa.get(..r - 2).unwrap_or_default().iter().product();
    if a.len() < batch * m * k || b.len() < batch * k * n || out.len() < batch * m * n {
        return Err(CpuError("matmul buffers too small".into()));
    }
    for t in 0..batch {
        let (pa, pb) = (&a[t * m * k..(t + 1) * m * k], &b[t * k * n..(t + 1) * k * n]);
        let pc = &mut out[t * m * n..(t + 1) * m * n];
        gemm(m, k, n, pa, pb, pc);
    }
    Ok(())
}

/// `c = a @ b` for row-major `a [m, k]`, `b [k, n]`, `c [m, n]` (lengths checked by the caller).
fn gemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    gemm_t(m, k, n, a, false, b, false, c);
}

/// `c = op(a) @ op(b)`: `a` is stored `[m, k]` (or `[k, m]` when `ta`), `b` `[k, n]` (or `[n, k]`
/// when `tb`); the transposes are strides, not copies.
#[allow(unsafe_code, clippy::too_many_arguments)]
fn gemm_t(m: usize, k: usize, n: usize, a: &[f32], ta: bool, b: &[f32], tb: bool, c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm buffers");
    if m <= 4 || k <= 4 {
        // A few rows (a forward pass on a small batch) or a thin inner dimension (a weight
        // gradient on a small batch): packing costs more than it saves.
        small_gemm(m, k, n, a, ta, b, tb, c);
        return;
    }
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the pointers come from slices at least as long as the m×k, k×n and m×n matrices
    // the strides describe (asserted above); `c` does not alias `a` or `b`.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// `c = op(a) @ op(b)` by direct loops: axpy over contiguous rows of `b` (or dot products with
/// eight partial sums when `b` is transposed), both of which the compiler vectorises.
#[allow(clippy::too_many_arguments)]
fn small_gemm(m: usize, k: usize, n: usize, a: &[f32], ta: bool, b: &[f32], tb: bool, c: &mut [f32]) {
    let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
    for i in 0..m {
        let row = &mut c[i * n..(i + 1) * n];
        if tb {
            // b stored [n, k]: c[i, j] = a_i . b_j
            let ai: Vec<f32> = (0..k).map(|p| at(i, p)).collect();
            for (j, out) in row.iter_mut().enumerate() {
                let bj = &b[j * k..(j + 1) * k];
                let mut lanes = [0.0f32; 8];
                let chunks = k / 8;
                for q in 0..chunks {
                    let (x, y) = (&ai[q * 8..q * 8 + 8], &bj[q * 8..q * 8 + 8]);
                    for l in 0..8 {
                        lanes[l] += x[l] * y[l];
                    }
                }
                let mut sum: f32 = lanes.iter().sum();
                for p in chunks * 8..k {
                    sum += ai[p] * bj[p];
                }
                *out = sum;
            }
        } else {
            row.iter_mut().for_each(|v| *v = 0.0);
            for p in 0..k {
                let x = at(i, p);
                for (out, bv) in row.iter_mut().zip(&b[p * n..(p + 1) * n]) {
                    *out += x * bv;
                }
            }
        }
    }
}

/// A KIR `Gemm`: batched `op(a) @ op(b)` with equal batch dimensions.
pub fn gemm_op(
    a: &(&[f32], Vec<usize>, bool),
    b: &(&[f32], Vec<usize>, bool),
    out: &mut [f32],
    out_shape: &[usize],
) -> Result<(), CpuError> {
    let r = out_shape.len();
    let (Some(&m), Some(&n)) = (out_shape.get(r.wrapping_sub(2)), out_shape.get(r.wrapping_sub(1))) else {
        return Err(CpuError("gemm output of rank below 2".into()));
    };
    let ar = a.1.len();
    let k = if a.2 { a.1.get(ar.wrapping_sub(2)).copied() } else { a.1.get(ar.wrapping_sub(1)).copied() }
        .unwrap_or(0);
    let batch: usize = out_shape.get(..r - 2).unwrap_or_default().iter().product();
    if a.0.len() < batch * m * k || b.0.len() < batch * k * n || out.len() < batch * m * n {
        return Err(CpuError("gemm buffers too small".into()));
    }
    for t in 0..batch {
        let pa = &a.0[t * m * k..(t + 1) * m * k];
        let pb = &b.0[t * k * n..(t + 1) * k * n];
        gemm_t(m, k, n, pa, a.2, pb, b.2, &mut out[t * m * n..(t + 1) * m * n]);
    }
    Ok(())
}

fn transpose(a: &[f32], sa: &[usize], perm: &[usize], out: &mut [f32]) -> Result<(), CpuError> {
    let r = sa.len();
    let mut in_strides = vec![1usize; r];
    for k in (0..r.saturating_sub(1)).rev() {
        in_strides[k] = in_strides[k + 1] * sa[k + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|p| sa.get(*p).copied().unwrap_or(1)).collect();
    let strides: Vec<usize> = perm.iter().map(|p| in_strides.get(*p).copied().unwrap_or(0)).collect();
    let mut idx = vec![0usize; r];
    for d in out.iter_mut() {
        let src: usize = idx.iter().zip(&strides).map(|(i, s)| i * s).sum();
        *d = a.get(src).copied().ok_or_else(|| CpuError("transpose out of range".into()))?;
        for k in (0..r).rev() {
            idx[k] += 1;
            if idx[k] < out_shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    Ok(())
}

fn reduce(a: &[f32], sa: &[usize], op: ReduceOp, axes: &[usize], out: &mut [f32]) {
    let init = match op {
        ReduceOp::Sum => 0.0,
        ReduceOp::Prod => 1.0,
        ReduceOp::Max => f32::NEG_INFINITY,
        ReduceOp::Min => f32::INFINITY,
    };
    // Reductions over leading or trailing axes walk memory in order (the common cases: a sum over
    // the batch, a sum over the last axis).
    let r = sa.len();
    let mut sorted = axes.to_vec();
    sorted.sort_unstable();
    let leading = sorted.iter().enumerate().all(|(i, a)| i == *a);
    let trailing = sorted.iter().rev().enumerate().all(|(i, a)| *a + i + 1 == r);
    if (leading || trailing) && op == ReduceOp::Sum && !sorted.is_empty() {
        let reduced: usize = sorted.iter().map(|a| sa[*a]).product();
        let kept = a.len() / reduced.max(1);
        let mut acc = vec![0f64; out.len()];
        if leading {
            for row in a.chunks_exact(kept.max(1)) {
                for (x, v) in acc.iter_mut().zip(row) {
                    *x += f64::from(*v);
                }
            }
        } else {
            for (x, row) in acc.iter_mut().zip(a.chunks_exact(reduced.max(1))) {
                *x = row.iter().map(|v| f64::from(*v)).sum();
            }
        }
        for (d, v) in out.iter_mut().zip(acc) {
            *d = v as f32;
        }
        return;
    }
    // Accumulate in f64 for sums (closer to the reference), then round once.
    let mut acc = vec![f64::from(init); out.len()];
    let kept: Vec<usize> = (0..sa.len()).filter(|i| !axes.contains(i)).collect();
    let mut out_strides = vec![0usize; sa.len()];
    let mut s = 1;
    for &k in kept.iter().rev() {
        out_strides[k] = s;
        s *= sa[k];
    }
    let mut idx = vec![0usize; sa.len()];
    for v in a {
        let o: usize = idx.iter().zip(&out_strides).map(|(i, s)| i * s).sum();
        if let Some(x) = acc.get_mut(o) {
            let v = f64::from(*v);
            *x = match op {
                ReduceOp::Sum => *x + v,
                ReduceOp::Prod => *x * v,
                ReduceOp::Max => x.max(v),
                ReduceOp::Min => x.min(v),
            };
        }
        for k in (0..sa.len()).rev() {
            idx[k] += 1;
            if idx[k] < sa[k] {
                break;
            }
            idx[k] = 0;
        }
    }
    for (d, v) in out.iter_mut().zip(acc) {
        *d = v as f32;
    }
}
