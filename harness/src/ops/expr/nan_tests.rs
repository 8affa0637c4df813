//! NaN and ±∞ through the expression's functions as PyTorch 2.15 carries them (values from
//! `/work/main/.venv-torch/bin/python`, `torch.tensor(x, requires_grad=True)`, the function,
//! `.sum().backward()`): a NaN in a reduced set makes `amax`, `amin` and `logsumexp` NaN
//! wherever it stands (Candle's `max` keeps one only in the first position), `cumsum` carries
//! a NaN or ∞ only forward, `clamp` and `relu` let NaN through.
#![allow(clippy::excessive_precision)]

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};

use super::check::Dim;
use super::{compile, eval};

const NAN: f32 = f32::NAN;
const INF: f32 = f32::INFINITY;

/// `text` over `x` = `rows` in `dtype`: its value and the gradient of its sum (taken in f32)
/// wrt `x`, both flattened to f64.
fn run(text: &str, rows: &[&[f32]], dtype: DType) -> (Vec<f64>, Vec<f64>) {
    let w = rows[0].len();
    let flat: Vec<f32> = rows.concat();
    let var = Var::from_tensor(&Tensor::from_vec(flat, (rows.len(), w), &Device::Cpu).unwrap().to_dtype(dtype).unwrap()).unwrap();
    let c = compile(text, &[("x".into(), vec![Dim::Batch, Dim::N(w)])], &BTreeMap::new()).unwrap_or_else(|e| panic!("{text}: {e}"));
    let y = eval::eval(&c.ir, &[var.as_tensor().clone()], dtype).unwrap();
    let g = y.to_dtype(DType::F32).unwrap().sum_all().unwrap().backward().unwrap();
    let f64s = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
    (f64s(&y), g.get(var.as_tensor()).map_or_else(|| vec![0.0; rows.len() * w], f64s))
}

/// The same value: both NaN, equal (±0 apart), or within `tol` relative.
fn same(a: f64, b: f64, tol: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol * b.abs()
}

fn assert_rows(text: &str, x: &[&[f32]], dtype: DType, value: &[f32], grad: &[f32], tol: f64) {
    let (v, g) = run(text, x, dtype);
    let ok = |got: &[f64], want: &[f32]| got.len() == want.len() && got.iter().zip(want).all(|(a, b)| same(*a, f64::from(*b), tol));
    assert!(ok(&v, value), "{text} ({dtype:?}) at {x:?}: value {v:?}, PyTorch {value:?}");
    assert!(ok(&g, grad), "{text} ({dtype:?}) at {x:?}: gradient {g:?}, PyTorch {grad:?}");
}

/// `(expression, x, value, gradient of the value's sum)`, PyTorch 2.15 in f32.
type Row = (&'static str, [f32; 4], &'static [f32], [f32; 4]);

const PYTORCH: &[Row] = &[
    ("amax(x, dim=-1)", [1.0, NAN, 3.0, 2.0], &[NAN], [NAN; 4]),
    ("amax(x, dim=-1)", [3.0, -INF, 3.0, INF], &[INF], [0.0, 0.0, 0.0, 1.0]),
    ("amax(x, dim=-1)", [2.0, 3.0, 3.0, 3.0], &[3.0], [0.0, 0.3333333432674408, 0.3333333432674408, 0.3333333432674408]),
    ("amin(x, dim=-1)", [1.0, 2.0, NAN, 0.0], &[NAN], [NAN; 4]),
    ("amin(x)", [1.0, 2.0, 0.0, NAN], &[NAN], [NAN; 4]),
    ("logsumexp(x, dim=-1)", [1.0, NAN, 2.0, 3.0], &[NAN], [NAN; 4]),
    ("logsumexp(x, dim=-1)", [2.0, 1.0, 0.0, NAN], &[NAN], [NAN; 4]),
    ("logsumexp(x, dim=-1)", [INF, INF, 1.0, 2.0], &[INF], [NAN, NAN, 0.0, 0.0]),
    ("logsumexp(x, dim=-1)", [INF, -INF, 1.0, 2.0], &[INF], [NAN, 0.0, 0.0, 0.0]),
    ("logsumexp(x, dim=-1)", [-INF, -INF, 1.0, 2.0], &[2.3132617473602295], [0.0, 0.0, 0.26894140243530273, 0.7310585379600525]),
    ("norm(x, p=inf, dim=-1)", [1.0, NAN, -3.0, 2.0], &[NAN], [0.0, 0.0, -0.0, 0.0]),
    ("norm(x, p=-inf, dim=-1)", [1.0, 2.0, 0.5, NAN], &[NAN], [0.0; 4]),
    ("norm(x, p=inf, dim=-1)", [1.0, -3.0, 3.0, 2.0], &[3.0], [0.0, -0.5, 0.5, 0.0]),
    ("norm(x, dim=-1)", [1.0, NAN, 2.0, 3.0], &[NAN], [NAN; 4]),
    ("norm(x, p=1, dim=-1)", [1.0, NAN, 2.0, 3.0], &[NAN], [1.0, 0.0, 1.0, 1.0]),
    ("clamp(x, min=0, max=1)", [NAN, 2.0, -1.0, 0.5], &[NAN, 1.0, 0.0, 0.5], [0.0, 0.0, 0.0, 1.0]),
    ("clamp(x, min=0)", [NAN, 2.0, -1.0, 0.5], &[NAN, 2.0, 0.0, 0.5], [0.0, 1.0, 0.0, 1.0]),
    ("clamp(x, max=1)", [NAN, 2.0, -1.0, 0.5], &[NAN, 1.0, -1.0, 0.5], [0.0, 0.0, 1.0, 1.0]),
    ("relu(x)", [NAN, -INF, INF, -0.0], &[NAN, 0.0, INF, -0.0], [1.0, 0.0, 1.0, 0.0]),
    ("softmax(x, dim=-1)", [1.0, NAN, 2.0, 3.0], &[NAN; 4], [NAN; 4]),
    ("softmax(x, dim=-1)", [3.0, 2.0, 1.0, NAN], &[NAN; 4], [NAN; 4]),
    ("softmax(x, dim=-1)", [INF, 1.0, 2.0, 3.0], &[NAN; 4], [NAN; 4]),
    ("log_softmax(x, dim=-1)", [3.0, 2.0, 1.0, NAN], &[NAN; 4], [NAN; 4]),
    ("cumsum(x, dim=-1)", [1.0, NAN, 2.0, 3.0], &[1.0, NAN, NAN, NAN], [4.0, 3.0, 2.0, 1.0]),
    ("cumsum(x, dim=-1)", [1.0, 2.0, INF, 3.0], &[1.0, 3.0, INF, INF], [4.0, 3.0, 2.0, 1.0]),
    ("cumsum(x, dim=-1)", [1.0, INF, -INF, 3.0], &[1.0, INF, NAN, NAN], [4.0, 3.0, 2.0, 1.0]),
    // f32's running sum is f64 (ATen's CPU `acc_type`): 1e8 + 1 − 1e8 is 1, not 0.
    ("cumsum(x, dim=-1)", [1e8, 1.0, -1e8, 1.0], &[1e8, 1e8, 1.0, 2.0], [4.0, 3.0, 2.0, 1.0]),
    // A 0-d tensor's cumsum (dim 0 or −1) is the tensor itself.
    ("cumsum(sum(x), dim=0)", [1.0, NAN, 2.0, 3.0], &[NAN], [1.0; 4]),
    ("cumsum(sum(x), dim=-1)", [1.0, 2.0, 3.0, 4.0], &[10.0], [1.0; 4]),
    ("std(x, dim=-1)", [1.0, NAN, 2.0, 3.0], &[NAN], [NAN; 4]),
    ("var(x, dim=-1)", [1.0, 2.0, INF, 3.0], &[NAN], [-INF, -INF, NAN, -INF]),
    ("sum(x)", [1.0, NAN, 2.0, 3.0], &[NAN], [1.0; 4]),
    ("abs(x)", [NAN, -0.0, 0.0, -INF], &[NAN, 0.0, 0.0, INF], [0.0, 0.0, 0.0, -1.0]),
    ("sigmoid(x)", [NAN, -INF, INF, 0.0], &[NAN, 0.0, 1.0, 0.5], [NAN, 0.0, 0.0, 0.25]),
    ("tanh(x)", [NAN, -INF, INF, 0.0], &[NAN, -1.0, 1.0, 0.0], [NAN, 0.0, 0.0, 1.0]),
    // gelu(+inf) is inf in PyTorch's scalar loop and NaN in its AVX512 one (a tensor of 4 or more):
    // left out.
    ("gelu(x)", [NAN, -INF, -1.0, 0.0], &[NAN, NAN, -0.15865525603294373, 0.0], [NAN, NAN, -0.08331543207168579, 0.5]),
    ("softplus(x)", [NAN, -INF, INF, 0.0], &[NAN, 0.0, INF, 0.6931471824645996], [NAN, 0.0, 1.0, 0.5]),
    ("logsigmoid(x)", [NAN, -INF, INF, 0.0], &[NAN, -INF, 0.0, -0.6931471824645996], [NAN, 1.0, 0.0, 0.5]),
    ("where(x > 0, x, 0)", [NAN, 1.0, -1.0, 0.0], &[0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]),
];

#[test]
fn nan_and_infinities_pass_through_each_function_as_in_pytorch() {
    for (text, x, value, grad) in PYTORCH {
        assert_rows(text, &[x], DType::F32, value, grad, 1e-6);
    }
}

/// `logsumexp` of the rows of the test below over dim 0 and dim 1: values and gradients.
type Lse = (&'static [f32], [f32; 6], &'static [f32], [f32; 6]);

/// PyTorch 2.15's [`Lse`] in `dt`.
fn logsumexp_of_x(dt: DType) -> Lse {
    match dt {
        DType::F16 => (&[2.3125, NAN, 3.078125], [0.26904296875, NAN, 0.9248046875, 0.7314453125, NAN, 0.075927734375], &[NAN, 2.201171875], [NAN, NAN, NAN, 0.81787109375, 0.0, 0.1824951171875]),
        DType::BF16 => (&[2.3125, NAN, 3.078125], [0.26953125, NAN, 0.92578125, 0.73046875, NAN, 0.07568359375], &[NAN, 2.203125], [NAN, NAN, NAN, 0.81640625, 0.0, 0.181640625]),
        _ => (
            &[2.3132617473602295, NAN, 3.078889846801758],
            [0.26894140243530273, NAN, 0.9241417050361633, 0.7310585379600525, NAN, 0.07585816830396652],
            &[NAN, 2.20141339302063],
            [NAN, NAN, NAN, 0.8175743818283081, 0.0, 0.18242549896240234],
        ),
    }
}

#[test]
fn a_nan_anywhere_in_the_set_wins_amax_amin_and_logsumexp_in_every_dtype() {
    // x = [[1, nan, 3], [2, -inf, 0.5]] (PyTorch 2.15): over dim 0 and dim 1, keepdim or not
    // (the same values and gradients: keepdim changes the shape only).
    let x: &[&[f32]] = &[&[1.0, NAN, 3.0], &[2.0, -INF, 0.5]];
    for dt in [DType::F32, DType::F16, DType::BF16] {
        for keep in ["false", "true"] {
            let at = |f: &str, d: usize| format!("{f}(x, dim={d}, keepdim={keep})");
            assert_rows(&at("amax", 0), x, dt, &[2.0, NAN, 3.0], &[0.0, NAN, 1.0, 1.0, NAN, 0.0], 0.0);
            assert_rows(&at("amax", 1), x, dt, &[NAN, 2.0], &[NAN, NAN, NAN, 1.0, 0.0, 0.0], 0.0);
            assert_rows(&at("amin", 0), x, dt, &[1.0, NAN, 0.5], &[1.0, NAN, 0.0, 0.0, NAN, 1.0], 0.0);
            assert_rows(&at("amin", 1), x, dt, &[NAN, -INF], &[NAN, NAN, NAN, 0.0, 1.0, 0.0], 0.0);
            let (v0, g0, v1, g1) = logsumexp_of_x(dt);
            // f32's values to PyTorch's last digits; the half dtypes exactly.
            let tol = if dt == DType::F32 { 1e-6 } else { 0.0 };
            assert_rows(&at("logsumexp", 0), x, dt, v0, &g0, tol);
            assert_rows(&at("logsumexp", 1), x, dt, v1, &g1, tol);
        }
    }
}

#[test]
fn cumsum_accumulates_as_atens_and_its_gradient_is_the_sum_from_the_end() {
    // PyTorch 2.15: cumsum of [2048, 1, 1, −2048] accumulates in f32 and rounds each output:
    // f16 [2048, 2048, 2050, 2], bf16 [2048, 2048, 2048, 2]; with the same values as the
    // upstream gradient, f16 [2, −2046, −2047, −2048], bf16 [2, −2048, −2048, −2048].
    let x: &[&[f32]] = &[&[2048.0, 1.0, 1.0, -2048.0]];
    let (v, _) = run("cumsum(x, dim=-1)", x, DType::F16);
    assert_eq!(v, [2048.0, 2048.0, 2050.0, 2.0]);
    assert_eq!(run("cumsum(x, dim=-1)", x, DType::BF16).0, [2048.0, 2048.0, 2048.0, 2.0]);
    // The gradient under an upstream `w`: PyTorch 2.15's torch.cumsum(x, -1) backward of
    // w = [inf, 1, 2, 3] is [inf, 6, 5, 3] (a product with a triangle of ones gives ∞ · 0 = NaN
    // after the first), of w = [1, nan, 2, 3] [nan, nan, 5, 3].
    let upstream = |w: &[f32], dt: DType| -> Vec<f64> {
        let var = Var::from_tensor(&Tensor::new(&[[1f32, 2.0, 3.0, 4.0]], &Device::Cpu).unwrap().to_dtype(dt).unwrap()).unwrap();
        let w = Tensor::new(w, &Device::Cpu).unwrap().reshape((1, 4)).unwrap().to_dtype(dt).unwrap();
        let inputs = [("x".into(), vec![Dim::Batch, Dim::N(4)]), ("w".into(), vec![Dim::Batch, Dim::N(4)])];
        let c = compile("cumsum(x, dim=-1) * w", &inputs, &BTreeMap::new()).unwrap();
        let y = eval::eval(&c.ir, &[var.as_tensor().clone(), w], dt).unwrap();
        let g = y.to_dtype(DType::F32).unwrap().sum_all().unwrap().backward().unwrap();
        g.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
    };
    assert_eq!(upstream(&[INF, 1.0, 2.0, 3.0], DType::F32), [f64::INFINITY, 6.0, 5.0, 3.0]);
    let g = upstream(&[1.0, NAN, 2.0, 3.0], DType::F32);
    assert!(g[0].is_nan() && g[1].is_nan() && g[2..] == [5.0, 3.0], "{g:?}");
    assert_eq!(upstream(&[2048.0, 1.0, 1.0, -2048.0], DType::F16), [2.0, -2046.0, -2047.0, -2048.0]);
    assert_eq!(upstream(&[2048.0, 1.0, 1.0, -2048.0], DType::BF16), [2.0, -2048.0, -2048.0, -2048.0]);
}

#[test]
fn ties_share_the_gradient_by_a_count_that_does_not_round_in_the_half_type() {
    // PyTorch 2.15 (`scale_grad_by_count` counts in int64, converts once): the gradient of
    // amin over 300 tied bf16 zeros is 0.003326416015625 each (bf16 of 1/300; a bf16 sum of
    // the ties stalls at 256, giving 1/256 = 0.00390625), of vector_norm(ord=inf) over 300
    // bf16 ones the same, of amax over 3000 f16 zeros 0.0003333091735839844 (f16 of 1/3000;
    // an f16 sum stalls at 2048).
    let grad = |text: &str, x: f32, n: usize, dt: DType| run(text, &[&vec![x; n]], dt).1;
    assert!(grad("amin(x, dim=-1)", 0.0, 300, DType::BF16).iter().all(|g| *g == 0.003326416015625));
    assert!(grad("norm(x, p=inf, dim=-1)", 1.0, 300, DType::BF16).iter().all(|g| *g == 0.003326416015625));
    assert!(grad("amax(x, dim=-1)", 0.0, 3000, DType::F16).iter().all(|g| *g == 0.0003333091735839844));
}
