"""Operator registration: opcheck, gradcheck (and double backward), torch.compile, torch.export."""

import pytest
import torch

import triton_conv
from triton_conv import autograd as ops
from triton_conv.testing import TORCH_CONV, TRITON_CONV

from .cases import GRADCHECK_CASES, named, named_cases, params
from .checks import check_compile_matches_eager, check_double_backward, check_export_keeps_ops
from .reference import DEVICE, make_inputs, reference_forward

pytestmark = pytest.mark.ops

# Small cases, one per feature: strides and dilation, groups, asymmetric 'same', 3-D.
GRAD_CASES = named_cases("strided_dilated_1d", "same_even_kernel_grouped_1d", "same_grouped_2d", "grouped_dilated_3d")


def _op_args(case, dtype=torch.float64, requires_grad=False):
    x, w, b = make_inputs(case, dtype, requires_grad=requires_grad)
    spec = triton_conv.spec.conv_spec(x, w, b, **case.kwargs(), ndim=case.ndim)
    geometry = (
        list(spec.stride[3 - case.ndim :]),
        spec.op_padding(),
        list(spec.dilation[3 - case.ndim :]),
        case.groups,
    )
    return x, w, b, spec, geometry


@pytest.mark.parametrize("case", params(GRAD_CASES))
def test_opcheck_every_op(case):
    x, w, b, spec, geometry = _op_args(case, requires_grad=True)
    dy = torch.randn(spec.out_shape, dtype=x.dtype, device=x.device, requires_grad=True)
    torch.library.opcheck(ops.conv_forward, (x, w, b, None, *geometry, "none"))
    residual = torch.randn(spec.out_shape, dtype=x.dtype, device=x.device, requires_grad=True)
    torch.library.opcheck(ops.conv_forward, (x, w, b, residual, *geometry, "silu"))
    torch.library.opcheck(ops.activation_grad, (dy, torch.randn_like(dy, requires_grad=True), "gelu"))
    torch.library.opcheck(ops.conv_input_grad, (dy, w, list(x.shape), False, *geometry))
    torch.library.opcheck(ops.conv_weight_grad, (dy, x, list(w.shape), *geometry, True))


# Fast mode checks random projections of the Jacobian; the exact mode (slow) checks every entry.
GRADCHECK_MODES = [pytest.param(True, id="fast"), pytest.param(False, id="exact", marks=pytest.mark.slow)]


@pytest.mark.parametrize("fast_mode", GRADCHECK_MODES)
@pytest.mark.parametrize("case", params(GRADCHECK_CASES))
def test_gradcheck_and_gradgradcheck(case, fast_mode):
    x, w, b, _, _ = _op_args(case, requires_grad=True)

    def conv(x, w, b):
        return TRITON_CONV[case.ndim](x, w, b, **case.kwargs(), padding_mode=case.padding_mode)

    assert torch.autograd.gradcheck(conv, (x, w, b), fast_mode=fast_mode)
    assert torch.autograd.gradgradcheck(conv, (x, w, b), fast_mode=fast_mode)


class _SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.randn(6, 3, 3, 3) / 5)
        self.b1 = torch.nn.Parameter(torch.randn(6))
        self.w2 = torch.nn.Parameter(torch.randn(4, 3, 2, 2) / 3)

    def forward(self, x):
        y = torch.relu(triton_conv.conv2d(x, self.w1, self.b1, padding=1))
        return triton_conv.conv2d(y, self.w2, None, stride=2, padding="valid", groups=2)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_matches_eager(backend):
    model = _SmallNet().double().to(DEVICE)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, device=DEVICE, requires_grad=True)
    check_compile_matches_eager(model, x, backend)


def test_export_keeps_ops():
    check_export_keeps_ops(
        _SmallNet().to(DEVICE), torch.randn(2, 3, 8, 8, device=DEVICE), "triton_conv.conv_forward", 2
    )


def test_double_backward_through_input_and_weight():
    """A gradient penalty (grad of a grad) equals torch's."""
    case = named("same_grouped_2d")
    x, w, b, _, _ = _op_args(case, requires_grad=True)
    check_double_backward(TRITON_CONV[2], TORCH_CONV[2], case, x, w, b)


@pytest.mark.parametrize("case", params(GRAD_CASES))
def test_aten_fallback_matches_kernels(case, monkeypatch):
    """CPU tensors without the interpreter run aten: the same values, gradients and layouts."""
    from triton_conv.autograd import ops as op_module

    def run():
        x, w, b = make_inputs(case, torch.float64, "channels_last", requires_grad=True)
        r = torch.randn(
            reference_forward(case, x, w, b).shape, dtype=torch.float64, device=x.device, requires_grad=True
        )
        y = TRITON_CONV[case.ndim](x, w, b, **case.kwargs(), activation="gelu", residual=r)
        return (y, *torch.autograd.grad(y, [x, w, b, r], torch.ones_like(y)))

    torch.manual_seed(1)
    kernels = run()
    monkeypatch.setattr(op_module, "_use_kernels", lambda t: False)
    torch.manual_seed(1)
    fallback = run()
    for got, want in zip(fallback, kernels):
        assert got.stride() == want.stride()
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_gradient_ops_called_directly_refuse_a_mismatched_grad_output():
    """The gradient ops check grad_output against the geometry and the other operand, as aten's
    convolution_backward does, rather than read a mismatched one wrongly."""
    x = torch.randn(2, 4, 6, 6, device=DEVICE)
    w = torch.randn(8, 2, 3, 3, device=DEVICE)
    geometry = ([1, 1], [1, 1, 1, 1], [1, 1], 2)
    dy = torch.randn(2, 8, 6, 6, device=DEVICE)
    ops.conv_weight_grad(dy, x, w.shape, *geometry, True)
    ops.conv_input_grad(dy, w, x.shape, False, *geometry)
    with pytest.raises(RuntimeError, match=r"grad_output type \(torch.bfloat16\) and input type \(torch.float32\)"):
        ops.conv_weight_grad(dy.bfloat16(), x, w.shape, *geometry, True)
    with pytest.raises(RuntimeError, match=r"grad_output type \(torch.float64\) and weight type \(torch.float32\)"):
        ops.conv_input_grad(dy.double(), w, x.shape, False, *geometry)
    with pytest.raises(RuntimeError, match=r"grad_output of shape \(2, 8, 5, 6\) where the convolution's output"):
        ops.conv_weight_grad(dy[:, :, :5], x, w.shape, *geometry, True)
    with pytest.raises(RuntimeError, match=r"has shape \(2, 8, 6, 6\)"):
        ops.conv_input_grad(dy[:1], w, x.shape, False, *geometry)
