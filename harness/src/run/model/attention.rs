//! The kernels of multi-head self-attention (the op, its plan and autocast
//! class are `ops::attention`), in three watched steps (see `scenario::Part`):
//! scores `q kᵀ / sqrt(d)`, probabilities (mask, then softmax), and the mix of
//! values through the output projection, written as a manual PyTorch
//! attention is (nanoGPT's non-flash path): `(q @ k.transpose(-2, -1)) * scale`,
//! `masked_fill`, `softmax`, `@ v`.
//!
//! Masks come from causality (key after query) and from padding (key past the
//! row's length). A fully masked row is all `-inf` with `mask_fill = neg_inf`,
//! and the plain softmax's `exp(-inf − (-inf))` is NaN there; the safe softmax
//! (`torch._safe_softmax`) gives zeros, with zero gradient.
//!
//! On the CPU the two products per head are `kernel::heads`' (no head splitting
//! copies; f16 and bf16 in f32, each result rounded once, as PyTorch's CPU
//! matmul accumulates them), and the masked softmax is `kernel::softmax`'s;
//! other devices compose them from Candle's ops. The scores' scale multiplies
//! inside the product, so in half types `(q kᵀ)·scale` is rounded once, where
//! PyTorch rounds the product and then the scaled value (the same where the
//! scale is a power of 2, as for heads of 4, 16 or 64 values).

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::ops::linear::linear;
use crate::run::kernel::heads;
use crate::run::kernel::linear::linear_rounded;
use crate::scenario::{MaskFill, SoftmaxKind};

/// `(rows·seq, w)` projected and split into heads: `(batch, heads, seq, w / heads)`.
fn heads_of(flat: &Tensor, w: &Tensor, b: &Tensor, (batch, seq, heads): (usize, usize, usize)) -> Result<Tensor> {
    let width = w.dims()[1];
    Ok(linear(flat, w, b)?.reshape((batch, seq, heads, width / heads))?.transpose(1, 2)?.contiguous()?)
}

/// Whether the products run on `kernel::heads`: on the CPU, f32 and f64 directly, f16 and bf16
/// in f32 with each product rounded once (q, k and v are rounded by their projections).
fn on_cpu_kernels(h: &Tensor) -> bool {
    h.device().is_cpu() && matches!(h.dtype(), DType::F32 | DType::F64 | DType::F16 | DType::BF16)
}

pub(super) use crate::ops::Inner;

impl Inner {
    fn apply(self, t: &Tensor) -> Result<Tensor> {
        match self {
            Inner::Off => Ok(t.clone()),
            Inner::Round(d) => crate::run::kernel::cast::round(t, d),
            Inner::Cast(d) => crate::run::kernel::cast::cast(t, d),
        }
    }
}

/// A projection `h W + b` under autocast: its own cast of `h`, as each `linear` call under
/// PyTorch's autocast casts its input (so each projection's gradient is rounded on its own),
/// and a low result.
fn projection(h: &Tensor, w: &Tensor, b: &Tensor, inner: Inner) -> Result<Tensor> {
    match inner {
        Inner::Round(low) => linear_rounded(&inner.apply(h)?, w, b, low),
        _ => inner.apply(&linear(&inner.apply(h)?, w, b)?),
    }
}

/// Scaled scores `(batch, heads, seq, seq)` of `h` `(batch, seq, w)`. Under autocast (`inner`)
/// q and k are low; the caller rounds or casts the scores.
pub(crate) fn scores(h: &Tensor, (wq, bq, wk, bk): (&Tensor, &Tensor, &Tensor, &Tensor), heads: usize, inner: Inner) -> Result<Tensor> {
    if on_cpu_kernels(h) {
        let (q, k) = (projection(h, wq, bq, inner)?, projection(h, wk, bk, inner)?);
        return crate::run::opmath::all_in_f32(&[&q, &k], |t| heads::scores(&t[0], &t[1], heads));
    }
    let (b, s, w) = h.dims3()?;
    let (hq, hk) = (inner.apply(h)?.reshape((b * s, w))?, inner.apply(h)?.reshape((b * s, w))?);
    let q = heads_of(&hq, wq, bq, (b, s, heads))?;
    let k = heads_of(&hk, wk, bk, (b, s, heads))?;
    let scale = 1.0 / ((w / heads) as f64).sqrt();
    Ok((q.matmul(&k.transpose(2, 3)?.contiguous()?)? * scale)?)
}

/// The masked scores through the softmax. `mask` is `(batch, seq)`, 1 where a key holds data.
pub(crate) fn probs(scores: &Tensor, mask: Option<&Tensor>, causal: bool, fill: MaskFill, softmax: SoftmaxKind) -> Result<Tensor> {
    let (b, heads, s, _) = scores.dims4()?;
    if scores.device().is_cpu() {
        // One fused pass each way (`kernel::softmax`), the same function as below.
        // Padding is at the end of each row (`data.padding`), so a length per example says it all.
        let lengths = mask.map(|m| -> Result<Vec<usize>> { Ok(m.to_dtype(DType::F64)?.sum(1)?.to_vec1::<f64>()?.into_iter().map(|v| v as usize).collect()) }).transpose()?;
        let fill = match fill {
            MaskFill::NegInf => f64::NEG_INFINITY,
            MaskFill::FiniteMin => lowest(scores.dtype()),
        };
        let m = crate::run::kernel::softmax::Mask { heads, causal, lengths, fill, safe: softmax == SoftmaxKind::Safe };
        return crate::run::kernel::softmax::masked_softmax(scores, m);
    }
    let dev = scores.device();
    let future = causal.then(|| Tensor::from_vec((0..s * s).map(|k| u8::from(k % s > k / s)).collect::<Vec<u8>>(), (1, 1, s, s), dev)).transpose()?;
    let padded = mask.map(|m| m.eq(0.0)?.reshape((b, 1, 1, s))).transpose()?;
    let masked = match (future, padded) {
        (Some(f), Some(p)) => Some(f.broadcast_maximum(&p)?),
        (f, p) => f.or(p),
    };
    let filled = match masked {
        Some(m) => {
            let value = match fill {
                MaskFill::NegInf => f64::NEG_INFINITY,
                MaskFill::FiniteMin => lowest(scores.dtype()),
            };
            let fill = Tensor::full(value, (), dev)?.to_dtype(scores.dtype())?.broadcast_as(scores.shape())?;
            m.broadcast_as(scores.shape())?.where_cond(&fill, scores)?
        }
        None => scores.clone(),
    };
    match softmax {
        SoftmaxKind::Plain => crate::run::kernel::activation::softmax(&filled),
        SoftmaxKind::Safe => safe_softmax(&filled),
    }
}

/// `torch.finfo(dtype).min`.
fn lowest(d: DType) -> f64 {
    match d {
        DType::F16 => half::f16::MIN.to_f64(),
        DType::BF16 => half::bf16::MIN.to_f64(),
        DType::F32 => f64::from(f32::MIN),
        _ => f64::MIN,
    }
}

/// Softmax whose rows of all `-inf` give zeros (`torch._safe_softmax`). Other rows are the
/// plain softmax bit for bit. Its backward is finite: a fully masked row subtracts 0 instead
/// of `-inf` and divides by 1 instead of 0, so no NaN enters the graph.
fn safe_softmax(h: &Tensor) -> Result<Tensor> {
    crate::run::opmath::in_f32(h, |h| {
        let max = h.max_keepdim(D::Minus1)?.detach();
        let empty = max.eq(f64::NEG_INFINITY)?;
        let max = empty.where_cond(&max.zeros_like()?, &max)?;
        let e = h.broadcast_sub(&max)?.exp()?;
        let sum = e.sum_keepdim(D::Minus1)?;
        let sum = empty.where_cond(&sum.ones_like()?, &sum)?;
        Ok(e.broadcast_div(&sum)?)
    })
}

/// The probabilities times the values of `h`, heads merged, through the output projection.
/// Under autocast (`inner`) v and the product are low; the caller casts the probabilities and
/// rounds or casts the output.
pub(crate) fn mix(probs: &Tensor, h: &Tensor, (wv, bv, wo, bo): (&Tensor, &Tensor, &Tensor, &Tensor), heads: usize, inner: Inner) -> Result<Tensor> {
    if on_cpu_kernels(h) {
        let v = projection(h, wv, bv, inner)?;
        let mixed = inner.apply(&crate::run::opmath::all_in_f32(&[&v, probs], |t| heads::mix(&t[1], &t[0], heads))?)?;
        // The output projection rounds its result itself; the caller's rounding then changes nothing.
        return match inner {
            Inner::Round(low) => linear_rounded(&mixed, wo, bo, low),
            _ => linear(&mixed, wo, bo),
        };
    }
    let (b, s, w) = h.dims3()?;
    let v = heads_of(&inner.apply(h)?.reshape((b * s, w))?, wv, bv, (b, s, heads))?;
    let y = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((b * s, w))?;
    Ok(linear(&y, wo, bo)?.reshape((b, s, w))?)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use crate::ops::attention::Attention;
    use crate::run::model::Model;
    use crate::run::net::Net;
    use crate::scenario::{plan, InShape, Init, Layer, MaskFill, ModelSpec, SoftmaxKind};

    const B: usize = 2;
    const S: usize = 3;
    const W: usize = 4;

    /// A two-head attention of width 4 with the weights of the PyTorch snippet below, run on
    /// its input with `mask`; returns the output and the gradients of `sum(out²) / 2`.
    fn run(causal: bool, softmax: SoftmaxKind, mask: &[f64]) -> (Vec<f64>, Vec<Vec<f64>>) {
        let dev = Device::Cpu;
        let spec = ModelSpec {
            init: Init::Constant { value: 0.0 },
            layers: vec![Layer::Attention(Attention { heads: 2, causal, mask_fill: MaskFill::NegInf, softmax })],
            init_scale: 1.0,
            code: None,
            onnx: None,
        };
        let p = plan(&spec, InShape { features: W, seq_len: Some(S), vocab: None, image: None }).unwrap();
        let m = Model::new(&spec, &p, &mut ChaCha8Rng::seed_from_u64(0), DType::F64, &dev).unwrap();
        for (k, param) in m.params.iter().enumerate() {
            let phase = (k / 2 + 1) as f64;
            let v: Vec<f64> = if k % 2 == 0 { (0..W * W).map(|i| 0.5 * (phase + i as f64).sin()).collect() } else { (0..W).map(|j| 0.1 * (phase + j as f64).cos()).collect() };
            param.var.set(&Tensor::from_vec(v, param.var.dims(), &dev).unwrap()).unwrap();
        }
        let x: Vec<f64> = (0..B * S * W).map(|i| ((i / (S * W)) as f64 * 12.0 + ((i / W) % S) as f64 * 4.0 + (i % W) as f64 + 0.5).sin()).collect();
        let x = Tensor::from_vec(x, (B, S, W), &dev).unwrap();
        let mask = Tensor::from_vec(mask.to_vec(), (B, S), &dev).unwrap();
        let out = m.forward(&x, Some(&mask)).unwrap().pop().unwrap();
        let grads = (out.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap().backward().unwrap();
        let g = |k: usize| grads.get(m.params[k].var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        (out.flatten_all().unwrap().to_vec1().unwrap(), vec![g(0), g(3), g(6)])
    }

    fn close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() < 1e-14, "[{i}]: {a} vs PyTorch {b}");
        }
    }

    /// PyTorch 2.15, f64: `x[b][t][f] = sin(12b + 4t + f + 0.5)`; weights (nanhunt's `(in, out)`
    /// layout) `0.5 sin(p + 4i + j)` and biases `0.1 cos(p + j)` with p = 1, 2, 3, 4 for q, k, v, o;
    /// `split = reshape(B, S, 2, 2).transpose(1, 2)`; `scores = (q @ kᵀ) / sqrt(2)`, masked_fill
    /// (causal | padding, -inf), `torch.softmax` (or `torch._safe_softmax`), `(p @ v)` merged,
    /// `@ wo + bo`; loss `(out ** 2).sum() / 2`; `out.flatten()`, `wq.grad`, `bk.grad`, `wo.grad`.
    #[test]
    fn causal_padded_attention_matches_pytorch() {
        let (out, g) = run(true, SoftmaxKind::Plain, &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
        close(&out[..8], &[-0.04754374994044295, 0.10215946959428603, 0.15793774391656065, 0.06850878484917292, -0.08182858326193927, 0.038031347220372505, 0.12292543245881754, 0.09480244199430227]);
        close(&out[20..], &[-0.09106383146303634, 0.023573517061242555, 0.11653748271425891, 0.10235742419992258]);
        close(&g[0][..6], &[0.0003506569782420728, 0.0007662203129393351, -0.00040910201310139036, 0.0007545425631407992, -0.003977666115951021, -0.00035630226370835785]);
        // Adding the same key bias to every score of a row leaves the softmax unchanged: 0 (to rounding).
        assert!(g[1].iter().all(|v| v.abs() < 1e-15), "{:?}", g[1]);
        close(&g[2][12..], &[-0.07794316685848963, 0.06133208000871656, 0.14421889536328722, 0.09451152342036354]);
    }

    #[test]
    fn a_fully_masked_row_is_nan_with_the_plain_softmax_and_zero_with_the_safe_one() {
        let mask = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0];
        let (out, g) = run(false, SoftmaxKind::Plain, &mask);
        assert!(out[..12].iter().all(|v| v.is_finite()) && out[12..].iter().all(|v| v.is_nan()));
        // As in PyTorch 2.15 (same snippet, plain softmax): masked_fill's backward zeroes the
        // masked scores' gradient, so q's weights stay finite; the NaN probabilities reach the
        // values and the output projection (0 · NaN = NaN), which PyTorch also gives.
        assert!(g[0].iter().all(|v| v.is_finite()), "{:?}", g[0]);
        assert!(g[2].iter().all(|v| v.is_nan()), "{:?}", g[2]);
        let (out, g) = run(false, SoftmaxKind::Safe, &mask);
        // The masked row's probabilities are 0, so its output is the output bias: 0.1 cos(4 + j).
        close(&out[12..16], &[-0.06536436208636119, 0.028366218546322625, 0.0960170286650366, 0.07539022543433047]);
        close(&out[..4], &[-0.08117878155900267, 0.040927100098139366, 0.1254047946700444, 0.0945858993561518]);
        close(&g[0][..4], &[0.0007322211664378439, -0.00011858697579995059, 0.0009373998524359322, 0.0008837539275125558]);
    }
}
