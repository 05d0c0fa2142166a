"""The convolution kernels as ``torch.library`` custom ops (namespace ``triton_conv``).

Installed as ``triton_conv.autograd``. Importing it registers the ops, their fake (meta)
implementations and the autograd formulas.
"""

from .ops import activation_grad, conv, conv_forward, conv_input_grad, conv_weight_grad
from .transpose import conv_transpose, conv_transpose_forward

__all__ = [
    "activation_grad",
    "conv",
    "conv_forward",
    "conv_input_grad",
    "conv_transpose",
    "conv_transpose_forward",
    "conv_weight_grad",
]
