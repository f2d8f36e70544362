//! The native f32 kernels for whole-buffer ops: matrix products through a packed GEMM
//! (`matrixmultiply`, split over threads for large products), convolutions as im2col + GEMM,
//! pooling, movement (transpose, slice, concat), reductions, argmax and orthogonalisation. The
//! plan interpreter ([`crate::plan`]) checks every length before it calls them.

// Indexing with `[]` below stays within shapes the caller checked against the buffers.
#![allow(clippy::indexing_slicing)]

use crate::gemm::{self, Rows};
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
    // 2×2 max windows at stride 2 inside the image (LeNet's): row pairs as slices, the first
    // maximum chosen without branches (ties and NaN as in the general case below).
    if kind == PoolKind::Max
        && (kh, kw) == (2, 2)
        && stride == (2, 2)
        && pad == (0, 0)
        && oh * 2 <= h
        && ow * 2 <= w
    {
        for plane in 0..planes {
            for oy in 0..oh {
                let top = (plane * h + 2 * oy) * w;
                let (r0, r1) = (&x[top..top + 2 * ow], &x[top + w..top + w + 2 * ow]);
                let o = (plane * oh + oy) * ow;
                let windows = r0.chunks_exact(2).zip(r1.chunks_exact(2));
                match grad {
                    None => {
                        for (d, (a, b)) in out[o..o + ow].iter_mut().zip(windows) {
                            let mut m = a[0];
                            for v in [a[1], b[0], b[1]] {
                                m = if v > m { v } else { m };
                            }
                            *d = m;
                        }
                    }
                    Some(gr) => {
                        for (ox, (g, (a, b))) in gr[o..o + ow].iter().zip(windows).enumerate() {
                            let (mut m, mut at) = (a[0], 0);
                            for (v, k) in [(a[1], 1), (b[0], w), (b[1], w + 1)] {
                                (m, at) = if v > m { (v, k) } else { (m, at) };
                            }
                            out[top + 2 * ox + at] += g;
                        }
                    }
                }
            }
        }
        return;
    }
    // Other non-overlapping max windows inside the image: no bounds checks.
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

/// Runs `f` on every item, spread over the pool's threads ([`threads::run`]).
fn on_threads<T: Send>(mut items: Vec<T>, f: impl Fn(T) + Sync) {
    if items.len() <= 1 {
        items.pop().into_iter().for_each(f);
        return;
    }
    let slots: Vec<std::sync::Mutex<Option<T>>> =
        items.into_iter().map(|t| std::sync::Mutex::new(Some(t))).collect();
    threads::run(slots.len(), &|part| {
        let item =
            slots.get(part).and_then(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        if let Some(item) = item {
            f(item);
        }
    });
}

/// How many images each thread of a convolution takes: the batch split over the threads when
/// there is enough work (`macs` multiply-adds in all; below about 2 M a thread costs more than
/// it saves).
fn images_per_part(g: &Geom, macs: usize) -> usize {
    let parts = threads::get().min(g.b).min(macs / (1 << 21)).max(1);
    g.b.div_ceil(parts).max(1)
}

/// Runs `f(n, out_n, scratch)` for every image `n` of a convolution: the images split over the
/// threads when `macs` multiply-adds pay for it, each part with `scratch_len` (at least 1)
/// floats of its own, `out` holding `per_image` floats per image.
fn each_image(
    g: &Geom,
    macs: usize,
    out: &mut [f32],
    per_image: usize,
    scratch_len: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) {
    let rows = images_per_part(g, macs);
    with_scratch(g.b.div_ceil(rows) * scratch_len, 0, |scratch, _| {
        let parts = out[..g.b * per_image].chunks_mut(rows * per_image).zip(scratch.chunks_mut(scratch_len));
        on_threads(parts.enumerate().collect(), |(t, (outs, scratch))| {
            for (i, out_n) in outs.chunks_mut(per_image).enumerate() {
                f(t * rows + i, out_n, scratch);
            }
        });
    });
}

impl Geom {
    /// Whether some size is 0: every sum is then empty (or there is nothing to write).
    fn empty(&self) -> bool {
        [self.b, self.cin, self.cout, self.h, self.w, self.kh, self.kw, self.oh, self.ow].contains(&0)
    }

    /// This geometry for one image.
    fn one(&self) -> Geom {
        Geom { b: 1, ..*self }
    }

    /// Elements of one input image and of one output image.
    fn image_lens(&self) -> (usize, usize) {
        (self.cin * self.h * self.w, self.cout * self.oh * self.ow)
    }

    /// Adds one image's columns `cols [Cin*KH*KW, OH*OW]` back into the input positions they
    /// were read from, `out [Cin, H, W]` (col2im; padding taps are dropped).
    fn col2im(&self, cols: &[f32], out: &mut [f32]) {
        let plane = self.oh * self.ow;
        let xs: Vec<Vec<Option<usize>>> = (0..self.kw)
            .map(|tx| {
                (0..self.ow).map(|ox| Geom::src(ox, tx, self.s.1, self.p.1, self.d.1, self.w)).collect()
            })
            .collect();
        for ci in 0..self.cin {
            for ty in 0..self.kh {
                for (tx, cols_x) in xs.iter().enumerate() {
                    let row = ((ci * self.kh + ty) * self.kw + tx) * plane;
                    for oy in 0..self.oh {
                        let Some(iy) = Geom::src(oy, ty, self.s.0, self.p.0, self.d.0, self.h) else {
                            continue;
                        };
                        let dst = &mut out[(ci * self.h + iy) * self.w..(ci * self.h + iy + 1) * self.w];
                        let src = &cols[row + oy * self.ow..row + (oy + 1) * self.ow];
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
}

/// A stride-1 convolution computed on "wide" rows: the output at every column of the padded
/// input's width, so that tap `(ci, ty, tx)` reads the padded image shifted by one offset
/// instead of an im2col copy of it; the extra `dw·(kw−1)` columns of each row are dropped.
struct Wide {
    /// Padding of the image (vertical, horizontal) and its padded size.
    pad: (usize, usize),
    hp: usize,
    wp: usize,
    /// Output columns computed per channel: `(oh − 1)·wp + ow`.
    n: usize,
    /// The offset in the padded image of each tap `(ci, ty, tx)`.
    taps: Vec<usize>,
}

impl Wide {
    /// Elements of one padded image (none when there is no padding).
    fn padded_len(&self, cin: usize) -> usize {
        if self.pad == (0, 0) { 0 } else { cin * self.hp * self.wp }
    }

    /// `x [Cin, H, W]` with its zero border, in `into` (or `x` itself without padding).
    fn padded<'a>(&self, g: &Geom, x: &'a [f32], into: &'a mut [f32]) -> &'a [f32] {
        if self.pad == (0, 0) {
            return x;
        }
        into.fill(0.0);
        for ci in 0..g.cin {
            for y in 0..g.h {
                let at = (ci * self.hp + y + self.pad.0) * self.wp + self.pad.1;
                into[at..at + g.w].copy_from_slice(&x[(ci * g.h + y) * g.w..(ci * g.h + y + 1) * g.w]);
            }
        }
        into
    }
}

impl Geom {
    /// The wide form of this convolution: stride 1 and output sizes that match the padded
    /// input exactly (anything else goes through im2col).
    fn wide(&self) -> Option<Wide> {
        let unsigned = |v: i64| usize::try_from(v).ok();
        let (ph, pw, dh, dw) =
            (unsigned(self.p.0)?, unsigned(self.p.1)?, unsigned(self.d.0)?, unsigned(self.d.1)?);
        let hp = self.h.checked_add(ph.checked_mul(2)?)?;
        let wp = self.w.checked_add(pw.checked_mul(2)?)?;
        let reach_h = dh.checked_mul(self.kh.checked_sub(1)?)?;
        let reach_w = dw.checked_mul(self.kw.checked_sub(1)?)?;
        let fits = self.s == (1, 1)
            && self.oh >= 1
            && self.ow >= 1
            && self.oh.checked_add(reach_h)? == hp
            && self.ow.checked_add(reach_w)? == wp;
        if !fits {
            return None;
        }
        let image = hp.checked_mul(wp)?;
        let mut taps = Vec::with_capacity(self.cin * self.kh * self.kw);
        for ci in 0..self.cin {
            for ty in 0..self.kh {
                for tx in 0..self.kw {
                    taps.push(ci * image + ty * dh * wp + tx * dw);
                }
            }
        }
        Some(Wide { pad: (ph, pw), hp, wp, n: (self.oh - 1) * wp + self.ow, taps })
    }

    /// The gradient of this convolution with respect to its input as a stride-1 convolution
    /// of the output gradient (padded by each kernel's reach less the padding) with the kernel
    /// flipped and its channel axes swapped: that geometry and its wide form.
    fn transposed_wide(&self) -> Option<(Geom, Wide)> {
        let reach = |d: i64, k: usize| d.checked_mul(i64::try_from(k).ok()? - 1);
        let p = (reach(self.d.0, self.kh)? - self.p.0, reach(self.d.1, self.kw)? - self.p.1);
        if self.s != (1, 1) || p.0 < 0 || p.1 < 0 {
            return None;
        }
        let t = Geom {
            cin: self.cout,
            cout: self.cin,
            h: self.oh,
            w: self.ow,
            oh: self.h,
            ow: self.w,
            p,
            ..*self
        };
        Some((t, t.wide()?))
    }

    /// `k [Cout, Cin, KH, KW]` as the kernel of [`Geom::transposed_wide`]: `[Cin, Cout, KH, KW]`,
    /// each window flipped.
    fn flipped(&self, k: &[f32]) -> Vec<f32> {
        let area = self.kh * self.kw;
        let mut out = vec![0.0; self.cin * self.cout * area];
        for co in 0..self.cout {
            for ci in 0..self.cin {
                for t in 0..area {
                    out[(ci * self.cout + co) * area + t] = k[(co * self.cin + ci) * area + area - 1 - t];
                }
            }
        }
        out
    }
}

/// `out [B, Cout, OH*OW]`, image by image (the images split over the threads): a product of the
/// weight `[Cout, Cin*KH*KW]` with the image's taps, read in place (stride 1, [`Wide`]) or from
/// its im2col columns `[Cin*KH*KW, OH*OW]`, both small enough to stay in cache.
pub fn conv(x: &[f32], k: &[f32], g: &Geom, out: &mut [f32]) {
    if g.empty() {
        out[..g.b * g.image_lens().1].fill(0.0);
        return;
    }
    match g.wide() {
        Some(wide) => conv_wide(x, k, g, &wide, out),
        None => conv_im2col(x, k, g, out),
    }
}

fn conv_wide(x: &[f32], k: &[f32], g: &Geom, wide: &Wide, out: &mut [f32]) {
    let (kk, plane) = (g.cin * g.kh * g.kw, g.oh * g.ow);
    let (x_len, y_len) = g.image_lens();
    let pad_len = wide.padded_len(g.cin);
    let weight_rows = gemm::row_starts(g.cout, kk);
    let weight = Rows { data: k, starts: &weight_rows, step: 1 };
    let macs = g.b * g.cout * kk * plane;
    each_image(g, macs, out, y_len, pad_len + g.cout * wide.n, |n, y, scratch| {
        let (pad, wide_out) = scratch.split_at_mut(pad_len);
        let src = wide.padded(g, &x[n * x_len..(n + 1) * x_len], pad);
        gemm::direct(g.cout, kk, wide.n, weight, src, &wide.taps, wide_out, wide.n, false);
        for co in 0..g.cout {
            for oy in 0..g.oh {
                let from = co * wide.n + oy * wide.wp;
                y[co * plane + oy * g.ow..co * plane + (oy + 1) * g.ow]
                    .copy_from_slice(&wide_out[from..from + g.ow]);
            }
        }
    });
}

fn conv_im2col(x: &[f32], k: &[f32], g: &Geom, out: &mut [f32]) {
    let (kk, plane) = (g.cin * g.kh * g.kw, g.oh * g.ow);
    let ((x_len, y_len), one) = (g.image_lens(), g.one());
    let (starts, weight_rows) = (gemm::row_starts(kk, plane), gemm::row_starts(g.cout, kk));
    let weight = Rows { data: k, starts: &weight_rows, step: 1 };
    each_image(g, g.b * g.cout * kk * plane, out, y_len, kk * plane, |n, y, cols| {
        one.im2col(&x[n * x_len..(n + 1) * x_len], cols);
        gemm::direct(g.cout, kk, plane, weight, cols, &starts, y, plane, false);
    });
}

/// `dW [Cout, Cin*KH*KW] = Σ_n grad_n [Cout, OH*OW] · taps_n`, summed image by image into the
/// partials of up to eight fixed groups of images (spread over the threads), which are added in
/// order at the end: the result does not depend on the number of threads.
/// With stride 1 ([`Wide`]) the taps are the shifted padded image and the gradient is laid out
/// wide (zeros in the extra columns); otherwise the taps are the im2col columns.
pub fn conv_weight_grad(x: &[f32], gr: &[f32], g: &Geom, out: &mut [f32]) {
    let (kk, plane) = (g.cin * g.kh * g.kw, g.oh * g.ow);
    if g.empty() {
        out[..g.cout * kk].fill(0.0);
        return;
    }
    let ((x_len, y_len), one) = (g.image_lens(), g.one());
    let wide = g.wide();
    // Many output channels: the partial is `dWᵀ [Cin*KH*KW, Cout]`, a product whose rows are the
    // taps (a full 16-lane tile across the channels); few: dot products along the positions.
    let transposed = wide.is_some() && g.cout > 8;
    // Per group: the padded image and the wide gradient, or the im2col columns.
    let (first, second) = match &wide {
        Some(w) => (w.padded_len(g.cin), w.n * g.cout),
        None => (kk * plane, 0),
    };
    let starts = match &wide {
        Some(w) if transposed => gemm::row_starts(w.n, g.cout),
        Some(_) => Vec::new(),
        None => gemm::row_starts(kk, plane),
    };
    // The images in a fixed number of groups, each summed in order into a partial of its own
    // and the partials added in order: the same sums whatever the number of threads.
    let rows = g.b.div_ceil(g.b.min(8));
    let dw = g.cout * kk;
    let mut partials = vec![0.0f32; g.b.div_ceil(rows) * dw];
    let groups: Vec<(usize, &mut [f32])> = partials.chunks_mut(dw).enumerate().collect();
    let group = |(t, acc): (usize, &mut [f32])| {
        with_scratch(first + second, 0, |scratch, _| {
            let (first, second) = scratch.split_at_mut(first);
            second.fill(0.0);
            for n in t * rows..((t + 1) * rows).min(g.b) {
                let (x_n, grad) = (&x[n * x_len..(n + 1) * x_len], &gr[n * y_len..(n + 1) * y_len]);
                let add = n > t * rows;
                let Some(w) = &wide else {
                    one.im2col(x_n, first);
                    gemm::dot(g.cout, plane, kk, grad, plane, first, &starts, acc, kk, add);
                    continue;
                };
                let src = w.padded(g, x_n, first);
                for co in 0..g.cout {
                    for oy in 0..g.oh {
                        let row = &grad[co * plane + oy * g.ow..co * plane + (oy + 1) * g.ow];
                        if transposed {
                            for (ox, v) in row.iter().enumerate() {
                                second[(oy * w.wp + ox) * g.cout + co] = *v;
                            }
                        } else {
                            second[co * w.n + oy * w.wp..co * w.n + oy * w.wp + g.ow].copy_from_slice(row);
                        }
                    }
                }
                if transposed {
                    let taps = Rows { data: src, starts: &w.taps, step: 1 };
                    gemm::direct(kk, w.n, g.cout, taps, second, &starts, acc, g.cout, add);
                } else {
                    gemm::dot(g.cout, w.n, kk, second, w.n, src, &w.taps, acc, kk, add);
                }
            }
        });
    };
    // Threads only when the work pays for them (about 2 M multiply-adds each).
    if images_per_part(g, g.b * g.cout * kk * plane) < g.b {
        on_threads(groups, group);
    } else {
        groups.into_iter().for_each(group);
    }
    let out = &mut out[..dw];
    out.fill(0.0);
    for partial in partials.chunks(dw) {
        for (r, o) in out.iter_mut().enumerate() {
            // A transposed partial holds element (co, tap) at tap * Cout + co.
            let at = if transposed { (r % kk) * g.cout + r / kk } else { r };
            *o += partial[at];
        }
    }
}

/// The transpose of `conv` (its gradient with respect to the input): `x [B, Cout, OH, OW]`,
/// `k [Cout, Cin, KH, KW]` (the forward conv's weight), `out [B, Cin, H, W]`. With stride 1 it
/// is itself a convolution ([`Geom::transposed_wide`]); otherwise, per image, `cols = kᵀ @ x[n]`
/// scattered back through the conv's taps (col2im).
pub fn conv_transpose(x: &[f32], k: &[f32], g: &Geom, out: &mut [f32]) {
    if g.empty() {
        out[..g.b * g.image_lens().0].fill(0.0);
        return;
    }
    if let Some((t, wide)) = g.transposed_wide() {
        conv_wide(x, &g.flipped(k), &t, &wide, out);
        return;
    }
    let (kk, plane) = (g.cin * g.kh * g.kw, g.oh * g.ow);
    let ((in_len, y_len), one) = (g.image_lens(), g.one());
    let (starts, weight_rows) = (gemm::row_starts(g.cout, plane), gemm::row_starts(kk, 1));
    // kᵀ: row `r` of the transposed weight starts at element r, its elements kk apart.
    let weight = Rows { data: k, starts: &weight_rows, step: kk };
    each_image(g, g.b * g.cout * kk * plane, out, in_len, kk * plane, |n, dst, cols| {
        let grad = &x[n * y_len..(n + 1) * y_len];
        gemm::direct(kk, g.cout, plane, weight, grad, &starts, cols, plane, false);
        dst.fill(0.0);
        one.col2im(cols, dst);
    });
}

/// `c = a @ b` for row-major `a [m, k]`, `b [k, n]`, `c [m, n]` (lengths checked by the caller).
pub fn gemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    gemm_t(m, k, n, a, false, b, false, c);
}

/// `c = op(a) @ op(b)`: `a` is stored `[m, k]` (or `[k, m]` when `ta`), `b` `[k, n]` (or `[n, k]`
/// when `tb`); the transposes are strides, not copies.
///
/// Products of a few hundred thousand multiply-adds or more are split by rows (or columns) of
/// `c` over the threads [`threads::get`] allows.
#[allow(clippy::too_many_arguments)]
pub fn gemm_t(m: usize, k: usize, n: usize, a: &[f32], ta: bool, b: &[f32], tb: bool, c: &mut [f32]) {
    if m == 0 || n == 0 {
        return;
    }
    // One column of `b` is the same memory stored [k, 1] or [1, k], and one row of `a` stored
    // [1, k] or [k, 1]: such products take the dot-product layout (a squared norm, x · x).
    let (ta, tb) = (ta && m > 1, tb || n == 1);
    // A transposed right operand (a dense layer's weight, stored [out, in]) that many rows read:
    // each thread transposes it strip by strip (32 columns of the product at a time) into a
    // scratch strip whose rows the direct tiles read, instead of the packed kernel (measured
    // with AVX-512, two threads: 128×784×256 318 → 270 µs, 64×400×120 60 → 39 µs).
    // Only where the untransposed product would take the direct tiles too (with AVX-512).
    let strips = tb && !ta && n > 1 && m >= STRIP_ROWS && !packs(m, k, false);
    // A matrix times a vector is a dot product per row, which no tile or packing speeds up.
    let vector = n == 1 && !ta;
    let packed = !strips && !vector && packs(m, k, tb);
    // Below about 256 K multiply-adds (a few µs) a second thread costs more than it saves.
    let min_rows = 8;
    let parts = threads::get().min(m / min_rows).min(m * k * n / (1 << 18)).max(1);
    if packed && parts > 1 && n > m {
        // Wider than tall: split the columns of `c`, so each thread packs all of `a` (the
        // smaller operand) but only its part of `b`.
        columns_split(m, k, n, a, ta, b, tb, c, parts);
        return;
    }
    // `dot` reads rows of `a` along k: a transposed `a` is copied once into that layout.
    let copy = tb && ta && !packed;
    let a_rows: std::borrow::Cow<'_, [f32]> =
        if copy { (0..m * k).map(|q| a[(q % k) * m + q / k]).collect::<Vec<f32>>().into() } else { a.into() };
    let (a, ta) = (&*a_rows, ta && !copy);
    // Row starts for the direct tiles (the packed kernel takes strides); with strips, those
    // of a full transposed strip.
    let (starts, b_starts) = match (packed, ta, tb) {
        (true, ..) => (Vec::new(), Vec::new()),
        (false, ta, tb) => (
            if ta { gemm::row_starts(m, 1) } else { gemm::row_starts(m, k) },
            match (strips, tb) {
                (true, _) => gemm::row_starts(k, STRIP_WIDTH),
                (false, true) => gemm::row_starts(n, k),
                (false, false) => gemm::row_starts(k, n),
            },
        ),
    };
    let rows = m.div_ceil(parts);
    let run = |(r0, chunk): (usize, &mut [f32])| {
        let mt = chunk.len() / n;
        match (packed, tb) {
            (false, true) if strips => {
                let rows_a = Rows { data: a, starts: &starts[r0..r0 + mt], step: 1 };
                STRIP.with(|cell| {
                    let mut strip = cell.take();
                    strip.resize(k * STRIP_WIDTH, 0.0);
                    for j in (0..n).step_by(STRIP_WIDTH) {
                        let w = STRIP_WIDTH.min(n - j);
                        // Columns j..j+w of op(b) are rows j..j+w of the stored matrix.
                        transpose_2d(&b[j * k..(j + w) * k], w, k, &mut strip);
                        // (Only the last strip may be narrower, its rows `w` apart.)
                        let narrow;
                        let strip_rows = if w == STRIP_WIDTH {
                            &b_starts
                        } else {
                            narrow = gemm::row_starts(k, w);
                            &narrow
                        };
                        gemm::direct(mt, k, w, rows_a, &strip, strip_rows, &mut chunk[j..], n, false);
                    }
                    cell.replace(strip);
                });
            }
            // Rows r0.. of op(a): a row offset when `a` is stored [m, k], a column offset when
            // stored [k, m] (the stride `m` still walks it).
            (true, _) => {
                packed_gemm_strided(mt, k, n, if ta { &a[r0..] } else { &a[r0 * k..] }, ta, m, b, tb, chunk)
            }
            (false, false) => {
                let rows_a = Rows { data: a, starts: &starts[r0..r0 + mt], step: if ta { m } else { 1 } };
                gemm::direct(mt, k, n, rows_a, b, &b_starts, chunk, n, false);
            }
            (false, true) => gemm::dot(mt, k, n, &a[r0 * k..], k, b, &b_starts, chunk, n, false),
        }
    };
    on_threads(
        c[..m * n].chunks_mut(rows * n).enumerate().map(|(t, chunk)| (t * rows, chunk)).collect(),
        run,
    );
}

/// The fewest rows of a product whose transposed right operand is transposed strip by strip,
/// and a strip's width (the AVX-512 tile's).
const STRIP_ROWS: usize = 32;
const STRIP_WIDTH: usize = 32;

thread_local! {
    /// Each thread's transposed strip, kept between products (a fresh one of a few hundred KB
    /// costs page faults on every call).
    static STRIP: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `nb` products `c[t] = op(a[t]) @ op(b[t])` (as [`gemm_t`]) stored one after another. Many
/// small ones (attention's per-head products) are split over the threads by `t`; large ones
/// split themselves.
#[allow(clippy::too_many_arguments)]
pub fn gemm_batch(
    nb: usize,
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    ta: bool,
    b: &[f32],
    tb: bool,
    c: &mut [f32],
) {
    let (mk, kn, mn) = (m * k, k * n, m * n);
    if mn == 0 || nb == 0 {
        return;
    }
    let one = |t: usize, c: &mut [f32]| {
        gemm_t(m, k, n, &a[t * mk..(t + 1) * mk], ta, &b[t * kn..(t + 1) * kn], tb, c)
    };
    let small = m * k * n < 1 << 18;
    let parts = if small { threads::get().min(nb).min(nb * m * k * n / (1 << 18)).max(1) } else { 1 };
    let per = nb.div_ceil(parts);
    on_threads(c[..nb * mn].chunks_mut(per * mn).enumerate().collect(), |(p, chunk): (usize, &mut [f32])| {
        for (i, c) in chunk.chunks_exact_mut(mn).enumerate() {
            one(p * per + i, c);
        }
    });
}

/// Whether a product goes through `matrixmultiply`'s packed kernel rather than the direct
/// tiles of [`gemm`]. Measured here (2 cores, 2026-11-26): with AVX-512 the direct tiles beat
/// packing at every size up to 1024³ (about 220 against 200 GFLOP/s on two threads) as long as
/// `a` stays in cache; with AVX2 alone packing pays from about 16 rows up, the tiles winning for a
/// few rows (a forward pass on one row of a 784 → 256 layer: 9 µs against 143) and a thin inner
/// dimension. Dot products (`b` transposed) keep up to 16 rows unless the rows are short.
fn packs(m: usize, k: usize, tb: bool) -> bool {
    if tb {
        m > 16 || k < 16
    } else if gemm::Level::best() == gemm::Level::Avx512 {
        m * k > 1 << 20
    } else {
        m > 8 && k > 4
    }
}

/// Raw operand pointers handed to the threads of [`columns_split`].
#[derive(Clone, Copy)]
struct Ptrs(*const f32, *const f32, *mut f32);
// SAFETY: the threads only read through the first two and write disjoint columns through the
// third, within one `threads::run` that outlives none of the borrows they come from.
#[allow(unsafe_code)]
unsafe impl Send for Ptrs {}
// SAFETY: as above; the closure that holds them is shared by the threads.
#[allow(unsafe_code)]
unsafe impl Sync for Ptrs {}

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
    on_threads((0..n).step_by(cols).collect(), run);
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

/// Whether this CPU has AVX2 and FMA (the kernels' own loops are compiled for the baseline
/// x86-64 and also, behind this check, for AVX2).
#[cfg(target_arch = "x86_64")]
pub fn avx2_fma() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    })
}

/// `out = a` with its axes permuted (`out` axis `i` is `a`'s axis `perm[i]`).
/// `dst [cols, rows] = src [rows, cols]ᵀ`: 8 × 8 blocks on AVX2 registers where the CPU has
/// them (a weight transposed for a product, every step), plain 16 × 16 blocks elsewhere.
pub fn transpose_2d(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols, "transpose buffers");
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU has AVX2 (checked at run time); the lengths were asserted.
        #[allow(unsafe_code)]
        unsafe {
            transpose_avx2(src, rows, cols, dst);
        }
        return;
    }
    transpose_blocks(src, rows, cols, dst);
}

fn transpose_blocks(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    for ib in (0..rows).step_by(16) {
        for jb in (0..cols).step_by(16) {
            for i in ib..(ib + 16).min(rows) {
                for j in jb..(jb + 16).min(cols) {
                    dst[j * rows + i] = src[i * cols + j];
                }
            }
        }
    }
}

/// Full 8 × 8 blocks in registers (unpack, shuffle, swap halves), the ragged edges plainly.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_avx2(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let (full_rows, full_cols) = (rows / 8 * 8, cols / 8 * 8);
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    for i in (0..full_rows).step_by(8) {
        for j in (0..full_cols).step_by(8) {
            // SAFETY: rows i..i+8 and columns j..j+8 lie inside both matrices.
            unsafe {
                let r: [__m256; 8] = std::array::from_fn(|k| _mm256_loadu_ps(sp.add((i + k) * cols + j)));
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let out = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (k, v) in out.iter().enumerate() {
                    _mm256_storeu_ps(dp.add((j + k) * rows + i), *v);
                }
            }
        }
    }
    // The ragged edges: the last rows (every column), then the last columns (the other rows).
    for i in full_rows..rows {
        for j in 0..cols {
            dst[j * rows + i] = src[i * cols + j];
        }
    }
    for i in 0..full_rows {
        for j in full_cols..cols {
            dst[j * rows + i] = src[i * cols + j];
        }
    }
}

pub fn transpose(a: &[f32], sa: &[usize], perm: &[usize], out: &mut [f32]) {
    let r = sa.len();
    // The last two axes swapped (a weight transposed once for many products): matrix by
    // matrix in 16 × 16 blocks, so reads and writes both stay within a few cache lines.
    let swap_last_two = r >= 2
        && perm.iter().take(r - 2).enumerate().all(|(i, p)| i == *p)
        && perm.get(r - 2) == Some(&(r - 1))
        && perm.get(r - 1) == Some(&(r - 2));
    if swap_last_two {
        let (rows, cols) = (sa[r - 2], sa[r - 1]);
        let size = rows * cols;
        if size == 0 {
            return;
        }
        for (src, dst) in a.chunks_exact(size).zip(out.chunks_exact_mut(size)) {
            transpose_2d(src, rows, cols, dst);
        }
        return;
    }
    let mut in_strides = vec![1usize; r];
    for k in (0..r.saturating_sub(1)).rev() {
        in_strides[k] = in_strides[k + 1] * sa[k + 1];
    }
    // The output's axes as (extent, input stride), size-1 axes dropped and neighbours that are
    // also neighbours in the input merged (an attention head's features stay one run).
    let mut axes: Vec<(usize, usize)> = Vec::with_capacity(r);
    for p in perm {
        let (Some(&d), Some(&st)) = (sa.get(*p), in_strides.get(*p)) else { return };
        if d == 0 {
            return;
        }
        if d == 1 {
            continue;
        }
        match axes.last_mut() {
            Some((e, s)) if *s == st * d => (*e, *s) = (*e * d, st),
            _ => axes.push((d, st)),
        }
    }
    let Some(&(run, step)) = axes.last() else {
        // Every axis of size 1: one element.
        if let (Some(o), Some(v)) = (out.first_mut(), a.first()) {
            *o = *v;
        }
        return;
    };
    // Row by row: the last merged axis is a run (a copy when contiguous); an odometer over the
    // others finds where each row starts.
    let outer = &axes[..axes.len() - 1];
    let mut idx = vec![0usize; outer.len()];
    let mut at = 0;
    for chunk in out.chunks_exact_mut(run) {
        if step == 1 {
            chunk.copy_from_slice(&a[at..at + run]);
        } else {
            for (j, d) in chunk.iter_mut().enumerate() {
                *d = a[at + j * step];
            }
        }
        for (k, &(extent, stride)) in outer.iter().enumerate().rev() {
            idx[k] += 1;
            at += stride;
            if idx[k] < extent {
                break;
            }
            idx[k] = 0;
            at -= extent * stride;
        }
    }
}

/// `out = op over axes of a [sa]`, accumulated in f64. A large reduction over leading axes
/// (the batch sum of a gradient over many rows) splits its kept columns over the threads: each
/// column is still summed row by row in one order, so the result does not depend on them.
pub fn reduce(a: &[f32], sa: &[usize], op: ReduceOp, axes: &[usize], out: &mut [f32]) {
    let lead = axes.len();
    let leading = axes.iter().enumerate().all(|(k, x)| *x == k) && lead < sa.len();
    let rows: usize = sa.iter().take(lead).product();
    let cols: usize = sa.iter().skip(lead).product();
    let parts = threads::get().min(cols / 64).max(1);
    if leading && parts > 1 && rows * cols >= 1 << 17 && a.len() >= rows * cols && out.len() >= cols {
        let width = cols.div_ceil(parts);
        let chunks: Vec<(usize, &mut [f32])> =
            out[..cols].chunks_mut(width).enumerate().map(|(p, c)| (p * width, c)).collect();
        on_threads(chunks, |(c0, chunk)| reduce_columns(a, rows, cols, c0, op, chunk));
        return;
    }
    reduce_whole(a, sa, op, axes, out);
}

avx2_dispatch!(fn reduce_whole / reduce_avx2 / reduce_any (a: &[f32], sa: &[usize], op: ReduceOp, axes: &[usize], out: &mut [f32]));

avx2_dispatch!(fn reduce_columns / reduce_columns_avx2 / reduce_columns_any (a: &[f32], rows: usize, cols: usize, c0: usize, op: ReduceOp, out: &mut [f32]));

/// Columns `c0..c0 + out.len()` of `op` over the rows of `a [rows, cols]`, in row order (as
/// [`reduce_any`] accumulates a kept run).
#[inline(always)]
fn reduce_columns_any(a: &[f32], rows: usize, cols: usize, c0: usize, op: ReduceOp, out: &mut [f32]) {
    match op {
        ReduceOp::Sum => columns(a, rows, cols, c0, out, 0.0, |x, v| x + v),
        ReduceOp::Prod => columns(a, rows, cols, c0, out, 1.0, |x, v| x * v),
        ReduceOp::Max => columns(a, rows, cols, c0, out, f64::NEG_INFINITY, f64::max),
        ReduceOp::Min => columns(a, rows, cols, c0, out, f64::INFINITY, f64::min),
    }
}

#[inline(always)]
fn columns(
    a: &[f32],
    rows: usize,
    cols: usize,
    c0: usize,
    out: &mut [f32],
    init: f64,
    combine: impl Fn(f64, f64) -> f64,
) {
    let w = out.len();
    let mut acc = vec![init; w];
    for r in 0..rows {
        let row = &a[r * cols + c0..r * cols + c0 + w];
        for (x, v) in acc.iter_mut().zip(row) {
            *x = combine(*x, f64::from(*v));
        }
    }
    for (d, v) in out.iter_mut().zip(acc) {
        *d = v as f32;
    }
}

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

    /// Every permutation of rank-4 shapes (with and without size-1 axes) against plain
    /// index arithmetic: the merged runs, the strided runs and the blocked 2-D swap.
    #[test]
    fn transposes_match_index_arithmetic() {
        fn perms(n: usize) -> Vec<Vec<usize>> {
            if n == 0 {
                return vec![vec![]];
            }
            let mut all = Vec::new();
            for p in perms(n - 1) {
                for at in 0..=p.len() {
                    let mut q = p.clone();
                    q.insert(at, n - 1);
                    all.push(q);
                }
            }
            all
        }
        for sa in [[3usize, 4, 2, 5], [2, 1, 3, 1], [17, 1, 3, 19]] {
            let n: usize = sa.iter().product();
            let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
            for perm in perms(4) {
                let shape: Vec<usize> = perm.iter().map(|p| sa[*p]).collect();
                let mut want = vec![0.0f32; n];
                for (o, w) in want.iter_mut().enumerate() {
                    // Output index o as coordinates, then the input element they name.
                    let mut rest = o;
                    let mut coords = [0usize; 4];
                    for k in (0..4).rev() {
                        coords[perm[k]] = rest % shape[k];
                        rest /= shape[k];
                    }
                    *w = a[((coords[0] * sa[1] + coords[1]) * sa[2] + coords[2]) * sa[3] + coords[3]];
                }
                let mut got = vec![f32::NAN; n];
                transpose(&a, &sa, &perm, &mut got);
                assert_eq!(got, want, "{sa:?} {perm:?}");
            }
        }
    }

    /// A size of 0 anywhere gives zeros (or nothing), never a panic.
    #[test]
    fn empty_sizes_give_zeros() {
        let full = Geom {
            b: 2,
            cin: 2,
            cout: 3,
            h: 4,
            w: 4,
            kh: 3,
            kw: 3,
            oh: 4,
            ow: 4,
            s: (1, 1),
            p: (1, 1),
            d: (1, 1),
        };
        for zero in 0..9 {
            let mut g = full;
            let field = [
                &mut g.b,
                &mut g.cin,
                &mut g.cout,
                &mut g.h,
                &mut g.w,
                &mut g.kh,
                &mut g.kw,
                &mut g.oh,
                &mut g.ow,
            ];
            *field.into_iter().nth(zero).unwrap() = 0;
            let (x, k, y) = (vec![1.0; 64], vec![1.0; 64], vec![1.0; 128]);
            let mut out = vec![f32::NAN; 128];
            conv(&x, &k, &g, &mut out);
            assert!(out[..g.b * g.cout * g.oh * g.ow].iter().all(|v| *v == 0.0), "{g:?}");
            conv_weight_grad(&x, &y, &g, &mut out);
            conv_transpose(&y, &k, &g, &mut out);
        }
        let mut c = vec![f32::NAN; 4];
        gemm_t(0, 3, 4, &[], false, &[0.0; 12], false, &mut c);
        gemm_t(4, 3, 0, &[0.0; 12], false, &[], false, &mut c);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            c.fill(f32::NAN);
            gemm_t(2, 0, 2, &[], ta, &[], tb, &mut c);
            assert_eq!(c, vec![0.0; 4], "k = 0, ta {ta} tb {tb}");
        }
    }

    /// Max pooling (the 2×2 path, the other non-overlapping path and the general one) against
    /// plain loops, with many ties (the first maximum takes the gradient) and a NaN, on
    /// images whose last row and column no window covers.
    #[test]
    fn max_pooling_matches_plain_loops() {
        for (kh, kw, s) in [(2, 2, 2i64), (3, 2, 0), (2, 2, 1)] {
            let stride = if s == 0 { (kh as i64, kw as i64) } else { (s, s) };
            let (planes, h, w) = (3, 7, 9);
            let oh = (h - kh) / stride.0 as usize + 1;
            let ow = (w - kw) / stride.1 as usize + 1;
            let p = Pool { kind: PoolKind::Max, planes, h, w, oh, ow, kh, kw, stride, pad: (0, 0) };
            let mut x: Vec<f32> = (0..planes * h * w).map(|i| ((i * 7 + i / 5) % 4) as f32).collect();
            x[10] = f32::NAN;
            let g: Vec<f32> = (0..planes * oh * ow).map(|i| 1.0 + i as f32).collect();
            let (mut want_y, mut want_dx) = (vec![0.0f32; g.len()], vec![0.0f32; x.len()]);
            for (o, (gv, yv)) in g.iter().zip(want_y.iter_mut()).enumerate() {
                let (plane, oy, ox) = (o / (oh * ow), o / ow % oh, o % ow);
                let mut best = (f32::NAN, usize::MAX);
                for ty in 0..kh {
                    for tx in 0..kw {
                        let at = (plane * h + oy * stride.0 as usize + ty) * w + ox * stride.1 as usize + tx;
                        if best.1 == usize::MAX || x[at] > best.0 {
                            best = (x[at], at);
                        }
                    }
                }
                *yv = best.0;
                want_dx[best.1] += gv;
            }
            let mut y = vec![0.0f32; g.len()];
            pool(&x, &p, None, &mut y);
            let same =
                |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a == b || (a.is_nan() && b.is_nan()));
            assert!(same(&y, &want_y), "forward {kh}x{kw} stride {stride:?}: {y:?} vs {want_y:?}");
            let mut dx = vec![0.0f32; x.len()];
            pool(&x, &p, Some(&g), &mut dx);
            assert!(same(&dx, &want_dx), "gradient {kh}x{kw} stride {stride:?}: {dx:?} vs {want_dx:?}");
        }
    }

    /// The three convolution kernels, wide and im2col paths alike, against plain loops over
    /// every geometry kind: padding, asymmetric strides, dilation, rectangular images, 1-D,
    /// one and several threads (the last case is big enough to split its batch).
    #[test]
    #[allow(clippy::type_complexity)]
    fn convolutions_match_plain_loops() {
        #[rustfmt::skip]
        let cases: [(usize, usize, usize, usize, usize, usize, usize, (i64, i64), (i64, i64), (i64, i64)); 9] = [
            // b, cin, cout, h, w, kh, kw, stride, pad, dilation
            (2, 1, 6, 8, 8, 5, 5, (1, 1), (2, 2), (1, 1)),
            (3, 6, 16, 7, 9, 3, 3, (1, 1), (0, 0), (1, 1)),
            (2, 3, 4, 8, 8, 3, 3, (2, 2), (1, 1), (1, 1)),
            (2, 3, 4, 8, 8, 3, 3, (1, 1), (0, 0), (2, 2)),
            (2, 3, 4, 8, 8, 3, 3, (1, 3), (1, 1), (1, 1)),
            (2, 2, 9, 6, 5, 2, 3, (1, 1), (1, 2), (2, 1)),
            (2, 3, 5, 1, 20, 1, 4, (2, 2), (0, 1), (1, 1)),
            (1, 4, 3, 5, 5, 5, 5, (1, 1), (4, 4), (1, 1)),
            (12, 8, 16, 20, 20, 3, 3, (1, 1), (1, 1), (1, 1)),
        ];
        for (b, cin, cout, h, w, kh, kw, s, p, d) in cases {
            let out_size = |n: usize, k: usize, s: i64, p: i64, d: i64| {
                ((n as i64 + 2 * p - d * (k as i64 - 1) - 1) / s + 1) as usize
            };
            let (oh, ow) = (out_size(h, kh, s.0, p.0, d.0), out_size(w, kw, s.1, p.1, d.1));
            let g = Geom { b, cin, cout, h, w, kh, kw, oh, ow, s, p, d };
            let wave =
                |n: usize, f: f32| (0..n).map(|i| ((i * 29 % 53) as f32 - 26.0) * f).collect::<Vec<f32>>();
            let (x, k, gr) = (
                wave(b * cin * h * w, 0.05),
                wave(cout * cin * kh * kw, 0.03),
                wave(b * cout * oh * ow, 0.02),
            );
            // Every (input index, kernel index, output index) that one multiply-add joins.
            let mut triples = Vec::new();
            for n in 0..b {
                for co in 0..cout {
                    for ci in 0..cin {
                        for (oy, ox, ty, tx) in (0..oh * ow * kh * kw)
                            .map(|i| (i / (ow * kh * kw), i / (kh * kw) % ow, i / kw % kh, i % kw))
                        {
                            let (Some(iy), Some(ix)) =
                                (Geom::src(oy, ty, s.0, p.0, d.0, h), Geom::src(ox, tx, s.1, p.1, d.1, w))
                            else {
                                continue;
                            };
                            triples.push((
                                ((n * cin + ci) * h + iy) * w + ix,
                                ((co * cin + ci) * kh + ty) * kw + tx,
                                ((n * cout + co) * oh + oy) * ow + ox,
                            ));
                        }
                    }
                }
            }
            let (mut y, mut dw, mut dx) =
                (vec![0.0f64; gr.len()], vec![0.0f64; k.len()], vec![0.0f64; x.len()]);
            for &(xi, ki, yi) in &triples {
                y[yi] += f64::from(x[xi]) * f64::from(k[ki]);
                dw[ki] += f64::from(gr[yi]) * f64::from(x[xi]);
                dx[xi] += f64::from(gr[yi]) * f64::from(k[ki]);
            }
            let mut first: Option<Vec<Vec<f32>>> = None;
            for threads in [1, 2] {
                crate::threads::set(threads);
                let what = format!("{g:?} threads {threads}");
                let mut got_y = vec![f32::NAN; y.len()];
                conv(&x, &k, &g, &mut got_y);
                close(&got_y, &y, &format!("conv {what}"));
                let mut got_dw = vec![f32::NAN; dw.len()];
                conv_weight_grad(&x, &gr, &g, &mut got_dw);
                close(&got_dw, &dw, &format!("weight grad {what}"));
                let mut got_dx = vec![f32::NAN; dx.len()];
                conv_transpose(&gr, &k, &g, &mut got_dx);
                close(&got_dx, &dx, &format!("transpose {what}"));
                // The same bits on one thread and on two.
                let all = vec![got_y, got_dw, got_dx];
                match &first {
                    None => first = Some(all),
                    Some(f) => assert!(*f == all, "{what}: differs from one thread"),
                }
            }
            crate::threads::set(0);
        }
    }

    /// The register-blocked transpose moves every element, full 8 × 8 blocks and ragged edges.
    #[test]
    fn transpose_2d_matches_the_definition() {
        for (rows, cols) in [(1, 1), (8, 8), (7, 9), (16, 3), (17, 23), (64, 40), (256, 784)] {
            let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            transpose_2d(&src, rows, cols, &mut dst);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(dst[j * rows + i], src[i * cols + j], "{rows}x{cols} at ({i}, {j})");
                }
            }
        }
    }

    /// A large reduction over leading axes split by columns over the threads gives the bits of
    /// the one-thread walk, for every operation.
    #[test]
    fn column_split_reductions_match_the_walk() {
        for (shape, axes) in [(vec![300usize, 701], vec![0usize]), (vec![3, 100, 700], vec![0, 1])] {
            let n: usize = shape.iter().product();
            let a: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
            let cols: usize = shape[axes.len()..].iter().product();
            for op in [ReduceOp::Sum, ReduceOp::Prod, ReduceOp::Max, ReduceOp::Min] {
                let mut whole = vec![f32::NAN; cols];
                reduce_whole(&a, &shape, op, &axes, &mut whole);
                for threads in [1, 2] {
                    crate::threads::set(threads);
                    let mut split = vec![f32::NAN; cols];
                    reduce(&a, &shape, op, &axes, &mut split);
                    let same = split.iter().zip(&whole).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{op:?} {shape:?} on {threads} threads");
                }
                crate::threads::set(0);
            }
            let mut sums = vec![0.0; cols];
            reduce(&a, &shape, ReduceOp::Sum, &axes, &mut sums);
            for (c, got) in sums.iter().enumerate() {
                let want: f64 = (0..n / cols).map(|r| f64::from(a[r * cols + c])).sum();
                assert!((f64::from(*got) - want).abs() <= 1e-5 * want.abs().max(1.0), "column {c}");
            }
        }
    }

    /// Every GEMM path — direct, packed, split by rows, split by columns, dot products — with and
    /// without transposes, on shapes with ragged edges, one row or one column.
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
            (40, 300, 1),
            (5, 33, 1),
            (1, 500, 1),
            (1, 300, 40),
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
                packed_gemm_strided(m, k, n, &a, ta, m, &b, tb, &mut c);
                close(&c, &want, &format!("packed {what}"));
            }
        }
    }
}
