//! Running a checked expression on tensors. Each function is PyTorch's, forward and backward:
//! the elementwise ones are the registry's ops (`ops::log`, `ops::clamp`, ...), whose kernels
//! already follow PyTorch; compositions get their backward from Candle's autograd, which
//! applies the same chain rule as PyTorch's, so a NaN in `where`'s unselected branch still
//! reaches its input as `NaN · 0 = NaN`. Where PyTorch's backward is not the chain rule of
//! its forward, the gradient is set by hand (`grad.rs`, `norm.rs`): `norm` (every `p`) and
//! `std` give 0 (not NaN) at a zero norm or deviation, `amax`/`amin` share the gradient among ties
//! (and give NaN for a set holding one, as does `logsumexp`), `cumsum` is a running sum, and
//! `cosine_similarity` clamps its norms to `eps` without a gradient, as ATen does.

use candle_core::{DType, Tensor};

use super::ast::BinOp;
use super::check::{Bound, Ir, IrOp};
use super::funcs::{Family, Func};
use super::grad;
use crate::error::Result;
use crate::ops::rounding::{Rounding, Unary};
use crate::ops::Elementwise;
use crate::run::opmath::in_f32;

/// Evaluates `ir` reading `inputs` (in the slots the check gave them), in `dtype`.
pub fn eval(ir: &Ir, inputs: &[Tensor], dtype: DType) -> Result<Tensor> {
    let dev = inputs.first().map_or(candle_core::Device::Cpu, |t| t.device().clone());
    match &ir.op {
        IrOp::Input(i) => Ok(inputs[*i].clone()),
        IrOp::Const(v) => Ok(Tensor::new(*v, &dev)?.to_dtype(dtype)?),
        IrOp::Neg(a) => Ok(eval(a, inputs, dtype)?.neg()?),
        IrOp::Pow(a, e) => Elementwise::forward(&crate::ops::pow::Pow { exponent: *e }, &eval(a, inputs, dtype)?),
        IrOp::Bin(op, a, b) => binary(*op, &eval(a, inputs, dtype)?, &eval(b, inputs, dtype)?, dtype),
        IrOp::Call(f, args, bound) => {
            let xs = args.iter().map(|a| eval(a, inputs, dtype)).collect::<Result<Vec<_>>>()?;
            call(*f, &xs, bound)
        }
    }
}

/// `a op b` with PyTorch's broadcasting; a comparison gives a 0/1 mask in `dtype`.
fn binary(op: BinOp, a: &Tensor, b: &Tensor, dtype: DType) -> Result<Tensor> {
    let mask = |t: Tensor| -> Result<Tensor> { Ok(t.to_dtype(dtype)?) };
    Ok(match op {
        BinOp::Add => a.broadcast_add(b)?,
        BinOp::Sub => a.broadcast_sub(b)?,
        BinOp::Mul => a.broadcast_mul(b)?,
        BinOp::Div => a.broadcast_div(b)?,
        BinOp::MatMul => a.contiguous()?.broadcast_matmul(&b.contiguous()?)?,
        BinOp::Pow => a.broadcast_pow(b)?,
        BinOp::Lt => mask(a.broadcast_lt(b)?)?,
        BinOp::Le => mask(a.broadcast_le(b)?)?,
        BinOp::Gt => mask(a.broadcast_gt(b)?)?,
        BinOp::Ge => mask(a.broadcast_ge(b)?)?,
        BinOp::Eq => mask(a.broadcast_eq(b)?)?,
        BinOp::Ne => mask(a.broadcast_ne(b)?)?,
    })
}

fn call(f: Func, xs: &[Tensor], b: &Bound) -> Result<Tensor> {
    let x = &xs[0];
    match f.family() {
        Family::Pointwise => pointwise(f, x, b),
        Family::Select => select(xs),
        Family::Reduce => reduce(f, x, b),
        Family::Along => along(f, x, b.dims[0]),
        Family::Transpose => Ok(x.transpose(b.dims[0], b.dims[1])?),
        Family::Reshape => {
            // The -1 first, as PyTorch infers it: the batch (times the fold the check worked out).
            let rest: usize = b.shape.iter().product();
            let shape: Vec<usize> = std::iter::once(x.elem_count() / rest).chain(b.shape.iter().copied()).collect();
            Ok(x.contiguous()?.reshape(shape)?)
        }
        Family::Pair => super::norm::cosine_similarity(x, &xs[1], b.dims[0], b.lo.unwrap_or(1e-8)),
        Family::Loss => match &b.loss {
            Some(call) => super::losses::eval(call, x, &xs[1], xs.get(2)),
            None => Err(crate::ops::unplanned(format!("`{}` without its loss", <&str>::from(f)))),
        },
    }
}

fn pointwise(f: Func, x: &Tensor, b: &Bound) -> Result<Tensor> {
    use crate::ops::{abs, clamp, exp, gelu, log, logsigmoid, relu, sigmoid, softplus, sqrt, tanh};
    let op: &dyn Elementwise = match f {
        Func::Abs => &abs::Abs {},
        Func::Exp => &exp::Exp {},
        Func::Log => &log::Log {},
        Func::Sqrt => &sqrt::Sqrt {},
        Func::Sigmoid => &sigmoid::Sigmoid {},
        Func::Logsigmoid => &logsigmoid::Logsigmoid {},
        Func::Tanh => &tanh::Tanh {},
        Func::Relu => &relu::Relu {},
        Func::Gelu => &gelu::Gelu {},
        Func::Softplus => &softplus::Softplus {},
        Func::Clamp => return clamp::clamp(x, b.lo, b.hi),
        Func::Log1p => return Unary { name: "log1p", a: [0.0; 2], r: Rounding::of(x.dtype()), forward: log1p, backward: log1p_grad }.apply(x),
        Func::Rsqrt => return Unary { name: "rsqrt", a: [0.0; 2], r: Rounding::of(x.dtype()), forward: rsqrt, backward: rsqrt_grad }.apply(x),
        Func::Where
        | Func::Sum
        | Func::Mean
        | Func::Amax
        | Func::Amin
        | Func::Logsumexp
        | Func::Std
        | Func::Var
        | Func::Norm
        | Func::Softmax
        | Func::LogSoftmax
        | Func::Transpose
        | Func::Reshape
        | Func::Cumsum
        | Func::CosineSimilarity
        | Func::CrossEntropy
        | Func::KlDiv
        | Func::Focal
        | Func::Mse
        | Func::BceWithLogits
        | Func::InfoNce
        | Func::Ctc => return Err(crate::ops::unplanned(format!("`{}` as an elementwise function", <&str>::from(f)))),
    };
    op.forward(x)
}

/// `torch.log1p`: `log(1 + x)` computed without forming `1 + x`.
fn log1p(x: f64, _: [f64; 2], r: Rounding) -> f64 {
    r.kernel(x.ln_1p())
}

/// Its backward (`derivatives.yaml`): `grad / (self + 1)`, two ops.
fn log1p_grad(g: f64, x: f64, _: [f64; 2], r: Rounding) -> f64 {
    r.kernel(g / (r.store)(x + 1.0))
}

/// `torch.rsqrt`: `1 / sqrt(x)` in one kernel.
fn rsqrt(x: f64, _: [f64; 2], r: Rounding) -> f64 {
    r.kernel(1.0 / x.sqrt())
}

/// Its backward (`derivatives.yaml`): `-0.5 * grad * result.pow(3)`, each op stored.
fn rsqrt_grad(g: f64, x: f64, a: [f64; 2], r: Rounding) -> f64 {
    let y = rsqrt(x, a, r);
    let cube = (r.store)(y * y * y);
    r.kernel((r.store)(-0.5 * g) * cube)
}

/// `torch.where(c, a, b)`: all three broadcast to one shape; `c` selects where it is not 0.
fn select(xs: &[Tensor]) -> Result<Tensor> {
    let shape = xs[0].shape().broadcast_shape_binary_op(xs[1].shape(), "where")?.broadcast_shape_binary_op(xs[2].shape(), "where")?;
    let c = xs[0].broadcast_as(&shape)?.ne(0.0)?;
    Ok(c.where_cond(&xs[1].broadcast_as(&shape)?.contiguous()?, &xs[2].broadcast_as(&shape)?.contiguous()?)?)
}

/// A reduction over `b.dims`, as PyTorch's.
fn reduce(f: Func, x: &Tensor, b: &Bound) -> Result<Tensor> {
    let d = &b.dims[..];
    // f16 and bf16 sums accumulate in f32 and round once, as PyTorch's CPU reductions
    // (`acc_type`): Candle's own half sum rounds at every addition (66 f16 rows of 1000 would
    // be inf where `torch.mean` gives 1000). Variance and std do the same (`grad.rs`), norm too (`norm.rs`).
    let kept = match f {
        Func::Sum => in_f32(x, |x| Ok(x.sum_keepdim(d)?))?,
        Func::Mean => in_f32(x, |x| Ok(x.mean_keepdim(d)?))?,
        Func::Amax => grad::extreme(x, d, true)?,
        Func::Amin => grad::extreme(x, d, false)?,
        Func::Logsumexp => grad::logsumexp(x, d)?,
        Func::Var => grad::variance(x, d, b.lo.unwrap_or(1.0))?,
        Func::Std => grad::std(x, d, b.lo.unwrap_or(1.0))?,
        Func::Norm => super::norm::norm(x, d, b.lo.unwrap_or(2.0))?,
        Func::Abs
        | Func::Exp
        | Func::Log
        | Func::Log1p
        | Func::Sqrt
        | Func::Rsqrt
        | Func::Sigmoid
        | Func::Logsigmoid
        | Func::Tanh
        | Func::Relu
        | Func::Gelu
        | Func::Softplus
        | Func::Clamp
        | Func::Where
        | Func::Softmax
        | Func::LogSoftmax
        | Func::Transpose
        | Func::Reshape
        | Func::Cumsum
        | Func::CosineSimilarity
        | Func::CrossEntropy
        | Func::KlDiv
        | Func::Focal
        | Func::Mse
        | Func::BceWithLogits
        | Func::InfoNce
        | Func::Ctc => return Err(crate::ops::unplanned(format!("`{}` as a reduction", <&str>::from(f)))),
    };
    if b.keepdim {
        return Ok(kept);
    }
    let shape: Vec<usize> = x.dims().iter().enumerate().filter(|(i, _)| !d.contains(i)).map(|(_, n)| *n).collect();
    Ok(kept.reshape(shape)?)
}

/// softmax or log_softmax along `dim` (the maximum subtracted, and held constant, first), or
/// cumsum's running sum (`grad::cumsum`).
fn along(f: Func, x: &Tensor, dim: usize) -> Result<Tensor> {
    match f {
        Func::Softmax => crate::run::kernel::activation::softmax_along(x, dim),
        Func::LogSoftmax => crate::run::kernel::activation::log_softmax_along(x, dim),
        Func::Cumsum => grad::cumsum(x, dim),
        Func::Abs
        | Func::Exp
        | Func::Log
        | Func::Log1p
        | Func::Sqrt
        | Func::Rsqrt
        | Func::Sigmoid
        | Func::Logsigmoid
        | Func::Tanh
        | Func::Relu
        | Func::Gelu
        | Func::Softplus
        | Func::Clamp
        | Func::Where
        | Func::Sum
        | Func::Mean
        | Func::Amax
        | Func::Amin
        | Func::Logsumexp
        | Func::Std
        | Func::Var
        | Func::Norm
        | Func::Transpose
        | Func::Reshape
        | Func::CosineSimilarity
        | Func::CrossEntropy
        | Func::KlDiv
        | Func::Focal
        | Func::Mse
        | Func::BceWithLogits
        | Func::InfoNce
        | Func::Ctc => Err(crate::ops::unplanned(format!("`{}` along a dimension", <&str>::from(f)))),
    }
}

/// The operands of a checked node.
pub(super) fn operands(ir: &Ir) -> Vec<&Ir> {
    match &ir.op {
        IrOp::Input(_) | IrOp::Const(_) => Vec::new(),
        IrOp::Neg(a) | IrOp::Pow(a, _) => vec![a],
        IrOp::Bin(_, a, b) => vec![a, b],
        IrOp::Call(_, xs, _) => xs.iter().collect(),
    }
}

/// `ir` with its operands replaced by inputs 0, 1, ...: the node alone, over its operands' values.
pub(super) fn alone(ir: &Ir) -> Ir {
    let slot = |i: usize, a: &Ir| Box::new(Ir { op: IrOp::Input(i), col: a.col, dims: a.dims.clone() });
    let op = match &ir.op {
        IrOp::Input(_) | IrOp::Const(_) => ir.op.clone(),
        IrOp::Neg(a) => IrOp::Neg(slot(0, a)),
        IrOp::Pow(a, e) => IrOp::Pow(slot(0, a), *e),
        IrOp::Bin(op, a, b) => IrOp::Bin(*op, slot(0, a), slot(1, b)),
        IrOp::Call(f, xs, b) => IrOp::Call(*f, xs.iter().enumerate().map(|(i, a)| *slot(i, a)).collect(), b.clone()),
    };
    Ir { op, col: ir.col, dims: ir.dims.clone() }
}
