//! `fluxc train` (§3.7, §8, §11.1–§11.2, §12.7–§12.8) and `fluxc infer` (§11.5) on the JIT:
//! data loaded through the validating loaders, the compiled train step run batch by batch,
//! validation after each epoch, the closed callback set, `train.jsonl`, the final weights and
//! optimizer state, and a picture of the run (`train.svg`).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fluxc_core::interp::{Run, concrete};
use fluxc_core::ir::{DType, Graph};
use fluxc_core::lower::setup::{Callback, DataSpec, SourceKind};
use fluxc_core::pipeline::TrainSetup;
use fluxc_runtime::data::{self, Dataset, Transform};
use fluxc_runtime::weights::{self, Slot};

/// A graph compiled by the JIT with its run-time state.
pub struct Jit {
    kir: fluxc_core::kir::Kir,
    compiled: fluxc_cpu::Compiled,
    pub state: fluxc_cpu::State,
}

impl Jit {
    pub fn new(g: &Graph) -> Result<Jit, String> {
        let kir = fluxc_core::kir::schedule(g).map_err(|e| format!("scheduling: {e}"))?;
        let compiled = fluxc_cpu::compile(&kir).map_err(|e| format!("compiling: {e}"))?;
        Ok(Jit { kir, compiled, state: fluxc_cpu::State::default() })
    }

    pub fn run(&mut self, inputs: &[&[f32]], run: &Run) -> Result<Vec<&[f32]>, String> {
        fluxc_cpu::step(&self.compiled, &self.kir, &mut self.state, inputs, run).map_err(|e| e.0)
    }
}

/// The model's parameter block as the initialiser lays it out (manifest order).
pub fn slots(init: &Graph) -> Result<Vec<Slot>, String> {
    init.outputs
        .iter()
        .map(|(name, v)| {
            let t = init.ty(*v).ok_or("an initialiser output without a type")?;
            Ok(Slot { name: name.clone(), shape: concrete(&t.shape, 1).map_err(|e| e.0)? })
        })
        .collect()
}

/// Fresh parameters from the initialisers for `seed` (§12.11), by name.
pub fn initial_params(init: &Graph, seed: u64) -> Result<HashMap<String, Vec<f32>>, String> {
    let mut jit = Jit::new(init)?;
    let outs = jit.run(&[], &Run { batch: 1, seed, step: 0 })?;
    Ok(init.outputs.iter().zip(outs).map(|((n, _), v)| (n.clone(), v.to_vec())).collect())
}

/// The values of `g`'s parameters, in its order, from `by_name`.
fn params_for(g: &Graph, by_name: &HashMap<String, Vec<f32>>) -> Result<Vec<Vec<f32>>, String> {
    g.params
        .iter()
        .map(|p| by_name.get(&p.name).cloned().ok_or_else(|| format!("no value for parameter `{}`", p.name)))
        .collect()
}

/// Loads a declared data source (paths relative to `dir`), with its rows selected.
pub fn load_source(spec: &DataSpec, dir: &Path) -> Result<Dataset, String> {
    let t = Transform {
        classes: spec.classes,
        scale: spec.scale,
        shape: spec.shape.clone(),
        target_shape: spec.target_shape.clone(),
    };
    let at = |p: &str| dir.join(p);
    let named = |p: &str, e: String| format!("{}: {e}", at(p).display());
    let d = match &spec.kind {
        SourceKind::Idx { images, labels } => {
            let x = fluxc_runtime::idx::read(&at(images)).map_err(|e| named(images, e))?;
            let y = fluxc_runtime::idx::read(&at(labels)).map_err(|e| named(labels, e))?;
            data::from_tensors(&x, &y, &t)
                .map_err(|e| format!("data `{}` ({images}, {labels}): {e}", spec.name))?
        }
        SourceKind::Csv { path, label } => {
            let c = fluxc_runtime::csv::read(&at(path), label.as_deref()).map_err(|e| named(path, e))?;
            data::from_csv(&c, &t).map_err(|e| named(path, e))?
        }
        SourceKind::Npy { x, y } => {
            let xs = fluxc_runtime::npy::read(&at(x)).map_err(|e| named(x, e))?;
            let ys = fluxc_runtime::npy::read(&at(y)).map_err(|e| named(y, e))?;
            data::from_tensors(&xs, &ys, &t).map_err(|e| format!("data `{}` ({x}, {y}): {e}", spec.name))?
        }
        SourceKind::Safetensors { path, x, y } => {
            let f = fluxc_runtime::safetensors::read(&at(path)).map_err(|e| named(path, e))?;
            let xs = f.get(x).ok_or_else(|| named(path, format!("no tensor \"{x}\"")))?;
            let ys = f.get(y).ok_or_else(|| named(path, format!("no tensor \"{y}\"")))?;
            data::from_tensors(xs, ys, &t).map_err(|e| named(path, e))?
        }
    };
    // Which rows: a split's fraction, or what the splits of this source leave.
    let rows: Vec<usize> = match spec.take {
        Some((f, seed)) => data::split_rows(d.rows, f, seed),
        None => {
            let mut taken = vec![false; d.rows];
            for (f, seed) in &spec.minus {
                for r in data::split_rows(d.rows, *f, *seed) {
                    if let Some(t) = taken.get_mut(r) {
                        *t = true;
                    }
                }
            }
            (0..d.rows).filter(|r| !taken.get(*r).copied().unwrap_or(false)).collect()
        }
    };
    if rows.is_empty() {
        return Err(format!("data `{}` has no rows", spec.name));
    }
    Ok(if rows.len() == d.rows { d } else { d.select(&rows) })
}

/// Checks that rows fit a graph input `name` (`[B, …]` with dtype).
fn fits(d: &Dataset, g: &Graph, name: &str, what: &str, source: &str) -> Result<(), String> {
    let slot =
        g.inputs.iter().find(|s| s.name == name).ok_or_else(|| format!("the graph has no input `{name}`"))?;
    let shape = concrete(&slot.ty.shape, 1).map_err(|e| e.0)?;
    let per_row = shape.get(1..).unwrap_or_default();
    let have = if name == "x" { &d.x_shape } else { &d.y_shape };
    if per_row != have.as_slice() {
        return Err(format!(
            "data `{source}`: each {what} row has shape {have:?}, but the model needs {per_row:?}"
        ));
    }
    if name == "x" && slot.ty.dtype == DType::I32 && !d.x_integer {
        return Err(format!("data `{source}`: the model's input is i32, but the inputs are not integers"));
    }
    Ok(())
}

/// One JSON line appended to `train.jsonl` (a complete line per write, §12.8).
struct Log {
    file: std::fs::File,
}

impl Log {
    fn event(&mut self, v: serde_json::Value) -> Result<(), String> {
        let mut line = v.to_string();
        line.push('\n');
        self.file.write_all(line.as_bytes()).map_err(|e| format!("writing train.jsonl: {e}"))?;
        self.file.flush().map_err(|e| format!("writing train.jsonl: {e}"))
    }
}

/// What one epoch measured.
struct Epoch {
    loss: f64,
    val_loss: Option<f64>,
    val_accuracy: Option<f64>,
    seconds: f64,
}

fn finite_or_null(v: Option<f64>) -> serde_json::Value {
    match v {
        Some(x) if x.is_finite() => serde_json::json!(x),
        _ => serde_json::Value::Null,
    }
}

/// Options of `fluxc train` beyond the file.
pub struct TrainOptions {
    /// The folder of the `.flx` file (data paths are relative to it).
    pub dir: PathBuf,
    pub out: PathBuf,
    pub init: Option<PathBuf>,
    pub epochs: Option<usize>,
    /// With `--trusted-keys`: the `--init` weights must be signed by one of these.
    pub trusted: Option<Vec<[u8; 32]>>,
    /// `--resume CHECKPOINT`: its weights, and its `.opt.safetensors` beside it.
    pub resume: Option<PathBuf>,
    /// Behave as if interrupted after this step (the tests' stand-in for Ctrl-C).
    pub interrupt_after: Option<u64>,
}

/// Where a run is, saved in every optimizer-state file so `--resume` continues bit for bit:
/// the steps taken, the epochs completed, the batches done of the next epoch with their loss
/// sum, and early_stop's state.
#[derive(Clone, Debug, Default, PartialEq)]
struct Progress {
    step: u64,
    epochs_done: u64,
    batches_done: u64,
    sum: f64,
    count: u64,
    best: Option<f64>,
    waited: u64,
    /// early_stop ended the run.
    stopped: bool,
}

impl Progress {
    fn metadata(&self) -> Vec<(String, String)> {
        let mut m = vec![
            ("fluxc.step".to_owned(), self.step.to_string()),
            ("fluxc.epoch".to_owned(), self.epochs_done.to_string()),
            ("fluxc.resume.batches".to_owned(), self.batches_done.to_string()),
            ("fluxc.resume.loss_sum".to_owned(), format!("{:?}", self.sum)),
            ("fluxc.resume.loss_count".to_owned(), self.count.to_string()),
            ("fluxc.early_stop.waited".to_owned(), self.waited.to_string()),
            ("fluxc.early_stop.stopped".to_owned(), self.stopped.to_string()),
        ];
        if let Some(b) = self.best {
            m.push(("fluxc.early_stop.best".to_owned(), format!("{b:?}")));
        }
        m
    }

    fn from_metadata(l: &weights::Loaded) -> Result<Progress, String> {
        fn num<T: std::str::FromStr>(l: &weights::Loaded, k: &str) -> Result<T, String> {
            l.meta(k)
                .ok_or_else(|| format!("the optimizer state has no `{k}`"))?
                .parse()
                .map_err(|_| format!("`{k}` is not a number"))
        }
        Ok(Progress {
            step: num(l, "fluxc.step")?,
            epochs_done: num(l, "fluxc.epoch")?,
            batches_done: num(l, "fluxc.resume.batches")?,
            sum: num(l, "fluxc.resume.loss_sum")?,
            count: num(l, "fluxc.resume.loss_count")?,
            best: l
                .meta("fluxc.early_stop.best")
                .map(str::parse)
                .transpose()
                .map_err(|_| "`fluxc.early_stop.best` is not a number")?,
            waited: num(l, "fluxc.early_stop.waited")?,
            stopped: num(l, "fluxc.early_stop.stopped")?,
        })
    }
}

/// Set by Ctrl-C: the loop saves a checkpoint and stops after the step in flight.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keeps the lines of `train.jsonl` up to `p` (a resumed run appends from there, §12.8) and
/// returns the epochs they record.
fn rewind_log(path: &Path, p: &Progress) -> Result<Vec<Epoch>, String> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(Vec::new()) };
    let mut kept = String::new();
    let mut history = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let field = |k: &str| v.get(k);
        let step = field("step").and_then(serde_json::Value::as_u64);
        let epoch = field("epoch").and_then(serde_json::Value::as_u64);
        let event = field("event").and_then(serde_json::Value::as_str);
        let keep = match event {
            Some("step" | "checkpoint") => step.is_some_and(|s| s <= p.step),
            Some("epoch") => epoch.is_some_and(|e| e <= p.epochs_done),
            Some("anomaly") => true,
            _ => false,
        };
        if keep {
            let num = |k: &str| field(k).and_then(serde_json::Value::as_f64);
            if event == Some("epoch") {
                history.push(Epoch {
                    loss: num("loss").unwrap_or(f64::NAN),
                    val_loss: num("val_loss"),
                    val_accuracy: num("val_accuracy"),
                    seconds: num("seconds").unwrap_or(0.0),
                });
            }
            kept.push_str(line);
            kept.push('\n');
        }
    }
    fluxc_runtime::npy::write_atomically(path, kept.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(history)
}

/// Runs training; `Ok(code)` is the exit code (0 done, 130 interrupted).
pub fn train(setup: &TrainSetup, opts: &TrainOptions) -> Result<u8, String> {
    let cfg = &setup.config;
    let started = Instant::now();
    let data = load_source(&cfg.data, &opts.dir)?;
    let valid = cfg.validation.as_ref().map(|v| load_source(v, &opts.dir)).transpose()?;
    for (d, name) in std::iter::once((&data, &cfg.data.name))
        .chain(valid.iter().zip(cfg.validation.iter().map(|v| &v.name)))
    {
        fits(d, &setup.train, "x", "input", name)?;
        fits(d, &setup.train, "target", "target", name)?;
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| format!("{}: {e}", opts.out.display()))?;
    let slots = slots(&setup.init)?;
    // Optimizer state: one buffer per `opt.*` input, zero-filled ("before step 1").
    let mut opt: Vec<(String, Vec<f32>, Vec<usize>)> = Vec::new();
    for s in setup.train.inputs.iter().skip(4) {
        let shape = concrete(&s.ty.shape, 1).map_err(|e| e.0)?;
        let n = shape.iter().product();
        opt.push((s.name.trim_start_matches("opt.").to_owned(), vec![0.0; n], shape));
    }
    let opt_slots: Vec<Slot> =
        opt.iter().map(|(n, _, s)| Slot { name: n.clone(), shape: s.clone() }).collect();
    let mut progress = Progress::default();
    let mut history: Vec<Epoch> = Vec::new();
    let mut params = match (&opts.resume, &opts.init) {
        (Some(path), _) => {
            let l =
                weights::load(path, &cfg.model, &slots).map_err(|e| format!("{}: {e}", path.display()))?;
            let op = opt_path(path);
            let o =
                weights::load(&op, &cfg.model, &opt_slots).map_err(|e| format!("{}: {e}", op.display()))?;
            progress = Progress::from_metadata(&o).map_err(|e| format!("{}: {e}", op.display()))?;
            for (slot, v) in opt.iter_mut().zip(o.values) {
                slot.1 = v;
            }
            history = rewind_log(&opts.out.join("train.jsonl"), &progress)?;
            println!("resuming after step {} (epoch {} complete)", progress.step, progress.epochs_done);
            slots.iter().map(|s| s.name.clone()).zip(l.values).collect()
        }
        (None, Some(path)) => {
            let l = match &opts.trusted {
                Some(keys) => weights::load_trusted(path, &cfg.model, &slots, keys),
                None => weights::load(path, &cfg.model, &slots),
            }
            .map_err(|e| format!("{}: {e}", path.display()))?;
            slots.iter().map(|s| s.name.clone()).zip(l.values).collect()
        }
        (None, None) => initial_params(&setup.init, cfg.seed)?,
    };

    let mut step_jit = Jit::new(&setup.train)?;
    let mut eval_jit = Jit::new(&setup.eval)?;
    step_jit.state.params = params_for(&setup.train, &params)?;
    let param_index: HashMap<&str, usize> =
        setup.train.params.iter().enumerate().map(|(k, p)| (p.name.as_str(), k)).collect();
    let opt_index: HashMap<String, usize> = opt.iter().enumerate().map(|(k, o)| (o.0.clone(), k)).collect();
    let outputs: Vec<String> = setup.train.outputs.iter().map(|(n, _)| n.clone()).collect();
    let at = |name: &str| outputs.iter().position(|n| n == name);
    let (loss_at, lr_at, norm_at) = (at("loss"), at("lr"), at("grad_norm"));

    let mut log = Log {
        file: std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(opts.out.join("train.jsonl"))
            .map_err(|e| format!("{}: {e}", opts.out.join("train.jsonl").display()))?,
    };
    // Ctrl-C: finish the step in flight, save a checkpoint, exit 130 (§12.8). A second handler
    // (a second run in one process) keeps the first.
    let _ = ctrlc::set_handler(|| INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst));
    let log_every =
        cfg.callbacks.iter().find_map(|c| if let Callback::Log { every } = c { Some(*every) } else { None });
    let nan_guard = cfg.callbacks.contains(&Callback::NanGuard);
    let epochs = opts.epochs.unwrap_or(cfg.epochs) as u64;
    let batch = cfg.batch.max(1);
    let (xl, yl) = (data.x_len(), data.y_len());
    let mut xb: Vec<f32> = Vec::with_capacity(batch * xl);
    let mut yb: Vec<f32> = Vec::with_capacity(batch * yl);
    let final_path = opts.out.join(format!("{}.safetensors", cfg.model));
    println!(
        "training {} on {} ({} rows{}), {} epochs of batches of {batch}",
        cfg.model,
        cfg.data.name,
        data.rows,
        valid.as_ref().map(|v| format!(", validation {} rows", v.rows)).unwrap_or_default(),
        epochs
    );
    // The anomaly screen of the training rows, logged once at the start of a run (§11.1).
    if opts.resume.is_none() {
        let found = fluxc_runtime::inspect::screen(
            &data.x,
            data.rows,
            data.x_len(),
            data.class.as_deref().filter(|_| data.labels_per_row() == 1),
        );
        for a in found {
            println!("warning: data `{}`: {}", cfg.data.name, a.detail);
            log.event(
                serde_json::json!({"event": "anomaly", "kind": a.kind, "count": a.count, "detail": a.detail}),
            )?;
        }
    }
    let mut last_loss = f64::NAN;
    while progress.epochs_done < epochs && !progress.stopped {
        let epoch = progress.epochs_done + 1;
        let t0 = Instant::now();
        let order: Vec<usize> = if cfg.shuffle {
            data::permutation(data.rows, cfg.seed, 1, epoch)
        } else {
            (0..data.rows).collect()
        };
        // A progress bar on a terminal (plain epoch lines otherwise).
        let bar = std::io::IsTerminal::is_terminal(&std::io::stdout()).then(|| {
            let b = indicatif::ProgressBar::new(order.len().div_ceil(batch) as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} batches {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix(format!("{epoch}/{epochs}"));
            b.set_position(progress.batches_done);
            b
        });
        for rows in order.chunks(batch).skip(progress.batches_done as usize) {
            let step = progress.step + 1;
            xb.clear();
            yb.clear();
            for &r in rows {
                xb.extend_from_slice(data.x.get(r * xl..(r + 1) * xl).unwrap_or_default());
                yb.extend_from_slice(data.y.get(r * yl..(r + 1) * yl).unwrap_or_default());
            }
            let (sv, ev) = ([step as f32], [epoch as f32]);
            let mut inputs: Vec<&[f32]> = vec![&xb, &yb, &sv, &ev];
            inputs.extend(opt.iter().map(|o| o.1.as_slice()));
            let run = Run { batch: rows.len() as i64, seed: cfg.seed, step };
            let outs = step_jit.run(&inputs, &run)?;
            let scalar = |k: Option<usize>| {
                k.and_then(|k| outs.get(k)).and_then(|v| v.first()).map_or(f64::NAN, |v| f64::from(*v))
            };
            let (loss, lr, norm) = (scalar(loss_at), scalar(lr_at), scalar(norm_at));
            if nan_guard && (!loss.is_finite() || (norm_at.is_some() && !norm.is_finite())) {
                let where_ = if loss.is_finite() { "gradient" } else { "loss" };
                log.event(
                    serde_json::json!({"event": "nan", "epoch": epoch, "step": step, "where": where_}),
                )?;
                save_weights(&final_path, cfg, &slots, &params, &[])?;
                return Err(format!(
                    "nan_guard: the {where_} became NaN or infinite at epoch {epoch}, step {step}; the last good weights are in {}",
                    final_path.display()
                ));
            }
            // Apply the update.
            let outs: Vec<Vec<f32>> = outs.iter().map(|v| v.to_vec()).collect();
            for (name, v) in outputs.iter().zip(outs) {
                if let Some(p) = name.strip_prefix("param:").or_else(|| name.strip_prefix("state:")) {
                    if let Some(&k) = param_index.get(p)
                        && let Some(slot) = step_jit.state.params.get_mut(k)
                    {
                        slot.clone_from(&v);
                    }
                    params.insert(p.to_owned(), v);
                } else if let Some(k) = name.strip_prefix("opt:").and_then(|k| opt_index.get(k))
                    && let Some(o) = opt.get_mut(*k)
                {
                    o.1 = v;
                }
            }
            progress.step = step;
            progress.batches_done += 1;
            if let Some(b) = &bar {
                b.inc(1);
                b.set_message(format!("loss {loss:.4}"));
            }
            progress.sum += loss;
            progress.count += 1;
            last_loss = loss;
            if let Some(every) = log_every
                && step.is_multiple_of(every)
            {
                log.event(serde_json::json!({"event": "step", "step": step, "epoch": epoch, "loss": loss, "lr": finite_or_null(Some(lr)), "grad_norm": finite_or_null(Some(norm))}))?;
            }
            if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) || opts.interrupt_after == Some(step) {
                save_checkpoint(&final_path, cfg, &slots, &params, &opt_slots, &opt, &progress)?;
                log.event(serde_json::json!({"event": "checkpoint", "epoch": epoch, "step": step, "path": final_path.file_name().map(|n| n.to_string_lossy().into_owned())}))?;
                eprintln!(
                    "interrupted at epoch {epoch}, step {step}: the checkpoint is {}; continue with --resume {}",
                    final_path.display(),
                    final_path.display()
                );
                return Ok(130);
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let loss = progress.sum / progress.count.max(1) as f64;
        let (val_loss, val_accuracy) = match &valid {
            Some(v) => {
                eval_jit.state.params = params_for(&setup.eval, &params)?;
                let (l, a) = evaluate(&mut eval_jit, &setup.eval, v, batch.max(256))?;
                (Some(l), a)
            }
            None => (None, None),
        };
        let e = Epoch { loss, val_loss, val_accuracy, seconds: t0.elapsed().as_secs_f64() };
        log.event(serde_json::json!({"event": "epoch", "epoch": epoch, "loss": finite_or_null(Some(e.loss)), "val_loss": finite_or_null(e.val_loss), "val_accuracy": finite_or_null(e.val_accuracy), "seconds": e.seconds}))?;
        println!(
            "epoch {epoch}/{epochs}: loss {:.4}{}{} ({:.2} s)",
            e.loss,
            e.val_loss.map(|v| format!(", val_loss {v:.4}")).unwrap_or_default(),
            e.val_accuracy.map(|v| format!(", val_accuracy {v:.4}")).unwrap_or_default(),
            e.seconds
        );
        progress.epochs_done = epoch;
        progress.batches_done = 0;
        progress.sum = 0.0;
        progress.count = 0;
        // early_stop's state first, so checkpoints carry it; then the checkpoints; then the stop.
        let mut stop = None;
        for c in &cfg.callbacks {
            if let Callback::EarlyStop { patience, monitor } = c {
                let (value, maximise, name) = match monitor.as_str() {
                    "val_accuracy" if e.val_accuracy.is_some() => (e.val_accuracy, true, "val_accuracy"),
                    "val_loss" if e.val_loss.is_some() => (e.val_loss, false, "val_loss"),
                    _ => (Some(e.loss), false, "loss"),
                };
                let Some(v) = value else { continue };
                let better = progress.best.is_none_or(|b| if maximise { v > b } else { v < b });
                if better {
                    progress.best = Some(v);
                    progress.waited = 0;
                } else {
                    progress.waited += 1;
                    if progress.waited >= *patience {
                        stop = Some((name, *patience));
                        progress.stopped = true;
                    }
                }
            }
        }
        history.push(e);
        for c in &cfg.callbacks {
            if let Callback::Checkpoint { path, every } = c
                && (epoch.is_multiple_of(*every) || epoch == epochs || stop.is_some())
            {
                save_checkpoint(&opts.out.join(path), cfg, &slots, &params, &opt_slots, &opt, &progress)?;
                log.event(serde_json::json!({"event": "checkpoint", "epoch": epoch, "step": progress.step, "path": path}))?;
            }
        }
        if let Some((name, patience)) = stop {
            log.event(serde_json::json!({"event": "early_stop", "epoch": epoch, "monitor": name, "best": progress.best}))?;
            println!("early stop after epoch {epoch}: {name} has not improved for {patience} epochs");
        }
    }
    save_checkpoint(&final_path, cfg, &slots, &params, &opt_slots, &opt, &progress)?;
    let seconds = started.elapsed().as_secs_f64();
    log.event(serde_json::json!({"event": "done", "epochs": progress.epochs_done, "steps": progress.step, "seconds": seconds, "loss": finite_or_null(Some(last_loss))}))?;
    write_plot(&opts.out.join("train.svg"), &cfg.model, &history)?;
    println!("wrote {} ({} steps, {seconds:.1} s)", final_path.display(), progress.step);
    Ok(0)
}

/// The weights at `path` and the optimizer state with the run's progress beside them.
fn save_checkpoint(
    path: &Path,
    cfg: &fluxc_core::lower::setup::TrainConfig,
    slots: &[Slot],
    params: &HashMap<String, Vec<f32>>,
    opt_slots: &[Slot],
    opt: &[(String, Vec<f32>, Vec<usize>)],
    progress: &Progress,
) -> Result<(), String> {
    save_weights(path, cfg, slots, params, &[("fluxc.epoch".into(), progress.epochs_done.to_string())])?;
    let op = opt_path(path);
    let values: Vec<&[f32]> = opt.iter().map(|o| o.1.as_slice()).collect();
    weights::save(&op, &cfg.model, opt_slots, &values, &progress.metadata())
        .map_err(|e| format!("{}: {e}", op.display()))
}

/// `NAME.safetensors` → `NAME.opt.safetensors` (§11.2).
fn opt_path(weights: &Path) -> PathBuf {
    let name = weights.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(".safetensors").unwrap_or(&name);
    weights.with_file_name(format!("{stem}.opt.safetensors"))
}

fn save_weights(
    path: &Path,
    cfg: &fluxc_core::lower::setup::TrainConfig,
    slots: &[Slot],
    params: &HashMap<String, Vec<f32>>,
    extra: &[(String, String)],
) -> Result<(), String> {
    let values: Vec<&[f32]> =
        slots.iter().map(|s| params.get(&s.name).map_or(&[][..], Vec::as_slice)).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    weights::save(path, &cfg.model, slots, &values, extra).map_err(|e| format!("{}: {e}", path.display()))
}

/// Mean loss (weighted by batch size) and accuracy (when the rows have classes) of `d`.
pub fn evaluate(jit: &mut Jit, g: &Graph, d: &Dataset, batch: usize) -> Result<(f64, Option<f64>), String> {
    let (xl, yl) = (d.x_len(), d.y_len());
    let y_at = g.outputs.iter().position(|(n, _)| n == "y");
    let labels = d.labels_per_row();
    let (mut loss, mut correct) = (0.0f64, 0usize);
    let mut r0 = 0;
    while r0 < d.rows {
        let r1 = (r0 + batch).min(d.rows);
        let n = r1 - r0;
        let x = d.x.get(r0 * xl..r1 * xl).unwrap_or_default();
        let y = d.y.get(r0 * yl..r1 * yl).unwrap_or_default();
        let outs = jit.run(&[x, y], &Run { batch: n as i64, seed: 0, step: 0 })?;
        loss += outs.first().and_then(|v| v.first()).map_or(f64::NAN, |v| f64::from(*v)) * n as f64;
        if let (Some(classes), Some(out)) = (&d.class, y_at.and_then(|k| outs.get(k))) {
            correct += correct_predictions(out, classes.get(r0 * labels..r1 * labels).unwrap_or_default());
        }
        r0 = r1;
    }
    let accuracy = d.class.as_ref().map(|_| correct as f64 / (d.rows * labels).max(1) as f64);
    Ok((loss / d.rows.max(1) as f64, accuracy))
}

/// The `accuracy` metric's count (Flux's `onecold(ŷ) .== onecold(y)`): `scores` holds one row
/// of class scores (the output's last axis) per label in `classes`; a row is correct when its
/// first maximal score is at the label's class.
pub fn correct_predictions(scores: &[f32], classes: &[u32]) -> usize {
    let per = scores.len() / classes.len().max(1);
    scores
        .chunks(per.max(1))
        .zip(classes)
        .filter(|(row, class)| {
            let arg = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |b, (j, v)| if *v > b.1 { (j, *v) } else { b })
                .0;
            **class as usize == arg
        })
        .count()
}

/// `train.svg`: the loss (and validation loss) per epoch on the left axis, the validation
/// accuracy on the right, drawn directly (no fonts needed beyond the viewer's default).
fn write_plot(path: &Path, model: &str, history: &[Epoch]) -> Result<(), String> {
    let (w, h, pad) = (640.0f64, 360.0f64, 48.0f64);
    let n = history.len().max(2) as f64 - 1.0;
    let losses: Vec<f64> =
        history.iter().flat_map(|e| [Some(e.loss), e.val_loss]).flatten().filter(|v| v.is_finite()).collect();
    let top = losses.iter().copied().fold(f64::MIN, f64::max).max(1e-12);
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / n;
    let y = |v: f64, max: f64| h - pad - (h - 2.0 * pad) * (v / max).clamp(0.0, 1.0);
    let line = |vals: Vec<Option<f64>>, max: f64, colour: &str| -> String {
        let pts: Vec<String> = vals
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.filter(|v| v.is_finite()).map(|v| format!("{:.1},{:.1}", x(i), y(v, max))))
            .collect();
        if pts.is_empty() {
            return String::new();
        }
        format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            pts.join(" ")
        )
    };
    let font = "font-family=\"sans-serif\" font-size=\"12\"";
    let (bottom, right) = (h - pad, w - pad);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{pad}\" y=\"20\" font-family=\"sans-serif\" font-size=\"14\">{model}, per epoch</text>\n\
         <text x=\"{pad}\" y=\"38\" {font} fill=\"#1f77b4\">loss</text>\n\
         <text x=\"{}\" y=\"38\" {font} fill=\"#ff7f0e\">validation loss</text>\n\
         <text x=\"{}\" y=\"38\" {font} fill=\"#2ca02c\">validation accuracy (right axis)</text>\n\
         <line x1=\"{pad}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"black\"/>\n\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{bottom}\" stroke=\"black\"/>\n\
         <line x1=\"{right}\" y1=\"{pad}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"#2ca02c\"/>\n\
         <text x=\"4\" y=\"{}\" {font}>{top:.3}</text>\n<text x=\"4\" y=\"{bottom}\" {font}>0</text>\n\
         <text x=\"{}\" y=\"{}\" {font} fill=\"#2ca02c\">1</text>\n<text x=\"{}\" y=\"{bottom}\" {font} fill=\"#2ca02c\">0</text>\n\
         <text x=\"{pad}\" y=\"{}\" {font}>epoch 1</text>\n<text x=\"{}\" y=\"{}\" {font} text-anchor=\"end\">epoch {}</text>\n",
        pad + 40.0,
        pad + 150.0,
        pad + 4.0,
        right + 6.0,
        pad + 4.0,
        right + 6.0,
        bottom + 18.0,
        right,
        bottom + 18.0,
        history.len()
    );
    svg.push_str(&line(history.iter().map(|e| Some(e.loss)).collect(), top, "#1f77b4"));
    svg.push_str(&line(history.iter().map(|e| e.val_loss).collect(), top, "#ff7f0e"));
    svg.push_str(&line(history.iter().map(|e| e.val_accuracy).collect(), 1.0, "#2ca02c"));
    svg.push_str("</svg>\n");
    fluxc_runtime::npy::write_atomically(path, svg.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

/// `fluxc infer`: the model's forward on the rows of an `.npy` array, with checked weights.
pub fn infer(
    m: &fluxc_core::pipeline::ModelGraphs,
    weights_path: &Path,
    input: &Path,
) -> Result<fluxc_runtime::Tensor, String> {
    let slots = slots(&m.init)?;
    let loaded = weights::load(weights_path, &m.name, &slots)
        .map_err(|e| format!("{}: {e}", weights_path.display()))?;
    let params: HashMap<String, Vec<f32>> = slots.iter().map(|s| s.name.clone()).zip(loaded.values).collect();
    let x = fluxc_runtime::npy::read(input).map_err(|e| format!("{}: {e}", input.display()))?;
    x.check_finite().map_err(|e| format!("{}: {e}", input.display()))?;
    let slot = m.forward.inputs.first().ok_or("the model has no input")?;
    let want = concrete(&slot.ty.shape, 1).map_err(|e| e.0)?;
    let rows = x.shape.first().copied().unwrap_or(0);
    if x.shape.get(1..) != want.get(1..) || rows == 0 {
        return Err(format!(
            "{}: the input has shape {:?}; the model `{}` takes rows of shape {:?} ([N, {}])",
            input.display(),
            x.shape,
            m.name,
            want.get(1..).unwrap_or_default(),
            want.get(1..).unwrap_or_default().iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ));
    }
    if slot.ty.dtype == DType::I32 && x.values.iter().any(|v| v.fract() != 0.0) {
        return Err(format!("{}: the model's input is i32, but the array holds fractions", input.display()));
    }
    let mut jit = Jit::new(&m.forward)?;
    jit.state.params = params_for(&m.forward, &params)?;
    let xs: Vec<f32> = x.values.iter().map(|v| *v as f32).collect();
    let outs = jit.run(&[&xs], &Run { batch: rows as i64, seed: 0, step: 0 })?;
    let y = outs.first().ok_or("the model has no output")?;
    let out_ty =
        m.forward.outputs.first().and_then(|(_, v)| m.forward.ty(*v)).ok_or("the model has no output")?;
    let shape = concrete(&out_ty.shape, rows as i64).map_err(|e| e.0)?;
    Ok(fluxc_runtime::Tensor {
        dtype: fluxc_runtime::Dtype::F32,
        shape,
        values: y.iter().map(|v| f64::from(*v)).collect(),
    })
}

/// `fluxc eval`: the loss and accuracy of checked weights on a declared data source.
pub fn eval(
    setup: &fluxc_core::pipeline::EvalSetup,
    model: &str,
    weights_path: &Path,
    dir: &Path,
) -> Result<(f64, Option<f64>), String> {
    let slots = slots(&setup.init)?;
    let loaded =
        weights::load(weights_path, model, &slots).map_err(|e| format!("{}: {e}", weights_path.display()))?;
    let params: HashMap<String, Vec<f32>> = slots.iter().map(|s| s.name.clone()).zip(loaded.values).collect();
    let d = load_source(&setup.data, dir)?;
    fits(&d, &setup.eval, "x", "input", &setup.data.name)?;
    fits(&d, &setup.eval, "target", "target", &setup.data.name)?;
    let mut jit = Jit::new(&setup.eval)?;
    jit.state.params = params_for(&setup.eval, &params)?;
    evaluate(&mut jit, &setup.eval, &d, 256)
}

/// A PyTorch state-dict name as fluxc names the same tensor (§12.9, §12.10): `Sequential`
/// indices are the same, a recurrent layer's `weight_ih_l0` is its cell's `cell.weight_ih`,
/// everything else keeps its name. `None` for what fluxc has no place for (multi-layer and
/// bidirectional recurrent weights).
fn fluxc_name(torch: &str) -> Option<String> {
    let (prefix, last) = match torch.rsplit_once('.') {
        Some((p, l)) => (format!("{p}."), l),
        None => (String::new(), torch),
    };
    for kind in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] {
        if let Some(rest) = last.strip_prefix(kind).and_then(|r| r.strip_prefix("_l")) {
            return (rest == "0").then(|| format!("{prefix}cell.{kind}"));
        }
    }
    Some(torch.to_owned())
}

/// `fluxc convert --from pytorch`: maps the tensors of a PyTorch state dict to the model's
/// parameter names, checks every shape, and writes a fluxc weights file (with the fluxc
/// metadata). Anything it cannot map is reported and nothing is written.
pub fn convert_pytorch(
    m: &fluxc_core::pipeline::ModelGraphs,
    input: &Path,
    out: &Path,
) -> Result<String, String> {
    let slots = slots(&m.init)?;
    let file = fluxc_runtime::safetensors::read(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let mut values: HashMap<String, Vec<f32>> = HashMap::new();
    let mut problems = Vec::new();
    let mut dropped = Vec::new();
    for (name, t) in &file.tensors {
        if name.ends_with("num_batches_tracked") {
            dropped.push(name.clone());
            continue;
        }
        let Some(target) = fluxc_name(name) else {
            problems.push(format!(
                "`{name}` has no fluxc counterpart (only single-layer, one-direction recurrent layers map)"
            ));
            continue;
        };
        match slots.iter().find(|s| s.name == target) {
            None => {
                problems.push(format!("`{name}` maps to `{target}`, which model `{}` does not have", m.name))
            }
            Some(s) if s.shape != t.shape => {
                problems.push(format!("`{name}` has shape {:?}, `{target}` needs {:?}", t.shape, s.shape))
            }
            Some(_) if !t.dtype.is_float() => {
                problems.push(format!("`{name}` is {}, not a float tensor", t.dtype.safetensors_name()))
            }
            Some(_) => {
                if let Err(e) = t.check_finite() {
                    problems.push(format!("`{name}`: {e}"));
                }
                values.insert(target, t.values.iter().map(|v| *v as f32).collect());
            }
        }
    }
    for s in &slots {
        if !values.contains_key(&s.name) && !problems.iter().any(|p| p.contains(&format!("`{}`", s.name))) {
            problems.push(format!("nothing in the state dict maps to `{}` {:?}", s.name, s.shape));
        }
    }
    if !problems.is_empty() {
        return Err(format!(
            "{}: cannot convert to model `{}`: {}",
            input.display(),
            m.name,
            problems.join("; ")
        ));
    }
    let ordered: Vec<&[f32]> =
        slots.iter().map(|s| values.get(&s.name).map_or(&[][..], Vec::as_slice)).collect();
    weights::save(out, &m.name, &slots, &ordered, &[("fluxc.converted_from".into(), "pytorch".into())])
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let mut said = format!("wrote {} ({} tensors for model {})\n", out.display(), slots.len(), m.name);
    if !dropped.is_empty() {
        said.push_str(&format!("dropped {}\n", dropped.join(", ")));
    }
    Ok(said)
}
