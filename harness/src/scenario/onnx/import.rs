//! `[model] onnx = "model.onnx"`: the scenario's reference to an ONNX model ([`Import`]) is read
//! and compiled when the scenario is loaded from its file (the path relative to its folder).
//! Loading records what it read ([`ImportRead`]: the SHA-256 of the model file followed by its
//! external data files, and those files), and refuses a file whose hash is not the one the
//! scenario pins (`onnx = { path, sha256 }`, as a report writes it). With `[loss] from_model`
//! the graph's loss tail becomes the scenario's loss (`loss_tail`). How the compiled graph's
//! names and weights enter the model's plan is `Plan::adopt` (`scenario/plan.rs`).

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::scenario::model::{Import, ImportRead};
use crate::scenario::{LossKind, Reduction};

/// Reads and compiles the model of `import` at `path` within a memory limit of `limit_mb` MiB;
/// with `from_model` (`[loss] from_model`), that output's loss tail is taken off the graph
/// (`loss_tail`) and the loss it computes returned.
pub fn resolve(import: &mut Import, path: &Path, limit_mb: u64, from_model: Option<&str>) -> Result<Option<(LossKind, Reduction)>> {
    let mut m = match (super::load(path, limit_mb), &import.sha256) {
        (Ok(m), _) => m,
        // A pinned file loaded when it was pinned: one that no longer loads has changed.
        (Err(Error::Onnx { message, .. }), Some(want)) => {
            let message = format!("{message}; the scenario pins SHA-256 {want}: the file changed since the scenario (or report) was written; restore the file it was written with");
            return Err(Error::Onnx { path: path.to_path_buf(), message });
        }
        (Err(e), _) => return Err(e),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut hash = Sha256::new();
    let mut bytes = feed(&mut hash, path)?;
    for e in &m.external {
        bytes = bytes.saturating_add(feed(&mut hash, &dir.join(e))?);
    }
    let sha256: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if let Some(want) = import.sha256.as_deref().filter(|w| !w.eq_ignore_ascii_case(&sha256)) {
        let files = if m.external.is_empty() { String::new() } else { format!(" (with its external data {})", m.external.join(", ")) };
        let message = format!("the file{files} has SHA-256 {sha256}, but the scenario pins {want}: it changed since the scenario (or report) was written; restore the file it was written with");
        return Err(Error::Onnx { path: path.to_path_buf(), message });
    }
    let loss = from_model.map(|o| super::loss_tail::split(&mut m, o)).transpose().map_err(|message| Error::Onnx { path: path.to_path_buf(), message })?;
    let c = super::compile(&m).map_err(|message| Error::Onnx { path: path.to_path_buf(), message })?;
    import.compiled = Some(Arc::new(c));
    import.read = Some(ImportRead { sha256, external: m.external, bytes });
    Ok(loss)
}

/// Feeds the bytes of the file at `path` to `hash`; returns how many there were.
fn feed(hash: &mut Sha256, path: &Path) -> Result<u64> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            return Ok(total);
        }
        hash.update(&buf[..n]);
        total += n as u64;
    }
}
