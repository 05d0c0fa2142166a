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
BLOCK_J * CHUNKS products the matrix unit computes, a waste of 2-5x on wide filter rows that
the matrix unit's 16x more multiply-adds per clock than FP32 FMAs pay for, where a direct kernel
on CUDA cores is bound by its instruction issue.

Loads along W are contiguous; with rows whose starts are 16-byte aligned (``ALIGNED``: the input's
row strides and W multiples of a vector, the segment start moved back from PAD_W to LEAD, a
multiple of a vector) they are 16-byte vectors.

The input gradient of a depthwise convolution with unit steps is the same product against the
flipped filter (``plan_banded_input_grad``).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import triton
import triton.language as tl

from ..spec import ConvSpec, as_3d, needs_int64
from ..tuning.configs import BandedConfig, banded_columns, banded_config, banded_lead
from . import arguments
from .common import Launch, accumulator_dtype, dot_operand, dot_precision
from .epilogue import PLAIN, Epilogue, finish_output
from .indexing import program_ids, unravel_pixels


@triton.jit
def banded_forward_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr,
    K_G, input_size, output_size, SEGMENTS, ROWS, padding,
    x_strides, w_strides, y_strides, bias_stride, residual_strides,
    T: tl.constexpr, R: tl.constexpr, S: tl.constexpr,
    CONV_STRIDE_D: tl.constexpr, CONV_STRIDE_H: tl.constexpr, DIL_D: tl.constexpr, DIL_H: tl.constexpr,
    DIL_W: tl.constexpr, PAD_W: tl.constexpr, LEAD: tl.constexpr, CHUNKS: tl.constexpr,
    X_ALIGNED: tl.constexpr, Y_ALIGNED: tl.constexpr, VECTOR: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_PRE_ACTIVATION: tl.constexpr,
    INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_J: tl.constexpr,
):  # fmt: skip
    """y = activation(z), z[n, k, o] = sum over taps of x[n, k // K_G, i(o, tap)] * w[k, 0, tap]
    + bias[k] + residual[n, k, o], for one input channel per group (depthwise) and a unit
    convolution step along W.

    Args:
        x_ptr, x_strides: input (N, C, D, H, W); any strides (5, in elements).
        w_ptr, w_strides: weight (K, 1, T, R, S); any strides (5).
        y_ptr, y_strides: output (N, K, D_OUT, H_OUT, W_OUT); any strides (5).
        bias_ptr, bias_stride: bias (K,) and its stride; read only if HAS_BIAS.
        residual_ptr, residual_strides: added before the activation, y's shape, any strides (5);
            read only if HAS_RESIDUAL.
        z_ptr: the pre-activation z, y's shape and strides; written only if STORE_PRE_ACTIVATION.
        K_G: output channels per group. input_size: (D, H, W). output_size: (D_OUT, H_OUT, W_OUT).
        padding: leading padding (D, H, W); PAD_W is its W entry, as a constexpr.
        SEGMENTS: cdiv(W_OUT, BLOCK_W) segments per output row; ROWS = N * D_OUT * H_OUT * SEGMENTS.
        T, R, S: filter size. CONV_STRIDE_D/H: the convolution's steps along D and H (1 along W).
        DIL_D/H/W: the spacing of the taps.
        LEAD: input columns read before a segment's first output column (at least PAD_W, a
            multiple of VECTOR). CHUNKS: BLOCK_J-deep reduction steps per filter row, covering
            the segment's BLOCK_W + (S - 1) * DIL_W + LEAD - PAD_W input columns.
        X_ALIGNED, Y_ALIGNED: every row of x (y) starts at a multiple of VECTOR elements and W
            (W_OUT) is one: loads (stores) along W are VECTOR-element vectors.
        HAS_BIAS: add the bias. ACTIVATION: the activation's name ("none" for none).
        HAS_RESIDUAL: add the residual. STORE_PRE_ACTIVATION: write z.
        INDEX_64: compute offsets in int64. ACC_DTYPE: float32, or float64 for float64.
        PRECISION: tl.dot input precision ("ieee" or "tf32").
        BLOCK_M, BLOCK_W, BLOCK_J: rows, output columns and input columns of a step's product.
        Grid: (cdiv(ROWS, BLOCK_M), K).
    """
    pid_m, k, _ = program_ids(INDEX_64)
    D, H, W = input_size
    D_OUT, H_OUT, W_OUT = output_size
    pad_d, pad_h, _ = padding
    sx_n, sx_c, sx_d, sx_h, sx_w = x_strides
    sw_k, sw_c, sw_t, sw_r, sw_s = w_strides

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = rows < ROWS
    n, od, oh, segment = unravel_pixels(rows, D_OUT, H_OUT, SEGMENTS)
    ow0 = segment * BLOCK_W
    first_col = ow0 - LEAD
    x_base = n * sx_n + (k // K_G) * sx_c + first_col * sx_w
    j = tl.arange(0, BLOCK_J)
    i = tl.arange(0, BLOCK_W)
    # Band offsets of chunk 0: element (j, i) holds tap (j - i - (LEAD - PAD_W)) / DIL_W.
    band_offs = j[:, None] - i[None, :] - (LEAD - PAD_W)
    w_channel = w_ptr + k * sw_k
    if X_ALIGNED:
        W = tl.multiple_of(W, VECTOR)

    acc = tl.zeros((BLOCK_M, BLOCK_W), dtype=ACC_DTYPE)
    # One flat loop over (leading tap, chunk), so that the loads of the next filter rows are in
    # flight while this one's products run.
    for step in range(0, T * R * CHUNKS):
        tap_row = step // CHUNKS
        chunk = step % CHUNKS
        kt = tap_row // R
        kr = tap_row % R
        id_ = od * CONV_STRIDE_D - pad_d + kt * DIL_D
        ih = oh * CONV_STRIDE_H - pad_h + kr * DIL_H
        row_ok = mask_m & (id_ >= 0) & (id_ < D) & (ih >= 0) & (ih < H)
        x_rows = x_base + id_ * sx_d + ih * sx_h + chunk * BLOCK_J * sx_w
        cols = first_col + chunk * BLOCK_J
        if X_ALIGNED:
            x_rows = tl.multiple_of(x_rows, VECTOR)
            cols = tl.multiple_of(cols, VECTOR)
        cols_2d = cols[:, None] + j[None, :]
        a = tl.load(
            x_ptr + x_rows[:, None] + j[None, :] * sx_w,
            mask=row_ok[:, None] & (cols_2d >= 0) & (cols_2d < W),
            other=0.0,
        )
        tap_offs = band_offs + chunk * BLOCK_J
        in_band = (tap_offs >= 0) & (tap_offs < S * DIL_W) & (tap_offs % DIL_W == 0)
        band = tl.load(w_channel + kt * sw_t + kr * sw_r + (tap_offs // DIL_W) * sw_s, mask=in_band, other=0.0)
        acc = tl.dot(dot_operand(a), dot_operand(band), acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + k * bias_stride).to(ACC_DTYPE)
    sy_n, sy_k, sy_d, sy_h, sy_w = y_strides
    sr_n, sr_k, sr_d, sr_h, sr_w = residual_strides
    y_rows = n * sy_n + k * sy_k + od * sy_d + oh * sy_h + ow0 * sy_w
    r_rows = n * sr_n + k * sr_k + od * sr_d + oh * sr_h + ow0 * sr_w
    ow = ow0[:, None] + i[None, :]
    if Y_ALIGNED:
        y_rows = tl.multiple_of(y_rows, VECTOR)
        W_OUT = tl.multiple_of(W_OUT, VECTOR)
    mask = mask_m[:, None] & (ow < W_OUT)
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


def _rows_aligned(t: torch.Tensor, vector: int) -> bool:
    """Whether every W row of the (N, C, D, H, W) ``t`` starts at a multiple of ``vector``
    elements and is dense: its start, its strides other than W's, and its width are multiples of
    ``vector``, and W's stride is 1."""
    return (
        t.stride(-1) == 1
        and t.data_ptr() % (vector * t.element_size()) == 0
        and all(stride % vector == 0 for stride in t.stride()[:-1])
        and t.shape[-1] % vector == 0
    )


def plan_banded_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    epilogue: Epilogue = PLAIN,
    cfg: BandedConfig | None = None,
) -> Launch:
    """The launch writing activation(conv(input, weight) + bias + residual) into ``out`` for a
    depthwise ``spec`` with a unit step along W (``banded_applies``)."""
    x, w, y = as_3d(input), as_3d(weight), as_3d(out)
    pad_w = spec.pad_lo[2]
    vector = 16 // x.element_size()
    cfg = cfg or banded_config(spec, vector)
    lead = banded_lead(pad_w, vector)
    columns = banded_columns(spec, cfg.block_w, vector)
    d_out, h_out, w_out = spec.output_size
    segments = triton.cdiv(w_out, cfg.block_w)
    rows = spec.batch * d_out * h_out * segments
    args = arguments.tensors(x=x, w=w) | arguments.output("y", y, bias, epilogue) | arguments.sizes(spec)
    args |= dict(K_G=spec.out_channels_per_group, SEGMENTS=segments, ROWS=rows)
    constexprs = dict(zip(("T", "R", "S"), spec.kernel_size))
    constexprs |= dict(CONV_STRIDE_D=spec.stride[0], CONV_STRIDE_H=spec.stride[1])
    constexprs |= dict(zip(("DIL_D", "DIL_H", "DIL_W"), spec.dilation))
    constexprs |= dict(PAD_W=pad_w, LEAD=lead, CHUNKS=triton.cdiv(columns, cfg.block_j), VECTOR=vector)
    constexprs |= dict(X_ALIGNED=_rows_aligned(x, vector), Y_ALIGNED=_rows_aligned(y, vector))
    constexprs |= arguments.output_flags(bias, epilogue)
    constexprs |= dict(
        INDEX_64=needs_int64(x, w, y, args["residual_ptr"]),
        ACC_DTYPE=accumulator_dtype(x.dtype),
        PRECISION=dot_precision(x),
        BLOCK_M=cfg.block_m,
        BLOCK_W=cfg.block_w,
        BLOCK_J=cfg.block_j,
    )
    grid = (triton.cdiv(rows, cfg.block_m), spec.out_channels)
    return Launch(banded_forward_kernel, grid, args, constexprs, cfg.num_warps, cfg.num_stages)


def flipped_forward_spec(spec: ConvSpec) -> ConvSpec:
    """The forward problem whose output is the input gradient of a depthwise ``spec`` with unit
    steps: dy convolved with the flipped filter, each side padded by the filter's reach minus
    the original padding on the other side."""
    reach = tuple(d * (k - 1) for d, k in zip(spec.dilation, spec.kernel_size))
    return replace(
        spec,
        input_size=spec.output_size,
        output_size=spec.input_size,
        pad_lo=tuple(r - p for r, p in zip(reach, spec.pad_lo)),
        pad_hi=tuple(r - p for r, p in zip(reach, spec.pad_hi)),
    )


def plan_banded_input_grad(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    spec: ConvSpec,
    grad_input: torch.Tensor,
    bias: torch.Tensor | None = None,
    epilogue: Epilogue = PLAIN,
) -> Launch:
    """The launch writing d(loss)/d(input) into ``grad_input`` (with ``bias`` and ``epilogue``,
    a transposed convolution's output) for a depthwise ``spec`` with unit steps, one output
    channel per group (``banded_input_grad_applies``). The flipped filter is a copy (K x taps
    elements)."""
    flipped = weight.flip(tuple(range(2, weight.dim())))
    return plan_banded_forward(grad_output, flipped, bias, flipped_forward_spec(spec), grad_input, epilogue)
