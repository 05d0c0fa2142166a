"""``conv_transpose1d/2d/3d`` with exactly ``torch.nn.functional``'s signature.

Keyword-only extras: the fused epilogue ``activation`` (None, 'relu', 'relu6', 'silu', 'gelu',
'sigmoid', 'tanh') and ``residual`` (a tensor of the output's shape): the result is
``activation(conv_transpose(input, weight) + bias + residual)`` in one kernel, with gradients for
input, weight, bias and residual.

Under ``torch.autocast`` the arguments are cast as torch casts a transposed convolution's (the
convolutions' policy, ``amp.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import autograd as ops
from .amp import autocast_conv_arguments
from .functional import check_epilogue, runs_torch
from .kernels.epilogue import TORCH_ACTIVATIONS
from .spec import IntOrSeq, conv_transpose_spec

_TORCH_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _conv_transpose(
    ndim: int,
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: IntOrSeq,
    padding: IntOrSeq,
    output_padding: IntOrSeq,
    groups: int,
    dilation: IntOrSeq,
    activation: str | None,
    residual: torch.Tensor | None,
) -> torch.Tensor:
    input, weight, bias, residual = autocast_conv_arguments(input, weight, bias, residual)
    name = f"conv_transpose{ndim}d"
    spec = conv_transpose_spec(input, weight, bias, stride, padding, output_padding, groups, dilation, ndim)
    batched = input.dim() == ndim + 2
    check_epilogue(name, spec.in_shape if batched else spec.in_shape[1:], input, activation, residual)
    if runs_torch(name, input.dtype):
        out = _TORCH_CONV_TRANSPOSE[ndim](input, weight, bias, stride, padding, output_padding, groups, dilation)
        out = out + residual if residual is not None else out
        return TORCH_ACTIVATIONS[activation or "none"](out)

    x = input if batched else input.unsqueeze(0)
    if residual is not None and not batched:
        residual = residual.unsqueeze(0)
    # spec is the convolution this transposes: its leading padding is the padding, and its
    # trailing padding is padding - output_padding.
    padding_t = spec.spatial(spec.pad_lo)
    output_padding_t = [lo - hi for lo, hi in zip(padding_t, spec.spatial(spec.pad_hi))]
    out = ops.conv_transpose(
        x,
        weight,
        bias,
        spec.spatial(spec.stride),
        padding_t,
        output_padding_t,
        spec.spatial(spec.dilation),
        spec.groups,
        residual,
        activation or "none",
    )
    return out if batched else out.squeeze(0)


def conv_transpose1d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrSeq = 1,
    padding: IntOrSeq = 0,
    output_padding: IntOrSeq = 0,
    groups: int = 1,
    dilation: IntOrSeq = 1,
    *,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Drop-in for ``F.conv_transpose1d``: input (N, C, L) or (C, L), weight (C, K/groups, kL)."""
    return _conv_transpose(
        1, input, weight, bias, stride, padding, output_padding, groups, dilation, activation, residual
    )


def conv_transpose2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrSeq = 1,
    padding: IntOrSeq = 0,
    output_padding: IntOrSeq = 0,
    groups: int = 1,
    dilation: IntOrSeq = 1,
    *,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Drop-in for ``F.conv_transpose2d``: input (N, C, H, W) or (C, H, W), weight (C, K/groups, kH, kW)."""
    return _conv_transpose(
        2, input, weight, bias, stride, padding, output_padding, groups, dilation, activation, residual
    )


def conv_transpose3d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrSeq = 1,
    padding: IntOrSeq = 0,
    output_padding: IntOrSeq = 0,
    groups: int = 1,
    dilation: IntOrSeq = 1,
    *,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Drop-in for ``F.conv_transpose3d``: input (N, C, D, H, W) or (C, D, H, W), weight (C, K/groups, kD, kH, kW)."""
    return _conv_transpose(
        3, input, weight, bias, stride, padding, output_padding, groups, dilation, activation, residual
    )
