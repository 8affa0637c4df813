//! [`Watch`]: what a code model's forward sees of the runner, and how it names
//! the tensors the watch should check.
//!
//! Without a single [`Watch::check`], the watch covers the model's output, the
//! loss, every parameter's gradient and every updated parameter. Each check adds
//! an intermediate tensor, under the user's name (`blocks.0.attn.scores`), to the
//! tensors checked in the forward phase, in the order the forward checks them.
//! Dropout draws from the run's seeded stream ([`Watch::dropout`]): candle-nn's
//! `Dropout` draws from Candle's RNG, which cannot be seeded.

use std::sync::Arc;

use candle_core::{DType, Tensor};
use rand_chacha::ChaCha8Rng;

/// An op's math computed in f64 from its inputs (cast to f64), the reference of [`Watch::check_op`].
pub(super) type Reference = Arc<dyn Fn(&[Tensor]) -> candle_core::Result<Tensor> + Send + Sync>;

/// A check made by [`Watch::check_op`]: its index among the checks, the op's inputs, its reference.
pub(super) type Referenced = (usize, Vec<Tensor>, Reference);

/// A code model's view of the run during one forward.
pub struct Watch<'a> {
    pub(super) checks: Vec<(String, Tensor)>,
    pub(super) training: bool,
    pub(super) mask: Option<&'a Tensor>,
    pub(super) autocast: Option<DType>,
    pub(super) dropout: Option<&'a mut ChaCha8Rng>,
    pub(super) references: Vec<Referenced>,
}

impl Watch<'_> {
    /// Names `t` for the watch: it is checked, and named in findings and the trace, as `name`.
    pub fn check(&mut self, name: &str, t: &Tensor) {
        self.checks.push((name.to_string(), t.clone()));
    }

    /// [`Watch::check`] of `out`, the result of an op on `inputs`, with `reference`: the op's math
    /// on the inputs cast to f64 (e.g. `candle_nn::ops::layer_norm_slow` for candle-nn's fused
    /// layer norm). If `out` holds the run's first non-finite value, the verdict compares the two:
    /// a finite f64 value in the dtype's range from finite inputs is a kernel disagreement.
    pub fn check_op(&mut self, name: &str, out: &Tensor, inputs: &[&Tensor], reference: impl Fn(&[Tensor]) -> candle_core::Result<Tensor> + Send + Sync + 'static) {
        self.references.push((self.checks.len(), inputs.iter().map(|t| (*t).clone()).collect(), Arc::new(reference)));
        self.check(name, out);
    }

    /// True in a training forward, false in validation.
    pub fn training(&self) -> bool {
        self.training
    }

    /// The padding mask `(batch, seq)`, 1 where a position holds data, when `[data.padding]` is set.
    pub fn mask(&self) -> Option<&Tensor> {
        self.mask
    }

    /// The low dtype under `train.precision = "amp_f16" | "amp_bf16"`: cast matmul inputs to it
    /// where PyTorch's autocast would (parameters stay f32); `None` otherwise.
    pub fn autocast(&self) -> Option<DType> {
        self.autocast
    }

    /// Inverted dropout of `t` with probability `p` while training, with masks from the run's
    /// seeded dropout stream (one per step); `t` itself in validation or at `p = 0`.
    pub fn dropout(&mut self, t: &Tensor, p: f64) -> candle_core::Result<Tensor> {
        let Some(rng) = self.dropout.as_deref_mut().filter(|_| self.training && p > 0.0) else { return Ok(t.clone()) };
        if !(0.0..1.0).contains(&p) {
            candle_core::bail!("dropout probability must be in [0, 1), got {p}")
        }
        t.mul(&crate::run::model::dropout_mask(rng, t.shape(), p, t)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;

    fn watch<'a>(rng: Option<&'a mut ChaCha8Rng>, training: bool) -> Watch<'a> {
        Watch { checks: Vec::new(), training, mask: None, autocast: None, dropout: rng, references: Vec::new() }
    }

    #[test]
    fn dropout_keeps_or_zeroes_with_the_seeded_stream_and_is_off_in_validation() {
        let x = Tensor::ones(4000, DType::F64, &Device::Cpu).unwrap();
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            watch(Some(&mut rng), true).dropout(&x, 0.5).unwrap().to_vec1::<f64>().unwrap()
        };
        let a = draw(1);
        assert!(a.iter().all(|v| *v == 0.0 || *v == 2.0));
        // About half of 4000 dropped (binomial sd 32).
        let dropped = a.iter().filter(|v| **v == 0.0).count();
        assert!((1870..=2130).contains(&dropped), "{dropped}");
        assert_eq!(a, draw(1));
        assert_ne!(a, draw(2));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert!(watch(Some(&mut rng), false).dropout(&x, 0.5).unwrap().to_vec1::<f64>().unwrap().iter().all(|v| *v == 1.0));
        assert!(watch(None, true).dropout(&x, 0.5).unwrap().to_vec1::<f64>().unwrap().iter().all(|v| *v == 1.0));
    }

    #[test]
    fn checks_keep_their_names_in_order() {
        let mut w = watch(None, true);
        let t = Tensor::new(&[1.0f32], &Device::Cpu).unwrap();
        w.check("b", &t);
        w.check("a", &t);
        assert_eq!(w.checks.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["b", "a"]);
    }
}
