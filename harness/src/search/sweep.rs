//! Seed sweeps: some failures happen on a few initialisations only. A sweep
//! runs a scenario once per seed and reports the failure rate with its 95%
//! Wilson score interval, and the first failing seeds with their sites.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use super::finding::Target;
use crate::run::{run, Location};
use crate::scenario::Scenario;

/// What a sweep found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    /// The scenario's name.
    pub scenario: String,
    /// Seeds run.
    pub runs: u64,
    /// Seeds that hit the target, with where they first went non-finite (all of them, in seed order).
    pub failures: Vec<(u64, Option<Location>)>,
    /// Observed failure rate.
    pub rate: f64,
    /// 95% Wilson score interval of the failure rate.
    pub interval: (f64, f64),
}

/// The 95% Wilson score interval of a rate of `k` in `n` (Wilson 1927; z = 1.959964).
pub fn wilson(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p, z) = (n as f64, k as f64 / n as f64, 1.959_964);
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Runs `base` with each seed of `seeds` (in order, single-threaded: every run is deterministic).
pub fn sweep(base: &Scenario, seeds: Range<u64>, target: Target) -> Sweep {
    let mut failures = Vec::new();
    let mut runs = 0;
    for seed in seeds {
        let mut s = base.clone();
        s.seed = seed;
        let o = run(&s);
        runs += 1;
        if target.hits(&o) {
            failures.push((seed, o.first_nonfinite));
        }
    }
    let k = failures.len() as u64;
    Sweep { scenario: base.name.clone(), runs, rate: if runs == 0 { 0.0 } else { k as f64 / runs as f64 }, interval: wilson(k, runs), failures }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_intervals_by_hand() {
        // 0 of 200: the upper bound is (z²/n)/(1 + z²/n) = 0.019207/1.019207 = 0.018845 (by hand, and in Python).
        let (lo, hi) = wilson(0, 200);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.018845).abs() < 1e-6, "{hi}");
        // 5 of 10: symmetric around 0.5, half-width z·sqrt(0.025 + z²/400)/(1 + z²/10) = 0.29985 → (0.2366, 0.7634).
        let (lo, hi) = wilson(5, 10);
        assert!((lo - 0.2366).abs() < 1e-4 && (hi - 0.7634).abs() < 1e-4, "{lo} {hi}");
    }

    #[test]
    fn a_sweep_counts_the_seeds_that_fail() {
        // Seed 002 ex1 fails whatever the seed (its data is explicit, its init Keras-uniform).
        let s = crate::scenario::seed("s002_ex1_linreg_sgd");
        let w = sweep(&s, 0..5, Target::Nonfinite);
        assert_eq!((w.runs, w.failures.len(), w.rate), (5, 5, 1.0));
        let fine = sweep(&crate::scenario::seed("s002_ex1_linreg_sgd_fix_standardize"), 0..5, Target::Nonfinite);
        assert_eq!((fine.failures.len(), fine.interval.0), (0, 0.0));
    }
}
