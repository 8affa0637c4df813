//! The dense layer `x W + b` as one op, per position on any leading shape:
//! gemm adds the product into rows that start as the bias, and the backward
//! makes `g Wᵀ`, `xᵀ g` and the bias's column sums.
//!
//! Composed in Candle this was a reshape, a product, a bias add and a reshape
//! back, and Candle's backward makes and adds a zero gradient for each of those
//! tensors, a full pass over memory per node; and the product's output was
//! zeroed before gemm overwrote it. The bits are the same: gemm rounds the
//! product, and adding the bias rounds once more, as the bias add did.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::{dispatch, Kernel, Real};
use crate::error::Result;

/// `x W + b` for `x` `(…, in)`, `W` `(in, out)`, `b` `(out)`; the result is `(…, out)`.
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Linear { round: None, bias_last: false })?)
}

/// `x W`, then `+ b`: the product rounded before the bias is added, as Candle's product and a
/// bias add compose it, for every depth (gemm adding into the bias rounds otherwise when it
/// splits the depth past 512 or takes its depth ≤ 2 path, which fuses the add). One op with
/// [`linear`]'s backward, whose products and column sums are those of the two composed ops.
/// The recurrent layers' input projection, so its bits stay those of the composed path.
pub(crate) fn linear_bias_last(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Linear { round: None, bias_last: true })?)
}

/// Autocast's linear in f32 storage: `round(linear(x, round(W), round(b)))` (`cast::round`) in
/// one op, for f32 master weights `W` and `b` and a result in `low` (f16 or bf16). The gradients
/// are rounded as the casts' are: the one arriving at the result, and those of `W` and `b`
/// (the gradients of their half copies); the input's is left to its own cast.
pub(crate) fn linear_rounded(x: &Tensor, w: &Tensor, b: &Tensor, low: candle_core::DType) -> Result<Tensor> {
    use crate::run::kernel::cast::round;
    if !(x.dtype() == candle_core::DType::F32 && super::handles(x)) {
        return round(&linear(x, &round(w, low)?, &round(b, low)?)?, low);
    }
    Ok(x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, Linear { round: Some(low), bias_last: false })?)
}

/// gemm's parallelism as Candle's products choose it: its thread count. gemm splits the
/// output, not the sums, so the bits do not depend on it.
fn parallelism() -> gemm::Parallelism {
    match candle_core::utils::get_num_threads() {
        n if n > 1 => gemm::Parallelism::Rayon(n),
        _ => gemm::Parallelism::None,
    }
}

/// A strided matrix: its elements, rows, columns and strides.
pub(crate) struct Mat<'a, T> {
    v: &'a [T],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major `(rows, cols)` matrix.
    pub(crate) fn new(v: &'a [T], rows: usize, cols: usize) -> Self {
        Self { v, rows, cols, rs: cols, cs: 1 }
    }

    /// A `(rows, cols)` view of `v` with row stride `rs` and column stride `cs`.
    pub(super) fn strided(v: &'a [T], (rows, cols): (usize, usize), (rs, cs): (usize, usize)) -> Self {
        Self { v, rows, cols, rs, cs }
    }

    /// The transpose (a view: the strides swap).
    pub(crate) fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }
}

impl<T: Copy> Mat<'_, T> {
    /// Its values row-major, copied in blocks of 16 × 16 (see [`Mat::write_row_major`]).
    pub(crate) fn row_major(&self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        self.write_row_major(&mut out.spare_capacity_mut()[..self.rows * self.cols]);
        // SAFETY: `write_row_major` wrote every one of the rows × cols values.
        unsafe { out.set_len(self.rows * self.cols) };
        out
    }

    /// Writes its values row-major into `out` (rows × cols long), in blocks of 16 × 16 so
    /// that both the reads and the writes stay in a few cache lines whatever the strides (a
    /// transposed view read value by value puts each write in another line).
    pub(super) fn write_row_major(&self, out: &mut [std::mem::MaybeUninit<T>]) {
        const B: usize = 16;
        assert_eq!(out.len(), self.rows * self.cols, "a row-major copy's length");
        if self.rs == 1 && self.write_transposed(out) {
            return;
        }
        for i0 in (0..self.rows).step_by(B) {
            for j0 in (0..self.cols).step_by(B) {
                for j in j0..(j0 + B).min(self.cols) {
                    for i in i0..(i0 + B).min(self.rows) {
                        out[i * self.cols + j].write(self.v[i * self.rs + j * self.cs]);
                    }
                }
            }
        }
    }
}

impl<T: Copy> Mat<'_, T> {
    /// [`Mat::write_row_major`] of a transposed row-major matrix (`rs` 1) of 4-byte values:
    /// 8 × 8 blocks in AVX registers (`transpose.rs`), the rows and columns past them value by
    /// value; `false` (nothing written) without AVX2 or for other values.
    fn write_transposed(&self, out: &mut [std::mem::MaybeUninit<T>]) -> bool {
        let (rows, cols) = (self.rows, self.cols);
        let Some((r8, c8)) = super::transpose::blocks(self.v, self.cs, (rows, cols), out) else { return false };
        for (i, row) in out.chunks_exact_mut(cols).enumerate() {
            let from = if i < r8 { c8 } else { 0 };
            for (j, o) in row.iter_mut().enumerate().skip(from) {
                o.write(self.v[i + j * self.cs]);
            }
        }
        true
    }
}

/// Whether gemm computes `a · b` (`m × k` times `k × n`, row-major out) with its general
/// kernels, which sum each value over the depth in the same order whatever the factors'
/// layouts, so that a row-major copy of a factor gives the same bits. For one row or column,
/// a depth of 2 or less, or 256 values or fewer in all, gemm picks dot-product, matrix-vector
/// or small kernels by the layouts, which sum in other orders (`gemm-common` 0.19,
/// `gemm_basic_generic`).
pub(crate) fn general_kernels(m: usize, k: usize, n: usize) -> bool {
    m > 1 && n > 1 && k > 2 && m * n > 256
}

/// Checks that `a · b` fits `len` values and that the strides stay inside both factors.
fn check<T>(a: &Mat<T>, b: &Mat<T>, len: usize) -> candle_core::Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let last = |x: &Mat<T>| (x.rows.max(1) - 1) * x.rs + (x.cols.max(1) - 1) * x.cs;
    if b.rows != k || len != m * n || (m * k > 0 && last(a) >= a.v.len()) || (k * n > 0 && last(b) >= b.v.len()) {
        candle_core::bail!("linear: shapes do not match ({m}×{k} times {}×{n} into {len})", b.rows);
    }
    Ok(())
}

/// gemm of checked, non-empty factors into `dst` (row-major), added to it with `accumulate`.
///
/// gemm computes a row-major product as its transpose `bᵀ aᵀ`, packing `bᵀ` as its left
/// factor; when `b` is a transposed view (`g Wᵀ`, a convolution's `g colsᵀ`), that packing
/// gathers its `k · n` values one by one (`pack_generic_inner_loop`: 21% of a 10-1024-1024-1
/// MLP's step, its `g Wᵀ` gathering a 4 MB `W`). Where gathering `a`'s `m · k` values and
/// moving the `m · n` of the product costs less, the product is made column-major instead
/// (gemm then packs `a`) and moved to `dst` in blocks (not with `accumulate`, which only the
/// forward's bias rows take, on a row-major `W`): the same sums in the same order where
/// gemm's general kernels run ([`general_kernels`]; its depth blocks do not depend on the
/// orientation).
///
/// # Safety
/// [`check`] passed, `m·n·k > 0`, `dst` is valid for `m·n` writes (and reads with
/// `accumulate`), and T is f32 or f64.
unsafe fn gemm_into<T: candle_core::WithDType + Default>(a: &Mat<T>, b: &Mat<T>, dst: *mut T, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if !accumulate && column_major_first(a, b) {
        // A spare (a convolution makes this product once per sample): gemm overwrites its old
        // values without reading them.
        let mut t = super::spare::take::<T>(m * n);
        // SAFETY: `t` holds m·n values; the factors as the caller checked them.
        unsafe { gemm_column_major(a, b, t.as_mut_ptr()) };
        // SAFETY: the caller's `dst` is valid for m·n writes.
        let out = unsafe { std::slice::from_raw_parts_mut(dst.cast::<std::mem::MaybeUninit<T>>(), m * n) };
        Mat::new(&t, n, m).t().write_row_major(out);
        super::spare::give(t);
        return;
    }
    gemm::gemm(m, n, k, dst, 1, n as isize, accumulate, a.v.as_ptr(), a.cs as isize, a.rs as isize, b.v.as_ptr(), b.cs as isize, b.rs as isize, T::one(), T::one(), false, false, false, parallelism())
}

/// Whether [`gemm_into`] makes `a · b` column-major and moves it (see there).
fn column_major_first<T>(a: &Mat<T>, b: &Mat<T>) -> bool {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    b.cs != 1 && a.cs == 1 && m * (k + n) < k * n && general_kernels(m, k, n)
}

/// gemm of checked, non-empty factors into `dst` column-major (`(n, m)` row-major), not read.
///
/// # Safety
/// As [`gemm_into`], `dst` valid for `m·n` writes.
unsafe fn gemm_column_major<T: candle_core::WithDType + Default>(a: &Mat<T>, b: &Mat<T>, dst: *mut T) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // SAFETY: as the caller guarantees.
    unsafe {
        gemm::gemm(m, n, k, dst, m as isize, 1, false, a.v.as_ptr(), a.cs as isize, a.rs as isize, b.v.as_ptr(), b.cs as isize, b.rs as isize, T::one(), T::one(), false, false, false, parallelism());
    }
}

/// `a · b` into `out` with [`product_to`]'s bits, in the orientation gemm makes it in before
/// [`product_to`] would move it: `true` if `out` holds it column-major (the product's transpose,
/// `(n, m)` row-major), `false` if row-major. For a sum of such products (a convolution's
/// kernel gradient over the batch), added value by value in either layout and moved once.
pub(crate) fn product_either<T: candle_core::WithDType + Default>(a: Mat<T>, b: Mat<T>, out: &mut [T]) -> candle_core::Result<bool> {
    check(&a, &b, out.len())?;
    if out.is_empty() || a.cols == 0 {
        out.fill(T::zero());
        return Ok(false);
    }
    let cm = column_major_first(&a, &b);
    // SAFETY: checked just above; `out` holds m·n values, each written by gemm; gemm supports T (f32 and f64).
    unsafe {
        if cm {
            gemm_column_major(&a, &b, out.as_mut_ptr());
        } else {
            gemm_into(&a, &b, out.as_mut_ptr(), false);
        }
    }
    Ok(cm)
}

/// `out += a · b`, `out` row-major.
fn product_into<T: candle_core::WithDType + Default>(a: Mat<T>, b: Mat<T>, out: &mut [T]) -> candle_core::Result<()> {
    check(&a, &b, out.len())?;
    if out.is_empty() || a.cols == 0 {
        return Ok(());
    }
    // SAFETY: checked just above; `out` holds m·n initialised values; gemm supports T (f32 and f64: the kernels compute in `Dtypes::Wide`).
    unsafe { gemm_into(&a, &b, out.as_mut_ptr(), true) };
    Ok(())
}

/// `out = a · b`, `out` row-major, written by gemm without reading it.
pub(crate) fn product_to<T: candle_core::WithDType + Default>(a: Mat<T>, b: Mat<T>, out: &mut [T]) -> candle_core::Result<()> {
    check(&a, &b, out.len())?;
    if out.is_empty() || a.cols == 0 {
        out.fill(T::zero());
        return Ok(());
    }
    // SAFETY: checked just above; `out` holds m·n values, each written by gemm; gemm supports T (f32 and f64: the kernels compute in `Dtypes::Wide`).
    unsafe { gemm_into(&a, &b, out.as_mut_ptr(), false) };
    Ok(())
}

/// `a · b`, row-major, written by gemm without a zeroing pass first.
fn product<T: candle_core::WithDType + Default>(a: Mat<T>, b: Mat<T>) -> candle_core::Result<Vec<T>> {
    let len = a.rows * b.cols;
    check(&a, &b, len)?;
    if len == 0 || a.cols == 0 {
        return Ok(vec![T::zero(); len]);
    }
    let mut out = Vec::with_capacity(len);
    // SAFETY: checked just above; the capacity is m·n, and gemm without read_dst writes every
    // element without reading any, so all `len` are initialised after it.
    unsafe {
        gemm_into(&a, &b, out.as_mut_ptr(), false);
        out.set_len(len);
    }
    Ok(out)
}

/// `(rows, in, out)` of `x` and `W`.
fn sizes(x: &Layout, w: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let (input, out) = w.shape().dims2()?;
    match x.shape().dims().last() {
        Some(&d) if d == input => Ok((x.shape().elem_count() / input.max(1), input, out)),
        _ => candle_core::bail!("linear: input {:?} does not end in {input}", x.shape().dims()),
    }
}

struct Linear {
    /// Autocast in f32 storage to this half type (f32 only): round the weights and bias as read,
    /// the output, and the gradients (see [`linear_rounded`]).
    round: Option<candle_core::DType>,
    /// Add the bias to the rounded product (see [`linear_bias_last`]), not the product into the bias.
    bias_last: bool,
}

/// The forward on `(x, W, b)` of these sizes, its weights and result rounded in f32 storage.
struct Forward {
    round: Option<candle_core::DType>,
    bias_last: bool,
    n: (usize, usize, usize),
}

impl Forward {
    fn product<T: candle_core::WithDType + Default>(&self, x: &[T], w: &[T], b: &[T]) -> candle_core::Result<Vec<T>> {
        let (rows, input, out) = self.n;
        if b.len() != out {
            candle_core::bail!("linear: a bias of {} for {out} outputs", b.len());
        }
        if self.bias_last {
            let mut y = product(Mat::new(x, rows, input), Mat::new(w, input, out))?;
            for row in y.chunks_exact_mut(out.max(1)) {
                for (v, c) in row.iter_mut().zip(b) {
                    *v += *c;
                }
            }
            return Ok(y);
        }
        // The bias in every row, copied in doubling blocks (one row, two, four, ...): copied row
        // by row, the fill was 2.7% of the tiny GPT's step, a fifth more (perf, Intel Xeon).
        let mut y = Vec::with_capacity(rows * out);
        if rows > 0 {
            y.extend_from_slice(b);
        }
        while y.len() < rows * out {
            y.extend_from_within(..y.len().min(rows * out - y.len()));
        }
        product_into(Mat::new(x, rows, input), Mat::new(w, input, out), &mut y)?;
        Ok(y)
    }
}

impl Kernel<3> for Forward {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "linear"
    }

    /// f64, where nothing is rounded (autocast's rounding is in f32 storage).
    fn run<T: Real>(&self, [x, w, b]: [&[T]; 3]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(self.product(x, w, b)?))
    }

    fn run_f32(&self, [x, w, b]: [&[f32]; 3]) -> candle_core::Result<CpuStorage> {
        let round = super::cast::round_values;
        Ok(CpuStorage::F32(match self.round {
            Some(low) => round(&self.product(x, &round(w, low), &round(b, low))?, low),
            None => self.product(x, w, b)?,
        }))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, xl: &Layout, w: &CpuStorage, wl: &Layout, b: &CpuStorage, bl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = sizes(xl, wl)?;
        let y = dispatch(&Forward { round: self.round, bias_last: self.bias_last, n }, [(x, xl), (w, wl), (b, bl)])?;
        let mut dims = xl.shape().dims().to_vec();
        *dims.last_mut().expect("checked by sizes") = n.2;
        Ok((y, dims.into()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(low) = self.round else {
            let g = grad.contiguous()?;
            let dx = g.apply_op2_no_bwd(w, &Grad::Input)?;
            let dw = x.apply_op2_no_bwd(&g, &Grad::Weight)?;
            let db = super::bias::column_sums(&g, b.elem_count())?;
            return Ok((Some(dx), Some(dw), Some(db)));
        };
        let r = |t: &Tensor| super::cast::round_no_grad(t, low);
        let g = r(grad)?;
        let dx = g.apply_op2_no_bwd(&r(w)?, &Grad::Input)?;
        let dw = r(&x.apply_op2_no_bwd(&g, &Grad::Weight)?)?;
        let db = r(&super::bias::column_sums(&g, b.elem_count())?)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The products of the backward.
enum Grad {
    /// `g Wᵀ`, from `(g, W)`: the input's gradient, shaped as the input.
    Input,
    /// `xᵀ g`, from `(x, g)`: the weight's gradient, `(in, out)`.
    Weight,
}

impl Grad {
    fn product<T: candle_core::WithDType + Default>(&self, a: &[T], al: &Layout, b: &[T], bl: &Layout) -> candle_core::Result<(Vec<T>, Shape)> {
        match self {
            Grad::Input => {
                let (input, out) = bl.shape().dims2()?;
                let rows = al.shape().elem_count() / out.max(1);
                let dx = product(Mat::new(a, rows, out), Mat::new(b, input, out).t())?;
                let mut dims = al.shape().dims().to_vec();
                *dims.last_mut().expect("a gradient has a last dimension") = input;
                Ok((dx, dims.into()))
            }
            Grad::Weight => {
                let input = al.shape().dims().last().copied().unwrap_or(1);
                let out = bl.shape().dims().last().copied().unwrap_or(1);
                let rows = al.shape().elem_count() / input.max(1);
                let dw = product(Mat::new(a, rows, input).t(), Mat::new(b, rows, out))?;
                Ok((dw, (input, out).into()))
            }
        }
    }
}

impl CustomOp2 for Grad {
    fn name(&self) -> &'static str {
        "linear-backward"
    }

    fn cpu_fwd(&self, a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        dispatch(&GradOf { grad: self, layouts: (al, bl) }, [(a, al), (b, bl)])
    }
}

/// A [`Grad`] product with its factors' layouts.
struct GradOf<'a> {
    grad: &'a Grad,
    layouts: (&'a Layout, &'a Layout),
}

impl Kernel<2> for GradOf<'_> {
    type Out = (CpuStorage, Shape);

    fn name(&self) -> &str {
        "linear backward"
    }

    fn run<T: Real>(&self, [a, b]: [&[T]; 2]) -> candle_core::Result<(CpuStorage, Shape)> {
        let (v, s) = self.grad.product(a, self.layouts.0, b, self.layouts.1)?;
        Ok((T::to_cpu_storage_owned(v), s))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    /// By hand: x = [[1, 2], [3, 4]] (as a (1, 2, 2) sequence), W = [[1, 0, 2], [0, 1, 3]],
    /// b = [10, 20, 30]: y = [[11, 22, 38], [13, 24, 48]]. With upstream gradient
    /// G = [[1, 0, 1], [0, 1, 0]]: dx = G Wᵀ = [[3, 3], [0, 1]], dW = xᵀ G = [[1, 3, 1], [2, 4, 2]],
    /// db = column sums of G = [1, 1, 1].
    #[test]
    fn a_sequence_through_linear_by_hand() {
        let dev = Device::Cpu;
        let x = Var::new(&[[[1.0f64, 2.0], [3.0, 4.0]]], &dev).unwrap();
        let w = Var::new(&[[1.0f64, 0.0, 2.0], [0.0, 1.0, 3.0]], &dev).unwrap();
        let b = Var::new(&[10.0f64, 20.0, 30.0], &dev).unwrap();
        let y = super::linear(&x, &w, &b).unwrap();
        assert_eq!(y.to_vec3::<f64>().unwrap(), [[[11.0, 22.0, 38.0], [13.0, 24.0, 48.0]]]);
        let up = Tensor::new(&[[[1.0f64, 0.0, 1.0], [0.0, 1.0, 0.0]]], &dev).unwrap();
        let g = (y * up).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(&x).unwrap().to_vec3::<f64>().unwrap(), [[[3.0, 3.0], [0.0, 1.0]]]);
        assert_eq!(g.get(&w).unwrap().to_vec2::<f64>().unwrap(), [[1.0, 3.0, 1.0], [2.0, 4.0, 2.0]]);
        assert_eq!(g.get(&b).unwrap().to_vec1::<f64>().unwrap(), [1.0, 1.0, 1.0]);
    }

    /// The fused op gives the bits of Candle's product plus the bias add, on values whose
    /// products round (f32, 7 rows of 13 into 5).
    #[test]
    fn the_same_bits_as_product_then_bias() {
        let dev = Device::Cpu;
        let vals = |n: usize, p: f32| (0..n).map(|i| (p + 0.77 * i as f32).sin() * 3.3).collect::<Vec<f32>>();
        let x = Tensor::from_vec(vals(91, 0.3), (7, 13), &dev).unwrap();
        let w = Tensor::from_vec(vals(65, 1.1), (13, 5), &dev).unwrap();
        let b = Tensor::from_vec(vals(5, 2.9), 5, &dev).unwrap();
        let fused = super::linear(&x, &w, &b).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let composed = x.matmul(&w).unwrap().broadcast_add(&b).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(fused.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), composed.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    }

    /// A product with a transposed factor, made column-major and moved, gives gemm's bits for
    /// the strided view itself, on shapes around the sizes where gemm picks other kernels (one row or column,
    /// depth 2, 256 values) and past its depth block of 512; and each value is the dot
    /// product it should be (within f32's rounding of the f64 sum).
    #[test]
    fn a_transposed_factor_keeps_gemms_bits() {
        let vals = |n: usize, p: f32| (0..n).map(|i| (p + 0.77 * i as f32).sin() * 3.3).collect::<Vec<f32>>();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (m, k, n) in [(1, 9, 40), (40, 9, 1), (20, 2, 30), (16, 5, 16), (16, 30, 16), (16, 30, 17), (3, 40, 90), (2, 300, 129), (40, 300, 200), (7, 700, 45), (70, 700, 3), (33, 17, 65)] {
            let a = vals(m * k, 0.3);
            let w = vals(n * k, 1.1); // `b` is the transpose of this row-major (n, k) matrix
            let ours = super::product(super::Mat::new(&a, m, k), super::Mat::new(&w, n, k).t()).unwrap();
            let mut strided = vec![0.0f32; m * n];
            // SAFETY: sizes as allocated; the strides address `a` (m, k) and `w`ᵀ (k, n) inside their slices.
            unsafe {
                gemm::gemm(m, n, k, strided.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize, w.as_ptr(), k as isize, 1, 1.0, 1.0, false, false, false, gemm::Parallelism::None);
            }
            assert_eq!(bits(&ours), bits(&strided), "{m}×{k}×{n}");
            for (i, j) in [(0, 0), (m - 1, n - 1), (m / 2, n / 3)] {
                let exact: f64 = (0..k).map(|d| f64::from(a[i * k + d]) * f64::from(w[j * k + d])).sum();
                let scale: f64 = (0..k).map(|d| (f64::from(a[i * k + d]) * f64::from(w[j * k + d])).abs()).sum();
                assert!((f64::from(ours[i * n + j]) - exact).abs() <= scale * k as f64 * 6e-8, "{m}×{k}×{n} at ({i}, {j})");
            }
        }
    }

    /// [`super::product_either`] gives [`super::product_to`]'s bits, row-major or (then said so)
    /// column-major, on shapes taking each: a transposed right factor that gemm's general kernels
    /// take column-major first, one too small for them (256 values), and a row-major one.
    #[test]
    fn either_orientation_gives_the_bits_of_product_to() {
        let vals = |n: usize, p: f32| (0..n).map(|i| (p + 0.77 * i as f32).sin() * 3.3).collect::<Vec<f32>>();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (m, k, n, transposed, column_major) in [(32, 121, 144, true, true), (16, 676, 9, true, false), (16, 30, 16, true, false), (32, 121, 144, false, false)] {
            let (a, w) = (vals(m * k, 0.3), vals(n * k, 1.1));
            let b = || if transposed { super::Mat::new(&w, n, k).t() } else { super::Mat::new(&w, k, n) };
            let mut want = vec![0.0f32; m * n];
            super::product_to(super::Mat::new(&a, m, k), b(), &mut want).unwrap();
            let mut got = vec![0.0f32; m * n];
            let cm = super::product_either(super::Mat::new(&a, m, k), b(), &mut got).unwrap();
            assert_eq!(cm, column_major, "{m}×{k}×{n}");
            let got = if cm { super::Mat::new(&got, n, m).t().row_major() } else { got };
            assert_eq!(bits(&got), bits(&want), "{m}×{k}×{n}");
        }
    }

    /// `linear_bias_last` gives the bits of Candle's product then the bias add, forward and
    /// every gradient, at the depths where adding the product into the bias rounds otherwise:
    /// 2 (gemm fuses the add into its multiply-add) and 700 (gemm splits the depth at 512).
    #[test]
    fn bias_last_gives_the_composed_bits_at_every_depth() {
        let dev = Device::Cpu;
        let vals = |n: usize, p: f32| (0..n).map(|i| (p + 0.77 * i as f32).sin() * 3.3).collect::<Vec<f32>>();
        for depth in [2, 13, 700] {
            let x = Var::from_vec(vals(3 * 7 * depth, 0.3), (3, 7, depth), &dev).unwrap();
            let w = Var::from_vec(vals(depth * 5, 1.1), (depth, 5), &dev).unwrap();
            let b = Var::from_vec(vals(5, 2.9), 5, &dev).unwrap();
            let up = Tensor::from_vec(vals(3 * 7 * 5, 0.5), (3, 7, 5), &dev).unwrap();
            let bits = |y: Tensor| {
                let g = (&y * &up).unwrap().sum_all().unwrap().backward().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                [flat(&y), flat(g.get(&x).unwrap()), flat(g.get(&w).unwrap()), flat(g.get(&b).unwrap())]
            };
            let fused = bits(super::linear_bias_last(&x, &w, &b).unwrap());
            let flat = x.reshape((21, depth)).unwrap();
            let composed = bits(crate::run::kernel::bias::bias_add(&flat.matmul(&w).unwrap(), &b).unwrap().reshape((3, 7, 5)).unwrap());
            assert_eq!(fused, composed, "depth {depth}");
            // Adding the product into the bias (`linear`, PyTorch's addmm order) rounds otherwise there.
            let inside = bits(super::linear(&x, &w, &b).unwrap());
            assert_eq!(inside[0] != composed[0], depth != 13, "depth {depth}");
        }
    }
}
