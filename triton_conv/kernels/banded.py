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

Loads along W are contiguous and, where every row starts at a multiple of a vector of up to 16
bytes (``row_unit``), vectors: each segment's first column is moved back from PAD_W to LEAD, a
multiple of the vector, so that whole vectors are inside or outside the row.

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
from .reduction import in_range, zero_index


@triton.jit
def banded_forward_kernel(
    x_ptr, band_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr,
    K_G, TAP_ROWS, input_size, output_size, SEGMENTS, ROWS, padding,
    x_strides, band_strides, y_strides, bias_stride, residual_strides,
    R: tl.constexpr, CONV_STRIDE_D: tl.constexpr, CONV_STRIDE_H: tl.constexpr,
    DIL_D: tl.constexpr, DIL_H: tl.constexpr, LEAD: tl.constexpr, CHUNKS: tl.constexpr,
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
        K_G: output channels per group. TAP_ROWS: T * R, the filter rows.
        input_size: (D, H, W). output_size: (D_OUT, H_OUT, W_OUT). padding: leading padding (D, H, W).
        SEGMENTS: cdiv(W_OUT, BLOCK_W) segments per output row; ROWS = N * D_OUT * H_OUT * SEGMENTS.
        R: the filter's height. CONV_STRIDE_D/H: the convolution's steps along D and H (1 along W).
        DIL_D/H: the spacing of the taps along D and H.
        LEAD: input columns read before a segment's first output column (the padding along W
            rounded up to a multiple of X_UNIT). CHUNKS: BLOCK_J-deep reduction steps per filter row, covering
            the segment's input columns (``banded_columns``).
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
    D_OUT, H_OUT, W_OUT = output_size
    pad_d, pad_h, _ = padding
    sx_n, sx_c, sx_d, sx_h, sx_w = x_strides
    sb_k, sb_j, sb_i = band_strides

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = rows < ROWS
    n, od, oh, segment = unravel_pixels(rows, D_OUT, H_OUT, SEGMENTS)
    ow0 = segment * BLOCK_W
    id0 = od * CONV_STRIDE_D - pad_d
    # Rows past the last start below the input, where no tap (offsets >= 0) brings them inside.
    ih0 = tl.where(mask_m, oh * CONV_STRIDE_H - pad_h, H)
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
        row_ok = in_range(id0 + dd, D, INDEX_64) & in_range(ih0 + dh, H, INDEX_64)
        in_row = in_range(cols + chunk * (BLOCK_J // x_unit), W // x_unit, INDEX_64)
        x_step = (dd * (sx_d // x_unit) + dh * (sx_h // x_unit) + chunk * (BLOCK_J // x_unit) * sx_w) * x_unit
        a = tl.load(x_ptr + x_step + x_offs, mask=row_ok[:, None] & in_row, other=0.0, cache_modifier=".ca")
        band = tl.load(band_ptrs)
        acc = tl.dot(dot_operand(a), dot_operand(band), acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        band_ptrs += BLOCK_J * sb_j
        chunk += 1
        row_done = chunk == CHUNKS
        chunk = tl.where(row_done, 0, chunk)
        kr = tl.where(row_done, kr + 1, kr)
        plane_done = kr == R
        kr = tl.where(plane_done, 0, kr)
        kt = tl.where(plane_done, kt + 1, kt)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + k * bias_stride).to(ACC_DTYPE)
    sy_n, sy_k, sy_d, sy_h, sy_w = y_strides
    sr_n, sr_k, sr_d, sr_h, sr_w = residual_strides
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


def band_matrices(weight: torch.Tensor, spec: ConvSpec, block_w: int, depth: int, lead: int) -> torch.Tensor:
    """Each filter row of the depthwise ``weight`` (K, 1, T, R, S) as its band matrix, stacked: (K,
    T * R * depth, block_w), element (j, i) of row (t, r) the tap s with s * DIL_W = j - i - (lead -
    PAD_W), zero where there is none. Input column ow0 - lead + j times it adds to output column
    ow0 + i. A copy of depth * block_w elements per filter row, built by one gather."""
    k = weight.shape[0]
    _, _, s = spec.kernel_size
    dil_w = spec.dilation[2]
    taps = (
        torch.arange(depth, device=weight.device)[:, None]
        - torch.arange(block_w, device=weight.device)[None, :]
        - (lead - spec.pad_lo[2])
    )
    in_band = (taps >= 0) & (taps < s * dil_w) & (taps % dil_w == 0)
    rows = as_3d(weight).reshape(k, -1, s)
    # Index s (one past the row) reads the zero appended to every row.
    padded = torch.cat([rows, rows.new_zeros((k, rows.shape[1], 1))], dim=2)
    return padded[:, :, torch.where(in_band, taps // dil_w, s)].reshape(k, -1, block_w)


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
    x, y = as_3d(input), as_3d(out)
    t, r, _ = spec.kernel_size
    pad_w = spec.pad_lo[2]
    x_unit = row_unit(x)
    cfg = cfg or banded_config(spec, x_unit)
    lead = banded_lead(pad_w, x_unit)
    chunks = triton.cdiv(banded_columns(spec, cfg.block_w, x_unit), cfg.block_j)
    band = band_matrices(weight, spec, cfg.block_w, chunks * cfg.block_j, lead)
    d_out, h_out, w_out = spec.output_size
    segments = triton.cdiv(w_out, cfg.block_w)
    rows = spec.batch * d_out * h_out * segments
    args = arguments.tensors(x=x, band=band) | arguments.output("y", y, bias, epilogue) | arguments.sizes(spec)
    args |= dict(K_G=spec.out_channels_per_group, TAP_ROWS=t * r, SEGMENTS=segments, ROWS=rows)
    constexprs = dict(R=r, CONV_STRIDE_D=spec.stride[0], CONV_STRIDE_H=spec.stride[1])
    constexprs |= dict(DIL_D=spec.dilation[0], DIL_H=spec.dilation[1], LEAD=lead, CHUNKS=chunks)
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
