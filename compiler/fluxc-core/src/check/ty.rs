//! The checker's types: tensors with static shapes, compile-time dimensions and booleans, tuples,
//! function and layer values, and the configuration values of `data` and `train`.

use std::collections::BTreeMap;
use std::fmt;

use fluxc_syntax::ast::ElemType;

use crate::dims::{Dim, DimError};

/// One entry of a shape: a dimension, or a shape variable `..S` standing for any list of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sh {
    Dim(Dim),
    Spread(String),
}

pub type Shape = Vec<Sh>;

/// Element types of tensors (the reserved ones never get this far).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    F32,
    I32,
    Bool,
}

impl Elem {
    pub fn from_ast(e: ElemType) -> Option<Elem> {
        match e {
            ElemType::F32 => Some(Elem::F32),
            ElemType::I32 => Some(Elem::I32),
            ElemType::Bool => Some(Elem::Bool),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Elem::F32 => "f32",
            Elem::I32 => "i32",
            Elem::Bool => "bool",
        }
    }
}

/// Effects (§5), ordered: `Pure < Rng < Io`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Effect {
    #[default]
    Pure,
    Rng,
    Io,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Pure => "pure",
            Effect::Rng => "rng",
            Effect::Io => "io",
        }
    }
}

/// Who is being called: an item of the program (user or std), or a primitive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callee {
    Item(usize),
    Prim(super::prims::Prim),
}

/// A function value: functions are compile-time entities (§3.1), so a value names its function.
#[derive(Clone, Debug, PartialEq)]
pub enum FnVal {
    Item(usize),
    Prim(super::prims::Prim),
    /// A parameter of function type: only its signature is known.
    Param {
        params: Vec<Ty>,
        ret: Box<Ty>,
    },
}

/// A layer value: what a constructor built, with its dimensions known (possibly symbolically).
#[derive(Clone, Debug, PartialEq)]
pub enum LayerVal {
    /// A `layer` item with every dimension parameter given (defaults filled in).
    User {
        item: usize,
        dims: Vec<Dim>,
    },
    Chain(Vec<LayerVal>),
    Parallel(FnVal, Vec<LayerVal>),
    Skip(Box<LayerVal>, FnVal),
    Recur(Box<LayerVal>),
    BatchNorm {
        c: Dim,
    },
    GroupNorm {
        g: Dim,
        c: Dim,
    },
    /// A function used as a layer inside `Chain` (Flux allows `Chain(Dense(2 => 3), softmax)`).
    Func(FnVal),
}

/// What a `data` declaration says about one element of its source (without the batch axis).
#[derive(Clone, Debug, PartialEq)]
pub struct DataTy {
    pub input: Option<(Elem, Shape)>,
    pub target: Option<(Elem, Shape)>,
    /// `classes = N`.
    pub classes: Option<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Ty {
    Tensor(Elem, Shape),
    /// A compile-time integer: a literal, a dimension variable, arithmetic on them.
    Dim(Dim),
    /// A compile-time boolean: `true`, `false` (known) or `training` (both variants).
    ConstBool(Option<bool>),
    Str,
    Tuple(Vec<Ty>),
    Fn(FnVal),
    Layer(LayerVal),
    /// A model item used as a value (`Mlp(x)`, `load[Mlp](…)`).
    Model(usize),
    Optimizer(String),
    Data(Box<DataTy>),
    /// A train-block built-in value (schedule, callback, metric, monitor name).
    TrainBuiltin(&'static str),
    /// A list literal (configuration values).
    List(Vec<Ty>),
    /// Stands for something already reported; it unifies with everything, so errors don't cascade.
    Error,
}

impl Ty {
    pub fn unit() -> Ty {
        Ty::Tuple(Vec::new())
    }

    pub fn scalar(e: Elem) -> Ty {
        Ty::Tensor(e, Vec::new())
    }

    pub fn f32s(shape: Shape) -> Ty {
        Ty::Tensor(Elem::F32, shape)
    }

    pub fn is_error(&self) -> bool {
        match self {
            Ty::Error => true,
            Ty::Tuple(items) | Ty::List(items) => items.iter().any(Ty::is_error),
            _ => false,
        }
    }

    /// A tensor view of values that convert to one (dims and compile-time booleans are scalars).
    pub fn as_tensor(&self) -> Option<(Elem, Shape)> {
        match self {
            Ty::Tensor(e, s) => Some((*e, s.clone())),
            Ty::Dim(_) => Some((Elem::I32, Vec::new())),
            Ty::ConstBool(_) => Some((Elem::Bool, Vec::new())),
            _ => None,
        }
    }

    pub fn describe_kind(&self) -> &'static str {
        match self {
            Ty::Tensor(..) => "a tensor",
            Ty::Dim(_) => "a dimension",
            Ty::ConstBool(_) => "a boolean",
            Ty::Str => "a string",
            Ty::Tuple(t) if t.is_empty() => "`()`",
            Ty::Tuple(_) => "a tuple",
            Ty::Fn(_) => "a function",
            Ty::Layer(_) => "a layer",
            Ty::Model(_) => "a model",
            Ty::Optimizer(_) => "an optimizer",
            Ty::Data(_) => "a data source",
            Ty::TrainBuiltin(_) => "a train built-in",
            Ty::List(_) => "a list",
            Ty::Error => "an error",
        }
    }
}

// --------------------------------------------------------------------------------- display

pub fn shape_to_string(shape: &[Sh]) -> String {
    let items: Vec<String> = shape
        .iter()
        .map(|s| match s {
            Sh::Dim(d) => show_dim(d),
            Sh::Spread(v) => format!("..{}", strip(v)),
        })
        .collect();
    items.join(", ")
}

/// Instantiated variables carry a `#n` suffix; users see the name they wrote.
pub fn strip(name: &str) -> &str {
    name.split('#').next().unwrap_or(name)
}

pub fn show_dim(d: &Dim) -> String {
    let text = d.to_string();
    if text.contains('#') {
        let mut out = String::new();
        let mut skipping = false;
        for ch in text.chars() {
            if ch == '#' {
                skipping = true;
            } else if skipping && ch.is_ascii_digit() {
            } else {
                skipping = false;
                out.push(ch);
            }
        }
        out
    } else {
        text
    }
}

pub fn tensor_to_string(e: Elem, shape: &[Sh]) -> String {
    if shape.is_empty() {
        e.as_str().to_owned()
    } else {
        format!("{}[{}]", e.as_str(), shape_to_string(shape))
    }
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ty::Tensor(e, s) => f.write_str(&tensor_to_string(*e, s)),
            Ty::Dim(d) => write!(f, "dim {}", show_dim(d)),
            Ty::ConstBool(Some(b)) => write!(f, "bool (compile-time {b})"),
            Ty::ConstBool(None) => f.write_str("bool (compile-time)"),
            Ty::Str => f.write_str("str"),
            Ty::Tuple(items) => {
                let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
                if parts.len() == 1 {
                    write!(f, "({},)", parts.join(", "))
                } else {
                    write!(f, "({})", parts.join(", "))
                }
            }
            Ty::Fn(FnVal::Param { params, ret }) => {
                let parts: Vec<String> = params.iter().map(ToString::to_string).collect();
                write!(f, "fn({}) -> {ret}", parts.join(", "))
            }
            Ty::Fn(_) => f.write_str("function"),
            Ty::Layer(_) => f.write_str("layer"),
            Ty::Model(_) => f.write_str("model"),
            Ty::Optimizer(name) => write!(f, "optimizer {name}"),
            Ty::Data(_) => f.write_str("data source"),
            Ty::TrainBuiltin(name) => f.write_str(name),
            Ty::List(items) => {
                let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
                write!(f, "[{}]", parts.join(", "))
            }
            Ty::Error => f.write_str("{error}"),
        }
    }
}

// ---------------------------------------------------------------------------- substitution

/// A solution for dimension and shape variables.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Subst {
    pub dims: BTreeMap<String, Dim>,
    pub shapes: BTreeMap<String, Shape>,
}

impl Subst {
    pub fn is_empty(&self) -> bool {
        self.dims.is_empty() && self.shapes.is_empty()
    }

    fn products(&self) -> Result<BTreeMap<String, Dim>, DimError> {
        let mut out = BTreeMap::new();
        for (name, shape) in &self.shapes {
            out.insert(name.clone(), product(shape)?);
        }
        Ok(out)
    }

    pub fn dim(&self, d: &Dim) -> Result<Dim, DimError> {
        if self.is_empty() {
            return Ok(d.clone());
        }
        d.substitute(&self.dims, &self.products()?)
    }

    pub fn shape(&self, shape: &[Sh]) -> Result<Shape, DimError> {
        let mut out = Vec::with_capacity(shape.len());
        for s in shape {
            match s {
                Sh::Dim(d) => out.push(Sh::Dim(self.dim(d)?)),
                Sh::Spread(v) => match self.shapes.get(v) {
                    Some(items) => out.extend(items.iter().cloned()),
                    None => out.push(s.clone()),
                },
            }
        }
        Ok(out)
    }

    pub fn ty(&self, ty: &Ty) -> Result<Ty, DimError> {
        if self.is_empty() {
            return Ok(ty.clone());
        }
        Ok(match ty {
            Ty::Tensor(e, s) => Ty::Tensor(*e, self.shape(s)?),
            Ty::Dim(d) => Ty::Dim(self.dim(d)?),
            Ty::Tuple(items) => Ty::Tuple(items.iter().map(|t| self.ty(t)).collect::<Result<_, _>>()?),
            Ty::List(items) => Ty::List(items.iter().map(|t| self.ty(t)).collect::<Result<_, _>>()?),
            Ty::Fn(f) => Ty::Fn(self.fn_val(f)?),
            Ty::Layer(l) => Ty::Layer(self.layer(l)?),
            other => other.clone(),
        })
    }

    pub fn fn_val(&self, f: &FnVal) -> Result<FnVal, DimError> {
        Ok(match f {
            FnVal::Param { params, ret } => FnVal::Param {
                params: params.iter().map(|t| self.ty(t)).collect::<Result<_, _>>()?,
                ret: Box::new(self.ty(ret)?),
            },
            other => other.clone(),
        })
    }

    pub fn layer(&self, l: &LayerVal) -> Result<LayerVal, DimError> {
        Ok(match l {
            LayerVal::User { item, dims } => LayerVal::User {
                item: *item,
                dims: dims.iter().map(|d| self.dim(d)).collect::<Result<_, _>>()?,
            },
            LayerVal::Chain(ls) => {
                LayerVal::Chain(ls.iter().map(|l| self.layer(l)).collect::<Result<_, _>>()?)
            }
            LayerVal::Parallel(f, ls) => LayerVal::Parallel(
                self.fn_val(f)?,
                ls.iter().map(|l| self.layer(l)).collect::<Result<_, _>>()?,
            ),
            LayerVal::Skip(l, f) => LayerVal::Skip(Box::new(self.layer(l)?), self.fn_val(f)?),
            LayerVal::Recur(l) => LayerVal::Recur(Box::new(self.layer(l)?)),
            LayerVal::BatchNorm { c } => LayerVal::BatchNorm { c: self.dim(c)? },
            LayerVal::GroupNorm { g, c } => LayerVal::GroupNorm { g: self.dim(g)?, c: self.dim(c)? },
            LayerVal::Func(f) => LayerVal::Func(self.fn_val(f)?),
        })
    }
}

/// The product of a shape's dimensions (`product(S)` for a spread; 1 for an empty shape).
pub fn product(shape: &[Sh]) -> Result<Dim, DimError> {
    let mut p = Dim::constant(1);
    for s in shape {
        p = match s {
            Sh::Dim(d) => p.mul(d)?,
            Sh::Spread(v) => p.mul(&Dim::product_of(v))?,
        };
    }
    Ok(p)
}

/// The first dimension that is a constant below 1, if any (E0301 at the place that made it).
pub fn dim_below_one(ty: &Ty) -> Option<i64> {
    match ty {
        Ty::Tensor(_, s) => s.iter().find_map(|d| match d {
            Sh::Dim(d) => d.as_constant().filter(|c| *c < 1),
            Sh::Spread(_) => None,
        }),
        Ty::Tuple(items) => items.iter().find_map(dim_below_one),
        _ => None,
    }
}
