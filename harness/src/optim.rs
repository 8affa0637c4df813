//! Optimizers and gradient clipping, with PyTorch's update formulas.
//!
//! Written out on tensors rather than taken from candle-nn, which has no Adam
//! with coupled L2, no RMSprop and no momentum SGD, and so that every formula
//! here can be checked by hand (see the tests).

use candle_core::Tensor;

use crate::error::Result;
use crate::scenario::{OptimizerKind, OptimizerSpec};

/// An optimizer's state across steps.
#[derive(Debug)]
pub struct Optimizer {
    spec: OptimizerSpec,
    step: usize,
    /// First moment (Adam) or momentum buffer (SGD, RMSprop).
    m: Vec<Option<Tensor>>,
    /// Second moment (Adam, RMSprop).
    v: Vec<Option<Tensor>>,
}

impl Optimizer {
    /// A fresh optimizer for `n` parameters.
    pub fn new(spec: &OptimizerSpec, n: usize) -> Self {
        Optimizer { spec: spec.clone(), step: 0, m: vec![None; n], v: vec![None; n] }
    }

    /// Returns the updated value of each parameter (the caller checks and stores them).
    pub fn step(&mut self, params: &[&Tensor], grads: &[Tensor]) -> Result<Vec<Tensor>> {
        self.step += 1;
        let o = &self.spec;
        let (lr, t) = (o.lr, self.step as i32);
        let mut out = Vec::with_capacity(params.len());
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            // Coupled L2 (SGD, Adam, RMSprop): g ← g + wd·p.
            let g = if o.weight_decay != 0.0 && o.kind != OptimizerKind::Adamw { (g + p.affine(o.weight_decay, 0.0)?)? } else { g.clone() };
            let new = match o.kind {
                OptimizerKind::Sgd => {
                    let d = if o.momentum != 0.0 {
                        // buf ← g on the first step, then momentum·buf + g (dampening 0).
                        let buf = match &self.m[i] {
                            None => g.clone(),
                            Some(b) => (b.affine(o.momentum, 0.0)? + &g)?,
                        };
                        self.m[i] = Some(buf.clone());
                        if o.nesterov { (&g + buf.affine(o.momentum, 0.0)?)? } else { buf }
                    } else {
                        g
                    };
                    (*p - d.affine(lr, 0.0)?)?
                }
                OptimizerKind::Adam | OptimizerKind::Adamw => {
                    let p = if o.kind == OptimizerKind::Adamw && o.weight_decay != 0.0 { p.affine(1.0 - lr * o.weight_decay, 0.0)? } else { (*p).clone() };
                    let m = ema(self.m[i].as_ref(), &g, o.beta1)?;
                    let v = ema(self.v[i].as_ref(), &g.sqr()?, o.beta2)?;
                    let bc1 = 1.0 - o.beta1.powi(t);
                    let bc2 = 1.0 - o.beta2.powi(t);
                    // PyTorch: denom = sqrt(v) / sqrt(bc2) + eps; p ← p − (lr / bc1) · m / denom.
                    let denom = v.sqrt()?.affine(1.0 / bc2.sqrt(), o.eps)?;
                    let new = (&p - m.div(&denom)?.affine(lr / bc1, 0.0)?)?;
                    self.m[i] = Some(m);
                    self.v[i] = Some(v);
                    new
                }
                OptimizerKind::Rmsprop => {
                    let v = ema(self.v[i].as_ref(), &g.sqr()?, o.alpha)?;
                    let step = g.div(&v.sqrt()?.affine(1.0, o.eps)?)?;
                    self.v[i] = Some(v);
                    let d = if o.momentum != 0.0 {
                        let buf = match &self.m[i] {
                            None => step,
                            Some(b) => (b.affine(o.momentum, 0.0)? + step)?,
                        };
                        self.m[i] = Some(buf.clone());
                        buf
                    } else {
                        step
                    };
                    (*p - d.affine(lr, 0.0)?)?
                }
            };
            out.push(new);
        }
        Ok(out)
    }
}

/// `beta·prev + (1 − beta)·x`, starting from zero.
fn ema(prev: Option<&Tensor>, x: &Tensor, beta: f64) -> Result<Tensor> {
    let fresh = x.affine(1.0 - beta, 0.0)?;
    Ok(match prev {
        None => fresh,
        Some(p) => (p.affine(beta, 0.0)? + fresh)?,
    })
}

/// Scales gradients to a global norm of at most `max` (PyTorch's `clip_grad_norm_`, given the norm).
pub fn clip_norm(grads: &mut [Tensor], total: f64, max: f64) -> Result<()> {
    let coef = (max / (total + 1e-6)).min(1.0);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            *g = g.affine(coef, 0.0)?;
        }
    }
    Ok(())
}

/// Clamps every gradient element into `±max` (`clip_grad_value_`).
pub fn clip_value(grads: &mut [Tensor], max: f64) -> Result<()> {
    for g in grads.iter_mut() {
        *g = g.clamp(-max, max)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn opt(kind: OptimizerKind, lr: f64) -> OptimizerSpec {
        toml::from_str::<OptimizerSpec>(&format!("kind = \"{}\"\nlr = {lr}", match kind {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::Adamw => "adamw",
            OptimizerKind::Rmsprop => "rmsprop",
        }))
        .unwrap()
    }

    fn run(spec: OptimizerSpec, p0: [f64; 2], grads: &[[f64; 2]]) -> Vec<f64> {
        let mut o = Optimizer::new(&spec, 1);
        let mut p = Tensor::new(&p0, &Device::Cpu).unwrap();
        for g in grads {
            p = o.step(&[&p], &[Tensor::new(g, &Device::Cpu).unwrap()]).unwrap().remove(0);
        }
        p.to_vec1().unwrap()
    }

    fn close(a: &[f64], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn sgd_momentum_two_steps_by_hand() {
        // p = [1, -2], lr 0.1, momentum 0.9, grads [0.5, 1] then [0.2, -1].
        // step 1: buf = g1 = [0.5, 1]; p = [1 - 0.05, -2 - 0.1] = [0.95, -2.1]
        // step 2: buf = 0.9·[0.5, 1] + [0.2, -1] = [0.65, -0.1]; p = [0.95 - 0.065, -2.1 + 0.01] = [0.885, -2.09]
        let s = OptimizerSpec { momentum: 0.9, ..opt(OptimizerKind::Sgd, 0.1) };
        close(&run(s, [1.0, -2.0], &[[0.5, 1.0], [0.2, -1.0]]), &[0.885, -2.09]);
    }

    #[test]
    fn adam_two_steps_by_hand() {
        // p = [1, -2], lr 0.1, β = (0.9, 0.999), eps 1e-8, grads [0.5, 1] then [0.2, -1].
        // step 1: m = 0.1 g, v = 0.001 g², m̂ = g, v̂ = g²: p -= 0.1 · g/(|g| + 1e-8)
        //   → [1 - 0.1·0.5/(0.5+1e-8), -2 - 0.1·1/(1+1e-8)]
        let p1 = [1.0 - 0.1 * 0.5 / (0.5 + 1e-8), -2.0 - 0.1 / (1.0 + 1e-8)];
        close(&run(opt(OptimizerKind::Adam, 0.1), [1.0, -2.0], &[[0.5, 1.0]]), &p1);
        // step 2, first element: m = 0.9·0.05 + 0.1·0.2 = 0.065; v = 0.999·0.00025 + 0.001·0.04 = 0.00028975
        //   bc1 = 0.19, bc2 = 0.001999; p -= (0.1/0.19) · 0.065 / (sqrt(0.00028975)/sqrt(0.001999) + 1e-8)
        // second: m = 0.9·0.1 − 0.1 = −0.01; v = 0.999·0.001 + 0.001 = 0.001999
        let a = p1[0] - (0.1 / 0.19) * 0.065 / ((0.00028975f64).sqrt() / (0.001999f64).sqrt() + 1e-8);
        let b = p1[1] - (0.1 / 0.19) * -0.01 / ((0.001999f64).sqrt() / (0.001999f64).sqrt() + 1e-8);
        close(&run(opt(OptimizerKind::Adam, 0.1), [1.0, -2.0], &[[0.5, 1.0], [0.2, -1.0]]), &[a, b]);
    }

    #[test]
    fn adamw_decays_before_the_adam_step() {
        // One step, wd 0.5, lr 0.1: p·(1 − 0.05) then the Adam step of ±0.1·g/(|g|+eps).
        let s = OptimizerSpec { weight_decay: 0.5, ..opt(OptimizerKind::Adamw, 0.1) };
        close(&run(s, [1.0, -2.0], &[[0.5, 1.0]]), &[0.95 - 0.1 * 0.5 / (0.5 + 1e-8), -1.9 - 0.1 / (1.0 + 1e-8)]);
    }

    #[test]
    fn rmsprop_one_step_by_hand() {
        // v = 0.01 g²; p -= 0.01 · g / (sqrt(0.01) |g| + 1e-8) = 0.01 · g / (0.1|g| + 1e-8).
        let p = run(opt(OptimizerKind::Rmsprop, 0.01), [1.0, -2.0], &[[0.5, 1.0]]);
        close(&p, &[1.0 - 0.01 * 0.5 / (0.05 + 1e-8), -2.0 - 0.01 / (0.1 + 1e-8)]);
    }

    #[test]
    fn clip_norm_scales_to_max() {
        // Gradients [3, 4] have norm 5; max 1 scales by 1/(5 + 1e-6).
        let mut g = vec![Tensor::new(&[3.0f64, 4.0], &Device::Cpu).unwrap()];
        clip_norm(&mut g, 5.0, 1.0).unwrap();
        close(&g[0].to_vec1().unwrap(), &[3.0 / (5.0 + 1e-6), 4.0 / (5.0 + 1e-6)]);
    }
}
