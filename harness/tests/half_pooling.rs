//! issue 25, Severe 1: pooling in half precision stays finite where PyTorch does. An f16
//! `avg_pool2d` over windows of 20000s summed in f16 (Candle's own) overflows to +inf, and a
//! hunt from the f32 base reported it as a root cause "← train.dtype = f16"; PyTorch's
//! `F.avg_pool2d` sums in f32 and divides once: 20000.

mod common;

use nanhunt::scenario::from_str;
use nanhunt::Status;

fn large_image(dtype: &str) -> nanhunt::Scenario {
    from_str(&common::large_image(dtype), "large_image.toml").unwrap()
}

#[test]
fn f16_avg_pool2d_over_an_image_of_large_values_stays_finite() {
    for dtype in ["f16", "bf16", "f32"] {
        let o = nanhunt::run(&large_image(dtype));
        assert_eq!(o.outcome, Status::Finite, "{dtype}: {:?}", o.first_nonfinite.map(|f| f.to_string()));
        assert_eq!(o.steps, 3, "{dtype}");
        // The prediction is 20000 · f(1e-4) ≈ 2: the loss is tiny, not the square of an overflow.
        assert!(o.final_loss.is_some_and(|l| l < 1e-3), "{dtype}: {:?}", o.final_loss);
    }
}
