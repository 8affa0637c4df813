//! `summary.md`: the part of a report that pastes into a GitHub issue. It fits
//! on one screen: what went non-finite and where, the signals leading up to
//! it, how the repro differs from the base, the environment, and the one
//! command that replays it.

use super::summary::Summary;
use crate::human;
use crate::run::Status;
use crate::search::describe;

/// Renders a summary as Markdown.
pub fn markdown(s: &Summary) -> String {
    let o = &s.outcome;
    let mut m = String::new();
    let verdict = match o.outcome {
        Status::Finite if o.divergence.is_some() => "stays finite but diverges",
        Status::Finite => "stays finite",
        Status::Nonfinite if o.first_nonfinite.as_ref().is_some_and(|f| f.kind == crate::run::Kind::NoGradient) => "has a parameter without a gradient",
        Status::Nonfinite => "goes non-finite",
        Status::Error => "fails to run",
        Status::Timeout => "was cut off",
    };
    m += &format!("# nanhunt: `{}` {verdict}\n\n", s.scenario);
    match (&o.first_nonfinite, &o.error) {
        (Some(f), _) => {
            // A repro with fewer rows counts its own steps: say so beside the step.
            let rows = s.reductions.iter().find(|r| r.starts_with("data rows")).map_or(String::new(), |r| format!(" ({r})"));
            m += &format!("**{}** in `{}`{} during the **{}** phase of step {}{rows} (epoch {}, fold {}).\n", f.kind, f.tensor, f.element(), f.phase, f.step, f.epoch, f.fold);
            if f.count > 1 {
                m += &format!("{} of the tensor's {} elements (shape {:?}) are not finite.\n", f.count, f.shape.iter().product::<usize>(), f.shape);
            }
            if let Some(l) = o.last_finite_loss {
                m += &format!("Last finite training loss: {}.\n", human(l));
            }
        }
        (None, Some(e)) => m += &format!("Error: {e}\n"),
        (None, None) => m += &format!("Every value stayed finite over {} steps.\n", o.steps),
    }
    if let Some(st) = &o.stagnation {
        m += &format!("Stagnation: {} at step {} ({}).\n", st.reason, st.step, st.detail);
    }
    if let Some(d) = &o.divergence {
        m += &format!("Divergence: {} at step {} ({}): finite so far, but growing without bound.\n", d.reason, d.step, d.detail);
    }
    if let Some(k) = &o.skipped_steps {
        m += &format!("Loss scaler: {k}.\n");
    }
    for w in &o.warnings {
        m += &format!("\n> Warning: {w}.\n");
    }
    if let Some(c) = &o.cause {
        m += &format!("\n## Why\n\n**{}** (`{}`): {}.\n", c.op, <&str>::from(c.rule), c.reason);
        if !c.inputs.is_empty() {
            m += "\n| input | at the element | min | max | smallest \\|x\\| | zeros | subnormals | ±Inf | NaN |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
            for i in &c.inputs {
                let at = i.at.map_or("—".to_string(), human);
                m += &format!("| {} | {at} | {} | {} | {} | {} | {} | {} | {} |\n", i.name, human(i.min), human(i.max), human(i.min_abs), i.zeros, i.subnormals, i.infinite, i.nan);
            }
        }
        if let Some(d) = o.dtype {
            let l = crate::run::cause::Limits::of(d.compute());
            m += &format!("\n{d}'s limits: largest {}, smallest normal {}, smallest subnormal {}.\n", human(l.max), human(l.min_normal), human(l.min_subnormal));
        }
    }
    if let Some(v) = &o.verdict {
        let op = v.op_f64.as_ref().map_or("not computed (no op of this site to compute alone)".to_string(), |c| c.value.map_or("not finite".to_string(), human));
        m += &format!("\n**Verdict in f64: {}** (`{}`): {}. The op in f64 from the same inputs: {op}; the run in f64 to that step: {}.\n", v.op, v.key(), v.reason, v.step_f64.detail);
    }
    if let Some(note) = &s.note {
        m += &format!("\n> {note}\n");
    }
    if s.triggers.len() > 1 {
        m += &format!(
            "\n## Triggers ({}, nearest to the base first; the repro is the first)\n\n| # | knobs (each at its threshold) | flips at | distance | hits |\n|---:|---|---|---:|---:|\n",
            s.triggers.len()
        );
        for (i, t) in s.triggers.iter().take(12).enumerate() {
            let knobs = if t.mutations.is_empty() { "none: the base itself".to_string() } else { describe(&t.mutations) };
            let flips: Vec<String> = t.thresholds.iter().map(|h| format!("`{}` {} {}", h.knob, h.direction(), human(h.flips_at))).collect();
            m += &format!("| {} | {knobs} | {} | {} | {} |\n", i + 1, flips.join(", "), human(t.distance), t.count);
        }
        if s.triggers.len() > 12 {
            m += &format!("\n{} more in `summary.json`.\n", s.triggers.len() - 12);
        }
    }
    if !s.leading_up.is_empty() {
        m += "\n## Leading up to it\n\n| step | epoch | fold | train loss | grad norm | max \\|activation\\| | headroom (bits) |\n|---:|---:|---:|---:|---:|---:|---:|\n";
        for r in &s.leading_up {
            let num = |v: Option<f64>| v.map_or("—".to_string(), human);
            let bits = r.headroom.filter(|h| h.is_finite()).map_or("—".to_string(), |h| format!("{h:.1}"));
            m += &format!("| {} | {} | {} | {} | {} | {} | {bits} |\n", r.step, r.epoch, r.fold, num(r.train_loss), num(r.grad_norm), num(r.max_abs));
        }
    }
    m += "\n## Difference from the base scenario\n\n";
    if s.changes.is_empty() {
        m += "None: this is the base scenario as written.\n";
    } else {
        m += "| key | base | repro | flips at |\n|---|---|---|---|\n";
        for c in &s.changes {
            let flip = s.thresholds.iter().find(|t| t.knob.sets_key(&c.key)).map_or(String::new(), |t| format!("{} {}", t.direction(), human(t.flips_at)));
            m += &format!("| `{}` | {} | {} | {flip} |\n", c.key, or_dash(&c.base), or_dash(&c.repro));
        }
    }
    for r in &s.reductions {
        m += &format!("- {r}\n");
    }
    let e = &s.environment;
    m += &format!("\n## Environment\n\nnanhunt {} · candle {} · {} · {} thread(s) · {} · {} · {}\n", e.nanhunt, e.candle, e.cpu, e.threads, e.dtype, e.device, e.os);
    if let Some(c) = &o.model {
        let values: usize = c.params.iter().map(|(_, d)| d.iter().product::<usize>()).sum();
        m += &format!("\nModel: Rust code `{}`, {} parameters ({values} values), initial hash `{}`.\n", c.name, c.params.len(), c.init_hash);
    }
    let lang = if o.model.is_some() { "rust" } else { "sh" };
    m += &format!("\n## Replay\n\n```{lang}\n{}\n```\n\n![trace](trace.svg)\n", s.replay);
    m
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "—"
    } else {
        s
    }
}
