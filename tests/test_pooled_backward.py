"""The fused backward of local rules (Block.backward_pooled: batch norm reads the pooled
gradient, dL/dz exists one slice of rows at a time) equals the plain backward through a
materialised dL/da, for conv and depthwise-separable blocks, with adaptive windows that
divide the map and windows that overlap. Tolerance: rtol 2e-5 (float32 reassociation)."""
import numpy as np
import pytest

from edge_lls.kernels import conv as kconv
from edge_lls.nn.model import Model
from edge_lls.rules.heads import ProjectionHead


def _spec(block):
    return {"name": "t", "input_shape": [9, 9, 3], "num_classes": 5, "blocks": [block],
            "classifier": {"bias": True}}


BLOCKS = [
    {"type": "conv", "filters": 8, "kernel": 3, "stride": 1, "padding": 1, "pool_size": 3, "post": []},
    {"type": "conv", "filters": 8, "kernel": 3, "stride": 1, "padding": 1, "pool_size": 2, "post": []},  # 9/2 overlaps
    {"type": "conv", "filters": 6, "kernel": 3, "stride": 2, "padding": "same", "pool_size": 4,
     "act": "relu6", "post": [{"type": "maxpool", "kernel": 2, "stride": 2}]},
    {"type": "dwsep", "filters": 7, "kernel": 3, "stride": 1, "padding": "same", "pool_size": 2, "post": []},
    {"type": "dwsep", "filters": 4, "kernel": 3, "stride": 2, "padding": "same", "pool_size": 1, "post": []},
]


@pytest.mark.parametrize("chunk", [None, 7 * 27])
@pytest.mark.parametrize("block_spec", BLOCKS)
def test_pooled_backward_equals_materialised_backward(block_spec, chunk, rng, monkeypatch):
    if chunk:
        monkeypatch.setattr(kconv, "TASK_FLOATS", chunk)   # many small tasks
    x = rng.standard_normal((6, 9, 9, 3), dtype=np.float32)
    labels = rng.integers(0, 5, 6)
    grads, passed_on = [], []
    for pooled in (False, True):
        model = Model(_spec(block_spec), seed=4)
        block = model.blocks[0]
        assert block.accepts_pooled_grad()
        _, a_shape, _ = block.shapes(x.shape)
        head = ProjectionHead("h", a_shape[1:], block.pool_size, 5, temperature=0.5)
        arena = model.arena(6, "local", [head.buffers(6)], [pooled])
        V = arena.views[0]
        defer = pooled and block.defers_output()     # the output y is then never stored
        a, h = block.forward(x, V, training=True, defer=defer)
        passed_on.append(h.copy())
        if pooled:
            _, dv_area = head.pooled_gradient(a, labels, V)
            block.backward_pooled(x, V, dv_area)
        else:
            head(a, labels, V, V[f"g{len(block.units) - 1}"])
            block.backward(x, V)
        grads.append({p.name: p.grad.copy() for p in block.params})
    # Pooling act(BN(z)) on the fly gives exactly what pooling the stored y gives.
    np.testing.assert_array_equal(passed_on[1], passed_on[0])
    weight_scale = max(np.abs(g).max() for n, g in grads[0].items() if n.endswith(".w"))
    for name in grads[0]:
        if name.endswith(".b"):
            # A bias before batch norm has a true gradient of exactly zero; both paths
            # return float32 rounding noise around it.
            assert np.abs(grads[0][name]).max() < 1e-5 * weight_scale
            assert np.abs(grads[1][name]).max() < 1e-5 * weight_scale
            continue
        np.testing.assert_allclose(grads[1][name], grads[0][name], rtol=2e-5,
                                   atol=2e-5 * np.abs(grads[0][name]).max() + 1e-12, err_msg=name)


def test_pooled_arena_drops_the_full_size_gradient():
    spec = _spec(BLOCKS[0])
    plain = Model(spec).arena(64, "local", None, [False])
    fused = Model(spec).arena(64, "local", None, [True])
    assert "g0" not in fused.views[0] and "dzr" in fused.views[0]
    assert fused.region_bytes["live"] < plain.region_bytes["live"]


def test_a_block_followed_by_pooling_never_stores_its_output():
    model = Model(_spec(BLOCKS[2]))                  # conv -> BN -> relu6 -> maxpool
    assert model.blocks[0].defers_output()
    views = model.arena(8, "local", None, [True]).views[0]
    assert "y0" not in views and "z0" in views and "p0" in views
    assert "y0" in Model(_spec(BLOCKS[0])).arena(8, "local", None, [True]).views[0]   # no pooling after
