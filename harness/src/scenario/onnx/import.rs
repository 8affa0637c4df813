//! `[model] onnx = "model.onnx"`: the scenario's reference to an ONNX model ([`Import`]), read
//! and compiled when the scenario is loaded from its file (the path relative to its folder), and
//! how the compiled graph's names and weights enter the model's plan ([`adopt`]).

use std::path::Path;
use std::sync::Arc;

use super::Compiled;
use crate::error::{Error, Result};
use crate::scenario::{Plan, PlanError, Shape};

/// An imported ONNX model: its path as the scenario writes it, and the graph compiled from it
/// once the scenario is loaded from its file. It is written back as the path alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    /// The path, relative to the scenario's folder.
    pub path: String,
    /// The compiled graph (`None` until the scenario's loading reads the file).
    pub compiled: Option<Arc<Compiled>>,
}

impl Import {
    /// Reads and compiles the model at `path` within a memory limit of `limit_mb` MiB.
    pub fn resolve(&mut self, path: &Path, limit_mb: u64) -> Result<()> {
        let m = super::load(path, limit_mb)?;
        let c = super::compile(&m).map_err(|message| Error::Onnx { path: path.to_path_buf(), message })?;
        self.compiled = Some(Arc::new(c));
        Ok(())
    }
}

impl serde::Serialize for Import {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.path)
    }
}

impl<'de> serde::Deserialize<'de> for Import {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(Import { path: String::deserialize(d)?, compiled: None })
    }
}

impl<'a> arbitrary::Arbitrary<'a> for Import {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Import { path: String::arbitrary(u)?, compiled: None })
    }
}

/// Gives the plan of the compiled graph's layers (reading `input`) the graph's names under
/// `layers.`, as every layer stack's tensors are named (`TensorId`): each node its module path
/// (`layers.fc1.linear`), each parameter its initializer's name (`layers.fc1.weight`), after
/// checking that the data fits the graph's input and that every parameter has the file's shape.
pub fn adopt(plan: &mut Plan, c: &Compiled, input: Shape) -> std::result::Result<(), PlanError> {
    let err = |m: String| ("onnx".to_string(), m);
    let (name, dims) = &c.input;
    let want: Vec<usize> = crate::ops::expr::dims_of(input).iter().skip(1).filter_map(|d| if let crate::ops::expr::check::Dim::N(n) = d { Some(*n) } else { None }).collect();
    let fits = dims.len() == want.len() + 1 && dims.iter().skip(1).zip(&want).all(|(d, w)| d.is_none_or(|d| d == *w));
    if !dims.is_empty() && !fits {
        let show: Vec<String> = dims.iter().map(|d| d.map_or("?".to_string(), |d| d.to_string())).collect();
        return Err(err(format!("the graph's input `{name}` is ({}) but the data gives {} per batch row", show.join(", "), input.describe())));
    }
    if plan.params.len() != c.params.len() {
        return Err(err(format!("the graph's {} weights do not match the {} parameters of its layers", c.params.len(), plan.params.len())));
    }
    for (p, (name, shape, _)) in plan.params.iter_mut().zip(&c.params) {
        if &p.shape != shape {
            return Err(err(format!("the weight `{name}` is {shape:?} in nanhunt's layout, but the data makes its layer want {:?}", p.shape)));
        }
        p.name = format!("layers.{name}");
    }
    for (i, (layer, to)) in c.layers.iter().zip(&c.names).enumerate() {
        let from = format!("layers.{i}.{}", crate::scenario::Named::name(layer));
        for node in &mut plan.nodes {
            if node.name == from || node.name.starts_with(&format!("{from}.")) {
                node.name = format!("layers.{to}{}", &node.name[from.len()..]);
            }
        }
    }
    plan.layer_names = plan.nodes.iter().map(|n| n.name.clone()).collect();
    Ok(())
}
