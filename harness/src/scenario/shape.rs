//! Static shapes: what a scenario's data looks like before anything is built
//! (the input row's shape, the targets' width, the rows), and the shape of an
//! example between layers. The model's plan (`plan`) is worked out from them.
//! Validation, the memory estimate, the runner and the search space all read
//! shapes from here, so they cannot disagree.

use super::{DataSpec, InputSpec, Scenario, TargetRow, TargetSpec};

/// The shape of one input row: `features` wide, optionally a sequence, optionally token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InShape {
    /// Features per row (per time step for sequences; 1 for token ids).
    pub features: usize,
    /// Sequence length, for sequence inputs.
    pub seq_len: Option<usize>,
    /// Vocabulary size, when the inputs are token ids.
    pub vocab: Option<usize>,
    /// `(channels, height, width)`, when the inputs are images.
    pub image: Option<(usize, usize, usize)>,
}

impl InShape {
    /// The shape of one example as the first layer sees it.
    pub fn shape(&self) -> Shape {
        if let Some((channels, height, width)) = self.image {
            return Shape::Image { channels, height, width };
        }
        match (self.vocab, self.seq_len) {
            (Some(vocab), len) => Shape::Tokens { len: len.unwrap_or(1), vocab },
            (None, Some(len)) => Shape::Seq { len, width: self.features },
            (None, None) => Shape::Flat(self.features),
        }
    }
}

/// The shape of one example between layers (the batch dimension left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A vector of this width.
    Flat(usize),
    /// A sequence of `len` vectors of `width`.
    Seq {
        /// Positions.
        len: usize,
        /// Width per position.
        width: usize,
    },
    /// `len` token ids in `0..vocab`.
    Tokens {
        /// Positions.
        len: usize,
        /// Vocabulary size.
        vocab: usize,
    },
    /// An image `(channels, height, width)`.
    Image {
        /// Channels.
        channels: usize,
        /// Height.
        height: usize,
        /// Width.
        width: usize,
    },
}

impl Shape {
    /// Width of the last dimension (1 for token ids).
    pub fn width(&self) -> usize {
        match *self {
            Shape::Flat(w) | Shape::Seq { width: w, .. } | Shape::Image { width: w, .. } => w,
            Shape::Tokens { .. } => 1,
        }
    }

    /// Values per example.
    pub fn cols(&self) -> usize {
        match *self {
            Shape::Flat(w) => w,
            Shape::Seq { len, width } => len.saturating_mul(width),
            Shape::Tokens { len, .. } => len,
            Shape::Image { channels, height, width } => channels.saturating_mul(height).saturating_mul(width),
        }
    }

    /// In words, for error messages.
    pub fn describe(&self) -> String {
        match *self {
            Shape::Flat(w) => format!("(batch, {w})"),
            Shape::Seq { len, width } => format!("(batch, {len}, {width})"),
            Shape::Tokens { len, vocab } => format!("(batch, {len}) token ids below {vocab}"),
            Shape::Image { channels, height, width } => format!("(batch, {channels}, {height}, {width}) images"),
        }
    }
}

/// The row shape of the inputs, when it is known without reading files.
pub fn input_shape(d: &DataSpec) -> Option<InShape> {
    let row = match &d.inputs {
        InputSpec::Values { rows } => rows.first().map(Vec::len),
        InputSpec::Csv { .. } => return None,
        InputSpec::Tokens { vocab, .. } => return Some(InShape { features: 1, seq_len: Some(d.seq_len?), vocab: Some(*vocab), image: None }),
        _ => None,
    };
    if let Some(i) = d.image {
        return Some(InShape { features: d.row_width()?, seq_len: None, vocab: None, image: Some((i.channels, i.height, i.width)) });
    }
    let features = d.features.or(row.map(|r| r / d.seq_len.filter(|s| *s > 0).unwrap_or(1)))?;
    Some(InShape { features, seq_len: d.seq_len, vocab: None, image: None })
}

/// The number of target columns, when known without reading files.
pub fn target_width(d: &DataSpec) -> Option<usize> {
    match &d.inputs {
        InputSpec::Csv { targets, .. } => Some(targets.len()),
        InputSpec::Tokens { vocab, .. } if d.targets == Some(TargetSpec::NextToken) => Some(d.seq_len?.saturating_mul(*vocab)),
        _ => d.targets.as_ref().and_then(target_spec_width),
    }
}

/// The number of target columns a target spec makes, when known.
pub(crate) fn target_spec_width(t: &TargetSpec) -> Option<usize> {
    Some(match t {
        TargetSpec::Binary | TargetSpec::Linear { .. } => 1,
        TargetSpec::Classes { k } => *k,
        TargetSpec::Uniform { outputs, .. } | TargetSpec::Normal { outputs, .. } => *outputs,
        TargetSpec::Values { values } => match values.first()? {
            TargetRow::One(_) => 1,
            TargetRow::Many(v) => v.len(),
        },
        TargetSpec::NextToken => return None,
    })
}

/// Rows of the training data as written (generated or explicit), when known without reading files.
pub fn rows(s: &Scenario) -> Option<usize> {
    rows_of(&s.data.inputs).or(match s.data.inputs {
        InputSpec::Csv { .. } => None,
        _ => s.data.n,
    })
}

/// Rows of explicit inputs.
pub(crate) fn rows_of(i: &InputSpec) -> Option<usize> {
    match i {
        InputSpec::Values { rows } => Some(rows.len()),
        InputSpec::Tokens { rows, .. } if !rows.is_empty() => Some(rows.len()),
        _ => None,
    }
}

/// Rows held out for a validation fraction (Keras rounds down, at least one).
pub fn held_out(n: usize, fraction: f64) -> usize {
    ((n as f64 * fraction).floor() as usize).max(1)
}
