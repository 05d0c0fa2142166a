"""Convolution geometry: argument normalisation, validation and shapes, in one place.

Everything else (functional API, custom ops, fake implementations, kernels, tuning) asks this
module for output sizes, padding splits and the N-d -> 3-d view instead of recomputing them.
Validation follows ``torch.nn.functional.conv*``: the same inputs are rejected, with the same
exception type (``RuntimeError``) and a message that names the argument and the shapes.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch._prims_common import suggest_memory_format

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
# Kernels compute in these dtypes; anything else falls back or is rejected in functional.py.
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# 64-bit offsets from this many elements on; the margin covers the masked lanes of the last
# tile, whose offsets run past the tensor's end.
INT32_LIMIT = 2**31 - 2**20
INT64_MAX = 2**63 - 1

Triple = tuple[int, int, int]
IntOrSeq = int | Sequence[int]


@dataclass(frozen=True)
class ConvSpec:
    """The geometry of one convolution, with every spatial field padded to (D, H, W).

    A conv1d has ``D == H == 1`` and a conv2d ``D == 1``, with unit kernel, stride and dilation
    and zero padding in those dimensions, so kernels are written once over three dimensions.
    ``pad_lo``/``pad_hi`` are the padding before/after each dimension; they differ only for
    ``padding='same'`` with an even effective kernel, where torch pads one more at the end.
    """

    ndim: int
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    input_size: Triple
    kernel_size: Triple
    stride: Triple
    pad_lo: Triple
    pad_hi: Triple
    dilation: Triple
    output_size: Triple

    @property
    def in_channels_per_group(self) -> int:
        return self.in_channels // self.groups

    @property
    def out_channels_per_group(self) -> int:
        return self.out_channels // self.groups

    @property
    def taps(self) -> int:
        t, r, s = self.kernel_size
        return t * r * s

    @property
    def output_pixels(self) -> int:
        d, h, w = self.output_size
        return self.batch * d * h * w

    @property
    def input_pixels(self) -> int:
        d, h, w = self.input_size
        return self.batch * d * h * w

    @property
    def pixels_per_phase(self) -> Triple:
        """Input pixels per stride phase (i mod stride) along each dimension, rounded up."""
        return tuple(-(-i // s) for i, s in zip(self.input_size, self.stride))  # type: ignore[return-value]

    @property
    def padded(self) -> tuple[bool, bool, bool]:
        """Per dimension, whether some forward tap reads padding: only where there is padding,
        since without it the last output pixel's last tap is the last input pixel."""
        return tuple(lo > 0 or hi > 0 for lo, hi in zip(self.pad_lo, self.pad_hi))  # type: ignore[return-value]

    @property
    def input_grad_bounds(self) -> tuple[bool, bool, bool]:
        """Per dimension, whether some input-gradient tap reads outside dy: unless the filter is
        1 wide there without padding (then pixel i = o * stride reads o itself)."""
        return tuple(k > 1 or p for k, p in zip(self.kernel_size, self.padded))  # type: ignore[return-value]

    @property
    def phase_tap_step(self) -> Triple:
        """Per dimension, stride / gcd(stride, dilation): the taps reaching one stride phase of the
        input in the input gradient are every this-many-th."""
        return tuple(s // math.gcd(s, d) for s, d in zip(self.stride, self.dilation))  # type: ignore[return-value]

    @property
    def phase_out_step(self) -> Triple:
        """Per dimension, dilation / gcd(stride, dilation): how far the output pixel moves
        between two consecutive taps reaching one phase."""
        return tuple(d // math.gcd(s, d) for s, d in zip(self.stride, self.dilation))  # type: ignore[return-value]

    @property
    def out_shape(self) -> tuple[int, ...]:
        """The batched output shape in the caller's dimensionality."""
        return (self.batch, self.out_channels, *self.spatial(self.output_size))

    @property
    def flops(self) -> int:
        """Multiply-adds times two of the forward pass (also of each gradient)."""
        return 2 * self.output_pixels * self.out_channels * self.in_channels_per_group * self.taps

    def spatial(self, values: Triple) -> list[int]:
        """A (D, H, W) field in the caller's dimensionality: the last ``ndim`` entries."""
        return list(values[3 - self.ndim :])

    def op_padding(self) -> list[int]:
        """Padding as the custom ops take it: the ``ndim`` leading pads, then the trailing ones."""
        return [*self.spatial(self.pad_lo), *self.spatial(self.pad_hi)]

    def pad_widths(self, leading: bool = True) -> list[int]:
        """``F.pad``'s pad list (last dimension first): the whole padding, or only the extra
        trailing amount of asymmetric padding when ``leading`` is False."""
        widths: list[int] = []
        for lo, hi in zip(reversed(self.spatial(self.pad_lo)), reversed(self.spatial(self.pad_hi))):
            widths += [lo, hi] if leading else [0, hi - lo]
        return widths


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _as_int(conv: str, name: str, value: object, expected: str = "an int") -> int:
    """One integer argument, taken as torch's argument parser takes it (``__index__``, no bools)."""
    # bool is an int subclass and a 0-d int tensor or numpy integer has __index__; torch's parser
    # refuses the first and accepts the others, so operator.index with bool excluded matches it.
    if not isinstance(value, bool):
        try:
            result = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            pass
        else:
            if not -INT64_MAX - 1 <= result <= INT64_MAX:
                # torch fails to unpack it into a C++ int64_t with this exception type.
                raise ValueError(f"{conv}(): {name}={result} does not fit in a 64-bit integer")
            return result
    raise TypeError(f"{conv}(): argument '{name}' must be {expected}, but got {value!r}")


_INTS = "an int or a tuple of ints"


def _ints(conv: str, name: str, value: IntOrSeq) -> tuple[int, ...]:
    """An int, or a tuple/list/torch.Size of ints, as a tuple (TypeError like torch's parser)."""
    if not isinstance(value, torch.Size | tuple | list):
        return (_as_int(conv, name, value, _INTS),)
    try:
        return tuple(_as_int(conv, name, v, _INTS) for v in value)
    except ValueError as e:
        # Inside a list torch reports an int64 overflow as a TypeError, unlike a bare int.
        raise TypeError(str(e)) from None


def _expand(conv: str, name: str, value: IntOrSeq, ndim: int) -> tuple[int, ...]:
    """An int or a 1- or ndim-long sequence, as an ndim-tuple (torch's ``expand_param_if_needed``)."""
    scalar = not isinstance(value, torch.Size | tuple | list)
    items = _ints(conv, name, value)
    if scalar or len(items) == 1:
        return items * ndim
    if len(items) == ndim:
        return items
    raise RuntimeError(
        f"expected {name} to be a single integer value or a list of {ndim} values to match "
        f"the convolution dimensions, but got {name}={list(items)}"
    )


def _to_triple(values: Sequence[int], fill: int) -> Triple:
    """Pad an ndim-tuple on the left to (D, H, W)."""
    return tuple([fill] * (3 - len(values)) + list(values))  # type: ignore[return-value]


def _check_tensors(name: str, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"{name}(): argument 'input' must be Tensor, not {type(input).__name__}")
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name}(): argument 'weight' must be Tensor, not {type(weight).__name__}")
    if bias is not None and not isinstance(bias, torch.Tensor):
        raise TypeError(f"{name}(): argument 'bias' must be Tensor, not {type(bias).__name__}")
    for other_name, other in (("weight", weight), ("bias", bias)):
        if other is None:
            continue
        if other.device != input.device:
            raise RuntimeError(
                f"{name}(): input is on {input.device} but {other_name} is on {other.device}; "
                "all tensors must be on the same device"
            )
        if other.dtype != input.dtype:
            raise RuntimeError(
                f"{name}(): input type ({input.dtype}) and {other_name} type ({other.dtype}) should be the same"
            )


def conv_spec(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: IntOrSeq,
    padding: IntOrSeq | str,
    dilation: IntOrSeq,
    groups: int,
    ndim: int,
) -> ConvSpec:
    """Validate ``F.conv{ndim}d``'s arguments and return the geometry.

    ``input`` may be unbatched (``ndim + 1`` dimensions); the spec then has ``batch == 1`` and
    the caller unsqueezes. Raises ``RuntimeError`` for everything ``F.conv*`` rejects.
    """
    name = f"conv{ndim}d"
    # torch's argument parser runs before any shape check, so every TypeError comes first.
    _check_tensors(name, input, weight, bias)
    stride_t = _expand(name, "stride", stride, ndim)
    dilation_t = _expand(name, "dilation", dilation, ndim)
    groups = _as_int(name, "groups", groups)
    if not isinstance(padding, str):
        pad_lo = pad_hi = _expand(name, "padding", padding, ndim)

    if input.dim() not in (ndim + 1, ndim + 2):
        raise RuntimeError(
            f"Expected {ndim + 1}D (unbatched) or {ndim + 2}D (batched) input to {name}, "
            f"but got input of size: {_fmt(input.shape)}"
        )
    batched = input.dim() == ndim + 2
    in_shape = tuple(input.shape) if batched else (1, *input.shape)
    if weight.dim() != ndim + 2:
        raise RuntimeError(
            f"{name}(): expected weight to be {ndim + 2}-dimensional "
            f"(out_channels, in_channels/groups, *kernel_size), but got weight of size {_fmt(weight.shape)}"
        )

    if any(s <= 0 for s in stride_t):
        raise RuntimeError(f"{name}(): non-positive stride is not supported, got stride={list(stride_t)}")
    if any(d <= 0 for d in dilation_t):
        raise RuntimeError(f"{name}(): dilation should be greater than zero, got dilation={list(dilation_t)}")
    if groups <= 0:
        raise RuntimeError(f"{name}(): non-positive groups is not supported, got groups={groups}")

    kernel = tuple(weight.shape[2:])
    if isinstance(padding, str):
        if padding == "valid":
            pad_lo = pad_hi = (0,) * ndim
        elif padding == "same":
            if any(s != 1 for s in stride_t):
                raise RuntimeError(
                    f"{name}(): padding='same' is not supported for strided convolutions, got stride={list(stride_t)}"
                )
            total = [d * (k - 1) for d, k in zip(dilation_t, kernel)]
            # torch puts the odd element of an even total at the end.
            pad_lo = tuple(t // 2 for t in total)
            pad_hi = tuple(t - lo for t, lo in zip(total, pad_lo))
        else:
            raise RuntimeError(f"{name}(): invalid padding string '{padding}', expected 'same' or 'valid'")
    elif any(p < 0 for p in pad_lo):
        raise RuntimeError(f"{name}(): negative padding is not supported, got padding={list(pad_lo)}")

    out_channels, in_per_group = weight.shape[0], weight.shape[1]
    # torch rejects an empty weight (out_channels < groups) even where the output would be empty.
    if out_channels < groups:
        raise RuntimeError(
            f"{name}(): given groups={groups}, expected weight to be at least {groups} at "
            f"dimension 0, but got weight of size {_fmt(weight.shape)} instead"
        )
    if out_channels % groups != 0:
        raise RuntimeError(
            f"{name}(): given groups={groups}, expected weight to be divisible by {groups} at "
            f"dimension 0, but got weight of size {_fmt(weight.shape)} instead"
        )
    if in_shape[1] != in_per_group * groups:
        raise RuntimeError(
            f"{name}(): given groups={groups}, weight of size {_fmt(weight.shape)}, expected "
            f"input{_fmt(input.shape)} to have {in_per_group * groups} channels, "
            f"but got {in_shape[1]} channels instead"
        )
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != out_channels):
        raise RuntimeError(
            f"{name}(): given weight of size {_fmt(weight.shape)}, expected bias to be "
            f"1-dimensional with {out_channels} elements, but got bias of size {_fmt(bias.shape)} instead"
        )
    if any(k <= 0 for k in kernel):
        raise RuntimeError(
            f"{name}(): kernel size should be greater than zero, but got weight of size {_fmt(weight.shape)}"
        )

    spatial = in_shape[2:]
    padded = [i + lo + hi for i, lo, hi in zip(spatial, pad_lo, pad_hi)]
    if any(p > INT64_MAX for p in padded):
        # torch's sizes are int64_t; it rejects padding above (2**63 - 1) // 2 for this reason.
        raise RuntimeError(f"{name}(): padding={list(pad_lo)} makes the padded input size overflow a 64-bit integer")
    effective = [d * (k - 1) + 1 for d, k in zip(dilation_t, kernel)]
    if any(e > p for e, p in zip(effective, padded)):
        raise RuntimeError(
            f"{name}(): calculated padded input size per channel: ({' x '.join(map(str, padded))}). "
            f"Kernel size: ({' x '.join(map(str, effective))}) (dilated). "
            "Kernel size can't be greater than actual input size"
        )
    # Empty batches and channel-less inputs are fine; an empty spatial dimension otherwise is not.
    if in_shape[0] > 0 and in_shape[1] > 0 and any(i == 0 for i in spatial):
        raise RuntimeError(
            f"{name}(): only zero batch or zero channel inputs are supported, but got input of "
            f"size {_fmt(input.shape)}, with an empty spatial dimension"
        )
    output = [(p - e) // s + 1 for p, e, s in zip(padded, effective, stride_t)]

    return ConvSpec(
        ndim=ndim,
        batch=in_shape[0],
        in_channels=in_shape[1],
        out_channels=out_channels,
        groups=groups,
        input_size=_to_triple(spatial, 1),
        kernel_size=_to_triple(kernel, 1),
        stride=_to_triple(stride_t, 1),
        pad_lo=_to_triple(pad_lo, 0),
        pad_hi=_to_triple(pad_hi, 0),
        dilation=_to_triple(dilation_t, 1),
        output_size=_to_triple(output, 1),
    )


def check_padding_mode(padding_mode: str) -> None:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {list(PADDING_MODES)}, but got padding_mode='{padding_mode}'")


def output_size(
    input_size: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> list[int]:
    """Spatial output size from already-validated op arguments (padding: leading then trailing)."""
    nd = len(input_size)
    return [
        (input_size[i] + padding[i] + padding[nd + i] - dilation[i] * (kernel_size[i] - 1) - 1) // stride[i] + 1
        for i in range(nd)
    ]


def op_geometry(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> ConvSpec:
    """The spec of a custom-op call, whose batched arguments were validated by ``conv_spec``."""
    nd = len(input_shape) - 2
    out = output_size(input_shape[2:], weight_shape[2:], stride, padding, dilation)
    return ConvSpec(
        ndim=nd,
        batch=input_shape[0],
        in_channels=input_shape[1],
        out_channels=weight_shape[0],
        groups=groups,
        input_size=_to_triple(input_shape[2:], 1),
        kernel_size=_to_triple(weight_shape[2:], 1),
        stride=_to_triple(stride, 1),
        pad_lo=_to_triple(padding[:nd], 0),
        pad_hi=_to_triple(padding[nd:], 0),
        dilation=_to_triple(dilation, 1),
        output_size=_to_triple(out, 1),
    )


def as_3d(t: torch.Tensor) -> torch.Tensor:
    """View a (N, C, *spatial) tensor with 1-3 spatial dims as (N, C, D, H, W); no copy."""
    while t.dim() < 5:
        t = t.unsqueeze(2)
    return t


def output_memory_format(input: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    """torch's rule: a channels-last output when the input or the weight is laid out channels-last."""
    for t in (input, weight):
        fmt = suggest_memory_format(t)
        if fmt != torch.contiguous_format:
            return fmt
    return torch.contiguous_format


def channels_last_format(rank: int) -> torch.memory_format:
    """The channels-last memory format of a tensor of ``rank`` dimensions (none for 1-D convs)."""
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(rank, torch.contiguous_format)


def needs_int64(*tensors: torch.Tensor) -> bool:
    """Whether any tensor spans about 2^31 elements or more, so offsets must be 64-bit."""
    for t in tensors:
        span = 1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()) if size > 0)
        if t.numel() >= INT32_LIMIT or span >= INT32_LIMIT:
            return True
    return False
