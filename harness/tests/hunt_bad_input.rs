//! A hunt's campaign and reports under bad or unlucky input (issue 25): a
//! SIGKILL before any finding keeps the work done, `--resume` refuses another
//! `--target` or `--shard` and a corpus folder that is not there, a divergence
//! hunt says "diverges", and every report a hunt writes loads and replays, for
//! every input kind (features, sequences, tokens, images, CSV).

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Seed 002 ex1 standardized, searched only at small learning rates: it never flips, and each run takes well under a millisecond.
fn never_flips(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(seed("s002_ex1_linreg_sgd_fix_standardize")).unwrap();
    write(dir, "calm.toml", &text.replace("[expect]", "[search]\nknobs = [\"optimizer.lr\"]\nlr = [0.001, 0.01]\n\n[expect]"))
}

fn state(corpus: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(corpus.join("state.json")).expect("state.json is written")).unwrap()
}

#[test]
fn a_hunt_killed_before_any_finding_keeps_its_runs_and_resume_continues_from_them() {
    let dir = tempdir();
    let p = never_flips(dir.path());
    let corpus = dir.path().join("corpus");
    let out = dir.path().join("out");
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = ["hunt", p.to_str().unwrap(), "--corpus", corpus.to_str().unwrap(), "--out", out.to_str().unwrap()].map(String::from).to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_nanhunt")).args(args(&["--time", "300s"])).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    assert!(child.try_wait().unwrap().is_none(), "still searching (it never flips)");
    // Child::kill is SIGKILL on Unix: no handler runs, nothing is flushed at exit.
    child.kill().unwrap();
    child.wait().unwrap();
    let saved = state(&corpus);
    let (runs, next) = (saved["runs"].as_u64().unwrap(), saved["next"].as_u64().unwrap());
    // The candidate running when the state was saved is not a run yet: it is saved to run again.
    let redo = saved.get("redo").map_or(0, |r| r.as_array().unwrap().len() as u64);
    assert!(runs > 0 && redo <= 1 && next == runs + redo, "the runs made before the kill are saved: {saved}");
    assert!(saved["findings"].as_array().unwrap().is_empty());
    // Resumed with a run limit 25 past the saved count, it makes exactly 25 more runs.
    let limit = (runs + 25).to_string();
    let resumed = nanhunt(&args(&["--resume", "--time", "20s", "--max-runs", &limit]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    assert!(stdout(&resumed).contains(&format!(": {limit} runs")), "{}", stdout(&resumed));
    let after = state(&corpus);
    // The unfinished candidate first, then new ones: 25 runs in all.
    assert_eq!((after["runs"].as_u64(), after["next"].as_u64()), (Some(runs + 25), Some(next + 25 - redo)), "continues from the saved count, not from 0");
    assert!(after.get("redo").is_none(), "nothing left to redo: {after}");
}

#[test]
fn resume_refuses_another_target_or_shard_naming_both() {
    let dir = tempdir();
    let p = never_flips(dir.path());
    let corpus = dir.path().join("corpus");
    let hunt = |extra: &[&str]| {
        let mut a = vec!["hunt", p.to_str().unwrap(), "--corpus", corpus.to_str().unwrap(), "--out", dir.path().to_str().unwrap(), "--time", "10s"];
        a.extend_from_slice(extra);
        nanhunt(&a)
    };
    let first = hunt(&["--max-runs", "20", "--target", "nan", "--shard", "1/3"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let other_target = hunt(&["--resume", "--max-runs", "40", "--target", "diverge", "--shard", "1/3"]);
    assert_eq!(other_target.status.code(), Some(2), "{}", stdout(&other_target));
    let e = stderr(&other_target);
    assert!(e.contains("--target nan") && e.contains("--target diverge"), "names both targets: {e}");
    let other_shard = hunt(&["--resume", "--max-runs", "40", "--target", "nan"]);
    assert_eq!(other_shard.status.code(), Some(2), "{}", stdout(&other_shard));
    let e = stderr(&other_shard);
    assert!(e.contains("--shard 1/3") && e.contains("--shard 0/1"), "names both shards: {e}");
    assert_eq!(state(&corpus)["runs"].as_u64(), Some(20), "a refused resume runs nothing");
    // The same target and shard continue.
    let same = hunt(&["--resume", "--max-runs", "40", "--target", "nan", "--shard", "1/3"]);
    assert_eq!(same.status.code(), Some(0), "{}", stderr(&same));
    assert_eq!(state(&corpus)["runs"].as_u64(), Some(40));
}

#[test]
fn resume_from_a_corpus_folder_that_is_not_there_is_an_error() {
    let dir = tempdir();
    let p = never_flips(dir.path());
    let corpus = dir.path().join("no-such-corpus");
    let o = nanhunt(&["hunt", p.to_str().unwrap(), "--corpus", corpus.to_str().unwrap(), "--resume", "--max-runs", "5", "--out", dir.path().join("out").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains("no-such-corpus"), "names the folder: {}", stderr(&o));
    assert!(!corpus.exists(), "nothing is started fresh");
    // A folder that holds no campaign has nothing to resume either.
    std::fs::create_dir(&corpus).unwrap();
    let o = nanhunt(&["hunt", p.to_str().unwrap(), "--corpus", corpus.to_str().unwrap(), "--resume", "--max-runs", "5", "--out", dir.path().join("out").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stderr(&o).contains("no-such-corpus") && stderr(&o).contains("state.json"), "{}", stderr(&o));
}

#[test]
fn a_divergence_hunt_says_diverges_not_non_finite() {
    // Seed 002 ex1 standardized at lr 2: full-batch SGD stops contracting past lr 0.5, so the
    // loss grows ×(4·2 − 1)² = 49 a step and passes 6 decades within 8 steps, finite all along;
    // below lr 4 nothing overflows in its 10 steps (that takes lr ≳ 26).
    let text = std::fs::read_to_string(seed("s002_ex1_linreg_sgd_fix_standardize")).unwrap();
    let dir = tempdir();
    let p = write(dir.path(), "d.toml", &text.replace("lr = 0.01", "lr = 2.0").replace("[expect]", "[search]\nknobs = [\"optimizer.lr\"]\nlr = [1.0, 4.0]\n\n[expect]"));
    let o = nanhunt(&["hunt", p.to_str().unwrap(), "--target", "diverge", "--time", "3s", "--max-runs", "20", "--out", dir.path().join("out").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.contains("the base scenario itself diverges"), "{out}");
    assert!(err.contains("the base scenario itself diverges"), "{err}");
    assert!(!out.contains("non-finite") && !err.contains("non-finite"), "a divergence is no non-finite value:\n{out}\n{err}");
    let report = std::fs::read_dir(dir.path().join("out")).unwrap().map(|e| e.unwrap().path()).find(|p| p.join("summary.md").is_file()).expect("a report");
    let md = std::fs::read_to_string(report.join("summary.md")).unwrap();
    assert!(!md.contains("non-finite"), "{md}");
}

/// A scenario of each input kind whose base fails at once (lr 1e30), with the extra files it needs.
fn every_input_kind(dir: &Path) -> Vec<(&'static str, PathBuf)> {
    let tail = "[loss]\nkind = \"mse\"\n\n[optimizer]\nkind = \"sgd\"\nlr = 1e30\n\n[train]\nepochs = 4\nbatch_size = 4\n";
    let kinds = [
        ("features", "n = 8\nfeatures = 3\ninputs = { kind = \"normal\" }\ntargets = { kind = \"normal\" }", "{ type = \"linear\", out = 4 }, { type = \"tanh\" }, { type = \"linear\", out = 1 }"),
        ("sequences", "n = 8\nfeatures = 2\nseq_len = 3\ninputs = { kind = \"normal\" }\ntargets = { kind = \"normal\" }", "{ type = \"rnn\", hidden = 3 }, { type = \"linear\", out = 1 }"),
        ("tokens", "n = 8\nseq_len = 4\ninputs = { kind = \"tokens\", vocab = 5 }\ntargets = { kind = \"next_token\" }", "{ type = \"embedding\", dim = 4 }, { type = \"linear\", out = 5 }"),
        (
            "images",
            "n = 8\nimage = { channels = 2, height = 4, width = 4 }\ninputs = { kind = \"normal\" }\ntargets = { kind = \"normal\" }",
            "{ type = \"conv2d\", channels = 2, kernel = 2 }, { type = \"relu\" }, { type = \"max_pool2d\", kernel = 2 }, { type = \"flatten\" }, { type = \"linear\", out = 1 }",
        ),
        ("csv", "inputs = { kind = \"csv\", path = \"rows.csv\", targets = [\"y\"] }", "{ type = \"linear\", out = 4 }, { type = \"linear\", out = 1 }"),
    ];
    write(dir, "rows.csv", "a,b,y\n1,2,3\n0.5,-1,2\n3,1,0\n-2,0.25,1\n1.5,1.5,-1\n0,2,0.5\n");
    kinds
        .into_iter()
        .map(|(kind, data, layers)| {
            let loss = if kind == "tokens" { tail.replace("\"mse\"", "\"cross_entropy\"") } else { tail.to_string() };
            let text = format!("name = \"{kind}\"\nseed = 3\n\n[data]\n{data}\n\n[model]\nlayers = [{layers}]\n\n{loss}");
            (kind, write(dir, &format!("{kind}.toml"), &text))
        })
        .collect()
}

#[test]
fn every_report_a_hunt_writes_loads_and_replays_for_every_input_kind() {
    let dir = tempdir();
    for (kind, p) in every_input_kind(dir.path()) {
        let run = nanhunt(&["run", p.to_str().unwrap()]);
        assert_eq!(run.status.code(), Some(1), "{kind}: the base fails as written: {}{}", stdout(&run), stderr(&run));
        let out = dir.path().join(format!("out-{kind}"));
        let start = Instant::now();
        let hunt = nanhunt(&["hunt", p.to_str().unwrap(), "--first", "--time", "5s", "--shrink-time", "5s", "--json", "--out", out.to_str().unwrap()]);
        assert_eq!(hunt.status.code(), Some(1), "{kind}: {}", stderr(&hunt));
        assert!(start.elapsed() < Duration::from_secs(12), "{kind}: took {:?}", start.elapsed());
        let reports: Vec<PathBuf> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().path()).filter(|p| p.join("repro.toml").is_file()).collect();
        assert!(!reports.is_empty(), "{kind}: a report");
        for r in &reports {
            let repro = std::fs::read_to_string(r.join("repro.toml")).unwrap();
            if ["features", "sequences", "images"].contains(&kind) {
                assert!(repro.contains("data rows: 8 → "), "{kind}: its rows are cut, so written out as values: {repro}");
            }
            assert!(nanhunt::load(&r.join("repro.toml")).is_ok(), "{kind}: repro.toml loads: {:?}\n{repro}", nanhunt::load(&r.join("repro.toml")).err());
            let replay = nanhunt(&["replay", r.to_str().unwrap()]);
            assert_eq!(replay.status.code(), Some(0), "{kind}: replays bit for bit: {}{}\n{repro}", stdout(&replay), stderr(&replay));
            let check = nanhunt(&["check", r.to_str().unwrap()]);
            assert_eq!(check.status.code(), Some(0), "{kind}: its [expect] holds: {}{}\n{repro}", stdout(&check), stderr(&check));
        }
    }
}
