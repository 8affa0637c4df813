//! `layer_norm`: normalisation over the last dimension with a learnable gain and shift
//! (`torch.nn.LayerNorm`, biased variance), computed in f32 for half types and under
//! autocast. The kernel is `run::model::norm::layer_norm`.

use candle_core::Tensor;

use super::{Autocast, Cx, Op, Rounding, Torch};
use crate::error::Result;
use crate::scenario::{Part, Planner, Role, Shape};

/// Layer normalisation over the last dimension with learnable scale and shift.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct LayerNorm {
    /// Variance epsilon.
    #[serde(default = "default_eps")]
    pub eps: f64,
}

/// PyTorch's default variance epsilon of `nn.LayerNorm` and `nn.BatchNorm1d`: 1e-5.
pub(crate) fn default_eps() -> f64 {
    1e-5
}

impl Op for LayerNorm {
    fn check(&self) -> Vec<(&'static str, String)> {
        // Its eps is the plan's check (keyed by the layer), as it always was.
        Vec::new()
    }

    fn plan(&self, p: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        super::not_images("layer_norm", input)?;
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(format!("layer norm `eps` must be a positive finite number, got {}", self.eps));
        }
        let width = input.width();
        p.param("weight", vec![width], Role::Gain, (width, width), width, None);
        p.param("bias", vec![width], Role::Shift, (width, width), width, None);
        Ok(input)
    }

    fn held(&self, _: Shape, _: Shape, values: u128) -> u128 {
        values
    }

    fn levels(&self) -> (u64, u64) {
        (16, 0)
    }

    fn dropout(&self) -> f64 {
        0.0
    }

    fn forward(&self, x: &Tensor, cx: &Cx<'_>) -> Result<Tensor> {
        crate::run::model::norm::layer_norm(x, cx.param(0), cx.param(1), self.eps)
    }

    fn autocast(&self, _: Part) -> Autocast {
        Autocast::F32
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::Outside
    }

    super::undiagnosed!();

    fn torch(&self) -> Torch {
        Torch::Module(format!("(nn.LayerNorm(width, eps={}), width)", super::py(self.eps)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{plan, InShape, Init, Layer, ModelSpec};

    #[test]
    fn a_layer_norm_keeps_its_shape_with_a_gain_and_shift_over_the_width_and_refuses_a_bad_eps() {
        let planned = |eps: f64, input| plan(&ModelSpec { init: Init::Torch, layers: vec![Layer::LayerNorm(LayerNorm { eps })], init_scale: 1.0, code: None, onnx: None }, input);
        let seq = InShape { features: 3, seq_len: Some(4), vocab: None, image: None };
        let p = planned(1e-5, seq).unwrap();
        let got: Vec<_> = p.params.iter().map(|p| (p.name.as_str(), p.shape.clone(), p.role)).collect();
        assert_eq!(got, [("layers.0.layer_norm.weight", vec![3], Role::Gain), ("layers.0.layer_norm.bias", vec![3], Role::Shift)]);
        assert_eq!(p.out, Shape::Seq { len: 4, width: 3 });
        assert_eq!(planned(0.0, seq).unwrap_err(), ("layers.0".to_string(), "layer norm `eps` must be a positive finite number, got 0".to_string()));
        let image = InShape { features: 16, seq_len: None, vocab: None, image: Some((1, 4, 4)) };
        assert!(planned(1e-5, image).unwrap_err().1.contains("put a flatten layer first"));
        assert_eq!(LayerNorm { eps: 1e-5 }.torch(), Torch::Module("(nn.LayerNorm(width, eps=1e-5), width)".into()));
        // The default is PyTorch's.
        let l: LayerNorm = toml::from_str("").unwrap();
        assert_eq!(l.eps, 1e-5);
    }
}
