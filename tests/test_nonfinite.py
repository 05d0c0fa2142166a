"""NaN and Inf go through the convolution (transposed too) and every fused activation as they go
through torch's."""

from __future__ import annotations

import pytest
import torch

import triton_conv
from triton_conv.kernels.epilogue import ACTIVATIONS, TORCH_ACTIVATIONS

from .reference import DEVICE

pytestmark = [
    pytest.mark.nonfinite,
    # NumPy, running the interpreted kernels, warns about the NaN it computes on purpose here.
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

NAN, INF = float("nan"), float("inf")
# Pre-activations on both sides of every activation's kinks and saturations, and non-finite ones.
VALUES = [NAN, INF, -INF, -7.0, -1.0, 0.0, 0.5, 3.0, 6.0, 7.0]
# Output gradients with non-finite entries where the activation's derivative is 0, 1 and between.
GRADS = [1.0, 1.0, INF, 1.0, INF, 1.0, -INF, NAN, 1.0, 1.0]


@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("kernel", ["implicit_gemm", "direct"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_nan_and_inf_like_torch(activation, kernel, name):
    """A 1x1 convolution (or transposed convolution) with unit weights passes each value through
    unchanged, so the fused activation sees exactly VALUES; outputs and every gradient match
    torch's, NaN for NaN."""
    channels, groups = (1, 1) if kernel == "implicit_gemm" else (2, 2)  # grouped, few channels: direct
    # float64: torch's float32 CPU gelu gives NaN at +inf (its vectorized path), where its float64
    # path and the mathematics give +inf, as the kernels do.
    options = dict(dtype=torch.float64, device=DEVICE)
    x = torch.tensor(VALUES, **options).repeat(1, channels, 1, 1)
    residual = torch.zeros_like(x)
    w = torch.ones(channels, 1, 1, 1, **options)
    b = torch.zeros(channels, **options)
    grad = torch.tensor(GRADS, **options).expand_as(x)
    results = []
    for conv in (getattr(triton_conv, name), None):
        inputs = [t.clone().requires_grad_() for t in (x, w, b, residual)]
        if conv is None:
            z = getattr(torch.nn.functional, name)(*inputs[:3], groups=groups) + inputs[3]
            # Element by element: torch's vectorized CPU relu6 backward drops NaN, where its scalar
            # path and its CUDA kernel pass the gradient through, as relu's do everywhere.
            y = torch.stack([TORCH_ACTIVATIONS[activation](v) for v in z.flatten()]).view_as(z)
        else:
            y = conv(*inputs[:3], groups=groups, activation=activation, residual=inputs[3])
        results.append([y, *torch.autograd.grad(y, inputs, grad)])
    names = ["output", "input grad", "weight grad", "bias grad", "residual grad"]
    for name, got, want in zip(names, *results, strict=True):
        torch.testing.assert_close(got, want, equal_nan=True, msg=lambda m, name=name: f"{activation} {name}: {m}")
