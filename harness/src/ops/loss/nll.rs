//! PyTorch's `nll_loss` reduction, which `F.cross_entropy` with class indices runs (the
//! `info_nce` loss here): on the CPU it sums the rows' losses in the input's own dtype, with an
//! 8-level cascade (`LossNLL.cpp`, `nll_loss_out_frame`), and divides by the row count in that
//! dtype. So in f16 a mean whose sum passes 65504 is inf although the mean itself fits: PyTorch
//! 2.15 gives `F.cross_entropy` of 16 f16 rows whose losses are 3420 as 3422, and of 20 rows as inf.

use candle_core::{DType, Tensor};
use half::{bf16, f16};

use crate::error::Result;
use crate::run::opmath::{div_count, in_f32};
use crate::scenario::Reduction;

/// The cascade's levels (`cascade_sum_num_levels`).
const LEVELS: usize = 8;

/// PyTorch's `CeilLog2` (1 for up to 2).
fn ceil_log2(n: usize) -> usize {
    if n <= 2 {
        1
    } else {
        (usize::BITS - (n - 1).leading_zeros()) as usize
    }
}

/// The cascade sum of `v`, each addition made in f32 and rounded by `round`, as PyTorch's
/// `scalar_t` arithmetic does for a half type: level 0 takes each value, and after value `b`
/// every level `j` whose block of `2^power` is complete is added into level `j + 1`. A row
/// not `kept` (its target `ignore_index`) is skipped before either, as `nll_loss_out_frame` does.
pub(super) fn cascade(v: &[f32], kept: impl Fn(usize) -> bool, round: impl Fn(f32) -> f32) -> f32 {
    let power = (ceil_log2(v.len()) / LEVELS).max(4);
    let mask = (1usize << power) - 1;
    let mut sums = [0f32; LEVELS];
    for (b, &x) in v.iter().enumerate() {
        if !kept(b) {
            continue;
        }
        sums[0] = round(sums[0] + x);
        for j in 0..LEVELS - 1 {
            if b & (mask << (j * power)) != 0 {
                break;
            }
            sums[j + 1] = round(sums[j + 1] + sums[j]);
            sums[j] = 0.0;
        }
    }
    sums.iter().fold(0.0, |acc, &s| round(acc + s))
}

/// The per-row losses `rows` reduced as PyTorch's `nll_loss` reduces them. In f16 and bf16 the
/// value is the cascade's in the dtype; its gradient is the f32 reduction's (`1/N` or 1 per
/// row, PyTorch's backward), whose value it replaces. Other dtypes reduce as every loss does.
pub(super) fn reduce(r: Reduction, rows: &Tensor) -> Result<Tensor> {
    reduce_kept(r, rows, None)
}

/// [`reduce`] over the rows `kept` (all when `None`; the others' targets are `ignore_index`):
/// an ignored row adds nothing and gets a zero gradient, and a mean divides by the kept rows'
/// count, so with none kept it is 0/0 = NaN with a zero gradient, as in PyTorch 2.15.
pub(super) fn reduce_kept(r: Reduction, rows: &Tensor, kept: Option<&[bool]>) -> Result<Tensor> {
    let count = kept.map_or(rows.elem_count(), |k| k.iter().filter(|k| **k).count());
    let rows = match kept {
        Some(k) => {
            let mask = Tensor::from_iter(k.iter().map(|&b| u8::from(b)), rows.device())?.reshape(rows.shape())?;
            mask.where_cond(rows, &rows.zeros_like()?)?
        }
        None => rows.clone(),
    };
    let carrier = match r {
        Reduction::Mean => in_f32(&rows, |e| div_count(&e.sum_all()?, count))?,
        Reduction::Sum => in_f32(&rows, |e| Ok(e.sum_all()?))?,
    };
    let round: fn(f32) -> f32 = match rows.dtype() {
        DType::F16 => |x| f16::from_f32(x).to_f32(),
        DType::BF16 => |x| bf16::from_f32(x).to_f32(),
        // f32 and f64 reduce as every loss does (their cascade parts from it in the last place only).
        _ => return Ok(carrier),
    };
    let v: Vec<f32> = rows.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    let sum = cascade(&v, |b| kept.is_none_or(|k| k[b]), round);
    let value = match r {
        Reduction::Mean => round(sum / round(count as f32)),
        Reduction::Sum => sum,
    };
    // A sum past the dtype's range rounds the carrier to ±Inf, and `value − carrier` would be
    // ∞ − ∞ = NaN where PyTorch gives the cascade's value (+Inf for 20 rows of 3420 in f16): the
    // carrier is then the f32 reduction, unrounded, whose gradient is the same.
    let carrier = match carrier.to_dtype(DType::F32)? {
        c if c.to_scalar::<f32>()?.is_finite() => c,
        _ => {
            let wide = rows.to_dtype(DType::F32)?.sum_all()?;
            match r {
                Reduction::Mean => div_count(&wide, count)?,
                Reduction::Sum => wide,
            }
        }
    };
    let shift = (Tensor::new(value, rows.device())? - carrier.detach())?.detach();
    Ok((carrier + shift)?.to_dtype(rows.dtype())?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    fn half_rows(n: usize, v: f32) -> Var {
        Var::from_tensor(&Tensor::new(vec![v; n], &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap()).unwrap()
    }

    fn scalar(t: &Tensor) -> f32 {
        t.to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn a_half_mean_overflows_where_pytorchs_cascade_does() {
        // PyTorch 2.15, f16 logits [0, 3420] with target 0 (each row's loss 3420):
        // F.cross_entropy of 16 rows = 3422, of 20 rows = inf; in f32 both are 3420.
        let sixteen = half_rows(16, 3420.0);
        let m = reduce(Reduction::Mean, sixteen.as_tensor()).unwrap();
        assert_eq!((m.dtype(), scalar(&m)), (DType::F16, 3422.0));
        let g = m.backward().unwrap();
        let grad: Vec<f32> = g.get(sixteen.as_tensor()).unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap();
        assert!(grad.iter().all(|&x| x == 0.0625), "the mean's gradient is 1/16 per row: {grad:?}");
        assert!(scalar(&reduce(Reduction::Mean, half_rows(20, 3420.0).as_tensor()).unwrap()).is_infinite());
        // PyTorch 2.15: the sum of the 16 rows is 54752 (3420 added in f16, rounding on the way;
        // 54752 / 16 = 3422); the f32 reduction of the 20 rows is finite.
        assert_eq!(scalar(&reduce(Reduction::Sum, half_rows(16, 3420.0).as_tensor()).unwrap()), 54752.0);
        assert!(scalar(&super::super::reduce(Reduction::Mean, half_rows(20, 3420.0).as_tensor()).unwrap()).is_finite());
        // PyTorch 2.15: the sum of the 20 rows is inf (68400 by hand), not NaN, with a gradient of
        // 1 per row; 19 rows sum to 65024 in its cascade, though their f32 sum (64980) is not.
        let twenty = half_rows(20, 3420.0);
        let s = reduce(Reduction::Sum, twenty.as_tensor()).unwrap();
        assert_eq!(scalar(&s), f32::INFINITY);
        let grad: Vec<f32> = s.backward().unwrap().get(twenty.as_tensor()).unwrap().to_dtype(DType::F32).unwrap().to_vec1().unwrap();
        assert!(grad.iter().all(|&x| x == 1.0), "{grad:?}");
        assert_eq!(scalar(&reduce(Reduction::Sum, half_rows(19, 3420.0).as_tensor()).unwrap()), 65024.0);
    }

    #[test]
    fn the_cascade_adds_blocks_of_sixteen_then_the_levels() {
        // 17 ones: the first goes up to the top level at once; ones 2..17 fill level 0, which
        // moves up at the 17th; the levels' sum is 17 (by hand). In f16, 2049 + 1 rounds to 2048.
        assert_eq!(cascade(&[1.0; 17], |_| true, |x| x), 17.0);
        assert_eq!(ceil_log2(16), 4);
        assert_eq!(cascade(&[2049.0, 1.0], |_| true, |x| f16::from_f32(x).to_f32()), 2048.0);
        let f32_values = Tensor::new(&[1.5f32, 2.5], &Device::Cpu).unwrap();
        assert_eq!(scalar(&reduce(Reduction::Mean, &f32_values).unwrap()), 2.0);
    }
}
