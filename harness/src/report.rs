//! Reports: one directory per finding that pastes into a bug report and
//! replays bit for bit.
//!
//! `reports/<scenario>-<signature>/` holds `repro.toml` (self-contained),
//! `trace.csv`, `summary.md` (one screen), `summary.json` (versioned),
//! `trace.svg` and `trace.png`. The directory is built under a temporary name
//! and renamed into place, so it is never half-written.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::outcome::{Location, Outcome};
use crate::scenario::{InputSpec, Scenario};
use crate::trace::{fmt, TraceRow};

/// Version of `summary.json`'s layout.
pub const SCHEMA_VERSION: u32 = 1;

/// A knob's flip threshold, as found by the minimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// Dotted key, e.g. `optimizer.lr`.
    pub knob: String,
    /// The base scenario's value.
    pub base: f64,
    /// The value nearest the base at which the run still flips (3 significant digits).
    pub flips_at: f64,
    /// The nearest value on the base's side found to stay finite.
    pub stays_finite_at: f64,
}

/// One difference between the base scenario and the repro.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Dotted key.
    pub key: String,
    /// Value in the base scenario (TOML text; empty if absent).
    pub base: String,
    /// Value in the repro.
    pub repro: String,
}

/// Where the run happened, for the report's environment section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    /// nanhunt's version.
    pub nanhunt: String,
    /// candle-core's version.
    pub candle: String,
    /// CPU model.
    pub cpu: String,
    /// CPU threads Candle used.
    pub threads: usize,
    /// Compute dtype.
    pub dtype: String,
    /// Device.
    pub device: String,
    /// Operating system and architecture.
    pub os: String,
}

impl Environment {
    /// The environment of an outcome computed in this process.
    pub fn of(o: &Outcome) -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find_map(|l| l.strip_prefix("model name").map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())))
            .unwrap_or_else(|| "unknown".into());
        Environment {
            nanhunt: env!("CARGO_PKG_VERSION").into(),
            candle: env!("NANHUNT_CANDLE_VERSION").into(),
            cpu,
            threads: o.threads,
            dtype: o.dtype.clone(),
            device: o.device.clone(),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }
}

/// How the run was made, so a replay makes it the same way.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    /// Watch every tensor (true) or only the loss.
    pub watch: bool,
    /// Steps run past the first non-finite value.
    pub continue_steps: usize,
}

/// The machine-readable summary (`summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Layout version.
    pub schema_version: u32,
    /// Scenario name.
    pub scenario: String,
    /// Short hash of what went wrong where (phase, tensor, kind, dtype, changed knobs).
    pub signature: String,
    /// The outcome.
    pub outcome: Outcome,
    /// The last trace rows before the first non-finite value.
    pub leading_up: Vec<SignalRow>,
    /// How the repro differs from the base scenario.
    pub changes: Vec<Change>,
    /// Flip thresholds of the changed knobs.
    pub thresholds: Vec<Threshold>,
    /// Where it ran.
    pub environment: Environment,
    /// How it ran.
    pub settings: RunSettings,
    /// Reductions beyond knob changes (rows, features, steps cut).
    #[serde(default)]
    pub reductions: Vec<String>,
    /// The command that replays it.
    pub replay: String,
}

/// One trace row as text, for the summary tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalRow {
    /// Step.
    pub step: usize,
    /// Epoch.
    pub epoch: usize,
    /// Fold.
    pub fold: usize,
    /// Training loss.
    pub train_loss: String,
    /// Global gradient norm.
    pub grad_norm: String,
    /// Largest |activation| over layers.
    pub max_abs: String,
}

impl SignalRow {
    fn of(r: &TraceRow) -> Self {
        let opt = |v: Option<f64>| v.map(fmt).unwrap_or_default();
        SignalRow {
            step: r.step,
            epoch: r.epoch,
            fold: r.fold,
            train_loss: fmt(r.train_loss),
            grad_norm: opt(r.grad_norm),
            max_abs: opt(r.max_abs.iter().copied().reduce(f64::max)),
        }
    }
}

/// Everything a report is made from.
pub struct ReportInput<'a> {
    /// The scenario that reproduces the finding.
    pub repro: &'a Scenario,
    /// The scenario it was derived from (the repro itself for `run --report`).
    pub base: &'a Scenario,
    /// The repro's outcome.
    pub outcome: &'a Outcome,
    /// Flip thresholds, if a minimizer found them.
    pub thresholds: Vec<Threshold>,
    /// How the run was made.
    pub settings: RunSettings,
    /// Reductions beyond knob changes (rows, features, steps cut), in words.
    pub reductions: Vec<String>,
    /// The knob-level repro the diff is taken against (the repro itself if none).
    pub knob_repro: Option<&'a Scenario>,
    /// A signature computed by the caller (a hunt's), instead of one from the diff.
    pub signature: Option<String>,
}

/// FNV-1a, 64 bits: a stable hash for signatures (std's hasher may change between releases).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// The signature of a finding: phase, tensor, kind, dtype and the changed knobs.
pub fn signature(first: Option<&Location>, dtype: &str, knobs: &[String]) -> String {
    let what = first.map_or("finite".to_string(), |f| format!("{}|{}|{:?}", f.phase, f.tensor, f.kind));
    format!("{:08x}", fnv1a(format!("{what}|{dtype}|{}", knobs.join(",")).as_bytes()) as u32)
}

/// Keys whose values differ between two scenarios, as TOML text.
pub fn changes(base: &Scenario, repro: &Scenario) -> Vec<Change> {
    fn walk(prefix: &str, a: Option<&toml::Value>, b: Option<&toml::Value>, out: &mut Vec<Change>) {
        match (a, b) {
            (Some(toml::Value::Table(x)), Some(toml::Value::Table(y))) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, x.get(k), y.get(k), out);
                }
            }
            (a, b) if a != b => {
                let text = |v: Option<&toml::Value>| v.map(|v| v.to_string()).unwrap_or_default();
                out.push(Change { key: prefix.to_string(), base: text(a), repro: text(b) });
            }
            _ => {}
        }
    }
    let value = |s: &Scenario| toml::Value::try_from(s).ok();
    let mut out = Vec::new();
    walk("", value(base).as_ref(), value(repro).as_ref(), &mut out);
    out.retain(|c| c.key != "name" && c.key != "description" && !c.key.starts_with("expect"));
    out
}

/// Writes a report under `parent` and returns its directory.
pub fn write(parent: &Path, input: &ReportInput) -> Result<PathBuf> {
    let o = input.outcome;
    let changes = changes(input.base, input.knob_repro.unwrap_or(input.repro));
    let knobs: Vec<String> = changes.iter().map(|c| c.key.clone()).collect();
    let signature = input.signature.clone().unwrap_or_else(|| signature(o.first_nonfinite.as_ref(), &o.dtype, &knobs));
    // The name becomes a directory name: keep it to safe characters.
    let name: String = input.repro.name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    let name = name.trim_start_matches('.');
    let dir = parent.join(format!("{name}-{signature}"));
    let tmp = parent.join(format!(".{name}-{signature}.tmp{}", std::process::id()));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::io(p, e)
    };
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let mut repro = input.repro.clone();
    if let InputSpec::Csv { path, .. } = &mut repro.data.inputs {
        // Self-contained: the data travels with the repro.
        let src = input.repro.dir.as_deref().unwrap_or(Path::new(".")).join(&*path);
        std::fs::copy(&src, tmp.join("data.csv")).map_err(io(&src))?;
        *path = "data.csv".into();
    }
    let replay = format!("nanhunt replay {}", dir.display());
    let toml_text = toml::to_string(&repro).map_err(|e| Error::Serialise(e.to_string()))?;
    let header = format!("# nanhunt repro of `{}`.\n# Replay: {replay}\n# Run:    nanhunt run repro.toml\n\n", input.base.name);
    std::fs::write(tmp.join("repro.toml"), header + &toml_text).map_err(io(&tmp))?;
    std::fs::write(tmp.join("trace.csv"), o.trace.to_csv()?).map_err(io(&tmp))?;
    let leading_up = leading_up(o);
    let summary = Summary {
        schema_version: SCHEMA_VERSION,
        scenario: input.repro.name.clone(),
        signature,
        outcome: o.clone(),
        leading_up,
        changes,
        thresholds: input.thresholds.clone(),
        environment: Environment::of(o),
        settings: input.settings,
        reductions: input.reductions.clone(),
        replay,
    };
    let json = serde_json::to_string_pretty(&summary).map_err(|e| Error::Serialise(e.to_string()))?;
    std::fs::write(tmp.join("summary.json"), json).map_err(io(&tmp))?;
    std::fs::write(tmp.join("summary.md"), crate::summary::markdown(&summary)).map_err(io(&tmp))?;
    let mark = mark(o);
    let title = format!("{}: {}", summary.scenario, o.first_nonfinite.as_ref().map_or("finite".into(), |f| format!("{} in {} at step {}", f.kind, f.tensor, f.step)));
    std::fs::write(tmp.join("trace.svg"), crate::plot::svg(&title, &o.trace, mark)?).map_err(io(&tmp))?;
    crate::plot::png(&tmp.join("trace.png"), &title, &o.trace, mark)?;
    // Swap the finished directory into place.
    let old = parent.join(format!(".{name}-{}.old{}", summary.signature, std::process::id()));
    if dir.exists() {
        std::fs::rename(&dir, &old).map_err(io(&dir))?;
    }
    std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(dir)
}

/// The 1-based trace row of the first non-finite step, for the plot's marker.
fn mark(o: &Outcome) -> Option<usize> {
    let f = o.first_nonfinite.as_ref()?;
    let i = o.trace.rows.iter().position(|r| r.fold == f.fold && r.step == f.step);
    Some(i.map_or(1, |i| i + 1))
}

/// Up to five finite rows before the first non-finite step, and that step.
fn leading_up(o: &Outcome) -> Vec<SignalRow> {
    let end = mark(o).unwrap_or(o.trace.rows.len()).min(o.trace.rows.len());
    o.trace.rows[end.saturating_sub(6)..end].iter().map(SignalRow::of).collect()
}

/// Reads a report's summary.
pub fn read_summary(dir: &Path) -> Result<Summary> {
    let p = dir.join("summary.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Csv { path: p, message: format!("not a nanhunt summary: {e}") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_seed_scenario_round_trips_through_repro_toml() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/seeds"));
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let mut s = crate::load(&p).unwrap();
            s.dir = None;
            let text = toml::to_string(&s).unwrap();
            let back = crate::load::from_str(&text, "repro.toml").unwrap_or_else(|e| panic!("{}: {e}\n{text}", p.display()));
            // Compared as text: a scenario may hold NaN, which is not equal to itself.
            assert_eq!(toml::to_string(&back).unwrap(), text, "{}", p.display());
            assert_eq!(format!("{back:?}"), format!("{s:?}"));
        }
    }

    #[test]
    fn changes_name_the_differing_keys() {
        let p = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/seeds/s002_ex1_linreg_sgd.toml"));
        let base = crate::load(p).unwrap();
        let mut repro = base.clone();
        repro.optimizer.lr = 0.5;
        repro.train.dtype = crate::scenario::DTypeName::F16;
        let keys: Vec<String> = changes(&base, &repro).into_iter().map(|c| c.key).collect();
        assert_eq!(keys, ["optimizer.lr", "train.dtype"]);
    }

    #[test]
    fn signature_is_stable() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (the published test vector).
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
