"""Custom ops over the Triton kernels, their fake implementations, the autograd formula, and
the aten fallback for CPU tensors outside the interpreter.

Op arguments are already validated by ``triton_conv.spec.conv_spec``: tensors are batched,
``stride``/``dilation`` have one entry per spatial dimension, and ``padding`` has the leading
pads followed by the trailing ones (they differ for 'same' with even kernels).

Three ops, each with an autograd formula in terms of the others, so that double backward works:
  conv_forward(x, w, b)        -> y
  conv_input_grad(dy, w)       -> dx   (linear in dy and in w)
  conv_weight_grad(dy, x)      -> dw, db (linear in dy and in x)
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..kernels import INTERPRETER, implicit_gemm_forward, implicit_gemm_input_grad, implicit_gemm_weight_grad
from ..spec import ConvSpec, channels_last_format, explicit_pad_widths, op_geometry, output_memory_format

_warned_fallback = False


def _use_kernels(t: torch.Tensor) -> bool:
    """CUDA tensors always run the kernels; CPU tensors only under Triton's interpreter."""
    global _warned_fallback
    if t.is_cuda or INTERPRETER:
        return True
    if not _warned_fallback:
        warnings.warn(
            "triton_conv: CPU tensors without TRITON_INTERPRET=1 run aten's convolution, not the Triton kernels",
            stacklevel=3,
        )
        _warned_fallback = True
    return False


def _empty(shape: Sequence[int], like: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format)


def _spatial(spec: ConvSpec, values: tuple[int, int, int]) -> list[int]:
    return list(values[3 - spec.ndim :])


def _pad_trailing(input: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    """Zero-pad the extra trailing amount of asymmetric padding, so that aten sees symmetric pads."""
    widths: list[int] = []
    for lo, hi in zip(reversed(spec.pad_lo), reversed(spec.pad_hi)):
        widths += [0, hi - lo]
    return F.pad(input, widths[: 2 * spec.ndim]) if any(widths) else input


def _aten_forward(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec) -> torch.Tensor:
    return torch.ops.aten.convolution(
        _pad_trailing(input, spec), weight, bias, _spatial(spec, spec.stride), _spatial(spec, spec.pad_lo),
        _spatial(spec, spec.dilation), False, [0] * spec.ndim, spec.groups,
    )


def _aten_backward(
    grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, spec: ConvSpec, mask: list[bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    grad_input, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        grad_output, _pad_trailing(input, spec), weight, [spec.out_channels], _spatial(spec, spec.stride),
        _spatial(spec, spec.pad_lo), _spatial(spec, spec.dilation), False, [0] * spec.ndim, spec.groups, mask,
    )
    if grad_input is not None:
        for dim, size in enumerate(input.shape[2:], start=2):
            grad_input = grad_input.narrow(dim, 0, size)
    return grad_input, grad_weight, grad_bias


# ---------------------------------------------------------------------------------------------
# conv_forward


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
    spec = op_geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    out = _empty(spec.out_shape, input, output_memory_format(input, weight))
    if _use_kernels(input):
        return implicit_gemm_forward(input, weight, bias, spec, out)
    return out.copy_(_aten_forward(input, weight, bias, spec))


@conv_forward.register_fake
def _(input, weight, bias, stride, padding, dilation, groups):
    spec = op_geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    return _empty(spec.out_shape, input, output_memory_format(input, weight))


# ---------------------------------------------------------------------------------------------
# conv_input_grad


def _input_grad_format(input_shape: Sequence[int], channels_last: bool) -> torch.memory_format:
    return channels_last_format(len(input_shape)) if channels_last else torch.contiguous_format


@torch.library.custom_op("triton_conv::conv_input_grad", mutates_args=())
def conv_input_grad(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    input_shape: Sequence[int],
    channels_last: bool,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
    """d(loss)/d(input) of conv_forward, channels-last if ``channels_last``."""
    spec = op_geometry(input_shape, weight.shape, stride, padding, dilation, groups)
    grad_input = _empty(input_shape, grad_output, _input_grad_format(input_shape, channels_last))
    if _use_kernels(grad_output):
        return implicit_gemm_input_grad(grad_output, weight, spec, grad_input)
    # The input gradient does not depend on the input's values: zeros stand in for it.
    placeholder = torch.zeros(input_shape, dtype=weight.dtype, device=weight.device)
    return grad_input.copy_(_aten_backward(grad_output, placeholder, weight, spec, [True, False, False])[0])


@conv_input_grad.register_fake
def _(grad_output, weight, input_shape, channels_last, stride, padding, dilation, groups):
    return _empty(input_shape, grad_output, _input_grad_format(input_shape, channels_last))


# ---------------------------------------------------------------------------------------------
# conv_weight_grad


@torch.library.custom_op("triton_conv::conv_weight_grad", mutates_args=())
def conv_weight_grad(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    bias_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """d(loss)/d(weight) (contiguous) and d(loss)/d(bias) (empty unless ``bias_grad``)."""
    spec = op_geometry(input.shape, weight_shape, stride, padding, dilation, groups)
    grad_weight = _empty(weight_shape, grad_output, torch.contiguous_format)
    grad_bias = _empty([spec.out_channels if bias_grad else 0], grad_output, torch.contiguous_format)
    if _use_kernels(grad_output):
        implicit_gemm_weight_grad(grad_output, input, spec, grad_weight, grad_bias if bias_grad else None)
        return grad_weight, grad_bias
    placeholder = torch.zeros(weight_shape, dtype=input.dtype, device=input.device)
    _, dw, db = _aten_backward(grad_output, input, placeholder, spec, [False, True, bias_grad])
    grad_weight.copy_(dw)
    if bias_grad:
        grad_bias.copy_(db)
    return grad_weight, grad_bias


@conv_weight_grad.register_fake
def _(grad_output, input, weight_shape, stride, padding, dilation, groups, bias_grad):
    out_channels = weight_shape[0] if bias_grad else 0
    return (
        _empty(weight_shape, grad_output, torch.contiguous_format),
        _empty([out_channels], grad_output, torch.contiguous_format),
    )


# ---------------------------------------------------------------------------------------------
# Autograd formulas


def _save_geometry(ctx, stride, padding, dilation, groups) -> None:
    ctx.geometry = (list(stride), list(padding), list(dilation), groups)


def _forward_setup(ctx, inputs, output) -> None:
    input, weight, bias, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(input, weight)
    ctx.channels_last = output_memory_format(input, weight) != torch.contiguous_format
    _save_geometry(ctx, stride, padding, dilation, groups)


def _forward_backward(ctx, grad_output):
    input, weight = ctx.saved_tensors
    needs_input, needs_weight, needs_bias = ctx.needs_input_grad[:3]
    grad_input = grad_weight = grad_bias = None
    if needs_input:
        grad_input = conv_input_grad(grad_output, weight, input.shape, ctx.channels_last, *ctx.geometry)
    if needs_weight or needs_bias:
        grad_weight, grad_bias = conv_weight_grad(grad_output, input, weight.shape, *ctx.geometry, needs_bias)
    return grad_input, grad_weight if needs_weight else None, grad_bias if needs_bias else None, None, None, None, None


def _input_grad_setup(ctx, inputs, output) -> None:
    grad_output, weight, _, _, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(grad_output, weight)
    _save_geometry(ctx, stride, padding, dilation, groups)


def _input_grad_backward(ctx, grad_grad_input):
    # dx = A(w) dy is bilinear: d/d(dy) is the forward conv of the cotangent, d/dw a weight gradient.
    grad_output, weight = ctx.saved_tensors
    grad_grad_output = grad_weight = None
    if ctx.needs_input_grad[0]:
        grad_grad_output = conv_forward(grad_grad_input, weight, None, *ctx.geometry)
    if ctx.needs_input_grad[1]:
        grad_weight = conv_weight_grad(grad_output, grad_grad_input, weight.shape, *ctx.geometry, False)[0]
    return grad_grad_output, grad_weight, None, None, None, None, None, None


def _weight_grad_setup(ctx, inputs, output) -> None:
    grad_output, input, _, stride, padding, dilation, groups, bias_grad = inputs
    ctx.save_for_backward(grad_output, input)
    ctx.bias_grad = bias_grad
    _save_geometry(ctx, stride, padding, dilation, groups)


def _weight_grad_backward(ctx, grad_grad_weight, grad_grad_bias):
    # dw = B(x) dy and db = sum(dy): d/d(dy) is the forward conv of x with the cotangents as
    # filter and bias, d/dx an input gradient with the cotangent as filter.
    grad_output, input = ctx.saved_tensors
    grad_grad_output = grad_input = None
    if ctx.needs_input_grad[0]:
        bias = grad_grad_bias if ctx.bias_grad else None
        grad_grad_output = conv_forward(input, grad_grad_weight, bias, *ctx.geometry)
    if ctx.needs_input_grad[1]:
        channels_last = output_memory_format(input, grad_grad_weight) != torch.contiguous_format
        grad_input = conv_input_grad(grad_output, grad_grad_weight, input.shape, channels_last, *ctx.geometry)
    return grad_grad_output, grad_input, None, None, None, None, None, None


conv_forward.register_autograd(_forward_backward, setup_context=_forward_setup)
conv_input_grad.register_autograd(_input_grad_backward, setup_context=_input_grad_setup)
conv_weight_grad.register_autograd(_weight_grad_backward, setup_context=_weight_grad_setup)
