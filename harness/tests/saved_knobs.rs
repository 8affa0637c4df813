//! Files written by `nanhunt` before the knob table (commit 4c2bbe9) still load,
//! and write back as they were: a hunt's `findings.jsonl` and a report's
//! `summary.json` (copied under `tests/fixtures/knobs/`).

use std::path::{Path, PathBuf};

use nanhunt::scenario::{DTypeName, Knob, Precision};
use nanhunt::search::{read_findings, Mutation};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/knobs").join(name)
}

#[test]
fn old_findings_load_with_their_mutations() {
    let findings = read_findings(&fixture("findings.jsonl")).unwrap();
    assert_eq!(findings.len(), 2);
    assert_eq!(findings[0].triggers[0].mutations, [Mutation::new(Knob::Dtype, DTypeName::F16)]);
    assert_eq!(findings[1].triggers[0].mutations, [Mutation::new(Knob::InitScale, 4.92), Mutation::new(Knob::Precision, Precision::AmpF16)]);
    assert_eq!(findings[1].triggers[0].thresholds[0].knob, Knob::InitScale);
    // Each line writes back to the same JSON it was read from.
    let text = std::fs::read_to_string(fixture("findings.jsonl")).unwrap();
    for (line, finding) in text.lines().zip(&findings) {
        let old: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(serde_json::to_value(finding).unwrap(), old);
    }
}

#[test]
fn an_old_report_summary_loads_and_writes_back_the_same() {
    let summary = nanhunt::report::read_summary(&fixture("report")).unwrap();
    let triggers: Vec<String> = summary.triggers.iter().map(|t| nanhunt::search::describe(&t.mutations)).collect();
    assert_eq!(triggers[0], "model.init_scale = 4.92, train.precision = amp_f16");
    let old: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("report/summary.json")).unwrap()).unwrap();
    assert_eq!(serde_json::to_value(&summary).unwrap(), old);
}
