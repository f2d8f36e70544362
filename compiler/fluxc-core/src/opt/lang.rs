//! The e-graph's language and analysis: an e-node is an IR op with its attributes (and, for the
//! ops whose result shape is an attribute, the declared type) over child e-classes; each e-class
//! knows its tensor type and, when it is a uniform constant, its value.

use std::fmt;
use std::sync::Arc;

use egg::{Analysis, DidMerge, EGraph, FromOp, Id, Language};

use crate::ir::{BinaryOp, DType, Op, TensorTy, UnaryOp, infer};

/// An op and the type the node declares (only where the result shape is an attribute), compared
/// by the op's canonical name and then the declared type, so that the e-graph can hash and order
/// them (the name carries every attribute; the type is compared as a value, not printed).
#[derive(Clone, Debug)]
pub struct OpKey {
    name: Arc<str>,
    pub op: Op,
    pub declared: Option<TensorTy>,
}

impl OpKey {
    pub fn new(op: Op, declared: Option<TensorTy>) -> OpKey {
        let declared = if needs_declared(&op) { declared } else { None };
        OpKey { name: op.name().into(), op, declared }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl PartialEq for OpKey {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.declared == other.declared
    }
}
impl Eq for OpKey {}
impl std::hash::Hash for OpKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.declared.hash(state);
    }
}
impl PartialOrd for OpKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OpKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.name, &self.declared).cmp(&(&other.name, &other.declared))
    }
}

/// The ops whose result type is an attribute of the node rather than a function of the operands.
pub fn needs_declared(op: &Op) -> bool {
    matches!(
        op,
        Op::Input(_)
            | Op::Param(_)
            | Op::Const(_)
            | Op::Iota
            | Op::Size(_)
            | Op::Random { .. }
            | Op::Reshape
            | Op::Broadcast
            | Op::ConvTranspose(_)
            | Op::ConvWeightGrad(_)
    )
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ENode {
    pub key: OpKey,
    pub args: Vec<Id>,
}

impl ENode {
    pub fn new(op: Op, declared: Option<TensorTy>, args: Vec<Id>) -> ENode {
        ENode { key: OpKey::new(op, declared), args }
    }
}

impl Language for ENode {
    /// The name alone: nodes that match have equal names, and the order sorts by name first.
    type Discriminant = Arc<str>;

    fn discriminant(&self) -> Self::Discriminant {
        self.key.name.clone()
    }

    fn matches(&self, other: &Self) -> bool {
        self.key == other.key && self.args.len() == other.args.len()
    }

    fn children(&self) -> &[Id] {
        &self.args
    }

    fn children_mut(&mut self) -> &mut [Id] {
        &mut self.args
    }
}

impl fmt::Display for ENode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key.declared {
            Some(t) => write!(f, "{}:{t}", self.key.name()),
            None => f.write_str(self.key.name()),
        }
    }
}

/// The operator names rule patterns may use: the ops without attributes.
impl FromOp for ENode {
    type Error = String;

    fn from_op(op: &str, children: Vec<Id>) -> Result<Self, Self::Error> {
        let unary = |u| Op::Unary(u);
        let binary = |b| Op::Binary(b);
        let op = match op {
            "neg" => unary(UnaryOp::Neg),
            "exp" => unary(UnaryOp::Exp),
            "log" => unary(UnaryOp::Log),
            "sqrt" => unary(UnaryOp::Sqrt),
            "rsqrt" => unary(UnaryOp::Rsqrt),
            "abs" => unary(UnaryOp::Abs),
            "relu" => unary(UnaryOp::Relu),
            "sigmoid" => unary(UnaryOp::Sigmoid),
            "tanh" => unary(UnaryOp::Tanh),
            "add" => binary(BinaryOp::Add),
            "sub" => binary(BinaryOp::Sub),
            "mul" => binary(BinaryOp::Mul),
            "div" => binary(BinaryOp::Div),
            "max" => binary(BinaryOp::Max),
            "min" => binary(BinaryOp::Min),
            "select" => Op::Select,
            "matmul" => Op::MatMul,
            other => return Err(format!("`{other}` is not an op rule patterns can name")),
        };
        if children.len() != op_arity(&op) {
            return Err(format!("{} takes {} operands", op.name(), op_arity(&op)));
        }
        Ok(ENode::new(op, None, children))
    }
}

fn op_arity(op: &Op) -> usize {
    match op {
        Op::Unary(_) => 1,
        Op::Select => 3,
        _ => 2,
    }
}

/// What the analysis knows of an e-class.
#[derive(Clone, Debug, PartialEq)]
pub struct Facts {
    /// The tensor type every e-node of the class has (`None` only if typing failed, which the
    /// rules never let happen).
    pub ty: Option<TensorTy>,
    /// The value of every element, when the class is a uniform f32 constant.
    pub konst: Option<f64>,
}

/// The analysis. `hint` carries the type of the node being added when it is already known (the
/// original graph's nodes), which spares the type inference.
#[derive(Default)]
pub struct Typed {
    pub hint: Option<TensorTy>,
}

pub type EG = EGraph<ENode, Typed>;

/// Constant folding is the interpreter's own arithmetic (f64), restricted to the IEEE operations
/// that round correctly (so the folded value is the same on every machine); transcendental
/// functions are left to run time.
fn fold_unary(u: UnaryOp, x: f64) -> Option<f64> {
    let exact = matches!(u, UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Sqrt | UnaryOp::Relu | UnaryOp::Floor);
    let v = crate::interp::unary(u, x);
    (exact && v.is_finite()).then_some(v)
}

fn fold_binary(b: BinaryOp, x: f64, y: f64) -> Option<f64> {
    let exact = matches!(
        b,
        BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul | BinaryOp::Div | BinaryOp::Max | BinaryOp::Min
    );
    let v = crate::interp::binary(b, x, y);
    (exact && v.is_finite()).then_some(v)
}

impl Analysis<ENode> for Typed {
    type Data = Facts;

    fn make(egraph: &mut EG, enode: &ENode, _id: Id) -> Facts {
        let hint = egraph.analysis.hint.take();
        let facts: Vec<&Facts> = enode.args.iter().map(|a| &egraph[*a].data).collect();
        let ty = hint.or_else(|| {
            let tys: Option<Vec<&TensorTy>> = facts.iter().map(|f| f.ty.as_ref()).collect();
            tys.and_then(|tys| infer(&enode.key.op, &tys, enode.key.declared.as_ref()).ok())
        });
        let f32_result = ty.as_ref().is_some_and(|t| t.dtype == DType::F32);
        let arg = |i: usize| facts.get(i).and_then(|f| f.konst);
        let konst = if !f32_result {
            None
        } else {
            match &enode.key.op {
                Op::Const(v) => Some(*v),
                Op::Size(d) => d.as_constant().map(|v| v as f64),
                Op::Broadcast | Op::Reshape | Op::Transpose { .. } => arg(0),
                Op::Unary(u) => arg(0).and_then(|x| fold_unary(*u, x)),
                Op::Binary(b) => match (arg(0), arg(1)) {
                    (Some(x), Some(y)) => fold_binary(*b, x, y),
                    _ => None,
                },
                _ => None,
            }
        };
        Facts { ty, konst }
    }

    fn merge(&mut self, a: &mut Facts, b: Facts) -> DidMerge {
        let mut changed_a = false;
        if a.ty.is_none() && b.ty.is_some() {
            a.ty = b.ty.clone();
            changed_a = true;
        }
        if a.konst.is_none() && b.konst.is_some() {
            a.konst = b.konst;
            changed_a = true;
        }
        DidMerge(changed_a, a.ty != b.ty || a.konst != b.konst)
    }

    /// A class known to be a constant gets the constant itself (`const v`, broadcast to the
    /// class's shape) as a member, so that extraction can drop the computation.
    fn modify(egraph: &mut EG, id: Id) {
        let Some(v) = egraph[id].data.konst else { return };
        let Some(ty) = egraph[id].data.ty.clone() else { return };
        let has_leaf = egraph[id].nodes.iter().any(|n| match &n.key.op {
            Op::Const(_) => true,
            Op::Broadcast => n
                .args
                .first()
                .is_some_and(|c| egraph[*c].nodes.iter().any(|m| matches!(m.key.op, Op::Const(_)))),
            _ => false,
        });
        if has_leaf {
            return;
        }
        let scalar = TensorTy::new(ty.dtype, Vec::new());
        let c = egraph.add(ENode::new(Op::Const(v), Some(scalar), Vec::new()));
        let leaf =
            if ty.shape.is_empty() { c } else { egraph.add(ENode::new(Op::Broadcast, Some(ty), vec![c])) };
        egraph.union(id, leaf);
    }
}
