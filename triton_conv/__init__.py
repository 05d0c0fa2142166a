"""Triton convolution kernels for PyTorch: drop-in ``conv1d/2d/3d``, ``conv_transpose1d/2d/3d``
and their ``nn`` modules.

Set ``TRITON_INTERPRET=1`` before importing to run the kernels on CPU tensors.
"""

from .functional import conv1d, conv2d, conv3d
from .functional_transpose import conv_transpose1d, conv_transpose2d, conv_transpose3d
from .fusion import FusionReport, fold_batchnorm, fuse_for_inference
from .modules import (
    Conv1d,
    Conv2d,
    Conv3d,
    ConversionReport,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    conversion_report,
    convert_model,
    revert_model,
)

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConversionReport",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "FusionReport",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "conversion_report",
    "convert_model",
    "fold_batchnorm",
    "fuse_for_inference",
    "revert_model",
]
__version__ = "0.1.0"
