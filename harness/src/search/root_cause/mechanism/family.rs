//! Keys that are one mechanism a person names once, though a field of theirs differs: the
//! rule's [`Family`] says which field does not matter.
//! - a divergence (`divergence`, `lr_above_stability_bound`) is its driver, whichever op the
//!   values then overflowed in and in whatever dtype: "lr 0.1 is above the stability bound" in
//!   f16 on the first step and in f32 after four. The driver is the init scale or the step
//!   size, `optimizer.lr`: a loss summed over the batch is the lr's (plain SGD's step on a sum
//!   of n rows is lr·n on their mean, `Chain::driver`);
//! - a setting the run cannot hold (an optimizer's or a loss's eps that rounds to 0, a clamp
//!   whose `1 − ε` rounds to 1, the naive cross-entropy's softmax then log), keyed by that
//!   setting, is the setting's in every dtype, whatever the verdict: Adam's eps of 1e-8 in f16
//!   and of 7e-46 in f32; `exp` of a logit past 88.7 and a probability rounded to 0 in the naive
//!   cross-entropy;
//! - an op's input at the edge of its domain or past it (`log` of 0, `log` of a negative number)
//!   in one op is one: `log(1 − p)` with `p = 1` and with `p > 1`.
//!
//! - one op's computation in one dtype, reached with 16-bit storage or under autocast and
//!   without: autocast computes an op on its lower-precision list (a linear layer, a
//!   convolution, a recurrent cell: [`LOW_UNDER_AUTOCAST`]) in the 16-bit dtype as 16-bit storage
//!   does, and the loss (on its f32 list), the optimizer's update and state and the data (f32
//!   master copies) in f32 as full precision does. The same rule, op, verdict and knobs but the
//!   dtype's (`train.dtype` or `train.precision`, which the precision class already names) are
//!   one: `linear`'s weight gradient summed past 65504 by `loss.reduction = sum` in f16 storage
//!   and under amp_f16 (the same sum, the same numbers).
//!
//! A loss-scale collapse needs no class here: its key already names the overflow its skipped
//! steps hit and drops the knobs that made that overflow outpace the scaler (`mechanism.rs`'s
//! [`super::OUTPACED`]), so collapses over one overflow are one key.
//!
//! The keys of a class are ordered by [`rank`]; the first takes the others (`Mechanism::absorbs`).

use std::cmp::Reverse;

use super::{Mechanism, PrecisionClass, SOFTMAX_THEN_LOG};

/// The knobs a setting the dtype cannot hold keys by (`mechanism.rs`'s `setting`).
const SETTINGS: [&str; 3] = ["optimizer.eps", "loss.epsilon", "loss.clamp"];
use crate::run::Rule;

/// The knobs that choose the dtype, which a key's precision class names too.
const DTYPE_KNOBS: [&str; 2] = ["train.dtype", "train.precision"];

/// The op kinds autocast computes in the 16-bit dtype whatever part of them (`Autocast::Low`
/// for every part; attention is not here: its softmax is on the f32 list).
pub(in crate::search) const LOW_UNDER_AUTOCAST: [&str; 6] = ["linear", "conv1d", "conv2d", "rnn", "lstm", "gru"];

/// The op kinds that are f32 under autocast: the loss (on autocast's f32 list), the optimizer's
/// update and state, and the data (kept in f32, as the master weights are).
pub(in crate::search) const F32_UNDER_AUTOCAST: [&str; 4] = ["loss", "update", "optimizer state", "data"];

/// The precision class an autocast key's op computes in, where its kind says (a loss-scale
/// collapse's op is its skipped value's, `linear (overflow)`): 16-bit or full.
fn computed_under_autocast(op: &str) -> Option<PrecisionClass> {
    let kind = op.split(" (").next().unwrap_or(op);
    if LOW_UNDER_AUTOCAST.contains(&kind) {
        Some(PrecisionClass::LowPrecision)
    } else if F32_UNDER_AUTOCAST.contains(&kind) {
        Some(PrecisionClass::Full)
    } else {
        None
    }
}

/// Whether two keys are one op's computation in one dtype, one under autocast and the other in
/// the class that op computes in there: the same rule, op, verdict, and knobs but the dtype's.
fn same_compute(a: &Mechanism, b: &Mechanism) -> bool {
    let (auto, other) = match (a.precision, b.precision) {
        (PrecisionClass::Autocast, _) => (a, b),
        (_, PrecisionClass::Autocast) => (b, a),
        _ => return false,
    };
    let undtyped = |k: &Mechanism| k.knobs.iter().filter(|n| !DTYPE_KNOBS.contains(&n.as_str())).cloned().collect::<Vec<_>>();
    computed_under_autocast(&auto.op) == Some(other.precision) && a.rule == b.rule && a.op == b.op && a.verdict == b.verdict && undtyped(a) == undtyped(b)
}

/// What a person names a rule's flips by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// The run diverged: the knob that drove it is the mechanism.
    Divergence,
    /// A setting the run cannot hold: the setting is the mechanism.
    Setting,
    /// An input at or past the edge of its op's domain: the op is the mechanism.
    Domain,
    /// The rule, op, knobs, precision class and verdict all are.
    Own,
}

/// A key's family, by its rule.
fn family(rule: Option<Rule>) -> Family {
    let Some(rule) = rule else { return Family::Own };
    match rule {
        Rule::Divergence | Rule::LrAboveStabilityBound => Family::Divergence,
        Rule::EpsRoundsToZero | Rule::OneMinusEpsRoundsToOne => Family::Setting,
        Rule::LogOfZero | Rule::OutsideDomain => Family::Domain,
        Rule::Overflow | Rule::DivisionByZero | Rule::DerivativeAtZero | Rule::ZeroTimesInf | Rule::DataNotFinite | Rule::FullyMaskedRow | Rule::LossScaleCollapse | Rule::NoGradient => Family::Own,
    }
}

/// Whether two distinct keys are one mechanism: one op's computation in one dtype with and
/// without autocast, or the same knobs and a family whose other fields agree where it says
/// they matter.
pub(in crate::search) fn one_mechanism(a: &Mechanism, b: &Mechanism) -> bool {
    if a == b {
        return false;
    }
    if same_compute(a, b) {
        return true;
    }
    if a.knobs != b.knobs {
        return false;
    }
    // The naive cross-entropy's keys name its formula, whichever of its rules (all in `loss`).
    if [a, b].iter().all(|k| k.knobs == [SOFTMAX_THEN_LOG] && k.op == "loss" && matches!(k.rule, Some(Rule::Overflow | Rule::LogOfZero | Rule::DerivativeAtZero))) {
        return true;
    }
    if family(a.rule) != family(b.rule) {
        return false;
    }
    match family(a.rule) {
        Family::Divergence => true,
        Family::Setting => a.rule == b.rule && a.op == b.op && a.knobs.len() == 1 && SETTINGS.contains(&a.knobs[0].as_str()),
        Family::Domain => a.op == b.op && a.precision == b.precision && a.verdict == b.verdict,
        Family::Own => false,
    }
}

/// The order of a class's keys, first first: one with a verdict, then the widest precision
/// class (a divergence that fails in f64 too before one that overflowed f16 on the way), then
/// the smallest signature. A strict order, so the class has one first key.
pub(in crate::search) fn rank(k: &Mechanism) -> (bool, Reverse<u8>, String) {
    (k.verdict.is_none(), Reverse(k.precision.width()), k.signature())
}
