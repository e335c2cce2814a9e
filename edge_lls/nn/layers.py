"""Layers: each holds its parameters and has its forward and weight gradient side by side.

Activations are NHWC, stored as float32 or, in mixed-precision training, float16 (every
kernel widens on load and computes in float32; see kernels/half.py). Weights, gradients
and optimizer state are float32. A layer never allocates in forward/backward: callers
pass views from the step's Arena (see arena.py).
"""
from __future__ import annotations

import numba
import numpy as np

from ..kernels import conv as kconv
from ..kernels import dense as kdense
from ..kernels import norm as knorm
from ..kernels import pool as kpool
from ..kernels.activation import ACTIVATIONS, LEAKY_SLOPE
from ..kernels.geometry import resolve_window
from .param import Param, uniform_fan_in


class Conv2d:
    """x (N,H,W,Cin) -> (N,OH,OW,Cout); w (Cout,KH,KW,Cin/groups). groups == Cin is depthwise."""

    def __init__(self, name, cin, cout, kernel=3, stride=1, padding="same", groups=1, bias=True, rng=None):
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        if cin % groups or cout % groups:
            raise ValueError(f"{name}: channels {cin}->{cout} not divisible by groups={groups}")
        self.name, self.cin, self.cout, self.groups = name, cin, cout, groups
        self.kernel, self.stride, self.padding = (kh, kw), stride, padding
        fan_in = (cin // groups) * kh * kw
        rng = rng or np.random.default_rng(0)
        self.w = Param(f"{name}.w", uniform_fan_in(rng, (cout, kh, kw, cin // groups), fan_in))
        self.b = Param(f"{name}.b", uniform_fan_in(rng, (cout,), fan_in)) if bias else None
        self._db_part = None   # (threads, Cout) float64 bias-gradient partials (pooled backward)
        self._works = None     # (threads, 4, Cout) float32 per-thread rows of the pooled backward

    @property
    def params(self):
        return [self.w] + ([self.b] if self.b is not None else [])

    def window(self, in_shape):
        return resolve_window(in_shape[1:3], self.kernel, self.stride, self.padding)

    def out_shape(self, in_shape):
        win = self.window(in_shape)
        return (in_shape[0], win.out_h, win.out_w, self.cout)

    def scratch_floats(self, in_shape, input_grad=False, half=False):
        return kconv.conv2d_scratch_floats(in_shape, self.w.value.shape, self.window(in_shape), self.groups,
                                           input_grad, half)

    def forward(self, x, out, scratch):
        kconv.conv2d_f32(x, self.w.value, None if self.b is None else self.b.value, out,
                         self.window(x.shape), self.groups, scratch)

    def grad_weight(self, x, dy, scratch):
        kconv.conv2d_grad_weight_f32(x, dy, self.w.grad, None if self.b is None else self.b.grad,
                                     self.window(x.shape), self.groups, scratch)

    def grad_input(self, dy, dx, scratch):
        kconv.conv2d_grad_input_f32(dy, self.w.value, dx, self.window(dx.shape), self.groups, scratch)

    # Weight gradient when the unit's output gradient arrives pooled (Block.backward_pooled).
    def is_pointwise(self):
        return self.groups == 1 and self.kernel == (1, 1) and self.stride in (1, (1, 1)) \
            and not resolve_window((1, 1), 1, 1, self.padding).padded

    def pooled_scratch(self, in_shape, half=False):
        """(scratch floats, dz floats) of grad_weight_pooled for this input shape."""
        return kconv.pooled_bn_scratch(in_shape, self.w.value.shape, self.window(in_shape), half)

    def grad_weight_pooled(self, x, dv_area, z, bn, scratch, dz_scratch, gprev=None):
        if self._db_part is None:
            self._db_part = np.zeros((numba.config.NUMBA_NUM_THREADS, self.cout), np.float64)
            self._works = np.zeros((numba.config.NUMBA_NUM_THREADS, 4, self.cout), np.float32)
        kconv.conv2d_bn_grad_weight_pooled_f32(
            x, self.w.value, dv_area, z, bn, self.w.grad, None if self.b is None else self.b.grad,
            self.window(x.shape), scratch, dz_scratch, self._db_part, gprev, self._works)

    def macs(self, in_shape):
        n, oh, ow, _ = self.out_shape(in_shape)
        return n * oh * ow * self.cout * self.kernel[0] * self.kernel[1] * (self.cin // self.groups)


class Dense:
    """x (N, ...) flattened in NHWC order -> (N, out); w (out, in)."""

    def __init__(self, name, fin, fout, bias=True, rng=None):
        rng = rng or np.random.default_rng(0)
        self.name, self.fin, self.fout = name, fin, fout
        self.w = Param(f"{name}.w", uniform_fan_in(rng, (fout, fin), fin))
        self.b = Param(f"{name}.b", uniform_fan_in(rng, (fout,), fin)) if bias else None

    @property
    def params(self):
        return [self.w] + ([self.b] if self.b is not None else [])

    def out_shape(self, in_shape):
        return (in_shape[0], self.fout)

    def scratch_floats(self, in_shape, input_grad=False, half=False):
        return kdense.dense_scratch_floats(in_shape[0], self.fin, self.fout, half)

    @staticmethod
    def _flat(a):
        return a.reshape(a.shape[0], -1)

    def forward(self, x, out, scratch=None):
        kdense.dense_f32(self._flat(x), self.w.value, None if self.b is None else self.b.value, out, scratch)

    def grad_weight(self, x, dy, scratch=None):
        kdense.dense_grad_weight_f32(self._flat(x), dy, self.w.grad, None if self.b is None else self.b.grad, scratch)

    def grad_input(self, dy, dx, scratch=None):
        kdense.dense_grad_input_f32(dy, self.w.value, self._flat(dx))

    def macs(self, in_shape):
        return in_shape[0] * self.fin * self.fout


class BatchNorm:
    """Per-channel batch norm over all axes but the last, with a fused activation."""

    def __init__(self, name, channels, act="leaky_relu", eps=1e-5, momentum=0.1):
        self.name, self.channels, self.eps, self.momentum = name, channels, eps, momentum
        self.act_name, self.act = act, ACTIVATIONS[act]
        self.gamma = Param(f"{name}.gamma", np.ones(channels, np.float32))
        self.beta = Param(f"{name}.beta", np.zeros(channels, np.float32))
        self.running_mean = np.zeros(channels, np.float32)
        self.running_var = np.ones(channels, np.float32)
        # Batch statistics of the last training forward, read by backward: (C,) each.
        self.mean = np.zeros(channels, np.float32)
        self.inv_std = np.ones(channels, np.float32)
        self._scratch = np.empty((3, channels), np.float32)

    @property
    def params(self):
        return [self.gamma, self.beta]

    # The affine map of the last training forward, y = act(x * scale + shift): (C,) each.
    @property
    def scale(self):
        return self._scratch[1]

    @property
    def shift(self):
        return self._scratch[2]

    def stats(self, x):
        """Training statistics of x only; the output is applied later, on the fly."""
        knorm.batchnorm_stats_f32(x, self.gamma.value, self.beta.value, self.running_mean, self.running_var,
                                  self.mean, self.inv_std, self._scratch, self.eps, self.momentum)

    def forward(self, x, y, training):
        if training:
            knorm.batchnorm_train_f32(x, self.gamma.value, self.beta.value, self.running_mean,
                                      self.running_var, self.mean, self.inv_std, y, self.eps,
                                      self.momentum, self.act, LEAKY_SLOPE, self._scratch)
        else:
            knorm.batchnorm_eval_f32(x, self.gamma.value, self.beta.value, self.running_mean,
                                     self.running_var, y, self.eps, self.act, LEAKY_SLOPE, self._scratch)

    def backward(self, dy, y, x, dx):
        """dy: dL/d(activation output) -> dx: dL/d(norm input) (may alias dy)."""
        knorm.batchnorm_grad_f32(dy, y, x, self.mean, self.inv_std, self.gamma.value,
                                 self.gamma.grad, self.beta.grad, dx, self.act, LEAKY_SLOPE)


# ------------------------------------------------------------------ pooling after a block
class MaxPool2d:
    def __init__(self, kernel=2, stride=None, padding=0):
        self.kernel, self.stride, self.padding = kernel, stride or kernel, padding

    def window(self, in_shape):
        return resolve_window(in_shape[1:3], self.kernel, self.stride, self.padding)

    def out_shape(self, in_shape):
        win = self.window(in_shape)
        return (in_shape[0], win.out_h, win.out_w, in_shape[3])

    needs_argmax = True
    fuses_bn_act = True

    def forward(self, x, out, argmax=None, bn_act=None):
        kpool.max_pool2d_f32(x, out, self.window(x.shape), argmax, bn_act)

    def backward(self, dy, dx, argmax):
        kpool.max_pool2d_grad_f32(dy, argmax, dx)

    def spec(self):
        return {"type": "maxpool", "kernel": self.kernel, "stride": self.stride, "padding": self.padding}


class AvgPool2d:
    def __init__(self, kernel=2, stride=None, padding=0, count_include_pad=False):
        self.kernel, self.stride, self.padding = kernel, stride or kernel, padding
        self.count_include_pad = count_include_pad

    def window(self, in_shape):
        return resolve_window(in_shape[1:3], self.kernel, self.stride, self.padding)

    def out_shape(self, in_shape):
        win = self.window(in_shape)
        return (in_shape[0], win.out_h, win.out_w, in_shape[3])

    needs_argmax = False
    fuses_bn_act = False

    def forward(self, x, out, argmax=None):
        kpool.avg_pool2d_f32(x, out, self.window(x.shape), self.count_include_pad)

    def backward(self, dy, dx, argmax=None):
        kpool.avg_pool2d_grad_f32(dy, dx, self.window(dx.shape), self.count_include_pad)

    def spec(self):
        return {"type": "avgpool", "kernel": self.kernel, "stride": self.stride, "padding": self.padding}


class AdaptiveAvgPool2d:
    def __init__(self, size):
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def out_shape(self, in_shape):
        return (in_shape[0], *self.size, in_shape[3])

    needs_argmax = False
    fuses_bn_act = True

    def forward(self, x, out, argmax=None, bn_act=None):
        kpool.adaptive_avg_pool2d_f32(x, out, bn_act)

    def backward(self, dy, dx, argmax=None):
        kpool.adaptive_avg_pool2d_grad_f32(dy, dx)

    def spec(self):
        return {"type": "adaptive_avgpool", "size": list(self.size)}
