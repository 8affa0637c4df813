//! `consts`: the named constants of expressions, a family of knobs each scenario defines
//! for itself (`loss.consts.eps`, `model.layers.2.consts.T`).
//!
//! The knob list (`knob/mod.rs`) is static, and a scenario's constants are not: they are
//! one knob, [`Knob::Const`](super::Knob::Const) (`consts` in `[search] knobs`), whose value
//! names the constant it sets ([`Constant`], in `value.rs`: where it lives and its name, beside the number),
//! as `data.scale`'s value names its feature. Its domain ([`Domain::Consts`]) is a range per
//! constant, so draws, the screening sweep and `nanhunt margins` move each constant alone
//! and report each by its own key. A constant moves on a log scale where it is positive,
//! down to below half the dtype's smallest subnormal (an epsilon that rounds to 0 guards nothing),
//! and on a linear one otherwise; one passed to a parameter PyTorch bounds to [0, 1]
//! (`label_smoothing=`, focal's `alpha`: the table of `ops::expr::domains`) moves linearly
//! over [0, 1], so no draw is a value the check refuses. The constants are those of `[loss]` (`kind = "expr"` or a
//! named loss that takes them) and of every `expr` layer, top-level or inside residual blocks at any depth
//! (`model.layers.1.layers.0.consts.eps`).

use std::collections::BTreeMap;

use super::def::{around, Ctx, Def, Domain, End, Spec};
use super::value::{intern, intern_path, scale_of, ConstAt, ConstRange, Constant, Fields, KnobValue, Scale, Value};
use crate::ops::diagnosis::Limits;
use crate::ops::expr::domains::{self, Bound};
use crate::ops::expr::funcs::Func;
use crate::ops::expr::parse::parse;
use crate::scenario::{Layer, LossKind, Scenario};

/// The loss's constants, where its kind reads them.
fn loss_consts(s: &Scenario) -> Option<&BTreeMap<String, f64>> {
    s.loss.kind.takes_consts().then_some(&s.loss.consts)
}

/// Every constant of `s` with its value: the loss's, then each `expr` layer's in file order,
/// those inside residual blocks (at any depth) where the block is.
pub fn all(s: &Scenario) -> Vec<(ConstAt, f64)> {
    let mut out: Vec<(ConstAt, f64)> = loss_consts(s).into_iter().flatten().map(|(k, v)| (ConstAt { layer: None, within: &[], name: intern(k) }, *v)).collect();
    for (i, l) in s.model.layers.iter().enumerate().take(usize::from(u16::MAX)) {
        walk(l, (i as u16, &mut Vec::new()), &mut out);
    }
    out
}

/// The constants of layer `l` (top-level index `top`, at `path` inside its residual blocks) and of
/// the layers it holds, appended to `out`.
fn walk(l: &Layer, (top, path): (u16, &mut Vec<u16>), out: &mut Vec<(ConstAt, f64)>) {
    let l = l.untagged();
    if let Layer::Expr(e) = l {
        let within = intern_path(path);
        out.extend(e.consts.iter().map(|(k, v)| (ConstAt { layer: Some(top), within, name: intern(k) }, *v)));
    }
    if let Layer::Residual(r) = l {
        for (j, inner) in r.layers.iter().enumerate().take(usize::from(u16::MAX)) {
            path.push(j as u16);
            walk(inner, (top, path), out);
            path.pop();
        }
    }
}

/// The layer `at` names (its top-level layer, then down the residual blocks of `at.within`),
/// if `s` has it; none for the loss's.
fn layer_at(s: &Scenario, at: ConstAt) -> Option<&Layer> {
    let mut l = s.model.layers.get(usize::from(at.layer?))?.untagged();
    for &j in at.within {
        let Layer::Residual(r) = l else { return None };
        l = r.layers.get(usize::from(j))?.untagged();
    }
    Some(l)
}

/// [`layer_at`], to change.
fn layer_at_mut(s: &mut Scenario, at: ConstAt) -> Option<&mut Layer> {
    let mut l = s.model.layers.get_mut(usize::from(at.layer?))?.untagged_mut();
    for &j in at.within {
        let Layer::Residual(r) = l else { return None };
        l = r.layers.get_mut(usize::from(j))?.untagged_mut();
    }
    Some(l)
}

/// The table holding the constant `at` names, if `s` has it.
fn table_mut(s: &mut Scenario, at: ConstAt) -> Option<&mut f64> {
    let table = match at.layer {
        None => Some(&mut s.loss.consts).filter(|_| s.loss.kind.takes_consts()),
        Some(_) => match layer_at_mut(s, at) {
            Some(Layer::Expr(e)) => Some(&mut e.consts),
            Some(_) | None => None,
        },
    };
    table?.get_mut(at.name)
}

/// The value of the constant `at` in `s`, if it has it.
pub fn value_of(s: &Scenario, at: ConstAt) -> Option<f64> {
    all(s).into_iter().find(|(a, _)| *a == at).map(|(_, v)| v)
}

/// `consts`: every named constant of the scenario's expressions, each moved alone.
pub struct Const;

impl Def for Const {
    type Value = Constant;
    const SPEC: Spec = Spec { scale: Some(Scale::Log), margin: true, by_default: true, riskier: End::Low, within: None };
    fn applies(s: &Scenario) -> bool {
        !all(s).is_empty()
    }
    fn get(s: &Scenario) -> Option<Constant> {
        all(s).first().map(|&(at, value)| Constant { at, value, scale: scale_of(value) })
    }
    fn set(s: &mut Scenario, c: Constant) -> bool {
        table_mut(s, c.at).map(|v| *v = c.value).is_some()
    }
    fn domain(c: &Ctx) -> Option<Domain> {
        let ranges: Vec<ConstRange> = all(c.base).into_iter().filter(|(_, v)| v.is_finite()).map(|(at, v)| range(c, at, v)).collect();
        (!ranges.is_empty()).then_some(Domain::Consts(ranges))
    }
}

/// The range of the constant `at`, of value `v`. One passed to a parameter bounded to [0, 1]
/// (`label_smoothing`, `ops::expr::domains`) moves linearly over [0, 1]; any other positive one
/// on a log scale, down to where it rounds to 0 in the dtype (as an epsilon's range: a quarter of
/// the smallest subnormal, half of it being the tie, which the scan's log steps can miss by a last
/// place and round up), which keeps a positive parameter (`temperature`) positive; one not positive
/// linearly, 10× its size (at least 1) either side.
fn range(c: &Ctx, at: ConstAt, v: f64) -> ConstRange {
    let bounds = bounds(c.base, at);
    if bounds.contains(&Bound::Unit) && Bound::Unit.holds(v) {
        return ConstRange { at, scale: Scale::Linear, low: 0.0, high: 1.0 };
    }
    let (low, high) = if v > 0.0 {
        let (a, b) = around(v, c.decades);
        (a.min(Limits::of(c.base.train.dtype).min_subnormal / 4.0), b)
    } else {
        let w = 10.0 * v.abs().max(1.0);
        (v - w, v + w)
    };
    ConstRange { at, scale: scale_of(v), low, high }
}

/// The domains of the parameters the constant `at` is passed to: in the expression it belongs
/// to, or, for `focal` and `info_nce`, the loss's parameter it is.
fn bounds(s: &Scenario, at: ConstAt) -> Vec<Bound> {
    let text = match at.layer {
        None if s.loss.kind == LossKind::Focal => return domains::of(Func::Focal, at.name).into_iter().collect(),
        None if s.loss.kind == LossKind::InfoNce => return domains::of(Func::InfoNce, at.name).into_iter().collect(),
        None => s.loss.expr.as_deref(),
        Some(_) => match layer_at(s, at) {
            Some(Layer::Expr(e)) => Some(e.expr.as_str()),
            Some(_) | None => None,
        },
    };
    text.and_then(|t| parse(t).ok()).map(|ast| domains::fed(&ast, at.name)).unwrap_or_default()
}

/// The names fuzzer bytes draw a constant's from (the fuzz targets do not draw this knob).
const FUZZ_NAMES: [&str; 4] = ["eps", "T", "gamma", "alpha"];

impl<'a> arbitrary::Arbitrary<'a> for Constant {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        let layer = <Option<u16>>::arbitrary(u)?;
        let name = *u.choose(&FUZZ_NAMES)?;
        let value = f64::arbitrary(u)?;
        Ok(Constant { at: ConstAt { layer, within: &[], name }, value, scale: scale_of(value) })
    }
}

impl KnobValue for Constant {
    fn into_value(self) -> Value {
        Value::Const(self)
    }
    fn from_value(v: &Value) -> Option<Self> {
        match *v {
            Value::Const(c) => Some(c),
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
            | Value::Inject(_) => None,
        }
    }
    /// No constant is named by a number alone.
    fn at(_: f64) -> Option<Self> {
        None
    }
    fn moved(self, v: f64) -> Self {
        Constant { value: v, ..self }
    }
    fn read(f: &Fields) -> Result<Self, String> {
        let name = f.name.as_deref().ok_or_else(|| "missing field `name`".to_string())?;
        let value: f64 = serde_json::from_value(f.value.clone()).map_err(|e| e.to_string())?;
        let within = if f.within.is_empty() || f.layer.is_some() { intern_path(&f.within) } else { return Err("field `within` without `layer`".to_string()) };
        Ok(Constant { at: ConstAt { layer: f.layer, within, name: intern(name) }, value, scale: f.scale.unwrap_or_else(|| scale_of(value)) })
    }
}
