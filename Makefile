# Every target sets itself up from nothing: a virtual environment in .venv with torch 2.13.0
# installed first (on a CPU machine that is the CPU build, not several GB of CUDA packages).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# make bench ARGS=--smoke (or --static, --report CSV); with no ARGS it needs a CUDA GPU.
ARGS ?=

.PHONY: demo test test-gpu test-thorough bench lint format clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test,demo]'
	touch $(STAMP)

# Where the venv's torch sees no CUDA GPU, the kernels run through Triton's interpreter
# (TRITON_INTERPRET=1); where it sees one, they run on the GPU.
WHERE_KERNELS_RUN = env $$($(PY) -c 'import torch; print("" if torch.cuda.is_available() else "TRITON_INTERPRET=1")')

demo: $(STAMP)
	$(WHERE_KERNELS_RUN) $(VENV)/bin/triton-conv demo

test: $(STAMP)
	$(WHERE_KERNELS_RUN) $(PY) -m pytest -n 2 -q $(PYTEST_ARGS)

test-thorough: $(STAMP)
	$(WHERE_KERNELS_RUN) TRITON_CONV_THOROUGH=1 $(PY) -m pytest -n 2 -q $(PYTEST_ARGS)

# CUDA: the same suite on the GPU (for a machine with torch and triton already installed).
test-gpu:
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

# The benchmark suite; --smoke runs it through the interpreter (it sets TRITON_INTERPRET=1 itself).
bench: $(STAMP)
	$(VENV)/bin/triton-conv bench $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
