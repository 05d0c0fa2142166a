"""Shared test machinery: the case types, inputs in every layout, the reference convolution, and
the comparison (its tolerance model is triton_conv.testing's, which the benchmark harness uses too)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from triton_conv.testing import TORCH_CONV, in_layout, relative_error, tolerance

# TRITON_CONV_TEST_DEVICE=cuda collects the CUDA test set on a machine without one (gpu-check --dry-run).
DEVICE = os.environ.get("TRITON_CONV_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
# bfloat16 runs through the interpreter too: its kernels widen bfloat16 dot operands to float32.
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LAYOUTS = ["contiguous", "channels_last", "strided_view", "permuted"]


@dataclass(frozen=True)
class Case:
    """One problem's sizes and geometry, shared by the convolution and the transposed convolution."""

    ndim: int
    batch: int
    in_channels: int
    out_channels: int
    size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: int | tuple[int, ...] | str = 0
    dilation: int | tuple[int, ...] = 1
    groups: int = 1
    bias: bool = True
    # A table's case has a name: its test id, and how tests pick it (tests/cases.py). A case made
    # on the spot goes by its geometry.
    name: str = ""

    @property
    def id(self) -> str:
        return self.name or self.geometry()

    def geometry(self) -> str:
        """The sizes and every argument off its default, e.g. ``2d-n2-c3k4-9x10-f3x3-p1``."""
        parts = [
            f"{self.ndim}d",
            f"n{self.batch}",
            f"c{self.in_channels}k{self.out_channels}",
            "x".join(map(str, self.size)),
            "f" + "x".join(map(str, self.kernel)),
        ]
        defaults = dict(stride=1, padding=0, output_padding=0, dilation=1, groups=1)
        for name, default in defaults.items():
            value = getattr(self, name, default)
            if value != default:
                parts.append(f"{'op' if name == 'output_padding' else name[0]}{value}".replace(" ", ""))
        if not self.bias:
            parts.append("nobias")
        return "-".join(parts)


@dataclass(frozen=True)
class ConvCase(Case):
    """One convolution: input (batch, in_channels, *size), weight (out_channels, in/groups, *kernel)."""

    padding_mode: str = "zeros"

    def geometry(self) -> str:
        padding_mode = "" if self.padding_mode == "zeros" else f"-{self.padding_mode}"
        return super().geometry() + padding_mode

    @property
    def reduction(self) -> int:
        return (self.in_channels // self.groups) * math.prod(self.kernel)

    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)


@dataclass(frozen=True)
class TCase(Case):
    """One transposed convolution: input (batch, in_channels, *size), weight (in, out/groups, *kernel)."""

    output_padding: int | tuple[int, ...] = 0

    def kwargs(self) -> dict:
        return dict(
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
            groups=self.groups,
            dilation=self.dilation,
        )

    @property
    def reduction(self) -> int:
        """The longest sum behind any element of the output or of a gradient."""
        taps = math.prod(self.kernel)
        pixels = self.batch * math.prod(self.size)
        return max(self.in_channels // self.groups * taps, self.out_channels // self.groups * taps, pixels)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, reduction: int, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype} != {dtype}"
    err = relative_error(actual, expected)
    tol = tolerance(dtype, reduction)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e} ({dtype}, reduction {reduction})"


def make_inputs(case: ConvCase, dtype: torch.dtype, layout: str = "contiguous", requires_grad: bool = False):
    """Random input, weight and bias (values exactly representable in ``dtype``)."""
    x = torch.randn(case.batch, case.in_channels, *case.size, dtype=torch.float64)
    w = torch.randn(case.out_channels, case.in_channels // case.groups, *case.kernel, dtype=torch.float64)
    w /= math.sqrt(max(case.reduction, 1))
    b = torch.randn(case.out_channels, dtype=torch.float64) if case.bias else None
    return as_test_inputs((x, w, b), dtype, layout, requires_grad)


def make_transposed_inputs(case: TCase, dtype: torch.dtype, layout: str = "contiguous"):
    """Random input, weight and bias of a transposed convolution (values exact in ``dtype``), requiring grad."""
    x = torch.randn(case.batch, case.in_channels, *case.size, dtype=torch.float64)
    w = torch.randn(case.in_channels, case.out_channels // case.groups, *case.kernel, dtype=torch.float64)
    w /= math.sqrt(case.in_channels // case.groups * math.prod(case.kernel))
    b = torch.randn(case.out_channels, dtype=torch.float64) if case.bias else None
    return as_test_inputs((x, w, b), dtype, layout, requires_grad=True)


def as_test_inputs(
    tensors: tuple[torch.Tensor | None, ...], dtype: torch.dtype, layout: str, requires_grad: bool
) -> tuple[torch.Tensor | None, ...]:
    """float64 ``tensors`` (None stays None) in ``dtype`` on the test device, in ``layout``."""
    out = []
    for t in tensors:
        if t is not None:
            t = t.to(dtype).to(DEVICE)
            # A 1-D bias can only be strided: give it a stride of 2 in the strided layout.
            t = in_layout(t, layout) if t.dim() > 1 or layout == "strided_view" else t
            t.requires_grad_(requires_grad)
        out.append(t)
    return tuple(out)


def reference_forward(case: ConvCase, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """torch's convolution in float64 on the same values, differentiable in x, w and b.

    Non-zero padding modes pad as ``nn.Conv*`` does, with the pad widths torch's module computes.
    """
    x64, w64 = x.double(), w.double()
    b64 = b.double() if b is not None else None
    kwargs = case.kwargs()
    if case.padding_mode != "zeros":
        module = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[case.ndim](
            case.in_channels, case.out_channels, case.kernel, padding_mode=case.padding_mode, device="meta", **kwargs
        )
        x64 = F.pad(x64, module._reversed_padding_repeated_twice, mode=case.padding_mode)
        kwargs["padding"] = 0
    return TORCH_CONV[case.ndim](x64, w64, b64, **kwargs)
