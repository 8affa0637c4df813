//! `logsigmoid`: `log(sigmoid(x))`, as PyTorch's CPU kernel computes it.
//!
//! `F.logsigmoid` is `log_sigmoid_forward`, which returns the output and a
//! buffer, and whose backward is `log_sigmoid_backward(grad, self, buffer)`
//! (`tools/autograd/derivatives.yaml`). The CPU kernels
//! (`aten/src/ATen/native/cpu/Activation.cpp`, `log_sigmoid_cpu_kernel` and
//! `log_sigmoid_backward_cpu_kernel`) use the stable form
//! `min(x, 0) − log1p(e^{−|x|})`, keeping `b = e^{−|x|}` as the buffer, and the
//! gradient `(m − s · b / (1 + b)) · g`, with `m = 1, s = 1` below 0 and
//! `m = 0, s = −1` elsewhere. Neither overflows: at x = −10⁴ the output is −10⁴
//! and the gradient `g`, at +∞ they are 0, at −∞ they are −∞ and `g`. f16 and
//! bf16 compute in f32 and round once, but the buffer is stored in the input's
//! dtype, so the backward reads `b` rounded to f16; here too.

use candle_core::Tensor;

use super::rounding::{Rounding, Unary};
use super::{Autocast, Elementwise, Explained, Facts};
use crate::error::Result;
use crate::scenario::Shape;

/// `log(sigmoid(x))` (`torch.nn.LogSigmoid`); no attributes.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Logsigmoid {}

/// `F.logsigmoid(x)` with PyTorch's CPU kernels forward and backward.
pub(crate) fn logsigmoid(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        // min(x, 0) − log(1 + e^{−|x|}).
        return Ok((x.minimum(0.0)? - x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?);
    }
    Unary { name: "logsigmoid", a: [0.0; 2], r: Rounding::of(x.dtype()), forward, backward }.apply(x)
}

/// The buffer `e^{−|x|}` in the opmath type.
fn buffer(x: f64, r: Rounding) -> f64 {
    (r.opmath)((-x.abs()).exp())
}

fn forward(x: f64, _: [f64; 2], r: Rounding) -> f64 {
    let min = if x < 0.0 || x.is_nan() { x } else { 0.0 };
    r.kernel(min - (r.opmath)(buffer(x, r).ln_1p()))
}

fn backward(g: f64, x: f64, _: [f64; 2], r: Rounding) -> f64 {
    let o = r.opmath;
    // The buffer as the forward stored it, in the input's dtype.
    let b = (r.store)(buffer(x, r));
    let (max_deriv, sign) = if x < 0.0 { (1.0, 1.0) } else { (0.0, -1.0) };
    r.kernel(o(max_deriv - sign * o(b / o(1.0 + b))) * g)
}

impl Elementwise for Logsigmoid {
    fn check(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    fn shape(&self, input: Shape) -> std::result::Result<Shape, String> {
        Ok(input)
    }

    fn held(&self, _input: Shape, output: u128) -> u128 {
        output
    }

    fn levels(&self) -> (u64, u64) {
        // One op (and a contiguous copy), as every elementwise layer; see `run::stack`.
        (4, 0)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        logsigmoid(x)
    }

    fn autocast(&self) -> Autocast {
        // `log_sigmoid` is on none of `autocast_mode.h`'s lists (`log` and `softplus` are
        // on the f32 list, but `F.logsigmoid` calls neither).
        Autocast::Same
    }

    /// None: from a finite input both ways are finite in every dtype (the output lies in
    /// [x − ln 2, 0], the gradient's factor in [0, 1]), so a non-finite value here came in with
    /// the input (−∞ gives −∞, NaN gives NaN, as in PyTorch).
    fn explain_forward(&self, _: &Facts) -> Explained {
        None
    }

    fn explain_backward(&self, _: &Facts) -> Explained {
        None
    }

    fn explain_zeros(&self, _zeros: usize, _n: usize) -> Explained {
        None
    }

    fn torch(&self) -> String {
        "F.logsigmoid(x)".into()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::DType;

    use super::*;
    use crate::ops::rounding::tests::{facts, near_f32, same, same_grad, through};

    const INF: f64 = f64::INFINITY;
    const X: [f64; 14] = [0.0, 1.0, -1.0, 2.5, -2.5, 17.0, -17.0, 100.0, -100.0, 1e4, -1e4, INF, -INF, f64::NAN];
    const G: [f64; 14] = [1.0, -2.0, 0.5, 3.0, 1.0, 1.0, 2.0, 1.0, 1.0, -1.0, 3.0, 1.0, 2.0, 1.0];

    // PyTorch 2.15: x = torch.tensor(X, dtype=dt, requires_grad=True); y = F.logsigmoid(x);
    // y.backward(torch.tensor(G, dtype=dt)); print(y.tolist(), x.grad.tolist())
    const Y_F32: [f64; 14] = [
        -0.6931471824645996,
        -0.3132616877555847,
        -1.3132617473602295,
        -0.07888973504304886,
        -2.578889846801758,
        -4.139937459513021e-08,
        -17.0,
        -3.923635700109488e-44,
        -100.0,
        0.0,
        -10000.0,
        0.0,
        -INF,
        f64::NAN,
    ];
    const DX_F32: [f64; 14] =
        [0.5, -0.5378828644752502, 0.36552929878234863, 0.22757452726364136, 0.9241418242454529, 4.139937459513021e-08, 1.9999998807907104, 3.783505853677006e-44, 1.0, -0.0, 3.0, 0.0, 2.0, f64::NAN];
    const Y_F16: [f64; 14] = [-0.693359375, -0.313232421875, -1.3134765625, -0.07891845703125, -2.578125, -5.960464477539063e-08, -17.0, -0.0, -100.0, 0.0, -10000.0, 0.0, -INF, f64::NAN];
    const DX_F16: [f64; 14] = [0.5, -0.5380859375, 0.365478515625, 0.2275390625, 0.92431640625, 5.960464477539063e-08, 2.0, 0.0, 1.0, -0.0, 3.0, 0.0, 2.0, f64::NAN];
    const Y_BF16: [f64; 14] = [-0.69140625, -0.3125, -1.3125, -0.0791015625, -2.578125, -4.1443854570388794e-08, -17.0, -0.0, -100.0, 0.0, -9984.0, 0.0, -INF, f64::NAN];
    const DX_BF16: [f64; 14] = [0.5, -0.5390625, 0.365234375, 0.2275390625, 0.92578125, 4.1443854570388794e-08, 2.0, 0.0, 1.0, -0.0, 3.0, 0.0, 2.0, f64::NAN];

    #[test]
    fn as_pytorch_computes_it_in_f16_and_bf16() {
        // Computed in f32 and rounded once; the backward reads the buffer e^{−|x|} in f16. At 100
        // the output is −0 in f16 and bf16: −e^{−100}, an f32 subnormal, rounded.
        let (y, dx) = through(logsigmoid, &X, &G, DType::F16);
        same(&y, &Y_F16);
        same_grad(&dx, &DX_F16);
        let (y, dx) = through(logsigmoid, &X, &G, DType::BF16);
        same(&y, &Y_BF16);
        same_grad(&dx, &DX_BF16);
    }

    #[test]
    fn as_pytorch_computes_it_in_f32() {
        // PyTorch's vectorised expf and log1pf (Sleef) are within an ulp of the correctly
        // rounded functions used here; at 100, e^{−100} is subnormal in f32 and they differ
        // more (3.9236e-44 vs 3.7835e-44: a few subnormal steps), so the comparison is in f32 ulps.
        let (y, dx) = through(logsigmoid, &X, &G, DType::F32);
        near_f32(&y, &Y_F32, 4);
        near_f32(&dx, &DX_F32, 4);
        // Large inputs stay finite both ways: the output is x, the gradient g (below 0) or 0.
        assert_eq!((y[10], dx[10], y[9], dx[9]), (-1e4, 3.0, 0.0, 0.0));
    }

    #[test]
    fn nothing_to_explain_a_finite_input_stays_finite() {
        let op = Logsigmoid {};
        assert!(op.explain_forward(&facts(-INF, f64::NAN, DType::F16)).is_none());
        assert!(op.explain_backward(&facts(-60000.0, 60000.0, DType::F16)).is_none());
        // In f16 at the extremes: −65504 gives −65504 (not −∞) and the gradient g.
        let (y, dx) = through(logsigmoid, &[-65504.0, 65504.0], &[65504.0, 65504.0], DType::F16);
        same(&y, &[-65504.0, 0.0]);
        same(&dx, &[65504.0, 0.0]);
        assert_eq!((op.check(), op.torch(), op.autocast()), (vec![], "F.logsigmoid(x)".to_string(), Autocast::Same));
    }
}
