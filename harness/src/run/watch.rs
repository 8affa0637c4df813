//! Cheap exact statistics of a tensor, read in place: largest magnitude, sum
//! of squares, and the first non-finite element.
//!
//! This is the watch's inner loop, run on every layer output, gradient and
//! updated parameter, so on the CPU it reads Candle's storage directly instead
//! of copying the tensor out.

use candle_core::{CpuStorage, Storage, Tensor};
use half::{bf16, f16};

use crate::error::Result;

/// What the watch needs to know of one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Largest |value| among finite elements (0 for an empty tensor).
    pub max_abs: f64,
    /// Sum of squares in f64 (non-finite if any element is).
    pub sum_sq: f64,
    /// Flat index and value of the first non-finite element.
    pub first_bad: Option<(usize, f64)>,
}

/// Computes [`Stats`] of a tensor on any device.
pub fn stats(t: &Tensor) -> Result<Stats> {
    if t.is_contiguous() {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            let s = match cpu {
                CpuStorage::F32(v) => of_slice(&v[start..end], |x| x as f64),
                CpuStorage::F64(v) => of_slice(&v[start..end], |x| x),
                CpuStorage::F16(v) => of_slice(&v[start..end], f16::to_f64),
                CpuStorage::BF16(v) => of_slice(&v[start..end], bf16::to_f64),
                _ => None,
            };
            if let Some(s) = s {
                return Ok(s);
            }
        }
    }
    let v = t.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
    Ok(of_slice(&v, |x| x).expect("f64 slice"))
}

/// Stats of a slice, converting each element to f64.
///
/// Eight independent accumulators let the loop vectorise; the order of the
/// additions is fixed, so the result is the same on every run.
pub fn of_slice<T: Copy>(v: &[T], f: impl Fn(T) -> f64) -> Option<Stats> {
    const LANES: usize = 8;
    let (mut sq, mut mx) = ([0.0f64; LANES], [0.0f64; LANES]);
    let chunks = v.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            let a = f(c[k]);
            sq[k] += a * a;
            // `max` ignores NaN; infinities are found below.
            mx[k] = mx[k].max(a.abs());
        }
    }
    for (k, x) in tail.iter().enumerate() {
        let a = f(*x);
        sq[k] += a * a;
        mx[k] = mx[k].max(a.abs());
    }
    let mut sum_sq = sq.iter().sum::<f64>();
    let mut max_abs = mx.iter().copied().fold(0.0, f64::max);
    let mut first_bad = None;
    if !sum_sq.is_finite() {
        first_bad = v.iter().map(|x| f(*x)).enumerate().find(|(_, a)| !a.is_finite());
        if first_bad.is_some() {
            max_abs = v.iter().map(|x| f(*x).abs()).filter(|a| a.is_finite()).fold(0.0, f64::max);
            sum_sq = f64::NAN;
        }
    }
    Some(Stats { max_abs, sum_sq, first_bad })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn finds_first_nonfinite_and_ignores_it_in_max() {
        let t = Tensor::new(&[1.0f32, -3.0, f32::NAN, f32::INFINITY], &Device::Cpu).unwrap();
        let s = stats(&t).unwrap();
        assert_eq!(s.first_bad.map(|b| b.0), Some(2));
        assert_eq!(s.max_abs, 3.0);
    }

    #[test]
    fn sum_of_squares_in_every_dtype() {
        for dt in [DType::F32, DType::F64, DType::F16, DType::BF16] {
            let t = Tensor::new(&[[1.0f64, -2.0], [2.0, 4.0]], &Device::Cpu).unwrap().to_dtype(dt).unwrap();
            let s = stats(&t).unwrap();
            assert_eq!((s.sum_sq, s.max_abs, s.first_bad), (25.0, 4.0, None), "{dt:?}");
            // A strided view takes the copying path and must agree.
            assert_eq!(stats(&t.t().unwrap()).unwrap().sum_sq, 25.0);
        }
    }

    #[test]
    fn huge_finite_f64_is_not_flagged() {
        let t = Tensor::new(&[1e200f64, 1e200], &Device::Cpu).unwrap();
        let s = stats(&t).unwrap();
        assert!(s.first_bad.is_none() && s.sum_sq.is_infinite());
    }
}
