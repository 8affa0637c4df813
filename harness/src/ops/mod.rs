//! The op registry: every op nanhunt can put in a model, one file each, and the
//! one trait ([`Op`], in `op.rs`; elementwise ops implement the smaller
//! [`Elementwise`]) that says everything about it: its attributes' checks, its
//! shape, the memory and graph depth it needs, its forward (whose backward is
//! PyTorch's), its autocast class, what it can explain when a value goes
//! non-finite, and its PyTorch line for `export-torch`.
//!
//! `registry.rs` lists the ops once; the `[model]` table's `Layer` enum, the
//! plan, the runner, the cause engine and the exporter all read that list, so an
//! op that forgets an answer does not compile, and a test enumerates the list
//! (`registry::tests`) so one that answers wrongly fails `cargo test`.
//!
//! Adding an op: write `ops/<name>.rs` with a struct that derives the scenario
//! traits and implements [`Op`], then add one line to `registry.rs`.

use crate::scenario::DTypeName;
pub use diagnosis::{Limits, Rule};
pub use elementwise::Elementwise;
pub use op::{Cx, Inner, Op, Params, Rounding, State, Table, Torch};

pub mod attention;
pub mod clamp;
pub mod conv;
pub mod diagnosis;
mod elementwise;
pub mod embedding;
pub mod expr;
pub mod flatten;
pub mod gated;
pub mod linear;
pub mod logsigmoid;
pub mod loss;
pub mod normalize;
pub mod onnx;
mod op;
pub mod pool2d;
mod registry;
pub mod residual;
pub mod rnn;
pub(crate) mod rounding;
pub mod seq_pool;
pub mod softsign;

pub mod abs;
pub mod batch_norm;
pub mod dropout;
pub mod elu;
pub mod exp;
pub mod flawed_square;
pub mod gelu;
pub mod identity;
pub mod layer_norm;
pub mod leaky_relu;
pub mod log;
pub mod pow;
pub mod reciprocal;
pub mod relu;
pub mod rms_norm;
pub mod sigmoid;
pub mod silu;
pub mod softmax;
pub mod softplus;
pub mod sqrt;
pub mod tanh;

pub use registry::examples;

/// Where an op computes under autocast (`train.precision = amp_*`), from PyTorch's CUDA
/// autocast lists (`aten/src/ATen/autocast_mode.h`). Its snake_case name is what the exporter
/// writes for `repro.py`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Autocast {
    /// In the low dtype (`AT_FORALL_LOWER_PRECISION_FP`): its input and parameters are cast down.
    Low,
    /// In f32 (`AT_FORALL_FP32`): its input is cast up.
    F32,
    /// In its input's dtype (on no list).
    Same,
}

/// What the cause engine knows at the first non-finite element an op produced (forward) or
/// whose gradient it produced (backward).
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// The op's input at that element.
    pub x: f64,
    /// The gradient arriving at the op's output there (backward only; NaN in forward).
    pub grad: f64,
    /// The dtype the op computed in.
    pub dtype: DTypeName,
    /// That dtype's limits.
    pub lim: Limits,
    /// The whole tensor read, summarised: the input in forward, the arriving gradient in backward.
    pub read: Read,
    /// The element's flat index in the node's input (forward) or output (backward).
    pub index: usize,
    /// The dimensions of the input read (forward) or of the output (backward).
    pub dims: &'a [usize],
    /// Whether the op ran in training (false: in evaluation, the `validation.*` tensors).
    pub training: bool,
}

impl Facts<'static> {
    /// Facts about one element alone (`x`, `grad`, in `dtype`), the tensor around it unknown
    /// (read as finite): what the elementwise ops' rules need.
    pub fn at(x: f64, grad: f64, dtype: DTypeName) -> Self {
        Facts { x, grad, dtype, lim: Limits::of(dtype), read: Read { infinite: 0, nan: 0, min: x, max: x }, index: 0, dims: &[], training: true }
    }
}

/// A tensor summarised for the diagnosis rules.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Read {
    /// How many of its values are ±inf.
    pub infinite: usize,
    /// How many are NaN.
    pub nan: usize,
    /// Its smallest finite value.
    pub min: f64,
    /// Its largest finite value.
    pub max: f64,
}

/// A diagnosis: the rule that explains the value, and the reason in plain words.
pub type Explained = Option<(Rule, String)>;

/// `(key, "must be a finite number, got v")` if `v` is not finite: the check of an op's numeric attribute.
pub fn finite(key: &'static str, v: f64) -> Option<(&'static str, String)> {
    (!v.is_finite()).then(|| (key, format!("must be a finite number, got {v}")))
}

/// `(key, "must be in [0, 1), got v")` unless `0 ≤ v < 1`: the check of a probability of dropping.
pub fn unit_interval(key: &'static str, v: f64) -> Option<(&'static str, String)> {
    (!(0.0..1.0).contains(&v)).then(|| (key, format!("must be in [0, 1), got {v}")))
}

/// `(key, "must be a positive finite number, got v")` unless `v` is finite and above 0: the check of an epsilon.
pub fn positive(key: &'static str, v: f64) -> Option<(&'static str, String)> {
    (!(v > 0.0 && v.is_finite())).then(|| (key, format!("must be a positive finite number, got {v}")))
}

/// Why the gradient an op made at `f.x` is non-finite when its derivative (`derivative`, in
/// words) is infinite at exactly 0 and `f.x` is 0: `0 · ∞` if the arriving gradient is 0.
pub fn infinite_at_zero(derivative: &str, f: &Facts<'_>) -> Explained {
    (f.x == 0.0).then(|| {
        if f.grad == 0.0 {
            (Rule::ZeroTimesInf, format!("the gradient arriving here is exactly 0 and {derivative} is infinite at x = 0: the chain rule's product 0 · ∞ is NaN"))
        } else {
            (Rule::DerivativeAtZero, format!("{derivative} is infinite at x = 0, so the gradient arriving here ({}) becomes ±∞", crate::human(f.grad)))
        }
    })
}

/// The [`Op::explain_zeros`] of an op whose derivative (`derivative`, in words) is infinite at 0.
pub fn zeros_read(derivative: &str, zeros: usize, n: usize) -> Explained {
    (zeros > 0).then(|| (Rule::DerivativeAtZero, format!("{derivative} is infinite at 0, and {zeros} of the {n} values this layer reads are exactly 0")))
}

/// The diagnosis answers of an op no rule explains, inside its `impl Op` (whose file imports
/// `scenario::Part`): `explain_forward`, `explain_backward` and `explain_zeros` are all `None`.
macro_rules! undiagnosed {
    () => {
        fn explain_forward(&self, _: Part, _: &$crate::ops::Facts<'_>) -> $crate::ops::Explained {
            None
        }

        fn explain_backward(&self, _: &$crate::ops::Facts<'_>) -> $crate::ops::Explained {
            None
        }

        fn explain_zeros(&self, _: usize, _: usize) -> $crate::ops::Explained {
            None
        }
    };
}
pub(crate) use undiagnosed;

/// Problems with a layer's init override (keyed `init.std`, ...), in validation's words.
pub fn init_problems(init: Option<&crate::scenario::Init>) -> Vec<(&'static str, String)> {
    use crate::scenario::Init;
    match init.copied() {
        None | Some(Init::Torch | Init::Keras) => Vec::new(),
        Some(Init::Normal { std: v }) => (!(v >= 0.0 && v.is_finite())).then(|| ("init.std", format!("must be a finite number ≥ 0, got {v}"))).into_iter().collect(),
        Some(Init::Uniform { bound: v }) => (!(v >= 0.0 && v.is_finite())).then(|| ("init.bound", format!("must be a finite number ≥ 0, got {v}"))).into_iter().collect(),
        Some(Init::Constant { value }) => finite("init.value", value).into_iter().collect(),
        Some(Init::File) => vec![("init.kind", "`file` is an imported model's own values: only `[model] init` of a model with `onnx = \"...\"` takes it".to_string())],
    }
}

/// The length and width of a sequence input, or why a layer of type `kind` cannot read `input`
/// (an image wants a flatten layer first), in the plan's words.
pub fn sequence(kind: &str, input: crate::scenario::Shape) -> std::result::Result<(usize, usize), String> {
    use crate::scenario::Shape;
    match input {
        Shape::Seq { len, width } => Ok((len, width)),
        Shape::Image { .. } => Err(format!("a {kind} layer cannot take {}: put a flatten layer first", input.describe())),
        Shape::Flat(_) | Shape::Tokens { .. } => Err(format!("a {kind} layer needs sequence input (batch, seq, width), and gets {}", input.describe())),
    }
}

/// Refuses images for a layer over the last dimension (`kind` is the layer's type), in the plan's words.
pub(crate) fn not_images(kind: &str, input: crate::scenario::Shape) -> std::result::Result<(), String> {
    use crate::scenario::Shape;
    match input {
        Shape::Image { .. } => Err(format!("a {kind} layer cannot take {}: put a flatten layer first", input.describe())),
        Shape::Flat(_) | Shape::Seq { .. } | Shape::Tokens { .. } => Ok(()),
    }
}

/// The error of an op asked to compute a node the plan never gives it (`what`): a mistake in
/// the plan, not in the scenario.
pub(crate) fn unplanned(what: String) -> crate::error::Error {
    candle_core::Error::Msg(format!("the plan gives no such node: {what}")).into()
}

/// `v` as a Python float literal (`float('inf')` for infinities, `float('nan')` for NaN).
pub fn py(v: f64) -> String {
    if v.is_nan() {
        "float('nan')".into()
    } else if v.is_infinite() {
        if v > 0.0 { "float('inf')" } else { "float('-inf')" }.into()
    } else {
        format!("{v:?}")
    }
}
