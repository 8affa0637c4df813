//! Static shapes: the input row's shape and the shape of an example between
//! layers. The model's plan (`plan`) is worked out from them; what the data
//! section says about sizes is in `sizes`. A leaf: the ops read `Shape`, and it
//! reads no other part of the scenario.

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
