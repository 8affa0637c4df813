//! The named losses inside expressions against PyTorch 2.15 (f64): value and gradient of
//! combined expressions, their PyTorch lines and their errors.

use candle_core::{Device, Tensor, Var};

use crate::ops::loss::Loss;
use crate::scenario::{LossKind, LossSpec};

/// The prediction of every case: (3, 4).
const P: [[f64; 4]; 3] = [[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.5, 3.0], [-2.0, 1.0, 0.75, -0.25]];

fn spec(expr: &str) -> LossSpec {
    LossSpec { kind: LossKind::Expr, expr: Some(expr.into()), ..Default::default() }
}

/// The loss `expr` of `P` against `y`, and its gradient wrt `P`, flattened.
fn loss_grad(expr: &str, y: &[&[f64]]) -> (f64, Vec<f64>) {
    let p = Var::from_tensor(&Tensor::new(&P, &Device::Cpu).unwrap()).unwrap();
    let y = Tensor::new(y.iter().map(|r| r.to_vec()).collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let l = Loss(spec(expr)).apply(p.as_tensor(), &y).unwrap();
    let g = l.backward().unwrap();
    (l.to_scalar::<f64>().unwrap(), g.get(p.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap())
}

fn close(expr: &str, y: &[&[f64]], want: f64, grad: [f64; 12]) {
    let (l, g) = loss_grad(expr, y);
    assert!((l - want).abs() <= 1e-12 * want.abs().max(1.0), "{expr}: {l} vs {want}");
    assert!(g.iter().zip(grad).all(|(a, b)| (a - b).abs() <= 1e-12 * b.abs().max(1.0)), "{expr}: {g:?} vs {grad:?}");
}

const PROBS: [&[f64]; 3] = [&[0.1, 0.2, 0.3, 0.4], &[0.25, 0.25, 0.25, 0.25], &[0.7, 0.1, 0.1, 0.1]];
const BITS: [&[f64]; 3] = [&[1.0, 0.0, 1.0, 0.0], &[0.0, 0.0, 1.0, 1.0], &[1.0, 1.0, 0.0, 0.0]];

#[test]
fn cross_entropy_with_ignore_index_and_label_smoothing_plus_a_penalty_is_pytorchs() {
    // PyTorch 2.15: F.cross_entropy(p, y.long(), ignore_index=-100, label_smoothing=0.1) + 0.1 * torch.mean(p ** 2),
    // the middle row ignored: its gradient is 0.1 · 2p / 12 alone.
    let grad = [
        0.07295074597541444,
        -0.011959446033606564,
        -0.0835504012959013,
        0.05172576802076008,
        0.025,
        0.0,
        -0.008333333333333333,
        0.05,
        -0.48406385637734917,
        0.24056293063269274,
        0.18410559549189565,
        0.05106199691942752,
    ];
    close("cross_entropy(p, y, label_smoothing=0.1) + 0.1 * mean(p ** 2)", &[&[2.0], &[-100.0], &[0.0]], 2.2305429743314678, grad);
    // ignore_index=7, reduction='sum': 4.118377615329602.
    let grad =
        [0.1542348252841622, 0.034414441266120206, -0.3087674692584692, 0.12011820270818684, 0.0, 0.0, 0.0, 0.0, -0.9764610460880316, 0.4727925279320522, 0.3682111909837913, 0.13545732717218836];
    close("cross_entropy(p, y, ignore_index=7, reduction='sum')", &[&[2.0], &[7.0], &[0.0]], 4.118377615329602, grad);
}

#[test]
fn kl_div_mse_focal_bce_and_info_nce_in_expressions_are_pytorchs() {
    // F.kl_div(torch.log_softmax(p, dim=-1), y, reduction='batchmean') + F.mse_loss(p, y, reduction='sum').
    let grad = [
        0.8180782750947208,
        -2.4551951862446266,
        3.53041084358051,
        -0.3932939324306044,
        2.473742782127323,
        -0.5705979305499468,
        -1.5756089210814197,
        5.672464069504044,
        -5.625487015362678,
        1.9242641759773507,
        1.3894037303279305,
        -0.6881808909426038,
    ];
    close("kl_div(log_softmax(p, dim=-1), y, reduction='batchmean') + mse(p, y, reduction='sum')", &PROBS, 24.066346098013383, grad);
    // F.kl_div(p, torch.log(y), log_target=True): PyTorch's default 'mean' is over the 12 elements.
    let grad = [-0.1 / 12.0, -0.2 / 12.0, -0.3 / 12.0, -0.4 / 12.0, -0.25 / 12.0, -0.25 / 12.0, -0.25 / 12.0, -0.25 / 12.0, -0.7 / 12.0, -0.1 / 12.0, -0.1 / 12.0, -0.1 / 12.0];
    close("kl_div(p, log(y), log_target=true)", &PROBS, -0.32554971463407373, grad);
    // torch.mean(torchvision.ops.sigmoid_focal_loss(p, y, gamma=0.5, alpha=0.25)) + F.binary_cross_entropy_with_logits(p, y).
    let grad = [
        -0.038183316834347385,
        0.03484018022664242,
        -0.011193061560377596,
        0.08166541665776793,
        0.1231044865903072,
        0.0714220203245943,
        -0.06512510520107186,
        -0.004272318661165998,
        -0.09309991902154838,
        -0.026554583484991647,
        0.10097441061607584,
        0.06128652238170546,
    ];
    close("mean(focal(p, y, gamma=0.5, alpha=0.25)) + bce_with_logits(p, y)", &BITS, 1.1020705433801956, grad);
    // torch.sum(F.mse_loss(p, y, reduction='none') * y) = 8.856, its gradient 2(p − y)·y by hand.
    let grad: Vec<f64> = P.iter().flatten().zip(PROBS.iter().flat_map(|r| r.iter())).map(|(p, y)| 2.0 * (p - y) * y).collect();
    close("sum(mse(p, y, reduction='none') * y)", &PROBS, 8.856, grad.try_into().unwrap());
    // F.cross_entropy((p / torch.norm(p, dim=-1, keepdim=True)) @ y.T / 0.5, torch.arange(3)).
    let grad = [
        -0.2033433840736711,
        -0.07463412509133546,
        0.019073857913806294,
        -0.044440595528449825,
        0.013678924772621635,
        -0.14636614255941258,
        -0.053258807913501634,
        -0.01571593037189442,
        0.13948673984517196,
        0.28046364556468883,
        -0.010738391676953275,
        -0.02625451153348031,
    ];
    close("info_nce(p / norm(p, dim=-1, keepdim=true), y, temperature=0.5)", &KEYS, 1.491923209993802, grad);
}

#[test]
fn an_all_ignored_batch_is_nan_inside_an_expression_as_in_pytorch() {
    // PyTorch 2.15: F.cross_entropy of a batch whose every target is ignore_index is nan (0/0),
    // and nan + 0.1 · mean(p²) stays nan.
    let (l, g) = loss_grad("cross_entropy(p, y) + 0.1 * mean(p ** 2)", &[&[-100.0], &[-100.0], &[-100.0]]);
    assert!(l.is_nan(), "{l}");
    // The gradient is the penalty's alone: nll_loss's backward of an all-ignored batch is 0.
    let want: Vec<f64> = P.iter().flatten().map(|p| 0.2 * p / 12.0).collect();
    assert!(g.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-15), "{g:?}");
}

#[test]
fn the_pytorch_line_is_the_loss_kinds_own_applied_to_the_operands() {
    let line = Loss(spec("cross_entropy(p, y, label_smoothing=0.1) + 0.1 * mean(p ** 2)")).torch_expr();
    assert!(line.starts_with("(f32_loss(lambda p, y: (F.cross_entropy(p.reshape(-1, p.shape[-1]), y.reshape(-1).long(), ignore_index=-100, label_smoothing=0.1, reduction='mean')"), "{line}");
    assert!(line.ends_with("), p, y) + (0.1 * torch.mean((p ** 2))))"), "{line}");
    let kl = Loss(spec("kl_div(log_softmax(p, dim=-1), y, reduction='batchmean')")).torch_expr();
    assert_eq!(kl, "f32_loss(lambda p, y: F.kl_div(p, y, reduction='batchmean', log_target=False), torch.log_softmax(p, dim=-1), y)");
    let mse = Loss(spec("sum(mse(p, y, reduction='none'))")).torch_expr();
    assert_eq!(mse, "torch.sum(f32_loss(lambda p, y: F.mse_loss(p, y, reduction='none'), p, y))");
}

#[test]
fn named_loss_calls_are_checked_with_their_column() {
    let err = |e: &str, y: usize| {
        super::super::compile(
            e,
            &[("p".into(), vec![crate::ops::expr::check::Dim::Batch, crate::ops::expr::check::Dim::N(4)]), ("y".into(), vec![crate::ops::expr::check::Dim::Batch, crate::ops::expr::check::Dim::N(y)])],
            &Default::default(),
        )
        .unwrap_err()
    };
    assert_eq!(err("1 + cross_entropy(p, y, -100)", 1), "column 25: pass `cross_entropy`'s parameters by keyword (ignore_index=, reduction=, label_smoothing=)");
    assert_eq!(err("mse(p, y, reduction='batchmean')", 4), "column 1: `mse` takes reduction='mean', 'sum', 'none'");
    assert_eq!(err("mse(p, y)", 3), "column 1: `mse` reads a prediction and targets of one shape, and gets (batch, 4) and (batch, 3)");
    assert_eq!(err("cross_entropy(p, y)", 3), "column 1: `cross_entropy` reads one class index per row (or position), or one probability per class, and gets (batch, 4) and (batch, 3)");
    assert_eq!(err("cross_entropy(p, y, label_smoothing=1.5)", 1), "column 1: `cross_entropy` takes an integer ignore_index and a label_smoothing in [0, 1] (PyTorch's check), got -100 and 1.5");
    assert_eq!(err("info_nce(p, y, temperature=0)", 4), "column 1: `temperature` must not be 0 (the logits divide by it)");
    assert_eq!(err("info_nce(p, y, reduction='batchmean')", 4), "column 1: `info_nce` takes reduction='mean', 'sum', 'none'");
    assert_eq!(err("info_nce(p, y, normalised=true)", 4), "column 27: `info_nce` takes no argument `normalised`, did you mean `normalized`?");
    // reduction='none': one loss per row or position (the prediction without its classes), per row for info_nce.
    use crate::ops::expr::check::Dim::{Batch, N};
    let dims = |e: &str, p: Vec<crate::ops::expr::check::Dim>, y| super::super::compile(e, &[("p".into(), p), ("y".into(), y)], &Default::default()).unwrap().ir.dims;
    assert_eq!(dims("cross_entropy(p, y, reduction='none')", vec![Batch, N(4)], vec![Batch, N(1)]), [Batch]);
    assert_eq!(dims("cross_entropy(p, y, reduction='none')", vec![Batch, N(3), N(4)], vec![Batch, N(3)]), [Batch, N(3)]);
    assert_eq!(dims("cross_entropy(p, y, reduction='none')", vec![Batch, N(3), N(4)], vec![Batch, N(3), N(4)]), [Batch, N(3)]);
    assert_eq!(dims("info_nce(p, y, reduction='none')", vec![Batch, N(4)], vec![Batch, N(4)]), [Batch]);
    assert_eq!(err("mean(focal(p, y, reduction='avg'))", 4), "column 6: `focal` takes reduction='none', 'mean', 'sum'");
    assert_eq!(err("kl_div(p, y, reduction=\"sum)", 4), "column 28: expected a closing quote after letters, digits and `_`, an argument");
}

#[test]
fn cross_entropy_and_info_nce_with_reduction_none_are_pytorchs_rows() {
    // PyTorch 2.15: r = F.cross_entropy(p, y, label_smoothing=0.1, reduction='none') is
    // [0.5255289984482534, 0.0, 3.5615986168813487] (the ignored row 0); torch.sum(r ** 2):
    let grad = [0.13583329659244156, 0.009895123779068116, -0.2457031679783724, 0.09997474760686274, 0.0, 0.0, 0.0, 0.0, -6.421284829839094, 3.1897144962651987, 2.444761006212142, 0.7868093273617531];
    close("sum(cross_entropy(p, y, label_smoothing=0.1, reduction='none') ** 2)", &[&[2.0], &[-100.0], &[0.0]], 12.96116543598116, grad);
    // Every row ignored: the rows are [0, 0, 0] (not NaN: nothing is divided), their sum 0 with a zero gradient.
    close("sum(cross_entropy(p, y, label_smoothing=0.1, reduction='none'))", &[&[-100.0], &[-100.0], &[-100.0]], 0.0, [0.0; 12]);
    // One-hot targets: F.cross_entropy(p, y, label_smoothing=0.2, reduction='none') per row, squared and summed.
    let grad = [
        0.08927038447886536,
        -0.6467795890137243,
        1.4779632972279895,
        -0.9204540926931305,
        -0.35679734793234635,
        -0.9593230521175892,
        -1.0274151150624657,
        2.3435355151124018,
        -3.2538015536151956,
        1.9018805552271338,
        1.3216426708675884,
        0.03027832752047337,
    ];
    close("sum(cross_entropy(p, y, label_smoothing=0.2, reduction='none') ** 2)", &PROBS, 16.21689843630056, grad);
    // torch.sum(F.cross_entropy(p @ k.T / 0.5, torch.arange(3), reduction='none') ** 2), rows
    // [2.6056169629855885, 3.846018993092086, 2.00769216592086].
    let grad = [
        -8.394526672495877,
        -7.515844091170692,
        3.934299489008627,
        -1.111716082028746,
        7.200782732199785,
        -10.865698508797948,
        -7.382403723801231,
        4.480296111929144,
        2.8274347797761132,
        11.05845226454134,
        0.6486904415729371,
        -1.3625293269214969,
    ];
    close("sum(info_nce(p, y, temperature=0.5, reduction='none') ** 2)", &KEYS, 25.6119296861233, grad);
}

/// The `info_nce` keys of the contrastive cases.
const KEYS: [&[f64]; 3] = [&[0.8, 0.2, 0.0, 0.1], &[0.3, 0.9, 0.5, -0.2], &[-0.1, -0.7, 0.4, 0.0]];

#[test]
fn info_nce_normalized_is_pytorchs_f_normalize_with_its_eps_at_a_zero_embedding() {
    // PyTorch 2.15: F.cross_entropy(F.normalize(p, dim=-1) @ F.normalize(k, dim=-1).T / 0.5, torch.arange(3)).
    let grad = [
        -0.26638912314736973,
        -0.12879902705660395,
        0.008540006562215902,
        -0.050737914429403286,
        0.03823507036330031,
        -0.131720313797468,
        -0.04523818821030554,
        -0.026657233216701076,
        0.14028980881713785,
        0.30038343214518404,
        -0.03434604653651581,
        -0.023822881565913844,
    ];
    close("info_nce(p, y, temperature=0.5, normalized=true)", &KEYS, 1.5614624732502762, grad);
    // A zero embedding: F.normalize divides by max(‖0‖, 1e-12), so its logits are 0 and its
    // gradient the arriving one over 1e-12 (PyTorch 2.15: loss 1.350639565660325, the zero row's
    // gradient [-394279020276.2615, -115145600416.22574, 211270047206.9859, -94246979017.15126],
    // the other rows' as above: a zero row leaves the others' logits alone).
    let z = [[0.0; 4], P[1], P[2]];
    let p = Var::from_tensor(&Tensor::new(&z, &Device::Cpu).unwrap()).unwrap();
    let y = Tensor::new(KEYS.iter().map(|r| r.to_vec()).collect::<Vec<_>>(), &Device::Cpu).unwrap();
    let l = Loss(spec("info_nce(p, y, temperature=0.5, normalized=true)")).apply(p.as_tensor(), &y).unwrap();
    let g: Vec<f64> = l.backward().unwrap().get(p.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let want = [-394279020276.2615, -115145600416.22574, 211270047206.9859, -94246979017.15126];
    assert!((l.to_scalar::<f64>().unwrap() - 1.350639565660325).abs() < 1e-12);
    assert!(g[..4].iter().zip(want).all(|(a, b)| (a - b).abs() <= 1e-9 * b.abs()), "{g:?}");
    assert!(g[4..].iter().zip(&grad[4..]).all(|(a, b)| (a - b).abs() <= 1e-12), "{g:?}");
    // Without normalized=True the zero row's logits are 0 too, but its gradient is ordinary.
    let (plain, _) = {
        let l = Loss(spec("info_nce(p, y, temperature=0.5)")).apply(p.as_tensor(), &y).unwrap();
        let g: Vec<f64> = l.backward().unwrap().get(p.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        (l.to_scalar::<f64>().unwrap(), g)
    };
    assert!(plain.is_finite() && (plain - 1.350639565660325).abs() > 1e-3, "{plain}");
}

#[test]
fn a_masked_mean_of_per_token_cross_entropy_is_nan_when_the_batch_is_all_padding() {
    // p (2, 3, 4), class indices (2, 3) with two ignored, mask (2, 3). PyTorch 2.15:
    // r = F.cross_entropy(p.reshape(-1, 4), y.reshape(-1), reduction='none').reshape(2, 3);
    // torch.sum(r * m) / torch.sum(m) = 2.2360129521277217.
    let p = [[[0.5, -1.0, 2.0, 0.25], [1.5, 0.0, -0.5, 3.0], [-2.0, 1.0, 0.75, -0.25]], [[0.1, 0.2, 0.3, 0.4], [-1.0, -2.0, 0.5, 1.0], [2.5, 0.0, 0.0, -1.5]]];
    let y = Tensor::new(&[[2.0, -100.0, 0.0], [3.0, 1.0, -100.0]], &Device::Cpu).unwrap();
    let run = |mask: [[f64; 3]; 2]| {
        let p = Var::from_tensor(&Tensor::new(&p, &Device::Cpu).unwrap()).unwrap();
        let m = Tensor::new(&mask, &Device::Cpu).unwrap();
        let l = Loss(spec("sum(cross_entropy(p, y, reduction='none') * mask) / sum(mask)")).apply_masked(p.as_tensor(), &y, Some(&m)).unwrap();
        let g: Vec<f64> = l.backward().unwrap().get(p.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        (l.to_scalar::<f64>().unwrap(), g)
    };
    let (l, g) = run([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]);
    let want = [
        0.03855870632104055,
        0.008603610316530052,
        -0.0771918673146173,
        0.03002955067704671,
        0.0,
        0.0,
        0.0,
        0.0,
        -0.2441152615220079,
        0.11819813198301304,
        0.09205279774594782,
        0.03386433179304709,
        0.0534595550914961,
        0.05908194558038442,
        0.06529564803876889,
        -0.17783714871064943,
        0.01888413693691765,
        -0.24305291425664174,
        0.08463283011295118,
        0.13953594720677293,
        0.0,
        0.0,
        0.0,
        0.0,
    ];
    assert!((l - 2.2360129521277217).abs() < 1e-12, "{l}");
    assert!(g.iter().zip(want).all(|(a, b)| (a - b).abs() <= 1e-12), "{g:?}");
    // All padding: 0/0 = NaN; the gradient is NaN at every kept position (1/0 · 0) and 0 at the
    // two ignored ones (nll_loss's backward), as PyTorch 2.15 gives.
    let (l, g) = run([[0.0; 3]; 2]);
    assert!(l.is_nan(), "{l}");
    let ignored = |i: usize| (4..8).contains(&i) || (20..24).contains(&i);
    assert!(g.iter().enumerate().all(|(i, v)| if ignored(i) { *v == 0.0 } else { v.is_nan() }), "{g:?}");
}

#[test]
fn the_reduction_none_and_normalized_pytorch_lines() {
    let ce = Loss(spec("sum(cross_entropy(p, y, reduction='none') * mask) / sum(mask)")).torch_expr();
    assert!(
        ce.starts_with(
            "(torch.sum((f32_loss(lambda p, y: (F.cross_entropy(p.reshape(-1, p.shape[-1]), y.reshape(-1).long(), ignore_index=-100, label_smoothing=0.0, reduction='none').reshape(p.shape[:-1]) if "
        ),
        "{ce}"
    );
    assert!(
        ce.contains("else F.cross_entropy(p.reshape(-1, p.shape[-1]), y.reshape(-1, p.shape[-1]), label_smoothing=0.0, reduction='none').reshape(p.shape[:-1])), p, y) * mask)) / torch.sum(mask))"),
        "{ce}"
    );
    let nce = Loss(spec("mean(info_nce(p, y, temperature=0.1, normalized=true, reduction='none'))")).torch_expr();
    assert_eq!(nce, "torch.mean(f32_loss(lambda p, y: F.cross_entropy(F.normalize(p, dim=-1) @ F.normalize(y, dim=-1).T / 0.1, torch.arange(p.shape[0]), reduction='none'), p, y))");
}
