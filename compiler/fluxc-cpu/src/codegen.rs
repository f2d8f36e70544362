//! Cranelift code for one fused loop kernel.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, FuncRef, Function, InstBuilder, MemFlagsData, UserFuncName, Value, types,
};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{Context, isa};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::JITBuilder;
use cranelift_module::{FuncId, Linkage, Module};
use fluxc_core::dims::Dim;
use fluxc_core::ir::{BinaryOp, DType, UnaryOp};
use fluxc_core::kir::{BufId, Fused, Kernel, LoopInput};

use super::CpuError;

/// The host's instruction set (for the JIT), optimising for speed, with the verifier on.
pub fn host_isa() -> Result<isa::OwnedTargetIsa, CpuError> {
    let builder =
        cranelift_native::builder().map_err(|e| CpuError(format!("this machine is not supported: {e}")))?;
    finish(builder, false)
}

/// x86-64-v3 (AVX2, FMA, BMI1/2, LZCNT, MOVBE) as position-independent code: the fixed
/// baseline of built libraries (LANGUAGE.md §12.5).
pub fn x86_64_v3_isa() -> Result<isa::OwnedTargetIsa, CpuError> {
    let mut builder = isa::lookup_by_name("x86_64-unknown-linux-gnu")
        .map_err(|e| CpuError(format!("the x86-64 back end: {e}")))?;
    for f in [
        "has_sse3",
        "has_ssse3",
        "has_sse41",
        "has_sse42",
        "has_popcnt",
        "has_avx",
        "has_avx2",
        "has_fma",
        "has_bmi1",
        "has_bmi2",
        "has_lzcnt",
    ] {
        builder.enable(f).map_err(|e| CpuError(format!("enabling {f}: {e}")))?;
    }
    finish(builder, true)
}

fn finish(builder: isa::Builder, pic: bool) -> Result<isa::OwnedTargetIsa, CpuError> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| {
        f.set(k, v).map_err(|e| CpuError(format!("setting {k}: {e}")))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "enable_verifier", "true")?;
    set(&mut flags, "is_pic", if pic { "true" } else { "false" })?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    builder.finish(settings::Flags::new(flags)).map_err(|e| CpuError(format!("the code generator: {e}")))
}

/// Makes the kernels' math functions (`fluxc_kernels::math`) visible to the JIT's code.
pub fn register_math(b: &mut JITBuilder) {
    for (name, f) in fluxc_kernels::math::UNARY {
        b.symbol(name, f as *const u8);
    }
    for (name, _, f) in fluxc_kernels::math::MAPS {
        b.symbol(name, f as *const u8);
    }
    b.symbol(
        "fluxc_math_pow",
        fluxc_kernels::math::fluxc_math_pow as extern "C" fn(f32, f32) -> f32 as *const u8,
    );
}

/// The entry of a finalized loop as the plan interpreter calls it.
#[allow(unsafe_code)]
pub fn loop_fn(entry: *const u8) -> fluxc_kernels::plan::LoopFn {
    // SAFETY: `entry` is a function Cranelift generated with exactly this signature
    // (`define_loop`: a pointer and three i64, no result, the C calling convention).
    unsafe { std::mem::transmute::<*const u8, fluxc_kernels::plan::LoopFn>(entry) }
}

/// A dimension's value at run time: `fixed + per_row * batch` (dimensions are linear in `B`).
fn dim_value(bcx: &mut FunctionBuilder<'_>, d: &Dim, batch: Value) -> Result<Value, CpuError> {
    let at = |b: i64| d.eval(&std::collections::BTreeMap::from([("B".to_owned(), b)]), &Default::default());
    let (Some(f0), Some(f1)) = (at(0), at(1)) else {
        return Err(CpuError(format!("the dimension {d} has no value")));
    };
    let per_row = f1 - f0;
    let fixed = bcx.ins().iconst(types::I64, f0);
    if per_row == 0 {
        return Ok(fixed);
    }
    let r = bcx.ins().imul_imm_s(batch, per_row);
    Ok(bcx.ins().iadd(fixed, r))
}

/// How an input's element for output element `i` is found.
enum Access {
    Same,
    Scalar(Value),
    /// `sum over axes of ((i / out_stride) % out_dim) * in_stride` (only axes of size > 1).
    Strided(Vec<Term>),
}

/// One axis of a strided read; a division or remainder that cannot change the index is left out.
struct Term {
    os: Option<Value>,
    od: Option<Value>,
    is: Value,
}

/// The kernels' whole-run map for a body that is exactly `f(load 0)` with `f` exp, sigmoid or
/// tanh, its input read element by element (contiguously, or in contiguous rows), nothing else
/// stored and nothing summed.
fn whole_map(
    body: &[Fused],
    access: &[Access],
    also: &[(BufId, usize)],
    sum: Option<usize>,
) -> Option<&'static str> {
    let [Fused::Load(0), Fused::Unary(u, 0)] = body else { return None };
    if !also.is_empty() || sum.is_some() || !matches!(access.first(), Some(Access::Same | Access::Strided(_)))
    {
        return None;
    }
    map_symbol(*u)
}

/// The whole-run map of `u`, if it has one.
fn map_symbol(u: UnaryOp) -> Option<&'static str> {
    let map = match u {
        UnaryOp::Exp => fluxc_kernels::math::Map::Exp,
        UnaryOp::Sigmoid => fluxc_kernels::math::Map::Sigmoid,
        UnaryOp::Tanh => fluxc_kernels::math::Map::Tanh,
        _ => return None,
    };
    fluxc_kernels::math::MAPS.iter().find(|m| m.1 == map).map(|m| m.0)
}

/// The whole-run map that a loop ending in exp, sigmoid or tanh of the value computed just
/// before (a dense layer's bias and activation) applies in place, after storing that value:
/// the function runs on wider vectors than Cranelift's lanes. Not for a fused sum, nor when a
/// further output stores the function's result.
fn post_map(
    body: &[Fused],
    also: &[(BufId, usize)],
    sum: Option<usize>,
    dtype: DType,
) -> Option<&'static str> {
    let last = body.len().checked_sub(1)?;
    let Some(Fused::Unary(u, x)) = body.last() else { return None };
    if sum.is_some() || dtype != DType::F32 || *x + 1 != last || also.iter().any(|(_, j)| *j == last) {
        return None;
    }
    map_symbol(*u)
}

/// The kernels' whole-run map `name`, `(out, x, n)`, declared for calls from `func`.
fn map_ref<M: Module>(module: &mut M, func: &mut Function, name: &str) -> Result<FuncRef, CpuError> {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    sig.params.extend([AbiParam::new(ptr), AbiParam::new(ptr), AbiParam::new(types::I64)]);
    let f = module
        .declare_function(name, Linkage::Import, &sig)
        .map_err(|e| CpuError(format!("declaring {name}: {e}")))?;
    Ok(module.declare_func_in_func(f, func))
}

/// Part `part` of `parts` of `0..n`: `[lo, hi)`, the parts `align`-element multiples (so that
/// every part but the last runs whole vector rounds).
fn part_range(
    bcx: &mut FunctionBuilder<'_>,
    n: Value,
    part: Value,
    parts: Value,
    align: i64,
) -> (Value, Value) {
    let parts = {
        let one = bcx.ins().iconst(types::I64, 1);
        let small = bcx.ins().icmp(IntCC::SignedLessThan, parts, one);
        bcx.ins().select(small, one, parts)
    };
    let less = bcx.ins().iadd_imm_s(parts, -1);
    let up = bcx.ins().iadd(n, less);
    let each = bcx.ins().udiv(up, parts);
    let each = bcx.ins().iadd_imm_s(each, align - 1);
    let each = bcx.ins().band_imm_s(each, -align);
    let min = |bcx: &mut FunctionBuilder<'_>, a: Value, b: Value| {
        let lt = bcx.ins().icmp(IntCC::SignedLessThan, a, b);
        bcx.ins().select(lt, a, b)
    };
    let lo = bcx.ins().imul(part, each);
    let lo = min(bcx, lo, n);
    let hi = bcx.ins().iadd(lo, each);
    let hi = min(bcx, hi, n);
    (lo, hi)
}

/// The element of a strided read for output element `i`.
fn strided_index(bcx: &mut FunctionBuilder<'_>, terms: &[Term], i: Value) -> Value {
    let mut at = bcx.ins().iconst(types::I64, 0);
    for t in terms {
        let q = match t.os {
            Some(os) => bcx.ins().udiv(i, os),
            None => i,
        };
        let r = match t.od {
            Some(od) => bcx.ins().urem(q, od),
            None => q,
        };
        let x = bcx.ins().imul(r, t.is);
        at = bcx.ins().iadd(at, x);
    }
    at
}

/// A loop over this part's rows of the output's axes from `t` on, opened: the builder is in
/// its body; the caller ends the body by jumping to `header` with `r + 1`.
struct RowLoop {
    header: cranelift_codegen::ir::Block,
    /// The row, the output element it starts at, and its length.
    r: Value,
    first: Value,
    inner: Value,
}

fn open_rows(
    bcx: &mut FunctionBuilder<'_>,
    out_dims: &[Value],
    t: usize,
    (part, parts): (Value, Value),
    exit: cranelift_codegen::ir::Block,
) -> RowLoop {
    let mut rows = bcx.ins().iconst(types::I64, 1);
    for d in out_dims.iter().take(t) {
        rows = bcx.ins().imul(rows, *d);
    }
    let mut inner = bcx.ins().iconst(types::I64, 1);
    for d in out_dims.iter().skip(t) {
        inner = bcx.ins().imul(inner, *d);
    }
    let header = bcx.create_block();
    let body = bcx.create_block();
    let r = bcx.append_block_param(header, types::I64);
    let (first_row, end_row) = part_range(bcx, rows, part, parts, 1);
    bcx.ins().jump(header, &[BlockArg::Value(first_row)]);
    bcx.switch_to_block(header);
    let more = bcx.ins().icmp(IntCC::SignedLessThan, r, end_row);
    bcx.ins().brif(more, body, &[], exit, &[]);
    bcx.switch_to_block(body);
    let first = bcx.ins().imul(r, inner);
    RowLoop { header, r, first, inner }
}

/// Where output element `first` (the start of a row) lies when the output's rows from `axis`
/// are stored `stride` elements apart.
fn row_start(
    bcx: &mut FunctionBuilder<'_>,
    out_dims: &[Value],
    axis: usize,
    stride: &Dim,
    batch: Value,
    first: Value,
) -> Result<Value, CpuError> {
    let mut row_len = bcx.ins().iconst(types::I64, 1);
    for d in out_dims.iter().skip(axis) {
        row_len = bcx.ins().imul(row_len, *d);
    }
    // (A part of no columns has no rows to place; avoid dividing by zero.)
    let one = bcx.ins().iconst(types::I64, 1);
    let row_len = bcx.ins().umax(row_len, one);
    let stride = dim_value(bcx, stride, batch)?;
    let q = bcx.ins().udiv(first, row_len);
    let gap = bcx.ins().isub(stride, row_len);
    let shift = bcx.ins().imul(q, gap);
    Ok(bcx.ins().iadd(first, shift))
}

/// How a strided read behaves along a row of the trailing axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowRead {
    /// Contiguous: the input has the output's trailing axes.
    Run,
    /// Constant: the input is broadcast along all of them.
    Splat,
}

/// The first axis `t` (the longest rows) from which every strided read of the loop is
/// contiguous or constant along the trailing axes, and how each read behaves (`None` when no
/// read is strided or no such axis exists). An output stored in rows from axis `rows_from`
/// needs rows from there or later (from the rank itself every row is one element, so some `t`
/// always exists then).
fn row_split(
    shape: &[Dim],
    inputs: &[LoopInput],
    access: &[Access],
    rows_from: Option<usize>,
) -> Option<(usize, Vec<RowRead>)> {
    let rank = shape.len();
    let candidates = match rows_from {
        Some(axis) => axis.max(1)..rank + 1,
        None if access.iter().any(|a| matches!(a, Access::Strided(_))) => 1..rank,
        None => return None,
    };
    candidates.into_iter().find_map(|t| {
        let mut reads = Vec::with_capacity(inputs.len());
        for (x, a) in inputs.iter().zip(access) {
            let s = &x.shape;
            if !matches!(a, Access::Strided(_)) {
                reads.push(RowRead::Run); // not consulted
                continue;
            }
            let off = rank.checked_sub(s.len())?;
            let dim = |axis: usize| if axis >= off { s.get(axis - off) } else { None };
            let one = Dim::constant(1);
            // A view is contiguous along the trailing axes when its strides are those of a
            // packed array there.
            let packed = x.view.as_ref().is_none_or(|v| {
                let mut want = Dim::constant(1);
                (t..rank).rev().all(|a| {
                    let Some(j) = a.checked_sub(off) else { return true };
                    // An axis of size 1 has no layout.
                    if s.get(j).and_then(Dim::as_constant) == Some(1) {
                        return true;
                    }
                    let ok = v.strides.get(j) == Some(&want);
                    want = s.get(j).and_then(|d| want.mul(d).ok()).unwrap_or_else(|| Dim::constant(-1));
                    ok
                })
            });
            let run = (t..rank).all(|a| dim(a) == shape.get(a)) && packed;
            let splat = (t..rank).all(|a| dim(a).is_none_or(|d| *d == one));
            reads.push(match (run, splat) {
                (true, _) => RowRead::Run,
                (false, true) => RowRead::Splat,
                (false, false) => return None,
            });
        }
        Some((t, reads))
    })
}

#[allow(clippy::too_many_arguments)]
pub fn define_loop<M: Module>(
    module: &mut M,
    index: usize,
    symbol: &str,
    linkage: Linkage,
    kernel: &Kernel,
    clif: Option<&mut String>,
) -> Result<FuncId, CpuError> {
    let Kernel::Loop { shape, inputs, body, dtype, sum, also, out_rows, .. } = kernel else {
        return Err(CpuError(format!("kernel {index} is not a loop")));
    };
    let (shape, inputs, body, also, dtype, sum) =
        (shape.as_slice(), inputs.as_slice(), body.as_slice(), also.as_slice(), *dtype, *sum);
    if sum.is_some() && (!also.is_empty() || out_rows.is_some()) {
        return Err(CpuError(format!("kernel {index}: a fused sum with further or strided outputs")));
    }
    let ptr = module.target_config().pointer_type();
    let isa_fma = module.isa().isa_flags().iter().any(|f| f.name == "has_fma" && f.as_bool() == Some(true));
    let mut sig = module.make_signature();
    // (buffer pointers, batch, part, parts): the loop runs part `part` of `parts` of its range.
    sig.params.push(AbiParam::new(ptr));
    for _ in 0..3 {
        sig.params.push(AbiParam::new(types::I64));
    }
    let id = module
        .declare_function(symbol, linkage, &sig)
        .map_err(|e| CpuError(format!("declaring kernel {index}: {e}")))?;
    let mut ctx: Context = module.make_context();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    // Math functions this body calls.
    let mut unary_sig = module.make_signature();
    unary_sig.params.push(AbiParam::new(types::F32));
    unary_sig.returns.push(AbiParam::new(types::F32));
    let mut pow_sig = module.make_signature();
    pow_sig.params.push(AbiParam::new(types::F32));
    pow_sig.params.push(AbiParam::new(types::F32));
    pow_sig.returns.push(AbiParam::new(types::F32));
    // In a fixed order, so the generated text is the same on every run.
    let mut math = Vec::new();
    for (name, _) in fluxc_kernels::math::UNARY {
        let f = module
            .declare_function(name, Linkage::Import, &unary_sig)
            .map_err(|e| CpuError(e.to_string()))?;
        math.push((name, f));
    }
    let pow = module
        .declare_function("fluxc_math_pow", Linkage::Import, &pow_sig)
        .map_err(|e| CpuError(e.to_string()))?;

    let mut fctx = FunctionBuilderContext::new();
    let frontend = module.target_config();
    {
        let mut bcx = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let mut refs = std::collections::HashMap::new();
        for (name, f) in &math {
            refs.insert(*name, module.declare_func_in_func(*f, bcx.func));
        }
        let pow_ref = module.declare_func_in_func(pow, bcx.func);
        let entry = bcx.create_block();
        let header = bcx.create_block();
        let body_block = bcx.create_block();
        let exit = bcx.create_block();
        bcx.append_block_params_for_function_params(entry);
        bcx.switch_to_block(entry);
        let params = bcx.block_params(entry).to_vec();
        let [ptrs, batch, part, parts] = params[..] else {
            return Err(CpuError("the kernel has no parameters".into()));
        };
        let flags = MemFlagsData::trusted();
        let word = i32::try_from(ptr.bytes()).unwrap_or(8);
        let mut out_ptr = bcx.ins().load(ptr, flags, ptrs, 0);
        // Output dims and strides (row-major), the element count.
        let rank = shape.len();
        let mut out_dims = Vec::with_capacity(rank);
        for d in shape {
            out_dims.push(dim_value(&mut bcx, d, batch)?);
        }
        let mut out_strides = vec![bcx.ins().iconst(types::I64, 1); rank];
        for k in (0..rank.saturating_sub(1)).rev() {
            if let (Some(next), Some(dim)) = (out_strides.get(k + 1).copied(), out_dims.get(k + 1).copied())
                && let Some(s) = out_strides.get_mut(k)
            {
                *s = bcx.ins().imul(next, dim);
            }
        }
        let mut n = bcx.ins().iconst(types::I64, 1);
        for d in &out_dims {
            n = bcx.ins().imul(n, *d);
        }
        // Inputs: their pointers and how each is read.
        let mut in_ptrs = Vec::with_capacity(inputs.len());
        let mut access = Vec::with_capacity(inputs.len());
        for (k, x) in inputs.iter().enumerate() {
            let s = &x.shape;
            let off = i32::try_from(k + 1).unwrap_or(i32::MAX).saturating_mul(word);
            let mut p = bcx.ins().load(ptr, flags, ptrs, off);
            // A view starts `at` elements into its buffer.
            if let Some(v) = &x.view {
                let at = dim_value(&mut bcx, &v.at, batch)?;
                let bytes = bcx.ins().ishl_imm_s(at, 2);
                p = bcx.ins().iadd(p, bytes);
            }
            in_ptrs.push(p);
            let ones = s.iter().all(|d| d.as_constant() == Some(1));
            let a = if s.as_slice() == shape && x.view.is_none() {
                Access::Same
            } else if ones {
                Access::Scalar(bcx.ins().load(types::F32, flags, p, 0))
            } else {
                let off_axes = rank - s.len();
                let mut terms = Vec::new();
                let mut in_stride = bcx.ins().iconst(types::I64, 1);
                for (j, d) in s.iter().enumerate().rev() {
                    if d.as_constant() != Some(1) {
                        let (Some(os), Some(od)) =
                            (out_strides.get(off_axes + j).copied(), out_dims.get(off_axes + j).copied())
                        else {
                            return Err(CpuError("broadcast out of rank".into()));
                        };
                        // Skip the division for the innermost axis and the remainder for the outermost.
                        let axis = off_axes + j;
                        let unit_stride = shape
                            .get(axis + 1..)
                            .is_some_and(|rest| rest.iter().all(|x| x.as_constant() == Some(1)));
                        let is = match x.view.as_ref().and_then(|v| v.strides.get(j)) {
                            Some(st) => dim_value(&mut bcx, st, batch)?,
                            None => in_stride,
                        };
                        terms.push(Term {
                            os: (!unit_stride).then_some(os),
                            od: (axis != 0).then_some(od),
                            is,
                        });
                    }
                    let dv = dim_value(&mut bcx, d, batch)?;
                    in_stride = bcx.ins().imul(in_stride, dv);
                }
                Access::Strided(terms)
            };
            access.push(a);
        }
        // Further outputs: their pointers follow the inputs' in the table.
        let mut also_ptrs = Vec::with_capacity(also.len());
        for (e, (_, j)) in also.iter().enumerate() {
            let off = i32::try_from(1 + inputs.len() + e).unwrap_or(i32::MAX).saturating_mul(word);
            also_ptrs.push((bcx.ins().load(ptr, flags, ptrs, off), *j));
        }
        let whole = whole_map(body, &access, also, sum);
        let post = match whole {
            Some(_) => None,
            None => post_map(body, also, sum, dtype),
        };
        // With a map to apply afterwards, the loop computes (and stores) its argument.
        let body = match post {
            Some(_) => body.get(..body.len() - 1).unwrap_or(body),
            None => body,
        };
        'body: {
            // A loop that only applies exp, sigmoid or tanh to one contiguous input hands its range
            // to the kernels' whole-run map, which runs on wider vectors than Cranelift's lanes.
            let rows_from = out_rows.as_ref().map(|r| r.0);
            if let (Some(map), Some(&x)) = (whole, in_ptrs.first()) {
                let f = map_ref(module, bcx.func, map)?;
                if let (Some(Access::Same), None) = (access.first(), out_rows) {
                    let (lo, hi) = part_range(&mut bcx, n, part, parts, 8);
                    let off = bcx.ins().ishl_imm_s(lo, 2);
                    let (to, from) = (bcx.ins().iadd(out_ptr, off), bcx.ins().iadd(x, off));
                    let count = bcx.ins().isub(hi, lo);
                    bcx.ins().call(f, &[to, from, count]);
                    bcx.ins().jump(exit, &[]);
                    break 'body;
                }
                // A view, or an output stored in rows: one call per contiguous row.
                if let Some((t, reads)) = row_split(shape, inputs, &access, rows_from)
                    && reads.first() == Some(&RowRead::Run)
                {
                    let RowLoop { header: row_header, r, first, inner } =
                        open_rows(&mut bcx, &out_dims, t, (part, parts), exit);
                    let src = match access.first() {
                        Some(Access::Strided(terms)) => strided_index(&mut bcx, terms, first),
                        _ => first,
                    };
                    let dst = match out_rows {
                        Some((axis, stride)) => row_start(&mut bcx, &out_dims, *axis, stride, batch, first)?,
                        None => first,
                    };
                    let (src, dst) = (bcx.ins().ishl_imm_s(src, 2), bcx.ins().ishl_imm_s(dst, 2));
                    let (to, from) = (bcx.ins().iadd(out_ptr, dst), bcx.ins().iadd(x, src));
                    bcx.ins().call(f, &[to, from, inner]);
                    let next = bcx.ins().iadd_imm_s(r, 1);
                    bcx.ins().jump(row_header, &[BlockArg::Value(next)]);
                    break 'body;
                }
            }
            // Row mode: a broadcast read that is contiguous (or constant) along the trailing axes
            // from `t` is read through a pointer (or a value) set once per row of those axes, so
            // the row runs on lanes without a division per element.
            let (start, end, done, row) =
                match row_split(shape, inputs, &access, rows_from).filter(|_| sum.is_none()) {
                    // A fused sum runs whole in part 0 (its runs may cross any split).
                    None if sum.is_some() => {
                        let go = bcx.create_block();
                        bcx.ins().brif(part, exit, &[], go, &[]);
                        bcx.switch_to_block(go);
                        (bcx.ins().iconst(types::I64, 0), n, exit, None)
                    }
                    None => {
                        let (lo, hi) = part_range(&mut bcx, n, part, parts, 8);
                        (lo, hi, exit, None)
                    }
                    Some((t, reads)) => {
                        let row_next = bcx.create_block();
                        let RowLoop { header: row_header, r, first, inner } =
                            open_rows(&mut bcx, &out_dims, t, (part, parts), exit);
                        // An output stored in rows `stride` apart: a pointer from which output
                        // element i (= first + j) is written at byte offset 4i.
                        if let Some((axis, stride)) = out_rows {
                            let at = row_start(&mut bcx, &out_dims, *axis, stride, batch, first)?;
                            let shift = bcx.ins().isub(at, first);
                            let off = bcx.ins().ishl_imm_s(shift, 2);
                            out_ptr = bcx.ins().iadd(out_ptr, off);
                        }
                        for (k, read) in reads.iter().enumerate() {
                            let (Some(Access::Strided(terms)), Some(p)) =
                                (access.get(k), in_ptrs.get(k).copied())
                            else {
                                continue;
                            };
                            // The element this row starts from.
                            let base = strided_index(&mut bcx, terms, first);
                            let a = match read {
                                RowRead::Run => {
                                    // A pointer from which output element i (= first + j) reads
                                    // at byte offset 4i, like an operand of the output's shape.
                                    let shift = bcx.ins().isub(base, first);
                                    let off = bcx.ins().ishl_imm_s(shift, 2);
                                    if let Some(q) = in_ptrs.get_mut(k) {
                                        *q = bcx.ins().iadd(p, off);
                                    }
                                    Access::Same
                                }
                                RowRead::Splat => {
                                    let off = bcx.ins().ishl_imm_s(base, 2);
                                    let at = bcx.ins().iadd(p, off);
                                    Access::Scalar(bcx.ins().load(types::F32, flags, at, 0))
                                }
                            };
                            if let Some(slot) = access.get_mut(k) {
                                *slot = a;
                            }
                        }
                        let last = bcx.ins().iadd(first, inner);
                        (first, last, row_next, Some((row_header, row_next, r)))
                    }
                };
            let i = bcx.append_block_param(header, types::I64);
            // A fused sum: the running f64 total, the count into the current run, the output index;
            // `inner` is the length of a run (the summed trailing axes).
            let reduction = match sum {
                Some(kept) => {
                    let mut inner = bcx.ins().iconst(types::I64, 1);
                    for d in out_dims.iter().skip(kept) {
                        inner = bcx.ins().imul(inner, *d);
                    }
                    let acc = bcx.append_block_param(header, types::F64);
                    let r = bcx.append_block_param(header, types::I64);
                    let o = bcx.append_block_param(header, types::I64);
                    Some((inner, acc, r, o))
                }
                None => None,
            };
            // Values that do not depend on the element (scalars, constants, the batch) are computed
            // once, before the loop: `beta1 ^ t` in Adam is one call, not one per parameter.
            let mut invariant = vec![false; body.len()];
            for (j, f) in body.iter().enumerate() {
                let inv = |k: &usize| invariant.get(*k).copied().unwrap_or(false);
                let v = match f {
                    Fused::Load(k) => matches!(access.get(*k), Some(Access::Scalar(_))),
                    Fused::Const(..) | Fused::Size(..) => true,
                    Fused::Unary(_, x) | Fused::Cast(_, x) => inv(x),
                    Fused::Binary(_, x, y) => inv(x) && inv(y),
                    Fused::Select(c, x, y) => inv(c) && inv(x) && inv(y),
                };
                if let Some(slot) = invariant.get_mut(j) {
                    *slot = v;
                }
            }
            let mut vals: Vec<Option<Value>> = vec![None; body.len()];
            let f32c = |bcx: &mut FunctionBuilder<'_>, v: f32| bcx.ins().f32const(v);
            let bool_of = |bcx: &mut FunctionBuilder<'_>, c: Value| {
                let one = bcx.ins().f32const(1.0);
                let zero = bcx.ins().f32const(0.0);
                bcx.ins().select(c, one, zero)
            };
            // A product read only by one sum on lanes becomes a fused multiply-add (where the
            // instruction set has FMA).
            let has_fma = isa_fma;
            let mut uses = vec![0usize; body.len()];
            for f in body {
                let args: &[usize] = match f {
                    Fused::Unary(_, x) | Fused::Cast(_, x) => std::slice::from_ref(x),
                    Fused::Binary(_, x, y) => &[*x, *y][..],
                    Fused::Select(c, x, y) => &[*c, *x, *y][..],
                    _ => &[],
                };
                for a in args {
                    if let Some(u) = uses.get_mut(*a) {
                        *u += 1;
                    }
                }
            }
            // A value stored as a further output is used there too (so never folded into an FMA).
            for (_, j) in also {
                if let Some(u) = uses.get_mut(*j) {
                    *u += 1;
                }
            }
            let fusable_mul: Vec<bool> = body
                .iter()
                .enumerate()
                .map(|(j, f)| {
                    has_fma
                        && matches!(f, Fused::Binary(BinaryOp::Mul, ..))
                        && uses.get(j) == Some(&1)
                        && !invariant.get(j).copied().unwrap_or(false)
                })
                .collect();
            for hoisted in [true, false] {
                if !hoisted {
                    // Leave the entry block (or the row's). When the body allows it, a loop over f32x4
                    // lanes runs first; the scalar loop header(i): i < end ? body : done finishes the
                    // tail.
                    let zero = start;
                    if reduction.is_some() {
                        let zf = bcx.ins().f64const(0.0);
                        let args = [zero, zf, zero, zero].map(BlockArg::Value);
                        bcx.ins().jump(header, &args);
                    } else if vectorizable(body, &access, &invariant) {
                        // Eight lanes a round (two independent f32x4 bodies) while eight remain,
                        // then four, then the scalar tail.
                        let header8 = bcx.create_block();
                        let body8 = bcx.create_block();
                        let vheader = bcx.create_block();
                        let vbody = bcx.create_block();
                        let i8 = bcx.append_block_param(header8, types::I64);
                        let iv = bcx.append_block_param(vheader, types::I64);
                        bcx.ins().jump(header8, &[BlockArg::Value(zero)]);
                        bcx.switch_to_block(header8);
                        let end8 = bcx.ins().iadd_imm_s(i8, 8);
                        let room8 = bcx.ins().icmp(IntCC::SignedLessThanOrEqual, end8, end);
                        bcx.ins().brif(room8, body8, &[], vheader, &[BlockArg::Value(i8)]);
                        bcx.switch_to_block(body8);
                        let i4 = bcx.ins().iadd_imm_s(i8, 4);
                        for at in [i8, i4] {
                            let lanes = emit_vector(
                                &mut bcx,
                                body,
                                &invariant,
                                &vals,
                                &in_ptrs,
                                at,
                                dtype,
                                &fusable_mul,
                                has_fma,
                            )?;
                            store_lanes(&mut bcx, &lanes, out_ptr, &also_ptrs, at)?;
                        }
                        bcx.ins().jump(header8, &[BlockArg::Value(end8)]);
                        bcx.switch_to_block(vheader);
                        let end4 = bcx.ins().iadd_imm_s(iv, 4);
                        let room = bcx.ins().icmp(IntCC::SignedLessThanOrEqual, end4, end);
                        bcx.ins().brif(room, vbody, &[], header, &[BlockArg::Value(iv)]);
                        bcx.switch_to_block(vbody);
                        let lanes = emit_vector(
                            &mut bcx,
                            body,
                            &invariant,
                            &vals,
                            &in_ptrs,
                            iv,
                            dtype,
                            &fusable_mul,
                            has_fma,
                        )?;
                        store_lanes(&mut bcx, &lanes, out_ptr, &also_ptrs, iv)?;
                        bcx.ins().jump(vheader, &[BlockArg::Value(end4)]);
                    } else {
                        bcx.ins().jump(header, &[BlockArg::Value(zero)]);
                    }
                    bcx.switch_to_block(header);
                    let more = bcx.ins().icmp(IntCC::SignedLessThan, i, end);
                    // With a map to apply in place, the part (or row) ends with that call.
                    let leave = if post.is_some() { bcx.create_block() } else { done };
                    bcx.ins().brif(more, body_block, &[], leave, &[]);
                    if let Some(map) = post {
                        bcx.switch_to_block(leave);
                        let f = map_ref(module, bcx.func, map)?;
                        let off = bcx.ins().ishl_imm_s(start, 2);
                        let at = bcx.ins().iadd(out_ptr, off);
                        let count = bcx.ins().isub(end, start);
                        bcx.ins().call(f, &[at, at, count]);
                        bcx.ins().jump(done, &[]);
                    }
                    bcx.switch_to_block(body_block);
                }
                for (j, f) in body.iter().enumerate() {
                    if invariant.get(j).copied().unwrap_or(false) != hoisted {
                        continue;
                    }
                    let get = |k: &usize| {
                        vals.get(*k)
                            .copied()
                            .flatten()
                            .ok_or_else(|| CpuError("a loop value used before it is computed".into()))
                    };
                    let v = match f {
                        Fused::Load(k) => {
                            let p = *in_ptrs.get(*k).ok_or_else(|| CpuError("bad load".into()))?;
                            match access.get(*k) {
                                Some(Access::Scalar(v)) => *v,
                                Some(Access::Same) => {
                                    let off = bcx.ins().ishl_imm_s(i, 2);
                                    let a = bcx.ins().iadd(p, off);
                                    bcx.ins().load(types::F32, flags, a, 0)
                                }
                                Some(Access::Strided(terms)) => {
                                    let at = strided_index(&mut bcx, terms, i);
                                    let off = bcx.ins().ishl_imm_s(at, 2);
                                    let a = bcx.ins().iadd(p, off);
                                    bcx.ins().load(types::F32, flags, a, 0)
                                }
                                None => return Err(CpuError("bad load".into())),
                            }
                        }
                        Fused::Const(c, d) => f32c(&mut bcx, round(*c, *d)),
                        Fused::Size(d, _) => {
                            let v = dim_value(&mut bcx, d, batch)?;
                            bcx.ins().fcvt_from_sint(types::F32, v)
                        }
                        Fused::Unary(u, x) => {
                            let x = get(x)?;
                            let call =
                                |bcx: &mut FunctionBuilder<'_>, name: &str| -> Result<Value, CpuError> {
                                    let r = *refs.get(name).ok_or_else(|| CpuError(format!("no {name}")))?;
                                    let inst = bcx.ins().call(r, &[x]);
                                    bcx.inst_results(inst)
                                        .first()
                                        .copied()
                                        .ok_or_else(|| CpuError("no result".into()))
                                };
                            match u {
                                UnaryOp::Neg => bcx.ins().fneg(x),
                                UnaryOp::Exp => call(&mut bcx, "fluxc_math_exp")?,
                                UnaryOp::Log => call(&mut bcx, "fluxc_math_log")?,
                                UnaryOp::Sin => call(&mut bcx, "fluxc_math_sin")?,
                                UnaryOp::Cos => call(&mut bcx, "fluxc_math_cos")?,
                                UnaryOp::Tanh => call(&mut bcx, "fluxc_math_tanh")?,
                                UnaryOp::Sigmoid => call(&mut bcx, "fluxc_math_sigmoid")?,
                                UnaryOp::Erf => call(&mut bcx, "fluxc_math_erf")?,
                                UnaryOp::ErfInv => call(&mut bcx, "fluxc_math_erfinv")?,
                                UnaryOp::Sqrt => bcx.ins().sqrt(x),
                                UnaryOp::Rsqrt => {
                                    let s = bcx.ins().sqrt(x);
                                    let one = f32c(&mut bcx, 1.0);
                                    bcx.ins().fdiv(one, s)
                                }
                                UnaryOp::Abs => bcx.ins().fabs(x),
                                UnaryOp::Sign => {
                                    let zero = f32c(&mut bcx, 0.0);
                                    let pos = bcx.ins().fcmp(FloatCC::GreaterThan, x, zero);
                                    let neg = bcx.ins().fcmp(FloatCC::LessThan, x, zero);
                                    let one = f32c(&mut bcx, 1.0);
                                    let m1 = f32c(&mut bcx, -1.0);
                                    let n = bcx.ins().select(neg, m1, zero);
                                    bcx.ins().select(pos, one, n)
                                }
                                UnaryOp::Relu => {
                                    let zero = f32c(&mut bcx, 0.0);
                                    let pos = bcx.ins().fcmp(FloatCC::GreaterThan, x, zero);
                                    bcx.ins().select(pos, x, zero)
                                }
                                UnaryOp::Floor => bcx.ins().floor(x),
                                UnaryOp::Not => {
                                    let zero = f32c(&mut bcx, 0.0);
                                    let c = bcx.ins().fcmp(FloatCC::Equal, x, zero);
                                    bool_of(&mut bcx, c)
                                }
                            }
                        }
                        Fused::Binary(op, x, y) => {
                            let (x, y) = (get(x)?, get(y)?);
                            let cmp = |bcx: &mut FunctionBuilder<'_>, cc: FloatCC| {
                                let c = bcx.ins().fcmp(cc, x, y);
                                bool_of(bcx, c)
                            };
                            match op {
                                BinaryOp::Add => bcx.ins().fadd(x, y),
                                BinaryOp::Sub => bcx.ins().fsub(x, y),
                                BinaryOp::Mul => bcx.ins().fmul(x, y),
                                BinaryOp::Div => bcx.ins().fdiv(x, y),
                                BinaryOp::Pow => {
                                    let inst = bcx.ins().call(pow_ref, &[x, y]);
                                    bcx.inst_results(inst)
                                        .first()
                                        .copied()
                                        .ok_or_else(|| CpuError("no result".into()))?
                                }
                                BinaryOp::Max => {
                                    let c = bcx.ins().fcmp(FloatCC::GreaterThanOrEqual, x, y);
                                    bcx.ins().select(c, x, y)
                                }
                                BinaryOp::Min => {
                                    let c = bcx.ins().fcmp(FloatCC::LessThanOrEqual, x, y);
                                    bcx.ins().select(c, x, y)
                                }
                                BinaryOp::Eq => cmp(&mut bcx, FloatCC::Equal),
                                BinaryOp::Ne => cmp(&mut bcx, FloatCC::NotEqual),
                                BinaryOp::Lt => cmp(&mut bcx, FloatCC::LessThan),
                                BinaryOp::Le => cmp(&mut bcx, FloatCC::LessThanOrEqual),
                                BinaryOp::Gt => cmp(&mut bcx, FloatCC::GreaterThan),
                                BinaryOp::Ge => cmp(&mut bcx, FloatCC::GreaterThanOrEqual),
                                BinaryOp::And | BinaryOp::Or => {
                                    let zero = f32c(&mut bcx, 0.0);
                                    let a = bcx.ins().fcmp(FloatCC::NotEqual, x, zero);
                                    let b = bcx.ins().fcmp(FloatCC::NotEqual, y, zero);
                                    let c = if *op == BinaryOp::And {
                                        bcx.ins().band(a, b)
                                    } else {
                                        bcx.ins().bor(a, b)
                                    };
                                    bool_of(&mut bcx, c)
                                }
                            }
                        }
                        Fused::Select(c, x, y) => {
                            let (c, x, y) = (get(c)?, get(x)?, get(y)?);
                            let zero = f32c(&mut bcx, 0.0);
                            let t = bcx.ins().fcmp(FloatCC::NotEqual, c, zero);
                            bcx.ins().select(t, x, y)
                        }
                        Fused::Cast(d, x) => {
                            let x = get(x)?;
                            match d {
                                DType::F32 => x,
                                DType::I32 => bcx.ins().trunc(x),
                                DType::Bool => {
                                    let zero = f32c(&mut bcx, 0.0);
                                    let c = bcx.ins().fcmp(FloatCC::NotEqual, x, zero);
                                    bool_of(&mut bcx, c)
                                }
                            }
                        }
                    };
                    if let Some(slot) = vals.get_mut(j) {
                        *slot = Some(v);
                    }
                }
            }
            let result =
                vals.last().copied().flatten().ok_or_else(|| CpuError("an empty loop body".into()))?;
            let result = if dtype == DType::I32 { bcx.ins().trunc(result) } else { result };
            let next = bcx.ins().iadd_imm_s(i, 1);
            match reduction {
                None => {
                    if let Some(last) = vals.last_mut() {
                        *last = Some(result);
                    }
                    store_lanes(&mut bcx, &vals, out_ptr, &also_ptrs, i)?;
                    bcx.ins().jump(header, &[BlockArg::Value(next)]);
                }
                Some((inner, acc, r, o)) => {
                    // Add the element; at the end of a run, store the total and start the next.
                    let v = bcx.ins().fpromote(types::F64, result);
                    let total = bcx.ins().fadd(acc, v);
                    let r1 = bcx.ins().iadd_imm_s(r, 1);
                    let full = bcx.ins().icmp(IntCC::Equal, r1, inner);
                    let flush = bcx.create_block();
                    let cont = [next, total, r1, o].map(BlockArg::Value);
                    bcx.ins().brif(full, flush, &[], header, &cont);
                    bcx.switch_to_block(flush);
                    let t32 = bcx.ins().fdemote(types::F32, total);
                    let off = bcx.ins().ishl_imm_s(o, 2);
                    let a = bcx.ins().iadd(out_ptr, off);
                    bcx.ins().store(flags, t32, a, 0);
                    let o1 = bcx.ins().iadd_imm_s(o, 1);
                    let zf = bcx.ins().f64const(0.0);
                    let zero = bcx.ins().iconst(types::I64, 0);
                    let restart = [next, zf, zero, o1].map(BlockArg::Value);
                    bcx.ins().jump(header, &restart);
                }
            }

            if let Some((row_header, row_next, r)) = row {
                bcx.switch_to_block(row_next);
                let r1 = bcx.ins().iadd_imm_s(r, 1);
                bcx.ins().jump(row_header, &[BlockArg::Value(r1)]);
            }
        }
        bcx.switch_to_block(exit);
        bcx.ins().return_(&[]);
        bcx.seal_all_blocks();
        bcx.finalize(frontend);
    }
    if let Some(text) = clif {
        // The Cranelift IR as generated (`fluxc build --emit clif`).
        text.push_str(&format!("; kernel {index} ({symbol})\n{}\n", ctx.func.display()));
    }
    module.define_function(id, &mut ctx).map_err(|e| CpuError(format!("compiling kernel {index}: {e:?}")))?;
    module.clear_context(&mut ctx);
    Ok(id)
}

/// Whether a body runs on f32x4 lanes: every read contiguous or a scalar, and every operation
/// one with a vector instruction (math calls only where hoisted out of the loop).
fn vectorizable(body: &[Fused], access: &[Access], invariant: &[bool]) -> bool {
    body.iter().enumerate().all(|(j, f)| {
        if invariant.get(j).copied().unwrap_or(false) {
            return true;
        }
        match f {
            Fused::Load(k) => matches!(access.get(*k), Some(Access::Same | Access::Scalar(_))),
            Fused::Const(..) | Fused::Size(..) | Fused::Select(..) => true,
            Fused::Unary(u, _) => matches!(
                u,
                UnaryOp::Neg
                    | UnaryOp::Sqrt
                    | UnaryOp::Rsqrt
                    | UnaryOp::Abs
                    | UnaryOp::Relu
                    | UnaryOp::Floor
                    | UnaryOp::Not
                    | UnaryOp::Sign
                    | UnaryOp::Exp
                    | UnaryOp::Sigmoid
                    | UnaryOp::Tanh
            ),
            Fused::Binary(op, _, _) => *op != BinaryOp::Pow,
            Fused::Cast(..) => true,
        }
    })
}

fn splat4(bcx: &mut FunctionBuilder<'_>, x: f32) -> Value {
    let s = bcx.ins().f32const(x);
    bcx.ins().splat(types::F32X4, s)
}

/// `c[0] + x * (c[1] + x * (…))` on four lanes (Horner, highest coefficient last), each step
/// one fused multiply-add where the instruction set has it.
fn horner(bcx: &mut FunctionBuilder<'_>, x: Value, coefficients: &[f32], fma: bool) -> Value {
    let mut acc = splat4(bcx, coefficients.last().copied().unwrap_or(0.0));
    for c in coefficients.iter().rev().skip(1) {
        let cv = splat4(bcx, *c);
        acc = if fma {
            bcx.ins().fma(acc, x, cv)
        } else {
            let m = bcx.ins().fmul(acc, x);
            bcx.ins().fadd(m, cv)
        };
    }
    acc
}

/// `x` clamped to `[lo, hi]` on four lanes by compare and select (NaN stays NaN); cheaper than
/// `fmin`/`fmax`, whose NaN rules take several instructions each on x86.
fn clamp4(bcx: &mut FunctionBuilder<'_>, x: Value, lo: f32, hi: f32) -> Value {
    let lanes = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
    let mut x = x;
    for (bound, cc) in [(hi, FloatCC::GreaterThan), (lo, FloatCC::LessThan)] {
        let b = splat4(bcx, bound);
        let out = bcx.ins().fcmp(cc, x, b);
        let out = bcx.ins().bitcast(types::F32X4, lanes, out);
        x = bcx.ins().bitselect(out, b, x);
    }
    x
}

/// e^x on four lanes (Cephes `expf`: x = n·ln 2 + r, a degree-6 polynomial in r, 2^n from the
/// exponent bits; within a few ulp of libm, 0 below the subnormal range, ∞ above, NaN kept).
#[allow(clippy::excessive_precision)] // Cephes' coefficients as published
fn vector_exp(bcx: &mut FunctionBuilder<'_>, x: Value, fma: bool) -> Value {
    let lanes = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
    // ln(f32::MAX) above; below, e^x is under half the smallest subnormal and comes out 0.
    const LOWEST: f32 = -103.972_08;
    let lowest = splat4(bcx, LOWEST);
    let below = bcx.ins().fcmp(FloatCC::LessThan, x, lowest);
    let below = bcx.ins().bitcast(types::F32X4, lanes, below);
    let x = clamp4(bcx, x, LOWEST, 88.722_84);
    let log2e = splat4(bcx, std::f32::consts::LOG2_E);
    let half = splat4(bcx, 0.5);
    let t = bcx.ins().fmul(x, log2e);
    let t = bcx.ins().fadd(t, half);
    let n = bcx.ins().floor(t);
    let c1 = splat4(bcx, 0.693_359_4);
    let c2 = splat4(bcx, -2.121_944_4e-4);
    let a = bcx.ins().fmul(n, c1);
    let r = bcx.ins().fsub(x, a);
    let b = bcx.ins().fmul(n, c2);
    let r = bcx.ins().fsub(r, b);
    let p = horner(
        bcx,
        r,
        &[5.000_000_1e-1, 1.666_666_5e-1, 4.166_579_6e-2, 8.333_452e-3, 1.398_2e-3, 1.987_569_1e-4],
        fma,
    );
    let z = bcx.ins().fmul(r, r);
    let y = bcx.ins().fmul(p, z);
    let y = bcx.ins().fadd(y, r);
    let one = splat4(bcx, 1.0);
    let y = bcx.ins().fadd(y, one);
    // 2^n as 2^(n/2) · 2^(n − n/2), each `(k + 127) << 23` as the bits of an f32, so that n
    // from −150 to 128 stays within normal exponents (subnormal and near-overflow results
    // come out right).
    let half = splat4(bcx, 0.5);
    let n1 = bcx.ins().fmul(n, half);
    let n1 = bcx.ins().floor(n1);
    let n2 = bcx.ins().fsub(n, n1);
    let mut y = y;
    // An integral k (|k| < 2^22) plus 1.5·2^23 is exact, and its bits are 0x4B40_0000 + k: the
    // integer without a (saturating, several-instruction) conversion.
    let magic = splat4(bcx, 12_582_912.0);
    let bias = bcx.ins().iconst(types::I32, 0x4B40_0000 - 127);
    let bias = bcx.ins().splat(types::I32X4, bias);
    for k in [n1, n2] {
        let shifted = bcx.ins().fadd(k, magic);
        let ki = bcx.ins().bitcast(types::I32X4, lanes, shifted);
        let e = bcx.ins().isub(ki, bias);
        let e = bcx.ins().ishl_imm_s(e, 23);
        let pow = bcx.ins().bitcast(types::F32X4, lanes, e);
        y = bcx.ins().fmul(y, pow);
    }
    let zero = splat4(bcx, 0.0);
    bcx.ins().bitselect(below, zero, y)
}

/// tanh on four lanes (Cephes `tanhf`): an odd polynomial below |x| = 0.625, else
/// sign(x)·(1 − 2 / (e^{2|x|} + 1)).
#[allow(clippy::excessive_precision)] // Cephes' coefficients as published
fn vector_tanh(bcx: &mut FunctionBuilder<'_>, x: Value, fma: bool) -> Value {
    let lanes = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
    let ax = bcx.ins().fabs(x);
    let z = bcx.ins().fmul(x, x);
    let p = horner(
        bcx,
        z,
        &[-3.333_328_2e-1, 1.333_144_2e-1, -5.373_971_6e-2, 2.063_908_9e-2, -5.704_988_7e-3],
        fma,
    );
    let p = bcx.ins().fmul(p, z);
    let p = bcx.ins().fmul(p, x);
    let small = bcx.ins().fadd(p, x);
    let two = splat4(bcx, 2.0);
    let one = splat4(bcx, 1.0);
    let t = bcx.ins().fmul(ax, two);
    let e = vector_exp(bcx, t, fma);
    let d = bcx.ins().fadd(e, one);
    let q = bcx.ins().fdiv(two, d);
    let big = bcx.ins().fsub(one, q);
    // The sign of x on the large branch.
    let neg = bcx.ins().fneg(big);
    let zero = splat4(bcx, 0.0);
    let is_neg = bcx.ins().fcmp(FloatCC::LessThan, x, zero);
    let is_neg = bcx.ins().bitcast(types::F32X4, lanes, is_neg);
    let big = bcx.ins().bitselect(is_neg, neg, big);
    let limit = splat4(bcx, 0.625);
    let is_small = bcx.ins().fcmp(FloatCC::LessThan, ax, limit);
    let is_small = bcx.ins().bitcast(types::F32X4, lanes, is_small);
    bcx.ins().bitselect(is_small, small, big)
}

/// Stores the body's values at element `at` (four lanes or one element): the loop's value (the
/// last) to `out`, and each further output's value to its buffer.
fn store_lanes(
    bcx: &mut FunctionBuilder<'_>,
    lanes: &[Option<Value>],
    out: Value,
    also: &[(Value, usize)],
    at: Value,
) -> Result<(), CpuError> {
    let flags = MemFlagsData::trusted();
    let off = bcx.ins().ishl_imm_s(at, 2);
    let last = lanes.last().copied().flatten().ok_or_else(|| CpuError("an empty loop body".into()))?;
    let a = bcx.ins().iadd(out, off);
    bcx.ins().store(flags, last, a, 0);
    for (p, j) in also {
        let v = lanes.get(*j).copied().flatten().ok_or_else(|| CpuError("a missing output".into()))?;
        let a = bcx.ins().iadd(*p, off);
        bcx.ins().store(flags, v, a, 0);
    }
    Ok(())
}

/// The loop body on four lanes at element `iv`; returns every body value's lanes (the last is
/// the loop's own output).
#[allow(clippy::too_many_arguments)]
fn emit_vector(
    bcx: &mut FunctionBuilder<'_>,
    body: &[Fused],
    invariant: &[bool],
    scalars: &[Option<Value>],
    in_ptrs: &[Value],
    iv: Value,
    dtype: DType,
    fusable_mul: &[bool],
    fma: bool,
) -> Result<Vec<Option<Value>>, CpuError> {
    let v4 = types::F32X4;
    let flags = MemFlagsData::trusted();
    let lanes = MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little);
    let mut vals: Vec<Option<Value>> = vec![None; body.len()];
    let splat = |bcx: &mut FunctionBuilder<'_>, x: f32| {
        let s = bcx.ins().f32const(x);
        bcx.ins().splat(v4, s)
    };
    // A lane mask (all ones where true) as 1.0 / 0.0.
    let as_bool = |bcx: &mut FunctionBuilder<'_>, mask: Value| {
        let m = bcx.ins().bitcast(v4, lanes, mask);
        let one = splat(bcx, 1.0);
        let zero = splat(bcx, 0.0);
        bcx.ins().bitselect(m, one, zero)
    };
    for (j, f) in body.iter().enumerate() {
        let get = |k: &usize| {
            vals.get(*k)
                .copied()
                .flatten()
                .ok_or_else(|| CpuError("a lane value used before it is computed".into()))
        };
        let v = if invariant.get(j).copied().unwrap_or(false) {
            let s = scalars
                .get(j)
                .copied()
                .flatten()
                .ok_or_else(|| CpuError("a hoisted value is missing".into()))?;
            bcx.ins().splat(v4, s)
        } else {
            match f {
                Fused::Load(k) => {
                    let p = *in_ptrs.get(*k).ok_or_else(|| CpuError("bad load".into()))?;
                    let off = bcx.ins().ishl_imm_s(iv, 2);
                    let a = bcx.ins().iadd(p, off);
                    bcx.ins().load(v4, flags, a, 0)
                }
                Fused::Const(..) | Fused::Size(..) => {
                    return Err(CpuError("a constant that was not hoisted".into()));
                }
                Fused::Unary(u, x) => {
                    let x = get(x)?;
                    match u {
                        UnaryOp::Neg => bcx.ins().fneg(x),
                        UnaryOp::Sqrt => bcx.ins().sqrt(x),
                        UnaryOp::Rsqrt => {
                            let s = bcx.ins().sqrt(x);
                            let one = splat(bcx, 1.0);
                            bcx.ins().fdiv(one, s)
                        }
                        UnaryOp::Abs => bcx.ins().fabs(x),
                        UnaryOp::Relu => {
                            let zero = splat(bcx, 0.0);
                            let pos = bcx.ins().fcmp(FloatCC::GreaterThan, x, zero);
                            let m = bcx.ins().bitcast(v4, lanes, pos);
                            bcx.ins().bitselect(m, x, zero)
                        }
                        UnaryOp::Floor => bcx.ins().floor(x),
                        UnaryOp::Not => {
                            let zero = splat(bcx, 0.0);
                            let c = bcx.ins().fcmp(FloatCC::Equal, x, zero);
                            as_bool(bcx, c)
                        }
                        UnaryOp::Sign => {
                            let zero = splat(bcx, 0.0);
                            let pos = bcx.ins().fcmp(FloatCC::GreaterThan, x, zero);
                            let neg = bcx.ins().fcmp(FloatCC::LessThan, x, zero);
                            let p = as_bool(bcx, pos);
                            let n = as_bool(bcx, neg);
                            bcx.ins().fsub(p, n)
                        }
                        UnaryOp::Exp => vector_exp(bcx, x, fma),
                        UnaryOp::Sigmoid => {
                            // With e = e^-|x|: 1 / (1 + e) for x ≥ 0, e / (1 + e) below (no
                            // overflow of e^-x, and tiny results keep their digits).
                            let ax = bcx.ins().fabs(x);
                            let nx = bcx.ins().fneg(ax);
                            let e = vector_exp(bcx, nx, fma);
                            let one = splat(bcx, 1.0);
                            let d = bcx.ins().fadd(one, e);
                            let zero = splat(bcx, 0.0);
                            let below = bcx.ins().fcmp(FloatCC::LessThan, x, zero);
                            let below = bcx.ins().bitcast(v4, lanes, below);
                            let numerator = bcx.ins().bitselect(below, e, one);
                            bcx.ins().fdiv(numerator, d)
                        }
                        UnaryOp::Tanh => vector_tanh(bcx, x, fma),
                        _ => return Err(CpuError("not a lane operation".into())),
                    }
                }
                Fused::Binary(op, xi, yi) => {
                    let (x, y) = (get(xi)?, get(yi)?);
                    let cmp = |bcx: &mut FunctionBuilder<'_>, cc: FloatCC| {
                        let c = bcx.ins().fcmp(cc, x, y);
                        as_bool(bcx, c)
                    };
                    // `a*b + c` as one fused multiply-add (the product's own instruction is
                    // then dead).
                    let product = |k: &usize| match body.get(*k) {
                        Some(Fused::Binary(BinaryOp::Mul, a, b)) if fusable_mul.get(*k) == Some(&true) => {
                            Some((*a, *b))
                        }
                        _ => None,
                    };
                    let fused = match op {
                        BinaryOp::Add => product(xi).map(|p| (p, y)).or_else(|| product(yi).map(|p| (p, x))),
                        _ => None,
                    };
                    if let Some(((a, b), c)) = fused {
                        let (a, b) = (get(&a)?, get(&b)?);
                        let v = bcx.ins().fma(a, b, c);
                        if let Some(slot) = vals.get_mut(j) {
                            *slot = Some(v);
                        }
                        continue;
                    }
                    match op {
                        BinaryOp::Add => bcx.ins().fadd(x, y),
                        BinaryOp::Sub => bcx.ins().fsub(x, y),
                        BinaryOp::Mul => bcx.ins().fmul(x, y),
                        BinaryOp::Div => bcx.ins().fdiv(x, y),
                        BinaryOp::Max | BinaryOp::Min => {
                            let cc = if *op == BinaryOp::Max {
                                FloatCC::GreaterThanOrEqual
                            } else {
                                FloatCC::LessThanOrEqual
                            };
                            let c = bcx.ins().fcmp(cc, x, y);
                            let m = bcx.ins().bitcast(v4, lanes, c);
                            bcx.ins().bitselect(m, x, y)
                        }
                        BinaryOp::Eq => cmp(bcx, FloatCC::Equal),
                        BinaryOp::Ne => cmp(bcx, FloatCC::NotEqual),
                        BinaryOp::Lt => cmp(bcx, FloatCC::LessThan),
                        BinaryOp::Le => cmp(bcx, FloatCC::LessThanOrEqual),
                        BinaryOp::Gt => cmp(bcx, FloatCC::GreaterThan),
                        BinaryOp::Ge => cmp(bcx, FloatCC::GreaterThanOrEqual),
                        BinaryOp::And | BinaryOp::Or => {
                            let zero = splat(bcx, 0.0);
                            let a = bcx.ins().fcmp(FloatCC::NotEqual, x, zero);
                            let b = bcx.ins().fcmp(FloatCC::NotEqual, y, zero);
                            let c =
                                if *op == BinaryOp::And { bcx.ins().band(a, b) } else { bcx.ins().bor(a, b) };
                            as_bool(bcx, c)
                        }
                        BinaryOp::Pow => return Err(CpuError("not a lane operation".into())),
                    }
                }
                Fused::Select(c, x, y) => {
                    let (c, x, y) = (get(c)?, get(x)?, get(y)?);
                    let zero = splat(bcx, 0.0);
                    let t = bcx.ins().fcmp(FloatCC::NotEqual, c, zero);
                    let m = bcx.ins().bitcast(v4, lanes, t);
                    bcx.ins().bitselect(m, x, y)
                }
                Fused::Cast(d, x) => {
                    let x = get(x)?;
                    match d {
                        DType::F32 => x,
                        DType::I32 => bcx.ins().trunc(x),
                        DType::Bool => {
                            let zero = splat(bcx, 0.0);
                            let c = bcx.ins().fcmp(FloatCC::NotEqual, x, zero);
                            as_bool(bcx, c)
                        }
                    }
                }
            }
        };
        if let Some(slot) = vals.get_mut(j) {
            *slot = Some(v);
        }
    }
    let result = vals.last().copied().flatten().ok_or_else(|| CpuError("an empty loop body".into()))?;
    let result = if dtype == DType::I32 { bcx.ins().trunc(result) } else { result };
    if let Some(last) = vals.last_mut() {
        *last = Some(result);
    }
    Ok(vals)
}

fn round(v: f64, d: DType) -> f32 {
    match d {
        DType::I32 => v.trunc() as f32,
        _ => v as f32,
    }
}
