"""Depthwise convolution with wide filter rows on the matrix unit: a GEMM against a band matrix.

A depthwise convolution has no operand that two channels share, so it has no GEMM in the usual
sense, and the direct kernels compute it with one FMA per multiply-add on CUDA cores. Along W,
though, one output row segment of one channel is a matrix product: for a segment of BLOCK_W
output columns starting at ow0 (convolution step 1 along W),

    y[row, ow0 + i] += sum over j of x[row', ow0 - LEAD + j] * band[j, i],
    band[j, i] = w[s] where s * DIL_W = j - i - (LEAD - PAD_W), zero elsewhere,

with row' the input row a leading tap (t, r) reads. Rows of one channel (batch, D, H and the
segments along W) are the GEMM's M, the segment's columns its N and the input columns its
reduction, taken BLOCK_J at a time. The band is mostly zeros: each column holds S of the
BLOCK_J * CHUNKS products the matrix unit computes (a waste of 1.5x for 31 taps, 11x for 7,
27x for 3), which its 16x more multiply-adds per clock than FP32 FMAs pay for where a direct
kernel on CUDA cores is bound by instruction issue (``perf/NOTES.md``, "Band kernels").

Loads along W are contiguous and, where every row starts at a multiple of a vector of up to 16
bytes (``row_unit``), vectors: each segment's first column is moved back from PAD_W to LEAD, a
multiple of the vector, so that whole vectors are inside or outside the row. Rows that would load
in vectors under 8 bytes are read from a copy widened to 16-byte multiples (``aligned_rows``).

The input gradient of a depthwise convolution with unit steps is the same product against the
flipped filter (``banded_input_grad``). The weight gradient is, per channel and filter row, one
GEMM over the rows whose diagonals are the taps (``banded_weight_grad_kernel``).

Non-finite values: the products include the band's zeros (and, in the weight gradient, the
output gradient's zeros past a row's end), so a NaN or an infinity would make NaN of outputs
(taps) whose products never meet it in torch (IEEE 0 * inf). Each program therefore flags a
result that is not finite (``non_finite.py``), and a second launch with the same grid computes
the flagged ones again with torch's products only (``banded_forward_recompute_kernel``,
``banded_weight_grad_recompute_kernel``); for finite data its programs read one flag each and
return.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import torch
import triton
import triton.language as tl

from ..spec import ConvSpec, as_3d, needs_int64
from ..tuning.configs import (
    BANDED_FORWARD_TILES,
    BANDED_INTERPRETER_CONFIG,
    BANDED_WEIGHT_GRAD_TILES,
    MIN_DOT,
    BandedConfig,
    KernelConfig,
    banded_chunks,
    banded_config,
    banded_lead,
    banded_weight_grad_config,
    banded_weight_grad_lines,
    banded_weight_grad_rows,
    bucket_row_width,
    split_k_for,
)
from ..tuning.key import layout_of
from ..tuning.kinds import KernelKind
from ..tuning.select import select_config
from . import arguments
from .common import Launch, accumulator_dtype, dot_operand, dot_precision
from .epilogue import PLAIN, Epilogue, finish_output
from .indexing import program_ids, unravel_pixels
from .non_finite import not_finite
from .pad_input import widen_rows
from .reduction import in_range, next_step, zero_index
from .split_k import partial_buffers, sum_splits


@triton.jit
def banded_forward_kernel(
    x_ptr, band_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr, flags_ptr,
    K_G, TAP_ROWS, input_size, output_size, SEGMENTS, ROWS, padding,
    x_strides, band_strides, y_strides, bias_stride, residual_strides,
    R: tl.constexpr, CONV_STRIDE_D: tl.constexpr, CONV_STRIDE_H: tl.constexpr,
    DIL_D: tl.constexpr, DIL_H: tl.constexpr, LEAD: tl.constexpr, CHUNKS: tl.constexpr, CHECK_D: tl.constexpr,
    X_UNIT: tl.constexpr, Y_UNIT: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_PRE_ACTIVATION: tl.constexpr,
    INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_J: tl.constexpr,
):  # fmt: skip
    """y = activation(z), z[n, k, o] = sum over taps of x[n, k // K_G, i(o, tap)] * w[k, 0, tap]
    + bias[k] + residual[n, k, o], for one input channel per group (depthwise) and a unit
    convolution step along W, with w's filter rows given as band matrices (``band_matrices``).

    Args:
        x_ptr, x_strides: input (N, C, D, H, W); any strides (5, in elements).
        band_ptr, band_strides: (K, T * R * CHUNKS * BLOCK_J, BLOCK_W): filter row (t, r) of
            channel k as its band matrix, rows (t * R + r) * CHUNKS * BLOCK_J onwards; any strides
            (3), BLOCK_W's 1 for vector loads.
        y_ptr, y_strides: output (N, K, D_OUT, H_OUT, W_OUT); any strides (5).
        bias_ptr, bias_stride: bias (K,) and its stride; read only if HAS_BIAS.
        residual_ptr, residual_strides: added before the activation, y's shape, any strides (5);
            read only if HAS_RESIDUAL.
        z_ptr: the pre-activation z, y's shape and strides; written only if STORE_PRE_ACTIVATION.
        flags_ptr: (cdiv(ROWS, BLOCK_M), K) int, contiguous: program (m, k) writes whether its
            tile was not finite (``banded_forward_recompute_kernel`` reads it).
        K_G: output channels per group. TAP_ROWS: T * R, the filter rows.
        input_size: (D, H, W). output_size: (D_OUT, H_OUT, W_OUT). padding: leading padding (D, H, W).
        SEGMENTS: cdiv(W_OUT, BLOCK_W) segments per output row; ROWS = N * D_OUT * H_OUT * SEGMENTS.
        R: the filter's height. CONV_STRIDE_D/H: the convolution's steps along D and H (1 along W).
        DIL_D/H: the spacing of the taps along D and H.
        LEAD: input columns read before a segment's first output column (the padding along W
            rounded up to a multiple of X_UNIT). CHUNKS: BLOCK_J-deep reduction steps per filter
            row, covering the segment's input columns but, where a row is one segment, those
            past the input row's end that its first column's taps do not reach
            (``banded_chunks``).
        X_UNIT, Y_UNIT: every row of x (y) starts at a multiple of this many elements and W
            (W_OUT) is one (``row_unit``): loads (stores) along W are vectors of it.
        HAS_BIAS: add the bias. ACTIVATION: the activation's name ("none" for none).
        HAS_RESIDUAL: add the residual. STORE_PRE_ACTIVATION: write z.
        INDEX_64: compute offsets in int64. ACC_DTYPE: float32, or float64 for float64.
        PRECISION: tl.dot input precision ("ieee" or "tf32").
        BLOCK_M, BLOCK_W, BLOCK_J: rows, output columns and input columns of a step's product.
        Grid: (cdiv(ROWS, BLOCK_M), K).
    """
    pid_m, k, _ = program_ids(INDEX_64)
    D, H, W = input_size
    sx_n, sx_c, sx_d, sx_h, sx_w = x_strides
    sb_k, sb_j, sb_i = band_strides
    mask_m, n, od, oh, ow0, id0, ih0 = segment_rows(
        pid_m, ROWS, H, output_size, SEGMENTS, padding, CONV_STRIDE_D, CONV_STRIDE_H, BLOCK_M, BLOCK_W
    )
    j = tl.arange(0, BLOCK_J)
    i = tl.arange(0, BLOCK_W)
    # Everything per row and column is computed once; a step adds scalars. Offsets are counted
    # in units and scaled at the end, which is how Triton sees they are multiples of one.
    x_unit: tl.constexpr = X_UNIT
    x_rows = (
        n * (sx_n // x_unit) + (k // K_G) * (sx_c // x_unit) + id0 * (sx_d // x_unit) + ih0 * (sx_h // x_unit)
        + (ow0 - LEAD) // x_unit * sx_w
    ) * x_unit  # fmt: skip
    # Columns in x_unit blocks: with whole vectors in or out of the row, the bounds test is then
    # constant along a vector.
    cols = ((ow0 - LEAD) // x_unit)[:, None] + (j // x_unit)[None, :]
    x_offs = x_rows[:, None] + j[None, :] * sx_w
    # With one step per filter row (CHUNKS == 1) a thread's columns are the same at every step:
    # a column vector outside the row gets the input row H, which no filter row's offset brings
    # back inside, so one unsigned test per copy covers row and column (a copy with its address
    # and test is 8 SASS, was 9). The test along D is left out where nothing pads along D.
    ih0_folded = tl.where(in_range(cols, W // x_unit, INDEX_64), ih0[:, None], H)
    band_ptrs = band_ptr + k * sb_k + j[:, None] * sb_j + i[None, :] * sb_i

    acc = tl.zeros((BLOCK_M, BLOCK_W), dtype=ACC_DTYPE)
    kt = zero_index(INDEX_64)
    kr = zero_index(INDEX_64)
    chunk = zero_index(INDEX_64)
    # One flat loop over (filter row, chunk), so that the loads of the next filter rows are in
    # flight while this one's products run. (A runtime trip count: Triton 3.9 did not pipeline
    # the loop with a constant one.)
    for _ in range(0, TAP_ROWS * CHUNKS):
        dd = kt * DIL_D
        dh = kr * DIL_H
        if CHUNKS == 1:
            chunk_cols = 0
            x_mask = in_range(ih0_folded + dh, H, INDEX_64)
        else:
            chunk_cols = chunk * (BLOCK_J // x_unit)
            x_mask = in_range(ih0 + dh, H, INDEX_64)[:, None] & in_range(cols + chunk_cols, W // x_unit, INDEX_64)
        if CHECK_D:
            x_mask &= in_range(id0 + dd, D, INDEX_64)[:, None]
        x_step = (dd * (sx_d // x_unit) + dh * (sx_h // x_unit) + chunk_cols * sx_w) * x_unit
        # Cached in L1 (".ca"; Triton's 16-byte copies bypass it otherwise): the next filter rows
        # read the same input rows, one row down.
        a = tl.load(x_ptr + x_step + x_offs, mask=x_mask, other=0.0, cache_modifier=".ca")
        band = tl.load(band_ptrs)
        acc = tl.dot(dot_operand(a), dot_operand(band), acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        band_ptrs += BLOCK_J * sb_j
        # The chunk counts like the GEMMs' channel block, the filter row's (t, r) like their taps.
        chunk, _, kt, kr = next_step(chunk, 0, kt, kr, CHUNKS, TAP_ROWS // R, R, 1)

    # The band's zeros multiply every input column a segment reads, so a NaN or infinity among
    # them makes NaN of outputs whose taps never reach it (IEEE 0 * inf): of the whole row, since
    # every output column multiplies every column read. A non-finite weight reaches the first
    # column at least, whose taps every step keeps (``banded_chunks``), as torch's does (its
    # products with the padding included). A tile whose first column's sum is not finite is
    # flagged (an overflowing sum only costs a needless recomputation), and
    # ``banded_forward_recompute_kernel`` computes it again tap by tap, as torch does. (Summing
    # the whole tile cost 2-3x the issue time of one column.)
    total = tl.sum(tl.sum(tl.where(i[None, :] == 0, acc, 0.0), axis=1), axis=0)
    tl.store(flags_ptr + pid_m * tl.num_programs(1) + k, not_finite(total))
    finish_band_tile(
        acc, k, mask_m, n, od, oh, ow0, bias_ptr, bias_stride, y_ptr, y_strides, residual_ptr,
        residual_strides, z_ptr, output_size[2], HAS_BIAS, ACTIVATION, HAS_RESIDUAL, STORE_PRE_ACTIVATION,
        Y_UNIT, BLOCK_W,
    )  # fmt: skip


@triton.jit
def segment_rows(
    pid_m, ROWS, H, output_size, SEGMENTS, padding,
    CONV_STRIDE_D: tl.constexpr, CONV_STRIDE_H: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    """Row block ``pid_m`` of the band kernels' M (``banded_forward_kernel``): which rows are real,
    each row's (n, od, oh), its segment's first output column ow0, and the input depth and row its
    filter's first tap reads (negative in the padding; rows past the last start at H, where no
    tap brings them inside)."""
    D_OUT, H_OUT, _ = output_size
    pad_d, pad_h, _ = padding
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = rows < ROWS
    n, od, oh, segment = unravel_pixels(rows, D_OUT, H_OUT, SEGMENTS)
    ow0 = segment * BLOCK_W
    id0 = od * CONV_STRIDE_D - pad_d
    ih0 = tl.where(mask_m, oh * CONV_STRIDE_H - pad_h, H)
    return mask_m, n, od, oh, ow0, id0, ih0


@triton.jit
def finish_band_tile(
    acc, k, mask_m, n, od, oh, ow0, bias_ptr, bias_stride, y_ptr, y_strides, residual_ptr, residual_strides,
    z_ptr, W_OUT, HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
    STORE_PRE_ACTIVATION: tl.constexpr, Y_UNIT: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    """The fused epilogue (``finish_output``) of a band tile: output rows (n, k, od, oh) from
    column ow0, BLOCK_W columns each; stores along W are vectors of Y_UNIT."""
    if HAS_BIAS:
        acc += tl.load(bias_ptr + k * bias_stride).to(acc.dtype)
    sy_n, sy_k, sy_d, sy_h, sy_w = y_strides
    sr_n, sr_k, sr_d, sr_h, sr_w = residual_strides
    i = tl.arange(0, BLOCK_W)
    y_unit: tl.constexpr = Y_UNIT
    y_rows = (
        n * (sy_n // y_unit) + k * (sy_k // y_unit) + od * (sy_d // y_unit) + oh * (sy_h // y_unit)
        + ow0 // y_unit * sy_w
    ) * y_unit  # fmt: skip
    r_rows = n * sr_n + k * sr_k + od * sr_d + oh * sr_h + ow0 * sr_w
    out_cols = (ow0 // y_unit)[:, None] + (i // y_unit)[None, :]
    mask = mask_m[:, None] & (out_cols < W_OUT // y_unit)
    finish_output(
        acc,
        y_ptr + y_rows[:, None] + i[None, :] * sy_w,
        z_ptr + y_rows[:, None] + i[None, :] * sy_w,
        residual_ptr + r_rows[:, None] + i[None, :] * sr_w,
        mask,
        ACTIVATION,
        HAS_RESIDUAL,
        STORE_PRE_ACTIVATION,
    )


@triton.jit
def banded_forward_recompute_kernel(
    flags_ptr, x_ptr, w_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr,
    K_G, TAP_ROWS, S, input_size, output_size, SEGMENTS, ROWS, padding,
    x_strides, w_strides, y_strides, bias_stride, residual_strides,
    R: tl.constexpr, CONV_STRIDE_D: tl.constexpr, CONV_STRIDE_H: tl.constexpr,
    DIL_D: tl.constexpr, DIL_H: tl.constexpr, DIL_W: tl.constexpr, FLIP: tl.constexpr, Y_UNIT: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_PRE_ACTIVATION: tl.constexpr,
    INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    """The tiles ``banded_forward_kernel`` flagged, computed again with one multiply-add per tap
    and output (torch's products, so torch's NaN and infinities), epilogue included. Other
    programs read their flag and return: for finite data that is all this launch does.

    Args:
        flags_ptr: (cdiv(ROWS, BLOCK_M), K) int, contiguous: the forward's flags, one per program.
        w_ptr, w_strides: the weight (K, 1, T, R, S); any strides (5); flipped along every
            spatial dimension if FLIP (the input gradient's forward).
        S: the filter's width, a runtime value: a loop over 31 taps unrolled spilled (Triton 3.6,
            sm_80, with the fused epilogue). DIL_W: the spacing of the taps along W. The rest as
            in ``banded_forward_kernel``, whose launch this one mirrors (grid, tile, geometry,
            epilogue).
        Grid: (cdiv(ROWS, BLOCK_M), K).
    """
    pid_m, k, _ = program_ids(INDEX_64)
    if tl.load(flags_ptr + pid_m * tl.num_programs(1) + k) == 0:
        return
    D, H, W = input_size
    pad_w = padding[2]
    sx_n, sx_c, sx_d, sx_h, sx_w = x_strides
    sw_k, sw_c, sw_t, sw_r, sw_s = w_strides
    mask_m, n, od, oh, ow0, id0, ih0 = segment_rows(
        pid_m, ROWS, H, output_size, SEGMENTS, padding, CONV_STRIDE_D, CONV_STRIDE_H, BLOCK_M, BLOCK_W
    )
    columns = ow0[:, None] + tl.arange(0, BLOCK_W)[None, :] - pad_w
    x_rows = x_ptr + n * sx_n + (k // K_G) * sx_c
    acc = tl.zeros((BLOCK_M, BLOCK_W), dtype=ACC_DTYPE)
    for tap_row in range(0, TAP_ROWS):
        id_ = id0 + (tap_row // R) * DIL_D
        ih = ih0 + (tap_row % R) * DIL_H
        row_ok = in_range(id_, D, INDEX_64) & in_range(ih, H, INDEX_64)
        w_row = TAP_ROWS - 1 - tap_row if FLIP else tap_row
        for s in range(0, S):
            iw = columns + s * DIL_W
            x = tl.load(
                x_rows[:, None] + id_[:, None] * sx_d + ih[:, None] * sx_h + iw * sx_w,
                mask=row_ok[:, None] & in_range(iw, W, INDEX_64),
                other=0.0,
            )
            w_tap = S - 1 - s if FLIP else s
            w = tl.load(w_ptr + k * sw_k + (w_row // R) * sw_t + (w_row % R) * sw_r + w_tap * sw_s)
            acc += x.to(ACC_DTYPE) * w.to(ACC_DTYPE)
    finish_band_tile(
        acc, k, mask_m, n, od, oh, ow0, bias_ptr, bias_stride, y_ptr, y_strides, residual_ptr,
        residual_strides, z_ptr, output_size[2], HAS_BIAS, ACTIVATION, HAS_RESIDUAL, STORE_PRE_ACTIVATION,
        Y_UNIT, BLOCK_W,
    )  # fmt: skip


@triton.jit
def banded_weight_grad_kernel(
    x_ptr, dy_ptr, dw_partial_ptr, db_partial_ptr, flags_ptr,
    K_G, input_size, output_size, SEGMENTS, LINES, WALK, SPLIT_WALK, padding,
    x_strides, dy_strides,
    R: tl.constexpr, S: tl.constexpr, TAPS_PAD: tl.constexpr, CONV_STRIDE_D: tl.constexpr,
    CONV_STRIDE_H: tl.constexpr, DIL_D: tl.constexpr, DIL_H: tl.constexpr, DIL_W: tl.constexpr,
    PAD_W: tl.constexpr, LEAD: tl.constexpr,
    X_UNIT: tl.constexpr, DY_UNIT: tl.constexpr, HAS_BIAS_GRAD: tl.constexpr,
    INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_W: tl.constexpr, COLUMNS: tl.constexpr, STACK: tl.constexpr,
):  # fmt: skip
    """Partial dw[k, 0, t, r, s] (and db[k]) over a block of lines and a stretch of the walk: for
    filter row (t, r) of channel k, G[j, i] = sum over rows of x[row', ow0 - LEAD + j] *
    dy[row, ow0 + i], a GEMM over the rows, then dw[s] = the sum of G along the diagonal
    j - i = s * DIL_W + LEAD - PAD_W.

    G's rows are STACK blocks of COLUMNS // STACK, one per filter row (t, r0), (t, r0 + 1), ...:
    where a filter row's G needs fewer rows than a wgmma's 64, consecutive filter rows share one
    product (the same dy, x one input row further down per block) instead of padding it with
    columns past the input row's end.

    A row is a line (n, od) at a walk position (oh, segment). A step takes BLOCK_M lines at one
    walk position, so everything that changes from step to step (the output row, the input row
    and whether it is inside, the segment) is one scalar for all of them; the lines' offsets are
    computed once.

    Args:
        x_ptr, x_strides: input (N, C, D, H, W); any strides (5, in elements).
        dy_ptr, dy_strides: output gradient (N, K, D_OUT, H_OUT, W_OUT); any strides (5).
        dw_partial_ptr: (SPLIT_K, K, T * R * S) contiguous, ACC_DTYPE; program (k, row group, z)
            writes its filter rows of slice z.
        db_partial_ptr: (SPLIT_K, K) contiguous, ACC_DTYPE; written only if HAS_BIAS_GRAD.
        flags_ptr: (K, T * cdiv(R, STACK), SPLIT_K) int, contiguous: whether the program's dw
            was not finite (``banded_weight_grad_recompute_kernel`` reads it).
        K_G: output channels per group. input_size: (D, H, W). output_size: (D_OUT, H_OUT, W_OUT),
            W_OUT dy's row width (a widened copy's is more than the output's: zeros).
        padding: leading padding (D, H, W); PAD_W is its W entry, as a constexpr.
        SEGMENTS: segments of BLOCK_W per output row. LINES: N * D_OUT. WALK: H_OUT * SEGMENTS
            positions, SPLIT_WALK of them per program (the last program's fewer).
        R, S: the filter's height and width; TAPS_PAD: S rounded up to a power of 2.
        CONV_STRIDE_D/H: the convolution's steps along D and H (1 along W). DIL_D/H/W: the
            spacing of the taps.
        LEAD, X_UNIT: as in ``banded_forward_kernel``; DY_UNIT: dy's (``row_unit``).
        HAS_BIAS_GRAD: filter row 0's programs also sum dy into db.
        INDEX_64: compute offsets in int64. ACC_DTYPE: float32, or float64 for float64.
        PRECISION: tl.dot input precision ("ieee" or "tf32").
        BLOCK_M: lines per step. BLOCK_W: output columns of a segment. COLUMNS: G's rows, STACK
            blocks of the input columns a segment reads (where a row is one segment, up to the
            row's end or every output column's first tap) rounded up to a power of 2, in all at
            least the 64 of a wgmma. STACK: filter rows per program (``banded_weight_grad_rows``).
        Grid: (K, T * cdiv(R, STACK), cdiv(LINES, BLOCK_M) * cdiv(WALK, SPLIT_WALK)), axis 2 line
            block major.
    """
    k, row_group, split = program_ids(INDEX_64)
    D, H, W = input_size
    D_OUT, H_OUT, W_OUT = output_size
    pad_d, pad_h, _ = padding
    sx_n, sx_c, sx_d, sx_h, sx_w = x_strides
    sdy_n, sdy_k, sdy_d, sdy_h, sdy_w = dy_strides
    x_unit: tl.constexpr = X_UNIT
    dy_unit: tl.constexpr = DY_UNIT
    row_columns: tl.constexpr = COLUMNS // STACK
    tap_t, r0, tap_rows = stacked_filter_rows(row_group, R, STACK)
    j = tl.arange(0, COLUMNS)
    i = tl.arange(0, BLOCK_W)
    # G's row j: column j % row_columns of filter row r0 + j // row_columns (a scalar, r0, for one
    # block). Filter rows past the filter's last read from H rows below, so that every step's
    # input row test fails for them.
    stacked = j // row_columns if STACK > 1 else 0
    # (Subtractions, not j % row_columns nor column // x_unit: Triton then still sees whole
    # vectors, contiguous and aligned, with one bounds test each.)
    column = j - stacked * row_columns
    column_units = j // x_unit - stacked * (row_columns // x_unit)
    dh = tl.where(r0 + stacked < R, (r0 + stacked) * DIL_H, H + pad_h)
    lines, mask_l, n, od, id_, line_ok, first = walk_lines(
        split, tap_t, D, D_OUT, pad_d, LINES, WALK, SPLIT_WALK, CONV_STRIDE_D, DIL_D, INDEX_64, BLOCK_M
    )
    x_lines = (n * (sx_n // x_unit) + (k // K_G) * (sx_c // x_unit) + id_ * (sx_d // x_unit)) * x_unit
    dy_lines = (n * (sdy_n // dy_unit) + k * (sdy_k // dy_unit) + od * (sdy_d // dy_unit)) * dy_unit
    x_columns = ((r0 + stacked) * DIL_H * (sx_h // x_unit)) * x_unit + column * sx_w
    x_offs = x_lines[:, None] + x_columns[None, :]
    dy_offs = dy_lines[:, None] + i[None, :] * sdy_w

    acc = tl.zeros((COLUMNS, BLOCK_W), dtype=ACC_DTYPE)
    bias_acc = tl.zeros((BLOCK_W,), dtype=ACC_DTYPE)
    oh = first // SEGMENTS
    segment = first % SEGMENTS
    for _ in range(0, tl.minimum(SPLIT_WALK, WALK - first)):
        ow0 = segment * BLOCK_W
        ih = oh * CONV_STRIDE_H - pad_h
        dy_step = (oh * (sdy_h // dy_unit) + ow0 // dy_unit * sdy_w) * dy_unit
        dy_cols = ow0 // dy_unit + i // dy_unit
        dy = tl.load(
            dy_ptr + dy_step + dy_offs, mask=mask_l[:, None] & (dy_cols < W_OUT // dy_unit)[None, :], other=0.0
        )
        if HAS_BIAS_GRAD:
            bias_acc += tl.sum(dy.to(ACC_DTYPE), axis=0)
        x_step = (ih * (sx_h // x_unit) + (ow0 - LEAD) // x_unit * sx_w) * x_unit
        cols = (ow0 - LEAD) // x_unit + column_units
        in_row = (cols >= 0) & (cols < W // x_unit)
        if STACK == 1:
            # One input row for all of G: tested per line (a vector: the interpreter turns bool
            # vector & bool scalar into int32), which takes fewer registers on sm_80.
            x_mask = (line_ok & in_range(ih + dh + 0 * lines, H, INDEX_64))[:, None] & in_row[None, :]
        else:
            x_mask = line_ok[:, None] & (in_range(ih + dh, H, INDEX_64) & in_row)[None, :]
        a = tl.load(x_ptr + x_step + x_offs, mask=x_mask, other=0.0)
        acc = tl.dot(dot_operand(tl.trans(a)), dot_operand(dy), acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        oh, segment = next_walk_position(oh, segment, SEGMENTS)

    # dw[s] of filter row r0 + f: G's diagonal j - i = s * DIL_W + LEAD - PAD_W in block f.
    # Past a row's end dy's zeros meet input columns that torch pairs with no output at that tap:
    # a NaN or infinity there makes NaN of a tap torch leaves finite. And where a row is one
    # segment G leaves out the padding past the row's end, whose zeros torch multiplies with dy:
    # a non-finite dy value still meets its output column's first tap, which G keeps. A program
    # whose dw is not finite is flagged, and ``banded_weight_grad_recompute_kernel`` redoes it
    # with torch's products.
    diagonal = column[:, None] - i[None, :] - (LEAD - PAD_W)
    taps = tl.arange(0, TAPS_PAD)
    K = tl.num_programs(0)
    dw_rows = dw_partial_ptr + (split * K + k) * tap_rows * S + (tap_t * R + r0) * S
    total = tl.zeros((), dtype=ACC_DTYPE)
    # (A loop, not unrolled: 31 taps of 2 blocks unrolled spilled.)
    for f in range(0, STACK):
        in_block = (stacked == f)[:, None] if STACK > 1 else True
        dw = tl.zeros((TAPS_PAD,), dtype=ACC_DTYPE)
        for s in tl.static_range(S):
            on_tap = tl.sum(tl.sum(tl.where((diagonal == s * DIL_W) & in_block, acc, 0.0), axis=1), axis=0)
            dw = tl.where(taps == s, on_tap, dw)
        # (The row's test as a vector: the interpreter turns bool vector & bool scalar into int32.)
        row_ok = r0 + f + 0 * taps < R
        tl.store(dw_rows + f * S + taps, dw, mask=(taps < S) & row_ok)
        total += tl.sum(tl.where(row_ok, dw, 0.0), axis=0)
    tl.store(flags_ptr + (k * tl.num_programs(1) + row_group) * tl.num_programs(2) + split, not_finite(total))
    if HAS_BIAS_GRAD:
        if row_group == 0:
            tl.store(db_partial_ptr + split * K + k, tl.sum(bias_acc, axis=0))


@triton.jit
def walk_lines(
    split, tap_t, D, D_OUT, pad_d, LINES, WALK, SPLIT_WALK, CONV_STRIDE_D: tl.constexpr,
    DIL_D: tl.constexpr, INDEX_64: tl.constexpr, BLOCK_M: tl.constexpr,
):  # fmt: skip
    """The lines (n, od) of a weight-gradient program (``banded_weight_grad_kernel``) on axis-2
    id ``split``, whether each is real, the input depth its filter rows at depth ``tap_t`` read
    and whether that is inside, and the program's first walk position."""
    walk_splits = tl.cdiv(WALK, SPLIT_WALK)
    lines = (split // walk_splits) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_l = lines < LINES
    n = lines // D_OUT
    od = lines % D_OUT
    id_ = od * CONV_STRIDE_D - pad_d + tap_t * DIL_D
    line_ok = mask_l & in_range(id_, D, INDEX_64)
    return lines, mask_l, n, od, id_, line_ok, (split % walk_splits) * SPLIT_WALK


@triton.jit
def stacked_filter_rows(row_group, R: tl.constexpr, STACK: tl.constexpr):
    """The filter depth t and first filter row r0 of the weight gradient's programs on axis-1 id
    ``row_group`` (filter rows (t, r0) to (t, r0 + STACK - 1), those past R not the filter's),
    and the filter's rows T * R."""
    groups: tl.constexpr = (R + STACK - 1) // STACK
    return row_group // groups, (row_group % groups) * STACK, tl.num_programs(1) // groups * R


@triton.jit
def next_walk_position(oh, segment, SEGMENTS):
    """The walk position (output row, segment) after (oh, segment)."""
    segment += 1
    row_done = segment == SEGMENTS
    return tl.where(row_done, oh + 1, oh), tl.where(row_done, 0, segment)


@triton.jit
def banded_weight_grad_recompute_kernel(
    flags_ptr, x_ptr, dy_ptr, dw_partial_ptr,
    K_G, input_size, output_size, SEGMENTS, LINES, WALK, SPLIT_WALK, padding,
    x_strides, dy_strides,
    R: tl.constexpr, S: tl.constexpr, CONV_STRIDE_D: tl.constexpr,
    CONV_STRIDE_H: tl.constexpr, DIL_D: tl.constexpr, DIL_H: tl.constexpr, DIL_W: tl.constexpr,
    PAD_W: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_W: tl.constexpr, STACK: tl.constexpr,
):  # fmt: skip
    """The partials ``banded_weight_grad_kernel`` flagged, computed again with torch's products
    only: dw[s] += x[row', ow + s * DIL_W - PAD_W] * dy[row, ow] over the program's lines and walk
    positions, output columns ow < W_OUT, for each of its filter rows. Other programs read their
    flag and return.

    Args:
        flags_ptr: (K, T * cdiv(R, STACK), SPLIT_K) int, contiguous: the weight gradient's flags.
        output_size: (D_OUT, H_OUT, W_OUT), W_OUT the output's row width (not a widened copy's).
        The rest as in ``banded_weight_grad_kernel``, whose launch this one mirrors (grid,
        lines per step, segments, walk split, filter rows); db's partials are left as it wrote
        them.
        Grid: (K, T * cdiv(R, STACK), cdiv(LINES, BLOCK_M) * cdiv(WALK, SPLIT_WALK)).
    """
    k, row_group, split = program_ids(INDEX_64)
    if tl.load(flags_ptr + (k * tl.num_programs(1) + row_group) * tl.num_programs(2) + split) == 0:
        return
    D, H, W = input_size
    D_OUT, H_OUT, W_OUT = output_size
    pad_d, pad_h, _ = padding
    sx_n, sx_c, sx_d, sx_h, sx_w = x_strides
    sdy_n, sdy_k, sdy_d, sdy_h, sdy_w = dy_strides
    tap_t, r0, tap_rows = stacked_filter_rows(row_group, R, STACK)
    lines, mask_l, n, od, id_, line_ok, first = walk_lines(
        split, tap_t, D, D_OUT, pad_d, LINES, WALK, SPLIT_WALK, CONV_STRIDE_D, DIL_D, INDEX_64, BLOCK_M
    )
    x_lines = x_ptr + n * sx_n + (k // K_G) * sx_c + id_ * sx_d
    dy_lines = dy_ptr + n * sdy_n + k * sdy_k + od * sdy_d
    i = tl.arange(0, BLOCK_W)
    dw_rows = dw_partial_ptr + (split * tl.num_programs(0) + k) * tap_rows * S + (tap_t * R + r0) * S
    # Tap by tap of each of the program's filter rows, the walk inside (dy read once per tap: this
    # runs only for non-finite data, and one tile of each operand at a time keeps it from
    # spilling); each tap's sum stored as it is done.
    for tap in range(0, tl.minimum(STACK, R - r0) * S):
        r = r0 + tap // S
        s = tap % S
        on_tap = tl.zeros((BLOCK_M, BLOCK_W), dtype=ACC_DTYPE)
        oh = first // SEGMENTS
        segment = first % SEGMENTS
        for _ in range(0, tl.minimum(SPLIT_WALK, WALK - first)):
            ow = segment * BLOCK_W + i
            in_output = mask_l[:, None] & (ow < W_OUT)[None, :]
            dy = tl.load(dy_lines[:, None] + oh * sdy_h + ow[None, :] * sdy_w, mask=in_output, other=0.0)
            ih = oh * CONV_STRIDE_H - pad_h + r * DIL_H
            iw = ow + s * DIL_W - PAD_W
            # (The row test as a vector: the interpreter turns bool vector & bool scalar into int32.)
            rows_ok = line_ok & in_range(ih + 0 * lines, H, INDEX_64)
            x_ok = in_output & rows_ok[:, None] & in_range(iw, W, INDEX_64)
            x = tl.load(x_lines[:, None] + ih * sx_h + iw[None, :] * sx_w, mask=x_ok, other=0.0)
            on_tap += x.to(ACC_DTYPE) * dy.to(ACC_DTYPE)
            oh, segment = next_walk_position(oh, segment, SEGMENTS)
        tl.store(dw_rows + tap, tl.sum(tl.sum(on_tap, axis=1), axis=0))


def row_unit(t: torch.Tensor) -> int:
    """The most elements, up to 16 bytes, that every W row of the (N, C, D, H, W) ``t`` starts at a
    multiple of and spans a multiple of: 1 unless W's stride is 1."""
    if t.stride(-1) != 1:
        return 1
    unit = 16 // t.element_size()
    while unit > 1 and not (
        t.data_ptr() % (unit * t.element_size()) == 0
        and all(stride % unit == 0 for stride in t.stride()[:-1])
        and t.shape[-1] % unit == 0
    ):
        unit //= 2
    return unit


# Band elements a program of ``band_matrix_kernel`` writes: 16 per thread of 4 warps.
BAND_ELEMENTS_PER_PROGRAM = 2048
# Rows whose loads along W would be narrower than this many bytes are copied into wider rows
# first (``pad_input.widen_rows``): an asynchronous copy takes 4, 8 or 16 bytes, and with 4 the
# kernels' address arithmetic per load outweighed the copy's one read and write of the tensor
# (suite shapes 31 and 32, rows of 14).
MIN_LOAD_BYTES = 8
# What the copy aligns rows to: 16-byte vectors.
WIDE_LOAD_BYTES = 16


def aligned_input(x: torch.Tensor, spec: ConvSpec) -> tuple[torch.Tensor, ConvSpec]:
    """The (N, C, D, H, W) input as the band kernels read it (``aligned_rows``), and the problem
    over it (``read_spec``)."""
    return aligned_rows(x), read_spec(x, spec)


def read_spec(x: torch.Tensor, spec: ConvSpec) -> ConvSpec:
    """The problem over the (N, C, D, H, W) input ``x`` as the band kernels read it, rows whole
    vectors of ``read_unit`` (``aligned_rows``): a wider input's extra zeros are more right
    padding."""
    unit = read_unit(x)
    return replace(spec, input_size=(*spec.input_size[:2], -(-spec.input_size[2] // unit) * unit))


def read_unit(t: torch.Tensor) -> int:
    """The vector the band kernels read ``t``'s rows in: its ``row_unit``, or 16 bytes' worth where
    that is under MIN_LOAD_BYTES and they read a widened copy (``aligned_rows``)."""
    unit = row_unit(t)
    return unit if unit * t.element_size() >= MIN_LOAD_BYTES else WIDE_LOAD_BYTES // t.element_size()


def aligned_rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself, or where its rows load in vectors under MIN_LOAD_BYTES a copy with rows
    zero-filled to 16-byte multiples (for the output gradient the weight gradient reads, whose
    extra zeros are output columns adding nothing)."""
    unit = read_unit(t)
    return t if unit == row_unit(t) else widen_rows(t, unit)


def band_bytes(spec: ConvSpec, x: torch.Tensor) -> int:
    """Bytes of the band matrices the forward of ``spec`` over the (N, C, D, H, W) ``x`` builds."""
    t, r, _ = spec.kernel_size
    unit = read_unit(x)
    cfg = banded_config(spec, unit)
    depth = banded_chunks(spec, cfg, unit) * cfg.block_j
    return spec.out_channels * t * r * depth * cfg.block_w * x.element_size()


@triton.jit
def band_matrix_kernel(
    w_ptr, band_ptr, BAND_ROWS, DEPTH, w_strides,
    T: tl.constexpr, R: tl.constexpr, S: tl.constexpr, DIL_W: tl.constexpr, SHIFT: tl.constexpr,
    FLIP: tl.constexpr, INDEX_64: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    """band[k, g, i] for g = row * DEPTH + j: w[k, 0, t, r, s] with s * DIL_W = j - i - SHIFT, zero
    where there is none: filter row (t, r) = divmod(row, R) of channel k as its band matrix; of
    the filter flipped along every dimension if FLIP. BLOCK_ROWS band rows per program.

    Args:
        w_ptr, w_strides: the weight (K, 1, T, R, S); any strides (5, in elements).
        band_ptr: (K, BAND_ROWS, BLOCK_W) contiguous. BAND_ROWS: T * R * DEPTH. DEPTH: the band
            rows per filter row.
        T, R, S: the filter's size. DIL_W: the taps' spacing along W. SHIFT: LEAD - PAD_W
            (``banded_forward_kernel``). FLIP: read w[k, 0, T-1-t, R-1-r, S-1-s] instead.
        INDEX_64: compute offsets in int64. BLOCK_ROWS: band rows per program. BLOCK_W: the
            band's columns (a segment's width).
        Grid: (K, cdiv(BAND_ROWS, BLOCK_ROWS)).
    """
    k, block, _ = program_ids(INDEX_64)
    sw_k, sw_c, sw_t, sw_r, sw_s = w_strides
    g = block * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    i = tl.arange(0, BLOCK_W)
    row = g // DEPTH
    reach = (g % DEPTH)[:, None] - i[None, :] - SHIFT
    in_band = (reach >= 0) & (reach < S * DIL_W) & (reach % DIL_W == 0) & (g < BAND_ROWS)[:, None]
    tap = reach // DIL_W
    if FLIP:
        row = T * R - 1 - row
        tap = S - 1 - tap
    w_rows = w_ptr + k * sw_k + (row // R) * sw_t + (row % R) * sw_r
    band = tl.load(w_rows[:, None] + tap * sw_s, mask=in_band, other=0.0)
    tl.store(band_ptr + (k * BAND_ROWS + g)[:, None] * BLOCK_W + i[None, :], band, mask=(g < BAND_ROWS)[:, None])


def band_matrices(
    weight: torch.Tensor, spec: ConvSpec, block_w: int, depth: int, lead: int, flip: bool = False
) -> torch.Tensor:
    """Each filter row of the depthwise ``weight`` (K, 1, T, R, S) as its band matrix, stacked: (K,
    T * R * depth, block_w), element (j, i) of row (t, r) the tap s with s * DIL_W = j - i - (lead -
    PAD_W), zero where there is none. Input column ow0 - lead + j times it adds to output column
    ow0 + i; with ``flip``, of the filter flipped along every dimension. One kernel writes them."""
    w = as_3d(weight)
    k = w.shape[0]
    t, r, s = spec.kernel_size
    band_rows = t * r * depth
    band = weight.new_empty((k, band_rows, block_w))
    block_rows = max(MIN_DOT, BAND_ELEMENTS_PER_PROGRAM // block_w)
    if band.numel():
        Launch(
            band_matrix_kernel,
            (k, triton.cdiv(band_rows, block_rows)),
            dict(**arguments.tensors(w=w), band_ptr=band, BAND_ROWS=band_rows, DEPTH=depth),
            dict(T=t, R=r, S=s, DIL_W=spec.dilation[2], SHIFT=lead - spec.pad_lo[2], FLIP=flip)
            | {"INDEX_64": needs_int64(w, band), "BLOCK_ROWS": block_rows, "BLOCK_W": block_w},
        )()
    return band


# The band forward (and the input gradient, its forward of the flipped filter) as tuning sees
# it: per channel, rows (lines and segments) by the row's output columns, over the columns a
# segment reads; keyed by the row width and the filter row's reach too, which decide the
# segment. Launches with a fused residual or pre-activation are not timed.
BANDED_FORWARD = KernelKind(
    name="banded_forward",
    pass_="F",
    tiles=BANDED_FORWARD_TILES,
    interpreter_tile=BANDED_INTERPRETER_CONFIG.tile(),
    gemm_extents=lambda spec: (
        spec.batch * spec.output_size[0] * spec.output_size[1],
        spec.output_size[2],
        spec.output_size[2] + (spec.kernel_size[2] - 1) * spec.dilation[2],
    ),
    dense_gemm=lambda spec: (spec.output_pixels, 1, spec.taps),
    key_pixels=lambda spec: spec.output_pixels,
    key_layout=lambda input, output: layout_of(input),
    plan=lambda spec, x, w, b, y, tile: plan_banded_forward(x, w, b, spec, y, cfg=BandedConfig.of(tile)),
    key_fields=lambda spec: (
        f"w{bucket_row_width(spec.output_size[2])}",
        f"r{(spec.kernel_size[2] - 1) * spec.dilation[2]}",
    ),
)


def plan_banded_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    epilogue: Epilogue = PLAIN,
    cfg: BandedConfig | None = None,
    flip_filter: bool = False,
) -> Launch:
    """The launch writing activation(conv(input, weight) + bias + residual) into ``out`` for a
    depthwise ``spec`` with a unit step along W (``dispatch.uses_banded_kernel``); with
    ``flip_filter``, of ``weight`` flipped along every spatial dimension. ``cfg`` overrides the
    tile that ``select_config`` picks (the heuristic's, ``banded_config``, unless tuned; always
    the heuristic's with a residual or a stored pre-activation)."""
    x, y = as_3d(input), as_3d(out)
    x, wide_spec = aligned_input(x, spec)
    x_unit = row_unit(x)
    fused = epilogue.residual is not None or epilogue.pre_activation is not None
    if cfg is None and fused:
        # A residual or a stored pre-activation needs registers of its own: the heuristic's tile
        # with fewer rows, not timed (the key does not tell fused epilogues apart).
        cfg = banded_config(wide_spec, x_unit, fused_epilogue=True)
    elif cfg is None:
        tile = select_config(
            BANDED_FORWARD,
            spec,
            x.dtype,
            dot_precision(x),
            BANDED_FORWARD.key_layout(input, out),
            lambda c: plan_banded_forward(input, weight, bias, spec, out, epilogue, BandedConfig.of(c), flip_filter),
            banded_config(wide_spec, x_unit).tile(),
            x.device,
        )
        cfg = BandedConfig.of(tile)
    # Counted over the input's own columns: a wider copy's extra ones are zeros.
    chunks = banded_chunks(spec, cfg, x_unit)
    spec = wide_spec
    t, r, _ = spec.kernel_size
    pad_w = spec.pad_lo[2]
    lead = banded_lead(pad_w, x_unit)
    band = band_matrices(weight, spec, cfg.block_w, chunks * cfg.block_j, lead, flip_filter)
    d_out, h_out, w_out = spec.output_size
    segments = triton.cdiv(w_out, cfg.block_w)
    rows = spec.batch * d_out * h_out * segments
    args = arguments.tensors(x=x, band=band) | arguments.output("y", y, bias, epilogue) | arguments.sizes(spec)
    args |= dict(K_G=spec.out_channels_per_group, TAP_ROWS=t * r, SEGMENTS=segments, ROWS=rows)
    constexprs = dict(R=r, CONV_STRIDE_D=spec.stride[0], CONV_STRIDE_H=spec.stride[1])
    constexprs |= dict(DIL_D=spec.dilation[0], DIL_H=spec.dilation[1], LEAD=lead, CHUNKS=chunks)
    constexprs |= dict(CHECK_D=spec.padded[0])
    constexprs |= dict(X_UNIT=x_unit, Y_UNIT=row_unit(y))
    constexprs |= arguments.output_flags(bias, epilogue)
    constexprs |= dict(
        INDEX_64=needs_int64(x, band, y, args["residual_ptr"]),
        ACC_DTYPE=accumulator_dtype(x.dtype),
        PRECISION=dot_precision(x),
        BLOCK_M=cfg.block_m,
        BLOCK_W=cfg.block_w,
        BLOCK_J=cfg.block_j,
    )
    grid = (triton.cdiv(rows, cfg.block_m), spec.out_channels)
    args["flags_ptr"] = torch.empty(grid, dtype=torch.int32, device=x.device)
    return Launch(banded_forward_kernel, grid, args, constexprs, cfg.num_warps, cfg.num_stages)


# Constexprs the recomputation shares with the band forward it follows.
_RECOMPUTE_SHARED = (
    "R", "CONV_STRIDE_D", "CONV_STRIDE_H", "DIL_D", "DIL_H", "Y_UNIT", "HAS_BIAS", "ACTIVATION",
    "HAS_RESIDUAL", "STORE_PRE_ACTIVATION", "INDEX_64", "ACC_DTYPE", "BLOCK_M", "BLOCK_W",
)  # fmt: skip
# Elements of the forward's (BLOCK_M x BLOCK_W) accumulator per thread of its recomputation, the
# epilogue's pointers in registers beside them: 64 (a 256 x 64 tile on 8 warps) spilled with the
# fused epilogue on sm_80 under Triton 3.6. Smaller tiles take fewer warps (at least 8: 4 on a
# 128 x 16 tile spilled with the fused epilogue on sm_90; at most 16), which is what the
# recomputation costs for finite data: every warp of every program reads its flag and returns.
RECOMPUTE_ELEMENTS_PER_THREAD = 32
# The weight gradient's recomputation holds three (BLOCK_M x BLOCK_W) tiles (x, dy and their
# products' sum): at most this many elements of each per thread, at least its launch's warps
# (64 x 64 on 4 warps spilled 20 bytes on sm_90 under Triton 3.9).
WEIGHT_GRAD_RECOMPUTE_ELEMENTS_PER_THREAD = 16


def plan_banded_forward_recompute(
    band: Launch, weight: torch.Tensor, spec: ConvSpec, flip_filter: bool = False
) -> Launch:
    """The launch recomputing, tap by tap, the tiles that the band forward ``band`` (planned by
    ``plan_banded_forward`` for ``spec`` and ``weight``, flipped if ``flip_filter``) flagged as not
    finite; for finite data each of its programs reads one flag and returns."""
    args = {name: value for name, value in band.args.items() if not name.startswith("band_")}
    args |= arguments.tensors(w=as_3d(weight)) | dict(S=spec.kernel_size[2])
    constexprs = {name: band.constexprs[name] for name in _RECOMPUTE_SHARED}
    constexprs |= dict(DIL_W=spec.dilation[2], FLIP=flip_filter)
    tile = constexprs["BLOCK_M"] * constexprs["BLOCK_W"]
    warps = min(16, max(8, tile // (32 * RECOMPUTE_ELEMENTS_PER_THREAD)))
    return Launch(banded_forward_recompute_kernel, band.grid, args, constexprs, warps, num_stages=1)


def banded_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    epilogue: Epilogue = PLAIN,
    flip_filter: bool = False,
) -> None:
    """Write activation(conv(input, weight) + bias + residual) into ``out`` as torch would for a
    depthwise ``spec`` with a unit step along W (``dispatch.uses_banded_kernel``): the band
    forward, then the recomputation of any tile it flagged. With ``flip_filter``, of ``weight``
    flipped along every spatial dimension."""
    band = plan_banded_forward(input, weight, bias, spec, out, epilogue, flip_filter=flip_filter)
    band()
    plan_banded_forward_recompute(band, weight, spec, flip_filter)()


def banded_input_grad(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    spec: ConvSpec,
    grad_input: torch.Tensor,
    bias: torch.Tensor | None = None,
    epilogue: Epilogue = PLAIN,
) -> None:
    """Write d(loss)/d(input) into ``grad_input`` (with ``bias`` and ``epilogue``, a transposed
    convolution's output) for a depthwise ``spec`` with unit steps, one output channel per group
    (``dispatch.uses_banded_input_grad``): ``banded_forward`` of the flipped filter."""
    forward = spec.input_grad_as_forward()
    banded_forward(grad_output, weight, bias, forward, grad_input, epilogue, flip_filter=True)


def weight_grad_tiling(spec: ConvSpec, walk_splits: int, cfg: BandedConfig) -> tuple[BandedConfig, int, int, int]:
    """The weight gradient's tile ``cfg`` with its lines per step cut to the problem's
    (``banded_weight_grad_lines``), walk positions, positions per program, and programs per
    (channel, filter row): line blocks times walk splits, one partial each."""
    d_out, h_out, w_out = spec.output_size
    lines = spec.batch * d_out
    cfg = replace(cfg, block_m=banded_weight_grad_lines(spec, cfg.block_m))
    walk = h_out * triton.cdiv(w_out, cfg.block_w)
    split_walk = triton.cdiv(walk, walk_splits)
    return cfg, walk, split_walk, triton.cdiv(lines, cfg.block_m) * triton.cdiv(walk, split_walk)


def plan_banded_weight_grad(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    spec: ConvSpec,
    dw_partial: torch.Tensor,
    db_partial: torch.Tensor | None,
    walk_splits: int,
    cfg: BandedConfig,
) -> Launch:
    """The launch writing partials of dw (and db) for a depthwise ``spec`` with a unit step along
    W, with the tile ``cfg``, the walk split ``walk_splits`` ways; ``dw_partial`` is (partials,
    K * T * R * S) with the partials ``weight_grad_tiling`` counts."""
    dy, x = as_3d(grad_output), as_3d(input)
    x, spec = aligned_input(x, spec)
    dy = aligned_rows(dy)
    t, r, s = spec.kernel_size
    pad_w = spec.pad_lo[2]
    x_unit = row_unit(x)
    cfg, walk, split_walk, partials = weight_grad_tiling(spec, walk_splits, cfg)
    assert dw_partial.shape[0] == partials, (dw_partial.shape, partials)
    lead = banded_lead(pad_w, x_unit)
    columns, stack = banded_weight_grad_rows(spec, cfg.block_w, x_unit)
    d_out, h_out, w_out = spec.output_size
    args = arguments.tensors(x=x, dy=dy) | arguments.sizes(spec) | dict(output_size=(d_out, h_out, dy.shape[-1]))
    args |= dict(dw_partial_ptr=dw_partial, db_partial_ptr=db_partial if db_partial is not None else dw_partial)
    args |= dict(K_G=spec.out_channels_per_group, SEGMENTS=triton.cdiv(w_out, cfg.block_w))
    args |= dict(LINES=spec.batch * d_out, WALK=walk, SPLIT_WALK=split_walk)
    constexprs = dict(R=r, S=s, TAPS_PAD=triton.next_power_of_2(s), CONV_STRIDE_D=spec.stride[0])
    constexprs |= dict(CONV_STRIDE_H=spec.stride[1], PAD_W=pad_w, LEAD=lead)
    constexprs |= dict(zip(("DIL_D", "DIL_H", "DIL_W"), spec.dilation))
    constexprs |= dict(X_UNIT=x_unit, DY_UNIT=row_unit(dy), HAS_BIAS_GRAD=db_partial is not None)
    constexprs |= dict(
        INDEX_64=needs_int64(x, dy, dw_partial),
        ACC_DTYPE=accumulator_dtype(x.dtype),
        PRECISION=dot_precision(x),
        BLOCK_M=cfg.block_m,
        BLOCK_W=cfg.block_w,
        COLUMNS=columns,
        STACK=stack,
    )
    grid = (spec.out_channels, t * triton.cdiv(r, stack), partials)
    args["flags_ptr"] = torch.empty(grid, dtype=torch.int32, device=x.device)
    return Launch(banded_weight_grad_kernel, grid, args, constexprs, cfg.num_warps, cfg.num_stages)


# What the weight gradient's recomputation takes of the launch it follows.
_WEIGHT_GRAD_RECOMPUTE_ARGS = (
    "flags_ptr", "x_ptr", "dy_ptr", "dw_partial_ptr", "K_G", "input_size", "SEGMENTS", "LINES", "WALK",
    "SPLIT_WALK", "padding", "x_strides", "dy_strides",
)  # fmt: skip
_WEIGHT_GRAD_RECOMPUTE_CONSTEXPRS = (
    "R", "S", "CONV_STRIDE_D", "CONV_STRIDE_H", "DIL_D", "DIL_H", "DIL_W", "PAD_W",
    "INDEX_64", "ACC_DTYPE", "BLOCK_M", "BLOCK_W", "STACK",
)  # fmt: skip


def plan_banded_weight_grad_recompute(band: Launch, spec: ConvSpec) -> Launch:
    """The launch recomputing, with torch's products only, the partials that the weight gradient
    ``band`` (planned by ``plan_banded_weight_grad`` for ``spec``) flagged as not finite; for
    finite data each of its programs reads one flag and returns."""
    args = {name: band.args[name] for name in _WEIGHT_GRAD_RECOMPUTE_ARGS} | dict(output_size=spec.output_size)
    constexprs = {name: band.constexprs[name] for name in _WEIGHT_GRAD_RECOMPUTE_CONSTEXPRS}
    tile = constexprs["BLOCK_M"] * constexprs["BLOCK_W"]
    warps = max(band.num_warps, tile // (32 * WEIGHT_GRAD_RECOMPUTE_ELEMENTS_PER_THREAD))
    return Launch(banded_weight_grad_recompute_kernel, band.grid, args, constexprs, warps, num_stages=1)


def _weight_grad_partials(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    spec: ConvSpec,
    cfg: BandedConfig,
    walk_splits: int | None,
    with_bias: bool,
) -> tuple[int, torch.Tensor, torch.Tensor | None]:
    """The walk split for the tile ``cfg`` (``walk_splits`` if given; else split only where the
    channels' filter rows and line blocks leave SMs idle) and the partial buffers of dw (and db)."""
    if walk_splits is None:
        t, r, _ = spec.kernel_size
        _, stack = banded_weight_grad_rows(read_spec(as_3d(input), spec), cfg.block_w, read_unit(as_3d(input)))
        _, walk, _, line_blocks = weight_grad_tiling(spec, 1, cfg)
        walk_splits = split_k_for(spec.out_channels * t * triton.cdiv(r, stack) * line_blocks, walk, 1)
    _, _, _, partials = weight_grad_tiling(spec, walk_splits, cfg)
    weights = spec.out_channels * spec.taps
    dw_partial, db_partial = partial_buffers(grad_output, partials, weights, spec.out_channels if with_bias else None)
    return walk_splits, dw_partial, db_partial


def _plan_weight_grad_with_tile(
    spec: ConvSpec, x: torch.Tensor, dy: torch.Tensor, with_bias: bool, tile: KernelConfig
) -> Launch:
    """The weight gradient's launch with ``tile`` and its own walk split and partials (what
    compile checks build)."""
    cfg = BandedConfig.of(tile)
    walk_splits, dw_partial, db_partial = _weight_grad_partials(dy, x, spec, cfg, None, with_bias)
    return plan_banded_weight_grad(dy, x, spec, dw_partial, db_partial, walk_splits, cfg)


# The band weight gradient as tuning sees it: lines per step by segment columns, each tile with
# the walk split of the heuristic's rule for it and its split sums timed with it; keyed like the
# forward (row width, filter row's reach). Its GEMM per channel and filter row: G, the columns a
# segment reads by its outputs, reduced over the lines and walk positions.
BANDED_WEIGHT_GRAD = KernelKind(
    name="banded_weight_grad",
    pass_="W",
    tiles=BANDED_WEIGHT_GRAD_TILES,
    interpreter_tile=BANDED_INTERPRETER_CONFIG.tile(),
    gemm_extents=lambda spec: (
        spec.output_size[2] + (spec.kernel_size[2] - 1) * spec.dilation[2],
        spec.output_size[2],
        spec.batch * spec.output_size[0] * spec.output_size[1],
    ),
    dense_gemm=lambda spec: (1, spec.taps, spec.output_pixels),
    key_pixels=lambda spec: spec.output_pixels,
    key_layout=lambda input, output: layout_of(input),
    plan=lambda spec, x, w, b, y, tile: _plan_weight_grad_with_tile(spec, x, y, b is not None, tile),
    key_fields=BANDED_FORWARD.key_fields,
    gemm_blocks=False,
    fit=lambda spec, tile: replace(tile, block_m=banded_weight_grad_lines(spec, tile.block_m)),
)


def banded_weight_grad(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    spec: ConvSpec,
    grad_weight: torch.Tensor,
    grad_bias: torch.Tensor | None = None,
    walk_splits: int | None = None,
    cfg: BandedConfig | None = None,
) -> None:
    """Write d(loss)/d(weight) into ``grad_weight`` (contiguous) and, if given, d(loss)/d(bias), for
    a depthwise ``spec`` with a unit step along W (``dispatch.uses_banded_weight_grad``). ``cfg``
    overrides the tile ``select_config`` picks (the heuristic's, ``banded_weight_grad_config``,
    unless tuned); ``walk_splits`` the split of its rule. Partials that are not finite are
    computed again with torch's products only (``banded_weight_grad_recompute_kernel``); the
    partials are summed in a fixed order (deterministic)."""
    if cfg is None:
        tile = select_config(
            BANDED_WEIGHT_GRAD, spec, input.dtype, dot_precision(input), BANDED_WEIGHT_GRAD.key_layout(input, grad_output),
            lambda c: functools.partial(
                banded_weight_grad, grad_output, input, spec, grad_weight, grad_bias, walk_splits, BandedConfig.of(c)
            ),
            BANDED_WEIGHT_GRAD.clipped(spec, banded_weight_grad_config(spec, read_unit(as_3d(input))).tile()),
            input.device,
        )  # fmt: skip
        cfg = BandedConfig.of(tile)
    walk_splits, dw_partial, db_partial = _weight_grad_partials(
        grad_output, input, spec, cfg, walk_splits, grad_bias is not None
    )
    band = plan_banded_weight_grad(grad_output, input, spec, dw_partial, db_partial, walk_splits, cfg)
    band()
    plan_banded_weight_grad_recompute(band, spec)()
    sum_splits(dw_partial, grad_weight)
    if grad_bias is not None:
        sum_splits(db_partial, grad_bias)
