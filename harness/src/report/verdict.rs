//! Does an outcome meet a scenario's `[expect]`? The verdict behind
//! regression checks: a scenario that once went NaN, plus its fix, must stay
//! finite; a known failure must keep failing where it did.

use crate::run::{Outcome, Status};
use crate::scenario::{Expect, ExpectedOutcome};

/// `Ok(())` if the outcome meets the expectation, or what differs.
pub fn verdict(e: &Expect, o: &Outcome) -> Result<(), String> {
    let first = o.first_nonfinite.as_ref();
    match (e.outcome, o.outcome) {
        (_, Status::Error) => Err(format!("run failed: {}", o.error.as_deref().unwrap_or("unknown error"))),
        (_, Status::Timeout) => Err(format!("run was {}", o.error.as_deref().unwrap_or("cut off"))),
        (ExpectedOutcome::Finite, Status::Finite) => Ok(()),
        (ExpectedOutcome::Finite, _) => Err(format!("expected finite, got {}", first.map_or("non-finite".into(), |f| f.to_string()))),
        (ExpectedOutcome::Nonfinite, Status::Finite) => Err(format!("expected non-finite, stayed finite for {} steps", o.steps)),
        (ExpectedOutcome::Nonfinite, Status::Nonfinite) => {
            let f = first.ok_or("non-finite outcome without a location")?;
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Kind, Location};
    use crate::scenario::Phase;

    fn nonfinite(step: usize, phase: Phase) -> Outcome {
        let mut o = Outcome::error("t", String::new());
        o.outcome = Status::Nonfinite;
        o.error = None;
        o.first_nonfinite = Some(Location { step, epoch: 1, fold: 0, phase, tensor: "loss".into(), kind: Kind::Nan, index: 0 });
        o
    }

    fn expect(outcome: ExpectedOutcome) -> Expect {
        Expect { outcome, ..Expect::finite() }
    }

    #[test]
    fn nonfinite_expectations_check_phase_tensor_and_step() {
        let e = Expect { phase: Some(Phase::Loss), tensor: Some("loss".into()), within_steps: Some(3), ..expect(ExpectedOutcome::Nonfinite) };
        assert!(verdict(&e, &nonfinite(3, Phase::Loss)).is_ok());
        assert!(verdict(&e, &nonfinite(4, Phase::Loss)).unwrap_err().contains("within 3"));
        assert!(verdict(&e, &nonfinite(2, Phase::Forward)).unwrap_err().contains("phase loss"));
        assert!(verdict(&expect(ExpectedOutcome::Finite), &nonfinite(1, Phase::Loss)).is_err());
    }

    #[test]
    fn errors_never_pass() {
        let o = Outcome::error("t", "boom".into());
        assert!(verdict(&expect(ExpectedOutcome::Finite), &o).unwrap_err().contains("boom"));
        assert!(verdict(&expect(ExpectedOutcome::Nonfinite), &o).is_err());
    }
}
