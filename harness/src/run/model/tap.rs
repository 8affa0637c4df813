//! Taps: identity ops that keep the gradient flowing through a layer output.
//!
//! Candle's backward drops the gradient of every intermediate tensor as soon
//! as it has been propagated, so only parameters keep theirs. To say where a
//! non-finite gradient is born (in the loss's backward, or in an activation's),
//! the diagnosis re-runs the failing step with a tap on each layer output: the
//! forward copies the values, the backward records the incoming gradient and
//! passes it on unchanged, so the input's gradient is `g` itself (the patched
//! Candle takes a first gradient as it is, `vendor/README.md`), bit for bit
//! what it is without the tap.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use crate::error::Result;

/// Where a tap leaves the gradient it saw.
pub(crate) type Slot = Arc<Mutex<Option<Tensor>>>;

/// `x` unchanged, with its gradient recorded in the returned slot during backward.
pub(crate) fn tap(x: &Tensor) -> Result<(Tensor, Slot)> {
    let slot = Slot::default();
    let t = x.contiguous()?.apply_op1(Tap(slot.clone()))?;
    Ok((t, slot))
}

/// The gradient a tap recorded, if backward reached it.
pub(crate) fn recorded(slot: &Slot) -> Option<Tensor> {
    slot.lock().ok().and_then(|g| g.clone())
}

struct Tap(Slot);

impl CustomOp1 for Tap {
    fn name(&self) -> &'static str {
        "tap"
    }

    fn cpu_fwd(&self, s: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((a, b)) = layout.contiguous_offsets() else { candle_core::bail!("tap: input must be contiguous") };
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(v[a..b].to_vec()),
            CpuStorage::F64(v) => CpuStorage::F64(v[a..b].to_vec()),
            CpuStorage::F16(v) => CpuStorage::F16(v[a..b].to_vec()),
            CpuStorage::BF16(v) => CpuStorage::BF16(v[a..b].to_vec()),
            _ => candle_core::bail!("tap: unsupported dtype"),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(grad_res.clone());
        }
        Ok(Some(grad_res.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn a_tap_records_the_gradient_and_changes_nothing() {
        // y = sum(3·t(x)²): dy/dt = 6x, the tap's record; dy/dx = 6x as well, bit for bit the
        // gradient without the tap (x = [1, -2, 0.5] gives [6, -12, 3]).
        let x = Var::new(&[1.0f32, -2.0, 0.5], &Device::Cpu).unwrap();
        let (t, slot) = tap(x.as_tensor()).unwrap();
        let y = (t.sqr().unwrap() * 3.0).unwrap().sum_all().unwrap();
        let g = y.backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(gx, [6.0, -12.0, 3.0]);
        assert_eq!(recorded(&slot).unwrap().to_vec1::<f32>().unwrap(), [6.0, -12.0, 3.0]);
        let plain = (x.as_tensor().sqr().unwrap() * 3.0).unwrap().sum_all().unwrap().backward().unwrap();
        let px = plain.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(px.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), gx.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }
}
