//! The abstract syntax tree. Node names match the grammar's rule names (`fn_def` ↔ [`FnDef`]).
//! Every node carries the [`Span`] of the source it came from.
//!
//! Operator chains are flat ([`ExprKind::Binary`]), and lowering bounds the nesting of everything
//! else by `MAX_NESTING`, so recursive walks over a tree never run deep.

use crate::span::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole source file: items and top-level statements, in source order.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub tops: Vec<Top>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Top {
    Item(Item),
    Stmt(Stmt),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Use(UseDecl),
    Fn(FnDef),
    Layer(LayerDef),
    Loss(FnDef),
    Optimizer(OptimizerDef),
    Model(ModelDef),
    Data(DataDef),
    Train(TrainDef),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Use(d) => d.span,
            Item::Fn(d) | Item::Loss(d) => d.span,
            Item::Layer(d) => d.span,
            Item::Optimizer(d) => d.span,
            Item::Model(d) => d.span,
            Item::Data(d) => d.span,
            Item::Train(d) => d.span,
        }
    }
}

/// `use std::layers::{Dense, Chain}`, `use std::losses::*`, `use "file.flx"`.
#[derive(Clone, Debug, PartialEq)]
pub struct UseDecl {
    pub target: UseTarget,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum UseTarget {
    File {
        path: String,
        span: Span,
    },
    /// `segments` is the path up to the last `::`-separated name; `tail` says what it imports.
    Path {
        segments: Vec<Ident>,
        tail: UseTail,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum UseTail {
    /// `use std::layers::Dense` or `use std::act`: the last segment itself.
    Single,
    /// `::*`
    Glob(Span),
    /// `::{a, b}`
    Group(Vec<Ident>),
}

/// A function (`fn`) or a loss (`loss`): they share one shape.
#[derive(Clone, Debug, PartialEq)]
pub struct FnDef {
    pub doc: Option<String>,
    pub name: Ident,
    pub dims: Vec<DimParam>,
    pub params: Vec<Param>,
    pub ret: Option<Type>,
    pub body: Block,
    pub span: Span,
}

/// A dimension parameter: `N`, `Stride = 1`, or a shape variable `..S`.
#[derive(Clone, Debug, PartialEq)]
pub struct DimParam {
    pub kind: DimParamKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DimParamKind {
    Dim { name: Ident, default: Option<Expr> },
    Shape { name: Ident },
}

/// A value parameter: `x: f32[B, N]`, `act: Activation = identity`.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub ty: Type,
    pub default: Option<Expr>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LayerDef {
    pub doc: Option<String>,
    pub name: Ident,
    pub dims: Vec<DimParam>,
    pub params: Vec<Param>,
    pub members: Vec<LayerMember>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LayerMember {
    Param(ParamMember),
    State(StateMember),
    Field(FieldMember),
    Forward(ForwardDef),
}

/// `param weight: f32[Out, In] = glorot_uniform()`
#[derive(Clone, Debug, PartialEq)]
pub struct ParamMember {
    pub doc: Option<String>,
    pub name: Ident,
    pub ty: Type,
    pub init: Expr,
    pub span: Span,
}

/// `state running_mean: f32[C] = zeros()` (layers) or `state m = zeros_like(p)` (optimizers).
#[derive(Clone, Debug, PartialEq)]
pub struct StateMember {
    pub doc: Option<String>,
    pub name: Ident,
    pub ty: Option<Type>,
    pub init: Expr,
    pub span: Span,
}

/// A sub-layer: `conv1 = Conv2d((3, 3), C => C, relu, Pad = 1)`.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldMember {
    pub doc: Option<String>,
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ForwardDef {
    pub doc: Option<String>,
    pub dims: Vec<DimParam>,
    pub params: Vec<Param>,
    pub ret: Option<Type>,
    pub body: Block,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerDef {
    pub doc: Option<String>,
    pub name: Ident,
    pub params: Vec<Param>,
    pub members: Vec<OptimizerMember>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum OptimizerMember {
    State(StateMember),
    Update(UpdateDef),
}

/// `update(p, g, t) { ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct UpdateDef {
    pub params: Vec<Ident>,
    pub body: Block,
    pub span: Span,
}

/// `model Mlp: f32[B, 64] -> f32[B, 10] = Chain(...)`
#[derive(Clone, Debug, PartialEq)]
pub struct ModelDef {
    pub doc: Option<String>,
    pub name: Ident,
    pub input: Type,
    pub output: Type,
    pub value: Expr,
    pub span: Span,
}

/// `data digits = idx(...)`
#[derive(Clone, Debug, PartialEq)]
pub struct DataDef {
    pub doc: Option<String>,
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `train Digits on digits { key = value ... }`
#[derive(Clone, Debug, PartialEq)]
pub struct TrainDef {
    pub doc: Option<String>,
    pub model: Ident,
    pub source: Ident,
    pub entries: Vec<TrainEntry>,
    pub span: Span,
}

/// One `key = value` line of a train block. Keys may be keywords (`loss`).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainEntry {
    pub key: Ident,
    pub value: Expr,
    pub span: Span,
}

// ------------------------------------------------------------------------------------- types

#[derive(Clone, Debug, PartialEq)]
pub struct Type {
    pub kind: TypeKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TypeKind {
    /// `f32`, `f32[]`, `f32[B, ..S]`: an element type and its dimensions (none: a scalar).
    Tensor { elem: ElemType, dims: Vec<Dim> },
    /// `()` and `(T1, T2, …)`; `(T)` is just `T`.
    Tuple(Vec<Type>),
    /// `fn(T1, …) -> T`
    Fn { params: Vec<Type>, ret: Box<Type> },
    /// A named type such as `Activation`.
    Named(Ident),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElemType {
    F32,
    I32,
    Bool,
    Str,
    /// Reserved (§2): parsed so the checker can say so.
    F16,
    Bf16,
    F64,
}

impl ElemType {
    pub fn from_keyword(word: &str) -> Option<ElemType> {
        Some(match word {
            "f32" => ElemType::F32,
            "i32" => ElemType::I32,
            "bool" => ElemType::Bool,
            "str" => ElemType::Str,
            "f16" => ElemType::F16,
            "bf16" => ElemType::Bf16,
            "f64" => ElemType::F64,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ElemType::F32 => "f32",
            ElemType::I32 => "i32",
            ElemType::Bool => "bool",
            ElemType::Str => "str",
            ElemType::F16 => "f16",
            ElemType::Bf16 => "bf16",
            ElemType::F64 => "f64",
        }
    }
}

/// One dimension of a tensor type: a dimension expression, or a shape variable `..S`.
#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    Expr(Expr),
    Spread { name: Ident, span: Span },
}

// -------------------------------------------------------------------------------- statements

#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// `let pattern (: type)? = value`
    Let {
        pattern: Pattern,
        ty: Option<Type>,
        value: Expr,
    },
    /// `name := value` (state updates)
    Assign {
        target: Ident,
        value: Expr,
    },
    Expr(Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pattern {
    pub kind: PatternKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PatternKind {
    Name(Ident),
    /// `_`
    Wildcard,
    Tuple(Vec<Pattern>),
}

// ------------------------------------------------------------------------------- expressions

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Int(u64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// The compile-time boolean `training`.
    Training,
    Name(Ident),
    /// `(a, b)`; `()` is the unit value.
    Tuple(Vec<Expr>),
    /// `[a, b]`: lists in configuration values (`metrics = [accuracy]`, `shape = [1, 8, 8]`).
    List(Vec<Expr>),
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    /// `lhs op₁ e₁ op₂ e₂ …` folded left to right; a `^` chain is folded by lowering and always
    /// has one tail. Comparisons have exactly one tail.
    Binary {
        lhs: Box<Expr>,
        rest: Vec<BinaryTail>,
    },
    /// `f(args)` or `f[generics](args)`.
    Call {
        callee: Box<Expr>,
        generics: Option<Vec<GenericArg>>,
        args: Vec<Arg>,
    },
    Index {
        base: Box<Expr>,
        indices: Vec<IndexItem>,
    },
    /// `x.T`, `layer.weight`.
    Field {
        base: Box<Expr>,
        name: Ident,
    },
    /// `if c₁ { … } else if c₂ { … } else { … }`
    If {
        branches: Vec<IfBranch>,
        otherwise: Option<Block>,
    },
    /// Stands in for an expression lowering rejected, so checking can go on.
    Error,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Not,
}

impl UnaryOp {
    pub fn as_str(self) -> &'static str {
        match self {
            UnaryOp::Neg => "-",
            UnaryOp::Not => "!",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    MatMul,
    Pow,
}

impl BinOp {
    pub fn from_token(token: &str) -> Option<BinOp> {
        Some(match token {
            "||" => BinOp::Or,
            "&&" => BinOp::And,
            "==" => BinOp::Eq,
            "!=" => BinOp::Ne,
            "<" => BinOp::Lt,
            "<=" => BinOp::Le,
            ">" => BinOp::Gt,
            ">=" => BinOp::Ge,
            "+" => BinOp::Add,
            "-" => BinOp::Sub,
            "*" => BinOp::Mul,
            "/" => BinOp::Div,
            "@" => BinOp::MatMul,
            "^" => BinOp::Pow,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BinOp::Or => "||",
            BinOp::And => "&&",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::MatMul => "@",
            BinOp::Pow => "^",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct BinaryTail {
    pub op: BinOp,
    pub op_span: Span,
    pub rhs: Expr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct IfBranch {
    pub cond: Expr,
    pub then: Block,
}

/// A call argument.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub kind: ArgKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ArgKind {
    Positional(Expr),
    /// `name = value`; the name may be a keyword (`monitor = loss` has the value `loss`).
    Named {
        name: Ident,
        value: Expr,
    },
    /// `a => b` in constructor arguments.
    Pair {
        from: Expr,
        to: Expr,
    },
}

/// An explicit argument in `f[...](...)`: a dimension expression, a type, or a shape `..S`.
#[derive(Clone, Debug, PartialEq)]
pub enum GenericArg {
    Expr(Expr),
    Type(Type),
    Spread { name: Ident, span: Span },
}

#[derive(Clone, Debug, PartialEq)]
pub struct IndexItem {
    pub kind: IndexKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum IndexKind {
    /// `x[i]`: one position (negative counts from the end).
    At(Expr),
    /// `:`
    Full,
    /// `new`: insert an axis of size 1.
    New,
    /// `..` alone: the remaining axes.
    Rest,
    /// `a .. b`, `..b`, `a..` (end exclusive).
    Range { start: Option<Expr>, end: Option<Expr> },
}
