//! `normalize`: `F.normalize(x, p, dim=-1, eps)`, `x / max(‖x‖_p, eps)` over each row's
//! features, forward and backward as PyTorch computes it.
//!
//! `F.normalize` (`torch/nn/functional.py`) is `input / input.norm(p, dim,
//! keepdim=True).clamp_min(eps).expand_as(input)`; `Tensor.norm` calls
//! `torch.linalg.vector_norm` on the CPU. So the forward is three ops, each stored in the
//! input's dtype, and the backward is autograd through them (`derivatives.yaml`):
//! - the division: `grad / d` for `x` and `-grad * ((x / d) / d)` for `d`, summed over the
//!   row (the `expand`'s backward, in f32 for f16 and bf16);
//! - `clamp_min(eps)`: that sum where the norm is above `eps` (strictly), else 0, so a norm at
//!   or below `eps` blocks the gradient through the norm;
//! - the norm (`norm_backward` in `FunctionsManual.cpp`): for p = 2 `grad * (x / ‖x‖)` with
//!   the quotient set to 0 where `‖x‖ = 0` (a row of zeros gets 0, not NaN); p = 1
//!   `sgn(x) * grad`; other p its `pow` forms, masked alike;
//! - the two gradients of `x` added.
//!
//! `eps` is converted to the input's dtype, so in f16 the default 1e-12 is 0 (f16's smallest
//! subnormal is 6e-8): a row of zeros is 0/0 = NaN forward and g/0 = ±∞ backward, in PyTorch
//! and here; in f32 and bf16 it stays positive and the same row gives 0 and g/eps.
//! The norm accumulates in f32 for f16, bf16 and f32 (`norm_kernel_tensor_iterator_impl`),
//! so an f16 row of 60000s has a finite sum of squares; its norm (over 65504) is then stored
//! as +∞ and the output is 0, in both. For p = 2 the sum is taken in PyTorch 2.15's measured
//! order on x86 (eight lanes, then the remaining values, fused multiply-adds after the first
//! four of them), so f32 norms are its bits; the backward's row sum is in eight lanes, as
//! PyTorch's for widths up to 3 and multiples of 8 (others may differ in the last place).
//! A row of one value takes `vector_norm`'s `abs` shortcut.
//!
//! One CPU op each way over rows of the last dimension; other devices compose Candle's ops.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Tensor, WithDType, D};

use super::diagnosis::{round, Rule};
use super::rounding::Rounding;
use super::{Autocast, Elementwise, Explained, Facts};
use crate::error::Result;
use crate::run::kernel::{sum, Real};
use crate::scenario::Shape;

/// `F.normalize(x, p, dim=-1, eps)`: each row's features divided by their p-norm, at least
/// `eps`. The dimension is always the last (nanhunt's layers act on it): the features of a
/// flat input, where F.normalize's default `dim=1` is the same dimension, and each position's
/// features in a sequence. Images are refused (F.normalize's `dim=1` would be their channels).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Normalize {
    /// The norm's exponent, finite and above 0 (PyTorch's default 2).
    #[serde(default = "two")]
    pub p: f64,
    /// The smallest divisor, finite and at least 0 (PyTorch's default 1e-12), converted to the
    /// input's dtype as PyTorch converts it: 0 in f16.
    #[serde(default = "eps")]
    pub eps: f64,
}

fn two() -> f64 {
    2.0
}

fn eps() -> f64 {
    1e-12
}

impl Default for Normalize {
    fn default() -> Self {
        Normalize { p: two(), eps: eps() }
    }
}

/// `F.normalize(x, p, dim=-1, eps)` with PyTorch's roundings and backward.
pub(crate) fn normalize(x: &Tensor, p: f64, eps: f64) -> Result<Tensor> {
    if !x.device().is_cpu() {
        let norm = x.abs()?.powf(p)?.sum_keepdim(D::Minus1)?.powf(1.0 / p)?;
        return Ok(x.broadcast_div(&norm.maximum(eps)?)?);
    }
    Ok(x.contiguous()?.apply_op1(Rows { p, eps, dtype: x.dtype() })?)
}

/// The accumulation type of a norm (PyTorch's opmath): f32, or f64 for f64 tensors.
trait Acc: Real {
    /// `self^e`.
    fn pow(self, e: Self) -> Self;
}

impl Acc for f32 {
    fn pow(self, e: Self) -> Self {
        self.powf(e)
    }
}

impl Acc for f64 {
    fn pow(self, e: Self) -> Self {
        self.powf(e)
    }
}

/// `‖row‖_p` accumulated in `T`, as `torch.linalg.vector_norm` over the last dimension.
fn norm<T: Acc>(row: &[f64], p: f64) -> f64 {
    let v: Vec<T> = row.iter().map(|x| T::from_f64(x.abs())).collect();
    if let [x] = v[..] {
        return x.to_f64();
    }
    if p == 2.0 {
        let full = v.len() / 8 * 8;
        let mut lanes = [T::zero(); 8];
        for chunk in v[..full].chunks_exact(8) {
            for (l, x) in lanes.iter_mut().zip(chunk) {
                *l += *x * *x;
            }
        }
        let mut s = lanes.iter().skip(1).fold(lanes[0], |s, l| s + *l);
        let rest = &v[full..];
        for (j, x) in rest.iter().enumerate() {
            s = if rest.len() >= 4 && j < 4 { s + *x * *x } else { x.fma(*x, s) };
        }
        return s.sqrt().to_f64();
    }
    if p == 1.0 {
        return v.iter().fold(T::zero(), |s, x| s + *x).to_f64();
    }
    let e = T::from_f64(p);
    v.iter().fold(T::zero(), |s, x| s + x.pow(e)).pow(T::one() / e).to_f64()
}

/// The norm and divisor of a row, stored in the dtype, and `eps` as the dtype holds it.
struct Row {
    norm: f64,
    divisor: f64,
    eps: f64,
}

impl Rows {
    fn row(&self, x: &[f64], r: Rounding) -> Row {
        let n = if self.dtype == DType::F64 { norm::<f64>(x, self.p) } else { norm::<f32>(x, self.p) };
        let norm = (r.store)(n);
        let eps = (r.store)(self.eps);
        // clamp_min keeps a NaN norm.
        Row { norm, divisor: if norm < eps { eps } else { norm }, eps }
    }

    /// The gradient of one row of `x` from the upstream gradient `g`, as autograd computes it.
    fn backward(&self, g: &[f64], x: &[f64], out: &mut [f64]) {
        let r = Rounding::of(self.dtype);
        let s = r.store;
        let Row { norm, divisor: d, eps } = self.row(x, r);
        let through_d: Vec<f64> = g.iter().zip(x).map(|(g, x)| s(-g * s(s(x / d) / d))).collect();
        let total = if self.dtype == DType::F64 { sum(&through_d) } else { f64::from(sum(&through_d.iter().map(|v| *v as f32).collect::<Vec<_>>())) };
        // clamp_min(eps)'s backward: `where(norm > eps, grad, 0)`.
        let gn = if norm > eps { s(total) } else { 0.0 };
        for ((o, g), x) in out.iter_mut().zip(g).zip(x) {
            *o = s(s(g / d) + self.through_norm(gn, *x, norm, r));
        }
    }

    /// `norm_backward`: the gradient reaching `x` through `‖x‖_p` from the norm's gradient `gn`.
    fn through_norm(&self, gn: f64, x: f64, n: f64, r: Rounding) -> f64 {
        let (s, p) = (r.store, self.p);
        let sgn = f64::from(u8::from(0.0 < x)) - f64::from(u8::from(x < 0.0));
        let pow = |v: f64, e: f64| r.kernel(v.powf(e));
        // `scale_v.masked_fill_(norm == 0, 0)`.
        let scale = |v: f64| if n == 0.0 { 0.0 } else { v };
        if p == 2.0 {
            s(gn * scale(s(x / n)))
        } else if p == 1.0 {
            s(sgn * gn)
        } else if p < 1.0 {
            let scaled = if x == 0.0 { 0.0 } else { s(sgn * pow(x.abs(), p - 1.0)) };
            s(s(scaled * gn) * pow(n, 1.0 - p))
        } else if p < 2.0 {
            s(s(sgn * pow(x.abs(), p - 1.0)) * scale(s(gn / pow(n, p - 1.0))))
        } else {
            s(s(x * pow(x.abs(), p - 2.0)) * scale(s(gn / pow(n, p - 1.0))))
        }
    }
}

/// A contiguous storage's values as f64.
fn values(s: &CpuStorage, l: &Layout, what: &str) -> candle_core::Result<Vec<f64>> {
    fn wide<T: WithDType>(v: &[T]) -> Vec<f64> {
        v.iter().map(|x| x.to_f64()).collect()
    }
    let Some((a, b)) = l.contiguous_offsets() else { candle_core::bail!("{what}: input must be contiguous") };
    Ok(match s {
        CpuStorage::F32(v) => wide(&v[a..b]),
        CpuStorage::F64(v) => wide(&v[a..b]),
        CpuStorage::F16(v) => wide(&v[a..b]),
        CpuStorage::BF16(v) => wide(&v[a..b]),
        _ => candle_core::bail!("{what}: unsupported dtype"),
    })
}

/// `v` (values of `dtype`) as a storage of `dtype`.
fn storage(v: &[f64], dtype: DType) -> CpuStorage {
    fn narrow<T: WithDType>(v: &[f64]) -> CpuStorage {
        T::to_cpu_storage_owned(v.iter().map(|x| T::from_f64(*x)).collect())
    }
    match dtype {
        DType::F16 => narrow::<half::f16>(v),
        DType::BF16 => narrow::<half::bf16>(v),
        DType::F32 => narrow::<f32>(v),
        _ => narrow::<f64>(v),
    }
}

/// The row width of a layout (its last dimension, at least 1).
fn width(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1).max(1)
}

/// `F.normalize` over the rows of the last dimension, in `dtype`.
#[derive(Clone, Copy)]
struct Rows {
    p: f64,
    eps: f64,
    dtype: DType,
}

impl CustomOp1 for Rows {
    fn name(&self) -> &'static str {
        "normalize"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, candle_core::Shape)> {
        let x = values(s, l, "normalize")?;
        let r = Rounding::of(self.dtype);
        let mut y = vec![0.0; x.len()];
        for (row, out) in x.chunks(width(l)).zip(y.chunks_mut(width(l))) {
            let d = self.row(row, r).divisor;
            for (o, x) in out.iter_mut().zip(row) {
                *o = (r.store)(x / d);
            }
        }
        Ok((storage(&y, self.dtype), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op2_no_bwd(&arg.contiguous()?, &RowsGrad(*self))?))
    }
}

/// The gradient of [`Rows`], from the upstream gradient and the forward's input.
struct RowsGrad(Rows);

impl CustomOp2 for RowsGrad {
    fn name(&self) -> &'static str {
        "normalize-backward"
    }

    fn cpu_fwd(&self, g: &CpuStorage, gl: &Layout, x: &CpuStorage, xl: &Layout) -> candle_core::Result<(CpuStorage, candle_core::Shape)> {
        let (g, x) = (values(g, gl, "normalize backward")?, values(x, xl, "normalize backward")?);
        let w = width(xl);
        let mut out = vec![0.0; x.len()];
        for ((g, x), o) in g.chunks(w).zip(x.chunks(w)).zip(out.chunks_mut(w)) {
            self.0.backward(g, x, o);
        }
        Ok((storage(&out, self.0.dtype), xl.shape().clone()))
    }
}

impl Elementwise for Normalize {
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(self.p.is_finite() && self.p > 0.0) {
            out.push(("p", format!("must be a finite number above 0, got {} (p = inf, the max norm, is not supported)", self.p)));
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            out.push(("eps", format!("must be a finite number at least 0, got {}", self.eps)));
        }
        out
    }

    fn shape(&self, input: Shape) -> std::result::Result<Shape, String> {
        match input {
            Shape::Image { .. } => Err(format!("a normalize layer cannot take {}: put a flatten layer first", input.describe())),
            Shape::Flat(_) | Shape::Seq { .. } | Shape::Tokens { .. } => Ok(input),
        }
    }

    fn held(&self, _input: Shape, output: u128) -> u128 {
        output
    }

    fn levels(&self) -> (u64, u64) {
        // One op on the CPU; elsewhere the six of the composed form.
        (8, 0)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        normalize(x, self.p, self.eps)
    }

    fn autocast(&self) -> Autocast {
        // Under CUDA autocast `linalg_vector_norm` is on `AT_FORALL_FP32_SET_OPT_DTYPE` (and
        // `norm` on `AT_FORALL_DIFFERENT_REDISPATCH_SIGNATURE`, `fp32_append_dtype`) in
        // `aten/src/ATen/autocast_mode.h`: the norm is computed and returned in f32, so
        // `clamp_min` runs in f32 (eps stays 1e-12) and `x / norm` promotes to f32.
        Autocast::F32
    }

    fn explain_forward(&self, f: &Facts) -> Explained {
        let dt: &str = f.dtype.into();
        if f.x.is_infinite() {
            let reason = format!("an infinite value makes its row's norm infinite, and x / ‖x‖ = {} / ∞ = NaN there", crate::human(f.x));
            return Some((Rule::OutsideDomain, reason));
        }
        if f.x != 0.0 {
            return None;
        }
        if self.eps == 0.0 {
            return Some((Rule::DivisionByZero, "eps = 0: a row of zeros is 0 / max(0, 0) = 0/0 = NaN".to_string()));
        }
        (round(self.eps, f.dtype) == 0.0).then(|| {
            let reason = format!(
                "eps = {} rounds to 0 in {dt} (its smallest subnormal is {}), as PyTorch converts it: a row of zeros is 0 / max(0, 0) = 0/0 = NaN",
                crate::human(self.eps),
                crate::human(f.lim.min_subnormal)
            );
            (Rule::EpsRoundsToZero, reason)
        })
    }

    /// From a finite input and gradient, the backward can only overflow (or make 0/0) by
    /// dividing by a small `max(‖x‖, eps)`: `g / d` and `((x / d) / d) · g` are at most `|g| / d`.
    fn explain_backward(&self, f: &Facts) -> Explained {
        if !(f.x.is_finite() && f.grad.is_finite()) {
            return None;
        }
        let dt: &str = f.dtype.into();
        let eps = round(self.eps, f.dtype);
        let floor = (f.grad.abs() / f.lim.max).max(f.lim.min_subnormal);
        if eps == 0.0 {
            let (rule, why) = if self.eps == 0.0 {
                (Rule::DivisionByZero, "eps = 0".to_string())
            } else {
                (Rule::EpsRoundsToZero, format!("eps = {} rounds to 0 in {dt} (its smallest subnormal is {})", crate::human(self.eps), crate::human(f.lim.min_subnormal)))
            };
            let reason = format!(
                "{why}, so nothing keeps max(‖x‖, eps) from 0: a row of zeros, or one whose norm is below {}, divides the gradient g = {} by 0 or by so little that it passes {dt}'s largest value",
                crate::human(floor),
                crate::human(f.grad)
            );
            return Some((rule, reason));
        }
        (f.grad.abs() / eps > f.lim.max).then(|| {
            let reason =
                format!("a row whose norm is at most eps = {} divides the gradient g = {} by it, past {dt}'s largest value {}", crate::human(eps), crate::human(f.grad), crate::human(f.lim.max));
            (Rule::Overflow, reason)
        })
    }

    fn explain_zeros(&self, zeros: usize, _n: usize) -> Explained {
        (zeros > 0 && self.eps == 0.0).then(|| (Rule::DivisionByZero, format!("eps = 0, and {zeros} of the values it read are exactly 0: a row of zeros divides its gradient by 0")))
    }

    fn torch(&self) -> String {
        format!("F.normalize(x, p={}, dim=-1, eps={})", super::py(self.p), super::py(self.eps))
    }
}

#[cfg(test)]
mod tests;
