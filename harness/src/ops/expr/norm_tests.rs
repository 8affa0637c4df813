//! `norm` of every `p` against PyTorch 2.15's `torch.norm` values and gradients.
// PyTorch's f32 values are quoted as it prints them (their f64 expansions), digits and all.
#![allow(clippy::excessive_precision)]

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};

use super::super::check::Dim;
use super::super::{compile, eval};

/// `text` over `x` = `rows` (in `dtype`): its value (one per row) and the gradient of
/// `sum(value · w)` w.r.t. x, as f32.
fn run(text: &str, rows: &[&[f32]], w: &[f32], dtype: DType) -> (Vec<f32>, Vec<f32>) {
    let width = rows[0].len();
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    let x = Tensor::new(flat, &Device::Cpu).unwrap().reshape((rows.len(), width)).unwrap().to_dtype(dtype).unwrap();
    let var = Var::from_tensor(&x).unwrap();
    let x = var.as_tensor().clone();
    let c = compile(text, &[("x".into(), vec![Dim::Batch, Dim::N(width)])], &BTreeMap::new()).unwrap_or_else(|e| panic!("{text}: {e}"));
    let n = eval::eval(&c.ir, std::slice::from_ref(&x), dtype).unwrap();
    let w = Tensor::new(w, &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
    let g = n.mul(&w).unwrap().sum_all().unwrap().backward().unwrap();
    let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let gx = g.get(&x).map_or_else(|| vec![0.0; rows.len() * width], f32s);
    (f32s(&n), gx)
}

/// Equal as f32 values, any NaN matching any NaN (a zero's sign is not compared: PyTorch's
/// `-0.0` comes from `sgn(0) · -2`, and both are 0).
fn same(got: &[f32], want: &[f32]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(a, b)| (a.is_nan() && b.is_nan()) || a == b)
}

const X: [&[f32]; 2] = [&[1.5, -2.0, 0.5, 0.0], &[0.0, 3.0, -1.0, 3.0]];

#[test]
fn every_p_gives_pytorchs_value_and_gradient() {
    // PyTorch 2.15, f32: x = [[1.5, -2, 0.5, 0], [0, 3, -1, 3]], n = torch.norm(x, p=p, dim=-1),
    // (n * [1, -2]).sum().backward().
    let cases: [(&str, [f32; 2], [f32; 8]); 9] = [
        ("0", [3.0, 3.0], [0.0; 8]),
        ("1", [4.0, 7.0], [1.0, -1.0, 1.0, 0.0, -0.0, -2.0, 2.0, -2.0]),
        ("2", [2.5495097637176514, 4.358899116516113], [0.588348388671875, -0.7844645380973816, 0.1961161345243454, 0.0, -0.0, -1.3764944076538086, 0.45883145928382874, -1.3764944076538086]),
        ("3", [2.257178783416748, 3.802952527999878], [0.44162189960479736, -0.7851055860519409, 0.04906909912824631, 0.0, -0.0, -1.2446025609970093, 0.1382891684770584, -1.2446025609970093]),
        ("0.5", [11.196152687072754, 19.928205490112305], [2.732050657272339, -2.366025447845459, 4.732050895690918, 0.0, -0.0, -5.154700756072998, 8.928203582763672, -5.154700756072998]),
        ("1.5", [2.9314587116241455, 5.062997817993164], [0.7153255343437195, -0.8259867429733276, 0.4129933714866638, 0.0, -0.0, -1.539525032043457, 0.8888452053070068, -1.539525032043457]),
        // A zero in the row: |0|^-1 = inf, the sum inf, its power -1 0; the gradient 0.
        ("-1", [0.0, 0.0], [0.0, -0.0, 0.0, 0.0, -0.0, -0.0, 0.0, -0.0]),
        // The second row's maximum 3 is tied: each gets half of -2.
        ("inf", [2.0, 3.0], [0.0, -1.0, 0.0, 0.0, -0.0, -1.0, 0.0, -1.0]),
        ("-inf", [0.0, 0.0], [0.0, -0.0, 0.0, 0.0, -0.0, -0.0, 0.0, -0.0]),
    ];
    for (p, value, grad) in cases {
        let text = format!("norm(x, p={p}, dim=-1)");
        let (n, g) = run(&text, &X, &[1.0, -2.0], DType::F32);
        assert!(same(&n, &value) && same(&g, &grad), "{text}: {n:?} {g:?}");
    }
    // Positionally, as torch.norm(x, 1, -1): the same.
    assert_eq!(run("norm(x, 1, -1)", &X, &[1.0, -2.0], DType::F32).0, [4.0, 7.0]);
}

#[test]
fn a_zero_row_has_a_zero_gradient_for_every_p() {
    // PyTorch 2.15, f32: x = [[0, 0, 0]]: the norm 0 and the gradient 0 for p = 0, 1, 2, 3,
    // 0.5, 1.5, inf, -inf (the masks where the norm or x is 0; sgn(0) = 0).
    for p in ["0", "1", "2", "3", "0.5", "1.5", "inf", "-inf"] {
        let text = format!("norm(x, p={p}, dim=-1)");
        let (n, g) = run(&text, &[&[0.0, 0.0, 0.0]], &[1.0], DType::F32);
        assert!(same(&n, &[0.0]) && same(&g, &[0.0; 3]), "{text}: {n:?} {g:?}");
    }
}

#[test]
fn an_infinite_or_nan_input_flows_as_in_pytorch() {
    let inf = f32::INFINITY;
    // PyTorch 2.15, f32: x = [[inf, -2, 1]], torch.norm(x, p=p, dim=-1).sum().backward().
    let cases: [(&str, f32, [f32; 3]); 7] = [
        ("0", 3.0, [0.0, 0.0, 0.0]),
        ("1", inf, [1.0, -1.0, 1.0]),
        // x / norm: inf / inf = NaN.
        ("2", inf, [f32::NAN, -0.0, 0.0]),
        ("3", inf, [f32::NAN, -0.0, 0.0]),
        // |x|^(p-1) · norm^(1-p): 0 · inf = NaN at inf, ±inf at the finite ones.
        ("0.5", inf, [f32::NAN, -inf, inf]),
        ("inf", inf, [1.0, -0.0, 0.0]),
        ("-inf", 1.0, [0.0, -0.0, 1.0]),
    ];
    for (p, value, grad) in cases {
        let text = format!("norm(x, p={p}, dim=-1)");
        let (n, g) = run(&text, &[&[inf, -2.0, 1.0]], &[1.0], DType::F32);
        assert!(same(&n, &[value]) && same(&g, &grad), "{text}: {n:?} {g:?}");
    }
    // PyTorch 2.15, f32: x = [[nan, -2, 1]]: NaN wins the maximum and the minimum, and the
    // gradient goes to the NaN, times sgn(NaN) = 0; p = 1 gives NaN and sgn(x); p = 0 counts it.
    let nan = [&[f32::NAN, -2.0, 1.0][..]];
    assert!(same(&run("norm(x, p=inf, dim=-1)", &nan, &[1.0], DType::F32).0, &[f32::NAN]));
    assert!(same(&run("norm(x, p=inf, dim=-1)", &nan, &[1.0], DType::F32).1, &[0.0, -0.0, 0.0]));
    assert!(same(&run("norm(x, p=-inf, dim=-1)", &nan, &[1.0], DType::F32).0, &[f32::NAN]));
    assert!(same(&run("norm(x, p=1, dim=-1)", &nan, &[1.0], DType::F32).1, &[0.0, -1.0, 1.0]));
    assert_eq!(run("norm(x, p=0, dim=-1)", &nan, &[1.0], DType::F32).0, [3.0]);
}

#[test]
fn half_norms_accumulate_in_f32_and_differentiate_in_their_dtype() {
    let row = [300.0f32; 20];
    // PyTorch 2.15, f16, 20 values of 300: p = 3 is 814.5 (27e6 · 20 in f32, its cube root
    // rounded once), and its gradient NaN (x·|x| = 90000 and 814.5² overflow f16: ∞ · (1/∞));
    // p = 1 is 6000 with gradient 1; p = inf is 300 with 1/20 = 0.04998779296875 to each tie.
    let (n, g) = run("norm(x, p=3, dim=-1)", &[&row], &[1.0], DType::F16);
    assert!(n == [814.5] && g.iter().all(|v| v.is_nan()), "{n:?} {g:?}");
    assert_eq!(run("norm(x, p=1, dim=-1)", &[&row], &[1.0], DType::F16), (vec![6000.0], vec![1.0; 20]));
    assert_eq!(run("norm(x, p=inf, dim=-1)", &[&row], &[1.0], DType::F16), (vec![300.0], vec![0.04998779296875; 20]));
    // PyTorch 2.15, 20 values of 0.001: p = 0.5 in f16 is 0.400146484375, the gradient 20
    // (rsqrt and sqrt, each from f32 rounded once); p = 0.25 in bf16 is 160, the gradient 8000.
    assert_eq!(run("norm(x, p=0.5, dim=-1)", &[&[0.001; 20]], &[1.0], DType::F16), (vec![0.400146484375], vec![20.0; 20]));
    assert_eq!(run("norm(x, p=0.25, dim=-1)", &[&[0.001; 20]], &[1.0], DType::BF16), (vec![160.0], vec![8000.0; 20]));
    // PyTorch 2.15, x = [3, 0.5, -7]: p = 4 in f16 (norm³ a cube from f32 rounded once) and in
    // bf16 (each product rounded in bf16), p = 1.5 in bf16.
    let x = [&[3.0f32, 0.5, -7.0][..]];
    assert_eq!(run("norm(x, p=4, dim=-1)", &x, &[1.0], DType::F16), (vec![7.05859375], vec![0.0767822265625, 0.0003554821014404297, -0.9755859375]));
    assert_eq!(run("norm(x, p=4, dim=-1)", &x, &[1.0], DType::BF16), (vec![7.0625], vec![0.076171875, 0.0003528594970703125, -0.97265625]));
    assert_eq!(run("norm(x, p=1.5, dim=-1)", &x, &[1.0], DType::BF16), (vec![8.3125], vec![0.59765625, 0.244140625, -0.9140625]));
}

#[test]
fn p_is_any_number_and_writes_back_to_pytorch() {
    let consts = BTreeMap::from([("q".to_string(), 3.0)]);
    let inputs = [("x".to_string(), vec![Dim::Batch, Dim::N(3)])];
    assert!(compile("norm(x, p=q, dim=1) + norm(x, p=-inf) + norm(x, p=0.25)", &inputs, &consts).is_ok());
    let ast = super::super::parse::parse("norm(x, p=inf, dim=-1) + norm(x, p=-inf)").unwrap();
    assert_eq!(super::super::torch::python(&ast, &consts, "x"), "(torch.norm(x, p=float('inf'), dim=-1) + torch.norm(x, p=float('-inf')))");
}
