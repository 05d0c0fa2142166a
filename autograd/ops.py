"""Custom ops over the Triton kernels, their fake implementations, and the aten fallback.

Op arguments are already validated by ``triton_conv.spec.conv_spec``: tensors are batched,
``stride``/``dilation`` have one entry per spatial dimension, and ``padding`` has the leading
pads followed by the trailing ones (they differ for 'same' with even kernels).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..kernels import INTERPRETER, implicit_gemm_forward
from ..spec import ConvSpec, explicit_pad_widths, op_geometry, output_memory_format

_warned_fallback = False


def _use_kernels(t: torch.Tensor) -> bool:
    """CUDA tensors always run the kernels; CPU tensors only under Triton's interpreter."""
    global _warned_fallback
    if t.is_cuda or INTERPRETER:
        return True
    if not _warned_fallback:
        warnings.warn(
            "triton_conv: CPU tensors without TRITON_INTERPRET=1 run aten's convolution, "
            "not the Triton kernels",
            stacklevel=3,
        )
        _warned_fallback = True
    return False


def _empty_output(input: torch.Tensor, weight: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    return torch.empty(
        spec.out_shape,
        dtype=input.dtype,
        device=input.device,
        memory_format=output_memory_format(input, weight),
    )


def _aten_forward(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec) -> torch.Tensor:
    nd = spec.ndim
    if spec.pad_lo != spec.pad_hi:
        input = F.pad(input, explicit_pad_widths(spec))
        padding = [0] * nd
    else:
        padding = list(spec.pad_lo[3 - nd :])
    return torch.ops.aten.convolution(
        input, weight, bias, list(spec.stride[3 - nd :]), padding, list(spec.dilation[3 - nd :]),
        False, [0] * nd, spec.groups,
    )


@torch.library.custom_op("triton_conv::conv_forward", mutates_args=())
def conv_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """conv(input, weight) + bias, the output in the input's (or weight's) memory format."""
    spec = op_geometry(input, weight, stride, padding, dilation, groups)
    out = _empty_output(input, weight, spec)
    if _use_kernels(input):
        return implicit_gemm_forward(input, weight, bias, spec, out)
    return out.copy_(_aten_forward(input, weight, bias, spec))


@conv_forward.register_fake
def _(input, weight, bias, stride, padding, dilation, groups):
    return _empty_output(input, weight, op_geometry(input, weight, stride, padding, dilation, groups))
