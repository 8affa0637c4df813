//! Where a non-finite gradient was born, not where it shows.
//!
//! The watch sees parameters' gradients only: Candle drops every other
//! gradient once it has propagated it. When the first non-finite value is a
//! parameter's gradient, the run is repeated (it is deterministic) up to that
//! step with a tap on each layer output (`model::tap`), and the gradients are
//! checked in the order backward makes them: the last layer's output, that
//! layer's parameters, the layer below's output, and so on. The first bad one
//! is where the value was born: in the loss's backward if it is the last
//! output's, in layer `l + 1`'s backward if it is layer `l`'s output's.
//! This costs a second run, and only for runs that fail in backward.

use candle_core::Tensor;

use super::{At, Batch, Runner};
use crate::error::Result;
use crate::run::cause;
use crate::run::data::Dataset;
use crate::run::model::{recorded, Slot};
use crate::run::net::{Net, Wrt};
use crate::run::outcome::Kind;
use crate::run::watch::stats;
use crate::run::RunOptions;
use crate::scenario::{Phase, Plan, TensorId};

impl Runner<'_> {
    /// If the first non-finite value is a parameter's gradient, re-runs up to its step with taps
    /// and, if a layer output's gradient went bad first, names that one instead, with its cause.
    pub(super) fn trace_birth(&mut self, data: &Dataset, plan: &Plan) -> Result<()> {
        let Some(f) = self.first.as_ref().filter(|f| f.phase == Phase::Backward && f.kind != Kind::NoGradient && !f.tensor.is_output_grad()) else { return Ok(()) };
        if !self.dev.is_cpu() {
            return Ok(());
        }
        // The re-run checks the gradient it finds in f64 if this run has a verdict (`wide`).
        let opts = RunOptions { progress: None, continue_steps: 0, ..*self.opts };
        let mut again = Runner::new(self.s, &opts, self.dev.clone(), data, plan);
        again.tap_at = Some((f.fold, f.step));
        again.run(data, plan)?;
        let same_step = |b: &&crate::run::Location| (b.fold, b.step, b.phase) == (f.fold, f.step, Phase::Backward);
        // The op check of the gradient found, keyed to the location this run reports.
        let check = again.op_check_of_first();
        if let Some(born) = again.first.as_ref().filter(same_step).filter(|b| b.tensor.is_output_grad()) {
            // The cause goes with the tensor: none if no rule explains the birth.
            self.first = Some(born.clone());
            self.cause = again.cause;
            self.op_f64 = check.map(|c| (born.clone(), c));
        } else if again.first.as_ref().filter(same_step).is_some_and(|b| b.tensor == f.tensor) {
            // The parameter's own gradient was born bad, from a finite output gradient.
            if self.cause.is_none() {
                self.cause = again.cause;
            }
            self.op_f64 = check.map(|c| (f.clone(), c));
        }
        Ok(())
    }

    /// On the tapped step: flags the first non-finite gradient in the order backward makes
    /// them, explains it if it is a layer output's, and with `RunOptions::verdict` computes the
    /// backward that made it in f64 (`wide`; `seed` is what the run seeds the loss's backward with).
    pub(super) fn find_birth(&mut self, at: At, model: &dyn Net, (b, outs): (&Batch, &[Tensor]), slots: &[Slot], grads: &[Tensor], seed: f64) -> Result<()> {
        let names = self.names.clone();
        let (x, y) = (&b.x, &b.y);
        for l in (0..model.layers().len()).rev() {
            if let Some(g) = slots.get(l).and_then(recorded) {
                let st = stats(&g)?;
                if let Some(bad) = st.first_bad {
                    let name = TensorId::OutputGrad(names.nodes[l].clone());
                    self.flag(at, Phase::Backward, &name, bad, g.dims(), st.bad);
                    self.note_rows(&name, &g)?;
                    // The gradient comes from the node that reads this output (none: the loss).
                    let reader = model.reader_of(l);
                    let upstream = reader.and_then(|r| slots.get(r)).and_then(recorded);
                    let s = self.s;
                    let others = reader.map(|r| model.others_of(r, x, outs)).unwrap_or_default();
                    // The loss reads the prediction as autocast left it (`loss_holds`) and computes
                    // in the training dtype, not the low one (a named kind, `precision = "f32"`), as
                    // `loss_cause` explains the forward.
                    let holds = reader.map_or_else(|| self.loss_holds(model), |r| model.read_dtypes(r));
                    let amp = match reader {
                        Some(_) => self.amp(&holds),
                        None => (s.train.dtype, self.loss_autocast(model).map(|(low, _)| (low, holds.as_slice()))),
                    };
                    self.cause = cause::born(model.layers(), &names.nodes, (l, reader), bad.0, (outs, &others), upstream.as_ref(), (&s.loss, y, b.mask.as_ref()), amp).ok().flatten();
                    self.check_birth(Wrt::Output(l), model, (b, outs, slots), seed);
                    return Ok(());
                }
            }
            for i in model.params_of(l) {
                let st = stats(&grads[i])?;
                if let Some(bad) = st.first_bad {
                    self.flag(at, Phase::Backward, &names.grads[i], bad, grads[i].dims(), st.bad);
                    // Born here from a finite output gradient (the layer's own product overflowed).
                    if let (Some(g), Some(layer)) = (slots.get(l).and_then(recorded), model.layers().get(l)) {
                        let name = &model.params()[i].name;
                        self.cause = cause::param_grad(layer, name, model.input_of(l, x, outs), &g, bad.0, self.compute_dtype()).ok().flatten();
                    }
                    self.check_birth(Wrt::Param(i), model, (b, outs, slots), seed);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The op check of the gradient just flagged (see `wide`).
    fn check_birth(&mut self, wrt: Wrt, model: &dyn Net, read: (&Batch, &[Tensor], &[Slot]), seed: f64) {
        if let Some(f) = self.first.clone() {
            self.backward_f64(&f, wrt, model, read, seed);
        }
    }
}
