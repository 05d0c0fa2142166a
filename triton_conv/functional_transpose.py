"""``conv_transpose1d/2d/3d`` with exactly ``torch.nn.functional``'s signature.

Keyword-only extras: the fused epilogue ``activation`` (None, 'relu', 'relu6', 'silu', 'gelu',
'sigmoid', 'tanh') and ``residual`` (a tensor of the output's shape): the result is
``activation(conv_transpose(input, weight) + bias + residual)`` in one kernel, with gradients for
input, weight, bias and residual.

Under ``torch.autocast`` the arguments are cast as torch casts a transposed convolution's (the
convolutions' policy, ``amp.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import autograd as ops
from .amp import autocast_conv_arguments
from .functional import check_epilogue, drop_in, run_batched, runs_torch, torch_epilogue
from .spec import IntOrSeq, conv_transpose_spec


def _conv_transpose(ndim: int, torch_conv_transpose: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """``conv_transpose{ndim}d``, the drop-in for ``torch_conv_transpose`` (which runs the complex dtypes)."""

    def conv_transpose(
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
        name = torch_conv_transpose.__name__
        input, weight, bias, residual = autocast_conv_arguments(input, weight, bias, residual)
        spec = conv_transpose_spec(input, weight, bias, stride, padding, output_padding, groups, dilation, ndim)
        check_epilogue(name, spec.in_shape, input, activation, residual)
        if runs_torch(name, input.dtype):
            out = torch_conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation)
            return torch_epilogue(out, residual, activation)
        return run_batched(
            ops.conv_transpose,
            ndim,
            input,
            weight,
            bias,
            *spec.transposed_arguments(),
            residual=residual,
            activation=activation,
        )

    return drop_in(conv_transpose, torch_conv_transpose, ndim, "C, K/groups")


conv_transpose1d = _conv_transpose(1, F.conv_transpose1d)
conv_transpose2d = _conv_transpose(2, F.conv_transpose2d)
conv_transpose3d = _conv_transpose(3, F.conv_transpose3d)
