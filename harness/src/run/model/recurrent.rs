//! The recurrent kernels of the registry's `rnn`, `lstm` and `gru` (`ops::rnn`,
//! `ops::gated`): the Elman RNN (Keras `SimpleRNN`, torch `nn.RNN` with tanh),
//! returning the last hidden state, and the gated LSTM and GRU with PyTorch's gate
//! formulas (`torch.nn.LSTM`, `torch.nn.GRU` on CPU: the input projection of every
//! step at once, then per step the recurrent product, the gates and the state update,
//! in PyTorch's order of operations), Keras's `activation` and `recurrent_dropout`,
//! and `return_sequences`.

use candle_core::{Tensor, D};

use crate::error::Result;
use crate::run::kernel::bias::bias_add;
use crate::scenario::RnnActivation;

/// A gated RNN's weights `(W_ih, W_hh, b_ih, b_hh)`, stored `(in, gates·H)` and `(H, gates·H)`.
pub(crate) type Gates<'a> = (&'a Tensor, &'a Tensor, &'a Tensor, &'a Tensor);

/// How a gated RNN runs: its activation, whether it returns every state, and the recurrent
/// dropout mask `(batch, H)` (already scaled by `1/(1 − p)`) applied to the state fed back.
pub(crate) struct Run<'a> {
    /// The candidate's activation.
    pub activation: RnnActivation,
    /// Return every state, not just the last.
    pub sequences: bool,
    /// The recurrent dropout mask, if the step draws one.
    pub dropout: Option<&'a Tensor>,
}

fn act(a: RnnActivation, t: &Tensor) -> Result<Tensor> {
    Ok(match a {
        RnnActivation::Tanh => t.tanh()?,
        RnnActivation::Relu => crate::run::kernel::relu::relu(t)?,
    })
}

/// The input gates of every step at once, `(batch, seq, gates·H)`: `x W_ih + b_ih`.
fn input_gates(x: &Tensor, w_ih: &Tensor, b_ih: &Tensor) -> Result<Tensor> {
    let (b, seq, f) = x.dims3()?;
    let flat = x.reshape((b * seq, f))?;
    Ok(bias_add(&flat.matmul(w_ih)?, b_ih)?.reshape((b, seq, w_ih.dims()[1]))?)
}

/// The recurrent gates `h W_hh + b_hh`, with the dropout mask on `h`.
fn hidden_gates(h: &Tensor, w_hh: &Tensor, b_hh: &Tensor, dropout: Option<&Tensor>) -> Result<Tensor> {
    let h = match dropout {
        Some(m) => h.mul(m)?,
        None => h.clone(),
    };
    bias_add(&h.matmul(w_hh)?, b_hh)
}

/// The last state, or every state as `(batch, seq, H)`.
fn output(states: Vec<Tensor>, sequences: bool) -> Result<Tensor> {
    Ok(if sequences { Tensor::stack(&states, 1)? } else { states.last().cloned().ok_or_else(|| candle_core::Error::Msg("an empty sequence".into()))? })
}

/// LSTM over `(batch, seq, features)`, zero initial state: `i, f, g, o = chunk(gi + gh, 4)`,
/// `c = σ(f)·c + σ(i)·act(g)`, `h = σ(o)·act(c)` (PyTorch's `LSTMCell`, act = tanh).
pub(crate) fn lstm(x: &Tensor, (w_ih, w_hh, b_ih, b_hh): Gates, hidden: usize, run: &Run) -> Result<Tensor> {
    let (b, seq, _) = x.dims3()?;
    let gi = input_gates(x, w_ih, b_ih)?;
    let mut h = Tensor::zeros((b, hidden), x.dtype(), x.device())?;
    let mut c = h.clone();
    let mut states = Vec::with_capacity(if run.sequences { seq } else { 1 });
    for t in 0..seq {
        let gates = (gi.narrow(1, t, 1)?.squeeze(1)? + hidden_gates(&h, w_hh, b_hh, run.dropout)?)?;
        let chunk = |k: usize| gates.narrow(D::Minus1, k * hidden, hidden);
        let (i, f) = (candle_nn::ops::sigmoid(&chunk(0)?)?, candle_nn::ops::sigmoid(&chunk(1)?)?);
        let (g, o) = (act(run.activation, &chunk(2)?)?, candle_nn::ops::sigmoid(&chunk(3)?)?);
        c = (f.mul(&c)? + i.mul(&g)?)?;
        h = o.mul(&act(run.activation, &c)?)?;
        if run.sequences || t + 1 == seq {
            states.push(h.clone());
        }
    }
    output(states, run.sequences)
}

/// GRU over `(batch, seq, features)`, zero initial state: `r = σ(gi_r + gh_r)`,
/// `z = σ(gi_z + gh_z)`, `n = act(gi_n + r·gh_n)`, `h = n + z·(h − n)` (PyTorch's `GRUCell`).
pub(crate) fn gru(x: &Tensor, (w_ih, w_hh, b_ih, b_hh): Gates, hidden: usize, run: &Run) -> Result<Tensor> {
    let (b, seq, _) = x.dims3()?;
    let gi = input_gates(x, w_ih, b_ih)?;
    let mut h = Tensor::zeros((b, hidden), x.dtype(), x.device())?;
    let mut states = Vec::with_capacity(if run.sequences { seq } else { 1 });
    for t in 0..seq {
        let (i, g) = (gi.narrow(1, t, 1)?.squeeze(1)?, hidden_gates(&h, w_hh, b_hh, run.dropout)?);
        let part = |t: &Tensor, k: usize| t.narrow(D::Minus1, k * hidden, hidden);
        let r = candle_nn::ops::sigmoid(&(part(&i, 0)? + part(&g, 0)?)?)?;
        let z = candle_nn::ops::sigmoid(&(part(&i, 1)? + part(&g, 1)?)?)?;
        let n = act(run.activation, &(part(&i, 2)? + r.mul(&part(&g, 2)?)?)?)?;
        h = (&n + z.mul(&(h - &n)?)?)?;
        if run.sequences || t + 1 == seq {
            states.push(h.clone());
        }
    }
    output(states, run.sequences)
}

/// Elman RNN over `(batch, seq, features)`: `h = tanh(x W_ih + b_ih + h W_hh + b_hh)`, last `h` out.
pub(crate) fn rnn(x: &Tensor, w_ih: &Tensor, w_hh: &Tensor, b_ih: &Tensor, b_hh: &Tensor, hidden: usize) -> Result<Tensor> {
    let (b, seq, f) = x.dims3()?;
    // The input projection of every time step at once.
    let flat = x.reshape((b * seq, f))?;
    let xw = bias_add(&bias_add(&flat.matmul(w_ih)?, b_ih)?, b_hh)?;
    let xw = xw.reshape((b, seq, hidden))?;
    let mut h = xw.narrow(1, 0, 1)?.squeeze(1)?.tanh()?;
    for t in 1..seq {
        h = (xw.narrow(1, t, 1)?.squeeze(1)? + h.matmul(w_hh)?)?.tanh()?;
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use crate::ops::gated::{Gru, Lstm};
    use crate::ops::rnn::Rnn;
    use crate::run::model::Model;
    use crate::run::net::Net;
    use crate::scenario::{plan, InShape, Init, Layer, ModelSpec, RnnActivation};

    #[test]
    fn rnn_matches_hand_computation() {
        // One hidden unit, weights 0.5: h1 = tanh(0.5*1 + 0 + 0) ; h2 = tanh(0.5*2 + 0.5*h1).
        let s = ModelSpec { init: Init::Constant { value: 0.5 }, layers: vec![Layer::Rnn(Rnn { hidden: 1, init: None })], init_scale: 1.0, code: None, onnx: None };
        let shape = InShape { features: 1, seq_len: Some(2), vocab: None, image: None };
        let m = Model::new(&s, &plan(&s, shape).unwrap(), &mut ChaCha8Rng::seed_from_u64(0), DType::F64, &Device::Cpu).unwrap();
        let x = Tensor::new(&[[[1.0f64], [2.0]]], &Device::Cpu).unwrap();
        let out = m.forward(&x, None).unwrap()[0].flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let h1 = 0.5f64.tanh();
        assert!((out[0] - (1.0 + 0.5 * h1).tanh()).abs() < 1e-15);
    }

    /// Runs a one-layer `lstm` or `gru` (input 2, hidden 3, every state returned) with the
    /// weights of the snippet below; returns the output and the gradients of `sum(out²) / 2`
    /// for `weight_ih` (nanhunt's `(in, gates·H)` layout) and `bias_hh`.
    fn gated(layer: Layer) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let dev = Device::Cpu;
        let gates = if matches!(layer, Layer::Lstm(_)) { 4 } else { 3 };
        let s = ModelSpec { init: Init::Torch, layers: vec![layer], init_scale: 1.0, code: None, onnx: None };
        let m = Model::new(&s, &plan(&s, InShape { features: 2, seq_len: Some(3), vocab: None, image: None }).unwrap(), &mut ChaCha8Rng::seed_from_u64(0), DType::F64, &dev).unwrap();
        let g = gates * 3;
        let values: [Vec<f64>; 4] = [
            (0..2 * g).map(|k| 0.4 * (1.0 + k as f64).sin()).collect(),
            (0..3 * g).map(|k| 0.4 * (2.0 + k as f64).sin()).collect(),
            (0..g).map(|j| 0.1 * (3.0 + j as f64).cos()).collect(),
            (0..g).map(|j| 0.1 * (4.0 + j as f64).cos()).collect(),
        ];
        for (p, v) in m.params.iter().zip(values) {
            p.var.set(&Tensor::from_vec(v, p.var.dims(), &dev).unwrap()).unwrap();
        }
        let x: Vec<f64> = (0..12).map(|i| ((i / 6) as f64 * 7.0 + ((i / 2) % 3) as f64 * 3.0 + (i % 2) as f64 + 0.3).sin()).collect();
        let out = m.forward(&Tensor::from_vec(x, (2, 3, 2), &dev).unwrap(), None).unwrap().pop().unwrap();
        let grads = (out.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap().backward().unwrap();
        let g = |k: usize| grads.get(m.params[k].var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        (out.flatten_all().unwrap().to_vec1().unwrap(), g(0), g(3))
    }

    fn close(got: &[f64], want: &[f64]) {
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() < 1e-14, "[{i}]: {a} vs PyTorch {b}");
        }
    }

    /// PyTorch 2.15, f64, `torch.nn.LSTM(2, 3, batch_first=True)` and `torch.nn.GRU(2, 3, ...)`
    /// with `x[b][t][f] = sin(7b + 3t + f + 0.3)`; in nanhunt's layout `weight_ih[i][j] =
    /// 0.4 sin(1 + i·gH + j)`, `weight_hh[i][j] = 0.4 sin(2 + i·gH + j)` (PyTorch's are the
    /// transposes), `bias_ih[j] = 0.1 cos(3 + j)`, `bias_hh[j] = 0.1 cos(4 + j)`; loss
    /// `(out ** 2).sum() / 2` over every state; printed `out`, `weight_ih_l0.grad.T`, `bias_hh_l0.grad`.
    #[test]
    fn lstm_and_gru_match_pytorch_modules() {
        let lstm = Layer::Lstm(Lstm { hidden: 3, return_sequences: true, activation: RnnActivation::Tanh, recurrent_dropout: 0.0, init: None });
        let (out, g_ih, g_bhh) = gated(lstm);
        close(&out[..4], &[-0.010927692423947812, 0.09182227653899772, 0.09561096197075072, -0.05610021347383189]);
        close(&out[15..], &[-0.009333074008529028, 0.1199854743336036, 0.10595333714334991]);
        close(&g_ih[..4], &[-0.0026284564623687795, 0.01241221237182092, 0.010493039248834074, 0.00040923780118148456]);
        close(&g_ih[20..], &[0.05337848408975897, -0.0005726534643673511, 0.02256940394003408, 0.02247023023913737]);
        close(&g_bhh[6..9], &[-0.08008778569228331, 0.08430874691756665, 0.10049698000830791]);
        let gru = Layer::Gru(Gru { hidden: 3, return_sequences: true, activation: RnnActivation::Tanh, recurrent_dropout: 0.0, init: None });
        let (out, g_ih, g_bhh) = gated(gru);
        close(&out[..4], &[-0.06997554113687136, -0.1360171211049035, -0.09293529877482087, -0.07011257856543635]);
        close(&out[15..], &[-0.08327614803517847, -0.10185241741025161, -0.013841113988291617]);
        close(&g_ih[12..], &[-0.002822519760494956, -0.026768610851787333, 0.007934908548783256, -0.07457295136198192, -0.11151638326634626, -0.14193009810861784]);
        close(
            &g_bhh,
            &[
                0.007539128501092697,
                -0.0005457841081759617,
                0.0006390347861511166,
                -0.019256469479029675,
                -0.02634375724168944,
                -0.020581694844499364,
                -0.1629076956440687,
                -0.09741211860356572,
                0.02993845364242327,
            ],
        );
    }
}
