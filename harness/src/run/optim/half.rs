//! PyTorch's optimizer arithmetic for f16 and bf16 parameters.
//!
//! PyTorch's CPU update (`_single_tensor_adam`, `_sgd`, `_rmsprop`) is a
//! sequence of in-place ops, and each op computes in f32 ("opmath"), with its
//! Python-float scalars as f32, and rounds once to the parameter's dtype.
//! `exp_avg_sq.mul_(β₂).addcmul_(g, g, value=1 − β₂)` never holds `g²` in f16:
//! a gradient of 2000 gives v = 4000, where squaring in f16 first overflows
//! (found by `nanhunt confirm`: the f16 overflow was nanhunt's, not PyTorch's).
//! Here each of those ops is computed the same way: f32 arithmetic, one
//! rounding per op, in PyTorch's order.

use candle_core::{DType, Tensor};

use super::{bias_corrections, Updated};
use crate::error::Result;
use crate::scenario::{OptimizerKind, OptimizerSpec};

/// Rounds an f32 to the dtype and back.
fn rounder(d: DType) -> fn(f32) -> f32 {
    match d {
        DType::F16 => |x| half::f16::from_f32(x).to_f32(),
        DType::BF16 => |x| half::bf16::from_f32(x).to_f32(),
        _ => |x| x,
    }
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// `self.lerp_(end, w)` as PyTorch computes it.
fn lerp(a: f32, end: f32, w: f32) -> f32 {
    if w.abs() < 0.5 {
        a + w * (end - a)
    } else {
        end - (end - a) * (1.0 - w)
    }
}

/// One f16/bf16 parameter's update, op by op as PyTorch performs it.
pub(super) fn update(o: &OptimizerSpec, step: usize, p: &Tensor, g: &Tensor, m: Option<&Tensor>, v: Option<&Tensor>) -> Result<Updated> {
    let (dt, shape) = (p.dtype(), p.shape().clone());
    let r = rounder(dt);
    let (mut p, g) = (values(p)?, values(g)?);
    let n = p.len();
    let state = |t: Option<&Tensor>| -> Result<Vec<f32>> { t.map_or(Ok(vec![0.0; n]), values) };
    let (fresh_m, mut m, mut v) = (m.is_none(), state(m)?, state(v)?);
    let (lr, wd) = (o.lr, o.weight_decay);
    // grad.add(param, alpha=wd): coupled L2.
    let g: Vec<f32> = if wd != 0.0 && o.kind != OptimizerKind::Adamw { g.iter().zip(&p).map(|(g, p)| r(g + wd as f32 * p)).collect() } else { g };
    let (keep_m, keep_v) = match o.kind {
        OptimizerKind::Sgd => {
            let mom = o.momentum as f32;
            for i in 0..n {
                let d = if o.momentum != 0.0 {
                    // buf = grad.clone() on the first step, then buf.mul_(mom).add_(grad).
                    m[i] = if fresh_m { g[i] } else { r(r(m[i] * mom) + g[i]) };
                    if o.nesterov {
                        r(g[i] + mom * m[i])
                    } else {
                        m[i]
                    }
                } else {
                    g[i]
                };
                p[i] = r(p[i] + (-lr) as f32 * d);
            }
            (o.momentum != 0.0, false)
        }
        OptimizerKind::Adam | OptimizerKind::Adamw => {
            let (bc1, bc2) = bias_corrections(o, step);
            let (step_size, bc2_sqrt) = (lr / bc1, bc2.sqrt() as f32);
            let (b1, b2, eps, decay) = ((1.0 - o.beta1) as f32, o.beta2 as f32, o.eps as f32, (1.0 - lr * wd) as f32);
            let keep = (1.0 - o.beta2) as f32;
            for i in 0..n {
                if o.kind == OptimizerKind::Adamw && wd != 0.0 {
                    p[i] = r(p[i] * decay);
                }
                m[i] = r(lerp(m[i], g[i], b1));
                v[i] = r(r(v[i] * b2) + keep * g[i] * g[i]);
                let denom = r(r(r(v[i].sqrt()) / bc2_sqrt) + eps);
                p[i] = r(p[i] + (-step_size) as f32 * m[i] / denom);
            }
            (true, true)
        }
        OptimizerKind::Rmsprop => {
            let (alpha, keep, eps, mom) = (o.alpha as f32, (1.0 - o.alpha) as f32, o.eps as f32, o.momentum as f32);
            for i in 0..n {
                v[i] = r(r(v[i] * alpha) + keep * g[i] * g[i]);
                let avg = r(r(v[i].sqrt()) + eps);
                if o.momentum != 0.0 {
                    m[i] = r(r(m[i] * mom) + g[i] / avg);
                    p[i] = r(p[i] + (-lr) as f32 * m[i]);
                } else {
                    p[i] = r(p[i] + (-lr) as f32 * g[i] / avg);
                }
            }
            (o.momentum != 0.0, true)
        }
    };
    let back = |v: Vec<f32>| -> Result<Tensor> { Ok(Tensor::from_vec(v, shape.clone(), &candle_core::Device::Cpu)?.to_dtype(dt)?) };
    Ok((back(p)?, keep_m.then(|| back(m)).transpose()?, keep_v.then(|| back(v)).transpose()?))
}

/// `clip_grad_norm_` on f16/bf16 gradients as PyTorch computes it: each gradient's norm and the
/// total norm are tensors of the gradients' dtype (accumulated in f32, rounded once), and so are
/// `max / (total + 1e-6)` and its clamp at 1; every gradient is then multiplied by it. A total
/// past the dtype's largest value is +Inf, the coefficient 0, and every gradient becomes 0.
pub(super) fn clip_norm(grads: &mut [Tensor], max: f64) -> Result<()> {
    let Some(dt) = grads.first().map(Tensor::dtype) else { return Ok(()) };
    let r = rounder(dt);
    let mut sum = 0f32;
    for g in grads.iter() {
        let norm = r(values(g)?.iter().map(|x| x * x).sum::<f32>().sqrt());
        sum += norm * norm;
    }
    let total = r(sum.sqrt());
    let coef = r(max as f32 / r(total + 1e-6)).min(1.0);
    for g in grads.iter_mut() {
        let scaled: Vec<f32> = values(g)?.iter().map(|x| r(x * coef)).collect();
        *g = Tensor::from_vec(scaled, g.shape().clone(), &candle_core::Device::Cpu)?.to_dtype(dt)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f16(v: &[f32]) -> Tensor {
        Tensor::new(v, &candle_core::Device::Cpu).unwrap().to_dtype(DType::F16).unwrap()
    }

    #[test]
    fn adam_in_f16_never_holds_the_square() {
        // PyTorch 2.15, f16 on the CPU: p = [1], g = [2000], Adam(lr=1e-3): exp_avg_sq =
        // 0.999·0 + 0.001·2000² = 4000 (f16 holds it), exp_avg = 200, and
        // p ← 1 − (1e-3 / 0.1)·200 / (sqrt(4000)/sqrt(0.001) + 1e-8) = 1 − 2/2000 = 0.999 → 0.999 in f16.
        // Squaring 2000 in f16 first would give +Inf (2000² = 4e6 > 65504).
        let o: OptimizerSpec = toml::from_str("kind = \"adam\"\nlr = 1e-3").unwrap();
        let (p, m, v) = update(&o, 1, &f16(&[1.0]), &f16(&[2000.0]), None, None).unwrap();
        let get = |t: Tensor| t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()[0];
        assert_eq!(get(v.unwrap()), 4000.0);
        assert_eq!(get(m.unwrap()), 200.0);
        assert_eq!(get(p), half::f16::from_f32(0.999).to_f32());
    }

    #[test]
    fn clipping_an_f16_norm_past_max_zeroes_the_gradients() {
        // PyTorch 2.15, f16: grads [60000] and [60000]; the total norm 84853 is +Inf in f16, so
        // clip_coef = 1 / (inf + 1e-6) = 0 and clip_grad_norm_(params, 1.0) leaves [0] and [0].
        let mut g = vec![f16(&[60000.0]), f16(&[60000.0])];
        clip_norm(&mut g, 1.0).unwrap();
        let v: Vec<f32> = g.iter().map(|t| t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()[0]).collect();
        assert_eq!(v, [0.0, 0.0]);
        // A norm in range: [3] and [4] have total 5 and coefficient 0.2 (0.19995 in f16); PyTorch
        // gives [0.5996, 0.7998], the f16 values 1228/2048 and 1638/2048.
        let mut g = vec![f16(&[3.0]), f16(&[4.0])];
        clip_norm(&mut g, 1.0).unwrap();
        let v: Vec<f32> = g.iter().map(|t| t.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()[0]).collect();
        assert_eq!(v, [1228.0 / 2048.0, 1638.0 / 2048.0]);
    }
}
