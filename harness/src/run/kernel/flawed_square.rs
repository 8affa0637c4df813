//! A custom operation with a hand-written backward pass, as users write them:
//! seed 002 ex3's `x²` whose backward divides by zero.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

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
        fn sq<T: Copy + std::ops::Mul<Output = T>>(v: &[T], (a, b): (usize, usize)) -> Vec<T> {
            v[a..b].iter().map(|x| *x * *x).collect()
        }
        let Some(l) = layout.contiguous_offsets() else { candle_core::bail!("flawed_square: input must be contiguous") };
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(sq(v, l)),
            CpuStorage::F64(v) => CpuStorage::F64(sq(v, l)),
            CpuStorage::F16(v) => CpuStorage::F16(sq(v, l)),
            CpuStorage::BF16(v) => CpuStorage::BF16(sq(v, l)),
            _ => candle_core::bail!("flawed_square: unsupported dtype"),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.div(&grad_res.zeros_like()?)?))
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
