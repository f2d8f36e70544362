//! The language's random numbers (LANGUAGE.md §12.11).
//!
//! The decision: "Randomness is Philox4x32-10 keyed by (seed, stream), counter (step, element); a
//! uniform f32 is `(u >> 8) * 2^-24`. Initialisation uses stream = the parameter's index in
//! manifest order. The interpreter, the JIT and a built library give the same initial weights for
//! a seed."
//!
//! Concretely, and these are the project's decisions that every back end must reproduce bit for
//! bit:
//!
//! - The block function is the standard Philox4x32 with 10 rounds of Salmon, Moraes, Dror and
//!   Shaw, "Parallel Random Numbers: As Easy as 1, 2, 3" (SC11, 2011), as in Random123's
//!   `philox4x32_10`: multipliers `0xD2511F53` and `0xCD9E8D57`, Weyl key increments
//!   `0x9E3779B9` and `0xBB67AE85`, the key bumped between rounds (10 rounds, 9 bumps). It
//!   reproduces Random123's known-answer vectors (`examples/kat_vectors`); see the tests.
//! - The key for `(seed: u64, stream: u32)` is `[(seed ^ (seed >> 32)) as u32, stream]`.
//! - The counter for `(step: u64, element: u64)` is
//!   `[q as u32, (q >> 32) as u32, step as u32, (step >> 32) as u32]` with `q = element / 4`;
//!   element `e` takes output lane `e % 4` of that block.
//! - A uniform `f32` is `(bits >> 8) as f32 * 2^-24`, in `[0, 1)`; every value is exact.
//! - An open uniform (for logarithms) is `((bits >> 8) + 1) as f64 * 2^-24`, in `(0, 1]`.
//! - A normal is Box–Muller on the same Philox block: for element `e` with `q = e / 4`, let
//!   `u0..u3` be the open uniforms of the four lanes of block `q`; lanes 0 and 1 give
//!   `r = sqrt(-2 ln u0)`, `z0 = r cos(2π u1)`, `z1 = r sin(2π u1)`; lanes 2 and 3 likewise give
//!   `z2`, `z3` from `u2`, `u3`. Element `e` is lane `e % 4` of `[z0, z1, z2, z3]`, computed in
//!   `f64` and rounded to `f32` once.
//! - Initialisation uses `stream` = the parameter's index in manifest order.
//!
//! Everything here is a pure function of its inputs: a [`Stream`] holds no mutable state, so any
//! element can be computed independently and in any order.

/// Philox4x32 round multipliers (Salmon et al. 2011; Random123 `PHILOX_M4x32_0/1`).
const PHILOX_M4X32_0: u32 = 0xD251_1F53;
const PHILOX_M4X32_1: u32 = 0xCD9E_8D57;
/// Weyl-sequence key increments (Random123 `PHILOX_W32_0/1`).
const PHILOX_W32_0: u32 = 0x9E37_79B9;
const PHILOX_W32_1: u32 = 0xBB67_AE85;
/// Rounds of `philox4x32_10`.
const ROUNDS: usize = 10;

/// `2^-24` as an `f32` (exact).
const TWO_POW_NEG_24_F32: f32 = 1.0 / 16_777_216.0;
/// `2^-24` as an `f64` (exact).
const TWO_POW_NEG_24_F64: f64 = 1.0 / 16_777_216.0;

/// The high and low 32-bit halves of the 64-bit product `a * b`.
#[inline]
fn mulhilo(a: u32, b: u32) -> (u32, u32) {
    let product = u64::from(a) * u64::from(b);
    ((product >> 32) as u32, product as u32)
}

/// One Philox4x32 round.
#[inline]
fn round(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [c0, c1, c2, c3] = counter;
    let [k0, k1] = key;
    let (hi0, lo0) = mulhilo(PHILOX_M4X32_0, c0);
    let (hi1, lo1) = mulhilo(PHILOX_M4X32_1, c2);
    [hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0]
}

/// The key schedule's step between rounds.
#[inline]
fn bump_key(key: [u32; 2]) -> [u32; 2] {
    let [k0, k1] = key;
    [k0.wrapping_add(PHILOX_W32_0), k1.wrapping_add(PHILOX_W32_1)]
}

/// The Philox4x32-10 block function: Random123's `philox4x32_10(counter, key)`.
#[must_use]
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let mut ctr = round(counter, key);
    let mut k = key;
    for _ in 1..ROUNDS {
        k = bump_key(k);
        ctr = round(ctr, k);
    }
    ctr
}

/// The Philox key for `(seed, stream)`: `[(seed ^ (seed >> 32)) as u32, stream]`.
#[must_use]
pub fn key_for(seed: u64, stream: u32) -> [u32; 2] {
    [(seed ^ (seed >> 32)) as u32, stream]
}

/// The Philox counter for block `q` (elements `4q..4q+4`) at `step`.
#[must_use]
pub fn counter_for(step: u64, q: u64) -> [u32; 4] {
    [q as u32, (q >> 32) as u32, step as u32, (step >> 32) as u32]
}

/// The `f32` uniform in `[0, 1)` for raw Philox output `bits`.
#[inline]
fn uniform_of(bits: u32) -> f32 {
    (bits >> 8) as f32 * TWO_POW_NEG_24_F32
}

/// The `f64` uniform in `(0, 1]` for raw Philox output `bits`.
#[inline]
fn uniform_open_of(bits: u32) -> f64 {
    f64::from((bits >> 8) + 1) * TWO_POW_NEG_24_F64
}

/// Box–Muller on one Philox block: the four standard normals, in `f64`.
fn normals_of(block: [u32; 4]) -> [f64; 4] {
    let [b0, b1, b2, b3] = block;
    let pair = |a: u32, b: u32| -> (f64, f64) {
        let r = (-2.0 * uniform_open_of(a).ln()).sqrt();
        let theta = std::f64::consts::TAU * uniform_open_of(b);
        (r * theta.cos(), r * theta.sin())
    };
    let (z0, z1) = pair(b0, b1);
    let (z2, z3) = pair(b2, b3);
    [z0, z1, z2, z3]
}

/// Lane `e % 4` of a four-lane block, without indexing.
#[inline]
fn lane<T: Copy>(block: [T; 4], element: u64) -> T {
    let [l0, l1, l2, l3] = block;
    match element % 4 {
        0 => l0,
        1 => l1,
        2 => l2,
        _ => l3,
    }
}

/// One random stream: the Philox key for `(seed, stream)` at one `step`. Element `e` is lane
/// `e % 4` of block `e / 4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    key: [u32; 2],
    step: u64,
}

impl Stream {
    /// The stream keyed by `(seed, stream)` at `step`.
    #[must_use]
    pub fn new(seed: u64, stream: u32, step: u64) -> Stream {
        Stream { key: key_for(seed, stream), step }
    }

    /// The Philox block `q` (elements `4q..4q+4`).
    #[must_use]
    pub fn block(&self, q: u64) -> [u32; 4] {
        philox4x32_10(counter_for(self.step, q), self.key)
    }

    /// The raw 32 bits of `element`.
    #[must_use]
    pub fn bits(&self, element: u64) -> u32 {
        lane(self.block(element / 4), element)
    }

    /// A uniform `f32` in `[0, 1)`: `(bits >> 8) * 2^-24`.
    #[must_use]
    pub fn uniform(&self, element: u64) -> f32 {
        uniform_of(self.bits(element))
    }

    /// A uniform `f64` in `(0, 1]`: `((bits >> 8) + 1) * 2^-24`, safe to take the logarithm of.
    #[must_use]
    pub fn uniform_open(&self, element: u64) -> f64 {
        uniform_open_of(self.bits(element))
    }

    /// A standard normal, by Box–Muller on `element`'s Philox block (see the module docs).
    #[must_use]
    pub fn normal(&self, element: u64) -> f32 {
        lane(normals_of(self.block(element / 4)), element) as f32
    }

    /// Fills `out` so that element `i` is `lo + (hi - lo) * uniform(i)`.
    pub fn fill_uniform(&self, lo: f32, hi: f32, out: &mut [f32]) {
        let width = hi - lo;
        for (q, chunk) in out.chunks_mut(4).enumerate() {
            let block = self.block(q as u64);
            for (slot, bits) in chunk.iter_mut().zip(block) {
                *slot = lo + width * uniform_of(bits);
            }
        }
    }

    /// Fills `out` so that element `i` is `mean + std * normal(i)`.
    pub fn fill_normal(&self, mean: f32, std: f32, out: &mut [f32]) {
        for (q, chunk) in out.chunks_mut(4).enumerate() {
            let normals = normals_of(self.block(q as u64));
            for (slot, z) in chunk.iter_mut().zip(normals) {
                *slot = mean + std * (z as f32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    /// Random123 `examples/kat_vectors`, the `philox4x32 10` lines: counter, key, expected.
    /// The first three are the ones in Random123's own `kat_vectors`; the rest are from the
    /// larger generated table (gentests.py) in girving/random123-manual `examples/kat_vectors`.
    const KAT: [([u32; 4], [u32; 2], [u32; 4]); 6] = [
        ([0, 0, 0, 0], [0, 0], [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]),
        ([0xffff_ffff; 4], [0xffff_ffff; 2], [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]),
        (
            [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
            [0xa409_3822, 0x299f_31d0],
            [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
        ),
        ([1, 0, 0, 0], [1, 0], [0xac08_141b, 0xdfc5_ccbe, 0x79c0_7a47, 0xa7f6_6093]),
        ([0, 0, 0, 0x8000_0000], [0, 0x8000_0000], [0xf7a0_b371, 0xe51d_c93d, 0x56ce_135d, 0x1d4b_5580]),
        (
            [0x4528_21e6, 0x38d0_1377, 0xbe54_66cf, 0x34e9_0c6c],
            [0, 0xffff_ffff],
            [0x72ce_44b3, 0xb44f_9b78, 0x49af_0267, 0x7268_13ac],
        ),
    ];

    #[test]
    fn philox_known_answers() {
        for (counter, key, expected) in KAT {
            assert_eq!(philox4x32_10(counter, key), expected, "counter {counter:08x?} key {key:08x?}");
        }
    }

    #[test]
    fn key_and_counter_layout() {
        assert_eq!(key_for(0x1234_5678_9abc_def0, 7), [0x9abc_def0 ^ 0x1234_5678, 7]);
        assert_eq!(counter_for(0x0000_0002_0000_0003, 0x0000_0005_0000_0006), [6, 5, 3, 2]);
        // Element e uses block e / 4 with counter (q, step) and key (seed, stream).
        let s = Stream::new(0x1234_5678_9abc_def0, 7, 0x0000_0002_0000_0003);
        let e = (0x0000_0005_0000_0006u64 * 4) + 2;
        let block = philox4x32_10([6, 5, 3, 2], [0x9abc_def0 ^ 0x1234_5678, 7]);
        assert_eq!(s.bits(e), block[2]);
    }

    #[test]
    fn lanes_of_one_block() {
        let s = Stream::new(42, 3, 9);
        let block1 = philox4x32_10(counter_for(9, 1), key_for(42, 3));
        assert_eq!(s.bits(5), block1[1]);
        for e in 0..16u64 {
            let block = philox4x32_10(counter_for(9, e / 4), key_for(42, 3));
            assert_eq!(s.bits(e), block[(e % 4) as usize]);
        }
        // Seed 0, stream 0, step 0: element 1 is lane 1 of the all-zero KAT block.
        assert_eq!(Stream::new(0, 0, 0).bits(1), 0xe169_c58d);
    }

    #[test]
    fn uniform_formulas() {
        let s = Stream::new(0, 0, 0);
        // Lane 0 of the zero block is 0x6627e8d5.
        assert_eq!(s.uniform(0), (0x6627_e8d5u32 >> 8) as f32 / 16_777_216.0);
        assert_eq!(s.uniform_open(0), f64::from((0x6627_e8d5u32 >> 8) + 1) / 16_777_216.0);
        // The extremes of the formulas.
        assert_eq!(uniform_of(0), 0.0);
        assert!(uniform_of(u32::MAX) < 1.0);
        assert_eq!(uniform_of(u32::MAX), 1.0 - 1.0 / 16_777_216.0);
        assert!(uniform_open_of(0) > 0.0);
        assert_eq!(uniform_open_of(u32::MAX), 1.0);
    }

    #[test]
    fn uniform_in_unit_interval() {
        let s = Stream::new(0xdead_beef, 1, 2);
        for e in 0..100_000u64 {
            let u = s.uniform(e);
            assert!((0.0..1.0).contains(&u), "element {e}: {u}");
            let o = s.uniform_open(e);
            assert!(o > 0.0 && o <= 1.0, "element {e}: {o}");
        }
    }

    #[test]
    fn deterministic() {
        let a = Stream::new(123, 4, 5);
        let b = Stream::new(123, 4, 5);
        for e in 0..1000u64 {
            assert_eq!(a.bits(e), b.bits(e));
            assert_eq!(a.uniform(e).to_bits(), b.uniform(e).to_bits());
            assert_eq!(a.normal(e).to_bits(), b.normal(e).to_bits());
        }
        let mut x = vec![0.0f32; 37];
        let mut y = vec![0.0f32; 37];
        a.fill_normal(0.5, 2.0, &mut x);
        b.fill_normal(0.5, 2.0, &mut y);
        assert_eq!(x, y);
    }

    #[test]
    fn streams_steps_and_seeds_differ() {
        let base = Stream::new(7, 0, 0);
        let others = [
            Stream::new(8, 0, 0),
            Stream::new(7, 1, 0),
            Stream::new(7, 0, 1),
            Stream::new(7 | (1 << 40), 0, 0),
            Stream::new(7, 0, 1 << 40),
        ];
        let first: Vec<u32> = (0..64).map(|e| base.bits(e)).collect();
        for other in others {
            let theirs: Vec<u32> = (0..64).map(|e| other.bits(e)).collect();
            assert_ne!(first, theirs, "{other:?}");
            let same = first.iter().zip(&theirs).filter(|(a, b)| a == b).count();
            assert!(same <= 1, "{other:?}: {same} equal words");
        }
        // Elements in different blocks (high half of q) differ too.
        assert_ne!(base.bits(0), base.bits(1 << 34));
    }

    #[test]
    fn fill_matches_elementwise() {
        let s = Stream::new(99, 2, 17);
        for len in [0usize, 1, 3, 4, 5, 8, 11] {
            let mut u = vec![0.0f32; len];
            s.fill_uniform(-0.25, 0.75, &mut u);
            for (i, v) in u.iter().enumerate() {
                assert_eq!(v.to_bits(), (-0.25 + (0.75 - -0.25) * s.uniform(i as u64)).to_bits());
            }
            let mut n = vec![0.0f32; len];
            s.fill_normal(1.5, 0.1, &mut n);
            for (i, v) in n.iter().enumerate() {
                assert_eq!(v.to_bits(), (1.5 + 0.1 * s.normal(i as u64)).to_bits());
            }
        }
    }

    #[test]
    fn normal_is_box_muller_on_the_block() {
        let s = Stream::new(5, 6, 7);
        let q = 3u64;
        let block = s.block(q);
        let u: Vec<f64> = block.iter().map(|&b| uniform_open_of(b)).collect();
        let r01 = (-2.0 * u[0].ln()).sqrt();
        let r23 = (-2.0 * u[2].ln()).sqrt();
        let tau = std::f64::consts::TAU;
        let z = [
            r01 * (tau * u[1]).cos(),
            r01 * (tau * u[1]).sin(),
            r23 * (tau * u[3]).cos(),
            r23 * (tau * u[3]).sin(),
        ];
        for lane in 0..4u64 {
            assert_eq!(s.normal(4 * q + lane).to_bits(), (z[lane as usize] as f32).to_bits());
        }
    }

    #[test]
    fn statistics() {
        const N: usize = 100_000;
        let s = Stream::new(2024, 0, 0);
        let mut u = vec![0.0f32; N];
        s.fill_uniform(0.0, 1.0, &mut u);
        let mean_u = u.iter().map(|&v| f64::from(v)).sum::<f64>() / N as f64;
        assert!((mean_u - 0.5).abs() < 0.01, "uniform mean {mean_u}");

        let mut n = vec![0.0f32; N];
        s.fill_normal(0.0, 1.0, &mut n);
        assert!(n.iter().all(|v| v.is_finite()));
        let mean_n = n.iter().map(|&v| f64::from(v)).sum::<f64>() / N as f64;
        let var_n = n.iter().map(|&v| (f64::from(v) - mean_n).powi(2)).sum::<f64>() / N as f64;
        assert!(mean_n.abs() < 0.02, "normal mean {mean_n}");
        assert!((var_n - 1.0).abs() < 0.03, "normal variance {var_n}");
    }
}
