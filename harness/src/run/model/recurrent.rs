//! The Elman RNN (Keras `SimpleRNN`, torch `nn.RNN` with tanh), returning the
//! last hidden state.

use candle_core::Tensor;

use super::dense::add_bias;
use crate::error::Result;

/// Elman RNN over `(batch, seq, features)`: `h = tanh(x W_ih + b_ih + h W_hh + b_hh)`, last `h` out.
pub(super) fn rnn(x: &Tensor, w_ih: &Tensor, w_hh: &Tensor, b_ih: &Tensor, b_hh: &Tensor, hidden: usize) -> Result<Tensor> {
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


#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use crate::run::model::Model;
    use crate::scenario::{plan, InShape, Init, Layer, ModelSpec};

    #[test]
    fn rnn_matches_hand_computation() {
        // One hidden unit, weights 0.5: h1 = tanh(0.5*1 + 0 + 0) ; h2 = tanh(0.5*2 + 0.5*h1).
        let s = ModelSpec { init: Init::Constant { value: 0.5 }, layers: vec![Layer::Rnn { hidden: 1, init: None }], init_scale: 1.0 };
        let shape = InShape { features: 1, seq_len: Some(2), vocab: None };
        let m = Model::new(&s, &plan(&s, shape).unwrap(), &mut ChaCha8Rng::seed_from_u64(0), DType::F64, &Device::Cpu).unwrap();
        let x = Tensor::new(&[[[1.0f64], [2.0]]], &Device::Cpu).unwrap();
        let out = m.forward(&x, None).unwrap()[0].flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let h1 = 0.5f64.tanh();
        assert!((out[0] - (1.0 + 0.5 * h1).tanh()).abs() < 1e-15);
    }
}
