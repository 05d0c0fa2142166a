"""What every launcher needs: accumulator and dot precision per dtype, the interpreter switch, and
widening loaded 16-bit values."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import triton
import triton.language as tl

from ..runtime import INTERPRETER

__all__ = [
    "INTERPRETER",
    "Launch",
    "accumulator_dtype",
    "dot_operand",
    "dot_precision",
    "dot_precision_on",
    "launching",
    "recording_launches",
    "widened_pairs",
]

# Triton's interpreter computes tl.dot on bfloat16 operands wrongly: interpreted kernels widen
# them to float32 first (exact, every bfloat16 is a float32). Compiled kernels never widen, and
# gpu_compile compiles in a process without the interpreter, so it sees them unchanged.
_WIDEN_BFLOAT16_DOT = tl.constexpr(INTERPRETER)


def accumulator_dtype(dtype: torch.dtype) -> tl.dtype:
    """float64 accumulates in float64; everything else in float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def accumulator_torch_dtype(dtype: torch.dtype) -> torch.dtype:
    """``accumulator_dtype`` as a torch dtype: for buffers the kernels read or write in it."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def dot_precision(t: torch.Tensor) -> str:
    """The tl.dot precision of a launch reading ``t``: ``dot_precision_on(t.dtype, t.device.type)``."""
    return dot_precision_on(t.dtype, t.device.type)


def dot_precision_on(dtype: torch.dtype, device_type: str) -> str:
    """TF32 for float32 on CUDA only where torch would use it for convolutions, IEEE otherwise."""
    if dtype == torch.float32 and device_type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


# Triton's interpreter is not thread-safe: while a kernel runs it keeps the grid in its own
# module state and patches triton.language, so two threads launching at once corrupt each other.
_INTERPRETER_LOCK = threading.Lock()


def launching() -> contextlib.AbstractContextManager:
    """Wrap every kernel launch: one interpreted launch at a time; compiled launches run freely."""
    return _INTERPRETER_LOCK if INTERPRETER else contextlib.nullcontext()


# Compiled, Triton widens the odd elements of a bfloat16 pair with two instructions (a byte
# permute, then a shift); the bits moved by hand take one per element. The interpreter runs
# no inline assembly.
_WIDEN_BFLOAT16_BY_HAND = tl.constexpr(not INTERPRETER)


@triton.jit
def widened_pairs(t, ACC_DTYPE: tl.constexpr):
    """``t`` converted to ACC_DTYPE where a thread's elements come in pairs loaded together (a
    vector load): compiled, bfloat16 to float32 then takes one instruction per element (a bfloat16
    is the upper half of the float32 of the same value). Pairs of separately loaded elements
    would first be packed into one register: ``.to`` is cheaper for them."""
    if _WIDEN_BFLOAT16_BY_HAND and t.dtype == tl.bfloat16 and ACC_DTYPE == tl.float32:
        return tl.inline_asm_elementwise(
            "{ shl.b32 $0, $2, 16; and.b32 $1, $2, 0xffff0000; }",
            "=r,=r,r",
            [t],
            dtype=tl.float32,
            is_pure=True,
            pack=2,
        )
    return t.to(ACC_DTYPE)


@triton.jit
def dot_operand(t):
    """``t`` as ``tl.dot`` takes it: unchanged, except bfloat16 under the interpreter (float32)."""
    if _WIDEN_BFLOAT16_DOT:
        if t.dtype == tl.bfloat16:
            t = t.to(tl.float32)
    return t


@dataclass(frozen=True)
class Launch:
    """One kernel launch, fully decided: what the launchers build and what tests compile for GPUs.

    ``args`` are the runtime arguments by parameter name (tensors, ints and tuples of ints, built
    by ``arguments.py``); ``constexprs`` the compile-time ones (block sizes and flags),
    ``num_warps``/``num_stages`` the launch options.
    """

    kernel: Any
    grid: tuple[int, ...]
    args: dict[str, Any]
    constexprs: dict[str, Any] = field(default_factory=dict)
    num_warps: int = 4
    num_stages: int = 3

    def __call__(self) -> None:
        recorded = getattr(_recording, "launches", None)
        if recorded is not None:
            recorded.append(self)
            return
        with launching():
            self.kernel[self.grid](**self.args, **self.constexprs, num_warps=self.num_warps, num_stages=self.num_stages)


# Where this thread's launches go instead of running while ``recording_launches`` is active
# (per thread, so that recording never captures another thread's launches).
_recording = threading.local()


@contextlib.contextmanager
def recording_launches() -> Iterator[list[Launch]]:
    """Plan without running: inside, every ``Launch`` called is appended to the yielded list instead.

    With meta tensors this gives the launches an op makes for a problem of any size, on a
    machine without its GPU (``perf/static.py`` compiles them for sm_90).
    """
    outer = getattr(_recording, "launches", None)
    _recording.launches = recorded = []
    try:
        yield recorded
    finally:
        _recording.launches = outer
