"""The operand layout the implicit-GEMM kernels read well: channels innermost.

The kernels take any strides, but they read a row of BLOCK_K channels of one pixel at a time:
with channels contiguous that is a few 16-byte copies that Triton software-pipelines into shared
memory; with channels strided (the default NCL/NCHW/NCDHW layout) it is scalar, uncoalesced
loads that are not pipelined and made tiles spill. The launchers therefore copy such operands to
channels-last first, which costs one read and one write of the tensor.
"""

from __future__ import annotations

import math

import torch

from ..runtime import COALESCE_TIES_TO_LAST_DIMENSION


def gemm_operand(t: torch.Tensor) -> torch.Tensor:
    """A (N, C, D, H, W) operand as the GEMM kernels should read it: ``t`` itself if its channels
    are contiguous (or there is at most one), else a channels-last copy; in both cases with
    stride 0 along its size-1 dimensions.

    The stride of a size-1 dimension is never used to move, but the compiler sees it: a stride
    of 1 there (a 1x1 filter, a contiguous weight) hides that the offsets are multiples of 8
    elements and turns the 16-byte copies into scalar loads, where 0 keeps them aligned.
    """
    if t.shape[1] > 1 and t.stride(1) != 1:
        t = t.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)
    return t.as_strided(t.shape, [0 if size == 1 else stride for size, stride in zip(t.shape, t.stride())])


def gemm_operand_layout(t: torch.Tensor) -> str:
    """``layout_of(gemm_operand(t))`` without the copy: channels-last unless there is one channel."""
    return "cl" if t.shape[1] > 1 else "nc"


def store_transposed(out: torch.Tensor) -> bool:
    """Whether a GEMM kernel should store its tile into ``out`` (N, C, D, H, W) as (channels x
    pixels) rather than (pixels x channels).

    Transposed, unless that puts the warps along channels where they are strided: a warp then
    wrote 32 planes and each thread unravelled 64 pixels (2775 instructions after the loop for a
    128x64 tile, 255 registers for 128x128), where along pixels it writes consecutive pixels and
    each thread unravels one. Where channels are contiguous the compiler vectorizes along them
    either way, and the transposed tile held fewer registers (a float64 tile for sm_80 spilled
    the other way round with Triton 3.6).
    """
    return out.stride(1) == 1 or COALESCE_TIES_TO_LAST_DIMENSION


# Triton specialises an integer argument divisible by 16 and assumes nothing of the others.
SPECIALISED_MULTIPLE = 16


def alignment_run(*values: int) -> int:
    """The largest power of two, at most SPECIALISED_MULTIPLE, that divides every value (all zero:
    SPECIALISED_MULTIPLE). The GEMM kernels' ``*_RUN`` hints: where Triton's specialisation sees
    only multiples of 16, a 24-channel input or a folded first layer would load scalars."""
    divisor = math.gcd(*values)
    return SPECIALISED_MULTIPLE if divisor == 0 else min(divisor & -divisor, SPECIALISED_MULTIPLE)


def operand_run(t: torch.Tensor, *counts: int) -> int:
    """``alignment_run`` of every stride of ``t`` (N, C, D, H, W) but the channels' and of
    ``counts``, where ``t`` is read channels-last (a channel stride of 1, or 0); else 1. A
    kernel's offset into ``t`` made of those strides and counts is a multiple of it."""
    if t.stride(1) > 1:
        return 1
    return alignment_run(t.stride(0), *t.stride()[2:], *counts)
