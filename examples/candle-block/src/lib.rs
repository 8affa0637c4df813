//! A small pre-norm transformer block and a sequence classifier around it,
//! written with candle-nn the way a Candle user writes them: built from a
//! `VarBuilder`, run through `Module::forward`. The tests in `tests/` hunt this
//! model as it is.
//!
//! Its layer norms are `nanhunt::nn`'s: candle-nn's own `LayerNorm` takes a fused
//! op without a backward on a contiguous input (candle#2168), so with it the
//! norms never train and nothing below them gets a gradient through them.
//! [`Config::candle_norms`] builds the block that way, to show nanhunt catching it.
//!
//! [`Classifier::forward_with`] is the same forward with a callback that sees
//! the intermediate tensors by name, so a test can hand them to the watch.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{linear, LayerNormConfig, Linear, VarBuilder};

/// The block's sizes.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Width of the residual stream.
    pub width: usize,
    /// Attention heads (they split the width).
    pub heads: usize,
    /// Width of the MLP's hidden layer.
    pub hidden: usize,
    /// The layer norms' epsilon.
    pub eps: f64,
    /// Build the layer norms with candle-nn's `LayerNorm` (no backward) instead of `nanhunt::nn`'s.
    pub candle_norms: bool,
}

/// A layer norm: `nanhunt::nn`'s, or candle-nn's, whose forward has no backward.
enum Norm {
    Trains(nanhunt::nn::LayerNorm),
    Frozen(candle_nn::LayerNorm),
}

impl Norm {
    fn new(cfg: Config, vb: VarBuilder) -> Result<Self> {
        let config = LayerNormConfig { eps: cfg.eps, ..Default::default() };
        Ok(if cfg.candle_norms { Norm::Frozen(candle_nn::layer_norm(cfg.width, config, vb)?) } else { Norm::Trains(nanhunt::nn::layer_norm(cfg.width, config, vb)?) })
    }
}

impl Module for Norm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Norm::Trains(n) => n.forward(x),
            Norm::Frozen(n) => n.forward(x),
        }
    }
}

/// `x + attn(ln1(x))`, then `x + mlp(ln2(x))`: GPT-2's pre-norm block.
pub struct Block {
    ln1: Norm,
    qkv: Linear,
    proj: Linear,
    ln2: Norm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Block {
    /// The block's parameters, under `vb`'s prefix.
    pub fn new(cfg: Config, vb: VarBuilder) -> Result<Self> {
        let ln = |name: &str| Norm::new(cfg, vb.pp(name));
        Ok(Block {
            ln1: ln("ln1")?,
            qkv: linear(cfg.width, 3 * cfg.width, vb.pp("attn.qkv"))?,
            proj: linear(cfg.width, cfg.width, vb.pp("attn.proj"))?,
            ln2: ln("ln2")?,
            fc1: linear(cfg.width, cfg.hidden, vb.pp("mlp.fc1"))?,
            fc2: linear(cfg.hidden, cfg.width, vb.pp("mlp.fc2"))?,
            heads: cfg.heads,
        })
    }

    /// The block on `x` `(batch, seq, width)`, showing `check` its attention scores and output.
    pub fn forward_with(&self, x: &Tensor, check: &mut dyn FnMut(&str, &Tensor)) -> Result<Tensor> {
        let (b, t, w) = x.dims3()?;
        let d = w / self.heads;
        let split = |u: Tensor| u.reshape((b, t, self.heads, d))?.transpose(1, 2)?.contiguous();
        let qkv = self.qkv.forward(&self.ln1.forward(x)?)?;
        let (q, k, v) = (split(qkv.narrow(2, 0, w)?)?, split(qkv.narrow(2, w, w)?)?, split(qkv.narrow(2, 2 * w, w)?)?);
        let scores = (q.matmul(&k.t()?.contiguous()?)? / (d as f64).sqrt())?;
        check("block.attn.scores", &scores);
        let probs = nanhunt::nn::ops::softmax(&scores, D::Minus1)?;
        let mixed = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, w))?;
        let x = (x + self.proj.forward(&mixed)?)?;
        let h = self.fc1.forward(&self.ln2.forward(&x)?)?.gelu()?;
        let out = (&x + self.fc2.forward(&h)?)?;
        check("block.output", &out);
        Ok(out)
    }
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, &mut |_, _| {})
    }
}

/// Features per step → the block → mean over the sequence → one logit per example.
pub struct Classifier {
    embed: Linear,
    block: Block,
    head: Linear,
}

impl Classifier {
    /// A classifier of sequences with `features` values per step.
    pub fn new(features: usize, cfg: Config, vb: VarBuilder) -> Result<Self> {
        Ok(Classifier { embed: linear(features, cfg.width, vb.pp("embed"))?, block: Block::new(cfg, vb.pp("block"))?, head: linear(cfg.width, 1, vb.pp("head"))? })
    }

    /// The logits `(batch, 1)` of `x` `(batch, seq, features)`, showing `check` the block's tensors.
    pub fn forward_with(&self, x: &Tensor, check: &mut dyn FnMut(&str, &Tensor)) -> Result<Tensor> {
        let h = self.block.forward_with(&self.embed.forward(x)?, check)?;
        self.head.forward(&h.mean(1)?)
    }
}

impl Module for Classifier {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, &mut |_, _| {})
    }
}
