//! The key a root cause groups by: a [`Mechanism`], what explains a flip. Its
//! fields are the diagnosis rule, the kind of op that made the first bad value,
//! the trigger's knob names (not values) and the precision class, with the f64
//! verdict where one was computed. Some knob sets are one driver:
//! - a divergence keys by the knob that drove it (the chain's `driver`), and a
//!   rule that names a setting the run cannot hold (an eps the dtype rounds to
//!   0, a learning rate above the stability bound) by that setting;
//! - the knobs that only change how large the values are (the data's scale,
//!   mean and std, the targets' scale, the init scale, an injected outlier) are
//!   one knob, [`MAGNITUDE`];
//! - when the f64 verdict is *math* (the run fails in f64 too) the dtype plays
//!   no part: the precision class is [`PrecisionClass::Any`] and the knobs that
//!   set the dtype drop out (unless nothing else is left);
//! - a loss-scale collapse is the consequence of the overflow its skipped steps
//!   hit (the scaler halves on each): its op is that overflow's op and rule
//!   (`linear (overflow)`; the setting, for a rule that names one: `loss
//!   (loss.kind = naive_cross_entropy)`), and its knobs are [`OUTPACED`], whatever knob made
//!   the overflows come faster than the scale grows back (a corpus saved before
//!   collapses named their skipped value keys them by the loss scale and their
//!   knobs, as then);
//! - when the base itself fails, a flip elsewhere needs one knob to move away
//!   from the base's failure and another to fail anew: which ones is no part of
//!   the mechanism, so its knobs are [`ELSEWHERE`] and the knob sets are members.
//!
//! A key is a pure function of its finding, its trigger and whether the base
//! fails (which the findings show: one of them has the empty trigger).

use serde::{Deserialize, Serialize};

use crate::run::verdict::Class;
use crate::run::{Cause, Location, Outcome, Rule, Skipped};
use crate::scenario::{InjectValue, Knob, Named, TensorId, Value};
use crate::search::finding::{fnv1a, Finding, Trigger};
use crate::search::mutation::Mutation;

pub(super) mod family;

/// The knob name a key gives every knob that only changes how large the values are.
pub const MAGNITUDE: &str = "magnitude";

/// The knob name of a flip from a base that already fails: whatever knobs moved it away
/// from the base's failure and made it fail anew.
pub const ELSEWHERE: &str = "away from the failing base";

/// The knob name of a loss-scale collapse's trigger: whatever knobs made the overflows its
/// skipped steps hit come faster than `growth_interval` clean steps grow the scale back (more
/// or larger outliers, more rows a step, a summed loss, a longer growth interval), or most steps
/// overflow. The collapse is that inequality's, so which side a knob moved is no part of it.
pub const OUTPACED: &str = "overflows outpacing the loss scaler";

/// What a key names the naive cross-entropy's failures by: its loss's formula, the setting (no
/// trigger's knob is named so, so no trigger that changes `loss.kind` joins it).
pub const SOFTMAX_THEN_LOG: &str = "loss.kind = naive_cross_entropy";

/// The op of a loss-scale collapse keyed without the value its skipped steps hit (a corpus saved
/// before collapses named it).
pub(super) const LOSS_SCALE: &str = "loss scale";

/// The op of a failing base's flips elsewhere once grouped: which op a value overflowed in
/// first, away from the base's failure, is no part of the mechanism (its sites name it).
pub const ANY_OP: &str = "any op";

/// How a run stores its values: the precision class of a mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrecisionClass {
    /// f32 or f64 throughout.
    Full,
    /// Values stored in f16 or bf16 (`train.dtype`).
    LowPrecision,
    /// f32 storage with an autocast forward (`train.precision = amp_*`).
    Autocast,
    /// Any: the f64 verdict says the run fails in f64 too (never the class of a dtype).
    Any,
}

impl PrecisionClass {
    /// The class of a compute dtype as outcomes name it (`f32`, `bf16`, `amp_f16`, ...).
    pub fn of(dtype: &str) -> PrecisionClass {
        match dtype {
            "f16" | "bf16" => PrecisionClass::LowPrecision,
            d if d.starts_with("amp_") => PrecisionClass::Autocast,
            _ => PrecisionClass::Full,
        }
    }

    /// How many dtypes it spans, for ordering: any precision, full precision, low-precision
    /// storage (every value 16-bit), autocast (16-bit compute over f32 storage).
    pub(super) fn width(self) -> u8 {
        match self {
            PrecisionClass::Any => 3,
            PrecisionClass::Full => 2,
            PrecisionClass::LowPrecision => 1,
            PrecisionClass::Autocast => 0,
        }
    }

    /// Its name in signatures and summaries.
    pub fn name(self) -> &'static str {
        match self {
            PrecisionClass::Full => "full precision",
            PrecisionClass::LowPrecision => "low-precision storage",
            PrecisionClass::Autocast => "autocast",
            PrecisionClass::Any => "any precision",
        }
    }
}

/// What explains a flip: the key a root cause groups its members by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mechanism {
    /// The diagnosis rule, if one explains it.
    pub rule: Option<Rule>,
    /// The kind of op that made the first bad value (`linear`, `attention`, `loss`, `update`, `data`, ...).
    pub op: String,
    /// The knobs the trigger sets, by name (`optimizer.lr`, `data.inject.nan.train`), sorted, each
    /// magnitude knob as [`MAGNITUDE`] (once per knob); for a divergence, the one knob that drove
    /// it (the chain's `driver`); for a flip from a failing base, [`ELSEWHERE`].
    pub knobs: Vec<String>,
    /// The precision class.
    pub precision: PrecisionClass,
    /// The f64 verdict's key (`precision/overflow`, `math`, `kernel_disagreement`), where one was
    /// computed (a trigger saved before verdicts has none, and keys as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

impl Mechanism {
    /// The mechanism of one trigger of a finding: the trigger's own diagnosis where it was
    /// recorded, else (a trigger saved before triggers kept one) its finding's. `base_fails`:
    /// whether the hunt's base itself fails (then a trigger's knobs are [`ELSEWHERE`]).
    pub fn of(f: &Finding, t: &Trigger, base_fails: bool) -> Mechanism {
        Mechanism::keyed(f, t, base_fails, true)
    }

    /// The key a corpus saved before loss-scale collapses named their skipped value gave this
    /// trigger: a collapse's by the loss scale and its knobs (as [`Mechanism::of`] for any other).
    pub(super) fn before_skipped(f: &Finding, t: &Trigger, base_fails: bool) -> Mechanism {
        Mechanism::keyed(f, t, base_fails, false)
    }

    /// [`Mechanism::of`], keying a collapse by its skipped value where `by_skipped`.
    fn keyed(f: &Finding, t: &Trigger, base_fails: bool, by_skipped: bool) -> Mechanism {
        let cause = t.cause.as_ref().map_or(f.cause.as_ref(), Option::as_ref);
        let skipped = cause.and_then(|c| c.skipped.as_deref()).filter(|_| by_skipped);
        let op = match skipped {
            Some(sk) => skipped_op(sk),
            None => op_kind(cause, &f.location),
        };
        let math = t.verdict.as_ref().is_some_and(|v| v.class == Class::Math);
        // A chain is one cause: a divergence groups by the knob that drove it, whatever else
        // its trigger moved (the members still list every trigger); a loss-scale collapse, by
        // the overflow its skipped steps hit (`op`), whatever knob made it outpace the scaler.
        let mut knobs: Vec<String> = match (cause.and_then(|c| c.chain.as_ref()), cause.and_then(|c| setting(c, &op))) {
            (Some(chain), _) => vec![chain.driver().to_string()],
            (None, Some(knob)) => vec![knob.to_string()],
            (None, None) if skipped.is_some() && !t.mutations.is_empty() => vec![OUTPACED.to_string()],
            (None, None) if base_fails && !t.mutations.is_empty() => vec![ELSEWHERE.to_string()],
            (None, None) => {
                let dtype_free: Vec<&Mutation> = t.mutations.iter().filter(|m| !(math && role(m.knob) == Role::Dtype)).collect();
                let kept = if dtype_free.is_empty() { t.mutations.iter().collect() } else { dtype_free };
                kept.into_iter().map(knob_name).collect()
            }
        };
        knobs.sort_unstable();
        // Magnitude knobs stay counted: two of them are a superset of one (so a trigger that
        // adds another belongs to the one's group, as with any knob).
        knobs.dedup_by(|a, b| a == b && a.as_str() != MAGNITUDE);
        let verdict = t.verdict.as_ref().map(|v| v.key());
        let precision = if math { PrecisionClass::Any } else { PrecisionClass::of(&f.dtype) };
        Mechanism { rule: cause.map(|c| c.rule), op, knobs, precision, verdict }
    }

    /// 8 hex digits of the FNV-1a hash of `rule|op|knobs|precision`, then `|verdict` where there
    /// is one (`unexplained` for no rule): a key without a verdict hashes as it always has.
    pub fn signature(&self) -> String {
        let rule: &str = self.rule.map_or("unexplained", |r| r.into());
        let verdict = self.verdict.as_ref().map_or(String::new(), |v| format!("|{v}"));
        format!("{:08x}", fnv1a(format!("{rule}|{}|{}|{}{verdict}", self.op, self.knobs.join(","), self.precision.name()).as_bytes()) as u32)
    }

    /// Whether a member keyed `other` belongs to this key's group: its knobs are a strict
    /// superset of these (for the empty trigger, only with the same op and a compatible rule and
    /// verdict), or the same knobs and op where this one is diagnosed and it is not, or it has the
    /// same key but no verdict (a key of any precision takes one of its classes); from a failing
    /// base, a flip elsewhere of a narrower precision class; or the two are one mechanism a
    /// person names once (`mechanism/family.rs`) and this one ranks first. A strict order: no cycles.
    pub fn absorbs(&self, other: &Mechanism) -> bool {
        let count = |ks: &[String], k: &String| ks.iter().filter(|x| *x == k).count();
        let subset = self.knobs.iter().all(|k| count(&self.knobs, k) <= count(&other.knobs, k));
        let verdict = self.verdict == other.verdict || other.verdict.is_none();
        let same_op = self.op == other.op && (self.rule == other.rule || other.rule.is_none()) && verdict;
        if self == other {
            return false;
        }
        // Keys a person names once (a divergence by its driver in any dtype, log of 0 and of a
        // negative number in one op, one op's computation with and without autocast): the
        // class's first takes the rest.
        if family::one_mechanism(self, other) {
            return family::rank(self) < family::rank(other);
        }
        if !subset {
            return false;
        }
        // From a failing base, a flip elsewhere that also shows in a wider precision class is
        // that class's (a dtype knob added to its trigger moved no part of the mechanism).
        let elsewhere = self.knobs == [ELSEWHERE] && other.knobs == self.knobs;
        if elsewhere && same_op && self.precision.width() > other.precision.width() {
            return true;
        }
        if self.knobs.len() < other.knobs.len() {
            return !self.knobs.is_empty() || same_op;
        }
        let unjudged = self.verdict.is_some() && other.verdict.is_none() && self.rule == other.rule;
        let precision = self.precision == other.precision || self.precision == PrecisionClass::Any;
        same_op && (self.rule.is_some() && other.rule.is_none() || unjudged) && precision
    }

    /// Its fields in a fixed order, for sorting (the rule by its name).
    fn order(&self) -> (&'static str, &str, &[String], PrecisionClass, Option<&str>) {
        (self.rule.map_or("", |r| r.into()), &self.op, &self.knobs, self.precision, self.verdict.as_deref())
    }

    /// In words: `overflow in linear, low-precision storage, by optimizer.lr + train.dtype`.
    pub fn describe(&self) -> String {
        let rule: &str = self.rule.map_or("unexplained", |r| r.into());
        let by = match self.knobs.as_slice() {
            [] => "the base itself".to_string(),
            [one] if one == ELSEWHERE => "knobs that move it away from the failing base".to_string(),
            [one] if one == OUTPACED => "knobs that make its skipped steps' overflows outpace the loss scaler".to_string(),
            knobs => {
                let mut named: Vec<String> = knobs.iter().filter(|k| *k != MAGNITUDE).cloned().collect();
                match knobs.iter().filter(|k| *k == MAGNITUDE).count() {
                    0 => {}
                    1 => named.insert(0, MAGNITUDE.to_string()),
                    n => named.insert(0, format!("{MAGNITUDE} ({n} knobs)")),
                }
                named.join(" + ")
            }
        };
        let verdict = self.verdict.as_ref().map_or(String::new(), |v| format!(", verdict {v}"));
        format!("{rule} in {}, {}{verdict}, by {by}", self.op, self.precision.name())
    }
}

/// A failing run's mechanism without its knobs, in words (`overflow|linear|full precision`): the
/// diagnosis rule, the op kind of the first bad value and the precision class, as [`Mechanism`]
/// keys them. The minimizer keeps it while it drops knobs; none for a run that did not fail.
pub fn class_of(o: &Outcome) -> Option<String> {
    let at = o.failure_site()?;
    let rule: &str = o.cause.as_ref().map_or("unexplained", |c| c.rule.into());
    Some(format!("{rule}|{}|{}", op_kind(o.cause.as_ref(), &at), PrecisionClass::of(o.dtype_name()).name()))
}

impl PartialOrd for Mechanism {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Mechanism {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

/// A knob's name as a key gives it: [`MAGNITUDE`] for a knob that only changes how large the
/// values are, an injection by what it injects and where (an outlier is a magnitude).
pub(super) fn knob_name(m: &Mutation) -> String {
    match m.value {
        Value::Inject(a) if a.what == InjectValue::Outlier => MAGNITUDE.to_string(),
        Value::Inject(a) => format!("{}.{}.{}", m.knob, a.what.name(), a.split.name()),
        Value::Const(c) => c.at.to_string(),
        Value::Real(_) | Value::Count(_) | Value::Off | Value::Seed(_) | Value::Dtype(_) | Value::Optimizer(_) | Value::Precision(_) | Value::Loss(_) | Value::Reduction(_) | Value::Factor(_) => {
            if role(m.knob) == Role::Magnitude {
                MAGNITUDE.to_string()
            } else {
                m.knob.to_string()
            }
        }
    }
}

/// What a knob does, as far as a key tells knobs apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Only scales the values a run computes with (the data's scale, mean and std, the
    /// targets' scale, the init scale): which of them made a value overflow is no part of how.
    Magnitude,
    /// Sets the dtype the run computes in (storage or autocast).
    Dtype,
    /// Anything else: a key names it.
    Own,
}

/// A knob's [`Role`].
fn role(k: Knob) -> Role {
    match k {
        Knob::InitScale | Knob::InputScale | Knob::InputMean | Knob::InputStd | Knob::TargetScale => Role::Magnitude,
        Knob::Dtype | Knob::Precision => Role::Dtype,
        Knob::Lr
        | Knob::BatchSize
        | Knob::Epochs
        | Knob::Inject
        | Knob::Optimizer
        | Knob::ClipNorm
        | Knob::LossEpsilon
        | Knob::LossClamp
        | Knob::OptimizerEps
        | Knob::Beta2
        | Knob::Momentum
        | Knob::NormEps
        | Knob::Seed
        | Knob::PaddingFraction
        | Knob::SeqLen
        | Knob::DropoutP
        | Knob::LossScaleInit
        | Knob::GrowthInterval
        | Knob::WarmupSteps
        | Knob::Accumulate
        | Knob::LossKind
        | Knob::LossReduction
        | Knob::Const
        | Knob::LabelSmoothing
        | Knob::IgnoreFraction => Role::Own,
    }
}

/// The kind of a node (`linear` for `layers.2.residual.layers.0.linear`): the type after the
/// last `layers.N.`; a name outside that scheme (a code model's) without its numbers.
pub(super) fn node_kind(name: &str) -> String {
    let segs: Vec<&str> = name.split('.').collect();
    let typed = segs.windows(3).rev().find(|w| w[0] == "layers" && w[1].parse::<usize>().is_ok()).map(|w| w[2].to_string());
    typed.unwrap_or_else(|| segs.iter().filter(|s| s.parse::<usize>().is_err()).copied().collect::<Vec<_>>().join("."))
}

/// The kind of op that makes a tensor: its layer's type, or what the watch names it by.
fn tensor_kind(t: &TensorId) -> String {
    match t {
        TensorId::Data(..) => "data".into(),
        TensorId::Output(n) | TensorId::OutputGrad(n) | TensorId::ParamGrad(n) | TensorId::Named(n) => node_kind(n),
        TensorId::Loss => "loss".into(),
        TensorId::Param(_) => "update".into(),
        TensorId::State { .. } => "optimizer state".into(),
        TensorId::LossScale => LOSS_SCALE.into(),
        TensorId::Parameters => "parameters".into(),
        TensorId::Validation(t) => tensor_kind(t),
    }
}

/// The kind of op that made the first bad value: the diagnosed op's kind (a layer's type,
/// `loss`, `update`, `optimizer state`, `data`), else the kind of the tensor where it showed.
pub(super) fn op_kind(cause: Option<&Cause>, at: &Location) -> String {
    let Some(c) = cause else { return tensor_kind(&at.tensor) };
    let op = c.op.trim_end_matches(" (backward)");
    if op.contains(" update of ") {
        "update".into()
    } else if op.contains(" state ") {
        "optimizer state".into()
    } else if op.starts_with("loss") {
        "loss".into()
    } else if op.starts_with("data") || op.starts_with("conversion") {
        "data".into()
    } else if op.contains(' ') {
        tensor_kind(&at.tensor)
    } else {
        node_kind(op)
    }
}

/// The op of a loss-scale collapse's key: the kind of op of the value its last skipped step
/// first went non-finite in, with that value's rule (`linear (overflow)`, `attention
/// (fully_masked_row)`), or the setting that rule names where it names one (`loss (loss.kind =
/// naive_cross_entropy)`: the naive cross-entropy's overflow and its log of 0 are one, as
/// without a scaler): the recurring overflow the scaler could not absorb.
fn skipped_op(sk: &Skipped) -> String {
    let op = op_kind(sk.cause.as_ref(), &sk.location);
    let why: &str = match sk.cause.as_ref() {
        Some(c) => setting(c, &op).unwrap_or(c.rule.into()),
        None => "unexplained",
    };
    format!("{op} ({why})")
}

/// The setting a diagnosis says the run cannot hold, as a knob name, where its op (`op`, its
/// kind) tells which: an optimizer's or a loss's epsilon that rounds to 0, a loss's clamp whose
/// `1 − ε` rounds to 1, a learning rate above the model's stability bound, the naive
/// cross-entropy (softmax then log: `exp` of a logit past `ln(max)`, a probability that rounds
/// to 0, `log`'s derivative there), whose formula is the setting. Such a flip is that setting's:
/// whatever knob pushed the values to it (a larger input, a larger init, more epochs, an error
/// that was 0) only exposed it, so its root cause groups by the setting.
fn setting(c: &Cause, op: &str) -> Option<&'static str> {
    let naive = c.op.trim_end_matches(" (backward)") == format!("loss ({})", <&str>::from(crate::scenario::LossKind::NaiveCrossEntropy));
    match (c.rule, op) {
        (Rule::EpsRoundsToZero, "update" | "optimizer state") => Some("optimizer.eps"),
        (Rule::EpsRoundsToZero, "loss") => Some("loss.epsilon"),
        (Rule::OneMinusEpsRoundsToOne, "loss") => Some("loss.clamp"),
        (Rule::LrAboveStabilityBound, _) => Some("optimizer.lr"),
        (Rule::Overflow | Rule::LogOfZero | Rule::DerivativeAtZero, "loss") if naive => Some(SOFTMAX_THEN_LOG),
        (
            Rule::EpsRoundsToZero
            | Rule::OneMinusEpsRoundsToOne
            | Rule::Overflow
            | Rule::LogOfZero
            | Rule::DivisionByZero
            | Rule::DerivativeAtZero
            | Rule::OutsideDomain
            | Rule::ZeroTimesInf
            | Rule::DataNotFinite
            | Rule::Divergence
            | Rule::FullyMaskedRow
            | Rule::LossScaleCollapse
            | Rule::NoGradient,
            _,
        ) => None,
    }
}
