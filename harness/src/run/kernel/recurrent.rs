//! The fused recurrence of the registry's `rnn`, `lstm` and `gru` on the CPU, in
//! f32, f64, f16 and bf16: one op over the whole sequence, its input projection for every
//! step computed before it (one op with its own backward, `linear::linear_bias_last`), and a
//! hand-written backward through time. Per step it makes the recurrent product
//! (`recurrent_gemm.rs`), then each row's cell (`cells.rs`); it keeps the states and
//! the gates the backward reads, which runs the steps in reverse with PyTorch's formulas.
//! In f32 and f64 the products are gemm called as Candle's matmul calls it and the sums
//! are in Candle's order, so the states and the input gates' gradient are the bits of the
//! composed path (`run::model::recurrent`, which other devices keep); the recurrent
//! weights' and bias's gradients are one product and one column sum over every step at the
//! end (`recurrent_gemm::weights_grad`), not one a step as the composed path and PyTorch's
//! RNN and GRU loop (`RNN.cpp`) add them: the same terms in another order, differing in the
//! last bits. PyTorch 2.15's f32 `nn.LSTM` on the CPU runs oneDNN's RNN (`use_mkldnn`;
//! `MkldnnRnnLayerBackward0`), whose weights' gradient is one sum over the iterations: on
//! the language model's sizes it errs from the exact sum as one f32 product does (mean 6.7e-8
//! against 5.6e-8; a per-step sum 2.9e-8) and equals neither order's bits. In f16 and bf16 every op
//! is PyTorch's CPU op on a half tensor (`aten/src/ATen/native/RNN.cpp`'s cells and
//! their autograd: each computed in f32 and rounded once), which the composed path,
//! rounding twice in places, is not.
//!
//! Composed, a 100-step sequence was some 20 Candle ops a step each way, every
//! one allocating its result and, in the backward, a zero gradient to add into.

use std::any::Any;
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Device, Layout, Shape, Storage, Tensor};

use super::bias::sums;
use super::cells::{Back, Cell, Step};
use super::recurrent_gemm::{is_half, product, transposed, weights_grad, Wide};
use super::{avx2, contiguous, dispatch, spare, Dtypes, Kernel, Real};
use crate::error::Result;

/// The recurrence of `cell` over its input gates `gi` `(batch, seq, G·H)` with the recurrent
/// weights `w_hh` `(H, G·H)`, the recurrent bias `b_hh` `(G·H)` (`None` for the RNN, whose
/// input holds both biases) and the recurrent dropout mask `(batch, H)` on the state fed
/// back: every state `(batch, seq, H)`, or the last `(batch, H)`. CPU tensors of one float
/// type. With `b_hh` the first state's zeros are multiplied too (an RNN in a half type
/// takes its `b_hh` here, as PyTorch's `linear_hh` adds it, not in its input).
pub(crate) fn recurrence(gi: &Tensor, w_hh: &Tensor, b_hh: Option<&Tensor>, mask: Option<&Tensor>, cell: Cell, sequences: bool) -> Result<Tensor> {
    let op = Recurrence { cell, sequences, biased: b_hh.is_some(), mask: mask.map(Tensor::contiguous).transpose()?, kept: Mutex::new(None) };
    let (gi, w) = (gi.contiguous()?, w_hh.contiguous()?);
    Ok(match b_hh {
        Some(b) => gi.apply_op3(&w, &b.contiguous()?, op)?,
        None => gi.apply_op2(&w, op)?,
    })
}

/// Batch, steps and hidden size.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    s: usize,
    h: usize,
}

/// The op: its cell, what it returns, its mask, and what its forward kept for the backward.
struct Recurrence {
    cell: Cell,
    sequences: bool,
    /// Whether it has a recurrent bias (and so a product of the first state's zeros).
    biased: bool,
    mask: Option<Tensor>,
    /// Every state, then every step's kept values, time-major (`(seq, batch, H)` and
    /// `(seq, batch, kept·H)`), a `Vec<T>` set by the forward (a `spare`, given back on drop).
    kept: Mutex<Option<Box<dyn Any + Send>>>,
}

impl Drop for Recurrence {
    fn drop(&mut self) {
        let Ok(Some(kept)) = self.kept.get_mut().map(Option::take) else { return };
        let kept = match give::<f32>(kept).and_then(give::<f64>).and_then(give::<half::f16>) {
            Some(k) => k,
            None => return,
        };
        give::<half::bf16>(kept);
    }
}

/// Gives `kept` back as a spare if it is a `Vec<T>`, else returns it.
fn give<T: Send + 'static>(kept: Box<dyn Any + Send>) -> Option<Box<dyn Any + Send>> {
    match kept.downcast::<Vec<T>>() {
        Ok(v) => {
            spare::give(*v);
            None
        }
        Err(k) => Some(k),
    }
}

/// A CPU tensor's storage and layout, or an error naming the op.
fn cpu(t: &Tensor) -> candle_core::Result<(impl std::ops::Deref<Target = Storage> + '_, &Layout)> {
    let (s, l) = t.storage_and_layout();
    if !matches!(&*s, Storage::Cpu(_)) {
        candle_core::bail!("recurrence: CPU tensors only");
    }
    Ok((s, l))
}

/// The CPU storage behind a guard [`cpu`] checked.
fn storage(s: &impl std::ops::Deref<Target = Storage>) -> &CpuStorage {
    match &**s {
        Storage::Cpu(c) => c,
        _ => unreachable!("checked by cpu()"),
    }
}

impl Recurrence {
    /// Checks the shapes of the input gates and the weights; the sizes.
    fn dims(&self, gl: &Layout, wl: &Layout, bias: Option<&Layout>) -> candle_core::Result<Dims> {
        let (b, s, gh) = gl.shape().dims3()?;
        let (h, wgh) = wl.shape().dims2()?;
        let bias_ok = bias.is_none_or(|l| l.shape().elem_count() == gh);
        if wgh != gh || gh != self.cell.gates() * h || !bias_ok || h == 0 {
            candle_core::bail!("recurrence: input gates {:?}, weights {:?} for {:?}", gl.shape().dims(), wl.shape().dims(), self.cell);
        }
        if s == 0 {
            candle_core::bail!("recurrence: an empty sequence");
        }
        Ok(Dims { b, s, h })
    }

    fn fwd(&self, inputs: &[(&CpuStorage, &Layout)]) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.dims(inputs[0].1, inputs[1].1, inputs.get(2).map(|i| i.1))?;
        let guard = self.mask.as_ref().map(cpu).transpose()?;
        let mask = guard.as_ref().map(|(s, l)| (storage(s), *l));
        let k = Forward { op: self, d, mask };
        let (out, kept) = match inputs {
            [g, w, b] => dispatch(&k, [*g, *w, *b])?,
            [g, w] => dispatch(&k, [*g, *w])?,
            _ => candle_core::bail!("recurrence: two or three inputs"),
        };
        *self.kept.lock().map_err(|_| candle_core::Error::Msg("recurrence: a poisoned lock".into()))? = Some(kept);
        let shape: Shape = if self.sequences { (d.b, d.s, d.h).into() } else { (d.b, d.h).into() };
        Ok((out, shape))
    }

    /// The gradients of the input gates, the recurrent weights and (gated cells) the bias.
    fn bwd(&self, gi: &Tensor, w: &Tensor, grad: &Tensor) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
        let kept = self.kept.lock().map_err(|_| candle_core::Error::Msg("recurrence: a poisoned lock".into()))?;
        let Some(kept) = kept.as_deref() else { candle_core::bail!("recurrence: backward before forward") };
        let (b, s, _) = gi.dims3()?;
        let d = Dims { b, s, h: w.dims()[0] };
        let grad = grad.contiguous()?;
        let (gs, ws) = (cpu(&grad)?, cpu(w)?);
        let guard = self.mask.as_ref().map(cpu).transpose()?;
        let mask = guard.as_ref().map(|(s, l)| (storage(s), *l));
        let k = Backward { op: self, d, mask, kept };
        dispatch(&k, [(storage(&gs.0), gs.1), (storage(&ws.0), ws.1)])
    }
}

impl CustomOp2 for Recurrence {
    fn name(&self) -> &'static str {
        "recurrence"
    }

    fn cpu_fwd(&self, g: &CpuStorage, gl: &Layout, w: &CpuStorage, wl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd(&[(g, gl), (w, wl)])
    }

    fn bwd(&self, gi: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dg, dw, _) = Recurrence::bwd(self, gi, w, grad)?;
        Ok((Some(dg), Some(dw)))
    }
}

impl CustomOp3 for Recurrence {
    fn name(&self) -> &'static str {
        "recurrence"
    }

    fn cpu_fwd(&self, g: &CpuStorage, gl: &Layout, w: &CpuStorage, wl: &Layout, b: &CpuStorage, bl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd(&[(g, gl), (w, wl), (b, bl)])
    }

    fn bwd(&self, gi: &Tensor, w: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dg, dw, db) = Recurrence::bwd(self, gi, w, grad)?;
        Ok((Some(dg), Some(dw), db))
    }
}

/// `h ⊙ mask` into `out`, or `h` itself without a mask.
fn masked<'a, T: Real>(h: &'a [T], mask: Option<&[T]>, out: &'a mut [T]) -> &'a [T] {
    match mask {
        Some(m) => {
            for ((o, a), b) in out.iter_mut().zip(h).zip(m) {
                *o = *a * *b;
            }
            out
        }
        None => h,
    }
}

/// The mask's slice in `T`, if there is one.
fn mask_of<'a, T: Real>(mask: Option<(&'a CpuStorage, &Layout)>, len: usize) -> candle_core::Result<Option<&'a [T]>> {
    let Some((s, l)) = mask else { return Ok(None) };
    let m = contiguous(T::cpu_storage_as_slice(s)?, l, "recurrence mask")?;
    if m.len() != len {
        candle_core::bail!("recurrence: a mask of {} values for {len} states", m.len());
    }
    Ok(Some(m))
}

/// The forward over the whole sequence.
struct Forward<'a> {
    op: &'a Recurrence,
    d: Dims,
    mask: Option<(&'a CpuStorage, &'a Layout)>,
}

impl<const N: usize> Kernel<N> for Forward<'_> {
    /// The output, and the states and kept values for the backward (a `Vec<T>`).
    type Out = (CpuStorage, Box<dyn Any + Send>);
    const DTYPES: Dtypes = Dtypes::Floats;

    fn name(&self) -> &str {
        "recurrence"
    }

    fn run<T: Real>(&self, v: [&[T]; N]) -> candle_core::Result<Self::Out> {
        self.sequence(v[0], v[1], v.get(2).copied())
    }

    fn run_f32(&self, v: [&[f32]; N]) -> candle_core::Result<Self::Out> {
        forward32(self, v[0], v[1], v.get(2).copied())
    }
}

avx2! {
    /// [`Forward::sequence`] in f32, its cells' loops vectorised (`avx2!`: the same bits).
    fn forward32(k: &Forward<'_>, gi: &[f32], w: &[f32], bias: Option<&[f32]>) -> candle_core::Result<(CpuStorage, Box<dyn Any + Send>)> {
        k.sequence(gi, w, bias)
    }
}

impl Forward<'_> {
    /// The forward of the input gates `gi` through the weights `w` and the bias.
    #[inline(always)]
    fn sequence<T: Real>(&self, gi: &[T], w: &[T], bias: Option<&[T]>) -> candle_core::Result<(CpuStorage, Box<dyn Any + Send>)> {
        let (Dims { b, s, h }, cell) = (self.d, self.op.cell);
        let (gh, kh) = (cell.gates() * h, cell.kept() * h);
        let mask = mask_of::<T>(self.mask, b * h)?;
        // Every value is written below before it is read, so a spare's old values do not matter.
        let mut kept = spare::take::<T>(s * b * (h + kh));
        let (states, keeps) = kept.split_at_mut(s * b * h);
        let (mut rec, mut hm, zeros) = (vec![T::zero(); b * gh], vec![T::zero(); b * h], vec![T::zero(); b * h]);
        let mut wide = is_half::<T>().then(|| Wide::new(w, bias, (b, h, gh)));
        for t in 0..s {
            let (done, now) = states.split_at_mut(t * b * h);
            let prev = t.checked_sub(1).map(|p| &done[p * b * h..]);
            // A gated cell multiplies its zero first state too (a weight's inf makes NaN, as in PyTorch).
            let fed = match (prev, bias) {
                (Some(p), _) => Some(masked(p, mask, &mut hm)),
                (None, Some(_)) => Some(&zeros[..]),
                (None, None) => None,
            };
            match (fed, &mut wide) {
                (Some(fed), Some(wide)) => wide.gates(fed, b, &mut rec)?,
                (Some(fed), None) => {
                    product((b, gh, h), (fed, h, 1), (w, gh, 1), &mut rec)?;
                    if let Some(bias) = bias {
                        for row in rec.chunks_exact_mut(gh) {
                            for (r, c) in row.iter_mut().zip(bias) {
                                *r += *c;
                            }
                        }
                    }
                }
                (None, _) => {}
            }
            let (kdone, know) = keeps.split_at_mut(t * b * kh);
            for r in 0..b {
                let step = Step {
                    x: &gi[(r * s + t) * gh..][..gh],
                    r: (t > 0 || bias.is_some()).then(|| &rec[r * gh..][..gh]),
                    prev: prev.map(|p| &p[r * h..][..h]),
                    before: t.checked_sub(1).map(|p| &kdone[(p * b + r) * kh..][..kh]),
                };
                step.forward(cell, &mut now[r * h..][..h], &mut know[r * kh..][..kh]);
            }
        }
        let out = if self.op.sequences {
            // Batch-major, every value copied into uninitialised memory.
            let mut out = Vec::with_capacity(b * s * h);
            let dst = &mut out.spare_capacity_mut()[..b * s * h];
            for (t, step) in states.chunks_exact(b * h).enumerate() {
                for (r, row) in step.chunks_exact(h).enumerate() {
                    dst[(r * s + t) * h..][..h].iter_mut().zip(row).for_each(|(o, v)| {
                        o.write(*v);
                    });
                }
            }
            // SAFETY: the capacity is b·s·H, and the s steps' b rows of H values were copied in.
            unsafe { out.set_len(b * s * h) };
            out
        } else {
            states[(s - 1) * b * h..].to_vec()
        };
        Ok((T::to_cpu_storage_owned(out), Box::new(kept)))
    }
}

/// The backward through time, from the output's gradient, the kept values and the weights.
struct Backward<'a> {
    op: &'a Recurrence,
    d: Dims,
    mask: Option<(&'a CpuStorage, &'a Layout)>,
    /// The forward's states and kept values, a `Vec<T>`.
    kept: &'a (dyn Any + Send),
}

impl Kernel<2> for Backward<'_> {
    /// The gradients of the input gates, the recurrent weights and (gated cells) the bias.
    type Out = (Tensor, Tensor, Option<Tensor>);
    const DTYPES: Dtypes = Dtypes::Floats;

    fn name(&self) -> &str {
        "recurrence backward"
    }

    fn run<T: Real>(&self, [grad, w]: [&[T]; 2]) -> candle_core::Result<Self::Out> {
        self.through_time(grad, w)
    }

    fn run_f32(&self, [grad, w]: [&[f32]; 2]) -> candle_core::Result<Self::Out> {
        backward32(self, grad, w)
    }
}

avx2! {
    /// [`Backward::through_time`] in f32, its cells' loops vectorised (`avx2!`: the same bits).
    fn backward32(k: &Backward<'_>, grad: &[f32], w: &[f32]) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
        k.through_time(grad, w)
    }
}

impl Backward<'_> {
    /// The backward from the output's gradient `grad` and the weights `w`.
    #[inline(always)]
    fn through_time<T: Real>(&self, grad: &[T], w: &[T]) -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
        let Some(kept) = self.kept.downcast_ref::<Vec<T>>() else { candle_core::bail!("recurrence backward: the forward ran in another dtype") };
        let (Dims { b, s, h }, cell, sequences, biased) = (self.d, self.op.cell, self.op.sequences, self.op.biased);
        let (gh, kh) = (cell.gates() * h, cell.kept() * h);
        let mask = mask_of::<T>(self.mask, b * h)?;
        if kept.len() != s * b * (h + kh) || w.len() != h * gh || grad.len() != if sequences { b * s * h } else { b * h } {
            candle_core::bail!("recurrence backward: sizes do not match the forward's");
        }
        let (states, keeps) = kept.split_at(s * b * h);
        // The input gates' gradient, `(batch, seq, G·H)`, written a row's step at a time from `dx`
        // into uninitialised memory (zeroing it first was a megabyte's pass for nothing).
        let (mut dgi, mut dx) = (Vec::with_capacity(b * s * gh), vec![T::zero(); gh]);
        let dgi_out = &mut dgi.spare_capacity_mut()[..b * s * gh];
        // A half type's weights' and bias's gradients, added a step at a time.
        let (mut dw, mut db) = if is_half::<T>() { (vec![T::zero(); h * gh], vec![T::zero(); gh]) } else { (Vec::new(), Vec::new()) };
        // Every step's recurrent gates' gradient `dr`, time-major `(seq, batch, G·H)`: in f32 and
        // f64 the weights' and the bias's gradients are one product and one column sum over all of
        // them at the end; a half type's are made and added a step at a time, as PyTorch's loop does.
        // Every value is written below before it is read, so a spare's old values do not matter.
        let mut drs = spare::take::<T>(s * b * gh);
        let (mut carry, mut next_carry) = (vec![T::zero(); b * h], vec![T::zero(); b * h]);
        let (mut rec, mut hm, zeros) = (vec![T::zero(); b * h], vec![T::zero(); b * h], vec![T::zero(); b * h]);
        // `Wᵀ` `(G·H, H)` row-major, once: read through a strided view, gemm packed (transposed) all
        // of `W` again at every step, some 40% of a language model's step (perf, AVX-512). The
        // same bits where gemm's general kernels run, which sum over the gates in order whatever
        // the layout (packing only moves values).
        let wt = (!is_half::<T>() && super::linear::general_kernels(b, gh, h)).then(|| transposed(w, h, gh));
        let mut wide = is_half::<T>().then(|| Wide::new(w, None, (b, h, gh)));
        for t in (0..s).rev() {
            let last = t + 1 == s;
            let prev = t.checked_sub(1).map(|p| &states[p * b * h..][..b * h]);
            let dr = &mut drs[t * b * gh..][..b * gh];
            for r in 0..b {
                let out = match (sequences, last) {
                    (true, _) => Some(&grad[(r * s + t) * h..][..h]),
                    (false, true) => Some(&grad[r * h..][..h]),
                    (false, false) => None,
                };
                let back = Back {
                    out,
                    carry: &carry[r * h..][..h],
                    rec: &rec[r * h..][..h],
                    h: &states[(t * b + r) * h..][..h],
                    prev: prev.map(|p| &p[r * h..][..h]),
                    keep: &keeps[(t * b + r) * kh..][..kh],
                    before: t.checked_sub(1).map(|p| &keeps[(p * b + r) * kh..][..kh]),
                    zeros: &zeros[..h],
                };
                back.backward(cell, &mut dx, &mut dr[r * gh..][..gh], &mut next_carry[r * h..][..h]);
                for (o, v) in dgi_out[(r * s + t) * gh..][..gh].iter_mut().zip(&dx) {
                    o.write(*v);
                }
            }
            std::mem::swap(&mut carry, &mut next_carry);
            if let Some(wide) = &mut wide {
                // A half type's weights' and bias's gradients, this step's added to the steps' after
                // it (a gated cell's first state is zeros, multiplied too).
                wide.load_dr(dr, b);
                if biased {
                    wide.bias_grad(b, &mut db, last);
                }
                let fed = match prev {
                    Some(p) => masked(p, mask, &mut hm),
                    None if !biased => continue,
                    None => &zeros[..],
                };
                wide.weights_grad(fed, b, &mut dw, last)?;
            }
            if prev.is_none() {
                continue;
            }
            // The previous state's gradient `dr · Wᵀ`.
            match (&mut wide, &wt) {
                (Some(wide), _) => wide.state_grad(b, &mut rec)?,
                (None, Some(wt)) => product((b, h, gh), (dr, gh, 1), (wt, h, 1), &mut rec)?,
                (None, None) => product((b, h, gh), (dr, gh, 1), (w, 1, gh), &mut rec)?,
            }
            if let Some(m) = mask {
                rec.iter_mut().zip(m).for_each(|(g, m)| *g *= *m);
            }
        }
        if wide.is_none() {
            dw = weights_grad((b, s, h, gh), biased, states, mask, &drs)?;
            if biased {
                db = sums(&drs, gh);
            }
        }
        spare::give(drs);
        // SAFETY: the capacity is b·s·G·H, and every row's every step copied its G·H values in above.
        unsafe { dgi.set_len(b * s * gh) };
        let cpu = &Device::Cpu;
        let db = biased.then(|| Tensor::from_vec(db, gh, cpu)).transpose()?;
        Ok((Tensor::from_vec(dgi, (b, s, gh), cpu)?, Tensor::from_vec(dw, (h, gh), cpu)?, db))
    }
}

#[cfg(test)]
#[path = "recurrent_tests.rs"]
mod tests;
