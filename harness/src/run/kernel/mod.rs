//! Every custom CPU kernel, one file each. The fused recurrent layers (`recurrent`,
//! the RNN, LSTM and GRU over the whole sequence, their products in `recurrent_gemm`, their cells' arithmetic in `cells`,
//! their vectorised `tanh` and `sigmoid` in `vmath`, their buffers reused across steps
//! through `spare`; `gather`, their input projection from an embedding's table rows).
//! The fused kernels of the layers that
//! dominate a transformer's step: the dense layer (`linear`, `bias`),
//! attention's per-head products (`heads`), its masked softmax, GELU, layer
//! norm and the cross-entropy, each one op forward and one backward (Candle
//! composes each from several ops, and its backward makes and adds a zero
//! gradient for every one of their tensors: the tiny GPT spent most of its step
//! there). PyTorch's own forms where Candle's differ: `relu`, the elementwise
//! activations through one [`pointwise::Pointwise`] (`f(x)` and `df(x)`),
//! `elementwise` (clamp, abs, and the element-by-element maps the registry's
//! ops share), `activation` (softplus, softmax), `bce_torch`, and the one-pass
//! optimizer `update`, and PyTorch's CTC loss recursions (`ctc`). `conv` (im2col and gemm per sample, the columns kept for the backward) and `pool`
//! (tiling max and mean pools) are the image layers', `batch_norm` (one pass each way, over features or image channels) their normalisation. `cast` converts to and from the half types in one pass,
//! and `flawed_square` is the one custom op with a deliberately wrong backward
//! (seed 002 ex3). Other devices (and half dtypes, for the products other than the
//! recurrence's, `recurrent_gemm.rs`) keep the composed forms.
//!
//! Each kernel is written once over [`Real`] and reached through
//! [`dispatch`], the one match from a storage's dtype to the kernel's type
//! (`real.rs`); [`takes`] (and [`handles`], its f32-and-f64 form) says which
//! tensors can take a kernel.
//!
//! f32 uses the vectorisable `exp` and `erf` of `real.rs` (PyTorch's CPU kernels use
//! vectorised approximations too: Sleef's `expf` and, for GELU, the
//! Abramowitz–Stegun erf with its constants); f64 uses the exact functions; f16
//! and bf16 are computed in f32 and rounded once, as PyTorch's opmath does. The
//! loops are sequential, so results do not depend on thread count, and the
//! AVX-512 and AVX2 copies compute the same operations (`mul_add` is a fused
//! multiply-add on every path), so they do not depend on the CPU either.

use candle_core::Tensor;

pub(crate) mod activation;
pub(crate) mod batch_norm;
pub(crate) mod bce_torch;
pub(crate) mod bias;
pub(crate) mod cast;
pub(crate) mod cells;
pub(crate) mod conv;
mod conv_cols;
pub(crate) mod cross_entropy;
pub(crate) mod ctc;
pub(crate) mod elementwise;
pub(crate) mod flawed_square;
pub(crate) mod gates;
pub(crate) mod gather;
pub(crate) mod gelu;
mod head_product;
pub(crate) mod heads;
pub(crate) mod layer_norm;
pub(crate) mod linear;
pub(crate) mod pointwise;
pub(crate) mod pool;
mod real;
pub(crate) mod recurrent;
mod recurrent_gemm;
pub(crate) mod relu;
pub(crate) mod softmax;
pub(crate) mod spare;
mod transpose;
pub(crate) mod update;
pub(crate) mod vmath;

pub(crate) use real::{contiguous, dispatch, erf_f32, exp_f32, takes, Dtypes, Kernel, Real};

/// Whether the fused products and losses handle `t`: on the CPU, in f32 or f64 (half dtypes
/// keep Candle's products, and other devices the composed forms).
pub(crate) fn handles(t: &Tensor) -> bool {
    takes(t, Dtypes::Wide)
}

/// `Σ f(a₀ᵢ, a₁ᵢ, …)` over the slices' common length, in eight interleaved partial sums
/// added in a fixed order (so it vectorises, latency does not bind, and it gives the same
/// bits on every run and every tier), then the remainder in order.
#[inline(always)]
pub(crate) fn sum_of<T: Real, const N: usize>(v: [&[T]; N], f: impl Fn([T; N]) -> T) -> T {
    let len = v.iter().map(|s| s.len()).min().unwrap_or(0);
    let full = len / 8 * 8;
    let v = v.map(|s| &s[..len]);
    let mut acc = [T::zero(); 8];
    for c in 0..full / 8 {
        let chunk = v.map(|s| &s[c * 8..c * 8 + 8]);
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(chunk.map(|s| s[l]));
        }
    }
    let mut s = acc.iter().fold(T::zero(), |a, &b| a + b);
    for i in full..len {
        s += f(v.map(|s| s[i]));
    }
    s
}

/// `Σ v`, as [`sum_of`] adds.
#[inline(always)]
pub(crate) fn sum<T: Real>(v: &[T]) -> T {
    sum_of([v], |[x]| x)
}

/// `Σ aᵢbᵢ`, as [`sum_of`] adds.
#[inline(always)]
pub(crate) fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    sum_of([a, b], |[x, y]| x * y)
}

/// The largest value of `v` (NaN ignored, `-inf` if there is none), in eight lanes.
#[inline(always)]
pub(crate) fn max<T: Real>(v: &[T]) -> T {
    let pick = |a: T, b: T| if b > a { b } else { a };
    let mut acc = [T::from_f64(f64::NEG_INFINITY); 8];
    let chunks = v.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] = pick(acc[l], c[l]);
        }
    }
    acc.into_iter().chain(rest.iter().copied()).fold(T::from_f64(f64::NEG_INFINITY), pick)
}

/// Whether the CPU has AVX2 and FMA (checked once; the answer is cached by std).
#[inline]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has AVX-512 (foundation), besides AVX2 and FMA.
#[inline]
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        has_avx2() && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `fn $name(args) -> ret { body }` that runs `body` compiled with AVX-512, or with
/// AVX2 and FMA, when the CPU has them (the compiler vectorises its loops, 16 or 8 lanes
/// wide; `body` calls `#[inline(always)]` functions so they are compiled with the features
/// too), and as it is otherwise. All compute the same operations lane by lane in the same
/// order (reductions keep their 8 partial sums whatever the width), so the results are the
/// same bits; a test compares the tiers.
macro_rules! avx2 {
    ($(#[$m:meta])* fn $name:ident($($a:ident: $t:ty),*) -> $r:ty $body:block) => {
        $(#[$m])*
        fn $name($($a: $t),*) -> $r {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn wide($($a: $t),*) -> $r $body
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($a: $t),*) -> $r $body
                if $crate::run::kernel::has_avx512() && $crate::run::kernel::widest() >= 2 {
                    // SAFETY: the CPU has AVX-512, AVX2 and FMA, checked just above.
                    return unsafe { wide($($a),*) };
                }
                if $crate::run::kernel::has_avx2() && $crate::run::kernel::widest() >= 1 {
                    // SAFETY: the CPU has AVX2 and FMA, checked just above.
                    return unsafe { fast($($a),*) };
                }
            }
            $body
        }
    };
}

pub(crate) use avx2;

/// Test hook: the widest tier kernels on this thread may take (2: AVX-512, 1: AVX2, 0: none),
/// so tests can compare the tiers' bits.
#[cfg(test)]
pub(crate) fn widest() -> u8 {
    WIDEST.with(std::cell::Cell::get)
}

/// Without tests, every kernel takes the widest tier the CPU has.
#[cfg(not(test))]
#[inline(always)]
pub(crate) fn widest() -> u8 {
    2
}

#[cfg(test)]
thread_local! {
    /// See [`widest`].
    pub(crate) static WIDEST: std::cell::Cell<u8> = const { std::cell::Cell::new(2) };
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::run::kernel::softmax::{masked_softmax, Mask};

    /// Every kernel's output and gradients, as bits, at the widest tier `tier`.
    fn kernels_at(tier: u8) -> Vec<u32> {
        WIDEST.with(|w| w.set(tier));
        let dev = Device::Cpu;
        // 4 rows of 37 values (not a multiple of 8 or 16, so remainders run too), with extremes.
        let mut v: Vec<f32> = (0..148).map(|i| (i as f32 * 0.731).sin() * (1.0 + (i % 7) as f32 * 3.0)).collect();
        v[5] = 20.0;
        v[40] = -95.0;
        v[77] = f32::NEG_INFINITY;
        let x = candle_core::Var::from_vec(v, (1, 1, 4, 37), &dev).unwrap();
        let w = candle_core::Var::from_vec((0..37).map(|j| 1.0 + 0.01 * j as f32).collect(), 37, &dev).unwrap();
        let b = candle_core::Var::from_vec((0..37).map(|j| 0.1 * j as f32).collect(), 37, &dev).unwrap();
        let up = Tensor::from_vec((0..148).map(|i| (i as f32 * 1.37).cos()).collect::<Vec<f32>>(), (1, 1, 4, 37), &dev).unwrap();
        let finite = x.as_tensor().clamp(-1e4f32, 1e4f32).unwrap();
        let g = gelu::gelu(&finite).unwrap();
        let n = layer_norm::layer_norm(&finite, &w, &b, 1e-5).unwrap();
        let m = Mask { heads: 1, causal: true, lengths: Some(vec![3]), fill: f64::NEG_INFINITY, safe: true };
        let p = masked_softmax(x.as_tensor(), m).unwrap();
        let ba = bias::bias_add(&finite, &b).unwrap();
        let ce = cross_entropy::rows(&finite, &up.abs().unwrap()).unwrap().unsqueeze(3).unwrap().broadcast_as((1, 1, 4, 37)).unwrap();
        let loss = [&g, &n, &p, &ba, &ce].iter().map(|t| (*t * &up).unwrap().sum_all().unwrap()).reduce(|a, c| (a + c).unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        let mut bits = Vec::new();
        for t in [&g, &n, &p, &ba, &ce, grads.get(&x).unwrap(), grads.get(&w).unwrap(), grads.get(&b).unwrap()] {
            bits.extend(t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|f| f.to_bits()));
        }
        WIDEST.with(|w| w.set(2));
        bits
    }

    /// AVX-512, AVX2 and the plain loops give the same bits (on a CPU that lacks a tier, that
    /// tier falls back to the next, and the comparison still holds).
    #[test]
    fn every_tier_gives_the_same_bits() {
        let plain = kernels_at(0);
        assert_eq!(kernels_at(1), plain, "AVX2");
        assert_eq!(kernels_at(2), plain, "AVX-512");
    }

    #[test]
    fn exp_and_erf_are_close_to_the_exact_functions_over_their_range() {
        let mut worst = (0.0f64, 0.0f64);
        for i in -20_000..=20_000 {
            let x = i as f32 * 0.0044;
            let e = f64::from(exp_f32(x));
            let want = f64::from(x).exp();
            worst.0 = worst.0.max(((e - want) / want).abs());
            let r = f64::from(erf_f32(x)) - candle_core::cpu::erf::erf_f64(f64::from(x));
            worst.1 = worst.1.max(r.abs());
        }
        // Two f32 ulps (2.4e-7 relative) for exp. For erf, A&S's 1.5e-7 plus f32 rounding of the
        // polynomial and of exp: 4.1e-7 measured, as PyTorch's vectorised erf computes it too.
        assert!(worst.0 < 2.4e-7 && worst.1 < 5e-7, "{worst:?}");
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert!(exp_f32(f32::NAN).is_nan());
        assert!(exp_f32(-100.0) > 0.0 && exp_f32(-100.0) < 1e-43, "subnormal results are reached");
        assert_eq!(erf_f32(0.0), 0.0);
        assert_eq!(erf_f32(10.0), 1.0);
        assert_eq!(erf_f32(-10.0), -1.0);
    }
}
