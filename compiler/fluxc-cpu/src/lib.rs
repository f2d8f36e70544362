//! fluxc-cpu: KIR to native code with Cranelift.
//!
//! Today every fused loop kernel (`Kernel::Loop`) is compiled to one native function
//! `fn(ptrs: *const *mut f32, batch: i64)`: `ptrs[0]` is the output buffer and `ptrs[1..]` the
//! inputs; the loop runs over the output's elements, each input read through its broadcast
//! (contiguous, scalar or general strided), every value an f32. Whole-buffer ops
//! (`Kernel::Call`) still run on the reference kernels; native GEMM, convolution and the rest,
//! SIMD, and object files for `fluxc build` come next (see the CPU-backend issue).
//! Every generated function passes Cranelift's verifier before it is used.

mod codegen;
mod kernels;

use std::collections::HashMap;

use cranelift_jit::{JITBuilder, JITModule};
use fluxc_core::interp::{Array, Run, concrete};
use fluxc_core::kir::{Kernel, Kir, Storage, run_call};

/// Why compiling or running failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuError(pub String);

impl std::fmt::Display for CpuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A KIR program with its loop kernels compiled.
pub struct Compiled {
    /// Keeps the generated code alive.
    _module: JITModule,
    /// Per kernel index: the entry of its native loop.
    loops: HashMap<usize, codegen::LoopFn>,
}

/// Compiles every loop kernel of `kir` (verified by Cranelift's verifier).
pub fn compile(kir: &Kir) -> Result<Compiled, CpuError> {
    let isa = codegen::host_isa()?;
    let mut builder = JITBuilder::with_isa(isa, cranelift_module::default_libcall_names());
    codegen::register_math(&mut builder);
    let mut module = JITModule::new(builder);
    let mut ids = Vec::new();
    for (k, kern) in kir.kernels.iter().enumerate() {
        if let Kernel::Loop { shape, inputs, body, dtype, .. } = kern {
            let id = codegen::define_loop(&mut module, k, shape, inputs, body, *dtype)?;
            ids.push((k, id));
        }
    }
    module.finalize_definitions().map_err(|e| CpuError(format!("linking the kernels: {e}")))?;
    let loops =
        ids.into_iter().map(|(k, id)| (k, codegen::LoopFn(module.get_finalized_function(id)))).collect();
    Ok(Compiled { _module: module, loops })
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

/// What persists between steps: the parameters (f32) and the scratch slots, grown to the
/// largest batch seen.
#[derive(Default)]
pub struct State {
    pub params: Vec<Vec<f32>>,
    pub slots: Vec<Vec<f32>>,
    /// The last step's outputs, in the order of `Kir::outputs`.
    pub outputs: Vec<Vec<f32>>,
}

/// One run of a compiled program on f32 inputs; returns each output's values.
pub fn step<'s>(
    c: &Compiled,
    kir: &Kir,
    state: &'s mut State,
    inputs: &[&[f32]],
    run: &Run,
) -> Result<&'s [Vec<f32>], CpuError> {
    let b = run.batch;
    if b < 1 {
        return Err(CpuError(format!("invalid batch {b}")));
    }
    let size = |(f, r): (i64, i64)| usize::try_from(f + r * b).unwrap_or(0);
    if state.slots.len() != kir.slots.len() {
        state.slots = vec![Vec::new(); kir.slots.len()];
    }
    for (slot, want) in state.slots.iter_mut().zip(&kir.slots) {
        let n = size(*want);
        if slot.len() < n {
            slot.resize(n, 0.0);
        }
    }
    let slots = &mut state.slots;
    let ext_inputs = inputs;
    let ext_params = &mut state.params;
    let state_out = &mut state.outputs;
    for (k, kern) in kir.kernels.iter().enumerate() {
        match kern {
            Kernel::Loop { out, shape, inputs: ins, .. } => {
                let n: usize = concrete(shape, b).map_err(|e| CpuError(e.0))?.iter().product();
                let f = c.loops.get(&k).ok_or_else(|| CpuError(format!("kernel {k} was not compiled")))?;
                // Check every buffer against the sizes the kernel will use, then run it.
                let mut sizes = vec![n];
                for (buf, s) in ins {
                    let want: usize = concrete(s, b).map_err(|e| CpuError(e.0))?.iter().product();
                    let have = buffer_len(kir, *buf, slots, ext_inputs, ext_params)?;
                    if have < want {
                        return Err(CpuError(format!(
                            "buffer b{} holds {have} values, the kernel reads {want}",
                            buf.0
                        )));
                    }
                    sizes.push(want);
                }
                let have = buffer_len(kir, *out, slots, ext_inputs, ext_params)?;
                if have < n {
                    return Err(CpuError(format!(
                        "buffer b{} holds {have} values, the kernel writes {n}",
                        out.0
                    )));
                }
                let mut ptrs: Vec<*mut f32> = Vec::with_capacity(ins.len() + 1);
                ptrs.push(buffer_ptr(kir, *out, slots, ext_inputs, ext_params)?);
                for (buf, _) in ins {
                    ptrs.push(buffer_ptr(kir, *buf, slots, ext_inputs, ext_params)?);
                }
                f.call(&ptrs, b);
            }
            Kernel::Gemm { a, b: bb, out, ty } => {
                let Some(Storage::Slot(o)) = kir.buffers.get(out.0 as usize).map(|x| x.storage.clone())
                else {
                    return Err(CpuError("a kernel writes an external buffer".into()));
                };
                let mut out_vec =
                    std::mem::take(slots.get_mut(o).ok_or_else(|| CpuError(format!("no slot {o}")))?);
                let mut sides = Vec::new();
                for (buf, t, trans) in [a, bb] {
                    let s = concrete(&t.shape, b).map_err(|e| CpuError(e.0))?;
                    let n: usize = s.iter().product();
                    let data = buffer_data(kir, *buf, slots, ext_inputs, ext_params)?;
                    let data =
                        data.get(..n).ok_or_else(|| CpuError(format!("buffer b{} too small", buf.0)))?;
                    sides.push((data, s, *trans));
                }
                let out_shape = concrete(&ty.shape, b).map_err(|e| CpuError(e.0))?;
                if let (Some(x), Some(y)) = (sides.first(), sides.get(1)) {
                    kernels::gemm_op(x, y, &mut out_vec, &out_shape)?;
                }
                if let Some(slot) = slots.get_mut(o) {
                    *slot = out_vec;
                }
            }
            Kernel::Call { op, args, out, ty } => {
                let Some(Storage::Slot(o)) = kir.buffers.get(out.0 as usize).map(|x| x.storage.clone())
                else {
                    return Err(CpuError("a kernel writes an external buffer".into()));
                };
                let out_shape = concrete(&ty.shape, b).map_err(|e| CpuError(e.0))?;
                // The output's slot is taken out while the operands are read (they never share it).
                let mut out_vec =
                    std::mem::take(slots.get_mut(o).ok_or_else(|| CpuError(format!("no slot {o}")))?);
                let mut operands = Vec::new();
                for (buf, t) in args {
                    let s = concrete(&t.shape, b).map_err(|e| CpuError(e.0))?;
                    let n: usize = s.iter().product();
                    let data = buffer_data(kir, *buf, slots, ext_inputs, ext_params)?;
                    let data =
                        data.get(..n).ok_or_else(|| CpuError(format!("buffer b{} too small", buf.0)))?;
                    operands.push((data, s));
                }
                let native = kernels::run(op, &operands, &mut out_vec, &out_shape, run)?;
                if !native {
                    let arrays = operands
                        .iter()
                        .map(|(d, s)| Array::new(s.clone(), d.iter().map(|v| f64::from(*v)).collect()))
                        .collect();
                    let v = run_call(op, args, arrays, ty, run).map_err(|e| CpuError(e.0))?;
                    for (dst, src) in out_vec.iter_mut().zip(&v.data) {
                        *dst = *src as f32;
                    }
                }
                if let Some(slot) = slots.get_mut(o) {
                    *slot = out_vec;
                }
            }
        }
    }
    // Outputs are copied into buffers kept in the state (no allocation after the first step).
    let mut outs = std::mem::take(state_out);
    outs.resize(kir.outputs.len(), Vec::new());
    for ((name, buf, t), dst) in kir.outputs.iter().zip(outs.iter_mut()) {
        let n: usize = concrete(&t.shape, b).map_err(|e| CpuError(e.0))?.iter().product();
        let data = buffer_data(kir, *buf, slots, ext_inputs, ext_params)?;
        let data = data.get(..n).ok_or_else(|| CpuError(format!("output {name} too small")))?;
        dst.clear();
        dst.extend_from_slice(data);
    }
    *state_out = outs;
    Ok(state_out)
}

fn buffer_data<'v>(
    kir: &Kir,
    buf: fluxc_core::kir::BufId,
    slots: &'v [Vec<f32>],
    inputs: &[&'v [f32]],
    params: &'v [Vec<f32>],
) -> Result<&'v [f32], CpuError> {
    let info = kir.buffers.get(buf.0 as usize).ok_or_else(|| CpuError("no buffer".into()))?;
    let v = match info.storage {
        Storage::Slot(s) => slots.get(s).map(Vec::as_slice),
        Storage::Input(k) => inputs.get(k).copied(),
        Storage::Param(k) => params.get(k).map(Vec::as_slice),
    };
    v.ok_or_else(|| CpuError(format!("buffer b{} is missing", buf.0)))
}

fn buffer_len(
    kir: &Kir,
    buf: fluxc_core::kir::BufId,
    slots: &[Vec<f32>],
    inputs: &[&[f32]],
    params: &[Vec<f32>],
) -> Result<usize, CpuError> {
    buffer_data(kir, buf, slots, inputs, params).map(<[f32]>::len)
}

fn buffer_ptr(
    kir: &Kir,
    buf: fluxc_core::kir::BufId,
    slots: &mut [Vec<f32>],
    inputs: &[&[f32]],
    params: &mut [Vec<f32>],
) -> Result<*mut f32, CpuError> {
    let info = kir.buffers.get(buf.0 as usize).ok_or_else(|| CpuError("no buffer".into()))?;
    // Inputs are only ever read by kernels (every kernel writes a slot), so a pointer to them
    // may be typed mutable without being written through.
    let v = match info.storage {
        Storage::Slot(s) => slots.get_mut(s).map(|v| v.as_mut_ptr()),
        Storage::Input(k) => inputs.get(k).map(|v| v.as_ptr().cast_mut()),
        Storage::Param(k) => params.get_mut(k).map(|v| v.as_mut_ptr()),
    };
    v.ok_or_else(|| CpuError(format!("buffer b{} is missing", buf.0)))
}
