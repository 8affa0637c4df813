//! issue 25, Severe 1: pooling in half precision stays finite where PyTorch does. An f16
//! `avg_pool2d` over windows of 20000s summed in f16 (Candle's own) overflows to +inf, and a
//! hunt from the f32 base reported it as a root cause "← train.dtype = f16"; PyTorch's
//! `F.avg_pool2d` sums in f32 and divides once: 20000.

use nanhunt::scenario::from_str;
use nanhunt::Status;

/// Two 2 × 2 images of 20000s (exact in f16; a window's sum, 80000, is not: f16 stops at
/// 65504) through an identity `conv2d`, `avg_pool2d` and a linear layer giving 2.0, fitted
/// to 2.0 by SGD: every value and gradient stays well inside f16's range.
fn large_image(dtype: &str) -> nanhunt::Scenario {
    let text = format!(
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
    );
    from_str(&text, "large_image.toml").unwrap()
}

#[test]
fn f16_avg_pool2d_over_an_image_of_large_values_stays_finite() {
    for dtype in ["f16", "bf16", "f32"] {
        let o = nanhunt::run(&large_image(dtype));
        assert_eq!(
            o.outcome,
            Status::Finite,
            "{dtype}: {:?}",
            o.first_nonfinite.map(|f| f.to_string())
        );
        assert_eq!(o.steps, 3, "{dtype}");
        // The prediction is 20000 · f(1e-4) ≈ 2: the loss is tiny, not the square of an overflow.
        assert!(
            o.final_loss.is_some_and(|l| l < 1e-3),
            "{dtype}: {:?}",
            o.final_loss
        );
    }
}
