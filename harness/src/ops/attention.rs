//! `attention`: multi-head scaled dot-product self-attention over `(batch, seq, width)`, with
//! separate `q`, `k`, `v` and `o` projections, planned as three nodes so the watch sees its
//! scores and probabilities by name: `{name}.scores` (`Part::Scores`: `q kᵀ / sqrt(d)`, with
//! `q` and `k`), `{name}.probs` (`Part::Probs`: the mask, then the softmax) and `{name}`
//! (`Part::Mix`: the probabilities times the values, through the output projection, with `v`
//! and `o`), which reads the probabilities and, second, the attention's input. Keys past a
//! row's length (`data.padding`) are masked, and future keys if `causal`. The kernels are
//! `run::model::attention`.

use candle_core::Tensor;

use super::{Autocast, Cx, Explained, Facts, Op, Rounding, Rule, Torch};
use crate::error::Result;
use crate::run::model::attention::{mix, probs, scores};
use crate::scenario::{MaskFill, Part, Planner, Role, Shape, SoftmaxKind};

/// Multi-head scaled dot-product self-attention.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Attention {
    /// Number of heads; must divide the width.
    pub heads: usize,
    /// Mask future positions (each query sees itself and earlier keys).
    #[serde(default)]
    pub causal: bool,
    /// What masked scores are set to before the softmax.
    #[serde(default)]
    pub mask_fill: MaskFill,
    /// Which softmax turns scores into probabilities.
    #[serde(default)]
    pub softmax: SoftmaxKind,
}

impl Op for Attention {
    fn check(&self) -> Vec<(&'static str, String)> {
        (self.heads == 0).then(|| ("heads", "must be at least 1".to_string())).into_iter().collect()
    }

    fn plan(&self, p: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        let Shape::Seq { len, width: w } = input else {
            return Err(format!("an attention layer needs sequence input (batch, seq, width), and gets {}", input.describe()));
        };
        let heads = self.heads;
        if heads == 0 || w % heads != 0 {
            return Err(format!("`heads` = {heads} must divide the width {w} (each head gets width / heads)"));
        }
        // `nn.MultiheadAttention` draws q, k and v as one (3w, w) matrix (fan-out 3w); its biases start at 0.
        let projection = |p: &mut Planner<'_>, name: &str, role: Role, fan_out: usize| {
            p.param(&format!("{name}.weight"), vec![w, w], role, (w, fan_out), w, None);
            p.param(&format!("{name}.bias"), vec![w], Role::ZeroBias, (w, w), w, None);
        };
        let x = p.input();
        let scored = Shape::Seq { len: heads.saturating_mul(len), width: len };
        projection(p, "q", Role::InProj, w.saturating_mul(3));
        projection(p, "k", Role::InProj, w.saturating_mul(3));
        let s = p.node(Part::Scores, "scores", &[x], scored);
        let probabilities = p.node(Part::Probs, "probs", &[s], scored);
        projection(p, "v", Role::InProj, w.saturating_mul(3));
        projection(p, "o", Role::Weight, w);
        p.node(Part::Mix, "", &[probabilities, x], input);
        // Scores and probabilities are nodes; q, k, v and the heads' mix are not.
        p.hold(len.saturating_mul(w).saturating_mul(4));
        Ok(input)
    }

    fn held(&self, _: Shape, _: Shape, values: u128) -> u128 {
        values
    }

    fn levels(&self) -> (u64, u64) {
        // Per node, each of the three.
        (16, 0)
    }

    fn dropout(&self) -> f64 {
        0.0
    }

    fn forward(&self, x: &Tensor, cx: &Cx<'_>) -> Result<Tensor> {
        let p = |k: usize| cx.param(k);
        match cx.part {
            Part::Scores => scores(x, (p(0), p(1), p(2), p(3)), self.heads, cx.inner),
            Part::Probs => probs(x, cx.mask, self.causal, self.mask_fill, self.softmax),
            Part::Mix => {
                let Some(input) = cx.others.first() else { return Err(super::unplanned("attention's mix reading one input".into())) };
                mix(x, input, (p(0), p(1), p(2), p(3)), self.heads, cx.inner)
            }
            Part::Whole | Part::Sum => Err(super::unplanned(format!("attention's {:?} node", cx.part))),
        }
    }

    fn autocast(&self, part: Part) -> Autocast {
        match part {
            // The softmax is on the f32 list; the products (and projections) in the low dtype.
            Part::Probs => Autocast::F32,
            Part::Scores | Part::Mix | Part::Whole | Part::Sum => Autocast::Low,
        }
    }

    fn rounding(&self, part: Part) -> Rounding {
        match part {
            Part::Scores => Rounding::Projections,
            Part::Mix => Rounding::Own,
            Part::Probs | Part::Whole | Part::Sum => Rounding::Outside,
        }
    }

    fn explain_forward(&self, part: Part, f: &Facts<'_>) -> Explained {
        // The probabilities read finite scores; a max-subtracted softmax cannot overflow, so the
        // NaN is a row whose every key was set to -inf.
        let plain = self.softmax == SoftmaxKind::Plain && self.mask_fill == MaskFill::NegInf;
        match part {
            Part::Probs => (plain && f.x.is_finite()).then(|| fully_masked(self.causal, f)),
            Part::Scores => scores_overflow(self.heads, f),
            Part::Mix | Part::Whole | Part::Sum => None,
        }
    }

    fn explain_backward(&self, _: &Facts<'_>) -> Explained {
        None
    }

    fn explain_zeros(&self, _: usize, _: usize) -> Explained {
        None
    }

    fn torch(&self) -> Torch {
        Torch::Module("(Attention(width, spec), width)".into())
    }
}

/// The scores `q kᵀ / sqrt(d)` overflowed the dtype from a finite input `f` (`(batch, seq,
/// width)`): `q` and `k` are each the input times a `width × width` projection, so a score is
/// a sum of `d` products of two projected values and grows with the square of the input's scale.
fn scores_overflow(heads: usize, f: &Facts<'_>) -> Explained {
    let width = f.dims.last().copied().unwrap_or(1).max(1);
    let d = width / heads.max(1);
    let m = f.read.max.abs().max(f.read.min.abs());
    (f.read.infinite + f.read.nan == 0).then(|| {
        let dt: &str = f.dtype.into();
        (
            Rule::Overflow,
            format!(
                "the attention scores q·kᵀ/√{d} overflow {dt} (largest value {}) from a finite input (values up to {}): q and k are each the input times a {width}×{width} projection, and a score sums {d} products of the two, so it grows with the square of the input's scale",
                crate::human(f.lim.max),
                crate::human(m)
            ),
        )
    })
}

/// A query of the scores `f` (`(batch, heads, seq, seq)`) whose every key is masked.
fn fully_masked(causal: bool, f: &Facts<'_>) -> (Rule, String) {
    let cols = f.dims.last().copied().unwrap_or(1).max(1);
    let heads = f.dims.get(1).copied().unwrap_or(1).max(1);
    let (b, h, q) = (f.index / (cols * cols * heads), (f.index / (cols * cols)) % heads, (f.index / cols) % cols);
    let hidden = if causal { "padding (past the row's length) or causality (after the query)" } else { "padding (past the row's length)" };
    (
        Rule::FullyMaskedRow,
        format!("query {q} of row {b} (head {h}) has every key masked by {hidden}: its scores are all −inf and the plain softmax computes exp(−inf − (−inf)) = NaN, whose gradient is NaN even where the loss ignores the row. softmax = \"safe\" (torch._safe_softmax) gives zeros there; mask_fill = \"finite_min\" gives a uniform row"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::Read;
    use crate::scenario::{plan, DTypeName, InShape, Init, Input, Layer, ModelSpec};

    fn attention(heads: usize) -> Attention {
        Attention { heads, causal: false, mask_fill: MaskFill::NegInf, softmax: SoftmaxKind::Plain }
    }

    #[test]
    fn attention_plans_scores_probabilities_and_mix_with_their_projections() {
        let spec = ModelSpec { init: Init::Torch, layers: vec![Layer::Attention(attention(2))], init_scale: 1.0, code: None, onnx: None };
        let p = plan(&spec, InShape { features: 4, seq_len: Some(3), vocab: None, image: None }).unwrap();
        let nodes: Vec<_> = p.nodes.iter().map(|n| (n.name.as_str(), n.part, n.inputs.clone(), n.params.clone(), n.shape)).collect();
        // Scores (batch, heads · seq, seq) = (batch, 6, 3), per the plan's flattening of the heads.
        let scored = Shape::Seq { len: 6, width: 3 };
        assert_eq!(
            nodes,
            [
                ("layers.0.attention.scores", Part::Scores, vec![Input::Model], 0..4, scored),
                ("layers.0.attention.probs", Part::Probs, vec![Input::Node(0)], 4..4, scored),
                ("layers.0.attention", Part::Mix, vec![Input::Node(1), Input::Model], 4..8, Shape::Seq { len: 3, width: 4 }),
            ]
        );
        let params: Vec<_> = p.params.iter().map(|p| (p.name.as_str(), p.shape.clone(), p.role, p.fan_out)).collect();
        assert_eq!(params[0], ("layers.0.attention.q.weight", vec![4, 4], Role::InProj, 12));
        assert_eq!(params[7], ("layers.0.attention.o.bias", vec![4], Role::ZeroBias, 4));
        assert_eq!((params[6].2, params[6].3), (Role::Weight, 4));
        // q, k, v and the mix: 4 · seq · width values per example beside the nodes.
        assert_eq!(p.attention_cells, 4 * 3 * 4);
        let err = |a: Attention, input: InShape| plan(&ModelSpec { layers: vec![Layer::Attention(a)], ..spec.clone() }, input).unwrap_err().1;
        assert_eq!(err(attention(3), InShape { features: 4, seq_len: Some(3), vocab: None, image: None }), "`heads` = 3 must divide the width 4 (each head gets width / heads)");
        assert_eq!(err(attention(1), InShape { features: 4, seq_len: None, vocab: None, image: None }), "an attention layer needs sequence input (batch, seq, width), and gets (batch, 4)");
        assert_eq!(attention(0).check(), [("heads", "must be at least 1".to_string())]);
    }

    #[test]
    fn a_nan_probability_from_finite_scores_is_a_fully_masked_row() {
        // Scores (batch 2, heads 2, seq 3, seq 3): flat index 1·18 + 1·9 + 2·3 + 1 = 34 is
        // batch 1, head 1, query 2 (key 1).
        let dims = [2, 2, 3, 3];
        let f = Facts { index: 34, dims: &dims, read: Read { infinite: 0, nan: 0, min: -1.0, max: 1.0 }, ..Facts::at(0.5, f64::NAN, DTypeName::F32) };
        let (rule, reason) = Attention { causal: true, ..attention(2) }.explain_forward(Part::Probs, &f).unwrap();
        assert_eq!(rule, Rule::FullyMaskedRow);
        assert!(reason.starts_with("query 2 of row 1 (head 1) has every key masked by padding (past the row's length) or causality"), "{reason}");
        // Not with the safe softmax or a finite fill, not from a non-finite score, not in the other nodes.
        assert_eq!(Attention { softmax: SoftmaxKind::Safe, ..attention(2) }.explain_forward(Part::Probs, &f), None);
        assert_eq!(Attention { mask_fill: MaskFill::FiniteMin, ..attention(2) }.explain_forward(Part::Probs, &f), None);
        assert_eq!(attention(2).explain_forward(Part::Probs, &Facts { x: f64::INFINITY, ..f }), None);
        assert_eq!(attention(2).explain_forward(Part::Mix, &f), None);
    }

    #[test]
    fn scores_that_overflow_from_a_finite_input_grow_with_its_square() {
        // Input (batch 1, seq 3, width 4) with 2 heads: d = 4/2 = 2, √2 in the scale.
        let dims = [1, 3, 4];
        let f = Facts { index: 5, dims: &dims, read: Read { infinite: 0, nan: 0, min: -300.0, max: 250.0 }, ..Facts::at(250.0, f64::NAN, DTypeName::F16) };
        let (rule, reason) = attention(2).explain_forward(Part::Scores, &f).unwrap();
        assert_eq!(rule, Rule::Overflow);
        assert!(reason.starts_with("the attention scores q·kᵀ/√2 overflow f16 (largest value 65504) from a finite input (values up to 300)"), "{reason}");
        assert!(reason.contains("4×4 projection") && reason.contains("sums 2 products"), "{reason}");
        // An input that is already infinite is not this.
        assert_eq!(attention(2).explain_forward(Part::Scores, &Facts { read: Read { infinite: 1, ..f.read }, ..f }), None);
    }
}
