//! Multi-head self-attention in three watched steps (see `scenario::Part`):
//! scores `q kᵀ / sqrt(d)`, probabilities (mask, then softmax), and the mix of
//! values through the output projection, written as a manual PyTorch
//! attention is (nanoGPT's non-flash path): `(q @ k.transpose(-2, -1)) * scale`,
//! `masked_fill`, `softmax`, `@ v`.
//!
//! Masks come from causality (key after query) and from padding (key past the
//! row's length). A fully masked row is all `-inf` with `mask_fill = neg_inf`,
//! and the plain softmax's `exp(-inf − (-inf))` is NaN there; the safe softmax
//! (`torch._safe_softmax`) gives zeros, with zero gradient.

use candle_core::{DType, Tensor, D};

use super::dense::linear;
use crate::error::Result;
use crate::scenario::{MaskFill, SoftmaxKind};

/// `(rows·seq, w)` projected and split into heads: `(batch, heads, seq, w / heads)`.
fn heads_of(flat: &Tensor, w: &Tensor, b: &Tensor, (batch, seq, heads): (usize, usize, usize)) -> Result<Tensor> {
    let width = w.dims()[1];
    Ok(linear(flat, w, b)?.reshape((batch, seq, heads, width / heads))?.transpose(1, 2)?.contiguous()?)
}

/// Scaled scores `(batch, heads, seq, seq)` of `h` `(batch, seq, w)`.
pub(super) fn scores(h: &Tensor, (wq, bq, wk, bk): (&Tensor, &Tensor, &Tensor, &Tensor), heads: usize) -> Result<Tensor> {
    let (b, s, w) = h.dims3()?;
    let flat = h.reshape((b * s, w))?;
    let q = heads_of(&flat, wq, bq, (b, s, heads))?;
    let k = heads_of(&flat, wk, bk, (b, s, heads))?;
    let scale = 1.0 / ((w / heads) as f64).sqrt();
    Ok((q.matmul(&k.transpose(2, 3)?.contiguous()?)? * scale)?)
}

/// The masked scores through the softmax. `mask` is `(batch, seq)`, 1 where a key holds data.
pub(super) fn probs(scores: &Tensor, mask: Option<&Tensor>, causal: bool, fill: MaskFill, softmax: SoftmaxKind) -> Result<Tensor> {
    let (b, _, s, _) = scores.dims4()?;
    let dev = scores.device();
    let future = causal.then(|| Tensor::from_vec((0..s * s).map(|k| u8::from(k % s > k / s)).collect::<Vec<u8>>(), (1, 1, s, s), dev)).transpose()?;
    let padded = mask.map(|m| m.eq(0.0)?.reshape((b, 1, 1, s))).transpose()?;
    let masked = match (future, padded) {
        (Some(f), Some(p)) => Some(f.broadcast_maximum(&p)?),
        (f, p) => f.or(p),
    };
    let filled = match masked {
        Some(m) => {
            let value = match fill {
                MaskFill::NegInf => f64::NEG_INFINITY,
                MaskFill::FiniteMin => lowest(scores.dtype()),
            };
            let fill = Tensor::full(value, (), dev)?.to_dtype(scores.dtype())?.broadcast_as(scores.shape())?;
            m.broadcast_as(scores.shape())?.where_cond(&fill, scores)?
        }
        None => scores.clone(),
    };
    match softmax {
        SoftmaxKind::Plain => super::activation::softmax(&filled),
        SoftmaxKind::Safe => safe_softmax(&filled),
    }
}

/// `torch.finfo(dtype).min`.
fn lowest(d: DType) -> f64 {
    match d {
        DType::F16 => half::f16::MIN.to_f64(),
        DType::BF16 => half::bf16::MIN.to_f64(),
        DType::F32 => f64::from(f32::MIN),
        _ => f64::MIN,
    }
}

/// Softmax whose rows of all `-inf` give zeros (`torch._safe_softmax`). Other rows are the
/// plain softmax bit for bit. Its backward is finite: a fully masked row subtracts 0 instead
/// of `-inf` and divides by 1 instead of 0, so no NaN enters the graph.
fn safe_softmax(h: &Tensor) -> Result<Tensor> {
    crate::run::opmath::in_f32(h, |h| {
        let max = h.max_keepdim(D::Minus1)?.detach();
        let empty = max.eq(f64::NEG_INFINITY)?;
        let max = empty.where_cond(&max.zeros_like()?, &max)?;
        let e = h.broadcast_sub(&max)?.exp()?;
        let sum = e.sum_keepdim(D::Minus1)?;
        let sum = empty.where_cond(&sum.ones_like()?, &sum)?;
        Ok(e.broadcast_div(&sum)?)
    })
}

/// The probabilities times the values of `h`, heads merged, through the output projection.
pub(super) fn mix(probs: &Tensor, h: &Tensor, (wv, bv, wo, bo): (&Tensor, &Tensor, &Tensor, &Tensor), heads: usize) -> Result<Tensor> {
    let (b, s, w) = h.dims3()?;
    let v = heads_of(&h.reshape((b * s, w))?, wv, bv, (b, s, heads))?;
    let y = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b * s, w))?;
    Ok(linear(&y, wo, bo)?.reshape((b, s, w))?)
}
