"""Direct convolution for depthwise and few-channels-per-group convolutions.

With fewer than 16 input channels per group, a matrix unit would pad each group's reduction to
16 and waste most of its work (16x for depthwise). These kernels instead compute exactly the
useful multiply-adds on CUDA cores.

A tile is (pixel groups) x (channels), channels innermost, so that channels-last tensors load in
16-byte vectors along channels. A pixel group (a "group" in the kernels: BLOCK_G, PIXEL_GROUPS)
is ``PIXELS`` consecutive pixels of one row along W,
all held by one thread: the taps of a filter row read overlapping input columns, and with the
filter sizes, convolution steps and dilations constexpr every (pixel, tap) pair's column is a constant
offset, so each column is loaded once per row and shared by all the taps that read it (the
compiler merges the identical loads). Coordinates are unravelled once per program, so the loops
divide only by constexpr steps (shifts and multiplies), never by a runtime value.

Channel k of the output belongs to convolution group k // K_G and reads input channels
(k // K_G) * C_G + c for c < C_G; K_G > 1 is a channel multiplier.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

from ..spec import ConvSpec, as_3d, needs_int64
from ..tuning.configs import (
    DIRECT_INTERPRETER_CONFIG,
    DIRECT_MULTIPLIERS,
    DIRECT_PIXELS,
    DIRECT_TAPS_PER_STEP,
    DIRECT_TILES,
    DIRECT_WEIGHT_GRAD_PIXELS,
    DIRECT_WEIGHT_GRAD_TILES,
    TAP_MAJOR_FILTER_MIN_FMAS,
    DirectConfig,
    KernelConfig,
    bucket_row_width,
    direct_config,
    direct_knobs,
    direct_taps_per_step,
    split_k_for,
)
from ..tuning.key import bucket_channels, layout_of
from ..tuning.kinds import KernelKind
from ..tuning.select import select_config
from . import arguments
from .common import Launch, accumulator_dtype, accumulator_torch_dtype, widened_pairs
from .epilogue import PLAIN, Epilogue, finished_output
from .indexing import advance_coordinates, program_ids, unravel_pixels
from .reduction import first_phase_tap
from .split_k import partial_buffers, sum_splits


@triton.jit
def load_columns(
    row_ptrs, row_ok, cols, W, channel_offs, mask_c, s_col, ACC_DTYPE: tl.constexpr, CHANNEL_VECTORS: tl.constexpr
):  # fmt: skip
    """The (groups, channels) tile at column ``cols`` of each group's row, zero outside [0, W), in
    ACC_DTYPE.

    row_ptrs: (BLOCK_G,) pointers to each group's row; row_ok: (BLOCK_G,) rows inside the tensor;
    channel_offs: (BLOCK_C,) channel offsets in elements; s_col: the column stride in elements.
    CHANNEL_VECTORS: a thread's channels are consecutive in memory (one vector load), so its
    elements widen in pairs (``widened_pairs``).
    """
    ok = row_ok & (cols >= 0) & (cols < W)
    ptrs = (row_ptrs + cols * s_col)[:, None] + channel_offs[None, :]
    loaded = tl.load(ptrs, mask=ok[:, None] & mask_c[None, :], other=0.0)
    if CHANNEL_VECTORS:
        return widened_pairs(loaded, ACC_DTYPE)
    return loaded.to(ACC_DTYPE)


@triton.jit
def load_paired_column(row_ptrs, row_ok, first_col, COLUMN: tl.constexpr, W, channel_offs, mask_c,
                       FIRST_COLUMN_ODD: tl.constexpr, ACC_DTYPE: tl.constexpr):  # fmt: skip
    """Column first_col + COLUMN of each group's row of 16-bit elements, as ``load_columns`` (W stride
    1), read as the 32-bit word that holds it and its pair neighbour: a word's two columns are
    one load (the compiler merges the identical loads, and the identical word pointers of the
    calls), so half the loads and masks. first_col is odd if FIRST_COLUMN_ODD, else even; the
    caller guarantees (``column_pairs``) that rows start 4-byte aligned and that W is even, so a
    word is wholly inside [0, W) or wholly outside.
    """
    # The word holding first_col (an exact halving: the shift is one instruction).
    word0 = (first_col - FIRST_COLUMN_ODD) >> 1
    words = (row_ptrs[:, None] + channel_offs[None, :]).to(tl.pointer_type(tl.uint32), bitcast=True) + word0[:, None]
    HALF: tl.constexpr = (FIRST_COLUMN_ODD + COLUMN) % 2
    WORD: tl.constexpr = (FIRST_COLUMN_ODD + COLUMN) // 2
    # 0 <= 2 * word < W as one unsigned comparison (a negative column wraps past W).
    ok = ((2 * (word0 + WORD)).to(tl.uint32) < W.to(tl.uint32)) & row_ok
    # The constant offset added last is an immediate of the load.
    loaded = tl.load(words + WORD, mask=ok[:, None] & mask_c[None, :], other=0)
    # Little-endian: the even column is the low half.
    element = row_ptrs.dtype.element_ty
    if element == tl.bfloat16:
        # A bfloat16 is the upper half of the float32 of the same value: one instruction.
        if HALF == 0:
            return (loaded << 16).to(tl.float32, bitcast=True).to(ACC_DTYPE)
        return (loaded & 0xFFFF0000).to(tl.float32, bitcast=True).to(ACC_DTYPE)
    # float16 (the only other 16-bit element): its bits, then the conversion.
    half = loaded if HALF == 0 else loaded >> 16
    return half.to(tl.uint16).to(element, bitcast=True).to(ACC_DTYPE)


@triton.jit
def load_column(
    row_ptrs, row_ok, first_col, COLUMN: tl.constexpr, W, channel_offs, mask_c, s_col, ACC_DTYPE: tl.constexpr,
    CHANNEL_VECTORS: tl.constexpr, COLUMN_PAIRS: tl.constexpr, FIRST_COLUMN_ODD: tl.constexpr,
):  # fmt: skip
    """Column first_col + COLUMN of the rows: ``load_paired_column`` with COLUMN_PAIRS, else ``load_columns``."""
    if COLUMN_PAIRS:
        return load_paired_column(
            row_ptrs, row_ok, first_col, COLUMN, W, channel_offs, mask_c, FIRST_COLUMN_ODD, ACC_DTYPE
        )
    return load_columns(
        row_ptrs, row_ok, first_col + COLUMN, W, channel_offs, mask_c, s_col, ACC_DTYPE, CHANNEL_VECTORS
    )


@triton.jit
def group_slots(pid_c, CHANNELS, PER_GROUP: tl.constexpr, GROUP_SLOTS: tl.constexpr, FULL_SLOTS: tl.constexpr,
                BLOCK_C: tl.constexpr):  # fmt: skip
    """The BLOCK_C channel slots of program ``pid_c``: slot s is channel s % GROUP_SLOTS of group
    s // GROUP_SLOTS, a group's PER_GROUP channels padded to GROUP_SLOTS (a power of two).
    Returns the slots, their channels of the CHANNELS, and which slots hold one (all of them if
    FULL_SLOTS, with no comparison)."""
    slots = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    # Written group by group even where it equals ``slots``: Triton then sees runs of
    # GROUP_SLOTS contiguous channels, and gives each thread one group's (up to a 16-byte vector).
    channels = slots // GROUP_SLOTS * PER_GROUP + slots % GROUP_SLOTS
    if FULL_SLOTS:
        used = tl.full((BLOCK_C,), True, tl.int1)
    else:
        used = (slots % GROUP_SLOTS < PER_GROUP) & (channels < CHANNELS)
    return slots, channels, used


@triton.jit
def store_group_sums(
    accs, pid_c, GROUPS, OUT_PER_GROUP, first_j, mask_g, n, d, h, first_col, WIDTH,
    bias_ptr, bias_stride, y_ptr, y_strides, z_ptr, residual_ptr, residual_strides,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_PRE_ACTIVATION: tl.constexpr,
    ACC_DTYPE: tl.constexpr, MULTIPLIERS: tl.constexpr, GROUP_SLOTS: tl.constexpr, BLOCK_G: tl.constexpr,
    BLOCK_C: tl.constexpr, STORE_PAIRS: tl.constexpr,
):  # fmt: skip
    """Sum each group's slots of ``accs`` (a (groups, slots) tile per column q and multiplier j,
    at q * MULTIPLIERS + j) and finish the output: channel g * OUT_PER_GROUP + first_j + j of
    pixel (n, d, h, first_col + q), columns below WIDTH, bias and epilogue as ``finish_output``.
    With STORE_PAIRS (``pair_stores``: 16-bit rows along W, first_col, WIDTH and the columns per
    group even) each two columns' outputs are one 32-bit store."""
    GROUPS_PER_BLOCK: tl.constexpr = BLOCK_C // GROUP_SLOTS
    conv_groups = pid_c * GROUPS_PER_BLOCK + tl.arange(0, GROUPS_PER_BLOCK)
    mask_ch = conv_groups < GROUPS
    sy_n, sy_c, sy_d, sy_h, sy_w = y_strides
    sr_n, sr_c, sr_d, sr_h, sr_w = residual_strides
    y_row = n * sy_n + d * sy_d + h * sy_h
    r_row = n * sr_n + d * sr_d + h * sr_h
    STORED: tl.constexpr = 2 if STORE_PAIRS else 1  # columns per store
    for j in tl.static_range(MULTIPLIERS):
        channel = conv_groups * OUT_PER_GROUP + first_j + j
        if HAS_BIAS:
            bias = tl.load(bias_ptr + channel * bias_stride, mask=mask_ch, other=0.0).to(ACC_DTYPE)[None, :]
        for first_q in tl.static_range(0, len(accs) // MULTIPLIERS, STORED):
            outs = ()
            for q in tl.static_range(first_q, first_q + STORED):
                acc = accs[q * MULTIPLIERS + j]
                if GROUP_SLOTS > 1:
                    acc = tl.sum(tl.reshape(acc, (BLOCK_G, GROUPS_PER_BLOCK, GROUP_SLOTS)), axis=2)
                if HAS_BIAS:
                    acc += bias
                col = first_col + q
                y_offs = (y_row + col * sy_w)[:, None] + channel[None, :] * sy_c
                r_offs = (r_row + col * sr_w)[:, None] + channel[None, :] * sr_c
                # As WIDTH and the pair's first column are even, the pair is wholly in or out.
                mask = (mask_g & (col < WIDTH))[:, None] & mask_ch[None, :]
                if q == first_q:
                    y_ptrs = y_ptr + y_offs
                out = finished_output(
                    acc, z_ptr + y_offs, residual_ptr + r_offs, mask, ACTIVATION, HAS_RESIDUAL, STORE_PRE_ACTIVATION
                )
                outs = outs + (out.to(y_ptr.dtype.element_ty),)
            if STORE_PAIRS:
                store_pair(y_ptrs, outs[0], outs[1], mask)
            else:
                tl.store(y_ptrs, outs[0], mask=mask)


@triton.jit
def store_pair(ptrs, low, high, mask):
    """16-bit ``low`` at ``ptrs`` (4-byte aligned) and ``high`` in the next element, as one 32-bit
    store (little-endian: the first element is the low half)."""
    word = low.to(tl.uint16, bitcast=True).to(tl.uint32) | (high.to(tl.uint16, bitcast=True).to(tl.uint32) << 16)
    tl.store(ptrs.to(tl.pointer_type(tl.uint32), bitcast=True), word, mask=mask)


@triton.jit
def load_weights(w_tap, used, sw_j, MULTIPLIERS: tl.constexpr, ACC_DTYPE: tl.constexpr):
    """One tap's weights for each of MULTIPLIERS multipliers, w_tap + j * sw_j: (1, slots) rows."""
    ws = ()
    for j in tl.static_range(MULTIPLIERS):
        ws = ws + (tl.load(w_tap + j * sw_j, mask=used, other=0.0).to(ACC_DTYPE)[None, :],)
    return ws


@triton.jit
def forward_taps(
    accs, x_row, row_ok, iw0, W, x_channel, used, sx_w, w_row, sw_j, sw_s, first_s,
    TAPS: tl.constexpr, MULTIPLIERS: tl.constexpr, CONV_STRIDE_W: tl.constexpr, DIL_W: tl.constexpr,
    ACC_DTYPE: tl.constexpr, CHANNEL_VECTORS: tl.constexpr, COLUMN_PAIRS: tl.constexpr,
    FIRST_COLUMN_ODD: tl.constexpr,
):  # fmt: skip
    """``accs`` (a (groups, slots) tile per pixel p of the group and multiplier j, at
    p * MULTIPLIERS + j) plus taps first_s .. first_s + TAPS of a filter row: pixel p and tap s
    read column iw0 + p * CONV_STRIDE_W + s * DIL_W, so the columns two pairs share are one load
    (the compiler merges the identical loads), and each column serves all MULTIPLIERS multipliers.
    With COLUMN_PAIRS, columns load in pairs (``load_paired_column``); every step's first column
    is odd if FIRST_COLUMN_ODD, else even."""
    iw_step = iw0 + first_s * DIL_W
    for si in tl.static_range(TAPS):
        ws = load_weights(w_row + (first_s + si) * sw_s, used, sw_j, MULTIPLIERS, ACC_DTYPE)
        updated = ()
        for p in tl.static_range(len(accs) // MULTIPLIERS):
            x = load_column(
                x_row, row_ok, iw_step, p * CONV_STRIDE_W + si * DIL_W, W, x_channel, used, sx_w, ACC_DTYPE,
                CHANNEL_VECTORS, COLUMN_PAIRS, FIRST_COLUMN_ODD,
            )  # fmt: skip
            for j in tl.static_range(MULTIPLIERS):
                updated = updated + (tl.fma(x, ws[j], accs[p * MULTIPLIERS + j]),)
        accs = updated
    return accs


@triton.jit
def input_grad_taps(
    accs, dy_row, row_ok, ow0, W_OUT, dy_channel, used, sdy_w, w_row, sw_c, sw_s, first_s,
    TAPS: tl.constexpr, MULTIPLIERS: tl.constexpr, CONV_STRIDE_W: tl.constexpr, DIL_W: tl.constexpr,
    PAD_W: tl.constexpr, ACC_DTYPE: tl.constexpr, CHANNEL_VECTORS: tl.constexpr, COLUMN_PAIRS: tl.constexpr,
    FIRST_COLUMN_ODD: tl.constexpr,
):  # fmt: skip
    """``accs`` (a (groups, slots) tile per input column q of the group and multiplier c, at
    q * MULTIPLIERS + c; the group's first column is output column ow0 times the stride) plus
    taps first_s .. first_s + TAPS of a filter row. first_s * DIL_W is a multiple of
    CONV_STRIDE_W, so whether tap first_s + si reaches column q, from output column
    ow0 + (q + PAD_W - (first_s + si) * DIL_W) / CONV_STRIDE_W, is constexpr. With COLUMN_PAIRS,
    dy's columns load in pairs (``load_paired_column``); every step's first output column,
    ow0 - first_s * DIL_W / CONV_STRIDE_W, is odd if FIRST_COLUMN_ODD, else even."""
    ow_step = ow0 - first_s * DIL_W // CONV_STRIDE_W
    for si in tl.static_range(TAPS):
        ws = load_weights(w_row + (first_s + si) * sw_s, used, sw_c, MULTIPLIERS, ACC_DTYPE)
        updated = ()
        for q in tl.static_range(len(accs) // MULTIPLIERS):
            if (q + PAD_W - si * DIL_W) % CONV_STRIDE_W == 0:
                dy = load_column(
                    dy_row, row_ok, ow_step, (q + PAD_W - si * DIL_W) // CONV_STRIDE_W, W_OUT, dy_channel, used, sdy_w,
                    ACC_DTYPE, CHANNEL_VECTORS, COLUMN_PAIRS, FIRST_COLUMN_ODD,
                )  # fmt: skip
                for c in tl.static_range(MULTIPLIERS):
                    updated = updated + (tl.fma(dy, ws[c], accs[q * MULTIPLIERS + c]),)
            else:
                for c in tl.static_range(MULTIPLIERS):
                    updated = updated + (accs[q * MULTIPLIERS + c],)
        accs = updated
    return accs


@triton.jit
def direct_forward_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr, flag_ptr,
    C, GROUPS, input_size, K_G, output_size, GROUPS_PER_ROW, PIXEL_GROUPS, padding,
    x_strides, w_strides, y_strides, bias_stride, residual_strides,
    T: tl.constexpr, R: tl.constexpr, S: tl.constexpr, TAPS_PER_STEP: tl.constexpr,
    CONV_STRIDE_D: tl.constexpr, CONV_STRIDE_H: tl.constexpr, CONV_STRIDE_W: tl.constexpr,
    DIL_D: tl.constexpr, DIL_H: tl.constexpr, DIL_W: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_PRE_ACTIVATION: tl.constexpr,
    GATED: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr, CHANNEL_VECTORS: tl.constexpr,
    COLUMN_PAIRS: tl.constexpr, FIRST_COLUMN_ODD: tl.constexpr, STORE_PAIRS: tl.constexpr, C_G: tl.constexpr,
    GROUP_SLOTS: tl.constexpr, FULL_SLOTS: tl.constexpr, MULTIPLIERS: tl.constexpr, MULTIPLIER_BLOCKS: tl.constexpr,
    PIXELS: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """y = activation(z), z[n, g * K_G + j, o] = sum over c < C_G and taps of
    x[n, g * C_G + c, i(o, tap)] * w[g * K_G + j, c, tap] + bias + residual[n, g * K_G + j, o].

    The tile's channels are input channels, in slots (``group_slots``): a thread loads a group's
    channels as one vector and multiplies each by the weights of MULTIPLIERS of the group's
    output channels j, with an accumulator per slot, multiplier and pixel; the sum over a group's
    slots (the reduction over channels) is left to the end. Depthwise (C_G = K_G = 1) is the
    case of one slot per group and one multiplier.

    Args:
        x_ptr, x_strides: input (N, C, D, H, W); any strides (5, in elements).
        w_ptr, w_strides: weight (``grouped_filter``): w[g * K_G + j, c, t, r, s] at
            g * sw_g + (g * C_G + c) * sw_c + j * sw_j + t * sw_t + r * sw_r + s * sw_s, i.e.
            addressed by input channel plus a correction per group (none if GROUP_SLOTS == 1).
        y_ptr, y_strides: output (N, K, D_OUT, H_OUT, W_OUT); any strides (5).
        bias_ptr, bias_stride: bias (K,) and its stride; read only if HAS_BIAS.
        residual_ptr, residual_strides: added before the activation, y's shape, any strides (5);
            read only if HAS_RESIDUAL.
        z_ptr: the pre-activation z, y's shape and strides; written only if STORE_PRE_ACTIVATION.
        flag_ptr, GATED: if GATED, the launch redoes the forward of a GEMM over bundled groups,
            which flagged a result not finite in the int32 at flag_ptr (``non_finite.py``): with
            the flag clear, every program returns.
        input_size: (D, H, W). output_size: (D_OUT, H_OUT, W_OUT). padding: leading padding (D, H, W).
        C, GROUPS: input channels and groups. K_G: output channels per group.
        GROUPS_PER_ROW: cdiv(W_OUT, PIXELS) groups per output row;
            PIXEL_GROUPS = N * D_OUT * H_OUT * GROUPS_PER_ROW.
        T, R, S: filter size. TAPS_PER_STEP: taps of a filter row unrolled per step.
        CONV_STRIDE_D/H/W: the convolution's step between output pixels (not a memory stride).
        DIL_D/H/W: the spacing of the taps.
        HAS_BIAS: add the bias. ACTIVATION: the activation's name ("none" for none).
        HAS_RESIDUAL: add the residual. STORE_PRE_ACTIVATION: write z.
        INDEX_64: compute offsets in int64. ACC_DTYPE: float32, or float64 for float64.
        CHANNEL_VECTORS: a thread's channels of x are one vector load (channels-last).
        COLUMN_PAIRS: x's 16-bit columns load in 32-bit pairs (``column_pairs``); FIRST_COLUMN_ODD:
            then every step's first column iw is odd (else even).
        STORE_PAIRS: y's columns store in 32-bit pairs (``pair_stores``).
        C_G: input channels per group; GROUP_SLOTS: the power of two >= C_G (slots per group).
        FULL_SLOTS: every slot of every program is a channel (C_G == GROUP_SLOTS, BLOCK_C divides C).
        MULTIPLIERS: output channels of a group per program, dividing K_G; MULTIPLIER_BLOCKS: K_G // MULTIPLIERS.
        PIXELS: consecutive pixels along W per group (one thread's). BLOCK_G, BLOCK_C: the tile,
            pixel groups by channel slots.
        Grid: (cdiv(PIXEL_GROUPS, BLOCK_G), cdiv(GROUPS * GROUP_SLOTS, BLOCK_C), MULTIPLIER_BLOCKS).
    """
    if GATED:
        if tl.load(flag_ptr) == 0:
            return
    pid_g, pid_c, pid_j = program_ids(INDEX_64)
    groups = pid_g * BLOCK_G + tl.arange(0, BLOCK_G)
    mask_g = groups < PIXEL_GROUPS
    slots, in_ch, used = group_slots(pid_c, C, C_G, GROUP_SLOTS, FULL_SLOTS, BLOCK_C)
    D, H, W = input_size
    D_OUT, H_OUT, W_OUT = output_size
    pad_d, pad_h, pad_w = padding
    n, od, oh, group_w = unravel_pixels(groups, D_OUT, H_OUT, GROUPS_PER_ROW)
    ow0 = group_w * PIXELS
    iw0 = ow0 * CONV_STRIDE_W - pad_w
    sx_n, sx_c, sx_d, sx_h, sx_w = x_strides
    sw_g, sw_j, sw_c, sw_t, sw_r, sw_s = w_strides
    x_channel = in_ch * sx_c
    # With one block of multipliers, a constant 0: the output channels stay aligned for vector stores.
    first_j = 0
    if MULTIPLIER_BLOCKS > 1:
        first_j = pid_j * MULTIPLIERS
    w_slot = w_ptr + in_ch * sw_c + first_j * sw_j
    if GROUP_SLOTS > 1:
        w_slot += (slots // GROUP_SLOTS) * sw_g

    accs = ()
    for _ in tl.static_range(PIXELS * MULTIPLIERS):
        accs = accs + (tl.zeros((BLOCK_G, BLOCK_C), dtype=ACC_DTYPE),)
    for kt in range(0, T):
        id_ = od * CONV_STRIDE_D - pad_d + kt * DIL_D
        for kr in range(0, R):
            ih = oh * CONV_STRIDE_H - pad_h + kr * DIL_H
            row_ok = mask_g & (id_ >= 0) & (id_ < D) & (ih >= 0) & (ih < H)
            x_row = x_ptr + n * sx_n + id_ * sx_d + ih * sx_h
            w_row = w_slot + kt * sw_t + kr * sw_r
            # Whole steps of TAPS_PER_STEP taps, then the row's remaining taps.
            for first_s in range(0, S - S % TAPS_PER_STEP, TAPS_PER_STEP):
                accs = forward_taps(
                    accs, x_row, row_ok, iw0, W, x_channel, used, sx_w, w_row, sw_j, sw_s, first_s,
                    TAPS_PER_STEP, MULTIPLIERS, CONV_STRIDE_W, DIL_W, ACC_DTYPE, CHANNEL_VECTORS, COLUMN_PAIRS,
                    FIRST_COLUMN_ODD,
                )  # fmt: skip
            if S % TAPS_PER_STEP > 0:
                accs = forward_taps(
                    accs, x_row, row_ok, iw0, W, x_channel, used, sx_w, w_row, sw_j, sw_s, S - S % TAPS_PER_STEP,
                    S % TAPS_PER_STEP, MULTIPLIERS, CONV_STRIDE_W, DIL_W, ACC_DTYPE, CHANNEL_VECTORS, COLUMN_PAIRS,
                    FIRST_COLUMN_ODD,
                )  # fmt: skip

    store_group_sums(
        accs, pid_c, GROUPS, K_G, first_j, mask_g, n, od, oh, ow0, W_OUT,
        bias_ptr, bias_stride, y_ptr, y_strides, z_ptr, residual_ptr, residual_strides,
        HAS_BIAS, ACTIVATION, HAS_RESIDUAL, STORE_PRE_ACTIVATION, ACC_DTYPE, MULTIPLIERS, GROUP_SLOTS, BLOCK_G, BLOCK_C,
        STORE_PAIRS,
    )  # fmt: skip


@triton.jit
def direct_input_grad_kernel(
    dy_ptr, w_ptr, dx_ptr, bias_ptr, residual_ptr, z_ptr, flag_ptr,
    K, C_G, GROUPS, input_size, output_size, GROUPS_PER_ROW, PIXEL_GROUPS, padding,
    dy_strides, w_strides, dx_strides, bias_stride, residual_strides,
    T: tl.constexpr, R: tl.constexpr, S: tl.constexpr, TAPS_PER_STEP: tl.constexpr,
    CONV_STRIDE_D: tl.constexpr, CONV_STRIDE_H: tl.constexpr, CONV_STRIDE_W: tl.constexpr,
    DIL_D: tl.constexpr, DIL_H: tl.constexpr, DIL_W: tl.constexpr, PAD_W: tl.constexpr,
    PHASES_D: tl.constexpr, PHASES_H: tl.constexpr, ROW_STEP_D: tl.constexpr, ROW_STEP_H: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_PRE_ACTIVATION: tl.constexpr,
    GATED: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr, CHANNEL_VECTORS: tl.constexpr,
    COLUMN_PAIRS: tl.constexpr, FIRST_COLUMN_ODD: tl.constexpr, STORE_PAIRS: tl.constexpr, K_G: tl.constexpr,
    GROUP_SLOTS: tl.constexpr, FULL_SLOTS: tl.constexpr, MULTIPLIERS: tl.constexpr, MULTIPLIER_BLOCKS: tl.constexpr,
    PIXELS: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """dx[n, g * C_G + c, i] = sum over j < K_G and taps of dy[n, g * K_G + j, o(i, tap)] * w[g * K_G + j, c, tap].

    The forward's scheme with the roles of the channels swapped: the tile's slots are dy's
    channels (a group's K_G), the multipliers are MULTIPLIERS of the group's input channels c,
    and the sum over a group's slots is left to the end. A group of pixels is
    PIXELS * CONV_STRIDE_W consecutive input columns starting at a multiple of CONV_STRIDE_W, so
    which tap reaches which of its columns, and from which output column, is constexpr. The
    rows the same way: a program's rows are one phase (their index modulo the stride along D
    and H; phase = phase_d * PHASES_H + phase_h, only phases below the size hold rows), so the
    filter rows that reach them are the same for the whole program, and its loops run over
    those alone.

    Args:
        dy_ptr, dy_strides: output gradient (N, K, D_OUT, H_OUT, W_OUT); any strides (5, in elements).
        w_ptr, w_strides: weight (K, C_G, T, R, S); any strides (5) (``grouped_filter``).
        dx_ptr, dx_strides: input gradient (N, C, D, H, W); any strides (5); all written.
        bias_ptr, bias_stride, residual_ptr, residual_strides, z_ptr: the epilogue of a transposed
            convolution (whose forward this is), as in direct_forward_kernel but over dx's
            (N, C, D, H, W); off by default.
        flag_ptr, GATED: as in direct_forward_kernel.
        input_size: (D, H, W). output_size: (D_OUT, H_OUT, W_OUT). padding: leading padding (D, H, W).
        K, C_G, GROUPS: output channels, input channels per group, groups.
        GROUPS_PER_ROW: cdiv(W, PIXELS * CONV_STRIDE_W) groups per input row;
            PIXEL_GROUPS = N * cdiv(D, CONV_STRIDE_D) * cdiv(H, CONV_STRIDE_H) * GROUPS_PER_ROW
            per phase (the rows id, ih of one residue modulo the strides).
        PHASES_D, PHASES_H: min(CONV_STRIDE_D, D) and min(CONV_STRIDE_H, H), the phases holding rows.
        ROW_STEP_D, ROW_STEP_H: the stride over its gcd with the dilation, along D and H: the
            filter rows reaching one phase's rows are that many apart.
        T, R, S: filter size. TAPS_PER_STEP: taps of a filter row unrolled per step.
        CONV_STRIDE_D/H/W: the convolution's step between output pixels (not a memory stride).
        DIL_D/H/W: the spacing of the taps.
        PAD_W: padding[2] as a constexpr (which output column reaches which input column is then constant).
        HAS_BIAS: add the bias. ACTIVATION: the activation's name ("none" for none).
        HAS_RESIDUAL: add the residual. STORE_PRE_ACTIVATION: write z.
        INDEX_64: compute offsets in int64. ACC_DTYPE: float32, or float64 for float64.
        CHANNEL_VECTORS: a thread's channels of dy are one vector load (channels-last).
        COLUMN_PAIRS, FIRST_COLUMN_ODD: dy's 16-bit columns load in 32-bit pairs (``column_pairs``),
            every step's first output column odd if FIRST_COLUMN_ODD (else even).
        STORE_PAIRS: dx's columns store in 32-bit pairs (``pair_stores``).
        K_G: output channels per group; GROUP_SLOTS: the power of two >= K_G (slots per group).
        FULL_SLOTS: every slot of every program is a channel (K_G == GROUP_SLOTS, BLOCK_C divides K).
        MULTIPLIERS: input channels of a group per program, dividing C_G; MULTIPLIER_BLOCKS: C_G // MULTIPLIERS.
        PIXELS: consecutive pixels along W per group (one thread's). BLOCK_G, BLOCK_C: the tile,
            pixel groups by channel slots.
        Grid: (cdiv(PIXEL_GROUPS, BLOCK_G) * PHASES_D * PHASES_H, cdiv(GROUPS * GROUP_SLOTS, BLOCK_C),
            MULTIPLIER_BLOCKS): the first axis is the phase, fastest (neighbouring rows), then the
            pixel block; it has room for 2^31 programs (strides can be large).
    """
    if GATED:
        if tl.load(flag_ptr) == 0:
            return
    pid_g, pid_c, pid_j = program_ids(INDEX_64)
    phase = pid_g % (PHASES_D * PHASES_H)
    pid_g = pid_g // (PHASES_D * PHASES_H)
    phase_d = phase // PHASES_H
    phase_h = phase % PHASES_H
    groups = pid_g * BLOCK_G + tl.arange(0, BLOCK_G)
    slots, out_ch, used = group_slots(pid_c, K, K_G, GROUP_SLOTS, FULL_SLOTS, BLOCK_C)
    D, H, W = input_size
    D_OUT, H_OUT, W_OUT = output_size
    pad_d, pad_h, _ = padding
    n, id_step, ih_step, group_w = unravel_pixels(
        groups, tl.cdiv(D, CONV_STRIDE_D), tl.cdiv(H, CONV_STRIDE_H), GROUPS_PER_ROW
    )
    id_ = phase_d + id_step * CONV_STRIDE_D
    ih = phase_h + ih_step * CONV_STRIDE_H
    mask_g = groups < PIXEL_GROUPS
    if CONV_STRIDE_D * CONV_STRIDE_H > 1:  # a phase's last row may be past the input's
        mask_g = mask_g & (id_ < D) & (ih < H)
    # The group's first input column is a multiple of the stride: output column ow0 reaches it.
    ow0 = group_w * PIXELS
    sdy_n, sdy_k, sdy_d, sdy_h, sdy_w = dy_strides
    sw_k, sw_c, sw_t, sw_r, sw_s = w_strides
    dy_channel = out_ch * sdy_k
    # With one block of multipliers, a constant 0: the input channels stay aligned for vector stores.
    first_c = 0
    if MULTIPLIER_BLOCKS > 1:
        first_c = pid_j * MULTIPLIERS
    w_slot = w_ptr + out_ch * sw_k + first_c * sw_c

    accs = ()
    for _ in tl.static_range(PIXELS * CONV_STRIDE_W * MULTIPLIERS):
        accs = accs + (tl.zeros((BLOCK_G, BLOCK_C), dtype=ACC_DTYPE),)
    # o * stride = i + pad - tap * dil: filter row kt reaches the phase's rows only if
    # phase + pad - kt * dil is a multiple of the stride, and then from od = id_step + that / stride.
    # Those rows are every ROW_STEP-th from the first (``first_phase_tap``; a constant 0 with unit
    # steps): the loops run over them alone, so a program runs exactly the rows its phase needs.
    first_kt = 0
    if CONV_STRIDE_D > 1:
        first_kt = first_phase_tap(phase_d, pad_d, DIL_D, CONV_STRIDE_D, ROW_STEP_D, T)
    first_kr = 0
    if CONV_STRIDE_H > 1:
        first_kr = first_phase_tap(phase_h, pad_h, DIL_H, CONV_STRIDE_H, ROW_STEP_H, R)
    for kt in range(first_kt, T, ROW_STEP_D):
        od = id_step + (phase_d + pad_d - kt * DIL_D) // CONV_STRIDE_D
        for kr in range(first_kr, R, ROW_STEP_H):
            oh = ih_step + (phase_h + pad_h - kr * DIL_H) // CONV_STRIDE_H
            row_ok = mask_g & (od >= 0) & (od < D_OUT) & (oh >= 0) & (oh < H_OUT)
            dy_row = dy_ptr + n * sdy_n + od * sdy_d + oh * sdy_h
            w_row = w_slot + kt * sw_t + kr * sw_r
            # Whole steps of TAPS_PER_STEP taps, then the row's remaining taps.
            for first_s in range(0, S - S % TAPS_PER_STEP, TAPS_PER_STEP):
                accs = input_grad_taps(
                    accs, dy_row, row_ok, ow0, W_OUT, dy_channel, used, sdy_w, w_row, sw_c, sw_s, first_s,
                    TAPS_PER_STEP, MULTIPLIERS, CONV_STRIDE_W, DIL_W, PAD_W, ACC_DTYPE, CHANNEL_VECTORS,
                    COLUMN_PAIRS, FIRST_COLUMN_ODD,
                )  # fmt: skip
            if S % TAPS_PER_STEP > 0:
                accs = input_grad_taps(
                    accs, dy_row, row_ok, ow0, W_OUT, dy_channel, used, sdy_w, w_row, sw_c, sw_s,
                    S - S % TAPS_PER_STEP, S % TAPS_PER_STEP, MULTIPLIERS, CONV_STRIDE_W, DIL_W, PAD_W,
                    ACC_DTYPE, CHANNEL_VECTORS, COLUMN_PAIRS, FIRST_COLUMN_ODD,
                )  # fmt: skip

    store_group_sums(
        accs, pid_c, GROUPS, C_G, first_c, mask_g, n, id_, ih, ow0 * CONV_STRIDE_W, W,
        bias_ptr, bias_stride, dx_ptr, dx_strides, z_ptr, residual_ptr, residual_strides,
        HAS_BIAS, ACTIVATION, HAS_RESIDUAL, STORE_PRE_ACTIVATION, ACC_DTYPE, MULTIPLIERS, GROUP_SLOTS, BLOCK_G, BLOCK_C,
        STORE_PAIRS,
    )  # fmt: skip


@triton.jit
def direct_weight_grad_kernel(
    dy_ptr, x_ptr, dw_partial_ptr, db_partial_ptr, flag_ptr,
    C, GROUPS, K_G, input_size, output_size, GROUPS_PER_ROW, PIXEL_GROUPS, CHUNK, padding,
    dy_strides, x_strides,
    T: tl.constexpr, R: tl.constexpr, S: tl.constexpr, TAPS_PER_STEP: tl.constexpr,
    CONV_STRIDE_D: tl.constexpr, CONV_STRIDE_H: tl.constexpr, CONV_STRIDE_W: tl.constexpr,
    DIL_D: tl.constexpr, DIL_H: tl.constexpr, DIL_W: tl.constexpr,
    HAS_BIAS_GRAD: tl.constexpr, GATED: tl.constexpr, INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    CHANNEL_VECTORS: tl.constexpr, COLUMN_PAIRS: tl.constexpr, FIRST_COLUMN_ODD: tl.constexpr,
    C_G: tl.constexpr, GROUP_SLOTS: tl.constexpr, FULL_SLOTS: tl.constexpr,
    MULTIPLIERS: tl.constexpr, MULTIPLIER_BLOCKS: tl.constexpr,
    PIXELS: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Partial dw[g * K_G + j, c, tap] (and db) of one split of the PIXEL_GROUPS groups of output
    pixels, for TAPS_PER_STEP consecutive taps of one filter row and MULTIPLIERS of each group's
    output channels j.

    The forward's slots: the tile's channels are input channels, a group's C_G in GROUP_SLOTS
    slots held by one thread; dy's value for a group and multiplier is loaded once per thread and
    multiplies all its slots. An accumulator per tap and multiplier; the sum over pixels is left
    to the end.

    Args:
        dy_ptr, dy_strides: output gradient (N, K, D_OUT, H_OUT, W_OUT); any strides (5, in elements).
        x_ptr, x_strides: input (N, C, D, H, W); any strides (5).
        dw_partial_ptr: (SPLIT_K, K, C_G, T * R * S) contiguous, ACC_DTYPE; split z writes slice z.
        db_partial_ptr: (SPLIT_K, K) contiguous, ACC_DTYPE; written only if HAS_BIAS_GRAD.
        input_size: (D, H, W). output_size: (D_OUT, H_OUT, W_OUT). padding: leading padding (D, H, W).
        C, GROUPS: input channels and groups. K_G: output channels per group.
        GROUPS_PER_ROW: cdiv(W_OUT, PIXELS) groups per output row;
            PIXEL_GROUPS = N * D_OUT * H_OUT * GROUPS_PER_ROW.
        CHUNK: groups per split, a multiple of BLOCK_G.
        T, R, S: filter size. TAPS_PER_STEP: taps of a filter row unrolled per step.
        CONV_STRIDE_D/H/W: the convolution's step between output pixels (not a memory stride).
        DIL_D/H/W: the spacing of the taps.
        HAS_BIAS_GRAD: also sum dy into db.
        flag_ptr, GATED: if GATED, the launch redoes a weight gradient whose products included
            zeros torch never multiplies (the patch kernel's) only where *flag_ptr is set.
        INDEX_64: compute offsets in int64. ACC_DTYPE: float32, or float64 for float64.
        CHANNEL_VECTORS: x and dy are channels-last: a thread's channels of x are one vector load,
            and of dy where a group is one channel without a multiplier.
        COLUMN_PAIRS, FIRST_COLUMN_ODD, C_G, GROUP_SLOTS, FULL_SLOTS, MULTIPLIERS, MULTIPLIER_BLOCKS: as in
            direct_forward_kernel (the pairs: x's).
        PIXELS: consecutive pixels along W per group (one thread's). BLOCK_G, BLOCK_C: the tile,
            pixel groups by channel slots.
        Grid: (cdiv(GROUPS * GROUP_SLOTS, BLOCK_C) * MULTIPLIER_BLOCKS, T * R * cdiv(S, TAPS_PER_STEP), SPLIT_K);
        split z reduces pixel groups [z * CHUNK, (z + 1) * CHUNK), CHUNK a multiple of BLOCK_G.
    """
    if GATED:
        if tl.load(flag_ptr) == 0:
            return
    block, column, split = program_ids(INDEX_64)
    tap_blocks = tl.cdiv(S, TAPS_PER_STEP)
    first_s = (column % tap_blocks) * TAPS_PER_STEP
    kr = (column // tap_blocks) % R
    kt = (column // (tap_blocks * R)) % T
    # The program of each block of multipliers that also sums dy into the bias gradient.
    first_tap = column == 0
    # With one block of multipliers, a constant 0.
    pid_c = block
    first_j = 0
    if MULTIPLIER_BLOCKS > 1:
        pid_c = block // MULTIPLIER_BLOCKS
        first_j = block % MULTIPLIER_BLOCKS * MULTIPLIERS
    slots, in_ch, used = group_slots(pid_c, C, C_G, GROUP_SLOTS, FULL_SLOTS, BLOCK_C)
    GROUPS_PER_BLOCK: tl.constexpr = BLOCK_C // GROUP_SLOTS
    conv_groups = pid_c * GROUPS_PER_BLOCK + tl.arange(0, GROUPS_PER_BLOCK)
    # dy's channels by group, not by slot: one load per thread, broadcast over its group's slots
    # (a load per slot would repeat it GROUP_SLOTS times).
    if FULL_SLOTS:
        groups_used = tl.full((GROUPS_PER_BLOCK,), True, tl.int1)
    else:
        groups_used = conv_groups < GROUPS
    sdy_n, sdy_k, sdy_d, sdy_h, sdy_w = dy_strides
    sx_n, sx_c, sx_d, sx_h, sx_w = x_strides
    dy_channel = (conv_groups * K_G + first_j) * sdy_k
    x_channel = in_ch * sx_c

    g_start = split * CHUNK
    g_end = tl.minimum(g_start + CHUNK, PIXEL_GROUPS)
    groups = g_start + tl.arange(0, BLOCK_G)
    D, H, W = input_size
    D_OUT, H_OUT, W_OUT = output_size
    pad_d, pad_h, pad_w = padding
    n, od, oh, group_w = unravel_pixels(groups, D_OUT, H_OUT, GROUPS_PER_ROW)
    step_n, step_d, step_h, step_w = unravel_pixels(BLOCK_G, D_OUT, H_OUT, GROUPS_PER_ROW)
    accs = ()
    for _ in tl.static_range(TAPS_PER_STEP * MULTIPLIERS):
        accs = accs + (tl.zeros((BLOCK_G, BLOCK_C), dtype=ACC_DTYPE),)
    # dy by group: consecutive channels only where a group is one channel with no multiplier.
    DY_VECTORS: tl.constexpr = CHANNEL_VECTORS and GROUP_SLOTS == 1 and MULTIPLIER_BLOCKS == 1
    for _ in range(g_start, g_end, BLOCK_G):
        mask_g = groups < g_end
        ow0 = group_w * PIXELS
        id_ = od * CONV_STRIDE_D - pad_d + kt * DIL_D
        ih = oh * CONV_STRIDE_H - pad_h + kr * DIL_H
        row_ok = mask_g & (id_ >= 0) & (id_ < D) & (ih >= 0) & (ih < H)
        dy_row = dy_ptr + n * sdy_n + od * sdy_d + oh * sdy_h
        x_row = x_ptr + n * sx_n + id_ * sx_d + ih * sx_h
        iw0 = ow0 * CONV_STRIDE_W - pad_w + first_s * DIL_W
        dys = ()
        for p in tl.static_range(PIXELS):
            for j in tl.static_range(MULTIPLIERS):
                dy = load_columns(
                    dy_row, mask_g, ow0 + p, W_OUT, dy_channel + j * sdy_k, groups_used, sdy_w, ACC_DTYPE, DY_VECTORS
                )
                if GROUP_SLOTS > 1:
                    dy = tl.reshape(
                        tl.broadcast_to(dy[:, :, None], (BLOCK_G, GROUPS_PER_BLOCK, GROUP_SLOTS)), (BLOCK_G, BLOCK_C)
                    )
                dys = dys + (dy,)
        updated = ()
        for s in tl.static_range(TAPS_PER_STEP):
            for j in tl.static_range(MULTIPLIERS):
                acc = accs[s * MULTIPLIERS + j]
                for p in tl.static_range(PIXELS):
                    x = load_column(
                        x_row, row_ok, iw0, p * CONV_STRIDE_W + s * DIL_W, W, x_channel, used, sx_w, ACC_DTYPE,
                        CHANNEL_VECTORS, COLUMN_PAIRS, FIRST_COLUMN_ODD,
                    )  # fmt: skip
                    acc = tl.fma(dys[p * MULTIPLIERS + j], x, acc)
                updated = updated + (acc,)
        accs = updated
        groups += BLOCK_G
        n, od, oh, group_w = advance_coordinates(
            n, od, oh, group_w, step_n, step_d, step_h, step_w, D_OUT, H_OUT, GROUPS_PER_ROW
        )

    taps = T * R * S
    K = GROUPS * K_G
    c_local = slots % GROUP_SLOTS
    slot_groups = slots // GROUP_SLOTS
    for j in tl.static_range(MULTIPLIERS):
        out_ch = slot_groups * K_G + first_j + j
        dw_row = dw_partial_ptr + split * K * C_G * taps + out_ch * C_G * taps + c_local * taps
        dw_row += (kt * R + kr) * S + first_s
        for s in tl.static_range(TAPS_PER_STEP):
            # Taps past the row's end (the last tap block's) are not stored.
            tap_used = used & (slots * 0 + first_s + s < S)  # a block: the interpreter takes no scalar in a mask
            tl.store(dw_row + s, tl.sum(accs[s * MULTIPLIERS + j], axis=0), mask=tap_used)
    if HAS_BIAS_GRAD:
        if first_tap:
            # The bias gradient, dy summed over the split's pixels, in a pass of its own by the
            # first tap's programs: the loop above holds no bias accumulators (suite shape 31's
            # spilled with them), and the pass is one filter tap's share of the work.
            groups = g_start + tl.arange(0, BLOCK_G)
            n, od, oh, group_w = unravel_pixels(groups, D_OUT, H_OUT, GROUPS_PER_ROW)
            bias_accs = ()
            for _ in tl.static_range(MULTIPLIERS):
                bias_accs = bias_accs + (tl.zeros((BLOCK_G, GROUPS_PER_BLOCK), dtype=ACC_DTYPE),)
            for _ in range(g_start, g_end, BLOCK_G):
                dy_row = dy_ptr + n * sdy_n + od * sdy_d + oh * sdy_h
                summed = ()
                for j in tl.static_range(MULTIPLIERS):
                    bias_acc = bias_accs[j]
                    for p in tl.static_range(PIXELS):
                        bias_acc += load_columns(
                            dy_row, groups < g_end, group_w * PIXELS + p, W_OUT, dy_channel + j * sdy_k, groups_used,
                            sdy_w, ACC_DTYPE, DY_VECTORS,
                        )  # fmt: skip
                    summed = summed + (bias_acc,)
                bias_accs = summed
                groups += BLOCK_G
                n, od, oh, group_w = advance_coordinates(
                    n, od, oh, group_w, step_n, step_d, step_h, step_w, D_OUT, H_OUT, GROUPS_PER_ROW
                )
            for j in tl.static_range(MULTIPLIERS):
                bias_ch = conv_groups * K_G + first_j + j
                tl.store(db_partial_ptr + split * K + bias_ch, tl.sum(bias_accs[j], axis=0), mask=groups_used)


def _geometry_constexprs(spec: ConvSpec) -> dict[str, int]:
    """Filter sizes, convolution steps and dilations as the kernels' constexprs (the loops over
    taps and pixels unroll and divide by constants)."""
    return {
        **dict(zip(("T", "R", "S"), spec.kernel_size)),
        **dict(zip(("CONV_STRIDE_D", "CONV_STRIDE_H", "CONV_STRIDE_W"), spec.stride)),
        **dict(zip(("DIL_D", "DIL_H", "DIL_W"), spec.dilation)),
    }


def _tile_constexprs(cfg: DirectConfig) -> dict[str, int]:
    return dict(PIXELS=cfg.pixels, TAPS_PER_STEP=cfg.taps_per_step, BLOCK_G=cfg.block_g, BLOCK_C=cfg.block_c)


def channels_contiguous(*loaded: torch.Tensor) -> bool:
    """Whether the (N, C, D, H, W) tensors a kernel loads pixels from hold channels contiguously
    (channels-last): threads then load vectors of channels."""
    return all(t.stride(1) == 1 for t in loaded)


def column_pairs(t: torch.Tensor, spec: ConvSpec, cfg: DirectConfig, input_grad: bool = False) -> dict[str, bool]:
    """COLUMN_PAIRS and FIRST_COLUMN_ODD of a kernel with tile ``cfg`` reading the rows of the
    (N, C, D, H, W) tensor ``t``: x for the forward and the weight gradient, dy for the input
    gradient (``input_grad``). The 16-bit rows are read in 32-bit pairs of columns where a
    thread's columns are consecutive in memory (the W stride 1, channels not innermost), every
    row starts 4-byte aligned (the data and every other stride even) and holds whole pairs (W
    even), and every step's first column has one parity. The forward's is ow0 * stride - padding
    + first_s * dilation: the padding's, as ow0 is a multiple of the pixels per group and first_s
    of the taps per step, so both products must be even (first_s is 0 where one step takes the
    row). The input gradient's is ow0 - first_s * dilation / stride: even, as the pixels per group
    and the taps per step times dilation / stride must be."""
    stride, dilation = spec.stride[2], spec.dilation[2]
    if input_grad:
        group_step, tap_step, first_odd = cfg.pixels, cfg.taps_per_step * dilation // stride, False
    else:
        group_step, tap_step, first_odd = cfg.pixels * stride, cfg.taps_per_step * dilation, spec.pad_lo[2] % 2 == 1
    one_step = cfg.taps_per_step >= spec.kernel_size[2]
    pairs = rows_in_pairs(t) and group_step % 2 == 0 and (one_step or tap_step % 2 == 0)
    return dict(COLUMN_PAIRS=pairs, FIRST_COLUMN_ODD=pairs and first_odd)


def rows_in_pairs(t: torch.Tensor) -> bool:
    """Whether the (N, C, D, H, W) tensor ``t``'s rows hold whole 32-bit pairs of 16-bit columns:
    the W stride 1 (channels not innermost), every row 4-byte aligned (the data and every other
    stride even, but those of dimensions of size 1, never stepped) and W even."""
    aligned = t.data_ptr() % 4 == 0 and all(s % 2 == 0 for s, n in zip(t.stride()[:4], t.shape[:4]) if n > 1)
    return aligned and t.element_size() == 2 and t.stride(4) == 1 and t.stride(1) != 1 and t.shape[4] % 2 == 0


def pair_stores(out: torch.Tensor, columns_per_group: int) -> dict[str, bool]:
    """STORE_PAIRS of a forward or input-gradient kernel writing the (N, C, D, H, W) ``out`` in
    groups of ``columns_per_group`` columns (each group's first a multiple of it): two columns'
    16-bit outputs are one 32-bit store where the rows hold whole pairs and the groups do too."""
    return dict(STORE_PAIRS=rows_in_pairs(out) and columns_per_group % 2 == 0)


def _tile(
    spec: ConvSpec,
    slots: _Slots,
    width: int,
    *loaded: torch.Tensor,
    knobs: KernelConfig,
    fused_transposed_epilogue: bool = False,
    holds_filter_row: bool = True,
) -> DirectConfig:
    """The tile with ``knobs`` (``direct_knobs``) over ``slots`` and rows of ``width`` pixels
    reading the (N, C, D, H, W) tensors ``loaded``, its steps fitted to the filter; whether a
    thread ``holds_filter_row``: a step's weights and input columns (not the weight gradient)."""
    itemsize = loaded[0].dtype.itemsize
    contiguous = channels_contiguous(*loaded)
    row = (spec.kernel_size[2], spec.stride[2], spec.dilation[2])
    taps_held = direct_taps_per_step(DIRECT_TAPS_PER_STEP, *row) if holds_filter_row else 0
    cfg = direct_config(
        slots.count, width, itemsize, contiguous, fused_transposed_epilogue, knobs, slots.group_slots,
        slots.multipliers, taps_held,
    )  # fmt: skip
    return replace(cfg, taps_per_step=direct_taps_per_step(cfg.taps_per_step, *row))


@dataclass(frozen=True)
class _Slots:
    """How a forward or input-gradient launch lays a group's channels out (see the kernels):
    ``per_group`` channels a group reduces over, in ``group_slots`` slots (``count`` in all);
    ``multipliers`` of the group's other channels per program, in ``blocks`` programs."""

    per_group: int
    group_slots: int
    count: int
    multipliers: int
    blocks: int

    @staticmethod
    def of(groups: int, per_group: int, multiplied: int, most: int) -> _Slots:
        # The most multipliers up to ``most`` that divide the group's: no partial block.
        multipliers = max(j for j in range(1, most + 1) if multiplied % j == 0)
        group_slots = triton.next_power_of_2(max(per_group, 1))
        return _Slots(per_group, group_slots, groups * group_slots, multipliers, multiplied // multipliers)

    def constexprs(self, channels: int, cfg: DirectConfig) -> dict[str, int | bool]:
        full = self.per_group == self.group_slots and channels % cfg.block_c == 0
        blocks = dict(MULTIPLIERS=self.multipliers, MULTIPLIER_BLOCKS=self.blocks)
        return dict(GROUP_SLOTS=self.group_slots, FULL_SLOTS=full, **blocks)


def grouped_filter(
    weight: torch.Tensor, spec: ConvSpec, vector_of_channels: bool, forward: bool, gated: bool
) -> torch.Tensor:
    """The weight as a (GROUPS, K_G, C_G, T, R, S) view for the forward (``forward``) or the
    input-gradient kernel: where a thread loads a ``vector_of_channels`` and the launch is
    large enough to pay for the copy (``TAP_MAJOR_FILTER_MIN_FMAS``), ``tap_major_filter``;
    else the weight itself. Never a copy for a ``gated`` launch: on finite data it reads no filter."""
    w = as_3d(weight).unflatten(0, (spec.groups, spec.out_channels_per_group))
    if vector_of_channels and not gated and spec.flops // 2 >= TAP_MAJOR_FILTER_MIN_FMAS:
        return tap_major_filter(w, forward)
    return w


def tap_major_filter(w: torch.Tensor, forward: bool) -> torch.Tensor:
    """The (GROUPS, K_G, C_G, T, R, S) filter ``w`` as a view of a dense copy in the accumulator's
    type (``accumulator_torch_dtype``) whose weights for one multiplier and tap are consecutive
    over a kernel's slots: (K_G, T, R, S, GROUPS, C_G) for the forward (slots are input
    channels), (C_G, T, R, S, GROUPS, K_G) for the input gradient (slots are output channels).
    Where a thread holds a vector of slots (channels-last activations), their weights are one
    vector load, with no conversion in the loop (a scalar load and a conversion each otherwise)."""
    order = (1, 3, 4, 5, 0, 2) if forward else (2, 3, 4, 5, 0, 1)
    filters = w.new_empty([w.shape[d] for d in order], dtype=accumulator_torch_dtype(w.dtype))
    filters.copy_(w.permute(order))
    return filters.permute([order.index(d) for d in range(6)])


def _addressed_by_input_channel(w: torch.Tensor) -> tuple[int, ...]:
    """The forward kernel's strides of the (GROUPS, K_G, C_G, T, R, S) filter ``w``: its own, but
    the group's less the channels it spans, which the kernel adds per group to an offset by input
    channel (with one channel per group, the group's stride is the channel's)."""
    group, multiplier, channel, *taps = w.stride()
    if w.shape[2] <= 1:
        return (0, multiplier, group, *taps)
    return (group - w.shape[2] * channel, multiplier, channel, *taps)


def _pixel_groups(spec: ConvSpec, size: tuple[int, int, int], group_width: int) -> tuple[int, int]:
    """Groups of ``group_width`` consecutive pixels per row of a (N, *size) grid, and in all."""
    d, h, w = size
    per_row = triton.cdiv(w, group_width)
    return per_row, spec.batch * d * h * per_row


def _heuristic_knobs(spec: ConvSpec, per_group: int, most_pixels: int, most_multipliers: int) -> KernelConfig:
    """``direct_knobs`` for a launch whose slots are ``per_group`` channels of each group."""
    return direct_knobs(spec.groups * triton.next_power_of_2(max(per_group, 1)), most_pixels, most_multipliers)


def _direct_key_fields(spec: ConvSpec, width: int) -> tuple[str, ...]:
    """What decides a direct kernel's knobs beyond the GEMM key: the exact channels per group
    (its slots and multipliers; the key's buckets start at 16), the channels in all (the
    channel block) and the row width (the pixels per thread)."""
    return (
        f"cg{spec.in_channels_per_group}",
        f"kg{spec.out_channels_per_group}",
        f"c{bucket_channels(spec.in_channels)}",
        f"w{bucket_row_width(width)}",
    )


def _interpreter_knobs() -> KernelConfig:
    c = DIRECT_INTERPRETER_CONFIG
    return KernelConfig(c.pixels, c.block_c, DIRECT_MULTIPLIERS, c.num_warps, 1)


def _direct_kind(input_grad: bool, plan: Callable[..., Launch]) -> KernelKind:
    """The direct forward or input gradient as tuning sees it: its knobs (``direct_knobs``) are
    not GEMM blocks, and every launch is timed, fused epilogues included (the epilogue runs after
    the loop and changes little). Its GEMM is over the pixels it writes, per group."""

    def extents(spec: ConvSpec) -> tuple[int, int, int]:
        if input_grad:
            return spec.input_pixels, spec.in_channels_per_group, spec.taps * spec.out_channels_per_group
        return spec.output_pixels, spec.out_channels_per_group, spec.taps * spec.in_channels_per_group

    return KernelKind(
        name="direct_input_grad" if input_grad else "direct_forward",
        pass_="D" if input_grad else "F",
        tiles=DIRECT_TILES,
        interpreter_tile=_interpreter_knobs(),
        gemm_extents=extents,
        dense_gemm=extents,
        key_pixels=lambda spec: extents(spec)[0],
        key_layout=lambda input, output: layout_of(output if input_grad else input),
        plan=plan,
        key_fields=lambda spec: _direct_key_fields(spec, (spec.input_size if input_grad else spec.output_size)[2]),
        gemm_blocks=False,
    )


DIRECT_FORWARD = _direct_kind(False, lambda spec, x, w, b, y, knobs: plan_direct_forward(x, w, b, spec, y, knobs=knobs))
DIRECT_INPUT_GRAD = _direct_kind(
    True, lambda spec, x, w, b, y, knobs: plan_direct_input_grad(y, w, spec, torch.empty_like(x), knobs=knobs)
)


def _selected_knobs(
    kind: KernelKind,
    spec: ConvSpec,
    input: torch.Tensor,
    output: torch.Tensor,
    per_group: int,
    build_launch: Callable[[KernelConfig], Launch],
    tuned: bool,
) -> KernelConfig:
    """The knobs ``select_config`` picks for ``kind`` on the convolution of ``input`` into
    ``output`` (the heuristic's, ``direct_knobs`` over slots of ``per_group`` channels, unless
    tuned); the heuristic's where not ``tuned``."""
    read = output if kind is DIRECT_INPUT_GRAD else input
    heuristic = _heuristic_knobs(spec, per_group, DIRECT_PIXELS, DIRECT_MULTIPLIERS)
    if not tuned:
        return heuristic
    return select_config(
        kind, spec, read.dtype, "ieee", kind.key_layout(input, output), build_launch, heuristic, read.device
    )


def plan_direct_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    epilogue: Epilogue = PLAIN,
    knobs: KernelConfig | None = None,
    gate: torch.Tensor | None = None,
) -> Launch:
    """The launch writing activation(conv(input, weight) + bias + residual) into ``out``.
    ``knobs`` override what ``select_config`` picks (the heuristic's, unless tuned). With
    ``gate`` (``non_finite.new_flag``), a launch that does it only where the flag is set, with
    the heuristic's knobs (timing it on finite data would time nothing)."""
    if knobs is None:
        knobs = _selected_knobs(
            DIRECT_FORWARD, spec, input, out, spec.in_channels_per_group,
            lambda k: plan_direct_forward(input, weight, bias, spec, out, epilogue, k), tuned=gate is None,
        )  # fmt: skip
    x, y = as_3d(input), as_3d(out)
    slots = _Slots.of(spec.groups, spec.in_channels_per_group, spec.out_channels_per_group, knobs.block_k)
    cfg = _tile(spec, slots, spec.output_size[2], x, knobs=knobs)
    w = grouped_filter(weight, spec, channels_contiguous(x), forward=True, gated=gate is not None)
    groups_per_row, pixel_groups = _pixel_groups(spec, spec.output_size, cfg.pixels)
    grid = (triton.cdiv(pixel_groups, cfg.block_g), triton.cdiv(slots.count, cfg.block_c), slots.blocks)
    args = arguments.tensors(x=x, w=w) | arguments.output("y", y, bias, epilogue) | arguments.sizes(spec)
    w_strides = _addressed_by_input_channel(w)
    args |= dict(w_strides=w_strides, C=spec.in_channels, GROUPS=spec.groups)
    args |= dict(K_G=spec.out_channels_per_group, GROUPS_PER_ROW=groups_per_row, PIXEL_GROUPS=pixel_groups)
    args |= arguments.flag(gate, y)
    constexprs = arguments.output_flags(bias, epilogue) | _geometry_constexprs(spec) | _tile_constexprs(cfg)
    constexprs |= dict(GATED=gate is not None)
    constexprs |= dict(C_G=spec.in_channels_per_group, **slots.constexprs(spec.in_channels, cfg))
    # The offsets by input channel reach further than the filter's own where its channels are
    # not innermost (a view): 64-bit where they could pass 2^31.
    extents = (spec.groups, spec.out_channels_per_group, spec.in_channels, *spec.kernel_size)
    filter_reach = sum((n - 1) * abs(stride) for n, stride in zip(extents, w_strides))
    index_64 = needs_int64(x, w, y, args["residual_ptr"]) or filter_reach >= 2**31
    constexprs |= dict(INDEX_64=index_64, ACC_DTYPE=accumulator_dtype(x.dtype), CHANNEL_VECTORS=channels_contiguous(x))
    constexprs |= column_pairs(x, spec, cfg) | pair_stores(y, cfg.pixels)
    return Launch(direct_forward_kernel, grid, args, constexprs, cfg.num_warps, 1)


def plan_direct_input_grad(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    spec: ConvSpec,
    grad_input: torch.Tensor,
    bias: torch.Tensor | None = None,
    epilogue: Epilogue = PLAIN,
    knobs: KernelConfig | None = None,
    gate: torch.Tensor | None = None,
) -> Launch:
    """The launch writing d(loss)/d(input) into ``grad_input``; with ``bias`` and ``epilogue``,
    activation(that + bias + residual): a transposed convolution. ``knobs`` and ``gate`` as in
    ``plan_direct_forward``."""
    if knobs is None:
        knobs = _selected_knobs(
            DIRECT_INPUT_GRAD, spec, grad_input, grad_output, spec.out_channels_per_group,
            lambda k: plan_direct_input_grad(grad_output, weight, spec, grad_input, bias, epilogue, k),
            tuned=gate is None,
        )  # fmt: skip
    dy, dx = as_3d(grad_output), as_3d(grad_input)
    conv_stride_w = spec.stride[2]
    fused = epilogue.residual is not None or epilogue.pre_activation is not None
    width = triton.cdiv(spec.input_size[2], conv_stride_w)
    slots = _Slots.of(spec.groups, spec.out_channels_per_group, spec.in_channels_per_group, knobs.block_k)
    cfg = _tile(spec, slots, width, dy, knobs=knobs, fused_transposed_epilogue=fused)
    w = grouped_filter(weight, spec, channels_contiguous(dy), forward=False, gated=gate is not None).flatten(0, 1)
    # Rows of one phase per program (see the kernel): the phases at or past the size hold none.
    phase_d, phase_h, _ = spec.pixels_per_phase
    phase_rows = (phase_d, phase_h, spec.input_size[2])
    groups_per_row, pixel_groups = _pixel_groups(spec, phase_rows, cfg.pixels * conv_stride_w)
    phases = dict(zip(("PHASES_D", "PHASES_H"), spec.phases_holding_pixels[:2]))
    phase_blocks = triton.cdiv(pixel_groups, cfg.block_g) * math.prod(phases.values())
    grid = (phase_blocks, triton.cdiv(slots.count, cfg.block_c), slots.blocks)
    args = arguments.tensors(dy=dy, w=w) | arguments.output("dx", dx, bias, epilogue) | arguments.sizes(spec)
    args |= dict(K=spec.out_channels, C_G=spec.in_channels_per_group, GROUPS=spec.groups)
    args |= dict(GROUPS_PER_ROW=groups_per_row, PIXEL_GROUPS=pixel_groups) | arguments.flag(gate, dx)
    constexprs = _geometry_constexprs(spec) | dict(PAD_W=spec.pad_lo[2]) | phases | _tile_constexprs(cfg)
    constexprs |= dict(zip(("ROW_STEP_D", "ROW_STEP_H"), spec.phase_tap_step[:2]))
    constexprs |= arguments.output_flags(bias, epilogue) | dict(GATED=gate is not None)
    constexprs |= dict(K_G=spec.out_channels_per_group, **slots.constexprs(spec.out_channels, cfg))
    constexprs |= dict(INDEX_64=needs_int64(dy, w, dx, args["residual_ptr"]), ACC_DTYPE=accumulator_dtype(dy.dtype))
    constexprs |= dict(CHANNEL_VECTORS=channels_contiguous(dy)) | column_pairs(dy, spec, cfg, input_grad=True)
    constexprs |= pair_stores(dx, cfg.pixels * conv_stride_w)
    return Launch(direct_input_grad_kernel, grid, args, constexprs, cfg.num_warps, 1)


def _weight_grad_knobs(spec: ConvSpec) -> KernelConfig:
    """The weight gradient's heuristic knobs: up to 16 pixels per thread; multipliers only for
    groups of several channels, whose slots share each multiplier's dy values (a depthwise
    channel multiplier's dy values are not shared, and 2 of them spill)."""
    c_g = spec.in_channels_per_group
    return _heuristic_knobs(spec, c_g, DIRECT_WEIGHT_GRAD_PIXELS, DIRECT_MULTIPLIERS if c_g > 1 else 1)


def _weight_grad_tiling(
    spec: ConvSpec, dy: torch.Tensor, x: torch.Tensor, knobs: KernelConfig
) -> tuple[DirectConfig, _Slots, int, int, int]:
    """The weight gradient's tile and slots with ``knobs``, pixel groups per output row, all pixel
    groups, and programs per split."""
    c_g = spec.in_channels_per_group
    slots = _Slots.of(spec.groups, c_g, spec.out_channels_per_group, knobs.block_k if c_g > 1 else 1)
    cfg = _tile(spec, slots, spec.output_size[2], as_3d(dy), as_3d(x), knobs=knobs, holds_filter_row=False)
    t, r, s = spec.kernel_size
    groups_per_row, pixel_groups = _pixel_groups(spec, spec.output_size, cfg.pixels)
    columns = t * r * triton.cdiv(s, cfg.taps_per_step)
    # At least one block, so that the bias gradient is computed even with no channels.
    programs = triton.cdiv(slots.count, cfg.block_c) * max(1, slots.blocks) * columns
    return cfg, slots, groups_per_row, pixel_groups, programs


def direct_split_k(
    spec: ConvSpec, grad_output: torch.Tensor, input: torch.Tensor, knobs: KernelConfig | None = None
) -> int:
    """Splits of the pixel reduction with ``knobs`` (the heuristic's by default): enough programs
    to fill the GPU, chunks of at least 16 tiles."""
    knobs = knobs or _weight_grad_knobs(spec)
    cfg, _, _, pixel_groups, programs = _weight_grad_tiling(spec, grad_output, input, knobs)
    return split_k_for(programs, pixel_groups, cfg.block_g)


def plan_direct_weight_grad(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    spec: ConvSpec,
    dw_partial: torch.Tensor,
    db_partial: torch.Tensor | None,
    knobs: KernelConfig | None = None,
    gate: torch.Tensor | None = None,
) -> Launch:
    """The launch writing split partials of dw (and db) with ``knobs`` (the heuristic's by
    default); ``dw_partial`` is (SPLIT_K, K * C_G * taps). With ``gate``, only where it is set."""
    dy, x = as_3d(grad_output), as_3d(input)
    split_k = dw_partial.shape[0]
    cfg, slots, groups_per_row, pixel_groups, programs = _weight_grad_tiling(
        spec, dy, x, knobs or _weight_grad_knobs(spec)
    )
    chunk = triton.cdiv(triton.cdiv(pixel_groups, cfg.block_g), split_k) * cfg.block_g
    # Slot blocks times multiplier blocks on the first axis, which has room for 2^31 (a depthwise
    # channel multiplier makes K_G blocks); the filter's taps on the second.
    columns = math.prod(spec.kernel_size[:2]) * triton.cdiv(spec.kernel_size[2], cfg.taps_per_step)
    grid = (programs // columns, columns, split_k)
    args = arguments.tensors(dy=dy, x=x) | arguments.sizes(spec)
    args |= dict(dw_partial_ptr=dw_partial, db_partial_ptr=db_partial if db_partial is not None else dw_partial)
    args |= dict(C=spec.in_channels, GROUPS=spec.groups, K_G=spec.out_channels_per_group)
    args |= dict(GROUPS_PER_ROW=groups_per_row, PIXEL_GROUPS=pixel_groups, CHUNK=chunk)
    args |= arguments.flag(gate, dw_partial)
    constexprs = _geometry_constexprs(spec) | _tile_constexprs(cfg) | dict(HAS_BIAS_GRAD=db_partial is not None)
    constexprs |= dict(GATED=gate is not None)
    constexprs |= dict(C_G=spec.in_channels_per_group, **slots.constexprs(spec.in_channels, cfg))
    constexprs |= dict(INDEX_64=needs_int64(dy, x, dw_partial), ACC_DTYPE=accumulator_dtype(dy.dtype))
    constexprs |= dict(CHANNEL_VECTORS=channels_contiguous(dy, x))
    constexprs |= column_pairs(x, spec, cfg)
    return Launch(direct_weight_grad_kernel, grid, args, constexprs, cfg.num_warps, 1)


def _plan_weight_grad_with_knobs(
    spec: ConvSpec, x: torch.Tensor, y: torch.Tensor, with_bias: bool, knobs: KernelConfig
) -> Launch:
    """The weight gradient's launch with ``knobs`` and its own split partials (what compile checks build)."""
    splits = direct_split_k(spec, y, x, knobs)
    bias_elements = spec.out_channels if with_bias else None
    dw_partial, db_partial = partial_buffers(
        y, splits, spec.out_channels * spec.in_channels_per_group * spec.taps, bias_elements
    )
    return plan_direct_weight_grad(y, x, spec, dw_partial, db_partial, knobs)


# The direct weight gradient as tuning sees it: the forward's knobs (``direct_knobs``; at most
# 16 pixels per thread, ``DIRECT_WEIGHT_GRAD_TILES``), each with the split count of the
# heuristic's rule for its tile, the split sums timed with it. Its GEMM: the group's output
# channels by its input channels and taps, reduced over the output pixels.
DIRECT_WEIGHT_GRAD = KernelKind(
    name="direct_weight_grad",
    pass_="W",
    tiles=DIRECT_WEIGHT_GRAD_TILES,
    interpreter_tile=_interpreter_knobs(),
    gemm_extents=lambda spec: (spec.out_channels_per_group, spec.taps * spec.in_channels_per_group, spec.output_pixels),
    dense_gemm=lambda spec: (spec.out_channels_per_group, spec.taps * spec.in_channels_per_group, spec.output_pixels),
    key_pixels=lambda spec: spec.output_pixels,
    key_layout=lambda input, output: "cl" if layout_of(input) == layout_of(output) == "cl" else "nc",
    plan=lambda spec, x, w, b, y, knobs: _plan_weight_grad_with_knobs(spec, x, y, b is not None, knobs),
    key_fields=lambda spec: _direct_key_fields(spec, spec.output_size[2]),
    gemm_blocks=False,
)


def direct_weight_grad(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    spec: ConvSpec,
    grad_weight: torch.Tensor,
    grad_bias: torch.Tensor | None = None,
    split_k: int | None = None,
    knobs: KernelConfig | None = None,
    gate: torch.Tensor | None = None,
) -> None:
    """Write d(loss)/d(weight) into ``grad_weight`` (contiguous) and, if given, d(loss)/d(bias).
    ``knobs`` override what ``select_config`` picks (the heuristic's, unless tuned); ``split_k``
    the split count of their tile's rule. With ``gate`` (``non_finite.new_flag``), only where
    the flag is set: the gradients are left as they are otherwise."""
    if knobs is None and gate is not None:
        knobs = _weight_grad_knobs(spec)
    if knobs is None:
        knobs = select_config(
            DIRECT_WEIGHT_GRAD, spec, grad_output.dtype, "ieee", DIRECT_WEIGHT_GRAD.key_layout(input, grad_output),
            lambda k: functools.partial(direct_weight_grad, grad_output, input, spec, grad_weight, grad_bias, split_k, k),
            _weight_grad_knobs(spec), grad_output.device,
        )  # fmt: skip
    splits = split_k or direct_split_k(spec, grad_output, input, knobs)
    bias_elements = spec.out_channels if grad_bias is not None else None
    dw_partial, db_partial = partial_buffers(grad_output, splits, grad_weight.numel(), bias_elements)
    plan_direct_weight_grad(grad_output, input, spec, dw_partial, db_partial, knobs, gate)()
    sum_splits(dw_partial, grad_weight, gate)
    if grad_bias is not None:
        sum_splits(db_partial, grad_bias, gate)
