//! A convolution's geometry and columns (`conv.rs`): im2col, one sample's inputs copied to the
//! rows of its kernel taps, and col2im, the columns' gradient added back into the input's.

use super::Real;

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
    pub(super) fn taps(&self) -> usize {
        self.x[1] * self.k[1] * self.k[2]
    }

    /// Output positions of one sample: `oh·ow`.
    pub(super) fn positions(&self) -> usize {
        self.o[0] * self.o[1]
    }

    /// Values of one sample's columns: a training forward keeps the batch's (this times the
    /// batch), which its backward overwrites with their gradient, one sample's at a time.
    pub(crate) fn column_values(&self) -> usize {
        self.taps() * self.positions()
    }

    /// The input position `o·s + t − p` along one dimension, if it is inside the input.
    pub(super) fn at(o: usize, t: usize, s: usize, p: usize, n: usize) -> Option<usize> {
        (o * s + t).checked_sub(p).filter(|i| *i < n)
    }
}

/// One sample's columns: row `(ci, i, j)` holds, for each output position, the input it reads
/// through tap `(i, j)` of channel `ci` (0 in the padding).
#[inline(always)]
pub(super) fn im2col<T: Real>(g: &Geom, x: &[T], cols: &mut [T]) {
    let ([_, c, h, w], [_, kh, kw], [sh, sw], [ph, pw], [oh, ow]) = (g.x, g.k, g.stride, g.pad, g.o);
    let n = oh * ow;
    if [sh, sw, ph, pw] == [1, 1, 0, 0] {
        // Every tap inside the image: output row `oy` of tap `(i, j)` reads input row `oy + i`
        // from `j` on (nested loops: a `flat_map` over the taps was a call per tap, perf).
        for (ci, plane) in x.chunks_exact(h * w).take(c).enumerate() {
            for i in 0..kh {
                for j in 0..kw {
                    let row = &mut cols[((ci * kh + i) * kw + j) * n..][..n];
                    for (oy, dst) in row.chunks_exact_mut(ow).enumerate() {
                        copy_short(dst, &plane[(oy + i) * w + j..][..ow]);
                    }
                }
            }
        }
        return;
    }
    for ci in 0..c {
        for i in 0..kh {
            for j in 0..kw {
                let row = &mut cols[((ci * kh + i) * kw + j) * n..][..n];
                // The outputs whose input `ox·sw + j − pw` is inside the row: `lo..hi`; the
                // rest read padding. (Divisions, out of the loop over the rows: a row may be
                // a dozen values.)
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
#[inline(always)]
pub(super) fn col2im<T: Real>(g: &Geom, cg: &[T], dx: &mut [T], band: &mut [T]) {
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
/// as vectors (loads from the columns' gradient, which nothing writes meanwhile); the others
/// one at a time over the taps inside the row, worked out before the loop (a check per tap
/// was a third of col2im on the small CNN's rows of 13, perf, issue 31).
#[inline(always)]
pub(super) fn band_into<T: Real>(taps: &[T], [n, ow, kw, pw]: [usize; 4], d: &mut [T]) {
    const B: usize = 8;
    let one = |x: usize, d: &mut T| {
        // Taps `j ≤ x + pw` (the output `x + pw − j` is not negative) and `j > x + pw − ow`.
        let (top, bottom) = ((x + pw).min(kw - 1), (x + pw + 1).saturating_sub(ow));
        let mut s = T::zero();
        let mut j = top + 1;
        while j > bottom {
            j -= 1;
            s += taps[j * n + x + pw - j];
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

#[cfg(test)]
pub(super) mod tests {
    use super::{band_into, copy_short};

    /// f32 values whose sums round: `sin(0.37·i + p)·3` (the convolution's tests share them).
    pub(in crate::run::kernel) fn wavy(n: usize, p: f32) -> Vec<f32> {
        (0..n).map(|i| (0.37 * i as f32 + p).sin() * 3.0).collect()
    }

    /// Stride 1's band summed in registers gives the bits of the band built in memory (+0, each
    /// column tap's row added last tap first, then the band added into the row), for rows of
    /// 1 to 20 outputs (around the vectors of 8), kernels of 1 to 4 and paddings 0 to 2, with
    /// the columns ending right after the taps read and with +0, −0, NaN and ±inf among them.
    #[test]
    fn band_sums_in_registers_give_the_bits_of_the_band_in_memory() {
        for (ow, kw, pw) in (1..=20usize).flat_map(|ow| (1..=4usize).flat_map(move |kw| (0..=2usize).map(move |pw| (ow, kw, pw)))) {
            let Some(w) = (ow + kw - 1).checked_sub(2 * pw).filter(|w| *w > 0) else { continue };
            let n = ow + 3;
            for special in [None, Some(0.0f32), Some(-0.0), Some(f32::NAN), Some(f32::INFINITY), Some(f32::NEG_INFINITY)] {
                let mut taps = wavy((kw - 1) * n + ow, ow as f32 + kw as f32 * 0.1);
                if let Some(v) = special {
                    taps.iter_mut().step_by(3).for_each(|t| *t = v);
                }
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
                assert_eq!(got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), want, "ow {ow} kw {kw} pw {pw} {special:?}");
            }
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
