//! Tests of the recurrent import: the exported `lstm.onnx` and `gru.onnx` (the file's own
//! initializers, PyTorch's layout, as the expected values), a hand-built LSTM node whose weights
//! are in ONNX's gate order (hand-permuted values, ONNX's `B` two parameters), and each setting PyTorch's cells do not have
//! refused with the node's name and module path.

use prost::Message;

use crate::scenario::onnx::proto::{
    tensor_proto::DataType,
    tensor_shape_proto::{dimension::Value as Dim, Dimension},
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::scenario::onnx::{compile, load, parse, Values};
use crate::scenario::Layer;

fn file(name: &str) -> crate::scenario::onnx::OnnxModel {
    load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/onnx").join(name), 64).unwrap()
}

/// The initializer `name` of `m`: its dims and values.
fn init(m: &crate::scenario::onnx::OnnxModel, name: &str) -> (Vec<usize>, Vec<f64>) {
    let c = &m.tensors[name];
    let Values::Float(v, _) = &c.values else { panic!("{name} is not float") };
    (c.dims.clone(), v.clone())
}

/// PyTorch's `(rows, cols)` matrix as nanhunt's `(cols, rows)`.
fn transposed((dims, v): (Vec<usize>, Vec<f64>)) -> Vec<f64> {
    let (rows, cols) = (dims[0], dims[1]);
    (0..cols).flat_map(|c| (0..rows).map(move |r| (r, c))).map(|(r, c)| v[r * cols + c]).collect()
}

#[test]
fn the_exported_lstm_compiles_onto_the_registry_lstm_with_pytorchs_parameters() {
    let m = file("lstm.onnx");
    let c = compile(&m).unwrap();
    let kinds: Vec<&str> = c.layers.iter().map(|l| crate::scenario::Named::name(l.untagged())).collect();
    // The cell reads the data; its sequence's last step (`out[:, -1]`: a Slice and a Gather) feeds the head's Gemm.
    assert_eq!(kinds, ["lstm", "onnx", "onnx", "onnx"], "{:?}", c.layers);
    assert!(matches!(c.layers[0].untagged(), Layer::Lstm(l) if l.hidden == 16 && l.return_sequences), "{:?}", c.layers[0]);
    let names: Vec<(&str, &[usize])> = c.params.iter().map(|p| (p.0.as_str(), p.1.as_slice())).collect();
    assert_eq!(names[..4], [("rnn.weight_ih_l0", &[4, 64][..]), ("rnn.weight_hh_l0", &[16, 64][..]), ("rnn.bias_ih_l0", &[64][..]), ("rnn.bias_hh_l0", &[64][..])]);
    // The weights are PyTorch's (gates i, f, g, o) transposed to nanhunt's (in, gates·hidden), not ONNX's order.
    assert_eq!(c.params[0].2, transposed(init(&m, "rnn.weight_ih_l0")));
    assert_eq!(c.params[1].2, transposed(init(&m, "rnn.weight_hh_l0")));
    assert_eq!(c.params[2].2, init(&m, "rnn.bias_ih_l0").1);
    assert_eq!(c.params[3].2, init(&m, "rnn.bias_hh_l0").1);
    assert_eq!(c.names[0], "rnn.lstm");
}

#[test]
fn the_exported_gru_reads_its_embedding_and_its_mean_feeds_the_head() {
    let m = file("gru.onnx");
    let c = compile(&m).unwrap();
    let kinds: Vec<&str> = c.layers.iter().map(|l| crate::scenario::Named::name(l.untagged())).collect();
    assert_eq!(kinds, ["onnx", "gru", "onnx", "onnx"], "{:?}", c.layers);
    assert!(matches!(&c.layers[2], Layer::Onnx(l) if matches!(l.op, crate::ops::onnx::Kind::ReduceMean { .. })), "{:?}", c.layers[2]);
    let names: Vec<&str> = c.params.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(names, ["emb.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0", "head.weight", "head.bias"]);
    // PyTorch's gates r, z, n, transposed: (8, 48) and (16, 48).
    assert_eq!((c.params[1].1.clone(), c.params[2].1.clone()), (vec![8, 48], vec![16, 48]));
    assert_eq!(c.params[1].2, transposed(init(&m, "rnn.weight_ih_l0")));
    assert_eq!(c.params[4].2, init(&m, "rnn.bias_hh_l0").1);
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    let scopes = StringStringEntryProto { key: Some("pkg.torch.onnx.name_scopes".into()), value: Some("['', 'rnn', 'lstm']".into()) };
    let (input, output) = (inputs.iter().map(|s| s.to_string()).collect(), outputs.iter().map(|s| s.to_string()).collect());
    NodeProto { name: Some(name.into()), op_type: Some(op.into()), input, output, attribute: attrs, metadata_props: vec![scopes], ..Default::default() }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), i: Some(i), r#type: Some(2), ..Default::default() }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: Some(name.into()), ints: v.to_vec(), r#type: Some(7), ..Default::default() }
}

fn tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto { name: Some(name.into()), dims: dims.to_vec(), data_type: Some(DataType::Float as i32), float_data: data.to_vec(), ..Default::default() }
}

/// An LSTM of 1 unit on x `(batch, 3, 1)`: `Transpose` in, the node (W, R, B as given, in ONNX's
/// gate order i, o, f, c), `Squeeze` and `Transpose` out, and `extra` changes to the node.
fn lstm(extra: impl FnOnce(&mut NodeProto, &mut Vec<NodeProto>)) -> Vec<u8> {
    let inits = vec![tensor("W", &[1, 4, 1], &[1.0, 2.0, 3.0, 4.0]), tensor("R", &[1, 4, 1], &[5.0, 6.0, 7.0, 8.0]), tensor("B", &[1, 8], &[9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0, 16.0])];
    let mut cell = node("LSTM", "node_lstm", &["xt", "W", "R", "B"], &["Y"], vec![int("hidden_size", 1)]);
    let mut nodes = vec![node("Transpose", "in", &["x"], &["xt"], vec![ints("perm", &[1, 0, 2])])];
    let mut after = vec![
        node("Constant", "one", &[], &["one"], vec![ints("value_ints", &[1])]),
        node("Squeeze", "sq", &["Y", "one"], &["ys"], vec![]),
        node("Transpose", "out", &["ys"], &["y"], vec![ints("perm", &[1, 0, 2])]),
    ];
    extra(&mut cell, &mut after);
    nodes.push(cell);
    nodes.extend(after);
    let dims = [Dim::DimParam("batch".into()), Dim::DimValue(3), Dim::DimValue(1)].map(|d| Dimension { value: Some(d), ..Default::default() }).to_vec();
    let ty = TypeProto { value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: Some(1), shape: Some(TensorShapeProto { dim: dims }) })), ..Default::default() };
    let vi = |n: &str, ty: Option<TypeProto>| ValueInfoProto { name: Some(n.into()), r#type: ty, ..Default::default() };
    let graph = GraphProto { node: nodes, initializer: inits, input: vec![vi("x", Some(ty))], output: vec![vi("y", None)], ..Default::default() };
    ModelProto { ir_version: Some(10), opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(20) }], graph: Some(graph), ..Default::default() }.encode_to_vec()
}

fn compiled(extra: impl FnOnce(&mut NodeProto, &mut Vec<NodeProto>)) -> Result<crate::scenario::onnx::Compiled, String> {
    compile(&parse(&lstm(extra), None, 16).unwrap())
}

#[test]
fn onnx_gate_order_weights_are_permuted_into_pytorchs_under_the_initializers_names() {
    let c = compiled(|_, _| {}).unwrap();
    assert!(matches!(c.layers[0].untagged(), Layer::Lstm(l) if l.hidden == 1 && l.return_sequences), "{:?}", c.layers);
    // ONNX's blocks i, o, f, c = 1, 2, 3, 4 are PyTorch's i, f, g, o = 1, 3, 4, 2; B is W's bias then R's.
    let want = [("W", vec![1, 4], vec![1.0, 3.0, 4.0, 2.0]), ("R", vec![1, 4], vec![5.0, 7.0, 8.0, 6.0]), ("B", vec![4], vec![9.0, 11.0, 12.0, 10.0]), ("B", vec![4], vec![13.0, 15.0, 16.0, 14.0])];
    let want: Vec<(String, Vec<usize>, Vec<f64>)> = want.into_iter().zip(["", "", ".bias_ih", ".bias_hh"]).map(|((n, d, v), part)| (format!("{n}{part}"), d, v)).collect();
    assert_eq!(c.params, want);
    // The output's Squeeze and Transpose make the batch-first sequence the graph's output reads.
    assert!(matches!(&c.layers[1], Layer::Onnx(l) if l.inputs == [crate::ops::onnx::Src::Value("onnx_Y".into())] && l.dims == [2, 3, 1]), "{:?}", c.layers);
}

fn refused(extra: impl FnOnce(&mut NodeProto, &mut Vec<NodeProto>), why: &str) {
    let err = compiled(extra).unwrap_err();
    assert!(err.contains("LSTM node `node_lstm` (module `rnn.lstm`)") && err.contains(why), "{err}");
}

#[test]
fn what_pytorchs_cells_do_not_compute_is_refused_naming_the_node_and_its_module() {
    let s = |name: &str, v: &str| AttributeProto { name: Some(name.into()), s: Some(v.as_bytes().to_vec()), r#type: Some(3), ..Default::default() };
    refused(|n, _| n.attribute.push(s("direction", "bidirectional")), "direction `bidirectional`");
    refused(|n, _| n.attribute.push(AttributeProto { name: Some("clip".into()), f: Some(3.0), r#type: Some(1), ..Default::default() }), "`clip`");
    let acts = |v: &[&str]| AttributeProto { name: Some("activations".into()), strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(), r#type: Some(8), ..Default::default() };
    refused(|n, _| n.attribute.push(acts(&["Sigmoid", "Relu", "Tanh"])), "`activations` other than the defaults (Sigmoid, Tanh, Tanh)");
    refused(|n, _| n.input.push("x".into()), "`sequence_lens`");
    refused(|n, _| n.input.extend(["".to_string(), "".to_string(), "".to_string(), "W".to_string()]), "peephole");
    assert!(compiled(|n, _| n.output.push("Y_h".into())).is_ok(), "a final state nothing reads is not refused");
    refused(|n, _| n.attribute.push(int("layout", 1)), "layout = 1");
    refused(|n, _| n.input.truncate(3), "no bias `B`");
    refused(
        |n, after| {
            n.output.push("Y_h".into());
            after.push(node("Identity", "read_h", &["Y_h"], &["h"], vec![]));
        },
        "final state `Y_h`",
    );
}
