"""The main job runs end to end: triton_conv trains like its torch twin."""

import pytest

from triton_conv.demo import run_demo

pytestmark = pytest.mark.demo


def test_demo_trains_like_torch(capsys):
    result = run_demo(epochs=1, batch_size=480)
    assert max(abs(a - b) for a, b in zip(result.triton_losses, result.torch_losses)) < 1e-4
    assert abs(result.triton_accuracy - result.torch_accuracy) <= 0.02
    assert result.max_parameter_difference < 1e-3
    assert "test accuracy" in capsys.readouterr().out
