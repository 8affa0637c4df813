//! A CNN's nodes in a chain (issue 30): ONNX's `Conv`, `BatchNormalization`, `MaxPool`,
//! `AveragePool`, `Flatten`, and the `Reshape` that `nn.Flatten` exports, each compiled to the
//! registry layer its PyTorch module is (`conv2d`, `batch_norm`, `max_pool2d`, `avg_pool2d`,
//! `flatten`), its weights in PyTorch's layout `(out, in, k, k)` as the file holds them, so the
//! convolution and pooling kernels, the watch, autocast and `export-torch` work on it unchanged.
//! The chain tracks its value's dims past the batch to check each window against them.
//!
//! What those layers compute is all a node may ask for; anything else is refused with the node's
//! op type, name and module path: a convolution over images with a square kernel, one stride,
//! one padding on every side, no dilation, `group = 1` and a bias (`nn.Conv2d(..., bias=True)`);
//! a pooling whose stride is its window, unpadded, in floor mode (`nn.MaxPool2d(k)`,
//! `nn.AvgPool2d(k)`); a batch norm whose running statistics are PyTorch's fresh mean 0 and
//! variance 1.
//!
//! Batch norm: `torch.onnx.export(..., dynamo=True)` writes the same `BatchNormalization` node
//! (inference form: `training_mode` 0, one output) whether the module was in `train()` or
//! `eval()` mode. nanhunt imports it as `nn.BatchNorm2d` trains: batch statistics in training
//! steps, the running statistics (moved by PyTorch's `momentum` = 1 − ONNX's) in validation.
//!
//! [`Side`] finds the nodes that compute a shape rather than data (`Shape(x)` of the graph's
//! input, and what reads only such values and integer constants: the batch-sized target of
//! `nn.Flatten`'s reshape under a dynamic batch) and folds them at two stand-in batches, so a
//! reshape is imported as a flatten only when it keeps the batch at any size.

use std::collections::{BTreeMap, BTreeSet};

use super::super::{Attr, Const, OnnxModel, OnnxNode, Values};
use super::Chain;
use crate::ops::batch_norm::BatchNorm;
use crate::ops::conv::Conv2d;
use crate::ops::flatten::Flatten;
use crate::ops::pool2d::{AvgPool2d, MaxPool2d};
use crate::scenario::Layer;

/// The op types a chain compiles beside `compile::SUPPORTED`: the CNN ops and what folds a reshape's target.
pub const SUPPORTED: [&str; 12] = ["Conv", "BatchNormalization", "MaxPool", "AveragePool", "Flatten", "Reshape", "Shape", "Squeeze", "Unsqueeze", "Concat", "Gather", "Cast"];

/// The op types only a CNN chain compiles: a graph holding one is a chain or is refused with the chain's reason.
pub const CNN: [&str; 5] = ["Conv", "BatchNormalization", "MaxPool", "AveragePool", "Flatten"];

/// The stand-in batches a shape is folded at.
const BATCHES: [i64; 2] = [2, 3];

/// A node's layer, its parameters (name, dims, values) and its output's dims past the batch.
type Out = (Layer, Vec<(String, Vec<usize>, Vec<f64>)>, Vec<usize>);

/// The nodes that compute a shape rather than data, and their integer values at [`BATCHES`].
pub(super) struct Side {
    nodes: BTreeSet<usize>,
    at: [BTreeMap<String, Vec<i64>>; 2],
}

impl Side {
    /// Finds and folds `m`'s shape nodes: those that read no data, and `Shape` of the graph's input.
    pub(super) fn new(m: &OnnxModel) -> Side {
        let mut data: BTreeSet<&str> = m.inputs.iter().map(|(n, _)| n.as_str()).collect();
        let ints: BTreeMap<String, Vec<i64>> = m.tensors.iter().filter_map(|(k, c)| if let Values::Int(v) = &c.values { Some((k.clone(), v.clone())) } else { None }).collect();
        let mut side = Side { nodes: BTreeSet::new(), at: [ints.clone(), ints] };
        for (i, n) in m.nodes.iter().enumerate() {
            if n.op_type != "Shape" && n.inputs.iter().any(|x| data.contains(x.as_str())) {
                data.extend(n.outputs.iter().map(String::as_str));
                continue;
            }
            side.nodes.insert(i);
            for (k, &b) in BATCHES.iter().enumerate() {
                if let (Some(v), Some(out)) = (fold(m, n, &side.at[k], b), n.outputs.first()) {
                    side.at[k].insert(out.clone(), v);
                }
            }
        }
        side
    }

    /// Whether node `i` computes a shape (the chain skips it).
    pub(super) fn skips(&self, i: usize) -> bool {
        self.nodes.contains(&i)
    }

    /// Whether the value `name` folded.
    pub(super) fn has(&self, name: &str) -> bool {
        self.at[0].contains_key(name)
    }
}

/// Node `n`'s integer output at batch `b` from the folded `vals`, if it folds.
fn fold(m: &OnnxModel, n: &OnnxNode, vals: &BTreeMap<String, Vec<i64>>, b: i64) -> Option<Vec<i64>> {
    let arg = |i: usize| n.inputs.get(i).and_then(|x| vals.get(x));
    match n.op_type.as_str() {
        "Constant" => match (n.attrs.get("value"), n.attrs.get("value_int"), n.attrs.get("value_ints")) {
            (Some(Attr::Tensor(Const { values: Values::Int(v), .. })), ..) => Some(v.clone()),
            (_, Some(Attr::Int(i)), _) => Some(vec![*i]),
            (_, _, Some(Attr::Ints(v))) => Some(v.clone()),
            _ => None,
        },
        "Shape" => {
            let (_, dims) = m.inputs.iter().find(|(name, _)| Some(name) == n.inputs.first())?;
            let full: Vec<i64> = dims.iter().enumerate().map(|(i, d)| if i == 0 { Some(b) } else { d.map(|d| d as i64) }).collect::<Option<_>>()?;
            let r = full.len() as i64;
            let at = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let (s, e) = (at(n.int("start", 0)), at(n.int("end", r)));
            full.get(s..e.max(s)).map(<[i64]>::to_vec)
        }
        // Rank changes and casts keep a shape vector's values.
        "Squeeze" | "Unsqueeze" | "Reshape" | "Cast" | "Identity" => arg(0).cloned(),
        "Concat" => n.inputs.iter().map(|x| vals.get(x).cloned()).collect::<Option<Vec<_>>>().map(|v| v.concat()),
        "Gather" if n.int("axis", 0) == 0 => {
            let (d, idx) = (arg(0)?, arg(1)?);
            idx.iter().map(|&i| usize::try_from(if i < 0 { i + d.len() as i64 } else { i }).ok().and_then(|i| d.get(i).copied())).collect()
        }
        _ => None,
    }
}

impl Chain<'_> {
    /// Compiles node `n` if it is a CNN op (see the module's doc); `false` if it is not one.
    pub(super) fn cnn(&mut self, n: &OnnxNode) -> Result<bool, String> {
        if !["Conv", "BatchNormalization", "MaxPool", "AveragePool", "Flatten", "Reshape"].contains(&n.op_type.as_str()) {
            return Ok(false);
        }
        let dims = self.dims.clone().ok_or_else(|| format!("the {} needs its input's dims: export the model with static dims beyond the batch", n.describe()))?;
        let (layer, params, dims) = match n.op_type.as_str() {
            "Conv" => self.conv(n, &dims)?,
            "BatchNormalization" => self.batch_norm(n, &dims)?,
            "Flatten" if n.int("axis", 1) == 1 => (Layer::Flatten(Flatten {}), Vec::new(), vec![count(&dims).ok_or_else(|| too_many(n, &dims))?]),
            "Flatten" => return Err(format!("the {} flattens from axis {}; nanhunt imports a flatten of all but the batch (axis 1)", n.describe(), n.int("axis", 1))),
            "Reshape" => self.flatten(n, &dims)?,
            _ => pool(n, &dims)?,
        };
        self.push(n, layer, params);
        self.dims = Some(dims);
        Ok(true)
    }

    /// `Conv(x, W, B)` over images: a `conv2d` layer.
    fn conv(&self, n: &OnnxNode, dims: &[usize]) -> Result<Out, String> {
        let d = n.describe();
        let w = n.inputs.get(1).ok_or_else(|| format!("the {d} has no weight"))?;
        let (wd, weight) = self.float(n, w)?;
        let [out, cin, kh, kw] = wd[..] else {
            return Err(format!("the {d}'s weight `{w}` has dims {wd:?}: nanhunt imports a convolution over images (`nn.Conv2d`, weight (out, in, kh, kw))"));
        };
        if n.int("group", 1) != 1 {
            return Err(format!("the {d} has group = {}: nanhunt imports a convolution with group = 1", n.int("group", 1)));
        }
        let explicit = explicit_pads(n)?;
        if kh != kw || ints(n, "kernel_shape").is_some_and(|k| k != [kh as i64, kw as i64]) {
            return Err(format!("the {d}'s kernel is {kh} × {kw}: nanhunt imports a square kernel"));
        }
        let stride = same(n, "strides", 2, 1)?;
        let padding = if explicit { same(n, "pads", 4, 0)? } else { 0 };
        if same(n, "dilations", 2, 1)? != 1 {
            return Err(format!("the {d} is dilated: nanhunt imports a convolution with dilation 1"));
        }
        let Some(b) = n.inputs.get(2).filter(|b| !b.is_empty()) else {
            return Err(format!("the {d} has no bias: nanhunt imports `nn.Conv2d` with a bias (bias=True)"));
        };
        let (bd, bias) = self.float(n, b)?;
        if bd != [out] {
            return Err(format!("the {d}'s bias `{b}` has dims {bd:?}, not ({out})"));
        }
        let [c, h, wi] = dims[..] else { return Err(format!("the {d} reads dims {dims:?} past the batch: a convolution over images reads (channels, height, width)")) };
        let padded = |x: usize| x.saturating_add(padding.saturating_mul(2));
        if c != cin || stride == 0 || kh > padded(h) || kw > padded(wi) {
            return Err(format!("the {d}'s {out}×{cin}×{kh}×{kw} kernel (stride {stride}, padding {padding}) does not fit its input ({c}, {h}, {wi})"));
        }
        let len = |x: usize| (padded(x) - kh) / stride + 1;
        let layer = Layer::Conv2d(Conv2d { channels: out, kernel: kh, stride, padding, init: None });
        Ok((layer, vec![(w.clone(), wd, weight), (b.clone(), bd, bias)], vec![out, len(h), len(wi)]))
    }

    /// `BatchNormalization(x, scale, B, mean, var)`: a `batch_norm` layer (`nn.BatchNorm1d`/`2d`).
    fn batch_norm(&self, n: &OnnxNode, dims: &[usize]) -> Result<Out, String> {
        let d = n.describe();
        let [_, scale, shift, mean, var] = &n.inputs[..] else { return Err(format!("the {d} has {} inputs, not 5", n.inputs.len())) };
        let c = dims.first().copied().unwrap_or(0);
        let mut got = Vec::new();
        for name in [scale, shift, mean, var] {
            let (vd, v) = self.float(n, name)?;
            if vd != [c] {
                return Err(format!("the {d}'s `{name}` has dims {vd:?}, not its input's {c} channels"));
            }
            got.push(v);
        }
        if got[2].iter().any(|&v| v != 0.0) || got[3].iter().any(|&v| v != 1.0) {
            return Err(format!(
                "the {d}'s running statistics `{mean}` and `{var}` are not PyTorch's fresh mean 0 and variance 1: nanhunt starts a batch norm's running statistics there, so it imports a model exported before training"
            ));
        }
        self.read_only_first(n)?;
        let bn = BatchNorm { eps: decimal(n.float("epsilon", 1e-5)), momentum: ((1.0 - decimal(n.float("momentum", 0.9))) * 1e12).round() / 1e12 };
        let mut got = got.into_iter();
        let params = vec![(scale.clone(), vec![c], got.next().unwrap_or_default()), (shift.clone(), vec![c], got.next().unwrap_or_default())];
        Ok((Layer::BatchNorm(bn), params, dims.to_vec()))
    }

    /// `Reshape(x, target)` that keeps the batch and flattens the rest at every batch size: a `flatten` layer.
    fn flatten(&self, n: &OnnxNode, dims: &[usize]) -> Result<Out, String> {
        let d = n.describe();
        let t = n.inputs.get(1).ok_or_else(|| format!("the {d} has no target shape"))?;
        let rest = count(dims).ok_or_else(|| too_many(n, dims))?;
        let stat = self.out.input.1.first().copied().flatten().map(|b| b as i64);
        let (Some(t0), Some(t1)) = (self.side.at[0].get(t), self.side.at[1].get(t)) else {
            return Err(format!("the {d}'s target shape `{t}` is computed in a way nanhunt does not fold (it folds constants and the input's Shape)"));
        };
        for (k, &b) in BATCHES.iter().enumerate() {
            let mut target = if k == 0 { t0.clone() } else { t1.clone() };
            // A graph exported at a static batch reshapes to that batch: the data's batch, as the graph compiler keeps it.
            if t0 == t1 && stat.is_some() && target.first().copied() == stat {
                target[0] = b;
            }
            let input: Vec<usize> = std::iter::once(b as usize).chain(dims.iter().copied()).collect();
            if reshaped(&input, &target, n.int("allowzero", 0) != 0) != Some(vec![b as usize, rest]) {
                return Err(format!("the {d} reshapes ({}) to {t0:?}: nanhunt imports a reshape that flattens all but the batch (`nn.Flatten`, `x.view(x.size(0), -1)`)", dims_text(dims)));
            }
        }
        Ok((Layer::Flatten(Flatten {}), Vec::new(), vec![rest]))
    }

    /// Refuses a node whose second or later output another node reads (the layer makes only the first).
    fn read_only_first(&self, n: &OnnxNode) -> Result<(), String> {
        let extra: Vec<&String> = n.outputs.iter().skip(1).filter(|o| !o.is_empty()).collect();
        match self.m.nodes.iter().flat_map(|m| &m.inputs).find(|i| extra.contains(i)) {
            Some(o) => Err(format!("the {}'s output `{o}` is read: nanhunt imports only its first output", n.describe())),
            None => Ok(()),
        }
    }
}

/// `MaxPool` or `AveragePool` whose stride is its square window, unpadded, in floor mode.
fn pool(n: &OnnxNode, dims: &[usize]) -> Result<Out, String> {
    let d = n.describe();
    let k = match ints(n, "kernel_shape").as_deref() {
        Some(&[a, b]) if a == b && a > 0 => a as usize,
        other => return Err(format!("the {d}'s window is {other:?}: nanhunt imports a square window over images (`nn.MaxPool2d(k)`, `nn.AvgPool2d(k)`)")),
    };
    let explicit = explicit_pads(n)?;
    let stride = same(n, "strides", 2, 1)?;
    let padded = explicit && same(n, "pads", 4, 0)? != 0;
    if stride != k || padded || same(n, "dilations", 2, 1)? != 1 || n.int("ceil_mode", 0) != 0 {
        return Err(format!(
            "the {d} has window {k}, stride {stride}{}{}: nanhunt imports a pooling whose stride is its window, without padding or dilation, in floor mode (ceil_mode = 0)",
            if padded { ", padding" } else { "" },
            if n.int("ceil_mode", 0) != 0 { ", ceil_mode = 1" } else { "" }
        ));
    }
    if n.outputs.len() > 1 && n.outputs[1..].iter().any(|o| !o.is_empty()) {
        return Err(format!("the {d} also writes the max's indices: nanhunt imports a pooling's values only"));
    }
    let [c, h, w] = dims[..] else { return Err(format!("the {d} reads dims {dims:?} past the batch: a pooling over images reads (channels, height, width)")) };
    if k > h || k > w {
        return Err(format!("the {d}'s window {k} does not fit its input ({c}, {h}, {w})"));
    }
    let layer = if n.op_type == "MaxPool" { Layer::MaxPool2d(MaxPool2d { kernel: k }) } else { Layer::AvgPool2d(AvgPool2d { kernel: k }) };
    Ok((layer, Vec::new(), vec![c, h / k, w / k]))
}

/// Whether node `n`'s `pads` apply: `auto_pad` NOTSET (explicit pads, as PyTorch exports) or VALID (none).
fn explicit_pads(n: &OnnxNode) -> Result<bool, String> {
    match n.string("auto_pad", "NOTSET").as_str() {
        "NOTSET" => Ok(true),
        "VALID" => Ok(false),
        other => Err(format!("the {} pads with auto_pad = {other}: nanhunt imports explicit pads (NOTSET), as PyTorch exports them", n.describe())),
    }
}

/// Integer list attribute `key` of `n`.
fn ints(n: &OnnxNode, key: &str) -> Option<Vec<i64>> {
    match n.attrs.get(key) {
        Some(Attr::Ints(v)) => Some(v.clone()),
        _ => None,
    }
}

/// The one value of attribute `key` (`len` entries, all equal and ≥ 0), or `default` if absent.
fn same(n: &OnnxNode, key: &str, len: usize, default: usize) -> Result<usize, String> {
    let Some(v) = ints(n, key) else { return Ok(default) };
    match v.first() {
        Some(&a) if v.len() == len && a >= 0 && v.iter().all(|&b| b == a) => Ok(a as usize),
        _ => Err(format!("the {} has {key} {v:?}: nanhunt imports the same {key} along every side", n.describe())),
    }
}

/// ONNX's `Reshape` of `input` to `target` (0 copies the input's dim unless `allowzero`, −1 is inferred).
fn reshaped(input: &[usize], target: &[i64], allowzero: bool) -> Option<Vec<usize>> {
    let total = count(input)?;
    let mut out: Vec<Option<usize>> = Vec::with_capacity(target.len());
    for (i, &t) in target.iter().enumerate() {
        out.push(match t {
            0 if !allowzero => Some(*input.get(i)?),
            -1 => None,
            t => Some(usize::try_from(t).ok()?),
        });
    }
    let known = count(&out.iter().flatten().copied().collect::<Vec<_>>())?;
    match out.iter().filter(|d| d.is_none()).count() {
        0 => (known == total).then(|| out.into_iter().flatten().collect()),
        1 if known > 0 && total % known == 0 => Some(out.into_iter().map(|d| d.unwrap_or(total / known)).collect()),
        _ => None,
    }
}

/// The decimal a PyTorch float argument was before ONNX stored it as f32 (`1e-5` for
/// 9.99999974738e-6): the shortest decimal that rounds to the same f32.
fn decimal(f: f32) -> f64 {
    f.to_string().parse().unwrap_or(f64::from(f))
}

/// The number of values of `dims`, if it fits a `usize`.
fn count(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Node `n` flattens more values than nanhunt counts.
fn too_many(n: &OnnxNode, dims: &[usize]) -> String {
    format!("the {} flattens ({}), more values per row than nanhunt counts", n.describe(), dims_text(dims))
}

fn dims_text(dims: &[usize]) -> String {
    std::iter::once("batch".to_string()).chain(dims.iter().map(usize::to_string)).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
