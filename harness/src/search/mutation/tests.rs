//! Tests of mutations: applying, normalizing, showing, and reading the files and
//! fuzzer bytes today's binary and the one before the knob table wrote.

use super::*;
use crate::scenario::{Added, DTypeName, Domain, Factor, InjectValue, LossScaleSpec, Named, OptimizerKind, Precision, ScheduleSpec, SplitSel};

fn base() -> Scenario {
    crate::scenario::seed("s000_ex1_bce_mlp")
}

#[test]
fn knobs_apply_and_report_their_base() {
    let b = base();
    let m = Mutation::new(Knob::Lr, 0.5);
    let s = mutate(&b, std::slice::from_ref(&m)).unwrap();
    assert_eq!((s.optimizer.lr, m.base_value(&b)), (0.5, Some(1e-3)));
    let s = mutate(&b, &[Mutation::new(Knob::InputScale, Factor { feature: Some(3), value: 100.0 })]).unwrap();
    assert_eq!(s.data.scale, vec![1.0, 1.0, 1.0, 100.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
    assert_eq!(Mutation::new(Knob::InputScale, Factor { feature: Some(3), value: 2.0 }).knob(), Knob::InputScale);
    assert_eq!(Mutation::new(Knob::InputScale, Factor { feature: Some(3), value: 2.0 }).to_string(), "data.scale[3] = 2");
    assert_eq!(Mutation::new(Knob::Inject, Added { what: InjectValue::Nan, split: SplitSel::Train, fraction: 0.1 }).to_string(), "data.inject.nan.train = 0.1");
    assert_eq!(describe(&[Mutation::new(Knob::Dtype, DTypeName::F16), Mutation::new(Knob::ClipNorm, None)]), "train.dtype = f16, optimizer.clip_grad_norm = null");
}

#[test]
fn inapplicable_or_invalid_mutations_are_refused() {
    let b = base();
    assert!(mutate(&b, &[Mutation::new(Knob::InputScale, Factor { feature: Some(99), value: 2.0 })]).is_none(), "no feature 99");
    assert!(mutate(&b, &[Mutation::new(Knob::Lr, -1.0)]).is_none(), "negative lr fails validation");
    assert!(mutate(&b, &[Mutation::new(Knob::Lr, f64::NAN)]).is_none());
    assert_eq!(try_mutate(&b, &[Mutation::new(Knob::Lr, -1.0)]).unwrap_err(), "invalid `optimizer.lr`: must be a positive finite number, got -1");
    assert!(mutate(&b, &[Mutation::new(Knob::Inject, Added { what: InjectValue::Nan, split: SplitSel::Validation, fraction: 0.1 })]).is_none(), "no validation split");
}

#[test]
fn normalized_candidates_set_each_knob_once() {
    let m = normalize(&[
        Mutation::new(Knob::InputScale, Factor { feature: None, value: 2.0 }),
        Mutation::new(Knob::Lr, 0.1),
        Mutation::new(Knob::InputScale, Factor { feature: Some(1), value: 5.0 }),
        Mutation::new(Knob::Inject, Added { what: InjectValue::Zero, split: SplitSel::Train, fraction: 0.1 }),
        Mutation::new(Knob::Inject, Added { what: InjectValue::Outlier, split: SplitSel::Train, fraction: 0.1 }),
    ]);
    assert_eq!(m.iter().map(|m| m.knob()).collect::<Vec<_>>(), [Knob::Lr, Knob::InputScale, Knob::Inject, Knob::Inject]);
    assert_eq!(m[1], Mutation::new(Knob::InputScale, Factor { feature: Some(1), value: 5.0 }), "the last setting wins");
}

#[test]
fn a_hunt_drops_the_mutations_another_one_makes_meaningless() {
    // tensorflow#38457's base trains with SGD; a 10 s hunt by the binary before this reported 42
    // errors "`optimizer.momentum = 0.64` does not apply" for draws that also switched to Adam.
    let b = crate::scenario::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/real/tf38457_f16_tanh_bce.toml")).unwrap();
    let (adam, momentum, lr) = (Mutation::new(Knob::Optimizer, OptimizerKind::Adam), Mutation::new(Knob::Momentum, 0.64), Mutation::new(Knob::Lr, 0.1));
    assert_eq!(try_mutate(&b, &[adam.clone(), momentum.clone()]).unwrap_err(), "`optimizer.momentum = 0.64` does not apply to this scenario");
    assert_eq!(effective(&b, &[adam.clone(), momentum.clone()]), vec![adam.clone()], "momentum after the switch sets nothing");
    assert_eq!(effective(&b, &[momentum.clone(), adam.clone()]), vec![adam.clone()], "momentum before it means nothing once it is made");
    assert_eq!(effective(&b, &[momentum.clone(), lr.clone()]), [momentum, lr], "both mean something for SGD");
    // PyTorch's BCELoss has no epsilon: after a switch to bce_torch, `loss.epsilon` sets nothing.
    let (torch, eps) = (Mutation::new(Knob::LossKind, crate::scenario::LossKind::BceTorch), Mutation::new(Knob::LossEpsilon, 1e-3));
    assert_eq!(effective(&b, &[eps.clone(), torch.clone()]), vec![torch.clone()]);
    assert_eq!(mutate(&b, &[torch]).map(|s| (s.loss.epsilon, s.loss.clamp)), Some((None, Some(1e-7))), "the clamp it takes stays");
    // A value that cannot be set is kept, for `try_mutate` to refuse.
    let feature = Mutation::new(Knob::InputScale, Factor { feature: Some(9), value: 2.0 });
    assert_eq!(effective(&b, std::slice::from_ref(&feature)), [feature]);
}

#[test]
fn serde_tags_are_knob_names() {
    let all = [
        Mutation::new(Knob::Lr, 1.0),
        Mutation::new(Knob::InitScale, 1.0),
        Mutation::new(Knob::InputScale, Factor { feature: None, value: 1.0 }),
        Mutation::new(Knob::InputMean, 1.0),
        Mutation::new(Knob::InputStd, 1.0),
        Mutation::new(Knob::TargetScale, 1.0),
        Mutation::new(Knob::BatchSize, 1u32),
        Mutation::new(Knob::Epochs, 1u32),
        Mutation::new(Knob::Inject, Added { what: InjectValue::Zero, split: SplitSel::Train, fraction: 0.1 }),
        Mutation::new(Knob::Dtype, DTypeName::F16),
        Mutation::new(Knob::Optimizer, OptimizerKind::Adam),
        Mutation::new(Knob::ClipNorm, None),
        Mutation::new(Knob::LossEpsilon, None),
        Mutation::new(Knob::LossClamp, None),
        Mutation::new(Knob::OptimizerEps, 1e-8),
        Mutation::new(Knob::Beta2, 0.999),
        Mutation::new(Knob::Momentum, 0.9),
        Mutation::new(Knob::NormEps, 1e-5),
        Mutation::new(Knob::Seed, 7u64),
        Mutation::new(Knob::Precision, Precision::AmpBf16),
        Mutation::new(Knob::LossScaleInit, 1024.0),
        Mutation::new(Knob::GrowthInterval, 100u32),
        Mutation::new(Knob::WarmupSteps, 0u32),
        Mutation::new(Knob::Accumulate, 4u32),
        Mutation::new(Knob::LossKind, crate::scenario::LossKind::BceTorch),
        Mutation::new(Knob::LossReduction, crate::scenario::Reduction::Sum),
    ];
    for m in all {
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["knob"].as_str(), Some(m.knob().name()), "{json}");
        assert_eq!(serde_json::from_value::<Mutation>(json).unwrap(), m);
    }
}

#[test]
fn mixed_precision_knobs_apply_where_their_tables_are() {
    let b = base();
    let amp = mutate(&b, &[Mutation::new(Knob::Precision, Precision::AmpF16), Mutation::new(Knob::Accumulate, 4u32)]).unwrap();
    assert_eq!((amp.train.precision, amp.train.accumulate), (Precision::AmpF16, 4));
    assert_eq!(Mutation::new(Knob::Precision, Precision::AmpF16).to_string(), "train.precision = amp_f16");
    // Autocast needs f32 master weights; the scaler's and the warmup's knobs need their tables.
    assert!(mutate(&b, &[Mutation::new(Knob::Dtype, DTypeName::F16), Mutation::new(Knob::Precision, Precision::AmpF16)]).is_none());
    for m in [Mutation::new(Knob::LossScaleInit, 8.0), Mutation::new(Knob::GrowthInterval, 3u32), Mutation::new(Knob::WarmupSteps, 10u32)] {
        assert!(mutate(&b, std::slice::from_ref(&m)).is_none(), "{m}");
        assert_eq!(m.base_value(&b), None);
    }
    let mut s = b.clone();
    s.train.loss_scale = Some(LossScaleSpec::default());
    s.train.schedule = Some(ScheduleSpec { warmup_steps: 50, ..Default::default() });
    let m = mutate(&s, &[Mutation::new(Knob::LossScaleInit, 8.0), Mutation::new(Knob::GrowthInterval, 3u32), Mutation::new(Knob::WarmupSteps, 0u32)]).unwrap();
    let ls = m.train.loss_scale.unwrap();
    assert_eq!((ls.init, ls.growth_interval, m.train.schedule.unwrap().warmup_steps), (8.0, 3, 0));
    assert_eq!(Mutation::new(Knob::WarmupSteps, 7u32).base_value(&s), Some(50.0));
    assert_eq!(Mutation::new(Knob::WarmupSteps, 7u32).with_value(0.2), Mutation::new(Knob::WarmupSteps, 0u32), "a warmup can shrink to none");
    // The space around it moves them, and the screening corners try no warmup first.
    let space = crate::search::space::Space::of(&s);
    let range = |k| space.domain(k).and_then(Domain::range);
    assert_eq!(
        (range(Knob::LossScaleInit).is_some(), range(Knob::GrowthInterval), range(Knob::WarmupSteps), range(Knob::Accumulate)),
        (true, Some((1.0, 8000.0)), Some((0.0, 200.0)), Some((1.0, 8.0)))
    );
    assert!(space.corners().iter().position(|c| c == &vec![Mutation::new(Knob::WarmupSteps, 0u32)]) < space.corners().iter().position(|c| c == &vec![Mutation::new(Knob::WarmupSteps, 200u32)]));
    assert!(space.categorical().contains(&Mutation::new(Knob::Precision, Precision::AmpBf16)));
    // With a scaler the dtype does not move (it must stay f32); the precision does.
    assert!(space.domain(Knob::Dtype).is_none(), "{:?}", space.domain(Knob::Dtype));
}

#[test]
fn arbitrary_bytes_never_panic() {
    use arbitrary::{Arbitrary, Unstructured};
    let b = base();
    for seed in 0..500u32 {
        let bytes: Vec<u8> = (0..64).map(|i| (seed.wrapping_mul(2654435761).rotate_left(i) & 0xff) as u8).collect();
        if let Ok(ms) = Vec::<Mutation>::arbitrary(&mut Unstructured::new(&bytes)) {
            let _ = mutate(&b, &ms);
        }
    }
}

/// Every object with a `knob` key in a JSON document, in document order.
fn saved_mutations(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    match v {
        serde_json::Value::Object(o) if o.contains_key("knob") && !o.contains_key("flips_at") => out.push(v.clone()),
        serde_json::Value::Object(o) => o.values().for_each(|x| saved_mutations(x, out)),
        serde_json::Value::Array(a) => a.iter().for_each(|x| saved_mutations(x, out)),
        _ => {}
    }
}

/// Reads each mutation a file of the binary before the knob table holds, and writes it back
/// unchanged: the same JSON, and for one-line JSON files (findings) the very same text.
fn reads_and_writes_back(text: &str) -> usize {
    let mut count = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut saved = Vec::new();
        saved_mutations(&serde_json::from_str(line).unwrap(), &mut saved);
        for json in &saved {
            let m: Mutation = serde_json::from_value(json.clone()).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(&serde_json::to_value(&m).unwrap(), json, "{m}");
            let written = serde_json::to_string(&m).unwrap();
            assert!(line.contains(&written), "{written} is not as the old binary wrote it");
        }
        count += saved.len();
    }
    count
}

// The fixtures are files `nanhunt` wrote before the knob table (commit 4c2bbe9, /work/baseline):
// a corpus's state and a hunt's findings (`tests/saved_knobs.rs` reads a report's summary).
const STATE: &str = include_str!("../../../tests/fixtures/knobs/corpus-state.json");
const FINDINGS: &str = include_str!("../../../tests/fixtures/knobs/findings.jsonl");

#[test]
fn files_written_before_the_knob_table_load_and_write_back_the_same() {
    let state: crate::search::corpus::State = serde_json::from_str(STATE).unwrap();
    let knobs: std::collections::BTreeSet<Knob> = state.corpus.iter().flat_map(|m| m.mutations.iter().map(Mutation::knob)).collect();
    assert!(knobs.contains(&Knob::Inject) && knobs.contains(&Knob::InputScale) && knobs.contains(&Knob::Dtype) && knobs.contains(&Knob::Beta2), "{knobs:?}");
    assert_eq!(serde_json::to_value(&state).unwrap(), serde_json::from_str::<serde_json::Value>(STATE).unwrap(), "the corpus state writes back as it was read");
    let mut saved = Vec::new();
    saved_mutations(&serde_json::from_str(STATE).unwrap(), &mut saved);
    assert!(saved.len() > 20, "{}", saved.len());
    for json in saved {
        assert_eq!(serde_json::to_value(serde_json::from_value::<Mutation>(json.clone()).unwrap()).unwrap(), json);
    }
    let findings: Vec<crate::search::Finding> = FINDINGS.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(findings[1].triggers[0].mutations, [Mutation::new(Knob::InitScale, 4.92), Mutation::new(Knob::Precision, Precision::AmpF16)]);
    assert!(reads_and_writes_back(FINDINGS) >= 4);
}

#[test]
fn every_knob_writes_its_old_format_and_bad_values_are_named() {
    let text = |m: Mutation| serde_json::to_string(&m).unwrap();
    assert_eq!(text(Mutation::new(Knob::Epochs, 9u32)), r#"{"knob":"train.epochs","value":9}"#);
    assert_eq!(text(Mutation::new(Knob::Lr, 100.0)), r#"{"knob":"optimizer.lr","value":100.0}"#);
    assert_eq!(text(Mutation::new(Knob::ClipNorm, None)), r#"{"knob":"optimizer.clip_grad_norm","value":null}"#);
    assert_eq!(text(Mutation::new(Knob::InputScale, Factor { feature: None, value: 2.0 })), r#"{"knob":"data.scale","feature":null,"value":2.0}"#);
    let inject = Mutation::new(Knob::Inject, Added { what: InjectValue::Nan, split: SplitSel::Train, fraction: 0.5 });
    assert_eq!(text(inject), r#"{"knob":"data.inject","what":"nan","split":"train","value":0.5}"#);
    // A missing feature is all features, as serde read an absent `Option` field.
    let all: Mutation = serde_json::from_str(r#"{"value":2.0,"knob":"data.scale"}"#).unwrap();
    assert_eq!(all, Mutation::new(Knob::InputScale, Factor { feature: None, value: 2.0 }));
    let err = |s: &str| serde_json::from_str::<Mutation>(s).unwrap_err().to_string();
    assert!(err(r#"{"knob":"lr","value":1}"#).contains("unknown variant `lr`"), "{}", err(r#"{"knob":"lr","value":1}"#));
    assert!(err(r#"{"knob":"train.epochs","value":2.5}"#).contains("`train.epochs`: invalid type: floating point `2.5`"));
    assert!(err(r#"{"knob":"data.inject","value":0.1,"split":"train"}"#).contains("missing field `what`"));
    assert!(err(r#"{"knob":"train.dtype","value":"f8"}"#).contains("unknown variant `f8`"));
}

/// Fuzzer bytes for knob number `i` of 27: the `u32` whose `(x · 27) >> 32` is `i`, as `arbitrary`'s enum derive picks a variant.
fn variant(i: u64) -> [u8; 4] {
    (i << 32).div_ceil(27).min(u64::from(u32::MAX)).try_into().map(u32::to_le_bytes).unwrap()
}

#[test]
fn fuzzer_bytes_decode_as_the_derived_enum_did() {
    use arbitrary::{Arbitrary, Unstructured};
    assert_eq!(Knob::ALL[26], Knob::Accumulate, "the old enum had 27 variants: a new knob goes last and moves nothing");
    let decode = |bytes: Vec<u8>| Mutation::arbitrary(&mut Unstructured::new(&bytes)).unwrap();
    // Variant 0, `optimizer.lr`, then an f64 from 8 little-endian bytes.
    assert_eq!(decode([variant(0).to_vec(), 2.5f64.to_le_bytes().to_vec()].concat()), Mutation::new(Knob::Lr, 2.5));
    // Variant 2, `data.scale`: `Option<u16>` (a byte, odd: some; then 2 bytes), then the factor.
    assert_eq!(decode([variant(2).to_vec(), vec![1, 3, 0], 4.0f64.to_le_bytes().to_vec()].concat()), Mutation::new(Knob::InputScale, Factor { feature: Some(3), value: 4.0 }));
    // Variant 7, `train.epochs`: a u32.
    assert_eq!(decode([variant(7).to_vec(), 40u32.to_le_bytes().to_vec()].concat()), Mutation::new(Knob::Epochs, 40u32));
    // Variant 11, `optimizer.clip_grad_norm`: an even byte is none.
    assert_eq!(decode([variant(11).to_vec(), vec![0]].concat()), Mutation::new(Knob::ClipNorm, None));
    // Variant 26, the last: `train.accumulate`.
    assert_eq!(decode([variant(26).to_vec(), 3u32.to_le_bytes().to_vec()].concat()), Mutation::new(Knob::Accumulate, 3u32));
    // The largest u32 still picks the 27th: the knobs added since are not named by bytes.
    assert_eq!(decode([u32::MAX.to_le_bytes().to_vec(), 3u32.to_le_bytes().to_vec()].concat()), Mutation::new(Knob::Accumulate, 3u32));
}

#[test]
fn a_constant_is_shown_saved_and_normalized_by_its_own_key() {
    use crate::scenario::{intern, ConstAt, Constant};
    let eps = |layer: Option<u16>, value: f64| Mutation::new(Knob::Const, Constant { at: ConstAt { layer, within: &[], name: intern("eps") }, value, scale: Scale::Log });
    assert_eq!(eps(Some(2), 1e-30).to_string(), "model.layers.2.consts.eps = 1e-30");
    assert_eq!(eps(None, 0.5).to_string(), "loss.consts.eps = 0.5");
    let text = serde_json::to_string(&eps(Some(2), 0.25)).unwrap();
    assert_eq!(text, r#"{"knob":"consts","layer":2,"name":"eps","scale":"log","value":0.25}"#);
    assert_eq!(serde_json::from_str::<Mutation>(&text).unwrap(), eps(Some(2), 0.25));
    assert!(serde_json::from_str::<Mutation>(r#"{"knob":"consts","value":1.0}"#).unwrap_err().to_string().contains("missing field `name`"));
    // Two constants are two settings; the same one set twice keeps its last value.
    assert_eq!(normalize(&[eps(Some(2), 1.0), eps(None, 2.0), eps(Some(2), 3.0)]), [eps(None, 2.0), eps(Some(2), 3.0)]);
    assert_eq!(eps(Some(2), 1e-30).numeric(), Some((1e-30, Scale::Log)));
    // One inside a residual block (layer 1's `layers.0`, then that block's `layers.2`) is saved
    // with its path, read back, and is another setting than layer 1's own.
    let inner = |value: f64| Mutation::new(Knob::Const, Constant { at: ConstAt { layer: Some(1), within: &[0, 2], name: intern("eps") }, value, scale: Scale::Log });
    assert_eq!(inner(0.5).to_string(), "model.layers.1.layers.0.layers.2.consts.eps = 0.5");
    let text = serde_json::to_string(&inner(0.5)).unwrap();
    assert_eq!(text, r#"{"knob":"consts","layer":1,"within":[0,2],"name":"eps","scale":"log","value":0.5}"#);
    assert_eq!(serde_json::from_str::<Mutation>(&text).unwrap(), inner(0.5));
    assert_eq!(normalize(&[inner(1.0), eps(Some(1), 2.0), inner(3.0)]), [eps(Some(1), 2.0), inner(3.0)]);
    assert!(serde_json::from_str::<Mutation>(r#"{"knob":"consts","within":[0],"name":"eps","value":1.0}"#).unwrap_err().to_string().contains("`within` without `layer`"));
}
