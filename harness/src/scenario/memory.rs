//! The memory estimate that refuses oversized runs before anything is
//! allocated: one formula, fed from the scenario's static shapes before the
//! data is built, and again from the built data (CSV rows are only known then).

use super::sizes::rows_of;
use super::{input_shape, plan, target_width, Layer, Node, Plan, Scenario, Shape};
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
    /// Activation values of one row: the input, every node's output at its true shape (a
    /// convolution's length after padding and stride, an image's channels × height × width)
    /// and the buffers its kernels build (see [`held`]).
    pub values: u128,
    /// The node holding the most values per row, and how many: the layer a refusal names.
    pub largest: Option<(usize, u128)>,
    /// Bytes per element of the compute dtype.
    pub elem: u128,
}

impl Footprint {
    /// Estimated peak bytes: each data cell in f64 on the host (three copies
    /// while splits are made) plus its device copy; each parameter with its
    /// gradient, two optimizer moments and the update's temporaries; and one
    /// batch of activations with their gradients and the backward pass's temporaries.
    ///
    /// Saturating: a request too large to count is `u128::MAX`, and refused.
    pub fn bytes(&self) -> u128 {
        let data = self.cells.saturating_mul(3 * 8 + self.elem);
        let state = self.params.saturating_mul(self.elem * 6);
        data.saturating_add(state).saturating_add(self.activations(self.values))
    }

    /// Bytes of `values` activation values per row over one batch, with gradients and temporaries.
    fn activations(&self, values: u128) -> u128 {
        product(&[self.batch, values, self.elem * 4])
    }

    /// The footprint of a scenario whose shapes are `plan`, with `cells` data cells and `rows` training rows.
    pub fn of(s: &Scenario, plan: &Plan, cells: u128, rows: u128, features: usize, seq_len: Option<usize>) -> Footprint {
        let steps = seq_len.unwrap_or(1).max(1) as u128;
        let per_node: Vec<u128> = plan.nodes.iter().map(|n| held(n, steps)).collect();
        let largest = per_node.iter().copied().enumerate().max_by_key(|(_, v)| *v);
        // Attention's q, k, v and the heads' mix are not nodes; its scores and probabilities are.
        let values = sum(&per_node).saturating_add(product(&[features as u128, steps])).saturating_add(plan.attention_cells as u128);
        Footprint {
            cells,
            params: plan.params.iter().map(|p| product(&p.shape.iter().map(|d| *d as u128).collect::<Vec<_>>())).fold(0, u128::saturating_add),
            batch: s.train.batch_size.map_or(rows, |b| b as u128).min(rows),
            values,
            largest,
            elem: s.train.dtype.bytes(),
        }
    }

    /// What a refusal names: the scenario, and the layer that holds at least half of it if one does.
    fn what(&self, s: &Scenario, plan: &Plan) -> String {
        let named = self.largest.and_then(|(i, v)| Some((plan.nodes.get(i)?, self.activations(v))));
        match named.filter(|(_, bytes)| bytes.saturating_mul(2) >= self.bytes()) {
            Some((n, bytes)) => {
                let of = match n.layer {
                    Layer::Conv1d(_) | Layer::Conv2d(_) => "its im2col columns and",
                    _ => "its",
                };
                format!("scenario `{}` (layer `{}` alone: {} MiB for {of} {} output over a batch of {}, with gradients)", s.name, n.name, mib(bytes), n.shape.describe(), self.batch)
            }
            None => format!("scenario `{}`", s.name),
        }
    }
}

/// Values one row holds for a node until the backward pass: its output (a vector after a
/// sequence counted at every step, as the recurrent layers keep one per step). A registry op
/// says its own (`Op::held`: a gated cell's gates per step, `ops::gated`; a convolution's or a
/// pooling's kernels, `ops::conv` and `ops::pool2d`).
fn held(n: &Node, steps: u128) -> u128 {
    let u = |v: usize| v as u128;
    let out = match n.shape {
        Shape::Flat(w) => product(&[u(w), steps]),
        other => u(other.cols()),
    };
    n.layer.op().held(n.in_shape, n.shape, out)
}

/// A saturating product.
fn product(factors: &[u128]) -> u128 {
    factors.iter().fold(1, |a, b| a.saturating_mul(*b))
}

/// A saturating sum.
fn sum(terms: &[u128]) -> u128 {
    terms.iter().fold(0, |a, b| a.saturating_add(*b))
}

/// Bytes in whole MiB, for messages.
fn mib(bytes: u128) -> u64 {
    u64::try_from(bytes / (1024 * 1024)).unwrap_or(u64::MAX)
}

/// The footprint and plan from the scenario alone; `None` when the shapes are not known without reading files.
fn estimate(s: &Scenario) -> Option<(Footprint, Plan)> {
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
    Some((Footprint::of(s, &plan, cells, train, shape.features, shape.seq_len), plan))
}

/// The estimate from the scenario alone; `None` when the shapes are not known without reading files.
pub fn memory_estimate(s: &Scenario) -> Option<u128> {
    estimate(s).map(|(f, _)| f.bytes())
}

/// Refuses a scenario whose estimate is over its `memory_limit_mb`, before anything is allocated.
pub fn check_memory(s: &Scenario) -> Result<()> {
    estimate(s).map_or(Ok(()), |(f, plan)| within_plan(s, &plan, &f, 0))
}

/// Refuses the footprint `f` of a run over `plan`, plus `extra` bytes, if over the scenario's
/// limit or over this machine's memory, naming the layer that holds most of it.
pub(crate) fn within_plan(s: &Scenario, plan: &Plan, f: &Footprint, extra: u128) -> Result<()> {
    refuse(s, f.bytes().saturating_add(extra), &|| f.what(s, plan))
}

/// Refuses `bytes` if over the scenario's limit, or over this machine's memory; `what` names what needs them.
fn refuse(s: &Scenario, bytes: u128, what: &dyn Fn() -> String) -> Result<()> {
    let limit = s.train.memory_limit_mb;
    if bytes > limit as u128 * 1024 * 1024 {
        return Err(Error::TooLarge { what: what(), need_mb: mib(bytes), limit_mb: limit, hint: "raise `train.memory_limit_mb` to allow it" });
    }
    if let Some(machine) = physical_memory().filter(|m| bytes > *m) {
        return Err(Error::TooLarge { what: what(), need_mb: mib(bytes), limit_mb: mib(machine), hint: "the memory of this machine" });
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
            Some(m) if m < need => assert!(refuse(&s, need, &|| "t".into()).unwrap_err().to_string().contains("the memory of this machine"), "refused"),
            _ => assert!(refuse(&s, need, &|| "t".into()).is_ok()),
        }
    }

    #[test]
    fn footprint_counts_by_hand() {
        // 10 cells: 10·(24 + 4) = 280; 3 params: 3·4·6 = 72; batch 2 × width 5 × 1 step × 4 bytes × 4 = 160.
        let f = Footprint { cells: 10, params: 3, batch: 2, values: 5, largest: None, elem: 4 };
        assert_eq!(f.bytes(), 280 + 72 + 160);
    }

    #[test]
    fn fuzz_scenario_target_overflowing_estimate_saturates() {
        // Found by the structured `scenario` fuzz target: shapes whose product overflows u128
        // panicked (debug) or wrapped to a small estimate that let the run through (release).
        let huge = Footprint { cells: u128::MAX / 3, params: 1, batch: u128::MAX / 2, values: 3, largest: None, elem: 4 };
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

    /// A scenario of `data` (its `[data]` lines) through `layers`, full batch, f32.
    fn model(data: &str, layers: &str) -> Scenario {
        let text = format!("name = \"t\"\n[data]\n{data}\ninputs = {{ kind = \"normal\" }}\ntargets = {{ kind = \"uniform\" }}\n[model]\nlayers = [{layers}]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n[train]\nepochs = 1\n");
        crate::scenario::from_str(&text, "t").unwrap()
    }

    #[test]
    fn conv1d_counts_its_padded_input_columns_and_true_output_length() {
        // 4 rows of (8, 2); conv1d 3 channels, kernel 3, stride 2, padding 1: padded 10, output
        // length (10 − 3) / 2 + 1 = 4. Data: 4 · (16 + 1) cells · (24 + 4) = 1904. Params: 3·2·3
        // + 3 + 3 + 1 = 25, · 4 · 6 = 600. Per row: input 2 · 8 = 16; conv1d: its output and two
        // transposed copies 3 · 4 · 3 = 36, the input's transposed copy 8 · 2 = 16, one sample's
        // columns 2 · 3 · 4 = 24; mean_pool (3) and linear (1) at each of 8 steps: 24 + 8.
        // 124 values · batch 4 · 4 bytes · 4.
        let s = model("n = 4\nseq_len = 8\nfeatures = 2", "{ type = \"conv1d\", channels = 3, kernel = 3, stride = 2, padding = 1 }, { type = \"mean_pool\" }, { type = \"linear\", out = 1 }");
        let (f, _) = estimate(&s).unwrap();
        assert_eq!((f.values, f.largest), (124, Some((0, 76))));
        assert_eq!(memory_estimate(&s), Some(1904 + 600 + 124 * 4 * 4 * 4));
    }

    #[test]
    fn conv2d_and_pooling_count_whole_images_not_their_width() {
        // 2 images (1, 5, 5); conv2d 2 channels, kernel 3, padding 1: (2, 5, 5); max_pool2d 2:
        // (2, 2, 2); flatten; linear 1. Data: 2 · 26 · 28 = 1456. Params: 18 + 2 + 8 + 1 = 29,
        // · 24 = 696. Per row: input 25; conv2d output 2 · 25 = 50 and one sample's columns
        // 1 · 9 · 25 = 225; pool output 8 (it reads its input in place); flatten 8; linear 1.
        let layers = "{ type = \"conv2d\", channels = 2, kernel = 3, padding = 1 }, { type = \"max_pool2d\", kernel = 2 }, { type = \"flatten\" }, { type = \"linear\", out = 1 }";
        let s = model("n = 2\nimage = { channels = 1, height = 5, width = 5 }", layers);
        let (f, _) = estimate(&s).unwrap();
        assert_eq!((f.values, f.largest), (25 + 275 + 8 + 8 + 1, Some((0, 275))));
        assert_eq!(memory_estimate(&s), Some(1456 + 696 + 317 * 2 * 4 * 4));
    }

    #[test]
    fn an_oversized_convolution_is_refused_by_name() {
        // Padding 1e7 pads each row to 20000008 positions of 2 channels; the output is 20000006
        // long: it and its two transposed copies 3 · 20000006 · 2 = 120000036 values, the input's
        // copy 16, one sample's columns 2 · 3 · 20000006 = 120000036: per row 240000088 values,
        // · 4 rows · 4 bytes · 4 = 14648 MiB (it aborted on allocation before).
        let s = model("n = 4\nseq_len = 8\nfeatures = 2", "{ type = \"conv1d\", channels = 2, kernel = 3, padding = 10000000 }, { type = \"mean_pool\" }, { type = \"linear\", out = 1 }");
        let (f, _) = estimate(&s).unwrap();
        assert_eq!(f.largest, Some((0, 240_000_088)));
        assert!(f.bytes() >= 240_000_088 * 4 * 4 * 4);
        let err = check_memory(&s).unwrap_err().to_string();
        assert!(err.starts_with("refused: scenario `t` (layer `layers.0.conv1d` alone:") && err.contains("(batch, 20000006, 2) output over a batch of 4"), "{err}");
    }
}
