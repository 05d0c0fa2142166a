"""Kernel configurations as data, their pruning per dtype, and the heuristic default.

Each kernel has a list of candidate tiles. ``candidate_configs`` keeps those that fit a dtype
on the GPUs we compile for (registers, shared memory, tensor-core shape); ``heuristic_config``
takes the first candidate and clips it to the problem so that small problems do not run
mostly-masked programs. The heuristic is what runs without tuning, and the only thing that
runs under the interpreter.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from ..runtime import INTERPRETER

if TYPE_CHECKING:
    from ..spec import ConvSpec
    from .kinds import KernelKind

# Every tl.dot needs at least 16 along its reduction when compiled for a GPU.
MIN_DOT = 16
# Hopper's wgmma works on tiles of 64 rows per 4 warps; smaller tiles fall back to mma.
WGMMA_ROWS = 64
# Programs that fill an H100's 132 SMs about twice over: what split-K aims for.
TARGET_PROGRAMS = 264
# What sizing split-K by occupancy assumes of the GPU: an H100 SXM's SMs, the shared memory
# and 32-bit registers of one SM, and the most waves of programs worth splitting for.
SMS = 132
SHARED_MEMORY_PER_SM = 233_472
REGISTERS_PER_SM = 65_536
MAX_WAVES = 4
# Splits shorter than this many blocks spend more on their prologue and partials than they gain.
MIN_BLOCKS_PER_SPLIT = 16
# What a program costs besides its loop (pipeline fill, epilogue, partial store), in loop steps.
PROGRAM_OVERHEAD_BLOCKS = 8
# The float32 partials of all splits (written, then read by the sum) may add at most this
# share of the bytes the weight gradient reads anyway (dy and x): at most double the traffic,
# since splits that keep SMs busy pay for themselves, up to a point.
PARTIAL_TRAFFIC_SHARE = 1.0
# The smaller shared-memory limit of sm_80 (A100) and sm_90 (H100), in bytes per block.
SHARED_MEMORY_BUDGET = 166_912
# Accumulator elements per thread that fit in registers without spilling, measured by compiling
# every shipped tile for sm_90 and sm_80 (tests/test_gpu_compile.py): tensor-core fp16/bf16
# keeps operands in shared memory; fp32 without tensor cores and fp64 hold them in registers,
# BLOCK_K deep for each row and column a thread owns, so 32 fp32 accumulators with a 32- or
# 64-deep K reach sm_80's 255-register cap and spill. TF32 tiles of 64 (128x64x32 and
# 64x128x32, 4 warps, 4 stages) compile without spills in the forward and the input gradient,
# 128-232 registers on sm_90 and sm_80, under Triton 3.6 and 3.9.
ACCUMULATOR_BUDGET = {"tensor_core": 64, "tf32": 64, "fp32_ieee": 16, "fp64": 16}
# Kernel kinds whose tiles hold less or more (same measurement): the TF32 weight gradient's tiles
# of 64 reach 239-255 registers (128x128x32 on 8 warps spilled 12 bytes on sm_90 with Triton 3.9);
# the band forward's 256 x 64 tiles hold 128 (219-240 registers, no spills: a band step loads
# little beside the accumulators).
KIND_ACCUMULATOR_BUDGET = {("weight_grad", "tf32"): 32, ("banded_forward", "tensor_core"): 128}
# The deepest reduction block whose register-held operands fit beside those accumulators: a
# 32-deep float64 input-gradient tile with the transposed-convolution epilogue spilled on sm_80.
REGISTER_OPERAND_DEPTH = {"fp64": 16}


@dataclass(frozen=True)
class KernelConfig:
    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    split_k: int = 1

    def blocks(self) -> dict[str, int]:
        """The tile as the kernels' constexpr arguments."""
        return {"BLOCK_M": self.block_m, "BLOCK_N": self.block_n, "BLOCK_K": self.block_k}

    def accumulators_per_thread(self) -> int:
        return self.block_m * self.block_n // (32 * self.num_warps)


# The tiles each GEMM-shaped kernel may use, best first for large problems.
IMPLICIT_GEMM_CONFIGS: dict[str, list[KernelConfig]] = {
    "forward": [
        KernelConfig(128, 128, 64, 8, 3),
        KernelConfig(128, 64, 32, 4, 4),
        KernelConfig(64, 128, 32, 4, 4),
        KernelConfig(64, 64, 32, 4, 4),
        KernelConfig(128, 32, 32, 4, 4),
        KernelConfig(64, 32, 32, 4, 4),
        KernelConfig(64, 32, 16, 4, 4),
        KernelConfig(32, 32, 16, 2, 3),
    ],
    "input_grad": [
        KernelConfig(128, 128, 64, 8, 3),
        KernelConfig(128, 64, 32, 4, 4),
        KernelConfig(64, 64, 32, 4, 4),
        KernelConfig(64, 32, 32, 4, 4),
        KernelConfig(64, 32, 16, 4, 4),
        KernelConfig(32, 32, 16, 2, 3),
    ],
    # Weight gradient: rows are output channels, columns (tap, input channel) pairs, the
    # reduction pixels. Hopper: two warpgroups of wgmma over 128 rows; reduction blocks of 32,
    # as deeper ones spill on sm_80, whose mma keeps operand fragments in registers.
    "weight_grad": [
        KernelConfig(128, 128, 32, 8, 4),
        KernelConfig(128, 64, 32, 4, 4),
        KernelConfig(64, 128, 32, 4, 4),
        KernelConfig(64, 64, 64, 4, 3),
        # float32 (IEEE) and float64 take this one. 32 deep, float64 spilled on sm_90 (where
        # ptxas kept it to 128 registers); with 3 or 4 stages, bfloat16 spilled on sm_80.
        KernelConfig(64, 32, 16, 4, 2),
        KernelConfig(32, 32, 16, 2, 3),
    ],
}

# The weight-gradient tile for fewer than 64 output channels per group in fp16/bf16 (clipped to
# them): the kernel swaps operands so that up to 256 columns fill one warpgroup's wgmma rows.
SWAPPED_WEIGHT_GRAD_TILE = KernelConfig(32, 256, 64, 4, 3)


# Under Triton's interpreter each program runs after the other in NumPy, so a few large tiles
# run far faster than many small ones, and nothing is compiled, so no GPU limit applies.
INTERPRETER_CONFIGS: dict[str, KernelConfig] = {
    "forward": KernelConfig(1024, 64, 64, 4, 1),
    "input_grad": KernelConfig(1024, 64, 64, 4, 1),
    "weight_grad": KernelConfig(64, 64, 1024, 4, 1),
}

# Set by ``planning_gpu_tiles``: process-wide, as the interpreter's own state is.
_gpu_tiles_under_interpreter = False


def gpu_tiles() -> bool:
    """Whether kernels run the GPU tiles: compiled, or interpreted inside ``planning_gpu_tiles``.
    The one interpreter switch of every config: elsewhere, the interpreter's large tiles."""
    return not INTERPRETER or _gpu_tiles_under_interpreter


@contextlib.contextmanager
def planning_gpu_tiles() -> Iterator[None]:
    """Within, the interpreter plans and runs the GPU tiles (many programs per problem), as tests
    need to check the tiles, grids and splits a GPU gets."""
    global _gpu_tiles_under_interpreter
    outer = _gpu_tiles_under_interpreter
    _gpu_tiles_under_interpreter = True
    try:
        yield
    finally:
        _gpu_tiles_under_interpreter = outer


def operand_class(dtype: torch.dtype, precision: str) -> str:
    """How a dtype multiplies: on tensor cores (fp16/bf16, tf32) or on FMA units (fp32, fp64)."""
    if dtype == torch.float64:
        return "fp64"
    if dtype == torch.float32:
        return "tf32" if precision == "tf32" else "fp32_ieee"
    return "tensor_core"


def fits(config: KernelConfig, dtype: torch.dtype, precision: str, kernel: str | None = None) -> bool:
    """Whether ``config`` compiles for ``dtype`` without spills, within shared memory, using wgmma
    (in kernel kind ``kernel``, where its budget differs)."""
    kind = operand_class(dtype, precision)
    budget = KIND_ACCUMULATOR_BUDGET.get((kernel, kind), ACCUMULATOR_BUDGET[kind])
    shared = (config.block_m + config.block_n) * config.block_k * dtype.itemsize * config.num_stages
    wgmma_shape = kind != "tensor_core" or (config.num_warps >= 4 and config.block_m >= WGMMA_ROWS)
    return (
        config.block_k >= MIN_DOT
        and shared <= SHARED_MEMORY_BUDGET
        and config.accumulators_per_thread() <= budget
        and config.block_k <= REGISTER_OPERAND_DEPTH.get(kind, config.block_k)
        and wgmma_shape
    )


def candidate_configs(kind: KernelKind, dtype: torch.dtype, precision: str) -> list[KernelConfig]:
    """The shipped tiles of ``kind`` that fit ``dtype`` (never empty; all of them where they are
    not GEMM blocks, ``KernelKind.gemm_blocks``)."""
    configs = [c for c in kind.tiles if not kind.gemm_blocks or fits(c, dtype, precision, kind.name)]
    return configs or [kind.tiles[-1]]


def _fit(block: int, extent: int) -> int:
    """The smallest power of two covering ``extent``, between the dot minimum and ``block``."""
    size = MIN_DOT
    while size < extent and size < block:
        size *= 2
    return size


def clip_config(base: KernelConfig, gemm_m: int, gemm_n: int, gemm_k: int) -> KernelConfig:
    """``base`` with each block clipped to a GEMM of ``gemm_m x gemm_n``, reduction ``gemm_k``."""
    block_m = _fit(base.block_m, gemm_m)
    block_n = _fit(base.block_n, gemm_n)
    block_k = _fit(base.block_k, gemm_k)
    # Fewer warps for a clipped tile, keeping at least the base tile's work per thread; but a
    # whole warpgroup while 64 rows remain, which Hopper's wgmma needs (2 warps compile to mma.sync).
    shrink = (base.block_m * base.block_n) // (block_m * block_n)
    fewest = 4 if block_m >= WGMMA_ROWS and base.num_warps >= 4 else 2
    num_warps = max(fewest, base.num_warps // shrink)
    return KernelConfig(block_m, block_n, block_k, num_warps, base.num_stages)


def heuristic_config(
    kind: KernelKind,
    dtype: torch.dtype,
    precision: str,
    gemm_m: int,
    gemm_n: int,
    gemm_k: int,
) -> KernelConfig:
    """The first fitting tile of ``kind`` (its interpreter tile under the interpreter) clipped to a
    GEMM of ``gemm_m x gemm_n``, reduction ``gemm_k``."""
    if not gpu_tiles():
        base = kind.interpreter_tile
        return KernelConfig(
            _fit(base.block_m, gemm_m), _fit(base.block_n, gemm_n), _fit(base.block_k, gemm_k), base.num_warps, 1
        )
    return clip_config(candidate_configs(kind, dtype, precision)[0], gemm_m, gemm_n, gemm_k)


def split_k_for(output_tiles: int, reduction: int, block: int) -> int:
    """How many programs share a reduction of ``reduction`` elements taken ``block`` at a time:
    enough for ``output_tiles`` tiles to fill the GPU, each split at least 16 blocks long.
    Under the interpreter one program per tile is fastest."""
    if not gpu_tiles():
        return 1
    wanted = TARGET_PROGRAMS // max(output_tiles, 1)
    return max(1, min(wanted, reduction // (16 * block)))


def programs_per_sm(config: KernelConfig, itemsize: int) -> int:
    """How many programs of ``config`` one SM holds at once: its shared-memory pipeline and its
    registers (the accumulators plus about 64 per thread of addresses and operands)."""
    shared = (config.block_m + config.block_n) * config.block_k * itemsize * config.num_stages
    registers = 32 * config.num_warps * min(255, config.accumulators_per_thread() + 64)
    return max(1, min(SHARED_MEMORY_PER_SM // shared, REGISTERS_PER_SM // registers))


def occupancy_split_k(
    config: KernelConfig, itemsize: int, output_tiles: int, reduction: int, input_bytes: int, partial_bytes: int
) -> int:
    """Splits of a ``reduction`` (pixels) shared by ``output_tiles`` tiles of ``config``, sized to fill
    the GPU: the count whose programs, in waves of ``programs_per_sm * SMS`` at once, finish
    first (waves x (blocks per split + ``PROGRAM_OVERHEAD_BLOCKS``)), the smallest on a tie.
    At most ``MAX_WAVES`` waves, ``MIN_BLOCKS_PER_SPLIT`` blocks per split, and partials
    (``partial_bytes`` per split, written and read back) within ``PARTIAL_TRAFFIC_SHARE`` of
    ``input_bytes``. Under the interpreter one program per tile is fastest."""
    if not gpu_tiles():
        return 1
    slots = SMS * programs_per_sm(config, itemsize)
    tiles = max(output_tiles, 1)
    blocks = -(-reduction // config.block_k)
    most = min(
        blocks // MIN_BLOCKS_PER_SPLIT,
        -(-MAX_WAVES * slots // tiles),
        int(PARTIAL_TRAFFIC_SHARE * input_bytes) // max(2 * partial_bytes, 1),
    )

    def finish(split: int) -> int:
        return -(-tiles * split // slots) * (-(-blocks // split) + PROGRAM_OVERHEAD_BLOCKS)

    return min(range(1, max(1, most) + 1), key=finish)


# ---------------------------------------------------------------------------------------------
# Direct kernels (depthwise, few channels per group): CUDA-core tiles, no dot.


@dataclass(frozen=True)
class DirectConfig:
    """A direct-kernel tile: ``block_g`` groups of ``pixels`` consecutive pixels along W, by
    ``block_c`` channels.

    One thread holds all ``pixels`` accumulators of a group for its channels, so the input
    columns the group's taps read are loaded once and shared by every tap (a sliding window in
    registers). A filter row is taken ``taps_per_step`` taps at a time: the window a step
    unrolls, and in the weight gradient the taps one program accumulates (a tile each).
    """

    block_g: int
    pixels: int
    block_c: int
    num_warps: int
    taps_per_step: int


# Channels per tile, largest first: the first that divides the channel count wastes no lanes.
DIRECT_BLOCK_C = (64, 32, 16)
# Pixels per thread along W, and taps per step: 8 x 8 accumulators, a step's input columns and
# weights fit in 255 registers (measured by compiling suite shapes 12-16, 20, 31, 32 for sm_90;
# with vectors of channels the forward and input gradient also keep DIRECT_PIXELS_PLUS_TAPS).
DIRECT_PIXELS = 8
DIRECT_TAPS_PER_STEP = 8
# Channels of a group a forward or input-gradient program multiplies each loaded column by (a
# grouped forward's output channels, say; ``kernels/direct.py``): up to this many, each with its
# own accumulators, so the pixels per thread shrink by as much (``direct_config``).
DIRECT_MULTIPLIERS = 4
# The weight gradient holds a step's taps' accumulators, not the pixels': up to 16 pixels per
# thread share each loaded input column among more taps. Compiled for sm_90 (bf16, channels-last),
# no spills, 94-182 registers; issue-bound estimate 14 W 51.0 -> 46.8 us, 15 W 67.1 -> 62.1, 31 W
# 17.8 -> 14.0, 12 W unchanged. (32 pixels spilled on 14.)
DIRECT_WEIGHT_GRAD_PIXELS = 16
# A thread owns one 16-byte vector of channels (of one group, or of whole groups of few channels).
DIRECT_VECTOR_BYTES = 16
DIRECT_NUM_WARPS = 4
# A forward or input-gradient thread holds a step's input columns (pixels + taps - 1 vectors) and
# its taps' weights beside its accumulators, so pixels + taps stay at most this many with
# vectors of channels. Compiled for sm_90 (bf16, channels-last): 8 pixels with 7 taps (suite
# shape 15) spilled, 7 with 7 (shapes 16, 31) and 7 with 5 (14) did not. (With a convolution step
# above 1 a thread holds (pixels - 1) x step + taps columns: the count is the stride-1 one.)
DIRECT_PIXELS_PLUS_TAPS = 14
# Channels-last forward and input-gradient launches doing at least this many multiply-adds read
# the filter from a copy in the accumulator's type (float32; float64 for float64) with the
# kernel's channel slots contiguous (``kernels/direct.tap_major_filter``):
# compiled for sm_90 that saves about 0.27 SASS instructions per FMA (a tap's weights become two
# 16-byte loads instead of 8 scalar loads and conversions), about 2 us of issue time per 250M
# FMAs on an H200, against the copy's launch of a few microseconds (not yet measured).
TAP_MAJOR_FILTER_MIN_FMAS = 300_000_000
# Under the interpreter: few programs, each a large tile; steps of 2 taps, so that the tests'
# small filters take several steps.
DIRECT_INTERPRETER_CONFIG = DirectConfig(block_g=256, pixels=4, block_c=64, num_warps=4, taps_per_step=2)
# What the direct forward's and input gradient's autotuning times (``kernels/direct.DIRECT_FORWARD``,
# ``DIRECT_INPUT_GRAD``), as knobs (``direct_knobs``): the heuristic's 8 pixels and 4 multipliers
# over 64 channels, then fewer pixels (more programs, fewer registers: occupancy), narrower
# channel blocks, fewer multipliers (more programs per group) and 8 warps. All compile for sm_90
# with no spill traffic in their loops on suite shapes 10 and 15 (tests/test_direct.py).
DIRECT_TILES = (
    KernelConfig(8, 64, 4, 4, 1),
    KernelConfig(4, 64, 4, 4, 1),
    KernelConfig(8, 32, 4, 4, 1),
    KernelConfig(8, 64, 2, 4, 1),
    KernelConfig(8, 64, 4, 8, 1),
    KernelConfig(4, 32, 4, 4, 1),
    KernelConfig(8, 16, 4, 4, 1),
    KernelConfig(4, 64, 1, 4, 1),
)

# The weight gradient's (``kernels/direct.DIRECT_WEIGHT_GRAD``): its accumulators are a step's
# taps, not its pixels, so the heuristic's 16 pixels per thread, then 8, narrower channel blocks,
# fewer multipliers and 8 warps. All compile for sm_90 with no spill traffic in their loops on
# suite shapes 10 and 15.
DIRECT_WEIGHT_GRAD_TILES = (
    KernelConfig(16, 64, 4, 4, 1),
    KernelConfig(8, 64, 4, 4, 1),
    KernelConfig(16, 32, 4, 4, 1),
    KernelConfig(16, 64, 2, 4, 1),
    KernelConfig(16, 64, 4, 8, 1),
    KernelConfig(8, 32, 4, 4, 1),
    KernelConfig(16, 16, 4, 4, 1),
    KernelConfig(16, 64, 1, 4, 1),
)


def direct_knobs(
    channels: int, most_pixels: int = DIRECT_PIXELS, most_multipliers: int = DIRECT_MULTIPLIERS
) -> KernelConfig:
    """A direct kernel's tunable knobs as a ``KernelConfig``: ``block_m`` the most pixels per
    thread, ``block_n`` the channel block, ``block_k`` the most multipliers, ``num_warps``; the
    heuristic's for ``channels`` channels: the widest block in DIRECT_BLOCK_C that divides them
    (no masked lanes)."""
    block_c = next((b for b in DIRECT_BLOCK_C if channels % b == 0), DIRECT_BLOCK_C[-1])
    return KernelConfig(most_pixels, block_c, most_multipliers, DIRECT_NUM_WARPS, 1)


def direct_pixels(width: int, most: int) -> int:
    """Pixels per group along a row of ``width``: the largest divisor of it from half of ``most``
    up (no masked lanes), else ``most``."""
    if width <= most:
        return max(width, 1)
    for pixels in range(most, most // 2 - 1, -1):
        if width % pixels == 0:
            return pixels
    return most


def direct_taps_per_step(most: int, taps: int, stride: int, dilation: int) -> int:
    """Taps per step of a filter row of ``taps``: all of them if they fit in ``most``, else the
    most whose span (steps x dilation) is a multiple of ``stride``, so that each step starts at
    the same stride phase (the input gradient's reach pattern stays constexpr)."""
    if taps <= most:
        return taps
    phase = stride // math.gcd(stride, dilation)
    return max(phase, most // phase * phase)


@dataclass(frozen=True)
class BandedConfig:
    """A band-matrix tile (``kernels/banded.py``): ``block_m`` rows of one channel by ``block_w``
    output columns, reducing ``block_j`` input columns per step."""

    block_m: int
    block_w: int
    block_j: int
    num_warps: int
    num_stages: int

    @staticmethod
    def of(tile: KernelConfig) -> BandedConfig:
        """The band tile a tuning tile stands for: its N the segment's columns, its K the step."""
        return BandedConfig(tile.block_m, tile.block_n, tile.block_k, tile.num_warps, tile.num_stages)

    def tile(self) -> KernelConfig:
        """This tile as tuning handles it (``of``'s inverse)."""
        return KernelConfig(self.block_m, self.block_w, self.block_j, self.num_warps, self.num_stages)


# Output columns per row segment, from which the heuristic picks the least wasteful (below).
BANDED_BLOCK_W = (64, 32, 16)
# 256 rows by at most 64 columns on 4 warps (128 float32 accumulators per thread, four wgmma
# row blocks per step): compiled for sm_90, a step's fixed cost (counters, barriers, the wgmma
# issue) over twice the work of 128 rows cut the issue-bound time of suite shapes 14, 15, 31 and
# 32 by 20-30%, with no spills; 8 warps on the same tile do not. The reduction step is the bf16
# wgmma's 16, the finest band the matrix unit takes,
BANDED_CONFIG = BandedConfig(block_m=256, block_w=64, block_j=MIN_DOT, num_warps=4, num_stages=3)
# or twice that where a row is one segment and the deeper steps cover no more of its columns
# (``banded_config``): such a row takes few steps (one or two per filter row), and each step's
# fixed cost (counters, barriers, the band's load, the wgmma's issue) is then paid half as
# often. Compiled for sm_90 the issue-bound time of suite shape 14's forward fell by a tenth,
# 15's, 31's and 32's by 15-25% (236 registers at 64 columns, no spills). Not with a fused
# epilogue (128 x 64 x 32 spilled on sm_80), nor for rows of several segments (20's rose 5%,
# and 256 x 64 x 32 spilled on sm_80 under Triton 3.6).
BANDED_DEEP_STEP = 32
# With a residual to add or a pre-activation to store, at most this many rows: the epilogue's
# loads and stores need registers beside the accumulators (256 rows spilled 228 bytes on sm_90).
BANDED_FUSED_ROWS = 128
# The weight gradient's steps take 64 rows: its operands are the input columns a segment reads
# (up to 128) by the rows, and the output gradient, three stages deep; 256 rows needed 288 KiB of
# shared memory, 128 spilled on sm_90 (suite shapes 15 and 20).
BANDED_WEIGHT_GRAD_ROWS = 64
# The weight gradient's segment width is the one whose estimated time per line and filter row is
# least: per segment, the larger of a step's issue (about 130 SASS instructions per warp compiled
# for sm_90, 4 warps on an SM's 4 schedulers: 130 cycles) and its matrix-unit time (columns x
# width x BANDED_WEIGHT_GRAD_ROWS multiply-adds at an H200's dense bf16 peak, about 1890 per
# cycle per SM). Picked so, suite shape 20 takes 32 columns where the forward takes 64 (the
# forward's G of 128 columns by 64 kept the matrix unit busier than the issue: 5-15% lower
# estimates); 12 and 15, whose rows are one 64-column segment once G leaves out the columns past
# the row's end (64 of them, not 128), and 14, 31, 32 keep the forward's.
BANDED_WEIGHT_GRAD_STEP_CYCLES = 130
# The widest segments need at least this many lines per step: 16 lines by 64 columns spilled 2-8
# bytes on sm_80 (Triton 3.6 and 3.9), 32 did not.
BANDED_WIDE_SEGMENT_LINES = 32
MATRIX_MACS_PER_CYCLE = 1890
# What the band forward's autotuning times (``kernels/banded.BANDED_FORWARD``), as rows x
# segment columns x reduction step: the heuristic's 256 rows at each segment width, 128 rows,
# deeper pipelines and a 32-deep step. All compile for sm_90 without spills
# (tests/test_banded.py); the band's 128 accumulators per thread fit where a GEMM's would not.
BANDED_FORWARD_TILES = (
    KernelConfig(256, 64, 16, 4, 3),
    KernelConfig(256, 32, 16, 4, 3),
    KernelConfig(256, 16, 16, 4, 3),
    KernelConfig(128, 64, 16, 4, 3),
    KernelConfig(256, 64, 16, 4, 4),
    KernelConfig(256, 64, 32, 4, 3),
    KernelConfig(128, 32, 16, 4, 3),
    KernelConfig(128, 64, 16, 4, 2),
)
# What the band weight gradient's autotuning times (``kernels/banded.BANDED_WEIGHT_GRAD``), as
# lines per step x segment columns (its G is the columns a segment reads by these; the third
# field, the forward's reduction step, is unused): 64 lines at each segment width, 32 lines
# (twice the programs where lines are few), a deeper and a shallower pipeline. Each with the
# walk split of the heuristic's rule for its tile, the sums timed with it. All compile for sm_90
# on wgmma without spills (tests/test_banded.py).
BANDED_WEIGHT_GRAD_TILES = (
    KernelConfig(BANDED_WEIGHT_GRAD_ROWS, 32, MIN_DOT, 4, 3),
    KernelConfig(BANDED_WEIGHT_GRAD_ROWS, 64, MIN_DOT, 4, 3),
    KernelConfig(BANDED_WEIGHT_GRAD_ROWS, 16, MIN_DOT, 4, 3),
    KernelConfig(32, 32, MIN_DOT, 4, 3),
    KernelConfig(BANDED_WEIGHT_GRAD_ROWS, 32, MIN_DOT, 4, 4),
    KernelConfig(32, 64, MIN_DOT, 4, 3),
    KernelConfig(32, 16, MIN_DOT, 4, 3),
    KernelConfig(BANDED_WEIGHT_GRAD_ROWS, 32, MIN_DOT, 4, 2),
)
# Under the interpreter: small tiles, so that the tests' short rows take several segments.
BANDED_INTERPRETER_CONFIG = BandedConfig(block_m=32, block_w=16, block_j=MIN_DOT, num_warps=4, num_stages=1)


@dataclass(frozen=True)
class PatchConfig:
    """A patch tile (``kernels/patches.py``): ``block_m`` patches of ``patch`` (D, H, W) output
    pixels each, by ``block_c`` channels, reducing ``block_j`` input pixels per step."""

    block_m: int
    block_c: int
    patch: tuple[int, int, int]
    block_j: int
    num_warps: int
    num_stages: int

    @staticmethod
    def of(tile: KernelConfig, patch: tuple[int, int, int]) -> PatchConfig:
        """The patch tile a tuning tile stands for (its M the patches, its N the channels, its K
        the step) with patches of ``patch``, which the tuning tile leaves to the heuristic."""
        return PatchConfig(tile.block_m, tile.block_n, patch, tile.block_k, tile.num_warps, tile.num_stages)

    def tile(self) -> KernelConfig:
        """This tile as tuning handles it (``of``'s inverse, the patch left out)."""
        return KernelConfig(self.block_m, self.block_c, self.block_j, self.num_warps, self.num_stages)


# The patch shapes of 16 outputs (a dot's narrowest N) the heuristic picks from: the one whose
# input patch takes the fewest steps (``kernels/patches.patch_config``).
PATCH_SHAPES = ((1, 4, 4), (1, 2, 8), (1, 1, 16))
# What the patch forward's autotuning times (``kernels/patches.PATCH_FORWARD``), as patches x
# channels x step, the heuristic's first: 128 patches by 8 channels (16-byte vectors of 16-bit
# channels) on 8 warps, each warp's share of the accumulator 8 x 16 x 16 float32 (64 registers
# per thread); then 64 patches on 4 warps, and 16 channels on 8 warps. Per warp and step the
# first runs 188 instructions and 72 shared-memory wavefronts on suite shape 15 (sm_90, Triton
# 3.9), the second 204 and 80: the band's share of a step is halved. One stage: the kernel
# prefetches the next step into registers itself, Triton's pipeliner off. None spills
# (tests/test_gpu_compile.py); which wins (L1 and L2 traffic, occupancy) is for a GPU to say.
# 128 patches or 16 channels on 4 warps spilled, and 32 patches by 16 channels on 4 warps
# since the prefetch holds a second step's input in registers.
PATCH_TILES = (
    KernelConfig(128, 8, MIN_DOT, 8, 1),
    KernelConfig(64, 8, MIN_DOT, 4, 1),
    KernelConfig(64, 16, MIN_DOT, 8, 1),
)
PATCH_CONFIG = PatchConfig.of(PATCH_TILES[0], PATCH_SHAPES[0])
# What the patch weight gradient's autotuning times (``kernels/patches.PATCH_WEIGHT_GRAD``), the
# heuristic's first, each with its patches clipped to an image's: a program's patches are the
# same in every image it walks, so their addresses and masks stay in registers for the whole
# loop. 32 patches by 8 channels by 64 band rows (four of the forward's 16-row steps) on 8
# warps: each image's dy tile, the same for every step, goes through shared memory once for
# the four (suite shape 15 under Triton 3.9: 558 instructions and 240 shared-memory wavefronts
# per 16 rows of 32 patches, against 756 and 384 with 16-row steps on 4 warps); 16 patches on 4
# warps; 32 rows on 4 warps; 16 rows. One stage: the kernel prefetches the next image itself.
# 128 rows, or 64 rows of 32 patches on 4 warps, spilled.
PATCH_WEIGHT_GRAD_TILES = (
    KernelConfig(32, 8, 4 * MIN_DOT, 8, 1),
    KernelConfig(16, 8, 4 * MIN_DOT, 4, 1),
    KernelConfig(32, 8, 2 * MIN_DOT, 4, 1),
    KernelConfig(32, 8, MIN_DOT, 4, 1),
)
# Under the interpreter: few patches and channels, so that the tests' small images take several programs.
PATCH_INTERPRETER_CONFIG = PatchConfig(
    block_m=16, block_c=4, patch=(1, 4, 4), block_j=MIN_DOT, num_warps=4, num_stages=1
)

# What the plane kernel's autotuning times (``kernels/planes.PLANE_FORWARD`` and, for
# channels-last operands, ``PLANE_CHANNELS_LAST_FORWARD``; the input gradient's the same), as images x
# channels per program (the third field unused: the planes are the problem's), each clipped to
# the problem; its batched product compiles to mma.sync, which keeps T's channels (8 KB per
# channel of 64-pixel planes) in shared memory. See perf/NOTES.md, "The plane kernel over blocks
# of channels". Channels-last: 32 images by 8 channels (16-byte vectors of 16-bit channels) on 8
# warps first; 64 images, which build T once for twice the images but whose loop (a program
# walking several image blocks) spilled 32-96 bytes with the fused epilogue (which runs the
# first tile only); 4 channels on 4 warps; 16 images.
PLANE_CHANNELS_LAST_TILES = (
    KernelConfig(32, 8, MIN_DOT, 8, 1),
    KernelConfig(64, 8, MIN_DOT, 8, 1),
    KernelConfig(32, 4, MIN_DOT, 4, 1),
    KernelConfig(16, 8, MIN_DOT, 8, 1),
)
# The default layout: an address per element (a plane's pixels are contiguous, its channels a
# plane apart), so the fused epilogue's residual, pre-activation and output pointers fill the
# registers: 16 x 8 on 8 warps (no spills), and on 4 warps; 32 or 64 images spilled (under
# Triton 3.6 even without the epilogue).
PLANE_TILES = (
    KernelConfig(16, 8, MIN_DOT, 8, 1),
    KernelConfig(16, 8, MIN_DOT, 4, 1),
)
# Under the interpreter: few images and channels per program, so that the tests' take several.
PLANE_INTERPRETER_TILE = KernelConfig(16, 4, MIN_DOT, 4, 1)


def bucket_row_width(width: int) -> int:
    """The band kernels' row-width autotune bucket: the next power of two, at least 8."""
    return max(8, 1 << max(0, width - 1).bit_length())


def banded_lead(padding: int, unit: int) -> int:
    """Input columns a segment reads before its first output column: the padding rounded up to a
    multiple of ``unit`` (the input's vector, ``kernels/banded.row_unit``), so that its loads
    are whole vectors."""
    return -(-padding // unit) * unit


def banded_columns(spec: ConvSpec, block_w: int, unit: int) -> int:
    """Input columns a segment of ``block_w`` output columns reads (``kernels/banded.py``): its
    filter row's reach, and the lead from rounding the padding up to ``unit``."""
    _, _, taps = spec.kernel_size
    pad = spec.pad_lo[2]
    return block_w + (taps - 1) * spec.dilation[2] + banded_lead(pad, unit) - pad


def banded_row_columns(spec: ConvSpec, block_w: int, unit: int, least: int) -> int:
    """The input columns a segment of ``block_w`` output columns reads (``banded_columns``), but
    where a row is one segment only those before the input row's end (past it is only padding),
    and at least the first ``least`` of them."""
    columns = banded_columns(spec, block_w, unit)
    if spec.output_size[2] > block_w:
        return columns
    row_columns = spec.input_size[2] + banded_lead(spec.pad_lo[2], unit)
    return min(columns, max(row_columns, least))


def banded_chunks(spec: ConvSpec, cfg: BandedConfig, unit: int) -> int:
    """Reduction steps of ``cfg.block_j`` input columns per filter row: the columns a segment
    reads (``banded_row_columns``: where a row is one segment, a third fewer steps on suite shape
    14's 28-wide rows, a fifth fewer on 15's), at least those the segment's first column's taps
    reach: the non-finite test sums that column, which must meet every tap
    (``banded_forward_kernel``)."""
    _, _, taps = spec.kernel_size
    pad = spec.pad_lo[2]
    first_column = banded_lead(pad, unit) - pad + (taps - 1) * spec.dilation[2] + 1
    return -(-banded_row_columns(spec, cfg.block_w, unit, first_column) // cfg.block_j)


def banded_weight_grad_rows(spec: ConvSpec, block_w: int, unit: int) -> tuple[int, int]:
    """The rows of the weight gradient's G (``kernels/banded.banded_weight_grad_kernel``) and the
    filter rows they hold. Per filter row: the input columns a segment reads
    (``banded_row_columns``), at least those every output column's first tap reaches (so that a
    non-finite output gradient still meets a product G keeps, and its tap's sum flags the
    recomputation), rounded up to a power of 2. Where that is under a wgmma's 64 rows, as many
    filter rows as fill them share one G (at most the filter's rows, rounded up to a power of 2):
    suite shape 14's rows of 28 need 32 columns, and a G of 64 would otherwise hold 32 columns
    of padding past the row's end."""
    pad = spec.pad_lo[2]
    first_taps = spec.output_size[2] + banded_lead(pad, unit) - pad
    columns = banded_row_columns(spec, block_w, unit, first_taps)
    columns = 1 << (columns - 1).bit_length()
    stack = min(max(1, WGMMA_ROWS // columns), 1 << (spec.kernel_size[1] - 1).bit_length())
    return max(stack * columns, WGMMA_ROWS), stack


def banded_weight_grad_config(spec: ConvSpec, unit: int) -> BandedConfig:
    """The band weight gradient's heuristic tile: BANDED_WEIGHT_GRAD_ROWS lines per step (fewer
    where the problem has fewer, ``banded_weight_grad_lines``), the forward's pipeline,
    and the segment width of the least estimated time (``BANDED_WEIGHT_GRAD_STEP_CYCLES``), the
    least matrix work on a tie; the widest only with BANDED_WIDE_SEGMENT_LINES lines a step."""
    cfg = banded_config(spec, unit)
    if not gpu_tiles():
        return cfg
    width = spec.output_size[2]
    widths = BANDED_BLOCK_W
    if banded_weight_grad_lines(spec, BANDED_WEIGHT_GRAD_ROWS) < BANDED_WIDE_SEGMENT_LINES:
        widths = tuple(block_w for block_w in widths if block_w < max(BANDED_BLOCK_W))

    def cost(block_w: int) -> tuple[float, float]:
        columns, stack = banded_weight_grad_rows(spec, block_w, unit)
        # A program's steps per filter row: its segments, shared by the filter rows it stacks.
        steps = -(-width // block_w) / stack
        matrix_cycles = columns * block_w * BANDED_WEIGHT_GRAD_ROWS / MATRIX_MACS_PER_CYCLE
        return steps * max(BANDED_WEIGHT_GRAD_STEP_CYCLES, matrix_cycles), steps * columns * block_w

    block_w = min(widths, key=cost)
    # The forward's reduction step is unused (the weight gradient reduces over lines): the
    # finest, as in BANDED_WEIGHT_GRAD_TILES, whatever the forward's heuristic took.
    return replace(cfg, block_m=BANDED_WEIGHT_GRAD_ROWS, block_w=block_w, block_j=MIN_DOT)


def banded_weight_grad_lines(spec: ConvSpec, most: int) -> int:
    """The band weight gradient's lines (N x D_OUT) per step: at most ``most``, no more than the
    problem's rounded up to a power of 2, at least the 16 of a dot."""
    lines = spec.batch * spec.output_size[0]
    return min(most, max(MIN_DOT, 1 << max(0, lines - 1).bit_length()))


def banded_config(spec: ConvSpec, unit: int, fused_epilogue: bool = False) -> BandedConfig:
    """The band tile for a depthwise ``spec`` (unit step along W) whose loads take ``unit``
    elements: the segment width whose matrix-unit work per useful output is least, counting the
    band's zeros (its BLOCK_J-deep steps over the segment's input columns) and the masked
    columns past each row's end; BANDED_DEEP_STEP-deep steps where a row is one segment and
    they cover no more of its columns than the finest. ``fused_epilogue``: a residual to add or
    a pre-activation to store, whose loads and stores need registers beside the accumulators:
    half the rows (with all of them 64-column segments spilled on sm_90)."""
    if not gpu_tiles():
        return BANDED_INTERPRETER_CONFIG
    base = replace(BANDED_CONFIG, block_m=BANDED_FUSED_ROWS) if fused_epilogue else BANDED_CONFIG
    width = spec.output_size[2]

    def work_per_output(block_w: int) -> float:
        depth = banded_chunks(spec, replace(base, block_w=block_w), unit) * base.block_j
        return depth / block_w * (-(-width // block_w) * block_w) / width

    # On a tie the narrower segment: fewer accumulators, fewer masked columns to store.
    cfg = replace(base, block_w=min(BANDED_BLOCK_W, key=lambda block_w: (work_per_output(block_w), block_w)))
    if fused_epilogue or width > cfg.block_w:
        return cfg
    deep = replace(cfg, block_j=BANDED_DEEP_STEP)
    covered = banded_chunks(spec, cfg, unit) * cfg.block_j
    return deep if banded_chunks(spec, deep, unit) * deep.block_j <= covered else cfg


def direct_config(
    channels: int,
    width: int,
    itemsize: int,
    channels_contiguous: bool = True,
    fused_transposed_epilogue: bool = False,
    knobs: KernelConfig | None = None,
    group_slots: int = 1,
    multipliers: int = 1,
    taps_held: int = 0,
) -> DirectConfig:
    """The tile for ``channels`` channels (the dimension a program's channel block runs over),
    rows of ``width`` pixels (the dimension its groups run along) and elements of ``itemsize``
    bytes; ``taps_per_step`` is the most a step may take (see ``direct_taps_per_step``).

    Without contiguous channels (the default NCHW layout) every element is a load of its own,
    with its own address: one channel per thread then, not a vector, or the registers spill.
    ``fused_transposed_epilogue``: the input gradient of a transposed convolution with a fused
    residual or pre-activation, where a thread holds PIXELS * CONV_STRIDE_W accumulators and
    the residual load and pre-activation store need registers beside them: half the pixels
    (with all of them the registers spilled). ``knobs`` (``direct_knobs``, the heuristic's by
    default): at most ``block_m`` pixels per thread (``DIRECT_WEIGHT_GRAD_PIXELS`` for the weight
    gradient), ``block_n`` channels per program, ``num_warps``. ``group_slots``: the slots
    of one convolution group (a power of two), which a thread then holds whole rather than a
    full vector of several groups; ``multipliers``: accumulators per slot and pixel. With
    contiguous channels both trade pixels, so that a thread's accumulators stay at ``block_m``
    full vectors. ``taps_held``: the taps of a step whose weights and input columns a thread
    holds beside its accumulators (forward, input gradient; see DIRECT_PIXELS_PLUS_TAPS)."""
    if not gpu_tiles():
        base = DIRECT_INTERPRETER_CONFIG
        cfg = replace(base, pixels=direct_pixels(width, base.pixels), block_c=max(base.block_c, group_slots))
    else:
        knobs = knobs or direct_knobs(channels)
        most_pixels, block_c, num_warps = knobs.block_m, max(knobs.block_n, group_slots), knobs.num_warps
        full_vector = DIRECT_VECTOR_BYTES // itemsize if channels_contiguous else 1
        vector = min(full_vector, group_slots) if group_slots > 1 else full_vector
        block_g = max(1, 32 * num_warps * vector // block_c)
        # A group wider than a program's threads' vectors (many slots) gives each thread more.
        per_thread = max(vector, block_c // (32 * num_warps))
        # One channel per thread (no vector) leaves registers for every multiplier's pixels; never
        # more pixels than ``block_m`` (the filter row's window of input columns grows with them).
        if channels_contiguous:
            budget = most_pixels * full_vector // (per_thread * multipliers)
            if taps_held:
                budget = min(budget, max(1, DIRECT_PIXELS_PLUS_TAPS - taps_held))
        else:
            budget = most_pixels // per_thread
        pixels = direct_pixels(width, max(1, min(budget, most_pixels)))
        cfg = DirectConfig(block_g, pixels, block_c, num_warps, DIRECT_TAPS_PER_STEP)
    if fused_transposed_epilogue:
        cfg = replace(cfg, pixels=max(1, cfg.pixels // 2))
    return cfg
