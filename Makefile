# edge-lls — every target sets up the virtual environment it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install train test test-fast test-portable bench clean clean-cache

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Train the default model on the built-in digits dataset (no download, about a minute).
train: $(STAMP)
	$(VENV)/bin/edge-lls train

## All tests, including the long end-to-end ones (marked `long`).
test: $(STAMP)
	$(PY) -m pytest -q

## Unit tests only.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not long"

## The unit tests as an AVX2-only machine runs them: OpenBLAS's Haswell kernels and
## Numba code generated for Haswell (other BLAS kernels, other vector widths). Numba's
## cache for that target goes to its own folder, so the native cache is left alone.
PORTABLE_CACHE ?= build/numba-haswell
test-portable: $(STAMP)
	OPENBLAS_CORETYPE=Haswell NUMBA_CPU_NAME=haswell NUMBA_CACHE_DIR=$(abspath $(PORTABLE_CACHE)) \
	    $(PY) -m pytest -q -m "not long"

## Benchmarks against peers (PyTorch CPU installed on demand into the venv).
bench: $(STAMP)
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) tools/bench_train.py

## Numba caches compiled kernels next to the sources and checks only each kernel's own
## file: after editing a kernel that others inline, drop the caches.
clean-cache:
	find edge_lls -name '*.nbi' -delete -o -name '*.nbc' -delete

clean: clean-cache
	rm -rf $(VENV) build *.egg-info .pytest_cache
