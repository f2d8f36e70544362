//! fluxc-core: the pure middle of the compiler. It takes text and returns values; it does no I/O
//! (clippy.toml's disallowed-methods keeps it so). What it needs from outside comes through the
//! `SourceLoader` trait, which the edges implement.

pub mod autodiff;
pub mod check;
pub mod dims;
pub mod interp;
pub mod ir;
pub mod kir;
pub mod lower;
pub mod opt;
pub mod pipeline;
pub mod reference;
pub mod render;
pub use fluxc_kernels::rng;

pub use check::{CheckInfo, Folder, PathPolicy};
pub use pipeline::{Checked, LoadError, NoFiles, SourceLoader, check, lexically_inside};
pub use render::{TextStyle, render_json, render_text};
