//! Bad ONNX models through the CLI: a truncated file, bytes that are not a model, a path out of
//! the scenario's folder, data that does not fit the graph's input, an unsupported op. Each is
//! a clear error and exit 2, never a panic.

mod common;

use std::path::Path;

const SCENARIO: &str = "name = \"t\"\n[data]\nn = 8\nfeatures = FEATURES\ninputs = { kind = \"normal\" }\ntargets = { kind = \"linear\" }\n[model]\nonnx = \"PATH\"\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n";

fn mlp() -> Vec<u8> {
    std::fs::read(common::repo().join("scenarios/onnx/mlp.onnx")).unwrap()
}

/// Runs a scenario of `features` features importing `path` in `dir`; returns its stderr after checking exit 2.
fn refused(dir: &Path, path: &str, features: usize) -> String {
    let s = common::write(dir, "s.toml", &SCENARIO.replace("PATH", path).replace("FEATURES", &features.to_string()));
    let out = common::nanhunt(&["run", s.to_str().unwrap()]);
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_onnx_files_exit_2_with_a_clear_error() {
    let dir = common::tempdir();
    let good = mlp();
    std::fs::write(dir.path().join("cut.onnx"), &good[..good.len() / 3]).unwrap();
    let err = refused(dir.path(), "cut.onnx", 4);
    assert!(err.contains("cut.onnx: cannot import the ONNX model: not an ONNX model"), "{err}");
    std::fs::write(dir.path().join("junk.onnx"), b"\x08\x96\x01 this is not protobuf \xff\xff").unwrap();
    assert!(refused(dir.path(), "junk.onnx", 4).contains("cannot import the ONNX model"));
    let err = refused(dir.path(), "missing.onnx", 4);
    assert!(err.contains("invalid `model.onnx`: cannot open the ONNX model file"), "{err}");
}

#[test]
fn a_model_outside_the_folder_or_of_another_width_is_refused() {
    let dir = common::tempdir();
    std::fs::write(dir.path().join("mlp.onnx"), mlp()).unwrap();
    let inner = dir.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    let err = refused(&inner, "../mlp.onnx", 4);
    assert!(err.contains("the ONNX model path `../mlp.onnx` leads outside the scenario's folder"), "{err}");
    // The graph's input is (batch, 4); data of 3 features does not fit it.
    let err = refused(dir.path(), "mlp.onnx", 3);
    assert!(err.contains("invalid `model.onnx`: the graph's input `x` is (?, 4) but the data gives"), "{err}");
}

#[test]
fn unsupported_ops_are_listed_with_their_node_and_module() {
    // The MLP's Tanh node renamed to an op nanhunt does not import (same length, so the protobuf stays whole).
    let bytes = mlp();
    let at = bytes.windows(6).position(|w| w == b"\x22\x04Tanh").map(|i| i + 2).expect("the MLP has a Tanh node");
    let mut changed = bytes.clone();
    changed[at..at + 4].copy_from_slice(b"Atan");
    let dir = common::tempdir();
    std::fs::write(dir.path().join("m.onnx"), changed).unwrap();
    let err = refused(dir.path(), "m.onnx", 4);
    assert!(err.contains("nanhunt does not import these nodes yet: Atan node `node_tanh` (module `act2.tanh`)"), "{err}");
}
