//! The training loop with its watch: trains every fold of a built dataset
//! and records where the first non-finite value appeared.
//!
//! The watch checks each layer output, the loss, each gradient and each
//! updated parameter, in that order, so the first non-finite value found is
//! the first one computed. Parameters are kept in a `Vec` in layer order and
//! nothing iterates a hash map, so a run is the same on every machine.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};

use super::cause::{self, Cause};
use super::data::{self, Dataset, Split};
use super::divergence::DivergenceWatch;
use super::model::Model;
use super::net::Net;
use super::optim::{self, Optimizer};
use super::outcome::{Kind, Location, Outcome, Stagnation, Status};
use super::rng::{stream, INIT_STREAM};
use super::scaler::Scaler;
use super::trace::Trace;
use super::watch::{stats, Stats};
use super::{dtype, RunOptions};
use crate::error::Result;
use crate::ops::loss::Loss;
use crate::scenario::{DataPart, DataSplit, InShape, Part, Phase, Plan, RunDType, Scenario, Shape, TensorId};
pub(crate) use batches::{inputs, Orders};
use batches::{push_bounded, table, Batch};

mod batches;
mod birth;
mod explain;
mod gradients;
mod headroom;
mod step;
mod wide;

#[cfg(test)]
mod amp_tests;

/// Trains every fold of `data` with the model `plan` describes, on `dev`.
pub(crate) fn train(s: &Scenario, opts: &RunOptions, dev: Device, data: &Dataset, plan: &Plan) -> Result<Outcome> {
    let mut r = Runner::new(s, opts, dev.clone(), data, plan);
    r.run(data, plan)?;
    // A code model's backward has no taps (its checks are not layers).
    if opts.watch && s.model.code.is_none() {
        r.trace_birth(data, plan)?;
    }
    r.explain_chain(data);
    let op_f64 = r.op_check_of_first();
    let params: Vec<String> = plan.params.iter().map(|p| p.name.clone()).collect();
    let warnings = cause::precursors(s).into_iter().chain(r.margin_warnings()).chain(r.trained.warning(&params)).chain(r.scale_warnings).collect();
    let error = r.cut.filter(|_| r.first.is_none());
    Ok(Outcome {
        scenario: s.name.clone(),
        outcome: match (&r.first, &error) {
            (Some(_), _) => Status::Nonfinite,
            (None, Some(_)) => Status::Timeout,
            (None, None) => Status::Finite,
        },
        first_nonfinite: r.first,
        cause: r.cause,
        verdict: None,
        op_f64,
        steps: r.steps,
        final_loss: r.last_loss,
        last_finite_loss: r.last_finite,
        stagnation: r.stagnation,
        divergence: r.divergence,
        skipped_steps: crate::run::scaler::skipped_steps(&r.trace.rows),
        warnings,
        error,
        dtype: Some(RunDType::of(s.train.dtype, s.train.precision)),
        device: s.train.device.clone(),
        threads: candle_core::utils::get_num_threads(),
        seconds: 0.0,
        model: None,
        trace: r.trace,
    })
}

impl<'a> Runner<'a> {
    fn new(s: &'a Scenario, opts: &'a RunOptions<'a>, dev: Device, data: &Dataset, plan: &Plan) -> Self {
        Runner {
            s,
            loss: Loss(s.loss.clone()),
            names: Rc::new(Names::new(s, plan)),
            opts,
            dev,
            dtype: dtype(s.train.dtype),
            trace: Trace { layers: plan.layer_names.clone(), scaled: s.train.loss_scale.as_ref().is_some_and(|l| l.enabled), ..Trace::default() },
            first: None,
            first_at: None,
            cause: None,
            op_f64: None,
            stagnation: None,
            divergence: None,
            diverging: DivergenceWatch::new(&s.train.divergence),
            steps: 0,
            total: planned_steps(s, data),
            last_loss: None,
            last_finite: None,
            cut: None,
            tap_at: None,
            worst: headroom::Worst::default(),
            scaler: None,
            deferring: false,
            pending: None,
            last_skip: None,
            trained: gradients::Trained::new(plan.params.len()),
            scale_warnings: Vec::new(),
        }
    }

    /// Checks the data, then trains fold after fold until done.
    fn run(&mut self, data: &Dataset, plan: &Plan) -> Result<()> {
        self.check_data(data);
        if let Some(f) = &self.first {
            self.cause = Some(self.data_cause(f));
        }
        for (f, fold) in data.folds.iter().enumerate() {
            if self.done() {
                break;
            }
            let low = self.s.train.precision.low().map(dtype);
            let model: Box<dyn Net> = match crate::run::code::build(self.s, f, self.dtype, &self.dev, Some(plan))? {
                Some(net) => Box::new(net.with_autocast(low)),
                None => Box::new(Model::new(&self.s.model, plan, &mut stream(self.s.seed, INIT_STREAM + f as u64), self.dtype, &self.dev)?.with_autocast(low, &self.dev)),
            };
            self.train_fold(f, fold, model.as_ref(), data.shape, plan.out)?;
            if let Some(sc) = &self.scaler {
                let fold = if data.folds.len() > 1 { format!(" (fold {f})") } else { String::new() };
                self.scale_warnings.extend(sc.warnings().into_iter().map(|w| w + &fold));
            }
        }
        Ok(())
    }
}

/// Optimizer steps per epoch: micro-batches in groups of `accumulate`, the last group shorter.
fn steps_per_epoch(s: &Scenario, rows: usize) -> usize {
    rows.div_ceil(s.train.batch_size.unwrap_or(rows).max(1)).div_ceil(s.train.accumulate.max(1))
}

fn planned_steps(s: &Scenario, d: &Dataset) -> usize {
    d.folds
        .iter()
        .map(|f| {
            let n = s.train.epochs.saturating_mul(steps_per_epoch(s, f.train.x.rows));
            s.train.max_steps.map_or(n, |m| n.min(m))
        })
        .sum()
}

/// The watched tensors' ids, made once rather than every step.
struct Names {
    /// Each node's name (`layers.1.exp`), in order.
    nodes: Vec<String>,
    /// Which part of its layer each node computes (none for a code model).
    parts: Vec<Part>,
    /// Each node's output (a code model's checks, as it named them).
    outputs: Vec<TensorId>,
    /// Each parameter, its gradient, and its states where the rule keeps them (`exp_avg`, ...).
    params: Vec<TensorId>,
    grads: Vec<TensorId>,
    m_states: Vec<Option<TensorId>>,
    v_states: Vec<Option<TensorId>>,
    /// Each node's output in the validation forward.
    validation: Vec<TensorId>,
}

impl Names {
    fn new(s: &Scenario, plan: &Plan) -> Self {
        // A code model names its own checks and parameters: their ids are what those names parse to.
        let code = s.model.code.is_some();
        let own = |id: TensorId| if code { TensorId::from_name(&id.to_string()) } else { id };
        let output = |l: &String| if code { TensorId::from_name(l) } else { TensorId::Output(l.clone()) };
        let (m, v) = optim::state_names(&s.optimizer);
        let state = |st: Option<_>| plan.params.iter().map(|p| st.map(|state| own(TensorId::State { param: p.name.clone(), state }))).collect();
        Names {
            nodes: plan.layer_names.clone(),
            parts: plan.nodes.iter().map(|n| n.part).collect(),
            outputs: plan.layer_names.iter().map(output).collect(),
            params: plan.params.iter().map(|p| own(TensorId::Param(p.name.clone()))).collect(),
            grads: plan.params.iter().map(|p| own(TensorId::ParamGrad(p.name.clone()))).collect(),
            m_states: state(m),
            v_states: state(v),
            validation: plan.layer_names.iter().map(|l| output(l).validation()).collect(),
        }
    }
}

struct Runner<'a> {
    s: &'a Scenario,
    /// The loss node: it reads the prediction and the targets.
    loss: Loss,
    /// Why the first non-finite value appeared, once it has.
    cause: Option<Cause>,
    /// The op that produced it, computed in f64 from the same inputs (with `RunOptions::verdict`).
    op_f64: Option<(Location, crate::run::verdict::OpCheck)>,
    names: Rc<Names>,
    opts: &'a RunOptions<'a>,
    dev: Device,
    dtype: DType,
    trace: Trace,
    first: Option<Location>,
    /// Steps taken (over all folds) when the first non-finite value was seen.
    first_at: Option<usize>,
    stagnation: Option<Stagnation>,
    divergence: Option<Stagnation>,
    /// The current fold's divergence watch.
    diverging: DivergenceWatch,
    steps: usize,
    total: usize,
    last_loss: Option<f64>,
    last_finite: Option<f64>,
    /// Why the run was cut off before its end, if it was.
    cut: Option<String>,
    /// The (fold, step) whose layer outputs get taps, on the re-run that finds where a
    /// non-finite gradient was born (`birth`).
    tap_at: Option<(usize, usize)>,
    /// The lowest headroom and most subnormal gradients seen while everything was finite.
    worst: headroom::Worst,
    /// The current fold's loss scaler (`[train.loss_scale]`), if on.
    scaler: Option<Scaler>,
    /// True inside a step whose non-finite values wait for the scaler's decision.
    deferring: bool,
    /// The first non-finite value of the step being decided.
    pending: Option<Location>,
    /// The first non-finite value of the last step the scaler skipped, with its diagnosis.
    last_skip: Option<crate::run::Skipped>,
    /// Which parameters got a gradient, and a nonzero one (`gradients`).
    trained: gradients::Trained,
    /// Each fold's loss-scale warnings (a scale held at its cap or just above its floor).
    scale_warnings: Vec<String>,
}

/// Where the runner is, for naming a location.
#[derive(Debug, Clone, Copy, Default)]
struct At {
    step: usize,
    epoch: usize,
    fold: usize,
}

impl Runner<'_> {
    /// True once the first non-finite value is `continue_steps` steps behind, or the run was cut off.
    fn done(&self) -> bool {
        self.cut.is_some() || self.first_at.is_some_and(|g| self.steps >= g.saturating_add(self.opts.continue_steps))
    }

    /// Cuts the run off if its deadline has passed or it was asked to stop.
    fn cut_now(&mut self) -> bool {
        if self.cut.is_none() {
            if self.opts.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                self.cut = Some(format!("stopped after {} steps", self.steps));
            } else if self.opts.deadline.is_some_and(|d| Instant::now() >= d) {
                self.cut = Some(format!("cut off at its time limit after {} steps", self.steps));
            }
        }
        self.cut.is_some()
    }

    /// Records the first non-finite value; later ones are ignored.
    fn flag(&mut self, at: At, phase: Phase, tensor: &TensorId, (index, value): (usize, f64), shape: &[usize], count: usize) {
        if self.first.is_none() && self.pending.is_none() {
            let kind = Kind::of(value).unwrap_or(Kind::Nan);
            let coords = super::outcome::coords(index, shape);
            let at = Location { step: at.step, epoch: at.epoch, fold: at.fold, phase, tensor: tensor.clone(), kind, index, shape: shape.to_vec(), coords, count, rows: Vec::new() };
            // With a loss scaler, a step's non-finite values wait for its decision (see `step`).
            if self.deferring {
                self.pending = Some(at);
            } else {
                self.first = Some(at);
                self.first_at = Some(self.steps);
            }
        }
    }

    /// Checks a tensor and returns its stats; flags it if non-finite.
    fn watch(&mut self, at: At, phase: Phase, name: &TensorId, t: &Tensor) -> Result<Stats> {
        let st = self.check(at, phase, name, stats(t)?, t.dims());
        self.note_rows(name, t)?;
        Ok(st)
    }

    /// Records which rows of a per-example tensor hold the non-finite values, if it was just flagged.
    fn note_rows(&mut self, name: &TensorId, t: &Tensor) -> Result<()> {
        let Some(f) = self.first.as_mut().or(self.pending.as_mut()).filter(|f| f.tensor == *name && f.rows.is_empty() && f.count > 0) else { return Ok(()) };
        let Some(&n) = t.dims().first() else { return Ok(()) };
        let per = t.elem_count() / n.max(1);
        let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        f.rows = (0..n).filter(|r| v[r * per..(r + 1) * per].iter().any(|x| !x.is_finite())).take(20).collect();
        Ok(())
    }

    /// Flags a tensor whose stats hold a non-finite value; returns the stats.
    fn check(&mut self, at: At, phase: Phase, name: &TensorId, st: Stats, dims: &[usize]) -> Stats {
        if let Some(bad) = st.first_bad {
            self.flag(at, phase, name, bad, dims, st.bad);
        }
        st
    }

    fn check_data(&mut self, d: &Dataset) {
        let at = |fold| At { step: 0, epoch: 0, fold };
        for (f, fold) in d.folds.iter().enumerate() {
            let splits = [(DataSplit::Train, Some(&fold.train)), (DataSplit::Validation, fold.val.as_ref())];
            for (name, split) in splits.into_iter().filter_map(|(n, s)| s.map(|s| (n, s))) {
                for (what, t) in [(DataPart::Inputs, &split.x), (DataPart::Targets, &split.y)] {
                    if let Some((r, c, v)) = t.first_nonfinite() {
                        let count = t.values.iter().filter(|v| !v.is_finite()).count();
                        self.flag(at(f), Phase::Data, &TensorId::Data(name, what), (r * t.cols + c, v), &[t.values.len() / t.cols.max(1), t.cols], count);
                        if let Some(first) = self.first.as_mut().filter(|l| l.rows.is_empty()) {
                            first.rows = (0..t.rows).filter(|&r| t.row(r).iter().any(|x| !x.is_finite())).take(20).collect();
                        }
                    }
                }
            }
        }
    }

    /// A split's inputs (token ids as u32), targets shaped as the model's output (when they are
    /// as many: a loss's own targets, class indices or CTC labels, stay rows), and padding mask.
    fn tensors(&self, split: &Split, shape: InShape, out: Shape) -> Result<Batch> {
        let (x, mask) = inputs(split, shape, self.dtype, &self.dev)?;
        let ys = match out {
            Shape::Seq { len, width } if split.y.cols == len * width => vec![split.x.rows, len, width],
            _ => vec![split.x.rows, split.y.cols],
        };
        Ok(Batch { x, y: table(&split.y, ys, self.dtype, &self.dev)?, mask })
    }

    fn train_fold(&mut self, fold: usize, data: &data::Fold, model: &dyn Net, shape: InShape, out: Shape) -> Result<()> {
        let s = self.s;
        self.diverging = DivergenceWatch::new(&s.train.divergence);
        let train = self.tensors(&data.train, shape, out)?;
        let val = data.val.as_ref().map(|v| self.tensors(v, shape, out)).transpose()?;
        // Data that is finite in f64 can still overflow the compute dtype (1e5 in f16).
        let at = At { step: 0, epoch: 0, fold };
        for (name, b) in [(DataSplit::Train, Some(&train)), (DataSplit::Validation, val.as_ref())].into_iter().filter_map(|(n, b)| b.map(|b| (n, b))) {
            // Token ids are integers, checked against the vocabulary when the data is built.
            if shape.vocab.is_none() {
                self.watch(at, Phase::Data, &TensorId::Data(name, DataPart::Inputs), &b.x)?;
            }
            self.watch(at, Phase::Data, &TensorId::Data(name, DataPart::Targets), &b.y)?;
        }
        if self.first.is_some() && self.cause.is_none() {
            self.cause = self.data_overflow();
        }
        if self.done() {
            return Ok(());
        }
        let n = data.train.x.rows;
        let batch = s.train.batch_size.unwrap_or(n).min(n);
        let mut opt = Optimizer::new(&s.optimizer, model.params().len());
        opt.fused = self.opts.fused;
        self.scaler = Scaler::new(s.train.loss_scale.as_ref());
        let mut orders = Orders::new(s, fold, n);
        let mut step = 0;
        let full_batch = batch == n;
        // Only the last `window + 1` points of the loss curve are ever read.
        let mut curve = VecDeque::with_capacity(s.train.stagnation.window + 2);
        for epoch in 1..=s.train.epochs {
            let (mut sum, mut count) = (0.0, 0);
            if s.train.shuffle {
                orders.shuffle();
            }
            let order = &orders.order;
            let starts: Vec<usize> = (0..n).step_by(batch).collect();
            for group in starts.chunks(s.train.accumulate.max(1)) {
                if self.done() || self.cut_now() || s.train.max_steps.is_some_and(|m| step >= m) {
                    return Ok(());
                }
                step += 1;
                self.steps += 1;
                let micro = group
                    .iter()
                    .map(|&start| {
                        let len = batch.min(n - start);
                        if s.train.shuffle {
                            train.select(&Tensor::from_slice(&order[start..start + len], len, &self.dev)?)
                        } else {
                            train.narrow(start, len)
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                let at = At { step, epoch, fold };
                self.step(at, model, &mut opt, &micro)?;
                let loss = self.trace.rows.last().map_or(f64::NAN, |r| r.train_loss);
                (sum, count) = (sum + loss, count + 1);
                if full_batch {
                    push_bounded(&mut curve, loss, s.train.stagnation.window + 1);
                    self.check_plateau(at, &curve);
                }
                if let Some(p) = self.opts.progress {
                    p(self.steps, self.total);
                }
            }
            if !full_batch && count > 0 {
                push_bounded(&mut curve, sum / count as f64, s.train.stagnation.window + 1);
                self.check_plateau(At { step, epoch, fold }, &curve);
            }
            if let Some(v) = &val {
                if !self.done() {
                    let at = At { step, epoch, fold };
                    self.validate(at, model, v)?;
                }
            }
        }
        Ok(())
    }

    fn validate(&mut self, at: At, model: &dyn Net, b: &Batch) -> Result<()> {
        let (x, y) = (&b.x, &b.y);
        let outs = model.forward_eval(x, b.mask.as_ref())?;
        if self.opts.watch {
            let names = self.names.clone();
            for (o, name) in outs.iter().zip(&names.validation) {
                self.watch(at, Phase::Validation, name, o)?;
            }
            self.explain(at, Phase::Validation, &|r, f| r.validation_cause(f, model, x, &outs));
            self.widen(at, Phase::Validation, &|r, f| r.forward_f64(f, model, x, &outs, b.mask.as_ref(), false));
        }
        let loss = self.loss.apply_autocast(&model.to_loss(outs.last().unwrap_or(x))?, y, b.mask.as_ref(), self.loss_autocast(model))?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            self.flag(at, Phase::Validation, &TensorId::Loss.validation(), (0, value), &[], 1);
        }
        if let Some(row) = self.trace.rows.last_mut() {
            row.val_loss = Some(value);
        }
        Ok(())
    }

    /// Flags a vanishing gradient: a global gradient norm under the floor.
    fn check_vanishing(&mut self, at: At, grad_norm: Option<f64>) {
        let floor = self.s.train.stagnation.grad_norm_floor;
        if let Some(g) = grad_norm.filter(|g| *g < floor && self.stagnation.is_none() && self.first.is_none()) {
            let detail = format!("global gradient norm {g:e} < {floor:e}");
            self.stagnation = Some(Stagnation { step: at.step, epoch: at.epoch, fold: at.fold, reason: "vanishing_gradient".into(), detail });
        }
    }

    /// Flags a loss curve (`curve`: per-step losses for full batch, epoch means
    /// otherwise) that improved by less than `rel_tol` over the last `window` points.
    fn check_plateau(&mut self, at: At, curve: &VecDeque<f64>) {
        let st = &self.s.train.stagnation;
        if self.stagnation.is_some() || self.first.is_some() || curve.len() <= st.window {
            return;
        }
        let (then, now) = (curve[curve.len() - 1 - st.window], curve[curve.len() - 1]);
        let improvement = (then - now) / then.abs().max(f64::MIN_POSITIVE);
        if improvement < st.rel_tol {
            let detail = format!("loss {then:e} → {now:e} over {} points: relative improvement {improvement:e} < {:e}", st.window, st.rel_tol);
            self.stagnation = Some(Stagnation { step: at.step, epoch: at.epoch, fold: at.fold, reason: "loss_plateau".into(), detail });
        }
    }
}
