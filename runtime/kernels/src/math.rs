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
