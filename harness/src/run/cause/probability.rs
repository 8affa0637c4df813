//! The losses of probabilities (`bce`, `naive_cross_entropy`), diagnosed as the compute
//! dtype evaluates them. `bce` takes `log(p + eps)` and `log(1 − p + eps)` with the scalars
//! rounded to the dtype first (Candle's `affine` and PyTorch's scalar arithmetic on a half
//! tensor both do: in f16, `1 + 1e-7` is 1, so `1 − p + 1e-7` is exactly 0 at `p = 1`). The
//! naive cross-entropy takes `log` of a softmax computed without subtracting the row's max:
//! a probability that underflows to 0 meets `log 0`, and an `exp` that overflows makes
//! `∞/∞ = NaN`. A loss whose logs are finite can still overflow in low precision when the
//! targets are large: the term that overflowed is named, with the targets' scale.

use candle_core::Tensor;

use super::{cause, operand, round, Cause, Limits, Operand, Rule};
use crate::error::Result;
use crate::scenario::{DTypeName, LossKind, LossSpec};

/// The arguments of `bce`'s two logs at prediction `p`, as dtype `d` computes them (after the
/// loss's clamp): `p + eps` and `1 + eps − p`, each scalar rounded first.
pub(super) struct BceArgs {
    /// The clamp's bounds as the dtype holds them, if the loss clamps.
    clamp: Option<(f64, f64)>,
    /// `eps` and `1 + eps` rounded to the dtype.
    eps: (f64, f64),
    /// The compute dtype.
    d: DTypeName,
}

impl BceArgs {
    /// The arguments of `spec`'s logs in dtype `d`.
    pub(super) fn new(spec: &LossSpec, d: DTypeName) -> BceArgs {
        let e = spec.epsilon.unwrap_or(0.0);
        BceArgs { clamp: spec.clamp.map(|c| (round(c, d), round(1.0 - c, d))), eps: (round(e, d), round(1.0 + e, d)), d }
    }

    /// `p` after the clamp.
    fn clamped(&self, p: f64) -> f64 {
        self.clamp.map_or(p, |(lo, hi)| p.clamp(lo, hi))
    }

    /// `(p + eps, 1 + eps − p)` as the dtype computes them.
    pub(super) fn at(&self, p: f64) -> (f64, f64) {
        let c = self.clamped(p);
        (round(c + self.eps.0, self.d), round(self.eps.1 - c, self.d))
    }
}

/// `bce`'s forward went non-finite: a log of 0 or of a negative number, the clamp that does
/// not clamp, or (logs finite) a term that overflows the dtype.
pub(super) fn bce(spec: &LossSpec, (p, y): (&Tensor, &Tensor), (pv, yv): (&[f64], &[f64]), logits: Option<&Tensor>, d: DTypeName) -> Result<Option<Cause>> {
    let dt: &str = d.into();
    let op = format!("loss ({})", <&str>::from(spec.kind));
    let args = BceArgs::new(spec, d);
    let inputs = |i: usize| -> Result<Vec<Operand>> { Ok(vec![operand("p", p, Some(i), d)?, operand("y", y, Some(i), d)?]) };
    let Some(i) = pv.iter().position(|&p| !(args.at(p).0 > 0.0 && args.at(p).1 > 0.0)) else {
        return with_inputs(terms_overflow(&args, pv, yv, d).map(|(i, r)| (i, cause(Rule::Overflow, op, r, vec![]))), inputs);
    };
    let (a, b) = args.at(pv[i]);
    let yi = yv.get(i).copied().unwrap_or(0.0);
    let (side, arg, weight) = if a.is_nan() || a <= 0.0 { ("p", a, yi) } else { ("1 − p", b, 1.0 - yi) };
    if arg < 0.0 || arg.is_nan() {
        let reason = format!("log of a negative number in row {i}: p = {} is outside [0, 1], so log({side}) is NaN (the layer before the loss does not output probabilities)", crate::human(pv[i]));
        return Ok(Some(cause(Rule::OutsideDomain, op, reason, inputs(i)?)));
    }
    let product = if weight == 0.0 {
        ", and its weight is 0, so 0·(−∞) = NaN".to_string()
    } else if weight < 0.0 {
        let w = if side == "p" { "y" } else { "1 − y" };
        format!(", and its weight {w} = {} is negative (target {} is outside [0, 1]), so the term −({w})·log 0 is −∞", crate::human(weight), crate::human(yi))
    } else {
        String::new()
    };
    let e = spec.epsilon.filter(|e| *e > 0.0);
    let lost = match e {
        Some(e) if side == "p" && args.eps.0 == 0.0 => format!("; eps = {} rounds to 0 in {dt}, so it does not guard the log", crate::human(e)),
        Some(e) if side != "p" && args.eps.1 == 1.0 => format!("; 1 + {} rounds to 1 in {dt}, so eps does not guard the log", crate::human(e)),
        Some(_) | None => String::new(),
    };
    let saturated = match logits {
        Some(l) => {
            l.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?.get(i).map_or(String::new(), |z| format!("; the sigmoid before it saturated at logit {} in {dt}", crate::human(*z)))
        }
        None => String::new(),
    };
    if let (Some(c), true) = (spec.clamp, args.clamp.is_some_and(|(_, hi)| hi == 1.0) && side == "1 − p") {
        let reason = format!("the clamp does not clamp: 1 − {} rounds to 1 in {dt}, so p = 1 in row {i} reaches log(1 − p) = log 0{product}{lost}{saturated}", crate::human(c));
        return Ok(Some(cause(Rule::OneMinusEpsRoundsToOne, op, reason, inputs(i)?)));
    }
    let reason = format!("log of exactly 0 in row {i} ({side} = 0){product}{lost}{saturated}");
    Ok(Some(cause(Rule::LogOfZero, op, reason, inputs(i)?)))
}

/// The cause `found` (with the flat index it is about) with the loss's inputs at that index.
fn with_inputs(found: Option<(usize, Cause)>, inputs: impl Fn(usize) -> Result<Vec<Operand>>) -> Result<Option<Cause>> {
    found.map(|(i, c)| Ok(Cause { inputs: inputs(i)?, ..c })).transpose()
}

/// With both logs finite, the first term `y·log(p + eps) + (1 − y)·log(1 − p + eps)` whose
/// products overflow the dtype (each rounded as the dtype computes it), in words.
fn terms_overflow(args: &BceArgs, pv: &[f64], yv: &[f64], d: DTypeName) -> Option<(usize, String)> {
    let lim = Limits::of(d);
    let dt: &str = d.into();
    let big_y = yv.iter().fold(0f64, |m, y| m.max(y.abs()));
    pv.iter().zip(yv).enumerate().find_map(|(i, (&p, &y))| {
        let (a, b) = args.at(p);
        let (la, lb, w) = (round(a.ln(), d), round(b.ln(), d), round(1.0 - y, d));
        let exact = y * la + w * lb;
        (exact.abs() > lim.max).then(|| {
            let reason = format!(
                "the term y·log(p + eps) + (1 − y)·log(1 − p + eps) in row {i} is {}·{} + {}·{} = {}, beyond {dt}'s largest value {}: the targets reach {} (outside [0, 1]), and they multiply the logs",
                crate::human(y),
                crate::human(la),
                crate::human(w),
                crate::human(lb),
                crate::human(exact),
                crate::human(lim.max),
                crate::human(big_y)
            );
            (i, reason)
        })
    })
}

/// The naive cross-entropy's forward went non-finite: softmax (no max subtracted) then `log`.
/// `z` are the logits, `y` the one-hot targets, both `(rows, classes)`.
pub(super) fn naive_cross_entropy(spec: &LossSpec, (z, y): (&Tensor, &Tensor), d: DTypeName) -> Result<Option<Cause>> {
    let dt: &str = d.into();
    let op = format!("loss ({})", <&str>::from(LossKind::NaiveCrossEntropy));
    let Some(soft) = Softmax::of(z, d)? else { return Ok(None) };
    let yv = y.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
    let inputs = |i: usize| -> Result<Vec<Operand>> { Ok(vec![operand("logits", z, Some(i), d)?, operand("y", y, Some(i), d)?]) };
    if let Some(i) = soft.e.iter().position(|e| e.is_infinite()) {
        let (r, max_ln) = (i / soft.k, Limits::of(d).max.ln());
        let reason = format!(
            "the softmax before the log does not subtract the row's max: exp({}) overflows {dt} in row {r} (the logit is above ln(max) = {}), so its probabilities are ∞/∞ = NaN (log_softmax, or cross_entropy, subtracts the max and stays finite)",
            crate::human(soft.z[i]),
            crate::human(max_ln)
        );
        return Ok(Some(cause(Rule::Overflow, op, reason, inputs(i)?)));
    }
    let args = BceArgs::new(spec, d);
    let Some(i) = soft.probs.iter().position(|&p| args.at(p).0.is_nan() || args.at(p).0 <= 0.0) else { return Ok(None) };
    let (r, c) = (i / soft.k, i % soft.k);
    let top = soft.z[r * soft.k..(r + 1) * soft.k].iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weight = yv.get(i).copied().unwrap_or(0.0);
    let product = if weight == 0.0 { "its target is 0, so 0·log 0 = 0·(−∞) = NaN" } else { "its target is not 0, so the loss is +∞" };
    let reason = format!(
        "log of exactly 0 in row {r}, class {c}: the softmax probability exp({}) / Σ exp = {} / {} rounds to 0 in {dt} (its logit is {} below the row's largest, {}); {product} (softmax then log; log_softmax keeps it finite)",
        crate::human(soft.z[i]),
        crate::human(soft.e[i]),
        crate::human(soft.sums[r]),
        crate::human(top - soft.z[i]),
        crate::human(top)
    );
    Ok(Some(cause(Rule::LogOfZero, op, reason, inputs(i)?)))
}

/// A softmax without the max subtracted, as the dtype computes it: `exp` rounded, the row sums
/// accumulated in f32 (`in_f32`) and rounded, each probability rounded.
pub(super) struct Softmax {
    /// Classes per row.
    pub k: usize,
    /// The logits, flat.
    pub z: Vec<f64>,
    /// `exp` of each logit.
    pub e: Vec<f64>,
    /// Each row's sum of `e`.
    pub sums: Vec<f64>,
    /// The probabilities, flat.
    pub probs: Vec<f64>,
}

impl Softmax {
    /// The softmax of logits `z` over their last dimension in dtype `d` (`None` for no classes).
    pub(super) fn of(z: &Tensor, d: DTypeName) -> Result<Option<Softmax>> {
        let k = z.dims().last().copied().unwrap_or(0);
        if k == 0 {
            return Ok(None);
        }
        let zv = z.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?;
        let e: Vec<f64> = zv.iter().map(|z| round(z.exp(), d)).collect();
        let sums: Vec<f64> = e.chunks(k).map(|row| round(row.iter().map(|v| *v as f32).sum::<f32>() as f64, d)).collect();
        let probs = e.iter().enumerate().map(|(i, v)| round(v / sums[i / k], d)).collect();
        Ok(Some(Softmax { k, z: zv, e, sums, probs }))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::super::loss;
    use super::*;

    fn t(v: &[f64], rows: usize, d: DType) -> Tensor {
        Tensor::from_vec(v.to_vec(), (rows, v.len() / rows), &Device::Cpu).unwrap().to_dtype(d).unwrap()
    }

    fn spec(kind: LossKind, clamp: Option<f64>, epsilon: Option<f64>) -> LossSpec {
        LossSpec { kind, clamp, epsilon, ..Default::default() }
    }

    /// The loss as the runner computes it, as f64.
    fn value(s: &LossSpec, p: &Tensor, y: &Tensor) -> f64 {
        crate::ops::loss::Loss(s.clone()).apply(p, y).unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn bce_in_f16_rounds_one_plus_eps_to_one_and_a_target_outside_0_1_flips_the_sign() {
        // tensorflow#38457's loss with targets ×151: in f16, 1 + 1e-7 and 1 − 1e-7 both round to
        // 1 (the spacing at 1 is 2⁻¹⁰ = 9.8e-4), so at p = 1, log(1 − p + 1e-7) = log 0 = −∞.
        // PyTorch 2.15 agrees: torch.log(-p + (1 + 1e-7)) is -inf for p = 1 in float16. The
        // weight 1 − y = −150 makes the term −(−150·−∞) = −∞.
        let s = spec(LossKind::Bce, Some(1e-7), Some(1e-7));
        let (p, y) = (t(&[1.0], 1, DType::F16), t(&[151.0], 1, DType::F16));
        assert_eq!(value(&s, &p, &y), f64::NEG_INFINITY);
        let c = loss(&s, (&p, &y, None), None, (DTypeName::F16, None)).unwrap().expect("explained");
        assert_eq!(c.rule, Rule::OneMinusEpsRoundsToOne, "{c}");
        for fact in ["1 − 1e-7 rounds to 1 in f16", "weight 1 − y = -150 is negative (target 151", "1 + 1e-7 rounds to 1 in f16"] {
            assert!(c.reason.contains(fact), "`{fact}` in {c}");
        }
        // With targets in [0, 1] the term is +∞ and no sign is mentioned.
        let c = loss(&s, (&p, &t(&[0.0], 1, DType::F16), None), None, (DTypeName::F16, None)).unwrap().unwrap();
        assert!(c.reason.contains("log(1 − p) = log 0; 1 + 1e-7 rounds to 1") && !c.reason.contains("negative"), "{c}");
        // In f32 the epsilon survives (1 + 1e-7 = 1.00000012), the log is finite: no diagnosis.
        assert_eq!(loss(&s, (&t(&[1.0], 1, DType::F32), &t(&[0.0], 1, DType::F32), None), None, (DTypeName::F32, None)).unwrap(), None);
    }

    #[test]
    fn bce_terms_that_overflow_f16_name_the_targets_scale() {
        // p = 0.25, y = 60000 in f16: log 0.25 = −1.386 and log 0.75 = −0.2877 (rounded to f16:
        // −1.3867 and −0.28760), 1 − y = −59999 rounds to −60000. The term is
        // 60000·(−1.3867) + (−60000)·(−0.28760) = −83202 + 17256 = −65946, past 65504.
        let s = spec(LossKind::Bce, None, None);
        let (p, y) = (t(&[0.25], 1, DType::F16), t(&[60000.0], 1, DType::F16));
        assert!(!value(&s, &p, &y).is_finite());
        let c = loss(&s, (&p, &y, None), None, (DTypeName::F16, None)).unwrap().expect("explained");
        assert_eq!(c.rule, Rule::Overflow, "{c}");
        assert!(c.reason.contains("= -6.59e4, beyond f16's largest value 65504") && c.reason.contains("targets reach 60000"), "{c}");
        // A prediction outside [0, 1] takes the log of a negative number.
        let c = loss(&s, (&t(&[-0.5], 1, DType::F32), &t(&[1.0], 1, DType::F32), None), None, (DTypeName::F32, None)).unwrap().unwrap();
        assert_eq!(c.rule, Rule::OutsideDomain, "{c}");
    }

    #[test]
    fn naive_cross_entropy_underflows_a_probability_to_0_and_overflows_exp() {
        // Logits (−60, 50) in f32: exp(−60)/(exp(−60) + exp(50)) = e^(−110) = 1.7e-48, below f32's
        // smallest subnormal 1.4e-45, so it is 0; its target is 0: 0·log 0 = NaN. PyTorch 2.15:
        // -(torch.log(torch.exp(z) / torch.exp(z).sum(-1, keepdim=True)) * y).sum(-1).mean() is nan.
        let s = spec(LossKind::NaiveCrossEntropy, None, None);
        let (z, y) = (t(&[-60.0, 50.0], 1, DType::F32), t(&[0.0, 1.0], 1, DType::F32));
        assert!(value(&s, &z, &y).is_nan());
        let c = loss(&s, (&z, &y, None), None, (DTypeName::F32, None)).unwrap().expect("explained");
        assert_eq!(c.rule, Rule::LogOfZero, "{c}");
        for fact in ["row 0, class 0", "exp(-60) / Σ exp = 8.76e-27 / 5.18e21 rounds to 0 in f32", "110 below the row's largest, 50", "0·log 0 = 0·(−∞) = NaN"] {
            assert!(c.reason.contains(fact), "`{fact}` in {c}");
        }
        // exp(100) is past f32's ln(max) = 88.7: ∞/∞.
        let c = loss(&s, (&t(&[100.0, 0.0], 1, DType::F32), &y, None), None, (DTypeName::F32, None)).unwrap().expect("explained");
        assert_eq!(c.rule, Rule::Overflow, "{c}");
        assert!(c.reason.contains("exp(100) overflows f32") && c.reason.contains("88.7"), "{c}");
    }
}
