//! Tests of `root_cause` for one op's computation in one dtype reached with and without autocast
//! (`root_cause/mechanism/family.rs`): 16-bit storage and autocast for an op autocast computes in
//! the 16-bit dtype, full precision and autocast for one it computes in f32.

use super::*;
use crate::ops::Autocast;
use crate::run::verdict::{Class, Loss, StepCheck, Verdict};
use crate::scenario::{Layer, Part, Reduction};
use mechanism::family::{F32_UNDER_AUTOCAST, LOW_UNDER_AUTOCAST};

/// The verdict `precision/overflow`.
fn overflowed() -> Option<Verdict> {
    let step_f64 = StepCheck { finite: Some(true), detail: "by hand".into() };
    Some(Verdict { class: Class::Precision, precision: Some(Loss::Overflow), op: "by hand".into(), reason: "by hand".into(), op_f64: None, step_f64 })
}

/// One site with one trigger, diagnosed `c`, with the verdict `precision/overflow`.
fn site(sig: &str, (tensor, phase): (&str, Phase), dtype: &str, muts: Vec<Mutation>, c: Cause) -> Finding {
    let mut f = finding(sig, at(phase, tensor, Kind::PosInf), dtype, vec![(muts, 2, Some(c))]);
    f.triggers[0].verdict = overflowed();
    f
}

#[test]
fn the_ops_autocast_computes_in_16_bits_or_in_f32_are_the_registrys() {
    // Every part of each op kind listed as 16-bit under autocast is on the lower-precision list.
    let parts = [Part::Whole, Part::Sum, Part::Scores, Part::Probs, Part::Mix];
    let layers = [
        "type = \"linear\"\nout = 2",
        "type = \"conv1d\"\nchannels = 2\nkernel = 3",
        "type = \"conv2d\"\nchannels = 2\nkernel = 3",
        "type = \"rnn\"\nhidden = 2",
        "type = \"lstm\"\nhidden = 2",
        "type = \"gru\"\nhidden = 2",
    ];
    let mut kinds = Vec::new();
    for text in layers {
        let layer: Layer = toml::from_str(text).unwrap();
        assert!(parts.iter().all(|p| layer.op().autocast(*p) == Autocast::Low), "{text}");
        kinds.push(<&str>::from(&layer));
    }
    assert_eq!(kinds, LOW_UNDER_AUTOCAST);
    // The loss is on the f32 list; the update, the state and the data are the f32 master copies.
    let loss = crate::ops::loss::Loss(toml::from_str("kind = \"mse\"").unwrap());
    assert!(parts.iter().all(|p| crate::ops::Op::autocast(&loss, *p) == Autocast::F32));
    assert_eq!(F32_UNDER_AUTOCAST[0], "loss");
}

#[test]
fn a_linear_gradient_overflowing_f16_in_storage_and_under_autocast_is_one_root_cause() {
    // real/pt68425_where_exp_unselected_branch_fix_mask (a 30 s hunt): a summed loss makes
    // `layers.2.linear.weight`'s gradient Σ over 5 rows of input × output gradient = −6.73e4,
    // past f16's 65504, with `train.dtype = f16` and with `train.precision = amp_f16` alike
    // (autocast computes the linear's backward in f16: the same sum). Momentum under autocast
    // overflows the same gradient by other knobs: its own root cause. The loss is f32 under
    // autocast, so a loss overflow in f16 storage and one under autocast are not one; nor is
    // attention, whose softmax autocast computes in f32.
    let sum = || Mutation::new(Knob::LossReduction, Reduction::Sum);
    let (f16, amp) = (|| Mutation::new(Knob::Dtype, DTypeName::F16), || Mutation::new(Knob::Precision, Precision::AmpF16));
    let grad = ("layers.2.linear.weight.grad", Phase::Backward);
    let lin = || cause(Rule::Overflow, "layers.2.linear (backward)");
    let findings = vec![
        site("f16", grad, "f16", vec![f16(), sum()], lin()),
        site("amp", grad, "amp_f16", vec![amp(), sum()], lin()),
        site("momentum", grad, "amp_f16", vec![amp(), Mutation::new(Knob::Momentum, 0.92)], lin()),
        site("loss16", ("loss", Phase::Loss), "f16", vec![f16(), Mutation::new(Knob::Epochs, 3u32)], cause(Rule::Overflow, "loss (mse)")),
        site("loss_amp", ("loss", Phase::Loss), "amp_f16", vec![amp(), Mutation::new(Knob::Epochs, 3u32)], cause(Rule::Overflow, "loss (mse)")),
        site("att16", ("layers.0.attention.scores.output", Phase::Forward), "f16", vec![f16(), Mutation::new(Knob::Lr, 0.3)], cause(Rule::Overflow, "layers.0.attention.scores")),
        site("att_amp", ("layers.0.attention.scores.output", Phase::Forward), "amp_f16", vec![amp(), Mutation::new(Knob::Lr, 0.3)], cause(Rule::Overflow, "layers.0.attention.scores")),
    ];
    let groups = group(&findings);
    let members: BTreeSet<(PrecisionClass, Vec<&str>)> = groups.iter().map(|g| (g.mechanism.precision, g.findings.iter().map(String::as_str).collect())).collect();
    let want: BTreeSet<(PrecisionClass, Vec<&str>)> = [
        (PrecisionClass::LowPrecision, vec!["amp", "f16"]),
        (PrecisionClass::Autocast, vec!["momentum"]),
        (PrecisionClass::LowPrecision, vec!["loss16"]),
        (PrecisionClass::Autocast, vec!["loss_amp"]),
        (PrecisionClass::LowPrecision, vec!["att16"]),
        (PrecisionClass::Autocast, vec!["att_amp"]),
    ]
    .into_iter()
    .collect();
    assert_eq!(members, want);
    let both = groups.iter().find(|g| g.findings.len() == 2).unwrap();
    assert_eq!(both.mechanism.knobs, ["loss.reduction", "train.dtype"]);
    assert_eq!(both.dtypes.iter().map(|t| t.what.as_str()).collect::<BTreeSet<_>>(), BTreeSet::from(["amp_f16", "f16"]));
    // The same in any order and once merged.
    let mut reversed = findings.clone();
    reversed.reverse();
    assert_eq!(group(&crate::search::corpus::merge(reversed)).len(), 6);
}

#[test]
fn the_naive_cross_entropys_loss_scale_collapses_are_one_with_and_without_autocast() {
    // real/optax1754_adam_f16_embedding_fix_f32_state (a 30 s hunt): the naive cross-entropy
    // collapses the loss scale over its own failures, `exp` of a logit past 88.7 in f32 and a
    // probability rounded to 0 in f32, under amp_f16 and with `train.precision = f32` (the loss
    // is f32 under autocast): one setting, one root cause. A linear's overflow is another.
    let naive = crate::scenario::LossKind::NaiveCrossEntropy;
    let kind = || Mutation::new(Knob::LossKind, naive);
    let f32 = || Mutation::new(Knob::Precision, Precision::F32);
    let loss = |rule: Rule| Some(("loss", Phase::Loss, Some(cause(rule, "loss (naive_cross_entropy)"))));
    let mut findings = vec![
        collapse("exp", vec![Mutation::new(Knob::Lr, 0.56), f32(), kind()], loss(Rule::Overflow)),
        collapse("log0", vec![Mutation::new(Knob::InitScale, 5.97), kind()], loss(Rule::LogOfZero)),
        collapse("log0_f32", vec![Mutation::new(Knob::InitScale, 5.97), f32(), kind()], loss(Rule::LogOfZero)),
        collapse("lin", vec![Mutation::new(Knob::Beta2, 0.0)], Some(("layers.1.linear.output", Phase::Forward, Some(cause(Rule::Overflow, "layers.1.linear"))))),
    ];
    // `train.precision = f32`: full precision, with the scaler still on.
    for i in [0, 2] {
        findings[i].dtype = "f32".into();
    }
    let groups = group(&findings);
    let members: BTreeSet<(&str, PrecisionClass, Vec<&str>)> = groups.iter().map(|g| (g.mechanism.op.as_str(), g.mechanism.precision, g.findings.iter().map(String::as_str).collect())).collect();
    let want: BTreeSet<(&str, PrecisionClass, Vec<&str>)> =
        [("loss (loss.kind = naive_cross_entropy)", PrecisionClass::Full, vec!["exp", "log0", "log0_f32"]), ("linear (overflow)", PrecisionClass::Autocast, vec!["lin"])].into_iter().collect();
    assert_eq!(members, want);
}

/// A loss-scale collapse whose last skipped step hit `tensor`, diagnosed `c`.
fn collapse(sig: &str, muts: Vec<Mutation>, skipped: Option<(&str, Phase, Option<Cause>)>) -> Finding {
    let skipped = skipped.map(|(tensor, phase, c)| Box::new(crate::run::Skipped { location: at(phase, tensor, Kind::PosInf), cause: c }));
    let c = Cause { skipped, ..cause(Rule::LossScaleCollapse, "grad scaler") };
    finding(sig, at(Phase::Update, "loss_scale", Kind::ScaleCollapse), "amp_f16", vec![(muts, 2, Some(c))])
}
