"""Shared test machinery: the case table type, inputs in every layout, tolerances, comparisons."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

import triton_conv

THOROUGH = os.environ.get("TRITON_CONV_THOROUGH") == "1"
# TRITON_CONV_TEST_DEVICE=cuda collects the CUDA test set on a machine without one (gpu-check --dry-run).
DEVICE = os.environ.get("TRITON_CONV_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
# bfloat16 runs through the interpreter too: its kernels widen bfloat16 dot operands to float32.
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
LAYOUTS = ["contiguous", "channels_last", "strided_view", "permuted"]

TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
OUR_CONV = {1: triton_conv.conv1d, 2: triton_conv.conv2d, 3: triton_conv.conv3d}

# Relative error bounds: the project's bars for float32 (IEEE) and float64; half types by their eps.
_EPS = {torch.float64: 2.2e-16, torch.float32: 1.2e-7, torch.float16: 9.8e-4, torch.bfloat16: 7.8e-3}
_CAP = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}


@dataclass(frozen=True)
class ConvCase:
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
    padding_mode: str = "zeros"
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def id(self) -> str:
        parts = [
            f"{self.ndim}d",
            f"n{self.batch}",
            f"c{self.in_channels}k{self.out_channels}",
            "x".join(map(str, self.size)),
            "f" + "x".join(map(str, self.kernel)),
        ]
        for name in ("stride", "padding", "dilation", "groups"):
            value = getattr(self, name)
            if value not in (0, 1) or (name == "padding" and value != 0):
                parts.append(f"{name[0]}{value}".replace(" ", ""))
        if not self.bias:
            parts.append("nobias")
        if self.padding_mode != "zeros":
            parts.append(self.padding_mode)
        return "-".join(parts)

    @property
    def reduction(self) -> int:
        return (self.in_channels // self.groups) * math.prod(self.kernel)

    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)


def tolerance(dtype: torch.dtype, reduction: int) -> float:
    """Rounding error grows like sqrt(reduction length) in a float accumulation."""
    return min(_CAP[dtype], 16 * _EPS[dtype] * math.sqrt(max(reduction, 1)))


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    diff = (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0
    scale = expected.double().abs().max().item() if expected.numel() else 0.0
    return diff / max(scale, 1e-30)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, reduction: int, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype} != {dtype}"
    err = relative_error(actual, expected)
    tol = tolerance(dtype, reduction)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e} ({dtype}, reduction {reduction})"


def in_layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as ``t`` in another memory layout (a view where the layout is a view)."""
    if layout == "contiguous":
        return t.contiguous()
    if layout == "channels_last":
        # Channels innermost, for any rank: what channels_last / channels_last_3d mean.
        order = [0, *range(2, t.dim()), 1]
        return t.permute(order).contiguous().permute(_inverse(order))
    if layout == "strided_view":
        # Every other element of a twice-as-wide buffer along the last dimension.
        wide = torch.empty(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
        view = wide[..., ::2]
        view.copy_(t)
        return view
    if layout == "permuted":
        # Spatial dims outermost, then batch, channels: a layout nobody asks for, still correct.
        order = [*range(2, t.dim()), 0, 1]
        return t.permute(order).contiguous().permute(_inverse(order))
    raise ValueError(layout)


def _inverse(order: list[int]) -> list[int]:
    inv = [0] * len(order)
    for i, o in enumerate(order):
        inv[o] = i
    return inv


def make_inputs(case: ConvCase, dtype: torch.dtype, layout: str = "contiguous", requires_grad: bool = False):
    """Random input, weight and bias (values exactly representable in ``dtype``)."""
    x = torch.randn(case.batch, case.in_channels, *case.size, dtype=torch.float64)
    w = torch.randn(case.out_channels, case.in_channels // case.groups, *case.kernel, dtype=torch.float64)
    w /= math.sqrt(max(case.reduction, 1))
    b = torch.randn(case.out_channels, dtype=torch.float64) if case.bias else None
    return as_test_inputs((x, w, b), dtype, layout, requires_grad)


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
