//! The runner's half of the f64 verdict (`run::verdict`): with
//! `RunOptions::verdict`, when the first non-finite value is flagged in the
//! forward or the loss, the op that produced it is computed again in f64 from
//! the inputs it read in this step ([`OpCheck`]). A backward, update or data
//! site has no op check: its verdict rests on the f64 replay of the run.

use candle_core::{DType, Tensor};

use super::{At, Runner};
use crate::error::Result;
use crate::run::judge::op_check;
use crate::run::net::Net;
use crate::run::outcome::Location;
use crate::run::verdict::OpCheck;
use crate::scenario::Phase;

impl Runner<'_> {
    /// With `RunOptions::verdict`: checks the op of the value flagged (or pending) in this step's
    /// `phase`, once per value. A check that fails is no check: it never changes the run.
    pub(super) fn widen(&mut self, at: At, phase: Phase, check: &dyn Fn(&Self, &Location) -> Result<Option<OpCheck>>) {
        if !self.opts.verdict {
            return;
        }
        let Some(f) = self.first.as_ref().or(self.pending.as_ref()).filter(|f| (f.step, f.fold, f.phase) == (at.step, at.fold, phase)) else { return };
        if self.op_f64.as_ref().is_some_and(|(l, _)| l == f) {
            return;
        }
        let found = check(self, f).ok().flatten();
        self.op_f64 = found.map(|c| (f.clone(), c));
    }

    /// The op check of a forward value: its node (or code check) alone in f64.
    pub(super) fn forward_f64(&self, f: &Location, model: &dyn Net, x: &Tensor, outs: &[Tensor], mask: Option<&Tensor>) -> Result<Option<OpCheck>> {
        let Some(l) = self.names.outputs.iter().position(|n| *n == f.tensor) else { return Ok(None) };
        let Some(w) = model.op_f64(l, x, outs, mask)? else { return Ok(None) };
        let inputs: Vec<&Tensor> = w.inputs.iter().collect();
        Ok(Some(op_check(&f.tensor.to_string(), &w.out, f.index, &inputs, w.reference)?))
    }

    /// The op check of a non-finite loss: the loss on the prediction and targets cast to f64.
    pub(super) fn loss_f64(&self, model: &dyn Net, x: &Tensor, outs: &[Tensor], y: &Tensor) -> Result<Option<OpCheck>> {
        let pred = model.to_loss(outs.last().unwrap_or(x))?;
        let wide = self.loss.apply(&pred.to_dtype(DType::F64)?, &y.to_dtype(DType::F64)?)?;
        Ok(Some(op_check(&format!("loss ({})", <&str>::from(self.s.loss.kind)), &wide, 0, &[&pred, y], false)?))
    }

    /// The op check to hand to the outcome: the one of the run's first non-finite value, if made.
    pub(super) fn op_check_of_first(&mut self) -> Option<OpCheck> {
        let (l, c) = self.op_f64.take()?;
        (self.first.as_ref() == Some(&l)).then_some(c)
    }
}
