//! Shared helpers for the data-driven harnesses: find fixtures, run a stage, format its output
//! the way a user sees it.

use std::path::{Path, PathBuf};

use fluxc_core::{TextStyle, render_json, render_text};
use fluxc_syntax::{Diagnostic, FileId, SourceMap};

/// The `tests/` folder of the repository.
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The repository root.
pub fn repo_dir() -> PathBuf {
    tests_dir().parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Every `*.flx` file in `tests/fixtures/<folder>`, sorted, as (name, repo-relative path).
pub fn fixtures(folder: &str) -> Vec<(String, String)> {
    flx_files(&format!("tests/fixtures/{folder}"))
}

/// Every `*.flx` file in a repo-relative folder, sorted, as (name, repo-relative path).
pub fn flx_files(folder: &str) -> Vec<(String, String)> {
    let dir = repo_dir().join(folder);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "flx"))
                .filter_map(|p| {
                    let stem = p.file_stem()?.to_str()?.to_owned();
                    let name = p.file_name()?.to_str()?.to_owned();
                    Some((stem, format!("{folder}/{name}")))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Loads a repo-relative file into a fresh source map under its repo-relative name.
pub fn load(relative: &str) -> Result<(SourceMap, FileId), String> {
    let text = std::fs::read_to_string(repo_dir().join(relative)).map_err(|e| format!("{relative}: {e}"))?;
    let mut sources = SourceMap::new();
    let id = sources.add(relative, text);
    Ok((sources, id))
}

/// Diagnostics as a user sees them: uncoloured text, then the JSON lines.
pub fn show_diagnostics(diagnostics: &[Diagnostic], sources: &SourceMap) -> String {
    let mut out = render_text(diagnostics, sources, TextStyle { color: false });
    out.push_str("\n--- json ---\n");
    for d in diagnostics {
        out.push_str(&render_json(d, sources));
        out.push('\n');
    }
    out
}
