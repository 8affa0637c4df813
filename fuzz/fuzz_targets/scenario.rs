//! Structured scenarios (built by `arbitrary`, any values at all) go through
//! validation, the model plan, the data build and model initialisation:
//! everything before training must answer with a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: nanhunt::Scenario| {
    nanhunt::fuzzing::check_scenario(&s);
});
