//! Initial parameter values, drawn from the scenario's own seeded stream in
//! parameter order: PyTorch's and Keras's defaults, or normal, uniform and
//! constant initialisations.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::run::rng::normal;
use crate::scenario::{Init, ParamSpec, Role};

/// Initial values of one parameter, drawn in row-major order.
pub(super) fn init_values(p: &ParamSpec, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let n: usize = p.shape.iter().product();
    let uniform = |rng: &mut ChaCha8Rng, bound: f64| -> Vec<f64> { (0..n).map(|_| rng.random_range(-1.0..1.0) * bound).collect() };
    match (p.role, p.init) {
        (Role::Gain, _) => vec![1.0; n],
        (Role::Shift, _) | (Role::ZeroBias, Init::Torch | Init::Keras) => vec![0.0; n],
        // nn.MultiheadAttention: xavier_uniform_ over the joint (3w, w) in-projection.
        (Role::InProj, Init::Torch | Init::Keras) => uniform(rng, (6.0 / p.fan_in.saturating_add(p.fan_out) as f64).sqrt()),
        (Role::Embedding, Init::Torch) => (0..n).map(|_| normal(rng)).collect(),
        // Keras's Embedding: uniform in ±0.05.
        (Role::Embedding, Init::Keras) => uniform(rng, 0.05),
        // torch: kaiming_uniform(a = sqrt(5)) gives bound 1/sqrt(fan_in); nn.RNN uses 1/sqrt(hidden).
        (_, Init::Torch) => uniform(rng, 1.0 / (p.torch_fan as f64).sqrt()),
        (Role::ForgetBias, Init::Keras) => (0..n).map(|i| if (n / 4..n / 2).contains(&i) { 1.0 } else { 0.0 }).collect(),
        (Role::Bias | Role::ZeroBias | Role::ForgetBias, _) => vec![0.0; n],
        (Role::Weight | Role::Conv, Init::Keras) => uniform(rng, (6.0 / p.fan_in.saturating_add(p.fan_out) as f64).sqrt()),
        (Role::Recurrent, Init::Keras) => orthogonal(p.shape[0], p.shape[1], rng),
        (_, Init::Normal { std }) => (0..n).map(|_| normal(rng) * std).collect(),
        (_, Init::Uniform { bound }) => uniform(rng, bound),
        (_, Init::Constant { value }) => vec![value; n],
        // An imported model's own values are not drawn (`Model::new` reads them from the file);
        // validation refuses `file` for any other model.
        (_, Init::File) => uniform(rng, 1.0 / (p.torch_fan as f64).sqrt()),
    }
}

/// A random `n × cols` matrix with orthonormal rows (`n ≤ cols`; Gram–Schmidt on normal draws),
/// as Keras's `Orthogonal` makes a recurrent kernel (`hidden × gates·hidden` for LSTM and GRU).
fn orthogonal(n: usize, cols: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let mut rows: Vec<Vec<f64>> = Vec::with_capacity(n);
    while rows.len() < n {
        let mut v: Vec<f64> = (0..cols).map(|_| normal(rng)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn orthogonal_rows_are_orthonormal() {
        for (n, cols) in [(5, 5), (3, 12)] {
            let m = orthogonal(n, cols, &mut ChaCha8Rng::seed_from_u64(1));
            for i in 0..n {
                for j in 0..n {
                    let dot: f64 = (0..cols).map(|k| m[i * cols + k] * m[j * cols + k]).sum();
                    assert!((dot - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
                }
            }
        }
    }
}
