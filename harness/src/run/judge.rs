//! How the f64 verdict (`run::verdict`) is reached: [`classify`] reads the two
//! checks, the producing op in f64 from the step's own inputs ([`op_check`]) and
//! the run replayed in f64 to that step (`run::replay`), with what the diagnosis
//! and the scenario's precursor warnings say about how the dtype lost the value.

use super::cause::{Limits, Rule};
use super::outcome::{Kind, Location, Outcome, Status};
use super::verdict::{Class, Loss, OpCheck, StepCheck, Verdict};
use crate::scenario::{DTypeName, Phase, Scenario, TensorId};

/// Whether a run's outcome gets a verdict: a NaN or an infinity (not a divergence or a scale collapse).
pub(crate) fn wanted(o: &Outcome) -> bool {
    o.outcome == Status::Nonfinite && o.first_nonfinite.as_ref().is_some_and(|f| matches!(f.kind, Kind::Nan | Kind::PosInf | Kind::NegInf))
}

/// What the scenario and the diagnosis say about a value the dtype lost: a warning that an
/// epsilon (or a clamp's `1 − c`) rounds away in the dtype, and the rule that explains the value.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Hints<'a> {
    /// The precursor warning of an epsilon that rounds to 0 (or a `1 − c` that rounds to 1).
    pub eps: Option<&'a str>,
    /// The diagnosis rule, if one explains the value.
    pub rule: Option<Rule>,
    /// How the run diverged before the value, if it did (the cause's chain), in words.
    pub diverged: Option<&'a str>,
    /// Why the op has no check in f64, where the site says (a code model's tensor without a
    /// reference, a code model's gradient), in words.
    pub unchecked: Option<&'a str>,
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
    // A gradient is its op's backward, from the inputs and the gradient that reached it.
    let computed = if op.as_ref().is_some_and(|o| o.backward) { "its backward computed in f64 from the same inputs and upstream gradient" } else { "computed in f64 from the same inputs" };
    let (class, precision, reason) = match (&op, step.finite) {
        _ if hints.diverged.is_some() => (Class::Math, None, format!("a real divergence: {}; a wider dtype only postpones the {low}", hints.diverged.unwrap_or_default())),
        (Some(OpCheck { value: None, .. }), Some(true)) => {
            (Class::Precision, Some(how), format!("{computed} it is not finite either, but {}: {dt} lost it upstream, in the op's inputs{eps}", step.detail))
        }
        (Some(OpCheck { value: None, .. }), _) => (Class::Math, None, format!("{computed}, it is not finite either ({low} in {dt}): the math itself")),
        // At this element the op alone is finite in f64, but the run in f64 fails anyway.
        (Some(OpCheck { value: Some(v), .. }), Some(false)) => (Class::Math, None, format!("{computed} it is {} at this element, but {}: not the dtype", crate::human(*v), step.detail)),
        (None, Some(false)) => (Class::Math, None, format!("{}: not the dtype", step.detail)),
        (Some(OpCheck { value: Some(v), .. }), _) if v.abs() > max => {
            (Class::Precision, Some(Loss::Overflow), format!("{computed} it is {}, beyond {dt}'s largest value {}", crate::human(*v), crate::human(max)))
        }
        (Some(OpCheck { value: Some(v), inputs_finite: true, reference: true, .. }), _) if how != Loss::EpsUnderflow => (
            Class::KernelDisagreement,
            None,
            format!("its {dt} kernel gives {low} where its f64 reference gives {} from the same finite inputs, well inside {dt}'s range: the kernel's order of operations loses it", crate::human(*v)),
        ),
        (Some(OpCheck { value: Some(v), .. }), _) => (Class::Precision, Some(how), format!("{computed} it is {}, inside {dt}'s range: {dt} loses it inside the op{eps}", crate::human(*v))),
        (None, Some(true)) => (Class::Precision, Some(how), format!("{low} in {dt}, but {}{eps}", step.detail)),
        (None, None) => (Class::Undetermined, None, format!("{}, and {}", hints.unchecked.unwrap_or("the op could not be computed alone in f64"), step.detail)),
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
    Ok(OpCheck { op: op.to_string(), value: v.get(i).copied().filter(|v| v.is_finite()), inputs_finite, reference, backward: false })
}

/// The verdict on `o`, a run of `s` that went non-finite, from its op check (`Outcome::op_f64`)
/// and `step`, the run replayed in f64 to its first non-finite value.
pub(crate) fn judge(s: &Scenario, o: &Outcome, site: &Location, step: StepCheck) -> Verdict {
    let d = o.dtype.map_or(s.train.dtype, |d| d.compute());
    let warnings = super::cause::precursors(s);
    let eps = warnings.first().map(String::as_str);
    // A value that ends a divergence is explained by its own cause, inside the chain.
    let rule = o.cause.as_ref().map(|c| c.chain.as_ref().and_then(|ch| ch.then.as_ref()).map_or(c.rule, |then| then.rule));
    let named = o.cause.as_ref().map_or_else(|| site.tensor.to_string(), |c| c.op.clone());
    let chain = o.cause.as_ref().and_then(|c| c.chain.as_ref());
    let diverged = chain.map(|ch| format!("the {} grew ×{} a step, two decades by step {} ({})", ch.grew, crate::human(ch.per_step), ch.diverged_at, ch.trigger));
    let unchecked = unchecked(s, site);
    classify(site, o.op_f64.clone(), step, d, Hints { eps, rule, diverged: diverged.as_deref(), unchecked: unchecked.as_deref() }, &named)
}

/// Why a code model's site has no op check in f64: a check without a reference, or a gradient
/// (its backward is Candle's, over ops nanhunt does not know). `None` for a layer stack.
fn unchecked(s: &Scenario, site: &Location) -> Option<String> {
    s.model.code.as_ref()?;
    Some(match site.phase {
        Phase::Validation if site.tensor == TensorId::Loss.validation() => return None,
        Phase::Forward | Phase::Validation => format!("`{}` is a code model's tensor without an f64 reference (`Watch::check_op` gives its op one)", site.tensor),
        Phase::Backward => format!("`{}` is a code model's gradient, made by Candle's backward over ops nanhunt does not know, so no op of it is computed alone in f64", site.tensor),
        Phase::Data | Phase::Loss | Phase::Update => return None,
    })
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;
