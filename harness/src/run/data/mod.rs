//! Data: the rows a run trains and validates on, built from the `[data]`
//! table in a fixed order: make rows (`generate`, `csv`) → split (`split`:
//! fraction, k-fold or a separate set) → inject per split (`inject`) →
//! preprocess (`preprocess`, fitted on the training split, applied to both).
//!
//! Everything here is plain `f64` on the host and driven by seeded streams, so
//! a scenario's data is the same on every machine.

use crate::error::{Error, Result};
use crate::run::rng::{stream, DATA_STREAM, INJECT_STREAM, PADDING_STREAM};
use crate::scenario::{held_out, Footprint, InShape, Plan, Scenario, SplitSel};

mod csv;
mod generate;
mod inject;
mod padding;
mod preprocess;
mod split;

/// A row-major matrix of `rows × cols` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Number of rows.
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
    /// Row-major values.
    pub values: Vec<f64>,
}

impl Table {
    pub(crate) fn from_rows(rows: &[Vec<f64>], cols: usize) -> Self {
        Table { rows: rows.len(), cols, values: rows.concat() }
    }

    /// The values of row `r`.
    pub fn row(&self, r: usize) -> &[f64] {
        &self.values[r * self.cols..(r + 1) * self.cols]
    }

    pub(crate) fn select(&self, rows: impl Iterator<Item = usize>) -> Self {
        let mut values = Vec::new();
        let mut n = 0;
        for r in rows {
            values.extend_from_slice(self.row(r));
            n += 1;
        }
        Table { rows: n, cols: self.cols, values }
    }

    /// Row and column of the first non-finite value, with the value.
    pub fn first_nonfinite(&self) -> Option<(usize, usize, f64)> {
        let i = self.values.iter().position(|v| !v.is_finite())?;
        Some((i / self.cols, i % self.cols, self.values[i]))
    }
}

/// Inputs and targets of one split.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Inputs, one row per example (`seq_len × features` values for sequences).
    pub x: Table,
    /// Targets, one row per example.
    pub y: Table,
    /// With `data.padding`: one row of `seq_len` values per example, 1 where a position holds
    /// data and 0 where it is padding.
    pub mask: Option<Table>,
}

impl Split {
    /// The chosen rows of inputs, targets and mask.
    pub(crate) fn select(&self, rows: impl Iterator<Item = usize> + Clone) -> Split {
        Split { x: self.x.select(rows.clone()), y: self.y.select(rows.clone()), mask: self.mask.as_ref().map(|m| m.select(rows)) }
    }
}

/// One training run's data: a training split and maybe a validation split.
#[derive(Debug, Clone, PartialEq)]
pub struct Fold {
    /// Rows to train on.
    pub train: Split,
    /// Rows to validate on after each epoch.
    pub val: Option<Split>,
}

/// All the data of a scenario: one fold, or k for cross-validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Row shape of the inputs.
    pub shape: InShape,
    /// Number of target columns.
    pub targets: usize,
    /// The folds (one unless `kfold`).
    pub folds: Vec<Fold>,
}

impl Dataset {
    /// What this data, trained by the model `plan` describes, holds in memory.
    pub(crate) fn footprint(&self, s: &Scenario, plan: &Plan) -> Footprint {
        let splits = self.folds.iter().flat_map(|f| std::iter::once(&f.train).chain(f.val.as_ref()));
        let cells: u128 = splits.map(|sp| (sp.x.values.len() + sp.y.values.len()) as u128).sum();
        let rows = self.folds.iter().map(|f| f.train.x.rows).max().unwrap_or(0) as u128;
        Footprint::of(s, plan, cells, rows, self.shape.features, self.shape.seq_len)
    }
}

/// Builds a scenario's data.
pub fn build(s: &Scenario) -> Result<Dataset> {
    let d = &s.data;
    let mut rng = stream(s.seed, DATA_STREAM);
    let (all, features) = generate::make(d, &d.inputs, d.targets.as_ref(), d.n, s, &mut rng)?;
    if all.x.rows == 0 {
        return Err(invalid(s, "data.inputs", "there are no data rows"));
    }
    if features == 0 {
        return Err(invalid(s, "data.inputs", "there are no feature columns: every column is a target"));
    }
    let vocab = match d.inputs {
        crate::scenario::InputSpec::Tokens { vocab, .. } => Some(vocab),
        _ => None,
    };
    let shape = InShape { features, seq_len: d.seq_len, vocab, image: d.image.map(|i| (i.channels, i.height, i.width)) };
    let mut all = all;
    if let Some(p) = &d.padding {
        all.mask = Some(padding::train_mask(p, &mut all.x, d.seq_len.unwrap_or(1), features, &mut stream(s.seed, PADDING_STREAM)).map_err(|(k, m)| invalid(s, &k, m))?);
    }
    let targets = all.y.cols;
    let v = d.validation.clone().unwrap_or_default();
    let mut folds = match (v.fraction, v.kfold, v.n, &v.inputs) {
        (Some(f), ..) => {
            let held = held_out(all.x.rows, f);
            if held >= all.x.rows {
                let message = format!("holds out {held} of the {} rows, leaving none to train on", all.x.rows);
                return Err(invalid(s, "data.validation.fraction", message));
            }
            let cut = all.x.rows - held;
            vec![Fold { train: split::rows(&all, 0..cut), val: Some(split::rows(&all, cut..all.x.rows)) }]
        }
        (_, Some(k), ..) if k > all.x.rows => {
            return Err(invalid(s, "data.validation.kfold", format!("{k} folds need at least {k} rows, and there are {}", all.x.rows)));
        }
        (_, Some(k), ..) => split::kfold(&all, k),
        (_, _, Some(n), _) => {
            let (mut val, _) = generate::make(d, &d.inputs, d.targets.as_ref(), Some(n), s, &mut rng)?;
            padding::drawn(d, &mut val, features, &mut stream(s.seed, PADDING_STREAM + 1));
            vec![Fold { train: all, val: Some(val) }]
        }
        (_, _, _, Some(inputs)) => {
            let (mut val, f) = generate::make(d, inputs, v.targets.as_ref(), None, s, &mut rng)?;
            padding::drawn(d, &mut val, features, &mut stream(s.seed, PADDING_STREAM + 1));
            if f != features || val.y.cols != targets {
                return Err(invalid(s, "data.validation", "validation rows must have the training rows' width"));
            }
            vec![Fold { train: all, val: Some(val) }]
        }
        _ => vec![Fold { train: all, val: None }],
    };
    for (i, fold) in folds.iter_mut().enumerate() {
        let mut inj = stream(s.seed, INJECT_STREAM + i as u64);
        for (j, injection) in d.inject.iter().enumerate() {
            for (sel, split) in [(SplitSel::Train, Some(&mut fold.train)), (SplitSel::Validation, fold.val.as_mut())] {
                if let Some(split) = split.filter(|_| injection.split == sel || injection.split == SplitSel::Both) {
                    inject::inject(injection, split, &mut inj).map_err(|m| invalid(s, &format!("data.inject.{j}"), m))?;
                }
            }
        }
        for (j, step) in d.preprocess.iter().enumerate() {
            preprocess::preprocess(step, fold, &shape).map_err(|m| invalid(s, &format!("data.preprocess.{j}"), m))?;
        }
        if fold.train.x.rows == 0 {
            return Err(invalid(s, "data.preprocess", "no training rows are left"));
        }
    }
    Ok(Dataset { shape, targets, folds })
}

fn invalid(s: &Scenario, key: &str, message: impl Into<String>) -> Error {
    Error::Invalid { location: s.name.clone(), key: key.into(), message: message.into() }
}

#[cfg(test)]
mod tests;
