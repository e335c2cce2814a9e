"""The pure parts of tools/rpi/rpi_check.py (`make rpi-check`), on the host, in well under a
second: the root filesystem's requirements and recipe hash, the guest's /proc/cpuinfo, the
mirror taken from apt, the cache folder, and the parsers of pytest's and serve's output.
The check itself (root, debootstrap, qemu-user) runs only through `make rpi-check`."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools" / "rpi"
_spec = importlib.util.spec_from_file_location("rpi_check", TOOLS / "rpi_check.py")
rpi = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("rpi_check", rpi)
_spec.loader.exec_module(rpi)

PYPROJECT = """
[build-system]
requires = ["setuptools>=77"]
[project]
name = "x"
dependencies = ["numpy>=1.24", "numba>=0.61"]
[project.optional-dependencies]
test = ["pytest>=7", "tflite-micro==0.dev1; platform_machine == 'x86_64'"]
"""


def test_requirements_are_the_dependencies_the_test_extra_and_setuptools_with_markers_kept():
    assert rpi.requirements(PYPROJECT) == ["numpy>=1.24", "numba>=0.61", "pytest>=7",
                                           "tflite-micro==0.dev1; platform_machine == 'x86_64'", "setuptools>=77"]


def test_the_real_pyproject_gives_requirements_pip_can_read():
    reqs = rpi.requirements((TOOLS.parents[1] / "pyproject.toml").read_text())
    assert {"numpy", "numba", "onnxruntime", "pytest", "setuptools"} <= {r.split(">")[0].split("=")[0] for r in reqs}


def test_recipe_hash_changes_with_each_input_and_only_then():
    base = rpi.recipe_hash(b"script", ["numpy>=1"], "http://m/debian")
    assert base == rpi.recipe_hash(b"script", ["numpy>=1"], "http://m/debian")
    assert len(base) == 16 and int(base, 16) >= 0
    others = {rpi.recipe_hash(b"script2", ["numpy>=1"], "http://m/debian"),
              rpi.recipe_hash(b"script", ["numpy>=2"], "http://m/debian"),
              rpi.recipe_hash(b"script", ["numpy>=1"], "http://other/debian"),
              rpi.recipe_hash(b"script", ["numpy>=1"], "http://m/debian", suite="trixie"),
              rpi.recipe_hash(b"scrip", ["tnumpy>=1"], "http://m/debian")}      # no ambiguity at the seams
    assert base not in others and len(others) == 5


@pytest.mark.parametrize("cpu,part,features", [("cortex-a76", "0xd0b", "asimddp"), ("cortex-a72", "0xd08", "crc32")])
def test_cpuinfo_is_an_arm64_kernels_one_block_per_core(cpu, part, features):
    text = rpi.cpuinfo_text(cpu, 3)
    blocks = [b for b in text.split("\n\n") if b.startswith("processor")]
    assert [b.splitlines()[0] for b in blocks] == ["processor\t: 0", "processor\t: 1", "processor\t: 2"]
    for b in blocks:
        fields = dict(line.split(":", 1) for line in b.splitlines())
        assert fields["CPU implementer\t"].strip() == "0x41" and fields["CPU part\t"].strip() == part
        assert fields["CPU architecture"].strip() == "8" and features in fields["Features\t"]
    assert "x86" not in text and "flags" not in text and text.rstrip().endswith(f"(qemu-user {cpu})")


def test_cpuinfo_refuses_an_unknown_cpu():
    with pytest.raises(ValueError, match="cortex-a76"):
        rpi.cpuinfo_text("max", 2)


def test_the_mirror_is_the_suites_own_not_security_or_updates():
    lines = ("http://deb.debian.org/debian-security bookworm-security\n"
             "http://deb.debian.org/debian/ bookworm-updates\n"
             "http://mirror.example/debian/ bookworm\n")
    assert rpi.debian_mirror(lines) == "http://mirror.example/debian"
    with pytest.raises(rpi.CheckFailed, match="RPI_MIRROR"):
        rpi.debian_mirror("http://deb.debian.org/debian trixie\n")


def test_cache_root_follows_xdg_then_home():
    assert rpi.cache_root({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == Path("/c/edge-lls")
    assert rpi.cache_root({"HOME": "/h"}) == Path("/h/.cache/edge-lls")


def test_pytest_counts_read_the_closing_line():
    out = "....\n===== 3 failed, 28 passed, 2 skipped, 1 error, 4 deselected in 3.20s =====\n"
    assert rpi.pytest_counts(out) == {"failed": 3, "passed": 28, "skipped": 2, "error": 1, "deselected": 4}
    assert rpi.pytest_counts("12 passed in 1.0s") == {"passed": 12}
    assert rpi.pytest_counts("no tests ran in 0.01s") == {}


def test_accuracy_tolerance_is_half_a_point():
    assert rpi.within(0.4234, 0.4284) and not rpi.within(0.4234, 0.4290)
    assert rpi.within(0.5, 0.5, 0.0) and not rpi.within(0.5, 0.5001, 0.0)


def test_the_serve_line_gives_the_port():
    assert rpi.listening_port("listening on tcp:127.0.0.1:40653 (state /tmp/a)\n") == 40653
    assert rpi.listening_port("edge-lls serve: drive it with --port tcp:127.0.0.1:1") is None


def test_every_guest_test_file_exists_and_says_why_it_runs():
    root = TOOLS.parents[1]
    for name, (why, deselected) in rpi.GUEST_TESTS.items():
        assert (root / name).is_file() and len(why) > 20
        for node in deselected:
            assert node.startswith(name + "::")
