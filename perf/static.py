"""``triton-conv bench --static``: the speed proxy, read from the code compiled for sm_90, no GPU needed.

For each suite shape and pass, in a dtype and a layout, the launches the ops would make on an
H100/H200 are planned with meta tensors (``recording_launches``: the dispatch, the heuristic tile
and the grid exactly as on the GPU, since this process does not run the interpreter) and
compiled for sm_90 by Triton's real compiler (``gpu_compile.compile_launch``). Each kernel is
reported with:

- registers per thread, spill bytes, shared memory, and whether its dots became wgmma;
- whether its dot loop is software-pipelined (``compiled_code.dot_loop``): ``across taps`` (one
  loop with asynchronous loads, or loads into registers for its next iteration, in flight while
  it multiplies, and wgmma left in flight), ``per tap`` (pipelined, but inside the loop over
  taps, so drained at every tap), or ``no``;
- the hot loop (``compiled_code.hot_loop``): SASS instructions per K step and the tensor-core
  share of them, or for FMA kernels instructions per FMA (over the unrolled span,
  ``unrolled_per_fma``, where the compiler left no loop);
- an issue-bound time: the instructions the whole launch executes over the rate at which an
  H200 can issue them, next to the roofline time of the pass;
- for kernels whose hot loop multiplies on the matrix unit, its time (``matrix_us``): the
  multiply-adds the launch's dots issue, tiles as launched (masked rows, a band's zeros), at
  the unit's dense peak;
- the shared-memory time (``shared_us``): the loads and stores of shared memory of the hot
  loop's iterations, and of the rest of the kernel once per program (those of loops around the
  hot one too)
  (``compiled_code.shared_wavefronts``, bank conflicts not counted, so a lower bound) at one
  128-byte wavefront per clock per SM. A kernel takes at least the largest of the three; and
  a problem where the hot loop reads shared memory 1 or 2 bytes at a time (a dot operand that
  ``LDSM`` cannot load, whose threads often share banks: "2-byte shared loads").

Issue-bound estimate, per program (every warp of a program runs the same instruction stream):
``executed = S * hot + T * enclosing + rest``, where ``hot`` is the hot loop's static length,
``S`` its iterations per program, ``enclosing`` the instructions of the loops around it that are
outside it (the loop over filter taps), ``T`` their iterations, and ``rest`` every other
instruction, counted once (prologue, epilogue, loops not around the hot loop: a lower bound).
S is the K steps of the GEMM each program owns (GEMM kernels: the reduction over taps and
channel blocks, or pixels for the weight gradient), or for FMA kernels the pass's multiply-adds
per program over those one iteration does (every lane busy). T is the filter taps a program
visits (forward; input gradient: taps per stride phase). The launch executes
``executed * warps * programs`` instructions; one H200 issues at most 132 SMs x 4 schedulers x
1 instruction per clock x 1.98 GHz. Instructions per K step = ``(S * hot + T * enclosing) / S``.
A kernel that only redoes what another launch flagged (``is_gated``) is counted as finite data
runs it: each program up to its early return.

The reference row of each GEMM pass is Triton's matmul tutorial kernel (``reference_matmul``)
compiled with the same tile (at least 4 warps, one warpgroup, as wgmma needs) for the same GEMM (per group: M x N, reduction K, as ``gemm_of``
defines them); ``ratio`` is our instructions per K step over its.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import triton

from triton_conv.kernels import dispatch
from triton_conv.kernels.banded import (
    banded_forward_kernel,
    banded_forward_recompute_kernel,
    banded_weight_grad_kernel,
    banded_weight_grad_recompute_kernel,
)
from triton_conv.kernels.common import INTERPRETER, Launch, recording_launches
from triton_conv.kernels.dispatch import KERNEL_KINDS
from triton_conv.kernels.gpu_compile import SHARED_MEMORY_LIMIT, CompiledKernelInfo, GPUCompileError, compile_launch
from triton_conv.kernels.patches import patch_forward_kernel, patch_weight_grad_kernel
from triton_conv.kernels.planes import plane_forward_kernel
from triton_conv.spec import ConvSpec, channels_last_format, output_memory_format
from triton_conv.testing import in_layout
from triton_conv.tuning.configs import KernelConfig, candidate_configs
from triton_conv.tuning.kinds import KernelKind

from .compiled_code import (
    HotLoop,
    dot_loop,
    hot_loop,
    parse_sass,
    shared_wavefronts,
    unrolled_per_fma,
    until_first_exit,
)
from .reference_matmul import plan_reference_matmul
from .report import number_cell
from .suite import DTYPES, LAYOUTS, SHAPES_BY_NUMBER, SuiteShape, pass_bytes, pass_flops

ARCH = 90
# What the estimate assumes of the GPU: an H200 (H100 SXM: same SMs and clock, 3.35 TB/s).
SMS = 132
SCHEDULERS_PER_SM = 4
CLOCK_HZ = 1.98e9
DENSE_16BIT_FLOPS = 989e12
# The matrix unit's dense peak by operand size: 16-bit types, and float32 as TF32 at half rate.
MATRIX_FLOPS_BY_ITEMSIZE = {2: DENSE_16BIT_FLOPS, 4: DENSE_16BIT_FLOPS / 2}
BANDWIDTH_BYTES = 4.8e12
STATIC_PASSES = ("F", "D", "W")


@dataclass(frozen=True)
class StaticCase:
    """One suite shape and pass, in a dtype and a layout."""

    shape: SuiteShape
    pass_: str
    dtype: str
    layout: str

    @property
    def label(self) -> str:
        return f"{self.shape.number} {self.shape.name} {self.pass_} {self.dtype} {self.layout}"


@dataclass(frozen=True)
class GEMM:
    """The GEMM a pass computes per group: (m x k) @ (k x n), ``groups`` times."""

    m: int
    n: int
    k: int
    groups: int


def pass_kind(pass_: str) -> KernelKind:
    """The GEMM kernel kind computing ``pass_`` (the first registered, where several do)."""
    return next(kind for kind in KERNEL_KINDS if kind.pass_ == pass_)


def gemm_of(spec: ConvSpec, pass_: str) -> GEMM:
    """The pass's kind's ``dense_gemm``: F: output pixels x K/groups over C/groups x taps; D: input
    pixels x C/groups over K/groups x taps; W: K/groups x C/groups x taps over output pixels."""
    return GEMM(*pass_kind(pass_).dense_gemm(spec), spec.groups)


@dataclass(frozen=True)
class Plan:
    """A case's launches, and the geometry its GEMM kernels see: patch embeddings and first layers
    fold in the forward, a first layer's weight gradient reads a padded copy, and grouped ones of
    a few channels per group may bundle groups (``dispatch.group_bundle``)."""

    launches: list[Launch]
    spec: ConvSpec


def plan_case(case: StaticCase) -> Plan:
    """The launches the ops make for ``case`` on a GPU, planned on meta tensors (nothing runs).

    Allocates what the custom ops allocate (the output in torch's memory format, the input
    gradient in the output's, a contiguous weight gradient, no bias) and lets ``dispatch`` plan.
    """
    if INTERPRETER:
        raise RuntimeError(
            "plan static cases in a process without TRITON_INTERPRET=1: the interpreter plans its own tiles"
        )
    shape, dtype = case.shape, DTYPES[case.dtype].dtype
    spec = shape.geometry()
    x = in_layout(torch.empty(shape.input_shape(), dtype=dtype, device="meta"), case.layout)
    w = in_layout(torch.empty(shape.weight_shape(), dtype=dtype, device="meta"), case.layout)
    fmt = output_memory_format(x, w)
    y = torch.empty(spec.out_shape, dtype=dtype, device="meta", memory_format=fmt)
    with recording_launches() as launches:
        if case.pass_ == "F":
            dispatch.forward(x, w, None, spec, y)
        elif case.pass_ == "D":
            dx_format = channels_last_format(x.dim()) if fmt != torch.contiguous_format else torch.contiguous_format
            dispatch.input_grad(y, w, spec, torch.empty(x.shape, dtype=dtype, device="meta", memory_format=dx_format))
        else:
            dispatch.weight_grad(y, x, spec, torch.empty(w.shape, dtype=dtype, device="meta"), None)
    if case.pass_ == "F":
        return Plan(launches, dispatch.forward_spec(x, spec))
    if case.pass_ == "D":
        return Plan(launches, dispatch.bundled_spec(spec, dispatch.input_grad_bundle(spec, dtype)))
    return Plan(launches, dispatch.weight_grad_spec(spec, dtype))


def kernel_name(launch: Launch) -> str:
    fn = launch.kernel
    while not inspect.isfunction(fn):  # JITFunction, InterpretedFunction, Autotuner, Heuristics
        fn = fn.fn
    return fn.__name__


def launch_config(launch: Launch) -> dict[str, object]:
    """The launch's tile and options: its block-size constexprs, warps, stages."""
    blocks = {k: v for k, v in launch.constexprs.items() if k.startswith("BLOCK")}
    return {**blocks, "num_warps": launch.num_warps, "num_stages": launch.num_stages}


@dataclass(frozen=True)
class Steps:
    """Iterations per program: S of the hot loop, T of the loops around it (see the module
    docstring), and the steps a program takes outside the hot loop, whose code the rest of the
    kernel holds (the patch kernels prefetch each step's operands and take the last product
    after the loop)."""

    hot: float
    enclosing: float
    peeled: float = 0


def gemm_steps(case: StaticCase, spec: ConvSpec, launch: Launch) -> Steps:
    """K steps per program of an implicit-GEMM launch on ``spec``, from the pass's GEMM and the launch's tile."""
    block_m, block_n, block_k = (launch.constexprs[k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    if case.pass_ == "F":
        return Steps(spec.taps * triton.cdiv(spec.in_channels_per_group, block_k), spec.taps)
    if case.pass_ == "D":
        taps_per_phase = spec.taps / math.prod(spec.stride)
        return Steps(taps_per_phase * triton.cdiv(spec.out_channels_per_group, block_k), taps_per_phase)
    gemm = gemm_of(spec, "W")
    tiles = triton.cdiv(gemm.m, block_m) * triton.cdiv(gemm.n, block_n) * gemm.groups
    return Steps(triton.cdiv(gemm.k, block_k) * tiles / math.prod(launch.grid), 1)


def fma_steps(case: StaticCase, launch: Launch, loop: HotLoop) -> Steps:
    """Hot-loop iterations per program of an FMA kernel: its share of the pass's multiply-adds."""
    macs_per_program = pass_flops(case.shape, case.pass_) / 2 / math.prod(launch.grid)
    macs_per_iteration = loop.fma_lanes * 32 * launch.num_warps
    taps = case.shape.geometry().taps if case.pass_ != "W" else 1
    return Steps(macs_per_program / macs_per_iteration, taps)


@dataclass
class KernelRow:
    """One compiled kernel of a case (``reference`` for the matmul tutorial's), or its error."""

    case: StaticCase
    kernel: str
    config: dict[str, object]
    grid: tuple[int, ...]
    reference: bool = False
    registers: int | None = None
    spill_bytes: int | None = None
    shared_bytes: int | None = None
    uses_wgmma: bool | None = None
    pipelined: str = "n/a"
    hot_body: int | None = None
    per_k_step: float | None = None
    tensor_core_share: float | None = None
    per_fma: float | None = None
    executed: float | None = None
    issue_us: float | None = None
    matrix_us: float | None = None
    shared_us: float | None = None
    narrow_shared_loads: int = 0
    ratio_to_reference: float | None = None
    error: str = ""
    assembly: dict[str, str] = dataclasses.field(default_factory=dict, repr=False)

    def index_entry(self) -> dict[str, object]:
        """The row as the JSON index of ``--dump`` holds it."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("case", "assembly")}
        case = {"shape": self.case.shape.number, "name": self.case.shape.name, "pass": self.case.pass_,
                "dtype": self.case.dtype, "layout": self.case.layout}  # fmt: skip
        return {**case, **fields, "grid": list(self.grid), "roofline_us": roofline_us(self.case)}


def analyse(case: StaticCase, spec: ConvSpec, launch: Launch, info: CompiledKernelInfo, reference: bool) -> KernelRow:
    """Everything the report says about one compiled launch (see the module docstring)."""
    assert info.assembly is not None
    row = KernelRow(
        case, kernel_name(launch), launch_config(launch), launch.grid, reference,
        info.registers, info.spill_bytes, info.shared_bytes, info.uses_wgmma,
        assembly={"ttgir": info.assembly.ttgir, "ptx": info.assembly.ptx, "sass": info.assembly.sass},
    )  # fmt: skip
    loop_in_ttgir = dot_loop(info.assembly.ttgir)
    row.pipelined = loop_in_ttgir.verdict if loop_in_ttgir else "n/a"
    instructions = parse_sass(info.assembly.sass)
    loop = hot_loop(instructions)
    programs = math.prod(launch.grid)
    # Shared-memory wavefronts outside the hot loop, counted once per program (a prologue
    # staging an operand, an epilogue's layout change; a lower bound where a loop around the hot
    # one repeats some).
    shared = sum(shared_wavefronts(i) for i in instructions) - (loop.shared_wavefronts if loop else 0)
    if is_gated(launch):  # finite data: every program reads its flag and returns
        row.executed = float(until_first_exit(instructions) * launch.num_warps * programs)
    elif loop is None:  # no multiply in a loop (an elementwise or fully unrolled kernel): every instruction once
        row.executed = float(len(instructions) * launch.num_warps * programs)
        row.per_fma = unrolled_per_fma(instructions)
        row.shared_us = shared * launch.num_warps * programs / (SMS * CLOCK_HZ) * 1e6
    else:
        if loop.mma and reference:
            steps = reference_steps(launch)
        elif loop.mma and is_band(launch):
            steps = band_steps(launch)
        elif loop.mma:
            steps = gemm_steps(case, spec, launch)
        else:
            steps = fma_steps(case, launch, loop)
        looped = steps.hot * loop.body + steps.enclosing * loop.enclosing_body
        rest = len(instructions) - loop.body - loop.enclosing_body
        row.hot_body = loop.body
        row.per_k_step = looped / steps.hot if steps.hot else None
        row.tensor_core_share = loop.tensor_core_share if loop.mma else None
        if is_band(launch) and row.per_k_step:
            # Per 32 of the useful multiply-adds (a warp's FMA), the band's zeros not counted.
            useful_per_step = pass_flops(case.shape, case.pass_) / 2 / programs / (steps.hot + steps.peeled)
            row.per_fma = row.per_k_step * launch.num_warps / (useful_per_step / 32)
        elif row.per_k_step and loop.fma_lanes and not loop.mma:
            row.per_fma = row.per_k_step / loop.fma_lanes
        row.executed = (looped + rest) * launch.num_warps * programs
        if loop.mma:
            row.matrix_us = matrix_us(case, launch, (steps.hot + steps.peeled) * programs)
        shared += loop.shared_wavefronts * steps.hot
        row.shared_us = shared * launch.num_warps * programs / (SMS * CLOCK_HZ) * 1e6
        row.narrow_shared_loads = loop.narrow_shared_loads
    if row.matrix_us is None and is_band(launch):  # a hot loop the parser did not find
        steps = band_steps(launch)
        row.matrix_us = matrix_us(case, launch, (steps.hot + steps.peeled) * programs)
    row.issue_us = row.executed / (SMS * SCHEDULERS_PER_SM * CLOCK_HZ) * 1e6
    return row


# Kernels that redo what another launch flagged, and for finite data only read their flag.
GATED_KERNELS = tuple(
    kernel_name(Launch(k, (), {})) for k in (banded_forward_recompute_kernel, banded_weight_grad_recompute_kernel)
)


def is_gated(launch: Launch) -> bool:
    """Whether ``launch`` only redoes what another launch flagged: a ``GATED_KERNELS`` kernel, or
    a direct kernel gated behind the GEMM of bundled groups (``GATED``)."""
    return kernel_name(launch) in GATED_KERNELS or bool(launch.constexprs.get("GATED"))


BAND_KERNELS = tuple(
    kernel_name(Launch(k, (), {}))
    for k in (
        banded_forward_kernel,
        banded_weight_grad_kernel,
        patch_forward_kernel,
        patch_weight_grad_kernel,
        plane_forward_kernel,
    )
)


def is_band(launch: Launch) -> bool:
    """Whether ``launch`` runs a band-matrix depthwise kernel (``kernels/banded.py``,
    ``kernels/patches.py``, ``kernels/planes.py``)."""
    return kernel_name(launch) in BAND_KERNELS


def band_steps(launch: Launch) -> Steps:
    """Steps per program of a band kernel: the patch forward's, its STEPS over an input patch, the
    last after the loop; the patch weight gradient's, one per image (or group of images, for the
    last patch block) it walks, the last after the loop; the band forward's, one per
    filter row and BLOCK_J-deep chunk; the band weight gradient's, one per walk position of its
    split (all lines of its block); the plane kernel's, one per image block it takes."""
    if "IMAGE_BLOCKS" in launch.args:
        return Steps(launch.args["IMAGE_BLOCKS"] / launch.grid[1], 1)
    if "IMAGES_PER_SPLIT" in launch.args:
        blocks = launch.args["PATCH_BLOCKS"]
        images = launch.args["N"] / (launch.grid[2] // blocks)
        # The last patch block takes BLOCK_M // TAIL_PATCHES images a step.
        tail_steps = math.ceil(images / (launch.constexprs["BLOCK_M"] // launch.args["TAIL_PATCHES"]))
        return Steps(((blocks - 1) * images + tail_steps) / blocks - 1, 1, peeled=1)
    if "STEPS" in launch.args:
        return Steps(launch.args["STEPS"] - 1, 1, peeled=1)
    if "TAP_ROWS" in launch.args:
        return Steps(launch.args["TAP_ROWS"] * launch.constexprs["CHUNKS"], 1)
    walk, split = launch.args["WALK"], launch.args["SPLIT_WALK"]
    return Steps(walk / triton.cdiv(walk, split), 1)


def step_multiply_adds(launch: Launch) -> int:
    """The multiply-adds one K step of a program's dots issues, masked rows and a band's zeros
    included: the patch kernels' channels x patches x patch x step, the band forward's rows x
    segment x chunk, the band weight gradient's segment's columns x segment x lines, a GEMM's tile
    (the plane kernel's: channels x images x planes)."""
    c = launch.constexprs
    if "PATCH_D" in c:
        return c["BLOCK_C"] * c["BLOCK_M"] * c["PATCH_D"] * c["PATCH_H"] * c["PATCH_W"] * c["BLOCK_J"]
    if "BLOCK_J" in c:
        return c["BLOCK_M"] * c["BLOCK_W"] * c["BLOCK_J"]
    if "COLUMNS" in c:
        return c["COLUMNS"] * c["BLOCK_W"] * c["BLOCK_M"]
    return c.get("BLOCK_C", 1) * c["BLOCK_M"] * c["BLOCK_N"] * c["BLOCK_K"]


def matrix_us(case: StaticCase, launch: Launch, steps: float) -> float:
    """The matrix unit's time for ``steps`` K steps (all programs) at its dense peak: a floor
    beside the issue-bound time, which it exceeds where the tiles compute mostly zeros (the band
    kernels' bands, masked rows)."""
    peak = MATRIX_FLOPS_BY_ITEMSIZE[DTYPES[case.dtype].dtype.itemsize]
    return 2 * step_multiply_adds(launch) * steps / peak * 1e6


def reference_steps(launch: Launch) -> Steps:
    k = launch.args["K"]
    return Steps(triton.cdiv(k, launch.constexprs["BLOCK_K"]), 1)


def roofline_us(case: StaticCase) -> float:
    """max(FLOPs / dense 16-bit peak, minimal bytes / bandwidth), on an H200's data-sheet peaks."""
    itemsize = DTYPES[case.dtype].dtype.itemsize
    flops = pass_flops(case.shape, case.pass_)
    nbytes = pass_bytes(case.shape, case.pass_, itemsize)
    return max(flops / DENSE_16BIT_FLOPS, nbytes / BANDWIDTH_BYTES) * 1e6


def case_rows(case: StaticCase) -> list[KernelRow]:
    """Our kernels of ``case``, then (for a pass on the GEMM kernels) the reference matmul's."""
    rows = []
    try:
        plan = plan_case(case)
    except Exception as e:  # a case that cannot be planned must not end the report
        return [KernelRow(case, "(planning)", {}, (), error=f"{type(e).__name__}: {e}")]
    for launch in plan.launches:
        rows.append(_compiled_row(case, plan.spec, launch, reference=False))
    gemm_rows = [r for r in rows if "BLOCK_K" in r.config and r.kernel not in BAND_KERNELS and not r.error]
    if gemm_rows:
        config = gemm_rows[0].config
        # The GEMM solved over bundles of groups, or for the weight gradient over a first layer's
        # padded copy; else the convolution's (the forward's fold changes its shape only).
        convolution = case.shape.geometry()
        solved = case.pass_ == "W" or plan.spec.groups != convolution.groups
        gemm = gemm_of(plan.spec if solved else convolution, case.pass_)
        tile = (int(config["BLOCK_M"]), int(config["BLOCK_N"]), int(config["BLOCK_K"]))
        # At least a warpgroup: the reference is what good code for the tile looks like, on wgmma.
        warps = max(int(config["num_warps"]), 4)
        reference = plan_reference_matmul(
            gemm.m, gemm.n, gemm.k, DTYPES[case.dtype].dtype, tile, warps, int(config["num_stages"])
        )
        reference = dataclasses.replace(reference, grid=(*reference.grid, gemm.groups))
        ref_row = _compiled_row(case, plan.spec, reference, reference=True)
        ours = gemm_rows[0]
        if ours.per_k_step and ref_row.per_k_step:
            ours.ratio_to_reference = ours.per_k_step / ref_row.per_k_step
        rows.append(ref_row)
    return rows


def _compiled_row(case: StaticCase, spec: ConvSpec, launch: Launch, reference: bool) -> KernelRow:
    try:
        info = compile_launch(launch, ARCH, assembly=True)
    except GPUCompileError as e:
        return KernelRow(case, kernel_name(launch), launch_config(launch), launch.grid, reference, error=str(e))
    return analyse(case, spec, launch, info, reference)


def static_cases(
    shape_numbers: list[int], passes: list[str], dtypes: list[str], layouts: list[str] | None = None
) -> list[StaticCase]:
    """Every (shape, pass, dtype, layout) the filters leave, passes limited to those the shape lists."""
    return [
        StaticCase(SHAPES_BY_NUMBER[number], pass_, dtype, layout)
        for number in shape_numbers
        for pass_ in SHAPES_BY_NUMBER[number].passes
        if pass_ in passes
        for dtype in dtypes
        for layout in layouts or LAYOUTS
    ]


def compile_problems(spill_bytes: int, shared_bytes: int, uses_wgmma: bool, sixteen_bit_dot: bool) -> list[str]:
    """What would hurt on the GPU: spills, shared memory over the limit, no wgmma for a 16-bit dot."""
    found = []
    if spill_bytes:
        found.append("spills")
    if shared_bytes > SHARED_MEMORY_LIMIT[ARCH]:
        found.append("shared memory over the limit")
    if sixteen_bit_dot and not uses_wgmma:
        found.append("no wgmma")
    return found


def problems(row: KernelRow) -> list[str]:
    """A compile error, or ``compile_problems`` and a dot loop not pipelined across taps."""
    if row.error:
        return [row.error.splitlines()[0]]
    assert row.spill_bytes is not None and row.shared_bytes is not None and row.uses_wgmma is not None
    sixteen_bit_dot = "BLOCK_K" in row.config and DTYPES[row.case.dtype].dtype.itemsize == 2
    found = compile_problems(row.spill_bytes, row.shared_bytes, row.uses_wgmma, sixteen_bit_dot)
    if row.pipelined in ("no", "per tap"):
        found.append(f"pipelined: {row.pipelined}")
    if row.narrow_shared_loads:
        found.append(f"2-byte shared loads: {row.narrow_shared_loads} per step")
    return found


def static_table(rows: list[KernelRow]) -> str:
    """A Markdown table: one line per kernel, the reference matmul under the kernels of its case."""
    lines = [
        "| # | shape | pass | layout | kernel | tile (M x N x K, warps, stages) | grid | regs | spill B | smem KiB "
        "| wgmma | pipelined | SASS / K step | TC share | SASS / FMA | x ref | issue us | matrix us | shared us "
        "| roofline us | problems |",
        "|---:|---|---|---|---|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        c = r.config
        blocks = " x ".join(str(v) for k, v in c.items() if k.startswith("BLOCK"))
        tile = f"{blocks}, {c['num_warps']}w {c['num_stages']}s" if c else ""
        kernel = f"reference: {r.kernel}" if r.reference else r.kernel
        share = f"{100 * r.tensor_core_share:.1f}%" if r.tensor_core_share is not None else ""
        smem = f"{r.shared_bytes / 1024:.0f}" if r.shared_bytes is not None else ""
        wgmma = "" if r.uses_wgmma is None else ("yes" if r.uses_wgmma else "no")
        ratio = number_cell(r.ratio_to_reference, 2)
        lines.append(
            f"| {r.case.shape.number} | {r.case.shape.name} | {r.case.pass_} | {r.case.layout} | {kernel} | {tile} "
            f"| {'x'.join(map(str, r.grid))} | {number_cell(r.registers, 0)} | {number_cell(r.spill_bytes, 0)} | {smem} | {wgmma} "
            f"| {r.pipelined} | {number_cell(r.per_k_step, 0)} | {share} | {number_cell(r.per_fma, 1)} | {ratio} "
            f"| {number_cell(r.issue_us, 1)} | {number_cell(r.matrix_us, 1)} | {number_cell(r.shared_us, 1)} "
            f"| {number_cell(roofline_us(r.case), 1)} "
            f"| {'; '.join(problems(r)) or 'none'} |"
        )
    return "\n".join(lines)


def write_dump(rows: list[KernelRow], directory: Path) -> Path:
    """Each kernel's TTGIR, PTX and SASS, and ``index.json`` describing them; returns the index's path."""
    directory.mkdir(parents=True, exist_ok=True)
    index = []
    for number, row in enumerate(rows):
        entry = row.index_entry()
        stem = f"{number:03d}_{row.case.shape.number}_{row.case.pass_}_{row.case.layout}_{row.kernel}"
        for ext, text in row.assembly.items():
            (directory / f"{stem}.{ext}").write_text(text)
            entry[ext] = f"{stem}.{ext}"
        index.append(entry)
    path = directory / "index.json"
    path.write_text(json.dumps(index, indent=1))
    return path


# ---------------------------------------------------------------------------------------------
# Every shipped config (``--static-configs``)


@dataclass(frozen=True)
class ConfigRow:
    """One implicit-GEMM kernel x dtype x shipped config compiled for sm_90, or the compiler's error."""

    kernel: str
    dtype: str
    config: KernelConfig
    info: CompiledKernelInfo | None = None
    error: str = ""


def config_launch(kind: KernelKind, config: KernelConfig, dtype_name: str) -> Launch:
    """The launch of ``kind`` with ``config`` for suite shape 2's channels and filter at 8x8, channels-last."""
    dtype = DTYPES[dtype_name]
    shape = dataclasses.replace(SHAPES_BY_NUMBER[2], batch=2, size=(8, 8))
    spec = shape.geometry()
    x = in_layout(torch.empty(shape.input_shape(), dtype=dtype.dtype), "channels_last")
    w = in_layout(torch.empty(shape.weight_shape(), dtype=dtype.dtype), "channels_last")
    y = torch.empty(spec.out_shape, dtype=dtype.dtype, memory_format=output_memory_format(x, w))
    launch = kind.plan(spec, x, w, None, y, config)
    # On a CPU tensor the launchers pick IEEE; TF32 is what CUDA runs when cudnn.allow_tf32 is set.
    precision = "tf32" if dtype.tf32 else "ieee"
    return dataclasses.replace(launch, constexprs={**launch.constexprs, "PRECISION": precision})


def config_rows(passes: list[str], dtype_names: list[str], max_configs: int | None = None) -> list[ConfigRow]:
    """Compile each GEMM kernel of ``passes`` for each dtype and shipped config (the first ``max_configs``)."""
    rows = []
    for kind in (kind for kind in KERNEL_KINDS if kind.pass_ in passes):
        for dtype_name in dtype_names:
            dtype = DTYPES[dtype_name]
            for config in candidate_configs(kind, dtype.dtype, "tf32" if dtype.tf32 else "ieee")[:max_configs]:
                try:
                    info = compile_launch(config_launch(kind, config, dtype_name), ARCH)
                except GPUCompileError as e:
                    rows.append(ConfigRow(kind.name, dtype_name, config, error=str(e).splitlines()[0]))
                    continue
                rows.append(ConfigRow(kind.name, dtype_name, config, info))
    return rows


def config_table(rows: list[ConfigRow]) -> str:
    """A Markdown table: one line per kernel, dtype and config."""
    lines = [
        "| kernel | dtype | BLOCK_M x N x K | warps | stages | split-K | registers | spill bytes "
        f"| shared KiB | wgmma | problems (sm_{ARCH}) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        c = r.config
        head = f"| {r.kernel} | {r.dtype} | {c.block_m} x {c.block_n} x {c.block_k} | {c.num_warps} | {c.num_stages} "
        if r.info is None:
            lines.append(f"{head}| {c.split_k} | | | | | {r.error} |")
            continue
        i = r.info
        found = compile_problems(i.spill_bytes, i.shared_bytes, i.uses_wgmma, DTYPES[r.dtype].dtype.itemsize == 2)
        lines.append(
            f"{head}| {c.split_k} | {i.registers} | {i.spill_bytes} | {i.shared_bytes / 1024:.1f} "
            f"| {'yes' if i.uses_wgmma else 'no'} | {'; '.join(found) or 'none'} |"
        )
    return "\n".join(lines)
