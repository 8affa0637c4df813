//! The model: a layer stack built from a [`ModelSpec`], with named parameters
//! initialised from our own seeded stream (`init`; Candle's CPU RNG cannot be
//! seeded). One file per layer family, as candle-nn has: `recurrent`, `norm`, `conv`,
//! `sequence` and `attention` hold the kernels of the registry's layers (`crate::ops`),
//! which `forward_with` runs through `Layer::op` with each node's context (its
//! parameters, the dropout stream, its state); the elementwise kernels are in `run::kernel`.
//!
//! Parameter names, shapes and order, and the dataflow between nodes (each
//! node's inputs: residual sums, attention's steps), come from the scenario's
//! static [`Plan`], so iteration never depends on a hash map. `attention` holds
//! the kernels of the registry's attention (`ops::attention`), `sequence` the
//! other sequence layers.

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use crate::ops::{Cx, Params, State, Table};
use crate::run::net::{Net, Param, Wide, Wrt};
use crate::run::watch::{extent, Stats};
use crate::scenario::{Input, Layer, ModelSpec, Node, Plan, Role};

pub(crate) mod attention;
mod autocast;
pub(crate) mod conv;
mod init;
pub(crate) mod norm;
pub(crate) mod recurrent;
pub(crate) mod sequence;
mod tap;
mod wide;

pub(crate) use crate::run::rng::{draw_mask, dropout_mask};
pub(crate) use autocast::node_policy;
#[cfg(test)]
pub(crate) use autocast::HALF_TENSORS;
pub(crate) use tap::{recorded, Slot};

/// A built layer stack: the plan's dataflow plus its parameters (a [`Net`]).
#[derive(Debug)]
pub struct Model {
    nodes: Vec<Node>,
    layers: Vec<Layer>,
    /// Each node's state across forwards, kept by its op (`ops::Cx::state`).
    states: Vec<State>,
    /// The dtype the parameters are stored in.
    storage: DType,
    /// The current training step's dropout stream (see [`Net::dropout_step`]).
    dropout: RefCell<Option<ChaCha8Rng>>,
    /// The stream as each node that draws dropout masks found it in the last training forward,
    /// so the verdict's op check draws the same mask (`wide`).
    drawn: RefCell<Vec<Option<ChaCha8Rng>>>,
    /// The parameters, in plan order.
    pub params: Vec<Param>,
    /// The low dtype autocast computes matmuls in (`train.precision = amp_*`), if any.
    autocast: Option<DType>,
    /// Under autocast: whether the low dtype lives in f32 storage (see `autocast`).
    rounded: bool,
    /// Under autocast: the logical dtype of each node's output in the last forward.
    logical: RefCell<Vec<DType>>,
    /// How many times each node's output is read (as a main input or another one).
    readers: Vec<usize>,
    /// For each node, the embedding node whose output is its main input, unchanged (see
    /// [`Model::table_of`]).
    tables: Vec<Option<usize>>,
}

impl Model {
    /// Builds and initialises a model from `rng` (used in parameter order).
    pub fn new(spec: &ModelSpec, plan: &Plan, rng: &mut ChaCha8Rng, dtype: DType, dev: &Device) -> Result<Self> {
        let mut params = Vec::with_capacity(plan.params.len());
        // An imported ONNX graph's parameters start at the file's values, unless `[model] init`
        // redraws them by their layer's kind.
        let file = spec.onnx.as_ref().and_then(|o| o.compiled.as_deref()).map(|c| &c.params).filter(|_| spec.init == crate::scenario::Init::File);
        for (k, p) in plan.params.iter().enumerate() {
            let mut values = match file.and_then(|f| f.get(k)) {
                Some((_, _, v)) => v.clone(),
                None => init::init_values(p, rng),
            };
            if spec.init_scale != 1.0 && !matches!(p.role, Role::Gain | Role::Shift) {
                values.iter_mut().for_each(|v| *v *= spec.init_scale);
            }
            let t = Tensor::from_vec(values, p.shape.as_slice(), dev)?.to_dtype(dtype)?;
            params.push(Param { name: p.name.clone(), var: Var::from_tensor(&t)? });
        }
        Ok(Model {
            nodes: plan.nodes.clone(),
            layers: plan.nodes.iter().map(|n| n.layer.clone()).collect(),
            states: plan.nodes.iter().map(|_| RefCell::new(None)).collect(),
            storage: dtype,
            dropout: RefCell::new(None),
            drawn: RefCell::new(vec![None; plan.nodes.len()]),
            params,
            autocast: None,
            rounded: false,
            logical: RefCell::new(Vec::new()),
            readers: readers(&plan.nodes),
            tables: tables(&plan.nodes),
        })
    }

    /// Runs every forward under autocast to `low` (see `autocast`): matmuls in `low`, softmax,
    /// norms, exp, log and pow in f32, over the parameters' own (f32) values.
    pub(crate) fn with_autocast(mut self, low: Option<DType>, dev: &Device) -> Self {
        self.autocast = low;
        self.rounded = low.is_some() && autocast::in_f32_storage(dev);
        self
    }

    /// The forward over every node; with `taps`, each output tapped (see `tap`); with `extents`,
    /// each output's watch scan ([`extent`]) taken as soon as it is computed (see
    /// [`Net::forward_watched`]).
    fn forward_with(&self, x: &Tensor, mask: Option<&Tensor>, mut taps: Option<&mut Vec<Slot>>, mut extents: Option<&mut Vec<Stats>>, training: bool) -> Result<Vec<Tensor>> {
        let mut outs: Vec<Tensor> = Vec::with_capacity(self.nodes.len());
        let mut logical: Vec<DType> = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let input = self.input_of(i, x, &outs);
            let prepared = self.prepare(node, input, x.dtype(), &mut logical)?;
            let (h, round, inner) = (&prepared.input, prepared.round, prepared.inner);
            // Its inputs after the main one, as autocast prepares them (a residual sum's skip operand).
            let others = node.inputs.iter().skip(1).map(|&j| self.operand(node, j, read(j, x, &outs), &logical)).collect::<Result<Vec<_>>>()?;
            let params = prepared.params.as_deref().map_or_else(|| Params::Vars(&self.params[node.params.clone()]), Params::Prepared);
            if training && node.layer.op().dropout() > 0.0 {
                self.drawn.borrow_mut()[i] = self.dropout.borrow().clone();
            }
            let table = self.table_of(i, x, &outs, taps.is_none());
            let cx = Cx { part: node.part, params, others: &others, mask, training, round, inner, storage: self.storage, dropout: &self.dropout, state: &self.states[i], table };
            let out = node.layer.op().forward(h, &cx)?;
            self.settle(i, &out, &mut logical);
            let out = self.tapped(self.finish(node, out, round)?, taps.as_deref_mut())?;
            if let Some(e) = extents.as_deref_mut() {
                e.push(extent(&out)?);
            }
            outs.push(out);
        }
        *self.logical.borrow_mut() = logical;
        Ok(outs)
    }

    /// The token ids and table behind node `i`'s main input when it is an embedding's output
    /// read unchanged (`ops::Cx::table`): outside autocast (which prepares the table and the
    /// input apart) and the tapped re-run (whose taps need the embedding output's gradient,
    /// which an op computing from the table does not make).
    fn table_of<'t>(&'t self, i: usize, x: &'t Tensor, outs: &'t [Tensor], untapped: bool) -> Option<Table<'t>> {
        let j = self.tables[i].filter(|_| untapped && self.autocast.is_none())?;
        let node = &self.nodes[j];
        Some(Table { ids: read(node.input(), x, outs), table: self.params[node.params.start].var.as_tensor() })
    }

    /// `out` with a tap whose slot goes to `taps`, if the forward taps (see `tap`).
    fn tapped(&self, out: Tensor, taps: Option<&mut Vec<Slot>>) -> Result<Tensor> {
        Ok(match taps {
            Some(slots) => {
                let (t, slot) = tap::tap(&out)?;
                slots.push(slot);
                t
            }
            None => out,
        })
    }
}

impl Net for Model {
    /// The parameters, in plan order.
    fn params(&self) -> &[Param] {
        &self.params
    }

    /// Runs the model and returns every node's output, in order. `mask` is `(batch, seq)`, 1
    /// where a position holds data (`data.padding`).
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Vec<Tensor>> {
        self.forward_with(x, mask, None, None, true)
    }

    /// [`Net::forward`] with each node's output scanned by the watch right after the node
    /// computes it.
    fn forward_watched(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<(Vec<Tensor>, Vec<Stats>)> {
        let mut extents = Vec::with_capacity(self.nodes.len());
        let outs = self.forward_with(x, mask, None, Some(&mut extents), true)?;
        Ok((outs, extents))
    }

    /// Runs the model in evaluation mode (batch norm uses its running statistics), for validation.
    fn forward_eval(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Vec<Tensor>> {
        self.forward_with(x, mask, None, None, false)
    }

    /// Runs the model with a tap on every node output, so that backward leaves each output's
    /// gradient in its slot (see `tap`); the values are those of [`Net::forward`], bit for bit.
    fn forward_tapped(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<(Vec<Tensor>, Vec<Slot>)> {
        let mut slots = Vec::with_capacity(self.nodes.len());
        let outs = self.forward_with(x, mask, Some(&mut slots), None, true)?;
        Ok((outs, slots))
    }

    /// The model's output as the loss reads it, in f32 (every loss is on autocast's f32 list,
    /// except a `[loss] expr`, which computes node by node from `p` as the model left it):
    /// cast up, or, in f32 storage, rounded to the low dtype if that is what it holds (the cast's
    /// gradient is then rounded, as PyTorch's `.float()` backward rounds it).
    fn to_loss(&self, pred: &Tensor) -> Result<Tensor> {
        // The loss is the last node's only reader unless another node reads it too.
        let shared = self.readers.last().is_some_and(|n| *n > 0);
        match (self.autocast, self.logical.borrow().last()) {
            (Some(low), Some(&l)) if self.rounded && l == low && shared => crate::run::kernel::cast::round(pred, low),
            _ if matches!(pred.dtype(), DType::F16 | DType::BF16) && self.autocast.is_some() => autocast::cast(pred, DType::F32),
            _ => Ok(pred.clone()),
        }
    }

    /// The logical dtype of each node's output in the last forward, under autocast.
    fn output_dtypes(&self) -> Vec<DType> {
        match self.autocast {
            Some(_) => self.logical.borrow().clone(),
            None => Vec::new(),
        }
    }

    /// Under autocast, the dtypes node `l`'s inputs held in the last forward (the model's input: f32).
    fn read_dtypes(&self, l: usize) -> Vec<DType> {
        let Some(node) = self.nodes.get(l).filter(|n| self.autocast.is_some() && n.precision.is_none()) else { return Vec::new() };
        let logical = self.logical.borrow();
        node.inputs.iter().map(|i| if let Input::Node(j) = i { logical.get(*j).copied().unwrap_or(DType::F32) } else { DType::F32 }).collect()
    }

    /// Whether any node draws dropout masks.
    fn has_dropout(&self) -> bool {
        self.layers.iter().any(|l| l.op().dropout() > 0.0)
    }

    /// Sets the stream the next training forward draws its dropout masks from, in node order
    /// (`rng::dropout_stream(seed, fold, step)`), so masks depend only on the step.
    fn dropout_step(&self, rng: ChaCha8Rng) {
        *self.dropout.borrow_mut() = Some(rng);
    }

    /// Each node's layer, in order.
    fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The indices in `params` of node `l`'s parameters.
    fn params_of(&self, l: usize) -> std::ops::Range<usize> {
        self.nodes.get(l).map_or(0..0, |n| n.params.clone())
    }

    /// What node `l` reads as its main input, given the model's input `x` and the outputs so far.
    fn input_of<'t>(&self, l: usize, x: &'t Tensor, outs: &'t [Tensor]) -> &'t Tensor {
        self.nodes.get(l).map_or(x, |n| read(n.input(), x, outs))
    }

    fn others_of<'t>(&self, l: usize, x: &'t Tensor, outs: &'t [Tensor]) -> Vec<&'t Tensor> {
        self.nodes.get(l).map_or_else(Vec::new, |n| n.inputs.iter().skip(1).map(|&j| read(j, x, outs)).collect())
    }

    /// The first node after `l` that reads `l`'s output as its main input (where `l`'s gradient comes from).
    fn reader_of(&self, l: usize) -> Option<usize> {
        (l + 1..self.nodes.len()).find(|&j| self.nodes[j].input() == Input::Node(l))
    }

    /// Node `l`'s op in f64, without autocast, on its inputs and parameters cast to f64 (token
    /// ids stay ids), with the dropout mask and the state the run's forward had (see `wide`).
    fn op_f64(&self, l: usize, x: &Tensor, outs: &[Tensor], mask: Option<&Tensor>, training: bool) -> Result<Option<Wide>> {
        let Some(n) = self.node_f64(l, x, outs, mask, training, None)? else { return Ok(None) };
        Ok(Some(Wide { out: n.out, inputs: n.inputs, reference: false }))
    }

    /// The gradient of `wrt` through the backward of the nodes that read it, each computed alone
    /// in f64 from what it read and its output's gradient `upstream(node)` (see `wide`).
    fn grad_f64(&self, wrt: Wrt, x: &Tensor, outs: &[Tensor], mask: Option<&Tensor>, upstream: &dyn Fn(usize) -> Option<Tensor>) -> Result<Option<(Wide, Vec<usize>)>> {
        self.backward_f64(wrt, x, outs, mask, upstream)
    }
}

/// The tensor `input` names: the model's input `x`, or a node's output among `outs`.
fn read<'t>(input: Input, x: &'t Tensor, outs: &'t [Tensor]) -> &'t Tensor {
    match input {
        Input::Model => x,
        Input::Node(j) => &outs[j],
    }
}

/// For each node, the embedding node whose output is its main input (the decision to compute
/// from the table's rows is the reading op's: `ops::Cx::table`).
fn tables(nodes: &[Node]) -> Vec<Option<usize>> {
    let embedding = |input: Input| match input {
        Input::Node(j) if matches!(nodes[j].layer, Layer::Embedding(_)) => Some(j),
        Input::Node(_) | Input::Model => None,
    };
    nodes.iter().map(|n| embedding(n.input())).collect()
}

/// How many times each node's output is read (once per input of a node that names it).
fn readers(nodes: &[Node]) -> Vec<usize> {
    let mut n = vec![0; nodes.len()];
    for j in nodes.iter().flat_map(|node| &node.inputs) {
        if let Input::Node(j) = *j {
            n[j] += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::Model;
    use crate::run::net::Net;
    use crate::scenario::{plan, InShape, Init, Layer, ModelSpec};

    #[test]
    fn dropout_masks_come_from_the_step_stream_and_scale_what_they_keep() {
        let s = ModelSpec { init: Init::Torch, layers: vec![Layer::Dropout(crate::ops::dropout::Dropout { p: 0.25 })], init_scale: 1.0, code: None, onnx: None };
        let m = Model::new(&s, &plan(&s, InShape { features: 1000, seq_len: None, vocab: None, image: None }).unwrap(), &mut ChaCha8Rng::seed_from_u64(0), DType::F64, &Device::Cpu).unwrap();
        let x = Tensor::ones((4, 1000), DType::F64, &Device::Cpu).unwrap();
        let out = |step: u64| {
            m.dropout_step(ChaCha8Rng::seed_from_u64(step));
            m.forward(&x, None).unwrap()[0].flatten_all().unwrap().to_vec1::<f64>().unwrap()
        };
        let a = out(1);
        // Kept values are 1/(1 − 0.25); about a quarter of 4000 are dropped (binomial sd 27).
        assert!(a.iter().all(|v| *v == 0.0 || *v == 1.0 / 0.75));
        let dropped = a.iter().filter(|v| **v == 0.0).count();
        assert!((880..=1120).contains(&dropped), "{dropped}");
        assert_eq!(a, out(1), "the same stream gives the same mask");
        assert_ne!(a, out(2));
        // Evaluation draws nothing and passes the input through.
        assert!(m.forward_eval(&x, None).unwrap()[0].flatten_all().unwrap().to_vec1::<f64>().unwrap().iter().all(|v| *v == 1.0));
    }
}
