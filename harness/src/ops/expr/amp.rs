//! An expression under autocast (`train.precision = amp_*`): PyTorch runs each of its ops
//! apart, so each node computes in the dtype autocast gives that op, not one dtype for the
//! whole expression. With nanhunt's lists (CUDA's, `run::model::autocast`):
//!
//! - `@` is on the lower-precision list: its operands are cast down, it computes in the low dtype;
//! - `**` and the functions of the f32 list (`exp`, `log`, `sum`, `softmax`, `norm`, the named
//!   losses, ...: [`Func::f32_under_autocast`]) cast their operands up and return f32;
//! - every other op runs in its operands' dtype by PyTorch's type promotion (an f16 and an f32
//!   tensor give f32, but an f16 tensor and an f32 zero-dimensional one, a full reduction, give
//!   f16: dimensioned tensors win), where a number (a literal or a constant of `consts`) is a Python
//!   scalar, which promotes nothing ("wrapped number": an f16 tensor times 1000.0 is f16);
//!   a comparison's mask takes the main input's dtype (as the export writes it).
//!
//! Each node's value is a tensor of its dtype: a node in the low dtype computes in f32 from its
//! operands and casts its result down once, as PyTorch's CPU kernels compute half ops in f32
//! (`opmath`, with a scalar operand kept in f32: `f16(3) * 0.1` is 0.3000, not 0.2998) and
//! round each op's result. So `x*S*S - x*S*S` overflows to `inf - inf = NaN` in f16 here as in
//! PyTorch. Backward, the same casts give each use of a half value a half gradient (the
//! gradient of a cast is the cast back), and the uses' gradients add up in the half dtype, as
//! PyTorch's autograd accumulates them: the uses of `x` in `x*S*S - x*S*S + x` get `inf`,
//! `-inf` and 1 in f16, whose sum is NaN. The inputs arrive as tensors of the dtypes PyTorch
//! holds them in (in f32 storage the model casts a low input to a half tensor for it,
//! `Rounding::HalfTensors`); the result leaves in its own dtype.

use candle_core::{DType, Device, Tensor};

use super::ast::BinOp;
use super::check::{Ir, IrOp};
use super::eval::{alone, operands};
use super::funcs::Func;
use crate::error::Result;
use crate::run::kernel::cast::{cast, round};

/// A node's value under autocast: a tensor of `dtype`; `None` for a number alone (a literal,
/// a constant, arithmetic of them), held in f32, which does not promote.
#[derive(Debug, Clone)]
pub struct Value {
    /// The values.
    pub t: Tensor,
    /// Their dtype, as PyTorch holds them; `None` for a Python number.
    pub dtype: Option<DType>,
}

/// What a node needs to know of its expression under autocast.
#[derive(Debug, Clone, Copy)]
pub struct Amp {
    /// The low dtype (f16 or bf16).
    pub low: DType,
    /// The main input's dtype (`x`, or `p` in a loss), which a comparison's mask takes.
    pub main: DType,
}

impl Amp {
    /// The autocast of an expression over `inputs` (tensors of their dtypes) to `low`.
    pub fn of(inputs: &[Tensor], low: DType) -> Self {
        Amp { low, main: inputs.first().map_or(DType::F32, |t| float(t.dtype())) }
    }

    /// The inputs as values, in their dtypes (ids, which nanhunt keeps as floats, in f32).
    pub fn values(inputs: &[Tensor]) -> Result<Vec<Value>> {
        inputs.iter().map(|t| Ok(Value { t: cast(t, float(t.dtype()))?, dtype: Some(float(t.dtype())) })).collect()
    }

    /// The dtype node `ir` computes in, from its operands' dtypes `kids`.
    pub fn computes(&self, ir: &Ir, kids: &[Option<DType>]) -> Option<DType> {
        // PyTorch's promotion of tensors of two dtypes: the wider, f32 over a half type. A
        // zero-dimensional tensor (a full reduction, `sum(x)`) takes part only where no operand
        // has dimensions: of one category (floats), the dimensioned tensors' dtype wins, so an
        // f16 `x` times an f32 `sum(x)` is f16 (`result_type`'s dimensioned-over-zero-dim rule).
        let ops = operands(ir);
        let dimensioned = |i: usize| ops.get(i).is_none_or(|o| !o.dims.is_empty());
        let promoted = |from: usize| {
            let ds: Vec<(usize, DType)> = kids.iter().enumerate().skip(from).filter_map(|(i, d)| Some((i, (*d)?))).collect();
            let wide = ds.iter().any(|&(i, _)| dimensioned(i));
            ds.into_iter().filter(|&(i, _)| !wide || dimensioned(i)).map(|(_, d)| d).reduce(|a, b| if a == b { a } else { DType::F32 })
        };
        match &ir.op {
            IrOp::Input(_) | IrOp::Const(_) => kids.first().copied().flatten(),
            // `torch.where(c, 1.0, 0.0)` is a tensor of the default dtype.
            IrOp::Call(Func::Where, ..) if kids.len() == 3 => Some(promoted(1).unwrap_or(DType::F32)),
            _ if promoted(0).is_none() => None,
            IrOp::Pow(..) | IrOp::Bin(BinOp::Pow, ..) => Some(DType::F32),
            IrOp::Bin(BinOp::MatMul, ..) => Some(self.low),
            // A number over a tensor is `Tensor.__rdiv__`, `self.reciprocal() * other`, and
            // `reciprocal` is on CUDA's f32 list: f32.
            IrOp::Bin(BinOp::Div, ..) if kids.first() == Some(&None) => Some(DType::F32),
            IrOp::Bin(op, ..) if op.compares() => Some(self.main),
            IrOp::Call(f, ..) if f.f32_under_autocast() => Some(DType::F32),
            IrOp::Neg(_) | IrOp::Bin(..) | IrOp::Call(..) => promoted(0),
        }
    }

    /// Node `ir` alone over its operands' values `kids`: computed in f32 from them (an f32
    /// operand of an op on the lower-precision list cast down first, as autocast casts it), its
    /// result cast to its dtype.
    pub fn node(&self, ir: &Ir, kids: &[Value]) -> Result<Value> {
        let dtype = self.computes(ir, &kids.iter().map(|k| k.dtype).collect::<Vec<_>>());
        // Only an op of the lower-precision list (`@`) casts its f32 operands down; a comparison
        // whose mask takes the low dtype compares its operands as they are (promoted).
        let down = matches!(ir.op, IrOp::Bin(BinOp::MatMul, ..));
        let up = |k: &Value| if down && k.dtype == Some(DType::F32) { round(&k.t, self.low) } else { cast(&k.t, DType::F32) };
        let ts = kids.iter().map(up).collect::<Result<Vec<_>>>()?;
        // A number over a tensor is PyTorch's `x.reciprocal() * c`: two roundings in f32.
        let rdiv = matches!(ir.op, IrOp::Bin(BinOp::Div, ..)) && matches!(kids, [c, x] if c.dtype.is_none() && x.dtype.is_some());
        let out = match ts.as_slice() {
            [c, x] if rdiv => x.recip()?.broadcast_mul(c)?,
            _ => super::eval::eval(&alone(ir), &ts, DType::F32)?,
        };
        Ok(Value { t: cast(&out, dtype.unwrap_or(DType::F32))?, dtype })
    }

    /// `ir` over the input values `inputs`, node by node.
    pub fn value(&self, ir: &Ir, inputs: &[Value]) -> Result<Value> {
        let dev = inputs.first().map_or(Device::Cpu, |v| v.t.device().clone());
        match &ir.op {
            IrOp::Input(i) => Ok(inputs[*i].clone()),
            IrOp::Const(v) => Ok(Value { t: Tensor::new(*v as f32, &dev)?, dtype: None }),
            IrOp::Neg(_) | IrOp::Pow(..) | IrOp::Bin(..) | IrOp::Call(..) => {
                let kids = operands(ir).into_iter().map(|k| self.value(k, inputs)).collect::<Result<Vec<_>>>()?;
                self.node(ir, &kids)
            }
        }
    }
}

/// The names under which PyTorch's function mode sees the calls `repro.py` makes for the nodes
/// [`Amp::computes`] puts in f32 (the list's one source: `export-torch` writes it into the
/// script's `CudaF32List`, which casts their operands up under CPU autocast): each function on
/// the f32 list by its name (`torch.exp`, `F.softplus`), `norm`'s `torch.linalg.vector_norm`
/// too, `**` (`pow`, `__pow__`, `__rpow__`) and a number over a tensor (`__rdiv__`, which
/// `__rtruediv__` is at runtime). A named loss is written whole inside the
/// script's `f32_loss` (`losses::python`), which keeps all of it out of autocast.
pub fn torch_f32_names() -> Vec<&'static str> {
    use strum::VariantArray;
    let funcs = Func::VARIANTS.iter().filter(|f| f.f32_under_autocast() && f.family() != super::funcs::Family::Loss);
    let mut names: Vec<&'static str> = funcs.map(|&f| <&'static str>::from(f)).collect();
    names.extend(["linalg_vector_norm", "pow", "__pow__", "__rpow__", "__rdiv__"]);
    names
}

/// A float dtype for a tensor's (ids, kept as floats by nanhunt, count as f32).
fn float(d: DType) -> DType {
    if matches!(d, DType::F16 | DType::BF16 | DType::F64) {
        d
    } else {
        DType::F32
    }
}

/// Evaluates `ir` over `inputs` (tensors of the dtypes PyTorch holds them in) under autocast to
/// `low`, each node in its own dtype; the result is a tensor of its own dtype (f32 for a number).
pub fn eval(ir: &Ir, inputs: &[Tensor], low: DType) -> Result<Tensor> {
    let amp = Amp::of(inputs, low);
    Ok(amp.value(ir, &Amp::values(inputs)?)?.t)
}

#[cfg(test)]
#[path = "amp_tests.rs"]
mod tests;
