//! The scenario: a declarative training setup, as read from a TOML file. The
//! first stage of the dataflow (Scenario → Runner → Outcome → Search → Report);
//! nothing here depends on a later stage.
//!
//! The serde types are the file format, one file per part of it ([`data`],
//! [`model`], [`training`], [`expect`], [`search`]). Every table rejects
//! unknown keys, so a typo is a `FILE:LINE:COL` error ([`load`]) rather than a
//! silent default. Values that parse but cannot train (a negative learning
//! rate, a zero batch size, shapes that do not fit) are caught by `validate`
//! before any tensor is allocated, using the static shapes worked out in
//! `shape` and the memory estimate in `memory`.

use serde::{Deserialize, Serialize};

mod amp;
mod code;
mod data;
mod defaults;
mod dtype;
mod expect;
mod knob;
mod load;
mod memory;
mod model;
pub mod onnx;
mod plan;
mod schedule;
mod search;
mod shape;
mod sizes;
mod tensor_id;
mod toml_string;
mod training;
mod validate;

pub use amp::{LossScaleSpec, Precision, RunDType};
pub use code::Code;
pub use data::{DataSpec, ImageSpec, InjectInto, InjectValue, Injection, InputSpec, PaddingSpec, Preprocess, ScaleGroup, SplitSel, TargetRow, TargetSpec, ValidationSpec};
pub use defaults::Named;
pub(crate) use defaults::{is_one, one, one_usize};
pub use dtype::DTypeName;
pub use expect::{Expect, ExpectedOutcome, FailureRate, Phase};
pub use knob::{around, around_one, const_value, intern, Added, ConstAt, ConstRange, Constant, Ctx, Def, Domain, End, Entry, Factor, Fields, Knob, KnobValue, Scale, Spec, Value};
pub(crate) use load::{check_text, load_edited, read_regular};
pub use load::{from_str, load, load_with, parse_str, LoadOptions, DEFAULT_MAX_SCENARIO_BYTES};
pub(crate) use memory::within_plan;
pub use memory::{check_memory, memory_estimate, Footprint};
pub use model::{Init, Layer, LayerPrecision, MaskFill, ModelSpec, RnnActivation, SoftmaxKind, Tagged, MAX_NESTING};
pub use plan::{plan, Input, Node, ParamSpec, Part, Plan, PlanError, Planner, Role};
pub use schedule::{Decay, ScheduleSpec};
pub use search::SearchSpec;
pub use shape::{InShape, Shape};
pub use sizes::{held_out, input_shape, rows, target_width};
pub use tensor_id::{DataPart, DataSplit, OptimState, TensorId};
pub use training::{DeviceName, DivergenceSpec, LossKind, LossSpec, OptimizerKind, OptimizerSpec, Reduction, StagnationSpec, TrainSpec};
pub use validate::{validate, Problem, MAX_MEMORY_LIMIT_MB, MAX_NAME_CHARS};

/// One training setup: data, model, loss, optimizer and schedule, plus what a check expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports and trace file names.
    pub name: String,
    /// What the scenario reproduces, and where it comes from.
    #[serde(default)]
    pub description: String,
    /// The one seed behind data, initialisation, shuffling and injection.
    #[serde(default)]
    pub seed: u64,
    /// Inputs, targets, injections, preprocessing and splits.
    pub data: DataSpec,
    /// The layer stack.
    pub model: ModelSpec,
    /// The training loss.
    pub loss: LossSpec,
    /// The optimizer and gradient clipping.
    pub optimizer: OptimizerSpec,
    /// Epochs, batches, dtype, device and limits.
    #[serde(default)]
    pub train: TrainSpec,
    /// What `nanhunt check` expects of this scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    /// Which knobs a hunt may move, and how far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchSpec>,
    /// Directory of the file this was read from, for relative data paths.
    #[serde(skip)]
    #[arbitrary(default)]
    pub dir: Option<std::path::PathBuf>,
}

/// The bundled seed scenarios' folder.
#[cfg(test)]
pub(crate) fn seeds_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/seeds")
}

/// A bundled seed scenario's text, by file stem (for tests).
#[cfg(test)]
pub(crate) fn seed_text(stem: &str) -> String {
    std::fs::read_to_string(seeds_dir().join(format!("{stem}.toml"))).expect("bundled seed scenario")
}

/// A bundled seed scenario, loaded, by file stem (for tests).
#[cfg(test)]
pub(crate) fn seed(stem: &str) -> Scenario {
    load(&seeds_dir().join(format!("{stem}.toml"))).expect("bundled seed scenario is valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::VariantArray;

    /// strum's name and serde's name of every value agree.
    fn agree<T: Serialize + Named + VariantArray>() {
        for v in T::VARIANTS {
            let serde_name = serde_json::to_value(v).unwrap();
            assert_eq!(serde_name.as_str(), Some(v.name()), "{serde_name}");
        }
    }

    #[test]
    fn names_are_the_file_format_names() {
        agree::<DTypeName>();
        agree::<LossKind>();
        agree::<OptimizerKind>();
        agree::<Reduction>();
        agree::<InjectValue>();
        agree::<SplitSel>();
        agree::<InjectInto>();
        agree::<Phase>();
        agree::<ExpectedOutcome>();
        agree::<Knob>();
        agree::<Precision>();
        agree::<Decay>();
        assert_eq!(Layer::LayerNorm(crate::ops::layer_norm::LayerNorm { eps: 1e-5 }).name(), "layer_norm");
        assert_eq!(Layer::FlawedSquare(Default::default()).name(), "flawed_square");
    }
}
