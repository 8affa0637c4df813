//! Bounded corpora: the cap on a campaign's corpus of mutants (entries and bytes, [`Cap`]) and the
//! prune that keeps it within the cap ([`prune`], [`prune_dir`] for `nanhunt corpus prune`). The
//! best-scored mutants (`score.rs`) stay; a mutant that is a finding's witness (a trigger's
//! minimal or found candidate, or a pending flip's) is never dropped, and findings themselves are
//! never touched, so `findings.jsonl` and `root_causes.jsonl` still replay after a prune.

use std::path::Path;

use super::corpus::{Mutant, State, STATE};
use super::mutation::Mutation;
use crate::error::{Error, Result};

/// Most corpus entries kept by default (`--corpus-max-entries`).
pub const DEFAULT_MAX_ENTRIES: usize = 64;

/// Most corpus bytes kept by default (`--corpus-max-bytes`): 1 MiB of the entries' JSON.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 20;

/// The most a corpus keeps: entries, and bytes of their JSON as `state.json` holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// Most entries.
    pub max_entries: usize,
    /// Most bytes (the sum of the entries' JSON lengths).
    pub max_bytes: u64,
}

impl Default for Cap {
    fn default() -> Self {
        Cap { max_entries: DEFAULT_MAX_ENTRIES, max_bytes: DEFAULT_MAX_BYTES }
    }
}

/// A corpus's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Size {
    /// Entries (mutants).
    pub entries: usize,
    /// Bytes of their JSON.
    pub bytes: u64,
}

impl Size {
    /// The size of these entries.
    pub fn of(corpus: &[Mutant]) -> Size {
        Size { entries: corpus.len(), bytes: corpus.iter().map(entry_bytes).sum() }
    }

    /// Whether it is within `cap`.
    pub fn within(&self, cap: Cap) -> bool {
        self.entries <= cap.max_entries && self.bytes <= cap.max_bytes
    }
}

/// What a prune did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// The corpus before.
    pub before: Size,
    /// The corpus after.
    pub after: Size,
    /// Witnesses kept whatever the cap (they may keep the corpus over it).
    pub witnesses: usize,
}

/// The bytes of one entry: the length of its JSON.
pub fn entry_bytes(m: &Mutant) -> u64 {
    serde_json::to_vec(m).map_or(0, |v| v.len() as u64)
}

/// Whether a mutant is a finding's witness: a trigger's minimal or found candidate, or a pending flip's.
fn is_witness(st: &State, m: &[Mutation]) -> bool {
    let trigger = |t: &super::finding::Trigger| t.mutations == m || t.found == m;
    st.findings.iter().any(|f| f.triggers.iter().any(trigger)) || st.pending.iter().any(|p| p.found == m)
}

/// Prunes the state's corpus to `cap`: every witness stays; of the others, the best-scored are
/// kept while they fit (one that would pass the byte cap is skipped for smaller ones after it).
/// The corpus is left sorted by score, best first (ties in their former order).
pub fn prune(st: &mut State, cap: Cap) -> Pruned {
    let before = Size::of(&st.corpus);
    let mut all = std::mem::take(&mut st.corpus);
    all.sort_by(|a, b| b.score.total_cmp(&a.score));
    let witness: Vec<bool> = all.iter().map(|m| is_witness(st, &m.mutations)).collect();
    let held = all.iter().zip(&witness).filter(|(_, &w)| w);
    let mut room = Size { entries: held.clone().count(), bytes: held.map(|(m, _)| entry_bytes(m)).sum() };
    let witnesses = room.entries;
    for (m, w) in all.into_iter().zip(witness) {
        let bytes = entry_bytes(&m);
        if !w {
            if room.entries >= cap.max_entries || room.bytes + bytes > cap.max_bytes {
                continue;
            }
            room = Size { entries: room.entries + 1, bytes: room.bytes + bytes };
        }
        st.corpus.push(m);
    }
    Pruned { before, after: Size::of(&st.corpus), witnesses }
}

/// Prunes the corpus saved in `dir` (a `hunt --corpus` folder) to `cap`, rewriting its
/// `state.json` atomically when anything is dropped. A missing folder, or one without a
/// campaign, is an error.
pub fn prune_dir(dir: &Path, cap: Cap) -> Result<Pruned> {
    let refuse = |message: String| Err(Error::Invalid { location: dir.display().to_string(), key: "corpus".into(), message });
    if !dir.is_dir() {
        return refuse("no such folder: name a `hunt --corpus` folder".into());
    }
    if !dir.join(STATE).is_file() {
        return refuse(format!("not a corpus: it holds no {STATE} (a `hunt --corpus` folder does)"));
    }
    let mut st = State::load(dir)?;
    if st.scenario.is_empty() {
        return refuse(format!("not a corpus: its {STATE} names no scenario (a `hunt --corpus` folder's does)"));
    }
    let pruned = prune(&mut st, cap);
    if pruned.after != pruned.before {
        st.save(dir)?;
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Knob;

    fn mutant(lr: f64, score: f64) -> Mutant {
        Mutant { mutations: vec![Mutation::new(Knob::Lr, lr)], score }
    }

    fn scores(st: &State) -> Vec<f64> {
        st.corpus.iter().map(|m| m.score).collect()
    }

    #[test]
    fn an_entry_is_as_many_bytes_as_its_json() {
        // Written by hand: the JSON of a mutant as state.json holds it.
        let json = r#"{"mutations":[{"knob":"optimizer.lr","value":0.5}],"score":0.25}"#;
        assert_eq!(entry_bytes(&mutant(0.5, 0.25)), json.len() as u64);
        assert_eq!(Size::of(&[mutant(0.5, 0.25), mutant(0.5, 0.25)]), Size { entries: 2, bytes: 2 * json.len() as u64 });
    }

    #[test]
    fn a_cap_on_entries_keeps_the_best_scored() {
        let mut st = State { corpus: vec![mutant(1.0, 0.1), mutant(2.0, 0.9), mutant(3.0, 0.5), mutant(4.0, 0.7)], ..State::default() };
        let one = entry_bytes(&st.corpus[0]);
        let p = prune(&mut st, Cap { max_entries: 2, max_bytes: DEFAULT_MAX_BYTES });
        assert_eq!(scores(&st), [0.9, 0.7]);
        assert_eq!(st.corpus[0].mutations, [Mutation::new(Knob::Lr, 2.0)]);
        // Every entry here is as long as the first (one digit of lr, one of score after `0.`).
        assert_eq!(p, Pruned { before: Size { entries: 4, bytes: 4 * one }, after: Size { entries: 2, bytes: 2 * one }, witnesses: 0 });
        assert!(p.after.within(Cap { max_entries: 2, max_bytes: 2 * one }) && !p.before.within(Cap { max_entries: 2, max_bytes: u64::MAX }));
        // Within the cap already: nothing moves.
        let again = prune(&mut st, Cap::default());
        assert_eq!((again.before, again.after, scores(&st)), (p.after, p.after, vec![0.9, 0.7]));
    }

    #[test]
    fn a_cap_on_bytes_skips_a_long_entry_for_shorter_ones() {
        let long = Mutant { mutations: vec![Mutation::new(Knob::Lr, 0.5), Mutation::new(Knob::Epochs, 9u32)], score: 0.5 };
        // Hand-written JSON: the short entries are 63 bytes, the long one 97.
        let (short_json, long_json) =
            (r#"{"mutations":[{"knob":"optimizer.lr","value":1.0}],"score":0.9}"#, r#"{"mutations":[{"knob":"optimizer.lr","value":0.5},{"knob":"train.epochs","value":9}],"score":0.5}"#);
        let (short, long_bytes) = (short_json.len() as u64, long_json.len() as u64);
        assert_eq!((entry_bytes(&mutant(1.0, 0.9)), entry_bytes(&long), short, long_bytes), (short, long_bytes, 63, 97));
        let corpus = vec![mutant(2.0, 0.3), long.clone(), mutant(1.0, 0.9)];
        // 126 bytes: the best (63) fits, the long one (63 + 97) does not, the third (63 + 63) does.
        let mut st = State { corpus: corpus.clone(), ..State::default() };
        let p = prune(&mut st, Cap { max_entries: 10, max_bytes: 126 });
        assert_eq!((scores(&st), p.after), (vec![0.9, 0.3], Size { entries: 2, bytes: 126 }));
        // 160 bytes: the best two (63 + 97) fill it; the third would make 223.
        let mut st = State { corpus, ..State::default() };
        let p = prune(&mut st, Cap { max_entries: 10, max_bytes: 160 });
        assert_eq!((scores(&st), p.after), (vec![0.9, 0.5], Size { entries: 2, bytes: 160 }));
    }

    #[test]
    fn a_findings_witness_is_never_dropped() {
        // The finding's trigger is optimizer.lr = 0.5: the worst-scored mutant here.
        let finding = crate::search::corpus::tests::finding("a", 1, 1.0);
        let witness = mutant(0.5, 0.01);
        let corpus = vec![witness.clone(), mutant(1.0, 0.8), mutant(2.0, 0.6)];
        let mut st = State { corpus: corpus.clone(), findings: vec![finding.clone()], ..State::default() };
        // The witness takes one of the two places; the best of the rest takes the other.
        let p = prune(&mut st, Cap { max_entries: 2, max_bytes: DEFAULT_MAX_BYTES });
        assert_eq!((st.corpus.clone(), p.witnesses), (vec![mutant(1.0, 0.8), witness.clone()], 1));
        assert_eq!(st.findings, std::slice::from_ref(&finding), "findings are never touched");
        // A cap the witness alone passes keeps it, and says the corpus is still over.
        let mut st = State { corpus, findings: vec![finding], ..State::default() };
        let cap = Cap { max_entries: 1, max_bytes: 10 };
        let p = prune(&mut st, cap);
        assert_eq!(st.corpus, [witness]);
        assert!(!p.after.within(cap));
    }

    #[test]
    fn a_corpus_folder_is_pruned_atomically_and_bad_folders_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = prune_dir(&dir.path().join("nope"), Cap::default()).unwrap_err().to_string();
        assert!(missing.contains("no such folder"), "{missing}");
        let empty = prune_dir(dir.path(), Cap::default()).unwrap_err().to_string();
        assert!(empty.contains("not a corpus") && empty.contains("state.json"), "{empty}");
        std::fs::write(dir.path().join(STATE), "[1, 2]").unwrap();
        let corrupt = prune_dir(dir.path(), Cap::default()).unwrap_err().to_string();
        assert!(corrupt.contains("corrupt campaign state"), "{corrupt}");
        let st = State { scenario: "h".into(), runs: 7, corpus: vec![mutant(1.0, 0.2), mutant(2.0, 0.4), mutant(3.0, 0.3)], ..State::default() };
        st.save(dir.path()).unwrap();
        let p = prune_dir(dir.path(), Cap { max_entries: 2, max_bytes: DEFAULT_MAX_BYTES }).unwrap();
        assert_eq!((p.before.entries, p.after.entries), (3, 2));
        let back = State::load(dir.path()).unwrap();
        assert_eq!((scores(&back), back.runs), (vec![0.4, 0.3], 7));
        // Only state.json: no temporary file is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
