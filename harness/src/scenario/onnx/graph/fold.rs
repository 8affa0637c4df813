//! The graph compiler's nodes that make no layer of their own: `Constant`s, the ops folded only
//! from constants (`Shape`, `Size`, `Range`, `ConstantOfShape`), `Split`'s outputs (a `Narrow`
//! each), and a masked fill of `-inf` that only a softmax reads (compiled into it).

use candle_core::{Device, Tensor};

use super::{chunks, err, kind_axis, Attr, OnnxNode, Ty, Val, Values, G};
use crate::ops::onnx::Kind;

impl G<'_> {
    /// Whether `n` is a fill of a non-finite constant (`Where(c, -inf, x)`, `x + m` with `-inf`
    /// in a constant `m`) that only a softmax reads: then the softmax compiles with it
    /// (`Kind::Masked`) and the `-inf` it writes on purpose is never a watched output.
    pub(super) fn mask(&mut self, n: &OnnxNode, out: &str) -> Result<bool, String> {
        let readers: Vec<&OnnxNode> = self.m.nodes.iter().filter(|r| r.inputs.iter().any(|i| i == out)).collect();
        let soft = matches!(readers.as_slice(), [r] if matches!(r.op_type.as_str(), "Softmax" | "LogSoftmax") && r.inputs.first().is_some_and(|i| i == out));
        if !soft || self.m.outputs.iter().any(|o| o == out) || n.inputs.iter().any(|i| !self.vals.contains_key(i)) {
            return Ok(false);
        }
        let fixed = |i: usize| n.inputs.get(i).and_then(|v| self.vals.get(v)).filter(|v| !v.dynamic()).map(|v| v.t.flatten_all().and_then(|t| t.to_vec1::<f64>()));
        let dynamic = |i: usize| n.inputs.get(i).and_then(|v| self.vals.get(v)).is_some_and(Val::dynamic);
        let found = match n.op_type.as_str() {
            "Where" => [(1, 2, true), (2, 1, false)].into_iter().find_map(|(f, x, on)| match fixed(f) {
                Some(Ok(v)) if v.len() == 1 && !v[0].is_finite() && dynamic(x) => Some((vec![n.inputs[x].clone(), n.inputs[0].clone()], v[0], on, false)),
                _ => None,
            }),
            _ => [(1, 0), (0, 1)].into_iter().find_map(|(f, x)| match fixed(f) {
                Some(Ok(v)) if v.iter().any(|v| !v.is_finite()) && dynamic(x) => Some((vec![n.inputs[x].clone(), n.inputs[f].clone()], 0.0, true, true)),
                _ => None,
            }),
        };
        let Some(m) = found else { return Ok(false) };
        self.masks.insert(out.to_string(), m);
        Ok(true)
    }

    /// A `Constant` node's value.
    pub(super) fn constant(&mut self, n: &OnnxNode, out: &str) -> Result<(), String> {
        let (t, ty) = match (n.attrs.get("value"), n.attrs.get("value_int"), n.attrs.get("value_ints"), n.attrs.get("value_float"), n.attrs.get("value_floats")) {
            (Some(Attr::Tensor(c)), ..) => {
                let (v, ty) = match &c.values {
                    Values::Float(v, _) => (v.clone(), Ty::Float),
                    Values::Int(v) => (v.iter().map(|&i| i as f64).collect(), Ty::Int),
                };
                (Tensor::from_vec(v, c.dims.as_slice(), &Device::Cpu), ty)
            }
            (_, Some(Attr::Int(i)), ..) => (Tensor::new(*i as f64, &Device::Cpu), Ty::Int),
            (_, _, Some(Attr::Ints(v)), ..) => (Tensor::new(v.iter().map(|&i| i as f64).collect::<Vec<_>>(), &Device::Cpu), Ty::Int),
            (_, _, _, Some(Attr::Float(f)), _) => (Tensor::new(f64::from(*f), &Device::Cpu), Ty::Float),
            (_, _, _, _, Some(Attr::Floats(v))) => (Tensor::new(v.iter().map(|&f| f64::from(f)).collect::<Vec<_>>(), &Device::Cpu), Ty::Float),
            _ => return Err(format!("the {} holds no value nanhunt reads (value, value_int(s), value_float(s))", n.describe())),
        };
        self.vals.insert(out.to_string(), Val::fixed(t.map_err(err)?, ty));
        Ok(())
    }

    /// `Split`: one `Narrow` layer (or constant) per output.
    pub(super) fn split(&mut self, n: &OnnxNode) -> Result<(), String> {
        let x = n.inputs.first().cloned().unwrap_or_default();
        let rank = self.val(n, &x)?.t.rank();
        let axis = n.int("axis", 0);
        let dim = self.val(n, &x)?.t.dims().get(kind_axis(axis, rank)?).copied().unwrap_or(0);
        let sizes: Vec<usize> = match (self.ints(n, 1)?, n.attrs.get("split")) {
            (Some(s), _) => s.iter().map(|&v| v.max(0) as usize).collect(),
            (None, Some(Attr::Ints(s))) => s.iter().map(|&v| v.max(0) as usize).collect(),
            _ => chunks(dim, dim.div_ceil(n.outputs.len().max(1))),
        };
        let mut start = 0;
        for (o, len) in n.outputs.iter().zip(sizes) {
            if !o.is_empty() {
                self.apply(n, Kind::Narrow { axis, start, len }, std::slice::from_ref(&x), o)?;
            }
            start += len;
        }
        Ok(())
    }

    /// The ops folded only from constants: `Shape`, `Size`, `Range`, `ConstantOfShape`.
    pub(super) fn fold_only(&mut self, n: &OnnxNode, out: &str) -> Result<(), String> {
        let first = n.inputs.first().cloned().unwrap_or_default();
        let v = self.val(n, &first)?.clone();
        let dims: Vec<f64> = v.t.dims().iter().map(|&d| d as f64).collect();
        let cpu = &Device::Cpu;
        let t = match n.op_type.as_str() {
            "Shape" => {
                let r = dims.len() as i64;
                let at = |i: i64| (if i < 0 { i + r } else { i }).clamp(0, r) as usize;
                let (s, e) = (at(n.int("start", 0)), at(n.int("end", r)));
                Tensor::new(dims[s..e.max(s)].to_vec(), cpu)
            }
            "Size" => Tensor::new(dims.iter().product::<f64>(), cpu),
            "Range" => {
                let (s, l, d) = (self.scalar(n, 0)?, self.scalar(n, 1)?, self.scalar(n, 2)?);
                let count = if d == 0.0 { 0 } else { ((l - s) / d).ceil().max(0.0) as usize };
                Tensor::new((0..count).map(|i| s + i as f64 * d).collect::<Vec<_>>(), cpu)
            }
            _ => {
                let shape: Vec<usize> = self.ints(n, 0)?.unwrap_or_default().iter().map(|&d| d.max(0) as usize).collect();
                let fill = match n.attrs.get("value") {
                    Some(Attr::Tensor(c)) => match &c.values {
                        Values::Float(v, _) => v.first().copied().unwrap_or(0.0),
                        Values::Int(v) => v.first().map_or(0.0, |&i| i as f64),
                    },
                    _ => 0.0,
                };
                Tensor::full(fill, shape, cpu)
            }
        };
        let ty = match n.op_type.as_str() {
            "Range" => v.ty,
            "ConstantOfShape" => match n.attrs.get("value") {
                Some(Attr::Tensor(c)) if matches!(c.values, Values::Int(_)) => Ty::Int,
                _ => Ty::Float,
            },
            _ => Ty::Int,
        };
        if n.op_type == "Range" && v.dynamic() {
            return Err(format!("the {} ranges over values computed from the data: nanhunt folds a Range of constants", n.describe()));
        }
        self.vals.insert(out.to_string(), Val::fixed(t.map_err(err)?, ty));
        Ok(())
    }

    /// Input `i` of `n` as a constant number.
    pub(super) fn scalar(&self, n: &OnnxNode, i: usize) -> Result<f64, String> {
        let v = self.ints_f(n, i)?;
        v.first().copied().ok_or_else(|| format!("the {} has no input {i}", n.describe()))
    }

    pub(super) fn ints_f(&self, n: &OnnxNode, i: usize) -> Result<Vec<f64>, String> {
        let name = n.inputs.get(i).cloned().unwrap_or_default();
        let v = self.val(n, &name)?;
        if v.dynamic() {
            return Err(format!("the {} reads `{name}` as a constant, but it is computed from the data or a weight", n.describe()));
        }
        v.t.flatten_all().and_then(|t| t.to_vec1::<f64>()).map_err(err)
    }
}
