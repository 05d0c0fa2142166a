"""Custom ops over the Triton kernels, their fake implementations, the autograd formula, and
the aten fallback for CPU tensors outside the interpreter.

Op arguments are already validated by ``triton_conv.spec.conv_spec``: tensors are batched,
``stride``/``dilation`` have one entry per spatial dimension, and ``padding`` has the leading
pads followed by the trailing ones (they differ for 'same' with even kernels).

Three ops, each with reverse- and forward-mode formulas in terms of the others, so that every
derivative is itself differentiable (double backward, hessians):
  conv_forward(x, w, b, r)     -> y = act(conv(x, w) + b + r), and the pre-activation if saved
  conv_input_grad(dy, w)       -> dx   (linear in dy and in w)
  conv_weight_grad(dy, x)      -> dw, db (linear in dy and in x)
and a fourth for fused activations, activation_grad(dy, saved) -> d(pre-activation).
Their batching rules (vmap) are in batching.py. Callers wanting forward mode or torch.func
transforms call ``conv`` (or the ``differentiable_*`` entry points), not the raw ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F

from ..kernels import INTERPRETER, dispatch
from ..kernels.epilogue import NEEDS_PRE_ACTIVATION, TORCH_ACTIVATIONS, Epilogue
from ..kernels.epilogue import activation_grad as activation_grad_kernel
from ..runtime import warn_once
from ..spec import ConvSpec, channels_last_format, check_same_device_and_dtype, op_geometry, output_memory_format


def _use_kernels(t: torch.Tensor) -> bool:
    """CUDA tensors always run the kernels; CPU tensors only under Triton's interpreter."""
    if t.is_cuda or INTERPRETER:
        return True
    warn_once(
        "aten fallback",
        "triton_conv: CPU tensors without TRITON_INTERPRET=1 run aten's convolution, not the Triton kernels",
        stacklevel=3,
    )
    return False


def _refuse_tangents(op: str, *tensors: torch.Tensor | None) -> None:
    """Called with forward-mode dual tensors, a raw op would drop their tangents silently (its
    registered formulas are reverse mode only): refuse. The entry points run it without them."""
    if torch._C._is_fwd_grad_enabled() and any(
        t is not None and fwAD.unpack_dual(t).tangent is not None for t in tensors
    ):
        raise RuntimeError(
            f"triton_conv::{op} called directly has no forward-mode derivative: call the functional forms "
            f"(triton_conv.conv1d/2d/3d, conv_transpose1d/2d/3d) or triton_conv.autograd.differentiable_{op} instead"
        )


def _check_grad_output(
    op: str, grad_output: torch.Tensor, other_name: str, other: torch.Tensor, spec: ConvSpec
) -> None:
    """A gradient op called directly: grad_output of the convolution's output shape, with the
    device and dtype of ``other`` (the weight, or the input), as aten's convolution_backward
    requires; the kernels would read a mismatched one wrongly."""
    check_same_device_and_dtype(f"triton_conv::{op}", "grad_output", grad_output, other_name, other)
    if tuple(grad_output.shape) != tuple(spec.out_shape):
        raise RuntimeError(
            f"triton_conv::{op}(): grad_output of shape {tuple(grad_output.shape)} where the convolution's output "
            f"has shape {tuple(spec.out_shape)}"
        )


def _empty(shape: Sequence[int], like: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format)


def _pad(input: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    """Zero-pad the input explicitly (negative trailing padding crops), so that aten sees no padding."""
    widths = spec.pad_widths()
    return F.pad(input, widths) if any(widths) else input


def _aten_geometry(spec: ConvSpec) -> tuple[list[int], list[int], list[int], bool, list[int], int]:
    """aten's convolution arguments on the input padded by ``_pad``: stride, padding, dilation,
    transposed, output_padding and groups."""
    no_padding = [0] * spec.ndim
    return spec.spatial(spec.stride), no_padding, spec.spatial(spec.dilation), False, no_padding, spec.groups


def _aten_forward(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, spec: ConvSpec) -> torch.Tensor:
    return torch.ops.aten.convolution(_pad(input, spec), weight, bias, *_aten_geometry(spec))


def _aten_backward(
    grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, spec: ConvSpec, mask: list[bool]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    grad_input, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
        grad_output, _pad(input, spec), weight, [spec.out_channels], *_aten_geometry(spec), mask
    )
    if grad_input is not None:
        # Back to the input's size: drop the padding, and zero-fill what negative padding cropped.
        grad_input = F.pad(grad_input, [-width for width in spec.pad_widths()])
    return grad_input, grad_weight, grad_bias


# ---------------------------------------------------------------------------------------------
# conv_forward


def fused_outputs(
    shape: Sequence[int], input: torch.Tensor, weight: torch.Tensor, activation: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The outputs of a fused convolution op (``conv_forward``, ``conv_transpose_forward``) and of
    its fake, unfilled: the output, of ``shape`` in the input's (or weight's) memory format, and
    the saved pre-activation, output-shaped where the activation's derivative needs it, else empty."""
    fmt = output_memory_format(input, weight)
    if activation in NEEDS_PRE_ACTIVATION:
        return _empty(shape, input, fmt), _empty(shape, input, fmt)
    return _empty(shape, input, fmt), _empty([0], input, torch.contiguous_format)


def kernel_epilogue(activation: str, residual: torch.Tensor | None, pre_activation: torch.Tensor) -> Epilogue:
    """The kernels' epilogue of a fused convolution op, saving the pre-activation where
    ``fused_outputs`` allocated it."""
    return Epilogue(activation, residual, pre_activation if pre_activation.numel() else None)


def register_fused_fake(
    op: Any, geometry: Callable[..., ConvSpec], output_shape: Callable[[ConvSpec], Sequence[int]]
) -> None:
    """Register the fake implementation of a fused convolution op, whose arguments are the input,
    weight, bias and residual, then the geometry, then the activation: the ``fused_outputs`` of
    shape ``output_shape(geometry(input.shape, weight.shape, *geometry arguments))``."""

    def fake(
        input: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        residual: torch.Tensor | None,
        *constants: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        *geometry_arguments, activation = constants
        shape = output_shape(geometry(input.shape, weight.shape, *geometry_arguments))
        return fused_outputs(shape, input, weight, activation)

    op.register_fake(fake)


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
    _refuse_tangents("conv_forward", input, weight, bias, residual)
    spec = op_geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    out, pre_activation = fused_outputs(spec.out_shape, input, weight, activation)
    if _use_kernels(input):
        dispatch.forward(input, weight, bias, spec, out, kernel_epilogue(activation, residual, pre_activation))
        return out, pre_activation
    return aten_epilogue(_aten_forward(input, weight, bias, spec), residual, activation, out, pre_activation)


def aten_epilogue(
    z: torch.Tensor, residual: torch.Tensor | None, activation: str, out: torch.Tensor, pre_activation: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused epilogue after an aten convolution ``z`` (conv + bias): add ``residual``, save the
    pre-activation where it was allocated, and write the activation into ``out``."""
    if residual is not None:
        z = z + residual
    if pre_activation.numel():
        pre_activation.copy_(z)
    return out.copy_(TORCH_ACTIVATIONS[activation](z)), pre_activation


register_fused_fake(conv_forward, op_geometry, lambda spec: spec.out_shape)


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
    """The convolution's output alone (what callers of conv_forward want), differentiable in every
    autograd mode and under torch.func transforms (see the entry points at the end of this file)."""
    return differentiable_conv_forward(input, weight, bias, residual, stride, padding, dilation, groups, activation)[0]


# ---------------------------------------------------------------------------------------------
# activation_grad


@torch.library.custom_op("triton_conv::activation_grad", mutates_args=())
def activation_grad(grad_output: torch.Tensor, saved: torch.Tensor, activation: str) -> torch.Tensor:
    """d(loss)/d(pre-activation) from d(loss)/d(output); ``saved`` is the pre-activation for
    silu and gelu and the output for the other activations."""
    _refuse_tangents("activation_grad", grad_output, saved)
    if _use_kernels(saved):
        return activation_grad_kernel(grad_output, saved, activation)
    return _torch_activation_grad(grad_output, saved, activation)


def _torch_activation_grad(grad: torch.Tensor, saved: torch.Tensor, activation: str) -> torch.Tensor:
    """aten's own backward formulas (no autograd: op implementations run below the autograd
    key), in saved's layout. relu6's reads the output, which is <= 0 or >= 6 exactly where the
    pre-activation is."""
    aten = torch.ops.aten
    derivative = {
        "relu": lambda: aten.threshold_backward(grad, saved, 0),
        "relu6": lambda: aten.hardtanh_backward(grad, saved, 0, 6),
        "sigmoid": lambda: aten.sigmoid_backward(grad, saved),
        "tanh": lambda: aten.tanh_backward(grad, saved),
        "silu": lambda: aten.silu_backward(grad, saved),
        "gelu": lambda: aten.gelu_backward(grad, saved),
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
    _refuse_tangents("conv_input_grad", grad_output, weight)
    spec = op_geometry(input_shape, weight.shape, stride, padding, dilation, groups)
    _check_grad_output("conv_input_grad", grad_output, "weight", weight, spec)
    grad_input = _empty(input_shape, grad_output, _input_grad_format(input_shape, channels_last))
    if _use_kernels(grad_output):
        return dispatch.input_grad(grad_output, weight, spec, grad_input)
    # The input gradient does not depend on the input's values: zeros stand in for it.
    placeholder = torch.zeros(input_shape, dtype=weight.dtype, device=weight.device)
    return grad_input.copy_(_aten_backward(grad_output, placeholder, weight, spec, [True, False, False])[0])


@conv_input_grad.register_fake
def _(
    grad_output: torch.Tensor, weight: torch.Tensor, input_shape: Sequence[int], channels_last: bool, *geometry: Any
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
    _refuse_tangents("conv_weight_grad", grad_output, input)
    spec = op_geometry(input.shape, weight_shape, stride, padding, dilation, groups)
    _check_grad_output("conv_weight_grad", grad_output, "input", input, spec)
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
    grad_output: torch.Tensor, input: torch.Tensor, weight_shape: Sequence[int], *constants: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    *_, bias_grad = constants
    out_channels = weight_shape[0] if bias_grad else 0
    return (
        _empty(weight_shape, grad_output, _weight_grad_format(grad_output, input)),
        _empty([out_channels], grad_output, torch.contiguous_format),
    )


# ---------------------------------------------------------------------------------------------
# Derivatives: reverse mode (backward), forward mode (jvp) and how they are attached to the ops.
#
# The formulas call the ops through the differentiable entry points at the end of this file
# (differentiable_conv_forward, ...), so that the derivatives are themselves differentiable in every
# mode: double backward, forward-over-reverse (hessian), jacfwd of a jacrev.


def _accumulate(total: torch.Tensor | None, term: torch.Tensor) -> torch.Tensor:
    return term if total is None else total + term


def _save(ctx: Any, *tensors: torch.Tensor | None) -> None:
    """Keep ``tensors`` for the backward and for the jvp."""
    ctx.save_for_backward(*tensors)
    ctx.save_for_forward(*tensors)


def as_lists(*geometry: Sequence[int] | int) -> tuple[list[int] | int, ...]:
    """An op's geometry arguments kept for its derivatives, sequences (a torch.Size, a tuple) as lists."""
    return tuple(value if isinstance(value, int) else list(value) for value in geometry)


def save_epilogue(
    ctx: Any,
    input: torch.Tensor,
    weight: torch.Tensor,
    output: Any,
    activation: str,
    convolution: tuple[DifferentiableOp, Sequence[Any]],
) -> None:
    """What the backward and the jvp of a fused convolution (``output`` = its output and
    pre-activation) read: the operands, the activation and what its derivative needs, and
    ``convolution`` = (op, geometry) computing its plain convolution as
    ``op(x, w, b, r, *geometry, "none")`` (a forward or a transposed one), for ``epilogue_jvp``."""
    out, pre_activation = output
    if activation not in NEEDS_PRE_ACTIVATION:
        ctx.mark_non_differentiable(pre_activation)  # the empty placeholder
    # Unused outputs get no gradient (rather than zeros): the pre-activation's usually has none.
    ctx.set_materialize_grads(False)
    ctx.activation = activation
    ctx.out_shape = tuple(out.shape)
    ctx.convolution = convolution
    _save(ctx, input, weight, saved_for_activation(activation, out, pre_activation))


def grad_of_pre_activation(
    ctx: Any, grad_output: torch.Tensor | None, grad_pre_activation: torch.Tensor | None
) -> torch.Tensor | None:
    """d(loss)/d(pre-activation) of a fused convolution set up by ``save_epilogue``: through the
    activation, plus what the saved pre-activation got (a second derivative through silu or gelu
    differentiates the saved pre-activation). None where neither output has a gradient."""
    saved = ctx.saved_tensors[2]
    if grad_output is not None and ctx.activation != "none":
        grad_output = differentiable_activation_grad(grad_output, saved, ctx.activation)
    if grad_pre_activation is not None:
        grad_output = _accumulate(grad_output, grad_pre_activation)
    return grad_output


def epilogue_jvp(
    ctx: Any,
    d_input: torch.Tensor | None,
    d_weight: torch.Tensor | None,
    d_bias: torch.Tensor | None,
    d_residual: torch.Tensor | None,
    *_: None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Tangents of (output, pre-activation) of a fused convolution set up by ``save_epilogue``.

    conv(x, w) + b + r is bilinear in (x, w) and linear in b and r: its tangent is
    conv(dx, w) + conv(x, dw) + db + dr, with db and dr added by the first convolution's epilogue;
    the activation's derivative goes on top."""
    op, geometry = ctx.convolution
    input, weight, saved_for_activation = ctx.saved_tensors
    d_pre = d_residual
    for x, w, tangent in ((d_input, weight, d_input), (input, d_weight, d_weight)):
        if tangent is not None:
            d_pre = op(x, w, d_bias, d_pre, *geometry, "none")[0]
            d_bias = None
    if d_bias is not None:  # neither the input nor the weight has a tangent
        broadcast = d_bias.reshape(1, -1, *[1] * (len(ctx.out_shape) - 2)).expand(ctx.out_shape)
        d_pre = broadcast if d_pre is None else d_pre + broadcast
    if ctx.activation == "none":
        return d_pre, None
    d_out = differentiable_activation_grad(d_pre, saved_for_activation, ctx.activation)
    return d_out, d_pre if ctx.activation in NEEDS_PRE_ACTIVATION else None


def _forward_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    input, weight, _, _, *geometry, activation = inputs
    ctx.geometry = as_lists(*geometry)
    save_epilogue(ctx, input, weight, output, activation, (differentiable_conv_forward, ctx.geometry))
    ctx.channels_last = output_memory_format(input, weight) != torch.contiguous_format


def _forward_backward(
    ctx: Any, grad_output: torch.Tensor | None, grad_pre_activation: torch.Tensor | None
) -> tuple[Any, ...]:
    input, weight, _ = ctx.saved_tensors
    needs_input, needs_weight, needs_bias, needs_residual = ctx.needs_input_grad[:4]
    grad_output = grad_of_pre_activation(ctx, grad_output, grad_pre_activation)
    if grad_output is None:
        return (None,) * 9
    grad_input = grad_weight = grad_bias = None
    if needs_input:
        grad_input = differentiable_conv_input_grad(grad_output, weight, input.shape, ctx.channels_last, *ctx.geometry)
    if needs_weight or needs_bias:
        grad_weight, grad_bias = differentiable_conv_weight_grad(
            grad_output, input, weight.shape, *ctx.geometry, needs_bias
        )
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


def _activation_curvature(saved: torch.Tensor, activation: str) -> torch.Tensor | None:
    """d/d(saved) of activation_grad(1, saved): the activation's second derivative, expressed in
    what ``saved`` holds (the output, or the pre-activation for silu and gelu). None where it is
    zero (relu, relu6: piecewise linear, as torch's own double backward has it)."""
    if activation == "sigmoid":
        return 1 - 2 * saved
    if activation == "tanh":
        return -2 * saved
    if activation == "silu":
        sig = torch.sigmoid(saved)
        return sig * (1 - sig) * (2 + saved * (1 - 2 * sig))
    if activation == "gelu":
        return torch.exp(-0.5 * saved * saved) * (2 - saved * saved) / math.sqrt(2 * math.pi)
    return None


def _activation_grad_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    grad_output, saved, activation = inputs
    ctx.activation = activation
    _save(ctx, grad_output, saved)


def _activation_grad_backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    # activation_grad(g, s) = g * h(s): linear in g, and h'(s) is the curvature.
    grad_output, saved = ctx.saved_tensors
    grad_grad_output = grad_saved = None
    if ctx.needs_input_grad[0]:
        grad_grad_output = differentiable_activation_grad(grad, saved, ctx.activation)
    curvature = _activation_curvature(saved, ctx.activation)
    if ctx.needs_input_grad[1] and curvature is not None:
        grad_saved = grad * grad_output * curvature
    return grad_grad_output, grad_saved, None


def _activation_grad_jvp(
    ctx: Any, d_grad_output: torch.Tensor | None, d_saved: torch.Tensor | None, *_: None
) -> torch.Tensor:
    grad_output, saved = ctx.saved_tensors
    tangent = None
    if d_grad_output is not None:
        tangent = differentiable_activation_grad(d_grad_output, saved, ctx.activation)
    curvature = _activation_curvature(saved, ctx.activation)
    if d_saved is not None and curvature is not None:
        tangent = _accumulate(tangent, grad_output * curvature * d_saved)
    return tangent if tangent is not None else torch.zeros_like(saved)


def _input_grad_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    grad_output, weight, input_shape, channels_last, *geometry = inputs
    _save(ctx, grad_output, weight)
    ctx.layout = (list(input_shape), channels_last)
    ctx.geometry = as_lists(*geometry)


def _input_grad_backward(ctx: Any, grad_grad_input: torch.Tensor) -> tuple[Any, ...]:
    # dx = A(w) dy is bilinear: d/d(dy) is the forward conv of the cotangent, d/dw a weight gradient.
    grad_output, weight = ctx.saved_tensors
    grad_grad_output = grad_weight = None
    if ctx.needs_input_grad[0]:
        grad_grad_output = differentiable_conv_forward(grad_grad_input, weight, None, None, *ctx.geometry, "none")[0]
    if ctx.needs_input_grad[1]:
        grad_weight = differentiable_conv_weight_grad(grad_output, grad_grad_input, weight.shape, *ctx.geometry, False)[
            0
        ]
    return grad_grad_output, grad_weight, None, None, None, None, None, None


def _input_grad_jvp(
    ctx: Any, d_grad_output: torch.Tensor | None, d_weight: torch.Tensor | None, *_: None
) -> torch.Tensor:
    # d(A(w) dy) = A(w) d(dy) + A(dw) dy.
    grad_output, weight = ctx.saved_tensors
    tangent = None
    for dy, w, d in ((d_grad_output, weight, d_grad_output), (grad_output, d_weight, d_weight)):
        if d is not None:
            tangent = _accumulate(tangent, differentiable_conv_input_grad(dy, w, *ctx.layout, *ctx.geometry))
    return tangent


def _weight_grad_setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    grad_output, input, weight_shape, *geometry, bias_grad = inputs
    _save(ctx, grad_output, input)
    ctx.weight_shape = list(weight_shape)
    ctx.bias_grad = bias_grad
    ctx.geometry = as_lists(*geometry)


def _weight_grad_backward(ctx: Any, grad_grad_weight: torch.Tensor, grad_grad_bias: torch.Tensor) -> tuple[Any, ...]:
    # dw = B(x) dy and db = sum(dy): d/d(dy) is the forward conv of x with the cotangents as
    # filter and bias, d/dx an input gradient with the cotangent as filter.
    grad_output, input = ctx.saved_tensors
    grad_grad_output = grad_input = None
    if ctx.needs_input_grad[0]:
        bias = grad_grad_bias if ctx.bias_grad else None
        grad_grad_output = differentiable_conv_forward(input, grad_grad_weight, bias, None, *ctx.geometry, "none")[0]
    if ctx.needs_input_grad[1]:
        channels_last = output_memory_format(input, grad_grad_weight) != torch.contiguous_format
        grad_input = differentiable_conv_input_grad(
            grad_output, grad_grad_weight, input.shape, channels_last, *ctx.geometry
        )
    return grad_grad_output, grad_input, None, None, None, None, None, None


def _weight_grad_jvp(
    ctx: Any, d_grad_output: torch.Tensor | None, d_input: torch.Tensor | None, *_: None
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    # dw = B(x) dy is bilinear: d(dw) = B(x) d(dy) + B(dx) dy; db = sum(dy) depends on dy alone.
    grad_output, input = ctx.saved_tensors
    d_weight = d_bias = None
    if d_grad_output is not None:
        d_weight, d_bias = differentiable_conv_weight_grad(
            d_grad_output, input, ctx.weight_shape, *ctx.geometry, ctx.bias_grad
        )
    if d_input is not None:
        term = differentiable_conv_weight_grad(grad_output, d_input, ctx.weight_shape, *ctx.geometry, False)[0]
        d_weight = _accumulate(d_weight, term)
    return d_weight, d_bias


# ---------------------------------------------------------------------------------------------
# Differentiable entry points
#
# Reverse mode needs only the ops' registered autograd formulas, which torch.compile and
# torch.export trace. Forward mode and torch.func transforms (grad, vjp, jacrev, jvp, jacfwd,
# hessian, vmap) need an autograd.Function with a jvp and setup_context, which Dynamo refuses
# (a custom jvp is unsupported). So eager calls go through the Function, whose forward runs the
# op (vmap: the op's batching rule, in batching.py), and compiled code calls the op itself.


class _Constants:
    """An op's non-tensor arguments as one opaque value: torch.func flattens an autograd.Function's
    list arguments into pytree leaves but passes one tangent per argument, which do not match."""

    __slots__ = ("values",)

    def __init__(self, values: tuple[Any, ...]) -> None:
        self.values = values


class DifferentiableOp:
    """Calls ``op`` through an autograd.Function carrying its backward and jvp when running
    eagerly, and the op directly while compiling; registers the backward on the op too.

    ``tensors`` is the number of leading tensor arguments (the rest are constants); the formulas
    take the op's own arguments, as ``register_autograd`` passes them.
    """

    def __init__(self, op: Any, tensors: int, setup_context: Any, backward: Any, jvp: Any) -> None:
        self.op = op
        self.tensors = tensors
        op.register_autograd(backward, setup_context=setup_context)

        def forward(*args: Any) -> Any:
            return op(*args[:tensors], *args[tensors].values)

        def function_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            setup_context(ctx, (*inputs[:tensors], *inputs[tensors].values), output)

        def function_backward(ctx: Any, *grads: Any) -> tuple[Any, ...]:
            return (*backward(ctx, *grads)[:tensors], None)

        def function_jvp(ctx: Any, *tangents: Any) -> Any:
            return jvp(ctx, *tangents[:tensors])

        self.function = type(
            f"{op._name}_function",
            (torch.autograd.Function,),
            dict(
                forward=staticmethod(forward),
                setup_context=staticmethod(function_setup_context),
                backward=staticmethod(function_backward),
                jvp=staticmethod(function_jvp),
                generate_vmap_rule=True,
            ),
        )

    def __call__(self, *args: Any) -> Any:
        if torch.compiler.is_compiling():
            return self.op(*args)
        return self.function.apply(*args[: self.tensors], _Constants(args[self.tensors :]))


differentiable_conv_forward = DifferentiableOp(conv_forward, 4, _forward_setup, _forward_backward, epilogue_jvp)
differentiable_conv_input_grad = DifferentiableOp(
    conv_input_grad, 2, _input_grad_setup, _input_grad_backward, _input_grad_jvp
)
differentiable_conv_weight_grad = DifferentiableOp(
    conv_weight_grad, 2, _weight_grad_setup, _weight_grad_backward, _weight_grad_jvp
)
differentiable_activation_grad = DifferentiableOp(
    activation_grad, 2, _activation_grad_setup, _activation_grad_backward, _activation_grad_jvp
)
