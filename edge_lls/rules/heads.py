"""The local learning signal of one block: pool -> [normalise] -> project -> [modulate] -> CE.

    a (N,H,W,C) or (N,F)   block output
    v (N,D)                adaptive-average-pooled a, flattened (NHWC order internally;
                           the basis columns are permuted so results equal the
                           reference's channel-major flattening)
    z = v / max(|v|, 1e-12) per sample   (LLS; not for LLS-Random / LocalLosses)
    s = z B^T              (N,R)  B: fixed LLS basis, fixed random, or learned
    y = s * m  |  s M  |  s      LLS-M (m: K)  |  LLS-MxM (M: R x K)  |  plain
    L = CE(y / T, labels)

Backward returns dL/da (written into the block's gradient buffer) and the gradients of
the head's own parameters (m, M, or a learned basis). Nothing flows past the block.
"""
from __future__ import annotations

import numpy as np

from ..kernels import pool as kpool
from ..kernels.reduce import row_norms
from ..nn.arena import Buf
from ..nn.block import DeferredOutput
from ..nn.param import Param
from .basis import lls_basis, nhwc_to_channel_major, pool_columns, pool_columns_grad
from .losses import softmax_cross_entropy

NORM_EPS = 1e-12  # F.normalize's clamp


def pooled_shape(a_shape, pool: int) -> tuple:
    """Pooled per-sample shape: (p, p, C) for conv outputs (H, W, C), (p,) for dense (F,)."""
    return (pool, pool, a_shape[-1]) if len(a_shape) == 3 else (pool,)


def project(v2d, labels, basis, *, normalize, temperature, label_smoothing=0.0,
            modulation=None, modulation_kind=None, work=None, want_dbasis=False):
    """The head's math on pooled vectors. v2d (N, D); basis (R, D) in v2d's column order.

    Returns (loss, dv (N, D), dmodulation or None, dbasis (R, D) or None, logits (N, K)).
    work: optional dict of preallocated (N, D) buffers 'z' and 'dz' (dv is written to dz).
    """
    n, d = v2d.shape
    z = work["z"] if work and "z" in work else np.empty((n, d), np.float32)
    dz = work["dz"] if work and "dz" in work else np.empty((n, d), np.float32)
    if normalize:
        norms = np.empty(n, np.float32)
        row_norms(v2d, norms)
        denom = np.maximum(norms, NORM_EPS)
        np.divide(v2d, denom[:, None], out=z)
    else:
        z = v2d
    s = z @ basis.T                                                    # (N, R)
    if modulation_kind == "m":
        y = s * modulation
    elif modulation_kind == "mxm":
        y = s @ modulation
    else:
        y = s
    loss, dy = softmax_cross_entropy(y, labels, temperature=temperature, label_smoothing=label_smoothing)
    dmod = None
    if modulation_kind == "m":
        dmod = (s * dy).sum(axis=0)
        ds = dy * modulation
    elif modulation_kind == "mxm":
        dmod = s.T @ dy
        ds = dy @ modulation.T
    else:
        ds = dy
    dbasis = ds.T @ z if want_dbasis else None                         # (R, D), learned bases only
    np.matmul(ds, basis, out=dz)
    if normalize:
        # d(v/|v|)/dv = (I - z z^T)/|v| while |v| > eps; below the clamp it is I/eps.
        radial = np.einsum("nd,nd->n", z, dz)
        radial[norms <= NORM_EPS] = 0.0
        z *= radial[:, None]            # z is dead after this: its buffer holds z * radial
        dz -= z
        dz /= denom[:, None]
    return loss, dz, dmod, dbasis, y


class ProjectionHead:
    """One block's head. basis_kind: 'lls' (fixed periodic), 'random' (fixed 0.1*randn,
    column-pooled from hidden_dim), 'learned' (LocalLosses: the random basis, trained)."""

    def __init__(self, name, a_shape, pool, num_classes, *, basis_kind="lls", waveform="square",
                 modulation_kind=None, reduced_rows=None, hidden_dim=None,
                 temperature=0.5, label_smoothing=0.0, rng=None):
        rng = rng or np.random.default_rng(0)
        self.a_shape, self.pool = tuple(a_shape), pool
        self.pshape = pooled_shape(a_shape, pool)
        self.dim = int(np.prod(self.pshape))
        self.normalize = basis_kind == "lls"
        self.temperature, self.label_smoothing = temperature, label_smoothing
        self.modulation_kind = modulation_kind
        self._perm = nhwc_to_channel_major(self.pshape)
        self._identity_pool = len(a_shape) == 1 and pool == a_shape[0]
        self._inv_area = self._area_inverse() if len(a_shape) == 3 else None
        rows = reduced_rows or num_classes
        self.params: list[Param] = []
        self.learned = None
        if basis_kind == "lls":
            self.basis = np.ascontiguousarray(lls_basis(rows, self.dim, waveform)[:, self._perm])
        elif basis_kind in ("random", "learned"):
            hidden = hidden_dim or self.dim
            full = (0.1 * rng.standard_normal((rows, hidden))).astype(np.float32)
            if basis_kind == "learned":
                self.learned = Param(f"{name}.basis", full)
                self.params.append(self.learned)
                self.basis = np.empty((rows, self.dim), np.float32)
                self._refresh_basis()
            else:
                self.basis = np.ascontiguousarray(pool_columns(full, self.dim)[:, self._perm])
        else:
            raise ValueError(f"basis kind {basis_kind!r}")
        self.modulation = None
        if modulation_kind == "m":
            self.modulation = Param(f"{name}.m", 0.01 * rng.standard_normal(num_classes))
        elif modulation_kind == "mxm":
            self.modulation = Param(f"{name}.M", 0.01 * rng.standard_normal((rows, num_classes)))
        elif modulation_kind is not None:
            raise ValueError(f"modulation kind {modulation_kind!r} (None, 'm', 'mxm')")
        if self.modulation is not None:
            self.params.append(self.modulation)

    def _refresh_basis(self):
        pooled = pool_columns(self.learned.value, self.dim)               # channel-major
        np.take(pooled, self._perm, axis=1, out=self.basis)

    def buffers(self, batch: int, storage=np.float32) -> list[Buf]:
        """Float32 head buffers; 'hv' holds the pooled output, or a float16 block output
        widened (an identity pool reads a float32 output in place)."""
        bufs = [Buf("hz", (batch, self.dim), "keep"), Buf("hdz", (batch, self.dim), "keep")]
        if not self._identity_pool or np.dtype(storage) != np.float32:
            bufs.append(Buf("hv", (batch, *self.pshape), "keep"))
        return bufs

    @property
    def pools_2d(self) -> bool:
        return len(self.a_shape) == 3

    def _area_inverse(self) -> np.ndarray:
        """(P, Q, 1) 1 / area of each adaptive window over the block's (H, W)."""
        (h, w, _), p = self.a_shape, self.pool
        rows = [(-(-(i + 1) * h // p)) - (i * h) // p for i in range(p)]
        cols = [(-(-(j + 1) * w // p)) - (j * w) // p for j in range(p)]
        return (1.0 / np.outer(rows, cols)).astype(np.float32)[:, :, None]

    def pooled_gradient(self, a, labels, V):
        """Loss of a conv block output a and dL/dv divided by window areas, (N, P, Q, C):
        the full-size dL/da is its adaptive-pool upsampling (Block.backward_pooled)."""
        loss, dv = self._signal(a, labels, V)
        return loss, self.area_weighted(dv)

    def __call__(self, a, labels, V, da):
        """Loss of block output a; writes dL/da into da and the head's own param grads."""
        loss, dv = self._signal(a, labels, V)
        self.spread(dv, da)
        return loss

    def area_weighted(self, dv):
        """dL/dv (N, D), in place, divided by the window areas: (N, P, Q, C)."""
        dv_area = dv.reshape(dv.shape[0], *self.pshape)
        dv_area *= self._inv_area
        return dv_area

    def spread(self, dv, da):
        """dL/da (written into da) from dL/dv (N, D): the adaptive pool's backward."""
        n = dv.shape[0]
        if self._identity_pool:
            da[...] = dv.reshape(da.shape)
        elif len(self.a_shape) == 3:
            kpool.adaptive_avg_pool2d_grad_f32(dv.reshape(n, *self.pshape), da)
        else:
            kpool.adaptive_avg_pool1d_grad_f32(dv.reshape(n, self.dim), da)

    def _signal(self, a, labels, V):
        """Loss and dL/dv (N, D) in V['hdz']; sets the head's own parameter gradients."""
        n = a.shape[0]
        if self._identity_pool and a.dtype == np.float32:
            v = a
        elif self._identity_pool:                     # float16 storage: widen once
            v = V["hv"]
            np.copyto(v, a.reshape(v.shape))
        elif len(self.a_shape) == 3:
            v = V["hv"]
            if isinstance(a, DeferredOutput):         # pooled straight from the norm input
                kpool.adaptive_avg_pool2d_f32(a.z, v, a.bn_act)
            else:
                kpool.adaptive_avg_pool2d_f32(a, v)
        else:
            v = V["hv"]
            kpool.adaptive_avg_pool1d_f32(a, v)
        if self.learned is not None:
            self._refresh_basis()
        loss, dv, dmod, dbasis, _ = project(
            v.reshape(n, self.dim), labels, self.basis, normalize=self.normalize,
            temperature=self.temperature, label_smoothing=self.label_smoothing,
            modulation=None if self.modulation is None else self.modulation.value,
            modulation_kind=self.modulation_kind, work={"z": V["hz"], "dz": V["hdz"]},
            want_dbasis=self.learned is not None)
        if self.modulation is not None:
            self.modulation.grad[...] = dmod
        if self.learned is not None:
            dcm = np.empty_like(dbasis)
            dcm[:, self._perm] = dbasis
            self.learned.grad[...] = pool_columns_grad(dcm, self.learned.value.shape[1])
        return loss, dv
