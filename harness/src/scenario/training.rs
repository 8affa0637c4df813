//! The `[loss]`, `[optimizer]` and `[train]` tables: what is minimised, by
//! which update rule, and on what schedule, dtype and device.

use serde::{Deserialize, Serialize};
use strum::{IntoStaticStr, VariantArray};

use super::{one_usize, DTypeName, LossScaleSpec, Precision, ScheduleSpec};

/// The loss function and its stabilisers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct LossSpec {
    /// Which loss (`expr` when absent: a loss written as `expr = "..."`).
    #[serde(default = "expr_kind")]
    pub kind: LossKind,
    /// The loss as an expression of `p` (predictions), `y` (targets) and `mask` (1 at real
    /// positions, with padding), giving one number (`ops::expr`); with `kind = "expr"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
    /// The expression's named constants (`loss.consts.eps` is a knob).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub consts: std::collections::BTreeMap<String, f64>,
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
    /// The output of an imported model exported with its loss (`forward(x, y) -> loss`) that
    /// is the loss: loading reads its nodes as `kind` and `reduction` and binds the graph's
    /// other input, `y`, to the targets (`scenario::onnx::loss_tail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_model: Option<String>,
    /// `cross_entropy` of class-index targets: the target value whose rows are left out (PyTorch's
    /// `ignore_index`, -100 when absent); a mean is over the other rows, 0/0 = NaN if none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_index: Option<i64>,
    /// `cross_entropy`'s `label_smoothing` in `[0, 1]`, PyTorch's formula (`LossNLL.cpp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_smoothing: Option<f64>,
    /// `ctc`'s blank class (PyTorch's `blank`, 0 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blank: Option<usize>,
    /// `ctc`'s `zero_infinity`: an impossible alignment's infinite loss (and its gradient) is 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub zero_infinity: bool,
    /// `info_nce`'s `normalized`: both embeddings L2-normalized (`F.normalize`, eps 1e-12) before
    /// their similarities.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub normalized: bool,
    /// A loss expression's own precision under autocast: `"f32"` computes it in f32 on the
    /// prediction cast up (`loss(p.float(), y)` outside autocast); absent, each node in its
    /// op's autocast dtype, as a loss computed inside the `torch.autocast` block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<super::LayerPrecision>,
}

/// The supported losses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, VariantArray, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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
    /// Cross-entropy through log-softmax (stable): one-hot (or probability) targets, or
    /// PyTorch's class indices (one column, `ignore_index`), either with `label_smoothing`.
    CrossEntropy,
    /// Softmax, then log: unstable cross-entropy.
    NaiveCrossEntropy,
    /// `|y − p| / |y|` (seed 003's custom loss).
    MeanAbsRatio,
    /// Written as an expression (`expr`), e.g. a focal loss.
    Expr,
    /// `F.kl_div(p, y, reduction="batchmean")`: `p` log-probabilities, `y` probabilities.
    KlDiv,
    /// `F.kl_div(p, y, reduction="batchmean", log_target=True)`: both log-probabilities.
    KlDivLogTarget,
    /// torchvision's `sigmoid_focal_loss` of logits (`consts`: `gamma` 2, `alpha` 0.25).
    Focal,
    /// The contrastive loss `F.cross_entropy(p @ y.T / temperature, arange(batch))` (`consts`:
    /// `temperature`), of `F.normalize`d embeddings with `normalized`.
    InfoNce,
    /// `F.ctc_loss` of log-probabilities `(batch, steps, classes)` against label rows padded
    /// with the blank (`blank`, `zero_infinity`).
    Ctc,
}

fn expr_kind() -> LossKind {
    LossKind::Expr
}

/// How a loss is reduced over elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, IntoStaticStr, VariantArray, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Reduction {
    /// Average.
    #[default]
    Mean,
    /// Sum (as in the seeds' NumPy losses).
    Sum,
}

/// The optimizer, its hyperparameters, and gradient clipping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary, IntoStaticStr, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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

impl OptimizerKind {
    /// Whether the update divides by `sqrt(v) + eps` (Adam, AdamW, RMSprop).
    pub fn takes_eps(self) -> bool {
        self != OptimizerKind::Sgd
    }

    /// Whether it keeps Adam's second moment with decay β₂.
    pub fn takes_beta2(self) -> bool {
        matches!(self, OptimizerKind::Adam | OptimizerKind::Adamw)
    }

    /// Whether it takes a momentum (SGD, RMSprop).
    pub fn takes_momentum(self) -> bool {
        matches!(self, OptimizerKind::Sgd | OptimizerKind::Rmsprop)
    }
}

/// Epochs and batches, numeric type and mixed precision, learning-rate schedule, device and limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// Passes over the training rows.
    #[serde(default = "one_usize")]
    pub epochs: usize,
    /// Rows per micro-batch (per step without `accumulate`); absent means the whole training split (full batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Reshuffle the training rows every epoch.
    #[serde(default)]
    pub shuffle: bool,
    /// Stop after this many optimizer steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<usize>,
    /// Compute dtype: `f32`, `f64`, `f16` or `bf16` (of the master weights under `precision = amp_*`).
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
    /// When to flag a finite run as diverging (loss or parameters growing without bound).
    #[serde(default)]
    pub divergence: DivergenceSpec,
    /// Mixed precision: `f32` (none), `amp_f16` or `amp_bf16` (autocast over f32 master weights).
    #[serde(default, skip_serializing_if = "Precision::is_default")]
    pub precision: Precision,
    /// Dynamic loss scaling (PyTorch's `GradScaler`); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<LossScaleSpec>,
    /// The learning rate over the steps; absent: constant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// Micro-batches of `batch_size` rows whose gradients are summed before each optimizer step.
    #[serde(default = "one_usize", skip_serializing_if = "is_one_usize")]
    pub accumulate: usize,
}

fn is_one_usize(v: &usize) -> bool {
    *v == 1
}

/// Stagnation thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
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

/// Divergence thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct DivergenceSpec {
    /// Decades the training loss may rise above its running minimum.
    #[serde(default = "div_loss_decades")]
    pub loss_decades: f64,
    /// Factor the parameter norm may grow by over its value after the first step.
    #[serde(default = "div_param_growth")]
    pub param_growth: f64,
}

impl Default for DivergenceSpec {
    fn default() -> Self {
        DivergenceSpec { loss_decades: div_loss_decades(), param_growth: div_param_growth() }
    }
}

fn div_loss_decades() -> f64 {
    6.0
}
fn div_param_growth() -> f64 {
    1e6
}

impl LossKind {
    /// Whether the loss reads named constants from `consts` (`loss.consts.<name>` knobs).
    pub fn takes_consts(self) -> bool {
        matches!(self, LossKind::Expr | LossKind::Focal | LossKind::InfoNce)
    }

    /// Whether the loss takes `epsilon` (inside its log, or in a ratio's denominator).
    pub fn takes_epsilon(self) -> bool {
        matches!(self, LossKind::Bce | LossKind::NaiveCrossEntropy | LossKind::MeanAbsRatio)
    }

    /// Whether the loss takes probabilities that `clamp` can keep away from 0 and 1.
    pub fn takes_clamp(self) -> bool {
        matches!(self, LossKind::Bce | LossKind::BceTorch | LossKind::NaiveCrossEntropy)
    }
}

/// A device as written in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceName {
    /// The CPU.
    Cpu,
    /// CUDA device with this ordinal.
    Cuda(usize),
}

impl DeviceName {
    /// Parses `cpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> std::result::Result<DeviceName, String> {
        match s {
            "cpu" => Ok(DeviceName::Cpu),
            "cuda" => Ok(DeviceName::Cuda(0)),
            _ => s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(DeviceName::Cuda).ok_or_else(|| format!("expected `cpu` or `cuda:N`, got `{s}`")),
        }
    }
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
        LossSpec {
            kind: LossKind::Mse,
            expr: None,
            consts: Default::default(),
            delta: None,
            clamp: None,
            epsilon: None,
            reduction: Reduction::Mean,
            ignore_index: None,
            label_smoothing: None,
            blank: None,
            zero_infinity: false,
            normalized: false,
            from_model: None,
            precision: None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!(DeviceName::parse("cpu"), Ok(DeviceName::Cpu));
        assert_eq!(DeviceName::parse("cuda:1"), Ok(DeviceName::Cuda(1)));
        assert!(DeviceName::parse("cuda:x").is_err());
    }
}
