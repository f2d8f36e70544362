//! The C entry points behind a built library's functions (LANGUAGE.md §8, §11.3, §12.5).
//!
//! `fluxc build` writes a small C file per model that holds the model's plans and loop tables
//! ([`Model`]) and defines `fluxc_NAME_forward` and the rest as calls of these functions.
//! Return codes: 0 ok, 1 invalid batch (< 1), 2 null pointer, 3 non-finite loss (no update
//! applied), 4 internal error (a plan the runtime cannot run; a bug).
//!
//! The optimizer state block starts with a 32-byte header: the step count (u64, little-endian;
//! zero-filled means "before step 1"), the epoch for epoch-based schedules (u64; 0 reads as 1),
//! the seed of the training step's randomness such as dropout (u64), and 8 reserved bytes. The
//! optimizer's tensors follow at the byte offsets the plan gives.

#![allow(unsafe_code)]

use std::ffi::c_void;

use crate::plan::{self, Env, LoopFn, Plan};

pub const OK: i32 = 0;
pub const INVALID_BATCH: i32 = 1;
pub const NULL_POINTER: i32 = 2;
pub const NON_FINITE_LOSS: i32 = 3;
pub const INTERNAL: i32 = 4;

/// Bytes of the optimizer state's header.
pub const OPT_HEADER_BYTES: usize = 32;

/// One compiled function: its plan and its loop kernels (`plan` null when absent).
#[repr(C)]
pub struct Entry {
    pub plan: *const i64,
    pub plan_len: usize,
    pub loops: *const LoopFn,
    pub n_loops: usize,
}

/// A built model, as its C file declares it.
#[repr(C)]
pub struct Model {
    pub init: Entry,
    pub forward: Entry,
    pub train: Entry,
    /// f32 elements of the parameter block.
    pub param_elements: i64,
    /// Bytes of the optimizer state (0 without a train block).
    pub opt_bytes: i64,
}

impl Entry {
    /// # Safety
    /// `plan` and `loops` must point to `plan_len` and `n_loops` items (or `plan` be null).
    unsafe fn get(&self) -> Option<(Plan<'_>, &[LoopFn])> {
        if self.plan.is_null() {
            return None;
        }
        // SAFETY: the C file defines these arrays with these lengths.
        let words = unsafe { std::slice::from_raw_parts(self.plan, self.plan_len) };
        let loops = if self.n_loops == 0 {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(self.loops, self.n_loops) }
        };
        Plan::parse(words).ok().map(|p| (p, loops))
    }
}

/// Scratch bytes one call of `plan` needs at `batch`: the slots, the f32 copies of integer
/// inputs, and 64 bytes to align the caller's pointer.
fn scratch_bytes(plan: &Plan<'_>, batch: i64) -> Option<usize> {
    let mut elements = plan.scratch_len(batch).ok()?;
    for k in 0..plan.n_inputs {
        if plan.input_binding(k).2 == 1 {
            elements = elements.checked_add(plan.input_len(k, batch).ok()?.checked_next_multiple_of(16)?)?;
        }
    }
    elements.checked_mul(4)?.checked_add(64)
}

/// What a call passes besides the plan.
struct Call<'a> {
    batch: i64,
    seed: u64,
    step: u64,
    /// The data arguments (`x`, `target`), by index.
    args: &'a [*const c_void],
    params: *mut f32,
    opt: *mut u8,
    scratch: *mut u8,
    step_value: f32,
    epoch_value: f32,
}

/// Runs `plan` and returns its environment's tables so outputs can be read.
///
/// # Safety
/// Every pointer must hold what the plan gives it at `call.batch`, and `scratch` at least
/// [`scratch_bytes`].
unsafe fn run(plan: &Plan<'_>, loops: &[LoopFn], call: &Call<'_>, then: impl FnOnce(&Env<'_>) -> i32) -> i32 {
    let Ok(slots) = plan.scratch_len(call.batch) else { return INTERNAL };
    // SAFETY: the caller's scratch holds at least 64 bytes more than the plan needs.
    let base = unsafe { call.scratch.add(call.scratch.align_offset(64)) }.cast::<f32>();
    let mut spare = slots;
    let mut inputs = Vec::with_capacity(plan.n_inputs);
    for k in 0..plan.n_inputs {
        let (src, value, dtype) = plan.input_binding(k);
        let Ok(value_index) = usize::try_from(value) else { return INTERNAL };
        let p: *const f32 = match src {
            plan::source::ARG => match call.args.get(value_index) {
                Some(p) if p.is_null() => return NULL_POINTER,
                Some(p) if dtype == 1 => {
                    // Integer inputs are read as f32 copies in scratch (exact below 2^24).
                    let Ok(n) = plan.input_len(k, call.batch) else { return INTERNAL };
                    // SAFETY: `scratch_bytes` reserved these elements after the slots.
                    let dst = unsafe { base.add(spare) };
                    let src = p.cast::<i32>();
                    for i in 0..n {
                        // SAFETY: the caller's input holds `n` values; `dst` has room for them.
                        unsafe { *dst.add(i) = src.add(i).read_unaligned() as f32 };
                    }
                    spare += n.next_multiple_of(16);
                    dst.cast_const()
                }
                Some(p) => p.cast::<f32>(),
                None => return INTERNAL,
            },
            plan::source::STEP => &raw const call.step_value,
            plan::source::EPOCH => &raw const call.epoch_value,
            plan::source::OPT if !call.opt.is_null() => {
                // SAFETY: the offset lies inside the optimizer state block.
                unsafe { call.opt.add(value_index) }.cast::<f32>().cast_const()
            }
            _ => return INTERNAL,
        };
        inputs.push(p);
    }
    let mut params = Vec::with_capacity(plan.n_params);
    for k in 0..plan.n_params {
        let Ok(off) = plan.param_offset(k) else { return INTERNAL };
        // SAFETY: the offset lies inside the parameter block.
        params.push(unsafe { call.params.add(off) });
    }
    let env = Env {
        batch: call.batch,
        seed: call.seed,
        step: call.step,
        inputs: &inputs,
        params: &params,
        scratch: base,
        loops,
    };
    // SAFETY: forwarded from the caller.
    match unsafe { plan.run(&env) } {
        Ok(()) => then(&env),
        Err(_) => INTERNAL,
    }
}

/// Copies every output to where the plan binds it: result pointers, the parameter block, the
/// optimizer state. With `gate`, a non-finite result (the loss) is still reported but nothing
/// else is copied.
///
/// # Safety
/// The destinations must hold what the plan writes there.
unsafe fn store(
    plan: &Plan<'_>,
    env: &Env<'_>,
    results: &[*mut f32],
    params: *mut f32,
    opt: *mut u8,
    gate: bool,
) -> i32 {
    let mut outs = Vec::with_capacity(plan.n_outputs);
    let mut finite = true;
    let Ok(all) = plan.outputs(env) else { return INTERNAL };
    for (k, (p, n)) in all.into_iter().enumerate() {
        // SAFETY: the plan's output buffer holds `n` elements after the run.
        let data = unsafe { std::slice::from_raw_parts(p, n) };
        let (dest, value) = plan.output_binding(k);
        if gate && dest == plan::dest::ARG && !data.iter().all(|v| v.is_finite()) {
            finite = false;
        }
        outs.push((data, dest, value));
    }
    for (data, dest, value) in outs {
        if (!finite && dest != plan::dest::ARG) || dest == plan::dest::NONE {
            continue;
        }
        let Ok(value) = usize::try_from(value) else { return INTERNAL };
        let dst: *mut f32 = match dest {
            plan::dest::ARG => match results.get(value) {
                Some(p) => *p,
                None => return INTERNAL,
            },
            // SAFETY: offsets inside the blocks.
            plan::dest::PARAM => unsafe { params.add(value) },
            plan::dest::OPT => unsafe { opt.add(value) }.cast::<f32>(),
            _ => return INTERNAL,
        };
        for (i, v) in data.iter().enumerate() {
            // SAFETY: the destination holds this output; it never overlaps scratch.
            unsafe { dst.add(i).write_unaligned(*v) };
        }
    }
    if finite { OK } else { NON_FINITE_LOSS }
}

/// # Safety
/// `m` must be a model a built library defines.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fluxc_rt_param_bytes(m: *const Model) -> usize {
    // SAFETY: the library passes its own model.
    let m = unsafe { &*m };
    usize::try_from(m.param_elements).unwrap_or(0).saturating_mul(4)
}

/// # Safety
/// As [`fluxc_rt_param_bytes`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fluxc_rt_opt_state_bytes(m: *const Model) -> usize {
    // SAFETY: the library passes its own model.
    usize::try_from(unsafe { &*m }.opt_bytes).unwrap_or(0)
}

/// Enough scratch for both `forward` and `train_step` at `batch` (0 for a batch below 1).
///
/// # Safety
/// As [`fluxc_rt_param_bytes`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fluxc_rt_scratch_bytes(m: *const Model, batch: i64) -> usize {
    if batch < 1 {
        return 0;
    }
    // SAFETY: the library passes its own model.
    let m = unsafe { &*m };
    let mut most = 0;
    for e in [&m.forward, &m.train] {
        // SAFETY: the model's entries are the library's arrays.
        if let Some((p, _)) = unsafe { e.get() } {
            most = most.max(scratch_bytes(&p, batch).unwrap_or(usize::MAX));
        }
    }
    most
}

/// # Safety
/// `params` must hold `param_bytes` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fluxc_rt_init(m: *const Model, params: *mut f32, seed: u64) -> i32 {
    if params.is_null() {
        return NULL_POINTER;
    }
    // SAFETY: the library passes its own model.
    let m = unsafe { &*m };
    let Some((plan, loops)) = (unsafe { m.init.get() }) else { return INTERNAL };
    let Some(bytes) = scratch_bytes(&plan, 1) else { return INTERNAL };
    let mut scratch = vec![0u8; bytes];
    let call = Call {
        batch: 1,
        seed,
        step: 0,
        args: &[],
        params,
        opt: std::ptr::null_mut(),
        scratch: scratch.as_mut_ptr(),
        step_value: 0.0,
        epoch_value: 0.0,
    };
    // SAFETY: the init plan has no inputs and writes only the parameter block.
    unsafe { run(&plan, loops, &call, |env| store(&plan, env, &[], params, std::ptr::null_mut(), false)) }
}

/// # Safety
/// `params`, `x`, `y` and `scratch` must hold what the model's header says for `batch`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fluxc_rt_forward(
    m: *const Model,
    params: *const f32,
    x: *const c_void,
    y: *mut f32,
    batch: i64,
    scratch: *mut c_void,
) -> i32 {
    if batch < 1 {
        return INVALID_BATCH;
    }
    if params.is_null() || x.is_null() || y.is_null() || scratch.is_null() {
        return NULL_POINTER;
    }
    // SAFETY: the library passes its own model.
    let m = unsafe { &*m };
    let Some((plan, loops)) = (unsafe { m.forward.get() }) else { return INTERNAL };
    let call = Call {
        batch,
        seed: 0,
        step: 0,
        args: &[x],
        // The forward plan never writes a parameter (every step writes scratch).
        params: params.cast_mut(),
        opt: std::ptr::null_mut(),
        scratch: scratch.cast::<u8>(),
        step_value: 0.0,
        epoch_value: 0.0,
    };
    // SAFETY: forwarded from the caller.
    unsafe {
        run(&plan, loops, &call, |env| {
            store(&plan, env, &[y], std::ptr::null_mut(), std::ptr::null_mut(), false)
        })
    }
}

/// # Safety
/// As [`fluxc_rt_forward`], with `opt_state` of `opt_state_bytes`, `target` of the data's
/// shape, and `loss` one float.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn fluxc_rt_train_step(
    m: *const Model,
    params: *mut f32,
    opt_state: *mut c_void,
    x: *const c_void,
    target: *const c_void,
    batch: i64,
    loss: *mut f32,
    scratch: *mut c_void,
) -> i32 {
    if batch < 1 {
        return INVALID_BATCH;
    }
    if params.is_null()
        || opt_state.is_null()
        || x.is_null()
        || target.is_null()
        || loss.is_null()
        || scratch.is_null()
    {
        return NULL_POINTER;
    }
    // SAFETY: the library passes its own model.
    let m = unsafe { &*m };
    let Some((plan, loops)) = (unsafe { m.train.get() }) else { return INTERNAL };
    let opt = opt_state.cast::<u8>();
    // SAFETY: the block starts with the 32-byte header.
    let header = |k: usize| unsafe { opt.add(8 * k).cast::<u64>().read_unaligned() };
    let (done, epoch, seed) = (header(0), header(1).max(1), header(2));
    let Some(step) = done.checked_add(1) else { return INTERNAL };
    let call = Call {
        batch,
        seed,
        step,
        args: &[x, target],
        params,
        opt,
        scratch: scratch.cast::<u8>(),
        step_value: step as f32,
        epoch_value: epoch as f32,
    };
    // SAFETY: forwarded from the caller; outputs are stored only after every kernel ran.
    let status = unsafe { run(&plan, loops, &call, |env| store(&plan, env, &[loss], params, opt, true)) };
    if status == OK {
        // SAFETY: as above.
        unsafe { opt.cast::<u64>().write_unaligned(step) };
    }
    status
}

/// Caps the threads later calls may use (`n < 1`: every core).
#[unsafe(no_mangle)]
pub extern "C" fn fluxc_rt_set_threads(n: i32) -> i32 {
    crate::threads::set(i64::from(n));
    OK
}
