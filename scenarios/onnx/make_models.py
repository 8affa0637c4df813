"""Builds and exports the small models of scenarios/onnx/ with torch.onnx.export(dynamo=True).

Run from this folder with PyTorch 2.15 and the `onnx` and `onnxscript` packages:
    python make_models.py
Each model is seeded, so the .onnx files are reproducible. The weights are kept inside the
.onnx file (external_data=False) since the models are small; optimize=False keeps each Linear's
weight as its named initializer (`fc1.weight`) instead of a folded transposed constant (`val_0`).
"""

import math

import onnx
import torch
from torch import nn


class Mlp(nn.Module):
    """A small MLP: Linear, ReLU, Linear, Tanh, Linear."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(8, 8)
        self.act2 = nn.Tanh()
        self.fc3 = nn.Linear(8, 1)

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


class MlpMse(nn.Module):
    """The MLP and its MSE loss exported together: `forward(x, y) -> loss` (`[loss] from_model`)."""

    def __init__(self):
        super().__init__()
        self.mlp = Mlp()

    def forward(self, x, y):
        return nn.functional.mse_loss(self.mlp(x), y)


class Block(nn.Module):
    """A GPT-2 pre-norm block: causal self-attention written by hand, then an MLP, each residual."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.act = nn.GELU()
        self.out = nn.Linear(4 * d, d)

    def forward(self, h, blocked):
        b, t, d = h.shape
        q, k, v = self.qkv(self.ln1(h)).split(d, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        s = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        a = torch.softmax(s.masked_fill(blocked, float("-inf")), dim=-1)
        h = h + self.proj((a @ v).transpose(1, 2).reshape(b, t, d))
        return h + self.out(self.act(self.fc(self.ln2(h))))


class Gpt(nn.Module):
    """A GPT-2-style language model: token and position embeddings, one block, a final layer
    norm and an LM head. `mask` is 1 where a position holds data: a position attends to the
    earlier positions that hold data, so a fully padded row's softmax is all -inf (NaN)."""

    def __init__(self, vocab=11, d=8, heads=2, seq=5):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        self.block = Block(d, heads)
        self.lnf = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids, mask):
        t = ids.shape[1]
        h = self.tok(ids) + self.pos(torch.arange(t))
        causal = torch.ones(t, t, dtype=torch.bool).triu(1)
        blocked = causal[None, None] | (mask == 0)[:, None, None, :]
        return self.head(self.lnf(self.block(h, blocked)))


class LstmClassifier(nn.Module):
    """An LSTM classifier: a sequence of 4 features per step, nn.LSTM(batch_first=True) of 16
    units, its last step's state into a Linear of 3 classes."""

    def __init__(self, features=4, hidden=16, classes=3):
        super().__init__()
        self.rnn = nn.LSTM(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class GruClassifier(nn.Module):
    """A GRU classifier over tokens: an embedding of 16 tokens in 8 dims, nn.GRU(batch_first=True)
    of 16 units, the mean of its states over the sequence into a Linear of 3 classes."""

    def __init__(self, vocab=16, d=8, hidden=16, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.rnn = nn.GRU(d, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.rnn(self.emb(x))
        return self.head(out.mean(1))


class Cnn(nn.Module):
    """A small CNN on 14×14 single-channel images: Conv2d 1→8 (k 3), BatchNorm2d, ReLU,
    MaxPool2d 2, Conv2d 8→16 (k 3), ReLU, AvgPool2d 2, Flatten, Linear 64→3."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.act1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3)
        self.act2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        h = self.pool1(self.act1(self.bn(self.conv1(x))))
        return self.fc(self.flat(self.pool2(self.act2(self.conv2(h)))))


def answer(model, loss_of, lr, steps, transposed=lambda name, p: p.dim() == 2):
    """What the import tests (harness/tests/onnx_*torch.rs) compare with: the module's loss and
    gradients at its weights (those `transposed` picks transposed to nanhunt's layout: by
    default every matrix, to `(in, out)`), then its losses over `steps` Adam steps at `lr`."""
    loss = loss_of()
    loss.backward()
    grads = {n: (p.grad.T if transposed(n, p) else p.grad).flatten().tolist() for n, p in model.named_parameters()}
    first = loss.item()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_of()
        losses.append(loss.item())
        loss.backward()
        opt.step()
    return {"loss": first, "grads": grads, "losses": losses}


class MhaBlock(nn.Module):
    """A pre-norm block around torch's own nn.MultiheadAttention (batch first, 2 heads), between
    a token embedding and an LM head: its export's reshapes to (seq, batch · heads, d) scale with
    the dynamic batch."""

    def __init__(self, vocab=11, d=8, heads=2):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.ln = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.head = nn.Linear(d, vocab)

    def forward(self, x):
        h = self.tok(x)
        a = self.ln(h)
        a, _ = self.attn(a, a, a, need_weights=False)
        return self.head(h + a)


def export(model, example, path, dynamic=True, **kw):
    """Exports (the batch dimension of `x`, and of `y` when the loss is exported too, dynamic
    unless `dynamic` is false), then drops the stack traces (local paths)."""
    model.eval()
    example = example if isinstance(example, tuple) else (example,)
    if dynamic:
        batch = torch.export.Dim("batch")
        kw["dynamic_shapes"] = {"x": {0: batch}} if len(example) == 1 else {"x": {0: batch}, "y": {0: batch}}
    torch.onnx.export(model, example, path, dynamo=True, external_data=False, **kw)
    m = onnx.load(path)
    for n in m.graph.node:
        keep = [p for p in n.metadata_props if p.key != "pkg.torch.onnx.stack_trace"]
        del n.metadata_props[:]
        n.metadata_props.extend(keep)
    onnx.save(m, path)


def main():
    torch.manual_seed(0)
    export(Mlp(), (torch.randn(5, 4),), "mlp.onnx", optimize=False, input_names=["x"], output_names=["y"])
    # The same weights (the same seed) with the loss in the graph.
    torch.manual_seed(0)
    export(MlpMse(), (torch.randn(5, 4), torch.randn(5, 1)), "mlp_mse.onnx", optimize=False, input_names=["x", "y"], output_names=["loss"])
    # Static shapes: nanhunt folds the reshapes' targets and keeps the data's batch in them.
    torch.manual_seed(0)
    gpt = Gpt()
    ids, mask = torch.randint(0, 11, (3, 5)), torch.ones(3, 5)
    export(gpt, (ids, mask), "gpt.onnx", dynamic=False, optimize=False, opset_version=18, input_names=["ids", "mask"], output_names=["logits"])
    # The exporter writes each recurrent layer as an ONNX LSTM/GRU node, its weights sliced and
    # concatenated into ONNX's gate order; nanhunt traces them back to the parameters.
    torch.manual_seed(0)
    export(LstmClassifier(), (torch.randn(3, 12, 4),), "lstm.onnx", optimize=False, input_names=["x"], output_names=["logits"])
    torch.manual_seed(0)
    export(GruClassifier(), (torch.randint(0, 16, (3, 12)),), "gru.onnx", optimize=False, input_names=["x"], output_names=["logits"])
    # The batch dynamic: nn.Flatten's reshape reads the batch from Shape(x). The exporter writes
    # the same inference-form BatchNormalization in train() and eval() mode; nanhunt trains it
    # as the module does in train() mode.
    torch.manual_seed(0)
    export(Cnn(), (torch.randn(4, 1, 14, 14),), "cnn.onnx", optimize=False, input_names=["x"], output_names=["y"])
    # nn.MultiheadAttention with a dynamic batch (its reshapes read the batch from the input's shape).
    torch.manual_seed(0)
    export(MhaBlock(), (torch.randint(0, 11, (3, 5)),), "mha.onnx", optimize=False, opset_version=18, input_names=["x"], output_names=["logits"])


if __name__ == "__main__":
    main()
