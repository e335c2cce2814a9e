"""edge-lls: on-device training with the LLS local learning rule."""
import os as _os

# Numba's OpenMP workers spin after each parallel loop by default, stealing the cores
# OpenBLAS needs for the GEMM that follows (measured 3-5x slower convolutions on 2
# cores). Passive waiting must be set before libgomp loads; a user's value wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
