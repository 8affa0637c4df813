//! Bad input never reaches the runner: each case a red-team pass found (a panic,
//! a value that could only produce a false finding, an unbounded read, a
//! misleading message) is an error with exit code 2 that names what to fix.

mod common;
use common::*;

/// Seed 002 ex1 (explicit rows, linear model, SGD) as text.
fn base() -> String {
    std::fs::read_to_string(seed("s002_ex1_linreg_sgd")).unwrap()
}

/// A synthetic-data variant of the base whose `[data]` table is `data`.
fn synthetic(data: &str) -> String {
    let src = base();
    let (start, end) = (src.find("[data]").unwrap(), src.find("[model]").unwrap());
    format!("{}[data]\n{data}\n{}", &src[..start], &src[end..])
}

const NORMAL: &str = "n = 16\nfeatures = 2\ninputs = { kind = \"normal\" }\ntargets = { kind = \"uniform\" }";

/// Runs `nanhunt run` on scenario text written into `dir`; returns (exit code, stdout, stderr).
fn run_text(dir: &std::path::Path, text: &str, extra: &[&str]) -> (Option<i32>, String, String) {
    let p = write(dir, "s.toml", text);
    let mut args = vec!["run", p.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = nanhunt(&args);
    (out.status.code(), stdout(&out), stderr(&out))
}

/// Asserts the scenario is refused with exit 2 and an error naming `key`, and no outcome on stdout.
fn refused(text: &str, key: &str) {
    let dir = tempdir();
    let (code, out, err) = run_text(dir.path(), text, &[]);
    assert_eq!(code, Some(2), "{key}: {out}{err}");
    assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
    assert!(out.is_empty(), "{key}: nothing on stdout: {out}");
}

#[test]
fn clip_with_min_over_max_or_nan_is_a_validation_error_not_a_panic() {
    for (min, max) in [("1.0", "0.0"), ("nan", "1.0")] {
        let text = synthetic(&format!("{NORMAL}\n[[data.preprocess]]\nop = \"clip\"\nmin = {min}\nmax = {max}"));
        refused(&text, "data.preprocess.0.min");
        // `check` counts it as an error (exit 2), not a failed expectation.
        let dir = tempdir();
        let p = write(dir.path(), "clip.toml", &text);
        let out = nanhunt(&["check", p.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    }
}

#[test]
fn values_that_could_only_produce_a_finding_are_errors() {
    let linear = "{ type = \"linear\", out = 1 }";
    let cases = [
        (base().replace(linear, "{ type = \"linear\", out = 1, init = { kind = \"constant\", value = nan } }"), "model.layers.0.init.value"),
        (base().replace(linear, "{ type = \"linear\", out = 1, init = { kind = \"uniform\", bound = inf } }"), "model.layers.0.init.bound"),
        (base().replace("init = { kind = \"keras\" }", "init = { kind = \"normal\", std = -1.0 }"), "model.init.std"),
        (synthetic(&NORMAL.replace("{ kind = \"normal\" }", "{ kind = \"normal\", std = inf }")), "data.inputs.std"),
        (synthetic(&NORMAL.replace("{ kind = \"normal\" }", "{ kind = \"normal\", mean = nan }")), "data.inputs.mean"),
        (synthetic(&NORMAL.replace("{ kind = \"normal\" }", "{ kind = \"uniform\", low = -inf }")), "data.inputs.low"),
        (synthetic(&format!("{NORMAL}\nscale_groups = [{{ first = 1, factor = nan }}]")), "data.scale_groups.0.factor"),
        (synthetic(&format!("{NORMAL}\n[[data.inject]]\nvalue = \"outlier\"\nfraction = 0.1\nmagnitude = nan")), "data.inject.0.magnitude"),
        (synthetic(&format!("{NORMAL}\n[[data.preprocess]]\nop = \"reciprocal\"\nguard = nan")), "data.preprocess.0.guard"),
        (synthetic(&format!("{NORMAL}\n[[data.preprocess]]\nop = \"log\"\nepsilon = -1.0")), "data.preprocess.0.epsilon"),
        (base().replace(linear, "{ type = \"linear\", out = 1 }, { type = \"pow\", exponent = nan }"), "model.layers.1.exponent"),
        (base().replace(linear, "{ type = \"linear\", out = 1 }, { type = \"elu\", alpha = inf }"), "model.layers.1.alpha"),
        (base().replace(linear, "{ type = \"linear\", out = 1 }, { type = \"leaky_relu\", negative_slope = nan }"), "model.layers.1.negative_slope"),
        (base().replace(linear, "{ type = \"linear\", out = 1 }, { type = \"rms_norm\", eps = 0.0 }"), "model.layers.1.eps"),
        (base().replace(linear, "{ type = \"linear\", out = 1 }, { type = \"batch_norm\", momentum = 1.5 }"), "model.layers.1.momentum"),
        (base().replace("epochs = 10", "epochs = 10\nstagnation = { rel_tol = nan }"), "train.stagnation.rel_tol"),
        (base().replace("epochs = 10", "epochs = 10\nstagnation = { grad_norm_floor = -inf }"), "train.stagnation.grad_norm_floor"),
    ];
    for (text, key) in cases {
        refused(&text, key);
    }
}

/// A scenario reading `d.csv` (written beside it) with target column `y`.
fn csv_run(csv: &str, data_extra: &str) -> (Option<i32>, String, String) {
    let dir = tempdir();
    write(dir.path(), "d.csv", csv);
    let text = synthetic(&format!("inputs = {{ kind = \"csv\", path = \"d.csv\", targets = [\"y\"] }}\n{data_extra}"));
    run_text(dir.path(), &text, &[])
}

#[test]
fn csv_shapes_and_splits_that_would_give_false_findings_are_errors() {
    let (code, out, err) = csv_run("a,y\n1,2\n3,4\n", "validation = { kfold = 5 }");
    assert_eq!(code, Some(2), "kfold over the rows: {out}{err}");
    assert!(err.contains("data.validation.kfold") && !out.contains("NaN"), "{err}");
    let (code, _, err) = csv_run("y\n1\n2\n", "");
    assert_eq!(code, Some(2), "no feature columns: {err}");
    assert!(err.contains("no feature columns"), "{err}");
    let (code, _, err) = csv_run("a,b,y\n1,2,3\n", "features = 7");
    assert_eq!(code, Some(2), "features given with CSV: {err}");
    assert!(err.contains("`data.features`"), "{err}");
    let (code, _, err) = csv_run("a,y\n1,2\n3,4\n", "validation = { n = 3 }");
    assert_eq!(code, Some(2), "a separate set drawn from a CSV: {err}");
    assert!(err.contains("`data.validation.n`"), "{err}");
}

#[test]
fn contradictory_tables_are_errors_when_read() {
    refused(&synthetic(&format!("{NORMAL}\n[[data.inject]]\nvalue = \"nan\"\nfraction = 0.1\nrows = [1]")), "data.inject.0");
    refused(&synthetic(&format!("{NORMAL}\n[[data.inject]]\nvalue = \"nan\"\nfraction = 0.1\nsplit = \"validation\"")), "data.inject.0.split");
    let dir = tempdir();
    let (code, _, err) = run_text(dir.path(), &synthetic(&format!("{NORMAL}\n[[data.preprocess]]\nop = \"drop_nonfinite\"\ncolumns = [0]")), &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("unknown field `columns`"), "{err}");
    refused(&format!("{}\n[search]\nknobs = []\n", base()), "search.knobs");
    let expect_at = base().find("[expect]").unwrap();
    let with_expect = |body: &str| format!("{}[expect]\noutcome = \"nonfinite\"\n{body}\n", &base()[..expect_at]);
    refused(&with_expect("phase = \"data\"\ntensor = \"layers.0.linear.weight\""), "expect.tensor");
    refused(&with_expect("phase = \"update\"\nwithin_steps = 0"), "expect.within_steps");
}

#[test]
fn reads_are_bounded_and_stay_where_they_belong() {
    let dir = tempdir();
    // A scenario file over the limit is refused before it is parsed.
    let big = format!("{}\n#{}\n", base(), "x".repeat(2 << 20));
    let (code, _, err) = run_text(dir.path(), &big, &["--max-scenario-mb", "1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("refused") && err.contains("CSV"), "{err}");
    // A memory limit with no ceiling is an error, not an abort.
    refused(&base().replace("epochs = 10", "epochs = 10\nmemory_limit_mb = 9223372036854775807"), "train.memory_limit_mb");
    // A device or a path outside the scenario's folder is not read; nothing of it is echoed.
    let csv = |path: &str| synthetic(&format!("inputs = {{ kind = \"csv\", path = \"{path}\", targets = [\"y\"] }}"));
    let (code, _, err) = run_text(dir.path(), &csv("/dev/zero"), &["--allow-outside-paths"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    // A FIFO would block a reader forever: it is refused without being opened.
    if std::process::Command::new("mkfifo").arg(dir.path().join("pipe.csv")).status().is_ok_and(|s| s.success()) {
        let (code, _, err) = run_text(dir.path(), &csv("pipe.csv"), &[]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("not a regular file"), "{err}");
    }
    let outside = tempdir();
    write(outside.path(), "secret.csv", "topsecret,y\n1,2\n");
    let path = outside.path().join("secret.csv");
    let (code, _, err) = run_text(dir.path(), &csv(path.to_str().unwrap()), &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("outside the scenario's folder") && !err.contains("topsecret"), "{err}");
    let (code, _, err) = run_text(dir.path(), &csv(path.to_str().unwrap()), &["--allow-outside-paths"]);
    assert!(code.is_some_and(|c| c <= 1), "allowed when asked: {err}");
}

#[test]
fn scenario_names_are_checked_and_reports_do_not_collide() {
    refused(&base().replace("name = \"s002_ex1_linreg_sgd\"", "name = \"\""), "name");
    refused(&base().replace("name = \"s002_ex1_linreg_sgd\"", "name = \"a\\u0007b\""), "name");
    refused(&base().replace("name = \"s002_ex1_linreg_sgd\"", &format!("name = \"{}\"", "n".repeat(300))), "name");
    // Two different scenarios of one name, failing at one place, get two report directories.
    let dir = tempdir();
    let reports = dir.path().join("reports");
    for (i, lr) in ["0.01", "0.02"].iter().enumerate() {
        let p = write(dir.path(), &format!("s{i}.toml"), &base().replace("lr = 0.01", &format!("lr = {lr}")));
        let out = nanhunt(&["run", p.to_str().unwrap(), "--report", reports.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    }
    assert_eq!(std::fs::read_dir(&reports).unwrap().count(), 2);
}

#[test]
fn broken_outputs_are_errors_not_verdicts() {
    let dir = tempdir();
    let reports = dir.path().join("reports");
    let out = nanhunt(&["run", seed("s002_ex1_linreg_sgd").to_str().unwrap(), "--report", reports.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report = std::fs::read_dir(&reports).unwrap().next().unwrap().unwrap().path();
    let trace = report.join("trace.csv");
    let whole = std::fs::read_to_string(&trace).unwrap();
    for cut in [String::new(), whole[..whole.len() - 4].to_string()] {
        std::fs::write(&trace, &cut).unwrap();
        let out = nanhunt(&["replay", report.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "a truncated trace is corrupt, not divergent: {}", stdout(&out));
        assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    }
    // Nothing to check is an error unless allowed.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_eq!(nanhunt(&["check", empty.to_str().unwrap()]).status.code(), Some(2));
    assert_eq!(nanhunt(&["check", empty.to_str().unwrap(), "--allow-empty"]).status.code(), Some(0));
    // A hunt whose output is a file fails at once, before any search time is spent.
    let file = write(dir.path(), "out", "");
    let out = nanhunt(&["hunt", seed("s000_ex1_bce_mlp").to_str().unwrap(), "--time", "600s", "--out", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("output directory"), "{}", stderr(&out));
}

#[test]
fn merge_refuses_missing_reports_and_the_same_directory_twice() {
    let dir = tempdir();
    let hunt = dir.path().join("h");
    std::fs::create_dir(&hunt).unwrap();
    let finding = r#"{"scenario":"s","signature":"abcd1234","location":{"step":1,"epoch":1,"fold":0,"phase":"loss","tensor":"loss","kind":"nan","index":0},"dtype":"f32","triggers":[],"count":1,"runs_to_find":1,"seconds_to_find":0.1,"seconds_to_shrink":0.0,"shrink_runs":0,"report":"gone/s-abcd1234"}"#;
    write(&hunt, "findings.jsonl", &format!("{finding}\n"));
    let out_dir = dir.path().join("merged");
    let out = nanhunt(&["merge", hunt.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("s-abcd1234"), "names the missing report: {}", stderr(&out));
    let out = nanhunt(&["merge", hunt.to_str().unwrap(), hunt.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("named twice"), "{}", stderr(&out));
}

#[test]
fn messages_go_to_stderr_once_and_thread_counts_are_checked() {
    let dir = tempdir();
    // A run that cannot be carried out: the error on stderr, no half summary on stdout.
    let (code, out, err) = run_text(dir.path(), &base().replace("device = \"cpu\"", "device = \"cuda:0\""), &[]);
    assert_eq!(code, Some(2));
    assert!(out.is_empty() && !err.contains("run on ,"), "{out}|{err}");
    // An OS error is printed once, with its path.
    let missing = dir.path().join("missing.toml");
    let out = nanhunt(&["run", missing.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
    assert!(err.contains("missing.toml"), "{err}");
    for threads in ["0", "100000"] {
        let out = nanhunt(&["run", seed("s002_ex1_linreg_sgd").to_str().unwrap(), "--threads", threads]);
        assert_eq!(out.status.code(), Some(2), "--threads {threads}");
    }
}

#[test]
fn fuzz_shrink_says_invalid_candidate() {
    // Bytes that decode to a negative learning rate: the `Lr` variant (tag 0) with the f64 -1.
    let dir = tempdir();
    let mut bytes = vec![0u8; 4];
    bytes.extend_from_slice(&(-1.0f64).to_le_bytes());
    let decoded = nanhunt::fuzzing::decode(&bytes);
    assert!(matches!(decoded.first(), Some(nanhunt::search::Mutation { knob: nanhunt::scenario::Knob::Lr, value: nanhunt::scenario::Value::Real(v) }) if *v < 0.0), "{decoded:?}");
    let p = dir.path().join("crash");
    std::fs::write(&p, &bytes).unwrap();
    let out = nanhunt(&["fuzz-shrink", p.to_str().unwrap(), "--out", dir.path().join("r").to_str().unwrap()]);
    assert!(stdout(&out).contains("invalid candidate"), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn messages_name_what_to_fix_without_internals() {
    let dir = tempdir();
    let err_of = |text: &str| run_text(dir.path(), text, &[]).2;
    let scale = err_of(&base().replace("[data]", "[data]\nscale = [1.0, 2.0, 3.0, 4.0]"));
    assert!(scale.contains("has 4 entries but there are 2 features") && !scale.contains("Some("), "{scale}");
    let far = err_of(&base().replace("[data]", "[data]\nscale_groups = [{ start = 18446744073709551615, first = 2, factor = 2.0 }]"));
    assert!(far.contains("`data.scale_groups.0`") && !far.contains(".."), "names its own key, no wrapped range: {far}");
    let empty = err_of(&base().replace("rows = [[1.0, 100000.0], [2.0, 200000.0], [3.0, 300000.0]]", "rows = [[], [], []]"));
    assert!(empty.contains("row 0 is empty") && !empty.contains("expected 0"), "{empty}");
    let eps = err_of(&base().replace("{ type = \"linear\", out = 1 }", "{ type = \"layer_norm\", eps = inf }, { type = \"linear\", out = 1 }"));
    assert!(eps.contains("positive finite number, got inf"), "{eps}");
    // Binary input gets a position.
    let p = dir.path().join("bin.toml");
    std::fs::write(&p, b"name = \"t\"\nseed = \xff\n").unwrap();
    let out = nanhunt(&["run", p.to_str().unwrap()]);
    assert!(stderr(&out).contains("bin.toml:2:8: this is not UTF-8 text"), "{}", stderr(&out));
    // A bad line of findings.jsonl is named by its own line number.
    let hunt = dir.path().join("h");
    std::fs::create_dir(&hunt).unwrap();
    std::fs::write(hunt.join("findings.jsonl"), "\n{\"scenario\": 1}\n").unwrap();
    let out = nanhunt(&["merge", hunt.to_str().unwrap(), "--out", dir.path().join("m").to_str().unwrap()]);
    assert!(stderr(&out).contains("findings.jsonl:2:") && !stderr(&out).contains("line 1 column"), "{}", stderr(&out));
}

#[test]
fn a_scenario_whose_model_is_rust_code_is_refused_with_how_to_run_it() {
    // What a code model's report holds: the model's name, not the model.
    let src = base();
    let (start, end) = (src.find("[model]").unwrap(), src.find("[loss]").unwrap());
    let text = format!("{}[model]\ncode = \"my_block\"\n\n{}", &src[..start], &src[end..]);
    refused(&text, "model.code");
    let dir = tempdir();
    let (_, _, err) = run_text(dir.path(), &text, &[]);
    assert!(err.contains("nanhunt::run_module"), "{err}");
    // Nor is it exported to PyTorch as the empty stack it seems to be.
    let p = write(dir.path(), "code.toml", &text);
    let out_dir = dir.path().join("torch");
    let out = nanhunt(&["export-torch", p.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("`model.code`") && !out_dir.join("repro.py").exists(), "{}", stderr(&out));
}
