//! End-to-end tests of `nanhunt hunt` and `merge`: findings on seed scenarios
//! with independently checked thresholds, resuming a killed campaign, merging shards,
//! `--known` and `errors.jsonl`.

mod common;
use common::*;
use nanhunt::search::{mutate, Mutation, Site};

fn findings(out: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(out).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The findings a hunt wrote to its `--out`.
fn findings_in(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("findings.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn property_engine_finds_and_shrinks_flips_on_three_seeds() {
    let mut checked = 0;
    for name in ["s002_ex1_linreg_sgd_fix_standardize", "s004_ex1_simple_rnn_adam", "s001_ex2_reciprocal_preprocessing_fix_guarded_reciprocal"] {
        let dir = tempdir();
        let path = seed(name);
        let out = nanhunt(&["hunt", path.to_str().unwrap(), "--engine", "property", "--time", "60s", "--first", "--json", "--out", dir.path().to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{name}: nothing found\n{}", stderr(&out));
        let base = nanhunt::load(&path).unwrap();
        for f in findings(&out) {
            let triggers = f["triggers"].as_array().unwrap();
            assert!(!triggers.is_empty(), "{name}: a root cause has a trigger");
            for trig in triggers {
                let muts: Vec<Mutation> = serde_json::from_value(trig["mutations"].clone()).unwrap();
                assert!(!muts.is_empty() && muts.len() <= 3, "{name}: {muts:?}");
                // The minimal mutations flip the base by themselves, and each one is needed
                // (1-minimal) for a flip at the same site: a trigger stays with its root cause, so
                // a reduction that fails elsewhere (another tensor or kind) does not count.
                let site_of = |m: &[Mutation]| mutate(&base, m).and_then(|s| Site::of(&nanhunt::run(&s)));
                let site = site_of(&muts);
                let flips = |m: &[Mutation]| site.is_some() && site_of(m) == site;
                assert!(flips(&muts), "{name}");
                for i in 0..muts.len() {
                    let mut without = muts.clone();
                    without.remove(i);
                    assert!(!flips(&without), "{name}: {:?} is not needed", muts[i]);
                }
                // Each threshold, re-run independently: at it, it flips; just below, it stays finite.
                for t in trig["thresholds"].as_array().unwrap() {
                    let knob = t["knob"].as_str().unwrap();
                    let at = |v: f64| {
                        let m: Vec<Mutation> = muts.iter().map(|m| if m.knob().to_string() == knob { m.with_value(v) } else { m.clone() }).collect();
                        flips(&m)
                    };
                    assert!(at(t["flips_at"].as_f64().unwrap()), "{name}: {knob} at threshold");
                    assert!(!at(t["stays_finite_at"].as_f64().unwrap()), "{name}: {knob} just below threshold");
                    checked += 1;
                }
            }
            // A report was written, and it replays.
            let report = f["report"].as_str().unwrap();
            assert_eq!(nanhunt(&["replay", report]).status.code(), Some(0), "{name}: replay");
        }
    }
    assert!(checked >= 2, "at least two thresholds were checked, got {checked}");
}

#[test]
fn resume_after_kill_loses_no_finding() {
    let tmp = tempdir();
    let corpus = tmp.path().join("corpus");
    let out_dir = tmp.path().join("out");
    let path = seed("s004_ex1_simple_rnn_adam");
    let args = |extra: &[&str]| {
        let mut a = vec!["hunt", path.to_str().unwrap(), "--corpus", corpus.to_str().unwrap(), "--out", out_dir.to_str().unwrap(), "--json"];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nanhunt")).args(args(&["--time", "120s"])).stdout(std::process::Stdio::null()).spawn().unwrap();
    // Wait for the first finding to be saved, then kill without warning.
    let state = corpus.join("state.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(100);
    let saved = loop {
        let s: Option<serde_json::Value> = std::fs::read_to_string(&state).ok().and_then(|t| serde_json::from_str(&t).ok());
        if let Some(s) = s.filter(|s| !s["findings"].as_array().unwrap().is_empty()) {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "no finding saved in time");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let before: Vec<String> = saved["findings"].as_array().unwrap().iter().map(|f| f["signature"].as_str().unwrap().to_string()).collect();
    // Without --resume the campaign is not overwritten.
    let refused = nanhunt(&args(&["--time", "1s"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(refused.status.code(), Some(2));
    let out = nanhunt(&args(&["--time", "2s", "--resume"]).iter().map(String::as_str).collect::<Vec<_>>());
    let after: Vec<String> = findings(&out).iter().map(|f| f["signature"].as_str().unwrap().to_string()).collect();
    for sig in &before {
        assert!(after.contains(sig), "{sig} lost after resume: {after:?}");
    }
    let resumed: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert!(resumed["next"].as_u64() > saved["next"].as_u64(), "the resumed campaign continues numbering");
}

#[test]
fn shards_merge_into_one_finding_per_signature() {
    let tmp = tempdir();
    let path = seed("s002_ex1_linreg_sgd_fix_standardize");
    let mut dirs = Vec::new();
    for shard in ["0/2", "1/2"] {
        let d = tmp.path().join(shard.replace('/', "of"));
        let out = nanhunt(&["hunt", path.to_str().unwrap(), "--shard", shard, "--max-runs", "150", "--time", "60s", "--out", d.to_str().unwrap()]);
        assert!(out.status.code().unwrap() <= 1, "{}", stderr(&out));
        if d.join("findings.jsonl").exists() {
            dirs.push(d);
        }
    }
    assert!(!dirs.is_empty(), "the shards found something");
    let merged = tmp.path().join("merged");
    let mut args = vec!["merge".to_string()];
    args.extend(dirs.iter().map(|d| d.display().to_string()));
    args.extend(["--out".to_string(), merged.display().to_string()]);
    let out = nanhunt(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(merged.join("findings.jsonl")).unwrap();
    let sigs: Vec<String> = text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["signature"].as_str().unwrap().to_string()).collect();
    let mut unique = sigs.clone();
    unique.dedup();
    assert_eq!(sigs, unique, "one line per signature");
    for l in text.lines() {
        let f: serde_json::Value = serde_json::from_str(l).unwrap();
        assert!(std::path::Path::new(f["report"].as_str().unwrap()).join("repro.toml").exists());
    }
    // The merged sites are grouped again into root causes, each site in one; the error logs are merged.
    let causes: Vec<serde_json::Value> = std::fs::read_to_string(merged.join("root_causes.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut members: Vec<String> = causes.iter().flat_map(|c| c["findings"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string())).collect();
    members.sort();
    members.dedup();
    let mut sites = sigs.clone();
    sites.sort();
    assert_eq!(members, sites);
    assert!(merged.join("errors.jsonl").is_file());
}

#[test]
fn known_root_causes_are_counted_but_not_new() {
    let tmp = tempdir();
    let path = seed("s004_ex3_bce_validation");
    let hunt = |out: &str, extra: &[&str]| {
        let out_dir = tmp.path().join(out);
        let mut args = vec!["hunt", path.to_str().unwrap(), "--max-runs", "300", "--time", "60s", "--jobs", "1", "--out", out_dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        (nanhunt(&args), out_dir)
    };
    let (first, a) = hunt("a", &[]);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    let causes = |dir: &std::path::Path| -> Vec<serde_json::Value> { std::fs::read_to_string(dir.join("root_causes.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect() };
    let found = causes(&a);
    assert!(!found.is_empty() && found.iter().all(|c| c.get("known").is_none()));
    // Every site finding is a member of a root cause.
    let sites: std::collections::BTreeSet<String> = findings_in(&a).iter().map(|f| f["signature"].as_str().unwrap().to_string()).collect();
    let members: std::collections::BTreeSet<String> = found.iter().flat_map(|c| c["findings"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string())).collect();
    assert_eq!(sites, members);
    // The same hunt knowing the first one's findings (by file, or by its directory) finds nothing new: exit 0.
    for known in [a.join("findings.jsonl"), a.clone()] {
        let (again, b) = hunt("b", &["--known", known.to_str().unwrap()]);
        assert_eq!(again.status.code(), Some(0), "{}{}", stdout(&again), stderr(&again));
        assert!(causes(&b).iter().all(|c| c["known"] == true));
        assert!(stdout(&again).contains(&format!("0 new, {} known", found.len())), "{}", stdout(&again));
    }
    // Knowing nothing of this base (an empty file, another scenario's findings), every root cause is new: exit 1.
    std::fs::write(tmp.path().join("empty.jsonl"), "").unwrap();
    let other: String = std::fs::read_to_string(a.join("findings.jsonl")).unwrap().replace("\"scenario\":\"s004_ex3_bce_validation\"", "\"scenario\":\"another\"");
    std::fs::write(tmp.path().join("other.jsonl"), other).unwrap();
    for known in ["empty.jsonl", "other.jsonl"] {
        let (out, c) = hunt("c", &["--known", tmp.path().join(known).to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{known}: {}", stderr(&out));
        assert!(causes(&c).iter().all(|c| c.get("known").is_none()), "{known}");
    }
    // A --known that is not there is an error.
    let (missing, _) = hunt("d", &["--known", tmp.path().join("nowhere").to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("nowhere"), "{}", stderr(&missing));
}

#[test]
fn errors_are_written_once_per_message_with_a_candidate_that_meets_them() {
    let dir = tempdir();
    // Seed 004 ex3 with Nesterov SGD: validation refuses another optimizer, or no momentum, with
    // Nesterov on (knobs that do not apply are not drawn; values that do not validate are errors).
    let text = std::fs::read_to_string(seed("s004_ex3_bce_validation")).unwrap();
    let nesterov = text.replace("kind = \"adam\"\nlr = 0.001\neps = 1e-7", "kind = \"sgd\"\nlr = 0.001\nmomentum = 0.9\nnesterov = true\n#");
    assert_ne!(nesterov, text);
    let path = dir.path().join("nesterov.toml");
    std::fs::write(&path, nesterov).unwrap();
    let out = nanhunt(&["hunt", path.to_str().unwrap(), "--max-runs", "300", "--time", "60s", "--jobs", "1", "--out", dir.path().to_str().unwrap()]);
    assert!(out.status.code().unwrap() <= 1, "{}", stderr(&out));
    let text = stdout(&out);
    let said: u64 = text.split(" error(s)").next().and_then(|h| h.rsplit(' ').next()).and_then(|n| n.parse().ok()).expect("the summary counts errors");
    let errors: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("errors.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(said > 0 && !errors.is_empty(), "this base's space has values that do not validate together\n{text}");
    assert!(errors.iter().all(|e| e["message"].as_str().unwrap().contains("optimizer.nesterov")), "{errors:?}");
    assert_eq!(errors.iter().map(|e| e["count"].as_u64().unwrap()).sum::<u64>(), said, "every error is in errors.jsonl once");
    let messages: Vec<&str> = errors.iter().map(|e| e["message"].as_str().unwrap()).collect();
    let mut unique = messages.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), messages.len(), "one line per message");
    // Most met first; the summary shows the top three.
    assert!(errors.windows(2).all(|w| w[0]["count"].as_u64() >= w[1]["count"].as_u64()));
    for m in messages.iter().take(3) {
        assert!(text.contains(m), "{m} not in the summary\n{text}");
    }
    // Each line's candidate, applied to the base again, meets its message.
    let base = nanhunt::load(&path).unwrap();
    for e in &errors {
        let muts: Vec<Mutation> = serde_json::from_value(e["mutations"].clone()).unwrap();
        let got = match nanhunt::search::try_mutate(&base, &muts) {
            Err(err) => err.to_string(),
            Ok(s) => nanhunt::run(&s).error.unwrap_or_default(),
        };
        assert_eq!(got, e["message"].as_str().unwrap());
    }
}
