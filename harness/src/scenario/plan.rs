//! The model's plan: its parameters (names, shapes, initialisation) and its
//! dataflow of nodes, worked out from the `[model]` table and the input shape
//! before anything is built. Validation, the memory estimate, the runner and
//! the PyTorch export all read it, so they cannot disagree.
//!
//! Parameter names are stable and ordered by layer (`layers.0.linear.weight`,
//! `layers.2.residual.layers.1.attention.q.weight`, ...).

use super::{InShape, Init, Layer, ModelSpec, Named, Shape, MAX_NESTING};

/// What a parameter is, which decides its initial values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A weight matrix, stored `(in, out)` like a Keras kernel (PyTorch's `weight` is its transpose),
    /// so the forward pass needs no transpose and its gradient arrives contiguous.
    Weight,
    /// A recurrent weight matrix `(hidden, hidden)`.
    Recurrent,
    /// A bias vector.
    Bias,
    /// A layer-norm gain (starts at one).
    Gain,
    /// A layer-norm shift (starts at zero).
    Shift,
    /// An attention `q`, `k` or `v` projection: `nn.MultiheadAttention` draws the three as one
    /// `(3w, w)` matrix, xavier-uniform, so the bound is `sqrt(6 / (w + 3w))`.
    InProj,
    /// A bias that starts at zero in PyTorch too (attention's projections).
    ZeroBias,
    /// An embedding table, `N(0, 1)` as `nn.Embedding`.
    Embedding,
    /// An LSTM's input bias: Keras's `unit_forget_bias` starts the forget gate's quarter at 1.
    ForgetBias,
    /// A convolution kernel, PyTorch's `(out, in, k)` or `(out, in, k, k)` in both.
    Conv,
}

/// Name, shape and initialisation of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// Stable dotted name.
    pub name: String,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// What it is.
    pub role: Role,
    /// Fan-in of the layer.
    pub fan_in: usize,
    /// Fan-out of the layer.
    pub fan_out: usize,
    /// PyTorch's default init draws from `U(±1/sqrt(torch_fan))`: fan-in for linear, hidden size for RNN.
    pub torch_fan: usize,
    /// The initialisation in force for it.
    pub init: Init,
}

/// One step of the model's dataflow: a layer applied to an earlier node's output, the sum
/// that closes a residual block, or one of attention's three steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Dotted name, e.g. `layers.2.residual.layers.1.attention`.
    pub name: String,
    /// The layer (a residual block's node is the addition that closes it).
    pub layer: Layer,
    /// Which part of the layer this node computes.
    pub part: Part,
    /// The node whose output this one reads (`None`: the model's input).
    pub input: Option<usize>,
    /// A second input: a residual block's input (added to its last layer's output), or the
    /// input attention projects its values from.
    pub other: Option<Option<usize>>,
    /// Shape of the output.
    pub shape: Shape,
    /// Shape of what `input` reads (the model's input for the first node).
    pub in_shape: Shape,
    /// Its parameters' indices in [`Plan::params`].
    pub params: std::ops::Range<usize>,
}

/// What a node computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The whole layer.
    Whole,
    /// A residual block's `x + f(x)`.
    Sum,
    /// Attention's scaled scores `q kᵀ / sqrt(d)`, `(batch, heads, seq, seq)`, before masking.
    Scores,
    /// Attention's probabilities: the masked scores through the softmax.
    Probs,
    /// Attention's output: the probabilities times the values, through the output projection.
    Mix,
}

/// The static shape of a model: its parameters, layer names and widths.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Parameters in layer order.
    pub params: Vec<ParamSpec>,
    /// The dataflow, in execution order (a residual block's layers, then its sum).
    pub nodes: Vec<Node>,
    /// Each node's name, in order.
    pub layer_names: Vec<String>,
    /// Last-dimension width of each node's output.
    pub widths: Vec<usize>,
    /// Shape of the model's output.
    pub out: Shape,
    /// Values per example of the model's output (its width, or `seq × width` for sequences).
    pub out_width: usize,
    /// Attention's values per example that are not node outputs (`q`, `k`, `v` and the heads'
    /// mix), for the memory estimate.
    pub attention_cells: usize,
}

/// Where a layer does not fit: the dotted key under `model` (`layers.2.layers.1`) and why.
pub type PlanError = (String, String);

/// Works out parameter shapes and node shapes, or says which layer does not fit.
pub fn plan(spec: &ModelSpec, input: InShape) -> std::result::Result<Plan, PlanError> {
    let mut b = Planner { spec, start: input.shape(), params: Vec::new(), nodes: Vec::new(), attention_cells: 0, current: String::new() };
    let (_, out) = b.block(&spec.layers, "layers", "layers", None, input.shape(), 0)?;
    if let Shape::Tokens { .. } = out {
        return Err(("layers".into(), "the model's output is still token ids: start with an embedding layer".into()));
    }
    let Planner { params, nodes, attention_cells, .. } = b;
    Ok(Plan { layer_names: nodes.iter().map(|n| n.name.clone()).collect(), widths: nodes.iter().map(|n| n.shape.width()).collect(), out_width: out.cols(), out, params, nodes, attention_cells })
}

impl Plan {
    /// Why the model's output does not fit targets of `targets` columns per row, if it does not.
    pub fn target_mismatch(&self, targets: usize) -> Option<String> {
        (self.out_width != targets).then(|| match self.out {
            Shape::Seq { .. } => format!(
                "the model outputs a sequence {} ({} values per row) but the targets have {targets}: bring it down with mean_pool, max_pool, last or an rnn layer, or end in vocab-wide logits for next_token targets",
                self.out.describe(),
                self.out_width
            ),
            _ => format!("the model outputs {} column(s) but the targets have {targets}: the last layer's width must match", self.out_width),
        })
    }
}

/// Works out the plan: the nodes and parameters so far. An op's [`plan`](crate::ops::Op::plan)
/// declares its parameters through it.
pub struct Planner<'a> {
    spec: &'a ModelSpec,
    /// The model's input shape.
    start: Shape,
    params: Vec<ParamSpec>,
    nodes: Vec<Node>,
    attention_cells: usize,
    /// The dotted name of the node being planned.
    current: String,
}

impl Planner<'_> {
    /// Declares a parameter of the node being planned, `{node}.{suffix}` (e.g. `weight`), with
    /// its fans, PyTorch's fan for its default init, and the layer's init if it overrides the model's.
    pub fn param(&mut self, suffix: &str, shape: Vec<usize>, role: Role, (fan_in, fan_out): (usize, usize), torch_fan: usize, init: Option<Init>) {
        let init = init.unwrap_or(self.spec.init);
        self.params.push(ParamSpec { name: format!("{}.{suffix}", self.current), shape, role, fan_in, fan_out, torch_fan, init });
    }

    /// Plans `layers` reading node `input` of shape `shape`; returns the last node and its shape.
    fn block(&mut self, layers: &[Layer], names: &str, keys: &str, mut input: Option<usize>, mut shape: Shape, depth: usize) -> std::result::Result<(Option<usize>, Shape), PlanError> {
        for (i, layer) in layers.iter().enumerate() {
            let (name, key) = (format!("{names}.{i}.{}", layer.name()), format!("{keys}.{i}"));
            let first = self.params.len();
            let out = if let Layer::Residual { layers: inner } = layer {
                if depth >= MAX_NESTING {
                    return Err((key, format!("residual blocks nest deeper than {MAX_NESTING} levels")));
                }
                let (last, inner_shape) = self.block(inner, &format!("{name}.layers"), &format!("{key}.layers"), input, shape, depth + 1)?;
                if inner_shape != shape {
                    return Err((key, format!("a residual block must keep its input's shape: it takes {} and its layers make {}", shape.describe(), inner_shape.describe())));
                }
                self.push(name, Layer::Residual { layers: Vec::new() }, Part::Sum, last, Some(input), shape, first);
                input = Some(self.nodes.len() - 1);
                continue;
            } else if let Layer::Attention { heads, .. } = layer {
                self.attention(layer, *heads, &name, input, shape).map_err(|m| (key, m))?;
                input = Some(self.nodes.len() - 1);
                continue;
            } else {
                self.layer(layer, &name, shape).map_err(|m| (key, m))?
            };
            self.push(name, layer.clone(), Part::Whole, input, None, out, first);
            input = Some(self.nodes.len() - 1);
            shape = out;
        }
        Ok((input, shape))
    }

    /// Adds a node whose parameters start at index `first` and run to the last one added.
    #[allow(clippy::too_many_arguments)]
    fn push(&mut self, name: String, layer: Layer, part: Part, input: Option<usize>, other: Option<Option<usize>>, shape: Shape, first: usize) {
        let in_shape = input.map_or(self.start, |i| self.nodes[i].shape);
        self.nodes.push(Node { name, layer, part, input, other, shape, in_shape, params: first..self.params.len() });
    }

    /// Attention as three nodes, so the watch sees its scores and probabilities by name:
    /// scores (with `q`, `k`), probabilities, then the output (with `v`, `o`), which reads the
    /// probabilities and the attention's input.
    fn attention(&mut self, layer: &Layer, heads: usize, name: &str, input: Option<usize>, shape: Shape) -> std::result::Result<(), String> {
        let Shape::Seq { len, width: w } = shape else {
            return Err(format!("an attention layer needs sequence input (batch, seq, width), and gets {}", shape.describe()));
        };
        if heads == 0 || w % heads != 0 {
            return Err(format!("`heads` = {heads} must divide the width {w} (each head gets width / heads)"));
        }
        let scores = Shape::Seq { len: heads.saturating_mul(len), width: len };
        let init = self.spec.init;
        let param = |b: &mut Self, p: &str, role: Role, fan_out: usize| {
            let n = if role == Role::ZeroBias { vec![w] } else { vec![w, w] };
            b.params.push(ParamSpec { name: format!("{name}.{p}"), shape: n, role, fan_in: w, fan_out, torch_fan: w, init });
        };
        let first = self.params.len();
        for p in ["q", "k"] {
            param(self, &format!("{p}.weight"), Role::InProj, w.saturating_mul(3));
            param(self, &format!("{p}.bias"), Role::ZeroBias, w);
        }
        self.push(format!("{name}.scores"), layer.clone(), Part::Scores, input, None, scores, first);
        let probs = self.nodes.len() - 1;
        self.push(format!("{name}.probs"), layer.clone(), Part::Probs, Some(probs), None, scores, self.params.len());
        let first = self.params.len();
        param(self, "v.weight", Role::InProj, w.saturating_mul(3));
        param(self, "v.bias", Role::ZeroBias, w);
        param(self, "o.weight", Role::Weight, w);
        param(self, "o.bias", Role::ZeroBias, w);
        self.push(name.to_string(), layer.clone(), Part::Mix, Some(probs + 1), Some(input), shape, first);
        // Scores and probabilities are counted as nodes; q, k, v and the heads' mix are not.
        self.attention_cells = self.attention_cells.saturating_add(len.saturating_mul(w).saturating_mul(4));
        Ok(())
    }

    /// Plans one registry layer through its op (which declares its parameters); returns its
    /// output shape.
    fn layer(&mut self, layer: &Layer, name: &str, shape: Shape) -> std::result::Result<Shape, String> {
        let kind = layer.name();
        if matches!(shape, Shape::Tokens { .. }) && !matches!(layer, Layer::Embedding(_)) {
            return Err(format!("a {kind} layer cannot read token ids: put an embedding layer first"));
        }
        match layer.op() {
            Some(op) => {
                self.current = name.to_string();
                op.plan(self, shape)
            }
            None => Err(format!("a {kind} layer is planned by its block")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::embedding::Embedding;
    use crate::ops::linear::Linear;
    use crate::ops::seq_pool::MeanPool;

    fn spec(layers: Vec<Layer>) -> ModelSpec {
        ModelSpec { init: Init::Torch, layers, init_scale: 1.0, code: None }
    }

    #[test]
    fn plan_names_and_shapes() {
        let s = spec(vec![Layer::Linear(Linear { out: 4, init: None }), Layer::Relu(Default::default()), Layer::Linear(Linear { out: 1, init: None })]);
        let p = plan(&s, InShape { features: 3, seq_len: None, vocab: None, image: None }).unwrap();
        let names: Vec<_> = p.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["layers.0.linear.weight", "layers.0.linear.bias", "layers.2.linear.weight", "layers.2.linear.bias"]);
        assert_eq!(p.params[0].shape, vec![3, 4]);
        assert_eq!(p.widths, vec![4, 4, 1]);
    }

    #[test]
    fn plan_rejects_misplaced_layers() {
        let seq = InShape { features: 1, seq_len: Some(5), vocab: None, image: None };
        let flat = InShape { features: 4, seq_len: None, vocab: None, image: None };
        let tokens = InShape { features: 1, seq_len: Some(5), vocab: Some(10), image: None };
        let err = |layers, input| plan(&spec(layers), input).unwrap_err();
        assert!(err(vec![Layer::Rnn(crate::ops::rnn::Rnn { hidden: 2, init: None })], flat).1.contains("needs sequence input"));
        assert!(err(vec![Layer::Linear(Linear { out: 1, init: None })], tokens).1.contains("embedding layer first"));
        assert!(err(vec![Layer::Attention { heads: 3, causal: false, mask_fill: Default::default(), softmax: Default::default() }], InShape { features: 4, ..seq })
            .1
            .contains("must divide the width 4"));
        assert!(err(vec![Layer::MeanPool(MeanPool {})], flat).1.contains("needs sequence input"));
        let (key, m) = err(vec![Layer::Residual { layers: vec![Layer::Identity(Default::default()), Layer::Linear(Linear { out: 2, init: None })] }], flat);
        assert_eq!(key, "layers.0");
        assert!(m.contains("keep its input's shape"), "{m}");
        let mut deep = Layer::Identity(Default::default());
        for _ in 0..=MAX_NESTING {
            deep = Layer::Residual { layers: vec![deep] };
        }
        assert!(err(vec![deep], flat).1.contains("nest deeper"));
        // Linear applies per position, as torch.nn.Linear does; pooling brings the sequence down.
        let p = plan(&spec(vec![Layer::Linear(Linear { out: 3, init: None }), Layer::MeanPool(MeanPool {})]), seq).unwrap();
        assert_eq!(p.nodes[0].shape, Shape::Seq { len: 5, width: 3 });
        assert_eq!(p.out, Shape::Flat(3));
    }

    #[test]
    fn residual_blocks_nest_names_and_read_their_input() {
        let block = Layer::Residual { layers: vec![Layer::LayerNorm(crate::ops::layer_norm::LayerNorm { eps: 1e-5 }), Layer::Linear(Linear { out: 4, init: None })] };
        let input = InShape { features: 1, seq_len: Some(3), vocab: Some(7), image: None };
        let p = plan(&spec(vec![Layer::Embedding(Embedding { dim: 4 }), block]), input).unwrap();
        let names: Vec<_> = p.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["layers.0.embedding", "layers.1.residual.layers.0.layer_norm", "layers.1.residual.layers.1.linear", "layers.1.residual"]);
        assert_eq!(p.params[0].shape, vec![7, 4]);
        assert_eq!(p.params.last().unwrap().name, "layers.1.residual.layers.1.linear.bias");
        // The sum reads the block's last layer and adds the block's input (the embedding).
        assert_eq!((p.nodes[3].input, p.nodes[3].other), (Some(2), Some(Some(0))));
        assert_eq!(p.nodes[1].input, Some(0));
        assert_eq!(p.out, Shape::Seq { len: 3, width: 4 });
        assert_eq!(p.out_width, 12);
    }
}
