"""Plain-NumPy reference kernels: the specification every fast kernel is tested against.

They favour obviousness over speed and compute in float64; nothing in the runtime's
hot path calls them.
"""
