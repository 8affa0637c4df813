//! The fused recurrence's f32 forward and backward, their cells' loops compiled for AVX-512, for
//! AVX2 or for neither (`avx2!`), give the same bits; the model's tests compare the op with the
//! composed path and PyTorch (`run::model::recurrent`).

use candle_core::{DType, Device, Tensor, Var};

use super::recurrence;
use crate::run::kernel::cells::Cell;
use crate::run::kernel::WIDEST;
use crate::scenario::RnnActivation;

/// A recurrence of `cell` at the tier `tier` over the inputs a `sin` makes (batch 3, 9 steps,
/// hidden 37: not a multiple of 8 or 16, so the loops' remainders run), large enough to saturate
/// gates, with a mask on the state fed back: the output and the gradients of the input gates,
/// the weights and the bias, as bits.
fn bits_at(tier: u8, cell: Cell, sequences: bool) -> Vec<Vec<u32>> {
    WIDEST.with(|w| w.set(tier));
    let dev = Device::Cpu;
    let (b, s, h) = (3, 9, 37);
    let gh = cell.gates() * h;
    let var =
        |n: usize, p: f32, scale: f32, shape: &[usize]| Var::from_tensor(&Tensor::from_vec((0..n).map(|i| scale * (p + 0.77 * i as f32).sin()).collect::<Vec<f32>>(), shape, &dev).unwrap()).unwrap();
    let (gi, w, bias) = (var(b * s * gh, 0.3, 3.0, &[b, s, gh]), var(h * gh, 1.1, 0.6, &[h, gh]), var(gh, 0.7, 0.2, &[gh]));
    let mask = Tensor::from_vec((0..b * h).map(|i| if i % 3 == 1 { 0.0f32 } else { 1.0 / 0.7 }).collect::<Vec<f32>>(), (b, h), &dev).unwrap();
    let biased = cell != Cell::Rnn;
    let out = recurrence(gi.as_tensor(), w.as_tensor(), biased.then_some(bias.as_tensor()), biased.then_some(&mask), cell, sequences).unwrap();
    let grads = (out.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap().backward().unwrap();
    WIDEST.with(|w| w.set(2));
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let mut all = vec![flat(&out), flat(grads.get(gi.as_tensor()).unwrap()), flat(grads.get(w.as_tensor()).unwrap())];
    if biased {
        all.push(flat(grads.get(bias.as_tensor()).unwrap()));
    }
    all
}

#[test]
fn every_tier_gives_the_same_bits() {
    let cells = [Cell::Rnn, Cell::Lstm(RnnActivation::Tanh), Cell::Lstm(RnnActivation::Relu), Cell::Gru(RnnActivation::Tanh), Cell::Gru(RnnActivation::Relu)];
    for cell in cells {
        for sequences in [false, true] {
            let widest = bits_at(2, cell, sequences);
            assert!(widest[2].iter().any(|v| f32::from_bits(*v) != 0.0), "{cell:?}: the weights' gradient is not all zeros");
            for tier in [0, 1] {
                assert_eq!(bits_at(tier, cell, sequences), widest, "{cell:?}, sequences {sequences}: tier {tier}");
            }
        }
    }
}
