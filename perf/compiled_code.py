"""Reading compiled kernels: the loop structure of SASS and whether TTGIR pipelines the dot loop.

SASS (as ``cuobjdump -sass`` prints it) gives each instruction its address and each branch its
target address; a branch to an earlier address closes a loop. The *hot loop* is the innermost
loop holding the kernel's multiply instructions: tensor-core ``HGMMA``/``HMMA`` if the kernel
has any, otherwise FMAs (the direct kernels). Its static length is what one iteration issues
(branches inside the body taken or not: an upper bound where the body has conditional code).

TTGIR shows what Triton's software pipeliner did: a pipelined dot loop holds asynchronous loads
into shared memory (``async_copy_global_to_local`` or TMA) and waits for its asynchronous
``warp_group_dot`` with ``pendings > 0``, so that loads and multiplies of successive iterations
overlap; a synchronous ``tt.dot`` (``mma.sync``, as batched dots compile even on Hopper) has
nothing to wait for, and its loop is pipelined by asynchronous loads alone, or by loads into
registers that the loop issues for its next iteration (``tt.load`` results it yields: the patch
kernels prefetch so, with Triton's pipeliner off). A dot loop nested in another loop (the
implicit GEMM's loop over filter taps) drains its pipeline at every outer iteration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MMA_OPCODES = ("HGMMA", "HMMA", "IMMA", "DMMA")
# Multiply-adds per lane of one instruction: HFMA2 does two.
FMA_LANES = {"FFMA": 1, "DFMA": 1, "HFMA2": 2}

_SASS_LINE = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
_BRANCH_TARGET = re.compile(r"^\s*(0x[0-9a-f]+)")


@dataclass(frozen=True)
class Instruction:
    address: int
    opcode: str
    operands: str

    @property
    def base(self) -> str:
        """The opcode without modifiers: ``HGMMA.64x128x16.F32.BF16`` -> ``HGMMA``."""
        return self.opcode.split(".")[0]


@dataclass(frozen=True)
class Loop:
    """Instructions from ``start`` to ``end`` (both included), closed by a branch back to ``start``."""

    start: int
    end: int

    def contains(self, other: Loop) -> bool:
        return self.start <= other.start and other.end <= self.end and self != other

    def body(self, instructions: list[Instruction]) -> list[Instruction]:
        return [i for i in instructions if self.start <= i.address <= self.end]


def parse_sass(sass: str) -> list[Instruction]:
    """The instructions of a one-kernel SASS listing, in address order."""
    instructions = []
    for line in sass.splitlines():
        match = _SASS_LINE.match(line)
        if match:
            address, opcode, operands = match.groups()
            instructions.append(Instruction(int(address, 16), opcode, operands.strip()))
    return instructions


def until_first_exit(instructions: list[Instruction]) -> int:
    """Instructions from the start up to the first ``EXIT`` (included): what a program that
    returns early runs (a predicated ``@P0 EXIT``), or the whole listing where none does."""
    for count, i in enumerate(instructions, 1):
        if i.base == "EXIT":
            return count
    return len(instructions)


def sass_loops(instructions: list[Instruction]) -> list[Loop]:
    """Every loop: for each branch target reached from later code, up to the last such branch."""
    ends: dict[int, int] = {}
    for i in instructions:
        if i.base == "BRA":
            target = _BRANCH_TARGET.match(i.operands)
            if target and int(target.group(1), 16) < i.address:
                start = int(target.group(1), 16)
                ends[start] = max(ends.get(start, 0), i.address)
    return [Loop(start, end) for start, end in sorted(ends.items())]


def local_memory_in_loops(instructions: list[Instruction]) -> int:
    """Spill traffic that repeats: local loads and stores (``LDL``, ``STL``) inside any loop. A
    few registers spilled before a loop and reloaded after it cost nothing measurable."""
    in_loops = {i.address for loop in sass_loops(instructions) for i in loop.body(instructions)}
    return sum(1 for i in instructions if i.base in ("LDL", "STL") and i.address in in_loops)


def is_mma(i: Instruction) -> bool:
    return i.base in MMA_OPCODES


def shared_wavefronts(i: Instruction) -> int:
    """The 128-byte shared-memory wavefronts (an SM serves one per clock) that a warp's ``i``
    needs at the least, without bank conflicts: 32 lanes' loads or stores (``LDS``, ``STS``, and
    the shared side of ``LDGSTS``), or an ``LDSM``/``STSM`` of 1, 2 or 4 8x8 matrices. The
    matrix unit's own reads of wgmma operands and TMA's writes are not instructions here."""
    modifiers = i.opcode.split(".")[1:]
    if i.base in ("LDS", "STS", "LDGSTS"):
        return 4 if "128" in modifiers else 2 if "64" in modifiers else 1
    if i.base in ("LDSM", "STSM"):
        return int(modifiers[-1]) if modifiers[-1] in ("2", "4") else 1
    return 0


def narrow_shared_access(i: Instruction, base: str) -> bool:
    """A 1- or 2-byte shared load (``base`` "LDS") or store ("STS"). Loads so are how Triton
    reads a dot operand that ``LDSM`` cannot, element by element from a layout it did not
    swizzle, where threads of a warp often share a bank; stores so fill half a wavefront."""
    return i.base == base and any(m in ("U8", "S8", "U16", "S16") for m in i.opcode.split(".")[1:])


def fma_lanes(i: Instruction) -> int:
    """Multiply-adds per lane of ``i``; none for ``HFMA2.MMA Rd, -RZ, RZ, a, b``, the compiler's
    idiom for moving a constant."""
    if i.operands.split(", ")[1:3] == ["-RZ", "RZ"]:
        return 0
    return FMA_LANES.get(i.base, 0)


@dataclass(frozen=True)
class HotLoop:
    """The innermost loop holding the kernel's multiplies, and the loops around it.

    ``body`` is the static instruction count of one iteration; ``enclosing_body`` that of one
    iteration of the outermost enclosing loop, the hot loop's body excluded (0 without one).
    """

    body: int
    mma: int
    fma_lanes: int
    enclosing_loops: int
    enclosing_body: int
    opcodes: dict[str, int]
    shared_wavefronts: int = 0
    narrow_shared_loads: int = 0
    narrow_shared_stores: int = 0

    @property
    def tensor_core_share(self) -> float:
        return self.mma / self.body


def hot_loop(instructions: list[Instruction]) -> HotLoop | None:
    """The hot loop of a kernel (see the module docstring), or None if no loop multiplies."""
    loops = sass_loops(instructions)
    uses_mma = any(is_mma(i) for i in instructions)

    def multiplies(loop: Loop) -> bool:
        body = loop.body(instructions)
        return any(is_mma(i) for i in body) if uses_mma else any(fma_lanes(i) for i in body)

    candidates = [loop for loop in loops if multiplies(loop)]
    if not candidates:
        return None
    hot = min(candidates, key=lambda loop: loop.end - loop.start)
    body = hot.body(instructions)
    outer = [loop for loop in loops if loop.contains(hot)]
    outermost = max(outer, key=lambda loop: loop.end - loop.start) if outer else None
    opcodes: dict[str, int] = {}
    for i in body:
        opcodes[i.base] = opcodes.get(i.base, 0) + 1
    return HotLoop(
        body=len(body),
        mma=sum(is_mma(i) for i in body),
        fma_lanes=sum(fma_lanes(i) for i in body),
        enclosing_loops=len(outer),
        enclosing_body=len(outermost.body(instructions)) - len(body) if outermost else 0,
        opcodes=dict(sorted(opcodes.items(), key=lambda item: -item[1])),
        shared_wavefronts=sum(shared_wavefronts(i) for i in body),
        narrow_shared_loads=sum(narrow_shared_access(i, "LDS") for i in body),
        narrow_shared_stores=sum(narrow_shared_access(i, "STS") for i in body),
    )


def unrolled_per_fma(instructions: list[Instruction]) -> float | None:
    """For a kernel whose multiplies are in no loop (the compiler unrolled a short loop over
    filter rows): instructions per FMA lane from its first global load to its last FMA, the
    stand-in for a hot loop (it counts any setup and stores scheduled in between, so it errs
    high). None if the kernel has no FMA, uses the matrix unit, or multiplies in a loop."""
    if hot_loop(instructions) is not None or any(is_mma(i) for i in instructions):
        return None
    fma_at = [k for k, i in enumerate(instructions) if fma_lanes(i)]
    loads = [k for k, i in enumerate(instructions) if i.base == "LDG"]
    if not fma_at or not loads:
        return None
    span = instructions[loads[0] : fma_at[-1] + 1]
    return len(span) / sum(fma_lanes(i) for i in span)


# ---------------------------------------------------------------------------------------------
# TTGIR

_ASYNC_LOADS = ("ttg.async_copy_global_to_local", "ttng.async_tma_copy_global_to_local", "tt.descriptor_load")
_DOTS = ("ttng.warp_group_dot ", "tt.dot ", "ttng.warp_group_dot\t")
_LOAD_RESULT = re.compile(r"^\s*(%[\w.#]+) = tt\.load ")
# Ops that only rearrange a tensor: what they make of a load is still the load, in registers.
_REARRANGED = re.compile(r"^\s*(%[\w.#]+) = (?:tt\.trans|tt\.reshape|tt\.join|ttg\.convert_layout) (.*)")
_VALUE = re.compile(r"%[\w.#]+")
_PENDINGS = re.compile(r"ttng\.warp_group_dot_wait .*\{pendings = (\d+)")


@dataclass(frozen=True)
class DotLoop:
    """The innermost ``scf.for`` holding a dot, as the compiler left it.

    ``enclosing_loops``: ``scf.for`` loops around it (the loop over taps, if any).
    ``prefetched``: it loads into registers what its next iteration multiplies (a load, or a
    load transposed, reshaped, joined or converted to another layout).
    """

    async_loads: bool
    overlapped_dots: bool
    enclosing_loops: int
    prefetched: bool = False

    @property
    def pipelined(self) -> bool:
        return (self.async_loads or self.prefetched) and self.overlapped_dots

    @property
    def verdict(self) -> str:
        """``across taps`` (one pipelined loop), ``per tap`` (pipelined but nested), or ``no``."""
        if not self.pipelined:
            return "no"
        return "per tap" if self.enclosing_loops else "across taps"


def dot_loop(ttgir: str) -> DotLoop | None:
    """The innermost loop of ``ttgir`` that holds a dot (None if no loop does)."""
    # Each open scf.for: its brace depth, its nesting level, and what was seen inside it (nested
    # loops included; the deepest loop with a dot is the one that matters).
    open_loops: list[dict[str, Any]] = []
    closed: list[dict[str, Any]] = []
    depth = 0
    for line in ttgir.splitlines():
        for loop in open_loops:
            loop["dot"] = loop["dot"] or any(d in line for d in _DOTS)
            loop["async"] = loop["async"] or any(a in line for a in _ASYNC_LOADS)
            pendings = _PENDINGS.search(line)
            loop["overlap"] = loop["overlap"] or bool(pendings and int(pendings.group(1)) > 0)
            loop["sync_dot"] = loop["sync_dot"] or "tt.dot " in line
        if open_loops:
            innermost_open = open_loops[-1]
            loaded = _LOAD_RESULT.match(line)
            rearranged = _REARRANGED.match(line)
            if loaded:
                innermost_open["loads"].add(loaded.group(1))
            elif rearranged and innermost_open["loads"] & set(_VALUE.findall(rearranged.group(2))):
                innermost_open["loads"].add(rearranged.group(1))
            # The loop's own yield (not an scf.if's inside it) carries the loads to the next iteration.
            own_yield = "scf.yield" in line and depth == innermost_open["depth"]
            if own_yield and innermost_open["loads"] & set(_VALUE.findall(line)):
                innermost_open["prefetch"] = True
        opened = "scf.for" in line and line.rstrip().endswith("{")
        depth += line.count("{") - line.count("}")
        if opened:
            open_loops.append(
                {
                    "depth": depth,
                    "dot": False,
                    "async": False,
                    "overlap": False,
                    "sync_dot": False,
                    "loads": set(),
                    "prefetch": False,
                    "nest": len(open_loops),
                }
            )
        while open_loops and depth < int(open_loops[-1]["depth"]):
            closed.append(open_loops.pop())
    with_dots = [loop for loop in closed if loop["dot"]]
    if not with_dots:
        return None
    innermost = max(with_dots, key=lambda loop: int(loop["nest"]))
    overlapped = bool(innermost["overlap"] or innermost["sync_dot"])
    return DotLoop(bool(innermost["async"]), overlapped, int(innermost["nest"]), bool(innermost["prefetch"]))
