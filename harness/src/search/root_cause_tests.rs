//! Tests of `root_cause`: keys, the superset rule, signatures that do not depend on shards or
//! order, old files grouped, and `--known`.

use super::*;
use crate::run::{Kind, Rule};
use crate::scenario::{DTypeName, Knob, Phase, Precision, TensorId};
use crate::search::corpus::{merge, read_findings, State};

fn at(phase: Phase, tensor: &str, kind: Kind) -> Location {
    Location { step: 1, epoch: 1, fold: 0, phase, tensor: TensorId::from_name(tensor), kind, index: 0, ..Default::default() }
}

fn cause(rule: Rule, op: &str) -> Cause {
    Cause { rule, op: op.into(), reason: "by hand".into(), inputs: vec![], chain: None, skipped: None }
}

/// A site finding with one trigger per `(mutations, count, diagnosis)`.
fn finding(sig: &str, at: Location, dtype: &str, triggers: Vec<(Vec<Mutation>, usize, Option<Cause>)>) -> Finding {
    let triggers: Vec<Trigger> = triggers
        .into_iter()
        .map(|(mutations, count, c)| Trigger {
            distance: mutations.len() as f64,
            mutations,
            found: vec![],
            thresholds: vec![],
            count,
            rows: None,
            full_step: None,
            cause: Some(c),
            verdict: None,
            built: None,
        })
        .collect();
    Finding {
        scenario: "s".into(),
        signature: sig.into(),
        location: at,
        dtype: dtype.into(),
        note: None,
        count: triggers.iter().map(|t| t.count).sum(),
        cause: triggers.first().and_then(|t| t.cause.clone().flatten()),
        triggers,
        runs_to_find: 1,
        seconds_to_find: 0.5,
        seconds_to_shrink: 0.0,
        shrink_runs: 0,
        report: None,
    }
}

fn fixture(name: &str) -> Vec<Finding> {
    read_findings(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)).unwrap()
}

/// A root cause's key in words: scenario, rule, op, knobs, precision.
type Key<'a> = (String, Option<&'a str>, String, Vec<&'a str>, PrecisionClass);

fn knobs(c: &RootCause) -> Vec<&str> {
    c.mechanism.knobs.iter().map(String::as_str).collect()
}

#[test]
fn keys_name_the_rule_the_op_kind_the_knob_names_and_the_precision_class() {
    assert_eq!(node_kind("layers.2.residual.layers.0.linear"), "linear");
    assert_eq!(node_kind("layers.0.attention.probs"), "attention");
    assert_eq!(node_kind("blocks.3.attn.scores"), "blocks.attn.scores", "a code model's name, without its numbers");
    let grad = at(Phase::Backward, "layers.2.linear.output.grad", Kind::NegInf);
    assert_eq!(op_kind(None, &grad), "linear");
    assert_eq!(op_kind(None, &at(Phase::Backward, "layers.0.rnn.weight_ih.grad", Kind::Nan)), "rnn");
    assert_eq!(op_kind(None, &at(Phase::Validation, "validation.layers.1.batch_norm.output", Kind::Nan)), "batch_norm");
    assert_eq!(op_kind(None, &at(Phase::Update, "optim.layers.0.linear.weight.exp_avg_sq", Kind::PosInf)), "optimizer state");
    assert_eq!(op_kind(Some(&cause(Rule::EpsRoundsToZero, "adamw update of `layers.0.linear.weight`")), &grad), "update");
    assert_eq!(op_kind(Some(&cause(Rule::Overflow, "loss (mse) (backward)")), &grad), "loss");
    assert_eq!(op_kind(Some(&cause(Rule::Overflow, "conversion to f16")), &grad), "data");
    assert_eq!(op_kind(Some(&cause(Rule::DerivativeAtZero, "layers.1.sqrt (backward)")), &grad), "sqrt");
    assert_eq!(op_kind(Some(&cause(Rule::LrAboveStabilityBound, "sgd on mse")), &at(Phase::Loss, "loss", Kind::PosInf)), "loss");
    assert_eq!([PrecisionClass::of("f64"), PrecisionClass::of("bf16"), PrecisionClass::of("amp_f16")], [PrecisionClass::Full, PrecisionClass::LowPrecision, PrecisionClass::Autocast]);
    // Knob names, not values: two learning rates and two injection rates are one key; what an
    // injection writes is part of its name.
    let f = finding("a", grad.clone(), "f16", vec![(vec![Mutation::new(Knob::Lr, 0.5)], 1, None), (vec![Mutation::new(Knob::Lr, 9.0)], 1, None)]);
    assert_eq!(Mechanism::of(&f, &f.triggers[0], false), Mechanism::of(&f, &f.triggers[1], false));
    let inject: Mutation = serde_json::from_str(r#"{"knob":"data.inject","what":"zero","split":"train","value":0.01}"#).unwrap();
    assert_eq!(knob_name(&inject), "data.inject.zero.train");
}

#[test]
fn signatures_are_golden() {
    // FNV-1a (64 bits, low 32 kept) of `rule|op|knobs|precision`, computed outside nanhunt (Python).
    let m = Mechanism { rule: Some(Rule::Overflow), op: "linear".into(), knobs: vec!["optimizer.lr".into(), "train.dtype".into()], precision: PrecisionClass::LowPrecision, verdict: None };
    assert_eq!(m.signature(), "e12e7f97");
    let m = Mechanism { rule: None, op: "loss".into(), knobs: vec![], precision: PrecisionClass::Full, verdict: None };
    assert_eq!(m.signature(), "5a093ebe");
    // With a verdict, `|verdict` is appended (Python: FNV-1a of `…|low-precision storage|precision/overflow`).
    let m = Mechanism {
        rule: Some(Rule::Overflow),
        op: "linear".into(),
        knobs: vec!["optimizer.lr".into(), "train.dtype".into()],
        precision: PrecisionClass::LowPrecision,
        verdict: Some("precision/overflow".into()),
    };
    assert_eq!(m.signature(), "b38fd5a2");
}

/// A verdict of the given key, on `op`.
fn judged(key: &str) -> crate::run::verdict::Verdict {
    let (class, precision) = match key {
        "math" => (crate::run::verdict::Class::Math, None),
        _ => (crate::run::verdict::Class::Precision, Some(crate::run::verdict::Loss::Overflow)),
    };
    let step_f64 = crate::run::verdict::StepCheck { finite: Some(class != crate::run::verdict::Class::Math), detail: "by hand".into() };
    crate::run::verdict::Verdict { class, precision, op: "layers.1.linear.output".into(), reason: "by hand".into(), op_f64: None, step_f64 }
}

#[test]
fn the_verdict_splits_root_causes_and_a_trigger_without_one_joins_its_judged_twin() {
    let lin = at(Phase::Forward, "layers.1.linear.output", Kind::PosInf);
    let over = || Some(cause(Rule::Overflow, "layers.1.linear"));
    let with = |v: Option<&str>| {
        let mut f = finding("lin", lin.clone(), "f32", vec![(vec![Mutation::new(Knob::Lr, 2.0)], 3, over())]);
        f.triggers[0].verdict = v.map(judged);
        f
    };
    // Alone, a trigger without a verdict keys (and signs) as before verdicts.
    let old = group(&[with(None)]);
    assert_eq!((old.len(), old[0].mechanism.verdict.as_deref()), (1, None));
    assert_eq!(old[0].signature, Mechanism { verdict: None, ..old[0].mechanism.clone() }.signature());
    // Beside a judged one of the same key, it joins it; two verdicts are two root causes.
    let mut unjudged = with(None);
    unjudged.signature = "lin3".into();
    let groups = group(&[with(Some("precision/overflow")), unjudged]);
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!((groups[0].mechanism.verdict.as_deref(), groups[0].count), (Some("precision/overflow"), 6));
    assert_eq!(groups[0].verdict.as_ref().map(|v| v.key()), Some("precision/overflow".into()));
    let mut same_knobs = with(Some("math"));
    same_knobs.signature = "lin4".into();
    let split = group(&[with(Some("precision/overflow")), same_knobs]);
    assert_eq!(split.len(), 2, "{split:?}");
    // `--known` from a corpus saved before verdicts knows the judged root cause.
    let known = group_known(&[with(Some("precision/overflow"))], &[with(None)]);
    assert_eq!((known.len(), known[0].known), (1, true));
}

#[test]
fn a_superset_trigger_belongs_to_the_group_of_its_subset() {
    let lr = || Mutation::new(Knob::Lr, 2.0);
    let f16 = || Mutation::new(Knob::Dtype, DTypeName::F16);
    let init = || Mutation::new(Knob::InitScale, 40.0);
    let probs = at(Phase::Forward, "layers.0.attention.probs.output", Kind::Nan);
    let masked = || Some(cause(Rule::FullyMaskedRow, "layers.0.attention.probs"));
    let findings = vec![
        // The base fails (the empty trigger); in f16 it fails the same way: one mechanism.
        finding("base", probs.clone(), "f32", vec![(vec![], 10, masked())]),
        finding("base16", probs.clone(), "f16", vec![(vec![f16()], 4, masked())]),
        // An overflow of the loss by lr; lr with more knobs, elsewhere, belongs to it.
        finding("loss", at(Phase::Loss, "loss", Kind::PosInf), "f32", vec![(vec![lr()], 3, Some(cause(Rule::Overflow, "loss (mse)")))]),
        finding("lin", at(Phase::Forward, "layers.1.linear.output", Kind::PosInf), "f32", vec![(vec![lr(), init()], 2, None)]),
        // The empty trigger does not take another op's failure: init alone is its own root cause,
        // and the same knobs unexplained at the same op join the diagnosed one.
        finding("init", at(Phase::Forward, "layers.1.linear.output", Kind::NegInf), "f32", vec![(vec![init()], 5, Some(cause(Rule::Overflow, "layers.1.linear")))]),
        finding("init2", at(Phase::Backward, "layers.1.linear.output.grad", Kind::Nan), "f32", vec![(vec![init()], 1, None)]),
    ];
    // The failing base is another hunt's (`t`): a base that fails keys its other flips apart.
    let findings: Vec<Finding> = findings
        .into_iter()
        .map(|mut f| {
            if f.signature.starts_with("base") {
                f.scenario = "t".into();
            }
            f
        })
        .collect();
    let groups = group(&findings);
    let summary: Vec<(Vec<&str>, usize, Vec<&str>)> = groups.iter().map(|g| (knobs(g), g.count, g.findings.iter().map(String::as_str).collect())).collect();
    assert_eq!(
        summary,
        [(vec![], 14, vec!["base", "base16"]), (vec!["magnitude"], 8, vec!["init", "init2", "lin"]), (vec!["optimizer.lr"], 3, vec!["loss"])],
        "{{lr, init}} unexplained in the linear has three subset keys of one knob: it goes to one of its own op, init's (unexplained, which the diagnosed one takes), not lr's in the loss"
    );
    // Those signatures, by hand (FNV-1a in Python): overflow|loss|optimizer.lr 25e11210, overflow|linear|magnitude
    // 7440326b, unexplained|linear|magnitude 60801e74 (each `|full precision`).
    assert_eq!([groups[2].signature.as_str(), groups[1].signature.as_str()], ["25e11210", "7440326b"]);
    let base = &groups[0];
    assert_eq!((base.mechanism.rule, base.mechanism.op.as_str(), base.mechanism.precision), (Some(Rule::FullyMaskedRow), "attention", PrecisionClass::Full));
    assert_eq!(base.dtypes, [Tally { what: "f32".into(), count: 10 }, Tally { what: "f16".into(), count: 4 }]);
    assert_eq!(base.triggers, [Tally { what: "the base itself".into(), count: 10 }, Tally { what: "train.dtype = f16".into(), count: 4 }]);
    // The face of a group is its own key's member, with its diagnosis.
    assert_eq!((groups[2].cause.as_ref().map(|c| c.rule), groups[2].location.tensor.to_string()), (Some(Rule::Overflow), "loss".to_string()));
    assert_eq!(groups[2].sites, [Tally { what: "+Inf in loss (loss)".into(), count: 3 }]);
    assert_eq!(groups[1].sites[0], Tally { what: "-Inf in layers.1.linear.output (forward)".into(), count: 5 });
}

#[test]
fn root_causes_do_not_depend_on_shards_order_or_merging() {
    let all = fixture("before-root-causes/pt41508-findings.jsonl");
    let whole = group(&all);
    let sigs = |g: &[RootCause]| g.iter().map(|c| (c.signature.clone(), c.count, c.findings.clone())).collect::<Vec<_>>();
    // Two shards that found alternate sites, merged as `nanhunt merge` does, then grouped.
    let shards: Vec<Finding> = all.iter().skip(1).step_by(2).chain(all.iter().step_by(2)).cloned().collect();
    assert_eq!(sigs(&group(&merge(shards))), sigs(&whole));
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(sigs(&group(&reversed)), sigs(&whole));
    // A shard that found only the base's failure names it by the same signature.
    assert_eq!(group(&all[..1])[0].signature, whole[0].signature);
    // A resumed campaign's state holds the same findings: it groups alike.
    let state = State { findings: all.clone(), ..State::default() };
    let back: State = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    assert_eq!(sigs(&group(&back.findings)), sigs(&whole));
}

#[test]
fn findings_and_corpora_written_before_root_causes_load_and_group() {
    // Files of the binary at 4c2bbe9 and 82c5369: triggers without their own diagnosis take their site's.
    let old = fixture("before-typed-ids/findings.jsonl");
    let groups = group(&old);
    let keys: BTreeSet<Key> = groups.iter().map(|g| (g.scenario.clone(), g.mechanism.rule.map(<&str>::from), g.mechanism.op.clone(), knobs(g), g.mechanism.precision)).collect();
    let k = |s: &str, r: Option<Rule>, op: &str, kn: &[&'static str], p| (s.to_string(), r.map(<&str>::from), op.to_string(), kn.to_vec(), p);
    let want: BTreeSet<_> = [
        // An eps that rounds to 0 groups by the setting the dtype cannot hold, not by what exposed it.
        k("s000_ex1_bce_mlp", Some(Rule::EpsRoundsToZero), "update", &["optimizer.eps"], PrecisionClass::LowPrecision),
        // The init scale is a magnitude knob: its key says `magnitude` (its signature is new).
        k("s000_ex1_bce_mlp", None, "linear", &["magnitude", "train.precision"], PrecisionClass::Autocast),
        k("s003_ex1_wide_mlp_adam_fix_clip_norm", Some(Rule::Overflow), "linear", &["train.dtype"], PrecisionClass::LowPrecision),
        k("s003_ex1_wide_mlp_adam_fix_clip_norm", None, "linear", &["train.precision"], PrecisionClass::Autocast),
        k("s001_ex1_rnn_adam_fix_clip_norm", Some(Rule::EpsRoundsToZero), "update", &["optimizer.eps"], PrecisionClass::LowPrecision),
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, want);
    let state = State::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/before-typed-ids")).unwrap();
    assert_eq!(group(&state.findings).len(), 2, "the corpus's two sites are two mechanisms (f16 overflow, autocast gradient)");
    // A finite base (13 sites, 24 triggers): six root causes, each one knob (the data's and
    // targets' scales, the init scale and an injected outlier as one, `magnitude`) or the loss's
    // clamp and epsilon. Before magnitude was one knob they were eight: the loss's overflow by
    // `data.scale`, by `data.target_scale` and by `model.init_scale` were three; the old keys
    // cannot be kept because the three are now one group.
    let tf = fixture("before-root-causes/tf38457-findings.jsonl");
    let groups = group(&tf);
    let mut roots: Vec<(Vec<&str>, &str)> = groups.iter().map(|g| (knobs(g), g.mechanism.op.as_str())).collect();
    roots.sort();
    let one = |k: &'static str, op: &'static str| (vec![k], op);
    let want = vec![
        (vec!["loss.clamp", "loss.epsilon"], "loss"),
        one("magnitude", "data"),
        one("magnitude", "loss"),
        one("magnitude", "tanh"),
        // Adam's eps rounding to 0 in f16, exposed by a trigger that also moved another knob:
        // keyed by the setting, it is its own root cause, not a member of that knob's.
        one("optimizer.eps", "update"),
        one("optimizer.lr", "loss"),
    ];
    assert_eq!(roots, want);
    // Every run is counted once: the groups' counts add up to the triggers' (summed here from the raw JSON).
    let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/before-root-causes/tf38457-findings.jsonl")).unwrap();
    let raw: u64 = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["triggers"].as_array().unwrap().iter().map(|t| t["count"].as_u64().unwrap()).sum::<u64>()).sum();
    assert_eq!(groups.iter().map(|g| g.count as u64).sum::<u64>(), raw);
    // A base that fails as written (25 sites): its failure in every dtype is one root cause.
    let pt = group(&fixture("before-root-causes/pt41508-findings.jsonl"));
    assert!(pt.len() <= 8, "{}", pt.len());
    let base = &pt[0];
    assert_eq!((base.mechanism.rule, base.trigger.len()), (Some(Rule::FullyMaskedRow), 0));
    // The five sites "NaN in layers.0.attention.probs.output" (f32, f16, bf16, amp_f16, amp_bf16) of the file: 62455 + 4062 + 4455 + 4322 + 4468.
    assert_eq!(base.sites[0], Tally { what: "NaN in layers.0.attention.probs.output (forward)".into(), count: 79762 });
    assert_eq!(base.dtypes.len(), 5);
}

#[test]
fn known_root_causes_are_marked_and_a_superset_of_one_is_known() {
    let lr = Mutation::new(Knob::Lr, 2.0);
    let amp = Mutation::new(Knob::Precision, Precision::AmpF16);
    let loss = at(Phase::Loss, "loss", Kind::PosInf);
    let known = vec![finding("a", loss.clone(), "f32", vec![(vec![lr.clone()], 3, None)])];
    let now = vec![
        finding("a", loss.clone(), "f32", vec![(vec![lr.clone()], 1, None)]),
        finding("b", at(Phase::Forward, "layers.0.linear.output", Kind::PosInf), "amp_f16", vec![(vec![lr.clone(), amp.clone()], 1, None)]),
        finding("c", at(Phase::Forward, "layers.0.linear.output", Kind::NegInf), "amp_f16", vec![(vec![amp], 1, None)]),
    ];
    // {lr, amp} in the linear goes with {amp} (unexplained|linear|train.precision|autocast,
    // 223ebffb by hand), of its own op, rather than {lr} in the loss (18616549): {lr} is known,
    // {amp} is new.
    let marks = |g: &[RootCause]| g.iter().map(|c| (knobs(c).join("+"), c.known)).collect::<BTreeSet<_>>();
    let g = group_known(&now, &known);
    let expect: BTreeSet<(String, bool)> = [("optimizer.lr".to_string(), true), ("train.precision".to_string(), false)].into_iter().collect();
    assert_eq!(marks(&g), expect);
    // Known by a superset of itself is not known: the smaller trigger is new.
    let wider = vec![finding("a", loss.clone(), "f32", vec![(vec![lr.clone(), Mutation::new(Knob::Epochs, 50u32)], 3, None)])];
    assert!(group_known(&now[..1], &wider).iter().all(|c| !c.known));
    // Another scenario's findings know nothing of this one.
    let mut other = known.clone();
    other[0].scenario = "t".into();
    assert!(group_known(&now[..1], &other).iter().all(|c| !c.known));
    assert!(group_known(&now[..1], &known).iter().all(|c| c.known));
}

#[test]
fn a_setting_the_dtype_cannot_hold_and_a_divergence_group_by_what_drove_them() {
    // tf38457's clamp: 1 − 1e-7 rounds to 1 in f16, so any knob that saturates the sigmoid
    // exposes it. Three exposing knobs, one root cause, keyed by the clamp.
    let loss = at(Phase::Loss, "loss", Kind::Nan);
    let clamp = || Some(cause(Rule::OneMinusEpsRoundsToOne, "loss (bce)"));
    let knob = |k: Knob, v: f64| vec![Mutation::new(k, v)];
    let chain = |trigger: &str| {
        let c = crate::run::cause::Chain { trigger: trigger.into(), grew: "weights".into(), per_step: 10.0, diverged_at: 2, then: None };
        Some(Cause { chain: Some(c), ..cause(Rule::Divergence, "divergence") })
    };
    let findings = vec![
        finding("scale", loss.clone(), "f16", vec![(knob(Knob::InitScale, 2.0), 3, clamp())]),
        finding("lr", loss.clone(), "f16", vec![(knob(Knob::Lr, 0.3), 2, clamp()), (knob(Knob::TargetScale, 150.0), 1, clamp())]),
        // Three divergences driven by the step size: the lr (whatever else moved), and the lr on a
        // loss summed over the batch (plain SGD's step on 7 summed rows is 7·lr on their mean).
        finding("d1", at(Phase::Forward, "layers.0.linear.output", Kind::PosInf), "f32", vec![(knob(Knob::Lr, 1.2), 4, chain("lr 1.2"))]),
        finding("d2", loss.clone(), "f32", vec![(vec![Mutation::new(Knob::Lr, 0.2), Mutation::new(Knob::Epochs, 5u64)], 2, chain("lr 0.2"))]),
        finding("d3", loss, "f32", vec![(knob(Knob::Lr, 0.2), 1, chain("lr 0.2 on a loss summed over batches of 7 rows (its gradient grows with the rows: lr 1.4 on their mean)"))]),
    ];
    let groups = group(&findings);
    let summary: Vec<(Vec<&str>, usize)> = groups.iter().map(|g| (knobs(g), g.count)).collect();
    assert_eq!(summary.len(), 2, "{summary:?}");
    assert!(summary.contains(&(vec!["loss.clamp"], 6)), "{summary:?}");
    assert!(summary.contains(&(vec!["optimizer.lr"], 7)), "{summary:?}");
}

#[test]
fn the_magnitude_knobs_are_one_driver_of_an_overflow() {
    // pt1381's fix hunted in f16: (p − y)² overflows f16 in the loss whichever knob made the
    // values large (the inputs' std or mean, the targets' scale, the init scale): one root cause,
    // each trigger a member. The lr is no magnitude knob, an outlier is one, a NaN is not.
    let f16 = || Mutation::new(Knob::Dtype, DTypeName::F16);
    let with = |k: Knob, v: f64| vec![f16(), Mutation::new(k, v)];
    let loss = at(Phase::Loss, "loss", Kind::PosInf);
    let over = |op: &str| Some(cause(Rule::Overflow, op));
    let outlier: Mutation = serde_json::from_str(r#"{"knob":"data.inject","what":"outlier","split":"validation","value":0.0556}"#).unwrap();
    let nan: Mutation = serde_json::from_str(r#"{"knob":"data.inject","what":"nan","split":"train","value":0.01}"#).unwrap();
    assert_eq!((knob_name(&outlier), knob_name(&nan)), ("magnitude".to_string(), "data.inject.nan.train".to_string()));
    let findings = vec![
        finding("std", loss.clone(), "f16", vec![(with(Knob::InputStd, 82.0), 105, over("loss (mse)")), (with(Knob::InitScale, 65.5), 11, over("loss (mse)"))]),
        finding("target", loss.clone(), "f16", vec![(with(Knob::TargetScale, 200.0), 3, over("loss (mse)"))]),
        // The validation loss, unexplained, joins the diagnosed key of the same knobs and op.
        finding("val", at(Phase::Validation, "validation.loss", Kind::PosInf), "f16", vec![(with(Knob::InputMean, 40.0), 4, None)]),
        finding("lin", at(Phase::Forward, "layers.0.linear.output", Kind::PosInf), "f16", vec![(with(Knob::TargetScale, 383.0), 2, over("layers.0.linear"))]),
        finding("lr", loss, "f16", vec![(with(Knob::Lr, 2.0), 3, over("loss (mse)"))]),
        finding("data", at(Phase::Data, "data.validation.inputs", Kind::NegInf), "f16", vec![(vec![f16(), outlier], 2, over("conversion to f16"))]),
        finding("nan", at(Phase::Data, "data.train.inputs", Kind::Nan), "f32", vec![(vec![nan], 1, Some(cause(Rule::DataNotFinite, "data")))]),
    ];
    let groups = group(&findings);
    let summary: BTreeSet<(Vec<&str>, &str, usize)> = groups.iter().map(|g| (knobs(g), g.mechanism.op.as_str(), g.count)).collect();
    let want: BTreeSet<(Vec<&str>, &str, usize)> = [
        (vec!["magnitude", "train.dtype"], "loss", 105 + 11 + 3 + 4),
        (vec!["magnitude", "train.dtype"], "linear", 2),
        (vec!["optimizer.lr", "train.dtype"], "loss", 3),
        (vec!["magnitude", "train.dtype"], "data", 2),
        (vec!["data.inject.nan.train"], "data", 1),
    ]
    .into_iter()
    .collect();
    assert_eq!(summary, want);
    let big = &groups[0];
    assert_eq!((big.mechanism.rule, big.triggers.len(), big.findings.len()), (Some(Rule::Overflow), 4, 3), "{big:?}");
    assert_eq!(big.mechanism.describe(), "overflow in loss, low-precision storage, by magnitude + train.dtype");
}

#[test]
fn a_math_verdict_keys_any_precision_without_the_dtype_knobs() {
    // pt1381's one-row batch: the running variance's 0/0 is NaN in f64 too (verdict math), so the
    // f16 and autocast flips by a batch of 3 (7 rows leave a last batch of 1) are one root cause.
    let bn = at(Phase::Validation, "validation.layers.1.batch_norm.output", Kind::Nan);
    let judged_at = |sig: &str, dtype: &str, muts: Vec<Mutation>, v: Option<&str>| {
        let mut f = finding(sig, bn.clone(), dtype, vec![(muts, 2, Some(cause(Rule::DivisionByZero, "layers.1.batch_norm")))]);
        f.triggers[0].verdict = v.map(judged);
        f
    };
    let batch = || Mutation::new(Knob::BatchSize, 3u32);
    let findings = vec![
        judged_at("f16", "f16", vec![batch(), Mutation::new(Knob::Dtype, DTypeName::F16)], Some("math")),
        judged_at("amp", "amp_bf16", vec![batch(), Mutation::new(Knob::Precision, Precision::AmpBf16)], Some("math")),
        // Saved before verdicts: its own class and knobs, a superset of the judged key's.
        judged_at("old", "f16", vec![batch(), Mutation::new(Knob::Dtype, DTypeName::F16)], None),
        // A dtype alone keeps its knob: without it the key would read "the base itself".
        judged_at("bf16", "bf16", vec![Mutation::new(Knob::Dtype, DTypeName::Bf16)], Some("math")),
    ];
    let groups = group(&findings);
    let summary: Vec<(Vec<&str>, PrecisionClass, usize)> = groups.iter().map(|g| (knobs(g), g.mechanism.precision, g.count)).collect();
    assert_eq!(summary, [(vec!["train.batch_size"], PrecisionClass::Any, 6), (vec!["train.dtype"], PrecisionClass::Any, 2)]);
    assert_eq!(groups[0].dtypes.len(), 2, "{:?}", groups[0].dtypes);
    assert_eq!(groups[0].mechanism.describe(), "division_by_zero in batch_norm, any precision, verdict math, by train.batch_size");
}

#[path = "root_cause_elsewhere_tests.rs"]
mod elsewhere;

#[path = "root_cause_family_tests.rs"]
mod family;

#[path = "root_cause_compute_tests.rs"]
mod compute;
