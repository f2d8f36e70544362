//! fluxc-cpu: KIR to native code with Cranelift.
//!
//! Every fused loop kernel (`Kernel::Loop`) becomes one native function
//! `fn(ptrs: *const *mut f32, batch: i64)`: `ptrs[0]` is the output buffer and `ptrs[1..]` the
//! inputs; the loop runs over the output's elements in f32x4 lanes, each input read through its
//! broadcast. The schedule around the loops is encoded as a plan (`plan.rs`) that
//! `fluxc_kernels` interprets, calling the loops and its native kernels (GEMM, convolution,
//! pooling, …). The JIT compiles the loops into this process; `fluxc build` (`library.rs`)
//! compiles them into an object file and links it with the plans and the kernels into a shared
//! library. Every generated function passes Cranelift's verifier before it is used.

mod codegen;
pub mod library;
pub mod plan;

use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::Linkage;
use fluxc_core::interp::{Array, Run, concrete};
use fluxc_core::kir::{Kernel, Kir, Storage, linear_in_b};
use fluxc_kernels::plan::{Env, LoopFn, Plan};

/// Why compiling or running failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuError(pub String);

impl std::fmt::Display for CpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A KIR program with its loop kernels compiled and its plan encoded.
pub struct Compiled {
    /// Keeps the generated code alive.
    _module: JITModule,
    loops: Vec<LoopFn>,
    plan: Vec<i64>,
    /// `(fixed, per_row)` elements each input and parameter must hold.
    input_sizes: Vec<(i64, i64)>,
    param_sizes: Vec<(i64, i64)>,
}

/// Compiles every loop kernel of `kir` (verified by Cranelift's verifier) into this process.
pub fn compile(kir: &Kir) -> Result<Compiled, CpuError> {
    let bindings = plan::Bindings::direct(kir);
    let (plan, loop_kernels) = plan::encode(kir, &bindings)?;
    let isa = codegen::host_isa()?;
    let mut builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    codegen::register_math(&mut builder);
    let mut module = JITModule::new(builder);
    let mut ids = Vec::new();
    for &k in &loop_kernels {
        if let Some(kern) = kir.kernels.get(k) {
            ids.push(codegen::define_loop(
                &mut module,
                k,
                &format!("kernel{k}"),
                Linkage::Local,
                kern,
                None,
            )?);
        }
    }
    module.finalize_definitions().map_err(|e| CpuError(format!("linking the kernels: {e}")))?;
    let loops = ids.into_iter().map(|id| codegen::loop_fn(module.get_finalized_function(id))).collect();
    let mut input_sizes = vec![(0, 0); bindings.inputs.len()];
    let mut param_sizes = vec![(0, 0); bindings.param_offsets.len()];
    for b in &kir.buffers {
        let size = linear_in_b(&b.elements).map_err(|e| CpuError(e.0))?;
        let slot = match b.storage {
            Storage::Input(k) => input_sizes.get_mut(k),
            Storage::Param(k) => param_sizes.get_mut(k),
            Storage::Slot(_) => None,
        };
        if let Some(s) = slot {
            *s = (s.0.max(size.0), s.1.max(size.1));
        }
    }
    Ok(Compiled { _module: module, loops, plan, input_sizes, param_sizes })
}

/// The Cranelift IR of every loop kernel of `kir` for this machine, as generated
/// (`fluxc build --emit clif`).
pub fn clif_text(kir: &Kir) -> Result<String, CpuError> {
    let isa = codegen::host_isa()?;
    let mut builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    codegen::register_math(&mut builder);
    let mut module = JITModule::new(builder);
    let mut text = String::new();
    for (k, kern) in kir.kernels.iter().enumerate() {
        if matches!(kern, Kernel::Loop { .. }) {
            codegen::define_loop(
                &mut module,
                k,
                &format!("kernel{k}"),
                Linkage::Local,
                kern,
                Some(&mut text),
            )?;
        }
    }
    Ok(text)
}

/// Runs a compiled KIR program (inputs and parameters rounded to f32); returns the outputs by
/// name as f64 arrays.
pub fn execute(
    c: &Compiled,
    kir: &Kir,
    inputs: &[Array],
    params: &[Array],
    run: &Run,
) -> Result<Vec<(String, Array)>, CpuError> {
    let to_f32 = |a: &Array| a.data.iter().map(|v| *v as f32).collect::<Vec<f32>>();
    let mut state = State { params: params.iter().map(to_f32).collect(), ..State::default() };
    let ins: Vec<Vec<f32>> = inputs.iter().map(to_f32).collect();
    let views: Vec<&[f32]> = ins.iter().map(Vec::as_slice).collect();
    let outs = step(c, kir, &mut state, &views, run)?;
    let mut result = Vec::new();
    for ((name, _, t), data) in kir.outputs.iter().zip(outs) {
        let s = concrete(&t.shape, run.batch).map_err(|e| CpuError(e.0))?;
        result.push((name.clone(), Array::new(s, data.iter().map(|v| f64::from(*v)).collect())));
    }
    Ok(result)
}

/// What persists between steps: the parameters (f32), the scratch memory and the outputs.
#[derive(Default)]
pub struct State {
    pub params: Vec<Vec<f32>>,
    pub scratch: Vec<f32>,
    /// The last step's outputs, in the order of `Kir::outputs`.
    pub outputs: Vec<Vec<f32>>,
}

/// One run of a compiled program on f32 inputs; returns each output's values, read in place
/// (in the state's scratch or parameters; an output that is one of the inputs is copied).
pub fn step<'s>(
    c: &Compiled,
    kir: &Kir,
    state: &'s mut State,
    inputs: &[&[f32]],
    run: &Run,
) -> Result<Vec<&'s [f32]>, CpuError> {
    let b = run.batch;
    if b < 1 {
        return Err(CpuError(format!("invalid batch {b}")));
    }
    let fail = |e: fluxc_kernels::plan::PlanError| CpuError(e.0);
    let plan = Plan::parse(&c.plan).map_err(fail)?;
    let size = |(f, r): (i64, i64)| usize::try_from(f + r * b).unwrap_or(usize::MAX);
    for (k, want) in c.input_sizes.iter().enumerate() {
        let have = inputs.get(k).map_or(0, |x| x.len());
        if have < size(*want) {
            return Err(CpuError(format!(
                "input {k} holds {have} values, the program reads {}",
                size(*want)
            )));
        }
    }
    for (k, want) in c.param_sizes.iter().enumerate() {
        let have = state.params.get(k).map_or(0, Vec::len);
        if have < size(*want) {
            return Err(CpuError(format!(
                "parameter {k} holds {have} values, the program reads {}",
                size(*want)
            )));
        }
    }
    let need = plan.scratch_len(b).map_err(fail)?;
    if state.scratch.len() < need {
        state.scratch.resize(need, 0.0);
    }
    let ins: Vec<*const f32> = inputs.iter().map(|x| x.as_ptr()).collect();
    let params: Vec<*mut f32> = state.params.iter_mut().map(|p| p.as_mut_ptr()).collect();
    let env = Env {
        batch: b,
        seed: run.seed,
        step: run.step,
        inputs: &ins,
        params: &params,
        scratch: state.scratch.as_mut_ptr(),
        loops: &c.loops,
    };
    // SAFETY: every input and parameter was checked above to hold what the plan reads at this
    // batch, scratch holds `scratch_len` elements, the loops are the ones this plan was encoded
    // with, and nothing else touches these buffers during the run.
    #[allow(unsafe_code)]
    unsafe { plan.run(&env) }.map_err(fail)?;
    // Outputs are read where the run left them; one that is an input is copied into the state
    // first, since the caller's inputs do not live as long as the state.
    let places = plan.outputs(&env).map_err(fail)?;
    state.outputs.resize(kir.outputs.len(), Vec::new());
    let mut result = Vec::with_capacity(places.len());
    for (k, (p, n)) in places.into_iter().enumerate() {
        let from_input = plan.output_storage(k).map_err(fail)? == fluxc_kernels::plan::storage::INPUT;
        let p = match (from_input, state.outputs.get_mut(k)) {
            (true, Some(dst)) => {
                // SAFETY: an input the caller gave, of `n` elements (checked above).
                #[allow(unsafe_code)]
                let data = unsafe { std::slice::from_raw_parts(p, n) };
                dst.clear();
                dst.extend_from_slice(data);
                dst.as_ptr()
            }
            _ => p,
        };
        // SAFETY: `p` points to `n` elements of the state's scratch, parameters or outputs,
        // which stay untouched while the returned slices borrow the state.
        #[allow(unsafe_code)]
        result.push(unsafe { std::slice::from_raw_parts(p, n) });
    }
    Ok(result)
}
