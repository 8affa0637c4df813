//! The scenario reader must answer any text with a scenario or a located
//! error, never a panic; text that parses goes on through validation, the
//! model plan, the data build and model initialisation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nanhunt::fuzzing::parse_bytes(data);
});
