//! Parameters that do not train: one the backward never reached (no gradient in Candle's
//! `GradStore`) is a finding of kind `no_gradient` at the step, never a silent zero; one whose
//! gradient is exactly 0 at every step of the run gets a warning ("never updated").
//!
//! A layer stack never has the first (every registry op has a backward). A code model has it
//! when its forward goes through an op built without one: candle-nn's fused
//! `ops::layer_norm`, `ops::rms_norm` and `ops::softmax_last_dim` (candle#2168), which
//! `candle_nn::LayerNorm::forward` takes whenever its input is contiguous and it has a bias.

use candle_core::Tensor;

use super::{At, Runner};
use crate::run::cause::{Cause, Rule};
use crate::run::net::Net;
use crate::run::outcome::{Kind, Location};
use crate::run::watch::Stats;
use crate::scenario::Phase;

/// Which parameters have trained so far.
#[derive(Debug, Clone, Default)]
pub(super) struct Trained {
    /// Per parameter: every gradient it got so far was exactly 0.
    zero: Vec<bool>,
    /// Per parameter: it once had no gradient at all (reported as such, so not warned about).
    missing: Vec<bool>,
    /// Steps whose gradients were all finite and applied.
    steps: usize,
}

impl Trained {
    /// A record for `n` parameters.
    pub(super) fn new(n: usize) -> Self {
        Trained { zero: vec![true; n], missing: vec![false; n], steps: 0 }
    }

    /// Notes the gradients of an applied step (their stats, in parameter order).
    pub(super) fn note(&mut self, grads: &[Stats]) {
        if grads.iter().any(|g| g.bad > 0) {
            return;
        }
        self.steps += 1;
        for (z, g) in self.zero.iter_mut().zip(grads) {
            *z &= g.max_abs == 0.0;
        }
    }

    /// The warning for parameters whose gradient was exactly 0 at every step, if any.
    pub(super) fn warning(&self, names: &[String]) -> Option<String> {
        let never: Vec<String> = names.iter().zip(self.zero.iter().zip(&self.missing)).filter(|(_, (z, m))| **z && !**m).map(|(n, _)| format!("`{n}`")).collect();
        let steps = match self.steps {
            0 => return None,
            1 => "the run's one step".to_string(),
            n => format!("each of the run's {n} steps"),
        };
        match never.len() {
            0 => None,
            1 => Some(format!("parameter {} was never updated: its gradient was exactly 0 at {steps}", never[0])),
            n => Some(format!("{n} parameters were never updated: their gradients were exactly 0 at {steps}: {}", never.join(", "))),
        }
    }
}

impl Runner<'_> {
    /// Flags the parameters the step's backward did not reach (`got[i]` is `None`): the
    /// finding `no_gradient`, at the first of them, with all their names in its cause.
    pub(super) fn no_gradient(&mut self, at: At, model: &dyn Net, got: &[Option<Tensor>]) {
        let missing: Vec<usize> = got.iter().enumerate().filter(|(_, g)| g.is_none()).map(|(i, _)| i).collect();
        for &i in &missing {
            if let Some(m) = self.trained.missing.get_mut(i) {
                *m = true;
            }
        }
        let Some(&i) = missing.first() else { return };
        if self.first.is_some() || self.pending.is_some() {
            return;
        }
        let params = model.params();
        let shape = params[i].var.dims().to_vec();
        self.first = Some(Location { step: at.step, epoch: at.epoch, fold: at.fold, phase: Phase::Backward, tensor: self.names.grads[i].clone(), kind: Kind::NoGradient, shape, ..Default::default() });
        self.first_at = Some(self.steps);
        let names: Vec<&str> = missing.iter().map(|&i| params[i].name.as_str()).collect();
        self.cause = Some(cause(&names, params.len(), self.s.model.code.is_some()));
    }
}

/// Why `missing` of `total` parameters got no gradient, for a code model (`code`) or a layer stack.
pub(super) fn cause(missing: &[&str], total: usize, code: bool) -> Cause {
    let list = missing.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    let (them, they) = if missing.len() == 1 { ("it", "it would") } else { ("them", "they would") };
    let what = format!("{} of the model's {total} parameters got no gradient from the backward: {list}. Nothing on the loss's graph reaches {them}, so {they} never train", missing.len());
    let why = if code {
        "The likely cause: candle-nn's fused layer_norm/rms_norm/softmax_last_dim has no backward (candle#2168). \
         `candle_nn::LayerNorm::forward` takes it whenever its input is contiguous and the layer has a bias, `candle_nn::RmsNorm::forward` whenever its input is contiguous; \
         the drop-ins in `nanhunt::nn` take the same arguments and have a backward. \
         Otherwise: a parameter the forward does not use, or a `detach` on its way to the loss"
    } else {
        "Every registry op has a backward, so this is a bug in nanhunt: please report it with this scenario"
    };
    Cause { rule: Rule::NoGradient, op: "backward".into(), reason: format!("{what}. {why}"), inputs: Vec::new(), chain: None, skipped: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(max_abs: f64, bad: usize) -> Stats {
        Stats { max_abs, sum_sq: max_abs * max_abs, first_bad: None, bad, tiny: 0 }
    }

    #[test]
    fn a_parameter_is_never_updated_only_if_every_applied_step_gave_it_exactly_zero() {
        let names = ["a".to_string(), "b".to_string(), "c".to_string()];
        let mut t = Trained::new(3);
        assert_eq!(t.warning(&names), None, "no step, no warning");
        t.note(&[st(0.0, 0), st(1e-30, 0), st(0.0, 0)]);
        t.note(&[st(0.0, 0), st(0.0, 0), st(2.0, 0)]);
        // A step with a non-finite gradient says nothing about which are 0.
        t.note(&[st(5.0, 1), st(0.0, 0), st(0.0, 0)]);
        assert_eq!(t.warning(&names).as_deref(), Some("parameter `a` was never updated: its gradient was exactly 0 at each of the run's 2 steps"));
        let mut two = Trained::new(3);
        two.note(&[st(0.0, 0), st(0.0, 0), st(3.0, 0)]);
        assert_eq!(two.warning(&names).as_deref(), Some("2 parameters were never updated: their gradients were exactly 0 at the run's one step: `a`, `b`"));
        // A parameter reported as having no gradient is not warned about again.
        two.missing[0] = true;
        assert!(two.warning(&names).unwrap().starts_with("parameter `b`"));
    }

    #[test]
    fn the_cause_names_every_parameter_without_a_gradient_and_for_code_the_candle_nn_ops() {
        let c = cause(&["block.ln1.weight", "block.ln1.bias"], 16, true);
        assert_eq!(c.rule, Rule::NoGradient);
        assert!(c.reason.starts_with("2 of the model's 16 parameters got no gradient from the backward: `block.ln1.weight`, `block.ln1.bias`."), "{}", c.reason);
        assert!(c.reason.contains("candle-nn's fused layer_norm/rms_norm/softmax_last_dim has no backward (candle#2168)"), "{}", c.reason);
        assert!(cause(&["layers.0.linear.weight"], 2, false).reason.contains("bug in nanhunt"));
    }
}
