//! `summary.json`: the machine-readable part of a report (versioned), and
//! what it is made of: the outcome, the signals leading up to the first
//! non-finite value, the diff against the base scenario with flip thresholds,
//! the environment and the replay command.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::run::{Outcome, TraceRow};
use crate::scenario::Scenario;
use crate::search::{Threshold, Trigger};

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
            dtype: o.dtype_name().to_string(),
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
    /// For a hunt's root cause: what the site means, where nanhunt can say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// For a hunt's root cause: every minimal trigger that reaches it, nearest to the base first (the repro is the first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
}

/// One trace row's signals, for the summary tables. In `summary.json` they
/// are JSON numbers (`null` where absent or non-finite: JSON has no NaN);
/// reports of schema 1 that wrote them as text still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalRow {
    /// Step.
    pub step: usize,
    /// Epoch.
    pub epoch: usize,
    /// Fold.
    pub fold: usize,
    /// Training loss.
    #[serde(deserialize_with = "number")]
    pub train_loss: Option<f64>,
    /// Global gradient norm.
    #[serde(deserialize_with = "number")]
    pub grad_norm: Option<f64>,
    /// Largest |activation| over layers.
    #[serde(deserialize_with = "number")]
    pub max_abs: Option<f64>,
    /// Bits between the step's largest |value| and the dtype's largest value (absent in older reports).
    #[serde(default, deserialize_with = "number")]
    pub headroom: Option<f64>,
}

impl SignalRow {
    pub(crate) fn of(r: &TraceRow) -> Self {
        SignalRow { step: r.step, epoch: r.epoch, fold: r.fold, train_loss: Some(r.train_loss), grad_norm: r.grad_norm, max_abs: r.max_abs.iter().copied().reduce(f64::max), headroom: r.headroom }
    }
}

/// A number written as a JSON number, as text (schema 1), or absent.
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(f64),
        Text(String),
    }
    Ok(match Option::<Either>::deserialize(d)? {
        Some(Either::Number(v)) => Some(v),
        Some(Either::Text(t)) => t.parse().ok(),
        None => None,
    })
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
    let f = o.failure_site()?;
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
    fn signal_rows_read_as_numbers_or_as_schema_1_text() {
        let new: SignalRow = serde_json::from_str(r#"{"step":3,"epoch":1,"fold":0,"train_loss":2.5,"grad_norm":null,"max_abs":1e30}"#).unwrap();
        let old: SignalRow = serde_json::from_str(r#"{"step":3,"epoch":1,"fold":0,"train_loss":"2.5e0","grad_norm":"","max_abs":"1e30"}"#).unwrap();
        assert_eq!(new, old);
        assert_eq!((new.train_loss, new.grad_norm), (Some(2.5), None));
    }

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
