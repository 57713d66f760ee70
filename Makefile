# flashduo: `make bench` (benchmark on this GPU, or a CPU demo without one) and `make test`.
# Both install what is missing (torch, triton, pytest, numpy, ninja, matplotlib) and nothing
# when it is already there; `make lint` likewise installs ruff.
# `make` alone builds the CUDA warm-up examples into build/; `make run-examples` runs them.

PYTHON ?= python3
TORCH_SPEC ?= torch==2.14.1
PYTEST_ARGS ?= -q
# On a GPU machine with pytest-xdist, spread the suite (mostly Triton compilation) over one worker
# per CPU core, at most 16 (timings in docs/perf-notes.md, Triton v1.3).
XDIST := $(shell $(PYTHON) -c "import os, torch, xdist; print(f'-n {min(16, os.cpu_count() or 1)}' if torch.cuda.is_available() else '')" 2>/dev/null)
BENCH_ARGS ?=

# CUDA examples: the visible GPU's architecture, sm_90 when none is visible.
NVCC ?= nvcc
GPU_CC := $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .')
ARCH ?= sm_$(if $(GPU_CC),$(GPU_CC),90)
NVCC_FLAGS ?= -O3 -lineinfo -std=c++17
BUILD ?= build
EXAMPLES := vector_add_simple vector_add matrix_add matmul_tiled online_softmax wgmma_gemm
# wgmma and setmaxnreg exist only in sm_90a code: wgmma_gemm always carries an sm_90a cubin (and
# one for the visible GPU when that is not sm_90, where it says why it skips).
comma := ,
SM90A := -gencode arch=compute_90a$(comma)code=sm_90a
WGMMA_ARCH := $(SM90A) $(if $(filter sm_90,$(ARCH)),,-gencode arch=compute_$(subst sm_,,$(ARCH))$(comma)code=$(ARCH))
SM90_HEADERS := $(wildcard cuda/flash/sm90/*.cuh cuda/flash/sm90/*.h)
EXAMPLE_BINS := $(addprefix $(BUILD)/,$(EXAMPLES))

.PHONY: all examples run-examples flash-check deps test bench info lint clean

all: examples

examples: $(EXAMPLE_BINS)

$(BUILD)/%: cuda/examples/%.cu cuda/examples/cuda_common.cuh
	@mkdir -p $(BUILD)
	$(NVCC) $(NVCC_FLAGS) -arch=$(ARCH) -o $@ $<

$(BUILD)/wgmma_gemm: cuda/examples/wgmma_gemm.cu cuda/examples/cuda_common.cuh $(SM90_HEADERS)
	@mkdir -p $(BUILD)
	$(NVCC) $(NVCC_FLAGS) $(WGMMA_ARCH) -o $@ $<

run-examples: examples
	@set -e; for x in $(EXAMPLE_BINS); do ./$$x; done

# Standalone check of the CUDA FlashAttention kernels against a host reference (GPU), compiled
# with the extension's nvcc flags (fast math among them) so that its timings are the product's.
# The kernels' headers and the flags: the extension's one list (bindings/sources.py).
FLASH_HEADERS := $(shell $(PYTHON) -c "from bindings import sources; print(*sources.DEPENDS)" 2>/dev/null)
FLASH_NVCC_FLAGS := $(shell $(PYTHON) -c "from bindings import sources; print(*sources.NVCC_FLAGS)" 2>/dev/null)
$(BUILD)/check_flash: cuda/flash/check_flash.cu $(FLASH_HEADERS) cuda/examples/cuda_common.cuh
	@mkdir -p $(BUILD)
	$(NVCC) $(if $(FLASH_NVCC_FLAGS),$(FLASH_NVCC_FLAGS),$(NVCC_FLAGS)) -std=c++17 $(WGMMA_ARCH) -Xptxas -v -o $@ $<

flash-check: $(BUILD)/check_flash
	./$(BUILD)/check_flash

deps:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH_SPEC)"
	@$(PYTHON) -c "import triton" 2>/dev/null || $(PYTHON) -m pip install triton
	@$(PYTHON) -c "import pytest" 2>/dev/null || $(PYTHON) -m pip install pytest
	@$(PYTHON) -c "import numpy" 2>/dev/null || $(PYTHON) -m pip install numpy  # Triton's interpreter
	@$(PYTHON) -c "import ninja" 2>/dev/null || $(PYTHON) -m pip install ninja  # CUDA extension build
	@$(PYTHON) -c "import matplotlib" 2>/dev/null || $(PYTHON) -m pip install matplotlib  # bench plots

# pytest's exit code 5 means "no tests collected": not a failure of the suite.
test: deps
	@$(PYTHON) -m pytest $(XDIST) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

bench: deps
	$(PYTHON) -m flashduo bench $(BENCH_ARGS)

info: deps
	$(PYTHON) -m flashduo info

lint:
	@$(PYTHON) -m ruff --version >/dev/null 2>&1 || $(PYTHON) -m pip install ruff
	$(PYTHON) -m ruff check .

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
