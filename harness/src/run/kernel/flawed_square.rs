//! A custom operation with a hand-written backward pass, as users write them:
//! seed 002 ex3's `x²` whose backward divides by zero.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::{dispatch, Dtypes, Kernel, Real};
use crate::error::Result;

/// `x²` through [`FlawedSquare`].
pub(crate) fn flawed_square(h: &Tensor) -> Result<Tensor> {
    Ok(h.contiguous()?.apply_op1(FlawedSquare)?)
}

/// `x²` with the flawed backward of seed 002 ex3: `grad_out / 0.0`.
struct FlawedSquare;

impl CustomOp1 for FlawedSquare {
    fn name(&self) -> &'static str {
        "flawed-square"
    }

    fn cpu_fwd(&self, s: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((dispatch(self, [(s, layout)])?, layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.div(&grad_res.zeros_like()?)?))
    }
}

impl Kernel<1> for FlawedSquare {
    type Out = CpuStorage;
    const DTYPES: Dtypes = Dtypes::Floats;

    fn name(&self) -> &str {
        "flawed_square"
    }

    fn run<T: Real>(&self, [x]: [&[T]; 1]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(x.iter().map(|x| *x * *x).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn flawed_square_forward_is_square_and_backward_is_nonfinite() {
        let x = Var::new(&[3.0f32, -2.0], &Device::Cpu).unwrap();
        let y = x.as_tensor().apply_op1(FlawedSquare).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![9.0, 4.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!(gx.iter().all(|v| v.is_infinite()));
    }
}
