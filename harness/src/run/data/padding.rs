//! Padding: each sequence holds data up to its length and padding after it,
//! as a batch of variable-length sequences does. Lengths are explicit or drawn
//! from the scenario's padding stream; padded positions are zeroed (token id 0)
//! and the mask (1 for data, 0 for padding) travels with the rows, so
//! attention and pooling can leave the padding out.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Split, Table};
use crate::scenario::{DataSpec, PaddingSpec};

/// The training rows' mask, from explicit lengths or drawn ones; zeroes padded inputs.
/// An error names its key.
pub(super) fn train_mask(p: &PaddingSpec, x: &mut Table, seq: usize, features: usize, rng: &mut ChaCha8Rng) -> Result<Table, (String, String)> {
    let lengths = if p.lengths.is_empty() {
        draw(p.max_fraction.unwrap_or(0.0), x.rows, seq, rng)
    } else if p.lengths.len() != x.rows {
        return Err(("data.padding.lengths".into(), format!("has {} lengths for {} rows: give one per row", p.lengths.len(), x.rows)));
    } else if let Some((i, l)) = p.lengths.iter().enumerate().find(|(_, l)| **l > seq) {
        return Err((format!("data.padding.lengths.{i}"), format!("length {l} is longer than the sequence ({seq} positions)")));
    } else {
        p.lengths.clone()
    };
    Ok(apply(&lengths, x, seq, features))
}

/// Pads a separately drawn validation set with drawn lengths (explicit lengths are the training rows').
pub(super) fn drawn(d: &DataSpec, split: &mut Split, features: usize, rng: &mut ChaCha8Rng) {
    if let Some(p) = &d.padding {
        let seq = d.seq_len.unwrap_or(1);
        let lengths = draw(p.max_fraction.unwrap_or(0.0), split.x.rows, seq, rng);
        split.mask = Some(apply(&lengths, &mut split.x, seq, features));
    }
}

/// Row lengths with a uniformly drawn number of padded positions in `0..=floor(fraction · seq)`.
fn draw(fraction: f64, rows: usize, seq: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let most = ((fraction.clamp(0.0, 1.0) * seq as f64).floor() as usize).min(seq);
    (0..rows).map(|_| seq - rng.random_range(0..=most)).collect()
}

/// Zeroes each row's inputs past its length and returns the mask.
fn apply(lengths: &[usize], x: &mut Table, seq: usize, features: usize) -> Table {
    let mut mask = Table { rows: lengths.len(), cols: seq, values: vec![0.0; lengths.len() * seq] };
    for (r, &len) in lengths.iter().enumerate() {
        mask.values[r * seq..r * seq + len].fill(1.0);
        x.values[r * x.cols + len * features..(r + 1) * x.cols].fill(0.0);
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn explicit_lengths_zero_the_padding_and_make_the_mask() {
        // Two rows of 3 positions × 2 features; the second row is fully padded.
        let mut x = Table { rows: 2, cols: 6, values: (1..=12).map(f64::from).collect() };
        let p = PaddingSpec { max_fraction: None, lengths: vec![2, 0] };
        let m = train_mask(&p, &mut x, 3, 2, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
        assert_eq!(m.values, [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(x.values, [1.0, 2.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let long = PaddingSpec { max_fraction: None, lengths: vec![4, 1] };
        assert_eq!(train_mask(&long, &mut x, 3, 2, &mut ChaCha8Rng::seed_from_u64(0)).unwrap_err().0, "data.padding.lengths.0");
    }

    #[test]
    fn drawn_lengths_stay_within_the_fraction() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let l = draw(0.5, 200, 8, &mut rng);
        assert!(l.iter().all(|&l| (4..=8).contains(&l)));
        assert!(l.contains(&4) && l.contains(&8), "both ends are drawn: {l:?}");
        assert!(draw(1.0, 200, 8, &mut rng).contains(&0), "a fraction of 1 can pad a whole row");
    }
}
