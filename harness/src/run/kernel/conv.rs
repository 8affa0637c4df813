//! Convolution as one op forward and one backward (`ops::conv`; a conv1d is a conv2d of
//! height 1), in f32 and f64 on the CPU: per sample, im2col into a column buffer of one
//! sample's `c·kh·kw × oh·ow` values (the batch is taken one sample at a time, so the buffer
//! is bounded by one sample's columns whatever the batch: [`Geom::column_values`]; kept from
//! step to step as a spare, `spare.rs`, every value written before it is read), then one
//! gemm. The backward makes the bias's sums, the weight's gradient `g colsᵀ` (per sample,
//! added sample by sample) and the input's, `Wᵀ g` scattered back (col2im); the input's is
//! skipped when nothing upstream needs it (the model's input).
//!
//! Composed in Candle (the path f16 and bf16 keep, `run::model::conv`), the columns of the
//! whole batch were built by an `index_select` per kernel tap and stacked, and the backward
//! scattered each tap's gradient with `index_add` into zeroed tensors: most of a small CNN's
//! step was page faults of those buffers and the adds (perf, issue 31). The arithmetic here is
//! the composed path's, in its order: the same per-sample gemm (`out × c·k² · c·k² × oh·ow`),
//! the bias added after it, the batch's weight gradients summed sample by sample, the bias's
//! sums in the flat order Candle's `sum` takes, and each input gradient summed over the row
//! taps of its bands, each band over its column taps. f32 products accumulate in f32, as
//! PyTorch's CPU convolution does.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::linear::{product_to, Mat};
use super::{dispatch, spare, Kernel, Real};
use crate::error::Result;

/// The sizes of one convolution: input `(b, c, h, w)`, kernel `(out, c, kh, kw)`, strides,
/// paddings and the output's `(oh, ow)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geom {
    /// Samples, input channels, height, width.
    pub(crate) x: [usize; 4],
    /// Output channels, kernel height and width.
    pub(crate) k: [usize; 3],
    /// Strides (rows, columns).
    pub(crate) stride: [usize; 2],
    /// Zeros added (top and bottom, left and right).
    pub(crate) pad: [usize; 2],
    /// Output height and width.
    pub(crate) o: [usize; 2],
}

impl Geom {
    /// The geometry of `x` `(b, c, h, w)` convolved by `k` `(out, c, kh, kw)`, or why it does not fit.
    pub(crate) fn new(x: [usize; 4], k: [usize; 4], stride: [usize; 2], pad: [usize; 2]) -> candle_core::Result<Self> {
        let side = |n: usize, kk: usize, s: usize, p: usize| (n + 2 * p).checked_sub(kk).filter(|_| s > 0).map(|r| r / s + 1);
        let (Some(oh), Some(ow)) = (side(x[2], k[2], stride[0], pad[0]), side(x[3], k[3], stride[1], pad[1])) else {
            candle_core::bail!("conv: a {}×{} kernel does not fit a {}×{} input padded by {pad:?}", k[2], k[3], x[2], x[3]);
        };
        if k[1] != x[1] {
            candle_core::bail!("conv: a kernel over {} channels for an input of {}", k[1], x[1]);
        }
        Ok(Self { x, k: [k[0], k[2], k[3]], stride, pad, o: [oh, ow] })
    }

    /// Rows of one sample's columns: `c·kh·kw`.
    fn taps(&self) -> usize {
        self.x[1] * self.k[1] * self.k[2]
    }

    /// Output positions of one sample: `oh·ow`.
    fn positions(&self) -> usize {
        self.o[0] * self.o[1]
    }

    /// Values of the column buffer (one sample's columns; the backward holds a second for their
    /// gradient): the bound on what the kernel allocates besides its inputs and outputs.
    pub(crate) fn column_values(&self) -> usize {
        self.taps() * self.positions()
    }

    /// The input position `o·s + t − p` along one dimension, if it is inside the input.
    fn at(o: usize, t: usize, s: usize, p: usize, n: usize) -> Option<usize> {
        (o * s + t).checked_sub(p).filter(|i| *i < n)
    }
}

/// `x` convolved by `k` plus `bias` for `x` `(b, c, h, w)`, `k` `(out, c, kh, kw)`: `(b, out, oh, ow)`.
pub(crate) fn conv(x: &Tensor, k: &Tensor, bias: &Tensor, stride: [usize; 2], pad: [usize; 2]) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op3(&k.contiguous()?, &bias.contiguous()?, Conv { stride, pad })?)
}

/// One sample's columns: row `(ci, i, j)` holds, for each output position, the input it reads
/// through tap `(i, j)` of channel `ci` (0 in the padding).
fn im2col<T: Real>(g: &Geom, x: &[T], cols: &mut [T]) {
    let ([_, c, h, w], [_, kh, kw], [sh, sw], [ph, pw], [oh, ow]) = (g.x, g.k, g.stride, g.pad, g.o);
    let n = oh * ow;
    for ((ci, i), j) in (0..c).flat_map(|ci| (0..kh).map(move |i| (ci, i))).flat_map(|p| (0..kw).map(move |j| (p, j))) {
        let row = &mut cols[((ci * kh + i) * kw + j) * n..][..n];
        // The outputs whose input `ox·sw + j − pw` is inside the row: `lo..hi`; the rest read
        // padding. (Divisions, out of the loop over the rows: a row may be a dozen values.)
        let hi = (w + pw).saturating_sub(j).div_ceil(sw).min(ow);
        let lo = pw.saturating_sub(j).div_ceil(sw).min(hi);
        for (oy, dst) in row.chunks_exact_mut(ow).enumerate() {
            let Some(iy) = Geom::at(oy, i, sh, ph, h) else {
                dst.fill(T::zero());
                continue;
            };
            let src = &x[(ci * h + iy) * w..][..w];
            dst[..lo].fill(T::zero());
            dst[hi..].fill(T::zero());
            if sw == 1 && lo < hi {
                copy_short(&mut dst[lo..hi], &src[lo + j - pw..hi + j - pw]);
            } else {
                for (ox, d) in dst.iter_mut().enumerate().take(hi).skip(lo) {
                    *d = src[ox * sw + j - pw];
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for the short runs of im2col (a row of a small image, 11 or 26
/// values in the small CNN), in blocks of 8 the compiler copies in registers, the last block
/// overlapping the one before: a call to `memcpy` for each run was a third of im2col (perf,
/// issue 31).
#[inline(always)]
fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    const B: usize = 8;
    let n = dst.len().min(src.len());
    if n < B {
        dst[..n].copy_from_slice(&src[..n]);
        return;
    }
    let block = |dst: &mut [T], src: &[T], at: usize| {
        let (d, s): (&mut [T; B], &[T; B]) = ((&mut dst[at..at + B]).try_into().expect("B values"), src[at..at + B].try_into().expect("B values"));
        *d = *s;
    };
    let mut at = 0;
    while at + B <= n {
        block(dst, src, at);
        at += B;
    }
    if at < n {
        block(dst, src, n - B);
    }
}

/// One sample's input gradient from its columns' gradient `cg`, added into `dx` (zeros): for each
/// row tap `i`, the band of padded rows it read gets its column taps' gradients, then the band
/// is added into the rows. Taps go last to first, the order in which Candle's backward visited
/// the composed path's `index_select`s (in reverse of their creation) and added their gradients.
///
/// With stride 1 each band value is summed in registers and added into its row at once
/// ([`band_into`]): a band held in memory and added into tap by tap, shifted by one value per
/// column tap, made each vector add wait on the stores before it.
fn col2im<T: Real>(g: &Geom, cg: &[T], dx: &mut [T], band: &mut [T]) {
    let ([_, c, h, w], [_, kh, kw], [sh, sw], [ph, pw], [oh, ow]) = (g.x, g.k, g.stride, g.pad, g.o);
    let n = oh * ow;
    for ci in 0..c {
        for i in (0..kh).rev() {
            for oy in 0..oh {
                let Some(iy) = Geom::at(oy, i, sh, ph, h) else { continue };
                let taps = &cg[(ci * kh + i) * kw * n + oy * ow..];
                let d = &mut dx[(ci * h + iy) * w..][..w];
                if sw == 1 {
                    band_into(taps, [n, ow, kw, pw], d);
                    continue;
                }
                band.fill(T::zero());
                for j in (0..kw).rev() {
                    for (ox, v) in taps[j * n..][..ow].iter().enumerate() {
                        band[ox * sw + j] += *v;
                    }
                }
                for (d, b) in d.iter_mut().zip(&band[pw..]) {
                    *d += *b;
                }
            }
        }
    }
}

/// Stride 1: `d[x] += Σ_j taps[j·n + x + pw − j]` over the column taps `j` last to first (those
/// inside the row of `ow` outputs), the sum from +0: the band's value, with the same adds in the
/// same order, then added into the row. Where every tap is inside the row, 8 values at a time
/// as vectors (loads from the columns' gradient, which nothing writes meanwhile).
#[inline(always)]
fn band_into<T: Real>(taps: &[T], [n, ow, kw, pw]: [usize; 4], d: &mut [T]) {
    const B: usize = 8;
    let one = |x: usize, d: &mut T| {
        let mut s = T::zero();
        for j in (0..kw).rev() {
            if let Some(o) = (x + pw).checked_sub(j).filter(|o| *o < ow) {
                s += taps[j * n + o];
            }
        }
        *d += s;
    };
    // Outputs `lo..hi` read every tap inside the row.
    let lo = kw.saturating_sub(1 + pw).min(d.len());
    let hi = ow.saturating_sub(pw).min(d.len()).max(lo);
    let mut x = 0;
    while x < lo {
        one(x, &mut d[x]);
        x += 1;
    }
    while x + B <= hi {
        let mut s = [T::zero(); B];
        for j in (0..kw).rev() {
            let r: &[T; B] = taps[j * n + x + pw - j..][..B].try_into().expect("B values");
            s = std::array::from_fn(|l| s[l] + r[l]);
        }
        let dd: &mut [T; B] = (&mut d[x..x + B]).try_into().expect("B values");
        let a = *dd;
        *dd = std::array::from_fn(|l| a[l] + s[l]);
        x += B;
    }
    while x < d.len() {
        one(x, &mut d[x]);
        x += 1;
    }
}

struct Conv {
    stride: [usize; 2],
    pad: [usize; 2],
}

impl Conv {
    fn geom(&self, xl: &Layout, kl: &Layout) -> candle_core::Result<Geom> {
        let (x, k) = (xl.shape().dims4()?, kl.shape().dims4()?);
        Geom::new([x.0, x.1, x.2, x.3], [k.0, k.1, k.2, k.3], self.stride, self.pad)
    }
}

/// The forward of [`Conv`] on one geometry.
struct Forward(Geom);

impl Kernel<3> for Forward {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "conv"
    }

    fn run<T: Real>(&self, [x, k, bias]: [&[T]; 3]) -> candle_core::Result<CpuStorage> {
        let g = &self.0;
        let ([b, c, h, w], out, n) = (g.x, g.k[0], g.positions());
        if bias.len() != out {
            candle_core::bail!("conv: a bias of {} for {out} channels", bias.len());
        }
        // The output is written once, never zeroed first: each sample's product goes to a spare
        // buffer and its rows are appended with the bias added (a zeroing pass over the output
        // was a twentieth of a small CNN's step, perf, issue 31).
        let mut y = Vec::with_capacity(b * out * n);
        let (mut cols, mut ys) = (spare::take::<T>(g.column_values()), spare::take::<T>(out * n));
        for s in 0..b {
            im2col(g, &x[s * c * h * w..][..c * h * w], &mut cols);
            product_to(Mat::new(k, out, g.taps()), Mat::new(&cols, g.taps(), n), &mut ys)?;
            for (row, bv) in ys.chunks_exact(n.max(1)).zip(bias) {
                y.extend(row.iter().map(|v| *v + *bv));
            }
        }
        spare::give(cols);
        spare::give(ys);
        Ok(T::to_cpu_storage_owned(y))
    }
}

impl CustomOp3 for Conv {
    fn name(&self) -> &'static str {
        "conv"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, k: &CpuStorage, kl: &Layout, b: &CpuStorage, bl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geom(xl, kl)?;
        let y = dispatch(&Forward(g), [(x, xl), (k, kl), (b, bl)])?;
        Ok((y, (g.x[0], g.k[0], g.o[0], g.o[1]).into()))
    }

    fn bwd(&self, x: &Tensor, k: &Tensor, _b: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.geom(x.layout(), k.layout())?;
        let input = x.track_op();
        let all = x.apply_op3_no_bwd(k, &grad.contiguous()?, &Backward { g, input })?;
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
}

impl Backward {
    /// The bias's gradient: each channel's sum over the batch and positions, in the flat order
    /// of `(b, out, positions)` (as Candle's `sum` adds).
    fn bias<T: Real>(&self, grad: &[T]) -> Vec<T> {
        let (out, n) = (self.g.k[0], self.g.positions());
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
}

impl Kernel<3> for Backward {
    type Out = (CpuStorage, Shape);

    fn name(&self) -> &str {
        "conv backward"
    }

    fn run<T: Real>(&self, [x, k, grad]: [&[T]; 3]) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.g;
        let ([b, c, h, w], out, n, taps) = (g.x, g.k[0], g.positions(), g.taps());
        let nx = if self.input { b * c * h * w } else { 0 };
        let mut all = vec![T::zero(); nx + out * taps];
        let (dx, dk) = all.split_at_mut(nx);
        let (mut cols, mut part) = (spare::take::<T>(g.column_values()), spare::take::<T>(out * taps));
        let mut band = vec![T::zero(); g.x[3] + 2 * g.pad[1]];
        for s in 0..b {
            let gs = Mat::new(&grad[s * out * n..][..out * n], out, n);
            im2col(g, &x[s * c * h * w..][..c * h * w], &mut cols);
            product_to(gs, Mat::new(&cols, taps, n).t(), &mut part)?;
            dk.iter_mut().zip(&part).for_each(|(d, p)| *d += *p);
            if self.input {
                product_to(Mat::new(k, out, taps).t(), Mat::new(&grad[s * out * n..][..out * n], out, n), &mut cols)?;
                col2im(g, &cols, &mut dx[s * c * h * w..][..c * h * w], &mut band);
            }
        }
        spare::give(cols);
        spare::give(part);
        all.extend(self.bias(grad));
        let len = all.len();
        Ok((T::to_cpu_storage_owned(all), len.into()))
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

    use super::{band_into, conv, copy_short};

    /// f32 values whose sums round: `sin(0.37·i + p)·3`.
    fn wavy(n: usize, p: f32) -> Vec<f32> {
        (0..n).map(|i| (0.37 * i as f32 + p).sin() * 3.0).collect()
    }

    /// The bias's gradient over 11 channels (a block of 8 and 3 more) and 20 positions (two
    /// transposed tiles of 8 and 4 more) is each channel's upstream gradient summed in f32 in
    /// the flat order (sample by sample, position by position), as a plain loop adds it.
    #[test]
    fn bias_gradient_is_the_flat_order_sum_of_each_channel() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::from_vec(wavy(3 * 2 * 5 * 6, 0.1), (3, 2, 5, 6), &dev).unwrap()).unwrap();
        let k = Var::from_tensor(&Tensor::from_vec(wavy(11 * 2 * 2 * 2, 1.3), (11, 2, 2, 2), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::from_vec(wavy(11, 2.2), 11, &dev).unwrap()).unwrap();
        let y = conv(x.as_tensor(), k.as_tensor(), b.as_tensor(), [1, 1], [0, 0]).unwrap();
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

    /// Stride 1's band summed in registers gives the bits of the band built in memory (+0, each
    /// column tap's row added last tap first, then the band added into the row), for rows of
    /// 1 to 20 outputs (around the vectors of 8), kernels of 1 to 4 and paddings 0 to 2.
    #[test]
    fn band_sums_in_registers_give_the_bits_of_the_band_in_memory() {
        for (ow, kw, pw) in (1..=20usize).flat_map(|ow| (1..=4usize).flat_map(move |kw| (0..=2usize).map(move |pw| (ow, kw, pw)))) {
            let Some(w) = (ow + kw - 1).checked_sub(2 * pw).filter(|w| *w > 0) else { continue };
            let n = ow + 3;
            let taps = wavy(kw * n, ow as f32 + kw as f32 * 0.1);
            let start = wavy(w, 0.7);
            let mut band = vec![0.0f32; w + 2 * pw];
            for j in (0..kw).rev() {
                for (ox, v) in taps[j * n..][..ow].iter().enumerate() {
                    band[ox + j] += *v;
                }
            }
            let want: Vec<u32> = start.iter().zip(&band[pw..]).map(|(d, b)| (*d + *b).to_bits()).collect();
            let mut got = start.clone();
            band_into(&taps, [n, ow, kw, pw], &mut got);
            assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "ow {ow} kw {kw} pw {pw}");
        }
    }

    #[test]
    fn short_copies_copy_every_value_of_every_length() {
        let src: Vec<u32> = (100..140).collect();
        for n in 0..=src.len() {
            let mut dst = vec![0u32; n + 3];
            copy_short(&mut dst[..n], &src[..n]);
            assert_eq!(&dst[..n], &src[..n], "length {n}");
            assert_eq!(&dst[n..], [0, 0, 0], "length {n}: nothing past the end");
        }
    }
}
