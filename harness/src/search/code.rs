//! The hunt and the margins of a model written in Rust: the scenario's search
//! with the model in place of its layer stack. Every candidate is a copy of the
//! scenario, and carries the model along, so the engines need nothing else.

use crate::error::Result;
use crate::run::code::CodeModel;
use crate::scenario::Scenario;
use crate::search::{hunt, margins, HuntOptions, HuntResult, MarginOptions, Margins, Progress, Reporter};

/// [`hunt`] around `s` with `model` in place of its layers: the same findings, root causes
/// and reports as `nanhunt hunt`.
pub fn hunt_module(model: &CodeModel, s: &Scenario, opts: &HuntOptions, reporter: Option<&dyn Reporter>, progress: &(dyn Fn(&Progress) + Sync)) -> Result<HuntResult> {
    hunt(&model.attach(s.clone()), opts, reporter, progress)
}

/// [`margins`] of `s` with `model` in place of its layers: how far each knob can move before
/// the run flips, as `nanhunt margins` measures it (the same errors too).
pub fn margins_module(model: &CodeModel, s: &Scenario, opts: &MarginOptions) -> Result<Margins> {
    margins(&model.attach(s.clone()), opts)
}

#[cfg(test)]
mod tests {
    use candle_core::{Module, Tensor};
    use candle_nn::init::Init;

    use super::*;
    use crate::run::code::Watch;
    use crate::scenario::Knob;

    /// `y = w·x`, no bias, from w = 0, trained by full-batch SGD on the MSE of 3 rows.
    fn regression() -> (CodeModel, Scenario) {
        let model = CodeModel::new("w_times_x", |store| Ok(candle_nn::Linear::new(store.get("w", (1, 1), Init::Const(0.0))?, None)), |m: &candle_nn::Linear, x: &Tensor, _: &mut Watch| m.forward(x));
        let text = r#"
name = "regression"
[data]
inputs = { kind = "values", rows = [[1.0], [2.0], [3.0]] }
targets = { kind = "values", values = [2.0, 4.0, 6.0] }
[loss]
kind = "mse"
[optimizer]
kind = "sgd"
lr = 0.01
[train]
epochs = 400
[search]
knobs = ["optimizer.lr"]
lr = [1e-3, 10.0]
"#;
        let s = model.scenario(text, "regression.toml").unwrap();
        (model, s)
    }

    #[test]
    fn the_margin_of_a_code_models_learning_rate_is_its_stability_bound() {
        // L(w) = mean((w·x − y)²) has curvature λ = 2·mean(x²) = 2·14/3 = 28/3, so gradient
        // descent contracts for lr < 2/λ = 3/14 and multiplies the error w − 2 (2 at w = 0) by
        // |1 − lr·λ| per step above it. The loss's f32 sum, 14·(w − 2)², overflows once
        // |w − 2| > √(f32::MAX/14); the 400th loss sees 399 updates, so the run flips once
        // |1 − lr·λ|^399 > √(f32::MAX/14)/2, at lr* = (1 + (√(f32::MAX/14)/2)^(1/399))/λ = 0.22628.
        // (The sum's order moves lr* by under 0.03%.)
        let (model, s) = regression();
        let m = margins_module(&model, &s, &MarginOptions::default()).unwrap();
        let lr = m.knobs.iter().find(|k| k.knob == Knob::Lr).expect("the lr knob");
        let up = lr.upper.as_ref().expect("a threshold above the base");
        let lambda = 28.0 / 3.0;
        let at = (1.0 + ((f64::from(f32::MAX) / 14.0).sqrt() / 2.0).powf(1.0 / 399.0)) / lambda;
        assert!(up.flips_at > 3.0 / 14.0, "past the stability bound");
        assert!(up.stays_finite_at <= at * 1.001 && up.flips_at >= at * 0.999 && up.flips_at <= at * 1.01, "lr* = {at}: {up:?}");
        assert!(up.stays_finite_at < up.flips_at);
    }

    #[test]
    fn a_hunt_around_a_code_model_finds_the_learning_rate_that_overflows_it() {
        let (model, s) = regression();
        // More workers than this machine's cores: each candidate builds its own model.
        let opts = |jobs| HuntOptions { max_runs: Some(40), jobs, budget: std::time::Duration::from_secs(60), ..HuntOptions::default() };
        let r = hunt_module(&model, &s, &opts(4), None, &|_| {}).unwrap();
        let one = hunt_module(&model, &s, &opts(1), None, &|_| {}).unwrap();
        let sigs = |r: &HuntResult| r.findings.iter().map(|f| f.signature.clone()).collect::<Vec<_>>();
        assert_eq!(sigs(&r), sigs(&one), "the same root causes at any number of workers");
        assert!(r.base_failure.is_none());
        let f = r.findings.first().expect("lr above 3/14 overflows");
        let t = f.nearest().expect("a trigger");
        let lr = t.thresholds.iter().find(|t| t.knob == Knob::Lr).expect("an lr threshold");
        assert!(lr.flips_at > 3.0 / 14.0, "{lr:?}");
    }
}

#[cfg(test)]
#[path = "code_layer_norm_tests.rs"]
mod layer_norm_tests;
