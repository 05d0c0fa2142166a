"""``conv1d``/``conv2d``/``conv3d`` with exactly ``torch.nn.functional``'s signature.

Keyword-only extras:
- ``padding_mode`` ('zeros', 'reflect', 'replicate', 'circular'), as the ``nn.Conv*`` modules
  take it. Non-zero modes pad the input explicitly first, as torch does.
- the fused epilogue ``activation`` (None, 'relu', 'relu6', 'silu', 'gelu', 'sigmoid', 'tanh')
  and ``residual`` (a tensor of the output's shape): the result is
  ``activation(conv(input, weight) + bias + residual)``, computed in one kernel, with gradients
  for input, weight, bias and residual.

Under ``torch.autocast`` the arguments are cast as torch casts a convolution's (``amp.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import autograd as ops
from .amp import autocast_conv_arguments
from .kernels.epilogue import ACTIVATIONS, TORCH_ACTIVATIONS
from .runtime import warn_once
from .spec import KERNEL_DTYPES, IntOrSeq, check_padding_mode, conv_spec

_TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


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
    activation: str | None,
    residual: torch.Tensor | None,
) -> torch.Tensor:
    input, weight, bias, residual = autocast_conv_arguments(input, weight, bias, residual)
    check_padding_mode(padding_mode)
    spec = conv_spec(input, weight, bias, stride, padding, dilation, groups, ndim)
    batched = input.dim() == ndim + 2
    check_epilogue(f"conv{ndim}d", spec.out_shape if batched else spec.out_shape[1:], input, activation, residual)
    if runs_torch(f"conv{ndim}d", input.dtype):
        if padding_mode != "zeros":
            input = F.pad(input, spec.pad_widths(), mode=padding_mode)
            padding = 0
        out = _TORCH_CONV[ndim](input, weight, bias, stride, padding, dilation, groups)
        out = out + residual if residual is not None else out
        return TORCH_ACTIVATIONS[activation or "none"](out)

    x = input if batched else input.unsqueeze(0)
    op_padding = spec.op_padding()
    if padding_mode != "zeros":
        x = F.pad(x, spec.pad_widths(), mode=padding_mode)
        op_padding = [0] * (2 * ndim)
    if residual is not None and not batched:
        residual = residual.unsqueeze(0)
    out = ops.conv(
        x,
        weight,
        bias,
        spec.spatial(spec.stride),
        op_padding,
        spec.spatial(spec.dilation),
        spec.groups,
        residual,
        activation or "none",
    )
    return out if batched else out.squeeze(0)


def runs_torch(name: str, dtype: torch.dtype) -> bool:
    """Whether ``dtype`` runs torch's convolution (complex, warning once per dtype); a dtype that
    neither the kernels nor the complex fallback take raises."""
    if dtype in KERNEL_DTYPES:
        return False
    if not dtype.is_complex:
        raise RuntimeError(
            f"{name}(): triton_conv supports float16, bfloat16, float32 and float64 inputs, but got input of dtype {dtype}"
        )
    warn_once(dtype, f"triton_conv: {dtype} runs torch's convolution", stacklevel=4)
    return True


def check_epilogue(
    name: str,
    expected: tuple[int, ...],
    input: torch.Tensor,
    activation: str | None,
    residual: torch.Tensor | None,
) -> None:
    """Validate the fused epilogue's arguments; ``expected`` is the output's shape (unbatched if the input is)."""
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"{name}(): activation must be None or one of {list(ACTIVATIONS)}, but got '{activation}'")
    if residual is None:
        return
    if not isinstance(residual, torch.Tensor):
        raise TypeError(f"{name}(): argument 'residual' must be Tensor or None, not {type(residual).__name__}")
    if tuple(residual.shape) != tuple(expected):
        raise RuntimeError(
            f"{name}(): residual must have the output's shape {list(expected)}, but got residual of size "
            f"{list(residual.shape)}"
        )
    if residual.dtype != input.dtype or residual.device != input.device:
        raise RuntimeError(
            f"{name}(): residual ({residual.dtype} on {residual.device}) must have the input's dtype and device "
            f"({input.dtype} on {input.device})"
        )


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
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Drop-in for ``F.conv1d``: input (N, C, L) or (C, L), weight (K, C/groups, kL)."""
    return _conv(1, input, weight, bias, stride, padding, dilation, groups, padding_mode, activation, residual)


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
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Drop-in for ``F.conv2d``: input (N, C, H, W) or (C, H, W), weight (K, C/groups, kH, kW)."""
    return _conv(2, input, weight, bias, stride, padding, dilation, groups, padding_mode, activation, residual)


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
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """Drop-in for ``F.conv3d``: input (N, C, D, H, W) or (C, D, H, W), weight (K, C/groups, kD, kH, kW)."""
    return _conv(3, input, weight, bias, stride, padding, dilation, groups, padding_mode, activation, residual)
