//! The runner's half of the f64 verdict (`run::verdict`): with
//! `RunOptions::verdict`, when the first non-finite value is flagged, the op
//! that produced it is computed again in f64 from what it read in this step
//! ([`OpCheck`]): a forward or validation output by its node (`Net::op_f64`,
//! with the step's dropout mask and batch norm's statistics as they were), the
//! loss on its prediction and targets, and a gradient born in the backward
//! (found by the tapped re-run, `birth`) by the backward of the nodes that read
//! the tensor, or the loss's, from the step's inputs and upstream gradients
//! (`Net::grad_f64`). An update or data site, and a code model's gradient, have
//! no op check: their verdict rests on the f64 replay of the run.

use candle_core::{DType, Tensor, Var};

use super::{At, Batch, Runner};
use crate::error::Result;
use crate::run::judge::op_check;
use crate::run::model::{recorded, Slot};
use crate::run::net::{Net, Wrt};
use crate::run::outcome::Location;
use crate::run::verdict::OpCheck;
use crate::scenario::Phase;

/// A gradient summed in f64, what it read (inputs, upstream gradients) and the ops summed.
type Summed = (Tensor, Vec<Tensor>, Vec<String>);

impl Runner<'_> {
    /// With `RunOptions::verdict`: checks the op of the value flagged (or pending) in this step's
    /// `phase`, once per value. A check that fails is no check: it never changes the run. The
    /// tapped re-run (`birth`) checks only the gradient it finds.
    pub(super) fn widen(&mut self, at: At, phase: Phase, check: &dyn Fn(&Self, &Location) -> Result<Option<OpCheck>>) {
        if !self.opts.verdict || self.tap_at.is_some() {
            return;
        }
        let Some(f) = self.first.as_ref().or(self.pending.as_ref()).filter(|f| (f.step, f.fold, f.phase) == (at.step, at.fold, phase)) else { return };
        if self.op_f64.as_ref().is_some_and(|(l, _)| l == f) {
            return;
        }
        let found = check(self, f).ok().flatten();
        self.op_f64 = found.map(|c| (f.clone(), c));
    }

    /// The op check of a forward value (`training`) or a validation one: its node (or code
    /// check) alone in f64.
    pub(super) fn forward_f64(&self, f: &Location, model: &dyn Net, x: &Tensor, outs: &[Tensor], mask: Option<&Tensor>, training: bool) -> Result<Option<OpCheck>> {
        let names = if training { &self.names.outputs } else { &self.names.validation };
        let Some(l) = names.iter().position(|n| *n == f.tensor) else { return Ok(None) };
        let Some(w) = model.op_f64(l, x, outs, mask, training)? else { return Ok(None) };
        let inputs: Vec<&Tensor> = w.inputs.iter().collect();
        Ok(Some(op_check(&f.tensor.to_string(), &w.out, f.index, &inputs, w.reference)?))
    }

    /// The op check of a non-finite loss: the loss on the prediction, targets and padding mask cast to f64.
    pub(super) fn loss_f64(&self, model: &dyn Net, x: &Tensor, outs: &[Tensor], (y, mask): (&Tensor, Option<&Tensor>)) -> Result<Option<OpCheck>> {
        let pred = model.to_loss(outs.last().unwrap_or(x))?;
        let mask = mask.map(|m| m.to_dtype(DType::F64)).transpose()?;
        let wide = self.loss.apply_masked(&pred.to_dtype(DType::F64)?, &y.to_dtype(DType::F64)?, mask.as_ref())?;
        Ok(Some(op_check(&format!("loss ({})", <&str>::from(self.s.loss.kind)), &wide, 0, &[&pred, y], false)?))
    }

    /// On the tapped step, with `RunOptions::verdict`: the op check of `f`, the gradient the
    /// re-run found born bad (of `wrt`), from the backward that made it in f64: the nodes that
    /// read the tensor, from their outputs' recorded gradients, and for the last output the loss
    /// (seeded with `seed`, the loss scale over the accumulation count, as the run seeds it).
    pub(super) fn backward_f64(&mut self, f: &Location, wrt: Wrt, model: &dyn Net, (b, outs, slots): (&Batch, &[Tensor], &[Slot]), seed: f64) {
        if !self.opts.verdict {
            return;
        }
        let upstream = |j: usize| slots.get(j).and_then(recorded);
        let nodes = || -> Result<Option<Summed>> {
            let found = model.grad_f64(wrt, &b.x, outs, b.mask.as_ref(), &upstream)?;
            let (mut out, mut inputs, mut names) = match found {
                Some((w, used)) => (Some(w.out), w.inputs, used.iter().map(|&j| format!("{} (backward)", self.names.nodes[j])).collect()),
                None => (None, Vec::new(), Vec::new()),
            };
            if let (Wrt::Output(l), Some(last)) = (wrt, outs.last()) {
                if l + 1 == outs.len() {
                    let (g, read) = self.loss_grad_f64(model, last, b, seed)?;
                    out = Some(match out {
                        Some(o) => (o + g)?,
                        None => g,
                    });
                    inputs.extend(read);
                    names.push(format!("loss ({}) (backward)", <&str>::from(self.s.loss.kind)));
                }
            }
            Ok(out.map(|o| (o, inputs, names)))
        };
        let check = nodes().ok().flatten().and_then(|(out, inputs, names)| {
            let read: Vec<&Tensor> = inputs.iter().collect();
            op_check(&names.join(" + "), &out, f.index, &read, false).ok()
        });
        self.op_f64 = check.map(|c| (f.clone(), OpCheck { backward: true, ..c }));
    }

    /// The gradient of the last output `pred` through the loss in f64 (the loss on an f64 copy,
    /// times `seed`), with what it read: the prediction and the targets.
    fn loss_grad_f64(&self, model: &dyn Net, pred: &Tensor, b: &Batch, seed: f64) -> Result<(Tensor, Vec<Tensor>)> {
        let var = Var::from_tensor(&pred.to_dtype(DType::F64)?)?;
        let mask = b.mask.as_ref().map(|m| m.to_dtype(DType::F64)).transpose()?;
        let loss = self.loss.apply_masked(var.as_tensor(), &b.y.to_dtype(DType::F64)?, mask.as_ref())?;
        let store = loss.affine(seed, 0.0)?.backward()?;
        let g = match store.get(var.as_tensor()) {
            Some(g) => g.clone(),
            None => var.as_tensor().zeros_like()?,
        };
        Ok((g, vec![model.to_loss(pred)?, b.y.clone()]))
    }

    /// The op check to hand to the outcome: the one of the run's first non-finite value, if made.
    pub(super) fn op_check_of_first(&mut self) -> Option<OpCheck> {
        let (l, c) = self.op_f64.take()?;
        (self.first.as_ref() == Some(&l)).then_some(c)
    }
}
