//! Bad input on convolutions and the loss scaler (issue 25): an oversized
//! convolution is refused before anything is allocated, naming its layer and
//! the size; strides and paddings PyTorch refuses are refused with their key;
//! loss scales that cannot be an f32 scale are refused; and the message for a
//! separate validation set of synthetic token rows says why.

mod common;
use common::*;

/// A scenario over `(4, 8, 2)` sequences whose first layer is `conv`, then a mean pool and a linear head.
fn conv1d(conv: &str) -> String {
    format!(
        "name = \"c1\"\n[data]\nn = 4\nseq_len = 8\nfeatures = 2\ninputs = {{ kind = \"normal\" }}\ntargets = {{ kind = \"uniform\" }}\n[model]\nlayers = [{conv}, {{ type = \"mean_pool\" }}, {{ type = \"linear\", out = 1 }}]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n[train]\nepochs = 1\n"
    )
}

/// A scenario over four `(1, 4, 4)` images whose layers are `layers`, with `train` lines added.
fn images(layers: &str, train: &str) -> String {
    format!(
        "name = \"img\"\n[data]\nn = 4\nimage = {{ channels = 1, height = 4, width = 4 }}\ninputs = {{ kind = \"normal\" }}\ntargets = {{ kind = \"uniform\" }}\n[model]\nlayers = [{layers}]\n[loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n[train]\nepochs = 1\n{train}"
    )
}

/// Runs `nanhunt run` on `text`; returns (exit code, stdout, stderr).
fn run(text: &str) -> (Option<i32>, String, String) {
    let dir = tempdir();
    let p = write(dir.path(), "s.toml", text);
    let out = nanhunt(&["run", p.to_str().unwrap()]);
    (out.status.code(), stdout(&out), stderr(&out))
}

/// Asserts `text` is refused with exit 2, nothing on stdout, and every one of `names` in the error.
fn refused(text: &str, names: &[&str]) -> String {
    let (code, out, err) = run(text);
    assert_eq!(code, Some(2), "{names:?}: {out}{err}");
    assert!(out.is_empty(), "nothing on stdout: {out}");
    for n in names {
        assert!(err.contains(n), "{n} not in: {err}");
    }
    assert!(!err.contains("panicked") && !err.contains("memory allocation"), "{err}");
    err
}

#[test]
fn conv1d_with_a_huge_padding_is_refused_before_allocating() {
    // Padding 1e9 aborted on a 128 GB allocation and 1e7 grew to 18.7 GB: each pads the
    // sequence to 2e9 (or 2e7) positions, and the im2col columns hold three copies of that.
    for padding in ["1000000000", "10000000"] {
        let err = refused(&conv1d(&format!("{{ type = \"conv1d\", channels = 2, kernel = 3, padding = {padding} }}")), &["refused:", "layer `layers.0.conv1d`"]);
        assert!(err.contains("MiB"), "the size is named: {err}");
    }
}

#[test]
fn conv2d_image_activations_count_against_the_limit() {
    // Padding 1000 makes a (2, 2000, 2000) output from a 4 × 4 image; max_pool2d 1000 brings it
    // back to 2 × 2 × 2, so only the image activations (not the widths) are large: this ran
    // in 2.2 GB under memory_limit_mb = 16.
    let layers = "{ type = \"conv2d\", channels = 2, kernel = 3, padding = 1000 }, { type = \"max_pool2d\", kernel = 1000 }, { type = \"flatten\" }, { type = \"linear\", out = 1 }";
    refused(&images(layers, "memory_limit_mb = 16\n"), &["refused:", "layer `layers.0.conv2d`", "over the limit of 16 MiB"]);
    // The same model without the padding fits.
    let (code, out, err) = run(&images(&layers.replace("padding = 1000", "padding = 0").replace("kernel = 1000", "kernel = 2"), "memory_limit_mb = 16\n"));
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn strides_and_paddings_pytorch_refuses_are_refused_with_their_key() {
    // PyTorch 2.15: `F.conv1d(x, w, stride=2**64 - 1)` raises "Overflow when unpacking long long"
    // (strides are int64), stride 0 "non-positive stride is not supported", and a padding over
    // int64 max / 2 "Given padding=4611686018427387904 at dimension 0 , expected padding to be
    // at most 4611686018427387903" (aten/src/ATen/native/Convolution.cpp, check_shape_forward).
    let cases = [
        ("{ type = \"conv1d\", channels = 2, kernel = 3, stride = 18446744073709551615 }", "model.layers.0.stride"),
        ("{ type = \"conv1d\", channels = 2, kernel = 3, stride = 9223372036854775808 }", "model.layers.0.stride"),
        ("{ type = \"conv1d\", channels = 2, kernel = 3, stride = 0 }", "model.layers.0.stride"),
        ("{ type = \"conv1d\", channels = 2, kernel = 3, padding = 4611686018427387904 }", "model.layers.0.padding"),
    ];
    for (conv, key) in cases {
        let err = refused(&conv1d(conv), &[&format!("`{key}`")]);
        assert!(err.contains("s.toml:9:"), "located on the layers line: {err}");
    }
    let image = "{ type = \"conv2d\", channels = 2, kernel = 3, stride = 18446744073709551615 }, { type = \"flatten\" }, { type = \"linear\", out = 1 }";
    refused(&images(image, ""), &["`model.layers.0.stride`"]);
    // A stride PyTorch takes (int64 max: one window) runs, as `F.conv1d(x, w, stride=2**63 - 1)` does.
    let (code, out, err) = run(&conv1d("{ type = \"conv1d\", channels = 2, kernel = 3, stride = 9223372036854775807 }"));
    assert_eq!(code, Some(0), "{out}{err}");
    // A huge padding with a huge stride has a one-window output, but its padded input is refused
    // (nanhunt's im2col picks positions by u32 index) rather than overflowing.
    refused(&conv1d("{ type = \"conv1d\", channels = 2, kernel = 3, padding = 4611686018427387903, stride = 4611686018427387903 }"), &["`model.layers.0`", "4294967295"]);
}

/// A small sequence model under `amp_f16` with a loss scaler whose table is `scaler`.
fn scaled(scaler: &str) -> String {
    conv1d("{ type = \"linear\", out = 2 }").replace("[train]", &format!("[train.loss_scale]\n{scaler}\n[train]\nprecision = \"amp_f16\""))
}

#[test]
fn loss_scales_that_cannot_be_an_f32_scale_are_refused() {
    // 1e40 is inf as an f32 (GradScaler keeps its scale in a float32 tensor: every step would be
    // skipped); 1e-50 is 0. A floor above the first scale is a finding before the first step.
    refused(&scaled("init = 1e40"), &["`train.loss_scale.init`", "f32"]);
    refused(&scaled("init = 1e-50"), &["`train.loss_scale.init`", "f32"]);
    refused(&scaled("init = 1.0\nmin_scale = 128.0"), &["`train.loss_scale.min_scale`", "init"]);
    // GradScaler: "The growth factor must be > 1.0.", "The backoff factor must be < 1.0.".
    refused(&scaled("growth_factor = 0.5"), &["`train.loss_scale.growth_factor`", "GradScaler"]);
    refused(&scaled("backoff_factor = 1.0"), &["`train.loss_scale.backoff_factor`", "GradScaler"]);
    let (code, out, err) = run(&scaled("init = 128.0\nmin_scale = 128.0"));
    assert_eq!(code, Some(0), "a floor equal to the first scale is allowed: {out}{err}");
}

#[test]
fn a_separate_validation_set_of_synthetic_tokens_is_refused_for_what_it_is() {
    let text = "name = \"tok\"\n[data]\nn = 8\nseq_len = 4\ninputs = { kind = \"tokens\", vocab = 5 }\ntargets = { kind = \"next_token\" }\nvalidation = { n = 4 }\n[model]\nlayers = [{ type = \"embedding\", dim = 4 }, { type = \"linear\", out = 5 }]\n[loss]\nkind = \"cross_entropy\"\n[optimizer]\nkind = \"sgd\"\nlr = 0.01\n[train]\nepochs = 1\n";
    let err = refused(text, &["`data.validation.n`", "synthetic token"]);
    assert!(!err.contains("explicit and CSV"), "synthetic tokens are neither: {err}");
}
