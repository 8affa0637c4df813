//! Helpers for the CLI end-to-end tests: the built binary, the repo's
//! scenarios, and temporary directories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The PyTorch interpreter of the confirmation tests: `NANHUNT_TORCH_PYTHON`, else the
/// repository's `.venv-torch` (which `.ci/run` installs).
pub fn torch_python() -> PathBuf {
    let p = std::env::var_os("NANHUNT_TORCH_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo().join(".venv-torch/bin/python"));
    assert!(p.exists(), "no PyTorch interpreter at {} (set NANHUNT_TORCH_PYTHON, or run .ci/run once to install .venv-torch)", p.display());
    p
}

/// Runs `cmd` to its end, its output collected, killed after `limit` (a test's PyTorch
/// script must not hang the suite): the output, or a panic saying it ran too long.
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("the command starts");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            r.read_to_end(&mut b).map(|_| b).unwrap_or_default()
        })
    };
    let (out, err) = (drain(Box::new(child.stdout.take().unwrap())), drain(Box::new(child.stderr.take().unwrap())));
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("the command is waited on") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran past its limit of {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A bundled seed scenario by file stem.
pub fn seed(name: &str) -> PathBuf {
    repo().join("scenarios/seeds").join(format!("{name}.toml"))
}

/// Runs the `nanhunt` binary with arguments.
pub fn nanhunt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nanhunt")).args(args).output().expect("nanhunt runs")
}

/// A fresh temporary directory, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// Writes a file into a directory and returns its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Standard output as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Two 2 × 2 images of 20000s (exact in f16; a window's sum, 80000, is not: f16 stops at
/// 65504) through an identity `conv2d`, `avg_pool2d` and a linear layer giving 2.0, fitted
/// to 2.0 by SGD: every value and gradient stays well inside f16's range.
pub fn large_image(dtype: &str) -> String {
    format!(
        r#"name = "large_image_{dtype}"
[data]
image = {{ channels = 1, height = 2, width = 2 }}
inputs = {{ kind = "values", rows = [[20000.0, 20000.0, 20000.0, 20000.0], [20000.0, 20000.0, 20000.0, 20000.0]] }}
targets = {{ kind = "values", values = [2.0, 2.0] }}
[model]
layers = [{{ type = "conv2d", channels = 1, kernel = 1, init = {{ kind = "constant", value = 1.0 }} }}, {{ type = "avg_pool2d", kernel = 2 }}, {{ type = "flatten" }}, {{ type = "linear", out = 1, init = {{ kind = "constant", value = 1e-4 }} }}]
[loss]
kind = "mse"
[optimizer]
kind = "sgd"
lr = 1e-6
[train]
epochs = 3
dtype = "{dtype}"
"#
    )
}

/// Asserts that a model imported from ONNX agrees with its PyTorch module within f32 tolerance
/// (1e-5 + 1e-4·|PyTorch's|): the loss at step 0 (`loss`, `theirs["loss"]`), every parameter's
/// gradient (`grads`, named `layers.{name}`, against `theirs["grads"][name]`: the same names both
/// ways, and at most one of PyTorch's all zeros, so the check can fail), and each step's loss of a
/// run (`ours`, `theirs["losses"]`), which Adam must lower.
pub fn agrees_with_torch(loss: f64, grads: &[(String, Vec<f64>)], ours: &[f64], theirs: &serde_json::Value) {
    let close = |a: f64, b: f64, what: &str| assert!((a - b).abs() <= 1e-5 + 1e-4 * b.abs(), "{what}: nanhunt {a}, PyTorch {b}");
    let floats = |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
    close(loss, theirs["loss"].as_f64().unwrap(), "loss at step 0");
    let mut names: Vec<&str> = grads.iter().map(|g| g.0.strip_prefix("layers.").unwrap_or(&g.0)).collect();
    let mut want: Vec<&str> = theirs["grads"].as_object().unwrap().keys().map(String::as_str).collect();
    names.sort_unstable();
    want.sort_unstable();
    assert_eq!(names, want, "every parameter of the module is one of the import's, and no other");
    // One parameter's gradient may be zero by the math (a conv's bias before batch norm, which
    // removes the mean), but not every one's, or the comparison could not fail.
    let alive = grads.iter().filter(|(name, _)| floats(&theirs["grads"][name.strip_prefix("layers.").unwrap()]).iter().any(|v| v.abs() > 1e-6)).count();
    assert!(alive + 1 >= grads.len(), "{} of {} parameters have all-zero gradients in PyTorch: the comparison could not fail", grads.len() - alive, grads.len());
    for (name, g) in grads {
        let want = floats(&theirs["grads"][name.strip_prefix("layers.").unwrap()]);
        assert_eq!(g.len(), want.len(), "{name}");
        for (i, (a, b)) in g.iter().zip(&want).enumerate() {
            close(*a, *b, &format!("{name}.grad[{i}]"));
        }
    }
    let losses = floats(&theirs["losses"]);
    assert_eq!(ours.len(), losses.len(), "steps run");
    for (k, (a, b)) in ours.iter().zip(&losses).enumerate() {
        close(*a, *b, &format!("loss at step {}", k + 1));
    }
    assert!(losses.last() < losses.first(), "Adam lowers the loss: {losses:?}");
}
