"""Triton convolution kernels for PyTorch: drop-in ``conv1d/2d/3d``.

Set ``TRITON_INTERPRET=1`` before importing to run the kernels on CPU tensors.
"""

from .functional import conv1d, conv2d, conv3d

__all__ = ["conv1d", "conv2d", "conv3d"]
__version__ = "0.1.0"
