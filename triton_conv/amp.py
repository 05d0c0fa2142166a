"""Automatic mixed precision: the convolutions under ``torch.autocast``, with torch's policy.

torch's autocast lists every convolution among the ops that run in the lower precision, on
CUDA and on CPU alike (bfloat16 or float16, whichever the autocast region asks for): floating
tensor arguments on the autocast device are cast to ``torch.get_autocast_dtype(device_type)``,
except float64 ones, which are left alone. The casts are ordinary differentiable ops, so
gradients flow back to float32 parameters in float32.

``autocast_conv_arguments`` applies that policy; every convolution entry point (the functional
forms and, through them, the modules) calls it before validating its arguments, as torch casts
before checking that input and weight agree. The fused ``residual`` is cast with the others:
the fused result is the convolution's dtype.
"""

from __future__ import annotations

import torch


def _cast(t: object, device_type: str, dtype: torch.dtype) -> object:
    """Autocast casts the floating tensors on its own device type, float64 excepted."""
    eligible = (
        isinstance(t, torch.Tensor)
        and t.device.type == device_type
        and t.is_floating_point()
        and t.dtype != torch.float64
    )
    return t.to(dtype) if eligible else t


def autocast_conv_arguments(input: object, *tensors: object) -> tuple:
    """``(input, *tensors)`` as torch's autocast casts a convolution's arguments (see the module
    docstring): unchanged outside an autocast region for ``input``'s device type. Arguments of
    the wrong type pass through untouched, for the validation to reject."""
    if not isinstance(input, torch.Tensor):
        return (input, *tensors)
    device_type = input.device.type
    if not torch.amp.is_autocast_available(device_type) or not torch.is_autocast_enabled(device_type):
        return (input, *tensors)
    dtype = torch.get_autocast_dtype(device_type)
    return tuple(_cast(t, device_type, dtype) for t in (input, *tensors))
