//! `cross_entropy` of class indices and with label smoothing against PyTorch 2.15's
//! `F.cross_entropy` (values from `/work/main/.venv-torch/bin/python`, f64 unless stated).

use candle_core::{DType, Device, Tensor, Var};

use super::super::Loss;
use crate::ops::Op;
use crate::scenario::{LossKind, LossSpec, Reduction};

fn spec(smoothing: Option<f64>, reduction: Reduction) -> LossSpec {
    LossSpec { kind: LossKind::CrossEntropy, label_smoothing: smoothing, reduction, ..Default::default() }
}

/// The four rows of logits every case reads.
const P: [[f64; 3]; 4] = [[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [0.0, 0.0, 0.0], [2.0, 1.0, -3.0]];

/// The loss and its gradient wrt `p` (flattened) in `dtype`, `p` of `shape`.
fn run(s: &LossSpec, p: &[[f64; 3]; 4], y: Tensor, shape: &[usize], dtype: DType) -> (f64, Vec<f64>) {
    let p = Var::from_tensor(&Tensor::new(p, &Device::Cpu).unwrap().reshape(shape).unwrap().to_dtype(dtype).unwrap()).unwrap();
    let l = Loss(s.clone()).apply(p.as_tensor(), &y.to_dtype(dtype).unwrap()).unwrap();
    let g = l.backward().unwrap().get(p.as_tensor()).unwrap().flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap();
    (l.to_dtype(DType::F64).unwrap().to_scalar().unwrap(), g)
}

fn column(t: &[f64]) -> Tensor {
    Tensor::from_vec(t.to_vec(), (t.len(), 1), &Device::Cpu).unwrap()
}

fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol * y.abs().max(1.0)), "{a:?} vs {b:?}");
}

#[test]
fn class_indices_with_an_ignored_row_and_label_smoothing_are_pytorchs() {
    // F.cross_entropy(p, [0, -100, 2, 1], ignore_index=-100, label_smoothing=ε, reduction=r):
    // the mean is over the 3 rows kept, the ignored row's gradient 0.
    let cases: [(Option<f64>, Reduction, f64, [f64; 12]); 4] = [
        (
            None,
            Reduction::Mean,
            1.2937188340078363,
            [
                -0.256258700792617,
                0.20951057307058746,
                0.04674812772202949,
                0.0,
                0.0,
                0.0,
                0.1111111111111111,
                0.1111111111111111,
                -0.2222222222222222,
                0.24249171893348825,
                -0.24412561528337923,
                0.0016338963498909742,
            ],
        ),
        (
            None,
            Reduction::Sum,
            3.881156502023509,
            [
                -0.768776102377851,
                0.6285317192117624,
                0.14024438316608848,
                0.0,
                0.0,
                0.0,
                0.3333333333333333,
                0.3333333333333333,
                -0.6666666666666667,
                0.7274751568004648,
                -0.7323768458501376,
                0.004901689049672923,
            ],
        ),
        (
            Some(0.1),
            Reduction::Mean,
            1.3214966117856142,
            [
                -0.23403647857039475,
                0.1983994619594764,
                0.035637016610918386,
                0.0,
                0.0,
                0.0,
                0.09999999999999999,
                0.09999999999999999,
                -0.2,
                0.23138060782237718,
                -0.221903393061157,
                -0.009477214761220137,
            ],
        ),
        (
            Some(0.1),
            Reduction::Sum,
            3.9644898353568423,
            [-0.7021094357111843, 0.5951983858784291, 0.10691104983275515, 0.0, 0.0, 0.0, 0.3, 0.3, -0.6000000000000001, 0.6941418234671315, -0.665710179183471, -0.02843164428366041],
        ),
    ];
    for (smoothing, reduction, value, grad) in cases {
        let (l, g) = run(&spec(smoothing, reduction), &P, column(&[0.0, -100.0, 2.0, 1.0]), &[4, 3], DType::F64);
        close(&[l], &[value], 1e-12);
        close(&g, &grad, 1e-12);
    }
    // The same as a sequence: logits (2, 2, 3) against targets (2, 2), one index per position.
    let y = Tensor::new(&[[0.0f64, -100.0], [2.0, 1.0]], &Device::Cpu).unwrap();
    let (l, g) = run(&spec(Some(0.1), Reduction::Mean), &P, y, &[2, 2, 3], DType::F64);
    close(&[l], &[1.3214966117856142], 1e-12);
    close(&g[..3], &[-0.23403647857039475, 0.1983994619594764, 0.035637016610918386], 1e-12);
}

#[test]
fn a_batch_whose_every_target_is_ignored_is_nan_with_a_zero_gradient() {
    // PyTorch 2.15: F.cross_entropy(p, full(-100)) = nan, p.grad all 0, with or without smoothing.
    for smoothing in [None, Some(0.1)] {
        for dtype in [DType::F64, DType::F32, DType::F16] {
            let (l, g) = run(&spec(smoothing, Reduction::Mean), &P, column(&[-100.0; 4]), &[4, 3], dtype);
            assert!(l.is_nan(), "{smoothing:?} {dtype:?}: {l}");
            assert!(g.iter().all(|v| *v == 0.0), "{smoothing:?} {dtype:?}: {g:?}");
        }
    }
    // A sum over no rows is 0.
    assert_eq!(run(&spec(None, Reduction::Sum), &P, column(&[-100.0; 4]), &[4, 3], DType::F32).0, 0.0);
}

#[test]
fn a_batch_whose_every_target_is_ignored_is_explained_as_0_over_0() {
    use crate::ops::diagnosis::Rule;
    let p = Tensor::new(&P, &Device::Cpu).unwrap();
    // PyTorch 2.15: F.cross_entropy(p, full(-100)) = nan; with ignore_index=-1 and smoothing 0.1
    // over targets of -1, nan too.
    let (rule, why) = super::all_ignored(&spec(None, Reduction::Mean), &p, &column(&[-100.0; 4])).unwrap().expect("every target is ignored");
    assert_eq!(rule, Rule::DivisionByZero);
    assert!(
        why.starts_with("every target of the batch (4 of 4) is ignore_index -100, so cross_entropy's mean over the targets not ignored divides a sum over no row by a weight of 0: 0 / 0 = NaN"),
        "{why}"
    );
    assert!(why.contains("fix: skip a batch with no real label, reduce by the sum") && !why.contains("label smoothing"), "{why}");
    let own = LossSpec { ignore_index: Some(-1), ..spec(Some(0.1), Reduction::Mean) };
    let (_, why) = super::all_ignored(&own, &p, &column(&[-1.0; 4])).unwrap().expect("every target is ignored");
    assert!(why.contains("(4 of 4) is ignore_index -1") && why.contains("label smoothing's term divides by the same 0"), "{why}");
    // One real label, a sum (0 over no row), or one-hot targets: no such rule.
    assert_eq!(super::all_ignored(&spec(None, Reduction::Mean), &p, &column(&[-100.0, 2.0, -100.0, -100.0])).unwrap(), None);
    assert_eq!(super::all_ignored(&spec(None, Reduction::Sum), &p, &column(&[-100.0; 4])).unwrap(), None);
    assert_eq!(super::all_ignored(&spec(None, Reduction::Mean), &p, &Tensor::zeros((4, 3), DType::F64, &Device::Cpu).unwrap()).unwrap(), None);
}

#[test]
fn half_logits_with_label_smoothing_round_as_pytorch() {
    // PyTorch 2.15, f16 logits, targets [0, -100, 2, 1], label_smoothing 0.1: 1.3212890625, and
    // these gradients bit for bit (the backward from the rounded log-softmax, as PyTorch's).
    let (l, g) = run(&spec(Some(0.1), Reduction::Mean), &P, column(&[0.0, -100.0, 2.0, 1.0]), &[4, 3], DType::F16);
    assert_eq!(l, 1.3212890625);
    let want = [-0.2340087890625, 0.1983642578125, 0.035614013671875, 0.0, 0.0, 0.0, 0.0999755859375, 0.0999755859375, -0.199951171875, 0.2313232421875, -0.221923828125, -0.0094757080078125];
    assert_eq!(g, want, "bit for bit, as its backward reads the rounded log-softmax");
}

#[test]
fn half_class_index_gradients_are_pytorchs_from_the_rounded_log_softmax() {
    // PyTorch 2.15, F.cross_entropy(P, [1, 2, 0, 2]) in f16 and bf16: the loss and every gradient
    // wrt p bit for bit. Its backward reads the rounded log-softmax (`g − exp(out)·Σg`); the
    // composed form, from the unrounded softmax, misses 3 of the 12 in f16 and 7 in bf16.
    let cases: [(DType, [f64; 12]); 2] = [
        (
            DType::F16,
            [
                0.057769775390625,
                -0.09283447265625,
                0.0350341796875,
                0.03704833984375,
                0.010101318359375,
                -0.047149658203125,
                -0.1666259765625,
                0.08331298828125,
                0.08331298828125,
                0.181884765625,
                0.06689453125,
                -0.248779296875,
            ],
        ),
        (
            DType::BF16,
            [0.0576171875, -0.09326171875, 0.034912109375, 0.037109375, 0.010009765625, -0.047607421875, -0.1669921875, 0.0830078125, 0.0830078125, 0.181640625, 0.06689453125, -0.2490234375],
        ),
    ];
    for (dtype, want) in cases {
        let (l, g) = run(&spec(None, Reduction::Mean), &P, column(&[1.0, 2.0, 0.0, 2.0]), &[4, 3], dtype);
        assert_eq!((l, g.as_slice()), (1.7734375, want.as_slice()), "{dtype:?}");
    }
}

#[test]
fn one_hot_targets_are_smoothed_as_pytorchs_probability_targets() {
    // F.cross_entropy(p, one_hot([0, 1, 2, 1]), label_smoothing=0.1) = 1.7575443171421423.
    let y = Tensor::new(&[[1.0f64, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]], &Device::Cpu).unwrap();
    let (l, g) = run(&spec(Some(0.1), Reduction::Mean), &P, y, &[4, 3], DType::F64);
    close(&[l], &[1.7575443171421423], 1e-12);
    let want = [
        -0.17552735892779608,
        0.14879959646960728,
        0.026727762458188788,
        0.028723032387722197,
        -0.22323429554004995,
        0.19451126315232778,
        0.075,
        0.075,
        -0.15000000000000002,
        0.17353545586678287,
        -0.16642754479586774,
        -0.0071079110709151025,
    ];
    close(&g, &want, 1e-12);
}

#[test]
fn a_target_out_of_bounds_is_pytorchs_error_and_ignore_index_is_the_losss() {
    // PyTorch 2.15: IndexError "Target 5 is out of bounds." (and -1 when it is not ignore_index).
    let p = Tensor::new(&P, &Device::Cpu).unwrap();
    for bad in [5.0, -1.0, 1.5] {
        let e = Loss(spec(None, Reduction::Mean)).apply(&p, &column(&[0.0, bad, 2.0, 1.0])).unwrap_err().to_string();
        assert!(e.contains(&format!("Target {bad} is out of bounds")), "{e}");
    }
    // ignore_index = 1 leaves out the last row: −log_softmax(p)[0][0] and [2][2] averaged (by hand,
    // (1.4638... + ln 3) / 2 from the first case's rows).
    let s = LossSpec { ignore_index: Some(1), ..spec(None, Reduction::Mean) };
    let l = Loss(s).apply(&p, &column(&[0.0, 1.0, 2.0, 1.0])).unwrap().to_scalar::<f64>().unwrap();
    let row0 = (1f64.exp() + 2f64.exp() + 0.5f64.exp()).ln() - 1.0;
    close(&[l], &[(row0 + 3f64.ln()) / 2.0], 1e-12);
}

#[test]
fn its_pytorch_call_and_checks() {
    let s = LossSpec { ignore_index: Some(-1), ..spec(Some(0.1), Reduction::Sum) };
    let t = Loss(s).torch_expr();
    assert!(t.starts_with("(F.cross_entropy(p.reshape(-1, p.shape[-1]), y.reshape(-1).long(), ignore_index=-1, label_smoothing=0.1, reduction='sum') if p.shape[-1] > 1 and y.numel() * p.shape[-1] == p.numel() else F.cross_entropy(p.reshape(-1, p.shape[-1]), y.reshape(-1, p.shape[-1]), label_smoothing=0.1, reduction='sum'))"), "{t}");
    let problems = |s: LossSpec| Loss(s).check().into_iter().map(|(_, m)| m).collect::<Vec<_>>();
    assert_eq!(problems(spec(Some(1.5), Reduction::Mean)), ["must be between 0.0 and 1.0, got 1.5 (as PyTorch checks)"]);
    assert_eq!(problems(LossSpec { kind: LossKind::Mse, ignore_index: Some(0), ..Default::default() }), ["only `cross_entropy` takes `ignore_index`"]);
    assert!(crate::ops::loss::indexes(6, 3, 2) && !crate::ops::loss::indexes(6, 3, 6) && !crate::ops::loss::indexes(1, 1, 1));
}

#[test]
fn a_half_sum_of_finite_row_losses_past_the_largest_value_is_explained() {
    // f16 logits [0, 3420] with target 0: each row's loss is 3420 (ln(1 + e^−3420) is below f16's
    // spacing), 20 of them sum to 68400 by hand, past 65504. PyTorch 2.15 gives F.cross_entropy
    // of 20 such f16 rows inf for the sum and for the mean, of 19 rows 65024 and 3422, and with 2
    // of the 20 rows ignored (18 × 3420 = 61560) 61568 and 3420.
    let rows = half_rows;
    let targets = |t: Vec<f64>| column(&t).to_dtype(DType::F16).unwrap();
    let half = crate::scenario::DTypeName::F16;
    for (r, then) in [(Reduction::Sum, ""), (Reduction::Mean, ", and so is the mean, which divides it by 20 afterwards")] {
        let (rule, reason) = super::overflow(&spec(None, r), &rows(20), &targets(vec![0.0; 20]), half).unwrap().expect("explained");
        assert_eq!(rule, crate::ops::Rule::Overflow);
        assert!(
            reason.contains("the largest, row 0, 3420") && reason.contains("adds the 20 rows' losses in f16") && reason.contains("their sum 68400 is beyond f16's largest value 65504"),
            "{reason}"
        );
        assert!(reason.ends_with(&format!("+Inf{then}")), "{reason}");
        assert!(run_half(r, 20).is_infinite(), "{}", run_half(r, 20));
    }
    assert_eq!(super::overflow(&spec(None, Reduction::Sum), &rows(19), &targets(vec![0.0; 19]), half).unwrap(), None);
    assert_eq!(run_half(Reduction::Sum, 19), 65024.0);
    let mut ignored = vec![0.0; 20];
    ignored[..2].fill(-100.0);
    assert_eq!(super::overflow(&spec(None, Reduction::Sum), &rows(20), &targets(ignored), half).unwrap(), None);
    // One-hot rows [1, 0]: PyTorch 2.15's F.cross_entropy(p16, y16) sums every term y · log_softmax(p)
    // in f32 and rounds the total to f16 before the mean divides it: 20 rows are inf for the sum
    // and the mean, 19 rows 64992 and 3420 (one_hot_half_rows_reduce_as_pytorchs_probability_targets).
    let one_hot = |n: usize| Tensor::from_vec([1f32, 0.0].repeat(n), (n, 2), &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
    for (r, then) in [(Reduction::Sum, ""), (Reduction::Mean, ", and so is the mean, which divides it by 20 afterwards")] {
        let (rule, reason) = super::overflow(&spec(None, r), &rows(20), &one_hot(20), half).unwrap().expect("explained");
        assert_eq!(rule, crate::ops::Rule::Overflow);
        assert!(
            reason.contains("adds the 20 rows' terms y · log_softmax(p) in f32 and rounds the total to f16") && reason.contains("their sum 68400 is beyond f16's largest value 65504: +Inf"),
            "{reason}"
        );
        assert!(reason.ends_with(&format!("+Inf{then}")), "{reason}");
    }
    assert_eq!(super::overflow(&spec(None, Reduction::Mean), &rows(19), &one_hot(19), half).unwrap(), None);
    assert_eq!(super::overflow(&spec(None, Reduction::Sum), &rows(19), &one_hot(19), half).unwrap(), None);
    // A one-hot target scaled to 71.6 (71.625 in f16) against a log-probability of −1000 (logits
    // [0, 1000]): 71.625 × −1000 = −71625 by hand, past 65504; in f32 it is finite.
    let far = Tensor::from_vec(vec![0f32, 1000.0], (1, 2), &Device::Cpu).unwrap();
    let scaled = Tensor::from_vec(vec![71.6f32, 0.0], (1, 2), &Device::Cpu).unwrap();
    let (_, reason) = super::overflow(&spec(None, Reduction::Mean), &far.to_dtype(DType::F16).unwrap(), &scaled.to_dtype(DType::F16).unwrap(), half).unwrap().expect("explained");
    assert!(reason.contains("row 0, class 0, is 71.6 × -1000 = -71625, beyond f16's largest value 65504"), "{reason}");
    assert_eq!(super::overflow(&spec(None, Reduction::Mean), &far, &scaled, crate::scenario::DTypeName::F32).unwrap(), None);
    // In f32 the same 20 rows sum to 68400: finite, no rule.
    assert_eq!(super::overflow(&spec(None, Reduction::Sum), &rows(20).to_dtype(DType::F32).unwrap(), &targets(vec![0.0; 20]), crate::scenario::DTypeName::F32).unwrap(), None);
}

/// The loss of `n` f16 rows of logits [0, 3420] against class 0, as nanhunt computes it.
fn run_half(r: Reduction, n: usize) -> f64 {
    let l = Loss(spec(None, r)).apply(&half_rows(n), &column(&vec![0.0; n]).to_dtype(DType::F16).unwrap()).unwrap();
    l.to_dtype(DType::F64).unwrap().to_scalar().unwrap()
}

/// `n` f16 rows of logits [0, 3420].
fn half_rows(n: usize) -> Tensor {
    Tensor::from_vec([0f32, 3420.0].repeat(n), (n, 2), &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap()
}

/// The loss of `n` f16 rows of logits [0, 3420] against targets `y` (`n` rows), and the gradient
/// of row 0.
fn half_loss(s: &LossSpec, n: usize, y: Tensor) -> (f64, Vec<f64>) {
    let p = Var::from_tensor(&half_rows(n)).unwrap();
    let l = Loss(s.clone()).apply(p.as_tensor(), &y).unwrap();
    assert_eq!(l.dtype(), DType::F16);
    let g = l.backward().unwrap().get(p.as_tensor()).unwrap().to_dtype(DType::F64).unwrap().to_vec2::<f64>().unwrap();
    (l.to_dtype(DType::F64).unwrap().to_scalar().unwrap(), g[0].clone())
}

#[test]
fn one_hot_half_rows_reduce_as_pytorchs_probability_targets() {
    // PyTorch 2.15, p16 = [[0, 3420]] * n, y16 = [[1, 0]] * n (f16): F.cross_entropy(p16, y16) is
    // -(log_softmax(p16) * y16).sum() / n, the sum in f32 rounded to f16 first. n = 20: mean inf
    // (68400 > 65504), sum inf, the gradient of the mean at row 0 [-0.04998779296875,
    // 0.04998779296875]; n = 19: mean 3420 (64992 / 19), sum 64992, gradient ±0.052642822265625;
    // n = 16: mean 3420, sum 54720. With reduction='none' every row is 3420.
    let one_hot = |n: usize| Tensor::from_vec([1f32, 0.0].repeat(n), (n, 2), &Device::Cpu).unwrap().to_dtype(DType::F16).unwrap();
    let (mean, g) = half_loss(&spec(None, Reduction::Mean), 20, one_hot(20));
    assert_eq!((mean, g), (f64::INFINITY, vec![-0.04998779296875, 0.04998779296875]));
    assert_eq!(half_loss(&spec(None, Reduction::Sum), 20, one_hot(20)).0, f64::INFINITY);
    let (mean, g) = half_loss(&spec(None, Reduction::Mean), 19, one_hot(19));
    assert_eq!((mean, g), (3420.0, vec![-0.052642822265625, 0.052642822265625]));
    assert_eq!(half_loss(&spec(None, Reduction::Sum), 19, one_hot(19)).0, 64992.0);
    assert_eq!(half_loss(&spec(None, Reduction::Mean), 16, one_hot(16)).0, 3420.0);
    assert_eq!(half_loss(&spec(None, Reduction::Sum), 16, one_hot(16)).0, 54720.0);
    let rows = crate::ops::loss::kind_elements(&spec(None, Reduction::Mean), &half_rows(20), &one_hot(20)).unwrap().expect("rows");
    assert!(rows.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap().iter().all(|r| *r == 3420.0));
    // With label_smoothing=0.1 the target is [0.95, 0.05]: each term 0.95 · −3420 = −3249 rounds to
    // −3248 in f16, 20 of them 64960, finite: PyTorch 2.15 gives the mean 3248.
    assert_eq!(half_loss(&spec(Some(0.1), Reduction::Mean), 20, one_hot(20)).0, 3248.0);
}

#[test]
fn class_indices_with_label_smoothing_in_half_are_pytorchs() {
    // PyTorch 2.15, p16 = [[0, 3420]] * n, t = zeros(n): F.cross_entropy(p16, t, label_smoothing=0.1)
    // n = 16: mean 3252, sum 52032, reduction='none' 3248 per row; n = 20: mean inf and sum inf
    // (nll_loss's half cascade passes 65504).
    let classes = |n: usize| column(&vec![0.0; n]).to_dtype(DType::F16).unwrap();
    assert_eq!(half_loss(&spec(Some(0.1), Reduction::Mean), 16, classes(16)).0, 3252.0);
    assert_eq!(half_loss(&spec(Some(0.1), Reduction::Sum), 16, classes(16)).0, 52032.0);
    assert_eq!(half_loss(&spec(Some(0.1), Reduction::Mean), 20, classes(20)).0, f64::INFINITY);
    assert_eq!(half_loss(&spec(Some(0.1), Reduction::Sum), 20, classes(20)).0, f64::INFINITY);
    let rows = crate::ops::loss::kind_elements(&spec(Some(0.1), Reduction::Mean), &half_rows(16), &classes(16)).unwrap().expect("rows");
    assert!(rows.to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap().iter().all(|r| *r == 3248.0), "{rows}");
}

#[test]
fn one_hot_half_gradients_are_pytorchs() {
    // PyTorch 2.15, the rows P in f16 against f16 probabilities y (below): F.cross_entropy(p, y)
    // is 0.9853515625 and reduction='sum' 3.94140625, with these gradients wrt p. Its backward
    // reads the rounded log-softmax (`g − exp(out)·Σg`), whose sum of exponentials and its log
    // PyTorch's CPU kernel rounds to f16 (row [2, 1, −3] gives −5.3203125 at class 2, where
    // rounding once gives −5.31640625, and 0.25·exp(out) 0.0012226 rather than 0.0012274):
    // every loss and gradient is PyTorch's bit for bit.
    let y = Tensor::new(&[[0.7f64, 0.2, 0.1], [0.0, 0.0, 1.0], [0.5, 0.25, 0.25], [0.0, 1.0, 0.0]], &Device::Cpu).unwrap();
    let mean = [
        -0.11724853515625,
        0.107177734375,
        0.0100555419921875,
        0.03704833984375,
        0.010101318359375,
        -0.047149658203125,
        -0.041656494140625,
        0.0208282470703125,
        0.0208282470703125,
        0.181884765625,
        -0.18310546875,
        0.0012226104736328125,
    ];
    let sum = [
        -0.468994140625,
        0.4287109375,
        0.04022216796875,
        0.148193359375,
        0.0404052734375,
        -0.1885986328125,
        -0.1666259765625,
        0.08331298828125,
        0.08331298828125,
        0.7275390625,
        -0.732421875,
        0.00489044189453125,
    ];
    for (r, loss, want) in [(Reduction::Mean, 0.9853515625, mean), (Reduction::Sum, 3.94140625, sum)] {
        let (l, g) = run(&spec(None, r), &P, y.clone(), &[4, 3], DType::F16);
        assert_eq!(l, loss);
        assert_eq!(g, want, "{r:?}");
    }
}
