//! fluxc-core: the pure middle of the compiler. It takes text and returns values; it does no I/O
//! (clippy.toml's disallowed-methods keeps it so).

pub mod dims;
pub mod pipeline;
pub mod render;

pub use pipeline::{Checked, check};
pub use render::{TextStyle, render_json, render_text};
