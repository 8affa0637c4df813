//! What a run ends in: finite, non-finite (and where first), or an error.
//!
//! A NaN loss is a value of this type, never an `Err`: it is what nanhunt is
//! looking for. The JSON form of [`Outcome`] is what `nanhunt run --json`
//! prints and what reports store.

use serde::{Deserialize, Serialize};
use strum::{IntoStaticStr, VariantArray};

pub(crate) use super::location::coords;
pub use super::location::{Kind, Location};
use super::trace::Trace;
use crate::scenario::{Phase, RunDType, TensorId};

/// Why a run was flagged as stagnating (seed 003 ex2: vanishing gradients).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stagnation {
    /// Step at which it was first seen.
    pub step: usize,
    /// Its epoch (1-based; 0 where not recorded).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: usize,
    /// Its cross-validation fold.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fold: usize,
    /// `vanishing_gradient` or `loss_plateau`.
    pub reason: String,
    /// The numbers behind it.
    pub detail: String,
}

/// The three ways a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, IntoStaticStr, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Status {
    /// Every watched value stayed finite.
    Finite,
    /// Something went NaN or infinite.
    Nonfinite,
    /// The run could not be carried out.
    Error,
    /// The run was cut off (its time limit, or a stop request) before it ended or went non-finite.
    Timeout,
}

impl Status {
    /// The CLI exit code: 0 finite, 1 non-finite, 2 error.
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Finite => 0,
            Status::Nonfinite => 1,
            Status::Error | Status::Timeout => 2,
        }
    }
}

/// Everything a run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The scenario's name.
    pub scenario: String,
    /// Finite, non-finite or error.
    pub outcome: Status,
    /// The first non-finite value, if any.
    pub first_nonfinite: Option<Location>,
    /// Why it appeared: the operation, its inputs and a diagnosis (where a rule explains it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<super::cause::Cause>,
    /// The f64 verdict on the first non-finite value: precision, math or kernel disagreement
    /// (computed when asked: `RunOptions::verdict`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<super::verdict::Verdict>,
    /// The producing op computed in f64 from the failing step's inputs, for the verdict.
    #[serde(skip)]
    pub(crate) op_f64: Option<super::verdict::OpCheck>,
    /// Optimizer steps taken (summed over folds).
    pub steps: usize,
    /// The last training loss computed.
    pub final_loss: Option<f64>,
    /// The last finite training loss.
    pub last_finite_loss: Option<f64>,
    /// Set when the loss stopped improving or the gradient vanished.
    pub stagnation: Option<Stagnation>,
    /// Set when a finite run diverges: its loss or its parameters grow without bound (`loss_growth`, `param_growth`).
    #[serde(default)]
    pub divergence: Option<Stagnation>,
    /// For a run whose loss scaler skipped steps: how many of how many, and which
    /// ("3 of 6 steps skipped: inf/NaN gradients at steps 1, 2, 4").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_steps: Option<String>,
    /// Settings that cannot work as written in the compute dtype (an epsilon that rounds to 0, a
    /// clamp whose `1 − c` rounds to 1): precursors, reported whether or not the run fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The error, for `outcome = "error"`; why it was cut off, for `outcome = "timeout"`.
    pub error: Option<String>,
    /// Compute dtype, or the autocast precision (`amp_f16`, `amp_bf16`); written `""` for a run
    /// that could not be carried out (`None`).
    #[serde(with = "dtype_or_empty")]
    pub dtype: Option<RunDType>,
    /// Device.
    pub device: String,
    /// CPU threads Candle used.
    pub threads: usize,
    /// Wall-clock time of the run in seconds (not part of determinism).
    pub seconds: f64,
    /// A model written in Rust: its name, parameters and initial hash (`None` for a layer stack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<super::code::ModelCard>,
    /// The per-step trace (written as CSV, not in the JSON).
    #[serde(skip)]
    pub trace: Trace,
}

pub(crate) fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `Outcome::dtype` as outcomes have always written it: its name, or `""` for none.
mod dtype_or_empty {
    use super::RunDType;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<RunDType>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.map_or("", |d| d.into()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<RunDType>, D::Error> {
        let name = String::deserialize(d)?;
        if name.is_empty() {
            return Ok(None);
        }
        name.parse().map(Some).map_err(|_| D::Error::custom(format!("`{name}` is not a dtype or precision")))
    }
}

impl Outcome {
    /// Where a finite run diverged, as a site: the `loss` (in phase `loss`) or the `parameters`
    /// (in phase `update`), of kind [`Kind::Diverge`]; `None` unless finite and diverging.
    pub fn divergence_site(&self) -> Option<Location> {
        let d = self.divergence.as_ref().filter(|_| self.outcome == Status::Finite)?;
        let (phase, tensor) = if d.reason == "param_growth" { (Phase::Update, TensorId::Parameters) } else { (Phase::Loss, TensorId::Loss) };
        Some(Location { step: d.step, epoch: d.epoch, fold: d.fold, phase, tensor, kind: Kind::Diverge, index: 0, ..Location::default() })
    }

    /// Where the run failed: its first non-finite value, or for a finite diverging run its divergence site.
    pub fn failure_site(&self) -> Option<Location> {
        match self.outcome {
            Status::Nonfinite => self.first_nonfinite.clone(),
            _ => self.divergence_site(),
        }
    }

    /// The dtype's name as outcomes write it (`""` for none).
    pub fn dtype_name(&self) -> &'static str {
        self.dtype.map_or("", |d| d.into())
    }

    /// An outcome for a run that could not be carried out.
    pub fn error(scenario: &str, message: String) -> Self {
        Outcome {
            scenario: scenario.to_string(),
            outcome: Status::Error,
            first_nonfinite: None,
            cause: None,
            verdict: None,
            op_f64: None,
            steps: 0,
            final_loss: None,
            last_finite_loss: None,
            stagnation: None,
            divergence: None,
            skipped_steps: None,
            warnings: Vec::new(),
            error: Some(message),
            dtype: None,
            device: String::new(),
            threads: candle_core::utils::get_num_threads(),
            seconds: 0.0,
            model: None,
            trace: Trace::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Named;

    #[test]
    fn coordinates_of_a_flat_index_are_row_major() {
        // 2 × 3 × 4: index 23 is the last element; 13 = 1·12 + 0·4 + 1.
        assert_eq!(coords(23, &[2, 3, 4]), [1, 2, 3]);
        assert_eq!(coords(13, &[2, 3, 4]), [1, 0, 1]);
        assert_eq!(coords(7, &[10]), [7]);
        assert!(coords(0, &[]).is_empty());
    }

    #[test]
    fn outcomes_written_before_ids_were_typed_load_and_write_back_byte_for_byte() {
        // `nanhunt run --json` output of the binary at 4c2bbe9, before tensors and dtypes were typed.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/before-typed-ids");
        let validation = TensorId::Output("layers.1.batch_norm".into()).validation();
        for (file, tensor, dtype) in [("outcome-amp.json", TensorId::LossScale, RunDType::AmpF16), ("outcome-validation.json", validation, RunDType::F32)] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let o: Outcome = serde_json::from_str(&text).unwrap();
            assert_eq!((o.first_nonfinite.as_ref().map(|f| &f.tensor), o.dtype), (Some(&tensor), Some(dtype)), "{file}");
            assert_eq!(serde_json::to_string(&o).unwrap(), text.trim_end(), "{file}");
        }
    }

    #[test]
    fn an_outcome_without_a_run_writes_its_dtype_as_empty() {
        let o = Outcome::error("s", "bad".into());
        let json = serde_json::to_value(&o).unwrap();
        assert_eq!(json["dtype"], "");
        assert_eq!(serde_json::from_value::<Outcome>(json.clone()).unwrap().dtype, None);
        let mut bad = json;
        bad["dtype"] = "f8".into();
        assert!(serde_json::from_value::<Outcome>(bad).unwrap_err().to_string().contains("`f8` is not a dtype or precision"));
    }

    #[test]
    fn kind_and_status_names_are_their_json_names() {
        for k in Kind::VARIANTS {
            assert_eq!(serde_json::to_value(k).unwrap().as_str(), Some(k.name()));
        }
        for s in Status::VARIANTS {
            assert_eq!(serde_json::to_value(s).unwrap().as_str(), Some(s.name()));
        }
    }

    #[test]
    fn the_readme_names_every_field_run_json_prints() {
        // An outcome with every field filled, nested ones too: each key it writes is named in the
        // README's `--json` bullet for `nanhunt run`, and so is each status.
        let at = Location { step: 3, epoch: 1, fold: 0, phase: Phase::Loss, tensor: TensorId::Loss, kind: Kind::Nan, index: 1, shape: vec![2, 2], coords: vec![0, 1], count: 2, rows: vec![0] };
        let operand = super::super::cause::Operand { name: "p".into(), at: Some(0.0), min: 0.0, max: 1.0, min_abs: 0.0, zeros: 1, subnormals: 0, infinite: 0, nan: 0 };
        let then = super::super::cause::Cause { rule: super::super::cause::Rule::LogOfZero, op: "loss (bce)".into(), reason: "log 0".into(), inputs: vec![operand], chain: None, skipped: None };
        let chain = super::super::cause::Chain { trigger: "lr 1".into(), grew: "loss".into(), per_step: 10.0, diverged_at: 2, then: Some(Box::new(then.clone())) };
        let cause = super::super::cause::Cause { chain: Some(chain), ..then };
        let stagnation = Some(Stagnation { step: 2, epoch: 1, fold: 1, reason: "loss_plateau".into(), detail: "flat".into() });
        let mut o = Outcome::error("s", "bad".into());
        (o.first_nonfinite, o.cause, o.stagnation, o.divergence, o.warnings) = (Some(at), Some(cause), stagnation.clone(), stagnation, vec!["w".into()]);
        o.skipped_steps = Some("1 of 2 steps skipped: inf/NaN gradients at step 1".into());
        o.model = Some(super::super::code::ModelCard { name: "m".into(), params: vec![("w".into(), vec![1])], init_hash: "0".into() });
        let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
        let start = readme.find("- `--json` prints one object: `scenario`").expect("the run's --json bullet");
        let bullet = &readme[start..start + readme[start + 2..].find("\n- ").expect("the next bullet") + 2];
        fn keys(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => m.iter().for_each(|(k, v)| {
                    out.push(k.clone());
                    keys(v, out);
                }),
                serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        keys(&serde_json::to_value(&o).unwrap(), &mut all);
        assert!(all.len() > 35, "{all:?}");
        let missing: Vec<&String> = all.iter().filter(|k| !bullet.contains(&format!("`{k}`"))).collect();
        assert!(missing.is_empty(), "the README's --json list lacks {missing:?}");
        for s in Status::VARIANTS {
            assert!(bullet.contains(s.name()), "{}", s.name());
        }
    }
}
