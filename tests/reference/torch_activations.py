#!/usr/bin/env python3
"""PyTorch float64 references for the 14 activations of std::act (LANGUAGE.md §7): values and
derivatives at fixed points (none on a kink), written to tests/fixtures/act/activations.json as
{name: {"x": [...], "y": [...], "dy": [...]}} with dy = d sum(f(x)) / dx.

    /tmp/torchenv/bin/python tests/reference/torch_activations.py
"""

import json
import os

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "act", "activations.json")

ACTS = {
    "identity": lambda x: x,
    "relu": F.relu,
    "leakyrelu": lambda x: F.leaky_relu(x, 0.01),
    "elu": lambda x: F.elu(x, 1.0),
    "gelu": lambda x: F.gelu(x, approximate="tanh"),
    "swish": F.silu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softplus": F.softplus,
    "softsign": F.softsign,
    "hardtanh": F.hardtanh,
    "relu6": F.relu6,
    "celu": lambda x: F.celu(x, 1.0),
    "selu": F.selu,
}


def main():
    # Points on both sides of every kink (0, ±1, 6) but never on one, and in the tails.
    xs = [-30.0, -7.5, -6.2, -3.1, -1.3, -0.9, -0.4, -0.05, 0.03, 0.2, 0.7, 1.1, 2.5, 5.9, 6.4, 12.0, 25.0]
    out = {}
    for name, f in ACTS.items():
        x = torch.tensor(xs, requires_grad=True)
        y = f(x)
        (dy,) = torch.autograd.grad(y.sum(), x)
        out[name] = {"x": xs, "y": [float(v) for v in y.tolist()], "dy": [float(v) for v in dy.tolist()]}
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as fh:
        json.dump(out, fh, indent=1)
        fh.write("\n")
    print(f"wrote {len(out)} activations to {OUT}")


if __name__ == "__main__":
    main()
