"""Reference batch norm (PyTorch semantics) over all axes but the last."""
import numpy as np


def batchnorm_train(x, gamma, beta, running_mean, running_var, eps=1e-5, momentum=0.1):
    """Returns (y, mean, inv_std, new_running_mean, new_running_var)."""
    x2 = x.reshape(-1, x.shape[-1]).astype(np.float64)
    m = x2.shape[0]
    mean = x2.mean(0)
    var = ((x2 - mean) ** 2).mean(0)
    inv_std = 1.0 / np.sqrt(var + eps)
    y = (x2 - mean) * inv_std * gamma + beta
    rm = (1 - momentum) * running_mean + momentum * mean
    rv = (1 - momentum) * running_var + momentum * var * m / (m - 1)
    f = np.float32
    return y.reshape(x.shape).astype(f), mean.astype(f), inv_std.astype(f), rm.astype(f), rv.astype(f)


def batchnorm_eval(x, gamma, beta, running_mean, running_var, eps=1e-5):
    y = (x.astype(np.float64) - running_mean) / np.sqrt(running_var.astype(np.float64) + eps) * gamma + beta
    return y.astype(np.float32)


def batchnorm_grad(dy, x, gamma, eps=1e-5):
    """Gradients of training-mode batch norm. Returns (dx, dgamma, dbeta)."""
    shape = x.shape
    x2 = x.reshape(-1, shape[-1]).astype(np.float64)
    g2 = dy.reshape(-1, shape[-1]).astype(np.float64)
    m = x2.shape[0]
    mean = x2.mean(0)
    inv_std = 1.0 / np.sqrt(((x2 - mean) ** 2).mean(0) + eps)
    xhat = (x2 - mean) * inv_std
    dbeta = g2.sum(0)
    dgamma = (g2 * xhat).sum(0)
    dx = gamma * inv_std * (g2 - dbeta / m - xhat * dgamma / m)
    f = np.float32
    return dx.reshape(shape).astype(f), dgamma.astype(f), dbeta.astype(f)
