"""Custom ops over the Triton kernels, their fake implementations, the autograd formula, and
the aten fallback for CPU tensors outside the interpreter.

Op arguments are already validated by ``triton_conv.spec.conv_spec``: tensors are batched,
``stride``/``dilation`` have one entry per spatial dimension, and ``padding`` has the leading
pads followed by the trailing ones (they differ for 'same' with even kernels).

Three ops, each with an autograd formula in terms of the others, so that double backward works
(except through a fused activation, which raises a clear error):
  conv_forward(x, w, b, r)     -> y = act(conv(x, w) + b + r), and the pre-activation if saved
  conv_input_grad(dy, w)       -> dx   (linear in dy and in w)
  conv_weight_grad(dy, x)      -> dw, db (linear in dy and in x)
and a fourth for fused activations, activation_grad(dy, saved) -> d(pre-activation).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..kernels import INTERPRETER, dispatch
from ..kernels.epilogue import NEEDS_PRE_ACTIVATION, TORCH_ACTIVATIONS, Epilogue
from ..kernels.epilogue import activation_grad as activation_grad_kernel
from ..spec import ConvSpec, channels_last_format, op_geometry, output_memory_format

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


def _pad(input: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    """Zero-pad the input explicitly (negative trailing padding crops), so that aten sees no padding."""
    widths = spec.pad_widths()
    return F.pad(input, widths) if any(widths) else input


def _aten_forward(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec) -> torch.Tensor:
    return torch.ops.aten.convolution(
        _pad(input, spec),
        weight,
        bias,
        spec.spatial(spec.stride),
        [0] * spec.ndim,
        spec.spatial(spec.dilation),
        False,
        [0] * spec.ndim,
        spec.groups,
    )


def _aten_backward(
    grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, spec: ConvSpec, mask: list[bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    grad_input, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        grad_output,
        _pad(input, spec),
        weight,
        [spec.out_channels],
        spec.spatial(spec.stride),
        [0] * spec.ndim,
        spec.spatial(spec.dilation),
        False,
        [0] * spec.ndim,
        spec.groups,
        mask,
    )
    if grad_input is not None:
        # Back to the input's size: drop the padding, and zero-fill what negative padding cropped.
        grad_input = F.pad(grad_input, [-width for width in spec.pad_widths()])
    return grad_input, grad_weight, grad_bias


# ---------------------------------------------------------------------------------------------
# conv_forward


def _empty_pre_activation(
    out_shape: Sequence[int], activation: str, like: torch.Tensor, memory_format: torch.memory_format
) -> torch.Tensor:
    """The saved pre-activation: output-shaped where the backward needs it, else empty."""
    if activation in NEEDS_PRE_ACTIVATION:
        return _empty(out_shape, like, memory_format)
    return _empty([0], like, torch.contiguous_format)


def saved_for_activation(activation: str, out: torch.Tensor, pre_activation: torch.Tensor) -> torch.Tensor | None:
    """What the activation's derivative reads in the backward: the pre-activation, the output, or nothing."""
    if activation == "none":
        return None
    return pre_activation if activation in NEEDS_PRE_ACTIVATION else out


@torch.library.custom_op("triton_conv::conv_forward", mutates_args=())
def conv_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """activation(conv(input, weight) + bias + residual), in the input's (or weight's) memory
    format, and the pre-activation where the activation's derivative needs it (else empty)."""
    spec = op_geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    fmt = output_memory_format(input, weight)
    out = _empty(spec.out_shape, input, fmt)
    pre_activation = _empty_pre_activation(spec.out_shape, activation, input, fmt)
    if _use_kernels(input):
        saved = pre_activation if pre_activation.numel() else None
        dispatch.forward(input, weight, bias, spec, out, Epilogue(activation, residual, saved))
        return out, pre_activation
    z = _aten_forward(input, weight, bias, spec)
    if residual is not None:
        z = z + residual
    if pre_activation.numel():
        pre_activation.copy_(z)
    return out.copy_(TORCH_ACTIVATIONS[activation](z)), pre_activation


@conv_forward.register_fake
def _(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    spec = op_geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    fmt = output_memory_format(input, weight)
    return _empty(spec.out_shape, input, fmt), _empty_pre_activation(spec.out_shape, activation, input, fmt)


def conv(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    residual: torch.Tensor | None = None,
    activation: str = "none",
) -> torch.Tensor:
    """The convolution's output alone (what callers of conv_forward want)."""
    return conv_forward(input, weight, bias, residual, stride, padding, dilation, groups, activation)[0]


# ---------------------------------------------------------------------------------------------
# activation_grad


@torch.library.custom_op("triton_conv::activation_grad", mutates_args=())
def activation_grad(grad_output: torch.Tensor, saved: torch.Tensor, activation: str) -> torch.Tensor:
    """d(loss)/d(pre-activation) from d(loss)/d(output); ``saved`` is the pre-activation for
    silu and gelu and the output for the other activations."""
    if _use_kernels(saved):
        return activation_grad_kernel(grad_output, saved, activation)
    return _torch_activation_grad(grad_output, saved, activation)


def _torch_activation_grad(grad: torch.Tensor, saved: torch.Tensor, activation: str) -> torch.Tensor:
    """Closed forms (no autograd: op implementations run below the autograd key), in saved's layout."""
    derivative = {
        "relu": lambda: grad * (saved > 0),
        "relu6": lambda: grad * ((saved > 0) & (saved < 6)),
        "sigmoid": lambda: grad * saved * (1 - saved),
        "tanh": lambda: grad * (1 - saved * saved),
        "silu": lambda: torch.ops.aten.silu_backward(grad, saved),
        "gelu": lambda: torch.ops.aten.gelu_backward(grad, saved),
    }[activation]
    return torch.empty_like(saved).copy_(derivative())


@activation_grad.register_fake
def _(grad_output: torch.Tensor, saved: torch.Tensor, activation: str) -> torch.Tensor:
    return torch.empty_like(saved)


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
        return dispatch.input_grad(grad_output, weight, spec, grad_input)
    # The input gradient does not depend on the input's values: zeros stand in for it.
    placeholder = torch.zeros(input_shape, dtype=weight.dtype, device=weight.device)
    return grad_input.copy_(_aten_backward(grad_output, placeholder, weight, spec, [True, False, False])[0])


@conv_input_grad.register_fake
def _(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    input_shape: Sequence[int],
    channels_last: bool,
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> torch.Tensor:
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
    """d(loss)/d(weight) (in ``_weight_grad_format``) and d(loss)/d(bias) (empty unless ``bias_grad``)."""
    spec = op_geometry(input.shape, weight_shape, stride, padding, dilation, groups)
    grad_bias = _empty([spec.out_channels if bias_grad else 0], grad_output, torch.contiguous_format)
    fmt = _weight_grad_format(grad_output, input)
    if _use_kernels(grad_output):
        # The kernels write a contiguous gradient; a channels-last one is a copy of it (weight-sized).
        grad_weight = _empty(weight_shape, grad_output, torch.contiguous_format)
        dispatch.weight_grad(grad_output, input, spec, grad_weight, grad_bias if bias_grad else None)
        return grad_weight.contiguous(memory_format=fmt), grad_bias
    placeholder = torch.zeros(weight_shape, dtype=input.dtype, device=input.device)
    _, dw, db = _aten_backward(grad_output, input, placeholder, spec, [False, True, bias_grad])
    grad_weight = _empty(weight_shape, grad_output, fmt).copy_(dw)
    if bias_grad:
        grad_bias.copy_(db)
    return grad_weight, grad_bias


def _weight_grad_format(grad_output: torch.Tensor, input: torch.Tensor) -> torch.memory_format:
    """torch's rule, channels-last when the input or the weight is, with the output's gradient
    standing in for the weight (the op does not see it; the forward's output is channels-last then)."""
    return output_memory_format(input, grad_output)


@conv_weight_grad.register_fake
def _(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    bias_grad: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    out_channels = weight_shape[0] if bias_grad else 0
    return (
        _empty(weight_shape, grad_output, _weight_grad_format(grad_output, input)),
        _empty([out_channels], grad_output, torch.contiguous_format),
    )


# ---------------------------------------------------------------------------------------------
# Autograd formulas


def _save_geometry(
    ctx: Any, stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int], groups: int
) -> None:
    ctx.geometry = (list(stride), list(padding), list(dilation), groups)


def _forward_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    input, weight, bias, residual, stride, padding, dilation, groups, activation = inputs
    ctx.activation = activation
    ctx.save_for_backward(input, weight, saved_for_activation(activation, *output))
    ctx.channels_last = output_memory_format(input, weight) != torch.contiguous_format
    _save_geometry(ctx, stride, padding, dilation, groups)


def _forward_backward(ctx: Any, grad_output: torch.Tensor, grad_pre_activation: torch.Tensor) -> tuple[Any, ...]:
    # The pre-activation is an internal output: nothing upstream uses it, its gradient is ignored.
    input, weight, saved_for_activation = ctx.saved_tensors
    needs_input, needs_weight, needs_bias, needs_residual = ctx.needs_input_grad[:4]
    if ctx.activation != "none":
        grad_output = activation_grad(grad_output, saved_for_activation, ctx.activation)
    grad_input = grad_weight = grad_bias = None
    if needs_input:
        grad_input = conv_input_grad(grad_output, weight, input.shape, ctx.channels_last, *ctx.geometry)
    if needs_weight or needs_bias:
        grad_weight, grad_bias = conv_weight_grad(grad_output, input, weight.shape, *ctx.geometry, needs_bias)
    return (
        grad_input,
        grad_weight if needs_weight else None,
        grad_bias if needs_bias else None,
        grad_output if needs_residual else None,
        None,
        None,
        None,
        None,
        None,
    )


def _activation_grad_backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    raise RuntimeError(
        "triton_conv: double backward through a fused activation is not supported; "
        "call the convolution with activation=None and apply the activation in PyTorch"
    )


def _input_grad_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    grad_output, weight, _, _, stride, padding, dilation, groups = inputs
    ctx.save_for_backward(grad_output, weight)
    _save_geometry(ctx, stride, padding, dilation, groups)


def _input_grad_backward(ctx: Any, grad_grad_input: torch.Tensor) -> tuple[Any, ...]:
    # dx = A(w) dy is bilinear: d/d(dy) is the forward conv of the cotangent, d/dw a weight gradient.
    grad_output, weight = ctx.saved_tensors
    grad_grad_output = grad_weight = None
    if ctx.needs_input_grad[0]:
        grad_grad_output = conv(grad_grad_input, weight, None, *ctx.geometry)
    if ctx.needs_input_grad[1]:
        grad_weight = conv_weight_grad(grad_output, grad_grad_input, weight.shape, *ctx.geometry, False)[0]
    return grad_grad_output, grad_weight, None, None, None, None, None, None


def _weight_grad_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    grad_output, input, _, stride, padding, dilation, groups, bias_grad = inputs
    ctx.save_for_backward(grad_output, input)
    ctx.bias_grad = bias_grad
    _save_geometry(ctx, stride, padding, dilation, groups)


def _weight_grad_backward(ctx: Any, grad_grad_weight: torch.Tensor, grad_grad_bias: torch.Tensor) -> tuple[Any, ...]:
    # dw = B(x) dy and db = sum(dy): d/d(dy) is the forward conv of x with the cotangents as
    # filter and bias, d/dx an input gradient with the cotangent as filter.
    grad_output, input = ctx.saved_tensors
    grad_grad_output = grad_input = None
    if ctx.needs_input_grad[0]:
        bias = grad_grad_bias if ctx.bias_grad else None
        grad_grad_output = conv(input, grad_grad_weight, bias, *ctx.geometry)
    if ctx.needs_input_grad[1]:
        channels_last = output_memory_format(input, grad_grad_weight) != torch.contiguous_format
        grad_input = conv_input_grad(grad_output, grad_grad_weight, input.shape, channels_last, *ctx.geometry)
    return grad_grad_output, grad_input, None, None, None, None, None, None


conv_forward.register_autograd(_forward_backward, setup_context=_forward_setup)
conv_input_grad.register_autograd(_input_grad_backward, setup_context=_input_grad_setup)
conv_weight_grad.register_autograd(_weight_grad_backward, setup_context=_weight_grad_setup)
activation_grad.register_autograd(_activation_grad_backward, setup_context=lambda ctx, inputs, output: None)
