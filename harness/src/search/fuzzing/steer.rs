//! Structured fuzz inputs steered towards scenarios that pass validation.
//!
//! `Scenario`'s derived `Arbitrary` draws every field freely: a random name, a
//! random device string, random sizes, a random layer list. Almost none of those
//! scenarios pass validation (a device other than `cpu`, a name with control
//! characters, synthetic rows without `n`, a layer that does not fit its input's
//! shape), so the fuzzer spends its executions in `validate` and seldom builds a
//! convolution, a pool, a recurrent layer or an autocast setting. [`Steered`]
//! instead picks an input kind, then a layer stack one layer at a time from the
//! layers that fit the current shape (small sizes, kernels no longer than their
//! padded input), closes it with a head that fits the targets, and picks the
//! optimizer and training settings (precision, loss scaling, accumulation,
//! schedules) from their vocabularies. A few draws still go fully free (one
//! scenario in eight, and one layer or setting in sixteen), so edge values
//! such as huge paddings or strides keep being tried.

use crate::ops::batch_norm::BatchNorm;
use crate::ops::conv::{Conv1d, Conv2d};
use crate::ops::dropout::Dropout;
use crate::ops::embedding::{Embedding, PositionalEmbedding};
use crate::ops::flatten::Flatten;
use crate::ops::gated::{Gru, Lstm};
use crate::ops::layer_norm::LayerNorm;
use crate::ops::linear::Linear;
use crate::ops::pool2d::{AvgPool2d, MaxPool2d};
use crate::ops::rms_norm::RmsNorm;
use crate::ops::rnn::Rnn;
use crate::ops::seq_pool::{Last, MaxPool, MeanPool};
use crate::ops::{attention::Attention, residual::Residual};
use arbitrary::{Arbitrary, Result, Unstructured};

use crate::scenario::{
    parse_str, DTypeName, Decay, ImageSpec, InputSpec, Layer, LossKind, LossScaleSpec, OptimizerKind, PaddingSpec, Precision, Reduction, RnnActivation, Scenario, ScheduleSpec, TargetSpec,
    ValidationSpec,
};

/// A scenario built from fuzzer bytes, steered so that most pass validation.
#[derive(Debug, Clone)]
pub struct Steered(pub Scenario);

/// The shape flowing through the stack while it is built.
#[derive(Debug, Clone, Copy)]
enum Shape {
    /// `(batch, width)`.
    Flat(usize),
    /// `(batch, len, width)`.
    Seq(usize, usize),
    /// `(batch, channels, height, width)`.
    Img(usize, usize, usize),
}

const TEMPLATE: &str = "name = \"steered\"\n[data]\ninputs = { kind = \"normal\" }\n[model]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n";

impl<'a> Arbitrary<'a> for Steered {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(1, 8)? {
            return Ok(Steered(Scenario::arbitrary(u)?));
        }
        let mut s = parse_str(TEMPLATE, "steered.toml").expect("the template parses");
        s.seed = u.int_in_range(0..=3)?;
        let mut shape = inputs(u, &mut s)?;
        for _ in 0..u.int_in_range(0..=5)? {
            let layer = if u.ratio(1, 16)? { Layer::arbitrary(u)? } else { layer(u, &mut shape)? };
            s.model.layers.push(layer);
        }
        head(u, &mut s, shape)?;
        optimizer(u, &mut s)?;
        train(u, &mut s)?;
        Ok(Steered(s))
    }
}

/// Picks the inputs (features, sequences, tokens or images) and returns their shape.
fn inputs(u: &mut Unstructured, s: &mut Scenario) -> Result<Shape> {
    let d = &mut s.data;
    d.n = Some(u.int_in_range(1..=12)?);
    if u.ratio(1, 3)? {
        d.inputs = InputSpec::Uniform { low: -1.0, high: 1.0 };
    }
    Ok(match u.int_in_range(0..=3)? {
        0 => {
            let f = u.int_in_range(1..=6)?;
            d.features = Some(f);
            Shape::Flat(f)
        }
        1 => {
            let (f, len) = (u.int_in_range(1..=4)?, u.int_in_range(1..=6)?);
            (d.features, d.seq_len) = (Some(f), Some(len));
            if u.ratio(1, 4)? {
                d.padding = Some(PaddingSpec { max_fraction: Some(*u.choose(&[0.5, 1.0])?), lengths: Vec::new() });
            }
            Shape::Seq(len, f)
        }
        2 => {
            let (vocab, len, dim) = (u.int_in_range(1..=8)?, u.int_in_range(1..=6)?, u.int_in_range(1..=4)? * 2);
            d.inputs = InputSpec::Tokens { vocab, rows: Vec::new() };
            d.seq_len = Some(len);
            s.model.layers.push(Layer::Embedding(Embedding { dim }));
            Shape::Seq(len, dim)
        }
        _ => {
            let (c, h, w) = (u.int_in_range(1..=3)?, u.int_in_range(1..=6)?, u.int_in_range(1..=6)?);
            d.image = Some(ImageSpec { channels: c, height: h, width: w });
            Shape::Img(c, h, w)
        }
    })
}

/// An elementwise activation, norm or dropout: layers that keep any shape.
fn keep_shape(u: &mut Unstructured) -> Result<Layer> {
    Ok(match u.int_in_range(0..=9)? {
        0 => Layer::Relu(Default::default()),
        1 => Layer::Tanh(Default::default()),
        2 => Layer::Sigmoid(Default::default()),
        3 => Layer::Gelu(Default::default()),
        4 => Layer::Silu(Default::default()),
        5 => Layer::LeakyRelu(crate::ops::leaky_relu::LeakyRelu { negative_slope: 0.01 }),
        6 => Layer::LayerNorm(LayerNorm { eps: 1e-5 }),
        7 => Layer::RmsNorm(RmsNorm { eps: *u.choose(&[None, Some(1e-6)])? }),
        8 => Layer::Dropout(Dropout { p: *u.choose(&[0.1, 0.5])? }),
        _ => Layer::Identity(Default::default()),
    })
}

/// A convolution's output length, if its kernel fits the padded input.
fn conv_len(len: usize, kernel: usize, stride: usize, padding: usize) -> Option<usize> {
    (len + 2 * padding).checked_sub(kernel).map(|r| r / stride + 1)
}

/// One layer that fits `shape`, which it updates.
fn layer(u: &mut Unstructured, shape: &mut Shape) -> Result<Layer> {
    if u.ratio(1, 3)? {
        return keep_shape(u);
    }
    let small = |u: &mut Unstructured| u.int_in_range(1..=6);
    let (layer, next) = match *shape {
        Shape::Flat(w) => match u.int_in_range(0..=2)? {
            0 => {
                let out = small(u)?;
                (Layer::Linear(Linear { out, init: None }), Shape::Flat(out))
            }
            1 => (Layer::BatchNorm(BatchNorm { eps: 1e-5, momentum: 0.1 }), *shape),
            _ => (Layer::Residual(Residual { layers: vec![Layer::LayerNorm(LayerNorm { eps: 1e-5 }), Layer::Linear(Linear { out: w, init: None })] }), *shape),
        },
        Shape::Seq(len, w) => seq_layer(u, len, w)?,
        Shape::Img(c, h, w) => match u.int_in_range(0..=3)? {
            0 | 1 => {
                let (channels, kernel, stride, padding) = (small(u)?, u.int_in_range(1..=3)?, u.int_in_range(1..=2)?, u.int_in_range(0..=1)?);
                match (conv_len(h, kernel, stride, padding), conv_len(w, kernel, stride, padding)) {
                    (Some(h2), Some(w2)) => (Layer::Conv2d(Conv2d { channels, kernel, stride, padding, init: None }), Shape::Img(channels, h2, w2)),
                    _ => (Layer::Relu(Default::default()), *shape),
                }
            }
            2 => {
                let kernel = u.int_in_range(1..=h.min(w).clamp(1, 3))?;
                let pool = if u.ratio(1, 2)? { Layer::MaxPool2d(MaxPool2d { kernel }) } else { Layer::AvgPool2d(AvgPool2d { kernel }) };
                (pool, Shape::Img(c, h / kernel, w / kernel))
            }
            _ => (Layer::BatchNorm(BatchNorm { eps: 1e-5, momentum: 0.1 }), *shape),
        },
    };
    *shape = next;
    Ok(layer)
}

/// A layer over a sequence `(batch, len, w)`, and the shape it leaves.
fn seq_layer(u: &mut Unstructured, len: usize, w: usize) -> Result<(Layer, Shape)> {
    let hidden = u.int_in_range(1..=6)?;
    let return_sequences = u.arbitrary()?;
    let activation = if u.ratio(1, 4)? { RnnActivation::Relu } else { RnnActivation::Tanh };
    let recurrent_dropout = *u.choose(&[0.0, 0.0, 0.2])?;
    let rec = if return_sequences { Shape::Seq(len, hidden) } else { Shape::Flat(hidden) };
    Ok(match u.int_in_range(0..=8)? {
        0 => (Layer::Rnn(Rnn { hidden, init: None }), Shape::Flat(hidden)),
        1 => (Layer::Lstm(Lstm { hidden, return_sequences, activation, recurrent_dropout, init: None }), rec),
        2 => (Layer::Gru(Gru { hidden, return_sequences, activation, recurrent_dropout, init: None }), rec),
        3 | 4 => {
            let (kernel, stride, padding) = (u.int_in_range(1..=3)?, u.int_in_range(1..=2)?, u.int_in_range(0..=1)?);
            match conv_len(len, kernel, stride, padding) {
                Some(l2) => (Layer::Conv1d(Conv1d { channels: hidden, kernel, stride, padding, init: None }), Shape::Seq(l2, hidden)),
                None => (Layer::Relu(Default::default()), Shape::Seq(len, w)),
            }
        }
        5 => {
            let heads = if w.is_multiple_of(2) { *u.choose(&[1, 2])? } else { 1 };
            let attention = Layer::Attention(Attention { heads, causal: u.arbitrary()?, mask_fill: u.arbitrary()?, softmax: u.arbitrary()? });
            (Layer::Residual(Residual { layers: vec![Layer::LayerNorm(LayerNorm { eps: 1e-5 }), attention] }), Shape::Seq(len, w))
        }
        6 => (Layer::PositionalEmbedding(PositionalEmbedding {}), Shape::Seq(len, w)),
        7 => (u.choose(&[Layer::MeanPool(MeanPool {}), Layer::MaxPool(MaxPool {}), Layer::Last(Last {})])?.clone(), Shape::Flat(w)),
        _ => (Layer::Linear(Linear { out: hidden, init: None }), Shape::Seq(len, hidden)),
    })
}

/// Closes the stack to `(batch, outputs)` and picks targets and a loss that fit it.
fn head(u: &mut Unstructured, s: &mut Scenario, shape: Shape) -> Result<()> {
    match shape {
        Shape::Flat(_) => {}
        Shape::Seq(..) => s.model.layers.push(u.choose(&[Layer::MeanPool(MeanPool {}), Layer::MaxPool(MaxPool {}), Layer::Last(Last {}), Layer::Flatten(Flatten {})])?.clone()),
        Shape::Img(..) => s.model.layers.push(Layer::Flatten(Flatten {})),
    }
    let (targets, outputs, kinds): (TargetSpec, usize, &[LossKind]) = match u.int_in_range(0..=2)? {
        0 => {
            let outputs = u.int_in_range(1..=3)?;
            (TargetSpec::Normal { mean: 0.0, std: 1.0, outputs }, outputs, &[LossKind::Mse, LossKind::Mae, LossKind::Huber])
        }
        1 => (TargetSpec::Binary, 1, &[LossKind::BceLogits, LossKind::BceTorch, LossKind::Bce]),
        _ => {
            let k = u.int_in_range(2..=4)?;
            (TargetSpec::Classes { k }, k, &[LossKind::CrossEntropy, LossKind::NaiveCrossEntropy])
        }
    };
    s.data.targets = Some(targets);
    s.model.layers.push(Layer::Linear(Linear { out: outputs, init: None }));
    s.loss.kind = *u.choose(kinds)?;
    match s.loss.kind {
        LossKind::Huber => s.loss.delta = Some(1.0),
        LossKind::Bce | LossKind::BceTorch => s.model.layers.push(Layer::Sigmoid(Default::default())),
        _ => {}
    }
    if u.ratio(1, 4)? {
        s.loss.reduction = Reduction::Sum;
    }
    Ok(())
}

/// The update rule, its learning rate and clipping.
fn optimizer(u: &mut Unstructured, s: &mut Scenario) -> Result<()> {
    let o = &mut s.optimizer;
    o.kind = *u.choose(&[OptimizerKind::Sgd, OptimizerKind::Adam, OptimizerKind::Adamw, OptimizerKind::Rmsprop])?;
    o.lr = *u.choose(&[1e-4, 1e-3, 1e-2, 0.1, 1.0])?;
    if o.kind.takes_momentum() && u.ratio(1, 3)? {
        o.momentum = 0.9;
    }
    if u.ratio(1, 4)? {
        o.clip_grad_norm = Some(1.0);
    }
    Ok(())
}

/// Epochs, batches, dtype, autocast, loss scaling, accumulation, schedule and validation.
fn train(u: &mut Unstructured, s: &mut Scenario) -> Result<()> {
    let n = s.data.n.unwrap_or(1);
    let t = &mut s.train;
    t.epochs = u.int_in_range(1..=3)?;
    t.batch_size = if u.ratio(1, 2)? { Some(u.int_in_range(1..=n)?) } else { None };
    t.shuffle = u.arbitrary()?;
    t.accumulate = *u.choose(&[1, 1, 2, 3])?;
    t.precision = *u.choose(&[Precision::F32, Precision::AmpF16, Precision::AmpBf16])?;
    t.dtype = match t.precision {
        Precision::F32 => *u.choose(&[DTypeName::F32, DTypeName::F64, DTypeName::F16, DTypeName::Bf16])?,
        _ => DTypeName::F32,
    };
    if t.dtype == DTypeName::F32 && u.ratio(1, 2)? {
        t.loss_scale = Some(if u.ratio(1, 16)? { LossScaleSpec::arbitrary(u)? } else { loss_scale(u)? });
    }
    if u.ratio(1, 4)? {
        t.schedule = Some(if u.ratio(1, 16)? { ScheduleSpec::arbitrary(u)? } else { schedule(u)? });
    }
    if n >= 2 && u.ratio(1, 4)? {
        s.data.validation = Some(ValidationSpec { fraction: Some(0.5), ..ValidationSpec::default() });
    }
    Ok(())
}

/// GradScaler settings inside their domains.
fn loss_scale(u: &mut Unstructured) -> Result<LossScaleSpec> {
    Ok(LossScaleSpec { init: *u.choose(&[1.0, 1024.0, 65536.0])?, growth_interval: u.int_in_range(1..=4)?, min_scale: if u.ratio(1, 3)? { Some(1.0) } else { None }, ..LossScaleSpec::default() })
}

/// A warmup and one decay, each with the keys it needs.
fn schedule(u: &mut Unstructured) -> Result<ScheduleSpec> {
    let decay = *u.choose(&[Decay::Constant, Decay::Step, Decay::Exponential, Decay::Cosine])?;
    Ok(ScheduleSpec {
        warmup_steps: u.int_in_range(0..=3)?,
        decay,
        step_size: (decay == Decay::Step).then_some(2),
        gamma: matches!(decay, Decay::Step | Decay::Exponential).then_some(0.5),
        decay_steps: (decay == Decay::Cosine).then_some(4),
        ..ScheduleSpec::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::validate;

    /// 512 pseudo-random bytes per seed (xorshift64*), the same on every machine.
    fn bytes(seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..512)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    /// The valid scenarios among `N` seeded byte strings built by `build`.
    fn valid(build: fn(&[u8]) -> Option<Scenario>) -> Vec<Scenario> {
        (0..N).filter_map(|seed| build(&bytes(seed))).filter(|s| validate(s).is_empty()).collect()
    }

    const N: u64 = 2000;

    #[test]
    fn steered_scenarios_are_mostly_valid_and_reach_every_layer_family_and_amp_setting() {
        let ok = valid(|b| Steered::arbitrary(&mut Unstructured::new(b)).ok().map(|s| s.0));
        assert!(ok.len() as u64 * 2 >= N, "only {} of {N} valid", ok.len());
        let prepared = ok.iter().filter(|s| crate::scenario::memory_estimate(s).is_some_and(|b| b <= super::super::MAX_PREPARED_BYTES)).count();
        eprintln!("steered: {} of {N} valid, {prepared} small enough to build", ok.len());
        assert!(prepared * 10 >= ok.len() * 9, "{prepared} of {} built", ok.len());
        let has = |pick: fn(&Layer) -> bool| ok.iter().filter(|s| s.model.all_layers().into_iter().any(pick)).count();
        let with = |pick: fn(&Scenario) -> bool| ok.iter().filter(|s| pick(s)).count();
        let counts = [
            ("conv1d", has(|l| matches!(l, Layer::Conv1d(_)))),
            ("conv2d", has(|l| matches!(l, Layer::Conv2d(_)))),
            ("max_pool2d", has(|l| matches!(l, Layer::MaxPool2d(_)))),
            ("avg_pool2d", has(|l| matches!(l, Layer::AvgPool2d(_)))),
            ("rnn", has(|l| matches!(l, Layer::Rnn(_)))),
            ("lstm", has(|l| matches!(l, Layer::Lstm(_)))),
            ("gru", has(|l| matches!(l, Layer::Gru(_)))),
            ("attention", has(|l| matches!(l, Layer::Attention(_)))),
            ("amp_f16", with(|s| s.train.precision == Precision::AmpF16)),
            ("amp_bf16", with(|s| s.train.precision == Precision::AmpBf16)),
            ("loss_scale", with(|s| s.train.loss_scale.is_some())),
            ("accumulate > 1", with(|s| s.train.accumulate > 1)),
            ("schedule", with(|s| s.train.schedule.is_some())),
        ];
        // Each family in at least 3% of the valid scenarios (about 30 of 1000).
        for (name, count) in counts {
            eprintln!("{name}: {count} of {} valid", ok.len());
            assert!(count * 100 >= ok.len() * 3, "{name}: {count} of {} valid scenarios", ok.len());
        }
    }

    #[test]
    fn derived_scenarios_are_almost_never_valid() {
        // Why the steering exists: the same bytes through `Scenario`'s derived `Arbitrary`.
        let ok = valid(|b| Scenario::arbitrary(&mut Unstructured::new(b)).ok());
        eprintln!("derived: {} of {N} valid", ok.len());
        assert!((ok.len() as u64) * 100 < N, "{} of {N} valid", ok.len());
    }
}
