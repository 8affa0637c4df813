//! The model: a layer stack built from a [`ModelSpec`], with named parameters
//! initialised from our own seeded stream (`init`; Candle's CPU RNG cannot be
//! seeded). One file per layer family, as candle-nn has: `dense`, `recurrent`,
//! `norm`, `activation`, and `custom` for hand-written backward passes.
//!
//! Parameter names, shapes and order come from the scenario's static
//! [`Plan`], so iteration never depends on a hash map.

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use crate::scenario::{Layer, ModelSpec, Plan, Role};

mod activation;
mod custom;
mod dense;
mod init;
mod norm;
mod pointwise;
mod recurrent;
mod relu;
mod tap;

pub(crate) use tap::{recorded, Slot};

/// A named trainable tensor.
#[derive(Debug, Clone)]
pub struct Param {
    /// Stable dotted name.
    pub name: String,
    /// The variable.
    pub var: Var,
}

/// A built model: layers plus their parameters.
#[derive(Debug)]
pub struct Model {
    layers: Vec<Layer>,
    /// Each batch-norm layer's running mean and variance (updated by training forwards).
    running: Vec<Option<std::cell::RefCell<norm::Running>>>,
    /// Index of each layer's first parameter in `params`.
    first_param: Vec<usize>,
    /// The parameters, in plan order.
    pub params: Vec<Param>,
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
        let mut first_param = Vec::with_capacity(spec.layers.len());
        let mut next = 0;
        for layer in &spec.layers {
            first_param.push(next);
            next += match layer {
                Layer::Linear { .. } | Layer::LayerNorm { .. } | Layer::BatchNorm { .. } => 2,
                Layer::RmsNorm { .. } => 1,
                Layer::Rnn { .. } => 4,
                _ => 0,
            };
        }
        let running = spec.layers.iter().zip(&plan.widths).map(|(l, &w)| matches!(l, Layer::BatchNorm { .. }).then(|| norm::Running::new(w, dtype, dev).map(std::cell::RefCell::new)).transpose()).collect::<Result<_>>()?;
        Ok(Model { layers: spec.layers.clone(), running, first_param, params })
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// The indices in `params` of layer `l`'s parameters.
    pub(crate) fn params_of(&self, l: usize) -> std::ops::Range<usize> {
        let end = self.first_param.get(l + 1).copied().unwrap_or(self.params.len());
        self.first_param[l]..end
    }

    /// Runs the stack and returns every layer's output, in order.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.forward_with(x, None, true)
    }

    /// Runs the stack in evaluation mode (batch norm uses its running statistics), for validation.
    pub fn forward_eval(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.forward_with(x, None, false)
    }

    /// Runs the stack with a tap on every layer output, so that backward leaves each output's
    /// gradient in its slot (see `tap`); the values are those of [`Model::forward`], bit for bit.
    pub(crate) fn forward_tapped(&self, x: &Tensor) -> Result<(Vec<Tensor>, Vec<Slot>)> {
        let mut slots = Vec::with_capacity(self.layers.len());
        let outs = self.forward_with(x, Some(&mut slots), true)?;
        Ok((outs, slots))
    }

    fn forward_with(&self, x: &Tensor, mut taps: Option<&mut Vec<Slot>>, training: bool) -> Result<Vec<Tensor>> {
        let mut outs: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let h = outs.last().unwrap_or(x);
            let p = |k: usize| self.params[self.first_param[i] + k].var.as_tensor();
            let out = match (layer, &self.running[i]) {
                (Layer::BatchNorm { eps, momentum }, Some(r)) => norm::batch_norm(h, p(0), p(1), &mut r.borrow_mut(), *eps, *momentum, training)?,
                _ => apply(layer, h, &p)?,
            };
            outs.push(match taps.as_deref_mut() {
                Some(slots) => {
                    let (t, slot) = tap::tap(&out)?;
                    slots.push(slot);
                    t
                }
                None => out,
            });
        }
        Ok(outs)
    }
}


fn apply<'a>(layer: &Layer, h: &Tensor, p: &dyn Fn(usize) -> &'a Tensor) -> Result<Tensor> {
    Ok(match layer {
        Layer::Linear { .. } => dense::linear(h, p(0), p(1))?,
        Layer::Rnn { hidden, .. } => recurrent::rnn(h, p(0), p(1), p(2), p(3), *hidden)?,
        Layer::LayerNorm { eps } => norm::layer_norm(h, p(0), p(1), *eps)?,
        Layer::Relu => relu::relu(h)?,
        Layer::Sigmoid => candle_nn::ops::sigmoid(h)?,
        Layer::Tanh => h.tanh()?,
        Layer::Gelu => h.gelu_erf()?,
        Layer::Softplus => activation::softplus(h)?,
        Layer::Softmax => activation::softmax(h)?,
        Layer::Identity => h.clone(),
        Layer::Sqrt => h.sqrt()?,
        Layer::Log => h.log()?,
        Layer::Reciprocal => h.recip()?,
        Layer::Abs => crate::run::elementwise::abs(h)?,
        Layer::Exp => h.exp()?,
        Layer::Pow { exponent } => h.powf(*exponent)?,
        Layer::FlawedSquare => custom::flawed_square(h)?,
        Layer::Silu => pointwise::silu(h)?,
        Layer::Elu { alpha } => pointwise::elu(h, *alpha)?,
        Layer::LeakyRelu { negative_slope } => pointwise::leaky_relu(h, *negative_slope)?,
        Layer::RmsNorm { eps } => norm::rms_norm(h, p(0), *eps)?,
        // Applied in `forward_with`, which holds the running statistics.
        Layer::BatchNorm { .. } => return Err(candle_core::Error::Msg("batch norm is applied with its running statistics".into()).into()),
    })
}
