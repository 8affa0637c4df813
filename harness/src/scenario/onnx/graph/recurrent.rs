//! The graph compiler's `LSTM` and `GRU` nodes, which compile onto the registry's `lstm` and
//! `gru` layers (`ops/gated.rs`, with their fused kernels, diagnosis and PyTorch form).
//!
//! `torch.onnx.export` writes `nn.LSTM(batch_first=True)` as three parts around the node, which
//! compile with it and make no layer of their own:
//! - the input's `Transpose` to ONNX's `(seq, batch, features)`: the cell reads the batch-first
//!   value itself;
//! - the `Slice`s and `Concat`s that reorder PyTorch's parameters (gates `i, f, g, o`; a GRU's
//!   `r, z, n`) into ONNX's `W`, `R`, `B` (gates `i, o, f, c`; `z, r, h`). They are traced: run on
//!   each parameter's element numbers instead of its values, `W`'s numbers say which element of
//!   which initializer each of its entries is, so the cell's four parameters are the file's
//!   initializers (under their names) permuted into nanhunt's layout (`weight_ih` `(in, gates·hidden)`
//!   in PyTorch's gate order). A reorder that is not a one-to-one rearrangement of one
//!   initializer per parameter is refused;
//! - the output's `Transpose`/`Reshape` back to `(batch, seq, hidden)`, traced the same way on the
//!   output's positions: the first value whose positions are the batch-first sequence's is the
//!   cell's output, which later nodes (`out[:, -1]`'s `Gather`, `out.mean(1)`'s `ReduceMean`)
//!   read by name. `Shape` may read the values in between.
//!
//! What PyTorch's cells do not compute is refused at load with the node and its module path: two
//! directions, `clip`, activations other than the defaults, `sequence_lens`, peepholes, a GRU
//! without `linear_before_reset = 1`, an initial state other than zeros, a read of `Y_h`/`Y_c`.

use std::collections::{BTreeMap, BTreeSet};

use candle_core::{DType, Device, Tensor};

use super::{err, Attr, OnnxModel, OnnxNode, Ty, Val, Values, G};
use crate::ops::gated::Gated;
use crate::ops::onnx::{Kind, OnnxNode as Layer1, Src};
use crate::scenario::{Layer, RnnActivation, Tagged};

/// A parameter as `Compiled` holds it: name, dims and values in nanhunt's layout.
type Param = (String, Vec<usize>, Vec<f64>);

/// What the graph compiler knows of the graph's recurrent nodes before it compiles them.
#[derive(Debug, Default)]
pub(super) struct Recurrent {
    /// Nodes (by their first output) that compile with a recurrent node and make no layer.
    skip: BTreeSet<String>,
    /// Per recurrent node (by its first output): the batch-first value its input transposes, and
    /// the nodes (indices into the graph's) that reorder its weights, in graph order.
    sites: BTreeMap<String, (String, Vec<usize>)>,
    /// Values a recurrent node's output makes before it is batch-first: each position's number in
    /// the batch-first sequence (from 1), the cell's output name and `(batch, seq, hidden)`.
    traced: BTreeMap<String, (Tensor, String, [usize; 3])>,
}

/// Whether `n` is an `LSTM` or `GRU` node.
fn recurrent(n: &OnnxNode) -> bool {
    matches!(n.op_type.as_str(), "LSTM" | "GRU")
}

/// PyTorch's cell of `hidden` units (tanh, no dropout) returning every step's state.
fn sequence<const LSTM: bool>(hidden: usize) -> Gated<LSTM> {
    Gated { hidden, return_sequences: true, activation: RnnActivation::Tanh, recurrent_dropout: 0.0, init: None }
}

/// Finds each recurrent node's input transpose and weight reorder (see the module's doc).
pub(super) fn prepass(m: &OnnxModel) -> Result<Recurrent, String> {
    let mut r = Recurrent::default();
    if !m.nodes.iter().any(recurrent) {
        return Ok(r);
    }
    let producer: BTreeMap<&str, usize> = m.nodes.iter().enumerate().flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i))).collect();
    let readers = |v: &str| -> Vec<usize> { m.nodes.iter().enumerate().filter(|(_, n)| n.inputs.iter().any(|i| i == v)).map(|(i, _)| i).collect() };
    // Values computed from the file's float weights alone (never from the data).
    let mut weights: BTreeSet<&str> = m.initializers.iter().filter(|i| matches!(m.tensors.get(*i).map(|c| &c.values), Some(Values::Float(..)))).map(String::as_str).collect();
    let mut data: BTreeSet<&str> = m.inputs.iter().map(|(n, _)| n.as_str()).collect();
    // A `Shape` or `Size` folds to the stand-in's dims: a constant, whatever it reads.
    for n in m.nodes.iter().filter(|n| !matches!(n.op_type.as_str(), "Shape" | "Size")) {
        let ins = n.inputs.iter().map(String::as_str);
        if ins.clone().any(|i| data.contains(i)) || recurrent(n) {
            data.extend(n.outputs.iter().map(String::as_str));
        } else if ins.clone().any(|i| weights.contains(i)) {
            weights.extend(n.outputs.iter().map(String::as_str));
        }
    }
    for (k, n) in m.nodes.iter().enumerate().filter(|(_, n)| recurrent(n)) {
        let out = n.outputs.first().cloned().unwrap_or_default();
        // The weight reorder: the nodes W, R and B come from that read only the file's weights.
        let mut reorder = BTreeSet::new();
        let mut stack: Vec<&str> = n.inputs.iter().skip(1).take(3).map(String::as_str).collect();
        while let Some(v) = stack.pop() {
            if let Some(&p) = producer.get(v).filter(|_| weights.contains(v)) {
                if reorder.insert(p) {
                    stack.extend(m.nodes[p].inputs.iter().map(String::as_str));
                }
            }
        }
        for &p in &reorder {
            let elsewhere = m.nodes[p].outputs.iter().flat_map(|o| readers(o)).find(|i| *i != k && !reorder.contains(i));
            if let Some(i) = elsewhere {
                return Err(format!("the {} reads a slice of the {}'s weights: nanhunt imports a recurrent layer's weights read by it alone", m.nodes[i].describe(), n.describe()));
            }
        }
        let x = n.inputs.first().cloned().unwrap_or_default();
        let entry = producer.get(x.as_str()).map(|&p| &m.nodes[p]).filter(|t| {
            let perm = matches!(t.attrs.get("perm"), Some(Attr::Ints(p)) if p == &[1, 0, 2]);
            t.op_type == "Transpose" && perm && readers(&x) == [k]
        });
        let Some(t) = entry else {
            return Err(format!("the {} reads `{x}`, which is not the transpose of a (batch, seq, features) value: nanhunt imports `nn.LSTM`/`nn.GRU` with batch_first=True and one layer (for num_layers > 1, stack one-layer modules)", n.describe()));
        };
        r.skip.insert(x.clone());
        r.skip.extend(reorder.iter().filter_map(|&p| m.nodes[p].outputs.first().cloned()));
        r.sites.insert(out, (t.inputs.first().cloned().unwrap_or_default(), reorder.into_iter().collect()));
    }
    Ok(r)
}

impl G<'_> {
    /// Compiles `n` if it is a recurrent node, part of one, or reads one's output before it is
    /// batch-first; says whether it did.
    pub(super) fn recurrent_part(&mut self, n: &OnnxNode) -> Result<bool, String> {
        let out = n.outputs.first().cloned().unwrap_or_default();
        if self.rnn.skip.contains(&out) {
            return Ok(true);
        }
        if recurrent(n) {
            self.cell(n, &out)?;
            return Ok(true);
        }
        let Some(traced) = n.inputs.iter().find(|i| self.rnn.traced.contains_key(*i)).cloned() else { return Ok(false) };
        match n.op_type.as_str() {
            "Shape" | "Size" => self.fold_only(n, &out)?,
            "Transpose" | "Reshape" | "Squeeze" | "Unsqueeze" | "Identity" if n.inputs.first() == Some(&traced) => self.follow(n, &out)?,
            _ => return Err(format!("the {} reads the recurrent output `{traced}` in ONNX's (seq, directions, batch, hidden) layout: nanhunt imports the batch-first output sequence", n.describe())),
        }
        Ok(true)
    }

    /// A layout op on a recurrent output not yet batch-first: traced; its output is the cell's
    /// once its positions are the batch-first sequence's.
    fn follow(&mut self, n: &OnnxNode, out: &str) -> Result<(), String> {
        let (kind, ins) = self.translate(n)?;
        let (ids, tag, bth) = self.rnn.traced[&ins[0]].clone();
        let mut ts = vec![ids];
        for i in &ins[1..] {
            let v = self.val(n, i)?;
            if v.dynamic() {
                return Err(format!("the {} reshapes a recurrent output by `{i}`, computed from the data or a weight", n.describe()));
            }
            ts.push(v.t.clone());
        }
        let t = kind.eval(&ts, &mut |_, _| Ok(None)).map_err(|e| format!("the {} does not compute: {e}", n.describe()))?;
        let batch_first = t.dims() == bth && t.flatten_all().and_then(|f| f.to_vec1::<f64>()).map_err(err)?.iter().enumerate().all(|(i, &v)| v == (i + 1) as f64);
        let src = Some(Src::Value(tag.clone()));
        if batch_first {
            let t = Tensor::zeros(bth.as_slice(), DType::F64, &Device::Cpu).map_err(err)?;
            self.vals.insert(out.to_string(), Val { t, ty: Ty::Float, src, param: None, batch: true });
        } else {
            self.vals.insert(out.to_string(), Val { t: t.clone(), ty: Ty::Float, src, param: None, batch: false });
            self.rnn.traced.insert(out.to_string(), (t, tag, bth));
        }
        Ok(())
    }

    /// An `LSTM` or `GRU` node writing `out`: a registry `lstm`/`gru` layer returning its sequence.
    fn cell(&mut self, n: &OnnxNode, out: &str) -> Result<(), String> {
        let lstm = n.op_type == "LSTM";
        self.refuse(n, lstm)?;
        let h = usize::try_from(n.int("hidden_size", 0)).ok().filter(|&h| h > 0).ok_or_else(|| format!("the {} has no hidden_size", n.describe()))?;
        let (x, reorder) = self.rnn.sites.get(out).cloned().ok_or_else(|| format!("the {} was not seen before compiling", n.describe()))?;
        let xv = self.val(n, &x)?.clone();
        let &[b, t, w] = xv.t.dims() else { return Err(format!("the {} reads `{x}` of dims {:?}, not (batch, seq, features)", n.describe(), xv.t.dims())) };
        if !xv.batch || xv.src.is_none() {
            return Err(format!("the {} reads `{x}`, which is not computed from the data with the batch first", n.describe()));
        }
        let params = self.cell_params(n, &reorder, (lstm, w, h))?;
        let src = xv.src.unwrap_or(Src::Input);
        let last = match self.out.layers.last() {
            None => Some(Src::Input),
            Some(Layer::Onnx(l)) => Some(Src::Value(l.name.clone())),
            Some(l) => l.tag().0.map(|t| Src::Value(t.to_string())),
        };
        let module = n.module.clone().unwrap_or_else(|| n.name.clone());
        if last.as_ref() != Some(&src) {
            // The cell reads the layer before it: give it the value it reads.
            let dims = xv.t.dims().to_vec();
            self.out.layers.push(Layer::Onnx(Layer1 { op: Kind::Identity, inputs: vec![src], params: Vec::new(), name: format!("{x}.{out}"), dims, batch: true }));
            self.modules.push(module.clone());
            self.out.names.push(format!("{}.input", n.name));
        }
        let layer = if lstm { Layer::Lstm(sequence(h)) } else { Layer::Gru(sequence(h)) };
        let tag: String = out.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let tag = format!("onnx_{tag}");
        self.out.layers.push(Layer::Tagged(Box::new(Tagged { layer, name: Some(tag.clone()), precision: None })));
        self.modules.push(module);
        self.out.names.push(n.name.clone());
        self.out.params.extend(params);
        // ONNX's Y is (seq, 1, batch, hidden): each position numbered by its place in (batch, seq, hidden).
        let ids = Tensor::arange(1.0, (b * t * h) as f64 + 1.0, &Device::Cpu).and_then(|a| a.reshape((b, t, h))?.transpose(0, 1)?.unsqueeze(1)?.contiguous()).map_err(err)?;
        self.vals.insert(out.to_string(), Val { t: ids.clone(), ty: Ty::Float, src: Some(Src::Value(tag.clone())), param: None, batch: false });
        self.rnn.traced.insert(out.to_string(), (ids, tag, [b, t, h]));
        Ok(())
    }

    /// Refuses what PyTorch's cells do not compute (see the module's doc).
    fn refuse(&self, n: &OnnxNode, lstm: bool) -> Result<(), String> {
        let no = |why: &str| Err(format!("the {} {why}", n.describe()));
        let direction = n.string("direction", "forward");
        if direction != "forward" {
            return no(&format!("runs in direction `{direction}`: nanhunt imports a one-direction `nn.LSTM`/`nn.GRU` (bidirectional=False)"));
        }
        if n.attrs.contains_key("clip") {
            return no("clips its gates' inputs (`clip`), which PyTorch's cells do not");
        }
        let defaults: &[&str] = if lstm { &["Sigmoid", "Tanh", "Tanh"] } else { &["Sigmoid", "Tanh"] };
        match n.attrs.get("activations") {
            None => {}
            Some(Attr::Strs(a)) if a.len() == defaults.len() && a.iter().zip(defaults).all(|(a, d)| a.eq_ignore_ascii_case(d)) => {}
            Some(_) => return no(&format!("sets `activations` other than the defaults ({}), which PyTorch's cells use", defaults.join(", "))),
        }
        if n.attrs.contains_key("activation_alpha") || n.attrs.contains_key("activation_beta") {
            return no("sets `activation_alpha`/`activation_beta`, which PyTorch's cells do not have");
        }
        if n.int("layout", 0) != 0 {
            return no("has layout = 1 (batch first inside the node): nanhunt imports the exporter's layout 0");
        }
        if lstm && n.int("input_forget", 0) != 0 {
            return no("couples its input and forget gates (input_forget = 1), which PyTorch's LSTM does not");
        }
        if !lstm && n.int("linear_before_reset", 0) != 1 {
            return no("applies the reset gate before the recurrent product (linear_before_reset = 0): PyTorch's GRU applies it after (linear_before_reset = 1), the form nanhunt imports");
        }
        let given = |i: usize| n.inputs.get(i).is_some_and(|s| !s.is_empty());
        if given(4) {
            return no("reads `sequence_lens` (a packed sequence): nanhunt runs every sequence to its full length");
        }
        if lstm && given(7) {
            return no("has peephole weights `P`, which PyTorch's LSTM does not");
        }
        if !given(3) {
            return no("has no bias `B`: nanhunt imports `nn.LSTM`/`nn.GRU` with bias=True");
        }
        for i in if lstm { 5..7 } else { 5..6 } {
            if let Some(s) = n.inputs.get(i).filter(|s| !s.is_empty()) {
                let v = self.val(n, s)?;
                let zeros = !v.dynamic() && v.t.flatten_all().and_then(|t| t.to_vec1::<f64>()).map_err(err)?.iter().all(|&z| z == 0.0);
                if !zeros {
                    return no(&format!("starts from the state `{s}`, which is not zeros: nanhunt's cells start from zeros, as PyTorch's do without (h0, c0)"));
                }
            }
        }
        let read: Vec<&String> = n.outputs.iter().skip(1).filter(|o| !o.is_empty() && (self.m.outputs.contains(o) || self.m.nodes.iter().any(|r| r.inputs.contains(o)))).collect();
        if let Some(o) = read.first() {
            return no(&format!("has its final state `{o}` (h_n or c_n) read: nanhunt imports the output sequence (`out[:, -1]` is the last state)"));
        }
        Ok(())
    }

    /// The cell's parameters `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh` in nanhunt's layout
    /// (PyTorch's gate order), each an initializer rearranged: `W`, `R` and `B` traced through
    /// the `reorder` nodes on the initializers' element numbers (see the module's doc).
    fn cell_params(&mut self, n: &OnnxNode, reorder: &[usize], (lstm, w, h): (bool, usize, usize)) -> Result<Vec<Param>, String> {
        let mut ranges: Vec<(String, usize, usize)> = Vec::new();
        let mut ids: BTreeMap<String, Tensor> = BTreeMap::new();
        let reads: BTreeSet<&String> =
            reorder.iter().flat_map(|&p| &self.m.nodes[p].inputs).chain(n.inputs.iter().skip(1).take(3)).filter(|i| self.vals.get(*i).is_some_and(|v| v.param.is_some())).collect();
        let mut next = 1;
        for name in reads {
            let c = &self.m.tensors[name];
            let len = c.dims.iter().product::<usize>();
            ids.insert(name.clone(), Tensor::arange(next as f64, (next + len) as f64, &Device::Cpu).and_then(|t| t.reshape(c.dims.as_slice())).map_err(err)?);
            ranges.push((name.clone(), next, len));
            next += len;
        }
        for &p in reorder {
            let node = &self.m.nodes[p];
            let (kind, ins) = self.translate(node)?;
            if !matches!(kind, Kind::Slice { .. } | Kind::Concat { .. } | Kind::Unsqueeze { .. } | Kind::Squeeze { .. } | Kind::Reshape { .. } | Kind::Identity | Kind::Narrow { .. }) {
                return Err(format!("the {} rearranges the {}'s weights with a {}, which nanhunt does not trace", node.describe(), n.describe(), node.op_type));
            }
            let mut ts = Vec::with_capacity(ins.len());
            for i in &ins {
                let t = ids.get(i).cloned().or_else(|| self.vals.get(i).filter(|v| !v.dynamic()).map(|v| v.t.clone()));
                ts.push(t.ok_or_else(|| format!("the {} reads `{i}` beside the {}'s weights, which nanhunt does not trace", node.describe(), n.describe()))?);
            }
            let t = kind.eval(&ts, &mut |_, _| Ok(None)).map_err(|e| format!("the {} does not compute: {e}", node.describe()))?;
            ids.insert(node.outputs.first().cloned().unwrap_or_default(), t);
        }
        let g = if lstm { 4 } else { 3 };
        // ONNX's block of each of PyTorch's gates: i, f, g, o in ONNX's i, o, f, c; r, z, n in z, r, h.
        let order: &[usize] = if lstm { &[0, 2, 3, 1] } else { &[1, 0, 2] };
        let numbers = |i: usize, want: &[usize]| -> Result<Vec<f64>, String> {
            let name = n.inputs.get(i).cloned().unwrap_or_default();
            let t = ids.get(&name).ok_or_else(|| format!("the {} reads `{name}` as a weight, which is not the file's weights rearranged", n.describe()))?;
            if t.dims() != want {
                return Err(format!("the {}'s input `{name}` has dims {:?}, not {want:?}", n.describe(), t.dims()));
            }
            t.flatten_all().and_then(|t| t.to_vec1::<f64>()).map_err(err)
        };
        let (wi, ri, bi) = (numbers(1, &[1, g * h, w])?, numbers(2, &[1, g * h, h])?, numbers(3, &[1, 2 * g * h])?);
        // nanhunt's (cols, gates·hidden) from ONNX's (gates·hidden, cols).
        let matrix = |v: &[f64], cols: usize| -> Vec<f64> { (0..cols).flat_map(|c| order.iter().flat_map(move |&o| (0..h).map(move |j| v[(o * h + j) * cols + c]))).collect() };
        let bv: &[f64] = &bi;
        let vector = |off: usize| -> Vec<f64> { order.iter().flat_map(|&o| (0..h).map(move |j| bv[off + o * h + j])).collect() };
        let parts = [("weight_ih", vec![w, g * h], matrix(&wi, w)), ("weight_hh", vec![h, g * h], matrix(&ri, h)), ("bias_ih", vec![g * h], vector(0)), ("bias_hh", vec![g * h], vector(g * h))];
        let mut used = BTreeMap::new();
        let mut out = Vec::with_capacity(4);
        for (what, dims, numbers) in parts {
            let (name, values) = self.source(n, what, &numbers, &ranges, &mut used)?;
            out.push((name, dims, values));
        }
        Ok(out)
    }

    /// The initializer whose elements `numbers` are, each once and none of them another of the
    /// cell's parameters' (`used`), and its values in that order. The parameter has the
    /// initializer's name, or `{name}.{what}` if it is a part of it (ONNX's `B` holds both biases).
    fn source(&mut self, n: &OnnxNode, what: &str, numbers: &[f64], ranges: &[(String, usize, usize)], used: &mut BTreeMap<String, Vec<bool>>) -> Result<(String, Vec<f64>), String> {
        let not = || format!("the {}'s {what} is not elements of one initializer rearranged: nanhunt imports the weights PyTorch's parameters are sliced and concatenated into", n.describe());
        let first = numbers.first().copied().unwrap_or(0.0);
        let (name, start, len) = ranges.iter().find(|(_, s, l)| first >= *s as f64 && first < (s + l) as f64).ok_or_else(not)?;
        let Some(Values::Float(all, _)) = self.m.tensors.get(name).map(|c| &c.values) else { return Err(not()) };
        if used.is_empty() || !used.contains_key(name) {
            if !self.claimed.insert(name.clone()) {
                return Err(format!("the weight `{name}` is read by several nodes (the {} among them): nanhunt imports each weight read by one node, so untie it before exporting", n.describe()));
            }
            used.insert(name.clone(), vec![false; *len]);
        }
        let seen = used.get_mut(name).ok_or_else(not)?;
        let mut values = Vec::with_capacity(numbers.len());
        for &v in numbers {
            let k = v - *start as f64;
            if k.fract() != 0.0 || k < 0.0 || k >= *len as f64 || seen[k as usize] {
                return Err(not());
            }
            seen[k as usize] = true;
            values.push(all[k as usize]);
        }
        Ok((if numbers.len() == *len { name.clone() } else { format!("{name}.{what}") }, values))
    }
}

#[cfg(test)]
#[path = "recurrent_tests.rs"]
mod tests;
