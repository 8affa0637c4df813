//! Attention's masked softmax in one pass each way: scores at masked keys
//! (after the query with `causal`, past the row's length with padding) are
//! replaced by the fill, then softmax over each row, as `masked_fill` then
//! `torch.softmax` (or `torch._safe_softmax`, whose fully masked rows are 0).
//! The backward is softmax's, `p·(g − Σ g·p)`, with 0 at masked keys, which is
//! what `masked_fill`'s backward gives them.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use super::{avx2, dispatch, Kernel, Real};
use crate::error::Result;

/// What masks a row of scores and how the softmax treats a fully masked one.
#[derive(Debug, Clone)]
pub(crate) struct Mask {
    /// Heads per example.
    pub heads: usize,
    /// Keys after the query are masked.
    pub causal: bool,
    /// Each example's length: keys at and past it are padding (padding is always at the end).
    pub lengths: Option<Vec<usize>>,
    /// The value masked scores take (`-inf` or the dtype's lowest).
    pub fill: f64,
    /// `torch._safe_softmax`: a row that is all `-inf` gives zeros.
    pub safe: bool,
}

impl Mask {
    /// The keys query `i` of example `b` sees are `0..limit`: causality and padding both mask
    /// a tail of the row.
    #[inline(always)]
    fn limit(&self, b: usize, seq: usize, i: usize) -> usize {
        let causal = if self.causal { i + 1 } else { seq };
        self.lengths.as_ref().map_or(causal, |l| causal.min(l[b]))
    }
}

/// The masked softmax of `scores` `(batch, heads, seq, seq)` (f16 and bf16 in f32).
pub(crate) fn masked_softmax(scores: &Tensor, mask: Mask) -> Result<Tensor> {
    crate::run::opmath::in_f32(scores, |s| Ok(s.contiguous()?.apply_op1(Softmax(mask))?))
}

/// Softmax of each row of `x` (rows of `seq` scores) under the mask.
#[inline(always)]
fn forward<T: Real>(x: &[T], seq: usize, m: &Mask) -> Vec<T> {
    let fill = T::from_f64(m.fill);
    // Each row appended (not zeroed first), then computed in place.
    let mut out = Vec::with_capacity(x.len());
    for (r, row) in x.chunks_exact(seq).enumerate() {
        let limit = m.limit(r / (m.heads * seq), seq, r % seq);
        let at = out.len();
        out.extend_from_slice(&row[..limit]);
        out.resize(at + seq, fill);
        let o = &mut out[at..];
        let max = super::max(o);
        if m.safe && max.to_f64() == f64::NEG_INFINITY {
            o.iter_mut().for_each(|v| *v = T::zero());
            continue;
        }
        // A plain row of all -inf: -inf − (-inf) is NaN, as torch.softmax gives.
        for v in o.iter_mut() {
            *v = (*v - max).exp();
        }
        let sum = super::sum(o);
        for v in o.iter_mut() {
            *v /= sum;
        }
    }
    out.resize(x.len(), T::zero());
    out
}

/// `p·(g − Σ g·p)` per row, 0 at masked keys.
#[inline(always)]
fn backward<T: Real>(p: &[T], g: &[T], seq: usize, m: &Mask) -> Vec<T> {
    // Each row appended, not zeroed first and then written.
    let mut out = Vec::with_capacity(p.len());
    for (r, (pr, gr)) in p.chunks_exact(seq).zip(g.chunks_exact(seq)).enumerate() {
        let limit = m.limit(r / (m.heads * seq), seq, r % seq);
        let dot = super::dot(pr, gr);
        let at = out.len();
        out.extend(pr[..limit].iter().zip(&gr[..limit]).map(|(&p, &g)| p * (g - dot)));
        out.resize(at + seq, T::zero());
    }
    out.resize(p.len(), T::zero());
    out
}

avx2! {
    fn forward32(x: &[f32], seq: usize, m: &Mask) -> Vec<f32> {
        forward(x, seq, m)
    }
}

avx2! {
    fn backward32(p: &[f32], g: &[f32], seq: usize, m: &Mask) -> Vec<f32> {
        backward(p, g, seq, m)
    }
}

struct Softmax(Mask);

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "masked-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((dispatch(&Rows { seq: seq(l), mask: &self.0 }, [(s, l)])?, l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward(self.0.clone()))?))
    }
}

struct SoftmaxBackward(Mask);

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "masked-softmax-backward"
    }

    fn cpu_fwd(&self, p: &CpuStorage, pl: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((dispatch(&Rows { seq: seq(pl), mask: &self.0 }, [(p, pl), (g, gl)])?, pl.shape().clone()))
    }
}

/// A row's length: the last dimension.
fn seq(l: &Layout) -> usize {
    l.shape().dims().last().copied().unwrap_or(1).max(1)
}

/// Rows of `seq` scores under the mask: the softmax of `(x)`, the gradient from `(p, g)`.
struct Rows<'a> {
    seq: usize,
    mask: &'a Mask,
}

impl Kernel<1> for Rows<'_> {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "softmax"
    }

    fn run<T: Real>(&self, [x]: [&[T]; 1]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(forward(x, self.seq, self.mask)))
    }

    fn run_f32(&self, [x]: [&[f32]; 1]) -> candle_core::Result<CpuStorage> {
        Ok(CpuStorage::F32(forward32(x, self.seq, self.mask)))
    }
}

impl Kernel<2> for Rows<'_> {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "softmax backward"
    }

    fn run<T: Real>(&self, [p, g]: [&[T]; 2]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(backward(p, g, self.seq, self.mask)))
    }

    fn run_f32(&self, [p, g]: [&[f32]; 2]) -> candle_core::Result<CpuStorage> {
        Ok(CpuStorage::F32(backward32(p, g, self.seq, self.mask)))
    }
}
