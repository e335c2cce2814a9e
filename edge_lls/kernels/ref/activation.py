"""Reference activations; gradients from the output y (see kernels/activation.py)."""
import numpy as np


def leaky_relu(x, slope=0.01):
    return np.where(x > 0, x, x * np.float32(slope)).astype(np.float32)


def relu(x):
    return np.maximum(x, 0).astype(np.float32)


def relu6(x):
    return np.clip(x, 0, 6).astype(np.float32)


def leaky_relu_grad(dy, y, slope=0.01):
    return np.where(y > 0, dy, dy * np.float32(slope)).astype(np.float32)


def relu_grad(dy, y):
    return np.where(y > 0, dy, 0).astype(np.float32)


def relu6_grad(dy, y):
    return np.where((y > 0) & (y < 6), dy, 0).astype(np.float32)
