//! The end-of-hunt summary, as `nanhunt hunt` prints it and a failing
//! `assert_finite_within` shows it: one line per root cause with its nearest
//! trigger, its diagnosis, its flip thresholds and whether its rows were left
//! unminimized, on one screen.

use std::time::Duration;

use crate::human;
use crate::search::{describe, fails, round3_away, HuntResult, DEFER, ROW_RUNS};

/// The end-of-hunt summary: one line per root cause with its nearest trigger and threshold.
pub fn hunt_summary(name: &str, r: &HuntResult, allowed: Duration) -> String {
    let p = &r.progress;
    let mut s = format!(
        "hunted `{name}` for {} s (allowed {} s): {} runs ({:.1}/s), {} shrink runs, {} error(s), {} timeout(s) over {} s\n",
        human(p.elapsed),
        human(allowed.as_secs_f64()),
        p.runs,
        p.runs as f64 / p.elapsed.max(1e-9),
        p.shrink_runs,
        p.errors,
        p.timeouts,
        human(r.run_timeout.as_secs_f64())
    );
    if p.deferred > 0 {
        s += &format!("{} candidate(s) deferred as costlier than {} × the base run (cheap ones first); {} of them ran later\n", p.deferred, DEFER, p.deferred_run);
    }
    if p.errors * 2 > p.runs && p.runs > 0 {
        s += &format!("warning: {} of {} candidates errored or were invalid: the search space may not fit this scenario\n", p.errors, p.runs);
    }
    if let Some(at) = &r.base_failure {
        s += &format!("the base scenario itself {}: {at}\n", fails(at.kind));
    }
    s += &format!("{} root cause(s):\n", r.findings.len());
    for f in r.findings.iter().take(20) {
        let l = &f.location;
        let nearest = f.nearest().map_or(String::new(), |t| if t.mutations.is_empty() { "the base itself".into() } else { describe(&t.mutations) });
        let more = f.triggers.len().saturating_sub(1);
        let more = if more > 0 { format!(" (+{more} more trigger(s))") } else { String::new() };
        s += &format!("  {} ×{:<4} {} in {} ({}, {}) ← {nearest}{more}\n", f.signature, f.count, l.kind, l.tensor, l.phase, f.dtype);
        if let Some(note) = &f.note {
            s += &format!("      {note}\n");
        }
        if let Some(c) = &f.cause {
            s += &format!("      why: {c}\n");
        }
        let thresholds: Vec<String> = f
            .nearest()
            .map_or(&[][..], |t| &t.thresholds[..])
            .iter()
            .map(|t| format!("{} {} {} (base {}, finite at {})", t.knob, t.direction(), human(t.flips_at), human(t.base), human(round3_away(t.stays_finite_at, t.flips_at))))
            .collect();
        if !thresholds.is_empty() {
            s += &format!("      flips at {}\n", thresholds.join("; "));
        }
        if let Some(cut) = f.nearest().and_then(|t| t.rows.as_ref()).filter(|c| !c.minimized) {
            s += &format!("      rows not minimized: its repro keeps {} of {} rows (the row budget of {ROW_RUNS} runs or the time ran out)\n", cut.kept.len(), cut.total);
        }
    }
    if r.findings.len() > 20 {
        s += &format!("  ... {} more in findings.jsonl\n", r.findings.len() - 20);
    }
    if let Some(dir) = r.findings.iter().find_map(|f| f.report.as_ref()).and_then(|d| d.parent()) {
        s += &format!("reports: {}/<scenario>-<signature>-<hash>/ (one per root cause)\n", dir.display());
    }
    if !r.pending.is_empty() {
        s += &format!("{} flip(s) not yet minimal (time ran out): kept in the corpus, finished by --resume\n", r.pending.len());
    }
    s
}
