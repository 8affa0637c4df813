//! Casts between f32 and the half types in one vectorised pass each way.
//!
//! Autocast casts every low-precision layer's input and parameters down and
//! its output up again (see `model::autocast`), so a mixed-precision step is
//! full of casts. Candle's `to_dtype` converts value by value through the
//! `half` crate, whose `bf16::from_f32` calls an AVX-512-BF16 intrinsic per
//! value where the CPU has it: a third of an `amp_bf16` step went there.
//! Here f32 → bf16 is round-to-nearest-even on the bits (`half`'s algorithm,
//! NaN kept quiet, tested against it on every kind of value), bf16 → f32 a
//! shift, and f16 goes through `half`'s slice conversions (F16C where the CPU
//! has it). The gradient of a cast is the cast back, as Candle's is.
//!
//! [`round`] keeps f32 storage and rounds each value to a half type: what a
//! cast down and up again computes, in one pass and without half tensors in
//! the graph (whose gradients Candle adds value by value). Its gradient is
//! rounded the same way, as the gradient of a half tensor is a half tensor.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor};

use super::{avx2, contiguous};
use crate::error::Result;

/// `t` in `to`: one pass on the CPU between f32 and f16 or bf16, Candle's `to_dtype` otherwise.
pub(crate) fn cast(t: &Tensor, to: DType) -> Result<Tensor> {
    if t.dtype() == to {
        return Ok(t.clone());
    }
    let fast = matches!((t.dtype(), to), (DType::F32, DType::BF16 | DType::F16) | (DType::BF16 | DType::F16, DType::F32));
    if fast && super::takes(t, super::Dtypes::Floats) {
        return Ok(t.contiguous()?.apply_op1(Cast { to })?);
    }
    Ok(t.to_dtype(to)?)
}

/// `t` (f32) with every value rounded to `to` (f16 or bf16), still f32; its gradient is rounded
/// to `to` as well. Other dtypes pass through.
pub(crate) fn round(t: &Tensor, to: DType) -> Result<Tensor> {
    if t.dtype() != DType::F32 || !matches!(to, DType::F16 | DType::BF16) {
        return Ok(t.clone());
    }
    if !super::handles(t) {
        return Ok(t.to_dtype(to)?.to_dtype(DType::F32)?);
    }
    Ok(t.contiguous()?.apply_op1(Round { to })?)
}

/// `v` rounded to `to` (bf16, else f16), as f32 values.
pub(crate) fn round_values(v: &[f32], to: DType) -> Vec<f32> {
    if to == DType::BF16 {
        round_bf16(v)
    } else {
        round_f16(v)
    }
}

/// `t` (f32, CPU) rounded to `to`, outside the graph: for a kernel's backward.
pub(crate) fn round_no_grad(t: &Tensor, to: DType) -> candle_core::Result<Tensor> {
    t.contiguous()?.apply_op1_no_bwd(&Round { to })
}

/// bf16's bits of `x`, rounded to nearest even (NaN stays NaN, quiet).
#[inline(always)]
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16;
    if b & 0x7FFF_FFFF > 0x7F80_0000 {
        ((b >> 16) | 0x0040) as u16
    } else {
        rounded
    }
}

avx2! {
    /// Each value rounded to bf16.
    fn to_bf16(x: &[f32]) -> Vec<half::bf16> {
        let mut out = vec![half::bf16::ZERO; x.len()];
        for (o, &v) in out.iter_mut().zip(x) {
            *o = half::bf16::from_bits(bf16_bits(v));
        }
        out
    }
}

avx2! {
    /// Each value rounded to bf16, kept as f32.
    fn round_bf16(x: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0f32; x.len()];
        for (o, &v) in out.iter_mut().zip(x) {
            *o = f32::from_bits(u32::from(bf16_bits(v)) << 16);
        }
        out
    }
}

/// Each value rounded to f16, kept as f32: F16C's conversions there and back in one loop where
/// the CPU has them (round to nearest even, as `half` rounds), `half`'s otherwise.
fn round_f16(x: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("f16c") && super::widest() >= 1 {
        // SAFETY: the CPU has F16C (and so AVX), checked just above; `out` is as long as `x`.
        unsafe { round_f16_f16c(x, &mut out) };
        return out;
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = half::f16::from_f32(v).to_f32();
    }
    out
}

/// [`round_f16`] eight values at a time with F16C.
///
/// # Safety
/// The CPU has F16C and AVX, and `out` is at least as long as `x`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn round_f16_f16c(x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::{_mm256_cvtph_ps, _mm256_cvtps_ph, _mm256_loadu_ps, _mm256_storeu_ps, _MM_FROUND_TO_NEAREST_INT};
    let n = x.len() / 8 * 8;
    for i in (0..n).step_by(8) {
        // SAFETY: i + 8 ≤ n ≤ x.len() ≤ out.len().
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(x.as_ptr().add(i)));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
        }
    }
    for i in n..x.len() {
        out[i] = half::f16::from_f32(x[i]).to_f32();
    }
}

struct Round {
    to: DType,
}

impl CustomOp1 for Round {
    fn name(&self) -> &'static str {
        "round"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(v) = s else { candle_core::bail!("round: f32 only") };
        Ok((CpuStorage::F32(round_values(contiguous(v, l, "round")?, self.to)), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(round_no_grad(grad, self.to)?))
    }
}

avx2! {
    /// Each bf16 as the f32 it is exactly.
    fn from_bf16(x: &[half::bf16]) -> Vec<f32> {
        let mut out = vec![0.0f32; x.len()];
        for (o, v) in out.iter_mut().zip(x) {
            *o = f32::from_bits(u32::from(v.to_bits()) << 16);
        }
        out
    }
}

struct Cast {
    to: DType,
}

impl CustomOp1 for Cast {
    fn name(&self) -> &'static str {
        "cast"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        use half::slice::HalfFloatSliceExt;
        let out = match (s, self.to) {
            (CpuStorage::F32(v), DType::BF16) => CpuStorage::BF16(to_bf16(contiguous(v, l, "cast")?)),
            (CpuStorage::BF16(v), DType::F32) => CpuStorage::F32(from_bf16(contiguous(v, l, "cast")?)),
            (CpuStorage::F32(v), DType::F16) => {
                let v = contiguous(v, l, "cast")?;
                let mut out = vec![half::f16::ZERO; v.len()];
                out.convert_from_f32_slice(v);
                CpuStorage::F16(out)
            }
            (CpuStorage::F16(v), DType::F32) => CpuStorage::F32(contiguous(v, l, "cast")?.to_f32_vec()),
            _ => candle_core::bail!("cast: unsupported dtypes"),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Cast { to: arg.dtype() })?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn rounding_to_bf16_is_halfs_on_every_kind_of_value() {
        // Ties both ways, the largest finite values (some round to inf), subnormals, ±0, ±inf,
        // NaNs with payloads, and a sweep of bit patterns.
        let mut xs: Vec<f32> = vec![
            1.0 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            f32::MAX,
            -f32::MAX,
            3.3895e38,
            1e-40,
            -1e-45,
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::from_bits(0x7F80_0001),
            f32::from_bits(0xFFC1_2345),
        ];
        xs.extend((0..200_000u32).map(|i| f32::from_bits(i.wrapping_mul(0x9E37_79B9))));
        let ours = to_bf16(&xs);
        for (x, o) in xs.iter().zip(&ours) {
            assert_eq!(o.to_bits(), half::bf16::from_f32(*x).to_bits(), "{x:e} ({:#x})", x.to_bits());
        }
        let back = from_bf16(&ours);
        for (o, b) in ours.iter().zip(&back) {
            assert_eq!(b.to_bits(), o.to_f32().to_bits());
        }
    }

    #[test]
    fn rounding_to_f16_in_f32_is_halfs_on_every_kind_of_value_on_every_tier() {
        // Ties both ways around 1 (spacing 2⁻¹⁰), the overflow boundary (65520 rounds to inf),
        // subnormals and values that flush to 0, ±0, ±inf, NaN, and a sweep of bit patterns.
        let mut xs: Vec<f32> =
            vec![1.0 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), 65504.0, 65519.99, 65520.0, -65520.0, 6e-8, 2.9e-8, 3e-8, 1e-40, 0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        xs.extend((0..100_003u32).map(|i| f32::from_bits(i.wrapping_mul(0x9E37_79B9))));
        for tier in [0, 1, 2] {
            crate::run::kernel::WIDEST.with(|w| w.set(tier));
            for (x, r) in xs.iter().zip(round_f16(&xs)) {
                let want = half::f16::from_f32(*x).to_f32();
                assert!(r.to_bits() == want.to_bits() || (r.is_nan() && want.is_nan()), "{x:e}: {r:e} vs {want:e} (tier {tier})");
            }
        }
    }

    #[test]
    fn rounding_in_f32_is_a_cast_down_and_up_and_rounds_its_gradient() {
        let x: Vec<f32> = (0..999).map(|i| ((i as f32) * 0.37).sin() * 70000.0 / (1.0 + i as f32)).collect();
        let t = Var::from_tensor(&Tensor::from_vec(x, 999, &Device::Cpu).unwrap()).unwrap();
        for d in [DType::BF16, DType::F16] {
            let r = round(t.as_tensor(), d).unwrap();
            let want = t.as_tensor().to_dtype(d).unwrap().to_dtype(DType::F32).unwrap();
            assert_eq!((r.dtype(), r.to_vec1::<f32>().unwrap()), (DType::F32, want.to_vec1::<f32>().unwrap()));
            // d(sum(r · c))/dt = c rounded: c = 1 + 2⁻¹² is 1 in bf16 and in f16.
            let c = Tensor::full(1.0f32 + 2f32.powi(-12), 999, &Device::Cpu).unwrap();
            let g = (r * c).unwrap().sum_all().unwrap().backward().unwrap();
            assert!(g.get(t.as_tensor()).unwrap().to_vec1::<f32>().unwrap().iter().all(|v| *v == 1.0), "{d:?}");
        }
    }

    #[test]
    fn every_tier_and_dtype_matches_candles_cast_and_the_gradient_casts_back() {
        let x: Vec<f32> = (0..999).map(|i| ((i as f32) * 0.37).sin() * 70000.0 / (1.0 + i as f32)).collect();
        let t = Tensor::from_vec(x, 999, &Device::Cpu).unwrap();
        for d in [DType::BF16, DType::F16] {
            for tier in [0, 1, 2] {
                crate::run::kernel::WIDEST.with(|w| w.set(tier));
                let ours = cast(&t, d).unwrap();
                let theirs = t.to_dtype(d).unwrap();
                assert_eq!(ours.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(), theirs.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(), "{d:?} tier {tier}");
                assert_eq!(cast(&ours, DType::F32).unwrap().to_vec1::<f32>().unwrap(), theirs.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap());
            }
            // d(sum(2·cast(v)))/dv = 2, arriving in f32.
            let v = Var::from_tensor(&t).unwrap();
            let g = (cast(v.as_tensor(), d).unwrap() * 2.0).unwrap().sum_all().unwrap().backward().unwrap();
            let g = g.get(v.as_tensor()).unwrap();
            assert_eq!(g.dtype(), DType::F32);
            assert!(g.to_vec1::<f32>().unwrap().iter().all(|x| *x == 2.0));
        }
    }
}
