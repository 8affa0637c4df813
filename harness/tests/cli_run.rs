//! End-to-end tests of `nanhunt run`: exit codes, JSON, traces, errors, threads.

mod common;
use common::*;

#[test]
fn nonfinite_run_exits_1_with_json_location() {
    let path = seed("s002_ex1_linreg_sgd");
    let out = nanhunt(&["run", path.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["scenario"], "s002_ex1_linreg_sgd");
    assert_eq!(v["outcome"], "nonfinite");
    for key in ["step", "epoch", "fold", "phase", "tensor", "kind"] {
        assert!(!v["first_nonfinite"][key].is_null(), "missing first_nonfinite.{key}");
    }
    assert!(v["stagnation"].is_null() && v["error"].is_null());
    assert_eq!(v["steps"], v["first_nonfinite"]["step"]);
}

#[test]
fn finite_run_exits_0_and_writes_a_trace() {
    let dir = tempdir();
    let trace = dir.path().join("t.csv");
    let path = seed("s002_ex1_linreg_sgd_fix_lower_lr");
    let out = nanhunt(&["run", path.to_str().unwrap(), "--trace", trace.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("outcome     finite"));
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("step,epoch,fold,train_loss,val_loss,grad_norm,param_norm,lr"));
    assert_eq!(lines.count(), 10, "ten full-batch epochs of three rows");
}

#[test]
fn malformed_scenario_exits_2_with_file_line_col() {
    let dir = tempdir();
    let src = std::fs::read_to_string(seed("s002_ex1_linreg_sgd")).unwrap().replace("lr = 0.01", "learning_rate = 0.01");
    let p = write(dir.path(), "bad.toml", &src);
    let out = nanhunt(&["run", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let line = src.lines().position(|l| l.starts_with("learning_rate")).unwrap() + 1;
    let err = stderr(&out);
    assert!(err.contains(&format!("bad.toml:{line}:1: unknown field `learning_rate`")), "{err}");
}

#[test]
fn json_error_outcome_for_cuda_without_feature() {
    let dir = tempdir();
    let src = std::fs::read_to_string(seed("s002_ex1_linreg_sgd")).unwrap().replace("device = \"cpu\"", "device = \"cuda:0\"");
    let p = write(dir.path(), "gpu.toml", &src);
    let out = nanhunt(&["run", p.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["outcome"], "error");
    if cfg!(not(feature = "cuda")) {
        assert!(v["error"].as_str().unwrap().contains("--features cuda"), "{v}");
    }
}

#[test]
fn continue_steps_runs_past_the_first_nonfinite_value() {
    let path = seed("s002_ex1_linreg_sgd");
    let out = nanhunt(&["run", path.to_str().unwrap(), "--json", "--continue-steps", "2"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let first = v["first_nonfinite"]["step"].as_u64().unwrap();
    assert_eq!(v["steps"].as_u64().unwrap(), first + 2);
}

#[test]
fn trace_is_bit_identical_at_one_and_two_threads() {
    // The wide MLP exercises multi-threaded gemm; the RNN, many small matmuls; the tiny GPT,
    // batched attention products, reductions over the sequence and the embedding's backward;
    // the CNN and the conv1d model, the convolution kernels' per-sample gemms and the pooling.
    let gpt = repo().join("scenarios/real/tiny_gpt.toml");
    let layers = |name: &str| repo().join(format!("scenarios/layers/{name}.toml"));
    for (name, path) in [
        ("s003_ex1_wide_mlp_adam", seed("s003_ex1_wide_mlp_adam")),
        ("s004_ex1_simple_rnn_adam", seed("s004_ex1_simple_rnn_adam")),
        ("tiny_gpt", gpt),
        ("cnn_adam", layers("cnn_adam")),
        ("conv1d_accumulate_sum_fix_mean", layers("conv1d_accumulate_sum_fix_mean")),
    ] {
        let dir = tempdir();
        let mut traces = Vec::new();
        for threads in ["1", "2"] {
            let t = dir.path().join(format!("{threads}.csv"));
            let out = nanhunt(&["--threads", threads, "run", path.to_str().unwrap(), "--trace", t.to_str().unwrap(), "--json"]);
            let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
            assert_eq!(v["threads"].as_u64().unwrap().to_string(), threads, "thread count is recorded");
            traces.push(std::fs::read(&t).unwrap());
        }
        assert!(traces[0].len() > 100);
        assert_eq!(traces[0], traces[1], "{name}: trace differs between 1 and 2 threads");
    }
}

/// Runs each scenario at 1 and 2 threads (traces in `dir`) and asserts the traces are the same bytes.
fn same_traces_at_one_and_two_threads(dir: &tempfile::TempDir, paths: &[std::path::PathBuf]) {
    for path in paths {
        let traces: Vec<Vec<u8>> = ["1", "2"]
            .map(|threads| {
                // One trace file per scenario and thread count: a run that writes none cannot pass on another's.
                let t = dir.path().join(format!("{}-{threads}.csv", path.file_stem().unwrap().to_string_lossy()));
                let out = nanhunt(&["--threads", threads, "run", path.to_str().unwrap(), "--trace", t.to_str().unwrap()]);
                assert!(out.status.code().is_some(), "{}{}", stdout(&out), stderr(&out));
                std::fs::read(&t).unwrap()
            })
            .into();
        assert!(traces[0].len() > 100, "{path:?}");
        assert_eq!(traces[0], traces[1], "{path:?}: trace differs between 1 and 2 threads");
    }
}

/// The fused recurrent layers (issue 31) at 1 and 2 threads: the Elman RNN over 100 steps, a
/// GRU, stacked relu LSTMs with recurrent dropout (NaN at step 8, the trace up to it), and
/// stacked GRUs with recurrent dropout returning every state, and the benchmark's language
/// model (an embedding read by an LSTM, which projects the table's used rows: `kernel::gather`).
#[test]
fn recurrent_traces_are_bit_identical_at_one_and_two_threads() {
    let dir = tempdir();
    let lm = dir.path().join("lm.toml");
    let model = r#"layers = [{ type = "embedding", dim = 64 }, { type = "lstm", hidden = 128, return_sequences = true }, { type = "linear", out = 64 }]"#;
    let data = "inputs = { kind = \"tokens\", vocab = 64 }\ntargets = { kind = \"next_token\" }";
    let rest = "[loss]\nkind = \"cross_entropy\"\n[optimizer]\nkind = \"adam\"\nlr = 1e-3\n[train]\nepochs = 2\nbatch_size = 16\n";
    std::fs::write(&lm, format!("name = \"lm\"\nseed = 0\n[data]\nn = 64\nseq_len = 32\n{data}\n[model]\n{model}\n{rest}")).unwrap();
    let gru_dropout = dir.path().join("gru_dropout.toml");
    let text = std::fs::read_to_string(repo().join("scenarios/layers/gru_unscaled_targets_sgd.toml")).unwrap().replace(
        r#"{ type = "gru", hidden = 64 },"#,
        r#"{ type = "gru", hidden = 64, recurrent_dropout = 0.3, return_sequences = true }, { type = "gru", hidden = 16, activation = "relu", recurrent_dropout = 0.3 },"#,
    );
    std::fs::write(&gru_dropout, text).unwrap();
    let paths = [
        repo().join("scenarios/real/rnn_sgd_long_sequences.toml"),
        repo().join("scenarios/layers/gru_unscaled_targets_sgd.toml"),
        repo().join("scenarios/real/keras13221_lstm_relu_recurrent_dropout.toml"),
        gru_dropout,
        lm,
    ];
    same_traces_at_one_and_two_threads(&dir, &paths);
}

/// The fused recurrence in half types (issue 31) at 1 and 2 threads: the Elman RNN over 100
/// steps in f16, stacked relu LSTMs with recurrent dropout in bf16, and stacked GRUs with
/// recurrent dropout under `amp_f16` (the cells on real half tensors) and `amp_bf16`.
#[test]
fn half_recurrent_traces_are_bit_identical_at_one_and_two_threads() {
    let dir = tempdir();
    let base = std::fs::read_to_string(repo().join("scenarios/layers/gru_unscaled_targets_sgd.toml")).unwrap();
    let gru = base
        .replace(r#"{ type = "gru", hidden = 64 },"#, r#"{ type = "gru", hidden = 64, recurrent_dropout = 0.3, return_sequences = true }, { type = "gru", hidden = 16, recurrent_dropout = 0.3 },"#);
    assert_ne!(gru, base, "the GRU edit must apply");
    let sources = [
        ("rnn_f16", std::fs::read_to_string(repo().join("scenarios/real/rnn_sgd_long_sequences.toml")).unwrap(), "dtype = \"f16\""),
        ("lstm_bf16", std::fs::read_to_string(repo().join("scenarios/real/keras13221_lstm_relu_recurrent_dropout.toml")).unwrap(), "dtype = \"bf16\""),
        ("gru_amp_f16", gru.clone(), "precision = \"amp_f16\""),
        ("gru_amp_bf16", gru, "precision = \"amp_bf16\""),
    ];
    let paths = sources.map(|(name, text, line)| {
        let path = dir.path().join(format!("{name}.toml"));
        let edited = text.replacen("[train]\n", &format!("[train]\n{line}\n"), 1);
        assert_ne!(edited, text, "{name}: the precision edit must apply");
        std::fs::write(&path, edited).unwrap();
        path
    });
    same_traces_at_one_and_two_threads(&dir, &paths);
}

/// The fused batch norm (issue 31) at 1 and 2 threads: BatchNorm2d after each convolution of
/// the CNN, and BatchNorm1d over features (pt1381's fix, full batches, and pt1381 itself, whose
/// single-row batch makes the running variance NaN and validation fail at step 4).
#[test]
fn batch_norm_traces_are_bit_identical_at_one_and_two_threads() {
    let dir = tempdir();
    let cnn_bn = dir.path().join("cnn_bn.toml");
    let text = std::fs::read_to_string(repo().join("scenarios/layers/cnn_adam.toml"))
        .unwrap()
        .replace("kernel = 3 },\n    { type = \"relu\" }", "kernel = 3 },\n    { type = \"batch_norm\" },\n    { type = \"relu\" }");
    assert_eq!(text.matches("batch_norm").count(), 2);
    std::fs::write(&cnn_bn, text).unwrap();
    let paths = [cnn_bn, repo().join("scenarios/real/pt1381_batch_norm_single_row_fix_full_batch.toml"), repo().join("scenarios/real/pt1381_batch_norm_single_row.toml")];
    same_traces_at_one_and_two_threads(&dir, &paths);
}

#[test]
fn a_run_whose_scaler_skipped_steps_says_which() {
    // pytorch#111739: the first scale 65536 turns a gradient of ±1 into ±inf in f16, so step 1
    // is skipped and the scale halves; 32768 fits, and the other 4 of the 5 steps apply.
    let path = repo().join("scenarios/real/pt111739_amp_first_step_overflow.toml");
    let out = nanhunt(&["run", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("\nskipped     1 of 5 steps skipped: inf/NaN gradients at step 1\n"), "{}", stdout(&out));
}
