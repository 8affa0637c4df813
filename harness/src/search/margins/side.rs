//! One side of one knob: the outward scan from the base value, the bisection to
//! three significant digits, and the check of both sides of the threshold found.
//!
//! For a failing base the change sought is a fix, and a fix is a run that is
//! finite *and settles*: a finite run that still diverges, whose loss ends
//! decades up ([`crate::run::still_growing`]), or that is the base's own run
//! stopped before it fails (fewer epochs) only delays the failure. Such a value
//! is no fix; the nearest one seen is kept to say so when no fix is found.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::run::{run_with, Location, Outcome, RunOptions, Status, TraceRow};
use crate::scenario::Knob;
use crate::scenario::Scenario;
use crate::search::finding::Target;
use crate::search::minimize::bisect;
use crate::search::mutation::{try_mutate, Mutation, Scale};

/// Points of the outward scan on each side of the base.
const SCAN: usize = 16;

/// One side's result: its threshold, or none within range; for a failing base with no fix on
/// it, the nearest value whose finite run was no fix.
#[derive(Debug, Default)]
pub(super) struct Side {
    pub(super) bound: Option<Bound>,
    pub(super) growing: Option<Growing>,
}

/// How to search margins.
#[derive(Debug, Clone, Default)]
pub struct MarginOptions {
    /// What counts as a flip.
    pub target: Target,
    /// Stop refining once this instant has passed (bounds are then marked unverified).
    pub deadline: Option<Instant>,
    /// Wall-time limit of one run.
    pub run_timeout: Option<Duration>,
    /// Knob sides searched at once (0 or 1: one after the other). The result does not depend on it.
    pub jobs: usize,
    /// Ranges searched in place of the space's, by knob (`check` searches as far as a `min_margin` asks).
    pub ranges: BTreeMap<Knob, (f64, f64)>,
}

/// The threshold on one side of a knob's base value. `flips_at` and `stays_finite_at` straddle
/// it: for a finite base the first is the threshold, for a failing base the second (the fix).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bound {
    /// The value on the flipping side nearest the threshold (non-finite, or diverging under `--target diverge`).
    pub flips_at: f64,
    /// The value on the other side nearest it, where the run stays finite.
    pub stays_finite_at: f64,
    /// How far the threshold is from the base: a factor for multiplicative knobs (below 1 downwards;
    /// on `1 − v` for complement ones, above 1 towards 1), a distance for linear ones.
    pub margin: f64,
    /// Where the run first goes wrong on the flipping side.
    pub location: Option<Location>,
    /// Checked by running both sides: at the threshold the outcome changed, 1% back towards the base it did not.
    pub verified: bool,
}

/// A value whose run is finite but no fix of a failing base, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Growing {
    /// The value.
    pub at: f64,
    /// Why its run is no fix: still diverging (and how), or the base's run cut short.
    pub why: String,
}

/// Why a run says nothing about its value: it timed out, or could not run.
pub(super) fn unusable(o: &Outcome) -> Option<String> {
    let detail = || o.error.as_deref().map_or(String::new(), |e| format!(": {e}"));
    match o.outcome {
        Status::Finite | Status::Nonfinite => None,
        Status::Timeout => Some(format!("timed out{}", detail())),
        Status::Error => Some(format!("could not run{}", detail())),
    }
}

pub(super) struct Searcher<'a> {
    pub(super) base: &'a Scenario,
    pub(super) opts: &'a MarginOptions,
    /// The base run's trace rows (complete, none dropped), to tell a run cut short from a fix.
    pub(super) base_rows: Option<Vec<TraceRow>>,
}

impl Searcher<'_> {
    /// Runs the base with mutations; whether it hits the target, and the outcome.
    pub(super) fn run(&self, muts: &[Mutation]) -> (bool, Outcome) {
        let s = match try_mutate(self.base, muts) {
            Ok(s) => s,
            Err(why) => return (false, Outcome::error(&self.base.name, why)),
        };
        let deadline = self.opts.run_timeout.map(|t| Instant::now() + t);
        let o = run_with(&s, &RunOptions { deadline, ..RunOptions::default() });
        (self.opts.target.hits(&o), o)
    }

    pub(super) fn out_of_time(&self) -> bool {
        self.opts.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Why a run that misses the target is still no fix of a failing base: it is not finite, it
    /// still grows, or it is the base's own run stopped before it fails. `None`: a fix.
    pub(super) fn no_fix(&self, o: &Outcome) -> Option<String> {
        if o.outcome != Status::Finite {
            return Some("not finite".into());
        }
        if let Some(why) = crate::run::still_growing(o) {
            return Some(why);
        }
        let (rows, base) = (&o.trace.rows, self.base_rows.as_ref()?);
        let same = |a: &TraceRow, b: &TraceRow| (a.fold, a.step, a.train_loss.to_bits()) == (b.fold, b.step, b.train_loss.to_bits());
        let cut_short = o.trace.dropped == 0 && !rows.is_empty() && rows.len() < base.len() && rows.iter().zip(base).all(|(a, b)| same(a, b));
        cut_short.then(|| format!("the base's own run stopped after {} of the {} steps it takes to fail", rows.len(), base.len()))
    }

    /// The threshold between the base value `b` and `end`: the first scanned value whose
    /// outcome differs from the base's, bisected back towards the last one that does not. No
    /// bound when the whole side was run without a change; `Err` says why it was not searched to
    /// `end` (out of time, or a run there timed out or could not run), which is not the same.
    pub(super) fn bound(&self, m: &Mutation, b: f64, end: f64, failing: bool) -> std::result::Result<Side, String> {
        let scale = m.numeric().map_or(Scale::Log, |(_, s)| s);
        let whole = |v: f64| if scale == Scale::Integer { v.round() } else { v };
        let show = |v: f64| if scale == Scale::Complement { crate::human_near_one(v) } else { crate::human(v) };
        // Whether the outcome at `v` differs from the base's (for a failing base: whether it is
        // fixed), or why the run there says nothing.
        let changed = |v: f64| {
            let v = whole(v);
            let (hit, o) = self.run(&[m.with_value(v)]);
            match unusable(&o) {
                Some(why) => Err(format!("unknown: the run at {} {why}", show(v))),
                None if failing && !hit => Ok((self.no_fix(&o).is_none(), o)),
                None => Ok((hit != failing, o)),
            }
        };
        let growing = RefCell::new(None);
        // Scan outwards, denser near the base: geometric steps on a log, complement or (positive)
        // integer knob, even ones on a linear one.
        let scan = if scale == Scale::Integer { Scale::Log } else { scale };
        let scan = if scan.coord(b).is_some() && scan.coord(end).is_some() { scan } else { Scale::Linear };
        let (to, back) = (|x: f64| scan.coord(x).unwrap_or(x), |x: f64| scan.value(x));
        let mut prev = b;
        let mut found = None;
        for k in 1..=SCAN {
            if self.out_of_time() {
                return Err(if k == 1 { "not searched: out of time".into() } else { format!("searched to {} only: out of time", show(prev)) });
            }
            let v = whole(back(to(b) + (to(end) - to(b)) * (k as f64 / SCAN as f64).powi(2)));
            let (change, o) = changed(v)?;
            if change {
                found = Some(v);
                break;
            }
            if failing && o.outcome == Status::Finite && growing.borrow().is_none() {
                *growing.borrow_mut() = self.no_fix(&o).map(|why| Growing { at: v, why });
            }
            prev = v;
        }
        let Some(found) = found else { return Ok(Side { bound: None, growing: growing.into_inner() }) };
        // A run that says nothing while bisecting leaves the threshold unverified.
        let mut silent = false;
        let (like_base_at, changes_at) = bisect(
            prev,
            found,
            scale,
            &mut |v| {
                changed(v).map_or_else(
                    |_| {
                        silent = true;
                        false
                    },
                    |c| c.0,
                )
            },
            &|| self.out_of_time(),
        );
        // Verified independently: changed at the threshold, unchanged 1% of the way back.
        let at = changed(changes_at).ok();
        // 1% of the value's distance back (of `1 − v`'s, on a complement knob).
        let towards = match scale {
            Scale::Integer => like_base_at,
            Scale::Complement => 1.0 - ((1.0 - changes_at) - 0.01 * ((1.0 - changes_at) - (1.0 - b))),
            Scale::Log | Scale::Linear => changes_at - 0.01 * (changes_at - b),
        };
        let back_at = changed(towards).ok();
        let margin = match scan {
            Scale::Log => changes_at / b,
            Scale::Complement => (1.0 - b) / (1.0 - changes_at),
            Scale::Linear | Scale::Integer => (changes_at - b).abs(),
        };
        let verified = !silent && at.as_ref().is_some_and(|a| a.0) && back_at.as_ref().is_some_and(|a| !a.0);
        let (flips_at, stays_finite_at, location) =
            if failing { (like_base_at, changes_at, back_at.and_then(|a| a.1.failure_site())) } else { (changes_at, like_base_at, at.and_then(|a| a.1.first_nonfinite)) };
        Ok(Side { bound: Some(Bound { flips_at, stays_finite_at, margin, location, verified }), growing: None })
    }
}
