//! Attention's two products, per example and head, straight from and into the
//! projections' `(batch, seq, width)` layout: the scores `scale · q_h k_hᵀ` and
//! the mix `p_h v_h` (heads merged back), each one gemm call per (example,
//! head) on strided views, and their gradients the same way.
//!
//! Composed in Candle, each product splits heads with a reshape, a transpose
//! and a copy, and merges them with three more, and its backward makes and adds
//! a zero gradient for every one of those tensors: that was most of attention's
//! cost in the tiny GPT's step. Here there are no copies. The products are
//! gemm's, as Candle's are; they run one after another, so results do not
//! depend on the thread count.

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::{dispatch, head_product, Kernel, Real};
use crate::error::Result;

/// `scale · q_h k_hᵀ`, `(batch, heads, seq, seq)`, of `q` and `k` `(batch, seq, width)`.
pub(crate) fn scores(q: &Tensor, k: &Tensor, heads: usize) -> Result<Tensor> {
    let (batch, seq, width) = q.dims3()?;
    let scale = 1.0 / ((width / heads) as f64).sqrt();
    let op = Product { kind: Kind::Scores, batch, seq, heads, width, scale };
    Ok(q.contiguous()?.apply_op2(&k.contiguous()?, op)?)
}

/// `p_h v_h` with heads merged, `(batch, seq, width)`, of `p` `(batch, heads, seq, seq)` and `v`.
pub(crate) fn mix(p: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    let (batch, _, seq, _) = p.dims4()?;
    let width = v.dims3()?.2;
    let op = Product { kind: Kind::Mix, batch, seq, heads, width, scale: 1.0 };
    Ok(p.contiguous()?.apply_op2(&v.contiguous()?, op)?)
}

/// The six products: the two forward ones and the two gradients of each.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// `S = scale · Q Kᵀ`.
    Scores,
    /// `dQ = scale · dS K`.
    ScoresGradQ,
    /// `dK = scale · dSᵀ Q`.
    ScoresGradK,
    /// `Y = P V`.
    Mix,
    /// `dP = dY Vᵀ`.
    MixGradP,
    /// `dV = Pᵀ dY`.
    MixGradV,
}

/// One head's matrix inside a tensor: where example `b`'s head `h` starts, and its row and
/// column strides.
#[derive(Debug, Clone, Copy)]
struct View {
    example: usize,
    head: usize,
    rs: usize,
    cs: usize,
}

impl View {
    fn t(self) -> Self {
        Self { rs: self.cs, cs: self.rs, ..self }
    }

    fn at(&self, b: usize, h: usize) -> usize {
        b * self.example + h * self.head
    }
}

/// A product of the kind, for these sizes, scaled by `scale`.
#[derive(Debug, Clone)]
struct Product {
    kind: Kind,
    batch: usize,
    seq: usize,
    heads: usize,
    width: usize,
    scale: f64,
}

impl Product {
    /// `(m, n, k)` of each head's product, and the views of its left factor, right factor
    /// and result.
    fn plan(&self) -> ((usize, usize, usize), View, View, View) {
        let (s, d) = (self.seq, self.width / self.heads);
        // A head of a `(batch, seq, width)` tensor: `(seq, d)` at column h·d.
        let x = View { example: s * self.width, head: d, rs: self.width, cs: 1 };
        // A head of a `(batch, heads, seq, seq)` tensor.
        let sq = View { example: self.heads * s * s, head: s * s, rs: s, cs: 1 };
        match self.kind {
            Kind::Scores => ((s, s, d), x, x.t(), sq),
            Kind::ScoresGradQ => ((s, d, s), sq, x, x),
            Kind::ScoresGradK => ((s, d, s), sq.t(), x, x),
            Kind::Mix => ((s, d, s), sq, x, x),
            Kind::MixGradP => ((s, s, d), x, x.t(), sq),
            Kind::MixGradV => ((s, d, s), sq.t(), x, x),
        }
    }

    /// The output's length, after checking that every head's views of the factors (of `lens`
    /// values) and of the output stay inside them.
    fn check(&self, (m, n, k): (usize, usize, usize), (lv, rv, ov): (View, View, View), lens: (usize, usize)) -> candle_core::Result<usize> {
        let len = self.shape().elem_count();
        let span = |v: View, rows: usize, cols: usize| v.at(self.batch - 1, self.heads - 1) + (rows - 1) * v.rs + (cols - 1) * v.cs;
        // The heads tile the width (`ops::attention` refuses a width they do not divide): else
        // the output's last columns would be left unwritten.
        let tiled = self.heads > 0 && self.width.is_multiple_of(self.heads);
        if !tiled || self.batch == 0 || m == 0 || n == 0 || k == 0 || span(lv, m, k) >= lens.0 || span(rv, k, n) >= lens.1 || span(ov, m, n) >= len {
            candle_core::bail!("attention product {:?}: sizes do not match {:?}", self.kind, (self.batch, self.seq, self.heads, self.width));
        }
        Ok(len)
    }

    fn shape(&self) -> Shape {
        match self.kind {
            Kind::Scores | Kind::MixGradP => (self.batch, self.heads, self.seq, self.seq).into(),
            _ => (self.batch, self.seq, self.width).into(),
        }
    }

    /// Every head's product, one after another.
    fn products<T: candle_core::WithDType>(&self, lhs: &[T], rhs: &[T]) -> candle_core::Result<Vec<T>> {
        let ((m, n, k), lv, rv, ov) = self.plan();
        // Every view stays inside its tensor: what makes the raw pointers below sound.
        let len = self.check((m, n, k), (lv, rv, ov), (lhs.len(), rhs.len()))?;
        // Not zeroed first: the heads' results tile the output, and gemm writes each without
        // reading it (a zeroing pass cost as much as a small product).
        let mut out: Vec<T> = Vec::with_capacity(len);
        let scale = T::from_f64(self.scale);
        for b in 0..self.batch {
            for h in 0..self.heads {
                // SAFETY: the bounds were checked above, the heads' results do not overlap, and
                // gemm supports T (f32 and f64: the kernel computes in `Dtypes::Wide`). read_dst is false: dst = scale·lhs·rhs.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        out.as_mut_ptr().add(ov.at(b, h)),
                        ov.cs as isize,
                        ov.rs as isize,
                        false,
                        lhs.as_ptr().add(lv.at(b, h)),
                        lv.cs as isize,
                        lv.rs as isize,
                        rhs.as_ptr().add(rv.at(b, h)),
                        rv.cs as isize,
                        rv.rs as isize,
                        T::zero(),
                        scale,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    )
                }
            }
        }
        // SAFETY: every (example, head) block was written above, and the blocks cover the
        // `(batch, heads, seq, seq)` or `(batch, seq, heads·d)` output.
        unsafe { out.set_len(len) };
        Ok(out)
    }

    fn with(&self, kind: Kind) -> Self {
        Self { kind, ..self.clone() }
    }
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "attention-product"
    }

    fn cpu_fwd(&self, a: &CpuStorage, al: &Layout, b: &CpuStorage, bl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((dispatch(self, [(a, al), (b, bl)])?, self.shape()))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        Ok(match self.kind {
            // S = Q Kᵀ: a = Q, b = K.
            Kind::Scores => (Some(g.apply_op2_no_bwd(b, &self.with(Kind::ScoresGradQ))?), Some(g.apply_op2_no_bwd(a, &self.with(Kind::ScoresGradK))?)),
            // Y = P V: a = P, b = V.
            Kind::Mix => (Some(g.apply_op2_no_bwd(b, &self.with(Kind::MixGradP))?), Some(a.apply_op2_no_bwd(&g, &self.with(Kind::MixGradV))?)),
            _ => candle_core::bail!("attention product {:?}: gradients are not differentiated", self.kind),
        })
    }
}

impl Kernel<2> for Product {
    type Out = CpuStorage;

    fn name(&self) -> &str {
        "attention product"
    }

    fn run<T: Real>(&self, [a, b]: [&[T]; 2]) -> candle_core::Result<CpuStorage> {
        Ok(T::to_cpu_storage_owned(self.products(a, b)?))
    }

    /// f32: the direct product at the sizes it takes (`head_product.rs`: gemm's bits), else gemm.
    fn run_f32(&self, [a, b]: [&[f32]; 2]) -> candle_core::Result<CpuStorage> {
        let ((m, n, k), lv, rv, ov) = self.plan();
        if !head_product::takes(m, n, k) {
            return self.run([a, b]);
        }
        let len = self.check((m, n, k), (lv, rv, ov), (a.len(), b.len()))?;
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let dst = &mut out.spare_capacity_mut()[..len];
        let scale = self.scale as f32;
        let at = |v: View, b: usize, h: usize| head_product::At { start: v.at(b, h), rs: v.rs, cs: v.cs };
        for b_ in 0..self.batch {
            for h in 0..self.heads {
                if !head_product::product((m, n, k), (a, at(lv, b_, h)), (b, at(rv, b_, h)), (&mut *dst, at(ov, b_, h)), scale) {
                    candle_core::bail!("attention product {:?}: a head's view leaves its tensor", self.kind);
                }
            }
        }
        // SAFETY: every (example, head) block was written above, and the blocks cover the output.
        unsafe { out.set_len(len) };
        Ok(CpuStorage::F32(out))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// Composed reference: heads split by reshape and transpose, as attention did before.
    fn split(x: &Tensor, h: usize) -> Tensor {
        let (b, s, w) = x.dims3().unwrap();
        x.reshape((b, s, h, w / h)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap()
    }

    fn values(n: usize, phase: f64) -> Vec<f64> {
        (0..n).map(|i| (phase + 0.37 * i as f64).sin()).collect()
    }

    fn close(a: &Tensor, b: &Tensor) {
        let a = a.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let b = b.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() < 1e-13, "[{i}]: {x} vs {y}");
        }
    }

    /// The fused products and their gradients equal the composed ones Candle differentiates
    /// itself (reshape, transpose, batched matmul), on 2 examples, 3 positions, 2 heads of 3.
    #[test]
    fn products_and_gradients_match_the_composed_form() {
        let (b, s, h, w) = (2, 3, 2, 6);
        let dev = Device::Cpu;
        let var = |phase| candle_core::Var::from_vec(values(b * s * w, phase), (b, s, w), &dev).unwrap();
        let (q, k, v) = (var(0.1), var(1.3), var(2.7));
        let probs = candle_core::Var::from_vec(values(b * h * s * s, 0.5), (b, h, s, s), &dev).unwrap();
        let weights = Tensor::from_vec(values(b * s * w, 4.0), (b, s, w), &dev).unwrap();
        let sw = Tensor::from_vec(values(b * h * s * s, 5.0), (b, h, s, s), &dev).unwrap();

        let fused_s = scores(&q, &k, h).unwrap();
        let fused_y = mix(&probs, &v, h).unwrap();
        let scale = 1.0 / 3f64.sqrt();
        let comp_s = (split(&q, h).matmul(&split(&k, h).t().unwrap()).unwrap() * scale).unwrap();
        let comp_y = probs.as_tensor().matmul(&split(&v, h)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap().reshape((b, s, w)).unwrap();
        close(&fused_s, &comp_s);
        close(&fused_y, &comp_y);

        let loss = |s: &Tensor, y: &Tensor| ((s * &sw).unwrap().sum_all().unwrap() + (y * &weights).unwrap().sum_all().unwrap()).unwrap();
        let gf = loss(&fused_s, &fused_y).backward().unwrap();
        let gc = loss(&comp_s, &comp_y).backward().unwrap();
        for t in [q.as_tensor(), k.as_tensor(), v.as_tensor(), probs.as_tensor()] {
            close(gf.get(t).unwrap(), gc.get(t).unwrap());
        }
    }

    /// In f32 on a CPU with AVX-512 the products are `head_product`'s: each of the six gives
    /// gemm's bits (the generic path, `run`) in every example's and head's block, on the tiny
    /// GPT's sizes (2 examples, 4 heads of 16, 32 positions) and a scale that rounds.
    #[test]
    fn the_direct_products_give_gemms_bits_in_every_head() {
        if !crate::run::kernel::has_avx512() {
            eprintln!("no AVX-512: f32 products are gemm's, nothing to compare");
            return;
        }
        let (batch, seq, heads, width) = (2, 32, 4, 64);
        let f32s = |n: usize, phase: f64| -> Vec<f32> { values(n, phase).iter().map(|v| (v * 3.0) as f32).collect() };
        let (x1, x2, sq) = (f32s(batch * seq * width, 0.3), f32s(batch * seq * width, 1.1), f32s(batch * heads * seq * seq, 2.9));
        for kind in [Kind::Scores, Kind::ScoresGradQ, Kind::ScoresGradK, Kind::Mix, Kind::MixGradP, Kind::MixGradV] {
            let op = Product { kind, batch, seq, heads, width, scale: 1.0 / 3f64.sqrt() };
            let lhs = if matches!(kind, Kind::Scores | Kind::MixGradP) { &x1 } else { &sq };
            let bits = |s: CpuStorage| match s {
                CpuStorage::F32(v) => v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                _ => panic!("{kind:?}: not f32 out"),
            };
            let (direct, by_gemm) = (bits(op.run_f32([lhs, &x2]).unwrap()), bits(op.run([lhs.as_slice(), &x2]).unwrap()));
            assert_eq!(direct.len(), op.shape().elem_count());
            let first = direct.iter().zip(&by_gemm).position(|(a, b)| a != b);
            assert_eq!(first, None, "{kind:?}: the first value that differs from gemm's");
        }
    }

    /// One head, one example, by hand: q = [[1, 2]], k = [[3, 4]] give 11 times the scale
    /// 1/√2 rounded to f32 (as PyTorch's `(q @ k.T) * scale` multiplies); p = [[1]] mixes v.
    #[test]
    fn a_single_head_by_hand() {
        let dev = Device::Cpu;
        let q = Tensor::new(&[[[1.0f32, 2.0]]], &dev).unwrap();
        let k = Tensor::new(&[[[3.0f32, 4.0]]], &dev).unwrap();
        let s = scores(&q, &k, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(s, vec![11.0 * std::f32::consts::FRAC_1_SQRT_2]);
        let p = Tensor::new(&[[[[1.0f32]]]], &dev).unwrap();
        let y = mix(&p, &k, 1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(y, vec![3.0, 4.0]);
    }
}
