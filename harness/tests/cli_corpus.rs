//! A corpus kept over many nights stays bounded: `nanhunt corpus prune DIR` cuts a real hunt's
//! corpus to its cap (entries and bytes), keeps the best-scored mutants and every finding, and
//! `hunt --resume` carries on from the pruned folder within its own cap.

mod common;
use common::*;

use serde_json::Value;

/// The campaign state a hunt saved in its corpus folder.
fn state(dir: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap()
}

fn scores(st: &Value) -> Vec<f64> {
    st["corpus"].as_array().unwrap().iter().map(|m| m["score"].as_f64().unwrap()).collect()
}

/// The bytes of the first `n` entries: the length of each one's JSON.
fn bytes(st: &Value, n: usize) -> usize {
    st["corpus"].as_array().unwrap().iter().take(n).map(|m| serde_json::to_string(m).unwrap().len()).sum()
}

#[test]
fn a_pruned_corpus_keeps_the_best_and_every_finding_and_resumes() {
    let tmp = tempdir();
    let (corpus, out) = (tmp.path().join("corpus"), tmp.path().join("out"));
    let (c, o) = (corpus.to_str().unwrap(), out.to_str().unwrap());
    let scenario = seed("s001_ex3_bce_saturated");
    let hunt = |extra: &[&str]| nanhunt(&[&["hunt", scenario.to_str().unwrap(), "--time", "60s", "--shrink-time", "30s", "--corpus", c, "--out", o], extra].concat());
    let first = hunt(&["--max-runs", "150"]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    let before = state(&corpus);
    let mut best = scores(&before);
    assert!(best.len() > 5, "a corpus to prune: {} entries", best.len());
    best.sort_by(|a, b| b.total_cmp(a));

    // To five entries: the five best scores stay, every finding with them.
    let pruned = nanhunt(&["corpus", "prune", c, "--max-entries", "5"]);
    assert_eq!(pruned.status.code(), Some(0), "{}", stderr(&pruned));
    let after = state(&corpus);
    assert_eq!(scores(&after), best[..5]);
    assert_eq!(after["findings"], before["findings"]);
    let said = format!("before {} entries, {} bytes; after 5 entries, {} bytes", best.len(), bytes(&before, usize::MAX), bytes(&after, 5));
    assert!(stdout(&pruned).contains(&said), "{}\nwanted: {said}", stdout(&pruned));

    // To the bytes of the best three: three stay.
    let three = bytes(&after, 3).to_string();
    let pruned = nanhunt(&["corpus", "prune", c, "--max-bytes", &three]);
    assert_eq!(pruned.status.code(), Some(0), "{}", stderr(&pruned));
    assert_eq!(scores(&state(&corpus)), best[..3]);

    // The pruned folder resumes, within its cap, and keeps its findings.
    let resumed = hunt(&["--resume", "--max-runs", "200", "--corpus-max-entries", "4"]);
    assert!(resumed.status.code().is_some_and(|c| c <= 1), "{}", stderr(&resumed));
    let st = state(&corpus);
    assert_eq!(st["runs"], 200);
    assert!((1..=4).contains(&scores(&st).len()), "{:?}", scores(&st));
    assert!(st["findings"].as_array().unwrap().len() >= before["findings"].as_array().unwrap().len());
    let findings = std::fs::read_to_string(out.join("findings.jsonl")).unwrap();
    assert_eq!(findings.lines().count(), st["findings"].as_array().unwrap().len(), "findings.jsonl holds the campaign's findings");
}

#[test]
fn pruning_what_is_not_a_corpus_is_a_clear_error() {
    let tmp = tempdir();
    let missing = tmp.path().join("nope");
    let out = nanhunt(&["corpus", "prune", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no such folder"), "{}", stderr(&out));
    let out = nanhunt(&["corpus", "prune", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a corpus") && stderr(&out).contains("state.json"), "{}", stderr(&out));
    write(tmp.path(), "state.json", "{\"next\": 1}");
    let out = nanhunt(&["corpus", "prune", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("corrupt campaign state"), "{}", stderr(&out));
    let out = nanhunt(&["corpus", "prune", tmp.path().to_str().unwrap(), "--max-entries", "0"]);
    assert_eq!(out.status.code(), Some(2), "a cap of nothing is refused");
}
