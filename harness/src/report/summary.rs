//! `summary.json`: the machine-readable part of a report (versioned), and
//! what it is made of: the outcome, the signals leading up to the first
//! non-finite value, the diff against the base scenario with flip thresholds,
//! the environment and the replay command.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::run::{fmt, Outcome, TraceRow};
use crate::scenario::Scenario;
use crate::search::Threshold;

/// Version of `summary.json`'s layout.
pub const SCHEMA_VERSION: u32 = 1;

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
    pub(crate) fn of(r: &TraceRow) -> Self {
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


/// The 1-based trace row of the first non-finite step, for the plot's marker.
pub(crate) fn mark(o: &Outcome) -> Option<usize> {
    let f = o.first_nonfinite.as_ref()?;
    let i = o.trace.rows.iter().position(|r| r.fold == f.fold && r.step == f.step);
    Some(i.map_or(1, |i| i + 1))
}

/// Up to five finite rows before the first non-finite step, and that step.
pub(crate) fn leading_up(o: &Outcome) -> Vec<SignalRow> {
    let end = mark(o).unwrap_or(o.trace.rows.len()).min(o.trace.rows.len());
    o.trace.rows[end.saturating_sub(6)..end].iter().map(SignalRow::of).collect()
}


/// Reads a report's summary.
pub fn read_summary(dir: &Path) -> Result<Summary> {
    let p = dir.join("summary.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
    serde_json::from_str(&text).map_err(|source| Error::Json { path: p, what: "not a nanhunt summary", source })
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_the_differing_keys() {
        let base = crate::scenario::seed("s002_ex1_linreg_sgd");
        let mut repro = base.clone();
        repro.optimizer.lr = 0.5;
        repro.train.dtype = crate::scenario::DTypeName::F16;
        let keys: Vec<String> = changes(&base, &repro).into_iter().map(|c| c.key).collect();
        assert_eq!(keys, ["optimizer.lr", "train.dtype"]);
    }
}
