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
from dataclasses import dataclass, replace

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
    ``padding='same'`` with an even effective kernel, where torch pads one more at the end, and
    for the convolution a transposed convolution is the input gradient of (``transposed_geometry``),
    whose trailing padding is ``padding - output_padding``: negative where the input has trailing
    elements that no output reads.
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
    def unpadded(self) -> bool:
        """No padding: every filter tap of every output pixel reads inside the input.

        The output ends where the last tap still fits, so no bounds check is needed: 1x1
        convolutions, patch embeddings (kernel = stride, as in ViT), any valid convolution.
        """
        return self.pad_lo == self.pad_hi == (0, 0, 0)

    @property
    def patch_rows(self) -> bool:
        """Non-overlapping patches along W (kernel = stride > 1, dilation 1, no padding, one group).

        With W and C adjacent in memory (channels-last), a patch row's kernel-width pixels are
        kernel-width x C consecutive elements: one wider channel run (``fold_columns``).
        """
        kw, sw, dw = self.kernel_size[2], self.stride[2], self.dilation[2]
        return self.unpadded and kw == sw > 1 and dw == 1 and self.groups == 1

    @property
    def columns_fold(self) -> bool:
        """Whether ``fold_columns`` applies: one group, W neither padded nor dilated (each output
        pixel's filter row reads kernel-width adjacent columns, all inside the row)."""
        return self.groups == 1 and self.pad_lo[2] == 0 and self.pad_hi[2] <= 0 and self.dilation[2] == 1

    def fold_columns(self) -> ConvSpec:
        """The same convolution with the kernel-width input columns an output pixel reads in a
        filter row taken as kernel-width x C input channels: a filter one column wide, unit step
        along W, over the output's columns (requires ``columns_fold``). With W and C adjacent in
        memory the folded channels are consecutive elements, read from column ``stride`` apart."""
        (d, h, _), (t, r, _), (sd, sh, _), (dd, dh, _) = self.input_size, self.kernel_size, self.stride, self.dilation
        return replace(
            self,
            in_channels=self.in_channels * self.kernel_size[2],
            input_size=(d, h, self.output_size[2]),
            kernel_size=(t, r, 1),
            stride=(sd, sh, 1),
            dilation=(dd, dh, 1),
            pad_hi=(*self.pad_hi[:2], 0),
        )

    @property
    def pixels_per_phase(self) -> Triple:
        """Input pixels per stride phase (i mod stride) along each dimension, rounded up."""
        return tuple(-(-i // s) for i, s in zip(self.input_size, self.stride))  # type: ignore[return-value]

    @property
    def phases_holding_pixels(self) -> Triple:
        """Per dimension, the stride phases that hold input pixels: min(stride, size) (a stride
        past the input leaves the phases at or beyond its size empty)."""
        return tuple(min(s, i) for i, s in zip(self.input_size, self.stride))  # type: ignore[return-value]

    @property
    def input_pixels_per_phase(self) -> int:
        """Input pixels of one stride phase over the batch (the most of any phase)."""
        d, h, w = self.pixels_per_phase
        return self.batch * d * h * w

    @property
    def in_shape(self) -> tuple[int, ...]:
        """The batched input shape in the caller's dimensionality (a transposed convolution's output)."""
        return (self.batch, self.in_channels, *self.spatial(self.input_size))

    @property
    def padded(self) -> tuple[bool, bool, bool]:
        """Per dimension, whether some tap may fall outside the tensor it reads: only where there is
        padding, since without it the last output pixel's last tap is the last input pixel.
        Negative trailing padding (a transposed convolution's output_padding) counts too: then
        the input gradient's last input pixels map past the last output pixel."""
        return tuple(lo != 0 or hi != 0 for lo, hi in zip(self.pad_lo, self.pad_hi))  # type: ignore[return-value]

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

    def pad_widths(self) -> list[int]:
        """``F.pad``'s pad list (last dimension first) for the whole padding (negative crops)."""
        widths: list[int] = []
        for lo, hi in zip(reversed(self.spatial(self.pad_lo)), reversed(self.spatial(self.pad_hi))):
            widths += [lo, hi]
        return widths

    def input_grad_as_forward(self) -> ConvSpec:
        """The forward problem whose output is this convolution's input gradient, for unit steps:
        dy convolved with the filter flipped along every dimension and its input and output
        channels swapped within each group, each side padded by the filter's reach minus this
        one's padding on the other side."""
        reach = tuple(d * (k - 1) for d, k in zip(self.dilation, self.kernel_size))
        return replace(
            self,
            in_channels=self.out_channels,
            out_channels=self.in_channels,
            input_size=self.output_size,
            output_size=self.input_size,
            pad_lo=tuple(r - p for r, p in zip(reach, self.pad_lo)),  # type: ignore[arg-type]
            pad_hi=tuple(r - p for r, p in zip(reach, self.pad_hi)),  # type: ignore[arg-type]
        )

    def with_padded_input(self) -> ConvSpec:
        """The same convolution on its input padded explicitly (``pad_widths``), so without padding."""
        size = tuple(i + lo + hi for i, lo, hi in zip(self.input_size, self.pad_lo, self.pad_hi))
        return replace(self, input_size=size, pad_lo=(0, 0, 0), pad_hi=(0, 0, 0))  # type: ignore[arg-type]

    def op_arguments(self) -> tuple[list[int], list[int], list[int], int]:
        """stride, padding, dilation and groups as the convolution ops take them (``op_geometry``'s inverse)."""
        return self.spatial(self.stride), self.op_padding(), self.spatial(self.dilation), self.groups

    def transposed_arguments(self) -> tuple[list[int], list[int], list[int], list[int], int]:
        """stride, padding, output_padding, dilation and groups of the transposed convolution this
        spec is the input gradient of, as ``conv_transpose_forward`` takes them (the inverse of
        ``transposed_geometry``): the leading padding is its padding, and the trailing padding is
        padding - output_padding."""
        padding = self.spatial(self.pad_lo)
        output_padding = [lo - hi for lo, hi in zip(padding, self.spatial(self.pad_hi))]
        return self.spatial(self.stride), padding, output_padding, self.spatial(self.dilation), self.groups


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
        if other is not None:
            check_same_device_and_dtype(name, "input", input, other_name, other)


def check_same_device_and_dtype(
    name: str, first_name: str, first: torch.Tensor, other_name: str, other: torch.Tensor
) -> None:
    """torch's errors for two operands of ``name`` on different devices or of different dtypes."""
    if other.device != first.device:
        raise RuntimeError(
            f"{name}(): {first_name} is on {first.device} but {other_name} is on {other.device}; "
            "all tensors must be on the same device"
        )
    if other.dtype != first.dtype:
        raise RuntimeError(
            f"{name}(): {first_name} type ({first.dtype}) and {other_name} type ({other.dtype}) should be the same"
        )


def _batched_input_shape(
    name: str, input: torch.Tensor, weight: torch.Tensor, ndim: int, weight_channels: str
) -> tuple[int, ...]:
    """The input's shape with a batch of 1 prepended if unbatched, after checking both ranks."""
    if input.dim() not in (ndim + 1, ndim + 2):
        raise RuntimeError(
            f"Expected {ndim + 1}D (unbatched) or {ndim + 2}D (batched) input to {name}, "
            f"but got input of size: {_fmt(input.shape)}"
        )
    if weight.dim() != ndim + 2:
        raise RuntimeError(
            f"{name}(): expected weight to be {ndim + 2}-dimensional "
            f"({weight_channels}, *kernel_size), but got weight of size {_fmt(weight.shape)}"
        )
    return tuple(input.shape) if input.dim() == ndim + 2 else (1, *input.shape)


def _check_positive(name: str, stride: Sequence[int], dilation: Sequence[int], groups: int) -> None:
    if any(s <= 0 for s in stride):
        raise RuntimeError(f"{name}(): non-positive stride is not supported, got stride={list(stride)}")
    if any(d <= 0 for d in dilation):
        raise RuntimeError(f"{name}(): dilation should be greater than zero, got dilation={list(dilation)}")
    if groups <= 0:
        raise RuntimeError(f"{name}(): non-positive groups is not supported, got groups={groups}")


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

    in_shape = _batched_input_shape(name, input, weight, ndim, "out_channels, in_channels/groups")
    _check_positive(name, stride_t, dilation_t, groups)

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
    output = conv_output_size(spatial, kernel, stride_t, pad_lo, pad_hi, dilation_t)

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


def conv_output_size(
    input_size: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    pad_lo: Sequence[int],
    pad_hi: Sequence[int],
    dilation: Sequence[int],
) -> list[int]:
    """A convolution's spatial output size, one entry per spatial dimension (arguments validated)."""
    return [
        (i + lo + hi - d * (k - 1) - 1) // s + 1
        for i, k, s, lo, hi, d in zip(input_size, kernel_size, stride, pad_lo, pad_hi, dilation)
    ]


def transposed_output_size(
    input_size: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    output_padding: Sequence[int],
    dilation: Sequence[int],
) -> list[int]:
    """A transposed convolution's spatial output size, one entry per spatial dimension (arguments
    as ``F.conv_transpose*`` takes them, validated)."""
    return [
        (i - 1) * s - 2 * p + d * (k - 1) + 1 + op
        for i, k, s, p, op, d in zip(input_size, kernel_size, stride, padding, output_padding, dilation)
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
    out = conv_output_size(input_shape[2:], weight_shape[2:], stride, padding[:nd], padding[nd:], dilation)
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


# ---------------------------------------------------------------------------------------------
# Transposed convolution: the input gradient of a convolution whose input is its output.


def transposed_geometry(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    output_padding: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> ConvSpec:
    """The convolution that ``conv_transpose(input, weight)`` is the input gradient of.

    Arguments are batched and validated (``conv_transpose_spec``), one entry per spatial
    dimension. The spec's input is the transposed convolution's output (``spec.in_shape``), of
    size (i - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1 + output_padding, and its
    output is the transposed convolution's input. Trailing padding ``padding - output_padding``
    makes the convolution's output size exactly the transposed input's, for every output_padding
    torch accepts (also those not smaller than the stride, allowed when smaller than the dilation).
    """
    nd = len(input_shape) - 2
    kernel = weight_shape[2:]
    size = transposed_output_size(input_shape[2:], kernel, stride, padding, output_padding, dilation)
    return ConvSpec(
        ndim=nd,
        batch=input_shape[0],
        in_channels=groups * weight_shape[1],
        out_channels=weight_shape[0],
        groups=groups,
        input_size=_to_triple(size, 1),
        kernel_size=_to_triple(kernel, 1),
        stride=_to_triple(stride, 1),
        pad_lo=_to_triple(padding, 0),
        pad_hi=_to_triple([p - op for p, op in zip(padding, output_padding)], 0),
        dilation=_to_triple(dilation, 1),
        output_size=_to_triple(input_shape[2:], 1),
    )


def conv_transpose_spec(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: IntOrSeq,
    padding: IntOrSeq,
    output_padding: IntOrSeq,
    groups: int,
    dilation: IntOrSeq,
    ndim: int,
) -> ConvSpec:
    """Validate ``F.conv_transpose{ndim}d``'s arguments; return ``transposed_geometry``'s spec.

    ``input`` may be unbatched (the spec then has ``batch == 1``). Raises what torch raises:
    ``TypeError`` for arguments of the wrong type, ``RuntimeError`` for shapes and values.
    """
    name = f"conv_transpose{ndim}d"
    _check_tensors(name, input, weight, bias)
    stride_t = _expand(name, "stride", stride, ndim)
    padding_t = _expand(name, "padding", padding, ndim)
    output_padding_t = _expand(name, "output_padding", output_padding, ndim)
    dilation_t = _expand(name, "dilation", dilation, ndim)
    groups = _as_int(name, "groups", groups)

    in_shape = _batched_input_shape(name, input, weight, ndim, "in_channels, out_channels/groups")
    _check_positive(name, stride_t, dilation_t, groups)
    if any(p < 0 for p in padding_t):
        raise RuntimeError(f"{name}(): negative padding is not supported, got padding={list(padding_t)}")
    if any(op < 0 for op in output_padding_t):
        raise RuntimeError(
            f"{name}(): negative output_padding is not supported, got output_padding={list(output_padding_t)}"
        )
    if any(op >= s and op >= d for op, s, d in zip(output_padding_t, stride_t, dilation_t)):
        raise RuntimeError(
            f"{name}(): output padding must be smaller than either stride or dilation, but got "
            f"output_padding={list(output_padding_t)}, stride={list(stride_t)}, dilation={list(dilation_t)}"
        )

    in_channels = weight.shape[0]
    if in_channels < groups or in_channels % groups != 0:
        raise RuntimeError(
            f"{name}(): given groups={groups}, expected weight to be divisible by {groups} at dimension 0 "
            f"(and at least {groups}), but got weight of size {_fmt(weight.shape)} instead"
        )
    if in_shape[1] != in_channels:
        raise RuntimeError(
            f"{name}(): given transposed=1, weight of size {_fmt(weight.shape)}, expected "
            f"input{_fmt(input.shape)} to have {in_channels} channels, but got {in_shape[1]} channels instead"
        )
    out_channels = groups * weight.shape[1]
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != out_channels):
        raise RuntimeError(
            f"{name}(): given transposed=1, weight of size {_fmt(weight.shape)}, expected bias to be "
            f"1-dimensional with {out_channels} elements, but got bias of size {_fmt(bias.shape)} instead"
        )
    kernel = tuple(weight.shape[2:])
    if any(k <= 0 for k in kernel):
        raise RuntimeError(
            f"{name}(): kernel size should be greater than zero, but got weight of size {_fmt(weight.shape)}"
        )
    spatial = in_shape[2:]
    if in_shape[0] > 0 and in_shape[1] > 0 and any(i == 0 for i in spatial):
        raise RuntimeError(
            f"{name}(): only zero batch or zero channel inputs are supported, but got input of "
            f"size {_fmt(input.shape)}, with an empty spatial dimension"
        )
    spec = transposed_geometry(in_shape, weight.shape, stride_t, padding_t, output_padding_t, dilation_t, groups)
    size = spec.spatial(spec.input_size)
    if any(s <= 0 for s in size):
        raise RuntimeError(
            f"{name}(): given input size per channel: ({' x '.join(map(str, spatial))}). Calculated output "
            f"size per channel: ({' x '.join(map(str, size))}). Output size is too small"
        )
    return spec


def transposed_output_padding(
    input: torch.Tensor,
    output_size: Sequence[int] | None,
    stride: Sequence[int],
    padding: Sequence[int],
    kernel_size: Sequence[int],
    dilation: Sequence[int],
    output_padding: IntOrSeq,
    ndim: int,
) -> list[int]:
    """``nn.ConvTranspose{ndim}d``'s output_padding for ``forward(input, output_size)``: the module's
    own when ``output_size`` is None, else what reaches ``output_size`` (ValueError as torch's)."""
    if output_size is None:
        return list(_expand(f"ConvTranspose{ndim}d", "output_padding", output_padding, ndim))
    non_spatial = 2 if input.dim() == ndim + 2 else 1
    size = list(output_size)
    if len(size) == non_spatial + ndim:
        size = size[non_spatial:]
    if len(size) != ndim:
        raise ValueError(
            f"ConvTranspose{ndim}D: for {input.dim()}D input, output_size must have {ndim} "
            f"or {non_spatial + ndim} elements (got {len(size)})"
        )
    spatial = [input.shape[non_spatial + i] for i in range(ndim)]
    smallest = transposed_output_size(spatial, kernel_size, stride, padding, [0] * ndim, dilation)
    largest = [low + s - 1 for low, s in zip(smallest, stride)]
    if any(not low <= n <= high for n, low, high in zip(size, smallest, largest)):
        raise ValueError(
            f"requested an output size of {size}, but valid sizes range from {smallest} to {largest} "
            f"(for an input of {input.shape[non_spatial:]})"
        )
    return [n - low for n, low in zip(size, smallest)]
