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

/// Every `*.flx` file in a repo-relative folder and its subfolders, sorted, as (name,
/// repo-relative path); a file in a subfolder is named `sub__stem`.
pub fn flx_files(folder: &str) -> Vec<(String, String)> {
    fn walk(dir: &std::path::Path, rel: &str, sub: &str, out: &mut Vec<(String, String)>, depth: usize) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for p in entries.filter_map(Result::ok).map(|e| e.path()) {
            let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_owned) else { continue };
            if p.is_dir() && depth < 4 {
                walk(&p, &format!("{rel}/{name}"), &format!("{sub}{name}__"), out, depth + 1);
            } else if p.extension().is_some_and(|x| x == "flx") {
                let stem = name.trim_end_matches(".flx");
                out.push((format!("{sub}{stem}"), format!("{rel}/{name}")));
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo_dir().join(folder), folder, "", &mut out, 0);
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
