//! A root cause is a mechanism: the hunt's site findings ([`Finding`], one per
//! phase, tensor, kind and dtype) grouped by what explains them. Each trigger of
//! a finding is a member, keyed by its [`Mechanism`]: the diagnosis rule, the
//! kind of op that made the first bad value, the trigger's knob names (not
//! values) and the precision class. A member whose knobs are a superset of
//! another key's belongs to that key's group (the base's own failure, the empty
//! trigger, takes only members of its own rule and op: otherwise every flip
//! would be "the base plus more"). Grouping is a pure function of the findings,
//! so it is the same for a campaign, its shards once merged, and a resumed or
//! old corpus; the signature hashes the group's key alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::finding::{fnv1a, Finding, Threshold, Trigger};
use super::mutation::{describe, Mutation};
use crate::error::{Error, Result};
use crate::run::{Cause, Location, Outcome, Rule};
use crate::scenario::{Named, TensorId, Value};

/// How a run stores its values: the precision class of a mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrecisionClass {
    /// f32 or f64 throughout.
    Full,
    /// Values stored in f16 or bf16 (`train.dtype`).
    LowPrecision,
    /// f32 storage with an autocast forward (`train.precision = amp_*`).
    Autocast,
}

impl PrecisionClass {
    /// The class of a compute dtype as outcomes name it (`f32`, `bf16`, `amp_f16`, ...).
    pub fn of(dtype: &str) -> PrecisionClass {
        match dtype {
            "f16" | "bf16" => PrecisionClass::LowPrecision,
            d if d.starts_with("amp_") => PrecisionClass::Autocast,
            _ => PrecisionClass::Full,
        }
    }

    /// Its name in signatures and summaries.
    pub fn name(self) -> &'static str {
        match self {
            PrecisionClass::Full => "full precision",
            PrecisionClass::LowPrecision => "low-precision storage",
            PrecisionClass::Autocast => "autocast",
        }
    }
}

/// What explains a flip: the key a root cause groups its members by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mechanism {
    /// The diagnosis rule, if one explains it.
    pub rule: Option<Rule>,
    /// The kind of op that made the first bad value (`linear`, `attention`, `loss`, `update`, `data`, ...).
    pub op: String,
    /// The knobs the trigger sets, by name (`optimizer.lr`, `data.inject.outlier.train`), sorted;
    /// for a divergence, the one knob that drove it (the chain's `driver`).
    pub knobs: Vec<String>,
    /// The precision class.
    pub precision: PrecisionClass,
    /// The f64 verdict's key (`precision/overflow`, `math`, `kernel_disagreement`), where one was
    /// computed (a trigger saved before verdicts has none, and keys as before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

impl Mechanism {
    /// The mechanism of one trigger of a finding: the trigger's own diagnosis where it was
    /// recorded, else (a trigger saved before triggers kept one) its finding's.
    pub fn of(f: &Finding, t: &Trigger) -> Mechanism {
        let cause = t.cause.as_ref().map_or(f.cause.as_ref(), Option::as_ref);
        // A chain is one cause: a divergence groups by the knob that drove it, whatever else
        // its trigger moved (the members still list every trigger).
        let op = op_kind(cause, &f.location);
        let mut knobs: Vec<String> = match (cause.and_then(|c| c.chain.as_ref()), cause.and_then(|c| setting(c.rule, &op))) {
            (Some(chain), _) => vec![chain.driver().to_string()],
            (None, Some(knob)) => vec![knob.to_string()],
            (None, None) => t.mutations.iter().map(knob_name).collect(),
        };
        knobs.sort_unstable();
        knobs.dedup();
        let verdict = t.verdict.as_ref().map(|v| v.key());
        Mechanism { rule: cause.map(|c| c.rule), op, knobs, precision: PrecisionClass::of(&f.dtype), verdict }
    }

    /// 8 hex digits of the FNV-1a hash of `rule|op|knobs|precision`, then `|verdict` where there
    /// is one (`unexplained` for no rule): a key without a verdict hashes as it always has.
    pub fn signature(&self) -> String {
        let rule: &str = self.rule.map_or("unexplained", |r| r.into());
        let verdict = self.verdict.as_ref().map_or(String::new(), |v| format!("|{v}"));
        format!("{:08x}", fnv1a(format!("{rule}|{}|{}|{}{verdict}", self.op, self.knobs.join(","), self.precision.name()).as_bytes()) as u32)
    }

    /// Whether a member keyed `other` belongs to this key's group: its knobs are a strict
    /// superset of these (for the empty trigger, only with the same op and a compatible rule and
    /// verdict), or the same knobs and op where this one is diagnosed and it is not, or it has the
    /// same key but no verdict. A strict order: no cycles.
    pub fn absorbs(&self, other: &Mechanism) -> bool {
        let subset = self.knobs.iter().all(|k| other.knobs.contains(k));
        let verdict = self.verdict == other.verdict || other.verdict.is_none();
        let same_op = self.op == other.op && (self.rule == other.rule || other.rule.is_none()) && verdict;
        if !subset || self == other {
            return false;
        }
        if self.knobs.len() < other.knobs.len() {
            return !self.knobs.is_empty() || same_op;
        }
        let unjudged = self.verdict.is_some() && other.verdict.is_none() && self.rule == other.rule;
        same_op && (self.rule.is_some() && other.rule.is_none() || unjudged) && self.precision == other.precision
    }

    /// Its fields in a fixed order, for sorting (the rule by its name).
    fn order(&self) -> (&'static str, &str, &[String], PrecisionClass, Option<&str>) {
        (self.rule.map_or("", |r| r.into()), &self.op, &self.knobs, self.precision, self.verdict.as_deref())
    }

    /// In words: `overflow in linear, low-precision storage, by optimizer.lr + train.dtype`.
    pub fn describe(&self) -> String {
        let rule: &str = self.rule.map_or("unexplained", |r| r.into());
        let by = if self.knobs.is_empty() { "the base itself".to_string() } else { self.knobs.join(" + ") };
        let verdict = self.verdict.as_ref().map_or(String::new(), |v| format!(", verdict {v}"));
        format!("{rule} in {}, {}{verdict}, by {by}", self.op, self.precision.name())
    }
}

/// A failing run's mechanism without its knobs, in words (`overflow|linear|full precision`): the
/// diagnosis rule, the op kind of the first bad value and the precision class, as [`Mechanism`]
/// keys them. The minimizer keeps it while it drops knobs; none for a run that did not fail.
pub fn class_of(o: &Outcome) -> Option<String> {
    let at = o.failure_site()?;
    let rule: &str = o.cause.as_ref().map_or("unexplained", |c| c.rule.into());
    Some(format!("{rule}|{}|{}", op_kind(o.cause.as_ref(), &at), PrecisionClass::of(o.dtype_name()).name()))
}

impl PartialOrd for Mechanism {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Mechanism {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order().cmp(&other.order())
    }
}

/// A knob's name as a trigger sets it: an injection names what it injects and where.
fn knob_name(m: &Mutation) -> String {
    match m.value {
        Value::Inject(a) => format!("{}.{}.{}", m.knob, a.what.name(), a.split.name()),
        Value::Const(c) => c.at.to_string(),
        Value::Real(_) | Value::Count(_) | Value::Off | Value::Seed(_) | Value::Dtype(_) | Value::Optimizer(_) | Value::Precision(_) | Value::Loss(_) | Value::Reduction(_) | Value::Factor(_) => {
            m.knob.to_string()
        }
    }
}

/// The kind of a node (`linear` for `layers.2.residual.layers.0.linear`): the type after the
/// last `layers.N.`; a name outside that scheme (a code model's) without its numbers.
fn node_kind(name: &str) -> String {
    let segs: Vec<&str> = name.split('.').collect();
    let typed = segs.windows(3).rev().find(|w| w[0] == "layers" && w[1].parse::<usize>().is_ok()).map(|w| w[2].to_string());
    typed.unwrap_or_else(|| segs.iter().filter(|s| s.parse::<usize>().is_err()).copied().collect::<Vec<_>>().join("."))
}

/// The kind of op that makes a tensor: its layer's type, or what the watch names it by.
fn tensor_kind(t: &TensorId) -> String {
    match t {
        TensorId::Data(..) => "data".into(),
        TensorId::Output(n) | TensorId::OutputGrad(n) | TensorId::ParamGrad(n) | TensorId::Named(n) => node_kind(n),
        TensorId::Loss => "loss".into(),
        TensorId::Param(_) => "update".into(),
        TensorId::State { .. } => "optimizer state".into(),
        TensorId::LossScale => "loss scale".into(),
        TensorId::Parameters => "parameters".into(),
        TensorId::Validation(t) => tensor_kind(t),
    }
}

/// The kind of op that made the first bad value: the diagnosed op's kind (a layer's type,
/// `loss`, `update`, `optimizer state`, `data`), else the kind of the tensor where it showed.
fn op_kind(cause: Option<&Cause>, at: &Location) -> String {
    let Some(c) = cause else { return tensor_kind(&at.tensor) };
    let op = c.op.trim_end_matches(" (backward)");
    if op.contains(" update of ") {
        "update".into()
    } else if op.contains(" state ") {
        "optimizer state".into()
    } else if op.starts_with("loss") {
        "loss".into()
    } else if op.starts_with("data") || op.starts_with("conversion") {
        "data".into()
    } else if op.contains(' ') {
        tensor_kind(&at.tensor)
    } else {
        node_kind(op)
    }
}

/// The setting a rule says the dtype cannot hold, as a knob name, where the op tells which: an
/// optimizer's or a loss's epsilon that rounds to 0, a loss's clamp whose `1 − ε` rounds to 1.
/// Such a flip is that setting's: whatever knob pushed the values to it (a larger input, a
/// larger init) only exposed it, so its root cause groups by the setting.
fn setting(rule: Rule, op: &str) -> Option<&'static str> {
    match (rule, op) {
        (Rule::EpsRoundsToZero, "update" | "optimizer state") => Some("optimizer.eps"),
        (Rule::EpsRoundsToZero, "loss") => Some("loss.epsilon"),
        (Rule::OneMinusEpsRoundsToOne, "loss") => Some("loss.clamp"),
        (
            Rule::EpsRoundsToZero
            | Rule::OneMinusEpsRoundsToOne
            | Rule::Overflow
            | Rule::LogOfZero
            | Rule::DivisionByZero
            | Rule::DerivativeAtZero
            | Rule::OutsideDomain
            | Rule::ZeroTimesInf
            | Rule::DataNotFinite
            | Rule::Divergence
            | Rule::LrAboveStabilityBound
            | Rule::FullyMaskedRow
            | Rule::LossScaleCollapse
            | Rule::NoGradient,
            _,
        ) => None,
    }
}

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
}

/// Every trigger of every finding, keyed.
fn members(findings: &[Finding]) -> Vec<Member<'_>> {
    findings.iter().flat_map(|f| f.triggers.iter().map(move |t| Member { finding: f, trigger: t, key: Mechanism::of(f, t) })).collect()
}

/// The key whose group `k` belongs to among `keys`: following, from `k`, the absorbing key
/// with the fewest knobs (then the smallest signature) until none absorbs it.
fn root_of(k: &Mechanism, keys: &BTreeSet<Mechanism>) -> Mechanism {
    let mut k = k.clone();
    while let Some(p) = keys.iter().filter(|p| p.absorbs(&k)).min_by_key(|p| (p.knobs.len(), p.signature())) {
        k = p.clone();
    }
    k
}

/// Groups findings into root causes, one per scenario and mechanism, most runs first.
pub fn group(findings: &[Finding]) -> Vec<RootCause> {
    let members = members(findings);
    let mut keys: BTreeMap<&str, BTreeSet<Mechanism>> = BTreeMap::new();
    for m in &members {
        keys.entry(m.finding.scenario.as_str()).or_default().insert(m.key.clone());
    }
    let mut groups: BTreeMap<(&str, Mechanism), Vec<&Member>> = BTreeMap::new();
    for m in &members {
        let root = root_of(&m.key, &keys[m.finding.scenario.as_str()]);
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
        .filter(|m| m.key == key)
        .min_by(|a, b| a.trigger.distance.total_cmp(&b.trigger.distance).then_with(|| b.trigger.count.cmp(&a.trigger.count)).then_with(|| a.finding.signature.cmp(&b.finding.signature)))
        .unwrap_or(&ms[0]);
    let (f, t) = (nearest.finding, nearest.trigger);
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
    let old = keyed(known);
    let mut all = keyed(findings);
    all.extend(old.iter().cloned());
    for g in &mut out {
        let keys: BTreeSet<Mechanism> = all.iter().filter(|(s, _)| *s == g.scenario).map(|(_, k)| k.clone()).collect();
        let root = root_of(&g.mechanism, &keys);
        // A known corpus saved before verdicts knows the key without one.
        let unjudged = Mechanism { verdict: None, ..root.clone() };
        g.known = old.contains(&(g.scenario.clone(), root)) || old.contains(&(g.scenario.clone(), unjudged));
    }
    out
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
