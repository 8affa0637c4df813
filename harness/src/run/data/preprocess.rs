//! Preprocessing steps, each fitted on the training split and applied to both
//! splits, with sklearn's conventions (population std, a zero range scales by 1); an
//! expression step (`expr = "..."`) runs on each split by itself, with the expression
//! engine in f64, as people write it on their tensors (`expression`).

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use super::{Fold, Table};
use crate::scenario::{InShape, Preprocess};

/// Applies one preprocessing step to both splits of a fold, fitting on the training split.
pub(super) fn preprocess(step: &Preprocess, fold: &mut Fold, shape: &InShape) -> std::result::Result<(), String> {
    let features = shape.features;
    let cols = |c: &[usize]| -> std::result::Result<Vec<usize>, String> {
        match c.iter().find(|c| **c >= features) {
            Some(bad) => Err(format!("column {bad} is past the {features} features")),
            None if c.is_empty() => Ok((0..features).collect()),
            None => Ok(c.to_vec()),
        }
    };
    // Column statistics over the training split, all time steps of a feature together.
    let stats = |c: usize, train: &Table, finite_only: bool| {
        let vals: Vec<f64> = train.values.iter().enumerate().filter(|(i, v)| i % train.cols % features == c && (!finite_only || v.is_finite())).map(|(_, v)| *v).collect();
        let n = vals.len().max(1) as f64;
        let mean = vals.iter().sum::<f64>() / n;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
        let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (mean, var.sqrt(), min, max)
    };
    let train = fold.train.x.clone();
    let mut map_cols = |c: &[usize], f: &dyn Fn(usize, f64) -> f64| -> std::result::Result<(), String> {
        let cs = cols(c)?;
        for split in std::iter::once(&mut fold.train).chain(fold.val.as_mut()) {
            let width = split.x.cols;
            for (i, v) in split.x.values.iter_mut().enumerate() {
                let c = i % width % features;
                if cs.contains(&c) {
                    *v = f(c, *v);
                }
            }
        }
        Ok(())
    };
    match step {
        Preprocess::Standardize { columns } => {
            let st: Vec<_> = (0..features).map(|c| stats(c, &train, false)).collect();
            // sklearn: a zero std leaves the column centred but unscaled.
            map_cols(columns, &|c, v| (v - st[c].0) / if st[c].1 == 0.0 { 1.0 } else { st[c].1 })
        }
        Preprocess::MinMax { columns } => {
            let st: Vec<_> = (0..features).map(|c| stats(c, &train, false)).collect();
            map_cols(columns, &|c, v| {
                let range = st[c].3 - st[c].2;
                (v - st[c].2) / if range == 0.0 { 1.0 } else { range }
            })
        }
        Preprocess::Reciprocal { columns, guard } => map_cols(columns, &|_, v| match guard {
            Some(g) if v == 0.0 => *g,
            _ => 1.0 / v,
        }),
        Preprocess::Log { columns, epsilon } => map_cols(columns, &|_, v| (v + epsilon.unwrap_or(0.0)).ln()),
        Preprocess::Clip { columns, min, max } => map_cols(columns, &|_, v| v.clamp(*min, *max)),
        Preprocess::ImputeMean { columns } => {
            let st: Vec<_> = (0..features).map(|c| stats(c, &train, true)).collect();
            map_cols(columns, &|c, v| if v.is_finite() { v } else { st[c].0 })
        }
        Preprocess::Expr { expr, consts } => expression(expr, consts, fold, shape),
        Preprocess::DropNonfinite {} => {
            for split in std::iter::once(&mut fold.train).chain(fold.val.as_mut()) {
                let keep: Vec<usize> = (0..split.x.rows).filter(|r| split.x.row(*r).iter().chain(split.y.row(*r)).all(|v| v.is_finite())).collect();
                *split = split.select(keep.iter().copied());
            }
            Ok(())
        }
    }
}

/// The expression `text` of `x`, each split's inputs as a tensor of `(rows, ...)` (a row as the
/// model reads it: features, a sequence of them, or an image), evaluated in f64 on that split
/// alone: `mean(x, dim=0)` is the split's own mean. It must keep the inputs' shape.
fn expression(text: &str, consts: &BTreeMap<String, f64>, fold: &mut Fold, shape: &InShape) -> std::result::Result<(), String> {
    if shape.vocab.is_some() {
        return Err("the inputs are token ids: an expression step needs features".into());
    }
    let row: Vec<usize> = match (shape.image, shape.seq_len) {
        (Some((c, h, w)), _) => vec![c, h, w],
        (None, Some(len)) => vec![len, shape.features],
        (None, None) => vec![shape.features],
    };
    for split in std::iter::once(&mut fold.train).chain(fold.val.as_mut()) {
        let x = &mut split.x;
        let dims: Vec<usize> = std::iter::once(x.rows).chain(row.iter().copied()).collect();
        let err = |e: crate::error::Error| format!("expression `{text}`: {e}");
        let t = Tensor::from_vec(x.values.clone(), dims.as_slice(), &Device::Cpu).map_err(|e| err(e.into()))?;
        let input = crate::ops::expr::dims_of_tensor(&t);
        let checked = crate::ops::expr::compile_step(text, consts, &input)?;
        let out = crate::ops::expr::eval::eval(&checked.ir, &[t], DType::F64).and_then(|o| Ok(o.flatten_all()?.to_vec1::<f64>()?)).map_err(err)?;
        x.values = out;
    }
    Ok(())
}
