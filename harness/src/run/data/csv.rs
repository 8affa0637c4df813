//! CSV inputs: a header row, the target columns named in the scenario, every
//! other column a feature. An empty cell is a missing value and reads as NaN,
//! as pandas reads it. Errors name lines and columns by number and never
//! echo the file's contents.

use super::Table;
use crate::error::{Error, Result};
use crate::scenario::{read_regular, Scenario};

/// Reads a CSV with a header: the named target columns, and every other column as a feature.
pub(super) fn read_csv(s: &Scenario, path: &str, targets: &[String]) -> Result<(Table, Table)> {
    let full = s.dir.as_deref().unwrap_or(std::path::Path::new(".")).join(path);
    let csv_err = |source: csv::Error| Error::Csv { path: full.clone(), source };
    let data_err = |message: String| Error::CsvData { path: full.clone(), message };
    // A regular file no larger than the run's memory limit: a pipe or /dev/zero would never end.
    let limit = s.train.memory_limit_mb.saturating_mul(1024 * 1024);
    let bytes = read_regular(&full, limit, "a CSV data file", "raise `train.memory_limit_mb` to read it")?;
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let header: Vec<String> = reader.headers().map_err(csv_err)?.iter().map(str::to_string).collect();
    let target_idx: Vec<usize> =
        targets.iter().map(|t| header.iter().position(|h| h == t).ok_or_else(|| data_err(format!("the header has no column named `{t}` (it has {} columns)", header.len())))).collect::<Result<_>>()?;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        // The record's own line in the file (blank lines and quoted line breaks included).
        let line = record.position().map_or(0, |p| p.line() as usize);
        for (c, cell) in record.iter().enumerate() {
            let cell = cell.trim();
            // An empty cell is a missing value: NaN, as pandas reads it.
            let v = if cell.is_empty() { f64::NAN } else { cell.parse::<f64>().map_err(|_| data_err(format!("line {line}, column {}: not a number", c + 1)))? };
            if target_idx.contains(&c) {
                y.push(v)
            } else {
                x.push(v)
            }
        }
    }
    let n = y.len() / targets.len().max(1);
    Ok((Table { rows: n, cols: header.len() - targets.len(), values: x }, Table { rows: n, cols: targets.len(), values: y }))
}
