//! `nanhunt corpus prune DIR`: prune a hunt's corpus folder to its cap (entries and bytes), keeping
//! the best-scored mutants and every finding's witness, for a scheduled prune between nightly
//! runs. Exit 0 when the corpus is within its cap, 1 when its witnesses alone keep it over, 2 on error.

use std::path::PathBuf;

use clap::builder::TypedValueParser;

use nanhunt::search::{prune_dir, Cap, Size, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES};

/// What to do with a corpus.
#[derive(clap::Subcommand)]
pub(crate) enum Corpus {
    /// Prune a corpus folder (`hunt --corpus DIR`) to its cap, atomically; prints its size before and after.
    Prune(Prune),
}

/// Prune a corpus folder to its cap.
#[derive(clap::Args)]
pub(crate) struct Prune {
    /// The corpus folder (holding the campaign's state.json).
    dir: PathBuf,
    /// Most mutants kept (the best-scored; findings' witnesses always stay).
    #[arg(long, default_value_t = DEFAULT_MAX_ENTRIES, value_parser = clap::value_parser!(u64).range(1..).map(|n| n as usize))]
    max_entries: usize,
    /// Most bytes of mutants (their JSON in state.json) kept [default: 1 MiB].
    #[arg(long, default_value_t = DEFAULT_MAX_BYTES, value_parser = clap::value_parser!(u64).range(1..), hide_default_value = true)]
    max_bytes: u64,
}

impl Corpus {
    /// Runs the subcommand; the exit code says whether the corpus is now within its cap.
    pub(crate) fn exec(self) -> anyhow::Result<u8> {
        match self {
            Corpus::Prune(p) => p.exec(),
        }
    }
}

impl Prune {
    /// Prunes and prints the corpus's size before and after.
    fn exec(self) -> anyhow::Result<u8> {
        let cap = Cap { max_entries: self.max_entries, max_bytes: self.max_bytes };
        let pruned = prune_dir(&self.dir, cap)?;
        let size = |s: Size| format!("{} entries, {} bytes", s.entries, s.bytes);
        println!("{}: before {}; after {}", self.dir.display(), size(pruned.before), size(pruned.after));
        if pruned.after.within(cap) {
            return Ok(0);
        }
        let why = format!("{} finding witness(es) are kept whatever the cap", pruned.witnesses);
        eprintln!("still over the cap of {} entries, {} bytes: {why}", cap.max_entries, cap.max_bytes);
        Ok(1)
    }
}
