"""Window geometry, the one place it is computed: convolution and pooling windows (float
and int8), TensorFlow's SAME / VALID rules, and PyTorch's adaptive-pooling windows.

Padding is always resolved to explicit (top, bottom, left, right) before a kernel runs,
so kernels never see the strings 'same' / 'valid'.
"""
from __future__ import annotations

from dataclasses import dataclass

from numba import njit


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int, int]:
    """TensorFlow SAME along one axis: (output size, pad before, pad after); the odd
    padding pixel goes after (bottom / right)."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return out, total // 2, total - total // 2


def valid_output(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """TensorFlow VALID along one axis: the output size (no padding)."""
    return (size - ((kernel - 1) * dilation + 1) + stride) // stride


def adaptive_bounds(i: int, size_in: int, size_out: int) -> tuple[int, int]:
    """PyTorch's adaptive-pooling window i of size_out over size_in: [floor(i*in/out),
    ceil((i+1)*in/out)). Windows overlap when size_out does not divide size_in."""
    return (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)


adaptive_bounds_jit = njit(inline="always")(adaptive_bounds)     # the same, inside kernels


def adaptive_taps(size_in: int, size_out: int) -> int:
    """Sum of the adaptive windows' lengths along one axis."""
    return sum(hi - lo for lo, hi in (adaptive_bounds(i, size_in, size_out) for i in range(size_out)))


def uniform_adaptive_pool(size_in: int, size_out: int) -> tuple[int, int] | None:
    """(window, stride) when the adaptive windows over size_in are one strided VALID pool
    (as a TFLite AVERAGE_POOL_2D can express them), else None."""
    bounds = [adaptive_bounds(i, size_in, size_out) for i in range(size_out)]
    lengths = {hi - lo for lo, hi in bounds}
    if len(lengths) != 1:
        return None
    window = lengths.pop()
    stride = bounds[1][0] - bounds[0][0] if size_out > 1 else size_in
    if any(lo != i * stride for i, (lo, _) in enumerate(bounds)) or valid_output(size_in, window, stride) != size_out:
        return None
    return window, stride


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    a, b = v
    return int(a), int(b)


@dataclass(frozen=True)
class Window:
    """A 2-D sliding window over an (H, W) plane and the output plane it produces."""
    kh: int
    kw: int
    sh: int
    sw: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int

    @property
    def padded(self) -> bool:
        return (self.pad_top | self.pad_bottom | self.pad_left | self.pad_right) != 0


def resolve_window(in_hw, kernel, stride=1, padding=0) -> Window:
    """padding: 'valid', 'same' (TensorFlow rule: the extra pixel goes bottom/right),
    an int, (ph, pw) symmetric, or explicit (top, bottom, left, right)."""
    in_h, in_w = in_hw
    kh, kw = _pair(kernel)
    sh, sw = _pair(stride)
    if padding == "valid":
        pads = (0, 0, 0, 0)
    elif padding == "same":
        pads = same_padding(in_h, kh, sh)[1:] + same_padding(in_w, kw, sw)[1:]
    elif isinstance(padding, int):
        pads = (padding,) * 4
    elif len(padding) == 2:
        pads = (padding[0], padding[0], padding[1], padding[1])
    elif len(padding) == 4:
        pads = tuple(int(p) for p in padding)
    else:
        raise ValueError(f"padding must be 'same', 'valid', an int, 2 or 4 ints; got {padding!r}")
    pt, pb, pl, pr = pads
    out_h = (in_h + pt + pb - kh) // sh + 1
    out_w = (in_w + pl + pr - kw) // sw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"window {kh}x{kw} stride {sh}x{sw} does not fit input {in_h}x{in_w}")
    return Window(kh, kw, sh, sw, pt, pb, pl, pr, in_h, in_w, out_h, out_w)


def tflite_padding(win: Window) -> str | None:
    """'SAME' or 'VALID' when a Window is what TFLite computes for that string, else None
    (padding TFLite cannot express)."""
    if (win.out_h, win.pad_top, win.pad_bottom) == same_padding(win.in_h, win.kh, win.sh) and \
            (win.out_w, win.pad_left, win.pad_right) == same_padding(win.in_w, win.kw, win.sw):
        return "SAME"
    if not win.padded:
        return "VALID"
    return None
