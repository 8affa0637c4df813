//! The runner, the second stage of the dataflow: `run(&Scenario) -> Outcome`.
//!
//! It builds the data (`data`), the model (`model`, one file per layer
//! family), the loss and the optimizer, then trains with the watch on
//! (`train`, reading tensors through `watch`) and records a per-step
//! [`Trace`]. A NaN loss is an [`Outcome`], never an `Err`.
//!
//! A run is deterministic: data, initialisation and shuffling come from our
//! own seeded streams (`rng`; Candle's CPU RNG cannot be seeded), so the same
//! scenario and seed give a bit-identical trace.
//!
//! Asked (`RunOptions::verdict`), a run that went non-finite gets an f64 verdict
//! (`verdict`, `judge`): its producing op in f64 from the step's own inputs, and
//! the run replayed in f64 to that step (`replay`), under a time limit.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use candle_core::{DType, Device};

use crate::error::{Error, Result};
use crate::scenario::{check_memory, plan, within_plan, DTypeName, Plan, Scenario};

pub(crate) mod cause;
pub mod code;
pub(crate) mod data;
mod device;
mod divergence;
mod gradients;
pub(crate) mod judge;
pub(crate) mod kernel;
mod location;
pub(crate) mod model;
pub(crate) mod net;
pub(crate) mod opmath;
mod optim;
mod outcome;
mod profile;
pub(crate) mod rng;
mod scaler;
pub mod stack;
mod trace;
pub(crate) mod train;
pub mod verdict;
mod watch;

pub use cause::{Cause, Operand, Rule, Skipped};
pub use divergence::{still_growing, SETTLE_DECADES};
pub use gradients::{first_gradients, Gradients};
pub use location::{Kind, Location};
pub use outcome::{Outcome, Stagnation, Status};
pub use trace::{fmt, kept_rows, Trace, TraceRow, TRACE_HEAD, TRACE_TAIL};

/// How to run: the watch, how far past the first non-finite value to go, and progress.
#[derive(Clone, Copy)]
pub struct RunOptions<'a> {
    /// Check every layer output, gradient and parameter (otherwise only the loss).
    pub watch: bool,
    /// Steps to keep training after the first non-finite value.
    pub continue_steps: usize,
    /// Called after every step with (steps done, total steps planned).
    pub progress: Option<&'a (dyn Fn(usize, usize) + Sync)>,
    /// Cut the run off (status `timeout`) once this instant has passed; checked every step.
    pub deadline: Option<Instant>,
    /// Cut the run off (status `timeout`) once this is set, e.g. by Ctrl-C; checked every step.
    pub stop: Option<&'a AtomicBool>,
    /// Update f32/f64 CPU parameters in one pass that also gathers the watch's stats of each
    /// gradient and parameter (the default); off, every tensor is updated and checked on its own.
    /// Both give the same outcome and trace, bit for bit (a test holds them to it).
    pub fused: bool,
    /// Give a non-finite run its f64 verdict (`verdict`): the producing op and the run replayed in
    /// f64, about one more run's time (at most `verdict::REPLAY_LIMIT`). Off by default: hunts ask
    /// for it once per minimized trigger, not per candidate.
    pub verdict: bool,
}

impl Default for RunOptions<'_> {
    fn default() -> Self {
        RunOptions { watch: true, continue_steps: 0, progress: None, deadline: None, stop: None, fused: true, verdict: false }
    }
}

/// Runs a scenario with the watch on and default options.
pub fn run(s: &Scenario) -> Outcome {
    run_with(s, &RunOptions::default())
}

/// Runs a scenario; errors and panics become an `error` outcome.
pub fn run_with(s: &Scenario, opts: &RunOptions) -> Outcome {
    let start = Instant::now();
    let mut out = match catch_unwind(AssertUnwindSafe(|| try_run(s, opts))) {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => Outcome::error(&s.name, e.to_string()),
        Err(panic) => Outcome::error(&s.name, Error::Panic(panic_message(&*panic)).to_string()),
    };
    out.seconds = start.elapsed().as_secs_f64();
    if opts.verdict {
        out.verdict = verdict_of(s, &out, opts.deadline);
    }
    out
}

/// The f64 verdict on `out`, a finished run of `s` (see `verdict`): the run replayed in f64 to
/// its first non-finite value (within `verdict::REPLAY_LIMIT` and `deadline`), then `judge`.
fn verdict_of(s: &Scenario, out: &Outcome, deadline: Option<Instant>) -> Option<verdict::Verdict> {
    let site = out.first_nonfinite.as_ref().filter(|_| judge::wanted(out))?;
    let limit = Instant::now() + verdict::REPLAY_LIMIT;
    let step = replay(s, site, deadline.map_or(limit, |d| d.min(limit)));
    Some(judge::judge(s, out, site, step))
}

/// Replays `s` in f64 (storage and compute, no autocast) from the same seed, to the fold and step
/// of `site`, and says whether it stays finite there; cut off at `limit`. A run in f16 or bf16
/// (storage or autocast) that cannot run in f64 (a code model's kernel without f64) is replayed
/// in f32: finite there, the dtype lost the value; not finite, nothing is decided.
fn replay(s: &Scenario, site: &Location, limit: Instant) -> verdict::StepCheck {
    let (finite, detail) = replay_in(s, site, limit, DTypeName::F64);
    let half = matches!(s.train.dtype, DTypeName::F16 | DTypeName::Bf16) || s.train.precision.low().is_some();
    if finite.is_some() || !half || !detail.starts_with("the run could not be replayed") {
        return verdict::StepCheck { finite, detail };
    }
    let (narrow, how) = replay_in(s, site, limit, DTypeName::F32);
    let finite = narrow.filter(|f| *f);
    verdict::StepCheck { finite, detail: format!("{detail}; {how}{}", if narrow == Some(false) { " (f32 decides nothing: a wider dtype might hold it)" } else { "" }) }
}

/// [`replay`] in `dtype`: whether the run stays finite through `site`'s step (`None`: it could
/// not run, or was cut off), and what happened in words.
fn replay_in(s: &Scenario, site: &Location, limit: Instant, dtype: DTypeName) -> (Option<bool>, String) {
    let mut wide = s.clone();
    wide.train.dtype = dtype;
    wide.train.precision = crate::scenario::Precision::F32;
    // Each fold builds its own model: stopping every fold at the step changes nothing in the failing one.
    wide.train.max_steps = Some(site.step.max(1));
    let o = run_with(&wide, &RunOptions { deadline: Some(limit), ..RunOptions::default() });
    let dt: &str = dtype.into();
    match (o.outcome, o.first_nonfinite.as_ref()) {
        (Status::Nonfinite, Some(l)) if (l.fold, l.step) <= (site.fold, site.step) => (Some(false), format!("in {dt} the run goes non-finite too: {l}")),
        (Status::Error, _) => (None, format!("the run could not be replayed in {dt}: {}", o.error.unwrap_or_default())),
        (Status::Timeout, _) => (None, format!("the {dt} replay was cut off: {}", o.error.unwrap_or_default())),
        (Status::Finite | Status::Nonfinite, _) => (Some(true), format!("in {dt} the run stays finite through step {} of fold {}", site.step, site.fold)),
    }
}

/// The text of a caught panic.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into())
}

/// The candle dtype of a scenario dtype.
pub(crate) fn dtype(d: DTypeName) -> DType {
    match d {
        DTypeName::F32 => DType::F32,
        DTypeName::F64 => DType::F64,
        DTypeName::F16 => DType::F16,
        DTypeName::Bf16 => DType::BF16,
    }
}

/// The scenario dtype a candle dtype stands for: none for the integer and 8-bit dtypes, which
/// no scenario computes in.
pub(crate) fn dtype_name(d: DType) -> Option<DTypeName> {
    match d {
        DType::F32 => Some(DTypeName::F32),
        DType::F64 => Some(DTypeName::F64),
        DType::F16 => Some(DTypeName::F16),
        DType::BF16 => Some(DTypeName::Bf16),
        // Candle's `DType` is `#[non_exhaustive]`: the integer and 8-bit dtypes, and any it adds.
        _ => None,
    }
}

/// Runs a scenario, returning `Err` only when it cannot be run at all. Training runs on a
/// thread whose stack holds its graph (`stack`); a code model's graph is known only once it
/// runs, so all of its run does, on [`stack::CODE_STACK`].
pub(crate) fn try_run(s: &Scenario, opts: &RunOptions) -> Result<Outcome> {
    if s.model.code.is_some() {
        return stack::on_stack(&s.name, stack::CODE_STACK, || try_run_here(s, opts))?;
    }
    try_run_here(s, opts)
}

/// [`try_run`]'s work: prepares, then trains on a stack sized for the plan.
fn try_run_here(s: &Scenario, opts: &RunOptions) -> Result<Outcome> {
    let (dev, data, plan, card, bytes) = prepare(s)?;
    let mut out = stack::on_stack(&s.name, bytes, || train::train(s, opts, dev, &data, &plan))??;
    out.model = card;
    Ok(out)
}

/// Everything a run does before its first step: the memory check, the
/// device, the data and the model's plan (a code model's found by running it
/// once, with its card), checked against each other, and the stack its training needs
/// (a graph too deep for any is refused here).
fn prepare(s: &Scenario) -> Result<(Device, data::Dataset, Plan, Option<code::ModelCard>, u64)> {
    check_memory(s)?;
    let dev = device::open(&s.train.device)?;
    let data = data::build(s)?;
    let (plan, card) = match discover(s, &data, &dev)? {
        Some((plan, card)) => (plan, Some(card)),
        None => (plan(&s.model, data.shape).map_err(|(k, m)| Error::Invalid { location: s.name.clone(), key: format!("model.{k}"), message: m })?, None),
    };
    // The data as built (CSV rows are known only now), and the bounded trace.
    within_plan(s, &plan, &data.footprint(s, &plan), Trace::max_bytes(plan.layer_names.len()))?;
    if let Some(message) = plan.target_mismatch(data.targets).filter(|_| !crate::ops::loss::reads_own_targets(&s.loss, &plan, data.targets)) {
        return Err(match &s.model.code {
            Some(c) => Error::Invalid {
                location: s.name.clone(),
                key: "model.code".into(),
                message: format!("the forward of `{}` returns {} value(s) per row ({}), but the targets have {}", c.name, plan.out_width, plan.out.describe(), data.targets),
            },
            None => Error::Invalid { location: s.name.clone(), key: "model.layers".into(), message },
        });
    }
    // A code model's whole run is already on its stack (`try_run`): it trains in place.
    let bytes = if card.is_some() { 0 } else { stack::need(&s.name, &plan, data.shape.shape())? };
    Ok((dev, data, plan, card, bytes))
}

/// A code model's plan and card, from one forward on the first fold's first two training rows.
fn discover(s: &Scenario, data: &data::Dataset, dev: &Device) -> Result<Option<(Plan, code::ModelCard)>> {
    let Some(fold) = data.folds.first().filter(|_| s.model.code.is_some()) else { return Ok(None) };
    // Only those two rows become tensors: the memory check of the whole run comes after.
    let (x, mask) = train::inputs(&fold.train.select(0..fold.train.x.rows.min(2)), data.shape, dtype(s.train.dtype), dev)?;
    code::discover(s, &x, mask.as_ref(), dtype(s.train.dtype), dev)
}

/// Prepares a run and builds its first model without training: what the
/// fuzz targets call, so a panic anywhere before training is found.
pub(crate) fn dry_run(s: &Scenario) -> Result<()> {
    if s.model.code.is_some() {
        // Finding a code model's plan runs its forward, whose graph is dropped recursively.
        return stack::on_stack(&s.name, stack::CODE_STACK, || prepare(s).map(drop))?;
    }
    let (dev, _, plan, _, _) = prepare(s)?;
    let mut init = rng::stream(s.seed, rng::INIT_STREAM);
    model::Model::new(&s.model, &plan, &mut init, dtype(s.train.dtype), &dev)?;
    Ok(())
}

#[cfg(test)]
mod onnx_tests;
#[cfg(test)]
mod tests;
