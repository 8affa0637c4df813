//! `nanhunt replay`: re-run a report's repro and check the trace is
//! bit-identical (0 identical, 1 divergent, 2 error).

use std::path::PathBuf;

/// Re-run a report's repro and check the trace is bit-identical.
#[derive(clap::Args)]
pub(crate) struct Replay {
    /// The report directory.
    report: PathBuf,
}

impl Replay {
    /// Replays and prints `identical` or the first divergence.
    pub(crate) fn exec(self, ctx: &super::Context) -> anyhow::Result<u8> {
        let (outcome, divergence) = nanhunt::replay(&self.report, &ctx.load)?;
        Ok(match divergence {
            None => {
                println!("identical: {} trace rows replay bit for bit ({})", outcome.trace.rows.len(), outcome.first_nonfinite.map_or("finite".into(), |f| f.to_string()));
                0
            }
            Some(d) => {
                println!("divergent: {d}");
                1
            }
        })
    }
}
