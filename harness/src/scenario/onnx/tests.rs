//! Tests of the ONNX loader and compiler on graphs built here with prost (values by hand
//! arithmetic) and on `scenarios/onnx/mlp.onnx` (values printed by PyTorch 2.15).

use prost::Message;

use super::proto::{tensor_proto::DataType, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, ValueInfoProto};
use super::{compile, load, parse, FloatType, Values};
use crate::scenario::Layer;

fn tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto { name: Some(name.into()), dims: dims.to_vec(), data_type: Some(DataType::Float as i32), float_data: data.to_vec(), ..Default::default() }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    let scopes = StringStringEntryProto { key: Some("pkg.torch.onnx.name_scopes".into()), value: Some(format!("['', 'block', '{}']", op.to_lowercase())) };
    NodeProto {
        name: Some(name.into()),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        metadata_props: vec![scopes],
        ..Default::default()
    }
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), i: Some(i), r#type: Some(2), ..Default::default() }
}

fn model(opset: i64, nodes: Vec<NodeProto>, inits: Vec<TensorProto>, out: &str) -> Vec<u8> {
    let vi = |n: &str| ValueInfoProto { name: Some(n.into()), ..Default::default() };
    let graph = GraphProto { node: nodes, initializer: inits, input: vec![vi("x")], output: vec![vi(out)], ..Default::default() };
    ModelProto { ir_version: Some(10), opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }], graph: Some(graph), ..Default::default() }.encode_to_vec()
}

/// `Gemm(x, W (out=3, in=2), b, transB=1)`, then `Relu`.
fn gemm_relu(opset: i64) -> Vec<u8> {
    let w = tensor("fc.weight", &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = tensor("fc.bias", &[3], &[0.5, -0.5, 0.0]);
    let nodes = vec![node("Gemm", "node_linear", &["x", "fc.weight", "fc.bias"], &["h"], vec![int_attr("transB", 1)]), node("Relu", "node_relu", &["h"], &["y"], vec![])];
    model(opset, nodes, vec![w, b], "y")
}

#[test]
fn a_gemm_with_transposed_weight_compiles_to_a_linear_layer_holding_its_transpose() {
    let m = parse(&gemm_relu(18), None, 16).unwrap();
    assert_eq!((m.opset, m.inputs.len(), m.nodes[0].module.as_deref()), (18, 1, Some("block.gemm")));
    let c = compile(&m).unwrap();
    assert!(matches!(c.layers[..], [Layer::Linear(ref l), Layer::Relu(_)] if l.out == 3), "{:?}", c.layers);
    assert_eq!(c.names, ["block.gemm", "block.relu"]);
    // PyTorch's weight [[1,2],[3,4],[5,6]] (out, in) as nanhunt's (in, out): [[1,3,5],[2,4,6]].
    assert_eq!(c.params[0], ("fc.weight".to_string(), vec![2, 3], vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0]));
    assert_eq!(c.params[1], ("fc.bias".to_string(), vec![3], vec![0.5, -0.5, 0.0]));
}

#[test]
fn matmul_then_add_is_a_linear_layer_and_unsupported_ops_are_listed_at_once() {
    let w = tensor("w", &[2, 1], &[7.0, 8.0]);
    let b = tensor("b", &[1], &[9.0]);
    let nodes = vec![node("MatMul", "mm", &["x", "w"], &["h"], vec![]), node("Add", "add", &["h", "b"], &["y"], vec![])];
    let c = compile(&parse(&model(20, nodes, vec![w.clone(), b.clone()], "y"), None, 16).unwrap()).unwrap();
    assert_eq!(c.params, [("w".to_string(), vec![2, 1], vec![7.0, 8.0]), ("b".to_string(), vec![1], vec![9.0])]);
    let nodes = vec![node("MatMul", "mm", &["x", "w"], &["h"], vec![]), node("Atan", "e1", &["h"], &["z"], vec![]), node("NonZero", "t1", &["z"], &["y"], vec![])];
    let err = compile(&parse(&model(20, nodes, vec![w, b], "y"), None, 16).unwrap()).unwrap_err();
    assert!(err.contains("Atan node `e1` (module `block.atan`)") && err.contains("NonZero node `t1` (module `block.nonzero`)"), "{err}");
}

#[test]
fn float16_bfloat16_and_float64_initializers_decode_from_raw_and_typed_fields() {
    let mut f16 = tensor("a", &[2], &[]);
    f16.data_type = Some(DataType::Float16 as i32);
    // 1.5 is 0x3E00 in float16, -2 is 0xC000.
    f16.raw_data = Some(vec![0x00, 0x3E, 0x00, 0xC0]);
    let mut bf16 = tensor("b", &[1], &[]);
    bf16.data_type = Some(DataType::Bfloat16 as i32);
    // bfloat16 0x4049 is 3.140625 (the top half of f32 3.140625 = 0x40490000).
    bf16.int32_data = vec![0x4049];
    let mut f64t = tensor("c", &[1], &[]);
    f64t.data_type = Some(DataType::Double as i32);
    f64t.double_data = vec![0.1];
    let m = parse(&model(17, vec![node("Relu", "r", &["x"], &["y"], vec![])], vec![f16, bf16, f64t], "y"), None, 16).unwrap();
    assert_eq!(m.tensors["a"].values, Values::Float(vec![1.5, -2.0], FloatType::F16));
    assert_eq!(m.tensors["b"].values, Values::Float(vec![3.140625], FloatType::Bf16));
    assert_eq!(m.tensors["c"].values, Values::Float(vec![0.1], FloatType::F64));
}

#[test]
fn bad_files_are_errors_naming_what_is_wrong() {
    let good = gemm_relu(18);
    let err = |bytes: &[u8]| parse(bytes, None, 16).unwrap_err();
    assert!(err(&good[..good.len() / 2]).contains("not an ONNX model"), "{}", err(&good[..good.len() / 2]));
    assert!(err(b"\xff\xff\xff\xff garbage").contains("not an ONNX model"));
    assert!(err(&gemm_relu(13)).contains("opset 13 is not one nanhunt imports (17–20)"));
    // A cycle: a reads b, b reads a.
    let cyc = vec![node("Relu", "a", &["b"], &["a_out"], vec![]), node("Relu", "b", &["a_out"], &["b"], vec![]), node("Relu", "c", &["x"], &["y"], vec![])];
    assert!(err(&model(18, cyc, vec![], "y")).contains("cycle through the nodes `a`, `b`"));
    let dangling = vec![node("Relu", "r", &["nowhere"], &["y"], vec![])];
    assert!(err(&model(18, dangling, vec![], "y")).contains("reads `nowhere`, which nothing produces"));
    // Dims that promise more values than the data holds.
    let short = tensor("w", &[2, 2], &[1.0]);
    assert!(err(&model(18, vec![node("Relu", "r", &["x"], &["y"], vec![])], vec![short], "y")).contains("holds 1 values, but its dims [2, 2] need 4"));
}

#[test]
fn a_huge_initializer_is_refused_by_the_memory_limit_before_it_is_read() {
    // 2^40 values declared, no data: the budget refuses before decoding (or allocating) anything.
    let mut huge = tensor("big", &[1 << 20, 1 << 20], &[]);
    huge.data_location = Some(1);
    huge.external_data = vec![StringStringEntryProto { key: Some("location".into()), value: Some("big.bin".into()) }];
    let e = parse(&model(18, vec![node("Relu", "r", &["x"], &["y"], vec![])], vec![huge], "y"), None, 16).unwrap_err();
    assert!(e.contains("tensor `big` needs 8388608 MiB, over what is left of the memory limit of 16 MiB"), "{e}");
}

#[test]
fn external_data_is_read_from_the_models_folder_only() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("m");
    std::fs::create_dir(&inner).unwrap();
    let values: Vec<u8> = [2.0f32, -1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(inner.join("m.onnx.data"), [&[0u8; 4][..], &values].concat()).unwrap();
    std::fs::write(dir.path().join("outside.data"), &values).unwrap();
    let ext = |location: &str, offset: &str| {
        let mut t = tensor("w", &[2], &[]);
        t.data_location = Some(1);
        let kv = |k: &str, v: &str| StringStringEntryProto { key: Some(k.into()), value: Some(v.into()) };
        t.external_data = vec![kv("location", location), kv("offset", offset), kv("length", "8")];
        model(18, vec![node("Relu", "r", &["x"], &["y"], vec![])], vec![t], "y")
    };
    std::fs::write(inner.join("m.onnx"), ext("m.onnx.data", "4")).unwrap();
    let m = load(&inner.join("m.onnx"), 16).unwrap();
    assert_eq!(m.tensors["w"].values, Values::Float(vec![2.0, -1.0], FloatType::F32));
    std::fs::write(inner.join("bad.onnx"), ext("../outside.data", "0")).unwrap();
    let e = load(&inner.join("bad.onnx"), 16).unwrap_err().to_string();
    assert!(e.contains("bad.onnx: cannot import the ONNX model: tensor `w`: its external data file `../outside.data` lies outside the model's folder"), "{e}");
    std::fs::write(inner.join("past.onnx"), ext("m.onnx.data", "8")).unwrap();
    assert!(load(&inner.join("past.onnx"), 16).unwrap_err().to_string().contains("has 12 bytes, too few for 8 bytes at offset 8"));
}

#[test]
fn the_exported_mlp_loads_at_pytorchs_values() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/onnx/mlp.onnx");
    let c = compile(&load(&path, 64).unwrap()).unwrap();
    let kinds: Vec<&str> = c.layers.iter().map(crate::scenario::Named::name).collect();
    assert_eq!(kinds, ["linear", "relu", "linear", "tanh", "linear"]);
    assert_eq!(c.names, ["fc1.linear", "act1.relu", "fc2.linear_1", "act2.tanh", "fc3.linear_2"]);
    let names: Vec<&str> = c.params.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(names, ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]);
    // PyTorch 2.15, torch.manual_seed(0): fc1.weight[0] = [-0.00374341, 0.26822180, -0.41152257, -0.36796951],
    // fc1.weight[1, 0] = -0.19257718; nanhunt's (in, out) holds fc1.weight[o, i] at [i, o].
    let (w, close) = (&c.params[0].2, |a: f64, b: f64| (a - b).abs() < 1e-7);
    assert_eq!(c.params[0].1, vec![4, 8]);
    assert!(close(w[0], -0.00374341) && close(w[8], 0.26822180) && close(w[24], -0.36796951) && close(w[1], -0.19257718), "{:?}", &w[..9]);
    assert!(close(c.params[5].2[0], 0.13874434), "fc3.bias");
}

/// A graph that is not a chain: `r = tanh(x) + x` (a residual of two activations), then
/// `p = r[:, :, None] @ tanh(x)[:, None, :]` (a matmul of two activations, `tanh(x)` read by three
/// nodes), `y = p.sum(2) * w`.
pub(crate) fn dag() -> Vec<u8> {
    let ints = |name: &str, v: &[i64]| AttributeProto { name: Some(name.into()), ints: v.to_vec(), r#type: Some(7), ..Default::default() };
    let nodes = vec![
        node("Tanh", "h", &["x"], &["h"], vec![]),
        node("Add", "r", &["h", "x"], &["r"], vec![]),
        node("Constant", "a2", &[], &["a2"], vec![ints("value_ints", &[2])]),
        node("Constant", "a1", &[], &["a1"], vec![ints("value_ints", &[1])]),
        node("Unsqueeze", "u1", &["r", "a2"], &["u"], vec![]),
        node("Unsqueeze", "u2", &["h", "a1"], &["v"], vec![]),
        node("MatMul", "mm", &["u", "v"], &["p"], vec![]),
        node("ReduceSum", "sum", &["p", "a2"], &["s"], vec![int_attr("keepdims", 0)]),
        node("Mul", "mul", &["s", "w"], &["y"], vec![]),
    ];
    let mut m = ModelProto::decode(&model(18, nodes, vec![tensor("w", &[3], &[1.0, 2.0, 3.0])], "y")[..]).unwrap();
    use super::proto::{
        tensor_shape_proto::{dimension::Value as Dim, Dimension},
        type_proto, TensorShapeProto, TypeProto,
    };
    let dims = [Dim::DimParam("batch".into()), Dim::DimValue(3)].map(|d| Dimension { value: Some(d), ..Default::default() }).to_vec();
    let shape = TensorShapeProto { dim: dims };
    let ty = TypeProto { value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: Some(1), shape: Some(shape) })), ..Default::default() };
    m.graph.as_mut().unwrap().input[0].r#type = Some(ty);
    m.encode_to_vec()
}

#[test]
fn a_graph_compiles_node_by_node() {
    let c = compile(&parse(&dag(), None, 16).unwrap()).unwrap();
    assert!(c.layers.iter().all(|l| matches!(l, Layer::Onnx(_))), "{:?}", c.layers);
    // The constants fold; two unsqueezes share a module path, so the first adds its node's name.
    assert_eq!(c.names, ["block.tanh", "block.add", "block.unsqueeze.u1", "block.unsqueeze", "block.matmul", "block.reducesum", "block.mul"]);
    assert_eq!(c.params, [("w".to_string(), vec![3], vec![1.0, 2.0, 3.0])]);
}

#[test]
fn the_exported_gpt_compiles_as_a_graph_named_by_its_modules() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/onnx/gpt.onnx");
    let c = compile(&load(&path, 64).unwrap()).unwrap();
    // Every weight of the PyTorch module (make_models.py's Gpt) is a parameter, in PyTorch's layout.
    let names: Vec<&str> = c.params.iter().map(|p| p.0.as_str()).collect();
    for want in ["tok.weight", "pos.weight", "block.ln1.weight", "block.qkv.weight", "block.qkv.bias", "block.proj.weight", "block.fc.weight", "block.out.bias", "lnf.bias", "head.weight"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert_eq!(c.params.iter().find(|p| p.0 == "block.qkv.weight").map(|p| p.1.clone()), Some(vec![24, 8]));
    // The masked fill compiles into the softmax; the shapes and the causal mask fold away.
    assert!(c.names.contains(&"block.softmax".to_string()) && !c.names.iter().any(|n| n.contains("masked_fill") || n.contains("triu") || n.contains("arange")), "{:?}", c.names);
    assert!(matches!(c.layers.last(), Some(Layer::Onnx(l)) if l.name == "logits" && l.dims == [3, 5, 11]));
}
