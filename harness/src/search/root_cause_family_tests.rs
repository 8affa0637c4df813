//! Tests of `root_cause` for keys a person names once (`root_cause/mechanism/family.rs`): a divergence
//! by its driver in any dtype, a setting in any tensor, `log` of 0 and of a negative number in
//! one op; and a group keyed over every op that names its one op.

use super::*;
use crate::run::verdict::{Class, Loss, StepCheck, Verdict};

/// A verdict of class `class` (and, for precision, what was lost).
fn verdict(class: Class, lost: Option<Loss>) -> Verdict {
    let step_f64 = StepCheck { finite: Some(class != Class::Math), detail: "by hand".into() };
    Verdict { class, precision: lost, op: "by hand".into(), reason: "by hand".into(), op_f64: None, step_f64 }
}

/// One site with one trigger, its diagnosis and its verdict.
fn site(sig: &str, (tensor, phase, kind): (&str, Phase, Kind), dtype: &str, muts: Vec<Mutation>, c: Cause, v: Option<Verdict>) -> Finding {
    let mut f = finding(sig, at(phase, tensor, kind), dtype, vec![(muts, 2, Some(c))]);
    f.triggers[0].verdict = v;
    f
}

type Summary<'a> = Vec<(Option<Rule>, &'a str, Vec<&'a str>, PrecisionClass, Vec<&'a str>)>;

/// Each group's rule, op, knobs, precision class and site signatures, sorted.
fn summary(groups: &[RootCause]) -> Summary<'_> {
    let mut s: Summary = groups.iter().map(|g| (g.mechanism.rule, g.mechanism.op.as_str(), knobs(g), g.mechanism.precision, g.findings.iter().map(String::as_str).collect())).collect();
    s.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    s
}

#[test]
fn a_learning_rate_above_the_stability_bound_is_one_root_cause_in_every_dtype() {
    // diagnosis/low_headroom_f16 (a 30 s hunt): lr 0.1 is 1.8e6 × the stability bound 2/λ of
    // the one linear layer, and the base is finite only because its error is exactly 0. In f16
    // the first step's loss (73984 in f64) overflows; in bf16 it diverges over four epochs. Adam's
    // update and RMSprop's (into its momentum buffer) both divide by √v + eps with eps = 1e-8
    // rounded to 0: the update's eps, whichever tensor showed it.
    let lr_bound = |chain: bool| {
        let c = Cause { chain: None, ..cause(Rule::LrAboveStabilityBound, "sgd on mse") };
        match chain {
            false => c,
            true => Cause { chain: Some(crate::run::cause::Chain { trigger: "lr 0.1".into(), grew: "weights".into(), per_step: 1.81e6, diverged_at: 2, then: None }), ..c },
        }
    };
    let precision = |l: Loss| Some(verdict(Class::Precision, Some(l)));
    let (f16, bf16) = (|| Mutation::new(Knob::Dtype, DTypeName::F16), || Mutation::new(Knob::Dtype, DTypeName::Bf16));
    let findings = vec![
        site("f16", ("loss", Phase::Loss, Kind::PosInf), "f16", vec![Mutation::new(Knob::TargetScale, 0.991)], lr_bound(false), precision(Loss::Overflow)),
        site("f16b", ("layers.0.linear.output", Phase::Forward, Kind::NegInf), "f16", vec![Mutation::new(Knob::InitScale, 0.991)], lr_bound(false), precision(Loss::Overflow)),
        site("bf16", ("loss", Phase::Loss, Kind::PosInf), "bf16", vec![bf16(), Mutation::new(Knob::Epochs, 4u32)], lr_bound(true), Some(verdict(Class::Math, None))),
        site(
            "adam",
            ("layers.0.linear.weight", Phase::Update, Kind::Nan),
            "f16",
            vec![Mutation::new(Knob::Optimizer, crate::scenario::OptimizerKind::Adam)],
            cause(Rule::EpsRoundsToZero, "adam update of `layers.0.linear.weight`"),
            precision(Loss::EpsUnderflow),
        ),
        site(
            "rms",
            ("optim.layers.0.linear.weight.momentum_buffer", Phase::Update, Kind::Nan),
            "f16",
            vec![Mutation::new(Knob::Optimizer, crate::scenario::OptimizerKind::Rmsprop), Mutation::new(Knob::Momentum, 0.001)],
            cause(Rule::EpsRoundsToZero, "rmsprop update of `layers.0.linear.weight`"),
            precision(Loss::EpsUnderflow),
        ),
        // An eps of a norm layer rounding to 0 is that layer's own eps: not the optimizer's.
        site("norm", ("layers.1.layer_norm.output", Phase::Forward, Kind::Nan), "f16", vec![f16()], cause(Rule::EpsRoundsToZero, "layers.1.layer_norm"), precision(Loss::EpsUnderflow)),
        // Values too large for f16 in the data, and in the linear layer: two root causes.
        site("data", ("data.train.inputs", Phase::Data, Kind::PosInf), "f16", vec![Mutation::new(Knob::InputScale, 21.9)], cause(Rule::Overflow, "conversion to f16"), precision(Loss::Overflow)),
        site("lin", ("layers.0.linear.output", Phase::Forward, Kind::PosInf), "f16", vec![Mutation::new(Knob::InitScale, 2.19)], cause(Rule::Overflow, "layers.0.linear"), precision(Loss::Overflow)),
    ];
    let groups = group(&findings);
    use PrecisionClass::{Any, LowPrecision};
    let want: Summary = vec![
        (Some(Rule::EpsRoundsToZero), "layer_norm", vec!["train.dtype"], LowPrecision, vec!["norm"]),
        (Some(Rule::EpsRoundsToZero), "update", vec!["optimizer.eps"], LowPrecision, vec!["adam", "rms"]),
        (Some(Rule::LrAboveStabilityBound), "loss", vec!["optimizer.lr"], Any, vec!["bf16", "f16", "f16b"]),
        (Some(Rule::Overflow), "data", vec!["magnitude"], LowPrecision, vec!["data"]),
        (Some(Rule::Overflow), "linear", vec!["magnitude"], LowPrecision, vec!["lin"]),
    ];
    assert_eq!(summary(&groups), want);
    // The face of the divergence is its widest class's member: the one that fails in f64 too.
    let lr = groups.iter().find(|g| g.mechanism.rule == Some(Rule::LrAboveStabilityBound)).unwrap();
    assert_eq!((lr.count, lr.dtypes.len(), lr.trigger.len()), (6, 2, 2), "{lr:?}");
    // Shards merged in any order group alike; a corpus that knows one member of a class knows it.
    let mut reversed = findings.clone();
    reversed.reverse();
    assert_eq!(summary(&group(&merge(reversed))), want);
    let known = group_known(&findings, &findings[..1]);
    assert!(known.iter().find(|g| g.mechanism.rule == Some(Rule::LrAboveStabilityBound)).unwrap().known);
    let known = group_known(&findings, &findings[4..5]);
    assert_eq!(known.iter().filter(|g| g.known).map(|g| g.findings.clone()).collect::<Vec<_>>(), [vec!["adam".to_string(), "rms".to_string()]]);
}

#[test]
fn a_failing_bases_log_of_0_and_of_a_negative_number_are_one_and_a_group_of_one_op_names_it() {
    // diagnosis/loss_backward_overflow (a 30 s hunt): BCE's gradient −1/p at p = 1e-39 overflows
    // f32. Away from it: after one huge step p leaves [0, 1] (log(1 − p) of 0 or of a negative
    // number, in f64 too: one mechanism); f16 rounds p to 0 (log 0: a precision loss, another);
    // the huge finite gradient overflows Adam's second moment in f32 and, under autocast, f16 in
    // the linear's backward (one overflow over two ops); bce_torch's 1e-12 rounds to 0 in f16.
    let math = || Some(verdict(Class::Math, None));
    let lost = |l: Loss| Some(verdict(Class::Precision, Some(l)));
    let m = |k: Knob, v: f64| Mutation::new(k, v);
    let bce_torch = || Mutation::new(Knob::LossKind, crate::scenario::LossKind::BceTorch);
    let findings = vec![
        site("base", ("layers.0.linear.output.grad", Phase::Backward, Kind::NegInf), "f32", vec![], cause(Rule::Overflow, "loss (bce) (backward)"), lost(Loss::Overflow)),
        site(
            "zero",
            ("loss", Phase::Loss, Kind::PosInf),
            "f32",
            vec![m(Knob::TargetScale, 0.34), m(Knob::ClipNorm, 10.0), Mutation::new(Knob::Epochs, 2u32)],
            cause(Rule::LogOfZero, "loss (bce)"),
            math(),
        ),
        site("neg", ("loss", Phase::Loss, Kind::Nan), "f32", vec![m(Knob::TargetScale, 0.34), Mutation::new(Knob::Epochs, 2u32)], cause(Rule::OutsideDomain, "loss (bce)"), math()),
        site("zero16", ("loss", Phase::Loss, Kind::PosInf), "f16", vec![Mutation::new(Knob::Dtype, DTypeName::F16)], cause(Rule::LogOfZero, "loss (bce)"), lost(Loss::Underflow)),
        site(
            "state",
            ("optim.layers.0.linear.bias.exp_avg_sq", Phase::Update, Kind::PosInf),
            "f32",
            vec![m(Knob::TargetScale, 0.34), Mutation::new(Knob::Optimizer, crate::scenario::OptimizerKind::Adam)],
            cause(Rule::Overflow, "adam state `optim.layers.0.linear.bias.exp_avg_sq`"),
            lost(Loss::Overflow),
        ),
        site(
            "amp",
            ("layers.0.linear.weight.grad", Phase::Backward, Kind::Nan),
            "amp_f16",
            vec![Mutation::new(Knob::Precision, Precision::AmpF16), bce_torch()],
            cause(Rule::Overflow, "layers.0.linear (backward)"),
            lost(Loss::Overflow),
        ),
        site(
            "eps",
            ("layers.0.linear.output.grad", Phase::Backward, Kind::NegInf),
            "f16",
            vec![Mutation::new(Knob::Dtype, DTypeName::F16), bce_torch()],
            cause(Rule::EpsRoundsToZero, "loss (bce_torch) (backward)"),
            lost(Loss::EpsUnderflow),
        ),
    ];
    let groups = group(&findings);
    use PrecisionClass::{Any, Full, LowPrecision};
    let want: Summary = vec![
        (Some(Rule::EpsRoundsToZero), "loss", vec!["loss.epsilon"], LowPrecision, vec!["eps"]),
        (Some(Rule::LogOfZero), "loss", vec![ELSEWHERE], LowPrecision, vec!["zero16"]),
        // Which of the two is the class's first: the smaller signature (both judged, any precision).
        (Some(Rule::OutsideDomain), "loss", vec![ELSEWHERE], Any, vec!["neg", "zero"]),
        (Some(Rule::Overflow), ANY_OP, vec![ELSEWHERE], Full, vec!["amp", "state"]),
        (Some(Rule::Overflow), "loss", vec![], Full, vec!["base"]),
    ];
    assert_eq!(summary(&groups), want);
    let log0 = groups.iter().find(|g| g.findings == ["zero16"]).unwrap();
    assert_eq!(log0.mechanism.describe(), "log_of_zero in loss, low-precision storage, verdict precision/underflow, by knobs that move it away from the failing base");
    // Its signature is its one-op key's: `log_of_zero|loss|away from the failing base|low-precision storage|precision/underflow`.
    assert_eq!(log0.signature, Mechanism { op: "loss".into(), ..log0.mechanism.clone() }.signature());
    // A corpus that knew it over every op knows it by its op, and the other way round.
    let mut reversed = findings.clone();
    reversed.reverse();
    assert_eq!(summary(&group(&merge(reversed))), want);
    assert!(group_known(&findings, &findings).iter().all(|g| g.known));
    let known = group_known(&findings, &[findings[0].clone(), findings[1].clone()]);
    assert_eq!(known.iter().filter(|g| g.known).map(|g| g.findings.clone()).collect::<Vec<_>>().len(), 2, "the base and log's domain (known by its log of 0)");
}

#[test]
fn a_setting_the_run_cannot_hold_is_one_root_cause_in_every_dtype_and_the_naive_cross_entropy_is_one() {
    // real/tf_deep_mnist_log_zero_fix_clip (a 30 s hunt): the naive cross-entropy (softmax
    // then log, no max subtracted) is finite only while every logit stays under ln(3.4e38) = 88.7;
    // more epochs, a larger lr, an outlier each push one past it (exp overflows: in f64 too for
    // exp(8.82e3), not for exp(131)), and a probability that rounds to 0 makes log 0 or log's
    // derivative infinite. Adam's eps of 1e-8 rounds to 0 in f16, and one of 7e-46 in f32. A
    // trigger that changes `loss.kind` and overflows a linear is not the naive cross-entropy's.
    let naive = |rule: Rule, back: bool| cause(rule, if back { "loss (naive_cross_entropy) (backward)" } else { "loss (naive_cross_entropy)" });
    let lost = |l: Loss| Some(verdict(Class::Precision, Some(l)));
    let outlier: Mutation = serde_json::from_str(r#"{"knob":"data.inject","what":"outlier","split":"train","value":3.48e-4}"#).unwrap();
    let adam_eps = || cause(Rule::EpsRoundsToZero, "adam update of `layers.0.conv2d.weight`");
    let findings = vec![
        site("epochs", ("loss", Phase::Loss, Kind::Nan), "f32", vec![Mutation::new(Knob::Epochs, 148u32)], naive(Rule::Overflow, false), lost(Loss::Overflow)),
        site("lr", ("loss", Phase::Loss, Kind::Nan), "f32", vec![Mutation::new(Knob::Lr, 0.051)], naive(Rule::Overflow, false), lost(Loss::Overflow)),
        site("outlier", ("loss", Phase::Loss, Kind::Nan), "f32", vec![outlier], naive(Rule::Overflow, false), Some(verdict(Class::Math, None))),
        site("zero", ("loss", Phase::Loss, Kind::PosInf), "f32", vec![Mutation::new(Knob::InitScale, 3.0)], naive(Rule::LogOfZero, false), lost(Loss::Underflow)),
        site("back", ("layers.10.linear.output.grad", Phase::Backward, Kind::Nan), "f32", vec![Mutation::new(Knob::Lr, 0.1)], naive(Rule::DerivativeAtZero, true), lost(Loss::Underflow)),
        site("eps16", ("layers.0.conv2d.weight", Phase::Update, Kind::PosInf), "f16", vec![Mutation::new(Knob::Dtype, DTypeName::F16)], adam_eps(), lost(Loss::EpsUnderflow)),
        site("eps32", ("layers.3.conv2d.weight", Phase::Update, Kind::Nan), "f32", vec![Mutation::new(Knob::OptimizerEps, 7e-46)], adam_eps(), lost(Loss::EpsUnderflow)),
        site(
            "kind",
            ("layers.7.linear.output", Phase::Forward, Kind::PosInf),
            "f32",
            vec![Mutation::new(Knob::LossKind, crate::scenario::LossKind::CrossEntropy), Mutation::new(Knob::Lr, 5.0)],
            cause(Rule::Overflow, "layers.7.linear"),
            lost(Loss::Overflow),
        ),
    ];
    let groups = group(&findings);
    let members: BTreeSet<(Vec<&str>, Vec<&str>)> = groups.iter().map(|g| (knobs(g), g.findings.iter().map(String::as_str).collect())).collect();
    let want: BTreeSet<(Vec<&str>, Vec<&str>)> = [
        (vec!["loss.kind = naive_cross_entropy"], vec!["back", "epochs", "lr", "outlier", "zero"]),
        (vec!["optimizer.eps"], vec!["eps16", "eps32"]),
        (vec!["loss.kind", "optimizer.lr"], vec!["kind"]),
    ]
    .into_iter()
    .collect();
    assert_eq!(members, want);
    // Each under its widest precision class's key: the naive cross-entropy's that fails in f64
    // too, the eps's of full precision.
    let of = |sig: &str| groups.iter().find(|g| g.findings.iter().any(|f| f == sig)).unwrap();
    assert_eq!((of("lr").mechanism.precision, of("lr").mechanism.rule), (PrecisionClass::Any, Some(Rule::Overflow)));
    assert_eq!(of("eps16").mechanism.precision, PrecisionClass::Full);
    assert_eq!(of("lr").mechanism.describe(), "overflow in loss, any precision, verdict math, by loss.kind = naive_cross_entropy");
}

/// A loss-scale collapse at `loss_scale` whose last skipped step hit `tensor` (diagnosed `skip`, if
/// a rule explains it), reached by `muts`; `skip` of `None` and no tensor: a corpus saved before.
fn collapse(sig: &str, muts: Vec<Mutation>, skipped: Option<(&str, Phase, Option<Cause>)>) -> Finding {
    let skipped = skipped.map(|(tensor, phase, c)| Box::new(crate::run::Skipped { location: at(phase, tensor, Kind::PosInf), cause: c }));
    let c = Cause { skipped, ..cause(Rule::LossScaleCollapse, "grad scaler") };
    site(sig, ("loss_scale", Phase::Update, Kind::ScaleCollapse), "amp_f16", muts, c, None)
}

#[test]
fn a_loss_scale_collapse_is_the_overflow_its_skipped_steps_hit_whichever_knob_tipped_it() {
    // real/pt40497_amp_scale_collapse_fix_growth_interval (a 30 s hunt): two outlier rows of 1e5
    // overflow f16 in the first linear under autocast, and growth_interval = 10 grows the scale
    // back between those batches. Nine knobs alone collapse it, each a trigger of one site:
    // five make the same overflow outpace the growth (larger outliers, a longer interval, more
    // rows a step, accumulation, a summed loss); a large lr and beta2 = 0 grow the weights until
    // the attention scores overflow f16 (the loss grows 19 → 54, the weights' norm 42 → 115 over
    // 100 steps: no divergence); padding every position masks whole rows (NaN in the probs);
    // an init scale of 1e7 overflows the linear's weight gradient in the backward. Four
    // mechanisms, one per overflow the scaler could not absorb.
    let m = |k: Knob, v: f64| vec![Mutation::new(k, v)];
    let over = |op: &str| Some(cause(Rule::Overflow, op));
    let lin = || Some(("layers.0.linear.output", Phase::Forward, over("layers.0.linear")));
    let scores = || Some(("layers.2.residual.layers.1.attention.scores.output", Phase::Forward, over("layers.2.residual.layers.1.attention.scores")));
    let masked = Some(("layers.2.residual.layers.1.attention.probs.output", Phase::Forward, Some(cause(Rule::FullyMaskedRow, "layers.2.residual.layers.1.attention.probs"))));
    let findings = vec![
        collapse("mean", m(Knob::InputMean, 4.32), lin()),
        collapse("interval", vec![Mutation::new(Knob::GrowthInterval, 14u64)], lin()),
        collapse("accumulate", vec![Mutation::new(Knob::Accumulate, 2u32)], lin()),
        collapse("sum", vec![Mutation::new(Knob::LossReduction, crate::scenario::Reduction::Sum)], lin()),
        collapse("batch", vec![Mutation::new(Knob::BatchSize, 23u32)], lin()),
        collapse("lr", m(Knob::Lr, 0.379), scores()),
        collapse("beta2", m(Knob::Beta2, 0.0), scores()),
        collapse("padding", m(Knob::PaddingFraction, 1.0), masked),
        collapse("init", m(Knob::LossScaleInit, 1.03e7), Some(("layers.6.linear.weight.grad", Phase::Backward, over("layers.6.linear (backward)")))),
    ];
    let groups = group(&findings);
    let members: BTreeSet<(&str, Vec<&str>)> = groups.iter().map(|g| (g.mechanism.op.as_str(), g.findings.iter().map(String::as_str).collect())).collect();
    let want: BTreeSet<(&str, Vec<&str>)> =
        [("linear (overflow)", vec!["accumulate", "batch", "init", "interval", "mean", "sum"]), ("attention (overflow)", vec!["beta2", "lr"]), ("attention (fully_masked_row)", vec!["padding"])]
            .into_iter()
            .collect();
    assert_eq!(members, want);
    let lin_group = groups.iter().find(|g| g.mechanism.op == "linear (overflow)").unwrap();
    assert_eq!(lin_group.mechanism.describe(), "loss_scale_collapse in linear (overflow), autocast, by knobs that make its skipped steps' overflows outpace the loss scaler");
    assert_eq!(lin_group.triggers.len(), 6, "each trigger a member: {:?}", lin_group.triggers);
    // Python's FNV-1a of `loss_scale_collapse|linear (overflow)|overflows outpacing the loss scaler|autocast`.
    assert_eq!(lin_group.signature, "dc869c38");
    let mut reversed = findings.clone();
    reversed.reverse();
    assert_eq!(group(&merge(reversed)).len(), 3);
    // From a base that collapses itself over the linear's overflow, that overflow's collapses
    // are the base's; the attention's are their own.
    let mut failing = findings.clone();
    failing.push(collapse("base", vec![], lin()));
    let groups = group(&failing);
    let base = groups.iter().find(|g| g.mechanism.op == "linear (overflow)").unwrap();
    assert_eq!((groups.len(), base.mechanism.knobs.len(), base.findings.len()), (3, 0, 7), "{groups:?}");
    // A corpus saved before collapses named their skipped value keys them as then (by the loss
    // scale and their knobs, with main's signatures), and `--known` from it knows the groups
    // holding a collapse it knew so keyed.
    let old = vec![collapse("old", m(Knob::InputMean, 4.32), None), collapse("old2", m(Knob::Lr, 0.2), None)];
    let before: BTreeSet<(String, Vec<String>)> = group(&old).into_iter().map(|g| (g.mechanism.op, g.mechanism.knobs)).collect();
    let then: BTreeSet<(String, Vec<String>)> = [("loss scale", "magnitude"), ("loss scale", "optimizer.lr")].iter().map(|(o, k)| (o.to_string(), vec![k.to_string()])).collect();
    assert_eq!(before, then);
    let known = group_known(&findings, &old);
    let marked: BTreeSet<(&str, bool)> = known.iter().map(|g| (g.mechanism.op.as_str(), g.known)).collect();
    let want: BTreeSet<(&str, bool)> = [("linear (overflow)", true), ("attention (overflow)", true), ("attention (fully_masked_row)", false)].into_iter().collect();
    assert_eq!(marked, want);
}
