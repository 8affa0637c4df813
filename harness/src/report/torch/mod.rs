//! A scenario as a plain PyTorch script, for bug reports and for confirming a
//! finding in the framework people file them against.
//!
//! `export` writes three files: `repro.py` (the template beside this file,
//! with the scenario's model, loss, optimizer and training settings filled in
//! as JSON), `init.safetensors` (each fold's initial parameters, in the run's
//! dtype and PyTorch's layout: nanhunt keeps a linear weight as `(in, out)`,
//! PyTorch as `(out, in)`) and `data.safetensors` (each fold's training and
//! validation tensors after injection, before preprocessing (`data.preprocess` is a chain the
//! script runs itself, in order, `preprocess.rs`; after a `drop_nonfinite`), in f64, and each
//! epoch's shuffle order, and each step's dropout masks, `dropout`). nanhunt
//! owns the weights, the data and the randomness, so PyTorch runs the same
//! computation. `confirm` runs the script and compares.

use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;

use crate::error::{Error, Result};
use crate::run::data::{self, Table};
use crate::run::model::Model;
use crate::run::rng::{stream, INIT_STREAM};
use crate::run::train::Orders;
use crate::scenario::{plan, DTypeName, Named, Plan, Role, Scenario};

mod child;
mod confirm;
mod dropout;
mod preprocess;
mod stamp;

pub use confirm::{confirm, confirm_with, scratch, tolerance, ConfirmOptions, Confirmation, Scratch, TorchFirst, TorchVerdict, DEFAULT_TIMEOUT};
pub use stamp::{record, report_scenario};

/// The script's template; `@SCENARIO@` becomes the scenario as JSON.
const TEMPLATE: &str = include_str!("repro.py");

/// Most shuffle-order entries written (epochs × rows over all folds); more is refused.
const MAX_ORDER_CELLS: usize = 50_000_000;

/// One tensor for a safetensors file: its dtype, shape and little-endian bytes.
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Raw {
    fn f64s(shape: Vec<usize>, v: &[f64]) -> Raw {
        Raw { dtype: Dtype::F64, shape, bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }

    fn table(t: &Table) -> Raw {
        Raw::f64s(vec![t.rows, t.cols], &t.values)
    }
}

/// Serialises named tensors as safetensors bytes.
fn safetensors(tensors: &[(String, Raw)]) -> Result<Vec<u8>> {
    let views = tensors.iter().map(|(n, r)| TensorView::new(r.dtype, r.shape.clone(), &r.bytes).map(|v| (n.clone(), v))).collect::<std::result::Result<Vec<_>, _>>().map_err(|e| Error::Invalid {
        location: "export".into(),
        key: "tensors".into(),
        message: e.to_string(),
    })?;
    safetensors::tensor::serialize(views, None).map_err(|e| Error::Invalid { location: "export".into(), key: "tensors".into(), message: e.to_string() })
}

/// The scenario's plan, or its error under the scenario's name.
fn plan_of(s: &Scenario, data: &data::Dataset) -> Result<Plan> {
    plan(&s.model, data.shape).map_err(|(k, m)| Error::Invalid { location: s.name.clone(), key: format!("model.{k}"), message: m })
}

/// Each fold's initial parameters in the run's dtype, weight matrices transposed to PyTorch's
/// `(out, in)` (embedding tables are `(vocab, dim)` in both).
fn init_tensors(s: &Scenario, data: &data::Dataset) -> Result<Vec<(String, Raw)>> {
    let plan = plan_of(s, data)?;
    let dt = crate::run::dtype(s.train.dtype);
    // An imported graph's node keeps its weights in the file's layout, PyTorch's already.
    let mut imported = vec![false; plan.params.len()];
    for n in plan.nodes.iter().filter(|n| matches!(n.layer, crate::scenario::Layer::Onnx(_))) {
        imported[n.params.clone()].iter_mut().for_each(|b| *b = true);
    }
    let mut out = Vec::new();
    for f in 0..data.folds.len() {
        let mut init = stream(s.seed, INIT_STREAM + f as u64);
        let model = Model::new(&s.model, &plan, &mut init, dt, &candle_core::Device::Cpu)?;
        for ((p, spec), imported) in model.params.iter().zip(&plan.params).zip(&imported) {
            let t = p.var.as_tensor();
            let t = if matches!(spec.role, Role::Weight | Role::Recurrent | Role::InProj) && !imported { t.t()?.contiguous()? } else { t.clone() };
            let shape = t.dims().to_vec();
            let flat = t.flatten_all()?;
            let (dtype, bytes): (Dtype, Vec<u8>) = match s.train.dtype {
                DTypeName::F32 => (Dtype::F32, flat.to_vec1::<f32>()?.iter().flat_map(|x| x.to_le_bytes()).collect()),
                DTypeName::F64 => (Dtype::F64, flat.to_vec1::<f64>()?.iter().flat_map(|x| x.to_le_bytes()).collect()),
                DTypeName::F16 => (Dtype::F16, flat.to_vec1::<half::f16>()?.iter().flat_map(|x| x.to_le_bytes()).collect()),
                DTypeName::Bf16 => (Dtype::BF16, flat.to_vec1::<half::bf16>()?.iter().flat_map(|x| x.to_le_bytes()).collect()),
            };
            out.push((format!("fold{f}.{}", p.name), Raw { dtype, shape, bytes }));
        }
    }
    Ok(out)
}

/// Each fold's data and, with `train.shuffle`, each epoch's order (as many epochs as run).
fn data_tensors(s: &Scenario, data: &data::Dataset) -> Result<Vec<(String, Raw)>> {
    let mut out = Vec::new();
    let mut cells = 0usize;
    for (f, fold) in data.folds.iter().enumerate() {
        for (split, sp) in [("train", Some(&fold.train)), ("validation", fold.val.as_ref())] {
            let Some(sp) = sp else { continue };
            out.push((format!("fold{f}.{split}.inputs"), Raw::table(&sp.x)));
            out.push((format!("fold{f}.{split}.targets"), Raw::table(&sp.y)));
            if let Some(m) = &sp.mask {
                out.push((format!("fold{f}.{split}.mask"), Raw::table(m)));
            }
        }
        if s.train.shuffle {
            let n = fold.train.x.rows;
            let per_epoch = n.div_ceil(s.train.batch_size.unwrap_or(n).clamp(1, n.max(1)));
            let epochs = s.train.max_steps.map_or(s.train.epochs, |m| s.train.epochs.min(m.div_ceil(per_epoch.max(1))));
            cells = cells.saturating_add(epochs.saturating_mul(n));
            if cells > MAX_ORDER_CELLS {
                let message = format!("{epochs} epochs of {n} rows is more shuffle order than an export holds ({MAX_ORDER_CELLS} entries); lower train.epochs or set train.max_steps");
                return Err(Error::Invalid { location: s.name.clone(), key: "train.epochs".into(), message });
            }
            let mut orders = Orders::new(s, f, n);
            let mut bytes = Vec::with_capacity(epochs * n * 8);
            for _ in 0..epochs {
                orders.shuffle();
                bytes.extend(orders.order.iter().flat_map(|&i| i64::from(i).to_le_bytes()));
            }
            out.push((format!("fold{f}.order"), Raw { dtype: Dtype::I64, shape: vec![epochs, n], bytes }));
        }
    }
    out.extend(dropout::masks(s, data, &plan_of(s, data)?)?);
    Ok(out)
}

/// What the script needs to know of the scenario, as JSON: the layers as written (with their
/// defaults), and the plan's nodes in nanhunt's watch order: names, parameters, autocast class
/// (`low`, `f32` or `same`, nanhunt's own) and a registry op's PyTorch expression (`Op::torch`),
/// from which `repro.py` builds the node.
fn settings(s: &Scenario, data: &data::Dataset) -> Result<serde_json::Value> {
    let plan = plan_of(s, data)?;
    // An imported model's layers as a stack of their own: `repro.py` builds them under their
    // positional names (`layers.0.linear`), which `key` and `rename` map to the graph's.
    let stack = crate::scenario::ModelSpec { layers: s.model.stack().to_vec(), onnx: None, ..s.model.clone() };
    let positional = plan_of(&Scenario { model: stack.clone(), ..s.clone() }, data)?;
    let rename: serde_json::Map<String, serde_json::Value> = module_names(&positional).into_iter().zip(&plan.params).filter(|(a, b)| *a != b.name).map(|(a, b)| (a, json!(b.name))).collect();
    // A top-level layer's name tag: an imported graph's `onnx` nodes read that layer's output
    // (a recurrent cell's) by it.
    let tags: std::collections::BTreeMap<String, &str> = stack.layers.iter().enumerate().filter_map(|(i, l)| l.tag().0.map(|t| (format!("layers.{i}.{}", l.untagged().name()), t))).collect();
    let nodes: Vec<serde_json::Value> = plan
        .nodes
        .iter()
        .zip(&positional.nodes)
        .map(|(n, key)| {
            let params: Vec<&String> = plan.params[n.params.clone()].iter().map(|p| &p.name).collect();
            let autocast = crate::run::model::node_policy(n).name();
            // An expression's inputs after `x`: each earlier named output, by its node's index.
            let reads: Vec<serde_json::Value> = n.inputs.iter().skip(1).zip(reads_of(&n.layer)).map(|(i, name)| json!([name, input_index(*i)])).collect();
            let (expr, module) = match Some(n.layer.op().torch()) {
                Some(crate::ops::Torch::Expr(e)) => (Some(e), None),
                Some(crate::ops::Torch::Module(m)) => (None, Some(m)),
                None => (None, None),
            };
            let precision = n.precision.map(|p| p.name());
            json!({ "name": n.name, "key": key.name, "params": params, "autocast": autocast, "precision": precision, "reads": reads, "torch": expr, "module": module, "tag": tags.get(&key.name) })
        })
        .collect();
    // The width each layer reads (its main input's): an image's channels, else the last dimension.
    let input_shape = |n: &crate::scenario::Node| match n.input() {
        crate::scenario::Input::Model => data.shape.shape(),
        crate::scenario::Input::Node(i) => plan.nodes[i].shape,
    };
    let widths: serde_json::Map<String, serde_json::Value> = plan
        .nodes
        .iter()
        .zip(&positional.nodes)
        .filter(|(n, _)| n.part == crate::scenario::Part::Whole)
        .map(|(n, key)| {
            let w = match input_shape(n) {
                crate::scenario::Shape::Image { channels, .. } => channels,
                s => s.width(),
            };
            (key.name.clone(), json!(w))
        })
        .collect();
    let t = &s.train;
    Ok(json!({
        "name": s.name,
        "dtype": s.train.dtype.name(),
        "seq_len": s.data.seq_len,
        "vocab": data.shape.vocab,
        "image": s.data.image,
        "next_token": s.data.targets == Some(crate::scenario::TargetSpec::NextToken),
        "folds": data.folds.len(),
        "layers": stack.layers,
        "nodes": nodes,
        "rename": rename,
        "in_widths": widths,
        "loss": s.loss,
        "loss_torch": crate::ops::loss::Loss(s.loss.clone()).torch_expr(),
        "optimizer": s.optimizer,
        "precision": t.precision.name(),
        "autocast_f32": crate::ops::expr::amp::torch_f32_names(),
        "train": { "epochs": t.epochs, "batch_size": t.batch_size, "shuffle": t.shuffle, "max_steps": t.max_steps, "accumulate": t.accumulate, "schedule": t.schedule, "loss_scale": t.loss_scale },
    }))
}

/// Each parameter of the positional plan as repro.py's modules name it: the plan's name, but an
/// imported graph's node's under its `Onnx` module's attribute (`layers.3.onnx.block_ln1_weight`).
fn module_names(positional: &Plan) -> Vec<String> {
    let mut names: Vec<String> = positional.params.iter().map(|p| p.name.clone()).collect();
    for n in &positional.nodes {
        if let crate::scenario::Layer::Onnx(o) = &n.layer {
            for (k, a) in n.params.clone().zip(o.attrs()) {
                names[k] = format!("{}.{a}", n.name);
            }
        }
    }
    names
}

/// The names an expression layer reads besides `x` (earlier named outputs), in its inputs' order.
fn reads_of(layer: &crate::scenario::Layer) -> Vec<String> {
    match layer {
        crate::scenario::Layer::Expr(e) => e.reads(),
        _ => Vec::new(),
    }
}

/// The index of a node's output in the script's list of outputs (`None` for the model's input).
fn input_index(i: crate::scenario::Input) -> Option<usize> {
    match i {
        crate::scenario::Input::Node(j) => Some(j),
        crate::scenario::Input::Model => None,
    }
}

/// The files an export writes, and the trace its script writes beside them.
const OWNED: [&str; 4] = ["repro.py", "init.safetensors", "data.safetensors", "trace.torch.csv"];

/// Whether `name` is one of [`OWNED`] or a temporary file an interrupted write of one left.
fn owned(name: &str) -> bool {
    OWNED.contains(&name) || name.strip_prefix('.').is_some_and(|n| OWNED.iter().any(|o| n.strip_prefix(o).is_some_and(|r| r.starts_with(".tmp."))))
}

/// Readies `dir` for an export: refuses a folder holding anything an export did not write,
/// and removes an earlier run's trace (it would describe another repro).
fn clear(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut names = Vec::new();
    for e in entries {
        names.push(e.map_err(|e| Error::io(dir, e))?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    if let Some(other) = names.iter().find(|n| !owned(n)) {
        let message = format!("the folder holds `{other}`, which export-torch did not write: export into a new or empty folder, or one an earlier export wrote");
        return Err(Error::Invalid { location: dir.display().to_string(), key: "out".into(), message });
    }
    for n in names.iter().filter(|n| n.as_str() != "repro.py" && !n.ends_with(".safetensors")) {
        std::fs::remove_file(dir.join(n)).map_err(|e| Error::io(dir.join(n), e))?;
    }
    Ok(())
}

/// Writes `repro.py`, `init.safetensors` and `data.safetensors` for `s` into `dir` (created if
/// needed), each atomically. A `dir` that holds other files than an earlier export's is
/// refused; an earlier export's are replaced, and its script's `trace.torch.csv` removed.
pub fn export(s: &Scenario, dir: &Path) -> Result<()> {
    if let Some(c) = &s.model.code {
        let message = format!("the model is the Rust code `{}`: only layer stacks are exported to PyTorch", c.name);
        return Err(Error::Invalid { location: s.name.clone(), key: "model.code".into(), message });
    }
    crate::scenario::check_memory(s)?;
    let data = data::build(s)?;
    let init = safetensors(&init_tensors(s, &data)?)?;
    let (before, steps) = preprocess::chain(s, data.shape.features)?;
    let tensors = safetensors(&data_tensors(s, before.as_ref().unwrap_or(&data))?)?;
    let mut settings = settings(s, &data)?;
    settings["preprocess"] = json!(steps);
    let pretty = serde_json::to_string_pretty(&settings).map_err(|e| Error::Invalid { location: s.name.clone(), key: "export".into(), message: e.to_string() })?;
    let script = TEMPLATE.replace("@SCENARIO@", &pretty);
    clear(dir)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    crate::atomic::write(&dir.join("init.safetensors"), &init)?;
    crate::atomic::write(&dir.join("data.safetensors"), &tensors)?;
    crate::atomic::write(&dir.join("repro.py"), script.as_bytes())
}
