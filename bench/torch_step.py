#!/usr/bin/env python3
"""PyTorch side of the side-by-side step-time benchmark.

Only for comparing nanhunt's Candle training step with PyTorch's on the same
machine (`pip install torch`). It is NEVER a test dependency: nothing in the
build or the test suite imports or runs it.

Times one full training step (zero_grad, forward, loss, backward, optimizer
step) on one CPU thread, for the two model shapes used in the seed scenarios:

  mlp_small  10-100-1 ReLU MLP, sigmoid output, nn.BCELoss, batch 32, Adam lr 1e-3
             (scenarios/seeds/s000_ex1_bce_mlp.toml)
  mlp_wide   10-1024-1024-1 ReLU MLP, nn.MSELoss, batch 100, Adam lr 0.1
             (scenarios/seeds/s003_ex1_wide_mlp_adam.toml)
  tiny_gpt   2 pre-norm blocks, width 64, 4 heads, causal, sequence 32, vocab 64,
             cross-entropy over next tokens, batch 16, AdamW lr 3e-4
             (scenarios/real/tiny_gpt.toml; attention written out as nanoGPT's
             manual path, as nanhunt computes it)

With `--family image`, it times the image and convolution families instead (issue 31):

  conv1d     Conv1d(4, 16, 3, padding=1), ReLU, Conv1d(16, 16, 3, stride=2, padding=1), ReLU,
             mean over the sequence, Linear(16, 1), MSE, batch 32 of 32 steps, SGD lr 1e-3
             (scenarios/layers/conv1d_accumulate_sum_fix_mean.toml, one batch a step)
  cnn        Conv2d(1, 16, 3), ReLU, MaxPool2d(2), Conv2d(16, 32, 3), ReLU, MaxPool2d(2),
             Flatten, Linear(800, 10), cross-entropy, 28x28 images, batch 32, Adam lr 1e-3
             (scenarios/layers/cnn_adam.toml)
  cnn_bn     the CNN with BatchNorm2d after each Conv2d

Each model runs some warm-up steps, then a timed loop on one fixed batch. The
script prints one line per model:

  torch mlp_small  us_per_step=123.4

With `--family recurrent` it times the recurrent models instead (issue 31), on one
thread too, one line each (`torch rnn  us_per_step=…`):

  rnn                 nn.RNN(4, 32) over 100 steps, last state -> Linear(32, 1), MSE,
                      batch 32, SGD (scenarios/real/rnn_sgd_long_sequences.toml)
  lstm                two stacked nn.LSTM (16 -> 32 -> 32) over 100 steps, last state ->
                      Linear(32, 1) -> sigmoid, BCE, batch 32, Adam
                      (scenarios/real/keras13221_lstm_relu_recurrent_dropout_fix_tanh.toml
                      without its recurrent dropout)
  lstm_cells          the same written as an nn.LSTMCell loop
  lstm_cells_dropout  the cell loop with Keras's recurrent dropout 0.2 (one mask per
                      sequence and layer on the state fed back, drawn every step), which
                      nn.LSTM cannot do (the scenario as written)
  gru                 nn.GRU(4, 64) over 30 steps, last state -> Linear(64, 1), MSE, batch
                      32, SGD (scenarios/layers/gru_unscaled_targets_sgd.toml)
  lstm_lm             nn.Embedding(64, 64) -> nn.LSTM(64, 128) -> Linear(128, 64) over 32
                      tokens, next-token cross-entropy, batch 16, Adam

Usage: python3 bench/torch_step.py [--family default|recurrent] [--steps-small 2000] [--steps-wide 200] [--steps-gpt 200] [--warmup 50]
       python3 bench/torch_step.py --family image [--steps-conv 200]
"""

import argparse
import math
import time

import torch
import torch.nn as nn


class Attention(nn.Module):
    """Causal multi-head self-attention: separate q, k, v, o projections, masked_fill, softmax."""

    def __init__(self, width, heads):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(width, width) for _ in range(4))
        self.heads = heads

    def forward(self, x):
        b, s, w = x.shape
        d = w // self.heads
        split = lambda t: t.reshape(b, s, self.heads, d).transpose(1, 2)
        att = (split(self.q(x)) @ split(self.k(x)).transpose(-2, -1)) * (1.0 / math.sqrt(d))
        att = att.masked_fill(torch.ones(s, s, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
        return self.o((att @ split(self.v(x))).transpose(1, 2).reshape(b, s, w))


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.ln1, self.attn, self.ln2 = nn.LayerNorm(width), Attention(width, heads), nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyGpt(nn.Module):
    def __init__(self, vocab=64, width=64, heads=4, seq=32, blocks=2):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, width), nn.Parameter(torch.randn(seq, width))
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(blocks)))
        self.ln, self.head = nn.LayerNorm(width), nn.Linear(width, vocab)

    def forward(self, ids):
        return self.head(self.ln(self.blocks(self.wte(ids) + self.wpe)))


class Stacked(nn.Module):
    """Two LSTMs (the first returning every state) and a sigmoid head: fused modules, or an
    LSTMCell loop with Keras's recurrent dropout `p` on the state fed back."""

    def __init__(self, features, hidden, cells, p):
        super().__init__()
        self.cells, self.p = cells, p
        kind = nn.LSTMCell if cells else (lambda i, h: nn.LSTM(i, h, batch_first=True))
        self.l1, self.l2 = kind(features, hidden), kind(hidden, hidden)
        self.head = nn.Linear(hidden, 1)

    def loop(self, cell, x):
        b, s, _ = x.shape
        h = x.new_zeros(b, cell.hidden_size)
        c = h
        mask = torch.bernoulli(torch.full_like(h, 1 - self.p)) / (1 - self.p) if self.p > 0 else None
        out = []
        for t in range(s):
            h, c = cell(x[:, t], (h * mask if mask is not None else h, c))
            out.append(h)
        return torch.stack(out, 1)

    def forward(self, x):
        if self.cells:
            y = self.loop(self.l2, self.loop(self.l1, x))
        else:
            y = self.l2(self.l1(x)[0])[0]
        return torch.sigmoid(self.head(y[:, -1]))


class Last(nn.Module):
    """A recurrent module's last state through a linear head."""

    def __init__(self, rnn, hidden):
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(hidden, 1)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


class LstmLm(nn.Module):
    def __init__(self, vocab=64, dim=64, hidden=128):
        super().__init__()
        self.emb, self.lstm, self.head = nn.Embedding(vocab, dim), nn.LSTM(dim, hidden, batch_first=True), nn.Linear(hidden, vocab)

    def forward(self, ids):
        return self.head(self.lstm(self.emb(ids))[0])


def recurrent(args):
    """The recurrent models (issue 31), one line each."""
    steps, warmup = 20, 5
    x, y = torch.randn(32, 100, 4), torch.randn(32, 1)
    m = Last(nn.RNN(4, 32, batch_first=True), 32)
    us = bench(m, nn.MSELoss(), torch.optim.SGD(m.parameters(), lr=1e-3), x, y, warmup, steps * 4)
    print(f"torch rnn  us_per_step={us:.1f}", flush=True)
    x, y = torch.randn(32, 100, 16), torch.randint(0, 2, (32, 1)).float()
    for name, cells, p in [("lstm", False, 0.0), ("lstm_cells", True, 0.0), ("lstm_cells_dropout", True, 0.2)]:
        m = Stacked(16, 32, cells, p)
        us = bench(m, nn.BCELoss(), torch.optim.Adam(m.parameters(), lr=1e-3), x, y, warmup, steps)
        print(f"torch {name}  us_per_step={us:.1f}", flush=True)
    x, y = torch.randn(32, 30, 4), torch.randn(32, 1)
    m = Last(nn.GRU(4, 64, batch_first=True), 64)
    us = bench(m, nn.MSELoss(), torch.optim.SGD(m.parameters(), lr=1e-3), x, y, warmup, steps * 4)
    print(f"torch gru  us_per_step={us:.1f}", flush=True)
    ids = torch.randint(0, 64, (16, 33))
    ce = lambda logits, y: nn.functional.cross_entropy(logits.reshape(-1, 64), y.reshape(-1))
    m = LstmLm()
    us = bench(m, ce, torch.optim.Adam(m.parameters(), lr=1e-3), ids[:, :32], ids[:, 1:], warmup, steps * 4)
    print(f"torch lstm_lm  us_per_step={us:.1f}", flush=True)


def bench(model, loss_fn, opt, x, y, warmup, steps):
    """Mean wall-clock microseconds per training step over `steps` steps, after `warmup`."""

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()  # make sure the last step has finished
    return (time.perf_counter() - start) / steps * 1e6


class Conv1dNet(nn.Module):
    """nanhunt's conv1d layers read (batch, seq, width): the convolutions see it transposed."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv1d(4, 16, 3, padding=1), nn.Conv1d(16, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        h = torch.relu(self.c2(torch.relu(self.c1(x.transpose(1, 2)))))
        return self.head(h.mean(2))


def cnn(batch_norm):
    """The small CNN of issue 31, with a BatchNorm2d after each convolution if `batch_norm`."""
    norm = (lambda c: [nn.BatchNorm2d(c)]) if batch_norm else (lambda c: [])
    return nn.Sequential(
        nn.Conv2d(1, 16, 3), *norm(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3), *norm(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 5 * 5, 10),
    )


def image_models(args):
    """The image and convolution families (`--family image`)."""
    net = Conv1dNet()
    x, y = torch.randn(32, 32, 4), torch.randn(32, 1)
    us = bench(net, nn.MSELoss(), torch.optim.SGD(net.parameters(), lr=1e-3), x, y, args.warmup, args.steps_conv)
    print(f"torch conv1d     us_per_step={us:.1f}", flush=True)
    x, y = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    for name, bn in [("cnn", False), ("cnn_bn", True)]:
        net = cnn(bn)
        us = bench(net, nn.CrossEntropyLoss(), torch.optim.Adam(net.parameters(), lr=1e-3), x, y, args.warmup, args.steps_conv)
        print(f"torch {name:<10} us_per_step={us:.1f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps-small", type=int, default=2000, help="timed steps for mlp_small")
    ap.add_argument("--steps-wide", type=int, default=200, help="timed steps for mlp_wide")
    ap.add_argument("--steps-gpt", type=int, default=200, help="timed steps for tiny_gpt")
    ap.add_argument("--warmup", type=int, default=50, help="untimed warm-up steps per model")
    ap.add_argument("--family", choices=["default", "recurrent", "image"], default="default", help="which models to time")
    ap.add_argument("--steps-conv", type=int, default=200, help="timed steps for each image model")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.family == "recurrent":
        recurrent(args)
        return
    if args.family == "image":
        image_models(args)
        return

    # (1) 10-100-1 MLP, sigmoid + BCELoss, batch 32, Adam lr 1e-3 (seed 000 ex1).
    small = nn.Sequential(nn.Linear(10, 100), nn.ReLU(), nn.Linear(100, 1), nn.Sigmoid())
    x = torch.randn(32, 10)
    y = torch.randint(0, 2, (32, 1)).float()
    us = bench(small, nn.BCELoss(), torch.optim.Adam(small.parameters(), lr=1e-3), x, y, args.warmup, args.steps_small)
    print(f"torch mlp_small  us_per_step={us:.1f}", flush=True)

    # (2) 10-1024-1024-1 MLP, MSE, batch 100, Adam lr 0.1 (seed 003 ex1's shapes).
    wide = nn.Sequential(nn.Linear(10, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1))
    x = torch.rand(100, 10) * 10
    y = torch.rand(100, 1) * 10
    us = bench(wide, nn.MSELoss(), torch.optim.Adam(wide.parameters(), lr=0.1), x, y, args.warmup, args.steps_wide)
    print(f"torch mlp_wide   us_per_step={us:.1f}", flush=True)

    # (3) The tiny GPT: batch 16 of 32 tokens, cross-entropy over the vocabulary, AdamW 3e-4.
    gpt = TinyGpt()
    ids = torch.randint(0, 64, (16, 33))
    ce = lambda logits, y: nn.functional.cross_entropy(logits.reshape(-1, 64), y.reshape(-1))
    us = bench(gpt, ce, torch.optim.AdamW(gpt.parameters(), lr=3e-4), ids[:, :32], ids[:, 1:], args.warmup, args.steps_gpt)
    print(f"torch tiny_gpt   us_per_step={us:.1f}", flush=True)


if __name__ == "__main__":
    main()
