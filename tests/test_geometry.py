"""kernels/geometry.py, the one place window geometry is computed, against brute force."""
import numba
import pytest

from edge_lls.kernels.geometry import (adaptive_bounds, adaptive_bounds_jit, adaptive_taps, resolve_window,
                                       same_padding, tflite_padding, uniform_adaptive_pool, valid_output)


@pytest.mark.parametrize("dilation", [1, 2])
def test_same_and_valid_are_tensorflows_rules(dilation):
    for size in range(1, 20):
        for kernel in range(1, 6):
            for stride in range(1, 4):
                effective = (kernel - 1) * dilation + 1
                out, before, after = same_padding(size, kernel, stride, dilation)
                assert out == -(-size // stride)
                # the padded input holds exactly the windows of `out` outputs, the odd pixel after
                assert (size + before + after - effective) // stride + 1 == out or before + after == 0
                assert after - before in (0, 1)
                if size >= effective:
                    assert valid_output(size, kernel, stride, dilation) == (size - effective) // stride + 1


def test_resolve_window_same_is_tflite_same():
    for size in range(3, 12):
        for kernel, stride in ((3, 1), (3, 2), (5, 2), (2, 2)):
            assert tflite_padding(resolve_window((size, size + 1), kernel, stride, "same")) == "SAME"
            if size >= kernel:
                assert tflite_padding(resolve_window((size, size), kernel, stride, "valid")) in ("VALID", "SAME")
    assert tflite_padding(resolve_window((8, 8), 3, 1, (2, 0, 2, 0))) is None       # TFLite has no such padding


def test_adaptive_windows_cover_the_input_and_match_inside_kernels():
    @numba.njit
    def jitted(i, size_in, size_out):
        return adaptive_bounds_jit(i, size_in, size_out)

    for size_in in range(1, 17):
        for size_out in range(1, size_in + 1):
            bounds = [adaptive_bounds(i, size_in, size_out) for i in range(size_out)]
            assert bounds[0][0] == 0 and bounds[-1][1] == size_in
            assert all(lo < hi for lo, hi in bounds) and all(b[0] <= a[1] for a, b in zip(bounds, bounds[1:]))
            assert [tuple(jitted(i, size_in, size_out)) for i in range(size_out)] == bounds
            assert adaptive_taps(size_in, size_out) == sum(hi - lo for lo, hi in bounds)
            pool = uniform_adaptive_pool(size_in, size_out)
            if pool is not None:
                window, stride = pool
                assert bounds == [(i * stride, i * stride + window) for i in range(size_out)]
            elif size_in % size_out == 0:
                pytest.fail(f"{size_in} -> {size_out} divides evenly but was not found uniform")
