//! Hunt benchmark: for every seed base scenario that is finite at its own
//! settings, time and runs to the first flip, shrink time and repro size, for
//! the score-guided engine and for uniform random search (proptest draws) over
//! the same space.
//!
//! `cargo bench -p nanhunt --bench hunt` prints a Markdown table.
//! `NANHUNT_BENCH_BUDGET` sets the search budget per engine in seconds (default 60).

use std::time::Duration;

use nanhunt::scenario::ExpectedOutcome;
use nanhunt::search::{hunt, Engine, HuntOptions};

fn main() {
    std::env::set_var("RAYON_NUM_THREADS", "1");
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    let budget: u64 = std::env::var("NANHUNT_BENCH_BUDGET").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/seeds");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    println!("| scenario | engine | time to flip (s) | runs to flip | shrink (s) | knobs | rows | log10 distance from base | finding |");
    println!("|---|---|---:|---:|---:|---:|---:|---|---|");
    let mut ratios = Vec::new();
    for f in files {
        let base = nanhunt::load(&f).unwrap();
        let finite = base.expect.as_ref().is_some_and(|e| e.outcome == ExpectedOutcome::Finite);
        if !finite || base.name.contains("_fix_") {
            continue;
        }
        let mut runs = Vec::new();
        for engine in [Engine::Guided, Engine::Property] {
            let opts = HuntOptions { budget: Duration::from_secs(budget), engine, first: true, seed: 1, ..HuntOptions::default() };
            let r = hunt(&base, &opts, None, &|_| {}).unwrap();
            let name = if engine == Engine::Guided { "guided" } else { "random" };
            match r.findings.first() {
                None => {
                    println!("| {} | {name} | > {budget} | > {} | | | | | none |", base.name, r.progress.runs);
                    runs.push(f64::INFINITY);
                }
                Some(f) => {
                    let t = f.nearest().expect("a root cause has a trigger");
                    let distance: Vec<String> = t
                        .mutations
                        .iter()
                        .map(|m| match (m.numeric(), m.base_value(&base)) {
                            (Some((v, _)), Some(b)) if v > 0.0 && b > 0.0 => format!("{} {:+.2}", m.knob(), (v / b).log10()),
                            _ => m.knob().to_string(),
                        })
                        .collect();
                    let rows = t.rows.as_ref().map_or("-".into(), |c| format!("{}→{}", c.total, c.kept.len()));
                    println!(
                        "| {} | {name} | {:.1} | {} | {:.1} | {} | {rows} | {} | {} in {} |",
                        base.name,
                        f.seconds_to_find,
                        f.runs_to_find,
                        f.seconds_to_shrink,
                        t.mutations.len(),
                        distance.join(", "),
                        f.location.kind,
                        f.location.tensor
                    );
                    runs.push(f.runs_to_find as f64);
                }
            }
        }
        ratios.push(runs[1] / runs[0]);
    }
    ratios.sort_by(f64::total_cmp);
    println!("\nmedian ratio of random to guided runs to first flip: {:.2}", ratios[ratios.len() / 2]);
}
