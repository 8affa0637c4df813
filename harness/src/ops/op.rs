//! The [`Op`] trait, which every node of the model's graph implements, and what a
//! node's forward reads besides its input ([`Cx`]): its parameters, its other
//! inputs (a residual's skip operand), the padding mask, the training flag, the
//! dropout stream, state kept across steps (batch norm's running statistics), and
//! how autocast meets it. Elementwise ops implement the smaller
//! [`Elementwise`](super::Elementwise) instead, which gives them an `Op`.

use std::any::Any;
use std::cell::RefCell;

use candle_core::{DType, Tensor};
use rand_chacha::ChaCha8Rng;

use super::{Autocast, Explained, Facts};
use crate::error::Result;
use crate::run::net::Param;
use crate::scenario::{Part, Planner, Shape};

/// Everything nanhunt knows about one op. No method has a default: an op answers each.
pub trait Op: std::fmt::Debug + Send + Sync {
    /// Problems with the attributes, each as (attribute key, message), e.g. `("eps", "must be positive")`.
    fn check(&self) -> Vec<(&'static str, String)>;
    /// Plans the op reading one example of `input` (the batch left out): declares its
    /// parameters with `p.param` and returns its output shape, or says why it does not fit.
    fn plan(&self, p: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String>;
    /// Values per example the op holds for a training step, given its node's input and output
    /// shapes and `values`, the values its output and gradient take (as `scenario::memory`
    /// counts them); most ops hold just that.
    fn held(&self, input: Shape, output: Shape, values: u128) -> u128;
    /// Autograd graph levels it adds: its own, and per time step of the sequence it reads.
    fn levels(&self) -> (u64, u64);
    /// The probability it drops values with while training (0: it draws no dropout masks).
    fn dropout(&self) -> f64;
    /// The forward pass of the node (`cx.part` of the op); its backward (through Candle's graph
    /// or a custom op) is PyTorch's.
    fn forward(&self, x: &Tensor, cx: &Cx<'_>) -> Result<Tensor>;
    /// Where part `part` computes under autocast.
    fn autocast(&self, part: Part) -> Autocast;
    /// How autocast's rounding in f32 storage meets part `part` (see [`Rounding`]).
    fn rounding(&self, part: Part) -> Rounding;
    /// Why part `part`'s output went non-finite at an element of its input `f`, if a rule knows.
    fn explain_forward(&self, part: Part, f: &Facts<'_>) -> Explained;
    /// Why its backward made its input's gradient non-finite at an element (`f.x`, `f.grad`).
    fn explain_backward(&self, f: &Facts<'_>) -> Explained;
    /// Why its backward may have made a parameter's gradient non-finite in a step where it
    /// read `zeros` exact zeros among `n` values (the fallback when no output gradient was
    /// caught non-finite): e.g. `sqrt`'s derivative is infinite at 0. Most ops answer `None`.
    fn explain_zeros(&self, zeros: usize, n: usize) -> Explained;
    /// Its PyTorch form for `repro.py` (see [`Torch`]).
    fn torch(&self) -> Torch;
}

/// An op's PyTorch form, which `export-torch` writes into the scenario's settings and
/// `repro.py` evaluates (numbers written with [`py`](super::py)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Torch {
    /// A Python expression of the tensor `x`, with `torch` and `F` (`torch.nn.functional`) in
    /// scope, e.g. `F.softsign(x)`.
    Expr(String),
    /// A Python expression building the node's `nn.Module`, with `repro.py`'s module classes and
    /// `spec` (the layer's table), `width` (the width it reads), `seq` and `name` in scope.
    Module(String),
}

/// How autocast's low dtype, kept in f32 storage on the CPU, meets an op: which of its
/// input, parameters and output the model rounds to the low dtype, and which it rounds itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// The model rounds its input, parameters and output (most ops).
    Outside,
    /// It rounds its own weights and output (a linear layer's kernel, attention's mix).
    Own,
    /// It casts its input per projection and rounds its own weights; the model rounds its
    /// output (attention's scores).
    Projections,
    /// It runs on real half tensors even in f32 storage, rounding at every step inside (the
    /// recurrent cells, the convolutions; an expression, which reads each input in the dtype it
    /// holds and gives its result in its own).
    HalfTensors,
}

/// How attention's inner tensors meet autocast: not at all, rounded to the low dtype in f32
/// storage, or cast to it (see `run::model::autocast`); for an expression, `Cast` is autocast
/// per node inside (`ops::expr::amp`), `Off` none (no autocast, or a layer kept in f32).
#[derive(Debug, Clone, Copy)]
pub enum Inner {
    /// No autocast.
    Off,
    /// Autocast in f32 storage: values rounded to this dtype.
    Round(DType),
    /// Autocast on half tensors of this dtype.
    Cast(DType),
}

/// A node's parameters as its forward reads them: the variables themselves, or autocast's
/// cast or rounded copies.
#[derive(Debug, Clone, Copy)]
pub enum Params<'a> {
    /// The variables, in plan order.
    Vars(&'a [Param]),
    /// Copies prepared by autocast, in plan order.
    Prepared(&'a [Tensor]),
}

impl Params<'_> {
    /// Parameter `k` of the node, in the order its op declared them.
    pub fn get(&self, k: usize) -> &Tensor {
        match self {
            Params::Vars(p) => p[k].var.as_tensor(),
            Params::Prepared(p) => &p[k],
        }
    }
}

/// State an op keeps across forwards (batch norm's running statistics), made by the op on
/// its first forward.
pub type State = RefCell<Option<Box<dyn Any>>>;

/// What a node's forward reads besides its input.
pub struct Cx<'a> {
    /// Which part of the op the node computes.
    pub part: Part,
    /// The node's parameters.
    pub params: Params<'a>,
    /// The node's inputs after its main one (`x`), in the plan's order (`scenario::Node::inputs`):
    /// a residual sum's skip operand (as autocast prepared it), the input attention's mix
    /// projects its values from; empty for a node of one input.
    pub others: &'a [Tensor],
    /// The padding mask `(batch, seq)`, 1 where a position holds data (`data.padding`).
    pub mask: Option<&'a Tensor>,
    /// A training forward (batch statistics, dropout) or an evaluation one.
    pub training: bool,
    /// The low dtype this node's values are rounded to in f32 storage, if any.
    pub round: Option<DType>,
    /// How attention's inner tensors (an expression's nodes) meet autocast.
    pub inner: Inner,
    /// The dtype the model's parameters are stored in.
    pub storage: DType,
    /// The current training step's dropout stream (`None` outside a training step).
    pub dropout: &'a RefCell<Option<ChaCha8Rng>>,
    /// This node's state across forwards.
    pub state: &'a State,
    /// Its main input's token ids and table, when that input is an embedding's output read
    /// unchanged (no op between, no autocast, not the diagnosis's tapped re-run, which needs
    /// the output's gradient): an op may compute from the table's rows instead of from `x`
    /// (the recurrent layers' input projection, `run::kernel::gather`).
    pub table: Option<Table<'a>>,
}

/// Token ids `(batch, seq)` and the embedding table `(vocab, dim)` whose rows they pick.
#[derive(Debug, Clone, Copy)]
pub struct Table<'a> {
    /// The token ids.
    pub ids: &'a Tensor,
    /// The table.
    pub table: &'a Tensor,
}

impl Cx<'_> {
    /// Parameter `k` of the node, in the order its op declared them.
    pub fn param(&self, k: usize) -> &Tensor {
        self.params.get(k)
    }

    /// A dropout mask `(rows, cols)` of `0` and `1/(1 − p)` in `like`'s dtype, drawn from the
    /// step's stream while training; `None` in evaluation, without a stream, or at `p = 0`.
    pub fn dropout_mask(&self, rows: usize, cols: usize, p: f64, like: &Tensor) -> Result<Option<Tensor>> {
        let mut stream = self.dropout.borrow_mut();
        let Some(rng) = stream.as_mut().filter(|_| self.training && p > 0.0) else { return Ok(None) };
        Ok(Some(crate::run::rng::dropout_mask(rng, (rows, cols), p, like)?))
    }
}

/// Calls `f` with the context of a parameterless node outside training's dropout (for tests).
#[cfg(test)]
pub(crate) fn with_cx<R>(f: impl FnOnce(&Cx<'_>) -> R) -> R {
    let (dropout, state) = (RefCell::new(None), RefCell::new(None));
    f(&Cx {
        part: Part::Whole,
        params: Params::Prepared(&[]),
        others: &[],
        mask: None,
        training: true,
        round: None,
        inner: Inner::Off,
        table: None,
        storage: DType::F32,
        dropout: &dropout,
        state: &state,
    })
}
