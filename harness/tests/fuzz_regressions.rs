//! Inputs saved by the cargo-fuzz targets, each a named regression test.

use nanhunt::fuzzing::{bundled, decode, run_bytes};
use nanhunt::scenario::Knob;
use nanhunt::search::{Minimizer, Mutation, Target};

fn input(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions").join(name)).unwrap()
}

/// `mutations` target, first finding: the bytes decode to lr ≈ 1.29e281 on the bundled
/// scenario, which overflows at once; the minimizer brings lr back to its threshold.
#[test]
fn mutations_lr_1e281_shrinks_to_the_lr_threshold() {
    let bytes = input("mutations-lr-1e281.bin");
    let decoded = decode(&bytes);
    assert!(matches!(decoded.as_slice(), [Mutation::Lr { value }] if *value > 1e280), "{decoded:?}");
    assert!(run_bytes(&bytes).is_some(), "still a finding");
    let base = bundled();
    let min = Minimizer::new(&base, Target::Nonfinite, None).minimize(&decoded).unwrap();
    let t = &min.thresholds[0];
    assert_eq!(t.knob, Knob::Lr);
    // A threshold above the base lr of 0.01, and hundreds of decades under the fuzzer's value.
    assert!(t.flips_at > 1.0 && t.flips_at < 1e3, "{t:?}");
}
