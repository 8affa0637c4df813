//! The [`Def`] trait one knob implements, the search domain it gives, and the
//! erased [`Entry`] the table keeps of each.
//!
//! As a ripgrep flag is one type implementing `Flag` listed once in a table, a
//! knob is one unit struct implementing [`Def`] (its key is on its line of the
//! list, `knob/mod.rs`): its scale and margin, whether it applies to a
//! scenario, how to read and set it, and its default search domain. Nothing has a default: a definition that forgets an answer
//! does not compile.

use arbitrary::{Arbitrary, Unstructured};

use super::value::{Fields, KnobValue, Scale, Value};
use crate::scenario::{InjectValue, Scenario, SearchSpec};

/// Which end of a knob's range is the unstable one, which the screening sweep tries first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// More is riskier (a larger learning rate, scale, epsilon...).
    High,
    /// Less is riskier (a shorter warmup).
    Low,
}

/// What a knob is, besides its key (on its line of the list, `knob/mod.rs`) and how it reads and writes a scenario.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// The scale its number moves on; none for a choice or a seed.
    pub scale: Option<Scale>,
    /// Whether it has a margin (`nanhunt margins`, `[expect] min_margin`): it moves continuously.
    pub margin: bool,
    /// Whether an absent `[search] knobs` (all knobs) includes it.
    pub by_default: bool,
    /// Which end of its range is screened first.
    pub riskier: End,
    /// The values it can take when moved to a number (a probability's `[0, 1]`, a count's `1..`); none: any.
    pub within: Option<(f64, f64)>,
}

/// Where a search may move one knob.
#[derive(Debug, Clone, PartialEq)]
pub enum Domain {
    /// A range `(low, high)` on the knob's scale.
    Range(f64, f64),
    /// `data.scale`: a factor range, over that many features (one feature's or all of them).
    Features(f64, f64, usize),
    /// `data.inject`: a fraction range, the values injections may write, and whether there is a validation split.
    Inject {
        /// Smallest fraction.
        low: f64,
        /// Largest fraction.
        high: f64,
        /// Values injections may write.
        values: Vec<InjectValue>,
        /// Whether the validation split may be injected too.
        validation: bool,
    },
    /// The other values to try, one by one (dtypes, optimizers, precisions).
    Choice(Vec<Value>),
    /// Off, or one of these values (clipping); the first is the screening sweep's.
    Switch(&'static [f64]),
    /// Any seed up to `u32::MAX`.
    Seeds,
    /// `consts`: a range for each named constant, each moved alone.
    Consts(Vec<super::value::ConstRange>),
}

impl Domain {
    /// Its numeric range, for the kinds of domain that have one.
    pub fn range(&self) -> Option<(f64, f64)> {
        match *self {
            Domain::Range(a, b) | Domain::Features(a, b, _) | Domain::Inject { low: a, high: b, .. } => Some((a, b)),
            Domain::Choice(_) | Domain::Switch(_) | Domain::Seeds | Domain::Consts(_) => None,
        }
    }

    /// The numeric range a value of this domain moves in: its constant's for `consts`, else [`Domain::range`].
    pub fn range_for(&self, v: &Value) -> Option<(f64, f64)> {
        match (self, v) {
            (Domain::Consts(rs), Value::Const(c)) => rs.iter().find(|r| r.at == c.at).map(|r| (r.low, r.high)),
            (Domain::Consts(_), _) => None,
            (Domain::Range(..) | Domain::Features(..) | Domain::Inject { .. } | Domain::Choice(_) | Domain::Switch(_) | Domain::Seeds, _) => self.range(),
        }
    }
}

/// What a knob's default domain is worked out from: the base, its `[search]` table and how far to move.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    /// The base scenario.
    pub base: &'a Scenario,
    /// Its `[search]` table (default when absent).
    pub spec: &'a SearchSpec,
    /// Decades log-scaled knobs move either side of their base (`[search] decades`, default 3).
    pub decades: f64,
    /// Decades for knobs where 100× is already extreme (the initial scale, the input mean): default 2.
    pub narrow: f64,
}

impl Ctx<'_> {
    /// The range `[search]` gives, or else `default`.
    pub fn given(&self, given: Option<[f64; 2]>, default: (f64, f64)) -> Domain {
        let (a, b) = given.map_or(default, |[a, b]| (a, b));
        Domain::Range(a, b)
    }

    /// `decades` either side of `base`, multiplicatively.
    pub fn around(&self, base: f64) -> Domain {
        let (a, b) = around(base, self.decades);
        Domain::Range(a, b)
    }

    /// An epsilon's range: `decades` either side of `base`, and below down to half the smallest
    /// subnormal of the scenario's dtype, where the epsilon rounds to 0 and guards nothing (an eps
    /// of 1e-4 then reaches the 1e-8 people use, and f16's 2⁻²⁵).
    pub fn eps(&self, base: f64) -> Domain {
        let (a, b) = around(base, self.decades);
        Domain::Range(a.min(crate::ops::diagnosis::Limits::of(self.base.train.dtype).min_subnormal / 2.0), b)
    }
}

/// `decades` either side of `base`, multiplicatively.
pub fn around(base: f64, decades: f64) -> (f64, f64) {
    let f = 10f64.powf(decades);
    (base / f, base * f)
}

/// `decades` either side of `base` on `1 − v`, kept in [0, 1).
pub fn around_one(base: f64, decades: f64) -> (f64, f64) {
    let (a, b) = around(1.0 - base, decades);
    ((1.0 - b).max(0.0), 1.0 - a)
}

/// One knob: implemented by a unit struct per knob and named once, with its variant and key, in the list (`knob/mod.rs`).
pub trait Def {
    /// What it is set to.
    type Value: KnobValue;
    /// Its scale, margin and the rest.
    const SPEC: Spec;
    /// Whether it means anything for `s`.
    fn applies(s: &Scenario) -> bool;
    /// Its value in `s`, as the search measures it (a factor's base is 1); none where it has none.
    fn get(s: &Scenario) -> Option<Self::Value>;
    /// Sets it in `s` (where it applies); false, leaving `s` alone, where this value cannot be set.
    fn set(s: &mut Scenario, v: Self::Value) -> bool;
    /// Its default search domain around the base (called only when `[search]` lets it move and it applies);
    /// none when it has nothing to move from.
    fn domain(c: &Ctx) -> Option<Domain>;
}

/// A knob's definition with its value type erased, as the table (`knob/table.rs`) keeps it.
pub struct Entry {
    /// Scale, margin and the rest.
    pub spec: Spec,
    /// [`Def::applies`].
    pub applies: fn(&Scenario) -> bool,
    /// [`Def::get`], as a [`Value`].
    pub get: fn(&Scenario) -> Option<Value>,
    /// [`Def::set`]; false for a value of another knob's type.
    pub set: fn(&mut Scenario, &Value) -> bool,
    /// [`Def::domain`].
    pub domain: fn(&Ctx) -> Option<Domain>,
    /// The value at a number, as it is; none for a knob without numbers.
    pub at: fn(f64) -> Option<Value>,
    /// The value moved to a number, kept within [`Spec::within`] (whole numbers rounded).
    pub moved: fn(&Value, f64) -> Value,
    /// A value from fuzzer bytes (as `arbitrary` derives it for the value type).
    pub arbitrary: for<'a> fn(&mut Unstructured<'a>) -> arbitrary::Result<Value>,
    /// A value from a saved mutation's fields.
    pub read: fn(&Fields) -> Result<Value, String>,
}

impl Entry {
    /// The erased entry of knob `K`.
    pub const fn of<K: Def>() -> Entry {
        Entry { spec: K::SPEC, applies: K::applies, get: get::<K>, set: set::<K>, domain: K::domain, at: at::<K>, moved: moved::<K>, arbitrary: arbitrary::<K>, read: read::<K> }
    }
}

fn get<K: Def>(s: &Scenario) -> Option<Value> {
    K::get(s).map(KnobValue::into_value)
}

fn set<K: Def>(s: &mut Scenario, v: &Value) -> bool {
    K::Value::from_value(v).is_some_and(|v| K::set(s, v))
}

fn at<K: Def>(v: f64) -> Option<Value> {
    K::Value::at(v).map(KnobValue::into_value)
}

fn moved<K: Def>(v: &Value, to: f64) -> Value {
    let to = K::SPEC.within.map_or(to, |(a, b)| to.clamp(a, b));
    K::Value::from_value(v).map_or(*v, |x| x.moved(to).into_value())
}

fn arbitrary<K: Def>(u: &mut Unstructured<'_>) -> arbitrary::Result<Value> {
    K::Value::arbitrary(u).map(KnobValue::into_value)
}

fn read<K: Def>(f: &Fields) -> Result<Value, String> {
    K::Value::read(f).map(KnobValue::into_value)
}
