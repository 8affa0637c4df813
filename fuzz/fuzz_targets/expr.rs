//! The expression parser and checker must answer any text with a tree or an error with its
//! column, never a panic; text that checks is evaluated on small tensors, which must give a
//! tensor or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        nanhunt::ops::expr::fuzz_one(text);
    }
});
