import os

import pytest
import torch

# Tests check results, not speed: never autotune (on a GPU that would time every new shape and
# write to the user's cache). tests/test_tuning.py exercises the tuning modes explicitly.
os.environ.setdefault("TRITON_CONV_AUTOTUNE", "heuristic")
# float32 is checked against IEEE bounds, but torch lets cuDNN convolutions use TF32 by default and
# the kernels follow that flag (kernels/common.py). tests/test_gpu.py turns it on where it checks TF32.
torch.backends.cudnn.allow_tf32 = False

if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
    raise pytest.UsageError("on a machine without CUDA, run the tests with TRITON_INTERPRET=1 (make test does)")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--thorough", action="store_true", help="also run the tests marked slow (make test-thorough)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the tests marked slow unless --thorough is given, or -m names the marker itself."""
    if config.getoption("--thorough") or "slow" in config.getoption("markexpr"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def gpu_tiles():
    """Plan with the GPU tiles (many programs per problem) instead of the interpreter's large ones."""
    from triton_conv.tuning.configs import planning_gpu_tiles

    with planning_gpu_tiles():
        yield


@pytest.fixture
def tied_timing(tmp_path, monkeypatch):
    """Selection times on CPU tensors, every config in the same time (so the heuristic, timed
    first, wins), into an empty cache: which keys are tuned, without a GPU."""
    from triton_conv.tuning import cache, select

    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(select.AUTOTUNE_ENV, raising=False)
    monkeypatch.setattr(select, "can_time", lambda device: True)
    monkeypatch.setattr(select, "time_ms", lambda run: 1.0)
