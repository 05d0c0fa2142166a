"""``conv1d``/``conv2d``/``conv3d`` with exactly ``torch.nn.functional``'s signature.

Keyword-only extra: ``padding_mode`` ('zeros', 'reflect', 'replicate', 'circular'), as the
``nn.Conv*`` modules take it. Non-zero modes pad the input explicitly first, as torch does.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from . import autograd as ops
from .spec import KERNEL_DTYPES, IntOrSeq, check_padding_mode, conv_spec, explicit_pad_widths

_TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_warned_dtypes: set[torch.dtype] = set()


def _conv(
    ndim: int,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: IntOrSeq,
    padding: IntOrSeq | str,
    dilation: IntOrSeq,
    groups: int,
    padding_mode: str,
) -> torch.Tensor:
    check_padding_mode(padding_mode)
    spec = conv_spec(input, weight, bias, stride, padding, dilation, groups, ndim)
    if input.dtype not in KERNEL_DTYPES:
        if not input.dtype.is_complex:
            raise RuntimeError(
                f"conv{ndim}d(): triton_conv supports float16, bfloat16, float32 and float64 "
                f"inputs, but got input of dtype {input.dtype}"
            )
        if input.dtype not in _warned_dtypes:
            warnings.warn(f"triton_conv: {input.dtype} runs torch's convolution", stacklevel=3)
            _warned_dtypes.add(input.dtype)
        if padding_mode != "zeros":
            input = F.pad(input, explicit_pad_widths(spec), mode=padding_mode)
            padding = 0
        return _TORCH_CONV[ndim](input, weight, bias, stride, padding, dilation, groups)

    batched = input.dim() == ndim + 2
    x = input if batched else input.unsqueeze(0)
    op_padding = spec.op_padding()
    if padding_mode != "zeros":
        x = F.pad(x, explicit_pad_widths(spec), mode=padding_mode)
        op_padding = [0] * (2 * ndim)
    out = ops.conv_forward(
        x, weight, bias, list(spec.stride[3 - ndim :]), op_padding, list(spec.dilation[3 - ndim :]), spec.groups
    )
    return out if batched else out.squeeze(0)


def conv1d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrSeq = 1,
    padding: IntOrSeq | str = 0,
    dilation: IntOrSeq = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Drop-in for ``F.conv1d``: input (N, C, L) or (C, L), weight (K, C/groups, kL)."""
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrSeq = 1,
    padding: IntOrSeq | str = 0,
    dilation: IntOrSeq = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Drop-in for ``F.conv2d``: input (N, C, H, W) or (C, H, W), weight (K, C/groups, kH, kW)."""
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, padding_mode)


def conv3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrSeq = 1,
    padding: IntOrSeq | str = 0,
    dilation: IntOrSeq = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
) -> torch.Tensor:
    """Drop-in for ``F.conv3d``: input (N, C, D, H, W) or (C, D, H, W), weight (K, C/groups, kD, kH, kW)."""
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, padding_mode)
