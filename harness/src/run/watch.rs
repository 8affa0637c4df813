//! Cheap exact statistics of a tensor, read in place: largest magnitude, sum
//! of squares, and the first non-finite element.
//!
//! This is the watch's inner loop, run on every layer output, gradient and
//! updated parameter, so on the CPU it reads Candle's storage directly instead
//! of copying the tensor out.

use candle_core::{CpuStorage, Storage, Tensor};
use half::{bf16, f16};

use super::profile::{profile, Magnitude, Profile};
use crate::error::Result;

/// What the watch needs to know of one tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Largest |value| among finite elements (0 for an empty tensor; NaN where not gathered).
    pub max_abs: f64,
    /// Sum of squares in f64 (non-finite if any element is).
    pub sum_sq: f64,
    /// Flat index and value of the first non-finite element.
    pub first_bad: Option<(usize, f64)>,
    /// How many elements are not finite.
    pub bad: usize,
    /// How many elements are subnormal (nonzero, below the dtype's smallest normal); gathered
    /// for gradients, 0 where not.
    pub tiny: usize,
}

/// Computes [`Stats`] of a tensor on any device.
pub fn stats(t: &Tensor) -> Result<Stats> {
    if t.is_contiguous() {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            let with_tiny = |s: Option<Stats>, p: Profile| s.map(|s| Stats { tiny: p.tiny, ..s });
            let s = match cpu {
                CpuStorage::F32(v) => with_tiny(of_slice(&v[start..end], |x| x as f64), profile(&v[start..end])),
                CpuStorage::F64(v) => with_tiny(of_slice(&v[start..end], |x| x), profile(&v[start..end])),
                CpuStorage::F16(v) => with_tiny(of_slice(&v[start..end], f16::to_f64), profile(&v[start..end])),
                CpuStorage::BF16(v) => with_tiny(of_slice(&v[start..end], bf16::to_f64), profile(&v[start..end])),
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

/// The largest finite |value| of a tensor and its first non-finite element:
/// [`stats`] without the sum of squares, for layer outputs, whose norm the
/// trace does not keep. On a contiguous f32 CPU tensor it is one pass of
/// integer maxima over the magnitudes' bits (for non-negative floats the bit
/// order is the numeric order, and NaN and ±Inf sort above every finite value),
/// read again only when something is not finite.
pub fn extent(t: &Tensor) -> Result<Stats> {
    if t.dtype() == candle_core::DType::F32 && t.is_contiguous() {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F32(v)), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            let v = &v[start..end];
            let top = max_magnitude_bits(v);
            if top < f32::INFINITY.to_bits() {
                return Ok(Stats { max_abs: f64::from(f32::from_bits(top)), sum_sq: f64::NAN, first_bad: None, bad: 0, tiny: 0 });
            }
            return Ok(of_slice(v, f64::from).expect("a slice always has stats"));
        }
    }
    stats(t)
}

/// The largest `bits & 0x7fff_ffff` of a slice (0 if empty), over independent lanes (in AVX2
/// intrinsics where the CPU has it; a maximum does not depend on the order).
fn max_magnitude_bits(v: &[f32]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { max_magnitude_bits_avx2(v) };
    }
    max_magnitude_bits_any(v)
}

/// [`max_magnitude_bits`] 32 values a round, in four registers of eight lanes. Written in
/// intrinsics: the compiler vectorised the plain loop across its chunks, one element at a time
/// (`vpinsrd`), which made the watch's scan of layer outputs 4–6% of the tiny GPT's step (perf).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_magnitude_bits_avx2(v: &[f32]) -> u32 {
    use std::arch::x86_64::*;
    let abs = _mm256_set1_epi32(0x7fff_ffff);
    let mut m = [_mm256_setzero_si256(); 4];
    let rounds = v.chunks_exact(32);
    let rest = rounds.remainder();
    for r in rounds {
        for (k, mk) in m.iter_mut().enumerate() {
            // SAFETY: `r` holds 32 f32, so values 8k..8k + 8 are inside it; the load is unaligned.
            let x = _mm256_loadu_si256(r.as_ptr().add(8 * k).cast());
            *mk = _mm256_max_epu32(*mk, _mm256_and_si256(x, abs));
        }
    }
    let top = _mm256_max_epu32(_mm256_max_epu32(m[0], m[1]), _mm256_max_epu32(m[2], m[3]));
    let mut lanes = [0u32; 8];
    _mm256_storeu_si256(lanes.as_mut_ptr().cast(), top);
    lanes.into_iter().chain(rest.iter().map(|x| x.to_bits() & 0x7fff_ffff)).max().unwrap_or(0)
}

#[inline(always)]
fn max_magnitude_bits_any(v: &[f32]) -> u32 {
    const L: usize = 16;
    let mut m = [0u32; L];
    let chunks = v.chunks_exact(L);
    let tail = chunks.remainder();
    for c in chunks {
        for (mk, x) in m.iter_mut().zip(c) {
            *mk = (*mk).max(x.to_bits() & 0x7fff_ffff);
        }
    }
    tail.iter().map(|x| x.to_bits() & 0x7fff_ffff).chain(m).max().unwrap_or(0)
}

/// Stats of a slice, converting each element to f64.
pub fn of_slice<T: Copy>(v: &[T], f: impl Fn(T) -> f64 + Copy) -> Option<Stats> {
    let mut acc = Acc::<true>::default();
    acc.add(v, f);
    Some(acc.finish(v, f))
}

/// `f64::max` for a running maximum that is never NaN: a NaN `x` leaves it
/// (infinities are found in `finish`), and unlike `max` it compiles to one
/// vector compare-and-select.
#[inline(always)]
fn larger(m: f64, x: f64) -> f64 {
    if x > m {
        x
    } else {
        m
    }
}

/// How the fused optimizer update (`kernel::update`) adds a block of its type to the watch's
/// sums: f32 reads each value once for both the sums and the profile (AVX2); f64 (rare) takes
/// two passes.
pub(crate) trait Block: Magnitude {
    /// Adds a gradient block to the sum of squares and the magnitude profile.
    fn watch_grad(acc: &mut Acc<false>, prof: &mut Profile, v: &[Self]);
    /// Adds a parameter block to the sum of squares.
    fn watch_param(acc: &mut Acc<false>, v: &[Self]);
}

impl Block for f32 {
    fn watch_grad(acc: &mut Acc<false>, prof: &mut Profile, v: &[Self]) {
        acc.add_profiled(v, prof)
    }

    fn watch_param(acc: &mut Acc<false>, v: &[Self]) {
        acc.add_f32(v)
    }
}

impl Block for f64 {
    fn watch_grad(acc: &mut Acc<false>, prof: &mut Profile, v: &[Self]) {
        acc.add(v, |x| x);
        <f64 as Magnitude>::profile(v, prof);
    }

    fn watch_param(acc: &mut Acc<false>, v: &[Self]) {
        acc.add(v, |x| x)
    }
}

impl Acc<false> {
    /// [`Acc::add`] of an f32 block (the same sums, bit for bit) that also adds the block's
    /// magnitude profile to `p`, reading each value once: the fused update's gradient pass.
    pub(crate) fn add_profiled(&mut self, v: &[f32], p: &mut Profile) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.add_f32_avx2::<true>(v, p) };
        }
        self.add(v, f64::from);
        f32::profile(v, p);
    }

    /// [`Acc::add`] of an f32 block, the same sums bit for bit: the fused update's parameter
    /// pass (in intrinsics, a third faster than the generic loop, perf).
    pub(crate) fn add_f32(&mut self, v: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.add_f32_avx2::<false>(v, &mut Profile::default()) };
        }
        self.add(v, f64::from);
    }

    /// Lanes 0–3 and 4–7 of the sums in two registers, `sq += a·a` as a multiply then an add
    /// (as the plain loop computes it), and with `PROFILE` the profile's integer compares on
    /// the same load.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn add_f32_avx2<const PROFILE: bool>(&mut self, v: &[f32], p: &mut Profile) {
        use std::arch::x86_64::*;
        let lanes = v.chunks_exact(LANES);
        let tail = lanes.remainder();
        let (mut lo, mut hi) = (_mm256_loadu_pd(self.sq.as_ptr()), _mm256_loadu_pd(self.sq.as_ptr().add(4)));
        let (abs, minus1, below) = (_mm256_set1_epi32(0x7fff_ffff), _mm256_set1_epi32(-1), _mm256_set1_epi32(0x007f_fffe));
        let (mut top, mut tiny) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        for c in lanes {
            // SAFETY: `c` holds 8 f32, 32 bytes; the loads are unaligned.
            let x = _mm256_loadu_ps(c.as_ptr());
            let (a, b) = (_mm256_cvtps_pd(_mm256_castps256_ps128(x)), _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
            lo = _mm256_add_pd(lo, _mm256_mul_pd(a, a));
            hi = _mm256_add_pd(hi, _mm256_mul_pd(b, b));
            if PROFILE {
                let m = _mm256_and_si256(_mm256_castps_si256(x), abs);
                top = _mm256_max_epu32(top, m);
                // 0 < m < smallest normal ⇔ m − 1 ≤ 0x7ffffe (unsigned) ⇔ min(m − 1, 0x7ffffe) = m − 1.
                let d = _mm256_add_epi32(m, minus1);
                tiny = _mm256_sub_epi32(tiny, _mm256_cmpeq_epi32(_mm256_min_epu32(d, below), d));
            }
        }
        _mm256_storeu_pd(self.sq.as_mut_ptr(), lo);
        _mm256_storeu_pd(self.sq.as_mut_ptr().add(4), hi);
        for (k, x) in tail.iter().enumerate() {
            let a = f64::from(*x);
            self.sq[k] += a * a;
        }
        if PROFILE {
            let (mut t, mut n) = ([0u32; 8], [0u32; 8]);
            _mm256_storeu_si256(t.as_mut_ptr().cast(), top);
            _mm256_storeu_si256(n.as_mut_ptr().cast(), tiny);
            let top = f32::from_bits(t.into_iter().max().unwrap_or(0)) as f64;
            p.merge(top, n.iter().map(|&x| x as usize).sum(), v.len() - tail.len());
            f32::profile(tail, p);
        }
    }
}

/// Lanes of the running sums.
const LANES: usize = 8;

/// [`Stats`] accumulated over a slice read in order, in blocks whose lengths
/// are multiples of [`LANES`] (all but the last), so a pass that already reads
/// the values (the fused optimizer) can gather them on the way.
///
/// Element `i` always goes to lane `i % 8`, and each lane adds in index
/// order: eight independent accumulators let the loop vectorise, and the
/// result has the same bits however the slice is split into blocks. With
/// `MAX = false` the largest magnitude is not gathered (`max_abs` is NaN),
/// for gradients and parameters, whose norms are all the trace keeps.
#[derive(Debug, Clone)]
pub(crate) struct Acc<const MAX: bool = true> {
    sq: [f64; LANES],
    mx: [f64; LANES],
}

impl<const MAX: bool> Default for Acc<MAX> {
    fn default() -> Self {
        Acc { sq: [0.0; LANES], mx: [0.0; LANES] }
    }
}

impl<const MAX: bool> Acc<MAX> {
    /// Adds the next block of the slice (with AVX2 where the CPU has it: the same operations in
    /// the same order on wider registers, so the same bits).
    pub(crate) fn add<T: Copy>(&mut self, v: &[T], f: impl Fn(T) -> f64) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { self.add_avx2(v, f) };
        }
        self.add_any(v, f);
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn add_avx2<T: Copy>(&mut self, v: &[T], f: impl Fn(T) -> f64) {
        self.add_any(v, f);
    }

    #[inline(always)]
    fn add_any<T: Copy>(&mut self, v: &[T], f: impl Fn(T) -> f64) {
        // Local copies, so the sums stay in registers across the loop.
        let (mut sq, mut mx) = (self.sq, self.mx);
        let chunks = v.chunks_exact(LANES);
        let tail = chunks.remainder();
        for c in chunks {
            let a: [f64; LANES] = std::array::from_fn(|k| f(c[k]));
            for k in 0..LANES {
                sq[k] += a[k] * a[k];
                if MAX {
                    mx[k] = larger(mx[k], a[k].abs());
                }
            }
        }
        for (k, x) in tail.iter().enumerate() {
            let a = f(*x);
            sq[k] += a * a;
            if MAX {
                mx[k] = larger(mx[k], a.abs());
            }
        }
        (self.sq, self.mx) = (sq, mx);
    }

    /// The stats of `whole`, the slice every block came from (read again only if it holds a non-finite value).
    pub(crate) fn finish<T: Copy>(self, whole: &[T], f: impl Fn(T) -> f64) -> Stats {
        let mut sum_sq = self.sq.iter().sum::<f64>();
        let mut max_abs = if MAX { self.mx.iter().copied().fold(0.0, f64::max) } else { f64::NAN };
        let (mut first_bad, mut bad) = (None, 0);
        if !sum_sq.is_finite() {
            first_bad = whole.iter().map(|x| f(*x)).enumerate().find(|(_, a)| !a.is_finite());
            bad = whole.iter().filter(|x| !f(**x).is_finite()).count();
            if first_bad.is_some() {
                max_abs = whole.iter().map(|x| f(*x).abs()).filter(|a| a.is_finite()).fold(0.0, f64::max);
                sum_sq = f64::NAN;
            }
        }
        Stats { max_abs, sum_sq, first_bad, bad, tiny: 0 }
    }
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
    fn blocks_give_the_bits_of_one_pass() {
        let v: Vec<f32> = (0..1003).map(|i| ((i * 37 % 101) as f32 - 50.0) * 1.37e-3).collect();
        let whole = of_slice(&v, |x| x as f64).unwrap();
        let mut acc = Acc::<true>::default();
        for block in v.chunks(64) {
            acc.add(block, |x| x as f64);
        }
        let blocked = acc.finish(&v, |x| x as f64);
        assert_eq!((whole.sum_sq.to_bits(), whole.max_abs.to_bits()), (blocked.sum_sq.to_bits(), blocked.max_abs.to_bits()));
        // The profiled pass gives the same sums, and the profile of the whole slice.
        let mut w: Vec<f32> = v.clone();
        w[5] = 1e-40;
        w[1000] = -3e-39;
        let (mut plain, mut acc, mut fast, mut prof) = (Acc::<false>::default(), Acc::<false>::default(), Acc::<false>::default(), Profile::default());
        for block in w.chunks(64) {
            plain.add(block, f64::from);
            acc.add_profiled(block, &mut prof);
            fast.add_f32(block);
        }
        let bits = |a: Acc<false>| a.finish(&w, f64::from).sum_sq.to_bits();
        assert_eq!((bits(acc), bits(fast)), (bits(plain.clone()), bits(plain)));
        assert_eq!((prof, prof.tiny), (profile(&w), 2));
    }

    #[test]
    fn extent_agrees_with_stats() {
        let cases: [&[f32]; 5] = [&[], &[-0.0, 0.0], &[1.5, -3.25, 2.0, f32::MAX, -1e-40], &[1.0, f32::NEG_INFINITY, f32::NAN, -7.0], &[3.0; 37]];
        for v in cases {
            let t = Tensor::new(v, &Device::Cpu).unwrap();
            let (e, s) = (extent(&t).unwrap(), stats(&t).unwrap());
            assert_eq!((e.max_abs, e.first_bad.map(|b| b.0)), (s.max_abs, s.first_bad.map(|b| b.0)), "{v:?}");
        }
    }

    /// The scan's largest magnitude bits equal a plain maximum of `|x|` over lengths around its
    /// 32-value rounds, with the largest value in every position (first, inside a round, in the
    /// remainder) and negative, and with a NaN or an infinity anywhere (which sort above).
    #[test]
    fn magnitude_scan_is_the_plain_maximum() {
        for len in [0usize, 1, 7, 31, 32, 33, 64, 95, 1000, 1027] {
            let base: Vec<f32> = (0..len).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.01).collect();
            for at in [0, len / 3, len.saturating_sub(1)].into_iter().filter(|&a| a < len) {
                for top in [-7.5f32, 7.5, f32::NAN, f32::NEG_INFINITY] {
                    let mut v = base.clone();
                    v[at] = top;
                    let plain = v.iter().map(|x| x.abs().to_bits()).fold(0, u32::max);
                    assert_eq!(max_magnitude_bits(&v), plain, "len {len}, {top} at {at}");
                    assert_eq!(max_magnitude_bits_any(&v), plain, "len {len}, {top} at {at}");
                }
            }
            assert_eq!(max_magnitude_bits(&base), base.iter().map(|x| x.abs().to_bits()).fold(0, u32::max), "len {len}");
        }
        assert_eq!(f32::from_bits(max_magnitude_bits(&[0.25, -3.0, 2.0])), 3.0);
    }

    #[test]
    fn huge_finite_f64_is_not_flagged() {
        let t = Tensor::new(&[1e200f64, 1e200], &Device::Cpu).unwrap();
        let s = stats(&t).unwrap();
        assert!(s.first_bad.is_none() && s.sum_sq.is_infinite());
    }
}
