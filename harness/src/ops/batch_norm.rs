//! `batch_norm`: normalisation over the batch (`torch.nn.BatchNorm1d`, and per channel over
//! images as `BatchNorm2d`), batch statistics while training and running statistics in
//! evaluation. The running mean and variance are the node's state (`Cx::state`), made on
//! its first forward. The kernel is `run::model::norm::batch_norm`: in f32 and f64 on the
//! CPU one fused op each way (`run::kernel::batch_norm`), composed of Candle's ops elsewhere.

use candle_core::Tensor;

use super::{positive, Autocast, Cx, Explained, Facts, Op, Rounding, Rule, Torch};
use crate::error::Result;
use crate::run::model::norm::{batch_norm, Running};
use crate::scenario::{Part, Planner, Role, Shape};

/// Batch normalisation over the batch (`torch.nn.BatchNorm1d`): batch statistics while
/// training, running statistics in validation; the running variance is unbiased.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct BatchNorm {
    /// Variance epsilon.
    #[serde(default = "super::layer_norm::default_eps")]
    pub eps: f64,
    /// Weight of each batch in the running statistics.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
}

/// PyTorch's default momentum of `nn.BatchNorm1d`: 0.1.
fn default_momentum() -> f64 {
    0.1
}

impl Op for BatchNorm {
    fn check(&self) -> Vec<(&'static str, String)> {
        let momentum = (!(0.0..=1.0).contains(&self.momentum)).then(|| ("momentum", format!("must be in [0, 1], got {}", self.momentum)));
        positive("eps", self.eps).into_iter().chain(momentum).collect()
    }

    fn plan(&self, p: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        // Over features (BatchNorm1d), or per channel over images (BatchNorm2d).
        let n = match input {
            Shape::Flat(w) => w,
            Shape::Image { channels, .. } => channels,
            Shape::Seq { .. } | Shape::Tokens { .. } => return Err(format!("a batch_norm layer normalises (batch, features) or images, and gets {}: pool the sequence first", input.describe())),
        };
        p.param("weight", vec![n], Role::Gain, (n, n), input.width(), None);
        p.param("bias", vec![n], Role::Shift, (n, n), input.width(), None);
        Ok(input)
    }

    fn held(&self, _: Shape, _: Shape, values: u128) -> u128 {
        values
    }

    fn levels(&self) -> (u64, u64) {
        (32, 0)
    }

    fn dropout(&self) -> f64 {
        0.0
    }

    /// Batch norm with the node's running statistics, which start at PyTorch's mean 0 and
    /// variance 1 in the parameters' storage dtype on the first forward.
    fn forward(&self, x: &Tensor, cx: &Cx<'_>) -> Result<Tensor> {
        let mut state = cx.state.borrow_mut();
        if state.is_none() {
            *state = Some(Box::new(Running::new(cx.param(0).dims()[0], cx.storage, x.device())?));
        }
        let Some(running) = state.as_mut().and_then(|s| s.downcast_mut::<Running>()) else {
            return Err(candle_core::Error::Msg("batch norm without running statistics".into()).into());
        };
        batch_norm(x, cx.param(0), cx.param(1), running, self.eps, self.momentum, cx.training)
    }

    fn autocast(&self, _: Part) -> Autocast {
        Autocast::F32
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::Outside
    }

    /// In evaluation, a NaN from a finite input comes from the running variance (see [`running_nan`]).
    fn explain_forward(&self, _: Part, f: &Facts<'_>) -> Explained {
        running_nan(f)
    }

    fn explain_backward(&self, _: &Facts<'_>) -> Explained {
        None
    }

    fn explain_zeros(&self, _: usize, _: usize) -> Explained {
        None
    }

    fn torch(&self) -> Torch {
        Torch::Module(format!("(BatchNorm(width, {}, {}), width)", super::py(self.eps), super::py(self.momentum)))
    }
}

/// A NaN output in evaluation from a finite input: evaluation computes
/// `(x − running mean) / sqrt(running var + eps)` with statistics that are finite unless a
/// training batch made them so, and a finite input is flagged before it reaches them; a
/// training batch of one row is the one that makes the unbiased variance `0 / (1 − 1)` = NaN.
fn running_nan(f: &Facts<'_>) -> Explained {
    (!f.training && f.x.is_finite() && f.read.infinite + f.read.nan == 0).then(|| {
        (
            Rule::DivisionByZero,
            format!(
                "its input is finite ({}), so the NaN is in the running statistics evaluation divides by: a training batch of one row makes the unbiased running variance Σ(x − mean)² / (n − 1) = 0/0 = NaN (PyTorch refuses such a batch: \"Expected more than 1 value per channel when training\"); drop_last, or a batch size that leaves no single-row batch, avoids it",
                crate::human(f.x)
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use candle_core::{DType, Device};

    use super::*;
    use crate::ops::{Inner, Params, State};
    use crate::scenario::{plan, InShape, Init, Layer, ModelSpec};

    #[test]
    fn a_batch_norm_normalises_features_or_image_channels_and_refuses_sequences() {
        let planned = |input| plan(&ModelSpec { init: Init::Torch, layers: vec![Layer::BatchNorm(BatchNorm { eps: 1e-5, momentum: 0.1 })], init_scale: 1.0, code: None, onnx: None }, input);
        let p = planned(InShape { features: 3, seq_len: None, vocab: None, image: None }).unwrap();
        let got: Vec<_> = p.params.iter().map(|p| (p.name.as_str(), p.shape.clone(), p.role)).collect();
        assert_eq!(got, [("layers.0.batch_norm.weight", vec![3], Role::Gain), ("layers.0.batch_norm.bias", vec![3], Role::Shift)]);
        let image = planned(InShape { features: 32, seq_len: None, vocab: None, image: Some((2, 4, 4)) }).unwrap();
        assert_eq!((image.params[0].shape.clone(), image.out), (vec![2], Shape::Image { channels: 2, height: 4, width: 4 }));
        let err = planned(InShape { features: 3, seq_len: Some(4), vocab: None, image: None }).unwrap_err().1;
        assert!(err.contains("pool the sequence first"), "{err}");
        let bad = BatchNorm { eps: 0.0, momentum: 1.5 };
        assert_eq!(bad.check(), vec![("eps", "must be a positive finite number, got 0".to_string()), ("momentum", "must be in [0, 1], got 1.5".to_string())]);
        assert_eq!(BatchNorm { eps: 1e-5, momentum: 0.1 }.torch(), Torch::Module("(BatchNorm(width, 1e-5, 0.1), width)".into()));
    }

    #[test]
    fn its_running_statistics_are_made_on_the_first_forward_and_kept_for_evaluation() {
        let d = Device::Cpu;
        let x = Tensor::new(&[[1.0f64, -2.0], [3.0, 0.5], [-1.0, 4.0]], &d).unwrap();
        let params = [Tensor::new(&[1.5f64, 0.5], &d).unwrap(), Tensor::new(&[0.1f64, -0.2], &d).unwrap()];
        let (dropout, state): (_, State) = (RefCell::new(None), RefCell::new(None));
        let op = BatchNorm { eps: 1e-5, momentum: 0.1 };
        let run = |training| {
            let (part, params, round, inner, storage) = (Part::Whole, Params::Prepared(&params), None, Inner::Off, DType::F64);
            let cx = Cx { part, params, others: &[], mask: None, training, round, inner, storage, dropout: &dropout, state: &state, table: None };
            op.forward(&x, &cx).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
        };
        let close = |a: Vec<f64>, b: &[f64]| assert!(a.iter().zip(b).all(|(a, b)| (a - b).abs() < 1e-13), "{a:?} vs {b:?}");
        assert!(state.borrow().is_none());
        // Evaluation before any training reads PyTorch's start, mean 0 and variance 1: x·w/sqrt(1 + 1e-5) + b.
        let s = (1.0f64 + 1e-5).sqrt();
        close(run(false), &[1.5 / s + 0.1, -1.0 / s - 0.2, 4.5 / s + 0.1, 0.25 / s - 0.2, -1.5 / s + 0.1, 2.0 / s - 0.2]);
        assert!(state.borrow().is_some(), "made on the first forward");
        // PyTorch 2.15, f64: torch.batch_norm(x, w, b, rm, rv, True, 0.1, 1e-5, False), then again with False.
        close(run(true), &[0.09999999999999998, -0.7756921669148471, 1.937113862502121, -0.2677284902252761, -1.7371138625021207, 0.4434206571401232]);
        close(run(false), &[1.2840237721356618, -0.9746193157231444, 3.9151877102149104, -0.045076136855371124, -1.3471401659435867, 1.2562843135595114]);
    }

    #[test]
    fn a_nan_in_evaluation_from_a_finite_input_is_the_single_row_running_variance() {
        // One training row: Σ(x − mean)² = 0 over n − 1 = 0, so 0/0 = NaN in the running variance.
        let f = crate::ops::Facts { training: false, ..crate::ops::Facts::at(0.3, f64::NAN, crate::scenario::DTypeName::F32) };
        let (rule, reason) = BatchNorm { eps: 1e-5, momentum: 0.1 }.explain_forward(Part::Whole, &f).unwrap();
        assert_eq!(rule, crate::ops::Rule::DivisionByZero);
        assert!(reason.starts_with("its input is finite (0.3)") && reason.contains("(n − 1) = 0/0 = NaN"), "{reason}");
        // Training uses the batch's biased variance plus eps: no such rule there.
        assert_eq!(BatchNorm { eps: 1e-5, momentum: 0.1 }.explain_forward(Part::Whole, &crate::ops::Facts { training: true, ..f }), None);
    }
}
