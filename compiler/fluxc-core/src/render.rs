//! Diagnostic renderers: ariadne text for people, one JSON object per line for tools
//! (LANGUAGE.md §8, §12.16). The only place that knows ariadne.

use std::ops::Range;

use ariadne::{Color, Config, IndexType, Label, Report, ReportKind};
use fluxc_syntax::{Diagnostic, Severity, SourceMap, Span};

/// How the text renderer should look.
#[derive(Clone, Copy, Debug)]
pub struct TextStyle {
    pub color: bool,
}

/// A span as ariadne wants it: the file's display name and a byte range. Empty spans widen to
/// the character they stand on, so the caret has something to point at.
fn ariadne_span(sources: &SourceMap, span: Span) -> (String, Range<usize>) {
    let Some(file) = sources.get(span.file) else {
        return (String::from("<unknown>"), 0..0);
    };
    let text = &file.text;
    let mut start = (span.start as usize).min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (span.end as usize).clamp(start, text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    if end == start {
        end = text.get(start..).and_then(|s| s.chars().next()).map_or(start, |c| start + c.len_utf8());
    }
    (file.name.clone(), start..end)
}

/// Renders diagnostics as ariadne reports, one after the other.
pub fn render_text(diagnostics: &[Diagnostic], sources: &SourceMap, style: TextStyle) -> String {
    let mut out = Vec::new();
    let cache =
        ariadne::sources(sources.files().map(|(_, f)| (f.name.clone(), f.text.clone())).collect::<Vec<_>>());
    let mut cache = cache;
    for d in diagnostics {
        let kind = match d.severity {
            Severity::Error => ReportKind::Error,
            Severity::Warning => ReportKind::Warning,
        };
        let config = Config::default().with_color(style.color).with_index_type(IndexType::Byte);
        let primary = ariadne_span(sources, d.primary.span);
        let mut report = Report::build(kind, primary.clone())
            .with_code(d.code.as_str())
            .with_message(&d.message)
            .with_config(config);
        let mut primary_label = Label::new(primary).with_color(Color::Red).with_order(0);
        if !d.primary.message.is_empty() {
            primary_label = primary_label.with_message(&d.primary.message);
        }
        report = report.with_label(primary_label);
        for (k, label) in d.labels.iter().enumerate() {
            report = report.with_label(
                Label::new(ariadne_span(sources, label.span))
                    .with_message(&label.message)
                    .with_color(Color::Blue)
                    .with_order(k as i32 + 1),
            );
        }
        for note in &d.notes {
            report = report.with_note(note);
        }
        if let Some(help) = &d.help {
            report = report.with_help(help);
        }
        // Writing into a Vec cannot fail; a cache miss only loses the snippet.
        let _ = report.finish().write(&mut cache, &mut out);
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn position(sources: &SourceMap, span: Span) -> (String, [usize; 4]) {
    match sources.get(span.file) {
        Some(file) => {
            let start = file.line_col(span.start as usize);
            let end = file.line_col(span.end as usize);
            (file.name.clone(), [start.line, start.column, end.line, end.column])
        }
        None => (String::new(), [1, 1, 1, 1]),
    }
}

/// One diagnostic as a single-line JSON object with the fields of LANGUAGE.md §8 and §12.16:
/// 1-based lines, columns in Unicode scalar values, exclusive ends.
pub fn render_json(d: &Diagnostic, sources: &SourceMap) -> String {
    let (file, [line, column, end_line, end_column]) = position(sources, d.primary.span);
    let labels: Vec<serde_json::Value> = d
        .labels
        .iter()
        .map(|l| {
            let (_, [line, column, end_line, end_column]) = position(sources, l.span);
            serde_json::json!({
                "line": line, "column": column, "end_line": end_line, "end_column": end_column,
                "message": l.message,
            })
        })
        .collect();
    let mut notes = d.notes.clone();
    if let Some(help) = &d.help {
        notes.push(format!("help: {help}"));
    }
    serde_json::json!({
        "code": d.code.as_str(),
        "severity": d.severity.as_str(),
        "message": d.message,
        "file": file,
        "line": line,
        "column": column,
        "end_line": end_line,
        "end_column": end_column,
        "labels": labels,
        "notes": notes,
    })
    .to_string()
}
