"""Compile a kernel ``Launch`` for an NVIDIA GPU target on a machine without one.

The interpreter runs kernels on CPU tensors but accepts programs that no GPU compiler would:
``tl.dot`` tiles under 16 along the reduction, pipelines whose shared memory exceeds the device
limit. ``compile_launch`` runs Triton's real compiler, down to a cubin through the ``ptxas``
shipped in the triton wheel, so CPU-only tests catch those failures, and reports what the
kernel costs on the target: registers per thread, spills, shared memory, and whether its dots
became Hopper ``wgmma`` instructions; on request also the compiled code itself (TTGIR, PTX and
SASS, the latter from the wheel's ``cuobjdump``), for reading or analysing it.

Compiling happens in a helper process started without ``TRITON_INTERPRET``: there the kernels
are ordinary ``JITFunction``s, and the interpreter's state in this process (it leaves
``triton.language.core`` patched after kernels that call jit helpers) is neither a problem
for the compiler nor touched by it.
"""

from __future__ import annotations

import atexit
import importlib
import inspect
import os
import pickle
import re
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
import triton
from triton._utils import find_paths_if, get_iterable_path
from triton.backends.compiler import BaseBackend, GPUTarget
from triton.compiler import ASTSource, CompiledKernel
from triton.runtime.jit import JITFunction, native_specialize_impl
from triton.tools.tensor_descriptor import TensorDescriptor

from .common import Launch

# Largest dynamic shared memory one block may opt into, in bytes, per compute capability.
SHARED_MEMORY_LIMIT: dict[int, int] = {80: 166_912, 86: 101_376, 89: 101_376, 90: 232_448}


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
    assembly: KernelAssembly | None = None


@dataclass(frozen=True)
class KernelAssembly:
    """The compiled code of one kernel: Triton's GPU dialect, the PTX, and the SASS ``cuobjdump`` prints."""

    ttgir: str
    ptx: str
    sass: str


class GPUCompileError(RuntimeError):
    """The kernel does not compile for the target; the message has the compiler's error and output."""


def compile_launch(launch: Launch, arch: int = 90, assembly: bool = False) -> CompiledKernelInfo:
    """Compile ``launch`` for ``sm_{arch}`` as launching it on that GPU would, and describe the result
    (with its TTGIR, PTX and SASS if ``assembly``).

    The kernel must be a module-level jit function (possibly autotuned or interpreted); it is
    compiled from its module as imported afresh. Raises ``GPUCompileError`` if it does not compile.
    A request identical to an earlier one in this process is answered from memory.
    """
    answer = _SERVER.ask(_Request.of(launch, arch, assembly))
    if isinstance(answer, str):
        raise GPUCompileError(answer)
    return answer


@dataclass(frozen=True)
class _TensorArg:
    """What compiling needs of a tensor argument, standing in for it in Triton's specialisation:
    its element type and its address modulo 16 (whether the address is 16-aligned)."""

    dtype: torch.dtype
    address_mod_16: int

    @staticmethod
    def of(t: torch.Tensor) -> _TensorArg:
        return _TensorArg(t.dtype, t.data_ptr() % 16)

    def data_ptr(self) -> int:
        return self.address_mod_16


@dataclass(frozen=True)
class _DescriptorArg:
    """A host-side tensor descriptor as compiling needs it: the type Triton's launcher gives it
    (element type and block shape, e.g. ``tensordesc<bf16[1, 8, 64]>``), worked out where the
    descriptor exists."""

    type: str

    @staticmethod
    def of(descriptor: TensorDescriptor) -> _DescriptorArg:
        return _DescriptorArg(native_specialize_impl(BaseBackend, descriptor, False, True, True)[0])


def _compile_arg(arg: Any) -> Any:
    """A launch argument as the compile request carries it: tensors and descriptors described."""
    if isinstance(arg, torch.Tensor):
        return _TensorArg.of(arg)
    if isinstance(arg, TensorDescriptor):
        return _DescriptorArg.of(arg)
    return arg


@dataclass(frozen=True)
class _Request:
    module: str
    qualname: str
    args: dict[str, Any]
    constexprs: dict[str, Any]
    num_warps: int
    num_stages: int
    arch: int
    assembly: bool

    @staticmethod
    def of(launch: Launch, arch: int, assembly: bool) -> _Request:
        fn = launch.kernel
        while not inspect.isfunction(fn):  # JITFunction, InterpretedFunction, Autotuner, Heuristics
            fn = fn.fn
        return _Request(
            module=fn.__module__,
            qualname=fn.__qualname__,
            args={name: _compile_arg(a) for name, a in launch.args.items()},
            constexprs=launch.constexprs,
            num_warps=launch.num_warps,
            num_stages=launch.num_stages,
            arch=arch,
            assembly=assembly,
        )


class _Server:
    """The helper process, started on first use, answering one request at a time."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        # Answers by pickled request: compiling is slow, and reports compile the same launch often.
        self._answers: dict[bytes, CompiledKernelInfo | str] = {}

    def ask(self, request: _Request) -> CompiledKernelInfo | str:
        # Pickled twice: the helper reads whole messages even when it cannot unpickle the request.
        message = pickle.dumps(request)
        with self._lock:
            if message not in self._answers:
                self._answers[message] = self._exchange(message)
            return self._answers[message]

    def _exchange(self, message: bytes) -> CompiledKernelInfo | str:
        if self._process is None:
            self._process = self._start()
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        try:
            pickle.dump(message, process.stdin)
            process.stdin.flush()
            return pickle.load(process.stdout)
        except (BrokenPipeError, EOFError):
            self._process = None
            raise GPUCompileError(f"the compile process exited with code {process.wait()}") from None
        except BaseException:
            # Interrupted mid-exchange: the pipe is out of step, start afresh next time.
            self._process = None
            process.kill()
            process.wait()
            raise

    def stop(self) -> None:
        with self._lock:
            if self._process is not None:
                assert self._process.stdin is not None
                self._process.stdin.close()
                self._process.wait()
                self._process = None

    @staticmethod
    def _start() -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        # Always compile: a cached kernel skips ptxas, whose log is the only source of register counts.
        env.update(TRITON_ALWAYS_COMPILE="1", TRITON_DUMP_PTXAS_LOG="1")
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        command = [sys.executable, "-c", f"from {__name__} import _serve; _serve()"]
        return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)


_SERVER = _Server()
atexit.register(_SERVER.stop)


def _serve() -> None:
    """The helper process: answer requests from stdin on stdout until stdin closes.

    The compiler's own output (the ptxas log, diagnostics) goes to a scratch file instead, read
    back after each request.
    """
    answers = os.fdopen(os.dup(1), "wb")
    with tempfile.TemporaryFile(buffering=0) as output:
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
        while True:
            try:
                message = pickle.load(sys.stdin.buffer)
            except EOFError:
                return
            start = output.seek(0, os.SEEK_END)
            answer = _answer(message, output, start)
            pickle.dump(answer, answers)
            answers.flush()


def _answer(message: bytes, output: IO[bytes], start: int) -> CompiledKernelInfo | str:
    """Compile the pickled request: the kernel's description, or the error and compiler output."""
    try:
        request: _Request = pickle.loads(message)
        kernel = _compile(request)
        error = None
    except Exception as e:
        error = f"{type(e).__name__}: {e}"
    sys.stdout.flush()
    sys.stderr.flush()
    output.seek(start)
    log = output.read().decode(errors="replace")
    if error is not None:
        return f"{error}\n{log}".rstrip()
    registers = re.search(r"Used (\d+) registers", log)
    if registers is None:
        return f"no register count in the ptxas log:\n{log}"
    return CompiledKernelInfo(
        name=kernel.metadata.name,
        arch=request.arch,
        num_warps=kernel.metadata.num_warps,
        num_stages=kernel.metadata.num_stages,
        registers=int(registers.group(1)),
        spill_bytes=sum(int(n) for n in re.findall(r"(\d+) bytes spill stores", log)),
        shared_bytes=kernel.metadata.shared,
        uses_wgmma="wgmma.mma_async" in kernel.asm["ptx"],
        assembly=_assembly(kernel) if request.assembly else None,
    )


def _assembly(kernel: CompiledKernel) -> KernelAssembly:
    """The kernel's TTGIR and PTX, and its SASS with addresses (branch targets are addresses too)."""
    cuobjdump = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(kernel.asm["cubin"])
        cubin.flush()
        sass = subprocess.run([cuobjdump, "-sass", cubin.name], capture_output=True, text=True, check=True).stdout
    return KernelAssembly(ttgir=kernel.asm["ttgir"], ptx=kernel.asm["ptx"], sass=sass)


def _compile(request: _Request) -> CompiledKernel:
    fn: Any = importlib.import_module(request.module)
    for name in request.qualname.split("."):
        fn = getattr(fn, name)
    while not isinstance(fn, JITFunction):  # unwrap autotuners and heuristics
        fn = fn.fn
    signature, constants, attrs = _specialize(fn, request)
    source = ASTSource(fn, signature, constants, attrs)
    options = {"num_warps": request.num_warps, "num_stages": request.num_stages}
    return triton.compile(source, target=GPUTarget("cuda", request.arch, 32), options=options)


def _specialize(
    fn: JITFunction, request: _Request
) -> tuple[dict[str, Any], dict[tuple[int, ...], Any], dict[tuple[int, ...], list[list[Any]]]]:
    """Signature, constants and attributes of ``request``'s arguments as Triton's launcher derives them.

    Each argument goes through the launcher's own ``native_specialize_impl``: pointers get their
    element type and ints i32/i64/u64 by magnitude; unless a parameter opts out
    (``do_not_specialize``), an int equal to 1 becomes a constant, and ints divisible by 16 and
    pointers to addresses divisible by 16 carry that as a hint to the compiler. A tuple argument's
    signature is the tuple of its elements' types; its constants and hints are keyed by the path
    (parameter index, element index). A tensor descriptor's type was derived when the request was made.
    """
    bound = inspect.signature(fn.fn).bind(**request.args, **request.constexprs)
    bound.apply_defaults()
    values = list(bound.arguments.values())
    specialization = []
    for param, value in zip(fn.params, values):
        if param.annotation_type:
            raise TypeError(f"{fn.__name__}: typed parameter {param.name!r} is not supported")
        if param.is_constexpr:
            specialization.append(("constexpr", value))
        elif isinstance(value, _DescriptorArg):
            specialization.append((value.type, None))
        else:
            specialize, align = not param.do_not_specialize, not param.do_not_specialize_on_alignment
            specialization.append(native_specialize_impl(BaseBackend, value, param.is_const, specialize, align))
    types = [kind for kind, _ in specialization]
    signature = {param.name: kind for param, kind in zip(fn.params, types)}
    constants = {path: get_iterable_path(values, path) for path in find_paths_if(types, lambda _, t: t == "constexpr")}
    hints = ["" if kind == "constexpr" else hint for kind, hint in specialization]
    attrs = {
        path: BaseBackend.parse_attr(get_iterable_path(hints, path))
        for path in find_paths_if(hints, lambda _, hint: isinstance(hint, str))
    }
    return signature, constants, attrs
