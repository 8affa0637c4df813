//! `data.preprocess` in `repro.py`: the chain the script runs itself, in order, on the data as
//! built without it, so `confirm` trains on the same inputs and the script shows the steps as
//! people write them. An expression step is its torch line of `x`, run on each split by itself;
//! the others (`standardize`, `min_max`, `reciprocal`, `log`, `clip`, `impute_mean`) are their
//! keys, which the script fits on the fold's training split as nanhunt does
//! (`run::data::preprocess`). A `drop_nonfinite` changes the rows the shuffle orders and dropout
//! masks count, so the data holds the steps up to the last one, and the script runs the rest.

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::run::data;
use crate::scenario::{Preprocess, Scenario};

/// Where the script's chain starts: after the last `drop_nonfinite` (0 without one).
fn head(steps: &[Preprocess]) -> usize {
    steps.iter().rposition(|p| matches!(p, Preprocess::DropNonfinite {})).map_or(0, |i| i + 1)
}

/// One step as the script reads it: an expression's torch line (`{"op": "expr", "torch":
/// ...}`), or another step's keys with the inputs' `features` per row (its columns repeat every
/// `features` values).
fn step(p: &Preprocess, features: usize) -> Result<Value> {
    if let Preprocess::Expr { expr, consts } = p {
        let line = crate::ops::expr::parse::parse(expr).map(|a| crate::ops::expr::torch::python(&a, consts, "x")).unwrap_or_else(|e| format!("None  # {e}"));
        return Ok(json!({ "op": "expr", "torch": line }));
    }
    let mut v = serde_json::to_value(p).map_err(|e| Error::Invalid { location: "export".into(), key: "data.preprocess".into(), message: e.to_string() })?;
    v["features"] = json!(features);
    Ok(v)
}

/// The data the export holds (built without the steps the script runs; `None` when it runs
/// none, the data being the run's) and those steps, in order.
pub(super) fn chain(s: &Scenario, features: usize) -> Result<(Option<data::Dataset>, Vec<Value>)> {
    let steps = &s.data.preprocess;
    let head = head(steps);
    if head == steps.len() {
        return Ok((None, Vec::new()));
    }
    let script = steps[head..].iter().map(|p| step(p, features)).collect::<Result<Vec<_>>>()?;
    let mut without = s.clone();
    without.data.preprocess.truncate(head);
    Ok((Some(data::build(&without)?), script))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_runs_every_step_after_the_last_drop_nonfinite() {
        let e = |t: &str| Preprocess::Expr { expr: t.into(), consts: Default::default() };
        let std = Preprocess::Standardize { columns: vec![1] };
        assert_eq!(head(&[e("x * 2"), std.clone(), e("x + 1")]), 0);
        assert_eq!(head(&[e("x * 2"), Preprocess::DropNonfinite {}, e("x + 1")]), 2);
        assert_eq!(head(&[]), 0);
        let line = step(&e("x * 2"), 3).unwrap();
        assert!(line["op"] == "expr" && line["torch"].as_str().is_some_and(|l| l.starts_with("(x * 2")), "{line}");
        assert_eq!(step(&std, 3).unwrap(), json!({ "op": "standardize", "columns": [1], "features": 3 }));
    }
}
