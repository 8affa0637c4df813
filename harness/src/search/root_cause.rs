//! A root cause is a mechanism: the hunt's site findings ([`Finding`], one per
//! phase, tensor, kind and dtype) grouped by what explains them. Each trigger of
//! a finding is a member, keyed by its [`Mechanism`] (`mechanism.rs`: the
//! diagnosis rule, the kind of op that made the first bad value, the trigger's
//! knob names, not values, with the magnitude knobs as one, and the precision
//! class; a flip from a base that already fails keys without its knobs). A
//! member whose knobs are a superset of another key's belongs to that key's
//! group (the base's own failure, the empty trigger, takes only members of its
//! own rule and op: otherwise every flip would be "the base plus more"). From a
//! failing base, a flip elsewhere whose trigger sets a driver key's knobs (a
//! divergence's, a setting's) joins it, and the others group over every op (a
//! group whose members all went bad in one op names it). Keys a person names
//! once (`root_cause/mechanism/family.rs`: a divergence by its driver in any dtype, a
//! setting the run cannot hold in any dtype, `log` of 0 and of a negative
//! number in one op) are one group, under the class's first key. A loss-scale
//! collapse keys by the overflow its skipped steps hit, whatever knob tipped it.
//! Grouping is a pure function of the findings, so it is the same for a
//! campaign, its shards once merged, and a resumed or old corpus; the
//! signature hashes the group's key alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::finding::{Finding, Threshold, Trigger};
use super::mutation::{describe, Mutation};
use crate::error::{Error, Result};
use crate::run::{Cause, Location};

mod mechanism;
pub use mechanism::{class_of, Mechanism, PrecisionClass};
#[cfg(test)]
use mechanism::{knob_name, node_kind, op_kind};
use mechanism::{ANY_OP, ELSEWHERE};

/// One value of a root cause's members (a site, a dtype, a trigger) and how many runs had it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// The value, in words.
    pub what: String,
    /// Candidate runs with it.
    pub count: usize,
}

/// One root cause: a mechanism, with the sites, dtypes and triggers that show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootCause {
    /// Scenario the hunt started from.
    pub scenario: String,
    /// The mechanism's signature (see [`Mechanism::signature`]).
    pub signature: String,
    /// What explains it.
    pub mechanism: Mechanism,
    /// Candidate runs that reached it, over all members.
    pub count: usize,
    /// The diagnosis of its nearest trigger, where a rule explains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// The f64 verdict on its nearest trigger's repro, where one was computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<crate::run::verdict::Verdict>,
    /// What its site means, where nanhunt can say (data not representable in the dtype).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Where its nearest trigger's repro first goes non-finite.
    pub location: Location,
    /// The compute dtype there.
    pub dtype: String,
    /// The nearest trigger (empty: the base itself).
    pub trigger: Vec<Mutation>,
    /// Its flip thresholds.
    pub thresholds: Vec<Threshold>,
    /// The rows its repro keeps, if rows were cut (and whether they were minimized).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<crate::search::RowCut>,
    /// Sites (kind, tensor, phase) of its members, most runs first.
    pub sites: Vec<Tally>,
    /// Compute dtypes of its members, most runs first.
    pub dtypes: Vec<Tally>,
    /// Its members' triggers with their values, most runs first.
    pub triggers: Vec<Tally>,
    /// Signatures of the site findings it holds (in `findings.jsonl`, each with its report).
    pub findings: Vec<String>,
    /// Candidate runs before it was first reached.
    pub runs_to_find: usize,
    /// Seconds before it was first reached.
    pub seconds_to_find: f64,
    /// The report of its nearest trigger, if one was written.
    pub report: Option<PathBuf>,
    /// Known from `--known` (counted, but not new).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub known: bool,
}

/// A finding's trigger with its key.
struct Member<'a> {
    finding: &'a Finding,
    trigger: &'a Trigger,
    key: Mechanism,
    /// Whether its scenario's base fails.
    fails: bool,
}

/// Every trigger of every finding, keyed (a scenario whose base fails is one of them with the
/// empty trigger).
fn members(findings: &[Finding]) -> Vec<Member<'_>> {
    let failing: BTreeSet<&str> = findings.iter().filter(|f| f.triggers.iter().any(|t| t.mutations.is_empty())).map(|f| f.scenario.as_str()).collect();
    findings
        .iter()
        .flat_map(|f| {
            let fails = failing.contains(f.scenario.as_str());
            f.triggers.iter().map(move |t| Member { finding: f, trigger: t, key: Mechanism::of(f, t, fails), fails })
        })
        .collect()
}

/// The members' keys, by scenario.
fn keys_by_scenario<'a>(members: &[Member<'a>]) -> BTreeMap<&'a str, BTreeSet<Mechanism>> {
    let mut keys: BTreeMap<&str, BTreeSet<Mechanism>> = BTreeMap::new();
    for m in members {
        keys.entry(m.finding.scenario.as_str()).or_default().insert(m.key.clone());
    }
    keys
}

/// The key whose group `k` belongs to among `keys`: following, from `k`, the absorbing key of
/// the same op (a linear's overflow by `{loss.kind, magnitude}` joins the linear's overflow by
/// magnitude, not the data's), then with the fewest knobs, then the smallest signature, until
/// none absorbs it (`absorbs` is a strict order, so that takes at most one step per key).
fn root_of(k: &Mechanism, keys: &BTreeSet<Mechanism>) -> Mechanism {
    let mut k = k.clone();
    for _ in 0..=keys.len() {
        match keys.iter().filter(|p| p.absorbs(&k)).min_by_key(|p| (p.op != k.op, p.knobs.len(), p.signature())) {
            Some(p) => k = p.clone(),
            None => break,
        }
    }
    k
}

/// The driver key (a divergence's driver, a setting the dtype cannot hold) a failing base's
/// flip elsewhere joins: the one, among `keys`, with the fewest knobs (then the smallest
/// signature) whose knobs its trigger all sets. The knob that drove the divergence, or the
/// setting, is there in the flip too: that the values then overflow in some op first rather
/// than diverge over steps is no other mechanism.
fn driver_of<'k>(m: &Member, keys: &'k BTreeSet<Mechanism>) -> Option<&'k Mechanism> {
    if m.key.knobs != [ELSEWHERE] {
        return None;
    }
    let set: BTreeSet<String> = m.trigger.mutations.iter().flat_map(|t| [t.knob.to_string(), mechanism::knob_name(t)]).collect();
    let drives = |k: &&Mechanism| !k.knobs.is_empty() && k.knobs != [ELSEWHERE] && k.knobs.iter().all(|n| set.contains(n));
    keys.iter().filter(drives).min_by_key(|k| (k.knobs.len(), k.signature()))
}

/// The group a member's own key belongs to among its scenario's `keys` (a failing base's flip
/// elsewhere joins a driver key its trigger sets).
fn own_root(m: &Member, keys: &BTreeSet<Mechanism>) -> Mechanism {
    root_of(driver_of(m, keys).unwrap_or(&m.key), keys)
}

/// A failing base's flip elsewhere keyed over every op: its op is [`ANY_OP`].
fn any_op(k: &Mechanism) -> Mechanism {
    Mechanism { op: ANY_OP.to_string(), ..k.clone() }
}

/// Groups findings into root causes, one per scenario and mechanism, most runs first.
pub fn group(findings: &[Finding]) -> Vec<RootCause> {
    let members = members(findings);
    let keys = keys_by_scenario(&members);
    // A failing base's flips elsewhere that no other key takes group by rule, precision and
    // verdict over every op (the op is in their sites).
    let roots: Vec<Mechanism> = members.iter().map(|m| own_root(m, &keys[m.finding.scenario.as_str()])).collect();
    let mut elsewhere: BTreeMap<&str, BTreeSet<Mechanism>> = BTreeMap::new();
    for (m, root) in members.iter().zip(&roots) {
        if root.knobs == [ELSEWHERE] {
            elsewhere.entry(m.finding.scenario.as_str()).or_default().insert(any_op(root));
        }
    }
    let mut groups: BTreeMap<(&str, Mechanism), Vec<&Member>> = BTreeMap::new();
    for (m, root) in members.iter().zip(roots) {
        let root = if root.knobs == [ELSEWHERE] { root_of(&any_op(&root), &elsewhere[m.finding.scenario.as_str()]) } else { root };
        groups.entry((m.finding.scenario.as_str(), root)).or_default().push(m);
    }
    let mut out: Vec<RootCause> = groups.into_iter().map(|((_, key), ms)| root_cause(key, &ms)).collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| (&a.scenario, &a.signature).cmp(&(&b.scenario, &b.signature))));
    out
}

/// Counts of values, most first (then by the value).
fn tally<'a>(items: impl Iterator<Item = (String, usize)> + 'a) -> Vec<Tally> {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for (what, n) in items {
        *by.entry(what).or_default() += n;
    }
    let mut out: Vec<Tally> = by.into_iter().map(|(what, count)| Tally { what, count }).collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.what.cmp(&b.what)));
    out
}

/// The root cause of members grouped under `key`; its face is the nearest member keyed `key`.
fn root_cause(key: Mechanism, ms: &[&Member]) -> RootCause {
    let nearest = ms
        .iter()
        .filter(|m| m.key == key || (key.op == ANY_OP && any_op(&m.key) == key))
        .min_by(|a, b| a.trigger.distance.total_cmp(&b.trigger.distance).then_with(|| b.trigger.count.cmp(&a.trigger.count)).then_with(|| a.finding.signature.cmp(&b.finding.signature)))
        .unwrap_or(&ms[0]);
    let (f, t) = (nearest.finding, nearest.trigger);
    let key = one_op(key, ms);
    let site = |m: &Member| format!("{} in {} ({})", m.finding.location.kind, m.finding.location.tensor, m.finding.location.phase);
    let first = ms.iter().min_by(|a, b| a.finding.seconds_to_find.total_cmp(&b.finding.seconds_to_find)).unwrap_or(nearest);
    RootCause {
        scenario: f.scenario.clone(),
        signature: key.signature(),
        count: ms.iter().map(|m| m.trigger.count).sum(),
        cause: t.cause.clone().unwrap_or_else(|| f.cause.clone()),
        verdict: t.verdict.clone(),
        note: f.note.clone(),
        location: f.location.clone(),
        dtype: f.dtype.clone(),
        trigger: t.mutations.clone(),
        thresholds: t.thresholds.clone(),
        rows: t.rows.clone(),
        sites: tally(ms.iter().map(|m| (site(m), m.trigger.count))),
        dtypes: tally(ms.iter().map(|m| (m.finding.dtype.clone(), m.trigger.count))),
        triggers: tally(ms.iter().map(|m| (trigger_text(&m.trigger.mutations), m.trigger.count))),
        findings: ms.iter().map(|m| m.finding.signature.clone()).collect::<BTreeSet<_>>().into_iter().collect(),
        runs_to_find: first.finding.runs_to_find,
        seconds_to_find: first.finding.seconds_to_find,
        report: f.report.clone(),
        known: false,
        mechanism: key,
    }
}

/// A group keyed over every op ([`ANY_OP`]) whose members all first went bad in one op names
/// that op: "any op" only where there are several.
fn one_op(key: Mechanism, ms: &[&Member]) -> Mechanism {
    let ops: BTreeSet<&str> = ms.iter().map(|m| m.key.op.as_str()).collect();
    match ops.into_iter().collect::<Vec<_>>().as_slice() {
        [op] if key.op == ANY_OP => Mechanism { op: op.to_string(), ..key },
        _ => key,
    }
}

/// A trigger in words: its mutations, or `the base itself`.
pub fn trigger_text(muts: &[Mutation]) -> String {
    if muts.is_empty() {
        "the base itself".into()
    } else {
        describe(muts)
    }
}

/// Groups `findings` and marks the root causes `known` already holds: those whose key, among
/// the keys of both, belongs to a group whose key `known` has (a trigger that adds knobs to a
/// known one is known; a smaller trigger than any known is new).
pub fn group_known(findings: &[Finding], known: &[Finding]) -> Vec<RootCause> {
    let mut out = group(findings);
    if known.is_empty() {
        return out;
    }
    let keyed = |fs: &[Finding]| members(fs).into_iter().map(|m| (m.finding.scenario.clone(), m.key)).collect::<BTreeSet<_>>();
    let mut old = keyed(known);
    // A flip elsewhere groups over every op: known if one of its rule, precision and verdict is.
    old.extend(old.iter().filter(|(_, k)| k.knobs == [ELSEWHERE]).map(|(s, k)| (s.clone(), any_op(k))).collect::<Vec<_>>());
    let collapses = known_collapses(findings, &old);
    let mut all = keyed(findings);
    all.extend(old.iter().cloned());
    for g in &mut out {
        let keys: BTreeSet<Mechanism> = all.iter().filter(|(s, _)| *s == g.scenario).map(|(_, k)| k.clone()).collect();
        let root = root_of(&g.mechanism, &keys);
        // A known corpus saved before verdicts knows the key without one.
        let unjudged = Mechanism { verdict: None, ..root.clone() };
        // A flip elsewhere named after its one op is known as the same key over every op; a
        // key of a class a person names once is known by any of the class.
        let over_ops = any_op(&root);
        let same = |k: &Mechanism| *k == root || *k == unjudged || (root.knobs == [ELSEWHERE] && *k == over_ops) || mechanism::family::one_mechanism(k, &root);
        g.known = old.iter().any(|(s, k)| *s == g.scenario && same(k)) || collapses.contains(&(g.scenario.clone(), g.signature.clone()));
    }
    out
}

/// The groups (scenario, signature) of `findings` that a corpus saved before loss-scale collapses
/// named their skipped value knows: those holding a collapse whose key as then (by the loss
/// scale and its trigger's knobs) `old` has.
fn known_collapses(findings: &[Finding], old: &BTreeSet<(String, Mechanism)>) -> BTreeSet<(String, String)> {
    let members = members(findings);
    let keys = keys_by_scenario(&members);
    let then = |m: &Member| (m.finding.scenario.clone(), Mechanism::before_skipped(m.finding, m.trigger, m.fails));
    members
        .iter()
        .filter(|m| m.key.rule == Some(crate::run::Rule::LossScaleCollapse) && m.key.op != mechanism::LOSS_SCALE && old.contains(&then(m)))
        .map(|m| (m.finding.scenario.clone(), own_root(m, &keys[m.finding.scenario.as_str()]).signature()))
        .collect()
}

/// Reads the findings of `--known`: a `findings.jsonl`, or a directory holding one (a hunt's or a merge's `--out`).
pub fn read_known(path: &Path) -> Result<Vec<Finding>> {
    let file = if path.is_dir() { path.join("findings.jsonl") } else { path.to_path_buf() };
    if !file.is_file() {
        let message = format!("{} is not a findings.jsonl, nor a directory holding one", path.display());
        return Err(Error::Invalid { location: path.display().to_string(), key: "known".into(), message });
    }
    super::corpus::read_findings(&file)
}

/// Writes root causes as JSON lines, atomically.
pub fn write_root_causes(path: &Path, causes: &[RootCause]) -> Result<()> {
    crate::atomic::write_lines(path, causes, "root causes")
}

#[cfg(test)]
#[path = "root_cause_tests.rs"]
mod tests;
