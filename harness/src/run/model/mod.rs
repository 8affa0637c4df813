//! The model: a layer stack built from a [`ModelSpec`], with named parameters
//! initialised from our own seeded stream (`init`; Candle's CPU RNG cannot be
//! seeded). One file per layer family, as candle-nn has: `dense`, `recurrent`,
//! `norm`; the registry's elementwise ops (`crate::ops`), which `apply` runs
//! through `Layer::op`, have their kernels in `run::kernel`.
//!
//! Parameter names, shapes and order, and the dataflow between nodes
//! (residual sums, attention's steps), come from the scenario's static
//! [`Plan`], so iteration never depends on a hash map. `attention` and
//! `sequence` hold the sequence layers.

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use crate::run::net::{Net, Param};
use crate::scenario::{Layer, ModelSpec, Node, Part, Plan, Role};

mod attention;
mod autocast;
mod conv;
mod dense;
mod init;
mod norm;
mod recurrent;
mod sequence;
mod tap;

pub(crate) use autocast::policy;
#[cfg(test)]
pub(crate) use autocast::HALF_TENSORS;
pub(crate) use tap::{recorded, Slot};

/// A built layer stack: the plan's dataflow plus its parameters (a [`Net`]).
#[derive(Debug)]
pub struct Model {
    nodes: Vec<Node>,
    layers: Vec<Layer>,
    /// Each batch-norm node's running mean and variance (updated by training forwards).
    running: Vec<Option<RefCell<norm::Running>>>,
    /// The current training step's dropout stream (see [`Net::dropout_step`]).
    dropout: RefCell<Option<ChaCha8Rng>>,
    /// The parameters, in plan order.
    pub params: Vec<Param>,
    /// The low dtype autocast computes matmuls in (`train.precision = amp_*`), if any.
    autocast: Option<DType>,
    /// Under autocast: whether the low dtype lives in f32 storage (see `autocast`).
    rounded: bool,
    /// Under autocast: the logical dtype of each node's output in the last forward.
    logical: RefCell<Vec<DType>>,
    /// How many nodes read each node's output (as input or as the other operand).
    readers: Vec<usize>,
}

impl Model {
    /// Builds and initialises a model from `rng` (used in parameter order).
    pub fn new(spec: &ModelSpec, plan: &Plan, rng: &mut ChaCha8Rng, dtype: DType, dev: &Device) -> Result<Self> {
        let mut params = Vec::with_capacity(plan.params.len());
        for p in &plan.params {
            let mut values = init::init_values(p, rng);
            if spec.init_scale != 1.0 && !matches!(p.role, Role::Gain | Role::Shift) {
                values.iter_mut().for_each(|v| *v *= spec.init_scale);
            }
            let t = Tensor::from_vec(values, p.shape.as_slice(), dev)?.to_dtype(dtype)?;
            params.push(Param { name: p.name.clone(), var: Var::from_tensor(&t)? });
        }
        let running = plan
            .nodes
            .iter()
            .map(|n| {
                matches!(n.layer, Layer::BatchNorm { .. })
                    .then(|| {
                        norm::Running::new(
                            match n.shape {
                                crate::scenario::Shape::Image { channels, .. } => channels,
                                s => s.width(),
                            },
                            dtype,
                            dev,
                        )
                        .map(RefCell::new)
                    })
                    .transpose()
            })
            .collect::<Result<_>>()?;
        Ok(Model {
            nodes: plan.nodes.clone(),
            layers: plan.nodes.iter().map(|n| n.layer.clone()).collect(),
            running,
            dropout: RefCell::new(None),
            params,
            autocast: None,
            rounded: false,
            logical: RefCell::new(Vec::new()),
            readers: readers(&plan.nodes),
        })
    }

    /// Runs every forward under autocast to `low` (see `autocast`): matmuls in `low`, softmax,
    /// norms, exp, log and pow in f32, over the parameters' own (f32) values.
    pub(crate) fn with_autocast(mut self, low: Option<DType>, dev: &Device) -> Self {
        self.autocast = low;
        self.rounded = low.is_some() && autocast::in_f32_storage(dev);
        self
    }

    /// A dropout mask `(rows, cols)` of `0` and `1/(1 − p)` in `like`'s dtype, drawn while
    /// training; `None` in evaluation, without a stream, or at `p = 0`.
    fn mask(&self, rows: usize, cols: usize, p: f64, training: bool, like: &Tensor) -> Result<Option<Tensor>> {
        let mut stream = self.dropout.borrow_mut();
        let Some(rng) = stream.as_mut().filter(|_| training && p > 0.0) else { return Ok(None) };
        Ok(Some(dropout_mask(rng, (rows, cols), p, like)?))
    }

    fn forward_with(&self, x: &Tensor, mask: Option<&Tensor>, mut taps: Option<&mut Vec<Slot>>, training: bool) -> Result<Vec<Tensor>> {
        let mut outs: Vec<Tensor> = Vec::with_capacity(self.nodes.len());
        let mut logical: Vec<DType> = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let input = self.input_of(i, x, &outs);
            let prepared = self.prepare(node, input, x.dtype(), &mut logical)?;
            let (h, round, inner) = (&prepared.input, prepared.round, prepared.inner);
            let p = |k: usize| prepared.params.as_ref().map_or_else(|| self.params[node.params.start + k].var.as_tensor(), |c| &c[k]);
            let other = || node.other.map(|o| o.map_or(x, |j| &outs[j]));
            let out = match (&node.layer, node.part) {
                (_, Part::Sum) => match other() {
                    None => h.clone(),
                    Some(skip) => autocast::promoted_sum(&self.skip_operand(node, skip, &logical)?, h)?,
                },
                (Layer::Attention { heads, .. }, Part::Scores) => attention::scores(h, (p(0), p(1), p(2), p(3)), *heads, inner)?,
                (Layer::Attention { causal, mask_fill, softmax, .. }, Part::Probs) => attention::probs(h, mask, *causal, *mask_fill, *softmax)?,
                (Layer::Attention { heads, .. }, Part::Mix) => attention::mix(h, other().unwrap_or(x), (p(0), p(1), p(2), p(3)), *heads, inner)?,
                (Layer::BatchNorm { eps, momentum }, _) => match &self.running[i] {
                    Some(r) => norm::batch_norm(h, p(0), p(1), &mut r.borrow_mut(), *eps, *momentum, training)?,
                    None => return Err(candle_core::Error::Msg("batch norm without running statistics".into()).into()),
                },
                (Layer::Lstm { hidden, return_sequences, activation, recurrent_dropout, .. } | Layer::Gru { hidden, return_sequences, activation, recurrent_dropout, .. }, _) => {
                    let drop = self.mask(h.dims()[0], *hidden, *recurrent_dropout, training, h)?;
                    let run = recurrent::Run { activation: *activation, sequences: *return_sequences, dropout: drop.as_ref() };
                    let weights = (p(0), p(1), p(2), p(3));
                    if matches!(node.layer, Layer::Lstm { .. }) {
                        recurrent::lstm(h, weights, *hidden, &run)?
                    } else {
                        recurrent::gru(h, weights, *hidden, &run)?
                    }
                }
                (Layer::Dropout { p: prob }, _) => {
                    let rows = h.dims()[0];
                    match self.mask(rows, h.elem_count() / rows.max(1), *prob, training, h)? {
                        // In f32 storage the mask's 1/(1 − p) is rounded as a low mask's would be.
                        Some(m) => h.mul(
                            &match round {
                                Some(low) => crate::run::kernel::cast::round(&m, low)?,
                                None => m,
                            }
                            .reshape(h.shape())?,
                        )?,
                        None => h.clone(),
                    }
                }
                (Layer::MeanPool, _) => sequence::mean_pool(h, mask)?,
                (Layer::MaxPool, _) => sequence::max_pool(h, mask)?,
                (Layer::Linear { .. }, _) => match round {
                    Some(low) => dense::linear_rounded(h, p(0), p(1), low)?,
                    None => dense::linear(h, p(0), p(1))?,
                },
                (layer, _) => apply(layer, h, &p)?,
            };
            let out = self.finish(node, out, round)?;
            outs.push(match taps.as_deref_mut() {
                Some(slots) => {
                    let (t, slot) = tap::tap(&out)?;
                    slots.push(slot);
                    t
                }
                None => out,
            });
        }
        *self.logical.borrow_mut() = logical;
        Ok(outs)
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
        self.forward_with(x, mask, None, true)
    }

    /// Runs the model in evaluation mode (batch norm uses its running statistics), for validation.
    fn forward_eval(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Vec<Tensor>> {
        self.forward_with(x, mask, None, false)
    }

    /// Runs the model with a tap on every node output, so that backward leaves each output's
    /// gradient in its slot (see `tap`); the values are those of [`Net::forward`], bit for bit.
    fn forward_tapped(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<(Vec<Tensor>, Vec<Slot>)> {
        let mut slots = Vec::with_capacity(self.nodes.len());
        let outs = self.forward_with(x, mask, Some(&mut slots), true)?;
        Ok((outs, slots))
    }

    /// The model's output as the loss reads it, in f32 (every loss is on autocast's f32 list):
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

    /// Whether any node draws dropout masks.
    fn has_dropout(&self) -> bool {
        self.layers.iter().any(|l| l.dropout_p() > 0.0)
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

    /// What node `l` reads, given the model's input `x` and the outputs so far.
    fn input_of<'t>(&self, l: usize, x: &'t Tensor, outs: &'t [Tensor]) -> &'t Tensor {
        self.nodes.get(l).and_then(|n| n.input).map_or(x, |i| &outs[i])
    }

    /// The first node after `l` that reads `l`'s output as its main input (where `l`'s gradient comes from).
    fn reader_of(&self, l: usize) -> Option<usize> {
        (l + 1..self.nodes.len()).find(|&j| self.nodes[j].input == Some(l))
    }
}

/// How many nodes read each node's output.
fn readers(nodes: &[Node]) -> Vec<usize> {
    let mut n = vec![0; nodes.len()];
    for node in nodes {
        for j in node.input.into_iter().chain(node.other.flatten()) {
            n[j] += 1;
        }
    }
    n
}

/// An inverted-dropout mask of `shape`: `1/(1 − p)` where [`draw_mask`] keeps, 0 where it drops,
/// in `like`'s dtype and on its device.
pub(crate) fn dropout_mask(rng: &mut ChaCha8Rng, shape: impl Into<candle_core::Shape>, p: f64, like: &Tensor) -> candle_core::Result<Tensor> {
    let shape = shape.into();
    let values: Vec<f64> = draw_mask(rng, shape.elem_count(), p).into_iter().map(|keep| if keep { 1.0 / (1.0 - p) } else { 0.0 }).collect();
    Tensor::from_vec(values, shape, like.device())?.to_dtype(like.dtype())
}

/// `n` keep-or-drop draws from `rng`: each value is dropped when its uniform draw is below `p`.
pub(crate) fn draw_mask(rng: &mut ChaCha8Rng, n: usize, p: f64) -> Vec<bool> {
    use rand::Rng;
    (0..n).map(|_| rng.random::<f64>() >= p).collect()
}

fn apply<'a>(layer: &Layer, h: &Tensor, p: &dyn Fn(usize) -> &'a Tensor) -> Result<Tensor> {
    if let Some(op) = layer.op() {
        return op.forward(h);
    }
    Ok(match layer {
        Layer::Linear { .. } => dense::linear(h, p(0), p(1))?,
        Layer::Rnn { hidden, .. } => recurrent::rnn(h, p(0), p(1), p(2), p(3), *hidden)?,
        Layer::LayerNorm { eps } => norm::layer_norm(h, p(0), p(1), *eps)?,
        Layer::RmsNorm { eps } => norm::rms_norm(h, p(0), *eps)?,
        Layer::Embedding { .. } => sequence::embedding(h, p(0))?,
        Layer::PositionalEmbedding => sequence::positional(h, p(0))?,
        Layer::Last => sequence::last(h)?,
        Layer::Conv1d { stride, padding, .. } => conv::conv1d(h, p(0), p(1), *stride, *padding)?,
        Layer::Conv2d { stride, padding, .. } => conv::conv2d(h, p(0), p(1), *stride, *padding)?,
        Layer::Flatten => conv::flatten(h)?,
        Layer::MaxPool2d { kernel } => conv::pool2d(h, *kernel, true)?,
        Layer::AvgPool2d { kernel } => conv::pool2d(h, *kernel, false)?,
        crate::op_layers!() => unreachable!("a registry layer, applied by its op above"),
        // Applied in `forward_with`, which holds the mask, the running statistics and the other input.
        Layer::BatchNorm { .. } | Layer::Residual { .. } | Layer::Attention { .. } | Layer::MeanPool | Layer::MaxPool | Layer::Lstm { .. } | Layer::Gru { .. } | Layer::Dropout { .. } => {
            return Err(candle_core::Error::Msg(format!("{} is applied by the model", <&str>::from(layer))).into())
        }
    })
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
        let s = ModelSpec { init: Init::Torch, layers: vec![Layer::Dropout { p: 0.25 }], init_scale: 1.0, code: None };
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
