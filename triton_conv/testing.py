"""What the test suite and the benchmark harness share to check a result against torch: the
convolutions by dimensionality, the same values in another memory layout, the relative error and
its bound by dtype and reduction length.

Nothing in the package imports this module: it sits above the public functions it maps.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .functional import conv1d, conv2d, conv3d
from .functional_transpose import conv_transpose1d, conv_transpose2d, conv_transpose3d

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TORCH_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
TRITON_CONV = {1: conv1d, 2: conv2d, 3: conv3d}
TRITON_CONV_TRANSPOSE = {1: conv_transpose1d, 2: conv_transpose2d, 3: conv_transpose3d}

# The error bound by dtype name ("tf32": float32 tensors whose products the MMA rounds to TF32).
# Unit roundoff of the stored result, and of the products where the MMA rounds its inputs (TF32);
# half-precision products are exact, and every dtype but float64 accumulates in float32.
_OUTPUT_ROUNDOFF = {"bfloat16": 2**-8, "float16": 2**-11, "tf32": 2**-24, "float32": 2**-24, "float64": 2**-53}
_PRODUCT_ROUNDOFF = {"bfloat16": 0.0, "float16": 0.0, "tf32": 2**-11, "float32": 0.0, "float64": 0.0}
_ACCUMULATION_ROUNDOFF = {"bfloat16": 2**-24, "float16": 2**-24, "tf32": 2**-24, "float32": 2**-24, "float64": 2**-53}
# The loosest any reduction may make it.
_CAP = {"bfloat16": 5e-2, "float16": 1e-2, "tf32": 1e-2, "float32": 1e-5, "float64": 1e-10}


def tolerance(dtype: torch.dtype | str, reduction: int) -> float:
    """Bound on max |error| / max |reference| for a result in ``dtype`` whose elements each sum
    ``reduction`` products: rounding of the result and of the products, plus the accumulation
    error, which grows like sqrt(reduction length) for random signs."""
    name = str(dtype).removeprefix("torch.")
    rounding = 8 * (_OUTPUT_ROUNDOFF[name] + _PRODUCT_ROUNDOFF[name])
    return min(_CAP[name], rounding + 8 * _ACCUMULATION_ROUNDOFF[name] * math.sqrt(max(reduction, 1)))


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|, in float64 (0 for empty tensors)."""
    diff = (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0
    scale = expected.double().abs().max().item() if expected.numel() else 0.0
    return diff / max(scale, 1e-30)


def in_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``t`` in another memory layout (a view where the layout is a view).

    ``contiguous``; ``channels_last``, channels innermost for any rank (NLC, NHWC, NDHWC);
    ``strided_view``, every other element along the last dimension; ``permuted``, spatial
    dimensions outermost, then batch and channels. A tensor without spatial dimensions (a
    bias) has no channels-last or permuted form: it comes back contiguous.
    """
    if layout == "contiguous" or (layout in ("channels_last", "permuted") and t.dim() < 3):
        return t.contiguous()
    if layout == "channels_last":
        return _stored_in_order(t, [0, *range(2, t.dim()), 1])
    if layout == "strided_view":
        wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        view = wide[..., ::2]
        view.copy_(t)
        return view
    if layout == "permuted":
        # A layout nobody asks for: the kernels take explicit strides, so it must still work.
        return _stored_in_order(t, [*range(2, t.dim()), 0, 1])
    raise ValueError(f"unknown layout {layout!r}")


def _stored_in_order(t: torch.Tensor, order: list[int]) -> torch.Tensor:
    """``t`` with its dimensions stored outermost to innermost in ``order``, same shape."""
    return t.permute(order).contiguous().permute([order.index(i) for i in range(t.dim())])
