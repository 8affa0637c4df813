//! The bundled scenarios: runs are deterministic, seed 002 ex1 goes
//! non-finite where PyTorch does, and stagnation is flagged. (That every one
//! meets its `[expect]` is checked through `nanhunt check` in cli_report.rs.)

use nanhunt::{run, Phase, Status};

mod common;

#[test]
fn same_scenario_same_trace_bits() {
    for name in ["s000_ex1_bce_mlp", "s004_ex1_simple_rnn_adam"] {
        let mut s = nanhunt::load(&common::seed(name)).unwrap();
        s.train.max_steps = Some(200);
        let (a, b) = (run(&s), run(&s));
        assert_eq!(a.outcome, Status::Finite);
        assert_eq!(a.trace.to_csv().unwrap(), b.trace.to_csv().unwrap(), "{name}");
        // And a different seed gives a different trace: the seed is really used.
        s.seed += 1;
        assert_ne!(run(&s).trace.to_csv().unwrap(), a.trace.to_csv().unwrap());
    }
}

#[test]
fn seed_002_ex1_goes_nonfinite_where_pytorch_does() {
    // PyTorch 2.15 on CPU, same data and settings: NaN at optimizer step 3.
    let o = run(&nanhunt::load(&common::seed("s002_ex1_linreg_sgd")).unwrap());
    let f = o.first_nonfinite.expect("non-finite");
    assert!((2..=5).contains(&f.step), "step {}", f.step);
    assert_eq!(f.phase, Phase::Loss);
    assert_eq!(f.tensor, "loss");
}

#[test]
fn seed_002_ex1_losses_match_hand_computation() {
    // Full-batch MSE on X = [[1, 1e5], [2, 2e5], [3, 3e5]], y = [10, 20, 30] in f64, with
    // weights 1e-4 and bias 0: loss = mean(e²) with e = Xw + b − y, then one SGD step
    // (lr 0.01): w ← w − 0.01·(2/3)·Xᵀe, b ← b − 0.01·(2/3)·Σe. Computed here by hand.
    let mut s = nanhunt::load(&common::seed("s002_ex1_linreg_sgd")).unwrap();
    s.train.dtype = nanhunt::scenario::DTypeName::F64;
    s.train.max_steps = Some(2);
    s.model.init = nanhunt::scenario::Init::Constant { value: 1e-4 };
    let o = run(&s);
    let x = [[1.0, 1e5], [2.0, 2e5], [3.0, 3e5]];
    let y = [10.0, 20.0, 30.0];
    let (mut w, mut b) = ([1e-4f64, 1e-4], 0.0f64);
    let mut losses = Vec::new();
    for _ in 0..2 {
        let err: Vec<f64> = (0..3).map(|i| x[i][0] * w[0] + x[i][1] * w[1] + b - y[i]).collect();
        losses.push(err.iter().map(|e| e * e).sum::<f64>() / 3.0);
        for j in 0..2 {
            w[j] -= 0.01 * 2.0 / 3.0 * (0..3).map(|i| x[i][j] * err[i]).sum::<f64>();
        }
        b -= 0.01 * 2.0 / 3.0 * err.iter().sum::<f64>();
    }
    assert_eq!(o.trace.rows.len(), 2);
    for (row, want) in o.trace.rows.iter().zip(&losses) {
        assert!((row.train_loss - want).abs() <= 1e-12 * want.abs(), "{} vs {want}", row.train_loss);
    }
}

#[test]
fn stagnation_is_flagged_for_the_deep_sigmoid_net_only() {
    // Seed 003 ex2: a 3×128 sigmoid MLP under SGD 0.01 barely moves after its first steps.
    let o = run(&nanhunt::load(&common::seed("s003_ex2_deep_sigmoid_sgd")).unwrap());
    assert_eq!(o.outcome, Status::Finite, "stagnation is not a non-finite outcome");
    assert_eq!(o.stagnation.expect("flagged").reason, "loss_plateau");
    let healthy = run(&nanhunt::load(&common::seed("s004_ex1_simple_rnn_adam_fix_lower_lr")).unwrap());
    assert!(healthy.stagnation.is_none(), "{:?}", healthy.stagnation);
}

#[test]
fn clamped_bce_reports_its_vanishing_gradient() {
    // Once every sigmoid output is clamped to [1e-7, 1 − 1e-7], the clamp passes no gradient.
    let o = run(&nanhunt::load(&common::seed("s001_ex3_bce_saturated_fix_eps_clamp")).unwrap());
    let st = o.stagnation.expect("flagged");
    assert_eq!(st.reason, "vanishing_gradient");
    let row = &o.trace.rows[st.step - 1];
    assert!(row.grad_norm.unwrap() < 1e-7);
}
