//! Stability margins: how far each knob of a scenario can move, alone, before
//! the run flips; and for a run that already fails, how far each must move to
//! fix it (the fix search a bug report needs).
//!
//! For every numeric knob of the search space and each direction, values are
//! scanned outwards from the base on the knob's scale until the outcome
//! changes, then bisected to three significant digits between the last value
//! like the base and the first unlike it, so the threshold found is the one
//! nearest the base (`side.rs`, with the option and bound types). Each threshold is verified: at it the outcome
//! has changed, 1% of the way back towards the base it has not; one whose check
//! could not be made (out of time while refining, or a run near it timed out or
//! could not run) is marked unverified. For a failing base a change is a fix
//! only when its run is finite and settles (not diverging, not the base's run
//! cut short). Categorical knobs (dtype, optimizer) are tried value by value.
//! A side not searched to its end (out of time, or a run there timed out or
//! could not run) says why, and is never reported as "none within range".

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::mutation::{Mutation, Scale};
use super::space::Space;
use crate::error::{Error, Result};
use crate::run::{Location, Status};
use crate::scenario::{Constant, Knob, KnobValue, Scenario};

mod side;

use side::{unusable, Searcher, Side};
pub use side::{Bound, Growing, MarginOptions};

/// The margins of one numeric knob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnobMargin {
    /// The knob.
    pub knob: Knob,
    /// For `consts`, the constant's own key (`loss.consts.eps`): the family has a margin per constant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constant: Option<String>,
    /// How it moves: `log`, `complement` (log of `1 − v`), `linear` or `integer`.
    pub scale: Scale,
    /// Its base value.
    pub base: f64,
    /// The threshold below the base, or none within the space's range.
    pub lower: Option<Bound>,
    /// The threshold above the base, or none within the space's range.
    pub upper: Option<Bound>,
    /// Why the side below was not searched to the end of its range (out of time, or a run there
    /// timed out or could not run): `lower` is then none without meaning "none within range".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_unsearched: Option<String>,
    /// Why the side above was not searched to the end of its range, as for `lower_unsearched`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_unsearched: Option<String>,
    /// For a failing base with no fix below: the nearest value there whose run was finite but no
    /// fix (it still diverges, or only stops before the failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lower_growing: Option<Growing>,
    /// The same above the base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_growing: Option<Growing>,
}

impl KnobMargin {
    /// What the margin is of: the knob's key, or the constant's.
    pub fn label(&self) -> String {
        self.constant.clone().unwrap_or_else(|| self.knob.to_string())
    }

    /// The threshold of a bound: where a finite base flips, or where a failing one is fixed.
    pub fn threshold(b: &Bound, failing: bool) -> f64 {
        if failing {
            b.stays_finite_at
        } else {
            b.flips_at
        }
    }

    /// A bound's margin as a size: the factor either way (at least 1) for multiplicative knobs, the distance for others.
    pub fn size(&self, b: &Bound) -> f64 {
        if self.is_factor() {
            b.margin.max(1.0 / b.margin)
        } else {
            b.margin
        }
    }

    /// Whether margins are factors (log and complement knobs, and integer ones on positive values) rather than distances.
    pub fn is_factor(&self) -> bool {
        is_factor(self.scale, self.base)
    }
}

/// Whether a knob on this scale at this base value has margins that are factors rather than distances.
pub(crate) fn is_factor(scale: Scale, base: f64) -> bool {
    match scale {
        Scale::Log | Scale::Complement => true,
        Scale::Integer => base > 0.0,
        Scale::Linear => false,
    }
}

/// One value of a categorical knob, tried alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Categorical {
    /// The knob.
    pub knob: Knob,
    /// The value tried.
    pub value: String,
    /// Whether the run at this value flips (goes non-finite, or diverges under `--target diverge`).
    pub flips: bool,
    /// For a failing base, why the run at this value is no fix although it does not flip (it
    /// still diverges, or only stops before the failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub growing: Option<String>,
    /// Where the run first goes non-finite, if it does.
    pub location: Option<Location>,
    /// Why this value says nothing (not run for want of time, or its run timed out or could not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsearched: Option<String>,
}

/// All margins of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Margins {
    /// The scenario's name.
    pub scenario: String,
    /// `finite` or `nonfinite`: thresholds flip a finite base, and fix a failing one.
    pub base_outcome: Status,
    /// Where the base goes non-finite, if it does.
    pub base_location: Option<Location>,
    /// Numeric knobs.
    pub knobs: Vec<KnobMargin>,
    /// Categorical knobs.
    pub categorical: Vec<Categorical>,
}

impl Margins {
    /// Whether the base fails, so thresholds are fixes.
    pub fn failing(&self) -> bool {
        self.base_location.is_some()
    }
}

/// The margins of `base` within its search space (or the ranges `opts` gives). An error when no
/// knob with a margin can move (as `hunt` says when none can), or when the base itself times out
/// or cannot run: then there is nothing to measure from.
pub fn margins(base: &Scenario, opts: &MarginOptions) -> Result<Margins> {
    let space = Space::of(base);
    let nothing = |message: &str| Error::Invalid { location: base.name.clone(), key: "search".into(), message: message.into() };
    if space.is_empty() {
        return Err(nothing("no knob can move: check `[search].knobs`"));
    }
    if space.numeric().is_empty() && space.categorical().is_empty() {
        return Err(nothing("no knob with a margin can move (the seed, injections and clipping have none): check `[search].knobs`"));
    }
    let mut s = Searcher { base, opts, base_rows: None };
    let base_run = s.run(&[]);
    if let Some(why) = unusable(&base_run.1) {
        return Err(Error::Unmeasured { name: base.name.clone(), message: format!("the base run {why}, so it has no margins") });
    }
    let failing = base_run.0;
    s.base_rows = (base_run.1.trace.dropped == 0).then(|| base_run.1.trace.rows.clone());
    let s = s;
    // Every side of every numeric knob is one independent search.
    let numeric: Vec<(Mutation, Scale, f64, [f64; 2])> = space
        .numeric()
        .into_iter()
        .filter_map(|(m, (lo, hi))| {
            let b = m.base_value(base)?;
            let scale = m.numeric().map_or(Scale::Log, |(_, s)| s);
            // A range given by knob is not one constant's: `consts` keep their own.
            let given = opts.ranges.get(&m.knob()).copied().filter(|_| m.value.own_scale().is_none());
            let (lo, hi) = given.unwrap_or((lo, hi));
            Some((m, scale, b, [lo.min(b), hi.max(b)]))
        })
        .collect();
    let sides: Vec<(usize, f64)> = (0..numeric.len()).flat_map(|i| numeric[i].3.map(|end| (i, end))).collect();
    // Why a side was not searched to its end, by (knob index, whether it is the side below).
    let unsearched = std::sync::Mutex::new(BTreeMap::new());
    let bound = |&(i, end): &(usize, f64)| {
        let (m, _, b, _) = &numeric[i];
        let side = if end == *b { Ok(Side::default()) } else { s.bound(m, *b, end, failing) };
        side.unwrap_or_else(|why| {
            unsearched.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert((i, end < *b), why);
            Side::default()
        })
    };
    let categorical_muts = space.categorical();
    let category = |m: &Mutation| {
        let value = m.to_string().split(" = ").nth(1).unwrap_or_default().to_string();
        if s.out_of_time() {
            return Categorical { knob: m.knob(), value, flips: false, growing: None, location: None, unsearched: Some("not run: out of time".into()) };
        }
        let (flips, o) = s.run(std::slice::from_ref(m));
        let unsearched = unusable(&o);
        let growing = if failing && !flips && unsearched.is_none() { s.no_fix(&o) } else { None };
        Categorical { knob: m.knob(), value, flips: flips && unsearched.is_none(), growing, location: o.first_nonfinite, unsearched }
    };
    let (bounds, categorical): (Vec<Side>, Vec<Categorical>) = if opts.jobs > 1 {
        match rayon::ThreadPoolBuilder::new().num_threads(opts.jobs).stack_size(crate::run::stack::WORKER_STACK).build() {
            Ok(pool) => pool.install(|| (sides.par_iter().map(bound).collect(), categorical_muts.par_iter().map(category).collect())),
            Err(_) => (sides.iter().map(bound).collect(), categorical_muts.iter().map(category).collect()),
        }
    } else {
        (sides.iter().map(bound).collect(), categorical_muts.iter().map(category).collect())
    };
    let mut bounds = bounds.into_iter();
    let mut why = unsearched.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let knobs = numeric
        .into_iter()
        .enumerate()
        .map(|(i, (m, scale, base, _))| {
            let (lower, upper) = (bounds.next().unwrap_or_default(), bounds.next().unwrap_or_default());
            let constant = Constant::from_value(&m.value).map(|c| c.at.to_string());
            KnobMargin {
                knob: m.knob(),
                constant,
                scale,
                base,
                lower: lower.bound,
                upper: upper.bound,
                lower_unsearched: why.remove(&(i, true)),
                upper_unsearched: why.remove(&(i, false)),
                lower_growing: lower.growing,
                upper_growing: upper.growing,
            }
        })
        .collect();
    Ok(Margins { scenario: base.name.clone(), base_outcome: base_run.1.outcome, base_location: failing.then_some(base_run.1.first_nonfinite).flatten(), knobs, categorical })
}

#[cfg(test)]
mod tests;
