//! Mutations: the typed moves every search engine makes on a scenario.
//!
//! A [`Mutation`] sets one [`Knob`] to a [`Value`] (the learning rate, a scale,
//! the dtype, an added injection, ...); what each knob is, reads and writes
//! lives in its definition (`scenario/knob/`). The proptest strategies in
//! `space` produce mutations, the fuzz targets build them from raw bytes through
//! `arbitrary` (`codec.rs`, beside their file format `{"knob": …, "value": …}`),
//! and the minimizer moves their values back towards the base. Applying a
//! mutation never panics: it either changes the scenario or reports that the
//! knob does not apply; values out of range are caught by validation afterwards.

use crate::scenario::{validate, InjectValue, Knob, Scenario, SplitSel, Value};

mod codec;

pub use crate::scenario::Scale;

/// One change to one knob of a scenario: the knob, and the value it is set to (of the knob's value type).
#[derive(Debug, Clone, PartialEq)]
pub struct Mutation {
    /// The knob it sets.
    pub knob: Knob,
    /// What it sets it to.
    pub value: Value,
}

impl Mutation {
    /// Sets `knob` to `value` (a value of another knob's type does not apply).
    pub fn new(knob: Knob, value: impl Into<Value>) -> Mutation {
        Mutation { knob, value: value.into() }
    }

    /// Sets a numeric `knob` to `v` as it is (whole numbers truncated); none for a knob without numbers.
    pub fn at(knob: Knob, v: f64) -> Option<Mutation> {
        (knob.entry().at)(v).map(|value| Mutation { knob, value })
    }

    /// The knob this mutation sets.
    pub fn knob(&self) -> Knob {
        self.knob
    }

    /// The numeric value and its scale, for numeric knobs.
    pub fn numeric(&self) -> Option<(f64, Scale)> {
        self.value.number().zip(self.value.own_scale().or(self.knob.scale()))
    }

    /// The same mutation with a new numeric value (integers rounded, probabilities and counts kept in their range).
    pub fn with_value(&self, v: f64) -> Mutation {
        Mutation { knob: self.knob, value: (self.knob.entry().moved)(&self.value, v) }
    }

    /// The knob's value in the base scenario, where the minimizer bisects back to; none
    /// for an injection (whose base is "none"), a seed (which has no order) or a choice.
    pub fn base_value(&self, base: &Scenario) -> Option<f64> {
        if let Value::Const(c) = self.value {
            // The constant this mutation names, not the knob's first.
            return crate::scenario::const_value(base, c.at);
        }
        self.knob.get(base)?.number()
    }

    /// Applies the mutation; returns false (and leaves `s` alone) where the knob does not apply.
    pub fn apply(&self, s: &mut Scenario) -> bool {
        self.knob.applies(s) && (self.knob.entry().set)(s, &self.value)
    }
}

/// Values of the types knobs take, for [`Mutation::new`].
macro_rules! into_value {
    ($($t:ty => $variant:ident),*) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$variant(v)
            }
        })*
    };
}

into_value!(f64 => Real, u32 => Count, u64 => Seed, crate::scenario::DTypeName => Dtype, crate::scenario::OptimizerKind => Optimizer, crate::scenario::Precision => Precision, crate::scenario::LossKind => Loss, crate::scenario::Reduction => Reduction, crate::scenario::Factor => Factor, crate::scenario::Added => Inject, crate::scenario::Constant => Const);

impl From<Option<f64>> for Value {
    fn from(v: Option<f64>) -> Value {
        v.map_or(Value::Off, Value::Real)
    }
}

/// The setting a mutation writes: its knob, and for injections what they write where
/// (several injections can be added), for `consts` which constant; every other knob has one value.
pub(crate) fn slot(m: &Mutation) -> (Knob, Slot) {
    match m.value {
        Value::Inject(a) => (m.knob, Slot::Inject(a.what, a.split)),
        Value::Const(c) => (m.knob, Slot::Const(c.at)),
        Value::Real(_) | Value::Count(_) | Value::Off | Value::Seed(_) | Value::Dtype(_) | Value::Optimizer(_) | Value::Precision(_) | Value::Loss(_) | Value::Reduction(_) | Value::Factor(_) => {
            (m.knob, Slot::One)
        }
    }
}

/// Which of a knob's settings a mutation writes (see [`slot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The knob's one value.
    One,
    /// An injection of this value into this split.
    Inject(InjectValue, SplitSel),
    /// This named constant.
    Const(crate::scenario::ConstAt),
}

/// The candidate with no knob set twice: for each setting, only its last mutation is kept.
pub fn normalize(muts: &[Mutation]) -> Vec<Mutation> {
    let mut out: Vec<Mutation> = Vec::with_capacity(muts.len());
    for m in muts {
        out.retain(|o| slot(o) != slot(m));
        out.push(m.clone());
    }
    out
}

/// The candidate without the mutations that set nothing: a knob that does not apply when its
/// turn comes (`optimizer.momentum` after `optimizer.kind = adam`), or no longer applies once
/// the others are set (`optimizer.momentum` before it), as a hunt runs it: such a draw is
/// neither an error nor a trigger with a knob that does nothing. Mutations that apply but whose
/// value cannot be set (a feature the data does not have) are kept, for [`try_mutate`] to refuse.
pub fn effective(base: &Scenario, muts: &[Mutation]) -> Vec<Mutation> {
    let mut kept = muts.to_vec();
    loop {
        let mut s = base.clone();
        let mut turn = |m: &Mutation| {
            let applies = m.knob.applies(&s);
            if applies {
                // A value that cannot be set is left for `try_mutate` to refuse.
                (m.knob.entry().set)(&mut s, &m.value);
            }
            applies
        };
        let turns: Vec<bool> = kept.iter().map(&mut turn).collect();
        let before = kept.len();
        kept = kept.into_iter().zip(turns).filter(|(m, turn)| *turn && m.knob.applies(&s)).map(|(m, _)| m).collect();
        if kept.len() == before {
            return kept;
        }
    }
}

/// A scenario with mutations applied, if every one applies and the result validates.
pub fn mutate(base: &Scenario, mutations: &[Mutation]) -> Option<Scenario> {
    try_mutate(base, mutations).ok()
}

/// A scenario with mutations applied, or why not: the mutation that does not
/// apply, or the first validation problem of the result.
pub fn try_mutate(base: &Scenario, mutations: &[Mutation]) -> std::result::Result<Scenario, String> {
    let mut s = base.clone();
    for m in mutations {
        if !m.apply(&mut s) {
            return Err(format!("`{m}` does not apply to this scenario"));
        }
    }
    match validate(&s).into_iter().next() {
        None => Ok(s),
        Some(p) => Err(format!("invalid `{}`: {}", p.key, p.message)),
    }
}

impl std::fmt::Display for Mutation {
    /// `optimizer.lr = 0.01`, `data.scale[3] = 100`, `loss.consts.eps = 1e-12`, `data.inject.nan.train = 0.001`, `train.dtype = f16` (3 significant digits).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::scenario::Named;
        match self.value {
            // A constant is named by its own key, not the family's.
            Value::Const(c) => write!(f, "{}", c.at)?,
            Value::Factor(crate::scenario::Factor { feature: Some(i), .. }) => write!(f, "{}[{i}]", self.knob)?,
            Value::Inject(a) => write!(f, "{}.{}.{}", self.knob, a.what.name(), a.split.name())?,
            Value::Real(_) | Value::Count(_) | Value::Off | Value::Seed(_) | Value::Dtype(_) | Value::Optimizer(_) | Value::Precision(_) | Value::Loss(_) | Value::Reduction(_) | Value::Factor(_) => {
                write!(f, "{}", self.knob)?
            }
        }
        write!(f, " = {}", self.value.show(self.knob.scale()))
    }
}

/// `optimizer.lr = 0.01, train.dtype = f16`: a candidate in a line.
pub fn describe(muts: &[Mutation]) -> String {
    muts.iter().map(Mutation::to_string).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests;
