"""Compile a kernel ``Launch`` for an NVIDIA GPU target on a machine without one.

The interpreter runs kernels on CPU tensors but accepts programs that no GPU compiler would:
``tl.dot`` tiles under 16 along a dimension, pipelines whose shared memory exceeds the device
limit. This module runs Triton's real compiler (down to a cubin, through the ``ptxas`` shipped
in the triton wheel) for a chosen compute capability, so CPU-only tests catch those failures,
and reports what the compile cost: registers per thread, spills, shared memory, and whether the
dots became Hopper ``wgmma`` instructions.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import re
import types
from dataclasses import dataclass
from typing import Any

import torch
import triton

# The code generator imports Gluon, which checks every Triton jit function against the
# interpreter setting; import it now, under the setting the functions were made with, not later
# while compile_launch has switched the interpreter off.
import triton.compiler.code_generator  # noqa: F401
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

from .common import Launch

# Largest dynamic shared memory one block may opt into, in bytes, per compute capability.
SHARED_MEMORY_LIMIT: dict[int, int] = {80: 166_912, 86: 101_376, 89: 101_376, 90: 232_448}

_POINTEE_TYPES: dict[torch.dtype, str] = {
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float32: "fp32",
    torch.float64: "fp64",
    torch.int8: "i8",
    torch.int16: "i16",
    torch.int32: "i32",
    torch.int64: "i64",
    torch.uint8: "u8",
    torch.bool: "u1",
}
_DIVISIBLE_BY_16 = [["tt.divisibility", 16]]


@dataclass(frozen=True)
class CompiledKernelInfo:
    """What one kernel costs on a GPU target, as ``ptxas`` and Triton report it.

    ``spill_bytes`` counts spill stores per thread (0: every value stayed in a register);
    ``shared_bytes`` is the shared memory a block allocates, pipeline buffers included.
    """

    name: str
    arch: int
    num_warps: int
    num_stages: int
    registers: int
    spill_bytes: int
    shared_bytes: int
    uses_wgmma: bool


def compile_launch(launch: Launch, arch: int = 90) -> CompiledKernelInfo:
    """Compile ``launch`` for ``sm_{arch}`` exactly as a launch on that GPU would, and describe the result.

    Raises whatever Triton raises when the kernel does not compile for the target (for example
    ``triton.CompilationError`` for a dot tile under 16). Not thread-safe: it switches Triton's
    global knobs (compiled code instead of the interpreter, always compile, ptxas log on) and
    captures stdout while compiling, and restores both.
    """
    fn = _jit_function(launch.kernel)
    signature, constants, attrs = _specialize(fn, launch)
    source = ASTSource(fn, signature, constants, attrs)
    options = {"num_warps": launch.num_warps, "num_stages": launch.num_stages}
    log = io.StringIO()
    with knobs.runtime.scope(), knobs.compilation.scope(), knobs.nvidia.scope(), contextlib.redirect_stdout(log):
        knobs.runtime.interpret = False
        # A cached kernel skips ptxas, whose log is the only source of register and spill counts.
        knobs.compilation.always_compile = True
        knobs.nvidia.dump_ptxas_log = True
        kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    ptxas_log = log.getvalue()
    registers = re.search(r"Used (\d+) registers", ptxas_log)
    if registers is None:
        raise RuntimeError(f"no register count in the ptxas log of {fn.__name__}:\n{ptxas_log}")
    return CompiledKernelInfo(
        name=kernel.metadata.name,
        arch=arch,
        num_warps=kernel.metadata.num_warps,
        num_stages=kernel.metadata.num_stages,
        registers=int(registers.group(1)),
        spill_bytes=sum(int(n) for n in re.findall(r"(\d+) bytes spill stores", ptxas_log)),
        shared_bytes=kernel.metadata.shared,
        uses_wgmma="wgmma.mma_async" in kernel.asm["ptx"],
    )


def _jit_function(kernel: Any) -> JITFunction:
    """The compilable function behind ``kernel``: unwrap autotuners and heuristics, undo the interpreter."""
    while not isinstance(kernel, JITFunction | InterpretedFunction):
        kernel = kernel.fn
    return _twin(kernel)


# Compilable twins of interpreted functions and of modules holding some, built once per process.
_TWINS: dict[Any, Any] = {}


def _twin(value: Any) -> Any:
    """``value`` where the compiler can use it; otherwise (interpreted) a compilable twin.

    A twin function is a ``JITFunction`` running the same code object on a copy of its module's
    globals in which interpreted functions, and modules holding some (``tl.zeros`` and ``tl.sum``
    are jit functions too), are twins in turn. Nothing the interpreter uses is modified.
    """
    if isinstance(value, InterpretedFunction):
        if value not in _TWINS:
            fn = value.fn
            scope = dict(fn.__globals__)
            twin = types.FunctionType(fn.__code__, scope, fn.__name__, fn.__defaults__, fn.__closure__)
            twin.__qualname__ = fn.__qualname__
            twin.__annotations__ = fn.__annotations__
            twin.__kwdefaults__ = fn.__kwdefaults__
            # Registered before the globals are converted, so that cycles end.
            _TWINS[value] = JITFunction(twin, **value.kwargs)
            scope.update({name: _twin(v) for name, v in fn.__globals__.items()})
        return _TWINS[value]
    if isinstance(value, types.ModuleType) and any(isinstance(v, InterpretedFunction) for v in vars(value).values()):
        if value not in _TWINS:
            module = _TWINS[value] = types.ModuleType(value.__name__)
            module.__dict__.update({name: _twin(v) for name, v in vars(value).items()})
        return _TWINS[value]
    return value


def _specialize(
    fn: JITFunction, launch: Launch
) -> tuple[dict[str, str], dict[tuple[int, ...], Any], dict[tuple[int, ...], list[list[Any]]]]:
    """Signature, constants and attributes of ``launch``'s arguments as Triton's launcher derives them.

    Pointers get their element type and ints i32/i64/u64 by magnitude. Unless a parameter opts
    out (``do_not_specialize``), an int equal to 1 becomes a constant, and ints divisible by 16
    and pointers to addresses divisible by 16 carry that as a hint to the compiler.
    """
    bound = inspect.signature(fn.fn).bind(*launch.args, **launch.constexprs)
    bound.apply_defaults()
    signature: dict[str, str] = {}
    constants: dict[tuple[int, ...], Any] = {}
    attrs: dict[tuple[int, ...], list[list[Any]]] = {}
    for param, value in zip(fn.params, bound.arguments.values()):
        key = (param.num,)
        if param.annotation_type:
            raise TypeError(f"{fn.__name__}: typed parameter {param.name!r} is not supported")
        if param.is_constexpr or value is None or (_is_int(value) and value == 1 and not param.do_not_specialize):
            signature[param.name] = "constexpr"
            constants[key] = value
        elif isinstance(value, torch.Tensor):
            signature[param.name] = "*" + _POINTEE_TYPES[value.dtype]
            aligned = not param.do_not_specialize_on_alignment and value.data_ptr() % 16 == 0
            if aligned and not param.do_not_specialize:
                attrs[key] = _DIVISIBLE_BY_16
        elif _is_int(value):
            signature[param.name] = _int_type(value)
            if value % 16 == 0 and not param.do_not_specialize:
                attrs[key] = _DIVISIBLE_BY_16
        elif isinstance(value, bool):
            signature[param.name] = "u1"
        elif isinstance(value, float):
            signature[param.name] = "fp32"
        else:
            raise TypeError(f"{fn.__name__}: cannot pass {type(value).__name__} as argument {param.name!r}")
    return signature, constants, attrs


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_type(value: int) -> str:
    """The narrowest of Triton's runtime integer types holding ``value``."""
    if -(2**31) <= value < 2**31:
        return "i32"
    if -(2**63) <= value < 2**63:
        return "i64"
    if 0 <= value < 2**64:
        return "u64"
    raise ValueError(f"integer argument {value} does not fit in 64 bits")
