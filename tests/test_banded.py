"""The band-matrix depthwise kernel (wide filter rows on the matrix unit) and the rule that picks it."""

import pytest
import torch
import torch.nn.functional as F
from triton_conv.perf.suite import SHAPES_BY_NUMBER

import triton_conv
from triton_conv.kernels import dispatch
from triton_conv.kernels.banded import (
    BANDED_FORWARD,
    BANDED_WEIGHT_GRAD,
    aligned_input,
    band_matrices,
    banded_forward,
    banded_forward_kernel,
    banded_input_grad,
    banded_weight_grad,
    banded_weight_grad_kernel,
    plan_banded_forward,
    read_unit,
    row_unit,
)
from triton_conv.kernels.common import recording_launches
from triton_conv.kernels.epilogue import Epilogue
from triton_conv.kernels.gpu_compile import SHARED_MEMORY_LIMIT, compile_launch
from triton_conv.spec import as_3d, conv_spec
from triton_conv.testing import in_layout
from triton_conv.tune import ConvProblem, problem_keys
from triton_conv.tuning import select
from triton_conv.tuning.configs import BandedConfig, banded_weight_grad_config, banded_weight_grad_rows

from .checks import check_backward, check_forward, check_transposed
from .reference import DEVICE, ConvCase, TCase

pytestmark = pytest.mark.direct

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

# Depthwise geometries the kernel takes: odd and even widths (rows that load in vectors of 8,
# 4, 2 and 1 float64 or 16-bit elements), rows of one segment whose last reduction steps would
# read only padding (2d_3x7), padding below, at and beyond the filter's reach,
# 'same' with an even filter, dilation along every dimension, steps along D and H, a channel
# multiplier, and 1-D, 2-D and 3-D (padded along D before and after, after only, and not at all;
# one reduction step per filter row or several).
BANDED = [
    ConvCase(1, 2, 3, 3, (40,), (7,), padding=3, groups=3, name="1d_k7"),
    ConvCase(1, 2, 4, 4, (37,), (31,), padding=15, groups=4, name="1d_k31_odd_width"),
    ConvCase(1, 1, 2, 2, (24,), (5,), padding=0, groups=2, name="1d_valid"),
    ConvCase(1, 2, 2, 2, (20,), (6,), padding="same", groups=2, name="1d_same_even"),
    ConvCase(1, 2, 2, 4, (33,), (5,), padding=2, groups=2, name="1d_multiplier_2"),
    ConvCase(1, 1, 2, 2, (30,), (5,), padding=9, dilation=3, groups=2, name="1d_dilated_pad_past_reach"),
    ConvCase(2, 2, 4, 4, (9, 12), (3, 7), padding=(1, 3), groups=4, name="2d_3x7"),
    ConvCase(2, 1, 3, 3, (6, 20), (3, 17), padding=(1, 8), groups=3, name="2d_3x17"),
    ConvCase(2, 2, 3, 3, (10, 14), (7, 7), padding=3, groups=3, name="2d_7x7_width_14"),
    ConvCase(2, 1, 2, 2, (11, 13), (5, 5), stride=(2, 1), padding=2, dilation=(2, 1), groups=2, name="2d_strided_h"),
    ConvCase(3, 1, 2, 2, (3, 5, 24), (3, 3, 9), padding=(1, 1, 4), groups=2, name="3d"),
    ConvCase(3, 1, 2, 2, (3, 4, 10), (3, 3, 5), padding=(1, 1, 2), groups=2, name="3d_one_step_per_filter_row"),
    ConvCase(3, 1, 2, 2, (3, 4, 10), (2, 3, 5), padding="same", groups=2, name="3d_same_even_depth"),
    ConvCase(3, 1, 2, 2, (4, 4, 10), (3, 3, 5), padding=(0, 1, 2), groups=2, name="3d_unpadded_depth"),
]


def _spec(case: ConvCase, x: torch.Tensor, w: torch.Tensor):
    return conv_spec(x, w, None, **case.kwargs(), ndim=case.ndim)


def _inputs(case: ConvCase, dtype: torch.dtype):
    x = torch.randn(case.batch, case.in_channels, *case.size, dtype=torch.float64)
    w = torch.randn(case.out_channels, 1, *case.kernel, dtype=torch.float64)
    b = torch.randn(case.out_channels, dtype=torch.float64)
    return x.to(dtype), w.to(dtype), b.to(dtype)


@pytest.mark.parametrize("case", BANDED, ids=lambda c: c.id)
def test_forward_exact_in_float64(case):
    """The kernel itself, whatever the dispatch rule: float64 products are exact, so only the
    summation order differs from torch's."""
    x, w, b = _inputs(case, torch.float64)
    expected = TORCH_CONV[case.ndim](x, w, b, **case.kwargs())
    out = torch.empty_like(expected)
    plan_banded_forward(x.to(DEVICE), w.to(DEVICE), b.to(DEVICE), _spec(case, x, w), out.to(DEVICE))()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", [c for c in BANDED if c.in_channels == c.out_channels], ids=lambda c: c.id)
def test_input_grad_exact_in_float64(case):
    """dx as the forward of the flipped filter, for unit steps (the cases with a step along H
    take the direct kernel in the ops, and check the flipped spec here with steps of 1)."""
    x, w, _ = _inputs(case, torch.float64)
    kwargs = case.kwargs() | {"stride": 1}
    x.requires_grad_()
    y = TORCH_CONV[case.ndim](x, w, None, **kwargs)
    dy = torch.randn_like(y)
    (expected,) = torch.autograd.grad(y, x, dy)
    spec = conv_spec(x, w, None, **kwargs, ndim=case.ndim)
    dx = torch.empty_like(x)
    banded_input_grad(dy.to(DEVICE), w.to(DEVICE), spec, dx.detach().to(DEVICE))
    torch.testing.assert_close(dx, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("walk_splits", [1, 3])
@pytest.mark.parametrize("case", BANDED, ids=lambda c: c.id)
def test_weight_grad_exact_in_float64(case, walk_splits):
    """dw as diagonal sums of a GEMM over the rows, and db, the walk whole or split."""
    x, w, b = _inputs(case, torch.float64)
    w.requires_grad_()
    b.requires_grad_()
    y = TORCH_CONV[case.ndim](x, w, b, **case.kwargs())
    dy = torch.randn_like(y)
    expected_w, expected_b = torch.autograd.grad(y, (w, b), dy)
    dw, db = torch.empty_like(expected_w), torch.empty_like(expected_b)
    banded_weight_grad(dy.to(DEVICE), x.to(DEVICE), _spec(case, x, w), dw, db, walk_splits=walk_splits)
    torch.testing.assert_close(dw, expected_w, rtol=0, atol=1e-12)
    torch.testing.assert_close(db, expected_b, rtol=0, atol=1e-12)


def _assert_like_torch(out: torch.Tensor, expected: torch.Tensor) -> None:
    """NaN where torch's is NaN, the same infinities, the finite values within bf16's rounding."""
    for test in (torch.isnan, torch.isposinf, torch.isneginf):
        assert torch.equal(test(out), test(expected)), torch.nonzero(test(out) != test(expected))[:8]
    finite = torch.isfinite(expected)
    torch.testing.assert_close(out[finite].double(), expected[finite], rtol=2e-2, atol=5e-2)


# Non-finite inputs: an infinity and a NaN in one row, both signs, 1-D and 2-D, the segment that
# reads them shared with finite columns and a second channel left finite.
NON_FINITE = [
    ("1d_inf", ConvCase(1, 1, 2, 2, (200,), (7,), padding=3, groups=2), {(0, 0, 100): float("inf")}),
    ("1d_nan_and_-inf", ConvCase(1, 2, 2, 2, (90,), (5,), padding=2, groups=2),
     {(1, 0, 3): float("nan"), (0, 1, 60): -float("inf")}),
    ("2d_7x7", ConvCase(2, 2, 2, 2, (9, 30), (7, 7), padding=3, groups=2), {(1, 1, 4, 17): float("inf")}),
]  # fmt: skip


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("pass_", ["forward", "input_grad", "fused_forward"])
@pytest.mark.parametrize("name, case, values", NON_FINITE, ids=[c[0] for c in NON_FINITE])
def test_non_finite_values_like_torch(name, case, values, pass_):
    """A NaN or infinity in the input (in the output's gradient for the input gradient) makes
    non-finite exactly the outputs torch's do: the band's zeros spread it across the segments
    reading it, the band forward flags those tiles and the recomputation redoes them tap by tap,
    the fused epilogue (bias, residual, activation, pre-activation) included."""
    x, w, b = _inputs(case, torch.bfloat16)
    spec = _spec(case, x, w)
    if pass_ == "input_grad":
        spec = conv_spec(x, w, None, **case.kwargs(), ndim=case.ndim)
        dy = torch.randn(spec.out_shape, dtype=torch.float64).to(torch.bfloat16)
        for index, value in values.items():
            dy[index] = value
        assert dispatch.uses_banded_input_grad(dy, spec)
        expected = torch.nn.grad.conv1d_input if case.ndim == 1 else torch.nn.grad.conv2d_input
        expected = expected(x.shape, w.double(), dy.double(), **case.kwargs())
        dx = torch.empty(x.shape, dtype=torch.bfloat16, device=DEVICE)
        banded_input_grad(dy.to(DEVICE), w.to(DEVICE), spec, dx)
        _assert_like_torch(dx.cpu(), expected)
        return
    for index, value in values.items():
        x[index] = value
    assert dispatch.uses_banded_kernel(x, spec)
    expected = TORCH_CONV[case.ndim](x.double(), w.double(), b.double(), **case.kwargs())
    out = torch.empty(expected.shape, dtype=torch.bfloat16, device=DEVICE)
    if pass_ == "forward":
        banded_forward(x.to(DEVICE), w.to(DEVICE), b.to(DEVICE), spec, out)
        _assert_like_torch(out.cpu(), expected)
        return
    residual = torch.randn(expected.shape, dtype=torch.float64).to(torch.bfloat16)
    pre_activation = torch.empty_like(out)
    epilogue = Epilogue("silu", residual.to(DEVICE), pre_activation)
    banded_forward(x.to(DEVICE), w.to(DEVICE), b.to(DEVICE), spec, out, epilogue)
    z = expected + residual.double()
    _assert_like_torch(pre_activation.cpu(), z)
    _assert_like_torch(out.cpu(), F.silu(z))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize(
    "case",
    [
        # Tap 16 reads only the right padding, past the one reduction step the row's columns need.
        ConvCase(1, 1, 2, 2, (8,), (17,), padding=8, groups=2),
        ConvCase(2, 1, 2, 2, (5, 12), (3, 5), padding=(1, 2), groups=2),
    ],
    ids=["1d_tap_in_padding_only", "2d"],
)
def test_non_finite_weight_like_torch(case):
    """A NaN in one channel's filter makes that channel's every output NaN, as torch's (its
    products with the padding's zeros included), the other channel finite."""
    x, w, b = _inputs(case, torch.bfloat16)
    w[0, 0, ..., -1] = float("nan")
    spec = _spec(case, x, w)
    assert dispatch.uses_banded_kernel(x, spec)
    expected = TORCH_CONV[case.ndim](x.double(), w.double(), b.double(), **case.kwargs())
    out = torch.empty(expected.shape, dtype=torch.bfloat16, device=DEVICE)
    banded_forward(x.to(DEVICE), w.to(DEVICE), b.to(DEVICE), spec, out)
    assert expected[:, 0].isnan().all()
    _assert_like_torch(out.cpu(), expected)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_only_tiles_reading_non_finite_values_are_flagged():
    """The band forward flags the tiles whose sum is not finite: none for finite data (the
    recomputation then only reads flags), and for one infinity only the tile of the rows whose
    taps read it."""
    case = ConvCase(2, 1, 2, 2, (40, 16), (3, 3), padding=1, groups=2)
    x, w, _ = _inputs(case, torch.bfloat16)
    spec = _spec(case, x, w)
    out = torch.empty(spec.out_shape, dtype=torch.bfloat16, device=DEVICE)
    cfg = BandedConfig(16, 16, 16, 4, 1)  # 16 output rows of 16 columns per program: 3 x 2 programs
    for infinity_at, flagged in [(None, []), (20, [[1, 0]]), (16, [[0, 0], [1, 0]])]:
        if infinity_at is not None:
            x[0, 0, infinity_at, 5] = float("inf")
        launch = plan_banded_forward(x.to(DEVICE), w.to(DEVICE), None, spec, out, cfg=cfg)
        launch()
        assert torch.nonzero(launch.args["flags_ptr"]).tolist() == flagged, infinity_at


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("walk_splits", [1, 2])
@pytest.mark.parametrize("column", [0, 100, 197, 199])
def test_weight_grad_of_non_finite_input(column, walk_splits):
    """The weight gradient multiplies the input by dy's zeros past a row's end (200 outputs in
    64-column segments), so an infinity within the filter's reach of the row's end would make NaN
    of the taps torch never pairs it with; those partials are flagged and computed again. The
    pattern is torch's (NaN and infinities), the bias gradient stays finite, other channels
    match torch."""
    x = torch.randn(1, 2, 200, dtype=torch.float64).to(torch.bfloat16)
    w = torch.randn(2, 1, 7, dtype=torch.float64).to(torch.bfloat16)
    x[0, 0, column] = float("inf")
    spec = conv_spec(x, w, None, 1, 3, 1, 2, 1)
    assert dispatch.uses_banded_weight_grad(torch.empty(1, 2, 200, dtype=torch.bfloat16), x, spec)
    weight, bias = w.double().requires_grad_(), torch.zeros(2, dtype=torch.float64, requires_grad=True)
    y = F.conv1d(x.double(), weight, bias, padding=3, groups=2)
    dy = torch.randn_like(y).to(torch.bfloat16)
    expected_w, expected_b = torch.autograd.grad(y, (weight, bias), dy.double())
    dw = torch.empty(w.shape, dtype=torch.bfloat16, device=DEVICE)
    db = torch.empty(2, dtype=torch.bfloat16, device=DEVICE)
    banded_weight_grad(dy.to(DEVICE), x.to(DEVICE), spec, dw, db, walk_splits=walk_splits)
    _assert_like_torch(dw.cpu(), expected_w)
    _assert_like_torch(db.cpu(), expected_b)
    assert not torch.isfinite(expected_w[0]).all() and torch.isfinite(expected_w[1]).all()


def _check_weight_grad_with_non_finite_values(case, x, w, b, spec, cfg, x_at, dy_at, walk_splits=None):
    """The band weight gradient with the tile ``cfg``: exact in float64; in bf16, with a NaN at
    ``x_at`` in the input and an infinity at ``dy_at`` in the output gradient, torch's pattern."""
    for dtype in (torch.float64, torch.bfloat16):
        xd = x.to(dtype)
        if dtype == torch.bfloat16:
            xd[x_at] = float("nan")
        weight = w.double().requires_grad_()
        bias = b.double().requires_grad_()
        y = TORCH_CONV[case.ndim](xd.double(), weight, bias, **case.kwargs())
        dy = torch.randn_like(y).to(dtype)
        if dtype == torch.bfloat16:
            dy[dy_at] = float("inf")
        expected_w, expected_b = torch.autograd.grad(y, (weight, bias), dy.double())
        dw = torch.empty(w.shape, dtype=dtype, device=DEVICE)
        db = torch.empty(b.shape, dtype=dtype, device=DEVICE)
        banded_weight_grad(dy.to(DEVICE), xd.to(DEVICE), spec, dw, db, walk_splits=walk_splits, cfg=cfg)
        if dtype == torch.float64:
            torch.testing.assert_close(dw, expected_w, rtol=0, atol=1e-12)
            torch.testing.assert_close(db, expected_b, rtol=0, atol=1e-12)
        else:
            assert not torch.isfinite(expected_w).all()
            _assert_like_torch(dw.cpu(), expected_w)
            _assert_like_torch(db.cpu(), expected_b)


# Rows of one 64-column segment (32 lines a step), G cut to the row's 64 columns (128 without
# the cut): 7-wide "same" rows of 56, a NaN among the input's last columns
# and an infinity in dy's last column (whose first tap still reads inside the row); and 3 taps
# padded by 4, whose last outputs read only the padding (G keeps their columns).
ONE_SEGMENT_ROWS = [
    (ConvCase(2, 32, 2, 2, (3, 56), (3, 7), padding=(1, 3), groups=2), 64, (1, 0, 2, 54), (1, 1, 1, 55)),
    (ConvCase(1, 32, 2, 2, (56,), (3,), padding=4, groups=2), 128, (3, 0, 54), (4, 1, 61)),
]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("case, columns, x_at, dy_at", ONE_SEGMENT_ROWS, ids=["2d_7_taps", "1d_padding_past_reach"])
def test_weight_grad_over_rows_of_one_segment(case, columns, x_at, dy_at):
    """A GPU tile of 64 columns, one segment a row: exact in float64; with non-finite values in x
    and in dy, torch's pattern in bf16 (the products G leaves out are the padding's zeros, and
    each output column's first tap is kept, so a non-finite dy still flags the recomputation)."""
    x, w, b = _inputs(case, torch.float64)
    spec = _spec(case, x, w)
    cfg = BandedConfig(64, 64, 16, 4, 3)
    assert spec.output_size[-1] <= cfg.block_w
    assert banded_weight_grad_rows(spec, cfg.block_w, read_unit(as_3d(x.to(torch.bfloat16)))) == (columns, 1)
    _check_weight_grad_with_non_finite_values(case, x, w, b, spec, cfg, x_at, dy_at)


# Filter rows sharing one G (GPU tiles): 5 rows of 28-wide rows two by two, the last pair's second
# past the filter (suite shape 14's layout); 3 rows of 8 four by four; a 3-D filter, pairs at
# each depth. Each with a NaN near an input row's end, which the band pairs with dy's zeros past
# the output row's end (so the recomputation must redo each filter row it reaches), and in
# another channel an infinity in dy.
STACKED_ROWS = [
    (
        ConvCase(2, 2, 2, 2, (7, 28), (5, 5), padding=2, groups=2, name="2d_5x5_width_28"),
        2,
        (0, 1, 6, 27),
        (1, 0, 2, 5),
    ),
    (ConvCase(2, 2, 2, 2, (6, 8), (3, 3), padding=1, groups=2, name="2d_3x3_width_8"), 4, (1, 1, 0, 7), (0, 0, 5, 0)),
    (
        ConvCase(3, 1, 2, 2, (3, 5, 28), (2, 3, 5), padding=(1, 1, 2), groups=2, name="3d_width_28"),
        2,
        (0, 0, 2, 4, 9),
        (0, 1, 3, 0, 27),
    ),
]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("case, stack, x_at, dy_at", STACKED_ROWS, ids=[c[0].name for c in STACKED_ROWS])
@pytest.mark.parametrize("walk_splits", [1, 3])
def test_weight_grad_with_filter_rows_stacked(case, stack, x_at, dy_at, walk_splits):
    """Where one filter row's G needs fewer than a wgmma's 64 rows, filter rows share one: exact
    in float64, the walk whole and split; torch's pattern of NaN and infinities in bf16 (the
    recomputation redoes each filter row of a flagged program)."""
    x, w, b = _inputs(case, torch.float64)
    spec = _spec(case, x, w)
    cfg = BandedConfig(64, 32, 16, 4, 3)
    assert banded_weight_grad_rows(spec, cfg.block_w, read_unit(as_3d(x.to(torch.bfloat16))))[1] == stack
    _check_weight_grad_with_non_finite_values(case, x, w, b, spec, cfg, x_at, dy_at, walk_splits)


def test_band_matrix_holds_the_filter_row():
    """Band element (j, i) is tap j - i - (lead - padding): every filter tap once per output column."""
    case = BANDED[0]
    x, w, _ = _inputs(case, torch.float64)
    spec = _spec(case, x, w)
    band = band_matrices(w, spec, block_w=16, depth=32, lead=4).reshape(3, 32, 16)
    for i in range(16):
        column = band[:, i + 1 : i + 8, i]  # lead 4 - padding 3: tap s sits at row i + 1 + s
        torch.testing.assert_close(column, w[:, 0])
        assert band[:, :, i].count_nonzero() == w[:, 0].count_nonzero()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", BANDED, ids=lambda c: c.id)
def test_ops_match_torch_in_16_bit(case, dtype):
    """Through the ops in bf16/fp16, where the dispatch rule picks the band kernels for every case
    (odd widths read widened copies): forward, then all three gradients."""
    x, w, _ = _inputs(case, dtype)
    spec = _spec(case, x, w)
    assert dispatch.uses_banded_kernel(x, spec)
    assert dispatch.uses_banded_weight_grad(torch.empty(spec.out_shape, dtype=dtype), x, spec)
    check_forward(case, dtype, "contiguous")
    check_backward(case, dtype, "contiguous")


@pytest.mark.parametrize("case", [c for c in BANDED if c.kernel[-1] >= 15], ids=lambda c: c.id)
def test_wide_filters_in_channels_last(case):
    """Filter rows of 15 or more take the band kernels in channels-last too (rows read through a
    contiguous copy, outputs stored element by element): forward and gradients in bf16."""
    x, w, _ = _inputs(case, torch.bfloat16)
    assert dispatch.uses_banded_kernel(in_layout(x, "channels_last"), _spec(case, x, w))
    check_forward(case, torch.bfloat16, "channels_last")
    check_backward(case, torch.bfloat16, "channels_last")


def test_transposed_depthwise_uses_the_band_kernel():
    """A depthwise transposed convolution with unit steps runs its forward (an input gradient)
    through the band kernel, with bias: against torch."""
    check_transposed(TCase(2, 2, 4, 4, (9, 16), (5, 7), padding=(2, 3), groups=4), torch.bfloat16)


@pytest.mark.parametrize(
    ("layout", "width", "dtype", "banded"),
    [
        ("contiguous", 56, torch.bfloat16, True),
        ("contiguous", 13, torch.bfloat16, True),  # odd rows: read from a widened copy
        ("contiguous", 7, torch.bfloat16, False),  # rows of 7 leave most of a segment empty
        ("channels_last", 56, torch.bfloat16, False),  # rows strided by C, a 7-wide filter
        ("contiguous", 56, torch.float32, False),
    ],
)
def test_dispatch_rule(layout, width, dtype, banded):
    x = torch.empty(2, 8, 16, width, dtype=dtype)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    w = torch.empty(8, 1, 7, 7, dtype=dtype)
    spec = conv_spec(x, w, None, 1, 3, 1, 8, 2)
    assert dispatch.uses_banded_kernel(x, spec) is banded
    narrow = conv_spec(x, torch.empty(8, 1, 3, 2, dtype=dtype), None, 1, 1, 1, 8, 2)
    assert not dispatch.uses_banded_kernel(x, narrow)
    wide = conv_spec(x, torch.empty(8, 1, 3, 15, dtype=dtype), None, 1, 7, 1, 8, 2)
    assert dispatch.uses_banded_kernel(x, wide) is (dtype != torch.float32 and width >= 8)


def test_widened_rows_match_in_float64():
    """Rows of 13 float64 (8-byte loads) are read as they are; rows of 13 in bf16 (2 bytes) from a
    copy widened to 16: both exact against torch through the kernels' entry points."""
    case = ConvCase(2, 2, 3, 3, (9, 13), (5, 7), padding=(2, 3), groups=3)
    x, w, b = _inputs(case, torch.float64)
    spec = _spec(case, x, w)
    wide, wide_spec = aligned_input(as_3d(x.to(torch.bfloat16)), spec)
    assert wide.shape[-1] == 16 and wide_spec.input_size[2] == 16
    torch.testing.assert_close(wide[..., :13], as_3d(x.to(torch.bfloat16)), rtol=0, atol=0)
    assert wide[..., 13:].count_nonzero() == 0
    assert aligned_input(as_3d(x), spec)[0].shape[-1] == 13


def test_channels_beyond_the_grid_limit_take_the_direct_kernels():
    x = torch.empty(1, 70000, 64, dtype=torch.bfloat16, device="meta")
    w = torch.empty(70000, 1, 7, dtype=torch.bfloat16, device="meta")
    assert not dispatch.uses_banded_kernel(x, conv_spec(x, w, None, 1, 3, 1, 70000, 1))


def test_kill_switch(monkeypatch):
    """TRITON_CONV_BAND_KERNELS=0 (the module attribute it sets) keeps depthwise on the direct kernels."""
    x = torch.empty(2, 8, 16, 56, dtype=torch.bfloat16)
    spec = conv_spec(x, torch.empty(8, 1, 7, 7, dtype=torch.bfloat16), None, 1, 3, 1, 8, 2)
    assert dispatch.uses_banded_kernel(x, spec)
    monkeypatch.setattr(dispatch, "BAND_KERNELS_ENABLED", False)
    assert not dispatch.uses_banded_kernel(x, spec)


def test_row_unit():
    assert row_unit(as_3d(torch.empty(2, 3, 4, 56, dtype=torch.bfloat16))) == 8
    assert row_unit(as_3d(torch.empty(2, 3, 4, 28, dtype=torch.bfloat16))) == 4
    assert row_unit(as_3d(torch.empty(2, 3, 4, 14, dtype=torch.bfloat16))) == 2
    assert row_unit(as_3d(torch.empty(2, 3, 4, 56, dtype=torch.float64))) == 2
    assert row_unit(as_3d(torch.empty(2, 3, 4, 56, dtype=torch.bfloat16)[..., 1:])) == 1
    assert row_unit(as_3d(torch.empty(2, 3, 4, 56, dtype=torch.bfloat16).to(memory_format=torch.channels_last))) == 1


def test_gpu_tile_runs_in_the_interpreter(gpu_tiles):
    """The GPU tile (256 rows, several segments per row) on a problem larger than one program."""
    case = ConvCase(2, 2, 4, 4, (50, 70), (5, 7), padding=(2, 3), groups=4)
    x, w, b = _inputs(case, torch.float64)
    expected = F.conv2d(x, w, b, padding=(2, 3), groups=4)
    out = torch.empty_like(expected)
    launch = plan_banded_forward(x, w, b, _spec(case, x, w), out, cfg=BandedConfig(256, 32, 16, 4, 3))
    assert launch.grid[0] > 1
    launch()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_deep_steps_over_rows_of_one_segment(gpu_tiles):
    """The heuristic's GPU tile for rows of one segment (suite shape 14's 28 columns, 5 taps):
    one 32-deep step per filter row, the columns past the row's end left out; exact in float64."""
    case = ConvCase(2, 2, 3, 3, (6, 28), (5, 5), padding=2, groups=3)
    x, w, b = _inputs(case, torch.float64)
    expected = F.conv2d(x, w, b, padding=2, groups=3)
    out = torch.empty_like(expected)
    launch = plan_banded_forward(x, w, b, _spec(case, x, w), out)
    assert (launch.constexprs["BLOCK_W"], launch.constexprs["BLOCK_J"], launch.constexprs["CHUNKS"]) == (32, 32, 1)
    launch()
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_band_matrices_stay_small(gpu_tiles):
    """A 3x3x3 depthwise filter over 432 channels and 112-wide rows would build 38 MiB of band
    matrices for an 83 MiB clip of 8 frames: the direct kernels run it; at batch 64 the band is a
    small share of the input."""
    w = torch.empty(432, 1, 3, 3, 3, dtype=torch.bfloat16, device="meta")
    for batch, banded in ((1, False), (64, True)):
        x = torch.empty(batch, 432, 8, 112, 112, dtype=torch.bfloat16, device="meta")
        spec = conv_spec(x, w, None, 1, 1, 1, 432, 3)
        assert dispatch.uses_banded_kernel(x, spec)
        assert dispatch.band_fits(x, spec) is banded


@pytest.mark.parametrize(("number", "block_w"), [(12, 64), (14, 32), (15, 64), (20, 32), (31, 16), (32, 16)])
def test_weight_grad_segment_width(number, block_w, gpu_tiles):
    """Suite shapes' band weight gradient segments (compiled for sm_90, the width with the least
    larger of issue and matrix-unit time, perf/NOTES.md): 32 columns where the forward's 64 would
    keep the matrix unit busier than the issue (20); 64 where a row is then one segment and G
    leaves out the columns past its end (12, 15: 64 of them, not 128)."""
    shape = SHAPES_BY_NUMBER[number]
    x = torch.empty(shape.input_shape(), dtype=torch.bfloat16, device="meta")
    assert banded_weight_grad_config(shape.geometry(), read_unit(as_3d(x))).block_w == block_w


@pytest.mark.compile
@pytest.mark.parametrize("number", [14, 15])
@pytest.mark.parametrize("pass_", ["F", "W"])
def test_tuning_space_compiles_for_sm90(pass_, number, gpu_tiles):
    """Every tile the exhaustive tuning of the band forward (rows of 28 on shape 14: its 64-column
    tiles clip to 32) and weight gradient (with a bias gradient) would time on suite shapes 14
    and 15 compiles for sm_90: wgmma, no spills, within shared memory."""
    shape = SHAPES_BY_NUMBER[number]
    spec = shape.geometry()
    x = torch.empty(shape.input_shape(), dtype=torch.bfloat16, device="meta")
    w = torch.empty(shape.weight_shape(), dtype=torch.bfloat16, device="meta")
    b = torch.empty(spec.out_channels, dtype=torch.bfloat16, device="meta") if pass_ == "W" else None
    y = torch.empty(spec.out_shape, dtype=torch.bfloat16, device="meta")
    kind, kernel = (
        (BANDED_FORWARD, banded_forward_kernel) if pass_ == "F" else (BANDED_WEIGHT_GRAD, banded_weight_grad_kernel)
    )
    heuristic = kind.tiles[0]
    space = select.search_space(kind, spec, torch.bfloat16, "ieee", heuristic, exhaustive=True)
    assert len(space) >= 6
    with recording_launches() as launches:
        for tile in space:
            kind.plan(spec, x, w, b, y, tile)()
    band_launches = [launch for launch in launches if launch.kernel is kernel]
    assert len(band_launches) == len(space)
    for launch in band_launches:
        info = compile_launch(launch, 90)
        assert info.uses_wgmma and info.spill_bytes == 0, info
        assert info.shared_bytes <= SHARED_MEMORY_LIMIT[90], info


def test_weight_grad_tiles_cut_to_the_lines(gpu_tiles):
    """With 2 lines (N x D_OUT) a step of 64 lines and one of 32 are the same launch: the
    search space holds each launch once, at 16 lines."""
    x = torch.empty(2, 4, 6, 20, dtype=torch.bfloat16, device="meta")
    spec = conv_spec(x, torch.empty(4, 1, 3, 5, dtype=torch.bfloat16, device="meta"), None, 1, (1, 2), 1, 4, 2)
    heuristic = BANDED_WEIGHT_GRAD.clipped(spec, BANDED_WEIGHT_GRAD.tiles[0])
    space = select.search_space(BANDED_WEIGHT_GRAD, spec, torch.bfloat16, "ieee", heuristic, exhaustive=True)
    assert all(tile.block_m == 16 for tile in space) and len(set(space)) == len(space)
    assert len(space) < len(BANDED_WEIGHT_GRAD.tiles)


def test_weight_grad_tiles_in_the_interpreter(gpu_tiles):
    """Every tile of the band weight gradient's tuning space, walk split by its own rule, against
    torch (float64): lines fewer than a step's, several segments and walk positions."""
    case = ConvCase(2, 3, 4, 4, (9, 70), (3, 7), padding=(1, 3), groups=4)
    x, w, b = _inputs(case, torch.float64)
    w.requires_grad_()
    b.requires_grad_()
    y = F.conv2d(x, w, b, padding=(1, 3), groups=4)
    dy = torch.randn_like(y)
    expected_w, expected_b = torch.autograd.grad(y, (w, b), dy)
    for tile in BANDED_WEIGHT_GRAD.tiles:
        dw, db = torch.empty_like(expected_w), torch.empty_like(expected_b)
        banded_weight_grad(dy, x.detach(), _spec(case, x, w), dw, db, cfg=BandedConfig.of(tile))
        torch.testing.assert_close(dw, expected_w, rtol=0, atol=1e-12, msg=str(tile))
        torch.testing.assert_close(db, expected_b, rtol=0, atol=1e-12, msg=str(tile))


@pytest.mark.parametrize("padding", [(1, 2), (0, 0)], ids=["same_size", "valid"])
def test_tuning_keys(tied_timing, padding):
    """A depthwise layer on the band kernels: its forward, input gradient and weight gradient are
    tuned under the keys ``tune --dry-run`` lists; a second call finds them cached."""
    problem = ConvProblem((2, 4, 6, 20), (4, 1, 3, 5), (1, 1), padding, (1, 1), 4, torch.bfloat16, False)
    x, w = (t.requires_grad_() for t in problem.tensors("cpu"))
    with select.autotuning("first_use") as records:
        y = triton_conv.conv2d(x, w, None, problem.stride, problem.padding, problem.dilation, problem.groups)
        y.backward(torch.randn_like(y))
    keys = problem_keys(problem, backward=True)
    assert set(keys) == {"banded_forward", "banded_forward (input_grad)", "banded_weight_grad"}
    assert {record.key for record in records} == set(keys.values())
    assert all(record.key.startswith("banded_") and ":bfloat16:ieee:nc:" in record.key for record in records)
    assert all(":w" in record.key and ":r" in record.key for record in records)
    with select.autotuning("first_use") as again:
        triton_conv.conv2d(x, w, None, problem.stride, problem.padding, problem.dilation, problem.groups)
    assert again == []
