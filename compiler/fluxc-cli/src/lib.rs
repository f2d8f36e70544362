//! The edges of the `fluxc` command that other crates (the test harnesses) share: loading source
//! files from disk for the core, confined to the project folder.

pub mod inspect;
pub mod jit_eval;
pub mod loader;
pub mod script_io;
pub mod train;
