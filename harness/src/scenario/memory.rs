//! The memory estimate that refuses oversized runs before anything is
//! allocated: one formula, fed from the scenario's static shapes before the
//! data is built, and again from the built data (CSV rows are only known then).

use super::shape::rows_of;
use super::{input_shape, plan, target_width, Layer, Part, Plan, Scenario};
use crate::error::{Error, Result};

/// What a run holds in memory at its peak, counted in elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Footprint {
    /// Data cells (inputs and targets, every split of every fold).
    pub cells: u128,
    /// Parameter elements.
    pub params: u128,
    /// Rows of the largest batch.
    pub batch: u128,
    /// Activation width of one row summed over the input and every layer output.
    pub widths: u128,
    /// Time steps per row (1 without sequences).
    pub steps: u128,
    /// Bytes per element of the compute dtype.
    pub elem: u128,
}

impl Footprint {
    /// Estimated peak bytes: each data cell in f64 on the host (three copies
    /// while splits are made) plus its device copy; each parameter with its
    /// gradient, two optimizer moments and the update's temporaries; and one
    /// batch of activations and their gradients for the backward pass.
    ///
    /// Saturating: a request too large to count is `u128::MAX`, and refused.
    pub fn bytes(&self) -> u128 {
        let data = self.cells.saturating_mul(3 * 8 + self.elem);
        let state = self.params.saturating_mul(self.elem * 6);
        let acts = product(&[self.batch, self.widths, self.steps, self.elem * 4]);
        data.saturating_add(state).saturating_add(acts)
    }

    /// The footprint of a scenario whose shapes are `plan`, with `cells` data cells and `rows` training rows.
    pub fn of(s: &Scenario, plan: &Plan, cells: u128, rows: u128, features: usize, seq_len: Option<usize>) -> Footprint {
        let steps = seq_len.unwrap_or(1).max(1) as u128;
        Footprint {
            cells,
            params: plan.params.iter().map(|p| product(&p.shape.iter().map(|d| *d as u128).collect::<Vec<_>>())).fold(0, u128::saturating_add),
            batch: s.train.batch_size.map_or(rows, |b| b as u128).min(rows),
            // The input and each layer's width at every step, a gated RNN's gates and their
            // temporaries (three per gate) too; attention's `(heads, seq, seq)` scores and
            // probabilities and its projections are per row, so they are spread over the steps.
            widths: plan.widths.iter().map(|w| *w as u128).fold(0, u128::saturating_add).saturating_add(features as u128).saturating_add(gates(plan)).saturating_add(attention(plan).div_ceil(steps)),
            steps,
            elem: s.train.dtype.bytes(),
        }
    }
}

/// A gated RNN's values per step beyond its output: three temporaries per gate.
fn gates(plan: &Plan) -> u128 {
    let per = |n: &crate::scenario::Node| match n.layer {
        Layer::Lstm { hidden, .. } => 12 * (hidden as u128),
        Layer::Gru { hidden, .. } => 9 * (hidden as u128),
        _ => 0,
    };
    plan.nodes.iter().map(per).fold(0, u128::saturating_add)
}

/// Attention's values per row: scores, probabilities and projections.
fn attention(plan: &Plan) -> u128 {
    let scores = plan.nodes.iter().filter(|n| matches!(n.part, Part::Scores | Part::Probs)).map(|n| n.shape.cols() as u128);
    scores.fold(plan.attention_cells as u128, u128::saturating_add)
}

/// A saturating product.
fn product(factors: &[u128]) -> u128 {
    factors.iter().fold(1, |a, b| a.saturating_mul(*b))
}

/// The estimate from the scenario alone; `None` when the shapes are not known without reading files.
pub fn memory_estimate(s: &Scenario) -> Option<u128> {
    let shape = input_shape(&s.data)?;
    let plan = plan(&s.model, shape).ok()?;
    let row = shape.shape().cols() as u128;
    let targets = target_width(&s.data).unwrap_or(1) as u128;
    let v = s.data.validation.as_ref();
    let train = s.data.n.or(rows_of(&s.data.inputs)).unwrap_or(0) as u128;
    let held = v.and_then(|v| v.n.or(v.inputs.as_ref().and_then(rows_of))).unwrap_or(0) as u128;
    // Every fold of a k-fold split holds its own copy of the rows.
    let copies = v.and_then(|v| v.kfold).unwrap_or(1).max(1) as u128;
    let cells = product(&[train.saturating_add(held), row.saturating_add(targets), copies]);
    Some(Footprint::of(s, &plan, cells, train, shape.features, shape.seq_len).bytes())
}

/// Refuses a scenario whose estimate is over its `memory_limit_mb`, before anything is allocated.
pub fn check_memory(s: &Scenario) -> Result<()> {
    memory_estimate(s).map_or(Ok(()), |bytes| within_limit(s, bytes))
}

/// Refuses `bytes` if over the scenario's limit, or over this machine's memory.
pub(crate) fn within_limit(s: &Scenario, bytes: u128) -> Result<()> {
    let need_mb = u64::try_from(bytes / (1024 * 1024)).unwrap_or(u64::MAX);
    let limit = s.train.memory_limit_mb;
    if bytes > limit as u128 * 1024 * 1024 {
        return Err(Error::TooLarge { what: format!("scenario `{}`", s.name), need_mb, limit_mb: limit, hint: "raise `train.memory_limit_mb` to allow it" });
    }
    if let Some(machine) = physical_memory().filter(|m| bytes > *m) {
        let machine_mb = u64::try_from(machine / (1024 * 1024)).unwrap_or(u64::MAX);
        return Err(Error::TooLarge { what: format!("scenario `{}`", s.name), need_mb, limit_mb: machine_mb, hint: "the memory of this machine" });
    }
    Ok(())
}

/// Total memory of this machine (Linux's `MemTotal`), if known.
fn physical_memory() -> Option<u128> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u128 = info.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_str;

    fn base() -> String {
        crate::scenario::seed_text("s002_ex1_linreg_sgd")
    }

    #[test]
    fn oversized_request_is_refused_before_allocation() {
        let s = parse_str(&base().replace("[train]", "[train]\nmemory_limit_mb = 1"), "t").unwrap();
        assert!(check_memory(&s).is_ok(), "three rows fit in 1 MiB");
        let big = base()
            .replace("inputs = { kind = \"values\", rows = [[1.0, 100000.0], [2.0, 200000.0], [3.0, 300000.0]] }", "n = 100000000\nfeatures = 2\ninputs = { kind = \"normal\" }")
            .replace("targets = { kind = \"values\", values = [10.0, 20.0, 30.0] }", "targets = { kind = \"uniform\" }");
        let s = parse_str(&big, "t").unwrap();
        let err = check_memory(&s).unwrap_err().to_string();
        assert!(err.starts_with("refused:") && err.contains("over the limit of 2048 MiB"), "{err}");
    }

    #[test]
    fn a_limit_above_the_machine_does_not_let_a_run_through() {
        // A limit of 1 TiB passes validation, but a 900 GiB request is still refused on a smaller machine.
        let mut s = parse_str(&base(), "t").unwrap();
        s.train.memory_limit_mb = 1 << 20;
        let need = 900u128 << 30;
        match physical_memory() {
            Some(m) if m < need => assert!(within_limit(&s, need).unwrap_err().to_string().contains("the memory of this machine"), "refused"),
            _ => assert!(within_limit(&s, need).is_ok()),
        }
    }

    #[test]
    fn footprint_counts_by_hand() {
        // 10 cells: 10·(24 + 4) = 280; 3 params: 3·4·6 = 72; batch 2 × width 5 × 1 step × 4 bytes × 4 = 160.
        let f = Footprint { cells: 10, params: 3, batch: 2, widths: 5, steps: 1, elem: 4 };
        assert_eq!(f.bytes(), 280 + 72 + 160);
    }

    #[test]
    fn fuzz_scenario_target_overflowing_estimate_saturates() {
        // Found by the structured `scenario` fuzz target: shapes whose product overflows u128
        // panicked (debug) or wrapped to a small estimate that let the run through (release).
        let huge = Footprint { cells: u128::MAX / 3, params: 1, batch: u128::MAX / 2, widths: 3, steps: 1, elem: 4 };
        assert_eq!(huge.bytes(), u128::MAX);
        let mut s = parse_str(&base(), "t").unwrap();
        s.data.inputs = crate::scenario::InputSpec::Normal { mean: 0.0, std: 1.0 };
        s.data.targets = Some(crate::scenario::TargetSpec::Uniform { low: 0.0, high: 1.0, outputs: 1 });
        (s.data.n, s.data.features) = (Some(usize::MAX), Some(usize::MAX));
        assert_eq!(memory_estimate(&s), Some(u128::MAX));
        assert!(check_memory(&s).is_err(), "refused, not wrapped");
    }

    #[test]
    fn attention_scores_count_per_row_and_refuse_long_sequences() {
        // 64 rows of 2048 tokens, batch 64, one 8-head attention: its scores and probabilities
        // alone are 64 · 2 · 8 · 2048² · 4 bytes · 4 = 64 GiB, refused before anything is built;
        // at 64 tokens the same model fits.
        let text = |seq: usize| {
            format!(
                "name = \"t\"\n[data]\nn = 64\nseq_len = {seq}\ninputs = {{ kind = \"tokens\", vocab = 16 }}\ntargets = {{ kind = \"next_token\" }}\n[model]\nlayers = [{{ type = \"embedding\", dim = 16 }}, {{ type = \"attention\", heads = 8 }}, {{ type = \"linear\", out = 16 }}]\n[loss]\nkind = \"cross_entropy\"\n[optimizer]\nkind = \"adam\"\nlr = 0.001\n[train]\nepochs = 1\n"
            )
        };
        let long = parse_str(&text(2048), "t").unwrap();
        let scores = 64u128 * 2 * 8 * 2048 * 2048 * 4 * 4;
        assert!(memory_estimate(&long).unwrap() >= scores);
        assert!(check_memory(&long).unwrap_err().to_string().starts_with("refused:"));
        assert!(check_memory(&parse_str(&text(64), "t").unwrap()).is_ok());
    }
}
