//! What the loop feeds the model: a split's inputs as tensors (token ids as u32, with the
//! padding mask), batches of them, each fold's batch order (shuffled per epoch from the
//! fold's own stream), and the bounded curves the plateau watch keeps.

use std::collections::VecDeque;

use candle_core::{DType, Device, Tensor};

use super::super::data::{Split, Table};
use super::super::rng::{stream, SHUFFLE_STREAM};
use crate::error::Result;
use crate::scenario::{InShape, Scenario, Shape};

/// A table as a tensor of shape `dims` in `dtype`.
pub(super) fn table(t: &Table, dims: Vec<usize>, dtype: DType, dev: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(&t.values, dims, dev)?.to_dtype(dtype)?)
}

/// A split's inputs as the model reads them (token ids as u32) and its padding mask.
pub(crate) fn inputs(split: &Split, shape: InShape, dtype: DType, dev: &Device) -> Result<(Tensor, Option<Tensor>)> {
    let n = split.x.rows;
    let x = match shape.shape() {
        Shape::Image { channels, height, width } => table(&split.x, vec![n, channels, height, width], dtype, dev)?,
        Shape::Tokens { .. } => table(&split.x, vec![n, split.x.cols], DType::U32, dev)?,
        Shape::Seq { len, .. } => table(&split.x, vec![n, len, split.x.cols / len.max(1)], dtype, dev)?,
        Shape::Flat(_) => table(&split.x, vec![n, split.x.cols], dtype, dev)?,
    };
    let mask = split.mask.as_ref().map(|m| table(m, vec![n, m.cols], dtype, dev)).transpose()?;
    Ok((x, mask))
}

/// A split's tensors, or one batch of them.
pub(super) struct Batch {
    /// The inputs.
    pub(super) x: Tensor,
    /// The targets.
    pub(super) y: Tensor,
    /// The padding mask, if the data has one.
    pub(super) mask: Option<Tensor>,
}

impl Batch {
    /// The rows `idx`, in that order.
    pub(super) fn select(&self, idx: &Tensor) -> Result<Batch> {
        Ok(Batch { x: self.x.index_select(idx, 0)?, y: self.y.index_select(idx, 0)?, mask: self.mask.as_ref().map(|m| m.index_select(idx, 0)).transpose()? })
    }

    /// Rows `start..start + len`.
    pub(super) fn narrow(&self, start: usize, len: usize) -> Result<Batch> {
        Ok(Batch { x: self.x.narrow(0, start, len)?, y: self.y.narrow(0, start, len)?, mask: self.mask.as_ref().map(|m| m.narrow(0, start, len)).transpose()? })
    }
}

/// Appends to a curve that keeps its last `cap` points.
pub(super) fn push_bounded(curve: &mut VecDeque<f64>, v: f64, cap: usize) {
    if curve.len() == cap {
        curve.pop_front();
    }
    curve.push_back(v);
}

/// A fold's batch order: the rows in order, shuffled again in place at the start of every
/// epoch (with `train.shuffle`) from the fold's own stream, the same on every machine.
pub(crate) struct Orders {
    /// The current epoch's order.
    pub(crate) order: Vec<u32>,
    rng: rand_chacha::ChaCha8Rng,
}

impl Orders {
    /// The order of fold `fold`'s `n` training rows before any shuffle.
    pub(crate) fn new(s: &Scenario, fold: usize, n: usize) -> Self {
        Orders { order: (0..n as u32).collect(), rng: stream(s.seed, SHUFFLE_STREAM + fold as u64) }
    }

    /// Shuffles the order in place (Fisher–Yates), for the next epoch.
    pub(crate) fn shuffle(&mut self) {
        use rand::Rng;
        for i in (1..self.order.len()).rev() {
            self.order.swap(i, self.rng.random_range(0..=i));
        }
    }
}
