"""The fused epilogue: out = activation(conv + bias + residual), and the activation's derivative.

The forward kernels call ``finish_output`` on their accumulator tile. For the backward pass,
``activation_grad`` turns d(loss)/d(out) into d(loss)/d(pre-activation), reading the saved
output where the derivative is a function of it (relu, relu6, sigmoid, tanh) and the saved
pre-activation where it is not (silu, gelu).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from ..spec import as_3d, needs_int64
from .common import Launch, accumulator_dtype

ACTIVATIONS = ("relu", "relu6", "silu", "gelu", "sigmoid", "tanh")
# The same activations in torch: the aten fallback and the tests' reference.
TORCH_ACTIVATIONS = {
    "none": lambda z: z,
    "relu": torch.relu,
    "relu6": torch.nn.functional.relu6,
    "silu": torch.nn.functional.silu,
    "gelu": torch.nn.functional.gelu,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}
# Activations whose derivative needs the pre-activation; the others' needs only the output.
NEEDS_PRE_ACTIVATION = ("silu", "gelu")
# Globals read inside jit functions must be constexpr.
_SQRT_HALF = tl.constexpr(0.7071067811865476)
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


@dataclass(frozen=True, eq=False)
class Epilogue:
    """What a forward kernel does after the reduction, besides adding the bias.

    ``residual`` is added before the activation (any strides, the output's shape);
    ``pre_activation``, if given, receives conv + bias + residual (the output's strides).
    """

    activation: str = "none"
    residual: torch.Tensor | None = None
    pre_activation: torch.Tensor | None = None

    def args(self, fallback: torch.Tensor) -> dict[str, Any]:
        """The kernel arguments ``residual_ptr``, ``residual_strides`` (of the residual's (N, C, D, H, W)
        view) and ``z_ptr`` (the pre-activation, stored with the output's strides); ``fallback`` and
        zero strides for what is absent."""
        residual = as_3d(self.residual) if self.residual is not None else None
        return {
            "residual_ptr": residual if residual is not None else fallback,
            "residual_strides": residual.stride() if residual is not None else (0,) * 5,
            "z_ptr": self.pre_activation if self.pre_activation is not None else fallback,
        }

    def constexprs(self) -> dict:
        return dict(
            ACTIVATION=self.activation,
            HAS_RESIDUAL=self.residual is not None,
            STORE_PRE_ACTIVATION=self.pre_activation is not None,
        )


# Bias only: what a plain convolution does after its reduction.
PLAIN = Epilogue()


@triton.jit
def apply_activation(z, ACTIVATION: tl.constexpr):
    """activation(z) for a constexpr activation name ("none" leaves z as it is)."""
    out = z
    # Comparisons false for NaN keep it, as torch does (tl.maximum/tl.minimum may drop it).
    if ACTIVATION == "relu":
        out = tl.where(z < 0.0, 0.0, z)
    if ACTIVATION == "relu6":
        out = tl.where(z < 0.0, 0.0, tl.where(z > 6.0, 6.0, z))
    if ACTIVATION == "silu":
        out = z * tl.sigmoid(z)
    if ACTIVATION == "gelu":
        out = 0.5 * z * (1.0 + tl.erf(z * _SQRT_HALF))
    if ACTIVATION == "sigmoid":
        out = tl.sigmoid(z)
    if ACTIVATION == "tanh":
        out = _tanh(z)
    return out


@triton.jit
def _tanh(z):
    """tanh with full relative precision near 0, where (1 - t) / (1 + t) cancels."""
    a = tl.abs(z)
    t = tl.exp(-2.0 * a)
    large = (1.0 - t) / (1.0 + t)
    a2 = a * a
    # Taylor series to z^9: under 5e-17 relative error below 0.05.
    small = a * (1.0 + a2 * (-1.0 / 3.0 + a2 * (2.0 / 15.0 + a2 * (-17.0 / 315.0 + a2 * (62.0 / 2835.0)))))
    return tl.where(z < 0, -1.0, 1.0) * tl.where(a < 0.05, small, large)


@triton.jit
def finish_output(
    acc,
    y_ptrs,
    z_ptrs,
    residual_ptrs,
    mask,
    ACTIVATION: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    STORE_PRE_ACTIVATION: tl.constexpr,
):
    """Add the residual to the (bias-added) accumulator, store the pre-activation if the backward
    needs it, apply the activation, cast and store."""
    out = finished_output(acc, z_ptrs, residual_ptrs, mask, ACTIVATION, HAS_RESIDUAL, STORE_PRE_ACTIVATION)
    tl.store(y_ptrs, out.to(y_ptrs.dtype.element_ty), mask=mask)


@triton.jit
def finished_output(
    acc,
    z_ptrs,
    residual_ptrs,
    mask,
    ACTIVATION: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    STORE_PRE_ACTIVATION: tl.constexpr,
):
    """``finish_output`` up to the output's store: the activated output, in the accumulator's type."""
    if HAS_RESIDUAL:
        acc += tl.load(residual_ptrs, mask=mask, other=0.0).to(acc.dtype)
    if STORE_PRE_ACTIVATION:
        tl.store(z_ptrs, acc.to(z_ptrs.dtype.element_ty), mask=mask)
    return apply_activation(acc, ACTIVATION)


@triton.jit
def finish_tile(
    acc, bias_ptr, bias_stride, y_ptr, y_strides, z_ptr, residual_ptr, residual_strides,
    n, d, h, w, channels, mask_m, mask_n,
    HAS_BIAS: tl.constexpr, STORE_TRANSPOSED: tl.constexpr, ACTIVATION: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr, STORE_PRE_ACTIVATION: tl.constexpr,
):  # fmt: skip
    """Bias, then ``finish_output``, for a (pixels x channels) accumulator: row i is pixel
    (n[i], d[i], h[i], w[i]) of the (N, C, D, H, W) output, pre-activation and residual (strides
    y_strides, residual_strides; z has y's), column j channel channels[j] (the bias's element
    channels[j] * bias_stride); rows where mask_m, columns where mask_n. Stored as (channels x
    pixels) if STORE_TRANSPOSED (``layout.store_transposed``)."""
    if HAS_BIAS:
        acc += tl.load(bias_ptr + channels * bias_stride, mask=mask_n, other=0.0).to(acc.dtype)[None, :]
    sy_n, sy_c, sy_d, sy_h, sy_w = y_strides
    sr_n, sr_c, sr_d, sr_h, sr_w = residual_strides
    y_rows = n * sy_n + d * sy_d + h * sy_h + w * sy_w
    r_rows = n * sr_n + d * sr_d + h * sr_h + w * sr_w
    if STORE_TRANSPOSED:
        out = tl.trans(acc)
        y_offs = channels[:, None] * sy_c + y_rows[None, :]
        r_offs = channels[:, None] * sr_c + r_rows[None, :]
        mask = mask_n[:, None] & mask_m[None, :]
    else:
        out = acc
        y_offs = y_rows[:, None] + channels[None, :] * sy_c
        r_offs = r_rows[:, None] + channels[None, :] * sr_c
        mask = mask_m[:, None] & mask_n[None, :]
    finish_output(
        out, y_ptr + y_offs, z_ptr + y_offs, residual_ptr + r_offs, mask, ACTIVATION, HAS_RESIDUAL, STORE_PRE_ACTIVATION
    )


@triton.jit
def activation_grad_kernel(
    grad_ptr,
    saved_ptr,
    out_ptr,
    numel,
    ACTIVATION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    INDEX_64: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """out = grad * activation'(pre-activation), over flat dense tensors of one layout.

    Args:
        grad_ptr: d(loss)/d(output), numel elements, the same strides as saved_ptr.
        saved_ptr: the pre-activation for silu and gelu, the output for the others.
        out_ptr: d(loss)/d(pre-activation), the same strides.
    """
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(ACC_DTYPE)
    s = tl.load(saved_ptr + offs, mask=mask, other=0.0).to(ACC_DTYPE)
    d = g
    # torch's threshold_backward and hardtanh_backward: a NaN output passes the gradient through.
    if ACTIVATION == "relu":
        d = tl.where(s <= 0.0, 0.0, g)
    if ACTIVATION == "relu6":
        d = tl.where((s <= 0.0) | (s >= 6.0), 0.0, g)
    if ACTIVATION == "sigmoid":
        d = g * s * (1.0 - s)
    if ACTIVATION == "tanh":
        d = g * (1.0 - s * s)
    if ACTIVATION == "silu":
        sig = tl.sigmoid(s)
        d = g * sig * (1.0 + s * (1.0 - sig))
    if ACTIVATION == "gelu":
        d = g * (0.5 * (1.0 + tl.erf(s * _SQRT_HALF)) + s * tl.exp(-0.5 * s * s) * _INV_SQRT_2PI)
    tl.store(out_ptr + offs, d.to(out_ptr.dtype.element_ty), mask=mask)


def activation_grad(grad_output: torch.Tensor, saved: torch.Tensor, activation: str) -> torch.Tensor:
    """d(loss)/d(pre-activation), in ``saved``'s (dense) layout."""
    if grad_output.stride() != saved.stride():
        grad_output = torch.empty_like(saved).copy_(grad_output)
    out = torch.empty_like(saved)
    numel = saved.numel()
    if numel:
        block = 1024
        Launch(
            activation_grad_kernel,
            (triton.cdiv(numel, block),),
            {"grad_ptr": grad_output, "saved_ptr": saved, "out_ptr": out, "numel": numel},
            {
                "ACTIVATION": activation,
                "ACC_DTYPE": accumulator_dtype(saved.dtype),
                "INDEX_64": needs_int64(saved),
                "BLOCK": block,
            },
        )()
    return out
