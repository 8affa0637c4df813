//! PyTorch's binary cross-entropy: value with logs clamped at −100, gradient
//! `(p − y) / max(p(1 − p), 1e-12)` (`binary_cross_entropy` and its backward).
//!
//! On tensors it takes about twenty Candle operations and their backward
//! passes, a fifth of a small model's step (perf, issue 15). On the CPU in f32
//! and f64 it is one op each way, doing exactly the tensor form's arithmetic
//! in the same order and precision, so both give the same bits; a test holds
//! them to it. Other dtypes and devices use the tensor form.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::{dispatch, Kernel, Real};
use crate::error::Result;

/// The elementwise loss of probabilities `p` against targets `y`.
pub(crate) fn bce_torch(p: &Tensor, y: &Tensor) -> Result<Tensor> {
    if super::handles(p) && p.dtype() == y.dtype() && p.shape() == y.shape() {
        return Ok(p.contiguous()?.apply_op2(&y.contiguous()?, BceTorch)?);
    }
    tensors(p, y)
}

/// The tensor form, any dtype and device. The value is computed without
/// autograd; the gradient is attached by adding `g·p − stop_grad(g·p)`, which
/// is exactly zero in value, so the loss equals PyTorch's bit for bit in each
/// element while its derivative is `g`.
pub(crate) fn tensors(p: &Tensor, y: &Tensor) -> Result<Tensor> {
    let pd = p.detach();
    let log_p = pd.log()?.maximum(-100.0)?;
    let log_q = pd.affine(-1.0, 1.0)?.log()?.maximum(-100.0)?;
    let value = (y.mul(&log_p)? + y.affine(-1.0, 1.0)?.mul(&log_q)?)?.neg()?;
    let g = (&pd - y)?.div(&pd.mul(&pd.affine(-1.0, 1.0)?)?.maximum(1e-12)?)?;
    let gp = g.mul(p)?;
    Ok((value + (&gp - gp.detach())?)?)
}

/// Candle's `maximum` against a scalar: `v < s ? s : v` (NaN stays).
fn maximum<T: Real>(v: T, s: f64) -> T {
    let s = T::from_f64(s);
    if v < s {
        s
    } else {
        v
    }
}

/// Candle's `affine(-1, 1)`: `v·(−1) + 1`.
fn one_minus<T: Real>(v: T) -> T {
    v * T::from_f64(-1.0) + T::from_f64(1.0)
}

/// `g = (p − y) / max(p·(1 − p), 1e-12)`, as the tensor form computes it.
fn slope<T: Real>(p: T, y: T) -> T {
    (p - y) / maximum(p * one_minus(p), 1e-12)
}

/// One element of the loss: `−(y·log_p + (1 − y)·log_q) + (g·p − g·p)`.
fn value<T: Real>(p: T, y: T) -> T {
    let log_p = maximum(p.ln(), -100.0);
    let log_q = maximum(one_minus(p).ln(), -100.0);
    let v = -(y * log_p + one_minus(y) * log_q);
    let gp = slope(p, y) * p;
    // The tensor form's `g·p − stop_grad(g·p)`: 0, or NaN where `g·p` is not finite.
    #[allow(clippy::eq_op)]
    let zero = gp - gp;
    v + zero
}

/// The gradient reaching `p` for an upstream gradient `u`: the tensor form's backward passes
/// `u` through an add and a sub, each accumulated onto zeros (`0 + u`), then multiplies by `g`.
fn gradient<T: Real>(p: T, y: T, u: T) -> T {
    (T::zero() + u) * slope(p, y)
}

struct BceTorch;

impl CustomOp2 for BceTorch {
    fn name(&self) -> &'static str {
        "torch-bce"
    }

    fn cpu_fwd(&self, ps: &CpuStorage, pl: &Layout, ys: &CpuStorage, yl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((dispatch(self, [(ps, pl), (ys, yl)])?, pl.shape().clone()))
    }

    fn bwd(&self, p: &Tensor, y: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = p.contiguous()?.apply_op3_no_bwd(&y.contiguous()?, &grad_res.contiguous()?, &BceTorchGrad)?;
        Ok((Some(g), None))
    }
}

impl Kernel<2> for BceTorch {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "bce_torch"
    }

    fn run<T: Real>(&self, [p, y]: [&[T]; 2]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(p.iter().zip(y).map(|(p, y)| value(*p, *y)).collect()))
    }
}

/// The gradient of [`BceTorch`] with respect to `p`, from `(p, y, upstream gradient)`.
struct BceTorchGrad;

impl CustomOp3 for BceTorchGrad {
    fn name(&self) -> &'static str {
        "torch-bce-backward"
    }

    fn cpu_fwd(&self, ps: &CpuStorage, pl: &Layout, ys: &CpuStorage, yl: &Layout, us: &CpuStorage, ul: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((dispatch(self, [(ps, pl), (ys, yl), (us, ul)])?, pl.shape().clone()))
    }
}

impl Kernel<3> for BceTorchGrad {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "bce_torch backward"
    }

    fn run<T: Real>(&self, [p, y, u]: [&[T]; 3]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(p.iter().zip(y).zip(u).map(|((p, y), u)| gradient(*p, *y, *u)).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    #[test]
    fn fused_and_tensor_forms_agree_bit_for_bit() {
        // Edge cases (p at 0 and 1, tiny, NaN; soft targets) and random values, both dtypes, with an
        // upstream gradient that is not 1 (a mean over 12 rows) and one that is −0 somewhere.
        let p = [0.0, 1.0, 1e-30, 1.0 - 1e-12, 0.5, f64::NAN, 0.3, 0.7, 0.999, 1e-8, 0.25, 0.6];
        let y = [1.0, 0.0, 0.0, 1.0, 0.5, 1.0, 0.0, 1.0, 0.2, 0.0, 1.0, 0.3];
        for dt in [DType::F32, DType::F64] {
            let run = |fused: bool| {
                let pv = Var::from_tensor(&Tensor::new(&p, &Device::Cpu).unwrap().to_dtype(dt).unwrap().reshape((12, 1)).unwrap()).unwrap();
                let yt = Tensor::new(&y, &Device::Cpu).unwrap().to_dtype(dt).unwrap().reshape((12, 1)).unwrap();
                let elems = if fused { bce_torch(pv.as_tensor(), &yt) } else { tensors(pv.as_tensor(), &yt) }.unwrap();
                let w = Tensor::new(&[1.0, -1.0, 2.0, 0.5, -0.0, 3.0, 1.0, 1.0, -2.0, 1.0, 0.0, 1.0], &Device::Cpu).unwrap().to_dtype(dt).unwrap().reshape((12, 1)).unwrap();
                let l = (elems.clone() * w).unwrap().mean_all().unwrap();
                let g = l.backward().unwrap().get(pv.as_tensor()).unwrap().flatten_all().unwrap();
                let bits = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                (bits(&elems), bits(&g))
            };
            assert_eq!(run(true), run(false), "{dt:?}");
        }
    }
}
