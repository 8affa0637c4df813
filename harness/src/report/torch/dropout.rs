//! The dropout masks of an export: a run draws each training step's masks from
//! that step's own stream (`rng::dropout_stream`), node by node, so they can be
//! drawn again here without training, for every step the run may take. Each
//! dropout node gets one `u8` tensor per fold, `(steps · accumulate, batch, cols)`, one
//! slice per micro-batch: 1 keeps a value, 0 drops it; the last, shorter batch of an epoch
//! fills its first rows.

use safetensors::tensor::Dtype;

use super::Raw;
use crate::error::{Error, Result};
use crate::ops::gated::Gated;
use crate::run::data::Dataset;
use crate::run::model::draw_mask;
use crate::run::rng::dropout_stream;
use crate::scenario::{Layer, Plan, Scenario};

/// Most mask cells written (steps × batch × width over all folds and nodes); more is refused.
const MAX_MASK_CELLS: usize = 100_000_000;

/// Each fold's dropout masks, named `fold{f}.dropout.{node}`; none without dropout.
pub(super) fn masks(s: &Scenario, data: &Dataset, plan: &Plan) -> Result<Vec<(String, Raw)>> {
    // Each drawing node and the values per row it draws: its input's for `dropout`, the
    // hidden state's for a recurrent dropout.
    let nodes: Vec<(usize, usize, f64)> = plan
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.layer.op().dropout() > 0.0)
        .map(|(i, n)| {
            let cols = match n.layer {
                Layer::Lstm(Gated { hidden, .. }) | Layer::Gru(Gated { hidden, .. }) => hidden,
                _ => n.shape.cols(),
            };
            (i, cols, n.layer.op().dropout())
        })
        .collect();
    let mut out = Vec::new();
    if nodes.is_empty() {
        return Ok(out);
    }
    let mut cells = 0usize;
    let k = s.train.accumulate.max(1);
    for (f, fold) in data.folds.iter().enumerate() {
        let n = fold.train.x.rows;
        let batch = s.train.batch_size.unwrap_or(n).clamp(1, n.max(1));
        let per_epoch = n.div_ceil(batch);
        let steps_per_epoch = per_epoch.div_ceil(k);
        let steps = s.train.max_steps.map_or(s.train.epochs.saturating_mul(steps_per_epoch), |m| m.min(s.train.epochs.saturating_mul(steps_per_epoch)));
        // Micro-batch `u = (step − 1)·k + j + 1` of a step draws from stream `u` (see `train::step`).
        let slots = steps.saturating_mul(k);
        cells = cells.saturating_add(slots.saturating_mul(batch).saturating_mul(nodes.iter().map(|(_, c, _)| c).sum()));
        if cells > MAX_MASK_CELLS {
            let message = format!("{steps} steps of dropout masks are more than an export holds ({MAX_MASK_CELLS} values); lower train.epochs or set train.max_steps");
            return Err(Error::Invalid { location: s.name.clone(), key: "train.epochs".into(), message });
        }
        let mut tensors: Vec<Vec<u8>> = nodes.iter().map(|(_, cols, _)| vec![0u8; slots * batch * cols]).collect();
        for step in 1..=steps {
            for j in 0..k {
                let m = ((step - 1) % steps_per_epoch) * k + j;
                if m >= per_epoch {
                    break;
                }
                let rows = batch.min(n - m * batch);
                let u = (step - 1) * k + j + 1;
                let mut rng = dropout_stream(s.seed, f, u);
                for ((_, cols, p), t) in nodes.iter().zip(tensors.iter_mut()) {
                    let at = (u - 1) * batch * cols;
                    for (cell, keep) in t[at..at + rows * cols].iter_mut().zip(draw_mask(&mut rng, rows * cols, *p)) {
                        *cell = u8::from(keep);
                    }
                }
            }
        }
        for ((i, cols, _), bytes) in nodes.iter().zip(tensors) {
            out.push((format!("fold{f}.dropout.{}", plan.nodes[*i].name), Raw { dtype: Dtype::U8, shape: vec![slots, batch, *cols], bytes }));
        }
    }
    Ok(out)
}
