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


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def gpu_tiles():
    """Plan with the GPU tiles (many programs per problem) instead of the interpreter's large ones."""
    from triton_conv.tuning.configs import planning_gpu_tiles

    with planning_gpu_tiles():
        yield
