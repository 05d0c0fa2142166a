"""Gradients of input, weight and bias against torch's, on the whole case table."""

import importlib

import pytest
import torch

from triton_conv.kernels.implicit_gemm_forward import plan_forward
from triton_conv.kernels.implicit_gemm_input_grad import plan_input_grad
from triton_conv.spec import conv_spec
from triton_conv.testing import TORCH_CONV, TRITON_CONV
from triton_conv.tuning.configs import KernelConfig

from .cases import CASES, GEMM_GROUPED, PATCHES, SUBSET, named, params
from .checks import check_backward, check_forward
from .reference import DEVICE, DTYPES, ConvCase, assert_close, make_inputs, reference_forward

pytestmark = pytest.mark.backward


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", params(CASES))
def test_backward_table(case, dtype):
    check_backward(case, dtype)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", params(PATCHES))
def test_patch_embedding_backward(case, layout):
    check_backward(case, torch.float32, layout)


@pytest.mark.parametrize("layout", ["channels_last", "strided_view", "permuted"])
@pytest.mark.parametrize("case", params(CASES, SUBSET))
def test_backward_layouts(case, layout):
    check_backward(case, torch.float32, layout)


@pytest.mark.parametrize("cotangent", ["expanded", "transposed"])
@pytest.mark.parametrize("case", params(SUBSET))
def test_backward_cotangents(case, cotangent):
    check_backward(case, torch.float64, "contiguous", cotangent)


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d.itemsize == 2], ids=str)
@pytest.mark.parametrize("case", params(CASES, SUBSET))
def test_backward_half(case, dtype):
    check_backward(case, dtype, "channels_last")


@pytest.mark.parametrize("case", params(SUBSET + GEMM_GROUPED))
def test_gpu_tiles(case, gpu_tiles):
    """The tiles a GPU runs split these problems over many programs along every grid axis."""
    check_forward(case, torch.float64, "channels_last")
    check_backward(case, torch.float64, "channels_last")


def test_only_needed_gradients_are_computed():
    case = named("plain_2d")
    x, w, b = make_inputs(case, torch.float64)
    w.requires_grad_()
    y = TRITON_CONV[2](x, w, b, **case.kwargs())
    (gw,) = torch.autograd.grad(y.sum(), [w])
    assert x.grad is None and gw.shape == w.shape


@pytest.mark.parametrize("split_k", [2, 3, 7])
def test_weight_grad_split_k_is_exact_and_deterministic(split_k):
    """Several splits reduce to the same result as one, bit for bit across repeated runs."""
    module = importlib.import_module("triton_conv.kernels.implicit_gemm_weight_grad")
    case = named("grouped_dilated_3d")
    x, w, b = make_inputs(case, torch.float64)
    spec = conv_spec(x, w, b, **case.kwargs(), ndim=case.ndim)
    dy = torch.randn(spec.out_shape, dtype=torch.float64, device=x.device)
    results = []
    for cfg in (KernelConfig(16, 16, 16, 2, 2, 1), KernelConfig(16, 16, 16, 2, 2, split_k)):
        dw, db = torch.empty_like(w), torch.empty_like(b)
        module.implicit_gemm_weight_grad(dy, x, spec, dw, db, cfg)
        results.append((dw, db))
    ref_x, ref_w, ref_b = (t.clone().requires_grad_() for t in (x, w, b))
    ref = torch.autograd.grad(reference_forward(case, ref_x, ref_w, ref_b), [ref_w, ref_b], dy)
    for dw, db in results:
        assert_close(dw, ref[0], torch.float64, spec.output_pixels, "split-K weight grad")
        assert_close(db, ref[1], torch.float64, spec.output_pixels, "split-K bias grad")
    again = torch.empty_like(w)
    module.implicit_gemm_weight_grad(dy, x, spec, again, None, KernelConfig(16, 16, 16, 2, 2, split_k))
    assert torch.equal(again, results[1][0])


@pytest.mark.parametrize("formats", ["cl-input", "cl-weight", "cl-both", "contiguous"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_weight_gradient_memory_format_is_torchs(ndim, formats):
    """The raw weight gradient (torch.autograd.grad) is channels-last where torch's is (float32:
    torch's float64 conv3d on CPU is a slow path that returns everything contiguous)."""
    channels_last = {2: torch.channels_last, 3: torch.channels_last_3d}[ndim]
    x = torch.randn(2, 4, *[5] * ndim).to(DEVICE)
    w = torch.randn(6, 4, *[3] * ndim).to(DEVICE)
    x = x.to(memory_format=channels_last) if formats in ("cl-input", "cl-both") else x
    w = w.to(memory_format=channels_last) if formats in ("cl-weight", "cl-both") else w
    grads = []
    for conv in (TORCH_CONV[ndim], TRITON_CONV[ndim]):
        xg, wg = x.clone(memory_format=torch.preserve_format), w.clone(memory_format=torch.preserve_format)
        y = conv(xg.requires_grad_(), wg.requires_grad_(), None, 1, 1)
        grads.append(torch.autograd.grad(y, wg, torch.randn_like(y))[0])
    expected, got = grads
    assert got.stride() == expected.stride(), f"strides {got.stride()}, torch's {expected.stride()}"


# (ndim, batch, in channels, out channels, size, kernel, stride, padding): a padded 2-D conv whose
# 128 output pixels fill whole reduction blocks, and a strided unpadded 1-D one with 3 channels
# (x's taps along W and channels form one run in channels-last) and 15 pixels.
EDGE_GEOMETRIES = [(2, 2, 5, 24, 8, 3, 1, 1), (1, 1, 3, 40, 33, 5, 2, 0)]


@pytest.mark.parametrize("geometry", EDGE_GEOMETRIES, ids=["padded_2d", "runs_1d"])
@pytest.mark.parametrize(
    "config",
    [KernelConfig(16, 64, 16, 2, 1), KernelConfig(64, 16, 32, 4, 1, 3)],
    ids=["swapped", "split3"],
)
@pytest.mark.parametrize("int64", [False, True], ids=["int32", "int64"])
def test_weight_grad_tile_edges(geometry, config, int64, monkeypatch):
    """Operands swapped or not, rows and columns past the problem, whole or partial pixel blocks,
    64-bit offsets: the same weight and bias gradients as torch."""
    module = importlib.import_module("triton_conv.kernels.implicit_gemm_weight_grad")
    if int64:
        monkeypatch.setattr(module, "needs_int64", lambda *tensors: True)
    ndim, batch, channels, out_channels, size, kernel, stride, padding = geometry
    x = torch.randn(batch, channels, *(size,) * ndim, dtype=torch.float64)
    x = x.to(memory_format=torch.channels_last) if ndim == 2 else x.transpose(1, 2).contiguous().transpose(1, 2)
    w = torch.randn(out_channels, channels, *(kernel,) * ndim, dtype=torch.float64)
    b = torch.randn(out_channels, dtype=torch.float64)
    spec = conv_spec(x, w, b, stride=stride, padding=padding, dilation=1, groups=1, ndim=ndim)
    dy = torch.randn(spec.out_shape, dtype=torch.float64)
    dw, db = torch.empty_like(w), torch.empty_like(b)
    module.implicit_gemm_weight_grad(dy, x, spec, dw, db, config)
    ref_w, ref_b = w.clone().requires_grad_(), b.clone().requires_grad_()
    ref = torch.autograd.grad(TORCH_CONV[ndim](x, ref_w, ref_b, stride=stride, padding=padding), [ref_w, ref_b], dy)
    assert_close(dw, ref[0], torch.float64, spec.output_pixels, "weight grad")
    assert_close(db, ref[1], torch.float64, spec.output_pixels, "bias grad")


@pytest.mark.parametrize("channels", [32, 24], ids=["even", "uneven"])
def test_reduction_loop_over_channel_blocks_and_taps(channels):
    """Tiles of 16 channels: each tap takes two channel blocks (the second partly masked when
    channels per group are not a multiple of 16), in the forward and the input gradient, with
    a stride and dilation that leave some input phases fewer taps than others."""
    case = ConvCase(2, 2, channels, channels, (7, 6), (3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2))
    x, w, b = make_inputs(case, torch.float64, "channels_last")
    spec = conv_spec(x, w, b, **case.kwargs(), ndim=case.ndim)
    config = KernelConfig(16, 16, 16, 2, 2)
    y = torch.empty(spec.out_shape, dtype=x.dtype)
    plan_forward(x, w, b, spec, y, config)()
    rx, rw, rb = (t.clone().requires_grad_() for t in (x, w, b))
    ref = reference_forward(case, rx, rw, rb)
    assert_close(y, ref.detach(), torch.float64, case.reduction, "forward")
    dy = torch.randn(spec.out_shape, dtype=torch.float64)
    dx = torch.empty_like(x)
    plan_input_grad(dy, w, spec, dx, config)()
    (want,) = torch.autograd.grad(ref, [rx], dy)
    assert_close(dx, want, torch.float64, channels * w[0, 0].numel(), "input grad")


def test_input_grad_phases_of_a_stride_past_the_input():
    """Two groups with a stride far larger than the input along H and W (torch accepts it): the
    programs take only the phases that hold pixels, on the grid's first axis (room for 2^31
    programs; groups alone on the third), and the pixels no tap reaches come out zero."""
    x = torch.randn(1, 32, 3, 4, dtype=torch.float64)
    w = torch.randn(20, 16, 2, 3, dtype=torch.float64)
    stride, padding = (40000, 70000), (0, 1)
    spec = conv_spec(x, w, None, stride, padding, 1, 2, ndim=2)
    dy = torch.randn(spec.out_shape, dtype=torch.float64)
    dx = torch.empty_like(x)
    launch = plan_input_grad(dy, w, spec, dx, KernelConfig(16, 16, 16, 2, 2))
    assert launch.grid == (3 * 4, 1, 2), launch.grid
    launch()
    expected = torch.nn.grad.conv2d_input(x.shape, w, dy, stride, padding, 1, 2)
    assert torch.equal(expected[:, :, 2], torch.zeros_like(expected[:, :, 2]))
    assert_close(dx, expected, torch.float64, 10 * 2 * 3, "input grad")


def test_input_grad_int64_indexing_path(monkeypatch):
    """The 64-bit offset path of the input gradient (strided, dilated: phases with different
    taps) computes the same result (forced on a small problem)."""
    module = importlib.import_module("triton_conv.kernels.implicit_gemm_input_grad")
    monkeypatch.setattr(module, "needs_int64", lambda *tensors: True)
    check_backward(named("mixed_stride_dilation_2d"), torch.float64, "channels_last")
