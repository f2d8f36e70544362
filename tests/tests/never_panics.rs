//! The parser and the checker are total: on any input — random bytes, token soup, or mutations
//! of the valid fixtures — they return an AST or diagnostics, never panic, and every span lies in
//! its file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use fluxc_syntax::{SourceMap, parse_file};
use proptest::prelude::*;

fn check_total(text: &str) {
    let mut sources = SourceMap::new();
    let id = sources.add("fuzz.flx", text);
    let parsed = parse_file(id, text);
    assert!(parsed.file.is_some() || !parsed.diagnostics.is_empty());
    for d in &parsed.diagnostics {
        for span in std::iter::once(d.primary.span).chain(d.labels.iter().map(|l| l.span)) {
            assert!(span.start <= span.end && span.end as usize <= text.len(), "{span:?} in {text:?}");
        }
        // Rendering must not panic either.
        let _ = fluxc_core::render_json(d, &sources);
    }
    let _ = fluxc_core::render_text(&parsed.diagnostics, &sources, fluxc_core::TextStyle { color: false });
    if let (Some(file), Some(source)) = (&parsed.file, sources.get(id)) {
        let _ = fluxc_syntax::print::print_file(file, source);
    }
    // The whole pipeline up to checking, with std and no other files.
    let checked = fluxc_core::check(&mut sources, id, &mut fluxc_core::NoFiles);
    for d in &checked.diagnostics {
        for span in std::iter::once(d.primary.span).chain(d.labels.iter().map(|l| l.span)) {
            let len = sources.get(span.file).map_or(0, |f| f.text.len());
            assert!(span.start <= span.end && span.end as usize <= len, "{span:?} in {text:?}");
        }
        let _ = fluxc_core::render_json(d, &sources);
    }
    let _ = fluxc_core::render_text(&checked.diagnostics, &sources, fluxc_core::TextStyle { color: false });
}

const TOKENS: &[&str] = &[
    "fn",
    "layer",
    "loss",
    "optimizer",
    "model",
    "data",
    "train",
    "on",
    "let",
    "param",
    "state",
    "forward",
    "update",
    "if",
    "else",
    "true",
    "false",
    "training",
    "use",
    "new",
    "x",
    "B",
    "f32",
    "i32",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ";",
    "\n",
    ":",
    "::",
    ":=",
    "=",
    "=>",
    "->",
    "..",
    ".",
    "+",
    "-",
    "*",
    "/",
    "^",
    "@",
    "<",
    "<=",
    "==",
    "!=",
    "&&",
    "||",
    "!",
    "1",
    "2.5",
    "1e-3",
    "\"s\"",
    "\"a\\qb",
    "//c\n",
    "///d\n",
    " ",
    "\t",
    "é",
    "_",
    "'",
    "#",
];

fn fixture_texts() -> Vec<String> {
    ["parse", "check_pass", "check_errors"]
        .into_iter()
        .flat_map(fluxc_tests::fixtures)
        .filter_map(|(_, path)| std::fs::read_to_string(fluxc_tests::repo_dir().join(path)).ok())
        .collect()
}

proptest! {
    // 512 cases in CI; set PROPTEST_CASES for a longer local run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,200}") {
        check_total(&text);
    }

    #[test]
    fn token_soup_never_panics(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..80)) {
        check_total(&tokens.concat());
    }

    #[test]
    fn mutated_fixtures_never_panic(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), prop::sample::select(TOKENS), 0u8..3), 1..6),
    ) {
        let texts = fixture_texts();
        let mut text = texts[pick.index(texts.len())].clone();
        for (at, token, kind) in edits {
            let mut i = at.index(text.len() + 1);
            while !text.is_char_boundary(i) { i -= 1; }
            match kind {
                0 => text.insert_str(i, token),
                1 => { let mut j = (i + token.len()).min(text.len()); while !text.is_char_boundary(j) { j -= 1; } text.replace_range(i..j, ""); }
                _ => { let mut j = (i + 1).min(text.len()); while !text.is_char_boundary(j) { j -= 1; } text.replace_range(i..j, token); }
            }
        }
        check_total(&text);
    }
}
