//! Validation: every problem is named by its key, on seed 002 ex1 with one value broken at a time.

use super::*;
use crate::scenario::parse_str;

fn base() -> String {
    crate::scenario::seed_text("s002_ex1_linreg_sgd")
}

fn keys(src: &str) -> Vec<String> {
    validate(&parse_str(src, "t").unwrap()).into_iter().map(|p| p.key).collect()
}

/// The keys of the problems of the base with `from` replaced by `to`.
fn broken(from: &str, to: &str) -> Vec<String> {
    let src = base();
    assert!(src.contains(from), "the base has `{from}`");
    keys(&src.replace(from, to))
}

#[test]
fn bundled_base_is_valid() {
    assert!(keys(&base()).is_empty());
}

#[test]
fn impossible_values_are_named() {
    assert_eq!(keys(&base().replace("lr = 0.01", "lr = -0.01")), ["optimizer.lr"]);
    assert_eq!(keys(&base().replace("epochs = 10", "epochs = 10\nbatch_size = 0")), ["train.batch_size"]);
    assert_eq!(keys(&base().replace("device = \"cpu\"", "device = \"tpu\"")), ["train.device"]);
}

#[test]
fn review_found_inputs_are_errors_not_panics() {
    // seq_len = 0 with explicit rows used to divide by zero while inferring the features.
    let seq0 = base().replace("[data]", "[data]\nseq_len = 0");
    assert!(keys(&seq0).contains(&"data.seq_len".to_string()));
    // A bad [search] table used to panic inside proptest during a hunt.
    for bad in ["lr = [0.0, 1.0]", "lr = [1.0, 0.1]", "batch_size = [8, 2]", "decades = 0", "max_mutations = 1000000", "knobs = []"] {
        let src = format!("{}\n[search]\n{bad}\n", base());
        assert!(keys(&src).iter().any(|k| k.starts_with("search.")), "{bad}");
    }
    // An unknown knob name is a located parse error, with the nearest knob suggested.
    let src = format!("{}\n[search]\nknobs = [\"lr\"]\n", base());
    let err = parse_str(&src, "t").unwrap_err().to_string();
    assert!(err.starts_with("t:") && err.contains("unknown variant `lr`"), "{err}");
}

#[test]
fn output_width_must_match_targets() {
    // Seed 000 ex1 as written: Linear(100, 2) + sigmoid against a 1-column BCE target.
    let src = base().replace("{ type = \"linear\", out = 1 }", "{ type = \"linear\", out = 2 }");
    let p = validate(&parse_str(&src, "t").unwrap());
    assert_eq!(p[0].key, "model.layers");
    assert!(p[0].message.contains("outputs 2 column(s) but the targets have 1"), "{}", p[0].message);
}

#[test]
fn every_number_has_a_domain() {
    let layer = "{ type = \"linear\", out = 1 }";
    let cases: [(&str, &str, &str); 9] = [
        (layer, "{ type = \"linear\", out = 1, init = { kind = \"constant\", value = nan } }", "model.layers.0.init.value"),
        (layer, "{ type = \"linear\", out = 1, init = { kind = \"uniform\", bound = inf } }", "model.layers.0.init.bound"),
        (layer, "{ type = \"linear\", out = 1, init = { kind = \"normal\", std = -1.0 } }", "model.layers.0.init.std"),
        (layer, "{ type = \"linear\", out = 1 }, { type = \"pow\", exponent = nan }", "model.layers.1.exponent"),
        ("epochs = 10", "epochs = 10\nstagnation = { rel_tol = nan }", "train.stagnation.rel_tol"),
        ("epochs = 10", "epochs = 10\nstagnation = { grad_norm_floor = -inf }", "train.stagnation.grad_norm_floor"),
        ("epochs = 10", "epochs = 10\nmemory_limit_mb = 9223372036854775807", "train.memory_limit_mb"),
        ("lr = 0.01", "lr = 0.01\neps = inf", "optimizer.eps"),
        ("name = \"s002_ex1_linreg_sgd\"", "name = \"\"", "name"),
    ];
    for (from, to, key) in cases {
        assert_eq!(broken(from, to), [key], "{to}");
    }
}

/// A synthetic-data variant of the base, so input and target distributions can be broken.
fn synthetic(data: &str) -> Vec<String> {
    let src = base();
    let start = src.find("[data]").unwrap();
    let end = src.find("[model]").unwrap();
    keys(&format!("{}[data]\n{data}\n{}", &src[..start], &src[end..]))
}

#[test]
fn data_values_have_domains() {
    let ok = "n = 8\nfeatures = 2\ninputs = { kind = \"normal\" }\ntargets = { kind = \"uniform\" }";
    assert!(synthetic(ok).is_empty(), "{:?}", synthetic(ok));
    let cases = [
        ("inputs = { kind = \"normal\" }", "inputs = { kind = \"normal\", std = inf }", "data.inputs.std"),
        ("inputs = { kind = \"normal\" }", "inputs = { kind = \"normal\", mean = nan }", "data.inputs.mean"),
        ("inputs = { kind = \"normal\" }", "inputs = { kind = \"uniform\", low = -inf }", "data.inputs.low"),
        ("targets = { kind = \"uniform\" }", "targets = { kind = \"normal\", std = -2.0 }", "data.targets.std"),
        ("targets = { kind = \"uniform\" }", "targets = { kind = \"linear\", noise = nan }", "data.targets.noise"),
        ("features = 2", "features = 2\nscale_groups = [{ first = 1, factor = nan }]", "data.scale_groups.0.factor"),
        ("features = 2", "features = 2\nscale = [1.0, inf]", "data.scale"),
        ("targets = { kind = \"uniform\" }", "targets = { kind = \"uniform\" }\n[[data.inject]]\nvalue = \"outlier\"\nfraction = 0.1\nmagnitude = nan", "data.inject.0.magnitude"),
        ("targets = { kind = \"uniform\" }", "targets = { kind = \"uniform\" }\n[[data.preprocess]]\nop = \"reciprocal\"\nguard = nan", "data.preprocess.0.guard"),
        ("targets = { kind = \"uniform\" }", "targets = { kind = \"uniform\" }\n[[data.preprocess]]\nop = \"log\"\nepsilon = -1.0", "data.preprocess.0.epsilon"),
        ("targets = { kind = \"uniform\" }", "targets = { kind = \"uniform\" }\n[[data.preprocess]]\nop = \"clip\"\nmin = 1.0\nmax = 0.0", "data.preprocess.0.min"),
        ("targets = { kind = \"uniform\" }", "targets = { kind = \"uniform\" }\n[[data.preprocess]]\nop = \"clip\"\nmin = nan\nmax = 0.0", "data.preprocess.0.min"),
    ];
    for (from, to, key) in cases {
        assert_eq!(synthetic(&ok.replace(from, to)), [key], "{to}");
    }
}

#[test]
fn contradictions_in_data_are_errors() {
    let ok = "n = 8\nfeatures = 2\ninputs = { kind = \"normal\" }\ntargets = { kind = \"uniform\" }";
    let inject = |body: &str| synthetic(&format!("{ok}\n[[data.inject]]\nvalue = \"nan\"\n{body}"));
    assert_eq!(inject("fraction = 0.1\nrows = [1]"), ["data.inject.0"], "rows and fraction together");
    assert_eq!(inject("fraction = 0.1\nsplit = \"validation\""), ["data.inject.0.split"], "no validation split");
    assert!(inject("fraction = 0.1\nsplit = \"validation\"\n[data.validation]\nfraction = 0.25").is_empty());
    // A group far past the features names its range without wrapping around.
    let far = synthetic(&format!("{ok}\nscale_groups = [{{ start = 18446744073709551615, first = 2, factor = 2.0 }}]"));
    assert_eq!(far, ["data.scale_groups.0"]);
    // A separate validation set is drawn like synthetic inputs: explicit rows cannot do that.
    assert_eq!(keys(&base().replace("[train]", "[data.validation]\nn = 3\n\n[train]")), ["data.validation.n"]);
}

#[test]
fn messages_say_what_a_person_can_act_on() {
    let msg = |src: &str| validate(&parse_str(src, "t").unwrap()).into_iter().map(|p| p.message).collect::<Vec<_>>().join("; ");
    let src = base().replace("[data]", "[data]\nscale = [1.0, 2.0, 3.0, 4.0]");
    let m = msg(&src);
    assert!(m.contains("has 4 entries but there are 2 features") && !m.contains("Some("), "{m}");
    let far = base().replace("[data]", "[data]\nscale_groups = [{ start = 18446744073709551615, first = 2, factor = 2.0 }]");
    let m = msg(&far);
    assert!(m.contains("features 18446744073709551615 to 18446744073709551615 are past the last of the 2 features") && !m.contains(".."), "{m}");
    let empty_row = base().replace("rows = [[1.0, 100000.0], [2.0, 200000.0], [3.0, 300000.0]]", "rows = [[], [], []]");
    assert!(msg(&empty_row).contains("row 0 is empty"), "{}", msg(&empty_row));
    let ln = base().replace("{ type = \"linear\", out = 1 }", "{ type = \"layer_norm\", eps = inf }, { type = \"linear\", out = 1 }");
    assert!(msg(&ln).contains("positive finite number, got inf"), "{}", msg(&ln));
}

#[test]
fn expectations_no_run_can_meet_are_rejected() {
    let src = base();
    assert!(src.contains("[expect]"), "the base has an [expect] table");
    let expect_at = src.find("[expect]").unwrap();
    let with_expect = |body: &str| keys(&format!("{}[expect]\noutcome = \"nonfinite\"\n{body}\n", &src[..expect_at]));
    assert!(with_expect("phase = \"loss\"\ntensor = \"loss\"").is_empty());
    assert_eq!(with_expect("phase = \"data\"\ntensor = \"layers.0.linear.weight\""), ["expect.tensor"]);
    assert_eq!(with_expect("phase = \"update\"\nwithin_steps = 0"), ["expect.within_steps"]);
    assert_eq!(with_expect("phase = \"forward\"\ntensor = \"layers.7.relu.output\""), ["expect.tensor"], "no layer 7");
    assert!(with_expect("phase = \"update\"\ntensor = \"layers.0.linear.weight\"").is_empty());
    // A divergence is of the loss (phase loss) or the parameters (phase update).
    let diverges = |body: &str| keys(&format!("{}[expect]\noutcome = \"diverges\"\n{body}\n", &src[..expect_at]));
    assert!(diverges("phase = \"update\"\ntensor = \"parameters\"").is_empty());
    assert!(diverges("phase = \"loss\"").is_empty());
    assert_eq!(diverges("phase = \"loss\"\ntensor = \"parameters\""), ["expect.tensor"]);
    assert_eq!(diverges("tensor = \"layers.0.linear.weight\""), ["expect.tensor"]);
}

#[test]
fn expect_accepts_every_site_a_run_prints() {
    // A bad gradient born in a layer's output is printed as `layers.N.TYPE.output.grad` (phase
    // backward); `[expect] tensor` refused that name. Each bundled scenario below goes non-finite
    // there: its own site, written back as its expectation, validates.
    let src = base();
    let expect_at = src.find("[expect]").unwrap();
    let with_expect = |body: &str| keys(&format!("{}[expect]\noutcome = \"nonfinite\"\n{body}\n", &src[..expect_at]));
    assert!(with_expect("phase = \"backward\"\ntensor = \"layers.0.linear.output.grad\"").is_empty());
    assert!(with_expect("tensor = \"layers.0.linear.output.grad\"").is_empty());
    assert_eq!(with_expect("phase = \"backward\"\ntensor = \"layers.3.linear.output.grad\""), ["expect.tensor"], "no layer 3");
    // Sites that bundled runs print: `run::tests::expect_accepts_the_output_gradient_sites_runs_print`.
}

/// A small transformer scenario in the vocabulary of issue 12, broken one value at a time.
fn transformer(model: &str, data: &str) -> String {
    format!(
        "name = \"t\"\n[data]\nn = 4\nseq_len = 3\n{data}\ntargets = {{ kind = \"next_token\" }}\n\n[model]\nlayers = [\n{model}\n]\n\n[loss]\nkind = \"cross_entropy\"\n[optimizer]\nkind = \"adamw\"\nlr = 1e-3\n[train]\nepochs = 1\n"
    )
}

/// The error of scenario text, as the loader reports it (`t:LINE:COL`).
fn located(src: &str) -> String {
    crate::scenario::from_str(src, "t").unwrap_err().to_string()
}

#[test]
fn sequence_layers_get_precise_errors_at_their_keys() {
    let tokens = "inputs = { kind = \"tokens\", vocab = 5 }";
    let ok = "{ type = \"embedding\", dim = 4 },\n{ type = \"residual\", layers = [{ type = \"layer_norm\" }, { type = \"attention\", heads = 2 }] },\n{ type = \"linear\", out = 5 },";
    assert!(crate::scenario::from_str(&transformer(ok, tokens), "t").is_ok());
    // Lines: 5 is the inputs, 9 `layers = [`, 10 the first layer, 11 the residual block.
    // heads that do not divide the width: the nested attention's inline table (column 57).
    let e = located(&transformer(&ok.replace("heads = 2", "heads = 3"), tokens));
    assert!(e.contains("t:11:57") && e.contains("model.layers.1.layers.1") && e.contains("must divide the width 4"), "{e}");
    // A token id outside the vocabulary: the id itself.
    let rows = "inputs = { kind = \"tokens\", vocab = 5, rows = [[0, 1, 2, 3], [4, 7, 0, 1], [1, 2, 3, 4], [0, 0, 0, 0]] }";
    let e = located(&transformer(ok, rows));
    assert!(e.contains("t:5:66") && e.contains("data.inputs.rows.1.1") && e.contains("token id 7 is outside the vocabulary 0..5"), "{e}");
    // A linear layer fed token ids.
    let e = located(&transformer("{ type = \"linear\", out = 5 },", tokens));
    assert!(e.contains("t:10:1") && e.contains("put an embedding layer first"), "{e}");
    // Nesting deeper than the limit.
    let deep = (0..=MAX_NESTING).fold("{ type = \"identity\" }".to_string(), |inner, _| format!("{{ type = \"residual\", layers = [{inner}] }}"));
    let e = located(&transformer(&format!("{{ type = \"embedding\", dim = 5 }},\n{deep},"), tokens));
    assert!(e.contains("nest deeper than 8 levels"), "{e}");
    // Padding that is not a fraction, and next_token targets without tokens.
    let e = located(&transformer(ok, &format!("{tokens}\npadding = {{ max_fraction = 1.5 }}")));
    assert!(e.contains("t:6:13") && e.contains("data.padding.max_fraction") && e.contains("[0, 1]"), "{e}");
    let e = located(&transformer(ok, "features = 2\ninputs = { kind = \"normal\" }"));
    assert!(e.contains("next_token targets need token inputs"), "{e}");
}

#[test]
fn image_layers_get_precise_errors_at_their_keys() {
    let cnn = |layers: &str| {
        format!("name = \"t\"\n[data]\nn = 4\nimage = {{ channels = 1, height = 5, width = 5 }}\ninputs = {{ kind = \"normal\" }}\ntargets = {{ kind = \"normal\" }}\n[model]\nlayers = [\n{layers}\n]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n[train]\nepochs = 1\n")
    };
    assert!(crate::scenario::from_str(&cnn("{ type = \"conv2d\", channels = 2, kernel = 3 }, { type = \"flatten\" }, { type = \"linear\", out = 1 },"), "t").is_ok());
    // Line 9 holds the layers; a kernel longer than the padded image, and a linear layer fed images.
    let e = located(&cnn("{ type = \"conv2d\", channels = 2, kernel = 7, padding = 0 }, { type = \"flatten\" }, { type = \"linear\", out = 1 },"));
    assert!(e.contains("t:9:1") && e.contains("`kernel` = 7 must be between 1 and the padded input's 5"), "{e}");
    let e = located(&cnn("{ type = \"relu\" }, { type = \"linear\", out = 1 },"));
    assert!(e.contains("t:9:20") && e.contains("model.layers.1") && e.contains("put a flatten layer first"), "{e}");
    let e = located(&cnn("{ type = \"max_pool2d\", kernel = 0 }, { type = \"flatten\" }, { type = \"linear\", out = 1 },"));
    assert!(e.contains("`kernel` = 0 must be between 1 and the image's 5 × 5"), "{e}");
}

#[test]
fn mixed_precision_schedule_and_scaler_settings_are_located() {
    // Seed 002 ex1 with lines added at the end of its [train] table, just before [expect]:
    // line k of the addition is line `before + k` of the file.
    let base = base();
    let before = base.lines().position(|l| l == "[expect]").expect("the base has [expect]");
    let with = |tail: &str| base.replace("[expect]", &format!("{tail}[expect]"));
    let at = |src: &str, line: usize| {
        let e = located(src);
        assert!(e.contains(&format!("t:{}:", before + line)), "line {}: {e}", before + line);
        e
    };
    assert!(crate::scenario::from_str(
        &with("precision = \"amp_bf16\"\naccumulate = 4\n[train.loss_scale]\ngrowth_interval = 10\n[train.schedule]\nwarmup_steps = 5\ndecay = \"cosine\"\ndecay_steps = 20\n"),
        "t"
    )
    .is_ok());
    let e = at(&with("precision = \"amp_f16\"\n").replace("dtype = \"f32\"", "dtype = \"f16\""), 1);
    assert!(e.contains("train.precision") && e.contains("dtype = \"f32\""), "{e}");
    let e = at(&with("accumulate = 0\n"), 1);
    assert!(e.contains("train.accumulate") && e.contains("between 1 and"), "{e}");
    let e = at(&with("[train.loss_scale]\ngrowth_factor = 1.0\n"), 2);
    assert!(e.contains("train.loss_scale.growth_factor") && e.contains("over 1"), "{e}");
    let e = at(&with("[train.loss_scale]\nbackoff_factor = 1.5\n"), 2);
    assert!(e.contains("train.loss_scale.backoff_factor"), "{e}");
    let e = at(&with("[train.schedule]\ndecay = \"step\"\ngamma = 0.5\n"), 2);
    assert!(e.contains("train.schedule.decay") && e.contains("needs `step_size`"), "{e}");
    let e = at(&with("[train.schedule]\neta_min = 0.1\n"), 2);
    assert!(e.contains("train.schedule.eta_min") && e.contains("only decay = \"cosine\""), "{e}");
    let e = at(&with("[train.schedule]\nwarmup_start_factor = 2.0\n"), 2);
    assert!(e.contains("[0, 1]"), "{e}");
    let e = located(&with("[train.loss_scale]\n").replace("dtype = \"f32\"", "dtype = \"f16\""));
    assert!(e.contains("train.loss_scale") && e.contains("refuses to unscale"), "{e}");
    // A scale collapse names `loss_scale`, which only a run with a scaler has.
    let collapse = |src: String| src.replace("within_steps = 5", "within_steps = 5\nphase = \"update\"\ntensor = \"loss_scale\"");
    let e = located(&collapse(base.clone()));
    assert!(e.contains("`loss_scale` is not a tensor of this model"), "{e}");
    assert!(crate::scenario::from_str(&collapse(with("[train.loss_scale]\n")), "t").is_ok());
}

#[test]
fn a_layers_own_precision_cannot_be_kept_in_half_storage() {
    // Under f32 (no autocast) every layer already computes in f32: nothing to keep, accepted.
    let base = base();
    let tagged = base.replacen("{ type = \"linear\"", "{ precision = \"f32\", type = \"linear\"", 1);
    assert_ne!(tagged, base);
    assert!(crate::scenario::from_str(&tagged, "t").is_ok());
    assert!(crate::scenario::from_str(&tagged.replace("[expect]", "precision = \"amp_bf16\"\n[expect]"), "t").is_ok());
    // In plain f16 storage its parameters are f16: refused at its key.
    let e = located(&tagged.replace("dtype = \"f32\"", "dtype = \"f16\""));
    assert!(e.contains("t:20:") && e.contains("model.layers.0.precision") && e.contains("train.precision = \"amp_f16\""), "{e}");
}
