//! fluxc-syntax: spans, the source map, plain-data diagnostics, and the pest parser that turns
//! `.flx` text into an AST. No semantics and no I/O: text in, values out.

pub mod ast;
pub mod diagnostic;
pub mod layout;
pub mod limits;
pub mod parse;
pub mod print;
pub mod source;
pub mod span;

pub use diagnostic::{Code, Diagnostic, Label, Severity};
pub use parse::{Parsed, parse_file};
pub use source::{LineCol, SourceFile, SourceMap};
pub use span::{FileId, Span};
