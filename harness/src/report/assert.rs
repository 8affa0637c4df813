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
use crate::scenario::{InputSpec, LoadOptions, Scenario};
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
        let o = run(&case);
        if o.outcome == Status::Error {
            return Err(Error::Replay { dir: path, message: o.error.unwrap_or_default() });
        }
        if let Some(at) = o.failure_site() {
            return Ok(Some(format!("nanhunt: the saved case {} still fails: {at}\nreplay it by running this test again; delete the file once it no longer applies", path.display())));
        }
    }
    // Report directories are made only for findings; `findings.jsonl` only if `opts.out` asks.
    let out = opts.out.clone().unwrap_or_else(|| PathBuf::from("reports"));
    let reports = Reports { dir: out.join(safe(&base.name)) };
    let result = hunt(&base, &HuntOptions { out: opts.out.as_ref().map(|_| reports.dir.clone()), ..opts.clone() }, Some(&reports), &|_| {})?;
    if result.findings.is_empty() {
        return Ok(None);
    }
    let mut saved = Vec::new();
    for f in &result.findings {
        let Some(mut repro) = f.nearest().and_then(|t| t.built.as_ref()).map(|b| b.repro.clone()) else { continue };
        let path = dir.join(format!("{}.toml", f.signature));
        // A CSV is read from where the scenario's is, by a path from the case's own folder.
        if let InputSpec::Csv { path: csv, .. } = &mut repro.data.inputs {
            *csv = relative(dir, &base.dir.clone().unwrap_or_default().join(&*csv)).display().to_string();
        }
        let header = format!(
            "# Saved by nanhunt::assert_finite_within: {} in {} ({}).\n# Replayed before the hunt every time the test runs; commit it.\n",
            f.location.kind, f.location.tensor, f.location.phase
        );
        let text = toml::to_string(&repro).map_err(|e| Error::Toml { path: path.clone(), source: e })?;
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
    // A case's CSV path leads out of its folder, to the scenario's data.
    let opts = LoadOptions { allow_outside_paths: true, ..LoadOptions::default() };
    paths.into_iter().map(|p| model.scenario_file_with(&p, &opts).map(|s| (p, s))).collect()
}

/// The path from folder `from` to `to` (`../../data/x.csv`), both made absolute first.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let (from, to) = (abs(from), abs(to));
    let common = from.components().zip(to.components()).take_while(|(a, b)| a == b).count();
    let ups = from.components().count() - common;
    std::iter::repeat_n(std::path::Component::ParentDir.as_os_str(), ups).map(PathBuf::from).chain(to.components().skip(common).map(|c| PathBuf::from(c.as_os_str()))).collect()
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

#[cfg(test)]
mod tests {
    use candle_core::{Module, Tensor};
    use candle_nn::init::Init;

    use super::*;
    use crate::run::code::Watch;

    /// `y = w·x` from w = 0 on 3 rows; with `clamp`, predictions are held in ±10 (the fix).
    fn model(clamp: bool) -> CodeModel {
        CodeModel::new(
            "w_times_x",
            |store| Ok(candle_nn::Linear::new(store.get("w", (1, 1), Init::Const(0.0))?, None)),
            move |m: &candle_nn::Linear, x: &Tensor, _: &mut Watch| if clamp { m.forward(x)?.clamp(-10.0, 10.0) } else { m.forward(x) },
        )
    }

    fn scenario(m: &CodeModel, lr_max: f64) -> Scenario {
        let text = format!("name = \"regression\"\n[data]\ninputs = {{ kind = \"values\", rows = [[1.0], [2.0], [3.0]] }}\ntargets = {{ kind = \"values\", values = [2.0, 4.0, 6.0] }}\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n[train]\nepochs = 400\n[search]\nknobs = [\"optimizer.lr\"]\nlr = [1e-3, {lr_max}]\n");
        m.scenario(&text, "regression.toml").unwrap()
    }

    #[test]
    fn a_failing_case_is_saved_replayed_first_and_passes_once_fixed() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, out) = (tmp.path().join("regressions"), tmp.path().join("reports"));
        let opts = HuntOptions { max_runs: Some(30), out: Some(out.clone()), ..HuntOptions::default() };
        // Below the stability bound 3/14 (see `search::code`), nothing flips.
        let (plain, fixed) = (model(false), model(true));
        assert_eq!(check_finite_within(&plain, &scenario(&plain, 0.1), &opts, &dir).unwrap(), None);
        assert!(!dir.exists(), "nothing saved for a pass");
        // Up to lr 10 the loss overflows: the summary, a report and a saved case.
        let failure = check_finite_within(&plain, &scenario(&plain, 10.0), &opts, &dir).unwrap().expect("lr above 3/14 overflows");
        assert!(failure.contains("root cause(s)") && failure.contains("optimizer.lr"), "{failure}");
        let cases: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(cases.len(), 1, "{cases:?}");
        assert!(std::fs::read_dir(out.join("regression")).unwrap().any(|e| e.unwrap().path().join("summary.md").is_file()));
        // Next time the saved case runs before any hunt, and fails on its own (in a space that passes).
        let again = check_finite_within(&plain, &scenario(&plain, 0.1), &opts, &dir).unwrap().expect("the saved case");
        assert!(again.contains("still fails") && again.contains(&cases[0].display().to_string()), "{again}");
        // The fix passes the saved case and the whole space; the case stays as a regression.
        assert_eq!(check_finite_within(&fixed, &scenario(&fixed, 10.0), &opts, &dir).unwrap(), None);
        assert!(cases[0].is_file());
    }

    #[test]
    fn a_saved_case_reads_the_scenarios_csv_from_its_own_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let (data, dir) = (tmp.path().join("data"), tmp.path().join("tests/nanhunt-regressions/t/t"));
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("rows.csv"), "x,y\n1,2\n2,4\n3,6\n").unwrap();
        let text = "name = \"regression\"\n[data]\ninputs = { kind = \"csv\", path = \"rows.csv\", targets = [\"y\"] }\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n[train]\nepochs = 400\n[search]\nknobs = [\"optimizer.lr\"]\nlr = [1e-3, 10.0]\n";
        std::fs::write(data.join("s.toml"), text).unwrap();
        let m = model(false);
        let s = m.scenario_file(&data.join("s.toml")).unwrap();
        let opts = HuntOptions { max_runs: Some(30), out: Some(tmp.path().join("reports")), ..HuntOptions::default() };
        assert!(check_finite_within(&m, &s, &opts, &dir).unwrap().is_some());
        let case = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        assert!(std::fs::read_to_string(&case).unwrap().contains("../../../../data/rows.csv"));
        // Replayed from its own folder, it still finds the rows and fails.
        assert!(check_finite_within(&m, &s, &opts, &dir).unwrap().unwrap().contains("still fails"));
    }

    #[test]
    fn a_path_from_one_folder_to_a_file() {
        assert_eq!(relative(Path::new("/a/b/c"), Path::new("/a/d/x.csv")), PathBuf::from("../../d/x.csv"));
        assert_eq!(relative(Path::new("/a"), Path::new("/a/x.csv")), PathBuf::from("x.csv"));
    }

    #[test]
    fn cases_live_beside_the_test_file_by_file_and_test_name() {
        let here = Path::new(file!());
        let d = regressions_dir(here, "report::assert::tests::t");
        assert!(d.ends_with("src/report/nanhunt-regressions/assert/report__assert__tests__t"), "{}", d.display());
    }
}
