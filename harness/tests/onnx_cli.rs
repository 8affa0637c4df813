//! An imported ONNX model (`scenarios/onnx/mlp.toml`) through the CLI: its report carries the
//! model file pinned by its SHA-256 and replays bit for bit from its own folder, a changed file
//! is refused (exit 2); `export-torch` writes the file's weights; `hunt` and `margins` find its
//! f16 flip.

mod common;

use std::path::{Path, PathBuf};

/// `scenarios/onnx/mlp.toml` and `mlp.onnx` copied into `dir`; the scenario's path.
fn copied(dir: &Path) -> PathBuf {
    let from = common::repo().join("scenarios/onnx");
    std::fs::copy(from.join("mlp.onnx"), dir.join("mlp.onnx")).unwrap();
    std::fs::copy(from.join("mlp.toml"), dir.join("mlp.toml")).unwrap();
    dir.join("mlp.toml")
}

/// The one report folder under `dir`.
fn report_in(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).find(|p| p.join("repro.toml").is_file()).expect("a report")
}

/// SHA-256 of `path` by coreutils' `sha256sum`, independent of nanhunt's.
fn sha256sum(path: &Path) -> String {
    let out = common::output_within(std::process::Command::new("sha256sum").arg(path), std::time::Duration::from_secs(30));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap().to_string()
}

fn replay(report: &Path) -> std::process::Output {
    common::nanhunt(&["replay", report.to_str().unwrap()])
}

#[test]
fn a_report_carries_the_onnx_file_pinned_by_its_hash_and_refuses_a_changed_one() {
    let (src, out) = (common::tempdir(), common::tempdir());
    let s = copied(src.path());
    let o = common::nanhunt(&["run", s.to_str().unwrap(), "--report", out.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let report = report_in(out.path());
    let text = std::fs::read_to_string(report.join("repro.toml")).unwrap();
    let want = sha256sum(&src.path().join("mlp.onnx"));
    assert!(text.contains(&format!("[model.onnx]\npath = \"mlp.onnx\"\nsha256 = \"{want}\"")), "{text}");
    assert_eq!(std::fs::read(report.join("mlp.onnx")).unwrap(), std::fs::read(src.path().join("mlp.onnx")).unwrap());
    // The scenario's folder gone and the report moved: it replays from its own folder.
    drop(src);
    let moved = out.path().join("moved");
    std::fs::rename(&report, &moved).unwrap();
    let o = replay(&moved);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    assert!(common::stdout(&o).contains("identical: 12 trace rows"), "{}", common::stdout(&o));
    // One weight's lowest mantissa bit flipped: still a model, but not the pinned one.
    let mut bytes = std::fs::read(moved.join("mlp.onnx")).unwrap();
    // PyTorch 2.15, torch.manual_seed(0): fc1.weight[0, 0] = -0.00374341 (f32, little-endian).
    let at = bytes.windows(4).position(|b| (f32::from_le_bytes([b[0], b[1], b[2], b[3]]) + 0.003_743_41).abs() < 1e-8).expect("fc1.weight[0, 0] in the file");
    bytes[at] ^= 1;
    std::fs::write(moved.join("mlp.onnx"), &bytes).unwrap();
    let o = replay(&moved);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("but the scenario pins {want}: it changed since the scenario (or report) was written")) && !err.contains("panicked"), "{err}");
    // A file cut short no longer parses: the pin says why.
    std::fs::write(moved.join("mlp.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    let o = replay(&moved);
    assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
    assert!(common::stderr(&o).contains("not an ONNX model") && common::stderr(&o).contains(&format!("pins SHA-256 {want}")), "{}", common::stderr(&o));
}

#[test]
fn export_torch_writes_the_files_weights_under_the_graphs_names() {
    let (src, out) = (common::tempdir(), common::tempdir());
    let s = copied(src.path());
    let o = common::nanhunt(&["export-torch", s.to_str().unwrap(), "--out", out.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let bytes = std::fs::read(out.path().join("init.safetensors")).unwrap();
    let init = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = init.tensor("fold0.layers.fc1.weight").unwrap();
    assert_eq!(w.shape(), [8, 4], "PyTorch's (out, in)");
    let row: Vec<f32> = w.data()[..16].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    // PyTorch 2.15, torch.manual_seed(0): fc1.weight[0] = [-0.00374341, 0.26822180, -0.41152257, -0.36796951].
    for (a, b) in row.iter().zip([-0.003_743_41, 0.268_221_8, -0.411_522_57, -0.367_969_51]) {
        assert!((f64::from(*a) - b).abs() < 1e-7, "{row:?}");
    }
    let script = std::fs::read_to_string(out.path().join("repro.py")).unwrap();
    assert!(script.contains("\"layers.0.linear.weight\": \"layers.fc1.weight\"") && script.contains("\"type\": \"tanh\""), "the stack and its names are exported");
}

#[test]
fn hunt_and_margins_find_the_imported_mlps_f16_flip() {
    let (src, out) = (common::tempdir(), common::tempdir());
    let s = copied(src.path());
    let o = common::nanhunt(&["margins", s.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    // Adam's eps = 1e-8 is below f16's smallest subnormal (2^-24 ≈ 5.96e-8): it rounds to 0.
    assert!(common::stdout(&o).contains("train.dtype = f16: flips: +Inf in `layers.fc1.weight`"), "{}", common::stdout(&o));
    let o = common::nanhunt(&["hunt", s.to_str().unwrap(), "--time", "10s", "--shrink-time", "5s", "--first", "--seed", "1", "--out", out.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", common::stderr(&o));
    assert!(common::stdout(&o).contains("eps_rounds_to_zero") && common::stdout(&o).contains("train.dtype = f16"), "{}", common::stdout(&o));
    let report = report_in(out.path());
    assert!(report.join("mlp.onnx").is_file(), "the hunt's report carries the model");
    let o = replay(&report);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
}
