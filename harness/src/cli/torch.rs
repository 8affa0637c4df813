//! `nanhunt export-torch` and `nanhunt confirm`: a scenario or report as a
//! plain PyTorch script, and the comparison of the two frameworks' runs.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use nanhunt::report::torch::{confirm, export, scratch};
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
    /// A scenario file (TOML) or a report directory (its summary.md gains a line).
    source: PathBuf,
    /// The Python interpreter, one that has torch.
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

impl Confirm {
    /// Exits 0 when both frameworks agree (same step and phase, or both finite), 1 otherwise.
    pub(crate) fn exec(self, ctx: &Context) -> anyhow::Result<u8> {
        let s = scenario(&self.source, ctx)?;
        let work = scratch()?;
        let result = confirm(&s, &self.python, &work);
        let _ = std::fs::remove_dir_all(&work);
        let c = result?;
        if self.json {
            println!("{}", serde_json::to_string(&c)?);
        } else {
            println!("{}: {c}", s.name);
        }
        if self.source.is_dir() {
            record(&self.source, &c.to_string()).with_context(|| format!("recording the confirmation in {}", self.source.display()))?;
        }
        Ok(if c.verdict.agrees() { 0 } else { 1 })
    }
}

/// Puts the confirmation under the report's title in `summary.md` (replacing an earlier one).
fn record(dir: &Path, line: &str) -> anyhow::Result<()> {
    let path = dir.join("summary.md");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines: Vec<String> = text.lines().filter(|l| !l.starts_with("**PyTorch:**")).map(str::to_string).collect();
    let at = lines.iter().position(|l| l.starts_with("# ")).map_or(0, |i| i + 1);
    lines.insert(at, String::new());
    lines.insert(at + 1, format!("**PyTorch:** {}.", capitalise(line)));
    let mut out = lines.join("\n");
    out.push('\n');
    // Collapse the blank line the insertion may double.
    let out = out.replace("\n\n\n", "\n\n");
    let tmp = dir.join(".summary.md.tmp");
    std::fs::write(&tmp, out)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or(String::new(), |f| f.to_uppercase().chain(c).collect())
}
