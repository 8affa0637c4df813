//! The candle-nn block of `src/lib.rs`, unchanged, under nanhunt: a run, a
//! hunt that finds where it breaks, a margin it must keep, and the test
//! helper that holds it finite within a search space. And the same block with
//! candle-nn's own layer norms, caught leaving them without a gradient.

use std::path::Path;

use candle_block::{Classifier, Config};
use nanhunt::candle_core::{Module, Tensor};
use nanhunt::report::{check_module, replay_module, CheckOptions, Verdict};
use nanhunt::scenario::Knob;
use nanhunt::{CodeModel, HuntOptions, Status, Watch};

const CFG: Config = Config { width: 16, heads: 2, hidden: 32, eps: 1e-5, candle_norms: false };

/// The classifier exactly as written: built from the store's `VarBuilder`, run by `Module::forward`.
fn as_written() -> CodeModel {
    CodeModel::new("candle_block", |store| Classifier::new(4, CFG, store.var_builder()), |m: &Classifier, x: &Tensor, _: &mut Watch| m.forward(x))
}

/// The same model, showing the watch its attention scores and the block's output.
fn watched() -> CodeModel {
    CodeModel::new("candle_block", |store| Classifier::new(4, CFG, store.var_builder()), |m: &Classifier, x: &Tensor, w: &mut Watch| m.forward_with(x, &mut |name, t| w.check(name, t)))
}

fn scenario(m: &CodeModel) -> nanhunt::Scenario {
    m.scenario_file(Path::new("block.toml")).unwrap()
}

#[test]
fn the_block_trains_finite_as_written_and_its_report_card_names_its_parameters() {
    let m = as_written();
    let o = nanhunt::run_module(&m, &scenario(&m));
    assert_eq!(o.outcome, Status::Finite, "{:?}", o.error);
    // 64 rows in batches of 16 for 10 epochs.
    assert_eq!(o.steps, 40);
    let card = o.model.clone().expect("a code model's card");
    let qkv = card.params.iter().find(|(n, _)| n == "block.attn.qkv.weight").expect("candle-nn's names");
    assert_eq!(qkv.1, [48, 16]);
    assert_eq!(card.params.len(), 16, "embed, 2 norms, qkv, proj, 2 MLP layers and the head: weights and biases");
    // The checks add the block's tensors to the watch, and change nothing else.
    let w = watched();
    let ow = nanhunt::run_module(&w, &scenario(&w));
    assert_eq!(ow.trace.layers, ["block.attn.scores", "block.output", "model.output"]);
    let losses = |o: &nanhunt::Outcome| o.trace.rows.iter().map(|r| r.train_loss.to_bits()).collect::<Vec<_>>();
    assert_eq!(losses(&o), losses(&ow));
}

#[test]
fn with_candle_nns_layer_norm_the_norms_get_no_gradient_and_the_run_says_so() {
    let cfg = Config { candle_norms: true, ..CFG };
    let m = CodeModel::new("candle_block", move |store| Classifier::new(4, cfg, store.var_builder()), |m: &Classifier, x: &Tensor, _: &mut Watch| m.forward(x));
    let o = nanhunt::run_module(&m, &scenario(&m));
    assert_eq!((o.outcome, o.outcome.exit_code()), (Status::Nonfinite, 1), "{:?}", o.error);
    let f = o.first_nonfinite.expect("the finding");
    assert_eq!((f.kind, f.step, f.phase, f.tensor.to_string().as_str()), (nanhunt::run::Kind::NoGradient, 1, nanhunt::Phase::Backward, "block.ln1.weight.grad"));
    // The fused op cuts the graph at each norm; the residual stream still carries a gradient
    // around them to the embedding and the attention's projections.
    let c = o.cause.expect("a cause");
    assert!(c.reason.starts_with("4 of the model's 16 parameters got no gradient from the backward: `block.ln1.weight`, `block.ln1.bias`, `block.ln2.weight`, `block.ln2.bias`."), "{}", c.reason);
    assert!(c.reason.contains("candle-nn's fused layer_norm/rms_norm/softmax_last_dim has no backward (candle#2168)"), "{}", c.reason);
}

#[test]
fn the_blocks_norms_train() {
    // The store the training run built the model from (the last build: the first is the
    // runner's discovery forward), to read the norms' parameters after the run.
    let last = std::sync::Arc::new(std::sync::Mutex::new(None));
    let keep = last.clone();
    let m = CodeModel::new(
        "candle_block",
        move |store| {
            *keep.lock().unwrap() = Some(store.clone());
            Classifier::new(4, CFG, store.var_builder())
        },
        |m: &Classifier, x: &Tensor, _: &mut Watch| m.forward(x),
    );
    let o = nanhunt::run_module(&m, &scenario(&m));
    assert_eq!(o.outcome, Status::Finite, "{:?}", o.first_nonfinite);
    let store = last.lock().unwrap().take().expect("built");
    for (name, start) in [("block.ln1.weight", 1.0), ("block.ln1.bias", 0.0), ("block.ln2.weight", 1.0), ("block.ln2.bias", 0.0)] {
        // Asked for again, the store hands back the trained variable (the init is not used).
        let v = store.get(name, 16, nanhunt::candle_nn::Init::Const(start)).unwrap().to_vec1::<f32>().unwrap();
        let moved = v.iter().map(|x| (f64::from(*x) - start).abs()).fold(0.0, f64::max);
        assert!(moved > 1e-4, "{name} did not train: {v:?}");
    }
}

#[test]
fn a_hunt_finds_the_learning_rate_that_breaks_the_block_and_writes_its_report() {
    let m = watched();
    let out = tempfile::tempdir().unwrap();
    let reports = nanhunt::Reports { dir: out.path().to_path_buf() };
    let opts = HuntOptions { max_runs: Some(30), ..HuntOptions::default() };
    let r = nanhunt::hunt_module(&m, &scenario(&m), &opts, Some(&reports), &|_| {}).unwrap();
    let f = r.findings.first().expect("plain SGD at lr up to 1e4 breaks the block");
    let t = f.nearest().expect("a trigger");
    let lr = t.thresholds.iter().find(|t| t.knob == Knob::Lr).expect("the learning rate moved");
    assert!(lr.flips_at > 0.05, "{lr:?}");
    let dir = f.report.as_ref().expect("a report");
    assert!(dir.join("summary.md").is_file() && dir.join("repro.toml").is_file());
    // The report names the code model; replaying it is this test's job, not the CLI's.
    let repro = std::fs::read_to_string(dir.join("repro.toml")).unwrap();
    assert!(repro.contains("code = \"candle_block\""), "{repro}");
    let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(summary.contains("Model: Rust code `candle_block`, 16 parameters") && summary.contains("replay_module"), "{summary}");
    if std::env::var_os("SHOW_REPORT").is_some() {
        println!("{repro}\n{summary}");
    }
    let load = nanhunt::scenario::LoadOptions::default();
    let (o, divergence) = replay_module(&m, dir, &load).unwrap();
    assert_eq!((o.outcome, divergence), (Status::Nonfinite, None), "bit for bit");
    assert!(nanhunt::replay(dir, &load).unwrap_err().to_string().contains("replay_module"));
    // Another model under the same name (a wider MLP) is refused by its parameters.
    let wider = Config { hidden: 64, ..CFG };
    let other = CodeModel::new("candle_block", move |store| Classifier::new(4, wider, store.var_builder()), |m: &Classifier, x: &Tensor, _: &mut Watch| m.forward(x));
    assert!(replay_module(&other, dir, &load).unwrap_err().to_string().contains("not the one recorded"));
}

#[test]
fn the_learning_rate_keeps_a_margin_of_four() {
    // Measured with `margins_module`: the run first goes NaN at lr 0.411, 8.2× the base 0.05
    // (with candle-nn's norms, which do not train, it was 0.596, 11.9×).
    let m = as_written();
    let expect = |min: f64| {
        let text = std::fs::read_to_string("block.toml").unwrap() + &format!("\n[expect]\noutcome = \"finite\"\nmin_margin = {{ \"optimizer.lr\" = {min} }}\n");
        check_module(&m, &m.scenario(&text, "block.toml").unwrap(), &CheckOptions::default()).verdict
    };
    assert_eq!(expect(4.0), Verdict::Pass);
    // The threshold is real: a margin of 20 is more than the block has.
    assert!(matches!(expect(20.0), Verdict::Fail(ref m) if m.contains("optimizer.lr")), "{:?}", expect(20.0));
}

#[test]
fn the_block_stays_finite_for_learning_rates_up_to_seven_times_its_own() {
    // Its margin is 8.2× (above): 0.35 is 7× the base 0.05.
    let m = watched();
    let mut s = scenario(&m);
    s.search.as_mut().unwrap().lr = Some([1e-3, 0.35]);
    nanhunt::assert_finite_within(&m, &s, &HuntOptions { max_runs: Some(20), ..HuntOptions::default() });
}

/// Where the child runs of the thread-count test write their trace.
const TRACE_TO: &str = "CANDLE_BLOCK_TRACE_TO";

#[test]
fn the_block_is_bit_identical_at_one_and_two_threads() {
    let m = watched();
    if let Some(path) = std::env::var_os(TRACE_TO) {
        // A child run (below): the trace and the thread count Candle used.
        let o = nanhunt::run_module(&m, &scenario(&m));
        let mut bytes = format!("threads {}\n", o.threads).into_bytes();
        bytes.extend(o.trace.to_csv().unwrap());
        std::fs::write(path, bytes).unwrap();
        return;
    }
    // Candle reads its thread count once per process: run this test again in a child per count.
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut traces = Vec::new();
    for threads in ["1", "2"] {
        let path = dir.path().join(threads);
        let status = std::process::Command::new(&exe)
            .args(["--exact", "the_block_is_bit_identical_at_one_and_two_threads", "--test-threads", "1"])
            .env("CANDLE_NUM_THREADS", threads)
            .env("RAYON_NUM_THREADS", threads)
            .env(TRACE_TO, &path)
            .status()
            .unwrap();
        assert!(status.success());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(&format!("threads {threads}\n")), "the thread count is recorded: {}", &text[..20]);
        traces.push(text.lines().skip(1).collect::<Vec<_>>().join("\n"));
    }
    assert_eq!(traces[0].lines().count(), 41, "a header and 40 steps");
    assert_eq!(traces[0], traces[1], "the trace differs between 1 and 2 threads");
}
