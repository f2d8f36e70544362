//! fluxc-kernels: what a compiled model runs besides its generated loops — the native kernels
//! (GEMM, convolution, pooling, movement, reductions), the language's random numbers, the math
//! functions loops call, and the interpreter of a step's plan. The JIT links it as a Rust library;
//! `fluxc build` links it into every shared library as a static library, with the C entry points
//! of [`abi`]. It depends on nothing in `compiler/`.

pub mod abi;
pub mod gemm;
pub mod math;
pub mod ops;
pub mod plan;
pub mod rng;
pub mod threads;
