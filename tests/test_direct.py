"""The direct kernels (depthwise, few channels per group) and the rule that picks them."""

import importlib
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from triton_conv.perf.compiled_code import local_memory_in_loops, parse_sass
from triton_conv.perf.suite import SHAPES_BY_NUMBER

import triton_conv
from triton_conv.kernels import direct as direct_module
from triton_conv.kernels import dispatch
from triton_conv.kernels.direct import (
    DIRECT_FORWARD,
    DIRECT_INPUT_GRAD,
    DIRECT_WEIGHT_GRAD,
    direct_split_k,
    plan_direct_forward,
    plan_direct_input_grad,
    plan_direct_weight_grad,
)
from triton_conv.kernels.epilogue import Epilogue
from triton_conv.kernels.gpu_compile import compile_launch
from triton_conv.kernels.implicit_gemm_forward import plan_forward
from triton_conv.spec import as_3d, channels_last_format, conv_spec
from triton_conv.testing import in_layout
from triton_conv.tune import ConvProblem, problem_keys
from triton_conv.tuning import select
from triton_conv.tuning.configs import DIRECT_TILES, DIRECT_WEIGHT_GRAD_TILES, DirectConfig

from .cases import CASES, named, paired, params
from .checks import check_backward, check_forward
from .reference import DEVICE, ConvCase, assert_close

pytestmark = pytest.mark.direct

GROUPED = [c for c in CASES if c.groups > 1]


def _spec(case: ConvCase):
    x = torch.empty(case.batch, case.in_channels, *case.size)
    w = torch.empty(case.out_channels, case.in_channels // case.groups, *case.kernel)
    return conv_spec(x, w, None, **case.kwargs(), ndim=case.ndim), x, w


@pytest.mark.parametrize(
    ("case", "direct"),
    [
        (ConvCase(2, 8, 144, 144, (56, 56), (3, 3), padding=1, groups=144, name="depthwise"), True),
        (ConvCase(2, 8, 144, 288, (56, 56), (3, 3), padding=1, groups=144, name="channel_multiplier_2"), True),
        (ConvCase(2, 8, 128, 128, (56, 56), (3, 3), padding=1, groups=32, name="resnext_4_per_group"), True),
        (ConvCase(1, 8, 768, 768, (499,), (128,), padding=64, groups=16, name="48_per_group"), False),
        (ConvCase(2, 8, 3, 64, (224, 224), (7, 7), stride=2, padding=3, name="first_layer"), False),
        (ConvCase(2, 8, 64, 64, (56, 56), (3, 3), padding=1, name="dense"), False),
    ],
    ids=lambda v: v.id if isinstance(v, ConvCase) else str(v),
)
def test_dispatch_rule(case, direct):
    assert dispatch.uses_direct_kernel(_spec(case)[0]) is direct


def _issued_multiply_adds(launch) -> int:
    """Multiply-adds the launch issues, masked lanes included, from its grid and tile."""
    programs = math.prod(launch.grid)
    c = launch.constexprs
    args = launch.args
    if "BLOCK_N" in c:  # implicit GEMM: every tap reduces C_G rounded up to BLOCK_K
        return (
            programs * args["TAPS"] * math.ceil(args["C_G"] / c["BLOCK_K"]) * c["BLOCK_K"] * c["BLOCK_M"] * c["BLOCK_N"]
        )
    # direct forward: each (pixel, channel slot) of the tile takes every tap for MULTIPLIERS multipliers
    taps = c["T"] * c["R"] * c["S"]
    return programs * taps * c["MULTIPLIERS"] * c["BLOCK_G"] * c["PIXELS"] * c["BLOCK_C"]


def test_depthwise_work_equals_useful_work(gpu_tiles):
    """mbv2_dw3 (benchmark shape 12): the direct kernel issues the useful multiply-adds plus tile
    rounding, where the implicit GEMM would issue 16 times as many."""
    case = ConvCase(2, 128, 144, 144, (56, 56), (3, 3), padding=1, groups=144)
    spec, x, w = _spec(case)
    out = torch.empty(spec.out_shape)
    useful = spec.flops // 2
    direct = _issued_multiply_adds(plan_direct_forward(x, w, None, spec, out))
    gemm = _issued_multiply_adds(plan_forward(x, w, None, spec, out))
    assert direct / useful < 1.15, direct / useful
    assert gemm / useful >= 16, gemm / useful


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "implicit_gemm"])
@pytest.mark.parametrize("case", params(GROUPED))
def test_both_algorithms_on_grouped_cases(case, direct, monkeypatch):
    """Every grouped case through each algorithm, whichever the rule would pick."""
    monkeypatch.setattr(dispatch, "uses_direct_kernel", lambda spec: direct)
    check_forward(case, torch.float64, "channels_last")
    check_backward(case, torch.float64, "channels_last")


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["float64", "bfloat16"])
@pytest.mark.parametrize("case", params(GROUPED))
def test_tap_major_filter(case, dtype, monkeypatch):
    """The forward and input gradient reading the filter from its tap-major float copy (on a GPU
    only for launches of at least TAP_MAJOR_FILTER_MIN_FMAS multiply-adds): forced here for
    every grouped case, channels-last (bundles of groups off); each pass makes its own layout of
    the copy."""
    monkeypatch.setattr(dispatch, "uses_direct_kernel", lambda spec: True)
    monkeypatch.setattr(dispatch, "GROUP_BUNDLES_ENABLED", False)
    monkeypatch.setattr(dispatch, "BAND_KERNELS_ENABLED", False)  # nor the band or patch kernels
    monkeypatch.setattr(direct_module, "TAP_MAJOR_FILTER_MIN_FMAS", 0)
    copies = []
    monkeypatch.setattr(direct_module, "tap_major_filter", _recorded(direct_module.tap_major_filter, copies))
    check_forward(case, dtype, "channels_last")
    check_backward(case, dtype, "channels_last", cotangent="channels_last")
    assert {forward for _, forward in copies} == {True, False}, "the tap-major filter was not used by both passes"


def _recorded(fn, calls: list):
    def recorded(*args):
        calls.append(args)
        return fn(*args)

    return recorded


def test_direct_split_k_matches_single_split():
    module = importlib.import_module("triton_conv.kernels.direct")
    case = named("depthwise_3d")
    spec, x, w = _spec(case)
    x, w = (torch.randn_like(t, dtype=torch.float64, device=DEVICE) for t in (x, w))
    dy = torch.randn(spec.out_shape, dtype=torch.float64, device=DEVICE)
    one, three = torch.empty_like(w), torch.empty_like(w)
    module.direct_weight_grad(dy, x, spec, one, None, split_k=1)
    module.direct_weight_grad(dy, x, spec, three, None, split_k=3)
    torch.testing.assert_close(one, three, rtol=1e-12, atol=1e-12)


def test_zero_channels_per_group_backward():
    """No input channels: the output is the bias; its gradient is computed, nothing else is touched."""
    x = torch.randn(2, 0, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 0, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    y = triton_conv.conv2d(x, w, b, groups=2)
    torch.testing.assert_close(y, b[None, :, None, None].expand(2, 4, 3, 3))
    gx, gw, gb = torch.autograd.grad(y.sum(), [x, w, b])
    assert gx.shape == x.shape and gw.shape == w.shape
    torch.testing.assert_close(gb, torch.full((4,), 18.0, dtype=torch.float64))


def _suite_tensors(number: int, layout: str):
    """Suite shape ``number``'s spec and empty bf16 input, weight and output in ``layout``."""
    shape = SHAPES_BY_NUMBER[number]
    spec = shape.geometry()
    memory_format = channels_last_format(4) if layout == "channels_last" else torch.contiguous_format
    x = torch.empty(shape.input_shape(), dtype=torch.bfloat16, memory_format=memory_format)
    w = torch.empty(shape.weight_shape(), dtype=torch.bfloat16)
    return spec, x, w, torch.empty(spec.out_shape, dtype=torch.bfloat16, memory_format=memory_format)


@pytest.mark.compile
@pytest.mark.parametrize(
    ("number", "pass_", "layout"),
    [
        (15, "D", "channels_last"),
        (32, "F", "channels_last"),
        (15, "F", "contiguous"),
        (15, "W", "contiguous"),
        (10, "F", "channels_last"),
        (10, "D", "channels_last"),
        (10, "W", "channels_last"),
        (10, "W", "contiguous"),
    ],
)
def test_suite_launches_fit_registers(number, pass_, layout, gpu_tiles):
    """The launches the ops make for suite shapes with 7x7 and 31x31 filters, and for 4 channels
    per group (bf16), compile for sm_90 without spills: the unrolled window of a step of taps,
    with every multiplier's accumulators, fits 255 registers, also with the default layout's one
    load per element."""
    spec, x, w, y = _suite_tensors(number, layout)
    if pass_ == "F":
        launch = plan_direct_forward(x, w, None, spec, y)
    elif pass_ == "D":
        launch = plan_direct_input_grad(y, w, spec, torch.empty_like(x))
    else:
        partial = torch.empty(direct_split_k(spec, y, x), w.numel())
        launch = plan_direct_weight_grad(y, x, spec, partial, None)
    info = compile_launch(launch, 90)
    assert info.spill_bytes == 0, info


# ---------------------------------------------------------------- tuning


@pytest.mark.parametrize("knobs", DIRECT_TILES, ids=str)
def test_every_tuned_tile_is_correct(knobs, gpu_tiles):
    """Each tile the autotuning may pick, forward and input gradient of a grouped convolution with
    4 channels per group, channels-last, strided: the same results as torch."""
    x = in_layout(torch.randn(2, 16, 9, 13, dtype=torch.float64, device=DEVICE), "channels_last")
    w = torch.randn(16, 4, 3, 3, dtype=torch.float64, device=DEVICE)
    b = torch.randn(16, dtype=torch.float64, device=DEVICE)
    spec = conv_spec(x, w, b, stride=(1, 2), padding=1, dilation=1, groups=4, ndim=2)
    expected = F.conv2d(x, w, b, stride=(1, 2), padding=1, groups=4)
    y = in_layout(torch.empty_like(expected), "channels_last")
    plan_direct_forward(x, w, b, spec, y, knobs=knobs)()
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-12)
    dy = in_layout(torch.randn_like(expected), "channels_last")
    dx = in_layout(torch.empty_like(x), "channels_last")
    plan_direct_input_grad(dy, w, spec, dx, knobs=knobs)()
    expected_dx = torch.nn.grad.conv2d_input(x.shape, w, dy, stride=(1, 2), padding=1, groups=4)
    torch.testing.assert_close(dx, expected_dx, rtol=0, atol=1e-12)


@pytest.mark.parametrize("knobs", DIRECT_WEIGHT_GRAD_TILES, ids=str)
def test_every_tuned_weight_grad_tile_is_correct(knobs, gpu_tiles):
    """Each weight-gradient tile the autotuning may pick, with its own split count, on a grouped
    convolution with 4 channels per group and a depthwise one with a channel multiplier of 2
    (channels-last, strided, with bias): the same gradients as torch."""
    for groups, c_g, k_g in ((4, 4, 4), (8, 1, 2)):
        x = in_layout(torch.randn(2, groups * c_g, 9, 13, dtype=torch.float64, device=DEVICE), "channels_last")
        w = torch.randn(groups * k_g, c_g, 3, 3, dtype=torch.float64, device=DEVICE)
        spec = conv_spec(x, w, None, stride=(1, 2), padding=1, dilation=1, groups=groups, ndim=2)
        dy = in_layout(torch.randn(spec.out_shape, dtype=torch.float64, device=DEVICE), "channels_last")
        dw, db = torch.empty_like(w), torch.empty(groups * k_g, dtype=torch.float64, device=DEVICE)
        direct_module.direct_weight_grad(dy, x, spec, dw, db, knobs=knobs)
        expected = torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=(1, 2), padding=1, groups=groups)
        torch.testing.assert_close(dw, expected, rtol=0, atol=1e-11)
        torch.testing.assert_close(db, dy.sum((0, 2, 3)), rtol=0, atol=1e-11)


@pytest.mark.compile
@pytest.mark.parametrize("layout", ["channels_last", pytest.param("contiguous", marks=pytest.mark.slow)])
@pytest.mark.parametrize("number", [pytest.param(10, marks=pytest.mark.slow), 15])
def test_tuning_space_compiles_for_sm90(number, layout, gpu_tiles):
    """Every tile the exhaustive tuning of the direct kernels would time on suite shapes 10 (4
    channels per group) and 15 (7x7 depthwise) compiles for sm_90 with no spill traffic in its
    loops (bf16): ptxas may keep a value or two for the epilogue in local memory (at most 8
    bytes), stored before the loops and loaded after them. By default 15 in channels-last, where
    the tiles hold the most registers (its 7x7 filter: 248-255); with --thorough also 10 (whose
    16-bit launches run as GEMMs over bundles of groups unless bundles are turned off) and the
    default layout."""
    spec, x, w, y = _suite_tensors(number, layout)
    for kind in (DIRECT_FORWARD, DIRECT_INPUT_GRAD, DIRECT_WEIGHT_GRAD):
        heuristic = kind.tiles[0]
        space = select.search_space(kind, spec, torch.bfloat16, "ieee", heuristic, exhaustive=True)
        assert len(space) == len(kind.tiles)
        for knobs in space:
            info = compile_launch(kind.plan(spec, x, w, None, y, knobs), 90, assembly=True)
            in_loops = local_memory_in_loops(parse_sass(info.assembly.sass))
            assert info.spill_bytes <= 8 and in_loops == 0, (kind.name, knobs, info)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_tuning_keys(tied_timing, dtype):
    """A grouped layer with 4 input and 8 output channels per group is tuned under the keys
    ``tune --dry-run`` lists, and a second call finds them cached: in float32 its three direct
    kernels; in 16-bit dtypes the GEMMs of one bundle of all 8 groups (``dispatch.group_bundle``),
    of which the forward and input gradient are the forward GEMM (the direct kernels gated behind
    them are not tuned)."""
    problem = ConvProblem((2, 32, 6, 20), (64, 4, 3, 3), (1, 1), (1, 1), (1, 1), 8, dtype, True)
    x, w = (t.requires_grad_() for t in problem.tensors("cpu"))
    with select.autotuning("first_use") as records:
        y = triton_conv.conv2d(x, w, None, problem.stride, problem.padding, problem.dilation, problem.groups)
        y.backward(in_layout(torch.randn_like(y), "channels_last"))
    keys = problem_keys(problem, backward=True)
    if dtype == torch.bfloat16:
        forward = next(name for name in keys if name.startswith("forward") and "(input_grad)" not in name)
        names = (forward, f"{forward} (input_grad)", "weight_grad")
    else:
        names = ("direct_forward", "direct_input_grad", "direct_weight_grad")
        assert all(":cg4:kg8:" in keys[name] for name in names)
    assert list(keys) == list(names)
    assert [record.key for record in records] == [keys[name] for name in names]
    assert all(record.timed > 1 for record in records)
    with select.autotuning("first_use") as again:
        triton_conv.conv2d(x, w, None, problem.stride, problem.padding, problem.dilation, problem.groups)
    assert again == []


# ---------------------------------------------------------------- slots and multipliers

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TRITON_CONV = {1: triton_conv.conv1d, 2: triton_conv.conv2d, 3: triton_conv.conv3d}


def _check_against_torch(c_g, k_g, groups, size, kernel, layout, weight_grad=True, **kwargs) -> None:
    """Forward and the gradients of input, weight and bias (or only the input's) of a grouped
    convolution with ``c_g`` input and ``k_g`` output channels per group, against torch in float64."""
    x = in_layout(torch.randn(2, c_g * groups, *size, dtype=torch.float64, device=DEVICE), layout).requires_grad_()
    w = torch.randn(k_g * groups, c_g, *kernel, dtype=torch.float64, device=DEVICE, requires_grad=weight_grad)
    b = torch.randn(k_g * groups, dtype=torch.float64, device=DEVICE, requires_grad=weight_grad)
    ndim = len(size)
    y = TRITON_CONV[ndim](x, w, b, groups=groups, **kwargs)
    expected = TORCH_CONV[ndim](x, w, b, groups=groups, **kwargs)
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-10)
    g = in_layout(torch.randn_like(expected), layout)
    leaves = (x, w, b) if weight_grad else (x,)
    for got, want in zip(torch.autograd.grad(y, leaves, g), torch.autograd.grad(expected, leaves, g)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    ("c_g", "k_g", "groups", "layout"),
    [
        (3, 2, 23, "channels_last"),  # slots padded to 4, a partial second block of 64 slots
        (3, 2, 23, "contiguous"),
        # 3 multipliers, 2 blocks of them in the forward (blocks of multipliers: the next case's too).
        pytest.param(5, 6, 13, "channels_last", marks=pytest.mark.slow),
        (2, 9, 9, "channels_last"),  # 3 blocks of 3 multipliers
        (7, 3, 10, "contiguous"),  # 8 slots, the input gradient's 3 slots of dy padded to 4
        (1, 5, 20, "contiguous"),  # a depthwise multiplier of 5: one multiplier, 5 blocks
        (1, 2, 40, "channels_last"),  # its weight gradient's bias over 2 multiplier blocks
    ],
    ids=lambda v: str(v),
)
def test_slots_and_multipliers_2d(c_g, k_g, groups, layout, gpu_tiles):
    """The GPU tiles on groups of every kind of slot and multiplier layout, strided and dilated."""
    _check_against_torch(c_g, k_g, groups, (5, 9), (3, 3), layout, stride=(2, 1), padding=(1, 2), dilation=(1, 2))


def test_groups_wider_than_a_tile():
    """A depthwise multiplier of 65: the input gradient's 128 slots per group are wider than the
    interpreter's channel block (its weight gradient, 65 blocks of one multiplier, is the (1, 5)
    case's above)."""
    _check_against_torch(1, 65, 2, (3, 4), (3, 3), "channels_last", weight_grad=False, padding=1)


def test_slots_and_multipliers_1d_3d(gpu_tiles):
    _check_against_torch(3, 5, 11, (17,), (5,), "channels_last", stride=3, padding=2)
    _check_against_torch(2, 3, 7, (3, 4, 5), (2, 3, 3), "channels_last", stride=(1, 2, 1), padding=1)


def test_int64_offsets(monkeypatch):
    """The direct kernels' 64-bit offsets (taken for tensors of 2^31 elements or more), forced on
    a small grouped convolution."""
    monkeypatch.setattr(direct_module, "needs_int64", lambda *tensors: True)
    _check_against_torch(4, 4, 3, (5, 9), (3, 3), "channels_last", padding=1)


# (size, kernel, stride, padding, dilation, groups, channels in, out, whether x's and dy's rows
# pair with the interpreter's tile): 16-bit rows along W.
PAIRED_ROWS = [
    ((6, 12), (3, 3), 2, 1, 1, 6, 6, 6, True, False),  # mbv2_dw3_s2: odd first columns (dy: 3 pixels a group)
    # dy's pairs at a stride of 2 (the taps of one step), a dy column left of each group's first.
    ((3, 22), (3, 2), 2, (1, 0), (1, 2), 2, 2, 2, True, True),
    ((5, 10), (5, 5), 1, 2, 1, 4, 4, 8, True, True),  # even first columns, a channel multiplier
    ((4, 8), (2, 2), 2, 0, 1, 3, 3, 3, True, True),  # patch-like: no padding
    ((5, 14), (3, 3), 1, 2, 2, 4, 4, 4, True, True),  # dilated
    ((5, 12), (3, 3), 1, 1, 1, 4, 16, 16, True, True),  # 4 channels per group (resnext_g32)
    ((22,), (7,), 2, 3, 1, 5, 5, 5, True, False),  # 1-D (dy's rows of 11 are odd)
    ((3, 4, 6), (3, 3, 3), (1, 1, 2), 1, 1, 3, 3, 3, True, False),  # 3-D (dy's rows of 3)
    # Steps of 3 taps (a stride of 3): their first columns alternate in parity (x's, and dy's, one
    # output column apart).
    ((3, 20), (1, 5), (1, 3), (0, 1), 1, 2, 2, 2, False, False),
    # 3 pixels per group at stride 1 (rows of 6): the groups' first columns alternate.
    ((3, 6), (3, 3), 1, 1, 1, 2, 2, 2, False, False),
]


@pytest.mark.parametrize(
    ("dtype", "index_64"),
    paired({"bfloat16": torch.bfloat16, "float16": torch.float16}, {"int32": False, "int64": True}),
)
@pytest.mark.parametrize("row", PAIRED_ROWS, ids=lambda r: f"{len(r[0])}d-w{r[0][-1]}-f{r[1][-1]}-s{r[2]}-p{r[3]}")
def test_column_pairs(row, dtype, index_64, monkeypatch):
    """The forward and the weight gradient on 16-bit rows of x loaded as 32-bit column pairs (W
    stride 1, even rows), and the input gradient on dy's rows, against torch; the same rows
    without pairs where W is odd or the data is not 4-byte aligned, and rows whose steps' first
    columns change parity, which must not pair."""
    if index_64:
        monkeypatch.setattr(direct_module, "needs_int64", lambda *tensors: True)
    size, kernel, stride, padding, dilation, groups, c, k, pairs, dy_pairs = row
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    x = torch.randn(2, c, *size[:-1], size[-1] + 1, dtype=torch.float64).to(dtype).to(DEVICE)
    w = (torch.randn(k, c // groups, *kernel, dtype=torch.float64) / math.prod(kernel)).to(dtype).to(DEVICE)
    even = x[..., :-1].contiguous()
    unaligned = torch.empty(even.numel() + 1, dtype=dtype, device=DEVICE)[1:].view(even.shape).copy_(even)
    conv = (F.conv1d, F.conv2d, F.conv3d)[len(size) - 1]
    for name, x_in in {"pairs": even, "odd_width": x, "unaligned": unaligned}.items():
        spec = conv_spec(x_in, w, None, **kwargs, ndim=len(size))
        y = torch.empty(spec.out_shape, dtype=dtype, device=DEVICE)
        launch = plan_direct_forward(x_in, w, None, spec, y)
        paired = launch.constexprs["COLUMN_PAIRS"]
        if DEVICE == "cpu":  # the interpreter's tile (a GPU's may pair the last two rows)
            assert paired is (pairs and name == "pairs"), f"{name}: COLUMN_PAIRS {paired}"
        launch()
        x64, w64 = x_in.double(), w.double().requires_grad_()
        expected = conv(x64, w64, None, **kwargs)
        assert_close(y, expected.to(dtype), dtype, c // groups * math.prod(kernel), f"forward, {name}")

        dy = torch.randn(spec.out_shape, dtype=torch.float64).to(dtype).to(DEVICE)
        partial = torch.empty(1, w.numel(), dtype=torch.float32, device=DEVICE)
        if DEVICE == "cpu":
            assert plan_direct_weight_grad(dy, x_in, spec, partial, None).constexprs["COLUMN_PAIRS"] is paired
        dw = torch.empty_like(w)
        direct_module.direct_weight_grad(dy, x_in, spec, dw, None)
        (expected_dw,) = torch.autograd.grad(expected, w64, dy.double())
        assert_close(dw, expected_dw.to(dtype), dtype, dy[:, 0].numel(), f"weight gradient, {name}")

    # The input gradient reads dy's rows: as allocated, and not 4-byte aligned.
    spec = conv_spec(even, w, None, **kwargs, ndim=len(size))
    dy = torch.randn(spec.out_shape, dtype=torch.float64).to(dtype).to(DEVICE)
    dy_unaligned = torch.empty(dy.numel() + 1, dtype=dtype, device=DEVICE)[1:].view(dy.shape).copy_(dy)
    x64 = even.double().requires_grad_()
    (expected_dx,) = torch.autograd.grad(conv(x64, w.double(), None, **kwargs), x64, dy.double())
    for name, dy_in in {"pairs": dy, "unaligned": dy_unaligned}.items():
        dx = torch.empty_like(even)
        launch = plan_direct_input_grad(dy_in, w, spec, dx)
        if DEVICE == "cpu":
            paired = launch.constexprs["COLUMN_PAIRS"]
            assert paired is (dy_pairs and name == "pairs"), f"input gradient, {name}: COLUMN_PAIRS {paired}"
        launch()
        assert_close(dx, expected_dx.to(dtype), dtype, k // groups * math.prod(kernel), f"input gradient, {name}")


def test_input_grad_phases_of_a_stride_past_the_input():
    """A stride far larger than the input along H (torch accepts it): the input gradient's
    programs take only the row phases that hold rows, on the grid's first axis (room for 2^31
    programs; the others have 65535), and the rows no filter row reaches come out zero, as in
    torch."""
    x = torch.randn(1, 26, 3, 8, dtype=torch.float64)
    w = torch.randn(26, 13, 2, 3, dtype=torch.float64)
    spec = conv_spec(x, w, None, (70000, 1), 0, 1, 2, ndim=2)
    dy = torch.randn(spec.out_shape, dtype=torch.float64)
    dx = torch.empty_like(x).to(DEVICE)
    launch = plan_direct_input_grad(dy.to(DEVICE), w.to(DEVICE), spec, dx)
    assert launch.constexprs["PHASES_H"] == 3 and max(launch.grid[1:]) <= 65535, launch.grid
    launch()
    expected = torch.nn.grad.conv2d_input(x.shape, w, dy, (70000, 1), 0, 1, 2)
    assert torch.equal(expected[:, :, 2], torch.zeros_like(expected[:, :, 2]))
    assert_close(dx.cpu(), expected, torch.float64, 13 * 2 * 3, "input gradient")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_pair_stores_with_epilogue(dtype):
    """The forward and a transposed convolution (the input-gradient kernel) storing 16-bit rows
    in 32-bit pairs of columns, with bias, residual, activation and pre-activation, against
    torch; and the same launch with single stores gives the same bits."""
    x = torch.randn(2, 6, 5, 12, dtype=torch.float64).to(dtype)
    w = (torch.randn(6, 1, 3, 3, dtype=torch.float64) / 9).to(dtype)
    b = torch.randn(6, dtype=torch.float64).to(dtype)
    for transposed in (False, True):
        # The transposed convolution of x is the input gradient of the convolution whose output x is.
        spec = conv_spec(torch.empty(2, 6, 10, 24, dtype=dtype), w, None, 2, 1, 1, 6, ndim=2) if transposed else None
        spec = spec or conv_spec(x, w, None, 1, 1, 1, 6, ndim=2)
        out_shape = spec.in_shape if transposed else spec.out_shape
        residual = torch.randn(out_shape, dtype=torch.float64).to(dtype)
        results = []
        for pairs in (True, False):
            y, z = torch.empty(out_shape, dtype=dtype), torch.empty(out_shape, dtype=dtype)
            epilogue = Epilogue("silu", residual.to(DEVICE), z.to(DEVICE))
            y, z = y.to(DEVICE), epilogue.pre_activation
            if transposed:
                launch = plan_direct_input_grad(x.to(DEVICE), w.to(DEVICE), spec, y, b.to(DEVICE), epilogue)
            else:
                launch = plan_direct_forward(x.to(DEVICE), w.to(DEVICE), b.to(DEVICE), spec, y, epilogue)
            if DEVICE == "cpu":
                assert launch.constexprs["STORE_PAIRS"], launch.constexprs  # the rule's: 16-bit, even rows
            launch.constexprs["STORE_PAIRS"] = pairs
            launch()
            results.append((y.cpu(), z.cpu()))
        if transposed:
            conv = F.conv_transpose2d(x.double(), w.double(), b.double(), 2, 1, output_padding=1, groups=6)
        else:
            conv = F.conv2d(x.double(), w.double(), b.double(), 1, 1, 1, 6)
        expected_z = conv + residual.double()
        (y, z), (single_y, single_z) = results
        assert_close(z, expected_z.to(dtype), dtype, 9, f"pre-activation, transposed={transposed}")
        assert_close(y, F.silu(expected_z).to(dtype), dtype, 9, f"output, transposed={transposed}")
        assert torch.equal(y, single_y) and torch.equal(z, single_z)


def test_column_pairs_rule():
    """Which inputs ``column_pairs`` reads in pairs (a misaligned 32-bit load would fault only on
    a GPU): every row 4-byte aligned, W stride 1 with channels not innermost, 16-bit, W even."""
    x = torch.empty(2, 4, 6, 8, dtype=torch.bfloat16, device="meta")
    w = torch.empty(4, 1, 3, 3, dtype=torch.bfloat16, device="meta")
    cfg = DirectConfig(block_g=32, pixels=8, block_c=32, num_warps=4, taps_per_step=3)

    def pairs(t: torch.Tensor) -> bool:
        spec = conv_spec(t, w.to(t.dtype), None, 1, 1, 1, 4, ndim=2)
        return direct_module.column_pairs(as_3d(t), spec, cfg)["COLUMN_PAIRS"]

    assert pairs(x)
    assert pairs(x.as_strided((2, 4, 1, 8), (192, 48, 7, 1)))  # the odd stride of a size-1 dim: never stepped
    assert not pairs(x.as_strided((2, 4, 6, 8), (194, 48, 9, 1)))  # odd row stride
    assert not pairs(x.as_strided((2, 4, 6, 8), (195, 49, 8, 1)))  # odd channel stride
    assert not pairs(x.to(memory_format=torch.channels_last))
    assert not pairs(x.float()) and not pairs(x.double())
    assert pairs(x.half())

    def dy_pairs(kernel_w: int, stride: int, dilation: int, pixels: int, taps_per_step: int) -> bool:
        """The input gradient's rule on dy's rows (x as dy: its row rules are the same)."""
        w_row = torch.empty(4, 1, 3, kernel_w, dtype=torch.bfloat16, device="meta")
        spec = conv_spec(x, w_row, None, (1, stride), 1, (1, dilation), 4, ndim=2)
        tile = replace(cfg, pixels=pixels, taps_per_step=taps_per_step)
        return direct_module.column_pairs(as_3d(x), spec, tile, input_grad=True)["COLUMN_PAIRS"]

    assert dy_pairs(3, 1, 1, 8, 3) and dy_pairs(3, 2, 1, 8, 3)  # one step takes the row
    assert not dy_pairs(3, 2, 1, 3, 3)  # groups of 3 output columns: their first columns alternate
    assert dy_pairs(5, 1, 1, 8, 2)  # steps of 2 taps move 2 output columns
    assert not dy_pairs(5, 2, 1, 8, 2)  # ... at a stride of 2, 1 column: alternating
    assert dy_pairs(5, 2, 2, 8, 2)  # ... dilated by 2, 2 columns

    def store_pairs(t: torch.Tensor, columns_per_group: int = 8) -> bool:
        return direct_module.pair_stores(as_3d(t), columns_per_group)["STORE_PAIRS"]

    assert store_pairs(x) and store_pairs(x.half())
    assert not store_pairs(x, 3)  # groups of 3 columns: every other group starts odd
    assert not store_pairs(x[..., :7]) and not store_pairs(x.to(memory_format=torch.channels_last))
    assert not store_pairs(x.float())
