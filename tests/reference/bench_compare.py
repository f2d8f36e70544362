#!/usr/bin/env python3
"""Runs the CPU benchmark workloads in fluxc, PyTorch and (when installed) JAX on this machine and
prints each fluxc median with its ratio to the others (ratio < 1: fluxc is faster).

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch   # (and jax, optional)
    /tmp/torchenv/bin/python tests/reference/bench_compare.py               # from the repo root

Workloads (as tests/benches/cpu.rs): GEMM n x n for n in 256/512/1024; an MLP 784-256-256-10
forward at batch 1 and 256; its Adam train step (logitcrossentropy) at batch 1, 32 and 128; a
LeNet-5 Adam train step at batch 64; an LSTM(32 => 128) over 50 steps, forward and backward with
an SGD update, at batch 32.
Every framework runs on the CPU in float32 with 2 threads. FLUXC_COMPARE_ROUNDS (default 3)
rounds run the three in turn; the table gives each one's fastest round.
"""

import os
import re
import statistics
import subprocess
import time


def median_us(fn, runs):
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e6)
    return statistics.median(times)


def fluxc_figures():
    out = subprocess.run(
        ["cargo", "bench", "-q", "-p", "fluxc-tests", "--bench", "cpu"],
        check=True, capture_output=True, text=True,
    ).stdout
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^fluxc (\S+) median_us=([0-9.]+)", out, re.M)}


def torch_figures():
    import torch
    torch.set_num_threads(2)
    figs = {}
    for n in (256, 512, 1024):
        a = torch.full((n, n), 0.5)
        figs[f"gemm_{n}"] = median_us(lambda: a @ a, 10 if n == 1024 else 50)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )
    with torch.no_grad():
        for b in (1, 256):
            x = torch.full((b, 784), 0.5)
            figs[f"mlp_forward_b{b}"] = median_us(lambda: model(x), 2000 if b == 1 else 200)
    opt = torch.optim.Adam(model.parameters(), lr=0.001)
    for b in (1, 32, 128):
        x = torch.full((b, 784), 0.5)
        y = torch.full((b, 10), 0.1)

        def step():
            opt.zero_grad()
            loss = (-(y * torch.log_softmax(model(x), dim=-1)).sum(-1)).mean()
            loss.backward()
            opt.step()

        figs[f"mlp_adam_train_step_b{b}"] = median_us(step, 500 if b == 1 else 100)
    lenet = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(400, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(),
        torch.nn.Linear(84, 10),
    )
    lopt = torch.optim.Adam(lenet.parameters(), lr=0.001)
    x = torch.full((64, 1, 28, 28), 0.5)
    y = torch.full((64, 10), 0.1)

    def lstep():
        lopt.zero_grad()
        loss = (-(y * torch.log_softmax(lenet(x), dim=-1)).sum(-1)).mean()
        loss.backward()
        lopt.step()

    figs["lenet5_adam_train_step_b64"] = median_us(lstep, 20)
    lstm = torch.nn.LSTM(32, 128, batch_first=True)
    sopt = torch.optim.SGD(lstm.parameters(), lr=0.01)
    xs = torch.full((32, 50, 32), 0.5)
    ys = torch.full((32, 50, 128), 0.1)

    def sstep():
        sopt.zero_grad()
        out, _ = lstm(xs)
        loss = ((out - ys) ** 2).mean()
        loss.backward()
        sopt.step()

    figs["lstm_train_step_b32"] = median_us(sstep, 20)
    return figs


def jax_figures():
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    figs = {}
    for n in (256, 512, 1024):
        a = jnp.full((n, n), 0.5, dtype=jnp.float32)
        f = jax.jit(lambda m: m @ m)
        figs[f"gemm_{n}"] = median_us(lambda: f(a).block_until_ready(), 10 if n == 1024 else 50)
    key = jax.random.PRNGKey(0)
    sizes = [(784, 256), (256, 256), (256, 10)]
    params = [(jax.random.normal(key, (o, i)) * 0.05, jnp.zeros(o)) for i, o in sizes]

    def forward(ps, x):
        for k, (w, b) in enumerate(ps):
            x = x @ w.T + b
            if k < len(ps) - 1:
                x = jax.nn.relu(x)
        return x

    fwd = jax.jit(forward)
    for b in (1, 256):
        x = jnp.full((b, 784), 0.5, dtype=jnp.float32)
        figs[f"mlp_forward_b{b}"] = median_us(lambda: fwd(params, x).block_until_ready(), 2000 if b == 1 else 200)

    def loss(ps, x, y):
        return (-(y * jax.nn.log_softmax(forward(ps, x), axis=-1)).sum(-1)).mean()

    @jax.jit
    def step(ps, m, v, t, x, y):
        g = jax.grad(loss)(ps, x, y)
        new = []
        nm = []
        nv = []
        for (p, gp, mp, vp) in zip(jax.tree_util.tree_leaves(ps), jax.tree_util.tree_leaves(g), m, v):
            mp = 0.9 * mp + 0.1 * gp
            vp = 0.999 * vp + 0.001 * gp * gp
            new.append(p - 0.001 * (mp / (1 - 0.9 ** t)) / (jnp.sqrt(vp / (1 - 0.999 ** t)) + 1e-8))
            nm.append(mp)
            nv.append(vp)
        return new, nm, nv

    leaves = jax.tree_util.tree_leaves(params)
    m = [jnp.zeros_like(p) for p in leaves]
    v = [jnp.zeros_like(p) for p in leaves]
    for b in (1, 32, 128):
        x = jnp.full((b, 784), 0.5, dtype=jnp.float32)
        y = jnp.full((b, 10), 0.1, dtype=jnp.float32)
        figs[f"mlp_adam_train_step_b{b}"] = median_us(
            lambda: jax.block_until_ready(step(params, m, v, 1.0, x, y)), 500 if b == 1 else 100)

    def adam(loss_fn):
        @jax.jit
        def astep(ps, m, v, t, x, y):
            g = jax.grad(loss_fn)(ps, x, y)
            tm = jax.tree_util.tree_map
            m = tm(lambda mp, gp: 0.9 * mp + 0.1 * gp, m, g)
            v = tm(lambda vp, gp: 0.999 * vp + 0.001 * gp * gp, v, g)
            ps = tm(lambda p, mp, vp: p - 0.001 * (mp / (1 - 0.9 ** t)) / (jnp.sqrt(vp / (1 - 0.999 ** t)) + 1e-8),
                    ps, m, v)
            return ps, m, v
        return astep

    # LeNet-5 as in the torch version: NCHW convolutions, 2x2 max pooling.
    ks = jax.random.split(key, 5)
    lenet_params = [
        (jax.random.normal(ks[0], (6, 1, 5, 5)) * 0.1, jnp.zeros(6)),
        (jax.random.normal(ks[1], (16, 6, 5, 5)) * 0.1, jnp.zeros(16)),
        (jax.random.normal(ks[2], (120, 400)) * 0.05, jnp.zeros(120)),
        (jax.random.normal(ks[3], (84, 120)) * 0.05, jnp.zeros(84)),
        (jax.random.normal(ks[4], (10, 84)) * 0.05, jnp.zeros(10)),
    ]

    def conv(x, w, b, pad):
        y = jax.lax.conv_general_dilated(x, w, (1, 1), [(pad, pad), (pad, pad)],
                                         dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return y + b[None, :, None, None]

    def pool(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")

    def lenet(ps, x):
        (w1, b1), (w2, b2), (w3, b3), (w4, b4), (w5, b5) = ps
        x = pool(jax.nn.relu(conv(x, w1, b1, 2)))
        x = pool(jax.nn.relu(conv(x, w2, b2, 0)))
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(x @ w3.T + b3)
        x = jax.nn.relu(x @ w4.T + b4)
        return x @ w5.T + b5

    def lenet_loss(ps, x, y):
        return (-(y * jax.nn.log_softmax(lenet(ps, x), axis=-1)).sum(-1)).mean()

    lstep = adam(lenet_loss)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, lenet_params)
    x = jnp.full((64, 1, 28, 28), 0.5, dtype=jnp.float32)
    y = jnp.full((64, 10), 0.1, dtype=jnp.float32)
    figs["lenet5_adam_train_step_b64"] = median_us(
        lambda: jax.block_until_ready(lstep(lenet_params, zeros, zeros, 1.0, x, y)), 20)

    # LSTM(32 => 128) over 50 steps (lax.scan), gates in torch's order (i, f, g, o), SGD.
    ks = jax.random.split(key, 3)
    lstm_params = (jax.random.normal(ks[0], (512, 32)) * 0.1, jax.random.normal(ks[1], (512, 128)) * 0.1,
                   jnp.zeros(512))

    def lstm(ps, xs):
        wx, wh, b = ps

        def cell(carry, x):
            h, c = carry
            g = x @ wx.T + h @ wh.T + b
            i, f, gg, o = jnp.split(g, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(gg)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zero = jnp.zeros((xs.shape[0], 128), dtype=jnp.float32)
        _, hs = jax.lax.scan(cell, (zero, zero), jnp.swapaxes(xs, 0, 1))
        return jnp.swapaxes(hs, 0, 1)

    def lstm_loss(ps, xs, ys):
        return ((lstm(ps, xs) - ys) ** 2).mean()

    @jax.jit
    def sgd(ps, xs, ys):
        g = jax.grad(lstm_loss)(ps, xs, ys)
        return jax.tree_util.tree_map(lambda p, gp: p - 0.01 * gp, ps, g)

    xs = jnp.full((32, 50, 32), 0.5, dtype=jnp.float32)
    ys = jnp.full((32, 50, 128), 0.1, dtype=jnp.float32)
    figs["lstm_train_step_b32"] = median_us(lambda: jax.block_until_ready(sgd(lstm_params, xs, ys)), 20)
    return figs


def main():
    # The machine is shared: a busy neighbour slows whichever framework runs at the time. Each
    # round runs all three one after another; each framework's figure is its fastest round's
    # median, and the last column gives fluxc/PyTorch round by round.
    rounds = int(os.environ.get("FLUXC_COMPARE_ROUNDS", "3"))
    runs = [(fluxc_figures(), torch_figures(), jax_figures()) for _ in range(rounds)]
    best = lambda figs: {k: min(f[k] for f in figs if f and k in f) for k in (figs[0] or {})}
    flux = best([r[0] for r in runs])
    torch_f = best([r[1] for r in runs])
    jax_f = best([r[2] for r in runs]) if runs[0][2] is not None else None
    print(f"fastest of {rounds} rounds (median microseconds each)")
    print(f"{'workload':28} {'fluxc us':>10} {'torch us':>10} {'fluxc/torch':>11} {'jax us':>10} {'fluxc/jax':>10}"
          "  fluxc/torch by round")
    for name, us in flux.items():
        t = torch_f.get(name)
        j = (jax_f or {}).get(name)
        tr = f"{us / t:.2f}" if t else "-"
        jr = f"{us / j:.2f}" if j else "-"
        by_round = " ".join(f"{f[name] / tf[name]:.2f}" for f, tf, _ in runs if name in tf) or "-"
        print(f"{name:28} {us:10.1f} {t if t else float('nan'):10.1f} {tr:>11} {j if j else float('nan'):10.1f} {jr:>10}"
              f"  {by_round}")
    if jax_f is None:
        print("(JAX is not installed in this environment: its columns are empty)")


if __name__ == "__main__":
    main()
