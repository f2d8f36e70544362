//! Unpacked, register-blocked matrix products for the shapes where packing costs more than it
//! saves: a convolution's few output channels per image, a forward pass on a few rows, a
//! weight gradient summed image by image. On AVX2 + FMA a tile of up to 6 rows × 16 columns of
//! the product lives in twelve registers for the whole inner dimension (one broadcast and two
//! loads feed twelve fused multiply-adds); elsewhere plain loops compute the same sums.

// Indexing with `[]` below stays within the lengths each entry point asserts.
#![allow(clippy::indexing_slicing)]

/// The left operand of [`direct`]: element `(i, p)` is `data[starts[i] + p * step]` (rows at a
/// stride, a transposed matrix, or shifted views of one image).
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    pub data: &'a [f32],
    pub starts: &'a [usize],
    pub step: usize,
}

impl Rows<'_> {
    /// Whether `m` rows of `k` elements lie inside `data`.
    fn holds(&self, m: usize, k: usize) -> bool {
        let last = match k.checked_sub(1) {
            None => return self.starts.len() >= m,
            Some(l) => l.checked_mul(self.step),
        };
        self.starts.len() >= m
            && self.starts[..m]
                .iter()
                .all(|s| last.and_then(|l| s.checked_add(l)).is_some_and(|e| e < self.data.len()))
    }
}

/// The starts of `count` rows `ld` apart.
pub fn row_starts(count: usize, ld: usize) -> Vec<usize> {
    (0..count).map(|r| r * ld).collect()
}

/// `c [m, n] (row stride ldc) = a [m, k] @ b [k, n]` (or `+=` when `add`); row `p` of `b` is the
/// `n` elements from `b[b_rows[p]]` (rows at a stride, or shifted views of one image). Panics if
/// an operand is shorter than its shape needs.
#[allow(clippy::too_many_arguments)]
pub fn direct(
    m: usize,
    k: usize,
    n: usize,
    a: Rows<'_>,
    b: &[f32],
    b_rows: &[usize],
    c: &mut [f32],
    ldc: usize,
    add: bool,
) {
    let b_ok = b_rows.len() >= k
        && (n == 0 || b_rows[..k].iter().all(|r| r.checked_add(n).is_some_and(|e| e <= b.len())));
    let c_ok = m == 0 || n == 0 || (m - 1) * ldc + n <= c.len();
    assert!(a.holds(m, k) && b_ok && c_ok && n <= ldc, "gemm operands");
    if m == 0 || n == 0 {
        return;
    }
    direct_at(Level::best(), m, k, n, a, b, b_rows, c, ldc, add);
}

/// The widest vector instructions this CPU has that the tiles use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Plain,
    Avx2,
    Avx512,
}

impl Level {
    /// Checked once.
    pub(crate) fn best() -> Level {
        static BEST: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") && crate::ops::avx2_fma() {
                    return Level::Avx512;
                }
                if crate::ops::avx2_fma() {
                    return Level::Avx2;
                }
            }
            Level::Plain
        })
    }
}

/// [`direct`] with the tiles of `level` (at most [`Level::best`]; the bounds already checked).
#[allow(clippy::too_many_arguments)]
fn direct_at(
    level: Level,
    m: usize,
    k: usize,
    n: usize,
    a: Rows<'_>,
    b: &[f32],
    b_rows: &[usize],
    c: &mut [f32],
    ldc: usize,
    add: bool,
) {
    #[cfg(target_arch = "x86_64")]
    match level.min(Level::best()) {
        // SAFETY (both): the CPU has the instructions (checked at run time); the caller
        // asserted the bounds.
        #[allow(unsafe_code)]
        Level::Avx512 => return unsafe { avx512::direct(m, k, n, a, b, b_rows, c, ldc, add) },
        #[allow(unsafe_code)]
        Level::Avx2 => return unsafe { avx2::direct(m, k, n, a, b, b_rows, c, ldc, add) },
        Level::Plain => {}
    }
    for i in 0..m {
        let row = &mut c[i * ldc..i * ldc + n];
        if !add {
            row.fill(0.0);
        }
        for p in 0..k {
            let x = a.data[a.starts[i] + p * a.step];
            for (out, y) in row.iter_mut().zip(&b[b_rows[p]..b_rows[p] + n]) {
                *out += x * y;
            }
        }
    }
}

/// `c [m, n] (row stride ldc) = a [m, k] @ b [n, k]ᵀ` (or `+=` when `add`): dot products of
/// rows of `a` (row stride `lda`) with rows of `b` (row `j` the `k` elements from
/// `b[b_rows[j]]`), both contiguous along `k`.
#[allow(clippy::too_many_arguments)]
pub fn dot(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    b_rows: &[usize],
    c: &mut [f32],
    ldc: usize,
    add: bool,
) {
    let a_ok = m == 0 || k == 0 || (m - 1) * lda + k <= a.len();
    let b_ok =
        b_rows.len() >= n && b_rows[..n].iter().all(|r| r.checked_add(k).is_some_and(|e| e <= b.len()));
    let c_ok = m == 0 || n == 0 || (m - 1) * ldc + n <= c.len();
    assert!(a_ok && b_ok && c_ok && n <= ldc, "gemm operands");
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::ops::avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA; the bounds were asserted above.
        #[allow(unsafe_code)]
        unsafe {
            avx2::dot(m, k, n, a, lda, b, b_rows, c, ldc, add);
        }
        return;
    }
    for i in 0..m {
        for j in 0..n {
            let (x, y) = (&a[i * lda..i * lda + k], &b[b_rows[j]..b_rows[j] + k]);
            let s: f32 = x.iter().zip(y).map(|(x, y)| x * y).sum();
            let out = &mut c[i * ldc + j];
            *out = if add { *out + s } else { s };
        }
    }
}

/// One register tile of [`direct`]: rows of `a` (the first `R` a tile kernel uses; `step`
/// apart along `k`), row `p` of `b` at `b + b_rows[p]`, and `cols` columns of `c` from `c`.
#[cfg(target_arch = "x86_64")]
struct Tile {
    k: usize,
    a: [*const f32; 8],
    step: usize,
    b: *const f32,
    b_rows: *const usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    add: bool,
}

/// The tiles of a product: column strips `width` wide outside, row blocks of up to `height`
/// (at most 8) inside, so a strip of `b` (k × width) stays in cache while every row block of
/// `a` passes over it; `run(tile, rows)` computes one.
///
/// # Safety
/// The operands hold their shapes (asserted by [`direct`]); `run` is safe for such a tile.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code, clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tiles(
    (m, k, n): (usize, usize, usize),
    a: Rows<'_>,
    b: &[f32],
    b_rows: &[usize],
    c: &mut [f32],
    ldc: usize,
    add: bool,
    (height, width): (usize, usize),
    run: impl Fn(&Tile, usize),
) {
    let (ap, bp, cp) = (a.data.as_ptr(), b.as_ptr(), c.as_mut_ptr());
    let mut j = 0;
    while j < n {
        let cols = (n - j).min(width);
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(height).min(8);
            // SAFETY: rows i..i+rows and columns j..j+cols lie inside the asserted shapes.
            let t = unsafe {
                let mut rows_a = [ap; 8];
                for (r, at) in rows_a.iter_mut().enumerate().take(rows) {
                    *at = ap.add(a.starts[i + r]);
                }
                Tile {
                    k,
                    a: rows_a,
                    step: a.step,
                    b: bp.add(j),
                    b_rows: b_rows.as_ptr(),
                    c: cp.add(i * ldc + j),
                    ldc,
                    cols,
                    add,
                }
            };
            run(&t, rows);
            i += rows;
        }
        j += cols;
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code, clippy::too_many_arguments)]
mod avx2 {
    use super::{Rows, Tile};
    use std::arch::x86_64::*;

    /// The lanes `0..rem` of a vector (rem in 1..=8).
    #[target_feature(enable = "avx2,fma")]
    fn tail_mask(rem: usize) -> __m256i {
        _mm256_cmpgt_epi32(_mm256_set1_epi32(rem as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    }

    /// # Safety
    /// AVX2 + FMA, and the operands hold their shapes (asserted by [`super::direct`]).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn direct(
        m: usize,
        k: usize,
        n: usize,
        a: Rows<'_>,
        b: &[f32],
        b_rows: &[usize],
        c: &mut [f32],
        ldc: usize,
        add: bool,
    ) {
        // SAFETY: forwarded from the caller; each tile is inside the shapes.
        unsafe {
            super::tiles((m, k, n), a, b, b_rows, c, ldc, add, (6, 16), |t, rows| {
                match (rows, t.cols > 8, t.cols.is_multiple_of(8)) {
                    (6, true, true) => t.run_avx2::<6, 2, false>(),
                    (6, true, false) => t.run_avx2::<6, 2, true>(),
                    (6, false, true) => t.run_avx2::<6, 1, false>(),
                    (6, false, false) => t.run_avx2::<6, 1, true>(),
                    (5, true, _) => t.run_avx2::<5, 2, true>(),
                    (5, false, _) => t.run_avx2::<5, 1, true>(),
                    (4, true, _) => t.run_avx2::<4, 2, true>(),
                    (4, false, _) => t.run_avx2::<4, 1, true>(),
                    (3, true, _) => t.run_avx2::<3, 2, true>(),
                    (3, false, _) => t.run_avx2::<3, 1, true>(),
                    (2, true, _) => t.run_avx2::<2, 2, true>(),
                    (2, false, _) => t.run_avx2::<2, 1, true>(),
                    (_, true, _) => t.run_avx2::<1, 2, true>(),
                    (_, false, _) => t.run_avx2::<1, 1, true>(),
                }
            });
        }
    }

    impl Tile {
        /// The tile as `R` rows by `V` vectors of eight columns, the last `cols - 8(V-1)` wide
        /// (masked when `MASKED`).
        ///
        /// # Safety
        /// AVX2 + FMA; `a` holds R × k, `b` k × cols, `c` R × cols at their strides.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run_avx2<const R: usize, const V: usize, const MASKED: bool>(&self) {
            let last = tail_mask(self.cols - 8 * (V - 1));
            let mut acc = [[_mm256_setzero_ps(); V]; R];
            // SAFETY (every access below): inside the shapes the caller guarantees; the last
            // vector's lanes past `cols` are masked off.
            unsafe {
                for p in 0..self.k {
                    let row = self.b.add(*self.b_rows.add(p));
                    let mut y = [_mm256_setzero_ps(); V];
                    for (v, y) in y.iter_mut().enumerate() {
                        *y = if MASKED && v + 1 == V {
                            _mm256_maskload_ps(row.add(8 * v), last)
                        } else {
                            _mm256_loadu_ps(row.add(8 * v))
                        };
                    }
                    let along = p * self.step;
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = _mm256_set1_ps(*self.a[r].add(along));
                        for v in 0..V {
                            acc[v] = _mm256_fmadd_ps(x, y[v], acc[v]);
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    let out = self.c.add(r * self.ldc);
                    for (v, acc) in acc.iter().enumerate() {
                        let at = out.add(8 * v);
                        if MASKED && v + 1 == V {
                            let sum = if self.add {
                                _mm256_add_ps(*acc, _mm256_maskload_ps(at, last))
                            } else {
                                *acc
                            };
                            _mm256_maskstore_ps(at, last, sum);
                        } else {
                            let sum = if self.add { _mm256_add_ps(*acc, _mm256_loadu_ps(at)) } else { *acc };
                            _mm256_storeu_ps(at, sum);
                        }
                    }
                }
            }
        }
    }

    /// Eight floats from `at`, only the lanes of `tail` when `MASKED`.
    ///
    /// # Safety
    /// AVX2; the lanes read are valid.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn load<const MASKED: bool>(at: *const f32, tail: __m256i) -> __m256 {
        // SAFETY: forwarded from the caller.
        unsafe { if MASKED { _mm256_maskload_ps(at, tail) } else { _mm256_loadu_ps(at) } }
    }

    /// The sum of a vector's eight lanes.
    #[target_feature(enable = "avx2,fma")]
    fn hsum(v: __m256) -> f32 {
        let q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let d = _mm_add_ps(q, _mm_movehl_ps(q, q));
        _mm_cvtss_f32(_mm_add_ss(d, _mm_shuffle_ps(d, d, 1)))
    }

    /// # Safety
    /// AVX2 + FMA, and the operands hold their shapes (asserted by [`super::dot`]).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        b_rows: &[usize],
        c: &mut [f32],
        ldc: usize,
        add: bool,
    ) {
        let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        let mut i = 0;
        while i < m {
            let rows = (m - i).min(3);
            let mut j = 0;
            while j < n {
                let cols = (n - j).min(4);
                // SAFETY: rows i..i+rows of a, j..j+cols of b and that block of c are inside
                // the asserted shapes.
                unsafe {
                    let mut rows_b = [bp; 4];
                    for (q, r) in rows_b.iter_mut().enumerate().take(cols) {
                        *r = bp.add(b_rows[j + q]);
                    }
                    let t =
                        DotTile { k, a: ap.add(i * lda), lda, b: rows_b, c: cp.add(i * ldc + j), ldc, add };
                    match (rows, cols) {
                        (3, 4) => t.run::<3, 4>(),
                        (3, 3) => t.run::<3, 3>(),
                        (3, 2) => t.run::<3, 2>(),
                        (3, _) => t.run::<3, 1>(),
                        (2, 4) => t.run::<2, 4>(),
                        (2, 3) => t.run::<2, 3>(),
                        (2, 2) => t.run::<2, 2>(),
                        (2, _) => t.run::<2, 1>(),
                        (_, 4) => t.run::<1, 4>(),
                        (_, 3) => t.run::<1, 3>(),
                        (_, 2) => t.run::<1, 2>(),
                        (_, _) => t.run::<1, 1>(),
                    }
                }
                j += cols;
            }
            i += rows;
        }
    }

    /// One tile of [`dot`]: `R` rows of `a` against `C` rows of `b`.
    struct DotTile {
        k: usize,
        a: *const f32,
        lda: usize,
        /// The first `C` are this tile's rows of `b`.
        b: [*const f32; 4],
        c: *mut f32,
        ldc: usize,
        add: bool,
    }

    impl DotTile {
        /// # Safety
        /// AVX2 + FMA; `a` holds R rows and `b` C rows of `k` elements, `c` R × C at `ldc`.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn step<const R: usize, const C: usize, const MASKED: bool>(
            &self,
            p: usize,
            tail: __m256i,
            acc: &mut [[__m256; C]; R],
        ) {
            // SAFETY: elements p..p+8 of every row (masked past `k`) are inside the rows.
            unsafe {
                let mut y = [_mm256_setzero_ps(); C];
                for (q, y) in y.iter_mut().enumerate() {
                    *y = load::<MASKED>(self.b[q].add(p), tail);
                }
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = load::<MASKED>(self.a.add(r * self.lda + p), tail);
                    for q in 0..C {
                        acc[q] = _mm256_fmadd_ps(x, y[q], acc[q]);
                    }
                }
            }
        }

        /// # Safety
        /// AVX2 + FMA; `a` holds R rows and `b` C rows of `k` elements, `c` R × C at `ldc`.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run<const R: usize, const C: usize>(&self) {
            let mut acc = [[_mm256_setzero_ps(); C]; R];
            let whole = self.k / 8 * 8;
            // SAFETY (every access below): inside the rows the caller guarantees; the tail
            // past `k` is masked off.
            unsafe {
                let mut p = 0;
                if R * C <= 2 {
                    // Too few accumulators to hide the multiply-add's latency (one long dot
                    // product: a squared norm): four sets, 32 elements a round, added at the end.
                    let mut more = [[[_mm256_setzero_ps(); C]; R]; 3];
                    while p + 32 <= whole {
                        self.step::<R, C, false>(p, tail_mask(8), &mut acc);
                        for (s, set) in more.iter_mut().enumerate() {
                            self.step::<R, C, false>(p + 8 * (s + 1), tail_mask(8), set);
                        }
                        p += 32;
                    }
                    for set in &more {
                        for (acc, part) in acc.iter_mut().zip(set) {
                            for (a, b) in acc.iter_mut().zip(part) {
                                *a = _mm256_add_ps(*a, *b);
                            }
                        }
                    }
                }
                while p < whole {
                    self.step::<R, C, false>(p, tail_mask(8), &mut acc);
                    p += 8;
                }
                if whole < self.k {
                    self.step::<R, C, true>(whole, tail_mask(self.k - whole), &mut acc);
                }
                for (r, acc) in acc.iter().enumerate() {
                    for (q, acc) in acc.iter().enumerate() {
                        let out = self.c.add(r * self.ldc + q);
                        let s = hsum(*acc);
                        *out = if self.add { *out + s } else { s };
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code, clippy::too_many_arguments)]
mod avx512 {
    use super::{Rows, Tile};
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX-512F, and the operands hold their shapes (asserted by [`super::direct`]).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn direct(
        m: usize,
        k: usize,
        n: usize,
        a: Rows<'_>,
        b: &[f32],
        b_rows: &[usize],
        c: &mut [f32],
        ldc: usize,
        add: bool,
    ) {
        // As the AVX2 tiles, twice as wide: up to 8 rows × 32 columns in 16 registers.
        // SAFETY: forwarded from the caller; each tile is inside the shapes.
        unsafe {
            super::tiles((m, k, n), a, b, b_rows, c, ldc, add, (8, 32), |t, rows| {
                match (rows, t.cols > 16) {
                    (8, true) => t.run_avx512::<8, 2>(),
                    (8, false) => t.run_avx512::<8, 1>(),
                    (7, true) => t.run_avx512::<7, 2>(),
                    (7, false) => t.run_avx512::<7, 1>(),
                    (6, true) => t.run_avx512::<6, 2>(),
                    (6, false) => t.run_avx512::<6, 1>(),
                    (5, true) => t.run_avx512::<5, 2>(),
                    (5, false) => t.run_avx512::<5, 1>(),
                    (4, true) => t.run_avx512::<4, 2>(),
                    (4, false) => t.run_avx512::<4, 1>(),
                    (3, true) => t.run_avx512::<3, 2>(),
                    (3, false) => t.run_avx512::<3, 1>(),
                    (2, true) => t.run_avx512::<2, 2>(),
                    (2, false) => t.run_avx512::<2, 1>(),
                    (_, true) => t.run_avx512::<1, 2>(),
                    (_, false) => t.run_avx512::<1, 1>(),
                }
            });
        }
    }

    impl Tile {
        /// The tile as `R` rows by `V` vectors of sixteen columns, the last masked to `cols`.
        ///
        /// # Safety
        /// AVX-512F; `a` holds R × k, `b` k × cols, `c` R × cols at their strides.
        #[target_feature(enable = "avx512f")]
        unsafe fn run_avx512<const R: usize, const V: usize>(&self) {
            let rem = self.cols - 16 * (V - 1);
            let last: __mmask16 = if rem >= 16 { 0xFFFF } else { (1u16 << rem) - 1 };
            let mut acc = [[_mm512_setzero_ps(); V]; R];
            // SAFETY (every access below): inside the shapes the caller guarantees; the last
            // vector's lanes past `cols` are masked off.
            unsafe {
                for p in 0..self.k {
                    let row = self.b.add(*self.b_rows.add(p));
                    let mut y = [_mm512_setzero_ps(); V];
                    for (v, y) in y.iter_mut().enumerate() {
                        *y = if v + 1 == V {
                            _mm512_maskz_loadu_ps(last, row.add(16 * v))
                        } else {
                            _mm512_loadu_ps(row.add(16 * v))
                        };
                    }
                    let along = p * self.step;
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = _mm512_set1_ps(*self.a[r].add(along));
                        for v in 0..V {
                            acc[v] = _mm512_fmadd_ps(x, y[v], acc[v]);
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    let out = self.c.add(r * self.ldc);
                    for (v, acc) in acc.iter().enumerate() {
                        let at = out.add(16 * v);
                        let mask = if v + 1 == V { last } else { 0xFFFF };
                        let sum = if self.add {
                            _mm512_add_ps(*acc, _mm512_maskz_loadu_ps(mask, at))
                        } else {
                            *acc
                        };
                        _mm512_mask_storeu_ps(at, mask, sum);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 + seed * 11) % 101) as f32 / 50.0 - 1.0).collect()
    }

    /// Every tile shape and tail of every instruction level this CPU has (rows 1..=17, columns
    /// 1..=40, k 0..=19, strided and transposed `a`, `add`) against a plain f64 sum.
    #[test]
    fn direct_and_dot_match_a_plain_sum() {
        let levels: Vec<Level> =
            [Level::Plain, Level::Avx2, Level::Avx512].into_iter().filter(|l| *l <= Level::best()).collect();
        for m in [1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13, 17] {
            for n in [1, 3, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40] {
                for k in [0, 1, 5, 8, 9, 19] {
                    let a = fill(m * k + 3, 1);
                    let b = fill(k * n + 5, 2);
                    let c0 = fill(m * (n + 2), 3);
                    for (ta, add) in [(false, false), (true, false), (false, true), (true, true)] {
                        let (rs, cs) = if ta { (1, m) } else { (k, 1) };
                        let starts = row_starts(m, rs);
                        let want = |i: usize, j: usize| {
                            let s: f64 =
                                (0..k).map(|p| f64::from(a[i * rs + p * cs]) * f64::from(b[p * n + j])).sum();
                            s + if add { f64::from(c0[i * (n + 2) + j]) } else { 0.0 }
                        };
                        for &level in &levels {
                            let mut c = c0.clone();
                            let rows_a = Rows { data: &a, starts: &starts, step: cs };
                            direct_at(level, m, k, n, rows_a, &b, &row_starts(k, n), &mut c, n + 2, add);
                            for i in 0..m {
                                for j in 0..n {
                                    let (g, w) = (f64::from(c[i * (n + 2) + j]), want(i, j));
                                    assert!(
                                        (g - w).abs() < 1e-4,
                                        "direct {level:?} {m}x{k}x{n} ta={ta} add={add} [{i},{j}]: {g} vs {w}"
                                    );
                                }
                                // Columns past n are never written.
                                assert_eq!(
                                    &c[i * (n + 2) + n..i * (n + 2) + n + 2],
                                    &c0[i * (n + 2) + n..i * (n + 2) + n + 2]
                                );
                            }
                        }
                        // dot: b stored [n, k].
                        let bt: Vec<f32> = (0..n * k).map(|q| b[(q % k) * n + q / k]).collect();
                        let at: Vec<f32> = (0..m * k).map(|q| a[(q / k) * rs + (q % k) * cs]).collect();
                        let mut c = c0.clone();
                        dot(m, k, n, &at, k, &bt, &row_starts(n, k), &mut c, n + 2, add);
                        for i in 0..m {
                            for j in 0..n {
                                let (g, w) = (f64::from(c[i * (n + 2) + j]), want(i, j));
                                assert!(
                                    (g - w).abs() < 1e-4,
                                    "dot {m}x{k}x{n} add={add} [{i},{j}]: {g} vs {w}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "gemm operands")]
    fn short_operands_are_refused() {
        let mut c = vec![0.0; 4];
        direct(
            2,
            3,
            2,
            Rows { data: &[0.0; 5], starts: &[0, 3], step: 1 },
            &[0.0; 6],
            &row_starts(3, 2),
            &mut c,
            2,
            false,
        );
    }
}
