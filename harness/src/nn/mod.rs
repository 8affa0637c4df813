//! Training-correct drop-ins for candle-nn's normalisation layers and softmax.
//!
//! candle-nn's fused `ops::layer_norm`, `ops::rms_norm` and `ops::softmax_last_dim` are built
//! without a backward, and `candle_nn::LayerNorm::forward` takes the fused path whenever its
//! input is contiguous and the layer has a bias (the default), `candle_nn::RmsNorm::forward`
//! whenever its input is contiguous: a model written with them never trains its norms, and
//! nothing below a norm gets a gradient through it (candle#2168; nanhunt reports it as the
//! finding `no_gradient`). The items here take the same arguments, so swapping the import is
//! the whole change, and are computed by nanhunt's registry kernels, with a backward and
//! PyTorch's numerics:
//!
//! ```
//! use nanhunt::candle_core::{DType, Device, Module, Tensor, Var};
//! use nanhunt::candle_nn::{VarBuilder, VarMap};
//! // was: use candle_nn::{layer_norm, LayerNorm};
//! use nanhunt::nn::layer_norm;
//!
//! let map = VarMap::new();
//! let ln = layer_norm(4, 1e-5, VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu).pp("ln"))?;
//! let x = Tensor::new(&[[1f32, 2.0, 3.0, 5.0]], &Device::Cpu)?;
//! let grads = ln.forward(&x)?.sqr()?.sum_all()?.backward()?;
//! assert!(grads.get(ln.weight()).is_some(), "the gain trains");
//! # Ok::<(), nanhunt::candle_core::Error>(())
//! ```

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, VarBuilder};

pub mod ops;

/// candle-nn's layer-norm settings, taken as they are.
pub use candle_nn::LayerNormConfig;

/// Layer norm over the last dimension (or, with `remove_mean` off, RMS norm), with a learnable
/// gain and an optional shift: `candle_nn::LayerNorm` with a backward on every path.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Option<Tensor>,
    remove_mean: bool,
    eps: f64,
}

impl LayerNorm {
    /// A layer norm with gain `weight` and shift `bias`.
    pub fn new(weight: Tensor, bias: Tensor, eps: f64) -> Self {
        LayerNorm { weight, bias: Some(bias), remove_mean: true, eps }
    }

    /// A layer norm with gain `weight` and no shift.
    pub fn new_no_bias(weight: Tensor, eps: f64) -> Self {
        LayerNorm { weight, bias: None, remove_mean: true, eps }
    }

    /// An RMS norm with scale `weight` (the mean is not removed).
    pub fn rms_norm(weight: Tensor, eps: f64) -> Self {
        LayerNorm { weight, bias: None, remove_mean: false, eps }
    }

    /// The gain.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The shift, if any.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The epsilon added to the variance.
    pub fn eps(&self) -> f64 {
        self.eps
    }

    /// Whether the mean is removed (a layer norm) or not (an RMS norm).
    pub fn remove_mean(&self) -> bool {
        self.remove_mean
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let eps = self.eps as f32;
        if !self.remove_mean {
            let y = ops::rms_norm(x, &self.weight, eps)?;
            return self.bias.as_ref().map_or(Ok(y.clone()), |b| y.broadcast_add(b));
        }
        match &self.bias {
            Some(b) => ops::layer_norm(x, &self.weight, b, eps),
            // A shift of zeros, a constant: nothing to train.
            None => ops::layer_norm(x, &self.weight, &self.weight.zeros_like()?, eps),
        }
    }
}

/// A layer norm of `size` under `vb` (`weight` at 1, and `bias` at 0 if `config.affine`), as
/// `candle_nn::layer_norm` makes it (its `gamma`/`beta` names are read too).
pub fn layer_norm<C: Into<LayerNormConfig>>(size: usize, config: C, vb: VarBuilder) -> Result<LayerNorm> {
    let config = config.into();
    let name = |names: [&'static str; 2]| names.into_iter().find(|n| vb.contains_tensor(n)).unwrap_or(names[0]);
    let weight = vb.get_with_hints(size, name(["weight", "gamma"]), Init::Const(1.0))?;
    let bias = if config.affine { Some(vb.get_with_hints(size, name(["bias", "beta"]), Init::Const(0.0))?) } else { None };
    Ok(LayerNorm { weight, bias, remove_mean: config.remove_mean, eps: config.eps })
}

/// A layer norm of `size` without a shift, as `candle_nn::layer_norm_no_bias`.
pub fn layer_norm_no_bias(size: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
    layer_norm(size, LayerNormConfig { eps, remove_mean: true, affine: false }, vb)
}

/// RMS norm over the last dimension with a learnable scale: `candle_nn::RmsNorm` with a backward.
#[derive(Clone, Debug)]
pub struct RmsNorm(LayerNorm);

impl RmsNorm {
    /// An RMS norm with scale `weight`.
    pub fn new(weight: Tensor, eps: f64) -> Self {
        RmsNorm(LayerNorm::rms_norm(weight, eps))
    }

    /// The layer norm (with `remove_mean` off) it is.
    pub fn into_inner(self) -> LayerNorm {
        self.0
    }

    /// The scale.
    pub fn weight(&self) -> &Tensor {
        self.0.weight()
    }

    /// The epsilon added to the mean square.
    pub fn eps(&self) -> f64 {
        self.0.eps()
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.0.forward(x)
    }
}

/// An RMS norm of `size` under `vb` (`weight` at 1), as `candle_nn::rms_norm` makes it.
pub fn rms_norm(size: usize, eps: f64, vb: VarBuilder) -> Result<RmsNorm> {
    Ok(RmsNorm(layer_norm(size, LayerNormConfig { eps, remove_mean: false, affine: false }, vb)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn vb(map: &VarMap) -> VarBuilder<'static> {
        VarBuilder::from_varmap(map, DType::F32, &Device::Cpu)
    }

    #[test]
    fn the_modules_make_candle_nns_parameters_and_every_one_gets_a_gradient() {
        let x = Tensor::new(&[[1f32, 2.0, 4.0], [0.5, -1.0, 3.0]], &Device::Cpu).unwrap();
        let map = VarMap::new();
        let ln = layer_norm(3, 1e-5, vb(&map).pp("ln")).unwrap();
        let rms = rms_norm(3, 1e-6, vb(&map).pp("rms")).unwrap();
        let plain = layer_norm_no_bias(3, 1e-5, vb(&map).pp("plain")).unwrap();
        let mut names: Vec<String> = map.data().lock().unwrap().keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["ln.bias", "ln.weight", "plain.weight", "rms.weight"]);
        let y = (ln.forward(&x).unwrap() + rms.forward(&x).unwrap() + plain.forward(&x).unwrap()).unwrap();
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in map.data().lock().unwrap().iter() {
            assert!(g.get(v.as_tensor()).is_some(), "{name} has no gradient");
        }
        // candle-nn's own LayerNorm, on the same contiguous input, gives its gain none.
        let theirs = candle_nn::LayerNorm::new(ln.weight().clone(), ln.bias().unwrap().clone(), 1e-5);
        let g = theirs.forward(&x).unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(g.get(ln.weight()).is_none(), "candle-nn's fused layer norm grew a backward: this module may be retired");
    }

    #[test]
    fn the_modules_compute_what_the_functions_do() {
        // At gain 1 and shift 0, row (1, 2, 4): mean 7/3, centred (−4/3, −1/3, 5/3), biased
        // variance (16 + 1 + 25)/27 = 14/9, so the first value is −(4/3)/√(14/9 + 1e-5) = −1.06904.
        let x = Tensor::new(&[[1f32, 2.0, 4.0]], &Device::Cpu).unwrap();
        let map = VarMap::new();
        let y = layer_norm(3, 1e-5, vb(&map)).unwrap().forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert!((f64::from(y[0][0]) + (4.0 / 3.0) / (14.0f64 / 9.0 + 1e-5).sqrt()).abs() < 1e-6, "{y:?}");
        // RMS of (1, 2, 4) is √7: the row becomes (1, 2, 4)/√(7 + 1e-6).
        let r = RmsNorm::new(Tensor::ones(3, DType::F32, &Device::Cpu).unwrap(), 1e-6).forward(&x).unwrap().to_vec2::<f32>().unwrap();
        assert!((f64::from(r[0][2]) - 4.0 / (7.0f64 + 1e-6).sqrt()).abs() < 1e-6, "{r:?}");
    }
}
