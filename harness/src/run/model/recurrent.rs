//! The recurrent kernels of the registry's `rnn`, `lstm` and `gru` (`ops::rnn`,
//! `ops::gated`): the Elman RNN (Keras `SimpleRNN`, torch `nn.RNN` with tanh),
//! returning the last hidden state, and the gated LSTM and GRU with PyTorch's gate
//! formulas (`torch.nn.LSTM`, `torch.nn.GRU` on CPU: the input projection of every
//! step at once, then per step the recurrent product, the gates and the state update,
//! in PyTorch's order of operations), Keras's `activation` and `recurrent_dropout`,
//! and `return_sequences`.
//!
//! On the CPU the recurrence after the input projection is one fused op
//! (`run::kernel::recurrent`): in f32 and f64 with the bits composed here but for the recurrent
//! weights' and a gated cell's recurrent bias's gradients, one product over every step
//! (`recurrent_gemm::weights_grad`; PyTorch's f32 `nn.LSTM` runs oneDNN, in an order of its
//! own, and its RNN and GRU sum per step), in f16 and bf16
//! (pure, or autocast, which runs the cells on real half tensors) with PyTorch's CPU
//! rounding op by op, which the composed form misses in places (it rounds `h W` before adding
//! `b_hh`, Candle's tanh and sigmoid gradients round each of their ops, and an RNN adds `b_hh`
//! to its input). Other devices compose it from Candle's ops step by step, here, with
//! the fused cells' `tanh` and `sigmoid` (`run::kernel::gates`, through `vmath`; f16 and bf16 computed in f32
//! and rounded once, as PyTorch's opmath does).

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::ops::Table;
use crate::run::kernel::bias::bias_add;
use crate::run::kernel::cast::{cast, round};
use crate::run::kernel::cells::Cell;
use crate::run::kernel::gates;
use crate::run::kernel::gather::{rows_linear, Rows};
use crate::run::kernel::recurrent::recurrence;
use crate::run::kernel::{takes, Dtypes};
use crate::scenario::RnnActivation;

/// Whether the fused products take these tensors: all on the CPU in one of f32 and f64.
fn fused(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| crate::run::kernel::handles(t) && t.dtype() == ts[0].dtype()) && !composed()
}

/// Whether the fused recurrence takes these tensors: all on the CPU in one float type.
fn fused_cells(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| takes(t, Dtypes::Floats) && t.dtype() == ts[0].dtype()) && !composed()
}

#[cfg(test)]
thread_local! {
    /// Test hook: compose the recurrence from Candle's ops on the CPU too, to compare the two.
    pub(crate) static COMPOSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether a test asks for the composed path (see `COMPOSED`).
#[cfg(test)]
fn composed() -> bool {
    COMPOSED.with(std::cell::Cell::get)
}

/// Outside tests the fused recurrence runs wherever it can.
#[cfg(not(test))]
fn composed() -> bool {
    false
}

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
    /// The embedding behind the input, when it is read unchanged (`ops::Cx::table`).
    pub table: Option<Table<'a>>,
}

fn act(a: RnnActivation, t: &Tensor) -> Result<Tensor> {
    Ok(match a {
        RnnActivation::Tanh => gates::tanh(t)?,
        RnnActivation::Relu => crate::run::kernel::relu::relu(t)?,
    })
}

/// The input gates of every step at once, `(batch, seq, gates·H)`: `x W_ih + b_ih`. Where the
/// recurrence is fused, one op with its own backward (`linear_bias_last`: the same bits, without
/// the reshapes, the product and the bias add whose zero gradients Candle's backward makes and adds).
/// When `x` is an embedding's output read unchanged (`table`) and the batch uses at most half as
/// many table rows as it has positions, from the used rows of the table (`gather::rows_linear`:
/// the same forward bits, a backward of `|U|` rows instead of `batch·seq`, summed in another order).
fn input_gates(x: &Tensor, w_ih: &Tensor, b_ih: &Tensor, table: Option<Table>) -> Result<Tensor> {
    if fused(&[x, w_ih, b_ih]) {
        if let Some(t) = table.filter(|t| fused(&[t.table, w_ih]) && t.table.rank() == 2) {
            let rows = Rows::new(t.ids, t.table.dims()[0])?;
            if rows.pays() {
                return rows_linear(&rows, t.table, w_ih, b_ih);
            }
        }
        return crate::run::kernel::linear::linear_bias_last(x, w_ih, b_ih);
    }
    let (b, seq, f) = x.dims3()?;
    if let (DType::F16 | DType::BF16, true) = (x.dtype(), fused_cells(&[x, w_ih, b_ih])) {
        return half_input_gates(&x.reshape((b * seq, f))?, w_ih, b_ih)?.reshape((b, seq, w_ih.dims()[1])).map_err(Into::into);
    }
    let flat = x.reshape((b * seq, f))?;
    Ok(bias_add(&flat.matmul(w_ih)?, b_ih)?.reshape((b, seq, w_ih.dims()[1]))?)
}

/// `x W + b` of a half type's rows `x` as PyTorch's CPU makes it for a batch-first
/// `nn.LSTM`/`nn.GRU`/`nn.RNN` (`F.linear` of the transposed input: `matmul`, then the bias
/// added in place): the product summed in f32 and rounded once, then the bias added and
/// rounded again; backward, each gradient summed in f32 (over every step at once) and rounded once.
fn half_input_gates(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let (dt, f32) = (x.dtype(), DType::F32);
    let product = round(&cast(x, f32)?.matmul(&cast(w, f32)?)?, dt)?;
    cast(&bias_add(&product, &cast(b, f32)?)?, dt)
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
    let gi = input_gates(x, w_ih, b_ih, run.table)?;
    if fused_cells(&[&gi, w_hh, b_hh]) && run.dropout.is_none_or(|m| m.dtype() == gi.dtype()) {
        return recurrence(&gi, w_hh, Some(b_hh), run.dropout, Cell::Lstm(run.activation), run.sequences);
    }
    let mut h = Tensor::zeros((b, hidden), x.dtype(), x.device())?;
    let mut c = h.clone();
    let mut states = Vec::with_capacity(if run.sequences { seq } else { 1 });
    for t in 0..seq {
        let gates = (gi.narrow(1, t, 1)?.squeeze(1)? + hidden_gates(&h, w_hh, b_hh, run.dropout)?)?;
        let chunk = |k: usize| gates.narrow(D::Minus1, k * hidden, hidden);
        let (i, f) = (gates::sigmoid(&chunk(0)?)?, gates::sigmoid(&chunk(1)?)?);
        let (g, o) = (act(run.activation, &chunk(2)?)?, gates::sigmoid(&chunk(3)?)?);
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
    let gi = input_gates(x, w_ih, b_ih, run.table)?;
    if fused_cells(&[&gi, w_hh, b_hh]) && run.dropout.is_none_or(|m| m.dtype() == gi.dtype()) {
        return recurrence(&gi, w_hh, Some(b_hh), run.dropout, Cell::Gru(run.activation), run.sequences);
    }
    let mut h = Tensor::zeros((b, hidden), x.dtype(), x.device())?;
    let mut states = Vec::with_capacity(if run.sequences { seq } else { 1 });
    for t in 0..seq {
        let (i, g) = (gi.narrow(1, t, 1)?.squeeze(1)?, hidden_gates(&h, w_hh, b_hh, run.dropout)?);
        let part = |t: &Tensor, k: usize| t.narrow(D::Minus1, k * hidden, hidden);
        let r = gates::sigmoid(&(part(&i, 0)? + part(&g, 0)?)?)?;
        let z = gates::sigmoid(&(part(&i, 1)? + part(&g, 1)?)?)?;
        let n = act(run.activation, &(part(&i, 2)? + r.mul(&part(&g, 2)?)?)?)?;
        h = (&n + z.mul(&(h - &n)?)?)?;
        if run.sequences || t + 1 == seq {
            states.push(h.clone());
        }
    }
    output(states, run.sequences)
}

/// Elman RNN over `(batch, seq, features)`: `h = tanh(x W_ih + b_ih + h W_hh + b_hh)`, last `h` out.
/// `table`: the embedding behind `x`, when it is read unchanged (`ops::Cx::table`).
pub(crate) fn rnn(x: &Tensor, (w_ih, w_hh, b_ih, b_hh): Gates, table: Option<Table>) -> Result<Tensor> {
    let seq = x.dims3()?.1;
    let gi = input_gates(x, w_ih, b_ih, table)?;
    // A half type's as PyTorch's `linear_hh` adds `b_hh`, on the recurrent product.
    if matches!(gi.dtype(), DType::F16 | DType::BF16) && fused_cells(&[&gi, w_hh, b_hh]) {
        return recurrence(&gi, w_hh, Some(b_hh), None, Cell::Rnn, false);
    }
    // The input projection of every time step at once, and both biases.
    let xw = bias_add(&gi, b_hh)?;
    if fused(&[&xw, w_hh]) {
        return recurrence(&xw, w_hh, None, None, Cell::Rnn, false);
    }
    let mut h = gates::tanh(&xw.narrow(1, 0, 1)?.squeeze(1)?)?;
    for t in 1..seq {
        h = gates::tanh(&(xw.narrow(1, t, 1)?.squeeze(1)? + h.matmul(w_hh)?)?)?;
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

    /// Which layer [`through`] runs.
    #[derive(Clone, Copy)]
    enum Kind {
        Rnn,
        Lstm(RnnActivation),
        Gru(RnnActivation),
    }

    /// One layer called directly (fused, or composed with `COMPOSED`) on `(batch, seq, 2)`
    /// inputs `x[b][t][f] = sx·sin(7b + 3t + f + 0.3)`, weights in nanhunt's layout
    /// `weight_ih[i][j] = sw·sin(1 + i·gH + j)`, `weight_hh[i][j] = sw·sin(2 + i·gH + j)`,
    /// `bias_ih[j] = 0.1 cos(3 + j)`, `bias_hh[j] = 0.1 cos(4 + j)`, and the mask `(batch, H)`;
    /// loss `sum(out²) / 2`. Returns the output and the gradients of x, W_ih, W_hh, b_ih, b_hh.
    fn through(kind: Kind, dtype: DType, (b, s, h): (usize, usize, usize), (sx, sw): (f64, f64), mask: Option<&[f64]>, sequences: bool) -> Vec<Vec<f64>> {
        let dev = Device::Cpu;
        let g = h * match kind {
            Kind::Rnn => 1,
            Kind::Lstm(_) => 4,
            Kind::Gru(_) => 3,
        };
        let var = |v: Vec<f64>, shape: &[usize]| candle_core::Var::from_tensor(&Tensor::from_vec(v, shape, &dev).unwrap().to_dtype(dtype).unwrap()).unwrap();
        let x = var((0..b * s * 2).map(|i| sx * ((i / (2 * s)) as f64 * 7.0 + ((i / 2) % s) as f64 * 3.0 + (i % 2) as f64 + 0.3).sin()).collect(), &[b, s, 2]);
        let w_ih = var((0..2 * g).map(|k| sw * (1.0 + k as f64).sin()).collect(), &[2, g]);
        let w_hh = var((0..h * g).map(|k| sw * (2.0 + k as f64).sin()).collect(), &[h, g]);
        let b_ih = var((0..g).map(|j| 0.1 * (3.0 + j as f64).cos()).collect(), &[g]);
        let b_hh = var((0..g).map(|j| 0.1 * (4.0 + j as f64).cos()).collect(), &[g]);
        let m = mask.map(|m| Tensor::from_vec(m.to_vec(), (b, h), &dev).unwrap().to_dtype(dtype).unwrap());
        let weights = (w_ih.as_tensor(), w_hh.as_tensor(), b_ih.as_tensor(), b_hh.as_tensor());
        let out = match kind {
            Kind::Rnn => super::rnn(x.as_tensor(), weights, None),
            Kind::Lstm(activation) => super::lstm(x.as_tensor(), weights, h, &super::Run { activation, sequences, dropout: m.as_ref(), table: None }),
            Kind::Gru(activation) => super::gru(x.as_tensor(), weights, h, &super::Run { activation, sequences, dropout: m.as_ref(), table: None }),
        }
        .unwrap();
        let grads = (out.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
        let mut all = vec![flat(&out)];
        all.extend([&x, &w_ih, &w_hh, &b_ih, &b_hh].map(|v| flat(grads.get(v.as_tensor()).unwrap())));
        all
    }

    /// `through` composed from Candle's ops step by step.
    fn composed(kind: Kind, dtype: DType, dims: (usize, usize, usize), scales: (f64, f64), mask: Option<&[f64]>, sequences: bool) -> Vec<Vec<f64>> {
        super::COMPOSED.with(|c| c.set(true));
        let out = through(kind, dtype, dims, scales, mask, sequences);
        super::COMPOSED.with(|c| c.set(false));
        out
    }

    /// Whether tensor `i` of [`through`]'s (`0` the output, then the gradients of x, W_ih, W_hh,
    /// b_ih, b_hh) is summed over the steps in another order by the fused recurrence: W_hh's
    /// gradient, and b_hh's of a gated cell (the RNN's input holds its bias).
    fn summed_at_once(i: usize, gated: bool) -> bool {
        i == 3 || (i == 5 && gated)
    }

    /// `fused` is `composed`'s values summed in another order: the fused recurrence adds the
    /// `depth` (steps · batch) terms of each value of W_hh's (b_hh's) gradient in one product
    /// (column sum), the composed path one product (sum) of depth `batch` a step. Each order is
    /// within `depth · ε/2 · Σ|terms|` of the exact sum; the terms (a state times a gate's
    /// gradient, at most 1 and a few here) and the values they sum to are of one size in these
    /// runs, so the bound is taken as `depth · ε` of the tensor's largest value. The values
    /// differ in their last bits (most of them here) by a tenth of that at most; a wrong term
    /// or step is orders of magnitude more. The kernel's test checks the product against the
    /// exact sum of its terms.
    fn same_sum(fused: &[f64], composed: &[f64], depth: usize, eps: f64, what: &str) {
        assert_eq!(fused.len(), composed.len(), "{what}");
        let largest = composed.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let bound = depth as f64 * eps * largest;
        for (j, (a, w)) in fused.iter().zip(composed).enumerate() {
            let same_class = a.is_nan() == w.is_nan() && (a.is_finite() || a == w);
            assert!(same_class && (a.is_nan() || !a.is_finite() || (a - w).abs() <= bound), "{what}[{j}]: {a} vs composed {w} (bound {bound:e})");
        }
    }

    /// The fused recurrence gives the composed path's bits, forward and the gradients of the
    /// inputs, the input weights and bias, in f32 and f64, for every cell and activation, with
    /// and without a recurrent dropout mask, the last state or every one; large weights
    /// saturate gates and make relu cut. The recurrent weights' and bias's gradients are the
    /// composed ones summed in another order ([`same_sum`]).
    #[test]
    fn the_fused_recurrence_gives_the_composed_bits() {
        // 17 units: one block of 16 of the vectorised cells and one left over.
        let (b, s, h) = (3, 7, 17);
        let mask: Vec<f64> = (0..b * h).map(|i| if i % 3 == 1 { 0.0 } else { 1.0 / 0.7 }).collect();
        let kinds = [Kind::Rnn, Kind::Lstm(RnnActivation::Tanh), Kind::Lstm(RnnActivation::Relu), Kind::Gru(RnnActivation::Tanh), Kind::Gru(RnnActivation::Relu)];
        for dtype in [DType::F32, DType::F64] {
            for (k, kind) in kinds.into_iter().enumerate() {
                for (scales, masked, sequences) in [((1.0, 0.4), false, false), ((3.0, 1.3), true, true), ((0.5, 2.0), true, false)] {
                    let m = (masked && k > 0).then_some(mask.as_slice());
                    let fused = through(kind, dtype, (b, s, h), scales, m, sequences);
                    let want = composed(kind, dtype, (b, s, h), scales, m, sequences);
                    for (i, (a, w)) in fused.iter().zip(&want).enumerate() {
                        let what = format!("{dtype:?}, kind {k}, {scales:?}, mask {masked}, sequences {sequences}: tensor {i}");
                        if summed_at_once(i, k > 0) {
                            let eps = if dtype == DType::F32 { f32::EPSILON as f64 } else { f64::EPSILON };
                            same_sum(a, w, b * s, eps, &what);
                            continue;
                        }
                        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(a), bits(w), "{what}\n{a:?}\n{w:?}");
                    }
                }
            }
        }
    }

    /// At the language model's sizes (batch 16, 64 features, hidden 128: gemm's blocked
    /// kernels, depths of 16 to 512, the input projection one op), the fused RNN, LSTM and GRU
    /// give the composed bits too: the output and every gradient but the recurrent weights'
    /// and bias's, which are the composed ones summed in another order ([`same_sum`]), in f32.
    #[test]
    fn the_fused_recurrence_gives_the_composed_bits_at_full_size() {
        let dev = Device::Cpu;
        let (b, s, f, h) = (16, 5, 64, 128);
        for (k, kind) in [Kind::Rnn, Kind::Lstm(RnnActivation::Tanh), Kind::Gru(RnnActivation::Tanh)].into_iter().enumerate() {
            let g = h * [1, 4, 3][k];
            let run = |composed: bool| {
                super::COMPOSED.with(|c| c.set(composed));
                let var = |shape: &[usize], p: f32, scale: f32| {
                    let n = shape.iter().product::<usize>();
                    candle_core::Var::from_tensor(&Tensor::from_vec((0..n).map(|i| scale * (p + 0.77 * i as f32).sin()).collect::<Vec<f32>>(), shape, &dev).unwrap()).unwrap()
                };
                let (x, w_ih, w_hh, b_ih, b_hh) = (var(&[b, s, f], 0.3, 1.0), var(&[f, g], 1.1, 0.1), var(&[h, g], 2.3, 0.1), var(&[g], 0.7, 0.1), var(&[g], 1.9, 0.1));
                let weights = (w_ih.as_tensor(), w_hh.as_tensor(), b_ih.as_tensor(), b_hh.as_tensor());
                let run = super::Run { activation: RnnActivation::Tanh, sequences: true, dropout: None, table: None };
                let out = match kind {
                    Kind::Rnn => super::rnn(x.as_tensor(), weights, None),
                    Kind::Lstm(_) => super::lstm(x.as_tensor(), weights, h, &run),
                    Kind::Gru(_) => super::gru(x.as_tensor(), weights, h, &run),
                }
                .unwrap();
                super::COMPOSED.with(|c| c.set(false));
                let grads = (out.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap().backward().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap();
                let mut all = vec![flat(&out)];
                all.extend([&x, &w_ih, &w_hh, &b_ih, &b_hh].map(|v| flat(grads.get(v.as_tensor()).unwrap())));
                all
            };
            let (fused, composed) = (run(false), run(true));
            for (i, (a, w)) in fused.iter().zip(&composed).enumerate() {
                if summed_at_once(i, k > 0) {
                    same_sum(a, w, b * s, f32::EPSILON as f64, &format!("kind {k}: tensor {i}"));
                    continue;
                }
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(bits(a) == bits(w), "kind {k}: tensor {i} differs");
            }
            assert!(fused[2].iter().any(|v| *v != 0.0), "kind {k}: W_ih's gradient is not all zeros");
            assert!(fused[3].iter().any(|v| *v != 0.0), "kind {k}: W_hh's gradient is not all zeros");
        }
    }

    fn near(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert!((a - b).abs() < 1e-14, "[{i}]: {a} vs PyTorch {b}");
        }
    }

    /// PyTorch 2.15, f64 (`through`'s values, sw = 0.4; PyTorch's weights are the transposes),
    /// batch 2, 3 steps, hidden 3: `torch.nn.RNN(2, 3, batch_first=True)` with loss
    /// `(out[:, -1] ** 2).sum() / 2`; and, with inputs ×3 and the recurrent dropout mask
    /// `[[2, 0, 2], [0, 2, 2]]` (p = 0.5) on the state fed back, Keras's relu LSTM and GRU
    /// written out with autograd in PyTorch's gate order (`g = x W_ih + b_ih + (h·m) W_hh + b_hh`,
    /// `torch.relu` as the activation), loss `(out ** 2).sum() / 2` over every state.
    #[test]
    fn fused_gradients_match_pytorch() {
        let rnn = through(Kind::Rnn, DType::F64, (2, 3, 3), (1.0, 0.4), None, false);
        near(&rnn[0], &[-0.3842907046035924, -0.3321701095088125, 0.03197768176015403, -0.22743991415635853, -0.15274545269656992, 0.06503675404536972]);
        near(&rnn[2], &[-0.04053546281243536, -0.22397337184384097, 0.16807486581384293, -0.2469794774129592, -0.6617551599880478, 0.374735327723687]);
        let w_hh = [
            0.07398113790961565,
            -0.06857809743080884,
            0.07126596987804522,
            -0.05146062021137955,
            -0.14214834523674474,
            0.07222066833615448,
            -0.1309851649328749,
            -0.0847331757853185,
            0.005764975499340979,
        ];
        near(&rnn[3], &w_hh);
        near(&rnn[5], &[-0.7803178990628927, -0.1849964686684143, -0.18782321890552536]);
        let mask = [2.0, 0.0, 2.0, 0.0, 2.0, 2.0];
        let lstm = through(Kind::Lstm(RnnActivation::Relu), DType::F64, (2, 3, 3), (3.0, 0.4), Some(&mask), true);
        near(&lstm[0][12..], &[0.22028565016118537, 1.2106352131733331, 0.5923634229940131, 0.33737381962961754, 0.13538756351712844, 0.1576887874589669]);
        near(&lstm[1][6..], &[0.451726300194793, 0.46563518565623896, -0.20489360403708654, -0.21280746484540486, -0.006514708360505864, -0.0011455679515318916]);
        near(&lstm[3][28..], &[0.11423050909422329, 0.06292673054357174, 0.1014593066796605, 0.05183557427003533, 0.045331670114862596, 0.11602039005691207, 0.18211756415880115, 0.09922688184095363]);
        near(&lstm[5][6..], &[0.2718914234186962, 1.127223523531024, 0.420919670475532, 0.13962222469853233, 0.4233733491015919, 0.14114493180382312]);
        let gru = through(Kind::Gru(RnnActivation::Relu), DType::F64, (2, 3, 3), (3.0, 0.4), Some(&mask), true);
        near(&gru[0][..6], &[0.0, 0.0, 0.0, 0.028645666353147553, 0.5501635113286838, 0.5492988411618922]);
        near(&gru[1][..6], &[0.0, 0.0, 0.37152140300242104, -0.45048140198680187, -0.022160750897666972, 0.02926916386594047]);
        near(&gru[3][18..], &[0.0008017731282529243, 0.0, 0.0, -0.001105731780756089, 0.0495469382991729, 0.06030042305975428, 0.020317484558355095, 0.0, 0.0]);
        near(
            &gru[5],
            &[
                -0.0015512305869619094,
                5.3129833608989846e-05,
                0.015336976925421741,
                -0.009516928726226994,
                -0.0859655525213352,
                -0.1247576955202462,
                0.09912824698711832,
                0.40531632883967805,
                0.5324692637658565,
            ],
        );
    }

    /// An empty sequence is an error, not a panic.
    #[test]
    fn an_empty_sequence_is_an_error() {
        let dev = Device::Cpu;
        let gi = Tensor::zeros((2, 0, 8), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((2, 8), DType::F32, &dev).unwrap();
        let b = Tensor::zeros(8, DType::F32, &dev).unwrap();
        let cell = crate::run::kernel::cells::Cell::Lstm(RnnActivation::Tanh);
        let err = crate::run::kernel::recurrent::recurrence(&gi, &w, Some(&b), None, cell, false).unwrap_err().to_string();
        assert!(err.contains("an empty sequence"), "{err}");
    }
}

#[cfg(test)]
#[path = "recurrent_half_tests.rs"]
mod half_tests;
