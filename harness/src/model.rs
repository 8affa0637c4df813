//! The model: a layer stack built from a [`ModelSpec`], with named parameters
//! initialised from our own seeded RNG (Candle's CPU RNG cannot be seeded).
//!
//! Parameter names are stable and ordered by layer (`layers.0.linear.weight`,
//! `layers.2.rnn.weight_hh`, ...), so iteration never depends on a hash map.
//! [`param_specs`] is the one place that knows each layer's parameters and
//! output width; validation, memory estimates and initialisation all use it.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, Var, D};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::error::Result;
use crate::scenario::{Init, Layer, ModelSpec};

/// The shape of one input row: `features` wide, optionally a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InShape {
    /// Features per row (per time step for sequences).
    pub features: usize,
    /// Sequence length, for recurrent inputs.
    pub seq_len: Option<usize>,
}

/// What a parameter is, which decides its initial values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A weight matrix, stored `(in, out)` like a Keras kernel (PyTorch's `weight` is its transpose),
    /// so the forward pass needs no transpose and its gradient arrives contiguous.
    Weight,
    /// A recurrent weight matrix `(hidden, hidden)`.
    Recurrent,
    /// A bias vector.
    Bias,
    /// A layer-norm gain (starts at one).
    Gain,
    /// A layer-norm shift (starts at zero).
    Shift,
}

/// Name, shape and initialisation of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// Stable dotted name.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// What it is.
    pub role: Role,
    /// Fan-in of the layer.
    pub fan_in: usize,
    /// Fan-out of the layer.
    pub fan_out: usize,
    /// PyTorch's default init draws from `U(±1/sqrt(torch_fan))`: fan-in for linear, hidden size for RNN.
    pub torch_fan: usize,
    /// The initialisation in force for it.
    pub init: Init,
}

/// The static shape of a model: its parameters, layer names and widths.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Parameters in layer order.
    pub params: Vec<ParamSpec>,
    /// `layers.{i}.{type}` for each layer.
    pub layer_names: Vec<String>,
    /// Last-dimension width of each layer's output.
    pub widths: Vec<usize>,
    /// Width of the model's output (the input width for an empty stack).
    pub out_width: usize,
}

/// The snake_case type name of a layer, as written in scenario files.
pub fn layer_type(layer: &Layer) -> &'static str {
    match layer {
        Layer::Linear { .. } => "linear",
        Layer::Rnn { .. } => "rnn",
        Layer::Relu => "relu",
        Layer::Sigmoid => "sigmoid",
        Layer::Tanh => "tanh",
        Layer::Gelu => "gelu",
        Layer::Softplus => "softplus",
        Layer::Identity => "identity",
        Layer::LayerNorm { .. } => "layer_norm",
        Layer::Softmax => "softmax",
        Layer::Sqrt => "sqrt",
        Layer::Log => "log",
        Layer::Reciprocal => "reciprocal",
        Layer::Abs => "abs",
        Layer::Exp => "exp",
        Layer::Pow { .. } => "pow",
        Layer::FlawedSquare => "flawed_square",
    }
}

/// Works out parameter shapes and layer widths, or says which layer does not fit (`(index, message)`).
pub fn plan(spec: &ModelSpec, input: InShape) -> std::result::Result<Plan, (usize, String)> {
    let mut params = Vec::new();
    let mut layer_names = Vec::new();
    let mut widths = Vec::new();
    let mut width = input.features;
    let mut sequence = input.seq_len.is_some();
    for (i, layer) in spec.layers.iter().enumerate() {
        let name = format!("layers.{i}.{}", layer_type(layer));
        let torch_fan = match layer {
            Layer::Rnn { hidden, .. } => *hidden,
            _ => width,
        };
        let mut add = |p: &str, shape: Vec<usize>, role, fan_in, fan_out, init: Option<Init>| {
            let init = init.unwrap_or(spec.init);
            params.push(ParamSpec { name: format!("{name}.{p}"), shape, role, fan_in, fan_out, torch_fan, init });
        };
        match layer {
            Layer::Linear { out, init } => {
                if sequence {
                    return Err((i, "a linear layer cannot take sequence input: put an rnn layer first".into()));
                }
                if *out == 0 {
                    return Err((i, "`out` must be at least 1".into()));
                }
                add("weight", vec![width, *out], Role::Weight, width, *out, *init);
                add("bias", vec![*out], Role::Bias, width, *out, *init);
                width = *out;
            }
            Layer::Rnn { hidden, init } => {
                if !sequence {
                    return Err((i, "an rnn layer needs sequence input: set `data.seq_len`".into()));
                }
                if *hidden == 0 {
                    return Err((i, "`hidden` must be at least 1".into()));
                }
                let h = *hidden;
                add("weight_ih", vec![width, h], Role::Weight, width, h, *init);
                add("weight_hh", vec![h, h], Role::Recurrent, h, h, *init);
                add("bias_ih", vec![h], Role::Bias, h, h, *init);
                add("bias_hh", vec![h], Role::Bias, h, h, *init);
                width = h;
                sequence = false;
            }
            Layer::LayerNorm { eps } => {
                if !(eps.is_finite() && *eps > 0.0) {
                    return Err((i, "layer norm `eps` must be positive".into()));
                }
                add("weight", vec![width], Role::Gain, width, width, None);
                add("bias", vec![width], Role::Shift, width, width, None);
            }
            _ => {}
        }
        layer_names.push(name);
        widths.push(width);
    }
    if sequence {
        return Err((spec.layers.len(), "the model's output is still a sequence: add an rnn layer".into()));
    }
    Ok(Plan { params, layer_names, widths, out_width: width })
}

/// A named trainable tensor.
#[derive(Debug, Clone)]
pub struct Param {
    /// Stable dotted name.
    pub name: String,
    /// The variable.
    pub var: Var,
}

/// A built model: layers plus their parameters.
#[derive(Debug)]
pub struct Model {
    layers: Vec<Layer>,
    /// Index of each layer's first parameter in `params`.
    first_param: Vec<usize>,
    /// The model's static shape.
    pub plan: Plan,
    /// The parameters, in plan order.
    pub params: Vec<Param>,
}

impl Model {
    /// Builds and initialises a model from `rng` (used in parameter order).
    pub fn new(spec: &ModelSpec, plan: Plan, rng: &mut ChaCha8Rng, dtype: DType, dev: &Device) -> Result<Self> {
        let mut params = Vec::with_capacity(plan.params.len());
        for p in &plan.params {
            let mut values = init_values(p, rng);
            if spec.init_scale != 1.0 && !matches!(p.role, Role::Gain | Role::Shift) {
                values.iter_mut().for_each(|v| *v *= spec.init_scale);
            }
            let t = Tensor::from_vec(values, p.shape.as_slice(), dev)?.to_dtype(dtype)?;
            params.push(Param { name: p.name.clone(), var: Var::from_tensor(&t)? });
        }
        let mut first_param = Vec::with_capacity(spec.layers.len());
        let mut next = 0;
        for layer in &spec.layers {
            first_param.push(next);
            next += match layer {
                Layer::Linear { .. } | Layer::LayerNorm { .. } => 2,
                Layer::Rnn { .. } => 4,
                _ => 0,
            };
        }
        Ok(Model { layers: spec.layers.clone(), first_param, plan, params })
    }

    /// Runs the stack and returns every layer's output, in order.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut outs: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let h = outs.last().unwrap_or(x);
            let p = |k: usize| self.params[self.first_param[i] + k].var.as_tensor();
            outs.push(apply(layer, h, &p)?);
        }
        Ok(outs)
    }
}

fn apply<'a>(layer: &Layer, h: &Tensor, p: &dyn Fn(usize) -> &'a Tensor) -> Result<Tensor> {
    Ok(match layer {
        Layer::Linear { .. } => (h.matmul(p(0))? + add_bias(h, p(1))?)?,
        Layer::Rnn { hidden, .. } => rnn(h, p(0), p(1), p(2), p(3), *hidden)?,
        Layer::Relu => h.relu()?,
        Layer::Sigmoid => candle_nn::ops::sigmoid(h)?,
        Layer::Tanh => h.tanh()?,
        Layer::Gelu => h.gelu_erf()?,
        Layer::Softplus => {
            // PyTorch: x above the threshold 20 passes through. Clamping before exp keeps
            // the unused branch finite, so its gradient does not turn into 0 * inf.
            let soft = h.minimum(20.0)?.exp()?.affine(1.0, 1.0)?.log()?;
            h.gt(20.0)?.where_cond(h, &soft)?
        }
        Layer::Identity => h.clone(),
        Layer::LayerNorm { eps } => {
            let mean = h.mean_keepdim(D::Minus1)?;
            let centred = h.broadcast_sub(&mean)?;
            let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
            let normed = centred.broadcast_div(&var.affine(1.0, *eps)?.sqrt()?)?;
            normed.broadcast_mul(p(0))?.broadcast_add(p(1))?
        }
        Layer::Softmax => {
            let max = h.max_keepdim(D::Minus1)?.detach();
            let e = h.broadcast_sub(&max)?.exp()?;
            e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?
        }
        Layer::Sqrt => h.sqrt()?,
        Layer::Log => h.log()?,
        Layer::Reciprocal => h.recip()?,
        Layer::Abs => h.abs()?,
        Layer::Exp => h.exp()?,
        Layer::Pow { exponent } => h.powf(*exponent)?,
        Layer::FlawedSquare => h.contiguous()?.apply_op1(FlawedSquare)?,
    })
}

/// The bias broadcast over the rows of `h`, as the product `ones(rows, 1) · bias(1, out)`.
///
/// Equal to a broadcast add, but its backward pass is a small matrix product
/// instead of Candle's strided sum over the batch dimension, which dominated
/// the step time of small models.
fn add_bias(h: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let rows = h.dims()[0];
    let ones = Tensor::ones((rows, 1), bias.dtype(), bias.device())?;
    Ok(ones.matmul(&bias.unsqueeze(0)?)?)
}

/// Elman RNN over `(batch, seq, features)`: `h = tanh(x W_ih + b_ih + h W_hh + b_hh)`, last `h` out.
fn rnn(x: &Tensor, w_ih: &Tensor, w_hh: &Tensor, b_ih: &Tensor, b_hh: &Tensor, hidden: usize) -> Result<Tensor> {
    let (b, seq, f) = x.dims3()?;
    // The input projection of every time step at once.
    let flat = x.reshape((b * seq, f))?;
    let xw = ((flat.matmul(w_ih)? + add_bias(&flat, b_ih)?)? + add_bias(&flat, b_hh)?)?;
    let xw = xw.reshape((b, seq, hidden))?;
    let mut h = xw.narrow(1, 0, 1)?.squeeze(1)?.tanh()?;
    for t in 1..seq {
        h = (xw.narrow(1, t, 1)?.squeeze(1)? + h.matmul(w_hh)?)?.tanh()?;
    }
    Ok(h)
}

/// Initial values of one parameter, drawn in row-major order.
fn init_values(p: &ParamSpec, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let n: usize = p.shape.iter().product();
    let uniform = |rng: &mut ChaCha8Rng, bound: f64| -> Vec<f64> {
        (0..n).map(|_| rng.random_range(-1.0..1.0) * bound).collect()
    };
    match (p.role, p.init) {
        (Role::Gain, _) => vec![1.0; n],
        (Role::Shift, _) => vec![0.0; n],
        // torch: kaiming_uniform(a = sqrt(5)) gives bound 1/sqrt(fan_in); nn.RNN uses 1/sqrt(hidden).
        (_, Init::Torch) => uniform(rng, 1.0 / (p.torch_fan as f64).sqrt()),
        (Role::Bias, _) => vec![0.0; n],
        (Role::Weight, Init::Keras) => uniform(rng, (6.0 / (p.fan_in + p.fan_out) as f64).sqrt()),
        (Role::Recurrent, Init::Keras) => orthogonal(p.shape[0], rng),
        (_, Init::Normal { std }) => (0..n).map(|_| normal(rng) * std).collect(),
        (_, Init::Uniform { bound }) => uniform(rng, bound),
        (_, Init::Constant { value }) => vec![value; n],
    }
}

/// A standard normal draw.
pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// A random orthogonal `n × n` matrix (Gram–Schmidt on normal draws), as Keras's `Orthogonal`.
fn orthogonal(n: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut rows: Vec<Vec<f64>> = Vec::with_capacity(n);
    while rows.len() < n {
        let mut v: Vec<f64> = (0..n).map(|_| normal(rng)).collect();
        for r in &rows {
            let dot: f64 = v.iter().zip(r).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(r).for_each(|(a, b)| *a -= dot * b);
        }
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm > 1e-6 {
            rows.push(v.into_iter().map(|a| a / norm).collect());
        }
    }
    rows.concat()
}

/// `x²` with the flawed backward of seed 002 ex3: `grad_out / 0.0`.
struct FlawedSquare;

impl CustomOp1 for FlawedSquare {
    fn name(&self) -> &'static str {
        "flawed-square"
    }

    fn cpu_fwd(&self, s: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        fn sq<T: Copy + std::ops::Mul<Output = T>>(v: &[T], (a, b): (usize, usize)) -> Vec<T> {
            v[a..b].iter().map(|x| *x * *x).collect()
        }
        let Some(l) = layout.contiguous_offsets() else {
            candle_core::bail!("flawed_square: input must be contiguous")
        };
        let out = match s {
            CpuStorage::F32(v) => CpuStorage::F32(sq(v, l)),
            CpuStorage::F64(v) => CpuStorage::F64(sq(v, l)),
            CpuStorage::F16(v) => CpuStorage::F16(sq(v, l)),
            CpuStorage::BF16(v) => CpuStorage::BF16(sq(v, l)),
            _ => candle_core::bail!("flawed_square: unsupported dtype"),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.div(&grad_res.zeros_like()?)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ModelSpec;
    use rand::SeedableRng;

    fn spec(layers: Vec<Layer>) -> ModelSpec {
        ModelSpec { init: Init::Torch, layers, init_scale: 1.0 }
    }

    #[test]
    fn plan_names_and_shapes() {
        let s = spec(vec![Layer::Linear { out: 4, init: None }, Layer::Relu, Layer::Linear { out: 1, init: None }]);
        let p = plan(&s, InShape { features: 3, seq_len: None }).unwrap();
        let names: Vec<_> = p.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["layers.0.linear.weight", "layers.0.linear.bias", "layers.2.linear.weight", "layers.2.linear.bias"]);
        assert_eq!(p.params[0].shape, vec![3, 4]);
        assert_eq!(p.widths, vec![4, 4, 1]);
    }

    #[test]
    fn plan_rejects_misplaced_layers() {
        let seq = InShape { features: 1, seq_len: Some(5) };
        assert!(plan(&spec(vec![Layer::Linear { out: 1, init: None }]), seq).is_err());
        assert!(plan(&spec(vec![Layer::Rnn { hidden: 2, init: None }]), InShape { features: 1, seq_len: None }).is_err());
        assert!(plan(&spec(vec![Layer::Tanh]), seq).is_err());
    }

    #[test]
    fn orthogonal_rows_are_orthonormal() {
        let m = orthogonal(5, &mut ChaCha8Rng::seed_from_u64(1));
        for i in 0..5 {
            for j in 0..5 {
                let dot: f64 = (0..5).map(|k| m[i * 5 + k] * m[j * 5 + k]).sum();
                assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn rnn_matches_hand_computation() {
        // One hidden unit, weights 0.5: h1 = tanh(0.5*1 + 0 + 0) ; h2 = tanh(0.5*2 + 0.5*h1).
        let s = ModelSpec { init: Init::Constant { value: 0.5 }, layers: vec![Layer::Rnn { hidden: 1, init: None }], init_scale: 1.0 };
        let shape = InShape { features: 1, seq_len: Some(2) };
        let m = Model::new(&s, plan(&s, shape).unwrap(), &mut ChaCha8Rng::seed_from_u64(0), DType::F64, &Device::Cpu).unwrap();
        let x = Tensor::new(&[[[1.0f64], [2.0]]], &Device::Cpu).unwrap();
        let out = m.forward(&x).unwrap()[0].flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let h1 = 0.5f64.tanh();
        assert!((out[0] - (1.0 + 0.5 * h1).tanh()).abs() < 1e-15);
    }

    #[test]
    fn flawed_square_forward_is_square_and_backward_is_nonfinite() {
        let x = Var::new(&[3.0f32, -2.0], &Device::Cpu).unwrap();
        let y = x.as_tensor().apply_op1(FlawedSquare).unwrap();
        assert_eq!(y.to_vec1::<f32>().unwrap(), vec![9.0, 4.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert!(gx.iter().all(|v| v.is_infinite()));
    }
}
