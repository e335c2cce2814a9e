"""Our model file (.ells): the byte layout, round trips, atomic writes, and a FormatError
naming the field for every kind of damage. Checkpoints restore a trainer bit for bit."""
import json
import struct

import numpy as np
import pytest

from edge_lls.errors import FormatError
from edge_lls.formats import model_file as mf
from edge_lls.models import build_model
from edge_lls.trainer import Trainer


def _tensors():
    return {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "empty": np.zeros((0, 5), np.float32),
            "scalar": np.array(7, np.int64), "q": np.array([-128, 0, 127], np.int8),
            "d": np.linspace(0, 1, 5)}


def test_layout_is_magic_version_header_then_aligned_little_endian_arrays(tmp_path):
    path = tmp_path / "a.ells"
    size = mf.write_file(path, {"kind": "model", "spec": {"name": "x"}}, _tensors())
    raw = path.read_bytes()
    assert len(raw) == size
    magic, version, length = struct.unpack_from("<4sII", raw)
    assert (magic, version) == (b"ELLS", 1)
    header = json.loads(raw[12:12 + length])
    data = -(-(12 + length) // 64) * 64
    assert raw[12 + length:data] == b"\0" * (data - 12 - length)
    for entry in header["tensors"]:
        assert entry["offset"] % 64 == 0
    w = next(e for e in header["tensors"] if e["name"] == "w")
    assert (w["dtype"], w["shape"], w["nbytes"]) == ("float32", [3, 4], 48)
    start = data + w["offset"]
    assert raw[start:start + 48] == np.arange(12, dtype="<f4").tobytes()


def test_round_trip_keeps_every_dtype_shape_and_value(tmp_path):
    path = tmp_path / "a.ells"
    mf.write_file(path, {"kind": "checkpoint", "spec": {}, "extra": [1, 2.5, "x"]}, _tensors())
    header, tensors = mf.read_file(path)
    assert header["extra"] == [1, 2.5, "x"]
    for name, a in _tensors().items():
        assert tensors[name].dtype == a.dtype and tensors[name].shape == a.shape
        np.testing.assert_array_equal(tensors[name], a)
        assert tensors[name].flags.writeable


def test_model_round_trip_keeps_weights_and_batch_norm_statistics(tmp_path, rng):
    model = build_model("smallconv", num_classes=10, input_shape=(8, 8, 1), seed=3)
    for bn in model.batch_norms():            # statistics are state too, not parameters
        bn.running_mean[...] = rng.standard_normal(bn.running_mean.shape)
        bn.running_var[...] = rng.random(bn.running_var.shape) + 0.5
    path = tmp_path / "m.ells"
    mf.save_model(path, model, {"rule": {"rule": "lls"}, "precision": "fp32"})
    loaded, header = mf.load_model(path)
    assert header["precision"] == "fp32" and loaded.spec == model.spec
    for name, a in mf.model_tensors(model).items():
        assert mf.model_tensors(loaded)[name].tobytes() == a.tobytes(), name
    x = rng.random((5, 8, 8, 1), dtype=np.float32)
    np.testing.assert_array_equal(model.forward(x).copy(), loaded.forward(x))


def test_the_file_is_never_a_pickle(tmp_path):
    path = tmp_path / "m.ells"
    mf.save_model(path, build_model("smallconv", input_shape=(8, 8, 1)), {})
    raw = path.read_bytes()
    assert raw[:4] == b"ELLS" and b"numpy.core" not in raw and raw[12:13] == b"{"


# ------------------------------------------------------------------------- damage
def _write_raw(path, header, data=b"", *, magic=b"ELLS", version=1, length=None):
    text = json.dumps(header).encode()
    length = len(text) if length is None else length
    pad = b"\0" * (-(12 + len(text)) % 64)
    path.write_bytes(struct.pack("<4sII", magic, version, length) + text + pad + data)
    return path


def _entry(**over):
    e = {"name": "w", "dtype": "float32", "shape": [2, 2], "offset": 0, "nbytes": 16}
    e.update(over)
    return e


GOOD = {"kind": "model", "spec": {"name": "x"}}


@pytest.mark.parametrize("header, data, field", [
    ({**GOOD, "tensors": [_entry(dtype="object")]}, bytes(16), "dtype"),
    ({**GOOD, "tensors": [_entry(shape=[2, -2])]}, bytes(16), "shape"),
    ({**GOOD, "tensors": [_entry(nbytes=12)]}, bytes(16), "nbytes"),
    ({**GOOD, "tensors": [_entry(offset=4)]}, bytes(32), "offset"),
    ({**GOOD, "tensors": [_entry()]}, bytes(15), "runs past the end"),
    ({**GOOD, "tensors": [_entry(), _entry(name="v", shape=[20], nbytes=80)]}, bytes(80), "overlap"),
    ({**GOOD, "tensors": [_entry(), _entry()]}, bytes(128), "name"),
    ({**GOOD, "tensors": "w"}, b"", "'tensors'"),
    ({"kind": "model", "tensors": []}, b"", "'spec'"),
    ({"kind": "pickle", "spec": {}, "tensors": []}, b"", "'kind'"),
])
def test_a_damaged_table_names_the_field(tmp_path, header, data, field):
    path = _write_raw(tmp_path / "bad.ells", header, data)
    with pytest.raises(FormatError, match=field):
        mf.read_file(path)


def test_damaged_preamble_and_header_are_named(tmp_path):
    ok = {**GOOD, "tensors": []}
    cases = [(_write_raw(tmp_path / "m.ells", ok, magic=b"PK\x03\x04"), "magic"),
             (_write_raw(tmp_path / "v.ells", ok, version=9), "version 9"),
             (_write_raw(tmp_path / "l.ells", ok, length=10_000), "header length"),
             (_write_raw(tmp_path / "j.ells", ok, length=5), "not valid JSON")]
    short = tmp_path / "s.ells"
    short.write_bytes(b"ELLS\x01")
    cases.append((short, "truncated"))
    for path, words in cases:
        with pytest.raises(FormatError, match=words):
            mf.read_file(path)
    with pytest.raises(FormatError, match="not found"):
        mf.read_file(tmp_path / "missing.ells")


def test_a_truncated_model_file_is_refused_before_any_tensor_is_read(tmp_path):
    path = tmp_path / "m.ells"
    mf.save_model(path, build_model("smallconv", input_shape=(8, 8, 1)), {})
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    with pytest.raises(FormatError, match=r"running_var.*runs past the end.*truncated"):
        mf.load_model(path)


def test_tensors_must_match_the_spec(tmp_path):
    model = build_model("smallconv", input_shape=(8, 8, 1))
    tensors = mf.model_tensors(model)
    path = tmp_path / "m.ells"
    header = {"kind": "model", "spec": model.spec}
    mf.write_file(path, header, {**tensors, "block0.conv.w": np.zeros((3, 3), np.float32)})
    with pytest.raises(FormatError, match=r"'block0.conv.w' has shape \[3, 3\]"):
        mf.load_model(path)
    mf.write_file(path, header, {k: v for k, v in tensors.items() if k != "classifier.b"})
    with pytest.raises(FormatError, match="'classifier.b' is missing"):
        mf.load_model(path)
    mf.write_file(path, header, {**tensors, "stray": np.zeros(1, np.float32)})
    with pytest.raises(FormatError, match="unexpected tensor 'stray'"):
        mf.load_model(path)
    mf.write_file(path, {"kind": "model", "spec": {"name": "x"}}, tensors)
    with pytest.raises(FormatError, match="'spec' does not describe a model"):
        mf.load_model(path)


def test_a_checkpoint_is_not_a_model(tmp_path):
    model = build_model("smallconv", input_shape=(8, 8, 1))
    path = tmp_path / "c.ells"
    mf.save_checkpoint(path, Trainer(model), {"epoch": 0})
    with pytest.raises(FormatError, match="'kind' is 'checkpoint', expected 'model'"):
        mf.load_model(path)


# ------------------------------------------------------------------------ atomicity
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "c.ells"
    mf.write_bytes_atomic(path, b"old")

    def crash(f):
        f.write(b"half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        mf.write_atomic(path, crash)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ells"]


# ------------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("rule, optimizer", [("lls-m", "adamw-sf"), ("local-losses", "adamw"),
                                             ("bp", "sgd")])
def test_checkpoint_restores_a_trainer_bit_for_bit(tmp_path, rng, rule, optimizer):
    x = rng.random((16, 8, 8, 1), dtype=np.float32)
    y = rng.integers(0, 10, 16)

    def fresh():
        model = build_model("smallconv", input_shape=(8, 8, 1), seed=5)
        return Trainer(model, rule=rule, optimizer=optimizer, lr=1e-3, seed=5)

    straight = fresh()
    for _ in range(6):
        straight.step(x, y)

    first = fresh()
    for _ in range(3):
        first.step(x, y)
    path = tmp_path / "c.ells"
    mf.save_checkpoint(path, first, {"epoch": 0, "step": 3})
    resumed = fresh()                      # new objects, as in a new process
    header, tensors = mf.read_checkpoint(path)
    mf.restore_checkpoint(resumed, header, tensors, path)
    assert header["train"] == {"epoch": 0, "step": 3}
    for _ in range(3):
        resumed.step(x, y)

    def everything(t):
        return {**mf.model_tensors(t.model), **mf._rule_tensors(t), **mf._optimizer_tensors(t)}

    expected, got = everything(straight), everything(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert expected[name].tobytes() == got[name].tobytes(), name
    for a, b in zip(straight.optimizers, resumed.optimizers):
        assert a.state_scalars() == b.state_scalars()


def test_a_checkpoint_of_another_rule_is_refused(tmp_path):
    model = build_model("smallconv", input_shape=(8, 8, 1))
    path = tmp_path / "c.ells"
    mf.save_checkpoint(path, Trainer(model, rule="lls-m"), {})
    header, tensors = mf.read_checkpoint(path)
    with pytest.raises(FormatError, match="rule 'lls-m'"):
        mf.restore_checkpoint(Trainer(build_model("smallconv", input_shape=(8, 8, 1)), rule="lls"),
                              header, tensors, path)
