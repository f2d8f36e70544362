//! One test per fixture file, per stage:
//! - `parse/*.flx` must parse without diagnostics; the snapshot is the source and its AST.
//! - `syntax_errors/*.flx` must fail with the code and position of its `// error: CODE L:C` header;
//!   the snapshot is the error as a user sees it (text and JSON).
//! - `examples/*.flx` and `stdlib/*.flx` must check clean.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)] // tests may panic

use fluxc_syntax::print::print_file;
use fluxc_tests::{fixtures, load, show_diagnostics};
use libtest_mimic::{Arguments, Failed, Trial};

fn settings(folder: &str) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_snapshot_path(fluxc_tests::repo_dir().join("snapshots").join(folder));
    s.set_prepend_module_to_snapshot(false);
    s.set_omit_expression(true);
    s
}

/// Runs an insta assertion and turns its panic into a test failure with the message.
fn snapshot(folder: &str, name: &str, relative: &str, value: String) -> Result<(), Failed> {
    let mut s = settings(folder);
    s.set_input_file(fluxc_tests::repo_dir().join(relative));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        s.bind(|| insta::assert_snapshot!(name, value))
    }));
    outcome.map_err(|e| {
        let text =
            e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
        Failed::from(text.unwrap_or_else(|| "snapshot mismatch".into()))
    })
}

fn parse_case(name: &str, relative: &str) -> Result<(), Failed> {
    let (sources, id) = load(relative)?;
    let checked = fluxc_syntax::parse_file(id, &sources.get(id).ok_or("no source")?.text);
    if !checked.diagnostics.is_empty() {
        return Err(show_diagnostics(&checked.diagnostics, &sources).into());
    }
    let ast = checked.file.ok_or("no AST")?;
    let source = sources.get(id).ok_or("no source")?;
    let body = format!("{}\n--- ast ---\n{}", source.text.trim_end(), print_file(&ast, source));
    snapshot("parse", name, relative, body)
}

fn syntax_error_case(name: &str, relative: &str) -> Result<(), Failed> {
    let (sources, id) = load(relative)?;
    let source = sources.get(id).ok_or("no source")?;
    let header = source.text.lines().next().unwrap_or("");
    let want = header.strip_prefix("// error: ").ok_or("fixture lacks its `// error: CODE L:C` header")?;
    let parsed = fluxc_syntax::parse_file(id, &source.text);
    let first = parsed.diagnostics.first().ok_or("the file parsed without errors")?;
    let at = source.line_col(first.primary.span.start as usize);
    let got = format!("{} {}:{}", first.code, at.line, at.column);
    if got != want.trim() {
        return Err(
            format!("want {want}, got {got}\n{}", show_diagnostics(&parsed.diagnostics, &sources)).into()
        );
    }
    snapshot("syntax_errors", name, relative, show_diagnostics(&parsed.diagnostics, &sources))
}

/// Checks a repo-relative file as `fluxc check` would, with its folder as the project folder.
fn check_file(relative: &str) -> Result<(fluxc_syntax::SourceMap, fluxc_core::Checked), Failed> {
    let (mut sources, id) = load(relative)?;
    let root = fluxc_tests::repo_dir();
    let mut loader = fluxc_cli::loader::DiskLoader::new(&root, std::path::Path::new(relative), None);
    let checked = fluxc_core::check(&mut sources, id, &mut loader);
    Ok((sources, checked))
}

fn checks_clean(relative: &str) -> Result<(), Failed> {
    let (sources, checked) = check_file(relative)?;
    if checked.diagnostics.is_empty() {
        Ok(())
    } else {
        Err(show_diagnostics(&checked.diagnostics, &sources).into())
    }
}

/// A stdlib file checks clean, and its public interface (one line per item) is snapshotted.
fn stdlib_case(name: &str, relative: &str) -> Result<(), Failed> {
    let (sources, checked) = check_file(relative)?;
    if !checked.diagnostics.is_empty() {
        return Err(show_diagnostics(&checked.diagnostics, &sources).into());
    }
    let lines: Vec<&str> =
        checked.info.bindings.iter().filter(|b| b.is_item).map(|b| b.text.as_str()).collect();
    snapshot("stdlib", name, relative, format!("{}\n", lines.join("\n")))
}

/// A pass fixture: no diagnostics; the snapshot is the source and a `name : type !effect` line
/// per binding.
fn check_pass_case(name: &str, relative: &str) -> Result<(), Failed> {
    let (sources, checked) = check_file(relative)?;
    if !checked.diagnostics.is_empty() {
        return Err(show_diagnostics(&checked.diagnostics, &sources).into());
    }
    let text = sources.get(fluxc_syntax::FileId(0)).map(|s| s.text.trim_end().to_owned()).unwrap_or_default();
    let lines: Vec<&str> = checked.info.bindings.iter().map(|b| b.text.as_str()).collect();
    snapshot("check_pass", name, relative, format!("{text}\n--- bindings ---\n{}\n", lines.join("\n")))
}

/// An error fixture: exactly the diagnostics of its `// error: CODE L:C` header lines, in order.
fn check_error_case(name: &str, relative: &str) -> Result<(), Failed> {
    let (sources, checked) = check_file(relative)?;
    let source = sources.get(fluxc_syntax::FileId(0)).ok_or("no source")?;
    let want: Vec<String> = source
        .text
        .lines()
        .map_while(|l| l.strip_prefix("// error: "))
        .map(|w| w.trim().to_owned())
        .collect();
    if want.is_empty() {
        return Err("fixture lacks its `// error: CODE L:C` header".into());
    }
    let got: Vec<String> = checked
        .diagnostics
        .iter()
        .map(|d| {
            let file = sources.get(d.primary.span.file);
            let at = file.map(|f| f.line_col(d.primary.span.start as usize));
            let here = if d.primary.span.file == fluxc_syntax::FileId(0) { "" } else { "(other file) " };
            at.map_or(format!("{} ?", d.code), |at| format!("{} {here}{}:{}", d.code, at.line, at.column))
        })
        .collect();
    if got != want {
        return Err(format!(
            "want {want:?}, got {got:?}\n{}",
            show_diagnostics(&checked.diagnostics, &sources)
        )
        .into());
    }
    snapshot("check_errors", name, relative, show_diagnostics(&checked.diagnostics, &sources))
}

/// The built-in names (§6 primitives and the std parts §12.12 builds in), one line each.
fn builtins_case() -> Result<(), Failed> {
    use fluxc_core::check::prims::Prim;
    let lines: Vec<String> = Prim::ALL
        .iter()
        .map(|p| {
            let module = p.module().map_or("primitive".to_owned(), |m| format!("std::{m}"));
            format!("{} ({module}, !{}): {}", p.name(), p.effect().as_str(), p.signature())
        })
        .collect();
    snapshot(
        "stdlib",
        "builtins",
        "compiler/fluxc-core/src/check/prims.rs",
        format!("{}\n", lines.join("\n")),
    )
}

/// Every model of a file that checks lowers to verified IR (forward in both variants, init).
fn lowers(relative: &str) -> Result<String, Failed> {
    let (mut sources, id) = load(relative)?;
    let root = fluxc_tests::repo_dir();
    let mut loader = fluxc_cli::loader::DiskLoader::new(&root, std::path::Path::new(relative), None);
    match fluxc_core::pipeline::emit_ir(&mut sources, id, &mut loader, None) {
        fluxc_core::pipeline::Outcome::Done(text) => Ok(text),
        fluxc_core::pipeline::Outcome::Rejected(d) => Err(show_diagnostics(&d, &sources).into()),
        fluxc_core::pipeline::Outcome::Failed(e) => {
            let at = e
                .span
                .and_then(|s| sources.get(s.file).map(|f| (f.name.clone(), f.line_col(s.start as usize))));
            Err(format!("lowering failed at {at:?}: {}", e.message).into())
        }
    }
}

/// A script runs; the snapshot is its source and what it printed (or its error).
fn run_case(name: &str, relative: &str) -> Result<(), Failed> {
    let (mut sources, id) = load(relative)?;
    let root = fluxc_tests::repo_dir();
    let path = root.join(relative);
    let mut loader = fluxc_cli::loader::DiskLoader::new(&root, std::path::Path::new(relative), None);
    let buffer = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut io = fluxc_cli::script_io::ScriptIo::new(&path);
    io.out = Box::new(SharedBuffer(buffer.clone()));
    let outcome = match fluxc_core::pipeline::run(&mut sources, id, &mut loader, &mut io) {
        fluxc_core::pipeline::Outcome::Done(()) => String::new(),
        fluxc_core::pipeline::Outcome::Rejected(d) => return Err(show_diagnostics(&d, &sources).into()),
        fluxc_core::pipeline::Outcome::Failed(e) => format!("error: {}\n", e.message),
    };
    let printed = String::from_utf8_lossy(&buffer.lock().map_err(|_| "poisoned")?).to_string();
    let text = sources.get(id).map(|s| s.text.trim_end().to_owned()).unwrap_or_default();
    snapshot("run", name, relative, format!("{text}\n--- output ---\n{printed}{outcome}"))
}

struct SharedBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every model and train step of a file after a late stage: scheduled into kernels (`kir`), or
/// optimized by the e-graph optimizer with its report (`opt`).
fn emitted_case(stage: &str, name: &str, relative: &str) -> Result<(), Failed> {
    let (mut sources, id) = load(relative)?;
    let root = fluxc_tests::repo_dir();
    let mut loader = fluxc_cli::loader::DiskLoader::new(&root, std::path::Path::new(relative), None);
    let outcome = match stage {
        "kir" => fluxc_core::pipeline::emit_kir(&mut sources, id, &mut loader, None),
        _ => fluxc_core::pipeline::emit_opt_ir(&mut sources, id, &mut loader, None),
    };
    match outcome {
        fluxc_core::pipeline::Outcome::Done(text) => snapshot(stage, name, relative, text),
        fluxc_core::pipeline::Outcome::Rejected(d) => Err(show_diagnostics(&d, &sources).into()),
        fluxc_core::pipeline::Outcome::Failed(e) => Err(e.message.into()),
    }
}

fn has_model(relative: &str) -> bool {
    std::fs::read_to_string(fluxc_tests::repo_dir().join(relative))
        .is_ok_and(|t| t.lines().any(|l| l.starts_with("model ")))
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    for (name, path) in fixtures("parse") {
        let n = name.clone();
        trials.push(Trial::test(format!("parse::{name}"), move || parse_case(&n, &path)));
    }
    for (name, path) in fixtures("syntax_errors") {
        let n = name.clone();
        trials.push(Trial::test(format!("syntax_errors::{name}"), move || syntax_error_case(&n, &path)));
    }
    for (name, path) in fixtures("check_pass") {
        let n = name.clone();
        trials.push(Trial::test(format!("check_pass::{name}"), move || check_pass_case(&n, &path)));
    }
    for (name, path) in fixtures("check_errors") {
        let n = name.clone();
        trials.push(Trial::test(format!("check_errors::{name}"), move || check_error_case(&n, &path)));
    }
    for (name, path) in fluxc_tests::flx_files("examples") {
        let p = path.clone();
        trials.push(Trial::test(format!("examples::{name}"), move || checks_clean(&p)));
        let n = name.clone();
        trials.push(Trial::test(format!("ir::{name}"), move || {
            let text = lowers(&path)?;
            snapshot("ir", &n, &path, text)
        }));
    }
    for (name, path) in fixtures("ir") {
        let n = name.clone();
        let p = path.clone();
        trials.push(Trial::test(format!("ir::{name}"), move || {
            let text = lowers(&p)?;
            snapshot("ir", &n, &p, text)
        }));
        let (n, p) = (name.clone(), path.clone());
        trials.push(Trial::test(format!("kir::{name}"), move || emitted_case("kir", &n, &p)));
        let n = name.clone();
        trials.push(Trial::test(format!("opt::{name}"), move || emitted_case("opt", &n, &path)));
    }
    // The optimizer on two small examples as well (the others' train steps run to thousands of
    // lines; the differential tests cover them).
    for (name, path) in [("mlp", "examples/mlp.flx"), ("digits", "examples/digits/digits.flx")] {
        trials.push(Trial::test(format!("opt::{name}"), move || emitted_case("opt", name, path)));
    }
    for (name, path) in fixtures("run") {
        let n = name.clone();
        trials.push(Trial::test(format!("run::{name}"), move || run_case(&n, &path)));
    }
    for (name, path) in fixtures("check_pass") {
        if has_model(&path) {
            trials.push(Trial::test(format!("lower::{name}"), move || lowers(&path).map(|_| ())));
        }
    }
    for (name, path) in fluxc_tests::flx_files("stdlib") {
        let n = name.clone();
        trials.push(Trial::test(format!("stdlib::{name}"), move || stdlib_case(&n, &path)));
    }
    trials.push(Trial::test("stdlib::builtins", builtins_case));
    libtest_mimic::run(&args, trials).exit();
}
