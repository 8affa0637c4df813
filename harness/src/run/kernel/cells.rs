//! The arithmetic of the fused recurrent cells (`recurrent.rs` runs them over the
//! sequence): per step and row, the Elman RNN's, the LSTM's and the GRU's forward,
//! and their backward through time with PyTorch's formulas.
//!
//! Every value is computed with the operations, in the order, that the composed
//! path (`run::model::recurrent`, Candle's ops and their autograd) uses, so the
//! two give the same bits: `tanh` and `sigmoid` as `vmath`'s (`Real::tanh`,
//! `Real::sigmoid`, which the composed path calls too), tanh's gradient as `0 − g·(y² − 1)`, the sigmoid's as
//! `g·((1 − y)·y)`, relu's as PyTorch's `threshold_backward`, and a state's
//! gradient summed from its readers in the order Candle's backward visits them
//! (a GRU's: the next step's `h − n`, its recurrent product, then the output).
//!
//! In f16 and bf16 every value is PyTorch's instead (`aten/src/ATen/native/RNN.cpp`'s
//! CPU cells on half tensors, and their autograd): each op computed in f32 and rounded
//! once (the half types' own arithmetic), tanh's gradient `g·(1 − y²)` in f32 rounded once
//! and the sigmoid's `(g·(1 − y))·y` as PyTorch's CPU makes it (`tanh_backward`,
//! `sigmoid_backward`), a gradient
//! passed through an add as it is, and a GRU state's gradient summed in the order
//! autograd delivers it (the output, the next step's `h − n`, then its product).

use candle_core::DType;

use super::recurrent_gemm::is_half;
use super::Real;
use crate::scenario::RnnActivation;

/// The cell a fused recurrence computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cell {
    /// Elman: `h = tanh(xw_t + h W)`, its input holding both biases in f32 and f64; in the half
    /// types `b_hh` is added to the recurrent product, as PyTorch's `linear_hh`.
    Rnn,
    /// LSTM (`i, f, g, o`) with this activation.
    Lstm(RnnActivation),
    /// GRU (`r, z, n`) with this activation.
    Gru(RnnActivation),
}

impl Cell {
    /// Its gates per hidden unit.
    pub(crate) fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Lstm(_) => 4,
            Cell::Gru(_) => 3,
        }
    }

    /// The values per hidden unit a step keeps for the backward, besides its state: an
    /// LSTM's `i, f, g, o, c` and `act(c)`, a GRU's `r, z, n` and the recurrent candidate `(h W + b)ₙ`.
    pub(crate) fn kept(self) -> usize {
        match self {
            Cell::Rnn => 0,
            Cell::Lstm(_) => 6,
            Cell::Gru(_) => 4,
        }
    }
}

/// The candidate's activation.
#[inline(always)]
fn act<T: Real>(a: RnnActivation, x: T) -> T {
    match a {
        RnnActivation::Tanh => x.tanh(),
        RnnActivation::Relu if x < T::zero() => T::zero(),
        RnnActivation::Relu => x,
    }
}

/// The gradient through [`act`] from its output `y`: Candle's tanh backward, PyTorch's relu's.
#[inline(always)]
fn act_grad<T: Real>(a: RnnActivation, g: T, y: T) -> T {
    match a {
        RnnActivation::Tanh => tanh_grad(g, y),
        RnnActivation::Relu if y <= T::zero() => T::zero(),
        RnnActivation::Relu => g,
    }
}

/// `0 − g·(y² − 1)`, as Candle's tanh backward adds it to a zero gradient; in a half type
/// PyTorch's `tanh_backward`, `g·(1 − y²)` in f32 rounded once (f16 and bf16 alike, on 100 000
/// random pairs).
#[inline(always)]
fn tanh_grad<T: Real>(g: T, y: T) -> T {
    if is_half::<T>() {
        let (g, y) = (Real::to_f32(g), Real::to_f32(y));
        return T::from_f32(g * (1.0 - y * y));
    }
    T::zero() - g * (y * y - T::one())
}

/// `g·((1 − y)·y)`, candle-nn's sigmoid backward; in a half type PyTorch's CPU
/// `sigmoid_backward`, `(g·(1 − y))·y`: in bf16 computed in f32 and rounded once, in f16 each op
/// rounded to f16 (PyTorch 2.15 on 100 000 random pairs: each formula matches it in 0 values,
/// the other in some 31 000).
#[inline(always)]
fn sigmoid_grad<T: Real>(g: T, y: T) -> T {
    match T::DTYPE {
        DType::BF16 => {
            let (g, y) = (Real::to_f32(g), Real::to_f32(y));
            T::from_f32(g * (1.0 - y) * y)
        }
        DType::F16 => g * (T::one() - y) * y,
        _ => g * ((T::one() - y) * y),
    }
}

/// A gradient passed through an add, as the composed path's gradient arrives: +0 for −0 in
/// f32 and f64, where Candle's backward sums it with zeros (the gates' narrows pad each
/// chunk's gradient with zeros, a non-contiguous one is added to zeros: `vendor/README.md`);
/// PyTorch passes it on as it is.
#[inline(always)]
fn passed<T: Real>(g: T) -> T {
    if is_half::<T>() {
        g
    } else {
        T::zero() + g
    }
}

/// One step of one row: its input gates `x` (`G·H`), its recurrent gates `r` (`G·H`: `h W`
/// for the RNN in f32 and f64, `h W + b` for the gated cells and every half-type cell; `None`
/// at the f32/f64 RNN's first step), the previous
/// state `prev` (`H`) and kept values `before` (an LSTM's cell state at `4H..5H`); writes the
/// state `h` (`H`) and the kept values `keep`.
pub(crate) struct Step<'a, T> {
    pub(crate) x: &'a [T],
    pub(crate) r: Option<&'a [T]>,
    pub(crate) prev: Option<&'a [T]>,
    pub(crate) before: Option<&'a [T]>,
}

impl<T: Real> Step<'_, T> {
    /// `x + r` (`r` zero where there is none) of gates `from..to` into `out`.
    #[inline(always)]
    fn sum_into(&self, from: usize, out: &mut [T]) {
        let x = &self.x[from..][..out.len()];
        match self.r {
            Some(r) => {
                for ((o, a), b) in out.iter_mut().zip(x).zip(&r[from..]) {
                    *o = *a + *b;
                }
            }
            None => out.iter_mut().zip(x).for_each(|(o, a)| *o = *a + T::zero()),
        }
    }

    /// The forward of `cell` into `h` and `keep`: the pre-activations first, then each
    /// activation over a whole slice (vectorised in f32), then the state.
    #[inline(always)]
    pub(crate) fn forward(&self, cell: Cell, h: &mut [T], keep: &mut [T]) {
        let n = h.len();
        match cell {
            Cell::Rnn => {
                match self.r {
                    Some(_) => self.sum_into(0, h),
                    None => h.copy_from_slice(&self.x[..n]),
                }
                T::tanh_all(h);
            }
            Cell::Lstm(a) => {
                self.sum_into(0, &mut keep[..4 * n]);
                T::sigmoid_all(&mut keep[..2 * n]);
                act_all(a, &mut keep[2 * n..3 * n]);
                T::sigmoid_all(&mut keep[3 * n..4 * n]);
                let (gates, state) = keep.split_at_mut(4 * n);
                let (c, tc) = state.split_at_mut(n);
                // One loop per case of the previous cell state (zero at the first step), so each
                // vectorises.
                let (i, f, g) = (&gates[..n], &gates[n..2 * n], &gates[2 * n..3 * n]);
                match self.before.map(|b| &b[4 * n..5 * n]) {
                    Some(c0) => (0..n).for_each(|j| c[j] = f[j] * c0[j] + i[j] * g[j]),
                    None => (0..n).for_each(|j| c[j] = f[j] * T::zero() + i[j] * g[j]),
                }
                tc[..n].copy_from_slice(c);
                act_all(a, &mut tc[..n]);
                for j in 0..n {
                    h[j] = gates[3 * n + j] * tc[j];
                }
            }
            Cell::Gru(a) => {
                self.sum_into(0, &mut keep[..2 * n]);
                T::sigmoid_all(&mut keep[..2 * n]);
                let r = |k: usize| self.r.map_or(T::zero(), |r| r[k]);
                for j in 0..n {
                    let hn = r(2 * n + j);
                    keep[3 * n + j] = hn;
                    keep[2 * n + j] = self.x[2 * n + j] + keep[j] * hn;
                }
                act_all(a, &mut keep[2 * n..3 * n]);
                for j in 0..n {
                    let (z, nn) = (keep[n + j], keep[2 * n + j]);
                    let p = self.prev.map_or(T::zero(), |p| p[j]);
                    h[j] = nn + z * (p - nn);
                }
            }
        }
    }
}

/// [`act`] of every value of `v` in place.
#[inline(always)]
fn act_all<T: Real>(a: RnnActivation, v: &mut [T]) {
    match a {
        RnnActivation::Tanh => T::tanh_all(v),
        RnnActivation::Relu => v.iter_mut().for_each(|x| *x = act(a, *x)),
    }
}

/// One step of one row backward: the gradient arriving at its state from the output
/// (`out`), from the next step's `h − n` (a GRU's) or cell state (an LSTM's; `carry`) and
/// from the next step's recurrent product (`rec`), with the step's state `h`, previous state
/// `prev`, kept values `keep` and the previous step's (`before`).
pub(crate) struct Back<'a, T> {
    pub(crate) out: Option<&'a [T]>,
    pub(crate) carry: &'a [T],
    pub(crate) rec: &'a [T],
    pub(crate) h: &'a [T],
    pub(crate) prev: Option<&'a [T]>,
    pub(crate) keep: &'a [T],
    pub(crate) before: Option<&'a [T]>,
    /// `H` zeros, read where there is no `out` or previous cell state.
    pub(crate) zeros: &'a [T],
}

impl<T: Real> Back<'_, T> {
    /// The state's gradient: a GRU's from `h − n`, the product, then the output (Candle's
    /// backward visits the stacked output's `unsqueeze` after the next step's nodes); in the
    /// half types the output first, as PyTorch's autograd adds them.
    #[inline(always)]
    fn dh(&self, cell: Cell, j: usize) -> T {
        let out = self.out.map_or(T::zero(), |o| o[j]);
        match cell {
            Cell::Gru(_) if is_half::<T>() => match self.out {
                Some(o) => o[j] + self.carry[j] + self.rec[j],
                None => self.carry[j] + self.rec[j],
            },
            Cell::Gru(_) => T::zero() + self.carry[j] + self.rec[j] + out,
            Cell::Rnn | Cell::Lstm(_) => passed(out) + self.rec[j],
        }
    }

    /// Writes the input gates' gradient `dx` (`G·H`), the recurrent gates' `dr` (`G·H`) and
    /// the gradient `carry` passes to the previous step (`H`: an LSTM's cell state's, a GRU's
    /// through `h − n`).
    #[inline(always)]
    pub(crate) fn backward(&self, cell: Cell, dx: &mut [T], dr: &mut [T], carry: &mut [T]) {
        let n = self.h.len();
        match cell {
            Cell::Rnn => {
                for j in 0..n {
                    let g = tanh_grad(self.dh(cell, j), self.h[j]);
                    (dx[j], dr[j]) = (passed(g), g);
                }
            }
            Cell::Lstm(a) => match a {
                RnnActivation::Tanh => self.lstm_with(tanh_grad, [dx, dr, carry]),
                RnnActivation::Relu => self.lstm_with(|g, y| act_grad(RnnActivation::Relu, g, y), [dx, dr, carry]),
            },
            Cell::Gru(a) => {
                for j in 0..n {
                    let dh = self.dh(cell, j);
                    let k = |q: usize| self.keep[q * n + j];
                    let (r, z, nn, hn) = (k(0), k(1), k(2), k(3));
                    let p = self.prev.map_or(T::zero(), |p| p[j]);
                    let dhn = dh * z;
                    let dn = act_grad(a, passed(dh) - dhn, nn);
                    let (dr_, dz) = (sigmoid_grad(dn * hn, r), sigmoid_grad(dh * (p - nn), z));
                    (dx[j], dx[n + j], dx[2 * n + j]) = (passed(dr_), passed(dz), passed(dn));
                    (dr[j], dr[n + j], dr[2 * n + j]) = (dr_, dz, dn * r);
                    carry[j] = dhn;
                }
            }
        }
    }

    /// The LSTM's formulas over slices of its `n` units, `grad` the activation's gradient; the
    /// output's gradient and the previous cell state read as `zeros` where there are none (off
    /// the returned steps; at the first step), the same values as a constant zero. In blocks of
    /// [`LANES`] units, each read into arrays of its own, computed into others and copied out:
    /// written straight into the nine outputs, the loop was not vectorised (one unit at a time,
    /// 16% of a language model's step); the last `n % LANES` units one at a time.
    #[inline(always)]
    fn lstm_with(&self, grad: impl Fn(T, T) -> T + Copy, [dx, dr, carry]: [&mut [T]; 3]) {
        let n = self.h.len();
        let kp = self.keep;
        let out = self.out.map_or(&self.zeros[..n], |o| &o[..n]);
        let c0 = self.before.map_or(&self.zeros[..n], |b| &b[4 * n..5 * n]);
        let (i, f, g, o, tc) = (&kp[..n], &kp[n..2 * n], &kp[2 * n..3 * n], &kp[3 * n..4 * n], &kp[5 * n..6 * n]);
        let (rec, cin) = (&self.rec[..n], &self.carry[..n]);
        let ([dxi, dxf, dxg, dxo], [dri, drf, drg, dro], carry) = (quarters(dx, n), quarters(dr, n), &mut carry[..n]);
        let full = n - n % LANES;
        for j in (0..full).step_by(LANES) {
            let at = |s: &[T]| -> [T; LANES] {
                let mut a = [T::zero(); LANES];
                a.copy_from_slice(&s[j..][..LANES]);
                a
            };
            let (bi, bf, bg, bo, btc, brec, bcin, bout, bc0) = (at(i), at(f), at(g), at(o), at(tc), at(rec), at(cin), at(out), at(c0));
            let (mut vi, mut vf, mut vg, mut vo, mut vc) = ([T::zero(); LANES], [T::zero(); LANES], [T::zero(); LANES], [T::zero(); LANES], [T::zero(); LANES]);
            for k in 0..LANES {
                (vi[k], vf[k], vg[k], vo[k], vc[k]) = lstm_unit(grad, [bi[k], bf[k], bg[k], bo[k], btc[k], brec[k], bcin[k], bout[k], bc0[k]]);
            }
            for (d, v) in [(&mut dxi[j..][..LANES], &vi), (&mut dxf[j..][..LANES], &vf), (&mut dxg[j..][..LANES], &vg), (&mut dxo[j..][..LANES], &vo)] {
                d.iter_mut().zip(v).for_each(|(d, v)| *d = passed(*v));
            }
            for (d, v) in [(&mut dri[j..][..LANES], &vi), (&mut drf[j..][..LANES], &vf), (&mut drg[j..][..LANES], &vg), (&mut dro[j..][..LANES], &vo), (&mut carry[j..][..LANES], &vc)] {
                d.copy_from_slice(v);
            }
        }
        for j in full..n {
            let (vi, vf, vg, vo, vc) = lstm_unit(grad, [i[j], f[j], g[j], o[j], tc[j], rec[j], cin[j], out[j], c0[j]]);
            (dxi[j], dxf[j], dxg[j], dxo[j]) = (passed(vi), passed(vf), passed(vg), passed(vo));
            (dri[j], drf[j], drg[j], dro[j], carry[j]) = (vi, vf, vg, vo, vc);
        }
    }
}

/// One LSTM unit's backward from its `i, f, g, o`, `act(c)`, the gradients from the next step's
/// product and cell state, its output's gradient and the previous cell state: its four gates'
/// gradients and the previous cell state's.
#[inline(always)]
fn lstm_unit<T: Real>(grad: impl Fn(T, T) -> T, [i, f, g, o, tc, rec, cin, out, c0]: [T; 9]) -> (T, T, T, T, T) {
    let dh = passed(out) + rec;
    let dc = passed(grad(dh * o, tc)) + cin;
    (sigmoid_grad(dc * g, i), sigmoid_grad(dc * c0, f), grad(dc * i, g), sigmoid_grad(dh * tc, o), dc * f)
}

/// The units an LSTM's backward computes together (one AVX-512 register of f32).
const LANES: usize = 16;

/// The first four runs of `n` values of `v`, apart.
#[inline(always)]
fn quarters<T>(v: &mut [T], n: usize) -> [&mut [T]; 4] {
    let (a, rest) = v[..4 * n].split_at_mut(n);
    let (b, rest) = rest.split_at_mut(n);
    let (c, d) = rest.split_at_mut(n);
    [a, b, c, d]
}
