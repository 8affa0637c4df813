//! Activations whose formulas need more than one Candle operation: softplus
//! with PyTorch's threshold, and a max-subtracted softmax and log-softmax along
//! any dimension (the softmax layer, attention, `nanhunt::nn` and expressions
//! share them). (The one-operation
//! activations and elementwise functions are applied directly in `mod.rs`.)

use candle_core::shape::Dim;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor, D};

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

/// Softmax over `dim`, its maximum subtracted (and held constant) first. As PyTorch's CPU
/// kernels: over the last dimension each exponential times the reciprocal of the sum
/// (`_vec_softmax_lastdim`: `tmp_sum = 1 / tmp_sum`, then `x * tmp_sum`), over another divided
/// by the sum (`_vec_softmax`).
pub(crate) fn softmax_along<T: Dim + Copy>(h: &Tensor, dim: T) -> Result<Tensor> {
    let last = dim.to_index(h.shape(), "softmax")? + 1 == h.rank();
    // As `torch.softmax`: an f16 or bf16 input is computed in f32 and rounded once.
    crate::run::opmath::in_f32(h, |h| {
        let max = h.max_keepdim(dim)?.detach();
        let e = h.broadcast_sub(&max)?.exp()?;
        let sum = e.sum_keepdim(dim)?;
        Ok(match last {
            true => e.broadcast_mul(&sum.recip()?)?,
            false => e.broadcast_div(&sum)?,
        })
    })
}

/// Log-softmax over `dim`: `x − max − log Σ exp(x − max)`, in f32 for f16 and bf16 as
/// `torch.log_softmax` computes them. Over the last dimension on the CPU, PyTorch's kernel
/// (`_vec_log_softmax_lastdim`) keeps the sum of exponentials and then its log in the input's
/// dtype, so each rounds to it once before the subtraction (PyTorch 2.15: row [2, 1, −3] in
/// f16 gives −5.3203125 at class 2, where rounding once gives −5.31640625); over another
/// dimension it rounds once at the end. The backward of a half input on the CPU is PyTorch's
/// `_log_softmax_backward_data`: `g − exp(out)·Σg` in f32 from the rounded output ([`FromOutput`]),
/// where the composed ops' backward would read the unrounded softmax.
pub(crate) fn log_softmax_along<T: Dim + Copy>(h: &Tensor, dim: T) -> Result<Tensor> {
    let low = h.dtype();
    let index = dim.to_index(h.shape(), "log_softmax")?;
    let half = h.device().is_cpu() && matches!(low, DType::F16 | DType::BF16);
    let last = half && index + 1 == h.rank();
    let keep = move |t: Tensor| -> Result<Tensor> {
        match last {
            true => Ok(t.to_dtype(low)?.to_dtype(DType::F32)?),
            false => Ok(t),
        }
    };
    let out = crate::run::opmath::in_f32(h, |h| {
        let shifted = h.broadcast_sub(&h.max_keepdim(index)?.detach())?;
        Ok(shifted.broadcast_sub(&keep(keep(shifted.exp()?.sum_keepdim(index)?)?.log()?)?)?)
    })?;
    match half {
        true => Ok(h.apply_op2(&out.detach().contiguous()?, FromOutput(index))?),
        false => Ok(out),
    }
}

/// `(x, out)` to `out`, with log-softmax's backward over dimension `.0` wrt `x` computed from
/// `out` as PyTorch's CPU kernel computes it for f16 and bf16 (in f32, rounded once). PyTorch
/// 2.15 on 200 random 8×7 f16 and bf16 inputs over dimensions −1 and 0: this formula differs
/// from autograd's gradient in 5 of 44,800 values (summation order), the composed form in 6,405.
struct FromOutput(usize);

impl CustomOp2 for FromOutput {
    fn name(&self) -> &'static str {
        "log-softmax-from-output"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, out: &CpuStorage, ol: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        match ol.contiguous_offsets() {
            Some((0, end)) if end == ol.shape().elem_count() => Ok((out.clone(), ol.shape().clone())),
            _ => candle_core::bail!("log-softmax: the output is not contiguous from its start"),
        }
    }

    fn bwd(&self, x: &Tensor, _: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (out, g) = (res.to_dtype(DType::F32)?, grad.to_dtype(DType::F32)?);
        let total = g.sum_keepdim(self.0)?;
        let dx = (g - out.exp()?.broadcast_mul(&total)?)?;
        Ok((Some(dx.to_dtype(x.dtype())?), None))
    }
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

    /// PyTorch 2.15, the gradient of `torch.log_softmax(x, dim)` for the rows above with upstream
    /// `g` (both rounded to the dtype), over dimensions −1 and 0 in f16 and bf16. The composed
    /// form (softmax of the unrounded f32 values) misses f16's [1][2] over −1 (−1.2822265625) and
    /// bf16's [0][0] over 0; the backward from the rounded output matches all 36.
    #[test]
    fn half_log_softmax_backward_is_pytorchs_from_the_rounded_output() {
        let rows = [[2.0f64, 1.0, -3.0], [0.5, -1.25, 3.0], [7.1, -2.3, 0.3]];
        let up = [[0.3f64, -1.7, 0.9], [1.1, 0.25, -0.6], [-2.2, 0.8, 1.4]];
        let cases: [(DType, usize, [[f64; 3]; 3]); 4] = [
            (DType::F16, 1, [[0.6640625, -1.56640625, 0.90234375], [1.0439453125, 0.240234375, -1.283203125], [-2.19921875, 0.7998046875, 1.400390625]]),
            (DType::F16, 0, [[0.304931640625, -1.130859375, 0.89599609375], [1.1005859375, 0.31005859375, -2.189453125], [-1.4052734375, 0.82080078125, 1.2939453125]]),
            (DType::BF16, 1, [[0.66796875, -1.5703125, 0.90234375], [1.046875, 0.240234375, -1.2890625], [-2.203125, 0.80078125, 1.3984375]]),
            (DType::BF16, 0, [[0.306640625, -1.1328125, 0.89453125], [1.1015625, 0.310546875, -2.1875], [-1.40625, 0.8203125, 1.2890625]]),
        ];
        for (dt, dim, want) in cases {
            let x = candle_core::Var::from_tensor(&Tensor::new(&rows, &Device::Cpu).unwrap().to_dtype(dt).unwrap()).unwrap();
            let g = Tensor::new(&up, &Device::Cpu).unwrap().to_dtype(dt).unwrap();
            let loss = log_softmax_along(x.as_tensor(), dim).unwrap().mul(&g).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let got = grads.get(&x).unwrap().to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
            assert_eq!(got, want, "{dt:?} over dimension {dim}");
        }
    }

    #[test]
    fn softplus_and_softmax_by_hand() {
        // softplus(0) = ln 2; softplus(30) = 30 (threshold); softmax([0, ln 3]) = [1/4, 3/4].
        let x = Tensor::new(&[0.0f64, 30.0], &Device::Cpu).unwrap();
        assert_eq!(softplus(&x).unwrap().to_vec1::<f64>().unwrap(), vec![2f64.ln(), 30.0]);
        let s = softmax(&Tensor::new(&[[0.0f64, 3f64.ln()]], &Device::Cpu).unwrap()).unwrap().to_vec2::<f64>().unwrap();
        assert!((s[0][0] - 0.25).abs() < 1e-15 && (s[0][1] - 0.75).abs() < 1e-15, "{s:?}");
    }

    /// PyTorch 2.15 (CPU, one thread): the softmax of rows [0, a] over the last dimension
    /// multiplies by the reciprocal of the sum, and of the same rows as columns over dimension 0
    /// divides by it; for these a the two round apart in the second probability's last bit.
    #[test]
    fn softmax_multiplies_over_the_last_dimension_and_divides_over_another_as_pytorch() {
        let a = [-2.6978672f32, -0.027385002, -0.33585575, -0.28319672, -6.504593, -5.2535434, -3.1024187, -1.1493263];
        let last = [0.06309933f32, 0.4931542, 0.4168165, 0.42967027, 0.0014943137, 0.005201757, 0.0430076, 0.24061216];
        let other = [0.063099325f32, 0.49315417, 0.41681653, 0.42967024, 0.0014943136, 0.0052017574, 0.043007597, 0.24061215];
        let rows = Tensor::from_vec(a.iter().flat_map(|&a| [0.0f32, a]).collect::<Vec<_>>(), (8, 2), &Device::Cpu).unwrap();
        let by_last = softmax_along(&rows, D::Minus1).unwrap().to_vec2::<f32>().unwrap();
        let by_first = softmax_along(&rows.t().unwrap().contiguous().unwrap(), 0).unwrap().to_vec2::<f32>().unwrap();
        for i in 0..a.len() {
            assert_eq!(by_last[i][1].to_bits(), last[i].to_bits(), "a = {}: {} vs PyTorch {} (last dimension)", a[i], by_last[i][1], last[i]);
            assert_eq!(by_first[1][i].to_bits(), other[i].to_bits(), "a = {}: {} vs PyTorch {} (dimension 0)", a[i], by_first[1][i], other[i]);
        }
    }
}
