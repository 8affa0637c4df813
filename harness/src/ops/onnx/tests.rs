//! Tests of the imported ONNX ops on values worked by hand (ONNX's operator documentation gives
//! the semantics; PyTorch 2.15 gives the same, as cited where it matters).

use candle_core::{Device, Tensor, Var};

use super::kind::{broadcast, reshaped};
use super::{CastTo, Kind};

fn t(v: &[f64], dims: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), dims, &Device::Cpu).unwrap()
}

fn eval(k: Kind, xs: &[Tensor]) -> Vec<f64> {
    k.eval(xs, &mut |_, _| Ok(None)).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()
}

#[test]
fn reshape_copies_zeros_infers_one_minus_one_and_broadcasting_is_numpys() {
    assert_eq!(reshaped(&[3, 5, 8], &[0, 5, 2, -1]).unwrap(), [3, 5, 2, 4]);
    assert_eq!(reshaped(&[3, 5, 8], &[-1, 8]).unwrap(), [15, 8]);
    assert!(reshaped(&[3, 5, 8], &[7, -1]).is_err(), "120 values do not split into rows of 7");
    assert_eq!(broadcast(&[2, 1, 4], &[3, 1]).unwrap(), [2, 3, 4]);
    assert!(broadcast(&[2, 3], &[4]).is_err());
}

#[test]
fn a_masked_softmax_fills_then_normalises_and_a_fully_masked_row_is_nan_as_in_pytorch() {
    // Row 0: mask [0, 1] fills the second score: softmax([1, -inf]) = [1, 0]. Row 1: both masked:
    // softmax([-inf, -inf]) is 0/0 = NaN (PyTorch 2.15's `torch.softmax` gives NaN there too).
    let x = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]);
    let m = t(&[0.0, 1.0, 1.0, 1.0], &[2, 2]);
    let masked = |fill: f64, add: bool| Kind::Masked { axis: -1, log: false, fill, on: true, add };
    let k = masked(f64::NEG_INFINITY, false);
    let y = eval(k, &[x.clone(), m]);
    assert_eq!(&y[..2], [1.0, 0.0]);
    assert!(y[2].is_nan() && y[3].is_nan(), "{y:?}");
    // An additive mask [0, -inf] with the log-softmax: log([1, 0]) = [0, -inf].
    let add = Kind::Masked { axis: 1, log: true, fill: 0.0, on: true, add: true };
    let y = eval(add, &[x, t(&[0.0, f64::NEG_INFINITY], &[2])]);
    assert_eq!(y, [0.0, f64::NEG_INFINITY, 0.0, f64::NEG_INFINITY]);
}

#[test]
fn trilu_of_a_minus_inf_matrix_keeps_zeros_below_not_nan_and_slices_clamp() {
    // torch.full((3, 3), -inf).triu(1): -inf above the diagonal, 0 on and below it.
    let inf = f64::NEG_INFINITY;
    let y = eval(Kind::Trilu { upper: true, k: 1 }, &[t(&[inf; 9], &[3, 3])]);
    assert_eq!(y, [0.0, inf, inf, 0.0, 0.0, inf, 0.0, 0.0, 0.0]);
    // Slice [1, INT64_MAX) of axis 1 and [-1, ∞) of axis 0 on a 2×3 matrix: [[5, 6]].
    let x = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    assert_eq!(eval(Kind::Slice { starts: vec![1, -1], ends: vec![i64::MAX, i64::MAX], axes: vec![1, 0] }, &[x]), [5.0, 6.0]);
}

#[test]
fn gather_looks_up_rows_negative_indices_count_from_the_end_and_out_of_range_is_an_error() {
    let table = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2]);
    assert_eq!(eval(Kind::Gather { axis: 0 }, &[table.clone(), t(&[2.0, -3.0], &[2])]), [5.0, 6.0, 1.0, 2.0]);
    let err = Kind::Gather { axis: 0 }.eval(&[table, t(&[3.0], &[1])], &mut |_, _| Ok(None)).unwrap_err().to_string();
    assert!(err.contains("index 3 is out of range for 3 rows"), "{err}");
}

#[test]
fn casts_comparisons_and_where_work_on_zero_one_masks() {
    let x = t(&[-1.5, 0.0, 2.7], &[3]);
    assert_eq!(eval(Kind::Cast { to: CastTo::Int }, std::slice::from_ref(&x)), [-1.0, 0.0, 2.0]);
    assert_eq!(eval(Kind::Cast { to: CastTo::Bool }, std::slice::from_ref(&x)), [1.0, 0.0, 1.0]);
    let zero = t(&[0.0], &[1]);
    assert_eq!(eval(Kind::Equal, &[x.clone(), zero.clone()]), [0.0, 1.0, 0.0]);
    assert_eq!(eval(Kind::Or, &[t(&[0.0, 1.0, 0.0], &[3]), t(&[0.0, 0.0, 1.0], &[3])]), [0.0, 1.0, 1.0]);
    assert_eq!(eval(Kind::Where, &[t(&[1.0, 0.0, 1.0], &[3]), zero, x]), [0.0, 0.0, 0.0]);
}

#[test]
fn the_backward_of_matmul_of_two_activations_is_the_product_rule() {
    // y = sum(a @ b) with a = [[1, 2]], b = [[3], [4]]: dy/da = bᵀ = [3, 4], dy/db = aᵀ = [1, 2].
    let a = Var::from_tensor(&t(&[1.0, 2.0], &[1, 2])).unwrap();
    let b = Var::from_tensor(&t(&[3.0, 4.0], &[2, 1])).unwrap();
    let y = Kind::MatMul.eval(&[a.as_tensor().clone(), b.as_tensor().clone()], &mut |_, _| Ok(None)).unwrap();
    assert_eq!(y.flatten_all().unwrap().to_vec1::<f64>().unwrap(), [11.0]);
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(a.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap(), [3.0, 4.0]);
    assert_eq!(g.get(b.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap(), [1.0, 2.0]);
}

#[test]
fn a_nan_from_finite_scores_in_a_minus_inf_masked_softmax_is_a_fully_masked_row() {
    use crate::ops::{Facts, Read, Rule};
    use crate::scenario::DTypeName;
    // Scores (batch 2, heads 2, seq 3, seq 3): flat index 1·18 + 1·9 + 2·3 + 1 = 34 is batch 1,
    // head 1, query 2 (key 1), the row [1, 1, 2, ·] of the softmax along the last axis.
    let dims = [2, 2, 3, 3];
    let f = Facts { index: 34, dims: &dims, read: Read { infinite: 0, nan: 0, min: -1.0, max: 1.0 }, ..Facts::at(0.5, f64::NAN, DTypeName::F32) };
    let masked = |fill: f64, add: bool| Kind::Masked { axis: -1, log: false, fill, on: true, add };
    let k = masked(f64::NEG_INFINITY, false);
    let (rule, reason) = k.explain_forward(&f).unwrap();
    assert_eq!(rule, Rule::FullyMaskedRow);
    assert!(reason.starts_with("the softmax's row [1, 1, 2, ·] along axis 3 (of batch row 1) has every position masked"), "{reason}");
    // An additive mask of -inf too; not a finite fill, not from a non-finite score, not a plain softmax.
    assert_eq!(masked(0.0, true).explain_forward(&f).map(|e| e.0), Some(Rule::FullyMaskedRow));
    assert_eq!(masked(-3.4e38, false).explain_forward(&f), None);
    assert_eq!(k.explain_forward(&Facts { read: Read { infinite: 1, ..f.read }, ..f }), None);
    assert_eq!(Kind::Softmax { axis: -1 }.explain_forward(&f), None);
}

#[test]
fn relu_lets_nan_through_forward_and_backward_as_torch_relu() {
    // PyTorch 2.15: torch.relu([nan, -1, 2, -0.0]) = [nan, 0, 2, -0.0], and the gradient of its
    // sum [1, 0, 1, 0] (`threshold_backward` passes it where the output is NaN). Candle's `relu`
    // would make the NaN 0.
    let x = Var::from_tensor(&t(&[f64::NAN, -1.0, 2.0, -0.0], &[4])).unwrap();
    let y = Kind::Relu.eval(&[x.as_tensor().clone()], &mut |_, _| Ok(None)).unwrap();
    let v = y.to_vec1::<f64>().unwrap();
    assert!(v[0].is_nan() && v[1..] == [0.0, 2.0, 0.0] && v[3].is_sign_negative(), "{v:?}");
    let g = y.sum_all().unwrap().backward().unwrap();
    assert_eq!(g.get(x.as_tensor()).unwrap().to_vec1::<f64>().unwrap(), [1.0, 0.0, 1.0, 0.0]);
}
