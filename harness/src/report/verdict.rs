//! Does an outcome meet a scenario's `[expect]`? The verdict behind
//! regression checks: a scenario that once went NaN, plus its fix, must stay
//! finite; a known failure must keep failing where it did.

use crate::run::{Kind, Location, Outcome, Status};
use crate::scenario::{Expect, ExpectedOutcome};

/// `Ok(())` if the outcome meets the expectation, or what differs.
pub fn verdict(e: &Expect, o: &Outcome) -> Result<(), String> {
    let first = o.first_nonfinite.as_ref();
    let diverged = o.divergence_site();
    match (e.outcome, o.outcome) {
        (ExpectedOutcome::Diverges, Status::Finite) => at_site(e, diverged.as_ref().ok_or_else(|| format!("expected a divergence, trained {} steps without one", o.steps))?),
        (ExpectedOutcome::Diverges, Status::Nonfinite) => Err(format!("expected a finite divergence, went non-finite: {}", first.map_or("?".into(), |f| f.to_string()))),
        (_, Status::Error) => Err(format!("run failed: {}", o.error.as_deref().unwrap_or("unknown error"))),
        (_, Status::Timeout) => Err(format!("run was {}", o.error.as_deref().unwrap_or("cut off"))),
        (ExpectedOutcome::Finite, Status::Finite) => Ok(()),
        (ExpectedOutcome::Finite, _) => Err(format!("expected finite, got {}", first.map_or("non-finite".into(), |f| f.to_string()))),
        (ExpectedOutcome::Nonfinite, Status::Finite) => Err(format!("expected non-finite, stayed finite for {} steps", o.steps)),
        (ExpectedOutcome::Nonfinite, Status::Nonfinite) => at_site(e, first.ok_or("non-finite outcome without a location")?),
    }
}

/// What a repro failing at `f` is expected to do again: go non-finite there, or diverge there.
pub(crate) fn expect_at(f: &Location) -> Expect {
    if f.kind == Kind::Diverge {
        Expect::diverges_at(f.phase, &f.tensor)
    } else {
        Expect::nonfinite_at(f.phase, &f.tensor)
    }
}

/// Whether the site the run reached is the one `[expect]` names (phase, tensor, within steps).
fn at_site(e: &Expect, f: &Location) -> Result<(), String> {
    if let Some(p) = e.phase.filter(|p| *p != f.phase) {
        return Err(format!("expected phase {p}, got {f}"));
    }
    if let Some(t) = e.tensor.as_ref().filter(|t| **t != f.tensor) {
        return Err(format!("expected tensor `{t}`, got {f}"));
    }
    if let Some(n) = e.within_steps.filter(|n| f.step > *n) {
        return Err(format!("expected within {n} steps, got {f}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Stagnation;
    use crate::scenario::Phase;

    fn nonfinite(step: usize, phase: Phase) -> Outcome {
        let mut o = Outcome::error("t", String::new());
        o.outcome = Status::Nonfinite;
        o.error = None;
        o.first_nonfinite = Some(Location { step, epoch: 1, fold: 0, phase, tensor: crate::scenario::TensorId::Loss, kind: Kind::Nan, index: 0, ..Default::default() });
        o
    }

    fn expect(outcome: ExpectedOutcome) -> Expect {
        Expect { outcome, ..Expect::finite() }
    }

    #[test]
    fn nonfinite_expectations_check_phase_tensor_and_step() {
        let e = Expect { phase: Some(Phase::Loss), tensor: Some(crate::scenario::TensorId::Loss), within_steps: Some(3), ..expect(ExpectedOutcome::Nonfinite) };
        assert!(verdict(&e, &nonfinite(3, Phase::Loss)).is_ok());
        assert!(verdict(&e, &nonfinite(4, Phase::Loss)).unwrap_err().contains("within 3"));
        assert!(verdict(&e, &nonfinite(2, Phase::Forward)).unwrap_err().contains("phase loss"));
        assert!(verdict(&expect(ExpectedOutcome::Finite), &nonfinite(1, Phase::Loss)).is_err());
    }

    #[test]
    fn divergence_expectations_need_a_finite_diverging_run_at_their_site() {
        let e = Expect::diverges_at(Phase::Update, &crate::scenario::TensorId::Parameters);
        let mut o = Outcome::error("t", String::new());
        (o.outcome, o.error, o.steps) = (Status::Finite, None, 12);
        assert!(verdict(&e, &o).unwrap_err().contains("without one"), "finite, not diverging");
        o.divergence = Some(Stagnation { step: 9, reason: "param_growth".into(), ..Default::default() });
        assert!(verdict(&e, &o).is_ok());
        assert_eq!(expect_at(&o.divergence_site().unwrap()), e, "a report expects what it saw");
        o.divergence = Some(Stagnation { step: 9, reason: "loss_growth".into(), ..Default::default() });
        assert!(verdict(&e, &o).unwrap_err().contains("expected phase update"));
        assert!(verdict(&e, &nonfinite(3, Phase::Loss)).unwrap_err().contains("went non-finite"));
        assert!(verdict(&expect(ExpectedOutcome::Finite), &o).is_ok(), "a diverging run is still finite");
    }

    #[test]
    fn errors_never_pass() {
        let o = Outcome::error("t", "boom".into());
        assert!(verdict(&expect(ExpectedOutcome::Finite), &o).unwrap_err().contains("boom"));
        assert!(verdict(&expect(ExpectedOutcome::Nonfinite), &o).is_err());
    }
}
