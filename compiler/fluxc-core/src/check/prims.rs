//! The built-in names: the primitives of §6 and the parts of std that the language cannot express
//! (§12.12). Their typing rules live in `call.rs`; this file is the closed list and its metadata.

use super::ty::Effect;

macro_rules! prims {
    ($($variant:ident = $name:literal, $module:expr, $effect:ident;)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Prim { $($variant,)* }

        impl Prim {
            pub const ALL: &'static [Prim] = &[$(Prim::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Prim::$variant => $name,)* }
            }

            /// The std module that exports it (`use std::layers::Chain`), if any.
            pub fn module(self) -> Option<&'static str> {
                match self { $(Prim::$variant => $module,)* }
            }

            /// The effect of calling it (§5, §12.12).
            pub fn effect(self) -> Effect {
                match self { $(Prim::$variant => Effect::$effect,)* }
            }

            pub fn from_name(name: &str) -> Option<Prim> {
                match name { $($name => Some(Prim::$variant),)* _ => None }
            }
        }
    };
}

const ACT: Option<&str> = Some("act");
const INIT: Option<&str> = Some("init");
const LAYERS: Option<&str> = Some("layers");
const OPTIM: Option<&str> = Some("optim");

prims! {
    // creation
    Zeros = "zeros", INIT, Pure;
    Ones = "ones", INIT, Pure;
    Full = "full", None, Pure;
    ZerosLike = "zeros_like", None, Pure;
    OnesLike = "ones_like", None, Pure;
    Arange = "arange", None, Pure;
    Randn = "randn", None, Pure;
    RandUniform = "rand_uniform", None, Rng;
    RandNormal = "rand_normal", None, Rng;
    Onehot = "onehot", None, Pure;
    // elementwise, one argument
    Exp = "exp", None, Pure;
    Log = "log", None, Pure;
    Sqrt = "sqrt", None, Pure;
    Rsqrt = "rsqrt", None, Pure;
    Abs = "abs", None, Pure;
    Sign = "sign", None, Pure;
    Sin = "sin", None, Pure;
    Cos = "cos", None, Pure;
    Tanh = "tanh", ACT, Pure;
    Sigmoid = "sigmoid", ACT, Pure;
    Relu = "relu", ACT, Pure;
    Floor = "floor", None, Pure;
    // elementwise, several arguments
    Pow = "pow", None, Pure;
    Clamp = "clamp", None, Pure;
    Where = "where", None, Pure;
    // `max`/`min`: two arguments elementwise, one argument a reduction
    Max = "max", None, Pure;
    Min = "min", None, Pure;
    // reductions
    Sum = "sum", None, Pure;
    Mean = "mean", None, Pure;
    Prod = "prod", None, Pure;
    Logsumexp = "logsumexp", None, Pure;
    Argmax = "argmax", None, Pure;
    // shape
    Reshape = "reshape", None, Pure;
    Transpose = "transpose", None, Pure;
    Concat = "concat", None, Pure;
    Flatten = "flatten", None, Pure;
    Broadcast = "broadcast", None, Pure;
    // linear algebra and NN
    Conv1d = "conv1d", None, Pure;
    Conv2d = "conv2d", None, Pure;
    ConvTranspose2d = "conv_transpose2d", None, Pure;
    Maxpool2d = "maxpool2d", None, Pure;
    Meanpool2d = "meanpool2d", None, Pure;
    Softmax = "softmax", None, Pure;
    Logsoftmax = "logsoftmax", None, Pure;
    Dropout = "dropout", None, Rng;
    // I/O
    Print = "print", None, Io;
    Load = "load", None, Io;
    Save = "save", None, Io;
    ReadText = "read_text", None, Io;
    WriteText = "write_text", None, Io;
    Now = "now", None, Io;
    Env = "env", None, Io;
    // std built-ins (§12.12)
    Orthogonal = "orthogonal", INIT, Rng;
    TruncatedNormal = "truncated_normal", INIT, Rng;
    Chain = "Chain", LAYERS, Pure;
    Parallel = "Parallel", LAYERS, Pure;
    SkipConnection = "SkipConnection", LAYERS, Pure;
    Recur = "Recur", LAYERS, Pure;
    BatchNorm = "BatchNorm", LAYERS, Pure;
    GroupNorm = "GroupNorm", LAYERS, Pure;
    ClipValue = "ClipValue", OPTIM, Pure;
    ClipNorm = "ClipNorm", OPTIM, Pure;
    WeightDecay = "WeightDecay", OPTIM, Pure;
    OptimiserChain = "OptimiserChain", OPTIM, Pure;
}

impl Prim {
    /// Scalar functions of one `f32` that lift elementwise (usable as an `Activation`).
    pub fn is_unary_elementwise(self) -> bool {
        matches!(
            self,
            Prim::Exp
                | Prim::Log
                | Prim::Sqrt
                | Prim::Rsqrt
                | Prim::Abs
                | Prim::Sign
                | Prim::Sin
                | Prim::Cos
                | Prim::Tanh
                | Prim::Sigmoid
                | Prim::Relu
                | Prim::Floor
        )
    }

    /// Allowed in an optimizer's `update` (§12.17–§12.18: arithmetic, lifted scalar functions and
    /// the elementwise rng primitives).
    pub fn is_elementwise(self) -> bool {
        self.is_unary_elementwise()
            || matches!(
                self,
                Prim::Pow
                    | Prim::Clamp
                    | Prim::Where
                    | Prim::ZerosLike
                    | Prim::OnesLike
                    | Prim::RandUniform
                    | Prim::RandNormal
            )
    }

    /// Built-in layers: calling one constructs a layer value.
    pub fn is_layer(self) -> bool {
        matches!(
            self,
            Prim::Chain
                | Prim::Parallel
                | Prim::SkipConnection
                | Prim::Recur
                | Prim::BatchNorm
                | Prim::GroupNorm
        )
    }

    pub fn is_optimizer_wrapper(self) -> bool {
        matches!(self, Prim::ClipValue | Prim::ClipNorm | Prim::WeightDecay | Prim::OptimiserChain)
    }

    /// The names std modules export that are built in rather than written in `stdlib/`.
    pub fn exported_by(module: &str) -> impl Iterator<Item = Prim> + '_ {
        Prim::ALL.iter().copied().filter(move |p| p.module() == Some(module))
    }
}

/// The std modules (§7).
pub const STD_MODULES: [&str; 5] = ["act", "init", "layers", "losses", "optim"];

/// Train-block built-ins (§7, §10.11): looked up first inside train values, nowhere else.
pub const TRAIN_BUILTINS: [&str; 12] = [
    "constant",
    "step_decay",
    "cosine",
    "warmup",
    "log",
    "checkpoint",
    "early_stop",
    "nan_guard",
    "accuracy",
    "loss",
    "val_loss",
    "val_accuracy",
];
