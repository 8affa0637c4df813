//! The search space around a base scenario, and the proptest strategies that
//! draw [`Mutation`]s from it.
//!
//! A [`Space`] is the list of knobs that may move, each with its domain, made
//! from the knob table (each knob's definition gives its default domain, which
//! the scenario's `[search]` table may narrow or replace). Generation lives in
//! `draw.rs` (proptest `Strategy`, and the screening sweep), running in
//! [`crate::run`], and shrinking in `minimize`, as proptest keeps `Strategy`,
//! `ValueTree` and `TestRunner` apart. `order.rs` keeps the orders seeded
//! searches list knobs in.

use super::mutation::Mutation;
use crate::scenario::{around, ConstRange, Ctx, Domain, Knob, Scale, Scenario, Value};

mod draw;
mod order;

pub use draw::{draw, neighbourhood, seeded_runner};

/// One knob a search may move, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// The knob.
    pub knob: Knob,
    /// Where it may move.
    pub domain: Domain,
}

/// The knobs a search may move, with their domains.
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    /// Each knob that may move, in the table's order.
    pub axes: Vec<Axis>,
    /// Most mutations in one candidate.
    pub max_mutations: usize,
}

impl Space {
    /// The space of a scenario: every knob the `[search]` table lets move (all but the seed
    /// when it names none) that applies to it, each with its domain around the base.
    pub fn of(base: &Scenario) -> Space {
        let spec = base.search.clone().unwrap_or_default();
        // Unless `[search] decades` says, the initial scale and the input mean move less: 100× is already extreme.
        let ctx = Ctx { base, spec: &spec, decades: spec.decades.unwrap_or(3.0), narrow: spec.decades.unwrap_or(2.0) };
        let on = |k: Knob| spec.knobs.as_ref().map_or(k.by_default(), |ks| ks.contains(&k)) && k.applies(base);
        let axes = Knob::ALL.iter().filter(|k| on(**k)).filter_map(|&knob| (knob.entry().domain)(&ctx).map(|domain| Axis { knob, domain })).collect();
        Space { axes, max_mutations: spec.max_mutations.unwrap_or(3).max(1) }
    }

    /// Where `k` may move, if it may.
    pub fn domain(&self, k: Knob) -> Option<&Domain> {
        self.axes.iter().find(|a| a.knob == k).map(|a| &a.domain)
    }

    /// The axes in one of the orders of `order.rs`.
    fn in_order<'a>(&'a self, order: &'a [Knob]) -> impl Iterator<Item = &'a Axis> + 'a {
        order.iter().filter_map(|k| self.axes.iter().find(|a| a.knob == *k))
    }

    /// The same space with every log range narrowed to `decades` around its centre (for
    /// neighbourhoods), unbounded linear ones shrunk by `10^decades`, and at most two mutations.
    pub fn narrowed(&self, decades: f64) -> Space {
        let axes = self.axes.iter().map(|a| Axis { knob: a.knob, domain: narrowed(a.knob, &a.domain, decades) }).collect();
        Space { axes, max_mutations: 2 }
    }

    /// Brings a mutation's value back inside the space (the guided engine's moves can leave it).
    pub fn clamp(&self, m: Mutation) -> Mutation {
        let Some((v, _)) = m.numeric() else { return m };
        let range = self.domain(m.knob).and_then(|d| d.range_for(&m.value));
        m.with_value(range.map_or(v, |(a, b)| v.clamp(a.min(b), b.max(a))))
    }

    /// Each numeric knob of the space, alone, as a mutation template with its range.
    pub fn numeric(&self) -> Vec<(Mutation, (f64, f64))> {
        self.in_order(&order::SCAN)
            .flat_map(|axis| match axis.domain {
                Domain::Range(a, b) | Domain::Features(a, b, _) => Mutation::at(axis.knob, a).map(|m| (m, (a, b))).into_iter().collect(),
                // Each constant alone, with its own range.
                Domain::Consts(ref ranges) => ranges.iter().map(|r| (Mutation { knob: axis.knob, value: Value::Const(r.at_value(r.low)) }, (r.low, r.high))).collect(),
                Domain::Inject { .. } | Domain::Choice(_) | Domain::Switch(_) | Domain::Seeds => vec![],
            })
            .collect()
    }

    /// Each other value of the space's categorical knobs (dtype, optimizer, precision), alone.
    pub fn categorical(&self) -> Vec<Mutation> {
        let choices = |axis: &Axis| match &axis.domain {
            Domain::Choice(values) => values.iter().map(|&value| Mutation { knob: axis.knob, value }).collect(),
            Domain::Range(..) | Domain::Features(..) | Domain::Inject { .. } | Domain::Switch(_) | Domain::Seeds | Domain::Consts(_) => vec![],
        };
        self.axes.iter().flat_map(choices).collect()
    }

    /// Whether any knob can move at all.
    pub fn is_empty(&self) -> bool {
        self.corners().is_empty() && !self.axes.iter().any(|a| a.domain == Domain::Seeds)
    }
}

/// One knob's domain narrowed to `decades` (see [`Space::narrowed`]): log ranges around their
/// centre, complement ones around theirs on `1 − v`; bounded and integer ranges and choices stay.
fn narrowed(knob: Knob, domain: &Domain, decades: f64) -> Domain {
    let narrow = |(a, b): (f64, f64)| around((a * b).sqrt(), decades.min((b / a).log10() / 2.0));
    let spec = knob.entry().spec;
    match *domain {
        Domain::Range(a, b) => match (spec.scale, spec.within) {
            (Some(Scale::Log), _) => {
                let (x, y) = narrow((a, b));
                Domain::Range(x, y)
            }
            (Some(Scale::Complement), _) => {
                let (x, y) = narrow((1.0 - b, 1.0 - a));
                Domain::Range((1.0 - y).max(0.0), 1.0 - x)
            }
            (Some(Scale::Linear), None) => Domain::Range(a / 10f64.powf(decades), b / 10f64.powf(decades)),
            (Some(Scale::Linear), Some(_)) | (Some(Scale::Integer), _) | (None, _) => Domain::Range(a, b),
        },
        Domain::Features(a, b, f) => {
            let (x, y) = narrow((a, b));
            Domain::Features(x, y, f)
        }
        Domain::Consts(ref ranges) => Domain::Consts(
            ranges
                .iter()
                .map(|r| {
                    let (low, high) = if r.scale == Scale::Log { narrow((r.low, r.high)) } else { (r.low / 10f64.powf(decades), r.high / 10f64.powf(decades)) };
                    ConstRange { low, high, ..r.clone() }
                })
                .collect(),
        ),
        Domain::Inject { .. } | Domain::Choice(_) | Domain::Switch(_) | Domain::Seeds => domain.clone(),
    }
}

#[cfg(test)]
mod tests;
