"""Thread control: one call sets both thread pools a training step uses.

Every parallel loop of a step, GEMMs included, runs in Numba's thread pool: the
convolution GEMMs are called from inside Numba's threads (kernels/blas.py). So
set_threads(n) sets Numba's pool to n and keeps every BLAS library at one thread.
"""
from __future__ import annotations

import os

from .errors import ConfigError

_blas_limits = None   # the active threadpoolctl limiter; kept so the limit stays in force


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, e.g. under taskset or a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                     # macOS, Windows
        return os.cpu_count() or 1


def max_threads() -> int:
    """The most threads Numba can use in this process (fixed when Numba starts)."""
    import numba
    return int(numba.config.NUMBA_NUM_THREADS)


def set_threads(n: int) -> int:
    """Use n threads for Numba kernels and BLAS. Returns the count in force, which is n
    capped at what Numba started with (the host's cores unless NUMBA_NUM_THREADS says)."""
    global _blas_limits
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"threads must be an integer >= 1, got {n!r}")
    import numba
    from threadpoolctl import ThreadpoolController

    from .kernels import blas

    assert blas.SLOTS  # importing it loads SciPy's BLAS, so the pin below finds it

    effective = min(n, max_threads())
    numba.set_num_threads(effective)
    if _blas_limits is None:
        _blas_limits = ThreadpoolController().limit(limits=1, user_api="blas")
    return effective


def get_threads() -> int:
    import numba
    return int(numba.get_num_threads())
