"""Weight-gradient paths the case table seldom takes: few-channel inputs through a zero-padded
channels-last copy (``dispatch.pads_input``) and pixel blocks that are pieces of one output row
(``ROW_BLOCKS``). (Bundles of groups: ``test_group_bundles.py``.)"""

import pytest
import torch

from triton_conv.kernels import dispatch
from triton_conv.kernels.common import recording_launches
from triton_conv.kernels.dispatch import pads_input
from triton_conv.spec import conv_spec

from .checks import check_backward
from .reference import ConvCase, make_inputs

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
