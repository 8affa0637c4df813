#!/usr/bin/env python3
# nanhunt repro, written by `nanhunt export-torch`: the same model, initial weights, data,
# batches, loss and optimizer as the nanhunt run, in plain PyTorch, watched as nanhunt
# watches it. Needs only torch (the .safetensors files are read below, without the
# safetensors package). Run it beside init.safetensors and data.safetensors:
#
#     python repro.py            # prints the first non-finite value, writes trace.torch.csv
#
# It trains fold by fold and checks, in nanhunt's order, the data, every layer output, the
# loss, every gradient (where a gradient's non-finite values were born: in the loss's or a
# layer's backward), every optimizer state and every updated parameter, and the validation
# pass after each epoch. The names are nanhunt's: `layers.0.linear.weight.grad`,
# `optim.layers.0.linear.weight.exp_avg_sq`, `layers.1.sigmoid.output`, ...
import contextlib
import csv
import json
import math
import struct
import sys

import torch
from torch import nn
from torch.nn import functional as F

# One thread: PyTorch cuts a tensor of 32768 elements or more into one chunk per thread, each with
# its own scalar tail (an f16/bf16 `add(…, alpha)` rounds its tail otherwise); nanhunt takes one.
torch.set_num_threads(1)

SCENARIO = json.loads(r"""@SCENARIO@""")

DTYPES = {"f32": torch.float32, "f64": torch.float64, "f16": torch.float16, "bf16": torch.bfloat16}
DTYPE = DTYPES[SCENARIO["dtype"]]
# Mixed precision (train.precision = amp_*): the forward runs under torch.autocast, whose CPU
# list casts linear, matmul and convolution to LOW; the ops on CUDA's fp32 list that CPU's
# leaves out (softmax, norms, exp, log, pow, softplus, reciprocal) are cast to f32
# by hand below, so the casts are CUDA's, as nanhunt's: each node's class ("low", "f32" or
# "same") is nanhunt's own, written into SCENARIO["nodes"] by the exporter. An expression
# layer, and a loss expression, is one line of torch calls, each an op of its own under
# autocast: CudaF32List casts the operands of those on CUDA's list up.
LOW = {"amp_f16": torch.float16, "amp_bf16": torch.bfloat16}.get(SCENARIO.get("precision", "f32"))
# Each plan node by name: its parameters, autocast class and, for an op of nanhunt's registry
# (every elementwise layer), its PyTorch expression of `x`.
# Keyed by the names `build` gives (`layers.0.linear`); an imported model's nodes and parameters
# are named after its graph (`layers.fc1.linear`, `layers.fc1.weight`): `name` and RENAME.
NODES = {n.get("key", n["name"]): n for n in SCENARIO["nodes"]}
RENAME = SCENARIO.get("rename", {})


def low(t):
    """A tensor in autocast's low dtype (the recurrent cells' weights, as lstm_cell casts them)."""
    return t.to(LOW) if LOW is not None else t


def read_safetensors(path):
    """The tensors of a .safetensors file: an 8-byte header length, a JSON header, raw data."""
    kinds = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64, "U8": torch.uint8}
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        t = torch.frombuffer(bytearray(body[a:b]), dtype=kinds[meta["dtype"]]) if b > a else torch.empty(0, dtype=kinds[meta["dtype"]])
        out[name] = t.reshape(meta["shape"]).clone()
    return out


class FlawedSquare(torch.autograd.Function):
    """x² forward; a hand-written backward that divides the incoming gradient by 0 (seed 002 ex3)."""

    @staticmethod
    def forward(ctx, x):
        return x * x

    @staticmethod
    def backward(ctx, g):
        return g / torch.zeros_like(g)


class Rnn(nn.Module):
    """An Elman RNN returning its last hidden state: h = tanh(x W_ihᵀ + b_ih + b_hh + h W_hhᵀ), h₀ = 0."""

    def __init__(self, inputs, hidden):
        super().__init__()
        self.weight_ih = nn.Parameter(torch.empty(hidden, inputs))
        self.weight_hh = nn.Parameter(torch.empty(hidden, hidden))
        self.bias_ih = nn.Parameter(torch.empty(hidden))
        self.bias_hh = nn.Parameter(torch.empty(hidden))

    def forward(self, x):
        x = low(x)
        xw = x @ low(self.weight_ih).T + low(self.bias_ih) + low(self.bias_hh)
        h = torch.tanh(xw[:, 0])
        for t in range(1, x.shape[1]):
            h = torch.tanh(xw[:, t] + h @ low(self.weight_hh).T)
        return h


# The current training step's dropout masks, by node name (0/1, one row per example); empty in
# evaluation. nanhunt draws them from its own seeded streams; they are in data.safetensors.
MASKS = {}


class Dropout(nn.Module):
    """nn.Dropout with nanhunt's mask: x * (mask · 1/(1 − p)), the scale rounded once."""

    def __init__(self, p, name):
        super().__init__()
        self.p, self.name = p, name

    def forward(self, x):
        m = MASKS.get(self.name) if self.training else None
        if m is None:
            return x
        return x * (m.to(x.dtype) * torch.tensor(1.0 / (1.0 - self.p), dtype=x.dtype)).reshape(x.shape)


class Gated(nn.Module):
    """torch.nn.LSTM / GRU's CPU cell written out (gate order i, f, g, o and r, z, n), with
    Keras's activation and recurrent dropout (one mask per sequence on the state fed back)."""

    def __init__(self, kind, inputs, spec, name):
        super().__init__()
        hidden, gates = spec["hidden"], 4 if kind == "lstm" else 3
        self.weight_ih = nn.Parameter(torch.empty(gates * hidden, inputs))
        self.weight_hh = nn.Parameter(torch.empty(gates * hidden, hidden))
        self.bias_ih = nn.Parameter(torch.empty(gates * hidden))
        self.bias_hh = nn.Parameter(torch.empty(gates * hidden))
        self.kind, self.hidden, self.name = kind, hidden, name
        self.sequences = spec.get("return_sequences", False)
        self.p = spec.get("recurrent_dropout", 0.0)
        self.act = torch.relu if spec.get("activation", "tanh") == "relu" else torch.tanh

    def forward(self, x):
        b, s, _ = x.shape
        x = low(x)
        gi = x @ low(self.weight_ih).T + low(self.bias_ih)
        h = x.new_zeros(b, self.hidden)
        c = h
        m = MASKS.get(self.name) if self.training else None
        scale = torch.tensor(1.0 / (1.0 - self.p), dtype=x.dtype) if m is not None else None
        states = []
        for t in range(s):
            hd = h * (m.to(x.dtype) * scale) if m is not None else h
            gh = hd @ low(self.weight_hh).T + low(self.bias_hh)
            if self.kind == "lstm":
                i, f, g, o = (gi[:, t] + gh).chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * self.act(g)
                h = torch.sigmoid(o) * self.act(c)
            else:
                (ir, iz, inn), (hr, hz, hn) = gi[:, t].chunk(3, 1), gh.chunk(3, 1)
                r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
                n = self.act(inn + r * hn)
                h = n + z * (h - n)
            states.append(h)
        return torch.stack(states, 1) if self.sequences else h


class BatchNorm(nn.Module):
    """nn.BatchNorm1d's computation through torch.batch_norm, which (unlike the module, which
    raises since PyTorch 0.3) also trains on a batch of one row: its running variance is then
    0 / 0 = NaN, as pytorch/pytorch#1381 reported."""

    def __init__(self, width, eps, momentum):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("running_mean", torch.zeros(width))
        self.register_buffer("running_var", torch.ones(width))
        self.eps, self.momentum = eps, momentum

    def forward(self, x):
        return torch.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var, self.training, self.momentum, self.eps, False)


class CudaF32List(torch.overrides.TorchFunctionMode):
    """Under CPU autocast, the calls on CUDA's autocast f32 list that CPU's list leaves in their
    input's dtype (the names in SCENARIO["autocast_f32"], nanhunt's list as ops/expr/amp.rs's
    torch_f32_names exports it) get their operands cast up to f32, as nanhunt computes an
    expression's nodes. Outside autocast, nothing. A named loss runs whole in f32 (`f32_loss`)."""

    NAMES = set(SCENARIO["autocast_f32"])

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if torch.is_autocast_enabled("cpu") and getattr(func, "__name__", "") in self.NAMES:
            up = lambda t: t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t
            args, kwargs = tuple(up(a) for a in args), {k: up(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def f32_loss(f, *args):
    """A named loss of an expression (`cross_entropy(p, y)`, `info_nce(p, y)`, ...), one op of
    autocast's f32 list in nanhunt: under autocast, its formula runs outside autocast on its
    operands cast up; outside, as written. For mse, kl_div, bce_with_logits, cross_entropy and
    ctc this is PyTorch's own autocast (CUDA's f32 list); for info_nce and focal, formulas in
    PyTorch (their `@` / `torch.sigmoid` would run in f16), it is nanhunt's convention: write the
    formula out in the expression for PyTorch's per-op autocast."""
    if not torch.is_autocast_enabled("cpu"):
        return f(*args)
    with torch.autocast("cpu", enabled=False):
        return f(*(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args))


class Fn(nn.Module):
    """An elementwise function or an expression as a layer (reading x and earlier named outputs);
    an expression's calls under autocast in the dtypes of CUDA's lists (`CudaF32List`)."""

    def __init__(self, f, per_op=False):
        super().__init__()
        self.f, self.per_op = f, per_op

    def forward(self, x, *others):
        with CudaF32List() if self.per_op else contextlib.nullcontext():
            return self.f(x, *others)


class Residual(nn.Module):
    """x + f(x); its layers are `layers.{i}.{type}` inside it, so names nest as nanhunt's."""

    def __init__(self, specs, width, seq, name):
        super().__init__()
        self.layers, _ = build(specs, width, seq, f"{name}.layers")

    def forward(self, x, mask, outs):
        out = x + run(self.layers, x, mask, outs)
        outs.append(out)
        return out


class Attention(nn.Module):
    """Multi-head self-attention written out as nanoGPT's manual path: scores, masked_fill,
    softmax (or torch._safe_softmax), @ v, output projection. Appends scores, probabilities
    and output, nanhunt's three watched steps."""

    def __init__(self, width, spec):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.heads, self.causal, self.spec = spec["heads"], spec.get("causal", False), spec

    def forward(self, x, mask, outs):
        b, s, w = x.shape
        d = w // self.heads
        split = lambda t: t.reshape(b, s, self.heads, d).transpose(1, 2)
        scores = (split(self.q(x)) @ split(self.k(x)).transpose(-2, -1)) * (1.0 / math.sqrt(d))
        outs.append(scores)
        if LOW is not None:
            scores = scores.float()
        masked = torch.ones(s, s, dtype=torch.bool).triu(1) if self.causal else None
        if mask is not None:
            pad = (mask == 0).reshape(b, 1, 1, s)
            masked = pad if masked is None else (masked | pad)
        if masked is not None:
            fill = float("-inf") if self.spec.get("mask_fill", "neg_inf") == "neg_inf" else torch.finfo(scores.dtype).min
            scores = scores.masked_fill(masked, fill)
        probs = torch._safe_softmax(scores, -1) if self.spec.get("softmax", "plain") == "safe" else torch.softmax(scores, dim=-1)
        outs.append(probs)
        out = self.o((probs @ split(self.v(x))).transpose(1, 2).reshape(b, s, w))
        outs.append(out)
        return out


class PositionalEmbedding(nn.Module):
    """A learned vector per position, added (GPT-2's wpe)."""

    def __init__(self, seq, width):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(seq, width))

    def forward(self, x):
        return x + self.weight


class Onnx(nn.Module):
    """One node of an imported ONNX graph (export-torch writes one per node): `f`, its op as
    torch calls, of its sources in ONNX's order: the graph's input, the padding mask (ones
    without padding), an earlier node's output by its ONNX name, one of its parameters (under
    its graph name, dots made `_`; RENAME maps it back) or a constant folded when the graph
    compiled. As nanhunt keeps booleans and ids as floats, other operands are made floats but
    for a Gather's indices (`floats` false); under autocast, its "f32" class runs in f32."""

    def __init__(self, name, value, sources, f, floats=True):
        super().__init__()
        self.node, self.value, self.sources, self.f, self.floats = NODES[name], value, sources, f, floats
        for i, s in enumerate(sources):
            if s[0] == "param":
                self.register_parameter(s[1], nn.Parameter(torch.empty(s[2])))
            elif s[0] == "const":
                self.register_buffer(f"const{i}", torch.tensor(s[1], dtype=torch.float64).reshape(s[2]))

    def forward(self, x, named, mask):
        xs = []
        for i, s in enumerate(self.sources):
            if s[0] == "input":
                xs.append(x)
            elif s[0] == "mask":
                xs.append(mask if mask is not None else torch.ones(x.shape[0], x.shape[1], dtype=DTYPE))
            elif s[0] == "value":
                xs.append(named[s[1]])
            elif s[0] == "param":
                xs.append(getattr(self, s[1]))
            else:
                xs.append(getattr(self, f"const{i}"))
        if self.floats:
            xs = [t if t.is_floating_point() else t.to(DTYPE) for t in xs]
        if LOW is not None and self.node["autocast"] == "f32":
            xs = [t.float() if t.is_floating_point() else t for t in xs]
        return self.f(*xs)


def onnx_unsqueeze(a, axes):
    """ONNX Unsqueeze: a dim of 1 at each of `axes`, positions in the output (negative from its end)."""
    rank = a.dim() + len(axes)
    for d in sorted(d % rank for d in axes):
        a = a.unsqueeze(d)
    return a


def onnx_gather(a, b, axis):
    """ONNX Gather: a's slices along `axis` at the indices b (truncated, negative from the end),
    of shape a.shape[:axis] + b.shape + a.shape[axis + 1:] (an embedding lookup at axis 0)."""
    d = axis % a.dim()
    i = b.long()
    i = torch.where(i < 0, i + a.shape[d], i)
    return torch.index_select(a, d, i.flatten()).reshape(a.shape[:d] + i.shape + a.shape[d + 1 :])


def pool(kind):
    """Pooling over positions, leaving padding out with masked_fill as people write it."""

    def f(h, mask):
        if kind == "last":
            return h[:, -1]
        if mask is None:
            return h.mean(1) if kind == "mean_pool" else h.max(1).values
        keep = (mask != 0).unsqueeze(-1)
        if kind == "mean_pool":
            return h.masked_fill(~keep, 0).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return h.masked_fill(~keep, float("-inf")).max(1).values

    return f


class Pool(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.f = pool(kind)

    def forward(self, x, mask):
        return self.f(x, mask)


class Conv1d(nn.Conv1d):
    """nn.Conv1d over a sequence (batch, seq, width): the width is the channels."""

    def forward(self, x):
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def build(specs, width, seq, prefix="layers"):
    """Layer specs as `ModuleList[ModuleDict{type: module}]`, and the width they output."""
    blocks, names = [], []
    for i, spec in enumerate(specs):
        names.append(f"{prefix}.{i}.{spec['type']}")
        module, width = layer(spec, width, seq, names[-1])
        blocks.append(nn.ModuleDict({spec["type"]: module}))
    blocks = nn.ModuleList(blocks)
    blocks.names = names
    return blocks, width


def run(blocks, x, mask, outs):
    """Runs layers in order, appending each output (blocks append their own, in nanhunt's order).
    An imported graph's nodes read the model's input and earlier nodes' outputs by name."""
    x0, named = x, {}
    for name, block in zip(blocks.names, blocks):
        ((kind, m),) = block.items()
        node = NODES[name]
        # precision = "f32": the layer outside autocast, on its input cast up, as people keep a projection in f32.
        keep = LOW is not None and node.get("precision") == "f32"
        if LOW is not None and node["autocast"] == "f32":
            x = x.float()
        # An expression's earlier named outputs, by their place among the outputs so far.
        others = [outs[i].float() if keep else outs[i] for _, i in node.get("reads") or []]
        with torch.autocast("cpu", enabled=False) if keep else contextlib.nullcontext():
            if isinstance(m, (Residual, Attention)):
                x = m(x, mask, outs)
            elif isinstance(m, Onnx):
                x = named[m.value] = m(x0, named, mask)
                outs.append(x)
            else:
                x = m(x, mask) if isinstance(m, Pool) else m(x, *others)
                outs.append(x)
        if node.get("tag") is not None:
            # A named layer's output, which an imported graph's later nodes read by that name.
            named[node["tag"]] = x
    return x


def layer(spec, width, seq, name):
    """One nanhunt layer (node `name`) as a module, and the width it outputs."""
    kind = spec["type"]
    width = SCENARIO["in_widths"].get(name, width)
    module = NODES.get(name, {}).get("module")
    if module is not None:
        # A layer of nanhunt's registry: its expression building (module, width out).
        return eval(module, globals(), {"spec": spec, "width": width, "seq": seq, "name": name})
    expr = NODES[name].get("torch")
    if expr is None:
        raise SystemExit(f"repro.py: unknown layer {kind}")
    # An op of nanhunt's registry: its expression of x (and of the earlier named outputs it
    # reads), with torch, F and the custom Functions above.
    args = ", ".join(["x"] + [n for n, _ in NODES[name].get("reads") or []])
    return Fn(eval(f"lambda {args}: " + expr, {"torch": torch, "F": F, "FlawedSquare": FlawedSquare, "f32_loss": f32_loss}), per_op=kind == "expr"), width


class Model(nn.Module):
    """The layer stack; `layers.{i}.{type}` holds layer i, so parameter names are nanhunt's."""

    def __init__(self, layers, features, seq):
        super().__init__()
        self.layers, _ = build(layers, features, seq)

    def forward(self, x, mask=None):
        outs = []
        with torch.autocast("cpu", dtype=LOW or torch.bfloat16, enabled=LOW is not None):
            run(self.layers, x, mask, outs)
        return outs


def loss_fn(spec, p, y, mask=None):
    """The loss as nanhunt computes it: the expression of the prediction p and targets y that
    nanhunt's loss node exports (PyTorch's own functions where nanhunt follows them: huber,
    bce_torch, bce_logits; the formulas where the formula is the point: the naive BCE).
    Under autocast a loss expression runs inside the autocast block, as the AMP recipe computes
    `loss_fn(model(x), y)`: each op apart, on p as the model left it (unless its own
    precision is "f32"); a named kind runs in f32 on p.float(), outside autocast."""
    names = {"torch": torch, "F": F, "f32_loss": f32_loss}
    if LOW is not None and spec["kind"] == "expr" and spec.get("precision") != "f32":
        with torch.autocast("cpu", dtype=LOW), CudaF32List():
            return eval(SCENARIO["loss_torch"], names, {"p": p, "y": y, "mask": mask})
    p = p.float() if LOW is not None else p
    return eval(SCENARIO["loss_torch"], names, {"p": p, "y": y, "mask": mask})


def optimizer(spec, params):
    kind, lr, wd = spec["kind"], spec["lr"], spec.get("weight_decay", 0.0)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=spec.get("momentum", 0.0), nesterov=spec.get("nesterov", False), weight_decay=wd)
    betas = (spec.get("beta1", 0.9), spec.get("beta2", 0.999))
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, betas=betas, eps=spec["eps"], weight_decay=wd)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=betas, eps=spec["eps"], weight_decay=wd)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=spec.get("alpha", 0.99), eps=spec["eps"], weight_decay=wd, momentum=spec.get("momentum", 0.0))
    raise SystemExit(f"repro.py: unknown optimizer {kind}")


STATES = {"sgd": ("momentum_buffer", None), "adam": ("exp_avg", "exp_avg_sq"), "adamw": ("exp_avg", "exp_avg_sq"), "rmsprop": ("momentum_buffer", "square_avg")}


class Watch:
    """The first non-finite value, and the per-step trace."""

    def __init__(self, layer_names):
        self.first, self.rows, self.layer_names = None, [], layer_names

    def check(self, where, phase, name, t):
        if self.first is None and not bool(torch.isfinite(t).all()):
            bad = (~torch.isfinite(t)).flatten().nonzero()[0].item()
            v = float(t.flatten()[bad])
            kind = "nan" if math.isnan(v) else ("pos_inf" if v > 0 else "neg_inf")
            self.first = dict(where, phase=phase, tensor=name, kind=kind, index=bad, shape=list(t.shape))
        return self.first is not None


def largest(ts):
    m = 0.0
    for t in ts:
        a = t.detach().abs()
        a = a[torch.isfinite(a)]
        if a.numel():
            m = max(m, float(a.max()))
    return m


def main():
    init = read_safetensors("init.safetensors")
    data = read_safetensors("data.safetensors")
    sc, tr = SCENARIO, SCENARIO["train"]
    names = [n["name"] for n in sc["nodes"]]
    watch = Watch(names)
    finfo = torch.finfo(DTYPE)
    # Data, as built (after injection, before the preprocessing chain), in f64, then in the compute dtype.
    # The data.preprocess chain runs here, in order, as nanhunt runs it.
    preprocessed(data, sc)
    for f in range(sc["folds"]):
        for split in ("train", "validation"):
            for what in ("inputs", "targets"):
                key = f"fold{f}.{split}.{what}"
                if key in data and watch.check(dict(step=0, epoch=0, fold=f), "data", f"data.{split}.{what}", data[key]):
                    return finish(watch)
    steps = 0
    for f in range(sc["folds"]):
        seq, tokens = sc.get("seq_len"), sc.get("vocab") is not None
        def split_of(name):
            if f"fold{f}.{name}.inputs" not in data:
                return None
            x, y, m = data[f"fold{f}.{name}.inputs"], data[f"fold{f}.{name}.targets"], data.get(f"fold{f}.{name}.mask")
            # Token ids as int64 (nn.Embedding's index type); features as sequences or rows.
            image = sc.get("image")
            if image:
                x = x.reshape(x.shape[0], image["channels"], image["height"], image["width"]).to(DTYPE)
            else:
                x = x.long() if tokens else (x.reshape(x.shape[0], seq, x.shape[1] // seq) if seq else x).to(DTYPE)
            y = (y.reshape(y.shape[0], seq, y.shape[1] // seq) if sc.get("next_token") else y).to(DTYPE)
            return (x, y, None if m is None else m.to(DTYPE))
        x, y, mask = split_of("train")
        val = split_of("validation")
        at = dict(step=0, epoch=0, fold=f)
        for split, pair in (("train", (x, y)), ("validation", val)):
            if pair and ((not tokens and watch.check(at, "data", f"data.{split}.inputs", pair[0])) or watch.check(at, "data", f"data.{split}.targets", pair[1])):
                return finish(watch)
        # The width the first layer reads: an image's channels, a token's 1, a row's or a position's features.
        width = sc["image"]["channels"] if sc.get("image") else (1 if tokens else x.shape[-1])
        model = Model(sc["layers"], width, seq).to(DTYPE)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(init[f"fold{f}.{RENAME.get(name, name)}"])
        params = [(RENAME.get(name, name), p) for name, p in model.named_parameters()]
        opt = optimizer(sc["optimizer"], [p for _, p in params]) if params else None
        sched = schedule(tr.get("schedule"), opt)
        scaler = Scaler(tr.get("loss_scale"))
        n = x.shape[0]
        batch = min(tr["batch_size"] or n, n)
        k = tr.get("accumulate", 1)
        step, capped = 0, False
        for epoch in range(1, tr["epochs"] + 1):
            if tr["max_steps"] is not None and step >= tr["max_steps"]:
                break
            order = data[f"fold{f}.order"][epoch - 1] if tr["shuffle"] else None
            starts = list(range(0, n, batch))
            for g in range(0, len(starts), k):
                # Like nanhunt, the fold ends as soon as max_steps is reached (no validation after).
                capped = tr["max_steps"] is not None and step >= tr["max_steps"]
                if capped:
                    break
                step += 1
                steps += 1
                micro = []
                for j, start in enumerate(starts[g : g + k]):
                    idx = order[start : start + batch] if order is not None else slice(start, start + batch)
                    rows = min(batch, n - start)
                    u = (step - 1) * k + j + 1
                    masks = {key.split(".dropout.", 1)[1]: v[u - 1][:rows] for key, v in data.items() if key.startswith(f"fold{f}.dropout.")}
                    micro.append((x[idx], y[idx], None if mask is None else mask[idx], masks))
                if train_step(watch, dict(step=step, epoch=epoch, fold=f), model, params, opt, micro, sc, finfo, scaler, sched, k):
                    return finish(watch)
            if capped:
                break
            if val and validate(watch, dict(step=step, epoch=epoch, fold=f), model, val, sc):
                return finish(watch)
    return finish(watch)


def preprocessed(data, sc):
    """The scenario's data.preprocess chain (after its last drop_nonfinite, which the data as
    built holds), in order, on each fold: an expression step is its torch line of x, on each
    split by itself; the others are nanhunt's sklearn-style steps, fitted on the fold's training
    split as it is at that step and applied to both splits."""
    for f in range(sc["folds"]):
        keys = [k for k in (f"fold{f}.train.inputs", f"fold{f}.validation.inputs") if k in data]
        for step in sc.get("preprocess") or []:
            apply = (lambda x, line=step["torch"]: expression(x, sc, line)) if step["op"] == "expr" else fitted(step, data[keys[0]])
            for key in keys:
                data[key] = apply(data[key])


def expression(x, sc, line):
    """The inputs (rows, columns) through the torch line of x, each row as the model reads it
    (features, a sequence of them, an image)."""
    flat = x.shape
    image, seq = sc.get("image"), sc.get("seq_len")
    if image:
        x = x.reshape(x.shape[0], image["channels"], image["height"], image["width"])
    elif seq:
        x = x.reshape(x.shape[0], seq, x.shape[1] // seq)
    return eval(line, {"torch": torch, "F": F}, {"x": x}).reshape(flat)


def fitted(step, train):
    """One of nanhunt's sklearn-style steps (run/data/preprocess.rs) as a function of a split
    (rows, columns), its statistics over the training split `train` as nanhunt computes them:
    a feature's cells at every time step together, summed one by one in f64 in row order,
    the population std; a zero std or range scales by 1."""
    op, features = step["op"], step["features"]
    feature = torch.arange(train.shape[1]) % features
    cols = step.get("columns") or list(range(features))

    def stats(c, finite_only=False):
        vals = [v for v in train[:, feature == c].reshape(-1).tolist() if not finite_only or math.isfinite(v)]
        total, lo, hi = 0.0, math.inf, -math.inf
        for v in vals:
            total, lo, hi = total + v, v if v < lo else lo, v if v > hi else hi
        mean = total / max(len(vals), 1)
        sq = 0.0
        for v in vals:
            sq += (v - mean) * (v - mean)
        return mean, math.sqrt(sq / max(len(vals), 1)), lo, hi

    def per_column(f):
        def apply(x):
            x = x.clone()
            for c in cols:
                x[:, feature == c] = f(c, x[:, feature == c])
            return x
        return apply

    if op == "standardize":
        st = [stats(c) for c in range(features)]
        return per_column(lambda c, v: (v - st[c][0]) / (st[c][1] if st[c][1] != 0 else 1.0))
    if op == "min_max":
        st = [stats(c) for c in range(features)]
        return per_column(lambda c, v: (v - st[c][2]) / ((st[c][3] - st[c][2]) if st[c][3] - st[c][2] != 0 else 1.0))
    if op == "impute_mean":
        st = [stats(c, finite_only=True) for c in range(features)]
        return per_column(lambda c, v: torch.where(torch.isfinite(v), v, st[c][0]))
    if op == "reciprocal":
        guard = step.get("guard")
        return per_column(lambda c, v: 1 / v if guard is None else torch.where(v == 0, guard, 1 / v))
    if op == "log":
        return per_column(lambda c, v: torch.log(v + (step.get("epsilon") or 0.0)))
    if op == "clip":
        return per_column(lambda c, v: v.clamp(step["min"], step["max"]))
    raise ValueError(f"data.preprocess: the step {op!r} is not one the script runs")


def schedule(spec, opt):
    """[train.schedule] as a function of the scheduler steps taken: PyTorch's closed forms of
    LinearLR's warmup, then StepLR, ExponentialLR or CosineAnnealingLR counting from the end of
    the warmup, as SequentialLR chains them (LinearLR itself refuses nanhunt's default start
    factor 0, transformers' warmup from 0). None without a schedule."""
    if spec is None or opt is None:
        return None
    base = opt.param_groups[0]["lr"]

    def lr(t):
        w, s0 = spec.get("warmup_steps", 0), spec.get("warmup_start_factor", 0.0)
        if t < w:
            return base * (s0 + (1.0 - s0) * t / w)
        u, decay, gamma = t - w, spec.get("decay", "constant"), spec.get("gamma") or 1.0
        if decay == "step":
            return base * gamma ** (u // spec["step_size"])
        if decay == "exponential":
            return base * gamma**u
        if decay == "cosine":
            eta = spec.get("eta_min", 0.0)
            return eta + (base - eta) * (1.0 + math.cos(math.pi * u / spec["decay_steps"])) / 2.0
        return base

    return lr


class Scaler:
    """torch.amp.GradScaler with [train.loss_scale]'s settings, and nanhunt's collapse rule:
    more than max_skip_fraction of the last collapse_window steps skipped, or a scale that
    falls to 0 or below min_scale."""

    def __init__(self, spec):
        self.on = spec is not None and spec.get("enabled", True)
        spec = spec or {}
        self.spec = spec
        self.torch = torch.amp.GradScaler("cpu", init_scale=spec.get("init", 65536.0), growth_factor=spec.get("growth_factor", 2.0), backoff_factor=spec.get("backoff_factor", 0.5), growth_interval=spec.get("growth_interval", 2000), enabled=self.on)
        self.recent = []

    def update(self, before):
        """GradScaler.update(); with growth_cap = false, a growth that would overflow f32 makes
        the scale inf, as GradScaler did before PyTorch 2.1 capped it (pytorch#98828)."""
        self.torch.update()
        if self.spec.get("growth_cap", True) or not self.on:
            return
        grown = torch.tensor(before * self.spec.get("growth_factor", 2.0), dtype=torch.float64).float()
        if int(self.torch._growth_tracker.item()) == 0 and self.torch.get_scale() == before and torch.isinf(grown):
            self.torch._scale.fill_(math.inf)

    def trouble(self):
        scale, floor = self.torch.get_scale(), self.spec.get("min_scale") or 0.0
        if math.isinf(scale) or scale <= 0.0 or scale < floor:
            return True
        window = self.spec.get("collapse_window", 20)
        return sum(self.recent[-window:]) > self.spec.get("max_skip_fraction", 0.5) * window


def train_step(watch, at, model, params, opt, micro, sc, finfo, scaler, sched, k):
    lr = sched(at["step"] - 1) if sched else sc["optimizer"]["lr"]
    if opt is not None:
        for group in opt.param_groups:
            group["lr"] = lr
    row = dict(step=at["step"], epoch=at["epoch"], fold=at["fold"], lr=lr)
    watch.rows.append(row)
    if scaler.on:
        row["loss_scale"] = scaler.torch.get_scale()
        # A step's non-finite values wait for the scaler's decision, as in nanhunt.
        first, watch.first = watch.first, None
    divide = sc["loss"]["reduction"] == "mean" and k > 1
    row["train_loss"], row["max_abs"], all_outs = 0.0, [], []
    if opt is not None:
        opt.zero_grad(set_to_none=True)
    for j, (x, y, mask, masks) in enumerate(micro):
        MASKS.clear()
        MASKS.update(masks)
        outs = model(x, mask)
        for o in outs:
            if o.requires_grad:
                o.retain_grad()
        m = [largest([o]) for o in outs]
        row["max_abs"] = m if j == 0 else [max(a, b) for a, b in zip(row["max_abs"], m)]
        for name, o in zip(watch.layer_names, outs):
            if watch.check(at, "forward", f"{name}.output", o):
                break
        loss = loss_fn(sc["loss"], outs[-1] if outs else x, y, mask)
        value = float(loss.detach())
        row["train_loss"] += value / k if divide else value
        if watch.first is None and not math.isfinite(value):
            watch.first = dict(at, phase="loss", tensor="loss", kind="nan" if math.isnan(value) else ("pos_inf" if value > 0 else "neg_inf"), index=0, shape=[])
        if (watch.first is not None and not scaler.on) or not params:
            return watch.first is not None
        scaler.torch.scale(loss / k if divide else loss).backward()
        all_outs += outs
        last = outs
    if scaler.on:
        scaler.torch.unscale_(opt)
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in params]
    outs = all_outs
    row["grad_norm"] = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
    limit = torch.finfo(LOW).max if LOW is not None else finfo.max
    # With a scaler, the gradients' headroom is that of the scaled values, as nanhunt's.
    top = max(largest(outs), largest(grads) * row.get("loss_scale", 1.0))
    row["headroom"] = math.log2(limit / top) if top > 0 else math.inf
    tiny = sum(int(((g != 0) & (g.abs() < finfo.tiny)).sum()) for g in grads)
    row["grad_subnormal"] = tiny / max(1, sum(g.numel() for g in grads))
    bad = not all(bool(torch.isfinite(g).all()) for g in grads)
    if bad:
        born = birth(sc["nodes"], last, params, grads)
        if born is not None:
            watch.check(at, "backward", born[0], born[1])
        for (name, _), g in zip(params, grads):
            watch.check(at, "backward", f"{name}.grad", g)
    if scaler.on:
        skipped = sum(v.item() for v in scaler.torch._found_inf_per_device(opt).values()) > 0
        row["skipped"] = 1 if skipped else 0
        pending, watch.first = watch.first, first
        scaler.recent.append(1 if skipped else 0)
        if skipped:
            scaler.torch.update()
            if watch.first is None and scaler.trouble():
                watch.first = dict(at, phase="update", tensor="loss_scale", kind="scale_collapse", index=0, shape=[])
            return watch.first is not None
        if watch.first is None:
            watch.first = pending
    if watch.first is not None or bad:
        return True
    clip = sc["optimizer"]
    if clip.get("clip_grad_norm") is not None:
        torch.nn.utils.clip_grad_norm_([p for _, p in params], clip["clip_grad_norm"])
    if clip.get("clip_grad_value") is not None:
        torch.nn.utils.clip_grad_value_([p for _, p in params], clip["clip_grad_value"])
    scaler.torch.step(opt)
    scaler.update(row.get("loss_scale", 1.0))
    m_name, v_name = STATES[sc["optimizer"]["kind"]]
    for name, p in params:
        state = opt.state.get(p, {})
        for s in (m_name, v_name):
            if s and s in state and watch.check(at, "update", f"optim.{name}.{s}", state[s]):
                return True
        if watch.check(at, "update", name, p.detach()):
            return True
    row["param_norm"] = math.sqrt(sum(float((p.detach().double() ** 2).sum()) for _, p in params))
    return False


def birth(nodes, outs, params, grads):
    """The first non-finite gradient in the order backward makes them: each node's output
    (from the last node down), then that node's parameters. Only a node output is returned:
    otherwise the parameters are checked in their own order, as nanhunt does."""
    index = {name: i for i, (name, _) in enumerate(params)}
    for l in range(len(outs) - 1, -1, -1):
        g = outs[l].grad
        if g is not None and not bool(torch.isfinite(g).all()):
            return (f"{nodes[l]['name']}.output.grad", g)
        if any(not bool(torch.isfinite(grads[index[n]]).all()) for n in nodes[l]["params"]):
            return None
    return None


def validate(watch, at, model, val, sc):
    model.eval()
    with torch.no_grad():
        outs = model(val[0], val[2])
    model.train()
    with torch.no_grad():
        for name, o in zip(watch.layer_names, outs):
            if watch.check(at, "validation", f"validation.{name}.output", o):
                break
        v = float(loss_fn(sc["loss"], outs[-1] if outs else val[0], val[1], val[2]))
    if watch.rows:
        watch.rows[-1]["val_loss"] = v
    if watch.first is None and not math.isfinite(v):
        watch.first = dict(at, phase="validation", tensor="validation.loss", kind="nan" if math.isnan(v) else ("pos_inf" if v > 0 else "neg_inf"), index=0, shape=[])
    return watch.first is not None


def finish(watch):
    fixed = ["step", "epoch", "fold", "train_loss", "val_loss", "grad_norm", "param_norm", "lr", "headroom", "grad_subnormal"]
    if any("loss_scale" in r for r in watch.rows):
        fixed += ["loss_scale", "skipped"]
    with open("trace.torch.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(fixed + [f"max_abs.{n}" for n in watch.layer_names])
        for r in watch.rows:
            w.writerow([repr(r[k]) if isinstance(r.get(k), float) else ("" if r.get(k) is None else r[k]) for k in fixed] + [repr(v) for v in r.get("max_abs", [])])
    f = watch.first
    if f:
        print(f"first       {f['kind']} in `{f['tensor']}` (index {f['index']}, shape {f['shape']})")
        print(f"where       step {f['step']}, epoch {f['epoch']}, fold {f['fold']}, phase {f['phase']}")
    else:
        print("outcome     finite")
    print("torch       " + torch.__version__)
    print("NANHUNT " + json.dumps({"torch": torch.__version__, "outcome": "nonfinite" if f else "finite", "first": f, "steps": len(watch.rows)}))
    return 1 if f else 0


if __name__ == "__main__":
    sys.exit(main())
