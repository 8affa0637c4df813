//! Inputs saved by the cargo-fuzz targets, each a named regression test.

use nanhunt::fuzzing::{bundled, decode, run_bytes};
use nanhunt::scenario::{Knob, Value};
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
    assert!(matches!(decoded.as_slice(), [Mutation { knob: Knob::Lr, value: Value::Real(v) }] if *v > 1e280), "{decoded:?}");
    assert!(run_bytes(&bytes).is_some(), "still a finding");
    let base = bundled();
    let min = Minimizer::new(&base, Target::Nonfinite, None).minimize(&decoded).unwrap();
    let t = &min.thresholds[0];
    assert_eq!(t.knob, Knob::Lr);
    // A threshold above the base lr of 0.01, and hundreds of decades under the fuzzer's value.
    assert!(t.flips_at > 1.0 && t.flips_at < 1e3, "{t:?}");
}

/// `scenario` target, first finding of the steered scenarios: a freely drawn scenario
/// (`data.seq_len = 0`, attention in the model) divided by zero in `memory_estimate`,
/// which the library calls before validation (`check_scenario`) and `run` calls on a
/// scenario built in code. Validation refuses `seq_len = 0`; the estimate must not panic.
#[test]
fn scenario_seq_len_0_has_a_memory_estimate_and_no_panic() {
    use arbitrary::{Arbitrary, Unstructured};
    let bytes = input("scenario-memory-seq-len-0.bin");
    let s = nanhunt::fuzzing::Steered::arbitrary(&mut Unstructured::new(&bytes)).unwrap().0;
    assert_eq!(s.data.seq_len, Some(0), "{s:?}");
    let _ = nanhunt::scenario::memory_estimate(&s);
    nanhunt::fuzzing::check_scenario(&s);
    assert!(!nanhunt::scenario::validate(&s).is_empty());
    // A run of it (the library does not validate a scenario built in code) ends in an error.
    let o = nanhunt::run(&s);
    assert!(o.error.is_some(), "{:?}", o.outcome);
}

/// `scenario` target, second finding: token inputs with `next_token` targets and
/// `data.seq_len = usize::MAX` overflowed `seq_len + 1` (the ids a row needs) in validation:
/// a panic in debug builds (`nanhunt run` exited 101), a wrap to 0 in release. It is an error
/// at the row now.
#[test]
fn scenario_seq_len_max_with_next_token_targets_is_an_error_at_the_row() {
    use arbitrary::{Arbitrary, Unstructured};
    let bytes = input("scenario-validate-seq-len-max-next-token.bin");
    let s = nanhunt::fuzzing::Steered::arbitrary(&mut Unstructured::new(&bytes)).unwrap().0;
    assert_eq!(s.data.seq_len, Some(usize::MAX), "{s:?}");
    nanhunt::fuzzing::check_scenario(&s);
    let text = "name = \"n\"\n[data]\nseq_len = 18446744073709551615\ninputs = { kind = \"tokens\", vocab = 4, rows = [[0, 1, 2]] }\n\
                targets = { kind = \"next_token\" }\n[model]\nlayers = [{ type = \"embedding\", dim = 2 }, { type = \"linear\", out = 4 }]\n\
                [loss]\nkind = \"cross_entropy\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.1\n";
    let problems = nanhunt::scenario::validate(&nanhunt::scenario::parse_str(text, "n.toml").unwrap());
    assert!(problems.iter().any(|p| p.key == "data.inputs.rows.0"), "{problems:?}");
}

/// `expr` target, first finding: `reshape(x, (-1,1,1,1, 1,-- 1,1, 1,-- 3))` (a rank-9 result,
/// `--1` being 1) checked, then Candle panicked subtracting it ("rank 9 exceeds MAX_DIMS=8").
/// The checker refuses a reshape past 8 dimensions (`ops::expr::check`); 8 still evaluates.
#[test]
fn expr_reshape_to_rank_9_is_refused_not_a_panic() {
    let text = String::from_utf8(input("expr-reshape-rank-9.txt")).unwrap();
    assert!(!nanhunt::ops::expr::fuzz_one(&text), "refused, so not evaluated");
    assert!(!nanhunt::ops::expr::fuzz_one("reshape(x, (-1, 1, 1, 1, 1, 1, 1, 1, 3)) - x"));
    assert!(nanhunt::ops::expr::fuzz_one("reshape(x, (-1, 1, 1, 1, 1, 1, 1, 3)) - 1"), "rank 8 evaluates");
}

/// `expr` target, second finding: `h/0<+reshape(x,(1,1,1, 2,1, 2**18888**3))`: the size
/// `2**18888**3` is inf, cast to usize::MAX, and the product of the sizes overflowed (a panic
/// with overflow checks on) before the shape was refused. The product is checked now.
#[test]
fn expr_reshape_to_an_infinite_size_is_refused_not_an_overflow() {
    let text = String::from_utf8(input("expr-reshape-size-overflow.txt")).unwrap();
    assert!(!nanhunt::ops::expr::fuzz_one(&text), "refused, so not evaluated");
    assert!(!nanhunt::ops::expr::fuzz_one("reshape(x, (-1, 2**62, 2**62))"), "sizes whose product overflows");
}
