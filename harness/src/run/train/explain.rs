//! The diagnosis's side of the runner: with the step's tensors at hand, asks
//! `cause` why the first non-finite value appeared, at the phase it was flagged
//! in (data, forward, loss), and where data went non-finite; once the run has
//! ended, whether that value was the end of a divergence (`cause::chain`).

use candle_core::Tensor;

use super::{At, Runner};
use crate::error::Result;
use crate::run::cause::{self, Cause};
use crate::run::net::Net;
use crate::run::outcome::{Kind, Location};
use crate::scenario::{Layer, Phase};

impl Runner<'_> {
    /// Diagnoses the first non-finite value if it was flagged in this step's `phase` and has no
    /// cause yet, or the value pending the loss scaler's decision (whose cause goes if the step
    /// is skipped). A diagnosis that fails is no diagnosis: it never changes the run.
    pub(super) fn explain(&mut self, at: At, phase: Phase, why: &dyn Fn(&Self, &Location) -> Result<Option<Cause>>) {
        let first = self.first.as_ref().or(self.pending.as_ref());
        let Some(f) = first.filter(|f| (f.step, f.fold, f.phase) == (at.step, at.fold, phase) && self.cause.is_none()) else { return };
        self.cause = why(self, f).ok().flatten();
    }

    /// The dtype the layers compute in: autocast's low dtype under `precision = amp_*`.
    pub(super) fn compute_dtype(&self) -> crate::scenario::DTypeName {
        self.s.train.precision.low().unwrap_or(self.s.train.dtype)
    }

    /// The compute dtype, and under autocast the low dtype with `holds`, the dtypes a node's
    /// inputs hold (`Net::read_dtypes`; empty for a node computing without autocast).
    pub(super) fn amp<'h>(&self, holds: &'h [candle_core::DType]) -> (crate::scenario::DTypeName, cause::Amp<'h>) {
        let low = self.s.train.precision.low().filter(|_| !holds.is_empty());
        (self.compute_dtype(), low.map(|d| (crate::run::dtype(d), holds)))
    }

    /// Under autocast, the low dtype and the dtype the prediction holds (the last node's output's,
    /// as the last forward left it; f32 for the model's input), which a loss expression reads.
    pub(super) fn loss_autocast(&self, model: &dyn Net) -> Option<(candle_core::DType, candle_core::DType)> {
        let low = crate::run::dtype(self.s.train.precision.low()?);
        Some((low, model.output_dtypes().last().copied().unwrap_or(candle_core::DType::F32)))
    }

    /// Under autocast, the dtypes a loss expression's inputs hold (`p`'s, then `y` and `mask` in
    /// f32); empty without.
    pub(super) fn loss_holds(&self, model: &dyn Net) -> Vec<candle_core::DType> {
        self.loss_autocast(model).map_or_else(Vec::new, |(_, held)| vec![held, candle_core::DType::F32, candle_core::DType::F32])
    }

    /// Whether the model is one linear layer trained by plain SGD on the MSE: a quadratic with a
    /// stability bound on the learning rate that can be computed from the data.
    pub(super) fn linear_sgd_mse(&self) -> bool {
        let (s, o) = (self.s, &self.s.optimizer);
        matches!(s.model.layers.as_slice(), [Layer::Linear(_)])
            && s.loss.kind == crate::scenario::LossKind::Mse
            && o.kind == crate::scenario::OptimizerKind::Sgd
            && o.momentum == 0.0
            && o.weight_decay == 0.0
            && s.data.seq_len.is_none()
    }

    /// The cause of a forward value: the layer that made it, from what it read.
    pub(super) fn forward_cause(&self, f: &Location, model: &dyn Net, x: &Tensor, outs: &[Tensor]) -> Result<Option<Cause>> {
        // A code model's checks are not layers: no rule explains them.
        let Some((l, layer)) = self.names.outputs.iter().position(|n| *n == f.tensor).and_then(|l| Some((l, model.layers().get(l)?))) else { return Ok(None) };
        let Some(&part) = self.names.parts.get(l) else { return Ok(None) };
        let params = self.params_of(model, l);
        let holds = model.read_dtypes(l);
        cause::forward(&self.names.nodes[l], (layer, part), (model.input_of(l, x, outs), &model.others_of(l, x, outs), &params), f.index, self.amp(&holds), true)
    }

    /// The cause of a validation output (`validation.*`): the layer that made it in evaluation.
    pub(super) fn validation_cause(&self, f: &Location, model: &dyn Net, x: &Tensor, outs: &[Tensor]) -> Result<Option<Cause>> {
        let Some((l, layer)) = self.names.validation.iter().position(|n| *n == f.tensor).and_then(|l| Some((l, model.layers().get(l)?))) else { return Ok(None) };
        let Some(&part) = self.names.parts.get(l) else { return Ok(None) };
        let params = self.params_of(model, l);
        let holds = model.read_dtypes(l);
        cause::forward(&self.names.nodes[l], (layer, part), (model.input_of(l, x, outs), &model.others_of(l, x, outs), &params), f.index, self.amp(&holds), false)
    }

    /// The parameters of node `l`, as tensors.
    fn params_of(&self, model: &dyn Net, l: usize) -> Vec<Tensor> {
        model.params_of(l).filter_map(|i| model.params().get(i)).map(|p| p.var.as_tensor().clone()).collect()
    }

    /// The cause of a non-finite loss: past the stability bound (of the step's batch, with the
    /// loss's reduction), or the loss's own arithmetic (an expression's over the padding `mask` too).
    pub(super) fn loss_cause(&self, model: &dyn Net, x: &Tensor, outs: &[Tensor], (y, mask): (&Tensor, Option<&Tensor>)) -> Result<Option<Cause>> {
        let s = self.s;
        if self.linear_sgd_mse() && x.rank() == 2 {
            let rows = x.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?;
            let mean = s.loss.reduction == crate::scenario::Reduction::Mean;
            if let Some(c) = cause::chain::stability(s.optimizer.lr, &rows, mean, s.train.accumulate, s.train.dtype) {
                return Ok(Some(c));
            }
        }
        let pred = outs.last().unwrap_or(x);
        let n = model.layers().len();
        let logits = (n >= 1 && matches!(model.layers()[n - 1], Layer::Sigmoid(_))).then(|| model.input_of(n - 1, x, outs));
        let holds = self.loss_holds(model);
        cause::loss(&s.loss, (pred, y, mask), logits, (s.train.dtype, self.loss_autocast(model).map(|(low, _)| (low, holds.as_slice()))))
    }

    /// Once the run has ended: a first non-finite value that came after the run diverged (the
    /// trace shows the weights or the loss growing decades first, up to and including the step
    /// whose validation it showed in: a divergence of two or three steps) is that divergence's
    /// end, and its cause says what drove it.
    pub(super) fn explain_chain(&mut self, data: &crate::run::data::Dataset) {
        let Some(f) = self.first.as_ref().filter(|f| f.step > 0 && !matches!(f.kind, Kind::ScaleCollapse | Kind::Diverge | Kind::NoGradient)) else { return };
        // A value first seen in validation comes after its step trained: that step's row counts.
        let before = if f.phase == Phase::Validation { f.step + 1 } else { f.step };
        let Some(growth) = crate::run::divergence::growth_before(&self.trace.rows, f.fold, before) else { return };
        let n = data.folds.get(f.fold).map_or(0, |d| d.train.x.rows);
        let batch = self.s.train.batch_size.unwrap_or(n).min(n);
        self.cause = Some(cause::chain::chain(self.s, f, self.cause.take(), &growth, batch, self.compute_dtype()));
    }

    /// Data that is finite in f64 but overflows the compute dtype.
    pub(super) fn data_overflow(&self) -> Option<Cause> {
        let f = self.first.as_ref()?;
        (f.phase == Phase::Data).then(|| cause::conversion(&f.tensor, self.s.train.dtype))
    }

    /// Where non-finite data came from: the rows themselves, or the first preprocessing step after which they appear.
    pub(super) fn data_cause(&self, f: &Location) -> Cause {
        let steps = &self.s.data.preprocess;
        let bad_after = |k: usize| -> bool {
            let mut s = self.s.clone();
            s.data.preprocess.truncate(k);
            crate::run::data::build(&s)
                .map(|d| d.folds.iter().any(|f| [Some(&f.train), f.val.as_ref()].into_iter().flatten().any(|sp| sp.x.first_nonfinite().is_some() || sp.y.first_nonfinite().is_some())))
                .unwrap_or(false)
        };
        let first = if steps.is_empty() || bad_after(0) { None } else { (1..=steps.len()).find(|&k| bad_after(k)).map(|k| (k - 1, steps[k - 1].describe())) };
        cause::data(&f.tensor, first.as_ref().map(|(k, d)| (*k, d.as_str())))
    }
}
