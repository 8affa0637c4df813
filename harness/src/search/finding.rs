//! What a search finds: which outcomes count ([`Target`]), where a run fails
//! ([`Site`]), a knob's flip [`Threshold`], a deduplicated [`Finding`] (a site
//! and its triggers, each with its diagnosis), and the stable [`signature`]
//! that names it (in report directories, dedup and merges).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::minimize::{Built, RowCut};
use super::mutation::{Mutation, Scale};
use crate::run::{Kind, Location, Outcome, Status};
use crate::scenario::{Knob, Named, Scenario};

/// Which non-finite values count as a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// NaN only.
    Nan,
    /// ±Inf only.
    Inf,
    /// Either.
    #[default]
    Nonfinite,
    /// A non-finite value, or a finite run that diverges (its loss or parameters grow without bound).
    Diverge,
}

impl Target {
    /// Where an outcome this target counts failed: its first non-finite value, or for a finite
    /// diverging run its divergence site (`loss` or `parameters`); `None` if it does not count.
    pub fn site(self, o: &Outcome) -> Option<Location> {
        self.hits(o).then(|| o.failure_site()).flatten()
    }

    /// Whether an outcome is what this target looks for.
    pub fn hits(self, o: &Outcome) -> bool {
        if self == Target::Diverge && o.outcome == Status::Finite && o.divergence.is_some() {
            return true;
        }
        let Some(f) = o.first_nonfinite.as_ref().filter(|_| o.outcome == Status::Nonfinite) else { return false };
        match self {
            Target::Nonfinite | Target::Diverge => true,
            Target::Nan => f.kind == Kind::Nan,
            Target::Inf => matches!(f.kind, Kind::PosInf | Kind::NegInf),
        }
    }
}

/// A knob's flip threshold, as found by the minimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// The knob.
    pub knob: Knob,
    /// The base scenario's value.
    pub base: f64,
    /// The value nearest the base at which the run still flips (3 significant digits).
    pub flips_at: f64,
    /// The nearest value on the base's side found to stay finite.
    pub stays_finite_at: f64,
}

impl Threshold {
    /// `≥` when the flip lies above the base, `≤` when below.
    pub fn direction(&self) -> &'static str {
        if self.flips_at >= self.base {
            "≥"
        } else {
            "≤"
        }
    }
}

/// A failure site: phase, tensor and kind of the first non-finite value, and the compute dtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// `phase|tensor|kind`.
    at: String,
    /// The compute dtype.
    dtype: String,
}

impl Site {
    /// The site of a non-finite outcome.
    pub fn of(o: &Outcome) -> Option<Site> {
        Some(Site::of_location(&o.failure_site()?, o.dtype_name()))
    }

    /// The site of a first non-finite value in a dtype.
    pub fn of_location(f: &Location, dtype: &str) -> Site {
        Site { at: format!("{}|{}|{}", f.phase, f.tensor, f.kind), dtype: dtype.to_string() }
    }
}

/// One failure site (phase, tensor, kind of non-finite value, compute dtype) and every
/// trigger found to reach it; `root_cause` groups sites' triggers into root causes by mechanism.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Scenario the hunt started from.
    pub scenario: String,
    /// Signature of the site: phase, tensor, kind and dtype.
    pub signature: String,
    /// Where the nearest trigger's repro first goes non-finite.
    pub location: Location,
    /// Compute dtype of the site.
    pub dtype: String,
    /// What the site means, where nanhunt can say (e.g. data not representable in the dtype).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Minimal knob sets that reach the site, nearest to the base first. An empty set is the base itself.
    pub triggers: Vec<Trigger>,
    /// Candidate runs that reached the site, over all triggers.
    pub count: usize,
    /// Candidate runs before the site was first reached.
    pub runs_to_find: usize,
    /// Seconds before the site was first reached.
    pub seconds_to_find: f64,
    /// Seconds spent minimizing its triggers.
    pub seconds_to_shrink: f64,
    /// Runs spent minimizing its triggers.
    pub shrink_runs: usize,
    /// Report directory, if one was written.
    pub report: Option<PathBuf>,
    /// Why the nearest trigger's repro went non-finite (its diagnosis), where a rule explains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<crate::run::Cause>,
}

/// One way to reach a root cause: a 1-minimal set of mutations, each numeric one at its threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// The minimal mutations.
    pub mutations: Vec<Mutation>,
    /// The candidate as first found.
    pub found: Vec<Mutation>,
    /// Flip thresholds of the numeric knobs.
    pub thresholds: Vec<Threshold>,
    /// How far it is from the base (see [`distance`]).
    pub distance: f64,
    /// Candidate runs that minimized to this trigger.
    pub count: usize,
    /// The training rows its repro keeps, if rows were cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<RowCut>,
    /// The first non-finite step with all rows, when rows were cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full_step: Option<usize>,
    /// Why its repro went non-finite: `Some(None)` where no rule explains it; `None` where it was
    /// not recorded (a trigger saved before triggers kept their own diagnosis: its root cause's holds).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "recorded")]
    pub cause: Option<Option<crate::run::Cause>>,
    /// The f64 verdict on its repro's first non-finite value (absent in corpora saved before verdicts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<crate::run::verdict::Verdict>,
    /// The repro made when it was minimized (not saved: made again from this record after a resume).
    #[serde(skip)]
    pub built: Option<std::sync::Arc<Built>>,
}

/// A field that is present: `null` reads as `Some(None)`, unlike a missing one (`None`).
fn recorded<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> std::result::Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl Pending {
    /// Its root cause's site.
    pub fn site(&self) -> Site {
        Site::of_location(&self.location, &self.dtype)
    }
}

impl Finding {
    /// The trigger nearest to the base.
    pub fn nearest(&self) -> Option<&Trigger> {
        self.triggers.first()
    }
}

/// A flipping candidate whose minimization has not finished: kept in the
/// campaign state, finished in the shrink phase or on `--resume`, never reported as minimal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// Its site and knob set, as the campaign deduplicates flips.
    pub key: String,
    /// The candidate as found.
    pub found: Vec<Mutation>,
    /// Where it went non-finite as found: its root cause's site.
    pub location: Location,
    /// The compute dtype it ran in.
    #[serde(default)]
    pub dtype: String,
    /// Candidate runs that reached it.
    pub count: usize,
    /// Seconds into the campaign when it was found.
    pub seconds_to_find: f64,
    /// Candidate runs before it was found.
    pub runs_to_find: usize,
}

/// How far a candidate is from the base: for each numeric mutation the decades
/// (log knobs) or base-relative units (linear knobs) it moves its knob, and 1
/// for a categorical change or a new injection.
pub fn distance(base: &Scenario, muts: &[Mutation]) -> f64 {
    muts.iter()
        .map(|m| match (m.numeric(), m.base_value(base)) {
            (Some((v, Scale::Log | Scale::Integer)), Some(b)) if v > 0.0 && b > 0.0 => (v / b).log10().abs(),
            (Some((v, Scale::Complement)), Some(b)) if v < 1.0 && b < 1.0 => ((1.0 - v) / (1.0 - b)).log10().abs(),
            (Some((v, _)), Some(b)) => (v - b).abs() / b.abs().max(1.0),
            _ => 1.0,
        })
        .sum()
}

/// FNV-1a, 64 bits: a stable hash for signatures (std's hasher may change between releases).
pub use crate::hash::fnv1a;

/// The signature of a finding: 8 hex digits of the FNV-1a hash of the first
/// non-finite value's phase, tensor and kind (by their file-format names), the
/// dtype, and the sorted keys that changed (knob names for a hunt, the diff's
/// keys for a report of a scenario as written).
pub fn signature(first: Option<&Location>, dtype: &str, keys: &[&str]) -> String {
    let what = first.map_or("finite".to_string(), |f| format!("{}|{}|{}", f.phase.name(), f.tensor, f.kind.name()));
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    keys.dedup();
    format!("{:08x}", fnv1a(format!("{what}|{dtype}|{}", keys.join(",")).as_bytes()) as u32)
}

/// The knobs a candidate changes, for its signature.
pub fn knob_names(muts: &[Mutation]) -> Vec<&'static str> {
    muts.iter().map(|m| m.knob().name()).collect()
}

/// The signature of a root cause: its failure site alone.
pub fn site_signature(at: &Location, dtype: &str) -> String {
    signature(Some(at), dtype, &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Phase;

    #[test]
    fn signatures_are_golden() {
        // These names key report directories, dedup and merges: if this test fails, a
        // signature changed, and every saved campaign and report name with it.
        let at = Location { step: 3, epoch: 1, fold: 0, phase: Phase::Loss, tensor: crate::scenario::TensorId::Loss, kind: Kind::Nan, index: 0, ..Default::default() };
        // The hashed text is `phase|tensor|kind|dtype|keys`; the literals below are FNV-1a of
        // that text computed outside nanhunt (a 6-line Python FNV-1a).
        let by_hand = format!("{:08x}", fnv1a(b"loss|loss|nan|f32|") as u32);
        assert_eq!(signature(Some(&at), "f32", &[]), by_hand);
        assert_eq!(signature(Some(&at), "f32", &[]), "c32e2e4d");
        assert_eq!(signature(Some(&at), "f16", &["train.dtype", "optimizer.lr"]), "9990d8c6");
        assert_eq!(signature(None, "f32", &[]), "6988c89f");
        // Key order does not matter; repeated keys count once.
        assert_eq!(signature(Some(&at), "f16", &["optimizer.lr", "train.dtype", "optimizer.lr"]), signature(Some(&at), "f16", &["train.dtype", "optimizer.lr"]));
    }

    #[test]
    fn distance_counts_decades_and_changes() {
        let base = crate::scenario::seed("s000_ex1_bce_mlp");
        // lr 1e-3 → 1e-1 is 2 decades; a dtype change counts 1.
        let d = distance(&base, &[Mutation::new(Knob::Lr, 0.1), Mutation::new(Knob::Dtype, crate::scenario::DTypeName::F16)]);
        assert!((d - 3.0).abs() < 1e-12, "{d}");
        assert_eq!(distance(&base, &[]), 0.0);
    }

    #[test]
    fn a_diverging_finite_run_counts_only_for_the_diverge_target() {
        let mut o = Outcome::error("t", String::new());
        (o.outcome, o.error) = (Status::Finite, None);
        assert!(!Target::Diverge.hits(&o));
        o.divergence = Some(crate::run::Stagnation { step: 8, reason: "loss_growth".into(), ..Default::default() });
        assert!(Target::Diverge.hits(&o) && !Target::Nonfinite.hits(&o));
    }

    #[test]
    fn threshold_direction() {
        let t = Threshold { knob: Knob::Lr, base: 0.01, flips_at: 0.5, stays_finite_at: 0.4 };
        assert_eq!(t.direction(), "≥");
        assert_eq!(Threshold { flips_at: 0.001, ..t }.direction(), "≤");
    }
}
