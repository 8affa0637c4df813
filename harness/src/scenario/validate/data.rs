//! Checks of the `[data]` table: row sources, targets, scales, the validation
//! split, injections and preprocessing steps. What can only be known once a
//! CSV is read (its width and row count) is checked again when the data is
//! built.

#![allow(clippy::neg_cmp_op_on_partial_ord)]

use super::super::sizes::{rows_of, target_spec_width};
use super::{finite, non_negative, positive, problem, Problem};
use crate::scenario::*;

pub(super) fn data(d: &DataSpec, out: &mut Vec<Problem>) {
    let synthetic = matches!(d.inputs, InputSpec::Normal { .. } | InputSpec::Uniform { .. });
    if synthetic {
        if d.n.unwrap_or(0) == 0 {
            out.push(problem("data.n", "synthetic inputs need `n` ≥ 1 rows"));
        }
        if d.features.unwrap_or(0) == 0 && d.image.is_none() {
            out.push(problem("data.features", "synthetic inputs need `features` ≥ 1"));
        }
    }
    if d.features == Some(0) && !synthetic {
        out.push(problem("data.features", "must be at least 1"));
    }
    finite(out, "data.target_scale", d.target_scale);
    if d.target_scale != 1.0 && matches!(d.targets, Some(TargetSpec::Labels { .. } | TargetSpec::NextTokenLabels { .. } | TargetSpec::Sequences { .. })) {
        out.push(problem("data.target_scale", "class indices and labels (`labels`, `next_token_labels`, `sequences`) are not numbers to scale: remove it"));
    }
    if d.seq_len == Some(0) {
        out.push(problem("data.seq_len", "must be at least 1"));
    }
    if let Some(i) = d.image {
        for (key, v) in [("channels", i.channels), ("height", i.height), ("width", i.width)] {
            if v == 0 {
                out.push(problem(format!("data.image.{key}"), "must be at least 1"));
            }
        }
        for (key, set) in [("features", d.features.is_some()), ("seq_len", d.seq_len.is_some())] {
            if set {
                out.push(problem(format!("data.{key}"), "images take their shape from `data.image`: remove it"));
            }
        }
        if matches!(d.inputs, InputSpec::Csv { .. } | InputSpec::Tokens { .. }) {
            out.push(problem("data.image", "images are synthetic or explicit rows of channels × height × width values"));
        }
    }
    inputs("data.inputs", &d.inputs, d, out);
    match (&d.inputs, &d.targets) {
        (InputSpec::Csv { targets, .. }, t) => {
            if t.is_some() {
                out.push(problem("data.targets", "CSV inputs carry their own targets: remove `data.targets`"));
            }
            if targets.is_empty() {
                out.push(problem("data.inputs", "name at least one target column"));
            }
            if targets.iter().enumerate().any(|(i, t)| targets[..i].contains(t)) {
                out.push(problem("data.inputs", "a target column is named twice"));
            }
            if d.n.is_some() {
                out.push(problem("data.n", "CSV inputs take their rows from the file: remove `n`"));
            }
            if d.features.is_some() {
                out.push(problem("data.features", "CSV inputs take their width from the file (every column not named a target is a feature): remove `features`"));
            }
        }
        (_, None) => out.push(problem("data.targets", "missing: say how targets are made")),
        (_, Some(t)) => targets("data.targets", t, rows_of(&d.inputs).or(d.n), out),
    }
    if d.targets.as_ref().is_some_and(TargetSpec::next_token) && !matches!(d.inputs, InputSpec::Tokens { .. }) {
        out.push(problem("data.targets", "next_token targets need token inputs (inputs = { kind = \"tokens\", vocab = ... })"));
    }
    padding(d, out);
    scales(d, out);
    if let Some(v) = &d.validation {
        validation(v, d, out);
    }
    for (i, inj) in d.inject.iter().enumerate() {
        inject(&format!("data.inject.{i}"), inj, d, out);
    }
    for (i, step) in d.preprocess.iter().enumerate() {
        preprocess(&format!("data.preprocess.{i}"), step, d, out);
    }
}

fn inputs(key: &str, i: &InputSpec, d: &DataSpec, out: &mut Vec<Problem>) {
    match i {
        InputSpec::Normal { mean, std } => {
            finite(out, &format!("{key}.mean"), *mean);
            non_negative(out, &format!("{key}.std"), *std);
        }
        InputSpec::Uniform { low, high } => {
            finite(out, &format!("{key}.low"), *low);
            finite(out, &format!("{key}.high"), *high);
            if low.is_finite() && high.is_finite() && !(low < high) {
                out.push(problem(key, format!("need low < high, got [{low}, {high})")));
            }
        }
        InputSpec::Values { rows } => {
            let want = d.row_width().or(rows.first().map(Vec::len));
            if rows.is_empty() {
                out.push(problem(key, "needs at least one row"));
            } else if rows[0].is_empty() {
                out.push(problem(key, "row 0 is empty: every row needs at least one value"));
            } else if let Some(bad) = rows.iter().position(|r| Some(r.len()) != want) {
                out.push(problem(key, format!("row {bad} has {} values, expected {} like the others", rows[bad].len(), want.unwrap_or(0))));
            }
            if d.n.is_some_and(|n| n != rows.len()) && key == "data.inputs" {
                out.push(problem("data.n", format!("says {} rows but {} are given", d.n.unwrap_or(0), rows.len())));
            }
        }
        InputSpec::Csv { .. } => {}
        InputSpec::Tokens { vocab, rows } => {
            if *vocab == 0 {
                out.push(problem(format!("{key}.vocab"), "must be at least 1"));
            }
            if d.seq_len.is_none() {
                out.push(problem("data.seq_len", "token inputs need `seq_len`, the positions per row"));
            }
            if d.features.is_some() {
                out.push(problem("data.features", "token inputs have one id per position: remove `features`"));
            }
            if rows.is_empty() && d.n.unwrap_or(0) == 0 && key == "data.inputs" {
                out.push(problem("data.n", "synthetic token rows need `n` ≥ 1 rows"));
            }
            let next = d.targets.as_ref().is_some_and(TargetSpec::next_token);
            let want = d.seq_len.map(|s| s.saturating_add(usize::from(next)));
            for (i, r) in rows.iter().enumerate() {
                if want.is_some_and(|w| w != r.len()) {
                    let why = if next { " (seq_len inputs and the last one's next token)" } else { "" };
                    out.push(problem(format!("{key}.rows.{i}"), format!("has {} ids, expected {}{why}", r.len(), want.unwrap_or(0))));
                }
                if let Some(j) = r.iter().position(|t| *t as usize >= *vocab) {
                    out.push(problem(format!("{key}.rows.{i}.{j}"), format!("token id {} is outside the vocabulary 0..{vocab}", r[j])));
                }
            }
            if d.n.is_some_and(|n| !rows.is_empty() && n != rows.len()) && key == "data.inputs" {
                out.push(problem("data.n", format!("says {} rows but {} are given", d.n.unwrap_or(0), rows.len())));
            }
            for (what, bad) in [("scale", !d.scale.is_empty() || !d.scale_groups.is_empty()), ("preprocess", !d.preprocess.is_empty())] {
                if bad {
                    out.push(problem(format!("data.{what}"), "token ids are not numbers to scale or preprocess: remove it"));
                }
            }
            if let Some(i) = d.inject.iter().position(|j| j.into == InjectInto::Inputs) {
                out.push(problem(format!("data.inject.{i}.into"), "token ids cannot hold NaN or outliers: inject into the targets, or use feature inputs"));
            }
        }
    }
}

/// `data.padding`: lengths or a fraction, over sequences.
pub(super) fn padding(d: &DataSpec, out: &mut Vec<Problem>) {
    let Some(p) = &d.padding else { return };
    let Some(seq) = d.seq_len else {
        return out.push(problem("data.padding", "padding needs sequences: set `data.seq_len`"));
    };
    match (p.max_fraction, p.lengths.is_empty()) {
        (Some(_), false) => out.push(problem("data.padding", "give `max_fraction` or `lengths`, not both")),
        (None, true) => out.push(problem("data.padding", "give `max_fraction` (drawn lengths) or `lengths` (one per row)")),
        (Some(f), true) if !(0.0..=1.0).contains(&f) => out.push(problem("data.padding.max_fraction", format!("must be in [0, 1], got {f}"))),
        _ => {}
    }
    if let Some(i) = p.lengths.iter().position(|l| *l > seq) {
        out.push(problem(format!("data.padding.lengths.{i}"), format!("length {} is longer than the sequence ({seq} positions)", p.lengths[i])));
    }
    if let Some(n) = rows_of(&d.inputs).or(d.n).filter(|n| !p.lengths.is_empty() && *n != p.lengths.len()) {
        out.push(problem("data.padding.lengths", format!("has {} lengths for {n} rows: give one per row", p.lengths.len())));
    }
}

fn targets(key: &str, t: &TargetSpec, rows: Option<usize>, out: &mut Vec<Problem>) {
    match t {
        TargetSpec::Binary | TargetSpec::NextToken => {}
        TargetSpec::Classes { k } => {
            if *k < 2 {
                out.push(problem(key, "`k` must be at least 2 classes"));
            }
        }
        TargetSpec::Sequences { k, length, min_length } => {
            if *k < 2 {
                out.push(problem(key, "`k` must be at least 2 classes (the blank and a label)"));
            }
            if !(1..=*length).contains(min_length) {
                out.push(problem(key, format!("need 1 ≤ min_length ≤ length, got {min_length} and {length}")));
            }
        }
        TargetSpec::Labels { k, ignore_fraction } => {
            if *k < 2 {
                out.push(problem(key, "`k` must be at least 2 classes"));
            }
            if !(0.0..=1.0).contains(ignore_fraction) {
                out.push(problem(format!("{key}.ignore_fraction"), format!("must be in [0, 1], got {ignore_fraction}")));
            }
        }
        TargetSpec::NextTokenLabels { ignore_fraction, prompt_lengths } => {
            if !(0.0..=1.0).contains(ignore_fraction) {
                out.push(problem(format!("{key}.ignore_fraction"), format!("must be in [0, 1], got {ignore_fraction}")));
            }
            if let Some(n) = rows.filter(|n| !prompt_lengths.is_empty() && *n != prompt_lengths.len()) {
                out.push(problem(format!("{key}.prompt_lengths"), format!("has {} prompt lengths for {n} rows: give one per row", prompt_lengths.len())));
            }
        }
        TargetSpec::Uniform { low, high, outputs } => {
            finite(out, &format!("{key}.low"), *low);
            finite(out, &format!("{key}.high"), *high);
            if low.is_finite() && high.is_finite() && !(low < high) {
                out.push(problem(key, format!("need low < high, got [{low}, {high})")));
            }
            if *outputs == 0 {
                out.push(problem(key, "`outputs` must be at least 1"));
            }
        }
        TargetSpec::Normal { mean, std, outputs } => {
            finite(out, &format!("{key}.mean"), *mean);
            non_negative(out, &format!("{key}.std"), *std);
            if *outputs == 0 {
                out.push(problem(key, "`outputs` must be at least 1"));
            }
        }
        TargetSpec::Linear { noise } => non_negative(out, &format!("{key}.noise"), *noise),
        TargetSpec::Values { values } => {
            let width = target_spec_width(t).unwrap_or(0);
            let widths_ok = values.iter().all(|v| match v {
                TargetRow::One(_) => width == 1,
                TargetRow::Many(r) => r.len() == width && width > 0,
            });
            if !widths_ok {
                out.push(problem(key, "every target row must have the same number of values"));
            }
            if rows.is_some_and(|r| r != values.len()) {
                out.push(problem(key, format!("{} targets for {} input rows", values.len(), rows.unwrap_or(0))));
            }
        }
    }
}

fn scales(d: &DataSpec, out: &mut Vec<Problem>) {
    let features = input_shape(d).map(|s| s.features);
    match features {
        Some(f) if !d.scale.is_empty() && d.scale.len() != f => {
            out.push(problem("data.scale", format!("has {} entries but there are {f} features: give one factor per feature", d.scale.len())));
        }
        None if !d.scale.is_empty() && matches!(d.inputs, InputSpec::Csv { .. }) => {
            out.push(problem("data.scale", "per-feature factors need a known feature count; CSV inputs have theirs only once read: use `scale_groups`"));
        }
        _ => {}
    }
    if let Some(bad) = d.scale.iter().find(|v| !v.is_finite()) {
        out.push(problem("data.scale", format!("every factor must be finite, got {bad}")));
    }
    for (i, g) in d.scale_groups.iter().enumerate() {
        let key = format!("data.scale_groups.{i}");
        finite(out, &format!("{key}.factor"), g.factor);
        if g.first == 0 {
            out.push(problem(format!("{key}.first"), "a group needs at least 1 feature"));
        } else if let Some(f) = features.filter(|f| g.start.checked_add(g.first).is_none_or(|end| end > *f)) {
            out.push(problem(key, format!("features {} to {} are past the last of the {f} features", g.start, g.start.saturating_add(g.first - 1))));
        }
    }
}

fn validation(v: &ValidationSpec, d: &DataSpec, out: &mut Vec<Problem>) {
    let modes = [v.fraction.is_some(), v.kfold.is_some(), v.n.is_some(), v.inputs.is_some()];
    if modes.iter().filter(|m| **m).count() != 1 {
        out.push(problem("data.validation", "give exactly one of `fraction`, `kfold`, `n` or `inputs`"));
        return;
    }
    let rows = rows_of(&d.inputs).or(d.n);
    if let Some(f) = v.fraction {
        if !(f > 0.0 && f < 1.0) {
            out.push(problem("data.validation.fraction", format!("must be in (0, 1), got {f}")));
        } else if rows.is_some_and(|n| held_out(n, f) == 0 || held_out(n, f) >= n) {
            out.push(problem("data.validation.fraction", "leaves no training or no validation rows"));
        }
    }
    if let Some(k) = v.kfold {
        if k < 2 || rows.is_some_and(|n| k > n) {
            out.push(problem("data.validation.kfold", format!("needs 2 ≤ k ≤ rows, got {k}")));
        }
    }
    if v.targets.is_some() && v.inputs.is_none() {
        out.push(problem("data.validation.targets", "only explicit validation `inputs` take their own targets"));
    }
    if let Some(n) = v.n {
        if n == 0 {
            out.push(problem("data.validation.n", "must be at least 1"));
        }
        let which = match &d.inputs {
            InputSpec::Normal { .. } | InputSpec::Uniform { .. } => None,
            InputSpec::Values { .. } => Some("explicit `values` rows cannot draw more"),
            InputSpec::Csv { .. } => Some("CSV rows cannot draw more"),
            InputSpec::Tokens { rows, .. } if rows.is_empty() => Some("synthetic token inputs are not drawn a second time"),
            InputSpec::Tokens { .. } => Some("explicit token rows cannot draw more"),
        };
        if let Some(which) = which {
            let instead = if matches!(d.inputs, InputSpec::Tokens { .. }) { "hold out some of the rows with `fraction` or `kfold`" } else { "use `fraction`, `kfold` or explicit validation `inputs`" };
            out.push(problem("data.validation.n", format!("a separate set of `n` rows is drawn only for `normal` and `uniform` inputs; {which}: {instead}")));
        }
    }
    if let Some(i) = &v.inputs {
        inputs("data.validation.inputs", i, d, out);
        if matches!(i, InputSpec::Csv { .. }) {
            out.push(problem("data.validation.inputs", "explicit validation inputs are `values` rows (or synthetic draws), not CSV"));
        }
        match &v.targets {
            Some(t) => targets("data.validation.targets", t, rows_of(i), out),
            None => out.push(problem("data.validation.targets", "explicit validation inputs need explicit targets")),
        }
    }
}

fn inject(key: &str, inj: &Injection, d: &DataSpec, out: &mut Vec<Problem>) {
    let explicit = !inj.rows.is_empty() || !inj.columns.is_empty();
    match (inj.fraction, explicit) {
        (Some(_), true) => out.push(problem(key, "give either a `fraction` of cells or explicit `rows`/`columns`, not both")),
        (Some(f), false) if !(0.0..=1.0).contains(&f) => out.push(problem(format!("{key}.fraction"), format!("must be in [0, 1], got {f}"))),
        (None, false) => out.push(problem(key, "give a `fraction`, or `rows` and/or `columns`")),
        _ => {}
    }
    positive(out, &format!("{key}.magnitude"), inj.magnitude);
    if inj.split != SplitSel::Train && d.validation.is_none() {
        out.push(problem(format!("{key}.split"), "there is no validation split to inject into: add `data.validation`, or use split = \"train\""));
    }
}

fn preprocess(key: &str, step: &Preprocess, d: &DataSpec, out: &mut Vec<Problem>) {
    match step {
        Preprocess::Clip { min, max, .. } => {
            if min.is_nan() {
                out.push(problem(format!("{key}.min"), "must be a number, got NaN"));
            }
            if max.is_nan() {
                out.push(problem(format!("{key}.max"), "must be a number, got NaN"));
            }
            if min > max {
                out.push(problem(format!("{key}.min"), format!("must not exceed `max`: got min = {min}, max = {max}")));
            }
        }
        Preprocess::Reciprocal { guard: Some(g), .. } => finite(out, &format!("{key}.guard"), *g),
        Preprocess::Log { epsilon: Some(e), .. } => non_negative(out, &format!("{key}.epsilon"), *e),
        // Its text and constants, as a layer's; then its names, calls and shapes over the
        // inputs, where their shape is known without reading files (else on the data, `run::data`).
        Preprocess::Expr { expr, consts } => {
            let op = crate::ops::expr::Expr { expr: expr.clone(), consts: consts.clone() };
            let found = crate::ops::Op::check(&op);
            let shape = input_shape(d).filter(|s| s.vocab.is_none() && found.is_empty());
            out.extend(found.into_iter().map(|(field, m)| problem(format!("{key}.{field}"), m)));
            if let Some(Err(m)) = shape.map(|s| crate::ops::expr::compile_step(expr, consts, &crate::ops::expr::dims_of(s.shape()))) {
                out.push(problem(format!("{key}.expr"), m));
            }
        }
        _ => {}
    }
}
