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

from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from . import autograd as ops
from .amp import autocast_conv_arguments
from .kernels.epilogue import ACTIVATIONS, TORCH_ACTIVATIONS
from .runtime import warn_once
from .spec import KERNEL_DTYPES, IntOrSeq, check_padding_mode, conv_spec

DropIn = TypeVar("DropIn", bound=Callable[..., torch.Tensor])

_SPATIAL_DIMS = {1: ["L"], 2: ["H", "W"], 3: ["D", "H", "W"]}


def drop_in(function: DropIn, torch_function: Callable[..., torch.Tensor], ndim: int, weight_dims: str) -> DropIn:
    """``function`` named and documented as the drop-in for ``torch_function`` (an ``F.conv*``):
    the docstring gives the shapes, ``weight_dims`` being the weight's two leading dimensions."""
    name = torch_function.__name__
    spatial = _SPATIAL_DIMS[ndim]
    sizes, kernel = ", ".join(spatial), ", ".join(f"k{d}" for d in spatial)
    function.__name__ = function.__qualname__ = name
    function.__doc__ = (
        f"Drop-in for ``F.{name}``: input (N, C, {sizes}) or (C, {sizes}), weight ({weight_dims}, {kernel})."
    )
    return function


def runs_torch(name: str, dtype: torch.dtype) -> bool:
    """Whether ``dtype`` runs torch's convolution (complex, warning once per dtype); a dtype that
    neither the kernels nor the complex fallback take raises."""
    if dtype in KERNEL_DTYPES:
        return False
    if not dtype.is_complex:
        raise RuntimeError(
            f"{name}(): triton_conv supports float16, bfloat16, float32 and float64 inputs, but got input of dtype {dtype}"
        )
    # The warning points at the caller of the drop-in (runs_torch, the drop-in, its caller).
    warn_once(dtype, f"triton_conv: {dtype} runs torch's convolution", stacklevel=3)
    return True


def check_epilogue(
    name: str,
    out_shape: tuple[int, ...],
    input: torch.Tensor,
    activation: str | None,
    residual: torch.Tensor | None,
) -> None:
    """Validate the fused epilogue's arguments; ``out_shape`` is the batched output's shape (the
    residual has its unbatched shape where the input is unbatched)."""
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"{name}(): activation must be None or one of {list(ACTIVATIONS)}, but got '{activation}'")
    if residual is None:
        return
    if not isinstance(residual, torch.Tensor):
        raise TypeError(f"{name}(): argument 'residual' must be Tensor or None, not {type(residual).__name__}")
    expected = out_shape if input.dim() == len(out_shape) else out_shape[1:]
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


def torch_epilogue(out: torch.Tensor, residual: torch.Tensor | None, activation: str | None) -> torch.Tensor:
    """The fused epilogue after torch's convolution ``out`` (bias included): residual, then activation."""
    out = out + residual if residual is not None else out
    return TORCH_ACTIVATIONS[activation or "none"](out)


def run_batched(
    op: Callable[..., torch.Tensor],
    ndim: int,
    input: torch.Tensor,
    *arguments: Any,
    residual: torch.Tensor | None,
    activation: str | None,
) -> torch.Tensor:
    """``op(input, *arguments, residual, activation)``, a custom op's entry point, which takes batched
    tensors: an unbatched input (and residual) runs as a batch of one."""
    if input.dim() == ndim + 2:
        return op(input, *arguments, residual, activation or "none")
    residual = residual.unsqueeze(0) if residual is not None else None
    return op(input.unsqueeze(0), *arguments, residual, activation or "none").squeeze(0)


def _conv(ndim: int, torch_conv: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``conv{ndim}d``, the drop-in for ``torch_conv``, which runs the complex dtypes. A padding_mode
    other than 'zeros' pads the input explicitly first, for torch's convolution and the kernels alike."""

    def conv(
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
        name = torch_conv.__name__
        input, weight, bias, residual = autocast_conv_arguments(input, weight, bias, residual)
        check_padding_mode(padding_mode)
        spec = conv_spec(input, weight, bias, stride, padding, dilation, groups, ndim)
        check_epilogue(name, spec.out_shape, input, activation, residual)
        in_torch = runs_torch(name, input.dtype)
        if padding_mode != "zeros":  # padded explicitly first, as torch does
            input = F.pad(input, spec.pad_widths(), mode=padding_mode)
            padding, spec = 0, spec.with_padded_input()
        if in_torch:
            return torch_epilogue(
                torch_conv(input, weight, bias, stride, padding, dilation, groups), residual, activation
            )
        return run_batched(
            ops.conv, ndim, input, weight, bias, *spec.op_arguments(), residual=residual, activation=activation
        )

    return drop_in(conv, torch_conv, ndim, "K, C/groups")


conv1d = _conv(1, F.conv1d)
conv2d = _conv(2, F.conv2d)
conv3d = _conv(3, F.conv3d)
