//! A plain executor of KIR in f32, on the planned slots: what compiled code will do, kernel by
//! kernel, with buffers sharing slots exactly as the plan says. Tests run it against the f64
//! interpreter, which checks the fusion and the memory plan. Whole-buffer ops reuse the
//! interpreter's kernels.

use super::{Fused, Kernel, Kir, Storage};
use crate::interp::{Array, Run, binary, concrete, eval, unary};
use crate::ir::{DType, Graph, Op};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecError(pub String);

fn fail<T>(m: impl Into<String>) -> Result<T, ExecError> {
    Err(ExecError(m.into()))
}

fn round(v: f64, d: DType) -> f64 {
    match d {
        DType::F32 => f64::from(v as f32),
        _ => v,
    }
}

/// Runs `kir` on `inputs` and `params` (f64 arrays, rounded to f32 on the way in); returns the
/// outputs by name.
pub fn execute(
    kir: &Kir,
    inputs: &[Array],
    params: &[Array],
    run: &Run,
) -> Result<Vec<(String, Array)>, ExecError> {
    let b = run.batch;
    let size = |(f, r): (i64, i64)| usize::try_from(f + r * b).unwrap_or(0);
    let mut slots: Vec<Vec<f64>> = kir.slots.iter().map(|s| vec![0.0; size(*s)]).collect();
    let external = |st: &Storage| -> Option<&Array> {
        match st {
            Storage::Input(k) => inputs.get(*k),
            Storage::Param(k) => params.get(*k),
            Storage::Slot(_) => None,
        }
    };
    // Reads a whole buffer as an array of the given shape.
    let read = |slots: &Vec<Vec<f64>>, buf: super::BufId, shape: &[usize]| -> Result<Array, ExecError> {
        let info = kir.buffers.get(buf.0 as usize).ok_or_else(|| ExecError("no buffer".into()))?;
        let n: usize = shape.iter().product();
        let data: Vec<f64> = match &info.storage {
            Storage::Slot(s) => {
                let at = count_at(&info.at, b)?;
                slots
                    .get(*s)
                    .and_then(|v| v.get(at..at + n))
                    .ok_or_else(|| ExecError(format!("slot {s} too small")))?
                    .to_vec()
            }
            st => external(st)
                .map(|a| a.data.iter().map(|v| round(*v, info.dtype)).collect())
                .ok_or_else(|| ExecError("missing external buffer".into()))?,
        };
        if data.len() != n {
            return fail(format!("buffer b{} holds {} values, {n} expected", buf.0, data.len()));
        }
        Ok(Array::new(shape.to_vec(), data))
    };
    for kern in &kir.kernels {
        match kern {
            Kernel::Loop { out, shape, dtype, inputs: ins, body, sum, also, out_rows } => {
                let shape = concrete(shape, b).map_err(|e| ExecError(e.0))?;
                let srcs: Vec<Array> = ins
                    .iter()
                    .map(|x| {
                        let s = concrete(&x.shape, b).map_err(|e| ExecError(e.0))?;
                        let Some(view) = &x.view else { return read(&slots, x.buf, &s) };
                        // A view: gather from the whole buffer through its strides.
                        let size = |d: &crate::dims::Dim| count_at(d, b);
                        let info =
                            kir.buffers.get(x.buf.0 as usize).ok_or_else(|| ExecError("no buffer".into()))?;
                        let all = read(&slots, x.buf, &[size(&info.elements)?])?;
                        let strides = view.strides.iter().map(size).collect::<Result<Vec<_>, _>>()?;
                        let at = size(&view.at)?;
                        let n: usize = s.iter().product();
                        let mut idx = vec![0usize; s.len()];
                        let mut data = Vec::with_capacity(n);
                        for _ in 0..n {
                            let e = at + idx.iter().zip(&strides).map(|(i, st)| i * st).sum::<usize>();
                            data.push(
                                *all.data
                                    .get(e)
                                    .ok_or_else(|| ExecError("a view reads past its buffer".into()))?,
                            );
                            for (k, x) in idx.iter_mut().enumerate().rev() {
                                *x += 1;
                                if *x < s.get(k).copied().unwrap_or(1) {
                                    break;
                                }
                                *x = 0;
                            }
                        }
                        Ok(Array::new(s, data))
                    })
                    .collect::<Result<_, _>>()?;
                let n: usize = shape.iter().product();
                let mut result = Vec::with_capacity(n);
                let mut idx = vec![0usize; shape.len()];
                let mut vals = vec![0.0f64; body.len()];
                let mut riders: Vec<Vec<f64>> = also.iter().map(|_| Vec::with_capacity(n)).collect();
                for _ in 0..n {
                    for (j, f) in body.iter().enumerate() {
                        let v = match f {
                            Fused::Load(k) => {
                                let a = srcs.get(*k).ok_or_else(|| ExecError("bad load".into()))?;
                                // numpy broadcasting: align from the right, size-1 axes repeat.
                                let off = shape.len() - a.shape.len();
                                let mut at = 0;
                                for (d, extent) in a.shape.iter().enumerate() {
                                    let x =
                                        if *extent == 1 { 0 } else { idx.get(off + d).copied().unwrap_or(0) };
                                    at = at * extent + x;
                                }
                                a.data.get(at).copied().unwrap_or(0.0)
                            }
                            Fused::Const(c, d) => round(*c, *d),
                            Fused::Size(d, t) => round(
                                concrete(std::slice::from_ref(d), b)
                                    .map_err(|e| ExecError(e.0))?
                                    .first()
                                    .copied()
                                    .unwrap_or(0) as f64,
                                *t,
                            ),
                            Fused::Unary(u, x) => unary(*u, vals.get(*x).copied().unwrap_or(0.0)),
                            Fused::Binary(op, x, y) => binary(
                                *op,
                                vals.get(*x).copied().unwrap_or(0.0),
                                vals.get(*y).copied().unwrap_or(0.0),
                            ),
                            Fused::Select(c, x, y) => {
                                if vals.get(*c).copied().unwrap_or(0.0) != 0.0 {
                                    vals.get(*x).copied().unwrap_or(0.0)
                                } else {
                                    vals.get(*y).copied().unwrap_or(0.0)
                                }
                            }
                            Fused::Cast(d, x) => {
                                let v = vals.get(*x).copied().unwrap_or(0.0);
                                match d {
                                    DType::F32 => v,
                                    DType::I32 => v.trunc(),
                                    DType::Bool => f64::from(u8::from(v != 0.0)),
                                }
                            }
                        };
                        if let Some(slot) = vals.get_mut(j) {
                            // Every intermediate rounds to f32, as compiled code computes.
                            *slot = if matches!(f, Fused::Cast(..)) { v } else { f32_round(v) };
                        }
                    }
                    result.push(round(vals.last().copied().unwrap_or(0.0), *dtype));
                    for (rider, (_, j)) in riders.iter_mut().zip(also) {
                        rider.push(vals.get(*j).copied().unwrap_or(0.0));
                    }
                    for k in (0..shape.len()).rev() {
                        if let Some(x) = idx.get_mut(k) {
                            *x += 1;
                            if *x < shape.get(k).copied().unwrap_or(0) {
                                break;
                            }
                            *x = 0;
                        }
                    }
                }
                let result = match sum {
                    None => result,
                    Some(kept) => {
                        // The sum over the trailing axes, accumulated in f64, rounded once.
                        let inner: usize = shape.get(*kept..).unwrap_or_default().iter().product();
                        result
                            .chunks(inner.max(1))
                            .map(|run| round(f32_round(run.iter().sum::<f64>()), *dtype))
                            .collect()
                    }
                };
                // Rows of the output's trailing axes from `axis`, `stride` apart.
                let rows = match out_rows {
                    Some((axis, stride)) => {
                        Some((shape.get(*axis..).unwrap_or_default().iter().product(), count_at(stride, b)?))
                    }
                    None => None,
                };
                store(&mut slots, kir, b, *out, &result, rows)?;
                for (rider, (buf, _)) in riders.iter().zip(also) {
                    store(&mut slots, kir, b, *buf, rider, None)?;
                }
            }
            Kernel::Gemm { a, b: bb, out, ty } => {
                // The reference: materialise the transposes, then the product.
                let mut g = Graph::default();
                let mut arrays = Vec::new();
                let mut ids = Vec::new();
                for (buf, t, trans) in [a, bb] {
                    let s = concrete(&t.shape, b).map_err(|e| ExecError(e.0))?;
                    arrays.push(read(&slots, *buf, &s)?);
                    let mut v = g.input("a", t.clone()).map_err(|e| ExecError(e.0))?;
                    if *trans {
                        let r = t.rank();
                        let mut perm: Vec<usize> = (0..r).collect();
                        perm.swap(r - 1, r - 2);
                        v = g.push(Op::Transpose { perm }, &[v], None).map_err(|e| ExecError(e.0))?;
                    }
                    ids.push(v);
                }
                let r = g.push(Op::MatMul, &ids, None).map_err(|e| ExecError(e.0))?;
                let vals = eval(&g, &arrays, &[], run).map_err(|e| ExecError(e.0))?;
                let v = vals.get(r.index()).ok_or_else(|| ExecError("no result".into()))?;
                let data: Vec<f64> = v.data.iter().map(|x| round(*x, ty.dtype)).collect();
                store(&mut slots, kir, b, *out, &data, None)?;
            }
            Kernel::Call { op, args, out, ty } => {
                let mut arrays = Vec::new();
                for (buf, t) in args {
                    let s = concrete(&t.shape, b).map_err(|e| ExecError(e.0))?;
                    arrays.push(read(&slots, *buf, &s)?);
                }
                let v = run_call(op, args, arrays, ty, run)?;
                store(&mut slots, kir, b, *out, &v.data, None)?;
            }
        }
    }
    let mut outs = Vec::new();
    for (name, buf, t) in &kir.outputs {
        let s = concrete(&t.shape, b).map_err(|e| ExecError(e.0))?;
        outs.push((name.clone(), read(&slots, *buf, &s)?));
    }
    Ok(outs)
}

/// Runs one whole-buffer op on its operands' values (the interpreter's kernel), rounding the
/// result to the op's element type.
pub fn run_call(
    op: &Op,
    args: &[(super::BufId, crate::ir::TensorTy)],
    arrays: Vec<Array>,
    ty: &crate::ir::TensorTy,
    run: &Run,
) -> Result<Array, ExecError> {
    let mut g = Graph::default();
    let mut ids = Vec::new();
    for (_, t) in args {
        ids.push(g.input("a", t.clone()).map_err(|e| ExecError(e.0))?);
    }
    let declared = match op {
        Op::Reshape
        | Op::Broadcast
        | Op::ConvTranspose(_)
        | Op::ConvWeightGrad(_)
        | Op::Random { .. }
        | Op::Iota
        | Op::Input(_)
        | Op::Param(_)
        | Op::Const(_)
        | Op::Size(_) => Some(ty.clone()),
        _ => None,
    };
    let r = g.push(op.clone(), &ids, declared).map_err(|e| ExecError(e.0))?;
    let vals = eval(&g, &arrays, &[], run).map_err(|e| ExecError(e.0))?;
    let v = vals.get(r.index()).ok_or_else(|| ExecError("no result".into()))?;
    Ok(Array::new(v.shape.clone(), v.data.iter().map(|x| round(*x, ty.dtype)).collect()))
}

/// A count of elements (a size, an offset, a stride) at this batch.
fn count_at(d: &crate::dims::Dim, batch: i64) -> Result<usize, ExecError> {
    let (f, r) = super::linear_in_b(d).map_err(|e| ExecError(e.0))?;
    usize::try_from(f + r * batch).map_err(|_| ExecError(format!("{d} is negative at batch {batch}")))
}

fn f32_round(v: f64) -> f64 {
    f64::from(v as f32)
}

fn store(
    slots: &mut [Vec<f64>],
    kir: &Kir,
    batch: i64,
    out: super::BufId,
    data: &[f64],
    rows: Option<(usize, usize)>,
) -> Result<(), ExecError> {
    let info = kir.buffers.get(out.0 as usize).ok_or_else(|| ExecError("no buffer".into()))?;
    let Storage::Slot(s) = info.storage else { return fail("a kernel writes an external buffer") };
    let at = count_at(&info.at, batch)?;
    let slot = slots.get_mut(s).ok_or_else(|| ExecError(format!("no slot {s}")))?;
    // `(row length, stride)`: an output stored in rows; otherwise one contiguous run.
    let (row, stride) = rows.unwrap_or((data.len(), data.len()));
    if at > slot.len() {
        return fail(format!("slot {s} holds {} values, written at {at}", slot.len()));
    }
    for (r, values) in data.chunks(row.max(1)).enumerate() {
        let start = at + r * stride;
        match slot.get_mut(start..start + values.len()) {
            Some(dst) => dst.copy_from_slice(values),
            None => {
                return fail(format!(
                    "slot {s} holds {} values, {} written at {start}",
                    slot.len(),
                    values.len()
                ));
            }
        }
    }
    Ok(())
}
