"""The fused epilogue: activation(conv + bias + residual) and its gradients, against torch."""

import pytest
import torch

import triton_conv
from triton_conv.kernels.epilogue import ACTIVATIONS, TORCH_ACTIVATIONS
from triton_conv.testing import TRITON_CONV, in_layout

from .cases import named, named_cases, params
from .reference import assert_close, make_inputs, reference_forward

pytestmark = pytest.mark.fused

# One implicit-GEMM case and one direct (depthwise) case per dimensionality that has one.
FUSED_CASES = named_cases("plain_1d", "plain_2d", "depthwise_strided_2d", "grouped_dilated_3d", "depthwise_3d")


def _run(case, activation, with_residual, layout="contiguous"):
    x, w, b = make_inputs(case, torch.float64, layout, requires_grad=True)
    ref_out = reference_forward(case, x, w, b)
    residual = None
    if with_residual:
        residual = in_layout(torch.randn(ref_out.shape, dtype=torch.float64, device=x.device), layout).requires_grad_()
    y = TRITON_CONV[case.ndim](x, w, b, **case.kwargs(), activation=activation, residual=residual)
    expected = TORCH_ACTIVATIONS[activation or "none"](ref_out + residual if with_residual else ref_out)
    assert_close(y, expected, torch.float64, case.reduction, f"fused forward {activation}")

    leaves = [t for t in (x, w, b, residual) if t is not None]
    g = torch.randn_like(y)
    ours = torch.autograd.grad(y, leaves, g)
    theirs = torch.autograd.grad(expected, leaves, g)
    for got, want, name in zip(ours, theirs, ("input", "weight", "bias", "residual")):
        assert_close(got, want, torch.float64, case.reduction, f"fused grad {name} {activation}")


@pytest.mark.parametrize("with_residual", [False, True], ids=["no_residual", "residual"])
@pytest.mark.parametrize("activation", [None, *ACTIVATIONS])
@pytest.mark.parametrize("case", params(FUSED_CASES))
def test_fused_epilogue_and_gradients(case, activation, with_residual):
    _run(case, activation, with_residual)


@pytest.mark.parametrize("case", params(named_cases("plain_2d", "depthwise_strided_2d")))
def test_fused_channels_last_and_strided_residual(case):
    _run(case, "silu", True, "channels_last")
    _run(case, "relu", True, "strided_view")


def test_fused_unbatched():
    case = named("plain_2d")
    x, w, b = make_inputs(case, torch.float64)
    r = torch.randn(reference_forward(case, x, w, b).shape[1:], dtype=torch.float64, device=x.device)
    y = triton_conv.conv2d(x[0], w, b, **case.kwargs(), activation="gelu", residual=r)
    expected = torch.nn.functional.gelu(reference_forward(case, x, w, b)[0] + r)
    assert_close(y, expected, torch.float64, case.reduction, "unbatched fused")


def test_bad_epilogue_arguments():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    with pytest.raises(ValueError, match="activation must be None or one of"):
        triton_conv.conv2d(x, w, activation="swish")
    with pytest.raises(RuntimeError, match=r"residual must have the output's shape \[1, 3, 3, 3\]"):
        triton_conv.conv2d(x, w, residual=torch.randn(1, 3, 5, 5))
    with pytest.raises(RuntimeError, match="residual .* must have the input's dtype"):
        triton_conv.conv2d(x, w, residual=torch.randn(1, 3, 3, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="'residual' must be Tensor"):
        triton_conv.conv2d(x, w, residual=1.0)


def test_fallback_activation_grad_matches_kernel(monkeypatch):
    """The aten fallback (CPU without the interpreter) gives the kernel's derivative, in its layout."""
    from triton_conv.autograd import ops as op_module

    g = torch.randn(2, 3, 4, 5, dtype=torch.float64).to(memory_format=torch.channels_last)
    for activation in ACTIVATIONS:
        z = torch.randn(2, 3, 4, 5, dtype=torch.float64)
        saved = z if activation in ("silu", "gelu") else TORCH_ACTIVATIONS[activation](z)
        kernel = op_module.activation_grad(g, saved, activation)
        monkeypatch.setattr(op_module, "_use_kernels", lambda t: False)
        fallback = op_module.activation_grad(g, saved, activation)
        monkeypatch.undo()
        assert fallback.stride() == kernel.stride() == saved.stride()
        torch.testing.assert_close(fallback, kernel, rtol=1e-12, atol=1e-12)


def test_revert_refuses_fused_activation():
    conv = triton_conv.Conv2d(2, 3, 3)
    conv.activation = "relu"
    with pytest.raises(ValueError, match="fused activation"):
        triton_conv.revert_model(torch.nn.Sequential(conv))
    assert isinstance(conv, triton_conv.Conv2d)


def test_tanh_is_precise_near_zero():
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64) * 1e-6
    w = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    y = triton_conv.conv2d(x, w, activation="tanh")
    torch.testing.assert_close(y, torch.tanh(x), rtol=1e-14, atol=0)
