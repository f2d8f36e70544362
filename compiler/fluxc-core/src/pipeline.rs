//! The pipeline: one function per command that reads top to bottom. Today: parse the file and the
//! files it `use`s, parse the embedded std, then resolve and check everything. Lowering, autodiff,
//! the optimizer and scheduling join here as they are built.

use std::collections::{HashMap, VecDeque};

use fluxc_syntax::ast::{File, Item, Top, UseTarget};
use fluxc_syntax::limits::CHECKER_STACK_BYTES;
use fluxc_syntax::{Code, Diagnostic, FileId, SourceMap, parse_file};

use crate::check::{CheckInfo, Folder, Index, PathPolicy, Unit, check_units};

/// The std package, embedded in the binary (§7).
pub const STDLIB: [(&str, &str); 5] = [
    ("act", include_str!("../../../stdlib/act.flx")),
    ("init", include_str!("../../../stdlib/init.flx")),
    ("layers", include_str!("../../../stdlib/layers.flx")),
    ("losses", include_str!("../../../stdlib/losses.flx")),
    ("optim", include_str!("../../../stdlib/optim.flx")),
];

/// Why a `use "file.flx"` could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// The path leaves the project folder (E0502).
    Outside,
    /// No such file inside it (E0202).
    NotFound,
    /// Anything else, in words (E0202).
    Unreadable(String),
}

/// What the core needs from the outside world (DESIGN.md rule 1): the text of `use`d files, and
/// whether paths stay inside the project or output folder. The CLI implements it on disk.
pub trait SourceLoader: PathPolicy {
    /// The file `path` as written in the file named `from`: its name for the source map and its text.
    fn load(&mut self, from: &str, path: &str) -> Result<(String, String), LoadError>;
}

/// A loader with no files: every `use "…"` is missing; paths are judged lexically.
pub struct NoFiles;

impl PathPolicy for NoFiles {
    fn stays_inside(&self, from: &str, path: &str, _folder: Folder) -> bool {
        let _ = from;
        lexically_inside(path)
    }
}

impl SourceLoader for NoFiles {
    fn load(&mut self, _from: &str, path: &str) -> Result<(String, String), LoadError> {
        if lexically_inside(path) { Err(LoadError::NotFound) } else { Err(LoadError::Outside) }
    }
}

/// Whether a relative path stays below its starting folder, by its components alone
/// (`a/../b` does; `../x`, `/abs` and `a/../../x` do not).
pub fn lexically_inside(path: &str) -> bool {
    if path.starts_with('/') || path.starts_with('\\') || path.contains(':') {
        return false;
    }
    let mut depth: i64 = 0;
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

/// What checking one file produced: its AST (when it parsed), every diagnostic, and the
/// per-binding and per-expression types.
pub struct Checked {
    pub ast: Option<File>,
    pub diagnostics: Vec<Diagnostic>,
    pub info: CheckInfo,
}

/// The parsed program: the main file, the files it `use`s and std, with every diagnostic of
/// loading and parsing.
struct Program {
    diagnostics: Vec<Diagnostic>,
    /// `None` when the main file did not parse.
    asts: Option<Vec<(FileId, File, Option<&'static str>)>>,
    uses: HashMap<FileId, Vec<FileId>>,
}

fn load_program(sources: &mut SourceMap, file: FileId, loader: &mut dyn SourceLoader) -> Program {
    let Some(source) = sources.get(file) else {
        return Program { diagnostics: Vec::new(), asts: None, uses: HashMap::new() };
    };
    let parsed = parse_file(file, &source.text);
    let mut diagnostics = parsed.diagnostics;
    let Some(main_ast) = parsed.file else {
        return Program { diagnostics, asts: None, uses: HashMap::new() };
    };
    if !diagnostics.is_empty() {
        return Program { diagnostics, asts: Some(vec![(file, main_ast, None)]), uses: HashMap::new() };
    }
    // The files `use`d, transitively; each once.
    let mut asts: Vec<(FileId, File, Option<&'static str>)> = Vec::new();
    let mut uses: HashMap<FileId, Vec<FileId>> = HashMap::new();
    let mut by_name: HashMap<String, FileId> = HashMap::new();
    let mut queue: VecDeque<(FileId, File)> = VecDeque::new();
    queue.push_back((file, main_ast));
    while let Some((id, ast)) = queue.pop_front() {
        let from = sources.get(id).map(|s| s.name.clone()).unwrap_or_default();
        for top in &ast.tops {
            let Top::Item(Item::Use(u)) = top else { continue };
            let UseTarget::File { path, span } = &u.target else { continue };
            match loader.load(&from, path) {
                Ok((name, text)) => {
                    let used = match by_name.get(&name) {
                        Some(existing) => *existing,
                        None => {
                            let new_id = sources.add(name.clone(), text);
                            by_name.insert(name, new_id);
                            let text = sources.get(new_id).map(|s| s.text.clone()).unwrap_or_default();
                            let p = parse_file(new_id, &text);
                            let ok = p.diagnostics.is_empty();
                            diagnostics.extend(p.diagnostics);
                            if let (Some(f), true) = (p.file, ok) {
                                queue.push_back((new_id, f));
                            }
                            new_id
                        }
                    };
                    uses.entry(id).or_default().push(used);
                }
                Err(LoadError::Outside) => diagnostics.push(
                    Diagnostic::error(
                        Code::E0502,
                        *span,
                        format!("`use \"{path}\"` leaves the project folder"),
                    )
                    .with_primary_label("outside the project folder")
                    .with_note("a `use` path must stay inside the folder of the file given to the command"),
                ),
                Err(LoadError::NotFound) => diagnostics.push(
                    Diagnostic::error(Code::E0202, *span, format!("cannot find the file \"{path}\""))
                        .with_primary_label("no such file")
                        .with_note("a `use` path is relative to the file that contains it"),
                ),
                Err(LoadError::Unreadable(why)) => diagnostics.push(
                    Diagnostic::error(Code::E0202, *span, format!("cannot read \"{path}\": {why}"))
                        .with_primary_label("unreadable file"),
                ),
            }
        }
        asts.push((id, ast, None));
    }
    // The embedded std.
    for (module, text) in STDLIB {
        let id = sources.add(format!("<std>/{module}.flx"), text);
        let p = parse_file(id, text);
        diagnostics.extend(p.diagnostics);
        if let Some(f) = p.file {
            asts.push((id, f, Some(module)));
        }
    }
    Program { diagnostics, asts: Some(asts), uses }
}

fn units<'a>(
    sources: &SourceMap,
    asts: &'a [(FileId, File, Option<&'static str>)],
    uses: &HashMap<FileId, Vec<FileId>>,
    names: &'a mut HashMap<FileId, String>,
) -> Vec<Unit<'a>> {
    for (id, _, _) in asts {
        names.insert(*id, sources.get(*id).map(|s| s.name.clone()).unwrap_or_default());
    }
    let names: &'a HashMap<FileId, String> = names;
    asts.iter()
        .map(|(id, ast, module)| Unit {
            file: *id,
            name: names.get(id).map(String::as_str).unwrap_or(""),
            ast,
            std_module: *module,
            uses: uses.get(id).cloned().unwrap_or_default(),
        })
        .collect()
}

/// `fluxc check`: parse the file, the files it uses and std; resolve and check them all.
pub fn check(sources: &mut SourceMap, file: FileId, loader: &mut dyn SourceLoader) -> Checked {
    let program = load_program(sources, file, loader);
    let mut diagnostics = program.diagnostics;
    let Some(asts) = program.asts else {
        return Checked { ast: None, diagnostics, info: CheckInfo::default() };
    };
    if !diagnostics.is_empty() && asts.len() == 1 {
        let main_ast = asts.into_iter().next().map(|(_, a, _)| a);
        return Checked { ast: main_ast, diagnostics, info: CheckInfo::default() };
    }
    let mut names = HashMap::new();
    let units = units(sources, &asts, &program.uses, &mut names);
    let (checked, info) = check_on_deep_stack(&units, file, &*loader);
    diagnostics.extend(checked);
    drop(units);
    let main_ast = asts.into_iter().find(|(id, _, _)| *id == file).map(|(_, ast, _)| ast);
    Checked { ast: main_ast, diagnostics, info }
}

/// The checker follows chains of definitions recursively: it runs on a deep stack.
fn check_on_deep_stack(
    units: &[Unit<'_>],
    file: FileId,
    policy: &dyn PathPolicy,
) -> (Vec<Diagnostic>, CheckInfo) {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("fluxc-checker".into())
            .stack_size(CHECKER_STACK_BYTES)
            .spawn_scoped(scope, || check_units(units, file, policy));
        match worker.map(|h| h.join()) {
            Ok(Ok(result)) => result,
            Ok(Err(payload)) => std::panic::resume_unwind(payload),
            // No thread: check here (the depth limit still bounds the recursion).
            Err(_) => check_units(units, file, policy),
        }
    })
}

/// What a later stage produced, or why it could not run.
pub enum Outcome<T> {
    Done(T),
    /// The program does not check (or parse): its diagnostics.
    Rejected(Vec<Diagnostic>),
    /// It checked but failed while lowering or running: a message and where.
    Failed(crate::lower::LowerError),
}

/// Checks the program, then hands the checked items to `stage` (on a deep stack).
pub fn after_check<T: Send>(
    sources: &mut SourceMap,
    file: FileId,
    loader: &mut dyn SourceLoader,
    stage: impl FnOnce(&Index<'_>, &File) -> Result<T, crate::lower::LowerError> + Send,
) -> Outcome<T> {
    let program = load_program(sources, file, loader);
    let mut diagnostics = program.diagnostics;
    let Some(asts) = program.asts else { return Outcome::Rejected(diagnostics) };
    if !diagnostics.is_empty() {
        return Outcome::Rejected(diagnostics);
    }
    let mut names = HashMap::new();
    let units = units(sources, &asts, &program.uses, &mut names);
    let (checked, _) = check_on_deep_stack(&units, file, &*loader);
    diagnostics.extend(checked);
    if !diagnostics.is_empty() {
        return Outcome::Rejected(diagnostics);
    }
    let Some((_, main_ast, _)) = asts.iter().find(|(id, _, _)| *id == file) else {
        return Outcome::Rejected(diagnostics);
    };
    let (idx, _) = Index::build(&units);
    let result = std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("fluxc-lower".into())
            .stack_size(CHECKER_STACK_BYTES)
            .spawn_scoped(scope, || stage(&idx, main_ast));
        match worker.map(|h| h.join()) {
            Ok(Ok(r)) => r,
            Ok(Err(payload)) => std::panic::resume_unwind(payload),
            Err(_) => Err(crate::lower::LowerError {
                span: None,
                message: "could not start the lowering thread".into(),
            }),
        }
    });
    match result {
        Ok(v) => Outcome::Done(v),
        Err(e) => Outcome::Failed(e),
    }
}

/// `fluxc summary`: each model's (or `model`'s) layers, output shapes and parameter counts.
pub fn summary(
    sources: &mut SourceMap,
    file: FileId,
    loader: &mut dyn SourceLoader,
    model: Option<&str>,
) -> Outcome<String> {
    let model = model.map(str::to_owned);
    after_check(sources, file, loader, move |idx, _| {
        let mut out = String::new();
        for (k, item) in idx.items.iter().enumerate() {
            let Item::Model(m) = item.item else { continue };
            if item.file != file || model.as_deref().is_some_and(|w| w != m.name.name) {
                continue;
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("model {}\n{}", m.name.name, crate::lower::summary(idx, k)?));
        }
        if out.is_empty() {
            return Err(no_model(model.as_deref()));
        }
        Ok(out)
    })
}

/// The error when a file has no model (or none named `model`).
fn no_model(model: Option<&str>) -> crate::lower::LowerError {
    let message = match model {
        Some(name) => format!("there is no model `{name}` in this file"),
        None => "this file defines no model".into(),
    };
    crate::lower::LowerError { span: None, message }
}

/// A model's graphs, what `fluxc build` compiles.
pub struct ModelGraphs {
    pub name: String,
    /// No inputs; one output per parameter and state tensor, in manifest order.
    pub init: crate::ir::Graph,
    /// The inference forward.
    pub forward: crate::ir::Graph,
    /// The train step of the model's first train block in the file.
    pub train: Option<crate::ir::Graph>,
}

/// `fluxc build`: each model's (or `model`'s) initialiser, inference forward and train step.
pub fn model_graphs(
    sources: &mut SourceMap,
    file: FileId,
    loader: &mut dyn SourceLoader,
    model: Option<&str>,
) -> Outcome<Vec<ModelGraphs>> {
    let model = model.map(str::to_owned);
    after_check(sources, file, loader, move |idx, _| {
        let mut out = Vec::new();
        for (k, item) in idx.items.iter().enumerate() {
            let Item::Model(m) = item.item else { continue };
            if item.file != file || model.as_deref().is_some_and(|w| w != m.name.name) {
                continue;
            }
            let train = idx.items.iter().enumerate().find_map(|(t, it)| match it.item {
                Item::Train(tb) if it.file == file && tb.model.name == m.name.name => Some(t),
                _ => None,
            });
            out.push(ModelGraphs {
                name: m.name.name.clone(),
                init: crate::lower::init_graph(idx, k)?,
                forward: crate::lower::lower_model(idx, k, false)?,
                train: train.map(|t| crate::lower::train_step(idx, t)).transpose()?,
            });
        }
        if out.is_empty() {
            return Err(no_model(model.as_deref()));
        }
        Ok(out)
    })
}

/// What `fluxc train` runs: the chosen train block's configuration and graphs.
pub struct TrainSetup {
    pub config: crate::lower::setup::TrainConfig,
    /// The model's initialiser (one output per parameter and state, manifest order).
    pub init: crate::ir::Graph,
    /// The train step (see `lower::train_step`).
    pub train: crate::ir::Graph,
    /// The inference forward and the loss (validation, `fluxc eval`).
    pub eval: crate::ir::Graph,
}

/// The train block `selector` picks (`MODEL` or `MODEL:K`, the K-th block for MODEL from 1;
/// none when the file has one block), with its graphs.
pub fn train_setup(
    sources: &mut SourceMap,
    file: FileId,
    loader: &mut dyn SourceLoader,
    selector: Option<&str>,
) -> Outcome<TrainSetup> {
    let selector = selector.map(str::to_owned);
    after_check(sources, file, loader, move |idx, _| {
        let fail = |message: String| crate::lower::LowerError { span: None, message };
        let blocks: Vec<(usize, String)> = idx
            .items
            .iter()
            .enumerate()
            .filter_map(|(k, it)| match it.item {
                Item::Train(t) if it.file == file => Some((k, t.model.name.clone())),
                _ => None,
            })
            .collect();
        let chosen = match selector.as_deref() {
            None => match blocks.as_slice() {
                [] => return Err(fail("this file has no train block".into())),
                [(k, _)] => *k,
                _ => {
                    let names: Vec<&str> = blocks.iter().map(|(_, m)| m.as_str()).collect();
                    return Err(fail(format!(
                        "this file has {} train blocks ({}); pick one with --train MODEL",
                        blocks.len(),
                        names.join(", ")
                    )));
                }
            },
            Some(sel) => {
                let (model, nth) = match sel.rsplit_once(':') {
                    Some((m, k)) => match k.parse::<usize>() {
                        Ok(k) if k >= 1 => (m, Some(k)),
                        _ => {
                            return Err(fail(format!("`--train {sel}`: the block number must be 1 or more")));
                        }
                    },
                    None => (sel, None),
                };
                let of_model: Vec<usize> =
                    blocks.iter().filter(|(_, m)| m == model).map(|(k, _)| *k).collect();
                match (of_model.as_slice(), nth) {
                    ([], _) => {
                        return Err(fail(format!("there is no train block for `{model}` in this file")));
                    }
                    ([k], None) => *k,
                    (ks, None) => {
                        return Err(fail(format!(
                            "`{model}` has {} train blocks; pick one with --train {model}:1 … {model}:{}",
                            ks.len(),
                            ks.len()
                        )));
                    }
                    (ks, Some(n)) => match ks.get(n - 1) {
                        Some(k) => *k,
                        None => {
                            return Err(fail(format!("`{model}` has {} train blocks, not {n}", ks.len())));
                        }
                    },
                }
            }
        };
        let config = crate::lower::setup::train_config(idx, chosen)?;
        let model =
            idx.item(file, &config.model).ok_or_else(|| fail(format!("no model `{}`", config.model)))?;
        Ok(TrainSetup {
            init: crate::lower::init_graph(idx, model)?,
            train: crate::lower::train_step(idx, chosen)?,
            eval: crate::lower::eval_step(idx, chosen)?,
            config,
        })
    })
}

/// What `fluxc eval` runs: `model`'s evaluation graph (its first train block's loss), its
/// initialiser (for the parameter layout) and the data source `source`.
pub struct EvalSetup {
    pub eval: crate::ir::Graph,
    pub init: crate::ir::Graph,
    pub data: crate::lower::setup::DataSpec,
}

pub fn eval_setup(
    sources: &mut SourceMap,
    file: FileId,
    loader: &mut dyn SourceLoader,
    model: &str,
    source: &str,
) -> Outcome<EvalSetup> {
    let (model, source) = (model.to_owned(), source.to_owned());
    after_check(sources, file, loader, move |idx, _| {
        let fail = |message: String| crate::lower::LowerError { span: None, message };
        let m = match idx.item(file, &model).and_then(|k| idx.items.get(k).map(|i| (k, i.item))) {
            Some((k, Item::Model(_))) => k,
            _ => return Err(fail(format!("there is no model `{model}` in this file"))),
        };
        let train = idx
            .items
            .iter()
            .enumerate()
            .find_map(|(k, it)| match it.item {
                Item::Train(t) if it.file == file && t.model.name == model => Some(k),
                _ => None,
            })
            .ok_or_else(|| {
                fail(format!("`fluxc eval` takes the loss from a train block, and `{model}` has none"))
            })?;
        if !matches!(
            idx.item(file, &source).and_then(|k| idx.items.get(k)).map(|i| i.item),
            Some(Item::Data(_))
        ) {
            return Err(fail(format!("there is no data source `{source}` in this file")));
        }
        Ok(EvalSetup {
            eval: crate::lower::eval_step(idx, train)?,
            init: crate::lower::init_graph(idx, m)?,
            data: crate::lower::setup::data_spec(idx, file, &source, Default::default())?,
        })
    })
}

/// `fluxc build --emit kir`: each model's inference forward and each train step scheduled into
/// kernels, with the memory plan and the scratch bytes per batch row.
pub fn emit_kir(
    sources: &mut SourceMap,
    file: FileId,
    loader: &mut dyn SourceLoader,
    model: Option<&str>,
) -> Outcome<String> {
    emit_each(sources, file, loader, model, |g| Ok(crate::kir::print_kir(&crate::kir::schedule(g)?)))
}

/// `fluxc build --emit opt-ir`: each model's inference forward and each train step after the
/// e-graph optimizer, with its report (stop reason, rules fired, sizes and costs before/after).
pub fn emit_opt_ir(
    sources: &mut SourceMap,
    file: FileId,
    loader: &mut dyn SourceLoader,
    model: Option<&str>,
) -> Outcome<String> {
    emit_each(sources, file, loader, model, |g| {
        let o = crate::opt::optimize(g);
        Ok(format!("{}{}", o.report.text(), crate::ir::print_graph(&o.graph)))
    })
}

/// Each model's inference forward and each train step of `file` (or `model`'s), rendered.
fn emit_each(
    sources: &mut SourceMap,
    file: FileId,
    loader: &mut dyn SourceLoader,
    model: Option<&str>,
    render: impl Fn(&crate::ir::Graph) -> Result<String, crate::ir::IrError> + Send + 'static,
) -> Outcome<String> {
    let model = model.map(str::to_owned);
    after_check(sources, file, loader, move |idx, _| {
        let mut out = String::new();
        for (k, item) in idx.items.iter().enumerate() {
            if item.file != file {
                continue;
            }
            let (title, g) = match item.item {
                Item::Model(m) if model.as_deref().is_none_or(|w| w == m.name.name) => (
                    format!("# model {}: forward (inference)", m.name.name),
                    crate::lower::lower_model(idx, k, false)?,
                ),
                Item::Train(t) if model.as_deref().is_none_or(|w| w == t.model.name) => (
                    format!("# train {} on {}: train step", t.model.name, t.source.name),
                    crate::lower::train_step(idx, k)?,
                ),
                _ => continue,
            };
            out.push_str(&format!("{title}\n{}\n", render(&g)?));
        }
        if out.is_empty() {
            return Err(no_model(model.as_deref()));
        }
        Ok(out)
    })
}

/// `fluxc build --emit ir`: each model's graphs as text (inference forward, training forward,
/// and the initialiser), or only `model`'s.
pub fn emit_ir(
    sources: &mut SourceMap,
    file: FileId,
    loader: &mut dyn SourceLoader,
    model: Option<&str>,
) -> Outcome<String> {
    let model = model.map(str::to_owned);
    after_check(sources, file, loader, move |idx, ast| {
        let mut out = String::new();
        let mut found = false;
        for top in &ast.tops {
            let Top::Item(Item::Model(m)) = top else { continue };
            if model.as_deref().is_some_and(|want| want != m.name.name) {
                continue;
            }
            found = true;
            let Some(id) = idx.item(file, &m.name.name) else { continue };
            for (title, training) in [("forward (inference)", false), ("forward (training)", true)] {
                let g = crate::lower::lower_model(idx, id, training)?;
                out.push_str(&format!("# model {}: {title}\n{}\n", m.name.name, crate::ir::print_graph(&g)));
            }
            let init = crate::lower::init_graph(idx, id)?;
            out.push_str(&format!("# model {}: init\n{}\n", m.name.name, crate::ir::print_graph(&init)));
        }
        for (k, item) in idx.items.iter().enumerate() {
            let Item::Train(t) = item.item else { continue };
            if item.file != file || model.as_deref().is_some_and(|want| want != t.model.name) {
                continue;
            }
            let g = crate::lower::train_step(idx, k)?;
            out.push_str(&format!(
                "# train {} on {}: train step\n{}\n",
                t.model.name,
                t.source.name,
                crate::ir::print_graph(&g)
            ));
        }
        if !found {
            return Err(no_model(model.as_deref()));
        }
        Ok(out)
    })
}

/// `fluxc run`: checks the file, then runs its top-level statements on the interpreter.
pub fn run(
    sources: &mut SourceMap,
    file: FileId,
    loader: &mut dyn SourceLoader,
    io: &mut (dyn crate::lower::Io + Send),
) -> Outcome<()> {
    after_check(sources, file, loader, move |idx, ast| crate::lower::run_script(idx, file, ast, io))
}

#[cfg(test)]
mod tests {
    use super::lexically_inside;

    #[test]
    fn lexical_confinement() {
        assert!(lexically_inside("data/x.csv"));
        assert!(lexically_inside("a/../b.flx"));
        assert!(lexically_inside("./x"));
        assert!(!lexically_inside("../x"));
        assert!(!lexically_inside("a/../../x"));
        assert!(!lexically_inside("/tmp/x.npy"));
    }
}
