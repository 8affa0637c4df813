//! `nanhunt merge`: combine the findings of several (sharded) hunts into one
//! directory, one per site signature, with their reports, grouped again into
//! root causes (`root_causes.jsonl`), and their error logs (`errors.jsonl`).

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Merge the findings of several (sharded) hunts into one directory.
#[derive(clap::Args)]
pub(crate) struct Merge {
    /// Hunt output directories (each with findings.jsonl).
    #[arg(required = true)]
    dirs: Vec<PathBuf>,
    /// Where the merged findings and reports go.
    #[arg(long)]
    out: PathBuf,
}

impl Merge {
    /// Merges and copies each kept finding's report beside the merged `findings.jsonl`.
    pub(crate) fn exec(self) -> anyhow::Result<u8> {
        let (dirs, out) = (&self.dirs, &self.out);
        let mut seen = Vec::new();
        for d in dirs {
            let real = d.canonicalize().with_context(|| format!("reading {}", d.display()))?;
            if seen.contains(&real) {
                anyhow::bail!("{} is named twice: merging it again would double its counts", d.display());
            }
            seen.push(real);
        }
        let mut all = Vec::new();
        for d in dirs {
            all.extend(nanhunt::search::read_findings(&d.join("findings.jsonl"))?);
        }
        let total = all.len();
        let mut merged = nanhunt::search::merge(all);
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        for f in &mut merged {
            let Some(recorded) = f.report.take() else { continue };
            // Reports move with their hunt directory: find them by name beside its findings.jsonl.
            let name = recorded.file_name().filter(|n| !n.is_empty() && *n != "..").with_context(|| format!("finding {} names no report directory", f.signature))?;
            let Some(src) = dirs.iter().map(|d| d.join(name)).find(|p| p.join("repro.toml").is_file()) else {
                anyhow::bail!("finding {} names the report {}, which is in none of the merged directories", f.signature, name.to_string_lossy());
            };
            let dst = out.join(name);
            if src != dst {
                copy_dir(&src, &dst)?;
            }
            f.report = Some(dst);
        }
        nanhunt::search::write_findings(&out.join("findings.jsonl"), &merged)?;
        let causes = nanhunt::search::group(&merged);
        nanhunt::search::write_root_causes(&out.join("root_causes.jsonl"), &causes)?;
        let mut errors = Vec::new();
        for d in dirs.iter().map(|d| d.join("errors.jsonl")).filter(|p| p.is_file()) {
            errors.extend(nanhunt::search::read_errors(&d)?);
        }
        nanhunt::search::write_errors(&out.join("errors.jsonl"), &nanhunt::search::merge_errors(errors))?;
        println!("merged {total} finding(s) from {} director(ies) into {} site(s) and {} root cause(s), in {}", dirs.len(), merged.len(), causes.len(), out.display());
        Ok(0)
    }
}

/// Copies a report directory's files through a temporary directory, then renames it into place.
fn copy_dir(src: &Path, dst: &Path) -> anyhow::Result<()> {
    let tmp = dst.with_extension("tmp-merge");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    for e in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let e = e?;
        std::fs::copy(e.path(), tmp.join(e.file_name())).with_context(|| format!("copying {}", e.path().display()))?;
    }
    let _ = std::fs::remove_dir_all(dst);
    std::fs::rename(&tmp, dst).with_context(|| format!("moving the merged report into {}", dst.display()))?;
    Ok(())
}
