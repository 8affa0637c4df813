//! What a candidate is expected to cost before it runs, so a hunt spends its
//! budget where flips are cheap (issue 27: an RNN base whose candidates with
//! three decades more epochs or rows each ran to their time limit, so the hunt
//! made 12 runs in 20 s and found nothing).
//!
//! The cost of a scenario is deterministic work units: optimizer steps × (rows
//! per step + [`STEP_ROWS`]) × sequence length × width × a dtype factor, where
//! the width is the values a row makes per position across the model's layers.
//! It reads the scenario only, never a clock, so a hunt that weighs candidates
//! by it stays reproducible for its seed. What counts is the ratio to the base
//! ([`relative`]): the guided engine's corner sweep tries the corners within
//! [`DEFER`] × the base first, and its later candidates above it wait
//! ([`Deferred`]) until cheap candidates have spent as much as they would.

use crate::scenario::{input_shape, plan, rows, DTypeName, Precision, Scenario};
use crate::search::mutation::Mutation;

/// A step costs as much as this many more rows besides its own: the update, the graph and the
/// dispatch (measured on this machine: seed 003 ex1's wide MLP takes 35× longer with batch 1
/// than with its full batch of 100, 1000 steps against 10, which puts it near 50; an Elman RNN
/// of 32 units over 100 steps nearer 1 to 10).
pub const STEP_ROWS: f64 = 16.0;

/// The stated multiple: a candidate expected to cost more than this many times its base is
/// deferred, not run first.
pub const DEFER: f64 = 10.0;

/// Cost of the lower-precision dtypes relative to f32 (measured on this machine on a 32-unit RNN
/// over 100 steps and the wide MLP of seed 003: f64 1.5–2.5×, bf16 3.6–4.2×, f16 and autocast
/// to f16 about 9×, emulated on the CPU).
fn dtype_factor(s: &Scenario) -> f64 {
    let of = |d: DTypeName| match d {
        DTypeName::F32 => 1.0,
        DTypeName::F64 => 2.0,
        DTypeName::Bf16 => 4.0,
        DTypeName::F16 => 8.0,
    };
    match s.train.precision {
        Precision::F32 => of(s.train.dtype),
        Precision::AmpF16 => of(DTypeName::F16),
        Precision::AmpBf16 => of(DTypeName::Bf16),
    }
}

/// The values a row makes per position across the model's layers (1 where the model's plan is
/// not known without reading files). No knob changes it: it cancels in [`relative`].
fn width(s: &Scenario) -> f64 {
    let planned = input_shape(&s.data).and_then(|shape| plan(&s.model, shape).ok());
    planned.map_or(1.0, |p| p.widths.iter().sum::<usize>().max(1) as f64)
}

/// The expected work of a run of `s`, in units of one row through one position of one layer's width.
pub fn work(s: &Scenario) -> f64 {
    let t = &s.train;
    let rows = rows(s).unwrap_or(t.batch_size.unwrap_or(1)).max(1) as f64;
    let batch = t.batch_size.map_or(rows, |b| (b.max(1) as f64).min(rows));
    let mut steps = (rows / batch).ceil() * t.epochs.max(1) as f64;
    if let Some(m) = t.max_steps {
        steps = steps.min(m.max(1) as f64);
    }
    let seq = s.data.seq_len.unwrap_or(1).max(1) as f64;
    steps * (batch + STEP_ROWS) * seq * width(s) * dtype_factor(s)
}

/// How many times the work of `base` a run of `s` is expected to take.
pub fn relative(base: &Scenario, s: &Scenario) -> f64 {
    work(s) / work(base).max(f64::MIN_POSITIVE)
}

/// Candidates waiting because they cost more than [`DEFER`] × the base: each runs once the cheap
/// candidates run since the last deferred one have spent as much as it is expected to (capped at
/// the run time limit's default multiple, 20, as a run is cut off there), the cheapest first.
/// Every deferral counts as one base run spent, so a space of only costly candidates still runs them.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    waiting: Vec<(f64, Vec<Mutation>)>,
    spent: f64,
}

/// Most candidates kept waiting; beyond it the costliest are dropped.
const WAITING: usize = 256;

/// The multiple of the base's time a candidate run is cut off at by default.
const CUT_OFF: f64 = 20.0;

impl Deferred {
    /// Puts a candidate expected to cost `ratio` × the base aside.
    pub(crate) fn defer(&mut self, ratio: f64, candidate: Vec<Mutation>) {
        self.spent += 1.0;
        if self.waiting.iter().any(|(_, c)| *c == candidate) {
            return;
        }
        self.waiting.push((ratio, candidate));
        self.waiting.sort_by(|a, b| a.0.total_cmp(&b.0));
        self.waiting.truncate(WAITING);
    }

    /// Counts a cheap candidate's expected cost as spent.
    pub(crate) fn spend(&mut self, ratio: f64) {
        self.spent += ratio;
    }

    /// The cheapest waiting candidate, if the cheap ones have spent enough for it.
    pub(crate) fn due(&mut self) -> Option<Vec<Mutation>> {
        let (ratio, _) = self.waiting.first()?;
        if self.spent < ratio.min(CUT_OFF) {
            return None;
        }
        self.spent = 0.0;
        Some(self.waiting.remove(0).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Knob;
    use crate::search::mutation::mutate;

    fn rnn() -> Scenario {
        crate::scenario::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/real/rnn_sgd_long_sequences.toml")).unwrap()
    }

    #[test]
    fn costs_by_hand() {
        // 128 rows in batches of 32: 4 steps an epoch, 5 epochs; 100 positions.
        let base = rnn();
        let with = |m: Mutation| relative(&base, &mutate(&base, &[m]).unwrap());
        // Work is linear in epochs and in sequence length.
        assert!((with(Mutation::new(Knob::Epochs, 5000u32)) - 1000.0).abs() < 1e-9);
        assert!((with(Mutation::new(Knob::SeqLen, 10u32)) - 0.1).abs() < 1e-9);
        // Batch 1: 128 steps of (1 + 16) row units against 4 of (32 + 16): 2176 / 192.
        assert!((with(Mutation::new(Knob::BatchSize, 1u32)) - 2176.0 / 192.0).abs() < 1e-9);
        // The lr moves no cost; f16 is 8 times f32, autocast to bf16 4 times.
        assert_eq!(with(Mutation::new(Knob::Lr, 3.0)), 1.0);
        assert_eq!(with(Mutation::new(Knob::Dtype, DTypeName::F16)), 8.0);
        assert_eq!(with(Mutation::new(Knob::Precision, Precision::AmpBf16)), 4.0);
        // In absolute units: 20 steps × 48 rows × 100 positions × (32 + 1) values.
        assert_eq!(work(&base), 20.0 * 48.0 * 100.0 * 33.0);
    }

    #[test]
    fn deferred_candidates_wait_for_cheap_spending_cheapest_first() {
        let mut d = Deferred::default();
        let c = |v: f64| vec![Mutation::new(Knob::Lr, v)];
        d.defer(1000.0, c(1.0));
        d.defer(15.0, c(2.0));
        // Two deferrals count two base runs: not yet the 15 the cheapest needs.
        assert_eq!(d.due(), None);
        d.spend(12.9);
        assert_eq!(d.due(), None);
        d.spend(0.1);
        assert_eq!(d.due(), Some(c(2.0)));
        // The costly one is cut off at 20 × the base, so it waits for 20 units, not 1000.
        d.spend(19.0);
        assert_eq!(d.due(), None);
        d.spend(1.0);
        assert_eq!(d.due(), Some(c(1.0)));
        assert_eq!(d.due(), None);
    }
}
