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
    let keys: [&[f64]; 3] = [&[0.8, 0.2, 0.0, 0.1], &[0.3, 0.9, 0.5, -0.2], &[-0.1, -0.7, 0.4, 0.0]];
    close("info_nce(p / norm(p, dim=-1, keepdim=true), y, temperature=0.5)", &keys, 1.491923209993802, grad);
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
    assert!(line.starts_with("((lambda p, y: (F.cross_entropy(p.reshape(-1, p.shape[-1]), y.reshape(-1).long(), ignore_index=-100, label_smoothing=0.1, reduction='mean')"), "{line}");
    assert!(line.ends_with(")(p, y) + (0.1 * torch.mean((p ** 2.0))))"), "{line}");
    let kl = Loss(spec("kl_div(log_softmax(p, dim=-1), y, reduction='batchmean')")).torch_expr();
    assert_eq!(kl, "(lambda p, y: F.kl_div(p, y, reduction='batchmean', log_target=False))(torch.log_softmax(p, dim=-1), y)");
    let mse = Loss(spec("sum(mse(p, y, reduction='none'))")).torch_expr();
    assert_eq!(mse, "torch.sum((lambda p, y: F.mse_loss(p, y, reduction='none'))(p, y))");
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
    assert_eq!(err("mean(focal(p, y, reduction='avg'))", 4), "column 6: `focal` takes reduction='none', 'mean', 'sum'");
    assert_eq!(err("kl_div(p, y, reduction=\"sum)", 4), "column 28: expected a closing quote after letters, digits and `_`, an argument");
}
