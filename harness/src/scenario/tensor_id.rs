//! [`TensorId`]: which tensor the watch names, typed. Its text form is the
//! stable name findings, traces, reports and `[expect]` use
//! (`layers.0.linear.weight.grad`, `optim.layers.0.linear.weight.exp_avg_sq`,
//! `validation.layers.1.batch_norm.output`, ...): [`TensorId`] displays as that
//! name and parses it back, so a name written by an older nanhunt still loads.
//!
//! A node is named by the plan's node name (`layers.2.residual.layers.1.attention.probs`,
//! dots included): that is what the trace's columns and the export use, and a
//! saved name must parse without the plan. Parsing goes by the scheme's fixed
//! prefixes and suffixes, so any text parses, and `id.to_string()` gives the text
//! back. A code model names its own checks and parameters: the runner makes their
//! ids by parsing those names ([`TensorId::from_name`]), so an id it makes is
//! always the one its name parses to.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use strum::{IntoStaticStr, VariantArray};

use super::{Named, Plan};

/// One tensor the watch can name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TensorId {
    /// A split's inputs or targets as the model reads them (`data.train.inputs`).
    Data(DataSplit, DataPart),
    /// A node's output in the training forward (`layers.1.exp.output`), by the node's name.
    Output(String),
    /// The gradient of a node's output, found by the tapped re-run (`layers.0.linear.output.grad`).
    OutputGrad(String),
    /// The training loss (`loss`).
    Loss,
    /// A parameter after its update (`layers.0.linear.weight`).
    Param(String),
    /// A parameter's gradient (`layers.0.linear.weight.grad`), by the parameter's name.
    ParamGrad(String),
    /// An optimizer's state of a parameter (`optim.layers.0.linear.weight.exp_avg_sq`).
    State {
        /// The parameter's name.
        param: String,
        /// Which state.
        state: OptimState,
    },
    /// The loss scaler's scale (`loss_scale`): the site of a scale collapse.
    LossScale,
    /// A finite run's parameters as a whole (`parameters`): the site of a parameter divergence.
    Parameters,
    /// A tensor of the validation forward, named `validation.` and the training tensor's name
    /// (`validation.loss`, `validation.layers.1.batch_norm.output`).
    Validation(Box<TensorId>),
    /// A name outside this scheme: a check or a parameter a code model named itself (`h1`).
    Named(String),
}

/// Which split's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum DataSplit {
    /// The training rows.
    Train,
    /// The validation rows.
    Validation,
}

/// Which side of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum DataPart {
    /// The model's inputs.
    Inputs,
    /// The targets.
    Targets,
}

/// An optimizer state, by the name PyTorch's `optimizer.state` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, IntoStaticStr, VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum OptimState {
    /// Adam's first moment.
    ExpAvg,
    /// Adam's second moment.
    ExpAvgSq,
    /// SGD's and RMSprop's momentum buffer.
    MomentumBuffer,
    /// RMSprop's running mean of squared gradients.
    SquareAvg,
}

impl OptimState {
    /// Whether the state accumulates squared gradients (a second moment).
    pub fn squared(self) -> bool {
        match self {
            OptimState::ExpAvgSq | OptimState::SquareAvg => true,
            OptimState::ExpAvg | OptimState::MomentumBuffer => false,
        }
    }
}

impl TensorId {
    /// The id a name parses to; for names a code model chose (its checks and parameters).
    pub fn from_name(name: &str) -> TensorId {
        match name.parse() {
            Ok(id) => id,
            Err(never) => match never {},
        }
    }

    /// The same tensor in the validation forward.
    pub fn validation(self) -> TensorId {
        TensorId::Validation(Box::new(self))
    }

    /// The node whose output (in training or validation) this is, if it is one.
    pub fn output_node(&self) -> Option<&str> {
        match self {
            TensorId::Output(n) => Some(n),
            TensorId::Validation(t) => t.output_node(),
            _ => None,
        }
    }

    /// Whether this is a node output's gradient (found by the tapped re-run).
    pub fn is_output_grad(&self) -> bool {
        matches!(self, TensorId::OutputGrad(_))
    }

    /// Every tensor the watch can report for a layer stack of `plan`, in this order: the data,
    /// node outputs, the loss, gradients of the parameters, gradients of the node outputs (where
    /// the tapped re-run finds a bad gradient born), parameters, every optimizer's states, and
    /// the validation outputs (`validation`: the scenario has a validation split).
    pub fn all_of(plan: &Plan, validation: bool) -> Vec<TensorId> {
        let data = |split| DataPart::VARIANTS.iter().map(move |&part| TensorId::Data(split, part));
        let mut t: Vec<TensorId> = data(DataSplit::Train).collect();
        if validation {
            t.extend(data(DataSplit::Validation));
            t.push(TensorId::Loss.validation());
        }
        t.extend(plan.layer_names.iter().map(|l| TensorId::Output(l.clone())));
        t.push(TensorId::Loss);
        t.extend(plan.params.iter().map(|p| TensorId::ParamGrad(p.name.clone())));
        t.extend(plan.layer_names.iter().map(|l| TensorId::OutputGrad(l.clone())));
        t.extend(plan.params.iter().map(|p| TensorId::Param(p.name.clone())));
        for &state in OptimState::VARIANTS {
            t.extend(plan.params.iter().map(|p| TensorId::State { param: p.name.clone(), state }));
        }
        if validation {
            t.extend(plan.layer_names.iter().map(|l| TensorId::Output(l.clone()).validation()));
        }
        t
    }
}

impl Default for TensorId {
    /// The empty name (a location not yet filled in).
    fn default() -> Self {
        TensorId::Named(String::new())
    }
}

impl std::fmt::Display for TensorId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TensorId::Data(split, part) => write!(f, "data.{}.{}", split.name(), part.name()),
            TensorId::Output(n) => write!(f, "{n}.output"),
            TensorId::OutputGrad(n) => write!(f, "{n}.output.grad"),
            TensorId::Loss => f.write_str("loss"),
            TensorId::Param(p) | TensorId::Named(p) => f.write_str(p),
            TensorId::ParamGrad(p) => write!(f, "{p}.grad"),
            TensorId::State { param, state } => write!(f, "optim.{param}.{}", state.name()),
            TensorId::LossScale => f.write_str("loss_scale"),
            TensorId::Parameters => f.write_str("parameters"),
            TensorId::Validation(t) => write!(f, "validation.{t}"),
        }
    }
}

impl std::str::FromStr for TensorId {
    type Err = std::convert::Infallible;

    /// Any text parses: by the scheme's fixed names, prefixes and suffixes, and [`TensorId::Named`] otherwise.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fixed = [("loss", TensorId::Loss), ("loss_scale", TensorId::LossScale), ("parameters", TensorId::Parameters)];
        if let Some((_, id)) = fixed.into_iter().find(|(n, _)| *n == s) {
            return Ok(id);
        }
        if let Some((split, part)) = s.strip_prefix("data.").and_then(|r| r.split_once('.')) {
            let split = DataSplit::VARIANTS.iter().find(|v| v.name() == split);
            let part = DataPart::VARIANTS.iter().find(|v| v.name() == part);
            if let (Some(&split), Some(&part)) = (split, part) {
                return Ok(TensorId::Data(split, part));
            }
        }
        if let Some(rest) = s.strip_prefix("validation.") {
            return Ok(TensorId::from_name(rest).validation());
        }
        if let Some((param, state)) = s.strip_prefix("optim.").and_then(|r| r.rsplit_once('.')) {
            if let Some(&state) = OptimState::VARIANTS.iter().find(|v| v.name() == state).filter(|_| !param.is_empty()) {
                return Ok(TensorId::State { param: param.to_string(), state });
            }
        }
        Ok(if let Some(node) = s.strip_suffix(".output.grad") {
            TensorId::OutputGrad(node.to_string())
        } else if let Some(param) = s.strip_suffix(".grad") {
            TensorId::ParamGrad(param.to_string())
        } else if let Some(node) = s.strip_suffix(".output") {
            TensorId::Output(node.to_string())
        } else if s.starts_with("layers.") {
            TensorId::Param(s.to_string())
        } else {
            TensorId::Named(s.to_string())
        })
    }
}

impl PartialEq<str> for TensorId {
    /// Whether this is the tensor of that name (the id it parses to).
    fn eq(&self, name: &str) -> bool {
        *self == TensorId::from_name(name)
    }
}

impl PartialEq<&str> for TensorId {
    fn eq(&self, name: &&str) -> bool {
        *self == **name
    }
}

impl Serialize for TensorId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TensorId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(TensorId::from_name(&String::deserialize(d)?))
    }
}

impl<'a> arbitrary::Arbitrary<'a> for TensorId {
    /// A name drawn as a string and parsed, so fuzz inputs read as they did when the field was a string.
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(TensorId::from_name(&String::arbitrary(u)?))
    }

    fn size_hint(depth: usize) -> (usize, Option<usize>) {
        String::size_hint(depth)
    }
}

#[cfg(test)]
#[path = "tensor_id_tests.rs"]
mod tests;
