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

use candle_core::{DType, Device, Tensor, Var};

use super::cause::{self, Cause};
use super::data::{self, Dataset, Split, Table};
use super::divergence::DivergenceWatch;
use super::model::Model;
use super::optim::{self, Optimizer};
use super::outcome::{Kind, Location, Outcome, Stagnation, Status};
use super::rng::{stream, INIT_STREAM, SHUFFLE_STREAM};
use super::trace::{Trace, TraceRow};
use super::watch::{extent, stats, Stats};
use super::{dtype, RunOptions};
use crate::error::Result;
use crate::scenario::{InShape, Named, Phase, Plan, Scenario, Shape};

mod birth;
mod explain;
mod headroom;

/// Trains every fold of `data` with the model `plan` describes, on `dev`.
pub(crate) fn train(s: &Scenario, opts: &RunOptions, dev: Device, data: &Dataset, plan: &Plan) -> Result<Outcome> {
    let mut r = Runner::new(s, opts, dev.clone(), data, plan);
    r.run(data, plan)?;
    if opts.watch {
        r.trace_birth(data, plan)?;
    }
    let warnings = cause::precursors(s).into_iter().chain(r.margin_warnings()).collect();
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
        steps: r.steps,
        final_loss: r.last_loss,
        last_finite_loss: r.last_finite,
        stagnation: r.stagnation,
        divergence: r.divergence,
        warnings,
        error,
        dtype: s.train.dtype.name().to_string(),
        device: s.train.device.clone(),
        threads: candle_core::utils::get_num_threads(),
        seconds: 0.0,
        trace: r.trace,
    })
}

impl<'a> Runner<'a> {
    fn new(s: &'a Scenario, opts: &'a RunOptions<'a>, dev: Device, data: &Dataset, plan: &Plan) -> Self {
        let names = Rc::new(Names {
            outputs: plan.layer_names.iter().map(|l| format!("{l}.output")).collect(),
            m_states: plan.params.iter().map(|p| optim::state_names(&s.optimizer).0.map(|n| format!("optim.{}.{n}", p.name))).collect(),
            v_states: plan.params.iter().map(|p| optim::state_names(&s.optimizer).1.map(|n| format!("optim.{}.{n}", p.name))).collect(),
            validation: plan.layer_names.iter().map(|l| format!("validation.{l}.output")).collect(),
            grads: plan.params.iter().map(|p| format!("{}.grad", p.name)).collect(),
        });
        Runner {
            s,
            names,
            opts,
            dev,
            dtype: dtype(s.train.dtype),
            trace: Trace { layers: plan.layer_names.clone(), ..Trace::default() },
            first: None,
            first_at: None,
            cause: None,
            train_rows: Vec::new(),
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
            let mut init = stream(self.s.seed, INIT_STREAM + f as u64);
            let model = Model::new(&self.s.model, plan, &mut init, self.dtype, &self.dev)?;
            self.train_fold(f, fold, &model, data.shape, plan.out)?;
        }
        Ok(())
    }
}

fn batches_per_epoch(s: &Scenario, rows: usize) -> usize {
    rows.div_ceil(s.train.batch_size.unwrap_or(rows).max(1))
}

fn planned_steps(s: &Scenario, d: &Dataset) -> usize {
    d.folds
        .iter()
        .map(|f| {
            let n = s.train.epochs.saturating_mul(batches_per_epoch(s, f.train.x.rows));
            s.train.max_steps.map_or(n, |m| n.min(m))
        })
        .sum()
}

/// Tensor names, made once rather than every step.
struct Names {
    outputs: Vec<String>,
    /// `optim.<param>.exp_avg` and the like, where the rule keeps that state.
    m_states: Vec<Option<String>>,
    v_states: Vec<Option<String>>,
    validation: Vec<String>,
    grads: Vec<String>,
}

struct Runner<'a> {
    s: &'a Scenario,
    /// Why the first non-finite value appeared, once it has.
    cause: Option<Cause>,
    /// The current fold's training inputs, kept only where a stability bound can be computed.
    train_rows: Vec<Vec<f64>>,
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
    fn flag(&mut self, at: At, phase: Phase, tensor: impl Into<String>, (index, value): (usize, f64), shape: &[usize], count: usize) {
        if self.first.is_none() {
            let kind = Kind::of(value).unwrap_or(Kind::Nan);
            let coords = super::outcome::coords(index, shape);
            self.first = Some(Location { step: at.step, epoch: at.epoch, fold: at.fold, phase, tensor: tensor.into(), kind, index, shape: shape.to_vec(), coords, count, rows: Vec::new() });
            self.first_at = Some(self.steps);
        }
    }


    /// Checks a tensor and returns its stats; flags it if non-finite.
    fn watch(&mut self, at: At, phase: Phase, name: &str, t: &Tensor) -> Result<Stats> {
        let st = self.check(at, phase, name, stats(t)?, t.dims());
        self.note_rows(name, t)?;
        Ok(st)
    }

    /// Records which rows of a per-example tensor hold the non-finite values, if it was just flagged.
    fn note_rows(&mut self, name: &str, t: &Tensor) -> Result<()> {
        let Some(f) = self.first.as_mut().filter(|f| f.tensor == name && f.rows.is_empty() && f.count > 0) else { return Ok(()) };
        let Some(&n) = t.dims().first() else { return Ok(()) };
        let per = t.elem_count() / n.max(1);
        let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        f.rows = (0..n).filter(|r| v[r * per..(r + 1) * per].iter().any(|x| !x.is_finite())).take(20).collect();
        Ok(())
    }

    /// Flags a tensor whose stats hold a non-finite value; returns the stats.
    fn check(&mut self, at: At, phase: Phase, name: &str, st: Stats, dims: &[usize]) -> Stats {
        if let Some(bad) = st.first_bad {
            self.flag(at, phase, name, bad, dims, st.bad);
        }
        st
    }

    fn check_data(&mut self, d: &Dataset) {
        let at = |fold| At { step: 0, epoch: 0, fold };
        for (f, fold) in d.folds.iter().enumerate() {
            let splits = [("train", Some(&fold.train)), ("validation", fold.val.as_ref())];
            for (name, split) in splits.into_iter().filter_map(|(n, s)| s.map(|s| (n, s))) {
                for (what, t) in [("inputs", &split.x), ("targets", &split.y)] {
                    if let Some((r, c, v)) = t.first_nonfinite() {
                        let count = t.values.iter().filter(|v| !v.is_finite()).count();
                        self.flag(at(f), Phase::Data, format!("data.{name}.{what}"), (r * t.cols + c, v), &[t.values.len() / t.cols.max(1), t.cols], count);
                        if let Some(first) = self.first.as_mut().filter(|l| l.rows.is_empty()) {
                            first.rows = (0..t.rows).filter(|&r| t.row(r).iter().any(|x| !x.is_finite())).take(20).collect();
                        }
                    }
                }
            }
        }
    }

    /// A split's inputs (token ids as u32), targets shaped as the model's output, and padding mask.
    fn tensors(&self, split: &Split, shape: InShape, out: Shape) -> Result<Batch> {
        let to = |t: &Table, dims: Vec<usize>, dtype: DType| -> Result<Tensor> { Ok(Tensor::from_slice(&t.values, dims, &self.dev)?.to_dtype(dtype)?) };
        let n = split.x.rows;
        let x = match shape.shape() {
            Shape::Image { channels, height, width } => to(&split.x, vec![n, channels, height, width], self.dtype)?,
            Shape::Tokens { .. } => to(&split.x, vec![n, split.x.cols], DType::U32)?,
            Shape::Seq { len, .. } => to(&split.x, vec![n, len, split.x.cols / len.max(1)], self.dtype)?,
            Shape::Flat(_) => to(&split.x, vec![n, split.x.cols], self.dtype)?,
        };
        let ys = match out {
            Shape::Seq { len, width } => vec![n, len, width],
            _ => vec![n, split.y.cols],
        };
        let mask = split.mask.as_ref().map(|m| to(m, vec![n, m.cols], self.dtype)).transpose()?;
        Ok(Batch { x, y: to(&split.y, ys, self.dtype)?, mask })
    }

    fn train_fold(&mut self, fold: usize, data: &data::Fold, model: &Model, shape: InShape, out: Shape) -> Result<()> {
        let s = self.s;
        self.diverging = DivergenceWatch::new(&s.train.divergence);
        let train = self.tensors(&data.train, shape, out)?;
        let val = data.val.as_ref().map(|v| self.tensors(v, shape, out)).transpose()?;
        // Data that is finite in f64 can still overflow the compute dtype (1e5 in f16).
        let at = At { step: 0, epoch: 0, fold };
        for (name, b) in [("train", Some(&train)), ("validation", val.as_ref())].into_iter().filter_map(|(n, b)| b.map(|b| (n, b))) {
            // Token ids are integers, checked against the vocabulary when the data is built.
            if shape.vocab.is_none() {
                self.watch(at, Phase::Data, &format!("data.{name}.inputs"), &b.x)?;
            }
            self.watch(at, Phase::Data, &format!("data.{name}.targets"), &b.y)?;
        }
        if self.first.is_some() && self.cause.is_none() {
            self.cause = self.data_overflow();
        }
        if self.done() {
            return Ok(());
        }
        let n = data.train.x.rows;
        self.train_rows = if self.linear_sgd_mse() { (0..n).map(|r| data.train.x.row(r).to_vec()).collect() } else { Vec::new() };
        let batch = s.train.batch_size.unwrap_or(n).min(n);
        let mut opt = Optimizer::new(&s.optimizer, model.params.len());
        opt.fused = self.opts.fused;
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
            for start in (0..n).step_by(batch) {
                if self.done() || self.cut_now() || s.train.max_steps.is_some_and(|m| step >= m) {
                    return Ok(());
                }
                step += 1;
                self.steps += 1;
                let len = batch.min(n - start);
                let b = if s.train.shuffle {
                    train.select(&Tensor::from_slice(&order[start..start + len], len, &self.dev)?)?
                } else {
                    train.narrow(start, len)?
                };
                let at = At { step, epoch, fold };
                self.step(at, model, &mut opt, &b)?;
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

    fn step(&mut self, at: At, model: &Model, opt: &mut Optimizer, b: &Batch) -> Result<()> {
        let (s, x, y) = (self.s, &b.x, &b.y);
        let watch = self.opts.watch;
        let mut row = TraceRow { step: at.step, epoch: at.epoch, fold: at.fold, lr: s.optimizer.lr, ..Default::default() };
        let tapping = self.tap_at == Some((at.fold, at.step));
        if model.has_dropout() {
            model.dropout_step(super::rng::dropout_stream(s.seed, at.fold, at.step));
        }
        let (outs, slots) = if tapping { model.forward_tapped(x, b.mask.as_ref())? } else { (model.forward(x, b.mask.as_ref())?, Vec::new()) };
        if watch {
            let names = self.names.clone();
            for (o, name) in outs.iter().zip(&names.outputs) {
                let st = extent(o)?;
                row.max_abs.push(self.check(at, Phase::Forward, name, st, o.dims()).max_abs);
                self.note_rows(name, o)?;
            }
        }
        if watch {
            self.explain(at, Phase::Forward, &|r, f| r.forward_cause(f, model, x, &outs));
        }
        let pred = outs.last().unwrap_or(x);
        let loss = super::loss::loss(&s.loss, pred, y)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        row.train_loss = value;
        self.last_loss = Some(value);
        if value.is_finite() {
            self.last_finite = Some(value);
        } else {
            self.flag(at, Phase::Loss, "loss", (0, value), &[], 1);
            self.explain(at, Phase::Loss, &|r, _| r.loss_cause(model, x, &outs, y));
        }
        if self.done() || model.params.is_empty() {
            self.trace.push(row);
            return Ok(());
        }
        let store = loss.backward()?;
        let mut grads = Vec::with_capacity(model.params.len());
        for p in &model.params {
            grads.push(match store.get(p.var.as_tensor()) {
                Some(g) => g.clone(),
                None => p.var.as_tensor().zeros_like()?,
            });
        }
        drop(store);
        if tapping {
            self.find_birth(at, model, &outs, y, &slots, &grads)?;
            self.cut = Some("stopped where a non-finite gradient was born".into());
            return Ok(());
        }
        let clipping = s.optimizer.clip_grad_norm.is_some() || s.optimizer.clip_grad_value.is_some();
        let names = self.names.clone();
        let vars: Vec<&Var> = model.params.iter().map(|p| &p.var).collect();
        // Without clipping, the update runs first: the fused optimizer reads every gradient and
        // writes every parameter in place, and gathers the watch's stats of both on the way. The
        // checks still come in the same order (every gradient, then every parameter), so the
        // first value flagged is the same; a step whose gradients are not finite ends the run
        // (or, with `continue_steps`, is applied as before), so updating first changes nothing.
        let fused = if watch && !clipping { Some(opt.step_watched(&vars, &grads)?) } else { None };
        let mut sum_sq = 0.0;
        if watch {
            // The norm adds the parameters' sums in parameter order, as always.
            let mut g_stats = Vec::with_capacity(grads.len());
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
            self.note_margins(at, &mut row, &g_stats, &grads);
            self.explain(at, Phase::Backward, &|r, _| {
                let inputs: Vec<&Tensor> = (0..outs.len()).map(|l| model.input_of(l, x, &outs)).collect();
                cause::backward(model.layers(), &r.names.outputs, &inputs, s.train.dtype)
            });
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
            for (i, (p, w)) in model.params.iter().zip(&fused).enumerate() {
                for (st, name) in [(w.m, &names.m_states[i]), (w.v, &names.v_states[i])] {
                    if let (Some(st), Some(name)) = (st, name) {
                        self.check(at, Phase::Update, name, st, p.var.dims());
                    }
                }
                let st = match w.param {
                    Some(ps) => ps,
                    None => stats(p.var.as_tensor())?,
                };
                p_sq += self.check(at, Phase::Update, &p.name, st, p.var.dims()).sum_sq;
            }
            self.explain(at, Phase::Update, &|_, f| {
                // A parameter, or one of its states (`optim.<param>.<state>`).
                let owner = |p: &super::model::Param| p.name == f.tensor || f.tensor.strip_prefix("optim.").and_then(|t| t.strip_prefix(p.name.as_str())).is_some_and(|t| t.starts_with('.'));
                let Some(i) = model.params.iter().position(owner) else { return Ok(None) };
                if let Some(state) = f.tensor.rsplit('.').next().filter(|_| f.tensor.starts_with("optim.")) {
                    return cause::state(&s.optimizer, &f.tensor, state, &grads[i], f.index, s.train.dtype);
                }
                let (m, v) = opt.moments_at(i, f.index)?;
                cause::update(&s.optimizer, &f.tensor, &grads[i], f.index, m, v, s.train.dtype)
            });
        }
        if watch {
            row.param_norm = Some(p_sq.sqrt());
        }
        self.check_vanishing(at, row.grad_norm);
        if self.divergence.is_none() && self.first.is_none() {
            self.divergence = self.diverging.check(at.step, row.train_loss, row.param_norm).map(|d| Stagnation { epoch: at.epoch, fold: at.fold, ..d });
        }
        self.trace.push(row);
        Ok(())
    }

    fn validate(&mut self, at: At, model: &Model, b: &Batch) -> Result<()> {
        let (x, y) = (&b.x, &b.y);
        let outs = model.forward_eval(x, b.mask.as_ref())?;
        if self.opts.watch {
            let names = self.names.clone();
            for (o, name) in outs.iter().zip(&names.validation) {
                self.watch(at, Phase::Validation, name, o)?;
            }
        }
        let loss = super::loss::loss(&self.s.loss, outs.last().unwrap_or(x), y)?;
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !value.is_finite() {
            self.flag(at, Phase::Validation, "validation.loss", (0, value), &[], 1);
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

/// A split's tensors, or one batch of them.
struct Batch {
    x: Tensor,
    y: Tensor,
    mask: Option<Tensor>,
}

impl Batch {
    /// The rows `idx`, in that order.
    fn select(&self, idx: &Tensor) -> Result<Batch> {
        Ok(Batch { x: self.x.index_select(idx, 0)?, y: self.y.index_select(idx, 0)?, mask: self.mask.as_ref().map(|m| m.index_select(idx, 0)).transpose()? })
    }

    /// Rows `start..start + len`.
    fn narrow(&self, start: usize, len: usize) -> Result<Batch> {
        Ok(Batch { x: self.x.narrow(0, start, len)?, y: self.y.narrow(0, start, len)?, mask: self.mask.as_ref().map(|m| m.narrow(0, start, len)).transpose()? })
    }
}

/// Appends to a curve that keeps its last `cap` points.
fn push_bounded(curve: &mut VecDeque<f64>, v: f64, cap: usize) {
    if curve.len() == cap {
        curve.pop_front();
    }
    curve.push_back(v);
}

/// A fold's batch order: the rows in order, shuffled again in place at the start of every
/// epoch (with `train.shuffle`) from the fold's own stream, the same on every machine.
pub(crate) struct Orders {
    /// The current epoch's order.
    pub(crate) order: Vec<u32>,
    rng: rand_chacha::ChaCha8Rng,
}

impl Orders {
    /// The order of fold `fold`'s `n` training rows before any shuffle.
    pub(crate) fn new(s: &Scenario, fold: usize, n: usize) -> Self {
        Orders { order: (0..n as u32).collect(), rng: stream(s.seed, SHUFFLE_STREAM + fold as u64) }
    }

    /// Shuffles the order in place (Fisher–Yates), for the next epoch.
    pub(crate) fn shuffle(&mut self) {
        use rand::Rng;
        for i in (1..self.order.len()).rev() {
            self.order.swap(i, self.rng.random_range(0..=i));
        }
    }
}
