"""Weight (and bias) gradient: a GEMM whose reduction runs over all N*Do*Ho*Wo output pixels.

dw[k, c, tap] = sum over n, o of dy[n, k, o] * x[n, c, o * stride - pad + tap * dil]. Per group,
rows are the group's output channels, columns are (tap, input channel) pairs, and the long pixel
reduction is split across SPLIT_K programs (split-K) so that small filters still fill the GPU.
Each split writes its own float32 (float64 for float64) partial; a second kernel sums the splits
in a fixed order, so the result is deterministic. The bias gradient (the row sums of dy) rides
along in the programs of the first column block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
import triton
import triton.language as tl

from ..runtime import TRITON_VERSION
from ..spec import ConvSpec, as_3d, needs_int64
from ..tuning.configs import (
    IMPLICIT_GEMM_CONFIGS,
    INTERPRETER_CONFIGS,
    SWAPPED_WEIGHT_GRAD_TILE,
    WGMMA_ROWS,
    KernelConfig,
    clip_config,
    gpu_tiles,
    occupancy_split_k,
    operand_class,
)
from ..tuning.kinds import GemmExtents, KernelKind
from ..tuning.select import select_config
from . import arguments
from .common import Launch, accumulator_dtype, accumulator_torch_dtype, dot_operand, dot_precision
from .indexing import program_ids, unravel_pixels, unravel_tap
from .layout import gemm_operand, gemm_operand_layout
from .split_k import partial_buffers, sum_splits


@triton.jit
def _within(coord, extent):
    """0 <= coord < extent in one unsigned comparison (a negative coord wraps to a huge one)."""
    return coord.to(tl.uint64 if coord.dtype == tl.int64 else tl.uint32, bitcast=True) < extent


@triton.jit
def _both(mask, more):
    """``mask & more``, where a None ``mask`` (nothing masked so far) stands for all true."""
    if mask is None:
        both = more
    else:
        both = mask & more
    return both


@triton.jit
def _load(ptrs, mask):
    """Load ``ptrs``, zero where ``mask`` is false; a None ``mask`` loads everything."""
    if mask is None:
        values = tl.load(ptrs)
    else:
        values = tl.load(ptrs, mask=mask, other=0.0)
    return values


@triton.jit
def _advance(digit, step, carry, extent):
    """One mixed-radix digit plus ``step`` (< extent) and the carry in: the digit and the carry out."""
    digit += step + carry
    carry_out = digit >= extent
    return tl.where(carry_out, digit - extent, digit), carry_out.to(tl.int32)


@triton.jit
def _carry_offset(offset, carry, wrap):
    """``offset`` plus ``wrap`` where ``carry`` (0 or 1) is set: a select, not a multiply."""
    return tl.where(carry != 0, offset + wrap, offset)


@triton.jit
def implicit_gemm_weight_grad_kernel(
    dy_ptr, x_ptr, dw_partial_ptr, db_partial_ptr,
    C_G, input_size, K, K_G, output_size, P, kernel_size, TAPS, GROUPS, SPLIT_K, CHUNK, conv_stride, padding, dilation,
    dy_strides, x_strides,
    HAS_BIAS_GRAD: tl.constexpr, INDEX_64: tl.constexpr, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    DY_LINEAR: tl.constexpr, X_LINEAR: tl.constexpr, MASK_D: tl.constexpr, MASK_H: tl.constexpr, MASK_W: tl.constexpr,
    TRACK_N: tl.constexpr, TRACK_D: tl.constexpr, TRACK_H: tl.constexpr, TRACK_W: tl.constexpr,
    SWAP_AB: tl.constexpr, W_RUNS: tl.constexpr, X_VECTOR: tl.constexpr, ROW_BLOCKS: tl.constexpr,
    EVEN_P: tl.constexpr, HAS_COLUMNS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """Partial dw (and db) of one split for BLOCK_M out channels x BLOCK_N (tap, in channel) columns.

    Columns run over the TAPS * C_G (tap, input channel) pairs, tap-major: one tile spans several
    taps of a channel run, so every dy tile loaded serves all the taps of the tile, and x is
    gathered per column at its tap's shift (a contiguous channel run per tap in channels-last).
    Pixel geometry is carried from step to step (no division in the loop), and only what the
    flags ask for: DY_LINEAR / X_LINEAR say a pixel's dy / x offset is p * sdy_w / p * sx_w
    (pixel strides dense; for x also conv_stride 1 and input size = output size); MASK_D/H/W say
    that dimension is padded (taps may fall outside the input); TRACK_N/D/H/W say which output
    coordinates the step needs (n, d, h, w), innermost first. SWAP_AB computes the transposed
    product (columns as the MMA's rows) for tiles with fewer than 64 out channels, which a
    Hopper wgmma (64 rows per 4 warps) would otherwise pad. Loads read valid rows and
    columns in place of those past the tile's edge (their results are not stored), so only pixels
    are masked: past P unless EVEN_P (P a multiple of BLOCK_K), and taps in the padding.
    W_RUNS says x's (w, c) pairs are one contiguous run (channels-last, one group, no padding
    or dilation along W). X_VECTOR > 1 says more of those runs (W_RUNS only): aligned groups of
    X_VECTOR columns are contiguous in x, and every x offset of a pixel is a multiple of X_VECTOR.
    ROW_BLOCKS says W_OUT is a multiple of BLOCK_K: every block of pixels is part of one output
    row, so its n, d, h and first w are carried as scalars (one carry per step, not per pixel).
    HAS_COLUMNS is false when C_G == 0: then only the bias gradient is computed.

    Args:
        dy_ptr, dy_strides: output gradient (N, K, D_OUT, H_OUT, W_OUT), K = GROUPS * K_G; any
            strides (5, in elements).
        x_ptr, x_strides: input (N, C, D, H, W), C = GROUPS * C_G; any strides (5).
        dw_partial_ptr: (SPLIT_K, K, C_G, TAPS) contiguous, ACC_DTYPE; split z writes slice z.
        db_partial_ptr: (SPLIT_K, K) contiguous, ACC_DTYPE; written only if HAS_BIAS_GRAD.
        input_size: (D, H, W). output_size: (D_OUT, H_OUT, W_OUT). padding: leading padding (D, H, W).
        kernel_size: filter size (T, R, S). conv_stride: the convolution's step (D, H, W) between
            output pixels (not a memory stride). dilation: (D, H, W) spacing of the taps.
        C_G: input channels per group. K, K_G: output channels, in all and per group.
        P: output pixels N * D_OUT * H_OUT * W_OUT, reduced in chunks of CHUNK (a multiple of
            BLOCK_K), one per split. TAPS: T * R * S. GROUPS: groups. SPLIT_K: splits.
        HAS_BIAS_GRAD: also sum dy's rows into db. INDEX_64: compute offsets in int64.
        PRECISION: tl.dot input precision ("ieee" or "tf32"). ACC_DTYPE: float32, or float64 for float64.
        DY_LINEAR, X_LINEAR, MASK_D, MASK_H, MASK_W, TRACK_N, TRACK_D, TRACK_H, TRACK_W, SWAP_AB,
            W_RUNS, X_VECTOR, ROW_BLOCKS, EVEN_P, HAS_COLUMNS: as above.
        BLOCK_M, BLOCK_N, BLOCK_K: the tile: output channels, (tap, input channel) columns, pixels per step.
        Grid: (cdiv(K_G, BLOCK_M), max(1, cdiv(TAPS * C_G, BLOCK_N)), GROUPS * SPLIT_K), group fastest on axis 2.
    """
    pid_m, pid_n, pid_z = program_ids(INDEX_64)
    group = pid_z % GROUPS
    split = pid_z // GROUPS

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, BLOCK_K)
    if INDEX_64:
        offs_m = offs_m.to(tl.int64)
        cols = cols.to(tl.int64)
        offs_p = offs_p.to(tl.int64)
    mask_m = offs_m < K_G
    mask_n = cols < TAPS * C_G
    k = group * K_G + offs_m % K_G
    # Each column's tap and channel, once per program. A tap reads input coordinate
    # o * stride + shift, with shift = tap * dilation - padding; the loop adds pixel terms only.
    # Columns past the last tap read the last tap. The tap is clamped, not the column: the
    # remainder by C_G keeps the compiler's knowledge of contiguous channel runs, which a
    # minimum would lose. With no channels nothing is loaded.
    c_g = C_G if HAS_COLUMNS else 1
    tap = tl.minimum(cols // c_g, TAPS - 1)
    c = cols % c_g
    _, R, S = kernel_size
    kt, kr, ks = unravel_tap(tap, R, S)
    shift_d = kt * dilation[0] - padding[0]
    shift_h = kr * dilation[1] - padding[1]
    shift_w = ks * dilation[2] - padding[2]
    # Element offsets; the base pointers join only at the loads: 64-bit pointer tensors held
    # across the loop take twice the registers and made small tiles spill.
    sdy_n, sdy_k, sdy_d, sdy_h, sdy_w = dy_strides
    sx_n, sx_c, sx_d, sx_h, sx_w = x_strides
    dy_cols = k * sdy_k
    if W_RUNS:
        # The S taps along W of one (kt, kr) and their channels are one contiguous run of x:
        # written as a remainder, the compiler sees the run (and vectorizes it) even when C_G is small.
        run = S * c_g
        kt_kr = tl.minimum(cols // run, TAPS // S - 1)
        shift_kt = kt_kr // R * dilation[0] - padding[0]
        shift_kr = kt_kr % R * dilation[1] - padding[1]
        x_cols = shift_kt * sx_d + shift_kr * sx_h + cols % run
        if X_VECTOR > 1:
            # What the remainder by a run length known only at run time hides from the compiler.
            x_cols = tl.max_contiguous(tl.multiple_of(x_cols, X_VECTOR), X_VECTOR)
    else:
        x_cols = (group * C_G + c) * sx_c + shift_d * sx_d + shift_h * sx_h + shift_w * sx_w

    p_start = split * CHUNK
    p_end = tl.minimum(p_start + CHUNK, P)
    D_OUT, H_OUT, W_OUT = output_size
    if ROW_BLOCKS:
        n, od, oh, ow = unravel_pixels(p_start, D_OUT, H_OUT, W_OUT)
    else:
        n, od, oh, ow = unravel_pixels(p_start + offs_p, D_OUT, H_OUT, W_OUT)
    step_n, step_d, step_h, step_w = unravel_pixels(BLOCK_K, D_OUT, H_OUT, W_OUT)

    if SWAP_AB:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=ACC_DTYPE)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    bias_acc = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
    conv_stride_d, conv_stride_h, conv_stride_w = conv_stride
    D, H, W = input_size
    # x's offset of a pixel moves by these per output step along each dimension.
    xs_d, xs_h, xs_w = conv_stride_d * sx_d, conv_stride_h * sx_h, conv_stride_w * sx_w
    carries_x: tl.constexpr = ROW_BLOCKS and not X_LINEAR
    if carries_x:
        # The x offset of the block's first pixel is carried from step to step with its digits (a
        # scalar add and select per digit, no multiply): x_step per step, and wrap_* more where a
        # digit carries out, to the next tracked digit (an untracked one has extent 1).
        x_row = n * sx_n + od * xs_d + oh * xs_h + ow * xs_w
        x_along_row = offs_p * xs_w
        x_step = step_n * sx_n + step_d * xs_d + step_h * xs_h + step_w * xs_w
        next_of_h = xs_d if TRACK_D else sx_n
        wrap_d = sx_n - D_OUT * xs_d
        wrap_h = next_of_h - H_OUT * xs_h
        wrap_w = (xs_h if TRACK_H else next_of_h) - W_OUT * xs_w
    for p0 in range(p_start, p_end, BLOCK_K):
        p = p0 + offs_p
        mask_p = None if EVEN_P else p < p_end
        if ROW_BLOCKS:
            # The block's pixels: one row's coordinates, w consecutive.
            rows = tl.zeros_like(offs_p)
            pn, pd, ph, pw = n + rows, od + rows, oh + rows, ow + offs_p
        else:
            pn, pd, ph, pw = n, od, oh, ow
        if DY_LINEAR:
            dy_pix = p * sdy_w
        else:
            dy_pix = pn * sdy_n + pd * sdy_d + ph * sdy_h + pw * sdy_w
        if X_LINEAR:
            x_pix = p * sx_w
        elif ROW_BLOCKS:
            x_pix = x_row + x_along_row
        else:
            x_pix = pn * sx_n + pd * xs_d + ph * xs_h + pw * xs_w
        if X_VECTOR > 1:
            x_pix = tl.multiple_of(x_pix, X_VECTOR)
        a = _load(dy_ptr + dy_cols[:, None] + dy_pix[None, :], None if EVEN_P else mask_p[None, :])
        if HAS_COLUMNS:
            mask_x = None if EVEN_P else mask_p[:, None]
            if MASK_D:
                mask_x = _both(mask_x, _within((pd * conv_stride_d)[:, None] + shift_d[None, :], D))
            if MASK_H:
                mask_x = _both(mask_x, _within((ph * conv_stride_h)[:, None] + shift_h[None, :], H))
            if MASK_W:
                mask_x = _both(mask_x, _within((pw * conv_stride_w)[:, None] + shift_w[None, :], W))
            b = _load(x_ptr + x_pix[:, None] + x_cols[None, :], mask_x)
            if SWAP_AB:
                acc = tl.dot(
                    dot_operand(tl.trans(b)),
                    dot_operand(tl.trans(a)),
                    acc,
                    input_precision=PRECISION,
                    out_dtype=ACC_DTYPE,
                )
            else:
                acc = tl.dot(dot_operand(a), dot_operand(b), acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        if HAS_BIAS_GRAD:
            bias_acc += tl.sum(a.to(ACC_DTYPE), axis=1)
        # The next block's coordinates: BLOCK_K pixels later, one carry per digit.
        carry = 0
        if carries_x:
            x_row += x_step
        if TRACK_W:
            ow, carry = _advance(ow, step_w, carry, W_OUT)
            if carries_x:
                x_row = _carry_offset(x_row, carry, wrap_w)
        if TRACK_H:
            oh, carry = _advance(oh, step_h, carry, H_OUT)
            if carries_x:
                x_row = _carry_offset(x_row, carry, wrap_h)
        if TRACK_D:
            od, carry = _advance(od, step_d, carry, D_OUT)
            if carries_x:
                x_row = _carry_offset(x_row, carry, wrap_d)
        if TRACK_N:
            n += step_n + carry

    # Partial layout (split, k, c, tap) is dw's own contiguous (K, C_G, T, R, S) order per split.
    dw_ptrs = dw_partial_ptr + split * K * C_G * TAPS + (k * C_G * TAPS)[:, None] + (c * TAPS + tap)[None, :]
    if SWAP_AB:
        acc = tl.trans(acc)
    tl.store(dw_ptrs, acc, mask=mask_m[:, None] & mask_n[None, :])
    if HAS_BIAS_GRAD:
        if pid_n == 0:
            tl.store(db_partial_ptr + split * K + k, bias_acc, mask=mask_m)


def swaps_operands(config: KernelConfig) -> bool:
    """Whether the kernel computes dw transposed: fewer out channels than a wgmma's rows, enough columns."""
    return config.block_m < WGMMA_ROWS <= config.block_n


def _gemm_extents(spec: ConvSpec) -> GemmExtents:
    """Rows are the group's output channels, columns (tap, input channel) pairs, the reduction pixels."""
    return spec.out_channels_per_group, spec.taps * spec.in_channels_per_group, spec.output_pixels


def _swapped_tile(spec: ConvSpec, dtype: torch.dtype, precision: str, cfg: KernelConfig) -> KernelConfig:
    """Where the clipped tile swaps operands: the swapped tile for tensor cores, and a full warpgroup."""
    if swaps_operands(cfg):
        if operand_class(dtype, precision) == "tensor_core" and gpu_tiles():
            cfg = clip_config(SWAPPED_WEIGHT_GRAD_TILE, *_gemm_extents(spec))
        # The columns fill the MMA's rows: a full warpgroup, not the warps the clipped rows would get.
        cfg = replace(cfg, num_warps=max(cfg.num_warps, 4))
    return cfg


# Triton 3.6's LLVM recomputes each pixel row's x offset of a few-channel (padded) input every
# step, about twice 3.9's SASS per step for the stem (read from sm_90 compiles); a pixel block
# that divides the output rows (ROW_BLOCKS) makes those offsets one scalar per step. 3.9 keeps
# the deeper step, which does more per wgmma. 3.7 and 3.8 were not checked; either is correct.
ROW_BLOCKS_FOR_FEW_CHANNELS = TRITON_VERSION < (3, 9)
ROW_BLOCK_DEPTH = 16


def _first_tile(spec: ConvSpec, dtype: torch.dtype, precision: str, cfg: KernelConfig) -> KernelConfig:
    """The swapped tile where operands swap; under Triton before 3.9, a few-channel input's
    pixel block shortened to ROW_BLOCK_DEPTH where that divides the output rows and BLOCK_K does not."""
    cfg = _swapped_tile(spec, dtype, precision, cfg)
    row = spec.output_size[2]
    few_channels = spec.in_channels_per_group % (16 // dtype.itemsize) != 0
    if (
        ROW_BLOCKS_FOR_FEW_CHANNELS
        and gpu_tiles()
        and few_channels
        and cfg.block_k > ROW_BLOCK_DEPTH
        and row % cfg.block_k != 0
        and row % ROW_BLOCK_DEPTH == 0
    ):
        cfg = replace(cfg, block_k=ROW_BLOCK_DEPTH)
    return cfg


def _split_k(spec: ConvSpec, dtype: torch.dtype, cfg: KernelConfig, tiles: int) -> int:
    """Split-K sized so that the programs of ``tiles`` output tiles fill the GPU."""
    _, columns, pixels = _gemm_extents(spec)
    input_bytes = (spec.output_pixels * spec.out_channels + spec.input_pixels * spec.in_channels) * dtype.itemsize
    partial_bytes = spec.out_channels * columns * accumulator_torch_dtype(dtype).itemsize
    return occupancy_split_k(cfg, dtype.itemsize, tiles, pixels, input_bytes, partial_bytes)


WEIGHT_GRAD = KernelKind(
    name="weight_grad",
    pass_="W",
    tiles=IMPLICIT_GEMM_CONFIGS["weight_grad"],
    interpreter_tile=INTERPRETER_CONFIGS["weight_grad"],
    gemm_extents=_gemm_extents,
    dense_gemm=_gemm_extents,
    key_pixels=lambda spec: spec.output_pixels,
    key_layout=lambda input, output: gemm_operand_layout(input),
    plan=lambda spec, x, w, b, y, tile: plan_weight_grad(
        y, x, spec, *partial_buffers(y, tile.split_k, w.numel(), None if b is None else b.numel()), tile
    ),
    adjust_tile=_first_tile,
    split_k=_split_k,
)


def _pixels_dense(t: torch.Tensor) -> bool:
    """Whether pixel p of the (N, C, D, H, W) tensor ``t`` sits at offset p * stride(W) from its first."""
    expected = t.stride(4)
    for dim in (4, 3, 2, 0):
        if t.shape[dim] > 1 and t.stride(dim) != expected:
            return False
        expected *= t.shape[dim]
    return True


def pixel_geometry_flags(spec: ConvSpec, dy: torch.Tensor, x: torch.Tensor) -> dict[str, bool]:
    """The kernel's DY_LINEAR, X_LINEAR, MASK_* and TRACK_* flags for this problem (3-d views)."""
    x_linear = _pixels_dense(x) and spec.stride == (1, 1, 1) and spec.input_size == spec.output_size
    mask_d, mask_h, mask_w = (lo > 0 or hi > 0 for lo, hi in zip(spec.pad_lo, spec.pad_hi))
    track_n = not (x_linear and _pixels_dense(dy))
    # Leading spatial dimensions of size 1 (conv1d, conv2d) never change: no digit to carry.
    track_d = spec.ndim == 3 and (track_n or mask_d)
    track_h = spec.ndim >= 2 and (track_n or track_d or mask_h)
    return dict(
        DY_LINEAR=_pixels_dense(dy),
        X_LINEAR=x_linear,
        MASK_D=mask_d,
        MASK_H=mask_h,
        MASK_W=mask_w,
        TRACK_N=track_n,
        TRACK_D=track_d,
        TRACK_H=track_h,
        TRACK_W=track_n or track_h or mask_w,
    )


def x_vector(spec: ConvSpec, x: torch.Tensor) -> int:
    """X_VECTOR of a W_RUNS problem (one run of S x C_G elements of the 3-d view ``x`` per (t, r)).

    Runs of channel blocks of 16 bytes the compiler sees by itself (strides divisible by 16 are
    specialized); with fewer channels (a first layer's input padded to 4, ``dispatch.pads_input``)
    the widest aligned vector, at most 16 bytes, that the run length and every pixel stride that
    moves (a dimension longer than 1, or padded) is a multiple of."""
    vector = 16 // x.element_size()
    if spec.in_channels_per_group % vector == 0:
        return 1
    lengths = [spec.kernel_size[2] * spec.in_channels_per_group]
    lengths += [x.stride(dim) for dim in (0, 2, 3, 4) if x.shape[dim] > 1 or (dim > 0 and spec.padded[dim - 2])]
    while vector > 1 and any(n % vector for n in lengths):
        vector //= 2
    return vector


def plan_weight_grad(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    spec: ConvSpec,
    dw_partial: torch.Tensor,
    db_partial: torch.Tensor | None,
    config: KernelConfig,
) -> Launch:
    """The launch writing split-K partials of dw (and db) into ``dw_partial``/``db_partial``."""
    dy, x = as_3d(grad_output), as_3d(input)
    blocks_per_split = triton.cdiv(triton.cdiv(spec.output_pixels, config.block_k), config.split_k)
    grid = (
        triton.cdiv(spec.out_channels_per_group, config.block_m),
        # At least one column block, so that the bias gradient is computed even with no channels.
        max(1, triton.cdiv(spec.taps * spec.in_channels_per_group, config.block_n)),
        spec.groups * config.split_k,
    )
    args = arguments.tensors(dy=dy, x=x) | arguments.sizes(spec) | arguments.filter_geometry(spec)
    args |= dict(dw_partial_ptr=dw_partial, db_partial_ptr=db_partial if db_partial is not None else dw_partial)
    args |= dict(C_G=spec.in_channels_per_group, K=spec.out_channels, K_G=spec.out_channels_per_group)
    args |= dict(P=spec.output_pixels, TAPS=spec.taps, GROUPS=spec.groups, SPLIT_K=config.split_k)
    args |= dict(CHUNK=blocks_per_split * config.block_k)
    constexprs = pixel_geometry_flags(spec, dy, x) | config.blocks()
    constexprs |= dict(INDEX_64=needs_int64(dy, x, dw_partial), ACC_DTYPE=accumulator_dtype(dy.dtype))
    w_runs = (
        x.stride(1) == 1
        and x.stride(4) == spec.in_channels
        and spec.groups == 1
        and spec.dilation[2] == 1
        and spec.pad_lo[2] == spec.pad_hi[2] == 0
    )
    constexprs |= dict(
        HAS_BIAS_GRAD=db_partial is not None,
        SWAP_AB=swaps_operands(config),
        W_RUNS=w_runs,
        X_VECTOR=x_vector(spec, x) if w_runs else 1,
        ROW_BLOCKS=spec.output_size[2] % config.block_k == 0,
        EVEN_P=spec.output_pixels % config.block_k == 0,
        HAS_COLUMNS=spec.in_channels_per_group > 0,
        PRECISION=dot_precision(dy),
    )
    return Launch(implicit_gemm_weight_grad_kernel, grid, args, constexprs, config.num_warps, config.num_stages)


def implicit_gemm_weight_grad(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    spec: ConvSpec,
    grad_weight: torch.Tensor,
    grad_bias: torch.Tensor | None = None,
    config: KernelConfig | None = None,
) -> None:
    """Write d(loss)/d(weight) into ``grad_weight`` (contiguous) and, if given, d(loss)/d(bias).

    As in the forward and the input gradient, operands whose channels are strided (the default
    layout) are read from channels-last copies: the GEMM's loads then vectorize and pipeline."""
    grad_output, input = gemm_operand(as_3d(grad_output)), gemm_operand(as_3d(input))
    bias_elements = spec.out_channels if grad_bias is not None else None
    precision = dot_precision(grad_output)

    def run_with(c: KernelConfig) -> Callable[[], None]:
        # Timed with fresh partials for its split count, and with the split-K sum, whose cost grows with it.
        dw, db = partial_buffers(grad_output, c.split_k, grad_weight.numel(), bias_elements)
        launch = plan_weight_grad(grad_output, input, spec, dw, db, c)

        def run() -> None:
            launch()
            sum_splits(dw, grad_weight)

        return run

    cfg = config or select_config(
        WEIGHT_GRAD,
        spec,
        grad_output.dtype,
        precision,
        WEIGHT_GRAD.key_layout(input, grad_output),
        run_with,
        WEIGHT_GRAD.heuristic(spec, grad_output.dtype, precision),
        grad_output.device,
    )
    dw_partial, db_partial = partial_buffers(grad_output, cfg.split_k, grad_weight.numel(), bias_elements)
    plan_weight_grad(grad_output, input, spec, dw_partial, db_partial, cfg)()
    sum_splits(dw_partial, grad_weight)
    if grad_bias is not None:
        sum_splits(db_partial, grad_bias)
