//! Activations whose formulas need more than one Candle operation: softplus
//! with PyTorch's threshold, and a max-subtracted softmax and log-softmax along
//! any dimension (the softmax layer, attention, `nanhunt::nn` and expressions
//! share them). (The one-operation
//! activations and elementwise functions are applied directly in `mod.rs`.)

use candle_core::shape::Dim;
use candle_core::{DType, Tensor, D};

use crate::error::Result;

/// `log(1 + exp(x))`, with x above PyTorch's threshold of 20 passed through.
///
/// Clamping before `exp` keeps the unused branch finite, so its gradient does
/// not turn into `0 · inf`.
pub(crate) fn softplus(h: &Tensor) -> Result<Tensor> {
    let soft = h.minimum(20.0)?.exp()?.affine(1.0, 1.0)?.log()?;
    Ok(h.gt(20.0)?.where_cond(h, &soft)?)
}

/// Softmax over the last dimension, with the row maximum subtracted first.
pub(crate) fn softmax(h: &Tensor) -> Result<Tensor> {
    softmax_along(h, D::Minus1)
}

/// Softmax over `dim`, its maximum subtracted (and held constant) first.
pub(crate) fn softmax_along<T: Dim + Copy>(h: &Tensor, dim: T) -> Result<Tensor> {
    // As `torch.softmax`: an f16 or bf16 input is computed in f32 and rounded once.
    crate::run::opmath::in_f32(h, |h| {
        let max = h.max_keepdim(dim)?.detach();
        let e = h.broadcast_sub(&max)?.exp()?;
        Ok(e.broadcast_div(&e.sum_keepdim(dim)?)?)
    })
}

/// Log-softmax over `dim`: `x − max − log Σ exp(x − max)`, in f32 for f16 and bf16 as
/// `torch.log_softmax` computes them. Over the last dimension on the CPU, PyTorch's kernel
/// (`_vec_log_softmax_lastdim`) keeps the sum of exponentials and then its log in the input's
/// dtype, so each rounds to it once before the subtraction (PyTorch 2.15: row [2, 1, −3] in
/// f16 gives −5.3203125 at class 2, where rounding once gives −5.31640625); over another
/// dimension it rounds once at the end.
pub(crate) fn log_softmax_along<T: Dim + Copy>(h: &Tensor, dim: T) -> Result<Tensor> {
    let low = h.dtype();
    let last = h.device().is_cpu() && dim.to_index(h.shape(), "log_softmax")? + 1 == h.rank();
    let keep = move |t: Tensor| -> Result<Tensor> {
        match low {
            DType::F16 | DType::BF16 if last => Ok(t.to_dtype(low)?.to_dtype(DType::F32)?),
            _ => Ok(t),
        }
    };
    crate::run::opmath::in_f32(h, |h| {
        let shifted = h.broadcast_sub(&h.max_keepdim(dim)?.detach())?;
        Ok(shifted.broadcast_sub(&keep(keep(shifted.exp()?.sum_keepdim(dim)?)?.log()?)?)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// PyTorch 2.15, `torch.log_softmax` of these rows in f16 and bf16 over the last dimension
    /// (its sum of exponentials and their log each rounded to the dtype: the last bf16 row's
    /// largest logit gets exactly 0, as 1.0012 rounds to 1), and over dimension 0 of the
    /// transposed rows in f16 (rounded once: −5.31640625 where the last dimension gives −5.3203125).
    #[test]
    fn half_log_softmax_rounds_as_pytorchs_cpu_kernel() {
        let rows = [[2.0f64, 1.0, -3.0], [0.5, -1.25, 3.0], [7.1, -2.3, 0.3]];
        let x = Tensor::new(&rows, &Device::Cpu).unwrap();
        let f16 = [[-0.318359375, -1.318359375, -5.3203125], [-2.591796875, -4.34375, -0.09228515625], [-0.0009760856628417969, -9.40625, -6.80078125]];
        let bf16 = [[-0.318359375, -1.3203125, -5.3125], [-2.59375, -4.34375, -0.08984375], [0.0, -9.375, -6.78125]];
        for (dt, want) in [(DType::F16, f16), (DType::BF16, bf16)] {
            let got = log_softmax_along(&x.to_dtype(dt).unwrap(), D::Minus1).unwrap().to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
            assert_eq!(got, want, "{dt:?}");
        }
        let t = x.t().unwrap().contiguous().unwrap().to_dtype(DType::F16).unwrap();
        let got = log_softmax_along(&t, 0).unwrap().to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
        assert_eq!((got[2][0], got[2][1]), (-5.31640625, -0.09197998046875));
    }

    #[test]
    fn softplus_and_softmax_by_hand() {
        // softplus(0) = ln 2; softplus(30) = 30 (threshold); softmax([0, ln 3]) = [1/4, 3/4].
        let x = Tensor::new(&[0.0f64, 30.0], &Device::Cpu).unwrap();
        assert_eq!(softplus(&x).unwrap().to_vec1::<f64>().unwrap(), vec![2f64.ln(), 30.0]);
        let s = softmax(&Tensor::new(&[[0.0f64, 3f64.ln()]], &Device::Cpu).unwrap()).unwrap().to_vec2::<f64>().unwrap();
        assert!((s[0][0] - 0.25).abs() < 1e-15 && (s[0][1] - 0.75).abs() < 1e-15, "{s:?}");
    }
}
