"""Pointwise activations, float32 math, any shape: forward, and gradient from the OUTPUT.

The gradient is taken from the activation's output y, not its input: for ReLU, ReLU6
and LeakyReLU (slope > 0) the sign pattern of y equals that of x, so a block need not
keep its pre-activation tensor. The codes are shared with batch norm's fused activation.

Storage: activations (x, out, y) are float32 or float16, in any mix, passed to the
kernels as half.bits views and loaded/stored with half.ld/st (a float16 output is the
float32 output rounded to half); gradients (dy, dx) are float32.
"""
import numpy as np
from numba import njit, prange

from .half import bits, ld, st

ACT_NONE, ACT_RELU, ACT_RELU6, ACT_LEAKY = 0, 1, 2, 3
ACTIVATIONS = {"none": ACT_NONE, "relu": ACT_RELU, "relu6": ACT_RELU6, "leaky_relu": ACT_LEAKY}
LEAKY_SLOPE = 0.01  # nn.LeakyReLU default in the LLS reference models; applied in float32


@njit(inline="always")
def apply_act(v, act, slope):
    if act == ACT_RELU:
        return v if v > 0.0 else 0.0
    if act == ACT_RELU6:
        return 0.0 if v < 0.0 else (6.0 if v > 6.0 else v)
    if act == ACT_LEAKY:
        return v if v > 0.0 else v * slope
    return v


@njit(inline="always")
def act_grad(g, y, act, slope):
    """dL/dx from dL/dy = g and the output y (PyTorch's subgradients at the kinks)."""
    if act == ACT_RELU:
        return g if y > 0.0 else 0.0
    if act == ACT_RELU6:
        return g if 0.0 < y < 6.0 else 0.0
    if act == ACT_LEAKY:
        return g if y > 0.0 else g * slope
    return g


@njit(parallel=True, cache=True)
def _act_forward(x, out, act, slope):
    for i in prange(x.size):
        out[i] = st(out, apply_act(ld(x[i]), act, slope))


@njit(parallel=True, cache=True)
def _act_backward(dy, y, dx, act, slope):
    for i in prange(dy.size):
        dx[i] = act_grad(dy[i], ld(y[i]), act, slope)


def _flat(a):
    return a.reshape(-1)


def activation_f32(x, out, act: int, slope: float = LEAKY_SLOPE):
    """out = act(x); out may be x (in place). Contiguous arrays of equal shape, each
    float32 or float16 storage."""
    _act_forward(bits(_flat(x)), bits(_flat(out)), act, np.float32(slope))
    return out


def activation_grad_f32(dy, y, dx, act: int, slope: float = LEAKY_SLOPE):
    """dx = dL/dx given dL/dy and the output y; dx may be dy (in place).
    dy, dx float32; y float32 or float16 storage; contiguous, equal shapes."""
    _act_backward(_flat(dy), bits(_flat(y)), _flat(dx), act, np.float32(slope))
    return dx


def relu_f32(x, out):
    return activation_f32(x, out, ACT_RELU)


def relu6_f32(x, out):
    return activation_f32(x, out, ACT_RELU6)


def leaky_relu_f32(x, out, slope: float = LEAKY_SLOPE):
    return activation_f32(x, out, ACT_LEAKY, slope)


def relu_grad_f32(dy, y, dx):
    return activation_grad_f32(dy, y, dx, ACT_RELU)


def relu6_grad_f32(dy, y, dx):
    return activation_grad_f32(dy, y, dx, ACT_RELU6)


def leaky_relu_grad_f32(dy, y, dx, slope: float = LEAKY_SLOPE):
    return activation_grad_f32(dy, y, dx, ACT_LEAKY, slope)
