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

/// (name, graph, init graph) for every model forward and train step of a file.
#[allow(clippy::unwrap_used)] // a test helper: a broken fixture fails its test
pub fn graphs(relative: &str) -> Vec<(String, fluxc_core::ir::Graph, fluxc_core::ir::Graph)> {
    let (mut sources, id) = load(relative).unwrap();
    let root = repo_dir();
    let mut loader = fluxc_cli::loader::DiskLoader::new(&root, std::path::Path::new(relative), None);
    graphs_in(&mut sources, id, &mut loader, relative)
}

/// [`graphs`] of a source held in memory (no `use` of other files).
pub fn source_graphs(text: &str) -> Vec<(String, fluxc_core::ir::Graph, fluxc_core::ir::Graph)> {
    let mut sources = SourceMap::new();
    let id = sources.add("t.flx", text);
    graphs_in(&mut sources, id, &mut fluxc_core::NoFiles, text)
}

/// The first train step of an in-memory source, and its model's init graph.
#[allow(clippy::panic)] // a test helper
pub fn source_train_step(text: &str) -> (fluxc_core::ir::Graph, fluxc_core::ir::Graph) {
    source_graphs(text)
        .into_iter()
        .find(|(name, _, _)| name.starts_with("train "))
        .map(|(_, step, init)| (step, init))
        .unwrap_or_else(|| panic!("no train block in {text}"))
}

/// The first model's forward graph of an in-memory source, in the training or inference variant.
#[allow(clippy::panic)] // a test helper
pub fn source_model(text: &str, training: bool) -> fluxc_core::ir::Graph {
    let variant = format!(" training={training}");
    source_graphs(text)
        .into_iter()
        .find(|(name, _, _)| name.ends_with(&variant))
        .map(|(_, g, _)| g)
        .unwrap_or_else(|| panic!("no model in {text}"))
}

#[allow(clippy::unwrap_used, clippy::panic)] // a test helper: a broken source fails its test
fn graphs_in(
    sources: &mut SourceMap,
    id: FileId,
    loader: &mut dyn fluxc_core::SourceLoader,
    label: &str,
) -> Vec<(String, fluxc_core::ir::Graph, fluxc_core::ir::Graph)> {
    let out = fluxc_core::pipeline::after_check(sources, id, loader, move |idx, _| {
        let mut out = Vec::new();
        for (k, info) in idx.items.iter().enumerate() {
            if info.file != id {
                continue;
            }
            match info.item {
                fluxc_syntax::ast::Item::Model(_) => {
                    let init = fluxc_core::lower::init_graph(idx, k)?;
                    for training in [false, true] {
                        out.push((
                            format!("{} training={training}", info.name),
                            fluxc_core::lower::lower_model(idx, k, training)?,
                            init.clone(),
                        ));
                    }
                }
                fluxc_syntax::ast::Item::Train(t) => {
                    let model = idx.item(id, &t.model.name).unwrap();
                    let init = fluxc_core::lower::init_graph(idx, model)?;
                    out.push((format!("train {}", info.name), fluxc_core::lower::train_step(idx, k)?, init));
                }
                _ => {}
            }
        }
        Ok(out)
    });
    match out {
        fluxc_core::pipeline::Outcome::Done(v) => v,
        fluxc_core::pipeline::Outcome::Rejected(d) => {
            panic!("{label}: {:?}", d.iter().map(|d| d.message.clone()).collect::<Vec<_>>())
        }
        fluxc_core::pipeline::Outcome::Failed(e) => panic!("{label}: {}", e.message),
    }
}

/// Fresh random values for input `k` of `g` at `batch`: normals for f32 (small whole numbers
/// for `step` and `epoch`), 0..3 for i32 token ids, coin flips for bool.
#[allow(clippy::unwrap_used, clippy::indexing_slicing)] // a test helper
pub fn random_input(g: &fluxc_core::ir::Graph, k: usize, batch: i64, seed: u64) -> fluxc_core::interp::Array {
    let slot = &g.inputs[k];
    let shape = fluxc_core::interp::concrete(&slot.ty.shape, batch).unwrap();
    let n: usize = shape.iter().product();
    let s = fluxc_core::rng::Stream::new(seed, k as u32, 0);
    let data = (0..n as u64)
        .map(|e| match slot.ty.dtype {
            fluxc_core::ir::DType::F32 if slot.name == "step" || slot.name == "epoch" => {
                1.0 + f64::from(s.uniform(e) * 3.0).floor()
            }
            fluxc_core::ir::DType::F32 => f64::from(s.normal(e)),
            fluxc_core::ir::DType::I32 => f64::from(s.bits(e) % 3),
            fluxc_core::ir::DType::Bool => f64::from(s.bits(e) % 2),
        })
        .collect();
    fluxc_core::interp::Array::new(shape, data)
}
