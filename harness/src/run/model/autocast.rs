//! Autocast: which dtype each node computes in under `train.precision = amp_*`.
//!
//! The lists are PyTorch's CUDA autocast lists (`aten/src/ATen/autocast_mode.h`,
//! `AT_FORALL_LOWER_PRECISION_FP` and `AT_FORALL_FP32`, with `softmax` from
//! `AT_FORALL_FP32_SET_OPT_DTYPE`), where mixed-precision training mostly runs:
//! `linear`, `matmul`/`bmm`, the convolutions and the recurrent cells compute in the
//! low dtype; `softmax`, `layer_norm`, `exp`, `log`, `pow`, `reciprocal`, `softplus`
//! and every loss compute in f32. PyTorch's CPU list is shorter (no softmax, norms,
//! exp, log or pow: they run in their input's dtype there); nanhunt follows CUDA's on
//! every device, and the exported `repro.py` writes the same casts out by hand.
//! Every other op runs in its input's dtype, and a residual sum of an f32 and a
//! low-precision operand promotes to f32, as PyTorch's type promotion does.
//! `batch_norm`, on no CUDA list (cuDNN keeps its statistics in f32 and returns the
//! input's dtype), computes in f32 here; its output is rounded again by the next
//! matmul, so the values that reach the next low-precision op are the same.
//!
//! On the CPU the low dtype lives in f32 storage: every value PyTorch would hold
//! in the low dtype is rounded to it (`kernel::cast::round`, whose gradient is
//! rounded too, as a half tensor's gradient is a half tensor), so the f32
//! kernels run every layer and no half tensor enters the graph. Each node's
//! *logical* dtype (`logical`) says what PyTorch would hold: a node computing in
//! the low dtype rounds its inputs (its casts) and its output. Recurrent cells
//! and convolutions, which round inside, run on real half tensors instead, and
//! other devices do everything that way; a test holds the two to the same bits.

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::scenario::{Layer, Part};

/// Where a node computes under autocast.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// In the low dtype: its input and parameters are cast down.
    Low,
    /// In f32: its input is cast up.
    F32,
    /// In its input's dtype (a sum of two dtypes promotes to the wider).
    Same,
}

/// The autocast policy of a node.
pub(crate) fn policy(layer: &Layer, part: Part) -> Policy {
    match (layer, part) {
        (_, Part::Sum) => Policy::Same,
        (Layer::Attention { .. }, Part::Probs) => Policy::F32,
        (Layer::Attention { .. }, _) => Policy::Low,
        (Layer::Linear { .. } | Layer::Conv1d { .. } | Layer::Conv2d { .. } | Layer::Rnn { .. } | Layer::Lstm { .. } | Layer::Gru { .. }, _) => Policy::Low,
        (Layer::LayerNorm { .. } | Layer::RmsNorm { .. } | Layer::BatchNorm { .. } | Layer::Softmax | Layer::Softplus | Layer::Exp | Layer::Log | Layer::Pow { .. } | Layer::Reciprocal, _) => Policy::F32,
        _ => Policy::Same,
    }
}

/// `t` in `dtype` (itself if it already is).
pub(crate) fn cast(t: &Tensor, dtype: DType) -> Result<Tensor> {
    crate::run::kernel::cast::cast(t, dtype)
}

/// The dtype a node with `policy` computes in, for an input of dtype `input`.
pub(crate) fn target(policy: Policy, low: DType, input: DType) -> DType {
    match policy {
        Policy::Low => low,
        Policy::F32 => DType::F32,
        Policy::Same => input,
    }
}

/// Whether a layer computing in the low dtype runs on real half tensors even on the CPU: those
/// that round inside (every gate of a recurrent cell, a convolution's own kernels).
pub(crate) fn on_half_tensors(layer: &Layer) -> bool {
    matches!(layer, Layer::Conv1d { .. } | Layer::Conv2d { .. } | Layer::Rnn { .. } | Layer::Lstm { .. } | Layer::Gru { .. })
}

/// The dtype of a sum of operands of dtypes `a` and `b`: the wider (f32 over a half type).
pub(crate) fn promote(a: DType, b: DType) -> DType {
    if a == b {
        a
    } else {
        DType::F32
    }
}

#[cfg(test)]
thread_local! {
    /// Test hook: run autocast on real half tensors on the CPU too, to compare the two.
    pub(crate) static HALF_TENSORS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether autocast keeps the low dtype in f32 storage on this device (the CPU).
pub(crate) fn in_f32_storage(dev: &candle_core::Device) -> bool {
    #[cfg(test)]
    if HALF_TENSORS.with(std::cell::Cell::get) {
        return false;
    }
    dev.is_cpu()
}

/// `a + b`, promoting to the wider dtype when they differ (PyTorch's type promotion).
pub(crate) fn promoted_sum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() == b.dtype() {
        return Ok((a + b)?);
    }
    Ok((cast(a, DType::F32)? + cast(b, DType::F32)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matmuls_go_low_softmax_and_norms_go_f32_the_rest_keep_their_dtype() {
        assert_eq!(policy(&Layer::Linear { out: 1, init: None }, Part::Whole), Policy::Low);
        assert_eq!(policy(&Layer::LayerNorm { eps: 1e-5 }, Part::Whole), Policy::F32);
        assert_eq!(policy(&Layer::Relu, Part::Whole), Policy::Same);
        assert_eq!(target(Policy::Same, DType::F16, DType::F16), DType::F16);
        // 1 + 2⁻¹¹ is not an f16: the promoted sum keeps it, an f16 sum would round it to 1.
        let dev = Device::Cpu;
        let a = Tensor::new(&[1.0f32], &dev).unwrap().to_dtype(DType::F16).unwrap();
        let b = Tensor::new(&[2f32.powi(-11)], &dev).unwrap();
        let s = promoted_sum(&a, &b).unwrap();
        assert_eq!((s.dtype(), s.to_vec1::<f32>().unwrap()[0]), (DType::F32, 1.0 + 2f32.powi(-11)));
    }
}
