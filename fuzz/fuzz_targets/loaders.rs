//! Every data and weights loader on arbitrary bytes: a value or an error, never a crash.
//! `cargo +nightly fuzz run loaders` inside `fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let _ = fluxc_runtime::idx::parse(bytes);
    let _ = fluxc_runtime::csv::parse(bytes, None);
    let _ = fluxc_runtime::npy::parse(bytes);
    let _ = fluxc_runtime::safetensors::parse(bytes);
});
