//! Keys that are one mechanism a person names once, though a field of theirs differs: the
//! rule's [`Family`] says which field does not matter.
//! - a divergence (`divergence`, `lr_above_stability_bound`) is its driver, whichever op the
//!   values then overflowed in and in whatever dtype: "lr 0.1 is above the stability bound" in
//!   f16 on the first step and in f32 after four;
//! - an op's input at the edge of its domain or past it (`log` of 0, `log` of a negative number)
//!   in one op is one: `log(1 − p)` with `p = 1` and with `p > 1`.
//!
//! The keys of a class are ordered by [`rank`]; the first takes the others (`Mechanism::absorbs`).

use std::cmp::Reverse;

use super::mechanism::Mechanism;
use crate::run::Rule;

/// What a person names a rule's flips by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// The run diverged: the knob that drove it is the mechanism.
    Divergence,
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
        Rule::LogOfZero | Rule::OutsideDomain => Family::Domain,
        Rule::EpsRoundsToZero
        | Rule::OneMinusEpsRoundsToOne
        | Rule::Overflow
        | Rule::DivisionByZero
        | Rule::DerivativeAtZero
        | Rule::ZeroTimesInf
        | Rule::DataNotFinite
        | Rule::FullyMaskedRow
        | Rule::LossScaleCollapse
        | Rule::NoGradient => Family::Own,
    }
}

/// Whether two distinct keys are one mechanism: the same knobs, and a family whose other
/// fields agree where it says they matter.
pub(super) fn one_mechanism(a: &Mechanism, b: &Mechanism) -> bool {
    if a == b || a.knobs != b.knobs || family(a.rule) != family(b.rule) {
        return false;
    }
    match family(a.rule) {
        Family::Divergence => true,
        Family::Domain => a.op == b.op && a.precision == b.precision && a.verdict == b.verdict,
        Family::Own => false,
    }
}

/// The order of a class's keys, first first: one with a verdict, then the widest precision
/// class (a divergence that fails in f64 too before one that overflowed f16 on the way), then
/// the smallest signature. A strict order, so the class has one first key.
pub(super) fn rank(k: &Mechanism) -> (bool, Reverse<u8>, String) {
    (k.verdict.is_none(), Reverse(k.precision.width()), k.signature())
}
