//! Helpers for the CLI end-to-end tests: the built binary, the repo's
//! scenarios, and temporary directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A bundled seed scenario by file stem.
pub fn seed(name: &str) -> PathBuf {
    repo().join("scenarios/seeds").join(format!("{name}.toml"))
}

/// Runs the `nanhunt` binary with arguments.
pub fn nanhunt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nanhunt")).args(args).output().expect("nanhunt runs")
}

/// A fresh temporary directory, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Writes a file into a directory and returns its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
