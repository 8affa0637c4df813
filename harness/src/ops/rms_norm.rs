//! `rms_norm`: `x / sqrt(mean(x²) + eps) · weight` over the last dimension
//! (`torch.nn.RMSNorm`), computed in f32 for half types and under autocast. The kernel is
//! `run::model::norm::rms_norm`.

use candle_core::Tensor;

use super::{positive, Autocast, Cx, Op, Rounding, Torch};
use crate::error::Result;
use crate::scenario::{Part, Planner, Role, Shape};

/// RMS normalisation over the last dimension with a learnable scale (`torch.nn.RMSNorm`):
/// `x / sqrt(mean(x²) + eps) · weight`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct RmsNorm {
    /// Epsilon; by default the machine epsilon of the type it computes in (f32's for f16 and bf16), as PyTorch's `eps=None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<f64>,
}

impl Op for RmsNorm {
    fn check(&self) -> Vec<(&'static str, String)> {
        self.eps.and_then(|e| positive("eps", e)).into_iter().collect()
    }

    fn plan(&self, p: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        super::not_images("rms_norm", input)?;
        let width = input.width();
        p.param("weight", vec![width], Role::Gain, (width, width), width, None);
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
        crate::run::model::norm::rms_norm(x, cx.param(0), self.eps)
    }

    fn autocast(&self, _: Part) -> Autocast {
        Autocast::F32
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::Outside
    }

    super::undiagnosed!();

    fn torch(&self) -> Torch {
        let eps = self.eps.map_or_else(|| "None".to_string(), super::py);
        Torch::Module(format!("(nn.RMSNorm(width, eps={eps}), width)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{plan, InShape, Init, Layer, ModelSpec};

    #[test]
    fn an_rms_norm_has_one_scale_over_the_width_and_a_positive_eps_or_pytorchs_default() {
        let flat = InShape { features: 5, seq_len: None, vocab: None, image: None };
        let p = plan(&ModelSpec { init: Init::Torch, layers: vec![Layer::RmsNorm(RmsNorm { eps: None })], init_scale: 1.0, code: None, onnx: None }, flat).unwrap();
        assert_eq!((p.params.len(), p.params[0].name.as_str(), p.params[0].shape.clone(), p.params[0].role), (1, "layers.0.rms_norm.weight", vec![5], Role::Gain));
        assert_eq!(p.out, Shape::Flat(5));
        assert_eq!(RmsNorm { eps: Some(-1e-6) }.check(), vec![("eps", "must be a positive finite number, got -0.000001".to_string())]);
        assert_eq!(RmsNorm { eps: None }.check(), Vec::new());
        // eps=None is PyTorch's machine epsilon of the type it computes in.
        assert_eq!(RmsNorm { eps: None }.torch(), Torch::Module("(nn.RMSNorm(width, eps=None), width)".into()));
        assert_eq!(RmsNorm { eps: Some(1e-6) }.torch(), Torch::Module("(nn.RMSNorm(width, eps=1e-6), width)".into()));
    }
}
