"""The autotune key: a short string naming a bucket of problems that share one tuned config.

A key holds what decides which tile wins: the kernel, the operand dtype and dot precision, the
layout, and the GEMM sizes rounded to powers of two. FlagGems keys on fourteen exact shape
fields and re-tunes for every new batch size; bucketing keeps the cache small and lets a tuned
layer serve other batch sizes of the same network.
"""

from __future__ import annotations

import torch

from ..spec import ConvSpec
from .configs import MIN_DOT
from .kinds import KernelKind

# Pixels are bucketed by 4x, not 2x: log2 rounded up to an even number. Doubling the batch
# multiplies M by two, so batch 32 and 64 of a layer share a bucket whenever the layer's
# pixels per image round up to an even power of two (56x56, 28x28, 14x14, 7x7, 224x224 all do).
# Above 2^18 pixels even 128-row tiles make over 2000 programs (15 waves on 132 SMs) and the
# exact size no longer changes which tile wins, so every larger M is one bucket.
M_BUCKET_LOG2_STEP = 2
M_BUCKET_LOG2_MAX = 18


def _log2_ceil(n: int) -> int:
    return max(0, n - 1).bit_length()


def bucket_m(pixels: int) -> int:
    """The pixel (GEMM M) bucket: the next power of four at or above ``pixels``, clamped at 2^18."""
    step = M_BUCKET_LOG2_STEP
    exponent = -(-_log2_ceil(pixels) // step) * step
    return 1 << min(exponent, M_BUCKET_LOG2_MAX)


def bucket_channels(channels: int) -> int:
    """A channel (GEMM N or K) bucket: the next power of two, at least the dot minimum."""
    return max(MIN_DOT, 1 << _log2_ceil(channels))


def layout_of(t: torch.Tensor) -> str:
    """``"cl"`` when channels are the innermost dimension (channels-last), ``"nc"`` otherwise."""
    return "cl" if t.dim() > 2 and t.size(1) > 1 and t.stride(1) == 1 else "nc"


def autotune_key(kind: KernelKind, spec: ConvSpec, dtype: torch.dtype, precision: str, layout: str) -> str:
    """E.g. ``forward:float16:ieee:cl:m65536:n64:k64:t9:g0:s1`` for the GEMM of ``kind`` on ``spec``.

    M is the kind's ``key_pixels`` (input pixels for the input gradient, output pixels
    otherwise); N and K are the output and input channels per group; the kind's ``key_fields``
    follow, if it has any.
    """
    fields = (
        kind.name,
        str(dtype).removeprefix("torch."),
        precision,
        layout,
        f"m{bucket_m(kind.key_pixels(spec))}",
        f"n{bucket_channels(spec.out_channels_per_group)}",
        f"k{bucket_channels(spec.in_channels_per_group)}",
        f"t{spec.taps}",
        f"g{int(spec.groups > 1)}",
        f"s{int(max(spec.stride) > 1)}",
    )
    if kind.key_fields is not None:
        fields += kind.key_fields(spec)
    return ":".join(fields)
