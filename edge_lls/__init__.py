"""edge-lls: on-device training with the LLS local learning rule.

All parallel work runs in Numba's thread pool; the BLAS libraries are pinned to one
thread when the kernels load (see kernels/blas.py and docs/architecture.md, Threads).
"""
__version__ = "0.1.0"

from .jit_cache import drop_stale_kernel_caches as _drop_stale_kernel_caches  # noqa: E402

_drop_stale_kernel_caches()        # before any cached kernel is loaded (see jit_cache.py)
