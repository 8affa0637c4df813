//! The per-step trace: one row per optimizer step with the numeric signals the
//! search engines steer by (loss, gradient norm, activation magnitudes).
//!
//! Values are written in Rust's shortest round-trip exponent form (`1.5e-3`,
//! `NaN`, `inf`), so a trace read back compares bit for bit.

use std::path::Path;

use crate::error::{Error, Result};

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TraceRow {
    /// Step within the fold (1-based).
    pub step: usize,
    /// Epoch (1-based).
    pub epoch: usize,
    /// Fold (0 without k-fold).
    pub fold: usize,
    /// Training loss of the step's batch.
    pub train_loss: f64,
    /// Validation loss, on the last step of an epoch with validation data.
    pub val_loss: Option<f64>,
    /// Global L2 norm of the gradients before clipping (watch on).
    pub grad_norm: Option<f64>,
    /// Global L2 norm of the parameters after the update (watch on).
    pub param_norm: Option<f64>,
    /// Learning rate used.
    pub lr: f64,
    /// `log2(dtype max / largest |value|)` over the step's layer outputs and gradients (watch on).
    pub headroom: Option<f64>,
    /// Fraction of the step's gradient values that are subnormal in the dtype (watch on).
    pub grad_subnormal: Option<f64>,
    /// The loss scale this step's loss was multiplied by (`[train.loss_scale]` on).
    pub loss_scale: Option<f64>,
    /// Whether the loss scaler skipped this step for non-finite gradients (`[train.loss_scale]` on).
    pub skipped: Option<bool>,
    /// Largest |value| of each layer's output (watch on; empty otherwise).
    pub max_abs: Vec<f64>,
}

/// The steps of a run, with the layer names that head the activation columns.
///
/// A run of millions of steps keeps a bounded trace: the first [`TRACE_HEAD`]
/// rows and at least the last [`TRACE_TAIL`] (the steps leading up to the
/// first non-finite value, where a run stops), at most `TRACE_HEAD + 2 ×
/// TRACE_TAIL` rows in all. `dropped` counts the rows left out between them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Trace {
    /// `layers.{i}.{type}` for each activation column.
    pub layers: Vec<String>,
    /// The rows kept, in order.
    pub rows: Vec<TraceRow>,
    /// Rows left out between the head and the tail.
    pub dropped: usize,
    /// Whether the run scaled its loss: the rows then have `loss_scale` and `skipped` columns.
    pub scaled: bool,
}

/// The loss scaler's columns, after the fixed ones, in runs that scale their loss.
const SCALER: [&str; 2] = ["loss_scale", "skipped"];

/// Rows kept from the start of a long run.
pub const TRACE_HEAD: usize = 10_000;
/// Rows kept (at least) from the end of a long run.
pub const TRACE_TAIL: usize = 10_000;

/// How many rows a trace of `steps` steps keeps.
pub fn kept_rows(steps: usize) -> usize {
    let full = TRACE_HEAD + 2 * TRACE_TAIL;
    if steps <= full {
        steps
    } else {
        TRACE_HEAD + TRACE_TAIL + (steps - full - 1) % TRACE_TAIL + 1
    }
}

const FIXED: [&str; 10] = ["step", "epoch", "fold", "train_loss", "val_loss", "grad_norm", "param_norm", "lr", "headroom", "grad_subnormal"];

/// Formats a float in shortest round-trip form.
pub fn fmt(v: f64) -> String {
    format!("{v:e}")
}

fn opt(v: Option<f64>) -> String {
    v.map(fmt).unwrap_or_default()
}

impl Trace {
    /// Appends a row; past `TRACE_HEAD + 2 × TRACE_TAIL` rows, the oldest
    /// `TRACE_TAIL` rows after the head are dropped (one move per `TRACE_TAIL`
    /// rows, so appending stays cheap).
    pub(crate) fn push(&mut self, row: TraceRow) {
        if self.rows.len() == TRACE_HEAD + 2 * TRACE_TAIL {
            self.rows.drain(TRACE_HEAD..TRACE_HEAD + TRACE_TAIL);
            self.dropped += TRACE_TAIL;
        }
        self.rows.push(row);
    }

    /// Bytes the kept rows of a run with `layers` layers can take at most, for the memory estimate.
    pub(crate) fn max_bytes(layers: usize) -> u128 {
        let row = std::mem::size_of::<TraceRow>() + 8 * layers;
        ((TRACE_HEAD + 2 * TRACE_TAIL) * row) as u128
    }

    /// The CSV header.
    pub fn header(&self) -> Vec<String> {
        let scaler = if self.scaled { &SCALER[..] } else { &[] };
        FIXED.iter().chain(scaler).map(|s| s.to_string()).chain(self.layers.iter().map(|l| format!("max_abs.{l}"))).collect()
    }

    /// The trace as CSV text.
    pub fn to_csv(&self) -> Result<Vec<u8>> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let ser = |source: csv::Error| Error::Csv { path: "trace.csv".into(), source };
        w.write_record(self.header()).map_err(ser)?;
        for r in &self.rows {
            let mut rec = vec![
                r.step.to_string(),
                r.epoch.to_string(),
                r.fold.to_string(),
                fmt(r.train_loss),
                opt(r.val_loss),
                opt(r.grad_norm),
                opt(r.param_norm),
                fmt(r.lr),
                opt(r.headroom),
                opt(r.grad_subnormal),
            ];
            if self.scaled {
                rec.extend([opt(r.loss_scale), r.skipped.map_or(String::new(), |s| u8::from(s).to_string())]);
            }
            rec.extend((0..self.layers.len()).map(|i| opt(r.max_abs.get(i).copied())));
            w.write_record(rec).map_err(ser)?;
        }
        w.into_inner().map_err(|e| ser(csv::Error::from(e.into_error())))
    }

    /// Writes the trace as CSV, atomically.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        crate::atomic::write(path, &self.to_csv()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_through_text() {
        for v in [0.1, 1e-7, 3.4028234663852886e38, f64::MIN_POSITIVE, -0.0, 123456.789] {
            assert_eq!(fmt(v).parse::<f64>().unwrap().to_bits(), v.to_bits(), "{v}");
        }
        assert_eq!(fmt(f64::NAN), "NaN");
        assert_eq!(fmt(f64::INFINITY).parse::<f64>().unwrap(), f64::INFINITY);
    }

    #[test]
    fn long_runs_keep_a_bounded_head_and_tail() {
        let mut t = Trace::default();
        let n = TRACE_HEAD + 5 * TRACE_TAIL + 7;
        for step in 1..=n {
            t.push(TraceRow { step, ..Default::default() });
        }
        assert!(t.rows.len() <= TRACE_HEAD + 2 * TRACE_TAIL);
        assert_eq!(t.rows.len() + t.dropped, n, "every row is kept or counted");
        assert_eq!(t.rows.len(), kept_rows(n));
        assert_eq!(kept_rows(5), 5);
        assert!(t.rows[..TRACE_HEAD].iter().enumerate().all(|(i, r)| r.step == i + 1), "the head is the first steps");
        let tail = &t.rows[t.rows.len() - TRACE_TAIL..];
        assert!(tail.iter().enumerate().all(|(i, r)| r.step == n - TRACE_TAIL + 1 + i), "the tail is the last steps");
    }

    #[test]
    fn csv_has_a_column_per_layer() {
        let t = Trace {
            layers: vec!["layers.0.linear".into()],
            rows: vec![TraceRow { step: 1, epoch: 1, train_loss: 0.5, lr: 0.01, max_abs: vec![2.0], ..Default::default() }],
            dropped: 0,
            scaled: false,
        };
        let text = String::from_utf8(t.to_csv().unwrap()).unwrap();
        assert_eq!(text, "step,epoch,fold,train_loss,val_loss,grad_norm,param_norm,lr,headroom,grad_subnormal,max_abs.layers.0.linear\n1,1,0,5e-1,,,,1e-2,,,2e0\n");
        let scaled = Trace { scaled: true, rows: vec![TraceRow { loss_scale: Some(65536.0), skipped: Some(true), ..t.rows[0].clone() }], ..t };
        let text = String::from_utf8(scaled.to_csv().unwrap()).unwrap();
        assert!(
            text.starts_with("step,epoch,fold,train_loss,val_loss,grad_norm,param_norm,lr,headroom,grad_subnormal,loss_scale,skipped,max_abs.layers.0.linear\n1,1,0,5e-1,,,,1e-2,,,6.5536e4,1,2e0\n"),
            "{text}"
        );
    }
}
