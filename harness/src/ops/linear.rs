//! `linear`: `x W + b` per position, as `torch.nn.Linear`, with `W` stored `(in, out)`
//! like a Keras kernel, so the forward pass needs no transpose and its gradient arrives
//! contiguous. The kernels are `run::kernel::linear`.

use candle_core::{DType, Tensor};

use super::{init_problems, Autocast, Cx, Explained, Facts, Op, Rounding, Rule, Torch};
use crate::error::Result;
use crate::scenario::{Init, Part, Planner, Role, Shape};

/// Fully connected: `x W + b`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    /// Output width.
    pub out: usize,
    /// Override of the model's init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Init>,
}

impl Op for Linear {
    fn check(&self) -> Vec<(&'static str, String)> {
        init_problems(self.init.as_ref())
    }

    fn plan(&self, p: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        super::not_images("linear", input)?;
        if self.out == 0 {
            return Err("`out` must be at least 1".into());
        }
        let (width, out) = (input.width(), self.out);
        p.param("weight", vec![width, out], Role::Weight, (width, out), width, self.init);
        p.param("bias", vec![out], Role::Bias, (width, out), width, self.init);
        Ok(match input {
            Shape::Seq { len, .. } => Shape::Seq { len, width: out },
            _ => Shape::Flat(out),
        })
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
        match cx.round {
            Some(low) => crate::run::kernel::linear::linear_rounded(x, cx.param(0), cx.param(1), low),
            None => linear(x, cx.param(0), cx.param(1)),
        }
    }

    fn autocast(&self, _: Part) -> Autocast {
        Autocast::Low
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::Own
    }

    fn explain_forward(&self, _: Part, f: &Facts<'_>) -> Explained {
        overflow(f)
    }

    fn explain_backward(&self, f: &Facts<'_>) -> Explained {
        backward_overflow(f)
    }

    fn explain_zeros(&self, _: usize, _: usize) -> Explained {
        None
    }

    fn torch(&self) -> Torch {
        Torch::Module(format!("(nn.Linear(width, {o}), {o})", o = self.out))
    }
}

/// `x W + b` per position: `x` is `(rows, in)` or `(batch, seq, in)`, as `torch.nn.Linear`.
/// One fused op on the CPU in f32 and f64 (`kernel::linear`), and for f16 and bf16 the same
/// op in f32 with the result rounded once, as PyTorch's CPU `addmm` accumulates half types in
/// f32 (its backward too: the gradients arrive and leave rounded to the half type); Candle's
/// product and broadcast add on other devices.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if crate::run::kernel::handles(x) {
        return crate::run::kernel::linear::linear(x, w, b);
    }
    if x.device().is_cpu() && matches!(x.dtype(), DType::F16 | DType::BF16) {
        return crate::run::opmath::all_in_f32(&[x, w, b], |t| crate::run::kernel::linear::linear(&t[0], &t[1], &t[2]));
    }
    match *x.dims() {
        [batch, seq, width] => Ok(crate::run::kernel::bias::bias_add(&x.reshape((batch * seq, width))?.matmul(w)?, b)?.reshape((batch, seq, w.dims()[1]))?),
        _ => crate::run::kernel::bias::bias_add(&x.matmul(w)?, b),
    }
}

/// A matrix product with finite inputs overflowed the dtype (a linear layer's, an RNN's input
/// product): the largest input magnitude, the row and the number of inputs summed.
pub(crate) fn overflow(f: &Facts<'_>) -> Explained {
    (f.read.infinite + f.read.nan == 0).then(|| {
        let cols = f.dims.last().copied().unwrap_or(1).max(1);
        let (row, m) = (f.index / cols, f.read.max.abs().max(f.read.min.abs()));
        let dt: &str = f.dtype.into();
        (
            Rule::Overflow,
            format!("a matrix product overflows {dt} in row {row}: inputs up to {} times weights, summed over {cols} inputs, exceed its largest value {}", crate::human(m), crate::human(f.lim.max)),
        )
    })
}

/// The backward matrix product (gradient × weights) overflowed with a finite arriving gradient.
pub(crate) fn backward_overflow(f: &Facts<'_>) -> Explained {
    (f.read.infinite + f.read.nan == 0).then(|| {
        let (m, dt) = (f.read.max.abs().max(f.read.min.abs()), <&str>::from(f.dtype));
        (
            Rule::Overflow,
            format!("the backward matrix product (gradient × weights) overflows {dt}: gradients up to {} times the weights exceed its largest value {}", crate::human(m), crate::human(f.lim.max)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{plan, DTypeName, InShape, Layer, ModelSpec};

    fn planned(out: usize, input: InShape) -> std::result::Result<crate::scenario::Plan, (String, String)> {
        plan(&ModelSpec { init: Init::Torch, layers: vec![Layer::Linear(Linear { out, init: None })], init_scale: 1.0, code: None, onnx: None }, input)
    }

    #[test]
    fn a_linear_layer_maps_the_last_dimension_and_declares_weight_and_bias() {
        let flat = InShape { features: 3, seq_len: None, vocab: None, image: None };
        let p = planned(4, flat).unwrap();
        let shapes: Vec<_> = p.params.iter().map(|p| (p.name.as_str(), p.shape.clone(), p.fan_in, p.torch_fan)).collect();
        assert_eq!(shapes, [("layers.0.linear.weight", vec![3, 4], 3, 3), ("layers.0.linear.bias", vec![4], 3, 3)]);
        assert_eq!(p.out, Shape::Flat(4));
        // Per position over a sequence, as torch.nn.Linear.
        assert_eq!(planned(2, InShape { features: 3, seq_len: Some(5), ..flat }).unwrap().out, Shape::Seq { len: 5, width: 2 });
        assert!(planned(0, flat).unwrap_err().1.contains("`out` must be at least 1"));
        let image = InShape { features: 16, seq_len: None, vocab: None, image: Some((1, 4, 4)) };
        assert!(planned(2, image).unwrap_err().1.contains("put a flatten layer first"));
        assert_eq!(Linear { out: 1, init: Some(Init::Normal { std: -1.0 }) }.check(), vec![("init.std", "must be a finite number ≥ 0, got -1".to_string())]);
    }

    #[test]
    fn an_overflow_names_the_row_the_largest_input_and_the_width_summed() {
        // f32's largest value is 3.4028235e38 (torch.finfo(torch.float32).max).
        let dims = [2, 3];
        let f = Facts { index: 4, dims: &dims, read: super::super::Read { infinite: 0, nan: 0, min: -2e19, max: 1e19 }, ..Facts::at(1e19, f64::NAN, DTypeName::F32) };
        let (rule, reason) = Linear { out: 1, init: None }.explain_forward(Part::Whole, &f).unwrap();
        assert_eq!(rule, Rule::Overflow);
        assert!(reason.contains("in row 1") && reason.contains("summed over 3 inputs") && reason.contains(&format!("up to {} times", crate::human(2e19))), "{reason}");
        // An input already non-finite is not this op's overflow.
        let bad = Facts { read: super::super::Read { infinite: 1, ..f.read }, ..f };
        assert_eq!(Linear { out: 1, init: None }.explain_forward(Part::Whole, &bad), None);
    }
}
