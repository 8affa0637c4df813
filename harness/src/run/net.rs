//! [`Net`]: what the training loop, the watch, the cause engine and birth
//! tracing ask of a model, whatever kind it is. The layer stack compiled from
//! the scenario's plan (`model::Model`) and a model written in Rust
//! (`code::CodeNet`) implement it; the runner builds one for each fold and
//! holds it as a `Box<dyn Net>`, so no struct holds two kinds of model.
//!
//! A net's outputs are a list of tensors, the prediction last: the stack's
//! node outputs in plan order, or a code model's checked tensors then its
//! output. Only the stack has layers to explain (`layers` is empty for code).

use std::ops::Range;

use candle_core::{DType, Tensor, Var};
use rand_chacha::ChaCha8Rng;

use crate::error::Result;
use crate::run::model::Slot;
use crate::run::watch::Stats;
use crate::scenario::Layer;

/// A named trainable tensor.
#[derive(Debug, Clone)]
pub struct Param {
    /// Stable dotted name.
    pub name: String,
    /// The variable.
    pub var: Var,
}

/// One output of a net computed alone in f64 (`Net::op_f64`), for the verdict.
pub(crate) struct Wide {
    /// The output in f64.
    pub out: Tensor,
    /// The inputs it read, as the run had them.
    pub inputs: Vec<Tensor>,
    /// Whether a reference the code model gave computed it (not nanhunt's own kernel).
    pub reference: bool,
}

/// What a gradient computed in f64 (`Net::grad_f64`) is taken with respect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrt {
    /// Output `l` (where the nodes that read it read it).
    Output(usize),
    /// Parameter `i` (an index in [`Net::params`]).
    Param(usize),
}

/// A built model, as the runner trains and diagnoses it.
pub(crate) trait Net {
    /// The trainable parameters, in plan order.
    fn params(&self) -> &[Param];

    /// Runs a training forward and returns every output, in order (the prediction last).
    /// `mask` is `(batch, seq)`, 1 where a position holds data (`data.padding`).
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Vec<Tensor>>;

    /// [`Net::forward`] and each output's [`extent`](crate::run::watch::extent), the watch's scan,
    /// taken as soon as the output is computed, while it is still in the CPU's cache (scanned
    /// after the whole forward, the tiny GPT's outputs came back from memory: 6% of its step,
    /// perf). The same outputs and extents, bit for bit. By default no extents: the step scans
    /// the outputs after the forward (a code model's come back from its `forward` together).
    fn forward_watched(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<(Vec<Tensor>, Vec<Stats>)> {
        Ok((self.forward(x, mask)?, Vec::new()))
    }

    /// Runs the model in evaluation mode (no dropout; batch norm uses its running statistics).
    fn forward_eval(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Vec<Tensor>>;

    /// [`Net::forward`] with a tap on every layer output, so that backward leaves each output's
    /// gradient in its slot (`model::tap`); the values are [`Net::forward`]'s, bit for bit.
    /// A net without layers has no slots.
    fn forward_tapped(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<(Vec<Tensor>, Vec<Slot>)>;

    /// The prediction as the loss reads it (under autocast, in f32: every loss is on autocast's
    /// f32 list, except a `[loss] expr`, which casts its `p` back and computes node by node).
    fn to_loss(&self, pred: &Tensor) -> Result<Tensor>;

    /// Whether a training forward may draw dropout masks.
    fn has_dropout(&self) -> bool;

    /// Under autocast, the dtype each output of the last forward is held in, as PyTorch holds it
    /// (the low dtype, or f32 for an op on autocast's f32 list or a layer kept in f32 with
    /// `precision = "f32"`); empty where every output is in the run's compute dtype (no autocast,
    /// or a code model).
    fn output_dtypes(&self) -> Vec<DType>;

    /// Under autocast, the dtypes node `l`'s inputs hold as the last forward read them, as
    /// PyTorch holds them (its main input first, then [`Net::others_of`]'s); empty where it
    /// computes without autocast (no autocast, a layer kept in f32, a code model).
    fn read_dtypes(&self, l: usize) -> Vec<DType>;

    /// Sets the stream the next training forward draws its dropout masks from
    /// (`rng::dropout_stream(seed, fold, step)`), so masks depend only on the step.
    fn dropout_step(&self, rng: ChaCha8Rng);

    /// Each output's layer, in order; empty for a net without layers (a code model).
    fn layers(&self) -> &[Layer];

    /// The indices in [`Net::params`] of layer `l`'s parameters.
    fn params_of(&self, l: usize) -> Range<usize>;

    /// What layer `l` reads as its main input, given the model's input `x` and the outputs so far.
    fn input_of<'t>(&self, l: usize, x: &'t Tensor, outs: &'t [Tensor]) -> &'t Tensor;

    /// What layer `l` reads besides its main input (an expression's named outputs, in the
    /// order it reads them), given the model's input `x` and the outputs so far.
    fn others_of<'t>(&self, l: usize, x: &'t Tensor, outs: &'t [Tensor]) -> Vec<&'t Tensor>;

    /// The first layer after `l` that reads `l`'s output as its main input (where `l`'s
    /// gradient comes from).
    fn reader_of(&self, l: usize) -> Option<usize>;

    /// Output `l` of the last forward (a `training` one or not) computed alone in f64 from what
    /// it read there: a node's forward on its inputs and parameters cast to f64, with the run's
    /// dropout mask and state, a code model's check by the f64 reference it gave
    /// [`crate::Watch::check_op`]. `None` where there is no such op.
    fn op_f64(&self, l: usize, x: &Tensor, outs: &[Tensor], mask: Option<&Tensor>, training: bool) -> Result<Option<Wide>>;

    /// The gradient of `wrt` from the last training forward's backward, computed in f64: the
    /// backward of each node that reads it, alone, on f64 copies of what it read, from its
    /// output's gradient `upstream(node)`; with the nodes it summed. `None` where there are no
    /// such nodes (a code model: its ops are not known).
    fn grad_f64(&self, wrt: Wrt, x: &Tensor, outs: &[Tensor], mask: Option<&Tensor>, upstream: &dyn Fn(usize) -> Option<Tensor>) -> Result<Option<(Wide, Vec<usize>)>>;
}
