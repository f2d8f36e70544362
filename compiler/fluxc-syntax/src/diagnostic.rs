//! Plain-data diagnostics. Every phase's error enum converts into [`Diagnostic`]; only the
//! renderers in fluxc-core know how to draw one.

use crate::span::Span;

/// The stable diagnostic codes of LANGUAGE.md §8, each with a written explanation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    E0101,
    E0102,
    E0201,
    E0202,
    E0203,
    E0204,
    E0301,
    E0302,
    E0303,
    E0304,
    E0401,
    E0402,
    E0403,
    E0501,
    E0502,
    E0503,
}

impl Code {
    pub const ALL: [Code; 16] = [
        Code::E0101,
        Code::E0102,
        Code::E0201,
        Code::E0202,
        Code::E0203,
        Code::E0204,
        Code::E0301,
        Code::E0302,
        Code::E0303,
        Code::E0304,
        Code::E0401,
        Code::E0402,
        Code::E0403,
        Code::E0501,
        Code::E0502,
        Code::E0503,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Code::E0101 => "E0101",
            Code::E0102 => "E0102",
            Code::E0201 => "E0201",
            Code::E0202 => "E0202",
            Code::E0203 => "E0203",
            Code::E0204 => "E0204",
            Code::E0301 => "E0301",
            Code::E0302 => "E0302",
            Code::E0303 => "E0303",
            Code::E0304 => "E0304",
            Code::E0401 => "E0401",
            Code::E0402 => "E0402",
            Code::E0403 => "E0403",
            Code::E0501 => "E0501",
            Code::E0502 => "E0502",
            Code::E0503 => "E0503",
        }
    }

    /// Parses `E0301` (case-insensitive; the `E` may be omitted).
    pub fn parse(text: &str) -> Option<Code> {
        let upper = text.trim().to_ascii_uppercase();
        let wanted = if upper.starts_with('E') { upper } else { format!("E{upper}") };
        Code::ALL.into_iter().find(|c| c.as_str() == wanted)
    }

    /// The one-line meaning from LANGUAGE.md §8's table.
    pub fn summary(self) -> &'static str {
        match self {
            Code::E0101 => "syntax error",
            Code::E0102 => "input too large or nested too deeply",
            Code::E0201 => "unknown name",
            Code::E0202 => "unknown module or file in `use`",
            Code::E0203 => "duplicate definition",
            Code::E0204 => "recursive function or layer",
            Code::E0301 => "shape mismatch",
            Code::E0302 => "dtype mismatch",
            Code::E0303 => "wrong arguments",
            Code::E0304 => "a dimension cannot be inferred",
            Code::E0401 => "I/O in a pure context",
            Code::E0402 => "randomness in a loss or optimizer",
            Code::E0403 => "state update outside `if training` or an optimizer's `update`",
            Code::E0501 => "invalid training configuration",
            Code::E0502 => "a path leaves the project or output folder",
            Code::E0503 => "a data source cannot fit the model",
        }
    }

    /// The long explanation printed by `fluxc explain`.
    pub fn explanation(self) -> &'static str {
        match self {
            Code::E0101 => include_str!("../explain/E0101.md"),
            Code::E0102 => include_str!("../explain/E0102.md"),
            Code::E0201 => include_str!("../explain/E0201.md"),
            Code::E0202 => include_str!("../explain/E0202.md"),
            Code::E0203 => include_str!("../explain/E0203.md"),
            Code::E0204 => include_str!("../explain/E0204.md"),
            Code::E0301 => include_str!("../explain/E0301.md"),
            Code::E0302 => include_str!("../explain/E0302.md"),
            Code::E0303 => include_str!("../explain/E0303.md"),
            Code::E0304 => include_str!("../explain/E0304.md"),
            Code::E0401 => include_str!("../explain/E0401.md"),
            Code::E0402 => include_str!("../explain/E0402.md"),
            Code::E0403 => include_str!("../explain/E0403.md"),
            Code::E0501 => include_str!("../explain/E0501.md"),
            Code::E0502 => include_str!("../explain/E0502.md"),
            Code::E0503 => include_str!("../explain/E0503.md"),
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// A span with a message attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

/// One diagnostic: a code, a message, the primary span (the innermost expression that is wrong),
/// secondary labels (where two places disagree), notes and an optional help line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub primary: Label,
    pub labels: Vec<Label>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: Code, span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            primary: Label { span, message: String::new() },
            labels: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    /// The text shown under the primary span.
    pub fn with_primary_label(mut self, message: impl Into<String>) -> Diagnostic {
        self.primary.message = message.into();
        self
    }

    pub fn with_label(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label { span, message: message.into() });
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_an_explanation_that_names_it() {
        for code in Code::ALL {
            assert!(code.explanation().starts_with(code.as_str()), "{code}");
            assert!(code.explanation().contains("Erroneous example"), "{code}");
            assert_eq!(Code::parse(code.as_str()), Some(code));
        }
        assert_eq!(Code::parse("e0301"), Some(Code::E0301));
        assert_eq!(Code::parse("0301"), Some(Code::E0301));
        assert_eq!(Code::parse("E9999"), None);
    }
}
