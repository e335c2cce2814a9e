"""Window geometry shared by convolution and pooling kernels (float and int8).

Padding is always resolved to explicit (top, bottom, left, right) before a kernel runs,
so kernels never see the strings 'same' / 'valid'.
"""
from __future__ import annotations

from dataclasses import dataclass


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
        out_h, out_w = -(-in_h // sh), -(-in_w // sw)
        th = max((out_h - 1) * sh + kh - in_h, 0)
        tw = max((out_w - 1) * sw + kw - in_w, 0)
        pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
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
