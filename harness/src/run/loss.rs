//! Losses, written as the formulas users write them, including the unstable ones.
//!
//! `bce` is exactly `−(y log p + (1−y) log(1−p))`: at `p = 0, y = 0` it gives
//! `0 · (−∞) = NaN`, which is the seeds' failure. `bce_torch` reproduces
//! PyTorch's `binary_cross_entropy`: logs clamped at −100 and PyTorch's own
//! gradient `(p − y) / max(p(1 − p), 1e-12)`.

use candle_core::{Tensor, D};

use crate::error::Result;
use crate::scenario::{LossKind, LossSpec, Reduction};

/// The scalar loss of predictions `p` against targets `y`, both `(batch, k)`.
pub fn loss(spec: &LossSpec, p: &Tensor, y: &Tensor) -> Result<Tensor> {
    let eps = spec.epsilon.unwrap_or(0.0);
    let elems = match spec.kind {
        LossKind::Mse => (p - y)?.sqr()?,
        LossKind::Mae => super::kernel::pointwise::abs(&(p - y)?)?,
        LossKind::Huber => {
            // PyTorch's kernel: z = |x − y|, then 0.5·z·z below delta and delta·(z − 0.5·delta)
            // above, in f32 for f16 and bf16 inputs, rounded once.
            let delta = spec.delta.unwrap_or(1.0);
            let (pw, yw) = (super::opmath::widen(p)?, super::opmath::widen(y)?);
            let d = (pw - yw)?;
            let a = d.abs()?;
            let quad = d.affine(0.5, 0.0)?.mul(&d)?;
            let lin = a.affine(1.0, -0.5 * delta)?.affine(delta, 0.0)?;
            a.lt(delta)?.where_cond(&quad, &lin)?.to_dtype(p.dtype())?
        }
        LossKind::Bce => {
            let p = clamp(spec, p)?;
            let log_p = p.affine(1.0, eps)?.log()?;
            let log_q = p.affine(-1.0, 1.0 + eps)?.log()?;
            (y.mul(&log_p)? + y.affine(-1.0, 1.0)?.mul(&log_q)?)?.neg()?
        }
        LossKind::BceTorch => super::kernel::bce_torch::bce_torch(&clamp(spec, p)?, y)?,
        LossKind::BceLogits => {
            // max(x, 0) − x·y + log(1 + exp(−|x|)), PyTorch's stable form.
            let soft = p.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
            ((p.relu()? - p.mul(y)?)? + soft)?
        }
        LossKind::CrossEntropy if super::kernel::handles(p) => return reduce(spec.reduction, &super::kernel::cross_entropy::rows(p, y)?),
        LossKind::CrossEntropy => {
            let max = p.max_keepdim(D::Minus1)?.detach();
            let shifted = p.broadcast_sub(&max)?;
            let log_sum = super::opmath::in_f32(&shifted.exp()?, |e| Ok(e.sum_keepdim(D::Minus1)?))?.log()?;
            return reduce_rows(spec, &shifted.broadcast_sub(&log_sum)?.mul(y)?.neg()?);
        }
        LossKind::NaiveCrossEntropy => {
            let e = p.exp()?;
            let probs = clamp(spec, &e.broadcast_div(&super::opmath::in_f32(&e, |e| Ok(e.sum_keepdim(D::Minus1)?))?)?)?;
            return reduce_rows(spec, &probs.affine(1.0, eps)?.log()?.mul(y)?.neg()?);
        }
        LossKind::MeanAbsRatio => super::kernel::pointwise::abs(&(p - y)?)?.div(&y.abs()?.affine(1.0, eps)?)?,
    };
    reduce(spec.reduction, &elems)
}

fn clamp(spec: &LossSpec, p: &Tensor) -> Result<Tensor> {
    Ok(match spec.clamp {
        Some(c) => super::kernel::elementwise::clamp(p, c, 1.0 - c)?,
        None => p.clone(),
    })
}

/// The reduction, accumulated in f32 for f16 and bf16 and rounded once, as PyTorch does; a
/// mean divides by the count (`opmath::mean_all`).
fn reduce(r: Reduction, elems: &Tensor) -> Result<Tensor> {
    match r {
        Reduction::Mean => super::opmath::mean_all(elems),
        Reduction::Sum => super::opmath::in_f32(elems, |e| Ok(e.sum_all()?)),
    }
}

/// Cross-entropies sum over classes, then reduce over rows.
fn reduce_rows(spec: &LossSpec, per_class: &Tensor) -> Result<Tensor> {
    reduce(spec.reduction, &super::opmath::in_f32(per_class, |t| Ok(t.sum(D::Minus1)?))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn spec(kind: LossKind) -> LossSpec {
        LossSpec { kind, ..Default::default() }
    }

    fn t(v: &[f64]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap().reshape((v.len(), 1)).unwrap()
    }

    fn value(s: &LossSpec, p: &[f64], y: &[f64]) -> f64 {
        loss(s, &t(p), &t(y)).unwrap().to_scalar::<f64>().unwrap()
    }

    #[test]
    fn seed_002_ex2_log_loss_is_nan() {
        // Seed 002 ex2: y_true [0,1,0,1], y_pred [0,1,0,0], np.sum(...) → nan (0·log 0).
        let s = LossSpec { reduction: Reduction::Sum, ..spec(LossKind::Bce) };
        assert!(value(&s, &[0.0, 1.0, 0.0, 0.0], &[0.0, 1.0, 0.0, 1.0]).is_nan());
        // The seed's fix, log(p + 1e-7): the one wrong row costs −log(1e-7) = 16.118..., the
        // others (1−y)·log(1 + 1e-7) ≈ −1e-7 each (hand computation).
        let fixed = LossSpec { epsilon: Some(1e-7), ..s };
        let v = value(&fixed, &[0.0, 1.0, 0.0, 0.0], &[0.0, 1.0, 0.0, 1.0]);
        assert!((v - (-(1e-7f64).ln() - 3.0 * (1.0f64 + 1e-7).ln())).abs() < 1e-9, "{v}");
    }

    #[test]
    fn seed_003_ex3_ratio_loss_is_infinite() {
        // |0 − 0.1| / 0 = inf; the rest: 0.1/1 + 0.1/2 + 0.2/3 + 0.2/5.
        let s = LossSpec { reduction: Reduction::Sum, ..spec(LossKind::MeanAbsRatio) };
        let v = value(&s, &[1.1, 1.9, 3.2, 0.1, 4.8], &[1.0, 2.0, 3.0, 0.0, 5.0]);
        assert_eq!(v, f64::INFINITY);
    }

    #[test]
    fn torch_bce_clamps_log_and_gradient() {
        // PyTorch: F.binary_cross_entropy(tensor([0.]), tensor([1.])) = 100; grad = (0−1)/1e-12 = −1e12.
        let p = Var::new(&[[0.0f64]], &Device::Cpu).unwrap();
        let l = loss(&spec(LossKind::BceTorch), p.as_tensor(), &Tensor::new(&[[1.0f64]], &Device::Cpu).unwrap()).unwrap();
        assert_eq!(l.to_scalar::<f64>().unwrap(), 100.0);
        let g = l.backward().unwrap();
        assert_eq!(g.get(p.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap(), vec![-1e12]);
    }

    #[test]
    fn huber_matches_both_branches() {
        // delta 1: |0.5| → 0.5·0.25 = 0.125; |3| → 1·(3 − 0.5) = 2.5; mean 1.3125.
        let s = LossSpec { delta: Some(1.0), ..spec(LossKind::Huber) };
        assert_eq!(value(&s, &[0.5, 3.0], &[0.0, 0.0]), 1.3125);
    }

    #[test]
    fn cross_entropy_stable_and_naive() {
        // Logits [0, 1000] with class 0: stable CE = 1000 (log-sum-exp), naive softmax underflows: inf.
        let p = Tensor::new(&[[0.0f32, 1000.0]], &Device::Cpu).unwrap();
        let y = Tensor::new(&[[1.0f32, 0.0]], &Device::Cpu).unwrap();
        let ce = loss(&spec(LossKind::CrossEntropy), &p, &y).unwrap().to_scalar::<f32>().unwrap();
        assert_eq!(ce, 1000.0);
        let naive = loss(&spec(LossKind::NaiveCrossEntropy), &p, &y).unwrap().to_scalar::<f32>().unwrap();
        assert!(!naive.is_finite());
    }

    #[test]
    fn a_mean_loss_divides_by_the_count() {
        // PyTorch 2.15, f32: (p − y).abs().mean() of [5, 0, 0] is 1.6666666269302368 (a division);
        // Candle's mean_all multiplies by f32(1/3): 1.6666667461395264.
        let p = Tensor::new(&[[5.0f32], [0.0], [0.0]], &Device::Cpu).unwrap();
        let l = loss(&spec(LossKind::Mae), &p, &p.zeros_like().unwrap()).unwrap();
        assert_eq!(f64::from(l.to_scalar::<f32>().unwrap()), 1.6666666269302368);
    }
}
