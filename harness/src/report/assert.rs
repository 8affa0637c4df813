//! [`assert_finite_within`]: a `#[test]` that hunts a model written in Rust
//! and fails, as `nanhunt hunt` would, if anything in the scenario's search
//! space goes non-finite.
//!
//! As proptest keeps `proptest-regressions/`, a failing case is saved next to
//! the test, in `nanhunt-regressions/<test file>/<test>/<signature>.toml` (a
//! full scenario, one file per case, written atomically, so tests running in
//! parallel never share a file), and replayed before any search on the next
//! run. Commit those files: a case stays, and is replayed, after its fix.
//! A failing test prints the hunt's one-screen summary and writes the report
//! directory under `opts.out` (default `reports/`), one per root cause.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::run::code::CodeModel;
use crate::run::{run, Status};
use crate::scenario::Scenario;
use crate::search::{hunt, HuntOptions};

use super::{hunt_summary, Reports};

/// Hunts `s` with `model` in place of its layers (within `opts`' budget and the scenario's
/// `[search]`) and panics with the hunt's summary if anything goes non-finite, after saving
/// the failing cases next to the calling test; saved cases are replayed first.
#[track_caller]
pub fn assert_finite_within(model: &CodeModel, s: &Scenario, opts: &HuntOptions) {
    let file = PathBuf::from(std::panic::Location::caller().file());
    let test = std::thread::current().name().unwrap_or("main").to_string();
    match check_finite_within(model, s, opts, &regressions_dir(&file, &test)) {
        Ok(None) => {}
        Ok(Some(failure)) => panic!("{failure}"),
        Err(e) => panic!("nanhunt could not check `{}`: {e}", s.name),
    }
}

/// What [`assert_finite_within`] does, with its regressions in `dir`: `Ok(None)` if every saved
/// case and the hunt stay finite, `Ok(Some(message))` if not.
pub fn check_finite_within(model: &CodeModel, s: &Scenario, opts: &HuntOptions, dir: &Path) -> Result<Option<String>> {
    let base = model.attach(s.clone());
    for (path, case) in saved(model, dir)? {
        let o = run(&Scenario { dir: base.dir.clone(), ..case });
        if o.outcome == Status::Error {
            return Err(Error::Replay { dir: path, message: o.error.unwrap_or_default() });
        }
        if let Some(at) = o.failure_site() {
            return Ok(Some(format!("nanhunt: the saved case {} still fails: {at}\nreplay it by running this test again; delete the file once it no longer applies", path.display())));
        }
    }
    let out = opts.out.clone().unwrap_or_else(|| PathBuf::from("reports"));
    let reports = Reports { dir: out.join(safe(&base.name)) };
    std::fs::create_dir_all(&reports.dir).map_err(|e| Error::io(&reports.dir, e))?;
    let result = hunt(&base, &HuntOptions { out: Some(reports.dir.clone()), ..opts.clone() }, Some(&reports), &|_| {})?;
    if result.findings.is_empty() {
        return Ok(None);
    }
    let mut saved = Vec::new();
    for f in &result.findings {
        let Some(repro) = f.nearest().and_then(|t| t.built.as_ref()).map(|b| &b.repro) else { continue };
        let path = dir.join(format!("{}.toml", f.signature));
        let header = format!("# Saved by nanhunt::assert_finite_within: {} in {} ({}).\n# Replayed before the hunt every time the test runs; commit it.\n", f.location.kind, f.location.tensor, f.location.phase);
        let text = toml::to_string(repro).map_err(|e| Error::Toml { path: path.clone(), source: e })?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        crate::write_atomic(&path, format!("{header}{text}").as_bytes())?;
        saved.push(path.display().to_string());
    }
    let summary = hunt_summary(&base.name, &result, opts.budget + opts.shrink_budget);
    Ok(Some(format!("nanhunt: `{}` is not finite within its search space\n{summary}saved, replayed first next time: {}", base.name, saved.join(", "))))
}

/// The saved cases in `dir`, as scenarios with `model` in place of their layers, in name order.
fn saved(model: &CodeModel, dir: &Path) -> Result<Vec<(PathBuf, Scenario)>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
    paths.sort();
    paths.into_iter().map(|p| model.scenario_file(&p).map(|s| (p, s))).collect()
}

/// Where the test at `file` (as `file!()` gives it, from the workspace root) named `test`
/// keeps its cases: `nanhunt-regressions/<file stem>/<test>/` beside the file.
fn regressions_dir(file: &Path, test: &str) -> PathBuf {
    // Tests run in their package's folder; `file!()` is relative to the workspace root above it.
    let cwd = std::env::current_dir().unwrap_or_default();
    let source = if file.is_absolute() { Some(file.to_path_buf()) } else { cwd.ancestors().map(|a| a.join(file)).find(|p| p.is_file()) };
    let beside = source.as_deref().and_then(Path::parent).map_or(cwd.clone(), Path::to_path_buf);
    let stem = file.file_stem().map_or("tests".into(), |s| s.to_string_lossy().into_owned());
    beside.join("nanhunt-regressions").join(safe(&stem)).join(safe(test))
}

/// A name made safe as one path component.
fn safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}
