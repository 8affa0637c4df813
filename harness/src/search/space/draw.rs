//! Drawing from a space: the proptest strategy for one mutation (one arm per
//! knob), the screening sweep of corners the guided engine starts from, the
//! seeded runner, and the neighbourhoods fixes are verified on.

use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, Union};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

use super::super::mutation::{mutate, normalize, Mutation};
use super::{order, Axis, Space};
use crate::scenario::{Added, ConstRange, Domain, End, Factor, Knob, Scale, Scenario, SplitSel, Value};

/// A numeric knob's value at `v` (a draw or a range end).
fn number(knob: Knob, v: f64) -> Mutation {
    Mutation { knob, value: (knob.entry().at)(v).unwrap_or(Value::Real(v)) }
}

/// Uniform in `ln v` between the ends.
fn log((a, b): (f64, f64)) -> impl Strategy<Value = f64> {
    (a.ln()..=b.ln()).prop_map(f64::exp)
}

/// The strategy for one knob's value, or none when its domain has nothing to draw.
fn arm(axis: &Axis) -> Option<BoxedStrategy<Mutation>> {
    let knob = axis.knob;
    let spec = knob.entry().spec;
    let to = move |v: f64| number(knob, v);
    Some(match (&axis.domain, spec.scale) {
        (&Domain::Range(a, b), Some(Scale::Log)) => log((a, b)).prop_map(to).boxed(),
        (&Domain::Range(a, b), Some(Scale::Linear)) => (a..=b).prop_map(to).boxed(),
        // β₂ and momentum: log-uniform in their distance to 1.
        (&Domain::Range(a, b), Some(Scale::Complement)) => log(((1.0 - b).max(1e-300), (1.0 - a).max(1e-300))).prop_map(move |d| to(1.0 - d)).boxed(),
        (&Domain::Range(a, b), Some(Scale::Integer)) => {
            let least = spec.within.map_or(0, |(low, _)| low as u32);
            ((a as u32).max(least)..=(b as u32).max(least)).prop_map(move |v| to(f64::from(v))).boxed()
        }
        (Domain::Range(..), None) => return None,
        (&Domain::Features(a, b, f), _) => {
            let f = f.clamp(1, usize::from(u16::MAX)) as u16;
            let feature = prop_oneof![Just(None), (0..f).prop_map(Some)];
            (feature, log((a, b))).prop_map(move |(feature, value)| Mutation { knob, value: Value::Factor(Factor { feature, value }) }).boxed()
        }
        (Domain::Inject { values, .. }, _) if values.is_empty() => return None,
        (Domain::Inject { low, high, values, validation }, _) => {
            let what = proptest::sample::select(values.clone());
            let split = if *validation { prop_oneof![Just(SplitSel::Train), Just(SplitSel::Validation)].boxed() } else { Just(SplitSel::Train).boxed() };
            (what, split, log((*low, *high))).prop_map(move |(what, split, fraction)| Mutation { knob, value: Value::Inject(Added { what, split, fraction }) }).boxed()
        }
        (Domain::Choice(values), _) => proptest::sample::select(values.clone()).prop_map(move |value| Mutation { knob, value }).boxed(),
        (Domain::Switch(on), _) => {
            let values: Vec<Value> = std::iter::once(Value::Off).chain(on.iter().map(|v| Value::Real(*v))).collect();
            proptest::sample::select(values).prop_map(move |value| Mutation { knob, value }).boxed()
        }
        (Domain::Seeds, _) => (0..=u64::from(u32::MAX)).prop_map(move |s| Mutation { knob, value: Value::Seed(s) }).boxed(),
        (Domain::Consts(ranges), _) => {
            // One constant, then a value on its own scale.
            let one = |r: &ConstRange| {
                let r = r.clone();
                let value = if r.scale == Scale::Log { log((r.low, r.high)).boxed() } else { (r.low..=r.high).boxed() };
                value.prop_map(move |v| Mutation { knob, value: Value::Const(r.at_value(v)) }).boxed()
            };
            let arms: Vec<BoxedStrategy<Mutation>> = ranges.iter().map(one).collect();
            if arms.is_empty() {
                return None;
            }
            Union::new(arms).boxed()
        }
    })
}

/// The corners of one knob for the screening sweep: its riskier end, its other values, its safer end.
fn corners_of(axis: &Axis) -> [Vec<Mutation>; 3] {
    let knob = axis.knob;
    match &axis.domain {
        &Domain::Range(a, b) | &Domain::Features(a, b, _) => match knob.entry().spec.riskier {
            End::High => [vec![number(knob, b)], vec![], vec![number(knob, a)]],
            End::Low => [vec![number(knob, a)], vec![], vec![number(knob, b)]],
        },
        Domain::Choice(values) => [vec![], values.iter().map(|&value| Mutation { knob, value }).collect(), vec![]],
        Domain::Inject { high, values, .. } => {
            let inject = |&what| Mutation { knob, value: Value::Inject(Added { what, split: SplitSel::Train, fraction: *high }) };
            [vec![], values.iter().map(inject).collect(), vec![]]
        }
        Domain::Switch(on) => [vec![], vec![], on.first().map(|v| Mutation { knob, value: Value::Real(*v) }).into_iter().collect()],
        Domain::Seeds => [vec![], vec![], vec![]],
        // Which end of a constant is riskier depends on it (a small epsilon or temperature,
        // a large exponent): its low end is screened with the riskier ends, its high end last.
        Domain::Consts(ranges) => {
            let at = |r: &ConstRange, v: f64| Mutation { knob, value: Value::Const(r.at_value(v)) };
            [ranges.iter().map(|r| at(r, r.low)).collect(), vec![], ranges.iter().map(|r| at(r, r.high)).collect()]
        }
    }
}

impl Space {
    /// A strategy for one mutation anywhere in the space.
    pub fn mutation(&self) -> BoxedStrategy<Mutation> {
        let arms: Vec<BoxedStrategy<Mutation>> = self.in_order(&order::DRAW).filter_map(arm).collect();
        if arms.is_empty() {
            return Just(Mutation::new(Knob::Lr, f64::NAN)).boxed();
        }
        Union::new(arms).boxed()
    }

    /// Every knob alone at the unstable corners of its range, most likely flips first:
    /// the riskier ends of numeric knobs, then each other dtype, optimizer, precision and
    /// injection, then the safer ends and the switches. A screening sweep the guided engine starts from.
    pub fn corners(&self) -> Vec<Vec<Mutation>> {
        let [mut hi, mut other, mut lo] = [vec![], vec![], vec![]];
        for axis in self.in_order(&order::SCREEN) {
            let [h, o, l] = corners_of(axis);
            hi.extend(h);
            other.extend(o);
            lo.extend(l);
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
    let dtypes = space.categorical().into_iter().filter(|m| m.knob == Knob::Dtype);
    let mut out: Vec<Vec<Mutation>> = dtypes.map(|m| vec![m]).collect();
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
    let same = m.numeric().is_some_and(|(v, scale)| scale == Scale::Integer && Some(v) == m.base_value(base));
    !same && mutate(base, std::slice::from_ref(m)).is_none_or(|s| s != *base)
}
