//! Runner speed, single-threaded: µs per training step with the watch on and
//! off beside PyTorch eager, and candidate runs per second of a hunt.
//!
//! `cargo bench -p nanhunt --bench step` prints Markdown tables (`-- onnx`: the imported
//! ONNX model's against its twin written as layers, alone; `-- image`: the image families'
//! table and the main one, with the tiny GPT, alone). Step times
//! cancel setup out: a short and a long run are timed and the difference is
//! divided by the extra steps; watch-on and watch-off runs alternate, so a
//! noisy neighbour slows both alike, and the median of the repetitions is
//! kept. With `NANHUNT_TORCH_PYTHON=/path/to/python` (an interpreter that has
//! `torch`), the table gets PyTorch's figures from `bench/torch_step.py`
//! beside nanhunt's; without it, those columns say `-`. PyTorch is never a
//! dependency of the build or the tests.

use std::time::{Duration, Instant};

use nanhunt::search::{hunt, HuntOptions};
use nanhunt::{run_with, RunOptions, Scenario};

#[global_allocator]
static GLOBAL: nanhunt::alloc::Allocator = nanhunt::alloc::Allocator;

fn load(name: &str) -> Scenario {
    let dir = if name.starts_with('s') && name.as_bytes().get(1).is_some_and(u8::is_ascii_digit) { "seeds" } else { "real" };
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(dir).join(format!("{name}.toml"));
    nanhunt::load(&p).expect("bundled scenario")
}

/// Seconds to run `steps` steps of `s`.
fn time(s: &Scenario, watch: bool, steps: usize) -> f64 {
    let mut s = s.clone();
    s.train.max_steps = Some(steps);
    s.train.epochs = steps; // enough epochs for every scenario to reach max_steps
    s.optimizer.lr = 1e-3; // the cost of a step does not depend on lr; stay finite throughout
    let opts = RunOptions { watch, ..RunOptions::default() };
    let t = Instant::now();
    let o = run_with(&s, &opts);
    assert_eq!(o.steps, steps, "{}: {:?}", s.name, o.error);
    t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median µs per step (watch off, watch on) over `reps` alternating repetitions.
fn us_per_step(s: &Scenario, short: usize, long: usize, reps: usize) -> (f64, f64) {
    let per_step = |watch| (time(s, watch, long) - time(s, watch, short)) / (long - short) as f64 * 1e6;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        off.push(per_step(false));
        on.push(per_step(true));
    }
    (median(off), median(on))
}

/// Candidate runs per second of a hunt of `s` (one worker, its default space, shrinking included), over `secs`.
fn hunt_rate(s: &Scenario, secs: u64) -> f64 {
    let opts = HuntOptions { budget: Duration::from_secs(secs), shrink_budget: Duration::from_secs(2), seed: 1, ..HuntOptions::default() };
    let t = Instant::now();
    let r = hunt(s, &opts, None, &|_| {}).expect("the seed base runs");
    (r.progress.runs + r.progress.shrink_runs) as f64 / t.elapsed().as_secs_f64()
}

/// Median milliseconds of a whole run of `s` as written, and of its setup (a run cut to one step).
fn run_ms(s: &Scenario) -> (f64, f64) {
    let whole = |s: &Scenario| {
        let t = Instant::now();
        run_with(s, &RunOptions::default());
        t.elapsed().as_secs_f64() * 1e3
    };
    let mut one = s.clone();
    one.train.max_steps = Some(1);
    (median((0..9).map(|_| whole(s)).collect()), median((0..9).map(|_| whole(&one)).collect()))
}

/// Median milliseconds of a failing run with the watch off (the loss alone is checked, nothing
/// is diagnosed) and on (the first bad tensor is named and diagnosed, which for a gradient born
/// in backward means a second, tapped run up to the failing step).
fn diagnosis_ms(s: &Scenario) -> (f64, f64, String) {
    let once = |watch| {
        let t = Instant::now();
        let o = run_with(s, &RunOptions { watch, ..RunOptions::default() });
        (t.elapsed().as_secs_f64() * 1e3, o)
    };
    let off = median((0..21).map(|_| once(false).0).collect());
    let on = median((0..21).map(|_| once(true).0).collect());
    let o = once(true).1;
    let named = o.first_nonfinite.map(|f| format!("`{}` ({})", f.tensor, o.cause.map_or("no rule".into(), |c| <&str>::from(c.rule).to_string()))).unwrap_or_default();
    (off, on, named)
}

/// PyTorch's µs per step for each model, if `NANHUNT_TORCH_PYTHON` names an interpreter with torch.
fn torch() -> Option<(f64, f64, f64)> {
    let python = std::env::var("NANHUNT_TORCH_PYTHON").ok()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/torch_step.py");
    let out = std::process::Command::new(python).arg(script).output().ok().filter(|o| o.status.success())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |model: &str| text.lines().find(|l| l.contains(model))?.split("us_per_step=").nth(1)?.trim().parse::<f64>().ok();
    Some((field("mlp_small")?, field("mlp_wide")?, field("tiny_gpt")?))
}

// ---- Recurrent rows (issue 31): RNN, LSTM with and without recurrent dropout, GRU, and an
// embedding + LSTM language model, each against PyTorch eager on one thread
// (`bench/torch_step.py --family recurrent`).

/// A bundled scenario's text with each `from` replaced by its `to`, parsed.
fn edited(dir: &str, name: &str, edits: &[(&str, &str)]) -> Scenario {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(dir).join(format!("{name}.toml"));
    let mut text = std::fs::read_to_string(&p).expect("bundled scenario");
    for (from, to) in edits {
        assert!(text.contains(from), "{name}: `{from}` to edit");
        text = text.replace(from, to);
    }
    nanhunt::scenario::from_str(&text, name).expect("edited scenario")
}

/// Embedding 64 → LSTM 128 (every state) → linear 64 over the tiny GPT's tokens (vocab 64,
/// sequence 32, batch 16, next-token cross-entropy), Adam.
const LSTM_LM: &str = r#"
name = "lstm_lm"
seed = 0
[data]
n = 256
seq_len = 32
inputs = { kind = "tokens", vocab = 64 }
targets = { kind = "next_token" }
[model]
layers = [{ type = "embedding", dim = 64 }, { type = "lstm", hidden = 128, return_sequences = true }, { type = "linear", out = 64 }]
[loss]
kind = "cross_entropy"
[optimizer]
kind = "adam"
lr = 1e-3
[train]
epochs = 2
batch_size = 16
"#;

/// The recurrent table: nanhunt with the watch off and on beside PyTorch's fused module and,
/// for the LSTMs, PyTorch's `LSTMCell` loop (which recurrent dropout needs there).
fn recurrent_table(us: &dyn Fn(f64) -> String) {
    let text = torch_output(&["--family", "recurrent"]).unwrap_or_default();
    let field = |model: &str| text.lines().find(|l| l.split_whitespace().nth(1) == Some(model))?.split("us_per_step=").nth(1)?.trim().parse::<f64>().ok();
    let lstm = |p: &str| edited("real", "keras13221_lstm_relu_recurrent_dropout_fix_tanh", &[("recurrent_dropout = 0.2", &format!("recurrent_dropout = {p}"))]);
    let rows = [
        ("Elman RNN 4→32, 100 steps, batch 32, SGD", load("rnn_sgd_long_sequences"), "rnn", None, 4, 24),
        ("2 LSTMs 16→32→32, 100 steps, batch 32, Adam", lstm("0.0"), "lstm", Some("lstm_cells"), 2, 10),
        ("the same with recurrent dropout 0.2", lstm("0.2"), "lstm", Some("lstm_cells_dropout"), 2, 10),
        ("GRU 4→64, 30 steps, batch 32, SGD", edited("layers", "gru_unscaled_targets_sgd", &[("lr = 1.0", "lr = 0.001"), ("std = 1.0e8", "std = 100.0")]), "gru", None, 4, 24),
        ("embedding 64 → LSTM 128 → linear 64, 32 tokens, batch 16, Adam", nanhunt::scenario::from_str(LSTM_LM, "lstm_lm").expect("the LM scenario"), "lstm_lm", None, 4, 24),
    ];
    println!("| recurrent model | PyTorch fused module | PyTorch cell loop | nanhunt watch off | nanhunt watch on | watch cost | watch on vs fused | watch on vs cell loop |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (label, s, fused, cells, short, long) in rows {
        let (off, on) = us_per_step(&s, short, long, 5);
        let col = |t: Option<f64>| t.map_or(("-".to_string(), "-".to_string()), |t| (us(t), format!("{:.2}×", t / on)));
        let ((f, fr), (c, cr)) = (col(field(fused)), col(cells.and_then(field)));
        println!("| {label} | {f} | {c} | {} | {} | {:.1}% | {fr} | {cr} |", us(off), us(on), (on / off - 1.0) * 100.0);
    }
    println!();
}

/// The image and convolution families (issue 31): each row's scenario and its PyTorch twin in
/// `bench/torch_step.py` (`conv1d`, `cnn`, `cnn_bn`).
mod image_rows {
    use super::{load_layers, us_per_step};
    use nanhunt::Scenario;

    /// PyTorch's µs per step of the image models, by the name `bench/torch_step.py` prints.
    fn torch(text: Option<&str>, model: &str) -> Option<f64> {
        text?.lines().find(|l| l.split_whitespace().nth(1) == Some(model))?.split("us_per_step=").nth(1)?.trim().parse().ok()
    }

    /// `scenarios/layers/cnn_adam.toml` with a `batch_norm` (BatchNorm2d) after each convolution.
    fn cnn_bn() -> Scenario {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/layers/cnn_adam.toml");
        let text = std::fs::read_to_string(path).expect("bundled scenario");
        let text =
            text.replace("kernel = 3 },\n    { type = \"relu\" }", "kernel = 3 },\n    { type = \"batch_norm\" },\n    { type = \"relu\" }").replace("name = \"cnn_adam\"", "name = \"cnn_bn_adam\"");
        assert_eq!(text.matches("batch_norm").count(), 2, "both convolutions get a batch norm");
        nanhunt::scenario::from_str(&text, "cnn_bn_adam").expect("the CNN with batch norm")
    }

    /// `conv1d_accumulate_sum_fix_mean` as one batch of 32 a step (no accumulation).
    fn conv1d() -> Scenario {
        let mut s = load_layers("conv1d_accumulate_sum_fix_mean");
        s.train.batch_size = Some(32);
        s.train.accumulate = 1;
        s
    }

    /// Prints the image families' table, PyTorch's column from `torch_text` (the script's output).
    pub(super) fn print(torch_text: Option<&str>) {
        let cases = [
            (conv1d(), "conv1d: 2 × Conv1d(16, k 3) over 32 steps of 4, batch 32, SGD", "conv1d", 20, 220),
            (load_layers("cnn_adam"), "CNN: 2 × (Conv2d k 3, ReLU, MaxPool 2), 28×28, batch 32, Adam", "cnn", 4, 44),
            (cnn_bn(), "CNN + BatchNorm2d after each conv, batch 32, Adam", "cnn_bn", 4, 44),
        ];
        println!("| image model | PyTorch eager | nanhunt watch off | nanhunt watch on | watch cost | watch on vs PyTorch |");
        println!("|---|---:|---:|---:|---:|---:|");
        let us = |v: f64| if v >= 1000.0 { format!("{:.2} ms", v / 1000.0) } else { format!("{v:.1} µs") };
        for (s, label, model, short, long) in cases {
            let (off, on) = us_per_step(&s, short, long, 7);
            let (t, ratio) = torch(torch_text, model).map_or(("-".into(), "-".into()), |t| (us(t), format!("{:.2}×", t / on)));
            println!("| {label} | {t} | {} | {} | {:.1}% | {ratio} |", us(off), us(on), (on / off - 1.0) * 100.0);
        }
        println!();
    }
}

/// An imported ONNX model's step beside the same model written as layers (issue 30):
/// `scenarios/onnx/mlp.toml` (Linear 4→8, ReLU, Linear 8→8, Tanh, Linear 8→1 from `mlp.onnx`)
/// and its TOML twin. `cargo bench -p nanhunt --bench step -- onnx` prints this table alone.
fn onnx_table() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/onnx/mlp.toml");
    let imported = nanhunt::load(&path).expect("the imported MLP");
    let layers = r#"layers = [{ type = "linear", out = 8 }, { type = "relu" }, { type = "linear", out = 8 }, { type = "tanh" }, { type = "linear", out = 1 }]"#;
    let text = std::fs::read_to_string(&path).expect("bundled scenario").replace("onnx = \"mlp.onnx\"", layers);
    let twin = nanhunt::scenario::from_str(&text, "mlp_layers.toml").expect("the TOML twin");
    println!("| MLP 4-8-8-1, batch 16, Adam | nanhunt watch off | nanhunt watch on |");
    println!("|---|---:|---:|");
    let (i, t) = (us_per_step(&imported, 200, 4200, 11), us_per_step(&twin, 200, 4200, 11));
    println!("| imported from mlp.onnx | {:.1} µs | {:.1} µs |", i.0, i.1);
    println!("| written as layers | {:.1} µs | {:.1} µs |", t.0, t.1);
    println!("| imported vs layers | {:.2}× | {:.2}× |", i.0 / t.0, i.1 / t.1);
    println!();
}

/// A bundled scenario of `scenarios/layers/`.
fn load_layers(name: &str) -> Scenario {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/layers").join(format!("{name}.toml"));
    nanhunt::load(&p).expect("bundled scenario")
}

/// The output of `bench/torch_step.py` with `args`, if `NANHUNT_TORCH_PYTHON` names an interpreter with torch.
fn torch_output(args: &[&str]) -> Option<String> {
    let python = std::env::var("NANHUNT_TORCH_PYTHON").ok()?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/torch_step.py");
    let out = std::process::Command::new(python).arg(script).args(args).output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn main() {
    // Single-threaded, set before Candle's pools start.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    let us = |v: f64| if v >= 1000.0 { format!("{:.2} ms", v / 1000.0) } else { format!("{v:.1} µs") };
    if std::env::args().any(|a| a == "recurrent") {
        // `cargo bench --bench step -- recurrent`: the recurrent table alone.
        recurrent_table(&us);
        return;
    }
    // `-- image`: the image table and the main table (with the tiny GPT) alone.
    let image_only = std::env::args().any(|a| a == "image");
    if !image_only {
        onnx_table();
    }
    if std::env::args().any(|a| a == "onnx") {
        return;
    }
    let torch = torch();
    image_rows::print(torch_output(&["--family", "image"]).as_deref());
    let cases = [
        ("s000_ex1_bce_mlp", "MLP 10-100-1, batch 32, Adam", 200, 4200, torch.map(|t| t.0)),
        ("s003_ex1_wide_mlp_adam", "MLP 10-1024-1024-1, batch 100, Adam", 5, 85, torch.map(|t| t.1)),
        ("tiny_gpt", "tiny GPT (2 blocks, width 64, seq 32), batch 16, AdamW", 4, 44, torch.map(|t| t.2)),
    ];
    println!("| model | PyTorch eager | nanhunt watch off | nanhunt watch on | watch cost | watch on vs PyTorch |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, label, short, long, torch) in cases {
        let (off, on) = us_per_step(&load(name), short, long, 11);
        let (t, ratio) = torch.map_or(("-".into(), "-".into()), |t| (us(t), format!("{:.2}×", t / on)));
        println!("| {label} | {t} | {} | {} | {:.1}% | {ratio} |", us(off), us(on), (on / off - 1.0) * 100.0);
    }
    println!();
    if image_only {
        return;
    }
    recurrent_table(&us);
    // Mixed precision: autocast over f32 master weights (amp_f16 with its GradScaler, as it is
    // run; bf16 needs none), against the same model in f32.
    println!("| tiny GPT, watch on | f32 | amp_bf16 | amp_f16 + GradScaler | amp_bf16 vs f32 |");
    println!("|---|---:|---:|---:|---:|");
    let gpt = load("tiny_gpt");
    let with = |p: nanhunt::scenario::Precision, scaler: bool| {
        let mut s = gpt.clone();
        s.train.precision = p;
        s.train.loss_scale = scaler.then(Default::default);
        s
    };
    let (f32_on, bf16_on, f16_on) =
        (us_per_step(&gpt, 4, 44, 11).1, us_per_step(&with(nanhunt::scenario::Precision::AmpBf16, false), 4, 44, 11).1, us_per_step(&with(nanhunt::scenario::Precision::AmpF16, true), 4, 44, 11).1);
    println!("| step | {} | {} | {} | {:.2}× |", us(f32_on), us(bf16_on), us(f16_on), bf16_on / f32_on);
    println!();
    println!("| failing run | watch off | watch on, diagnosed | named |");
    println!("|---|---:|---:|---|");
    for name in ["s002_ex3_flawed_backward", "s001_ex3_bce_saturated", "s002_ex1_linreg_sgd"] {
        let (off, on, named) = diagnosis_ms(&load(name));
        println!("| {name} | {off:.3} ms | {on:.3} ms | {named} |");
    }
    println!();
    println!("| hunt (1 worker, 10 s) | runs per second | one run | its setup (1 step) |");
    println!("|---|---:|---:|---:|");
    for name in ["s002_ex1_linreg_sgd_fix_standardize", "s000_ex1_bce_mlp", "rnn_sgd_long_sequences"] {
        let s = load(name);
        let (run, setup) = run_ms(&s);
        println!("| {name} | {:.0} | {run:.3} ms | {setup:.3} ms |", hunt_rate(&s, 10));
    }
}
