//! `residual`: `x + f(x)`, a block of layers whose output is added to the block's input
//! (their shapes must match). The block's layers are nodes of their own, planned nested in
//! it (`layers.2.residual.layers.0.linear`, through [`Planner::block`]); the residual's own
//! node is the sum that closes it (`Part::Sum`), which reads the block's last output and,
//! second, the block's input. A sum of an f32 and a low-precision operand promotes to f32, as
//! PyTorch's type promotion does (autocast's `prepare` gives the sum the wider of its inputs'
//! dtypes, and rounds a shared low skip operand as it rounds a main input).

use candle_core::{DType, Tensor};

use super::{Autocast, Cx, Op, Rounding, Torch};
use crate::error::Result;
use crate::scenario::{Layer, Part, Planner, Shape, MAX_NESTING};

/// `x + f(x)`: the block's layers applied in order, added to the block's input.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Residual {
    /// The layers of `f`.
    pub layers: Vec<Layer>,
}

impl Op for Residual {
    fn check(&self) -> Vec<(&'static str, String)> {
        // Its layers are checked as layers of their own (`validate`), under `layers.{i}`.
        Vec::new()
    }

    fn plan(&self, p: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        if p.depth() >= MAX_NESTING {
            return Err(format!("residual blocks nest deeper than {MAX_NESTING} levels"));
        }
        let x = p.input();
        let (last, made) = p.block(&self.layers, x, input)?;
        if made != input {
            return Err(format!("a residual block must keep its input's shape: it takes {} and its layers make {}", input.describe(), made.describe()));
        }
        p.node(Part::Sum, "", &[last, x], input);
        Ok(input)
    }

    fn held(&self, _: Shape, _: Shape, values: u128) -> u128 {
        values
    }

    fn levels(&self) -> (u64, u64) {
        (8, 0)
    }

    fn dropout(&self) -> f64 {
        0.0
    }

    fn forward(&self, x: &Tensor, cx: &Cx<'_>) -> Result<Tensor> {
        match cx.part {
            // The skip operand plus the block's output; a block of no layers adds its input to itself.
            Part::Sum => match cx.others.first() {
                Some(skip) => promoted_sum(skip, x),
                None => Ok(x.clone()),
            },
            Part::Whole | Part::Scores | Part::Probs | Part::Mix => Err(super::unplanned(format!("a residual's {:?} node", cx.part))),
        }
    }

    fn autocast(&self, _: Part) -> Autocast {
        // On no list: the sum follows its operands (promoted to the wider).
        Autocast::Same
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::Outside
    }

    super::undiagnosed!();

    fn torch(&self) -> Torch {
        Torch::Module("(Residual(spec[\"layers\"], width, seq, name), width)".into())
    }
}

/// `a + b`, promoting to the wider dtype when they differ (PyTorch's type promotion).
pub(crate) fn promoted_sum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() == b.dtype() {
        return Ok((a + b)?);
    }
    let f32 = |t: &Tensor| crate::run::kernel::cast::cast(t, DType::F32);
    Ok((f32(a)? + f32(b)?)?)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::ops::linear::Linear;
    use crate::scenario::{plan, InShape, Init, Input, ModelSpec};

    fn spec(layers: Vec<Layer>) -> ModelSpec {
        ModelSpec { init: Init::Torch, layers, init_scale: 1.0, code: None, onnx: None }
    }

    #[test]
    fn the_sum_reads_the_block_and_its_input_and_holds_the_blocks_parameters() {
        let flat = InShape { features: 3, seq_len: None, vocab: None, image: None };
        let block = Layer::Residual(Residual { layers: vec![Layer::Linear(Linear { out: 3, init: None }), Layer::Tanh(Default::default())] });
        let p = plan(&spec(vec![Layer::Relu(Default::default()), block]), flat).unwrap();
        let names: Vec<_> = p.nodes.iter().map(|n| (n.name.as_str(), n.part)).collect();
        assert_eq!(names, [("layers.0.relu", Part::Whole), ("layers.1.residual.layers.0.linear", Part::Whole), ("layers.1.residual.layers.1.tanh", Part::Whole), ("layers.1.residual", Part::Sum)]);
        // x + f(x): the tanh's output, then the relu's (the block's input).
        assert_eq!(p.nodes[3].inputs, [Input::Node(2), Input::Node(0)]);
        // The sum's node spans the block's parameters (3·3 weights and 3 biases), as birth tracing walks them.
        assert_eq!((p.nodes[3].params.clone(), p.params[1].shape.clone()), (0..2, vec![3]));
        // An empty block adds its input to itself.
        let p = plan(&spec(vec![Layer::Residual(Residual { layers: Vec::new() })]), flat).unwrap();
        assert_eq!(p.nodes[0].inputs, [Input::Model, Input::Model]);
    }

    #[test]
    fn a_block_that_changes_the_shape_or_nests_too_deep_is_refused_at_its_key() {
        let flat = InShape { features: 4, seq_len: None, vocab: None, image: None };
        let inner = Layer::Residual(Residual { layers: vec![Layer::Linear(Linear { out: 0, init: None })] });
        // The nested linear's own error, at its own key.
        let (key, m) = plan(&spec(vec![Layer::Relu(Default::default()), Layer::Residual(Residual { layers: vec![Layer::Relu(Default::default()), inner] })]), flat).unwrap_err();
        assert_eq!((key.as_str(), m.as_str()), ("layers.1.layers.1.layers.0", "`out` must be at least 1"));
        let (key, m) = plan(&spec(vec![Layer::Residual(Residual { layers: vec![Layer::Linear(Linear { out: 2, init: None })] })]), flat).unwrap_err();
        assert_eq!((key.as_str(), m.as_str()), ("layers.0", "a residual block must keep its input's shape: it takes (batch, 4) and its layers make (batch, 2)"));
        let mut deep = Layer::Relu(Default::default());
        for _ in 0..=MAX_NESTING {
            deep = Layer::Residual(Residual { layers: vec![deep] });
        }
        let (key, m) = plan(&spec(vec![deep]), flat).unwrap_err();
        assert_eq!(key, format!("layers.0{}", ".layers.0".repeat(MAX_NESTING)));
        assert_eq!(m, format!("residual blocks nest deeper than {MAX_NESTING} levels"));
    }

    #[test]
    fn a_sum_of_a_half_and_an_f32_operand_promotes_to_f32() {
        // 1 + 2⁻¹¹ is not an f16: the promoted sum keeps it, an f16 sum would round it to 1.
        let dev = Device::Cpu;
        let a = Tensor::new(&[1.0f32], &dev).unwrap().to_dtype(DType::F16).unwrap();
        let b = Tensor::new(&[2f32.powi(-11)], &dev).unwrap();
        let s = promoted_sum(&a, &b).unwrap();
        assert_eq!((s.dtype(), s.to_vec1::<f32>().unwrap()[0]), (DType::F32, 1.0 + 2f32.powi(-11)));
        let halves = promoted_sum(&a, &b.to_dtype(DType::F16).unwrap()).unwrap();
        assert_eq!((halves.dtype(), halves.to_vec1::<half::f16>().unwrap()[0].to_f32()), (DType::F16, 1.0));
    }
}
