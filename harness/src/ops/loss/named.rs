//! The named losses people call from PyTorch, each formula beside the PyTorch call it follows:
//! `kl_div` (`F.kl_div` of log-probabilities, `log_target` as its own kind), `focal`
//! (torchvision's `sigmoid_focal_loss`, γ and α in `consts`) and `info_nce` (the contrastive
//! loss: `F.cross_entropy(p @ y.T / temperature, arange(batch))`, the temperature in `consts`,
//! the embeddings `F.normalize`d first with `normalized`).
//! Each is written as PyTorch computes it, including where it fails: `kl_div` multiplies a
//! zero target by its log-input, so a log-input of −∞ (the log of a softmax that underflowed)
//! gives `0 · (−∞) = NaN`; a small temperature overflows f16's logits.

use candle_core::{Tensor, D};

use super::Terms;
use crate::error::Result;
use crate::ops::diagnosis::{Limits, Rule};
use crate::ops::normalize::normalize;
use crate::ops::{py, Explained};
use crate::run::kernel::activation::log_softmax_along;
use crate::run::opmath::{div_scalar, in_f32};
use crate::scenario::{DTypeName, LossKind, LossSpec, Named, Reduction};

/// torchvision's defaults for `sigmoid_focal_loss`: γ = 2, α = 0.25.
const FOCAL: [(&str, f64); 2] = [("gamma", 2.0), ("alpha", 0.25)];

/// The constants `kind`'s formula reads, with their defaults (PyTorch's or torchvision's).
pub(super) fn consts_of(kind: LossKind) -> &'static [(&'static str, f64)] {
    match kind {
        LossKind::Focal => &FOCAL,
        // No default temperature in PyTorch: SimCLR's 0.07 is common, and the point is to set it.
        LossKind::InfoNce => &[("temperature", 0.07)],
        LossKind::Mse
        | LossKind::Mae
        | LossKind::Huber
        | LossKind::Bce
        | LossKind::BceTorch
        | LossKind::BceLogits
        | LossKind::CrossEntropy
        | LossKind::NaiveCrossEntropy
        | LossKind::MeanAbsRatio
        | LossKind::Expr
        | LossKind::KlDiv
        | LossKind::KlDivLogTarget
        | LossKind::Ctc => &[],
    }
}

/// The constant `name` of the loss, or its default.
fn constant(s: &LossSpec, name: &str) -> f64 {
    s.consts.get(name).copied().unwrap_or_else(|| consts_of(s.kind).iter().find(|(n, _)| *n == name).map_or(0.0, |(_, v)| *v))
}

/// `F.kl_div(p, y, log_target=False)` per element: `xlogy(y, y) − y · p`, PyTorch's formula
/// (`aten/src/ATen/native/Loss.cpp`): a zero target's own term is 0, but its `y · p` is
/// `0 · (−∞) = NaN` where the log-input is −∞.
pub(super) fn kl_div(p: &Tensor, y: &Tensor) -> Result<Terms> {
    let xlogy = y.eq(0.0)?.where_cond(&y.zeros_like()?, &y.mul(&y.log()?)?)?;
    Ok(Terms::Batch((xlogy - y.mul(p)?)?))
}

/// `F.kl_div(p, y, log_target=True)` per element: `exp(y) · (y − p)`.
pub(super) fn kl_div_log_target(p: &Tensor, y: &Tensor) -> Result<Terms> {
    Ok(Terms::Batch(y.exp()?.mul(&(y - p)?)?))
}

/// [`kl_div`] and [`kl_div_log_target`] in PyTorch; `mean` is `batchmean` (the sum over the
/// batch's rows; PyTorch's `mean` over elements is documented as not the KL divergence).
pub(super) fn kl_div_torch(s: &LossSpec, log_target: bool) -> String {
    let r = match s.reduction {
        Reduction::Mean => "'batchmean'",
        Reduction::Sum => "'sum'",
    };
    format!("F.kl_div(p, y, reduction={r}, log_target={})", if log_target { "True" } else { "False" })
}

/// torchvision's `sigmoid_focal_loss` per element, in its order: `ce · (1 − p_t)^γ`, then
/// `α_t ·` it when α ≥ 0, with `p = sigmoid(x)`, `p_t = p·y + (1 − p)(1 − y)` and `ce` the
/// stable BCE of logits. For γ < 1 the power's gradient at `p_t = 1` (a saturated sigmoid)
/// is ∞, times a `ce` of 0: NaN, as in PyTorch.
pub(super) fn focal(s: &LossSpec, x: &Tensor, y: &Tensor) -> Result<Terms> {
    let (gamma, alpha) = (constant(s, "gamma"), constant(s, "alpha"));
    let p = candle_nn::ops::sigmoid(x)?;
    let ce = super::probability::bce_logits_elements(x, y)?;
    let q = y.affine(-1.0, 1.0)?;
    let p_t = (p.mul(y)? + p.affine(-1.0, 1.0)?.mul(&q)?)?;
    let loss = ce.mul(&p_t.affine(-1.0, 1.0)?.powf(gamma)?)?;
    if alpha < 0.0 {
        return Ok(Terms::Elements(loss));
    }
    let alpha_t = (y.affine(alpha, 0.0)? + q.affine(1.0 - alpha, 0.0)?)?;
    Ok(Terms::Elements(alpha_t.mul(&loss)?))
}

/// [`focal`] in PyTorch: torchvision's `sigmoid_focal_loss` body as one expression.
pub(super) fn focal_torch(s: &LossSpec) -> String {
    format!("({}).{}()", focal_elements_torch(s), super::method(s))
}

/// torchvision's `sigmoid_focal_loss` body, one term per element (`reduction='none'`).
pub(super) fn focal_elements_torch(s: &LossSpec) -> String {
    let (gamma, alpha) = (constant(s, "gamma"), constant(s, "alpha"));
    let loss = format!("F.binary_cross_entropy_with_logits(p, y, reduction='none') * ((1 - ((q := torch.sigmoid(p)) * y + (1 - q) * (1 - y))) ** {})", py(gamma));
    if alpha < 0.0 {
        return loss;
    }
    format!("({} * y + {} * (1 - y)) * ({loss})", py(alpha), py(1.0 - alpha))
}

/// The contrastive loss: row `i` of `p` (a batch of embeddings) against every row of `y` (their
/// positives), `logits = p @ yᵀ / T`, and the cross-entropy of row `i` with class `i`:
/// `−log_softmax(logits)[i, i]`, in the dtype of the inputs (in f16, logits past 65504 are ∞),
/// reduced as PyTorch's `nll_loss` (in f16, a mean whose sum passes 65504 is ∞). With
/// `normalized`, both are first `F.normalize(·, dim=-1)`d (`x / max(‖x‖, 1e-12)`, the `normalize`
/// layer's kernel and backward): a zero embedding gives 0 logits and a gradient of `g / 1e-12`
/// (0 in f16, where the eps is 0: NaN), as in PyTorch.
pub(super) fn info_nce(s: &LossSpec, p: &Tensor, y: &Tensor) -> Result<Terms> {
    let (logits, _) = info_nce_logits(s, p, y)?;
    let n = p.dim(0)?;
    let labels = Tensor::arange(0u32, n as u32, p.device())?.unsqueeze(1)?;
    let picked = log_softmax_along(&logits, D::Minus1)?.gather(&labels, 1)?.squeeze(1)?;
    Ok(Terms::Nll(picked.neg()?))
}

/// [`info_nce`]'s logits `p @ yᵀ / T` in the inputs' dtype, and the embeddings they are of
/// (`F.normalize`d with `normalized`). The division is PyTorch's by a Python float: a true
/// division, in f32 for f16 and bf16 and rounded once (`div_true_kernel`), in its backward too;
/// Candle's `t / T` multiplies by `1/T` rounded to the dtype, 0.1 as f16's 0.0999755859375,
/// which moved the f16 gradient norm by 3e-4 from PyTorch's.
fn info_nce_logits(s: &LossSpec, p: &Tensor, y: &Tensor) -> Result<(Tensor, (Tensor, Tensor))> {
    let t = constant(s, "temperature");
    let (p, y) = if s.normalized { (normalize(p, 2.0, NORMALIZE_EPS)?, normalize(y, 2.0, NORMALIZE_EPS)?) } else { (p.clone(), y.clone()) };
    let logits = in_f32(&p.matmul(&y.t()?)?, |z| div_scalar(z, t))?;
    Ok((logits, (p, y)))
}

/// Why [`info_nce`] of finite embeddings `p` and `y` is not finite in dtype `d`: a logit
/// `p_i · y_j / T` past `d`'s largest value, ±∞ in `d` (a small temperature in f16, as people
/// report), which makes its row's log-softmax `∞ − ∞` = NaN (+∞) or, as the row's positive,
/// its loss +∞ (−∞); else the cross-entropy of finite logits whose reduction overflows
/// (`classes.rs`'s rule, on the logits against `arange(batch)`). `None` if neither.
pub(super) fn info_nce_overflow(s: &LossSpec, p: &Tensor, y: &Tensor, d: DTypeName) -> Result<Explained> {
    let (logits, (a, b)) = info_nce_logits(s, p, y)?;
    let values = |t: &Tensor| -> Result<Vec<f64>> { Ok(t.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1()?) };
    let (l, a, b) = (values(&logits)?, values(&a)?, values(&b)?);
    if a.iter().chain(&b).any(|v| !v.is_finite()) {
        return Ok(None);
    }
    let n = p.dim(0)?;
    let Some(at) = l.iter().position(|v| !v.is_finite()) else {
        let spec = LossSpec { kind: LossKind::CrossEntropy, reduction: s.reduction, ..LossSpec::default() };
        let labels = Tensor::arange(0u32, n as u32, p.device())?.to_dtype(logits.dtype())?.unsqueeze(1)?;
        return Ok(super::classes::overflow(&spec, &logits, &labels, d)?.map(|(rule, why)| (rule, format!("the logits p @ y.T / T are finite; {why}"))));
    };
    let (i, j) = (at / n.max(1), at % n.max(1));
    let w = a.len() / n.max(1);
    let dot: f64 = (0..w).map(|k| a[i * w + k] * b[j * w + k]).sum();
    let t = constant(s, "temperature");
    let (dt, max, h) = (<&str>::from(d), Limits::of(d).max, crate::human);
    let count = l.iter().filter(|v| !v.is_finite()).count();
    let past = if dot.abs() > max {
        format!("the dot product {} is already past {dt}'s largest value {}", h(dot), h(max))
    } else {
        format!("{} / {} = {} is past {dt}'s largest value {}", h(dot), h(t), h(dot / t), h(max))
    };
    let then = if l[at] > 0.0 { "and the log-softmax of a row holding +∞ is ∞ − ∞ = NaN" } else { "and where it is the row's positive (its diagonal) the row's loss −log_softmax is +∞" };
    let reason = format!(
        "the logit of row {i} against row {j}, p_{i} · y_{j} / T with temperature T = {}: {past}, so it is {} in {dt} ({count} of the {} logits are), {then}; fix: a larger temperature, normalized = true (|logit| ≤ 1/T), or the logits in f32",
        h(t),
        h(l[at]),
        n * n
    );
    Ok(Some((Rule::Overflow, reason)))
}

/// `F.normalize`'s default eps.
const NORMALIZE_EPS: f64 = 1e-12;

/// [`info_nce`] in PyTorch, reduced as `reduction` (a Python string, `'none'` for one loss per row).
pub(super) fn info_nce_torch(s: &LossSpec, reduction: &str) -> String {
    let (p, y) = if s.normalized { ("F.normalize(p, dim=-1)", "F.normalize(y, dim=-1)") } else { ("p", "y") };
    format!("F.cross_entropy({p} @ {y}.T / {}, torch.arange(p.shape[0]), reduction={reduction})", py(constant(s, "temperature")))
}

/// The constants' problems: a name the kind does not read, a value outside its domain.
pub(super) fn problems(s: &LossSpec) -> Vec<(&'static str, String)> {
    let known = consts_of(s.kind);
    let mut out = Vec::new();
    for (k, v) in &s.consts {
        if !known.iter().any(|(n, _)| n == k) {
            let names: Vec<String> = known.iter().map(|(n, _)| format!("`{n}`")).collect();
            out.push(("consts", format!("`{}` takes no constant `{k}` (it reads {})", s.kind.name(), if names.is_empty() { "none".into() } else { names.join(", ") })));
        } else if !v.is_finite() {
            out.push(("consts", format!("`{k}` must be a finite number, got {v}")));
        }
    }
    if s.kind == crate::scenario::LossKind::InfoNce && constant(s, "temperature") == 0.0 {
        out.push(("consts", "`temperature` must not be 0 (the logits divide by it)".into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use candle_core::{Device, Tensor, Var};

    use super::super::Loss;
    use super::info_nce_overflow;
    use crate::scenario::{LossKind, LossSpec, Reduction};

    fn spec(kind: LossKind, consts: &[(&str, f64)], reduction: Reduction) -> LossSpec {
        LossSpec { kind, consts: consts.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(), reduction, ..Default::default() }
    }

    fn m(rows: &[&[f64]]) -> Tensor {
        Tensor::new(rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>(), &Device::Cpu).unwrap()
    }

    /// The loss and the gradient wrt the prediction, flattened.
    fn loss_grad(s: &LossSpec, p: &[&[f64]], y: &[&[f64]]) -> (f64, Vec<f64>) {
        let p = Var::from_tensor(&m(p)).unwrap();
        let l = Loss(s.clone()).apply(p.as_tensor(), &m(y)).unwrap();
        let g = l.backward().unwrap();
        (l.to_scalar::<f64>().unwrap(), g.get(p.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap())
    }

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-12 * y.abs().max(1.0)), "{a:?} vs {b:?}");
    }

    #[test]
    fn kl_div_is_pytorchs_with_batchmean_and_nan_at_a_zero_target_of_log_input_minus_inf() {
        let y: &[&[f64]] = &[&[0.6, 0.4, 0.0], &[0.1, 0.9, 0.0]];
        // PyTorch 2.15 (f64): F.kl_div(p, y, reduction='batchmean') = 0.04095267979964768, grad −y / 2.
        let (l, g) = loss_grad(&spec(LossKind::KlDiv, &[], Reduction::Mean), &[&[-0.5, -1.0, -5.0], &[-2.0, -0.2, -3.0]], y);
        close(&[l], &[0.04095267979964768]);
        close(&g, &[-0.3, -0.2, 0.0, -0.05, -0.45, 0.0]);
        // reduction='sum': 0.08190535959929536.
        close(&[loss_grad(&spec(LossKind::KlDiv, &[], Reduction::Sum), &[&[-0.5, -1.0, -5.0], &[-2.0, -0.2, -3.0]], y).0], &[0.08190535959929536]);
        // A zero target where the log-input is −inf: xlogy(0, 0) − 0 · (−inf) = NaN (PyTorch 2.15: nan).
        assert!(loss_grad(&spec(LossKind::KlDiv, &[], Reduction::Mean), &[&[-0.5, -1.0, f64::NEG_INFINITY], &[-2.0, -0.2, -3.0]], y).0.is_nan());
        // log_target=True: 0.1683318409727863, grad −exp(y) / 2.
        let (l, g) = loss_grad(&spec(LossKind::KlDivLogTarget, &[], Reduction::Mean), &[&[-0.3, -1.5], &[-1.0, -0.7]], &[&[-0.5, -1.0], &[-2.0, -0.2]]);
        close(&[l], &[0.1683318409727863]);
        close(&g, &[-0.3032653298563167, -0.18393972058572117, -0.06766764161830635, -0.4093653765389909]);
    }

    #[test]
    fn kl_div_batchmean_rounds_the_sum_to_the_dtype_then_divides_by_the_rows() {
        use candle_core::DType;
        let s = spec(LossKind::KlDiv, &[], Reduction::Mean);
        let value = |p: &[[f32; 2]], d: DType| {
            let p = Tensor::from_vec(p.concat(), (p.len(), 2), &Device::Cpu).unwrap().to_dtype(d).unwrap();
            Loss(s.clone()).apply(&p, &p.ones_like().unwrap()).unwrap().to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
        };
        // Targets 1: each term is −p, the sum 5 exactly over 3 rows. PyTorch 2.15: f32
        // 1.6666666269302368 (5 / 3; 5 · f32(1/3) is 1.6666667461395264), f64 1.6666666666666667
        // (5 · (1/3) is 1.6666666666666665).
        let p = [[-1.0, -1.0], [-1.0, -1.0], [-1.0, 0.0]];
        assert_eq!(value(&p, DType::F32), 1.6666666269302368);
        assert_eq!(value(&p, DType::F64), 1.6666666666666667);
        // f16: the terms 20000 · 3 + 10000 sum to 70000, past 65504: PyTorch 2.15's batchmean is
        // inf (the sum is rounded to f16 before the division; in f32 it is 35000).
        assert_eq!(value(&[[-20000.0, -20000.0], [-20000.0, -10000.0]], DType::F16), f64::INFINITY);
    }

    #[test]
    fn focal_is_torchvisions_sigmoid_focal_loss() {
        let (x, t): (&[&[f64]], &[&[f64]]) = (&[&[0.5], &[-1.0], &[2.0], &[-3.0]], &[&[1.0], &[0.0], &[0.0], &[1.0]]);
        // PyTorch 2.15 (f64), torchvision's formula, α 0.25, γ 2, mean: 0.4907539151457746.
        let (l, g) = loss_grad(&spec(LossKind::Focal, &[], Reduction::Mean), x, t);
        close(&[l], &[0.4907539151457746]);
        let want = [-0.00862106233443215, 0.009858961870792615, 0.20188382445909037, -0.07042186753968054];
        assert!(g.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{g:?}");
        // α = −1 (no weighting), γ = 0.5, sum: 5.4253066758114805.
        let (l, g) = loss_grad(&spec(LossKind::Focal, &[("alpha", -1.0), ("gamma", 0.5)], Reduction::Sum), x, t);
        close(&[l], &[5.4253066758114805]);
        let want = [-0.3226365328560928, 0.19885432179961854, 0.9456078011227923, -1.0002673398454893];
        assert!(g.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{g:?}");
        // f32, γ = 0.5, a logit of 20 with target 1: sigmoid is exactly 1, the power's gradient
        // ∞ times the sigmoid's 0 is NaN (PyTorch 2.15: grad [nan, -0.0595107...]).
        let p = Var::from_tensor(&Tensor::new(&[[20.0f32], [0.0]], &Device::Cpu).unwrap()).unwrap();
        let y = Tensor::new(&[[1.0f32], [1.0]], &Device::Cpu).unwrap();
        let l = Loss(spec(LossKind::Focal, &[("gamma", 0.5)], Reduction::Mean)).apply(p.as_tensor(), &y).unwrap();
        let g = l.backward().unwrap().get(p.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(g[0].is_nan() && (f64::from(g[1]) - -0.05951070785522461).abs() < 1e-6, "{g:?}");
        assert!((f64::from(l.to_scalar::<f32>().unwrap()) - 0.061266131699085236).abs() < 1e-6);
    }

    #[test]
    fn info_nce_is_cross_entropy_of_the_scaled_similarities_and_overflows_f16() {
        // PyTorch 2.15 (f64): F.cross_entropy(z @ k.T / 0.5, arange(3)) = 0.42820500753240137.
        let z: &[&[f64]] = &[&[1.0, 0.0], &[0.5, 0.5], &[0.0, -1.0]];
        let (l, g) = loss_grad(&spec(LossKind::InfoNce, &[("temperature", 0.5)], Reduction::Mean), z, &[&[0.8, 0.2], &[0.3, 0.9], &[-0.1, -0.7]]);
        close(&[l], &[0.42820500753240137]);
        let want = [-0.14467058989233403, 0.0472859146413988, 0.12119387869283367, -0.2694033758867428, 0.09124683210956658, 0.11828506706598174];
        assert!(g.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12), "{g:?}");
        // f16, T = 0.01: 30 · 25 / 0.01 = 75000 > 65504 is inf, and the loss NaN (PyTorch 2.15: nan).
        let h = |v: &[[f32; 2]; 2]| Tensor::new(v, &Device::Cpu).unwrap().to_dtype(candle_core::DType::F16).unwrap();
        let l = Loss(spec(LossKind::InfoNce, &[("temperature", 0.01)], Reduction::Mean)).apply(&h(&[[30.0, 0.0], [0.0, 1.0]]), &h(&[[25.0, 0.0], [0.0, 1.0]])).unwrap();
        assert!(l.to_dtype(candle_core::DType::F32).unwrap().to_scalar::<f32>().unwrap().is_nan());
    }

    #[test]
    fn info_nce_in_f16_divides_by_the_temperature_as_pytorch() {
        // PyTorch 2.15 (f16): z @ k.T / 10.0 divides in f32 and rounds once: z0 · k0 = 3.0 exactly,
        // and 3.0 / 10 = 0.3 is f16's 0.300048828125, where multiplying by f16's 0.1 (0.0999755859375) gives 0.2998046875;
        // the loss is 1.193359375 either way, and z.grad is PyTorch's, not the product's
        // (0.0040740966796875 and 0.0439453125 in its first column).
        let h = |v: &[[f32; 2]; 3]| Tensor::new(v, &Device::Cpu).unwrap().to_dtype(candle_core::DType::F16).unwrap();
        let z = Var::from_tensor(&h(&[[3.0, -1.5], [0.5, 2.0], [-2.5, 1.0]])).unwrap();
        let k = h(&[[1.25, 0.5], [-0.75, 2.5], [2.0, -1.0]]);
        let s = spec(LossKind::InfoNce, &[("temperature", 10.0)], Reduction::Mean);
        let (logits, _) = super::info_nce_logits(&s, z.as_tensor(), &k).unwrap();
        let f64s = |t: &Tensor| t.flatten_all().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(f64s(&logits)[..2], [0.300048828125, -0.60009765625]);
        let l = Loss(s).apply(z.as_tensor(), &k).unwrap();
        assert_eq!(f64s(&l), [1.193359375]);
        let g = l.backward().unwrap().get(z.as_tensor()).map(f64s).unwrap();
        assert_eq!(g, [0.00405120849609375, -0.017242431640625, 0.043975830078125, -0.05010986328125, -0.05621337890625, 0.076416015625]);
    }

    #[test]
    fn info_nce_names_the_logit_that_overflows_f16_and_a_sum_of_rows_past_it() {
        use crate::ops::diagnosis::Rule;
        use crate::scenario::DTypeName;
        let h = |v: &[[f32; 2]; 2]| Tensor::new(v, &Device::Cpu).unwrap().to_dtype(candle_core::DType::F16).unwrap();
        // T = 0.01: row 0's logit against row 0 is 30 · 25 / 0.01 = 75000 > 65504, inf in f16,
        // the only one of the 4 (the others 0, 0 and 1 · 1 / 0.01 = 100); PyTorch 2.15: logits
        // [[inf, 0], [0, 100]] and the loss nan.
        let s = spec(LossKind::InfoNce, &[("temperature", 0.01)], Reduction::Mean);
        let (rule, why) = info_nce_overflow(&s, &h(&[[30.0, 0.0], [0.0, 1.0]]), &h(&[[25.0, 0.0], [0.0, 1.0]]), DTypeName::F16).unwrap().expect("the logit overflows");
        assert_eq!(rule, Rule::Overflow);
        assert!(
            why.starts_with(
                "the logit of row 0 against row 0, p_0 · y_0 / T with temperature T = 0.01: 750 / 0.01 = 75000 is past f16's largest value 65504, so it is inf in f16 (1 of the 4 logits are)"
            ),
            "{why}"
        );
        assert!(why.contains("∞ − ∞ = NaN") && why.contains("fix: a larger temperature"), "{why}");
        // T = 1, rows [200, 0], [0, 200] against [0, 200], [200, 0]: the positives' logits are 0 and
        // the others 40000, finite in f16, so each row's loss is 40000, and their f16 sum 80000 is
        // past 65504 (PyTorch 2.15: rows [40000, 40000], the mean inf).
        let s = spec(LossKind::InfoNce, &[("temperature", 1.0)], Reduction::Mean);
        let (rule, why) = info_nce_overflow(&s, &h(&[[200.0, 0.0], [0.0, 200.0]]), &h(&[[0.0, 200.0], [200.0, 0.0]]), DTypeName::F16).unwrap().expect("the sum overflows");
        assert_eq!(rule, Rule::Overflow);
        assert!(why.starts_with("the logits p @ y.T / T are finite; every row's loss is finite (the largest, row 0, 40000)") && why.contains("their sum 80000"), "{why}");
        // In f32 both are finite: no rule.
        let f = |v: &[[f32; 2]; 2]| Tensor::new(v, &Device::Cpu).unwrap();
        assert_eq!(info_nce_overflow(&s, &f(&[[200.0, 0.0], [0.0, 200.0]]), &f(&[[0.0, 200.0], [200.0, 0.0]]), DTypeName::F32).unwrap(), None);
    }

    #[test]
    fn the_pytorch_calls_and_the_constants_checks() {
        let torch = |s: LossSpec| Loss(s).torch_expr();
        assert_eq!(torch(spec(LossKind::KlDiv, &[], Reduction::Mean)), "F.kl_div(p, y, reduction='batchmean', log_target=False)");
        assert_eq!(torch(spec(LossKind::KlDivLogTarget, &[], Reduction::Sum)), "F.kl_div(p, y, reduction='sum', log_target=True)");
        assert_eq!(torch(spec(LossKind::InfoNce, &[("temperature", 0.01)], Reduction::Mean)), "F.cross_entropy(p @ y.T / 0.01, torch.arange(p.shape[0]), reduction='mean')");
        let normalized = LossSpec { normalized: true, ..spec(LossKind::InfoNce, &[("temperature", 0.1)], Reduction::Sum) };
        assert_eq!(torch(normalized), "F.cross_entropy(F.normalize(p, dim=-1) @ F.normalize(y, dim=-1).T / 0.1, torch.arange(p.shape[0]), reduction='sum')");
        assert!(torch(spec(LossKind::Focal, &[], Reduction::Mean)).starts_with("((0.25 * y + 0.75 * (1 - y)) * (F.binary_cross_entropy_with_logits(p, y, reduction='none')"));
        use crate::ops::Op;
        let problems = |s: LossSpec| Loss(s).check().into_iter().map(|(_, m)| m).collect::<Vec<_>>();
        assert_eq!(problems(spec(LossKind::Focal, &[("gama", 2.0)], Reduction::Mean)), ["`focal` takes no constant `gama` (it reads `gamma`, `alpha`)"]);
        assert_eq!(problems(spec(LossKind::InfoNce, &[("temperature", 0.0)], Reduction::Mean)), ["`temperature` must not be 0 (the logits divide by it)"]);
        assert_eq!(problems(spec(LossKind::Mse, &[("eps", 1.0)], Reduction::Mean)), ["only `kind = \"expr\"`, `focal` (gamma, alpha) and `info_nce` (temperature) take `consts`"]);
        assert!(problems(spec(LossKind::Focal, &[("gamma", 0.5), ("alpha", 0.25)], Reduction::Mean)).is_empty());
        assert_eq!(problems(LossSpec { normalized: true, ..spec(LossKind::Mse, &[], Reduction::Mean) }), ["only `info_nce` takes `normalized`"]);
    }
}
