"""What every launcher needs: accumulator and dot precision per dtype, the interpreter switch."""

from __future__ import annotations

import os

import torch
import triton.language as tl

# Triton reads this when a kernel is decorated, so it must be set before triton_conv is imported.
INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"

def accumulator_dtype(dtype: torch.dtype) -> tl.dtype:
    """float64 accumulates in float64; everything else in float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def dot_precision(t: torch.Tensor) -> str:
    """TF32 for float32 on CUDA only where torch would use it for convolutions, IEEE otherwise."""
    if t.dtype == torch.float32 and t.is_cuda and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"
