//! The pipeline: one function per command that reads top to bottom. Today it parses; the checker,
//! lowering, autodiff, optimizer and scheduling stages join here as they are built.

use fluxc_syntax::ast::File;
use fluxc_syntax::{Diagnostic, FileId, SourceMap, parse_file};

/// What checking one file produced: its AST (when it parsed) and every diagnostic.
pub struct Checked {
    pub ast: Option<File>,
    pub diagnostics: Vec<Diagnostic>,
}

/// `fluxc check`: parse (and, as later stages land, resolve and check) one file.
pub fn check(sources: &SourceMap, file: FileId) -> Checked {
    let Some(source) = sources.get(file) else {
        return Checked { ast: None, diagnostics: Vec::new() };
    };
    let parsed = parse_file(file, &source.text);
    Checked { ast: parsed.file, diagnostics: parsed.diagnostics }
}
