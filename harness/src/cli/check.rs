//! `nanhunt check`: the regression suite. Runs every scenario with an
//! `[expect]` and every report, prints a pass/fail table and optionally JUnit
//! XML (0 all pass, 1 any fail, 2 error).

use std::path::PathBuf;

use anyhow::Context as _;
use nanhunt::report::{check_all, collect, junit, tally, CheckOptions, Verdict};

use super::{progress, Context};

/// Run every scenario with an [expect] and every report; print a pass/fail table.
#[derive(clap::Args)]
pub(crate) struct Check {
    /// Scenario files, directories of them, and report directories.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Write JUnit XML here.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Scenarios checked in parallel.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Also run N seeded mutants around each finite expectation; all must stay finite.
    #[arg(long, default_value_t = 0)]
    neighbourhood: usize,
    /// Seed of the neighbourhood's mutants.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Pass when the paths hold nothing to check (otherwise that is an error: a CI job with a wrong path must not go green).
    #[arg(long)]
    allow_empty: bool,
}

impl Check {
    /// Checks every entry and prints the table.
    pub(crate) fn exec(self, ctx: &Context) -> anyhow::Result<u8> {
        let entries = collect(&self.paths)?;
        if entries.is_empty() && !self.allow_empty {
            let paths: Vec<String> = self.paths.iter().map(|p| p.display().to_string()).collect();
            anyhow::bail!("nothing to check in {}: no scenario files (*.toml) or report directories; pass --allow-empty if that is expected", paths.join(", "));
        }
        let bar = progress::entries(entries.len());
        let opts = CheckOptions { jobs: self.jobs, neighbourhood: self.neighbourhood, seed: self.seed, load: ctx.load.clone() };
        let results = check_all(&entries, &opts, &|r| {
            bar.set_message(r.name.clone());
            bar.inc(1);
        });
        bar.finish_and_clear();
        let width = results.iter().map(|r| r.name.len()).max().unwrap_or(8).min(56);
        for r in &results {
            let (tag, why) = match &r.verdict {
                Verdict::Pass => ("PASS", r.detail.clone()),
                Verdict::Skip => ("SKIP", r.detail.clone()),
                Verdict::Fail(m) => ("FAIL", m.clone()),
                Verdict::Error(m) => ("ERROR", m.clone()),
            };
            println!("{tag:<5} {:<width$} {:>7.2}s  {why}", r.name, r.time.as_secs_f64());
            if !r.mutants.is_empty() {
                println!("      neighbourhood: {}", r.mutants.join(" | "));
            }
            if let Some(c) = &r.confidence {
                println!("      {c}");
            }
        }
        if let Some(path) = &self.junit {
            nanhunt::write_atomic(path, junit(&results)?.as_bytes()).with_context(|| format!("writing JUnit XML to {}", path.display()))?;
        }
        let (pass, fail, skip) = tally(&results);
        println!("check: {pass} passed, {fail} failed, {skip} skipped");
        let errors = results.iter().any(|r| matches!(r.verdict, Verdict::Error(_)));
        Ok(if errors { 2 } else { u8::from(fail > 0) })
    }
}
