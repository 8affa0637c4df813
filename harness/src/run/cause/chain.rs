//! A chain is one cause: when the first non-finite value comes after the run
//! diverged (its weights or its loss grew decades first, as the trace shows),
//! the cause is the divergence and what drove it, and the bad value its end:
//! "lr 0.9 makes the weights grow ×10 per step (divergence at step 4); they
//! overflow f32 in `layers.0.attention.scores` at step 9".
//!
//! What drove it, in order: a linear model's learning rate above its stability
//! bound (computed on the failing batch with the loss's reduction, as
//! [`stability`] does), a loss summed over the batch under plain SGD (its
//! gradient, and so the step, grows with the batch; Adam's and RMSprop's step
//! does not, as they divide by the gradient's RMS), an init scale other than 1,
//! else the learning rate.

use super::{cause, Cause, Chain, Rule};
use crate::run::divergence::Growth;
use crate::run::{Kind, Location};
use crate::scenario::{DTypeName, Reduction, Scenario};

/// The cause of `first` when the run grew as `growth` says before it: the divergence, what drove
/// it (`then`, the bad value's own cause, if it already names a stability bound, is that), and
/// the bad value as its end, in the compute dtype `d`. `batch` is the rows of a batch.
pub(crate) fn chain(s: &Scenario, first: &Location, then: Option<Cause>, growth: &Growth, batch: usize, d: DTypeName) -> Cause {
    let lr = crate::human(s.optimizer.lr);
    let bound = then.as_ref().filter(|c| c.rule == Rule::LrAboveStabilityBound);
    let bounded = bound.is_some();
    let trigger = match bound {
        Some(c) => c.reason.split(':').next().unwrap_or(&c.reason).to_string(),
        // An adaptive optimizer divides the gradient by its running RMS, so a sum's n-fold
        // gradient takes the same step as the mean's: the summed loss drives only plain SGD.
        None if s.loss.reduction == Reduction::Sum && batch * s.train.accumulate.max(1) > 1 && !s.optimizer.kind.takes_eps() => {
            let k = s.train.accumulate.max(1);
            let over = if k > 1 { format!("{k} micro-batches of {batch} rows a step") } else { format!("batches of {batch} rows") };
            format!("lr {lr} on a loss summed over {over} (its gradient grows with the rows: lr {} on their mean)", crate::human(s.optimizer.lr * (batch * k) as f64))
        }
        None if s.model.init_scale != 1.0 => format!("init scale {} with lr {lr}", crate::human(s.model.init_scale)),
        None => format!("lr {lr}"),
    };
    let (grew, they, s_) = if growth.weights { ("weights", "they", "") } else { ("loss", "it", "s") };
    let dt: &str = d.into();
    let end = match first.kind {
        Kind::PosInf | Kind::NegInf => format!("{they} overflow{s_} {dt} in"),
        Kind::Nan | Kind::Diverge | Kind::ScaleCollapse | Kind::NoGradient => format!("{they} end{s_} in {} in", first.kind),
    };
    let own = then.as_ref().filter(|_| !bounded).map_or(String::new(), |c| format!(" ({c})"));
    let subject = if bounded { format!("{},", trigger.replacen(" is above", ", above", 1)) } else { trigger.clone() };
    let reason = format!("{subject} makes the {grew} grow ×{} per step (divergence at step {}); {end} `{}` at step {}{own}", crate::human(growth.per_step), growth.step, first.tensor, first.step);
    let (rule, op) = match &then {
        Some(c) if bounded => (c.rule, format!("divergence ({})", c.op)),
        Some(_) | None => (Rule::Divergence, "divergence".to_string()),
    };
    let then = then.filter(|_| !bounded).map(Box::new);
    Cause { chain: Some(Chain { trigger, grew: grew.into(), per_step: growth.per_step, diverged_at: growth.step, then }), ..cause(rule, op, reason, vec![]) }
}

/// A linear model trained by plain SGD on the MSE diverges when `lr` is above `2/λ`, where λ is
/// the largest eigenvalue of the loss's Hessian over the step's batch: `c·[X 1]ᵀ[X 1]` for the
/// batch's rows `X`, `c` = 2/n for a mean, 2 for a sum (times the `micro` micro-batches a step
/// sums: a summed loss adds their gradients, a mean one divides each by their number).
pub(crate) fn stability(lr: f64, rows: &[Vec<f64>], mean: bool, micro: usize, d: DTypeName) -> Option<Cause> {
    let n = rows.len();
    let k = rows.first()?.len() + 1;
    let c = if mean { 2.0 / n as f64 } else { 2.0 * micro.max(1) as f64 };
    // Power iteration on H = c·AᵀA, A = [X 1], in f64.
    let apply = |v: &[f64]| -> Vec<f64> {
        let mut out = vec![0.0; k];
        for r in rows {
            let dot: f64 = r.iter().zip(v).map(|(a, b)| a * b).sum::<f64>() + v[k - 1];
            for (o, a) in out.iter_mut().zip(r.iter().chain([1.0].iter())) {
                *o += c * dot * a;
            }
        }
        out
    };
    let mut v = vec![1.0; k];
    let mut lambda = 0.0;
    for _ in 0..200 {
        let w = apply(&v);
        let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return None;
        }
        lambda = norm / v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v = w.iter().map(|x| x / norm).collect();
    }
    let bound = 2.0 / lambda;
    (lr > bound).then(|| {
        let factor = (1.0 - lr * lambda).abs();
        let dt: &str = d.into();
        let over = if mean { format!("the mean over the batch's {n} rows") } else { format!("the sum over the batch's {n} rows, which grows with the batch") };
        let reason = format!(
            "lr {} is above this linear model's stability bound 2/λ = {} (λ = {}, the largest curvature of the MSE, {over}): each step multiplies the error along that direction by |1 − lr·λ| = {}, until it overflows {dt}",
            crate::human(lr),
            crate::human(bound),
            crate::human(lambda),
            crate::human(factor)
        );
        cause(Rule::LrAboveStabilityBound, "sgd on mse", reason, vec![])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stability_bound_of_a_one_feature_regression() {
        // x = (1, 2, 3) with the bias column, mean MSE: H = (2/3)·[[14, 6], [6, 3]], whose
        // eigenvalues are (2/3)·(17 ± √(11² + 4·6²))/2 = (17 ± √265)/3; λ = 11.0931..., 2/λ = 0.18029...
        let rows = vec![vec![1.0], vec![2.0], vec![3.0]];
        let lambda = (17.0 + 265f64.sqrt()) / 3.0;
        assert!(stability(0.180, &rows, true, 1, DTypeName::F32).is_none(), "below the bound");
        let c = stability(0.181, &rows, true, 1, DTypeName::F32).expect("above the bound");
        assert_eq!(c.rule, Rule::LrAboveStabilityBound);
        assert!(c.reason.contains(&crate::human(2.0 / lambda)) && c.reason.contains(&crate::human(lambda)), "{}", c.reason);
        // Summed, the curvature is 3 times the mean's (c = 2, not 2/3), λ = 17 + √265 = 33.279...,
        // and twice that when a step sums two micro-batches: 2/λ = 0.060098... and 0.030049...
        assert!(stability(0.0600, &rows, false, 1, DTypeName::F32).is_none() && stability(0.0602, &rows, false, 1, DTypeName::F32).is_some());
        assert!(stability(0.0300, &rows, false, 2, DTypeName::F32).is_none() && stability(0.0301, &rows, false, 2, DTypeName::F32).is_some());
        assert!(stability(0.0602, &rows, false, 1, DTypeName::F32).unwrap().reason.contains("the sum over the batch's 3 rows"));
    }

    #[test]
    fn a_chain_is_one_cause_with_the_batchs_stability_bound() {
        // y = w·x + b on 8 rows of x = 1, y = 1, from w = b = 0, SGD at lr 1.5 on the MSE summed
        // over batches of 2 rows. With e = w + b − 1, each step adds −lr·2·2·e to w and to b, so
        // e ← (1 − 8·lr)·e = −11·e, from e₀ = −1: e_t = −(−11)ᵗ. On the batch, the Hessian is
        // 2·[X 1]ᵀ[X 1] = 2·[[2, 2], [2, 2]], λ = 8, 2/λ = 0.25 and |1 − lr·λ| = 11 (over the whole
        // split of 8 rows it would be λ = 32 and ×47). w = b = (e_t + 1)/2: 6, −60, 666 after steps
        // 1–3, so the weights' norm is ×111 its step-1 value at step 3 (×10 at step 2), and grows ×11
        // a step. The loss at step t is 2·e_{t−1}² = 2·11^(2t−2): 6.2e37 at step 19, 7.5e39 > f32's
        // 3.40e38 at step 20.
        let text = "name = \"chain\"\nseed = 1\n[data]\ninputs = { kind = \"values\", rows = [[1.0], [1.0], [1.0], [1.0], [1.0], [1.0], [1.0], [1.0]] }\n\
                    targets = { kind = \"values\", values = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0] }\n\
                    [model]\nlayers = [{ type = \"linear\", out = 1, init = { kind = \"constant\", value = 0.0 } }]\n\
                    [loss]\nkind = \"mse\"\nreduction = \"sum\"\n[optimizer]\nkind = \"sgd\"\nlr = 1.5\n[train]\nepochs = 6\nbatch_size = 2\n";
        let s = crate::scenario::from_str(text, "chain.toml").unwrap();
        let o = crate::run::run(&s);
        let f = o.first_nonfinite.as_ref().expect("overflows");
        assert_eq!((f.step, f.phase, f.kind, f.tensor.to_string().as_str()), (20, crate::scenario::Phase::Loss, Kind::PosInf, "loss"), "{f}");
        assert!((o.trace.rows[18].train_loss / (2.0 * 11f64.powi(36)) - 1.0).abs() < 1e-5, "{:?}", o.trace.rows[18]);
        let c = o.cause.expect("explained");
        assert_eq!((c.rule, c.op.as_str()), (Rule::LrAboveStabilityBound, "divergence (sgd on mse)"));
        let chain = c.chain.as_ref().expect("a chain");
        assert_eq!((chain.grew.as_str(), chain.diverged_at), ("weights", 3));
        assert!((chain.per_step - 11.0).abs() < 1e-4, "{chain:?}");
        for fact in [
            "lr 1.5, above this linear model's stability bound 2/λ = 0.25 (λ = 8,",
            "the sum over the batch's 2 rows",
            "grow ×11 per step (divergence at step 3); they overflow f32 in `loss` at step 20",
        ] {
            assert!(c.reason.contains(fact), "`{fact}` in {}", c.reason);
        }
    }

    #[test]
    fn a_divergence_of_three_steps_that_overflows_in_validation_is_a_chain() {
        // y = w·x + b on 10 rows of x = 1, y = 2e17 (7 train, 3 validation), from w = b = 0, SGD at
        // lr 1.5 on the mean MSE. With e = w + b − y, each step adds −lr·2e to w and to b, so
        // e ← (1 − 4·lr)·e = −5·e from e₀ = −2e17. The training loss at step t is e_{t−1}²: 4e34,
        // 1e36, 2.5e37 at steps 1–3, ×625 over step 1's by step 3, ×25 a step; the weights
        // w = b = (y + e_t)/2 grow only ×21 (norms 8.49e17, 3.39e18, 1.78e19). Validation after
        // step 3 reads e₃² = 6.25e38 > f32's 3.40e38: +Inf (PyTorch 2.15 prints the same losses and
        // norms, and a validation MSE of inf at step 3). The divergence shows only with step 3's
        // own training row: steps 1–2 grew ×25.
        let text = "name = \"fast\"\nseed = 1\n[data]\ninputs = { kind = \"values\", rows = [[1.0], [1.0], [1.0], [1.0], [1.0], [1.0], [1.0], [1.0], [1.0], [1.0]] }\n\
                    targets = { kind = \"values\", values = [2e17, 2e17, 2e17, 2e17, 2e17, 2e17, 2e17, 2e17, 2e17, 2e17] }\nvalidation = { fraction = 0.3 }\n\
                    [model]\nlayers = [{ type = \"linear\", out = 1, init = { kind = \"constant\", value = 0.0 } }]\n\
                    [loss]\nkind = \"mse\"\n[optimizer]\nkind = \"sgd\"\nlr = 1.5\n[train]\nepochs = 5\n";
        let o = crate::run::run(&crate::scenario::from_str(text, "fast.toml").unwrap());
        let f = o.first_nonfinite.as_ref().expect("overflows");
        assert_eq!((f.step, f.phase, f.kind, f.tensor.to_string().as_str()), (3, crate::scenario::Phase::Validation, Kind::PosInf, "validation.loss"), "{f}");
        for (row, loss) in o.trace.rows.iter().zip([4e34, 1e36, 2.5e37]) {
            assert!((row.train_loss / loss - 1.0).abs() < 1e-5, "{row:?}");
        }
        let c = o.cause.expect("explained");
        let chain = c.chain.as_ref().expect("a chain");
        assert_eq!((c.rule, chain.grew.as_str(), chain.diverged_at, chain.driver()), (Rule::Divergence, "loss", 3, "optimizer.lr"));
        assert!((chain.per_step - 25.0).abs() < 1e-3, "{chain:?}");
        assert!(c.reason.contains("lr 1.5 makes the loss grow ×25 per step (divergence at step 3); it overflows f32 in `validation.loss` at step 3"), "{}", c.reason);
        // The bundled pt1381 fix at lr 6.8 (a hunt's flip): its weights' norm grows ×11 from step 1
        // to 2, then ×3.9e4, and validation overflows f32 at step 3. Was unexplained; now a divergence.
        let mut s = crate::scenario::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/real/pt1381_batch_norm_single_row_fix_full_batch.toml")).unwrap();
        s.optimizer.lr = 6.8;
        let o = crate::run::run(&s);
        assert_eq!(o.first_nonfinite.as_ref().map(|f| (f.step, f.phase)), Some((3, crate::scenario::Phase::Validation)));
        let c = o.cause.expect("explained");
        assert_eq!((c.rule, c.chain.as_ref().map(|ch| (ch.grew.as_str(), ch.driver()))), (Rule::Divergence, Some(("weights", "optimizer.lr"))), "{c}");
    }

    #[test]
    fn a_summed_loss_drives_plain_sgd_but_not_an_adaptive_optimizer() {
        // Adam's step is m̂/(√v̂ + eps): a gradient n times larger scales m̂ and √v̂ alike, so its
        // first step is lr·g/(|g| + eps) = lr·sign(g) on a sum as on a mean (eps = 1e-8 aside).
        // On 4 rows of x = (1, 2, 3, 4), y = 2x + 1, from w = b = 0.5 in batches of 2, the
        // summed and mean runs train alike under Adam (their norms agree to 1e-6 relative),
        // and not under SGD, whose step on the sum is twice the mean's.
        let text = |opt: &str, reduction: &str| {
            format!(
                "name = \"sum\"\nseed = 1\n[data]\ninputs = {{ kind = \"values\", rows = [[1.0], [2.0], [3.0], [4.0]] }}\ntargets = {{ kind = \"values\", values = [3.0, 5.0, 7.0, 9.0] }}\n\
                 [model]\nlayers = [{{ type = \"linear\", out = 1, init = {{ kind = \"constant\", value = 0.5 }} }}]\n\
                 [loss]\nkind = \"mse\"\nreduction = \"{reduction}\"\n[optimizer]\nkind = \"{opt}\"\nlr = 0.01\n[train]\nepochs = 3\nbatch_size = 2\nshuffle = false\n"
            )
        };
        let norms = |opt: &str, red: &str| -> Vec<f64> {
            let s = crate::scenario::from_str(&text(opt, red), "sum.toml").unwrap();
            crate::run::run(&s).trace.rows.iter().map(|r| r.param_norm.unwrap()).collect()
        };
        let (mean, sum) = (norms("adam", "mean"), norms("adam", "sum"));
        assert!(mean.iter().zip(&sum).all(|(a, b)| (a / b - 1.0).abs() < 1e-6), "{mean:?} {sum:?}");
        let (mean, sum) = (norms("sgd", "mean"), norms("sgd", "sum"));
        assert!((mean[0] / sum[0] - 1.0).abs() > 1e-3, "{mean:?} {sum:?}");
        // So a divergence on a summed loss names it only under SGD; either way the step size (the
        // lr) is what root causes group it by.
        let growth = Growth { weights: true, per_step: 10.0, step: 3 };
        let first = Location { step: 5, tensor: crate::scenario::TensorId::Loss, kind: Kind::PosInf, ..Default::default() };
        let trigger = |opt: &str| {
            let s = crate::scenario::from_str(&text(opt, "sum"), "sum.toml").unwrap();
            chain(&s, &first, None, &growth, 2, DTypeName::F32).chain.unwrap()
        };
        let (adam, sgd) = (trigger("adam"), trigger("sgd"));
        assert_eq!(adam.trigger, "lr 0.01");
        assert_eq!(sgd.trigger, "lr 0.01 on a loss summed over batches of 2 rows (its gradient grows with the rows: lr 0.02 on their mean)");
        assert_eq!((adam.driver(), sgd.driver()), ("optimizer.lr", "optimizer.lr"));
    }
}
