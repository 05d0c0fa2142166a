# Every target sets itself up from nothing: a virtual environment in .venv with torch 2.13.0
# installed first (on a CPU machine that is the CPU build, not several GB of CUDA packages).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The oldest supported Triton (what the GPU machines run) in a venv of its own. Its interpreter
# turns one-element arrays into ints, which numpy 2.4 rejects: numpy stays below 2.4 there.
VENV36 := .venv-triton36
PY36 := $(VENV36)/bin/python
STAMP36 := $(VENV36)/.installed
TRITON36_PINS := triton==3.6.0 'numpy<2.4'
# make bench ARGS=--smoke (or --static, --report CSV); with no ARGS it needs a CUDA GPU.
ARGS ?=

.PHONY: demo test test-triton36 test-gpu test-thorough bench gpu-check lint format clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test,demo]'
	touch $(STAMP)

$(STAMP36): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV36)
	$(PY36) -m pip install -q --upgrade pip
	$(PY36) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY36) -m pip install -q -c constraints.txt $(TRITON36_PINS) -e '.[test,demo]'
	touch $(STAMP36)

# Where the venv's torch sees no CUDA GPU, the kernels run through Triton's interpreter
# (TRITON_INTERPRET=1); where it sees one, they run on the GPU.
WHERE_KERNELS_RUN = env $$($(PY) -c 'import torch; print("" if torch.cuda.is_available() else "TRITON_INTERPRET=1")')
VERSIONS := -c "import torch, triton; print(f'torch {torch.__version__}, triton {triton.__version__}')"

demo: $(STAMP)
	$(WHERE_KERNELS_RUN) $(VENV)/bin/triton-conv demo

test: $(STAMP)
	$(PY) $(VERSIONS)
	$(WHERE_KERNELS_RUN) $(PY) -m pytest -n 2 --dist worksteal -q $(PYTEST_ARGS)

# The same suite under Triton 3.6.0, the oldest supported version: the GPU-target compile tests
# and the interpreter tests (CI runs this after `make test`).
test-triton36: $(STAMP36)
	$(PY36) $(VERSIONS)
	TRITON_INTERPRET=1 $(PY36) -m pytest -n 2 --dist worksteal -q $(PYTEST_ARGS)

test-thorough: $(STAMP)
	$(WHERE_KERNELS_RUN) $(PY) -m pytest -n 2 --dist worksteal -q --thorough $(PYTEST_ARGS)

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
	rm -rf $(VENV) $(VENV36) build *.egg-info .pytest_cache
