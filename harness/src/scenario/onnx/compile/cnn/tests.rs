//! Tests of the CNN ops' import on graphs built here with prost, laid out as
//! `torch.onnx.export(..., dynamo=True)` writes a `Conv2d`, `BatchNorm2d`, `ReLU`,
//! `MaxPool2d`, `Flatten`, `Linear` model under a dynamic batch (the flatten's target from
//! `Shape(x)`): the layers, weights and refusals are checked against the node attributes by hand.

use prost::Message;

use crate::ops::batch_norm::BatchNorm;
use crate::ops::conv::Conv2d;
use crate::scenario::onnx::proto::tensor_shape_proto::{dimension::Value as Dim, Dimension};
use crate::scenario::onnx::proto::type_proto::{Tensor as TensorType, Value as TypeValue};
use crate::scenario::onnx::proto::{
    tensor_proto::DataType, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::scenario::onnx::{compile, parse};
use crate::scenario::Layer;

fn floats(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto { name: Some(name.into()), dims: dims.to_vec(), data_type: Some(DataType::Float as i32), float_data: data.to_vec(), ..Default::default() }
}

fn node(op: &str, name: &str, module: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    let scopes = StringStringEntryProto { key: Some("pkg.torch.onnx.name_scopes".into()), value: Some(format!("['', '{module}', '{}']", op.to_lowercase())) };
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    NodeProto { name: Some(name.into()), op_type: Some(op.into()), input: strings(inputs), output: strings(outputs), attribute: attrs, metadata_props: vec![scopes], ..Default::default() }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), i: Some(i), r#type: Some(2), ..Default::default() }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: Some(name.into()), ints: v.to_vec(), r#type: Some(7), ..Default::default() }
}

fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto { name: Some(name.into()), f: Some(f), r#type: Some(1), ..Default::default() }
}

fn string(name: &str, s: &str) -> AttributeProto {
    AttributeProto { name: Some(name.into()), s: Some(s.as_bytes().to_vec()), r#type: Some(3), ..Default::default() }
}

/// The graph's input `x`: `(batch, 1, 4, 4)` images, the batch symbolic.
fn input() -> ValueInfoProto {
    let dim = |d: Dim| Dimension { value: Some(d), ..Default::default() };
    let dims = vec![dim(Dim::DimParam("batch".into())), dim(Dim::DimValue(1)), dim(Dim::DimValue(4)), dim(Dim::DimValue(4))];
    let t = TensorType { elem_type: Some(DataType::Float as i32), shape: Some(TensorShapeProto { dim: dims }) };
    ValueInfoProto { name: Some("x".into()), r#type: Some(TypeProto { value: Some(TypeValue::TensorType(t)), ..Default::default() }), ..Default::default() }
}

/// The exporter's `Conv`: kernel 3, stride 1, padding 1, with `extra` attributes replacing those of the same name.
fn conv(extra: Vec<AttributeProto>) -> NodeProto {
    let mut attrs = vec![int("group", 1), ints("pads", &[1, 1, 1, 1]), string("auto_pad", "NOTSET"), ints("strides", &[1, 1]), ints("dilations", &[1, 1]), ints("kernel_shape", &[3, 3])];
    attrs.retain(|a| !extra.iter().any(|e| e.name == a.name));
    attrs.extend(extra);
    node("Conv", "node_conv2d", "conv1", &["x", "conv1.weight", "conv1.bias"], &["conv2d"], attrs)
}

/// The exporter's `MaxPool` of window and stride 2, with `extra` attributes replacing those of the same name.
fn max_pool(extra: Vec<AttributeProto>) -> NodeProto {
    let mut attrs = vec![int("ceil_mode", 0), ints("pads", &[0, 0, 0, 0]), ints("strides", &[2, 2]), ints("kernel_shape", &[2, 2]), ints("dilations", &[1, 1])];
    attrs.retain(|a| !extra.iter().any(|e| e.name == a.name));
    attrs.extend(extra);
    node("MaxPool", "node_max_pool2d", "pool1", &["relu"], &["max_pool2d"], attrs)
}

/// Conv 1→2 (k 3, p 1) on 4×4, BatchNorm2d, ReLU, MaxPool 2, the exporter's flatten of
/// `Shape(x)[0]` and 8, Linear 8→3; `conv` and `pool` replace the conv and pool nodes,
/// `mean` is the running mean.
fn cnn(conv: NodeProto, pool: NodeProto, mean: f32) -> Vec<u8> {
    let w: Vec<f32> = (0..18).map(|i| i as f32 / 10.0).collect();
    let inits = vec![
        floats("conv1.weight", &[2, 1, 3, 3], &w),
        floats("conv1.bias", &[2], &[0.5, -0.5]),
        floats("bn.weight", &[2], &[1.5, 0.5]),
        floats("bn.bias", &[2], &[0.25, -0.25]),
        floats("bn.running_mean", &[2], &[mean, 0.0]),
        floats("bn.running_var", &[2], &[1.0, 1.0]),
        floats("fc.weight", &[3, 8], &[0.25; 24]),
        floats("fc.bias", &[3], &[0.0; 3]),
    ];
    let bn = node("BatchNormalization", "node_bn", "bn", &["conv2d", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"], &["getitem"], vec![float("momentum", 0.9), float("epsilon", 1e-5)]);
    let nodes = vec![
        node("Shape", "node_Shape_0", "", &["x"], &["val_0"], vec![int("start", 0), int("end", 1)]),
        node("Squeeze", "node_sym_size", "", &["val_0"], &["batch"], vec![]),
        conv,
        bn,
        node("Relu", "node_relu", "act1", &["getitem"], &["relu"], vec![]),
        pool,
        node("Constant", "node_Constant_8", "flat", &[], &["val_9"], vec![ints("value_ints", &[-1])]),
        node("Reshape", "node_Reshape_9", "flat", &["batch", "val_9"], &["val_10"], vec![int("allowzero", 0)]),
        node("Constant", "node_Constant_10", "flat", &[], &["val_11"], vec![ints("value_ints", &[8])]),
        node("Concat", "node_Concat_11", "flat", &["val_10", "val_11"], &["val_12"], vec![int("axis", 0)]),
        node("Reshape", "node_view", "flat", &["max_pool2d", "val_12"], &["view"], vec![int("allowzero", 1)]),
        node("Gemm", "node_linear", "fc", &["view", "fc.weight", "fc.bias"], &["y"], vec![int("transB", 1)]),
    ];
    let out = ValueInfoProto { name: Some("y".into()), ..Default::default() };
    let graph = GraphProto { node: nodes, initializer: inits, input: vec![input()], output: vec![out], ..Default::default() };
    ModelProto { ir_version: Some(10), opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(18) }], graph: Some(graph), ..Default::default() }.encode_to_vec()
}

fn compiled(bytes: &[u8]) -> Result<crate::scenario::model::Compiled, String> {
    compile(&parse(bytes, None, 16).unwrap())
}

#[test]
fn the_exported_cnn_compiles_to_registry_layers_with_pytorch_layout_weights() {
    let c = compiled(&cnn(conv(vec![]), max_pool(vec![]), 0.0)).unwrap();
    let conv = Conv2d { channels: 2, kernel: 3, stride: 1, padding: 1, init: None };
    assert!(matches!(&c.layers[0], Layer::Conv2d(l) if *l == conv), "{:?}", c.layers[0]);
    // ONNX's momentum 0.9 (f32 0.899999976) is PyTorch's 1 − 0.9 = 0.1; f32 9.99999975e-6 is PyTorch's eps 1e-5.
    assert!(matches!(&c.layers[1], Layer::BatchNorm(b) if *b == BatchNorm { eps: 1e-5, momentum: 0.1 }), "{:?}", c.layers[1]);
    assert!(matches!(c.layers[2..], [Layer::Relu(_), Layer::MaxPool2d(ref p), Layer::Flatten(_), Layer::Linear(ref l)] if p.kernel == 2 && l.out == 3), "{:?}", c.layers);
    assert_eq!(c.names, ["conv1.conv", "bn.batchnormalization", "act1.relu", "pool1.maxpool", "flat.reshape", "fc.gemm"]);
    // The kernel stays (out, in, kh, kw), as ONNX and nanhunt's conv2d both hold it; the running statistics are no parameters.
    let names: Vec<(&str, &[usize])> = c.params.iter().map(|(n, d, _)| (n.as_str(), d.as_slice())).collect();
    assert_eq!(names, [("conv1.weight", &[2, 1, 3, 3][..]), ("conv1.bias", &[2]), ("bn.weight", &[2]), ("bn.bias", &[2]), ("fc.weight", &[8, 3]), ("fc.bias", &[3])]);
    assert_eq!(c.params[0].2[17], f64::from(1.7f32));
    // The batch norm's gain and shift are the file's `bn.weight` and `bn.bias`, not its running statistics.
    assert_eq!((c.params[2].2.as_slice(), c.params[3].2.as_slice()), (&[1.5, 0.5][..], &[0.25, -0.25][..]));
}

#[test]
fn attributes_the_registry_layers_cannot_compute_are_refused_with_the_node() {
    let refused = |bytes: Vec<u8>| compiled(&bytes).unwrap_err();
    let pool = || max_pool(vec![]);
    let err = refused(cnn(conv(vec![int("group", 2)]), pool(), 0.0));
    assert!(err.contains("Conv node `node_conv2d` (module `conv1.conv`) has group = 2"), "{err}");
    let err = refused(cnn(conv(vec![string("auto_pad", "SAME_UPPER")]), pool(), 0.0));
    assert!(err.contains("Conv node `node_conv2d` (module `conv1.conv`) pads with auto_pad = SAME_UPPER"), "{err}");
    let err = refused(cnn(conv(vec![ints("pads", &[1, 0, 1, 0])]), pool(), 0.0));
    assert!(err.contains("has pads [1, 0, 1, 0]"), "{err}");
    let err = refused(cnn(conv(vec![ints("dilations", &[2, 2])]), pool(), 0.0));
    assert!(err.contains("is dilated"), "{err}");
    let err = refused(cnn(conv(vec![]), max_pool(vec![int("ceil_mode", 1)]), 0.0));
    assert!(err.contains("MaxPool node `node_max_pool2d` (module `pool1.maxpool`) has window 2, stride 2, ceil_mode = 1"), "{err}");
    let err = refused(cnn(conv(vec![]), max_pool(vec![ints("strides", &[1, 1])]), 0.0));
    assert!(err.contains("has window 2, stride 1"), "{err}");
    let err = refused(cnn(conv(vec![]), max_pool(vec![ints("pads", &[1, 1, 1, 1])]), 0.0));
    assert!(err.contains("stride 2, padding"), "{err}");
    let err = refused(cnn(conv(vec![]), pool(), 0.5));
    assert!(err.contains("BatchNormalization node `node_bn` (module `bn.batchnormalization`)'s running statistics"), "{err}");
}

#[test]
fn a_conv_without_bias_a_1d_conv_and_a_reshape_that_moves_the_batch_are_refused() {
    let mut no_bias = conv(vec![]);
    no_bias.input.truncate(2);
    let err = compiled(&cnn(no_bias, max_pool(vec![]), 0.0)).unwrap_err();
    assert!(err.contains("Conv node `node_conv2d` (module `conv1.conv`) has no bias"), "{err}");
    // A reshape to (batch·2, 4) instead of (batch, 8): the flatten's second dim 4 is not 2·1·1·... = 8.
    let mut m = parse(&cnn(conv(vec![]), max_pool(vec![]), 0.0), None, 16).unwrap();
    let four = m.nodes.iter_mut().find(|n| n.name == "node_Constant_10").unwrap();
    four.attrs.insert("value_ints".into(), crate::scenario::onnx::Attr::Ints(vec![4]));
    let err = compile(&m).unwrap_err();
    assert!(err.contains("Reshape node `node_view` (module `flat.reshape`) reshapes (batch, 2, 2, 2) to [2, 4]"), "{err}");
    // A conv over sequences (weight (out, in, k)).
    let mut m = parse(&cnn(conv(vec![]), max_pool(vec![]), 0.0), None, 16).unwrap();
    let w = m.tensors.get_mut("conv1.weight").unwrap();
    w.dims = vec![2, 1, 9];
    let err = compile(&m).unwrap_err();
    assert!(err.contains("weight `conv1.weight` has dims [2, 1, 9]: nanhunt imports a convolution over images"), "{err}");
}

#[test]
fn images_too_large_to_count_are_an_error_not_an_overflow() {
    // 2⁴⁰ × 2⁴⁰ images: the conv keeps them, the pool halves them, and the flatten's
    // 2 · 2³⁹ · 2³⁹ = 2⁷⁹ values per row do not fit a usize.
    let mut m = parse(&cnn(conv(vec![]), max_pool(vec![]), 0.0), None, 16).unwrap();
    m.inputs[0].1 = vec![None, Some(1), Some(1 << 40), Some(1 << 40)];
    let err = compile(&m).unwrap_err();
    assert!(err.contains("Reshape node `node_view` (module `flat.reshape`) flattens (batch, 2, 549755813888, 549755813888), more values per row than nanhunt counts"), "{err}");
}
