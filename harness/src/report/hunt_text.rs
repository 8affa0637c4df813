//! The end-of-hunt summary, as `nanhunt hunt` prints it and a failing
//! `assert_finite_within` shows it: the most met error messages, then each root
//! cause (a mechanism) with its nearest trigger, its diagnosis, its flip
//! thresholds, whether its rows were left unminimized, and its members (sites,
//! dtypes, triggers) with counts, on one screen.

use std::time::Duration;

use crate::human;
use crate::search::{fails, round3_away, trigger_text, HuntResult, RootCause, Tally, DEFER, ROW_RUNS};

/// The end-of-hunt summary: the top errors, then each root cause with its nearest trigger, thresholds and members.
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
    s += &errors(r);
    if let Some(at) = &r.base_failure {
        s += &format!("the base scenario itself {}: {at}\n", fails(at.kind));
    }
    let known = r.root_causes.iter().filter(|c| c.known).count();
    let known = if known > 0 { format!("; {} new, {known} known (--known)", r.root_causes.len() - known) } else { String::new() };
    s += &format!("{} root cause(s) over {} site(s){known}:\n", r.root_causes.len(), r.findings.len());
    for c in r.root_causes.iter().take(20) {
        s += &root_cause(c);
    }
    if r.root_causes.len() > 20 {
        s += &format!("  ... {} more in root_causes.jsonl\n", r.root_causes.len() - 20);
    }
    if let Some(dir) = r.findings.iter().find_map(|f| f.report.as_ref()).and_then(|d| d.parent()) {
        s += &format!("reports: {}/<scenario>-<signature>-<hash>/ (one per site; root_causes.jsonl names each root cause's)\n", dir.display());
    }
    if !r.pending.is_empty() {
        s += &format!("{} flip(s) not yet minimal (time ran out): kept in the corpus, finished by --resume\n", r.pending.len());
    }
    s
}

/// Most members of each kind listed on a root cause's lines (all are in `root_causes.jsonl`).
const LISTED: usize = 4;

/// The most met error messages, with a candidate each.
fn errors(r: &HuntResult) -> String {
    if r.errors.is_empty() {
        return String::new();
    }
    let mut s = format!("{} distinct error message(s), all in errors.jsonl; the most met:\n", r.errors.len());
    for e in r.errors.iter().take(3) {
        let message = e.message.split_whitespace().collect::<Vec<_>>().join(" ");
        s += &format!("  ×{:<5} {message} ← {}\n", e.count, trigger_text(&e.mutations));
    }
    s
}

/// A list of tallies on one line: `a ×3; b ×1 (+2 more)`.
fn tallies(t: &[Tally]) -> String {
    let shown: Vec<String> = t.iter().take(LISTED).map(|t| format!("{} ×{}", t.what, t.count)).collect();
    let more = if t.len() > LISTED { format!(" (+{} more)", t.len() - LISTED) } else { String::new() };
    format!("{}{more}", shown.join("; "))
}

/// A root cause's lines: its mechanism and nearest trigger, what it means and why, its
/// thresholds, and its members (sites, dtypes, triggers) with their counts.
fn root_cause(c: &RootCause) -> String {
    let m = &c.mechanism;
    let rule: &str = m.rule.map_or("unexplained", |r| r.into());
    let known = if c.known { " [known]" } else { "" };
    let at = if m.op == rule { String::new() } else { format!(" in {}", m.op) };
    let mut s = format!("  {} ×{:<4} {rule}{at} ({}) ← {}{known}\n", c.signature, c.count, m.precision.name(), trigger_text(&c.trigger));
    if let Some(note) = &c.note {
        s += &format!("      {note}\n");
    }
    match &c.cause {
        Some(cause) => s += &format!("      why: {cause}\n"),
        None => s += &format!("      first: {} in {} ({}, {}); no rule explains it\n", c.location.kind, c.location.tensor, c.location.phase, c.dtype),
    }
    if let Some(v) = &c.verdict {
        s += &format!("      verdict: {v}\n");
    }
    let thresholds: Vec<String> =
        c.thresholds.iter().map(|t| format!("{} {} {} (base {}, finite at {})", t.knob, t.direction(), human(t.flips_at), human(t.base), human(round3_away(t.stays_finite_at, t.flips_at)))).collect();
    if !thresholds.is_empty() {
        s += &format!("      flips at {}\n", thresholds.join("; "));
    }
    if let Some(cut) = c.rows.as_ref().filter(|c| !c.minimized) {
        s += &format!("      rows not minimized: its repro keeps {} of {} rows (the row budget of {ROW_RUNS} runs or the time ran out)\n", cut.kept.len(), cut.total);
    }
    s += &format!("      sites: {}\n", tallies(&c.sites));
    if c.dtypes.len() > 1 {
        s += &format!("      dtypes: {}\n", tallies(&c.dtypes));
    }
    if c.triggers.len() > 1 {
        s += &format!("      triggers: {}\n", tallies(&c.triggers));
    }
    s
}
