//! Root causes are mechanisms: a hunt of a fixed number of runs on three bundled bases of
//! different families (an MLP, an attention model, an RNN) reports few of them (the aim: at
//! most 5 on a typical hunt, 8 on any), each explained by a rule, and every site it found is a
//! member of one.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use nanhunt::search::{hunt, HuntOptions};

#[test]
fn three_families_hunted_for_a_fixed_run_count_give_few_root_causes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // (base, runs): a 10-100-1 MLP, a masked attention classifier (its safe-softmax fix), a SimpleRNN.
    let bases =
        [("scenarios/seeds/s000_ex1_bce_mlp.toml", 40), ("scenarios/real/pt41508_attention_fully_masked_row_fix_safe_softmax.toml", 300), ("scenarios/seeds/s004_ex1_simple_rnn_adam.toml", 60)];
    for (file, runs) in bases {
        let base = nanhunt::load(&root.join(file)).unwrap();
        // A run count, not a time, ends the search; the time only bounds a hung run.
        let opts = HuntOptions { max_runs: Some(runs), budget: Duration::from_secs(600), shrink_budget: Duration::from_secs(60), jobs: 1, ..HuntOptions::default() };
        let r = hunt(&base, &opts, None, &|_| {}).unwrap();
        assert_eq!(r.progress.runs, runs, "{file}: the run budget is what ended the search");
        assert!(!r.root_causes.is_empty(), "{file}: each base flips within {runs} runs");
        assert!(r.root_causes.len() <= 5, "{file}: {} root causes over {} sites:\n{}", r.root_causes.len(), r.findings.len(), nanhunt::report::hunt_summary(&base.name, &r, opts.budget));
        assert!(r.root_causes.len() <= r.findings.iter().map(|f| f.triggers.len()).sum::<usize>());
        // Every one has a rule that explains it.
        let unexplained: Vec<String> = r.root_causes.iter().filter(|c| c.mechanism.rule.is_none()).map(|c| format!("{} at {}", c.mechanism.describe(), c.location)).collect();
        assert!(unexplained.is_empty(), "{file}: unexplained {unexplained:?}");
        // Every site is a member of a root cause, and every run that reached a trigger is counted once.
        let sites: BTreeSet<&str> = r.findings.iter().map(|f| f.signature.as_str()).collect();
        let members: BTreeSet<&str> = r.root_causes.iter().flat_map(|c| c.findings.iter().map(String::as_str)).collect();
        assert_eq!(sites, members, "{file}");
        let runs_in_triggers: usize = r.findings.iter().flat_map(|f| f.triggers.iter().map(|t| t.count)).sum();
        assert_eq!(r.root_causes.iter().map(|c| c.count).sum::<usize>(), runs_in_triggers, "{file}");
    }
}
