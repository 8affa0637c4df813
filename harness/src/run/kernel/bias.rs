//! A bias added to every row, `h + b`, in one pass each way: the backward
//! passes the gradient through and sums it over the rows for the bias.
//! Candle's broadcast add sums with a strided reduction, slow enough that the
//! dense layers once added the bias as the product `ones(rows, 1) · b` instead;
//! this is one loop, and the same bits forward. The same op adds a learned
//! vector per position (Candle's backward summed its gradient over the batch
//! with a strided reduction too).

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::{avx2, dispatch, Kernel, Real};
use crate::error::Result;

/// `h + b` where `b`'s shape is the end of `h`'s: a bias `(out)` of `h` `(…, out)`, or one
/// vector per position `(seq, w)` of `h` `(batch, seq, w)`.
pub(crate) fn bias_add(h: &Tensor, b: &Tensor) -> Result<Tensor> {
    let trailing = h.dims().ends_with(b.dims());
    if !trailing || !super::handles(h) {
        return Ok(h.broadcast_add(b)?);
    }
    Ok(h.contiguous()?.apply_op2(&b.contiguous()?, BiasAdd)?)
}

#[inline(always)]
fn forward<T: Real>(h: &[T], b: &[T]) -> Vec<T> {
    let mut out = h.to_vec();
    for row in out.chunks_exact_mut(b.len()) {
        for j in 0..b.len() {
            row[j] += b[j];
        }
    }
    out
}

/// Column sums of `g` (rows of `n`), row after row.
#[inline(always)]
pub(crate) fn sums<T: Real>(g: &[T], n: usize) -> Vec<T> {
    let mut out = vec![T::zero(); n];
    for row in g.chunks_exact(n) {
        for j in 0..n {
            out[j] += row[j];
        }
    }
    out
}

avx2! {
    fn forward32(h: &[f32], b: &[f32]) -> Vec<f32> {
        forward(h, b)
    }
}

avx2! {
    fn column_sums32(g: &[f32], n: usize) -> Vec<f32> {
        sums(g, n)
    }
}

struct BiasAdd;

impl CustomOp2 for BiasAdd {
    fn name(&self) -> &'static str {
        "bias-add"
    }

    fn cpu_fwd(&self, h: &CpuStorage, hl: &Layout, b: &CpuStorage, bl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((dispatch(self, [(h, hl), (b, bl)])?, hl.shape().clone()))
    }

    fn bwd(&self, _h: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let sums = column_sums(&g, b.elem_count())?.reshape(b.shape())?;
        Ok((Some(g), Some(sums)))
    }
}

impl Kernel<2> for BiasAdd {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "bias"
    }

    fn run<T: Real>(&self, [h, b]: [&[T]; 2]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(forward(h, b)))
    }

    fn run_f32(&self, [h, b]: [&[f32]; 2]) -> candle_core::Result<CpuStorage> {
        Ok(CpuStorage::F32(forward32(h, b)))
    }
}

/// The sums of the contiguous CPU gradient `g`'s columns, `(n)`: a bias's gradient.
pub(crate) fn column_sums(g: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    let (s, l) = g.storage_and_layout();
    let candle_core::Storage::Cpu(s) = &*s else { candle_core::bail!("bias backward: CPU tensors only") };
    dispatch(&ColumnSums(n), [(s, l)])
}

/// The column sums of rows of this many values, as a tensor.
struct ColumnSums(usize);

impl Kernel<1> for ColumnSums {
    type Out = Tensor;

    fn name(&self) -> &str {
        "bias backward"
    }

    fn run<T: Real>(&self, [g]: [&[T]; 1]) -> candle_core::Result<Tensor> {
        Tensor::from_vec(sums(g, self.0), self.0, &candle_core::Device::Cpu)
    }

    fn run_f32(&self, [g]: [&[f32]; 1]) -> candle_core::Result<Tensor> {
        Tensor::from_vec(column_sums32(g, self.0), self.0, &candle_core::Device::Cpu)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    #[test]
    fn bias_add_and_its_gradients_by_hand() {
        // [[1, 2], [3, 4]] + [10, 20]; with upstream gradient [[1, 2], [3, 4]] the bias gets the column sums [4, 6].
        let h = Var::new(&[[1.0f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let b = Var::new(&[10.0f32, 20.0], &Device::Cpu).unwrap();
        let y = super::bias_add(h.as_tensor(), b.as_tensor()).unwrap();
        assert_eq!(y.to_vec2::<f32>().unwrap(), [[11.0, 22.0], [13.0, 24.0]]);
        let up = Tensor::new(&[[1.0f32, 2.0], [3.0, 4.0]], &Device::Cpu).unwrap();
        let g = (y * up).unwrap().sum_all().unwrap().backward().unwrap();
        assert_eq!(g.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), [4.0, 6.0]);
        assert_eq!(g.get(h.as_tensor()).unwrap().to_vec2::<f32>().unwrap(), [[1.0, 2.0], [3.0, 4.0]]);
    }
}
