//! What a kill must not lose: the candidates a campaign has reserved (and counted as runs) but
//! whose result it has not recorded yet, and the new flips it is minimizing. The campaign's
//! snapshot (`Campaign::snapshot`, what `state.json` holds) saves the first as `State::redo`,
//! candidates a `--resume` runs again first and that are not counted as runs until then, and the
//! second as pending flips with their repeats so far, finished in the shrink phase. So a campaign
//! killed at any moment and resumed makes the same runs and counts the same hits as one that was
//! never killed (`scripts/soak.sh` checks it for an hour of SIGKILLs). A worker records a result
//! and settles its candidate under the same lock, so no snapshot sees one without the other.

use std::collections::{BTreeMap, BTreeSet};

use crate::search::corpus::State;
use crate::search::finding::Pending;

/// Candidates reserved and not yet recorded, and flips being minimized.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    /// Fresh candidate indices (within the shard) taken by a worker.
    running: BTreeSet<u64>,
    /// New flips being minimized, by key, as found.
    shrinking: BTreeMap<String, Pending>,
}

impl InFlight {
    /// Fresh candidate `k` is taken by a worker.
    pub(super) fn start(&mut self, k: u64) {
        self.running.insert(k);
    }

    /// Fresh candidate `k`'s result is recorded (none for a deferred candidate, which is not saved).
    pub(super) fn settle(&mut self, k: Option<u64>) {
        if let Some(k) = k {
            self.running.remove(&k);
        }
    }

    /// A new flip is being minimized.
    pub(super) fn shrink(&mut self, p: Pending) {
        self.shrinking.insert(p.key.clone(), p);
    }

    /// A flip's minimization ended: it is registered or parked in the state itself.
    pub(super) fn shrunk(&mut self, key: &str) {
        self.shrinking.remove(key);
    }

    /// Saves into a copy of the state what a kill now would lose: the running candidates, to run
    /// again and not counted as runs; the flips being minimized, as pending with `repeats(key)`
    /// more hits, each counted once.
    pub(super) fn save_into(&self, s: &mut State, repeats: impl Fn(&str) -> usize) {
        s.runs -= self.running.len() as u64;
        s.redo.extend(self.running.iter().copied());
        s.redo.sort_unstable();
        let new: Vec<Pending> = self.shrinking.values().filter(|p| !s.pending.iter().any(|q| q.key == p.key)).cloned().collect();
        for mut p in new {
            p.count += repeats(&p.key);
            s.pending.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Location;

    fn pending(key: &str, count: usize) -> Pending {
        Pending { key: key.into(), found: vec![], location: Location::default(), dtype: "f32".into(), count, seconds_to_find: 0.0, runs_to_find: 1 }
    }

    #[test]
    fn a_snapshot_holds_running_candidates_to_redo_and_shrinking_flips_as_pending() {
        let mut f = InFlight::default();
        let mut s = State { next: 9, runs: 9, redo: vec![2], ..State::default() };
        for k in [4, 7, 8] {
            f.start(k);
        }
        f.settle(Some(7));
        f.settle(None);
        f.shrink(pending("a", 1));
        f.shrink(pending("b", 1));
        f.shrunk("b");
        f.save_into(&mut s, |key| if key == "a" { 3 } else { 0 });
        // Nine taken, two of them (4 and 8) still running: seven made, and 2 (saved before) still to redo.
        assert_eq!((s.runs, s.next, s.redo), (7, 9, vec![2, 4, 8]));
        // The flip and its three repeats so far: four hits.
        assert_eq!(s.pending, [pending("a", 4)]);
    }
}
