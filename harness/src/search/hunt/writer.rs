//! The campaign's one writer: a thread that owns every file a hunt writes.
//! Workers only wake it; it takes a snapshot of the campaign (a short lock),
//! writes the reports of sites that changed, then `state.json`,
//! `findings.jsonl`, `root_causes.jsonl` and `errors.jsonl`, each atomically, with the counts as they are now. Writes
//! are coalesced (at most one flush per `FLUSH`), the state is also saved every
//! `FLUSH` while runs are made (a kill loses at most that much work), and the
//! last flush happens when the campaign ends, so the files always hold true counts.
//! Reports are written through a [`Reporter`], which the report layer implements.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::campaign::Campaign;
use crate::error::{Error, Result};
use crate::scenario::Scenario;
use crate::search::corpus::write_findings;
use crate::search::errors::write_errors;
use crate::search::finding::Finding;
use crate::search::root_cause::{group_known, write_root_causes};

/// Writes the report of a root cause. The report layer implements it, so the
/// search never depends on what a report looks like.
pub trait Reporter: Sync {
    /// Writes (or rewrites) the report of `finding`, a root cause found on `base`; returns its
    /// directory. Any run it makes must stop within `run_limit`.
    fn report(&self, base: &Scenario, finding: &Finding, run_limit: Duration) -> Result<PathBuf>;
}

/// Shortest time between two flushes.
const FLUSH: Duration = Duration::from_secs(2);

/// What the writer is told.
pub(super) enum Msg {
    /// Something changed: flush soon.
    Wake,
    /// The campaign is over: flush now and stop.
    Finish,
}

/// Where the writer writes.
pub(super) struct Targets<'a> {
    /// The campaign state's directory (`state.json`).
    pub(super) corpus: Option<PathBuf>,
    /// The output directory (`findings.jsonl`).
    pub(super) out: Option<PathBuf>,
    /// Writes root causes' reports.
    pub(super) reporter: Option<&'a dyn Reporter>,
    /// Findings of earlier hunts, whose root causes are marked known.
    pub(super) known: &'a [Finding],
}

/// A handle to wake the writer.
pub(super) type Waker = Sender<Msg>;

/// Tells the writer to finish when dropped.
pub(super) struct FinishOnDrop(pub(super) Waker);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(Msg::Finish);
    }
}

/// Runs the writer until `Finish`; returns the first error it met (after trying every write).
/// Besides each wake, it flushes every `FLUSH` while runs are being made, so a campaign killed
/// without warning (SIGKILL, an abort) before its first finding still loses at most `FLUSH` of work.
pub(super) fn run(campaign: &Campaign, base: &Scenario, to: &Targets, run_limit: Duration, rx: Receiver<Msg>) -> Result<()> {
    let mut first_error: Option<Error> = None;
    // Due at once: the state is on disk (with its target and shard) as soon as the search starts.
    let mut last = Instant::now().checked_sub(FLUSH).unwrap_or_else(Instant::now);
    let mut pending = false;
    let mut saved_runs = None;
    loop {
        let finish = match rx.recv_timeout(FLUSH.saturating_sub(last.elapsed())) {
            Ok(Msg::Wake) => {
                pending = true;
                false
            }
            Ok(Msg::Finish) | Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        };
        if finish || last.elapsed() >= FLUSH {
            let runs = campaign.counts().runs;
            if finish || pending || saved_runs != Some(runs) {
                if let Err(e) = flush(campaign, base, to, run_limit, finish) {
                    first_error.get_or_insert(e);
                }
                (pending, saved_runs) = (false, Some(runs));
            }
            last = Instant::now();
        }
        if finish {
            return first_error.map_or(Ok(()), Err);
        }
    }
}

/// Writes stale reports (at the end, also those whose counts changed), then the
/// state and the findings; every write is tried, the first error returned.
fn flush(campaign: &Campaign, base: &Scenario, to: &Targets, run_limit: Duration, last: bool) -> Result<()> {
    let mut errors = Vec::new();
    if let Some(r) = to.reporter {
        for (i, f) in campaign.take_dirty(last) {
            match r.report(base, &f, run_limit) {
                Ok(dir) => campaign.set_report(i, dir),
                Err(e) => {
                    // Tried again at the next flush.
                    campaign.mark_dirty(i);
                    errors.push(e);
                }
            }
        }
    }
    let state = campaign.snapshot();
    if let Some(dir) = &to.corpus {
        errors.extend(state.save(dir).err());
    }
    if let Some(dir) = &to.out {
        errors.extend(write_findings(&dir.join("findings.jsonl"), &state.findings).err());
        errors.extend(write_root_causes(&dir.join("root_causes.jsonl"), &group_known(&state.findings, to.known)).err());
        errors.extend(write_errors(&dir.join("errors.jsonl"), &state.error_log).err());
    }
    errors.into_iter().next().map_or(Ok(()), Err)
}
