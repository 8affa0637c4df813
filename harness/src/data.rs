//! Data: generation, CSV loading, splits, injections and preprocessing.
//!
//! Everything here is plain `f64` on the host and driven by seeded ChaCha
//! streams, so a scenario's data is the same on every machine. The order is
//! fixed: make rows → split (fraction, k-fold or a separate set) → inject per
//! split → preprocess (fitted on the training split, applied to both).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::model::{normal, InShape};
use crate::scenario::*;
use crate::validate::held_out;

/// RNG stream for data generation.
pub const DATA_STREAM: u64 = 1;
/// RNG stream for the weights of linear targets.
pub const LINEAR_STREAM: u64 = 2;
/// RNG stream base for injections (one stream per fold).
pub const INJECT_STREAM: u64 = 1 << 8;

/// A seeded ChaCha stream: one seed, independent streams per purpose.
pub fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

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
    fn from_rows(rows: &[Vec<f64>], cols: usize) -> Self {
        Table { rows: rows.len(), cols, values: rows.concat() }
    }

    /// The values of row `r`.
    pub fn row(&self, r: usize) -> &[f64] {
        &self.values[r * self.cols..(r + 1) * self.cols]
    }

    fn select(&self, rows: impl Iterator<Item = usize>) -> Self {
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

/// Builds a scenario's data.
pub fn build(s: &Scenario) -> Result<Dataset> {
    let d = &s.data;
    let mut rng = stream(s.seed, DATA_STREAM);
    let (all, features) = make(d, &d.inputs, d.targets.as_ref(), d.n, s, &mut rng)?;
    if all.x.rows == 0 {
        return Err(invalid(s, "data.inputs", "there are no data rows"));
    }
    let shape = InShape { features, seq_len: d.seq_len };
    let targets = all.y.cols;
    let v = d.validation.clone().unwrap_or_default();
    let mut folds = match (v.fraction, v.kfold, v.n, &v.inputs) {
        (Some(f), ..) => {
            let cut = all.x.rows.saturating_sub(held_out(all.x.rows, f));
            vec![Fold { train: rows(&all, 0..cut), val: Some(rows(&all, cut..all.x.rows)) }]
        }
        (_, Some(k), ..) => kfold(&all, k),
        (_, _, Some(n), _) => {
            let (val, _) = make(d, &d.inputs, d.targets.as_ref(), Some(n), s, &mut rng)?;
            vec![Fold { train: all, val: Some(val) }]
        }
        (_, _, _, Some(inputs)) => {
            let (val, f) = make(d, inputs, v.targets.as_ref(), None, s, &mut rng)?;
            if f != features || val.y.cols != targets {
                return Err(invalid(s, "data.validation", "validation rows must have the training rows' width"));
            }
            vec![Fold { train: all, val: Some(val) }]
        }
        _ => vec![Fold { train: all, val: None }],
    };
    for (i, fold) in folds.iter_mut().enumerate() {
        let mut inj = stream(s.seed, INJECT_STREAM + i as u64);
        for injection in &d.inject {
            for (sel, split) in [(SplitSel::Train, Some(&mut fold.train)), (SplitSel::Validation, fold.val.as_mut())] {
                if let Some(split) = split.filter(|_| injection.split == sel || injection.split == SplitSel::Both) {
                    inject(injection, split, &mut inj).map_err(|m| invalid(s, "data.inject", m))?;
                }
            }
        }
        for step in &d.preprocess {
            preprocess(step, fold, features).map_err(|m| invalid(s, "data.preprocess", m))?;
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

fn rows(all: &Split, r: std::ops::Range<usize>) -> Split {
    Split { x: all.x.select(r.clone()), y: all.y.select(r) }
}

/// sklearn's `KFold` without shuffling: the first `n % k` folds get one extra row.
fn kfold(all: &Split, k: usize) -> Vec<Fold> {
    let n = all.x.rows;
    let mut start = 0;
    (0..k)
        .map(|i| {
            let len = n / k + usize::from(i < n % k);
            let val = start..start + len;
            start += len;
            let keep = |r: &usize| !val.contains(r);
            Fold {
                train: Split { x: all.x.select((0..n).filter(keep)), y: all.y.select((0..n).filter(keep)) },
                val: Some(rows(all, val.clone())),
            }
        })
        .collect()
}

/// Makes rows from an input spec and a target spec; returns them and the feature count.
fn make(
    d: &DataSpec,
    inputs: &InputSpec,
    targets: Option<&TargetSpec>,
    n: Option<usize>,
    s: &Scenario,
    rng: &mut ChaCha8Rng,
) -> Result<(Split, usize)> {
    let seq = d.seq_len.unwrap_or(1);
    let (mut x, csv_y) = match inputs {
        InputSpec::Normal { mean, std } => (draw(n, d, rng, |r| mean + std * normal(r)), None),
        InputSpec::Uniform { low, high } => (draw(n, d, rng, |r| low + (high - low) * r.random::<f64>()), None),
        InputSpec::Values { rows } => (Table::from_rows(rows, rows[0].len()), None),
        InputSpec::Csv { path, targets } => {
            let (x, y) = read_csv(s, path, targets)?;
            (x, Some(y))
        }
    };
    let features = x.cols / seq;
    if x.cols % seq != 0 {
        return Err(invalid(s, "data.seq_len", format!("rows of {} values do not split into {seq} steps", x.cols)));
    }
    scale(d, &mut x, features).map_err(|m| invalid(s, "data.scale", m))?;
    let y = match (csv_y, targets) {
        (Some(y), _) => y,
        (None, Some(t)) => make_targets(t, &x, rng, s.seed),
        (None, None) => return Err(invalid(s, "data.targets", "missing")),
    };
    let mut y = y;
    if d.target_scale != 1.0 {
        y.values.iter_mut().for_each(|v| *v *= d.target_scale);
    }
    if y.rows != x.rows {
        return Err(invalid(s, "data.targets", format!("{} targets for {} rows", y.rows, x.rows)));
    }
    Ok((Split { x, y }, features))
}

fn draw(n: Option<usize>, d: &DataSpec, rng: &mut ChaCha8Rng, mut f: impl FnMut(&mut ChaCha8Rng) -> f64) -> Table {
    let (rows, cols) = (n.unwrap_or(0), d.features.unwrap_or(0) * d.seq_len.unwrap_or(1));
    Table { rows, cols, values: (0..rows * cols).map(|_| f(rng)).collect() }
}

fn scale(d: &DataSpec, x: &mut Table, features: usize) -> std::result::Result<(), String> {
    let mut factor = vec![1.0; features];
    for (f, s) in factor.iter_mut().zip(&d.scale) {
        *f *= s;
    }
    for g in &d.scale_groups {
        let r = g.start..g.start + g.first;
        factor.get_mut(r.clone()).ok_or(format!("group {r:?} is past the last feature"))?.iter_mut().for_each(|f| *f *= g.factor);
    }
    if factor.iter().any(|f| *f != 1.0) {
        for (i, v) in x.values.iter_mut().enumerate() {
            *v *= factor[i % x.cols % features];
        }
    }
    Ok(())
}

fn make_targets(t: &TargetSpec, x: &Table, rng: &mut ChaCha8Rng, seed: u64) -> Table {
    let n = x.rows;
    let fill = |cols: usize, rng: &mut ChaCha8Rng, f: &dyn Fn(&mut ChaCha8Rng) -> f64| Table {
        rows: n,
        cols,
        values: (0..n * cols).map(|_| f(rng)).collect(),
    };
    match t {
        TargetSpec::Binary => fill(1, rng, &|r| f64::from(r.random_range(0..2u8))),
        TargetSpec::Classes { k } => {
            let mut values = vec![0.0; n * k];
            for row in 0..n {
                values[row * k + rng.random_range(0..*k)] = 1.0;
            }
            Table { rows: n, cols: *k, values }
        }
        TargetSpec::Uniform { low, high, outputs } => fill(*outputs, rng, &|r| low + (high - low) * r.random::<f64>()),
        TargetSpec::Normal { mean, std, outputs } => fill(*outputs, rng, &|r| mean + std * normal(r)),
        TargetSpec::Linear { noise } => {
            // The weights come from a stream of their own, so a separate validation set shares them.
            let mut wrng = stream(seed, LINEAR_STREAM);
            let w: Vec<f64> = (0..x.cols).map(|_| normal(&mut wrng)).collect();
            let values = (0..n)
                .map(|r| x.row(r).iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + noise * normal(rng))
                .collect();
            Table { rows: n, cols: 1, values }
        }
        TargetSpec::Values { values } => {
            let rows: Vec<Vec<f64>> = values
                .iter()
                .map(|v| match v {
                    TargetRow::One(a) => vec![*a],
                    TargetRow::Many(r) => r.clone(),
                })
                .collect();
            let cols = rows.first().map_or(1, Vec::len);
            Table::from_rows(&rows, cols)
        }
    }
}

fn read_csv(s: &Scenario, path: &str, targets: &[String]) -> Result<(Table, Table)> {
    let full = s.dir.as_deref().unwrap_or(std::path::Path::new(".")).join(path);
    let csv_err = |message: String| Error::Csv { path: full.clone(), message };
    let mut reader = csv::Reader::from_path(&full).map_err(|e| csv_err(e.to_string()))?;
    let header: Vec<String> = reader.headers().map_err(|e| csv_err(e.to_string()))?.iter().map(str::to_string).collect();
    let target_idx: Vec<usize> = targets
        .iter()
        .map(|t| header.iter().position(|h| h == t).ok_or_else(|| csv_err(format!("no column `{t}` (columns: {})", header.join(", ")))))
        .collect::<Result<_>>()?;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| csv_err(e.to_string()))?;
        for (c, cell) in record.iter().enumerate() {
            let cell = cell.trim();
            // An empty cell is a missing value: NaN, as pandas reads it.
            let v = if cell.is_empty() { f64::NAN } else {
                cell.parse::<f64>().map_err(|_| csv_err(format!("line {}: column `{}`: `{cell}` is not a number", line + 2, header[c])))?
            };
            if target_idx.contains(&c) { y.push(v) } else { x.push(v) }
        }
    }
    let n = y.len() / targets.len().max(1);
    Ok((Table { rows: n, cols: header.len() - targets.len(), values: x }, Table { rows: n, cols: targets.len(), values: y }))
}

fn inject(inj: &Injection, split: &mut Split, rng: &mut ChaCha8Rng) -> std::result::Result<(), String> {
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
            InjectValue::Outlier => if rng.random::<bool>() { inj.magnitude } else { -inj.magnitude },
        };
    }
    Ok(())
}

/// Applies one preprocessing step to both splits of a fold, fitting on the training split.
fn preprocess(step: &Preprocess, fold: &mut Fold, features: usize) -> std::result::Result<(), String> {
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
        Preprocess::DropNonfinite => {
            for split in std::iter::once(&mut fold.train).chain(fold.val.as_mut()) {
                let keep: Vec<usize> = (0..split.x.rows)
                    .filter(|r| split.x.row(*r).iter().chain(split.y.row(*r)).all(|v| v.is_finite()))
                    .collect();
                *split = Split { x: split.x.select(keep.iter().copied()), y: split.y.select(keep.iter().copied()) };
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_str;

    fn scenario(data: &str) -> Scenario {
        let src = format!("name = \"t\"\nseed = 5\n[data]\n{data}\n[model]\nlayers = []\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n");
        parse_str(&src, "t").unwrap()
    }

    fn rows(n: usize) -> String {
        let r: Vec<String> = (0..n).map(|i| format!("[{i}.0]")).collect();
        let t: Vec<String> = (0..n).map(|i| format!("{i}.0")).collect();
        format!("inputs = {{ kind = \"values\", rows = [{}] }}\ntargets = {{ kind = \"values\", values = [{}] }}", r.join(", "), t.join(", "))
    }

    #[test]
    fn kfold_matches_sklearn_sizes_and_covers_every_row_once() {
        let d = build(&scenario(&format!("{}\nvalidation = {{ kfold = 3 }}", rows(10)))).unwrap();
        let sizes: Vec<_> = d.folds.iter().map(|f| (f.train.x.rows, f.val.as_ref().unwrap().x.rows)).collect();
        assert_eq!(sizes, [(6, 4), (7, 3), (7, 3)]);
        let mut seen: Vec<f64> = d.folds.iter().flat_map(|f| f.val.as_ref().unwrap().x.values.clone()).collect();
        seen.sort_by(f64::total_cmp);
        assert_eq!(seen, (0..10).map(f64::from).collect::<Vec<_>>());
    }

    #[test]
    fn fraction_holds_out_the_last_rows() {
        let d = build(&scenario(&format!("{}\nvalidation = {{ fraction = 0.2 }}", rows(10)))).unwrap();
        assert_eq!(d.folds[0].val.as_ref().unwrap().x.values, vec![8.0, 9.0]);
        assert_eq!(d.folds[0].train.x.rows, 8);
    }

    #[test]
    fn injection_fraction_and_cells_are_exact() {
        let s = scenario("n = 50\nfeatures = 2\ninputs = { kind = \"normal\" }\ntargets = { kind = \"binary\" }\n[[data.inject]]\nvalue = \"nan\"\nfraction = 0.05\n[[data.inject]]\nvalue = \"zero\"\ninto = \"targets\"\nrows = [3, 7]");
        let d = build(&s).unwrap();
        let f = &d.folds[0].train;
        assert_eq!(f.x.values.iter().filter(|v| v.is_nan()).count(), 5, "5% of 100 cells");
        assert_eq!((f.y.values[3], f.y.values[7]), (0.0, 0.0));
        // Injections draw from their own stream: the clean cells equal an uninjected build.
        let clean = build(&scenario("n = 50\nfeatures = 2\ninputs = { kind = \"normal\" }\ntargets = { kind = \"binary\" }")).unwrap();
        let x0 = &clean.folds[0].train.x.values;
        assert!(f.x.values.iter().zip(x0).all(|(a, b)| a.is_nan() || a == b));
    }

    #[test]
    fn standardize_uses_training_statistics() {
        // Train column [0, 1, 2, 3]: mean 1.5, population std sqrt(1.25); validation row 4 → (4 − 1.5)/sqrt(1.25).
        let s = scenario(&format!("{}\nvalidation = {{ fraction = 0.2 }}\n[[data.preprocess]]\nop = \"standardize\"", rows(5)));
        let d = build(&s).unwrap();
        let sd = 1.25f64.sqrt();
        assert_eq!(d.folds[0].train.x.values, vec![-1.5 / sd, -0.5 / sd, 0.5 / sd, 1.5 / sd]);
        assert_eq!(d.folds[0].val.as_ref().unwrap().x.values, vec![2.5 / sd]);
    }

    #[test]
    fn reciprocal_with_and_without_guard() {
        // Seed 001 ex2: 1 / [1, 2, 0, 4, 5], and np.where(data == 0, 1e-6, 1 / data).
        let data = "inputs = { kind = \"values\", rows = [[1.0], [2.0], [0.0], [4.0], [5.0]] }\ntargets = { kind = \"uniform\" }";
        let raw = build(&scenario(&format!("{data}\n[[data.preprocess]]\nop = \"reciprocal\""))).unwrap();
        assert_eq!(raw.folds[0].train.x.first_nonfinite(), Some((2, 0, f64::INFINITY)));
        let guarded = build(&scenario(&format!("{data}\n[[data.preprocess]]\nop = \"reciprocal\"\nguard = 1e-6"))).unwrap();
        assert_eq!(guarded.folds[0].train.x.values, vec![1.0, 0.5, 1e-6, 0.25, 0.2]);
    }

    #[test]
    fn impute_and_drop_handle_missing_values() {
        let data = "inputs = { kind = \"values\", rows = [[1.0], [nan], [3.0]] }\ntargets = { kind = \"values\", values = [1.0, 2.0, 3.0] }";
        let imputed = build(&scenario(&format!("{data}\n[[data.preprocess]]\nop = \"impute_mean\""))).unwrap();
        assert_eq!(imputed.folds[0].train.x.values, vec![1.0, 2.0, 3.0]);
        let dropped = build(&scenario(&format!("{data}\n[[data.preprocess]]\nop = \"drop_nonfinite\""))).unwrap();
        assert_eq!(dropped.folds[0].train.y.values, vec![1.0, 3.0]);
    }

    #[test]
    fn csv_inputs_with_named_targets_and_missing_cells() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.csv"), "a,y,b\n1,10,2\n3,30,\n").unwrap();
        let mut s = scenario("inputs = { kind = \"csv\", path = \"d.csv\", targets = [\"y\"] }");
        s.dir = Some(dir.path().to_path_buf());
        let d = build(&s).unwrap();
        assert_eq!(d.shape.features, 2);
        assert_eq!(d.folds[0].train.y.values, vec![10.0, 30.0]);
        assert_eq!(d.folds[0].train.x.values[..3], [1.0, 2.0, 3.0]);
        assert!(d.folds[0].train.x.values[3].is_nan(), "an empty cell reads as NaN");
        std::fs::write(dir.path().join("d.csv"), "a,y\n").unwrap();
        assert!(build(&s).unwrap_err().to_string().contains("no data rows"), "a header alone is an error, not a panic");
        std::fs::write(dir.path().join("d.csv"), "a,y\n1,x\n").unwrap();
        let err = build(&s).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("`x` is not a number"), "{err}");
    }

    #[test]
    fn scale_groups_and_classes() {
        let s = scenario("n = 4\nfeatures = 3\ninputs = { kind = \"uniform\", low = 1.0, high = 2.0 }\nscale_groups = [{ first = 2, factor = 100.0 }]\ntargets = { kind = \"classes\", k = 3 }");
        let d = build(&s).unwrap();
        let x = &d.folds[0].train.x;
        for r in 0..4 {
            let row = x.row(r);
            assert!(row[0] >= 100.0 && row[1] >= 100.0 && row[2] < 2.0, "{row:?}");
        }
        let y = &d.folds[0].train.y;
        assert_eq!(y.cols, 3);
        assert!((0..4).all(|r| y.row(r).iter().sum::<f64>() == 1.0), "one-hot rows");
    }
}
