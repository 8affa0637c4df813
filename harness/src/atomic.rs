//! Atomic file writes: write a temporary file beside the target, flush it to
//! disk, then rename it over the target, so a killed run never leaves a
//! half-written trace, report or corpus entry.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

/// Writes `bytes` to `path` atomically (temp file + fsync + rename).
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Writes items as JSON lines, atomically; `what` names them in an error.
pub(crate) fn write_lines<T: serde::Serialize>(path: &Path, items: &[T], what: &'static str) -> Result<()> {
    let mut text = String::new();
    for item in items {
        text += &serde_json::to_string(item).map_err(|source| Error::Json { path: path.to_path_buf(), what, source })?;
        text.push('\n');
    }
    write(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_and_replaces_without_leaving_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/out.txt");
        super::write(&p, b"one").unwrap();
        super::write(&p, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }
}
