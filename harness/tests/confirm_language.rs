//! The model language's constructs confirmed against a real PyTorch 2.15 (feature
//! `torch-tests`, as `confirm.rs`): a layer kept in f32 under autocast, an expression under
//! autocast computing op by op (a one-pass variance), a loss expression computing op by op
//! under autocast (contrastive logits in f16), a half cross-entropy
//! of one-hot targets whose summed terms overflow before the mean, a preprocessing
//! expression and a chain of preprocessing steps, an expression reading an earlier named
//! output, a loss expression reading the padding mask and `ctc` with per-row input lengths,
//! and a language model's loss over a batch folded with its positions (`reshape(p, (-1, V))`),
//! each failing scenario where PyTorch fails and its fix finite where PyTorch is, from
//! `scenarios/layers/` (and `scenarios/real/` for the last).
#![cfg(feature = "torch-tests")]

mod common;

use std::path::PathBuf;

use nanhunt::report::torch::{confirm, scratch, Confirmation, TorchVerdict};

/// The interpreter with torch: `NANHUNT_TORCH_PYTHON`, else `.venv-torch/bin/python`.
fn python() -> PathBuf {
    common::torch_python()
}

/// `scenarios/layers/{stem}.toml`, loaded.
fn layer(stem: &str) -> nanhunt::Scenario {
    nanhunt::load(&common::repo().join(format!("scenarios/layers/{stem}.toml"))).unwrap()
}

/// A scenario confirmed in PyTorch.
fn confirmed_scenario(s: &nanhunt::Scenario) -> Confirmation {
    let work = scratch().unwrap();
    let c = confirm(s, &python(), &work).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    std::fs::remove_dir_all(&work).ok();
    c
}

/// `scenarios/layers/{stem}.toml` confirmed in PyTorch.
fn confirmed(stem: &str) -> Confirmation {
    confirmed_scenario(&layer(stem))
}

/// Where PyTorch first went non-finite: (step, phase, tensor).
fn torch_first(c: &Confirmation) -> (usize, nanhunt::Phase, String) {
    let p = c.pytorch.as_ref().unwrap_or_else(|| panic!("PyTorch stays finite: {c}"));
    (p.step, p.phase, p.tensor.to_string())
}

/// `{stem}` confirmed in PyTorch, first non-finite at `first` (step, phase, tensor) in both, and
/// `{stem}{fix}` finite in both with agreeing losses.
fn fails_and_fix_holds(stem: &str, (step, phase, tensor): (usize, nanhunt::Phase, &str), fix: &str) {
    let c = confirmed(stem);
    assert_eq!(c.verdict, TorchVerdict::Confirmed, "{c}");
    assert_eq!(torch_first(&c), (step, phase, tensor.to_string()));
    let c = confirmed(&format!("{stem}{fix}"));
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
}

#[test]
fn a_projection_kept_in_f32_under_f16_autocast_agrees_with_pytorch() {
    // PyTorch 2.15: the projection under CPU autocast to f16 gives inf at step 1, and the same
    // module under `torch.autocast(..., enabled=False)` on `x.float()` stays finite.
    fails_and_fix_holds("amp_f16_projection_overflow", (1, nanhunt::Phase::Forward, "layers.0.linear.output"), "_fix_precision_f32");
}

#[test]
fn a_one_pass_variance_expression_under_f16_autocast_agrees_with_pytorch_op_by_op() {
    // PyTorch 2.15: under CPU autocast to f16 each op of the expression runs apart, so after the
    // f16 projection `x*x` and `m*m` are f16 and overflow, and `E[x²] − E[x]²` is inf − inf =
    // NaN at step 1; the same layer under `torch.autocast(..., enabled=False)` on `x.float()`
    // stays finite.
    fails_and_fix_holds("expr_one_pass_variance_amp_f16", (1, nanhunt::Phase::Forward, "layers.1.expr.output"), "_fix_precision_f32");
}

#[test]
fn a_contrastive_loss_expression_under_f16_autocast_agrees_with_pytorch_op_by_op() {
    // PyTorch 2.15: the loss computed inside `torch.autocast("cpu", dtype=torch.float16)` runs
    // each op apart, so `p @ y.T / T` is f16 and passes 65504, and the loss is inf at step 1;
    // on `p.float()` under `torch.autocast(..., enabled=False)` it stays finite.
    fails_and_fix_holds("expr_contrastive_logits_amp_f16", (1, nanhunt::Phase::Loss, "loss"), "_fix_precision_f32");
}

#[test]
fn named_losses_in_expressions_under_f16_autocast_compute_whole_in_f32_and_repro_agrees() {
    // nanhunt computes a named loss called in an expression as one op of autocast's f32 list,
    // its `@` too; repro.py runs its formula in `f32_loss`, outside autocast on its operands cast
    // up. For info_nce this is nanhunt's convention, not PyTorch's autocast of the formula (whose
    // `@` runs in f16): the test checks repro.py agrees with nanhunt's convention. As the loss, `info_nce(p, y, temperature=0.05)` of the contrastive pair's embeddings:
    // PyTorch 2.15 stays finite (its `@` in f16 would be inf, as the expression's is).
    let text = std::fs::read_to_string(common::repo().join("scenarios/layers/expr_contrastive_logits_amp_f16.toml")).unwrap();
    let written = "expr = \"mean(logsumexp(p @ transpose(y, 0, 1) / T, dim=1) - sum(p * y, dim=1) / T)\"\nconsts = { T = 0.05 }";
    assert!(text.contains(written));
    let loss = text.replace(written, "expr = \"info_nce(p, y, temperature=0.05)\"");
    let c = confirmed_scenario(&nanhunt::scenario::from_str(&loss, "info_nce_loss").unwrap());
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
    // In a layer, `x * info_nce(x, x, temperature=0.05)`: the f32 loss is a zero-dimensional
    // tensor, which does not promote the f16 `x` (PyTorch's result_type), so the product passes
    // 65504 in f16: both go non-finite in the layer's output at step 1.
    let layer = text.replace("    { type = \"linear\", out = 16 },\n]", "    { type = \"linear\", out = 16 },\n    { type = \"expr\", expr = \"x * info_nce(x, x, temperature=0.05)\" },\n]");
    let c = confirmed_scenario(&nanhunt::scenario::from_str(&layer.replace(written, "expr = \"mean((p - y) ** 2)\""), "info_nce_layer").unwrap());
    assert_eq!(c.verdict, TorchVerdict::Confirmed, "{c}");
    assert_eq!(torch_first(&c), (1, nanhunt::Phase::Forward, "layers.1.expr.output".into()));
}

#[test]
fn a_half_one_hot_cross_entropy_whose_sum_overflows_agrees_with_pytorch() {
    // PyTorch 2.15: pure-f16 `F.cross_entropy` of one-hot targets rounds the batch's summed terms
    // to f16 before the mean divides them, so the loss is inf at step 1; under autocast
    // cross-entropy runs in f32 and the run stays finite.
    fails_and_fix_holds("cross_entropy_f16_mean_overflow", (1, nanhunt::Phase::Loss, "loss"), "_fix_amp");
}

#[test]
fn a_preprocessing_expression_agrees_with_pytorch_on_the_data() {
    // `(x - x.mean(0)) / x.std(0)` in PyTorch 2.15 on the same raw data: NaN in the data.
    let c = confirmed("preprocess_std_constant_feature");
    assert_eq!(c.verdict, TorchVerdict::Confirmed, "{c}");
    assert_eq!(torch_first(&c), (0, nanhunt::Phase::Data, "data.train.inputs".into()));
    let c = confirmed("preprocess_std_constant_feature_fix_eps");
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
}

#[test]
fn a_preprocessing_chain_runs_in_order_in_pytorch_and_agrees() {
    // log1p, MinMaxScaler fitted on the training rows, then `(x - x.mean(0)) / x.std(0)`:
    // PyTorch 2.15 on the raw data exported, the chain run by repro.py, NaN in the data.
    let c = confirmed("preprocess_chain_constant_feature");
    assert_eq!(c.verdict, TorchVerdict::Confirmed, "{c}");
    assert_eq!(torch_first(&c), (0, nanhunt::Phase::Data, "data.train.inputs".into()));
    // The fix trains on the same inputs: its losses agree step by step.
    let c = confirmed("preprocess_chain_constant_feature_fix_eps");
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
    // Every step of the run is compared: 2 epochs of 3 batches (48 training rows, batch 16).
    assert_eq!(c.compared, 6, "{c}");
}

#[test]
fn ctc_with_input_lengths_from_the_padding_agrees_with_pytorch() {
    // F.ctc_loss(..., input_lengths=mask.sum(-1)): a row too short for its 3 labels is inf in
    // PyTorch 2.15 at step 1; with zero_infinity both train finite, the losses agreeing.
    let c = confirmed("ctc_padded_input_too_short");
    assert_eq!(c.verdict, TorchVerdict::Confirmed, "{c}");
    assert_eq!(torch_first(&c), (1, nanhunt::Phase::Loss, "loss".into()));
    let c = confirmed("ctc_padded_input_too_short_fix_zero_infinity");
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
    assert!(c.compared >= 4, "{c}");
}

#[test]
fn named_outputs_and_the_padding_mask_export_and_agree_with_pytorch() {
    let c = confirmed("expr_gated_branches");
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
    assert!(c.compared >= 8, "{c}");
    // The second batch is all padding: sum(mask) = 0, and PyTorch's loss is 0/0 = NaN at step 2.
    let c = confirmed("expr_masked_mean_all_padded_batch");
    assert_eq!(c.verdict, TorchVerdict::Confirmed, "{c}");
    assert_eq!(torch_first(&c), (2, nanhunt::Phase::Loss, "loss".into()));
    let c = confirmed("expr_masked_mean_all_padded_batch_fix_clamp");
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
}

#[test]
fn named_losses_inside_a_loss_expression_train_beside_pytorch() {
    // `mean(focal(p, y)) + bce_with_logits(p, y) + 0.1 * mse(p, y)`: repro.py applies each kind's
    // own PyTorch line (torchvision's focal body, F.binary_cross_entropy_with_logits, F.mse_loss);
    // finite in both, the losses agreeing step by step.
    let c = confirmed("expr_named_losses_binary");
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
    assert!(c.compared >= 8, "{c}");
    // `cross_entropy(p, y, label_smoothing=0.1) + 0.01 * mean(p ** 2)` with a batch of ignored
    // labels: PyTorch 2.15's F.cross_entropy is 0/0 = NaN there, at the same step.
    let c = confirmed("expr_named_losses_ignored_batch");
    assert_eq!(c.verdict, TorchVerdict::Confirmed, "{c}");
    assert_eq!(torch_first(&c).1, nanhunt::Phase::Loss, "{c}");
    let c = confirmed("expr_named_losses_ignored_batch_fix_sum");
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
}

#[test]
fn per_row_losses_and_normalized_info_nce_export_and_agree_with_pytorch() {
    // A masked mean of a per-token cross_entropy(..., reduction='none'): repro.py's line is
    // F.cross_entropy(p.reshape(-1, k), y.reshape(-1).long(), reduction='none').reshape(p.shape[:-1]);
    // the second batch is all padding, 0/0 = NaN at step 2 in PyTorch 2.15, and the clamp fixes it.
    let c = confirmed("expr_masked_token_cross_entropy_all_padded");
    assert_eq!(c.verdict, TorchVerdict::Confirmed, "{c}");
    assert_eq!(torch_first(&c), (2, nanhunt::Phase::Loss, "loss".into()));
    let c = confirmed("expr_masked_token_cross_entropy_all_padded_fix_clamp");
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
    assert!(c.compared >= 8, "{c}");
    // Per-row cross_entropy with label smoothing over labels of which 80% are ignored (rows 0).
    let mut s = layer("expr_named_losses_ignored_batch_fix_sum");
    s.loss.expr = Some("sum(cross_entropy(p, y, label_smoothing=0.1, reduction='none') ** 2) + 0.01 * mean(p ** 2)".into());
    let c = confirmed_scenario(&s);
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
    assert!(c.compared >= 8, "{c}");
    // info_nce of F.normalize'd embeddings, as the [loss] kind and per row in an expression, in f32.
    let mut s = layer("info_nce_f16_small_temperature_fix_temperature");
    s.train.dtype = nanhunt::scenario::DTypeName::F32;
    (s.loss.normalized, s.loss.consts) = (true, [("temperature".to_string(), 0.1)].into());
    let c = confirmed_scenario(&s);
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
    assert!(c.compared >= 8, "{c}");
    s.loss =
        nanhunt::scenario::LossSpec { kind: nanhunt::scenario::LossKind::Expr, expr: Some("mean(info_nce(p, y, temperature=0.1, normalized=true, reduction='none'))".into()), ..Default::default() };
    let c = confirmed_scenario(&s);
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
}

#[test]
fn a_language_models_folded_loss_over_per_token_labels_agrees_with_pytorch() {
    // verl's SFT loss as it writes it, `sum(CrossEntropyLoss(reduction='none')(logits.view(-1, V),
    // labels.view(-1)) * loss_mask) / sum(loss_mask)` (repro.py: `torch.reshape(p, shape=(-1, 16,))`):
    // the third batch's prompts fill the sequences, 0/0 = NaN in `loss` at step 3 in PyTorch 2.15;
    // divided by sum(mask) + 1e-8 it stays finite with agreeing losses.
    let real = |stem: &str| nanhunt::load(&common::repo().join(format!("scenarios/real/{stem}.toml"))).unwrap();
    let c = confirmed_scenario(&real("verl785_sft_truncated_all_masked"));
    assert_eq!(c.verdict, TorchVerdict::Confirmed, "{c}");
    assert_eq!(torch_first(&c), (3, nanhunt::Phase::Loss, "loss".into()));
    let mut fix = real("verl785_sft_truncated_all_masked_fix_eps");
    let c = confirmed_scenario(&fix);
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
    // The plain form, F.cross_entropy(logits.view(-1, V), labels.view(-1)) with a drawn fifth of
    // the tokens ignored besides the prompts, agrees too.
    fix.loss.expr = Some("cross_entropy(reshape(p, (-1, 16)), reshape(y, (-1,)), ignore_index=-100)".into());
    fix.data.targets = Some(nanhunt::scenario::TargetSpec::NextTokenLabels { ignore_fraction: 0.2, prompt_lengths: vec![2; 16] });
    let c = confirmed_scenario(&fix);
    assert_eq!((c.verdict, c.loss_differs), (TorchVerdict::BothFinite, None), "{c}");
    assert!(c.compared >= 4, "{c}");
}
