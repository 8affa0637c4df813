//! Splitting rows: a held-out tail (Keras's `validation_split`) or k folds
//! (sklearn's `KFold` without shuffling).

use super::{Fold, Split};

/// Rows `r` of a split.
pub(super) fn rows(all: &Split, r: std::ops::Range<usize>) -> Split {
    all.select(r)
}

/// sklearn's `KFold` without shuffling: the first `n % k` folds get one extra row.
pub(super) fn kfold(all: &Split, k: usize) -> Vec<Fold> {
    let n = all.x.rows;
    let mut start = 0;
    (0..k)
        .map(|i| {
            let len = n / k + usize::from(i < n % k);
            let val = start..start + len;
            start += len;
            let keep = |r: &usize| !val.contains(r);
            Fold { train: all.select((0..n).filter(keep)), val: Some(rows(all, val.clone())) }
        })
        .collect()
}
