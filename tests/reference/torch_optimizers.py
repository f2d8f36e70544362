#!/usr/bin/env python3
"""torch.optim reference sequences for fluxc's optimizers (issue: the standard library).

For each optimizer, 10 steps on one fixed problem — `Dense(3 => 2)` under `mse` on a fixed
batch of 4 — in float64, recording the weight and bias after every step. Writes
tests/fixtures/optim/<name>.json:

    {"optimizer": "Adam(lr = 0.05, beta1 = 0.8)", "x", "target", "weight0", "bias0",
     "steps": [{"weight", "bias"}, ...]}

Non-default hyperparameters are used so that each one matters. Lion is not in torch.optim; it is
written from its paper (Chen et al. 2023, Alg. 2), as fluxc's is (LANGUAGE.md §12.6).

The gradient rules and schedules on the same problem go to tests/fixtures/optim_rules/<name>.json
(`"train"` holds the train-block lines, `"epochs"` the epoch of each step): ClipNorm is
torch.nn.utils.clip_grad_norm_, ClipValue clip_grad_value_, WeightDecay(λ) torch.optim.SGD's
`weight_decay` (λ·p added to the gradient), OptimiserChain applies its rules in order, and each
schedule is a torch.optim.lr_scheduler.LambdaLR whose factor is §12.7's formula for the step
(from 1) and epoch (from 1) that the optimizer step runs in.

    /tmp/torchenv/bin/python tests/reference/torch_optimizers.py
"""

import json
import math
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


def cosine(total):
    return lambda step, epoch: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


def step_decay(every, gamma):
    return lambda step, epoch: gamma ** math.floor((epoch - 1) / every)


def warmup(steps, then):
    return lambda step, epoch: step / steps if step <= steps else then(step, epoch)


def clip_norm(n):
    return lambda ps: torch.nn.utils.clip_grad_norm_(ps, n)


def clip_value(v):
    return lambda ps: torch.nn.utils.clip_grad_value_(ps, v)


def sgd(**kw):
    return lambda ps: torch.optim.SGD(ps, **kw)


def adam(**kw):
    return lambda ps: torch.optim.Adam(ps, **kw)


# (name, train-block lines, torch optimizer, gradient rules before it, schedule factor or None)
RULE_CASES = [
    ("clip_norm", "optimizer = Descent(lr = 0.2)\n    clip = ClipNorm(0.3)", sgd(lr=0.2), [clip_norm(0.3)], None),
    ("clip_value", "optimizer = Momentum(lr = 0.05, momentum = 0.8)\n    clip = ClipValue(0.05)",
     sgd(lr=0.05, momentum=0.8), [clip_value(0.05)], None),
    ("chain_weight_decay", "optimizer = OptimiserChain(WeightDecay(0.1), Momentum(lr = 0.05, momentum = 0.8))",
     sgd(lr=0.05, momentum=0.8, weight_decay=0.1), [], None),
    ("chain_clip_adam", "optimizer = OptimiserChain(ClipValue(0.1), ClipNorm(0.4), Adam(lr = 0.05))",
     adam(lr=0.05), [clip_value(0.1), clip_norm(0.4)], None),
    ("clip_then_chain", "optimizer = OptimiserChain(WeightDecay(0.2), Descent(lr = 0.1))\n    clip = ClipNorm(0.5)",
     sgd(lr=0.1, weight_decay=0.2), [clip_norm(0.5)], None),
    ("schedule_constant", "optimizer = Adam(lr = 0.05)\n    schedule = constant", adam(lr=0.05), [], lambda s, e: 1.0),
    ("schedule_cosine", "optimizer = Adam(lr = 0.05)\n    schedule = cosine(8)", adam(lr=0.05), [], cosine(8)),
    ("schedule_step_decay", "optimizer = Momentum(lr = 0.05, momentum = 0.8)\n    schedule = step_decay(2, 0.5)",
     sgd(lr=0.05, momentum=0.8), [], step_decay(2, 0.5)),
    ("schedule_warmup", "optimizer = Adam(lr = 0.05)\n    schedule = warmup(3, cosine(9))", adam(lr=0.05), [],
     warmup(3, cosine(9))),
]
STEPS_PER_EPOCH = 3


def rule_cases(x, target, w0, b0):
    out = os.path.join(REPO, "tests", "fixtures", "optim_rules")
    os.makedirs(out, exist_ok=True)
    epochs = [k // STEPS_PER_EPOCH + 1 for k in range(10)]
    for name, lines, make, rules, factor in RULE_CASES:
        w = w0.clone().requires_grad_(True)
        b = b0.clone().requires_grad_(True)
        opt = make([w, b])
        # LambdaLR calls its function with 0, 1, …: the factor of optimizer step k + 1.
        sched = None if factor is None else torch.optim.lr_scheduler.LambdaLR(
            opt, lambda k: factor(k + 1, epochs[min(k, 9)]))
        steps = []
        for _ in range(10):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(x @ w.T + b, target)
            loss.backward()
            for rule in rules:
                rule([w, b])
            opt.step()
            if sched is not None:
                sched.step()
            steps.append({"weight": flat(w), "bias": flat(b)})
        case = {"train": lines, "epochs": epochs, "x": flat(x), "target": flat(target), "weight0": flat(w0),
                "bias0": flat(b0), "steps": steps}
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump(case, f, indent=1)
            f.write("\n")
    print(f"wrote {len(RULE_CASES)} cases to {out}")


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
    rule_cases(x, target, w0, b0)


if __name__ == "__main__":
    main()
