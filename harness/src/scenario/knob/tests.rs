//! Tests that enumerate the knob table: keys, parsing, and that every knob
//! reads back what it sets on a bundled scenario it applies to.

use super::*;
use crate::scenario::{load, InjectValue, Layer, Scenario, SearchSpec, SplitSel};

/// Every bundled scenario but the fuzz corpus, loaded.
fn bundled() -> Vec<Scenario> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut out = Vec::new();
    for dir in ["seeds", "real", "layers", "diagnosis"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
        paths.sort();
        out.extend(paths.iter().filter_map(|p| load(p).ok()));
    }
    assert!(out.len() > 40, "the bundled scenarios load: {}", out.len());
    out
}

#[test]
fn keys_are_unique_and_parse_back() {
    let mut keys: Vec<&str> = Knob::ALL.iter().map(|k| k.key()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), Knob::COUNT, "a key is used twice");
    for &k in Knob::ALL {
        assert_eq!(k.key().parse::<Knob>(), Ok(k));
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, format!("\"{}\"", k.key()));
        assert_eq!(serde_json::from_str::<Knob>(&json).unwrap(), k);
        assert_eq!(k.to_string(), k.key());
        assert!(k.key().chars().all(|c| c.is_ascii_lowercase() || c == '.' || c == '_' || c.is_ascii_digit()), "{k}");
    }
    assert_eq!(serde_json::to_string(&Knob::Lr).unwrap(), "\"optimizer.lr\"");
    let err = serde_json::from_str::<Knob>("\"lr\"").unwrap_err().to_string();
    assert!(err.contains("unknown variant `lr`") && err.contains("`optimizer.lr`") && err.contains("`train.accumulate`"), "{err}");
    assert!("lr".parse::<Knob>().unwrap_err().contains("`seed`"));
}

#[test]
fn a_knob_sets_its_own_key_and_no_other() {
    assert!(Knob::Lr.sets_key("optimizer.lr"));
    assert!(!Knob::Lr.sets_key("optimizer.lr_decay"));
    assert!(Knob::InputMean.sets_key("data.inputs"), "a whole-table change covers the knob");
    assert!(!Knob::InputScale.sets_key("data.scale_groups"));
}

#[test]
fn margins_scales_and_defaults_agree() {
    for &k in Knob::ALL {
        let spec = k.entry().spec;
        assert!(!spec.margin || spec.scale.is_some(), "{k} has a margin, so a scale to measure it on");
        assert_eq!(spec.by_default, k != Knob::Seed, "{k}: only the seed waits to be asked for");
        // A constant's low end is screened first (a small epsilon or temperature), as a warmup's.
        assert_eq!(spec.riskier == End::Low, matches!(k, Knob::WarmupSteps | Knob::Const), "{k}");
        if let Some((a, b)) = spec.within {
            assert!(a <= b && spec.scale.is_some(), "{k}");
        }
    }
    let no_margin: Vec<Knob> = Knob::ALL.iter().copied().filter(|k| !k.has_margin()).collect();
    assert_eq!(no_margin, [Knob::Inject, Knob::Dtype, Knob::Optimizer, Knob::ClipNorm, Knob::Seed, Knob::Precision, Knob::LossKind, Knob::LossReduction]);
}

/// A value of `k`'s domain that is not the base's: the high end of a range, the first other choice, ...
fn sample(k: Knob, d: &Domain) -> Value {
    let at = |v: f64| (k.entry().at)(v).expect("a numeric knob has values at numbers");
    match d {
        Domain::Range(_, b) => at(*b),
        Domain::Features(_, b, _) => at(*b),
        Domain::Inject { high, values, .. } => Value::Inject(Added { what: values[0], split: SplitSel::Train, fraction: *high }),
        Domain::Choice(values) => values[0],
        Domain::Switch(on) => Value::Real(on[0]),
        Domain::Seeds => Value::Seed(12345),
        Domain::Consts(ranges) => Value::Const(ranges[0].at_value(ranges[0].high)),
    }
}

#[test]
fn every_knob_reads_back_what_it_sets_where_it_applies() {
    let all = bundled();
    for &k in Knob::ALL {
        let spec = SearchSpec::default();
        let found = all.iter().find_map(|s| {
            let ctx = Ctx { base: s, spec: &spec, decades: 3.0, narrow: 2.0 };
            k.applies(s).then(|| (k.entry().domain)(&ctx)).flatten().map(|d| (s, d))
        });
        let Some((base, domain)) = found else { panic!("{k} applies to no bundled scenario with a domain") };
        let value = sample(k, &domain);
        assert_ne!(k.get(base), Some(value), "{k}: the sample moves it ({})", base.name);
        let mut s = base.clone();
        assert!((k.entry().set)(&mut s, &value), "{k} sets {value:?} on {}", base.name);
        match (k, value) {
            // A factor is relative to the base scale: it multiplies every feature's.
            (Knob::InputScale, Value::Factor(f)) => {
                let features = crate::scenario::input_shape(&base.data).unwrap().features;
                let before = if base.data.scale.is_empty() { vec![1.0; features] } else { base.data.scale.clone() };
                assert_eq!(s.data.scale, before.iter().map(|b| b * f.value).collect::<Vec<_>>());
            }
            // An injection is added to the ones already there; it has no value to read.
            (Knob::Inject, Value::Inject(a)) => {
                assert_eq!(s.data.inject.len(), base.data.inject.len() + 1);
                let last = s.data.inject.last().unwrap();
                assert_eq!((last.value, last.split, last.fraction), (a.what, a.split, Some(a.fraction)));
                assert_eq!(k.get(&s), None);
            }
            (_, Value::Real(v)) => {
                let Some(Value::Real(got)) = k.get(&s) else { panic!("{k} reads back a real") };
                assert!((got - v).abs() <= 1e-12 * v.abs(), "{k}: set {v}, read {got}");
            }
            _ => assert_eq!(k.get(&s), Some(value), "{k} on {}", base.name),
        }
        // A value of another knob's type is refused, and leaves the scenario alone.
        let other = if matches!(value, Value::Dtype(_)) { Value::Seed(1) } else { Value::Dtype(crate::scenario::DTypeName::F16) };
        let mut untouched = base.clone();
        assert!(!(k.entry().set)(&mut untouched, &other), "{k} refuses {other:?}");
        assert_eq!(&untouched, base);
    }
}

#[test]
fn default_domains_hold_the_base_value() {
    let spec = SearchSpec::default();
    for s in bundled() {
        let ctx = Ctx { base: &s, spec: &spec, decades: 3.0, narrow: 2.0 };
        for &k in Knob::ALL.iter().filter(|k| k.applies(&s)) {
            let (Some(Domain::Range(a, b)), Some(v)) = ((k.entry().domain)(&ctx), k.get(&s).and_then(|v| v.number())) else { continue };
            // Draws and shrinks move between the ends; the base sits between them (a batch of every row at the top).
            assert!(a <= v && v <= b, "{}: {k} = {v} outside [{a}, {b}]", s.name);
        }
    }
    let values = [InjectValue::Zero, InjectValue::Outlier];
    let s = crate::scenario::seed("s000_ex1_bce_mlp");
    let ctx = Ctx { base: &s, spec: &spec, decades: 3.0, narrow: 2.0 };
    assert_eq!((Knob::Inject.entry().domain)(&ctx), Some(Domain::Inject { low: 1e-4, high: 0.1, values: values.to_vec(), validation: false }));
    assert_eq!((Knob::Lr.entry().domain)(&ctx), Some(Domain::Range(1e-3 / 1e3, 1e-3 * 1e3)), "3 decades either side of lr = 1e-3");
}

#[test]
fn the_loss_knobs_move_within_what_the_model_and_data_take() {
    use crate::scenario::{LossKind, Reduction, TargetSpec};
    // tensorflow#38457: bce (clamp and epsilon 1e-7) on XOR's 0/1 targets. bce_torch reads the
    // same probabilities and takes a clamp but no epsilon; mse (real values) is no stand-in.
    let base = load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/real/tf38457_f16_tanh_bce.toml")).unwrap();
    let spec = SearchSpec::default();
    let ctx = Ctx { base: &base, spec: &spec, decades: 3.0, narrow: 2.0 };
    assert_eq!((Knob::LossKind.entry().domain)(&ctx), Some(Domain::Choice(vec![Value::Loss(LossKind::BceTorch)])));
    assert_eq!((Knob::LossReduction.entry().domain)(&ctx), Some(Domain::Choice(vec![Value::Reduction(Reduction::Sum)])));
    let mut s = base.clone();
    assert!((Knob::LossKind.entry().set)(&mut s, &Value::Loss(LossKind::BceTorch)));
    assert_eq!((s.loss.kind, s.loss.clamp, s.loss.epsilon), (LossKind::BceTorch, Some(1e-7), None));
    let mut untouched = base.clone();
    assert!(!(Knob::LossKind.entry().set)(&mut untouched, &Value::Loss(LossKind::Mse)));
    assert_eq!(untouched, base);
    // Regression targets: huber gets PyTorch's default δ = 1, and loses it again for mae.
    let mut r = base.clone();
    (r.loss.kind, r.loss.clamp, r.loss.epsilon, r.data.targets) = (LossKind::Mse, None, None, Some(TargetSpec::Normal { mean: 0.0, std: 1.0, outputs: 1 }));
    assert!((Knob::LossKind.entry().set)(&mut r, &Value::Loss(LossKind::Huber)));
    assert_eq!((r.loss.kind, r.loss.delta), (LossKind::Huber, Some(1.0)));
    assert!((Knob::LossKind.entry().set)(&mut r, &Value::Loss(LossKind::Mae)));
    assert_eq!((r.loss.kind, r.loss.delta), (LossKind::Mae, None));
    assert!(crate::scenario::validate(&r).is_empty());
}

/// A bundled scenario of `scenarios/layers/` by file name.
fn layer(name: &str) -> Scenario {
    load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../scenarios/layers/{name}.toml"))).unwrap()
}

#[test]
fn each_constant_is_a_knob_named_by_its_own_key() {
    let mut s = layer("expr_l2_normalize_zero_rows_fix_eps");
    let spec = SearchSpec::default();
    let ctx = Ctx { base: &s, spec: &spec, decades: 3.0, narrow: 2.0 };
    let Some(Domain::Consts(ranges)) = (Knob::Const.entry().domain)(&ctx) else { panic!("the expr layer's eps is a knob") };
    assert_eq!(ranges.len(), 1);
    let r = &ranges[0];
    assert_eq!((r.at.to_string().as_str(), r.scale, r.high), ("model.layers.2.consts.eps", Scale::Log, 1e-9));
    // Down to where an f32 epsilon rounds to 0: below 2⁻¹⁵⁰.
    assert!(r.low < 2f64.powi(-150) && r.low > 0.0, "{r:?}");
    let at = |name: &str, layer: Option<u16>| ConstAt { layer, within: &[], name: intern(name) };
    assert!((Knob::Const.entry().set)(&mut s, &Value::Const(Constant { at: at("eps", Some(2)), value: 1e-30, scale: Scale::Log })));
    assert_eq!(crate::scenario::const_value(&s, at("eps", Some(2))), Some(1e-30));
    // A constant the scenario does not have, or a layer that is no expression, is refused.
    assert!(!(Knob::Const.entry().set)(&mut s, &Value::Const(Constant { at: at("T", Some(2)), value: 1.0, scale: Scale::Log })));
    assert!(!(Knob::Const.entry().set)(&mut s, &Value::Const(Constant { at: at("eps", Some(0)), value: 1.0, scale: Scale::Log })));
    // The loss's constants: the focal loss's gamma.
    let f = layer("expr_focal_loss");
    assert_eq!(super::consts::all(&f), [(at("gamma", None), 2.0)]);
    assert_eq!(at("gamma", None).to_string(), "loss.consts.gamma");
    // A constant that is not positive moves on a linear scale.
    assert_eq!((super::value::scale_of(0.0), super::value::scale_of(-2.0), super::value::scale_of(3.0)), (Scale::Linear, Scale::Linear, Scale::Log));
}

#[test]
fn label_smoothing_and_the_ignored_fraction_are_knobs_of_class_index_targets() {
    use crate::scenario::{LossKind, TargetSpec};
    let base = layer("cross_entropy_all_ignored_batch");
    assert_eq!((base.loss.kind, base.loss.label_smoothing), (LossKind::CrossEntropy, Some(0.1)));
    assert!(Knob::LabelSmoothing.applies(&base) && Knob::IgnoreFraction.applies(&base));
    assert_eq!(Knob::LabelSmoothing.get(&base), Some(Value::Real(0.1)));
    assert_eq!(Knob::IgnoreFraction.get(&base), Some(Value::Real(0.8)));
    let spec = SearchSpec::default();
    let ctx = Ctx { base: &base, spec: &spec, decades: 3.0, narrow: 2.0 };
    assert_eq!((Knob::IgnoreFraction.entry().domain)(&ctx), Some(Domain::Range(0.0, 1.0)));
    // Moved to 0, the smoothing is unset, as a `[loss]` table without it; past 1 it stays at 1.
    let mut s = base.clone();
    assert!((Knob::LabelSmoothing.entry().set)(&mut s, &Value::Real(0.0)));
    assert_eq!(s.loss.label_smoothing, None);
    assert_eq!((Knob::LabelSmoothing.entry().moved)(&Value::Real(0.1), 1.5), Value::Real(1.0));
    assert!((Knob::IgnoreFraction.entry().set)(&mut s, &Value::Real(1.0)));
    assert!(matches!(s.data.targets, Some(TargetSpec::Labels { ignore_fraction, .. }) if ignore_fraction == 1.0));
    assert!(crate::scenario::validate(&s).is_empty());
    // Neither applies to one-hot targets under another loss.
    let other = load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/real/tf38457_f16_tanh_bce.toml")).unwrap();
    assert!(!Knob::LabelSmoothing.applies(&other) && !Knob::IgnoreFraction.applies(&other));
}

#[test]
fn constants_inside_residual_blocks_are_knobs_at_any_depth() {
    // issue 28's audit: `model.layers.1.layers.1.consts.eps` (an expression inside a residual
    // block) was no knob. Here one block holds an L2-normalize, and a block inside it a scale.
    let text = "name = \"nested\"\nseed = 0\n[data]\nn = 8\nfeatures = 4\ninputs = { kind = \"normal\" }\ntargets = { kind = \"linear\", noise = 0.1 }\n\
                [model]\nlayers = [\n  { type = \"linear\", out = 4 },\n  { type = \"residual\", layers = [\n    { type = \"linear\", out = 4 },\n    \
                { type = \"expr\", expr = \"x / clamp(norm(x, dim=-1, keepdim=true), min=eps)\", consts = { eps = 1e-12 } },\n    \
                { type = \"residual\", layers = [{ type = \"expr\", expr = \"x * s\", consts = { s = -0.5 }, name = \"scaled\" }] },\n  ] },\n  \
                { type = \"expr\", expr = \"x / T\", consts = { T = 0.07 } },\n  { type = \"linear\", out = 1 },\n]\n\
                [loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n";
    let mut s = crate::scenario::from_str(text, "nested.toml").unwrap();
    let keys: Vec<(String, f64)> = super::consts::all(&s).into_iter().map(|(at, v)| (at.to_string(), v)).collect();
    let want = [("model.layers.1.layers.1.consts.eps", 1e-12), ("model.layers.1.layers.2.layers.0.consts.s", -0.5), ("model.layers.2.consts.T", 0.07)];
    assert_eq!(keys, want.map(|(k, v)| (k.to_string(), v)));
    // Each has its range: the epsilon on a log scale down past f32's smallest subnormal 2⁻¹⁴⁹, the
    // negative scale linearly 10 either side (10 × max(|−0.5|, 1)), as a top-level constant.
    let spec = SearchSpec::default();
    let ctx = Ctx { base: &s, spec: &spec, decades: 3.0, narrow: 2.0 };
    let Some(Domain::Consts(ranges)) = (Knob::Const.entry().domain)(&ctx) else { panic!("the nested constants are knobs") };
    assert_eq!(ranges.iter().map(|r| r.at.to_string()).collect::<Vec<_>>(), want.map(|(k, _)| k.to_string()));
    assert!(ranges[0].scale == Scale::Log && ranges[0].low < 2f64.powi(-149) && ranges[0].high == 1e-9, "{:?}", ranges[0]);
    assert_eq!((ranges[1].scale, ranges[1].low, ranges[1].high), (Scale::Linear, -10.5, 9.5));
    // Set, they read back, in the file's table; a path that reaches no expression is refused.
    let (eps, deep) = (ranges[0].at, ranges[1].at);
    assert!((Knob::Const.entry().set)(&mut s, &Value::Const(Constant { at: eps, value: 1e-30, scale: Scale::Log })));
    assert!((Knob::Const.entry().set)(&mut s, &Value::Const(Constant { at: deep, value: 3.0, scale: Scale::Linear })));
    assert_eq!((crate::scenario::const_value(&s, eps), crate::scenario::const_value(&s, deep)), (Some(1e-30), Some(3.0)));
    let Layer::Residual(r) = s.model.layers[1].untagged() else { panic!("layer 1 is the block") };
    let Layer::Expr(e) = r.layers[1].untagged() else { panic!("its layer 1 is the expression") };
    assert_eq!(e.consts.get("eps"), Some(&1e-30));
    let at = |layer: u16, within: &'static [u16]| ConstAt { layer: Some(layer), within, name: intern("eps") };
    for wrong in [at(1, &[]), at(1, &[0]), at(1, &[1, 0]), at(1, &[5]), at(2, &[1])] {
        assert!(!(Knob::Const.entry().set)(&mut s, &Value::Const(Constant { at: wrong, value: 1.0, scale: Scale::Log })), "{wrong}");
    }
}
