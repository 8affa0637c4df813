//! CSV inputs: a header row, the target columns named in the scenario, every
//! other column a feature. An empty cell is a missing value and reads as NaN,
//! as pandas reads it.

use super::Table;
use crate::error::{Error, Result};
use crate::scenario::Scenario;

/// Reads a CSV with a header: the named target columns, and every other column as a feature.
pub(super) fn read_csv(s: &Scenario, path: &str, targets: &[String]) -> Result<(Table, Table)> {
    let full = s.dir.as_deref().unwrap_or(std::path::Path::new(".")).join(path);
    let csv_err = |source: csv::Error| Error::Csv { path: full.clone(), source };
    let data_err = |message: String| Error::CsvData { path: full.clone(), message };
    let mut reader = csv::Reader::from_path(&full).map_err(csv_err)?;
    let header: Vec<String> = reader.headers().map_err(csv_err)?.iter().map(str::to_string).collect();
    let target_idx: Vec<usize> = targets
        .iter()
        .map(|t| header.iter().position(|h| h == t).ok_or_else(|| data_err(format!("no column `{t}` (columns: {})", header.join(", ")))))
        .collect::<Result<_>>()?;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(csv_err)?;
        for (c, cell) in record.iter().enumerate() {
            let cell = cell.trim();
            // An empty cell is a missing value: NaN, as pandas reads it.
            let v = if cell.is_empty() { f64::NAN } else {
                cell.parse::<f64>().map_err(|_| data_err(format!("line {}: column `{}`: `{cell}` is not a number", line + 2, header[c])))?
            };
            if target_idx.contains(&c) { y.push(v) } else { x.push(v) }
        }
    }
    let n = y.len() / targets.len().max(1);
    Ok((Table { rows: n, cols: header.len() - targets.len(), values: x }, Table { rows: n, cols: targets.len(), values: y }))
}

