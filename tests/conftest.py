import os

import pytest
import torch

# Tests check results, not speed: never autotune (on a GPU that would time every new shape and
# write to the user's cache). tests/test_tuning.py exercises the tuning modes explicitly.
os.environ.setdefault("TRITON_CONV_AUTOTUNE", "heuristic")

if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    raise pytest.UsageError("on a machine without CUDA, run the tests with TRITON_INTERPRET=1 (make test does)")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def gpu_tiles(monkeypatch):
    """Plan with the GPU tiles (many programs per problem) instead of the interpreter's large ones."""
    from triton_conv.tuning import configs

    monkeypatch.setattr(configs, "INTERPRETER_CONFIGS", None)
