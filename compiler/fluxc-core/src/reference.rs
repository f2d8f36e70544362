//! The standard library's reference (`docs/REFERENCE.md`): every public item of `std` (§7) with
//! its signature and doc comment, read from the embedded `stdlib/*.flx` sources and the
//! built-ins' own descriptions, plus the train-block built-ins. One source of truth for the page
//! and for hovers; a test keeps the committed page equal to `page()`.

use fluxc_syntax::ast::{Item, LayerMember, OptimizerMember, Top};
use fluxc_syntax::{SourceMap, parse_file};

use crate::check::prims::{Prim, STD_MODULES};
use crate::pipeline::STDLIB;

/// One documented name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `act`, `init`, `layers`, `losses`, `optim`, or `train` for the train-block built-ins.
    pub module: &'static str,
    pub name: String,
    /// `fn`, `layer`, `loss`, `optimizer`, or `built in`.
    pub kind: &'static str,
    /// The declaration as written, bodies left out (several lines for layers and optimizers).
    pub signature: String,
    /// The doc comment, or the built-in's description.
    pub doc: String,
}

/// The train-block built-ins (§3.7, §7, §12.7, §12.8): name, signature, description.
const TRAIN_BUILTINS: [(&str, &str, &str); 9] = [
    ("constant", "schedule = constant", "The learning rate stays the optimizer's `lr` (factor 1)."),
    (
        "step_decay",
        "schedule = step_decay(every, gamma)",
        "Multiplies `lr` by `gamma ^ floor((epoch - 1) / every)` (torch's StepLR, counted in epochs).",
    ),
    (
        "cosine",
        "schedule = cosine(total_steps)",
        "Multiplies `lr` by `0.5 * (1 + cos(pi * min(step, total_steps) / total_steps))`, `step` counted from 1.",
    ),
    (
        "warmup",
        "schedule = warmup(steps, then)",
        "Multiplies `lr` by `step / steps` for the first `steps` steps, then by `then`'s factor \
         (`warmup(100, cosine(1000))`).",
    ),
    (
        "log",
        "callbacks = [log(every = 50)]",
        "Writes a `step` event to `train.jsonl` (and the terminal) every `every` steps.",
    ),
    (
        "checkpoint",
        "callbacks = [checkpoint(\"model.safetensors\", every = 1)]",
        "Saves the weights and the optimizer state every `every` epochs in the output folder; \
         `--resume` continues from it bit for bit.",
    ),
    (
        "early_stop",
        "callbacks = [early_stop(patience = 3, monitor = val_loss)]",
        "Stops when `monitor` (`loss`, `val_loss` or `val_accuracy`) has not improved for `patience` \
         epochs; losses are minimised, accuracy maximised.",
    ),
    (
        "nan_guard",
        "callbacks = [nan_guard()]",
        "On by default: a NaN or infinite loss or gradient stops training, writes a `nan` event, keeps \
         the last good weights and exits 1.",
    ),
    (
        "accuracy",
        "metrics = [accuracy]",
        "The fraction of labels whose class has the output's first maximal score on the last axis \
         (Flux's `onecold(ŷ) .== onecold(y)`), every position counted when rows hold several labels.",
    ),
];

/// The declaration text of an item: its source up to the body's `{` (or the whole item when it
/// has none), whitespace runs folded.
fn head(text: &str) -> String {
    let mut depth = 0i32;
    let mut end = text.len();
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            '{' if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    text.get(..end).unwrap_or(text).split_whitespace().collect::<Vec<_>>().join(" ")
}

fn slice(text: &str, span: fluxc_syntax::Span) -> &str {
    text.get(span.start as usize..span.end as usize).unwrap_or_default()
}

/// Every documented name of `std`, module by module in §7's order: the items written in
/// `stdlib/` in source order, then the module's built-ins; then the train-block built-ins.
pub fn entries() -> Vec<Entry> {
    let mut out = Vec::new();
    let mut sources = SourceMap::new();
    for module in STD_MODULES {
        let Some((_, text)) = STDLIB.iter().find(|(m, _)| *m == module) else { continue };
        let id = sources.add(format!("<std>/{module}.flx"), *text);
        let parsed = parse_file(id, text);
        for top in parsed.file.iter().flat_map(|f| &f.tops) {
            let Top::Item(item) = top else { continue };
            let (kind, name, doc, span) = match item {
                Item::Fn(f) => ("fn", &f.name.name, &f.doc, f.span),
                Item::Loss(f) => ("loss", &f.name.name, &f.doc, f.span),
                Item::Layer(l) => ("layer", &l.name.name, &l.doc, l.span),
                Item::Optimizer(o) => ("optimizer", &o.name.name, &o.doc, o.span),
                _ => continue,
            };
            let whole = slice(text, span);
            let mut lines = vec![head(whole)];
            // Members show what a layer holds and takes, and what state an optimizer keeps.
            match item {
                Item::Layer(l) => {
                    for m in &l.members {
                        lines.push(match m {
                            LayerMember::Param(p) => format!("    {}", head(slice(text, p.span))),
                            LayerMember::State(s) => format!("    {}", head(slice(text, s.span))),
                            LayerMember::Field(f) => format!("    {}", head(slice(text, f.span))),
                            LayerMember::Forward(f) => format!("    {}", head(slice(text, f.span))),
                        });
                    }
                }
                Item::Optimizer(o) => {
                    for m in &o.members {
                        if let OptimizerMember::State(s) = m {
                            lines.push(format!("    {}", head(slice(text, s.span))));
                        }
                    }
                }
                _ => {}
            }
            out.push(Entry {
                module,
                name: name.clone(),
                kind,
                signature: lines.join("\n"),
                doc: doc.clone().unwrap_or_default().trim().to_owned(),
            });
        }
        for p in Prim::exported_by(module) {
            out.push(Entry {
                module,
                name: p.name().to_owned(),
                kind: "built in",
                signature: p.signature().to_owned(),
                doc: p.doc().to_owned(),
            });
        }
    }
    for (name, signature, doc) in TRAIN_BUILTINS {
        out.push(Entry {
            module: "train",
            name: name.to_owned(),
            kind: "built in",
            signature: signature.to_owned(),
            doc: doc.to_owned(),
        });
    }
    out
}

/// The entry for `name` (hover): std items first, then train-block built-ins.
pub fn lookup(name: &str) -> Option<Entry> {
    entries().into_iter().find(|e| e.name == name)
}

fn title(module: &str) -> &'static str {
    match module {
        "act" => "`std::act`: activations",
        "init" => "`std::init`: initialisers",
        "layers" => "`std::layers`: layers",
        "losses" => "`std::losses`: losses",
        "optim" => "`std::optim`: optimizers and gradient rules",
        _ => "Train-block built-ins: schedules, callbacks, metrics",
    }
}

/// The reference page, in Markdown.
pub fn page() -> String {
    let all = entries();
    let mut s = String::from(
        "# The fluxc standard library\n\n\
         Generated by `fluxc_core::reference::page()` from the doc comments in `stdlib/*.flx` and \
         the built-ins' descriptions; do not edit by hand (`FLUXC_BLESS=1 cargo test --release -p \
         fluxc-tests --test std_names` rewrites it). Every name is in scope in every file (the \
         prelude) and can be imported from its module (`use std::layers::Dense`). LANGUAGE.md §7 \
         lists them; parameter names and layouts are PyTorch's (§12.10).\n",
    );
    let mut modules: Vec<&str> = STD_MODULES.to_vec();
    modules.push("train");
    for module in modules {
        let here: Vec<&Entry> = all.iter().filter(|e| e.module == module).collect();
        s.push_str(&format!("\n## {}\n\n", title(module)));
        let names: Vec<String> =
            here.iter().map(|e| format!("[`{}`](#{})", e.name, anchor(module, &e.name))).collect();
        s.push_str(&names.join(" · "));
        s.push('\n');
        for e in here {
            s.push_str(&format!(
                "\n### <a id=\"{}\"></a>`{}` ({})\n\n```\n{}\n```\n\n{}\n",
                anchor(module, &e.name),
                e.name,
                e.kind,
                e.signature,
                e.doc
            ));
        }
    }
    s
}

fn anchor(module: &str, name: &str) -> String {
    format!("{module}-{}", name.to_lowercase())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn heads_stop_at_the_body() {
        assert_eq!(head("fn f[N](x: f32[N]) -> f32 {\n  x\n}"), "fn f[N](x: f32[N]) -> f32");
        assert_eq!(head("param w: f32[3, 4] = glorot_uniform()"), "param w: f32[3, 4] = glorot_uniform()");
    }

    #[test]
    fn entries_carry_signatures_and_docs() {
        let dense = lookup("Dense").unwrap();
        assert_eq!(dense.kind, "layer");
        assert!(dense.signature.starts_with("layer Dense[In, Out](act: Activation = identity)"));
        assert!(dense.signature.contains("param weight: f32[Out, In] = glorot_uniform()"));
        assert!(dense.doc.contains("Fully connected"));
        assert_eq!(lookup("Chain").map(|e| e.kind), Some("built in"));
        assert_eq!(lookup("cosine").map(|e| e.module), Some("train"));
        assert!(lookup("no_such_name").is_none());
    }
}
