//! Models written in Rust with Candle, run by the same runner as layer stacks.
//!
//! A [`CodeModel`] is a name and a pair of closures: `build` makes the model
//! from a [`ParamStore`] (or the candle-nn `VarBuilder` it hands out), and
//! `forward` runs it on a batch, naming tensors for the watch through a
//! [`Watch`]. Everything else (data, loss, optimizer, schedule, precision,
//! `[search]`, `[expect]`) is the scenario format's: [`CodeModel::scenario`]
//! reads a TOML file without a layer stack and puts the model in its place
//! (`[model] code = "name"`). From there the scenario runs, hunts and shrinks
//! like any other; a scenario copied by a mutation carries the model along.
//!
//! Before the first step the runner builds the model once and runs one
//! validation-mode forward on two rows: that gives the names the forward checks
//! (the trace's columns), the output's shape (the targets' shape) and the
//! [`ModelCard`] a report records: the parameters' names and shapes and a hash
//! of their initial values.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::run::net::{Net, Param};
use crate::scenario::{Code, Init, ParamSpec, Plan, Role, Scenario, Shape};

mod card;
mod checks;
mod net;
mod store;
#[cfg(test)]
mod tests;

pub use card::ModelCard;
pub use checks::Watch;
pub(crate) use net::CodeNet;
use net::{code_error, Build, Pair};
pub use store::ParamStore;

/// A model written in Rust: a name, how to build it and how to run it.
#[derive(Clone)]
pub struct CodeModel {
    name: String,
    build: Arc<dyn Build>,
}

impl CodeModel {
    /// A model named `name`, made by `build` and run by `forward` (see the crate docs).
    pub fn new<M, B, F>(name: impl Into<String>, build: B, forward: F) -> Self
    where
        M: 'static,
        B: Fn(&ParamStore) -> candle_core::Result<M> + Send + Sync + 'static,
        F: Fn(&M, &Tensor, &mut Watch) -> candle_core::Result<Tensor> + Send + Sync + 'static,
    {
        CodeModel { name: name.into(), build: Arc::new(Pair { build, forward: Arc::new(forward) }) }
    }

    /// The model's name, as reports record it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Scenario text without a layer stack (its `[model]` table, if any, holds only `init_scale`),
    /// validated with this model in place of the stack; `origin` names it in `FILE:LINE:COL` errors.
    pub fn scenario(&self, toml: &str, origin: &str) -> Result<Scenario> {
        let text = with_model_table(toml.to_string());
        let mut s = crate::scenario::parse_str(&text, origin)?;
        s.model.code = Some(self.code());
        crate::scenario::check_text(&s, &text, origin)?;
        Ok(s)
    }

    /// [`CodeModel::scenario`] of a file, read as [`crate::load`] reads one (CSV paths beside it).
    pub fn scenario_file(&self, path: &std::path::Path) -> Result<Scenario> {
        self.scenario_file_with(path, &Default::default())
    }

    /// [`CodeModel::scenario_file`] with the read limits of `opts`.
    pub fn scenario_file_with(&self, path: &std::path::Path, opts: &crate::scenario::LoadOptions) -> Result<Scenario> {
        crate::scenario::load_edited(path, opts, &with_model_table, &|s| s.model.code = Some(self.code()))
    }

    /// `s` with this model in place of its layer stack (for scenarios made in Rust or read back
    /// from a report).
    pub fn attach(&self, mut s: Scenario) -> Scenario {
        s.model.layers.clear();
        s.model.code = Some(self.code());
        s
    }

    fn code(&self) -> Code {
        Code { name: self.name.clone(), handle: Some(Arc::new(self.clone())) }
    }
}

/// Scenario text with a `[model]` table: one without gets an empty one at its end, where no
/// line moves (the code model is put in it once parsed).
fn with_model_table(text: String) -> String {
    match text.parse::<toml::Table>() {
        Ok(t) if !t.contains_key("model") => format!("{text}\n[model]\n"),
        _ => text,
    }
}

/// Runs `s` with `model` in place of its layer stack: [`crate::run`] for a model written in Rust.
pub fn run_module(model: &CodeModel, s: &Scenario) -> crate::run::Outcome {
    crate::run::run(&model.attach(s.clone()))
}

/// The code model a scenario carries, or why it has none.
fn model_of(s: &Scenario) -> Result<Option<CodeModel>> {
    let Some(code) = &s.model.code else { return Ok(None) };
    match code.handle.as_ref().and_then(|h| h.downcast_ref::<CodeModel>()) {
        Some(m) => Ok(Some(m.clone())),
        None => Err(Error::Invalid {
            location: s.name.clone(),
            key: "model.code".into(),
            message: format!("the model is the Rust code `{}`, which a scenario file cannot hold: run it from Rust (`nanhunt::run_module`, or the test that wrote this report)", code.name),
        }),
    }
}

/// The name of a code model's output among the checked tensors.
pub(crate) const OUTPUT: &str = "model.output";

/// Builds the scenario's code model for one fold: its parameters (from the fold's init stream)
/// and its forward. With the `plan` discovery found, its checks are expected and its
/// parameters must be the plan's, in the same order (a build that follows a hash map's
/// order would name every gradient wrongly).
pub(crate) fn build(s: &Scenario, fold: usize, dtype: DType, dev: &Device, plan: Option<&Plan>) -> Result<Option<CodeNet>> {
    let Some(model) = model_of(s)? else { return Ok(None) };
    let store = ParamStore::new(s.seed, crate::run::rng::INIT_STREAM + fold as u64, s.model.init_scale, dtype, dev);
    let forward = model.build.build(&store)?;
    let params = store.params();
    let names = match plan {
        Some(plan) => {
            let now: Vec<(&str, &[usize])> = params.iter().map(|p| (p.name.as_str(), p.var.dims())).collect();
            let then: Vec<(&str, &[usize])> = plan.params.iter().map(|p| (p.name.as_str(), p.shape.as_slice())).collect();
            if now != then {
                return Err(code_error(format!("`build` made the parameters {now:?}, but its first build made {then:?}: make the same parameters, in the same order, every time")));
            }
            plan.layer_names[..plan.layer_names.len().saturating_sub(1)].to_vec()
        }
        None => Vec::new(),
    };
    Ok(Some(CodeNet::new(forward, store, names)))
}

/// Why a name given to `Watch::check` cannot be used, if it cannot: it must be printable, fit
/// a CSV header unquoted, and not be a name the watch gives its own tensors.
fn bad_name(name: &str, params: &[Param]) -> Option<String> {
    let reserved = ["data.", "validation.", "optim.", "model."];
    if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace() || c == ',' || c == '"') {
        Some("names are printable, without spaces, commas or quotes (they head the trace's CSV columns)".into())
    } else if name == "loss" || name == "loss_scale" || name.ends_with(".grad") || reserved.iter().any(|r| name.starts_with(r)) {
        Some("`loss`, `loss_scale`, `*.grad` and names under `data.`, `validation.`, `optim.` and `model.` are the watch's own".into())
    } else if params.iter().any(|p| p.name == name) {
        Some("that is a parameter's name".into())
    } else {
        None
    }
}

/// The plan of a code model, found by building it and running one forward on `x` (two rows),
/// and its card; `None` for a layer stack.
pub(crate) fn discover(s: &Scenario, x: &Tensor, mask: Option<&Tensor>, dtype: DType, dev: &Device) -> Result<Option<(Plan, ModelCard)>> {
    let Some(net) = build(s, 0, dtype, dev, None)? else { return Ok(None) };
    let net = net.with_autocast(s.train.precision.low().map(crate::run::dtype));
    let (checks, out) = net.checked(x, mask, false, None)?;
    let params = net.params();
    let invalid = |message: String| Error::Invalid { location: s.name.clone(), key: "model.code".into(), message };
    let mut names: Vec<String> = checks.iter().map(|(n, _)| n.clone()).collect();
    for (i, n) in names.iter().enumerate() {
        if let Some(why) = bad_name(n, params) {
            return Err(invalid(format!("`Watch::check` cannot name a tensor `{n}`: {why}")));
        }
        if names[..i].contains(n) {
            return Err(invalid(format!("`Watch::check` named `{n}` twice: each checked tensor needs its own name")));
        }
    }
    let out_shape = match out.dims() {
        [_, k] => Shape::Flat(*k),
        [_, len, width] => Shape::Seq { len: *len, width: *width },
        d => return Err(invalid(format!("the forward returned a tensor of shape {d:?}: it must be (batch, k) or (batch, seq, k), one row per example"))),
    };
    // Per step of a sequence, as the memory estimate counts a layer's width.
    let steps = s.data.seq_len.unwrap_or(1).max(1);
    let per_step = |t: &Tensor| (t.elem_count() / t.dims().first().copied().unwrap_or(1).max(1)).div_ceil(steps);
    let widths = checks.iter().map(|(_, t)| per_step(t)).chain([per_step(&out)]).collect();
    names.push(OUTPUT.into());
    let spec = |p: &Param| ParamSpec { name: p.name.clone(), shape: p.var.dims().to_vec(), role: Role::Weight, fan_in: 0, fan_out: 0, torch_fan: 0, init: Init::Torch };
    let plan = Plan { params: params.iter().map(spec).collect(), nodes: Vec::new(), layer_names: names, widths, out_width: out_shape.cols(), out: out_shape, attention_cells: 0 };
    let card = ModelCard::of(net_name(s), params)?;
    Ok(Some((plan, card)))
}

fn net_name(s: &Scenario) -> String {
    s.model.code.as_ref().map_or_else(String::new, |c| c.name.clone())
}
