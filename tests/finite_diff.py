"""Central finite differences in float64, shared by the gradient tests."""
import numpy as np

FD_EPS = 1e-6


def fd_grad(f, x, eps=FD_EPS):
    """d f / d x for a scalar float64 function f, by central differences on every element."""
    x = np.array(x, dtype=np.float64)
    g = np.empty_like(x)
    xf, gf = x.reshape(-1), g.reshape(-1)
    for i in range(xf.size):
        old = xf[i]
        xf[i] = old + eps
        fp = f(x)
        xf[i] = old - eps
        fm = f(x)
        xf[i] = old
        gf[i] = (fp - fm) / (2 * eps)
    return g
