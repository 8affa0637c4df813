//! `normalize` against PyTorch 2.15's `F.normalize(x, p, dim=-1, eps)`: values and gradients
//! in f32, f16 and bf16, the norm's summation order, every `p` branch of `norm_backward`, the
//! eps rounding, and the diagnosis hooks.

use candle_core::DType;

use super::*;
use crate::ops::rounding::tests::{facts, near_f32, same, through_shaped};

const INF: f64 = f64::INFINITY;
const NAN: f64 = f64::NAN;

/// F.normalize(x, p, dim=-1, eps) of `x` (rows of `width`) in `dt`, and its gradient against `up`.
fn run(x: &[f64], up: &[f64], width: usize, dt: DType, p: f64, eps: f64) -> (Vec<f64>, Vec<f64>) {
    through_shaped(|x| normalize(x, p, eps), x, up, ((), width), dt)
}

/// A JSON list of numbers written as Python's `repr` strings ("0.1", "nan", "-inf"), as f64:
/// Rust's `parse` rounds them correctly, where serde_json's default float parser may not.
fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|v| v.as_str().unwrap().parse().unwrap()).collect()
}

#[test]
fn rows_as_pytorch_computes_them_in_f32_f16_and_bf16() {
    // PyTorch 2.15, in `pytorch_rows.json`: eight rows of three, in each dtype,
    // x = torch.tensor(X, dtype=torch.float64).to(dt).reshape(8, 3).requires_grad_();
    // y = F.normalize(x, p=2.0, dim=-1, eps=1e-12); y.backward(torch.tensor(UP).to(dt).reshape(8, 3)).
    // The rows: zeros; [3, 4, 0]; [1e-30, 0, 0]; [1e-7, 0, 0]; [60000, 60000, 1]; [big, big, 0]
    // (1e20, and 300 in f16); [inf, 1, 0]; [nan, 1, 2].
    // - f32: a row of zeros is 0 with the gradient g/eps = g·1e12 (the norm's part is masked to
    //   0); 1e-7 alone is 1 with gradient (0, −1e7, 1e7), as clamp_min passes the norm's gradient
    //   (1e-7 > 1e-12); 1e20² overflows the f32 sum, so that row's norm is +∞ and its output 0.
    // - f16: eps = 1e-12 is 0 there, so the zero rows are 0/0 = NaN and their gradient g/0 = ±∞;
    //   1e-7 is stored as 1.19e-7, and its norm's reciprocal overflows: ∞ − ∞ = NaN in the
    //   gradient; 60000s have a finite f32 sum but a norm over 65504: +∞, output 0.
    let fixture: serde_json::Value = serde_json::from_str(include_str!("pytorch_rows.json")).unwrap();
    let up = floats(&fixture["up"]);
    for (name, dt) in [("f32", DType::F32), ("f16", DType::F16), ("bf16", DType::BF16)] {
        let case = &fixture[name];
        let (y, dx) = run(&floats(&case["x"]), &up, 3, dt, 2.0, 1e-12);
        same(&y, &floats(&case["y"]));
        same(&dx, &floats(&case["dx"]));
    }
}

#[test]
fn a_row_of_one_value_takes_the_abs_shortcut_and_sequences_normalize_each_position() {
    // PyTorch 2.15: F.normalize(torch.tensor([[1e20], [0.], [-3.]]), dim=-1) = [1, 0, -1]
    // (vector_norm of one value is |x|, so 1e20 does not overflow), gradient against [2, 5, 1]
    // = [0, 5e12, 0].
    let (y, dx) = run(&[1e20, 0.0, -3.0], &[2.0, 5.0, 1.0], 1, DType::F32, 2.0, 1e-12);
    same(&y, &[1.0, 0.0, -1.0]);
    same(&dx, &[0.0, 4999999913984.0, 0.0]);
    // A (2, 2, 3) sequence, over the last dimension.
    let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0, -1.0, 1.0, 0.5];
    let up = [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 1.0, -1.0, 1.0, 0.5, 0.5, -3.0];
    let (y, dx) = through_shaped(|x| normalize(x, 2.0, 1e-12), &x, &up, (2, 2, 3), DType::F32);
    same(
        &y,
        &[
            0.26726123690605164,
            0.5345224738121033,
            0.8017836809158325,
            0.4558423161506653,
            0.5698028802871704,
            0.6837634444236755,
            0.0,
            0.0,
            0.0,
            -0.6666666865348816,
            0.6666666865348816,
            0.3333333432674408,
        ],
    );
    same(
        &dx,
        &[
            0.15272071957588196,
            0.038180187344551086,
            -0.0763603150844574,
            0.050320252776145935,
            0.005920037627220154,
            -0.038480162620544434,
            999999995904.0,
            -999999995904.0,
            999999995904.0,
            -0.11111113429069519,
            0.7777777910232544,
            -1.7777777910232544,
        ],
    );
}

#[test]
fn f32_norms_sum_in_pytorchs_order() {
    // PyTorch 2.15 (this machine, x86 with AVX-512): v = [f32(sin(0.731 i)·(1 + 3·(i mod 7)))
    // for i < n]; torch.linalg.vector_norm(torch.tensor(v)) for n = 1..=40. 11 of the 40
    // differ from the correctly rounded norm, so the order (eight lanes, then the rest, fused
    // after the first four) is what is checked.
    let want = [
        0.0,
        2.6704578399658203,
        7.453430652618408,
        11.0265531539917,
        11.378090858459473,
        13.828048706054688,
        22.695903778076172,
        22.714513778686523,
        22.777021408081055,
        22.86825180053711,
        24.416622161865234,
        27.555927276611328,
        29.21942901611328,
        29.257125854492188,
        29.266075134277344,
        29.537912368774414,
        30.01885986328125,
        30.05098533630371,
        30.913240432739258,
        34.585880279541016,
        38.462501525878906,
        38.464088439941406,
        38.491844177246094,
        38.99665832519531,
        40.172969818115234,
        40.78948211669922,
        40.8655891418457,
        43.440528869628906,
        43.45201110839844,
        43.54521179199219,
        43.54731369018555,
        43.9876823425293,
        45.815738677978516,
        47.77662658691406,
        48.061790466308594,
        48.063777923583984,
        48.206241607666016,
        48.65475082397461,
        48.887237548828125,
        48.98059844970703,
    ];
    let v: Vec<f64> = (0..40).map(|i| f64::from(((f64::from(i) * 0.731).sin() * (1.0 + f64::from(i % 7) * 3.0)) as f32)).collect();
    let got: Vec<f64> = (1..=40).map(|n| norm::<f32>(&v[..n], 2.0)).collect();
    same(&got, &want);
}

#[test]
fn every_p_branch_of_norm_backward() {
    // PyTorch 2.15, in `pytorch_p.json`: rows [0.5, -2, 0, 1.25] and [3, 0, 0, 0] against
    // [1, 2, -1, 0.5] and [1, -1, 2, 1]; for p in [1.0, 3.0, 0.5, 1.5] and dt in (f32, f16):
    // x = torch.tensor(X, dtype=torch.float64).to(dt).reshape(2, 4).requires_grad_();
    // y = F.normalize(x, p=p, dim=-1, eps=1e-12); y.backward(torch.tensor(G).to(dt).reshape(2, 4)).
    // p = 1 is `sgn(x)·g`, 3 the p > 2 form, 0.5 the p < 1 form (its zero masked), 1.5 the
    // 1 < p < 2 form. f16 exactly; f32 within 2 ulps (PyTorch's powf).
    let cases: serde_json::Value = serde_json::from_str(include_str!("pytorch_p.json")).unwrap();
    let x = [0.5, -2.0, 0.0, 1.25, 3.0, 0.0, 0.0, 0.0];
    let up = [1.0, 2.0, -1.0, 0.5, 1.0, -1.0, 2.0, 1.0];
    let mut ps = Vec::new();
    for c in cases.as_array().unwrap() {
        let p = c["p"].as_f64().unwrap();
        let (y, dx) = run(&x, &up, 4, DType::F32, p, 1e-12);
        near_f32(&y, &floats(&c["y_f32"]), 2);
        near_f32(&dx, &floats(&c["dx_f32"]), 2);
        let (y, dx) = run(&x, &up, 4, DType::F16, p, 1e-12);
        same(&y, &floats(&c["y_f16"]));
        same(&dx, &floats(&c["dx_f16"]));
        ps.push(p);
    }
    assert_eq!(ps, [1.0, 3.0, 0.5, 1.5]);
}

#[test]
fn eps_zero_divides_by_zero_and_a_large_eps_blocks_the_norms_gradient() {
    // PyTorch 2.15, f32, rows [0, 0, 0] and [0.3, 0.1, 0] against [1, 2, 3]:
    // eps = 0: the zero row is NaN, its gradient g/0 = +∞.
    let (y, dx) = run(&[0.0, 0.0, 0.0, 0.3, 0.1, 0.0], &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0], 3, DType::F32, 2.0, 0.0);
    same(&y, &[NAN, NAN, NAN, 0.9486833214759827, 0.3162277638912201, 0.0]);
    same(&dx, &[INF, INF, INF, -1.581139087677002, 4.743416786193848, 9.486832618713379]);
    // eps = 0.5 above the norm 0.316: the divisor is eps, and clamp_min's backward is 0, so the
    // gradient is g / 0.5 alone.
    let (y, dx) = run(&[0.0, 0.0, 0.0, 0.3, 0.1, 0.0], &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0], 3, DType::F32, 2.0, 0.5);
    same(&y, &[0.0, 0.0, 0.0, 0.6000000238418579, 0.20000000298023224, 0.0]);
    same(&dx, &[2.0, 4.0, 6.0, 2.0, 4.0, 6.0]);
}

#[test]
fn the_zero_row_in_f16_is_explained_by_eps_rounding_to_zero() {
    let op = Normalize::default();
    let (rule, reason) = op.explain_forward(&facts(0.0, NAN, DType::F16)).unwrap();
    assert_eq!(rule, Rule::EpsRoundsToZero);
    assert!(reason.contains("rounds to 0 in f16") && reason.contains("0/0"), "{reason}");
    let (rule, reason) = op.explain_backward(&facts(0.0, 2.0, DType::F16)).unwrap();
    assert_eq!(rule, Rule::EpsRoundsToZero);
    assert!(reason.contains("g = 2"), "{reason}");
    // In f32 and bf16 1e-12 is kept: a zero row is 0, and only a gradient over max·eps overflows.
    assert!(op.explain_forward(&facts(0.0, NAN, DType::F32)).is_none());
    assert!(op.explain_forward(&facts(0.0, NAN, DType::BF16)).is_none());
    assert!(op.explain_backward(&facts(0.0, 1.0, DType::F32)).is_none());
    assert_eq!(op.explain_backward(&facts(0.0, 1e30, DType::F32)).unwrap().0, Rule::Overflow);
    // An infinite value: ∞/∞. eps = 0: a division by zero, forward, backward and by zeros read.
    assert_eq!(op.explain_forward(&facts(-INF, NAN, DType::F32)).unwrap().0, Rule::OutsideDomain);
    let zero = Normalize { p: 2.0, eps: 0.0 };
    assert_eq!(zero.explain_forward(&facts(0.0, NAN, DType::F32)).unwrap().0, Rule::DivisionByZero);
    assert_eq!(zero.explain_backward(&facts(0.0, 1.0, DType::F32)).unwrap().0, Rule::DivisionByZero);
    assert_eq!(zero.explain_zeros(3, 6).unwrap().0, Rule::DivisionByZero);
    assert!(op.explain_zeros(3, 6).is_none());
}

#[test]
fn attributes_shapes_and_the_pytorch_line() {
    assert!(Normalize::default().check().is_empty());
    for p in [0.0, -1.0, INF, NAN] {
        assert_eq!(Normalize { p, eps: 1e-12 }.check()[0].0, "p", "{p}");
    }
    for eps in [-1e-12, INF, NAN] {
        assert_eq!(Normalize { p: 2.0, eps }.check()[0].0, "eps", "{eps}");
    }
    let op = Normalize::default();
    assert_eq!(op.shape(Shape::Seq { len: 2, width: 3 }), Ok(Shape::Seq { len: 2, width: 3 }));
    assert!(op.shape(Shape::Image { channels: 1, height: 2, width: 2 }).unwrap_err().contains("flatten"));
    assert_eq!(op.torch(), "F.normalize(x, p=2.0, dim=-1, eps=1e-12)");
    assert_eq!(op.autocast(), Autocast::F32);
}
