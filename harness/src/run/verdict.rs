//! The f64 verdict on a run's first non-finite value: is it the dtype's
//! precision, the math itself, or a kernel that disagrees with its own math?
//!
//! Two checks, both from what the failing run had at hand (runs are
//! deterministic): the producing op computed in f64 from the same inputs
//! ([`OpCheck`], made by the runner when it flags the value: a registry node's
//! forward on its inputs cast to f64, the loss on its prediction and targets, or
//! a code model's check against the f64 reference it gave `Watch::check_op`), and
//! the whole run replayed in f64 from the same initial weights and data to that
//! step ([`replay`], under a time limit). [`classify`] reads them:
//! - *math*: non-finite in f64 too (log 0, 0/0, a real divergence);
//! - *precision*: finite in f64, and the dtype loses it: its range overflows, an
//!   epsilon rounds to 0, a value underflows to 0, or rounding inside the op cancels
//!   what it needs (the diagnosis rule, where one explains the value, says which);
//! - *kernel disagreement*: a kernel that is not nanhunt's own (PyTorch's
//!   numerics) gives a non-finite value where its f64 reference gives a finite one
//!   inside the dtype's range, from finite inputs;
//! - *undetermined*: neither check could run (their reasons are kept).
//!
//! A verdict costs about one more run: it is computed once per failing run when
//! asked (`RunOptions::verdict`), and in hunts once per minimized trigger.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strum::IntoStaticStr;

use super::cause::{Limits, Rule};
use super::outcome::{Kind, Location, Outcome, Status};
use super::RunOptions;
use crate::scenario::{DTypeName, Precision as Amp, Scenario};

/// How long the f64 replay of a verdict may take at most.
pub const REPLAY_LIMIT: Duration = Duration::from_secs(20);

/// The verdict's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Class {
    /// Finite in f64: the dtype loses it (see [`Loss`]).
    Precision,
    /// Non-finite in f64 too: the math itself (log 0, 0/0, a real divergence).
    Math,
    /// A kernel's result differs from its f64 reference far beyond rounding, from finite inputs.
    KernelDisagreement,
    /// Neither the op nor the step could be computed in f64.
    Undetermined,
}

/// How the dtype loses a value that is finite in f64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Loss {
    /// The value is beyond the dtype's largest one.
    Overflow,
    /// Rounding inside the op cancels what it needs (a difference of near-equal values).
    Cancellation,
    /// An epsilon rounds to 0 in the dtype (or a clamp's `1 − c` to 1) and no longer guards.
    EpsUnderflow,
    /// A value that is not 0 rounds to 0 in the dtype (then log 0, 1/0, 0·∞).
    Underflow,
    /// Rounding inside the op, where no rule says whether a difference cancelled or an
    /// intermediate underflowed.
    Rounding,
}

/// The producing op computed in f64 from the failing step's own inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpCheck {
    /// The op (`layers.1.exp`, `loss (bce)`, a code model's check name).
    pub op: String,
    /// Its value at the bad element in f64 (`null` in JSON when not finite).
    pub value: Option<f64>,
    /// Whether every input it read was finite.
    pub inputs_finite: bool,
    /// Whether the f64 value came from a reference the code model gave, not nanhunt's own kernel.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reference: bool,
}

/// The whole run replayed in f64 up to the failing step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepCheck {
    /// Finite through that step (`None`: the replay could not run or was cut off).
    pub finite: Option<bool>,
    /// What happened, in words.
    pub detail: String,
}

/// The verdict on the first non-finite value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// Precision, math, kernel disagreement (or undetermined).
    pub class: Class,
    /// For precision: how the dtype loses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Loss>,
    /// The op it names.
    pub op: String,
    /// Why, in words with the numbers.
    pub reason: String,
    /// The op in f64 from the same inputs, where it could be computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op_f64: Option<OpCheck>,
    /// The run replayed in f64 to the failing step.
    pub step_f64: StepCheck,
}

impl Verdict {
    /// The verdict as a grouping key: `precision/overflow`, `math`, `kernel_disagreement`, ...
    pub fn key(&self) -> String {
        let class: &str = self.class.into();
        match self.precision {
            Some(l) => format!("{class}/{}", <&str>::from(l)),
            None => class.to_string(),
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let class = match (self.class, self.precision) {
            (Class::Precision, Some(l)) => format!("precision ({})", l.words()),
            (Class::Precision, None) => "precision".into(),
            (Class::Math, _) => "math".into(),
            (Class::KernelDisagreement, _) => "kernel disagreement".into(),
            (Class::Undetermined, _) => "undetermined".into(),
        };
        write!(f, "{class} in {}: {}", self.op, self.reason)
    }
}

impl Loss {
    /// In words.
    pub fn words(self) -> &'static str {
        match self {
            Loss::Overflow => "overflow of the dtype's range",
            Loss::Cancellation => "cancellation",
            Loss::EpsUnderflow => "eps underflow",
            Loss::Underflow => "underflow to 0",
            Loss::Rounding => "rounding inside the op: cancellation or an intermediate underflow",
        }
    }
}

/// Whether a run's outcome gets a verdict: a NaN or an infinity (not a divergence or a scale collapse).
pub(crate) fn wanted(o: &Outcome) -> bool {
    o.outcome == Status::Nonfinite && o.first_nonfinite.as_ref().is_some_and(|f| matches!(f.kind, Kind::Nan | Kind::PosInf | Kind::NegInf))
}

/// Replays `s` in f64 (storage and compute, no autocast) from the same seed, to the fold and step
/// of `site`, and says whether it stays finite there; cut off at `limit`.
pub(crate) fn replay(s: &Scenario, site: &Location, limit: Instant) -> StepCheck {
    let mut wide = s.clone();
    wide.train.dtype = DTypeName::F64;
    wide.train.precision = Amp::F32;
    // Each fold builds its own model: stopping every fold at the step changes nothing in the failing one.
    wide.train.max_steps = Some(site.step.max(1));
    let opts = RunOptions { deadline: Some(limit), verdict: false, ..RunOptions::default() };
    let o = super::run_with(&wide, &opts);
    let at_or_before = |l: &Location| (l.fold, l.step) <= (site.fold, site.step);
    match (o.outcome, o.first_nonfinite.as_ref()) {
        (Status::Nonfinite, Some(l)) if at_or_before(l) => StepCheck { finite: Some(false), detail: format!("in f64 the run goes non-finite too: {l}") },
        (Status::Error, _) => StepCheck { finite: None, detail: format!("the run could not be replayed in f64: {}", o.error.unwrap_or_default()) },
        (Status::Timeout, _) => StepCheck { finite: None, detail: format!("the f64 replay was cut off: {}", o.error.unwrap_or_default()) },
        (Status::Finite | Status::Nonfinite, _) => StepCheck { finite: Some(true), detail: format!("in f64 the run stays finite through step {} of fold {}", site.step, site.fold) },
    }
}

/// What the scenario and the diagnosis say about a value the dtype lost: a warning that an
/// epsilon (or a clamp's `1 − c`) rounds away in the dtype, and the rule that explains the value.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Hints<'a> {
    /// The precursor warning of an epsilon that rounds to 0 (or a `1 − c` that rounds to 1).
    pub eps: Option<&'a str>,
    /// The diagnosis rule, if one explains the value.
    pub rule: Option<Rule>,
}

/// How the dtype lost a value that is finite in f64, as the diagnosis rule or the value's kind says.
fn lost(h: Hints, low: Kind) -> Loss {
    match (h.rule, h.eps, low) {
        (Some(Rule::Overflow), _, _) => Loss::Overflow,
        (Some(Rule::EpsRoundsToZero | Rule::OneMinusEpsRoundsToOne), _, _) | (_, Some(_), _) => Loss::EpsUnderflow,
        (Some(Rule::LogOfZero | Rule::DivisionByZero | Rule::ZeroTimesInf | Rule::DerivativeAtZero), _, _) => Loss::Underflow,
        (_, None, Kind::PosInf | Kind::NegInf) => Loss::Overflow,
        _ => Loss::Rounding,
    }
}

/// The verdict from the two checks: `site` is the bad value the run computed, `d` the dtype it
/// was computed in, `named` the op to name when the op itself was not checked.
pub(crate) fn classify(site: &Location, op: Option<OpCheck>, step: StepCheck, d: DTypeName, hints: Hints, named: &str) -> Verdict {
    let dt: &str = d.into();
    let max = Limits::of(d).max;
    let name = op.as_ref().map_or_else(|| named.to_string(), |o| o.op.clone());
    let low = site.kind;
    let how = lost(hints, low);
    let eps = hints.eps.map_or(String::new(), |w| format!(" ({w})"));
    let (class, precision, reason) = match (&op, step.finite) {
        (Some(OpCheck { value: None, .. }), Some(true)) => {
            (Class::Precision, Some(how), format!("computed in f64 from the same inputs it is not finite either, but {}: {dt} lost it upstream, in the op's inputs{eps}", step.detail))
        }
        (Some(OpCheck { value: None, .. }), _) => (Class::Math, None, format!("computed in f64 from the same inputs, it is not finite either ({low} in {dt}): the math itself")),
        (_, Some(false)) => (Class::Math, None, format!("{}: not the dtype", step.detail)),
        (Some(OpCheck { value: Some(v), .. }), _) if v.abs() > max => {
            (Class::Precision, Some(Loss::Overflow), format!("computed in f64 from the same inputs it is {}, beyond {dt}'s largest value {}", crate::human(*v), crate::human(max)))
        }
        (Some(OpCheck { value: Some(v), inputs_finite: true, reference: true, .. }), _) if how != Loss::EpsUnderflow => (
            Class::KernelDisagreement,
            None,
            format!("its {dt} kernel gives {low} where its f64 reference gives {} from the same finite inputs, well inside {dt}'s range: the kernel's order of operations loses it", crate::human(*v)),
        ),
        (Some(OpCheck { value: Some(v), .. }), _) => {
            (Class::Precision, Some(how), format!("computed in f64 from the same inputs it is {}, inside {dt}'s range: {dt} loses it inside the op{eps}", crate::human(*v)))
        }
        (None, Some(true)) => (Class::Precision, Some(how), format!("{low} in {dt}, but {}{eps}", step.detail)),
        (None, None) => (Class::Undetermined, None, format!("the op could not be computed alone in f64, and {}", step.detail)),
    };
    Verdict { class, precision, op: name, reason, op_f64: op, step_f64: step }
}

/// The op check of a value computed in f64: its value at flat index `i`, and whether `inputs` were all finite.
pub(crate) fn op_check(op: &str, wide: &candle_core::Tensor, i: usize, inputs: &[&candle_core::Tensor], reference: bool) -> crate::error::Result<OpCheck> {
    let v = wide.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
    let mut inputs_finite = true;
    for t in inputs {
        inputs_finite &= super::watch::stats(t)?.first_bad.is_none();
    }
    Ok(OpCheck { op: op.to_string(), value: v.get(i).copied().filter(|v| v.is_finite()), inputs_finite, reference })
}

/// The verdict on `o`, a run of `s` whose producing op the runner checked in f64 (`op`).
pub(crate) fn of(s: &Scenario, o: &Outcome, op: Option<OpCheck>, deadline: Option<Instant>) -> Option<Verdict> {
    let site = o.first_nonfinite.as_ref().filter(|_| wanted(o))?;
    let limit = deadline.map_or(Instant::now() + REPLAY_LIMIT, |d| d.min(Instant::now() + REPLAY_LIMIT));
    let d = o.dtype.map_or(s.train.dtype, |d| d.compute());
    let step = replay(s, site, limit);
    let warnings = super::cause::precursors(s);
    let eps = warnings.first().map(String::as_str);
    let rule = o.cause.as_ref().map(|c| c.chain.as_ref().and_then(|ch| ch.then.as_ref()).map_or(c.rule, |then| then.rule));
    let named = o.cause.as_ref().map_or_else(|| site.tensor.to_string(), |c| c.op.clone());
    Some(classify(site, op, step, d, Hints { eps, rule }, &named))
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
mod tests;
