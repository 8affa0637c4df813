//! The `[data]` table: where the rows come from (generated, explicit or CSV),
//! how targets are made, the validation split, injected corruptions and
//! preprocessing. The runner builds the rows from these in `run::data`.

use serde::{Deserialize, Serialize};
use strum::{IntoStaticStr, VariantArray};

use super::{is_one, one, one_usize};

/// Where the rows come from and what happens to them before training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct DataSpec {
    /// Number of rows to generate (synthetic inputs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// Number of input features per row (or per time step, for sequences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<usize>,
    /// Sequence length: inputs become `(n, seq_len, features)` for recurrent models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_len: Option<usize>,
    /// How the inputs are made.
    pub inputs: InputSpec,
    /// Per-feature multipliers applied after generation (one per feature).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale: Vec<f64>,
    /// Groups of features multiplied by a factor, e.g. `{ first = 5, factor = 100.0 }`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale_groups: Vec<ScaleGroup>,
    /// How the targets are made (absent for CSV inputs, which carry their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetSpec>,
    /// Validation split or k-fold cross-validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<ValidationSpec>,
    /// Corruptions injected into a split after it is made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inject: Vec<Injection>,
    /// Preprocessing steps, fitted on the training split (an expression on each split), applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "preprocess_steps")]
    pub preprocess: Vec<Preprocess>,
    /// Multiplies every target after it is made (before injection and preprocessing).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub target_scale: f64,
    /// Per-row sequence lengths: positions past a row's length are padding, masked by attention and pooling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<PaddingSpec>,
    /// Rows are images `(channels, height, width)`, stored row-major (channel, then row, then column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSpec>,
}

/// The shape of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Channels.
    pub channels: usize,
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
}

impl DataSpec {
    /// Values per input row, when set by the table itself: `features × seq_len`, or an image's pixels.
    pub fn row_width(&self) -> Option<usize> {
        match self.image {
            Some(i) => Some(i.channels.saturating_mul(i.height).saturating_mul(i.width)),
            None => self.features.map(|f| f.saturating_mul(self.seq_len.unwrap_or(1))),
        }
    }
}

/// Padding at the end of each sequence: drawn lengths or explicit ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct PaddingSpec {
    /// Each row pads a uniformly drawn number of positions in `0..=floor(max_fraction · seq_len)`;
    /// at 1 a row can be fully padded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fraction: Option<f64>,
    /// Explicit unpadded lengths, one per training row (0 pads the whole row).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lengths: Vec<usize>,
}

/// A contiguous group of features sharing one scale factor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct ScaleGroup {
    /// Index of the first feature in the group (default 0).
    #[serde(default)]
    pub start: usize,
    /// Number of features in the group.
    pub first: usize,
    /// Multiplier for those features.
    pub factor: f64,
}

/// The source of input rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum InputSpec {
    /// Independent normal draws.
    Normal {
        /// Mean of every feature.
        #[serde(default)]
        mean: f64,
        /// Standard deviation of every feature.
        #[serde(default = "one")]
        std: f64,
    },
    /// Independent uniform draws in `[low, high)`.
    Uniform {
        /// Lower bound.
        #[serde(default)]
        low: f64,
        /// Upper bound.
        #[serde(default = "one")]
        high: f64,
    },
    /// Explicit rows, each `features` (× `seq_len`) values long.
    Values {
        /// The rows.
        rows: Vec<Vec<f64>>,
    },
    /// A CSV file with a header; `targets` names the target columns, the rest are features.
    Csv {
        /// Path, relative to the scenario file.
        path: String,
        /// Target column names.
        targets: Vec<String>,
    },
    /// Token ids in `0..vocab`, `seq_len` per row: explicit `rows`, or synthetic sequences that
    /// count up from a random start by a per-row step of 1 to 3 (mod `vocab`), so they can be learned.
    Tokens {
        /// Vocabulary size.
        vocab: usize,
        /// Explicit rows of ids (one more than `seq_len` with `next_token` targets).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        rows: Vec<Vec<u32>>,
    },
}

/// How targets are made from the inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetSpec {
    /// 0/1 labels, one column (like `torch.randint(0, 2, (n,))`).
    Binary,
    /// One of `k` classes, one-hot encoded in `k` columns.
    Classes {
        /// Number of classes.
        k: usize,
    },
    /// One of `k` classes as its index in one column (PyTorch's class-index targets, for
    /// `cross_entropy`); a drawn fraction of the rows hold the loss's `ignore_index` instead.
    Labels {
        /// Number of classes.
        k: usize,
        /// Chance that a row is ignored (its target the loss's `ignore_index`, -100 by default).
        #[serde(default)]
        ignore_fraction: f64,
    },
    /// Label sequences for `ctc`: each row draws a length in `min_length..=length` and that many
    /// labels in `0..k` other than the loss's blank, padded with the blank to `length` columns.
    Sequences {
        /// Number of classes, the blank included.
        k: usize,
        /// The longest sequence (the target columns).
        length: usize,
        /// The shortest sequence.
        #[serde(default = "one_usize")]
        min_length: usize,
    },
    /// Uniform regression targets in `[low, high)`.
    Uniform {
        /// Lower bound.
        #[serde(default)]
        low: f64,
        /// Upper bound.
        #[serde(default = "one")]
        high: f64,
        /// Number of target columns.
        #[serde(default = "one_usize")]
        outputs: usize,
    },
    /// Normal regression targets.
    Normal {
        /// Mean.
        #[serde(default)]
        mean: f64,
        /// Standard deviation.
        #[serde(default = "one")]
        std: f64,
        /// Number of target columns.
        #[serde(default = "one_usize")]
        outputs: usize,
    },
    /// `y = x · w + noise`, with `w` drawn from a standard normal (one column).
    Linear {
        /// Standard deviation of the added noise.
        #[serde(default)]
        noise: f64,
    },
    /// Explicit targets: one value per row, or one row of values per row.
    Values {
        /// The targets, one entry per input row.
        values: Vec<TargetRow>,
    },
    /// Language modelling on token inputs: the target at each position is the next token,
    /// one-hot over the vocabulary, so predictions are `(batch, seq, vocab)`.
    NextToken,
    /// Language modelling on token inputs with the next token at each position as its class
    /// index, `(batch, seq)`, as a PyTorch user's `labels` (`F.cross_entropy(logits.view(-1, V),
    /// labels.view(-1))`); ignored positions hold the loss's `ignore_index` (-100 by default).
    NextTokenLabels {
        /// Chance that a position is ignored.
        #[serde(default)]
        ignore_fraction: f64,
        /// The prompt's length of each row, in order: its first positions are ignored, as
        /// instruction tuning masks the prompt (a prompt of `seq_len` or more ignores the whole row).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        prompt_lengths: Vec<usize>,
    },
}

impl TargetSpec {
    /// Whether it is made from token rows holding one more id than `seq_len` (each position's
    /// next token): `next_token` and `next_token_labels`.
    pub fn next_token(&self) -> bool {
        matches!(self, TargetSpec::NextToken | TargetSpec::NextTokenLabels { .. })
    }
}

/// One row of explicit targets: a bare number or a list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(untagged)]
pub enum TargetRow {
    /// A single target column.
    One(f64),
    /// Several target columns.
    Many(Vec<f64>),
}

/// The validation data: a held-out fraction, k folds, or a separate set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct ValidationSpec {
    /// Hold out this fraction of the rows: the last rows, unshuffled (Keras's `validation_split`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// K-fold cross-validation: train `kfold` models, each validated on one fold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kfold: Option<usize>,
    /// A separate validation set of this many rows, drawn like the training inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// A separate, explicit validation set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<InputSpec>,
    /// Targets for an explicit validation set (`inputs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<TargetSpec>,
}

/// A corruption of some cells of one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Injection {
    /// What to write into the chosen cells.
    pub value: InjectValue,
    /// Which split: `train`, `validation` or `both`.
    #[serde(default)]
    pub split: SplitSel,
    /// Inputs or targets.
    #[serde(default)]
    pub into: InjectInto,
    /// Fraction of cells to corrupt, chosen by the seeded injection stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// Explicit rows (with `columns`, the cells are their product).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<usize>,
    /// Explicit columns (all columns if empty and `rows` is given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<usize>,
    /// Magnitude of `outlier` values (sign is drawn).
    #[serde(default = "outlier_default")]
    pub magnitude: f64,
}

/// The value an injection writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary, IntoStaticStr, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum InjectValue {
    /// Not a number.
    Nan,
    /// Positive infinity.
    Inf,
    /// Negative infinity.
    NegInf,
    /// Exact zero.
    Zero,
    /// ± `magnitude`.
    Outlier,
}

/// Which split an injection or preprocessing step touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, arbitrary::Arbitrary, IntoStaticStr, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum SplitSel {
    /// Training rows only.
    #[default]
    Train,
    /// Validation rows only.
    Validation,
    /// Both.
    Both,
}

/// Inputs or targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, arbitrary::Arbitrary, IntoStaticStr, VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum InjectInto {
    /// The input features.
    #[default]
    Inputs,
    /// The targets.
    Targets,
}

/// One preprocessing step. Statistics are fitted on the training split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary, strum::IntoStaticStr)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
#[strum(serialize_all = "snake_case")]
pub enum Preprocess {
    /// `(x - mean) / std` per column (sklearn's StandardScaler: population std, std 0 → 1).
    Standardize {
        /// Columns (all if empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<usize>,
    },
    /// `(x - min) / (max - min)` per column (sklearn's MinMaxScaler: range 0 → 1).
    MinMax {
        /// Columns (all if empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<usize>,
    },
    /// `1 / x`; with `guard`, exact zeros become `guard` instead (seed 001's `np.where`).
    Reciprocal {
        /// Columns (all if empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<usize>,
        /// Value written where `x == 0`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        guard: Option<f64>,
    },
    /// Natural log; with `epsilon`, `log(x + epsilon)`.
    Log {
        /// Columns (all if empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<usize>,
        /// Added before the log.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epsilon: Option<f64>,
    },
    /// Clamp into `[min, max]`.
    Clip {
        /// Columns (all if empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<usize>,
        /// Lower bound.
        min: f64,
        /// Upper bound.
        max: f64,
    },
    /// Replace non-finite cells by the column's mean over finite training cells.
    ImputeMean {
        /// Columns (all if empty).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        columns: Vec<usize>,
    },
    /// Drop every row with a non-finite input or target. (A struct variant, so an unknown key such as `columns` is an error.)
    DropNonfinite {},
    /// An expression of `x`, the split's inputs `(rows, features)` (or `(rows, seq, features)`,
    /// `(rows, c, h, w)`), e.g. `(x - mean(x, dim=0)) / std(x, dim=0)`: evaluated on each split
    /// with that split's own statistics, as people write it on their tensors, unguarded (a
    /// constant feature's std is 0 and the step gives 0/0 = NaN, as in PyTorch). Written
    /// `expr = "..."` alone (`op = "expr"` may be left out).
    Expr {
        /// The expression, in the language of `type = "expr"` layers.
        expr: String,
        /// Its named constants.
        #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
        consts: std::collections::BTreeMap<String, f64>,
    },
}

impl Preprocess {
    /// The step as a cause names it: its op, and an expression's text.
    pub fn describe(&self) -> String {
        if let Preprocess::Expr { expr, .. } = self {
            return format!("expr `{expr}`");
        }
        crate::scenario::Named::name(self).to_string()
    }
}

/// Reads `[[data.preprocess]]`: each step a table of its `op` and keys, where a table with
/// `expr` and no `op` is an expression step.
fn preprocess_steps<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<Preprocess>, D::Error> {
    let tables = Vec::<toml::Table>::deserialize(d)?;
    tables
        .into_iter()
        .map(|mut t| {
            if !t.contains_key("op") && t.contains_key("expr") {
                t.insert("op".into(), toml::Value::String("expr".into()));
            }
            Preprocess::deserialize(toml::Value::Table(t)).map_err(serde::de::Error::custom)
        })
        .collect()
}

fn outlier_default() -> f64 {
    1e6
}
