//! What a search finds: which outcomes count ([`Target`]), a knob's flip
//! [`Threshold`], a deduplicated [`Finding`], and the stable [`signature`]
//! that names it (in report directories, dedup and merges).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::mutation::Mutation;
use crate::run::{Kind, Location, Outcome, Status};
use crate::scenario::{Knob, Named};

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
}

impl Target {
    /// Does this outcome count?
    pub fn hits(self, o: &Outcome) -> bool {
        let Some(f) = o.first_nonfinite.as_ref().filter(|_| o.outcome == Status::Nonfinite) else { return false };
        match self {
            Target::Nonfinite => true,
            Target::Nan => f.kind == Kind::Nan,
            Target::Inf => f.kind != Kind::Nan,
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

/// One distinct finding, after minimization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Scenario the hunt started from.
    pub scenario: String,
    /// Signature: phase, tensor, kind, dtype and the set of changed knobs.
    pub signature: String,
    /// Where the minimal repro first goes non-finite.
    pub location: Location,
    /// The minimal mutations (each at its threshold).
    pub mutations: Vec<Mutation>,
    /// The candidate as first found.
    pub found: Vec<Mutation>,
    /// Flip thresholds of the numeric knobs.
    pub thresholds: Vec<Threshold>,
    /// Times this signature was hit.
    pub count: usize,
    /// Candidate runs before it was first found.
    pub runs_to_find: usize,
    /// Seconds before it was first found.
    pub seconds_to_find: f64,
    /// Seconds spent minimizing it.
    pub seconds_to_shrink: f64,
    /// Runs spent minimizing it.
    pub shrink_runs: usize,
    /// Rows before and after delta debugging.
    pub rows: Option<(usize, usize)>,
    /// Report directory, if one was written.
    pub report: Option<PathBuf>,
}

/// FNV-1a, 64 bits: a stable hash for signatures (std's hasher may change between releases).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Phase;

    #[test]
    fn fnv1a_matches_the_published_vector() {
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (the published test vector).
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn signatures_are_golden() {
        // These names key report directories, dedup and merges: if this test fails, a
        // signature changed, and every saved campaign and report name with it.
        let at = Location { step: 3, epoch: 1, fold: 0, phase: Phase::Loss, tensor: "loss".into(), kind: Kind::Nan, index: 0 };
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
    fn threshold_direction() {
        let t = Threshold { knob: Knob::Lr, base: 0.01, flips_at: 0.5, stays_finite_at: 0.4 };
        assert_eq!(t.direction(), "≥");
        assert_eq!(Threshold { flips_at: 0.001, ..t }.direction(), "≤");
    }
}
