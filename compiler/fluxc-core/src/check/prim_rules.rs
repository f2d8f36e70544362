//! The typing rule of each primitive (§6, §10.6, §12.12).

use fluxc_syntax::{Code, Label, Span};

use super::call::{ArgV, GenV, PSpec, spec};
use super::prims::Prim;
use super::ty::{Callee, Elem, FnVal, LayerVal, Sh, Shape, Ty, product, show_dim, tensor_to_string};
use super::{Checker, Ctx, Env, Witness};
use crate::dims::Dim;

type Slots = Vec<Option<usize>>;

impl<'a> Checker<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn call_prim(
        &mut self,
        env: &mut Env,
        p: Prim,
        span: Span,
        callee_span: Span,
        gens: Option<&[GenV]>,
        args: &[ArgV<'_>],
        hint: Option<Ty>,
    ) -> Ty {
        if env.elementwise_only && !p.is_elementwise() && p.effect() == super::ty::Effect::Pure {
            let two_arg_minmax =
                matches!(p, Prim::Max | Prim::Min) && args.iter().filter(|a| a.name.is_none()).count() == 2;
            if !two_arg_minmax {
                self.not_elementwise(callee_span, &format!("`{}`", p.name()));
            }
        }
        let w = Witness { span: callee_span, callee: Callee::Prim(p), name: p.name().to_owned() };
        self.apply_effect(env, p.effect(), w);
        if p.is_layer() {
            return self.builtin_layer(env, p, span, gens, args);
        }
        if p.is_optimizer_wrapper() {
            return self.optimizer_wrapper(env, p, span, args);
        }
        let what = format!("`{}`", p.name());
        let takes_shape = matches!(
            p,
            Prim::Zeros
                | Prim::Ones
                | Prim::Full
                | Prim::Randn
                | Prim::RandUniform
                | Prim::RandNormal
                | Prim::Reshape
                | Prim::Broadcast
                | Prim::Orthogonal
                | Prim::TruncatedNormal
                | Prim::Arange
                | Prim::Load
        );
        if !takes_shape && let Some(g) = gens.and_then(|g| g.first()) {
            self.error(Code::E0303, g.span(), format!("{what} takes no `[…]` arguments")).primary.message =
                "unexpected".into();
            return Ty::Error;
        }
        let shape_gen = |c: &mut Self| -> Option<Option<Shape>> {
            let Some(g) = gens else { return Some(None) };
            let mut out = Vec::new();
            for x in g {
                match x {
                    GenV::Dim(d, sp) => {
                        if d.as_constant().is_some_and(|v| v < 1) {
                            c.error(Code::E0301, *sp, "a dimension must be at least 1").primary.message =
                                format!("this is {}", show_dim(d));
                            return None;
                        }
                        out.push(Sh::Dim(d.clone()));
                    }
                    GenV::Shape(s, _) => out.extend(s.iter().cloned()),
                    GenV::Type(Ty::Error, _) => return None,
                    GenV::Type(_, sp) => {
                        c.error(Code::E0302, *sp, "expected a dimension").primary.message = "a type".into();
                        return None;
                    }
                }
            }
            Some(Some(out))
        };
        // The shape of a creation function: explicit, else an initialiser's declared type (§10.4).
        let creation_shape = |c: &mut Self| -> Option<Shape> {
            match shape_gen(c)? {
                Some(s) => Some(s),
                None => {
                    match &hint {
                        Some(Ty::Tensor(_, s)) => Some(s.clone()),
                        _ => {
                            let d = c.error(Code::E0304, span, format!("cannot infer the shape of {what}"));
                            d.primary.message = "give the dimensions explicitly".into();
                            d.help = Some(format!("write `{}[D1, D2, …](…)`", p.name()));
                            d.notes.push("only a `param` or `state` initialiser takes its shape from the declared type".into());
                            None
                        }
                    }
                }
            }
        };
        let f32_scalar = Ty::scalar(Elem::F32);
        match p {
            Prim::Zeros | Prim::Ones => {
                self.bind_args(&[], args, span, &what);
                let Some(s) = creation_shape(self) else { return Ty::Error };
                let elem = match &hint {
                    Some(Ty::Tensor(e, _)) => *e,
                    _ => Elem::F32,
                };
                Ty::Tensor(elem, s)
            }
            Prim::Full => {
                let Some(slots) = self.bind_args(&spec(&[("v", true)]), args, span, &what) else {
                    return Ty::Error;
                };
                self.scalar_args(args, &slots, Elem::F32);
                let Some(s) = creation_shape(self) else { return Ty::Error };
                Ty::f32s(s)
            }
            Prim::Randn => {
                let Some(slots) = self.bind_args(&spec(&[("seed", true)]), args, span, &what) else {
                    return Ty::Error;
                };
                if let Some(a) = slot(args, &slots, 0)
                    && !matches!(a.ty, Ty::Dim(_) | Ty::Error)
                {
                    self.error(Code::E0302, a.span, "`seed` must be an integer").primary.message =
                        "not an integer".into();
                }
                let Some(s) = creation_shape(self) else { return Ty::Error };
                Ty::f32s(s)
            }
            Prim::RandUniform | Prim::RandNormal => {
                let names = if p == Prim::RandUniform {
                    [("lo", true), ("hi", true)]
                } else {
                    [("mean", true), ("std", true)]
                };
                let Some(slots) = self.bind_args(&spec(&names), args, span, &what) else { return Ty::Error };
                self.scalar_args(args, &slots, Elem::F32);
                let Some(s) = creation_shape(self) else { return Ty::Error };
                Ty::f32s(s)
            }
            Prim::Orthogonal | Prim::TruncatedNormal => {
                let names: &[(&str, bool)] = if p == Prim::Orthogonal {
                    &[("gain", false)]
                } else {
                    &[("mean", false), ("std", false), ("lo", false), ("hi", false)]
                };
                let Some(slots) = self.bind_args(&spec(names), args, span, &what) else { return Ty::Error };
                self.scalar_args(args, &slots, Elem::F32);
                let Some(s) = creation_shape(self) else { return Ty::Error };
                if p == Prim::Orthogonal && s.iter().filter(|x| matches!(x, Sh::Dim(_))).count() < 2 {
                    self.error(Code::E0301, span, "`orthogonal` needs at least two dimensions")
                        .primary
                        .message = format!("shape [{}]", super::ty::shape_to_string(&s));
                    return Ty::Error;
                }
                Ty::f32s(s)
            }
            Prim::ZerosLike | Prim::OnesLike => {
                let Some(slots) = self.bind_args(&spec(&[("x", true)]), args, span, &what) else {
                    return Ty::Error;
                };
                let Some((e, s)) = self.tensor_slot(args, &slots, 0) else { return Ty::Error };
                Ty::Tensor(e, s)
            }
            Prim::Arange => {
                self.bind_args(&[], args, span, &what);
                match shape_gen(self) {
                    Some(Some(s)) if s.len() == 1 && matches!(s.first(), Some(Sh::Dim(_))) => {
                        Ty::Tensor(Elem::I32, s)
                    }
                    Some(Some(_)) => {
                        self.error(Code::E0303, span, "`arange` takes one dimension: `arange[N]()`")
                            .primary
                            .message = "wrong `[…]` arguments".into();
                        Ty::Error
                    }
                    Some(None) => {
                        let d = self.error(Code::E0304, span, "cannot infer `N` for `arange`");
                        d.primary.message = "give the length explicitly".into();
                        d.help = Some("write `arange[N]()`".into());
                        Ty::Error
                    }
                    None => Ty::Error,
                }
            }
            Prim::Onehot => {
                let Some(slots) = self.bind_args(&spec(&[("labels", true), ("n", true)]), args, span, &what)
                else {
                    return Ty::Error;
                };
                let Some((e, s)) = self.tensor_slot(args, &slots, 0) else { return Ty::Error };
                if e != Elem::I32 {
                    if let Some(a) = slot(args, &slots, 0) {
                        self.error(
                            Code::E0302,
                            a.span,
                            format!("`onehot` takes i32 labels, found {}", tensor_to_string(e, &s)),
                        )
                        .primary
                        .message = "not i32".into();
                    }
                    return Ty::Error;
                }
                let Some(n) = self.dim_slot(args, &slots, 1) else { return Ty::Error };
                let mut out = s;
                out.push(Sh::Dim(n));
                Ty::f32s(out)
            }
            _ if p.is_unary_elementwise() => {
                let Some(slots) = self.bind_args(&spec(&[("x", true)]), args, span, &what) else {
                    return Ty::Error;
                };
                let Some((e, s)) = self.tensor_slot(args, &slots, 0) else { return Ty::Error };
                let dim_arg = slot(args, &slots, 0).is_some_and(|a| matches!(a.ty, Ty::Dim(_)));
                if e != Elem::F32 && !dim_arg && !(matches!(p, Prim::Abs | Prim::Sign) && e == Elem::I32) {
                    if let Some(a) = slot(args, &slots, 0) {
                        self.error(
                            Code::E0302,
                            a.span,
                            format!("{what} takes f32, found {}", tensor_to_string(e, &s)),
                        )
                        .primary
                        .message = format!("this is {}", tensor_to_string(e, &s));
                    }
                    return Ty::Error;
                }
                Ty::Tensor(if dim_arg { Elem::F32 } else { e }, s)
            }
            Prim::Pow | Prim::Clamp | Prim::Where => {
                let names: &[(&str, bool)] = match p {
                    Prim::Pow => &[("x", true), ("y", true)],
                    Prim::Clamp => &[("x", true), ("lo", true), ("hi", true)],
                    _ => &[("c", true), ("a", true), ("b", true)],
                };
                let Some(slots) = self.bind_args(&spec(names), args, span, &what) else { return Ty::Error };
                self.elementwise(args, &slots, p == Prim::Where, &what)
            }
            Prim::Max | Prim::Min => {
                let Some(slots) =
                    self.bind_args(&spec(&[("x", true), ("y", false), ("axis", false)]), args, span, &what)
                else {
                    return Ty::Error;
                };
                if slots.get(1).copied().flatten().is_some() {
                    if let Some(a) = slot(args, &slots, 2) {
                        self.error(
                            Code::E0303,
                            a.span,
                            format!("two-argument {what} is elementwise and takes no `axis`"),
                        )
                        .primary
                        .message = "unexpected".into();
                        return Ty::Error;
                    }
                    return self.elementwise(args, &slots, false, &what);
                }
                let reduce_slots = vec![slots.first().copied().flatten(), slots.get(2).copied().flatten()];
                self.reduction(args, &reduce_slots, None)
            }
            Prim::Sum | Prim::Mean | Prim::Prod | Prim::Logsumexp | Prim::Argmax => {
                let Some(slots) = self.bind_args(&spec(&[("x", true), ("axis", false)]), args, span, &what)
                else {
                    return Ty::Error;
                };
                let out_elem = match p {
                    Prim::Argmax => Some(Elem::I32),
                    Prim::Mean | Prim::Logsumexp => Some(Elem::F32),
                    _ => None,
                };
                self.reduction(args, &slots, out_elem)
            }
            Prim::Reshape => {
                let Some(slots) = self.bind_args(&spec(&[("x", true)]), args, span, &what) else {
                    return Ty::Error;
                };
                let Some((e, s)) = self.tensor_slot(args, &slots, 0) else { return Ty::Error };
                let target = match shape_gen(self) {
                    Some(Some(t)) => t,
                    Some(None) => {
                        let d = self.error(Code::E0304, span, "`reshape` needs the new shape");
                        d.primary.message = "give the dimensions explicitly".into();
                        d.help = Some("write `reshape[D1, D2, …](x)`".into());
                        return Ty::Error;
                    }
                    None => return Ty::Error,
                };
                let (Ok(a), Ok(b)) = (product(&s), product(&target)) else { return self.overflow(span) };
                let arg_span = slot(args, &slots, 0).map_or(span, |a| a.span);
                let msg = format!(
                    "reshape from {} to {}: element counts {} and {} differ",
                    tensor_to_string(e, &s),
                    tensor_to_string(e, &target),
                    show_dim(&a),
                    show_dim(&b)
                );
                match super::expr::prove_eq(&a, &b) {
                    super::expr::Proof::Yes => {}
                    super::expr::Proof::No => {
                        let d = self.error(Code::E0301, arg_span, msg);
                        d.primary.message = format!("this has {} elements", show_dim(&a));
                        return Ty::Error;
                    }
                    super::expr::Proof::Unknown => {
                        env.constraints
                            .push(super::Constraint { kind: super::ConstraintKind::Eq(a, b), message: msg });
                    }
                }
                Ty::Tensor(e, target)
            }
            Prim::Broadcast => {
                let Some(slots) = self.bind_args(&spec(&[("x", true)]), args, span, &what) else {
                    return Ty::Error;
                };
                let Some((e, s)) = self.tensor_slot(args, &slots, 0) else { return Ty::Error };
                let target = match shape_gen(self) {
                    Some(Some(t)) => t,
                    Some(None) => {
                        self.error(Code::E0304, span, "`broadcast` needs the target shape").primary.message =
                            "write `broadcast[D1, …](x)`".into();
                        return Ty::Error;
                    }
                    None => return Ty::Error,
                };
                let arg_span = slot(args, &slots, 0).map_or(span, |a| a.span);
                match super::expr::broadcast(&s, &target) {
                    Ok(r) if r == target => Ty::Tensor(e, target),
                    _ => {
                        let d = self.error(
                            Code::E0301,
                            arg_span,
                            format!(
                                "cannot broadcast {} to [{}]",
                                tensor_to_string(e, &s),
                                super::ty::shape_to_string(&target)
                            ),
                        );
                        d.primary.message = "does not broadcast".into();
                        Ty::Error
                    }
                }
            }
            Prim::Transpose => {
                let Some(slots) = self.bind_args(&spec(&[("x", true), ("perm", false)]), args, span, &what)
                else {
                    return Ty::Error;
                };
                let Some((e, s)) = self.tensor_slot(args, &slots, 0) else { return Ty::Error };
                if s.iter().any(|x| matches!(x, Sh::Spread(_))) {
                    let sp = slot(args, &slots, 0).map_or(span, |a| a.span);
                    self.error(Code::E0301, sp, "`transpose` needs a tensor of known rank").primary.message =
                        format!("this is {}", tensor_to_string(e, &s));
                    return Ty::Error;
                }
                let perm: Vec<usize> = match slot(args, &slots, 1) {
                    None => (0..s.len()).rev().collect(),
                    Some(a) => match int_list(&a.ty) {
                        Some(v) => {
                            let n = s.len() as i64;
                            let norm: Vec<i64> = v.iter().map(|x| if *x < 0 { x + n } else { *x }).collect();
                            let mut sorted = norm.clone();
                            sorted.sort_unstable();
                            if sorted != (0..n).collect::<Vec<_>>() {
                                self.error(
                                    Code::E0301,
                                    a.span,
                                    format!("`perm` must be a permutation of the {} axes", s.len()),
                                )
                                .primary
                                .message = "not a permutation".into();
                                return Ty::Error;
                            }
                            norm.iter().map(|x| usize::try_from(*x).unwrap_or(0)).collect()
                        }
                        None => {
                            self.error(Code::E0302, a.span, "`perm` must be a tuple of integers")
                                .primary
                                .message = "not a tuple of integers".into();
                            return Ty::Error;
                        }
                    },
                };
                Ty::Tensor(e, perm.iter().filter_map(|i| s.get(*i).cloned()).collect())
            }
            Prim::Concat => {
                let Some(slots) = self.bind_args(&spec(&[("xs", true), ("axis", false)]), args, span, &what)
                else {
                    return Ty::Error;
                };
                let Some(xs) = slot(args, &slots, 0) else { return Ty::Error };
                let parts = match &xs.ty {
                    Ty::Tuple(ts) if !ts.is_empty() => ts.clone(),
                    Ty::Error => return Ty::Error,
                    _ => {
                        self.error(
                            Code::E0302,
                            xs.span,
                            "`concat` takes a tuple of tensors: `concat((a, b), axis = k)`",
                        )
                        .primary
                        .message = "not a tuple".into();
                        return Ty::Error;
                    }
                };
                let Some((e0, s0)) = parts.first().and_then(Ty::as_tensor) else { return Ty::Error };
                let axis_arg = slot(args, &slots, 1);
                let axis = match axis_arg {
                    None => 0,
                    Some(a) => match int_list(&a.ty).as_deref() {
                        Some([k]) => *k,
                        _ => {
                            self.error(Code::E0302, a.span, "`axis` must be an integer").primary.message =
                                "not an integer".into();
                            return Ty::Error;
                        }
                    },
                };
                let Some(ax) = self.axis_index(&s0, axis, axis_arg.map_or(span, |a| a.span)) else {
                    return Ty::Error;
                };
                let mut total = Dim::constant(0);
                for t in &parts {
                    let Some((e, s)) = t.as_tensor() else { return Ty::Error };
                    let same_rest = e == e0
                        && s.len() == s0.len()
                        && s.iter().zip(&s0).enumerate().all(|(i, (a, b))| i == ax || a == b);
                    if !same_rest {
                        self.error(
                            Code::E0301,
                            xs.span,
                            format!(
                                "`concat` parts must agree except on axis {axis}: {} and {}",
                                tensor_to_string(e0, &s0),
                                tensor_to_string(e, &s)
                            ),
                        )
                        .primary
                        .message = "mismatched parts".into();
                        return Ty::Error;
                    }
                    if let Some(Sh::Dim(d)) = s.get(ax) {
                        total = match total.add(d) {
                            Ok(t) => t,
                            Err(_) => return self.overflow(xs.span),
                        };
                    }
                }
                let mut out = s0;
                if let Some(slot) = out.get_mut(ax) {
                    *slot = Sh::Dim(total);
                }
                Ty::Tensor(e0, out)
            }
            Prim::Flatten => {
                let Some(slots) = self.bind_args(&spec(&[("x", true)]), args, span, &what) else {
                    return Ty::Error;
                };
                let Some((e, s)) = self.tensor_slot(args, &slots, 0) else { return Ty::Error };
                match s.split_first() {
                    Some((first @ Sh::Dim(_), rest)) => {
                        let Ok(p) = product(rest) else { return self.overflow(span) };
                        Ty::Tensor(e, vec![first.clone(), Sh::Dim(p)])
                    }
                    _ => {
                        let sp = slot(args, &slots, 0).map_or(span, |a| a.span);
                        self.error(Code::E0301, sp, "`flatten` needs a known first (batch) dimension")
                            .primary
                            .message = format!("this is {}", tensor_to_string(e, &s));
                        Ty::Error
                    }
                }
            }
            Prim::Conv1d | Prim::Conv2d | Prim::ConvTranspose2d => self.conv(p, span, args, &what),
            Prim::Maxpool2d | Prim::Meanpool2d => self.pool(span, args, &what),
            Prim::Softmax | Prim::Logsoftmax => {
                let Some(slots) = self.bind_args(&spec(&[("x", true), ("axis", false)]), args, span, &what)
                else {
                    return Ty::Error;
                };
                let Some((e, s)) = self.tensor_slot(args, &slots, 0) else { return Ty::Error };
                if e != Elem::F32 {
                    return self.want_f32(args, &slots, 0, e, &s, &what);
                }
                let axis = match slot(args, &slots, 1) {
                    None => -1,
                    Some(a) => match int_list(&a.ty).as_deref() {
                        Some([k]) => *k,
                        _ => {
                            self.error(Code::E0302, a.span, "`axis` must be an integer").primary.message =
                                "not an integer".into();
                            return Ty::Error;
                        }
                    },
                };
                let sp = slot(args, &slots, 1).or(slot(args, &slots, 0)).map_or(span, |a| a.span);
                self.axis_index(&s, axis, sp).map_or(Ty::Error, |_| Ty::Tensor(e, s))
            }
            Prim::Dropout => {
                let Some(slots) = self.bind_args(&spec(&[("x", true), ("p", true)]), args, span, &what)
                else {
                    return Ty::Error;
                };
                self.scalar_args_from(args, &slots, 1, Elem::F32);
                let Some((e, s)) = self.tensor_slot(args, &slots, 0) else { return Ty::Error };
                Ty::Tensor(e, s)
            }
            Prim::Print => {
                if let Some(a) = args.iter().find(|a| a.name.is_some() || a.pair.is_some()) {
                    self.error(Code::E0303, a.span, "`print` takes positional arguments").primary.message =
                        "unexpected".into();
                }
                Ty::unit()
            }
            Prim::Load => {
                let Some(slots) = self.bind_args(&spec(&[("path", true)]), args, span, &what) else {
                    return Ty::Error;
                };
                self.str_slot(args, &slots, 0);
                match gens {
                    Some([GenV::Type(t, _)]) => t.clone(),
                    Some([GenV::Dim(_, sp), ..] | [GenV::Shape(_, sp), ..]) => {
                        self.error(Code::E0302, *sp, "`load[T]` takes a type or a model name")
                            .primary
                            .message = "not a type".into();
                        Ty::Error
                    }
                    _ => {
                        let d =
                            self.error(Code::E0304, span, "`load` needs the type it loads: `load[T](path)`");
                        d.primary.message = "give the type".into();
                        d.help = Some(
                            "write `load[f32[3, 4]](\"x.npy\")` or `load[MODEL](\"weights.safetensors\")`"
                                .into(),
                        );
                        Ty::Error
                    }
                }
            }
            Prim::Save => {
                let Some(slots) = self.bind_args(&spec(&[("path", true), ("x", true)]), args, span, &what)
                else {
                    return Ty::Error;
                };
                self.str_slot(args, &slots, 0);
                Ty::unit()
            }
            Prim::ReadText | Prim::Env => {
                let n = if p == Prim::Env { "name" } else { "path" };
                let Some(slots) = self.bind_args(&spec(&[(n, true)]), args, span, &what) else {
                    return Ty::Error;
                };
                self.str_slot(args, &slots, 0);
                Ty::Str
            }
            Prim::WriteText => {
                let Some(slots) = self.bind_args(&spec(&[("path", true), ("s", true)]), args, span, &what)
                else {
                    return Ty::Error;
                };
                self.str_slot(args, &slots, 0);
                self.str_slot(args, &slots, 1);
                Ty::unit()
            }
            Prim::Now => {
                self.bind_args(&[], args, span, &what);
                f32_scalar
            }
            _ => Ty::Error,
        }
    }

    fn want_f32(&mut self, args: &[ArgV<'_>], slots: &Slots, i: usize, e: Elem, s: &[Sh], what: &str) -> Ty {
        if let Some(a) = slot(args, slots, i) {
            self.error(Code::E0302, a.span, format!("{what} takes f32, found {}", tensor_to_string(e, s)))
                .primary
                .message = "not f32".into();
        }
        Ty::Error
    }

    fn tensor_slot(&mut self, args: &[ArgV<'_>], slots: &Slots, i: usize) -> Option<(Elem, Shape)> {
        let a = slot(args, slots, i)?;
        self.operand(&a.ty, a.span)
    }

    fn str_slot(&mut self, args: &[ArgV<'_>], slots: &Slots, i: usize) {
        if let Some(a) = slot(args, slots, i)
            && !matches!(a.ty, Ty::Str | Ty::Error)
        {
            self.error(Code::E0302, a.span, format!("expected str, found {}", self.show_ty(&a.ty)))
                .primary
                .message = "not a string".into();
        }
    }

    fn dim_slot(&mut self, args: &[ArgV<'_>], slots: &Slots, i: usize) -> Option<Dim> {
        let a = slot(args, slots, i)?;
        match &a.ty {
            Ty::Dim(d) if d.as_constant().is_none_or(|c| c >= 1) => Some(d.clone()),
            Ty::Dim(d) => {
                self.error(Code::E0301, a.span, "a dimension must be at least 1").primary.message =
                    format!("this is {}", show_dim(d));
                None
            }
            Ty::Error => None,
            other => {
                let shown = self.show_ty(other);
                self.error(Code::E0302, a.span, format!("expected a dimension, found {shown}"))
                    .primary
                    .message = "not a dimension".into();
                None
            }
        }
    }

    /// Every bound argument must be a scalar of `elem` (dimensions convert).
    fn scalar_args(&mut self, args: &[ArgV<'_>], slots: &Slots, elem: Elem) {
        self.scalar_args_from(args, slots, 0, elem);
    }

    fn scalar_args_from(&mut self, args: &[ArgV<'_>], slots: &Slots, from: usize, elem: Elem) {
        for i in from..slots.len() {
            let Some(a) = slot(args, slots, i) else { continue };
            let ok = match &a.ty {
                Ty::Dim(_) | Ty::Error => true,
                Ty::Tensor(e, s) => *e == elem && s.is_empty(),
                _ => false,
            };
            if !ok {
                let shown = self.show_ty(&a.ty);
                let code =
                    if matches!(&a.ty, Ty::Tensor(e, _) if *e != elem) { Code::E0302 } else { Code::E0301 };
                self.error(code, a.span, format!("expected a scalar {}, found {shown}", elem.as_str()))
                    .primary
                    .message = format!("this is {shown}");
            }
        }
    }

    /// Elementwise operations of several arguments: broadcast, one element type (bool first for `where`).
    fn elementwise(&mut self, args: &[ArgV<'_>], slots: &Slots, is_where: bool, what: &str) -> Ty {
        let mut shape: Shape = Vec::new();
        let mut shape_span: Option<Span> = None;
        let mut elem: Option<Elem> = None;
        for (i, s) in slots.iter().enumerate() {
            let Some(ai) = s else { continue };
            let Some(a) = args.get(*ai) else { continue };
            let Some((e, sh)) = self.operand(&a.ty, a.span) else { return Ty::Error };
            if is_where && i == 0 {
                if e != Elem::Bool {
                    self.error(
                        Code::E0302,
                        a.span,
                        format!("the condition of `where` must be bool, found {}", tensor_to_string(e, &sh)),
                    )
                    .primary
                    .message = "not bool".into();
                    return Ty::Error;
                }
            } else if !matches!(a.ty, Ty::Dim(_)) {
                match elem {
                    None => elem = Some(e),
                    Some(prev) if prev != e => {
                        self.error(
                            Code::E0302,
                            a.span,
                            format!("{what} needs one element type: {} and {}", prev.as_str(), e.as_str()),
                        )
                        .primary
                        .message = format!("this is {}", tensor_to_string(e, &sh));
                        return Ty::Error;
                    }
                    _ => {}
                }
            }
            match super::expr::broadcast(&shape, &sh) {
                Ok(s) => shape = s,
                Err(note) => {
                    let d = self.error(
                        Code::E0301,
                        a.span,
                        format!(
                            "cannot broadcast [{}] with [{}] in {what}",
                            super::ty::shape_to_string(&shape),
                            super::ty::shape_to_string(&sh)
                        ),
                    );
                    d.primary.message = format!("this has shape [{}]", super::ty::shape_to_string(&sh));
                    if let Some(ss) = shape_span {
                        d.labels.push(Label { span: ss, message: "the shape so far comes from here".into() });
                    }
                    d.notes.push(note);
                    return Ty::Error;
                }
            }
            shape_span = Some(a.span);
        }
        let e = elem.unwrap_or(Elem::F32);
        if e == Elem::Bool && !is_where {
            return Ty::Error;
        }
        Ty::Tensor(e, shape)
    }

    fn reduction(&mut self, args: &[ArgV<'_>], slots: &Slots, out_elem: Option<Elem>) -> Ty {
        let Some((e, s)) = self.tensor_slot(args, slots, 0) else { return Ty::Error };
        let out_e = out_elem.unwrap_or(e);
        let Some(axis_arg) = slot(args, slots, 1) else { return Ty::scalar(out_e) };
        let Some(axes) = int_list(&axis_arg.ty) else {
            if !axis_arg.ty.is_error() {
                self.error(Code::E0302, axis_arg.span, "`axis` must be an integer or a tuple of integers")
                    .primary
                    .message = "not an axis".into();
            }
            return Ty::Error;
        };
        let mut remove = Vec::new();
        for a in axes {
            let Some(i) = self.axis_index(&s, a, axis_arg.span) else { return Ty::Error };
            if remove.contains(&i) {
                self.error(Code::E0301, axis_arg.span, format!("axis {a} is given twice")).primary.message =
                    "repeated axis".into();
                return Ty::Error;
            }
            remove.push(i);
        }
        Ty::Tensor(
            out_e,
            s.iter().enumerate().filter(|(i, _)| !remove.contains(i)).map(|(_, d)| d.clone()).collect(),
        )
    }

    /// The position of axis `a` (negative counts from the end) in `s`; E0301 if out of range or
    /// inside a shape variable.
    pub(crate) fn axis_index(&mut self, s: &[Sh], a: i64, span: Span) -> Option<usize> {
        let spread = s.iter().position(|x| matches!(x, Sh::Spread(_)));
        let n = s.len() as i64;
        let i = if a < 0 { a + n } else { a };
        let inside_spread = match spread {
            Some(p) => {
                let p = p as i64;
                if a >= 0 { a >= p } else { i <= p }
            }
            None => false,
        };
        if i < 0 || i >= n || inside_spread {
            let d = self.error(
                Code::E0301,
                span,
                format!("axis {a} is out of range for a tensor of shape [{}]", super::ty::shape_to_string(s)),
            );
            d.primary.message = "no such axis".into();
            if inside_spread {
                d.notes.push("the axis falls inside a shape variable `..S`".into());
            }
            return None;
        }
        usize::try_from(i).ok()
    }

    /// A dimension option (`stride = 2`) or a pair of them (`stride = (2, 1)`), per spatial axis.
    fn dim_option(&mut self, a: Option<&ArgV<'_>>, default: &[Dim], n: usize) -> Option<Vec<Dim>> {
        let Some(a) = a else { return Some(default.to_vec()) };
        let bad = |c: &mut Self| {
            c.error(
                Code::E0302,
                a.span,
                if n == 1 {
                    "expected a dimension".to_owned()
                } else {
                    format!("expected a dimension or a tuple of {n}")
                },
            )
            .primary
            .message = format!("this is {}", a.ty.describe_kind());
            None
        };
        let v = match &a.ty {
            Ty::Dim(d) => vec![d.clone(); n],
            Ty::Tuple(items) if items.len() == n => {
                let mut out = Vec::new();
                for t in items {
                    match t {
                        Ty::Dim(d) => out.push(d.clone()),
                        _ => return bad(self),
                    }
                }
                out
            }
            Ty::Error => return None,
            _ => return bad(self),
        };
        Some(v)
    }

    fn conv(&mut self, p: Prim, span: Span, args: &[ArgV<'_>], what: &str) -> Ty {
        let Some(slots) = self.bind_args(
            &spec(&[("x", true), ("w", true), ("stride", false), ("pad", false), ("dilation", false)]),
            args,
            span,
            what,
        ) else {
            return Ty::Error;
        };
        let n = if p == Prim::Conv1d { 1 } else { 2 };
        let (Some((xe, xs)), Some((we, ws))) =
            (self.tensor_slot(args, &slots, 0), self.tensor_slot(args, &slots, 1))
        else {
            return Ty::Error;
        };
        let (Some(xa), Some(wa)) = (slot(args, &slots, 0), slot(args, &slots, 1)) else { return Ty::Error };
        if xe != Elem::F32 || we != Elem::F32 {
            let (a, e, s) = if xe != Elem::F32 { (xa, xe, &xs) } else { (wa, we, &ws) };
            self.error(Code::E0302, a.span, format!("{what} takes f32, found {}", tensor_to_string(e, s)))
                .primary
                .message = "not f32".into();
            return Ty::Error;
        }
        let dims = |s: &[Sh]| -> Option<Vec<Dim>> {
            s.iter().map(|x| if let Sh::Dim(d) = x { Some(d.clone()) } else { None }).collect()
        };
        let layout = if n == 1 { "[B, Cin, L]" } else { "[B, Cin, H, W]" };
        let Some(x) = dims(&xs).filter(|v| v.len() == n + 2) else {
            self.error(
                Code::E0301,
                xa.span,
                format!("{what} takes an input {layout}, found {}", tensor_to_string(xe, &xs)),
            )
            .primary
            .message = "wrong rank".into();
            return Ty::Error;
        };
        let wl = if p == Prim::ConvTranspose2d {
            "[Cin, Cout, KH, KW]"
        } else if n == 1 {
            "[Cout, Cin, K]"
        } else {
            "[Cout, Cin, KH, KW]"
        };
        let Some(w) = dims(&ws).filter(|v| v.len() == n + 2) else {
            self.error(
                Code::E0301,
                wa.span,
                format!("{what} takes a weight {wl}, found {}", tensor_to_string(we, &ws)),
            )
            .primary
            .message = "wrong rank".into();
            return Ty::Error;
        };
        let (Some(w0), Some(w1), Some(x1)) = (w.first(), w.get(1), x.get(1)) else { return Ty::Error };
        let (cin_w, cout) = if p == Prim::ConvTranspose2d { (w0, w1) } else { (w1, w0) };
        if x1 != cin_w {
            let d = self.error(
                Code::E0301,
                wa.span,
                format!(
                    "{what}: the input has {} channels but the weight {wl} expects {}",
                    show_dim(x1),
                    show_dim(cin_w)
                ),
            );
            d.primary.message = format!("this is {}", tensor_to_string(we, &ws));
            d.labels.push(Label { span: xa.span, message: format!("this is {}", tensor_to_string(xe, &xs)) });
            return Ty::Error;
        }
        let one = [Dim::constant(1)];
        let zero = [Dim::constant(0)];
        let (Some(stride), Some(pad), Some(dil)) = (
            self.dim_option(slot(args, &slots, 2), &vec![one[0].clone(); n], n),
            self.dim_option(slot(args, &slots, 3), &vec![zero[0].clone(); n], n),
            self.dim_option(slot(args, &slots, 4), &vec![one[0].clone(); n], n),
        ) else {
            return Ty::Error;
        };
        let mut out = vec![Sh::Dim(x.first().cloned().unwrap_or_default()), Sh::Dim(cout.clone())];
        for k in 0..n {
            let (Some(size), Some(kern), Some(s), Some(pd), Some(dl)) =
                (x.get(2 + k), w.get(2 + k), stride.get(k), pad.get(k), dil.get(k))
            else {
                return Ty::Error;
            };
            let r = if p == Prim::ConvTranspose2d {
                // (H - 1)*stride - 2*pad + dilation*(KH - 1) + 1
                size.sub(&Dim::constant(1))
                    .and_then(|a| a.mul(s))
                    .and_then(|a| a.sub(&pd.mul(&Dim::constant(2))?))
                    .and_then(|a| a.add(&dl.mul(&kern.sub(&Dim::constant(1))?)?))
                    .and_then(|a| a.add(&Dim::constant(1)))
            } else {
                // (H + 2*pad - dilation*(KH - 1) - 1)/stride + 1
                size.add(&pd.mul(&Dim::constant(2)).unwrap_or_default())
                    .and_then(|a| a.sub(&dl.mul(&kern.sub(&Dim::constant(1))?)?))
                    .and_then(|a| a.sub(&Dim::constant(1)))
                    .and_then(|a| a.floor_div(s))
                    .and_then(|a| a.add(&Dim::constant(1)))
            };
            let Ok(r) = r else { return self.overflow(span) };
            out.push(Sh::Dim(r));
        }
        let t = Ty::f32s(out);
        if let Some(v) = super::ty::dim_below_one(&t) {
            self.below_one(span, what.trim_matches('`'), &t, v);
            return Ty::Error;
        }
        t
    }

    fn pool(&mut self, span: Span, args: &[ArgV<'_>], what: &str) -> Ty {
        let Some(slots) = self.bind_args(
            &spec(&[("x", true), ("window", true), ("stride", false), ("pad", false)]),
            args,
            span,
            what,
        ) else {
            return Ty::Error;
        };
        let Some((xe, xs)) = self.tensor_slot(args, &slots, 0) else { return Ty::Error };
        let Some(xa) = slot(args, &slots, 0) else { return Ty::Error };
        let x: Option<Vec<Dim>> =
            xs.iter().map(|s| if let Sh::Dim(d) = s { Some(d.clone()) } else { None }).collect();
        let Some(x) = x.filter(|v| v.len() == 4) else {
            self.error(
                Code::E0301,
                xa.span,
                format!("{what} takes [B, C, H, W], found {}", tensor_to_string(xe, &xs)),
            )
            .primary
            .message = "wrong rank".into();
            return Ty::Error;
        };
        let Some(window) = self.dim_option(slot(args, &slots, 1), &[], 2) else { return Ty::Error };
        let (Some(stride), Some(pad)) = (
            self.dim_option(slot(args, &slots, 2), &window, 2),
            self.dim_option(slot(args, &slots, 3), &[Dim::constant(0), Dim::constant(0)], 2),
        ) else {
            return Ty::Error;
        };
        let mut out: Vec<Sh> = x.iter().take(2).cloned().map(Sh::Dim).collect();
        for k in 0..2 {
            let (Some(size), Some(kern), Some(s), Some(pd)) =
                (x.get(2 + k), window.get(k), stride.get(k), pad.get(k))
            else {
                return Ty::Error;
            };
            // (H + 2*pad - KH)/stride + 1
            let r = pd
                .mul(&Dim::constant(2))
                .and_then(|a| size.add(&a))
                .and_then(|a| a.sub(kern))
                .and_then(|a| a.floor_div(s))
                .and_then(|a| a.add(&Dim::constant(1)));
            let Ok(r) = r else { return self.overflow(span) };
            out.push(Sh::Dim(r));
        }
        let t = Ty::Tensor(xe, out);
        if let Some(v) = super::ty::dim_below_one(&t) {
            self.below_one(span, what.trim_matches('`'), &t, v);
            return Ty::Error;
        }
        t
    }

    // ---------------------------------------------------------------- built-in layers

    fn builtin_layer(
        &mut self,
        env: &mut Env,
        p: Prim,
        span: Span,
        gens: Option<&[GenV]>,
        args: &[ArgV<'_>],
    ) -> Ty {
        let what = format!("`{}`", p.name());
        match p {
            Prim::Chain | Prim::Parallel => {
                if let Some(a) = args.iter().find(|a| a.name.is_some() || a.pair.is_some()) {
                    self.error(Code::E0303, a.span, format!("{what} takes layers as positional arguments"))
                        .primary
                        .message = "unexpected".into();
                    return Ty::Error;
                }
                let (conn, rest) = if p == Prim::Parallel {
                    match args.split_first() {
                        Some((c, rest)) => (Some(c), rest),
                        None => {
                            self.error(
                                Code::E0303,
                                span,
                                "`Parallel` needs a connection and at least one layer",
                            )
                            .primary
                            .message = "missing arguments".into();
                            return Ty::Error;
                        }
                    }
                } else {
                    (None, args)
                };
                if rest.is_empty() {
                    self.error(Code::E0303, span, format!("{what} needs at least one layer"))
                        .primary
                        .message = "missing arguments".into();
                    return Ty::Error;
                }
                let mut layers = Vec::new();
                for a in rest {
                    match self.as_layer(&a.ty, a.span) {
                        Some(l) => layers.push(l),
                        None => return Ty::Error,
                    }
                }
                match conn {
                    None => Ty::Layer(LayerVal::Chain(layers)),
                    Some(c) => match self.as_fn(&c.ty, c.span) {
                        Some(f) => Ty::Layer(LayerVal::Parallel(f, layers)),
                        None => Ty::Error,
                    },
                }
            }
            Prim::SkipConnection => {
                let Some(slots) =
                    self.bind_args(&spec(&[("layer", true), ("connection", true)]), args, span, &what)
                else {
                    return Ty::Error;
                };
                let (Some(l), Some(c)) = (slot(args, &slots, 0), slot(args, &slots, 1)) else {
                    return Ty::Error;
                };
                match (self.as_layer(&l.ty, l.span), self.as_fn(&c.ty, c.span)) {
                    (Some(l), Some(f)) => Ty::Layer(LayerVal::Skip(Box::new(l), f)),
                    _ => Ty::Error,
                }
            }
            Prim::Recur => {
                let Some(slots) = self.bind_args(&spec(&[("cell", true)]), args, span, &what) else {
                    return Ty::Error;
                };
                let Some(c) = slot(args, &slots, 0) else { return Ty::Error };
                match self.as_layer(&c.ty, c.span) {
                    Some(l) => Ty::Layer(LayerVal::Recur(Box::new(l))),
                    None => Ty::Error,
                }
            }
            Prim::BatchNorm | Prim::GroupNorm => {
                let n_dims = if p == Prim::BatchNorm { 1 } else { 2 };
                let (dims, rest) = self.leading_dims(gens, args, &what);
                let Some(dims) = dims else { return Ty::Error };
                if dims.len() != n_dims {
                    let want = if p == Prim::BatchNorm { "`BatchNorm(C)`" } else { "`GroupNorm(G, C)`" };
                    self.error(
                        Code::E0303,
                        span,
                        format!(
                            "{what} takes {n_dims} dimension{}: {want}",
                            if n_dims == 1 { "" } else { "s" }
                        ),
                    )
                    .primary
                    .message = "wrong dimension arguments".into();
                    return Ty::Error;
                }
                let names: &[(&str, bool)] = if p == Prim::BatchNorm {
                    &[("act", false), ("momentum", false), ("eps", false)]
                } else {
                    &[("eps", false)]
                };
                let Some(slots) = self.bind_args(&spec(names), rest, span, &what) else { return Ty::Error };
                let act_ty = Ty::Fn(FnVal::Param {
                    params: vec![Ty::scalar(Elem::F32)],
                    ret: Box::new(Ty::scalar(Elem::F32)),
                });
                for (i, (n, _)) in names.iter().enumerate() {
                    let Some(a) = slot(rest, &slots, i) else { continue };
                    if *n == "act" {
                        let none = Default::default();
                        let mut u = super::unify::Unifier::new(&none);
                        self.check_arg(env, &mut u, &act_ty, &a.ty, &a.ty, a.span, span, p.name());
                    } else {
                        self.scalar_args_from(rest, &slots, i, Elem::F32);
                    }
                }
                let mut it = dims.into_iter();
                if p == Prim::BatchNorm {
                    let c = it.next().unwrap_or_default();
                    Ty::Layer(LayerVal::BatchNorm { c })
                } else {
                    let g = it.next().unwrap_or_default();
                    let c = it.next().unwrap_or_default();
                    if let (Some(gv), Some(cv)) = (g.as_constant(), c.as_constant())
                        && (gv < 1 || cv % gv != 0)
                    {
                        self.error(
                            Code::E0301,
                            span,
                            format!("`GroupNorm`: {gv} groups do not divide {cv} channels"),
                        )
                        .primary
                        .message = "groups must divide channels".into();
                        return Ty::Error;
                    }
                    Ty::Layer(LayerVal::GroupNorm { g, c })
                }
            }
            _ => Ty::Error,
        }
    }

    /// Flattens leading dimension arguments (literals, dims, `a => b`, tuples of dims) and
    /// explicit `[…]` ones, in order (§3.2). Returns them and the remaining arguments.
    pub(crate) fn leading_dims<'x, 'e>(
        &mut self,
        gens: Option<&[GenV]>,
        args: &'x [ArgV<'e>],
        what: &str,
    ) -> (Option<Vec<Dim>>, &'x [ArgV<'e>]) {
        let mut dims = Vec::new();
        if let Some(g) = gens {
            for x in g {
                match x {
                    GenV::Dim(d, _) => dims.push(d.clone()),
                    GenV::Type(Ty::Error, _) => return (None, args),
                    other => {
                        self.error(Code::E0302, other.span(), format!("{what} takes dimensions in `[…]`"))
                            .primary
                            .message = "not a dimension".into();
                        return (None, args);
                    }
                }
            }
        }
        let mut used = 0;
        for a in args {
            if a.name.is_some() {
                break;
            }
            let flat = match (&a.pair, &a.ty) {
                (Some((f, t)), _) => match (flatten_dims(f), flatten_dims(t)) {
                    (Some(mut x), Some(y)) => {
                        x.extend(y);
                        Some(x)
                    }
                    _ => {
                        self.error(Code::E0302, a.span, "both sides of `=>` must be dimensions")
                            .primary
                            .message = "not dimensions".into();
                        return (None, args);
                    }
                },
                (None, t) => flatten_dims(t),
            };
            match flat {
                Some(ds) => {
                    dims.extend(ds);
                    used += 1;
                }
                None => break,
            }
        }
        for (d, a) in dims.iter().zip(args.iter()) {
            if d.as_constant().is_some_and(|c| c < 1) {
                self.error(Code::E0301, a.span, "a dimension must be at least 1").primary.message =
                    format!("this is {}", show_dim(d));
                return (None, args);
            }
        }
        (Some(dims), args.get(used..).unwrap_or_default())
    }

    pub(crate) fn as_layer(&mut self, t: &Ty, span: Span) -> Option<LayerVal> {
        match t {
            Ty::Layer(l) => Some(l.clone()),
            Ty::Fn(f) => Some(LayerVal::Func(f.clone())),
            Ty::Error => None,
            other => {
                let shown = self.show_ty(other);
                self.error(Code::E0302, span, format!("expected a layer, found {shown}")).primary.message =
                    format!("this is {}", other.describe_kind());
                None
            }
        }
    }

    pub(crate) fn as_fn(&mut self, t: &Ty, span: Span) -> Option<FnVal> {
        match t {
            Ty::Fn(f) => Some(f.clone()),
            Ty::Error => None,
            other => {
                let shown = self.show_ty(other);
                self.error(Code::E0302, span, format!("expected a function, found {shown}"))
                    .primary
                    .message = format!("this is {}", other.describe_kind());
                None
            }
        }
    }

    fn optimizer_wrapper(&mut self, env: &mut Env, p: Prim, span: Span, args: &[ArgV<'_>]) -> Ty {
        let what = format!("`{}`", p.name());
        match p {
            Prim::OptimiserChain => {
                if args.is_empty() {
                    self.error(Code::E0303, span, "`OptimiserChain` needs at least one optimizer")
                        .primary
                        .message = "missing arguments".into();
                    return Ty::Error;
                }
                for a in args {
                    if a.name.is_some() {
                        self.error(
                            Code::E0303,
                            a.span,
                            "`OptimiserChain` takes optimizers as positional arguments",
                        )
                        .primary
                        .message = "unexpected".into();
                        return Ty::Error;
                    }
                    if !matches!(a.ty, Ty::Optimizer(_) | Ty::Error) {
                        let shown = self.show_ty(&a.ty);
                        self.error(Code::E0302, a.span, format!("expected an optimizer, found {shown}"))
                            .primary
                            .message = "not an optimizer".into();
                        return Ty::Error;
                    }
                }
                Ty::Optimizer(p.name().to_owned())
            }
            _ => {
                let (name, required) = match p {
                    Prim::ClipValue => ("v", true),
                    Prim::ClipNorm => ("n", true),
                    _ => ("weight_decay", false),
                };
                let Some(slots) = self.bind_args(&spec(&[(name, required)]), args, span, &what) else {
                    return Ty::Error;
                };
                self.scalar_args(args, &slots, Elem::F32);
                if let Some(a) = slot(args, &slots, 0) {
                    let _ = env;
                    self.positive_value(a, name, p == Prim::WeightDecay);
                }
                Ty::Optimizer(p.name().to_owned())
            }
        }
    }
}

pub(crate) fn slot<'x, 'e>(args: &'x [ArgV<'e>], slots: &[Option<usize>], i: usize) -> Option<&'x ArgV<'e>> {
    slots.get(i).copied().flatten().and_then(|ai| args.get(ai))
}

/// A dimension or a tuple of dimensions, flattened.
fn flatten_dims(t: &Ty) -> Option<Vec<Dim>> {
    match t {
        Ty::Dim(d) => Some(vec![d.clone()]),
        Ty::Tuple(items) if !items.is_empty() => {
            let mut out = Vec::new();
            for i in items {
                out.extend(flatten_dims(i)?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// An integer or a tuple of integers (axes, permutations).
pub(crate) fn int_list(t: &Ty) -> Option<Vec<i64>> {
    match t {
        Ty::Dim(d) => Some(vec![d.as_constant()?]),
        Ty::Tuple(items) => {
            items.iter().map(|i| if let Ty::Dim(d) = i { d.as_constant() } else { None }).collect()
        }
        _ => None,
    }
}

#[allow(dead_code)]
fn unused(_: PSpec<'_>, _: Ctx) {}
