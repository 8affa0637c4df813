//! The `loss.kind` knob's hook: which other kinds can stand in for a scenario's loss.
//!
//! A kind change keeps the model and the data: the new kind must read the prediction as the
//! old one does (real values, probabilities or logits: the model's head was built for it) and
//! take the targets the data makes (`bce` needs targets in `[0, 1]`, cross-entropy one-hot
//! classes, the ratio loss no zero target). What is not known of the targets (a CSV's columns,
//! normal draws) is taken as not meeting the need, so only valid candidates are drawn.
//! `data.target_scale` is another knob's move and is not looked at here.

use crate::scenario::{DataSpec, InputSpec, LossKind, TargetRow, TargetSpec};

/// How a loss reads the model's prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    /// Any real values (the regression losses).
    Reals,
    /// Probabilities in `[0, 1]`, the output of a sigmoid (`bce`, `bce_torch`).
    Probabilities,
    /// Logits, any real values a sigmoid or softmax is applied to inside the loss.
    Logits,
    /// As its own expression says: an `expr` loss stands in for no kind and no kind for it.
    Own,
}

/// What a loss needs of the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Any real values.
    Any,
    /// No target is 0 (the ratio loss divides by it).
    NonZero,
    /// Every target in `[0, 1]`.
    Unit,
    /// One-hot rows of at least 2 classes.
    OneHot,
}

/// How `kind` reads the prediction and what it needs of the targets.
fn contract(kind: LossKind) -> (Reads, Needs) {
    match kind {
        LossKind::Mse | LossKind::Mae | LossKind::Huber => (Reads::Reals, Needs::Any),
        LossKind::MeanAbsRatio => (Reads::Reals, Needs::NonZero),
        LossKind::Bce | LossKind::BceTorch => (Reads::Probabilities, Needs::Unit),
        LossKind::BceLogits => (Reads::Logits, Needs::Unit),
        LossKind::CrossEntropy | LossKind::NaiveCrossEntropy => (Reads::Logits, Needs::OneHot),
        // The named losses read their own inputs (log-probabilities, embeddings) and take constants.
        LossKind::Expr | LossKind::KlDiv | LossKind::KlDivLogTarget | LossKind::Focal | LossKind::InfoNce | LossKind::Ctc => (Reads::Own, Needs::Any),
    }
}

/// Every explicit target value, row by row; none for generated targets.
fn explicit(t: &TargetSpec) -> Option<Vec<Vec<f64>>> {
    match t {
        TargetSpec::Values { values } => Some(
            values
                .iter()
                .map(|r| match r {
                    TargetRow::One(v) => vec![*v],
                    TargetRow::Many(v) => v.clone(),
                })
                .collect(),
        ),
        TargetSpec::Binary
        | TargetSpec::Classes { .. }
        | TargetSpec::Labels { .. }
        | TargetSpec::Sequences { .. }
        | TargetSpec::Uniform { .. }
        | TargetSpec::Normal { .. }
        | TargetSpec::Linear { .. }
        | TargetSpec::NextToken
        | TargetSpec::NextTokenLabels { .. } => None,
    }
}

/// Whether the targets `data` makes (before `target_scale`) are known to meet `need`.
fn meets(data: &DataSpec, need: Needs) -> bool {
    if need == Needs::Any {
        return true;
    }
    let Some(t) = data.targets.as_ref().filter(|_| !matches!(data.inputs, InputSpec::Csv { .. })) else { return false };
    if let Some(rows) = explicit(t) {
        let all = |f: &dyn Fn(f64) -> bool| rows.iter().flatten().all(|v| f(*v));
        return match need {
            Needs::Any => true,
            Needs::NonZero => all(&|v| v != 0.0 && v.is_finite()),
            Needs::Unit => all(&|v| (0.0..=1.0).contains(&v)),
            Needs::OneHot => rows.iter().all(|r| r.len() >= 2 && r.iter().all(|v| *v == 0.0 || *v == 1.0) && r.iter().filter(|v| **v == 1.0).count() == 1),
        };
    }
    match (need, t) {
        (Needs::Unit, TargetSpec::Binary | TargetSpec::Classes { .. } | TargetSpec::NextToken) => true,
        (Needs::Unit, &TargetSpec::Uniform { low, high, .. }) => low >= 0.0 && high <= 1.0,
        (Needs::OneHot, TargetSpec::Classes { k }) => *k >= 2,
        (Needs::OneHot, TargetSpec::NextToken) => true,
        (Needs::NonZero, &TargetSpec::Uniform { low, high, .. }) => low > 0.0 || high <= 0.0,
        (Needs::Any | Needs::NonZero | Needs::Unit | Needs::OneHot, _) => false,
    }
}

/// The kinds that can stand in for `kind` on `data`, in the enum's order, `kind` itself excluded:
/// those that read the prediction as it does and whose needs the targets are known to meet.
pub fn stand_ins(kind: LossKind, data: &DataSpec) -> Vec<LossKind> {
    let reads = contract(kind).0;
    if reads == Reads::Own {
        return Vec::new();
    }
    <LossKind as strum::VariantArray>::VARIANTS.iter().copied().filter(|k| *k != kind && contract(*k).0 == reads && meets(data, contract(*k).1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(targets: &str) -> DataSpec {
        toml::from_str(&format!("n = 8\nfeatures = 2\ninputs = {{ kind = \"normal\" }}\ntargets = {targets}")).unwrap()
    }

    #[test]
    fn a_kind_is_swapped_only_for_kinds_that_read_the_prediction_alike_and_fit_the_targets() {
        use LossKind::*;
        // Binary labels: the probabilities' two kinds swap; the logits' bce may not become a
        // cross-entropy (one column is no one-hot row of 2 classes).
        let binary = data("{ kind = \"binary\" }");
        assert_eq!(stand_ins(Bce, &binary), [BceTorch]);
        assert_eq!(stand_ins(BceLogits, &binary), Vec::<LossKind>::new());
        // Regression on normal targets: the ratio loss needs targets known to be non-zero.
        let normal = data("{ kind = \"normal\" }");
        assert_eq!(stand_ins(Mse, &normal), [Mae, Huber]);
        assert_eq!(stand_ins(Mse, &data("{ kind = \"uniform\", low = 1.0, high = 2.0 }")), [Mae, Huber, MeanAbsRatio]);
        // Classes: both cross-entropies, and bce with logits (one-hot rows are in [0, 1]).
        let classes = data("{ kind = \"classes\", k = 3 }");
        assert_eq!(stand_ins(CrossEntropy, &classes), [BceLogits, NaiveCrossEntropy]);
        assert_eq!(stand_ins(BceLogits, &classes), [CrossEntropy, NaiveCrossEntropy]);
        // Explicit values: 0/1 targets are in [0, 1]; a 2 is not.
        assert_eq!(stand_ins(BceTorch, &data("{ kind = \"values\", values = [0.0, 1.0, 1.0, 0.0] }")), [Bce]);
        assert_eq!(stand_ins(BceTorch, &data("{ kind = \"values\", values = [0.0, 2.0] }")), Vec::<LossKind>::new());
        assert_eq!(stand_ins(NaiveCrossEntropy, &data("{ kind = \"values\", values = [[0.0, 1.0], [1.0, 0.0]] }")), [BceLogits, CrossEntropy]);
        assert_eq!(stand_ins(NaiveCrossEntropy, &data("{ kind = \"values\", values = [[0.5, 0.5], [1.0, 0.0]] }")), [BceLogits]);
    }
}
