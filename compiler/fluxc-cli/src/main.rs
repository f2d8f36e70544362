//! The `fluxc` command. Exit codes (LANGUAGE.md §12.15): 0 success, 1 any user error (usage
//! errors included), 130 interrupted.

use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use fluxc_cli::loader::DiskLoader;
use fluxc_cli::script_io::ScriptIo;
use fluxc_core::pipeline::Outcome;
use fluxc_core::{TextStyle, render_json, render_text};
use fluxc_syntax::limits::MAX_SOURCE_BYTES;
use fluxc_syntax::{Code, Diagnostic, FileId, SourceMap, Span};

#[derive(Parser)]
#[command(
    name = "fluxc",
    version,
    about = "Compile, check and run .flx models",
    disable_help_subcommand = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a file: syntax, names, types, shapes and effects
    Check {
        file: PathBuf,
        /// Output format for diagnostics
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Compile each model to a native library (libNAME.so), its C header and its manifest
    Build {
        file: PathBuf,
        /// Model to build (default: every model in the file)
        #[arg(long)]
        model: Option<String>,
        /// Output folder (default: build/ beside the file)
        #[arg(long)]
        out: Option<PathBuf>,
        /// Target device
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
        /// Print an intermediate stage instead of building
        #[arg(long, value_enum)]
        emit: Option<Emit>,
    },
    /// Train a model on its data (a file's train block), on the JIT
    Train {
        file: PathBuf,
        /// The train block: MODEL, or MODEL:K for the K-th block of MODEL (default: the only one)
        #[arg(long = "train")]
        train: Option<String>,
        /// Start from these weights instead of the initialisers
        #[arg(long)]
        init: Option<PathBuf>,
        /// Continue from a checkpoint (its weights and the .opt.safetensors beside them)
        #[arg(long)]
        resume: Option<PathBuf>,
        /// Output folder (default: out/ beside the file)
        #[arg(long)]
        out: Option<PathBuf>,
        /// Target device
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
        /// Train for this many epochs instead of the block's
        #[arg(long)]
        epochs: Option<usize>,
        /// Accept --init weights only with a signature by one of these keys
        #[arg(long)]
        trusted_keys: Option<PathBuf>,
        /// Threads kernels may use (default: every core; FLUXC_NUM_THREADS does the same)
        #[arg(long)]
        threads: Option<i64>,
    },
    /// Run a model on an input array (.npy), on the JIT
    Infer {
        file: PathBuf,
        #[arg(long)]
        model: String,
        #[arg(long)]
        weights: PathBuf,
        #[arg(long)]
        input: PathBuf,
        /// Write the result here (.npy) instead of printing it
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
        #[arg(long)]
        threads: Option<i64>,
    },
    /// The loss and accuracy of trained weights on a declared data source, on the JIT
    Eval {
        file: PathBuf,
        #[arg(long)]
        model: String,
        #[arg(long)]
        weights: PathBuf,
        /// A data source declared in the file
        #[arg(long)]
        data: String,
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
        #[arg(long)]
        threads: Option<i64>,
    },
    /// Summarise a weights or data file through the validating loaders, or reject it
    Inspect {
        file: PathBuf,
        /// safetensors, idx, npy or csv (default: from the extension)
        #[arg(long)]
        format: Option<String>,
        /// Reject NaN and infinite values instead of counting them
        #[arg(long)]
        check_finite: bool,
        /// Labels must lie in 0..N
        #[arg(long)]
        num_classes: Option<usize>,
        /// The label column of a CSV file (default: the last)
        #[arg(long)]
        label_column: Option<String>,
        /// An IDX labels file paired with the IDX images file
        #[arg(long)]
        labels: Option<PathBuf>,
        /// Read the file as labels (a rank-1 IDX file is read so anyway)
        #[arg(long)]
        as_labels: bool,
        /// Check a weights file against the `tensors` map of a build manifest
        #[arg(long)]
        expect_manifest: Option<PathBuf>,
    },
    /// Convert a PyTorch state dict (safetensors) to a fluxc weights file for a model
    Convert {
        /// The state dict, as safetensors
        input: PathBuf,
        /// The .flx file that declares the model
        file: PathBuf,
        /// Where the weights come from (`pytorch`)
        #[arg(long = "from")]
        from: String,
        #[arg(long)]
        model: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Make an ed25519 key pair: KEY (secret, mode 0600) and KEY.pub (hex)
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a weights file in place with a secret key from `keygen`
    Sign {
        weights: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a weights file's digest and its signature by one of the trusted keys
    Verify {
        weights: PathBuf,
        #[arg(long)]
        trusted_keys: PathBuf,
    },
    /// Run a file's top-level statements (a script) on the reference interpreter
    Run { file: PathBuf },
    /// Each layer's path, kind, output shape and parameter count, and the totals
    Summary {
        file: PathBuf,
        /// Model to summarise (default: every model in the file)
        #[arg(long)]
        model: Option<String>,
    },
    /// Explain a diagnostic code, e.g. `fluxc explain E0301`
    Explain { code: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Device {
    Cpu,
    Gpu,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Emit {
    Ast,
    Ir,
    OptIr,
    Kir,
    Clif,
}

/// A user error outside any source file: one clear line, exit 1.
struct UserError(String);

fn main() -> ExitCode {
    install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("{}", usage_error_line(&e));
            return ExitCode::from(1);
        }
    };
    let result = match cli.command {
        Command::Check { file, format } => check(&file, format),
        Command::Build { file, emit, model, out, device } => {
            build(&file, emit, model.as_deref(), out, device)
        }
        Command::Train { file, train, init, resume, out, device, epochs, trusted_keys, threads } => {
            train_cmd(&file, train.as_deref(), init, resume, out, device, epochs, trusted_keys, threads)
        }
        Command::Infer { file, model, weights, input, output, device, threads } => {
            infer_cmd(&file, &model, &weights, &input, output.as_deref(), device, threads)
        }
        Command::Eval { file, model, weights, data, device, threads } => {
            eval_cmd(&file, &model, &weights, &data, device, threads)
        }
        Command::Inspect {
            file,
            format,
            check_finite,
            num_classes,
            label_column,
            labels,
            as_labels,
            expect_manifest,
        } => {
            let opts = fluxc_cli::inspect::Options {
                format,
                check_finite,
                num_classes,
                label_column,
                labels,
                as_labels,
                expect_manifest,
            };
            match fluxc_cli::inspect::inspect(&file, &opts) {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => Err(UserError(e)),
            }
        }
        Command::Convert { input, file, from, model, out } => convert(&input, &file, &from, &model, &out),
        Command::Keygen { out } => keygen(&out),
        Command::Sign { weights, key } => sign(&weights, &key),
        Command::Verify { weights, trusted_keys } => verify(&weights, &trusted_keys),
        Command::Run { file } => run(&file),
        Command::Summary { file, model } => summary(&file, model.as_deref()),
        Command::Explain { code } => explain(&code),
    };
    match result {
        Ok(code) => code,
        Err(UserError(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

/// A usage error as one line: clap's first line (with the missing arguments or the possible
/// values when those follow), then where to look.
fn usage_error_line(e: &clap::Error) -> String {
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let commands: Vec<String> = <Cli as clap::CommandFactory>::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        return format!(
            "error: no command given; the commands are {} (see `fluxc --help`)",
            commands.join(", ")
        );
    }
    let rendered = e.render().to_string();
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut line = lines.next().unwrap_or("error: invalid arguments").to_owned();
    let details: Vec<&str> = lines
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more") && !l.starts_with("tip:"))
        .collect();
    if !details.is_empty() {
        line = format!("{} {}", line.trim_end_matches(':'), details.join(", "));
    }
    format!("{line} (see `fluxc --help`)")
}

/// Internal errors become a request for a bug report, never a bare backtrace.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let args: Vec<String> = std::env::args().skip(1).collect();
        eprintln!("error: internal compiler error: {info}");
        eprintln!("note: this is a bug in fluxc {}, not in your program.", env!("CARGO_PKG_VERSION"));
        eprintln!("note: please report it with the input file and this command: fluxc {}", args.join(" "));
    }));
    if std::env::var_os("FLUXC_TEST_INTERNAL_ERROR").is_some() {
        // Lets the test suite prove the hook works.
        panic!("deliberate internal error (FLUXC_TEST_INTERNAL_ERROR is set)");
    }
}

/// Reads a source file for the compiler: bounded, UTF-8, one clear error otherwise. A file over
/// the size limit is reported as E0102 through the normal diagnostic path.
fn read_source(path: &Path) -> Result<Result<String, Diagnostic>, UserError> {
    let shown = path.display();
    let file = std::fs::File::open(path)
        .map_err(|e| UserError(format!("cannot read {shown}: {}", io_reason(&e))))?;
    let meta = file.metadata().map_err(|e| UserError(format!("cannot read {shown}: {}", io_reason(&e))))?;
    if meta.is_dir() {
        return Err(UserError(format!("cannot read {shown}: it is a directory, not a .flx file")));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SOURCE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| UserError(format!("cannot read {shown}: {}", io_reason(&e))))?;
    if bytes.len() > MAX_SOURCE_BYTES {
        let size = meta.len().max(bytes.len() as u64);
        let d = Diagnostic::error(
            Code::E0102,
            Span::new(FileId(0), 0, 0),
            format!("source file is {size} bytes; the limit is {MAX_SOURCE_BYTES} bytes (4 MiB)"),
        )
        .with_primary_label("this file is too large");
        return Ok(Err(d));
    }
    String::from_utf8(bytes).map(Ok).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        UserError(format!("cannot read {shown}: it is not valid UTF-8 (bad byte at offset {at})"))
    })
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            // Drop the "(os error N)" suffix: the words are what a user needs.
            let text = e.to_string();
            text.split(" (os error").next().unwrap_or(&text).to_owned()
        }
    }
}

/// Loads `path` into a fresh source map, or reports why it cannot be compiled.
fn load(path: &Path, format: Format) -> Result<Result<(SourceMap, FileId), ExitCode>, UserError> {
    let name = path.display().to_string();
    let mut sources = SourceMap::new();
    match read_source(path)? {
        Ok(text) => {
            let id = sources.add(name, text);
            Ok(Ok((sources, id)))
        }
        Err(too_large) => {
            sources.add(name, String::new());
            report(&[too_large], &sources, format);
            Ok(Err(ExitCode::from(1)))
        }
    }
}

fn report(diagnostics: &[Diagnostic], sources: &SourceMap, format: Format) {
    match format {
        Format::Json => {
            for d in diagnostics {
                println!("{}", render_json(d, sources));
            }
        }
        Format::Text => {
            let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            eprint!("{}", render_text(diagnostics, sources, TextStyle { color }));
            let n = diagnostics.len();
            if n > 0 {
                eprintln!("error: could not compile: {n} error{}", if n == 1 { "" } else { "s" });
            }
        }
    }
}

fn check(path: &Path, format: Format) -> Result<ExitCode, UserError> {
    let (mut sources, id) = match load(path, format)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let mut loader = DiskLoader::new(Path::new(""), path, None);
    let checked = fluxc_core::check(&mut sources, id, &mut loader);
    report(&checked.diagnostics, &sources, format);
    Ok(if checked.diagnostics.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn build(
    path: &Path,
    emit: Option<Emit>,
    model: Option<&str>,
    out: Option<PathBuf>,
    device: Device,
) -> Result<ExitCode, UserError> {
    if emit.is_none() && matches!(device, Device::Gpu) {
        return Err(UserError(
            "this fluxc builds for `--device cpu` only so far; the GPU back end is not built yet".into(),
        ));
    }
    let (mut sources, id) = match load(path, Format::Text)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let mut loader = DiskLoader::new(Path::new(""), path, None);
    match emit {
        Some(Emit::Ir) => {
            let outcome = fluxc_core::pipeline::emit_ir(&mut sources, id, &mut loader, model);
            return Ok(finish(outcome, &sources, |text| print!("{text}")));
        }
        Some(Emit::Kir) => {
            let outcome = fluxc_core::pipeline::emit_kir(&mut sources, id, &mut loader, model);
            return Ok(finish(outcome, &sources, |text| print!("{text}")));
        }
        Some(Emit::OptIr) => {
            let outcome = fluxc_core::pipeline::emit_opt_ir(&mut sources, id, &mut loader, model);
            return Ok(finish(outcome, &sources, |text| print!("{text}")));
        }
        Some(Emit::Clif) => {
            let graphs = match fluxc_core::pipeline::model_graphs(&mut sources, id, &mut loader, model) {
                Outcome::Done(g) => g,
                other => return Ok(finish(other, &sources, |_| {})),
            };
            for m in &graphs {
                let parts = [("forward (inference)", Some(&m.forward)), ("train step", m.train.as_ref())];
                for (what, g) in parts {
                    let Some(g) = g else { continue };
                    let text = fluxc_core::kir::schedule(g)
                        .map_err(|e| e.0)
                        .and_then(|kir| fluxc_cpu::clif_text(&kir).map_err(|e| e.0))
                        .map_err(|e| UserError(format!("{}: model {}: {e}", path.display(), m.name)))?;
                    println!("# model {}: {what}\n{text}", m.name);
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        Some(_) => {
            let checked = fluxc_core::check(&mut sources, id, &mut loader);
            if !checked.diagnostics.is_empty() {
                report(&checked.diagnostics, &sources, Format::Text);
                return Ok(ExitCode::from(1));
            }
            if let (Some(ast), Some(source)) = (&checked.ast, sources.get(id)) {
                print!("{}", fluxc_syntax::print::print_file(ast, source));
            }
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    // The default output folder is build/ beside the file (§11.3).
    let out_dir = out.unwrap_or_else(|| path.parent().unwrap_or(Path::new("")).join("build"));
    let source_name =
        path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let outcome = fluxc_core::pipeline::model_graphs(&mut sources, id, &mut loader, model);
    let graphs = match outcome {
        Outcome::Done(g) => g,
        other => return Ok(finish(other, &sources, |_| {})),
    };
    for m in &graphs {
        let built = fluxc_cpu::library::build(m, &source_name, &out_dir)
            .map_err(|e| UserError(format!("{}: building model {}: {e}", path.display(), m.name)))?;
        let (ff, fr) = built.forward_scratch;
        println!(
            "built {} ({}, {})",
            built.library.display(),
            built.header.display(),
            built.manifest.display()
        );
        println!(
            "  model {}: {} parameters ({} bytes); scratch per call at most {ff} + {fr}*B bytes (forward)",
            m.name,
            fluxc_core::lower::group(built.parameters),
            fluxc_core::lower::group(built.param_bytes)
        );
        if let Some((tf, tr)) = built.train_scratch {
            println!("  train_step: scratch at most {tf} + {tr}*B bytes");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The folder of a `.flx` file (data paths are relative to it): `.` for a bare file name.
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The thread cap: `--threads`, else `FLUXC_NUM_THREADS`, else every core.
fn set_threads(threads: Option<i64>) -> Result<(), UserError> {
    let n =
        match threads {
            Some(n) => Some(n),
            None => match std::env::var("FLUXC_NUM_THREADS") {
                Ok(v) if !v.trim().is_empty() => Some(v.trim().parse::<i64>().map_err(|_| {
                    UserError(format!("FLUXC_NUM_THREADS must be a whole number, not \"{v}\""))
                })?),
                _ => None,
            },
        };
    if let Some(n) = n {
        if n < 1 {
            return Err(UserError(format!("the thread count must be at least 1, not {n}")));
        }
        fluxc_kernels::threads::set(n);
    }
    Ok(())
}

fn cpu_only(device: Device) -> Result<(), UserError> {
    match device {
        Device::Cpu => Ok(()),
        Device::Gpu => Err(UserError(
            "this fluxc runs on `--device cpu` only so far; the GPU back end is not built yet".into(),
        )),
    }
}

/// `fluxc train FILE [--train MODEL] …` (§3.7, §9).
#[allow(clippy::too_many_arguments)]
fn train_cmd(
    path: &Path,
    train: Option<&str>,
    init: Option<PathBuf>,
    resume: Option<PathBuf>,
    out: Option<PathBuf>,
    device: Device,
    epochs: Option<usize>,
    trusted_keys: Option<PathBuf>,
    threads: Option<i64>,
) -> Result<ExitCode, UserError> {
    cpu_only(device)?;
    if resume.is_some() && init.is_some() {
        return Err(UserError("--resume continues a run; it cannot be combined with --init".into()));
    }
    if trusted_keys.is_some() && init.is_none() {
        return Err(UserError("--trusted-keys checks the --init weights; give --init too".into()));
    }
    if epochs == Some(0) {
        return Err(UserError("--epochs must be at least 1".into()));
    }
    set_threads(threads)?;
    let (mut sources, id) = match load(path, Format::Text)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let mut loader = DiskLoader::new(Path::new(""), path, out.as_deref());
    let setup = match fluxc_core::pipeline::train_setup(&mut sources, id, &mut loader, train) {
        Outcome::Done(s) => s,
        other => return Ok(finish(other, &sources, |_| {})),
    };
    let dir = folder_of(path);
    let trusted = match &trusted_keys {
        Some(p) => Some(
            fluxc_runtime::weights::trusted_keys(p)
                .map_err(|e| UserError(format!("{}: {e}", p.display())))?,
        ),
        None => None,
    };
    // The tests' stand-in for Ctrl-C after a given step.
    let interrupt_after = std::env::var("FLUXC_TEST_INTERRUPT_AFTER_STEP").ok().and_then(|v| v.parse().ok());
    let opts = fluxc_cli::train::TrainOptions {
        out: out.unwrap_or_else(|| dir.join("out")),
        dir,
        init,
        epochs,
        trusted,
        resume,
        interrupt_after,
    };
    match fluxc_cli::train::train(&setup, &opts) {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(e) => Err(UserError(format!("{}: {e}", path.display()))),
    }
}

/// `fluxc infer FILE --model NAME --weights W --input X.npy [--output Y.npy]` (§9, §11.5).
fn infer_cmd(
    path: &Path,
    model: &str,
    weights_path: &Path,
    input: &Path,
    output: Option<&Path>,
    device: Device,
    threads: Option<i64>,
) -> Result<ExitCode, UserError> {
    cpu_only(device)?;
    set_threads(threads)?;
    let m = match model_graphs_of(path, model)? {
        Ok(m) => m,
        Err(code) => return Ok(code),
    };
    let result = fluxc_cli::train::infer(&m, weights_path, input).map_err(UserError)?;
    match output {
        Some(o) => {
            fluxc_runtime::npy::write(o, &result).map_err(|e| UserError(format!("{}: {e}", o.display())))?
        }
        None => {
            let per = result.shape.get(1..).unwrap_or_default().iter().product::<usize>().max(1);
            let mut text = String::new();
            for row in result.values.chunks(per) {
                let vals: Vec<String> = row.iter().map(|v| format!("{}", *v as f32)).collect();
                text.push_str(&vals.join(" "));
                text.push('\n');
            }
            print!("{text}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `fluxc eval FILE --model NAME --weights W --data SOURCE` (§12.14).
fn eval_cmd(
    path: &Path,
    model: &str,
    weights_path: &Path,
    source: &str,
    device: Device,
    threads: Option<i64>,
) -> Result<ExitCode, UserError> {
    cpu_only(device)?;
    set_threads(threads)?;
    let (mut sources, id) = match load(path, Format::Text)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let mut loader = DiskLoader::new(Path::new(""), path, None);
    let setup = match fluxc_core::pipeline::eval_setup(&mut sources, id, &mut loader, model, source) {
        Outcome::Done(s) => s,
        other => return Ok(finish(other, &sources, |_| {})),
    };
    let dir = folder_of(path);
    let (loss, accuracy) = fluxc_cli::train::eval(&setup, model, weights_path, &dir)
        .map_err(|e| UserError(format!("{}: {e}", path.display())))?;
    println!("loss {loss:.6}");
    if let Some(a) = accuracy {
        println!("accuracy {a:.6}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The graphs of model `model` of the file at `path`, or the exit code once the reason they
/// cannot be had is reported.
fn model_graphs_of(
    path: &Path,
    model: &str,
) -> Result<Result<fluxc_core::pipeline::ModelGraphs, ExitCode>, UserError> {
    let (mut sources, id) = match load(path, Format::Text)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(Err(code)),
    };
    let mut loader = DiskLoader::new(Path::new(""), path, None);
    match fluxc_core::pipeline::model_graphs(&mut sources, id, &mut loader, Some(model)) {
        Outcome::Done(g) => match g.into_iter().next() {
            Some(m) => Ok(Ok(m)),
            None => Err(UserError(format!("there is no model `{model}`"))),
        },
        other => Ok(Err(finish(other, &sources, |_| {}))),
    }
}

/// `fluxc convert --from pytorch IN.safetensors FILE.flx --model NAME --out OUT.safetensors`
/// (§12.9).
fn convert(input: &Path, path: &Path, from: &str, model: &str, out: &Path) -> Result<ExitCode, UserError> {
    if from != "pytorch" {
        return Err(UserError(format!("`--from {from}`: only `--from pytorch` is known")));
    }
    let m = match model_graphs_of(path, model)? {
        Ok(m) => m,
        Err(code) => return Ok(code),
    };
    let said = fluxc_cli::train::convert_pytorch(&m, input, out).map_err(UserError)?;
    print!("{said}");
    Ok(ExitCode::SUCCESS)
}

/// `fluxc keygen --out KEY` (§11.4).
fn keygen(out: &Path) -> Result<ExitCode, UserError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let public_path = PathBuf::from(format!("{}.pub", out.display()));
    for p in [out, public_path.as_path()] {
        if p.exists() {
            return Err(UserError(format!("{} already exists; keygen does not overwrite keys", p.display())));
        }
    }
    let (secret, public) = fluxc_runtime::weights::keygen().map_err(UserError)?;
    let write = |p: &Path, text: &str, mode: u32| -> Result<(), UserError> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(p)
            .map_err(|e| UserError(format!("{}: {e}", p.display())))?;
        f.write_all(format!("{text}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| UserError(format!("{}: {e}", p.display())))
    };
    write(out, &secret, 0o600)?;
    write(&public_path, &public, 0o644)?;
    println!(
        "wrote the secret key {} and the public key {} ({public})",
        out.display(),
        public_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `fluxc sign WEIGHTS --key KEY` (§11.4).
fn sign(weights: &Path, key: &Path) -> Result<ExitCode, UserError> {
    let secret = std::fs::read_to_string(key).map_err(|e| UserError(format!("{}: {e}", key.display())))?;
    let public = fluxc_runtime::weights::sign(weights, &secret)
        .map_err(|e| UserError(format!("{}: {e}", weights.display())))?;
    println!("signed {} with key {public}", weights.display());
    Ok(ExitCode::SUCCESS)
}

/// `fluxc verify WEIGHTS --trusted-keys FILE` (§9).
fn verify(weights: &Path, trusted: &Path) -> Result<ExitCode, UserError> {
    let keys = fluxc_runtime::weights::trusted_keys(trusted)
        .map_err(|e| UserError(format!("{}: {e}", trusted.display())))?;
    let key = fluxc_runtime::weights::verify(weights, &keys)
        .map_err(|e| UserError(format!("{}: {e}", weights.display())))?;
    println!("{}: the digest matches and it is signed by trusted key {key}", weights.display());
    Ok(ExitCode::SUCCESS)
}

/// `fluxc run FILE`: check, then run the top-level statements; a run-time error is one line
/// naming the file, the line and the problem.
fn run(path: &Path) -> Result<ExitCode, UserError> {
    let (mut sources, id) = match load(path, Format::Text)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let mut loader = DiskLoader::new(Path::new(""), path, None);
    let mut io = ScriptIo::new(path);
    let outcome = fluxc_core::pipeline::run(&mut sources, id, &mut loader, &mut io);
    Ok(finish(outcome, &sources, |()| {}))
}

/// Reports a later stage's outcome: diagnostics if the program was rejected, one located line
/// if it failed, else `done` with the result.
fn finish<T>(outcome: Outcome<T>, sources: &SourceMap, done: impl FnOnce(T)) -> ExitCode {
    match outcome {
        Outcome::Done(v) => {
            done(v);
            ExitCode::SUCCESS
        }
        Outcome::Rejected(diagnostics) => {
            report(&diagnostics, sources, Format::Text);
            ExitCode::from(1)
        }
        Outcome::Failed(e) => {
            eprintln!("error: {}", located(&e, sources));
            ExitCode::from(1)
        }
    }
}

/// `fluxc summary FILE [--model NAME]` (§12.15).
fn summary(path: &Path, model: Option<&str>) -> Result<ExitCode, UserError> {
    let (mut sources, id) = match load(path, Format::Text)? {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let mut loader = DiskLoader::new(Path::new(""), path, None);
    let outcome = fluxc_core::pipeline::summary(&mut sources, id, &mut loader, model);
    Ok(finish(outcome, &sources, |text| print!("{text}")))
}

/// `file:line:column: message` (or the message alone when it has no place).
fn located(e: &fluxc_core::lower::LowerError, sources: &SourceMap) -> String {
    match e.span.and_then(|s| sources.get(s.file).map(|f| (f, s))) {
        Some((f, s)) => {
            let at = f.line_col(s.start as usize);
            let line = f.text.lines().nth(at.line.saturating_sub(1)).unwrap_or("").trim();
            format!("{}:{}:{}: {}\n  {} | {line}", f.name, at.line, at.column, e.message, at.line)
        }
        // No place in the source: the file the command was given (the first one loaded).
        None => match sources.files().next() {
            Some((_, f)) => format!("{}: {}", f.name, e.message),
            None => e.message.clone(),
        },
    }
}

fn explain(code: &str) -> Result<ExitCode, UserError> {
    let Some(code) = Code::parse(code) else {
        let known: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        return Err(UserError(format!(
            "unknown diagnostic code `{code}`; the codes are {}",
            known.join(", ")
        )));
    };
    print!("{}", code.explanation());
    Ok(ExitCode::SUCCESS)
}
