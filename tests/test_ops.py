"""Operator registration: opcheck, gradcheck (and double backward), torch.compile, torch.export."""

import pytest
import torch

import triton_conv
from triton_conv import autograd as ops

from .cases import CASES
from .reference import DEVICE, OUR_CONV, THOROUGH, ConvCase, make_inputs, reference_forward

pytestmark = pytest.mark.ops

# Small cases, one per feature: strides and dilation, groups, asymmetric 'same', 3-D.
GRAD_CASES = [CASES[1], CASES[2], CASES[12], CASES[21]]


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


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
def test_opcheck_every_op(case):
    x, w, b, spec, geometry = _op_args(case, requires_grad=True)
    dy = torch.randn(spec.out_shape, dtype=x.dtype, device=x.device, requires_grad=True)
    torch.library.opcheck(ops.conv_forward, (x, w, b, None, *geometry, "none"))
    residual = torch.randn(spec.out_shape, dtype=x.dtype, device=x.device, requires_grad=True)
    torch.library.opcheck(ops.conv_forward, (x, w, b, residual, *geometry, "silu"))
    torch.library.opcheck(ops.activation_grad, (dy, torch.randn_like(dy, requires_grad=True), "gelu"))
    torch.library.opcheck(ops.conv_input_grad, (dy, w, list(x.shape), False, *geometry))
    torch.library.opcheck(ops.conv_weight_grad, (dy, x, list(w.shape), *geometry, True))


# Finite differences launch the kernels twice per input element: keep these tiny.
GRADCHECK_CASES = [
    ConvCase(1, 1, 2, 2, (7,), (3,), stride=2, padding=1, dilation=2),
    ConvCase(2, 1, 2, 2, (4, 5), (2, 3), padding="same", groups=2),
    ConvCase(3, 1, 2, 2, (3, 4, 3), (2, 2, 1), stride=(1, 2, 1), padding=(1, 0, 0)),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=lambda c: c.id)
def test_gradcheck_and_gradgradcheck(case):
    x, w, b, _, _ = _op_args(case, requires_grad=True)

    def conv(x, w, b):
        return OUR_CONV[case.ndim](x, w, b, **case.kwargs(), padding_mode=case.padding_mode)

    # Fast mode checks random projections of the Jacobian; thorough mode checks every entry.
    assert torch.autograd.gradcheck(conv, (x, w, b), fast_mode=not THOROUGH)
    assert torch.autograd.gradgradcheck(conv, (x, w, b), fast_mode=not THOROUGH)


class _SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1 = torch.nn.Parameter(torch.randn(6, 3, 3, 3) / 5)
        self.b1 = torch.nn.Parameter(torch.randn(6))
        self.w2 = torch.nn.Parameter(torch.randn(4, 3, 2, 2) / 3)

    def forward(self, x):
        y = torch.relu(triton_conv.conv2d(x, self.w1, self.b1, padding=1))
        return triton_conv.conv2d(y, self.w2, None, stride=2, padding="valid", groups=2)


def _loss_and_grads(model, x):
    loss = model(x).square().sum()
    return loss, torch.autograd.grad(loss, [x, *model.parameters()])


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compile_fullgraph_matches_eager(backend):
    torch._dynamo.reset()
    model = _SmallNet().double().to(DEVICE)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, device=DEVICE, requires_grad=True)
    eager_loss, eager_grads = _loss_and_grads(model, x)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    loss, grads = _loss_and_grads(compiled, x)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_export_keeps_ops():
    model = _SmallNet().to(DEVICE)
    x = torch.randn(2, 3, 8, 8, device=DEVICE)
    exported = torch.export.export(model, (x,))
    targets = [str(node.target) for node in exported.graph.nodes if node.op == "call_function"]
    assert sum("triton_conv.conv_forward" in t for t in targets) == 2, targets
    torch.testing.assert_close(exported.module()(x), model(x))


def test_double_backward_through_input_and_weight():
    """A gradient penalty (grad of a grad) equals torch's."""
    case = CASES[12]
    x, w, b, _, _ = _op_args(case, requires_grad=True)

    def penalty(conv, x, w, b):
        y = conv(x, w, b, **case.kwargs())
        (gx,) = torch.autograd.grad(y.square().sum(), [x], create_graph=True)
        return gx.square().sum()

    ours = torch.autograd.grad(penalty(triton_conv.conv2d, x, w, b), [x, w, b])
    ref = torch.autograd.grad(penalty(torch.nn.functional.conv2d, x, w, b), [x, w, b])
    for got, want in zip(ours, ref):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
def test_aten_fallback_matches_kernels(case, monkeypatch):
    """CPU tensors without the interpreter run aten: the same values, gradients and layouts."""
    from triton_conv.autograd import ops as op_module

    def run():
        x, w, b = make_inputs(case, torch.float64, "channels_last", requires_grad=True)
        r = torch.randn(
            reference_forward(case, x, w, b).shape, dtype=torch.float64, device=x.device, requires_grad=True
        )
        y = OUR_CONV[case.ndim](x, w, b, **case.kwargs(), activation="gelu", residual=r)
        return (y, *torch.autograd.grad(y, [x, w, b, r], torch.ones_like(y)))

    torch.manual_seed(1)
    kernels = run()
    monkeypatch.setattr(op_module, "_use_kernels", lambda t: False)
    torch.manual_seed(1)
    fallback = run()
    for got, want in zip(fallback, kernels):
        assert got.stride() == want.stride()
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
