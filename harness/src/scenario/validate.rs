//! Checks of values that parse but cannot train, run before any tensor is
//! allocated (the memory estimate is in `memory`).
//!
//! Each problem names its dotted key (`optimizer.lr`), so the loader can point
//! at the line that holds it.

// `!(x > 0.0)` is deliberate throughout: it rejects NaN, which `x <= 0.0` would let through.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

use super::shape::{rows_of, target_spec_width};
use super::*;

/// One thing wrong with a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Dotted key, e.g. `train.batch_size`.
    pub key: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem { key: key.into(), message: message.into() }
}

/// Every problem found, in file order; empty means the scenario can run.
pub fn validate(s: &Scenario) -> Vec<Problem> {
    let mut out = Vec::new();
    data(&s.data, &mut out);
    let input = input_shape(&s.data);
    if let Some(input) = input {
        match plan(&s.model, input) {
            Err((i, m)) => out.push(problem(format!("model.layers.{i}"), m)),
            Ok(p) => {
                if let Some(t) = target_width(&s.data) {
                    if p.out_width != t {
                        out.push(problem(
                            "model.layers",
                            format!("the model outputs {} column(s) but the targets have {t}: the last layer's width must match", p.out_width),
                        ));
                    }
                }
            }
        }
    }
    if !s.model.init_scale.is_finite() {
        out.push(problem("model.init_scale", "must be finite"));
    }
    loss(&s.loss, target_width(&s.data), &mut out);
    optimizer(&s.optimizer, &mut out);
    train(&s.train, &mut out);
    if let Some(search) = &s.search {
        search_table(search, &mut out);
    }
    if let Some(e) = &s.expect {
        if e.outcome == ExpectedOutcome::Finite && (e.phase.is_some() || e.tensor.is_some() || e.within_steps.is_some()) {
            out.push(problem("expect.outcome", "`phase`, `tensor` and `within_steps` only apply to `outcome = \"nonfinite\"`"));
        }
    }
    out
}

fn positive(out: &mut Vec<Problem>, key: &str, v: f64) {
    if !(v > 0.0 && v.is_finite()) {
        out.push(problem(key, format!("must be a positive finite number, got {v}")));
    }
}

fn unit_interval(out: &mut Vec<Problem>, key: &str, v: f64) {
    if !(0.0..1.0).contains(&v) {
        out.push(problem(key, format!("must be in [0, 1), got {v}")));
    }
}

fn data(d: &DataSpec, out: &mut Vec<Problem>) {
    let synthetic = matches!(d.inputs, InputSpec::Normal { .. } | InputSpec::Uniform { .. });
    if synthetic {
        match d.n {
            None | Some(0) => out.push(problem("data.n", "synthetic inputs need `n` ≥ 1 rows")),
            _ => {}
        }
        if d.features.unwrap_or(0) == 0 {
            out.push(problem("data.features", "synthetic inputs need `features` ≥ 1"));
        }
    }
    if !d.target_scale.is_finite() {
        out.push(problem("data.target_scale", "must be finite"));
    }
    if d.seq_len == Some(0) {
        out.push(problem("data.seq_len", "must be at least 1"));
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
        }
        (_, None) => out.push(problem("data.targets", "missing: say how targets are made")),
        (_, Some(t)) => targets("data.targets", t, rows_of(&d.inputs).or(d.n), out),
    }
    let features = input_shape(d).map(|s| s.features);
    if !d.scale.is_empty() && Some(d.scale.len()) != features {
        out.push(problem("data.scale", format!("has {} entries but there are {:?} features", d.scale.len(), features)));
    }
    for g in &d.scale_groups {
        if features.is_some_and(|f| g.start.saturating_add(g.first) > f) {
            out.push(problem("data.scale_groups", format!("group {}..{} is past the last feature", g.start, g.start + g.first)));
        }
    }
    if let Some(v) = &d.validation {
        validation(v, d, out);
    }
    for inj in &d.inject {
        if let Some(f) = inj.fraction {
            if !(0.0..=1.0).contains(&f) {
                out.push(problem("data.inject", format!("fraction must be in [0, 1], got {f}")));
            }
        } else if inj.rows.is_empty() && inj.columns.is_empty() {
            out.push(problem("data.inject", "give a `fraction`, or `rows` and/or `columns`"));
        }
    }
}

fn inputs(key: &str, i: &InputSpec, d: &DataSpec, out: &mut Vec<Problem>) {
    match i {
        InputSpec::Normal { std, .. } if !(*std >= 0.0) => out.push(problem(key, format!("std must be ≥ 0, got {std}"))),
        InputSpec::Uniform { low, high } if !(low < high) => out.push(problem(key, format!("need low < high, got [{low}, {high})"))),
        InputSpec::Values { rows } => {
            let want = d.features.map(|f| f.saturating_mul(d.seq_len.unwrap_or(1))).or(rows.first().map(Vec::len));
            if rows.is_empty() {
                out.push(problem(key, "needs at least one row"));
            } else if let Some(bad) = rows.iter().position(|r| Some(r.len()) != want || r.is_empty()) {
                out.push(problem(key, format!("row {bad} has {} values, expected {}", rows[bad].len(), want.unwrap_or(0))));
            }
            if d.n.is_some_and(|n| n != rows.len()) && key == "data.inputs" {
                out.push(problem("data.n", format!("says {} rows but {} are given", d.n.unwrap_or(0), rows.len())));
            }
        }
        _ => {}
    }
}

fn targets(key: &str, t: &TargetSpec, rows: Option<usize>, out: &mut Vec<Problem>) {
    match t {
        TargetSpec::Classes { k } if *k < 2 => out.push(problem(key, "`k` must be at least 2 classes")),
        TargetSpec::Uniform { low, high, .. } if !(low < high) => out.push(problem(key, "need low < high")),
        TargetSpec::Uniform { outputs: 0, .. } | TargetSpec::Normal { outputs: 0, .. } => {
            out.push(problem(key, "`outputs` must be at least 1"))
        }
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
        _ => {}
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
    if v.n == Some(0) {
        out.push(problem("data.validation.n", "must be at least 1"));
    }
    if let Some(i) = &v.inputs {
        inputs("data.validation.inputs", i, d, out);
        match &v.targets {
            Some(t) => targets("data.validation.targets", t, rows_of(i), out),
            None => out.push(problem("data.validation.targets", "explicit validation inputs need explicit targets")),
        }
    }
}

fn loss(l: &LossSpec, targets: Option<usize>, out: &mut Vec<Problem>) {
    if l.kind == LossKind::Huber {
        match l.delta {
            Some(d) => positive(out, "loss.delta", d),
            None => out.push(problem("loss.delta", "huber needs `delta`")),
        }
    } else if l.delta.is_some() {
        out.push(problem("loss.delta", "only huber takes `delta`"));
    }
    if let Some(c) = l.clamp {
        if !(c > 0.0 && c < 0.5) {
            out.push(problem("loss.clamp", format!("must be in (0, 0.5), got {c}")));
        }
    }
    if let Some(e) = l.epsilon {
        if !(e >= 0.0 && e.is_finite()) {
            out.push(problem("loss.epsilon", format!("must be ≥ 0, got {e}")));
        }
    }
    if l.epsilon.is_some() && !l.kind.takes_epsilon() {
        out.push(problem("loss.epsilon", "only bce, naive_cross_entropy and mean_abs_ratio take an epsilon"));
    }
    if l.clamp.is_some() && !l.kind.takes_clamp() {
        out.push(problem("loss.clamp", "only bce, bce_torch and naive_cross_entropy take probabilities to clamp"));
    }
    if matches!(l.kind, LossKind::CrossEntropy | LossKind::NaiveCrossEntropy) && targets.is_some_and(|t| t < 2) {
        out.push(problem("loss.kind", "cross-entropy needs one-hot targets with k ≥ 2 columns (targets = { kind = \"classes\", k = ... })"));
    }
}

fn optimizer(o: &OptimizerSpec, out: &mut Vec<Problem>) {
    positive(out, "optimizer.lr", o.lr);
    unit_interval(out, "optimizer.momentum", o.momentum);
    unit_interval(out, "optimizer.beta1", o.beta1);
    unit_interval(out, "optimizer.beta2", o.beta2);
    unit_interval(out, "optimizer.alpha", o.alpha);
    if !(o.eps >= 0.0) {
        out.push(problem("optimizer.eps", "must be ≥ 0"));
    }
    if !(o.weight_decay >= 0.0) {
        out.push(problem("optimizer.weight_decay", "must be ≥ 0"));
    }
    if o.nesterov && (o.kind != OptimizerKind::Sgd || o.momentum == 0.0) {
        out.push(problem("optimizer.nesterov", "needs kind = \"sgd\" and momentum > 0"));
    }
    if let Some(c) = o.clip_grad_norm {
        positive(out, "optimizer.clip_grad_norm", c);
    }
    if let Some(c) = o.clip_grad_value {
        positive(out, "optimizer.clip_grad_value", c);
    }
}

fn search_table(s: &SearchSpec, out: &mut Vec<Problem>) {
    if let Some(d) = s.decades {
        if !(d.is_finite() && d > 0.0 && d <= 30.0) {
            out.push(problem("search.decades", format!("must be in (0, 30], got {d}")));
        }
    }
    let ranges = [("search.lr", s.lr), ("search.init_scale", s.init_scale), ("search.input_scale", s.input_scale), ("search.target_scale", s.target_scale), ("search.inject_fraction", s.inject_fraction)];
    for (key, r) in ranges {
        if let Some([a, b]) = r {
            if !(a.is_finite() && b.is_finite() && a > 0.0 && a < b) {
                out.push(problem(key, format!("needs finite 0 < low < high, got [{a}, {b}]")));
            }
        }
    }
    if s.inject_fraction.is_some_and(|[_, b]| b > 1.0) {
        out.push(problem("search.inject_fraction", "a fraction cannot exceed 1"));
    }
    for (key, r) in [("search.batch_size", s.batch_size), ("search.epochs", s.epochs)] {
        if let Some([a, b]) = r {
            if !(1 <= a && a <= b) {
                out.push(problem(key, format!("needs 1 ≤ low ≤ high, got [{a}, {b}]")));
            }
        }
    }
    if s.max_mutations.is_some_and(|m| !(1..=16).contains(&m)) {
        out.push(problem("search.max_mutations", "must be between 1 and 16"));
    }
}

fn train(t: &TrainSpec, out: &mut Vec<Problem>) {
    if t.epochs == 0 {
        out.push(problem("train.epochs", "must be at least 1"));
    }
    if t.batch_size == Some(0) {
        out.push(problem("train.batch_size", "must be at least 1 (leave it out for full batch)"));
    }
    if t.max_steps == Some(0) {
        out.push(problem("train.max_steps", "must be at least 1"));
    }
    if let Err(m) = DeviceName::parse(&t.device) {
        out.push(problem("train.device", m));
    }
    if t.memory_limit_mb == 0 {
        out.push(problem("train.memory_limit_mb", "must be at least 1"));
    }
    if t.stagnation.window < 2 {
        out.push(problem("train.stagnation.window", "must be at least 2 steps"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_str;

    fn base() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/seeds/s002_ex1_linreg_sgd.toml")).unwrap()
    }

    fn keys(src: &str) -> Vec<String> {
        validate(&parse_str(src, "t").unwrap()).into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn bundled_base_is_valid() {
        assert!(keys(&base()).is_empty());
    }

    #[test]
    fn impossible_values_are_named() {
        assert_eq!(keys(&base().replace("lr = 0.01", "lr = -0.01")), ["optimizer.lr"]);
        assert_eq!(keys(&base().replace("epochs = 10", "epochs = 10\nbatch_size = 0")), ["train.batch_size"]);
        assert_eq!(keys(&base().replace("device = \"cpu\"", "device = \"tpu\"")), ["train.device"]);
    }

    #[test]
    fn review_found_inputs_are_errors_not_panics() {
        // seq_len = 0 with explicit rows used to divide by zero while inferring the features.
        let seq0 = base().replace("[data]", "[data]\nseq_len = 0");
        assert!(keys(&seq0).contains(&"data.seq_len".to_string()));
        // A bad [search] table used to panic inside proptest during a hunt.
        for bad in ["lr = [0.0, 1.0]", "lr = [1.0, 0.1]", "batch_size = [8, 2]", "decades = 0", "max_mutations = 1000000"] {
            let src = format!("{}\n[search]\n{bad}\n", base());
            assert!(keys(&src).iter().any(|k| k.starts_with("search.")), "{bad}");
        }
        // An unknown knob name is a located parse error, with the nearest knob suggested.
        let src = format!("{}\n[search]\nknobs = [\"lr\"]\n", base());
        let err = parse_str(&src, "t").unwrap_err().to_string();
        assert!(err.starts_with("t:") && err.contains("unknown variant `lr`"), "{err}");
    }

    #[test]
    fn output_width_must_match_targets() {
        // Seed 000 ex1 as written: Linear(100, 2) + sigmoid against a 1-column BCE target.
        let src = base().replace("{ type = \"linear\", out = 1 }", "{ type = \"linear\", out = 2 }");
        let p = validate(&parse_str(&src, "t").unwrap());
        assert_eq!(p[0].key, "model.layers");
        assert!(p[0].message.contains("outputs 2 column(s) but the targets have 1"), "{}", p[0].message);
    }
}
