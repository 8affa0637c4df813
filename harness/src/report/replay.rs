//! Replay: re-run a report's `repro.toml` and compare the new trace with the
//! recorded `trace.csv`, bit for bit (both are written in shortest round-trip
//! form, so equal text is equal bits).

use std::path::Path;

use super::summary::read_summary;
use crate::error::{Error, Result};
use crate::run::code::CodeModel;
use crate::run::{kept_rows, run_with, Outcome, RunOptions};
use crate::scenario::{load_with, LoadOptions};

/// The first place two traces differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Data row (1-based, after the header); 0 for the header itself.
    pub row: usize,
    /// The `step` field of that row, if it has one.
    pub step: Option<String>,
    /// Column name.
    pub column: String,
    /// Recorded value.
    pub recorded: String,
    /// Replayed value.
    pub replayed: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = self.step.as_deref().unwrap_or("?");
        write!(f, "trace diverges at row {} (step {step}), column `{}`: recorded `{}`, replayed `{}`", self.row, self.column, self.recorded, self.replayed)
    }
}

/// Compares two CSV traces column by column, by name; `None` if identical. A column the
/// replay adds (a newer nanhunt's trace) is not compared, so older reports still replay; a
/// recorded column the replay lacks is a divergence.
pub fn compare(recorded: &str, replayed: &str) -> Option<Divergence> {
    let split = |t: &str| t.lines().map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>()).collect::<Vec<_>>();
    let (a, b) = (split(recorded), split(replayed));
    let (ha, hb) = (a.first().cloned().unwrap_or_default(), b.first().cloned().unwrap_or_default());
    let columns: Vec<(usize, Option<usize>)> = ha.iter().enumerate().map(|(c, name)| (c, hb.iter().position(|n| n == name))).collect();
    let missing = |v: Option<&str>| v.map_or("<missing>".to_string(), str::to_string);
    if let Some((c, _)) = columns.iter().find(|(_, m)| m.is_none()) {
        return Some(Divergence { row: 0, step: None, column: ha[*c].clone(), recorded: ha[*c].clone(), replayed: missing(None) });
    }
    for i in 1..a.len().max(b.len()) {
        let (ra, rb) = (a.get(i), b.get(i));
        for &(c, m) in &columns {
            let va = ra.and_then(|r| r.get(c)).map(String::as_str);
            let vb = rb.and_then(|r| m.and_then(|m| r.get(m))).map(String::as_str);
            if va != vb {
                let step = ra.or(rb).and_then(|r| r.first()).cloned();
                return Some(Divergence { row: i, step, column: ha[c].clone(), recorded: missing(va), replayed: missing(vb) });
            }
        }
    }
    None
}

/// Checks that a recorded trace is whole: a trace header, `rows` rows of its
/// width, and a final newline. A truncated or emptied file is corrupt, not divergent.
fn well_formed(text: &str, rows: usize) -> std::result::Result<(), String> {
    let mut lines = text.lines();
    let header = lines.next().ok_or("it is empty")?;
    if !header.starts_with("step,epoch,fold,train_loss") {
        return Err("its first line is not a trace header".into());
    }
    let width = header.split(',').count();
    let mut n = 0;
    for (i, line) in lines.enumerate() {
        if line.split(',').count() != width {
            return Err(format!("row {} has {} fields, the header {width}", i + 1, line.split(',').count()));
        }
        n += 1;
    }
    if !text.ends_with('\n') {
        return Err("it ends in the middle of a line".into());
    }
    if n != rows {
        return Err(format!("it has {n} rows, but the report's run took {rows} recorded steps"));
    }
    Ok(())
}

/// Re-runs a report and compares; returns the new outcome and the first divergence.
pub fn replay(dir: &Path, load: &LoadOptions) -> Result<(Outcome, Option<Divergence>)> {
    replay_as(dir, load, None)
}

/// [`replay`] of a report whose model is Rust code (`[model] code`): the file cannot hold the
/// model, so the test that has it replays the report. A model whose parameters (names, shapes,
/// initial values) are not the recorded ones is an error, not a divergence.
pub fn replay_module(model: &CodeModel, dir: &Path, load: &LoadOptions) -> Result<(Outcome, Option<Divergence>)> {
    replay_as(dir, load, Some(model))
}

fn replay_as(dir: &Path, load: &LoadOptions, model: Option<&CodeModel>) -> Result<(Outcome, Option<Divergence>)> {
    let summary = read_summary(dir)?;
    let path = dir.join("repro.toml");
    let scenario = match model {
        Some(m) => m.scenario_file_with(&path, load)?,
        None => load_with(&path, load)?,
    };
    if let (Some(code), None) = (&scenario.model.code, model) {
        let message = format!("its model is the Rust code `{}`, which a report cannot hold: replay it from Rust with `nanhunt::report::replay_module` (the test that wrote it does)", code.name);
        return Err(Error::Replay { dir: dir.to_path_buf(), message });
    }
    let recorded_path = dir.join("trace.csv");
    let recorded = std::fs::read_to_string(&recorded_path).map_err(|e| Error::io(&recorded_path, e))?;
    well_formed(&recorded, kept_rows(summary.outcome.steps)).map_err(|message| Error::Corrupt { path: recorded_path.clone(), message })?;
    let opts = RunOptions { watch: summary.settings.watch, continue_steps: summary.settings.continue_steps, ..RunOptions::default() };
    let outcome = run_with(&scenario, &opts);
    if let Some(e) = &outcome.error {
        return Err(Error::Replay { dir: dir.to_path_buf(), message: e.clone() });
    }
    if let (Some(now), Some(then)) = (&outcome.model, &summary.outcome.model) {
        if now != then {
            let message = format!(
                "the model `{}` is not the one recorded: parameters {} with initial hash {}, recorded {} with {}",
                now.name,
                params(&now.params),
                now.init_hash,
                params(&then.params),
                then.init_hash
            );
            return Err(Error::Replay { dir: dir.to_path_buf(), message });
        }
    }
    let replayed = String::from_utf8(outcome.trace.to_csv()?).unwrap_or_default();
    let divergence = compare(&recorded, &replayed);
    Ok((outcome, divergence))
}

/// Parameters as a reader writes them: `` `fc.weight` (1×2), `fc.bias` (1) ``.
fn params(p: &[(String, Vec<usize>)]) -> String {
    let one = |(name, shape): &(String, Vec<usize>)| format!("`{name}` ({})", shape.iter().map(usize::to_string).collect::<Vec<_>>().join("×"));
    p.iter().map(one).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_code_model_is_refused_in_words() {
        use candle_core::Module;
        let linear = |w0: f64| {
            let build = move |store: &crate::ParamStore| {
                Ok(candle_nn::Linear::new(store.get("fc.weight", (1, 2), candle_nn::init::Init::Const(w0))?, Some(store.get("fc.bias", 1, candle_nn::init::Init::Const(0.0))?)))
            };
            CodeModel::new("linear", build, |m: &candle_nn::Linear, x: &candle_core::Tensor, _: &mut crate::Watch| m.forward(x))
        };
        let toml = "name = \"code\"\n[data]\ninputs = { kind = \"values\", rows = [[1.0, 2.0], [3.0, -1.0]] }\ntargets = { kind = \"values\", values = [1.0, 0.0] }\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n[train]\nepochs = 2\ndtype = \"f64\"\n";
        let model = linear(0.5);
        let s = model.scenario(toml, "code.toml").unwrap();
        let o = crate::run::code::run_module(&model, &s);
        let parent = tempfile::tempdir().unwrap();
        let settings = crate::report::RunSettings { watch: true, continue_steps: 0 };
        let dir = crate::report::write(parent.path(), &crate::report::ReportInput::of_run(&s, &o, settings)).unwrap();
        assert_eq!(replay_module(&model, &dir, &LoadOptions::default()).unwrap().1, None);
        // The same parameters from another start: refused, the parameters named as written.
        let e = replay_module(&linear(0.25), &dir, &LoadOptions::default()).unwrap_err().to_string();
        assert!(e.contains("parameters `fc.weight` (1×2), `fc.bias` (1) with initial hash") && !e.contains("(\""), "{e}");
    }

    #[test]
    fn truncated_or_empty_traces_are_corrupt() {
        let whole = "step,epoch,fold,train_loss\n1,1,0,2e0\n2,1,0,3e0\n";
        assert_eq!(well_formed(whole, 2), Ok(()));
        assert!(well_formed("", 2).unwrap_err().contains("empty"));
        assert!(well_formed(&whole[..whole.len() - 3], 2).is_err(), "cut inside the last row");
        assert!(well_formed("step,epoch,fold,train_loss\n1,1,0,2e0\n", 2).unwrap_err().contains("1 rows"), "cut after a row");
        assert!(well_formed("garbage\n", 0).is_err());
    }

    #[test]
    fn identical_traces_do_not_diverge() {
        assert_eq!(compare("step,loss\n1,2e0\n", "step,loss\n1,2e0\n"), None);
    }

    #[test]
    fn names_the_first_differing_step_and_column() {
        let d = compare("step,loss,g\n1,2e0,1e0\n2,3e0,1e0\n", "step,loss,g\n1,2e0,1e0\n2,3e0,1.5e0\n").unwrap();
        assert_eq!((d.row, d.step.as_deref(), d.column.as_str()), (2, Some("2"), "g"));
        let short = compare("step,loss\n1,2e0\n2,3e0\n", "step,loss\n1,2e0\n").unwrap();
        assert_eq!((short.row, short.replayed.as_str()), (2, "<missing>"));
    }

    #[test]
    fn columns_are_matched_by_name() {
        // A report recorded before the headroom column existed still replays...
        assert_eq!(compare("step,loss,g\n1,2e0,1e0\n", "step,loss,headroom,g\n1,2e0,5e0,1e0\n"), None);
        // ...but every recorded column must be there, and equal.
        let gone = compare("step,loss,g\n1,2e0,1e0\n", "step,loss\n1,2e0\n").unwrap();
        assert_eq!((gone.row, gone.column.as_str(), gone.replayed.as_str()), (0, "g", "<missing>"));
        let d = compare("step,loss,g\n1,2e0,1e0\n", "step,headroom,loss,g\n1,5e0,2e0,2e0\n").unwrap();
        assert_eq!((d.row, d.column.as_str(), d.recorded.as_str(), d.replayed.as_str()), (1, "g", "1e0", "2e0"));
    }
}
