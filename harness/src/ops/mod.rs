//! The op registry: every op nanhunt can put in a model, one file each, and the
//! one trait ([`Op`]) that says everything about it: its attributes' checks, its
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

use candle_core::Tensor;

use crate::error::Result;
use crate::scenario::{DTypeName, Shape};
pub use diagnosis::{Limits, Rule};

pub mod clamp;
pub mod diagnosis;
pub mod logsigmoid;
pub mod normalize;
mod registry;
pub(crate) mod rounding;
pub mod softsign;

pub mod abs;
pub mod elu;
pub mod exp;
pub mod flawed_square;
pub mod gelu;
pub mod identity;
pub mod leaky_relu;
pub mod log;
pub mod pow;
pub mod reciprocal;
pub mod relu;
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
pub struct Facts {
    /// The op's input at that element.
    pub x: f64,
    /// The gradient arriving at the op's output there (backward only; NaN in forward).
    pub grad: f64,
    /// The dtype the op computed in.
    pub dtype: DTypeName,
    /// That dtype's limits.
    pub lim: Limits,
}

/// A diagnosis: the rule that explains the value, and the reason in plain words.
pub type Explained = Option<(Rule, String)>;

/// Everything nanhunt knows about one op. No method has a default: an op answers each.
pub trait Op: std::fmt::Debug + Send + Sync {
    /// Problems with the attributes, each as (attribute key, message), e.g. `("eps", "must be positive")`.
    fn check(&self) -> Vec<(&'static str, String)>;
    /// The output shape for one example of `input` (the batch left out), or why it does not fit.
    fn shape(&self, input: Shape) -> std::result::Result<Shape, String>;
    /// Values per example the op holds for a training step, given `output`, the values its
    /// output and gradient take (as `scenario::memory` counts them); most ops hold just that.
    fn held(&self, input: Shape, output: u128) -> u128;
    /// Autograd graph levels it adds: its own, and per time step of the sequence it reads.
    fn levels(&self) -> (u64, u64);
    /// The forward pass; its backward (through Candle's graph or a custom op) is PyTorch's.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// Where it computes under autocast.
    fn autocast(&self) -> Autocast;
    /// Why its output went non-finite at an element whose input was `f.x`, if a rule knows.
    fn explain_forward(&self, f: &Facts) -> Explained;
    /// Why its backward made its input's gradient non-finite at an element (`f.x`, `f.grad`).
    fn explain_backward(&self, f: &Facts) -> Explained;
    /// Why its backward may have made a parameter's gradient non-finite in a step where it
    /// read `zeros` exact zeros among `n` values (the fallback when no output gradient was
    /// caught non-finite): e.g. `sqrt`'s derivative is infinite at 0. Most ops answer `None`.
    fn explain_zeros(&self, zeros: usize, n: usize) -> Explained;
    /// Its PyTorch line for `repro.py`: a Python expression of the tensor `x`, with `torch` and
    /// `F` (`torch.nn.functional`) in scope, e.g. `F.softsign(x)`; numbers written with [`py`].
    fn torch(&self) -> String;
}

/// `(key, "must be a finite number, got v")` if `v` is not finite: the check of an op's numeric attribute.
pub fn finite(key: &'static str, v: f64) -> Option<(&'static str, String)> {
    (!v.is_finite()).then(|| (key, format!("must be a finite number, got {v}")))
}

/// Why the gradient an op made at `f.x` is non-finite when its derivative (`derivative`, in
/// words) is infinite at exactly 0 and `f.x` is 0: `0 · ∞` if the arriving gradient is 0.
pub fn infinite_at_zero(derivative: &str, f: &Facts) -> Explained {
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
