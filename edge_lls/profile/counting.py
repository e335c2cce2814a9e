"""Operation counts of a training step, per op and per head (conventions: edge_lls.profile)."""
from __future__ import annotations

import numpy as np

from ..kernels.geometry import adaptive_taps
from ..nn.layers import AdaptiveAvgPool2d, Conv2d, Dense, MaxPool2d

PRECISION_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
BN_FORWARD_OPS = 3          # per element, training mode: sum, squared deviation, scale-shift
BN_EVAL_OPS = 1             # per element, inference: scale-shift
ACT_OPS = 1                 # per element
BN_BACKWARD_OPS = 6         # per element: dgamma, dbeta, activation gradient, input gradient (3)
BN_INPUT_GRAD_OPS = 3       # of which the input gradient
OPTIMIZER_OPS = {"sgd": 2, "sgd-momentum": 4, "adamw": 10, "adamw-sf": 10}


# --------------------------------------------------------------------------- counting
def _prod(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def op_macs(op, in_shape) -> int:
    """Forward MACs of a Conv2d (any stride, padding, groups: N·OH·OW·Cout·KH·KW·Cin/groups)
    or a Dense (N·in·out) on an input of in_shape (batch first)."""
    if isinstance(op, (Conv2d, Dense)):
        return int(op.macs(tuple(in_shape)))
    raise TypeError(f"no MAC count for {type(op).__name__}")


def _window_taps(size: int, kernel: int, stride: int, pad_before: int, out: int) -> int:
    """Input positions, summed over the outputs, that fall inside the input (padding excluded)."""
    total = 0
    for o in range(out):
        lo = o * stride - pad_before
        total += max(0, min(lo + kernel, size) - max(lo, 0))
    return total


def pool_macs(op, in_shape) -> int:
    """Forward ops of a pooling layer: one add (average) or compare (max) per input tap in
    a window, padding taps excluded, summed over every output element."""
    n, h, w, c = in_shape
    if isinstance(op, AdaptiveAvgPool2d):
        p, q = op.size
        return n * c * adaptive_taps(h, p) * adaptive_taps(w, q)
    win = op.window(in_shape)
    rows = _window_taps(h, win.kh, win.sh, win.pad_top, win.out_h)
    cols = _window_taps(w, win.kw, win.sw, win.pad_left, win.out_w)
    return n * c * rows * cols


def pool_backward_macs(op, in_shape) -> int:
    """Gradient of a pooling layer: max pooling scatters one add per output element
    (through the argmax); average pooling spreads each output over its taps again."""
    if isinstance(op, MaxPool2d):
        return _prod(op.out_shape(in_shape))
    return pool_macs(op, in_shape)


def adaptive_pool1d_macs(n: int, features: int, size: int) -> int:
    return n * adaptive_taps(features, size)


def batchnorm_ops(shape, act: str = "leaky_relu", training: bool = True) -> int:
    per = (BN_FORWARD_OPS if training else BN_EVAL_OPS) + (ACT_OPS if act != "none" else 0)
    return per * _prod(shape)


def batchnorm_backward_ops(shape) -> int:
    return BN_BACKWARD_OPS * _prod(shape)


def _bias_adds(op, out_shape) -> int:
    return _prod(out_shape) if op.b is not None else 0


def head_signal_macs(head, batch: int, num_classes: int) -> int:
    """MACs of one local head (ProjectionHead), forward and backward, for a batch."""
    n, d, k = batch, head.dim, num_classes
    r = head.basis.shape[0]
    total = 0
    if not head._identity_pool:
        if len(head.a_shape) == 3:
            taps = pool_macs(AdaptiveAvgPool2d(head.pool), (n, *head.a_shape))
        else:
            taps = adaptive_pool1d_macs(n, head.a_shape[0], head.pool)
        total += 2 * taps                                   # pool, and its gradient
    if head.normalize:
        total += 2 * n * d + 3 * n * d                      # norm + divide; radial, subtract, divide
    total += 2 * n * d * r                                  # z B^T, and dz = ds B
    if head.modulation_kind == "m":
        total += n * k + 2 * n * k                          # y = s*m; dm, ds
    elif head.modulation_kind == "mxm":
        total += n * r * k + 2 * n * r * k                  # y = s M; dM, ds
    total += 2 * n * k                                      # softmax CE, and its gradient
    if head.learned is not None:
        hidden = head.learned.value.shape[1]
        total += n * r * d + 2 * r * hidden                 # dB; column pooling of B and its grad
    return total


def optimizer_ops_per_element(optimizer) -> int:
    kind = optimizer.kind
    if kind == "sgd" and getattr(optimizer, "momentum", 0):
        kind = "sgd-momentum"
    return OPTIMIZER_OPS[kind]

