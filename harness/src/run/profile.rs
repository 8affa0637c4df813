//! The magnitude profile of a slice, read from the bits: the largest
//! magnitude and how many values are subnormal (nonzero, below the dtype's
//! smallest normal, where they lose precision on their way to being flushed
//! to zero). These give the trace its headroom and underflow columns.
//!
//! For a non-negative float the bit pattern orders as the value does, and
//! ±Inf and NaN sort above every finite value, so both come from integer
//! compares on `bits & !sign` that vectorise (8 or 16 lanes), cheap enough
//! to run inside the fused optimizer's pass over every gradient block.

use half::{bf16, f16};

/// Largest magnitude (as bits, sign cleared) and subnormal count of a slice.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Profile {
    /// Largest `bits & !sign`, as f64 once decoded (may be Inf or NaN's pattern: see [`Profile::max_abs`]).
    top: f64,
    /// Nonzero values below the smallest normal.
    pub(crate) tiny: usize,
    /// Elements seen.
    pub(crate) len: usize,
}

impl Profile {
    /// The largest magnitude seen, if every value was finite (NaN otherwise: the watch's
    /// `finish` then finds the non-finite values and the largest finite one itself).
    pub(crate) fn max_abs(&self) -> f64 {
        if self.top.is_finite() {
            self.top
        } else {
            f64::NAN
        }
    }

    /// Adds what a scan found: the largest magnitude's decoded bits, subnormals and elements.
    pub(crate) fn merge(&mut self, top: f64, tiny: usize, len: usize) {
        // NaN sorts above everything here, as its bits do.
        if top.is_nan() || top > self.top {
            self.top = top;
        }
        self.tiny += tiny;
        self.len += len;
    }
}

/// A float whose magnitude profile can be read from its bits.
pub(crate) trait Magnitude: Copy {
    /// Adds `v` to `p`.
    fn profile(v: &[Self], p: &mut Profile);

    /// Adds `v` to `p` with AVX2 and returns true, where this type has such a path and the
    /// CPU supports it.
    #[cfg(target_arch = "x86_64")]
    fn avx2(_v: &[Self], _p: &mut Profile) -> bool {
        false
    }
}

macro_rules! magnitude {
    ($t:ty, $u:ty, $abs:expr, $min_normal:expr, $decode:expr $(, $fast:ident)?) => {
        impl Magnitude for $t {
            $(
                #[cfg(target_arch = "x86_64")]
                fn avx2(v: &[Self], p: &mut Profile) -> bool {
                    if !std::is_x86_feature_detected!("avx2") {
                        return false;
                    }
                    // SAFETY: the CPU supports AVX2, checked just above.
                    unsafe { $fast(v, p) };
                    true
                }
            )?

            fn profile(v: &[Self], p: &mut Profile) {
                #[cfg(target_arch = "x86_64")]
                if Self::avx2(v, p) {
                    return;
                }
                scan(v, p);

                #[inline(always)]
                fn scan(v: &[$t], p: &mut Profile) {
                    const L: usize = 16;
                    const ABS: $u = $abs;
                    const TINY: $u = $min_normal - 1;
                    // Lane counts stay small: at most 4096 / L per chunk.
                    for chunk in v.chunks(4096) {
                        let (mut top, mut tiny) = ([0 as $u; L], [0 as $u; L]);
                        let lanes = chunk.chunks_exact(L);
                        let tail = lanes.remainder();
                        for c in lanes {
                            for ((t, n), x) in top.iter_mut().zip(tiny.iter_mut()).zip(c) {
                                let a = x.to_bits() & ABS;
                                *t = (*t).max(a);
                                *n += (a.wrapping_sub(1) < TINY) as $u;
                            }
                        }
                        let mut t = top.into_iter().max().unwrap_or(0);
                        let mut n: usize = tiny.iter().map(|&x| x as usize).sum();
                        for x in tail {
                            let a = x.to_bits() & ABS;
                            t = t.max(a);
                            n += (a.wrapping_sub(1) < TINY) as usize;
                        }
                        let decode: fn($u) -> f64 = $decode;
                        p.merge(decode(t), n, chunk.len());
                    }
                }
            }
        }
    };
}

magnitude!(f32, u32, 0x7fff_ffff, 0x0080_0000, |b| f32::from_bits(b) as f64, scan_f32_avx2);
magnitude!(f64, u64, 0x7fff_ffff_ffff_ffff, 0x0010_0000_0000_0000, f64::from_bits);
magnitude!(f16, u16, 0x7fff, 0x0400, |b| f16::from_bits(b).to_f64());
magnitude!(bf16, u16, 0x7fff, 0x0080, |b| bf16::from_bits(b).to_f64());

/// The f32 scan in AVX2 intrinsics (the fused optimizer runs it on every gradient block):
/// LLVM vectorises the plain loop across lanes of different chunks, with a gather per vector.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scan_f32_avx2(v: &[f32], p: &mut Profile) {
    use std::arch::x86_64::*;
    const TINY: i32 = 0x0080_0000 - 1;
    for chunk in v.chunks(1 << 20) {
        let (abs, minus1, below) = (_mm256_set1_epi32(0x7fff_ffff), _mm256_set1_epi32(-1), _mm256_set1_epi32(TINY - 1));
        let (mut top, mut tiny) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        let lanes = chunk.chunks_exact(8);
        let tail = lanes.remainder();
        for c in lanes {
            // SAFETY: `c` holds 8 f32, 32 bytes; the load is unaligned.
            let a = _mm256_and_si256(_mm256_loadu_si256(c.as_ptr().cast()), abs);
            top = _mm256_max_epu32(top, a);
            // a − 1 < TINY (unsigned) ⇔ min(a − 1, TINY − 1) = a − 1: 0 < a < smallest normal.
            let d = _mm256_add_epi32(a, minus1);
            tiny = _mm256_sub_epi32(tiny, _mm256_cmpeq_epi32(_mm256_min_epu32(d, below), d));
        }
        let (mut t, mut n) = ([0u32; 8], [0u32; 8]);
        _mm256_storeu_si256(t.as_mut_ptr().cast(), top);
        _mm256_storeu_si256(n.as_mut_ptr().cast(), tiny);
        let mut t = t.into_iter().max().unwrap_or(0);
        let mut n: usize = n.iter().map(|&x| x as usize).sum();
        for x in tail {
            let a = x.to_bits() & 0x7fff_ffff;
            t = t.max(a);
            n += (a.wrapping_sub(1) < TINY as u32) as usize;
        }
        p.merge(f32::from_bits(t) as f64, n, chunk.len());
    }
}

/// The profile of a slice.
pub(crate) fn profile<T: Magnitude>(v: &[T]) -> Profile {
    let mut p = Profile::default();
    T::profile(v, &mut p);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_magnitude_and_subnormals_by_hand() {
        // f32's smallest normal is 2⁻¹²⁶ = 1.18e-38: 1e-40 and -1e-39 are subnormal, 0 and -0 are not.
        let v = [1.5f32, -3.25, 0.0, -0.0, 1e-40, -1e-39, 2.0e-38, 7.0];
        let p = profile(&v);
        assert_eq!((p.max_abs(), p.tiny, p.len), (7.0, 2, 8));
        // f16: the smallest normal is 2⁻¹⁴ = 6.10e-5; 1e-5 and 6e-8 are subnormal.
        let h: Vec<f16> = [1e-5, 6e-8, 1e-4, -65504.0].into_iter().map(f16::from_f64).collect();
        let p = profile(&h);
        assert_eq!((p.max_abs(), p.tiny), (65504.0, 2));
        // bf16 has f32's range: 1e-39 is subnormal there, 1e-5 is not.
        let b: Vec<bf16> = [1e-39, 1e-5].into_iter().map(bf16::from_f64).collect();
        assert_eq!(profile(&b).tiny, 1);
        assert_eq!(profile(&[1e-310f64, 1.0]).tiny, 1);
    }

    #[test]
    fn a_non_finite_value_has_no_largest_magnitude() {
        assert!(profile(&[1.0f32, f32::INFINITY]).max_abs().is_nan());
        assert!(profile(&[f32::NAN, 1.0]).max_abs().is_nan());
        // Long slices (lanes, tail and several chunks) agree with a plain fold.
        let v: Vec<f32> = (0..10_007).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * if i % 97 == 0 { 1e-40 } else { 1e-3 }).collect();
        let p = profile(&v);
        let max = v.iter().map(|x| x.abs()).fold(0.0f32, f32::max) as f64;
        let tiny = v.iter().filter(|x| **x != 0.0 && x.abs() < f32::MIN_POSITIVE).count();
        assert_eq!((p.max_abs(), p.tiny, p.len), (max, tiny, v.len()));
    }
}
