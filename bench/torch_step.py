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

Each model runs some warm-up steps, then a timed loop on one fixed batch. The
script prints one line per model:

  torch mlp_small  us_per_step=123.4

Usage: python3 bench/torch_step.py [--steps-small 2000] [--steps-wide 200] [--warmup 50]
"""

import argparse
import time

import torch
import torch.nn as nn


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps-small", type=int, default=2000, help="timed steps for mlp_small")
    ap.add_argument("--steps-wide", type=int, default=200, help="timed steps for mlp_wide")
    ap.add_argument("--warmup", type=int, default=50, help="untimed warm-up steps per model")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)

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


if __name__ == "__main__":
    main()
