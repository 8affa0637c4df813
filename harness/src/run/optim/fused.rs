//! The one-pass CPU update for f32 and f64 parameters.
//!
//! The tensor path in `mod.rs` costs a dozen Candle operations per parameter,
//! each allocating a full-size tensor; here one loop reads parameter, gradient
//! and state once. It performs exactly the tensor path's operations, in the
//! same order and the same precision (`x·mul + add` for each affine, as Candle
//! does), so both give the same bits; a test holds them to it.

use candle_core::{CpuStorage, Device, Storage, Tensor};

use super::{bias_corrections, Updated};
use crate::error::Result;
use crate::scenario::{OptimizerKind, OptimizerSpec};

/// The arithmetic the update needs, for f32 and f64.
trait Real: candle_core::WithDType + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> + std::ops::Mul<Output = Self> + std::ops::Div<Output = Self> {
    fn of(v: f64) -> Self;
    fn sqrt(self) -> Self;
    fn slice(s: &CpuStorage) -> Option<&[Self]>;
}

macro_rules! real {
    ($t:ty, $variant:ident) => {
        impl Real for $t {
            fn of(v: f64) -> Self {
                v as $t
            }
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            fn slice(s: &CpuStorage) -> Option<&[Self]> {
                match s {
                    CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
real!(f32, F32);
real!(f64, F64);

/// The fused update, or `None` where it does not apply (other devices, dtypes or layouts).
pub fn update(o: &OptimizerSpec, step: usize, p: &Tensor, g: &Tensor, m: Option<&Tensor>, v: Option<&Tensor>) -> Result<Option<Updated>> {
    Ok(match p.dtype() {
        candle_core::DType::F32 => typed::<f32>(o, step, p, g, m, v)?,
        candle_core::DType::F64 => typed::<f64>(o, step, p, g, m, v)?,
        _ => None,
    })
}

fn typed<T: Real>(o: &OptimizerSpec, step: usize, p: &Tensor, g: &Tensor, m: Option<&Tensor>, v: Option<&Tensor>) -> Result<Option<Updated>> {
    let tensors = [Some(p), Some(g), m, v];
    let guards: Vec<_> = tensors.iter().flatten().map(|t| t.storage_and_layout()).collect();
    let mut slices: Vec<&[T]> = Vec::with_capacity(4);
    for (storage, layout) in &guards {
        let (Storage::Cpu(cpu), Some((a, b))) = (&**storage, layout.contiguous_offsets()) else { return Ok(None) };
        let Some(s) = T::slice(cpu) else { return Ok(None) };
        slices.push(&s[a..b]);
    }
    let (ps, gs) = (slices[0], slices[1]);
    let ms = m.map(|_| slices[2]);
    let vs = v.map(|_| slices[2 + usize::from(m.is_some())]);
    let (new_p, new_m, new_v) = compute(o, step, ps, gs, ms, vs);
    let shape = p.shape();
    let wrap = |v: Vec<T>| Tensor::from_vec(v, shape.clone(), &Device::Cpu);
    Ok(Some((wrap(new_p)?, new_m.map(wrap).transpose()?, new_v.map(wrap).transpose()?)))
}

/// The update itself. A missing state is read as zeros, which gives the same
/// bits as the tensor path's first step (`0·β + x = x`, signed zeros included,
/// since `x` is itself `y·c + 0`). Every loop is a plain zip over slices so
/// that it vectorises.
#[allow(clippy::type_complexity)]
fn compute<T: Real>(o: &OptimizerSpec, step: usize, p: &[T], g: &[T], m: Option<&[T]>, v: Option<&[T]>) -> (Vec<T>, Option<Vec<T>>, Option<Vec<T>>) {
    let n = p.len();
    let zero = T::of(0.0);
    let zeros;
    let (m, v) = if m.is_none() || v.is_none() {
        zeros = vec![zero; n];
        (m.unwrap_or(&zeros), v.unwrap_or(&zeros))
    } else {
        (m.unwrap_or_default(), v.unwrap_or_default())
    };
    let (lr, wd, mom) = (T::of(o.lr), T::of(o.weight_decay), T::of(o.momentum));
    // Coupled L2 (SGD, Adam, RMSprop): g ← g + (p·wd + 0).
    let coupled;
    let g = if o.weight_decay != 0.0 && o.kind != OptimizerKind::Adamw {
        coupled = p.iter().zip(g).map(|(&p, &g)| g + (p * wd + zero)).collect::<Vec<T>>();
        &coupled[..]
    } else {
        g
    };
    let mut new_p = vec![zero; n];
    match o.kind {
        OptimizerKind::Sgd if o.momentum != 0.0 => {
            let mut buf = vec![zero; n];
            for i in 0..n {
                // buf ← (m·mom + 0) + g; on the first step the tensor path takes g itself.
                let b = if step == 1 { g[i] } else { (m[i] * mom + zero) + g[i] };
                let d = if o.nesterov { g[i] + (b * mom + zero) } else { b };
                new_p[i] = p[i] - (d * lr + zero);
                buf[i] = b;
            }
            (new_p, Some(buf), None)
        }
        OptimizerKind::Sgd => {
            for ((np, &p), &g) in new_p.iter_mut().zip(p).zip(g) {
                *np = p - (g * lr + zero);
            }
            (new_p, None, None)
        }
        OptimizerKind::Adam | OptimizerKind::Adamw => {
            let decay = T::of(1.0 - o.lr * o.weight_decay);
            let decoupled = o.kind == OptimizerKind::Adamw && o.weight_decay != 0.0;
            let (b1, c1, b2, c2) = (T::of(o.beta1), T::of(1.0 - o.beta1), T::of(o.beta2), T::of(1.0 - o.beta2));
            let (bc1, bc2) = bias_corrections(o, step);
            let (inv_sqrt_bc2, eps, step_size) = (T::of(1.0 / bc2.sqrt()), T::of(o.eps), T::of(o.lr / bc1));
            let (mut nm, mut nv) = (vec![zero; n], vec![zero; n]);
            for i in 0..n {
                let gi = g[i];
                let pi = if decoupled { p[i] * decay + zero } else { p[i] };
                let mi = (m[i] * b1 + zero) + (gi * c1 + zero);
                let vi = (v[i] * b2 + zero) + ((gi * gi) * c2 + zero);
                let denom = vi.sqrt() * inv_sqrt_bc2 + eps;
                new_p[i] = pi - ((mi / denom) * step_size + zero);
                nm[i] = mi;
                nv[i] = vi;
            }
            (new_p, Some(nm), Some(nv))
        }
        OptimizerKind::Rmsprop => {
            let (a, c, eps, one) = (T::of(o.alpha), T::of(1.0 - o.alpha), T::of(o.eps), T::of(1.0));
            let momentum = o.momentum != 0.0;
            let (mut nm, mut nv) = (vec![zero; if momentum { n } else { 0 }], vec![zero; n]);
            for i in 0..n {
                let gi = g[i];
                let vi = (v[i] * a + zero) + ((gi * gi) * c + zero);
                let d = gi / (vi.sqrt() * one + eps);
                nv[i] = vi;
                let d = if momentum {
                    let b = if step == 1 { d } else { (m[i] * mom + zero) + d };
                    nm[i] = b;
                    b
                } else {
                    d
                };
                new_p[i] = p[i] - (d * lr + zero);
            }
            (new_p, momentum.then_some(nm), Some(nv))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn applies_to_cpu_f32_f64_only() {
        let spec: OptimizerSpec = toml::from_str("kind = \"adam\"\nlr = 0.1").unwrap();
        for (dt, applies) in [(DType::F32, true), (DType::F64, true), (DType::F16, false), (DType::BF16, false)] {
            let p = Tensor::new(&[1.0f64, 2.0], &Device::Cpu).unwrap().to_dtype(dt).unwrap();
            let r = update(&spec, 1, &p, &p, None, None).unwrap();
            assert_eq!(r.is_some(), applies, "{dt:?}");
        }
        // A strided (transposed) parameter falls back to the tensor path.
        let p = Tensor::new(&[[1.0f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap().t().unwrap();
        assert!(update(&spec, 1, &p, &p, None, None).unwrap().is_none());
    }
}
