//! Layers that make, mark or reduce sequences: token embeddings, learned
//! positional embeddings, and pooling over positions. Pooling leaves padded
//! positions out with `masked_fill` (a `where`), as people write it in PyTorch:
//! `h.masked_fill(~mask, 0).sum(1) / mask.sum(1).clamp(min=1)`, so a NaN in a
//! padded position does not reach the pooled value, nor its gradient.

use candle_core::Tensor;

use crate::error::Result;

/// Token ids `(batch, seq)` (u32) to rows of `table` `(vocab, dim)`: `(batch, seq, dim)`.
pub(super) fn embedding(ids: &Tensor, table: &Tensor) -> Result<Tensor> {
    let (b, s) = ids.dims2()?;
    let dim = table.dims()[1];
    Ok(table.index_select(&ids.flatten_all()?, 0)?.reshape((b, s, dim))?)
}

/// `h + pos`, one learned vector per position.
pub(super) fn positional(h: &Tensor, pos: &Tensor) -> Result<Tensor> {
    Ok(h.broadcast_add(pos)?)
}

/// `(batch, seq, 1)`: 1 where a position holds data.
fn keep(h: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok(mask.ne(0.0)?.unsqueeze(2)?.broadcast_as(h.shape())?)
}

/// Mean over the unpadded positions (0 for a fully padded row), accumulated in f32 for half dtypes.
pub(super) fn mean_pool(h: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    crate::run::opmath::in_f32(h, |h| {
        Ok(match mask {
            None => h.mean(1)?,
            Some(m) => {
                let m = m.to_dtype(h.dtype())?;
                let kept = keep(h, &m)?.where_cond(h, &h.zeros_like()?)?;
                let count = m.sum_keepdim(1)?.maximum(1.0)?;
                kept.sum(1)?.broadcast_div(&count)?
            }
        })
    })
}

/// Maximum over the unpadded positions (`-inf` for a fully padded row, as `masked_fill(-inf).max`).
pub(super) fn max_pool(h: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    Ok(match mask {
        None => h.max(1)?,
        Some(m) => {
            let low = Tensor::full(f64::NEG_INFINITY, (), h.device())?.to_dtype(h.dtype())?.broadcast_as(h.shape())?;
            keep(h, m)?.where_cond(h, &low)?.max(1)?
        }
    })
}

/// The last position.
pub(super) fn last(h: &Tensor) -> Result<Tensor> {
    let s = h.dim(1)?;
    Ok(h.narrow(1, s - 1, 1)?.squeeze(1)?)
}
