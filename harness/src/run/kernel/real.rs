//! The float types the kernels compute in ([`Real`], with f32's vectorisable
//! [`exp_f32`] and [`erf_f32`]), and the one place a CPU storage's dtype picks
//! the type a kernel runs in ([`dispatch`]).
//!
//! A kernel is written once, generic over [`Real`], as a [`Kernel`]: its
//! inputs arrive as contiguous slices of one type. [`dispatch`] reads the
//! storages' dtype, checks that every input has it and that the kernel takes
//! it ([`Dtypes`]), and runs the kernel's f32 copy (where it has a vectorised
//! one), or its generic body for f64, f16 and bf16; any other dtype, or mixed
//! ones, is one clear error naming the kernel. [`takes`] says the same of a
//! tensor before a kernel is called, so the callers' fallbacks agree with it.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Tensor};
use half::{bf16, f16};

/// The contiguous part of a storage slice a layout covers, or an error naming `op`.
pub(crate) fn contiguous<'a, T>(v: &'a [T], l: &Layout, op: &str) -> candle_core::Result<&'a [T]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// `exp(x)` in f32 (Cephes' `expf`: range reduction by ln 2 in two parts and a degree-5
/// polynomial, under 2 ulp), branch-free so it vectorises; exact 0 below −104, +∞ above 88.73,
/// NaN through.
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // Below −104 the result is 0 (selected at the end); computing it from 0 instead keeps the
    // products out of the subnormals, where each took a microcode assist (exp(−inf) for every
    // masked score cost a fifth of the masked softmax's time, by perf).
    let c = if x < -104.0 { 0.0 } else { x.clamp(-104.0, 89.0) };
    let n = (c * LOG2E).round_ties_even();
    let r = n.mul_add(-0.693_359_4, c);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut y = 1.987_569_1e-4f32;
    y = y.mul_add(r, 1.398_199_9e-3);
    y = y.mul_add(r, 8.333_452e-3);
    y = y.mul_add(r, 4.166_579_6e-2);
    y = y.mul_add(r, 1.666_666_5e-1);
    y = y.mul_add(r, 0.5); // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let y = y.mul_add(r * r, r) + 1.0;
    // 2ⁿ in two exact halves, so results down to the subnormals are reached. n is within
    // [−151, 129] (a NaN input takes 0 here, and stays NaN through y).
    // SAFETY: finite and in i32's range, so the conversion is exact.
    let n: i32 = unsafe { (if n.is_nan() { 0.0 } else { n }).to_int_unchecked() };
    let half = n >> 1;
    let pow = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let v = y * pow(half) * pow(n - half);
    if x < -104.0 {
        0.0
    } else {
        v
    }
}

/// `erf(x)` in f32 as PyTorch's vectorised kernels compute it (Abramowitz–Stegun 7.1.26:
/// `1 − (a₁t + … + a₅t⁵)·exp(−x²)` with `t = 1/(1 + p|x|)`, error under 1.5e-7).
#[inline(always)]
pub(crate) fn erf_f32(x: f32) -> f32 {
    let t = 1.0 / 0.327_591_1f32.mul_add(x.abs(), 1.0);
    let r = 1.061_405_4f32.mul_add(t, -1.453_152).mul_add(t, 1.421_413_8).mul_add(t, -0.284_496_74).mul_add(t, 0.254_829_6);
    let e = exp_f32(-(x * x));
    (-e * t).mul_add(r, 1.0).copysign(x)
}

/// The float types the kernels run in, with the functions they need: f32 with the fast
/// vectorisable `exp` and `erf`, f64 with the exact ones, f16 and bf16 through f32 (rounded once,
/// as PyTorch's opmath computes them).
pub(crate) trait Real: candle_core::WithDType + std::ops::Neg<Output = Self> + Default {
    /// `self·a + b` rounded once (PyTorch's CPU `b.add(x, alpha=a)` in f32 and f64, and its
    /// norms' accumulation): an FMA instruction in the `avx2!` tiers, libm's `fma` in the plain one.
    fn fma(self, a: Self, b: Self) -> Self;
    /// Square root.
    fn sqrt(self) -> Self;
    /// `eˣ`.
    fn exp(self) -> Self;
    /// The natural logarithm (the standard library's: called once per row, not per value).
    fn ln(self) -> Self;
    /// `ln(1 + x)`, accurate near 0 (the standard library's `ln_1p`, C's `log1p`).
    fn ln_1p(self) -> Self;
    /// The error function.
    fn erf(self) -> Self;
    /// Neither infinite nor NaN.
    fn finite(self) -> bool;
    /// The hyperbolic tangent of the recurrent cells: `vmath`'s in f32 (within 1 ulp), the
    /// standard library's in f64.
    fn tanh(self) -> Self;
    /// `1 / (e⁻ˣ + 1)` of the recurrent cells: `vmath`'s in f32, with the standard library's `exp` in f64.
    fn sigmoid(self) -> Self;
    /// The value in f32 (exact for f16 and bf16; inlined, where `to_f64` is not).
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self.to_f64() as f32
    }
    /// An f32 value rounded once to this type.
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        Self::from_f64(f64::from(v))
    }
    /// [`Real::tanh`] of every value in place (f32's vectorised).
    #[inline(always)]
    fn tanh_all(v: &mut [Self]) {
        v.iter_mut().for_each(|x| *x = x.tanh());
    }
    /// [`Real::sigmoid`] of every value in place (f32's vectorised).
    #[inline(always)]
    fn sigmoid_all(v: &mut [Self]) {
        v.iter_mut().for_each(|x| *x = x.sigmoid());
    }
}

impl Real for f32 {
    #[inline(always)]
    fn fma(self, a: Self, b: Self) -> Self {
        self.mul_add(a, b)
    }

    #[inline(always)]
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }

    #[inline(always)]
    fn exp(self) -> Self {
        exp_f32(self)
    }

    #[inline(always)]
    fn ln(self) -> Self {
        f32::ln(self)
    }

    #[inline(always)]
    fn ln_1p(self) -> Self {
        f32::ln_1p(self)
    }

    #[inline(always)]
    fn erf(self) -> Self {
        erf_f32(self)
    }

    #[inline(always)]
    fn finite(self) -> bool {
        self.is_finite()
    }

    #[inline(always)]
    fn tanh(self) -> Self {
        super::vmath::tanh_f32(self)
    }

    #[inline(always)]
    fn sigmoid(self) -> Self {
        super::vmath::sigmoid_f32(self)
    }

    #[inline(always)]
    fn tanh_all(v: &mut [Self]) {
        super::vmath::tanh_all(v);
    }

    #[inline(always)]
    fn sigmoid_all(v: &mut [Self]) {
        super::vmath::sigmoid_all(v);
    }
}

impl Real for f64 {
    #[inline(always)]
    fn fma(self, a: Self, b: Self) -> Self {
        self.mul_add(a, b)
    }

    #[inline(always)]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }

    #[inline(always)]
    fn exp(self) -> Self {
        f64::exp(self)
    }

    #[inline(always)]
    fn ln(self) -> Self {
        f64::ln(self)
    }

    #[inline(always)]
    fn ln_1p(self) -> Self {
        f64::ln_1p(self)
    }

    #[inline(always)]
    fn erf(self) -> Self {
        candle_core::cpu::erf::erf_f64(self)
    }

    #[inline(always)]
    fn finite(self) -> bool {
        self.is_finite()
    }

    #[inline(always)]
    fn tanh(self) -> Self {
        f64::tanh(self)
    }

    #[inline(always)]
    fn sigmoid(self) -> Self {
        1.0 / (f64::exp(-self) + 1.0)
    }
}

/// f16 and bf16: each function computed in f32 and rounded once.
macro_rules! half_real {
    ($t:ty) => {
        impl Real for $t {
            #[inline(always)]
            fn fma(self, a: Self, b: Self) -> Self {
                <$t>::from_f32(self.to_f32().mul_add(a.to_f32(), b.to_f32()))
            }

            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::from_f32(Real::sqrt(self.to_f32()))
            }

            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::from_f32(Real::exp(self.to_f32()))
            }

            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::from_f32(Real::ln(self.to_f32()))
            }

            #[inline(always)]
            fn ln_1p(self) -> Self {
                <$t>::from_f32(f32::ln_1p(self.to_f32()))
            }

            #[inline(always)]
            fn erf(self) -> Self {
                <$t>::from_f32(Real::erf(self.to_f32()))
            }

            #[inline(always)]
            fn finite(self) -> bool {
                self.is_finite()
            }

            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::from_f32(Real::tanh(self.to_f32()))
            }

            #[inline(always)]
            fn sigmoid(self) -> Self {
                <$t>::from_f32(Real::sigmoid(self.to_f32()))
            }

            #[inline(always)]
            fn to_f32(self) -> f32 {
                <$t>::to_f32(self)
            }

            #[inline(always)]
            fn from_f32(v: f32) -> Self {
                <$t>::from_f32(v)
            }
        }
    };
}

half_real!(f16);
half_real!(bf16);

/// The dtypes a kernel computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dtypes {
    /// f32 and f64 (callers widen f16 and bf16 first, or keep Candle's ops for them).
    Wide,
    /// f32, f64, f16 and bf16, each in its own type.
    Floats,
}

impl Dtypes {
    /// Whether `d` is one of them.
    pub(crate) fn has(self, d: DType) -> bool {
        match self {
            Dtypes::Wide => matches!(d, DType::F32 | DType::F64),
            Dtypes::Floats => matches!(d, DType::F32 | DType::F64 | DType::F16 | DType::BF16),
        }
    }
}

/// Whether `t` can take the CPU kernels computing in `dtypes`: on the CPU, in one of them.
pub(crate) fn takes(t: &Tensor, dtypes: Dtypes) -> bool {
    t.device().is_cpu() && dtypes.has(t.dtype())
}

/// A CPU kernel of `N` inputs of one float type, written once over [`Real`].
pub(crate) trait Kernel<const N: usize> {
    /// What it makes (a storage, tensors, a storage and its shape).
    type Out;
    /// The dtypes it computes in.
    const DTYPES: Dtypes = Dtypes::Wide;
    /// Its name, in errors.
    fn name(&self) -> &str;
    /// The kernel on contiguous slices of one type.
    fn run<T: Real>(&self, v: [&[T]; N]) -> candle_core::Result<Self::Out>;
    /// The kernel in f32: [`Kernel::run`] unless it has a vectorised copy (`avx2!`).
    fn run_f32(&self, v: [&[f32]; N]) -> candle_core::Result<Self::Out> {
        self.run(v)
    }
}

/// Runs `k` on the storages' common dtype: the one dtype match of every kernel. Mixed dtypes,
/// or one the kernel does not compute in, are an error naming it, as is a strided input.
pub(crate) fn dispatch<const N: usize, K: Kernel<N>>(k: &K, inputs: [(&CpuStorage, &Layout); N]) -> candle_core::Result<K::Out> {
    let Some(dtype) = inputs.first().map(|(s, _)| s.dtype()) else { return k.run::<f64>([&[]; N]) };
    if let Some((s, _)) = inputs.iter().find(|(s, _)| s.dtype() != dtype) {
        candle_core::bail!("{}: mixed dtypes ({dtype:?} and {:?})", k.name(), s.dtype());
    }
    match dtype {
        DType::F32 if K::DTYPES.has(dtype) => k.run_f32(slices(k.name(), inputs)?),
        DType::F64 if K::DTYPES.has(dtype) => k.run::<f64>(slices(k.name(), inputs)?),
        DType::F16 if K::DTYPES.has(dtype) => k.run::<f16>(slices(k.name(), inputs)?),
        DType::BF16 if K::DTYPES.has(dtype) => k.run::<bf16>(slices(k.name(), inputs)?),
        // Integers, the 8-bit and smaller floats, and halves for a `Wide` kernel.
        _ => candle_core::bail!("{}: no CPU kernel for {dtype:?}", k.name()),
    }
}

/// The contiguous slices of `T` the storages hold.
fn slices<'a, T: candle_core::WithDType, const N: usize>(name: &str, inputs: [(&'a CpuStorage, &Layout); N]) -> candle_core::Result<[&'a [T]; N]> {
    let mut out: [&[T]; N] = [&[]; N];
    for (o, (s, l)) in out.iter_mut().zip(inputs) {
        *o = contiguous(T::cpu_storage_as_slice(s)?, l, name)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Shape};

    use super::*;

    /// `Σ v` in the input's type, f32 marked by its own copy.
    struct Total;

    impl Kernel<1> for Total {
        type Out = (f64, bool);
        const DTYPES: Dtypes = Dtypes::Floats;

        fn name(&self) -> &str {
            "total"
        }

        fn run<T: Real>(&self, [v]: [&[T]; 1]) -> candle_core::Result<(f64, bool)> {
            Ok((v.iter().fold(T::zero(), |a, &b| a + b).to_f64(), false))
        }

        fn run_f32(&self, v: [&[f32]; 1]) -> candle_core::Result<(f64, bool)> {
            Ok((self.run(v)?.0, true))
        }
    }

    fn storage(t: &Tensor) -> CpuStorage {
        let (s, _) = t.storage_and_layout();
        match &*s {
            candle_core::Storage::Cpu(c) => c.clone(),
            _ => unreachable!("CPU tensors only"),
        }
    }

    #[test]
    fn each_dtype_runs_its_own_copy_and_others_are_a_clear_error() {
        // 1 + 2 + 3.5 = 6.5, exact in every float type.
        let t = Tensor::new(&[1.0f64, 2.0, 3.5], &Device::Cpu).unwrap();
        let l = Layout::contiguous(Shape::from(3));
        for (d, f32_copy) in [(DType::F32, true), (DType::F64, false), (DType::F16, false), (DType::BF16, false)] {
            let s = storage(&t.to_dtype(d).unwrap());
            assert_eq!(dispatch(&Total, [(&s, &l)]).unwrap(), (6.5, f32_copy), "{d:?}");
        }
        let ints = storage(&t.to_dtype(DType::U32).unwrap());
        // (Candle appends a backtrace to an error's text where RUST_BACKTRACE asks for one.)
        assert!(dispatch(&Total, [(&ints, &l)]).unwrap_err().to_string().starts_with("total: no CPU kernel for U32"));
        let strided = Layout::contiguous(Shape::from((3, 1))).transpose(0, 1).unwrap().broadcast_as((2, 3)).unwrap();
        assert!(dispatch(&Total, [(&storage(&t), &strided)]).unwrap_err().to_string().contains("contiguous"));
        assert!(!takes(&t.to_dtype(DType::F16).unwrap(), Dtypes::Wide) && takes(&t.to_dtype(DType::F16).unwrap(), Dtypes::Floats) && takes(&t, Dtypes::Wide));
    }

    /// Two inputs of different dtypes are refused, naming both.
    #[test]
    fn mixed_dtypes_are_an_error() {
        struct Pair;
        impl Kernel<2> for Pair {
            type Out = ();
            fn name(&self) -> &str {
                "pair"
            }
            fn run<T: Real>(&self, _: [&[T]; 2]) -> candle_core::Result<()> {
                Ok(())
            }
        }
        let a = storage(&Tensor::new(&[1.0f32], &Device::Cpu).unwrap());
        let b = storage(&Tensor::new(&[1.0f64], &Device::Cpu).unwrap());
        let l = Layout::contiguous(Shape::from(1));
        assert!(dispatch(&Pair, [(&a, &l), (&b, &l)]).unwrap_err().to_string().starts_with("pair: mixed dtypes (F32 and F64)"));
        assert!(dispatch(&Pair, [(&a, &l), (&a, &l)]).is_ok());
    }

    /// Half types compute through f32 and round once: e¹ is 2.71875 in f16 (2.718282 rounded to
    /// 11 bits) and 2.71875 in bf16 (8 bits: 2.703125 and 2.71875 straddle it, 2.71875 nearer).
    #[test]
    fn half_functions_round_the_f32_result_once() {
        assert_eq!(Real::exp(f16::ONE).to_f64(), 2.71875);
        assert_eq!(Real::exp(bf16::ONE).to_f64(), 2.71875);
        assert_eq!(Real::sqrt(f16::from_f32(2.0)).to_f64(), 1.4140625);
        assert!(!Real::finite(f16::INFINITY) && Real::finite(bf16::MAX));
    }
}
