//! Convolution as one op forward and one backward (`ops::conv`; a conv1d is a conv2d of
//! height 1), in f32 and f64 on the CPU: per sample, im2col (`conv_cols.rs`) into its slot of
//! `c·kh·kw × oh·ow` values ([`Geom::column_values`]), then one gemm. A training forward whose
//! backward can follow (an operand is tracked) keeps the whole batch's columns for it (a
//! spare, `spare.rs`, every value written before it is read; `ops::conv`'s memory estimate
//! counts them, each row's columns): the backward's kernel gradient reads them instead of
//! running im2col again (a second im2col over the batch was a twelfth of a small CNN's step,
//! perf, issue 31), and its input gradient is written over each sample's once read. An
//! evaluation forward (its batch the whole validation split) keeps none, nor one with nothing
//! tracked: one sample's buffer serves the batch; a backward that finds none makes them again.
//! The backward makes the bias's sums, the weight's gradient `g colsᵀ` (per sample, added
//! sample by sample) and the input's, `Wᵀ g` scattered back (col2im); the input's is skipped
//! when nothing upstream needs it (the model's input). Both passes run in the `avx2!` tiers
//! (elementwise, the same bits).
//!
//! Composed in Candle (the path f16 and bf16 keep, `run::model::conv`), the columns of the
//! whole batch were built by an `index_select` per kernel tap and stacked, and the backward
//! scattered each tap's gradient with `index_add` into zeroed tensors: most of a small CNN's
//! step was page faults of those buffers and the adds (perf, issue 31). The arithmetic here is
//! the composed path's, in its order: the same per-sample gemm (`out × c·k² · c·k² × oh·ow`),
//! the bias added after it, the batch's weight gradients summed sample by sample, the bias's
//! sums in the flat order Candle's `sum` takes over a batch (for a batch of one, whose sum runs
//! over the last dimension alone, Candle vectorises it in another order), and each input
//! gradient summed over the row taps of its bands, each band over its column taps. f32 products accumulate in f32, as
//! PyTorch's CPU convolution does.

use std::any::Any;
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::conv_cols::{col2im, im2col, Geom};
use super::linear::{product_either, product_to, Mat};
use super::{avx2, dispatch, spare, Kernel, Real};
use crate::error::Result;

/// `x` convolved by `k` plus `bias` for `x` `(b, c, h, w)`, `k` `(out, c, kh, kw)`: `(b, out, oh, ow)`;
/// `training`: a training forward, whose backward follows.
pub(crate) fn conv(x: &Tensor, k: &Tensor, bias: &Tensor, stride: [usize; 2], pad: [usize; 2], training: bool) -> Result<Tensor> {
    // The batch's columns are kept for the backward only in training and if one can follow (an
    // operand is tracked): an evaluation forward's parameters are tracked too, and its batch is
    // the whole validation split, which the memory estimate does not count columns for.
    let keep = training && (x.track_op() || k.track_op() || bias.track_op());
    Ok(x.contiguous()?.apply_op3(&k.contiguous()?, &bias.contiguous()?, Conv { stride, pad, keep, kept: Mutex::new(None) })?)
}

struct Conv {
    stride: [usize; 2],
    pad: [usize; 2],
    /// Whether the forward keeps the batch's columns for the backward.
    keep: bool,
    /// The forward's columns of the whole batch (`b · Geom::column_values`, sample-major), a
    /// `Vec<T>` (a `spare`): the backward's kernel gradient reads them, and its input gradient
    /// overwrites each sample's once read; given back after the backward, or on drop.
    kept: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Conv {
    fn geom(&self, xl: &Layout, kl: &Layout) -> candle_core::Result<Geom> {
        let (x, k) = (xl.shape().dims4()?, kl.shape().dims4()?);
        Geom::new([x.0, x.1, x.2, x.3], [k.0, k.1, k.2, k.3], self.stride, self.pad)
    }
}

impl Drop for Conv {
    fn drop(&mut self) {
        if let Ok(Some(kept)) = self.kept.get_mut().map(Option::take) {
            give_back(kept);
        }
    }
}

/// Gives kept columns back as a spare (an f32 or f64 `Vec`: the kernel's dtypes).
fn give_back(kept: Box<dyn Any + Send>) {
    match kept.downcast::<Vec<f32>>() {
        Ok(v) => spare::give(*v),
        Err(k) => {
            if let Ok(v) = k.downcast::<Vec<f64>>() {
                spare::give(*v);
            }
        }
    }
}

/// The forward of [`Conv`] on one geometry; `keep`: return the batch's columns too.
struct Forward {
    g: Geom,
    keep: bool,
}

/// The forward on slices: the output, and the batch's columns if `keep` (else one sample's
/// buffer, given back). The output is written once, never zeroed first: each sample's product
/// goes to a spare buffer and its rows are appended with the bias added (a zeroing pass over
/// the output was a twentieth of a small CNN's step, perf, issue 31).
#[inline(always)]
fn forward<T: Real>(g: &Geom, x: &[T], k: &[T], bias: &[T], keep: bool) -> candle_core::Result<(Vec<T>, Option<Vec<T>>)> {
    let ([b, c, h, w], out, n, cv) = (g.x, g.k[0], g.positions(), g.column_values());
    if bias.len() != out {
        candle_core::bail!("conv: a bias of {} for {out} channels", bias.len());
    }
    let mut y = Vec::with_capacity(b * out * n);
    let (mut cols, mut ys) = (spare::take::<T>(if keep { b * cv } else { cv }), spare::take::<T>(out * n));
    for s in 0..b {
        let slot = &mut cols[if keep { s * cv } else { 0 }..][..cv];
        im2col(g, &x[s * c * h * w..][..c * h * w], slot);
        product_to(Mat::new(k, out, g.taps()), Mat::new(slot, g.taps(), n), &mut ys)?;
        for (row, bv) in ys.chunks_exact(n.max(1)).zip(bias) {
            y.extend(row.iter().map(|v| *v + *bv));
        }
    }
    spare::give(ys);
    if keep {
        return Ok((y, Some(cols)));
    }
    spare::give(cols);
    Ok((y, None))
}

avx2! {
    fn forward32(g: &Geom, x: &[f32], k: &[f32], bias: &[f32], keep: bool) -> candle_core::Result<(Vec<f32>, Option<Vec<f32>>)> {
        forward(g, x, k, bias, keep)
    }
}

/// Boxes kept columns.
fn boxed<T: Send + 'static>(v: Option<Vec<T>>) -> Option<Box<dyn Any + Send>> {
    v.map(|v| Box::new(v) as Box<dyn Any + Send>)
}

impl Kernel<3> for Forward {
    type Out = (CpuStorage, Option<Box<dyn Any + Send>>);

    fn name(&self) -> &str {
        "conv"
    }

    fn run<T: Real>(&self, [x, k, bias]: [&[T]; 3]) -> candle_core::Result<Self::Out> {
        let (y, cols) = forward(&self.g, x, k, bias, self.keep)?;
        Ok((T::to_cpu_storage_owned(y), boxed(cols)))
    }

    fn run_f32(&self, [x, k, bias]: [&[f32]; 3]) -> candle_core::Result<Self::Out> {
        let (y, cols) = forward32(&self.g, x, k, bias, self.keep)?;
        Ok((CpuStorage::F32(y), boxed(cols)))
    }
}

/// A poisoned lock as Candle's error.
fn poisoned<E>(_: E) -> candle_core::Error {
    candle_core::Error::Msg("conv: a poisoned lock".into())
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "conv"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, k: &CpuStorage, kl: &Layout, b: &CpuStorage, bl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geom(xl, kl)?;
        let (y, cols) = dispatch(&Forward { g, keep: self.keep }, [(x, xl), (k, kl), (b, bl)])?;
        if let Some(old) = std::mem::replace(&mut *self.kept.lock().map_err(poisoned)?, cols) {
            give_back(old);
        }
        Ok((y, (g.x[0], g.k[0], g.o[0], g.o[1]).into()))
    }

    fn bwd(&self, x: &Tensor, k: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geom(x.layout(), k.layout())?;
        let input = x.track_op();
        // The kept columns go to this backward (a second one makes its own).
        let kept = Mutex::new(self.kept.lock().map_err(poisoned)?.take());
        let all = x.apply_op3_no_bwd(k, &grad.contiguous()?, &Backward { g, input, kept })?;
        let (nx, nk) = (x.elem_count(), k.elem_count());
        let dk = all.narrow(0, if input { nx } else { 0 }, nk)?.reshape(k.shape())?;
        let db = all.narrow(0, all.elem_count() - g.k[0], g.k[0])?;
        let dx = if input { Some(all.narrow(0, 0, nx)?.reshape(x.shape())?) } else { None };
        Ok((dx, Some(dk), Some(db)))
    }
}

/// The backward of [`Conv`] from `(x, k, grad)`: one flat tensor holding the input's gradient
/// (if `input`), the kernel's and the bias's, in that order.
struct Backward {
    g: Geom,
    input: bool,
    /// The forward's columns, if it kept them (see [`Conv::kept`]).
    kept: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Drop for Backward {
    fn drop(&mut self) {
        if let Ok(Some(kept)) = self.kept.get_mut().map(Option::take) {
            give_back(kept);
        }
    }
}

/// The backward on slices, with the forward's columns of the batch if kept (`cols`, `b`
/// samples'), else a buffer of one sample's that im2col fills again for each. Per sample: the
/// kernel's gradient `g colsᵀ` added in (in the layout gemm makes it in, [`product_either`]),
/// then, if `input`, the columns' gradient `Wᵀ g` written over the sample's columns (read for
/// the last time) and added back into the input's (col2im).
#[inline(always)]
fn backward<T: Real>(g: &Geom, input: bool, [x, k, grad]: [&[T]; 3], cols: Option<Vec<T>>) -> candle_core::Result<(Vec<T>, Vec<T>)> {
    let ([b, c, h, w], out, n, taps, cv) = (g.x, g.k[0], g.positions(), g.taps(), g.column_values());
    let kept = cols.is_some();
    let nx = if input { b * c * h * w } else { 0 };
    let mut all = vec![T::zero(); nx + out * taps];
    let (dx, dk) = all.split_at_mut(nx);
    let (mut cols, mut part) = (cols.unwrap_or_else(|| spare::take::<T>(cv)), spare::take::<T>(out * taps));
    let mut band = vec![T::zero(); g.x[3] + 2 * g.pad[1]];
    let mut column_major = None;
    for s in 0..b {
        let gs = &grad[s * out * n..][..out * n];
        let slot = &mut cols[if kept { s * cv } else { 0 }..][..cv];
        if !kept {
            im2col(g, &x[s * c * h * w..][..c * h * w], slot);
        }
        // In the layout gemm makes it in: moved to row-major once for the batch, not per sample.
        let this = product_either(Mat::new(gs, out, n), Mat::new(slot, taps, n).t(), &mut part)?;
        if *column_major.get_or_insert(this) != this {
            candle_core::bail!("conv backward: the kernel gradient's products changed layout");
        }
        dk.iter_mut().zip(&part).for_each(|(d, p)| *d += *p);
        if input {
            product_to(Mat::new(k, out, taps).t(), Mat::new(gs, out, n), slot)?;
            col2im(g, slot, &mut dx[s * c * h * w..][..c * h * w], &mut band);
        }
    }
    spare::give(part);
    if column_major == Some(true) {
        let row_major = Mat::new(&*dk, taps, out).t().row_major();
        dk.copy_from_slice(&row_major);
    }
    all.extend(bias_sums(g, grad));
    Ok((all, cols))
}

avx2! {
    fn backward32(g: &Geom, input: bool, v: [&[f32]; 3], cols: Option<Vec<f32>>) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        backward(g, input, v, cols)
    }
}

/// The bias's gradient: each channel's sum over the batch and positions, in the flat order
/// of `(b, out, positions)` (as Candle's `sum` adds over a batch of more than one).
#[inline(always)]
fn bias_sums<T: Real>(g: &Geom, grad: &[T]) -> Vec<T> {
    let (out, n) = (g.k[0], g.positions());
    // Channels in blocks of L, their sums in registers, each channel's row read in order: each
    // sum takes its values in the same order as one channel at a time would (the flat order).
    // The rows are read P positions at a time and transposed into P blocks of L channels, so
    // the adds are vector adds (reading one value of each row in turn went one add at a time).
    const L: usize = 8;
    const P: usize = 8;
    let mut db = vec![T::zero(); out];
    let (full, whole) = (out / L * L, n / P * P);
    for sample in grad.chunks_exact((out * n).max(1)) {
        for (o0, d) in (0..full).step_by(L).zip(db.chunks_exact_mut(L)) {
            let rows: [&[T]; L] = std::array::from_fn(|l| &sample[(o0 + l) * n..][..n]);
            let mut acc: [T; L] = std::array::from_fn(|l| d[l]);
            for p0 in (0..whole).step_by(P) {
                let tile: [&[T; P]; L] = std::array::from_fn(|l| rows[l][p0..p0 + P].try_into().expect("P values"));
                let cols: [[T; L]; P] = std::array::from_fn(|j| std::array::from_fn(|l| tile[l][j]));
                for col in &cols {
                    acc = std::array::from_fn(|l| acc[l] + col[l]);
                }
            }
            for p in whole..n {
                for (a, row) in acc.iter_mut().zip(&rows) {
                    *a += row[p];
                }
            }
            d.copy_from_slice(&acc);
        }
        for (o, d) in db.iter_mut().enumerate().skip(full) {
            sample[o * n..][..n].iter().for_each(|v| *d += *v);
        }
    }
    db
}

impl Backward {
    /// The kept columns as a `Vec<T>` of the batch's length, if the forward kept them.
    fn columns<T: Real>(&self) -> candle_core::Result<Option<Vec<T>>> {
        let Some(kept) = self.kept.lock().map_err(poisoned)?.take() else { return Ok(None) };
        match kept.downcast::<Vec<T>>() {
            Ok(v) if v.len() == self.g.x[0] * self.g.column_values() => Ok(Some(*v)),
            Ok(v) => {
                spare::give(*v);
                Ok(None)
            }
            Err(other) => {
                give_back(other);
                Ok(None)
            }
        }
    }
}

impl Kernel<3> for Backward {
    type Out = (CpuStorage, Shape);

    fn name(&self) -> &str {
        "conv backward"
    }

    fn run<T: Real>(&self, v: [&[T]; 3]) -> candle_core::Result<(CpuStorage, Shape)> {
        let (all, cols) = backward(&self.g, self.input, v, self.columns::<T>()?)?;
        spare::give(cols);
        let len = all.len();
        Ok((T::to_cpu_storage_owned(all), len.into()))
    }

    fn run_f32(&self, v: [&[f32]; 3]) -> candle_core::Result<(CpuStorage, Shape)> {
        let (all, cols) = backward32(&self.g, self.input, v, self.columns::<f32>()?)?;
        spare::give(cols);
        let len = all.len();
        Ok((CpuStorage::F32(all), len.into()))
    }
}

impl CustomOp3 for Backward {
    fn name(&self) -> &'static str {
        "conv-backward"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, k: &CpuStorage, kl: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        dispatch(self, [(x, xl), (k, kl), (g, gl)])
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::conv;
    use crate::run::kernel::conv_cols::tests::wavy;

    /// The bias's gradient over 11 channels (a block of 8 and 3 more) and 20 positions (two
    /// transposed tiles of 8 and 4 more) is each channel's upstream gradient summed in f32 in
    /// the flat order (sample by sample, position by position), as a plain loop adds it.
    #[test]
    fn bias_gradient_is_the_flat_order_sum_of_each_channel() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::from_vec(wavy(3 * 2 * 5 * 6, 0.1), (3, 2, 5, 6), &dev).unwrap()).unwrap();
        let k = Var::from_tensor(&Tensor::from_vec(wavy(11 * 2 * 2 * 2, 1.3), (11, 2, 2, 2), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::from_vec(wavy(11, 2.2), 11, &dev).unwrap()).unwrap();
        let y = conv(x.as_tensor(), k.as_tensor(), b.as_tensor(), [1, 1], [0, 0], true).unwrap();
        assert_eq!(y.dims(), [3, 11, 4, 5]);
        let u = wavy(3 * 11 * 20, 0.9);
        let g = (&y * Tensor::from_vec(u.clone(), (3, 11, 4, 5), &dev).unwrap()).unwrap().sum_all().unwrap().backward().unwrap();
        let db = g.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        for (o, got) in db.iter().enumerate() {
            let mut want = 0.0f32;
            for s in 0..3 {
                u[(s * 11 + o) * 20..][..20].iter().for_each(|v| want += *v);
            }
            assert_eq!(got.to_bits(), want.to_bits(), "channel {o}: {got} vs {want}");
        }
    }

    /// The output and every gradient have the same bits at each tier (AVX-512, AVX2, plain),
    /// with the forward's columns kept for the backward, with them made again by im2col (a
    /// second backward over the same graph: the kept ones are spent) and, for the output, with
    /// none kept (plain tensors, no backward); for a plain and a padded, strided convolution.
    #[test]
    fn tiers_and_kept_columns_give_the_same_bits() {
        use crate::run::kernel::WIDEST;
        let dev = Device::Cpu;
        let bits = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let mut tiers = vec![];
        for tier in [2u8, 1, 0] {
            WIDEST.with(|w| w.set(tier));
            let mut runs = vec![];
            for (stride, pad) in [([1, 1], [0, 0]), ([2, 1], [1, 2])] {
                let x = Tensor::from_vec(wavy(3 * 2 * 9 * 11, 0.1), (3, 2, 9, 11), &dev).unwrap();
                let k = Tensor::from_vec(wavy(5 * 2 * 3 * 3, 1.3), (5, 2, 3, 3), &dev).unwrap();
                let b = Tensor::from_vec(wavy(5, 2.2), 5, &dev).unwrap();
                let plain = conv(&x, &k, &b, stride, pad, true).unwrap();
                let (xv, kv, bv) = (Var::from_tensor(&x).unwrap(), Var::from_tensor(&k).unwrap(), Var::from_tensor(&b).unwrap());
                let y = conv(xv.as_tensor(), kv.as_tensor(), bv.as_tensor(), stride, pad, true).unwrap();
                assert_eq!(bits(&plain), bits(&y), "tier {tier}, stride {stride:?}: the output without kept columns");
                // An evaluation forward over tracked operands keeps nothing: its backward, if one
                // runs, makes the columns again, to the same bits as the training forward's.
                let eval = conv(xv.as_tensor(), kv.as_tensor(), bv.as_tensor(), stride, pad, false).unwrap();
                assert_eq!(bits(&eval), bits(&y), "tier {tier}, stride {stride:?}: the evaluation forward");
                let up_eval = Tensor::from_vec(wavy(eval.elem_count(), 0.9), eval.shape(), &dev).unwrap();
                let eval_grads = (&eval * up_eval).unwrap().sum_all().unwrap().backward().unwrap();
                let up = Tensor::from_vec(wavy(y.elem_count(), 0.9), y.shape(), &dev).unwrap();
                let loss = (&y * up).unwrap().sum_all().unwrap();
                let grads = |g: candle_core::backprop::GradStore| [&xv, &kv, &bv].map(|v| bits(g.get(v.as_tensor()).unwrap()));
                let (kept, again) = (grads(loss.backward().unwrap()), grads(loss.backward().unwrap()));
                assert_eq!(kept, again, "tier {tier}, stride {stride:?}: gradients from kept columns and from im2col again");
                assert_eq!(kept, grads(eval_grads), "tier {tier}, stride {stride:?}: gradients after an evaluation forward");
                runs.push((bits(&y), kept));
            }
            tiers.push(runs);
        }
        WIDEST.with(|w| w.set(2));
        assert!(tiers[1] == tiers[0] && tiers[2] == tiers[0], "the tiers' bits differ");
    }
}
