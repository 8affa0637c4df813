//! Where a run's first non-finite value is: its [`Kind`] (NaN, ±Inf, a missing gradient) and
//! [`Location`] (step, phase, tensor, element), apart from the [`Outcome`](super::Outcome) that
//! holds it, so that a diagnosis (`cause/`) can name a location without reading the outcome.

use serde::{Deserialize, Serialize};
use strum::{IntoStaticStr, VariantArray};

use crate::scenario::{Phase, TensorId};

/// Which non-finite value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Kind {
    /// Not a number.
    #[default]
    Nan,
    /// +∞.
    PosInf,
    /// −∞.
    NegInf,
    /// Not a value: a finite run that diverges (the site of a `--target diverge` finding).
    Diverge,
    /// Not a value: the loss scaler's scale underflowed, or it skipped so many steps that the
    /// run no longer trains (`[train.loss_scale]`); its tensor is `loss_scale`.
    ScaleCollapse,
    /// Not a value: a trainable parameter the backward did not reach (no gradient at all, so it
    /// would never train); its tensor is the first such parameter's gradient, in phase `backward`.
    NoGradient,
}

impl Kind {
    /// Classifies a non-finite value (`None` for a finite one).
    pub fn of(v: f64) -> Option<Kind> {
        match v {
            v if v.is_nan() => Some(Kind::Nan),
            v if v == f64::INFINITY => Some(Kind::PosInf),
            v if v == f64::NEG_INFINITY => Some(Kind::NegInf),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Nan => "NaN",
            Kind::PosInf => "+Inf",
            Kind::NegInf => "-Inf",
            Kind::Diverge => "divergence",
            Kind::ScaleCollapse => "loss scale collapse",
            Kind::NoGradient => "no gradient",
        })
    }
}

/// The first non-finite value of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    /// Optimizer step (1-based; 0 for the data, before any step).
    pub step: usize,
    /// Epoch (1-based; 0 for the data).
    pub epoch: usize,
    /// Cross-validation fold (0 without k-fold).
    pub fold: usize,
    /// Phase of the step.
    pub phase: Phase,
    /// The tensor, written as its stable name, e.g. `layers.2.linear.weight.grad`.
    pub tensor: TensorId,
    /// NaN, +Inf or −Inf.
    pub kind: Kind,
    /// Flat index of the first bad element in the tensor.
    pub index: usize,
    /// The tensor's shape (empty for a scalar such as the loss).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shape: Vec<usize>,
    /// The first bad element's coordinates in that shape (row, unit / row, column, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub coords: Vec<usize>,
    /// How many elements of the tensor are not finite (0 where not counted).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub count: usize,
    /// For a tensor with one row per example (data, layer outputs): the rows that hold
    /// non-finite values, in order (at most 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<usize>,
}

impl Location {
    /// The element as `[i]` for a scalar or a vector, `[row, column]` and so on otherwise.
    /// Empty for a missing gradient, which has no element.
    pub fn element(&self) -> String {
        if self.kind == Kind::NoGradient {
            String::new()
        } else if self.coords.len() > 1 {
            format!("[{}]", self.coords.iter().map(usize::to_string).collect::<Vec<_>>().join(", "))
        } else {
            format!("[{}]", self.index)
        }
    }
}

/// Coordinates of flat index `i` in a row-major `shape`.
pub(crate) fn coords(i: usize, shape: &[usize]) -> Vec<usize> {
    let mut rest = i;
    let mut out = vec![0; shape.len()];
    for (c, &d) in out.iter_mut().zip(shape).rev() {
        if d > 0 {
            *c = rest % d;
            rest /= d;
        }
    }
    out
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in `{}`{} during {} at step {} (epoch {}, fold {})", self.kind, self.tensor, self.element(), self.phase, self.step, self.epoch, self.fold)?;
        if self.count > 1 {
            let total: usize = self.shape.iter().product();
            write!(f, "; {} of its {total} elements are not finite", self.count)?;
        }
        Ok(())
    }
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
