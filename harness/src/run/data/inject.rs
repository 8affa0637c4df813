//! Injections: corrupt chosen cells of one split with NaN, ±Inf, zeros or
//! outliers. Cells are chosen by the injection stream, so the clean cells equal
//! an uninjected build.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::Split;
use crate::scenario::{InjectInto, InjectValue, Injection};

/// Writes an injection's value into the chosen cells of a split.
pub(super) fn inject(inj: &Injection, split: &mut Split, rng: &mut ChaCha8Rng) -> std::result::Result<(), String> {
    let t = match inj.into {
        InjectInto::Inputs => &mut split.x,
        InjectInto::Targets => &mut split.y,
    };
    let cells: Vec<usize> = match inj.fraction {
        Some(f) => {
            let total = t.rows * t.cols;
            let count = (f * total as f64).round() as usize;
            // A partial Fisher–Yates shuffle picks `count` distinct cells.
            let mut idx: Vec<usize> = (0..total).collect();
            for i in 0..count.min(total) {
                let j = rng.random_range(i..total);
                idx.swap(i, j);
            }
            idx.truncate(count);
            idx
        }
        None => {
            let rows: Vec<usize> = if inj.rows.is_empty() { (0..t.rows).collect() } else { inj.rows.clone() };
            let cols: Vec<usize> = if inj.columns.is_empty() { (0..t.cols).collect() } else { inj.columns.clone() };
            if let Some(r) = rows.iter().find(|r| **r >= t.rows) {
                return Err(format!("row {r} is past the split's {} rows", t.rows));
            }
            if let Some(c) = cols.iter().find(|c| **c >= t.cols) {
                return Err(format!("column {c} is past the {} columns", t.cols));
            }
            let width = t.cols;
            rows.iter().flat_map(|r| cols.iter().map(move |c| r * width + c)).collect()
        }
    };
    for i in cells {
        t.values[i] = match inj.value {
            InjectValue::Nan => f64::NAN,
            InjectValue::Inf => f64::INFINITY,
            InjectValue::NegInf => f64::NEG_INFINITY,
            InjectValue::Zero => 0.0,
            InjectValue::Outlier => {
                if rng.random::<bool>() {
                    inj.magnitude
                } else {
                    -inj.magnitude
                }
            }
        };
    }
    Ok(())
}
