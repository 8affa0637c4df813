//! What the ops and the cause engine share: the rules a diagnosis comes from, and a
//! compute dtype's limits and rounding. It imports neither, so both can use it.

use serde::{Deserialize, Serialize};
use strum::IntoStaticStr;

use crate::scenario::DTypeName;

/// The rules a diagnosis comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Rule {
    /// A finite computation exceeded the dtype's largest value (also where the backward then
    /// multiplies that ∞ by an exact 0, a `where`'s unselected `exp`: the dtype lost it to its range).
    Overflow,
    /// `log` of exactly 0 (a probability of exactly 0 or 1).
    LogOfZero,
    /// A division by exactly 0.
    DivisionByZero,
    /// An epsilon that rounds to 0 in the compute dtype, leaving a division by 0.
    EpsRoundsToZero,
    /// `1 − ε` rounds to 1 in the compute dtype, so a clamp does not clamp.
    OneMinusEpsRoundsToOne,
    /// The derivative of `sqrt`, `log` or `1/x` at exactly 0.
    DerivativeAtZero,
    /// A function outside its domain (`log` or `sqrt` of a negative number).
    OutsideDomain,
    /// `0 · ∞` in the chain rule: an upstream gradient of exactly 0 times a derivative infinite at exactly 0.
    ZeroTimesInf,
    /// Non-finite values already in the data, before any step.
    DataNotFinite,
    /// The run diverged first (its weights or its loss grew decades, step after step): the
    /// non-finite value ends it, and its own diagnosis is the chain's `then`.
    Divergence,
    /// A learning rate above the stability bound `2/λ` of a linear model on this data.
    LrAboveStabilityBound,
    /// Attention with every key of a query masked: the plain softmax of a row of `-inf` is `0/0`;
    /// or a max pool over a row that is all padding (`-inf`).
    FullyMaskedRow,
    /// The loss scaler skipped step after step for non-finite gradients, or its scale underflowed.
    LossScaleCollapse,
    /// A trainable parameter got no gradient from the backward: an op on its way to the loss has
    /// no backward (candle-nn's fused norms and softmax), or the forward does not use it.
    NoGradient,
}

/// The limits of a compute dtype.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest finite value.
    pub max: f64,
    /// Smallest positive normal value.
    pub min_normal: f64,
    /// Smallest positive subnormal value.
    pub min_subnormal: f64,
}

impl Limits {
    /// The limits of `d`.
    pub fn of(d: DTypeName) -> Limits {
        match d {
            DTypeName::F32 => Limits { max: f32::MAX as f64, min_normal: f32::MIN_POSITIVE as f64, min_subnormal: 2f64.powi(-149) },
            DTypeName::F64 => Limits { max: f64::MAX, min_normal: f64::MIN_POSITIVE, min_subnormal: 2f64.powi(-1074) },
            DTypeName::F16 => Limits { max: 65504.0, min_normal: 2f64.powi(-14), min_subnormal: 2f64.powi(-24) },
            DTypeName::Bf16 => Limits { max: half::bf16::MAX.to_f64(), min_normal: 2f64.powi(-126), min_subnormal: 2f64.powi(-133) },
        }
    }
}

/// `v` as the compute dtype stores it.
pub fn round(v: f64, d: DTypeName) -> f64 {
    match d {
        DTypeName::F32 => v as f32 as f64,
        DTypeName::F64 => v,
        DTypeName::F16 => half::f16::from_f64(v).to_f64(),
        DTypeName::Bf16 => half::bf16::from_f64(v).to_f64(),
    }
}
