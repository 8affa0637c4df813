//! `lstm` and `gru`: the gated recurrent cells with PyTorch's gates and init
//! (`torch.nn.LSTM`, `torch.nn.GRU`), Keras's `activation` and `recurrent_dropout`, and
//! `return_sequences`. One struct, [`Gated`], holds both; its `LSTM` parameter says which.
//! The kernels are `run::model::recurrent::{lstm, gru}`.

use candle_core::Tensor;

use super::{init_problems, unit_interval, Autocast, Cx, Explained, Facts, Op, Rounding, Rule, Torch};
use crate::error::Result;
use crate::run::model::recurrent;
use crate::scenario::{Init, Part, Planner, RnnActivation, Role, Shape};

/// A gated RNN: an LSTM (`LSTM = true`) or a GRU.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Gated<const LSTM: bool> {
    /// Hidden size.
    pub hidden: usize,
    /// Return `(batch, seq, hidden)` instead of the last state.
    #[serde(default)]
    pub return_sequences: bool,
    /// The candidate's activation (and an LSTM's cell output's; Keras's `activation`, PyTorch's is tanh).
    #[serde(default)]
    pub activation: RnnActivation,
    /// Keras's `recurrent_dropout`: one mask per sequence on the state fed back, scaled by `1/(1 − p)`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recurrent_dropout: f64,
    /// Override of the model's init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Init>,
}

/// LSTM with PyTorch's gates (`i, f, g, o`) and init; the last hidden state, or every one.
pub type Lstm = Gated<true>;

/// GRU with PyTorch's gates (`r, z, n`, the reset applied after the recurrent product) and init.
pub type Gru = Gated<false>;

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

impl<const LSTM: bool> Gated<LSTM> {
    /// Its gates: 4 for an LSTM, 3 for a GRU.
    const GATES: usize = if LSTM { 4 } else { 3 };

    /// Its type in a scenario.
    fn kind(&self) -> &'static str {
        if LSTM {
            "lstm"
        } else {
            "gru"
        }
    }
}

impl<const LSTM: bool> Op for Gated<LSTM> {
    fn check(&self) -> Vec<(&'static str, String)> {
        unit_interval("recurrent_dropout", self.recurrent_dropout).into_iter().chain(init_problems(self.init.as_ref())).collect()
    }

    fn plan(&self, p: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        let (len, width) = super::sequence(self.kind(), input)?;
        if self.hidden == 0 {
            return Err("`hidden` must be at least 1".into());
        }
        // Saturating: an absurd size is refused by the memory estimate, not an overflow.
        let (h, gh) = (self.hidden, self.hidden.saturating_mul(Self::GATES));
        // PyTorch draws every parameter from U(±1/sqrt(hidden)); Keras starts an LSTM's forget gate's bias at 1.
        p.param("weight_ih", vec![width, gh], Role::Weight, (width, gh), h, self.init);
        p.param("weight_hh", vec![h, gh], Role::Recurrent, (h, gh), h, self.init);
        p.param("bias_ih", vec![gh], if LSTM { Role::ForgetBias } else { Role::Bias }, (h, gh), h, self.init);
        p.param("bias_hh", vec![gh], Role::Bias, (h, gh), h, self.init);
        Ok(if self.return_sequences { Shape::Seq { len, width: h } } else { Shape::Flat(h) })
    }

    /// Its output, and per step its gates with three temporaries each.
    fn held(&self, input: Shape, _: Shape, values: u128) -> u128 {
        match input {
            Shape::Seq { len, .. } => values.saturating_add((Self::GATES as u128 * 3).saturating_mul(self.hidden as u128).saturating_mul(len as u128)),
            Shape::Flat(_) | Shape::Tokens { .. } | Shape::Image { .. } => values,
        }
    }

    fn levels(&self) -> (u64, u64) {
        (16, 24)
    }

    fn dropout(&self) -> f64 {
        self.recurrent_dropout
    }

    fn forward(&self, x: &Tensor, cx: &Cx<'_>) -> Result<Tensor> {
        let drop = cx.dropout_mask(x.dims()[0], self.hidden, self.recurrent_dropout, x)?;
        let run = recurrent::Run { activation: self.activation, sequences: self.return_sequences, dropout: drop.as_ref(), table: cx.table };
        let weights = (cx.param(0), cx.param(1), cx.param(2), cx.param(3));
        if LSTM {
            recurrent::lstm(x, weights, self.hidden, &run)
        } else {
            recurrent::gru(x, weights, self.hidden, &run)
        }
    }

    fn autocast(&self, _: Part) -> Autocast {
        Autocast::Low
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::HalfTensors
    }

    /// A relu cell has nothing to bound its state: it grows through the recurrence until it
    /// overflows, and inf − inf or 0 · inf in the next step's gates make NaN.
    fn explain_forward(&self, _: Part, f: &Facts<'_>) -> Explained {
        (self.activation == RnnActivation::Relu && f.read.infinite + f.read.nan == 0).then(|| {
            let p = self.recurrent_dropout;
            let dropout = if p > 0.0 { format!(", and recurrent dropout scales the kept units by 1/(1 − {}) = {}, raising that gain", crate::human(p), crate::human(1.0 / (1.0 - p))) } else { String::new() };
            let dt: &str = f.dtype.into();
            (Rule::Overflow, format!("the inputs are finite, but a relu cell's state is unbounded: fed back through the recurrent weights, it grows step after step past {dt}'s largest value {}{dropout}; tanh bounds it", crate::human(f.lim.max)))
        })
    }

    fn explain_backward(&self, _: &Facts<'_>) -> Explained {
        None
    }

    fn explain_zeros(&self, _: usize, _: usize) -> Explained {
        None
    }

    /// `repro.py`'s `Gated`, reading the layer's table (`spec`) for its settings.
    fn torch(&self) -> Torch {
        Torch::Module(format!("(Gated({:?}, width, spec, name), {})", self.kind(), self.hidden))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{plan, DTypeName, InShape, Layer, ModelSpec};

    fn lstm(hidden: usize, return_sequences: bool) -> Lstm {
        Lstm { hidden, return_sequences, activation: RnnActivation::Tanh, recurrent_dropout: 0.0, init: None }
    }

    #[test]
    fn gated_cells_declare_gates_times_hidden_and_return_the_last_state_or_every_one() {
        let seq = InShape { features: 2, seq_len: Some(5), vocab: None, image: None };
        let spec = |layer| ModelSpec { init: Init::Torch, layers: vec![layer], init_scale: 1.0, code: None, onnx: None };
        let p = plan(&spec(Layer::Lstm(lstm(3, false))), seq).unwrap();
        let got: Vec<_> = p.params.iter().map(|p| (p.name.as_str(), p.shape.clone(), p.role, p.torch_fan)).collect();
        assert_eq!(
            got,
            [
                ("layers.0.lstm.weight_ih", vec![2, 12], Role::Weight, 3),
                ("layers.0.lstm.weight_hh", vec![3, 12], Role::Recurrent, 3),
                ("layers.0.lstm.bias_ih", vec![12], Role::ForgetBias, 3),
                ("layers.0.lstm.bias_hh", vec![12], Role::Bias, 3),
            ]
        );
        assert_eq!(p.out, Shape::Flat(3));
        let gru = Gru { hidden: 4, return_sequences: true, activation: RnnActivation::Relu, recurrent_dropout: 0.0, init: None };
        let p = plan(&spec(Layer::Gru(gru.clone())), seq).unwrap();
        assert_eq!((p.params[0].shape.clone(), p.params[2].role, p.out), (vec![2, 12], Role::Bias, Shape::Seq { len: 5, width: 4 }));
        // Per step: 3 gates × 3 values × 4 hidden = 36 values over 5 steps, beside the output's 20.
        assert_eq!(gru.held(seq.shape(), p.out, 20), 20 + 36 * 5);
        assert_eq!(lstm(3, false).held(seq.shape(), Shape::Flat(3), 3), 3 + 36 * 5);
        assert!(plan(&spec(Layer::Gru(Gru { hidden: 0, ..gru })), seq).unwrap_err().1.contains("`hidden` must be at least 1"));
        let flat = InShape { seq_len: None, ..seq };
        assert_eq!(plan(&spec(Layer::Lstm(lstm(3, false))), flat).unwrap_err().1, "a lstm layer needs sequence input (batch, seq, width), and gets (batch, 2)");
    }

    #[test]
    fn a_recurrent_dropout_outside_0_to_1_is_refused_with_its_key() {
        let bad = Lstm { recurrent_dropout: 1.0, init: Some(Init::Normal { std: -1.0 }), ..lstm(2, false) };
        assert_eq!(bad.check(), vec![("recurrent_dropout", "must be in [0, 1), got 1".to_string()), ("init.std", "must be a finite number ≥ 0, got -1".to_string())]);
        assert_eq!(lstm(2, false).check(), Vec::new());
    }

    #[test]
    fn a_relu_cell_overflow_names_the_unbounded_state_and_the_dropout_gain() {
        let f = Facts::at(1.0, f64::NAN, DTypeName::F16);
        assert_eq!(lstm(2, false).explain_forward(Part::Whole, &f), None, "tanh bounds the state");
        let relu = Gru { hidden: 2, return_sequences: false, activation: RnnActivation::Relu, recurrent_dropout: 0.5, init: None };
        let (rule, reason) = relu.explain_forward(Part::Whole, &f).unwrap();
        assert_eq!(rule, Rule::Overflow);
        // f16's largest value is 65504 (torch.finfo(torch.float16).max); 1/(1 − 0.5) = 2.
        assert!(reason.contains("past f16's largest value 65504") && reason.contains("1/(1 − 0.5) = 2"), "{reason}");
        let bad = Facts { read: super::super::Read { infinite: 1, ..f.read }, ..f };
        assert_eq!(relu.explain_forward(Part::Whole, &bad), None, "an input already non-finite is not the cell's");
        assert_eq!(relu.torch(), Torch::Module("(Gated(\"gru\", width, spec, name), 2)".into()));
    }
}
