//! fluxc-runtime: what runs outside the compiler. Today: host tensors and the validating
//! readers and writers of tensor files (`.npy`, `.safetensors`): every header is checked before
//! anything is allocated from it, and every error is one sentence naming the problem.
//! It depends on nothing in `compiler/`.

pub mod csv;
pub mod data;
pub mod idx;
pub mod inspect;
pub mod limits;
pub mod npy;
pub mod safetensors;
pub mod tensor;
pub mod weights;

pub use tensor::{Dtype, Tensor};
