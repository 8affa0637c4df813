//! The recurrent cells' `tanh` and `sigmoid` in f32, vectorisable: each computed in f64
//! (an exponential by Cody–Waite reduction and a degree-11 polynomial, then PyTorch's formula)
//! and rounded once to f32, so the result is the correctly rounded value but in the rarest
//! near-ties, within 1 ulp always (PyTorch's CPU LSTM uses Sleef's `tanhf` u10, 1 ulp), the
//! sigmoid by PyTorch's own f32 formula `1 / (1 + exp(−x))` on a correctly rounded `exp` (Sleef's
//! `expf` in PyTorch); glibc's `tanhf`, which Candle's `tanh` calls, is
//! within 1 ulp too, but one call per value took a third of an LSTM's step).
//!
//! Branch-free, so the slice forms vectorise (AVX-512 and AVX2 copies through `avx2!`, with
//! the same operations and so the same bits as the plain loop). Special values as PyTorch's:
//! `tanh(±0) = ±0`, `tanh(±∞) = ±1`, tiny and subnormal inputs returned as they are, NaN stays
//! NaN; `sigmoid(x)` is 0 from x = −88.7228 down, where f32's `e⁻ˣ` overflows (PyTorch 2.15's
//! `torch.sigmoid(-100.)` is 0.0, not the true 3.7e-44), subnormal just above, `sigmoid(∞) = 1`.
//!
//! The slice forms reach the same bits by a shorter road: the same f64 values to within
//! 1e-13 by fused multiply-adds and polynomials fitted to the range (some 45% fewer
//! operations), trusted where rounding them to
//! f32 cannot be decided by so small an error (not within [`TIE`] f64 ulps of a halfway
//! point); a block of [`BLOCK`] values with one that is not (one value in some 30 000, and
//! for tanh, every f32 subnormal result) is computed again the scalar way. A test over every one of
//! the 2³² f32 inputs finds both forms the scalar functions' bits (in release;
//! `.ci/run` runs it, at the widest tier the CPU has: the others compute the same correctly rounded
//! fused multiply-adds, the plain tier through the library's `fma` where the CPU has none).
//!
//! The fused cells (`cells.rs`, through `Real::tanh` and `Real::sigmoid`) and the composed
//! recurrent path (`run::model::recurrent`, through the Candle ops `tanh` and `sigmoid` of
//! `gates.rs`, in every float dtype on the CPU: f64 exact, f16 and bf16 from f32 rounded once)
//! compute the same function, so the two still agree bit for bit.

use super::avx2;

/// `1.5·2⁵²`: added to a value of magnitude under 2⁵¹, it rounds it to an integer (ties to even)
/// held in the low bits of the sum.
const ROUND: f64 = 6_755_399_441_055_744.0;

/// `eʸ` for `|y| ≤ 708` (callers clamp; NaN gives NaN or garbage that callers replace):
/// `y = n·ln 2 + r`, `|r| ≤ ln 2 / 2`, ln 2 in two parts (fdlibm's, the first exact times `n`),
/// `eʳ` by its Taylor series to `r¹¹/11!` (truncation under 6e-15), times `2ⁿ` built in the
/// exponent bits. No float-to-integer conversion, so it vectorises without AVX-512DQ.
#[inline(always)]
fn exp_f64(y: f64) -> f64 {
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // 6.93147180369123816490e-01
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // 1.90821492927058770002e-10
    let t = y * std::f64::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (y - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 39_916_800.0;
    for c in [1.0 / 3_628_800.0, 1.0 / 362_880.0, 1.0 / 40_320.0, 1.0 / 5_040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = p * r + c;
    }
    // n = t's bits minus ROUND's (t lies in ROUND's binade, where the ulp is 1).
    let scale = f64::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(1023) << 52);
    p * scale
}

/// `tanh(x)` in f32, within 1 ulp (see the module). In f64: for `|x| < 1/16` the odd series to
/// `x⁹` (truncation under 1e-14 relative), else `1 − 2/(e²ˣ + 1)` with `|x|` capped at 10
/// (where f32's tanh is already 1); the sign of `x` put back, NaN through.
#[inline(always)]
pub(crate) fn tanh_f32(x: f32) -> f32 {
    let a = f64::from(x).abs();
    let y = a.min(10.0);
    let big = 1.0 - 2.0 / (exp_f64(2.0 * y) + 1.0);
    let s = y * y;
    let small = y + y * s * (-1.0 / 3.0 + s * (2.0 / 15.0 + s * (-17.0 / 315.0 + s * (62.0 / 2835.0))));
    let t = (if a < 0.0625 { small } else { big }) as f32;
    if x.is_nan() {
        x
    } else {
        t.copysign(x)
    }
}

/// The largest `x` whose f32 `e⁻ˣ` overflows (−88.72283935546875, bits `0xc2b17218`): from it
/// down PyTorch 2.15's f32 sigmoid is 0 (`torch.sigmoid` of it is 0.0, of the next float up
/// 2.938758e-39), as Candle's with glibc's `expf` was.
const SIGMOID_ZERO: f32 = f32::from_bits(0xc2b1_7218);

/// `sigmoid(x) = 1 / (1 + e⁻ˣ)` in f32 as PyTorch's CPU kernel computes it (ATen's vectorised
/// `(1 + (−x).exp()).reciprocal()`): `e⁻ˣ` rounded to f32 (from f64, `−x` clamped to ±200, so
/// it is infinite where f32's overflows), then the sum and the reciprocal in f32, so within
/// 2 ulps of the true value as PyTorch's is (on 2 million uniform values in [−30, 30] it gives
/// PyTorch 2.15's bits for 96% against 71% for the correctly rounded value; the rest is Sleef's
/// `expf`); 0 from [`SIGMOID_ZERO`] down, as PyTorch's; NaN through.
#[inline(always)]
pub(crate) fn sigmoid_f32(x: f32) -> f32 {
    let e = exp_f64((-f64::from(x)).clamp(-200.0, 200.0)) as f32;
    let s = 1.0 / (1.0 + e);
    if x.is_nan() {
        x
    } else if x <= SIGMOID_ZERO {
        0.0
    } else {
        s
    }
}

/// How near, in f64 ulps, a fast value may come to a halfway point between two f32 values
/// and still be rounded: 2¹⁴ ulps, 2 to 4e-12 relative, far above the two forms' errors
/// (series truncated at 6e-15 and 4e-14 relative, and some ulps of rounding); the exhaustive
/// test is the proof.
const TIE: u64 = 1 << 14;

/// Whether `v`, positive and in f32's normal range, lies within [`TIE`] f64 ulps of a halfway
/// point of rounding to f32 (its 29 low mantissa bits near `2²⁸`).
#[inline(always)]
fn near_tie(v: f64) -> bool {
    let low = v.to_bits() & ((1 << 29) - 1);
    low.wrapping_sub((1 << 28) - TIE) < 2 * TIE
}

/// `eᶻ = 2ⁿ·eʳ` for `|z| ≤ 708`, reduced by fused multiply-adds: `(r, 2ⁿ)`, `r = z − n·ln 2`
/// in one step with f64's `ln 2` (2.3e-17 from the true value, so `r` errs by under 2.4e-14
/// for `|n| ≤ 1022`, 7e-15 for the sigmoid's `|z| ≤ 200`; [`exp_f64`] splits `ln 2` in two
/// for its exact `r`), `|r|` within [`EXP_POLY`]'s range; `n` may differ from [`exp_f64`]'s by one.
#[inline(always)]
fn reduce(z: f64) -> (f64, f64) {
    let t = z.mul_add(std::f64::consts::LOG2_E, ROUND);
    let n = t - ROUND;
    let r = (-n).mul_add(std::f64::consts::LN_2, z);
    (r, f64::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(1023) << 52))
}

/// The polynomial with coefficients `coefs` (the highest power's first) at `r`, by fused
/// Horner steps.
#[inline(always)]
fn horner(r: f64, coefs: &[f64]) -> f64 {
    coefs[1..].iter().fold(coefs[0], |p, &c| p.mul_add(r, c))
}

/// `eʳ` for `|r| ≤ 0.3468` (`ln 2 / 2` and a margin) by a degree-9 polynomial (the highest
/// power's first): Chebyshev fits (mpmath 1.3 `chebyfit`, 40 digits) rounded to f64, within
/// 1.9e-14 relative of `eʳ` on a grid of 4001 points, 100 times inside [`TIE`]; the Taylor
/// series to `r¹¹/11!` that it replaced took two more fused multiply-adds.
const EXP_POLY: [f64; 10] = [
    2.763_272_761_577_301_3e-6,
    2.488_455_542_965_606_6e-5,
    1.984_119_046_469_690_2e-4,
    1.388_880_154_843_393_2e-3,
    8.333_333_367_429_323e-3,
    4.166_666_704_184_739e-2,
    0.166_666_666_666_154_12,
    0.499_999_999_994_359_96,
    1.000_000_000_000_001_3,
    1.000_000_000_000_013_5,
];

/// `(eʳ − 1)/r` for `|r| ≤ 0.3468` by a degree-8 polynomial, fitted as [`EXP_POLY`]: within
/// 9e-14 relative on the same grid (the series to `r¹⁰/11!` took two more).
const EXPM1_POLY: [f64; 9] = [
    2.762_518_023_663_39e-6,
    2.487_625_011_315_287_2e-5,
    1.984_120_861_596_646e-4,
    1.388_882_152_243_764_4e-3,
    8.333_333_353_787_773e-3,
    4.166_666_689_173_41e-2,
    0.166_666_666_666_482_17,
    0.499_999_999_997_97,
    1.0,
];

/// [`tanh_f32`]'s value by the short road, and whether it is not to be trusted (near a tie, or
/// an f32 subnormal): `e²ʸ − 1` for `y = min(|x|, 10)` as `2ⁿ·(eʳ − 1) + (2ⁿ − 1)`, `eʳ − 1`
/// as `r` times [`EXPM1_POLY`] (so no cancellation near 0, and no second formula there),
/// then `(e²ʸ − 1)/(e²ʸ + 1)`.
#[inline(always)]
fn tanh_fast(x: f32) -> (f32, bool) {
    let y2 = f64::from(x).abs().min(10.0) * 2.0;
    let (r, s) = reduce(y2);
    let em = s.mul_add(horner(r, &EXPM1_POLY) * r, s - 1.0);
    let t = em / (em + 2.0);
    let doubt = near_tie(t) | ((t < f64::from(f32::MIN_POSITIVE)) & (t != 0.0));
    (if x.is_nan() { x } else { (t as f32).copysign(x) }, doubt)
}

/// [`sigmoid_f32`]'s value by the short road, and whether it is not to be trusted: `e⁻ˣ` by
/// [`EXP_POLY`] and fused operations, doubted near a tie unless under `2⁻²⁵`, where `1 + e`
/// is 1 in f32 whichever way `e` rounds (and f32 subnormals lie far below).
#[inline(always)]
fn sigmoid_fast(x: f32) -> (f32, bool) {
    let (r, s) = reduce((-f64::from(x)).clamp(-200.0, 200.0));
    let e = horner(r, &EXP_POLY) * s;
    let doubt = near_tie(e) & (e > 2.980_232_238_769_531_2e-8);
    let v = 1.0 / (1.0 + e as f32);
    (
        if x.is_nan() {
            x
        } else if x <= SIGMOID_ZERO {
            0.0
        } else {
            v
        },
        doubt,
    )
}

/// The values a slice form computes and checks together.
const BLOCK: usize = 64;

/// A block's inputs (256 bytes), kept for the rare redo, starting on a cache line: zeroing a block
/// split across lines at each call (the call's stack decides where it starts) took a third of
/// the sigmoid's time in one LSTM run and none in another on the same values (perf, Intel Xeon).
#[repr(align(64))]
struct Kept([f32; BLOCK]);

/// `fast` of every value of `v`, or `exact` of every value of a block where `fast` doubts one.
/// The inputs are kept as the same loop overwrites them (a block computed aside and copied in
/// called `memmove`: 1.1% of a language model's step).
#[inline(always)]
fn checked(v: &mut [f32], fast: impl Fn(f32) -> (f32, bool), exact: impl Fn(f32) -> f32) {
    let mut kept = Kept([0.0; BLOCK]);
    for block in v.chunks_mut(BLOCK) {
        let mut doubt = false;
        for (x, k) in block.iter_mut().zip(kept.0.iter_mut()) {
            *k = *x;
            let (y, d) = fast(*x);
            *x = y;
            doubt |= d;
        }
        if doubt {
            block.iter_mut().zip(kept.0).for_each(|(x, k)| *x = exact(k));
        }
    }
}

avx2! {
    /// [`tanh_f32`] of every value in place.
    fn tanh_all_f32(v: &mut [f32]) -> usize {
        checked(v, tanh_fast, tanh_f32);
        v.len()
    }
}

avx2! {
    /// [`sigmoid_f32`] of every value in place.
    fn sigmoid_all_f32(v: &mut [f32]) -> usize {
        checked(v, sigmoid_fast, sigmoid_f32);
        v.len()
    }
}

/// `tanh` of every value of `v` in place (f32: vectorised).
#[inline]
pub(crate) fn tanh_all(v: &mut [f32]) {
    tanh_all_f32(v);
}

/// `sigmoid` of every value of `v` in place (f32: vectorised).
#[inline]
pub(crate) fn sigmoid_all(v: &mut [f32]) {
    sigmoid_all_f32(v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::kernel::WIDEST;

    /// The distance in f32 ulps between two finite or infinite values of one sign convention.
    fn ulps(a: f32, b: f32) -> i64 {
        let key = |v: f32| if v.is_sign_negative() { -i64::from(v.to_bits() & 0x7fff_ffff) } else { i64::from(v.to_bits()) };
        (key(a) - key(b)).abs()
    }

    /// Every 509th f32 (all magnitudes, both signs: 8.4 million values, with ±0, ±∞ and NaNs)
    /// and a dense linear sweep of [−12, 12], against f64's `tanh` rounded, and the sigmoid
    /// against PyTorch's f32 formula on f64's `exp` rounded (and the true value, within 2 ulps).
    #[test]
    fn tanh_is_within_one_ulp_of_f64_and_sigmoid_is_pytorchs_formula_over_a_dense_sweep() {
        let xs = (0..=u32::MAX / 509).map(|i| f32::from_bits(i * 509)).chain((-1_200_000..=1_200_000).map(|i| i as f32 * 1e-5));
        let (mut worst, mut off, mut n, mut sig_worst) = ([0i64; 2], [0usize; 2], 0usize, 0i64);
        for x in xs.chain([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::from_bits(1), -f32::from_bits(1), f32::MIN_POSITIVE]) {
            let (t, s) = (tanh_f32(x), sigmoid_f32(x));
            if x.is_nan() {
                assert!(t.is_nan() && s.is_nan(), "{x}");
                continue;
            }
            let want_t = f64::from(x).tanh() as f32;
            // The sigmoid: PyTorch's f32 formula on f64's exp rounded to f32 (checked against
            // the true value below, within 2 ulps).
            let want_s = if x <= SIGMOID_ZERO { 0.0 } else { 1.0 / (1.0 + ((-f64::from(x)).exp() as f32)) };
            let true_s = if x <= SIGMOID_ZERO { 0.0 } else { (1.0 / (1.0 + (-f64::from(x)).exp())) as f32 };
            sig_worst = sig_worst.max(ulps(s, true_s));
            assert_eq!(t.is_sign_negative(), x.is_sign_negative(), "tanh({x:e}) = {t:e} keeps the sign");
            for (k, (got, want)) in [(t, want_t), (s, want_s)].into_iter().enumerate() {
                let d = ulps(got, want);
                worst[k] = worst[k].max(d);
                off[k] += usize::from(d != 0);
            }
            n += 1;
        }
        assert!(worst[0] <= 1 && worst[1] <= 1, "max ulps {worst:?} over {n} values");
        assert!(sig_worst <= 2, "the sigmoid is {sig_worst} ulps from the true value");
        // tanh correctly rounded, the sigmoid the formula's value, but in the rarest near-ties
        // (PyTorch 2.15's tanh is within 1 ulp of the correctly rounded, 99.90% equal on 2 million
        // uniform values in [−12, 12]; its sigmoid within 2 ulps, 62.6% equal).
        assert!(off[0] * 100_000 < n && off[1] * 100_000 < n, "{off:?} of {n} not correctly rounded");
    }

    #[test]
    fn special_values_are_pytorchs() {
        // PyTorch 2.15, torch.tanh / torch.sigmoid on float32 tensors.
        assert_eq!(tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh_f32(0.0).to_bits(), 0);
        assert_eq!((tanh_f32(f32::INFINITY), tanh_f32(f32::NEG_INFINITY)), (1.0, -1.0));
        assert!(tanh_f32(f32::NAN).is_nan() && sigmoid_f32(f32::NAN).is_nan());
        assert_eq!(tanh_f32(1e-30), 1e-30);
        assert_eq!(tanh_f32(f32::from_bits(1)), f32::from_bits(1));
        assert_eq!(f64::from(tanh_f32(9.0)), 0.999_999_940_395_355_2);
        let torch_tanh = [(0.01, 0.009_999_666_363_000_87), (0.3, 0.291_312_634_944_915_77), (0.5, 0.462_117_165_327_072_14), (1.0, 0.761_594_176_292_419_4), (2.5, 0.986_614_286_899_566_7)];
        for (x, want) in torch_tanh {
            assert_eq!(f64::from(tanh_f32(x)), want, "tanh({x})");
        }
        // sigmoid: 0 from −88.72283935546875 down (f32's e⁻ˣ overflows), 6.0546015e-39 at −88,
        // 2.0611537e-9 at −20, 0.62245935 at 0.5, 0.95257413 at 3 (PyTorch's bits).
        assert_eq!(sigmoid_f32(-100.0), 0.0);
        assert_eq!(sigmoid_f32(f32::from_bits(0xc2b1_7218)), 0.0);
        // At the float above, the true 2097167.49 subnormal ulps would round to 0x0020000f;
        // PyTorch gives 0x00200010 (2.938758e-39), from its f32 reciprocal of e⁸⁸·⁷², as here.
        assert_eq!(sigmoid_f32(f32::from_bits(0xc2b1_7217)).to_bits(), 0x0020_0010);
        assert_eq!(sigmoid_f32(-88.0).to_bits(), 0x0041_edc4);
        assert_eq!(sigmoid_f32(-20.0).to_bits(), 0x310d_a433);
        assert_eq!(sigmoid_f32(0.5).to_bits(), 0x3f1f_597f);
        assert_eq!(sigmoid_f32(3.0).to_bits(), 0x3f73_dbe6);
        assert_eq!((sigmoid_f32(0.0), sigmoid_f32(f32::NEG_INFINITY), sigmoid_f32(f32::INFINITY), sigmoid_f32(100.0)), (0.5, 0.0, 1.0, 1.0));
    }

    /// A value halfway between two f32 values, and those within [`TIE`] ulps of it, are near a
    /// tie; an f32 value itself and values [`TIE`] ulps above it or more below are not.
    #[test]
    fn near_tie_marks_the_halfway_points() {
        for a in [1.0f32, 0.3, 0.999_999_94, 1.5e-30, 3.0e38] {
            let half = (f64::from(a) + f64::from(f32::from_bits(a.to_bits() + 1))) / 2.0;
            let at = |d: i64| f64::from_bits(half.to_bits().wrapping_add_signed(d));
            assert!(near_tie(half) && near_tie(at(1 - TIE as i64)) && near_tie(at(TIE as i64 - 1)), "{a}");
            assert!(!near_tie(f64::from(a)) && !near_tie(at(-(TIE as i64) - 1)) && !near_tie(at(TIE as i64)), "{a}");
        }
    }

    /// The slice forms against the scalar functions (unfused f64 arithmetic) on every 4099th
    /// f32 and a dense sweep of [−12, 12]; the short road is taken for nearly every value.
    #[test]
    fn the_slice_forms_give_the_scalar_bits_and_seldom_doubt() {
        let xs: Vec<f32> = (0..=u32::MAX / 4099).map(|i| f32::from_bits(i * 4099)).chain((-1_200_000..=1_200_000).map(|i| i as f32 * 1e-5)).collect();
        same_bits_as_scalar(&xs);
        let sweep = &xs[xs.len() - 2_400_001..];
        let doubts = |f: fn(f32) -> (f32, bool)| sweep.iter().filter(|x| f(**x).1).count();
        let (dt, ds) = (doubts(tanh_fast), doubts(sigmoid_fast));
        assert!(dt > 0 && ds > 0 && dt * 5_000 < sweep.len() && ds * 5_000 < sweep.len(), "doubted {dt} and {ds} of {}", sweep.len());
    }

    /// The slice forms of `xs` against the scalar functions, bit for bit.
    fn same_bits_as_scalar(xs: &[f32]) {
        let (mut t, mut s) = (xs.to_vec(), xs.to_vec());
        tanh_all(&mut t);
        sigmoid_all(&mut s);
        for ((x, t), s) in xs.iter().zip(&t).zip(&s) {
            assert_eq!(t.to_bits(), tanh_f32(*x).to_bits(), "tanh({x:e})");
            assert_eq!(s.to_bits(), sigmoid_f32(*x).to_bits(), "sigmoid({x:e})");
        }
    }

    /// Every f32 input in an optimised build (some 30 to 70 s: `.ci/run` runs
    /// `cargo test --release -p nanhunt --lib every_f32`), the slice forms give the scalar
    /// functions' bits; unoptimised (the plain `cargo test`), every 1021st run of 2¹⁶ inputs.
    #[test]
    fn the_slice_forms_give_the_scalar_bits_for_every_f32() {
        let stride = if cfg!(debug_assertions) { 1021 } else { 1 };
        let mut x = vec![0.0f32; 1 << 16];
        for hi in (0..1u32 << 16).step_by(stride) {
            x.iter_mut().enumerate().for_each(|(lo, v)| *v = f32::from_bits(hi << 16 | lo as u32));
            same_bits_as_scalar(&x);
        }
    }

    /// The AVX-512, AVX2 and plain slice loops give the scalar function's bits.
    #[test]
    fn every_tier_gives_the_scalar_bits() {
        let mut v: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin() * (i % 13) as f32 * 9.0).collect();
        // A subnormal makes its block take the scalar road.
        v.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-30, -95.0, 1e-3, f32::from_bits(3)]);
        let scalar: Vec<[u32; 2]> = v.iter().map(|&x| [tanh_f32(x).to_bits(), sigmoid_f32(x).to_bits()]).collect();
        for tier in [0, 1, 2] {
            WIDEST.with(|w| w.set(tier));
            let (mut t, mut s) = (v.clone(), v.clone());
            tanh_all(&mut t);
            sigmoid_all(&mut s);
            WIDEST.with(|w| w.set(2));
            let got: Vec<[u32; 2]> = t.iter().zip(&s).map(|(a, b)| [a.to_bits(), b.to_bits()]).collect();
            assert_eq!(got, scalar, "tier {tier}");
        }
    }
}
