//! µs per training step, single-threaded, with the watch on and off.
//!
//! `cargo bench -p nanhunt --bench step` prints one line per model and mode.
//! Setup (data, init) is cancelled out by timing a short and a long run and
//! dividing the difference by the extra steps. Compare with
//! `python3 bench/torch_step.py` for the PyTorch side.

use std::time::Instant;

use nanhunt::{run_with, RunOptions, Scenario};

fn load(name: &str) -> Scenario {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/seeds").join(format!("{name}.toml"));
    nanhunt::load(&p).expect("bundled scenario")
}

/// Median over `reps` of (time(long) − time(short)) / (long − short) steps, in µs.
fn us_per_step(s: &Scenario, watch: bool, short: usize, long: usize, reps: usize) -> f64 {
    let time = |steps: usize| {
        let mut s = s.clone();
        s.train.max_steps = Some(steps);
        s.train.epochs = steps; // enough epochs for every scenario to reach max_steps
        s.optimizer.lr = 1e-3; // the cost of a step does not depend on lr; stay finite throughout
        let opts = RunOptions { watch, ..RunOptions::default() };
        let t = Instant::now();
        let o = run_with(&s, &opts);
        assert_eq!(o.steps, steps, "{}: {:?}", s.name, o.error);
        t.elapsed().as_secs_f64()
    };
    let mut v: Vec<f64> = (0..reps).map(|_| (time(long) - time(short)) / (long - short) as f64 * 1e6).collect();
    v.sort_by(f64::total_cmp);
    v[reps / 2]
}

fn main() {
    // Single-threaded, set before Candle's pools start.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    let cases = [("s000_ex1_bce_mlp", "mlp_small (10-100-1, batch 32, Adam)", 200, 4200), ("s003_ex1_wide_mlp_adam", "mlp_wide (10-1024-1024-1, batch 100, Adam)", 5, 45)];
    for (name, label, short, long) in cases {
        let s = load(name);
        let on = us_per_step(&s, true, short, long, 7);
        let off = us_per_step(&s, false, short, long, 7);
        println!("nanhunt {label:<45} watch_off_us_per_step={off:>10.1}  watch_on_us_per_step={on:>10.1}  watch_cost={:>5.1}%", (on / off - 1.0) * 100.0);
    }
}
