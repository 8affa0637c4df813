//! The kernels of the registry's ops that make, mark or reduce sequences
//! (`ops::embedding`, `ops::seq_pool`): token embeddings, learned positional
//! embeddings, and pooling over positions. Pooling leaves padded
//! positions out with `masked_fill` (a `where`), as people write it in PyTorch:
//! `h.masked_fill(~mask, 0).sum(1) / mask.sum(1).clamp(min=1)`, so a NaN in a
//! padded position does not reach the pooled value, nor its gradient.

use candle_core::Tensor;

use crate::error::Result;
use crate::run::opmath;

/// Token ids `(batch, seq)` (u32) to rows of `table` `(vocab, dim)`: `(batch, seq, dim)`.
pub(crate) fn embedding(ids: &Tensor, table: &Tensor) -> Result<Tensor> {
    let (b, s) = ids.dims2()?;
    let dim = table.dims()[1];
    Ok(table.index_select(&ids.flatten_all()?, 0)?.reshape((b, s, dim))?)
}

/// `h + pos`, one learned vector per position.
pub(crate) fn positional(h: &Tensor, pos: &Tensor) -> Result<Tensor> {
    crate::run::kernel::bias::bias_add(h, pos)
}

/// `(batch, seq, 1)`: 1 where a position holds data.
fn keep(h: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok(mask.ne(0.0)?.unsqueeze(2)?.broadcast_as(h.shape())?)
}

/// Mean over the unpadded positions (0 for a fully padded row), as PyTorch computes what
/// people write. Unmasked, `h.mean(1)`: an f32 sum for half dtypes, divided, rounded once.
/// Masked, `h.masked_fill(~keep, 0).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)`: the sum
/// is rounded to the dtype before the division, so in f16 three positions of 30000 overflow
/// (90000 > 65504) where `h.mean(1)` gives 30000, and bf16 rounds twice.
pub(crate) fn mean_pool(h: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let Some(m) = mask else { return opmath::mean(h, &[1]) };
    let m = m.to_dtype(h.dtype())?;
    let kept = keep(h, &m)?.where_cond(h, &h.zeros_like()?)?;
    let sum = opmath::in_f32(&kept, |k| Ok(k.sum(1)?))?;
    let count = opmath::in_f32(&m, |m| Ok(m.sum_keepdim(1)?.maximum(1.0)?))?;
    Ok(sum.broadcast_div(&count)?)
}

/// Maximum over the unpadded positions (`-inf` for a fully padded row, as `masked_fill(-inf).max`),
/// as PyTorch's `max(1)`: a NaN wins, and the gradient goes to the first maximum.
pub(crate) fn max_pool(h: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    match mask {
        None => opmath::max(h, 1),
        Some(m) => {
            let low = Tensor::full(f64::NEG_INFINITY, (), h.device())?.to_dtype(h.dtype())?.broadcast_as(h.shape())?;
            opmath::max(&keep(h, m)?.where_cond(h, &low)?, 1)
        }
    }
}

/// The last position.
pub(crate) fn last(h: &Tensor) -> Result<Tensor> {
    let s = h.dim(1)?;
    Ok(h.narrow(1, s - 1, 1)?.squeeze(1)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

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

    fn half(v: &[f32], shape: &[usize], dtype: DType) -> Tensor {
        Tensor::from_vec(v.to_vec(), shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
    }

    fn wide(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    /// PyTorch 2.15, positions [30000, 30000, 30000, 5] with mask [1, 1, 1, 0]: the masked form
    /// `h.masked_fill(~keep, 0).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)` rounds the sum
    /// first: inf in f16 (90000 > 65504), 30080 in bf16 (89856 rounds to 90112); `h[:, :3].mean(1)`
    /// sums in f32 and rounds once: 30000 (f16), 29952 (bf16).
    #[test]
    fn half_mean_pool_rounds_where_pytorch_rounds() {
        for (dtype, masked, plain) in [(DType::F16, f64::INFINITY, 30000.0), (DType::BF16, 30080.0, 29952.0)] {
            let h = half(&[30000.0, 30000.0, 30000.0, 5.0], &[1, 4, 1], dtype);
            let mask = half(&[1.0, 1.0, 1.0, 0.0], &[1, 4], dtype);
            assert_eq!(wide(&mean_pool(&h, Some(&mask)).unwrap()), [masked], "{dtype:?}");
            assert_eq!(wide(&mean_pool(&h.narrow(1, 0, 3).unwrap(), None).unwrap()), [plain], "{dtype:?}");
        }
        // f32 [5, 0, 0]: PyTorch's mean divides, 1.6666666269302368; 5 · f32(1/3) is 1.6666667461395264.
        assert_eq!(wide(&mean_pool(&half(&[5.0, 0.0, 0.0], &[1, 3, 1], DType::F32), None).unwrap()), [1.6666666269302368]);
    }

    /// PyTorch 2.15 (f32, f16, bf16): h = [[2, nan], [2, 1], [7, 9]] with mask [1, 1, 0];
    /// `h.masked_fill(~keep, -inf).max(1).values` is [2, nan], and the first column's gradient
    /// goes to the first 2 only. Unmasked, [[2, 1], [2, 3], [0.5, 3]] sends it to rows 0 and 1.
    #[test]
    fn max_pool_takes_the_first_maximum_and_lets_nan_through() {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let h = Var::from_tensor(&half(&[2.0, f32::NAN, 2.0, 1.0, 7.0, 9.0], &[1, 3, 2], dtype)).unwrap();
            let out = max_pool(h.as_tensor(), Some(&half(&[1.0, 1.0, 0.0], &[1, 3], dtype))).unwrap();
            let v = wide(&out);
            assert!(v[0] == 2.0 && v[1].is_nan(), "{dtype:?}: {v:?}");
            let g = out.narrow(1, 0, 1).unwrap().sum_all().unwrap().backward().unwrap();
            assert_eq!(wide(g.get(h.as_tensor()).unwrap()), [1.0, 0.0, 0.0, 0.0, 0.0, 0.0], "{dtype:?}");
            let h = Var::from_tensor(&half(&[2.0, 1.0, 2.0, 3.0, 0.5, 3.0], &[1, 3, 2], dtype)).unwrap();
            let g = max_pool(h.as_tensor(), None).unwrap().sum_all().unwrap().backward().unwrap();
            assert_eq!(wide(g.get(h.as_tensor()).unwrap()), [1.0, 0.0, 0.0, 1.0, 0.0, 0.0], "{dtype:?}");
        }
    }

    /// An embedding read by an LSTM, a GRU or an RNN: the forward computes the input projection
    /// from the table's used rows (`run::kernel::gather`) and the tapped re-run, which needs the
    /// embedding output's gradient, from the output. Every output has the same bits; so does
    /// every gradient but the table's and `W_ih`'s, which the fused backward sums per row
    /// first: those agree to 2⁻¹⁸ of their largest value (f32).
    #[test]
    fn a_recurrent_layer_reads_an_embeddings_table_with_the_same_forward_bits() {
        use rand::SeedableRng;

        use crate::ops::gated::{Gru, Lstm};
        use crate::ops::linear::Linear;
        use crate::ops::rnn::Rnn;
        use crate::run::net::Net;
        use crate::scenario::{plan, InShape, Init, Layer, ModelSpec, RnnActivation};
        let (dev, (b, s, vocab)) = (Device::Cpu, (4, 10, 12));
        let recurrent = [
            Layer::Lstm(Lstm { hidden: 6, return_sequences: true, activation: RnnActivation::Tanh, recurrent_dropout: 0.0, init: None }),
            Layer::Gru(Gru { hidden: 6, return_sequences: false, activation: RnnActivation::Tanh, recurrent_dropout: 0.0, init: None }),
            Layer::Rnn(Rnn { hidden: 6, init: None }),
        ];
        for layer in recurrent {
            let layers = vec![Layer::Embedding(crate::ops::embedding::Embedding { dim: 8 }), layer, Layer::Linear(Linear { out: 5, init: None })];
            let spec = ModelSpec { init: Init::Torch, layers, init_scale: 1.0, code: None, onnx: None };
            let p = plan(&spec, InShape { features: 1, seq_len: Some(s), vocab: Some(vocab), image: None }).unwrap();
            let m = crate::run::model::Model::new(&spec, &p, &mut rand_chacha::ChaCha8Rng::seed_from_u64(3), DType::F32, &dev).unwrap();
            let ids = Tensor::from_vec((0..b * s).map(|i| ((i * 7 + 3) % vocab) as u32).collect::<Vec<_>>(), (b, s), &dev).unwrap();
            let run = |tapped: bool| {
                let (outs, slots) = if tapped { m.forward_tapped(&ids, None).unwrap() } else { (m.forward(&ids, None).unwrap(), Vec::new()) };
                let grads = outs.last().unwrap().sqr().unwrap().sum_all().unwrap().backward().unwrap();
                let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let g: Vec<Vec<f32>> = m.params.iter().map(|q| bits(grads.get(q.var.as_tensor()).unwrap())).collect();
                (outs.iter().map(bits).collect::<Vec<_>>(), g, slots.first().and_then(crate::run::model::recorded).is_some())
            };
            let ((fused, fg, _), (plain, pg, seen)) = (run(false), run(true));
            let name = spec.layers[1].op().torch();
            assert!(seen, "{name:?}: the tapped re-run has the embedding output's gradient");
            assert!(fused.iter().zip(&plain).all(|(a, c)| a.iter().map(|v| v.to_bits()).eq(c.iter().map(|v| v.to_bits()))), "{name:?}: an output differs");
            let same = |a: &[f32], c: &[f32]| a.iter().map(|v| v.to_bits()).eq(c.iter().map(|v| v.to_bits()));
            assert!(!same(&fg[1], &pg[1]), "{name:?}: W_ih's gradient has the composed bits: did the table path run?");
            for (k, (a, c)) in fg.iter().zip(&pg).enumerate() {
                if k == 0 || k == 1 {
                    let top = c.iter().fold(0.0f32, |t, v| t.max(v.abs()));
                    let worst = a.iter().zip(c).fold(0.0f32, |t, (x, y)| t.max((x - y).abs()));
                    assert!(top > 0.0 && worst <= top * 2f32.powi(-18), "{name:?}, parameter {k}: {worst} against {top}");
                } else {
                    assert!(same(a, c), "{name:?}, parameter {k} differs");
                }
            }
        }
    }
}
