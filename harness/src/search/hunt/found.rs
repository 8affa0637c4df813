//! A flipping candidate becomes a trigger of a root cause: counted as a repeat
//! if its site and knob set were seen, else minimized (no lock held) and
//! registered, or parked as pending when its minimization did not finish.
//! Reports are written by the report layer, which implements `Reporter`
//! (`writer`); the search only hands it scenarios and findings.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::campaign::{raw_key, Campaign};
use super::options::{Clock, HuntOptions};
use super::writer::{Msg, Waker};
use crate::run::{Outcome, RunOptions};
use crate::scenario::Scenario;
use crate::search::finding::{distance, Pending};
use crate::search::minimize::Minimizer;
use crate::search::mutation::Mutation;

/// What handling a flip needs.
pub(super) struct Ctx<'a> {
    pub(super) base: &'a Scenario,
    pub(super) opts: &'a HuntOptions,
    pub(super) campaign: &'a Campaign,
    pub(super) clock: &'a Clock,
    pub(super) wake: Waker,
}

/// Handles a flipping candidate (fresh candidate `k`, if it is one) and its outcome.
pub(super) fn flip(ctx: &Ctx, candidate: Vec<Mutation>, o: &Outcome, k: Option<u64>) {
    let key = raw_key(o, &candidate);
    let Some(location) = o.failure_site() else {
        // A hit with no site (none is known) is not a finding: the candidate is done with.
        ctx.campaign.settle(k);
        return;
    };
    let found_at = (ctx.clock.start.elapsed().as_secs_f64(), ctx.campaign.counts().runs as usize);
    let pending = Pending { key, found: candidate, location, dtype: o.dtype_name().to_string(), count: 1, seconds_to_find: found_at.0, runs_to_find: found_at.1 };
    if !ctx.campaign.hit(&pending, k) {
        return;
    }
    // Shrinking may take twice the time to find (at least 10 s), but never past the hard end.
    let deadline = (Instant::now() + Duration::from_secs_f64((2.0 * found_at.0).max(10.0))).min(ctx.clock.hard_end);
    finish(ctx, pending, deadline);
}

/// Minimizes a flip (new, or parked before) until `deadline`: registers it if
/// the minimization completes, parks it otherwise.
pub(super) fn finish(ctx: &Ctx, p: Pending, deadline: Instant) {
    let started = Instant::now();
    let mut minimizer = Minimizer::new(ctx.base, ctx.opts.target, Some(deadline))
        .keep_data(ctx.opts.keep_data)
        .limits(Some(ctx.clock.run_timeout), Some(&ctx.opts.stop))
        .same_site(Some(p.site()))
        .by_mechanism(crate::search::root_cause::class_of);
    let minimal = minimizer.minimize(&p.found);
    ctx.campaign.shrunk(minimizer.runs);
    match minimal {
        Some(mut m) if m.complete => {
            m.outcome.verdict = verdict(ctx, &m.repro, &m.outcome);
            let d = distance(ctx.base, &m.mutations);
            ctx.campaign.register(&p, &ctx.base.name, &m, d, started.elapsed().as_secs_f64());
        }
        _ => ctx.campaign.park(&p.key.clone(), p),
    }
    let _ = ctx.wake.send(Msg::Wake);
}

/// The f64 verdict on a minimized repro's first non-finite value: its run again with the verdict
/// on (once per minimized trigger, never per candidate), if it fails where it did.
fn verdict(ctx: &Ctx, repro: &Scenario, o: &Outcome) -> Option<crate::run::verdict::Verdict> {
    if !crate::run::judge::wanted(o) {
        return None;
    }
    // The run itself within its usual limit, and as long again for the replay in f64.
    let deadline = Instant::now() + 2 * ctx.clock.run_timeout;
    let again = crate::run::run_with(repro, &RunOptions { deadline: Some(deadline), stop: Some(&ctx.opts.stop), verdict: true, ..RunOptions::default() });
    again.verdict.filter(|_| again.first_nonfinite == o.first_nonfinite)
}

/// The shrink phase: finishes parked flips until the hard end.
pub(super) fn shrink_pending(ctx: &Ctx, taken: &std::sync::Mutex<BTreeSet<String>>) {
    loop {
        if Instant::now() >= ctx.clock.hard_end || ctx.opts.stopped() {
            return;
        }
        let next = {
            let mut t = taken.lock().unwrap_or_else(|e| e.into_inner());
            ctx.campaign.take_pending(&mut t)
        };
        let Some(p) = next else { return };
        finish(ctx, p, ctx.clock.hard_end);
    }
}
