//! Making rows: synthetic inputs drawn from the data stream, explicit rows,
//! or a CSV file; per-feature scales; and targets made from the inputs.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{invalid, Split, Table};
use crate::error::Result;
use crate::run::rng::{normal, stream, LINEAR_STREAM};
use crate::scenario::{DataSpec, InputSpec, LossSpec, Scenario, TargetRow, TargetSpec};

/// Makes rows from an input spec and a target spec; returns them and the feature count.
pub(super) fn make(d: &DataSpec, inputs: &InputSpec, targets: Option<&TargetSpec>, n: Option<usize>, s: &Scenario, rng: &mut ChaCha8Rng) -> Result<(Split, usize)> {
    let seq = d.seq_len.unwrap_or(1);
    let (mut x, csv_y) = match inputs {
        InputSpec::Normal { mean, std } => (draw(n, d, rng, |r| mean + std * normal(r)), None),
        InputSpec::Uniform { low, high } => (draw(n, d, rng, |r| low + (high - low) * r.random::<f64>()), None),
        InputSpec::Values { rows } => (Table::from_rows(rows, rows[0].len()), None),
        InputSpec::Csv { path, targets } => {
            let (x, y) = super::csv::read_csv(s, path, targets)?;
            (x, Some(y))
        }
        InputSpec::Tokens { vocab, rows } => {
            let next = targets.is_some_and(TargetSpec::next_token);
            let (x, ids) = tokens(*vocab, rows, n, seq, next, rng).map_err(|(k, m)| invalid(s, &k, m))?;
            let y = match targets {
                Some(TargetSpec::NextToken) => Some(one_hot(&ids, seq, *vocab)),
                Some(TargetSpec::NextTokenLabels { ignore_fraction, prompt_lengths }) => {
                    let ignored = crate::ops::loss::ignore_index(&s.loss) as f64;
                    Some(next_labels(&ids, *ignore_fraction, prompt_lengths, ignored, rng).map_err(|m| invalid(s, "data.targets.prompt_lengths", m))?)
                }
                _ => None,
            };
            (x, y)
        }
    };
    let features = x.cols / seq;
    if x.cols % seq != 0 {
        return Err(invalid(s, "data.seq_len", format!("rows of {} values do not split into {seq} steps", x.cols)));
    }
    scale(d, &mut x, features).map_err(|(key, m)| invalid(s, &key, m))?;
    let y = match (csv_y, targets) {
        (Some(y), _) => y,
        (None, Some(t)) if t.next_token() => return Err(invalid(s, "data.targets", "next_token targets need token inputs (inputs = { kind = \"tokens\", vocab = ... })")),
        (None, Some(t)) => make_targets(t, &x, rng, s.seed, &s.loss),
        (None, None) => return Err(invalid(s, "data.targets", "missing")),
    };
    let mut y = y;
    if d.target_scale != 1.0 {
        y.values.iter_mut().for_each(|v| *v *= d.target_scale);
    }
    if y.rows != x.rows {
        return Err(invalid(s, "data.targets", format!("{} targets for {} rows", y.rows, x.rows)));
    }
    Ok((Split { x, y, mask: None }, features))
}

/// Every row's token ids.
type Ids = Vec<Vec<usize>>;

/// Token rows as ids (`seq` inputs per row), and every row's ids with its last one's next
/// token when `next`. Synthetic rows count up from a random start by a per-row step of 1 to 3, mod `vocab`.
fn tokens(vocab: usize, rows: &[Vec<u32>], n: Option<usize>, seq: usize, next: bool, rng: &mut ChaCha8Rng) -> std::result::Result<(Table, Ids), (String, String)> {
    let len = seq + usize::from(next);
    let ids: Vec<Vec<usize>> = if rows.is_empty() {
        (0..n.unwrap_or(0))
            .map(|_| {
                let (start, step) = (rng.random_range(0..vocab.max(1)), rng.random_range(1..=3usize));
                (0..len).map(|t| (start + t * step) % vocab.max(1)).collect()
            })
            .collect()
    } else {
        rows.iter().map(|r| r.iter().map(|&t| t as usize).collect()).collect()
    };
    for (i, r) in ids.iter().enumerate() {
        if r.len() != len {
            let why = if next { format!("{seq} inputs and the last one's next token") } else { "one per position".into() };
            return Err((format!("data.inputs.rows.{i}"), format!("has {} ids; rows need {len} ({why})", r.len())));
        }
        if let Some(j) = r.iter().position(|&t| t >= vocab) {
            return Err((format!("data.inputs.rows.{i}.{j}"), format!("token id {} is outside the vocabulary 0..{vocab}", r[j])));
        }
    }
    let x = Table { rows: ids.len(), cols: seq, values: ids.iter().flat_map(|r| r[..seq].iter().map(|&t| t as f64)).collect() };
    Ok((x, ids))
}

/// `next_token` targets: each position's next token one-hot over the vocabulary, `seq × vocab` per row.
fn one_hot(ids: &[Vec<usize>], seq: usize, vocab: usize) -> Table {
    let mut values = vec![0.0; ids.len() * seq * vocab];
    for (i, r) in ids.iter().enumerate() {
        for (t, &id) in r[1..].iter().enumerate() {
            values[(i * seq + t) * vocab + id] = 1.0;
        }
    }
    Table { rows: ids.len(), cols: seq * vocab, values }
}

/// `next_token_labels` targets: each position's next token as its index, `seq` per row, or
/// `ignored` (the loss's `ignore_index`) in a row's first `prompt_lengths` positions and at a
/// drawn `ignore_fraction` of the others (one draw per position, row by row, whether or not
/// the prompt covers it, so a prompt does not move the later draws).
fn next_labels(ids: &[Vec<usize>], ignore_fraction: f64, prompt_lengths: &[usize], ignored: f64, rng: &mut ChaCha8Rng) -> std::result::Result<Table, String> {
    if !prompt_lengths.is_empty() && prompt_lengths.len() != ids.len() {
        return Err(format!("has {} prompt lengths for {} rows: give one per row", prompt_lengths.len(), ids.len()));
    }
    let seq = ids.first().map_or(0, |r| r.len() - 1);
    let mut values = Vec::with_capacity(ids.len() * seq);
    for (i, r) in ids.iter().enumerate() {
        let prompt = prompt_lengths.get(i).copied().unwrap_or(0);
        for (t, &id) in r[1..].iter().enumerate() {
            let drawn = rng.random::<f64>() < ignore_fraction;
            values.push(if t < prompt || drawn { ignored } else { id as f64 });
        }
    }
    Ok(Table { rows: ids.len(), cols: seq, values })
}

fn draw(n: Option<usize>, d: &DataSpec, rng: &mut ChaCha8Rng, mut f: impl FnMut(&mut ChaCha8Rng) -> f64) -> Table {
    let (rows, cols) = (n.unwrap_or(0), d.row_width().unwrap_or(0));
    Table { rows, cols, values: (0..rows * cols).map(|_| f(rng)).collect() }
}

/// Multiplies each feature by its `scale` entry and its groups' factors; an error names its key.
fn scale(d: &DataSpec, x: &mut Table, features: usize) -> std::result::Result<(), (String, String)> {
    if !d.scale.is_empty() && d.scale.len() != features {
        return Err(("data.scale".into(), format!("has {} entries but there are {features} features", d.scale.len())));
    }
    let mut factor = vec![1.0; features];
    for (f, s) in factor.iter_mut().zip(&d.scale) {
        *f *= s;
    }
    for (i, g) in d.scale_groups.iter().enumerate() {
        let past = || (format!("data.scale_groups.{i}"), format!("features {} to {} are past the last of the {features} features", g.start, g.start.saturating_add(g.first.saturating_sub(1))));
        let end = g.start.checked_add(g.first).ok_or_else(past)?;
        factor.get_mut(g.start..end).ok_or_else(past)?.iter_mut().for_each(|f| *f *= g.factor);
    }
    if factor.iter().any(|f| *f != 1.0) {
        for (i, v) in x.values.iter_mut().enumerate() {
            *v *= factor[i % x.cols % features];
        }
    }
    Ok(())
}

/// The targets `t` makes for the rows `x`; the `loss` says what an ignored label holds
/// (`ignore_index`) and which class pads a label sequence (`blank`).
fn make_targets(t: &TargetSpec, x: &Table, rng: &mut ChaCha8Rng, seed: u64, loss: &LossSpec) -> Table {
    let n = x.rows;
    let fill = |cols: usize, rng: &mut ChaCha8Rng, f: &dyn Fn(&mut ChaCha8Rng) -> f64| Table { rows: n, cols, values: (0..n * cols).map(|_| f(rng)).collect() };
    match t {
        TargetSpec::Binary => fill(1, rng, &|r| f64::from(r.random_range(0..2u8))),
        TargetSpec::Classes { k } => {
            let mut values = vec![0.0; n * k];
            for row in 0..n {
                values[row * k + rng.random_range(0..*k)] = 1.0;
            }
            Table { rows: n, cols: *k, values }
        }
        TargetSpec::Labels { k, ignore_fraction } => {
            let values = (0..n)
                .map(|_| {
                    let class = rng.random_range(0..*k) as f64;
                    if rng.random::<f64>() < *ignore_fraction {
                        crate::ops::loss::ignore_index(loss) as f64
                    } else {
                        class
                    }
                })
                .collect();
            Table { rows: n, cols: 1, values }
        }
        TargetSpec::Sequences { k, length, min_length } => {
            let blank = crate::ops::expr::losses::blank(loss);
            let mut values = vec![blank as f64; n * length];
            for row in values.chunks_exact_mut(*length) {
                let len = rng.random_range(*min_length..=*length);
                for v in &mut row[..len] {
                    // A label other than the blank: one of the k − 1 others.
                    let c = rng.random_range(0..k.saturating_sub(1).max(1));
                    *v = (c + usize::from(c >= blank)) as f64;
                }
            }
            Table { rows: n, cols: *length, values }
        }
        TargetSpec::Uniform { low, high, outputs } => fill(*outputs, rng, &|r| low + (high - low) * r.random::<f64>()),
        TargetSpec::Normal { mean, std, outputs } => fill(*outputs, rng, &|r| mean + std * normal(r)),
        TargetSpec::Linear { noise } => {
            // The weights come from a stream of their own, so a separate validation set shares them.
            let mut wrng = stream(seed, LINEAR_STREAM);
            let w: Vec<f64> = (0..x.cols).map(|_| normal(&mut wrng)).collect();
            let values = (0..n).map(|r| x.row(r).iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + noise * normal(rng)).collect();
            Table { rows: n, cols: 1, values }
        }
        TargetSpec::NextToken | TargetSpec::NextTokenLabels { .. } => unreachable!("made with the token rows"),
        TargetSpec::Values { values } => {
            let rows: Vec<Vec<f64>> = values
                .iter()
                .map(|v| match v {
                    TargetRow::One(a) => vec![*a],
                    TargetRow::Many(r) => r.clone(),
                })
                .collect();
            let cols = rows.first().map_or(1, Vec::len);
            Table::from_rows(&rows, cols)
        }
    }
}
