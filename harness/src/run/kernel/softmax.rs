//! Attention's masked softmax in one pass each way: scores at masked keys
//! (after the query with `causal`, past the row's length with padding) are
//! replaced by the fill, then softmax over each row, as `masked_fill` then
//! `torch.softmax` (or `torch._safe_softmax`, whose fully masked rows are 0):
//! each exponential times the reciprocal of the row's sum, as PyTorch's CPU
//! kernel over the last dimension computes it (`_vec_softmax_lastdim`:
//! `tmp_sum = 1 / tmp_sum`, then `x * tmp_sum`), not divided by the sum.
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

/// Values the row loops take at a time: the exponentials and products run over whole groups
/// (the keys from `limit` up to the next group's end are fill, all with one value), and the
/// groups past the last one the row's data reaches take that value computed once.
const GROUP: usize = 16;

/// Rows the forward takes at a time, each phase (the maxima, the exponentials, the sums, the
/// products) over all of them before the next: a row's max and sum are chains of dependent
/// operations (lane by lane, then folded), and the products wait on the sum, so one row
/// after another mostly waited; a block's chains are independent and overlap.
const BLOCK: usize = 8;

/// A row's place in a block: the keys it sees, its max, and whether it is a safe row of zeros.
#[derive(Clone, Copy)]
struct RowPlan<T> {
    limit: usize,
    max: T,
    zeros: bool,
}

/// Softmax of each row of `x` (rows of `seq` scores) under the mask.
#[inline(always)]
fn forward<T: Real>(x: &[T], seq: usize, m: &Mask) -> Vec<T> {
    let (fill, len) = (T::from_f64(m.fill), x.len());
    let x = &x[..len / seq * seq];
    // Each block's rows appended in one copy (not zeroed first), then computed in place.
    let mut out = Vec::with_capacity(x.len());
    for (blk, xs) in x.chunks(seq * BLOCK).enumerate() {
        let at = out.len();
        out.extend_from_slice(xs);
        let mut plan = [RowPlan { limit: 0, max: fill, zeros: false }; BLOCK];
        for (i, (row, p)) in xs.chunks_exact(seq).zip(plan.iter_mut()).enumerate() {
            let r = blk * BLOCK + i;
            let limit = m.limit(r / (m.heads * seq), seq, r % seq);
            // The largest of the keys and (where any is masked) the fill: the value the whole
            // row's max gives (the sign of a zero max may differ, which no `v − max` sees).
            let max = super::max(&row[..limit]);
            let max = if limit < seq && fill > max { fill } else { max };
            *p = RowPlan { limit, max, zeros: m.safe && max.to_f64() == f64::NEG_INFINITY };
        }
        let o = &mut out[at..];
        let mut masked = [None; BLOCK];
        for ((row, p), e) in o.chunks_exact_mut(seq).zip(&plan).zip(masked.iter_mut()) {
            if p.zeros {
                row.fill(T::zero());
            } else {
                *e = exponentials(row, p.limit, fill, p.max);
            }
        }
        let mut sums = [T::one(); BLOCK];
        for ((row, p), s) in o.chunks_exact(seq).zip(&plan).zip(sums.iter_mut()) {
            if !p.zeros {
                *s = super::sum(row);
            }
        }
        for (((row, p), e), &sum) in o.chunks_exact_mut(seq).zip(&plan).zip(masked).zip(&sums) {
            if !p.zeros {
                normalise(row, p.limit, e, sum);
            }
        }
    }
    out.resize(len, T::zero());
    out
}

/// The keys in place of a row whose keys from `limit` on are masked: `eᵛ⁻ᵐᵃˣ` as if every
/// masked key held `fill`, over the groups of [`GROUP`] the data reaches (the fill padding the
/// last); the keys past them share one exponential, computed once and returned (a plain row
/// of all -inf: -inf − (-inf) is NaN, as torch.softmax gives).
#[inline(always)]
fn exponentials<T: Real>(o: &mut [T], limit: usize, fill: T, max: T) -> Option<T> {
    let covered = covered(limit, o.len());
    let (head, tail) = o.split_at_mut(covered);
    head[limit..].fill(fill);
    in_groups(head, |v| *v = (*v - max).exp());
    let masked = (!tail.is_empty()).then(|| (fill - max).exp());
    if let Some(e) = masked {
        tail.fill(e);
    }
    masked
}

/// Multiplies a row of [`exponentials`] by the reciprocal of their sum (over the whole row, in
/// [`super::sum`]'s order), rounded once, as PyTorch does (one division a row, not one a value:
/// the divisions were a tenth of the tiny GPT's softmax, perf); the keys past the covered groups
/// by one product of their shared value.
#[inline(always)]
fn normalise<T: Real>(o: &mut [T], limit: usize, masked: Option<T>, sum: T) {
    let (head, tail) = o.split_at_mut(covered(limit, o.len()));
    let r = T::one() / sum;
    in_groups(head, |v| *v *= r);
    if let Some(e) = masked {
        tail.fill(e * r);
    }
}

/// The keys up to the end of the [`GROUP`] that key `limit − 1` is in (a row of `seq`).
#[inline(always)]
fn covered(limit: usize, seq: usize) -> usize {
    limit.div_ceil(GROUP).saturating_mul(GROUP).min(seq)
}

/// `f` on every value of `v`, [`GROUP`] at a time (so the loop vectorises whatever the length).
#[inline(always)]
fn in_groups<T: Real>(v: &mut [T], f: impl Fn(&mut T)) {
    let mut groups = v.chunks_exact_mut(GROUP);
    for g in groups.by_ref() {
        g.iter_mut().for_each(&f);
    }
    groups.into_remainder().iter_mut().for_each(f);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::kernel::WIDEST;

    /// The masked softmax written out value by value, as `masked_fill` then `torch.softmax`
    /// (or `torch._safe_softmax`) define it: each key masked by its own test (after the query,
    /// or at or past its example's length), every masked key holding the fill, then the max,
    /// `exp(v − max)` of every value, their sum (in the kernels' order, [`super::super::sum`]),
    /// and every value times the reciprocal of the sum.
    fn reference<T: Real>(x: &[T], seq: usize, m: &Mask) -> Vec<T> {
        let mut out = Vec::new();
        for (r, row) in x.chunks_exact(seq).enumerate() {
            let (b, i) = (r / (m.heads * seq), r % seq);
            let masked = |j: usize| (m.causal && j > i) || m.lengths.as_ref().is_some_and(|l| j >= l[b]);
            let mut o: Vec<T> = row.iter().enumerate().map(|(j, &v)| if masked(j) { T::from_f64(m.fill) } else { v }).collect();
            let max = super::super::max(&o);
            if m.safe && max.to_f64() == f64::NEG_INFINITY {
                out.extend(o.iter().map(|_| T::zero()));
                continue;
            }
            for v in &mut o {
                *v = (*v - max).exp();
            }
            let r = T::one() / super::super::sum(&o);
            out.extend(o.iter().map(|&v| v * r));
        }
        out
    }

    /// Scores for `batch` examples of `heads` rows of `seq`: mixed magnitudes, with a NaN, a
    /// +∞, a -∞ and a value large enough that `fill − max` overflows to -∞ for a finite fill,
    /// in rows where a causal mask shows them, a NaN the causal mask hides, and a row whose max
    /// is a zero of either sign by the order it is read in (row 8: its first 9 keys read as a
    /// whole row's 8 lanes give +0, as 8 lanes and a remainder -0).
    fn scores(batch: usize, heads: usize, seq: usize) -> Vec<f64> {
        let n = batch * heads * seq * seq;
        let mut v: Vec<f64> = (0..n).map(|i| (i as f64 * 0.731).sin() * (1.0 + (i % 7) as f64 * 4.0)).collect();
        let mut set = |row: usize, col: usize, x: f64| {
            if col < seq && row * seq + col < n {
                v[row * seq + col] = x;
            }
        };
        for (row, col, x) in [(4, 2, f64::NAN), (5, 0, f64::INFINITY), (6, 1, f64::NEG_INFINITY), (7, 3, 3e38), (1, seq - 1, f64::NAN)] {
            set(row, col, x);
        }
        if seq >= 9 {
            (0..seq).for_each(|c| set(8, c, -1.0 - c as f64));
            set(8, 1, -0.0);
            set(8, 8, 0.0);
        }
        v
    }

    /// Every mask the attention makes (causal or not, padding lengths of 0, part and all of the
    /// row, `-inf` or the dtype's lowest as the fill, plain or safe), on rows whose lengths leave
    /// every remainder of a group, in f64 and in f32 at every tier: the kernel's bits are the
    /// value-by-value definition's.
    #[test]
    fn the_forward_gives_the_bits_of_the_value_by_value_softmax() {
        let mut cases = 0;
        for seq in [1, 2, 5, 8, 9, 16, 17, 32, 37] {
            let (batch, heads) = (3, 2);
            let x64 = scores(batch, heads, seq);
            let x32: Vec<f32> = x64.iter().map(|&v| v as f32).collect();
            for causal in [false, true] {
                for lengths in [None, Some(vec![seq, seq / 2, 0])] {
                    for (fill64, fill32) in [(f64::NEG_INFINITY, f64::NEG_INFINITY), (f64::MIN, f64::from(f32::MIN))] {
                        for safe in [false, true] {
                            let m = Mask { heads, causal, lengths: lengths.clone(), fill: fill64, safe };
                            let bits64 = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
                            assert_eq!(bits64(forward(&x64, seq, &m)), bits64(reference(&x64, seq, &m)), "f64 {m:?} seq {seq}");
                            let m = Mask { fill: fill32, ..m };
                            let want: Vec<u32> = reference(&x32, seq, &m).into_iter().map(f32::to_bits).collect();
                            for tier in [0, 1, 2] {
                                WIDEST.with(|w| w.set(tier));
                                let got: Vec<u32> = forward32(&x32, seq, &m).into_iter().map(f32::to_bits).collect();
                                WIDEST.with(|w| w.set(2));
                                assert_eq!(got, want, "f32 tier {tier} {m:?} seq {seq}");
                            }
                            cases += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(cases, 9 * 16);
    }

    /// The backward's bits are `p·(g − Σ g·p)` value by value, 0 at every masked key (by its own
    /// test), over rows that fill blocks and leave a partial one, f64 and f32 at every tier.
    #[test]
    fn the_backward_gives_the_bits_of_the_value_by_value_gradient() {
        for seq in [1, 5, 9, 17, 32] {
            let (batch, heads) = (3, 2);
            let m = Mask { heads, causal: true, lengths: Some(vec![seq, seq / 2, 0]), fill: f64::NEG_INFINITY, safe: true };
            let p64: Vec<f64> = (0..batch * heads * seq * seq).map(|i| ((i as f64 * 0.37).sin() + 1.0) / seq as f64).collect();
            let g64: Vec<f64> = (0..p64.len()).map(|i| (i as f64 * 1.31).cos() * 3.0).collect();
            let want = |p: &[f64], g: &[f64]| -> Vec<f64> {
                let mut out = Vec::new();
                for (r, (pr, gr)) in p.chunks_exact(seq).zip(g.chunks_exact(seq)).enumerate() {
                    let (b, i) = (r / (heads * seq), r % seq);
                    let dot = super::super::dot(pr, gr);
                    out.extend((0..seq).map(|j| if j > i || j >= [seq, seq / 2, 0][b] { 0.0 } else { pr[j] * (gr[j] - dot) }));
                }
                out
            };
            let bits64 = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
            assert_eq!(bits64(backward(&p64, &g64, seq, &m)), bits64(want(&p64, &g64)), "f64 seq {seq}");
            let (p32, g32): (Vec<f32>, Vec<f32>) = (p64.iter().map(|&v| v as f32).collect(), g64.iter().map(|&v| v as f32).collect());
            let mut want32 = Vec::new();
            for (r, (pr, gr)) in p32.chunks_exact(seq).zip(g32.chunks_exact(seq)).enumerate() {
                let (b, i) = (r / (heads * seq), r % seq);
                let dot = super::super::dot(pr, gr);
                want32.extend((0..seq).map(|j| if j > i || j >= [seq, seq / 2, 0][b] { 0.0f32 } else { pr[j] * (gr[j] - dot) }).map(f32::to_bits));
            }
            for tier in [0, 1, 2] {
                WIDEST.with(|w| w.set(tier));
                let got: Vec<u32> = backward32(&p32, &g32, seq, &m).into_iter().map(f32::to_bits).collect();
                WIDEST.with(|w| w.set(2));
                assert_eq!(got, want32, "f32 tier {tier} seq {seq}");
            }
        }
    }

    /// The cases above reach what they are meant to: NaN rows (a NaN score is ignored by the max
    /// but spreads through the sum; a +∞ max makes ∞ − ∞), fully masked rows that are NaN plain
    /// and 0 safe, and masked keys that are exactly 0 beside a finite fill's.
    #[test]
    fn the_cases_reach_nan_rows_empty_rows_and_zero_masked_keys() {
        let (seq, heads) = (17, 2);
        let x: Vec<f32> = scores(3, heads, seq).iter().map(|&v| v as f32).collect();
        let m = Mask { heads, causal: true, lengths: Some(vec![seq, seq / 2, 0]), fill: f64::NEG_INFINITY, safe: false };
        let p = forward32(&x, seq, &m);
        let rows: Vec<&[f32]> = p.chunks_exact(seq).collect();
        assert!(rows.iter().any(|r| r.iter().all(|v| v.is_nan())), "a NaN row");
        // The third example's length is 0: every one of its rows is -inf, NaN plain and 0 safe.
        assert!(rows[2 * heads * seq..].iter().all(|r| r.iter().all(|v| v.is_nan())));
        let safe = forward32(&x, seq, &Mask { safe: true, ..m.clone() });
        assert!(safe[2 * heads * seq * seq..].iter().all(|&v| v == 0.0));
        // Row 3 of the first example: 4 keys, then 13 masked keys at exactly 0, the row summing to 1.
        let r = rows[3];
        // Row 8: its max is a zero, so its unmasked largest key (0 or -0) has probability e⁰/Σ.
        assert_eq!(rows[8][1], rows[8][8]);
        assert!(rows[8][1] > rows[8][0] && rows[8][9..].iter().all(|&v| v == 0.0), "{:?}", rows[8]);
        assert!(r[4..].iter().all(|&v| v.to_bits() == 0) && (r.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{r:?}");
        let finite = forward32(&x, seq, &Mask { fill: f64::from(f32::MIN), ..m });
        assert_eq!(finite.chunks_exact(seq).nth(3).map(|r| r.to_vec()), Some(r.to_vec()), "the finite fill's row 3");
    }

    /// PyTorch 2.15 (CPU, one thread): `torch.softmax(torch.tensor([[0, a]]), -1)`, bit for bit,
    /// for rows where the exponential times the reciprocal of the sum and the exponential divided
    /// by the sum round apart (with torch's own `exp(a)`; e.g. at a = -2.6978672 dividing gives
    /// 0.063099325, PyTorch 0.06309933). Over 200 000 such rows PyTorch's values were the
    /// product's in 91% and the quotient's in 4% (the rest: its softmax's exp and `torch.exp`
    /// differ), so these are rows where the formula, not the exponential, decides.
    #[test]
    fn rows_where_dividing_rounds_differently_match_pytorch() {
        let rows: [(f32, [f32; 2]); 8] = [
            (-2.6978672, [0.93690073, 0.06309933]),
            (-0.027385002, [0.50684583, 0.4931542]),
            (-0.33585575, [0.58318347, 0.4168165]),
            (-0.28319672, [0.5703298, 0.42967027]),
            (-6.504593, [0.9985057, 0.0014943137]),
            (-5.2535434, [0.9947982, 0.005201757]),
            (-3.1024187, [0.95699245, 0.0430076]),
            (-1.1493263, [0.75938785, 0.24061216]),
        ];
        let x: Vec<f32> = rows.iter().flat_map(|&(a, _)| [0.0, a]).collect();
        let m = Mask { heads: 1, causal: false, lengths: None, fill: f64::NEG_INFINITY, safe: false };
        for tier in [2u8, 1, 0] {
            WIDEST.with(|w| w.set(tier));
            let got = forward32(&x, 2, &m);
            WIDEST.with(|w| w.set(2));
            for ((a, want), got) in rows.iter().zip(got.chunks_exact(2)) {
                assert_eq!([got[0].to_bits(), got[1].to_bits()], want.map(f32::to_bits), "a = {a}, tier {tier}: {got:?} vs PyTorch {want:?}");
            }
        }
    }
}
