//! Expressions under autocast, node by node, against PyTorch 2.15's values and gradients under
//! `torch.autocast("cpu", dtype=...)`, the ops of CUDA's f32 list (`exp`, `**`) given `.float()`
//! operands by hand as `repro.py` does (nanhunt follows CUDA's lists); gradients of
//! `out.float().sum()`.
#![allow(clippy::excessive_precision)]

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor, Var};

use super::super::check::Dims;
use super::super::{compile, dims_of_tensor};
use super::eval;

/// An input: its name, values, shape and dtype.
type In<'a> = (&'a str, &'a [f32], &'a [usize], DType);

/// A tensor's dtype and values.
type Got = (DType, Vec<f32>);

/// `text` over `inputs` with `consts` under autocast to `low`: the result's dtype and values,
/// and each input's gradient (dtype and values) from the sum of the result.
fn run(text: &str, inputs: &[In<'_>], consts: &[(&str, f64)], low: DType) -> (Got, Vec<Got>) {
    let dev = Device::Cpu;
    let vars: Vec<Var> = inputs.iter().map(|(_, v, s, d)| Var::from_tensor(&Tensor::new(*v, &dev).unwrap().reshape(*s).unwrap().to_dtype(*d).unwrap()).unwrap()).collect();
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let named: Vec<(String, Dims)> = inputs.iter().zip(&ts).map(|((n, ..), t)| (n.to_string(), dims_of_tensor(t))).collect();
    let consts: BTreeMap<String, f64> = consts.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let c = compile(text, &named, &consts).unwrap_or_else(|e| panic!("{text}: {e}"));
    let out = eval(&c.ir, &ts, low).unwrap();
    let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let g = out.to_dtype(DType::F32).unwrap().sum_all().unwrap().backward().unwrap();
    let grads = ts.iter().map(|t| g.get(t).map(|g| (g.dtype(), f32s(g))).unwrap_or((t.dtype(), vec![0.0; t.elem_count()]))).collect();
    ((out.dtype(), f32s(&out)), grads)
}

/// Whether `a` and `b` are the same values, NaN where NaN.
fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
}

#[track_caller]
fn check(got: &Got, want: (DType, &[f32])) {
    assert!(got.0 == want.0 && same(&got.1, want.1), "got {got:?}, want {want:?}");
}

const F16: DType = DType::F16;
const BF16: DType = DType::BF16;
const F32: DType = DType::F32;

#[test]
fn a_product_past_f16s_range_cancels_to_nan_per_op_as_in_pytorch() {
    // PyTorch 2.15, x = [[0.5, -0.25, 1e-5]] in f16, S = 1000.0: `x*S*S - x*S*S + x` is
    // [nan, nan, 1.0013580322265625e-05] (f16): 0.5·1000·1000 is inf in f16 and inf - inf NaN;
    // x.grad is [nan, nan, nan]: each use's gradient 1e6 is ±inf in f16. In f32 it stays finite.
    let x: In<'_> = ("x", &[0.5, -0.25, 1e-5], &[1, 3], F16);
    let (out, grads) = run("x*S*S - x*S*S + x", &[x], &[("S", 1000.0)], F16);
    check(&out, (F16, &[f32::NAN, f32::NAN, 1.0013580322265625e-05]));
    check(&grads[0], (F16, &[f32::NAN, f32::NAN, f32::NAN]));
    // bf16's range holds 5e5: PyTorch gives [0.5, -0.25, 1.0013580322265625e-05] (bf16).
    let (out, _) = run("x*S*S - x*S*S + x", &[("x", x.1, x.2, BF16)], &[("S", 1000.0)], BF16);
    check(&out, (BF16, &[0.5, -0.25, 1.0013580322265625e-05]));
}

#[test]
fn a_one_pass_variance_squares_in_the_low_dtype_and_subtracts_in_f32() {
    let text = "mean(x*x, dim=-1, keepdim=true) - mean(x, dim=-1, keepdim=true)**2";
    // PyTorch 2.15 (`**` on CUDA's f32 list, so `.float()**2`): x = [[1.5, 2.25, -3.0]] in f16
    // gives [5.375] (f32), x.grad [0.83349609375, 1.333984375, -2.16796875] (f16); in bf16
    // [5.375], x.grad [0.83203125, 1.328125, -2.15625] (bf16).
    let x: &[f32] = &[1.5, 2.25, -3.0];
    let (out, grads) = run(text, &[("x", x, &[1, 3], F16)], &[], F16);
    check(&out, (F32, &[5.375]));
    check(&grads[0], (F16, &[0.83349609375, 1.333984375, -2.16796875]));
    let (out, grads) = run(text, &[("x", x, &[1, 3], BF16)], &[], BF16);
    check(&out, (F32, &[5.375]));
    check(&grads[0], (BF16, &[0.83203125, 1.328125, -2.15625]));
    // x = [[300, 301, 302]]: x*x is inf in f16, so the variance is inf (f32), x.grad
    // [-0.625, 0.0, 0.625]; in bf16 [624.0] (the true variance is 0.667), x.grad [0.0, 0.0, 2.0].
    let x: &[f32] = &[300.0, 301.0, 302.0];
    let (out, grads) = run(text, &[("x", x, &[1, 3], F16)], &[], F16);
    check(&out, (F32, &[f32::INFINITY]));
    check(&grads[0], (F16, &[-0.625, 0.0, 0.625]));
    let (out, grads) = run(text, &[("x", x, &[1, 3], BF16)], &[], BF16);
    check(&out, (F32, &[624.0]));
    check(&grads[0], (BF16, &[0.0, 0.0, 2.0]));
}

#[test]
fn a_matmul_of_f32_operands_computes_in_the_low_dtype() {
    // PyTorch 2.15: a = [[[0.1, 0.2, 0.3], [1.7, -2.9, 3.3]]], h = [[[1.1, 0.5], [-0.7, 2.3],
    // [0.9, -1.3]]] (f32): `a @ h` under f16 autocast is [0.239990234375, 0.12005615234375,
    // 6.87109375, -10.1171875] (f16); a.grad [1.599609375, 1.6005859375, -0.39990234375] per
    // row, h.grad [1.7998046875, 1.7998046875, -2.701171875, -2.701171875, 3.6015625, 3.6015625]
    // (f32). Under bf16: [0.240234375, 0.11962890625, 6.875, -10.125] (bf16); a.grad [1.6015625,
    // 1.59375, -0.3984375] per row, h.grad [1.8046875, 1.8046875, -2.703125, -2.703125,
    // 3.59375, 3.59375].
    let a: In<'_> = ("x", &[0.1, 0.2, 0.3, 1.7, -2.9, 3.3], &[1, 2, 3], F32);
    let h: In<'_> = ("h", &[1.1, 0.5, -0.7, 2.3, 0.9, -1.3], &[1, 3, 2], F32);
    let (out, grads) = run("x @ h", &[a, h], &[], F16);
    check(&out, (F16, &[0.239990234375, 0.12005615234375, 6.87109375, -10.1171875]));
    check(&grads[0], (F32, &[1.599609375, 1.6005859375, -0.39990234375, 1.599609375, 1.6005859375, -0.39990234375]));
    check(&grads[1], (F32, &[1.7998046875, 1.7998046875, -2.701171875, -2.701171875, 3.6015625, 3.6015625]));
    let (out, grads) = run("x @ h", &[a, h], &[], BF16);
    check(&out, (BF16, &[0.240234375, 0.11962890625, 6.875, -10.125]));
    check(&grads[0], (F32, &[1.6015625, 1.59375, -0.3984375, 1.6015625, 1.59375, -0.3984375]));
    check(&grads[1], (F32, &[1.8046875, 1.8046875, -2.703125, -2.703125, 3.59375, 3.59375]));
}

#[test]
fn numbers_do_not_promote_and_mixed_tensors_promote_to_f32() {
    // PyTorch 2.15: x = [[1.7, -2.9, 3.3]] (f16), y = [[0.1, 0.2, 0.3]] (f32): `(x * 3.3 + y) *
    // 0.1` is [0.5709375143051147, -0.9370312690734863, 1.1190625429153442] (f32: x * 3.3 is
    // f16, + y promotes), x.grad [0.329833984375] × 3 (f16), y.grad [0.10000000149011612] × 3.
    // Under bf16: [0.5724999904632568, -0.9362500309944153, 1.1175000667572021], x.grad
    // [0.330078125] × 3 (bf16).
    let y: In<'_> = ("y", &[0.1, 0.2, 0.3], &[1, 3], F32);
    let x: &[f32] = &[1.7, -2.9, 3.3];
    let (out, grads) = run("(x * 3.3 + y) * 0.1", &[("x", x, &[1, 3], F16), y], &[], F16);
    check(&out, (F32, &[0.5709375143051147, -0.9370312690734863, 1.1190625429153442]));
    check(&grads[0], (F16, &[0.329833984375; 3]));
    check(&grads[1], (F32, &[0.10000000149011612; 3]));
    let (out, grads) = run("(x * 3.3 + y) * 0.1", &[("x", x, &[1, 3], BF16), y], &[], BF16);
    check(&out, (F32, &[0.5724999904632568, -0.9362500309944153, 1.1175000667572021]));
    check(&grads[0], (BF16, &[0.330078125; 3]));
}

#[test]
fn an_f32_list_function_returns_f32_and_the_others_keep_their_dtype() {
    // PyTorch 2.15: x = [[1.7, -2.9, 3.3]] (f16): `torch.exp(x.float()) * x - torch.sigmoid(x)`
    // is [8.462894439697266, -0.2116505354642868, 88.59848022460938] (f32), x.grad
    // [14.65625, -0.1539306640625, 116.6875] (f16); in bf16 [8.504340171813965,
    // -0.21067270636558533, 88.14323425292969], x.grad [14.75, -0.1533203125, 116.0] (bf16).
    let x: &[f32] = &[1.7, -2.9, 3.3];
    let (out, grads) = run("exp(x) * x - sigmoid(x)", &[("x", x, &[1, 3], F16)], &[], F16);
    check(&out, (F32, &[8.462894439697266, -0.2116505354642868, 88.59848022460938]));
    check(&grads[0], (F16, &[14.65625, -0.1539306640625, 116.6875]));
    let (out, grads) = run("exp(x) * x - sigmoid(x)", &[("x", x, &[1, 3], BF16)], &[], BF16);
    check(&out, (F32, &[8.504340171813965, -0.21067270636558533, 88.14323425292969]));
    check(&grads[0], (BF16, &[14.75, -0.1533203125, 116.0]));
}

#[test]
fn the_diagnosis_names_the_node_that_overflows_the_low_dtype() {
    use crate::ops::diagnosis::Rule;
    // f32 storage holding an f16 value, as the model keeps it on the CPU: 0.5·1000 = 500 is
    // finite, 500·1000 passes f16's 65504 (PyTorch 2.15: inf in f16, as the first test quotes).
    let x = Tensor::new(&[[0.5f32]], &Device::Cpu).unwrap();
    let consts = BTreeMap::from([("S".to_string(), 1000.0)]);
    let found = super::super::diagnosis::explain_amp("x*S*S - x*S*S + x", &consts, &[("x", &x)], None, (F16, &[F16])).unwrap();
    let (rule, why) = found.expect("a rule explains it");
    assert_eq!(rule, Rule::Overflow, "{why}");
    assert!(why.starts_with("`(x * S) * S` (column ") && why.contains("beyond f16's largest value 65504"), "{why}");
    // In f32 (no autocast) the same expression is finite: nothing to explain.
    assert_eq!(super::super::diagnosis::explain("x*S*S - x*S*S + x", &consts, &[("x", &x)], None, crate::scenario::DTypeName::F32).unwrap(), None);
}

#[test]
fn a_comparison_of_mixed_dtypes_compares_in_f32_and_gives_the_mask_in_the_main_dtype() {
    // PyTorch 2.15 under torch.autocast("cpu", dtype=torch.float16): x = [[1.0, 1.0]] (f16),
    // h = [[1.0001, 0.9999]] (f32): `(x >= h).to(x.dtype)` is [[0., 1.]] (f16). Rounding h to
    // f16 first (1.0, 1.0) would give [[1., 1.]].
    let x: In<'_> = ("x", &[1.0, 1.0], &[1, 2], F16);
    let h: In<'_> = ("h", &[1.0001, 0.9999], &[1, 2], F32);
    let (out, _) = run("x >= h", &[x, h], &[], F16);
    check(&out, (F16, &[0.0, 1.0]));
}

#[test]
fn the_f32_names_repro_py_casts_up_are_cuda_autocasts_f32_list() {
    // PyTorch 2.15's aten/src/ATen/autocast_mode.h: exp, log, log1p, rsqrt, pow, softplus,
    // cosine_similarity and logsumexp in AT_FORALL_FP32; softmax, log_softmax, cumsum, sum and
    // linalg_vector_norm (torch.norm's) in AT_FORALL_FP32_SET_OPT_DTYPE; `**` is Tensor.__pow__
    // and __rpow__ to Python's function mode; `c / x` is Tensor.__rdiv__ (torch/_tensor.py:
    // `self.reciprocal() * other`, `__rtruediv__ = __rdiv__`), reciprocal in AT_FORALL_FP32.
    let mut got = super::torch_f32_names();
    got.sort_unstable();
    let mut want = [
        "exp",
        "log",
        "log1p",
        "rsqrt",
        "pow",
        "__pow__",
        "__rpow__",
        "__rdiv__",
        "softplus",
        "cosine_similarity",
        "logsumexp",
        "softmax",
        "log_softmax",
        "cumsum",
        "sum",
        "norm",
        "linalg_vector_norm",
    ];
    want.sort_unstable();
    assert_eq!(got, want);
}

#[test]
fn a_full_reduction_does_not_promote_a_tensor_with_dimensions() {
    // PyTorch 2.15, x = [300., 2.] in f16, under torch.autocast("cpu", dtype=torch.float16)
    // with sum cast up (CUDA's f32 list): x * torch.sum(x) is tensor([inf, 604.],
    // dtype=torch.float16) (an f32 zero-dim tensor does not promote an f16 one with dimensions:
    // 300 · 302 = 90600 > 65504); torch.sum(x) * torch.sum(x) is tensor(91204.) (f32);
    // torch.where(x > 100, x, torch.sum(x)) is tensor([300., 302.], dtype=torch.float16).
    let x: In<'_> = ("x", &[300.0, 2.0], &[2], F16);
    check(&run("x * sum(x)", &[x], &[], F16).0, (F16, &[f32::INFINITY, 604.0]));
    check(&run("sum(x) * sum(x)", &[x], &[], F16).0, (F32, &[91204.0]));
    check(&run("where(x > 100, x, sum(x))", &[x], &[], F16).0, (F16, &[300.0, 302.0]));
}

#[test]
fn a_number_over_a_tensor_computes_in_f32_as_its_reciprocal_is_on_the_f32_list() {
    // PyTorch 2.15: `10.0 / x` is Tensor.__rdiv__, `x.reciprocal() * 10.0`, and reciprocal is on
    // CUDA's f32 list. x = [1e-4, 3.0, -7.0] in f16 under torch.autocast("cpu", float16) with x
    // cast up by hand (CUDA's casts): [99983.40625, 3.3333334922790527, -1.4285714626312256]
    // (f32), x.grad [-inf, -1.111328125, -0.2041015625] (f16: -10/x² = -1e9 is -inf in f16).
    // In f16 (CPU's list) the first would be inf. `x / 10.0` stays f16.
    let x: In<'_> = ("x", &[1e-4, 3.0, -7.0], &[3], F16);
    let (out, grads) = run("10.0 / x", &[x], &[], F16);
    check(&out, (F32, &[99983.40625, 3.3333334922790527, -1.4285714626312256]));
    check(&grads[0], (F16, &[f32::NEG_INFINITY, -1.111328125, -0.2041015625]));
    assert_eq!(run("x / 10.0", &[x], &[], F16).0 .0, F16);
}
