//! A transposed matrix of 4-byte values copied row-major in 8 × 8 blocks held in AVX registers
//! (`linear::Mat::row_major` of a transposed view: the LSTM's recurrent weights `Wᵀ` once a
//! step). Value by value the copy took 2.6 cycles a value, 2% of a language model's step (perf,
//! Intel Xeon); the shuffles only move bits, so every tier gives the same values.

use std::mem::MaybeUninit;

/// Writes `dst[i·cols + j] = src[i + j·cs]` for the leading `rows − rows % 8` rows and
/// `cols − cols % 8` columns, 8 × 8 at a time, where the CPU has AVX2 and `T` is 4 bytes:
/// those counts, or `None` (nothing written), for the caller to copy the rest.
pub(super) fn blocks<T: Copy>(src: &[T], cs: usize, (rows, cols): (usize, usize), dst: &mut [MaybeUninit<T>]) -> Option<(usize, usize)> {
    let (r8, c8) = (rows - rows % 8, cols - cols % 8);
    let fits = rows * cols > 0 && dst.len() == rows * cols && (rows - 1) + (cols - 1) * cs < src.len();
    if std::mem::size_of::<T>() != 4 || !fits || !(super::has_avx2() && super::widest() >= 1) {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let (s, d) = (src.as_ptr().cast::<f32>(), dst.as_mut_ptr().cast::<f32>());
        for i in (0..r8).step_by(8) {
            for j in (0..c8).step_by(8) {
                // SAFETY: AVX2 was checked above; the block's reads end at (i + 7) + (j + 7)·cs,
                // inside `src`, and its writes at (i + 7)·cols + j + 7 < rows·cols = `dst.len()`
                // (checked above); T is 4 bytes, moved as bits.
                unsafe { eight(s.add(i + j * cs), cs, d.add(i * cols + j), cols) };
            }
        }
        Some((r8, c8))
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// One 8 × 8 block: row `k` of `dst` (stride `dc`) is column `k` of the 8 rows of `src`
/// (stride `sc`): unpacks, shuffles and lane permutes, moves only.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn eight(src: *const f32, sc: usize, dst: *mut f32, dc: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|k| _mm256_loadu_ps(src.add(k * sc)));
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let q = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xee>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xee>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xee>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xee>(t[5], t[7]),
    ];
    for k in 0..4 {
        _mm256_storeu_ps(dst.add(k * dc), _mm256_permute2f128_ps::<0x20>(q[k], q[k + 4]));
        _mm256_storeu_ps(dst.add((k + 4) * dc), _mm256_permute2f128_ps::<0x31>(q[k], q[k + 4]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::kernel::WIDEST;

    /// Every value lands at its transposed place (by the index formula), with rows and columns
    /// left for the caller past the multiples of 8, at a column stride wider than the rows; NaN
    /// payloads and −0 come through as bits.
    #[test]
    fn the_blocks_move_every_value_to_its_transposed_place() {
        for (rows, cols, cs) in [(8, 8, 8), (21, 37, 21), (16, 40, 19), (512, 128, 512)] {
            let src: Vec<f32> = (0..cols * cs)
                .map(|k| {
                    if k % 97 == 5 {
                        f32::from_bits(0x7fc0_1234 + k as u32)
                    } else if k % 89 == 3 {
                        -0.0
                    } else {
                        k as f32
                    }
                })
                .collect();
            let mut dst = vec![MaybeUninit::new(f32::INFINITY); rows * cols];
            let Some((r8, c8)) = blocks(&src, cs, (rows, cols), &mut dst) else { return };
            assert_eq!((r8, c8), (rows / 8 * 8, cols / 8 * 8));
            for i in 0..rows {
                for j in 0..cols {
                    // SAFETY: every value was initialised above.
                    let got = unsafe { dst[i * cols + j].assume_init() }.to_bits();
                    let want = if i < r8 && j < c8 { src[i + j * cs].to_bits() } else { f32::INFINITY.to_bits() };
                    assert_eq!(got, want, "{rows}×{cols}: [{i}][{j}]");
                }
            }
        }
    }

    /// Without AVX2 (the plain tier), or for 8-byte values, nothing is written.
    #[test]
    fn the_plain_tier_and_wide_values_leave_it_to_the_caller() {
        let mut dst = vec![MaybeUninit::new(0.0f64); 64];
        assert_eq!(blocks(&[1.0f64; 64], 8, (8, 8), &mut dst), None);
        WIDEST.with(|w| w.set(0));
        let mut dst = vec![MaybeUninit::new(0.0f32); 64];
        let got = blocks(&[1.0f32; 64], 8, (8, 8), &mut dst);
        WIDEST.with(|w| w.set(2));
        assert_eq!(got, None);
    }
}
