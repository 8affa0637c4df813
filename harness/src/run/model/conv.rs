//! The kernels of the convolution and image ops (`ops::conv`, `ops::pool2d`,
//! `ops::flatten`): `conv1d` over sequences (the width as channels, as
//! `torch.nn.Conv1d` sees a transposed sequence), `conv2d` over images,
//! `flatten`, and `max_pool2d` / `avg_pool2d` whose windows tile the image
//! (stride = kernel; rows and columns past the last whole window are dropped
//! first, which is PyTorch's floor mode). Kernels are kept in PyTorch's layout,
//! `(out, in, k)` and `(out, in, k, k)`.
//!
//! On the CPU the convolutions are one op each way (`run::kernel::conv`: im2col and gemm one
//! sample at a time, the batch's columns kept from a training forward for its backward, a conv1d as a conv2d of height 1; f16 and bf16 computed in f32 and
//! rounded once, which is PyTorch 2.15's CPU bf16 convolution bit for bit, and its f16
//! forward), and the poolings in every float dtype (`run::kernel::pool`). Other devices keep
//! the composed forms below (im2col by `index_select` and one product), whose backward
//! passes are Candle's.

use candle_core::Tensor;

use crate::error::Result;
use crate::run::{kernel, opmath};

/// The positions `start, start + stride, …` (`n` of them), as an index tensor.
fn taps(start: usize, stride: usize, n: usize, dev: &candle_core::Device) -> Result<Tensor> {
    Ok(Tensor::from_vec((0..n).map(|r| (start + r * stride) as u32).collect::<Vec<_>>(), n, dev)?)
}

/// `(batch, seq, in)` convolved by `k` `(out, in, K)` plus `bias`: `(batch, seq', out)`.
///
/// Written as im2col (each kernel tap's positions picked by `index_select`) and one matrix
/// product, whose backward passes are Candle's well-trodden ones: Candle 0.11's own `conv1d`
/// backward gives wrong gradients for a batch of more than one (the test below holds
/// PyTorch's numbers), and its `conv2d` backward assumes square inputs (a 9 × 8 image failed
/// with a shape mismatch; the confirmation tests train one beside PyTorch).
pub(crate) fn conv1d(h: &Tensor, k: &Tensor, bias: &Tensor, stride: usize, padding: usize, training: bool) -> Result<Tensor> {
    if kernel::takes(h, kernel::Dtypes::Floats) {
        let ((b, len, c), (out, _, taps)) = (h.dims3()?, k.dims3()?);
        let x = h.transpose(1, 2)?.contiguous()?.reshape((b, c, 1, len))?;
        let k = k.reshape((out, c, 1, taps))?;
        let y = opmath::all_in_f32(&[&x, &k, bias], |t| kernel::conv::conv(&t[0], &t[1], &t[2], [1, stride], [0, padding], training))?;
        return Ok(y.squeeze(2)?.transpose(1, 2)?.contiguous()?);
    }
    composed_conv1d(h, k, bias, stride, padding)
}

/// [`conv1d`] composed of Candle's ops: im2col by `index_select` and one product.
fn composed_conv1d(h: &Tensor, k: &Tensor, bias: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (b, _, c) = h.dims3()?;
    let (out, _, kernel) = k.dims3()?;
    let x = h.pad_with_zeros(1, padding, padding)?.contiguous()?;
    let len = (x.dim(1)? - kernel) / stride + 1;
    // (batch, len, in, K): for each output position, the K inputs it reads, channel-major as the kernel.
    let cols = (0..kernel).map(|j| Ok(x.index_select(&taps(j, stride, len, h.device())?, 1)?)).collect::<Result<Vec<_>>>()?;
    let patches = Tensor::stack(&cols, 3)?.reshape((b * len, c * kernel))?;
    let y = patches.matmul(&k.reshape((out, c * kernel))?.t()?)?.broadcast_add(bias)?;
    Ok(y.reshape((b, len, out))?)
}

/// `(batch, c, h, w)` convolved by `k` `(out, c, K, K)` plus `bias`: `(batch, out, h', w')`, as
/// im2col and one matrix product (see [`conv1d`]).
pub(crate) fn conv2d(h: &Tensor, k: &Tensor, bias: &Tensor, stride: usize, padding: usize, training: bool) -> Result<Tensor> {
    if kernel::takes(h, kernel::Dtypes::Floats) {
        return opmath::all_in_f32(&[h, k, bias], |t| kernel::conv::conv(&t[0], &t[1], &t[2], [stride; 2], [padding; 2], training));
    }
    composed_conv2d(h, k, bias, stride, padding)
}

/// [`conv2d`] composed of Candle's ops: im2col by `index_select` and one product per sample.
fn composed_conv2d(h: &Tensor, k: &Tensor, bias: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (b, c, _, _) = h.dims4()?;
    let (out, _, kernel, _) = k.dims4()?;
    let x = h.pad_with_zeros(2, padding, padding)?.pad_with_zeros(3, padding, padding)?.contiguous()?;
    let (rows, cols) = ((x.dim(2)? - kernel) / stride + 1, (x.dim(3)? - kernel) / stride + 1);
    let dev = h.device();
    let mut parts = Vec::with_capacity(kernel * kernel);
    for i in 0..kernel {
        let band = x.index_select(&taps(i, stride, rows, dev)?, 2)?;
        for j in 0..kernel {
            parts.push(band.index_select(&taps(j, stride, cols, dev)?, 3)?);
        }
    }
    // (batch, c, K·K, rows, cols) → (batch, c·K·K, rows·cols): the kernel's (c, i, j) order.
    let patches = Tensor::stack(&parts, 2)?.reshape((b, c * kernel * kernel, rows * cols))?;
    let y = k.reshape((out, c * kernel * kernel))?.broadcast_matmul(&patches)?;
    Ok(y.broadcast_add(&bias.reshape((1, out, 1))?)?.reshape((b, out, rows, cols))?)
}

/// Everything after the batch as one vector.
pub(crate) fn flatten(h: &Tensor) -> Result<Tensor> {
    Ok(h.flatten_from(1)?)
}

/// Max (or mean) of each `kernel × kernel` window, the image first cut to whole windows.
///
/// The mean is PyTorch's CPU `avg_pool2d` (`AvgPoolKernel.cpp`: an `opmath_type` sum over the
/// window, row by row, divided by `k²`, one rounding): Candle's own sums an f16 window in f16
/// (four 30000s overflow to inf where PyTorch returns 30000) and multiplies by `1/k²`. The max
/// is [`opmath::max`] over each window in row-major order, PyTorch's `max_pool2d`: a NaN wins
/// and the gradient goes to the window's first maximum (Candle 0.11's `max_pool2d` backward
/// scales it by `1/k²` as well; tests below hold PyTorch's numbers).
pub(crate) fn pool2d(h: &Tensor, kernel: usize, max: bool) -> Result<Tensor> {
    if crate::run::kernel::takes(h, crate::run::kernel::Dtypes::Floats) {
        return crate::run::kernel::pool::pool2d(h, kernel, max);
    }
    composed_pool2d(h, kernel, max)
}

/// [`pool2d`] composed of Candle's ops (other devices).
fn composed_pool2d(h: &Tensor, kernel: usize, max: bool) -> Result<Tensor> {
    let (b, c, rows, cols) = h.dims4()?;
    let (r, q) = (rows / kernel, cols / kernel);
    let whole = h.narrow(2, 0, r * kernel)?.narrow(3, 0, q * kernel)?.contiguous()?.reshape((b, c, r, kernel, q, kernel))?;
    if max {
        let windows = whole.permute((0, 1, 2, 4, 3, 5))?.contiguous()?.reshape((b, c, r, q, kernel * kernel))?;
        return opmath::max(&windows, 4);
    }
    // Summing dims 3 and 5 of the contiguous view visits each window row by row, in order.
    opmath::in_f32(&whole, |w| opmath::div_count(&w.sum((3, 5))?, kernel * kernel))
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    /// PyTorch 2.15, f64: `x[b][c][l] = sin(15b + 5c + l + 0.1)` `(2, 3, 5)`, kernel
    /// `k[o][c][j] = 0.5 cos(6o + 2c + j)` `(2, 3, 2)`, `y = F.conv1d(x, k)`, loss `(y ** 2).sum() / 2`;
    /// `k.grad` and `x.grad` of the second example (Candle's own conv1d gets both wrong).
    #[test]
    fn conv1d_gradients_match_pytorch_for_a_batch_of_two() {
        let dev = Device::Cpu;
        let x: Vec<f64> = (0..30).map(|i| ((i / 15) as f64 * 15.0 + ((i / 5) % 3) as f64 * 5.0 + (i % 5) as f64 + 0.1).sin()).collect();
        let k: Vec<f64> = (0..12).map(|i| 0.5 * ((i / 6) as f64 * 6.0 + ((i / 2) % 3) as f64 * 2.0 + (i % 2) as f64).cos()).collect();
        let x = Var::from_tensor(&Tensor::from_vec(x, (2, 3, 5), &dev).unwrap()).unwrap();
        let k = Var::from_tensor(&Tensor::from_vec(k, (2, 3, 2), &dev).unwrap()).unwrap();
        // conv1d takes (batch, seq, width): the PyTorch input transposed, and a zero bias.
        let h = x.as_tensor().transpose(1, 2).unwrap();
        let y = super::conv1d(&h, k.as_tensor(), &Tensor::zeros(2, candle_core::DType::F64, &dev).unwrap(), 1, 0, true).unwrap();
        let g = (y.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let want_k = [
            1.08733618372182,
            2.751641001203982,
            -2.157788737716401,
            0.3254086296712196,
            -2.3115023219389608,
            -2.5670287550817186,
            1.6906435436978415,
            3.5431585720619316,
            -2.517184251656359,
            0.7500980160212979,
            -3.118703515774758,
            -3.1176096869894687,
        ];
        let want_x = [-0.26960447224723505, -0.9643062544488927, -1.1108020768900662, -0.23603159256474945, 0.1036175773791651];
        for (a, b) in flat(g.get(k.as_tensor()).unwrap()).iter().zip(want_k).chain(flat(g.get(x.as_tensor()).unwrap())[15..20].iter().zip(want_x)) {
            assert!((a - b).abs() < 1e-13, "{a} vs PyTorch {b}");
        }
    }

    /// PyTorch 2.15, f64: `x[b][c][i][j] = sin(31b + 12c + 4i + j + 0.2)` `(2, 2, 3, 4)` (not
    /// square), `k[o][c][i][j] = 0.3 cos(18o + 9c + 3i + j)` `(2, 2, 3, 3)`, bias [0.1, -0.2],
    /// `F.conv2d(x, k, bias, stride=2, padding=1)`, loss `(y ** 2).sum() / 2`.
    #[test]
    fn conv2d_and_its_gradients_match_pytorch_on_a_non_square_image() {
        let dev = Device::Cpu;
        let x: Vec<f64> = (0..48).map(|n| ((n / 24) as f64 * 31.0 + ((n / 12) % 2) as f64 * 12.0 + ((n / 4) % 3) as f64 * 4.0 + (n % 4) as f64 + 0.2).sin()).collect();
        let k: Vec<f64> = (0..36).map(|n| 0.3 * ((n / 18) as f64 * 18.0 + ((n / 9) % 2) as f64 * 9.0 + ((n / 3) % 3) as f64 * 3.0 + (n % 3) as f64).cos()).collect();
        let x = Var::from_tensor(&Tensor::from_vec(x, (2, 2, 3, 4), &dev).unwrap()).unwrap();
        let k = Var::from_tensor(&Tensor::from_vec(k, (2, 2, 3, 3), &dev).unwrap()).unwrap();
        let b = Var::new(&[0.1f64, -0.2], &dev).unwrap();
        let y = super::conv2d(x.as_tensor(), k.as_tensor(), b.as_tensor(), 2, 1, true).unwrap();
        assert_eq!(y.dims(), [2, 2, 2, 2]);
        let g = (y.sqr().unwrap().sum_all().unwrap() * 0.5).unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let checks = [
            (flat(&y)[..4].to_vec(), vec![0.1265797798004082, 0.16592558111284367, 0.31593598863441325, 0.22055135090829586]),
            (flat(g.get(k.as_tensor()).unwrap())[..6].to_vec(), vec![-0.3898812633582805, -0.5418253875023826, -0.26743687063230126, 0.3998536077522958, 0.5956286854499377, -0.01977716646482483]),
            (
                flat(g.get(x.as_tensor()).unwrap())[24..30].to_vec(),
                vec![0.14629676627012791, 0.07012136390008221, 0.017028106818349525, 0.03032635804844085, -0.16794072906896917, -0.09329434490456137],
            ),
            (flat(g.get(b.as_tensor()).unwrap()), vec![1.4161407920231353, -1.5083956737518525]),
        ];
        for (got, want) in checks {
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() < 1e-13, "{a} vs PyTorch {b}");
            }
        }
    }

    #[test]
    fn max_pool_sends_the_whole_gradient_to_each_window_maximum() {
        // A 3 × 4 image pooled by 2: the last row is dropped (floor mode); windows
        // [[1, 5], [2, 0]] and [[3, 4], [7, 6]] have maxima 5 and 7, which get gradient 1.
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::from_vec(vec![1.0f64, 5.0, 3.0, 4.0, 2.0, 0.0, 7.0, 6.0, 9.0, 9.0, 9.0, 9.0], (1, 1, 3, 4), &dev).unwrap()).unwrap();
        let y = super::pool2d(x.as_tensor(), 2, true).unwrap();
        assert_eq!(y.flatten_all().unwrap().to_vec1::<f64>().unwrap(), [5.0, 7.0]);
        let g = y.sum_all().unwrap().backward().unwrap();
        let gx = g.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(gx, [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let mean = super::pool2d(x.as_tensor(), 2, false).unwrap();
        assert_eq!(mean.flatten_all().unwrap().to_vec1::<f64>().unwrap(), [2.0, 5.0]);
    }

    fn image(v: &[f32], side: usize, dtype: DType) -> Tensor {
        Tensor::from_vec(v.to_vec(), (1, 1, side, side), &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1().unwrap()
    }

    /// issue 25: a 2 × 2 image of 30000s, `F.avg_pool2d(x, 2)` in PyTorch 2.15: 30000 in f16
    /// (an f32 sum, one rounding), 29952 in bf16 (30000 is 29952 there), where Candle's own
    /// avg_pool2d sums in f16 and overflows.
    #[test]
    fn avg_pool_of_a_half_image_of_30000s_is_30000_not_inf() {
        for (dtype, want) in [(DType::F16, 30000.0), (DType::BF16, 29952.0)] {
            let x = image(&[30000.0; 4], 2, dtype);
            assert_eq!(values(&super::pool2d(&x, 2, false).unwrap()), [want], "{dtype:?}");
            assert_eq!(values(&super::pool2d(&x, 2, true).unwrap()), [want], "{dtype:?}");
        }
        assert!(values(&image(&[30000.0; 4], 2, DType::F16).avg_pool2d(2).unwrap())[0].is_infinite(), "Candle's own overflows");
    }

    /// PyTorch 2.15 `F.avg_pool2d(x, 2)` of `[[1, e], [e, 0]]`, e = 2⁻¹¹ in f16 and 2⁻⁸ in bf16:
    /// 0.250244140625 and 0.251953125 (`(1 + 2e) / 4`, one rounding); summed in the dtype,
    /// `1 + e` rounds to 1 (a tie to even) and the mean is 0.25.
    #[test]
    fn avg_pool_rounds_once_as_pytorch() {
        for (dtype, e, want) in [(DType::F16, 2f32.powi(-11), 0.250244140625), (DType::BF16, 2f32.powi(-8), 0.251953125)] {
            let x = image(&[1.0, e, e, 0.0], 2, dtype);
            assert_eq!(values(&super::pool2d(&x, 2, false).unwrap()), [want], "{dtype:?}");
            assert_eq!(values(&x.avg_pool2d(2).unwrap()), [0.25], "{dtype:?}: Candle's own sums in the dtype");
        }
        // f32, a 3 × 3 window summing to 17: PyTorch divides, 1.8888888359069824; 17 · f32(1/9)
        // (Candle's avg_pool2d) is 1.888888955116272.
        let mut v = [1.0f32; 9];
        v[0] = 9.0;
        assert_eq!(values(&super::pool2d(&image(&v, 3, DType::F32), 3, false).unwrap()), [1.8888888359069824]);
    }

    /// PyTorch 2.15: `F.avg_pool2d(x, 3).sum().backward()` on a 3 × 3 image gives each pixel
    /// `1/9` in the dtype: 0.111083984375 (f16), 0.111328125 (bf16).
    #[test]
    fn avg_pool_gradient_in_half_dtypes_matches_pytorch() {
        for (dtype, want) in [(DType::F16, 0.111083984375f64), (DType::BF16, 0.111328125)] {
            let x = Var::from_tensor(&image(&[1.0; 9], 3, dtype)).unwrap();
            let g = super::pool2d(x.as_tensor(), 3, false).unwrap().sum_all().unwrap().backward().unwrap();
            let gx = g.get(x.as_tensor()).unwrap();
            assert_eq!((gx.dtype(), values(gx)), (dtype, vec![want; 9]), "{dtype:?}");
        }
    }

    /// PyTorch 2.15, f32, f16 and bf16 alike: `F.max_pool2d` of `[[2, 2], [2, 1]]` sends the
    /// gradient to the first 2 only, `[1, 0, 0, 0]` (Candle's max sends it to all three), and
    /// `[[1, nan], [3, 2]]` pools to NaN (Candle's max skips the NaN: 3).
    #[test]
    fn max_pool_takes_the_first_maximum_and_lets_nan_through() {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let x = Var::from_tensor(&image(&[2.0, 2.0, 2.0, 1.0], 2, dtype)).unwrap();
            let g = super::pool2d(x.as_tensor(), 2, true).unwrap().sum_all().unwrap().backward().unwrap();
            assert_eq!(values(g.get(x.as_tensor()).unwrap()), [1.0, 0.0, 0.0, 0.0], "{dtype:?}");
            let nan = super::pool2d(&image(&[1.0, f32::NAN, 3.0, 2.0], 2, dtype), 2, true).unwrap();
            assert!(values(&nan)[0].is_nan(), "{dtype:?}");
        }
    }
    /// f32 values whose products and sums round: `sin(0.37·i + p)·3`.
    fn wavy(n: usize, p: f32, dims: &[usize]) -> Tensor {
        Tensor::from_vec((0..n).map(|i| (0.37 * i as f32 + p).sin() * 3.0).collect::<Vec<f32>>(), dims, &Device::Cpu).unwrap()
    }

    /// The output and the gradients of x, k and b (in that order) of `f`, as bits, under a
    /// loss `Σ y·u` with `u` wavy.
    fn bits(f: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor, x: &Tensor, k: &Tensor, b: &Tensor) -> Vec<Vec<u32>> {
        let (x, k, b) = (Var::from_tensor(x).unwrap(), Var::from_tensor(k).unwrap(), Var::from_tensor(b).unwrap());
        let y = f(x.as_tensor(), k.as_tensor(), b.as_tensor());
        let u = wavy(y.elem_count(), 0.9, y.dims());
        let g = (&y * &u).unwrap().sum_all().unwrap().backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
        vec![flat(&y), flat(g.get(x.as_tensor()).unwrap()), flat(g.get(k.as_tensor()).unwrap()), flat(g.get(b.as_tensor()).unwrap())]
    }

    /// The fused conv2d gives the composed path's bits, forward and every gradient, in f32 on
    /// non-square images, with stride and padding (the bundled CNNs' traces rest on it).
    #[test]
    fn fused_conv2d_gives_the_composed_bits() {
        for (stride, padding, kernel) in [(1, 0, 3), (1, 1, 3), (2, 1, 3), (3, 2, 2), (1, 0, 1)] {
            let x = wavy(3 * 4 * 9 * 7, 0.1, &[3, 4, 9, 7]);
            let k = wavy(5 * 4 * kernel * kernel, 1.3, &[5, 4, kernel, kernel]);
            let b = wavy(5, 2.2, &[5]);
            let fused = bits(|x, k, b| super::conv2d(x, k, b, stride, padding, true).unwrap(), &x, &k, &b);
            let composed = bits(|x, k, b| super::composed_conv2d(x, k, b, stride, padding).unwrap(), &x, &k, &b);
            for (part, (f, c)) in ["y", "dx", "dk", "db"].iter().zip(fused.iter().zip(&composed)) {
                assert!(f == c, "stride {stride} padding {padding} kernel {kernel}: {part} differs");
            }
        }
    }

    /// Where the kernel's gradient is summed in gemm's column-major layout and moved once (16
    /// kernels of 36 taps over 100 or 144 positions: `linear::general_kernels`), for batches of
    /// 1 and 3, and for a model's input (not tracked: the kept columns serve the kernel's
    /// gradient alone, no input gradient is made): the composed path's bits (but for the bias's
    /// gradient of a batch of 1, summed in another order there).
    #[test]
    fn fused_conv2d_gives_the_composed_bits_for_wide_kernels_and_an_untracked_input() {
        let flat = |t: &Tensor| -> Vec<u32> { t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect() };
        for (batch, padding) in [(1, 0), (3, 0), (3, 1)] {
            let x = wavy(batch * 4 * 12 * 12, 0.1, &[batch, 4, 12, 12]);
            let (k, b) = (wavy(16 * 4 * 9, 1.3, &[16, 4, 3, 3]), wavy(16, 2.2, &[16]));
            let fused = bits(|x, k, b| super::conv2d(x, k, b, 1, padding, true).unwrap(), &x, &k, &b);
            let composed = bits(|x, k, b| super::composed_conv2d(x, k, b, 1, padding).unwrap(), &x, &k, &b);
            // For a batch of 1 the composed bias's gradient is a sum over the last dimension
            // alone, which Candle vectorises (8 lanes, 4 accumulators), not the flat order the
            // kernel keeps (`kernel::conv`'s own test holds that order against a plain loop).
            let parts = if batch == 1 { 3 } else { 4 };
            for (part, (f, c)) in ["y", "dx", "dk", "db"].iter().zip(fused.iter().zip(&composed)).take(parts) {
                let n = f.iter().zip(c).filter(|(a, b)| a != b).count();
                assert!(n == 0, "batch {batch} padding {padding}: {part} differs in {n} of {} values", f.len());
            }
            let (kv, bv) = (Var::from_tensor(&k).unwrap(), Var::from_tensor(&b).unwrap());
            let y = super::conv2d(&x, kv.as_tensor(), bv.as_tensor(), 1, padding, true).unwrap();
            let g = (&y * wavy(y.elem_count(), 0.9, y.dims())).unwrap().sum_all().unwrap().backward().unwrap();
            let got = [flat(&y), flat(g.get(kv.as_tensor()).unwrap()), flat(g.get(bv.as_tensor()).unwrap())];
            for (part, (f, c)) in ["y", "dk", "db"].iter().zip(got.iter().zip([&composed[0], &composed[2], &composed[3]])).take(parts - 1) {
                assert!(f == c, "batch {batch} padding {padding}, untracked input: {part} differs");
            }
        }
    }

    /// The fused conv1d agrees with the composed path to f32 rounding: its products are one
    /// gemm per sample, `(out × c·k) · (c·k × len')`, where the composed path made one of the
    /// whole batch, `(b·len' × c·k) · (c·k × out)`, and gemm's rounding differs between the two
    /// (the weight's gradient is summed sample by sample, not in one product).
    #[test]
    fn fused_conv1d_agrees_with_the_composed_path() {
        for (stride, padding) in [(1, 1), (2, 1), (1, 0), (3, 2)] {
            let (x, k, b) = (wavy(4 * 11 * 3, 0.4, &[4, 11, 3]), wavy(6 * 3 * 3, 1.7, &[6, 3, 3]), wavy(6, 0.2, &[6]));
            let fused = bits(|x, k, b| super::conv1d(x, k, b, stride, padding, true).unwrap(), &x, &k, &b);
            let composed = bits(|x, k, b| super::composed_conv1d(x, k, b, stride, padding).unwrap(), &x, &k, &b);
            for (f, c) in fused.iter().zip(&composed) {
                for (a, b) in f.iter().zip(c) {
                    let (a, b) = (f32::from_bits(*a), f32::from_bits(*b));
                    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "stride {stride} padding {padding}: {a} vs {b}");
                }
            }
        }
    }

    /// The fused poolings give the composed path's bits, forward and backward, in f32 and f16.
    #[test]
    fn fused_pooling_gives_the_composed_bits() {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for (max, kernel) in [(true, 2), (true, 3), (false, 2), (false, 3)] {
                let x = wavy(2 * 3 * 7 * 8, 0.3, &[2, 3, 7, 8]).to_dtype(dtype).unwrap();
                let run = |f: &dyn Fn(&Tensor) -> Tensor| {
                    let v = Var::from_tensor(&x).unwrap();
                    let y = f(v.as_tensor());
                    let u = wavy(y.elem_count(), 0.9, y.dims()).to_dtype(dtype).unwrap();
                    let g = (&y * &u).unwrap().sum_all().unwrap().backward().unwrap();
                    (values(&y), values(g.get(v.as_tensor()).unwrap()))
                };
                let fused = run(&|t| super::pool2d(t, kernel, max).unwrap());
                let composed = run(&|t| super::composed_pool2d(t, kernel, max).unwrap());
                assert_eq!(fused, composed, "{dtype:?} max {max} kernel {kernel}");
            }
        }
    }

    /// Ties, infinities and rows of 20 windows (wider than a vector of 16) with a NaN in some rows
    /// only: the fused max pool (branch-free maximum and first-maximum pick; PyTorch's loop for a
    /// row with a NaN) gives the composed path's forward, and its gradient where no NaN is
    /// (the composed path sent a NaN window's gradient to its first NaN, PyTorch to its last).
    #[test]
    fn fused_max_pool_keeps_ties_infinities_and_nan_rows_on_wide_images() {
        let vals = [2.0f32, 1.0, 2.0, f32::NEG_INFINITY, 0.0, 2.0, -1.0, f32::INFINITY, 0.0];
        let n = 2 * 3 * 6 * 41;
        for (k, with_nan) in [(2, false), (3, false), (2, true), (3, true)] {
            let v: Vec<f32> = (0..n).map(|i| if with_nan && i % 97 == 5 { f32::NAN } else { vals[(i * 7 + i / 13) % vals.len()] }).collect();
            let x = Tensor::from_vec(v, (2, 3, 6, 41), &Device::Cpu).unwrap();
            let run = |f: &dyn Fn(&Tensor) -> Tensor| {
                let xv = Var::from_tensor(&x).unwrap();
                let y = f(xv.as_tensor());
                let g = (&y * wavy(y.elem_count(), 0.9, y.dims())).unwrap().sum_all().unwrap().backward().unwrap();
                let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                (flat(&y), flat(g.get(xv.as_tensor()).unwrap()))
            };
            let (fused, composed) = (run(&|t| super::pool2d(t, k, true).unwrap()), run(&|t| super::composed_pool2d(t, k, true).unwrap()));
            let nan_free = |bits: &[u32]| bits.iter().all(|b| !f32::from_bits(*b).is_nan());
            assert_eq!(fused.0.iter().map(|b| f32::from_bits(*b).is_nan()).collect::<Vec<_>>(), composed.0.iter().map(|b| f32::from_bits(*b).is_nan()).collect::<Vec<_>>(), "k {k}");
            if !with_nan {
                assert!(nan_free(&fused.0));
                assert_eq!(fused, composed, "k {k}");
            } else {
                let finite: Vec<_> = fused.0.iter().zip(&composed.0).filter(|(f, _)| !f32::from_bits(**f).is_nan()).collect();
                assert!(finite.len() > 100 && finite.iter().all(|(f, c)| f == c), "k {k}");
            }
        }
    }

    /// PyTorch 2.15: `F.max_pool2d` of `[[1, nan], [nan, 2]]` returns index 2 and sends the
    /// gradient to the second NaN (`val > maxval || isnan(val)`: the last NaN wins).
    #[test]
    fn max_pool_sends_the_gradient_to_the_last_nan_as_pytorch() {
        let x = Var::from_tensor(&image(&[1.0, f32::NAN, f32::NAN, 2.0], 2, DType::F32)).unwrap();
        let y = super::pool2d(x.as_tensor(), 2, true).unwrap();
        let g = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(values(g.get(x.as_tensor()).unwrap()), [0.0, 0.0, 1.0, 0.0]);
    }
    /// One row of four 2 × 2 windows, its gradients 1 to 4, the rule of PyTorch's loop
    /// (`val > maxval || isnan(val)`, windows read row by row, MaxPoolKernel.cpp) worked by
    /// hand: a tie goes to its first maximum, all `-inf` to the first position, and in a row
    /// with a NaN the NaN window to its last NaN while the row's other windows keep theirs.
    #[test]
    fn max_pool_gradients_of_a_row_go_where_pytorch_sends_them_with_and_without_a_nan() {
        let ni = f32::NEG_INFINITY;
        for (first, want_first) in [([1.0, 7.0, 7.0, 2.0], (0, 1)), ([1.0, f32::NAN, f32::NAN, 2.0], (1, 0))] {
            // Windows: `first`, [[3, 3], [1, 0]], all -inf, [[0, 1], [5, 5]].
            let top = [first[0], first[1], 3.0, 3.0, ni, ni, 0.0, 1.0, 9.0];
            let bottom = [first[2], first[3], 1.0, 0.0, ni, ni, 5.0, 5.0, 9.0];
            let v: Vec<f32> = top.iter().chain(&bottom).copied().collect();
            let x = Var::from_tensor(&Tensor::from_vec(v, (1, 1, 2, 9), &Device::Cpu).unwrap()).unwrap();
            let y = super::pool2d(x.as_tensor(), 2, true).unwrap();
            let u = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], (1, 1, 1, 4), &Device::Cpu).unwrap();
            let g = (&y * &u).unwrap().sum_all().unwrap().backward().unwrap();
            let mut want = [0.0; 18];
            for (q, (row, col)) in [want_first, (0, 0), (0, 0), (1, 0)].into_iter().enumerate() {
                want[row * 9 + 2 * q + col] = q as f64 + 1.0;
            }
            assert_eq!(values(g.get(x.as_tensor()).unwrap()), want, "first window {first:?}");
        }
    }

    /// PyTorch 2.15, bf16 on the CPU: `F.conv2d(x, w, b)` of a 3 × 3 image by a 2 × 2 kernel and
    /// the gradients of `(y * u).sum()`, all in bf16 (the values below are the bf16 inputs).
    /// PyTorch computes them in f32 and rounds once, as nanhunt does.
    #[test]
    fn a_bf16_conv2d_and_its_gradients_match_pytorch_bit_for_bit() {
        let t = |v: &[f64], dims: &[usize]| Tensor::from_vec(v.to_vec(), dims, &Device::Cpu).unwrap().to_dtype(DType::BF16).unwrap();
        let x = Var::from_tensor(&t(&[1.0078125, 2.03125, -0.51171875, 0.76953125, -1.328125, 2.203125, 0.1298828125, 0.2890625, -0.96875], &[1, 1, 3, 3])).unwrap();
        let k = Var::from_tensor(&t(&[0.33203125, -0.77734375, 1.109375, 0.05908203125], &[1, 1, 2, 2])).unwrap();
        let b = Var::from_tensor(&t(&[0.0123291015625], &[1])).unwrap();
        let u = t(&[1.296875, -0.69921875, 0.44921875, 2.09375], &[1, 1, 2, 2]);
        let y = super::conv2d(x.as_tensor(), k.as_tensor(), b.as_tensor(), 1, 0, true).unwrap();
        let g = (&y * &u).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(y.dtype(), DType::BF16);
        assert_eq!(values(&y), [-0.45703125, -0.2578125, 1.4609375, -1.875]);
        assert_eq!(values(g.get(x.as_tensor()).unwrap()), [0.4296875, -1.2421875, 0.54296875, 1.5859375, -0.353515625, -1.671875, 0.498046875, 2.34375, 0.12353515625]);
        assert_eq!(values(g.get(k.as_tensor()).unwrap()), [-2.546875, 7.0, 2.59375, -5.15625]);
        assert_eq!(values(g.get(b.as_tensor()).unwrap()), [3.140625]);
    }
}
