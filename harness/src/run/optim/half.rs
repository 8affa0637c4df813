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
//!
//! Two ops differ, measured against PyTorch 2.15 and read in its source:
//! `add(other, alpha=a)` (the SGD step `p.add_(d, alpha=-lr)`, weight decay's
//! `g.add(p, alpha=wd)`, Nesterov's `g.add(buf, alpha=μ)`, RMSprop's momentum
//! step) rounds `a` to the dtype and computes `p + a·d` rounded once only in its
//! vectorized loop, `p + dtype(a·d)` in its scalar tail ([`add_alpha`]); and
//! `add_(eps)` adds the dtype's eps (f16's 1e-8 is 0). `lerp_` and `addcmul_` are
//! fused multiply-adds in f32.

use candle_core::{DType, Tensor};

use super::{bias_corrections, Updated};
use crate::error::Result;
use crate::scenario::{OptimizerKind, OptimizerSpec};

/// How many leading elements of a tensor PyTorch's CPU `add` computes in its vectorized loop come
/// in multiples of: `vectorized_loop` (ATen/native/cpu/Loops.h) handles `2 * Vec::size()` elements
/// per iteration and the rest, `n % (2 * Vec::size())`, in the scalar `basic_loop`.
/// `Vectorized<Half>` and `Vectorized<BFloat16>` hold 16 under AVX2 (cpu/vec/vec256/
/// vec256_16bit_float.h), and `add_stub` is registered with `REGISTER_DISPATCH`, which gives the
/// AVX512 build no kernel (native/DispatchStub.h), so AVX512 machines run the AVX2 one: 32 under
/// `ATEN_CPU_CAPABILITY` avx2 and avx512 alike (measured: AMD EPYC Zen 4, PyTorch 2.15). Under
/// `default` (no SIMD) every element takes the scalar rule; nanhunt follows AVX2/AVX512 on any CPU.
/// A tensor past `GRAIN_SIZE` (32768 elements) on several threads is cut into one chunk per
/// thread, each with its own tail; nanhunt takes the whole tensor as one chunk (one thread, as
/// `repro.py` sets).
const ADD_VECTOR_BLOCK: usize = 32;

/// A rounding of an f32 to the parameters' dtype and back.
type Round = fn(f32) -> f32;

/// Rounds an f32 to the dtype and back.
fn rounder(d: DType) -> Round {
    match d {
        DType::F16 => |x| half::f16::from_f32(x).to_f32(),
        DType::BF16 => |x| half::bf16::from_f32(x).to_f32(),
        _ => |x| x,
    }
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// `self.lerp_(end, w)` as PyTorch computes it: a fused multiply-add in f32, in its vectorized loop
/// (`fmadd`/`fnmadd`) and its scalar tail alike (measured on 2M elements of f16 and bf16: the
/// unfused `a + w·(end − a)` differs from PyTorch 2.15 on 2 to 2688 of them per weight).
fn lerp(a: f32, end: f32, w: f32) -> f32 {
    if w.abs() < 0.5 {
        (end - a).mul_add(w, a)
    } else {
        (-(end - a)).mul_add(1.0 - w, end)
    }
}

/// `s.addcmul_(g, g, value=k)` (Adam's `exp_avg_sq`, RMSprop's `square_avg`) before its rounding:
/// PyTorch's kernel for f16 and bf16 computes `float(self) + val * t1 * t2`, and the compiler fuses
/// the last product into the addition, `fma(val·t1, t2, self)`, in its vectorized loop and scalar
/// tail alike (measured on 2M elements and on 40000 tensors of 31, f16 and bf16, values 0.001 and
/// 0.01: the unfused `s + k·g·g` differs from PyTorch 2.15 on 2 to 29 of them, this on none).
fn addcmul(s: f32, k: f32, g: f32) -> f32 {
    (k * g).mul_add(g, s)
}

/// `x.add(y, alpha)` at flat index `i` of an `n`-element f16/bf16 tensor, as PyTorch's CPU kernel
/// computes it, with `alpha` already rounded to the dtype (the generated ufunc kernel takes
/// `alpha.to<scalar_t>()`): its vectorized loop computes `fmadd(y, alpha, x)` in f32 and rounds
/// once (ufunc/add.h, vec256_half.h's `fmadd`); its scalar tail, the last `n % 32` elements,
/// computes `x + alpha * y` in `c10::Half` arithmetic, which rounds the product to the dtype first.
fn add_alpha(r: Round, i: usize, n: usize, x: f32, alpha: f32, y: f32) -> f32 {
    if i < n - n % ADD_VECTOR_BLOCK {
        r(alpha.mul_add(y, x))
    } else {
        r(x + r(alpha * y))
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
    // `alpha=-lr` of `param.add_(d, alpha=-lr)`, in the dtype.
    let neg_lr = r((-lr) as f32);
    // grad.add(param, alpha=wd): coupled L2.
    let g: Vec<f32> = if wd != 0.0 && o.kind != OptimizerKind::Adamw {
        let wd = r(wd as f32);
        g.iter().zip(&p).enumerate().map(|(i, (g, p))| add_alpha(r, i, n, *g, wd, *p)).collect()
    } else {
        g
    };
    let (keep_m, keep_v) = match o.kind {
        OptimizerKind::Sgd => {
            // buf.mul_(μ) takes μ in f32, grad.add(buf, alpha=μ) in the dtype.
            let (mom, mom_alpha) = (o.momentum as f32, r(o.momentum as f32));
            for i in 0..n {
                let d = if o.momentum != 0.0 {
                    // buf = grad.clone() on the first step, then buf.mul_(mom).add_(grad).
                    m[i] = if fresh_m { g[i] } else { r(r(m[i] * mom) + g[i]) };
                    if o.nesterov {
                        add_alpha(r, i, n, g[i], mom_alpha, m[i])
                    } else {
                        m[i]
                    }
                } else {
                    g[i]
                };
                p[i] = add_alpha(r, i, n, p[i], neg_lr, d);
            }
            (o.momentum != 0.0, false)
        }
        OptimizerKind::Adam | OptimizerKind::Adamw => {
            let (bc1, bc2) = bias_corrections(o, step);
            let (step_size, bc2_sqrt) = (lr / bc1, bc2.sqrt() as f32);
            let (b1, b2, eps, decay) = ((1.0 - o.beta1) as f32, o.beta2 as f32, r(o.eps as f32), (1.0 - lr * wd) as f32);
            let keep = (1.0 - o.beta2) as f32;
            for i in 0..n {
                if o.kind == OptimizerKind::Adamw && wd != 0.0 {
                    p[i] = r(p[i] * decay);
                }
                m[i] = r(lerp(m[i], g[i], b1));
                v[i] = r(addcmul(r(v[i] * b2), keep, g[i]));
                let denom = r(r(r(v[i].sqrt()) / bc2_sqrt) + eps);
                p[i] = r(p[i] + (-step_size) as f32 * m[i] / denom);
            }
            (true, true)
        }
        OptimizerKind::Rmsprop => {
            let (alpha, keep, eps, mom) = (o.alpha as f32, (1.0 - o.alpha) as f32, r(o.eps as f32), o.momentum as f32);
            for i in 0..n {
                v[i] = r(addcmul(r(v[i] * alpha), keep, g[i]));
                let avg = r(r(v[i].sqrt()) + eps);
                if o.momentum != 0.0 {
                    m[i] = r(r(m[i] * mom) + g[i] / avg);
                    p[i] = add_alpha(r, i, n, p[i], neg_lr, m[i]);
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
    fn addcmul_is_fused_as_pytorchs() {
        // PyTorch 2.15, f16: s = [0.0232696533203125], g = [-5.46875],
        // s.addcmul_(g, g, value=0.001) is 0.053192138671875; unfused, s + f32(0.001·g)·g rounds to
        // 0.05316162109375 (the literals below are the shortest that name these f32 values).
        let r = rounder(DType::F16);
        assert_eq!(r(addcmul(0.023_269_653, 0.001, -5.46875)), 0.053_192_14);
        assert_eq!(r(0.023_269_653_f32 + 0.001 * -5.46875 * -5.46875), 0.053_161_62);
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

    /// `n` f16 values `((i·a + b) mod m − ⌊m/2⌋) / s`, exact in f16 (the script below makes the same).
    fn ramp(n: usize, (a, b, m, s): (usize, usize, usize, f32)) -> Tensor {
        f16(&(0..n).map(|i| ((i * a + b) % m) as f32 - (m / 2) as f32).map(|x| x / s).collect::<Vec<_>>())
    }

    #[test]
    fn sgd_in_f16_and_bf16_rounds_alpha_and_the_tail_of_the_step_as_pytorch() {
        // PyTorch 2.15 on the CPU (AMD EPYC, AVX512 and ATEN_CPU_CAPABILITY=avx2 alike):
        // p = ramp(35, 37, 11, 2001, 1024), g = ramp(35, 53, 7, 1999, 256) in the dtype, then
        // p.add_(g, alpha=-0.1), alpha in the dtype (f16's -0.0999755859375, bf16's -0.10009765625).
        // f16: element 31 is in the vectorized loop, p + α·g rounded once: -0.09991455078125 (the
        // tail's rule gives -0.099853515625, an f32 -0.1 gives -0.0999755859375); element 34 is
        // in the scalar tail (35 % 32 = 3), p + f16(α·g): -0.0537109375 (once: -0.053619384765625).
        // bf16: element 31 is -0.1005859375 (tail's rule: -0.1015625), 33 and 34 in the tail are
        // -0.068359375 and -0.0546875 (once: -0.06884765625 and -0.05419921875), and element 6
        // is -0.486328125 (an f32 -0.1: -0.48828125).
        let o: OptimizerSpec = toml::from_str("kind = \"sgd\"\nlr = 0.1").unwrap();
        let step = |dt: DType| {
            let (p, g) = (ramp(35, (37, 11, 2001, 1024.0)).to_dtype(dt).unwrap(), ramp(35, (53, 7, 1999, 256.0)).to_dtype(dt).unwrap());
            let (new, m, v) = update(&o, 1, &p, &g, None, None).unwrap();
            assert!(m.is_none() && v.is_none());
            new.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
        };
        let new = step(DType::F16);
        assert_eq!((new[31], new[34]), (-0.09991455078125, -0.0537109375));
        let new = step(DType::BF16);
        assert_eq!((new[6], new[31], new[33], new[34]), (-0.486328125, -0.1005859375, -0.068359375, -0.0546875));
    }

    /// FNV-1a of the little-endian bits of each f16 or bf16 tensor, in turn.
    fn fnv(ts: &[&Tensor]) -> u64 {
        let mut h = 0xcbf29ce484222325u64;
        for t in ts {
            let bits: Vec<u16> = match t.dtype() {
                DType::BF16 => t.to_vec1::<half::bf16>().unwrap().iter().map(|x| x.to_bits()).collect(),
                DType::F16 => t.to_vec1::<half::f16>().unwrap().iter().map(|x| x.to_bits()).collect(),
                d => panic!("{d:?} is not f16 or bf16"),
            };
            for byte in bits.iter().flat_map(|b| b.to_le_bytes()) {
                h = (h ^ u64::from(byte)).wrapping_mul(0x100000001b3);
            }
        }
        h
    }

    #[test]
    fn two_f16_and_bf16_steps_have_pytorchs_bits_at_every_size() {
        // PyTorch 2.15 on the CPU (one thread), made by this script, which prints FNV-1a of the
        // parameter's bits and then of its state's (momentum_buffer or exp_avg, then
        // square_avg or exp_avg_sq), after two steps, in f16 and then bf16 (`dt`):
        //   vals = lambda n, a, b, m, s: torch.tensor([((i*a+b) % m - m//2) / s for i in range(n)]).half().to(dt)
        //   p = torch.nn.Parameter(vals(n, 37, 11, 2001, 1024)); opt = <optimizer>([p], ...)
        //   for g in (vals(n, 53, 7, 1999, 256), vals(n, 29, 3, 1997, 256)): p.grad = g; opt.step()
        // The sizes put the split of `add` at 0, 31, 32 (none), 32 + 1, 32 + 31, 64 (none), 64 + 1,
        // 96 + 4; the optimizers cover every `add(…, alpha)` of them and `add_(eps)` (f16's 1e-3 is
        // 0.0010004), Adam's `lerp_` and `addcmul_`, and AdamW's decay.
        let sizes = [1, 31, 32, 33, 63, 64, 65, 100];
        let specs = [
            "kind = \"sgd\"\nlr = 0.1",
            "kind = \"sgd\"\nlr = 0.1\nmomentum = 0.9\nweight_decay = 0.01",
            "kind = \"sgd\"\nlr = 0.1\nmomentum = 0.9\nnesterov = true",
            "kind = \"adam\"\nlr = 0.01\nweight_decay = 0.01\neps = 1e-3",
            "kind = \"adamw\"\nlr = 0.01\nweight_decay = 0.1\neps = 1e-3",
            "kind = \"rmsprop\"\nlr = 0.01\nmomentum = 0.9\neps = 1e-3",
        ];
        let f16s: [[u64; 8]; 6] = [
            [0x08699607b51aca27, 0x34ba4b5405a90494, 0x5b266aa5bb6dcdf8, 0xa794ab98fcf7d653, 0x7897b0c307f3b59d, 0xa43eb38656e25478, 0x78284b534313ece3, 0xdd81abd1a0f8e8ca],
            [0x645e1d97161da7fb, 0xfca00ca9b5d2e722, 0xae91adf4160d377f, 0x91ec6ca3a5dd62b3, 0x7542ef44e147c34d, 0xd85247fc27390dff, 0xa1defdf7e0fdd554, 0x7e100ca5c77cdb44],
            [0xbc9b60397a19bced, 0xc5ff2813fd985df6, 0x8cd8e2017107d954, 0xe9115de7a9d21ba3, 0x7369f33e5be41fd1, 0xc7afdfd6ab62a266, 0xab7221ee11af5ed5, 0x37db376b72b810f7],
            [0x36210ff249785891, 0xe1e18620a73638fe, 0x078afcb8bde44364, 0x49c4d8f1ba3d3b53, 0xef8397a63d0db159, 0x0873add228d19618, 0x21ab62944653fca1, 0xe4af88cb424e2c8e],
            [0x5489ac75b3ad2a7f, 0x1cfa6b4154219b10, 0xef46b3622cd5c70d, 0x6e8d4d7bb3da4472, 0x83199bb6b4c09348, 0xd4cb2569db8107e5, 0x91a82b746246c8e3, 0x31d185b3d4dda9ce],
            [0x586b7a696fcd4abb, 0xfec1da101647252a, 0x81c802463d2f649d, 0x90ddc8e53cf96c4b, 0x987f647c031c5fdb, 0x9ce9ff5cfeeef709, 0xba784269cfebb711, 0x25dac57240d15af4],
        ];
        let bf16s: [[u64; 8]; 6] = [
            [0x09138a07b5ab35c1, 0x0e421dda63283f76, 0x98b028d50e283271, 0x940452fd4cc7ccca, 0x8733b7acb2f3e259, 0x05319a3a45f5a257, 0xcc992a4949730b23, 0x469af29e3d8facab],
            [0x845e9b52c3802ff3, 0x0596ce12d7b1f7ea, 0x57c3c52ce885b71a, 0x3b69288a56f7f719, 0xf2d08f2acd2ccc66, 0xf782907b604f1726, 0x8db870c5acac2e28, 0xbcdeab7ddfa47099],
            [0xb66083fa4aed4598, 0x5cf9b88d8a663944, 0xd39278f5f870961a, 0xfe67e8396c276cab, 0xcc63c79e5cc49005, 0x52993b08bd32a322, 0x2e057e2f73b3bbb9, 0xd64632a4c88c2e70],
            [0x0aa7421777e00b0b, 0xaad61d3ee3e5ec12, 0x6966b20d9f9c07c3, 0x581178e3bd9e0bd8, 0x4a9f63a8be996d9e, 0x7d4e6e94bd0aaf48, 0xe73ac34d1cb091fa, 0xd8a529667b56e2ea],
            [0x873cc3fcf6b24252, 0xe2358f9652a61afe, 0x7c7def053e6c3d47, 0xaf7fe238663becb4, 0x78c876b67eb73c54, 0xd58e2360c2f21673, 0xd4ccc0decd5a6d60, 0x102d098773aa7605],
            [0x9a65646740ced992, 0x2c89df8c1859d48b, 0x12d8c6a7c4706cb6, 0xf3cc67d4d4f7b658, 0x96d3c164a95d5184, 0xd2b5722d9b89b071, 0x1d647b686a16ee41, 0x5e9f64bbac74c235],
        ];
        for (dt, wants) in [(DType::F16, f16s), (DType::BF16, bf16s)] {
            for (spec, want) in specs.into_iter().zip(wants) {
                let o: OptimizerSpec = toml::from_str(spec).unwrap();
                for (n, want) in sizes.into_iter().zip(want) {
                    let vals = |shape| ramp(n, shape).to_dtype(dt).unwrap();
                    let mut p = vals((37, 11, 2001, 1024.0));
                    let (mut m, mut v) = (None, None);
                    for (step, g) in [(1, vals((53, 7, 1999, 256.0))), (2, vals((29, 3, 1997, 256.0)))] {
                        (p, m, v) = update(&o, step, &p, &g, m.as_ref(), v.as_ref()).unwrap();
                    }
                    let all: Vec<&Tensor> = [Some(&p), m.as_ref(), v.as_ref()].into_iter().flatten().collect();
                    assert_eq!(fnv(&all), want, "{dt:?}, {spec:?}, {n} elements");
                }
            }
        }
    }
}
