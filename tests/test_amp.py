"""Automatic mixed precision: a converted model under torch.autocast behaves like torch's."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import triton_conv
from triton_conv.testing import relative_error, tolerance

from .reference import DEVICE

pytestmark = pytest.mark.amp

# torch's CPU autocast runs convolutions in bfloat16 and in float16 alike; CUDA's too.
AUTOCAST_DTYPES = [torch.bfloat16, torch.float16]
# The largest reduction of the model below (8 channels x 3x3 taps), for the tolerance.
REDUCTION = 72


def _model() -> nn.Module:
    """1-D, 2-D and 3-D, dense, grouped and pointwise convolutions between float32 activations."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1d = nn.Conv1d(3, 4, 3, padding=1)
            self.conv2d = nn.Conv2d(4, 8, 3, padding=1)
            self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=4)
            self.pointwise = nn.Conv2d(8, 4, 1, bias=False)
            self.conv3d = nn.Conv3d(4, 2, (1, 3, 3), padding=(0, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.conv1d(x.flatten(2))).unflatten(2, x.shape[2:])
            y = nn.functional.silu(self.grouped(torch.relu(self.conv2d(y))))
            return self.conv3d(self.pointwise(y).unsqueeze(2)).squeeze(2)

    torch.manual_seed(3)
    return Net().to(DEVICE)


def _forward_backward(model: nn.Module, x: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
    with torch.autocast(DEVICE, dtype=dtype):
        y = model(x)
    y.float().square().mean().backward()
    return [y, *(p.grad for p in model.parameters())]


@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES, ids=str)
def test_converted_model_matches_torch_under_autocast(dtype):
    """torch's dtypes; values within the dtype's tolerance of float64, and as close to torch's
    autocast results as torch's own rounding allows (its CPU bfloat16 backward rounds more)."""
    torch_model = _model()
    ours = triton_conv.convert_model(copy.deepcopy(torch_model))
    exact = copy.deepcopy(torch_model).double()
    x = torch.randn(2, 3, 6, 5, device=DEVICE)
    expected = _forward_backward(torch_model, x, dtype)
    got = _forward_backward(ours, x, dtype)
    y = exact(x.double())
    y.square().mean().backward()
    reference = [y, *(p.grad for p in exact.parameters())]
    assert got[0].dtype == expected[0].dtype == dtype
    names = ["output"] + [name for name, _ in ours.named_parameters()]
    bound = tolerance(dtype, REDUCTION)
    for name, actual, want, truth in zip(names, got, expected, reference, strict=True):
        assert actual.dtype == want.dtype, f"{name}: {actual.dtype} != torch's {want.dtype}"
        err = relative_error(actual, truth)
        assert err <= bound, f"{name}: relative error {err:.2e} against float64 ({dtype})"
        torch_err = relative_error(want, truth)
        err = relative_error(actual, want)
        assert err <= bound + torch_err, f"{name}: {err:.2e} from torch's, whose own error is {torch_err:.2e}"
    assert all(p.grad.dtype == torch.float32 for p in ours.parameters())


@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES, ids=str)
def test_functional_casts_like_torch(dtype, monkeypatch):
    """Mixed argument dtypes are cast before validation, and the Triton kernels run in the
    autocast dtype; float64 is left alone, as torch does."""
    from triton_conv.kernels import dispatch

    kernel_dtypes = []
    forward = dispatch.forward
    monkeypatch.setattr(
        dispatch, "forward", lambda input, *args: kernel_dtypes.append(input.dtype) or forward(input, *args)
    )
    x = torch.randn(1, 2, 5, 5, device=DEVICE).to(dtype)
    w = torch.randn(3, 2, 3, 3, device=DEVICE)
    b = torch.randn(3, device=DEVICE, dtype=torch.float64)
    residual = torch.randn(1, 3, 3, 3, device=DEVICE)
    with torch.autocast(DEVICE, dtype=dtype):
        y = triton_conv.conv2d(x, w, residual=residual, activation="relu")
        want = torch.relu(nn.functional.conv2d(x, w) + residual.to(dtype))
        assert y.dtype == want.dtype == dtype
        assert kernel_dtypes == [dtype]
        assert relative_error(y, want) <= tolerance(dtype, 18)
        with pytest.raises(RuntimeError):
            nn.functional.conv2d(x, w, b)
        with pytest.raises(RuntimeError):
            triton_conv.conv2d(x, w, b)
        with torch.autocast(DEVICE, enabled=False):
            assert triton_conv.conv2d(x.float(), w).dtype == torch.float32


@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES, ids=str)
def test_conv_transpose_casts_like_torch(dtype, monkeypatch):
    """torch's autocast casts the transposed convolutions as it casts the convolutions (CPU and
    CUDA, bfloat16 and float16): the Triton kernels run in the autocast dtype, the output has it,
    float64 is left alone, and gradients reach float32 leaves in float32, close to torch's."""
    from triton_conv.kernels import dispatch

    kernel_dtypes = []
    input_grad = dispatch.input_grad
    monkeypatch.setattr(
        dispatch, "input_grad", lambda dy, *args: kernel_dtypes.append(dy.dtype) or input_grad(dy, *args)
    )
    x = torch.randn(1, 2, 4, 4, device=DEVICE, requires_grad=True)
    w = torch.randn(2, 3, 3, 3, device=DEVICE, requires_grad=True)
    b = torch.randn(3, device=DEVICE, requires_grad=True)
    residual = torch.randn(1, 3, 8, 8, device=DEVICE)
    kwargs = dict(stride=2, padding=1, output_padding=1)
    with torch.autocast(DEVICE, dtype=dtype):
        y = triton_conv.conv_transpose2d(x, w, b, **kwargs, residual=residual, activation="relu")
        want = torch.relu(nn.functional.conv_transpose2d(x, w, b, **kwargs) + residual.to(dtype))
        y_1d = triton_conv.conv_transpose1d(x[:, :, 0], w[:, :, 0], b, stride=2)
        want_1d = nn.functional.conv_transpose1d(x[:, :, 0], w[:, :, 0], b, stride=2)
        assert y.dtype == want.dtype == y_1d.dtype == want_1d.dtype == dtype
        assert kernel_dtypes == [dtype, dtype]
        assert triton_conv.conv_transpose2d(x.double(), w.double()).dtype == torch.float64
    bound = tolerance(dtype, 18)  # 2 input channels x 3x3 taps
    for got, expected in ((y, want), (y_1d, want_1d)):
        assert relative_error(got, expected) <= bound
        grads = torch.autograd.grad(got.float().square().sum(), [x, w, b])
        expected_grads = torch.autograd.grad(expected.float().square().sum(), [x, w, b])
        for name, actual, torch_grad in zip("xwb", grads, expected_grads, strict=True):
            assert actual.dtype == torch_grad.dtype == torch.float32, name
            assert relative_error(actual, torch_grad) <= bound, name


def test_compiled_model_under_autocast():
    model = triton_conv.convert_model(_model())
    x = torch.randn(2, 3, 6, 5, device=DEVICE)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        got, want = compiled(x), model(x)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("dtype", AUTOCAST_DTYPES, ids=str)
def test_grad_scaler_training_matches_torch(dtype):
    """A few steps of SGD with a GradScaler: the same parameters as torch's model, all finite."""
    torch_model = _model()
    ours = triton_conv.convert_model(copy.deepcopy(torch_model))
    generator = torch.Generator().manual_seed(5)
    data = [
        (torch.randn(2, 3, 6, 5, generator=generator), torch.randn(2, 2, 6, 5, generator=generator)) for _ in range(3)
    ]
    for model in (torch_model, ours):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        scaler = torch.amp.GradScaler(DEVICE, init_scale=2.0**10)
        for x, target in data:
            optimizer.zero_grad()
            with torch.autocast(DEVICE, dtype=dtype):
                loss = nn.functional.mse_loss(model(x.to(DEVICE)).float(), target.to(DEVICE))
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
    for (name, got), want, before in zip(ours.named_parameters(), torch_model.parameters(), _model().parameters()):
        assert got.dtype == torch.float32 and torch.isfinite(got).all(), name
        assert not torch.equal(got, before), f"{name} did not train"
        err = relative_error(got - before, want - before)
        assert err <= tolerance(dtype, REDUCTION), f"{name}: update differs from torch's by {err:.2e}"
