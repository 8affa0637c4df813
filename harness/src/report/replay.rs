//! Replay: re-run a report's `repro.toml` and compare the new trace with the
//! recorded `trace.csv`, bit for bit (both are written in shortest round-trip
//! form, so equal text is equal bits).

use std::path::Path;

use super::summary::read_summary;
use crate::error::{Error, Result};
use crate::run::{kept_rows, run_with, Outcome, RunOptions};
use crate::scenario::{load_with, LoadOptions};

/// The first place two traces differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Data row (1-based, after the header); 0 for the header itself.
    pub row: usize,
    /// The `step` field of that row, if it has one.
    pub step: Option<String>,
    /// Column name.
    pub column: String,
    /// Recorded value.
    pub recorded: String,
    /// Replayed value.
    pub replayed: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = self.step.as_deref().unwrap_or("?");
        write!(f, "trace diverges at row {} (step {step}), column `{}`: recorded `{}`, replayed `{}`", self.row, self.column, self.recorded, self.replayed)
    }
}

/// Compares two CSV traces; `None` if identical.
pub fn compare(recorded: &str, replayed: &str) -> Option<Divergence> {
    let split = |t: &str| t.lines().map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>()).collect::<Vec<_>>();
    let (a, b) = (split(recorded), split(replayed));
    let header = a.first().cloned().unwrap_or_default();
    for i in 0..a.len().max(b.len()) {
        let (ra, rb) = (a.get(i), b.get(i));
        let width = ra.map_or(0, Vec::len).max(rb.map_or(0, Vec::len));
        for c in 0..width.max(1) {
            let va = ra.and_then(|r| r.get(c)).map(String::as_str);
            let vb = rb.and_then(|r| r.get(c)).map(String::as_str);
            if va != vb {
                let column = header.get(c).cloned().unwrap_or_else(|| format!("#{c}"));
                let step = ra.or(rb).and_then(|r| r.first()).cloned().filter(|_| i > 0);
                let missing = |v: Option<&str>| v.map_or("<missing>".to_string(), str::to_string);
                return Some(Divergence { row: i, step, column, recorded: missing(va), replayed: missing(vb) });
            }
        }
    }
    None
}

/// Checks that a recorded trace is whole: a trace header, `rows` rows of its
/// width, and a final newline. A truncated or emptied file is corrupt, not divergent.
fn well_formed(text: &str, rows: usize) -> std::result::Result<(), String> {
    let mut lines = text.lines();
    let header = lines.next().ok_or("it is empty")?;
    if !header.starts_with("step,epoch,fold,train_loss") {
        return Err("its first line is not a trace header".into());
    }
    let width = header.split(',').count();
    let mut n = 0;
    for (i, line) in lines.enumerate() {
        if line.split(',').count() != width {
            return Err(format!("row {} has {} fields, the header {width}", i + 1, line.split(',').count()));
        }
        n += 1;
    }
    if !text.ends_with('\n') {
        return Err("it ends in the middle of a line".into());
    }
    if n != rows {
        return Err(format!("it has {n} rows, but the report's run took {rows} recorded steps"));
    }
    Ok(())
}

/// Re-runs a report and compares; returns the new outcome and the first divergence.
pub fn replay(dir: &Path, load: &LoadOptions) -> Result<(Outcome, Option<Divergence>)> {
    let summary = read_summary(dir)?;
    let scenario = load_with(&dir.join("repro.toml"), load)?;
    let recorded_path = dir.join("trace.csv");
    let recorded = std::fs::read_to_string(&recorded_path).map_err(|e| Error::io(&recorded_path, e))?;
    well_formed(&recorded, kept_rows(summary.outcome.steps)).map_err(|message| Error::Corrupt { path: recorded_path.clone(), message })?;
    let opts = RunOptions { watch: summary.settings.watch, continue_steps: summary.settings.continue_steps, ..RunOptions::default() };
    let outcome = run_with(&scenario, &opts);
    if let Some(e) = &outcome.error {
        return Err(Error::Replay { dir: dir.to_path_buf(), message: e.clone() });
    }
    let replayed = String::from_utf8(outcome.trace.to_csv()?).unwrap_or_default();
    let divergence = compare(&recorded, &replayed);
    Ok((outcome, divergence))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_or_empty_traces_are_corrupt() {
        let whole = "step,epoch,fold,train_loss\n1,1,0,2e0\n2,1,0,3e0\n";
        assert_eq!(well_formed(whole, 2), Ok(()));
        assert!(well_formed("", 2).unwrap_err().contains("empty"));
        assert!(well_formed(&whole[..whole.len() - 3], 2).is_err(), "cut inside the last row");
        assert!(well_formed("step,epoch,fold,train_loss\n1,1,0,2e0\n", 2).unwrap_err().contains("1 rows"), "cut after a row");
        assert!(well_formed("garbage\n", 0).is_err());
    }

    #[test]
    fn identical_traces_do_not_diverge() {
        assert_eq!(compare("step,loss\n1,2e0\n", "step,loss\n1,2e0\n"), None);
    }

    #[test]
    fn names_the_first_differing_step_and_column() {
        let d = compare("step,loss,g\n1,2e0,1e0\n2,3e0,1e0\n", "step,loss,g\n1,2e0,1e0\n2,3e0,1.5e0\n").unwrap();
        assert_eq!((d.row, d.step.as_deref(), d.column.as_str()), (2, Some("2"), "g"));
        let short = compare("step,loss\n1,2e0\n2,3e0\n", "step,loss\n1,2e0\n").unwrap();
        assert_eq!((short.row, short.replayed.as_str()), (2, "<missing>"));
    }
}
