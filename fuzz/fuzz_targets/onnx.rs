//! The ONNX loader must answer any bytes with a model or an error, never a panic; a model that
//! loads is compiled to registry layers, which must give layers or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nanhunt::scenario::onnx::fuzz_one(data);
});
