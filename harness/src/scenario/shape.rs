//! Static shapes: what a scenario's data and model look like before anything
//! is built. Validation, the memory estimate, the runner and the search space
//! all read shapes from here, so they cannot disagree.
//!
//! [`plan`] is the one place that knows each layer's parameters and output
//! width; parameter names are stable and ordered by layer
//! (`layers.0.linear.weight`, `layers.2.rnn.weight_hh`, ...).

use super::{DataSpec, Init, InputSpec, Layer, ModelSpec, Named, Scenario, TargetRow, TargetSpec};

/// The shape of one input row: `features` wide, optionally a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InShape {
    /// Features per row (per time step for sequences).
    pub features: usize,
    /// Sequence length, for recurrent inputs.
    pub seq_len: Option<usize>,
}

/// What a parameter is, which decides its initial values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A weight matrix, stored `(in, out)` like a Keras kernel (PyTorch's `weight` is its transpose),
    /// so the forward pass needs no transpose and its gradient arrives contiguous.
    Weight,
    /// A recurrent weight matrix `(hidden, hidden)`.
    Recurrent,
    /// A bias vector.
    Bias,
    /// A layer-norm gain (starts at one).
    Gain,
    /// A layer-norm shift (starts at zero).
    Shift,
}

/// Name, shape and initialisation of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// Stable dotted name.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// What it is.
    pub role: Role,
    /// Fan-in of the layer.
    pub fan_in: usize,
    /// Fan-out of the layer.
    pub fan_out: usize,
    /// PyTorch's default init draws from `U(±1/sqrt(torch_fan))`: fan-in for linear, hidden size for RNN.
    pub torch_fan: usize,
    /// The initialisation in force for it.
    pub init: Init,
}

/// The static shape of a model: its parameters, layer names and widths.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Parameters in layer order.
    pub params: Vec<ParamSpec>,
    /// `layers.{i}.{type}` for each layer.
    pub layer_names: Vec<String>,
    /// Last-dimension width of each layer's output.
    pub widths: Vec<usize>,
    /// Width of the model's output (the input width for an empty stack).
    pub out_width: usize,
}

/// Works out parameter shapes and layer widths, or says which layer does not fit (`(index, message)`).
pub fn plan(spec: &ModelSpec, input: InShape) -> std::result::Result<Plan, (usize, String)> {
    let mut params = Vec::new();
    let mut layer_names = Vec::new();
    let mut widths = Vec::new();
    let mut width = input.features;
    let mut sequence = input.seq_len.is_some();
    for (i, layer) in spec.layers.iter().enumerate() {
        let name = format!("layers.{i}.{}", layer.name());
        let torch_fan = match layer {
            Layer::Rnn { hidden, .. } => *hidden,
            _ => width,
        };
        let mut add = |p: &str, shape: Vec<usize>, role, fan_in, fan_out, init: Option<Init>| {
            let init = init.unwrap_or(spec.init);
            params.push(ParamSpec { name: format!("{name}.{p}"), shape, role, fan_in, fan_out, torch_fan, init });
        };
        match layer {
            Layer::Linear { out, init } => {
                if sequence {
                    return Err((i, "a linear layer cannot take sequence input: put an rnn layer first".into()));
                }
                if *out == 0 {
                    return Err((i, "`out` must be at least 1".into()));
                }
                add("weight", vec![width, *out], Role::Weight, width, *out, *init);
                add("bias", vec![*out], Role::Bias, width, *out, *init);
                width = *out;
            }
            Layer::Rnn { hidden, init } => {
                if !sequence {
                    return Err((i, "an rnn layer needs sequence input: set `data.seq_len`".into()));
                }
                if *hidden == 0 {
                    return Err((i, "`hidden` must be at least 1".into()));
                }
                let h = *hidden;
                add("weight_ih", vec![width, h], Role::Weight, width, h, *init);
                add("weight_hh", vec![h, h], Role::Recurrent, h, h, *init);
                add("bias_ih", vec![h], Role::Bias, h, h, *init);
                add("bias_hh", vec![h], Role::Bias, h, h, *init);
                width = h;
                sequence = false;
            }
            Layer::BatchNorm { .. } => {
                if sequence {
                    return Err((i, "a batch_norm layer cannot take sequence input: put an rnn layer first".into()));
                }
                add("weight", vec![width], Role::Gain, width, width, None);
                add("bias", vec![width], Role::Shift, width, width, None);
            }
            Layer::RmsNorm { .. } => {
                add("weight", vec![width], Role::Gain, width, width, None);
            }
            Layer::LayerNorm { eps } => {
                if !(eps.is_finite() && *eps > 0.0) {
                    return Err((i, format!("layer norm `eps` must be a positive finite number, got {eps}")));
                }
                add("weight", vec![width], Role::Gain, width, width, None);
                add("bias", vec![width], Role::Shift, width, width, None);
            }
            _ => {}
        }
        layer_names.push(name);
        widths.push(width);
    }
    if sequence {
        return Err((spec.layers.len(), "the model's output is still a sequence: add an rnn layer".into()));
    }
    Ok(Plan { params, layer_names, widths, out_width: width })
}

/// The row shape of the inputs, when it is known without reading files.
pub fn input_shape(d: &DataSpec) -> Option<InShape> {
    let row = match &d.inputs {
        InputSpec::Values { rows } => rows.first().map(Vec::len),
        InputSpec::Csv { .. } => return None,
        _ => None,
    };
    let features = d.features.or(row.map(|r| r / d.seq_len.filter(|s| *s > 0).unwrap_or(1)))?;
    Some(InShape { features, seq_len: d.seq_len })
}

/// The number of target columns, when known without reading files.
pub fn target_width(d: &DataSpec) -> Option<usize> {
    match &d.inputs {
        InputSpec::Csv { targets, .. } => Some(targets.len()),
        _ => d.targets.as_ref().and_then(target_spec_width),
    }
}

/// The number of target columns a target spec makes, when known.
pub(crate) fn target_spec_width(t: &TargetSpec) -> Option<usize> {
    Some(match t {
        TargetSpec::Binary | TargetSpec::Linear { .. } => 1,
        TargetSpec::Classes { k } => *k,
        TargetSpec::Uniform { outputs, .. } | TargetSpec::Normal { outputs, .. } => *outputs,
        TargetSpec::Values { values } => match values.first()? {
            TargetRow::One(_) => 1,
            TargetRow::Many(v) => v.len(),
        },
    })
}

/// Rows of the training data as written (generated or explicit), when known without reading files.
pub fn rows(s: &Scenario) -> Option<usize> {
    rows_of(&s.data.inputs).or(match s.data.inputs {
        InputSpec::Csv { .. } => None,
        _ => s.data.n,
    })
}

/// Rows of explicit inputs.
pub(crate) fn rows_of(i: &InputSpec) -> Option<usize> {
    match i {
        InputSpec::Values { rows } => Some(rows.len()),
        _ => None,
    }
}

/// Rows held out for a validation fraction (Keras rounds down, at least one).
pub fn held_out(n: usize, fraction: f64) -> usize {
    ((n as f64 * fraction).floor() as usize).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(layers: Vec<Layer>) -> ModelSpec {
        ModelSpec { init: Init::Torch, layers, init_scale: 1.0 }
    }

    #[test]
    fn plan_names_and_shapes() {
        let s = spec(vec![Layer::Linear { out: 4, init: None }, Layer::Relu, Layer::Linear { out: 1, init: None }]);
        let p = plan(&s, InShape { features: 3, seq_len: None }).unwrap();
        let names: Vec<_> = p.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["layers.0.linear.weight", "layers.0.linear.bias", "layers.2.linear.weight", "layers.2.linear.bias"]);
        assert_eq!(p.params[0].shape, vec![3, 4]);
        assert_eq!(p.widths, vec![4, 4, 1]);
    }

    #[test]
    fn plan_rejects_misplaced_layers() {
        let seq = InShape { features: 1, seq_len: Some(5) };
        assert!(plan(&spec(vec![Layer::Linear { out: 1, init: None }]), seq).is_err());
        assert!(plan(&spec(vec![Layer::Rnn { hidden: 2, init: None }]), InShape { features: 1, seq_len: None }).is_err());
        assert!(plan(&spec(vec![Layer::Tanh]), seq).is_err());
    }
}
