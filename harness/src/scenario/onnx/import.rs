//! `[model] onnx = "model.onnx"`: the scenario's reference to an ONNX model ([`Import`]) is read
//! and compiled when the scenario is loaded from its file (the path relative to its folder).
//! How the compiled graph's names and weights enter the model's plan is `Plan::adopt`
//! (`scenario/plan.rs`).

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::scenario::model::Import;

/// Reads and compiles the model of `import` at `path` within a memory limit of `limit_mb` MiB.
pub fn resolve(import: &mut Import, path: &Path, limit_mb: u64) -> Result<()> {
    let m = super::load(path, limit_mb)?;
    let c = super::compile(&m).map_err(|message| Error::Onnx { path: path.to_path_buf(), message })?;
    import.compiled = Some(Arc::new(c));
    Ok(())
}
