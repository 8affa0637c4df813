//! A linear layer's output that overflowed from finite factors, with the value before rounding:
//! `x·W + b` at the bad element computed exactly from the layer's input and parameters (PyTorch's
//! CPU `addmm`, like nanhunt's kernel, accumulates half types in f32 and rounds once, so the
//! exact value past the dtype's largest value is what overflowed), or a weight that is itself
//! beyond the dtype (autocast casts f32 weights to the low dtype).

use candle_core::Tensor;

use super::{cause, operand, Cause, Limits, Rule};
use crate::error::Result;
use crate::scenario::DTypeName;

/// The values of a tensor as f64, flattened.
fn values(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?)
}

/// Why output element `index` of linear node `node` (input `x`, weight `w` of `(in, out)`, bias
/// `b`) is not finite in dtype `d`, if its factors are finite: the exact `x·W + b` beyond the
/// dtype's largest value, or a weight beyond it.
pub(crate) fn linear_output(node: &str, x: &Tensor, (w, b): (&Tensor, &Tensor), index: usize, d: DTypeName) -> Result<Option<Cause>> {
    let (xs, ws, bs) = (values(x)?, values(w)?, values(b)?);
    let [width, out] = *w.dims() else { return Ok(None) };
    if width == 0 || out == 0 || xs.len() % width != 0 || bs.len() != out {
        return Ok(None);
    }
    let (row, col) = (index / out, index % out);
    let (Some(xr), dt, lim) = (xs.get(row * width..(row + 1) * width), <&str>::from(d), Limits::of(d)) else { return Ok(None) };
    let wc: Vec<f64> = (0..width).map(|k| ws[k * out + col]).collect();
    if xr.iter().chain(&wc).chain([&bs[col]]).any(|v| !v.is_finite()) {
        return Ok(None);
    }
    let inputs = || -> Result<Vec<super::Operand>> { Ok(vec![operand("input", x, None, d)?, operand("weight", w, None, d)?]) };
    if let Some(k) = xr.iter().position(|v| v.abs() > lim.max) {
        let reason = format!("the input of `{node}` at [{row}, {k}] is {}, beyond {dt}'s largest value {}: cast to {dt} for the product, it is infinite", crate::human(xr[k]), crate::human(lim.max));
        return Ok(Some(cause(Rule::Overflow, node, reason, inputs()?)));
    }
    if let Some(k) = wc.iter().position(|v| v.abs() > lim.max) {
        let reason = format!("the weight `{node}.weight`[{k}, {col}] = {} is beyond {dt}'s largest value {}: cast to {dt} for the product, it is infinite", crate::human(wc[k]), crate::human(lim.max));
        return Ok(Some(cause(Rule::Overflow, node, reason, inputs()?)));
    }
    let exact: f64 = xr.iter().zip(&wc).map(|(a, b)| a * b).sum::<f64>() + bs[col];
    if exact.abs() <= lim.max {
        return Ok(None);
    }
    let k = (0..width).max_by(|&i, &j| (xr[i] * wc[i]).abs().total_cmp(&(xr[j] * wc[j]).abs())).unwrap_or(0);
    let big = |v: &[f64]| v.iter().fold(0f64, |m, x| m.max(x.abs()));
    let reason = format!(
        "`{node}.output`[{row}, {col}] is x·W + b = {} before rounding, beyond {dt}'s largest value {}: a sum of {width} products, the largest input {} × weight {} (feature {k}); the row's inputs reach {} and the column's weights {}",
        whole(exact),
        crate::human(lim.max),
        crate::human(xr[k]),
        crate::human(wc[k]),
        crate::human(big(xr)),
        crate::human(big(&wc))
    );
    Ok(Some(cause(Rule::Overflow, node, reason, inputs()?)))
}

/// `v` to the unit below 10⁹ (so 65530 is not shown as 6.55e4 beside 65504), else as `human`.
fn whole(v: f64) -> String {
    if v.abs() < 1e9 {
        format!("{v:.0}")
    } else {
        crate::human(v)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::*;

    fn t(v: &[f64], dims: (usize, usize), d: DType) -> Tensor {
        Tensor::from_vec(v.to_vec(), dims, &Device::Cpu).unwrap().to_dtype(d).unwrap()
    }

    #[test]
    fn a_linear_output_names_the_value_before_rounding_and_its_largest_product() {
        // x = (229, −114.5), W = (200, −300)ᵀ, b = 1: 229·200 + (−114.5)·(−300) + 1 = 45800 + 34350 + 1
        // = 80151 > 65504; PyTorch 2.15: F.linear in float16 gives inf.
        let (x, w, b) = (t(&[229.0, -114.5], (1, 2), DType::F16), t(&[200.0, -300.0], (2, 1), DType::F16), t(&[1.0], (1, 1), DType::F16).flatten_all().unwrap());
        let c = linear_output("layers.0.linear", &x, (&w, &b), 0, DTypeName::F16).unwrap().expect("explained");
        assert_eq!(c.rule, Rule::Overflow);
        assert!(c.reason.starts_with("`layers.0.linear.output`[0, 0] is x·W + b = 80151 before rounding, beyond f16's largest value 65504"), "{c}");
        assert!(c.reason.contains("the largest input 229 × weight 200 (feature 0)") && c.reason.contains("inputs reach 229 and the column's weights 300"), "{c}");
        // Within range: no claim. In f32 storage a weight of 1e5 is beyond f16 for autocast.
        let small = t(&[1.0, 1.0], (2, 1), DType::F16);
        assert_eq!(linear_output("l", &x, (&small, &b), 0, DTypeName::F16).unwrap(), None);
        // 65530 is past 65504 and shown to the unit.
        let near = t(&[286.0, 0.0], (2, 1), DType::F16);
        let c = linear_output("l", &x, (&near, &t(&[36.0], (1, 1), DType::F16).flatten_all().unwrap()), 0, DTypeName::F16).unwrap().expect("explained");
        assert!(c.reason.contains("x·W + b = 65530 before rounding"), "{c}");
        let (x32, w32, b32) = (t(&[1.0, 1.0], (1, 2), DType::F32), t(&[1e5, 1.0], (2, 1), DType::F32), t(&[0.0], (1, 1), DType::F32).flatten_all().unwrap());
        let c = linear_output("l", &x32, (&w32, &b32), 0, DTypeName::F16).unwrap().expect("explained");
        assert!(c.reason.starts_with("the weight `l.weight`[0, 0] = 100000 is beyond f16's largest value 65504"), "{c}");
    }
}
