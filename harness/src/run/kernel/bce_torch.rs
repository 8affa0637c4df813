//! PyTorch's binary cross-entropy as its CPU kernels compute it (`binary_cross_entropy` and
//! `binary_cross_entropy_backward`, aten/src/ATen/native/Loss.cpp):
//! `(y − 1)·max(log1p(−p), −100) − y·max(log(p), −100)`, and the gradient
//! `u·(p − y) / max((1 − p)·p, EPSILON)` with `EPSILON = 1e-12` converted to the dtype.
//!
//! On the CPU it is one op each way in every float dtype, each operation rounded to the dtype as
//! `c10::Half` and `c10::BFloat16` round theirs (through f32, once per operation), so in f16
//! `EPSILON` is 0 and the gradient at `p = 0` or `1` is ±inf, or 0/0 = NaN where `p = y`, as in
//! PyTorch, while the value stays finite (the logs are clamped at −100). Other devices use the
//! tensor form ([`tensors`]), which adds the gradient through `g·p − stop_grad(g·p)`: the same where
//! `g·p` is finite (f32 and f64, where `EPSILON` holds), NaN in the value where it is not, and
//! `log(1 − p)` for `log1p(−p)` (Candle has no `log1p`).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::{dispatch, Dtypes, Kernel, Real};
use crate::error::Result;

/// The elementwise loss of probabilities `p` against targets `y`.
pub(crate) fn bce_torch(p: &Tensor, y: &Tensor) -> Result<Tensor> {
    if super::takes(p, Dtypes::Floats) && p.dtype() == y.dtype() && p.shape() == y.shape() {
        return Ok(p.contiguous()?.apply_op2(&y.contiguous()?, BceTorch)?);
    }
    tensors(p, y)
}

/// The tensor form, any dtype and device (Candle's ops: no `log1p`). The value is computed without
/// autograd; the gradient is attached by adding `g·p − stop_grad(g·p)`, which is zero in value
/// where `g·p` is finite, so there the derivative is `g`.
pub(crate) fn tensors(p: &Tensor, y: &Tensor) -> Result<Tensor> {
    let pd = p.detach();
    let log_p = pd.log()?.maximum(-100.0)?;
    let log_q = pd.affine(-1.0, 1.0)?.log()?.maximum(-100.0)?;
    let value = (y.mul(&log_p)? + y.affine(-1.0, 1.0)?.mul(&log_q)?)?.neg()?;
    let g = (&pd - y)?.div(&pd.mul(&pd.affine(-1.0, 1.0)?)?.maximum(EPSILON)?)?;
    let gp = g.mul(p)?;
    Ok((value + (&gp - gp.detach())?)?)
}

/// PyTorch's floor under `(1 − p)·p` in the backward (`EPSILON` in Loss.cpp).
const EPSILON: f64 = 1e-12;

/// `std::max(v, s)`: `v < s ? s : v` (NaN stays), as Candle's `maximum` too.
fn maximum<T: Real>(v: T, s: T) -> T {
    if v < s {
        s
    } else {
        v
    }
}

/// One element of the loss, PyTorch's forward kernel: `(y − 1)·max(log1p(−p), −100) − y·max(log(p), −100)`.
fn value<T: Real>(p: T, y: T) -> T {
    let floor = T::from_f64(-100.0);
    (y - T::one()) * maximum((-p).ln_1p(), floor) - y * maximum(p.ln(), floor)
}

/// The gradient reaching `p` for an upstream gradient `u`, PyTorch's backward kernel:
/// `u·(p − y) / max((1 − p)·p, EPSILON)`, `EPSILON` converted to `T` (0 in f16).
fn gradient<T: Real>(p: T, y: T, u: T) -> T {
    u * (p - y) / maximum((T::one() - p) * p, T::from_f64(EPSILON))
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
    const DTYPES: Dtypes = Dtypes::Floats;

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
    const DTYPES: Dtypes = Dtypes::Floats;

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

    /// The loss and the gradient for an upstream gradient of 3 (`l.backward(torch.full_like(l, 3.0))`
    /// with `reduction='none'`), through the op and its backward, as f64 bits.
    fn run(dt: DType, p: &[f64], y: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let t = |v: &[f64]| Tensor::new(v, &Device::Cpu).unwrap().to_dtype(dt).unwrap();
        let pv = Var::from_tensor(&t(p)).unwrap();
        let l = bce_torch(pv.as_tensor(), &t(y)).unwrap();
        let g = (l.clone() * t(&vec![3.0; p.len()])).unwrap().sum_all().unwrap().backward().unwrap();
        let f64s = |t: &Tensor| t.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
        (f64s(&l), f64s(g.get(pv.as_tensor()).unwrap()))
    }

    /// Same value, NaN equal to NaN, −0 apart from 0.
    fn same(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()))
    }

    const P: [f64; 6] = [0.0, 0.0, 1.0, 1.0, 0.25, 0.3];
    const Y: [f64; 6] = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0];

    #[test]
    fn f16_gives_pytorchs_values_and_infinite_or_nan_gradients_at_the_edges() {
        // PyTorch 2.15, F.binary_cross_entropy on f16 CPU tensors, reduction='none', upstream 3: EPSILON is 0
        // in f16, so the gradient is 3·(0 − 1)/0 = −inf, 0/0 = NaN, NaN, 3·1/0 = inf; the values stay
        // finite (the logs are clamped at −100). 0.3 is 0.300048828125 in f16.
        let (l, g) = run(DType::F16, &P, &Y);
        assert!(same(&l, &[100.0, 0.0, -0.0, 100.0, 1.38671875, 0.356689453125]), "{l:?}");
        assert!(same(&g, &[f64::NEG_INFINITY, f64::NAN, f64::NAN, f64::INFINITY, -12.0, 4.28515625]), "{g:?}");
        // PyTorch 2.15 in f16: p = 6.1e-5 (6.097555160522461e-05), y = 1: loss 9.703125, gradient −49216.
        // By hand: 3·(p − 1) rounds to −3 and 1 − p to 1 in f16, so −3/6.0976e-5 = −49200.4, between
        // the f16 neighbours −49184 and −49216 (spacing 32), nearer −49216.
        let (l, g) = run(DType::F16, &[6.1e-5], &[1.0]);
        assert_eq!((l, g), (vec![9.703125], vec![-49216.0]));
    }

    #[test]
    fn f32_and_bf16_floor_the_gradient_at_epsilon_and_use_log1p() {
        // PyTorch 2.15, as above: in f32, 3·(0 − 1)/1e-12 (9.99999996e-13 in f32) = −3000000053248, and
        // p = 1e-8, y = 0 gives log1p(−1e-8) = −1e-8 where log(1 − p) would give 0.
        let (l, g) = run(DType::F32, &[0.0, 0.0, 1.0, 1.0, 1e-8], &[1.0, 0.0, 1.0, 0.0, 0.0]);
        assert!(same(&l, &[100.0, 0.0, -0.0, 100.0, 1e-8f32 as f64]), "{l:?}");
        assert!(same(&g, &[-3000000053248.0, 0.0, 0.0, 3000000053248.0, 3.0]), "{g:?}");
        // bf16: 1e-12 is 1.0004e-12, so −3/that = −2989297238016; 0.3 is 0.30078125.
        let (l, g) = run(DType::BF16, &P, &Y);
        assert!(same(&l, &[100.0, 0.0, -0.0, 100.0, 1.3828125, 0.357421875]), "{l:?}");
        assert!(same(&g, &[-2989297238016.0, 0.0, 0.0, 2989297238016.0, -12.0, 4.3125]), "{g:?}");
    }

    #[test]
    fn the_tensor_form_agrees_where_the_gradient_is_finite() {
        // f64, away from p near 0 where log1p and log(1 − p) part: the same values, and gradients to
        // the last bit or two (the kernel divides u·(p − y), the tensor form multiplies u by the quotient).
        let p = [0.0, 1.0, 0.5, 0.3, 0.7, 0.999, 0.25];
        let y = [1.0, 0.0, 0.5, 0.0, 1.0, 0.2, 1.0];
        let (l, g) = run(DType::F64, &p, &y);
        let pv = Var::new(&p, &Device::Cpu).unwrap();
        let lt = tensors(pv.as_tensor(), &Tensor::new(&y, &Device::Cpu).unwrap()).unwrap();
        let gt = lt.affine(3.0, 0.0).unwrap().sum_all().unwrap().backward().unwrap().get(pv.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
        for (a, b) in lt.to_vec1::<f64>().unwrap().iter().zip(&l).chain(gt.iter().zip(&g)) {
            assert!((a - b).abs() <= 1e-15 * a.abs().max(1.0), "{a} vs {b}");
        }
    }
}
