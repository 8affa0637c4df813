//! The expression diagnosis (`diagnosis.rs`) against hand arithmetic.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};

use super::explain;
use crate::ops::Rule;
use crate::scenario::DTypeName;

fn t(rows: &[&[f32]]) -> Tensor {
    Tensor::new(rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>(), &Device::Cpu).unwrap()
}

/// The rule and reason for `text` over `x` (and `upstream` of ones in backward), in f32.
fn why(text: &str, x: &Tensor, backward: bool) -> (Rule, String) {
    let consts = BTreeMap::from([("eps".to_string(), 1e-3)]);
    let g = backward.then(|| Tensor::ones((), x.dtype(), &Device::Cpu).unwrap());
    let text = if backward { format!("sum({text})") } else { text.to_string() };
    explain(&text, &consts, &[("x", x)], g.as_ref(), DTypeName::F32).unwrap().expect("a rule explains it")
}

#[test]
fn forward_names_the_first_sub_expression_at_fault() {
    // log(0) = −∞ (hand arithmetic): the log at column 5, not the product that carries it.
    let (rule, r) = why("2 * log(x)", &t(&[&[1.0, 0.0]]), false);
    assert_eq!(rule, Rule::LogOfZero);
    assert!(r.contains("`log(x)` (column 5), element 1"), "{r}");
    // A one-pass variance that rounds negative: mean(x²) − mean(x)² = 0.25 − 1 = −0.75 here
    // (a stand-in), plus eps 1e-3 still below 0: sqrt of it is NaN.
    let (rule, r) = why("sqrt(mean(x**2, dim=1, keepdim=true) - 1 + eps)", &t(&[&[0.5]]), false);
    assert_eq!(rule, Rule::OutsideDomain);
    assert!(r.contains("column 1") && r.contains("-0.749"), "{r}");
    // 0/0: the sums of a row of zeros.
    let (rule, r) = why("x / sum(x, dim=1, keepdim=true)", &t(&[&[0.0, 0.0]]), false);
    assert_eq!(rule, Rule::DivisionByZero);
    assert!(r.contains("0 / 0 = NaN") && r.contains("column 1"), "{r}");
    // exp(100) > ln(f32 max) = 88.72: +∞.
    let (rule, r) = why("1 + exp(x)", &t(&[&[100.0]]), false);
    assert_eq!(rule, Rule::Overflow);
    assert!(r.contains("`exp(x)` (column 5)") && r.contains("88.7"), "{r}");
}

#[test]
fn backward_names_the_node_whose_derivative_is_infinite() {
    // rsqrt(0) = ∞, clamped to 10: clamp passes 0 back, rsqrt's derivative −1/(2·0·√0) is
    // infinite, 0 · ∞ = NaN (PyTorch 2.15 gives NaN for x.grad here too).
    let (rule, r) = why("clamp(rsqrt(x), max=10)", &t(&[&[0.0, 4.0]]), true);
    assert_eq!(rule, Rule::ZeroTimesInf);
    assert!(r.contains("`rsqrt(x)` (column 11)") && r.contains("element 0"), "{r}");
    // (x)**0.5 at 0 with 1 arriving: 0.5·0^−0.5 = +∞.
    let (rule, r) = why("x**0.5", &t(&[&[1.0, 0.0]]), true);
    assert_eq!(rule, Rule::DerivativeAtZero);
    assert!(r.contains("element 1"), "{r}");
    // where's unselected exp(100) = +∞ gets 0 back: 0 · ∞ = NaN (PyTorch 2.15: x.grad NaN).
    // The ∞ is exp's overflow of f32 (e¹⁰⁰ = 2.69e43 is finite in f64): an overflow.
    let (rule, r) = why("where(x <= 0, exp(x), 1 + x)", &t(&[&[100.0]]), true);
    assert_eq!(rule, Rule::Overflow);
    assert!(r.contains("`exp(x)` (column 19)") && r.contains("does not select") && r.contains("exp(100) overflowed f32 to +∞ (above ln(max) = 88.7)"), "{r}");
    // issue 28's audit: where(x > 100, exp(x*100), x) at x = 1.28 selects x, and exp(128) is
    // past ln(3.4028e38) = 88.72: the same overflow, named at `exp(x * 100)` (column 15).
    let (rule, r) = why("where(x > 100, exp(x*100), x)", &t(&[&[1.28]]), true);
    assert_eq!(rule, Rule::Overflow);
    assert!(r.contains("`exp(x * 100)` (column 20)") && r.contains("exp(128) overflowed f32"), "{r}");
    // x / (x − 1) at x = 1: the divisor is 0 in the derivative.
    let (rule, _) = why("x / (x - 1)", &t(&[&[1.0]]), true);
    assert_eq!(rule, Rule::DivisionByZero);
}

/// The rule and reason for `text` over the named `inputs` (and a gradient of 1 arriving at
/// `sum(text)` in backward), in f32.
fn why_named(text: &str, inputs: &[(&str, &Tensor)], backward: bool) -> (Rule, String) {
    let g = backward.then(|| Tensor::ones((), candle_core::DType::F32, &Device::Cpu).unwrap());
    let text = if backward { format!("sum({text})") } else { text.to_string() };
    explain(&text, &BTreeMap::new(), inputs, g.as_ref(), DTypeName::F32).unwrap().expect("a rule explains it")
}

#[test]
fn a_divisor_or_log_operand_from_a_named_output_is_named_with_its_value() {
    // 2 / 0 = +∞ (hand arithmetic): the divisor is the layer named `b`'s output.
    let (x, b) = (t(&[&[1.0, 2.0]]), t(&[&[4.0, 0.0]]));
    let (rule, r) = why_named("x / b", &[("x", &x), ("b", &b)], false);
    assert_eq!(rule, Rule::DivisionByZero);
    assert!(r.contains("element 1: x / 0 = ±∞: `b` is 0: the output of the layer named `b`"), "{r}");
    // A reduction of it: sum(b, dim=1) = 0 + 0 = 0 divides 3 + 1.
    let (rule, r) = why_named("x / sum(b, dim=1, keepdim=true)", &[("x", &t(&[&[3.0, 1.0]])), ("b", &t(&[&[0.0, 0.0]]))], false);
    assert_eq!(rule, Rule::DivisionByZero);
    assert!(r.contains("`sum(b, dim=1, keepdim=true)` is 0: it reads `b`, the output of the layer named `b`"), "{r}");
    // log(0) = −∞ of a named output.
    let h = t(&[&[0.5, 0.0]]);
    let (rule, r) = why_named("2 * log(h)", &[("x", &x), ("h", &h)], false);
    assert_eq!(rule, Rule::LogOfZero);
    assert!(r.contains("`log(h)` (column 5), element 1") && r.contains("`h` is 0: the output of the layer named `h`"), "{r}");
    // `x` itself is not a named output: no note.
    let (_, r) = why_named("log(x)", &[("x", &t(&[&[0.0]]))], false);
    assert!(!r.contains("layer named"), "{r}");
    // Backward: where(b == 0, 0, x / b) selects 0 at b = 0, and x / b's derivative 1/b times
    // the 0 arriving is 0 · ∞ = NaN (PyTorch's autograd does the same): the divisor is `b`.
    let (rule, r) = why_named("where(b == 0, 0, x / b)", &[("x", &x), ("b", &b)], true);
    assert_eq!(rule, Rule::DivisionByZero);
    assert!(r.contains("the derivative divides by the divisor, exactly 0: `b` is 0: the output of the layer named `b`"), "{r}");
}

#[test]
fn a_masked_mean_over_all_padding_names_the_mask() {
    // sum(p · mask) / sum(mask) with a mask of zeros: 0 / 0 = NaN (hand arithmetic).
    let (p, none) = (t(&[&[1.0, 2.0], &[3.0, 4.0]]), t(&[&[0.0, 0.0], &[0.0, 0.0]]));
    let (rule, r) = why_named("sum(p * mask) / sum(mask)", &[("p", &p), ("mask", &none)], false);
    assert_eq!(rule, Rule::DivisionByZero);
    assert!(r.contains("0 / 0 = NaN: `sum(mask)` is 0: every position of the batch is padding"), "{r}");
    // Per row: row 1 of [[1, 1], [0, 0]] is all padding, its sum 0 and its masked sum 3·0 + 4·0 = 0.
    let half = t(&[&[1.0, 1.0], &[0.0, 0.0]]);
    let (rule, r) = why_named("sum(p * mask, dim=1) / sum(mask, dim=1)", &[("p", &p), ("mask", &half)], false);
    assert_eq!(rule, Rule::DivisionByZero);
    assert!(r.contains("element 1: 0 / 0 = NaN: `sum(mask, dim=1)` is 0: row 1 of the batch is all padding (1 of 2 rows are)"), "{r}");
}

#[test]
fn a_named_loss_in_the_expression_explains_its_own_nan() {
    // cross_entropy(p, y) over two rows whose targets are both -100: the mean over no row is
    // 0 / 0 = NaN (PyTorch 2.15: nan), named at the call, column 1.
    let (p, y) = (t(&[&[1.0, 2.0, 0.5], &[0.3, -1.0, 2.0]]), t(&[&[-100.0], &[-100.0]]));
    let (rule, r) = why_named("cross_entropy(p, y, label_smoothing=0.1) + 0.01 * mean(p ** 2)", &[("p", &p), ("y", &y)], false);
    assert_eq!(rule, Rule::DivisionByZero);
    assert!(r.starts_with("`cross_entropy(p, y, label_smoothing=0.1)` (column 1): every target of the batch (2 of 2) is ignore_index -100") && r.contains("0 / 0 = NaN"), "{r}");
    // info_nce(p, y, temperature=0.01) in f16: 30 · 25 / 0.01 = 75000 > 65504 (PyTorch 2.15: nan).
    let h = |rows: &[&[f32]]| t(rows).to_dtype(candle_core::DType::F16).unwrap();
    let (z, k) = (h(&[&[30.0, 0.0], &[0.0, 1.0]]), h(&[&[25.0, 0.0], &[0.0, 1.0]]));
    let (rule, r) = explain("info_nce(p, y, temperature=0.01)", &BTreeMap::new(), &[("p", &z), ("y", &k)], None, DTypeName::F16).unwrap().expect("a rule explains it");
    assert_eq!(rule, Rule::Overflow);
    assert!(r.contains("(column 1): the logit of row 0 against row 0") && r.contains("75000 is past f16's largest value 65504"), "{r}");
}

#[test]
fn an_infinite_ctc_in_the_expression_names_the_row_that_cannot_align() {
    // log-probabilities of 2 rows, 3 steps, 3 classes; labels [1, 1] and [2]; row 0 padded to
    // 2 steps, where [1, 1] needs 3 (a blank between the repeats): no alignment, −log 0 = +∞
    // (PyTorch 2.15's F.ctc_loss(..., reduction='none') gives [inf, 1.5041]), the same why
    // as `[loss] kind = "ctc"`.
    let p = Tensor::full((1.0f32 / 3.0).ln(), (2, 3, 3), &Device::Cpu).unwrap();
    let y = t(&[&[1.0, 1.0, 0.0], &[2.0, 0.0, 0.0]]);
    let mask = t(&[&[1.0, 1.0, 0.0], &[1.0, 1.0, 1.0]]);
    for text in ["ctc(p, y)", "sum(ctc(p, y, reduction='none'))"] {
        let (rule, r) = why_named(text, &[("p", &p), ("y", &y), ("mask", &mask)], false);
        assert_eq!(rule, Rule::LogOfZero, "{text}");
        let at = if text.starts_with("sum") { "`ctc(p, y, reduction='none')` (column 5)" } else { "`ctc(p, y)` (column 1)" };
        assert!(r.starts_with(&format!("{at}: row 0 has 2 input step(s) and its 2 label(s) need 3")), "{r}");
    }
}
