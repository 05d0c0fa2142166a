"""Weight-gradient paths the case table seldom takes: few-channel inputs through a zero-padded
channels-last copy (``dispatch.pads_input``), pixel blocks that are pieces of one output row
(``ROW_BLOCKS``), and grouped convolutions of a few channels per group through the GEMM of
bundles of groups (``dispatch.weight_grad_bundle``)."""

import pytest
import torch

from triton_conv.kernels import dispatch
from triton_conv.kernels.common import recording_launches
from triton_conv.kernels.dispatch import pads_input, weight_grad_bundle
from triton_conv.spec import conv_spec

from .checks import check_backward
from .reference import ConvCase, assert_close, make_inputs

pytestmark = pytest.mark.backward

PADDED = [
    # A ResNet stem in small: 7x7, stride 2, padding 3, 3 channels (padded to 4).
    ConvCase(2, 2, 3, 8, (9, 11), (7, 7), stride=2, padding=3),
    ConvCase(1, 2, 1, 4, (17,), (5,), stride=2, padding=2),
    ConvCase(3, 1, 2, 4, (4, 5, 6), (3, 3, 3), padding=1, bias=False),
    # 5 channels padded to 8; unequal padding and dilation.
    ConvCase(2, 1, 5, 4, (6, 7), (3, 3), padding=(1, 2), dilation=2),
    # padding="same" with an even kernel pads one more at the end.
    ConvCase(2, 1, 4, 3, (6, 6), (3, 2), padding="same"),
    # No padding (only the channels are padded); the last row and column are read by no tap.
    ConvCase(2, 1, 3, 4, (8, 8), (3, 3), stride=2),
]


def _spec(case: ConvCase):
    x, w, b = make_inputs(case, torch.float64)
    return conv_spec(x, w, b, case.stride, case.padding, case.dilation, case.groups, case.ndim)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", PADDED, ids=lambda c: c.id)
def test_padded_input_weight_grad(case, dtype, layout):
    assert pads_input(_spec(case)), case.id
    check_backward(case, dtype, layout)


def test_padded_input_weight_grad_gpu_tiles(gpu_tiles):
    """The stem in small with the GPU tiles: 32-deep pixel blocks over several column blocks."""
    check_backward(PADDED[0], torch.float32, "channels_last")


@pytest.mark.parametrize(
    "case",
    [
        ConvCase(2, 1, 8, 4, (6, 6), (3, 3), padding=1),  # 8 channels: vectors already
        ConvCase(2, 1, 6, 6, (6, 6), (3, 3), padding=1, groups=2),  # grouped
        ConvCase(2, 1, 3, 8, (8, 12), (4, 4), stride=4),  # a patch embedding
    ],
    ids=lambda c: c.id,
)
def test_inputs_left_unpadded(case):
    assert not pads_input(_spec(case))


@pytest.mark.parametrize(
    "case",
    [
        # 8 out channels: the swapped-operand tile, 64 pixels deep; 64-wide output rows.
        ConvCase(3, 1, 8, 8, (2, 3, 64), (3, 3, 3), padding=1),
        # 64 out channels, 3 in channels (padded to 4); 32-wide output rows.
        ConvCase(2, 1, 3, 64, (4, 32), (3, 3), padding=1, bias=False),
        # The same in 3-D and 1-D: the carried x offset wraps into d, and straight into n.
        ConvCase(3, 2, 3, 64, (2, 3, 32), (3, 3, 3), padding=1, bias=False),
        ConvCase(1, 2, 3, 64, (64,), (3,), padding=1, bias=False),
    ],
    ids=lambda c: c.id,
)
def test_row_blocks(case, gpu_tiles):
    """Output rows a multiple of the GPU tile's pixel block: scalar row coordinates."""
    x, w, _ = make_inputs(case, torch.float32)
    spec = _spec(case)
    y = torch.empty(spec.out_shape)
    with recording_launches() as launches:
        dispatch.weight_grad(y, x, spec, torch.empty_like(w), None)
    assert [launch.constexprs.get("ROW_BLOCKS") for launch in launches if "ROW_BLOCKS" in launch.constexprs] == [True]
    check_backward(case, torch.float32, "channels_last")


BUNDLED = [
    # ResNeXt's 32 groups of 4 channels in small: two bundles of 16 groups (64 channels).
    (ConvCase(2, 2, 128, 128, (5, 6), (3, 3), padding=1, groups=32), 16),
    # 6 groups of 8 channels into 3 each, strided and dilated: one bundle of 48 channels.
    (ConvCase(1, 2, 48, 18, (23,), (5,), stride=2, padding=3, dilation=2, groups=6), 6),
    # 3-D, 4 channels per group into 2 each: one bundle of 16 channels.
    (ConvCase(3, 1, 16, 8, (3, 4, 5), (3, 3, 3), padding=1, groups=4), 4),
    # 4 channels per group, 20 groups: bundles of 4, the most that divide the groups and make a
    # multiple of 16 channels.
    (ConvCase(2, 1, 80, 40, (4, 7), (1, 3), padding=(0, 1), groups=20, bias=False), 4),
]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case, bundle", BUNDLED, ids=lambda c: getattr(c, "id", ""))
def test_bundled_groups_weight_grad(case, bundle, dtype, layout):
    """The weight gradient runs one GEMM launch over bundles of groups and keeps each group's
    own block; every gradient matches torch's."""
    spec = _spec(case)
    assert weight_grad_bundle(spec, dtype) == bundle
    x, w, _ = make_inputs(case, dtype, layout)
    with recording_launches() as launches:
        dispatch.weight_grad(torch.randn(spec.out_shape, dtype=dtype), x, spec, torch.empty_like(w), None)
    gemm = [launch for launch in launches if "GROUPS" in launch.args and "SPLIT_K" in launch.args]
    assert [launch.args["GROUPS"] for launch in gemm] == [case.groups // bundle], launches
    check_backward(case, dtype, layout)


def test_bundled_groups_equal_the_direct_kernel(monkeypatch):
    """In float64 (let through for the test) the bundles' gradient equals the direct kernel's to
    rounding: the dropped blocks between groups never reach the kept ones."""
    case = BUNDLED[1][0]
    x, w, _ = make_inputs(case, torch.float64)
    spec = _spec(case)
    dy = torch.randn(spec.out_shape, dtype=torch.float64)
    results = []
    for dtypes in ((torch.float64,), ()):
        monkeypatch.setattr(dispatch, "BUNDLE_DTYPES", dtypes)
        grad_weight, grad_bias = torch.empty_like(w), torch.empty(case.out_channels, dtype=torch.float64)
        dispatch.weight_grad(dy, x, spec, grad_weight, grad_bias)
        results.append((grad_weight, grad_bias))
    (bundled_w, bundled_b), (direct_w, direct_b) = results
    torch.testing.assert_close(bundled_w, direct_w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bundled_b, direct_b, rtol=1e-12, atol=1e-12)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_bundled_groups_keep_non_finite_values_in_their_group():
    """A NaN and an infinity in one group's input make only that group's weight gradient
    non-finite, NaN and infinite where torch's is: the bundle's products of them with the other
    groups' output gradients are dropped."""
    case = BUNDLED[2][0]
    x, w, _ = make_inputs(case, torch.bfloat16)
    x[0, 7, 1, 2, 3] = float("inf")  # group 1 (channels 4-7)
    x[0, 5, 2, 0, 4] = float("nan")
    spec = _spec(case)
    dy = torch.randn(spec.out_shape, dtype=torch.float64).to(torch.bfloat16)
    grad_weight = torch.empty_like(w)
    dispatch.weight_grad(dy, x, spec, grad_weight, None)
    expected = torch.nn.grad.conv3d_weight(x.double(), w.shape, dy.double(), padding=1, groups=case.groups)
    finite = expected.isfinite()
    assert expected.isnan().any() and expected.isinf().any()
    assert not finite[2:4].all() and finite[:2].all() and finite[4:].all()
    assert torch.equal(grad_weight.isnan(), expected.isnan())
    assert torch.equal(grad_weight.isposinf(), expected.isposinf())
    assert torch.equal(grad_weight.isneginf(), expected.isneginf())
    kept = finite.flatten(1).all(1)
    assert_close(grad_weight[kept], expected[kept].bfloat16(), torch.bfloat16, 60, "the finite groups")


def test_few_channels_or_float32_not_bundled(monkeypatch):
    """No bundles where they would not make a multiple of the matrix unit's 16 channels, for
    depthwise convolutions, in float32, or with TRITON_CONV_GROUP_BUNDLES=0 (the module attribute
    it sets)."""
    resnext = _spec(ConvCase(2, 1, 128, 128, (5, 5), (3, 3), groups=32))
    assert weight_grad_bundle(resnext, torch.bfloat16) == 16
    assert weight_grad_bundle(resnext, torch.float32) == 1
    assert weight_grad_bundle(_spec(ConvCase(2, 1, 15, 6, (5, 5), (3, 3), groups=3)), torch.bfloat16) == 1
    assert weight_grad_bundle(_spec(ConvCase(2, 1, 20, 8, (5, 5), (3, 3), groups=4)), torch.bfloat16) == 1
    assert weight_grad_bundle(_spec(ConvCase(2, 1, 64, 64, (5, 5), (3, 3), groups=64)), torch.bfloat16) == 1
    assert weight_grad_bundle(_spec(ConvCase(2, 1, 64, 64, (5, 5), (3, 3), groups=2)), torch.bfloat16) == 1
    monkeypatch.setattr(dispatch, "GROUP_BUNDLES_ENABLED", False)
    assert weight_grad_bundle(resnext, torch.bfloat16) == 1
