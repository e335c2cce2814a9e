"""Reference 2-D convolution (NHWC, OHWI weights, groups), its weight and input gradients."""
import numpy as np


def _taps(win, oh, ow):
    for i in range(win.kh):
        for j in range(win.kw):
            yield i, j, np.s_[:, i:i + win.sh * (oh - 1) + 1:win.sh, j:j + win.sw * (ow - 1) + 1:win.sw]


def _pad(x, win):
    return np.pad(x.astype(np.float64), ((0, 0), (win.pad_top, win.pad_bottom), (win.pad_left, win.pad_right), (0, 0)))


def conv2d(x, w, b, win, groups=1):
    N = x.shape[0]
    cout, cg = w.shape[0], w.shape[3]
    cog = cout // groups
    xp = _pad(x, win)
    out = np.zeros((N, win.out_h, win.out_w, cout))
    for g in range(groups):
        for i, j, sl in _taps(win, win.out_h, win.out_w):
            patch = xp[sl][..., g * cg:(g + 1) * cg]
            out[..., g * cog:(g + 1) * cog] += np.einsum("nhwc,oc->nhwo", patch, w[g * cog:(g + 1) * cog, i, j, :])
    if b is not None:
        out += b
    return out.astype(np.float32)


def conv2d_grad_weight(x, dy, w_shape, win, groups=1):
    cout, kh, kw, cg = w_shape
    cog = cout // groups
    xp = _pad(x, win)
    dw = np.zeros(w_shape)
    for g in range(groups):
        for i, j, sl in _taps(win, win.out_h, win.out_w):
            patch = xp[sl][..., g * cg:(g + 1) * cg]
            dw[g * cog:(g + 1) * cog, i, j, :] = np.einsum("nhwc,nhwo->oc", patch, dy[..., g * cog:(g + 1) * cog])
    db = dy.astype(np.float64).sum(axis=(0, 1, 2))
    return dw.astype(np.float32), db.astype(np.float32)


def conv2d_grad_input(dy, w, x_shape, win, groups=1):
    N, H, W, cin = x_shape
    cout, cg = w.shape[0], w.shape[3]
    cog = cout // groups
    dxp = np.zeros((N, H + win.pad_top + win.pad_bottom, W + win.pad_left + win.pad_right, cin))
    for g in range(groups):
        for i, j, sl in _taps(win, win.out_h, win.out_w):
            dxp[sl][..., g * cg:(g + 1) * cg] += np.einsum(
                "nhwo,oc->nhwc", dy[..., g * cog:(g + 1) * cog], w[g * cog:(g + 1) * cog, i, j, :])
    return dxp[:, win.pad_top:win.pad_top + H, win.pad_left:win.pad_left + W, :].astype(np.float32)
