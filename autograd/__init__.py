"""The convolution kernels as ``torch.library`` custom ops (namespace ``triton_conv``).

Installed as ``triton_conv.autograd``. Importing it registers the ops, their fake (meta)
implementations, their derivatives (reverse and forward mode) and their batching rules.
"""

from . import batching
from .ops import (
    DifferentiableOp,
    activation_grad,
    conv,
    conv_forward,
    conv_input_grad,
    conv_weight_grad,
    differentiable_activation_grad,
    differentiable_conv_forward,
    differentiable_conv_input_grad,
    differentiable_conv_weight_grad,
)
from .transpose import conv_transpose, conv_transpose_forward, differentiable_conv_transpose_forward

__all__ = [
    "DifferentiableOp",
    "activation_grad",
    "batching",
    "conv",
    "conv_forward",
    "conv_input_grad",
    "conv_transpose",
    "conv_transpose_forward",
    "conv_weight_grad",
    "differentiable_activation_grad",
    "differentiable_conv_forward",
    "differentiable_conv_input_grad",
    "differentiable_conv_transpose_forward",
    "differentiable_conv_weight_grad",
]
