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

impl Prim {
    /// The signature as documentation (hover, the built-ins snapshot); the typing rule itself is
    /// in `prim_rules.rs`.
    pub fn signature(self) -> &'static str {
        match self {
            Prim::Zeros => "zeros[..S]() -> f32[..S]",
            Prim::Ones => "ones[..S]() -> f32[..S]",
            Prim::Full => "full[..S](v: f32) -> f32[..S]",
            Prim::ZerosLike => "zeros_like(x: T) -> T",
            Prim::OnesLike => "ones_like(x: T) -> T",
            Prim::Arange => "arange[N]() -> i32[N]",
            Prim::Randn => "randn[..S](seed = k) -> f32[..S]",
            Prim::RandUniform => "rand_uniform[..S](lo: f32, hi: f32) -> f32[..S]",
            Prim::RandNormal => "rand_normal[..S](mean: f32, std: f32) -> f32[..S]",
            Prim::Onehot => "onehot(labels: i32[..S], N) -> f32[..S, N]",
            Prim::Exp => "exp(x: f32) -> f32 (lifts)",
            Prim::Log => "log(x: f32) -> f32 (lifts)",
            Prim::Sqrt => "sqrt(x: f32) -> f32 (lifts)",
            Prim::Rsqrt => "rsqrt(x: f32) -> f32 (lifts)",
            Prim::Abs => "abs(x: f32) -> f32 (lifts)",
            Prim::Sign => "sign(x: f32) -> f32 (lifts)",
            Prim::Sin => "sin(x: f32) -> f32 (lifts)",
            Prim::Cos => "cos(x: f32) -> f32 (lifts)",
            Prim::Tanh => "tanh(x: f32) -> f32 (lifts)",
            Prim::Sigmoid => "sigmoid(x: f32) -> f32 (lifts)",
            Prim::Relu => "relu(x: f32) -> f32 (lifts)",
            Prim::Floor => "floor(x: f32) -> f32 (lifts)",
            Prim::Pow => "pow(x: f32, y: f32) -> f32 (lifts, broadcasts)",
            Prim::Clamp => "clamp(x: f32, lo: f32, hi: f32) -> f32 (lifts, broadcasts)",
            Prim::Where => "where(c: bool, a: T, b: T) -> T (lifts, broadcasts)",
            Prim::Max => "max(a, b) elementwise (broadcasts) | max(x, axis = k or (k, …)) reduction",
            Prim::Min => "min(a, b) elementwise (broadcasts) | min(x, axis = k or (k, …)) reduction",
            Prim::Sum => "sum(x, axis = k or (k, …)) removes the axes (none: all)",
            Prim::Mean => "mean(x, axis = k or (k, …)) removes the axes (none: all)",
            Prim::Prod => "prod(x, axis = k or (k, …)) removes the axes (none: all)",
            Prim::Logsumexp => "logsumexp(x, axis = k or (k, …)) removes the axes (none: all)",
            Prim::Argmax => "argmax(x, axis = k) -> i32[…] (the axis removed)",
            Prim::Reshape => "reshape[..S](x) -> f32[..S] (same element count)",
            Prim::Transpose => "transpose(x, perm = (…)) (default: all axes reversed)",
            Prim::Concat => "concat((a, b, …), axis = k) (default axis 0)",
            Prim::Flatten => "flatten(x: T[B, ..S]) -> T[B, product(S)]",
            Prim::Broadcast => "broadcast[..S](x) -> T[..S]",
            Prim::Conv1d => {
                "conv1d(x: f32[B, Cin, L], w: f32[Cout, Cin, K], stride = 1, pad = 0, dilation = 1) -> f32[B, Cout, (L + 2*pad - dilation*(K - 1) - 1)/stride + 1]"
            }
            Prim::Conv2d => {
                "conv2d(x: f32[B, Cin, H, W], w: f32[Cout, Cin, KH, KW], stride = 1, pad = 0, dilation = 1) -> f32[B, Cout, (H + 2*pad - dilation*(KH - 1) - 1)/stride + 1, …]"
            }
            Prim::ConvTranspose2d => {
                "conv_transpose2d(x: f32[B, Cin, H, W], w: f32[Cin, Cout, KH, KW], stride = 1, pad = 0, dilation = 1) -> f32[B, Cout, (H - 1)*stride - 2*pad + dilation*(KH - 1) + 1, …]"
            }
            Prim::Maxpool2d => {
                "maxpool2d(x: f32[B, C, H, W], (KH, KW), stride = (KH, KW), pad = 0) -> f32[B, C, (H + 2*pad - KH)/stride + 1, …]"
            }
            Prim::Meanpool2d => {
                "meanpool2d(x: f32[B, C, H, W], (KH, KW), stride = (KH, KW), pad = 0) -> f32[B, C, (H + 2*pad - KH)/stride + 1, …]"
            }
            Prim::Softmax => "softmax(x, axis = -1) -> same shape",
            Prim::Logsoftmax => "logsoftmax(x, axis = -1) -> same shape",
            Prim::Dropout => "dropout(x, p: f32) -> same shape (the identity when not training)",
            Prim::Print => "print(x, …) -> ()",
            Prim::Load => "load[T](path: str) -> T | load[MODEL](path: str) -> MODEL with those weights",
            Prim::Save => "save(path: str, x) -> ()",
            Prim::ReadText => "read_text(path: str) -> str",
            Prim::WriteText => "write_text(path: str, s: str) -> ()",
            Prim::Now => "now() -> f32",
            Prim::Env => "env(name: str) -> str",
            Prim::Orthogonal => "orthogonal[..S](gain: f32 = 1.0) -> f32[..S] (at least 2 dims)",
            Prim::TruncatedNormal => {
                "truncated_normal[..S](mean = 0.0, std = 1.0, lo = -2.0, hi = 2.0) -> f32[..S]"
            }
            Prim::Chain => "Chain(l1, …, ln): x -> ln(…l1(x)) (functions allowed as layers)",
            Prim::Parallel => "Parallel(connection, l1, …, ln): x -> connection(l1(x), …, ln(x))",
            Prim::SkipConnection => "SkipConnection(layer, connection): x -> connection(layer(x), x)",
            Prim::Recur => {
                "Recur(cell): f32[B, T, ..In] -> f32[B, T, ..Out] (cell: (x, state) -> (y, state), zero initial state); field `cell`"
            }
            Prim::BatchNorm => {
                "BatchNorm[C](act = identity, momentum = 0.1, eps = 1e-5): f32[B, C, ..S] -> f32[B, C, ..S]; weight, bias, state running_mean, running_var"
            }
            Prim::GroupNorm => {
                "GroupNorm[G, C](eps = 1e-5): f32[B, C, ..S] -> f32[B, C, ..S] (G divides C); weight, bias"
            }
            Prim::ClipValue => "ClipValue(v: f32): clamps each gradient element to [-v, v]",
            Prim::ClipNorm => {
                "ClipNorm(n: f32): scales all gradients together to a global L2 norm of at most n"
            }
            Prim::WeightDecay => {
                "WeightDecay(weight_decay: f32 = 0.0005): adds weight_decay * p to the gradient"
            }
            Prim::OptimiserChain => "OptimiserChain(o1, …, on): applies each rule in turn",
        }
    }
}

impl Prim {
    /// What a std built-in does, in words (hover and the reference page); the primitives outside
    /// `std` have none here, their signature says enough.
    pub fn doc(self) -> &'static str {
        match self {
            Prim::Zeros => "All zeros (pure): the default bias initialiser.",
            Prim::Ones => "All ones (pure): LayerNorm's and BatchNorm's default weight.",
            Prim::Tanh => "Hyperbolic tangent, `(e^x - e^-x) / (e^x + e^-x)`.",
            Prim::Sigmoid => "Logistic sigmoid, `1 / (1 + e^-x)`.",
            Prim::Relu => "Rectified linear unit, `max(x, 0)` (gradient 0 at 0, as PyTorch).",
            Prim::Orthogonal => {
                "A (semi-)orthogonal matrix times `gain` (torch.nn.init.orthogonal_ / Flux.orthogonal): \
                 the QR factor, with a positive diagonal in R, of a normal matrix whose rows are the \
                 first axis and whose columns are the other axes flattened."
            }
            Prim::TruncatedNormal => {
                "Normal values with `mean` and `std` truncated to `[lo, hi]`, drawn by mapping a uniform \
                 through the normal's inverse CDF between the bounds (Flux.truncated_normal)."
            }
            Prim::Chain => "Applies the layers in order: `ln(…l2(l1(x)))`; parameters under `0.`, `1.`, … .",
            Prim::Parallel => {
                "Applies every layer to the same input and joins the results with `connection` \
                 (a function of n arguments; scalar functions lift)."
            }
            Prim::SkipConnection => {
                "A residual connection: `connection(layer(x), x)`, e.g. `SkipConnection(Dense(8 => 8), add)`; \
                 the layer's parameters are under `0.`."
            }
            Prim::Recur => {
                "Runs a recurrent cell over axis 1 of `[B, T, In]` from a zero state and returns every \
                 step's output `[B, T, Out]` (Flux.Recur); the cell is the field `cell`."
            }
            Prim::BatchNorm => {
                "Batch normalisation over every axis but the channel axis 1 (torch.nn.BatchNorm1d/2d): in \
                 training, batch statistics (biased variance) normalise and update `running_mean` and \
                 `running_var` (unbiased) with `momentum`; in inference, the running statistics normalise."
            }
            Prim::GroupNorm => {
                "Group normalisation (torch.nn.GroupNorm): the channels split into `G` groups, each \
                 normalised over its channels and the spatial axes, then a per-channel affine."
            }
            Prim::ClipValue => {
                "Clamps every gradient element to `[-v, v]` (torch.nn.utils.clip_grad_value_)."
            }
            Prim::ClipNorm => {
                "Scales all gradients together by `min(1, n / (norm + 1e-6))`, `norm` their global L2 norm \
                 (torch.nn.utils.clip_grad_norm_)."
            }
            Prim::WeightDecay => {
                "Adds `weight_decay * p` to each gradient (L2 regularisation, torch.optim.SGD's `weight_decay`)."
            }
            Prim::OptimiserChain => {
                "Applies gradient rules in order, then the optimizer that ends the chain: \
                 `OptimiserChain(ClipNorm(1.0), WeightDecay(1e-4), Adam())`."
            }
            _ => "",
        }
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
