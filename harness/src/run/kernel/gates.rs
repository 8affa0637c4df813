//! The recurrent cells' `tanh` and `sigmoid` as Candle ops, for the composed recurrent path
//! (`run::model::recurrent`): on the CPU each value goes through `Real::tanh` / `Real::sigmoid`,
//! which in f32 are `vmath`'s (f16 and bf16 computed in f32 and rounded once, f64 exact), so the
//! composed path computes the fused cells' function bit for bit; other devices use Candle's.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::Real;
use crate::error::Result;

/// Which function a [`Map`] op computes.
#[derive(Debug, Clone, Copy)]
enum Fun {
    Tanh,
    Sigmoid,
}

/// The Candle op of [`tanh`] and [`sigmoid`] on the CPU: `Real::tanh` or `Real::sigmoid` of
/// every value, any layout, with Candle's own backward formulas.
struct Map(Fun);

impl CustomOp1 for Map {
    fn name(&self) -> &'static str {
        match self.0 {
            Fun::Tanh => "recurrent-tanh",
            Fun::Sigmoid => "recurrent-sigmoid",
        }
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        use candle_core::cpu_backend::unary_map;
        fn f<T: Real>(fun: Fun) -> impl Fn(T) -> T {
            move |x: T| match fun {
                Fun::Tanh => x.tanh(),
                Fun::Sigmoid => x.sigmoid(),
            }
        }
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(unary_map(v, l, f(self.0))),
            CpuStorage::F64(v) => CpuStorage::F64(unary_map(v, l, f(self.0))),
            CpuStorage::F16(v) => CpuStorage::F16(unary_map(v, l, f(self.0))),
            CpuStorage::BF16(v) => CpuStorage::BF16(unary_map(v, l, f(self.0))),
            other => candle_core::bail!("{}: no CPU kernel for {:?}", self.name(), other.dtype()),
        };
        Ok((out, l.shape().clone()))
    }

    /// Candle's: tanh's gradient subtracted as `g·(y² − 1)` (returned negated, which its sum
    /// adds: the same IEEE operation), the sigmoid's `g·((1 − y)·y)` as candle-nn's.
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(match self.0 {
            Fun::Tanh => (grad * (res.sqr()? - 1.)?)?.neg()?,
            Fun::Sigmoid => grad.mul(&res.ones_like()?.sub(res)?.mul(res)?)?,
        }))
    }
}

/// `tanh(t)` as the fused cells compute it, on the CPU; Candle's `tanh` on other devices.
pub(crate) fn tanh(t: &Tensor) -> Result<Tensor> {
    Ok(if t.device().is_cpu() { t.apply_op1(Map(Fun::Tanh))? } else { t.tanh()? })
}

/// `sigmoid(t)` as the fused cells compute it, on the CPU; candle-nn's on other devices.
pub(crate) fn sigmoid(t: &Tensor) -> Result<Tensor> {
    Ok(if t.device().is_cpu() { t.apply_op1(Map(Fun::Sigmoid))? } else { candle_nn::ops::sigmoid(t)? })
}
