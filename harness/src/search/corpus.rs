//! What a campaign keeps on disk: the ranked corpus of mutants, the findings
//! (failure sites), the error log and the next candidate index, each written atomically so a killed run
//! resumes with nothing lost; and merging the findings of sharded campaigns.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::finding::{Finding, Pending, Target, Trigger};
use super::mutation::{slot, Mutation};
use crate::error::{Error, Result};

/// A raw flip already minimized, as a campaign state saves it: its key (site and knob names as
/// found), the signature of the site its hits count for, and the knobs of the trigger they count for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flip {
    /// The raw flip's key.
    pub key: String,
    /// The signature of the finding (site) it counts for.
    pub site: String,
    /// The mutations of the trigger it counts for.
    pub trigger: Vec<Mutation>,
}

/// A scored mutant kept for the guided engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mutant {
    /// Its mutations.
    pub mutations: Vec<Mutation>,
    /// Its instability score: +∞ for a run non-finite but not of the target (`--target nan` meeting
    /// an Inf), which JSON writes as `null` and which reads back as +∞.
    #[serde(deserialize_with = "infinite_if_null")]
    pub score: f64,
}

/// A score: `null` (how serde_json writes +∞) reads as +∞, so such a corpus resumes and prunes.
fn infinite_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Option::<f64>::deserialize(d).map(|s| s.unwrap_or(f64::INFINITY))
}

/// A campaign's saved state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct State {
    /// Hash of the base scenario the campaign belongs to (a corpus is refused for any other).
    #[serde(default)]
    pub scenario: String,
    /// What the campaign hunts (`--target`); a resume with another is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Target>,
    /// The shard `(i, n)` it searches (`--shard i/n`); a resume with another is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<(u64, u64)>,
    /// Next candidate counter (within this shard).
    pub next: u64,
    /// Candidate runs made so far.
    pub runs: u64,
    /// Candidates that were invalid, errored or panicked.
    #[serde(default)]
    pub errors: u64,
    /// Candidates cut off at their time limit.
    #[serde(default)]
    pub timeouts: u64,
    /// The best-scored mutants.
    pub corpus: Vec<Mutant>,
    /// Failure sites so far (grouped into root causes by `root_cause`).
    pub findings: Vec<Finding>,
    /// Flips whose minimization has not finished.
    #[serde(default)]
    pub pending: Vec<Pending>,
    /// Candidates (indices within the shard, below `next`) taken but not run to the end when the
    /// state was saved: a `--resume` runs them first; they are not counted in `runs` until then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redo: Vec<u64>,
    /// Raw flips already minimized, so a resumed campaign counts their repeats where this one did
    /// (a flip whose minimal trigger fails at another site is not found again from the findings).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flips: Vec<Flip>,
    /// Why candidates could not run: each message once, with its count and a candidate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_log: Vec<super::errors::ErrorEntry>,
}

/// The file a campaign's state is saved in.
pub(super) const STATE: &str = "state.json";

impl State {
    /// Loads a saved state (empty if the directory has none).
    pub fn load(dir: &Path) -> Result<State> {
        let p = dir.join(STATE);
        match std::fs::read_to_string(&p) {
            Ok(text) => {
                let mut st: State = serde_json::from_str(&text).map_err(|source| Error::Json { path: p, what: "corrupt campaign state", source })?;
                st.corpus.retain(|m| !m.mutations.is_empty());
                Ok(st)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    /// Takes the state on as the campaign of the scenario hashed `hash`, hunting `target` in
    /// `shard`: a state of another scenario, target or shard is refused (naming both), since
    /// continuing it would mix the results of two campaigns. `dir` is where it was loaded from.
    pub fn adopt(&mut self, dir: Option<&Path>, name: &str, hash: String, target: Target, shard: (u64, u64)) -> Result<()> {
        let location = dir.map_or(String::new(), |d| d.display().to_string());
        let refuse = |key: &str, message: String| Err(Error::Invalid { location: location.clone(), key: key.into(), message });
        if !self.scenario.is_empty() && self.scenario != hash {
            return refuse("corpus", format!("this campaign belongs to another scenario than `{name}`: use a fresh --corpus"));
        }
        if let Some(was) = self.target.filter(|&t| t != target) {
            return refuse("target", format!("this campaign was started with --target {}, not --target {}: resume it with --target {}, or use a fresh --corpus", flag(was), flag(target), flag(was)));
        }
        if let Some((i, n)) = self.shard.filter(|&s| s != shard) {
            let asked = format!("{}/{}", shard.0, shard.1);
            return refuse("shard", format!("this campaign was started with --shard {i}/{n}, not --shard {asked}: resume it with --shard {i}/{n}, or use a fresh --corpus"));
        }
        (self.scenario, self.target, self.shard) = (hash, Some(target), Some(shard));
        Ok(())
    }

    /// Saves the state atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STATE);
        let json = serde_json::to_vec(self).map_err(|source| Error::Json { path: path.clone(), what: "campaign state", source })?;
        crate::atomic::write(&path, &json)
    }
}

/// A target as `--target` spells it.
fn flag(t: Target) -> &'static str {
    match t {
        Target::Nan => "nan",
        Target::Inf => "inf",
        Target::Nonfinite => "nonfinite",
        Target::Diverge => "diverge",
    }
}

/// Writes findings as JSON lines, atomically.
pub fn write_findings(path: &Path, findings: &[Finding]) -> Result<()> {
    crate::atomic::write_lines(path, findings, "findings")
}

/// Reads a `findings.jsonl`; a bad line is named by its own line number.
pub fn read_findings(path: &Path) -> Result<Vec<Finding>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                // serde_json counts lines within the one line it was given: keep its message, not its position.
                let text = e.to_string();
                let message = text.rsplit_once(" at line ").map_or(text.as_str(), |(m, _)| m);
                Error::Parse { path: path.display().to_string(), line: i + 1, col: e.column(), message: format!("not a nanhunt finding: {message}") }
            })
        })
        .collect()
}

/// Merges failure sites from several campaign outputs: one per scenario and
/// signature, triggers united (counts summed for the same knob set, nearest
/// first), the earliest discovery kept.
pub fn merge(all: Vec<Finding>) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    for f in all {
        let Some(g) = out.iter_mut().find(|g| g.signature == f.signature && g.scenario == f.scenario) else {
            out.push(f);
            continue;
        };
        g.count += f.count;
        g.shrink_runs += f.shrink_runs;
        g.seconds_to_shrink += f.seconds_to_shrink;
        if f.seconds_to_find < g.seconds_to_find {
            (g.seconds_to_find, g.runs_to_find) = (f.seconds_to_find, f.runs_to_find);
        }
        let nearest = g.nearest().map(|t| t.mutations.clone());
        for t in f.triggers {
            fold(&mut g.triggers, t);
        }
        if g.nearest().map(|t| &t.mutations) != nearest.as_ref() {
            // The other campaign's nearest trigger is now this site's repro.
            g.location = f.location.clone();
        }
        if f.report.is_some() && g.report.is_none() {
            g.report = f.report;
        }
    }
    out.sort_by(|a, b| (&a.scenario, &a.signature).cmp(&(&b.scenario, &b.signature)));
    out
}

/// Whether two normalized candidates set the same knobs (their values are thresholds, found independently).
pub fn same_knobs(a: &[Mutation], b: &[Mutation]) -> bool {
    a.len() == b.len() && covers(a, b)
}

/// Whether `big` sets every knob `small` sets (so `small` reaches the site with no more knobs).
pub fn covers(big: &[Mutation], small: &[Mutation]) -> bool {
    small.iter().all(|m| big.iter().any(|b| slot(b) == slot(m)))
}

/// Adds a trigger to a site's triggers: a trigger that sets every knob of
/// another counts for that one; triggers it covers are folded into it; nearest
/// first. Returns the knobs of the trigger that now holds its hits.
pub fn fold(triggers: &mut Vec<Trigger>, mut t: Trigger) -> Vec<Mutation> {
    if let Some(u) = triggers.iter_mut().find(|u| covers(&t.mutations, &u.mutations)) {
        u.count += t.count;
        return u.mutations.clone();
    }
    let (covered, rest): (Vec<Trigger>, Vec<Trigger>) = std::mem::take(triggers).into_iter().partition(|u| covers(&u.mutations, &t.mutations));
    t.count += covered.iter().map(|u| u.count).sum::<usize>();
    let kept = t.mutations.clone();
    *triggers = rest;
    triggers.push(t);
    triggers.sort_by(|a, b| a.distance.total_cmp(&b.distance));
    kept
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::run::{Kind, Location};
    use crate::scenario::{Knob, Named, Phase};

    /// A site `sig` with one trigger (`optimizer.lr = 0.5`) hit `count` times, found after `secs`.
    pub(crate) fn finding(sig: &str, count: usize, secs: f64) -> Finding {
        let trigger =
            Trigger { mutations: vec![Mutation::new(Knob::Lr, 0.5)], found: vec![], thresholds: vec![], distance: 1.0, count, rows: None, full_step: None, cause: None, verdict: None, built: None };
        Finding {
            scenario: "s".into(),
            signature: sig.into(),
            location: Location { step: 1, epoch: 1, fold: 0, phase: Phase::Loss, tensor: crate::scenario::TensorId::Loss, kind: Kind::Nan, index: 0, ..Default::default() },
            dtype: "f32".into(),
            note: None,
            triggers: vec![trigger],
            count,
            runs_to_find: 1,
            seconds_to_find: secs,
            seconds_to_shrink: 0.0,
            shrink_runs: 0,
            report: None,
            cause: None,
        }
    }

    #[test]
    fn merge_dedups_by_signature_and_sums_counts() {
        let m = merge(vec![finding("b", 2, 5.0), finding("a", 1, 1.0), finding("b", 3, 2.0)]);
        assert_eq!(m.iter().map(|f| (f.signature.as_str(), f.count, f.seconds_to_find)).collect::<Vec<_>>(), [("a", 1, 1.0), ("b", 5, 2.0)]);
        // The same knob set is one trigger with its counts summed; another knob set is another trigger.
        assert_eq!(m[1].triggers.len(), 1);
        assert_eq!(m[1].triggers[0].count, 5);
        let mut other = finding("b", 1, 9.0);
        other.triggers[0].mutations = vec![Mutation::new(Knob::Epochs, 9u32)];
        other.triggers[0].distance = 0.5;
        let m = merge(vec![finding("b", 2, 5.0), other]);
        assert_eq!(m[0].triggers.iter().map(|t| t.mutations[0].knob().name()).collect::<Vec<_>>(), ["train.epochs", "optimizer.lr"], "nearest first");
    }

    #[test]
    fn state_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), State::default());
        let s = State { next: 7, runs: 9, corpus: vec![Mutant { mutations: vec![Mutation::new(Knob::Lr, 0.5)], score: 0.3 }], findings: vec![finding("a", 1, 1.0)], ..State::default() };
        s.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), s);
        let p = dir.path().join("f.jsonl");
        write_findings(&p, &s.findings).unwrap();
        assert_eq!(read_findings(&p).unwrap(), s.findings);
        // A bad second line is reported on line 2.
        let text = std::fs::read_to_string(&p).unwrap() + "{\"scenario\": 1}\n";
        std::fs::write(&p, text).unwrap();
        let err = read_findings(&p).unwrap_err().to_string();
        assert!(err.contains("f.jsonl:2:") && err.contains("not a nanhunt finding") && !err.contains("at line 1"), "{err}");
    }

    #[test]
    fn an_infinite_score_saved_as_null_loads_back() {
        // What `hunt --target nan` saved when a mutant went Inf (its score +∞): serde_json writes null.
        let inf = Mutant { mutations: vec![Mutation::new(Knob::Lr, 0.5)], score: f64::INFINITY };
        let text = serde_json::to_string(&inf).unwrap();
        assert!(text.ends_with(r#""score":null}"#), "{text}");
        let back: Mutant = serde_json::from_str(&text).unwrap();
        assert_eq!(back.score, f64::INFINITY);
        let err = serde_json::from_str::<Mutant>(r#"{"mutations":[],"score":"x"}"#).unwrap_err().to_string();
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn findings_and_a_state_written_before_ids_were_typed_load_and_write_back_the_same() {
        // findings.jsonl and state.json written by the binary at 4c2bbe9, before tensors were typed.
        use crate::scenario::TensorId;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/before-typed-ids");
        let text = std::fs::read_to_string(dir.join("findings.jsonl")).unwrap();
        let found = read_findings(&dir.join("findings.jsonl")).unwrap();
        let tensors: Vec<TensorId> = found.iter().map(|f| f.location.tensor.clone()).collect();
        let output = |n: &str| TensorId::Output(n.into());
        let param = |n: &str| TensorId::Param(n.into());
        let want = [
            param("layers.0.linear.weight"),
            TensorId::OutputGrad("layers.2.linear".into()),
            output("layers.0.linear"),
            TensorId::ParamGrad("layers.0.linear.weight".into()),
            param("layers.0.rnn.weight_ih"),
        ];
        assert_eq!(tensors, want);
        for (line, f) in text.lines().zip(&found) {
            assert_eq!(serde_json::to_value(f).unwrap(), serde_json::from_str::<serde_json::Value>(line).unwrap());
        }
        let state = State::load(&dir).unwrap();
        assert_eq!(state.findings.iter().map(|f| f.location.tensor.clone()).collect::<Vec<_>>(), [output("layers.0.linear"), TensorId::ParamGrad("layers.0.linear.weight".into())]);
        let saved = std::fs::read_to_string(dir.join(STATE)).unwrap();
        assert_eq!(serde_json::to_value(&state).unwrap(), serde_json::from_str::<serde_json::Value>(&saved).unwrap());
    }

    #[test]
    fn a_state_refuses_another_scenario_target_or_shard() {
        let mut s = State::default();
        // A fresh (or older, unstamped) state takes on the campaign.
        s.adopt(None, "a", "h1".into(), Target::Nan, (1, 3)).unwrap();
        assert_eq!((s.target, s.shard), (Some(Target::Nan), Some((1, 3))));
        let text = serde_json::to_string(&s).unwrap();
        let back: State = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s, "target and shard are saved");
        let err = |r: Result<()>| r.unwrap_err().to_string();
        let e = err(s.clone().adopt(None, "a", "h1".into(), Target::Diverge, (1, 3)));
        assert!(e.contains("--target nan") && e.contains("--target diverge"), "{e}");
        let e = err(s.clone().adopt(None, "a", "h1".into(), Target::Nan, (0, 1)));
        assert!(e.contains("--shard 1/3") && e.contains("--shard 0/1"), "{e}");
        assert!(err(s.clone().adopt(None, "b", "h2".into(), Target::Nan, (1, 3))).contains("another scenario"));
        s.adopt(None, "a", "h1".into(), Target::Nan, (1, 3)).unwrap();
    }
}
