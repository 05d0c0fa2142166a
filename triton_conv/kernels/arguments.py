"""Kernel arguments by name: the groups every launcher builds its kernel's arguments from.

The same names mean the same thing in every kernel. A tensor ``t`` passes as ``t_ptr`` and
``t_strides``, its memory strides in elements: over the (N, C, D, H, W) view (``spec.as_3d``)
for activations, over (K, C_G, T, R, S) for weights. Geometry passes as (D, H, W) triples:
``input_size``, ``output_size``, ``padding`` (the leading padding; the trailing padding only
shapes the output size) and, where they are runtime values, ``kernel_size`` (T, R, S),
``conv_stride`` (the convolution's step between output pixels, never a memory stride) and
``dilation``. Triton specialises each element of a tuple argument as it does a scalar argument:
an element equal to 1 becomes a constant, one divisible by 16 carries that hint.
"""

from __future__ import annotations

from typing import Any

import torch

from ..spec import ConvSpec


def tensor(name: str, t: torch.Tensor) -> dict[str, Any]:
    """``{name}_ptr`` and ``{name}_strides`` of ``t``."""
    return {f"{name}_ptr": t, f"{name}_strides": t.stride()}


def bias(b: torch.Tensor | None, fallback: torch.Tensor) -> dict[str, Any]:
    """``bias_ptr`` and ``bias_stride``; without a bias (the kernel's HAS_BIAS off), ``fallback`` and 0."""
    return {"bias_ptr": b if b is not None else fallback, "bias_stride": b.stride(0) if b is not None else 0}


def sizes(spec: ConvSpec) -> dict[str, tuple[int, int, int]]:
    """``input_size``, ``output_size`` and ``padding``, each (D, H, W)."""
    return {"input_size": spec.input_size, "output_size": spec.output_size, "padding": spec.pad_lo}


def filter_geometry(spec: ConvSpec) -> dict[str, tuple[int, int, int]]:
    """``kernel_size`` (T, R, S), ``conv_stride`` and ``dilation`` as runtime arguments."""
    return {"kernel_size": spec.kernel_size, "conv_stride": spec.stride, "dilation": spec.dilation}
