//! A dense layer over rows of a table: `table[ids] W + b` without the gathered
//! rows. When a recurrent layer reads an embedding's output unchanged, its input
//! projection `x W_ih + b_ih` of every position is a row of `table W_ih`: this op
//! multiplies the table's rows that occur in the batch (`U`, ascending) once and
//! copies a row per position. The backward sums the positions' gradients per row,
//! `S` `(|U|, out)`, then `dW = table[U]ᵀ S` and `dtable[U] = S Wᵀ` (the other rows
//! get 0, as `index_add` gives them); the bias's is the column sums of every
//! position's, as the dense layer's.
//!
//! The forward is the dense layer's bits (`linear::linear_bias_last`: gemm rounds
//! each row's product alone, then the bias is added). The backward sums in
//! another order than `xᵀ g` and `index_add(g Wᵀ)` (per row first), so its last
//! bits differ, as any gemm order's do. Only the rows that occur are read: an Inf
//! or NaN in a row no token picks stays out of `dW`, as PyTorch's `xᵀ g` never reads
//! it. A row that occurs and holds an Inf gives NaN or ±Inf in `dW` (PyTorch's sum of
//! `Inf·g` over positions is NaN where the gs' signs differ; `Inf·Σg` is ±Inf or NaN
//! at a zero sum): non-finite either way, and its forward output is flagged first.
//! `Rows::pays` says when it is worth it: at most half as many rows as positions.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::linear::{product_to, Mat};
use super::{dispatch, Kernel, Real};
use crate::error::Result;

/// Token ids `(batch, seq)` and the table rows they use.
#[derive(Debug, Clone)]
pub(crate) struct Rows {
    /// Batch and sequence length.
    dims: (usize, usize),
    /// The used rows' slot (index in `used`) at each position, row-major `(batch, seq)`.
    slot: Vec<u32>,
    /// The table rows that occur, ascending.
    used: Vec<u32>,
    /// The table's row count.
    vocab: usize,
}

impl Rows {
    /// The rows `ids` `(batch, seq)` picks from a table of `vocab` rows; an id past it is an error.
    pub(crate) fn new(ids: &Tensor, vocab: usize) -> Result<Rows> {
        let dims = ids.dims2()?;
        let flat: Vec<u32> = ids.flatten_all()?.to_dtype(candle_core::DType::U32)?.to_vec1()?;
        let mut at = vec![u32::MAX; vocab];
        let mut seen = vec![false; vocab];
        for &i in &flat {
            match seen.get_mut(i as usize) {
                Some(s) => *s = true,
                None => return Err(candle_core::Error::Msg(format!("embedding: token id {i} is outside the table's {vocab} rows")).into()),
            }
        }
        let used: Vec<u32> = (0..vocab as u32).filter(|&v| seen[v as usize]).collect();
        for (k, &v) in used.iter().enumerate() {
            at[v as usize] = k as u32;
        }
        let slot = flat.iter().map(|&i| at[i as usize]).collect();
        Ok(Rows { dims, slot, used, vocab })
    }

    /// Whether multiplying the used rows saves work: at most half as many rows as positions
    /// (the backward's per-row sum reads every position's gradient once more).
    pub(crate) fn pays(&self) -> bool {
        self.used.len() * 2 <= self.slot.len()
    }

    /// The used rows of the row-major `table` of width `e`, `(|U|, e)`.
    fn gather<T: Real>(&self, table: &[T], e: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(self.used.len() * e);
        for &v in &self.used {
            out.extend_from_slice(&table[v as usize * e..][..e]);
        }
        out
    }
}

/// `table[ids] W + b` `(batch, seq, out)` for `table` `(vocab, in)`, `W` `(in, out)`, `b`
/// `(out)`: CPU tensors in f32 or f64 (see the module's doc).
pub(crate) fn rows_linear(rows: &Rows, table: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(table.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, RowsLinear(rows.clone()))?)
}

struct RowsLinear(Rows);

impl RowsLinear {
    /// `(in, out)`, checked against the table and the bias.
    fn sizes(&self, tl: &Layout, wl: &Layout, bl: &Layout) -> candle_core::Result<(usize, usize)> {
        let (vocab, e) = tl.shape().dims2()?;
        let (input, out) = wl.shape().dims2()?;
        if vocab != self.0.vocab || input != e || bl.shape().elem_count() != out {
            candle_core::bail!("rows linear: table {:?}, weights {:?}, bias {:?} for {} rows", tl.shape().dims(), wl.shape().dims(), bl.shape().dims(), self.0.vocab);
        }
        Ok((e, out))
    }
}

/// The forward's kernel.
struct Forward<'a>(&'a Rows, (usize, usize));

impl Kernel<3> for Forward<'_> {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "rows linear"
    }

    fn run<T: Real>(&self, [table, w, b]: [&[T]; 3]) -> candle_core::Result<CpuStorage> {
        let (rows, (e, out)) = (self.0, self.1);
        let used = rows.gather(table, e);
        let mut p = vec![T::zero(); rows.used.len() * out];
        product_to(Mat::new(&used, rows.used.len(), e), Mat::new(w, e, out), &mut p)?;
        let mut y = Vec::with_capacity(rows.slot.len() * out);
        for &k in &rows.slot {
            y.extend(p[k as usize * out..][..out].iter().zip(b).map(|(v, c)| *v + *c));
        }
        Ok(T::to_cpu_storage_owned(y))
    }
}

/// The backward's kernel: from `(table, W, g)`, the gradients of the table and of `W`.
struct Backward<'a>(&'a Rows, (usize, usize));

impl Kernel<3> for Backward<'_> {
    type Out = (Tensor, Tensor);

    fn name(&self) -> &str {
        "rows linear backward"
    }

    fn run<T: Real>(&self, [table, w, g]: [&[T]; 3]) -> candle_core::Result<(Tensor, Tensor)> {
        let (rows, (e, out)) = (self.0, self.1);
        let n = rows.used.len();
        let mut s = vec![T::zero(); n * out];
        for (&k, gr) in rows.slot.iter().zip(g.chunks_exact(out)) {
            for (a, v) in s[k as usize * out..][..out].iter_mut().zip(gr) {
                *a += *v;
            }
        }
        let used = rows.gather(table, e);
        let mut dw = vec![T::zero(); e * out];
        product_to(Mat::new(&used, n, e).t(), Mat::new(&s, n, out), &mut dw)?;
        let mut du = vec![T::zero(); n * e];
        product_to(Mat::new(&s, n, out), Mat::new(w, e, out).t(), &mut du)?;
        let mut dt = vec![T::zero(); rows.vocab * e];
        for (&v, d) in rows.used.iter().zip(du.chunks_exact(e)) {
            dt[v as usize * e..][..e].copy_from_slice(d);
        }
        let cpu = &candle_core::Device::Cpu;
        Ok((Tensor::from_vec(dt, (rows.vocab, e), cpu)?, Tensor::from_vec(dw, (e, out), cpu)?))
    }
}

impl CustomOp3 for RowsLinear {
    fn name(&self) -> &'static str {
        "rows-linear"
    }

    fn cpu_fwd(&self, t: &CpuStorage, tl: &Layout, w: &CpuStorage, wl: &Layout, b: &CpuStorage, bl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = self.sizes(tl, wl, bl)?;
        let y = dispatch(&Forward(&self.0, n), [(t, tl), (w, wl), (b, bl)])?;
        Ok((y, (self.0.dims.0, self.0.dims.1, n.1).into()))
    }

    fn bwd(&self, t: &Tensor, w: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let n = self.sizes(t.layout(), w.layout(), b.layout())?;
        let g = grad.contiguous()?;
        let (dt, dw) = {
            let (ts, tl) = t.storage_and_layout();
            let (ws, wl) = w.storage_and_layout();
            let (gs, gl) = g.storage_and_layout();
            let (candle_core::Storage::Cpu(ts), candle_core::Storage::Cpu(ws), candle_core::Storage::Cpu(gs)) = (&*ts, &*ws, &*gs) else { candle_core::bail!("rows linear: CPU tensors only") };
            dispatch(&Backward(&self.0, n), [(ts, tl), (ws, wl), (gs, gl)])?
        };
        let db = super::bias::column_sums(&g, n.1)?;
        Ok((Some(dt), Some(dw), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::{rows_linear, Rows};

    fn var(v: Vec<f64>, shape: &[usize], dtype: DType) -> Var {
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap()
    }

    /// PyTorch 2.15, f64: `F.linear(F.embedding(ids, t), W.T, b)` with `ids = [[0, 2, 0, 3]]`,
    /// row 1 of `t` holding an inf no id picks, and loss `(y * G).sum()`: every gradient is
    /// finite (`xᵀ g` never reads row 1), and so is the op's, value for value.
    #[test]
    fn an_inf_in_an_unused_row_stays_out_of_the_gradients() {
        let t = var(vec![0.5, -1.0, f64::INFINITY, 1.0, 2.0, 0.25, -0.75, 3.0], &[4, 2], DType::F64);
        let w = var(vec![1.0, -2.0, 0.5, 0.25, 3.0, -1.0], &[2, 3], DType::F64);
        let b = var(vec![0.1, 0.2, 0.3], &[3], DType::F64);
        let ids = Tensor::new(&[[0u32, 2, 0, 3]], &Device::Cpu).unwrap();
        let g = Tensor::new(&[[[1.0f64, 0.5, -2.0], [0.25, -1.0, 1.5], [-3.0, 2.0, 0.75], [0.5, 0.5, 0.5]]], &Device::Cpu).unwrap();
        let rows = Rows::new(&ids, 4).unwrap();
        let y = rows_linear(&rows, t.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
        let want = [0.35, -3.8, 1.55, 2.1625, -3.05, 1.05, 0.35, -3.8, 1.55, 0.09999999999999998, 10.7, -3.075];
        for (a, w) in flat(&y).iter().zip(want) {
            assert!((a - w).abs() < 1e-15, "{a} vs PyTorch {w}");
        }
        let grads = (y * g).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(flat(grads.get(w.as_tensor()).unwrap()), [-0.875, -1.125, 2.0, 3.5625, -1.25, 3.125]);
        assert_eq!(flat(grads.get(t.as_tensor()).unwrap()), [-7.625, 8.25, 0.0, 0.0, 3.0, -4.4375, -0.25, 1.125]);
        assert_eq!(flat(grads.get(b.as_tensor()).unwrap()), [-1.25, 2.0, 0.75]);
        let err = Rows::new(&Tensor::new(&[[0u32, 4]], &Device::Cpu).unwrap(), 4).unwrap_err().to_string();
        assert!(err.contains("token id 4 is outside the table's 4 rows"), "{err}");
    }

    /// The language model's sizes (batch 16 × 32 tokens, a table of 64 × 64, 512 gates), with
    /// 1, 2, 5 and 64 rows used: the output has the bits of the dense layer on the gathered rows
    /// (`linear_bias_last` of `index_select`), and so does the bias's gradient; the table's and
    /// the weights' gradients, summed per row first, agree with the composed ones (Candle's
    /// `index_add` of `g Wᵀ`, and `xᵀ g`) to 2⁻¹⁵ of their largest value in f32 and 2⁻⁴⁴ in f64
    /// (sums of 512 to 262,144 products; measured worst 2⁻¹⁶·⁵ and 2⁻⁴⁵·⁶), and unused rows get
    /// exact zeros.
    #[test]
    fn the_dense_layers_forward_bits_and_its_gradients_to_rounding() {
        let (batch, seq, vocab, e, out) = (16, 32, 64, 64, 512);
        let wave = |n: usize, p: f64, s: f64| (0..n).map(|i| s * (p + 0.77 * i as f64).sin()).collect::<Vec<f64>>();
        for dtype in [DType::F32, DType::F64] {
            for used in [1, 2, 5, 64] {
                let ids: Vec<u32> = (0..batch * seq).map(|i| ((i * 37 + 11) % used) as u32 * (vocab / used) as u32).collect();
                let ids = Tensor::from_vec(ids, (batch, seq), &Device::Cpu).unwrap();
                let (t, w, b) = (var(wave(vocab * e, 0.3, 1.0), &[vocab, e], dtype), var(wave(e * out, 1.1, 0.1), &[e, out], dtype), var(wave(out, 0.7, 0.1), &[out], dtype));
                let g = Tensor::from_vec(wave(batch * seq * out, 2.9, 1.0), (batch, seq, out), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
                let rows = Rows::new(&ids, vocab).unwrap();
                assert_eq!(rows.pays(), used <= 256, "{used} rows");
                let fused = rows_linear(&rows, t.as_tensor(), w.as_tensor(), b.as_tensor()).unwrap();
                let x = crate::run::model::sequence::embedding(&ids, t.as_tensor()).unwrap();
                let composed = crate::run::kernel::linear::linear_bias_last(&x, w.as_tensor(), b.as_tensor()).unwrap();
                let bits = |t: &Tensor| flat(t).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert!(bits(&fused) == bits(&composed), "{dtype:?}, {used} rows: the forward's bits differ");
                let grads = |y: Tensor| {
                    let gs = (y * &g).unwrap().sum_all().unwrap().backward().unwrap();
                    [&t, &w, &b].map(|v| flat(gs.get(v.as_tensor()).unwrap()))
                };
                let (a, c) = (grads(fused), grads(composed));
                assert!(a[2] == c[2], "{dtype:?}, {used} rows: the bias's gradient differs");
                let tol = if dtype == DType::F32 { 2f64.powi(-15) } else { 2f64.powi(-44) };
                for (k, name) in [(0, "table"), (1, "weights")] {
                    let top = c[k].iter().fold(0.0f64, |m, v| m.max(v.abs()));
                    let worst = a[k].iter().zip(&c[k]).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
                    assert!(top > 0.0 && worst <= tol * top, "{dtype:?}, {used} rows, {name}: {worst} against {top}");
                }
                let unused = |v: &[f64]| v.chunks(e).enumerate().filter(|(r, _)| r % (vocab / used) != 0 || r / (vocab / used) >= used).all(|(_, row)| row.iter().all(|x| *x == 0.0));
                assert!(unused(&a[0]) && unused(&c[0]), "{dtype:?}, {used} rows: an unused row's gradient is not 0");
            }
        }
    }
}
