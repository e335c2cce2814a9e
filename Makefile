# edge-lls — every target sets up the virtual environment it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install toolchain train test test-fast test-portable bench clean clean-cache rpi-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## The firmware's compilers and emulator (Debian packages): the host gcc, the Arm GNU
## toolchain with newlib, and QEMU's Cortex-M boards. Installed with apt when missing
## (as root, or through sudo).
APT_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
toolchain:
	@if ! command -v arm-none-eabi-gcc >/dev/null || ! command -v qemu-system-arm >/dev/null \
	    || [ ! -e /usr/lib/arm-none-eabi/newlib ]; then \
	    echo "installing $(APT_PACKAGES)"; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

## The firmware for both QEMU boards (mps2-an386 = cortex-m4, mps2-an500 = cortex-m7):
## firmware_bridge/firmware/build/<board>/edge-lls-fw.elf and .map, and the test ELFs.
.PHONY: firmware
firmware: toolchain
	$(MAKE) -C firmware_bridge/firmware BOARD=mps2-an386 firmware tests
	$(MAKE) -C firmware_bridge/firmware BOARD=mps2-an500 firmware tests
	$(MAKE) -C firmware_bridge/firmware BOARD=mps2-an386 SESSION=1 firmware
	$(MAKE) -C firmware_bridge/firmware BOARD=mps2-an500 SESSION=1 firmware

## The bridge firmware on QEMU (BOARD=mps2-an386: cortex-m4, mps2-an500: cortex-m7), UART0 on a
## free local port: prints the --port for `edge-lls deploy / board / train`; Ctrl-C stops it.
## The flash persists in firmware_bridge/firmware/build/<board>-flash.bin (FLASH=FILE: another).
BOARD ?= mps2-an500
.PHONY: emulator
emulator: $(STAMP) toolchain
	$(PY) -m firmware_bridge.emulator --board $(BOARD) $(if $(FLASH),--flash $(FLASH))

## Train the default model on the built-in digits dataset (no download, about a minute).
train: $(STAMP)
	$(VENV)/bin/edge-lls train

## All tests, including the long end-to-end ones (marked `long`).
test: $(STAMP) toolchain
	$(PY) -m pytest -q

## Unit tests only.
test-fast: $(STAMP) toolchain
	$(PY) -m pytest -q -m "not long"

## The unit tests as an AVX2-only machine runs them: OpenBLAS's Haswell kernels and
## Numba code generated for Haswell (other BLAS kernels, other vector widths). Numba's
## cache for that target goes to its own folder, so the native cache is left alone.
PORTABLE_CACHE ?= build/numba-haswell
test-portable: $(STAMP) toolchain
	OPENBLAS_CORETYPE=Haswell NUMBA_CPU_NAME=haswell NUMBA_CACHE_DIR=$(abspath $(PORTABLE_CACHE)) \
	    $(PY) -m pytest -q -m "not long"

## edge-lls on a Raspberry Pi userland (Debian bookworm arm64) under qemu-user, as root:
## builds the root filesystem once (cached in $XDG_CACHE_HOME or ~/.cache, edge-lls/), then runs
## unit tests, one training epoch, TFLite export and `edge-lls serve` inside, and compares them
## with this machine's (tools/rpi/rpi_check.py, docs/raspberry-pi.md). RPI_CPU=cortex-a72: a Pi 4.
RPI_CPU ?= cortex-a76
rpi-check: $(STAMP)
	$(PY) tools/rpi/rpi_check.py run --cpu $(RPI_CPU)

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
