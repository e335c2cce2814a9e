"""The kernel cache is dropped when any compiled source changes (edge_lls/jit_cache.py):
Numba alone would keep a kernel whose inlined helper in another file changed."""
from edge_lls import jit_cache


def _package(tmp_path):
    pkg = tmp_path / "edge_lls"
    (pkg / "kernels" / "__pycache__").mkdir(parents=True)
    (pkg / "kernels" / "half.py").write_text("@overload(len)\ndef f(): pass\nx = 1\n")
    (pkg / "kernels" / "conv.py").write_text("from numba import njit\ny = 2\n")
    (pkg / "optim.py").write_text("from numba import njit\n")
    (pkg / "cli.py").write_text("print('no kernels here')\n")
    return pkg


def _cached(pkg):
    files = [pkg / "kernels" / "__pycache__" / name for name in ("conv.k-1.py311.nbi", "conv.k-1.py311.1.nbc")]
    for f in files:
        f.write_bytes(b"machine code")
    return files


def test_an_edited_helper_drops_every_cached_kernel(tmp_path, monkeypatch):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    pkg = _package(tmp_path)
    jit_cache.drop_stale_kernel_caches(pkg)                 # first run: stamps the sources
    files = _cached(pkg)
    assert not jit_cache.drop_stale_kernel_caches(pkg)      # unchanged: the cache stays
    assert all(f.exists() for f in files)
    (pkg / "cli.py").write_text("print('edited')\n")    # no jitted code: the cache stays
    assert not jit_cache.drop_stale_kernel_caches(pkg)
    assert all(f.exists() for f in files)
    (pkg / "kernels" / "half.py").write_text("@overload(len)\ndef f(): pass\nx = 2\n")  # the helper
    assert jit_cache.drop_stale_kernel_caches(pkg)
    assert not any(f.exists() for f in files)
    assert not jit_cache.drop_stale_kernel_caches(pkg)      # stamped again


def test_a_custom_numba_cache_dir_is_handled(tmp_path, monkeypatch):
    pkg = _package(tmp_path / "src")
    cache = tmp_path / "cache"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(cache))
    jit_cache.drop_stale_kernel_caches(pkg)
    mirrored = cache / str(pkg).lstrip("/") / "kernels" / "__pycache__"
    mirrored.mkdir(parents=True)
    stale = mirrored / "conv.k-1.py311.nbi"
    stale.write_bytes(b"machine code")
    (pkg / "optim.py").write_text("from numba import njit\nchanged = True\n")
    assert jit_cache.drop_stale_kernel_caches(pkg)
    assert not stale.exists()


def test_the_real_package_is_stamped_with_its_current_sources():
    digest = jit_cache.sources_digest(jit_cache.compiled_sources())
    stamp = jit_cache._cache_root(jit_cache.PACKAGE) / "__pycache__" / jit_cache.STAMP
    assert stamp.read_text().strip() == digest
