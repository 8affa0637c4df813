//! Deep graphs never abort: Candle's backward walks the autograd graph
//! recursively, and a long sequence or a deep stack of layers overflowed the
//! thread's stack ("thread has overflowed its stack", exit 134) in `run`,
//! `check` and `hunt`. Each case here trains (exit 0 or 1, with an outcome) or
//! is refused before training (exit 2, naming the key and the limit); a run
//! that aborts has no exit code at all.

mod common;
use common::*;

/// A scenario of one `layer` with hidden size 1 over sequences of `steps` steps, then a linear
/// layer; one row, one epoch: a single optimizer step.
fn recurrent(layer: &str, steps: usize) -> String {
    format!(
        r#"name = "deep_{layer}"
seed = 0

[data]
n = 1
features = 1
seq_len = {steps}
inputs = {{ kind = "normal" }}
targets = {{ kind = "uniform" }}

[model]
init = {{ kind = "torch" }}
layers = [{{ type = "{layer}", hidden = 1 }}, {{ type = "linear", out = 1 }}]

[loss]
kind = "mse"

[optimizer]
kind = "sgd"
lr = 0.01

[train]
epochs = 1

[expect]
outcome = "finite"
"#
    )
}

/// Runs `nanhunt` with `args` and asserts it ended with an exit code (no abort, no signal) in `allowed`.
fn ended(args: &[&str], allowed: &[i32]) -> (String, String) {
    let out = nanhunt(args);
    let (o, e) = (stdout(&out), stderr(&out));
    let code = out.status.code();
    assert!(code.is_some_and(|c| allowed.contains(&c)), "{args:?}: {:?} (134 or none is an abort)\n{o}\n{e}", out.status);
    assert!(!e.contains("overflowed its stack"), "{e}");
    (o, e)
}

/// `nanhunt run` on scenario `text` trains it to an outcome.
fn trains(text: &str) {
    let dir = tempdir();
    let p = write(dir.path(), "s.toml", text);
    let (out, _) = ended(&["run", p.to_str().unwrap()], &[0, 1]);
    assert!(out.contains("outcome     finite"), "{out}");
}

#[test]
fn an_lstm_of_hidden_1_over_10000_steps_trains_in_run() {
    trains(&recurrent("lstm", 10_000));
}

#[test]
fn a_gru_over_10000_steps_trains_in_run() {
    trains(&recurrent("gru", 10_000));
}

#[test]
fn an_rnn_over_50000_steps_trains_in_run() {
    trains(&recurrent("rnn", 50_000));
}

#[test]
fn a_stack_of_40000_tanh_layers_with_a_raised_memory_limit_trains_in_run() {
    let tanh = vec![r#"{ type = "tanh" }"#; 40_000].join(", ");
    let text = recurrent("lstm", 1)
        .replace("seq_len = 1\n", "")
        .replace(r#"[{ type = "lstm", hidden = 1 }, { type = "linear", out = 1 }]"#, &format!(r#"[{{ type = "linear", out = 1 }}, {tanh}]"#))
        .replace("epochs = 1", "epochs = 1\nmemory_limit_mb = 16384");
    trains(&text);
}

#[test]
fn a_sequence_past_the_depth_limit_is_refused_naming_the_key_and_the_limit() {
    let dir = tempdir();
    let p = write(dir.path(), "s.toml", &recurrent("rnn", 200_000));
    let (out, err) = ended(&["run", p.to_str().unwrap()], &[2]);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("invalid `data.seq_len`") && err.contains("over nanhunt's limit of 1048576"), "{err}");
}

#[test]
fn check_of_an_lstm_over_2000_steps_does_not_abort_on_its_workers() {
    let dir = tempdir();
    let p = write(dir.path(), "s.toml", &recurrent("lstm", 2_000));
    let (out, _) = ended(&["check", p.to_str().unwrap(), "--jobs", "2"], &[0]);
    assert!(out.contains("deep_lstm"), "{out}");
}

#[test]
fn hunt_of_an_lstm_over_2000_steps_does_not_abort_and_saves_its_state() {
    let dir = tempdir();
    let p = write(dir.path(), "s.toml", &recurrent("lstm", 2_000));
    let corpus = dir.path().join("corpus");
    let (c, o) = (corpus.to_str().unwrap(), dir.path().join("out"));
    let args = ["hunt", p.to_str().unwrap(), "--jobs", "2", "--max-runs", "4", "--time", "30s", "--shrink-time", "5s", "--corpus", c, "--out", o.to_str().unwrap()];
    ended(&args, &[0, 1]);
    assert!(corpus.join("state.json").is_file(), "the campaign state is saved");
    let mut resume = args.to_vec();
    resume.push("--resume");
    ended(&resume, &[0, 1]);
}

#[test]
fn margins_of_an_lstm_over_2000_steps_does_not_abort_on_its_workers() {
    let dir = tempdir();
    let p = write(dir.path(), "s.toml", &recurrent("lstm", 2_000));
    let (out, _) = ended(&["margins", p.to_str().unwrap(), "--jobs", "2", "--time", "3s", "--run-timeout", "2s"], &[0]);
    assert!(out.contains("optimizer.lr"), "{out}");
}

#[test]
fn replay_of_a_report_of_an_lstm_over_10000_steps_does_not_abort() {
    let dir = tempdir();
    let p = write(dir.path(), "s.toml", &recurrent("lstm", 10_000));
    let reports = dir.path().join("reports");
    ended(&["run", p.to_str().unwrap(), "--report", reports.to_str().unwrap()], &[0]);
    let report = std::fs::read_dir(&reports).unwrap().next().unwrap().unwrap().path();
    let (out, _) = ended(&["replay", report.to_str().unwrap()], &[0]);
    assert!(out.contains("replay bit for bit"), "{out}");
}
