"""What every launcher needs: accumulator and dot precision per dtype, the interpreter switch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import triton.language as tl

from ..runtime import INTERPRETER

__all__ = ["INTERPRETER", "Launch", "accumulator_dtype", "dot_precision", "recording_launches"]


def accumulator_dtype(dtype: torch.dtype) -> tl.dtype:
    """float64 accumulates in float64; everything else in float32."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def dot_precision(t: torch.Tensor) -> str:
    """TF32 for float32 on CUDA only where torch would use it for convolutions, IEEE otherwise."""
    if t.dtype == torch.float32 and t.is_cuda and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "ieee"


@dataclass(frozen=True)
class Launch:
    """One kernel launch, fully decided: what the launchers build and what tests compile for GPUs.

    ``args`` are the runtime arguments in the kernel's order (tensors and ints); ``constexprs``
    the compile-time ones (block sizes and flags), ``num_warps``/``num_stages`` the launch options.
    """

    kernel: Any
    grid: tuple[int, ...]
    args: tuple[Any, ...]
    constexprs: dict[str, Any] = field(default_factory=dict)
    num_warps: int = 4
    num_stages: int = 3

    def __call__(self) -> None:
        if _recorded is not None:
            _recorded.append(self)
            return
        self.kernel[self.grid](*self.args, **self.constexprs, num_warps=self.num_warps, num_stages=self.num_stages)


# Where launches go instead of running while ``recording_launches`` is active.
_recorded: list[Launch] | None = None


@contextmanager
def recording_launches() -> Iterator[list[Launch]]:
    """Plan without running: inside, every ``Launch`` called is appended to the yielded list instead.

    With meta tensors this gives the launches an op makes for a problem of any size, on a
    machine without its GPU (``perf/static.py`` compiles them for sm_90).
    """
    global _recorded
    outer, _recorded = _recorded, []
    try:
        yield _recorded
    finally:
        _recorded = outer
