//! The orders a search space lists its knobs in. Seeded hunts draw, screen and
//! scan knobs in these orders (they predate the knob table and are kept so that a
//! seed gives the same candidates, and `nanhunt margins` the same rows, as before);
//! each lists every knob once (the array type makes a missing one a compile error,
//! a test a repeated one). A new knob goes last in each.

use crate::scenario::Knob;

/// The order of the arms of the proptest union a mutation is drawn from.
pub(super) const DRAW: [Knob; Knob::COUNT] = [
    Knob::Lr,
    Knob::InitScale,
    Knob::InputScale,
    Knob::InputMean,
    Knob::InputStd,
    Knob::TargetScale,
    Knob::BatchSize,
    Knob::Epochs,
    Knob::Inject,
    Knob::Dtype,
    Knob::Optimizer,
    Knob::ClipNorm,
    Knob::LossEpsilon,
    Knob::LossClamp,
    Knob::OptimizerEps,
    Knob::NormEps,
    Knob::Beta2,
    Knob::Momentum,
    Knob::PaddingFraction,
    Knob::DropoutP,
    Knob::SeqLen,
    Knob::Precision,
    Knob::LossScaleInit,
    Knob::GrowthInterval,
    Knob::Accumulate,
    Knob::WarmupSteps,
    Knob::Seed,
    Knob::LossKind,
    Knob::LossReduction,
    Knob::Const,
    Knob::LabelSmoothing,
    Knob::IgnoreFraction,
];

/// The order of the screening sweep within each of its groups (riskier ends, other values, safer ends).
pub(super) const SCREEN: [Knob; Knob::COUNT] = [
    Knob::Lr,
    Knob::InitScale,
    Knob::InputScale,
    Knob::TargetScale,
    Knob::InputStd,
    Knob::InputMean,
    Knob::Epochs,
    Knob::BatchSize,
    Knob::LossClamp,
    Knob::LossEpsilon,
    Knob::OptimizerEps,
    Knob::NormEps,
    Knob::Beta2,
    Knob::Momentum,
    Knob::PaddingFraction,
    Knob::DropoutP,
    Knob::SeqLen,
    Knob::Dtype,
    Knob::LossScaleInit,
    Knob::GrowthInterval,
    Knob::Accumulate,
    Knob::WarmupSteps,
    Knob::Optimizer,
    Knob::Precision,
    Knob::Inject,
    Knob::ClipNorm,
    Knob::Seed,
    Knob::LossKind,
    Knob::LossReduction,
    Knob::Const,
    Knob::LabelSmoothing,
    Knob::IgnoreFraction,
];

/// The order numeric knobs are scanned in (the rows of `nanhunt margins`); knobs without a range are skipped.
pub(super) const SCAN: [Knob; Knob::COUNT] = [
    Knob::Lr,
    Knob::InitScale,
    Knob::InputScale,
    Knob::InputMean,
    Knob::InputStd,
    Knob::TargetScale,
    Knob::BatchSize,
    Knob::Epochs,
    Knob::LossClamp,
    Knob::LossEpsilon,
    Knob::OptimizerEps,
    Knob::Beta2,
    Knob::Momentum,
    Knob::NormEps,
    Knob::PaddingFraction,
    Knob::SeqLen,
    Knob::DropoutP,
    Knob::LossScaleInit,
    Knob::GrowthInterval,
    Knob::WarmupSteps,
    Knob::Accumulate,
    Knob::Inject,
    Knob::Dtype,
    Knob::Optimizer,
    Knob::ClipNorm,
    Knob::Seed,
    Knob::Precision,
    Knob::LossKind,
    Knob::LossReduction,
    Knob::Const,
    Knob::LabelSmoothing,
    Knob::IgnoreFraction,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_order_lists_every_knob_once() {
        for order in [DRAW, SCREEN, SCAN] {
            let mut sorted = order.to_vec();
            sorted.sort();
            assert_eq!(sorted, Knob::ALL);
        }
    }
}
