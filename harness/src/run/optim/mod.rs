//! Optimizers and gradient clipping, with PyTorch's update formulas.
//!
//! Written out on tensors rather than taken from candle-nn, which has no Adam
//! with coupled L2, no RMSprop and no momentum SGD, and so that every formula
//! here can be checked by hand (see the tests).

use candle_core::{Tensor, Var};

use crate::error::Result;
use crate::run::kernel::update as fused;
use crate::run::kernel::update::bias_corrections;
pub use crate::run::kernel::update::Watched;
use crate::scenario::{OptimState, OptimizerKind, OptimizerSpec};

mod half;

/// An optimizer's state across steps.
#[derive(Debug)]
pub struct Optimizer {
    spec: OptimizerSpec,
    step: usize,
    /// Per parameter: the tensor path's first moment (or momentum buffer) and second moment.
    m: Vec<Option<Tensor>>,
    v: Vec<Option<Tensor>>,
    /// Per parameter: the fused update's state, once it has run.
    buffers: Vec<Option<fused::Buffers>>,
    /// Use the one-pass in-place CPU update where it applies (f32/f64 on the CPU).
    pub fused: bool,
}

impl Optimizer {
    /// A fresh optimizer for `n` parameters.
    pub fn new(spec: &OptimizerSpec, n: usize) -> Self {
        Optimizer { spec: spec.clone(), step: 0, m: vec![None; n], v: vec![None; n], buffers: vec![None; n], fused: true }
    }

    /// Sets the learning rate of the next steps (`[train.schedule]`).
    pub fn set_lr(&mut self, lr: f64) {
        self.spec.lr = lr;
    }

    /// Updates each variable from its gradient.
    pub fn step(&mut self, params: &[&Var], grads: &[Tensor]) -> Result<()> {
        self.update(params, grads, false).map(|_| ())
    }

    /// Like [`Optimizer::step`], with the watch's stats of each parameter's update: of its
    /// gradient and new value where the fused update read them on the way, and of its new state.
    pub fn step_watched(&mut self, params: &[&Var], grads: &[Tensor]) -> Result<Vec<Watched>> {
        self.update(params, grads, true)
    }

    /// Parameter `i`'s first and second moments at flat index `at` (for a diagnosis).
    pub fn moments_at(&self, i: usize, at: usize) -> Result<(Option<f64>, Option<f64>)> {
        let pick = |t: &Option<Tensor>| -> Result<Option<f64>> {
            Ok(match t {
                Some(t) => t.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?.get(at).copied(),
                None => None,
            })
        };
        Ok(match &self.buffers[i] {
            Some(fused::Buffers::F32(m, v)) => (m.get(at).map(|x| f64::from(*x)), v.get(at).map(|x| f64::from(*x))),
            Some(fused::Buffers::F64(m, v)) => (m.get(at).copied(), v.get(at).copied()),
            None => (pick(&self.m[i])?, pick(&self.v[i])?),
        })
    }

    fn update(&mut self, params: &[&Var], grads: &[Tensor], watch: bool) -> Result<Vec<Watched>> {
        self.step += 1;
        let mut out = Vec::with_capacity(params.len());
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            let mut stats = None;
            let fresh = self.m[i].is_none() && self.v[i].is_none();
            if self.fused && fresh && fused::update(&self.spec, self.step, p.as_tensor(), g, &mut self.buffers[i], watch, &mut stats)? {
                out.push(stats.unwrap_or_default());
                continue;
            }
            // The tensor path, taking over the fused state if it ran before.
            if let Some(b) = self.buffers[i].take() {
                (self.m[i], self.v[i]) = b.to_tensors(p.as_tensor())?;
            }
            let (m, v) = (self.m[i].take(), self.v[i].take());
            let (new, m, v) = update(&self.spec, self.step, p.as_tensor(), g, m.as_ref(), v.as_ref())?;
            p.set(&new)?;
            let state = |t: &Option<Tensor>| t.as_ref().filter(|_| watch).map(super::watch::stats).transpose();
            out.push(Watched { grad: None, param: None, m: state(&m)?, v: state(&v)? });
            (self.m[i], self.v[i]) = (m, v);
        }
        Ok(out)
    }
}

/// The names PyTorch gives an update rule's state: (first moment or momentum buffer, second moment).
pub fn state_names(o: &OptimizerSpec) -> (Option<OptimState>, Option<OptimState>) {
    match o.kind {
        OptimizerKind::Sgd => ((o.momentum != 0.0).then_some(OptimState::MomentumBuffer), None),
        OptimizerKind::Adam | OptimizerKind::Adamw => (Some(OptimState::ExpAvg), Some(OptimState::ExpAvgSq)),
        OptimizerKind::Rmsprop => ((o.momentum != 0.0).then_some(OptimState::MomentumBuffer), Some(OptimState::SquareAvg)),
    }
}

/// New parameter, first-moment (or momentum) and second-moment state of one parameter.
pub type Updated = (Tensor, Option<Tensor>, Option<Tensor>);

/// One parameter's update with tensor operations (any device and dtype).
///
/// [`fused::update`] performs the same operations in the same order on the
/// CPU; keep the two in step (a test compares them bit for bit).
fn update(o: &OptimizerSpec, step: usize, p: &Tensor, g: &Tensor, m: Option<&Tensor>, v: Option<&Tensor>) -> Result<Updated> {
    if matches!(p.dtype(), candle_core::DType::F16 | candle_core::DType::BF16) && p.device().is_cpu() {
        return half::update(o, step, p, g, m, v);
    }
    let lr = o.lr;
    // Coupled L2 (SGD, Adam, RMSprop): g ← g + wd·p.
    let g = if o.weight_decay != 0.0 && o.kind != OptimizerKind::Adamw { add_scaled(g, p, o.weight_decay)? } else { g.clone() };
    Ok(match o.kind {
        OptimizerKind::Sgd => {
            if o.momentum != 0.0 {
                // buf ← g on the first step, then momentum·buf + g (dampening 0).
                let buf = match m {
                    None => g.clone(),
                    Some(b) => (b.affine(o.momentum, 0.0)? + &g)?,
                };
                let d = if o.nesterov { add_scaled(&g, &buf, o.momentum)? } else { buf.clone() };
                (add_scaled(p, &d, -lr)?, Some(buf), None)
            } else {
                (add_scaled(p, &g, -lr)?, None, None)
            }
        }
        OptimizerKind::Adam | OptimizerKind::Adamw => {
            let p = if o.kind == OptimizerKind::Adamw && o.weight_decay != 0.0 { p.affine(1.0 - lr * o.weight_decay, 0.0)? } else { p.clone() };
            let m = ema(m, &g, o.beta1)?;
            let v = ema(v, &g.sqr()?, o.beta2)?;
            let (bc1, bc2) = bias_corrections(o, step);
            // PyTorch: denom = sqrt(v) / sqrt(bc2) + eps; p ← p − (lr / bc1) · m / denom.
            let denom = v.sqrt()?.affine(1.0 / bc2.sqrt(), o.eps)?;
            ((&p - m.div(&denom)?.affine(lr / bc1, 0.0)?)?, Some(m), Some(v))
        }
        OptimizerKind::Rmsprop => {
            let v = ema(v, &g.sqr()?, o.alpha)?;
            let d = g.div(&v.sqrt()?.affine(1.0, o.eps)?)?;
            if o.momentum != 0.0 {
                let buf = match m {
                    None => d,
                    Some(b) => (b.affine(o.momentum, 0.0)? + d)?,
                };
                ((p - buf.affine(lr, 0.0)?)?, Some(buf), Some(v))
            } else {
                ((p - d.affine(lr, 0.0)?)?, None, Some(v))
            }
        }
    })
}

/// `c + s·a` as PyTorch's CPU `c.add(a, alpha=s)` computes it in f32 and f64: one fused
/// multiply-add (`s` rounded to the dtype first), as the fused update does. Other devices
/// (and dtypes) take Candle's two roundings, `c + (a·s + 0)`.
fn add_scaled(c: &Tensor, a: &Tensor, s: f64) -> Result<Tensor> {
    fn fma<T: crate::run::kernel::Real>(c: &Tensor, a: &Tensor, s: f64) -> Result<Tensor> {
        let s = T::from_f64(s);
        let v: Vec<T> = a.flatten_all()?.to_vec1::<T>()?.into_iter().zip(c.flatten_all()?.to_vec1::<T>()?).map(|(a, c)| a.fma(s, c)).collect();
        Ok(Tensor::from_vec(v, c.shape(), c.device())?)
    }
    match (c.device().is_cpu(), c.dtype()) {
        (true, candle_core::DType::F32) => fma::<f32>(c, a, s),
        (true, candle_core::DType::F64) => fma::<f64>(c, a, s),
        _ => Ok((c + a.affine(s, 0.0)?)?),
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

/// Scales gradients to a global norm of at most `max` (PyTorch's `clip_grad_norm_`, given the
/// norm). f16 and bf16 gradients follow PyTorch's arithmetic instead (see [`half::clip_norm`]).
pub fn clip_norm(grads: &mut [Tensor], total: f64, max: f64) -> Result<()> {
    if grads.first().is_some_and(|g| matches!(g.dtype(), candle_core::DType::F16 | candle_core::DType::BF16) && g.device().is_cpu()) {
        return half::clip_norm(grads, max);
    }
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
        *g = crate::run::kernel::elementwise::clamp(g, -max, max)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Named;
    use candle_core::Device;

    fn opt(kind: OptimizerKind, lr: f64) -> OptimizerSpec {
        toml::from_str::<OptimizerSpec>(&format!("kind = \"{}\"\nlr = {lr}", kind.name())).unwrap()
    }

    fn run(spec: OptimizerSpec, p0: [f64; 2], grads: &[[f64; 2]]) -> Vec<f64> {
        let fused = run_path(spec.clone(), p0, grads, true);
        let plain = run_path(spec, p0, grads, false);
        assert_eq!(fused, plain, "fused and tensor paths agree");
        fused
    }

    fn run_path(spec: OptimizerSpec, p0: [f64; 2], grads: &[[f64; 2]], fused: bool) -> Vec<f64> {
        let mut o = Optimizer::new(&spec, 1);
        o.fused = fused;
        let p = Var::new(&p0, &Device::Cpu).unwrap();
        for g in grads {
            o.step(&[&p], &[Tensor::new(g, &Device::Cpu).unwrap()]).unwrap();
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
    fn fused_path_is_bit_identical_to_tensor_path() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let configs = [
            OptimizerSpec { momentum: 0.9, weight_decay: 0.01, ..opt(OptimizerKind::Sgd, 0.1) },
            OptimizerSpec { momentum: 0.9, nesterov: true, ..opt(OptimizerKind::Sgd, 0.1) },
            OptimizerSpec { weight_decay: 0.1, ..opt(OptimizerKind::Adam, 0.01) },
            OptimizerSpec { weight_decay: 0.1, ..opt(OptimizerKind::Adamw, 0.01) },
            OptimizerSpec { momentum: 0.5, ..opt(OptimizerKind::Rmsprop, 0.01) },
            opt(OptimizerKind::Rmsprop, 0.01),
        ];
        for dtype in [candle_core::DType::F32, candle_core::DType::F64] {
            for spec in &configs {
                let draw = |rng: &mut rand_chacha::ChaCha8Rng| {
                    let v: Vec<f64> = (0..257).map(|_| rng.random_range(-3.0..3.0)).collect();
                    Tensor::from_vec(v, 257, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
                };
                let (mut a, mut b) = (Optimizer::new(spec, 1), Optimizer::new(spec, 1));
                b.fused = false;
                let p0 = draw(&mut rng);
                let (pa, pb) = (Var::from_tensor(&p0).unwrap(), Var::from_tensor(&p0).unwrap());
                for _ in 0..4 {
                    let g = draw(&mut rng);
                    a.step(&[&pa], std::slice::from_ref(&g)).unwrap();
                    b.step(&[&pb], &[g]).unwrap();
                    let bits = |t: &Tensor| t.to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&pa), bits(&pb), "{:?} {dtype:?}", spec.kind);
                }
            }
        }
    }

    #[test]
    fn clip_norm_scales_to_max() {
        // Gradients [3, 4] have norm 5; max 1 scales by 1/(5 + 1e-6).
        let mut g = vec![Tensor::new(&[3.0f64, 4.0], &Device::Cpu).unwrap()];
        clip_norm(&mut g, 5.0, 1.0).unwrap();
        close(&g[0].to_vec1().unwrap(), &[3.0 / (5.0 + 1e-6), 4.0 / (5.0 + 1e-6)]);
    }
}
