//! The math functions fused loops call, in f32 with the C ABI (the JIT registers them; a built
//! library links them), and the f64 error function and its inverse they share with the
//! reference interpreter.

// `no_mangle` exports are how generated code finds these functions.
#![allow(unsafe_code)]

#[unsafe(no_mangle)]
pub extern "C" fn fluxc_math_exp(x: f32) -> f32 {
    x.exp()
}
#[unsafe(no_mangle)]
pub extern "C" fn fluxc_math_log(x: f32) -> f32 {
    x.ln()
}
#[unsafe(no_mangle)]
pub extern "C" fn fluxc_math_sin(x: f32) -> f32 {
    x.sin()
}
#[unsafe(no_mangle)]
pub extern "C" fn fluxc_math_cos(x: f32) -> f32 {
    x.cos()
}
#[unsafe(no_mangle)]
pub extern "C" fn fluxc_math_tanh(x: f32) -> f32 {
    x.tanh()
}
#[unsafe(no_mangle)]
pub extern "C" fn fluxc_math_sigmoid(x: f32) -> f32 {
    // e^-|x| never overflows; below 0, e / (1 + e) keeps the digits of tiny results.
    let e = (-x.abs()).exp();
    if x < 0.0 { e / (1.0 + e) } else { 1.0 / (1.0 + e) }
}
#[unsafe(no_mangle)]
pub extern "C" fn fluxc_math_erf(x: f32) -> f32 {
    erf(f64::from(x)) as f32
}
#[unsafe(no_mangle)]
pub extern "C" fn fluxc_math_erfinv(x: f32) -> f32 {
    erfinv(f64::from(x)) as f32
}
#[unsafe(no_mangle)]
pub extern "C" fn fluxc_math_pow(x: f32, y: f32) -> f32 {
    x.powf(y)
}

/// A whole loop of one of these functions over a contiguous run, on the widest vectors the CPU
/// has: a compiled loop whose body is only that call hands its range here, since Cranelift's
/// lanes are four wide and these are the costliest lane functions (an LSTM's gates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Map {
    Exp,
    Sigmoid,
    Tanh,
}

/// `out[i] = f(x[i])` for `i < n` (nothing when `n < 1`).
///
/// # Safety
/// `out` and `x` point to `n` valid floats each, and are the same buffer or do not overlap.
unsafe fn map(f: Map, out: *mut f32, x: *const f32, n: i64) {
    let Ok(n) = usize::try_from(n) else { return };
    if n == 0 {
        return;
    }
    if std::ptr::eq(out.cast_const(), x) {
        // In place (a loop that stored the argument first): through a copy on the stack, a
        // chunk at a time, so that no slice read aliases one written.
        // SAFETY: forwarded from the caller: `out` holds `n` floats.
        let all = unsafe { std::slice::from_raw_parts_mut(out, n) };
        let mut copy = [0.0f32; 256];
        for chunk in all.chunks_mut(256) {
            let src = copy.get_mut(..chunk.len()).unwrap_or_default();
            src.copy_from_slice(chunk);
            map_slices(f, src, chunk);
        }
        return;
    }
    // SAFETY: forwarded from the caller; the buffers do not overlap (or are the same, above).
    let (x, out) = unsafe { (std::slice::from_raw_parts(x, n), std::slice::from_raw_parts_mut(out, n)) };
    map_slices(f, x, out);
}

/// `out[i] = f(x[i])` on the widest instructions this CPU has.
fn map_slices(f: Map, x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match crate::gemm::Level::best() {
        // SAFETY (both): the CPU has these instructions (checked at run time).
        crate::gemm::Level::Avx512 => return unsafe { map_avx512(f, x, out) },
        crate::gemm::Level::Avx2 => return unsafe { map_avx2(f, x, out) },
        crate::gemm::Level::Plain => {}
    }
    map_any(f, x, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
fn map_avx512(f: Map, x: &[f32], out: &mut [f32]) {
    map_any(f, x, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn map_avx2(f: Map, x: &[f32], out: &mut [f32]) {
    map_any(f, x, out);
}

/// One monomorphic loop per function, branch-free bodies the compiler vectorises.
#[inline(always)]
fn map_any(f: Map, x: &[f32], out: &mut [f32]) {
    match f {
        Map::Exp => out.iter_mut().zip(x).for_each(|(o, v)| *o = exp_lane(*v)),
        Map::Sigmoid => out.iter_mut().zip(x).for_each(|(o, v)| *o = sigmoid_lane(*v)),
        Map::Tanh => out.iter_mut().zip(x).for_each(|(o, v)| *o = tanh_lane(*v)),
    }
}

/// e^x as the compiled loops compute it on lanes (Cephes `expf`: x = n·ln 2 + r, a degree-6
/// polynomial in r, 2^n from exponent bits in two halves so subnormal results come out right;
/// 0 below the subnormal range, ∞ above, NaN kept), without branches.
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' coefficients as published
fn exp_lane(x: f32) -> f32 {
    const LOWEST: f32 = -103.972_08;
    const HIGHEST: f32 = 88.722_84;
    let below = x < LOWEST;
    let xc = if x > HIGHEST { HIGHEST } else { x };
    let xc = if xc < LOWEST { LOWEST } else { xc };
    let n = (xc * std::f32::consts::LOG2_E + 0.5).floor();
    let r = xc - n * 0.693_359_4;
    let r = r - n * -2.121_944_4e-4;
    let mut p: f32 = 1.987_569_1e-4;
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1] {
        p = p.mul_add(r, c);
    }
    let mut y = p * (r * r) + r + 1.0;
    let n1 = (n * 0.5).floor();
    for k in [n1, n - n1] {
        // k + 1.5·2^23 is exact for an integral |k| < 2^22; its bits are 0x4B40_0000 + k.
        let bits = (k + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000 - 127) << 23;
        y *= f32::from_bits(bits);
    }
    if below { 0.0 } else { y }
}

/// The logistic function from e^-|x|: 1 / (1 + e) above 0, e / (1 + e) below.
#[inline(always)]
fn sigmoid_lane(x: f32) -> f32 {
    let e = exp_lane(-x.abs());
    let numerator = if x < 0.0 { e } else { 1.0 };
    numerator / (1.0 + e)
}

/// tanh as the lanes compute it (Cephes `tanhf`): an odd polynomial below |x| = 0.625, else
/// sign(x)·(1 − 2 / (e^{2|x|} + 1)).
#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' coefficients as published
fn tanh_lane(x: f32) -> f32 {
    let ax = x.abs();
    let z = x * x;
    let mut p: f32 = -5.704_988_7e-3;
    for c in [2.063_908_9e-2, -5.373_971_6e-2, 1.333_144_2e-1, -3.333_328_2e-1] {
        p = p.mul_add(z, c);
    }
    let small = p * z * x + x;
    let big = 1.0 - 2.0 / (exp_lane(2.0 * ax) + 1.0);
    let big = if x < 0.0 { -big } else { big };
    if ax < 0.625 { small } else { big }
}

#[unsafe(no_mangle)]
/// # Safety
/// As [`map`].
pub unsafe extern "C" fn fluxc_map_exp(out: *mut f32, x: *const f32, n: i64) {
    // SAFETY: forwarded.
    unsafe { map(Map::Exp, out, x, n) }
}
#[unsafe(no_mangle)]
/// # Safety
/// As [`map`].
pub unsafe extern "C" fn fluxc_map_sigmoid(out: *mut f32, x: *const f32, n: i64) {
    // SAFETY: forwarded.
    unsafe { map(Map::Sigmoid, out, x, n) }
}
#[unsafe(no_mangle)]
/// # Safety
/// As [`map`].
pub unsafe extern "C" fn fluxc_map_tanh(out: *mut f32, x: *const f32, n: i64) {
    // SAFETY: forwarded.
    unsafe { map(Map::Tanh, out, x, n) }
}

/// The whole-run maps by symbol name.
pub const MAPS: [(&str, Map, unsafe extern "C" fn(*mut f32, *const f32, i64)); 3] = [
    ("fluxc_map_exp", Map::Exp, fluxc_map_exp),
    ("fluxc_map_sigmoid", Map::Sigmoid, fluxc_map_sigmoid),
    ("fluxc_map_tanh", Map::Tanh, fluxc_map_tanh),
];

/// The one-argument functions by symbol name.
pub const UNARY: [(&str, extern "C" fn(f32) -> f32); 8] = [
    ("fluxc_math_exp", fluxc_math_exp),
    ("fluxc_math_log", fluxc_math_log),
    ("fluxc_math_sin", fluxc_math_sin),
    ("fluxc_math_cos", fluxc_math_cos),
    ("fluxc_math_tanh", fluxc_math_tanh),
    ("fluxc_math_sigmoid", fluxc_math_sigmoid),
    ("fluxc_math_erf", fluxc_math_erf),
    ("fluxc_math_erfinv", fluxc_math_erfinv),
];

/// The error function in f64: its Taylor series near 0, a continued fraction for erfc in the
/// tails (Lentz's method); both accurate to about 1e-15.
pub fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let v = if a < 3.0 {
        // erf x = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        let mut term = a;
        let mut sum = a;
        let x2 = a * a;
        for n in 1..200 {
            term *= -x2 / n as f64;
            let t = term / (2 * n + 1) as f64;
            sum += t;
            if t.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else if a > 27.0 {
        1.0
    } else {
        // erfc a = exp(-a^2)/sqrt(pi) / (a + (1/2)/(a + 1/(a + (3/2)/(a + …))))
        let tiny = 1e-300;
        let mut f = a;
        let mut c = a;
        let mut d = 0.0;
        for n in 1..300 {
            let an = n as f64 / 2.0;
            d = a + an * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = a + an / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
    };
    if x < 0.0 { -v } else { v }
}

/// The inverse error function: Giles' single-precision approximation refined by Newton steps.
pub fn erfinv(y: f64) -> f64 {
    if y <= -1.0 {
        return if y == -1.0 { f64::NEG_INFINITY } else { f64::NAN };
    }
    if y >= 1.0 {
        return if y == 1.0 { f64::INFINITY } else { f64::NAN };
    }
    let w = -((1.0 - y) * (1.0 + y)).ln();
    let mut x = if w < 5.0 {
        let w = w - 2.5;
        let mut p = 2.810_226_36e-08;
        for c in [
            3.432_739_39e-07,
            -3.523_387_7e-06,
            -4.391_506_54e-06,
            0.000_218_580_87,
            -0.001_253_725_03,
            -0.004_177_681_64,
            0.246_640_727,
            1.501_409_41,
        ] {
            p = c + p * w;
        }
        p * y
    } else {
        let w = w.sqrt() - 3.0;
        let mut p = -0.000_200_214_257;
        for c in [
            0.000_100_950_558,
            0.001_349_343_22,
            -0.003_673_428_44,
            0.005_739_507_73,
            -0.007_622_461_3,
            0.009_438_870_47,
            1.001_674_06,
            2.832_976_82,
        ] {
            p = c + p * w;
        }
        p * y
    };
    for _ in 0..4 {
        let e = erf(x) - y;
        let d = 2.0 / std::f64::consts::PI.sqrt() * (-x * x).exp();
        if d == 0.0 {
            break;
        }
        x -= e / d;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole-run maps at every instruction level this CPU has, on edge values and a sweep,
    /// within a few ulp of f64 (absolute for subnormal results), 0 and ∞ past the limits, NaN
    /// kept; lengths with tails.
    #[test]
    fn maps_match_f64_at_every_level() {
        let mut xs: Vec<f32> = vec![
            f32::NEG_INFINITY,
            -200.0,
            -103.9,
            -100.0,
            -88.0,
            -87.3,
            -50.0,
            -10.0,
            -1.0,
            -0.62,
            -1e-3,
            0.0,
            1e-3,
            0.3,
            0.625,
            0.7,
            1.0,
            9.0,
            20.0,
            50.0,
            88.0,
            88.7,
            88.8,
            200.0,
            f32::INFINITY,
            f32::NAN,
        ];
        xs.extend((0..997).map(|i| (i as f32 - 498.0) * 0.05));
        type Exact = fn(f64) -> f64;
        let exact: [(Map, Exact); 3] =
            [(Map::Exp, f64::exp), (Map::Sigmoid, |x| 1.0 / (1.0 + (-x).exp())), (Map::Tanh, f64::tanh)];
        type Level = fn(Map, &[f32], &mut [f32]);
        let mut levels: Vec<(&str, Level)> = vec![("plain", map_any)];
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY (both): only called when the CPU has the instructions.
            #[allow(unsafe_code)]
            fn avx2(f: Map, x: &[f32], o: &mut [f32]) {
                unsafe { map_avx2(f, x, o) }
            }
            #[allow(unsafe_code)]
            fn avx512(f: Map, x: &[f32], o: &mut [f32]) {
                unsafe { map_avx512(f, x, o) }
            }
            use crate::gemm::Level;
            if Level::best() >= Level::Avx2 {
                levels.push(("avx2", avx2));
            }
            if Level::best() == Level::Avx512 {
                levels.push(("avx512", avx512));
            }
        }
        for (level, run) in levels {
            for (f, exact) in exact {
                let mut out = vec![0.0f32; xs.len()];
                run(f, &xs, &mut out);
                for (x, y) in xs.iter().zip(&out) {
                    let want = exact(f64::from(*x)) as f32;
                    let ok = if want.is_nan() {
                        y.is_nan()
                    } else if want.is_infinite() || want == 0.0 {
                        *y == want
                    } else {
                        (y - want).abs() <= (want.abs() * 4.0 * f32::EPSILON).max(4.0 * 1.4e-45)
                    };
                    assert!(ok, "{level} {f:?}({x}) = {y}, want {want}");
                }
            }
        }
    }

    /// A map in place (the output is the input, as a loop that stored its argument first
    /// calls it) gives what it gives into another buffer, across chunks and a tail.
    #[test]
    fn maps_in_place_match_maps_out_of_place() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.013).collect();
        for (name, _, f) in MAPS {
            let mut apart = vec![0.0f32; xs.len()];
            let mut inplace = xs.clone();
            // SAFETY: both buffers hold `xs.len()` floats.
            #[allow(unsafe_code)]
            unsafe {
                f(apart.as_mut_ptr(), xs.as_ptr(), xs.len() as i64);
                f(inplace.as_mut_ptr(), inplace.as_ptr(), xs.len() as i64);
            }
            assert_eq!(apart, inplace, "{name}");
            assert!(apart.iter().zip(&xs).any(|(y, x)| y != x), "{name} changed nothing");
        }
    }

    /// The scalar sigmoid in both tails: 1 − tiny above, the tiny value itself (not 0) below.
    #[test]
    fn sigmoid_keeps_both_tails() {
        for x in [-100.0f32, -90.0, -20.0, -1.0, 0.0, 1.0, 20.0, 100.0] {
            let want = 1.0 / (1.0 + (-f64::from(x)).exp());
            let got = f64::from(fluxc_math_sigmoid(x));
            assert!(
                (got - want).abs() <= want * 4.0 * f64::from(f32::EPSILON) + 4.0 * 1.4e-45,
                "sigmoid({x}) = {got}, want {want}"
            );
        }
        assert!(fluxc_math_sigmoid(f32::NAN).is_nan());
        assert_eq!(fluxc_math_sigmoid(f32::NEG_INFINITY), 0.0);
        assert_eq!(fluxc_math_sigmoid(f32::INFINITY), 1.0);
    }
}
