//! The ONNX ops an imported graph's nodes compute ([`Kind`]), each with its attributes (and
//! the constant inputs ONNX passes as tensors: a `Reshape`'s shape, `Unsqueeze`'s axes, a
//! `Slice`'s bounds, folded into attributes when the graph compiles), and [`Kind::eval`]: ONNX's
//! forward semantics, which match PyTorch's for these ops, in Candle ops whose backward is
//! PyTorch's. Booleans are 0/1 values of the float dtype (as the expression language's
//! comparisons), so every node output is a float tensor the watch can read.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use super::shape::{axis, bail, gather, slice, squeezed, trilu, trunc, unsqueezed};
use crate::error::Result;

pub use super::shape::{broadcast, reshaped};

/// An ONNX op with its attributes, as an imported node computes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Kind {
    /// `Add`, broadcast.
    Add,
    /// `Sub`, broadcast.
    Sub,
    /// `Mul`, broadcast.
    Mul,
    /// `Div`, broadcast.
    Div,
    /// `Pow(x, e)` of a constant exponent.
    Pow {
        /// The exponent.
        exponent: f64,
    },
    /// `Equal`: 1 where equal.
    Equal,
    /// `Less`: 1 where `a < b`.
    Less,
    /// `Greater`: 1 where `a > b`.
    Greater,
    /// `And` of 0/1 masks.
    And,
    /// `Or` of 0/1 masks.
    Or,
    /// `Not` of a 0/1 mask.
    Not,
    /// `Where(c, a, b)`, broadcast.
    Where,
    /// `Neg`.
    Neg,
    /// `Sqrt`.
    Sqrt,
    /// `Reciprocal`.
    Reciprocal,
    /// `Erf`.
    Erf,
    /// `Exp`.
    Exp,
    /// `Log`.
    Log,
    /// `Tanh`.
    Tanh,
    /// `Sigmoid`.
    Sigmoid,
    /// `Relu`.
    Relu,
    /// `Abs`.
    Abs,
    /// `Gelu` (the exact, erf form).
    Gelu,
    /// `MatMul`, numpy's broadcasting of the leading dims.
    MatMul,
    /// `Gemm(a, b, c)`: `alpha · a' b' + beta · c`.
    Gemm {
        /// `alpha`.
        alpha: f64,
        /// `beta`.
        beta: f64,
        /// `transA`.
        trans_a: bool,
        /// `transB`.
        trans_b: bool,
    },
    /// `Softmax` along `axis`.
    Softmax {
        /// The axis (negative from the end).
        axis: i64,
    },
    /// `LogSoftmax` along `axis`.
    LogSoftmax {
        /// The axis (negative from the end).
        axis: i64,
    },
    /// A softmax (or log-softmax) along `axis` of `x` masked by `m`: `where(m == on, fill, x)`,
    /// or `x + m` with `add`. A masked fill of `-inf` read only by a softmax compiles into it, as
    /// attention masks inside its op: the `-inf` it writes on purpose is not a watched output.
    Masked {
        /// The softmax's axis.
        axis: i64,
        /// A log-softmax.
        log: bool,
        /// The value written where the mask is `on` (`-inf`).
        fill: f64,
        /// Which mask value is filled.
        on: bool,
        /// The mask is added (an additive `-inf` mask) instead.
        add: bool,
    },
    /// `LayerNormalization(x, scale, bias)` over the last axis.
    LayerNorm {
        /// `epsilon`.
        eps: f64,
    },
    /// `ReduceMean` over `axes` (all if empty).
    ReduceMean {
        /// The axes.
        axes: Vec<i64>,
        /// `keepdims`.
        keepdims: bool,
    },
    /// `ReduceSum` over `axes` (all if empty).
    ReduceSum {
        /// The axes.
        axes: Vec<i64>,
        /// `keepdims`.
        keepdims: bool,
    },
    /// `Transpose` by `perm`.
    Transpose {
        /// The permutation.
        perm: Vec<usize>,
    },
    /// `Reshape` to `shape` (0 copies the input's dim, -1 is inferred).
    Reshape {
        /// The target shape.
        shape: Vec<i64>,
    },
    /// `Unsqueeze` at `axes`.
    Unsqueeze {
        /// The new axes, of the output.
        axes: Vec<i64>,
    },
    /// `Squeeze` of `axes` (every dim of 1 if empty).
    Squeeze {
        /// The axes removed.
        axes: Vec<i64>,
    },
    /// `Expand` to `shape`, broadcast both ways.
    Expand {
        /// The shape.
        shape: Vec<i64>,
    },
    /// `Slice` (step 1) along `axes`: `starts..ends`, clamped as ONNX clamps them.
    Slice {
        /// The starts.
        starts: Vec<i64>,
        /// The ends.
        ends: Vec<i64>,
        /// The axes.
        axes: Vec<i64>,
    },
    /// `Concat` along `axis`.
    Concat {
        /// The axis.
        axis: i64,
    },
    /// One output of a `Split` (or a `SplitToSequence` read by `SequenceAt`): `len` values from `start` along `axis`.
    Narrow {
        /// The axis.
        axis: i64,
        /// The first index.
        start: usize,
        /// How many.
        len: usize,
    },
    /// `Gather(data, indices)` along `axis`: an embedding lookup at axis 0.
    Gather {
        /// The axis.
        axis: i64,
    },
    /// `Cast` (or `CastLike`) to a float type (unchanged), to bool (1 where non-zero) or to an integer type (truncated).
    Cast {
        /// The target: `float`, `bool` or `int`.
        to: CastTo,
    },
    /// `Trilu`: the upper (or lower) triangle from diagonal `k`, zeros elsewhere.
    Trilu {
        /// `upper`.
        upper: bool,
        /// The diagonal offset.
        k: i64,
    },
    /// `Identity`.
    Identity,
    /// `Dropout` of `p`: identity in evaluation, the run's seeded masks in training.
    Dropout {
        /// The ratio.
        p: f64,
    },
}

/// What a `Cast` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, arbitrary::Arbitrary)]
#[serde(rename_all = "snake_case")]
pub enum CastTo {
    /// A float type: the value unchanged.
    Float,
    /// Bool: 1 where non-zero.
    Bool,
    /// An integer type: truncated toward zero.
    Int,
}

/// 0/1 of `mask` (u8) in `dtype`.
fn mask(m: Tensor, dtype: DType) -> Result<Tensor> {
    Ok(m.to_dtype(dtype)?)
}

impl Kind {
    /// How many tensors it reads (`None`: any number, at least one).
    pub fn arity(&self) -> Option<usize> {
        use Kind::*;
        match self {
            Add | Sub | Mul | Div | Equal | Less | Greater | And | Or | MatMul | Gather { .. } => Some(2),
            Where | LayerNorm { .. } | Gemm { .. } => Some(3),
            Masked { .. } => Some(2),
            Concat { .. } => None,
            Pow { .. } | Not | Neg | Sqrt | Reciprocal | Erf | Exp | Log | Tanh | Sigmoid | Relu | Abs | Gelu => Some(1),
            Softmax { .. } | LogSoftmax { .. } | ReduceMean { .. } | ReduceSum { .. } | Transpose { .. } | Reshape { .. } | Unsqueeze { .. } | Squeeze { .. } => Some(1),
            Expand { .. } | Slice { .. } | Narrow { .. } | Cast { .. } | Trilu { .. } | Identity | Dropout { .. } => Some(1),
        }
    }

    /// The autocast class PyTorch gives the aten op it came from: matmuls low, softmax, log,
    /// exp, pow, sums and layer norm in f32, the rest in their inputs' dtype.
    pub fn autocast(&self) -> super::super::Autocast {
        use super::super::Autocast as A;
        use Kind::*;
        match self {
            MatMul | Gemm { .. } => A::Low,
            Softmax { .. } | LogSoftmax { .. } | Masked { .. } | LayerNorm { .. } | Exp | Log | Pow { .. } | ReduceSum { .. } => A::F32,
            Add | Sub | Mul | Div | Equal | Less | Greater | And | Or | Not | Where | Neg | Sqrt | Reciprocal | Erf | Tanh | Sigmoid | Relu | Abs | Gelu => A::Same,
            ReduceMean { .. } | Transpose { .. } | Reshape { .. } | Unsqueeze { .. } | Squeeze { .. } | Expand { .. } | Slice { .. } | Concat { .. } | Narrow { .. } => A::Same,
            Gather { .. } | Cast { .. } | Trilu { .. } | Identity | Dropout { .. } => A::Same,
        }
    }

    /// The forward of the op on `xs` (in the order ONNX lists them; booleans as 0/1 floats).
    /// `drop` draws a dropout mask of a shape, in training.
    pub fn eval(&self, xs: &[Tensor], drop: &mut dyn FnMut(&Tensor, f64) -> Result<Option<Tensor>>) -> Result<Tensor> {
        if self.arity().is_some_and(|n| n != xs.len()) || xs.is_empty() {
            return bail(format!("the ONNX op {self:?} reads {} tensors, not {}", self.arity().unwrap_or(1), xs.len()));
        }
        let (x, dt) = (&xs[0], xs[0].dtype());
        use Kind::*;
        Ok(match self {
            Add => x.broadcast_add(&xs[1])?,
            Sub => x.broadcast_sub(&xs[1])?,
            Mul => x.broadcast_mul(&xs[1])?,
            Div => x.broadcast_div(&xs[1])?,
            Pow { exponent } if *exponent == 2.0 => x.sqr()?,
            Pow { exponent } => x.powf(*exponent)?,
            Equal => mask(x.broadcast_eq(&xs[1])?, dt)?,
            Less => mask(x.broadcast_lt(&xs[1])?, dt)?,
            Greater => mask(x.broadcast_gt(&xs[1])?, dt)?,
            // Logic carries no gradient, as PyTorch's boolean ops.
            And => x.broadcast_mul(&xs[1])?.detach(),
            Or => x.broadcast_maximum(&xs[1])?.detach(),
            Not => x.affine(-1.0, 1.0)?.detach(),
            Where => select(&xs[0], &xs[1], &xs[2])?,
            Neg => x.neg()?,
            Sqrt => x.sqrt()?,
            Reciprocal => x.recip()?,
            Erf => x.erf()?,
            Exp => x.exp()?,
            Log => x.log()?,
            Tanh => x.tanh()?,
            Sigmoid => (x.neg()?.exp()? + 1.0)?.recip()?,
            // PyTorch's relu (NaN passes; Candle's `relu` is `f32::max(x, 0)`, which makes NaN 0).
            Relu => crate::run::kernel::relu::relu(x)?,
            Abs => x.abs()?,
            Gelu => x.gelu_erf()?,
            MatMul => x.contiguous()?.broadcast_matmul(&xs[1].contiguous()?)?,
            Gemm { alpha, beta, trans_a, trans_b } => gemm(xs, *alpha, *beta, (*trans_a, *trans_b))?,
            Softmax { axis: a } => crate::run::kernel::activation::softmax_along(x, axis(*a, x.rank(), "Softmax")?)?,
            LogSoftmax { axis: a } => crate::run::kernel::activation::log_softmax_along(x, axis(*a, x.rank(), "LogSoftmax")?)?,
            Masked { axis: a, log, fill, on, add } => masked(&xs[0], &xs[1], (*a, *log), (*fill, *on, *add))?,
            LayerNorm { eps } => crate::run::model::norm::layer_norm(&x.contiguous()?, &xs[1], &xs[2], *eps)?,
            ReduceMean { axes, keepdims } => reduce(x, axes, *keepdims, true)?,
            ReduceSum { axes, keepdims } => reduce(x, axes, *keepdims, false)?,
            Transpose { perm } => x.permute(perm.as_slice())?,
            Reshape { shape } => x.contiguous()?.reshape(reshaped(x.dims(), shape)?)?,
            Unsqueeze { axes } => x.contiguous()?.reshape(unsqueezed(x.dims(), axes)?)?,
            Squeeze { axes } => x.contiguous()?.reshape(squeezed(x.dims(), axes)?)?,
            Expand { shape } => x.broadcast_as(broadcast(x.dims(), &shape.iter().map(|&d| d.max(0) as usize).collect::<Vec<_>>())?)?,
            Slice { starts, ends, axes } => slice(x, starts, ends, axes)?,
            Concat { axis: a } => Tensor::cat(xs, axis(*a, x.rank(), "Concat")?)?,
            Narrow { axis: a, start, len } => x.narrow(axis(*a, x.rank(), "Split")?, *start, *len)?,
            Gather { axis: a } => gather(x, &xs[1], *a)?,
            Cast { to: CastTo::Float } | Identity => x.clone(),
            Cast { to: CastTo::Bool } => mask(x.ne(0.0)?, dt)?,
            Cast { to: CastTo::Int } => trunc(x)?,
            Trilu { upper, k } => trilu(x, *upper, *k)?,
            Dropout { p } => match drop(x, *p)? {
                Some(m) => x.mul(&m)?,
                None => x.clone(),
            },
        })
    }
}

/// `where(c != 0, a, b)`, the three broadcast to one shape.
fn select(c: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let shape = broadcast(&broadcast(c.dims(), a.dims())?, b.dims())?;
    let (a, b) = crate::ops::expr::promoted(vec![a.clone(), b.clone()]).map(|(v, _)| (v[0].clone(), v[1].clone()))?;
    Ok(c.ne(0.0)?.broadcast_as(shape.as_slice())?.where_cond(&a.broadcast_as(shape.as_slice())?, &b.broadcast_as(shape.as_slice())?)?)
}

/// `x` masked by `m` (see [`Kind::Masked`]), through the softmax along `axis` (`log`: its log).
fn masked(x: &Tensor, m: &Tensor, (a, log): (i64, bool), (fill, on, add): (f64, bool, bool)) -> Result<Tensor> {
    let y = if add {
        x.broadcast_add(&m.to_dtype(x.dtype())?)?
    } else {
        let f = Tensor::new(fill, x.device())?.to_dtype(x.dtype())?;
        let hit = if on { m.ne(0.0)? } else { m.eq(0.0)? };
        let shape = broadcast(x.dims(), m.dims())?;
        hit.broadcast_as(shape.as_slice())?.where_cond(&f.broadcast_as(shape.as_slice())?, &x.broadcast_as(shape.as_slice())?)?
    };
    let d = axis(a, y.rank(), "Softmax")?;
    if log {
        crate::run::kernel::activation::log_softmax_along(&y, d)
    } else {
        crate::run::kernel::activation::softmax_along(&y, d)
    }
}

fn gemm(xs: &[Tensor], alpha: f64, beta: f64, (ta, tb): (bool, bool)) -> Result<Tensor> {
    let a = if ta { xs[0].t()? } else { xs[0].clone() };
    let b = if tb { xs[1].t()? } else { xs[1].clone() };
    let mut y = a.contiguous()?.matmul(&b.contiguous()?)?;
    if alpha != 1.0 {
        y = y.affine(alpha, 0.0)?;
    }
    let c = if beta != 1.0 { xs[2].affine(beta, 0.0)? } else { xs[2].clone() };
    Ok(y.broadcast_add(&c)?)
}

fn reduce(x: &Tensor, axes: &[i64], keepdims: bool, mean: bool) -> Result<Tensor> {
    let mut dims: Vec<usize> = if axes.is_empty() { (0..x.rank()).collect() } else { axes.iter().map(|&a| axis(a, x.rank(), "Reduce")).collect::<Result<_>>()? };
    dims.sort_unstable();
    dims.dedup();
    let mut y = if mean { x.mean_keepdim(dims.as_slice())? } else { x.sum_keepdim(dims.as_slice())? };
    if !keepdims {
        let kept: Vec<usize> = x.dims().iter().enumerate().filter(|(i, _)| !dims.contains(i)).map(|(_, d)| *d).collect();
        y = y.reshape(kept)?;
    }
    Ok(y)
}
