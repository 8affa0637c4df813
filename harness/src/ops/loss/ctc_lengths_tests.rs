//! `ctc` with per-row input lengths (the padding mask's row sums) against PyTorch 2.15's
//! `F.ctc_loss(lp.transpose(0, 1), y, input_lengths, target_lengths)` (values from
//! `/work/main/.venv-torch/bin/python`), on the log-probabilities and targets of `ctc_tests.rs`:
//! only a row's first `input_length` steps count, and its gradient is 0 beyond them.
#![allow(clippy::excessive_precision)]

use candle_core::{DType, Device, Tensor, Var};

use super::super::Loss;
use super::tests::{close, spec, LP, MEAN_GRAD, SUM_GRAD, Y};
use crate::scenario::Reduction;

/// The loss and its gradient wrt `LP` `(3, 5, 4)` in `dtype`, row `i` `lengths[i]` steps long.
fn run(s: &crate::scenario::LossSpec, lengths: [usize; 3], y: &[[f64; 3]; 3], dtype: DType) -> (f64, Vec<f64>) {
    let p = Var::from_tensor(&Tensor::from_vec(LP.to_vec(), (3, 5, 4), &Device::Cpu).unwrap().to_dtype(dtype).unwrap()).unwrap();
    let mask: Vec<f64> = lengths.iter().flat_map(|&l| (0..5).map(move |t| if t < l { 1.0 } else { 0.0 })).collect();
    let mask = Tensor::from_vec(mask, (3, 5), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
    let y = Tensor::new(y, &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
    let l = Loss(s.clone()).apply_masked(p.as_tensor(), &y, Some(&mask)).unwrap();
    let g = l.backward().unwrap().get(p.as_tensor()).unwrap().flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap();
    (l.to_dtype(DType::F64).unwrap().to_scalar().unwrap(), g)
}

#[test]
fn ctc_counts_only_each_rows_input_length_as_pytorch() {
    // input_lengths [5, 3, 4]: PyTorch 2.15 mean 1.7112481599609068, sum 11.340334787581961;
    // the gradient of row 1 past step 3 and of row 2 past step 4 is 0.
    let (l, g) = run(&spec(Reduction::Mean, false), [5, 3, 4], &Y, DType::F64);
    close(&[l], &[1.7112481599609068], 1e-12);
    close(&g, &shortened(&MEAN_GRAD, &SHORT_MEAN), 1e-10);
    let (l, g) = run(&spec(Reduction::Sum, false), [5, 3, 4], &Y, DType::F64);
    close(&[l], &[11.340334787581961], 1e-12);
    close(&g, &shortened(&SUM_GRAD, &SHORT_SUM), 1e-10);
    // f32: 1.7112482786178589.
    let (l, _) = run(&spec(Reduction::Mean, false), [5, 3, 4], &Y, DType::F32);
    close(&[l], &[1.7112482786178589], 1e-6);
}

#[test]
fn a_row_too_short_for_its_target_is_inf_as_pytorch() {
    // input_lengths [5, 2, 0]: `[3, 3]` needs 3 steps (a blank between the repeats) and has 2,
    // `[1, 2, 3]` has none. PyTorch 2.15: the mean is inf; row 1's gradient NaN over its 2 steps
    // and 0 beyond; row 2's (an empty input) 0 everywhere; row 0's that of the full-length batch.
    let (l, g) = run(&spec(Reduction::Mean, false), [5, 2, 0], &Y, DType::F64);
    assert_eq!(l, f64::INFINITY);
    close(&g[..20], &MEAN_GRAD[..20], 1e-10);
    assert!(g[20..28].iter().all(|v| v.is_nan()), "{g:?}");
    assert!(g[28..].iter().all(|v| *v == 0.0), "{g:?}");
    // zero_infinity: both impossible rows 0, the mean (row 0's loss / 2) / 3 = 0.6960440763235468.
    let (l, g) = run(&spec(Reduction::Mean, true), [5, 2, 0], &Y, DType::F64);
    close(&[l], &[0.6960440763235468], 1e-12);
    close(&g[..20], &MEAN_GRAD[..20], 1e-10);
    assert!(g[20..].iter().all(|v| *v == 0.0), "{g:?}");
    // An empty input with an empty target is 0 (PyTorch 2.15: sum 7.445465918217761, rows 0 and 2;
    // mean 1.0592886830209336, row 1 divided by its target length clamped to 1), its gradient 0.
    let y = [[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 3.0]];
    let (l, g) = run(&spec(Reduction::Sum, false), [5, 0, 5], &y, DType::F64);
    close(&[l], &[7.445465918217761], 1e-12);
    assert!(g[20..40].iter().all(|v| *v == 0.0), "{g:?}");
    let (l, _) = run(&spec(Reduction::Mean, false), [5, 0, 5], &y, DType::F64);
    close(&[l], &[1.0592886830209336], 1e-12);
}

#[test]
fn a_mask_of_another_length_than_the_prediction_is_an_error() {
    let p = Tensor::from_vec(LP.to_vec(), (3, 5, 4), &Device::Cpu).unwrap();
    let mask = Tensor::ones((3, 4), DType::F64, &Device::Cpu).unwrap();
    let e = Loss(spec(Reduction::Mean, false)).apply_masked(&p, &Tensor::new(&Y, &Device::Cpu).unwrap(), Some(&mask)).unwrap_err().to_string();
    assert!(e.contains("the model must keep the sequence's length"), "{e}");
}

/// PyTorch 2.15's gradient for input_lengths [5, 3, 4]: row 0's (every step) as without
/// lengths (`full`), then rows 1 and 2 over their first 3 and 4 steps (`rows`), 0 past them.
fn shortened(full: &[f64; 60], rows: &[f64; 28]) -> Vec<f64> {
    let mut g = full[..20].to_vec();
    g.extend_from_slice(&rows[..12]);
    g.extend([0.0; 8]);
    g.extend_from_slice(&rows[12..]);
    g.extend([0.0; 4]);
    g
}

/// PyTorch 2.15's gradient of rows 1 and 2 over their input steps, input_lengths [5, 3, 4], reduction='mean'.
const SHORT_MEAN: [f64; 28] = [
    0.03563970339433073,
    0.039387963720256276,
    0.043530432025845923,
    -0.11855809914043298,
    -0.1365571380206077,
    0.036775861335199056,
    0.04491813846852806,
    0.05486313821688061,
    0.025132268417701782,
    0.03392501387799896,
    0.045793978780355044,
    -0.1048512610760558,
    0.008888706897087798,
    -0.06998137326514084,
    0.02902028801723062,
    0.03207237835082248,
    0.006617095563216222,
    -0.006788956593877626,
    -0.03640356444725899,
    0.036575425477920406,
    0.005738067203321578,
    0.022616675918665976,
    -0.034306680889090314,
    0.005951937767102763,
    0.005662688311066372,
    0.020623161385428725,
    0.030766141498224337,
    -0.057051991194719334,
];

/// The same, reduction='sum'.
const SHORT_SUM: [f64; 28] = [
    0.2138382203659844,
    0.23632778232153767,
    0.26118259215507555,
    -0.7113485948425979,
    -0.8193428281236463,
    0.22065516801119434,
    0.2695088308111684,
    0.32917882930128367,
    0.1507936105062107,
    0.2035500832679938,
    0.27476387268213026,
    -0.6291075664563348,
    0.07999836207379019,
    -0.6298323593862676,
    0.2611825921550756,
    0.28865140515740234,
    0.059553860068946,
    -0.06110060934489864,
    -0.32763208002533095,
    0.32917882930128367,
    0.051642604829894204,
    0.2035500832679938,
    -0.30876012800181285,
    0.053567439903924874,
    0.05096419479959735,
    0.18560845246885854,
    0.27689527348401904,
    -0.513467920752474,
];

#[test]
fn a_row_with_fewer_input_steps_than_its_labels_need_is_named() {
    // Uniform log-probabilities over 3 classes, 3 steps; targets [1, 1] (3 steps: a blank
    // between the repeats) and [1, 2] (2 steps), the blank 0 padding (counting by hand).
    let p = Tensor::full((1.0f64 / 3.0).ln(), (2, 3, 3), &Device::Cpu).unwrap();
    let y = Tensor::new(&[[1.0f64, 1.0, 0.0], [1.0, 2.0, 0.0]], &Device::Cpu).unwrap();
    let s = spec(Reduction::Mean, false);
    // Every step an input: both fit.
    assert!(super::infeasible(&s, &p, &y, None).is_none());
    // Row 0 padded to 2 steps: [1, 1] needs 3.
    let mask = Tensor::new(&[[1.0f64, 1.0, 0.0], [1.0, 1.0, 0.0]], &Device::Cpu).unwrap();
    let (row, why) = super::infeasible(&s, &p, &y, Some(&mask)).expect("row 0");
    assert_eq!(row, 0);
    assert!(why.starts_with("row 0 has 2 input step(s) and its 2 label(s) need 3 (1 pair(s)"), "{why}");
    // The kind's explanation names the row, reduced to one number or not (`reduction='none'`).
    for scalar in [true, false] {
        let said = super::super::explain(&s, &p, &y, Some(&mask), crate::scenario::DTypeName::F64, scalar).unwrap().expect("explained");
        assert_eq!(said, (crate::ops::Rule::LogOfZero, why.clone(), Some(0)));
    }
    // zero_infinity makes such a row 0: not the cause.
    let zero = spec(Reduction::Mean, true);
    assert!(super::infeasible(&zero, &p, &y, Some(&mask)).is_none());
}
