//! The scenario: a declarative training setup, as read from a TOML file.
//!
//! These types are the file format. Every table rejects unknown keys, so a typo
//! is a `FILE:LINE:COL` error (see [`crate::load`]) rather than a silent
//! default. Values that parse but cannot train (a negative learning rate, a
//! zero batch size, shapes that do not fit) are caught by
//! [`crate::validate`] before any tensor is allocated.

use serde::{Deserialize, Serialize};

/// One training setup: data, model, loss, optimizer and schedule, plus what a check expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports and trace file names.
    pub name: String,
    /// What the scenario reproduces, and where it comes from.
    #[serde(default)]
    pub description: String,
    /// The one seed behind data, initialisation, shuffling and injection.
    #[serde(default)]
    pub seed: u64,
    /// Inputs, targets, injections, preprocessing and splits.
    pub data: DataSpec,
    /// The layer stack.
    pub model: ModelSpec,
    /// The training loss.
    pub loss: LossSpec,
    /// The optimizer and gradient clipping.
    pub optimizer: OptimizerSpec,
    /// Epochs, batches, dtype, device and limits.
    #[serde(default)]
    pub train: TrainSpec,
    /// What `nanhunt check` expects of this scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// Which knobs a hunt may move, and how far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchSpec>,
    /// Directory of the file this was read from, for relative data paths.
    #[serde(skip)]
    pub dir: Option<std::path::PathBuf>,
}

/// Where the rows come from and what happens to them before training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Number of rows to generate (synthetic inputs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// Number of input features per row (or per time step, for sequences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<usize>,
    /// Sequence length: inputs become `(n, seq_len, features)` for recurrent models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<usize>,
    /// How the inputs are made.
    pub inputs: InputSpec,
    /// Per-feature multipliers applied after generation (one per feature).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale: Vec<f64>,
    /// Groups of features multiplied by a factor, e.g. `{ first = 5, factor = 100.0 }`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale_groups: Vec<ScaleGroup>,
    /// How the targets are made (absent for CSV inputs, which carry their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetSpec>,
    /// Validation split or k-fold cross-validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationSpec>,
    /// Corruptions injected into a split after it is made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inject: Vec<Injection>,
    /// Preprocessing steps, fitted on the training split, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preprocess: Vec<Preprocess>,
    /// Multiplies every target after it is made (before injection and preprocessing).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub target_scale: f64,
}

/// A contiguous group of features sharing one scale factor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleGroup {
    /// Index of the first feature in the group (default 0).
    #[serde(default)]
    pub start: usize,
    /// Number of features in the group.
    pub first: usize,
    /// Multiplier for those features.
    pub factor: f64,
}

/// The source of input rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum InputSpec {
    /// Independent normal draws.
    Normal {
        /// Mean of every feature.
        #[serde(default)]
        mean: f64,
        /// Standard deviation of every feature.
        #[serde(default = "one")]
        std: f64,
    },
    /// Independent uniform draws in `[low, high)`.
    Uniform {
        /// Lower bound.
        #[serde(default)]
        low: f64,
        /// Upper bound.
        #[serde(default = "one")]
        high: f64,
    },
    /// Explicit rows, each `features` (× `seq_len`) values long.
    Values {
        /// The rows.
        rows: Vec<Vec<f64>>,
    },
    /// A CSV file with a header; `targets` names the target columns, the rest are features.
    Csv {
        /// Path, relative to the scenario file.
        path: String,
        /// Target column names.
        targets: Vec<String>,
    },
}

/// How targets are made from the inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetSpec {
    /// 0/1 labels, one column (like `torch.randint(0, 2, (n,))`).
    Binary,
    /// One of `k` classes, one-hot encoded in `k` columns.
    Classes {
        /// Number of classes.
        k: usize,
    },
    /// Uniform regression targets in `[low, high)`.
    Uniform {
        /// Lower bound.
        #[serde(default)]
        low: f64,
        /// Upper bound.
        #[serde(default = "one")]
        high: f64,
        /// Number of target columns.
        #[serde(default = "one_usize")]
        outputs: usize,
    },
    /// Normal regression targets.
    Normal {
        /// Mean.
        #[serde(default)]
        mean: f64,
        /// Standard deviation.
        #[serde(default = "one")]
        std: f64,
        /// Number of target columns.
        #[serde(default = "one_usize")]
        outputs: usize,
    },
    /// `y = x · w + noise`, with `w` drawn from a standard normal (one column).
    Linear {
        /// Standard deviation of the added noise.
        #[serde(default)]
        noise: f64,
    },
    /// Explicit targets: one value per row, or one row of values per row.
    Values {
        /// The targets, one entry per input row.
        values: Vec<TargetRow>,
    },
}

/// One row of explicit targets: a bare number or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetRow {
    /// A single target column.
    One(f64),
    /// Several target columns.
    Many(Vec<f64>),
}

/// The validation data: a held-out fraction, k folds, or a separate set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSpec {
    /// Hold out this fraction of the rows: the last rows, unshuffled (Keras's `validation_split`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// K-fold cross-validation: train `kfold` models, each validated on one fold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kfold: Option<usize>,
    /// A separate validation set of this many rows, drawn like the training inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// A separate, explicit validation set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<InputSpec>,
    /// Targets for an explicit validation set (`inputs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetSpec>,
}

/// A corruption of some cells of one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Injection {
    /// What to write into the chosen cells.
    pub value: InjectValue,
    /// Which split: `train`, `validation` or `both`.
    #[serde(default)]
    pub split: SplitSel,
    /// Inputs or targets.
    #[serde(default)]
    pub into: InjectInto,
    /// Fraction of cells to corrupt, chosen by the seeded injection stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// Explicit rows (with `columns`, the cells are their product).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<usize>,
    /// Explicit columns (all columns if empty and `rows` is given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<usize>,
    /// Magnitude of `outlier` values (sign is drawn).
    #[serde(default = "outlier_default")]
    pub magnitude: f64,
}

/// The value an injection writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
pub enum InjectValue {
    /// Not a number.
    Nan,
    /// Positive infinity.
    Inf,
    /// Negative infinity.
    NegInf,
    /// Exact zero.
    Zero,
    /// ± `magnitude`.
    Outlier,
}

/// Which split an injection or preprocessing step touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
pub enum SplitSel {
    /// Training rows only.
    #[default]
    Train,
    /// Validation rows only.
    Validation,
    /// Both.
    Both,
}

/// Inputs or targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
pub enum InjectInto {
    /// The input features.
    #[default]
    Inputs,
    /// The targets.
    Targets,
}

/// One preprocessing step. Statistics are fitted on the training split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Preprocess {
    /// `(x - mean) / std` per column (sklearn's StandardScaler: population std, std 0 → 1).
    Standardize {
        /// Columns (all if empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<usize>,
    },
    /// `(x - min) / (max - min)` per column (sklearn's MinMaxScaler: range 0 → 1).
    MinMax {
        /// Columns (all if empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<usize>,
    },
    /// `1 / x`; with `guard`, exact zeros become `guard` instead (seed 001's `np.where`).
    Reciprocal {
        /// Columns (all if empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<usize>,
        /// Value written where `x == 0`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guard: Option<f64>,
    },
    /// Natural log; with `epsilon`, `log(x + epsilon)`.
    Log {
        /// Columns (all if empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<usize>,
        /// Added before the log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epsilon: Option<f64>,
    },
    /// Clamp into `[min, max]`.
    Clip {
        /// Columns (all if empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<usize>,
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
    /// Replace non-finite cells by the column's mean over finite training cells.
    ImputeMean {
        /// Columns (all if empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<usize>,
    },
    /// Drop every row with a non-finite input or target.
    DropNonfinite,
}

/// The model: a stack of layers applied in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Default initialisation for every parameterised layer.
    #[serde(default)]
    pub init: Init,
    /// The layers; an empty stack passes the inputs through as predictions.
    #[serde(default)]
    pub layers: Vec<Layer>,
    /// Multiplies every initial weight and bias (not layer-norm gains and shifts).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub init_scale: f64,
}

/// Weight initialisation.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Init {
    /// PyTorch's default: kaiming-uniform weights and `U(±1/sqrt(fan_in))` biases.
    #[default]
    Torch,
    /// Keras's default: glorot-uniform kernels, orthogonal recurrent kernels, zero biases.
    Keras,
    /// Normal weights with this std, zero biases.
    Normal {
        /// Standard deviation.
        std: f64,
    },
    /// Uniform weights in `±bound`, zero biases.
    Uniform {
        /// Bound.
        bound: f64,
    },
    /// A constant weight, zero biases (closed-form tests).
    Constant {
        /// The weight value.
        value: f64,
    },
}

/// One layer of the stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Layer {
    /// Fully connected: `x W + b`, with `W` stored `(in, out)` like a Keras kernel.
    Linear {
        /// Output width.
        out: usize,
        /// Override of the model's init.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        init: Option<Init>,
    },
    /// Elman RNN with tanh; returns the last hidden state (Keras SimpleRNN, torch nn.RNN).
    Rnn {
        /// Hidden size.
        hidden: usize,
        /// Override of the model's init.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        init: Option<Init>,
    },
    /// `max(x, 0)`.
    Relu,
    /// Logistic sigmoid.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// GELU (erf form, PyTorch's default).
    Gelu,
    /// `log(1 + exp(x))`, linear above 20 as in PyTorch.
    Softplus,
    /// No-op.
    Identity,
    /// Layer normalisation over the last dimension with learnable scale and shift.
    LayerNorm {
        /// Variance epsilon.
        #[serde(default = "ln_eps")]
        eps: f64,
    },
    /// Softmax over the last dimension (max-subtracted).
    Softmax,
    /// Elementwise square root (infinite gradient at 0).
    Sqrt,
    /// Elementwise natural log (−inf at 0).
    Log,
    /// Elementwise `1/x`.
    Reciprocal,
    /// Elementwise `|x|`.
    Abs,
    /// Elementwise `exp(x)`.
    Exp,
    /// Elementwise `x^exponent`.
    Pow {
        /// The exponent.
        exponent: f64,
    },
    /// `x²` whose hand-written backward divides by zero (seed 002 ex3's flawed custom layer).
    FlawedSquare,
}

/// The loss function and its stabilisers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossSpec {
    /// Which loss.
    pub kind: LossKind,
    /// Huber threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    /// Clamp probabilities into `[clamp, 1 - clamp]` before the log (the seeds' fix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clamp: Option<f64>,
    /// Added inside logs (`log(p + eps)`) or to ratio denominators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// Mean (default) or sum over elements.
    #[serde(default)]
    pub reduction: Reduction,
}

/// The supported losses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Mean squared error.
    Mse,
    /// Mean absolute error.
    Mae,
    /// Huber loss with `delta`.
    Huber,
    /// `−(y log p + (1−y) log(1−p))` exactly, no clamping.
    Bce,
    /// PyTorch's `binary_cross_entropy`: logs clamped at −100.
    BceTorch,
    /// `binary_cross_entropy_with_logits` (stable).
    BceLogits,
    /// Cross-entropy through log-softmax (stable), one-hot targets.
    CrossEntropy,
    /// Softmax, then log: unstable cross-entropy.
    NaiveCrossEntropy,
    /// `|y − p| / |y|` (seed 003's custom loss).
    MeanAbsRatio,
}

/// How a loss is reduced over elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// Average.
    #[default]
    Mean,
    /// Sum (as in the seeds' NumPy losses).
    Sum,
}

/// The optimizer, its hyperparameters, and gradient clipping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    /// Which update rule.
    pub kind: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    /// Momentum (SGD, RMSprop).
    #[serde(default)]
    pub momentum: f64,
    /// Nesterov momentum (SGD).
    #[serde(default)]
    pub nesterov: bool,
    /// Adam's β₁.
    #[serde(default = "beta1")]
    pub beta1: f64,
    /// Adam's β₂.
    #[serde(default = "beta2")]
    pub beta2: f64,
    /// RMSprop's smoothing constant α.
    #[serde(default = "alpha")]
    pub alpha: f64,
    /// Denominator epsilon (Adam, RMSprop); PyTorch's 1e-8 by default, Keras uses 1e-7.
    #[serde(default = "adam_eps")]
    pub eps: f64,
    /// L2 penalty (coupled for SGD/Adam/RMSprop, decoupled for AdamW).
    #[serde(default)]
    pub weight_decay: f64,
    /// Clip gradients to this global L2 norm (`clip_grad_norm_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_grad_norm: Option<f64>,
    /// Clip each gradient element into `±clip_grad_value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_grad_value: Option<f64>,
}

/// The supported update rules (PyTorch's formulas).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// Stochastic gradient descent, optional (Nesterov) momentum.
    Sgd,
    /// Adam.
    Adam,
    /// Adam with decoupled weight decay.
    Adamw,
    /// RMSprop.
    Rmsprop,
}

/// The schedule, numeric type, device and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Passes over the training rows.
    #[serde(default = "one_usize")]
    pub epochs: usize,
    /// Rows per step; absent means the whole training split (full batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Reshuffle the training rows every epoch.
    #[serde(default)]
    pub shuffle: bool,
    /// Stop after this many optimizer steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    /// Compute dtype: `f32`, `f64`, `f16` or `bf16`.
    #[serde(default)]
    pub dtype: DTypeName,
    /// `cpu` or `cuda:N`.
    #[serde(default = "cpu")]
    pub device: String,
    /// Refuse runs whose tensors would exceed this many MiB.
    #[serde(default = "mem_limit")]
    pub memory_limit_mb: u64,
    /// When to flag a run as stagnating (vanishing gradients, flat loss).
    #[serde(default)]
    pub stagnation: StagnationSpec,
}

/// The compute dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
pub enum DTypeName {
    /// 32-bit float.
    #[default]
    F32,
    /// 64-bit float.
    F64,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

/// Stagnation thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagnationSpec {
    /// Points of the loss curve over which the loss must improve: steps for
    /// full-batch training, epoch means otherwise (so minibatch noise is averaged out).
    #[serde(default = "stag_window")]
    pub window: usize,
    /// Minimum relative improvement of the loss over `window` points.
    #[serde(default = "stag_tol")]
    pub rel_tol: f64,
    /// A global gradient norm below this is a vanishing gradient.
    #[serde(default = "stag_floor")]
    pub grad_norm_floor: f64,
}

/// The `[search]` table: which knobs a hunt may move, and how far. Without it
/// every applicable knob moves within `decades` of its base value.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSpec {
    /// Knob names that may move (`optimizer.lr`, `data.scale`, `train.dtype`, ...); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub knobs: Vec<String>,
    /// How many decades log-scaled knobs move around their base (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decades: Option<f64>,
    /// Learning-rate range `[low, high]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<[f64; 2]>,
    /// Range of `model.init_scale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_scale: Option<[f64; 2]>,
    /// Range of input scale factors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_scale: Option<[f64; 2]>,
    /// Range of `data.target_scale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_scale: Option<[f64; 2]>,
    /// Range of batch sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<[u32; 2]>,
    /// Range of epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<[u32; 2]>,
    /// Range of injected cell fractions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject_fraction: Option<[f64; 2]>,
    /// Values injections may write (default `zero` and `outlier`; `nan` and `inf` flip trivially).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inject_values: Option<Vec<InjectValue>>,
    /// Dtypes to try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtypes: Option<Vec<DTypeName>>,
    /// Optimizers to try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizers: Option<Vec<OptimizerKind>>,
    /// Most mutations combined in one candidate (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mutations: Option<usize>,
}

/// What a regression check expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `finite` or `nonfinite`.
    pub outcome: ExpectedOutcome,
    /// Phase of the first non-finite value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::outcome::Phase>,
    /// Tensor name of the first non-finite value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensor: Option<String>,
    /// The first non-finite value must appear at or before this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_steps: Option<usize>,
}

/// The expected outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedOutcome {
    /// Every value stays finite.
    Finite,
    /// Something goes NaN or infinite.
    Nonfinite,
}

impl Default for TrainSpec {
    fn default() -> Self {
        toml::from_str("").expect("every TrainSpec field has a default")
    }
}

impl Default for StagnationSpec {
    fn default() -> Self {
        StagnationSpec { window: stag_window(), rel_tol: stag_tol(), grad_norm_floor: stag_floor() }
    }
}

impl Default for LossSpec {
    fn default() -> Self {
        LossSpec { kind: LossKind::Mse, delta: None, clamp: None, epsilon: None, reduction: Reduction::Mean }
    }
}

fn one() -> f64 {
    1.0
}
fn is_one(v: &f64) -> bool {
    *v == 1.0
}
fn one_usize() -> usize {
    1
}
fn outlier_default() -> f64 {
    1e6
}
fn ln_eps() -> f64 {
    1e-5
}
fn beta1() -> f64 {
    0.9
}
fn beta2() -> f64 {
    0.999
}
fn alpha() -> f64 {
    0.99
}
fn adam_eps() -> f64 {
    1e-8
}
fn cpu() -> String {
    "cpu".to_string()
}
fn mem_limit() -> u64 {
    2048
}
fn stag_window() -> usize {
    20
}
fn stag_tol() -> f64 {
    1e-4
}
fn stag_floor() -> f64 {
    1e-7
}
