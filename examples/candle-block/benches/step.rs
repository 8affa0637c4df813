//! What nanhunt's watch costs on a model written in Rust: µs per training
//! step of the candle-nn block (`src/lib.rs`) run by `nanhunt::run_with`,
//! with the watch off (the loss only), on, and on with the block's two
//! `Watch::check`s. `cargo bench -p candle-block` prints a Markdown table.
//! As in nanhunt's own `step` bench, a short and a long run are timed and the
//! difference is divided by the extra steps, the variants alternate, and the
//! median of the repetitions is kept; one thread.

use std::time::Instant;

use candle_block::{Classifier, Config};
use nanhunt::candle_core::{Module, Tensor};
use nanhunt::{run_with, CodeModel, RunOptions, Scenario, Watch};

const CFG: Config = Config { width: 16, heads: 2, hidden: 32, eps: 1e-5, candle_norms: false };

fn scenario(m: &CodeModel) -> Scenario {
    m.scenario_file(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("block.toml")).expect("block.toml")
}

/// Seconds to run `steps` steps.
fn time(s: &Scenario, watch: bool, steps: usize) -> f64 {
    let mut s = s.clone();
    s.train.max_steps = Some(steps);
    s.train.epochs = steps;
    let t = Instant::now();
    let o = run_with(&s, &RunOptions { watch, ..RunOptions::default() });
    assert_eq!(o.steps, steps, "{:?}", o.error);
    t.elapsed().as_secs_f64()
}

fn main() {
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let plain = CodeModel::new("candle_block", |store| Classifier::new(4, CFG, store.var_builder()), |m: &Classifier, x: &Tensor, _: &mut Watch| m.forward(x));
    let checked = CodeModel::new("candle_block", |store| Classifier::new(4, CFG, store.var_builder()), |m: &Classifier, x: &Tensor, w: &mut Watch| m.forward_with(x, &mut |n, t| w.check(n, t)));
    let variants = [("watch off (loss only)", scenario(&plain), false), ("watch on", scenario(&plain), true), ("watch on, 2 checks", scenario(&checked), true)];
    let (short, long, reps) = (20, 220, 7);
    let mut per_step = vec![Vec::new(); variants.len()];
    for _ in 0..reps {
        for (i, (_, s, watch)) in variants.iter().enumerate() {
            per_step[i].push((time(s, *watch, long) - time(s, *watch, short)) / (long - short) as f64);
        }
    }
    println!("| candle-block (batch 16, seq 8, width 16), 1 thread | µs/step | vs watch off |\n|---|---:|---:|");
    let medians: Vec<f64> = per_step
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    for ((name, _, _), m) in variants.iter().zip(&medians) {
        println!("| {name} | {:.0} | {:.2}× |", m * 1e6, m / medians[0]);
    }
}
