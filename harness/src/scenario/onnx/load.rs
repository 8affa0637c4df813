//! Reading a `.onnx` file into an [`OnnxModel`]: the protobuf decoded with prost, the opset
//! checked, every tensor decoded within the memory limit (see `tensor`), the module path read
//! from each node's exporter metadata, and the nodes put in dependency order (Kahn's algorithm:
//! a cycle or a value that nothing produces is an error naming the nodes).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use prost::Message;

use super::proto::{attribute_proto::AttributeType, tensor_shape_proto::dimension::Value as DimValue, type_proto::Value as TypeValue, AttributeProto, ModelProto, NodeProto};
use super::tensor::{decode, Budget, External};
use super::{Attr, OnnxModel, OnnxNode};
use crate::error::{Error, Result};

/// The default domain's opset versions nanhunt imports (what `torch.onnx.export(dynamo=True)` writes).
pub const OPSETS: std::ops::RangeInclusive<i64> = 17..=20;

/// Reads the ONNX model at `path`, within a memory limit of `limit_mb` MiB (the file and its
/// decoded tensors); external data files are read from its folder only.
pub fn load(path: &Path, limit_mb: u64) -> Result<OnnxModel> {
    let limit = limit_mb.saturating_mul(1 << 20);
    let bytes = crate::scenario::read_regular(path, limit, "an ONNX model", "raise `train.memory_limit_mb` to import it")?;
    let dir = path.parent().map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d });
    parse(&bytes, dir, limit_mb.saturating_sub(bytes.len() as u64 >> 20)).map_err(|message| Error::Onnx { path: path.to_path_buf(), message })
}

/// Parses the bytes of an ONNX model; external data is read from `dir` (refused without one);
/// its tensors may take `limit_mb` MiB once decoded.
pub fn parse(bytes: &[u8], dir: Option<&Path>, limit_mb: u64) -> std::result::Result<OnnxModel, String> {
    let m = ModelProto::decode(bytes).map_err(|e| format!("not an ONNX model (the protobuf does not decode: {e})"))?;
    let opset = opset(&m)?;
    let g = m.graph.as_ref().ok_or("the model holds no graph")?;
    let ext = External { dir, read: Default::default() };
    let mut budget = Budget { left: limit_mb.saturating_mul(1 << 20), limit_mb };
    let mut tensors = BTreeMap::new();
    let mut initializers = Vec::with_capacity(g.initializer.len());
    for t in &g.initializer {
        let name = t.name().to_string();
        let c = decode(t, &name, &ext, &mut budget)?;
        if tensors.insert(name.clone(), c).is_some() {
            return Err(format!("two initializers are named `{name}`"));
        }
        initializers.push(name);
    }
    if !g.sparse_initializer.is_empty() {
        return Err("the graph has sparse initializers, which nanhunt does not import".into());
    }
    let inputs = g.input.iter().filter(|v| !tensors.contains_key(v.name())).map(|v| (v.name().to_string(), dims(v))).collect::<Vec<_>>();
    let outputs: Vec<String> = g.output.iter().map(|v| v.name().to_string()).collect();
    let mut nodes = Vec::with_capacity(g.node.len());
    for (i, n) in g.node.iter().enumerate() {
        nodes.push(node(n, i, &ext, &mut budget)?);
    }
    let known: BTreeSet<&str> = inputs.iter().map(|(n, _)| n.as_str()).chain(tensors.keys().map(String::as_str)).collect();
    let nodes = ordered(nodes, &known)?;
    let produced: BTreeSet<&str> = nodes.iter().flat_map(|n| n.outputs.iter().map(String::as_str)).chain(known.iter().copied()).collect();
    if let Some(o) = outputs.iter().find(|o| !produced.contains(o.as_str())) {
        return Err(format!("the graph's output `{o}` is produced by no node"));
    }
    Ok(OnnxModel { opset, inputs, outputs, nodes, tensors, initializers, external: ext.read.into_inner() })
}

/// The default domain's opset version, if nanhunt imports it.
fn opset(m: &ModelProto) -> std::result::Result<i64, String> {
    let v = m.opset_import.iter().find(|o| matches!(o.domain(), "" | "ai.onnx")).map(|o| o.version()).ok_or("the model imports no version of ONNX's default opset")?;
    if !OPSETS.contains(&v) {
        return Err(format!("opset {v} is not one nanhunt imports ({}–{}): export with `torch.onnx.export(..., dynamo=True, opset_version=18)`", OPSETS.start(), OPSETS.end()));
    }
    Ok(v)
}

/// A value's dims: a number, or `None` for a symbolic or unknown dim.
fn dims(v: &super::proto::ValueInfoProto) -> Vec<Option<usize>> {
    let Some(TypeValue::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else { return Vec::new() };
    let Some(shape) = &t.shape else { return Vec::new() };
    shape.dim.iter().map(|d| if let Some(DimValue::DimValue(n)) = d.value { usize::try_from(n).ok() } else { None }).collect()
}

/// One node, its attributes decoded (a tensor attribute within the budget).
fn node(n: &NodeProto, i: usize, ext: &External<'_>, budget: &mut Budget) -> std::result::Result<OnnxNode, String> {
    let name = if n.name().is_empty() { format!("#{i}") } else { n.name().to_string() };
    let mut attrs = BTreeMap::new();
    for a in &n.attribute {
        attrs.insert(a.name().to_string(), attr(a, &name, ext, budget)?);
    }
    Ok(OnnxNode { name, op_type: n.op_type().to_string(), domain: n.domain().to_string(), inputs: n.input.clone(), outputs: n.output.clone(), attrs, module: module_path(n) })
}

fn attr(a: &AttributeProto, node: &str, ext: &External<'_>, budget: &mut Budget) -> std::result::Result<Attr, String> {
    Ok(match a.r#type() {
        AttributeType::Int => Attr::Int(a.i()),
        AttributeType::Float => Attr::Float(a.f()),
        AttributeType::Ints => Attr::Ints(a.ints.clone()),
        AttributeType::Floats => Attr::Floats(a.floats.clone()),
        AttributeType::String => Attr::Str(String::from_utf8_lossy(a.s()).into_owned()),
        AttributeType::Strings => Attr::Strs(a.strings.iter().map(|s| String::from_utf8_lossy(s).into_owned()).collect()),
        AttributeType::Tensor => match &a.t {
            Some(t) => Attr::Tensor(decode(t, &format!("{node}.{}", a.name()), ext, budget)?),
            None => Attr::Other,
        },
        AttributeType::Undefined
        | AttributeType::Graph
        | AttributeType::SparseTensor
        | AttributeType::TypeProto
        | AttributeType::Tensors
        | AttributeType::Graphs
        | AttributeType::SparseTensors
        | AttributeType::TypeProtos => Attr::Other,
    })
}

/// The PyTorch module path and op the exporter recorded (`pkg.torch.onnx.name_scopes` of
/// `['', 'fc1', 'linear']` is `fc1.linear`, of `['', 'block', 'block.ln1', 'layer_norm']`
/// `block.ln1.layer_norm`; else the `namespace`'s scopes), if any.
fn module_path(n: &NodeProto) -> Option<String> {
    let prop = |k: &str| n.metadata_props.iter().find(|p| p.key() == k).map(|p| p.value().to_string());
    let scopes: Vec<String> = if let Some(s) = prop("pkg.torch.onnx.name_scopes") {
        s.trim_matches(|c| c == '[' || c == ']').split(',').map(|p| p.trim().trim_matches(|c| c == '\'' || c == '"').to_string()).collect()
    } else {
        // `: __main__.Mlp/fc1: torch.nn.modules.linear.Linear/linear: aten.linear.default`
        prop("namespace")?.split('/').map(|seg| seg.split(':').next().unwrap_or("").trim().to_string()).collect()
    };
    // Each scope is a module's full path (`['', 'block', 'block.ln1', 'layer_norm']`): the
    // deepest module's and the op's name it (`block.ln1.layer_norm`).
    let path: Vec<&str> = scopes.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
    match path.as_slice() {
        [] => None,
        [.., module, op] if path.len() > 1 => Some(format!("{module}.{op}")),
        [op, ..] => Some((*op).to_string()),
    }
}

/// The nodes in an order where each reads only `known` values and earlier nodes' outputs.
fn ordered(nodes: Vec<OnnxNode>, known: &BTreeSet<&str>) -> std::result::Result<Vec<OnnxNode>, String> {
    let mut producer: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            if known.contains(o.as_str()) || producer.insert(o.as_str(), i).is_some() {
                return Err(format!("the value `{o}` is written twice (by the {} among others)", n.describe()));
            }
        }
    }
    let mut waits = vec![0usize; nodes.len()];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    let mut missing = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for v in n.inputs.iter().filter(|v| !v.is_empty() && !known.contains(v.as_str())) {
            match producer.get(v.as_str()) {
                Some(&p) => {
                    waits[i] += 1;
                    readers[p].push(i);
                }
                None => missing.push(format!("the {} reads `{v}`, which nothing produces", n.describe())),
            }
        }
    }
    if !missing.is_empty() {
        return Err(missing.join("; "));
    }
    let mut ready: Vec<usize> = (0..nodes.len()).filter(|&i| waits[i] == 0).rev().collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        for &r in readers[i].iter().rev() {
            waits[r] -= 1;
            if waits[r] == 0 {
                ready.push(r);
            }
        }
    }
    if order.len() < nodes.len() {
        let stuck: Vec<String> = (0..nodes.len()).filter(|&i| waits[i] > 0).map(|i| format!("`{}`", nodes[i].name)).collect();
        return Err(format!("the graph has a cycle through the nodes {}", stuck.join(", ")));
    }
    let mut slots: Vec<Option<OnnxNode>> = nodes.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

/// Parses `data` as an ONNX model (no folder, 64 MiB of tensors): the fuzz target's body
/// (`fuzz/fuzz_targets/onnx.rs`), which must give a model or an error, never a panic, and
/// compiles what parses. Returns whether it compiled.
pub fn fuzz_one(data: &[u8]) -> bool {
    parse(data, None, 64).is_ok_and(|m| super::compile(&m).is_ok())
}
