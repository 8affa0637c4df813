//! The library side of the cargo-fuzz targets in `fuzz/`: turning fuzzer
//! bytes into mutations of a bundled scenario (shared by `nanhunt fuzz-shrink`,
//! so a saved crash input decodes to the same candidate), and feeding text or
//! structured scenarios (`arbitrary`) through everything before training.

use arbitrary::{Arbitrary, Unstructured};

use super::finding::Target;
use super::mutation::{mutate, Mutation};
use crate::scenario::{from_str, memory_estimate, parse_str, validate, InputSpec, Knob, Scenario, Value};

mod steer;
pub use steer::Steered;

/// The scenario the `mutations` target mutates: seed 002 ex1 with its standardization fix (finite, fast).
pub const BUNDLED: &str = include_str!("../../../scenarios/seeds/s002_ex1_linreg_sgd_fix_standardize.toml");

/// Most epochs a fuzz candidate may ask for, so every execution stays fast.
pub const MAX_EPOCHS: u32 = 200;

/// The bundled base scenario.
pub fn bundled() -> Scenario {
    from_str(BUNDLED, "bundled.toml").expect("the bundled scenario is valid")
}

/// Decodes fuzzer bytes into at most four mutations, epochs capped at [`MAX_EPOCHS`].
pub fn decode(data: &[u8]) -> Vec<Mutation> {
    let mut u = Unstructured::new(data);
    let mut out = Vec::new();
    while out.len() < 4 && !u.is_empty() {
        match Mutation::arbitrary(&mut u) {
            Ok(Mutation { knob: Knob::Epochs, value: Value::Count(n) }) => out.push(Mutation::new(Knob::Epochs, n.clamp(1, MAX_EPOCHS))),
            Ok(m) => out.push(m),
            Err(_) => break,
        }
    }
    out
}

/// Runs the candidate the bytes decode to; `Some(description)` if it goes non-finite.
pub fn run_bytes(data: &[u8]) -> Option<String> {
    let base = bundled();
    let s = mutate(&base, &decode(data))?;
    let o = crate::run::run(&s);
    Target::Nonfinite.hits(&o).then(|| o.first_nonfinite.map(|f| f.to_string()).unwrap_or_default())
}

/// Largest estimated run the fuzz targets prepare (data built, model initialised).
pub const MAX_PREPARED_BYTES: u128 = 4 << 20;

/// Feeds bytes to the scenario reader; text that parses goes on to [`check_scenario`]. Any panic is a bug.
pub fn parse_bytes(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(s) = parse_str(text, "fuzz.toml") {
            check_scenario(&s);
        }
    }
}

/// Validates a scenario (validation works out the model's plan); if it is
/// valid, small and reads no file, also builds its data and first model,
/// everything a run does before training. Any panic is a bug.
pub fn check_scenario(s: &Scenario) {
    let _ = memory_estimate(s);
    if !validate(s).is_empty() || matches!(s.data.inputs, InputSpec::Csv { .. }) {
        return;
    }
    if memory_estimate(s).is_some_and(|b| b <= MAX_PREPARED_BYTES) {
        let _ = crate::run::dry_run(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_is_stable_and_capped() {
        let bytes: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
        assert_eq!(decode(&bytes), decode(&bytes));
        assert!(decode(&bytes).len() <= 4);
        assert!(decode(&[]).is_empty());
        assert!(decode(&bytes).iter().all(|m| !matches!(m, Mutation { knob: Knob::Epochs, value: Value::Count(n) } if *n > MAX_EPOCHS)));
    }

    #[test]
    fn structured_scenarios_never_panic_before_training() {
        use arbitrary::{Arbitrary, Unstructured};
        for seed in 0..300u32 {
            let bytes: Vec<u8> = (0..512).map(|i| (seed.wrapping_mul(2654435761).rotate_left(i % 32) ^ i) as u8).collect();
            if let Ok(s) = Scenario::arbitrary(&mut Unstructured::new(&bytes)) {
                check_scenario(&s);
            }
            if let Ok(Steered(s)) = Steered::arbitrary(&mut Unstructured::new(&bytes)) {
                check_scenario(&s);
            }
        }
        // And the bundled scenario goes all the way through.
        check_scenario(&bundled());
    }

    #[test]
    fn empty_input_runs_the_finite_base() {
        assert_eq!(run_bytes(&[]), None);
    }
}
