//! A campaign's raw flips: counting a repeat, taking a new one to minimize, registering its
//! minimal trigger at its site, and parking one whose minimization did not finish.

use std::collections::BTreeSet;

use super::{Campaign, Inner, Seen};
use crate::run::Location;
use crate::scenario::Phase;
use crate::search::corpus::{covers, fold, same_knobs};
use crate::search::finding::{site_signature, Finding, Pending, Trigger};
use crate::search::minimize::{Built, Minimal};
use crate::search::root_cause::group;

impl Campaign {
    /// Records a raw flip `p` of candidate `k`; true if it is new and should be minimized, false if
    /// it was counted as a repeat.
    pub(in crate::search::hunt) fn hit(&self, p: &Pending, k: Option<u64>) -> bool {
        let key = p.key.as_str();
        let mut g = self.lock();
        g.in_flight.settle(k);
        match g.seen.get(key).cloned() {
            None => {
                g.in_flight.shrink(p.clone());
                g.seen.insert(key.to_string(), Seen::Shrinking(0));
                true
            }
            Some(Seen::Shrinking(n)) => {
                g.seen.insert(key.to_string(), Seen::Shrinking(n + 1));
                false
            }
            Some(Seen::Done(f, knobs)) => {
                g.recount.insert(f);
                let finding = &mut g.state.findings[f];
                finding.count += 1;
                if let Some(t) = finding.triggers.iter_mut().find(|t| same_knobs(&t.mutations, &knobs)) {
                    t.count += 1;
                }
                false
            }
            Some(Seen::Pending) => {
                if let Some(p) = g.state.pending.iter_mut().find(|p| p.key == key) {
                    p.count += 1;
                }
                false
            }
        }
    }

    /// Repeats of a raw flip counted while it was being minimized.
    fn repeats(g: &mut Inner, key: &str) -> usize {
        match g.seen.get(key) {
            Some(Seen::Shrinking(n)) => *n,
            _ => 0,
        }
    }

    /// Adds a complete minimization as a trigger of its site (a new one if the site is new).
    /// The site is the minimal trigger's: the flip's own, unless the minimizer dropped a knob
    /// that only moved where the same mechanism first showed (then the flip's hits count there).
    pub(in crate::search::hunt) fn register(&self, p: &Pending, base_name: &str, m: &Minimal, distance: f64, seconds_to_shrink: f64) {
        let (key, found, found_at) = (p.key.as_str(), p.found.clone(), (p.seconds_to_find, p.runs_to_find));
        let mut g = self.lock();
        g.in_flight.shrunk(key);
        let count = 1 + Self::repeats(&mut g, key) + g.state.pending.iter().find(|q| q.key == key).map_or(0, |q| q.count.saturating_sub(1));
        g.state.pending.retain(|q| q.key != key);
        // The site is the minimal trigger's: the flip's own, unless a knob that only moved where
        // the same mechanism showed was dropped (`Minimizer::by_mechanism`).
        let at = m.outcome.failure_site().unwrap_or_else(|| p.location.clone());
        let dtype = m.outcome.failure_site().map_or(p.dtype.as_str(), |_| m.outcome.dtype_name()).to_string();
        let sig = site_signature(&at, &dtype);
        let fi = match g.state.findings.iter().position(|f| f.signature == sig && f.scenario == base_name) {
            Some(i) => i,
            None => {
                g.state.findings.push(Finding {
                    scenario: base_name.to_string(),
                    signature: sig,
                    location: at.clone(),
                    dtype: dtype.clone(),
                    note: note(&at, &dtype),
                    triggers: vec![],
                    count: 0,
                    runs_to_find: found_at.1,
                    seconds_to_find: found_at.0,
                    seconds_to_shrink: 0.0,
                    shrink_runs: 0,
                    report: None,
                    cause: m.outcome.cause.clone(),
                });
                g.state.findings.len() - 1
            }
        };
        let f = &mut g.state.findings[fi];
        f.count += count;
        f.seconds_to_shrink += seconds_to_shrink;
        f.shrink_runs += m.runs;
        // A trigger that sets every knob of another (and more) adds nothing: the smaller
        // one reaches the site already. Its hits count for the smaller one.
        let built = Built { knob_repro: m.knob_repro.clone(), repro: m.repro.clone(), outcome: m.outcome.clone() };
        let t = Trigger {
            mutations: m.mutations.clone(),
            found,
            thresholds: m.thresholds.clone(),
            distance,
            count,
            rows: m.rows.clone(),
            full_step: m.full_step,
            cause: Some(m.outcome.cause.clone()),
            verdict: m.outcome.verdict.clone(),
            built: Some(std::sync::Arc::new(built)),
        };
        let kept = fold(&mut f.triggers, t);
        if f.triggers[0].mutations == kept && kept == m.mutations {
            f.location = at;
            f.cause = m.outcome.cause.clone();
        }
        // Raw flips that went to a dropped trigger now count for the one that covers it.
        for s in g.seen.values_mut() {
            if let Seen::Done(x, knobs) = s {
                if *x == fi && covers(knobs, &kept) {
                    *knobs = kept.clone();
                }
            }
        }
        g.seen.insert(key.to_string(), Seen::Done(fi, kept));
        g.dirty.insert(fi);
        g.groups = group(&g.state.findings).len();
    }

    /// Parks a flip whose minimization did not finish.
    pub(in crate::search::hunt) fn park(&self, key: &str, mut p: Pending) {
        let mut g = self.lock();
        g.in_flight.shrunk(key);
        // A flip parked before has been counting its repeats in the state meanwhile.
        if let Some(live) = g.state.pending.iter().find(|q| q.key == key) {
            p.count = live.count;
        }
        p.count += Self::repeats(&mut g, key);
        g.state.pending.retain(|q| q.key != key);
        g.state.pending.push(p);
        g.seen.insert(key.to_string(), Seen::Pending);
    }

    /// Takes a parked flip to finish (the shrink phase); it stays in the state until registered or parked again.
    pub(in crate::search::hunt) fn take_pending(&self, taken: &mut BTreeSet<String>) -> Option<Pending> {
        let g = self.lock();
        let p = g.state.pending.iter().find(|p| !taken.contains(&p.key))?.clone();
        taken.insert(p.key.clone());
        Some(p)
    }
}

/// What a failure site means, where nanhunt can say: a non-finite value in the
/// data itself is the data's problem (an outlier past the dtype's range, a NaN
/// cell), not the model's.
fn note(at: &Location, dtype: &str) -> Option<String> {
    (at.phase == Phase::Data).then(|| match at.kind {
        crate::run::Kind::Nan => format!("the data itself holds NaN in `{}`: not a model failure", at.tensor),
        _ => format!("the data itself is not representable in {dtype}: a value in `{}` is beyond its range, not a model failure", at.tensor),
    })
}
