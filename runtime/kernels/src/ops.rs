//! The native f32 kernels for whole-buffer ops: matrix products through a packed GEMM
//! (`matrixmultiply`, split over threads for large products), convolutions as im2col + GEMM,
//! pooling, movement (transpose, slice, concat), reductions, argmax and orthogonalisation. The
//! plan interpreter ([`crate::plan`]) checks every length before it calls them.

// Indexing with `[]` below stays within shapes the caller checked against the buffers.
#![allow(clippy::indexing_slicing)]

use crate::threads;

/// Defines `$name` as a dispatch between `$any` compiled for the baseline and for AVX2 + FMA
/// (checked once at run time): the kernels' own loops vectorise twice as wide where they can.
macro_rules! avx2_dispatch {
    ($(#[$doc:meta])* $vis:vis fn $name:ident / $avx2:ident / $any:ident ($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            if avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA (checked at run time).
                #[allow(unsafe_code)]
                unsafe {
                    $avx2($($arg),*);
                }
                return;
            }
            $any($($arg),*);
        }

        #[cfg(target_arch = "x86_64")]
        #[allow(unsafe_code, clippy::too_many_arguments)]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx2($($arg: $ty),*) {
            $any($($arg),*);
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Mean,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Prod,
    Max,
    Min,
}

/// A 2-D pooling's geometry: `planes` (batch × channels) planes of `h × w` into `oh × ow`.
#[derive(Clone, Copy, Debug)]
pub struct Pool {
    pub kind: PoolKind,
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: (i64, i64),
    pub pad: (i64, i64),
}

avx2_dispatch!(
    /// Pooling over `[B, C, H, W]` windows: the forward (`grad` None: write each window's max or
    /// mean to `out`) or the gradient (`grad` given: add each window's gradient to the input
    /// positions it came from; max sends it to the first maximum, §12.12).
    pub fn pool / pool_avx2 / pool_any (x: &[f32], p: &Pool, grad: Option<&[f32]>, out: &mut [f32]));

#[inline(always)]
fn im2col_any(g: &Geom, x: &[f32], cols: &mut [f32]) {
    g.im2col_body(x, cols);
}

#[inline(always)]
fn pool_any(x: &[f32], p: &Pool, grad: Option<&[f32]>, out: &mut [f32]) {
    let Pool { kind, planes, h, w, oh, ow, kh, kw, stride, pad } = *p;
    // Non-overlapping max windows inside the image (LeNet's 2×2, stride 2): no bounds checks.
    if kind == PoolKind::Max
        && pad == (0, 0)
        && stride == (kh as i64, kw as i64)
        && oh * kh <= h
        && ow * kw <= w
    {
        for plane in 0..planes {
            for oy in 0..oh {
                for ox in 0..ow {
                    let base = (plane * h + oy * kh) * w + ox * kw;
                    let mut best = (x[base], base);
                    for ty in 0..kh {
                        for tx in 0..kw {
                            let at = base + ty * w + tx;
                            if x[at] > best.0 {
                                best = (x[at], at);
                            }
                        }
                    }
                    let o = (plane * oh + oy) * ow + ox;
                    match grad {
                        None => out[o] = best.0,
                        Some(gr) => out[best.1] += gr[o],
                    }
                }
            }
        }
        return;
    }
    let area = (kh * kw) as f32;
    for plane in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut best = (f32::NEG_INFINITY, usize::MAX);
                let mut sum = 0.0f32;
                let g = grad.map(|gr| gr[(plane * oh + oy) * ow + ox]);
                for ty in 0..kh {
                    let Some(iy) = Geom::src(oy, ty, stride.0, pad.0, 1, h) else { continue };
                    for tx in 0..kw {
                        let Some(ix) = Geom::src(ox, tx, stride.1, pad.1, 1, w) else { continue };
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
#[derive(Clone, Copy, Debug)]
pub struct Geom {
    pub b: usize,
    pub cin: usize,
    pub cout: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    /// Stride, padding and dilation (vertical, horizontal).
    pub s: (i64, i64),
    pub p: (i64, i64),
    pub d: (i64, i64),
}

impl Geom {
    /// The input position output `o` reads through tap `t` on an axis, if inside.
    fn src(o: usize, t: usize, s: i64, p: i64, d: i64, size: usize) -> Option<usize> {
        let i = o as i64 * s - p + t as i64 * d;
        (0..size as i64).contains(&i).then_some(i as usize)
    }

    /// The im2col columns of the whole batch: `cols [Cin*KH*KW, B*OH*OW]`, batch element `n`
    /// in columns `n*OH*OW..` (zeros where padding is read).
    fn im2col(&self, x: &[f32], cols: &mut [f32]) {
        im2col(self, x, cols);
    }
}

avx2_dispatch!(fn im2col / im2col_avx2 / im2col_any (g: &Geom, x: &[f32], cols: &mut [f32]));

impl Geom {
    #[inline(always)]
    fn im2col_body(&self, x: &[f32], cols: &mut [f32]) {
        let plane = self.oh * self.ow;
        let wide = self.b * plane;
        // For each horizontal tap, the output columns that read inside the input and where
        // they start reading; with stride and dilation 1 that range is contiguous.
        let unit = self.s.1 == 1 && self.d.1 == 1;
        let xs: Vec<Vec<Option<usize>>> = (0..self.kw)
            .map(|tx| {
                (0..self.ow).map(|ox| Geom::src(ox, tx, self.s.1, self.p.1, self.d.1, self.w)).collect()
            })
            .collect();
        for n in 0..self.b {
            for ci in 0..self.cin {
                let base = (n * self.cin + ci) * self.h;
                for ty in 0..self.kh {
                    for (tx, cols_x) in xs.iter().enumerate() {
                        let row = ((ci * self.kh + ty) * self.kw + tx) * wide + n * plane;
                        let first = cols_x.iter().position(Option::is_some);
                        let last = cols_x.iter().rposition(Option::is_some);
                        for oy in 0..self.oh {
                            let dst = &mut cols[row + oy * self.ow..row + (oy + 1) * self.ow];
                            match Geom::src(oy, ty, self.s.0, self.p.0, self.d.0, self.h) {
                                None => dst.fill(0.0),
                                Some(iy) => {
                                    let src = &x[(base + iy) * self.w..(base + iy + 1) * self.w];
                                    match (unit, first, last) {
                                        (true, Some(f), Some(l)) => {
                                            let start = cols_x[f].unwrap_or(0);
                                            dst[..f].fill(0.0);
                                            copy_short(&mut dst[f..=l], &src[start..start + l + 1 - f]);
                                            dst[l + 1..].fill(0.0);
                                        }
                                        _ => {
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
        }
    }
}

/// `dst = src` for rows of a few dozen values: fixed 8-wide moves inline, where a call of
/// `memmove` per row would cost more than the copy.
#[inline]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (x, y) in (&mut d).zip(&mut s) {
        if let (Ok(x), Ok(y)) = (<&mut [f32; 8]>::try_from(x), <&[f32; 8]>::try_from(y)) {
            *x = *y;
        }
    }
    for (x, y) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *x = *y;
    }
}

thread_local! {
    /// Scratch for im2col columns and GEMM products, reused across calls on a thread.
    static SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` with two scratch vectors of at least `n0` and `n1` elements (contents unspecified).
fn with_scratch<R>(n0: usize, n1: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (a, b) = &mut *s;
        if a.len() < n0 {
            a.resize(n0, 0.0);
        }
        if b.len() < n1 {
            b.resize(n1, 0.0);
        }
        f(&mut a[..n0], &mut b[..n1])
    })
}

/// `out [B, Cout, OH*OW]`: one GEMM `weight [Cout, Cin*KH*KW] @ cols [Cin*KH*KW, B*OH*OW]` over
/// the whole batch's im2col columns, then the batch moved back in front.
pub fn conv(x: &[f32], k: &[f32], g: &Geom, out: &mut [f32]) {
    let (kk, plane) = (g.cin * g.kh * g.kw, g.oh * g.ow);
    let wide = g.b * plane;
    with_scratch(kk * wide, g.cout * wide, |cols, prod| {
        g.im2col(x, cols);
        if g.cout <= 16 {
            // Few output channels: direct products per batch element, written where they
            // belong (no reordering copy); the columns of element n are a block of `cols`.
            let per = g.cout * plane;
            let cols = &*cols;
            let run = |n0: usize, chunk: &mut [f32]| {
                for (i, dst) in chunk.chunks_mut(per).enumerate() {
                    let block = &cols[(n0 + i) * plane..];
                    small_gemm(g.cout, kk, plane, k, false, g.cout, block, wide, false, dst);
                }
            };
            // Batch elements split over the threads when there is enough work.
            let parts = threads::get().min(g.b).min(g.cout * kk * wide / (1 << 21)).max(1);
            let rows = g.b.div_ceil(parts);
            std::thread::scope(|scope| {
                let mut chunks = out[..g.b * per].chunks_mut(rows * per).enumerate().peekable();
                while let Some((t, chunk)) = chunks.next() {
                    if chunks.peek().is_none() {
                        run(t * rows, chunk);
                    } else {
                        scope.spawn(move || run(t * rows, chunk));
                    }
                }
            });
            return;
        }
        if g.b == 1 {
            gemm(g.cout, kk, wide, k, cols, &mut out[..g.cout * wide]);
            return;
        }
        gemm(g.cout, kk, wide, k, cols, prod);
        for co in 0..g.cout {
            for n in 0..g.b {
                out[(n * g.cout + co) * plane..(n * g.cout + co + 1) * plane]
                    .copy_from_slice(&prod[co * wide + n * plane..co * wide + (n + 1) * plane]);
            }
        }
    });
}

/// `dW [Cout, Cin*KH*KW] = grad [Cout, B*OH*OW] @ cols [Cin*KH*KW, B*OH*OW]ᵀ`: one GEMM over the
/// whole batch.
pub fn conv_weight_grad(x: &[f32], gr: &[f32], g: &Geom, out: &mut [f32]) {
    let (kk, plane) = (g.cin * g.kh * g.kw, g.oh * g.ow);
    let wide = g.b * plane;
    with_scratch(kk * wide, g.cout * wide, |cols, gt| {
        g.im2col(x, cols);
        for n in 0..g.b {
            for co in 0..g.cout {
                gt[co * wide + n * plane..co * wide + (n + 1) * plane]
                    .copy_from_slice(&gr[(n * g.cout + co) * plane..(n * g.cout + co + 1) * plane]);
            }
        }
        gemm_t(g.cout, wide, kk, gt, false, cols, true, &mut out[..g.cout * kk]);
    });
}

/// The transpose of `conv` (its gradient with respect to the input): `x [B, Cout, OH, OW]`,
/// `k [Cout, Cin, KH, KW]` (the forward conv's weight), `out [B, Cin, H, W]`:
/// `cols = kᵀ @ x[n]`, scattered back through the conv's taps (col2im).
pub fn conv_transpose(x: &[f32], k: &[f32], g: &Geom, out: &mut [f32]) {
    let (kk, plane) = (g.cin * g.kh * g.kw, g.oh * g.ow);
    let wide = g.b * plane;
    out[..g.b * g.cin * g.h * g.w].fill(0.0);
    with_scratch(kk * wide, g.cout * wide, |cols, xt| {
        // xt [Cout, B*OH*OW]; cols [Cin*KH*KW, B*OH*OW] = k [Cout, Cin*KH*KW]ᵀ @ xt: one GEMM.
        for n in 0..g.b {
            for co in 0..g.cout {
                xt[co * wide + n * plane..co * wide + (n + 1) * plane]
                    .copy_from_slice(&x[(n * g.cout + co) * plane..(n * g.cout + co + 1) * plane]);
            }
        }
        gemm_t(kk, g.cout, wide, k, true, xt, false, cols);
        let xs: Vec<Vec<Option<usize>>> = (0..g.kw)
            .map(|tx| (0..g.ow).map(|ox| Geom::src(ox, tx, g.s.1, g.p.1, g.d.1, g.w)).collect())
            .collect();
        for n in 0..g.b {
            for ci in 0..g.cin {
                for ty in 0..g.kh {
                    for (tx, cols_x) in xs.iter().enumerate() {
                        let row = ((ci * g.kh + ty) * g.kw + tx) * wide + n * plane;
                        for oy in 0..g.oh {
                            let Some(iy) = Geom::src(oy, ty, g.s.0, g.p.0, g.d.0, g.h) else { continue };
                            let dst = &mut out[((n * g.cin + ci) * g.h + iy) * g.w
                                ..((n * g.cin + ci) * g.h + iy + 1) * g.w];
                            let src = &cols[row + oy * g.ow..row + (oy + 1) * g.ow];
                            for (v, ix) in src.iter().zip(cols_x) {
                                if let Some(ix) = ix {
                                    dst[*ix] += v;
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}

/// `c = a @ b` for row-major `a [m, k]`, `b [k, n]`, `c [m, n]` (lengths checked by the caller).
pub fn gemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    gemm_t(m, k, n, a, false, b, false, c);
}

/// `c = op(a) @ op(b)`: `a` is stored `[m, k]` (or `[k, m]` when `ta`), `b` `[k, n]` (or `[n, k]`
/// when `tb`); the transposes are strides, not copies.
///
/// Large products are split by rows of `c` over the threads [`threads::get`] allows.
#[allow(clippy::too_many_arguments)]
pub fn gemm_t(m: usize, k: usize, n: usize, a: &[f32], ta: bool, b: &[f32], tb: bool, c: &mut [f32]) {
    // Direct loops where packing costs more than it saves: a few rows (a forward pass on a
    // small batch, a convolution's few output channels) or a thin inner dimension (a weight
    // gradient on a small batch).
    let direct = m <= 4 || k <= 4 || (m <= 16 && !tb);
    let run = |mt: usize, at: &[f32], chunk: &mut [f32]| {
        if direct {
            small_gemm(mt, k, n, at, ta, m, b, n, tb, chunk);
        } else {
            packed_gemm_strided(mt, k, n, at, ta, m, b, tb, chunk);
        }
    };
    // Below about 4 MFLOP a thread costs more than it saves.
    let min_rows = if direct { 1 } else { 8 };
    let parts = threads::get().min(m / min_rows).min(m * k * n / (1 << 21)).max(1);
    if parts == 1 {
        run(m, a, c);
        return;
    }
    if !direct && n > m {
        // Wider than tall: split the columns of `c`, so each thread packs all of `a` (the
        // smaller operand) but only its part of `b`.
        columns_split(m, k, n, a, ta, b, tb, c, parts);
        return;
    }
    let rows = m.div_ceil(parts);
    let chunks = m.div_ceil(rows);
    std::thread::scope(|scope| {
        for (t, chunk) in c[..m * n].chunks_mut(rows * n).enumerate() {
            let r0 = t * rows;
            let mt = chunk.len() / n;
            // Rows r0.. of op(a): a row offset when `a` is stored [m, k], a column offset when
            // stored [k, m] (the stride `m` still walks it).
            let at = if ta { &a[r0..] } else { &a[r0 * k..] };
            if t + 1 == chunks {
                run(mt, at, chunk);
            } else {
                scope.spawn(move || run(mt, at, chunk));
            }
        }
    });
}

/// Raw operand pointers handed to the threads of [`columns_split`].
#[derive(Clone, Copy)]
struct Ptrs(*const f32, *const f32, *mut f32);
// SAFETY: the threads only read through the first two and write disjoint columns through the
// third, within one scope that outlives none of the borrows they come from.
#[allow(unsafe_code)]
unsafe impl Send for Ptrs {}

/// `c = op(a) @ op(b)` with the columns of `c` split over `parts` threads.
#[allow(unsafe_code, clippy::too_many_arguments)]
fn columns_split(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    ta: bool,
    b: &[f32],
    tb: bool,
    c: &mut [f32],
    parts: usize,
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm buffers");
    let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let cols = n.div_ceil(parts);
    let base = Ptrs(a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    let run = move |j0: usize| {
        let nt = cols.min(n - j0);
        let p = base;
        // SAFETY: column block j0..j0+nt of op(b) starts at element j0 (stored [k, n]) or
        // j0*k (stored [n, k]), and of c at element j0 with row stride n; the blocks of
        // different calls are disjoint and every index stays inside the asserted lengths.
        unsafe {
            let bp = if tb { p.1.add(j0 * k) } else { p.1.add(j0) };
            matrixmultiply::sgemm(
                m,
                k,
                nt,
                1.0,
                p.0,
                rsa,
                csa,
                bp,
                rsb,
                csb,
                0.0,
                p.2.add(j0),
                n as isize,
                1,
            );
        }
    };
    std::thread::scope(|scope| {
        let starts: Vec<usize> = (0..n).step_by(cols).collect();
        for (t, &j0) in starts.iter().enumerate() {
            if t + 1 == starts.len() {
                run(j0);
            } else {
                scope.spawn(move || run(j0));
            }
        }
    });
}

/// `c [m, n] = op(a) @ op(b)` by `matrixmultiply` (single-threaded); a transposed `a` is stored
/// with row stride `lda_t` (its full row count).
#[allow(unsafe_code, clippy::too_many_arguments)]
fn packed_gemm_strided(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    ta: bool,
    lda_t: usize,
    b: &[f32],
    tb: bool,
    c: &mut [f32],
) {
    let a_needed = if ta { if m == 0 || k == 0 { 0 } else { (k - 1) * lda_t + m } } else { m * k };
    assert!(a.len() >= a_needed && b.len() >= k * n && c.len() >= m * n, "gemm buffers");
    let (rsa, csa) = if ta { (1, lda_t as isize) } else { (k as isize, 1) };
    let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
    // SAFETY: the pointers come from slices at least as long as the matrices the strides
    // describe (asserted above); `c` does not alias `a` or `b`.
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

avx2_dispatch!(
    /// `c [m, n] = op(a) @ op(b)` by direct loops: axpy over contiguous rows of `b` in blocks of
    /// columns that stay in cache (or dot products with eight partial sums when `b` is
    /// transposed), both of which the compiler vectorises. A transposed `a` has row stride `lda_t`;
    /// an untransposed `b` row stride `ldb` (its column count, or more for a block of columns).
    fn small_gemm / small_gemm_avx2 / small_gemm_any (m: usize, k: usize, n: usize, a: &[f32], ta: bool, lda_t: usize, b: &[f32], ldb: usize, tb: bool, c: &mut [f32]));

/// Whether this CPU has AVX2 and FMA (the kernels' own loops are compiled for the baseline
/// x86-64 and also, behind this check, for AVX2).
#[cfg(target_arch = "x86_64")]
pub fn avx2_fma() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    })
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn small_gemm_any(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    ta: bool,
    lda_t: usize,
    b: &[f32],
    ldb: usize,
    tb: bool,
    c: &mut [f32],
) {
    let at = |i: usize, p: usize| if ta { a[p * lda_t + i] } else { a[i * k + p] };
    if tb {
        for i in 0..m {
            let row = &mut c[i * n..(i + 1) * n];
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
        }
        return;
    }
    const BLOCK: usize = 512;
    let mut j0 = 0;
    while j0 < n {
        let j1 = (j0 + BLOCK).min(n);
        for i in 0..m {
            let row = &mut c[i * n + j0..i * n + j1];
            row.fill(0.0);
            for p in 0..k {
                let x = at(i, p);
                for (out, bv) in row.iter_mut().zip(&b[p * ldb + j0..p * ldb + j1]) {
                    *out += x * bv;
                }
            }
        }
        j0 = j1;
    }
}

/// `out = a` with its axes permuted (`out` axis `i` is `a`'s axis `perm[i]`).
pub fn transpose(a: &[f32], sa: &[usize], perm: &[usize], out: &mut [f32]) {
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
        *d = a[src];
        for k in (0..r).rev() {
            idx[k] += 1;
            if idx[k] < out_shape[k] {
                break;
            }
            idx[k] = 0;
        }
    }
}

avx2_dispatch!(pub fn reduce / reduce_avx2 / reduce_any (a: &[f32], sa: &[usize], op: ReduceOp, axes: &[usize], out: &mut [f32]));

#[inline(always)]
fn reduce_any(a: &[f32], sa: &[usize], op: ReduceOp, axes: &[usize], out: &mut [f32]) {
    let init = match op {
        ReduceOp::Sum => 0.0,
        ReduceOp::Prod => 1.0,
        ReduceOp::Max => f64::NEG_INFINITY,
        ReduceOp::Min => f64::INFINITY,
    };
    // Neighbouring axes of one kind merge into a group (size-1 axes vanish), so the walk below
    // has one level per group and its innermost level is a contiguous run: a sum over it when
    // it is reduced, an elementwise accumulation into a run of the output when it is kept.
    let mut groups: Vec<(usize, bool)> = Vec::new();
    for (i, &d) in sa.iter().enumerate() {
        let reduced = axes.contains(&i);
        if d == 1 {
            continue;
        }
        match groups.last_mut() {
            Some((e, r)) if *r == reduced => *e *= d,
            _ => groups.push((d, reduced)),
        }
    }
    if groups.is_empty() {
        groups.push((1, false));
    }
    let mut in_stride = vec![1usize; groups.len()];
    let mut out_stride = vec![0usize; groups.len()];
    let (mut si, mut so) = (1, 1);
    for g in (0..groups.len()).rev() {
        in_stride[g] = si;
        si *= groups[g].0;
        if !groups[g].1 {
            out_stride[g] = so;
            so *= groups[g].0;
        }
    }
    // Accumulate in f64 (closer to the reference), then round once.
    let mut acc = vec![init; out.len()];
    let (groups, in_stride, out_stride) = (&groups[..], &in_stride[..], &out_stride[..]);
    // One monomorphic walk per operation, so the inner loops inline it.
    match op {
        ReduceOp::Sum => Walk { a, groups, in_stride, out_stride, init, combine: |x: f64, v: f64| x + v }
            .level(0, 0, 0, &mut acc),
        ReduceOp::Prod => Walk { a, groups, in_stride, out_stride, init, combine: |x: f64, v: f64| x * v }
            .level(0, 0, 0, &mut acc),
        ReduceOp::Max => {
            Walk { a, groups, in_stride, out_stride, init, combine: f64::max }.level(0, 0, 0, &mut acc)
        }
        ReduceOp::Min => {
            Walk { a, groups, in_stride, out_stride, init, combine: f64::min }.level(0, 0, 0, &mut acc)
        }
    }
    for (d, v) in out.iter_mut().zip(acc) {
        *d = v as f32;
    }
}

/// The nested loops of a reduction over merged axis groups.
struct Walk<'a, F> {
    a: &'a [f32],
    groups: &'a [(usize, bool)],
    in_stride: &'a [usize],
    out_stride: &'a [usize],
    init: f64,
    combine: F,
}

impl<F: Fn(f64, f64) -> f64> Walk<'_, F> {
    fn level(&self, g: usize, at: usize, o: usize, acc: &mut [f64]) {
        let (extent, reduced) = self.groups[g];
        if g + 1 == self.groups.len() {
            let run = &self.a[at..at + extent];
            if reduced {
                // Eight independent accumulators, so the fold is not one long dependency chain.
                let mut lanes = [self.init; 8];
                let chunks = run.chunks_exact(8);
                let tail = chunks.remainder();
                for c in chunks {
                    for (l, v) in lanes.iter_mut().zip(c) {
                        *l = (self.combine)(*l, f64::from(*v));
                    }
                }
                let mut v = lanes.iter().fold(self.init, |x, l| (self.combine)(x, *l));
                for t in tail {
                    v = (self.combine)(v, f64::from(*t));
                }
                acc[o] = (self.combine)(acc[o], v);
            } else {
                for (x, v) in acc[o..o + extent].iter_mut().zip(run) {
                    *x = (self.combine)(*x, f64::from(*v));
                }
            }
            return;
        }
        for i in 0..extent {
            self.level(g + 1, at + i * self.in_stride[g], o + i * self.out_stride[g], acc);
        }
    }
}

/// `out [outer, end - start, inner] = a [outer, extent, inner][:, start..end, :]`.
pub fn slice(
    a: &[f32],
    outer: usize,
    extent: usize,
    inner: usize,
    start: usize,
    end: usize,
    out: &mut [f32],
) {
    let w = (end - start) * inner;
    for o in 0..outer {
        let src = &a[o * extent * inner + start * inner..o * extent * inner + end * inner];
        out[o * w..(o + 1) * w].copy_from_slice(src);
    }
}

/// Copies `a [outer, width]` into columns `offset..offset + width` of `out [outer, total]`.
pub fn concat_part(a: &[f32], outer: usize, width: usize, total: usize, offset: usize, out: &mut [f32]) {
    for o in 0..outer {
        out[o * total + offset..o * total + offset + width].copy_from_slice(&a[o * width..(o + 1) * width]);
    }
}

/// The index of the first maximum along the middle axis of `a [outer, extent, inner]`.
pub fn argmax(a: &[f32], outer: usize, extent: usize, inner: usize, out: &mut [f32]) {
    for o in 0..outer {
        for i in 0..inner {
            let mut best = (f32::NEG_INFINITY, 0usize);
            for k in 0..extent {
                let v = a[(o * extent + k) * inner + i];
                if k == 0 || v > best.0 {
                    best = (v, k);
                }
            }
            out[o * inner + i] = best.1 as f32;
        }
    }
}

/// `Q` of a QR decomposition with positive `diag(R)` of `a [rows, cols]`, by modified
/// Gram–Schmidt over the longer side (orthonormal columns of a tall matrix, orthonormal rows of
/// a wide one). In f64: the reference interpreter and the kernels share it.
pub fn orthogonalize(rows: usize, cols: usize, a: &[f64]) -> Vec<f64> {
    let wide = rows < cols;
    let (m, n) = if wide { (cols, rows) } else { (rows, cols) };
    let at = |i: usize, j: usize| if wide { j * cols + i } else { i * cols + j };
    let mut vs: Vec<Vec<f64>> = (0..n).map(|j| (0..m).map(|i| a[at(i, j)]).collect()).collect();
    for j in 0..n {
        for k in 0..j {
            let dot: f64 = (0..m).map(|i| vs[k][i] * vs[j][i]).sum();
            let basis = vs[k].clone();
            for (v, q) in vs[j].iter_mut().zip(basis) {
                *v -= dot * q;
            }
        }
        let norm = vs[j].iter().map(|v| v * v).sum::<f64>().sqrt();
        for v in vs[j].iter_mut() {
            *v /= if norm > 0.0 { norm } else { 1.0 };
        }
    }
    let mut out = vec![0.0; rows * cols];
    for (j, col) in vs.iter().enumerate() {
        for (i, v) in col.iter().enumerate() {
            out[at(i, j)] = *v;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn naive(m: usize, k: usize, n: usize, a: &[f32], ta: bool, b: &[f32], tb: bool) -> Vec<f64> {
        let mut c = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let x = if ta { a[p * m + i] } else { a[i * k + p] };
                    let y = if tb { b[j * k + p] } else { b[p * n + j] };
                    c[i * n + j] += f64::from(x) * f64::from(y);
                }
            }
        }
        c
    }

    fn close(got: &[f32], want: &[f64], what: &str) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((f64::from(*g) - w).abs() <= 1e-3 * w.abs().max(1.0), "{what}[{i}]: {g} vs {w}");
        }
    }

    /// Every GEMM path — direct, packed, split by rows, split by columns — with and without
    /// transposes, on shapes with ragged edges.
    #[test]
    fn gemm_paths_agree_with_a_naive_product() {
        let fill =
            |n: usize, s: f32| (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * s).collect::<Vec<f32>>();
        for (m, k, n) in [
            (3, 5, 7),
            (6, 25, 700),
            (33, 70, 129),
            (130, 150, 61),
            (64, 300, 257),
            (300, 100, 100),
            (16, 200, 1000),
        ] {
            let (a, b) = (fill(m * k, 0.01), fill(k * n, 0.02));
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let want = naive(m, k, n, &a, ta, &b, tb);
                let what = format!("{m}x{k}x{n} ta={ta} tb={tb}");
                let mut c = vec![0.0f32; m * n];
                gemm_t(m, k, n, &a, ta, &b, tb, &mut c);
                close(&c, &want, &format!("gemm_t {what}"));
                let mut c = vec![0.0f32; m * n];
                columns_split(m, k, n, &a, ta, &b, tb, &mut c, 3);
                close(&c, &want, &format!("columns {what}"));
                let mut c = vec![0.0f32; m * n];
                small_gemm(m, k, n, &a, ta, m, &b, n, tb, &mut c);
                close(&c, &want, &format!("direct {what}"));
                let mut c = vec![0.0f32; m * n];
                packed_gemm_strided(m, k, n, &a, ta, m, &b, tb, &mut c);
                close(&c, &want, &format!("packed {what}"));
            }
        }
    }
}
