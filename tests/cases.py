"""The convolution table every pass (forward, input gradient, weight gradient) is checked on."""

from .reference import ConvCase

CASES = [
    # 1-D
    ConvCase(1, 2, 3, 5, (17,), (3,)),
    ConvCase(1, 2, 4, 6, (19,), (3,), stride=2, padding=1, dilation=2),
    ConvCase(1, 1, 4, 6, (13,), (4,), padding="same", dilation=2, groups=2),
    ConvCase(1, 2, 4, 4, (15,), (5,), padding="same", groups=4),
    ConvCase(1, 2, 3, 6, (11,), (3,), padding=1, groups=3, bias=False),
    ConvCase(1, 2, 5, 7, (16,), (1,), stride=3),
    ConvCase(1, 1, 80, 8, (12,), (2,), padding=1),
    ConvCase(1, 1, 6, 150, (9,), (3,)),
    ConvCase(1, 3, 2, 3, (70,), (7,), stride=2, padding=3, padding_mode="reflect"),
    ConvCase(1, 1, 3, 4, (10,), (4,), padding="same", padding_mode="circular"),
    # 2-D
    ConvCase(2, 2, 3, 4, (9, 10), (3, 3), padding=1),
    ConvCase(2, 1, 5, 6, (11, 9), (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    ConvCase(2, 2, 6, 4, (7, 8), (2, 3), padding="same", groups=2),
    ConvCase(2, 2, 5, 5, (9, 9), (3, 3), stride=2, padding=1, groups=5),
    ConvCase(2, 2, 8, 6, (6, 7), (1, 1)),
    ConvCase(2, 1, 4, 3, (5, 6), (5, 6), padding="valid", bias=False),
    ConvCase(2, 1, 3, 4, (8, 7), (3, 3), stride=(1, 3), padding=2, dilation=3),
    ConvCase(2, 2, 3, 4, (7, 9), (3, 3), padding=(2, 1), padding_mode="reflect"),
    ConvCase(2, 1, 3, 4, (6, 5), (3, 2), padding=1, padding_mode="replicate"),
    ConvCase(2, 1, 2, 4, (6, 6), (4, 3), padding="same", padding_mode="circular"),
    # 3-D
    ConvCase(3, 1, 3, 4, (5, 6, 7), (3, 3, 3), padding=1),
    ConvCase(3, 2, 4, 6, (4, 7, 6), (2, 3, 2), stride=(1, 2, 2), dilation=(2, 1, 1), groups=2),
    ConvCase(3, 1, 4, 5, (4, 5, 6), (1, 3, 3), padding=(0, 1, 1)),
    ConvCase(3, 1, 5, 3, (6, 4, 4), (3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0), bias=False),
    ConvCase(3, 1, 4, 4, (5, 5, 5), (3, 3, 3), padding=1, groups=4),
    ConvCase(3, 1, 2, 3, (4, 5, 4), (2, 2, 3), padding="same", padding_mode="circular"),
]

# A few cases from each dimensionality, for the sweeps over layouts and half precision.
SUBSET = [CASES[i] for i in (1, 3, 8, 11, 13, 17, 21, 24)]

# Grouped convolutions with 16 or more channels per group: the implicit GEMM's grouped path.
GEMM_GROUPED = [
    ConvCase(2, 1, 32, 32, (5, 6), (3, 3), padding=1, groups=2),
    ConvCase(1, 2, 48, 6, (9,), (3,), stride=2, groups=3),
]
CASES += GEMM_GROUPED

# Patch embeddings: kernel = stride, no padding (ViT's and video models' first layer), a plain
# GEMM over non-overlapping patches; sizes that the kernel divides and that it does not; patch
# rows along W only (overlapping along H); one channel (W-contiguous in every layout).
PATCHES = [
    ConvCase(2, 2, 3, 8, (8, 12), (4, 4), stride=4),
    ConvCase(2, 1, 3, 6, (9, 10), (4, 3), stride=(4, 3), bias=False),
    ConvCase(2, 1, 4, 3, (7, 12), (3, 4), stride=(1, 4)),
    ConvCase(3, 1, 3, 5, (4, 6, 6), (2, 3, 3), stride=(2, 3, 3)),
    ConvCase(1, 2, 1, 4, (13,), (4,), stride=4),
]
