//! `kind = "expr"`: a loss written as an expression (`ops::expr`) of `p` (the predictions),
//! `y` (the targets) and, when the data is padded, `mask` (1 at real positions), with its
//! `consts`, reduced by the expression itself to one number, e.g. a focal loss
//! `mean(-y * (1 - p)**gamma * log(p) - (1 - y) * p**gamma * log(1 - p))`.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::ops::expr::check::Dims;
use crate::ops::expr::{compile, dims_of_tensor, eval, parse, promoted, torch, Checked};
use crate::scenario::LossSpec;

/// The expression's text (empty if absent: `check` refuses that).
fn text(s: &LossSpec) -> &str {
    s.expr.as_deref().unwrap_or("")
}

/// Checks the loss expression reading `p`, `y` and `mask` (if the data is padded) of these
/// shapes: it must give one number.
pub fn checked(s: &LossSpec, p: Dims, y: Dims, mask: Option<Dims>) -> std::result::Result<Checked, String> {
    let mut inputs = vec![("p".to_string(), p), ("y".to_string(), y)];
    inputs.extend(mask.map(|m| ("mask".to_string(), m)));
    let c = compile(text(s), &inputs, &s.consts)?;
    if !c.ir.dims.is_empty() {
        return Err(format!("column 1: the loss expression makes {}, and a loss is one number: reduce it with mean(...) or sum(...)", crate::ops::expr::check::describe(&c.ir.dims)));
    }
    Ok(c)
}

/// The expression compiled over `all`, the tensors `p`, `y` (and `mask`) it reads.
fn compiled(s: &LossSpec, all: &[Tensor]) -> Result<Checked> {
    checked(s, dims_of_tensor(&all[0]), dims_of_tensor(&all[1]), all.get(2).map(dims_of_tensor)).map_err(|message| Error::Invalid { location: "loss".into(), key: "expr".into(), message })
}

/// The loss of predictions `p` against targets `y` (and the padding `mask`, if any).
pub fn apply(s: &LossSpec, p: &Tensor, y: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let mut all = vec![p.clone(), y.clone()];
    all.extend(mask.cloned());
    let (all, dtype) = promoted(all)?;
    eval::eval(&compiled(s, &all)?.ir, &all, dtype)
}

/// The loss under autocast to `low`, each node in its op's dtype (`ops::expr::amp`), as PyTorch
/// computes a loss inside the autocast block: `p` (`held` is the dtype it holds; in f32 storage
/// its values are already that dtype's) as a tensor of that dtype, `y` and `mask` as they are.
/// The result is a tensor of its own dtype (f16 for `mean(p * p)` of an f16 `p`).
pub fn apply_amp(s: &LossSpec, (p, held): (&Tensor, DType), y: &Tensor, mask: Option<&Tensor>, low: DType) -> Result<Tensor> {
    let mut all = vec![crate::run::kernel::cast::cast(p, held)?, y.clone()];
    all.extend(mask.cloned());
    crate::ops::expr::amp::eval(&compiled(s, &all)?.ir, &all, low)
}

/// Its problems as the loss's `check` reports them.
pub fn problems(s: &LossSpec) -> Vec<(&'static str, String)> {
    match &s.expr {
        None => vec![("expr", "a loss of kind `expr` needs `expr = \"...\"` (an expression of p, y and mask)".into())],
        Some(t) => parse::parse(t).err().map(|e| ("expr", e.to_string())).into_iter().collect(),
    }
}

/// Its PyTorch expression of `p`, `y` (and `mask`).
pub fn torch_expr(s: &LossSpec) -> String {
    parse::parse(text(s)).map(|a| torch::python(&a, &s.consts, "p")).unwrap_or_else(|e| format!("None  # {e}"))
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use crate::ops::loss::Loss;
    use crate::scenario::{LayerPrecision, LossKind, LossSpec};

    /// The loss `text` (`consts`) of `p` (held in f16, `rows` × `cols`) against `y` under f16
    /// autocast, or in f32 where the loss keeps its own `precision`: its dtype, value and `p`'s gradient.
    fn under_f16(text: &str, consts: &[(&str, f64)], (p, y): (&[f32], &[f32]), (rows, cols): (usize, usize), precision: Option<LayerPrecision>) -> (DType, f32, Vec<f32>) {
        let dev = Device::Cpu;
        let spec = LossSpec { kind: LossKind::Expr, expr: Some(text.into()), consts: consts.iter().map(|(k, v)| (k.to_string(), *v)).collect(), precision, ..LossSpec::default() };
        let var = Var::from_tensor(&Tensor::new(p, &dev).unwrap().reshape((rows, cols)).unwrap()).unwrap();
        let y = Tensor::new(y, &dev).unwrap().reshape((rows, cols)).unwrap();
        let loss = Loss(spec).apply_autocast(var.as_tensor(), &y, None, Some((DType::F16, DType::F16))).unwrap();
        let g = loss.backward().unwrap();
        let grad = g.get(var.as_tensor()).unwrap().to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (loss.dtype(), loss.to_dtype(DType::F32).unwrap().to_scalar::<f32>().unwrap(), grad)
    }

    #[test]
    fn a_loss_expression_computes_each_node_in_its_autocast_dtype_as_inside_the_autocast_block() {
        // PyTorch 2.15, p = [[300.], [10.]] in f16 (requires_grad), under
        // torch.autocast("cpu", dtype=torch.float16) with sum cast up as on CUDA's f32 list:
        // torch.sum(p * p) is tensor(inf) (f32: p * p is f16, 90000 > 65504), p.grad
        // [[600.], [20.]] (f16); torch.mean(p * p) is tensor(inf, dtype=torch.float16); on
        // p.float() outside autocast torch.sum(p * p) is tensor(90100.).
        let (p, y) = (&[300.0f32, 10.0][..], &[0.0f32, 0.0][..]);
        assert_eq!(under_f16("sum(p * p)", &[], (p, y), (2, 1), None), (DType::F32, f32::INFINITY, vec![600.0, 20.0]));
        let (dtype, value, _) = under_f16("mean(p * p)", &[], (p, y), (2, 1), None);
        assert_eq!((dtype, value), (DType::F16, f32::INFINITY));
        assert_eq!(under_f16("sum(p * p)", &[], (p, y), (2, 1), Some(LayerPrecision::F32)), (DType::F32, 90100.0, vec![600.0, 20.0]));
    }

    #[test]
    fn a_contrastive_loss_expression_overflows_its_f16_logits_and_is_finite_kept_in_f32() {
        // PyTorch 2.15, p = [[20., 20.], [1., 2.]] in f16, y = [[20., 20.], [2., 1.]] in f32,
        // T = 0.01, under torch.autocast("cpu", dtype=torch.float16) (logsumexp and sum cast up):
        // (p @ y.T) / T is tensor([[inf, 6000.], [6000., 400.]], dtype=torch.float16) (800 / 0.01
        // = 80000 > 65504), torch.mean(torch.logsumexp(lg, dim=1) - torch.sum(p * y, dim=1) / T)
        // is tensor(inf) (f32), p.grad [[nan, nan], [900., 950.]]; on p.float() outside
        // autocast the loss is 2800.0 and p.grad [[0., 0.], [900., 950.]].
        let text = "mean(logsumexp(p @ transpose(y, 0, 1) / T, dim=1) - sum(p * y, dim=1) / T)";
        let (p, y) = (&[20.0f32, 20.0, 1.0, 2.0][..], &[20.0f32, 20.0, 2.0, 1.0][..]);
        let (dtype, value, grad) = under_f16(text, &[("T", 0.01)], (p, y), (2, 2), None);
        assert_eq!((dtype, value), (DType::F32, f32::INFINITY));
        assert!(grad[0].is_nan() && grad[1].is_nan() && grad[2..] == [900.0, 950.0], "{grad:?}");
        assert_eq!(under_f16(text, &[("T", 0.01)], (p, y), (2, 2), Some(LayerPrecision::F32)), (DType::F32, 2800.0, vec![0.0, 0.0, 900.0, 950.0]));
    }

    #[test]
    fn only_an_expression_takes_its_own_precision() {
        use crate::ops::Op;
        let mse = LossSpec { precision: Some(LayerPrecision::F32), ..LossSpec::default() };
        assert_eq!(Loss(mse).check().iter().map(|(k, _)| *k).collect::<Vec<_>>(), ["precision"]);
        let expr = LossSpec { kind: LossKind::Expr, expr: Some("mean(p)".into()), precision: Some(LayerPrecision::F32), ..LossSpec::default() };
        assert!(Loss(expr).check().is_empty());
    }
}
