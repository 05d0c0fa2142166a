"""Triton convolution kernels for PyTorch: drop-in ``conv1d/2d/3d`` and ``nn.Conv1d/2d/3d``.

Set ``TRITON_INTERPRET=1`` before importing to run the kernels on CPU tensors.
"""

from .functional import conv1d, conv2d, conv3d
from .fusion import FusionReport, fold_batchnorm, fuse_for_inference
from .modules import Conv1d, Conv2d, Conv3d, ConversionReport, conversion_report, convert_model, revert_model

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConversionReport",
    "FusionReport",
    "conv1d",
    "conv2d",
    "conv3d",
    "conversion_report",
    "convert_model",
    "fold_batchnorm",
    "fuse_for_inference",
    "revert_model",
]
__version__ = "0.1.0"
