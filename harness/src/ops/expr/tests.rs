//! The expression language against hand arithmetic and PyTorch 2.15's values and gradients.
// PyTorch's f32 values are quoted as it prints them (their f64 expansions), digits and all.
#![allow(clippy::excessive_precision)]

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};

use super::ast::{BinOp, Kind};
use super::check::Dim;
use super::*;

fn flat(w: usize) -> Dims {
    vec![Dim::Batch, Dim::N(w)]
}

/// `text` over `x` = `values` (one row), its value and the gradient of its sum w.r.t. x, in f32.
fn run(text: &str, values: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let var = Var::from_tensor(&Tensor::new(values, &Device::Cpu).unwrap().reshape((1, values.len())).unwrap()).unwrap();
    let x = var.as_tensor().clone();
    let c = compile(text, &[("x".into(), flat(values.len()))], &BTreeMap::new()).unwrap_or_else(|e| panic!("{text}: {e}"));
    let y = eval::eval(&c.ir, std::slice::from_ref(&x), candle_core::DType::F32).unwrap();
    let g = y.sum_all().unwrap().backward().unwrap();
    let gx = g.get(&x).map_or_else(|| vec![0.0; values.len()], |t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), gx)
}

fn err(text: &str) -> String {
    compile(text, &[("x".into(), flat(3))], &BTreeMap::from([("eps".to_string(), 1e-12)])).unwrap_err()
}

#[test]
fn precedence_is_pythons() {
    let a = parse::parse("-x**2").unwrap();
    assert!(matches!(&a.kind, Kind::Neg(inner) if matches!(inner.kind, Kind::Bin(BinOp::Pow, ..))), "{a:?}");
    assert_eq!(parse::parse("a - b - c").unwrap().to_string(), "(a - b) - c");
    assert_eq!(parse::parse("a ** b ** c").unwrap().to_string(), "a ** (b ** c)");
    assert_eq!(parse::parse("2 ** -1 * x").unwrap().to_string(), "(2 ** (-1)) * x");
    assert_eq!(parse::parse("x ** 0.5 + 1e20").unwrap().to_string(), "(x ** 0.5) + 1e20");
    assert_eq!(parse::parse("a + b * c @ d < e").unwrap().to_string(), "(a + ((b * c) @ d)) < e");
    assert_eq!(parse::parse("f(a, dim=(0, 1), keepdim=true)").unwrap().to_string(), "f(a, dim=(0, 1), keepdim=true)");
}

#[test]
fn errors_give_the_column_inside_the_expression() {
    assert_eq!(err("x + log(x) * lgo(x)"), "column 14: unknown function `lgo`, did you mean `log`?");
    assert_eq!(err("x / (x + epss)"), "column 10: unknown name `epss`, did you mean `eps`? (the expression can read `x`, no named outputs, and the constants `eps`)");
    assert!(err("x + * 2").starts_with("column 5: "), "{}", err("x + * 2"));
    assert!(err("sum(x, dim=1, keepdims=true)").starts_with("column 24: `sum` takes no argument `keepdims`, did you mean `keepdim`?"), "{}", err("sum(x, dim=1, keepdims=true)"));
    assert!(err("x < x < x").contains("comparisons do not chain"), "{}", err("x < x < x"));
    assert!(err("(x + 1").starts_with("column 7: "), "{}", err("(x + 1"));
    assert_eq!(err("softmax(x)"), "column 1: `softmax` needs `dim=`");
    assert!(err("sum(x, dim=2)").starts_with("column 1: dimension 2 is out of range"), "{}", err("sum(x, dim=2)"));
}

#[test]
fn shapes_broadcast_as_pytorchs() {
    let d = |t: &str| compile(t, &[("x".into(), flat(3)), ("s".into(), vec![Dim::Batch, Dim::N(2), Dim::N(3)])], &BTreeMap::new()).map(|c| c.ir.dims);
    assert_eq!(d("x / norm(x, dim=-1, keepdim=true)"), Ok(flat(3)));
    assert_eq!(d("sum(x, dim=-1)"), Ok(vec![Dim::Batch]));
    assert_eq!(d("sum(x)"), Ok(vec![]));
    assert_eq!(d("s * mean(x, dim=0)"), Ok(vec![Dim::Batch, Dim::N(2), Dim::N(3)]));
    assert!(d("s * x").unwrap_err().contains("(batch, 2, 3) and (batch, 3) do not broadcast"));
    assert_eq!(d("x @ transpose(x, 0, 1)"), Ok(vec![Dim::Batch, Dim::Batch]));
    assert!(d("s + transpose(x, 0, 1)").unwrap_err().contains("do not broadcast"));
    assert_eq!(d("reshape(s, (-1, 6))"), Ok(flat(6)));
}

/// `(expression, x, value, gradient of the value's sum)`.
type Row = (&'static str, [f32; 4], &'static [f32], [f32; 4]);

/// The rows:, each row from PyTorch 2.15 in f32
/// (`torch.tensor([x], requires_grad=True)`, the expression with torch's functions, `.sum().backward()`):
/// ordinary points and the edges that bite (0, ±inf, NaN, log(0), sqrt(0), x/0, ties, zero rows).
const PYTORCH: &[Row] = &[
    ("log(x)", [0.5, 0.0, -1.0, f32::INFINITY], &[-0.6931471824645996, -f32::INFINITY, f32::NAN, f32::INFINITY], [2.0, f32::INFINITY, -1.0, 0.0]),
    ("log1p(x)", [9.99999993922529e-09, 0.0, -1.0, 2.0], &[9.99999993922529e-09, 0.0, -f32::INFINITY, 1.0986123085021973], [1.0, 1.0, f32::INFINITY, 0.3333333432674408]),
    ("sqrt(x)", [4.0, 0.0, -1.0, f32::INFINITY], &[2.0, 0.0, f32::NAN, f32::INFINITY], [0.25, f32::INFINITY, f32::NAN, 0.0]),
    ("rsqrt(x)", [4.0, 0.0, 0.25, f32::INFINITY], &[0.5, f32::INFINITY, 2.0, 0.0], [-0.0625, -f32::INFINITY, -4.0, -0.0]),
    ("exp(x)", [1.0, 0.0, 89.0, -f32::INFINITY], &[2.7182817459106445, 1.0, f32::INFINITY, 0.0], [2.7182817459106445, 1.0, f32::INFINITY, 0.0]),
    ("x / 0", [1.0, 0.0, -2.0, f32::INFINITY], &[f32::INFINITY, f32::NAN, -f32::INFINITY, f32::INFINITY], [f32::INFINITY, f32::INFINITY, f32::INFINITY, f32::INFINITY]),
    ("abs(x)", [-2.0, 0.0, 3.0, -f32::INFINITY], &[2.0, 0.0, 3.0, f32::INFINITY], [-1.0, 0.0, 1.0, -1.0]),
    ("sigmoid(x)", [0.0, 2.0, -100.0, 100.0], &[0.5, 0.8807970285415649, 0.0, 1.0], [0.25, 0.10499362647533417, 0.0, 0.0]),
    ("logsigmoid(x)", [0.0, 2.0, -100.0, 100.0], &[-0.6931471824645996, -0.12692801654338837, -100.0, -3.923635700109488e-44], [0.5, 0.11920291930437088, 1.0, 3.783505853677006e-44]),
    ("tanh(x)", [0.0, 0.5, -20.0, f32::INFINITY], &[0.0, 0.46211716532707214, -1.0, 1.0], [1.0, 0.7864477038383484, 0.0, 0.0]),
    ("relu(x)", [-1.0, 0.0, 2.0, f32::NAN], &[0.0, 0.0, 2.0, f32::NAN], [0.0, 0.0, 1.0, 1.0]),
    ("gelu(x)", [-1.0, 0.0, 2.0, 0.5], &[-0.15865525603294373, 0.0, 1.9544997215270996, 0.3457312285900116], [-0.08331543207168579, 0.5, 1.085231900215149, 0.867495059967041]),
    ("softplus(x)", [-1.0, 0.0, 25.0, -100.0], &[0.3132616877555847, 0.6931471824645996, 25.0, 3.783505853677006e-44], [0.2689414322376251, 0.5, 1.0, 3.783505853677006e-44]),
    ("clamp(x, min=0, max=1)", [-1.0, 0.0, 0.5, 1.0], &[0.0, 0.0, 0.5, 1.0], [0.0, 0.0, 1.0, 0.0]),
    ("where(x > 0, sqrt(x), 0)", [-1.0, 0.0, 4.0, 1.0], &[0.0, 0.0, 2.0, 1.0], [f32::NAN, f32::NAN, 0.25, 0.5]),
    ("where(x > 0, log(x), x)", [-1.0, 0.0, 2.0, 1.0], &[-1.0, 0.0, 0.6931471824645996, 0.0], [1.0, f32::NAN, 0.5, 1.0]),
    ("x**2 - x*x", [3.0, 0.0, -2.0, 1.5], &[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]),
    ("-x**2", [3.0, 0.0, -2.0, 1.5], &[-9.0, -0.0, -4.0, -2.25], [-6.0, -0.0, 4.0, -3.0]),
    ("x ** 0.5", [4.0, 0.0, -1.0, 1.0], &[2.0, 0.0, f32::NAN, 1.0], [0.25, f32::INFINITY, f32::NAN, 0.5]),
    ("sum(x, dim=-1, keepdim=true) * x", [1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0], [20.0, 20.0, 20.0, 20.0]),
    ("mean(x)", [1.0, 2.0, 3.0, 4.0], &[2.5], [0.25, 0.25, 0.25, 0.25]),
    ("amax(x, dim=-1)", [1.0, 3.0, 3.0, 2.0], &[3.0], [0.0, 0.5, 0.5, 0.0]),
    ("amin(x, dim=-1)", [1.0, 1.0, 3.0, 2.0], &[1.0], [0.5, 0.5, 0.0, 0.0]),
    ("logsumexp(x, dim=-1)", [1.0, 2.0, 3.0, 4.0], &[4.440189838409424], [0.03205860033631325, 0.08714430779218674, 0.2368827909231186, 0.6439141631126404]),
    ("logsumexp(x, dim=-1)", [-f32::INFINITY, -f32::INFINITY, -f32::INFINITY, -f32::INFINITY], &[-f32::INFINITY], [f32::NAN, f32::NAN, f32::NAN, f32::NAN]),
    ("std(x, dim=-1)", [1.0, 2.0, 3.0, 4.0], &[1.29099440574646], [-0.3872983753681183, -0.12909945845603943, 0.12909945845603943, 0.3872983753681183]),
    ("std(x, dim=-1)", [2.0, 2.0, 2.0, 2.0], &[0.0], [0.0, 0.0, 0.0, 0.0]),
    ("var(x, dim=-1)", [1.0, 2.0, 3.0, 4.0], &[1.6666666269302368], [-1.0, -0.3333333432674408, 0.3333333432674408, 1.0]),
    ("norm(x, dim=-1)", [3.0, 4.0, 0.0, 0.0], &[5.0], [0.6000000238418579, 0.800000011920929, 0.0, 0.0]),
    ("norm(x, dim=-1)", [0.0, 0.0, 0.0, 0.0], &[0.0], [0.0, 0.0, 0.0, 0.0]),
    ("x / norm(x, dim=-1, keepdim=true)", [0.0, 0.0, 0.0, 0.0], &[f32::NAN, f32::NAN, f32::NAN, f32::NAN], [f32::NAN, f32::NAN, f32::NAN, f32::NAN]),
    (
        "softmax(x, dim=-1) * x",
        [1.0, 2.0, 3.0, 4.0],
        &[0.032058604061603546, 0.17428864538669586, 0.7106485366821289, 2.5756571292877197],
        [-0.04785236716270447, -0.04293190687894821, 0.12018182128667831, 0.9706023335456848],
    ),
    (
        "log_softmax(x, dim=-1) * x",
        [1.0, 2.0, 3.0, 4.0],
        &[-3.4401895999908447, -4.8803791999816895, -4.320569038391113, -1.7607587575912476],
        [-2.760775566101074, -1.3116328716278076, -0.8090177774429321, -2.8793323040008545],
    ),
    ("cumsum(x, dim=-1) * x", [1.0, 2.0, 3.0, 4.0], &[1.0, 6.0, 18.0, 40.0], [11.0, 12.0, 13.0, 14.0]),
    ("(x > 1) * x + (x <= 1) * 2", [1.0, 2.0, 0.0, f32::NAN], &[2.0, 2.0, 2.0, f32::NAN], [0.0, 1.0, 0.0, 0.0]),
];

/// Equal as PyTorch's values are: within 2 ulp-ish relative error, or the same non-finite value.
fn close(a: f32, b: f32) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-6 * b.abs().max(1e-30)
}

#[test]
fn every_function_matches_pytorchs_values_and_gradients() {
    for (text, x, value, grad) in PYTORCH {
        let (v, g) = run(text, x);
        assert!(v.len() == value.len() && v.iter().zip(*value).all(|(a, b)| close(*a, *b)), "{text} at {x:?}: value {v:?}, PyTorch {value:?}");
        assert!(g.iter().zip(grad).all(|(a, b)| close(*a, *b)), "{text} at {x:?}: gradient {g:?}, PyTorch {grad:?}");
    }
}

#[test]
fn a_focal_loss_expression_matches_pytorch_and_overflows_where_it_does() {
    // PyTorch 2.15, f32: p = [0.9, 0.2, 0.5] and [0.9, 0.2, 1.0] against y = [1, 0, 0], γ = 2,
    // `torch.mean(-y*(1-p)**g*torch.log(p)-(1-y)*p**g*torch.log(1-p))` and `.backward()`:
    // 0.06108871474862099, grad [-0.010727743618190289, 0.046419139951467514, 0.3977157473564148];
    // at p = 1 with y = 0 the loss is inf and that gradient inf (log(1 − p) = log 0).
    let spec = crate::scenario::LossSpec {
        kind: crate::scenario::LossKind::Expr,
        expr: Some("mean(-y * (1 - p)**gamma * log(p) - (1 - y) * p**gamma * log(1 - p))".into()),
        consts: BTreeMap::from([("gamma".to_string(), 2.0)]),
        ..Default::default()
    };
    let loss = crate::ops::loss::Loss(spec);
    let y = Tensor::new(&[[1f32], [0.0], [0.0]], &Device::Cpu).unwrap();
    for (last, value, grad) in [(0.5f32, 0.06108871474862099f32, 0.3977157473564148f32), (1.0, f32::INFINITY, f32::INFINITY)] {
        let p = Var::new(&[[0.9f32], [0.2], [last]], &Device::Cpu).unwrap();
        let l = loss.apply(p.as_tensor(), &y).unwrap();
        let g = l.backward().unwrap().get(p.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let v = l.to_scalar::<f32>().unwrap();
        assert!(close(v, value), "{v} vs PyTorch {value}");
        assert!(close(g[0], -0.010727743618190289) && close(g[1], 0.046419139951467514) && close(g[2], grad), "{g:?}");
    }
    assert_eq!(loss.torch_expr(), "torch.mean(((((-y) * ((1 - p) ** 2.0)) * torch.log(p)) - (((1 - y) * (p ** 2.0)) * torch.log((1 - p)))))");
    let bad = crate::ops::loss::expr::checked(&loss.0, flat(1), flat(1), None);
    assert!(bad.is_ok());
    let per_row = crate::scenario::LossSpec { expr: Some("(p - y)**2".into()), ..loss.0.clone() };
    let e = crate::ops::loss::expr::checked(&per_row, flat(1), flat(1), None).unwrap_err();
    assert!(e.contains("makes (batch, 1), and a loss is one number"), "{e}");
}

#[test]
fn a_layer_reads_earlier_named_outputs_and_exports_one_torch_line() {
    use crate::scenario::{plan, InShape, Init, Input, Layer, ModelSpec};
    let named = |expr: &str, name: Option<&str>| {
        let layer = Layer::Expr(Expr { expr: expr.into(), consts: BTreeMap::new() });
        match name {
            Some(n) => Layer::Tagged(Box::new(crate::scenario::Tagged { layer, name: Some(n.into()), precision: None })),
            None => layer,
        }
    };
    let layers = vec![named("x", Some("h")), Layer::Linear(crate::ops::linear::Linear { out: 3, init: None }), named("x * h + sum(h, dim=-1, keepdim=true)", None)];
    let spec = ModelSpec { init: Init::Torch, layers, init_scale: 1.0, code: None, onnx: None };
    let p = plan(&spec, InShape { features: 3, seq_len: None, vocab: None, image: None }).unwrap();
    assert_eq!(p.nodes[2].inputs, [Input::Node(1), Input::Node(0)], "the product reads the linear's output and `h`");
    assert_eq!(p.out, Shape::Flat(3));
    // A name read before it is given, and a shape that does not broadcast, are plan errors with columns.
    let spec2 = ModelSpec { layers: vec![named("x * g", None)], ..spec.clone() };
    let (key, m) = plan(&spec2, InShape { features: 3, seq_len: None, vocab: None, image: None }).unwrap_err();
    assert_eq!((key.as_str(), m.as_str()), ("layers.0", "column 5: unknown name `g` (the expression can read `x`, no named outputs, and no constants)"));
    let op = Expr { expr: "where(x > 0, log(x), clamp(x, min=-1))".into(), consts: BTreeMap::new() };
    assert_eq!(op.torch(), Torch::Expr("torch.where(((x > 0).to(x.dtype) != 0), torch.log(x), torch.clamp(x, min=-1))".into()));
    // Under autocast each node has its own class (`amp.rs`); the layer as a whole is on no list.
    assert_eq!((op.autocast(Part::Whole), op.rounding(Part::Whole)), (Autocast::Same, Rounding::HalfTensors));
}

#[test]
fn the_fuzz_targets_body_never_panics_on_odd_text() {
    let deep = format!("{}x{}", "(".repeat(500), ")".repeat(500));
    let minus = format!("{}x", "-".repeat(3000));
    let powers = format!("x{}", "**x".repeat(2000));
    for text in
        ["", ")", "x +", "sum(x, dim=(0, 1, 2, 3))", "reshape(h, (-1, 6)) @ transpose(x, 0, 1)", "1e999 * x", "f(", "x @ x", "x < x", "ñ + x", &deep, &minus, &powers, "where(x, h, 1)", "norm(x, p=3)"]
    {
        let _ = fuzz_one(text);
    }
    assert!(fuzz_one("softmax(h, dim=1) * mean(x, dim=0)"));
    assert!(!fuzz_one(&deep), "500 levels of parentheses are refused");
}

/// `mean(1 - cosine_similarity(p, y, dim=1, eps=1e-8))` over rows `p`, `y` in `dtype`: the loss
/// and the gradients wrt both, flattened.
fn cosine_loss(p: &[[f64; 3]], y: &[[f64; 3]], dtype: candle_core::DType) -> (f64, Vec<f64>, Vec<f64>) {
    let var = |v: &[[f64; 3]]| Var::from_tensor(&Tensor::from_vec(v.concat(), (v.len(), 3), &Device::Cpu).unwrap().to_dtype(dtype).unwrap()).unwrap();
    let (p, y) = (var(p), var(y));
    let spec = crate::scenario::LossSpec { kind: crate::scenario::LossKind::Expr, expr: Some("mean(1 - cosine_similarity(p, y, dim=1, eps=1e-8))".into()), ..Default::default() };
    let l = crate::ops::loss::Loss(spec).apply(p.as_tensor(), y.as_tensor()).unwrap();
    let g = l.backward().unwrap();
    let flat = |v: &Var| g.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap();
    (l.to_dtype(candle_core::DType::F64).unwrap().to_scalar::<f64>().unwrap(), flat(&p), flat(&y))
}

#[test]
fn cosine_similarity_clamps_each_norm_without_a_gradient_as_aten() {
    // PyTorch 2.15 (f64): F.cosine_similarity(x, y, dim=1, eps=1e-8) = [0.5962847939999438, 0,
    // 0.1, 0]: a zero row gives 0, a row of norm 1e-9 is divided by eps (1e-9 / 1e-8 = 0.1); the
    // gradient flows through the unclamped norm, so the zero row's is y / (eps ‖y‖) / 4.
    let x = [[1.0, 2.0, 2.0], [0.0, 0.0, 0.0], [1e-9, 0.0, 0.0], [3.0, -4.0, 0.0]];
    let y = [[2.0, 0.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]];
    let (l, gx, gy) = cosine_loss(&x, &y, candle_core::DType::F64);
    let want = 1.0 - (0.5962847939999438 + 0.1) / 4.0;
    assert!((l - want).abs() < 1e-15, "{l} vs {want}");
    let wx = [-0.057972132749994555, 0.033126932999996875, -0.0041408666249996215, -17677669.529663686, -17677669.529663686, 0.0, -22500000.0, 0.0, 0.0, 0.0, -0.0, 0.0];
    let wy = [0.022360679774997887, -0.07453559924999298, -0.04472135954999579, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -15000000.0, 20000000.0, 0.0];
    for (a, b) in gx.iter().zip(wx).chain(gy.iter().zip(wy)) {
        assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{gx:?} {gy:?}");
    }
    assert_eq!(
        crate::ops::loss::Loss(crate::scenario::LossSpec { kind: crate::scenario::LossKind::Expr, expr: Some("mean(1 - cosine_similarity(p, y))".into()), ..Default::default() }).torch_expr(),
        "torch.mean((1 - torch.cosine_similarity(p, y)))"
    );
    let e = compile("cosine_similarity(x, x, dim=2)", &[("x".into(), flat(3))], &BTreeMap::new()).unwrap_err();
    assert!(e.contains("dimension 2 is out of range"), "{e}");
}

#[test]
fn cosine_similarity_of_half_rows_takes_its_norms_in_f32() {
    // PyTorch 2.15, f16: rows [300, 300] (300² + 300² = 180000 > 65504, but the norm is taken in
    // f32: 424.26) and [1e-4, 0] against [1, 1] and [1, 0]: similarities [1, 1], loss 0, the
    // gradient wrt the first row −4.76837158203125e-07 each, wrt the targets 0. nanhunt computes
    // in f32 and rounds once, so its gradients agree to within f16's rounding of terms near 1e-3.
    let (l, gx, gy) = cosine_loss(&[[300.0, 300.0, 0.0], [1e-4, 0.0, 0.0]], &[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]], candle_core::DType::F16);
    assert_eq!(l, 0.0);
    let want = [-4.76837158203125e-07, -4.76837158203125e-07, 0.0, 0.0, 0.0, 0.0];
    assert!(gx.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-5), "{gx:?}");
    assert!(gy.iter().all(|v| v.abs() < 1e-5), "{gy:?}");
    // eps = 1e-8 is 0 in f16: a zero target row is 0/0 = NaN (PyTorch 2.15: nan).
    let (l, _, _) = cosine_loss(&[[1.0, 2.0, 0.0], [0.5, 0.1, 0.0]], &[[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]], candle_core::DType::F16);
    assert!(l.is_nan(), "{l}");
}

/// `text` over a column `x` of `rows` copies of `v` in `dtype`: its value (flattened) and the
/// gradient of its sum wrt `x`'s first row.
fn column_in(text: &str, rows: usize, v: &[f64], dtype: candle_core::DType) -> (Vec<f64>, f64) {
    let values: Vec<f64> = (0..rows).map(|i| v[i % v.len()]).collect();
    let t = Tensor::from_vec(values, (rows, 1), &Device::Cpu).unwrap().to_dtype(dtype).unwrap();
    let var = Var::from_tensor(&t).unwrap();
    let c = compile(text, &[("x".into(), flat(1))], &BTreeMap::new()).unwrap_or_else(|e| panic!("{text}: {e}"));
    let y = eval::eval(&c.ir, &[var.as_tensor().clone()], dtype).unwrap();
    let g = y.to_dtype(candle_core::DType::F32).unwrap().sum_all().unwrap().backward().unwrap();
    let first = g.get(var.as_tensor()).map_or(0.0, |t| t.to_dtype(candle_core::DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap()[0]);
    (y.to_dtype(candle_core::DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap(), first)
}

#[test]
fn half_reductions_accumulate_in_f32_as_pytorchs() {
    // PyTorch 2.15 on the CPU (its reductions accumulate half values in f32 and round once):
    // f16 mean of 66 rows of 1000 = 1000 (a half running sum passes 65504 at row 66), their sum
    // inf; bf16 sum of 512 ones = 512 and mean 1 (a bf16 running sum stalls at 256), cumsum's
    // last 512, logsumexp of 512 zeros 6.25; f16 std and var of 33 pairs [1000, 1001]
    // 0.50390625 and 0.25390625; f16 norm of 300 rows of 20 (sum of squares 120000) 346.5.
    // Gradients at the first row: the f16 mean's 0.0151519775390625 (1/66 rounded), std's
    // −0.01526641845703125, var's −0.015380859375 (`var_backward` in f16 from the rounded
    // mean), the norm's 0.057708740234375 (from the rounded norm 346.5).
    use candle_core::DType::{BF16, F16};
    let value = |text: &str, rows: usize, v: &[f64], dt| column_in(text, rows, v, dt).0;
    assert_eq!(column_in("mean(x, dim=0)", 66, &[1000.0], F16), (vec![1000.0], 0.0151519775390625));
    assert_eq!(value("sum(x, dim=0)", 66, &[1000.0], F16), [f64::INFINITY]);
    assert_eq!(value("sum(x, dim=0)", 512, &[1.0], BF16), [512.0]);
    assert_eq!(value("mean(x, dim=0)", 512, &[1.0], BF16), [1.0]);
    assert_eq!(value("cumsum(x, dim=0)", 512, &[1.0], BF16)[511], 512.0);
    assert_eq!(value("logsumexp(x * 0, dim=0)", 512, &[1.0], BF16), [6.25]);
    assert_eq!(column_in("std(x, dim=0)", 66, &[1000.0, 1001.0], F16), (vec![0.50390625], -0.01526641845703125));
    assert_eq!(column_in("var(x, dim=0)", 66, &[1000.0, 1001.0], F16), (vec![0.25390625], -0.015380859375));
    assert_eq!(column_in("norm(x, dim=0)", 300, &[20.0], F16), (vec![346.5], 0.057708740234375));
}

/// A layer stack of `(expression, name, consts)` layers over 3 features, planned.
/// A layer of [`plan_of`]: its expression, its output's name, its constants.
type Spec<'a> = (&'a str, Option<&'a str>, &'a [(&'a str, f64)]);

fn plan_of(layers: &[Spec<'_>]) -> std::result::Result<crate::scenario::Plan, (String, String)> {
    use crate::scenario::{plan, InShape, Init, Layer, ModelSpec, Tagged};
    let layers = layers
        .iter()
        .map(|(e, name, consts)| {
            let layer = Layer::Expr(Expr { expr: (*e).into(), consts: consts.iter().map(|(k, v)| ((*k).to_string(), *v)).collect() });
            match name {
                Some(n) => Layer::Tagged(Box::new(Tagged { layer, name: Some((*n).into()), precision: None })),
                None => layer,
            }
        })
        .collect();
    plan(&ModelSpec { init: Init::Torch, layers, init_scale: 1.0, code: None, onnx: None }, InShape { features: 3, seq_len: None, vocab: None, image: None })
}

#[test]
fn an_unknown_name_suggests_and_lists_what_can_be_read() {
    let (key, m) = plan_of(&[("relu(x)", Some("gate"), &[]), ("x * 2", Some("h"), &[]), ("x * gaet", None, &[("eps", 1e-6)])]).unwrap_err();
    assert_eq!(key, "layers.2");
    assert_eq!(m, "column 5: unknown name `gaet`, did you mean `gate`? (the expression can read `x`, the named outputs `gate`, `h`, and the constants `eps`)");
    // A missing name before a found one: the found one keeps its own shape (no misaligned inputs).
    let (_, m) = plan_of(&[("x", Some("a"), &[]), ("gaet * a", None, &[])]).unwrap_err();
    assert!(m.starts_with("column 1: unknown name `gaet`") && m.contains("the named outputs `a`"), "{m}");
    // A loss reads p, y (and mask): no named outputs.
    let inputs = [("p".to_string(), flat(3)), ("y".to_string(), flat(3))];
    let m = compile("mean((p - yy) ** 2)", &inputs, &BTreeMap::new()).unwrap_err();
    assert_eq!(m, "column 11: unknown name `yy` (the expression can read `p`, `y`, no named outputs, and no constants)");
}

#[test]
fn a_constant_named_as_an_output_is_refused_at_the_constant() {
    let (key, m) = plan_of(&[("x * 2", Some("T"), &[]), ("x / T", None, &[("T", 0.07)])]).unwrap_err();
    assert_eq!(key, "layers.1.consts.T");
    assert!(m.contains("constant `T`") && m.contains("name = \"T\""), "{m}");
    // Without the clash both plan.
    plan_of(&[("x * 2", Some("U"), &[]), ("x / T + U", None, &[("T", 0.07)])]).unwrap();
}

#[test]
fn dims_are_checked_as_pytorch_checks_them() {
    // PyTorch 2.15: torch.sum(x, dim=(0, 0)) -> RuntimeError "dim 0 appears multiple times in the list of dims";
    // so for dim=(-1, 1) on a 2-d tensor ("dim 1 ..."), and for mean, std, amax, logsumexp, norm.
    assert_eq!(err("sum(x, dim=(0, 0))"), "column 1: dim 0 appears multiple times in the list of dims (PyTorch refuses it)");
    assert_eq!(err("x - mean(x, dim=(-1, 1), keepdim=true)"), "column 5: dim 1 appears multiple times in the list of dims (PyTorch refuses it)");
    for f in ["std", "amax", "logsumexp", "norm", "var", "amin"] {
        assert!(err(&format!("x * {f}(x, dim=(1, 1))")).contains("dim 1 appears multiple times"), "{f}");
    }
    // PyTorch 2.15: torch.cumsum(x, dim=(0, 1)) -> TypeError "cumsum(): argument 'dim' must be int, not tuple";
    // softmax, log_softmax and cosine_similarity alike; softmax(x, dim=1.5) "... must be int, not float";
    // transpose(x, 0.5, 1) "argument 'dim0' (position 2) must be int, not float"; softmax(x, dim=True) "... not bool".
    assert_eq!(err("cumsum(x, dim=(0, 1))"), "column 15: cumsum(): argument 'dim' must be int, not tuple (PyTorch's TypeError)");
    assert!(err("softmax(x, dim=(0, 1))").contains("softmax(): argument 'dim' must be int, not tuple"));
    assert!(err("log_softmax(x, dim=(1,))").contains("log_softmax(): argument 'dim' must be int, not tuple"));
    assert!(err("x * cosine_similarity(x, x, dim=(0, 1))").contains("cosine_similarity(): argument 'dim' must be int, not tuple"));
    assert_eq!(err("softmax(x, dim=1.5)"), "column 16: softmax(): argument 'dim' must be int, not float (PyTorch's TypeError)");
    assert!(err("softmax(x, dim=true)").contains("must be int, not bool"));
    assert!(err("transpose(x, 0.5, 1)").contains("transpose(): argument 'dim0' must be int, not float"));
    // A reduction takes a tuple, of ints: PyTorch 2.15's sum(x, dim=1.5) is a TypeError, and so is dim=(0, 1.5).
    assert!(err("sum(x, dim=1.5)").contains("sum(): argument 'dim' must be int or a tuple of ints, not float"));
    assert!(err("sum(x, dim=(0, 1.5))").contains("sum(): argument 'dim' must be a tuple of ints"));
    // What PyTorch accepts still checks: distinct dims, and one int where one is taken.
    compile("x * sum(x, dim=(0, -1))", &[("x".into(), flat(3))], &BTreeMap::new()).unwrap();
    compile("softmax(x, dim=-1) + cumsum(x, dim=1)", &[("x".into(), flat(3))], &BTreeMap::new()).unwrap();
}
