//! One optimizer step: the forward and backward of each micro-batch (`train.accumulate`),
//! the loss scaler's decision (`[train.loss_scale]`), clipping, the update, and the watch
//! over all of it, at the learning rate of `[train.schedule]`.
//!
//! With a scaler, a step's non-finite values are *pending* until it decides: a step it
//! skips is an expected event (the trace's `skipped` column), not a finding; a value that
//! survives into an applied step is flagged as usual; a scale that underflows or a run that
//! skips more than `max_skip_fraction` of its steps is a finding of its own (`loss_scale`),
//! whose diagnosis names the value its last skipped step hit, with that value's diagnosis
//! (`Cause::skipped`: the overflow the scaler could not absorb).

use candle_core::{DType, Tensor, Var};

use super::{At, Batch, Runner};
use crate::error::Result;
use crate::run::cause::{self, Cause, Rule};
use crate::run::net::Net;
use crate::run::opmath::div_count;
use crate::run::optim::{self, Optimizer};
use crate::run::outcome::{Kind, Location, Stagnation};
use crate::run::trace::TraceRow;
use crate::run::watch::{extent, stats};
use crate::scenario::{Phase, Reduction, TensorId};

impl Runner<'_> {
    /// Forward and backward over the step's micro-batches: their gradients summed, and the
    /// last micro-batch's layer outputs.
    /// `None` when the step ended early (a flagged loss, or the tapped step's birth found).
    fn accumulate(&mut self, at: At, model: &dyn Net, micro: &[Batch], row: &mut TraceRow) -> Result<Option<(Vec<Tensor>, Vec<Tensor>)>> {
        let s = self.s;
        let watch = self.opts.watch;
        let tapping = self.tap_at == Some((at.fold, at.step));
        // `(loss / k).backward()` under mean reduction, as people write accumulation, so k
        // micro-batches of n rows give the gradient of one batch of k·n rows.
        let k = s.train.accumulate.max(1);
        let divide = s.loss.reduction == Reduction::Mean && k > 1;
        let scale = self.scaler.as_ref().map(|sc| sc.scale);
        let mut sum: Vec<Tensor> = Vec::new();
        let mut last = Vec::new();
        row.train_loss = 0.0;
        for (j, b) in micro.iter().enumerate() {
            let (x, y) = (&b.x, &b.y);
            if model.has_dropout() {
                model.dropout_step(crate::run::rng::dropout_stream(s.seed, at.fold, (at.step - 1) * k + j + 1));
            }
            // With the watch on, each output is scanned as the forward computes it (the tapped
            // re-run's outputs after it).
            let (outs, slots, extents) = match (tapping, watch) {
                (true, _) => {
                    let (outs, slots) = model.forward_tapped(x, b.mask.as_ref())?;
                    (outs, slots, Vec::new())
                }
                (false, true) => {
                    let (outs, extents) = model.forward_watched(x, b.mask.as_ref())?;
                    (outs, Vec::new(), extents)
                }
                (false, false) => (model.forward(x, b.mask.as_ref())?, Vec::new(), Vec::new()),
            };
            if watch {
                let names = self.names.clone();
                row.max_abs.resize(outs.len(), 0.0);
                for (l, (o, name)) in outs.iter().zip(&names.outputs).enumerate() {
                    let scanned = match extents.get(l) {
                        Some(st) => *st,
                        None => extent(o)?,
                    };
                    let st = self.check(at, Phase::Forward, name, scanned, o.dims());
                    row.max_abs[l] = if j == 0 { st.max_abs } else { row.max_abs[l].max(st.max_abs) };
                    self.note_rows(name, o)?;
                }
                self.explain(at, Phase::Forward, &|r, f| r.forward_cause(f, model, x, &outs));
                self.widen(at, Phase::Forward, &|r, f| r.forward_f64(f, model, x, &outs, b.mask.as_ref(), true));
            }
            let pred = model.to_loss(outs.last().unwrap_or(x))?;
            let loss = self.loss.apply_autocast(&pred, y, b.mask.as_ref(), self.loss_autocast(model))?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            row.train_loss += if divide { value / k as f64 } else { value };
            if !value.is_finite() {
                self.flag(at, Phase::Loss, &TensorId::Loss, (0, value), &[], 1);
                self.explain(at, Phase::Loss, &|r, _| r.loss_cause(model, x, &outs, (y, b.mask.as_ref())));
                self.widen(at, Phase::Loss, &|r, _| r.loss_f64(model, x, &outs, (y, b.mask.as_ref())));
            }
            if self.done() || model.params().is_empty() {
                return Ok(None);
            }
            let mut seed = loss;
            if divide {
                seed = div_count(&seed, k)?;
            }
            if let Some(sc) = scale {
                seed = seed.affine(f64::from(sc), 0.0)?;
            }
            let store = seed.backward()?;
            let got: Vec<Option<Tensor>> = model.params().iter().map(|p| store.get(p.var.as_tensor()).cloned()).collect();
            drop(store);
            // A parameter the backward never reached is a finding (`no_gradient`); past it
            // (`continue_steps`) its gradient is taken as 0.
            self.no_gradient(at, model, &got);
            let grads = got.into_iter().zip(model.params()).map(|(g, p)| g.map_or_else(|| p.var.as_tensor().zeros_like(), Ok)).collect::<candle_core::Result<Vec<_>>>()?;
            if tapping {
                let seed = scale.map_or(1.0, f64::from) / if divide { k as f64 } else { 1.0 };
                self.find_birth(at, model, (b, &outs), &slots, &grads, seed)?;
                if self.first.is_some() || j + 1 == micro.len() {
                    self.cut = Some("stopped where a non-finite gradient was born".into());
                    return Ok(None);
                }
            }
            sum = if sum.is_empty() { grads } else { sum.iter().zip(&grads).map(|(a, g)| Ok((a + g)?)).collect::<Result<_>>()? };
            last = outs;
        }
        Ok(Some((sum, last)))
    }

    /// One optimizer step over `micro` (one batch, or `accumulate` micro-batches).
    pub(super) fn step(&mut self, at: At, model: &dyn Net, opt: &mut Optimizer, micro: &[Batch]) -> Result<()> {
        let s = self.s;
        let watch = self.opts.watch;
        let lr = s.train.schedule.as_ref().map_or(s.optimizer.lr, |sch| sch.lr(s.optimizer.lr, at.step - 1));
        opt.set_lr(lr);
        let mut row = TraceRow { step: at.step, epoch: at.epoch, fold: at.fold, lr, loss_scale: self.scaler.as_ref().map(|sc| f64::from(sc.scale)), ..Default::default() };
        self.deferring = self.scaler.is_some();
        let summed = self.accumulate(at, model, micro, &mut row);
        let Some((mut grads, outs)) = summed? else {
            self.settle(at, &mut row, true);
            self.note_loss(row.train_loss);
            self.trace.push(row);
            return Ok(());
        };
        self.note_loss(row.train_loss);
        let mut skipped = false;
        if let Some(sc) = &self.scaler {
            (grads, skipped) = sc.unscale(&grads)?;
        }
        let clipping = s.optimizer.clip_grad_norm.is_some() || s.optimizer.clip_grad_value.is_some();
        let names = self.names.clone();
        let vars: Vec<&Var> = model.params().iter().map(|p| &p.var).collect();
        // Without clipping or a scaler, the update runs first: the fused optimizer reads every
        // gradient and writes every parameter in place, and gathers the watch's stats of both on
        // the way. The checks still come in the same order (every gradient, then every
        // parameter), so the first value flagged is the same; a step whose gradients are not
        // finite ends the run (or, with `continue_steps`, is applied as before), so updating
        // first changes nothing.
        let fused = if watch && !clipping && self.scaler.is_none() { Some(opt.step_watched(&vars, &grads)?) } else { None };
        let mut sum_sq = 0.0;
        let mut g_stats = Vec::new();
        if watch {
            // The norm adds the parameters' sums in parameter order, as always.
            g_stats.reserve(grads.len());
            for (i, g) in grads.iter().enumerate() {
                let st = match fused.as_ref().and_then(|u| u[i].grad) {
                    Some(gs) => gs,
                    None => stats(g)?,
                };
                sum_sq += st.sum_sq;
                g_stats.push(st);
            }
            for (i, st) in g_stats.iter().enumerate() {
                self.check(at, Phase::Backward, &names.grads[i], *st, grads[i].dims());
            }
            self.note_margins(at, &mut row, (&g_stats, &grads), &model.output_dtypes());
            let x = &micro[micro.len() - 1].x;
            self.explain(at, Phase::Backward, &|r, _| {
                let inputs: Vec<&Tensor> = (0..outs.len()).map(|l| model.input_of(l, x, &outs)).collect();
                cause::backward(model.layers(), &r.names.nodes, &inputs, r.compute_dtype())
            });
        }
        if self.settle(at, &mut row, skipped) {
            self.trace.push(row);
            return Ok(());
        }
        if let Some(max) = s.optimizer.clip_grad_norm {
            if !watch {
                sum_sq = grads.iter().map(|g| stats(g).map(|st| st.sum_sq)).sum::<Result<f64>>()?;
            }
            optim::clip_norm(&mut grads, sum_sq.sqrt(), max)?;
        }
        if watch || s.optimizer.clip_grad_norm.is_some() {
            row.grad_norm = Some(sum_sq.sqrt());
        }
        if self.done() {
            self.trace.push(row);
            return Ok(());
        }
        if let Some(max) = s.optimizer.clip_grad_value {
            optim::clip_value(&mut grads, max)?;
        }
        let fused = match fused {
            Some(f) => f,
            None if watch => opt.step_watched(&vars, &grads)?,
            None => {
                opt.step(&vars, &grads)?;
                Vec::new()
            }
        };
        let mut p_sq = 0.0;
        if watch {
            // Each parameter's new state, then its new value: the state is computed first, so a
            // second moment that overflows (and zeroes the update) is named before anything else.
            for (i, (p, w)) in model.params().iter().zip(&fused).enumerate() {
                for (st, name) in [(w.m, &names.m_states[i]), (w.v, &names.v_states[i])] {
                    if let (Some(st), Some(name)) = (st, name) {
                        self.check(at, Phase::Update, name, st, p.var.dims());
                    }
                }
                let st = match w.param {
                    Some(ps) => ps,
                    None => stats(p.var.as_tensor())?,
                };
                p_sq += self.check(at, Phase::Update, &names.params[i], st, p.var.dims()).sum_sq;
            }
            self.explain(at, Phase::Update, &|_, f| {
                // One of a parameter's states, or a parameter.
                if let TensorId::State { param, state } = &f.tensor {
                    let Some(i) = model.params().iter().position(|p| p.name == *param) else { return Ok(None) };
                    let (_, v) = opt.moments_at(i, f.index)?;
                    return cause::state(&s.optimizer, &f.tensor, *state, (&grads[i], v), f.index, s.train.dtype);
                }
                let Some(i) = names.params.iter().position(|p| *p == f.tensor) else { return Ok(None) };
                let (m, v) = opt.moments_at(i, f.index)?;
                cause::update(&s.optimizer, &f.tensor, &grads[i], f.index, m, v, s.train.dtype)
            });
            row.param_norm = Some(p_sq.sqrt());
        }
        // Only steps applied while everything was finite say which parameters train.
        if watch && self.first.is_none() {
            self.trained.note(&g_stats);
        }
        self.check_vanishing(at, row.grad_norm);
        if self.divergence.is_none() && self.first.is_none() {
            self.divergence = self.diverging.check(at.step, row.train_loss, row.param_norm).map(|d| Stagnation { epoch: at.epoch, fold: at.fold, ..d });
        }
        self.trace.push(row);
        Ok(())
    }

    /// Records the step's loss as the last (and last finite) one.
    fn note_loss(&mut self, value: f64) {
        self.last_loss = Some(value);
        if value.is_finite() {
            self.last_finite = Some(value);
        }
    }

    /// The scaler's decision on a step whose gradients are in (`skip`: a scaled gradient was not
    /// finite, or the step ended before its backward): updates the scale and, for a skipped
    /// step, drops its pending non-finite value and checks for a collapse. A value pending in a
    /// step that is applied becomes the run's first. Returns whether the step was skipped.
    fn settle(&mut self, at: At, row: &mut TraceRow, skip: bool) -> bool {
        self.deferring = false;
        let pending = self.pending.take();
        let Some(sc) = self.scaler.as_mut() else { return false };
        sc.update(skip);
        row.skipped = Some(skip);
        if !skip {
            if let Some(p) = pending {
                self.first = Some(p);
                self.first_at = Some(self.steps);
            }
            return false;
        }
        if self.first.is_none() {
            // The skipped step's value is dropped, and its diagnosis with it, but a collapse
            // names the last one (it is what the scaler could not absorb).
            let cause = self.cause.take();
            if let Some(location) = pending {
                self.last_skip = Some(crate::run::Skipped { location, cause });
            }
        }
        if let (None, Some(trouble)) = (&self.first, sc.trouble()) {
            let (why, meaning) = match trouble {
                crate::run::scaler::Trouble::Underflow(why) => (why, "overflows come faster than `growth_interval` clean steps grow the scale back, so the scale only shrinks"),
                crate::run::scaler::Trouble::Collapse(why) => (why, "most steps are thrown away, so the run no longer trains"),
                crate::run::scaler::Trouble::Overflow(why) => (why, "every scaled loss is inf and the backoff halves inf to inf, so no step is taken again"),
            };
            let seen = self.last_skip.as_ref().map_or(String::new(), |l| {
                let why = l.cause.as_ref().map_or(String::new(), |c| format!(" ({c})"));
                format!("; the last skipped step's first non-finite value was {}{why}", l.location)
            });
            self.first = Some(Location { step: at.step, epoch: at.epoch, fold: at.fold, phase: Phase::Update, tensor: TensorId::LossScale, kind: Kind::ScaleCollapse, ..Default::default() });
            self.first_at = Some(self.steps);
            self.cause = Some(Cause {
                rule: Rule::LossScaleCollapse,
                op: "grad scaler".into(),
                reason: format!("{why}{seen}. The scaler is not absorbing an occasional overflow: {meaning}"),
                inputs: Vec::new(),
                chain: None,
                skipped: self.last_skip.clone().map(Box::new),
            });
        }
        true
    }
}
