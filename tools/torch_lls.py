"""PyTorch peer of edge-lls for benchmarks: LLS and BP training steps for SmallConv.

Not part of the runtime (PyTorch is never a runtime dependency): tools/bench_train.py
imports it to time PyTorch next to edge-lls on the same model and batch.

The LLS step follows the reference implementation (mapolinario94/LLS-DNN) block by
block: each block (Conv2d with bias + BatchNorm2d + LeakyReLU, or Linear + BatchNorm1d +
LeakyReLU) runs forward on the *detached* output of the previous stage; its local loss is
adaptive_avg_pool2d to p x p, view(N, -1) (channel-major), F.normalize, a matmul with the
fixed basis sign(sin(f_k t)) (f_k = linspace(50, 512, K)), cross_entropy(logits / T);
then loss.backward() and that block's optimizer step. Maxpool 2 after blocks 1 and 2,
adaptive-avgpool 2x2 after block 3, then the linear block (p = 512), then the final
Linear trained with cross-entropy on the detached output of the linear block.

Deviations from the reference that only make PyTorch faster (same arithmetic): the basis
is built once (the reference rebuilds it every call), the local pooling uses avg_pool2d
when p divides the feature map (the same windows as adaptive_avg_pool2d, a faster
kernel), and optimizer states are created up front, not lazily inside the first step. The basis is computed in float64 and rounded
to float32, as docs/LLS.md defines it (the same basis edge-lls uses).

The BP step is ordinary end-to-end backprop of the final cross-entropy through the same
network, with ONE schedule-free AdamW over all parameters.

Optimizer: schedule-free AdamW as the reference's optimizer computes it (bias correction
folded into the learning rate, weight = lr_max^2), written here with torch._foreach_*
ops (`AdamWScheduleFree`). The PyPI package `schedulefree` (>= 1.3) applies the bias
correction to the second moment instead, a slightly different algorithm; it can be
selected with sf_impl="schedulefree" for comparison only.

    python tools/torch_lls.py --check     # one LLS and one BP step vs edge-lls, same weights
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.01          # nn.LeakyReLU() default, as the reference uses
F_MIN, F_MAX = 50.0, 512.0


# ----------------------------------------------------------------------------- basis
def lls_basis(rows: int, dim: int, waveform: str = "square") -> torch.Tensor:
    """B (rows, dim) float32, B[k, t] = sin(f_k t), f_k = linspace(50, 512, rows), in
    float64 then rounded; 'square' takes the sign."""
    freqs = np.linspace(F_MIN, F_MAX, rows) if rows > 1 else np.array([F_MIN])
    basis = np.sin(freqs[:, None] * np.arange(dim, dtype=np.float64)[None, :])
    if waveform == "square":
        basis = np.sign(basis)
    return torch.from_numpy(basis.astype(np.float32))


# ------------------------------------------------------------------------- optimizer
class AdamWScheduleFree(torch.optim.Optimizer):
    """Schedule-free AdamW (Defazio et al. 2024), the reference's variant: no warmup,
    r = 0, weight_lr_power = 2. Per step k:
        lr_k = lr * sqrt(1 - b2^(k+1));  lr_max = max(lr_max, lr_k)
        weight = lr_max^2;  weight_sum += weight;  c = weight / weight_sum
        v = b2 v + (1 - b2) g^2;  d = g / (sqrt(v) + eps) + wd * y
        y = lerp(y, z, c);  y += lr_k (b1 (1 - c) - 1) d;  z -= lr_k d
    Parameters hold y during training. The gradient buffers are overwritten with d.
    (eval()/train() swapping to the averaged weights is not needed for benchmarks.)"""

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        for group in self.param_groups:
            group.update(k=0, lr_max=-1.0, weight_sum=0.0)
            for p in group["params"]:
                st = self.state[p]
                st["z"] = p.detach().clone(memory_format=torch.preserve_format)
                st["v"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            k = group["k"]
            lr = group["lr"] * math.sqrt(1.0 - b2 ** (k + 1))
            group["lr_max"] = lr_max = max(lr, group["lr_max"])
            weight = lr_max ** 2
            group["weight_sum"] += weight
            ckp1 = weight / group["weight_sum"] if group["weight_sum"] else 0.0
            ps = [p for p in group["params"] if p.grad is not None]
            if ps:
                ys = [p.detach() for p in ps]
                gs = [p.grad for p in ps]
                zs = [self.state[p]["z"] for p in ps]
                vs = [self.state[p]["v"] for p in ps]
                torch._foreach_mul_(vs, b2)
                torch._foreach_addcmul_(vs, gs, gs, value=1.0 - b2)
                denom = torch._foreach_sqrt(vs)
                torch._foreach_add_(denom, group["eps"])
                torch._foreach_div_(gs, denom)                 # gs now hold d
                if group["weight_decay"]:
                    torch._foreach_add_(gs, ys, alpha=group["weight_decay"])
                torch._foreach_lerp_(ys, zs, ckp1)
                torch._foreach_add_(ys, gs, alpha=lr * (b1 * (1.0 - ckp1) - 1.0))
                torch._foreach_add_(zs, gs, alpha=-lr)
            group["k"] = k + 1


def make_optimizer(params, lr, weight_decay=0.0, sf_impl="own"):
    if sf_impl == "own":
        return AdamWScheduleFree(params, lr=lr, weight_decay=weight_decay)
    if sf_impl == "schedulefree":
        import schedulefree
        opt = schedulefree.AdamWScheduleFree(params, lr=lr, weight_decay=weight_decay)
        opt.train()
        return opt
    raise ValueError(f"sf_impl must be 'own' or 'schedulefree', got {sf_impl!r}")


# ----------------------------------------------------------------------------- model
class ConvBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.leaky_relu(self.bn(self.conv(x)), LEAKY_SLOPE)


class LinearBlock(nn.Module):
    def __init__(self, fin, fout):
        super().__init__()
        self.linear = nn.Linear(fin, fout, bias=True)
        self.bn = nn.BatchNorm1d(fout)

    def forward(self, x):
        return F.leaky_relu(self.bn(self.linear(x)), LEAKY_SLOPE)


class SmallConv(nn.Module):
    """conv 32 [4] -> maxpool -> conv 64 [2] -> maxpool -> conv 128 [2] -> avgpool 2x2
    -> linear 512 [512] -> linear K.   [p] = LLS pool size of the block."""

    def __init__(self, num_classes=10, in_channels=1, channels=(32, 64, 128), hidden=512):
        super().__init__()
        c1, c2, c3 = channels
        self.blocks = nn.ModuleList([ConvBlock(in_channels, c1), ConvBlock(c1, c2),
                                     ConvBlock(c2, c3), LinearBlock(c3 * 4, hidden)])
        self.pool_sizes = [4, 2, 2, hidden]
        self.classifier = nn.Linear(hidden, num_classes)
        self.num_classes = num_classes

    @staticmethod
    def post(i, h):
        """What follows block i outside it (maxpool / avgpool + flatten / nothing)."""
        if i < 2:
            return F.max_pool2d(h, 2, 2)
        if i == 2:
            return F.adaptive_avg_pool2d(h, (2, 2)).reshape(h.shape[0], -1)
        return h

    def forward(self, x):
        for i, block in enumerate(self.blocks):
            x = self.post(i, block(x))
        return self.classifier(x)


def lls_loss(out, labels, pool, basis, temperature):
    n = out.shape[0]
    if out.dim() == 4:
        h, w = out.shape[2:]
        if h % pool == 0 and w % pool == 0:        # the same windows, a faster kernel
            latents = F.avg_pool2d(out, (h // pool, w // pool)).reshape(n, -1)
        else:
            latents = F.adaptive_avg_pool2d(out, (pool, pool)).reshape(n, -1)
    else:
        latents = F.adaptive_avg_pool1d(out.unsqueeze(1), pool).reshape(n, -1) \
            if pool != out.shape[1] else out
    latents = F.normalize(latents, dim=1)
    return F.cross_entropy(torch.matmul(latents, basis.t()) / temperature, labels)


# --------------------------------------------------------------------------- trainers
class _Base:
    def __init__(self, model: SmallConv, channels_last: bool):
        self.model = model.train()
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    def prepare(self, x_nhwc: np.ndarray, labels: np.ndarray):
        """NHWC float32 numpy -> an NCHW tensor (channels-last storage when selected)."""
        x = torch.from_numpy(np.ascontiguousarray(x_nhwc, dtype=np.float32)).permute(0, 3, 1, 2)
        x = x.contiguous(memory_format=torch.channels_last if self.channels_last
                         else torch.contiguous_format)
        return x, torch.from_numpy(np.asarray(labels, dtype=np.int64))


class LLSTrainer(_Base):
    """One LLS step = one pass over the blocks, each trained by its own local loss and
    its own optimizer, as the reference does."""

    def __init__(self, model: SmallConv, lr=5e-3, temperature=0.5, waveform="square",
                 weight_decay=0.0, channels_last=False, sf_impl="own"):
        super().__init__(model, channels_last)
        self.temperature = temperature
        self.optimizers = [make_optimizer(b.parameters(), lr, weight_decay, sf_impl)
                           for b in model.blocks]
        self.optimizers.append(make_optimizer(model.classifier.parameters(), lr, weight_decay, sf_impl))
        shapes = [model.blocks[0].conv.out_channels, model.blocks[1].conv.out_channels,
                  model.blocks[2].conv.out_channels, 1]
        self.bases = [lls_basis(model.num_classes, c * p * p if i < 3 else p, waveform)
                      for i, (c, p) in enumerate(zip(shapes, model.pool_sizes))]

    def step(self, x, labels):
        """x NCHW tensor, labels int64 tensor. Returns (classifier loss, correct, block losses)."""
        m = self.model
        h, block_losses = x, []
        for i, block in enumerate(m.blocks):
            out = block(h.detach())
            loss = lls_loss(out, labels, m.pool_sizes[i], self.bases[i], self.temperature)
            opt = self.optimizers[i]
            opt.zero_grad()
            loss.backward()
            opt.step()
            block_losses.append(loss.item())
            h = m.post(i, out.detach())
        logits = m.classifier(h)
        loss = F.cross_entropy(logits, labels)
        opt = self.optimizers[-1]
        opt.zero_grad()
        loss.backward()
        opt.step()
        correct = int((logits.detach().argmax(1) == labels).sum())
        return loss.item(), correct, block_losses


class BPTrainer(_Base):
    """End-to-end backprop of the final cross-entropy, one optimizer for everything."""

    def __init__(self, model: SmallConv, lr=5e-3, weight_decay=0.0, channels_last=False, sf_impl="own"):
        super().__init__(model, channels_last)
        self.optimizer = make_optimizer(model.parameters(), lr, weight_decay, sf_impl)

    def step(self, x, labels):
        logits = self.model(x)
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        correct = int((logits.detach().argmax(1) == labels).sum())
        return loss.item(), correct, []


def make_trainer(rule: str, num_classes=10, in_channels=1, seed=0, **options):
    torch.manual_seed(seed)
    model = SmallConv(num_classes, in_channels)
    if rule == "lls":
        return LLSTrainer(model, **options)
    if rule == "bp":
        options.pop("temperature", None)
        options.pop("waveform", None)
        return BPTrainer(model, **options)
    raise ValueError(f"rule must be 'lls' or 'bp', got {rule!r}")


# ------------------------------------------------------------------ edge-lls weights
def load_edge_lls(tmodel: SmallConv, emodel) -> None:
    """Copy an edge-lls SmallConv's weights (conv OHWI, NHWC flatten) into tmodel.
    Call it before building a trainer (the optimizers copy the weights at construction)."""
    with torch.no_grad():
        for tb, eb in zip(tmodel.blocks, emodel.blocks):
            vals = {p.name.split(".", 1)[1]: p.value for p in eb.params}
            if isinstance(tb, ConvBlock):
                tb.conv.weight.copy_(torch.from_numpy(vals["conv.w"].transpose(0, 3, 1, 2).copy()))
                tb.conv.bias.copy_(torch.from_numpy(vals["conv.b"]))
            else:
                w = vals["fc.w"]                       # columns in (i, j, c) order
                c = tmodel.blocks[2].conv.out_channels
                w = w.reshape(w.shape[0], 2, 2, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
                tb.linear.weight.copy_(torch.from_numpy(w.copy()))
                tb.linear.bias.copy_(torch.from_numpy(vals["fc.b"]))
            tb.bn.weight.copy_(torch.from_numpy(vals["bn.gamma"]))
            tb.bn.bias.copy_(torch.from_numpy(vals["bn.beta"]))
        cw = {p.name.split(".", 1)[1]: p.value for p in emodel.classifier.params}
        tmodel.classifier.weight.copy_(torch.from_numpy(cw["w"]))
        tmodel.classifier.bias.copy_(torch.from_numpy(cw["b"]))


def _check(steps=3):
    """Same weights, same batches: PyTorch and edge-lls losses over a few steps."""
    from edge_lls.models import build_model
    from edge_lls.trainer import Trainer
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((64, 28, 28, 1)).astype(np.float32),
                rng.integers(0, 10, 64)) for _ in range(steps)]
    ok = True
    for rule in ("lls", "bp"):
        em = build_model("smallconv", num_classes=10, input_shape=(28, 28, 1), seed=0)
        et = Trainer(em, rule=rule, optimizer="adamw-sf", lr=5e-3, temperature=0.5)
        tm = SmallConv(10, 1)
        load_edge_lls(tm, em)          # before the optimizers copy the weights into z
        tt = LLSTrainer(tm, lr=5e-3, temperature=0.5) if rule == "lls" else BPTrainer(tm, lr=5e-3)
        for s, (x, y) in enumerate(batches):
            es = et.step(x, y)
            tl, tc, tbl = tt.step(*tt.prepare(x, y))
            e = np.array([es.loss, *es.block_losses])
            t = np.array([tl, *tbl])
            err = float(np.max(np.abs(e - t)))
            # Step 0 must agree to rounding. After it, agreement is looser by nature: a
            # conv/linear bias before batch norm has zero true gradient, and Adam turns its
            # rounding noise into a full +-lr step, differently in each implementation.
            ok &= err < (1e-5 if s == 0 else 1e-2)
            print(f"{rule} step {s}: edge-lls {np.round(e, 5).tolist()}  torch {np.round(t, 5).tolist()}  "
                  f"max |diff| {err:.2e}")
    print("OK" if ok else "MISMATCH")
    return ok


if __name__ == "__main__":
    import sys
    if "--check" in sys.argv:
        sys.exit(0 if _check() else 1)
    print(__doc__)
