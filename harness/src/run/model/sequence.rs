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
    crate::run::kernel::bias::bias_add(h, pos)
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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::*;

    fn t(v: &[f64], shape: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    #[test]
    fn embedding_rows_and_their_summed_gradient_by_hand() {
        // Ids [2, 0, 2] pick rows 2, 0, 2; d sum / d table counts each row's uses: 1, 0, 2.
        let table = Var::from_tensor(&t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2])).unwrap();
        let ids = Tensor::new(&[[2u32, 0, 2]], &Device::Cpu).unwrap();
        let out = embedding(&ids, table.as_tensor()).unwrap();
        assert_eq!(out.dims(), [1, 3, 2]);
        assert_eq!(flat(&out), [5.0, 6.0, 1.0, 2.0, 5.0, 6.0]);
        let g = out.sum_all().unwrap().backward().unwrap();
        assert_eq!(flat(g.get(table.as_tensor()).unwrap()), [1.0, 1.0, 0.0, 0.0, 2.0, 2.0]);
    }

    #[test]
    fn pooling_leaves_padding_out_forward_and_backward() {
        // Row 0 holds two positions and a NaN in its padding; row 1 is fully padded.
        let h = Var::from_tensor(&t(&[1.0, 5.0, 3.0, 4.0, f64::NAN, f64::NAN, 7.0, 7.0, 8.0, 8.0, 9.0, 9.0], &[2, 3, 2])).unwrap();
        let mask = t(&[1.0, 1.0, 0.0, 0.0, 0.0, 0.0], &[2, 3]);
        let mean = mean_pool(h.as_tensor(), Some(&mask)).unwrap();
        // (1 + 3) / 2, (5 + 4) / 2; the empty row divides 0 by max(0, 1).
        assert_eq!(flat(&mean), [2.0, 4.5, 0.0, 0.0]);
        let g = mean.sum_all().unwrap().backward().unwrap();
        assert_eq!(flat(g.get(h.as_tensor()).unwrap()), [0.5, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let max = flat(&max_pool(h.as_tensor(), Some(&mask)).unwrap());
        assert_eq!(max[..2], [3.0, 5.0]);
        assert!(max[2..].iter().all(|v| *v == f64::NEG_INFINITY), "a fully padded row's max is -inf, as masked_fill(-inf).max");
        assert_eq!(flat(&mean_pool(h.as_tensor(), None).unwrap())[2..], [8.0, 8.0]);
        let last = flat(&last(h.as_tensor()).unwrap());
        assert!(last[0].is_nan() && last[1].is_nan() && last[2..] == [9.0, 9.0], "the last position, padded or not: {last:?}");
    }

    #[test]
    fn positional_embedding_adds_one_vector_per_position() {
        let pos = Var::from_tensor(&t(&[10.0, 20.0, 30.0], &[3, 1])).unwrap();
        let out = positional(&t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3, 1]), pos.as_tensor()).unwrap();
        assert_eq!(flat(&out), [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        // Each position's vector is used by both rows.
        let g = out.sum_all().unwrap().backward().unwrap();
        assert_eq!(flat(g.get(pos.as_tensor()).unwrap()), [2.0, 2.0, 2.0]);
    }
}
