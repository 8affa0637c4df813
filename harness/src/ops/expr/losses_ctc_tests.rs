//! `ctc` inside an expression against PyTorch 2.15's `F.ctc_loss` (f64): logits
//! `0.1 (t + 1)(c − 1) + 0.2 b` of 2 sequences, 4 steps, 3 classes, through `log_softmax`; the
//! padding mask `[[1, 1, 1, 1], [1, 1, 1, 0]]` gives the input lengths 4 and 3 (PyTorch's
//! `input_lengths`), the labels before the blank the target lengths.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};

use super::super::check::Dim;
use super::super::{compile, eval};

/// `text` over `p` (the logits), `y` = `labels` and `mask` (or none): its value and the
/// gradient of its sum w.r.t. `p`.
fn run(text: &str, labels: [[f64; 3]; 2], masked: bool) -> (Vec<f64>, Vec<f64>) {
    let dev = Device::Cpu;
    let logits: Vec<f64> = (0..2).flat_map(|b| (0..4).flat_map(move |t| (0..3).map(move |c| 0.1 * (t + 1) as f64 * (c as f64 - 1.0) + 0.2 * b as f64))).collect();
    let var = Var::from_tensor(&Tensor::from_vec(logits, (2, 4, 3), &dev).unwrap()).unwrap();
    let p = var.as_tensor().clone();
    let y = Tensor::new(&labels, &dev).unwrap();
    let mask = Tensor::new(&[[1.0f64, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]], &dev).unwrap();
    let mut inputs = vec![("p".to_string(), vec![Dim::Batch, Dim::N(4), Dim::N(3)]), ("y".to_string(), vec![Dim::Batch, Dim::N(3)])];
    let mut values = vec![p.clone(), y];
    if masked {
        inputs.push(("mask".to_string(), vec![Dim::Batch, Dim::N(4)]));
        values.push(mask);
    }
    let c = compile(text, &inputs, &BTreeMap::new()).unwrap_or_else(|e| panic!("{text}: {e}"));
    let v = eval::eval(&c.ir, &values, DType::F64).unwrap();
    let g = v.sum_all().unwrap().backward().unwrap();
    (v.flatten_all().unwrap().to_vec1().unwrap(), g.get(&p).unwrap().flatten_all().unwrap().to_vec1().unwrap())
}

fn close(got: &[f64], want: &[f64]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(a, b)| (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-12 * b.abs().max(1.0))
}

const Y: [[f64; 3]; 2] = [[1.0, 2.0, 0.0], [1.0, 0.0, 0.0]];
/// PyTorch's gradient of the second sequence (the same in every case it is feasible, blank 0).
const SECOND: [f64; 12] = [
    -0.19602657177469282,
    -0.1711388293362325,
    0.3671654011109253,
    -0.019617035576725717,
    -0.38214254295662964,
    0.40175957853335537,
    -0.1929730090297884,
    -0.24377880788100245,
    0.43675181691079085,
    0.0,
    0.0,
    0.0,
];
const FIRST: [f64; 12] = [
    -0.018928709307257447,
    -0.348236691803668,
    0.3671654011109255,
    0.03868874284971464,
    -0.22179378292840626,
    0.1831050400786916,
    0.0501200597128445,
    0.11666456568159378,
    -0.16678462539443828,
    -0.006922551294155211,
    0.31624105822468146,
    -0.3093185069305262,
];

#[test]
fn ctc_in_an_expression_reads_its_lengths_from_the_mask() {
    let both: Vec<f64> = FIRST.iter().chain(&SECOND).copied().collect();
    // PyTorch 2.15: reduction='none' gives each sequence's NLL; 'sum' adds them (same gradient).
    let (v, g) = run("ctc(log_softmax(p, dim=-1), y, reduction='none')", Y, true);
    assert!(close(&v, &[1.5449938579372038, 1.802505830992013]) && close(&g, &both), "{v:?} {g:?}");
    let (v, g) = run("ctc(log_softmax(p, dim=-1), y, reduction='sum')", Y, true);
    assert!(close(&v, &[3.347499688929217]) && close(&g, &both), "{v:?} {g:?}");
    // 'mean' divides by the target lengths (2 and 1) and averages: (1.545/2 + 1.8025) / 2.
    let (v, g) = run("ctc(log_softmax(p, dim=-1), y)", Y, true);
    let half: Vec<f64> = FIRST.iter().map(|g| g / 4.0).chain(SECOND.iter().map(|g| g / 2.0)).collect();
    assert!(close(&v, &[1.2875013799803074]) && close(&g, &half), "{v:?} {g:?}");
    // Without padding every step counts: PyTorch 2.15 gives 1.711100709726536.
    assert!(close(&run("ctc(log_softmax(p, dim=-1), y)", Y, false).0, &[1.711100709726536]));
}

#[test]
fn ctc_in_an_expression_takes_blank_and_zero_infinity() {
    // PyTorch 2.15, blank=2: the rows [1, 0] and [1] (padded with 2).
    let (v, g) = run("ctc(log_softmax(p, dim=-1), y, blank=2, reduction='none')", [[1.0, 0.0, 2.0], [1.0, 2.0, 2.0]], true);
    assert!(close(&v, &[1.8823515866156881, 1.269636963585449]), "{v:?}");
    assert!(close(&g[..3], &[0.30060960535572745, -0.3434238391116944, 0.042814233755966984]) && g[21..] == [0.0; 3], "{g:?}");
    // [1, 1, 1] needs 5 steps (a blank between repeats) and has 4: ∞ with a NaN gradient, or 0
    // and a zero gradient under zero_infinity; the other sequence as before.
    let (v, g) = run("ctc(log_softmax(p, dim=-1), y, reduction='none')", [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], true);
    assert!(v[0] == f64::INFINITY && g[..12].iter().all(|g| g.is_nan()) && close(&g[12..], &SECOND), "{v:?} {g:?}");
    let (v, g) = run("ctc(log_softmax(p, dim=-1), y, reduction='none', zero_infinity=true)", [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], true);
    assert!(v[0] == 0.0 && g[..12] == [0.0; 12] && close(&g[12..], &SECOND), "{v:?} {g:?}");
}

#[test]
fn ctc_in_an_expression_checks_its_shapes_and_writes_pytorchs_call() {
    let inputs = [("p".to_string(), vec![Dim::Batch, Dim::N(4)]), ("y".to_string(), vec![Dim::Batch, Dim::N(3)])];
    let e = compile("ctc(p, y)", &inputs, &BTreeMap::new()).unwrap_err();
    assert!(e.contains("reads log-probabilities (batch, steps, classes) and label rows (batch, length)"), "{e}");
    let e = compile("ctc(p, y, blank=-1)", &inputs, &BTreeMap::new()).unwrap_err();
    assert!(e.contains("a class index ≥ 0 as its blank"), "{e}");
    let ast = super::super::parse::parse("ctc(p, y, blank=2, reduction='none')").unwrap();
    let py = super::super::torch::python(&ast, &BTreeMap::new(), "p");
    assert_eq!(
        py,
        "f32_loss(lambda p, y, mask: F.ctc_loss(p.transpose(0, 1), y.long(), torch.full((p.shape[0],), p.shape[1], dtype=torch.long) if mask is None else (mask != 0).sum(-1), (y != 2).sum(-1), blank=2, reduction='none', zero_infinity=False), p, y, mask)"
    );
    // The data's label sequences pad with the expression's blank.
    let spec = crate::scenario::LossSpec { kind: crate::scenario::LossKind::Expr, expr: Some("ctc(p, y, blank=b)".into()), consts: BTreeMap::from([("b".into(), 3.0)]), ..Default::default() };
    assert_eq!(super::blank(&spec), 3);
}
