"""Our model file (.ells): the byte layout, round trips, atomic writes, and a FormatError
naming the field for every kind of damage, CRC-32s that catch a flipped bit anywhere that
matters (thousands of seeded truncations and flips), version 1 still read with a warning.
Checkpoints restore a trainer bit for bit."""
import json
import struct
import warnings
import zlib

import numpy as np
import pytest

from edge_lls.cli import main
from edge_lls.errors import FormatError, FormatWarning
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
    magic, version, length, header_crc = struct.unpack_from("<4sIII", raw)
    assert (magic, version) == (b"ELLS", 2)
    assert zlib.crc32(raw[16:16 + length]) == header_crc
    header = json.loads(raw[16:16 + length])
    data = -(-(16 + length) // 64) * 64
    assert raw[16 + length:data] == b"\0" * (data - 16 - length)
    for entry in header["tensors"]:
        assert entry["offset"] % 64 == 0
        start = data + entry["offset"]
        assert zlib.crc32(raw[start:start + entry["nbytes"]]) == entry["crc32"]
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
    assert raw[:4] == b"ELLS" and b"numpy.core" not in raw and raw[16:17] == b"{"


# ------------------------------------------------------------------------- damage
def _write_raw(path, header, data=b"", *, magic=b"ELLS", version=2, length=None):
    """A file laid out by hand: version 2 (header CRC-32 in the preamble) or 1."""
    text = json.dumps(header).encode()
    length = len(text) if length is None else length
    preamble = struct.pack("<4sIII", magic, version, length, zlib.crc32(text[:length])) if version != 1 else \
        struct.pack("<4sII", magic, version, length)
    pad = b"\0" * (-(len(preamble) + len(text)) % 64)
    path.write_bytes(preamble + text + pad + data)
    return path


def _entry(**over):
    e = {"name": "w", "dtype": "float32", "shape": [2, 2], "offset": 0, "nbytes": 16, "crc32": zlib.crc32(bytes(16))}
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
    short.write_bytes(b"ELLS\x02")
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
    with pytest.raises(FormatError, match=r"header field 'spec.input_shape' is None, expected \[H, W, C\]"):
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


# ------------------------------------------------------------------------- integrity
def test_a_version_1_file_still_loads_with_a_warning(tmp_path):
    data = np.arange(4, dtype="<f4").tobytes()
    entry = {"name": "w", "dtype": "float32", "shape": [2, 2], "offset": 0, "nbytes": 16}
    path = _write_raw(tmp_path / "v1.ells", {**GOOD, "tensors": [entry]}, data, version=1)
    with pytest.warns(FormatWarning, match="version 1 has no checksums"):
        _, tensors = mf.read_file(path)
    np.testing.assert_array_equal(tensors["w"], np.arange(4, dtype=np.float32).reshape(2, 2))


def test_a_missing_or_wrong_crc_is_refused(tmp_path):
    entry = {"name": "w", "dtype": "float32", "shape": [2, 2], "offset": 0, "nbytes": 16}
    with pytest.raises(FormatError, match=r"'tensors\[0\] \(w\).crc32' is None"):
        mf.read_file(_write_raw(tmp_path / "a.ells", {**GOOD, "tensors": [entry]}, bytes(16)))
    wrong = {**entry, "crc32": zlib.crc32(bytes(16)) ^ 1}
    with pytest.raises(FormatError, match="tensor 'w': CRC-32 .* does not match"):
        mf.read_file(_write_raw(tmp_path / "b.ells", {**GOOD, "tensors": [wrong]}, bytes(16)))


def _meaningful_bytes(raw: bytes) -> np.ndarray:
    """Mask of the bytes a reader depends on: preamble, header, tensor data (not padding)."""
    _, _, length, _ = struct.unpack_from("<4sIII", raw)
    header = json.loads(raw[16:16 + length])
    mask = np.zeros(len(raw), bool)
    mask[:16 + length] = True
    data = -(-(16 + length) // 64) * 64
    for e in header["tensors"]:
        mask[data + e["offset"]:data + e["offset"] + e["nbytes"]] = True
    return mask


def test_thousands_of_truncations_and_bit_flips_each_give_one_clear_error(tmp_path):
    # Seeded: 1,000 truncations and 2,000 files with 1-3 flipped bits. Every one that
    # changed a byte the reader depends on must raise FormatError, nothing else may escape;
    # a flip inside padding may load, and then loads the original values.
    path = tmp_path / "m.ells"
    original = _tensors()
    mf.write_file(path, {"kind": "model", "spec": {"name": "x"}}, original)
    raw = path.read_bytes()
    mask = _meaningful_bytes(raw)
    rng = np.random.default_rng(20261202)
    damaged = tmp_path / "d.ells"
    refused = loaded = 0
    for trial in range(3000):
        if trial < 1000:
            cut = int(rng.integers(0, len(raw)))
            data, hits = raw[:cut], cut < len(raw)
        else:
            data = bytearray(raw)
            positions = rng.integers(0, len(raw), int(rng.integers(1, 4)))
            for p in positions:
                data[p] ^= 1 << int(rng.integers(0, 8))
            data, hits = bytes(data), bool(mask[positions].any()) and bytes(data) != raw
        damaged.write_bytes(data)
        try:
            _, tensors = mf.read_file(damaged)
        except FormatError as e:
            assert "\n" not in str(e)
            refused += 1
            continue
        assert not hits, f"trial {trial}: damage in a meaningful byte went unseen"
        for name, value in original.items():
            np.testing.assert_array_equal(tensors[name], value)
        loaded += 1
    assert refused > 2500 and refused + loaded == 3000


def test_info_reports_a_flipped_weight_bit_on_one_line(tmp_path, capsys):
    path = tmp_path / "m.ells"
    mf.save_model(path, build_model("smallconv", input_shape=(8, 8, 1)), {})
    raw = bytearray(path.read_bytes())
    raw[-5] ^= 0x10                            # inside the last tensor's data
    path.write_bytes(bytes(raw))
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-lls: error:") and "CRC-32" in err[0]


def test_a_version_1_model_loads_in_the_cli_with_a_one_line_warning(tmp_path, capsys):
    model = build_model("smallconv", input_shape=(8, 8, 1))
    tensors = {k: np.ascontiguousarray(v) for k, v in mf.model_tensors(model).items()}
    table, blobs, cursor = [], b"", 0
    for name, a in tensors.items():
        table.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape), "offset": cursor,
                      "nbytes": a.nbytes})
        blobs += a.tobytes() + b"\0" * (-a.nbytes % 64)
        cursor += a.nbytes + (-a.nbytes % 64)
    path = _write_raw(tmp_path / "v1.ells", {"kind": "model", "spec": model.spec, "tensors": table}, blobs,
                      version=1)
    with warnings.catch_warnings():
        assert main(["info", str(path), "--json"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-lls: warning:") and "version 1" in err[0]
