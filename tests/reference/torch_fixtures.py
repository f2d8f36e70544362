#!/usr/bin/env python3
"""PyTorch float64 reference fixtures for fluxc (forward loss + gradients).

Writes one JSON file per case into tests/fixtures/torch/<case>.json:

    {"case", "model", "loss", "x", "target", "params", "loss_value", "grads"}

where every tensor is {"shape": [...], "data": [...]} (float64, row-major, flattened),
`params` / `grads` are keyed by fluxc's parameter names (LANGUAGE.md §3.2, §12.10),
`loss_value` is the loss of the model's output on `x` against `target` in TRAINING mode,
and `grads` are d loss / d param computed by torch autograd in float64.

Regenerate (from the repository root; the venv lives outside the repo):

    python3 -m venv /tmp/torchenv
    /tmp/torchenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
        # or, if that index is unreachable: /tmp/torchenv/bin/pip install torch
    /tmp/torchenv/bin/python tests/reference/torch_fixtures.py

The script is deterministic (fixed per-case seeds, CPU, float64). Besides writing the
files it asserts, for every case, that
  * the autograd gradients match a central finite difference in float64, and
  * for the layers whose semantics fluxc re-implements (LSTM, GRU, attention, BatchNorm,
    LayerNorm, conv/pool/flatten) torch's output matches a hand-written forward pass that
    follows the fluxc description (gate order, causal mask, biased variance, ...),
and that no max-pool window has a tie and no ReLU pre-activation sits near its kink.
"""

import json
import math
import os
import sys
import zlib

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
torch.use_deterministic_algorithms(True)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(REPO, "tests", "fixtures", "torch")

# Flux's epseltype(Float32) = eps(Float32) = 1.1920929f-7 = 2^-23 exactly.
EPS = 2.0 ** -23


def seed_for(name):
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def tensor_json(t):
    t = t.detach().to(torch.float64).contiguous()
    return {"shape": list(t.shape), "data": [float(v) for v in t.reshape(-1).tolist()]}


def perturb_(params, scale=0.1):
    with torch.no_grad():
        for p in params.values():
            p.add_(scale * torch.randn_like(p))


# --------------------------------------------------------------------------- losses
# Written explicitly from Flux.Losses' definitions (mean aggregation, class axis = last).

def xlogy(a, b):
    return torch.xlogy(a, b)


def l_mse(yh, y):
    return ((yh - y) ** 2).mean()


def l_mae(yh, y):
    return (yh - y).abs().mean()


def l_msle(yh, y):
    return (torch.log((yh + EPS) / (y + EPS)) ** 2).mean()


def l_huber(yh, y, delta=0.5):
    e = (yh - y).abs()
    return torch.where(e < delta, 0.5 * e ** 2, delta * (e - 0.5 * delta)).mean()


def l_crossentropy(yh, y):
    return (-xlogy(y, yh + EPS).sum(-1)).mean()


def l_logitcrossentropy(yh, y):
    return (-(y * F.log_softmax(yh, dim=-1)).sum(-1)).mean()


def l_binarycrossentropy(yh, y):
    return (-xlogy(y, yh + EPS) - xlogy(1 - y, 1 - yh + EPS)).mean()


def l_logitbinarycrossentropy(yh, y):
    return ((1 - y) * yh - F.logsigmoid(yh)).mean()


def l_kldivergence(yh, y):
    return xlogy(y, y).sum(-1).mean() + l_crossentropy(yh, y)


def l_poisson(yh, y):
    return (yh - xlogy(y, yh)).mean()


def l_hinge(yh, y):
    return torch.clamp(1 - yh * y, min=0).mean()


def l_squared_hinge(yh, y):
    return (torch.clamp(1 - yh * y, min=0) ** 2).mean()


def l_focal(yh, y, gamma=2):
    p = yh + EPS
    return (-y * (1 - p) ** gamma * torch.log(p)).sum(-1).mean()


def l_dice(yh, y, smooth=1.0):
    return 1 - (2 * (y * yh).sum() + smooth) / ((y ** 2).sum() + (yh ** 2).sum() + smooth)


def l_tversky(yh, y, beta=0.7):
    num = (y * yh).sum() + 1
    den = (y * yh + beta * (1 - y) * yh + (1 - beta) * y * (1 - yh)).sum() + 1
    return 1 - num / den


# (case suffix, .flx loss string, function, target kind)
LOSSES = [
    ("mse", "mse", l_mse, "prob"),
    ("mae", "mae", l_mae, "prob"),
    ("msle", "msle", l_msle, "prob"),
    # sharper probability rows so that both branches of the Huber loss are exercised
    ("huber_loss", "huber_loss(delta = 0.5)", l_huber, "prob_sharp"),
    ("crossentropy", "crossentropy", l_crossentropy, "prob"),
    ("logitcrossentropy", "logitcrossentropy", l_logitcrossentropy, "prob"),
    ("binarycrossentropy", "binarycrossentropy", l_binarycrossentropy, "unit"),
    ("logitbinarycrossentropy", "logitbinarycrossentropy", l_logitbinarycrossentropy, "unit"),
    ("kldivergence", "kldivergence", l_kldivergence, "prob"),
    ("poisson_loss", "poisson_loss", l_poisson, "prob"),
    ("hinge_loss", "hinge_loss", l_hinge, "pm1"),
    ("squared_hinge_loss", "squared_hinge_loss", l_squared_hinge, "pm1"),
    ("focal_loss", "focal_loss", l_focal, "prob"),
    ("dice_coeff_loss", "dice_coeff_loss", l_dice, "unit"),
    ("tversky_loss", "tversky_loss", l_tversky, "unit"),
]


def make_target(kind, shape):
    if kind == "prob":
        return torch.softmax(torch.randn(shape), dim=-1)
    if kind == "prob_sharp":
        return torch.softmax(4.0 * torch.randn(shape), dim=-1)
    if kind == "unit":
        return torch.rand(shape) * 0.9 + 0.05  # strictly inside (0, 1)
    if kind == "pm1":
        return torch.where(torch.rand(shape) < 0.5, -1.0, 1.0)
    if kind == "onehot":
        idx = torch.randint(0, shape[-1], shape[:-1])
        return F.one_hot(idx, shape[-1]).to(torch.float64)
    if kind == "randn":
        return torch.randn(shape)
    raise ValueError(kind)


# --------------------------------------------------------------------------- checks

def finite_difference_check(name, params, loss_fn, grads, h=1e-6, rtol=1e-6, atol=1e-8):
    """Central differences over every parameter element, asserted against autograd."""
    worst = 0.0
    with torch.no_grad():
        for pname, p in params.items():
            flat = p.view(-1)
            g = grads[pname].reshape(-1)
            for i in range(flat.numel()):
                old = flat[i].item()
                flat[i] = old + h
                lp = loss_fn().item()
                flat[i] = old - h
                lm = loss_fn().item()
                flat[i] = old
                fd = (lp - lm) / (2 * h)
                err = abs(fd - g[i].item())
                tol = atol + rtol * max(abs(fd), abs(g[i].item()))
                worst = max(worst, err / tol)
                assert err <= tol, (
                    f"{name}: finite difference mismatch for {pname}[{i}]: "
                    f"autograd {g[i].item()!r} vs fd {fd!r}")
    return worst


def assert_close(name, what, a, b, tol=1e-12):
    err = (a - b).abs().max().item()
    assert err <= tol * max(1.0, b.abs().max().item()), f"{name}: {what} differs by {err}"


def assert_away_from_kink(name, what, z, margin=1e-4):
    m = z.abs().min().item()
    assert m > margin, f"{name}: {what} has a value {m} within {margin} of a kink"


# --------------------------------------------------------------------------- manual forwards

def manual_rnn(x, wih, whh, bih, bhh):
    h = torch.zeros(x.shape[0], whh.shape[1])
    outs = []
    for t in range(x.shape[1]):
        h = torch.tanh(x[:, t] @ wih.T + bih + h @ whh.T + bhh)
        outs.append(h)
    return torch.stack(outs, 1)


def manual_lstm(x, wih, whh, bih, bhh):
    B, T, _ = x.shape
    H = whh.shape[1]
    h = torch.zeros(B, H)
    c = torch.zeros(B, H)
    outs = []
    for t in range(T):
        z = x[:, t] @ wih.T + bih + h @ whh.T + bhh
        i, f, g, o = z.split(H, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        outs.append(h)
    return torch.stack(outs, dim=1)


def manual_gru(x, wih, whh, bih, bhh):
    B, T, _ = x.shape
    H = whh.shape[1]
    h = torch.zeros(B, H)
    outs = []
    for t in range(T):
        gi = x[:, t] @ wih.T + bih
        gh = h @ whh.T + bhh
        ir, iz, in_ = gi.split(H, dim=-1)
        hr, hz, hn = gh.split(H, dim=-1)
        r = torch.sigmoid(ir + hr)
        z = torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        h = (1 - z) * n + z * h
        outs.append(h)
    return torch.stack(outs, dim=1)


def manual_mha(x, w_in, b_in, w_out, b_out, heads, causal):
    B, T, D = x.shape
    hd = D // heads
    qkv = x @ w_in.T + b_in
    q, k, v = qkv.split(D, dim=-1)

    def split(t):
        return t.reshape(B, T, heads, hd).transpose(1, 2)  # [B, h, T, hd]

    q, k, v = split(q), split(k), split(v)
    s = q @ k.transpose(-1, -2) / math.sqrt(hd)
    if causal:
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)  # key j > query i is hidden
        s = s.masked_fill(mask, float("-inf"))
    a = torch.softmax(s, dim=-1) @ v  # [B, h, T, hd]
    a = a.transpose(1, 2).reshape(B, T, D)
    return a @ w_out.T + b_out


# --------------------------------------------------------------------------- cases

def case_dense(name):
    l0, l1 = torch.nn.Linear(4, 5), torch.nn.Linear(5, 3)
    params = {"0.weight": l0.weight, "0.bias": l0.bias, "1.weight": l1.weight, "1.bias": l1.bias}
    perturb_(params)
    x = torch.randn(3, 4)
    y = make_target("randn", (3, 3))

    def fwd(x):
        return l1(torch.tanh(l0(x)))

    def manual(x):
        return torch.tanh(x @ l0.weight.T + l0.bias) @ l1.weight.T + l1.bias

    return dict(model="model M: f32[B, 4] -> f32[B, 3] = Chain(Dense(4 => 5, tanh), Dense(5 => 3))",
                loss="mse", loss_fn=l_mse, x=x, target=y, params=params, fwd=fwd, manual=manual)


def case_conv2d(name):
    # Retry deterministically until no pool window has a near-tie and no ReLU input is near 0.
    for attempt in range(100):
        torch.manual_seed(seed_for(name) + attempt)
        conv = torch.nn.Conv2d(2, 3, (3, 3), stride=2, padding=1)
        lin = torch.nn.Linear(3, 3)
        params = {"0.weight": conv.weight, "0.bias": conv.bias,
                  "3.weight": lin.weight, "3.bias": lin.bias}
        perturb_(params)
        x = torch.randn(3, 2, 6, 6)
        with torch.no_grad():
            z = conv(x)  # [B, 3, 3, 3]
            win = F.relu(z)[:, :, 0:2, 0:2].reshape(3, 3, 4)  # the one 2x2 window (floor mode)
            top2 = win.topk(2, dim=-1).values
            ok = (z.abs().min() > 1e-3 and (top2[..., 0] - top2[..., 1]).min() > 1e-3
                  and top2[..., 0].min() > 1e-3)
        if ok:
            break
    else:
        raise AssertionError("conv2d: could not avoid max-pool ties")
    y = make_target("onehot", (3, 3))

    def fwd(x):
        h = F.max_pool2d(F.relu(conv(x)), 2)
        return lin(torch.flatten(h, 1))

    def manual(x):
        # explicit im2col convolution + pooling as fluxc describes them
        B, Cin, H, W = x.shape
        xp = F.pad(x, (1, 1, 1, 1))
        Ho = (H + 2 - 3) // 2 + 1
        out = torch.zeros(B, 3, Ho, Ho)
        for i in range(Ho):
            for j in range(Ho):
                patch = xp[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3].reshape(B, -1)
                out[:, :, i, j] = patch @ conv.weight.reshape(3, -1).T + conv.bias
        out = F.relu(out)
        pooled = out[:, :, 0:2, 0:2].reshape(B, 3, 4).max(-1).values  # [B, 3] == Flatten
        return pooled @ lin.weight.T + lin.bias

    return dict(model=("model M: f32[B, 2, 6, 6] -> f32[B, 3] = Chain(Conv2d((3, 3), 2 => 3, relu, "
                       "Pad = 1, Stride = 2), MaxPool2d((2, 2)), Flatten, Dense(3 => 3))"),
                loss="logitcrossentropy", loss_fn=l_logitcrossentropy, x=x, target=y,
                params=params, fwd=fwd, manual=manual, kink=lambda x: conv(x))


def _recurrent(name, cls, manual_fn, model):
    rnn = cls(3, 4, batch_first=True)
    params = {"cell.weight_ih": rnn.weight_ih_l0, "cell.weight_hh": rnn.weight_hh_l0,
              "cell.bias_ih": rnn.bias_ih_l0, "cell.bias_hh": rnn.bias_hh_l0}
    assert len(list(rnn.parameters())) == 4
    perturb_(params)
    x = torch.randn(2, 5, 3)
    y = make_target("randn", (2, 5, 4))

    def fwd(x):
        return rnn(x)[0]  # zero initial state, every step's h

    def manual(x):
        return manual_fn(x, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)

    return dict(model=model, loss="mse", loss_fn=l_mse, x=x, target=y,
                params=params, fwd=fwd, manual=manual)


def case_lstm(name):
    return _recurrent(name, torch.nn.LSTM, manual_lstm,
                      "model M: f32[B, 5, 3] -> f32[B, 5, 4] = LSTM(3 => 4)")


def case_gru(name):
    return _recurrent(name, torch.nn.GRU, manual_gru,
                      "model M: f32[B, 5, 3] -> f32[B, 5, 4] = GRU(3 => 4)")


def case_batchnorm(name):
    bn = torch.nn.BatchNorm2d(3)  # eps 1e-5, momentum 0.1
    bn.train()
    params = {"weight": bn.weight, "bias": bn.bias}
    perturb_(params)
    x = torch.randn(4, 3, 4, 4) * 1.5 + 0.3
    y = make_target("randn", (4, 3, 4, 4))

    def fwd(x):
        return bn(x)

    def manual(x):
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)  # biased
        xh = (x - mean) / torch.sqrt(var + 1e-5)
        return xh * bn.weight.view(1, 3, 1, 1) + bn.bias.view(1, 3, 1, 1)

    return dict(model="model M: f32[B, 3, 4, 4] -> f32[B, 3, 4, 4] = BatchNorm(3)",
                loss="mse", loss_fn=l_mse, x=x, target=y, params=params, fwd=fwd, manual=manual)


def case_layernorm(name):
    lin, ln = torch.nn.Linear(6, 6), torch.nn.LayerNorm(6)
    params = {"0.weight": lin.weight, "0.bias": lin.bias, "1.weight": ln.weight, "1.bias": ln.bias}
    perturb_(params)
    x = torch.randn(3, 6)
    y = make_target("randn", (3, 6))

    def fwd(x):
        return ln(lin(x))

    def manual(x):
        h = x @ lin.weight.T + lin.bias
        mean = h.mean(-1, keepdim=True)
        var = ((h - mean) ** 2).mean(-1, keepdim=True)
        return (h - mean) / torch.sqrt(var + 1e-5) * ln.weight + ln.bias

    return dict(model="model M: f32[B, 6] -> f32[B, 6] = Chain(Dense(6 => 6), LayerNorm(6))",
                loss="mse", loss_fn=l_mse, x=x, target=y, params=params, fwd=fwd, manual=manual)


def _attention(name, causal):
    mha = torch.nn.MultiheadAttention(8, 2, dropout=0.0, batch_first=True)
    mha.train()
    params = {"in_proj_weight": mha.in_proj_weight, "in_proj_bias": mha.in_proj_bias,
              "out_proj.weight": mha.out_proj.weight, "out_proj.bias": mha.out_proj.bias}
    assert len(list(mha.parameters())) == 4
    perturb_(params)
    x = torch.randn(2, 5, 8)
    y = make_target("randn", (2, 5, 8))
    T = x.shape[1]
    mask = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None  # True = not allowed

    def fwd(x):
        return mha(x, x, x, attn_mask=mask, need_weights=False)[0]

    def manual(x):
        return manual_mha(x, mha.in_proj_weight, mha.in_proj_bias, mha.out_proj.weight,
                          mha.out_proj.bias, 2, causal)

    model = "MultiHeadAttention(8, 2, causal = true)" if causal else "MultiHeadAttention(8, 2)"
    return dict(model=f"model M: f32[B, 5, 8] -> f32[B, 5, 8] = {model}", loss="mse",
                loss_fn=l_mse, x=x, target=y, params=params, fwd=fwd, manual=manual)


def case_attention_causal(name):
    return _attention(name, True)


def case_attention(name):
    return _attention(name, False)


def make_loss_case(suffix, loss_str, fn, kind):
    def case(name):
        lin = torch.nn.Linear(4, 3)
        params = {"0.weight": lin.weight, "0.bias": lin.bias}
        perturb_(params)
        x = torch.randn(3, 4)
        y = make_target(kind, (3, 3))

        def fwd(x):
            return torch.softmax(lin(x), dim=-1)

        def manual(x):
            z = x @ lin.weight.T + lin.bias
            e = torch.exp(z - z.max(-1, keepdim=True).values)
            return e / e.sum(-1, keepdim=True)

        extra = {}
        if suffix in ("hinge_loss", "squared_hinge_loss"):
            extra["kink"] = lambda x: 1 - fwd(x) * y
        if suffix == "huber_loss":
            extra["kink"] = lambda x: (fwd(x) - y).abs() - 0.5
            with torch.no_grad():
                e = (fwd(x) - y).abs()
                assert (e < 0.5).any() and (e > 0.5).any(), "huber: both branches must occur"
        return dict(model="model M: f32[B, 4] -> f32[B, 3] = Chain(Dense(4 => 3), softmax)",
                    loss=loss_str, loss_fn=fn, x=x, target=y, params=params, fwd=fwd,
                    manual=manual, **extra)
    return case


# ---- more layers (the standard-library issue): torch is the reference; `manual` repeats the
# torch forward where fluxc's description and torch's are the same formula.

def case_conv1d(name):
    conv = torch.nn.Conv1d(2, 3, 3, padding=1, stride=2)
    lin = torch.nn.Linear(9, 2)
    params = {"0.weight": conv.weight, "0.bias": conv.bias, "2.weight": lin.weight, "2.bias": lin.bias}
    perturb_(params)
    x = torch.randn(3, 2, 6)
    y = make_target("randn", (3, 2))

    def fwd(x):
        return lin(torch.flatten(torch.tanh(conv(x)), 1))

    return dict(model="model M: f32[B, 2, 6] -> f32[B, 2] = Chain(Conv1d(3, 2 => 3, tanh, Pad = 1, Stride = 2), "
                      "Flatten, Dense(9 => 2))",
                loss="mse", loss_fn=l_mse, x=x, target=y, params=params, fwd=fwd, manual=fwd)


def case_conv_transpose2d(name):
    conv = torch.nn.ConvTranspose2d(2, 3, (2, 2), stride=2)
    params = {"0.weight": conv.weight, "0.bias": conv.bias}
    perturb_(params)
    x = torch.randn(2, 2, 3, 3)
    y = make_target("randn", (2, 3 * 6 * 6))

    def fwd(x):
        return torch.flatten(torch.tanh(conv(x)), 1)

    return dict(model="model M: f32[B, 2, 3, 3] -> f32[B, 108] = Chain(ConvTranspose2d((2, 2), 2 => 3, tanh, Stride = 2), Flatten)",
                loss="mse", loss_fn=l_mse, x=x, target=y, params=params, fwd=fwd, manual=fwd)


def case_depthwise_conv2d(name):
    conv = torch.nn.Conv2d(2, 4, (3, 3), padding=1, groups=2)
    params = {"0.weight": conv.weight, "0.bias": conv.bias}
    perturb_(params)
    x = torch.randn(2, 2, 4, 4)
    y = make_target("randn", (2, 4 * 4 * 4))

    def fwd(x):
        return torch.flatten(torch.tanh(conv(x)), 1)

    return dict(model="model M: f32[B, 2, 4, 4] -> f32[B, 64] = Chain(DepthwiseConv2d((3, 3), 2, tanh, Mult = 2, Pad = 1), Flatten)",
                loss="mse", loss_fn=l_mse, x=x, target=y, params=params, fwd=fwd, manual=fwd)


def case_pooling(name):
    conv = torch.nn.Conv2d(1, 2, (3, 3), padding=1)
    params = {"0.weight": conv.weight, "0.bias": conv.bias}
    perturb_(params)
    x = torch.randn(2, 1, 4, 4)
    y = make_target("randn", (2, 2 * 2 * 2 + 2 + 2))

    def fwd(x):
        z = torch.tanh(conv(x))
        mean = torch.flatten(F.avg_pool2d(z, 2), 1)
        gmean = z.mean(dim=(2, 3))
        gmax = z.amax(dim=(2, 3))
        return torch.cat([mean, gmean, gmax], dim=1)

    model = ("model M: f32[B, 1, 4, 4] -> f32[B, 12] = Chain(Conv2d((3, 3), 1 => 2, tanh, Pad = 1), "
             "Parallel(cat3, Chain(MeanPool2d((2, 2)), Flatten), Chain(GlobalMeanPool, Flatten), Chain(GlobalMaxPool, Flatten)))\n"
             "fn cat3[B, P, Q, R](a: f32[B, P], b: f32[B, Q], c: f32[B, R]) -> f32[B, P + Q + R] { concat((a, b, c), axis = 1) }")
    return dict(model=model, loss="mse", loss_fn=l_mse, x=x, target=y, params=params, fwd=fwd, manual=fwd)


def case_embedding(name):
    emb = torch.nn.Embedding(7, 3)
    lin = torch.nn.Linear(3, 2)
    params = {"0.weight": emb.weight, "1.weight": lin.weight, "1.bias": lin.bias}
    perturb_(params)
    x = torch.tensor([[0, 3, 6, 3], [5, 1, 1, 2]])
    y = make_target("randn", (2, 4, 2))

    def fwd(x):
        return lin(emb(x))

    c = dict(model="model M: i32[B, 4] -> f32[B, 4, 2] = Chain(Embedding(7 => 3), Dense(3 => 2))",
             loss="mse", loss_fn=l_mse, x=x, target=y, params=params, fwd=fwd, manual=fwd)
    return c


def case_groupnorm(name):
    gn = torch.nn.GroupNorm(2, 4)
    params = {"0.weight": gn.weight, "0.bias": gn.bias}
    perturb_(params)
    x = torch.randn(3, 4, 2, 2)
    y = make_target("randn", (3, 16))

    def fwd(x):
        return torch.flatten(gn(x), 1)

    def manual(x):
        B = x.shape[0]
        g = x.reshape(B, 2, -1)
        mean = g.mean(-1, keepdim=True)
        var = g.var(-1, unbiased=False, keepdim=True)
        n = ((g - mean) / torch.sqrt(var + 1e-5)).reshape(B, 4, 2, 2)
        return torch.flatten(n * gn.weight.reshape(1, 4, 1, 1) + gn.bias.reshape(1, 4, 1, 1), 1)

    return dict(model="model M: f32[B, 4, 2, 2] -> f32[B, 16] = Chain(GroupNorm(2, 4), Flatten)",
                loss="mse", loss_fn=l_mse, x=x, target=y, params=params, fwd=fwd, manual=manual)


def case_rnn(name):
    rnn = torch.nn.RNN(3, 4, batch_first=True)
    params = {"cell.weight_ih": rnn.weight_ih_l0, "cell.weight_hh": rnn.weight_hh_l0,
              "cell.bias_ih": rnn.bias_ih_l0, "cell.bias_hh": rnn.bias_hh_l0}
    perturb_(params)
    x = torch.randn(2, 5, 3)
    y = make_target("randn", (2, 5, 4))

    def fwd(x):
        return rnn(x)[0]

    def manual(x):
        return manual_rnn(x, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)

    return dict(model="model M: f32[B, 5, 3] -> f32[B, 5, 4] = RNN(3 => 4)",
                loss="mse", loss_fn=l_mse, x=x, target=y, params=params, fwd=fwd, manual=manual)


def case_bilinear(name):
    bil = torch.nn.Bilinear(3, 3, 2)
    params = {"1.weight": bil.weight, "1.bias": bil.bias}
    perturb_(params)
    x = torch.randn(4, 3)
    y = make_target("randn", (4, 2))

    def fwd(x):
        return bil(x, x)

    def manual(x):
        return torch.einsum("bi,oij,bj->bo", x, bil.weight, x) + bil.bias

    return dict(model=("fn dup[B, N](x: f32[B, N]) -> (f32[B, N], f32[B, N]) { (x, x) }\n"
                       "model M: f32[B, 3] -> f32[B, 2] = Chain(dup, Bilinear(3, 3, 2))"),
                loss="mse", loss_fn=l_mse, x=x, target=y, params=params, fwd=fwd, manual=manual)


def case_skip_connection(name):
    inner, lin = torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)
    params = {"0.0.weight": inner.weight, "0.0.bias": inner.bias, "1.weight": lin.weight, "1.bias": lin.bias}
    perturb_(params)
    x = torch.randn(4, 3)
    y = make_target("randn", (4, 2))

    def fwd(x):
        return lin(torch.tanh(inner(x)) + x)

    def manual(x):
        h = torch.tanh(x @ inner.weight.T + inner.bias) + x
        return h @ lin.weight.T + lin.bias

    return dict(model=("fn add(a: f32, b: f32) -> f32 { a + b }\n"
                       "model M: f32[B, 3] -> f32[B, 2] = "
                       "Chain(SkipConnection(Dense(3 => 3, tanh), add), Dense(3 => 2))"),
                loss="mse", loss_fn=l_mse, x=x, target=y, params=params, fwd=fwd, manual=manual)


def case_recur_cells(name):
    # Recur over each cell, explicitly, summed by a Parallel: RNNCell, LSTMCell and GRUCell.
    rnn, lstm, gru = (torch.nn.RNN(3, 4, batch_first=True), torch.nn.LSTM(3, 4, batch_first=True),
                      torch.nn.GRU(3, 4, batch_first=True))
    params = {}
    for k, m in enumerate([rnn, lstm, gru]):
        for p in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]:
            params[f"{k}.cell.{p}"] = getattr(m, f"{p}_l0")
    perturb_(params)
    x = torch.randn(2, 5, 3)
    y = make_target("randn", (2, 5, 4))

    def fwd(x):
        return rnn(x)[0] + lstm(x)[0] + gru(x)[0]

    def manual(x):
        w = lambda m: (m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0)
        return manual_rnn(x, *w(rnn)) + manual_lstm(x, *w(lstm)) + manual_gru(x, *w(gru))

    return dict(model=("fn add3(a: f32, b: f32, c: f32) -> f32 { a + b + c }\n"
                       "model M: f32[B, 5, 3] -> f32[B, 5, 4] = Parallel(add3, Recur(RNNCell(3 => 4)), "
                       "Recur(LSTMCell(3 => 4)), Recur(GRUCell(3 => 4)))"),
                loss="mse", loss_fn=l_mse, x=x, target=y, params=params, fwd=fwd, manual=manual)


CASES = [
    ("dense", case_dense),
    ("conv2d", case_conv2d),
    ("lstm", case_lstm),
    ("gru", case_gru),
    ("batchnorm", case_batchnorm),
    ("layernorm", case_layernorm),
    ("attention_causal", case_attention_causal),
    ("attention", case_attention),
    ("conv1d", case_conv1d),
    ("conv_transpose2d", case_conv_transpose2d),
    ("depthwise_conv2d", case_depthwise_conv2d),
    ("pooling", case_pooling),
    ("embedding", case_embedding),
    ("groupnorm", case_groupnorm),
    ("rnn", case_rnn),
    ("bilinear", case_bilinear),
    ("skip_connection", case_skip_connection),
    ("recur_cells", case_recur_cells),
] + [(f"loss_{s}", make_loss_case(s, ls, fn, kind)) for s, ls, fn, kind in LOSSES]


def run_case(name, builder):
    torch.manual_seed(seed_for(name))
    c = builder(name)
    params, x, y, fwd, loss_fn = c["params"], c["x"], c["target"], c["fwd"], c["loss_fn"]
    for p in params.values():
        assert p.dtype == torch.float64 and p.requires_grad

    # forward / backward (training mode; all modules above are in training mode by default)
    for p in params.values():
        p.grad = None
    yhat = fwd(x)
    assert yhat.shape == y.shape, (name, yhat.shape, y.shape)
    loss = loss_fn(yhat, y)
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in params.items()}

    with torch.no_grad():
        assert_close(name, "torch forward vs manual forward", yhat, c["manual"](x))
        if "kink" in c:
            assert_away_from_kink(name, "kink argument", c["kink"](x))
        if name.startswith("loss_"):
            assert_away_from_kink(name, "yhat - y", yhat - y)

    worst = finite_difference_check(name, params, lambda: loss_fn(fwd(x), y), grads)

    out = {
        "case": name,
        "model": c["model"],
        "loss": c["loss"],
        "x": tensor_json(x),
        "target": tensor_json(y),
        "params": {k: tensor_json(p) for k, p in params.items()},
        "loss_value": float(loss.item()),
        "grads": {k: tensor_json(g) for k, g in grads.items()},
    }
    for t in [out["x"], out["target"], *out["params"].values(), *out["grads"].values()]:
        assert len(t["data"]) == math.prod(t["shape"])
        assert all(math.isfinite(v) for v in t["data"])
    assert math.isfinite(out["loss_value"])
    assert set(out["params"]) == set(out["grads"])
    return out, worst


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    for name, builder in CASES:
        out, worst = run_case(name, builder)
        path = os.path.join(OUT_DIR, f"{name}.json")
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            json.dump(out, f)
            f.write("\n")
        print(f"{name:32s} loss={out['loss_value']:.12g}  fd worst err/tol={worst:.3f}  "
              f"-> {os.path.relpath(path, REPO)}")
    print(f"torch {torch.__version__}: wrote {len(CASES)} fixtures to {os.path.relpath(OUT_DIR, REPO)}")


if __name__ == "__main__":
    sys.exit(main())
