"""Rejected inputs: whatever ``F.conv*`` rejects, ``triton_conv.conv*`` rejects with the same exception.

Every bad case runs against torch (exception type only) and against triton_conv (the same type,
exactly, and a message naming the argument and the shapes). A few valid edge cases around the
same checks must not raise and must match torch in float64.

No device-mismatch case: without CUDA the only other device is 'meta', and torch accepts a meta
weight (or bias) with a CPU input, returning a meta tensor, so there is nothing to match there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn

from triton_conv.testing import TORCH_CONV, TRITON_CONV, relative_error

pytestmark = pytest.mark.errors

N, C, K = 2, 4, 6  # batch, in_channels, out_channels of the well-formed base case
SIZE, KSIZE = 5, 3  # spatial size of the input and of the kernel, in every dimension


@dataclass(frozen=True)
class T:
    """A random tensor to build when the case runs (shape and dtype)."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    def make(self) -> torch.Tensor:
        return torch.randn(self.shape, dtype=self.dtype)


def _build(value: Any) -> Any:
    return value.make() if isinstance(value, T) else value


def _s(shape: tuple[int, ...]) -> str:
    """A shape as torch and triton_conv print it, escaped for a regex."""
    return re.escape("[" + ", ".join(map(str, shape)) + "]")


def _sp(ndim: int, n: int) -> tuple[int, ...]:
    return (n,) * ndim


DEFAULT = "default"  # the well-formed input or weight of the base case


@dataclass(frozen=True)
class Bad:
    label: str
    ndim: int
    exc: type[Exception]
    match: str  # regex our message must contain
    x: Any = DEFAULT
    w: Any = DEFAULT
    b: Any = None
    kwargs: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.ndim}d-{self.label}"

    def args(self) -> tuple[Any, Any, Any]:
        x = T((N, C, *_sp(self.ndim, SIZE))) if self.x is DEFAULT else self.x
        w = T((K, C, *_sp(self.ndim, KSIZE))) if self.w is DEFAULT else self.w
        return _build(x), _build(w), _build(self.b)


def _bad_cases(nd: int) -> list[Bad]:
    name = f"conv{nd}d"
    x_shape = (N, C, *_sp(nd, SIZE))
    w_shape = (K, C, *_sp(nd, KSIZE))
    ones = lambda n: (1,) * n  # noqa: E731
    last = lambda v, fill: (fill,) * (nd - 1) + (v,)  # noqa: E731  # a tuple with v in the last dimension
    rank = rf"Expected {nd + 1}D \(unbatched\) or {nd + 2}D \(batched\) input to {name}, but got input of size: "
    length = rf"expected {{}} to be a single integer value or a list of {nd} values .* but got {{}}=\["
    cases = [
        # Channels and groups.
        Bad(
            "channel-mismatch",
            nd,
            RuntimeError,
            rf"groups=1, weight of size {_s(w_shape)}, expected input{_s((N, 3, *x_shape[2:]))} to have 4 channels, but got 3",
            x=T((N, 3, *x_shape[2:])),
        ),
        Bad(
            "channel-mismatch-unbatched",
            nd,
            RuntimeError,
            rf"expected input{_s((3, *x_shape[2:]))} to have 4 channels, but got 3",
            x=T((3, *x_shape[2:])),
        ),
        Bad(
            "groups-not-dividing-out-channels",
            nd,
            RuntimeError,
            rf"groups=2, expected weight to be divisible by 2 at dimension 0, but got weight of size {_s((5, 2, *w_shape[2:]))}",
            w=T((5, 2, *w_shape[2:])),
            kwargs=dict(groups=2),
        ),
        Bad(
            "out-channels-below-groups",
            nd,
            RuntimeError,
            rf"groups=4, expected weight to be at least 4 at dimension 0, but got weight of size {_s((2, 1, *w_shape[2:]))}",
            w=T((2, 1, *w_shape[2:])),
            kwargs=dict(groups=4),
        ),
        Bad(
            "zero-out-channels",
            nd,
            RuntimeError,
            rf"expected weight to be at least 1 at dimension 0, but got weight of size {_s((0, C, *w_shape[2:]))}",
            w=T((0, C, *w_shape[2:])),
        ),
        Bad(
            "in-channels-not-groups-times-weight",
            nd,
            RuntimeError,
            rf"groups=2, weight of size {_s((K, 2, *w_shape[2:]))}, expected input{_s((N, 6, *x_shape[2:]))} "
            r"to have 4 channels, but got 6",
            x=T((N, 6, *x_shape[2:])),
            w=T((K, 2, *w_shape[2:])),
            kwargs=dict(groups=2),
        ),
        # Kernel against the (padded) input.
        Bad(
            "kernel-larger-than-input",
            nd,
            RuntimeError,
            r"padded input size per channel: \(2( x 2)*\)\. Kernel size: \(3( x 3)*\)",
            x=T((N, C, *_sp(nd, 2))),
        ),
        Bad(
            "kernel-larger-than-padded-input",
            nd,
            RuntimeError,
            r"padded input size per channel: \(3( x 3)*\)\. Kernel size: \(4( x 4)*\)",
            x=T((N, C, *_sp(nd, 1))),
            w=T((K, C, *_sp(nd, 4))),
            kwargs=dict(padding=1),
        ),
        Bad(
            "dilated-kernel-larger-than-input",
            nd,
            RuntimeError,
            r"padded input size per channel: \(5( x 5)*\)\. Kernel size: \(7( x 7)*\) \(dilated\)",
            kwargs=dict(dilation=3),
        ),
        Bad(
            "dilated-kernel-larger-than-padded-input",
            nd,
            RuntimeError,
            r"padded input size per channel: \(6( x 6)*\)\. Kernel size: \(7( x 7)*\) \(dilated\)",
            x=T((N, C, *_sp(nd, 4))),
            w=T((K, C, *_sp(nd, 2))),
            kwargs=dict(padding=1, dilation=6),
        ),
        Bad(
            "zero-kernel-size",
            nd,
            RuntimeError,
            rf"kernel size should be greater than zero, but got weight of size {_s((K, C, *last(0, KSIZE)))}",
            w=T((K, C, *last(0, KSIZE))),
        ),
        Bad(
            "empty-spatial-dimension",
            nd,
            RuntimeError,
            rf"only zero batch or zero channel inputs .* input of size {_s((N, C, *last(0, SIZE)))}",
            x=T((N, C, *last(0, SIZE))),
            kwargs=dict(padding=2),
        ),
        # Non-positive stride, dilation, groups; negative padding.
        Bad(
            "stride-zero",
            nd,
            RuntimeError,
            r"non-positive stride is not supported, got stride=\[0",
            kwargs=dict(stride=0),
        ),
        Bad("stride-negative", nd, RuntimeError, r"non-positive stride .* stride=\[-1", kwargs=dict(stride=-1)),
        Bad(
            "stride-zero-in-last-dim",
            nd,
            RuntimeError,
            rf"non-positive stride .* stride={_s(last(0, 1))}",
            kwargs=dict(stride=last(0, 1)),
        ),
        Bad(
            "dilation-zero",
            nd,
            RuntimeError,
            r"dilation should be greater than zero, got dilation=\[0",
            kwargs=dict(dilation=0),
        ),
        Bad(
            "dilation-negative",
            nd,
            RuntimeError,
            rf"dilation should be greater than zero, got dilation={_s(last(-2, 1))}",
            kwargs=dict(dilation=last(-2, 1)),
        ),
        Bad(
            "groups-zero",
            nd,
            RuntimeError,
            r"non-positive groups is not supported, got groups=0",
            kwargs=dict(groups=0),
        ),
        Bad("groups-negative", nd, RuntimeError, r"non-positive groups .* groups=-1", kwargs=dict(groups=-1)),
        Bad(
            "padding-negative",
            nd,
            RuntimeError,
            r"negative padding is not supported, got padding=\[-1",
            kwargs=dict(padding=-1),
        ),
        Bad(
            "padding-negative-in-last-dim",
            nd,
            RuntimeError,
            rf"negative padding .* padding={_s(last(-1, 0))}",
            kwargs=dict(padding=last(-1, 0)),
        ),
        # Ranks.
        Bad("input-rank-too-few", nd, RuntimeError, rank + _s((C, *_sp(nd - 1, SIZE))), x=T((C, *_sp(nd - 1, SIZE)))),
        Bad("input-rank-too-many", nd, RuntimeError, rank + _s((1, *x_shape)), x=T((1, *x_shape))),
        Bad(
            "weight-rank-too-few",
            nd,
            RuntimeError,
            rf"expected weight to be {nd + 2}-dimensional .* weight of size {_s(w_shape[:-1])}",
            w=T(w_shape[:-1]),
        ),
        Bad(
            "weight-rank-too-many",
            nd,
            RuntimeError,
            rf"expected weight to be {nd + 2}-dimensional .* weight of size {_s((*w_shape, 1))}",
            w=T((*w_shape, 1)),
        ),
        Bad(
            "bias-wrong-size",
            nd,
            RuntimeError,
            rf"weight of size {_s(w_shape)}, expected bias to be 1-dimensional with 6 elements, but got bias of size \[5\]",
            b=T((5,)),
        ),
        Bad(
            "bias-wrong-rank",
            nd,
            RuntimeError,
            r"bias to be 1-dimensional with 6 elements, but got bias of size \[6, 1\]",
            b=T((K, 1)),
        ),
        Bad("bias-zero-dim", nd, RuntimeError, r"bias to be 1-dimensional .* bias of size \[\]", b=T(())),
        # Dtypes.
        Bad(
            "weight-float64",
            nd,
            RuntimeError,
            r"input type \(torch\.float32\) and weight type \(torch\.float64\) should be the same",
            w=T(w_shape, torch.float64),
        ),
        Bad(
            "input-float64",
            nd,
            RuntimeError,
            r"input type \(torch\.float64\) and weight type \(torch\.float32\)",
            x=T(x_shape, torch.float64),
        ),
        Bad(
            "bias-float64",
            nd,
            RuntimeError,
            r"input type \(torch\.float32\) and bias type \(torch\.float64\)",
            b=T((K,), torch.float64),
        ),
        # Padding strings.
        Bad(
            "same-with-stride-2",
            nd,
            RuntimeError,
            r"padding='same' is not supported for strided convolutions, got stride=\[2",
            kwargs=dict(padding="same", stride=2),
        ),
        Bad(
            "same-with-stride-2-in-last-dim",
            nd,
            RuntimeError,
            rf"padding='same' is not supported for strided .* stride={_s(last(2, 1))}",
            kwargs=dict(padding="same", stride=last(2, 1)),
        ),
        Bad(
            "padding-string-unknown",
            nd,
            RuntimeError,
            r"invalid padding string 'full', expected 'same' or 'valid'",
            kwargs=dict(padding="full"),
        ),
        Bad(
            "padding-string-uppercase", nd, RuntimeError, r"invalid padding string 'SAME'", kwargs=dict(padding="SAME")
        ),
        # Tuples of the wrong length.
        Bad(
            "stride-too-long",
            nd,
            RuntimeError,
            length.format("stride", "stride") + "1(, 1)*\\]",
            kwargs=dict(stride=ones(nd + 1)),
        ),
        Bad("stride-empty", nd, RuntimeError, length.format("stride", "stride") + "\\]", kwargs=dict(stride=())),
        Bad(
            "padding-too-long",
            nd,
            RuntimeError,
            length.format("padding", "padding"),
            kwargs=dict(padding=(0,) * (nd + 1)),
        ),
        Bad(
            "dilation-too-long",
            nd,
            RuntimeError,
            length.format("dilation", "dilation"),
            kwargs=dict(dilation=ones(nd + 1)),
        ),
        # Arguments of the wrong type: torch's argument parser raises TypeError before any check.
        Bad(
            "stride-float",
            nd,
            TypeError,
            rf"{name}\(\): argument 'stride' must be an int or a tuple of ints, but got 1\.5",
            kwargs=dict(stride=1.5),
        ),
        Bad(
            "stride-bool",
            nd,
            TypeError,
            r"argument 'stride' must be an int or a tuple of ints, but got True",
            kwargs=dict(stride=True),
        ),
        Bad(
            "stride-float-in-tuple",
            nd,
            TypeError,
            r"argument 'stride' must be .* but got 1\.5",
            kwargs=dict(stride=last(1.5, 1)),
        ),
        Bad(
            "stride-range",
            nd,
            TypeError,
            r"argument 'stride' must be .* but got range",
            kwargs=dict(stride=range(1, nd + 1)),
        ),
        Bad("padding-float", nd, TypeError, r"argument 'padding' must be .* but got 1\.0", kwargs=dict(padding=1.0)),
        Bad("padding-none", nd, TypeError, r"argument 'padding' must be .* but got None", kwargs=dict(padding=None)),
        Bad("dilation-string", nd, TypeError, r"argument 'dilation' must be .* but got 'x'", kwargs=dict(dilation="x")),
        Bad("groups-float", nd, TypeError, r"argument 'groups' must be an int, but got 1\.0", kwargs=dict(groups=1.0)),
        Bad("groups-bool", nd, TypeError, r"argument 'groups' must be an int, but got True", kwargs=dict(groups=True)),
        Bad(
            "groups-numpy-bool", nd, TypeError, r"argument 'groups' must be an int", kwargs=dict(groups=np.bool_(True))
        ),
        Bad("input-not-tensor", nd, TypeError, rf"{name}\(\): argument 'input' must be Tensor, not list", x=[[1.0]]),
        Bad("weight-none", nd, TypeError, r"argument 'weight' must be Tensor, not NoneType", w=None),
        Bad("bias-not-tensor", nd, TypeError, r"argument 'bias' must be Tensor, not list", b=[0.0] * K),
        # Integers that do not fit in int64: torch's parser raises ValueError, or TypeError inside a list.
        Bad(
            "stride-overflow", nd, ValueError, r"stride=\d+ does not fit in a 64-bit integer", kwargs=dict(stride=2**70)
        ),
        Bad(
            "padding-overflow-in-tuple",
            nd,
            TypeError,
            r"padding=\d+ does not fit in a 64-bit integer",
            kwargs=dict(padding=(2**70,) * nd),
        ),
        Bad(
            "padding-overflows-padded-size",
            nd,
            RuntimeError,
            r"padding=\[\d+.*overflow a 64-bit integer",
            kwargs=dict(padding=2**62),
        ),
    ]
    return cases


BAD = [case for nd in (1, 2, 3) for case in _bad_cases(nd)]


@pytest.mark.parametrize("case", BAD, ids=lambda c: c.id)
def test_rejected_like_torch(case: Bad) -> None:
    x, w, b = case.args()
    with pytest.raises(Exception) as torch_error:
        TORCH_CONV[case.ndim](x, w, b, **case.kwargs)
    assert type(torch_error.value) is case.exc, f"torch raised {type(torch_error.value).__name__}: {torch_error.value}"
    with pytest.raises(case.exc, match=case.match) as ours:
        TRITON_CONV[case.ndim](x, w, b, **case.kwargs)
    assert type(ours.value) is case.exc, f"triton_conv raised {type(ours.value).__name__}: {ours.value}"


@pytest.mark.parametrize("mode", ["symmetric", "REFLECT", "zero", ""])
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_unknown_padding_mode(ndim: int, mode: str) -> None:
    # F.conv* has no padding_mode; the nn.Conv* constructors raise ValueError and so do we.
    module = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[ndim]
    with pytest.raises(ValueError):
        module(C, K, KSIZE, padding_mode=mode)
    x, w = torch.randn(N, C, *_sp(ndim, SIZE)), torch.randn(K, C, *_sp(ndim, KSIZE))
    with pytest.raises(ValueError, match=rf"padding_mode must be one of .*'zeros'.*but got padding_mode='{mode}'"):
        TRITON_CONV[ndim](x, w, padding_mode=mode)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_reflect_padding_wider_than_input_like_module(ndim: int) -> None:
    # Reflect padding must be narrower than the input; nn.Conv*(padding_mode='reflect') raises there.
    module = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[ndim](C, K, KSIZE, padding=3, padding_mode="reflect")
    x = torch.randn(1, C, *_sp(ndim, 3))
    with pytest.raises(RuntimeError):
        module(x)
    with pytest.raises(RuntimeError, match=r"[Pp]adding size should be less than the corresponding input dimension"):
        TRITON_CONV[ndim](x, module.weight.detach(), padding=3, padding_mode="reflect")


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool], ids=str)
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_integer_dtype_rejected(ndim: int, dtype: torch.dtype) -> None:
    # torch computes int32/int64 convolutions on CPU (and raises NotImplementedError for bool);
    # the kernels are floating point only, so ours refuses them all by name.
    x = torch.ones(N, C, *_sp(ndim, SIZE), dtype=dtype)
    w = torch.ones(K, C, *_sp(ndim, KSIZE), dtype=dtype)
    with pytest.raises(
        RuntimeError, match=rf"conv{ndim}d\(\): .*float.* but got input of dtype {re.escape(str(dtype))}"
    ):
        TRITON_CONV[ndim](x, w)


@dataclass(frozen=True)
class Good:
    label: str
    ndim: int
    x: tuple[int, ...]
    w: tuple[int, ...]
    bias: bool = True
    kwargs: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.ndim}d-{self.label}"


def _good_cases(nd: int) -> list[Good]:
    sp = lambda n: _sp(nd, n)  # noqa: E731
    even = (2,) * (nd - 1) + (4,)  # an even kernel in every dimension, longest in the last
    return [
        Good("zero-batch", nd, (0, 3, *sp(5)), (4, 3, *sp(3)), kwargs=dict(padding=1)),
        Good("zero-batch-empty-spatial", nd, (0, 3, *(0,) * nd), (4, 3, *sp(3)), kwargs=dict(padding=2)),
        Good("unbatched", nd, (3, *sp(5)), (4, 3, *sp(3)), kwargs=dict(stride=2, padding=1)),
        Good("same-even-kernel", nd, (1, 2, *sp(5)), (3, 2, *even), kwargs=dict(padding="same")),
        Good("same-even-kernel-dilation-2", nd, (1, 2, *sp(6)), (3, 2, *even), kwargs=dict(padding="same", dilation=2)),
        Good(
            "same-unbatched-groups", nd, (4, *sp(4)), (4, 2, *even), bias=False, kwargs=dict(padding="same", groups=2)
        ),
        Good("valid-string", nd, (1, 2, *sp(4)), (3, 2, *sp(2)), kwargs=dict(padding="valid", stride=2)),
        Good("one-tuples", nd, (1, 2, *sp(6)), (3, 2, *sp(2)), kwargs=dict(stride=(2,), padding=(1,), dilation=(2,))),
        Good("kernel-equals-padded-input", nd, (1, 2, *sp(3)), (3, 2, *sp(5)), kwargs=dict(padding=1)),
        Good(
            "dilated-kernel-equals-padded-input", nd, (1, 2, *sp(3)), (3, 2, *sp(3)), kwargs=dict(padding=1, dilation=2)
        ),
        Good("out-channels-equal-groups", nd, (1, 4, *sp(3)), (4, 1, *sp(2)), kwargs=dict(groups=4)),
    ]


GOOD = [case for nd in (1, 2, 3) for case in _good_cases(nd)] + [
    # Index-like integers, which torch's argument parser accepts.
    Good(
        "numpy-and-tensor-ints",
        2,
        (1, 4, 5, 5),
        (4, 2, 3, 3),
        kwargs=dict(stride=np.int64(2), padding=(np.int32(1), 0), dilation=torch.tensor(1), groups=np.int64(2)),
    ),
    Good("torch-size-and-list", 2, (1, 2, 5, 6), (3, 2, 2, 3), kwargs=dict(stride=torch.Size([1, 2]), padding=[1, 0])),
]


# torch's own note about the copy it makes for an even kernel with padding='same'.
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("case", GOOD, ids=lambda c: c.id)
def test_valid_edge_case_matches_torch(case: Good) -> None:
    x = torch.randn(case.x, dtype=torch.float64)
    w = torch.randn(case.w, dtype=torch.float64)
    b = torch.randn(case.w[0], dtype=torch.float64) if case.bias else None
    expected = TORCH_CONV[case.ndim](x, w, b, **case.kwargs)
    actual = TRITON_CONV[case.ndim](x, w, b, **case.kwargs)
    assert actual.shape == expected.shape
    assert actual.dtype == torch.float64
    assert relative_error(actual, expected) < 1e-10
