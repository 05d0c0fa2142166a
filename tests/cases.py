"""The case tables the tests pick from, by name: ``named("grouped_dilated_3d")``. A case's name is its
test id; adding or reordering cases changes no other test's coverage."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import pytest

from .reference import Case, ConvCase, TCase

# The convolution table every pass (forward, input gradient, weight gradient) is checked on.
CASES = [
    # 1-D
    ConvCase(1, 2, 3, 5, (17,), (3,), name="plain_1d"),
    ConvCase(1, 2, 4, 6, (19,), (3,), stride=2, padding=1, dilation=2, name="strided_dilated_1d"),
    ConvCase(1, 1, 4, 6, (13,), (4,), padding="same", dilation=2, groups=2, name="same_even_kernel_grouped_1d"),
    ConvCase(1, 2, 4, 4, (15,), (5,), padding="same", groups=4, name="depthwise_same_1d"),
    ConvCase(1, 2, 3, 6, (11,), (3,), padding=1, groups=3, bias=False, name="depthwise_multiplier_nobias_1d"),
    ConvCase(1, 2, 5, 7, (16,), (1,), stride=3, name="pointwise_strided_1d"),
    ConvCase(1, 1, 80, 8, (12,), (2,), padding=1, name="many_in_channels_1d"),
    ConvCase(1, 1, 6, 150, (9,), (3,), name="many_out_channels_1d"),
    ConvCase(1, 3, 2, 3, (70,), (7,), stride=2, padding=3, padding_mode="reflect", name="reflect_1d"),
    ConvCase(1, 1, 3, 4, (10,), (4,), padding="same", padding_mode="circular", name="circular_same_1d"),
    # 2-D
    ConvCase(2, 2, 3, 4, (9, 10), (3, 3), padding=1, name="plain_2d"),
    ConvCase(
        2, 1, 5, 6, (11, 9), (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), name="mixed_stride_dilation_2d"
    ),
    ConvCase(2, 2, 6, 4, (7, 8), (2, 3), padding="same", groups=2, name="same_grouped_2d"),
    ConvCase(2, 2, 5, 5, (9, 9), (3, 3), stride=2, padding=1, groups=5, name="depthwise_strided_2d"),
    ConvCase(2, 2, 8, 6, (6, 7), (1, 1), name="pointwise_2d"),
    ConvCase(2, 1, 4, 3, (5, 6), (5, 6), padding="valid", bias=False, name="kernel_covers_input_2d"),
    ConvCase(2, 1, 3, 4, (8, 7), (3, 3), stride=(1, 3), padding=2, dilation=3, name="wide_dilation_2d"),
    ConvCase(2, 2, 3, 4, (7, 9), (3, 3), padding=(2, 1), padding_mode="reflect", name="reflect_2d"),
    ConvCase(2, 1, 3, 4, (6, 5), (3, 2), padding=1, padding_mode="replicate", name="replicate_2d"),
    ConvCase(2, 1, 2, 4, (6, 6), (4, 3), padding="same", padding_mode="circular", name="circular_same_2d"),
    # 3-D
    ConvCase(3, 1, 3, 4, (5, 6, 7), (3, 3, 3), padding=1, name="plain_3d"),
    ConvCase(
        3, 2, 4, 6, (4, 7, 6), (2, 3, 2), stride=(1, 2, 2), dilation=(2, 1, 1), groups=2, name="grouped_dilated_3d"
    ),
    ConvCase(3, 1, 4, 5, (4, 5, 6), (1, 3, 3), padding=(0, 1, 1), name="spatial_kernel_3d"),
    ConvCase(
        3, 1, 5, 3, (6, 4, 4), (3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0), bias=False, name="temporal_kernel_3d"
    ),
    ConvCase(3, 1, 4, 4, (5, 5, 5), (3, 3, 3), padding=1, groups=4, name="depthwise_3d"),
    ConvCase(3, 1, 2, 3, (4, 5, 4), (2, 2, 3), padding="same", padding_mode="circular", name="circular_same_3d"),
]

# Grouped convolutions with 16 or more channels per group: the implicit GEMM's grouped path.
GEMM_GROUPED = [
    ConvCase(2, 1, 32, 32, (5, 6), (3, 3), padding=1, groups=2, name="gemm_grouped_2d"),
    ConvCase(1, 2, 48, 6, (9,), (3,), stride=2, groups=3, name="gemm_grouped_1d"),
]
CASES += GEMM_GROUPED

# Patch embeddings: kernel = stride, no padding (ViT's and video models' first layer), a plain
# GEMM over non-overlapping patches; sizes that the kernel divides and that it does not; patch
# rows along W only (overlapping along H); one channel (W-contiguous in every layout).
PATCHES = [
    ConvCase(2, 2, 3, 8, (8, 12), (4, 4), stride=4, name="patch_2d"),
    ConvCase(2, 1, 3, 6, (9, 10), (4, 3), stride=(4, 3), bias=False, name="patch_remainder_2d"),
    ConvCase(2, 1, 4, 3, (7, 12), (3, 4), stride=(1, 4), name="patch_rows_2d"),
    ConvCase(3, 1, 3, 5, (4, 6, 6), (2, 3, 3), stride=(2, 3, 3), name="patch_3d"),
    ConvCase(1, 2, 1, 4, (13,), (4,), stride=4, name="patch_one_channel_1d"),
]

# Finite differences launch the kernels twice per input element: keep these tiny.
GRADCHECK_CASES = [
    ConvCase(1, 1, 2, 2, (7,), (3,), stride=2, padding=1, dilation=2, name="gradcheck_1d"),
    ConvCase(2, 1, 2, 2, (4, 5), (2, 3), padding="same", groups=2, name="gradcheck_grouped_2d"),
    ConvCase(3, 1, 2, 2, (3, 4, 3), (2, 2, 1), stride=(1, 2, 1), padding=(1, 0, 0), name="gradcheck_3d"),
]

TRANSPOSED_CASES = [
    # 1-D: stride, dilation, output_padding not smaller than the stride (allowed by the dilation),
    # depthwise, a HiFi-GAN-like upsample (kernel 2*stride, padding stride/2).
    TCase(1, 2, 3, 5, (7,), (3,), name="plain_transposed_1d"),
    TCase(
        1, 2, 4, 6, (6,), (4,), stride=3, padding=2, output_padding=2, dilation=2, name="strided_dilated_transposed_1d"
    ),
    TCase(1, 1, 3, 4, (7,), (3,), output_padding=1, dilation=2, name="output_padding_past_stride_1d"),
    TCase(1, 2, 4, 4, (9,), (5,), stride=2, padding=2, output_padding=1, groups=4, name="depthwise_transposed_1d"),
    TCase(1, 1, 4, 3, (5,), (16,), stride=8, padding=4, name="hifigan_upsample_1d"),
    # 2-D: SD-VAE-like 3x3 s2 p1 op1, U-Net 2x2 s2, DCGAN 4x4 s2 p1, mixed per-dimension
    # arguments with groups, depthwise, few channels per group, GEMM groups, 1x1 stride 3
    # (phases no tap reaches: bias only), padding beyond the kernel.
    TCase(2, 2, 4, 6, (5, 6), (3, 3), stride=2, padding=1, output_padding=1, name="sdvae_upsample_2d"),
    TCase(2, 2, 6, 4, (4, 5), (2, 2), stride=2, name="unet_upsample_2d"),
    TCase(2, 1, 4, 3, (4, 4), (4, 4), stride=2, padding=1, bias=False, name="dcgan_upsample_2d"),
    TCase(
        2, 2, 6, 4, (5, 4), (3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0), dilation=(1, 2), groups=2,
        name="mixed_grouped_transposed_2d",
    ),  # fmt: skip
    TCase(2, 1, 5, 5, (5, 5), (3, 3), stride=2, padding=1, groups=5, name="depthwise_transposed_2d"),
    TCase(2, 1, 4, 8, (4, 3), (3, 3), stride=2, groups=2, name="few_per_group_transposed_2d"),
    TCase(2, 1, 32, 32, (3, 4), (3, 3), stride=2, padding=1, groups=2, name="gemm_grouped_transposed_2d"),
    TCase(2, 1, 3, 4, (6, 5), (1, 1), stride=3, name="bias_only_phases_2d"),
    TCase(2, 1, 3, 4, (5, 5), (3, 3), padding=3, dilation=2, name="padding_past_kernel_transposed_2d"),
    # 3-D: a video-decoder upsample, groups with output_padding, depthwise.
    TCase(3, 1, 4, 6, (2, 4, 4), (3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1), name="video_upsample_3d"),
    TCase(3, 2, 4, 4, (3, 3, 2), (2, 2, 2), stride=2, output_padding=1, groups=2, bias=False, name="grouped_transposed_3d"),
    TCase(3, 1, 3, 3, (3, 3, 3), (3, 3, 3), stride=2, padding=1, output_padding=1, groups=3, name="depthwise_transposed_3d"),
]  # fmt: skip

TRANSPOSED_GRADCHECK_CASES = [
    TCase(1, 1, 2, 2, (4,), (3,), stride=2, padding=1, output_padding=1, dilation=2, name="gradcheck_transposed_1d"),
    TCase(2, 1, 2, 2, (3, 2), (2, 3), stride=(2, 1), groups=2, name="gradcheck_grouped_transposed_2d"),
]

# The torch.func transforms batch their work into a few convolutions, but the interpreter is slow: tiny.
TRANSFORM_CASES = [
    ConvCase(1, 2, 2, 3, (7,), (3,), stride=2, padding=1, dilation=2, name="tiny_strided_1d"),
    ConvCase(2, 1, 4, 4, (3, 4), (2, 3), padding="same", groups=2, name="tiny_direct_2d"),
    ConvCase(2, 2, 2, 2, (3, 4), (2, 2), padding=1, name="tiny_gemm_2d"),
    ConvCase(3, 1, 2, 2, (3, 4, 3), (2, 2, 1), stride=(1, 2, 1), padding=(1, 0, 0), name="tiny_3d"),
    # The transposed convolutions: the implicit GEMM (2-D, stride 2 with output_padding) and the
    # direct kernels (1-D, groups, dilation).
    TCase(2, 1, 2, 3, (3, 3), (2, 2), stride=2, padding=1, output_padding=1, name="tiny_gemm_transposed_2d"),
    TCase(1, 1, 4, 4, (4,), (3,), stride=2, dilation=2, groups=2, name="tiny_direct_transposed_1d"),
]

_TABLES = (CASES, PATCHES, GRADCHECK_CASES, TRANSPOSED_CASES, TRANSPOSED_GRADCHECK_CASES, TRANSFORM_CASES)
_BY_NAME = {c.name: c for table in _TABLES for c in table}
assert len(_BY_NAME) == sum(map(len, _TABLES)) and "" not in _BY_NAME, "every case needs a name of its own"


def named(name: str) -> Case:
    """The case of any table called ``name``."""
    return _BY_NAME[name]


def named_cases(*names: str) -> list[Case]:
    return [named(name) for name in names]


# A few cases from each dimensionality, for the sweeps over layouts and half precision.
SUBSET = named_cases(
    "strided_dilated_1d",
    "depthwise_same_1d",
    "reflect_1d",
    "mixed_stride_dilation_2d",
    "depthwise_strided_2d",
    "reflect_2d",
    "grouped_dilated_3d",
    "depthwise_3d",
)
TRANSPOSED_SUBSET = named_cases(
    "strided_dilated_transposed_1d", "sdvae_upsample_2d", "depthwise_transposed_2d", "video_upsample_3d"
)


def params(
    table: Iterable[object], default: Sequence[object] | None = None, ids: Callable[[object], str] = lambda c: c.id
) -> list:
    """``table`` as test parameters with readable ids. Those not in ``default`` (when given) carry
    the ``slow`` marker: the default run leaves them out, ``make test-thorough`` runs them."""
    return [
        pytest.param(item, id=ids(item), marks=() if default is None or item in default else pytest.mark.slow)
        for item in table
    ]


def paired(first: dict[str, object], second: dict[str, object]) -> list:
    """Two axes of test parameters, each given as {id: value}, every value at least once by
    default: the pairs of equal position (first's first with second's first, and so on); every
    other pairing carries the ``slow`` marker (``make test-thorough`` runs the whole product)."""
    assert len(first) == len(second), "each value of the longer axis would run with --thorough only"
    return [
        pytest.param(a, b, id=f"{a_id}-{b_id}", marks=() if i == j else pytest.mark.slow)
        for i, (a_id, a) in enumerate(first.items())
        for j, (b_id, b) in enumerate(second.items())
    ]
