//! The shape arithmetic of the imported ONNX ops (`kind.rs`): numpy's broadcasting, a
//! `Reshape`'s target with its `0` and `-1`, `(Un)Squeeze`'s dims, a `Slice` clamped as ONNX
//! clamps it, `Gather`, `Trilu`'s triangle and a cast's truncation.

use candle_core::{DType, Tensor};

use crate::error::Result;

/// The shape `a` and `b` broadcast to, numpy's way.
pub fn broadcast(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let at = |s: &[usize], i: usize| if i + s.len() >= n { s[i + s.len() - n] } else { 1 };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (x, y) if x == y || y == 1 => Ok(x),
            (1, y) => Ok(y),
            (x, y) => bail(format!("shapes {a:?} and {b:?} do not broadcast ({x} against {y})")),
        })
        .collect()
}

/// ONNX `Reshape`'s target: 0 copies the input's dim there, one -1 takes what is left.
pub fn reshaped(dims: &[usize], shape: &[i64]) -> Result<Vec<usize>> {
    let total: usize = dims.iter().product();
    let mut out: Vec<usize> = Vec::with_capacity(shape.len());
    let mut free = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            0 => out.push(dims.get(i).copied().unwrap_or(0)),
            -1 if free.is_none() => {
                free = Some(i);
                out.push(1);
            }
            s if s > 0 => out.push(s as usize),
            s => return bail(format!("Reshape: {s} in the target {shape:?}")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = free {
        if known == 0 || !total.is_multiple_of(known) {
            return bail(format!("Reshape: {dims:?} does not fit {shape:?}"));
        }
        out[i] = total / known;
    }
    if out.iter().product::<usize>() != total {
        return bail(format!("Reshape: {dims:?} has {total} values, {shape:?} another count"));
    }
    Ok(out)
}

pub(super) fn unsqueezed(dims: &[usize], axes: &[i64]) -> Result<Vec<usize>> {
    let rank = dims.len() + axes.len();
    let at: Vec<usize> = axes.iter().map(|&a| axis(a, rank, "Unsqueeze")).collect::<Result<_>>()?;
    let mut rest = dims.iter();
    Ok((0..rank).map(|i| if at.contains(&i) { 1 } else { rest.next().copied().unwrap_or(1) }).collect())
}

pub(super) fn squeezed(dims: &[usize], axes: &[i64]) -> Result<Vec<usize>> {
    let at: Vec<usize> = axes.iter().map(|&a| axis(a, dims.len(), "Squeeze")).collect::<Result<_>>()?;
    if let Some(&i) = at.iter().find(|&&i| dims[i] != 1) {
        return bail(format!("Squeeze: axis {i} of {dims:?} is not 1"));
    }
    Ok(dims.iter().enumerate().filter(|(i, d)| if at.is_empty() { **d != 1 } else { !at.contains(i) }).map(|(_, d)| *d).collect())
}

pub(super) fn slice(x: &Tensor, starts: &[i64], ends: &[i64], axes: &[i64]) -> Result<Tensor> {
    if starts.len() != ends.len() || (!axes.is_empty() && axes.len() != starts.len()) {
        return bail(format!("Slice: {} starts, {} ends and {} axes", starts.len(), ends.len(), axes.len()));
    }
    let mut y = x.clone();
    for (i, (&s, &e)) in starts.iter().zip(ends).enumerate() {
        let a = axis(axes.get(i).copied().unwrap_or(i as i64), x.rank(), "Slice")?;
        let n = x.dims()[a] as i64;
        let clamp = |v: i64| if v < 0 { (v + n).max(0) } else { v.min(n) };
        let (s, e) = (clamp(s), clamp(e));
        y = y.narrow(a, s as usize, (e - s).max(0) as usize)?;
    }
    Ok(y)
}

/// `data` gathered at `indices` (rounded to integers; negative ones count from the end) along `axis`.
pub(super) fn gather(data: &Tensor, indices: &Tensor, axis_: i64) -> Result<Tensor> {
    let a = axis(axis_, data.rank(), "Gather")?;
    let n = data.dims()[a] as f64;
    let idx = indices.to_dtype(DType::F64)?.flatten_all()?;
    let v = idx.to_vec1::<f64>()?;
    if let Some(bad) = v.iter().find(|i| !(-n..n).contains(*i)) {
        return bail(format!("Gather: index {bad} is out of range for {n} rows"));
    }
    let ids: Vec<u32> = v.iter().map(|&i| if i < 0.0 { (i + n) as u32 } else { i as u32 }).collect();
    let ids = Tensor::from_vec(ids, v.len(), data.device())?;
    let picked = data.contiguous()?.index_select(&ids, a)?;
    let mut shape: Vec<usize> = data.dims()[..a].to_vec();
    shape.extend_from_slice(indices.dims());
    shape.extend_from_slice(&data.dims()[a + 1..]);
    Ok(picked.reshape(shape)?)
}

/// Truncated toward zero, as a cast to an integer type (outside the graph's gradient).
pub(super) fn trunc(x: &Tensor) -> Result<Tensor> {
    let v = x.detach().to_dtype(DType::F64)?;
    let t = (v.abs()?.floor()? * v.sign()?)?;
    Ok(t.to_dtype(x.dtype())?)
}

/// `x` with zeros outside the triangle (its last two dims).
pub(super) fn trilu(x: &Tensor, upper: bool, k: i64) -> Result<Tensor> {
    let r = x.rank();
    if r < 2 {
        return bail(format!("Trilu: rank {r} is below 2"));
    }
    let (rows, cols) = (x.dims()[r - 2], x.dims()[r - 1]);
    let keep: Vec<u8> = (0..rows).flat_map(|i| (0..cols).map(move |j| j as i64 - i as i64)).map(|d| u8::from(if upper { d >= k } else { d <= k })).collect();
    // A select, not a product: a triangle of a `-inf` matrix keeps zeros outside it, not NaN.
    let m = Tensor::from_vec(keep, (rows, cols), x.device())?.broadcast_as(x.shape())?;
    Ok(m.where_cond(x, &x.zeros_like()?)?)
}

/// `d` (negative from the end) as an index into `rank` dims, or an error naming `what`.
pub fn axis(d: i64, rank: usize, what: &str) -> Result<usize> {
    let r = rank as i64;
    let a = if d < 0 { d + r } else { d };
    if (0..r).contains(&a) {
        Ok(a as usize)
    } else {
        Err(candle_core::Error::Msg(format!("{what}: axis {d} is out of range for rank {rank}")).into())
    }
}

/// An error of message `m`.
pub(super) fn bail<T>(m: String) -> Result<T> {
    Err(candle_core::Error::Msg(m).into())
}
