//! Confirming a report directory: its repro must still reproduce the recorded
//! run, and the result goes into the report's own `summary.md`, never through
//! a symbolic link to a file elsewhere.

use std::path::{Path, PathBuf};

use super::Confirmation;
use crate::error::{Error, Result};
use crate::run::Outcome;
use crate::scenario::{load_with, LoadOptions, Scenario};

/// The report's `summary.md`, if it is a regular file (not a symbolic link, not a folder).
fn summary_file(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("summary.md");
    let kind = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?.file_type();
    if kind.is_file() {
        return Ok(path);
    }
    let what = match std::fs::read_link(&path) {
        Ok(to) => format!("a symbolic link (to {})", to.display()),
        Err(_) => "not a regular file".to_string(),
    };
    let message = format!("it is {what}: confirm writes only into a report's own summary");
    Err(Error::Invalid { location: dir.display().to_string(), key: "summary.md".into(), message })
}

/// A report's scenario and, when the report was made as `confirm` runs (every tensor watched,
/// stopping at the first non-finite value), nanhunt's replayed run of it (for
/// [`super::ConfirmOptions::ours`], so the confirmation does not train it again), for a confirmation whose result goes into its
/// `summary.md`. Refused when `summary.md` is not a regular file, or when `repro.toml` no longer
/// reproduces the recorded run (replayed as `nanhunt replay` does): the summary would describe
/// one run and the confirmation another.
pub fn report_scenario(dir: &Path, load: &LoadOptions) -> Result<(Scenario, Option<Outcome>)> {
    summary_file(dir)?;
    let (outcome, divergence) = crate::report::replay(dir, load)?;
    if let Some(d) = divergence {
        let message = format!("it no longer reproduces the recorded run ({d}); confirming it would put another run's result in this report: see `nanhunt replay`, or confirm the file itself (`nanhunt confirm {}/repro.toml`)", dir.display());
        return Err(Error::Invalid { location: dir.display().to_string(), key: "repro.toml".into(), message });
    }
    let as_confirm_runs = crate::report::read_summary(dir)?.settings == crate::report::RunSettings { watch: true, continue_steps: 0 };
    Ok((load_with(&dir.join("repro.toml"), load)?, as_confirm_runs.then_some(outcome)))
}

/// Puts the confirmation under the report's title in its `summary.md` (replacing an earlier
/// one), atomically.
pub fn record(dir: &Path, c: &Confirmation) -> Result<()> {
    let path = summary_file(dir)?;
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut lines: Vec<String> = text.lines().filter(|l| !l.starts_with("**PyTorch:**")).map(str::to_string).collect();
    let at = lines.iter().position(|l| l.starts_with("# ")).map_or(0, |i| i + 1);
    lines.insert(at, String::new());
    lines.insert(at + 1, format!("**PyTorch:** {}.", capitalise(&c.to_string())));
    let mut out = lines.join("\n");
    out.push('\n');
    // Collapse the blank line the insertion may double.
    let out = out.replace("\n\n\n", "\n\n");
    crate::atomic::write(&path, out.as_bytes())
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or(String::new(), |f| f.to_uppercase().chain(c).collect())
}
