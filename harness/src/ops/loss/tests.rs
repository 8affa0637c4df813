//! The losses' values against hand computation and PyTorch 2.15, and their PyTorch expressions.

use candle_core::{Device, Tensor, Var};

use super::Loss;
use crate::ops::Op;
use crate::scenario::{LossKind, LossSpec, Reduction};

fn spec(kind: LossKind) -> LossSpec {
    LossSpec { kind, ..Default::default() }
}

fn t(v: &[f64]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap().reshape((v.len(), 1)).unwrap()
}

fn value(s: &LossSpec, p: &[f64], y: &[f64]) -> f64 {
    Loss(s.clone()).apply(&t(p), &t(y)).unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn seed_002_ex2_log_loss_is_nan() {
    // Seed 002 ex2: y_true [0,1,0,1], y_pred [0,1,0,0], np.sum(...) → nan (0·log 0).
    let s = LossSpec { reduction: Reduction::Sum, ..spec(LossKind::Bce) };
    assert!(value(&s, &[0.0, 1.0, 0.0, 0.0], &[0.0, 1.0, 0.0, 1.0]).is_nan());
    // The seed's fix, log(p + 1e-7): the one wrong row costs −log(1e-7) = 16.118..., the
    // others (1−y)·log(1 + 1e-7) ≈ −1e-7 each (hand computation).
    let fixed = LossSpec { epsilon: Some(1e-7), ..s };
    let v = value(&fixed, &[0.0, 1.0, 0.0, 0.0], &[0.0, 1.0, 0.0, 1.0]);
    assert!((v - (-(1e-7f64).ln() - 3.0 * (1.0f64 + 1e-7).ln())).abs() < 1e-9, "{v}");
}

#[test]
fn seed_003_ex3_ratio_loss_is_infinite() {
    // |0 − 0.1| / 0 = inf; the rest: 0.1/1 + 0.1/2 + 0.2/3 + 0.2/5.
    let s = LossSpec { reduction: Reduction::Sum, ..spec(LossKind::MeanAbsRatio) };
    let v = value(&s, &[1.1, 1.9, 3.2, 0.1, 4.8], &[1.0, 2.0, 3.0, 0.0, 5.0]);
    assert_eq!(v, f64::INFINITY);
}

#[test]
fn torch_bce_clamps_log_and_gradient() {
    // PyTorch: F.binary_cross_entropy(tensor([0.]), tensor([1.])) = 100; grad = (0−1)/1e-12 = −1e12.
    let p = Var::new(&[[0.0f64]], &Device::Cpu).unwrap();
    let l = Loss(spec(LossKind::BceTorch)).apply(p.as_tensor(), &Tensor::new(&[[1.0f64]], &Device::Cpu).unwrap()).unwrap();
    assert_eq!(l.to_scalar::<f64>().unwrap(), 100.0);
    let g = l.backward().unwrap();
    assert_eq!(g.get(p.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap(), vec![-1e12]);
}

#[test]
fn huber_matches_both_branches() {
    // delta 1: |0.5| → 0.5·0.25 = 0.125; |3| → 1·(3 − 0.5) = 2.5; mean 1.3125.
    let s = LossSpec { delta: Some(1.0), ..spec(LossKind::Huber) };
    assert_eq!(value(&s, &[0.5, 3.0], &[0.0, 0.0]), 1.3125);
}

#[test]
fn cross_entropy_stable_and_naive() {
    // Logits [0, 1000] with class 0: stable CE = 1000 (log-sum-exp), naive softmax underflows: inf.
    let p = Tensor::new(&[[0.0f32, 1000.0]], &Device::Cpu).unwrap();
    let y = Tensor::new(&[[1.0f32, 0.0]], &Device::Cpu).unwrap();
    let ce = Loss(spec(LossKind::CrossEntropy)).apply(&p, &y).unwrap().to_scalar::<f32>().unwrap();
    assert_eq!(ce, 1000.0);
    let naive = Loss(spec(LossKind::NaiveCrossEntropy)).apply(&p, &y).unwrap().to_scalar::<f32>().unwrap();
    assert!(!naive.is_finite());
}

#[test]
fn a_mean_loss_divides_by_the_count() {
    // PyTorch 2.15, f32: (p − y).abs().mean() of [5, 0, 0] is 1.6666666269302368 (a division);
    // Candle's mean_all multiplies by f32(1/3): 1.6666667461395264.
    let p = Tensor::new(&[[5.0f32], [0.0], [0.0]], &Device::Cpu).unwrap();
    let l = Loss(spec(LossKind::Mae)).apply(&p, &p.zeros_like().unwrap()).unwrap();
    assert_eq!(f64::from(l.to_scalar::<f32>().unwrap()), 1.6666666269302368);
}

#[test]
fn the_pytorch_expression_is_the_formula_with_the_specs_numbers() {
    let s = LossSpec { clamp: Some(1e-7), epsilon: Some(1e-8), reduction: Reduction::Sum, ..spec(LossKind::Bce) };
    // repro.py's BCE before the table: q = clamp(p); -(y*log(q + eps) + (1-y)*log(-q + (1 + eps))), summed.
    assert_eq!(Loss(s).torch_expr(), "(-(y * torch.log(torch.clamp(p, 1e-7, 0.9999999) + 1e-8) + (1.0 - y) * torch.log(-torch.clamp(p, 1e-7, 0.9999999) + 1.00000001))).sum()");
    let h = LossSpec { delta: Some(0.5), ..spec(LossKind::Huber) };
    assert_eq!(Loss(h).torch_expr(), "F.huber_loss(p, y, reduction='mean', delta=0.5)");
    assert!(Loss(spec(LossKind::CrossEntropy)).torch_expr().ends_with(" else F.cross_entropy(p.reshape(-1, p.shape[-1]), y.reshape(-1, p.shape[-1]), label_smoothing=0.0, reduction='mean'))"));
}

#[test]
fn the_checks_name_the_field_and_keep_validations_words() {
    let bad = LossSpec { clamp: Some(0.5), epsilon: Some(-1.0), delta: Some(1.0), ..spec(LossKind::Mse) };
    let keys: Vec<&str> = Loss(bad).check().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["delta", "clamp", "epsilon", "epsilon", "clamp"]);
    assert_eq!(Loss(LossSpec { delta: None, ..spec(LossKind::Huber) }).check(), vec![("delta", "huber needs `delta`".to_string())]);
    assert!(Loss(LossSpec { delta: Some(1.0), ..spec(LossKind::Huber) }).check().is_empty());
}
