//! `rnn`: the Elman RNN (Keras `SimpleRNN`, `torch.nn.RNN` with tanh) over a sequence,
//! returning its last hidden state. The kernel is `run::model::recurrent::rnn`; the gated
//! cells are in `gated.rs`.

use candle_core::Tensor;

use super::{init_problems, Autocast, Cx, Explained, Facts, Op, Rounding, Torch};
use crate::error::Result;
use crate::scenario::{Init, Part, Planner, Role, Shape};

/// Elman RNN with tanh; returns the last hidden state (Keras SimpleRNN, torch nn.RNN).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Rnn {
    /// Hidden size.
    pub hidden: usize,
    /// Override of the model's init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Init>,
}

impl Op for Rnn {
    fn check(&self) -> Vec<(&'static str, String)> {
        init_problems(self.init.as_ref())
    }

    fn plan(&self, p: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        super::sequence("rnn", input)?;
        if self.hidden == 0 {
            return Err("`hidden` must be at least 1".into());
        }
        let (width, h) = (input.width(), self.hidden);
        // PyTorch draws every RNN parameter from U(±1/sqrt(hidden)).
        p.param("weight_ih", vec![width, h], Role::Weight, (width, h), h, self.init);
        p.param("weight_hh", vec![h, h], Role::Recurrent, (h, h), h, self.init);
        p.param("bias_ih", vec![h], Role::Bias, (h, h), h, self.init);
        p.param("bias_hh", vec![h], Role::Bias, (h, h), h, self.init);
        Ok(Shape::Flat(h))
    }

    fn held(&self, _: Shape, _: Shape, values: u128) -> u128 {
        values
    }

    fn levels(&self) -> (u64, u64) {
        (16, 6)
    }

    fn dropout(&self) -> f64 {
        0.0
    }

    fn forward(&self, x: &Tensor, cx: &Cx<'_>) -> Result<Tensor> {
        crate::run::model::recurrent::rnn(x, (cx.param(0), cx.param(1), cx.param(2), cx.param(3)), cx.table)
    }

    fn autocast(&self, _: Part) -> Autocast {
        Autocast::Low
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::HalfTensors
    }

    fn explain_forward(&self, _: Part, f: &Facts<'_>) -> Explained {
        super::linear::overflow(f)
    }

    fn explain_backward(&self, f: &Facts<'_>) -> Explained {
        super::linear::backward_overflow(f)
    }

    fn explain_zeros(&self, _: usize, _: usize) -> Explained {
        None
    }

    fn torch(&self) -> Torch {
        Torch::Module(format!("(Rnn(width, {h}), {h})", h = self.hidden))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{plan, InShape, ModelSpec};

    fn planned(layer: crate::scenario::Layer, input: InShape) -> std::result::Result<crate::scenario::Plan, (String, String)> {
        plan(&ModelSpec { init: Init::Torch, layers: vec![layer], init_scale: 1.0, code: None, onnx: None }, input)
    }

    #[test]
    fn an_rnn_declares_its_four_parameters_with_the_hidden_size_as_torch_fan() {
        let seq = InShape { features: 3, seq_len: Some(5), vocab: None, image: None };
        let p = planned(crate::scenario::Layer::Rnn(Rnn { hidden: 2, init: None }), seq).unwrap();
        let got: Vec<_> = p.params.iter().map(|p| (p.name.as_str(), p.shape.clone(), p.role, p.torch_fan)).collect();
        assert_eq!(
            got,
            [
                ("layers.0.rnn.weight_ih", vec![3, 2], Role::Weight, 2),
                ("layers.0.rnn.weight_hh", vec![2, 2], Role::Recurrent, 2),
                ("layers.0.rnn.bias_ih", vec![2], Role::Bias, 2),
                ("layers.0.rnn.bias_hh", vec![2], Role::Bias, 2),
            ]
        );
        assert_eq!(p.out, Shape::Flat(2));
        let err = |layer, input| planned(layer, input).unwrap_err().1;
        assert!(err(crate::scenario::Layer::Rnn(Rnn { hidden: 0, init: None }), seq).contains("`hidden` must be at least 1"));
        let flat = InShape { seq_len: None, ..seq };
        assert_eq!(err(crate::scenario::Layer::Rnn(Rnn { hidden: 2, init: None }), flat), "a rnn layer needs sequence input (batch, seq, width), and gets (batch, 3)");
        let image = InShape { features: 16, seq_len: None, vocab: None, image: Some((1, 4, 4)) };
        assert!(err(crate::scenario::Layer::Rnn(Rnn { hidden: 2, init: None }), image).contains("put a flatten layer first"));
    }

    #[test]
    fn an_rnn_overflow_is_the_input_product_and_its_export_is_the_written_out_cell() {
        // f32's largest value is 3.4028235e38 (torch.finfo(torch.float32).max).
        let dims = [1, 2, 4];
        let f = Facts { index: 5, dims: &dims, read: super::super::Read { infinite: 0, nan: 0, min: -1e20, max: 3e20 }, ..Facts::at(3e20, f64::NAN, crate::scenario::DTypeName::F32) };
        let (rule, reason) = Rnn { hidden: 2, init: None }.explain_forward(Part::Whole, &f).unwrap();
        assert_eq!(rule, super::super::Rule::Overflow);
        assert!(reason.contains("summed over 4 inputs") && reason.contains("in row 1"), "{reason}");
        assert_eq!(Rnn { hidden: 7, init: None }.torch(), Torch::Module("(Rnn(width, 7), 7)".into()));
        assert_eq!(Rnn { hidden: 1, init: Some(Init::Uniform { bound: f64::NAN }) }.check(), vec![("init.bound", "must be a finite number ≥ 0, got NaN".to_string())]);
    }
}
