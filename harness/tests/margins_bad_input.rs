//! Issue 25's margin cases: `check`'s `min_margin` must be measured (searched as
//! far as it asks, on a knob that has a margin) or be an error, never a silent
//! pass; `margins` must say which searches it did not do, and refuse a base
//! that timed out or a scenario with no knob to move; `check --neighbourhood`
//! must not count the base among its mutants.

mod common;
use common::*;

/// Seed 002 ex1 with standardized features (finite at lr 0.01), with a `min_margin`.
fn with_margin(dir: &std::path::Path, margin: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(seed("s002_ex1_linreg_sgd_fix_standardize")).unwrap();
    let t = text.replace("[expect]\noutcome = \"finite\"", &format!("[expect]\noutcome = \"finite\"\nmin_margin = {{ {margin} }}"));
    assert!(t.contains("min_margin"), "the seed ends with its [expect] table");
    write(dir, "m.toml", &t)
}

/// The same scenario with only these knobs free to move.
fn with_knobs(dir: &std::path::Path, knobs: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(seed("s002_ex1_linreg_sgd_fix_standardize")).unwrap();
    write(dir, "k.toml", &format!("{text}\n[search]\nknobs = [{knobs}]\n"))
}

#[test]
fn a_min_margin_on_lr_beyond_where_it_flips_fails() {
    // The model is y = w·x + b on 3 rows whose two standardized columns are both x = [−a, 0, a],
    // a = √1.5, with y = 20 + (10/a)·x, full-batch SGD on the MSE for 10 steps. Its residual is
    // u·x + v with u = w₁ + w₂ − 10/a and v = b − 20 (= −20 at the zero bias), the loss u² + v²,
    // and each step multiplies u by (1 − 4·lr) and v by (1 − 2·lr): the Hessian's eigenvalues are
    // 4 and 2. Below lr = 2/λmax = 0.5 both contract, so nothing overflows. The 10th loss sees 9
    // steps, so once 400·(2·lr − 1)¹⁸ > f32::MAX (lr > 50.6) it is past f32 whatever w is. The
    // threshold is between 0.5 and 50.6: a margin of 50 to 5060 over lr 0.01, never 1e7.
    // Before the fix, the search stayed within 3 decades (lr ≤ 10) and found nothing, so it passed.
    let dir = tempdir();
    for want in ["1e7", "1e300"] {
        let out = nanhunt(&["check", with_margin(dir.path(), &format!("\"optimizer.lr\" = {want}")).to_str().unwrap()]);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{want}: {text}");
        assert!(text.contains("margin of `optimizer.lr` above its base 0.01"), "{text}");
        let at: f64 = text.split("it flips at ").nth(1).and_then(|r| r.split(')').next()).and_then(|v| v.parse().ok()).expect("the threshold");
        assert!(at > 0.5 && at < 50.6, "between the stability bound and certain overflow: {at}");
    }
}

#[test]
fn a_min_margin_past_the_values_its_knob_can_take_is_an_error() {
    // 10 epochs can only shrink 10× (to 1): 20× below cannot be measured, so it cannot pass.
    let dir = tempdir();
    let out = nanhunt(&["check", with_margin(dir.path(), "\"train.epochs\" = 20.0").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("`train.epochs` below its base 10 cannot be measured"), "{}", stdout(&out));
}

#[test]
fn a_min_margin_on_a_knob_without_one_is_refused() {
    // SGD has no β₂; the seed and the dtype do not move on a scale. Each used to pass unmeasured.
    let dir = tempdir();
    for key in ["optimizer.beta2", "seed", "train.dtype"] {
        let out = nanhunt(&["check", with_margin(dir.path(), &format!("\"{key}\" = 2.0")).to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{key}: {}", stdout(&out));
        let text = stdout(&out);
        assert!(text.contains("ERROR") && text.contains(&format!("`{key}`")) && text.contains("min_margin"), "{key}: {text}");
    }
}

#[test]
fn margins_out_of_time_marks_its_sides_unsearched() {
    // With no time at all nothing is searched: no side may read "none within range".
    let dir = tempdir();
    let p = with_knobs(dir.path(), "\"optimizer.lr\", \"train.dtype\"");
    let out = nanhunt(&["margins", p.to_str().unwrap(), "--time", "0s"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "a finite base: {text}");
    let lr = text.lines().find(|l| l.trim_start().starts_with("optimizer.lr")).expect("the lr row");
    assert_eq!(lr.matches("not searched: out of time").count(), 2, "{text}");
    assert!(!text.contains("none within range") && !text.contains("no change"), "{text}");
    assert!(text.contains("train.dtype = f16: unknown: not run: out of time"), "{text}");
    let json = nanhunt(&["margins", p.to_str().unwrap(), "--time", "0s", "--json"]);
    let m: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(m["knobs"][0]["upper_unsearched"], "not searched: out of time");
    assert!(m["knobs"][0]["upper"].is_null());
}

#[test]
fn margins_of_a_base_that_times_out_is_an_error() {
    // The base is cut off before its first step: it has no outcome to measure margins from.
    let out = nanhunt(&["margins", seed("s002_ex1_linreg_sgd_fix_standardize").to_str().unwrap(), "--run-timeout", "1ns"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("the base run timed out") && !stdout(&out).contains("stays finite"), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn margins_with_no_knob_to_move_is_the_error_hunt_gives() {
    // β₂ does not apply under SGD, so `[search] knobs = ["optimizer.beta2"]` leaves nothing to move.
    let dir = tempdir();
    let p = with_knobs(dir.path(), "\"optimizer.beta2\"");
    let reports = dir.path().join("reports");
    let hunt = nanhunt(&["hunt", p.to_str().unwrap(), "--out", reports.to_str().unwrap(), "--time", "5s"]);
    assert_eq!(hunt.status.code(), Some(2), "{}", stdout(&hunt));
    let margins = nanhunt(&["margins", p.to_str().unwrap()]);
    assert_eq!(margins.status.code(), Some(2), "{}", stdout(&margins));
    assert!(stderr(&hunt).contains("no knob can move: check `[search].knobs`"), "{}", stderr(&hunt));
    assert_eq!(stderr(&margins), stderr(&hunt));
    assert!(stdout(&margins).is_empty(), "no empty table: {}", stdout(&margins));
}

#[test]
fn check_neighbourhood_never_lists_the_base_as_a_mutant() {
    // The base's own values, read from its file: all 3 rows in a batch, no clipping, momentum 0
    // (SGD's default), 1 micro-batch, 10 epochs, lr 0.01, f32, SGD, no autocast. A mutant made only
    // of these is the base itself (with seed 0, `train.batch_size = 3` and
    // `optimizer.clip_grad_norm = null` were listed before the fix).
    let own = [
        "train.batch_size = 3",
        "optimizer.clip_grad_norm = null",
        "optimizer.momentum = 0",
        "train.accumulate = 1",
        "train.epochs = 10",
        "optimizer.lr = 0.01",
        "train.dtype = f32",
        "optimizer.kind = sgd",
        "train.precision = f32",
    ];
    let p = seed("s002_ex1_linreg_sgd_fix_standardize");
    for seed in ["0", "1"] {
        let out = nanhunt(&["check", p.to_str().unwrap(), "--neighbourhood", "40", "--seed", seed]);
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        let text = stdout(&out);
        let list = text.lines().find_map(|l| l.trim().strip_prefix("neighbourhood: ")).expect("the mutants");
        let mutants: Vec<&str> = list.split(" | ").collect();
        assert_eq!(mutants.len(), 40, "{list}");
        for m in &mutants {
            assert!(!m.split(", ").all(|part| own.contains(&part)), "seed {seed}: `{m}` is the base: {list}");
        }
    }
}

#[test]
fn margins_measure_a_constant_of_an_expression_inside_a_residual_block() {
    // issue 28's audit: an `expr` layer's constant inside a residual block was no knob. Here the
    // block is relu then an L2-normalize, `x / clamp(norm(x), min=eps)`: the rows whose two relu
    // units are both 0 have norm 0, finite while eps guards the division (0 / eps = 0) and
    // 0 / 0 = NaN once eps rounds to 0 in f32, at or below 2⁻¹⁵⁰ (the tie, rounded to even).
    let text = "name = \"nested_eps\"\nseed = 0\n[data]\nn = 64\nfeatures = 4\ninputs = { kind = \"normal\" }\ntargets = { kind = \"linear\", noise = 0.1 }\n\
                [model]\nlayers = [\n  { type = \"linear\", out = 2 },\n  { type = \"residual\", layers = [\n    { type = \"relu\" },\n    \
                { type = \"expr\", expr = \"x / clamp(norm(x, dim=-1, keepdim=true), min=eps)\", consts = { eps = 1e-12 } },\n  ] },\n  { type = \"linear\", out = 1 },\n]\n\
                [loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n[train]\nbatch_size = 32\n[search]\nknobs = [\"consts\"]\n";
    let dir = tempdir();
    let p = write(dir.path(), "nested.toml", text);
    let out = nanhunt(&["margins", p.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "a finite base: {}{}", stdout(&out), stderr(&out));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let knobs = m["knobs"].as_array().unwrap();
    assert_eq!(knobs.len(), 1, "{m}");
    let eps = &knobs[0];
    assert_eq!((eps["knob"].as_str(), eps["constant"].as_str(), eps["base"].as_f64()), (Some("consts"), Some("model.layers.1.layers.1.consts.eps"), Some(1e-12)), "{eps}");
    let flips = eps["lower"]["flips_at"].as_f64().expect("eps flips below");
    assert!(flips > 0.0 && flips <= 2f64.powi(-150) && eps["lower"]["stays_finite_at"].as_f64().is_some_and(|v| v > 2f64.powi(-150)), "{eps}");
    assert!(eps["upper"].is_null() && eps["upper_unsearched"].is_null(), "a larger eps guards as well: {eps}");
    let table = stdout(&nanhunt(&["margins", p.to_str().unwrap()]));
    assert!(table.lines().any(|l| l.trim_start().starts_with("model.layers.1.layers.1.consts.eps")), "{table}");
}
