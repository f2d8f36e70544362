//! Diagnostic positions exactly as LANGUAGE.md §12.16 says: 1-based lines, columns in Unicode
//! scalar values (a tab is one), exclusive ends; and the limits of §10.2 (E0102).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use fluxc_core::render_json;
use fluxc_syntax::limits::{MAX_NESTING, MAX_SOURCE_BYTES};
use fluxc_syntax::{Code, SourceMap, parse_file};
use serde_json::Value;

/// Parses `text` and returns its diagnostics as JSON values.
fn json_diagnostics(text: &str) -> Vec<Value> {
    let mut sources = SourceMap::new();
    let id = sources.add("t.flx", text);
    let parsed = parse_file(id, text);
    parsed
        .diagnostics
        .iter()
        .map(|d| serde_json::from_str(&render_json(d, &sources)).unwrap_or(Value::Null))
        .collect()
}

fn position(v: &Value) -> (u64, u64, u64, u64) {
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    (n("line"), n("column"), n("end_line"), n("end_column"))
}

#[test]
fn tabs_count_as_one_column() {
    let d = json_diagnostics("fn f(x: f32) -> f32 {\n\t\tx + * 2\n}\n");
    assert_eq!(d.len(), 1);
    assert_eq!(position(&d[0]), (2, 7, 2, 8), "{}", d[0]);
}

#[test]
fn multibyte_characters_count_as_one_column() {
    // `é` and `λ` are two bytes each, `𝑥` four: columns count characters, not bytes.
    let d = json_diagnostics("let s = \"é λ 𝑥\" ) \n");
    assert_eq!(position(&d[0]), (1, 17, 1, 18), "{}", d[0]);
    let d = json_diagnostics("// ünïcödé\nlet é = 1\n");
    assert_eq!(position(&d[0]), (2, 5, 2, 6), "{}", d[0]);
}

#[test]
fn crlf_line_endings_do_not_shift_columns() {
    let d = json_diagnostics("let a = 1\r\nlet b = (2 +\r\n  3\r\nlet c = 4\r\n");
    // The unclosed `(` carries the statement on: the error is at `let` on line 4.
    assert_eq!(position(&d[0]), (4, 1, 4, 4), "{}", d[0]);
    let d = json_diagnostics("let a = 1\r\nlet b = 2 3\r\n");
    assert_eq!(position(&d[0]), (2, 11, 2, 12), "{}", d[0]);
}

#[test]
fn json_objects_carry_every_field_of_the_reference() {
    let d = json_diagnostics("let x = (1, 2\n");
    let obj = d[0].as_object().cloned().unwrap_or_default();
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "code",
            "severity",
            "message",
            "file",
            "line",
            "column",
            "end_line",
            "end_column",
            "labels",
            "notes"
        ]
    );
    assert_eq!(d[0]["code"], "E0101");
    assert_eq!(d[0]["severity"], "error");
    assert_eq!(d[0]["file"], "t.flx");
    let label = &d[0]["labels"][0];
    assert_eq!(position(label), (1, 9, 1, 10));
    assert_eq!(label["message"], "unclosed `(`");
}

#[test]
fn ten_thousand_nested_parentheses_are_e0102_not_a_stack_overflow() {
    let text = format!("let x = {}1{}\n", "(".repeat(10_000), ")".repeat(10_000));
    let d = json_diagnostics(&text);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["code"], "E0102");
    assert_eq!(d[0]["column"], 9 + MAX_NESTING as u64);
}

#[test]
fn nesting_exactly_at_the_limit_parses() {
    // The statement's own expression is one level; 255 parentheses inside it make 256.
    let text = format!("let x = {}1{}\n", "(".repeat(MAX_NESTING - 1), ")".repeat(MAX_NESTING - 1));
    assert!(json_diagnostics(&text).is_empty());
}

#[test]
fn deep_unbracketed_chains_are_e0102() {
    for text in [
        format!("let x = {}1\n", "-".repeat(1_000_000)),
        format!("let x = 2{}\n", "^2".repeat(10_000)),
        format!("let x = y{}\n", ".T".repeat(10_000)),
        format!("let x = f{}\n", "()".repeat(10_000)),
        format!("let x = {} 1\n", "!".repeat(300)),
    ] {
        let d = json_diagnostics(&text);
        assert_eq!(d.len(), 1, "{}", &text[..40]);
        assert_eq!(d[0]["code"], "E0102");
    }
}

#[test]
fn a_million_term_sum_parses_flat() {
    let text = format!("let x = {}\n", vec!["1"; 1_000_000].join("+"));
    let mut sources = SourceMap::new();
    let id = sources.add("t.flx", text.as_str());
    let parsed = parse_file(id, &text);
    assert!(parsed.diagnostics.is_empty());
    assert!(parsed.file.is_some());
}

#[test]
fn long_else_if_chains_parse() {
    let mut text = String::from("let x = if a { 1 }");
    for _ in 0..2000 {
        text.push_str(" else if a { 1 }");
    }
    text.push_str(" else { 2 }\n");
    assert!(json_diagnostics(&text).is_empty());
}

#[test]
fn a_source_over_4_mib_is_e0102() {
    let text = " ".repeat(MAX_SOURCE_BYTES + 1);
    let mut sources = SourceMap::new();
    let id = sources.add("big.flx", text.as_str());
    let parsed = parse_file(id, &text);
    assert_eq!(parsed.diagnostics.len(), 1);
    assert_eq!(parsed.diagnostics[0].code, Code::E0102);
}

/// Checks `text` with std and no other files; the (code, line) of each diagnostic.
fn checked_codes(text: &str) -> Vec<(String, usize)> {
    let mut sources = SourceMap::new();
    let id = sources.add("t.flx", text);
    let checked = fluxc_core::check(&mut sources, id, &mut fluxc_core::NoFiles);
    checked
        .diagnostics
        .iter()
        .map(|d| {
            let at = sources.get(d.primary.span.file).map(|f| f.line_col(d.primary.span.start as usize));
            (d.code.to_string(), at.map_or(0, |a| a.line))
        })
        .collect()
}

fn call_chain(n: usize) -> String {
    let mut s: String =
        (0..n).map(|i| format!("fn g{i}(x: f32) -> f32 {{ g{}(x) + 1.0 }}\n", i + 1)).collect();
    s.push_str(&format!("fn g{n}(x: f32) -> f32 {{ x }}\nlet y = g0(2.0)\n"));
    s
}

#[test]
fn long_chains_of_definitions_check_without_overflowing_the_stack() {
    assert_eq!(checked_codes(&call_chain(3000)), Vec::new());
}

#[test]
fn chains_past_the_dependency_limit_are_one_e0102() {
    let limit = fluxc_syntax::limits::MAX_DEPENDENCY_DEPTH;
    let codes = checked_codes(&call_chain(limit + 100));
    assert_eq!(codes, vec![("E0102".to_owned(), limit)]);
}

#[test]
fn dimension_overflow_is_reported_not_silent() {
    let codes = checked_codes("let y = flatten(zeros[2, 4611686018427387904, 4]())\n");
    assert_eq!(codes, vec![("E0301".to_owned(), 1)]);
}
