//! Structured scenarios go through validation, the model plan, the data build
//! and model initialisation: everything before training must answer with a
//! value or an error, never a panic. The bytes are steered ([`nanhunt::fuzzing::Steered`])
//! so most scenarios are valid and reach convolutions, pools, recurrent layers,
//! attention, autocast, loss scaling, accumulation and schedules; one in eight is
//! drawn freely (`Scenario`'s derived `Arbitrary`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: nanhunt::fuzzing::Steered| {
    nanhunt::fuzzing::check_scenario(&s.0);
});
