//! `max_pool2d` and `avg_pool2d`: the maximum or mean of each `kernel × kernel` window of an
//! image, windows side by side (stride = kernel; rows and columns past the last whole window
//! are dropped, as PyTorch's floor mode does). The kernel, PyTorch's CPU `max_pool2d` and
//! `avg_pool2d` numerics in one pass each way, is `run::kernel::pool` (through
//! `run::model::conv::pool2d`).

use candle_core::Tensor;

use super::{Autocast, Cx, Op, Rounding, Torch};
use crate::error::Result;
use crate::scenario::{Part, Planner, Shape};

/// The maximum of each `kernel × kernel` window, windows side by side (`torch.nn.MaxPool2d(kernel)`;
/// rows and columns past the last whole window are dropped, as PyTorch's floor mode does).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct MaxPool2d {
    /// Window size (and stride).
    pub kernel: usize,
}

/// The mean of each `kernel × kernel` window (`torch.nn.AvgPool2d(kernel)`), as `max_pool2d`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct AvgPool2d {
    /// Window size (and stride).
    pub kernel: usize,
}

/// Writes the `Op` of a pooling whose kernel is `run::model::conv::pool2d` with `max` set or not.
macro_rules! pool2d_op {
    ($ty:ident, $kind:literal, $max:literal, $module:literal) => {
        impl Op for $ty {
            fn check(&self) -> Vec<(&'static str, String)> {
                Vec::new()
            }

            fn plan(&self, _: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
                plan($kind, self.kernel, input)
            }

            /// The output: the kernel reads the input in place, and its backward recomputes
            /// each window's pick from the input rather than keeping indices.
            fn held(&self, _: Shape, _: Shape, values: u128) -> u128 {
                values
            }

            fn levels(&self) -> (u64, u64) {
                (4, 0)
            }

            fn dropout(&self) -> f64 {
                0.0
            }

            fn forward(&self, x: &Tensor, _: &Cx<'_>) -> Result<Tensor> {
                crate::run::model::conv::pool2d(x, self.kernel, $max)
            }

            fn autocast(&self, _: Part) -> Autocast {
                Autocast::Same
            }

            fn rounding(&self, _: Part) -> Rounding {
                Rounding::Outside
            }

            super::undiagnosed!();

            fn torch(&self) -> Torch {
                Torch::Module(format!(concat!("(nn.", $module, "({}), width)"), self.kernel))
            }
        }
    };
}

pool2d_op!(MaxPool2d, "max_pool2d", true, "MaxPool2d");
pool2d_op!(AvgPool2d, "avg_pool2d", false, "AvgPool2d");

/// The pooled image, or why `input` cannot be pooled by `kernel` (`kind` names the layer).
fn plan(kind: &str, kernel: usize, input: Shape) -> std::result::Result<Shape, String> {
    let Shape::Image { channels, height, width: w } = input else {
        return Err(format!("a {kind} layer needs images (data.image), and gets {}", input.describe()));
    };
    if kernel == 0 || kernel > height || kernel > w {
        return Err(format!("`kernel` = {kernel} must be between 1 and the image's {height} × {w}"));
    }
    Ok(Shape::Image { channels, height: height / kernel, width: w / kernel })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{plan as plan_model, InShape, Init, Layer, ModelSpec};

    fn planned(layer: Layer, input: InShape) -> std::result::Result<crate::scenario::Plan, (String, String)> {
        plan_model(&ModelSpec { init: Init::Torch, layers: vec![layer], init_scale: 1.0, code: None, onnx: None }, input)
    }

    #[test]
    fn windows_tile_the_image_and_the_rest_is_dropped() {
        // PyTorch's floor mode: a (2, 7, 5) image pooled by 3 is (2, 2, 1), and no parameters.
        let image = InShape { features: 70, seq_len: None, vocab: None, image: Some((2, 7, 5)) };
        for layer in [Layer::MaxPool2d(MaxPool2d { kernel: 3 }), Layer::AvgPool2d(AvgPool2d { kernel: 3 })] {
            let p = planned(layer, image).unwrap();
            assert_eq!((p.out, p.params.len()), (Shape::Image { channels: 2, height: 2, width: 1 }, 0));
        }
        assert_eq!(planned(Layer::MaxPool2d(MaxPool2d { kernel: 6 }), image).unwrap_err().1, "`kernel` = 6 must be between 1 and the image's 7 × 5");
        assert_eq!(planned(Layer::AvgPool2d(AvgPool2d { kernel: 0 }), image).unwrap_err().1, "`kernel` = 0 must be between 1 and the image's 7 × 5");
        let flat = InShape { features: 4, seq_len: None, vocab: None, image: None };
        assert_eq!(planned(Layer::AvgPool2d(AvgPool2d { kernel: 2 }), flat).unwrap_err().1, "a avg_pool2d layer needs images (data.image), and gets (batch, 4)");
        // The output's values alone: the kernel reads the input in place.
        let (input, output) = (image.shape(), Shape::Image { channels: 2, height: 2, width: 1 });
        assert_eq!(MaxPool2d { kernel: 3 }.held(input, output, 4), 4);
        assert_eq!(AvgPool2d { kernel: 3 }.torch(), Torch::Module("(nn.AvgPool2d(3), width)".into()));
    }
}
