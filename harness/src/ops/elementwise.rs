//! [`Elementwise`]: the smaller trait of the ops that map one input to one output with no
//! parameters or state (activations, `sqrt`, `log`, `normalize`, ...), and the [`Op`] every
//! one of them gets from it.

use candle_core::Tensor;

use super::{Autocast, Cx, Explained, Facts, Op, Rounding, Torch};
use crate::error::Result;
use crate::scenario::{Part, Planner, Shape};

/// An elementwise op (or one over the last dimension) of one input, with no parameters or
/// state: everything it answers, its [`Op`] follows (one node that keeps its input's shape
/// unless `shape` says otherwise, rounded by the model under autocast). No method has a default.
pub trait Elementwise: std::fmt::Debug + Send + Sync {
    /// Problems with the attributes, each as (attribute key, message), e.g. `("eps", "must be positive")`.
    fn check(&self) -> Vec<(&'static str, String)>;
    /// The output shape for one example of `input` (the batch left out), or why it does not fit.
    fn shape(&self, input: Shape) -> std::result::Result<Shape, String>;
    /// Values per example the op holds for a training step, given `output`, the values its
    /// output and gradient take (as `scenario::memory` counts them); most ops hold just that.
    fn held(&self, input: Shape, output: u128) -> u128;
    /// Autograd graph levels it adds: its own, and per time step of the sequence it reads.
    fn levels(&self) -> (u64, u64);
    /// The forward pass; its backward (through Candle's graph or a custom op) is PyTorch's.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// Where it computes under autocast.
    fn autocast(&self) -> Autocast;
    /// Why its output went non-finite at an element whose input was `f.x`, if a rule knows.
    fn explain_forward(&self, f: &Facts<'_>) -> Explained;
    /// Why its backward made its input's gradient non-finite at an element (`f.x`, `f.grad`).
    fn explain_backward(&self, f: &Facts<'_>) -> Explained;
    /// Why its backward may have made a parameter's gradient non-finite in a step where it
    /// read `zeros` exact zeros among `n` values (the fallback when no output gradient was
    /// caught non-finite): e.g. `sqrt`'s derivative is infinite at 0. Most ops answer `None`.
    fn explain_zeros(&self, zeros: usize, n: usize) -> Explained;
    /// Its PyTorch line for `repro.py`: a Python expression of the tensor `x`, with `torch` and
    /// `F` (`torch.nn.functional`) in scope, e.g. `F.softsign(x)`; numbers written with [`py`].
    fn torch(&self) -> String;
}

impl<T: Elementwise> Op for T {
    fn check(&self) -> Vec<(&'static str, String)> {
        Elementwise::check(self)
    }

    fn plan(&self, _: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        self.shape(input)
    }

    fn held(&self, input: Shape, _: Shape, values: u128) -> u128 {
        Elementwise::held(self, input, values)
    }

    fn levels(&self) -> (u64, u64) {
        Elementwise::levels(self)
    }

    fn dropout(&self) -> f64 {
        0.0
    }

    fn forward(&self, x: &Tensor, _: &Cx<'_>) -> Result<Tensor> {
        Elementwise::forward(self, x)
    }

    fn autocast(&self, _: Part) -> Autocast {
        Elementwise::autocast(self)
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::Outside
    }

    fn explain_forward(&self, _: Part, f: &Facts<'_>) -> Explained {
        Elementwise::explain_forward(self, f)
    }

    fn explain_backward(&self, f: &Facts<'_>) -> Explained {
        Elementwise::explain_backward(self, f)
    }

    fn explain_zeros(&self, zeros: usize, n: usize) -> Explained {
        Elementwise::explain_zeros(self, zeros, n)
    }

    fn torch(&self) -> Torch {
        Torch::Expr(Elementwise::torch(self))
    }
}
