//! A compiled step as data: the plan, a flat array of `i64` words that the JIT and every built
//! library interpret the same way.
//!
//! ```text
//! header   MAGIC VERSION n_inputs n_params n_buffers n_slots n_steps n_outputs
//! inputs   n_inputs  x [source value dtype]     where each graph input comes from (ABI binding)
//! params   n_params  x [offset]                 element offset of each parameter in the block
//! buffers  n_buffers x [storage index fixed per_row at_fixed at_per_row]
//!                                             `at`: where in its slot a scratch buffer starts
//! slots    n_slots   x [fixed per_row]          scratch slots, in elements
//! steps    n_steps   x [len opcode operands…]   `len` counts every word of the step
//! outputs  n_outputs x [buffer dest value]      where each graph output goes (ABI binding)
//! ```
//!
//! Every size is a pair `fixed per_row` meaning `fixed + per_row * B` elements: the batch is the
//! only run-time dimension. The interpreter checks each operand's length against what its kernel
//! reads and that no kernel writes memory it reads, so a malformed plan is an error, never a
//! wild access; what it trusts is that the caller's pointers hold the sizes the plan names.

// Every `[]` below indexes a slice whose length was checked against the plan's sizes.
#![allow(unsafe_code, clippy::indexing_slicing)]

use crate::ops::{self, Geom, Pool, PoolKind, ReduceOp};
use crate::rng::Stream;
use crate::threads;

pub const MAGIC: i64 = 0x464C_5850;
pub const VERSION: i64 = 2;
/// Words per buffer record.
const BUFFER_WORDS: usize = 6;
const HEADER: usize = 8;

/// Loops of at least this many elements per thread are split over the threads: the pool's
/// workers spin between jobs, so handing out a part costs well under a µs, and this many
/// elements take a few µs (measured in-process on alternate steps: an LSTM step's loops of
/// `[32, 128]` and `[32, 512]` split two ways make it 8–10% faster than with a threshold of
/// 2^15; the MLP and LeNet-5 steps 1–2%).
const PARALLEL_LOOP: usize = 1 << 11;

/// The scratch elements `start..end` a buffer occupies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    fn overlaps(self, o: Option<Span>) -> bool {
        o.is_some_and(|o| self.start < o.end && o.start < self.end)
    }
}

/// A loop's pointer table, shared by the threads that run its parts.
struct Table(*const *mut f32);
// SAFETY: the parts only read the table (and write disjoint ranges through its pointers) while
// the step that owns it waits for them.
#[allow(unsafe_code)]
unsafe impl Sync for Table {}

/// Step opcodes.
pub mod op {
    /// `[out, loop, n, in…]`: a compiled fused loop (`loops[loop]`). Every step starts with
    /// its output buffer.
    pub const LOOP: i64 = 1;
    /// `[out, a, b, ta, tb, batch, m, k, n]` (sizes as pairs).
    pub const GEMM: i64 = 2;
    /// `[out, a, rank, dims…, perm…]`.
    pub const TRANSPOSE: i64 = 3;
    /// `[out, a, outer, extent, inner, start, end]`.
    pub const SLICE: i64 = 4;
    /// `[out, n, (buf, width)…, outer, total]`.
    pub const CONCAT: i64 = 5;
    /// `[out, a, reduce_op, rank, dims…, n_axes, axes…]`.
    pub const REDUCE: i64 = 6;
    /// `[out, a, outer, extent, inner]`.
    pub const ARGMAX: i64 = 7;
    /// `[out, n]`.
    pub const IOTA: i64 = 8;
    /// `[out, n, dist, source, value]`: dist 0 uniform, 1 normal; source 0 a fixed seed (value),
    /// 1 the run's seed and step on stream `value`.
    pub const RANDOM: i64 = 9;
    /// `[out, x, w, b, cin, cout, h, w, kh, kw, oh, ow, s0, s1, p0, p1, d0, d1]`.
    pub const CONV: i64 = 10;
    /// As `CONV` with `w` the output gradient; `out` is the weight's gradient.
    pub const CONV_WEIGHT_GRAD: i64 = 11;
    /// As `CONV` with `x` the output gradient; `out` is the input's gradient.
    pub const CONV_TRANSPOSE: i64 = 12;
    /// `[out, x, kind, planes, h, w, oh, ow, kh, kw, s0, s1, p0, p1]`.
    pub const POOL: i64 = 13;
    /// `[out, x, grad, kind, planes, h, w, oh, ow, kh, kw, s0, s1, p0, p1]`.
    pub const POOL_GRAD: i64 = 14;
    /// `[out, a, rows, cols]`.
    pub const ORTHOGONALIZE: i64 = 15;
}

/// Where a buffer lives.
pub mod storage {
    pub const INPUT: i64 = 0;
    pub const PARAM: i64 = 1;
    pub const SLOT: i64 = 2;
}

/// Where a graph input comes from in a built library's call.
pub mod source {
    /// The call's `value`-th data argument (0 `x`, 1 `target`).
    pub const ARG: i64 = 0;
    /// The step number about to be taken (the stored count + 1), as an f32 scalar.
    pub const STEP: i64 = 1;
    /// The epoch (from the optimizer state's header, at least 1), as an f32 scalar.
    pub const EPOCH: i64 = 2;
    /// Optimizer state at byte offset `value` of `opt_state`.
    pub const OPT: i64 = 3;
}

/// Where a graph output goes in a built library's call.
pub mod dest {
    /// The call's `value`-th result pointer (0: `y`, or `loss`).
    pub const ARG: i64 = 0;
    /// The parameter block at element offset `value`.
    pub const PARAM: i64 = 1;
    /// Optimizer state at byte offset `value` of `opt_state`.
    pub const OPT: i64 = 2;
    /// Nowhere (a value only the CLI's log reads).
    pub const NONE: i64 = 3;
}

/// A compiled loop kernel: `ptrs[0]` is its output, `ptrs[1..]` its inputs.
pub type LoopFn = unsafe extern "C" fn(*const *mut f32, i64, i64, i64);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError(pub String);

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(what: &str) -> PlanError {
    PlanError(format!("malformed plan: {what}"))
}

/// What one run reads and writes besides the plan.
pub struct Env<'a> {
    pub batch: i64,
    pub seed: u64,
    pub step: u64,
    /// One pointer per graph input, each to at least its buffer's elements.
    pub inputs: &'a [*const f32],
    /// One pointer per parameter, each to at least its buffer's elements.
    pub params: &'a [*mut f32],
    /// At least [`Plan::scratch_len`] f32s.
    pub scratch: *mut f32,
    pub loops: &'a [LoopFn],
}

/// A plan whose sections were found and checked.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'p> {
    words: &'p [i64],
    pub n_inputs: usize,
    pub n_params: usize,
    n_buffers: usize,
    n_slots: usize,
    n_steps: usize,
    pub n_outputs: usize,
    inputs_at: usize,
    params_at: usize,
    buffers_at: usize,
    slots_at: usize,
    steps_at: usize,
    outputs_at: usize,
}

/// `fixed + per_row * batch` as a size.
fn lin(fixed: i64, per_row: i64, batch: i64) -> Result<usize, PlanError> {
    per_row
        .checked_mul(batch)
        .and_then(|r| r.checked_add(fixed))
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| bad("a size is negative or overflows"))
}

/// Slots are laid out on 16-element (64-byte) boundaries.
fn round16(n: usize) -> Result<usize, PlanError> {
    n.checked_next_multiple_of(16).ok_or_else(|| bad("scratch overflows"))
}

impl<'p> Plan<'p> {
    pub fn parse(words: &'p [i64]) -> Result<Plan<'p>, PlanError> {
        let head = words.get(..HEADER).ok_or_else(|| bad("too short"))?;
        if head[0] != MAGIC || head[1] != VERSION {
            return Err(bad("wrong magic or version"));
        }
        let count = |k: usize| usize::try_from(head[k]).map_err(|_| bad("negative count"));
        let (n_inputs, n_params, n_buffers) = (count(2)?, count(3)?, count(4)?);
        let (n_slots, n_steps, n_outputs) = (count(5)?, count(6)?, count(7)?);
        let section = |at: usize, n: usize, width: usize| -> Result<usize, PlanError> {
            n.checked_mul(width).and_then(|w| at.checked_add(w)).ok_or_else(|| bad("section overflows"))
        };
        let inputs_at = HEADER;
        let params_at = section(inputs_at, n_inputs, 3)?;
        let buffers_at = section(params_at, n_params, 1)?;
        let slots_at = section(buffers_at, n_buffers, BUFFER_WORDS)?;
        let steps_at = section(slots_at, n_slots, 2)?;
        let mut at = steps_at;
        for _ in 0..n_steps {
            let len =
                words.get(at).and_then(|l| usize::try_from(*l).ok()).ok_or_else(|| bad("step length"))?;
            if len < 2 {
                return Err(bad("step length"));
            }
            at = at.checked_add(len).ok_or_else(|| bad("step length"))?;
        }
        let outputs_at = at;
        if section(outputs_at, n_outputs, 3)? != words.len() {
            return Err(bad("its length does not match its sections"));
        }
        let plan = Plan {
            words,
            n_inputs,
            n_params,
            n_buffers,
            n_slots,
            n_steps,
            n_outputs,
            inputs_at,
            params_at,
            buffers_at,
            slots_at,
            steps_at,
            outputs_at,
        };
        for b in 0..n_buffers {
            let w = &words[buffers_at + BUFFER_WORDS * b..buffers_at + BUFFER_WORDS * (b + 1)];
            let index = usize::try_from(w[1]).map_err(|_| bad("buffer index"))?;
            let ok = match w[0] {
                storage::INPUT | storage::PARAM => {
                    index < if w[0] == storage::INPUT { n_inputs } else { n_params } && w[4] == 0 && w[5] == 0
                }
                // Inside its slot at every batch B >= 1: `at + elements` grows no faster than the
                // slot and fits it at B = 1. (A part stored in rows has a negative fixed term:
                // `rows * stride - stride + row`.)
                storage::SLOT => {
                    index < n_slots && {
                        let s = &words[slots_at + 2 * index..slots_at + 2 * index + 2];
                        let end_fixed = w[2].checked_add(w[4]);
                        let end_per_row = w[3].checked_add(w[5]);
                        match (end_fixed, end_per_row, s[0].checked_add(s[1])) {
                            (Some(f), Some(r), Some(at_one)) => {
                                r <= s[1] && f.checked_add(r).is_some_and(|e| e <= at_one)
                            }
                            _ => false,
                        }
                    }
                }
                _ => false,
            };
            // Sizes and offsets are never negative at B >= 1 and never shrink as B grows.
            let never_negative = |f: i64, r: i64| r >= 0 && f.checked_add(r).is_some_and(|v| v >= 0);
            if !ok || !never_negative(w[2], w[3]) || !never_negative(w[4], w[5]) {
                return Err(bad("a buffer's storage"));
            }
        }
        for k in 0..n_outputs {
            plan.output_buffer(k)?;
        }
        Ok(plan)
    }

    /// Where input `k` comes from: `(source, value, dtype)` with dtype 0 f32, 1 i32.
    pub fn input_binding(&self, k: usize) -> (i64, i64, i64) {
        let w = self.words.get(self.inputs_at + 3 * k..self.inputs_at + 3 * k + 3).unwrap_or(&[-1, -1, -1]);
        (w[0], w[1], w[2])
    }

    /// Element offset of parameter `k` in the parameter block.
    pub fn param_offset(&self, k: usize) -> Result<usize, PlanError> {
        self.words
            .get(self.params_at + k)
            .and_then(|o| usize::try_from(*o).ok())
            .ok_or_else(|| bad("parameter offset"))
    }

    /// Where output `k` goes: `(dest, value)`.
    pub fn output_binding(&self, k: usize) -> (i64, i64) {
        let w = self.words.get(self.outputs_at + 3 * k..self.outputs_at + 3 * k + 3).unwrap_or(&[-1, -1, -1]);
        (w[1], w[2])
    }

    fn output_buffer(&self, k: usize) -> Result<usize, PlanError> {
        self.words
            .get(self.outputs_at + 3 * k)
            .and_then(|b| usize::try_from(*b).ok())
            .filter(|b| *b < self.n_buffers)
            .ok_or_else(|| bad("output buffer"))
    }

    /// Elements of input `k` (its buffer's size) for a batch.
    pub fn input_len(&self, k: usize, batch: i64) -> Result<usize, PlanError> {
        for b in 0..self.n_buffers {
            let w = &self.words[self.buffers_at + BUFFER_WORDS * b..self.buffers_at + BUFFER_WORDS * (b + 1)];
            if w[0] == storage::INPUT && usize::try_from(w[1]).ok() == Some(k) {
                return lin(w[2], w[3], batch);
            }
        }
        Ok(0)
    }

    /// The f32 elements of scratch a run at `batch` needs.
    pub fn scratch_len(&self, batch: i64) -> Result<usize, PlanError> {
        let mut total = 0usize;
        for s in 0..self.n_slots {
            let w = &self.words[self.slots_at + 2 * s..self.slots_at + 2 * s + 2];
            total = total
                .checked_add(round16(lin(w[0], w[1], batch)?)?)
                .ok_or_else(|| bad("scratch overflows"))?;
        }
        Ok(total)
    }

    fn slot_offsets(&self, batch: i64) -> Result<Vec<usize>, PlanError> {
        let mut at = 0usize;
        let mut offsets = Vec::with_capacity(self.n_slots);
        for s in 0..self.n_slots {
            offsets.push(at);
            let w = &self.words[self.slots_at + 2 * s..self.slots_at + 2 * s + 2];
            at = at.checked_add(round16(lin(w[0], w[1], batch)?)?).ok_or_else(|| bad("scratch overflows"))?;
        }
        Ok(offsets)
    }

    /// Output `k` after a run: its pointer and length.
    pub fn output(&self, env: &Env<'_>, k: usize) -> Result<(*const f32, usize), PlanError> {
        let offsets = self.slot_offsets(env.batch)?;
        let b = self.output_buffer(k)?;
        let (p, n, _) = self.buffer(env, &offsets, b)?;
        Ok((p.cast_const(), n))
    }

    /// Where output `k` lives ([`storage`]).
    pub fn output_storage(&self, k: usize) -> Result<i64, PlanError> {
        let b = self.output_buffer(k)?;
        Ok(self.words[self.buffers_at + BUFFER_WORDS * b])
    }

    /// Every output after a run: pointer and length, in order.
    pub fn outputs(&self, env: &Env<'_>) -> Result<Vec<(*const f32, usize)>, PlanError> {
        let offsets = self.slot_offsets(env.batch)?;
        (0..self.n_outputs)
            .map(|k| {
                let (p, n, _) = self.buffer(env, &offsets, self.output_buffer(k)?)?;
                Ok((p.cast_const(), n))
            })
            .collect()
    }

    /// Buffer `b`: its pointer, its elements at this batch, and (if scratch) the range of
    /// scratch it occupies.
    fn buffer(
        &self,
        env: &Env<'_>,
        offsets: &[usize],
        b: usize,
    ) -> Result<(*mut f32, usize, Option<Span>), PlanError> {
        if b >= self.n_buffers {
            return Err(bad("buffer id"));
        }
        let w = &self.words[self.buffers_at + BUFFER_WORDS * b..self.buffers_at + BUFFER_WORDS * (b + 1)];
        let n = lin(w[2], w[3], env.batch)?;
        let index = usize::try_from(w[1]).map_err(|_| bad("buffer index"))?;
        match w[0] {
            storage::INPUT => {
                let p = env.inputs.get(index).ok_or_else(|| bad("missing input"))?;
                Ok((p.cast_mut(), n, None))
            }
            storage::PARAM => {
                let p = env.params.get(index).ok_or_else(|| bad("missing parameter"))?;
                Ok((*p, n, None))
            }
            _ => {
                let slot = offsets.get(index).ok_or_else(|| bad("slot"))?;
                let start = slot.checked_add(lin(w[4], w[5], env.batch)?).ok_or_else(|| bad("slot"))?;
                // SAFETY: `parse` checked that the buffer lies within its slot, inside the scratch
                // block of `scratch_len` elements.
                Ok((unsafe { env.scratch.add(start) }, n, Some(Span { start, end: start + n })))
            }
        }
    }

    /// Runs every step.
    ///
    /// # Safety
    /// Every pointer in `env` must be valid for the elements the plan gives its buffer at
    /// `env.batch` (inputs for reads; parameters and `scratch` for reads and writes, scratch of
    /// at least [`Plan::scratch_len`] elements), and nothing else may use them during the run.
    /// The loop kernels must be the ones the plan was compiled with.
    pub unsafe fn run(&self, env: &Env<'_>) -> Result<(), PlanError> {
        if env.batch < 1 {
            return Err(PlanError(format!("invalid batch {}", env.batch)));
        }
        let offsets = self.slot_offsets(env.batch)?;
        let mut at = self.steps_at;
        for _ in 0..self.n_steps {
            let len = usize::try_from(self.words[at]).map_err(|_| bad("step length"))?;
            let step = &self.words[at + 1..at + len];
            at += len;
            // SAFETY: forwarded from the caller.
            unsafe { self.step(env, &offsets, step)? };
        }
        Ok(())
    }

    /// One step: `s` is `[opcode, operands…]`.
    unsafe fn step(&self, env: &Env<'_>, offsets: &[usize], s: &[i64]) -> Result<(), PlanError> {
        let mut r = Reader { w: s, at: 1, batch: env.batch };
        let opcode = s[0];
        let out_id = r.index()?;
        let (out_ptr, out_len, out_span) = self.buffer(env, offsets, out_id)?;
        let Some(out_span) = out_span else {
            return Err(bad("a step writes outside scratch"));
        };
        // An operand as a slice of at least `need` elements, never the output's slot.
        let operand = |id: usize, need: usize| -> Result<&[f32], PlanError> {
            let (p, n, span) = self.buffer(env, offsets, id)?;
            if out_span.overlaps(span) {
                return Err(bad("a step reads memory it writes"));
            }
            if n < need {
                return Err(bad("an operand is smaller than its kernel reads"));
            }
            // SAFETY: the caller guarantees `n` valid elements; no writer aliases them.
            Ok(unsafe { std::slice::from_raw_parts(p, need) })
        };
        let output = |need: usize| -> Result<&mut [f32], PlanError> {
            if out_len < need {
                return Err(bad("the output is smaller than its kernel writes"));
            }
            // SAFETY: scratch memory of `out_len` elements that no operand shares.
            Ok(unsafe { std::slice::from_raw_parts_mut(out_ptr, need) })
        };
        match opcode {
            op::LOOP => {
                let f = *env.loops.get(r.index()?).ok_or_else(|| bad("loop index"))?;
                let n = r.index()?;
                // The pointer table on the stack (a loop reads at most a few dozen buffers).
                const MAX_LOOP_INPUTS: usize = 63;
                if n > MAX_LOOP_INPUTS {
                    return Err(bad("a loop with too many inputs"));
                }
                let mut ptrs = [std::ptr::null_mut::<f32>(); MAX_LOOP_INPUTS + 1];
                ptrs[0] = out_ptr;
                // What the loop reads and writes, by scratch range (on the stack too: a train
                // step runs hundreds of loops).
                let mut read = [None; MAX_LOOP_INPUTS];
                for (slot, span) in ptrs.iter_mut().skip(1).zip(read.iter_mut()).take(n) {
                    let id = r.index()?;
                    let (_, len, s) = self.buffer(env, offsets, id)?;
                    *slot = operand(id, len)?.as_ptr().cast_mut();
                    *span = s;
                }
                let read = read.get(..n).unwrap_or_default();
                // Further outputs: scratch that nothing else the loop reads or writes overlaps.
                let extra = r.index()?;
                if n + extra > MAX_LOOP_INPUTS {
                    return Err(bad("a loop with too many buffers"));
                }
                let mut written = [out_span; MAX_LOOP_INPUTS + 1];
                for (e, slot) in ptrs.iter_mut().skip(1 + n).take(extra).enumerate() {
                    let (p, _, s) = self.buffer(env, offsets, r.index()?)?;
                    let Some(s) = s else { return Err(bad("a loop's outputs share memory")) };
                    let earlier = written.get(..=e).unwrap_or_default();
                    if earlier.iter().any(|w| w.overlaps(Some(s))) || read.iter().any(|x| s.overlaps(*x)) {
                        return Err(bad("a loop's outputs share memory"));
                    }
                    if let Some(w) = written.get_mut(e + 1) {
                        *w = s;
                    }
                    *slot = p;
                }
                // Long loops are split over the threads: each part writes its own range of
                // every output (a loop with a fused sum runs whole in its part 0).
                let parts = threads::get().min(out_len / PARALLEL_LOOP).max(1);
                let (table, batch) = (Table(ptrs.as_ptr()), env.batch);
                let table = &table;
                // SAFETY: the loop was compiled for these buffers' shapes at any batch; each
                // part reads its inputs and writes a range of the outputs no other part writes.
                let run = |part: usize| unsafe { f(table.0, batch, part as i64, parts as i64) };
                threads::run(parts, &run);
            }
            op::GEMM => {
                let (a, b) = (r.index()?, r.index()?);
                let (ta, tb) = (r.flag()?, r.flag()?);
                let (nb, m, k, n) = (r.size()?, r.size()?, r.size()?, r.size()?);
                let (mk, kn, mn) = (product(&[m, k])?, product(&[k, n])?, product(&[m, n])?);
                let a = operand(a, product(&[nb, mk])?)?;
                let b = operand(b, product(&[nb, kn])?)?;
                let out = output(product(&[nb, mn])?)?;
                ops::gemm_batch(nb, m, k, n, a, ta, b, tb, out);
            }
            op::TRANSPOSE => {
                let a = r.index()?;
                let rank = r.index()?;
                let dims = (0..rank).map(|_| r.size()).collect::<Result<Vec<_>, _>>()?;
                let perm = (0..rank).map(|_| r.index()).collect::<Result<Vec<_>, _>>()?;
                let mut seen = vec![false; rank];
                for p in &perm {
                    match seen.get_mut(*p) {
                        Some(s) if !*s => *s = true,
                        _ => return Err(bad("transpose permutation")),
                    }
                }
                let n = product(&dims)?;
                ops::transpose(operand(a, n)?, &dims, &perm, output(n)?);
            }
            op::SLICE => {
                let a = r.index()?;
                let (outer, extent, inner) = (r.size()?, r.size()?, r.size()?);
                let (start, end) = (r.index()?, r.index()?);
                if start > end || end > extent {
                    return Err(bad("slice bounds"));
                }
                let a = operand(a, product(&[outer, extent, inner])?)?;
                ops::slice(
                    a,
                    outer,
                    extent,
                    inner,
                    start,
                    end,
                    output(product(&[outer, end - start, inner])?)?,
                );
            }
            op::CONCAT => {
                let n = r.index()?;
                let parts =
                    (0..n).map(|_| Ok((r.index()?, r.size()?))).collect::<Result<Vec<_>, PlanError>>()?;
                let (outer, total) = (r.size()?, r.size()?);
                if parts.iter().map(|p| p.1).sum::<usize>() != total {
                    return Err(bad("concat widths"));
                }
                let out = output(product(&[outer, total])?)?;
                let mut offset = 0;
                for (id, width) in parts {
                    ops::concat_part(
                        operand(id, product(&[outer, width])?)?,
                        outer,
                        width,
                        total,
                        offset,
                        out,
                    );
                    offset += width;
                }
            }
            op::REDUCE => {
                let a = r.index()?;
                let red = match r.next()? {
                    0 => ReduceOp::Sum,
                    1 => ReduceOp::Prod,
                    2 => ReduceOp::Max,
                    3 => ReduceOp::Min,
                    _ => return Err(bad("reduction")),
                };
                let rank = r.index()?;
                let dims = (0..rank).map(|_| r.size()).collect::<Result<Vec<_>, _>>()?;
                let na = r.index()?;
                let axes = (0..na).map(|_| r.index()).collect::<Result<Vec<_>, _>>()?;
                if axes.iter().any(|x| *x >= rank) {
                    return Err(bad("reduction axis"));
                }
                let kept: Vec<usize> =
                    dims.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, d)| *d).collect();
                ops::reduce(operand(a, product(&dims)?)?, &dims, red, &axes, output(product(&kept)?)?);
            }
            op::ARGMAX => {
                let a = r.index()?;
                let (outer, extent, inner) = (r.size()?, r.size()?, r.size()?);
                let out = output(product(&[outer, inner])?)?;
                ops::argmax(operand(a, product(&[outer, extent, inner])?)?, outer, extent, inner, out);
            }
            op::IOTA => {
                let n = r.size()?;
                for (i, d) in output(n)?.iter_mut().enumerate() {
                    *d = i as f32;
                }
            }
            op::RANDOM => {
                let n = r.size()?;
                let (dist, src, value) = (r.next()?, r.next()?, r.next()?);
                let stream = match src {
                    0 => Stream::new(value as u64, 0, 0),
                    1 => Stream::new(env.seed, u32::try_from(value).map_err(|_| bad("stream"))?, env.step),
                    _ => return Err(bad("random source")),
                };
                let out = output(n)?;
                match dist {
                    0 => stream.fill_uniform(0.0, 1.0, out),
                    1 => stream.fill_normal(0.0, 1.0, out),
                    _ => return Err(bad("distribution")),
                }
            }
            op::CONV | op::CONV_WEIGHT_GRAD | op::CONV_TRANSPOSE => {
                let (x, w) = (r.index()?, r.index()?);
                let mut v = [0usize; 9];
                for d in v.iter_mut() {
                    *d = r.size()?;
                }
                let [b, cin, cout, h, wd, kh, kw, oh, ow] = v;
                let mut pair = || -> Result<(i64, i64), PlanError> { Ok((r.next()?, r.next()?)) };
                let (s, p, d) = (pair()?, pair()?, pair()?);
                if s.0 < 1 || s.1 < 1 || d.0 < 1 || d.1 < 1 || p.0 < 0 || p.1 < 0 {
                    return Err(bad("convolution window"));
                }
                let g = Geom { b, cin, cout, h, w: wd, kh, kw, oh, ow, s, p, d };
                let (xs, ks, ys) = (
                    product(&[b, cin, h, wd])?,
                    product(&[cout, cin, kh, kw])?,
                    product(&[b, cout, oh, ow])?,
                );
                // One image's im2col columns per thread are materialised too.
                product(&[cin, kh, kw, b, oh, ow])?;
                match opcode {
                    op::CONV => ops::conv(operand(x, xs)?, operand(w, ks)?, &g, output(ys)?),
                    op::CONV_WEIGHT_GRAD => {
                        ops::conv_weight_grad(operand(x, xs)?, operand(w, ys)?, &g, output(ks)?)
                    }
                    _ => ops::conv_transpose(operand(x, ys)?, operand(w, ks)?, &g, output(xs)?),
                }
            }
            op::POOL | op::POOL_GRAD => {
                let x = r.index()?;
                let grad = if opcode == op::POOL_GRAD { Some(r.index()?) } else { None };
                let kind = match r.next()? {
                    0 => PoolKind::Max,
                    1 => PoolKind::Mean,
                    _ => return Err(bad("pooling kind")),
                };
                let (planes, h, w, oh, ow) = (r.size()?, r.size()?, r.size()?, r.size()?, r.size()?);
                let (kh, kw) = (r.index()?, r.index()?);
                let stride = (r.next()?, r.next()?);
                let pad = (r.next()?, r.next()?);
                if stride.0 < 1 || stride.1 < 1 || pad.0 < 0 || pad.1 < 0 || kh == 0 || kw == 0 {
                    return Err(bad("pooling window"));
                }
                let p = Pool { kind, planes, h, w, oh, ow, kh, kw, stride, pad };
                let (xs, ys) = (product(&[planes, h, w])?, product(&[planes, oh, ow])?);
                let x = operand(x, xs)?;
                match grad {
                    None => ops::pool(x, &p, None, output(ys)?),
                    Some(g) => {
                        let g = operand(g, ys)?;
                        let out = output(xs)?;
                        out.iter_mut().for_each(|v| *v = 0.0);
                        ops::pool(x, &p, Some(g), out);
                    }
                }
            }
            op::ORTHOGONALIZE => {
                let a = r.index()?;
                let (rows, cols) = (r.size()?, r.size()?);
                let n = product(&[rows, cols])?;
                let a: Vec<f64> = operand(a, n)?.iter().map(|v| f64::from(*v)).collect();
                let q = ops::orthogonalize(rows, cols, &a);
                for (d, v) in output(n)?.iter_mut().zip(q) {
                    *d = v as f32;
                }
            }
            _ => return Err(bad("unknown opcode")),
        }
        if r.at != s.len() {
            return Err(bad("a step's operands"));
        }
        Ok(())
    }
}

fn product(dims: &[usize]) -> Result<usize, PlanError> {
    dims.iter().try_fold(1usize, |p, d| p.checked_mul(*d)).ok_or_else(|| bad("size overflows"))
}

/// Reads a step's operands in order.
struct Reader<'s> {
    w: &'s [i64],
    at: usize,
    batch: i64,
}

impl Reader<'_> {
    fn next(&mut self) -> Result<i64, PlanError> {
        let v = *self.w.get(self.at).ok_or_else(|| bad("a step ends early"))?;
        self.at += 1;
        Ok(v)
    }

    fn index(&mut self) -> Result<usize, PlanError> {
        usize::try_from(self.next()?).map_err(|_| bad("negative index"))
    }

    fn flag(&mut self) -> Result<bool, PlanError> {
        Ok(self.next()? != 0)
    }

    /// A `fixed per_row` pair, evaluated; capped so products of a few stay in range.
    fn size(&mut self) -> Result<usize, PlanError> {
        let (f, r) = (self.next()?, self.next()?);
        let v = lin(f, r, self.batch)?;
        if v > 1 << 40 {
            return Err(bad("a size is too large"));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A plan over one slot of 8 elements holding two buffers of 4 (`at` 0 and `at_b`), with
    /// one slice step copying the whole of buffer `from` into buffer `to`.
    fn two_parts(at_b: i64, from: i64, to: i64) -> Vec<i64> {
        let mut w = vec![MAGIC, VERSION, 0, 0, 2, 1, 1, 0];
        w.extend([storage::SLOT, 0, 4, 0, 0, 0]);
        w.extend([storage::SLOT, 0, 4, 0, at_b, 0]);
        w.extend([8, 0]);
        // [len, SLICE, out, a, outer, extent, inner, start, end]
        w.extend([12, op::SLICE, to, from, 1, 0, 4, 0, 1, 0, 0, 4]);
        w
    }

    fn run(words: &[i64], scratch: &mut [f32]) -> Result<(), PlanError> {
        run_with(words, scratch, &[])
    }

    /// Runs a plan with no inputs or parameters on `scratch`, at batch 1.
    fn run_with(words: &[i64], scratch: &mut [f32], loops: &[LoopFn]) -> Result<(), PlanError> {
        let plan = Plan::parse(words)?;
        let env = Env {
            batch: 1,
            seed: 0,
            step: 0,
            inputs: &[],
            params: &[],
            scratch: scratch.as_mut_ptr(),
            loops,
        };
        // SAFETY: the plans of these tests have no inputs or parameters, their scratch fits the
        // buffer given, and their loops touch nothing.
        unsafe { plan.run(&env) }
    }

    unsafe extern "C" fn no_op(_: *const *mut f32, _: i64, _: i64, _: i64) {}

    /// A loop's further outputs may share a slot with its other buffers, but not overlap its
    /// output, each other or what it reads.
    #[test]
    fn a_loops_outputs_are_checked_by_range() {
        let plan = |extra: i64| {
            // Four buffers of 4 elements in one slot of 12: at 0, 4, 8, and 2 (over the first two).
            let mut w = vec![MAGIC, VERSION, 0, 0, 4, 1, 1, 0];
            for at in [0, 4, 8, 2] {
                w.extend([storage::SLOT, 0, 4, 0, at, 0]);
            }
            w.extend([12, 0]);
            // [len, LOOP, out, loop, n, in…, extra, out…]: b0 = f(b2), and `extra` too.
            w.extend([8, op::LOOP, 0, 0, 1, 2, 1, extra]);
            w
        };
        let loops: [LoopFn; 1] = [no_op];
        let mut scratch = vec![0.0f32; 12];
        run_with(&plan(1), &mut scratch, &loops).unwrap();
        for bad in [3, 2, 0] {
            let e = run_with(&plan(bad), &mut scratch, &loops).unwrap_err();
            assert!(e.0.contains("outputs share memory"), "b{bad}: {e}");
        }
    }

    /// Parts of one slot (a concatenation built in place) may be read and written by one step
    /// when they do not overlap; an overlap, or a part reaching past its slot, is an error.
    #[test]
    fn parts_of_a_slot_are_checked_by_range() {
        let mut scratch: Vec<f32> = (0..16).map(|v| v as f32).collect();
        run(&two_parts(4, 0, 1), &mut scratch).unwrap();
        assert_eq!(&scratch[..8], &[0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 3.0]);
        let overlap = run(&two_parts(2, 0, 1), &mut scratch).unwrap_err();
        assert!(overlap.0.contains("reads memory it writes"), "{overlap}");
        let outside = Plan::parse(&two_parts(5, 0, 1)).unwrap_err();
        assert!(outside.0.contains("storage"), "{outside}");
    }

    /// A part stored in rows (`rows * stride - stride + row` elements: a negative fixed term)
    /// is accepted when it fits its slot at every batch, and refused when it would be negative
    /// or outgrow its slot.
    #[test]
    fn sizes_are_checked_for_every_batch() {
        let plan = |elements: [i64; 2], at: [i64; 2]| {
            let mut w = vec![MAGIC, VERSION, 0, 0, 1, 1, 0, 0];
            w.extend([storage::SLOT, 0, elements[0], elements[1], at[0], at[1]]);
            w.extend([0, 8]);
            Plan::parse(&w).map(|_| ())
        };
        plan([-4, 8], [4, 0]).unwrap();
        plan([0, 4], [0, 4]).unwrap();
        assert!(plan([-9, 8], [0, 0]).is_err(), "negative at B = 1");
        assert!(plan([-4, 8], [5, 0]).is_err(), "past the slot at B = 1");
        assert!(plan([0, 5], [0, 4]).is_err(), "outgrows the slot");
        assert!(plan([0, 4], [4, -1]).is_err(), "an offset shrinking with B");
    }
}
