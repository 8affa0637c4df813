//! The one-pass CPU update for f32 and f64 parameters, in place.
//!
//! The tensor path in `run/optim/mod.rs` costs a dozen Candle operations per parameter,
//! each allocating a full-size tensor; here one loop reads parameter, gradient
//! and state once and writes the parameter and state where they are (no new
//! tensors, no copy into the variable), gathering the watch's stats of the
//! gradient and the new parameter on the way. It performs exactly the tensor
//! path's operations, in the same order and the same precision (`x·mul + add`
//! for each affine, as Candle does, and SGD's `add(x, alpha=a)` as PyTorch's
//! one fused multiply-add), so both give the same bits; a test holds them to it.

use std::cell::{Cell, RefCell};

use candle_core::{CpuStorage, InplaceOp2, Layout, Tensor};

use super::Real;
use crate::error::Result;
use crate::run::profile::Profile;
use crate::run::watch::{Acc, Block, Stats};
use crate::scenario::{OptimizerKind, OptimizerSpec};

/// One parameter's optimizer state for the fused update: the first moment (or
/// momentum buffer) and second moment, each empty where the rule keeps none.
#[derive(Debug, Clone, PartialEq)]
pub enum Buffers {
    /// f32 state.
    F32(Vec<f32>, Vec<f32>),
    /// f64 state.
    F64(Vec<f64>, Vec<f64>),
}

impl Buffers {
    /// The state as tensors of `p`'s shape, for the tensor path (`None` where the rule keeps none).
    pub fn to_tensors(&self, p: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        fn one<T: candle_core::WithDType>(v: &[T], p: &Tensor) -> Result<Option<Tensor>> {
            Ok(if v.is_empty() { None } else { Some(Tensor::from_slice(v, p.shape(), p.device())?) })
        }
        match self {
            Buffers::F32(m, v) => Ok((one(m, p)?, one(v, p)?)),
            Buffers::F64(m, v) => Ok((one(m, p)?, one(v, p)?)),
        }
    }
}

/// The watch's stats of one parameter's update (`None` where not gathered: the runner reads them itself).
#[derive(Debug, Clone, Copy, Default)]
pub struct Watched {
    /// The gradient (gathered by the fused update).
    pub grad: Option<Stats>,
    /// The new value (gathered by the fused update).
    pub param: Option<Stats>,
    /// The new first moment or momentum buffer.
    pub m: Option<Stats>,
    /// The new second moment.
    pub v: Option<Stats>,
}

/// Adam's bias corrections `1 − β₁ᵗ` and `1 − β₂ᵗ`.
pub(crate) fn bias_corrections(o: &OptimizerSpec, step: usize) -> (f64, f64) {
    let t = step as i32;
    (1.0 - o.beta1.powi(t), 1.0 - o.beta2.powi(t))
}

/// Updates `p` in place from `g`, with `state` made on the first step (zeros). Returns `false`,
/// touching nothing, where the fused update does not apply (other devices, dtypes or layouts, or a
/// state the tensor path made); otherwise the watch's stats of the gradient and the new parameter
/// are in `stats` when `watch` is set.
pub fn update(o: &OptimizerSpec, step: usize, p: &Tensor, g: &Tensor, state: &mut Option<Buffers>, watch: bool, stats: &mut Option<Watched>) -> Result<bool> {
    let cpu = |t: &Tensor| super::handles(t) && t.is_contiguous();
    if p.dtype() != g.dtype() || p.elem_count() != g.elem_count() || !cpu(p) || !cpu(g) {
        return Ok(false);
    }
    let (uses_m, uses_v) = kept(o);
    let n = p.elem_count();
    let fresh = |n: usize, used: bool| if used { n } else { 0 };
    let buffers = match (state.take(), p.dtype()) {
        (Some(b @ Buffers::F32(..)), candle_core::DType::F32) | (Some(b @ Buffers::F64(..)), candle_core::DType::F64) => b,
        (None, candle_core::DType::F32) => Buffers::F32(vec![0.0; fresh(n, uses_m)], vec![0.0; fresh(n, uses_v)]),
        (None, candle_core::DType::F64) => Buffers::F64(vec![0.0; fresh(n, uses_m)], vec![0.0; fresh(n, uses_v)]),
        (other, _) => {
            *state = other;
            return Ok(false);
        }
    };
    let op = InPlace { o, step, watch, buffers: RefCell::new(buffers), stats: Cell::new(None) };
    p.inplace_op2(g, &op)?;
    *state = Some(op.buffers.into_inner());
    *stats = op.stats.get();
    Ok(true)
}

/// The watch's stats of a state: none to gather while the update found every value of the
/// state finite (`bad` false), else the first non-finite element and their count.
fn state_stats<T: Real>(s: &[T], bad: bool, f: impl Fn(T) -> f64 + Copy) -> crate::run::watch::Stats {
    let clean = crate::run::watch::Stats { max_abs: f64::NAN, sum_sq: f64::NAN, first_bad: None, bad: 0, tiny: 0 };
    if !bad {
        return clean;
    }
    crate::run::watch::of_slice(s, f).unwrap_or(clean)
}

/// A gradient's stats with the largest magnitude and subnormal count of its profile (the
/// largest finite magnitude `finish` found, where a value is not finite).
fn with_profile(s: crate::run::watch::Stats, p: &Profile) -> crate::run::watch::Stats {
    let max_abs = if s.first_bad.is_some() { s.max_abs } else { p.max_abs() };
    crate::run::watch::Stats { max_abs, tiny: p.tiny, ..s }
}

/// Which states the update keeps: (first moment or momentum buffer, second moment).
fn kept(o: &OptimizerSpec) -> (bool, bool) {
    match o.kind {
        OptimizerKind::Sgd => (o.momentum != 0.0, false),
        OptimizerKind::Adam | OptimizerKind::Adamw => (true, true),
        OptimizerKind::Rmsprop => (o.momentum != 0.0, true),
    }
}

/// The update as a Candle in-place op on the parameter, reading the gradient.
struct InPlace<'a> {
    o: &'a OptimizerSpec,
    step: usize,
    watch: bool,
    buffers: RefCell<Buffers>,
    stats: Cell<Option<Watched>>,
}

impl InplaceOp2 for InPlace<'_> {
    fn name(&self) -> &'static str {
        "nanhunt-fused-update"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, src: &CpuStorage, src_l: &Layout) -> candle_core::Result<()> {
        let (Some((a, b)), Some((c, d))) = (dst_l.contiguous_offsets(), src_l.contiguous_offsets()) else { candle_core::bail!("the fused update needs contiguous tensors") };
        let stats = match (dst, src, &mut *self.buffers.borrow_mut()) {
            (CpuStorage::F32(p), CpuStorage::F32(g), Buffers::F32(m, v)) => in_place(self.o, self.step, (&mut p[a..b], &g[c..d], m, v), self.watch, compute32),
            (CpuStorage::F64(p), CpuStorage::F64(g), Buffers::F64(m, v)) => in_place(self.o, self.step, (&mut p[a..b], &g[c..d], m, v), self.watch, compute64),
            _ => candle_core::bail!("the fused update needs f32 or f64 parameter, gradient and state alike"),
        };
        self.stats.set(stats);
        Ok(())
    }
}

/// Elements updated between two reads of the watch's sums: small enough that
/// the block's gradient and new values are still in L1 when they are summed.
const BLOCK: usize = 1024;

/// A block's update: [`compute`], for f32 compiled for the widest vectors the CPU has.
type Compute<T> = fn(&OptimizerSpec, usize, &mut [T], &[T], &mut [T], &mut [T]) -> bool;

/// The update over blocks, with the watch's stats of the gradient and of the new parameter.
fn in_place<T: Real + Block>(o: &OptimizerSpec, step: usize, (p, g, m, v): (&mut [T], &[T], &mut [T], &mut [T]), watch: bool, compute: Compute<T>) -> Option<Watched> {
    let n = p.len();
    // The sums of squares (the trace keeps the gradient's and the parameters' norms) and the
    // gradient's magnitude profile (its largest |value| and subnormals, read from the bits).
    let (mut g_acc, mut p_acc) = (Acc::<false>::default(), Acc::<false>::default());
    let mut g_prof = Profile::default();
    // The state only needs checking (its norm is not kept): `compute` says whether it is finite.
    let mut state = false;
    let to64 = |x: T| <T as candle_core::WithDType>::to_f64(x);
    for start in (0..n).step_by(BLOCK) {
        let r = start..(start + BLOCK).min(n);
        let (mb, vb) = (if m.is_empty() { &mut [][..] } else { &mut m[r.clone()] }, if v.is_empty() { &mut [][..] } else { &mut v[r.clone()] });
        state |= compute(o, step, &mut p[r.clone()], &g[r.clone()], mb, vb);
        if watch {
            T::watch_grad(&mut g_acc, &mut g_prof, &g[r.clone()]);
            T::watch_param(&mut p_acc, &p[r.clone()]);
        }
    }
    watch.then(|| Watched {
        grad: Some(with_profile(g_acc.finish(g, to64), &g_prof)),
        param: Some(p_acc.finish(p, to64)),
        m: (!m.is_empty()).then(|| state_stats(m, state, to64)),
        v: (!v.is_empty()).then(|| state_stats(v, state, to64)),
    })
}

/// The update of one block, written into `new_p` and the new states (empty
/// where [`state`] says the kind keeps none). A missing
/// state is read as zeros, which gives the same bits as the tensor path's first
/// step (`0·β + x = x`, signed zeros included, since `x` is itself `y·c + 0`).
/// Every loop is a plain loop over slices so that it vectorises.
#[inline(always)]
fn compute<T: Real>(o: &OptimizerSpec, step: usize, p: &mut [T], g: &[T], m: &mut [T], v: &mut [T]) -> bool {
    let n = p.len();
    // Whether the new state holds a non-finite value, folded into the update's own loop: an OR
    // of booleans, which (unlike a float sum) still vectorises.
    let mut bad = false;
    let zero = T::from_f64(0.0);
    let (lr, wd, mom) = (T::from_f64(o.lr), T::from_f64(o.weight_decay), T::from_f64(o.momentum));
    // Coupled L2 (SGD, Adam, RMSprop): g ← p·wd + g in one rounding (PyTorch's `g.add(p, alpha=wd)`).
    let coupled;
    let g = if o.weight_decay != 0.0 && o.kind != OptimizerKind::Adamw {
        coupled = p.iter().zip(g).map(|(&p, &g)| p.fma(wd, g)).collect::<Vec<T>>();
        &coupled[..]
    } else {
        g
    };
    match o.kind {
        OptimizerKind::Sgd if o.momentum != 0.0 => {
            for i in 0..n {
                // buf ← (m·mom + 0) + g; on the first step the tensor path takes g itself. Then
                // PyTorch's fused multiply-adds: nesterov's d ← b·mom + g, and p ← d·(−lr) + p.
                let b = if step == 1 { g[i] } else { (m[i] * mom + zero) + g[i] };
                let d = if o.nesterov { b.fma(mom, g[i]) } else { b };
                p[i] = d.fma(-lr, p[i]);
                m[i] = b;
                bad |= !b.finite();
            }
        }
        OptimizerKind::Sgd => {
            // PyTorch's `p.add_(g, alpha=-lr)`: p ← g·(−lr) + p in one rounding.
            for (p, &g) in p.iter_mut().zip(g) {
                *p = g.fma(-lr, *p);
            }
        }
        OptimizerKind::Adam | OptimizerKind::Adamw => {
            let decay = T::from_f64(1.0 - o.lr * o.weight_decay);
            let decoupled = o.kind == OptimizerKind::Adamw && o.weight_decay != 0.0;
            let (b1, c1, b2, c2) = (T::from_f64(o.beta1), T::from_f64(1.0 - o.beta1), T::from_f64(o.beta2), T::from_f64(1.0 - o.beta2));
            let (bc1, bc2) = bias_corrections(o, step);
            let (inv_sqrt_bc2, eps, step_size) = (T::from_f64(1.0 / bc2.sqrt()), T::from_f64(o.eps), T::from_f64(o.lr / bc1));
            for i in 0..n {
                let gi = g[i];
                let pi = if decoupled { p[i] * decay + zero } else { p[i] };
                let mi = (m[i] * b1 + zero) + (gi * c1 + zero);
                let vi = (v[i] * b2 + zero) + ((gi * gi) * c2 + zero);
                let denom = vi.sqrt() * inv_sqrt_bc2 + eps;
                p[i] = pi - ((mi / denom) * step_size + zero);
                m[i] = mi;
                v[i] = vi;
                bad |= !mi.finite() | !vi.finite();
            }
        }
        OptimizerKind::Rmsprop => {
            let (a, c, eps, one) = (T::from_f64(o.alpha), T::from_f64(1.0 - o.alpha), T::from_f64(o.eps), T::from_f64(1.0));
            let momentum = o.momentum != 0.0;
            for i in 0..n {
                let gi = g[i];
                let vi = (v[i] * a + zero) + ((gi * gi) * c + zero);
                let d = gi / (vi.sqrt() * one + eps);
                v[i] = vi;
                let d = if momentum {
                    let b = if step == 1 { d } else { (m[i] * mom + zero) + d };
                    m[i] = b;
                    b
                } else {
                    d
                };
                p[i] -= d * lr + zero;
                bad |= !vi.finite() | !d.finite();
            }
        }
    }
    bad
}

super::avx2! {
    /// [`compute`] in f32 with AVX-512 or AVX2 where the CPU has them: every operation is one
    /// IEEE operation per element (no sum; a fused multiply-add is one rounding at any width,
    /// `f32::mul_add` where there are no vectors), so the width changes no bit.
    fn compute32(o: &OptimizerSpec, step: usize, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) -> bool {
        compute(o, step, p, g, m, v)
    }
}

super::avx2! {
    /// [`compute`] in f64, with vector fused multiply-adds where the CPU has them (as [`compute32`]).
    fn compute64(o: &OptimizerSpec, step: usize, p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64]) -> bool {
        compute(o, step, p, g, m, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The parameter and both states after three f32 steps of `kind` at the widest tier `tier`, as bits.
    fn steps_at(tier: u8, kind: &str) -> Vec<u32> {
        crate::run::kernel::WIDEST.with(|w| w.set(tier));
        let spec: OptimizerSpec = toml::from_str(&format!("kind = \"{kind}\"\nlr = 0.01\nweight_decay = 0.1\nmomentum = 0.5")).unwrap();
        // 37 values: an AVX-512 and an AVX2 body and a remainder; extremes and a zero gradient.
        let draw = |k: f32| (0..37).map(|i| (i as f32 * 0.731 + k).sin() * 10f32.powi(i % 9 - 4)).collect::<Vec<f32>>();
        let p = Tensor::new(draw(0.0), &Device::Cpu).unwrap();
        let (mut state, mut stats) = (None, None);
        for step in 1..=3 {
            let mut g = draw(step as f32);
            g[3] = 0.0;
            assert!(update(&spec, step, &p, &Tensor::new(g, &Device::Cpu).unwrap(), &mut state, false, &mut stats).unwrap());
        }
        crate::run::kernel::WIDEST.with(|w| w.set(2));
        let Some(Buffers::F32(m, v)) = state else { panic!("f32 state") };
        p.to_vec1::<f32>().unwrap().iter().chain(&m).chain(&v).map(|x| x.to_bits()).collect()
    }

    /// AVX-512, AVX2 and the plain loop update to the same bits (each step is one IEEE operation
    /// per element); `optim::tests::fused_path_is_bit_identical_to_tensor_path` holds the
    /// widest to the tensor path.
    #[test]
    fn every_tier_updates_to_the_same_bits() {
        for kind in ["sgd", "adam", "adamw", "rmsprop"] {
            let plain = steps_at(0, kind);
            assert_eq!(steps_at(1, kind), plain, "{kind}: AVX2");
            assert_eq!(steps_at(2, kind), plain, "{kind}: AVX-512");
        }
    }

    /// 35 f32 values in ±[1/4, 8) with scattered mantissas, from integers alone (as gen.py below).
    fn draw_bits(k: u64) -> Vec<f32> {
        let mant = |i: u64| (((i * i * 7919 + i * (k + 1) * 31337 + k * 104_729) * 2_654_435_761) >> 9) % 0x80_0000;
        (0..35u64).map(|i| f32::from_bits(((0x3E80_0000 + (((i + k) % 5) << 23) + mant(i)) | ((i % 2) << 31)) as u32)).collect()
    }

    /// f32 SGD (lr 0.1) rounds as PyTorch's CPU `add(x, alpha=a)`, one fused multiply-add, at
    /// every tier: plain for one step, and momentum 0.9 with weight decay 0.01 (and nesterov)
    /// for two. The bits are PyTorch 2.15's (CPU, `torch.optim.SGD`), from this script:
    /// ```python
    /// import torch, numpy as np
    /// def draw(k):
    ///     i = np.arange(35, dtype=np.uint64)
    ///     mant = ((i * i * 7919 + i * (k + 1) * 31337 + k * 104729) * 2654435761 >> 9) % 0x800000
    ///     bits = (0x3E800000 + (((i + k) % 5) << 23) + mant) | ((i % 2) << 31)
    ///     return torch.from_numpy(bits.astype(np.uint32).view(np.float32).copy())
    /// p0, g1, g2 = draw(0), draw(1), draw(2)
    /// for cfg in [dict(), dict(momentum=0.9, weight_decay=0.01), dict(momentum=0.9, weight_decay=0.01, nesterov=True)]:
    ///     q = p0.clone().requires_grad_(True)
    ///     opt = torch.optim.SGD([q], lr=0.1, **cfg)
    ///     for g in ([g1] if not cfg else [g1, g2]):
    ///         q.grad = g.clone(); opt.step()
    ///     print([hex(b) for b in q.detach().numpy().view(np.uint32)])
    /// ```
    #[test]
    fn sgd_rounds_as_pytorch_fma() {
        #[rustfmt::skip]
        let cases: [(&str, usize, [u32; 35]); 3] = [
            ("", 1, [0x3e48a1de, 0xbf135c73, 0x3fa0d90e, 0xc03ff9f0, 0x40d9066d, 0xbeccc228, 0x3f20cfe2, 0xbfb9b518, 0x3fc87d2e, 0xc0898f75, 0x3e87d807, 0xbece9cba, 0x3f8b9c30, 0xc05b27e5, 0x4080f436, 0xbe95928c, 0x3f007180, 0xbfb027ee, 0x400b1c3f, 0xc0c0017d, 0x3e38b03e, 0xbed87290, 0x3f8dbeb9, 0xc00db53f, 0x40c6b74d, 0xbe6b84af, 0x3f110c1d, 0xbfbdfa2b, 0x4049594d, 0xc09448d5, 0x3ec8379e, 0xbeddd400, 0x3fc0da43, 0xc03e0868, 0x40a982e5]),
            ("momentum = 0.9\nweight_decay = 0.01", 2, [0x3cf8599a, 0xbdfe7b29, 0x3e6b8d11, 0xc01050a4, 0x40d52cbd, 0xbe3b1f21, 0x3e07bbd5, 0xbf2bbb6b, 0x3f56c981, 0xc0866965, 0x3d7d34a1, 0x3dc705ba, 0x3e713acf, 0xc0380bec, 0x407a043e, 0xbd8765c6, 0x3dfcf55a, 0xbf33801a, 0x3fcfb9f9, 0xc0bc156e, 0xbd47175b, 0xbdc4c740, 0x3e94d944, 0xbfe6d682, 0x40c268bb, 0x3d1c1b69, 0x3e0446dc, 0xbec321c2, 0x402bb30d, 0xc09010b1, 0x3dd2375d, 0x3d9b25ac, 0x3f4677a1, 0xc00f79c5, 0x40a6333e]),
            ("momentum = 0.9\nweight_decay = 0.01\nnesterov = true", 2, [0xbdf28558, 0x3e8fd829, 0xbf312ea2, 0xbfcb72f2, 0x40d1e850, 0x3c47103f, 0xbea000db, 0x3cf02c4a, 0x3e40549e, 0xc083b44e, 0xbdf78450, 0x3f0c05b6, 0xbf084561, 0xc018bcd0, 0x40732777, 0x3e0c2139, 0xbe5d2913, 0xbdc3c0ab, 0x3f90b88c, 0xc0b8bb1c, 0xbe823114, 0x3e49fb64, 0xbee2775d, 0xbfb7e84a, 0x40beb723, 0x3e8ed881, 0xbe8705f7, 0x3f1bfd61, 0x40114612, 0xc08c67c8, 0xbe200f99, 0x3f08780d, 0x3df3fcf4, 0xbfcbbd82, 0x40a36061]),
        ];
        let (p0, grads) = (draw_bits(0), [draw_bits(1), draw_bits(2)]);
        // The two-rounding form `p − g·lr` misses PyTorch's bits in places (4 of the 35).
        let two: Vec<u32> = p0.iter().zip(&grads[0]).map(|(p, g)| (p - g * 0.1f32).to_bits()).collect();
        assert_ne!(two, cases[0].2);
        for tier in 0..=2 {
            for (knobs, steps, want) in &cases {
                crate::run::kernel::WIDEST.with(|w| w.set(tier));
                let spec: OptimizerSpec = toml::from_str(&format!("kind = \"sgd\"\nlr = 0.1\n{knobs}")).unwrap();
                let p = Tensor::new(p0.clone(), &Device::Cpu).unwrap();
                let (mut state, mut stats) = (None, None);
                for (step, g) in grads.iter().take(*steps).enumerate() {
                    assert!(update(&spec, step + 1, &p, &Tensor::new(g.clone(), &Device::Cpu).unwrap(), &mut state, false, &mut stats).unwrap());
                }
                crate::run::kernel::WIDEST.with(|w| w.set(2));
                let got: Vec<u32> = p.to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect();
                assert_eq!(&got, want, "{knobs:?} at tier {tier}");
            }
        }
    }

    #[test]
    fn applies_to_cpu_f32_f64_only() {
        let spec: OptimizerSpec = toml::from_str("kind = \"adam\"\nlr = 0.1").unwrap();
        for (dt, applies) in [(DType::F32, true), (DType::F64, true), (DType::F16, false), (DType::BF16, false)] {
            let p = Tensor::new(&[1.0f64, 2.0], &Device::Cpu).unwrap().to_dtype(dt).unwrap();
            let g = p.clone().copy().unwrap();
            let (mut state, mut stats) = (None, None);
            assert_eq!(update(&spec, 1, &p, &g, &mut state, true, &mut stats).unwrap(), applies, "{dt:?}");
            assert_eq!((state.is_some(), stats.is_some()), (applies, applies), "{dt:?}");
        }
        // A strided (transposed) parameter is left to the tensor path, untouched.
        let p = Tensor::new(&[[1.0f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap().t().unwrap();
        let g = p.contiguous().unwrap();
        assert!(!update(&spec, 1, &p, &g, &mut None, false, &mut None).unwrap());
        assert_eq!(p.to_vec2::<f32>().unwrap(), [[1.0, 3.0], [2.0, 4.0]]);
    }
}
