//! A node computed alone in f64, for the verdict's op check (`run::verdict`):
//! its forward on f64 copies of what it read in the run's last forward
//! (`Net::op_f64`), and its backward from its output's gradient by autograd on
//! those copies (`Net::grad_f64`). The check is faithful to the step: a node
//! that draws dropout masks draws the same mask from the stream as the run's
//! forward found it, and batch norm reads its running statistics as they are
//! (an evaluation forward reads them; a training one updates a copy). Autocast
//! is off: the point is the op's math in f64.

use std::cell::RefCell;

use candle_core::{DType, Tensor, Var};

use super::{read, Model};
use crate::error::Result;
use crate::ops::{Cx, Inner, Params, State};
use crate::run::model::norm::Running;
use crate::run::net::{Wide, Wrt};
use crate::scenario::Input;

/// A node's forward in f64: its output, what it read as the run had it, and the variable of
/// the tensor a backward asked for.
pub(super) struct NodeF64 {
    /// The output in f64.
    pub out: Tensor,
    /// Its inputs as the run had them (main one first), then the state it read.
    pub inputs: Vec<Tensor>,
    /// The f64 copy that the gradient is taken with respect to, if one was asked for.
    pub var: Option<Var>,
}

/// `t` in f64 (token ids stay ids).
fn wide(t: &Tensor) -> Result<Tensor> {
    Ok(if t.dtype().is_float() { t.to_dtype(DType::F64)? } else { t.clone() })
}

impl Model {
    /// Node `l`'s forward in f64 on what it read in the last forward (`x`, `outs`, `mask`),
    /// `training` or not, with its dropout stream and state as the run had them. With `wrt`,
    /// the f64 copy of that tensor (node `m`'s output wherever `l` reads it, or parameter `i`)
    /// is a variable. `None` when `l` is no node.
    pub(super) fn node_f64(&self, l: usize, x: &Tensor, outs: &[Tensor], mask: Option<&Tensor>, training: bool, wrt: Option<Wrt>) -> Result<Option<NodeF64>> {
        let Some(node) = self.nodes.get(l) else { return Ok(None) };
        let reads: Vec<Input> = [node.input()].into_iter().chain(node.inputs.iter().skip(1).copied()).collect();
        let mut inputs: Vec<Tensor> = reads.iter().map(|&j| read(j, x, outs).clone()).collect();
        let mut var = None;
        let mut copy = |t: &Tensor, this: bool| -> Result<Tensor> {
            let w = wide(t)?;
            if !this || !w.dtype().is_float() {
                return Ok(w);
            }
            let v = var.get_or_insert(Var::from_tensor(&w)?);
            Ok(v.as_tensor().clone())
        };
        let mut wides = Vec::with_capacity(reads.len());
        for (j, t) in reads.iter().zip(&inputs) {
            wides.push(copy(t, matches!((wrt, j), (Some(Wrt::Output(m)), Input::Node(k)) if m == *k))?);
        }
        let mut params = Vec::with_capacity(node.params.len());
        for (p, i) in self.params[node.params.clone()].iter().zip(node.params.clone()) {
            params.push(copy(p.var.as_tensor(), wrt == Some(Wrt::Param(i)))?);
        }
        let mask = mask.map(wide).transpose()?;
        let (state, read_state) = self.state_f64(l)?;
        inputs.extend(read_state.into_iter().filter(|_| !training));
        let dropout = RefCell::new(self.drawn.borrow().get(l).cloned().flatten().filter(|_| training));
        let cx = Cx {
            part: node.part,
            params: Params::Prepared(&params),
            others: &wides[1..],
            mask: mask.as_ref(),
            training,
            round: None,
            inner: Inner::Off,
            storage: DType::F64,
            dropout: &dropout,
            state: &state,
            table: None,
        };
        let out = node.layer.op().forward(&wides[0], &cx)?;
        Ok(Some(NodeF64 { out, inputs, var }))
    }

    /// Node `l`'s state in f64 as it is now (batch norm's running statistics, the one op that
    /// keeps state) and the tensors it holds; no state where the node has none yet.
    fn state_f64(&self, l: usize) -> Result<(State, Vec<Tensor>)> {
        let now = self.states[l].borrow();
        let Some(running) = now.as_ref().and_then(|s| s.downcast_ref::<Running>()) else { return Ok((RefCell::new(None), Vec::new())) };
        Ok((RefCell::new(Some(Box::new(running.widened()?))), running.tensors().to_vec()))
    }

    /// The gradient of `wrt` in f64: the sum over the nodes that read it of their backward,
    /// each by autograd on its forward in f64 ([`Model::node_f64`]) from its output's gradient
    /// `upstream(node)` (a node whose output got none adds nothing). Returns it with what was
    /// read (inputs, then the upstream gradients) and the nodes summed; `None` if none was.
    pub(super) fn backward_f64(&self, wrt: Wrt, x: &Tensor, outs: &[Tensor], mask: Option<&Tensor>, upstream: &dyn Fn(usize) -> Option<Tensor>) -> Result<Option<(Wide, Vec<usize>)>> {
        let readers: Vec<usize> = match wrt {
            Wrt::Output(m) => (m + 1..self.nodes.len()).filter(|&j| self.nodes[j].inputs.contains(&Input::Node(m))).collect(),
            Wrt::Param(i) => self.nodes.iter().position(|n| n.params.contains(&i)).into_iter().collect(),
        };
        let (mut sum, mut inputs, mut used): (Option<Tensor>, Vec<Tensor>, Vec<usize>) = (None, Vec::new(), Vec::new());
        for j in readers {
            let Some(g) = upstream(j) else { continue };
            let Some(n) = self.node_f64(j, x, outs, mask, true, Some(wrt))? else { continue };
            let Some(var) = n.var else { continue };
            let store = n.out.mul(&g.to_dtype(DType::F64)?)?.sum_all()?.backward()?;
            let part = match store.get(var.as_tensor()) {
                Some(d) => d.clone(),
                None => var.as_tensor().zeros_like()?,
            };
            sum = Some(match sum {
                Some(s) => (s + part)?,
                None => part,
            });
            inputs.extend(n.inputs.into_iter().chain([g]));
            used.push(j);
        }
        Ok(sum.map(|out| (Wide { out, inputs, reference: false }, used)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::Model;
    use crate::run::net::{Net, Wrt};
    use crate::scenario::{plan, InShape, Init, Layer, ModelSpec};

    fn model(layers: Vec<Layer>, features: usize, init: Init) -> Model {
        let s = ModelSpec { init, layers, init_scale: 1.0, code: None, onnx: None };
        let p = plan(&s, InShape { features, seq_len: None, vocab: None, image: None }).unwrap();
        Model::new(&s, &p, &mut ChaCha8Rng::seed_from_u64(0), DType::F32, &Device::Cpu).unwrap()
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap()
    }

    #[test]
    fn a_dropout_node_in_f64_draws_the_mask_the_run_drew() {
        let m = model(vec![Layer::Dropout(crate::ops::dropout::Dropout { p: 0.5 })], 64, Init::Torch);
        let x = Tensor::ones((4, 64), DType::F32, &Device::Cpu).unwrap();
        m.dropout_step(ChaCha8Rng::seed_from_u64(3));
        let outs = m.forward(&x, None).unwrap();
        // Kept ones are 2, dropped 0; the check's mask is the run's, value for value.
        let wide = m.op_f64(0, &x, &outs, None, true).unwrap().unwrap();
        assert_eq!(flat(&wide.out), flat(&outs[0]));
        assert!(flat(&outs[0]).contains(&0.0) && flat(&outs[0]).contains(&2.0));
    }

    #[test]
    fn a_batch_norm_in_evaluation_reads_the_running_statistics_as_they_are() {
        let m = model(vec![Layer::BatchNorm(crate::ops::batch_norm::BatchNorm { eps: 1e-5, momentum: 0.1 })], 1, Init::Torch);
        let d = Device::Cpu;
        // One training batch [1, 3]: mean 2, unbiased variance 2, so the running statistics move
        // from (0, 1) to (0.1·2, 0.9 + 0.1·2) = (0.2, 1.1) (in f32 storage).
        m.forward(&Tensor::new(&[[1.0f32], [3.0]], &d).unwrap(), None).unwrap();
        let z = Tensor::new(&[[5.0f32]], &d).unwrap();
        let outs = m.forward_eval(&z, None).unwrap();
        let wide = m.op_f64(0, &z, &outs, None, false).unwrap().unwrap();
        // (5 − 0.2) / sqrt(1.1 + 1e-5), gain 1 and shift 0; fresh statistics would give 4.99998.
        let want = (5.0 - f64::from(0.2f32)) / (f64::from(1.1f32) + 1e-5).sqrt();
        assert!((flat(&wide.out)[0] - want).abs() < 1e-6, "{:?} vs {want}", flat(&wide.out));
        assert_eq!(wide.inputs.len(), 3, "the input, then the running mean and variance");
        // Training reads the batch's own statistics: (5 − 5)/sqrt(0 + eps) = 0 for one row.
        let outs = m.forward(&z, None).unwrap();
        assert_eq!(flat(&m.op_f64(0, &z, &outs, None, true).unwrap().unwrap().out), [0.0]);
    }

    #[test]
    fn a_parameters_gradient_in_f64_is_its_nodes_backward_from_the_upstream_gradient() {
        // y = x·Wᵀ + b with x = [2, 3], W = [[0.5, 0.5]], b = 0.5, upstream g = 5: dW = g·x = [10, 15],
        // db = 5, dx = g·W = [2.5, 2.5] (by hand).
        let m = model(vec![Layer::Linear(crate::ops::linear::Linear { out: 1, init: None })], 2, Init::Constant { value: 0.5 });
        let x = Tensor::new(&[[2.0f32, 3.0]], &Device::Cpu).unwrap();
        let outs = m.forward(&x, None).unwrap();
        let g = Tensor::new(&[[5.0f32]], &Device::Cpu).unwrap();
        let up = |j: usize| (j == 0).then(|| g.clone());
        let (w, used) = m.grad_f64(Wrt::Param(0), &x, &outs, None, &up).unwrap().unwrap();
        assert_eq!((flat(&w.out), used), (vec![10.0, 15.0], vec![0]));
        assert_eq!(flat(&m.grad_f64(Wrt::Param(1), &x, &outs, None, &up).unwrap().unwrap().0.out), [5.0]);
        // The model's input is no node's output: only a node reading node 0 would add to it.
        assert!(m.grad_f64(Wrt::Output(0), &x, &outs, None, &up).unwrap().is_none());
    }
}
