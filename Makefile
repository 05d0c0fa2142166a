# Every target sets itself up from nothing: a virtual environment in .venv with torch 2.13.0
# installed first (on a CPU machine that is the CPU build, not several GB of CUDA packages).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# make bench ARGS=--smoke (or --static, --report CSV); with no ARGS it needs a CUDA GPU.
ARGS ?=

.PHONY: demo test test-gpu test-thorough bench gpu-check lint format clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test,demo]'
	touch $(STAMP)

demo: $(STAMP)
	TRITON_INTERPRET=1 $(VENV)/bin/triton-conv demo

# CPU: the kernels run through Triton's interpreter.
test: $(STAMP)
	TRITON_INTERPRET=1 $(PY) -m pytest -n 2 -q $(PYTEST_ARGS)

test-thorough: $(STAMP)
	TRITON_CONV_THOROUGH=1 TRITON_INTERPRET=1 $(PY) -m pytest -n 2 -q $(PYTEST_ARGS)

# CUDA: the same suite on the GPU (for a machine with torch and triton already installed).
test-gpu:
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

# The benchmark suite; --smoke runs it through the interpreter (it sets TRITON_INTERPRET=1 itself).
bench: $(STAMP)
	$(VENV)/bin/triton-conv bench $(ARGS)

# A CUDA machine with torch and triton preinstalled and no package index: install this checkout
# alone into $(PYTHON) (no venv, no dependencies), then test, benchmark and tune within 8 minutes
# into gpu-check-out/<UTC time>/ (ARGS=--quick: 3 minutes; ARGS="--out DIR"). On any machine,
# ARGS=--dry-run lists the stages, their commands and limits, and the CUDA tests (from .venv).
GPU_CHECK_INSTALL = $(PYTHON) -m pip install --no-index --no-deps --no-build-isolation -e .
ifneq (,$(findstring --dry-run,$(ARGS)))
gpu-check: $(STAMP)
	$(VENV)/bin/triton-conv gpu-check $(ARGS)
else
gpu-check:
	$(GPU_CHECK_INSTALL) || PIP_BREAK_SYSTEM_PACKAGES=1 $(GPU_CHECK_INSTALL)
	$(PYTHON) -m triton_conv.cli gpu-check $(ARGS)
endif

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
