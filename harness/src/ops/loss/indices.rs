//! Which targets are class indices, and which index is ignored: what the loss node, the
//! plan's checks and `classes.rs` all ask, kept apart from the losses themselves.

use crate::scenario::LossSpec;

/// PyTorch's default `ignore_index`.
pub const IGNORE_INDEX: i64 = -100;

/// Whether a target of `targets` values per row holds class indices for a prediction of
/// `outputs` values per row whose last dimension has `classes` classes: one index per row (or
/// position), as PyTorch tells the two forms apart by their shapes.
pub fn indexes(outputs: usize, classes: usize, targets: usize) -> bool {
    classes >= 2 && targets.checked_mul(classes) == Some(outputs)
}

/// Whether the loss `s` reads class indices: a `cross_entropy` whose targets have one value per
/// row or position of the plan's prediction (which has at least 2 classes).
pub fn reads_indices(s: &LossSpec, p: &crate::scenario::Plan, targets: usize) -> bool {
    s.kind == crate::scenario::LossKind::CrossEntropy && indexes(p.out_width, p.out.width(), targets)
}

/// The loss's `ignore_index`: its own, or PyTorch's default -100.
pub fn ignore_index(s: &LossSpec) -> i64 {
    s.ignore_index.unwrap_or(IGNORE_INDEX)
}
