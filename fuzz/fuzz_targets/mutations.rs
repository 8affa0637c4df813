//! Coverage-guided search for NaN: the fuzzer's bytes become a list of typed
//! mutations of a bundled scenario; a run that goes non-finite is a finding
//! (reported as a crash, so libFuzzer saves its input). Shrink a saved input
//! with `nanhunt fuzz-shrink ARTIFACT`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(finding) = nanhunt::fuzzing::run_bytes(data) {
        panic!("nanhunt finding: {finding}");
    }
});
