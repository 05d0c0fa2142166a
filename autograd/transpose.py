"""The transposed convolution as a custom op, its fake implementation and autograd formula.

``conv_transpose(x, w)`` is the input gradient of the convolution ``spec.transposed_geometry``
describes (input: the transposed output; output: x). So its forward is the input-gradient kernel
(split by stride phase, or the direct kernel for depthwise/few-channel groups) with the forward
kernels' epilogue, and its gradients are the convolution ops of ``ops.py`` with the roles of the
operands exchanged:
  d/dx  = conv(dy, w)                                   (a forward convolution)
  d/dw  = conv_weight_grad(grad_output=x, input=dy)     (x plays the convolution's output gradient)
  d/db  = sum of dy over batch and space,  d/d(residual) = dy
and, being bilinear like the convolution, its tangent is conv_transpose(dx, w) + conv_transpose(x, dw)
+ db + dr, through the activation's derivative. The formulas call the differentiable entry points,
so that every derivative is differentiable again (double backward, hessians); forward mode and
torch.func transforms go through ``differentiable_conv_transpose_forward`` (its batching rule is in
batching.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..kernels import dispatch
from ..spec import transposed_geometry
from .ops import (
    DifferentiableOp,
    _refuse_tangents,
    _use_kernels,
    aten_epilogue,
    differentiable_conv_forward,
    differentiable_conv_weight_grad,
    epilogue_jvp,
    fused_outputs,
    grad_of_pre_activation,
    kernel_epilogue,
    register_fused_fake,
    save_epilogue,
)


@torch.library.custom_op("triton_conv::conv_transpose_forward", mutates_args=())
def conv_transpose_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    output_padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    activation: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """activation(conv_transpose(input, weight) + bias + residual), in the input's (or weight's)
    memory format, and the pre-activation where the activation's derivative needs it (else empty).
    Arguments as ``F.conv_transpose*`` takes them, batched, one entry per spatial dimension."""
    _refuse_tangents("conv_transpose_forward", input, weight, bias, residual)
    spec = transposed_geometry(input.shape, weight.shape, stride, padding, output_padding, dilation, groups)
    out, pre_activation = fused_outputs(spec.in_shape, input, weight, activation)
    if _use_kernels(input):
        dispatch.input_grad(input, weight, spec, out, bias, kernel_epilogue(activation, residual, pre_activation))
        return out, pre_activation
    z = torch.ops.aten.convolution(input, weight, bias, stride, padding, dilation, True, output_padding, groups)
    return aten_epilogue(z, residual, activation, out, pre_activation)


register_fused_fake(conv_transpose_forward, transposed_geometry, lambda spec: spec.in_shape)


def conv_transpose(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: Sequence[int],
    padding: Sequence[int],
    output_padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    residual: torch.Tensor | None = None,
    activation: str = "none",
) -> torch.Tensor:
    """The transposed convolution's output alone (what callers of conv_transpose_forward want),
    differentiable in every autograd mode and under torch.func transforms."""
    return differentiable_conv_transpose_forward(
        input, weight, bias, residual, stride, padding, output_padding, dilation, groups, activation
    )[0]


def _setup(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    input, weight, _, _, *transposed, activation = inputs
    spec = transposed_geometry(input.shape, weight.shape, *transposed)
    convolution = (differentiable_conv_transpose_forward, spec.transposed_arguments())
    save_epilogue(ctx, input, weight, output, activation, convolution)
    # The convolution it transposes, as the ops of ops.py take it (trailing padding included).
    ctx.geometry = spec.op_arguments()


def _backward(ctx: Any, grad_output: torch.Tensor | None, grad_pre_activation: torch.Tensor | None) -> tuple[Any, ...]:
    input, weight, _ = ctx.saved_tensors
    grad_output = grad_of_pre_activation(ctx, grad_output, grad_pre_activation)
    if grad_output is None:
        return (None,) * 10
    needs_input, needs_weight, needs_bias, needs_residual = ctx.needs_input_grad[:4]
    # d/dx = conv(dy, w); d/dw = conv_weight_grad with x as the convolution's output gradient.
    grad_input = grad_weight = None
    if needs_input:
        grad_input = differentiable_conv_forward(grad_output, weight, None, None, *ctx.geometry, "none")[0]
    if needs_weight:
        grad_weight = differentiable_conv_weight_grad(input, grad_output, weight.shape, *ctx.geometry, False)[0]
    grad_bias = grad_output.sum([0, *range(2, grad_output.dim())]) if needs_bias else None
    return (grad_input, grad_weight, grad_bias, grad_output if needs_residual else None, *[None] * 6)


differentiable_conv_transpose_forward = DifferentiableOp(conv_transpose_forward, 4, _setup, _backward, epilogue_jvp)
