//! One head's attention product `scale · a b` in f32 computed directly with AVX-512, for the
//! small sizes of attention's per-head products (`heads.rs`): at them gemm's packing and
//! dispatch cost as much as the products (its `gemm_basic`, packing and narrow `x1x6` kernel
//! were 10% of the tiny GPT's step, perf, Intel Xeon). The bits are gemm's: where its general
//! kernels run (`linear::general_kernels`) over one depth block, gemm 0.19 gives each value as
//! a fused multiply-add chain over the depth in order, from 0, times `scale` rounded once; here
//! each value is that chain, in a tile of rows by one or two 16-lane registers held in
//! registers over the whole depth (the right factor copied row-major first where it is a
//! transposed view). A test holds it to gemm's bits over every layout attention uses and a grid
//! of sizes. One thing may differ: which NaN comes out where two NaNs meet in one chain (x86
//! returns the first NaN operand, and the two kernels order an FMA's operands differently); a
//! NaN is a NaN to the watch and the trace. Without AVX-512 the products stay gemm's.

use std::mem::MaybeUninit;

/// Most columns the direct product takes (two AVX-512 registers of f32).
pub(super) const MAX_N: usize = 32;

/// Most depth it takes: far inside gemm's first depth block, so gemm sums the depth in one pass.
pub(super) const MAX_K: usize = 64;

/// A matrix inside a slice: its first value, row stride and column stride.
#[derive(Clone, Copy, Debug)]
pub(super) struct At {
    /// The index of its first value.
    pub(super) start: usize,
    /// From one row to the next.
    pub(super) rs: usize,
    /// From one column to the next.
    pub(super) cs: usize,
}

impl At {
    /// Whether its `rows × cols` values (both at least 1) are inside a slice of `len`, the
    /// arithmetic checked (a stride that overflows is outside).
    fn inside(&self, rows: usize, cols: usize, len: usize) -> bool {
        let last = (rows - 1).checked_mul(self.rs).and_then(|r| (cols - 1).checked_mul(self.cs).and_then(|c| r.checked_add(c)));
        last.and_then(|l| l.checked_add(self.start)).is_some_and(|l| l < len)
    }
}

/// Whether the direct product takes an `(m, k) · (k, n)` product on this CPU.
pub(super) fn takes(m: usize, n: usize, k: usize) -> bool {
    super::has_avx512() && super::widest() >= 2 && super::linear::general_kernels(m, k, n) && n <= MAX_N && k <= MAX_K
}

/// `out[i, j] = scale · Σₖ a[i, k] · b[k, j]` for a product [`takes`] takes, into `out` (a
/// row-major view, `cs` 1): its values there are written, none read. Refuses (false, nothing
/// written) views that leave their slices.
pub(super) fn product(dims: (usize, usize, usize), a: (&[f32], At), b: (&[f32], At), out: (&mut [MaybeUninit<f32>], At), scale: f32) -> bool {
    let (m, n, k) = dims;
    // `takes` first: it bounds n and k, and m·n > 256 (so m ≥ 1), which `inside` needs.
    if !takes(m, n, k) {
        return false;
    }
    if !(a.1.inside(m, k, a.0.len()) && b.1.inside(k, n, b.0.len()) && out.1.cs == 1 && out.1.inside(m, n, out.0.len())) {
        return false;
    }
    // The right factor row-major: as it is, or its view copied (a transposed one in 8 × 8 blocks).
    let mut copy = [MaybeUninit::<f32>::uninit(); MAX_K * MAX_N];
    let (rhs, rs): (&[f32], usize) = if b.1.cs == 1 {
        (&b.0[b.1.start..], b.1.rs)
    } else {
        super::linear::Mat::strided(&b.0[b.1.start..], (k, n), (b.1.rs, b.1.cs)).write_row_major(&mut copy[..k * n]);
        // SAFETY: `write_row_major` wrote all k·n values.
        (unsafe { std::slice::from_raw_parts(copy.as_ptr().cast::<f32>(), k * n) }, n)
    };
    #[cfg(target_arch = "x86_64")]
    {
        let (ap, op) = (a.0[a.1.start..].as_ptr(), out.0[out.1.start..].as_mut_ptr().cast::<f32>());
        let sh = Shape { m, n, k, a_rs: a.1.rs, a_cs: a.1.cs, b_rs: rs, o_rs: out.1.rs };
        // SAFETY: AVX-512 was checked by `takes`; the reads of a stay within rows < m and
        // depth < k of its view, of the right factor within k rows of n values (stride rs),
        // and the writes within m rows of n values of `out`'s view, all checked above.
        unsafe {
            if n <= 16 {
                tiles::<1, 8>(sh, ap, rhs.as_ptr(), op, scale);
            } else {
                tiles::<2, 4>(sh, ap, rhs.as_ptr(), op, scale);
            }
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rhs, rs, scale);
        false
    }
}

/// The sizes and strides the kernel walks.
#[derive(Clone, Copy)]
struct Shape {
    m: usize,
    n: usize,
    k: usize,
    a_rs: usize,
    a_cs: usize,
    b_rs: usize,
    o_rs: usize,
}

/// The rows in tiles of `R` by `V` registers of 16 columns: each tile's `R·V` accumulators
/// stay in registers over the whole depth, one fused multiply-add per value per depth step
/// (the row's value of `a` broadcast, the right factor's row loaded, masked past `n`). A last
/// short tile reads row `m − 1` for its missing rows and stores none of them.
///
/// # Safety
/// The CPU has AVX-512F; `a` holds rows `< m` (stride `a_rs`) of depth `< k` (stride `a_cs`),
/// `b` holds `k` rows of `n` values (stride `b_rs`), `out` has room for `m` rows of `n` values
/// (stride `o_rs`), and `n ≤ 16·V`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tiles<const V: usize, const R: usize>(s: Shape, a: *const f32, b: *const f32, out: *mut f32, scale: f32) {
    use std::arch::x86_64::*;
    let mask = |v: usize| -> __mmask16 {
        let cols = s.n.saturating_sub(16 * v).min(16);
        ((1u32 << cols) - 1) as __mmask16
    };
    let masks: [__mmask16; V] = std::array::from_fn(mask);
    let scale = _mm512_set1_ps(scale);
    let mut i = 0;
    while i < s.m {
        let rows: [*const f32; R] = std::array::from_fn(|r| a.add((i + r).min(s.m - 1) * s.a_rs));
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for kk in 0..s.k {
            let brow = b.add(kk * s.b_rs);
            let y: [__m512; V] = std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], brow.add(16 * v)));
            for r in 0..R {
                let x = _mm512_set1_ps(*rows[r].add(kk * s.a_cs));
                for v in 0..V {
                    acc[r][v] = _mm512_fmadd_ps(x, y[v], acc[r][v]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(s.m - i) {
            let o = out.add((i + r) * s.o_rs);
            for v in 0..V {
                _mm512_mask_storeu_ps(o.add(16 * v), masks[v], _mm512_mul_ps(acc[v], scale));
            }
        }
        i += R;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gemm 0.19's f32 product of the same views, as `heads.rs` calls it.
    fn by_gemm((m, n, k): (usize, usize, usize), a: (&[f32], At), b: (&[f32], At), o: At, len: usize, scale: f32) -> Vec<f32> {
        let mut out = vec![f32::NAN; len];
        // SAFETY: the views stay inside their slices (the test's sizes), read_dst is false.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr().add(o.start),
                o.cs as isize,
                o.rs as isize,
                false,
                a.0.as_ptr().add(a.1.start),
                a.1.cs as isize,
                a.1.rs as isize,
                b.0.as_ptr().add(b.1.start),
                b.1.cs as isize,
                b.1.rs as isize,
                0.0,
                scale,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        out
    }

    /// Every layout attention's six products use (a factor contiguous along the depth or
    /// across it, the result row-major), over a grid of the sizes the direct product takes
    /// (full and short tiles, masked columns), at scales 1 and 1/√8: gemm's bits, value for
    /// value, on values whose products and sums round, with a NaN and an infinity among them
    /// (one NaN source a chain: see the module's doc); and nothing written outside the
    /// result's view.
    #[test]
    fn the_direct_product_gives_gemms_bits() {
        if !(crate::run::kernel::has_avx512()) {
            eprintln!("no AVX-512: the products stay gemm's, nothing to compare");
            return;
        }
        let wavy = |n: usize, p: f32| -> Vec<f32> { (0..n).map(|i| (0.37 * i as f32 + p).sin() * 3.0 + 0.01 * i as f32).collect() };
        let (mut a, b) = (wavy(200 * 128, 0.3), wavy(200 * 128, 1.1));
        (a[70], a[200]) = (f32::NAN, f32::INFINITY);
        let mut checked = 0;
        for (m, n, k) in [(32, 32, 16), (32, 16, 32), (17, 32, 64), (100, 9, 3), (64, 16, 8), (33, 31, 33), (9, 32, 64), (128, 24, 48), (20, 15, 60)] {
            assert!(takes(m, n, k), "({m}, {n}, {k}) is not taken");
            // (a row-major or transposed, b row-major or transposed), strides as heads.rs's views.
            let layouts = [
                (At { start: 3, rs: 64, cs: 1 }, At { start: 5, rs: 1, cs: 64 }),
                (At { start: 0, rs: m.max(k), cs: 1 }, At { start: 7, rs: 64, cs: 1 }),
                (At { start: 1, rs: 1, cs: m }, At { start: 2, rs: 64, cs: 1 }),
                (At { start: 1, rs: 1, cs: 130 }, At { start: 2, rs: 1, cs: 61 }),
            ];
            for (la, lb) in layouts {
                for scale in [1.0f32, 1.0 / 8f32.sqrt()] {
                    let o = At { start: 4, rs: n + 3, cs: 1 };
                    let len = 4 + m * (n + 3);
                    let want = by_gemm((m, n, k), (&a, la), (&b, lb), o, len, scale);
                    let mut got = vec![MaybeUninit::new(-7.0f32); len];
                    assert!(product((m, n, k), (&a, la), (&b, lb), (&mut got, o), scale));
                    // SAFETY: every value was initialised (-7, then the product's).
                    let got: Vec<f32> = got.iter().map(|v| unsafe { v.assume_init() }).collect();
                    for (at, (g, w)) in got.iter().zip(&want).enumerate() {
                        let inside = at >= o.start && (at - o.start) % o.rs < n;
                        let w = if inside { *w } else { -7.0 };
                        assert_eq!(g.to_bits(), w.to_bits(), "({m}, {n}, {k}) {la:?} {lb:?} scale {scale}: value {at}");
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 9 * 4 * 2);
    }

    /// Views that leave their slices are refused, nothing written: past the end by one value,
    /// by a row, by a stride whose arithmetic overflows, and a result that is not row-major.
    #[test]
    fn views_outside_their_slices_are_refused() {
        if !(crate::run::kernel::has_avx512()) {
            eprintln!("no AVX-512: the direct product takes nothing, nothing to refuse");
            return;
        }
        let (a, b) = (vec![1.0f32; 32 * 16], vec![1.0f32; 16 * 32]);
        let mut out = vec![MaybeUninit::new(0.0f32); 32 * 32];
        let (la, lb, o) = (At { start: 0, rs: 16, cs: 1 }, At { start: 0, rs: 32, cs: 1 }, At { start: 0, rs: 32, cs: 1 });
        // The sizes alone are taken: each refusal below is the views'.
        assert!(takes(32, 32, 16) && takes(32, 32, 17) && takes(33, 32, 16));
        assert!(product((32, 32, 16), (&a, la), (&b, lb), (&mut out, o), 1.0));
        out.fill(MaybeUninit::new(0.0));
        assert!(!product((32, 32, 17), (&a, la), (&b, lb), (&mut out, o), 1.0));
        assert!(!product((32, 32, 16), (&a, At { start: 1, ..la }), (&b, lb), (&mut out, o), 1.0));
        assert!(!product((33, 32, 16), (&a, la), (&b, lb), (&mut out, o), 1.0));
        assert!(!product((32, 32, 16), (&a, At { rs: usize::MAX / 8, ..la }), (&b, lb), (&mut out, o), 1.0));
        assert!(!product((32, 32, 16), (&a, la), (&b, At { start: usize::MAX, ..lb }), (&mut out, o), 1.0));
        assert!(!product((32, 32, 16), (&a, la), (&b, lb), (&mut out, At { cs: 2, ..o }), 1.0));
        // SAFETY: initialised to 0 above.
        assert!(out.iter().all(|v| unsafe { v.assume_init() } == 0.0));
    }
}
