//! `confirm`: export a scenario, run the script with a real PyTorch, and
//! compare where each framework first went non-finite and their losses step
//! by step.
//!
//! The losses are compared with a relative tolerance per dtype, because the
//! two frameworks' kernels add in different orders (a matrix product's sums,
//! a mean): in f32 they differ by about 1e-7 relative per operation, and the
//! differences grow over training steps. The tolerance is wide enough for
//! that and narrow enough to catch a different formula (a clamp, an eps in
//! another place, a bias correction), which shifts a loss by far more.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::run::{run, Outcome};
use crate::scenario::{DTypeName, Phase, Scenario};

/// Where PyTorch first went non-finite, as the script reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TorchFirst {
    /// Step within the fold.
    pub step: usize,
    /// Epoch.
    pub epoch: usize,
    /// Fold.
    pub fold: usize,
    /// Phase, named as nanhunt names it.
    pub phase: Phase,
    /// Tensor, named as nanhunt names it.
    pub tensor: String,
}

/// What a confirmation found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum TorchVerdict {
    /// Both go non-finite at the same fold, step and phase.
    Confirmed,
    /// Both go non-finite, at different places.
    ConfirmedElsewhere,
    /// Both stay finite.
    BothFinite,
    /// nanhunt goes non-finite; PyTorch stays finite.
    TorchStaysFinite,
    /// nanhunt stays finite; PyTorch does not.
    OnlyTorch,
}

impl TorchVerdict {
    /// Whether the two frameworks agree (exit 0).
    pub fn agrees(self) -> bool {
        matches!(self, TorchVerdict::Confirmed | TorchVerdict::BothFinite)
    }
}

/// A confirmation's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Confirmation {
    /// PyTorch's version.
    pub torch: String,
    /// The verdict.
    pub verdict: TorchVerdict,
    /// Where nanhunt first went non-finite: (fold, step, phase, tensor).
    pub nanhunt: Option<(usize, usize, Phase, String)>,
    /// Where PyTorch first went non-finite.
    pub pytorch: Option<TorchFirst>,
    /// The relative tolerance the losses were compared with.
    pub tolerance: f64,
    /// The first step whose training losses differ by more than the tolerance: (fold, step,
    /// nanhunt's loss, PyTorch's loss).
    pub loss_differs: Option<(usize, usize, f64, f64)>,
    /// Steps compared.
    pub compared: usize,
}

impl std::fmt::Display for Confirmation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = |fold: usize, step: usize, phase: Phase, tensor: &str| format!("step {step} (fold {fold}), {} phase, `{tensor}`", <&str>::from(phase));
        let ours = self.nanhunt.as_ref().map(|(fo, st, ph, t)| at(*fo, *st, *ph, t));
        let theirs = self.pytorch.as_ref().map(|p| at(p.fold, p.step, p.phase, &p.tensor));
        match self.verdict {
            TorchVerdict::Confirmed => write!(f, "confirmed in PyTorch {}: both go non-finite at {}", self.torch, ours.unwrap_or_default())?,
            TorchVerdict::ConfirmedElsewhere => write!(f, "confirmed at a different step in PyTorch {}: nanhunt at {}, PyTorch at {}", self.torch, ours.unwrap_or_default(), theirs.unwrap_or_default())?,
            TorchVerdict::BothFinite => write!(f, "both stay finite (PyTorch {})", self.torch)?,
            TorchVerdict::TorchStaysFinite => write!(f, "PyTorch {} stays finite; nanhunt goes non-finite at {}", self.torch, ours.unwrap_or_default())?,
            TorchVerdict::OnlyTorch => write!(f, "nanhunt stays finite but PyTorch {} does not: {}", self.torch, theirs.unwrap_or_default())?,
        }
        match self.loss_differs {
            Some((fold, step, a, b)) => write!(f, "; losses first differ by more than {:e} (relative) at step {step} (fold {fold}): {a:e} vs {b:e}", self.tolerance),
            None => write!(f, "; the training losses agree within {:e} (relative) over {} steps", self.tolerance, self.compared),
        }
    }
}

/// The relative tolerance losses are compared with, per dtype.
pub fn tolerance(d: DTypeName) -> f64 {
    match d {
        DTypeName::F64 => 1e-9,
        DTypeName::F32 => 1e-4,
        DTypeName::F16 | DTypeName::Bf16 => 2e-2,
    }
}

/// The script's last line: `NANHUNT {json}`.
#[derive(Deserialize)]
struct Report {
    torch: String,
    first: Option<TorchFirst>,
}

/// Runs `s` in nanhunt and, exported to `work`, in PyTorch through `python`, and compares.
pub fn confirm(s: &Scenario, python: &Path, work: &Path) -> Result<Confirmation> {
    super::export(s, work)?;
    let fail = |message: String| Error::Torch { python: python.to_path_buf(), message };
    let out = Command::new(python).arg("repro.py").current_dir(work).output().map_err(|e| fail(format!("cannot run it: {e} (pass --python PATH, an interpreter that has torch)")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("NANHUNT ")) else {
        let tail: Vec<&str> = stderr.lines().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
        let hint = if stderr.contains("No module named 'torch'") { "torch is not installed for this interpreter (pip install torch)".to_string() } else { format!("the script failed (exit {:?}): {}", out.status.code(), tail.join(" | ")) };
        return Err(fail(hint));
    };
    let report: Report = serde_json::from_str(line).map_err(|e| fail(format!("unreadable result line: {e}")))?;
    let theirs = read_losses(&work.join("trace.torch.csv")).map_err(fail)?;
    let o = run(s);
    if let Some(e) = &o.error {
        return Err(Error::Invalid { location: s.name.clone(), key: "run".into(), message: e.clone() });
    }
    Ok(compare(&o, report, &theirs, tolerance(s.train.precision.low().unwrap_or(s.train.dtype))))
}

/// (fold, step, train_loss) of each row of the script's trace.
fn read_losses(path: &Path) -> std::result::Result<Vec<(usize, usize, f64)>, String> {
    let mut r = csv::Reader::from_path(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for rec in r.records() {
        let rec = rec.map_err(|e| format!("{}: {e}", path.display()))?;
        let num = |i: usize| rec.get(i).unwrap_or("").parse::<f64>().unwrap_or(f64::NAN);
        out.push((num(2) as usize, num(0) as usize, num(3)));
    }
    Ok(out)
}

fn compare(o: &Outcome, report: Report, theirs: &[(usize, usize, f64)], tol: f64) -> Confirmation {
    let ours = o.first_nonfinite.as_ref().map(|f| (f.fold, f.step, f.phase, f.tensor.clone()));
    let verdict = match (&ours, &report.first) {
        (Some((fo, st, ph, _)), Some(p)) if (*fo, *st, *ph) == (p.fold, p.step, p.phase) => TorchVerdict::Confirmed,
        (Some(_), Some(_)) => TorchVerdict::ConfirmedElsewhere,
        (None, None) => TorchVerdict::BothFinite,
        (Some(_), None) => TorchVerdict::TorchStaysFinite,
        (None, Some(_)) => TorchVerdict::OnlyTorch,
    };
    let mut compared = 0;
    let mut loss_differs = None;
    for r in &o.trace.rows {
        let Some(&(_, _, b)) = theirs.iter().find(|(fo, st, _)| (*fo, *st) == (r.fold, r.step)) else { continue };
        let a = r.train_loss;
        compared += 1;
        let same = (a.is_nan() && b.is_nan()) || a == b || (a.is_finite() && b.is_finite() && (a - b).abs() <= tol * a.abs().max(b.abs()));
        if !same {
            loss_differs = Some((r.fold, r.step, a, b));
            break;
        }
    }
    Confirmation { torch: report.torch, verdict, nanhunt: ours, pytorch: report.first, tolerance: tol, loss_differs, compared }
}

/// A fresh directory under the system's temporary folder, for one confirmation.
pub fn scratch() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("nanhunt-confirm-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok(dir)
}
