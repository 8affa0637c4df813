//! Autocast: which dtype each node computes in under `train.precision = amp_*`.
//!
//! The lists are PyTorch's CUDA autocast lists (`aten/src/ATen/autocast_mode.h`,
//! `AT_FORALL_LOWER_PRECISION_FP` and `AT_FORALL_FP32`, with `softmax` from
//! `AT_FORALL_FP32_SET_OPT_DTYPE`), where mixed-precision training mostly runs:
//! `linear`, `matmul`/`bmm`, the convolutions and the recurrent cells compute in the
//! low dtype; `softmax`, `layer_norm`, `exp`, `log`, `pow`, `reciprocal`, `softplus`
//! and every loss except a `[loss] expr` (node by node, `ops/expr/amp.rs`) compute in f32. PyTorch's CPU list is shorter (no softmax, norms,
//! exp, log or pow: they run in their input's dtype there); nanhunt follows CUDA's on
//! every device, and the exporter writes each node's class into `repro.py`, which casts by it.
//! The registry's ops give their own class (`Op::autocast`); `policy` answers for the rest.
//! A layer with `precision = "f32"` computes in f32 whatever its op's class (`node_policy`),
//! as PyTorch code that disables autocast around it and casts its input up does.
//! Every other op runs in its input's dtype, and a residual sum of an f32 and a
//! low-precision operand promotes to f32, as PyTorch's type promotion does.
//! `batch_norm`, on no CUDA list (cuDNN keeps its statistics in f32 and returns the
//! input's dtype), computes in f32 here; its output is rounded again by the next
//! matmul, so the values that reach the next low-precision op are the same.
//!
//! On the CPU the low dtype lives in f32 storage: every value PyTorch would hold
//! in the low dtype is rounded to it (`kernel::cast::round`, whose gradient is
//! rounded too, as a half tensor's gradient is a half tensor), so the f32
//! kernels run every layer and no half tensor enters the graph. Each node's
//! *logical* dtype (`logical`) says what PyTorch would hold: a node computing in
//! the low dtype rounds its inputs (its casts) and its output. Recurrent cells
//! and convolutions, which round inside, run on real half tensors instead, and
//! other devices do everything that way; a test holds the two to the same bits.
//! An expression runs on half tensors too, on no list as a whole: it reads each input
//! as a tensor of the dtype it holds, gives each of its nodes its own op's dtype
//! (`ops::expr::amp`), and its output holds its result's dtype (`settle`).

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::ops::{Inner, Rounding};
use crate::run::kernel::cast::round;
use crate::scenario::{Input, Layer, LayerPrecision, Node, Part};

/// Where a node computes under autocast (the registry's ops say it themselves: `Op::autocast`).
pub(crate) type Policy = crate::ops::Autocast;

/// The autocast policy of a node.
pub(crate) fn policy(layer: &Layer, part: Part) -> Policy {
    layer.op().autocast(part)
}

/// The autocast policy of a plan node: f32 where its layer keeps f32 (`precision = "f32"`, as
/// PyTorch code disables autocast around it), else its layer's own.
pub(crate) fn node_policy(node: &Node) -> Policy {
    match node.precision {
        Some(LayerPrecision::F32) => Policy::F32,
        None => policy(&node.layer, node.part),
    }
}

/// `t` in `dtype` (itself if it already is).
pub(crate) fn cast(t: &Tensor, dtype: DType) -> Result<Tensor> {
    crate::run::kernel::cast::cast(t, dtype)
}

/// The dtype a node with `policy` computes in, for an input of dtype `input`.
pub(crate) fn target(policy: Policy, low: DType, input: DType) -> DType {
    match policy {
        Policy::Low => low,
        Policy::F32 => DType::F32,
        Policy::Same => input,
    }
}

/// How autocast's rounding in f32 storage meets a node (the registry's ops say it themselves:
/// `Op::rounding`): layers that round inside (every gate of a recurrent cell, a convolution's
/// own kernels) run on real half tensors even on the CPU; a linear layer and attention's mix
/// round their own weights and output; attention's scores cast their input per projection.
pub(crate) fn rounding(layer: &Layer, part: Part) -> Rounding {
    layer.op().rounding(part)
}

/// The dtype of a sum of operands of dtypes `a` and `b`: the wider (f32 over a half type).
pub(crate) fn promote(a: DType, b: DType) -> DType {
    if a == b {
        a
    } else {
        DType::F32
    }
}

#[cfg(test)]
thread_local! {
    /// Test hook: run autocast on real half tensors on the CPU too, to compare the two.
    pub(crate) static HALF_TENSORS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether autocast keeps the low dtype in f32 storage on this device (the CPU).
pub(crate) fn in_f32_storage(dev: &candle_core::Device) -> bool {
    #[cfg(test)]
    if HALF_TENSORS.with(std::cell::Cell::get) {
        return false;
    }
    dev.is_cpu()
}

/// A node's inputs as autocast prepares them.
pub(super) struct Prepared {
    /// The main input: cast, rounded, or as it came.
    pub(super) input: Tensor,
    /// The parameters, cast or rounded; `None` without autocast (the variables themselves).
    pub(super) params: Option<Vec<Tensor>>,
    /// The low dtype this node's values are rounded to in f32 storage, if any.
    pub(super) round: Option<DType>,
    /// How attention's inner tensors meet autocast.
    pub(super) inner: Inner,
}

impl super::Model {
    /// Prepares `node` (reading `input`; the model's input is of dtype `x`) under autocast, and
    /// pushes its output's logical dtype onto `logical`.
    pub(super) fn prepare(&self, node: &Node, input: &Tensor, x: DType, logical: &mut Vec<DType>) -> Result<Prepared> {
        let Some(low) = self.autocast else { return Ok(Prepared { input: input.clone(), params: None, round: None, inner: Inner::Off }) };
        // A node with parameters on no list (the positional embedding: `x + p`) promotes to its
        // f32 parameters, as PyTorch's type promotion does.
        let policy = match node_policy(node) {
            Policy::Same if !node.params.is_empty() => Policy::F32,
            p => p,
        };
        // An input's logical dtype: what PyTorch holds (f32 storage may hold low values).
        let logical_of = |i: Input| match i {
            Input::Model => x,
            Input::Node(j) => logical.get(j).copied().unwrap_or(DType::F32),
        };
        let li = logical_of(node.input());
        let rounding = rounding(&node.layer, node.part);
        // Attention's scores cast their input per projection (see `attention`).
        let scores = rounding == Rounding::Projections;
        let var = |k: usize| self.params[k].var.as_tensor();
        if !self.rounded || rounding == Rounding::HalfTensors {
            let dt = |d: DType| if d == DType::U32 { d } else { target(policy, low, d) };
            // In f32 storage a low input is a half tensor again here (an expression, on no list,
            // computes from the dtype its input holds).
            let from = if self.rounded { li } else { input.dtype() };
            let input = if scores { input.clone() } else { cast(input, dt(from))? };
            let params = node.params.clone().map(|k| cast(var(k), dt(DType::F32))).collect::<Result<Vec<_>>>()?;
            logical.push(dt(li));
            // A layer kept in f32 (`precision`) casts nothing down inside either.
            let inner = if node.precision.is_some() { Inner::Off } else { Inner::Cast(low) };
            return Ok(Prepared { input, params: Some(params), round: None, inner });
        }
        let computes = match node.part {
            // A sum promotes its operands to the widest.
            Part::Sum => node.inputs.iter().skip(1).fold(li, |d, &i| promote(d, logical_of(i))),
            _ if li == DType::U32 => DType::F32,
            _ => target(policy, low, li),
        };
        // A cast to the low dtype, or a low input's own gradient rounding: needed only where
        // another node reads it too, as a single reader's gradient is rounded by the producer's
        // own output rounding.
        let shared = matches!(node.input(), Input::Node(j) if self.readers[j] > 1);
        let cast_in = (li == low && shared) || (li != low && computes == low && !scores);
        let input = if cast_in { round(input, low)? } else { input.clone() };
        // Linear layers and attention round their weights themselves (`kernel::linear`).
        let own = matches!(rounding, Rounding::Own | Rounding::Projections);
        let params = node.params.clone().map(|k| if computes == low && !own { round(var(k), low) } else { Ok(var(k).clone()) }).collect::<Result<Vec<_>>>()?;
        logical.push(computes);
        let round = (computes == low).then_some(low);
        Ok(Prepared { input, params: Some(params), round, inner: round.map_or(Inner::Off, Inner::Round) })
    }

    /// One of `node`'s inputs after its main one (`input`, whose tensor is `t`), as the node
    /// reads it. For a node the model rounds for ([`Rounding::Outside`]: a residual sum's skip
    /// operand), in f32 storage, a low input that another node reads too gets its own gradient
    /// rounding, as the main input does (see [`Model::prepare`](super::Model)); an op that
    /// rounds its own (attention's mix, per projection) takes it as it comes.
    pub(super) fn operand(&self, node: &Node, input: Input, t: &Tensor, logical: &[DType]) -> Result<Tensor> {
        let Input::Node(j) = input else { return Ok(t.clone()) };
        let how = rounding(&node.layer, node.part);
        match (self.rounded, self.autocast, logical.get(j).copied()) {
            (true, Some(low), Some(l)) if how == Rounding::Outside && l == low && self.readers[j] > 1 => round(t, low),
            // An op on half tensors (an expression reading a named output) reads it as one.
            (true, Some(low), Some(l)) if how == Rounding::HalfTensors && l == low && node.precision.is_none() => cast(t, low),
            _ => Ok(t.clone()),
        }
    }

    /// Node `i`'s output's logical dtype, once it computed `out`: an op on half tensors and on
    /// no list (an expression, whose nodes have their own classes) holds its result's dtype.
    pub(super) fn settle(&self, i: usize, out: &Tensor, logical: &mut [DType]) {
        let node = &self.nodes[i];
        if self.autocast.is_some() && rounding(&node.layer, node.part) == Rounding::HalfTensors && node_policy(node) == Policy::Same {
            if let Some(l) = logical.get_mut(i) {
                *l = out.dtype();
            }
        }
    }

    /// A node's output as the next nodes read it: rounded to `round` in f32 storage (a linear
    /// layer and attention's mix round their own), or a half tensor's back in f32 storage.
    pub(super) fn finish(&self, node: &Node, out: Tensor, to: Option<DType>) -> Result<Tensor> {
        let rounds_itself = rounding(&node.layer, node.part) == Rounding::Own;
        match to {
            Some(low) if !rounds_itself => round(&out, low),
            None if self.rounded && matches!(out.dtype(), DType::F16 | DType::BF16) => cast(&out, DType::F32),
            _ => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::attention::Attention;
    use crate::ops::linear::Linear;
    use crate::ops::residual::Residual;

    #[test]
    fn matmuls_go_low_softmax_and_norms_go_f32_the_rest_keep_their_dtype() {
        assert_eq!(policy(&Layer::Linear(Linear { out: 1, init: None }), Part::Whole), Policy::Low);
        assert_eq!(policy(&Layer::LayerNorm(crate::ops::layer_norm::LayerNorm { eps: 1e-5 }), Part::Whole), Policy::F32);
        assert_eq!(policy(&Layer::Relu(Default::default()), Part::Whole), Policy::Same);
        assert_eq!(target(Policy::Same, DType::F16, DType::F16), DType::F16);
        // Attention's softmax in f32, its products low; a residual sum follows its operands.
        let attention = Layer::Attention(Attention { heads: 1, causal: false, mask_fill: Default::default(), softmax: Default::default() });
        assert_eq!([Part::Scores, Part::Probs, Part::Mix].map(|p| policy(&attention, p)), [Policy::Low, Policy::F32, Policy::Low]);
        assert_eq!(policy(&Layer::Residual(Residual { layers: Vec::new() }), Part::Sum), Policy::Same);
    }

    /// The first value of each output, and the output dtypes, of a model of `layers` (one
    /// input feature) on `x` under f16 autocast, in f32 storage or on half tensors.
    fn under_f16(layers: &[Layer], x: &Tensor, half_tensors: bool) -> (Vec<f32>, Vec<DType>) {
        use crate::run::net::Net;
        use crate::scenario::{plan, InShape, Init, ModelSpec};
        use rand::SeedableRng;
        let dev = candle_core::Device::Cpu;
        HALF_TENSORS.with(|h| h.set(half_tensors));
        let s = ModelSpec { init: Init::Torch, layers: layers.to_vec(), init_scale: 1.0, code: None, onnx: None };
        let p = plan(&s, InShape { features: 1, seq_len: None, vocab: None, image: None }).unwrap();
        let m = super::super::Model::new(&s, &p, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0), DType::F32, &dev).unwrap().with_autocast(Some(DType::F16), &dev);
        let v = m.forward(x, None).unwrap().iter().map(|t| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()[0]).collect();
        HALF_TENSORS.with(|h| h.set(false));
        (v, m.output_dtypes())
    }

    #[test]
    fn a_layer_kept_in_f32_does_not_overflow_where_its_f16_autocast_does() {
        use crate::scenario::{Init, Tagged};
        // 300 · 300 = 90000 > 65504, f16's largest finite value: the product is inf in f16 and
        // exactly 90000 in f32, then / 1000 = 90. PyTorch 2.15: a bias-free nn.Linear(1, 1) of
        // weight 300 on [[300.]] under torch.autocast("cpu", dtype=torch.float16) gives
        // tensor([[inf]], dtype=torch.float16); inside torch.autocast("cpu", enabled=False) on
        // x.float() it gives tensor([[90000.]]).
        let linear = Layer::Linear(Linear { out: 1, init: Some(Init::Constant { value: 300.0 }) });
        let scaled = Layer::Expr(crate::ops::expr::Expr { expr: "x / 1000".into(), consts: Default::default() });
        let keep = Layer::Tagged(Box::new(Tagged { layer: linear.clone(), name: None, precision: Some(LayerPrecision::F32) }));
        let x = Tensor::new(&[[300f32]], &candle_core::Device::Cpu).unwrap();
        for half_tensors in [false, true] {
            assert_eq!(under_f16(&[linear.clone(), scaled.clone()], &x, half_tensors).0, [f32::INFINITY, f32::INFINITY], "half tensors: {half_tensors}");
            assert_eq!(under_f16(&[keep.clone(), scaled.clone()], &x, half_tensors).0, [90000.0, 90.0], "half tensors: {half_tensors}");
        }
    }

    #[test]
    fn an_expression_computes_per_node_under_autocast_and_in_f32_when_kept() {
        use crate::scenario::{Init, Tagged};
        // PyTorch 2.15: a bias-free nn.Linear(1, 1) of weight 1 on [[0.5]] under
        // torch.autocast("cpu", dtype=torch.float16) gives tensor([[0.5]], dtype=torch.float16);
        // then `x*S*S - x*S*S + x` (S = 1000.0) gives tensor([[nan]], dtype=torch.float16)
        // (5e5 is inf in f16), and `torch.exp(x.float())` tensor([[1.6487212181]]) (f32, on
        // CUDA's f32 list; 1.6487212181091309 printed in full). Inside
        // torch.autocast("cpu", enabled=False) on x.float() the cancellation gives tensor([[0.5]]).
        let linear = Layer::Linear(Linear { out: 1, init: Some(Init::Constant { value: 1.0 }) });
        let consts = std::collections::BTreeMap::from([("S".to_string(), 1000.0)]);
        let cancel = Layer::Expr(crate::ops::expr::Expr { expr: "x*S*S - x*S*S + x".into(), consts });
        let exp = Layer::Expr(crate::ops::expr::Expr { expr: "exp(x)".into(), consts: Default::default() });
        let keep = Layer::Tagged(Box::new(Tagged { layer: cancel.clone(), name: None, precision: Some(LayerPrecision::F32) }));
        let x = Tensor::new(&[[0.5f32]], &candle_core::Device::Cpu).unwrap();
        for half_tensors in [false, true] {
            let (v, dtypes) = under_f16(&[linear.clone(), cancel.clone()], &x, half_tensors);
            assert!(v[1].is_nan() && dtypes == [DType::F16, DType::F16], "half tensors: {half_tensors}: {v:?} {dtypes:?}");
            assert_eq!(under_f16(&[linear.clone(), exp.clone()], &x, half_tensors), (vec![0.5, 1.648_721_2], vec![DType::F16, DType::F32]), "half tensors: {half_tensors}");
            assert_eq!(under_f16(&[linear.clone(), keep.clone()], &x, half_tensors), (vec![0.5, 0.5], vec![DType::F16, DType::F32]), "half tensors: {half_tensors}");
        }
    }
}
