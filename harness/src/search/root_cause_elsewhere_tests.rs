//! Tests of `root_cause` from a base that already fails: a flip that keeps the base's
//! mechanism is the base's, a flip elsewhere groups by its new mechanism (over every op), and
//! one whose trigger sets a divergence's or a setting's driver is that driver's.

use super::*;

#[test]
fn a_failing_bases_flips_elsewhere_group_by_their_new_mechanism() {
    // diagnosis/loss_backward_overflow: the base's MSE overflows f32. A flip elsewhere needs one
    // knob to take the loss under f32's range and another to fail anew (Adam's second moment
    // overflowing): which pair is no part of the mechanism. A flip that keeps the base's
    // mechanism is the base's; a divergence keys by its driver and an eps by its setting.
    let loss = at(Phase::Loss, "loss", Kind::PosInf);
    let state = at(Phase::Update, "optim.layers.0.linear.weight.exp_avg_sq", Kind::PosInf);
    let adam = || Mutation::new(Knob::Optimizer, crate::scenario::OptimizerKind::Adam);
    let over = || Some(cause(Rule::Overflow, "loss (mse)"));
    let over_state = || Some(cause(Rule::Overflow, "adam state `optim.layers.0.linear.weight.exp_avg_sq`"));
    let log0 = || Some(cause(Rule::LogOfZero, "loss (bce_torch)"));
    let chain = Cause { chain: Some(crate::run::cause::Chain { trigger: "lr 1".into(), grew: "weights".into(), per_step: 10.0, diverged_at: 2, then: None }), ..cause(Rule::Divergence, "divergence") };
    let elsewhere = vec![
        finding(
            "state",
            state,
            "f32",
            vec![
                (vec![Mutation::new(Knob::TargetScale, 0.34), adam()], 7, over_state()),
                (vec![Mutation::new(Knob::Accumulate, 3u32), adam()], 3, over_state()),
                (vec![Mutation::new(Knob::Epochs, 4u32), adam()], 2, over_state()),
            ],
        ),
        // The same overflow with f16 storage as well joins the full-precision one.
        finding(
            "state16",
            at(Phase::Update, "optim.layers.0.linear.weight.exp_avg_sq", Kind::PosInf),
            "f16",
            vec![(vec![Mutation::new(Knob::TargetScale, 0.34), adam(), Mutation::new(Knob::Dtype, DTypeName::F16)], 1, over_state())],
        ),
        finding("log16", at(Phase::Loss, "loss", Kind::Nan), "f16", vec![(vec![Mutation::new(Knob::Dtype, DTypeName::F16)], 4, log0())]),
        finding("logamp", at(Phase::Loss, "loss", Kind::Nan), "amp_f16", vec![(vec![Mutation::new(Knob::Precision, Precision::AmpF16)], 3, log0())]),
        finding(
            "eps",
            at(Phase::Loss, "loss", Kind::Nan),
            "f16",
            vec![(vec![Mutation::new(Knob::Dtype, DTypeName::F16), Mutation::new(Knob::InputStd, 9.0)], 2, Some(cause(Rule::EpsRoundsToZero, "loss (bce_torch)")))],
        ),
        finding("div", at(Phase::Forward, "layers.0.linear.output", Kind::PosInf), "f32", vec![(vec![Mutation::new(Knob::Lr, 1.0), Mutation::new(Knob::TargetScale, 0.3)], 1, Some(chain))]),
    ];
    // From a finite base, the three knob pairs of the state's overflow are three root causes.
    let finite = group(&elsewhere);
    assert_eq!(finite.iter().filter(|g| g.mechanism.op == "optimizer state").count(), 3);
    let mut findings = vec![finding("base", loss.clone(), "f32", vec![(vec![], 100, over())]), finding("base16", loss, "f16", vec![(vec![Mutation::new(Knob::Dtype, DTypeName::F16)], 5, over())])];
    findings.extend(elsewhere);
    let groups = group(&findings);
    let summary: Vec<(Vec<&str>, &str, PrecisionClass, usize)> = groups.iter().map(|g| (knobs(g), g.mechanism.op.as_str(), g.mechanism.precision, g.count)).collect();
    assert_eq!(
        summary,
        [
            (vec![], "loss", PrecisionClass::Full, 105),
            // Grouped over every op, each names its one op: the optimizer state, the loss.
            (vec![ELSEWHERE], "optimizer state", PrecisionClass::Full, 13),
            // Its log of 0 in f16 storage and under autocast is one (the wider class's).
            (vec![ELSEWHERE], "loss", PrecisionClass::LowPrecision, 7),
            (vec!["loss.epsilon"], "loss", PrecisionClass::LowPrecision, 2),
            (vec!["optimizer.lr"], "divergence", PrecisionClass::Full, 1),
        ]
    );
    assert_eq!((groups[1].triggers.len(), groups[1].dtypes.len()), (4, 2));
    assert_eq!(groups[1].mechanism.describe(), "overflow in optimizer state, full precision, by knobs that move it away from the failing base");
    // Shards merged, in any order, group alike (whether the base fails is in the findings).
    let mut reversed = findings.clone();
    reversed.reverse();
    assert_eq!(group(&merge(reversed)).iter().map(|g| (g.signature.clone(), g.count)).collect::<Vec<_>>(), groups.iter().map(|g| (g.signature.clone(), g.count)).collect::<Vec<_>>());
}

#[test]
fn a_failing_bases_flips_elsewhere_join_a_driver_they_set_and_group_over_ops() {
    // real/pt1381_batch_norm_single_row (sites and triggers of a 10 s hunt): the base's single-row
    // batch makes batch norm's running variance 0/0. A divergence by the learning rate is one
    // root cause; an overflow whose trigger sets that learning rate too is that divergence's
    // (before, it was a group of its own). The other overflows, each needing its own knobs to
    // move away from the base, are one overflow over every op, by precision class: f16 storage
    // (loss, an rmsprop momentum buffer) with autocast (a linear) as the wider class's.
    let norm = at(Phase::Validation, "validation.layers.1.batch_norm.output", Kind::Nan);
    let m = |k: Knob, v: f64| Mutation::new(k, v);
    let (f16, amp) = (|| Mutation::new(Knob::Dtype, DTypeName::F16), || Mutation::new(Knob::Precision, Precision::AmpF16));
    let over = |op: &str| Some(cause(Rule::Overflow, op));
    let chain = Cause { chain: Some(crate::run::cause::Chain { trigger: "lr 3.2".into(), grew: "loss".into(), per_step: 40.0, diverged_at: 3, then: None }), ..cause(Rule::Divergence, "divergence") };
    let findings = vec![
        finding("base", norm.clone(), "f32", vec![(vec![], 491, Some(cause(Rule::DivisionByZero, "layers.1.batch_norm")))]),
        finding("base16", norm, "f16", vec![(vec![f16()], 16, Some(cause(Rule::DivisionByZero, "layers.1.batch_norm")))]),
        finding(
            "div",
            at(Phase::Loss, "loss", Kind::PosInf),
            "f32",
            vec![(vec![Mutation::new(Knob::BatchSize, 2u32), m(Knob::InputMean, 4.0), m(Knob::Lr, 3.2), Mutation::new(Knob::Epochs, 3u32)], 4, Some(chain))],
        ),
        finding(
            "grad",
            at(Phase::Backward, "layers.3.linear.weight.grad", Kind::PosInf),
            "amp_f16",
            vec![(vec![m(Knob::InputMean, 40.0), m(Knob::Lr, 2.0), amp()], 4, over("layers.3.linear (backward)"))],
        ),
        finding("loss16", at(Phase::Loss, "loss", Kind::PosInf), "f16", vec![(vec![m(Knob::TargetScale, 300.0), f16()], 3, over("loss (mse)"))]),
        finding(
            "momentum",
            at(Phase::Update, "optim.layers.0.linear.weight.momentum_buffer", Kind::NegInf),
            "f16",
            vec![(
                vec![Mutation::new(Knob::Optimizer, crate::scenario::OptimizerKind::Rmsprop), m(Knob::Momentum, 0.9), f16()],
                1,
                over("rmsprop state `optim.layers.0.linear.weight.momentum_buffer`"),
            )],
        ),
        finding(
            "linear",
            at(Phase::Validation, "validation.layers.3.linear.output", Kind::NegInf),
            "amp_f16",
            vec![(vec![m(Knob::TargetScale, 90.0), Mutation::new(Knob::BatchSize, 2u32), amp()], 1, over("layers.3.linear"))],
        ),
    ];
    let groups = group(&findings);
    let summary: Vec<(Vec<&str>, &str, PrecisionClass, usize)> = groups.iter().map(|g| (knobs(g), g.mechanism.op.as_str(), g.mechanism.precision, g.count)).collect();
    assert_eq!(
        summary,
        [(vec![], "batch_norm", PrecisionClass::Full, 491 + 16), (vec!["optimizer.lr"], "divergence", PrecisionClass::Full, 4 + 4), (vec![ELSEWHERE], ANY_OP, PrecisionClass::LowPrecision, 3 + 1 + 1),]
    );
    assert_eq!(groups[1].trigger.len(), 4, "the divergence's own trigger is its face, not the overflow that joined it");
    let over_ops = &groups[2];
    assert_eq!(over_ops.mechanism.describe(), "overflow in any op, low-precision storage, by knobs that move it away from the failing base");
    assert_eq!((over_ops.sites.len(), over_ops.dtypes.len()), (3, 2), "its sites name the ops: {:?}", over_ops.sites);
    assert_eq!(over_ops.trigger.len(), 2, "its face is its nearest member: the loss's two knobs");
    // Shards merged in any order group alike, and a corpus knows its own root causes.
    let mut reversed = findings.clone();
    reversed.reverse();
    assert_eq!(group(&merge(reversed)).iter().map(|g| (g.signature.clone(), g.count)).collect::<Vec<_>>(), groups.iter().map(|g| (g.signature.clone(), g.count)).collect::<Vec<_>>());
    assert!(group_known(&findings, &findings).iter().all(|g| g.known));
}
