"""Depthwise convolutions of planes of at most 64 pixels, in 16-bit dtypes, on one product per
channel, batched over blocks of channels (``kernels/planes.py``), in the default layout and in
channels-last: the forward and the input gradient, each followed by the direct kernel gated on
its non-finite flag."""

import random

import pytest
import torch

import triton_conv
from triton_conv.kernels import dispatch, planes
from triton_conv.kernels.common import recording_launches
from triton_conv.kernels.non_finite import new_flag
from triton_conv.kernels.planes import plan_plane, plane_forward, plane_frames, plane_pixels
from triton_conv.spec import conv_spec
from triton_conv.testing import in_layout
from triton_conv.tuning.configs import KernelConfig

from .checks import check_backward, check_forward, check_gated_recomputation, check_transposed
from .reference import TORCH_CONV, ConvCase, TCase, assert_close, make_inputs, reference_forward

pytestmark = [
    pytest.mark.backward,
    # NumPy, running the interpreted kernels, warns about the NaN the non-finite tests make.
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]


def _spec(case: ConvCase):
    x, w, b = make_inputs(case, torch.float64)
    return conv_spec(x, w, b, case.stride, case.padding, case.dilation, case.groups, case.ndim)


def _plane_launches(launches) -> int:
    """How many launches run the plane kernel; each is followed by the direct kernel gated on its flag."""
    at = [i for i, launch in enumerate(launches) if launch.kernel.__name__ == "plane_forward_kernel"]
    for i in at:
        assert launches[i + 1].constexprs.get("GATED"), launches
        assert launches[i + 1].args["flag_ptr"] is launches[i].args["flag_ptr"]
    return len(at)


PLANES = [
    # ConvNeXt's last stage: 7x7 maps, a 7x7 filter, "same" padding.
    ConvCase(2, 3, 8, 8, (7, 7), (7, 7), padding=3, groups=8),
    # Strided (MobileNet's downsampling 3x3 on a 7x7 map): the input gradient too, T transposed.
    ConvCase(2, 2, 8, 8, (7, 7), (3, 3), stride=2, padding=1, groups=8),
    # Dilated, uneven padding, odd sizes, no bias.
    ConvCase(2, 2, 8, 8, (6, 5), (3, 3), padding=(2, 0), dilation=2, groups=8, bias=False),
    # 1-D with a step of 2 (6 outputs), and a filter longer than the sequence (taps that reach
    # only the padding).
    ConvCase(1, 2, 8, 8, (12,), (5,), stride=2, padding=2, groups=8),
    ConvCase(1, 2, 8, 8, (5,), (13,), padding=6, groups=8),
    # 3-D, 60 voxels.
    ConvCase(3, 2, 8, 8, (3, 4, 5), (3, 3, 3), padding=1, groups=8),
    # Two output channels per group: the forward on the plane kernel, the input gradient not.
    ConvCase(2, 2, 8, 16, (5, 6), (3, 3), padding=1, groups=8),
    # 3 groups of 2 outputs: 6 channels in blocks of 4, the last block's padding channels reading
    # past the input's channels under their mask.
    ConvCase(2, 2, 3, 6, (5, 6), (3, 3), padding=1, groups=3),
]


# Every case in both 16-bit dtypes in the default layout and in bfloat16 in channels-last (the
# same kernel code for either dtype), and ConvNeXt's in float16 in channels-last.
PLANE_RUNS = [
    pytest.param(case, dtype, layout, id=f"{case.id}-{str(dtype)[6:]}-{layout}")
    for case in PLANES
    for dtype, layout in (
        (torch.bfloat16, "contiguous"),
        (torch.float16, "contiguous"),
        (torch.bfloat16, "channels_last"),
    )
] + [pytest.param(PLANES[0], torch.float16, "channels_last", id=f"{PLANES[0].id}-float16-channels_last")]


@pytest.mark.parametrize("case, dtype, layout", PLANE_RUNS)
def test_plane_kernel(case, dtype, layout):
    """The forward and input gradient run the plane kernel (the input gradient where there is one
    output channel per group), each then the direct kernel gated on its flag; the output and
    every gradient match torch's. The kernel takes 4 channels per program under the interpreter:
    two blocks of the 8 here (four for the forward of two per group)."""
    spec = _spec(case)
    x, w, b = make_inputs(case, dtype, layout)
    y = in_layout(torch.empty(spec.out_shape, dtype=dtype), layout)
    with recording_launches() as launches:
        dispatch.forward(x, w, b, spec, y)
    assert _plane_launches(launches) == 1
    with recording_launches() as launches:
        dispatch.input_grad(y, w, spec, torch.empty_like(x))
    assert _plane_launches(launches) == (spec.out_channels_per_group == 1)
    check_forward(case, dtype, layout)
    check_backward(case, dtype, layout)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", [PLANES[0], PLANES[1], PLANES[5]], ids=lambda c: c.id)
def test_plane_kernel_keeps_non_finite_values_where_torch_has_them(case, layout):
    """A NaN, +inf and -inf in the input (forward) or the output gradient (input gradient) make
    NaN and infinities exactly where torch's are: T's zeros times them are NaN everywhere in
    their plane, so the plane kernel flags them and the gated direct kernel computes the output
    again. On finite data the flag stays clear."""
    x, w, b = make_inputs(case, torch.bfloat16, layout)
    spec = _spec(case)
    dy = in_layout(torch.randn(spec.out_shape, dtype=torch.float64).to(torch.bfloat16), layout)
    check_gated_recomputation(case, spec, x, w, b, dy)


def test_non_finite_weight_like_torch():
    """A NaN in the filter's last tap, which reaches only the padding of a 5-step sequence under
    a 13-tap filter padded by 6 (so T leaves it out), makes that channel's every output NaN as
    torch's (its products with the padding's zeros), through the flag and the direct kernel."""
    case = PLANES[4]
    x, w, b = make_inputs(case, torch.bfloat16)
    spec = _spec(case)
    w[0, 0, -1] = float("nan")
    expected = TORCH_CONV[1](x.double(), w.double(), b.double(), **case.kwargs())
    y = torch.empty(spec.out_shape, dtype=torch.bfloat16)
    assert int(plane_forward(x, w, b, spec, y)) == 1
    dispatch.forward(x, w, b, spec, y)
    assert expected[:, 0].isnan().all() and expected[:, 1:].isfinite().all()
    assert torch.equal(y.isnan(), expected.isnan())
    assert_close(y[:, 1:], expected[:, 1:].bfloat16(), torch.bfloat16, case.reduction, "forward")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided_view", "permuted"])
@pytest.mark.parametrize("transposed", [False, True], ids=["forward", "input_grad"])
def test_blocks_of_channels_and_images(transposed, layout, monkeypatch):
    """6 channels in blocks of 4 (the last block half empty: its frames padded with zero filters
    to 16 channels, its loads and stores masked) and 40 images in blocks of 16, each program taking every other
    block (two splits); in the default layout (dense planes), channels-last, and over planes
    that are not dense (a view of every other column; spatial dimensions outermost), addressed
    by their strides: results as torch's."""
    monkeypatch.setattr(planes, "TARGET_PROGRAMS", 4)
    case = ConvCase(2, 40, 6, 6, (6, 7), (3, 3), padding=1, groups=6)
    x, w, b = make_inputs(case, torch.bfloat16, layout)
    spec = _spec(case)
    tile = KernelConfig(16, 4, 16, 4, 1)
    if transposed:
        dy = in_layout(torch.randn(spec.out_shape, dtype=torch.float64).bfloat16(), layout)
        x64 = x.double().requires_grad_()
        (expected,) = torch.autograd.grad(reference_forward(case, x64, w.double(), None), x64, dy.double())
        out = in_layout(torch.empty(x.shape, dtype=torch.bfloat16), layout)
        launch = plan_plane(dy, w, None, spec, out, new_flag(x.device), transposed=True, tile=tile)
    else:
        expected = reference_forward(case, x.double(), w.double(), b.double())
        out = in_layout(torch.empty(spec.out_shape, dtype=torch.bfloat16), layout)
        launch = plan_plane(x, w, b, spec, out, new_flag(x.device), tile=tile)
    assert launch.grid == (2, 2) and launch.args["IMAGE_BLOCKS"] == 3
    assert launch.constexprs["DENSE_A"] == launch.constexprs["DENSE_Y"] == (layout == "contiguous")
    assert launch.args["frame_ptr"].shape[0] == 16 and launch.args["frame_strides"] == (1, 16)
    launch()
    assert int(launch.args["flag_ptr"]) == 0
    assert_close(out, expected.bfloat16(), torch.bfloat16, case.reduction, f"plane kernel, {layout}")


def test_64_bit_indexing(monkeypatch):
    """With 64-bit offsets (``needs_int64``, forced here: tensors past 2**31 elements take them),
    the forward and input gradient in channels-last are torch's."""
    monkeypatch.setattr(planes, "needs_int64", lambda *tensors: True)
    case = PLANES[1]
    x, w, b = make_inputs(case, torch.bfloat16, "channels_last")
    spec = _spec(case)
    out = in_layout(torch.empty(spec.out_shape, dtype=torch.bfloat16), "channels_last")
    launch = plan_plane(x, w, b, spec, out, new_flag(x.device))
    assert launch.constexprs["INDEX_64"]
    launch()
    assert_close(
        out,
        reference_forward(case, x.double(), w.double(), b.double()).bfloat16(),
        torch.bfloat16,
        case.reduction,
        "int64",
    )
    dy = in_layout(torch.randn(spec.out_shape, dtype=torch.float64).bfloat16(), "channels_last")
    x64 = x.double().requires_grad_()
    (expected,) = torch.autograd.grad(reference_forward(case, x64, w.double(), None), x64, dy.double())
    dx = torch.empty_like(x)
    plan_plane(dy, w, None, spec, dx, new_flag(x.device), transposed=True)()
    assert_close(dx, expected.bfloat16(), torch.bfloat16, case.reduction, "int64 input gradient")


def test_heuristic_tiles_per_layout(gpu_tiles):
    """On a GPU the heuristic takes each layout's first tile (channels-last 32 images x 8 channels,
    the default layout 16 x 8) clipped to the problem: 2 images still fill a dot's 16 rows, 2
    channels make a block of 2."""
    from triton_conv.tuning.configs import PLANE_CHANNELS_LAST_TILES, PLANE_TILES

    def blocks(batch, channels, layout):
        x = in_layout(torch.empty(batch, channels, 7, 7, dtype=torch.bfloat16, device="meta"), layout)
        w = torch.empty(channels, 1, 3, 3, dtype=torch.bfloat16, device="meta")
        spec = conv_spec(x, w, None, 1, 1, 1, channels, 2)
        y = in_layout(torch.empty(spec.out_shape, dtype=torch.bfloat16, device="meta"), layout)
        launch = plan_plane(x, w, None, spec, y, torch.zeros((), dtype=torch.int32, device="meta"))
        return launch.constexprs["BLOCK_M"], launch.constexprs["BLOCK_C"], launch.num_warps

    first_cl, first = PLANE_CHANNELS_LAST_TILES[0], PLANE_TILES[0]
    assert blocks(64, 768, "channels_last") == (first_cl.block_m, first_cl.block_n, first_cl.num_warps) == (32, 8, 8)
    assert blocks(64, 768, "contiguous") == (first.block_m, first.block_n, first.num_warps) == (16, 8, 8)
    assert blocks(2, 2, "channels_last") == (16, 2, 8)


def test_frames_are_the_convolution():
    """Read as the kernel reads it (rows the input pixels of a padded block, columns the output
    pixels), each channel's filter frame is the convolution's matrix: over random 1-D, 2-D and
    3-D geometries with steps, dilation, padding and filters larger than the plane, x @ T is
    torch's convolution, and every element the kernel reads lies inside the frame; the frames
    hold the channels contiguous, padded with zero filters to a multiple of 16."""
    rng = random.Random(0)
    checked = 0
    while checked < 200:
        ndim = rng.choice([1, 2, 3])
        size = [rng.randint(1, 4 if ndim == 3 else 8) for _ in range(ndim)]
        kernel, stride, dilation, padding = (
            [rng.randint(lo, hi) for _ in range(ndim)] for lo, hi in ((1, 5), (1, 3), (1, 3), (0, 3))
        )
        x = torch.randn(1, 2, *size, dtype=torch.float64)
        w = torch.randn(2, 1, *kernel, dtype=torch.float64)
        try:
            expected = TORCH_CONV[ndim](x, w, stride=stride, padding=padding, dilation=dilation, groups=2)
        except RuntimeError:  # an empty output
            continue
        spec = conv_spec(x, w, None, stride, padding, dilation, 2, ndim)
        block_in, block_out = plane_pixels(spec.input_size), plane_pixels(spec.output_size)
        if max(block_in, block_out) > planes.PLANE_MAX_PIXELS:
            continue
        frames, frame = plane_frames(w, spec, block_in, block_out, channel_block=4)
        assert frames.shape[0] == 16 and frames.stride(0) == 1 and not frames[2:].any()
        (_, in_h, in_w), (_, out_h, out_w) = spec.input_size, spec.output_size
        frame_h, frame_w = frame.size[1:]
        j, p = torch.arange(block_in)[:, None], torch.arange(block_out)[None, :]
        jd, jh, jw = j // (in_h * in_w), j // in_w % in_h, j % in_w
        od, oh, ow = p // (out_h * out_w), p // out_w % out_h, p % out_w
        last_d, last_h, last_w = frame.last_outputs
        offsets = ((jd + (last_d - od) * spec.stride[0]) * frame_h + jh + (last_h - oh) * spec.stride[1]) * frame_w
        offsets = offsets + jw + (last_w - ow) * spec.stride[2]
        assert 0 <= offsets.min() and offsets.max() < frames.shape[1]
        band = frames[:2, offsets]  # (channels, block_in, block_out)
        planes_in = torch.zeros(2, block_in, dtype=torch.float64)
        planes_in[:, : x[0, 0].numel()] = x[0].flatten(1)
        got = torch.einsum("cj,cjp->cp", planes_in, band)[:, : expected[0, 0].numel()]
        torch.testing.assert_close(got, expected[0].flatten(1))
        checked += 1


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_fused_epilogue_and_transposed(layout, monkeypatch):
    """The plane kernel carries the fused epilogue (bias, residual, activation) of the forward and
    of a transposed convolution (whose output is an input gradient: T transposed), and its gradients."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(kwargs.get("transposed", False))
        return plane_forward(*args, **kwargs)

    monkeypatch.setattr(dispatch, "plane_forward", counted)
    case = PLANES[0]
    x, w, b = make_inputs(case, torch.bfloat16, layout)
    residual = in_layout(torch.randn(case.batch, case.out_channels, *case.size, dtype=torch.float64).bfloat16(), layout)
    y = triton_conv.conv2d(x, w, b, padding=3, groups=case.groups, activation="silu", residual=residual)
    expected = torch.nn.functional.silu(reference_forward(case, x, w, b) + residual.double())
    assert_close(y, expected.bfloat16(), torch.bfloat16, case.reduction, "fused forward")
    assert calls == [False]
    check_transposed(
        TCase(2, 2, 8, 8, (4, 3), (3, 3), stride=2, padding=1, groups=8), torch.bfloat16, layout, activation="relu"
    )
    assert calls[1] is True


def test_rule():
    """The plane kernel takes depthwise convolutions in 16-bit floats over planes of at most 64
    pixels, in the default layout or channels-last, where the band kernels do not (outputs
    narrower than 8 columns), or any layout with the channels contiguous; not float32, other
    layouts, larger planes, a grouped convolution,
    or TRITON_CONV_BAND_KERNELS=0 (the module attribute it sets)."""

    def uses(size=(7, 7), layout="contiguous", dtype=torch.bfloat16, in_channels=8):
        case = ConvCase(2, 1, in_channels, 8, size, (3, 3), padding=1, groups=8)
        x, _, _ = make_inputs(case, dtype, layout)
        return dispatch.uses_plane_kernel(x, _spec(case))

    assert uses() and uses(dtype=torch.float16) and uses(size=(8, 8)) and uses(size=(1, 64))
    assert not uses(size=(9, 8)) and not uses(size=(1, 65))
    assert not uses(dtype=torch.float32)
    assert uses(layout="channels_last") and uses(size=(1, 64), layout="channels_last")
    # Channels contiguous, spatial dimensions outermost: taken, addressed by its strides.
    assert uses(layout="permuted")
    assert not uses(size=(9, 8), layout="channels_last") and not uses(layout="strided_view")
    assert not uses(in_channels=16)
    # 8 columns and more: the band kernels come first.
    case = ConvCase(2, 1, 8, 8, (8, 8), (3, 3), padding=1, groups=8)
    x, w, b = make_inputs(case, torch.bfloat16)
    with recording_launches() as launches:
        dispatch.forward(x, w, b, _spec(case), torch.empty(x.shape, dtype=x.dtype))
    assert _plane_launches(launches) == 0 and launches[0].kernel.__name__ == "band_matrix_kernel"
    dispatch_enabled = dispatch.BAND_KERNELS_ENABLED
    try:
        dispatch.BAND_KERNELS_ENABLED = False
        assert not uses()
    finally:
        dispatch.BAND_KERNELS_ENABLED = dispatch_enabled


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_tuning_keys(channels_last, tied_timing):
    """A 7x7 depthwise layer on 7x7 maps is tuned under the keys ``tune --dry-run`` lists, in
    either layout (the key records it): the plane forward and the plane input gradient (the
    direct kernels gated behind them are not tuned), each timing the tiles first use times; a
    second call finds them cached."""
    from triton_conv.tune import ConvProblem, problem_keys
    from triton_conv.tuning import select

    problem = ConvProblem((2, 8, 7, 7), (8, 1, 7, 7), (1, 1), (3, 3), (1, 1), 8, torch.bfloat16, channels_last)
    x, w = (t.requires_grad_() for t in problem.tensors("cpu"))
    with select.autotuning("first_use") as records:
        y = triton_conv.conv2d(x, w, None, problem.stride, problem.padding, problem.dilation, problem.groups)
        y.backward(torch.randn_like(y))
    keys = problem_keys(problem, backward=True)
    assert list(keys)[:2] == ["plane_forward", "plane_input_grad"]
    assert [record.key for record in records][:2] == [keys["plane_forward"], keys["plane_input_grad"]]
    assert keys["plane_forward"].split(":")[3] == ("cl" if channels_last else "nc")
    with select.autotuning("first_use") as again:
        triton_conv.conv2d(x, w, None, problem.stride, problem.padding, problem.dilation, problem.groups)
    assert again == []
