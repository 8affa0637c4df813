//! The fused recurrence's recurrent weights' gradient, one product over every step, against
//! the exact sum of its terms (independent arithmetic in f64); the model's tests compare the
//! whole op with the composed path and PyTorch (`run::model::recurrent`).

use super::weights_grad;
use crate::run::kernel::cells::Cell;
use crate::run::kernel::Real;
use crate::scenario::RnnActivation;

/// Batch, steps and hidden size.
#[derive(Debug, Clone, Copy)]
struct Dims {
    b: usize,
    s: usize,
    h: usize,
}

/// [`weights_grad`] of `cell` (biased unless the RNN, as in f32 and f64).
fn grad<T: Real>(d: Dims, cell: Cell, states: &[T], mask: Option<&[T]>, drs: &[T]) -> Vec<T> {
    weights_grad((d.b, d.s, d.h, cell.gates() * d.h), cell != Cell::Rnn, states, mask, drs).unwrap()
}

/// Every state `(seq, batch, H)` and every step's recurrent gates' gradient `(seq, batch, G·H)`,
/// time-major, and a recurrent dropout mask `(batch, H)` (zero or `1/0.7`).
fn inputs(d: Dims, gh: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let states = (0..d.s * d.b * d.h).map(|k| (0.37 * k as f64 + 0.1).sin()).collect();
    let drs = (0..d.s * d.b * gh).map(|k| 0.5 * (0.91 * k as f64 + 0.3).sin()).collect();
    let mask = (0..d.b * d.h).map(|k| if k % 3 == 1 { 0.0 } else { 1.0 / 0.7 }).collect();
    (states, drs, mask)
}

/// `Σₜ fedₜᵀ · drₜ` summed in f64 term by term, and the sum of the terms' magnitudes, per
/// value: the state fed back to step `t` is step `t − 1`'s (masked), zeros at a gated cell's
/// first step, none at the RNN's.
fn exact(d: Dims, cell: Cell, (states, drs, mask): (&[f64], &[f64], Option<&[f64]>)) -> (Vec<f64>, Vec<f64>) {
    let gh = cell.gates() * d.h;
    let (mut sum, mut size) = (vec![0.0; d.h * gh], vec![0.0; d.h * gh]);
    let first = usize::from(cell == Cell::Rnn);
    for t in first..d.s {
        for r in 0..d.b {
            for i in 0..d.h {
                let fed = if t == 0 { 0.0 } else { states[((t - 1) * d.b + r) * d.h + i] * mask.map_or(1.0, |m| m[r * d.h + i]) };
                for j in 0..gh {
                    let term = fed * drs[(t * d.b + r) * gh + j];
                    sum[i * gh + j] += term;
                    size[i * gh + j] += term.abs();
                }
            }
        }
    }
    (sum, size)
}

/// [`weights_grad`] in `T` of [`inputs`] rounded to `T`, and the exact sum of its terms.
fn both<T: Real>(d: Dims, cell: Cell, masked: bool) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (states, drs, mask) = inputs(d, cell.gates() * d.h);
    let to = |v: &[f64]| v.iter().map(|x| T::from_f64(*x)).collect::<Vec<T>>();
    let back = |v: Vec<T>| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
    let (states, drs, mask) = (back(to(&states)), back(to(&drs)), back(to(&mask)));
    let mask = masked.then_some(mask.as_slice());
    let got = grad(d, cell, &to(&states), mask.map(to).as_deref(), &to(&drs));
    let (sum, size) = exact(d, cell, (&states, &drs, mask));
    (back(got), sum, size)
}

/// Each value is within `(depth + 1) · ε` of the sum of its terms' magnitudes from the exact
/// sum: any order of summing `depth` terms in `T` errs by at most `depth · ε/2` of it (products
/// rounded or fused), the f64 reference by as much in f64; a wrong term or step is far outside.
fn check<T: Real>(d: Dims, cell: Cell, masked: bool, eps: f64) {
    let (got, sum, size) = both::<T>(d, cell, masked);
    let depth = (d.s - usize::from(cell == Cell::Rnn)) * d.b;
    for (k, ((g, s), m)) in got.iter().zip(&sum).zip(&size).enumerate() {
        let bound = (depth + 1) as f64 * eps * m;
        assert!((g - s).abs() <= bound, "{cell:?}, mask {masked}, {d:?}: [{k}] {g} vs exact {s} (bound {bound:e})");
    }
    // Past a gated cell's zero first state, the terms are not all zeros.
    assert!(d.s == 1 || got.iter().any(|g| g.abs() > 1e-3), "{cell:?}, {d:?}: a gradient of zeros");
}

const CELLS: [Cell; 3] = [Cell::Rnn, Cell::Lstm(RnnActivation::Tanh), Cell::Gru(RnnActivation::Relu)];

#[test]
fn the_weights_gradient_is_the_sum_of_every_steps_product() {
    for cell in CELLS {
        for masked in [false, true] {
            check::<f32>(Dims { b: 3, s: 5, h: 4 }, cell, masked, f32::EPSILON as f64);
            check::<f64>(Dims { b: 3, s: 5, h: 4 }, cell, masked, f64::EPSILON);
        }
        // One row, one step, one unit: gemm's vector kernels and an empty RNN product.
        check::<f32>(Dims { b: 1, s: 1, h: 1 }, cell, false, f32::EPSILON as f64);
        check::<f32>(Dims { b: 1, s: 3, h: 1 }, cell, true, f32::EPSILON as f64);
    }
    // The language model's sizes: a product of depth 512 (gemm's blocked kernels).
    check::<f32>(Dims { b: 16, s: 32, h: 128 }, Cell::Lstm(RnnActivation::Tanh), false, f32::EPSILON as f64);
}

/// An inf in the first step's gradient makes NaN of a gated cell's weights' gradient, in its
/// column only (`0 · inf`: the zero first state is multiplied, as in PyTorch); the RNN's first
/// step has no recurrent product, so its gradient stays finite.
#[test]
fn a_gated_cells_first_step_multiplies_its_zero_state() {
    let d = Dims { b: 2, s: 3, h: 2 };
    for cell in CELLS {
        let gh = cell.gates() * d.h;
        let (states, mut drs, _) = inputs(d, gh);
        drs[gh + 1] = f64::INFINITY;
        let got = grad(d, cell, &states, None, &drs);
        for (k, g) in got.iter().enumerate() {
            let nan = cell != Cell::Rnn && k % gh == 1;
            assert_eq!(g.is_nan(), nan, "{cell:?}: [{k}] {g}");
            assert!(nan || g.is_finite(), "{cell:?}: [{k}] {g}");
        }
    }
}

/// The blocked transpose moves each value to its transposed place, sizes not a multiple of
/// its blocks included.
#[test]
fn the_transpose_moves_every_value() {
    for (rows, cols) in [(1, 1), (37, 21), (16, 32), (128, 512)] {
        let w: Vec<f32> = (0..rows * cols).map(|k| k as f32).collect();
        let t = super::transposed(&w, rows, cols);
        for i in 0..rows {
            for j in 0..cols {
                assert_eq!(t[j * rows + i], (i * cols + j) as f32, "{rows}×{cols}: [{i}][{j}]");
            }
        }
    }
}
