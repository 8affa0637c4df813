//! End-to-end tests of reports, `replay` and `check`.

mod common;
use common::*;

fn report_of(dir: &std::path::Path, scenario: &str) -> std::path::PathBuf {
    let path = seed(scenario);
    let out = nanhunt(&["run", path.to_str().unwrap(), "--report", dir.to_str().unwrap()]);
    assert!(out.status.code().unwrap() <= 1, "{}", stderr(&out));
    let mut dirs: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    dirs.retain(|d| d.file_name().unwrap().to_string_lossy().starts_with(scenario));
    assert_eq!(dirs.len(), 1, "one report directory, no temporary leftovers");
    dirs.remove(0)
}

#[test]
fn report_has_every_file_and_replays_bit_identically() {
    let tmp = tempdir();
    let dir = report_of(tmp.path(), "s002_ex1_linreg_sgd");
    for f in ["repro.toml", "trace.csv", "summary.md", "summary.json", "trace.svg", "trace.png"] {
        assert!(dir.join(f).metadata().unwrap().len() > 0, "{f}");
    }
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["schema_version"], 1);
    assert_eq!(summary["outcome"]["first_nonfinite"]["phase"], "loss");
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.contains("nanhunt replay") && md.contains("## Environment") && md.lines().count() < 40, "{md}");
    let png = std::fs::read(dir.join("trace.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // The repro runs on its own, from anywhere.
    let repro = dir.join("repro.toml");
    assert_eq!(nanhunt(&["run", repro.to_str().unwrap()]).status.code(), Some(1));
    let out = nanhunt(&["replay", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).starts_with("identical"));
}

#[test]
fn altered_trace_is_caught_at_the_right_step() {
    let tmp = tempdir();
    let dir = report_of(tmp.path(), "s004_ex1_simple_rnn_adam");
    let trace = std::fs::read_to_string(dir.join("trace.csv")).unwrap();
    let mut lines: Vec<String> = trace.lines().map(str::to_string).collect();
    // Change the gradient norm of step 7 by one leading digit.
    let row: Vec<&str> = lines[7].split(',').collect();
    assert_eq!(row[0], "7");
    let mut changed: Vec<String> = row.iter().map(|s| s.to_string()).collect();
    changed[5] = format!("9{}", changed[5]);
    lines[7] = changed.join(",");
    std::fs::write(dir.join("trace.csv"), lines.join("\n") + "\n").unwrap();
    let out = nanhunt(&["replay", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("step 7") && text.contains("`grad_norm`"), "{text}");
}

#[test]
fn check_writes_junit_and_uses_exit_codes() {
    let tmp = tempdir();
    let good = seed("s002_ex1_linreg_sgd");
    let fail_src = std::fs::read_to_string(&good).unwrap().replace("outcome = \"nonfinite\"\nwithin_steps = 5", "outcome = \"finite\"");
    let failing = write(tmp.path(), "failing.toml", &fail_src);
    let junit = tmp.path().join("out.xml");
    let out = nanhunt(&["check", good.to_str().unwrap(), failing.to_str().unwrap(), "--junit", junit.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("check: 1 passed, 1 failed, 0 skipped"), "{}", stdout(&out));
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let cases: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("testcase")).collect();
    assert_eq!(cases.len(), 2);
    let failed: Vec<_> = cases.iter().filter(|c| c.children().any(|n| n.has_tag_name("failure"))).map(|c| c.attribute("name").unwrap()).collect();
    assert_eq!(failed, ["s002_ex1_linreg_sgd"], "the copy keeps the scenario's name; it is the failing one");
    assert_eq!(nanhunt(&["check", good.to_str().unwrap()]).status.code(), Some(0));
    let broken = write(tmp.path(), "broken.toml", "name = 3");
    assert_eq!(nanhunt(&["check", broken.to_str().unwrap()]).status.code(), Some(2));
}

#[test]
fn check_accepts_report_directories() {
    let tmp = tempdir();
    let dir = report_of(tmp.path(), "s003_ex3_ratio_loss_zero_target");
    let out = nanhunt(&["check", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("1 passed"));
    assert!(dir.exists());
}

#[test]
fn neighbourhood_shows_the_clamp_fix_failing_in_f16() {
    // 1 − 1e-7 rounds to 1.0 in f16, so the clamp no longer keeps log(1 − p) finite.
    let fix = seed("s001_ex3_bce_saturated_fix_eps_clamp");
    assert_eq!(nanhunt(&["check", fix.to_str().unwrap()]).status.code(), Some(0), "the fix passes as written");
    let out = nanhunt(&["check", fix.to_str().unwrap(), "--neighbourhood", "4"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("train.dtype = f16"), "{}", stdout(&out));
}

#[test]
fn every_bundled_scenario_passes_check() {
    // What CI runs: `nanhunt check scenarios/`, here with two jobs and JUnit output.
    let tmp = tempdir();
    let junit = tmp.path().join("scenarios.xml");
    let scenarios = repo().join("scenarios");
    let out = nanhunt(&["check", scenarios.to_str().unwrap(), "--jobs", "2", "--junit", junit.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    assert!(doc.descendants().filter(|n| n.has_tag_name("testcase")).count() >= 30);
}

#[test]
fn an_amp_report_keeps_the_scaler_columns_and_replays_bit_identically() {
    // pytorch#40497's scale collapse: amp_f16 with GradScaler, 122 steps with skipped ones.
    let tmp = tempdir();
    let path = repo().join("scenarios/real/pt40497_amp_scale_collapse.toml");
    let out = nanhunt(&["run", path.to_str().unwrap(), "--report", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let dir = std::fs::read_dir(tmp.path()).unwrap().next().unwrap().unwrap().path();
    let trace = std::fs::read_to_string(dir.join("trace.csv")).unwrap();
    assert!(trace.starts_with("step,epoch,fold,train_loss,val_loss,grad_norm,param_norm,lr,headroom,grad_subnormal,loss_scale,skipped,"), "{}", &trace[..200]);
    // The first step is skipped (2¹⁶ overflows f16 at once); the last is the collapse's.
    assert!(trace.lines().nth(1).unwrap().contains(",6.5536e4,1,"));
    assert!(trace.lines().last().unwrap().contains(",1.28e2,1,"));
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["outcome"]["first_nonfinite"]["tensor"], "loss_scale");
    assert_eq!(summary["outcome"]["dtype"], "amp_f16");
    let out = nanhunt(&["replay", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).starts_with("identical"));
    // A changed scale is caught in its own column.
    let altered = trace.replacen(",6.5536e4,1,", ",3.2768e4,1,", 1);
    std::fs::write(dir.join("trace.csv"), altered).unwrap();
    let out = nanhunt(&["replay", dir.to_str().unwrap()]);
    assert!(out.status.code() == Some(1) && stdout(&out).contains("`loss_scale`"), "{}", stdout(&out));
}
