//! The model's plan: its parameters (names, shapes, initialisation) and its
//! dataflow of nodes, worked out from the `[model]` table and the input shape
//! before anything is built. Validation, the memory estimate, the runner and
//! the PyTorch export all read it, so they cannot disagree.
//!
//! Parameter names are stable and ordered by layer (`layers.0.linear.weight`,
//! `layers.2.residual.layers.1.attention.q.weight`, ...).

use super::model::Compiled;
use super::{InShape, Init, Layer, LayerPrecision, ModelSpec, Named, Shape};

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

/// What a node reads: the model's input, or an earlier node's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// The model's input: a batch of features, token ids or images.
    Model,
    /// The output of an earlier node (its index in [`Plan::nodes`]).
    Node(usize),
}

/// One step of the model's dataflow: a layer applied to an earlier node's output, the sum
/// that closes a residual block, or one of attention's three steps (a layer's op adds its
/// nodes through [`Planner::node`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Dotted name, e.g. `layers.2.residual.layers.1.attention`.
    pub name: String,
    /// The layer (a residual block's node is the addition that closes it).
    pub layer: Layer,
    /// Which part of the layer this node computes.
    pub part: Part,
    /// What it reads, in order: its main input first (the one of shape `in_shape`, along which
    /// birth tracing follows the gradient), then the others: a residual sum's skip operand (the
    /// block's input), the input attention's mix projects its values from.
    pub inputs: Vec<Input>,
    /// Shape of the output.
    pub shape: Shape,
    /// Shape of its main input.
    pub in_shape: Shape,
    /// Its parameters' indices in [`Plan::params`].
    pub params: std::ops::Range<usize>,
    /// The precision its layer (or an enclosing one) keeps under autocast (`precision = "f32"`).
    pub precision: Option<LayerPrecision>,
}

impl Node {
    /// Its main input, the first of [`Node::inputs`] (the planner gives every node one).
    pub fn input(&self) -> Input {
        self.inputs.first().copied().unwrap_or(Input::Model)
    }
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
    /// mix), for the memory estimate ([`Planner::hold`]).
    pub attention_cells: usize,
}

/// Where a layer does not fit: the dotted key under `model` (`layers.2.layers.1`) and why.
pub type PlanError = (String, String);

/// Works out parameter shapes and node shapes, or says which layer does not fit.
pub fn plan(spec: &ModelSpec, input: InShape) -> std::result::Result<Plan, PlanError> {
    // Before the first layer: no node is added outside a layer.
    let at = At { layer: None, name: String::new(), key: String::new(), input: Input::Model, depth: 0, first: 0 };
    let mut b = Planner { spec, start: input.shape(), params: Vec::new(), nodes: Vec::new(), attention_cells: 0, at, nested: None, named: Vec::new() };
    let (_, out) = b.layers(spec.stack(), ("layers", "layers"), Input::Model, input.shape(), 0)?;
    if let Shape::Tokens { .. } = out {
        return Err(("layers".into(), "the model's output is still token ids: start with an embedding layer".into()));
    }
    let Planner { params, nodes, attention_cells, .. } = b;
    let mut plan =
        Plan { layer_names: nodes.iter().map(|n| n.name.clone()).collect(), widths: nodes.iter().map(|n| n.shape.width()).collect(), out_width: out.cols(), out, params, nodes, attention_cells };
    if let Some(c) = spec.onnx.as_ref().and_then(|o| o.compiled.as_deref()) {
        adopt(&mut plan, c, input.shape())?;
    }
    Ok(plan)
}

/// Gives the plan of the compiled graph's layers (reading `input`) the graph's names under
/// `layers.`, as every layer stack's tensors are named (`TensorId`): each node its module path
/// (`layers.fc1.linear`), each parameter its initializer's name (`layers.fc1.weight`), after
/// checking that the data fits the graph's input and that every parameter has the file's shape.
fn adopt(plan: &mut Plan, c: &Compiled, input: Shape) -> std::result::Result<(), PlanError> {
    let err = |m: String| ("onnx".to_string(), m);
    let (name, dims) = &c.input;
    let want: Vec<usize> = match input {
        Shape::Flat(w) => vec![w],
        Shape::Seq { len, width } => vec![len, width],
        Shape::Tokens { len, .. } => vec![len],
        Shape::Image { channels, height, width } => vec![channels, height, width],
    };
    let fits = dims.len() == want.len() + 1 && dims.iter().skip(1).zip(&want).all(|(d, w)| d.is_none_or(|d| d == *w));
    if !dims.is_empty() && !fits {
        let show: Vec<String> = dims.iter().map(|d| d.map_or("?".to_string(), |d| d.to_string())).collect();
        return Err(err(format!("the graph's input `{name}` is ({}) but the data gives {} per batch row", show.join(", "), input.describe())));
    }
    if plan.params.len() != c.params.len() {
        return Err(err(format!("the graph's {} weights do not match the {} parameters of its layers", c.params.len(), plan.params.len())));
    }
    for (p, (name, shape, _)) in plan.params.iter_mut().zip(&c.params) {
        if &p.shape != shape {
            return Err(err(format!("the weight `{name}` is {shape:?} in nanhunt's layout, but the data makes its layer want {:?}", p.shape)));
        }
        p.name = format!("layers.{name}");
    }
    for (i, (layer, to)) in c.layers.iter().zip(&c.names).enumerate() {
        let from = format!("layers.{i}.{}", crate::scenario::Named::name(layer.untagged()));
        for node in &mut plan.nodes {
            if node.name == from || node.name.starts_with(&format!("{from}.")) {
                node.name = format!("layers.{to}{}", &node.name[from.len()..]);
            }
        }
    }
    plan.layer_names = plan.nodes.iter().map(|n| n.name.clone()).collect();
    Ok(())
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
/// declares its parameters through it ([`Planner::param`]). A layer of one node needs nothing
/// more: the planner adds its node. A layer of several (attention's three steps, a residual
/// block's sum) adds each with [`Planner::node`], saying what each reads, and plans the layers
/// nested in it with [`Planner::block`]; its output is the last node it adds.
pub struct Planner<'a> {
    spec: &'a ModelSpec,
    /// The model's input shape.
    start: Shape,
    params: Vec<ParamSpec>,
    nodes: Vec<Node>,
    attention_cells: usize,
    /// The layer being planned.
    at: At,
    /// The key of the nested layer that did not fit, which the plan's error names in place of
    /// the enclosing layer's (see [`Planner::block`]).
    nested: Option<String>,
    /// Outputs named so far (`name = "..."`), which later expressions read.
    named: Vec<(String, Input, Shape)>,
}

/// The layer being planned: itself, where it is, what it reads, and its parameters not yet
/// given to a node.
struct At {
    /// The layer (each of its nodes holds a copy); `None` before the first.
    layer: Option<Layer>,
    /// Its dotted name (`layers.2.residual.layers.1.attention`): its nodes' and parameters' prefix.
    name: String,
    /// Its key under `model` (`layers.2.layers.1`), where its errors point.
    key: String,
    /// What it reads.
    input: Input,
    /// How many residual blocks enclose it.
    depth: usize,
    /// The first of its parameters not yet given to a node.
    first: usize,
}

impl Planner<'_> {
    /// Declares a parameter of the layer being planned, `{layer}.{suffix}` (e.g. `weight`), with
    /// its fans, PyTorch's fan for its default init, and the layer's init if it overrides the
    /// model's. The layer's next node takes it.
    pub fn param(&mut self, suffix: &str, shape: Vec<usize>, role: Role, (fan_in, fan_out): (usize, usize), torch_fan: usize, init: Option<Init>) {
        let init = init.unwrap_or(self.spec.init);
        self.params.push(ParamSpec { name: format!("{}.{suffix}", self.at.name), shape, role, fan_in, fan_out, torch_fan, init });
    }

    /// What the layer being planned reads: the input of its first node.
    pub fn input(&self) -> Input {
        self.at.input
    }

    /// How many residual blocks enclose the layer being planned.
    pub fn depth(&self) -> usize {
        self.at.depth
    }

    /// Adds a node of the layer being planned: it computes `part`, is named after the layer
    /// (`suffix` empty) or `{layer}.{suffix}`, reads `inputs` (its main input first: the one
    /// whose gradient birth tracing follows) and makes `shape`; it takes the parameters the
    /// layer declared since its previous node. Returns it, for the layer's later nodes to read.
    pub fn node(&mut self, part: Part, suffix: &str, inputs: &[Input], shape: Shape) -> Input {
        let name = if suffix.is_empty() { self.at.name.clone() } else { format!("{}.{suffix}", self.at.name) };
        let first = std::mem::replace(&mut self.at.first, self.params.len());
        // Ops plan nodes only while their layer is planned, so there is one.
        let Some(layer) = self.at.layer.clone() else { return Input::Model };
        self.push(name, layer, part, inputs.to_vec(), shape, first);
        Input::Node(self.nodes.len() - 1)
    }

    /// Plans `layers` nested in the layer being planned, one block deeper (named
    /// `{layer}.layers.{i}.{type}`, keyed `{key}.layers.{i}`), reading `input` of shape `shape`;
    /// returns what the last of them outputs (`input` itself if there is none) and its shape.
    /// Where one does not fit, the error is its message, and the plan's error names that
    /// layer's key: the op returns it as its own.
    pub fn block(&mut self, layers: &[Layer], input: Input, shape: Shape) -> std::result::Result<(Input, Shape), String> {
        let (names, keys) = (format!("{}.layers", self.at.name), format!("{}.layers", self.at.key));
        self.layers(layers, (&names, &keys), input, shape, self.at.depth + 1).map_err(|(key, m)| {
            self.nested = Some(key);
            m
        })
    }

    /// The output named `name` by an earlier layer, and its shape.
    pub fn output_named(&self, name: &str) -> Option<(Input, Shape)> {
        self.named.iter().find(|(n, _, _)| n == name).map(|(_, i, s)| (*i, *s))
    }

    /// Makes the error the layer being planned returns name its field `field` (`consts.T`)
    /// rather than the layer.
    pub fn fail_at(&mut self, field: &str) {
        self.nested = Some(format!("{}.{field}", self.at.key));
    }

    /// The names given to outputs so far.
    pub fn output_names(&self) -> Vec<String> {
        self.named.iter().map(|(n, _, _)| n.clone()).collect()
    }

    /// Names the output `input` (of shape `shape`) `name`, for later layers to read; a name is given once.
    pub fn name_output(&mut self, name: &str, input: Input, shape: Shape) -> std::result::Result<(), String> {
        if !output_name(name) {
            return Err(format!("`{name}` cannot name an output: use a name of letters, digits and `_` that is not `x`, `p`, `y`, `mask`, a Python keyword or a name repro.py uses (`torch`, `F`)"));
        }
        self.name_value(name, input, shape)
    }

    /// Names the output `input` as `name_output` does, but with a name an imported graph gave
    /// it (any ONNX value name: no expression or `repro.py` reads it by that name).
    pub fn name_value(&mut self, name: &str, input: Input, shape: Shape) -> std::result::Result<(), String> {
        if self.output_named(name).is_some() {
            return Err(format!("the name `{name}` is already given to an earlier output"));
        }
        self.named.push((name.to_string(), input, shape));
        Ok(())
    }

    /// Counts `values` per example that the layer being planned holds beside its nodes' outputs
    /// (attention's `q`, `k`, `v` and its heads' mix), for the memory estimate.
    pub fn hold(&mut self, values: usize) {
        self.attention_cells = self.attention_cells.saturating_add(values);
    }

    /// Plans `layers` (named `{names}.{i}.{type}`, keyed `{keys}.{i}`, inside `depth` residual
    /// blocks) reading `input` of shape `shape`; returns the last node and its shape.
    fn layers(&mut self, layers: &[Layer], (names, keys): (&str, &str), mut input: Input, mut shape: Shape, depth: usize) -> std::result::Result<(Input, Shape), PlanError> {
        for (i, tagged) in layers.iter().enumerate() {
            // A tag names the layer's output or sets its precision; the nodes are its layer's.
            let (layer, (named, precision)) = (tagged.untagged(), tagged.tag());
            let name = format!("{names}.{i}.{}", layer.name());
            let at = At { layer: Some(layer.clone()), name: name.clone(), key: format!("{keys}.{i}"), input, depth, first: self.params.len() };
            let (outer, nodes) = (std::mem::replace(&mut self.at, at), self.nodes.len());
            self.nested = None;
            let planned = self.layer(layer, shape);
            let at = std::mem::replace(&mut self.at, outer);
            let out = planned.map_err(|m| (self.nested.take().unwrap_or(at.key.clone()), m))?;
            if self.nodes.len() == nodes {
                // A layer of one node, reading its input and holding every parameter it declared.
                self.push(at.name, layer.clone(), Part::Whole, vec![input], out, at.first);
            }
            input = Input::Node(self.nodes.len() - 1);
            shape = out;
            if let Some(p) = precision {
                // An enclosing layer's precision holds for every node inside it.
                self.nodes[nodes..].iter_mut().for_each(|n| n.precision = Some(p));
            }
            if let Some(n) = named {
                self.name_output(n, input, out).map_err(|m| (format!("{}.name", at.key), m))?;
            }
        }
        Ok((input, shape))
    }

    /// Adds a node reading `inputs` (its main input first) whose parameters start at index
    /// `first` and run to the last one added.
    fn push(&mut self, name: String, layer: Layer, part: Part, inputs: Vec<Input>, shape: Shape, first: usize) {
        let in_shape = match inputs.first() {
            Some(Input::Node(i)) => self.nodes[*i].shape,
            _ => self.start,
        };
        self.nodes.push(Node { name, layer, part, inputs, shape, in_shape, params: first..self.params.len(), precision: None });
    }

    /// Plans one layer through its op (which declares its parameters and, for a block or
    /// attention, its nodes); returns its output shape.
    fn layer(&mut self, layer: &Layer, shape: Shape) -> std::result::Result<Shape, String> {
        let kind = layer.name();
        // A residual block's layers and attention check what they read themselves.
        if matches!(shape, Shape::Tokens { .. }) && !matches!(layer, Layer::Embedding(_) | Layer::Residual(_) | Layer::Attention(_) | Layer::Onnx(_)) {
            return Err(format!("a {kind} layer cannot read token ids: put an embedding layer first"));
        }
        layer.op().plan(self, shape)
    }
}

/// Whether `name` can name an output: a name of the expression language that no expression or
/// `repro.py` reads as something else.
fn output_name(name: &str) -> bool {
    const TAKEN: [&str; 25] = [
        "x",
        "p",
        "y",
        "mask",
        "torch",
        "F",
        "math",
        "FlawedSquare",
        "and",
        "or",
        "not",
        "in",
        "is",
        "if",
        "else",
        "lambda",
        "None",
        "True",
        "False",
        "def",
        "for",
        "while",
        "import",
        "from",
        "return",
    ];
    let mut c = name.chars();
    let ident = c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_') && c.all(|c| c.is_ascii_alphanumeric() || c == '_');
    ident && !TAKEN.contains(&name)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
