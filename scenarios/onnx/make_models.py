"""Builds and exports the small models of scenarios/onnx/ with torch.onnx.export(dynamo=True).

Run from this folder with PyTorch 2.15 and the `onnx` and `onnxscript` packages:
    python make_models.py
Each model is seeded, so the .onnx files are reproducible. The weights are kept inside the
.onnx file (external_data=False) since the models are small; optimize=False keeps each Linear's
weight as its named initializer (`fc1.weight`) instead of a folded transposed constant (`val_0`).
"""

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


def export(model, example, path, **kw):
    """Exports with the batch dimension dynamic, then drops the stack traces (local paths)."""
    model.eval()
    batch = torch.export.Dim("batch")
    shapes = {"x": {0: batch}} if len(example) == 1 else {"x": {0: batch}, "y": {0: batch}}
    torch.onnx.export(model, example, path, dynamo=True, external_data=False, dynamic_shapes=shapes, **kw)
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


if __name__ == "__main__":
    main()
