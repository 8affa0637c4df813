//! `nanhunt export-torch` and `nanhunt confirm`: a scenario or report as a
//! plain PyTorch script, and the comparison of the two frameworks' runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use nanhunt::report::torch::{confirm_with, export, record, report_scenario, ConfirmOptions, Scratch};
use nanhunt::Scenario;

use super::Context;

/// A scenario file, or a report directory's `repro.toml`.
fn scenario(path: &Path, ctx: &Context) -> anyhow::Result<Scenario> {
    let file = if path.is_dir() { path.join("repro.toml") } else { path.to_path_buf() };
    Ok(nanhunt::scenario::load_with(&file, &ctx.load)?)
}

/// Write a scenario (or a report's repro) as a PyTorch script with its initial weights and data.
#[derive(clap::Args)]
pub(crate) struct ExportTorch {
    /// A scenario file (TOML) or a report directory.
    source: PathBuf,
    /// Where repro.py, init.safetensors and data.safetensors go.
    #[arg(long, default_value = "torch-repro")]
    out: PathBuf,
}

impl ExportTorch {
    /// Exits 0 once the files are written.
    pub(crate) fn exec(self, ctx: &Context) -> anyhow::Result<u8> {
        let s = scenario(&self.source, ctx)?;
        export(&s, &self.out)?;
        println!("wrote {}/repro.py, init.safetensors and data.safetensors", self.out.display());
        println!("run:  cd {} && python repro.py", self.out.display());
        Ok(0)
    }
}

/// Run a scenario (or a report's repro) in PyTorch too and compare (0 agree, 1 disagree, 2 error).
#[derive(clap::Args)]
pub(crate) struct Confirm {
    /// A scenario file (TOML) or a report directory (its summary.md gains a line; refused if its
    /// repro no longer reproduces the recorded run).
    source: PathBuf,
    /// The Python interpreter, one that has torch.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Kill the PyTorch script, and every process it started, after this long (an error).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

impl Confirm {
    /// Exits 0 when both frameworks agree (same step and phase, or both finite with early losses that agree), 1 otherwise (`numerics differ` included).
    pub(crate) fn exec(self, ctx: &Context) -> anyhow::Result<u8> {
        let report = self.source.is_dir();
        // A report is replayed first (refused if it no longer reproduces its run); that run is nanhunt's side.
        let (s, ours) = if report { report_scenario(&self.source, &ctx.load)? } else { (scenario(&self.source, ctx)?, None) };
        // Ctrl-C (or SIGTERM) kills the script's process group; the scratch folder goes on drop.
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)).context("installing the Ctrl-C handler")?;
        let work = Scratch::new()?;
        let c = confirm_with(&s, &self.python, work.path(), &ConfirmOptions { timeout: self.timeout, stop: Some(Arc::clone(&stop)), ours })?;
        drop(work);
        anyhow::ensure!(!stop.load(Ordering::Relaxed), "interrupted");
        if self.json {
            println!("{}", serde_json::to_string(&c)?);
        } else {
            println!("{}: {c}", s.name);
        }
        if report {
            record(&self.source, &c).with_context(|| format!("recording the confirmation in {}", self.source.display()))?;
        }
        Ok(if c.verdict.agrees() { 0 } else { 1 })
    }
}
