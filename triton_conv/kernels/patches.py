"""Depthwise convolution of channels-last tensors on the matrix unit: output patches as GEMM rows.

The band kernels (``banded.py``) multiply along W, which needs the rows along W contiguous: in
channels-last they are strided by C, and the direct kernels, one FMA per multiply-add on CUDA
cores, are left bound by instruction issue for filters of 5x5 and more. Here the product runs
over whole patches instead. For one channel, a patch of PATCH_D x PATCH_H x PATCH_W output
pixels (unit steps) reads an input patch of IN_D x IN_H x IN_W pixels, and

    y[patch, p] = sum over k of x[patch, k] * band[k, p],
    band[k, p] = w[tap] where input pixel k of the patch reaches output pixel p through tap, zero elsewhere,

so that every (image, patch) pair of the channel is a row of one GEMM: M the rows, N the
patch's outputs, the reduction the input patch's pixels, BLOCK_J per step. A program takes
BLOCK_C channels, each its own band: a batched (3-D) ``tl.dot``. The input is read as vectors of
channels and turned channel-major on the way to the dot, through shared memory; for a 7x7 filter
and 2x8 patches the matrix unit computes 128 products per output (8 input rows of 14 columns,
padded to 16) where 49 are useful, a waste its 16x more multiply-adds per clock than FP32 FMAs
pay for.

The input gradient of a depthwise convolution with unit steps is the same product against the
flipped filter. The weight gradient is the GEMM transposed: per channel, input patch pixels by
patch outputs summed over the rows (``patch_weight_grad_kernel``), each tap's gradient the sum of
the entries where the band holds it: summed along W in that kernel, the rest by
``patch_taps_kernel``. Non-finite values: the band's zeros multiply every input pixel of a
patch (IEEE 0 * inf is NaN), so each launch sets a flag where the sum of a tile is not finite
(which every non-finite input or weight of a patch makes it: ``non_finite.py``) and the direct
kernel, gated on the flag, computes the whole output again (``dispatch.forward``); the weight
gradient's flag is set where a tap's gradient is not finite (``patch_weight_grad``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

from ..runtime import COALESCE_TIES_TO_LAST_DIMENSION
from ..spec import ConvSpec, as_3d, needs_int64
from ..tuning.configs import (
    MIN_DOT,
    PATCH_CONFIG,
    PATCH_INTERPRETER_CONFIG,
    PATCH_SHAPES,
    PATCH_TILES,
    PATCH_WEIGHT_GRAD_TILES,
    KernelConfig,
    PatchConfig,
    gpu_tiles,
    split_k_for,
)
from ..tuning.key import bucket_channels, layout_of
from ..tuning.kinds import KernelKind
from ..tuning.select import select_config
from . import arguments
from .common import Launch, accumulator_dtype, accumulator_torch_dtype, dot_operand, dot_precision
from .epilogue import PLAIN, Epilogue, finish_tile
from .indexing import program_ids, unravel_pixels, unravel_pixels_fast
from .layout import gemm_operand
from .non_finite import flag_tile_not_finite, new_flag, not_finite
from .reduction import in_range, zero_index


@triton.jit
def patch_forward_kernel(
    x_ptr, band_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr, flag_ptr,
    C, ROWS, STEPS, input_size, output_size, padding, patches, patches_magics, patches_shifts,
    x_strides, band_strides, y_strides, bias_stride, residual_strides,
    PATCH_D: tl.constexpr, PATCH_H: tl.constexpr, PATCH_W: tl.constexpr,
    IN_D: tl.constexpr, IN_H: tl.constexpr, IN_W: tl.constexpr, ROW_SLOT: tl.constexpr, CHUNKS: tl.constexpr,
    EVEN_C: tl.constexpr, EVEN_PATCHES: tl.constexpr, HALVES_OUTER: tl.constexpr, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_PRE_ACTIVATION: tl.constexpr,
    INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr,
):  # fmt: skip
    """y = activation(z), z[n, c, o] = sum over taps of x[n, c, i(o, tap)] * w[c, 0, tap] + bias[c]
    + residual[n, c, o], for a depthwise convolution (one channel per group, one output channel
    per group) with unit steps, the filter given as band matrices (``patch_bands``).

    Args:
        x_ptr, x_strides: input (N, C, D, H, W); any strides (5, in elements), C's 1 for vectors.
        band_ptr, band_strides: (C, PATCH_D * PATCH_H * PATCH_W, STEPS * BLOCK_J), each band
            transposed: element (c, p, s * BLOCK_J + j) what the input pixel that step s's column
            j reads (``PatchGeometry``) adds to output pixel p of a patch (W fastest) times; any
            strides (3), the last 1. Read along the steps' columns, 16-byte vectors that reach
            the dot's shared memory with no permutes.
        y_ptr, y_strides: output (N, C, D_OUT, H_OUT, W_OUT); any strides (5).
        bias_ptr, bias_stride: bias (C,) and its stride; read only if HAS_BIAS.
        residual_ptr, residual_strides: added before the activation, y's shape, any strides (5);
            read only if HAS_RESIDUAL.
        z_ptr: the pre-activation z, y's shape and strides; written only if STORE_PRE_ACTIVATION.
        flag_ptr: an int32 set to 1 where the sum of a tile is not finite.
        C: channels. ROWS: N * patches' product. STEPS: the reduction's BLOCK_J-deep steps.
        input_size: (D, H, W). output_size: (D_OUT, H_OUT, W_OUT). padding: leading padding (D, H, W).
        patches: patches along (D_OUT, H_OUT, W_OUT), each PATCH_D x PATCH_H x PATCH_W outputs.
        patches_magics, patches_shifts: ``arguments.divisors`` of patches (a row's patch unravelled
            with multiplies, no divisions).
        IN_D, IN_H, IN_W: an input patch's planes, rows and columns (the output patch plus the
            dilated filter's reach). ROW_SLOT: columns a step gives each input row it reads (a power of
            two); a step reads BLOCK_J // ROW_SLOT rows, or, where CHUNKS > 1, BLOCK_J columns of one.
        EVEN_C: C is a multiple of BLOCK_C, so the loads need no channel mask.
        EVEN_PATCHES: ROWS is a multiple of BLOCK_M and the patches tile the output exactly, so
            the stores need no pixel mask.
        HALVES_OUTER: how a step's tile is laid out (``patch_step_operands``).
        HAS_BIAS: add the bias. ACTIVATION: the activation's name ("none" for none).
        HAS_RESIDUAL: add the residual. STORE_PRE_ACTIVATION: write z.
        INDEX_64: compute offsets in int64. ACC_DTYPE: float32.
        BLOCK_M, BLOCK_C, BLOCK_J: patches, channels and input pixels of a step's product.
        Grid: (cdiv(ROWS, BLOCK_M), cdiv(C, BLOCK_C)).
    """
    pid_m, pid_c, _ = program_ids(INDEX_64)
    D, H, W = input_size
    D_OUT, H_OUT, W_OUT = output_size
    pad_d, pad_h, pad_w = padding
    patches_d, patches_h, patches_w = patches
    sx_n, _, sx_d, sx_h, sx_w = x_strides
    sb_c, sb_p, _ = band_strides
    OUTPUTS: tl.constexpr = PATCH_D * PATCH_H * PATCH_W
    ROWS_PER_STEP: tl.constexpr = BLOCK_J // ROW_SLOT
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = rows < ROWS
    n, pd, ph, pw = unravel_pixels_fast(rows, patches_d, patches_h, patches_w, patches_magics, patches_shifts, INDEX_64)
    id0 = pd * PATCH_D - pad_d
    ih0 = ph * PATCH_H - pad_h
    # Rows past the last start at W, where no column of a patch is inside.
    iw0 = tl.where(mask_m, pw * PATCH_W - pad_w, W)
    channels = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = channels < C
    # Everything per (patch, column) is computed once; a step adds scalars. The columns go in
    # pairs (j = 2 * half + parity), both held by one thread, so that the tile reaches the dot's
    # shared memory 4 bytes at a time (two 2-byte pixels of a channel).
    x_base = n * sx_n + id0 * sx_d + ih0 * sx_h + iw0 * sx_w
    offs_0, h_0, w_0, row_0, col_0, plane_0 = patch_columns(
        0, x_base, id0, ih0, iw0, x_strides, input_size, IN_D, IN_W, ROW_SLOT, CHUNKS, HALVES_OUTER, INDEX_64, BLOCK_J
    )
    offs_1, h_1, w_1, row_1, col_1, plane_1 = patch_columns(
        1, x_base, id0, ih0, iw0, x_strides, input_size, IN_D, IN_W, ROW_SLOT, CHUNKS, HALVES_OUTER, INDEX_64, BLOCK_J
    )
    j = tl.arange(0, BLOCK_J)
    p = tl.arange(0, OUTPUTS)
    band_ptrs = band_ptr + channels[:, None, None] * sb_c + p[None, :, None] * sb_p + j[None, None, :]

    acc = tl.zeros((BLOCK_C, BLOCK_M, OUTPUTS), dtype=ACC_DTYPE)
    kd = zero_index(INDEX_64)
    kh = zero_index(INDEX_64)
    chunk = zero_index(INDEX_64)
    # The loop prefetches the next step's operands into registers itself, with Triton's
    # pipeliner off: its asynchronous copies left the channels fastest in shared memory, which
    # the batched dot then read 2 bytes at a time, 4 threads to a bank (see perf/NOTES.md).
    a, band = patch_step_operands(
        x_ptr, channels, mask_c, band_ptrs, kd, kh, chunk,
        offs_0, h_0, w_0, row_0, col_0, plane_0, offs_1, h_1, w_1, row_1, col_1, plane_1,
        x_strides, input_size, IN_D, IN_H, IN_W, ROWS_PER_STEP, CHUNKS, EVEN_C, HALVES_OUTER, INDEX_64, BLOCK_J,
    )  # fmt: skip
    for _ in tl.range(1, STEPS, num_stages=1):
        # The chunk fastest, then the input rows (a step's at a time), then the depth.
        chunk += 1
        row_done = chunk == CHUNKS
        chunk = tl.where(row_done, 0, chunk)
        kh = tl.where(row_done, kh + ROWS_PER_STEP, kh)
        plane_done = kh >= IN_H
        kh = tl.where(plane_done, 0, kh)
        kd = tl.where(plane_done, kd + 1, kd)
        band_ptrs += BLOCK_J
        next_a, next_band = patch_step_operands(
            x_ptr, channels, mask_c, band_ptrs, kd, kh, chunk,
            offs_0, h_0, w_0, row_0, col_0, plane_0, offs_1, h_1, w_1, row_1, col_1, plane_1,
            x_strides, input_size, IN_D, IN_H, IN_W, ROWS_PER_STEP, CHUNKS, EVEN_C, HALVES_OUTER, INDEX_64, BLOCK_J,
        )  # fmt: skip
        acc = patch_step_product(acc, a, band, ACC_DTYPE)
        a, band = next_a, next_band
    acc = patch_step_product(acc, a, band, ACC_DTYPE)

    # Every output pixel of a patch multiplies every input pixel the patch reads, and every tap
    # of the filter: a non-finite input or weight makes each of them, and so the tile's sum, not
    # finite. A finite tile whose sum overflows only costs the recomputation. One reduction over
    # the whole tile, not the first output pixels' (a select per element and a reduction per axis).
    total = tl.sum(acc)
    tl.store(flag_ptr, 1, mask=not_finite(total))
    # (patch, output pixel) pairs as the pixels of a (pixels x channels) tile.
    PIXELS: tl.constexpr = BLOCK_M * OUTPUTS
    tile = tl.reshape(tl.permute(acc, (1, 2, 0)), (PIXELS, BLOCK_C))
    od = pd[:, None] * PATCH_D + (p // (PATCH_W * PATCH_H))[None, :]
    oh = ph[:, None] * PATCH_H + (p // PATCH_W % PATCH_H)[None, :]
    ow = pw[:, None] * PATCH_W + (p % PATCH_W)[None, :]
    if EVEN_PATCHES:
        real = tl.full(od.shape, 1, tl.int1)
    else:
        real = mask_m[:, None] & (od < D_OUT) & (oh < H_OUT) & (ow < W_OUT)
    n_pixels = tl.reshape(n[:, None] + 0 * p[None, :], (PIXELS,))
    od, oh, ow = tl.reshape(od, (PIXELS,)), tl.reshape(oh, (PIXELS,)), tl.reshape(ow, (PIXELS,))
    real = tl.reshape(real, (PIXELS,))
    finish_tile(
        tile, bias_ptr, bias_stride, y_ptr, y_strides, z_ptr, residual_ptr, residual_strides,
        n_pixels, od, oh, ow, channels, real, mask_c,
        HAS_BIAS, False, ACTIVATION, HAS_RESIDUAL, STORE_PRE_ACTIVATION,
    )  # fmt: skip


@triton.jit
def patch_columns(
    PARITY: tl.constexpr, x_base, id0, ih0, iw0, x_strides, input_size,
    IN_D: tl.constexpr, IN_W: tl.constexpr, ROW_SLOT: tl.constexpr, CHUNKS: tl.constexpr,
    HALVES_OUTER: tl.constexpr, INDEX_64: tl.constexpr, BLOCK_J: tl.constexpr,
):  # fmt: skip
    """For ``patch_forward_kernel``'s columns j = 2 * half + PARITY of a step (column j reads row
    j // ROW_SLOT of the step's rows, column j % ROW_SLOT of its chunk), per (patch, half), or
    (half, patch) if HALVES_OUTER: the input offset; the row, moved far out where what no step
    changes already fails (the column where a step reads whole rows, the plane where the input
    patch has one); the column; the row and column within the step; the plane."""
    D, _, W = input_size
    _, _, _, sx_h, sx_w = x_strides
    j = 2 * tl.arange(0, BLOCK_J // 2) + PARITY
    j_row = j // ROW_SLOT
    j_col = j % ROW_SLOT
    x_offs = x_base[:, None] + (j_row * sx_h + j_col * sx_w)[None, :]
    h_of = ih0[:, None] + j_row[None, :]
    w_of = iw0[:, None] + j_col[None, :]
    fixed = tl.full(h_of.shape, 1, tl.int1)
    if CHUNKS == 1:
        fixed = in_range(w_of, W, INDEX_64) & (j_col < IN_W)[None, :]
    if IN_D == 1:
        fixed = fixed & in_range(id0, D, INDEX_64)[:, None]
    h_of = tl.where(fixed, h_of, -(1 << 30))
    rows = j_row[None, :] + 0 * ih0[:, None]
    cols = j_col[None, :] + 0 * ih0[:, None]
    planes = id0[:, None] + 0 * j_row[None, :]
    if HALVES_OUTER:
        x_offs, h_of, w_of = tl.trans(x_offs), tl.trans(h_of), tl.trans(w_of)
        rows, cols, planes = tl.trans(rows), tl.trans(cols), tl.trans(planes)
    return x_offs, h_of, w_of, rows, cols, planes


@triton.jit
def patch_step_operands(
    x_ptr, channels, mask_c, band_ptrs, kd, kh, chunk,
    offs_0, h_0, w_0, row_0, col_0, plane_0, offs_1, h_1, w_1, row_1, col_1, plane_1,
    x_strides, input_size,
    IN_D: tl.constexpr, IN_H: tl.constexpr, IN_W: tl.constexpr, ROWS_PER_STEP: tl.constexpr, CHUNKS: tl.constexpr,
    EVEN_C: tl.constexpr, HALVES_OUTER: tl.constexpr, INDEX_64: tl.constexpr, BLOCK_J: tl.constexpr,
):  # fmt: skip
    """A step of ``patch_forward_kernel``: the input pixels it reads at plane kd, row kh and chunk
    of the input patch, zero outside the input, channel-major (channels, patches, BLOCK_J), and
    its band rows. The two parities of columns (``patch_columns``) are loaded apart and joined,
    so that both pixels of a pair sit in one thread and the tile reaches the dot's shared memory
    4 bytes (``STSM``) at a time rather than 2. That needs a warp's lanes along the halves, the
    dimension next to the channels in the order Triton breaks ties in
    (``runtime.COALESCE_TIES_TO_LAST_DIMENSION``): the tile is (halves, patches, channels) if
    HALVES_OUTER, else (patches, halves, channels)."""
    _, _, sx_d, sx_h, sx_w = x_strides
    x_step = kd * sx_d + kh * sx_h + chunk * BLOCK_J * sx_w
    a_0 = patch_step_pixels(
        x_ptr + x_step, channels, mask_c, kd, kh, chunk, offs_0, h_0, w_0, row_0, col_0, plane_0,
        input_size, IN_D, IN_H, IN_W, ROWS_PER_STEP, CHUNKS, EVEN_C, INDEX_64, BLOCK_J,
    )  # fmt: skip
    a_1 = patch_step_pixels(
        x_ptr + x_step, channels, mask_c, kd, kh, chunk, offs_1, h_1, w_1, row_1, col_1, plane_1,
        input_size, IN_D, IN_H, IN_W, ROWS_PER_STEP, CHUNKS, EVEN_C, INDEX_64, BLOCK_J,
    )  # fmt: skip
    # -> (channels, patches, halves, parity) -> (channels, patches, halves * 2 + parity).
    if HALVES_OUTER:
        a = tl.permute(tl.join(a_0, a_1), (2, 1, 0, 3))
    else:
        a = tl.permute(tl.join(a_0, a_1), (2, 0, 1, 3))
    a = tl.reshape(a, (a.shape[0], a.shape[1], BLOCK_J))
    if EVEN_C:
        band = tl.load(band_ptrs)
    else:
        band = tl.load(band_ptrs, mask=mask_c[:, None, None], other=0.0)
    return a, tl.permute(band, (0, 2, 1))


@triton.jit
def patch_step_pixels(
    x_ptr, channels, mask_c, kd, kh, chunk, x_offs, h_of, w_of, j_row, j_col, id0, input_size,
    IN_D: tl.constexpr, IN_H: tl.constexpr, IN_W: tl.constexpr, ROWS_PER_STEP: tl.constexpr, CHUNKS: tl.constexpr,
    EVEN_C: tl.constexpr, INDEX_64: tl.constexpr, BLOCK_J: tl.constexpr,
):  # fmt: skip
    """One parity's pixels (patches, BLOCK_J // 2, channels), or (BLOCK_J // 2, patches,
    channels) as ``patch_columns`` laid them out, of ``patch_step_operands``."""
    D, H, W = input_size
    inside = in_range(h_of + kh, H, INDEX_64)
    if IN_H % ROWS_PER_STEP != 0:
        inside = inside & (j_row + kh < IN_H)
    if CHUNKS > 1:
        inside = inside & in_range(w_of + chunk * BLOCK_J, W, INDEX_64) & (j_col + chunk * BLOCK_J < IN_W)
    if IN_D > 1:
        inside = inside & in_range(id0 + kd, D, INDEX_64)
    if EVEN_C:
        mask = inside[:, :, None]
    else:
        mask = inside[:, :, None] & mask_c[None, None, :]
    # Cached in L1 (".ca"): the patches of a program overlap by the filter's reach, and the
    # next steps read the rows below.
    return tl.load(x_ptr + x_offs[:, :, None] + channels[None, None, :], mask=mask, other=0.0, cache_modifier=".ca")


@triton.jit
def patch_step_product(acc, a, band, ACC_DTYPE: tl.constexpr):
    """acc[c] += a[c] @ band[c]: a step's input pixels (channels, patches, BLOCK_J) by each channel's band rows."""
    return tl.dot(dot_operand(a), dot_operand(band), acc, out_dtype=ACC_DTYPE)


@triton.jit
def patch_weight_grad_kernel(
    x_ptr, dy_ptr, g_partial_ptr, db_partial_ptr,
    C, N, IMAGES_PER_SPLIT, PATCH_BLOCKS, TAIL_PATCHES, input_size, output_size, padding, dilation_w, patches,
    x_strides, dy_strides, g_partial_strides,
    PATCH_D: tl.constexpr, PATCH_H: tl.constexpr, PATCH_W: tl.constexpr, IN_H: tl.constexpr, IN_W: tl.constexpr,
    FILTER_W: tl.constexpr, ROW_SLOT: tl.constexpr, CHUNKS: tl.constexpr, HAS_BIAS_GRAD: tl.constexpr,
    PACKED_TAIL: tl.constexpr, HALVES_OUTER: tl.constexpr,
    INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr,
):  # fmt: skip
    """G[c, k, p] = sum over (image, patch) rows of x[row, c, k] * dy[row, c, p] for one step of
    BLOCK_J band rows (input pixels k of a patch, ``PatchGeometry`` of this tile: with BLOCK_J =
    64, four of the forward's 16-row steps, or a 64-column chunk of a row), by the patch's output
    pixels p, of a depthwise convolution with unit steps: the forward's GEMM transposed, reduced
    over its rows. The weight gradient of tap t is the sum over p of G[c, k(p, t), p], the band
    entries ``patch_bands`` writes w[t] to; the program sums the part of it along W and writes
    partials the taps' kernel adds up (``patch_taps_kernel``).

    A program's rows are BLOCK_M patches of an image (or the last few of several images), the
    same in every image it walks: their offsets and masks are computed once, and a step moves
    them on by an image (or by as many images as the rows take).

    Args:
        x_ptr, x_strides: input (N, C, D, H, W); any strides (5, in elements), C's 1 for vectors.
        dy_ptr, dy_strides: output gradient (N, C, D_OUT, H_OUT, W_OUT); any strides (5), C's 1.
        g_partial_ptr, g_partial_strides: (SPLIT_K, C, lines, PATCH_D * PATCH_H, FILTER_W),
            ACC_DTYPE, any strides (5), the last 1: element (z, c, line, q, s) the sum of G's
            entries of slice z's programs where the line's input pixels (a step's ROW_SLOT band
            rows of one input row: STEPS * BLOCK_J // ROW_SLOT lines) meet patch row q's
            outputs (D then H, H fastest) through filter column s. Program (step, channel block,
            z) writes its step's lines of slice z.
        db_partial_ptr: (SPLIT_K, C) contiguous, ACC_DTYPE; the step-0 programs write it if HAS_BIAS_GRAD.
        C: channels. N: images. IMAGES_PER_SPLIT: images a program walks.
        PATCH_BLOCKS: cdiv(patches per image, BLOCK_M); SPLIT_K = PATCH_BLOCKS * cdiv(N, IMAGES_PER_SPLIT).
        TAIL_PATCHES: the patches of an image in its last block (1..BLOCK_M). PACKED_TAIL: that
            block takes several images (BLOCK_M // TAIL_PATCHES > 1); else every row's image is
            the walk's, with no image offsets or masks.
        input_size, output_size, padding, patches, PATCH_*, IN_H, IN_W, ROW_SLOT, CHUNKS: as in
            ``patch_forward_kernel``. dilation_w: the filter's dilation along W. FILTER_W: its
            columns.
        HAS_BIAS_GRAD: also sum dy into db. HALVES_OUTER: as ``patch_forward_kernel``'s.
        INDEX_64: compute offsets in int64. ACC_DTYPE: float32.
        BLOCK_M, BLOCK_C, BLOCK_J: patches of a step, channels, input pixels of the reduction step.
        Grid: (STEPS, cdiv(C, BLOCK_C), SPLIT_K), axis 2 the patch block fastest.
    """
    step, pid_c, split = program_ids(INDEX_64)
    patches_d, patches_h, patches_w = patches
    sx_n = x_strides[0]
    sdy_n = dy_strides[0]
    OUTPUTS: tl.constexpr = PATCH_D * PATCH_H * PATCH_W
    ROWS_PER_STEP: tl.constexpr = BLOCK_J // ROW_SLOT
    # The step's place in the input patch (``PatchGeometry.band_row``): chunk fastest, then the
    # input rows a step reads, then the depth.
    chunk = step % CHUNKS
    row_blocks = (IN_H + ROWS_PER_STEP - 1) // ROWS_PER_STEP
    kh = step // CHUNKS % row_blocks * ROWS_PER_STEP
    kd = step // (CHUNKS * row_blocks)
    channels = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = channels < C
    # An image's patches go BLOCK_M to a block; the last block holds the TAIL_PATCHES left over,
    # from each of BLOCK_M // TAIL_PATCHES images at once (row i: patch i % TAIL_PATCHES of the
    # walk's image + i // TAIL_PATCHES), so that its rows are not mostly masked (196 patches in
    # blocks of 32: the last takes 4 patches of 8 images, not of 1).
    block = split % PATCH_BLOCKS
    per_image = BLOCK_M
    if PACKED_TAIL:
        per_image = tl.where(block == PATCH_BLOCKS - 1, TAIL_PATCHES, BLOCK_M)
    images_at_once = BLOCK_M // per_image
    row = tl.arange(0, BLOCK_M)
    image_of_row = row // per_image + zero_index(INDEX_64)
    past_last, pd, ph, pw = unravel_pixels(block * BLOCK_M + row % per_image, patches_d, patches_h, patches_w)
    if PACKED_TAIL:  # rows past the images the last block takes
        mask_m = image_of_row < images_at_once
    else:  # rows past the image's last patch
        mask_m = past_last == 0
    first_image = split // PATCH_BLOCKS * IMAGES_PER_SPLIT

    # The step's input pixels j and the patch's outputs p in pairs (2 * half + parity), each
    # parity loaded apart, as the forward's columns (``patch_step_operands``).
    x_0, x_mask_0 = patch_grad_inputs(
        0, x_ptr, channels, mask_c, pd, ph, pw, mask_m, kd, kh, chunk, input_size, padding, x_strides,
        PATCH_D, PATCH_H, PATCH_W, IN_H, IN_W, ROW_SLOT, HALVES_OUTER, INDEX_64, BLOCK_J,
    )  # fmt: skip
    x_1, x_mask_1 = patch_grad_inputs(
        1, x_ptr, channels, mask_c, pd, ph, pw, mask_m, kd, kh, chunk, input_size, padding, x_strides,
        PATCH_D, PATCH_H, PATCH_W, IN_H, IN_W, ROW_SLOT, HALVES_OUTER, INDEX_64, BLOCK_J,
    )  # fmt: skip
    dy_0, dy_mask_0 = patch_grad_outputs(
        0, dy_ptr, channels, mask_c, pd, ph, pw, mask_m, output_size, dy_strides, PATCH_D, PATCH_H, PATCH_W,
        HALVES_OUTER,
    )  # fmt: skip
    dy_1, dy_mask_1 = patch_grad_outputs(
        1, dy_ptr, channels, mask_c, pd, ph, pw, mask_m, output_size, dy_strides, PATCH_D, PATCH_H, PATCH_W,
        HALVES_OUTER,
    )  # fmt: skip

    # Each row's image offset, laid out as the tiles' rows.
    if HALVES_OUTER:
        row_image = image_of_row[None, :, None]
    else:
        row_image = image_of_row[:, None, None]
    if PACKED_TAIL:
        x_0 += row_image * sx_n
        x_1 += row_image * sx_n
        dy_0 += row_image * sdy_n
        dy_1 += row_image * sdy_n

    last_image = tl.minimum(first_image + IMAGES_PER_SPLIT, N)
    # The step-0 programs also sum dy into db: a loop of their own, as a branch in the loop spilled.
    if HAS_BIAS_GRAD and step == 0:
        acc, bias_acc = patch_weight_grad_images(
            x_0, x_mask_0, x_1, x_mask_1, dy_0, dy_mask_0, dy_1, dy_mask_1, row_image,
            first_image, last_image, images_at_once, sx_n, sdy_n,
            True, PACKED_TAIL, HALVES_OUTER, ACC_DTYPE, BLOCK_C, BLOCK_M, BLOCK_J, OUTPUTS,
        )  # fmt: skip
    else:
        acc, bias_acc = patch_weight_grad_images(
            x_0, x_mask_0, x_1, x_mask_1, dy_0, dy_mask_0, dy_1, dy_mask_1, row_image,
            first_image, last_image, images_at_once, sx_n, sdy_n,
            False, PACKED_TAIL, HALVES_OUTER, ACC_DTYPE, BLOCK_C, BLOCK_M, BLOCK_J, OUTPUTS,
        )  # fmt: skip

    # Along W, the entries of one filter column s lie on a diagonal of each (line, patch row)
    # block of G: column col of a line is input column chunk * BLOCK_J + col of the patch, which
    # output column p_w reads through s where that equals p_w + s * dilation_w. Summed here, the
    # partials are FILTER_W / (ROW_SLOT * PATCH_W) of G's size.
    PATCH_ROWS: tl.constexpr = PATCH_D * PATCH_H
    g = tl.reshape(acc, (BLOCK_C, ROWS_PER_STEP, ROW_SLOT, PATCH_ROWS, PATCH_W))
    g = tl.reshape(tl.permute(g, (0, 1, 3, 2, 4)), (BLOCK_C, ROWS_PER_STEP, PATCH_ROWS, ROW_SLOT * PATCH_W))
    col_and_p_w = tl.arange(0, ROW_SLOT * PATCH_W)[None, None, None, :]
    reach = chunk * BLOCK_J + col_and_p_w // PATCH_W - col_and_p_w % PATCH_W
    sg_split, sg_c, sg_line, sg_q, _ = g_partial_strides
    line = step * ROWS_PER_STEP + tl.arange(0, ROWS_PER_STEP)
    q = tl.arange(0, PATCH_ROWS)
    g_ptrs = g_partial_ptr + split * sg_split + channels[:, None, None] * sg_c + line[None, :, None] * sg_line
    g_ptrs += q[None, None, :] * sg_q
    for s in tl.static_range(FILTER_W):
        column = tl.sum(tl.where(reach == s * dilation_w, g, 0.0), axis=3)
        tl.store(g_ptrs + s, column, mask=mask_c[:, None, None])
    if HAS_BIAS_GRAD:
        if step == 0:
            tl.store(db_partial_ptr + split * C + channels, bias_acc, mask=mask_c)


@triton.jit
def patch_grad_inputs(
    PARITY: tl.constexpr, x_ptr, channels, mask_c, pd, ph, pw, mask_m, kd, kh, chunk, input_size, padding, x_strides,
    PATCH_D: tl.constexpr, PATCH_H: tl.constexpr, PATCH_W: tl.constexpr, IN_H: tl.constexpr, IN_W: tl.constexpr,
    ROW_SLOT: tl.constexpr, HALVES_OUTER: tl.constexpr, INDEX_64: tl.constexpr, BLOCK_J: tl.constexpr,
):  # fmt: skip
    """Pointers into x and the mask of ``patch_weight_grad_kernel``'s step pixels j = 2 * half +
    PARITY for each of its patches (an image's; the loop adds the image's offset): (patches,
    halves, channels), or (halves, patches, channels) if HALVES_OUTER."""
    D, H, W = input_size
    pad_d, pad_h, pad_w = padding
    _, _, sx_d, sx_h, sx_w = x_strides
    j = 2 * tl.arange(0, BLOCK_J // 2) + PARITY
    id_ = pd * PATCH_D - pad_d + kd
    h_of = (ph * PATCH_H - pad_h + kh)[:, None] + (j // ROW_SLOT)[None, :]
    w_of = (pw * PATCH_W - pad_w + chunk * BLOCK_J)[:, None] + (j % ROW_SLOT)[None, :]
    inside = in_range(h_of, H, INDEX_64) & in_range(w_of, W, INDEX_64)
    inside = inside & ((kh + j // ROW_SLOT < IN_H) & (chunk * BLOCK_J + j % ROW_SLOT < IN_W))[None, :]
    inside = inside & (mask_m & in_range(id_, D, INDEX_64))[:, None]
    x_offs = (id_ * sx_d)[:, None] + h_of * sx_h + w_of * sx_w
    if HALVES_OUTER:
        x_offs, inside = tl.trans(x_offs), tl.trans(inside)
    return x_ptr + x_offs[:, :, None] + channels[None, None, :], inside[:, :, None] & mask_c[None, None, :]


@triton.jit
def patch_grad_outputs(
    PARITY: tl.constexpr, dy_ptr, channels, mask_c, pd, ph, pw, mask_m, output_size, dy_strides,
    PATCH_D: tl.constexpr, PATCH_H: tl.constexpr, PATCH_W: tl.constexpr, HALVES_OUTER: tl.constexpr,
):  # fmt: skip
    """Pointers into dy and the mask of a patch's outputs p = 2 * half + PARITY (W fastest) for
    each of ``patch_weight_grad_kernel``'s patches, laid out as ``patch_grad_inputs``'."""
    D_OUT, H_OUT, W_OUT = output_size
    _, _, sdy_d, sdy_h, sdy_w = dy_strides
    p = 2 * tl.arange(0, PATCH_D * PATCH_H * PATCH_W // 2) + PARITY
    od = (pd * PATCH_D)[:, None] + (p // (PATCH_W * PATCH_H))[None, :]
    oh = (ph * PATCH_H)[:, None] + (p // PATCH_W % PATCH_H)[None, :]
    ow = (pw * PATCH_W)[:, None] + (p % PATCH_W)[None, :]
    real = mask_m[:, None] & (od < D_OUT) & (oh < H_OUT) & (ow < W_OUT)
    dy_offs = od * sdy_d + oh * sdy_h + ow * sdy_w
    if HALVES_OUTER:
        dy_offs, real = tl.trans(dy_offs), tl.trans(real)
    return dy_ptr + dy_offs[:, :, None] + channels[None, None, :], real[:, :, None] & mask_c[None, None, :]


@triton.jit
def patch_weight_grad_images(
    x_0, x_mask_0, x_1, x_mask_1, dy_0, dy_mask_0, dy_1, dy_mask_1, row_image,
    first_image, last_image, images_at_once, sx_n, sdy_n,
    SUM_DY: tl.constexpr, PACKED_TAIL: tl.constexpr, HALVES_OUTER: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_J: tl.constexpr, OUTPUTS: tl.constexpr,
):  # fmt: skip
    """``patch_weight_grad_kernel``'s reduction over images first_image..last_image - 1, taken
    ``images_at_once`` at a time (a row reads image + ``row_image`` if PACKED_TAIL):
    acc[c] += x[c]^T dy[c] over the program's patches (x its step's pixels, dy its outputs, each
    as two parities: ``patch_grad_inputs``, ``patch_grad_outputs``); with SUM_DY, also dy summed
    per channel. Returns both sums.

    The loop prefetches the next image's tiles into registers itself, with Triton's pipeliner
    off: its asynchronous copies left the channels fastest in shared memory, which the batched
    dot then read 2 bytes at a time, 8 threads to a bank (see perf/NOTES.md)."""
    acc = tl.zeros((BLOCK_C, BLOCK_J, OUTPUTS), dtype=ACC_DTYPE)
    bias_acc = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE)
    # No split is empty (``patch_weight_grad_splits``): the first image is the batch's.
    a_0, a_1, b_0, b_1 = patch_weight_grad_tiles(
        x_0, x_mask_0, x_1, x_mask_1, dy_0, dy_mask_0, dy_1, dy_mask_1, row_image, first_image, last_image, sx_n, sdy_n,
        PACKED_TAIL,
    )  # fmt: skip
    for image in tl.range(first_image + images_at_once, last_image, images_at_once, num_stages=1):
        next_a_0, next_a_1, next_b_0, next_b_1 = patch_weight_grad_tiles(
            x_0, x_mask_0, x_1, x_mask_1, dy_0, dy_mask_0, dy_1, dy_mask_1, row_image, image, last_image, sx_n, sdy_n,
            PACKED_TAIL,
        )  # fmt: skip
        acc = patch_weight_grad_product(acc, a_0, a_1, b_0, b_1, HALVES_OUTER, ACC_DTYPE, BLOCK_M, BLOCK_J, OUTPUTS)
        if SUM_DY:
            bias_acc += patch_bias_sum(b_0, b_1, ACC_DTYPE)
        a_0, a_1, b_0, b_1 = next_a_0, next_a_1, next_b_0, next_b_1
    acc = patch_weight_grad_product(acc, a_0, a_1, b_0, b_1, HALVES_OUTER, ACC_DTYPE, BLOCK_M, BLOCK_J, OUTPUTS)
    if SUM_DY:
        bias_acc += patch_bias_sum(b_0, b_1, ACC_DTYPE)
    return acc, bias_acc


@triton.jit
def patch_weight_grad_tiles(
    x_0, x_mask_0, x_1, x_mask_1, dy_0, dy_mask_0, dy_1, dy_mask_1, row_image, image, last_image, sx_n, sdy_n,
    PACKED_TAIL: tl.constexpr,
):  # fmt: skip
    """The x and dy tiles of ``image``, two parities each; with PACKED_TAIL a row's of image +
    ``row_image``, none past ``last_image``."""
    if PACKED_TAIL:
        real = row_image < last_image - image
        x_mask_0 = x_mask_0 & real
        x_mask_1 = x_mask_1 & real
        dy_mask_0 = dy_mask_0 & real
        dy_mask_1 = dy_mask_1 & real
    # Cached in L1, as the forward's: the rows of neighbouring patches overlap.
    a_0 = tl.load(x_0 + image * sx_n, mask=x_mask_0, other=0.0, cache_modifier=".ca")
    a_1 = tl.load(x_1 + image * sx_n, mask=x_mask_1, other=0.0, cache_modifier=".ca")
    b_0 = tl.load(dy_0 + image * sdy_n, mask=dy_mask_0, other=0.0)
    b_1 = tl.load(dy_1 + image * sdy_n, mask=dy_mask_1, other=0.0)
    return a_0, a_1, b_0, b_1


@triton.jit
def patch_bias_sum(b_0, b_1, ACC_DTYPE: tl.constexpr):
    """dy's two parities summed per channel (their last dimension)."""
    return tl.sum(tl.sum(b_0.to(ACC_DTYPE), axis=1), axis=0) + tl.sum(tl.sum(b_1.to(ACC_DTYPE), axis=1), axis=0)


@triton.jit
def patch_weight_grad_product(
    acc, a_0, a_1, b_0, b_1, HALVES_OUTER: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_J: tl.constexpr, OUTPUTS: tl.constexpr,
):  # fmt: skip
    """acc[c] += x[c]^T dy[c] over the patches: a step's input pixels by the patch's outputs,
    each pair of pixels (outputs) joined from its two parities into one thread's registers."""
    if HALVES_OUTER:  # (halves, patches, channels, parity)
        a = tl.permute(tl.join(a_0, a_1), (2, 0, 3, 1))
        b = tl.permute(tl.join(b_0, b_1), (2, 1, 0, 3))
    else:  # (patches, halves, channels, parity)
        a = tl.permute(tl.join(a_0, a_1), (2, 1, 3, 0))
        b = tl.permute(tl.join(b_0, b_1), (2, 0, 1, 3))
    a = tl.reshape(a, (a.shape[0], BLOCK_J, BLOCK_M))
    b = tl.reshape(b, (b.shape[0], BLOCK_M, OUTPUTS))
    return tl.dot(dot_operand(a), dot_operand(b), acc, out_dtype=ACC_DTYPE)


@dataclass(frozen=True)
class PatchGeometry:
    """How the reduction of ``patch_forward_kernel`` (and ``patch_weight_grad_kernel``, with its
    own tile's ``block_j``) walks an input patch of ``input_patch`` (D, H, W) pixels: each step reads ``rows_per_step`` input rows of ``row_slot`` columns (a
    power of two, at least the row's width), or, where a row is wider than a step, one
    ``block_j``-column chunk of a row, ``chunks`` per row; depth planes outermost."""

    input_patch: tuple[int, int, int]
    block_j: int
    row_slot: int
    chunks: int

    @staticmethod
    def of(spec: ConvSpec, cfg: PatchConfig) -> PatchGeometry:
        in_patch = tuple(size + (taps - 1) * dil for size, taps, dil in zip(cfg.patch, spec.kernel_size, spec.dilation))
        width = in_patch[2]
        if width > cfg.block_j:
            return PatchGeometry(in_patch, cfg.block_j, cfg.block_j, -(-width // cfg.block_j))
        return PatchGeometry(in_patch, cfg.block_j, 1 << (width - 1).bit_length(), 1)

    @property
    def rows_per_step(self) -> int:
        return self.block_j // self.row_slot

    @property
    def steps(self) -> int:
        in_d, in_h, _ = self.input_patch
        return in_d * -(-in_h // self.rows_per_step) * self.chunks

    def band_row(self, d: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The band row (step * block_j + column) at which the kernel reads input pixel (d, h, w) of a patch."""
        step = (d * -(-self.input_patch[1] // self.rows_per_step) + h // self.rows_per_step) * self.chunks
        step = step + w // self.block_j
        return step * self.block_j + h % self.rows_per_step * self.row_slot + w % self.block_j


def patch_shape(spec: ConvSpec) -> tuple[int, int, int]:
    """Of PATCH_SHAPES, the patch whose steps over all the patches of an image (the partial ones at
    the edges included) are fewest."""

    def steps_per_image(patch: tuple[int, int, int]) -> int:
        patches = patches_per_image(spec, patch)
        return patches * PatchGeometry.of(spec, replace(PATCH_CONFIG, patch=patch)).steps

    return min(PATCH_SHAPES, key=steps_per_image)


def patch_products_per_output(spec: ConvSpec) -> int:
    """The products the heuristic's patch tile computes per output: its reduction's depth."""
    return PatchGeometry.of(spec, replace(PATCH_CONFIG, patch=patch_shape(spec))).steps * PATCH_CONFIG.block_j


def patch_config(spec: ConvSpec) -> PatchConfig:
    """The heuristic's patch tile for a depthwise ``spec``: PATCH_CONFIG's (the interpreter's
    under it) with ``patch_shape``'s patches."""
    return replace(PATCH_CONFIG if gpu_tiles() else PATCH_INTERPRETER_CONFIG, patch=patch_shape(spec))


def patch_bands(weight: torch.Tensor, spec: ConvSpec, cfg: PatchConfig, flip: bool = False) -> torch.Tensor:
    """The band matrix of each channel of the depthwise ``weight`` (C, 1, T, R, S), transposed:
    (C, outputs, steps * block_j), element (p, k) the tap through which the input pixel the
    kernel reads at band row k (``PatchGeometry.band_row``) reaches output pixel p of a patch (W
    fastest), zero where none does; with ``flip``, of the filter flipped along every dimension."""
    w = as_3d(weight).flatten(1)
    if flip:
        w = w.flip(1)
    k, p = band_entries(spec, cfg, weight.device)
    band = w.new_zeros((w.shape[0], k.shape[0], PatchGeometry.of(spec, cfg).steps * cfg.block_j))
    band[:, p, k] = w[:, None, :].expand(-1, k.shape[0], -1)
    return band


def band_entries(spec: ConvSpec, cfg: PatchConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, p), each (outputs, taps): the band row k (``PatchGeometry.band_row``) at which output
    pixel p of a patch (W fastest) reads its input pixel of each tap. Built every call, as the
    band matrices are (a cached device tensor would be a CUDA graph's if first made in one)."""
    geometry = PatchGeometry.of(spec, cfg)
    outputs = torch.arange(math.prod(cfg.patch), device=device)
    t, r, s = torch.unravel_index(torch.arange(spec.taps, device=device), spec.kernel_size)
    p_d, p_h, p_w = (coord[:, None] for coord in torch.unravel_index(outputs, cfg.patch))
    dd, dh, dw = spec.dilation
    k = geometry.band_row(p_d + t * dd, p_h + r * dh, p_w + s * dw)
    return k, outputs[:, None].expand_as(k)


def tap_lines(spec: ConvSpec, cfg: PatchConfig, device: torch.device) -> torch.Tensor:
    """(patch rows, taps) integers: the line (ROW_SLOT band rows of one input row,
    ``PatchGeometry.band_row`` // row_slot) at which patch row q (a patch's outputs of one (D, H),
    H fastest) reads the first chunk of its input row of each tap (the next CHUNKS - 1 lines
    hold the rest of the row)."""
    geometry = PatchGeometry.of(spec, cfg)
    rows = torch.arange(cfg.patch[0] * cfg.patch[1], device=device)
    t, r, _ = torch.unravel_index(torch.arange(spec.taps, device=device), spec.kernel_size)
    q_d, q_h = (coord[:, None] for coord in torch.unravel_index(rows, cfg.patch[:2]))
    dd, dh, _ = spec.dilation
    return geometry.band_row(q_d + t * dd, q_h + r * dh, torch.zeros_like(t)) // geometry.row_slot


# The patch forward (and the input gradient, its forward of the flipped filter) as tuning sees
# it: per channel, (image, patch) rows by a patch's 16 outputs, over the input pixels a patch
# reads; keyed by the channel count too, which sets the grid's second axis. Launches with a fused
# residual or pre-activation are not timed.
PATCH_FORWARD = KernelKind(
    name="patch_forward",
    pass_="F",
    tiles=PATCH_TILES,
    interpreter_tile=PATCH_INTERPRETER_CONFIG.tile(),
    gemm_extents=lambda spec: (
        spec.output_pixels // MIN_DOT,
        MIN_DOT,
        PatchGeometry.of(spec, patch_config(spec)).steps * MIN_DOT,
    ),
    dense_gemm=lambda spec: (spec.output_pixels, 1, spec.taps),
    key_pixels=lambda spec: spec.output_pixels,
    key_layout=lambda input, output: layout_of(input),
    plan=lambda spec, x, w, b, y, tile: plan_patch_forward(
        x, w, b, spec, y, new_flag(x.device), cfg=PatchConfig.of(tile, patch_shape(spec))
    ),
    key_fields=lambda spec: (f"c{bucket_channels(spec.in_channels)}",),
    gemm_blocks=False,
)


def plan_patch_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    flag: torch.Tensor,
    epilogue: Epilogue = PLAIN,
    flip_filter: bool = False,
    cfg: PatchConfig | None = None,
) -> Launch:
    """The launch writing activation(conv(input, weight) + bias + residual) into ``out`` for a
    depthwise ``spec`` with unit steps over a channels-last ``input`` (``dispatch.uses_patch_kernel``),
    setting ``flag`` where a tile is not finite; with ``flip_filter``, of ``weight`` flipped along
    every spatial dimension. ``cfg`` overrides the tile that ``select_config`` picks (the
    heuristic's, ``patch_config``, unless tuned; always the heuristic's with a residual or a
    stored pre-activation)."""
    x, y = as_3d(input), as_3d(out)
    fused = epilogue.residual is not None or epilogue.pre_activation is not None
    if cfg is None and fused:
        cfg = patch_config(spec)
    elif cfg is None:
        tile = select_config(
            PATCH_FORWARD,
            spec,
            x.dtype,
            dot_precision(x),
            PATCH_FORWARD.key_layout(input, out),
            lambda t: plan_patch_forward(
                input, weight, bias, spec, out, flag, epilogue, flip_filter, PatchConfig.of(t, patch_shape(spec))
            ),
            patch_config(spec).tile(),
            x.device,
        )
        cfg = PatchConfig.of(tile, patch_shape(spec))
    geometry = PatchGeometry.of(spec, cfg)
    band = patch_bands(weight, spec, cfg, flip_filter)
    patches = patch_grid(spec, cfg.patch)
    rows = spec.batch * math.prod(patches)
    args = arguments.tensors(x=x, band=band) | arguments.output("y", y, bias, epilogue) | arguments.sizes(spec)
    args |= dict(C=spec.in_channels, ROWS=rows, STEPS=geometry.steps, patches=patches)
    args |= arguments.divisors("patches", patches) | arguments.flag(flag, y)
    in_d, in_h, in_w = geometry.input_patch
    constexprs = dict(PATCH_D=cfg.patch[0], PATCH_H=cfg.patch[1], PATCH_W=cfg.patch[2], IN_D=in_d, IN_H=in_h, IN_W=in_w)
    constexprs |= dict(ROW_SLOT=geometry.row_slot, CHUNKS=geometry.chunks, EVEN_C=spec.in_channels % cfg.block_c == 0)
    even_patches = rows % cfg.block_m == 0 and all(size % edge == 0 for size, edge in zip(spec.output_size, cfg.patch))
    constexprs |= dict(EVEN_PATCHES=even_patches, HALVES_OUTER=not COALESCE_TIES_TO_LAST_DIMENSION)
    constexprs |= arguments.output_flags(bias, epilogue)
    constexprs |= dict(
        INDEX_64=needs_int64(x, band, y, args["residual_ptr"]),
        ACC_DTYPE=accumulator_dtype(x.dtype),
        BLOCK_M=cfg.block_m,
        BLOCK_C=cfg.block_c,
        BLOCK_J=cfg.block_j,
    )
    grid = (triton.cdiv(rows, cfg.block_m), triton.cdiv(spec.in_channels, cfg.block_c))
    return Launch(patch_forward_kernel, grid, args, constexprs, cfg.num_warps, cfg.num_stages)


def patch_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    epilogue: Epilogue = PLAIN,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Write ``plan_patch_forward``'s result into ``out`` and return its non-finite flag, behind
    which the direct kernel must recompute the output (``dispatch.forward``)."""
    flag = new_flag(input.device)
    plan_patch_forward(input, weight, bias, spec, out, flag, epilogue, flip_filter)()
    return flag


def plan_patch_weight_grad(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    spec: ConvSpec,
    g_partial: torch.Tensor,
    db_partial: torch.Tensor | None,
    cfg: PatchConfig,
) -> Launch:
    """The launch writing ``patch_weight_grad_kernel``'s partials of G (``patch_partials_shape``)
    and db (SPLIT_K, C) for a depthwise ``spec`` with unit steps over
    channels-last ``input`` and ``grad_output`` (``dispatch.uses_patch_weight_grad``), with
    ``cfg``'s tile; SPLIT_K a multiple of its patch blocks (``patch_weight_grad_splits``)."""
    x, dy = as_3d(input), as_3d(grad_output)
    geometry = PatchGeometry.of(spec, cfg)
    patches = patch_grid(spec, cfg.patch)
    patch_blocks = -(-math.prod(patches) // cfg.block_m)
    split_k = g_partial.shape[0]
    images_per_split = -(-spec.batch // (split_k // patch_blocks))
    args = arguments.tensors(x=x, dy=dy) | arguments.sizes(spec)
    args |= dict(g_partial_ptr=g_partial, g_partial_strides=g_partial.stride())
    args |= dict(db_partial_ptr=db_partial if db_partial is not None else g_partial)
    args |= dict(C=spec.in_channels, N=spec.batch, IMAGES_PER_SPLIT=images_per_split, PATCH_BLOCKS=patch_blocks)
    tail_patches = math.prod(patches) - (patch_blocks - 1) * cfg.block_m
    args |= dict(TAIL_PATCHES=tail_patches)
    args |= dict(patches=patches, dilation_w=spec.dilation[2])
    _, in_h, in_w = geometry.input_patch
    constexprs = dict(PATCH_D=cfg.patch[0], PATCH_H=cfg.patch[1], PATCH_W=cfg.patch[2], IN_H=in_h, IN_W=in_w)
    constexprs |= dict(FILTER_W=spec.kernel_size[2])
    constexprs |= dict(ROW_SLOT=geometry.row_slot, CHUNKS=geometry.chunks, HAS_BIAS_GRAD=db_partial is not None)
    constexprs |= dict(PACKED_TAIL=cfg.block_m // tail_patches > 1, HALVES_OUTER=not COALESCE_TIES_TO_LAST_DIMENSION)
    constexprs |= dict(
        INDEX_64=needs_int64(x, dy, g_partial),
        ACC_DTYPE=accumulator_dtype(x.dtype),
        BLOCK_M=cfg.block_m,
        BLOCK_C=cfg.block_c,
        BLOCK_J=cfg.block_j,
    )
    grid = (geometry.steps, triton.cdiv(spec.in_channels, cfg.block_c), split_k)
    return Launch(patch_weight_grad_kernel, grid, args, constexprs, cfg.num_warps, cfg.num_stages)


def patch_grid(spec: ConvSpec, patch: tuple[int, int, int]) -> tuple[int, int, int]:
    """The patches of ``patch`` output pixels along (D, H, W) that cover an image's output,
    partial ones included."""
    return tuple(-(-size // edge) for size, edge in zip(spec.output_size, patch))


def patches_per_image(spec: ConvSpec, patch: tuple[int, int, int]) -> int:
    """The product of ``patch_grid``."""
    return math.prod(patch_grid(spec, patch))


def fit_patch_rows(spec: ConvSpec, tile: KernelConfig) -> KernelConfig:
    """``tile`` with its patches (rows) clipped to an image's, a power of two and at least a
    dot's 16: the weight gradient's rows are patches of one image (``patch_weight_grad_kernel``)."""
    patches = patches_per_image(spec, patch_shape(spec))
    return replace(tile, block_m=max(MIN_DOT, min(tile.block_m, 1 << (patches - 1).bit_length())))


def patch_weight_grad_tile(spec: ConvSpec) -> KernelConfig:
    """The heuristic's patch weight-gradient tile: the first of PATCH_WEIGHT_GRAD_TILES (the
    interpreter's patch tile under it) fitted to the image (``fit_patch_rows``)."""
    return fit_patch_rows(spec, PATCH_WEIGHT_GRAD_TILES[0] if gpu_tiles() else PATCH_INTERPRETER_CONFIG.tile())


def patch_weight_grad_splits(spec: ConvSpec, cfg: PatchConfig) -> int:
    """Programs per (step, channel block): the patch blocks of an image times the splits of the
    images, enough to fill the GPU with each walking at least 16 images (``split_k_for``)."""
    patch_blocks = -(-patches_per_image(spec, cfg.patch) // cfg.block_m)
    programs = PatchGeometry.of(spec, cfg).steps * -(-spec.in_channels // cfg.block_c) * patch_blocks
    image_splits = split_k_for(programs, spec.batch, 1)
    return patch_blocks * -(-spec.batch // -(-spec.batch // image_splits))


def patch_weight_grad(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    spec: ConvSpec,
    grad_weight: torch.Tensor,
    grad_bias: torch.Tensor | None,
    tile: KernelConfig | None = None,
) -> torch.Tensor:
    """Write d(loss)/d(weight) into ``grad_weight`` (C, 1, T, R, S) and, if given, d(loss)/d(bias)
    through ``patch_weight_grad_kernel`` (over a channels-last copy of ``grad_output`` where its
    channels are not contiguous) and ``patch_taps_kernel``, with ``tile`` (what ``select_config``
    picks by default), and return the flag behind which the direct kernel must compute them
    again (``dispatch.weight_grad``): set where a tap's gradient is not finite. Off the taps'
    entries G multiplies dy's zeros past the output's edge by input pixels torch pairs with
    nothing, so a NaN or infinity there makes NaN of a tap torch leaves finite, while any
    non-finite product torch makes lands on a tap's entries."""
    dy = gemm_operand(as_3d(grad_output))
    if tile is None:
        tile = select_config(
            PATCH_WEIGHT_GRAD,
            spec,
            input.dtype,
            dot_precision(input),
            PATCH_WEIGHT_GRAD.key_layout(input, dy),
            lambda t: functools.partial(patch_weight_grad, grad_output, input, spec, grad_weight, grad_bias, t),
            patch_weight_grad_tile(spec),
            input.device,
        )
    # A tile cached under the key's pixel bucket may have been tuned on larger images.
    cfg = PatchConfig.of(fit_patch_rows(spec, tile), patch_shape(spec))
    g_partial, db_partial = patch_weight_grad_partials(input, spec, cfg, grad_bias is not None)
    plan_patch_weight_grad(dy, input, spec, g_partial, db_partial, cfg)()
    flag = new_flag(input.device)
    plan_patch_taps(g_partial, db_partial, spec, cfg, grad_weight, grad_bias, flag)()
    return flag


def plan_patch_taps(
    g_partial: torch.Tensor,
    db_partial: torch.Tensor | None,
    spec: ConvSpec,
    cfg: PatchConfig,
    grad_weight: torch.Tensor,
    grad_bias: torch.Tensor | None,
    flag: torch.Tensor,
) -> Launch:
    """The launch of ``patch_taps_kernel`` over ``patch_weight_grad_kernel``'s partials with
    ``cfg``: the gradients into ``grad_weight`` and ``grad_bias`` (contiguous), ``flag`` set where
    a tap's is not finite."""
    return Launch(
        patch_taps_kernel,
        (triton.cdiv(spec.in_channels, TAPS_CHANNEL_BLOCK), triton.cdiv(spec.taps, TAPS_BLOCK)),
        dict(g_partial_ptr=g_partial, g_partial_strides=g_partial.stride(), dw_ptr=grad_weight)
        | dict(lines_ptr=tap_lines(spec, cfg, g_partial.device))
        | dict(db_partial_ptr=db_partial if db_partial is not None else g_partial)
        | dict(db_ptr=grad_bias if grad_bias is not None else grad_weight, flag_ptr=flag)
        | dict(C=spec.in_channels, TAPS=spec.taps, SPLIT_K=g_partial.shape[0]),
        dict(
            PATCH_ROWS=cfg.patch[0] * cfg.patch[1],
            FILTER_W=spec.kernel_size[2],
            CHUNKS=PatchGeometry.of(spec, cfg).chunks,
            HAS_BIAS_GRAD=grad_bias is not None,
            INDEX_64=needs_int64(g_partial),
            ACC_DTYPE=accumulator_dtype(g_partial.dtype),
            BLOCK_C=TAPS_CHANNEL_BLOCK,
            BLOCK_T=TAPS_BLOCK,
        ),
        num_warps=TAPS_CHANNEL_BLOCK * TAPS_BLOCK // 32,
        num_stages=1,
    )


# The tile of ``patch_taps_kernel``, channels by taps: a (channel, tap) per thread, whose loads of
# a split's entries (patch rows x chunks) are all in flight at once; small, so that a few hundred
# channels still spread over many programs (each gathers from L2, the partials having just been
# written).
TAPS_CHANNEL_BLOCK = 4
TAPS_BLOCK = 16


@triton.jit
def patch_taps_kernel(
    g_partial_ptr, lines_ptr, dw_ptr, db_partial_ptr, db_ptr, flag_ptr,
    C, TAPS, SPLIT_K, g_partial_strides,
    PATCH_ROWS: tl.constexpr, FILTER_W: tl.constexpr, CHUNKS: tl.constexpr, HAS_BIAS_GRAD: tl.constexpr,
    INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    """dw[c, t] = the sum over splits z, patch rows q and the CHUNKS lines of an input row from
    line(q, t) on of ``patch_weight_grad_kernel``'s partials [z, c, line, q, t's filter column]
    (``tap_lines``); db[c] = the sum of db's partials over z, by the first column of programs.
    Sets *flag_ptr where a tap's gradient is not finite. One launch for what would otherwise be
    several torch operations.

    Args:
        g_partial_ptr, g_partial_strides: (SPLIT_K, C, lines, PATCH_ROWS, FILTER_W), any strides
            (5), the last 1.
        lines_ptr: (PATCH_ROWS, TAPS) integers, contiguous: line(q, t).
        dw_ptr: (C, TAPS) contiguous, the gradient's dtype. db_partial_ptr: (SPLIT_K, C)
            contiguous; db_ptr: (C,) contiguous; both used only if HAS_BIAS_GRAD.
        flag_ptr: one int32 (``non_finite.new_flag``).
        INDEX_64: compute offsets in int64. ACC_DTYPE: float32, or float64 for float64.
        Grid: (cdiv(C, BLOCK_C), cdiv(TAPS, BLOCK_T)).
    """
    pid_c, pid_t, _ = program_ids(INDEX_64)
    sg_split, sg_c, sg_line, sg_q, _ = g_partial_strides
    channels = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    taps = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    mask_c = channels < C
    mask_t = taps < TAPS
    mask = mask_c[:, None] & mask_t[None, :]
    dw = tl.zeros((BLOCK_C, BLOCK_T), dtype=ACC_DTYPE)
    for split in range(0, SPLIT_K):
        for q in tl.static_range(PATCH_ROWS):
            line = tl.load(lines_ptr + q * TAPS + taps, mask=mask_t, other=0)
            offs = split * sg_split + channels[:, None] * sg_c + (line * sg_line + q * sg_q + taps % FILTER_W)[None, :]
            for chunk in tl.static_range(CHUNKS):
                dw += tl.load(g_partial_ptr + offs + chunk * sg_line, mask=mask, other=0.0)
    tl.store(dw_ptr + channels[:, None] * TAPS + taps[None, :], dw, mask=mask_c[:, None] & mask_t[None, :])
    flag_tile_not_finite(dw, mask_c, mask_t, flag_ptr)
    if HAS_BIAS_GRAD:
        if pid_t == 0:
            db = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE)
            for split in range(0, SPLIT_K):
                db += tl.load(db_partial_ptr + split * C + channels, mask=mask_c, other=0.0)
            tl.store(db_ptr + channels, db, mask=mask_c)


def patch_weight_grad_partials(
    input: torch.Tensor, spec: ConvSpec, cfg: PatchConfig, with_bias: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``patch_weight_grad_kernel``'s float32 partials of G and, if wanted, db, for ``cfg``'s
    splits (``patch_weight_grad_splits``)."""
    acc = accumulator_torch_dtype(input.dtype)
    g_partial = input.new_empty(patch_partials_shape(spec, cfg), dtype=acc)
    db_partial = input.new_empty((g_partial.shape[0], spec.in_channels), dtype=acc) if with_bias else None
    return g_partial, db_partial


def patch_partials_shape(spec: ConvSpec, cfg: PatchConfig) -> tuple[int, int, int, int, int]:
    """(SPLIT_K, C, lines, patch rows, filter columns): the shape of ``patch_weight_grad_kernel``'s
    partials of G."""
    geometry = PatchGeometry.of(spec, cfg)
    lines = geometry.steps * geometry.rows_per_step
    splits = patch_weight_grad_splits(spec, cfg)
    return (splits, spec.in_channels, lines, cfg.patch[0] * cfg.patch[1], spec.kernel_size[2])


def heuristic_partials_shape(spec: ConvSpec) -> tuple[int, int, int, int, int]:
    """``patch_partials_shape`` of the heuristic's tile (what the dispatch rule sizes)."""
    return patch_partials_shape(spec, PatchConfig.of(patch_weight_grad_tile(spec), patch_shape(spec)))


def _plan_weight_grad_with_tile(
    spec: ConvSpec, x: torch.Tensor, y: torch.Tensor, with_bias: bool, tile: KernelConfig
) -> Launch:
    """The patch weight gradient's launch with ``tile`` and its own partials (what compile checks build)."""
    cfg = PatchConfig.of(fit_patch_rows(spec, tile), patch_shape(spec))
    g_partial, db_partial = patch_weight_grad_partials(x, spec, cfg, with_bias)
    return plan_patch_weight_grad(y, x, spec, g_partial, db_partial, cfg)


# The patch weight gradient as tuning sees it: per channel, the band rows of an input patch by a
# patch's outputs, reduced over (image, patch) rows; its tiles' patches clipped to an image's
# (``fit_patch_rows``), the splits the rule's (``patch_weight_grad_splits``), the sums and the
# taps' gather timed with it. Keyed by the channel count too, as the forward.
PATCH_WEIGHT_GRAD = KernelKind(
    name="patch_weight_grad",
    pass_="W",
    tiles=PATCH_WEIGHT_GRAD_TILES,
    interpreter_tile=PATCH_INTERPRETER_CONFIG.tile(),
    gemm_extents=lambda spec: (
        PatchGeometry.of(spec, patch_config(spec)).steps * MIN_DOT,
        MIN_DOT,
        spec.output_pixels // MIN_DOT,
    ),
    dense_gemm=lambda spec: (1, spec.taps, spec.output_pixels),
    key_pixels=lambda spec: spec.output_pixels,
    key_layout=lambda input, output: layout_of(input),
    plan=lambda spec, x, w, b, y, tile: _plan_weight_grad_with_tile(spec, x, y, b is not None, tile),
    key_fields=lambda spec: (f"c{bucket_channels(spec.in_channels)}",),
    gemm_blocks=False,
    fit=fit_patch_rows,
)
