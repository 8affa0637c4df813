//! Drop-ins for candle-nn's fused `ops::layer_norm`, `ops::rms_norm` and
//! `ops::softmax_last_dim`, which are built without a backward (candle#2168):
//! the same arguments, computed by the registry's kernels (`ops/layer_norm.rs`,
//! `ops/rms_norm.rs`, `ops/softmax.rs`), so gradients flow through them, with
//! PyTorch's numerics (a two-pass variance, the row maximum subtracted first).

use candle_core::{shape::Dim, Result, Tensor, D};

/// A nanhunt error as a Candle one, so these functions return what candle-nn's do.
fn candle(e: crate::Error) -> candle_core::Error {
    match e {
        crate::Error::Candle(e) => e,
        other => candle_core::Error::Msg(other.to_string()),
    }
}

/// The width of `x`'s last dimension, checked against each of `params` (1-D, that width).
fn width(what: &str, x: &Tensor, params: &[&Tensor]) -> Result<usize> {
    let n = x.dim(D::Minus1)?;
    for p in params {
        if p.dims1()? != n {
            candle_core::bail!("shape mismatch in {what}: input {:?}, parameter {:?}", x.shape(), p.shape())
        }
    }
    Ok(n)
}

/// `(x − mean) / sqrt(var + eps) · alpha + beta` over the last dimension, the biased variance
/// computed from the centred values (`torch.nn.functional.layer_norm`); as
/// `candle_nn::ops::layer_norm`, with a backward.
pub fn layer_norm(x: &Tensor, alpha: &Tensor, beta: &Tensor, eps: f32) -> Result<Tensor> {
    width("layer-norm", x, &[alpha, beta])?;
    crate::run::model::norm::layer_norm(x, alpha, beta, f64::from(eps)).map_err(candle)
}

/// `x / sqrt(mean(x²) + eps) · alpha` over the last dimension (`torch.nn.functional.rms_norm`);
/// as `candle_nn::ops::rms_norm`, with a backward.
pub fn rms_norm(x: &Tensor, alpha: &Tensor, eps: f32) -> Result<Tensor> {
    width("rms-norm", x, &[alpha])?;
    crate::run::model::norm::rms_norm(x, alpha, Some(f64::from(eps))).map_err(candle)
}

/// Softmax over the last dimension, the row maximum subtracted first (`torch.softmax(x, -1)`);
/// as `candle_nn::ops::softmax_last_dim`, with a backward.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    crate::run::kernel::activation::softmax(x).map_err(candle)
}

/// Softmax over `dim` (`torch.softmax(x, dim)`), as `candle_nn::ops::softmax`, with a backward.
pub fn softmax<T: Dim>(x: &Tensor, dim: T) -> Result<Tensor> {
    let d = dim.to_index(x.shape(), "softmax")?;
    crate::run::kernel::activation::softmax_along(x, d).map_err(candle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The tensors PyTorch 2.15 was given (f64): x (2, 3), a gain, a shift, and the weights `c`
    /// of the loss `sum(y · c)`, whose gradients are checked.
    fn inputs() -> (Var, Var, Var, Tensor) {
        let dev = &Device::Cpu;
        let x = Var::new(&[[1.0f64, 2.0, 4.0], [0.5, -1.0, 3.0]], dev).unwrap();
        let w = Var::new(&[1.5f64, -0.5, 2.0], dev).unwrap();
        let b = Var::new(&[0.1f64, 0.2, -0.3], dev).unwrap();
        (x, w, b, Tensor::new(&[[1.0f64, -2.0, 0.5], [3.0, 1.0, -1.0]], dev).unwrap())
    }

    fn close(t: &Tensor, want: &[f64], tol: f64) {
        let got = t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= tol * w.abs().max(1.0), "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn layer_norm_and_its_gradients_are_pytorchs() {
        // PyTorch 2.15: F.layer_norm(x, (3,), w, b, 1e-5), then sum(y·c).backward(). The shift's
        // gradient is c's column sums by hand: (1 + 3, −2 + 1, 0.5 − 1).
        let (x, w, b, c) = inputs();
        let y = layer_norm(&x, &w, &b, 1e-5).unwrap();
        close(&y, &[-1.5035622971754465, 0.33363019143128725, 2.372603828625744, -0.20304520675252924, 0.7555828790463037, 2.326391791855255], 1e-7);
        let g = (y * &c).unwrap().sum_all().unwrap().backward().unwrap();
        close(g.get(&x).unwrap(), &[0.11454114585048414, -0.17181000068430974, 0.057268854833826044, 2.2017166428018378, -1.3760701650774467, -0.8256464777243913], 1e-6);
        close(g.get(&w).unwrap(), &[-1.6751319449553566, -0.5766449923674584, -0.6450449387711912], 1e-7);
        close(g.get(&b).unwrap(), &[4.0, -1.0, -0.5], 1e-12);
    }

    #[test]
    fn rms_norm_and_its_gradients_are_pytorchs() {
        // PyTorch 2.15: F.rms_norm(x, (3,), w, 1e-6), then sum(y·c).backward().
        let (x, w, _, c) = inputs();
        let y = rms_norm(&x, &w, 1e-6).unwrap();
        close(&y, &[0.5669466690176516, -0.3779644460117677, 3.0237155680941417, 0.4057512762221134, 0.27050085081474223, 3.246010209776907], 1e-7);
        let g = (y * &c).unwrap().sum_all().unwrap().backward().unwrap();
        close(g.get(&x).unwrap(), &[0.43195938615448926, 0.1079898802854431, -0.16198468544088152, 2.5202761946831487, -0.4420379255156789, -0.5673921791561589], 1e-6);
        close(g.get(&w).unwrap(), &[1.1894669984559945, -2.052859485676555, -0.8670762128649181], 1e-7);
    }

    #[test]
    fn softmax_and_its_gradient_are_pytorchs_over_any_dimension() {
        // PyTorch 2.15: torch.softmax(x, -1), then sum(y·c).backward().
        let (x, _, _, c) = inputs();
        let y = softmax_last_dim(&x).unwrap();
        close(&y, &[0.04201006613406605, 0.11419519938459449, 0.8437947344813395, 0.07459555713221444, 0.016644518609272352, 0.9087599242585133], 1e-12);
        let g = (y * &c).unwrap().sum_all().unwrap().backward().unwrap();
        close(g.get(&x).unwrap(), &[0.0321159799345879, -0.25528531349443784, 0.22316933355984994, 0.27364102567568355, 0.02776852866365115, -0.3014095543393346], 1e-12);
        // Over the first dimension: each column of x sums to 1; [1, 0.5] by hand is
        // [e^0.5, 1] / (1 + e^0.5) = [0.62246, 0.37754].
        let y0 = softmax(x.as_tensor(), 0).unwrap();
        close(&y0.narrow(1, 0, 1).unwrap(), &[0.6224593312018546, 0.3775406687981454], 1e-12);
        assert_eq!(softmax(x.as_tensor(), D::Minus1).unwrap().to_vec2::<f64>().unwrap(), softmax_last_dim(&x).unwrap().to_vec2::<f64>().unwrap());
    }

    #[test]
    fn a_large_mean_with_a_small_spread_normalises_as_pytorch_does_in_f32() {
        // PyTorch 2.15, f32: F.layer_norm([[3000, 3000.01, 2999.99, 3000.02]], (4,), eps=1e-5) is
        // (−0.41892, 0.43987, −1.27771, 1.29865); in f64 it is (∓0.43036, ∓1.29109). Both f32
        // results miss the f64 one by up to 0.012: the mean is rounded to f32's spacing near 3000
        // (2.4e-4, 2% of the rows' spread of 0.0117), each kernel its own way. A one-pass
        // variance (E[x²] − E[x]², 9e6 − 9e6 in f32) would lose the spread entirely.
        let dev = &Device::Cpu;
        let x = Tensor::new(&[[3000.0f32, 3000.01, 2999.99, 3000.02]], dev).unwrap();
        let y = layer_norm(&x, &Tensor::ones(4, DType::F32, dev).unwrap(), &Tensor::zeros(4, DType::F32, dev).unwrap(), 1e-5).unwrap();
        close(&y, &[-0.41892075538635254, 0.4398667812347412, -1.2777082920074463, 1.298654317855835], 0.012);
        close(&y, &[-0.4303625700428205, 0.4303625700428205, -1.2910877101284617, 1.2910877101284617], 0.012);
    }

    #[test]
    fn a_parameter_of_the_wrong_width_is_an_error() {
        let (x, w, _, _) = inputs();
        let short = Tensor::new(&[1.0f64, 2.0], &Device::Cpu).unwrap();
        assert!(layer_norm(&x, &w, &short, 1e-5).unwrap_err().to_string().contains("shape mismatch in layer-norm"));
        assert!(rms_norm(&x, &short, 1e-5).unwrap_err().to_string().contains("shape mismatch in rms-norm"));
    }
}
