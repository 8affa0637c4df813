//! `nanhunt fuzz-shrink`: decode a cargo-fuzz crash input of the `mutations`
//! target, minimize it and write its report.

use std::path::PathBuf;

use anyhow::Context;
use nanhunt::fuzzing::{bundled, decode};
use nanhunt::search::{describe, try_mutate, Minimizer, Target};
use nanhunt::ReportInput;

/// Shrink a cargo-fuzz crash input of the `mutations` target and write its report.
#[derive(clap::Args)]
pub(crate) struct FuzzShrink {
    /// The saved input (fuzz/artifacts/mutations/crash-...).
    artifact: PathBuf,
    /// Where the report goes.
    #[arg(long, default_value = "reports")]
    out: PathBuf,
}

impl FuzzShrink {
    /// Exits 1 with a report if the input goes non-finite, 0 if it does not.
    pub(crate) fn exec(self) -> anyhow::Result<u8> {
        let bytes = std::fs::read(&self.artifact).with_context(|| format!("reading {}", self.artifact.display()))?;
        let base = bundled();
        let candidate = decode(&bytes);
        println!("decoded: {}", describe(&candidate));
        if let Err(why) = try_mutate(&base, &candidate) {
            println!("invalid candidate: {why}");
            return Ok(0);
        }
        let Some(m) = Minimizer::new(&base, Target::Nonfinite, None).minimize(&candidate) else {
            println!("this input does not go non-finite");
            return Ok(0);
        };
        println!("minimal: {}", describe(&m.mutations));
        let dir = nanhunt::write_report(&self.out, &ReportInput::of_minimal(&base, &m, None))?;
        println!("report: {}", dir.display());
        Ok(1)
    }
}
