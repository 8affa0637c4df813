//! `[loss] from_model = "<output name>"`: a model exported with its loss (`forward(x, y) -> loss`)
//! ends in the loss's nodes. [`split`] reads that tail as a registry loss and takes it off the
//! graph, so the graph left computes the prediction from `x`, and `y`, the graph input the tail
//! alone reads, binds to the scenario's targets. The tail `torch.onnx.export(dynamo=True)` writes
//! for `F.mse_loss(p, y)` is `Sub(p, y)`, `Sub(p, y)`, `Mul`, `ReduceMean` (`reduction="sum"`:
//! `ReduceSum`); `Pow(Sub(p, y), 2)` is read alike. Another tail is refused, naming its nodes.

use super::{OnnxModel, OnnxNode, Values};
use crate::scenario::{LossKind, Reduction};

/// Takes the loss tail ending in graph output `output` off `m`; returns the loss it computes.
pub fn split(m: &mut OnnxModel, output: &str) -> Result<(LossKind, Reduction), String> {
    if !m.outputs.iter().any(|o| o == output) {
        return Err(format!("`loss.from_model` names `{output}`, but the graph's outputs are {}", m.outputs.join(", ")));
    }
    let producer = |v: &str| m.nodes.iter().position(|n| n.outputs.iter().any(|o| o == v));
    let unread = || format!("nanhunt reads a loss output that is `F.mse_loss(prediction, y)` (Sub, Mul or Pow, ReduceMean or ReduceSum); `{output}` is not");
    let r = producer(output).ok_or_else(unread)?;
    let reduce = &m.nodes[r];
    let reduction = match reduce.op_type.as_str() {
        "ReduceMean" => Reduction::Mean,
        "ReduceSum" => Reduction::Sum,
        other => return Err(format!("{}: the {} reduces with {other}", unread(), reduce.describe())),
    };
    if reduce.inputs.get(1).is_some_and(|a| !a.is_empty()) || reduce.attrs.contains_key("axes") || reduce.int("noop_with_empty_axes", 0) != 0 {
        return Err(format!("{}: the {} reduces over some axes, not all", unread(), reduce.describe()));
    }
    let sq = producer(reduce.inputs.first().map_or("", String::as_str)).ok_or_else(unread)?;
    let square = &m.nodes[sq];
    let diffs: Vec<usize> = match square.op_type.as_str() {
        "Mul" if square.inputs.len() == 2 => square.inputs.iter().map(|v| producer(v)).collect::<Option<Vec<_>>>().ok_or_else(unread)?,
        "Pow" if square.inputs.get(1).is_some_and(|e| two(m, e)) => vec![producer(&square.inputs[0]).ok_or_else(unread)?],
        _ => return Err(format!("{}: the {} does not square a difference", unread(), square.describe())),
    };
    let sides: Vec<(String, String)> =
        diffs.iter().map(|&d| sub_sides(m, &m.nodes[d])).collect::<Option<Vec<_>>>().ok_or_else(|| format!("{}: the square is not of `prediction − y` with `y` a graph input", unread()))?;
    if sides.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("{}: the {} multiplies two different differences", unread(), square.describe()));
    }
    let (prediction, target) = sides[0].clone();
    let mut tail: Vec<usize> = diffs.into_iter().chain([sq, r]).collect();
    tail.sort_unstable();
    tail.dedup();
    let outs: Vec<&String> = tail.iter().flat_map(|&i| &m.nodes[i].outputs).collect();
    if let Some(n) = m.nodes.iter().enumerate().find(|(i, n)| !tail.contains(i) && n.inputs.iter().any(|v| outs.contains(&v) || v == &target)) {
        return Err(format!("the {} reads the loss's values or the targets `{target}`: nanhunt reads a loss tail that only the loss reads", n.1.describe()));
    }
    for i in tail.into_iter().rev() {
        m.nodes.remove(i);
    }
    m.inputs.retain(|(n, _)| n != &target);
    m.outputs = vec![prediction];
    Ok((LossKind::Mse, reduction))
}

/// `(p, y)` of `Sub(p, y)` or `Sub(y, p)` (the same square) where `y` is a graph input and `p` is not.
fn sub_sides(m: &OnnxModel, n: &OnnxNode) -> Option<(String, String)> {
    let [a, b] = n.inputs.as_slice() else { return None };
    let input = |v: &str| m.inputs.iter().any(|(n, _)| n == v);
    (n.op_type == "Sub").then_some(())?;
    match (input(a), input(b)) {
        (false, true) => Some((a.clone(), b.clone())),
        (true, false) => Some((b.clone(), a.clone())),
        (true, true) | (false, false) => None,
    }
}

/// Whether `name` is a constant (an initializer or a `Constant` node's value) holding the one value 2.
fn two(m: &OnnxModel, name: &str) -> bool {
    let constant = m.tensors.get(name).cloned().or_else(|| {
        m.nodes.iter().find(|n| n.op_type == "Constant" && n.outputs.iter().any(|o| o == name)).and_then(|n| match n.attrs.get("value") {
            Some(super::Attr::Tensor(t)) => Some(t.clone()),
            _ => None,
        })
    });
    constant.is_some_and(|c| match c.values {
        Values::Float(v, _) => v == [2.0],
        Values::Int(v) => v == [2],
    })
}

#[cfg(test)]
mod tests {
    fn folder() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/onnx")
    }

    /// Loads `mlp_mse.toml` with `from` replaced by `to` from a copy of the folder; the error's text.
    fn refused(from: &str, to: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        for f in ["mlp.onnx", "mlp_mse.onnx"] {
            std::fs::copy(folder().join(f), dir.path().join(f)).unwrap();
        }
        let text = std::fs::read_to_string(folder().join("mlp_mse.toml")).unwrap();
        assert!(text.contains(from), "{from}");
        std::fs::write(dir.path().join("s.toml"), text.replace(from, to)).unwrap();
        crate::scenario::load(&dir.path().join("s.toml")).unwrap_err().to_string()
    }

    #[test]
    fn a_from_model_that_is_no_mse_tail_or_disagrees_with_the_written_kind_is_refused() {
        let e = refused("from_model = \"loss\"", "from_model = \"logits\"");
        assert!(e.contains("`loss.from_model` names `logits`, but the graph's outputs are loss"), "{e}");
        // mlp.onnx's output `y` is a Gemm's: no loss.
        let e = refused("onnx = \"mlp_mse.onnx\"", "onnx = \"mlp.onnx\"");
        assert!(e.contains("the graph's outputs are y"), "{e}");
        let e = refused("from_model = \"loss\"", "from_model = \"loss\"\nkind = \"mae\"");
        assert!(e.contains("loss.kind") && e.contains("computes the loss mse"), "{e}");
        let e = refused("onnx = \"mlp_mse.onnx\"", "layers = [{ type = \"linear\", out = 1 }]");
        assert!(e.contains("loss.from_model") && e.contains("set `[model] onnx`"), "{e}");
    }
}
