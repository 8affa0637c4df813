//! The stages of the dataflow depend one way: scenario → run → search →
//! report, and the binary's cli on top. A file in a stage's folder may name
//! only its own stage and earlier ones; this test reads the sources and fails
//! on any path into a later stage, so an import cycle cannot come back.

use std::path::{Path, PathBuf};

/// The library's stages in dataflow order.
const STAGES: [&str; 4] = ["scenario", "run", "search", "report"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn stages_only_depend_on_earlier_stages() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut offences = Vec::new();
    for (i, stage) in STAGES.iter().enumerate() {
        let mut files = Vec::new();
        rust_files(&src.join(stage), &mut files);
        assert!(!files.is_empty(), "no sources under src/{stage}");
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for later in &STAGES[i + 1..] {
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    if code.contains(&format!("crate::{later}")) || code.contains(&format!("nanhunt::{later}")) {
                        offences.push(format!("{}:{}: {stage} uses {later}: {}", f.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    // The library never reaches into the binary.
    let mut all = Vec::new();
    rust_files(&src, &mut all);
    for f in all.iter().filter(|f| !f.starts_with(src.join("cli")) && !f.ends_with("main.rs")) {
        if std::fs::read_to_string(f).unwrap().contains("crate::cli") {
            offences.push(format!("{}: the library uses the cli", f.display()));
        }
    }
    assert!(offences.is_empty(), "imports against the dataflow:\n{}", offences.join("\n"));
}
