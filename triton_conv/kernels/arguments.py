"""Kernel arguments by name: the groups every launcher builds its kernel's arguments from.

The same names mean the same thing in every kernel. A tensor ``t`` passes as ``t_ptr`` and
``t_strides``, its memory strides in elements: over the (N, C, D, H, W) view (``spec.as_3d``)
for activations, over (K, C_G, T, R, S) for weights. Geometry passes as (D, H, W) triples:
``input_size``, ``output_size``, ``padding`` (the leading padding; the trailing padding only
shapes the output size) and, where they are runtime values, ``kernel_size`` (T, R, S),
``conv_stride`` (the convolution's step between output pixels, never a memory stride) and
``dilation``. Triton specialises each element of a tuple argument as it does a scalar argument:
an element equal to 1 becomes a constant, one divisible by 16 carries that hint. The direct
kernels take the filter size, steps and dilation as scalar constexprs (T, R, S, CONV_STRIDE_D,
...): Triton 3.6 and 3.9 do not keep the elements of a constexpr tuple constexpr once unpacked.

Kernels list their pointers first, then sizes and geometry, then memory strides: the order the
compiled code was tuned with (``ptxas`` allocated up to 8 more registers per thread with each
pointer beside its strides).
"""

from __future__ import annotations

from typing import Any

import torch

from ..spec import ConvSpec
from .epilogue import Epilogue


def tensors(**named: torch.Tensor) -> dict[str, Any]:
    """``{name}_ptr`` and ``{name}_strides`` of each named tensor."""
    args: dict[str, Any] = {}
    for name, t in named.items():
        args[f"{name}_ptr"] = t
        args[f"{name}_strides"] = t.stride()
    return args


def output(name: str, out: torch.Tensor, bias: torch.Tensor | None, epilogue: Epilogue) -> dict[str, Any]:
    """The output ``{name}_ptr``/``{name}_strides`` and what the fused epilogue reads and writes
    beside it: ``bias_ptr``/``bias_stride`` (``out`` and 0 without a bias), ``residual_ptr``/
    ``residual_strides`` and ``z_ptr`` (``Epilogue.args``)."""
    return {
        **tensors(**{name: out}),
        "bias_ptr": bias if bias is not None else out,
        "bias_stride": bias.stride(0) if bias is not None else 0,
        **epilogue.args(out),
    }


def flag(flag: torch.Tensor | None, out: torch.Tensor) -> dict[str, Any]:
    """``flag_ptr``: the non-finite flag a kernel sets or is gated on (``non_finite.py``), or
    ``out`` where there is none (not read)."""
    return {"flag_ptr": flag if flag is not None else out}


def output_flags(bias: torch.Tensor | None, epilogue: Epilogue) -> dict[str, Any]:
    """The epilogue's constexprs: HAS_BIAS, ACTIVATION, HAS_RESIDUAL, STORE_PRE_ACTIVATION."""
    return {"HAS_BIAS": bias is not None, **epilogue.constexprs()}


def sizes(spec: ConvSpec) -> dict[str, tuple[int, int, int]]:
    """``input_size``, ``output_size`` and ``padding``, each (D, H, W)."""
    return {"input_size": spec.input_size, "output_size": spec.output_size, "padding": spec.pad_lo}


def division_magic(divisor: int) -> tuple[int, int]:
    """(magic, shift) with which ``indexing.divmod_by`` divides by ``divisor`` (1 to 2**31 - 1):
    shift = ceil(log2(divisor)), magic = floor(2**(32 + shift) / divisor) - 2**32 + 1, below
    2**32, passed as the int32 of the same bits (an int argument of 2**31 or more would be int64)."""
    shift = (divisor - 1).bit_length()
    magic = (1 << (32 + shift)) // divisor - (1 << 32) + 1
    return (magic - (1 << 32) if magic >= 1 << 31 else magic), shift


def divisors(name: str, sizes: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """``{name}_magics`` and ``{name}_shifts``: ``division_magic`` of each of ``sizes``."""
    magics, shifts = zip(*(division_magic(size) for size in sizes))
    return {f"{name}_magics": magics, f"{name}_shifts": shifts}


def filter_geometry(spec: ConvSpec) -> dict[str, tuple[int, int, int]]:
    """``kernel_size`` (T, R, S), ``conv_stride`` and ``dilation`` as runtime arguments."""
    return {"kernel_size": spec.kernel_size, "conv_stride": spec.stride, "dilation": spec.dilation}
