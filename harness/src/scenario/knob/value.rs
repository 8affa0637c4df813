//! What a knob is set to: the typed values knob definitions read and write,
//! the one erased [`Value`] a mutation carries, and the scale a numeric knob
//! moves on.
//!
//! Each knob's definition names its value type (`f64`, `u32`, `Option<f64>`,
//! a dtype, ...); [`KnobValue`] converts it to and from [`Value`], draws it
//! from fuzzer bytes and reads it from a saved mutation's fields.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::super::{DTypeName, InjectValue, LossKind, Named, OptimizerKind, Precision, Reduction, SplitSel};

/// How a numeric knob is searched and bisected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// Multiplicative (bisect on a log scale).
    Log,
    /// Additive.
    Linear,
    /// Whole numbers.
    Integer,
    /// Multiplicative in the distance to 1 (`β₂`, momentum: 0.999 → 0.9999 is a step like 0.99 → 0.999).
    Complement,
}

impl Scale {
    /// The coordinate a scan or bisection moves in: `ln v` (log), `ln(1 − v)` (complement),
    /// `v` itself (linear, integer); `None` where it is not defined.
    pub fn coord(self, v: f64) -> Option<f64> {
        match self {
            Scale::Log => (v > 0.0).then(|| v.ln()),
            Scale::Complement => (v < 1.0).then(|| (1.0 - v).ln()),
            Scale::Linear | Scale::Integer => Some(v),
        }
    }

    /// The value at a coordinate (the inverse of [`Scale::coord`]).
    pub fn value(self, x: f64) -> f64 {
        match self {
            Scale::Log => x.exp(),
            Scale::Complement => 1.0 - x.exp(),
            Scale::Linear | Scale::Integer => x,
        }
    }

    /// Whether steps on this scale are factors (log, complement) rather than differences.
    pub fn is_multiplicative(self) -> bool {
        matches!(self, Scale::Log | Scale::Complement)
    }
}

/// The value one mutation sets its knob to. Which variant a knob takes is its
/// definition's value type; a value of another variant does not apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// A real number (log, linear and complement knobs).
    Real(f64),
    /// A whole number (integer knobs).
    Count(u32),
    /// Unset (`null`): clipping, a loss epsilon or a clamp switched off.
    Off,
    /// A seed.
    Seed(u64),
    /// A dtype.
    Dtype(DTypeName),
    /// An update rule.
    Optimizer(OptimizerKind),
    /// A precision.
    Precision(Precision),
    /// A loss.
    Loss(LossKind),
    /// A loss's reduction.
    Reduction(Reduction),
    /// A factor on one input feature, or on every one.
    Factor(Factor),
    /// An added injection.
    Inject(Added),
    /// A named constant of an expression, and which.
    Const(Constant),
}

/// `data.scale`'s value: a factor, relative to the base scale, on one feature or all.
#[derive(Debug, Clone, Copy, PartialEq, arbitrary::Arbitrary)]
pub struct Factor {
    /// Feature index, or all features.
    pub feature: Option<u16>,
    /// Factor relative to the base scale.
    pub value: f64,
}

/// `data.inject`'s value: an injection of a fraction of one split's input cells.
#[derive(Debug, Clone, Copy, PartialEq, arbitrary::Arbitrary)]
pub struct Added {
    /// What to write.
    pub what: InjectValue,
    /// Which split.
    pub split: SplitSel,
    /// Fraction of cells.
    pub fraction: f64,
}

impl Value {
    /// The number a numeric value moves: the real, the count, the factor, the injected fraction;
    /// none for a value switched off, a seed (which has no order) or a choice.
    pub fn number(&self) -> Option<f64> {
        match *self {
            Value::Real(v) | Value::Factor(Factor { value: v, .. }) | Value::Inject(Added { fraction: v, .. }) | Value::Const(Constant { value: v, .. }) => Some(v),
            Value::Count(n) => Some(f64::from(n)),
            Value::Off | Value::Seed(_) | Value::Dtype(_) | Value::Optimizer(_) | Value::Precision(_) | Value::Loss(_) | Value::Reduction(_) => None,
        }
    }

    /// The scale this value moves on when it has its own (a constant's), else none: the knob's.
    pub fn own_scale(&self) -> Option<Scale> {
        Constant::from_value(self).map(|c| c.scale)
    }

    /// The value as shown after ` = `: a number to 3 significant digits (near one for
    /// complement knobs), `null` when off, a seed in full, a choice by its name.
    pub fn show(&self, scale: Option<Scale>) -> String {
        match (self.number(), self) {
            (Some(v), _) if scale == Some(Scale::Complement) => crate::human_near_one(v),
            (Some(v), _) => crate::human(v),
            (None, Value::Seed(n)) => n.to_string(),
            (None, Value::Dtype(d)) => d.name().to_string(),
            (None, Value::Optimizer(o)) => o.name().to_string(),
            (None, Value::Precision(p)) => p.name().to_string(),
            (None, Value::Loss(l)) => l.name().to_string(),
            (None, Value::Reduction(r)) => r.name().to_string(),
            (None, Value::Off | Value::Real(_) | Value::Count(_) | Value::Factor(_) | Value::Inject(_) | Value::Const(_)) => "null".to_string(),
        }
    }
}

/// The fields of a saved mutation besides its `knob`, as read before the knob says which it needs.
#[derive(Debug, Default, Deserialize)]
pub struct Fields {
    /// `data.scale`'s feature.
    #[serde(default)]
    pub feature: Option<u16>,
    /// An injection's value.
    #[serde(default)]
    pub what: Option<InjectValue>,
    /// An injection's split.
    #[serde(default)]
    pub split: Option<SplitSel>,
    /// A constant's layer (`consts`; none: the loss's).
    #[serde(default)]
    pub layer: Option<u16>,
    /// A constant's place inside the residual blocks of that layer (`consts`; absent: the layer itself).
    #[serde(default)]
    pub within: Vec<u16>,
    /// A constant's name (`consts`).
    #[serde(default)]
    pub name: Option<String>,
    /// A constant's scale (`consts`; by its sign when absent).
    #[serde(default)]
    pub scale: Option<Scale>,
    /// The value (`null` when absent).
    #[serde(default)]
    pub value: serde_json::Value,
}

fn missing(field: &str) -> String {
    format!("missing field `{field}`")
}

/// A knob's value type: how it converts to and from [`Value`], is moved to a number, and is read back.
pub trait KnobValue: Copy + for<'a> arbitrary::Arbitrary<'a> + 'static {
    /// As the erased value a mutation carries.
    fn into_value(self) -> Value;
    /// From an erased value; none if it is another knob's kind of value.
    fn from_value(v: &Value) -> Option<Self>;
    /// The value at number `v` (a range end, a draw), kept as it is (not rounded); none for a non-numeric type.
    fn at(v: f64) -> Option<Self>;
    /// The same value moved to number `v` (whole numbers rounded; a choice stays as it is).
    fn moved(self, v: f64) -> Self;
    /// From the fields of a saved mutation.
    fn read(f: &Fields) -> Result<Self, String>;
}

fn read_value<T: serde::de::DeserializeOwned>(f: &Fields) -> Result<T, String> {
    T::deserialize(&f.value).map_err(|e| e.to_string())
}

macro_rules! plain {
    ($t:ty, $variant:ident, $at:expr, $moved:expr) => {
        impl KnobValue for $t {
            fn into_value(self) -> Value {
                Value::$variant(self)
            }
            fn from_value(v: &Value) -> Option<Self> {
                if let Value::$variant(x) = *v {
                    Some(x)
                } else {
                    None
                }
            }
            fn at(v: f64) -> Option<Self> {
                $at(v)
            }
            fn moved(self, v: f64) -> Self {
                $moved(self, v)
            }
            fn read(f: &Fields) -> Result<Self, String> {
                read_value(f)
            }
        }
    };
}

plain!(f64, Real, Some, |_, v| v);
plain!(u32, Count, |v: f64| Some(v as u32), |_, v: f64| v.round().clamp(0.0, f64::from(u32::MAX)) as u32);
plain!(u64, Seed, |_| None, |s, _| s);
plain!(DTypeName, Dtype, |_| None, |s, _| s);
plain!(OptimizerKind, Optimizer, |_| None, |s, _| s);
plain!(Precision, Precision, |_| None, |s, _| s);
plain!(LossKind, Loss, |_| None, |s, _| s);
plain!(Reduction, Reduction, |_| None, |s, _| s);

impl KnobValue for Option<f64> {
    fn into_value(self) -> Value {
        self.map_or(Value::Off, Value::Real)
    }
    fn from_value(v: &Value) -> Option<Self> {
        match *v {
            Value::Real(x) => Some(Some(x)),
            Value::Off => Some(None),
            Value::Count(_)
            | Value::Seed(_)
            | Value::Dtype(_)
            | Value::Optimizer(_)
            | Value::Precision(_)
            | Value::Loss(_)
            | Value::Reduction(_)
            | Value::Factor(_)
            | Value::Inject(_)
            | Value::Const(_) => None,
        }
    }
    fn at(v: f64) -> Option<Self> {
        Some(Some(v))
    }
    fn moved(self, v: f64) -> Self {
        Some(v)
    }
    fn read(f: &Fields) -> Result<Self, String> {
        read_value(f)
    }
}

impl KnobValue for Factor {
    fn into_value(self) -> Value {
        Value::Factor(self)
    }
    fn from_value(v: &Value) -> Option<Self> {
        match *v {
            Value::Factor(x) => Some(x),
            Value::Real(_)
            | Value::Count(_)
            | Value::Off
            | Value::Seed(_)
            | Value::Dtype(_)
            | Value::Optimizer(_)
            | Value::Precision(_)
            | Value::Loss(_)
            | Value::Reduction(_)
            | Value::Inject(_)
            | Value::Const(_) => None,
        }
    }
    fn at(v: f64) -> Option<Self> {
        Some(Factor { feature: None, value: v })
    }
    fn moved(self, v: f64) -> Self {
        Factor { value: v, ..self }
    }
    fn read(f: &Fields) -> Result<Self, String> {
        Ok(Factor { feature: f.feature, value: read_value(f)? })
    }
}

impl KnobValue for Added {
    fn into_value(self) -> Value {
        Value::Inject(self)
    }
    fn from_value(v: &Value) -> Option<Self> {
        match *v {
            Value::Inject(x) => Some(x),
            Value::Real(_)
            | Value::Count(_)
            | Value::Off
            | Value::Seed(_)
            | Value::Dtype(_)
            | Value::Optimizer(_)
            | Value::Precision(_)
            | Value::Loss(_)
            | Value::Reduction(_)
            | Value::Factor(_)
            | Value::Const(_) => None,
        }
    }
    fn at(_: f64) -> Option<Self> {
        None
    }
    fn moved(self, v: f64) -> Self {
        Added { fraction: v, ..self }
    }
    fn read(f: &Fields) -> Result<Self, String> {
        Ok(Added { what: f.what.ok_or_else(|| missing("what"))?, split: f.split.ok_or_else(|| missing("split"))?, fraction: read_value(f)? })
    }
}

// ---- The named constants' values (the `consts` knob's definition is `consts.rs`).

/// Where one constant lives: the `consts` of the loss or of an `expr` layer, at any depth of
/// residual blocks, and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConstAt {
    /// The index in `[model] layers` of the layer whose `consts` hold it, or of the residual
    /// block that holds that layer; none: the loss's.
    pub layer: Option<u16>,
    /// The path from `layer` down residual blocks to the `expr` layer: its index in each block's
    /// `layers`, outermost first (interned, [`intern_path`]); empty: `layer` itself.
    pub within: &'static [u16],
    /// Its name (interned, so that a mutation's value stays `Copy`).
    pub name: &'static str,
}

impl std::fmt::Display for ConstAt {
    /// `loss.consts.eps`, `model.layers.2.consts.T`, `model.layers.1.layers.0.consts.eps`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(i) = self.layer else { return write!(f, "loss.consts.{}", self.name) };
        write!(f, "model.layers.{i}")?;
        for j in self.within {
            write!(f, ".layers.{j}")?;
        }
        write!(f, ".consts.{}", self.name)
    }
}

/// One constant set to a number: which, the number, and the scale it moves on (log where its
/// base is positive, linear otherwise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constant {
    /// Which constant.
    pub at: ConstAt,
    /// Its value.
    pub value: f64,
    /// The scale it moves on.
    pub scale: Scale,
}

/// One constant's range in a search space.
#[derive(Debug, Clone, PartialEq)]
pub struct ConstRange {
    /// Which constant.
    pub at: ConstAt,
    /// Its scale (log where the base is positive).
    pub scale: Scale,
    /// Smallest value.
    pub low: f64,
    /// Largest value.
    pub high: f64,
}

impl ConstRange {
    /// The constant at `v` on this range's scale.
    pub fn at_value(&self, v: f64) -> Constant {
        Constant { at: self.at, value: v, scale: self.scale }
    }
}

/// The constant names seen so far, each leaked once (names are few: those scenarios write).
static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

/// `name` as a `&'static str`, the same one for equal names.
pub fn intern(name: &str) -> &'static str {
    let mut names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(n) = names.get(name) {
        return n;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// The paths inside residual blocks seen so far, each leaked once (few: those scenarios nest).
static PATHS: Mutex<BTreeSet<&'static [u16]>> = Mutex::new(BTreeSet::new());

/// `path` as a `&'static [u16]`, the same one for equal paths (the empty one without leaking).
pub fn intern_path(path: &[u16]) -> &'static [u16] {
    if path.is_empty() {
        return &[];
    }
    let mut paths = PATHS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = paths.get(path) {
        return p;
    }
    let leaked: &'static [u16] = Box::leak(path.to_vec().into_boxed_slice());
    paths.insert(leaked);
    leaked
}

/// The scale a constant of this base value moves on.
pub fn scale_of(base: f64) -> Scale {
    if base > 0.0 {
        Scale::Log
    } else {
        Scale::Linear
    }
}
