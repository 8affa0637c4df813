//! Every ONNX op an imported graph compiles into (`ops::onnx::Kind`) against its PyTorch form:
//! the `Onnx` module `export-torch` writes into repro.py for the node (`OnnxNode::torch_module`,
//! the template's own class, loaded from `report/torch/repro.py`) computes the same values as
//! nanhunt's forward, in f64, and the same gradients of `Σ y·r` (`r_i = sin(i + 1)`) with respect
//! to each operand read from the graph or a parameter (logic ops carry none, as PyTorch's). Operands come from earlier nodes, the
//! node's own parameters (named with dots, which the module's attributes map to `_`) and folded
//! constants. Needs PyTorch 2.15 (feature `torch-tests`): it never passes vacuously.
#![cfg(feature = "torch-tests")]

mod common;

use candle_core::{Device, Tensor, Var};
use nanhunt::ops::onnx::{CastTo, Kind, Lit, OnnxNode, Src, Weight, WeightRole};
use serde_json::{json, Value};

/// Where an operand comes from.
#[derive(Clone, Copy, PartialEq)]
enum From {
    /// An earlier node's output.
    V,
    /// The node's parameter.
    P,
    /// A folded constant.
    C,
}

/// An operand: where it comes from, its dims and values.
type Operand = (From, Vec<usize>, Vec<f64>);

fn op(from: From, dims: &[usize], values: &[f64]) -> Operand {
    (from, dims.to_vec(), values.to_vec())
}

/// Values `start, start + step, ...` of `dims`.
fn ramp(dims: &[usize], start: f64, step: f64) -> Operand {
    let n: usize = dims.iter().product();
    op(From::V, dims, &(0..n).map(|i| start + step * i as f64).collect::<Vec<_>>())
}

/// The node reading `operands` (the dropout multiplier is the mask's `1/(1 − p)` where kept).
fn node(kind: &Kind, operands: &[Operand]) -> OnnxNode {
    let mut params = Vec::new();
    let inputs = operands
        .iter()
        .enumerate()
        .map(|(i, (from, dims, values))| match from {
            From::V => Src::Value(format!("v{i}")),
            From::C => Src::Const(Lit { dims: dims.clone(), values: values.clone() }),
            From::P => {
                params.push(Weight { name: format!("w.{i}"), shape: dims.clone(), role: WeightRole::Weight });
                Src::Param(params.len() - 1)
            }
        })
        .collect();
    OnnxNode { op: kind.clone(), inputs, params, name: "out".into(), dims: Vec::new(), batch: false }
}

/// nanhunt's output and each operand's gradient of `Σ y·r`, flat.
fn ours(kind: &Kind, operands: &[Operand], mask: Option<&[f64]>, p: f64) -> (Vec<f64>, Vec<Vec<f64>>) {
    let vars: Vec<Var> = operands.iter().map(|(_, d, v)| Var::from_tensor(&Tensor::from_vec(v.clone(), d.as_slice(), &Device::Cpu).unwrap()).unwrap()).collect();
    let xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let mut drop = |t: &Tensor, _: f64| Ok(mask.map(|m| Tensor::from_vec(m.iter().map(|k| k / (1.0 - p)).collect::<Vec<_>>(), t.shape(), &Device::Cpu).unwrap()));
    let y = kind.eval(&xs, &mut drop).unwrap();
    let n = y.elem_count();
    let r = Tensor::from_vec((0..n).map(|i| ((i + 1) as f64).sin()).collect::<Vec<_>>(), y.shape(), &Device::Cpu).unwrap();
    let grads = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap();
    let g = vars.iter().zip(operands).map(|(v, (from, _, vals))| if *from == From::C { Vec::new() } else { grads.get(v.as_tensor()).map_or_else(|| vec![0.0; vals.len()], flat) }).collect();
    (flat(&y), g)
}

/// Builds each case's module from its torch form, sets its operands, runs it and its backward.
const TORCH: &str = r#"
import json, math, sys
import torch
template = open(sys.argv[1]).read()
scenario = {"dtype": "f64", "precision": "f32", "nodes": [{"name": "n", "key": "n", "autocast": "same"}], "autocast_f32": []}
g = {"__name__": "repro"}
exec(template.replace("@SCENARIO@", json.dumps(scenario)), g)
clean = lambda v: v if math.isfinite(v) else str(v)
out = []
for case in json.load(open(sys.argv[2])):
    m = eval(case["module"], g, {"spec": None, "width": 0, "seq": None, "name": "n"})[0].double()
    named, leaves = {}, []
    for i, (src, dims, values) in enumerate(case["operands"]):
        t = torch.tensor([float(v) for v in values], dtype=torch.float64).reshape(dims)
        if src == "v":
            t.requires_grad_(True)
            named[f"v{i}"] = t
            leaves.append(t)
        elif src == "p":
            p = getattr(m, case["attrs"].pop(0))
            with torch.no_grad():
                p.copy_(t)
            leaves.append(p)
        else:
            leaves.append(None)
    g["MASKS"].clear()
    if case["mask"] is not None:
        g["MASKS"]["n"] = torch.tensor(case["mask"], dtype=torch.float64)
    y = m(None, named, None)
    r = torch.sin(torch.arange(1, y.numel() + 1, dtype=torch.float64)).reshape(y.shape)
    if y.requires_grad:
        (y * r).sum().backward()
    grads = [[] if t is None else ([0.0] * t.numel() if t.grad is None else [clean(v) for v in t.grad.flatten().tolist()]) for t in leaves]
    out.append({"y": [clean(v) for v in y.detach().flatten().tolist()], "grads": grads})
print(json.dumps(out))
"#;

fn num(v: &Value) -> f64 {
    // PyTorch's non-finite values come as Python writes them: `nan`, `inf`, `-inf`.
    v.as_f64().unwrap_or_else(|| v.as_str().unwrap().parse().unwrap())
}

/// `a` is `b` within `rel` (NaN is NaN).
fn same(a: f64, b: f64, rel: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= rel * (1.0 + b.abs())
}

/// Values agree to 1e-10; gradients to 1e-6, since Candle's backward of the exact GELU differs
/// from PyTorch's by about 1e-7 relative (measured here, 2026-12-06), below f32's resolution.
const VALUES: f64 = 1e-10;
const GRADIENTS: f64 = 1e-6;

/// The cases: each kind on operands worked so that every branch of its semantics is reached.
fn cases() -> Vec<(Kind, Vec<Operand>, Option<Vec<f64>>)> {
    let inf = f64::NEG_INFINITY;
    let a23 = ramp(&[2, 3], -1.2, 0.7);
    let pos = ramp(&[2, 3], 0.3, 0.55);
    let mask01 = |v: &[f64]| op(From::V, &[v.len()], v);
    let one = |k: Kind, x: &Operand| (k, vec![x.clone()], None);
    let mut c = vec![
        (Kind::Add, vec![a23.clone(), ramp(&[3], 0.5, -0.25)], None),
        (Kind::Sub, vec![a23.clone(), op(From::C, &[1], &[0.75])], None),
        (Kind::Mul, vec![a23.clone(), ramp(&[2, 1], 2.0, -3.0)], None),
        (Kind::Div, vec![a23.clone(), op(From::V, &[3], &[2.0, 0.0, -0.5])], None),
        one(Kind::Pow { exponent: 2.0 }, &a23),
        one(Kind::Pow { exponent: 0.5 }, &pos),
        (Kind::Equal, vec![mask01(&[0.0, 1.0, 2.0]), op(From::C, &[1], &[1.0])], None),
        (Kind::Less, vec![a23.clone(), op(From::C, &[1], &[0.2])], None),
        (Kind::Greater, vec![a23.clone(), op(From::C, &[1], &[0.2])], None),
        (Kind::And, vec![mask01(&[0.0, 1.0, 1.0, 0.0]), mask01(&[0.0, 0.0, 1.0, 1.0])], None),
        (Kind::Or, vec![mask01(&[0.0, 1.0, 1.0, 0.0]), mask01(&[0.0, 0.0, 1.0, 1.0])], None),
        one(Kind::Not, &mask01(&[0.0, 1.0])),
        (Kind::Where, vec![op(From::C, &[3], &[1.0, 0.0, 1.0]), a23.clone(), ramp(&[2, 3], 5.0, 1.0)], None),
    ];
    for k in [Kind::Neg, Kind::Reciprocal, Kind::Erf, Kind::Exp, Kind::Tanh, Kind::Sigmoid, Kind::Relu, Kind::Abs, Kind::Gelu] {
        c.push(one(k, &a23));
    }
    c.push(one(Kind::Sqrt, &pos));
    c.push(one(Kind::Log, &pos));
    let masked = |axis, log, on, add| Kind::Masked { axis, log, fill: inf, on, add };
    c.extend([
        (Kind::MatMul, vec![ramp(&[2, 2, 3], -1.0, 0.3), op(From::P, &[3, 2], &[0.5, -1.0, 2.0, 0.25, -0.75, 1.5])], None),
        (Kind::Gemm { alpha: 0.5, beta: 2.0, trans_a: false, trans_b: true }, vec![a23.clone(), ramp(&[4, 3], 0.1, 0.2), op(From::P, &[4], &[1.0, -1.0, 0.5, 0.0])], None),
        (Kind::Gemm { alpha: 1.0, beta: 1.0, trans_a: true, trans_b: false }, vec![ramp(&[3, 2], 0.1, 0.2), ramp(&[3, 4], -0.5, 0.1), ramp(&[4], 0.0, 1.0)], None),
        one(Kind::Softmax { axis: 0 }, &a23),
        one(Kind::LogSoftmax { axis: -1 }, &a23),
        // Row 1 fully masked: NaN in both, its gradient too.
        (masked(-1, false, true, false), vec![a23.clone(), op(From::V, &[2, 3], &[0.0, 1.0, 0.0, 1.0, 1.0, 1.0])], None),
        (masked(1, true, false, false), vec![a23.clone(), op(From::C, &[1, 3], &[1.0, 0.0, 1.0])], None),
        (masked(-1, false, true, true), vec![a23.clone(), op(From::C, &[3], &[0.0, inf, 0.0])], None),
        (Kind::LayerNorm { eps: 1e-5 }, vec![ramp(&[2, 4], -2.0, 0.9), op(From::P, &[4], &[1.0, 0.5, -1.0, 2.0]), op(From::P, &[4], &[0.0, 0.1, 0.2, 0.3])], None),
        one(Kind::ReduceMean { axes: vec![1], keepdims: true }, &a23),
        one(Kind::ReduceSum { axes: vec![], keepdims: false }, &a23),
        one(Kind::ReduceSum { axes: vec![-1, 0], keepdims: false }, &ramp(&[2, 3, 2], 0.0, 1.0)),
        one(Kind::Transpose { perm: vec![1, 0, 2] }, &ramp(&[2, 3, 2], 0.0, 1.0)),
        one(Kind::Reshape { shape: vec![0, -1] }, &ramp(&[2, 3, 2], 0.0, 1.0)),
        one(Kind::Reshape { shape: vec![3, 0, 2] }, &ramp(&[2, 2, 3], 0.0, 1.0)),
        one(Kind::Unsqueeze { axes: vec![0, -1] }, &a23),
        one(Kind::Unsqueeze { axes: vec![3, -3] }, &a23),
        one(Kind::Squeeze { axes: vec![1] }, &ramp(&[2, 1, 3], 0.0, 1.0)),
        one(Kind::Squeeze { axes: vec![] }, &ramp(&[1, 3, 1], 0.0, 1.0)),
        one(Kind::Expand { shape: vec![2, 1, 3] }, &ramp(&[1, 3], 0.0, 1.0)),
        one(Kind::Slice { starts: vec![1, -2], ends: vec![i64::MAX, 3], axes: vec![0, -1] }, &ramp(&[3, 4], 0.0, 1.0)),
        one(Kind::Slice { starts: vec![-9], ends: vec![2], axes: vec![] }, &ramp(&[3, 2], 0.0, 1.0)),
        (Kind::Concat { axis: -1 }, vec![ramp(&[2, 1], 0.0, 1.0), ramp(&[2, 2], 5.0, 1.0), op(From::C, &[2, 1], &[9.0, 8.0])], None),
        one(Kind::Narrow { axis: -1, start: 1, len: 2 }, &a23),
        (Kind::Gather { axis: 0 }, vec![op(From::P, &[4, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]), op(From::V, &[2, 2], &[3.0, 0.0, -1.0, 3.0])], None),
        (Kind::Gather { axis: -1 }, vec![a23.clone(), op(From::C, &[2], &[2.0, 0.0])], None),
        one(Kind::Cast { to: CastTo::Float }, &a23),
        one(Kind::Cast { to: CastTo::Bool }, &op(From::V, &[3], &[-1.5, 0.0, 2.7])),
        one(Kind::Cast { to: CastTo::Int }, &op(From::V, &[3], &[-1.5, 0.0, 2.7])),
        one(Kind::Identity, &a23),
        one(Kind::Trilu { upper: true, k: 1 }, &ramp(&[2, 3, 3], -4.0, 0.5)),
        one(Kind::Trilu { upper: false, k: 0 }, &op(From::V, &[2, 2], &[inf, inf, inf, inf])),
        (Kind::Dropout { p: 0.25 }, vec![a23.clone()], Some(vec![1.0, 0.0, 1.0, 1.0, 0.0, 1.0])),
    ]);
    c
}

#[test]
fn every_onnx_kind_computes_its_values_and_gradients_as_its_pytorch_form() {
    let cases = cases();
    let json_cases: Vec<Value> = cases
        .iter()
        .map(|(k, operands, mask)| {
            let n = node(k, operands);
            let src = |f: From| match f {
                From::V => "v",
                From::P => "p",
                From::C => "c",
            };
            json!({ "module": n.torch_module(), "attrs": n.attrs(), "operands": operands.iter().map(|(f, d, v)| json!([src(*f), d, v.iter().map(|x| if x.is_finite() { json!(x) } else { json!(x.to_string()) }).collect::<Vec<_>>()])).collect::<Vec<_>>(), "mask": mask })
        })
        .collect();
    let dir = common::tempdir();
    let path = common::write(dir.path(), "cases.json", &serde_json::to_string(&json_cases).unwrap());
    let template = common::repo().join("harness/src/report/torch/repro.py");
    let out = common::output_within(std::process::Command::new(common::torch_python()).arg("-c").arg(TORCH).arg(template).arg(path), std::time::Duration::from_secs(300));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let theirs: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(theirs.len(), cases.len());
    for ((k, operands, mask), t) in cases.iter().zip(&theirs) {
        let p = if let Kind::Dropout { p } = k { *p } else { 0.0 };
        let (y, grads) = ours(k, operands, mask.as_deref(), p);
        let ty: Vec<f64> = t["y"].as_array().unwrap().iter().map(num).collect();
        assert_eq!(y.len(), ty.len(), "{k:?}: {y:?} against PyTorch's {ty:?}");
        assert!(y.iter().zip(&ty).all(|(a, b)| same(*a, *b, VALUES)), "{k:?}: {y:?} against PyTorch's {ty:?}");
        for (i, (g, tg)) in grads.iter().zip(t["grads"].as_array().unwrap()).enumerate() {
            let tg: Vec<f64> = tg.as_array().unwrap().iter().map(num).collect();
            assert!(g.len() == tg.len() && g.iter().zip(&tg).all(|(a, b)| same(*a, *b, GRADIENTS)), "{k:?} operand {i}'s gradient: {g:?} against PyTorch's {tg:?}");
        }
    }
}
