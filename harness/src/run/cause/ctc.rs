//! Why `ctc`'s loss is infinite: a row whose input steps (its unpadded positions under
//! `data.padding`, PyTorch's `input_lengths`, or every step) cannot emit its labels, each
//! label a step and each pair of equal labels back to back a blank between them. No alignment
//! exists, the target's probability is 0, and −log 0 = +∞, as PyTorch's `ctc_loss` gives
//! without `zero_infinity` (which makes it 0, so it is never the cause then).

use candle_core::{DType, Tensor};

use super::{cause, operand, Cause};
use crate::error::Result;
use crate::ops::diagnosis::Rule;
use crate::scenario::{DTypeName, LossSpec};

/// The steps a target of `labels` needs: one per label and one per repeated pair.
fn needed(labels: &[f64]) -> (usize, usize) {
    let repeats = labels.windows(2).filter(|w| w[0] == w[1]).count();
    (labels.len() + repeats, repeats)
}

/// The first row of log-probabilities `p` `(batch, steps, classes)` too short for its labels
/// in `y`, under the padding `mask`.
pub(super) fn infeasible(spec: &LossSpec, (p, y, mask): (&Tensor, &Tensor, Option<&Tensor>), d: DTypeName) -> Result<Option<Cause>> {
    let (Ok((batch, steps, classes)), Ok(rows)) = (p.dims3(), y.to_dtype(DType::F64).and_then(|y| y.to_vec2::<f64>())) else { return Ok(None) };
    if spec.zero_infinity {
        return Ok(None);
    }
    let lengths: Vec<usize> = match mask {
        Some(m) => m.to_dtype(DType::F64)?.to_vec2::<f64>()?.iter().map(|r| r.iter().filter(|v| **v != 0.0).count()).collect(),
        None => vec![steps; batch],
    };
    let blank = spec.blank.unwrap_or(0) as f64;
    for (r, (row, &len)) in rows.iter().zip(&lengths).enumerate() {
        let labels: Vec<f64> = row.iter().copied().take_while(|v| *v != blank).collect();
        let (need, repeats) = needed(&labels);
        if len >= need {
            continue;
        }
        let pairs = if repeats > 0 { format!(" ({repeats} pair(s) of equal labels back to back need a blank between)") } else { String::new() };
        let reason = format!(
            "row {r} has {len} input step(s) and its {} label(s) need {need}{pairs}: no alignment exists, the target's probability is 0 and its loss −log 0 = +∞ (PyTorch's ctc_loss without zero_infinity)",
            labels.len()
        );
        let inputs = vec![operand("p", p, Some(r * steps * classes), d)?, operand("y", y, Some(r * row.len()), d)?];
        return Ok(Some(cause(Rule::LogOfZero, "loss (ctc)", reason, inputs)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;
    use crate::scenario::{LossKind, Reduction};

    #[test]
    fn a_row_with_fewer_input_steps_than_its_labels_need_is_named() {
        // Uniform log-probabilities over 3 classes, 3 steps; targets [1, 1] (3 steps: a blank
        // between the repeats) and [1, 2] (2 steps), the blank 0 padding.
        let p = Tensor::full((1.0f64 / 3.0).ln(), (2, 3, 3), &Device::Cpu).unwrap();
        let y = Tensor::new(&[[1.0f64, 1.0, 0.0], [1.0, 2.0, 0.0]], &Device::Cpu).unwrap();
        let spec = LossSpec { kind: LossKind::Ctc, reduction: Reduction::Mean, ..Default::default() };
        // Every step an input: both fit.
        assert!(infeasible(&spec, (&p, &y, None), DTypeName::F64).unwrap().is_none());
        // Row 0 padded to 2 steps: [1, 1] needs 3.
        let mask = Tensor::new(&[[1.0f64, 1.0, 0.0], [1.0, 1.0, 0.0]], &Device::Cpu).unwrap();
        let c = infeasible(&spec, (&p, &y, Some(&mask)), DTypeName::F64).unwrap().expect("row 0");
        assert_eq!(c.rule, Rule::LogOfZero);
        assert!(c.reason.starts_with("row 0 has 2 input step(s) and its 2 label(s) need 3 (1 pair(s)"), "{}", c.reason);
        // zero_infinity makes such a row 0: not the cause.
        let zero = LossSpec { zero_infinity: true, ..spec };
        assert!(infeasible(&zero, (&p, &y, Some(&mask)), DTypeName::F64).unwrap().is_none());
    }
}
