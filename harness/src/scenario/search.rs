//! The `[search]` table: which knobs a hunt may move, and how far.

use serde::{Deserialize, Serialize};

use super::{DTypeName, InjectValue, Knob, OptimizerKind};

/// The `[search]` table: which knobs a hunt may move, and how far. Without it
/// every applicable knob moves within `decades` of its base value.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct SearchSpec {
    /// Knob names that may move (`optimizer.lr`, `data.scale`, `train.dtype`, ...); absent means all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knobs: Option<Vec<Knob>>,
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
