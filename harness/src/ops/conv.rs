//! `conv1d` and `conv2d`: convolutions over sequences (the width as channels, as
//! `torch.nn.Conv1d` sees a transposed sequence) and over images (`torch.nn.Conv2d`,
//! square kernel), their kernels kept in PyTorch's layout `(out, in, k)` and
//! `(out, in, k, k)`. The kernel (im2col and one gemm per sample, forward and
//! backward, the forward's columns kept for the backward) is `run::kernel::conv`,
//! reached through `run::model::conv`; half tensors (under autocast too) are computed
//! in f32 and rounded once, as PyTorch's CPU convolution computes bf16 (and f16's
//! forward).

use candle_core::Tensor;

use super::{Autocast, Cx, Op, Rounding, Torch};
use crate::error::Result;
use crate::scenario::{Init, Part, Planner, Role, Shape};

/// Convolution over a sequence `(batch, seq, width)`, the width as channels (`torch.nn.Conv1d`
/// on the transposed sequence): `(batch, seq', channels)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Conv1d {
    /// Output channels.
    pub channels: usize,
    /// Kernel length.
    pub kernel: usize,
    /// Step between windows.
    #[serde(default = "crate::scenario::one_usize")]
    pub stride: usize,
    /// Zeros added at both ends.
    #[serde(default)]
    pub padding: usize,
    /// Override of the model's init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Init>,
}

/// Convolution over images `(batch, channels, height, width)` (`torch.nn.Conv2d`, square kernel).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, arbitrary::Arbitrary)]
#[serde(deny_unknown_fields)]
pub struct Conv2d {
    /// Output channels.
    pub channels: usize,
    /// Kernel height and width.
    pub kernel: usize,
    /// Step between windows.
    #[serde(default = "crate::scenario::one_usize")]
    pub stride: usize,
    /// Zeros added on every side.
    #[serde(default)]
    pub padding: usize,
    /// Override of the model's init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<Init>,
}

impl Op for Conv1d {
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = check(self.channels, self.kernel, self.stride, self.padding);
        problems.extend(super::init_problems(self.init.as_ref()));
        problems
    }

    fn plan(&self, p: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        let Shape::Seq { len, width: w } = input else {
            return Err(format!("a conv1d layer needs sequence input (batch, seq, width), and gets {}", input.describe()));
        };
        let out = conv_len(len, self.kernel, self.stride, self.padding).map_err(|m| format!("{m} (sequence of {len})"))?;
        if self.channels == 0 {
            return Err("`channels` must be at least 1".into());
        }
        params(p, vec![self.channels, w, self.kernel], w.saturating_mul(self.kernel), self.channels.saturating_mul(self.kernel), self.init);
        Ok(Shape::Seq { len: out, width: self.channels })
    }

    /// The output and its transposed copies `3·len'·out`, the input's transposed copy `len·c`,
    /// and the kernel's column buffer, `c·K·len'` (see [`columns`]).
    fn held(&self, input: Shape, output: Shape, values: u128) -> u128 {
        let (Shape::Seq { len, width: c }, Shape::Seq { len: l2, width: o }) = (input, output) else { return values };
        sum(&[product(&[3, u(l2), u(o)]), product(&[u(len), u(c)]), columns(c, self.kernel, 1, u(l2))])
    }

    /// The input's transpose and copy, the kernel's op, the output's squeeze, transpose and
    /// copy, and f32's casts for half tensors (19 measured with a tap, `run::stack::tests`).
    fn levels(&self) -> (u64, u64) {
        (24, 0)
    }

    fn dropout(&self) -> f64 {
        0.0
    }

    fn forward(&self, x: &Tensor, cx: &Cx<'_>) -> Result<Tensor> {
        crate::run::model::conv::conv1d(x, cx.param(0), cx.param(1), self.stride, self.padding, cx.training)
    }

    fn autocast(&self, _: Part) -> Autocast {
        Autocast::Low
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::HalfTensors
    }

    super::undiagnosed!();

    fn torch(&self) -> Torch {
        Torch::Module(format!("(Conv1d(width, {c}, {}, stride={}, padding={}), {c})", self.kernel, self.stride, self.padding, c = self.channels))
    }
}

impl Op for Conv2d {
    fn check(&self) -> Vec<(&'static str, String)> {
        let mut problems = check(self.channels, self.kernel, self.stride, self.padding);
        problems.extend(super::init_problems(self.init.as_ref()));
        problems
    }

    fn plan(&self, p: &mut Planner<'_>, input: Shape) -> std::result::Result<Shape, String> {
        let Shape::Image { channels: c, height, width: w } = input else {
            return Err(format!("a conv2d layer needs images (data.image), and gets {}", input.describe()));
        };
        let h2 = conv_len(height, self.kernel, self.stride, self.padding).map_err(|m| format!("{m} (height {height})"))?;
        let w2 = conv_len(w, self.kernel, self.stride, self.padding).map_err(|m| format!("{m} (width {w})"))?;
        if self.channels == 0 {
            return Err("`channels` must be at least 1".into());
        }
        let (k, k2) = (self.kernel, self.kernel.saturating_mul(self.kernel));
        params(p, vec![self.channels, c, k, k], c.saturating_mul(k2), self.channels.saturating_mul(k2), self.init);
        Ok(Shape::Image { channels: self.channels, height: h2, width: w2 })
    }

    /// The output `out·h'·w'` and the kernel's column buffer `c·K²·h'·w'` (see [`columns`]).
    fn held(&self, input: Shape, output: Shape, values: u128) -> u128 {
        let (Shape::Image { channels: c, .. }, Shape::Image { height: h2, width: w2, .. }) = (input, output) else { return values };
        sum(&[values, columns(c, self.kernel, self.kernel, product(&[u(h2), u(w2)]))])
    }

    /// The kernel's op, and f32's casts for half tensors (12 measured with a tap, `run::stack::tests`).
    fn levels(&self) -> (u64, u64) {
        (16, 0)
    }

    fn dropout(&self) -> f64 {
        0.0
    }

    fn forward(&self, x: &Tensor, cx: &Cx<'_>) -> Result<Tensor> {
        crate::run::model::conv::conv2d(x, cx.param(0), cx.param(1), self.stride, self.padding, cx.training)
    }

    fn autocast(&self, _: Part) -> Autocast {
        Autocast::Low
    }

    fn rounding(&self, _: Part) -> Rounding {
        Rounding::HalfTensors
    }

    super::undiagnosed!();

    fn torch(&self) -> Torch {
        Torch::Module(format!("(nn.Conv2d(width, {c}, {}, stride={}, padding={}), {c})", self.kernel, self.stride, self.padding, c = self.channels))
    }
}

/// A convolution's kernel (`shape`, PyTorch's layout) and bias; both draw from
/// `U(±1/sqrt(in · kernel))` by default, as `torch.nn.Conv1d`/`Conv2d`.
fn params(p: &mut Planner<'_>, shape: Vec<usize>, fan_in: usize, fan_out: usize, init: Option<Init>) {
    let out = shape[0];
    p.param("weight", shape, Role::Conv, (fan_in, fan_out), fan_in, init);
    p.param("bias", vec![out], Role::Bias, (fan_in, fan_out), fan_in, init);
}

/// The values of a convolution's column buffer over `c` channels, a `kh × kw` kernel and
/// `positions` outputs: `c·kh·kw·positions`, one sample's columns. `run::kernel::conv` keeps
/// every sample's from the forward to the backward, which writes the columns' gradient over
/// each sample's once read, so counted once per row (`Op::held`) they are what it holds (in
/// f16 and bf16 the kernel computes in f32, so its columns take twice the bytes counted; the
/// estimate's allowance for gradients and temporaries, four times the values, covers them).
fn columns(c: usize, kh: usize, kw: usize, positions: u128) -> u128 {
    product(&[u(c), u(kh), u(kw), positions])
}

/// A convolution's sizes, within what PyTorch takes: strides are int64 and at least 1 ("non-positive
/// stride is not supported"); a padding is at most int64 max / 2, so the padded size fits ("expected
/// padding to be at most 4611686018427387903", `check_shape_forward` in
/// aten/src/ATen/native/Convolution.cpp). Whether the kernel fits the input is the plan's check.
fn check(channels: usize, kernel: usize, stride: usize, padding: usize) -> Vec<(&'static str, String)> {
    const MAX_STRIDE: usize = i64::MAX as usize;
    let mut out: Vec<(&'static str, String)> = [("channels", channels), ("kernel", kernel)].into_iter().filter(|(_, v)| *v == 0).map(|(k, _)| (k, "must be at least 1".to_string())).collect();
    if !(1..=MAX_STRIDE).contains(&stride) {
        out.push(("stride", format!("must be between 1 and {MAX_STRIDE} (PyTorch's strides are int64 and positive), got {stride}")));
    }
    if padding > MAX_STRIDE / 2 {
        out.push(("padding", format!("must be at most {} (PyTorch: \"expected padding to be at most\" int64 max / 2), got {padding}", MAX_STRIDE / 2)));
    }
    out
}

/// Most positions a convolution's padded input may have along one dimension: the im2col
/// kernels (`run::model::conv`) pick positions by `u32` index.
pub const MAX_PADDED: usize = u32::MAX as usize;

/// The output length of a convolution, or why the kernel does not fit. Validation refuses a
/// stride of 0 and strides or paddings PyTorch refuses ([`Op::check`]); they are errors
/// here too, so the plan never divides by zero or overflows.
fn conv_len(len: usize, kernel: usize, stride: usize, padding: usize) -> std::result::Result<usize, String> {
    if stride == 0 {
        return Err("`stride` must be at least 1".into());
    }
    let padded = padding.checked_mul(2).and_then(|p| p.checked_add(len)).filter(|p| *p <= MAX_PADDED);
    let Some(padded) = padded else {
        return Err(format!("`padding` = {padding} makes the padded input longer than {MAX_PADDED} positions, the most nanhunt's convolutions index"));
    };
    if kernel == 0 || kernel > padded {
        // PyTorch: "Kernel size can't be greater than actual input size".
        return Err(format!("`kernel` = {kernel} must be between 1 and the padded input's {padded}"));
    }
    Ok((padded - kernel) / stride + 1)
}

/// `v` as a count of values.
pub(crate) fn u(v: usize) -> u128 {
    v as u128
}

/// A saturating product of counts.
pub(crate) fn product(factors: &[u128]) -> u128 {
    factors.iter().fold(1, |a, b| a.saturating_mul(*b))
}

/// A saturating sum of counts.
pub(crate) fn sum(terms: &[u128]) -> u128 {
    terms.iter().fold(0, |a, b| a.saturating_add(*b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::flatten::Flatten;
    use crate::ops::seq_pool::MeanPool;
    use crate::scenario::{plan, InShape, Layer, ModelSpec};

    fn spec(layers: Vec<Layer>) -> ModelSpec {
        ModelSpec { init: Init::Torch, layers, init_scale: 1.0, code: None, onnx: None }
    }

    fn c1(stride: usize, padding: usize) -> Conv1d {
        Conv1d { channels: 2, kernel: 3, stride, padding, init: None }
    }

    fn c2(stride: usize, padding: usize) -> Conv2d {
        Conv2d { channels: 2, kernel: 3, stride, padding, init: None }
    }

    const SEQ: InShape = InShape { features: 2, seq_len: Some(8), vocab: None, image: None };
    const IMAGE: InShape = InShape { features: 16, seq_len: None, vocab: None, image: Some((1, 4, 4)) };

    #[test]
    fn kernels_are_pytorch_layout_with_its_fans_and_the_lengths_follow_its_formula() {
        // PyTorch: L' = floor((L + 2p − k) / s) + 1; (8 + 2 − 3) / 2 + 1 = 4. Conv1d(2, 2, 3).weight is (2, 2, 3), fan_in 2·3.
        let p = plan(&spec(vec![Layer::Conv1d(c1(2, 1))]), SEQ).unwrap();
        let got: Vec<_> = p.params.iter().map(|q| (q.name.as_str(), q.shape.clone(), q.role, q.fan_in, q.fan_out, q.torch_fan)).collect();
        assert_eq!(got, [("layers.0.conv1d.weight", vec![2, 2, 3], Role::Conv, 6, 6, 6), ("layers.0.conv1d.bias", vec![2], Role::Bias, 6, 6, 6)]);
        assert_eq!(p.out, Shape::Seq { len: 4, width: 2 });
        // A 4 × 4 image, k = 3, s = 1, p = 1 keeps 4 × 4; Conv2d(1, 2, 3).weight is (2, 1, 3, 3), fan_in 1·9, fan_out 2·9.
        let p = plan(&spec(vec![Layer::Conv2d(c2(1, 1))]), IMAGE).unwrap();
        assert_eq!((p.params[0].shape.clone(), p.params[0].fan_in, p.params[0].fan_out), (vec![2, 1, 3, 3], 9, 18));
        assert_eq!(p.out, Shape::Image { channels: 2, height: 4, width: 4 });
        let err = |l: Layer, input| plan(&spec(vec![l]), input).unwrap_err().1;
        assert_eq!(err(Layer::Conv1d(c1(1, 0)), IMAGE), "a conv1d layer needs sequence input (batch, seq, width), and gets (batch, 1, 4, 4) images");
        assert_eq!(err(Layer::Conv2d(c2(1, 0)), SEQ), "a conv2d layer needs images (data.image), and gets (batch, 8, 2)");
        assert_eq!(err(Layer::Conv1d(Conv1d { kernel: 11, ..c1(1, 0) }), SEQ), "`kernel` = 11 must be between 1 and the padded input's 8 (sequence of 8)");
        assert_eq!(err(Layer::Conv2d(Conv2d { channels: 0, ..c2(1, 0) }), IMAGE), "`channels` must be at least 1");
    }

    #[test]
    fn convolutions_past_u32_positions_are_refused_and_huge_strides_never_overflow() {
        let s1 = |stride, padding| spec(vec![Layer::Conv1d(c1(stride, padding)), Layer::MeanPool(MeanPool {})]);
        let s2 = |stride, padding| spec(vec![Layer::Conv2d(c2(stride, padding)), Layer::Flatten(Flatten {})]);
        // Padding 2³¹ makes 8 + 2³² positions: past the u32 indices the im2col kernels pick with.
        let (key, m) = plan(&s1(1, 1 << 31), SEQ).unwrap_err();
        assert!(key == "layers.0" && m.contains("4294967295"), "{key}: {m}");
        assert!(plan(&s2(1, 1 << 31), IMAGE).unwrap_err().1.contains("4294967295"));
        // The largest values are an error or one window, never an overflow or a division by zero.
        for (stride, padding) in [(usize::MAX, usize::MAX), (0, usize::MAX), (1, usize::MAX), (0, 0)] {
            assert!(plan(&s1(stride, padding), SEQ).is_err() && plan(&s2(stride, padding), IMAGE).is_err());
        }
        let one = plan(&s1(usize::MAX, (u32::MAX as usize - 8) / 2), SEQ).unwrap();
        assert_eq!(one.nodes[0].shape, Shape::Seq { len: 1, width: 2 });
        assert_eq!((one.nodes[0].in_shape, one.nodes[1].in_shape), (SEQ.shape(), one.nodes[0].shape));
        assert_eq!(plan(&s2(usize::MAX, 0), IMAGE).unwrap().nodes[0].shape, Shape::Image { channels: 2, height: 1, width: 1 });
    }

    #[test]
    fn sizes_pytorch_refuses_are_keyed_problems() {
        let max = i64::MAX as usize;
        assert_eq!(c1(1, 0).check(), Vec::new());
        let bad = Conv2d { channels: 0, kernel: 0, stride: 0, padding: max / 2 + 1, init: None }.check();
        let keys: Vec<_> = bad.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["channels", "kernel", "stride", "padding"]);
        assert_eq!(bad[0].1, "must be at least 1");
        assert!(bad[2].1.contains("got 0") && bad[3].1.contains(&format!("got {}", max / 2 + 1)), "{bad:?}");
        assert!(c1(max, max / 2).check().is_empty() && !c1(max + 1, 0).check().is_empty());
        // An init override is checked as linear's is (validation's words).
        let bad = Conv1d { channels: 1, kernel: 1, stride: 1, padding: 0, init: Some(Init::Normal { std: -1.0 }) };
        assert_eq!(bad.check(), vec![("init.std", "must be a finite number ≥ 0, got -1".to_string())]);
    }

    #[test]
    fn memory_counts_the_output_copies_and_each_samples_columns() {
        // Conv1d k = 3, p = 1 over (8, 2) to (4, 2): the output and its two transposed copies
        // 3·4·2, the input's transposed copy 8·2, the columns 2·3·4 = 24 + 16 + 24.
        let (input, output) = (Shape::Seq { len: 8, width: 2 }, Shape::Seq { len: 4, width: 2 });
        assert_eq!(c1(2, 1).held(input, output, 8), 64);
        // Conv2d k = 3, p = 1 over (1, 4, 4) to (2, 4, 4): the output 2·16 and the columns 1·9·16 = 32 + 144.
        let (input, output) = (Shape::Image { channels: 1, height: 4, width: 4 }, Shape::Image { channels: 2, height: 4, width: 4 });
        assert_eq!(c2(1, 1).held(input, output, 32), 176);
        assert_eq!(c2(1, 1).torch(), Torch::Module("(nn.Conv2d(width, 2, 3, stride=1, padding=1), 2)".into()));
    }
}
