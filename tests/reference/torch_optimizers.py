#!/usr/bin/env python3
"""torch.optim reference sequences for fluxc's optimizers (issue: the standard library).

For each optimizer, 10 steps on one fixed problem — `Dense(3 => 2)` under `mse` on a fixed
batch of 4 — in float64, recording the weight and bias after every step. Writes
tests/fixtures/optim/<name>.json:

    {"optimizer": "Adam(lr = 0.05, beta1 = 0.8)", "x", "target", "weight0", "bias0",
     "steps": [{"weight", "bias"}, ...]}

Non-default hyperparameters are used so that each one matters. Lion is not in torch.optim; it is
written from its paper (Chen et al. 2023, Alg. 2), as fluxc's is (LANGUAGE.md §12.6).

    /tmp/torchenv/bin/python tests/reference/torch_optimizers.py
"""

import json
import os

import torch

torch.set_default_dtype(torch.float64)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO, "tests", "fixtures", "optim")


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


class Lion(torch.optim.Optimizer):
    def __init__(self, params, lr, betas, weight_decay):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                m = self.state[p].setdefault("m", torch.zeros_like(p))
                c = b1 * m + (1 - b1) * p.grad
                p.sub_(group["lr"] * (torch.sign(c) + group["weight_decay"] * p))
                m.mul_(b2).add_((1 - b2) * p.grad)


CASES = [
    ("descent", "Descent(lr = 0.2)", lambda ps: torch.optim.SGD(ps, lr=0.2)),
    ("momentum", "Momentum(lr = 0.05, momentum = 0.8)", lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8)),
    ("nesterov", "Nesterov(lr = 0.05, momentum = 0.7)", lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.7, nesterov=True)),
    ("rmsprop", "RMSProp(lr = 0.02, alpha = 0.9, eps = 1e-6)", lambda ps: torch.optim.RMSprop(ps, lr=0.02, alpha=0.9, eps=1e-6)),
    ("adam", "Adam(lr = 0.05, beta1 = 0.8, beta2 = 0.99, eps = 1e-6)", lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-6)),
    ("adamw", "AdamW(lr = 0.05, beta1 = 0.8, beta2 = 0.99, eps = 1e-6, weight_decay = 0.1)", lambda ps: torch.optim.AdamW(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    ("radam", "RAdam(lr = 0.05, beta1 = 0.8, beta2 = 0.7, eps = 1e-6)", lambda ps: torch.optim.RAdam(ps, lr=0.05, betas=(0.8, 0.7), eps=1e-6)),
    ("adamax", "AdaMax(lr = 0.05, beta1 = 0.8, beta2 = 0.99, eps = 1e-6)", lambda ps: torch.optim.Adamax(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-6)),
    ("adagrad", "AdaGrad(lr = 0.1, eps = 1e-8)", lambda ps: torch.optim.Adagrad(ps, lr=0.1, eps=1e-8)),
    ("adadelta", "AdaDelta(lr = 0.5, rho = 0.8, eps = 1e-5)", lambda ps: torch.optim.Adadelta(ps, lr=0.5, rho=0.8, eps=1e-5)),
    ("amsgrad", "AMSGrad(lr = 0.05, beta1 = 0.8, beta2 = 0.99, eps = 1e-6)", lambda ps: torch.optim.Adam(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-6, amsgrad=True)),
    ("nadam", "NAdam(lr = 0.05, beta1 = 0.8, beta2 = 0.99, eps = 1e-6, momentum_decay = 0.01)", lambda ps: torch.optim.NAdam(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-6, momentum_decay=0.01)),
    ("lion", "Lion(lr = 0.01, beta1 = 0.8, beta2 = 0.95, weight_decay = 0.1)", lambda ps: Lion(ps, lr=0.01, betas=(0.8, 0.95), weight_decay=0.1)),
]


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(4, 3, generator=g)
    target = torch.randn(4, 2, generator=g)
    w0 = torch.randn(2, 3, generator=g) * 0.5
    b0 = torch.randn(2, generator=g) * 0.5
    for name, flx, make in CASES:
        w = w0.clone().requires_grad_(True)
        b = b0.clone().requires_grad_(True)
        opt = make([w, b])
        steps = []
        for _ in range(10):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(x @ w.T + b, target)
            loss.backward()
            opt.step()
            steps.append({"weight": flat(w), "bias": flat(b)})
        case = {"optimizer": flx, "x": flat(x), "target": flat(target), "weight0": flat(w0), "bias0": flat(b0), "steps": steps}
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump(case, f, indent=1)
            f.write("\n")
    print(f"wrote {len(CASES)} cases to {OUT}")


if __name__ == "__main__":
    main()
