"""Forward results against torch.nn.functional.conv* on the case table."""

import importlib

import pytest
import torch

from triton_conv.kernels.implicit_gemm_forward import plan_forward
from triton_conv.kernels.implicit_gemm_input_grad import plan_input_grad
from triton_conv.spec import as_3d, conv_spec
from triton_conv.testing import TORCH_CONV, TRITON_CONV

from .cases import CASES, PATCHES, SUBSET, named, params
from .checks import check_forward
from .reference import DEVICE, DTYPES, LAYOUTS, assert_close, make_inputs, reference_forward

pytestmark = pytest.mark.forward


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", params(CASES))
def test_forward_table(case, dtype):
    check_forward(case, dtype, "contiguous")


@pytest.mark.parametrize("layout", LAYOUTS[1:])
@pytest.mark.parametrize("case", params(CASES, SUBSET))
def test_forward_layouts(case, layout):
    check_forward(case, torch.float32, layout)


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d.itemsize == 2], ids=str)
@pytest.mark.parametrize("case", params(CASES, SUBSET))
def test_forward_half(case, dtype):
    check_forward(case, dtype, "channels_last")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", params(PATCHES))
def test_patch_embedding(case, layout):
    check_forward(case, torch.float32, layout)


def test_patch_rows_fold_rule():
    """Channels-last patch embeddings fold each patch row into the channels: kw*C per tap."""
    from triton_conv.kernels.dispatch import fold_columns, folds_columns

    x = torch.randn(2, 3, 8, 12).to(memory_format=torch.channels_last)
    w = torch.randn(8, 3, 4, 4)
    spec = conv_spec(x, w, None, stride=4, padding=0, dilation=1, groups=1, ndim=2)
    assert folds_columns(x, spec) and not folds_columns(x.contiguous(), spec)
    padded = conv_spec(x, w, None, stride=4, padding=1, dilation=1, groups=1, ndim=2)
    assert not folds_columns(x, padded)
    fx, fw = fold_columns(x, w, spec)
    folded = spec.fold_columns()
    assert (folded.in_channels, folded.kernel_size, folded.stride) == (12, (1, 4, 1), (1, 4, 1))
    assert fx.shape == (2, 12, 8, 3) and fw.shape == (8, 12, 4, 1) and fx.data_ptr() == x.data_ptr()
    # Output column j, channel s*C + c of the fold is input column 4j + s, channel c.
    assert torch.equal(fx[:, 3 * 2 + 1, :, 2], x[:, 1, :, 4 * 2 + 2])
    assert torch.equal(fw[:, 3 * 2 + 1, :, 0], w[:, 1, :, 2])


def test_first_layer_fold_rule():
    """A first layer (fewer than 8 channels, one group) folds each filter row's columns into the
    channels: in place where W is unpadded and W and C are adjacent, the pixels' runs overlapping
    where the step is below the filter's width; else over a padded copy with 4 channels; not
    where W is dilated, nor grouped."""
    from triton_conv.kernels.dispatch import fold_columns, folds_columns, folds_columns_of_copy, forward_spec

    x = torch.randn(2, 3, 9, 11).to(memory_format=torch.channels_last)
    w = torch.randn(8, 3, 5, 5)
    spec = conv_spec(x, w, None, stride=2, padding=(2, 0), dilation=1, groups=1, ndim=2)
    assert folds_columns(x, spec) and not folds_columns_of_copy(x, spec)
    fx, fw = fold_columns(x, w, spec)
    folded = spec.fold_columns()
    assert (folded.in_channels, folded.kernel_size, folded.stride) == (15, (1, 5, 1), (1, 2, 1))
    assert folded.input_size == (1, 9, 4) and folded.output_size == spec.output_size == (1, 5, 4)
    assert fx.data_ptr() == x.data_ptr() and forward_spec(x, spec) == folded
    # Output column j, channel s*C + c of the fold is input column 2j + s, channel c.
    assert torch.equal(fx[:, 4 * 3 + 2, :, 3], x[:, 2, :, 2 * 3 + 4])
    assert torch.equal(fw[:, 4 * 3 + 2, :, 0], w[:, 2, :, 4])
    stem = conv_spec(x, w, None, stride=2, padding=2, dilation=1, groups=1, ndim=2)
    assert folds_columns_of_copy(x, stem) and not folds_columns(x, stem)
    on_copy = forward_spec(x.contiguous(), stem)
    assert (on_copy.in_channels, on_copy.input_size, on_copy.pad_lo) == (5 * 4, (1, 13, 6), (0, 0, 0))
    dilated = conv_spec(x, w, None, stride=2, padding=(2, 0), dilation=(1, 2), groups=1, ndim=2)
    assert (
        not folds_columns(x, dilated) and not folds_columns_of_copy(x, dilated) and forward_spec(x, dilated) == dilated
    )
    # W and C not adjacent (the default layout, a channels-last view sliced along W): the copy.
    for strided in (x.contiguous(), x[..., ::2]):
        valid = conv_spec(strided, w, None, stride=2, padding=(2, 0), dilation=1, groups=1, ndim=2)
        assert folds_columns_of_copy(strided, valid) and forward_spec(strided, valid).in_channels == 5 * 4
    grouped_w = torch.randn(6, 1, 5, 5)
    grouped = conv_spec(x, grouped_w, None, stride=2, padding=2, dilation=1, groups=3, ndim=2)
    assert forward_spec(x, grouped) == grouped


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("shape", [(3, 3, 9, 13), (2, 1, 3, 4, 6)], ids=["2d", "3d"])
def test_pad_input(shape, layout):
    """The padded copy: x's pixels at the padding's offset, zeros around them and in the added
    channels, over images and rows that programs span."""
    from triton_conv.kernels.pad_input import pad_input

    x = torch.randn(shape, device=DEVICE)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    w = torch.randn(8, shape[1], *[3] * (x.dim() - 2))
    padding = (1, 2) if x.dim() == 4 else (2, 0, 1)
    spec = conv_spec(x, w, None, stride=1, padding=padding, dilation=1, groups=1, ndim=x.dim() - 2)
    out, padded = pad_input(x, spec, 4)
    pads = [side for pad in reversed(padding) for side in (pad, pad)]
    expected = torch.nn.functional.pad(x, pads)
    expected = torch.cat([expected, expected.new_zeros(shape[0], 4 - shape[1], *expected.shape[2:])], dim=1)
    assert out.shape == expected.shape and torch.equal(out, expected)
    assert padded.in_channels == 4 and padded.pad_lo == (0, 0, 0)


@pytest.mark.parametrize(
    "shape, layout, run",
    [
        ((2, 64, 5, 5), "cl", 16),  # Triton sees it anyway
        ((2, 24, 5, 5), "cl", 8),  # 24-channel rows: 16-byte runs the compiler is told of
        ((2, 12, 5, 5), "cl", 4),
        ((2, 3, 5, 5), "cl", 1),
        ((2, 24, 5, 5), "nchw", 1),  # channels strided: nothing to tell
    ],
)
def test_operand_run(shape, layout, run):
    """``operand_run``: the power of two (at most 16) that divides every stride of an operand read
    channels-last but the channels', and the counts given; each operand on its own, so that a
    well-aligned one keeps its 16 next to a 3-channel one."""
    from triton_conv.kernels.layout import alignment_run, operand_run

    x = torch.empty(shape)
    if layout == "cl":
        x = x.to(memory_format=torch.channels_last)
    assert operand_run(as_3d(x)) == run
    assert operand_run(as_3d(x), 12) == min(run, 4) and operand_run(as_3d(x), 0) == run
    w = torch.empty(16, 3, 3, 3).to(memory_format=torch.channels_last)
    assert operand_run(as_3d(w)) == 1 and alignment_run(0, 0) == 16 and alignment_run(24, 40) == 8


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("ndim", [2, 3])
def test_output_memory_format_matches_torch(ndim, layout):
    case = named({2: "mixed_stride_dilation_2d", 3: "grouped_dilated_3d"}[ndim])
    x, w, y = check_forward(case, torch.float32, layout)
    # torch's float64 CPU path ignores channels-last; its float32 path follows the rule we keep.
    assert y.stride() == TORCH_CONV[ndim](x, w, None, **case.kwargs()).stride()


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_unbatched(ndim):
    case = named({1: "same_even_kernel_grouped_1d", 2: "mixed_stride_dilation_2d", 3: "plain_3d"}[ndim])
    x, w, b = make_inputs(case, torch.float64)
    y = TRITON_CONV[ndim](x[0], w, b, **case.kwargs(), padding_mode=case.padding_mode)
    assert_close(y, reference_forward(case, x, w, b)[0], torch.float64, case.reduction, "unbatched")


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_zero_batch(ndim):
    case = named(f"plain_{ndim}d")
    x, w, b = make_inputs(case, torch.float32)
    y = TRITON_CONV[ndim](x[:0], w, b, **case.kwargs(), padding_mode=case.padding_mode)
    assert y.shape == reference_forward(case, x, w, b)[:0].shape


@pytest.mark.skipif(DEVICE != "cuda", reason="TF32 exists on CUDA only")
def test_tf32_follows_cudnn_flag():
    case = named("plain_2d")
    x, w, b = make_inputs(case, torch.float32)
    saved = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = False
        check_forward(case, torch.float32, "contiguous")
    finally:
        torch.backends.cudnn.allow_tf32 = saved


def test_int64_indexing_path(monkeypatch):
    """The 64-bit offset path computes the same result (forced on a small problem)."""
    module = importlib.import_module("triton_conv.kernels.implicit_gemm_forward")
    monkeypatch.setattr(module, "needs_int64", lambda *tensors: True)
    check_forward(named("grouped_dilated_3d"), torch.float64, "channels_last")


def test_needs_int64_threshold():
    from triton_conv.spec import needs_int64

    assert not needs_int64(torch.empty(16, 16))
    assert needs_int64(torch.empty(1).expand(2**31))


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_default_layout_is_read_channels_last(ndim):
    """Contiguous (NCL/NCHW/NCDHW) inputs, cotangents and weights reach the GEMM kernels with
    their channels innermost, copied; the outputs are written in place in torch's layout."""
    case = named(f"plain_{ndim}d")
    x, w, _ = make_inputs(case, torch.float32)
    spec = conv_spec(x, w, None, **case.kwargs(), ndim=ndim)
    y = torch.empty(spec.out_shape)
    dx = torch.empty_like(x)
    forward = plan_forward(x, w, None, spec, y)
    input_grad = plan_input_grad(y, w, spec, dx)
    for launch, read, written, out in ((forward, "x", "y", y), (input_grad, "dy", "dx", dx)):
        assert launch.args[f"{read}_ptr"].stride(1) == 1 and launch.args["w_ptr"].stride(1) == 1
        assert launch.args[f"{written}_ptr"].data_ptr() == out.data_ptr() and out.is_contiguous()
