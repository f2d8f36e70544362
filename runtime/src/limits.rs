//! Limits on files the runtime reads, each a named constant with its own clear error.

/// Largest tensor file (`.npy` or `.safetensors`) the runtime reads.
pub const MAX_TENSOR_FILE_BYTES: u64 = 1 << 32;
/// Largest `.npy` header.
pub const MAX_NPY_HEADER_BYTES: usize = 64 * 1024;
/// Largest safetensors JSON header.
pub const MAX_SAFETENSORS_HEADER_BYTES: u64 = 100 * 1024 * 1024;
/// Most tensors in one safetensors file.
pub const MAX_SAFETENSORS_TENSORS: usize = 100_000;
/// Most dimensions of one tensor.
pub const MAX_RANK: usize = 32;
/// Most columns of one CSV file.
pub const MAX_CSV_COLUMNS: usize = 65_536;
/// Most values the runtime decodes from one file (each is held as an f64: 2 GiB).
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 28;
