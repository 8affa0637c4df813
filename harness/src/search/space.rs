//! The search space around a base scenario, and the proptest strategies that
//! draw [`Mutation`]s from it.
//!
//! A [`Space`] is made from the scenario's `[search]` table, or by default
//! from the knobs that apply to it, each within `decades` of its base value.
//! Generation lives here (proptest `Strategy`), running in [`crate::run`],
//! and shrinking in `minimize`, as proptest keeps `Strategy`, `ValueTree` and
//! `TestRunner` apart.

use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, Union};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::mutation::{mutate, normalize, Mutation};
use crate::scenario::*;

/// The knobs a search may move, with their ranges.
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    /// Learning-rate range.
    pub lr: Option<(f64, f64)>,
    /// Initial-weight scale range.
    pub init_scale: Option<(f64, f64)>,
    /// Input scale-factor range, and the number of features.
    pub input_scale: Option<(f64, f64, usize)>,
    /// Input mean range (synthetic inputs).
    pub input_mean: Option<(f64, f64)>,
    /// Input spread range (synthetic inputs).
    pub input_std: Option<(f64, f64)>,
    /// Target scale range.
    pub target_scale: Option<(f64, f64)>,
    /// Batch-size range.
    pub batch_size: Option<(u32, u32)>,
    /// Epoch range.
    pub epochs: Option<(u32, u32)>,
    /// Injected-fraction range, and whether there is a validation split.
    pub inject: Option<(f64, f64, bool)>,
    /// Values injections may write.
    pub inject_values: Vec<InjectValue>,
    /// Other dtypes to try.
    pub dtypes: Vec<DTypeName>,
    /// Other optimizers to try.
    pub optimizers: Vec<OptimizerKind>,
    /// Whether gradient clipping may be switched on or off.
    pub clip: bool,
    /// Range of the loss's epsilon (a value searched like any other, when the scenario sets one).
    pub loss_eps: Option<(f64, f64)>,
    /// Range of the loss's probability clamp (below 0.5), when the scenario sets one.
    pub loss_clamp: Option<(f64, f64)>,
    /// Range of `optimizer.eps` (Adam, AdamW, RMSprop).
    pub opt_eps: Option<(f64, f64)>,
    /// Range of `optimizer.beta2` (Adam, AdamW), `decades` either side on `1 − β₂`.
    pub beta2: Option<(f64, f64)>,
    /// Range of `optimizer.momentum` (SGD, RMSprop), on `1 − momentum`.
    pub momentum: Option<(f64, f64)>,
    /// Range of the `layer_norm` eps.
    pub norm_eps: Option<(f64, f64)>,
    /// Whether the seed may move (only when `[search] knobs` lists it).
    pub seed: bool,
    /// Range of `data.padding.max_fraction`.
    pub padding: Option<(f64, f64)>,
    /// Range of `data.seq_len`.
    pub seq_len: Option<(u32, u32)>,
    /// Range of `model.dropout.p`.
    pub dropout: Option<(f64, f64)>,
    /// Other precisions to try (autocast on or off).
    pub precisions: Vec<Precision>,
    /// Range of `train.loss_scale.init`.
    pub loss_scale_init: Option<(f64, f64)>,
    /// Range of `train.loss_scale.growth_interval`.
    pub growth_interval: Option<(u32, u32)>,
    /// Range of `train.schedule.warmup_steps` (from 0: none).
    pub warmup: Option<(u32, u32)>,
    /// Range of `train.accumulate`.
    pub accumulate: Option<(u32, u32)>,
    /// Most mutations in one candidate.
    pub max_mutations: usize,
}

fn around(base: f64, decades: f64) -> (f64, f64) {
    let f = 10f64.powf(decades);
    (base / f, base * f)
}

/// `decades` either side of `base` on `1 − v`, kept in [0, 1).
fn around_one(base: f64, decades: f64) -> (f64, f64) {
    let (a, b) = around(1.0 - base, decades);
    ((1.0 - b).max(0.0), 1.0 - a)
}

impl Space {
    /// The space of a scenario: its `[search]` table, or the default around its base values.
    pub fn of(base: &Scenario) -> Space {
        let spec = base.search.clone().unwrap_or_default();
        let decades = spec.decades.unwrap_or(3.0);
        // A knob moves if the `[search]` table lets it and it means something for this scenario.
        let on = |k: Knob| spec.knobs.as_ref().map_or(k.by_default(), |ks| ks.contains(&k)) && k.applies(base);
        // Unless `[search] decades` says, the initial scale and the input mean move less: 100× is already extreme.
        let narrow = spec.decades.unwrap_or(2.0);
        let range = |k: Knob, given: Option<[f64; 2]>, default: (f64, f64)| on(k).then(|| given.map_or(default, |[a, b]| (a, b)));
        let features = input_shape(&base.data).map(|s| s.features);
        let spread = |m: Mutation| m.base_value(base).filter(|v| *v > 0.0);
        Space {
            lr: range(Knob::Lr, spec.lr, around(base.optimizer.lr, decades)),
            init_scale: range(Knob::InitScale, spec.init_scale, around(base.model.init_scale.abs().max(1e-3), narrow)),
            input_scale: features.and_then(|f| range(Knob::InputScale, spec.input_scale, around(1.0, decades)).map(|(a, b)| (a, b, f))),
            input_mean: range(Knob::InputMean, None, (-10f64.powf(narrow), 10f64.powf(narrow))),
            input_std: spread(Mutation::InputStd { value: 1.0 }).and_then(|s| range(Knob::InputStd, None, around(s, decades))),
            target_scale: range(Knob::TargetScale, spec.target_scale, around(base.data.target_scale.abs().max(1e-3), decades)),
            batch_size: rows(base).filter(|_| on(Knob::BatchSize)).map(|n| spec.batch_size.map_or((1, n as u32), |[a, b]| (a, b))),
            epochs: on(Knob::Epochs).then(|| spec.epochs.map_or((1, (base.train.epochs * 4) as u32), |[a, b]| (a, b))),
            inject: range(Knob::Inject, spec.inject_fraction, (1e-4, 0.1)).map(|(a, b)| (a, b, base.data.validation.is_some())),
            inject_values: spec.inject_values.clone().unwrap_or(vec![InjectValue::Zero, InjectValue::Outlier]),
            dtypes: if on(Knob::Dtype) { spec.dtypes.unwrap_or(vec![DTypeName::F32, DTypeName::F16, DTypeName::Bf16]).into_iter().filter(|d| *d != base.train.dtype).collect() } else { vec![] },
            optimizers: if on(Knob::Optimizer) {
                let all = vec![OptimizerKind::Sgd, OptimizerKind::Adam, OptimizerKind::Adamw, OptimizerKind::Rmsprop];
                spec.optimizers.unwrap_or(all).into_iter().filter(|o| *o != base.optimizer.kind).collect()
            } else {
                vec![]
            },
            clip: on(Knob::ClipNorm),
            loss_eps: base.loss.epsilon.filter(|e| *e > 0.0 && on(Knob::LossEpsilon)).map(|e| around(e, decades)),
            loss_clamp: base.loss.clamp.filter(|c| *c > 0.0 && on(Knob::LossClamp)).map(|c| {
                let (a, b) = around(c, decades);
                (a, b.min(0.49))
            }),
            opt_eps: (base.optimizer.eps > 0.0 && on(Knob::OptimizerEps)).then(|| around(base.optimizer.eps, decades)),
            beta2: on(Knob::Beta2).then(|| around_one(base.optimizer.beta2, decades)),
            momentum: on(Knob::Momentum).then(|| around_one(base.optimizer.momentum, decades)),
            norm_eps: Mutation::NormEps { value: 0.0 }.base_value(base).filter(|e| *e > 0.0 && on(Knob::NormEps)).map(|e| around(e, decades)),
            seed: on(Knob::Seed),
            padding: on(Knob::PaddingFraction).then_some((0.0, 1.0)),
            seq_len: base.data.seq_len.filter(|_| on(Knob::SeqLen)).map(|l| (1, (l as u32).saturating_mul(4))),
            dropout: on(Knob::DropoutP).then_some((0.0, 0.9)),
            precisions: if on(Knob::Precision) { [Precision::F32, Precision::AmpF16, Precision::AmpBf16].into_iter().filter(|p| *p != base.train.precision).collect() } else { vec![] },
            loss_scale_init: base.train.loss_scale.as_ref().filter(|_| on(Knob::LossScaleInit)).map(|l| around(l.init, decades)),
            // Up to 4× the base interval, and down to growing after every clean step.
            growth_interval: base.train.loss_scale.as_ref().filter(|_| on(Knob::GrowthInterval)).map(|l| (1, (l.growth_interval as u32).saturating_mul(4))),
            warmup: base.train.schedule.as_ref().filter(|_| on(Knob::WarmupSteps)).map(|sch| (0, (sch.warmup_steps as u32).saturating_mul(4).max(8))),
            accumulate: on(Knob::Accumulate).then(|| (1, (base.train.accumulate as u32).saturating_mul(4).max(8))),
            max_mutations: spec.max_mutations.unwrap_or(3).max(1),
        }
    }

    /// The same space with every log range narrowed to `decades` around its centre (for neighbourhoods).
    pub fn narrowed(&self, decades: f64) -> Space {
        let narrow = |r: Option<(f64, f64)>| r.map(|(a, b)| around((a * b).sqrt(), decades.min((b / a).log10() / 2.0)));
        let mut s = self.clone();
        s.lr = narrow(s.lr);
        s.init_scale = narrow(s.init_scale);
        s.input_scale = s.input_scale.map(|(a, b, f)| {
            let (a, b) = narrow(Some((a, b))).unwrap_or((a, b));
            (a, b, f)
        });
        s.target_scale = narrow(s.target_scale);
        s.loss_eps = narrow(s.loss_eps);
        s.loss_clamp = narrow(s.loss_clamp);
        s.input_std = narrow(s.input_std);
        s.opt_eps = narrow(s.opt_eps);
        s.norm_eps = narrow(s.norm_eps);
        s.loss_scale_init = narrow(s.loss_scale_init);
        let narrow_one = |r: Option<(f64, f64)>| r.map(|(a, b)| narrow(Some((1.0 - b, 1.0 - a))).map_or((a, b), |(x, y)| ((1.0 - y).max(0.0), 1.0 - x)));
        s.beta2 = narrow_one(s.beta2);
        s.momentum = narrow_one(s.momentum);
        s.input_mean = s.input_mean.map(|(a, b)| (a / 10f64.powf(decades), b / 10f64.powf(decades)));
        s.max_mutations = 2;
        s
    }

    /// Brings a mutation's value back inside the space (the guided engine's moves can leave it).
    pub fn clamp(&self, m: Mutation) -> Mutation {
        let into = |v: f64, r: Option<(f64, f64)>| r.map_or(v, |(a, b)| v.clamp(a.min(b), b.max(a)));
        let Some((v, _)) = m.numeric() else { return m };
        let range = match &m {
            Mutation::Lr { .. } => self.lr,
            Mutation::InitScale { .. } => self.init_scale,
            Mutation::InputScale { .. } => self.input_scale.map(|(a, b, _)| (a, b)),
            Mutation::InputMean { .. } => self.input_mean,
            Mutation::InputStd { .. } => self.input_std,
            Mutation::TargetScale { .. } => self.target_scale,
            Mutation::BatchSize { .. } => self.batch_size.map(|(a, b)| (f64::from(a), f64::from(b))),
            Mutation::Epochs { .. } => self.epochs.map(|(a, b)| (f64::from(a), f64::from(b))),
            Mutation::Inject { .. } => self.inject.map(|(a, b, _)| (a, b)),
            Mutation::LossEpsilon { .. } => self.loss_eps,
            Mutation::LossClamp { .. } => self.loss_clamp,
            Mutation::OptimizerEps { .. } => self.opt_eps,
            Mutation::Beta2 { .. } => self.beta2,
            Mutation::Momentum { .. } => self.momentum,
            Mutation::NormEps { .. } => self.norm_eps,
            Mutation::PaddingFraction { .. } => self.padding,
            Mutation::DropoutP { .. } => self.dropout,
            Mutation::SeqLen { .. } => self.seq_len.map(|(a, b)| (f64::from(a), f64::from(b))),
            Mutation::LossScaleInit { .. } => self.loss_scale_init,
            Mutation::GrowthInterval { .. } => self.growth_interval.map(|(a, b)| (f64::from(a), f64::from(b))),
            Mutation::WarmupSteps { .. } => self.warmup.map(|(a, b)| (f64::from(a), f64::from(b))),
            Mutation::Accumulate { .. } => self.accumulate.map(|(a, b)| (f64::from(a), f64::from(b))),
            _ => None,
        };
        m.with_value(into(v, range))
    }

    /// Each numeric knob of the space, alone, as a mutation template with its range.
    pub fn numeric(&self) -> Vec<(Mutation, (f64, f64))> {
        let int = |r: Option<(u32, u32)>| r.map(|(a, b)| (f64::from(a), f64::from(b)));
        let all: [(Mutation, Option<(f64, f64)>); 21] = [
            (Mutation::Lr { value: 1.0 }, self.lr),
            (Mutation::InitScale { value: 1.0 }, self.init_scale),
            (Mutation::InputScale { feature: None, value: 1.0 }, self.input_scale.map(|(a, b, _)| (a, b))),
            (Mutation::InputMean { value: 0.0 }, self.input_mean),
            (Mutation::InputStd { value: 1.0 }, self.input_std),
            (Mutation::TargetScale { value: 1.0 }, self.target_scale),
            (Mutation::BatchSize { value: 1 }, int(self.batch_size)),
            (Mutation::Epochs { value: 1 }, int(self.epochs)),
            (Mutation::LossClamp { value: Some(1e-3) }, self.loss_clamp),
            (Mutation::LossEpsilon { value: Some(1e-7) }, self.loss_eps),
            (Mutation::OptimizerEps { value: 1e-8 }, self.opt_eps),
            (Mutation::Beta2 { value: 0.999 }, self.beta2),
            (Mutation::Momentum { value: 0.9 }, self.momentum),
            (Mutation::NormEps { value: 1e-5 }, self.norm_eps),
            (Mutation::PaddingFraction { value: 0.0 }, self.padding),
            (Mutation::SeqLen { value: 1 }, int(self.seq_len)),
            (Mutation::DropoutP { value: 0.0 }, self.dropout),
            (Mutation::LossScaleInit { value: 65536.0 }, self.loss_scale_init),
            (Mutation::GrowthInterval { value: 1 }, int(self.growth_interval)),
            (Mutation::WarmupSteps { value: 0 }, int(self.warmup)),
            (Mutation::Accumulate { value: 1 }, int(self.accumulate)),
        ];
        all.into_iter().filter_map(|(m, r)| r.map(|r| (m, r))).collect()
    }

    /// Each other value of the space's categorical knobs (dtype, optimizer, precision), alone.
    pub fn categorical(&self) -> Vec<Mutation> {
        let dtypes = self.dtypes.iter().map(|&value| Mutation::Dtype { value });
        let precisions = self.precisions.iter().map(|&value| Mutation::Precision { value });
        dtypes.chain(self.optimizers.iter().map(|&value| Mutation::Optimizer { value })).chain(precisions).collect()
    }

    /// Whether any knob can move at all.
    pub fn is_empty(&self) -> bool {
        self.corners().is_empty() && !self.seed
    }

    /// A strategy for one mutation anywhere in the space.
    pub fn mutation(&self) -> BoxedStrategy<Mutation> {
        let log = |(a, b): (f64, f64)| (a.ln()..=b.ln()).prop_map(f64::exp);
        let mut arms: Vec<BoxedStrategy<Mutation>> = Vec::new();
        if let Some(r) = self.lr {
            arms.push(log(r).prop_map(|value| Mutation::Lr { value }).boxed());
        }
        if let Some(r) = self.init_scale {
            arms.push(log(r).prop_map(|value| Mutation::InitScale { value }).boxed());
        }
        if let Some((a, b, f)) = self.input_scale {
            let f = f.clamp(1, usize::from(u16::MAX)) as u16;
            let feature = prop_oneof![Just(None), (0..f).prop_map(Some)];
            arms.push((feature, log((a, b))).prop_map(|(feature, value)| Mutation::InputScale { feature, value }).boxed());
        }
        if let Some((a, b)) = self.input_mean {
            arms.push((a..=b).prop_map(|value| Mutation::InputMean { value }).boxed());
        }
        if let Some(r) = self.input_std {
            arms.push(log(r).prop_map(|value| Mutation::InputStd { value }).boxed());
        }
        if let Some(r) = self.target_scale {
            arms.push(log(r).prop_map(|value| Mutation::TargetScale { value }).boxed());
        }
        if let Some((a, b)) = self.batch_size {
            arms.push((a.max(1)..=b.max(1)).prop_map(|value| Mutation::BatchSize { value }).boxed());
        }
        if let Some((a, b)) = self.epochs {
            arms.push((a.max(1)..=b.max(1)).prop_map(|value| Mutation::Epochs { value }).boxed());
        }
        if let Some((a, b, validation)) = self.inject.filter(|_| !self.inject_values.is_empty()) {
            let what = proptest::sample::select(self.inject_values.clone());
            let split = if validation { prop_oneof![Just(SplitSel::Train), Just(SplitSel::Validation)].boxed() } else { Just(SplitSel::Train).boxed() };
            arms.push((what, split, log((a, b))).prop_map(|(what, split, value)| Mutation::Inject { what, split, value }).boxed());
        }
        if !self.dtypes.is_empty() {
            arms.push(proptest::sample::select(self.dtypes.clone()).prop_map(|value| Mutation::Dtype { value }).boxed());
        }
        if !self.optimizers.is_empty() {
            arms.push(proptest::sample::select(self.optimizers.clone()).prop_map(|value| Mutation::Optimizer { value }).boxed());
        }
        if self.clip {
            arms.push(proptest::sample::select(vec![None, Some(1.0), Some(10.0)]).prop_map(|value| Mutation::ClipNorm { value }).boxed());
        }
        // Eps-like knobs are values on a log scale, not switches.
        if let Some(r) = self.loss_eps {
            arms.push(log(r).prop_map(|v| Mutation::LossEpsilon { value: Some(v) }).boxed());
        }
        if let Some(r) = self.loss_clamp {
            arms.push(log(r).prop_map(|v| Mutation::LossClamp { value: Some(v) }).boxed());
        }
        if let Some(r) = self.opt_eps {
            arms.push(log(r).prop_map(|value| Mutation::OptimizerEps { value }).boxed());
        }
        if let Some(r) = self.norm_eps {
            arms.push(log(r).prop_map(|value| Mutation::NormEps { value }).boxed());
        }
        // β₂ and momentum: log-uniform in their distance to 1.
        let near_one = |(a, b): (f64, f64)| log(((1.0 - b).max(1e-300), (1.0 - a).max(1e-300))).prop_map(|d| 1.0 - d);
        if let Some(r) = self.beta2 {
            arms.push(near_one(r).prop_map(|value| Mutation::Beta2 { value }).boxed());
        }
        if let Some(r) = self.momentum {
            arms.push(near_one(r).prop_map(|value| Mutation::Momentum { value }).boxed());
        }
        if let Some((a, b)) = self.padding {
            arms.push((a..=b).prop_map(|value| Mutation::PaddingFraction { value }).boxed());
        }
        if let Some((a, b)) = self.dropout {
            arms.push((a..=b).prop_map(|value| Mutation::DropoutP { value }).boxed());
        }
        if let Some((a, b)) = self.seq_len {
            arms.push((a.max(1)..=b.max(1)).prop_map(|value| Mutation::SeqLen { value }).boxed());
        }
        if !self.precisions.is_empty() {
            arms.push(proptest::sample::select(self.precisions.clone()).prop_map(|value| Mutation::Precision { value }).boxed());
        }
        if let Some(r) = self.loss_scale_init {
            arms.push(log(r).prop_map(|value| Mutation::LossScaleInit { value }).boxed());
        }
        for (r, make) in [(self.growth_interval, (|value| Mutation::GrowthInterval { value }) as fn(u32) -> Mutation), (self.accumulate, |value| Mutation::Accumulate { value })] {
            if let Some((a, b)) = r {
                arms.push((a.max(1)..=b.max(1)).prop_map(make).boxed());
            }
        }
        if let Some((a, b)) = self.warmup {
            arms.push((a..=b.max(a)).prop_map(|value| Mutation::WarmupSteps { value }).boxed());
        }
        if self.seed {
            arms.push((0..=u64::from(u32::MAX)).prop_map(|value| Mutation::Seed { value }).boxed());
        }
        if arms.is_empty() {
            return Just(Mutation::Lr { value: f64::NAN }).boxed();
        }
        Union::new(arms).boxed()
    }

    /// Every knob alone at the unstable corners of its range, most likely flips first:
    /// the high ends of numeric knobs, then each other dtype and optimizer, then the low
    /// ends and the switches. A screening sweep the guided engine starts from.
    pub fn corners(&self) -> Vec<Vec<Mutation>> {
        let mut hi = Vec::new();
        let mut other = Vec::new();
        let mut lo = Vec::new();
        let mut both = |r: Option<(f64, f64)>, make: &dyn Fn(f64) -> Mutation| {
            if let Some((a, b)) = r {
                hi.push(make(b));
                lo.push(make(a));
            }
        };
        both(self.lr, &|value| Mutation::Lr { value });
        both(self.init_scale, &|value| Mutation::InitScale { value });
        both(self.input_scale.map(|(a, b, _)| (a, b)), &|value| Mutation::InputScale { feature: None, value });
        both(self.target_scale, &|value| Mutation::TargetScale { value });
        both(self.input_std, &|value| Mutation::InputStd { value });
        both(self.input_mean, &|value| Mutation::InputMean { value });
        both(self.epochs.map(|(a, b)| (f64::from(a), f64::from(b))), &|v| Mutation::Epochs { value: v as u32 });
        both(self.batch_size.map(|(a, b)| (f64::from(a), f64::from(b))), &|v| Mutation::BatchSize { value: v as u32 });
        both(self.loss_clamp, &|v| Mutation::LossClamp { value: Some(v) });
        both(self.loss_eps, &|v| Mutation::LossEpsilon { value: Some(v) });
        both(self.opt_eps, &|value| Mutation::OptimizerEps { value });
        both(self.norm_eps, &|value| Mutation::NormEps { value });
        both(self.beta2, &|value| Mutation::Beta2 { value });
        both(self.momentum, &|value| Mutation::Momentum { value });
        both(self.padding, &|value| Mutation::PaddingFraction { value });
        both(self.dropout, &|value| Mutation::DropoutP { value });
        both(self.seq_len.map(|(a, b)| (f64::from(a), f64::from(b))), &|v| Mutation::SeqLen { value: v as u32 });
        other.extend(self.dtypes.iter().map(|&value| Mutation::Dtype { value }));
        both(self.loss_scale_init, &|value| Mutation::LossScaleInit { value });
        both(self.growth_interval.map(|(a, b)| (f64::from(a), f64::from(b))), &|v| Mutation::GrowthInterval { value: v as u32 });
        both(self.accumulate.map(|(a, b)| (f64::from(a), f64::from(b))), &|v| Mutation::Accumulate { value: v as u32 });
        // Less warmup is the unstable end.
        if let Some((a, b)) = self.warmup {
            hi.push(Mutation::WarmupSteps { value: a });
            lo.push(Mutation::WarmupSteps { value: b });
        }
        other.extend(self.optimizers.iter().map(|&value| Mutation::Optimizer { value }));
        other.extend(self.precisions.iter().map(|&value| Mutation::Precision { value }));
        if let Some((_, b, _)) = self.inject {
            other.extend(self.inject_values.iter().map(|&what| Mutation::Inject { what, split: SplitSel::Train, value: b }));
        }
        if self.clip {
            lo.push(Mutation::ClipNorm { value: Some(1.0) });
        }
        hi.into_iter().chain(other).chain(lo).map(|m| vec![m]).collect()
    }

    /// A strategy for a candidate: one to `max_mutations` mutations.
    pub fn candidate(&self) -> BoxedStrategy<Vec<Mutation>> {
        proptest::collection::vec(self.mutation(), 1..=self.max_mutations).boxed()
    }
}

/// A proptest runner whose draws depend only on `seed`.
pub fn seeded_runner(seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(Config { failure_persistence: None, ..Config::default() }, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Draws one value of a strategy from a runner.
pub fn draw<T: std::fmt::Debug>(strategy: &BoxedStrategy<T>, runner: &mut TestRunner) -> T {
    use proptest::strategy::ValueTree;
    strategy.new_tree(runner).expect("strategies here never reject").current()
}

/// `n` seeded mutants around a scenario for fix verification: first every
/// other dtype alone, then random one- or two-knob moves within one decade.
pub fn neighbourhood(base: &Scenario, n: usize, seed: u64) -> Vec<Vec<Mutation>> {
    let space = Space::of(base).narrowed(1.0);
    let mut out: Vec<Vec<Mutation>> = space.dtypes.iter().map(|d| vec![Mutation::Dtype { value: *d }]).collect();
    let mut runner = seeded_runner(seed);
    let strategy = space.candidate();
    let mut tries = 0;
    while out.len() < n && tries < n * 20 {
        tries += 1;
        // Moves to the value the base already has are dropped: a mutant of only those is the base.
        let c: Vec<Mutation> = normalize(&draw(&strategy, &mut runner)).into_iter().filter(|m| moves(base, m)).collect();
        if !c.is_empty() && mutate(base, &c).is_some() && !out.contains(&c) {
            out.push(c);
        }
    }
    out.truncate(n);
    out
}

/// Whether a mutation alone changes `base`: not a whole number it already has (a batch of all
/// its rows, its own epochs) nor a setting it already has (clipping already off).
fn moves(base: &Scenario, m: &Mutation) -> bool {
    let same = m.numeric().is_some_and(|(v, scale)| scale == super::mutation::Scale::Integer && Some(v) == m.base_value(base));
    !same && mutate(base, std::slice::from_ref(m)).is_none_or(|s| s != *base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Scenario {
        crate::scenario::seed("s000_ex1_bce_mlp")
    }

    #[test]
    fn draws_stay_inside_the_space() {
        let b = base();
        let space = Space::of(&b);
        let mut runner = seeded_runner(1);
        let strategy = space.mutation();
        for _ in 0..300 {
            match draw(&strategy, &mut runner) {
                Mutation::Lr { value } => assert!((1e-6..=1.0 + 1e-12).contains(&value), "{value}"),
                Mutation::Dtype { value } => assert_ne!(value, b.train.dtype),
                Mutation::Inject { split, .. } => assert_eq!(split, SplitSel::Train, "no validation split in this scenario"),
                _ => {}
            }
        }
    }

    #[test]
    fn search_table_limits_the_knobs() {
        let mut b = base();
        b.search = Some(SearchSpec { knobs: Some(vec![Knob::Lr]), lr: Some([0.5, 2.0]), ..Default::default() });
        let space = Space::of(&b);
        let mut runner = seeded_runner(2);
        let strategy = space.mutation();
        for _ in 0..50 {
            let Mutation::Lr { value } = draw(&strategy, &mut runner) else { panic!("only lr may move") };
            assert!((0.5..=2.0 + 1e-12).contains(&value));
        }
    }

    #[test]
    fn clamp_keeps_guided_moves_inside_the_space() {
        let b = base();
        let space = Space::of(&b);
        assert_eq!(space.clamp(Mutation::Epochs { value: u32::MAX }), Mutation::Epochs { value: 400 }, "4 × the base's 100 epochs");
        assert_eq!(space.clamp(Mutation::Lr { value: 1e9 }), Mutation::Lr { value: 1e-3 * 1e3 });
        assert_eq!(space.clamp(Mutation::Dtype { value: DTypeName::F16 }), Mutation::Dtype { value: DTypeName::F16 });
    }

    #[test]
    fn neighbourhood_is_seeded_and_starts_with_dtypes() {
        let b = base();
        let a = neighbourhood(&b, 8, 7);
        assert_eq!(a, neighbourhood(&b, 8, 7));
        assert_ne!(a, neighbourhood(&b, 8, 8));
        assert_eq!(a.len(), 8);
        assert_eq!(a[0], vec![Mutation::Dtype { value: DTypeName::F16 }]);
        assert_eq!(a[1], vec![Mutation::Dtype { value: DTypeName::Bf16 }]);
    }

    #[test]
    fn every_knob_combination_around_an_amp_transformer_runs_without_an_error() {
        // A hunt's candidates around pytorch#40497's fix (precision, scaler, accumulation, dtype
        // attempts, sequence length, padding, ...), two steps each: a candidate is refused by
        // validation or runs; none fails inside the runner (a dtype mismatch would).
        let mut s = crate::scenario::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/real/pt40497_amp_scale_collapse_fix_growth_interval.toml")).unwrap();
        s.train.max_steps = Some(2);
        let space = Space::of(&s);
        let strategy = space.candidate();
        let mut runner = seeded_runner(3);
        let mut ran = 0;
        for _ in 0..80 {
            let candidate = super::super::mutation::normalize(&draw(&strategy, &mut runner));
            let Some(m) = super::super::mutation::mutate(&s, &candidate) else { continue };
            let o = crate::run::run(&m);
            assert!(o.error.is_none(), "{}: {:?}", super::super::mutation::describe(&candidate), o.error);
            ran += 1;
        }
        assert!(ran > 40, "most candidates are valid: {ran}");
    }
}
