"""The deterministic second half of split-K reductions (weight and bias gradients)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..spec import needs_int64
from . import arguments
from .common import Launch, accumulator_torch_dtype


@triton.jit
def split_k_sum_kernel(
    partial_ptr, out_ptr, flag_ptr, E, SPLIT_K, GATED: tl.constexpr, INDEX_64: tl.constexpr, BLOCK: tl.constexpr
):
    """out[e] = sum over s of partial[s, e], in split order (deterministic); partial (SPLIT_K, E)
    contiguous. If GATED, only where *flag_ptr is set (``non_finite.py``)."""
    if GATED:
        if tl.load(flag_ptr) == 0:
            return
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < E
    total = tl.load(partial_ptr + offs, mask=mask, other=0.0)
    for s in range(1, SPLIT_K):
        total += tl.load(partial_ptr + s * E + offs, mask=mask, other=0.0)
    tl.store(out_ptr + offs, total.to(out_ptr.dtype.element_ty), mask=mask)


def sum_splits(partial: torch.Tensor, out: torch.Tensor, gate: torch.Tensor | None = None) -> None:
    """Write the sum over dim 0 of ``partial`` (SPLIT_K, E) into the contiguous ``out`` (E
    elements); with ``gate``, only where the flag is set."""
    block = 1024
    elements = out.numel()
    if elements:
        Launch(
            split_k_sum_kernel,
            (triton.cdiv(elements, block),),
            {"partial_ptr": partial, "out_ptr": out, "E": elements, "SPLIT_K": partial.shape[0]}
            | arguments.flag(gate, out),
            {"GATED": gate is not None, "INDEX_64": needs_int64(partial), "BLOCK": block},
        )()


def partial_buffers(
    grad_output: torch.Tensor, split_k: int, weight_elements: int, bias_elements: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-split float32 (float64 for float64) partials of the weight and, if wanted, bias gradients."""
    acc = accumulator_torch_dtype(grad_output.dtype)
    dw_partial = grad_output.new_empty((split_k, weight_elements), dtype=acc)
    db_partial = grad_output.new_empty((split_k, bias_elements), dtype=acc) if bias_elements is not None else None
    return dw_partial, db_partial
