//! Our own seeded random streams. Candle's CPU RNG cannot be seeded, so every
//! random draw of a run (data, initial weights, shuffling, injections) comes
//! from a ChaCha stream of the scenario's one seed, one stream per purpose, and
//! the same seed gives the same draws on every machine.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Stream for data generation.
pub(crate) const DATA_STREAM: u64 = 1;
/// Stream for the weights of linear targets.
pub(crate) const LINEAR_STREAM: u64 = 2;
/// Stream base for injections (one stream per fold).
pub(crate) const INJECT_STREAM: u64 = 1 << 8;
/// Stream base for initialisation (one per fold).
pub(crate) const INIT_STREAM: u64 = 1 << 16;
/// Stream base for shuffling (one per fold).
pub(crate) const SHUFFLE_STREAM: u64 = 1 << 24;
/// Stream for padding lengths (the next one for a separate validation set).
pub(crate) const PADDING_STREAM: u64 = 3;

/// The stream of one training step's dropout masks: one per (fold, step), so a step's masks
/// do not depend on what ran before it (an export draws them again without training).
pub(crate) fn dropout_stream(seed: u64, fold: usize, step: usize) -> ChaCha8Rng {
    stream(seed, (1 << 40) | ((fold as u64) << 32) | step as u64)
}

/// A seeded ChaCha stream: one seed, independent streams per purpose.
pub(crate) fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// A stream of one seed keyed by a name (a code model's parameter): its draws depend on the
/// name, never on the order names are asked for. The key is the name's 64-bit FNV-1a hash.
pub(crate) fn named_stream(seed: u64, stream: u64, name: &str) -> ChaCha8Rng {
    let hash = crate::hash::fnv1a(name.as_bytes());
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&hash.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(stream);
    rng
}

/// A standard normal draw.
pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// An inverted-dropout mask of `shape`: `1/(1 − p)` where [`draw_mask`] keeps, 0 where it drops,
/// in `like`'s dtype and on its device.
pub(crate) fn dropout_mask(rng: &mut ChaCha8Rng, shape: impl Into<candle_core::Shape>, p: f64, like: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    let shape = shape.into();
    let values: Vec<f64> = draw_mask(rng, shape.elem_count(), p).into_iter().map(|keep| if keep { 1.0 / (1.0 - p) } else { 0.0 }).collect();
    candle_core::Tensor::from_vec(values, shape, like.device())?.to_dtype(like.dtype())
}

/// `n` keep-or-drop draws from `rng`: each value is dropped when its uniform draw is below `p`.
pub(crate) fn draw_mask(rng: &mut ChaCha8Rng, n: usize, p: f64) -> Vec<bool> {
    use rand::Rng;
    (0..n).map(|_| rng.random::<f64>() >= p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_of_one_seed_are_independent_and_repeatable() {
        let draw = |seed, s| stream(seed, s).random::<u64>();
        assert_eq!(draw(7, DATA_STREAM), draw(7, DATA_STREAM));
        assert_ne!(draw(7, DATA_STREAM), draw(7, LINEAR_STREAM));
        assert_ne!(draw(7, DATA_STREAM), draw(8, DATA_STREAM));
    }

    #[test]
    fn named_streams_depend_on_the_name_seed_and_stream_only() {
        let draw = |seed, s, name| named_stream(seed, s, name).random::<u64>();
        assert_eq!(draw(7, INIT_STREAM, "fc1.weight"), draw(7, INIT_STREAM, "fc1.weight"));
        assert_ne!(draw(7, INIT_STREAM, "fc1.weight"), draw(7, INIT_STREAM, "fc1.bias"));
        assert_ne!(draw(7, INIT_STREAM, "fc1.weight"), draw(8, INIT_STREAM, "fc1.weight"));
        assert_ne!(draw(7, INIT_STREAM, "fc1.weight"), draw(7, INIT_STREAM + 1, "fc1.weight"));
    }
}
