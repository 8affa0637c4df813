//! The fused recurrence's products (`recurrent.rs`): in f32 and f64 gemm called as Candle's
//! matmul calls it, so the states and the input gates' gradient are the composed path's bits,
//! the recurrent weights' gradient one product over every step ([`weights_grad`]: the
//! composed path's terms summed in another order, 6% fewer instructions a step of a language
//! model than 32 products of depth 16, each reading and writing all of `dW`); in f16 and bf16
//! ([`Wide`]) as PyTorch's CPU `addmm` and `mm` make them for a half tensor: the factors
//! widened to f32, summed in f32 (the recurrent gates with their bias, `linear_hh` being one
//! `addmm`) and rounded once; the weights' and the bias's gradient rounded once a step and
//! added across the steps in the half type, latest step first, as autograd accumulates them.

use candle_core::DType;

use super::{spare, Real};

/// `dst = a · b` for `a` `(m, k)` and `b` `(k, n)` given by their row and column strides,
/// `dst` row-major: gemm called as Candle's matmul calls it, so the bits are its.
pub(super) fn product<T: candle_core::WithDType>((m, n, k): (usize, usize, usize), a: (&[T], usize, usize), b: (&[T], usize, usize), dst: &mut [T]) -> candle_core::Result<()> {
    let last = |(v, rs, cs): (&[T], usize, usize), rows: usize, cols: usize| rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < v.len();
    if dst.len() != m * n || !last(a, m, k) || !last(b, k, n) || !matches!(T::DTYPE, candle_core::DType::F32 | candle_core::DType::F64) {
        candle_core::bail!("recurrence: a product of {m}×{k} by {k}×{n} does not fit");
    }
    if m * n == 0 {
        return Ok(());
    }
    if k == 0 {
        dst.fill(T::zero());
        return Ok(());
    }
    let threads = candle_core::utils::get_num_threads();
    let parallelism = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the factors' strides stay inside their slices and `dst` holds m·n initialised
    // values (checked above); gemm takes f32 and f64 (checked above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.0.as_ptr(),
            a.2 as isize,
            a.1 as isize,
            b.0.as_ptr(),
            b.2 as isize,
            b.1 as isize,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// The recurrent weights' gradient `Σₜ fedₜᵀ · drₜ` `(H, G·H)` in f32 or f64 over the states
/// fed back (`states` `(seq, batch, H)` time-major, masked by `mask` `(batch, H)`) and every
/// step's gates' gradient `dr` (`drs` `(seq, batch, G·H)`): one product of depth `seq · batch`,
/// not one a step (each reading and writing all of `dW` for a depth of one batch). With a
/// recurrent bias (`biased`) the first step multiplies its zero first state too (an inf in `dr`
/// makes NaN, as in PyTorch); without (the RNN), the first step has no recurrent product. The
/// composed path and PyTorch's loop (RNN, GRU) add one product a step: the same terms, summed
/// in another order, so the values differ from theirs by f32 (f64) rounding only.
pub(super) fn weights_grad<T: Real>((b, s, h, gh): (usize, usize, usize, usize), biased: bool, states: &[T], mask: Option<&[T]>, drs: &[T]) -> candle_core::Result<Vec<T>> {
    let first = usize::from(!biased);
    if states.len() != s * b * h || drs.len() != s * b * gh || mask.is_some_and(|m| m.len() != b * h) {
        candle_core::bail!("recurrence: the weights' gradient of {} states and {} gates' gradients", states.len(), drs.len());
    }
    // Every value is written below before it is read, so a spare's old values do not matter.
    let mut feds = spare::take::<T>((s - first) * b * h);
    let (zeros, fed) = feds.split_at_mut((1 - first) * b * h);
    zeros.fill(T::zero());
    for (f, p) in fed.chunks_exact_mut(b * h).zip(states.chunks_exact(b * h)) {
        match mask {
            Some(m) => f.iter_mut().zip(p).zip(m).for_each(|((f, p), m)| *f = *p * *m),
            None => f.copy_from_slice(p),
        }
    }
    let mut dw = vec![T::zero(); h * gh];
    product((h, gh, (s - first) * b), (&feds, 1, h), (&drs[first * b * gh..], gh, 1), &mut dw)?;
    spare::give(feds);
    Ok(dw)
}

/// The transpose of the row-major `(rows, cols)` matrix `w`, row-major (a blocked copy: value
/// by value, each write fell in another cache line: 1.6% of a language model's step).
pub(super) fn transposed<T: Real>(w: &[T], rows: usize, cols: usize) -> Vec<T> {
    super::linear::Mat::new(w, rows, cols).t().row_major()
}

/// Whether `T` is a half type (f16 or bf16), whose recurrence follows PyTorch's half kernels.
#[inline(always)]
pub(crate) fn is_half<T: Real>() -> bool {
    matches!(T::DTYPE, DType::F16 | DType::BF16)
}

/// `v` widened to f32 into `out` (exact for f16 and bf16).
fn widen<T: Real>(v: &[T], out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(v) {
        *o = Real::to_f32(*x);
    }
}

/// An f32 value rounded once to `T`.
#[inline(always)]
fn narrow<T: Real>(x: f32) -> T {
    T::from_f32(x)
}

/// A half recurrence's products in f32: its weights `W` `(H, G·H)` and `Wᵀ`, its recurrent
/// bias, widened once, and scratch for one step's factors and sum.
pub(crate) struct Wide {
    w: Vec<f32>,
    wt: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// One step's left factor and right factor (`(batch, ·)`), and its sum.
    left: Vec<f32>,
    right: Vec<f32>,
    sum: Vec<f32>,
    h: usize,
    gh: usize,
}

impl Wide {
    /// The products of a batch of `b` rows through `w` `(h, gh)` with `bias` `(gh)`.
    pub(crate) fn new<T: Real>(w: &[T], bias: Option<&[T]>, (b, h, gh): (usize, usize, usize)) -> Self {
        let mut w32 = vec![0.0; h * gh];
        widen(w, &mut w32);
        let wt = transposed(&w32, h, gh);
        let bias = bias.map(|v| {
            let mut out = vec![0.0; gh];
            widen(v, &mut out);
            out
        });
        let n = b * gh.max(h);
        Wide { w: w32, wt, bias, left: vec![0.0; n], right: vec![0.0; n], sum: vec![0.0; (b * gh).max(h * gh)], h, gh }
    }

    /// The recurrent gates `fed · W + b` of the `b` rows of `fed` `(b, H)` into `rec` `(b, G·H)`:
    /// PyTorch's `linear_hh`, one `addmm` (the bias added to the finished f32 sum, whatever kernel
    /// gemm picks for the shape), rounded once.
    pub(crate) fn gates<T: Real>(&mut self, fed: &[T], b: usize, rec: &mut [T]) -> candle_core::Result<()> {
        let (h, gh) = (self.h, self.gh);
        let (left, sum) = (&mut self.left[..b * h], &mut self.sum[..b * gh]);
        widen(fed, left);
        product((b, gh, h), (left, h, 1), (&self.w, gh, 1), sum)?;
        match &self.bias {
            Some(bias) => rec.chunks_exact_mut(gh).zip(sum.chunks_exact(gh)).for_each(|(r, s)| r.iter_mut().zip(s).zip(bias).for_each(|((r, s), c)| *r = narrow(*s + *c))),
            None => rec.iter_mut().zip(sum.iter()).for_each(|(r, s)| *r = narrow(*s)),
        }
        Ok(())
    }

    /// One backward step's gates gradient `dr` `(b, G·H)`, widened once for the three products
    /// that read it ([`Wide::bias_grad`], [`Wide::weights_grad`], [`Wide::state_grad`]).
    pub(crate) fn load_dr<T: Real>(&mut self, dr: &[T], b: usize) {
        widen(dr, &mut self.right[..b * self.gh]);
    }

    /// The fed state's gradient `dr · Wᵀ` `(b, H)` from the loaded `dr` (`mm`), rounded once.
    pub(crate) fn state_grad<T: Real>(&mut self, b: usize, out: &mut [T]) -> candle_core::Result<()> {
        let (h, gh) = (self.h, self.gh);
        let (right, sum) = (&self.right[..b * gh], &mut self.sum[..b * h]);
        product((b, h, gh), (right, gh, 1), (&self.wt, h, 1), sum)?;
        out.iter_mut().zip(sum.iter()).for_each(|(o, s)| *o = narrow(*s));
        Ok(())
    }

    /// The weights' gradient of one step, `fedᵀ · dr` `(H, G·H)` from the loaded `dr`, rounded
    /// once, added to `dw` (`first`: the latest step, which `dw` takes as it is).
    pub(crate) fn weights_grad<T: Real>(&mut self, fed: &[T], b: usize, dw: &mut [T], first: bool) -> candle_core::Result<()> {
        let (h, gh) = (self.h, self.gh);
        let (left, right, sum) = (&mut self.left[..b * h], &self.right[..b * gh], &mut self.sum[..h * gh]);
        widen(fed, left);
        product((h, gh, b), (left, 1, h), (right, gh, 1), sum)?;
        accumulate(dw, sum, first);
        Ok(())
    }

    /// The bias's gradient of one step, the column sums of the loaded `dr` in f32 rounded once,
    /// added to `db` (`first` as in [`Wide::weights_grad`]).
    pub(crate) fn bias_grad<T: Real>(&mut self, b: usize, db: &mut [T], first: bool) {
        let gh = self.gh;
        let sum = &mut self.sum[..gh];
        sum.fill(0.0);
        for row in self.right[..b * gh].chunks_exact(gh) {
            for (s, v) in sum.iter_mut().zip(row) {
                *s += *v;
            }
        }
        accumulate(db, sum, first);
    }
}

/// `acc + round(v)` in `T` (or `round(v)` for the first step's).
fn accumulate<T: Real>(acc: &mut [T], v: &[f32], first: bool) {
    for (a, s) in acc.iter_mut().zip(v) {
        let s: T = narrow(*s);
        *a = if first { s } else { *a + s };
    }
}

#[cfg(test)]
#[path = "recurrent_gemm_tests.rs"]
mod tests;
