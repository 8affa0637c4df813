//! What the data section says about sizes without reading files: the inputs' row
//! shape, the targets' width, the row count and the held-out split.

use super::{DataSpec, InShape, InputSpec, Scenario, TargetRow, TargetSpec};

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
        InputSpec::Tokens { .. } if matches!(d.targets, Some(TargetSpec::NextTokenLabels { .. })) => d.seq_len,
        _ => d.targets.as_ref().and_then(target_spec_width),
    }
}

/// The number of target columns a target spec makes, when known.
pub(crate) fn target_spec_width(t: &TargetSpec) -> Option<usize> {
    Some(match t {
        TargetSpec::Binary | TargetSpec::Linear { .. } | TargetSpec::Labels { .. } => 1,
        TargetSpec::Classes { k } => *k,
        TargetSpec::Uniform { outputs, .. } | TargetSpec::Normal { outputs, .. } => *outputs,
        TargetSpec::Sequences { length, .. } => *length,
        TargetSpec::Values { values } => match values.first()? {
            TargetRow::One(_) => 1,
            TargetRow::Many(v) => v.len(),
        },
        TargetSpec::NextToken | TargetSpec::NextTokenLabels { .. } => return None,
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
