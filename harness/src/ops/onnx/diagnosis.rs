//! The diagnosis rules of the imported ONNX ops: a masked softmax (`Kind::Masked`, a masked
//! fill of `-inf` or an additive `-inf` mask compiled into its softmax) that reads finite
//! scores yet writes NaN has a row whose every value the mask set to `-inf`, as the attention
//! layer's masked softmax (`ops/attention.rs`): the rule `fully_masked_row`.

use super::Kind;
use crate::ops::{Explained, Facts, Rule};

impl Kind {
    /// Why its output went non-finite at the element `f` of its first input, if a rule knows.
    pub fn explain_forward(&self, f: &Facts<'_>) -> Explained {
        match self {
            Kind::Masked { axis, fill, add, .. } => {
                let minus_inf = *add || *fill == f64::NEG_INFINITY;
                (minus_inf && f.x.is_finite() && f.read.infinite + f.read.nan == 0).then(|| fully_masked(*axis, *add, f))
            }
            Kind::Add | Kind::Sub | Kind::Mul | Kind::Div | Kind::Pow { .. } | Kind::Equal | Kind::Less | Kind::Greater | Kind::And | Kind::Or | Kind::Not | Kind::Where => None,
            Kind::Neg | Kind::Sqrt | Kind::Reciprocal | Kind::Erf | Kind::Exp | Kind::Log | Kind::Tanh | Kind::Sigmoid | Kind::Relu | Kind::Abs | Kind::Gelu => None,
            Kind::MatMul | Kind::Gemm { .. } | Kind::Softmax { .. } | Kind::LogSoftmax { .. } | Kind::LayerNorm { .. } | Kind::ReduceMean { .. } | Kind::ReduceSum { .. } => None,
            Kind::Transpose { .. } | Kind::Reshape { .. } | Kind::Unsqueeze { .. } | Kind::Squeeze { .. } | Kind::Expand { .. } | Kind::Slice { .. } | Kind::Concat { .. } | Kind::Narrow { .. } => {
                None
            }
            Kind::Gather { .. } | Kind::Cast { .. } | Kind::Trilu { .. } | Kind::Identity | Kind::Dropout { .. } => None,
        }
    }
}

/// The row of the masked softmax along `axis` through the element `f` (of scores `f.dims`),
/// every value of which the mask set to `-inf`.
fn fully_masked(axis: i64, add: bool, f: &Facts<'_>) -> (Rule, String) {
    let rank = f.dims.len();
    let along = super::shape::axis(axis, rank.max(1), "Softmax").unwrap_or(rank.saturating_sub(1));
    // The element's coordinates, last dim fastest; the softmax's axis shown as `·`.
    let mut rest = f.index;
    let mut coords = vec![String::new(); rank];
    for (i, d) in f.dims.iter().enumerate().rev() {
        let d = (*d).max(1);
        coords[i] = if i == along { "·".to_string() } else { (rest % d).to_string() };
        rest /= d;
    }
    let batch = f.dims.first().map_or(0, |d| (f.index / (f.dims.iter().skip(1).product::<usize>().max(1))) % (*d).max(1));
    let how = if add { "the additive mask is −inf at every one of its positions" } else { "the masked fill sets every one of its positions to −inf" };
    (
        Rule::FullyMaskedRow,
        format!(
            "the softmax's row [{}] along axis {along} (of batch row {batch}) has every position masked: the scores are finite, but {how} (a query that sees no key: padding past the row's length, or causality), and the softmax computes exp(−inf − (−inf)) = NaN, as PyTorch's torch.softmax does, whose gradient is NaN even where the loss ignores the row. Fill with torch.finfo(dtype).min instead of −inf, use torch._safe_softmax (zeros there), or leave every row one unmasked position",
            coords.join(", ")
        ),
    )
}
