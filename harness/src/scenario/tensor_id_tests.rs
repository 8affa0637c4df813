//! Tests of [`TensorId`]'s names: every variant and every name today's runs write parse back
//! to the same text and the same id.

use super::*;

/// `name` parses, displays as itself, and its id survives a JSON round trip.
fn round_trips(name: &str) -> TensorId {
    let id = TensorId::from_name(name);
    assert_eq!(id.to_string(), name, "{id:?}");
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, serde_json::to_string(name).unwrap());
    assert_eq!(serde_json::from_str::<TensorId>(&json).unwrap(), id);
    id
}

#[test]
fn every_variant_displays_its_name_and_parses_back() {
    let node = "layers.2.residual.layers.1.attention.probs";
    let param = "layers.2.residual.layers.1.attention.q.weight";
    let cases = [
        (TensorId::Data(DataSplit::Train, DataPart::Inputs), "data.train.inputs"),
        (TensorId::Data(DataSplit::Validation, DataPart::Targets), "data.validation.targets"),
        (TensorId::Output(node.into()), "layers.2.residual.layers.1.attention.probs.output"),
        (TensorId::OutputGrad(node.into()), "layers.2.residual.layers.1.attention.probs.output.grad"),
        (TensorId::Loss, "loss"),
        (TensorId::Param(param.into()), param),
        (TensorId::ParamGrad(param.into()), "layers.2.residual.layers.1.attention.q.weight.grad"),
        (TensorId::State { param: "layers.0.linear.weight".into(), state: OptimState::ExpAvgSq }, "optim.layers.0.linear.weight.exp_avg_sq"),
        (TensorId::State { param: "layers.0.linear.bias".into(), state: OptimState::ExpAvg }, "optim.layers.0.linear.bias.exp_avg"),
        (TensorId::State { param: "layers.0.rnn.weight_hh".into(), state: OptimState::MomentumBuffer }, "optim.layers.0.rnn.weight_hh.momentum_buffer"),
        (TensorId::State { param: "layers.0.linear.weight".into(), state: OptimState::SquareAvg }, "optim.layers.0.linear.weight.square_avg"),
        (TensorId::LossScale, "loss_scale"),
        (TensorId::Parameters, "parameters"),
        (TensorId::Loss.validation(), "validation.loss"),
        (TensorId::Output("layers.1.batch_norm".into()).validation(), "validation.layers.1.batch_norm.output"),
        (TensorId::Named("h1".into()), "h1"),
        (TensorId::Named("blocks.0.attn.scores".into()).validation(), "validation.blocks.0.attn.scores"),
        (TensorId::default(), ""),
    ];
    for (id, name) in cases {
        assert_eq!(round_trips(name), id, "{name}");
    }
}

#[test]
fn names_in_todays_outcomes_and_findings_parse_to_what_they_name() {
    // Every `tensor` in the outcome JSON of the bundled scenarios and in findings.jsonl files
    // written by the binary before the ids were typed (commit 842ea6c).
    let seen = [
        ("data.train.inputs", TensorId::Data(DataSplit::Train, DataPart::Inputs)),
        ("data.validation.inputs", TensorId::Data(DataSplit::Validation, DataPart::Inputs)),
        ("layers.0.attention.probs.output", TensorId::Output("layers.0.attention.probs".into())),
        ("layers.0.embedding.weight", TensorId::Param("layers.0.embedding.weight".into())),
        ("layers.0.linear.output", TensorId::Output("layers.0.linear".into())),
        ("layers.0.linear.output.grad", TensorId::OutputGrad("layers.0.linear".into())),
        ("layers.0.linear.weight", TensorId::Param("layers.0.linear.weight".into())),
        ("layers.0.linear.weight.grad", TensorId::ParamGrad("layers.0.linear.weight".into())),
        ("layers.0.log.output", TensorId::Output("layers.0.log".into())),
        ("layers.0.residual.layers.4.linear.output", TensorId::Output("layers.0.residual.layers.4.linear".into())),
        ("layers.0.rnn.weight_ih", TensorId::Param("layers.0.rnn.weight_ih".into())),
        ("layers.1.exp.output", TensorId::Output("layers.1.exp".into())),
        ("layers.1.lstm.output", TensorId::Output("layers.1.lstm".into())),
        ("layers.2.linear.output.grad", TensorId::OutputGrad("layers.2.linear".into())),
        ("loss", TensorId::Loss),
        ("loss_scale", TensorId::LossScale),
        ("optim.layers.0.linear.weight.exp_avg_sq", TensorId::State { param: "layers.0.linear.weight".into(), state: OptimState::ExpAvgSq }),
        ("validation.layers.1.batch_norm.output", TensorId::Output("layers.1.batch_norm".into()).validation()),
    ];
    for (name, id) in seen {
        assert_eq!(round_trips(name), id, "{name}");
    }
}

#[test]
fn every_tensor_of_every_bundled_scenario_round_trips() {
    // The trace's columns are the plan's node names; every id the watch can report is built
    // from them and the parameters' names. Each must parse back to itself.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut files = vec![root.clone()];
    let (mut scenarios, mut ids) = (0, 0);
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()).filter(|q| !q.ends_with("fuzz")));
            continue;
        }
        if p.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let Ok(s) = crate::scenario::load(&p) else { continue };
        let Some(plan) = crate::scenario::input_shape(&s.data).and_then(|i| crate::scenario::plan(&s.model, i).ok()) else { continue };
        scenarios += 1;
        for id in TensorId::all_of(&plan, true) {
            assert_eq!(TensorId::from_name(&id.to_string()), id, "{}", p.display());
            ids += 1;
        }
    }
    // 69 bundled scenarios have a trace; some of them are code models or fail validation on purpose.
    assert!(scenarios >= 60 && ids > 1000, "{scenarios} scenarios, {ids} ids");
}

#[test]
fn any_text_parses_back_to_itself() {
    // Names at the edges of the scheme: a prefix or suffix alone, a state that is not one, an
    // output named like a parameter's gradient, a code model's names.
    for name in [
        "",
        ".",
        "data.",
        "data.train",
        "data.test.inputs",
        "data.train.inputs.output",
        "optim.",
        "optim..exp_avg",
        "optim.w.momentum",
        "optim.w.grad",
        ".output",
        ".grad",
        "output",
        "validation.",
        "validation.validation.loss",
        "h1.output.grad.grad",
        "w.grad",
        "blocks.0.attn",
    ] {
        round_trips(name);
    }
    assert_eq!(TensorId::from_name("optim.w.momentum"), TensorId::Named("optim.w.momentum".into()));
    assert_eq!(TensorId::from_name("w.grad"), TensorId::ParamGrad("w".into()));
}

#[test]
fn every_optimizer_state_is_one_the_watch_lists() {
    // The list of `[expect]`'s names holds each state of each parameter once.
    let plan = crate::scenario::plan(&crate::scenario::seed("s000_ex1_bce_mlp").model, crate::scenario::input_shape(&crate::scenario::seed("s000_ex1_bce_mlp").data).unwrap()).unwrap();
    let all = TensorId::all_of(&plan, false);
    for &state in OptimState::VARIANTS {
        assert_eq!(all.iter().filter(|t| matches!(t, TensorId::State { state: s, .. } if *s == state)).count(), plan.params.len());
    }
    assert!(OptimState::ExpAvgSq.squared() && OptimState::SquareAvg.squared() && !OptimState::ExpAvg.squared() && !OptimState::MomentumBuffer.squared());
}
