"""Flags for results that are not finite, where a kernel multiplies zeros torch never does.

The band kernels multiply the zeros of their band matrices, and the GEMM of bundled groups
(``dispatch.group_bundle``) the zero blocks between the groups of a bundle. IEEE ``0 * inf`` is
NaN, so an infinity or a NaN among the inputs would make NaN of outputs whose products in torch
never meet it. Such a kernel flags a result that is not finite, and a launch gated on the flag
computes it again with torch's products only; for finite data that launch's programs read the
flag and return.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def not_finite(total):
    """Whether ``total`` is a NaN or an infinity (a NaN compares false with everything)."""
    return (tl.abs(total) < float("inf")) == 0


@triton.jit
def flag_tile_not_finite(acc, mask_m, mask_n, flag_ptr):
    """Set ``*flag_ptr`` to 1 where the accumulator tile's valid (rows ``mask_m``, columns
    ``mask_n``) elements are not all finite; leave it otherwise (every program may write it). The
    sum of the tile is not finite where one of its elements is not (or where it overflows: a
    needless recomputation)."""
    total = tl.sum(tl.sum(tl.where(mask_m[:, None] & mask_n[None, :], acc, 0.0), axis=1), axis=0)
    tl.store(flag_ptr, 1, mask=not_finite(total))


def new_flag(device: torch.device) -> torch.Tensor:
    """A cleared flag for ``flag_tile_not_finite``: one int32."""
    return torch.zeros((), dtype=torch.int32, device=device)
