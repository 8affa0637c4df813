//! Catching candle-nn 0.11.1's CPU layer norm (`candle_nn::ops::layer_norm`), which computes
//! each row's variance in one pass, `E[x²] − E[x]²` in f32: on rows with a large mean and a
//! small spread the difference cancels to a negative number and the row is NaN, where PyTorch
//! 2.15 (two passes) and nanhunt's registry kernel stay finite. `docs/candle-layer-norm.md`
//! writes the minimal input up.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::init::Init;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use super::*;
use crate::run::code::{run_module, Watch};
use crate::run::kernel::layer_norm::layer_norm as two_pass;
use crate::run::verdict::Class;
use crate::run::Status;
use crate::scenario::TensorId;

/// `rows` rows of `width` draws from N(mean, 0.01²), in f32.
fn rows(mean: f64, rows: usize, width: usize) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let n = Normal::new(mean, 0.01).unwrap();
    let v: Vec<f32> = (0..rows * width).map(|_| n.sample(&mut rng) as f32).collect();
    Tensor::from_vec(v, (rows, width), &Device::Cpu).unwrap()
}

/// The rows of `t` holding a NaN.
fn nan_rows(t: &Tensor) -> usize {
    t.to_vec2::<f32>().unwrap().iter().filter(|r| r.iter().any(|v| v.is_nan())).count()
}

#[test]
fn candle_nn_layer_norm_goes_nan_on_rows_with_a_large_mean_and_the_two_pass_kernel_does_not() {
    let (w, b) = (Tensor::ones(16, DType::F32, &Device::Cpu).unwrap(), Tensor::zeros(16, DType::F32, &Device::Cpu).unwrap());
    // 1000 rows of 16 from N(mean, 0.01²): f32's spacing at 3000² = 9e6 is 1, ten thousand
    // times the variance 1e-4, so the one-pass variance is noise of about ±1 (a third of the
    // rows below −eps: NaN); at mean 0 it is exact enough.
    for (mean, nan_at_least, nan_at_most) in [(0.0, 0, 0), (100.0, 200, 600), (3000.0, 200, 600), (10000.0, 200, 800)] {
        let x = rows(mean, 1000, 16);
        let candle = nan_rows(&candle_nn::ops::layer_norm(&x, &w, &b, 1e-5).unwrap());
        eprintln!("mean {mean}: {candle} of 1000 rows NaN in candle-nn's layer_norm");
        assert!((nan_at_least..=nan_at_most).contains(&candle), "mean {mean}: {candle} of 1000 rows NaN in candle-nn");
        assert_eq!(nan_rows(&two_pass(&x, &w, &b, 1e-5).unwrap()), 0, "mean {mean}: the two-pass kernel");
    }
    // The minimal input: one row [3000, 2999.99] (f32: 2999.98999). candle-nn: sum2/2 − mean²
    // = −1 in f32, so (−1 + 1e-5).sqrt() is NaN. PyTorch 2.15, torch.nn.functional.layer_norm
    // in f32: [0.81767, −0.85856]; in f64: ±0.84539 (var 2.5049e-5).
    let x = Tensor::new(&[[3000.0f32, 2999.99]], &Device::Cpu).unwrap();
    let (w2, b2) = (Tensor::ones(2, DType::F32, &Device::Cpu).unwrap(), Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap());
    assert!(candle_nn::ops::layer_norm(&x, &w2, &b2, 1e-5).unwrap().to_vec2::<f32>().unwrap()[0].iter().all(|v| v.is_nan()));
    let ours = two_pass(&x, &w2, &b2, 1e-5).unwrap().to_vec2::<f32>().unwrap()[0].clone();
    for (v, torch) in ours.iter().zip([0.817_675, -0.858_559]) {
        assert!((f64::from(*v) - torch).abs() < 0.05, "{ours:?} vs PyTorch 2.15 [0.81767, -0.85856]");
    }
}

/// A layer norm over 16 features (gain 1, shift 0, eps 1e-5: constants, not parameters) then a
/// linear head, the norm from candle-nn (`fused`) or the registry's two-pass kernel.
fn model(fused: bool) -> CodeModel {
    let name = if fused { "candle_layer_norm" } else { "two_pass_layer_norm" };
    let build = |store: &crate::run::code::ParamStore| -> candle_core::Result<candle_nn::Linear> { Ok(candle_nn::Linear::new(store.get("head.weight", (1, 16), Init::Const(0.1))?, None)) };
    CodeModel::new(name, build, move |head: &candle_nn::Linear, x: &Tensor, watch: &mut Watch| {
        let (w, b) = (Tensor::ones(16, x.dtype(), x.device())?, Tensor::zeros(16, x.dtype(), x.device())?);
        let h = if fused { candle_nn::ops::layer_norm(x, &w, &b, 1e-5)? } else { two_pass(x, &w, &b, 1e-5).map_err(|e| candle_core::Error::Msg(e.to_string()))? };
        watch.check_op("ln", &h, &[x, &w, &b], |t| candle_nn::ops::layer_norm_slow(&t[0], &t[1], &t[2], 1e-5));
        head.forward(&h)
    })
}

const BASE: &str = r#"
name = "layer_norm_rows"
[data]
n = 8
features = 16
inputs = { kind = "normal", mean = 0.0, std = 0.01 }
targets = { kind = "normal" }
[loss]
kind = "mse"
[optimizer]
kind = "sgd"
lr = 0.01
[train]
epochs = 1
[search]
knobs = ["data.inputs.mean"]
decades = 4
"#;

#[test]
fn a_hunt_over_the_input_mean_finds_candles_layer_norm_nan_as_a_kernel_disagreement() {
    let candle = model(true);
    let s = candle.scenario(BASE, "layer_norm_rows.toml").unwrap();
    assert_eq!(run_module(&candle, &s).outcome, Status::Finite, "finite at mean 0");
    let opts = HuntOptions { max_runs: Some(12), jobs: 1, budget: std::time::Duration::from_secs(120), ..HuntOptions::default() };
    let r = hunt_module(&candle, &s, &opts, None, &|_| {}).unwrap();
    let rc = r.root_causes.iter().find(|c| c.location.tensor == TensorId::Named("ln".into())).unwrap_or_else(|| panic!("no root cause in ln: {:?}", r.root_causes));
    let v = rc.verdict.as_ref().expect("the root cause's verdict");
    eprintln!("verdict: {v} [{}]", v.key());
    assert_eq!((v.class, v.op.as_str(), rc.mechanism.verdict.as_deref()), (Class::KernelDisagreement, "ln", Some("kernel_disagreement")), "{v}");
    // The f64 reference is finite and inside f32's range at the bad element; candle-nn's fused
    // layer norm has no f64 kernel, so the run cannot be replayed in f64.
    let value = v.op_f64.as_ref().and_then(|c| c.value).expect("a finite f64 value");
    assert!(value.abs() < 10.0, "{value}");
    assert_eq!(v.step_f64.finite, None, "{}", v.step_f64.detail);
    // The same model with the two-pass layer norm stays finite at the trigger's input mean.
    let fixed = model(false);
    let at = crate::search::mutation::try_mutate(&s, &rc.trigger).unwrap();
    let o = run_module(&fixed, &at);
    assert_eq!(o.outcome, Status::Finite, "{:?} at {:?}", o.first_nonfinite, rc.trigger);
    assert_eq!(run_module(&candle, &at).outcome, Status::Nonfinite);
}
