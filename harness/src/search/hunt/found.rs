//! A flipping candidate becomes a finding: counted as a repeat if its
//! signature was seen, else minimized, reported through a [`Reporter`] and
//! persisted. Reports are written by the report layer, which implements
//! [`Reporter`]; the search only hands it scenarios and outcomes.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{HuntOptions, Shared};
use crate::error::Result;
use crate::run::Outcome;
use crate::scenario::{Expect, ExpectedOutcome, Scenario};
use crate::search::corpus::write_findings;
use crate::search::finding::{knob_names, signature, Finding};
use crate::search::minimize::{Minimal, Minimizer};
use crate::search::mutation::{mutate, Mutation};

/// Writes the report of a new finding. The report layer implements it, so the
/// search never depends on what a report looks like.
pub trait Reporter: Sync {
    /// Writes the report of `finding`, derived from `base`, named by `signature`; returns its directory.
    fn report(&self, base: &Scenario, finding: &Minimal, signature: &str) -> Result<PathBuf>;
}

/// Handles a flipping candidate: count a repeat, or minimize, report and persist a new finding.
pub(super) fn found(base: &Scenario, opts: &HuntOptions, reporter: Option<&dyn Reporter>, shared: &Shared, candidate: Vec<Mutation>, o: &Outcome, start: Instant) -> Result<()> {
    let raw = signature(o.first_nonfinite.as_ref(), &o.dtype, &knob_names(&candidate));
    if let Some((_, i)) = shared.seen.lock().expect("seen lock").iter().find(|(s, _)| *s == raw) {
        shared.state.lock().expect("state lock").findings[*i].count += 1;
        return Ok(());
    }
    let runs_to_find = shared.runs.load(Ordering::Relaxed) as usize;
    let seconds_to_find = start.elapsed().as_secs_f64();
    let shrink_start = Instant::now();
    // Shrinking may take twice the time to find (at least 10 s), but not past the campaign's budget.
    let budget_end = start + opts.budget;
    let deadline = (shrink_start + Duration::from_secs_f64((2.0 * seconds_to_find).max(10.0))).min(budget_end.max(shrink_start + Duration::from_secs(10)));
    let minimal = if opts.minimize { Minimizer::new(base, opts.target, Some(deadline)).minimize(&candidate) } else { None };
    let mut minimal = match minimal {
        Some(m) => m,
        None => {
            let s = mutate(base, &candidate).expect("it just ran");
            Minimal { mutations: candidate.clone(), knob_repro: s.clone(), repro: s, outcome: o.clone(), thresholds: vec![], rows: None, features: None, one_minimal: false, runs: 0 }
        }
    };
    let location = minimal.outcome.first_nonfinite.clone().expect("a finding is non-finite");
    let sig = signature(Some(&location), &minimal.outcome.dtype, &knob_names(&minimal.mutations));
    let mut st = shared.state.lock().expect("state lock");
    if let Some(i) = st.findings.iter().position(|f| f.signature == sig) {
        st.findings[i].count += 1;
        shared.seen.lock().expect("seen lock").push((raw, i));
        return Ok(());
    }
    minimal.repro.expect = Some(Expect { outcome: ExpectedOutcome::Nonfinite, phase: Some(location.phase), tensor: Some(location.tensor.clone()), within_steps: None });
    let report = reporter.map(|r| r.report(base, &minimal, &sig)).transpose()?;
    let finding = Finding {
        scenario: base.name.clone(),
        signature: sig,
        location,
        mutations: minimal.mutations,
        found: candidate,
        thresholds: minimal.thresholds,
        count: 1,
        runs_to_find,
        seconds_to_find,
        seconds_to_shrink: shrink_start.elapsed().as_secs_f64(),
        shrink_runs: minimal.runs,
        rows: minimal.rows,
        report,
    };
    st.findings.push(finding);
    shared.seen.lock().expect("seen lock").push((raw, st.findings.len() - 1));
    if let Some(dir) = &opts.out {
        write_findings(&dir.join("findings.jsonl"), &st.findings)?;
    }
    drop(st);
    super::save(opts, shared)
}
