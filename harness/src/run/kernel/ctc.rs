//! PyTorch's CPU CTC loss of one sequence (`aten/src/ATen/native/LossCTC.cpp`,
//! `ctc_loss_cpu_template` and `ctc_loss_backward_cpu_template`), in its order of operations
//! and in the dtype (f32 or f64: PyTorch's CPU kernel has no half types). The forward is the
//! log-space α recursion over the targets with blanks between and around them; the backward
//! the β recursion, `lcab = log Σ_{s: l'(s) = c} α_t(s) β_t(s)` per step and class, and
//! PyTorch's `exp(lp) − exp(lcab + nll − lp)` (the gradient with respect to the logits under a
//! log_softmax, which PyTorch writes as the log-probabilities' gradient). An alignment that
//! cannot exist (too few steps for the targets and their repeats) has `nll = ∞` and, without
//! `zero_infinity`, a NaN gradient everywhere (`exp(−∞ + ∞)`), as in PyTorch 2.15.

use std::ops::{Add, Neg, Sub};

/// The arithmetic the recursion needs, in the standard library's functions (C's `exp`, `log`).
pub(crate) trait Float: Copy + PartialOrd + Add<Output = Self> + Sub<Output = Self> + Neg<Output = Self> {
    /// −∞.
    const NEG_INF: Self;
    /// 0.
    const ZERO: Self;
    /// `eˣ`.
    fn exp(self) -> Self;
    /// The natural logarithm.
    fn ln(self) -> Self;
}

impl Float for f32 {
    const NEG_INF: Self = f32::NEG_INFINITY;
    const ZERO: Self = 0.0;
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn ln(self) -> Self {
        f32::ln(self)
    }
}

impl Float for f64 {
    const NEG_INF: Self = f64::NEG_INFINITY;
    const ZERO: Self = 0.0;
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
}

/// `log(exp(a − m) + exp(b − m) + exp(c − m)) + m` with `m` the largest (0 if all are −∞).
fn log_sum<T: Float>(a: T, b: T, c: T) -> T {
    let mut m = a;
    for v in [b, c] {
        if v > m {
            m = v;
        }
    }
    if m == T::NEG_INF {
        m = T::ZERO;
    }
    ((a - m).exp() + (b - m).exp() + (c - m).exp()).ln() + m
}

/// One sequence: `lp` its log-probabilities, `steps × classes` row-major (`steps ≥ 1`), and its
/// `targets` (none is `blank`).
pub(crate) struct Sequence<'a, T> {
    /// The log-probabilities.
    pub lp: &'a [T],
    /// Classes per step.
    pub classes: usize,
    /// The target labels.
    pub targets: &'a [usize],
    /// The blank's class.
    pub blank: usize,
}

impl<T: Float> Sequence<'_, T> {
    /// The label at position `s` of the extended target (blanks at the even positions).
    fn prime(&self, s: usize) -> usize {
        if s.is_multiple_of(2) {
            self.blank
        } else {
            self.targets[s / 2]
        }
    }

    fn at(&self, t: usize, c: usize) -> T {
        self.lp[t * self.classes + c]
    }

    /// The α table (`steps × (2L + 1)`) and the negative log-likelihood.
    pub(crate) fn forward(&self) -> (Vec<T>, T) {
        let (steps, width) = (self.lp.len() / self.classes, 2 * self.targets.len() + 1);
        let mut alpha = vec![T::NEG_INF; steps * width];
        alpha[0] = self.at(0, self.blank);
        if !self.targets.is_empty() {
            alpha[1] = self.at(0, self.prime(1));
        }
        for t in 1..steps {
            let prev = (t - 1) * width;
            for s in 0..width {
                let c = self.prime(s);
                let la1 = alpha[prev + s];
                let la2 = if s > 0 { alpha[prev + s - 1] } else { T::NEG_INF };
                let la3 = if s > 1 && self.prime(s - 2) != c { alpha[prev + s - 2] } else { T::NEG_INF };
                alpha[t * width + s] = log_sum(la1, la2, la3) + self.at(t, c);
            }
        }
        let last = &alpha[(steps - 1) * width..];
        let nll = match self.targets.len() {
            0 => -last[0],
            l => -log_sum(last[2 * l], last[2 * l - 1], T::NEG_INF),
        };
        (alpha, nll)
    }

    /// The gradient PyTorch's backward writes for an output gradient of 1, `steps × classes`.
    pub(crate) fn backward(&self, alpha: &[T], nll: T) -> Vec<T> {
        let (steps, width, l) = (self.lp.len() / self.classes, 2 * self.targets.len() + 1, self.targets.len());
        let mut beta = vec![T::NEG_INF; steps * width];
        let mut lcab = vec![T::NEG_INF; self.lp.len()];
        let end = steps - 1;
        beta[end * width + 2 * l] = self.at(end, self.blank);
        lcab[end * self.classes + self.blank] = alpha[end * width + 2 * l] + beta[end * width + 2 * l];
        if l > 0 {
            let c = self.prime(2 * l - 1);
            beta[end * width + 2 * l - 1] = self.at(end, c);
            lcab[end * self.classes + c] = alpha[end * width + 2 * l - 1] + beta[end * width + 2 * l - 1];
        }
        for t in (0..end).rev() {
            for s in (0..width).rev() {
                let c = self.prime(s);
                let next = (t + 1) * width;
                let lb1 = beta[next + s];
                let lb2 = if s < 2 * l { beta[next + s + 1] } else { T::NEG_INF };
                let lb3 = if s + 1 < 2 * l && self.prime(s + 2) != c { beta[next + s + 2] } else { T::NEG_INF };
                beta[t * width + s] = log_sum(lb1, lb2, lb3) + self.at(t, c);
                let ab = alpha[t * width + s] + beta[t * width + s];
                let acc = &mut lcab[t * self.classes + c];
                *acc = if *acc == T::NEG_INF {
                    ab
                } else {
                    let m = if *acc > ab { *acc } else { ab };
                    ((*acc - m).exp() + (ab - m).exp()).ln() + m
                };
            }
        }
        self.lp.iter().zip(&lcab).map(|(&lp, &r)| lp.exp() - (r + nll - lp).exp()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_one_label_by_hand() {
        // One step, classes {blank, a}, target [a]: the only path is `a`, nll = −log p(a).
        let lp = [0.25f64.ln(), 0.75f64.ln()];
        let seq = Sequence { lp: &lp, classes: 2, targets: &[1], blank: 0 };
        let (alpha, nll) = seq.forward();
        assert!((nll - -(0.75f64.ln())).abs() < 1e-15, "{nll}");
        // The logits' gradient under log_softmax: softmax − one_hot(a) = [0.25, −0.25].
        let g = seq.backward(&alpha, nll);
        assert!((g[0] - 0.25).abs() < 1e-15 && (g[1] + 0.25).abs() < 1e-15, "{g:?}");
        // Two repeated labels need a blank between them: three steps; in one step it is infeasible.
        let rep = Sequence { lp: &lp, classes: 2, targets: &[1, 1], blank: 0 };
        let (alpha, nll) = rep.forward();
        assert_eq!(nll, f64::INFINITY);
        assert!(rep.backward(&alpha, nll).iter().all(|v| v.is_nan()));
    }
}
