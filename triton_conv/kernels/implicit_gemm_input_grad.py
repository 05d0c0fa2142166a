"""Input gradient as an implicit GEMM over input pixels with the transposed filter.

dx[n, c, i] = sum over taps and output channels k of dy[n, k, o] * w[k, c, tap], where
o * stride = i + pad - tap * dil. For a strided convolution only the taps with
(i + pad - tap * dil) divisible by the stride reach input pixel i, and which taps those are
depends only on i modulo the stride (its phase): along each dimension, every
stride / gcd(stride, dil)-th tap from the first that does. Programs are therefore split by
phase: each covers pixels of one phase and runs one software-pipelined loop (``reduction.py``)
over exactly the taps that reach it x the output-channel blocks.

The same kernel is the forward of a transposed convolution (whose output is the gradient of the
convolution it transposes), so it ends in the forward kernel's epilogue: optional bias,
residual, saved pre-activation and activation, all off by default.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..spec import ConvSpec, as_3d, needs_int64
from ..tuning.configs import IMPLICIT_GEMM_CONFIGS, INTERPRETER_CONFIGS, KernelConfig
from ..tuning.kinds import KernelKind
from ..tuning.select import select_config
from . import arguments
from .common import Launch, accumulator_dtype, dot_operand, dot_precision
from .epilogue import PLAIN, Epilogue, finish_tile
from .indexing import program_ids, unravel_pixels
from .layout import alignment_run, gemm_operand, gemm_operand_layout, operand_run, store_transposed
from .reduction import fold_rows, load_operands, next_step, phase_taps, rows_inside, zero_index


@triton.jit
def implicit_gemm_input_grad_kernel(
    dy_ptr, w_ptr, dx_ptr, bias_ptr, residual_ptr, z_ptr,
    C_G, input_size, K_G, output_size, phase_size, phase_counts, M_PH, kernel_size,
    conv_stride, padding, dilation, phase_tap_step, phase_out_step,
    dy_strides, w_strides, dx_strides, bias_stride, residual_strides,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_PRE_ACTIVATION: tl.constexpr,
    CHECK_D: tl.constexpr, CHECK_H: tl.constexpr, CHECK_W: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
    DY_RUN: tl.constexpr, W_RUN: tl.constexpr, K_RUN: tl.constexpr, C_RUN: tl.constexpr,
    STORE_TRANSPOSED: tl.constexpr, INDEX_64: tl.constexpr, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """dx for one (BLOCK_M input pixels of one phase) x (BLOCK_N input channels) tile.
    Grid: (cdiv(M_PH, BLOCK_M) * phases, cdiv(C_G, BLOCK_N), groups), phases = the product of
    phase_counts, phase fastest on axis 0: a stride past the input cannot push the phases over the
    65535 programs axes 1 and 2 allow.

    Args:
        dy_ptr, dy_strides: output gradient (N, K, D_OUT, H_OUT, W_OUT), K = groups * K_G; any
            strides (5, in elements).
        w_ptr, w_strides: weight (K, C_G, T, R, S); any strides (5).
        dx_ptr, dx_strides: input gradient (N, C, D, H, W), C = groups * C_G; any strides (5);
            every element is written (zero, or the bias, where no tap reaches it).
        bias_ptr, bias_stride: bias (C,) and its stride (a transposed convolution's); read only if HAS_BIAS.
        residual_ptr, residual_strides: added before the activation, dx's shape, any strides (5);
            read only if HAS_RESIDUAL.
        z_ptr: the pre-activation, dx's shape and strides; written only if STORE_PRE_ACTIVATION.
        input_size: (D, H, W). output_size: (D_OUT, H_OUT, W_OUT). padding: leading padding (D, H, W).
        kernel_size: filter size (T, R, S). conv_stride: the convolution's step (D, H, W) between
            output pixels (not a memory stride); an input pixel's phase is its coordinate modulo it.
            dilation: (D, H, W) spacing of the taps.
        phase_tap_step, phase_out_step: per dimension, the taps reaching one phase are every
            phase_tap_step-th (stride / gcd(stride, dil)); between two of them the output pixel
            moves by phase_out_step (dil / gcd(stride, dil)).
        phase_size: input pixels per phase (D_PH, H_PH, W_PH) = (ceil(D / conv_stride_d), ...).
        phase_counts: the phases holding pixels per dimension, min(conv_stride, input_size).
        C_G, K_G: input and output channels per group. M_PH: N * D_PH * H_PH * W_PH.
        HAS_BIAS: add the bias. ACTIVATION: the activation's name ("none" for none).
        HAS_RESIDUAL: add the residual. STORE_PRE_ACTIVATION: write z.
        CHECK_D, CHECK_H, CHECK_W: whether a tap can reach outside the output along D, H, W.
        EVEN_K: K_G is a multiple of BLOCK_K; EVEN_N: C_G is a multiple of BLOCK_N (no masks).
        DY_RUN, W_RUN: every pixel's, tap's and step's offset into dy, and into w, is a multiple
            of it; K_RUN, C_RUN: K_G, and C_G, are. Told to the compiler as in the forward.
        STORE_TRANSPOSED: store the tile as (channels x pixels) rather than (pixels x channels).
        INDEX_64: compute offsets in int64 (some tensor spans 2^31 elements or more).
        PRECISION: tl.dot input precision ("ieee" or "tf32").
        ACC_DTYPE: accumulator type (float32, or float64 for float64 inputs).
        BLOCK_M, BLOCK_N, BLOCK_K: the tile: input pixels, input channels, output channels per step.
    """
    pid_0, pid_n, group = program_ids(INDEX_64)
    phases_d, phases_h, phases_w = phase_counts
    phases = phases_d * phases_h * phases_w
    phase = pid_0 % phases
    pid_m = pid_0 // phases
    ph_w = phase % phases_w
    ph_h = (phase // phases_w) % phases_h
    ph_d = phase // (phases_w * phases_h)
    conv_stride_d, conv_stride_h, conv_stride_w = conv_stride
    # The taps reaching this phase, last first, and the output pixel the last one reads.
    pad_d, pad_h, pad_w = padding
    dil_d, dil_h, dil_w = dilation
    tap_step_d, tap_step_h, tap_step_w = phase_tap_step
    T, R, S = kernel_size
    last_t, count_t, shift_d = phase_taps(ph_d, pad_d, dil_d, conv_stride_d, tap_step_d, T)
    last_r, count_r, shift_h = phase_taps(ph_h, pad_h, dil_h, conv_stride_h, tap_step_h, R)
    last_s, count_s, shift_w = phase_taps(ph_w, pad_w, dil_w, conv_stride_w, tap_step_w, S)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    if INDEX_64:
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
        offs_k = offs_k.to(tl.int64)
    if EVEN_N:
        # A constant: the compiler drops the weight tile's column test.
        mask_n = tl.full((BLOCK_N,), True, tl.int1)
    else:
        mask_n = offs_n < C_G
        if C_RUN > 1:
            mask_n = tl.max_constancy(mask_n, C_RUN)

    D_PH, H_PH, W_PH = phase_size
    n, jd, jh, jw = unravel_pixels(offs_m, D_PH, H_PH, W_PH)
    # Input pixel (ph + stride * j) in each dimension.
    id_ = ph_d + conv_stride_d * jd
    ih = ph_h + conv_stride_h * jh
    iw = ph_w + conv_stride_w * jw
    D, H, W = input_size
    mask_m = (offs_m < M_PH) & (id_ < D) & (ih < H) & (iw < W)
    # Output pixel read by the last tap; each earlier tap adds out_step.
    od0 = jd + shift_d
    oh0 = jh + shift_h
    ow0 = jw + shift_w
    # Element offsets at the last tap, output channel 0; a step adds one scalar to each element.
    sdy_n, sdy_k, sdy_d, sdy_h, sdy_w = dy_strides
    sw_k, sw_c, sw_t, sw_r, sw_s = w_strides
    dy_rows = n * sdy_n + group * K_G * sdy_k + od0 * sdy_d + oh0 * sdy_h + ow0 * sdy_w
    w_tap = group * K_G * sw_k + last_t * sw_t + last_r * sw_r + last_s * sw_s
    w_rows = offs_k * sw_k
    if DY_RUN > 1:
        dy_rows = tl.multiple_of(dy_rows, DY_RUN)
    if W_RUN > 1:
        w_tap = tl.multiple_of(w_tap, W_RUN)
        w_rows = tl.multiple_of(w_rows, W_RUN)
    dy_offs = dy_rows[:, None] + offs_k[None, :] * sdy_k
    w_offs = (w_tap + offs_n * sw_c)[None, :] + w_rows[:, None]
    D_OUT, H_OUT, W_OUT = output_size
    od0, oh0, ow0 = fold_rows(mask_m, od0, oh0, ow0, D_OUT, H_OUT, W_OUT, CHECK_D, CHECK_H, CHECK_W)
    out_step_d, out_step_h, out_step_w = phase_out_step

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    it_t = zero_index(INDEX_64)
    it_r = zero_index(INDEX_64)
    it_s = zero_index(INDEX_64)
    k0 = zero_index(INDEX_64)
    for _ in range(0, count_t * count_r * count_s * tl.cdiv(K_G, BLOCK_K)):
        dd = it_t * out_step_d
        dh = it_r * out_step_h
        dw = it_s * out_step_w
        rows = rows_inside(
            mask_m, od0 + dd, oh0 + dh, ow0 + dw, D_OUT, H_OUT, W_OUT, CHECK_D, CHECK_H, CHECK_W, INDEX_64
        )
        dy_step = dd * sdy_d + dh * sdy_h + dw * sdy_w + k0 * sdy_k
        w_step = k0 * sw_k - (it_t * tap_step_d * sw_t + it_r * tap_step_h * sw_r + it_s * tap_step_w * sw_s)
        if DY_RUN > 1:
            dy_step = tl.multiple_of(dy_step, DY_RUN)
        if W_RUN > 1:
            w_step = tl.multiple_of(w_step, W_RUN)
        a_ptrs = dy_ptr + dy_step + dy_offs
        b_ptrs = w_ptr + w_step + w_offs
        a, b = load_operands(a_ptrs, b_ptrs, rows, mask_n, k0, offs_k, K_G, EVEN_K, K_RUN)
        acc = tl.dot(dot_operand(a), dot_operand(b), acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        k0, it_t, it_r, it_s = next_step(k0, it_t, it_r, it_s, K_G, count_r, count_s, BLOCK_K)

    finish_tile(
        acc, bias_ptr, bias_stride, dx_ptr, dx_strides, z_ptr, residual_ptr, residual_strides,
        n, id_, ih, iw, group * C_G + offs_n, mask_m, mask_n,
        HAS_BIAS, STORE_TRANSPOSED, ACTIVATION, HAS_RESIDUAL, STORE_PRE_ACTIVATION,
    )  # fmt: skip


# Rows are the input pixels of one stride phase (programs cover one phase at a time), columns
# the group's input channels; each tap's reduction runs over the group's output channels. The
# key counts all input pixels.
INPUT_GRAD = KernelKind(
    name="input_grad",
    pass_="D",
    tiles=IMPLICIT_GEMM_CONFIGS["input_grad"],
    interpreter_tile=INTERPRETER_CONFIGS["input_grad"],
    gemm_extents=lambda spec: (spec.input_pixels_per_phase, spec.in_channels_per_group, spec.out_channels_per_group),
    dense_gemm=lambda spec: (spec.input_pixels, spec.in_channels_per_group, spec.out_channels_per_group * spec.taps),
    key_pixels=lambda spec: spec.input_pixels,
    key_layout=lambda input, output: gemm_operand_layout(output),
    plan=lambda spec, x, w, b, y, tile: plan_input_grad(y, w, spec, torch.empty_like(x), tile),
)


def plan_input_grad(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    spec: ConvSpec,
    grad_input: torch.Tensor,
    config: KernelConfig | None = None,
    bias: torch.Tensor | None = None,
    epilogue: Epilogue = PLAIN,
) -> Launch:
    """The launch writing d(loss)/d(input) into ``grad_input`` (all (N, C, *spatial), any strides;
    grad_output and weight are read channels-last, copied so if they are not:
    ``layout.gemm_operand``); with ``bias`` and ``epilogue``, activation(that + bias + residual):
    a transposed convolution."""
    dy, w, dx = gemm_operand(as_3d(grad_output)), gemm_operand(as_3d(weight)), as_3d(grad_input)
    precision = dot_precision(dy)
    cfg = config or select_config(
        INPUT_GRAD,
        spec,
        dy.dtype,
        precision,
        INPUT_GRAD.key_layout(grad_input, grad_output),
        lambda c: plan_input_grad(grad_output, weight, spec, grad_input, c, bias, epilogue),
        INPUT_GRAD.heuristic(spec, dy.dtype, precision),
        dy.device,
    )
    d_ph, h_ph, w_ph = spec.pixels_per_phase
    m_ph = spec.batch * d_ph * h_ph * w_ph
    phases = math.prod(spec.phases_holding_pixels)
    grid = (triton.cdiv(m_ph, cfg.block_m) * phases, triton.cdiv(spec.in_channels_per_group, cfg.block_n), spec.groups)
    args = arguments.tensors(dy=dy, w=w) | arguments.output("dx", dx, bias, epilogue) | arguments.sizes(spec)
    args |= arguments.filter_geometry(spec)
    args |= dict(phase_tap_step=spec.phase_tap_step, phase_out_step=spec.phase_out_step, phase_size=(d_ph, h_ph, w_ph))
    args |= dict(phase_counts=spec.phases_holding_pixels)
    args |= dict(C_G=spec.in_channels_per_group, K_G=spec.out_channels_per_group, M_PH=m_ph)
    constexprs = arguments.output_flags(bias, epilogue) | cfg.blocks()
    constexprs |= dict(INDEX_64=needs_int64(dy, w, dx, args["residual_ptr"]), ACC_DTYPE=accumulator_dtype(dy.dtype))
    constexprs |= dict(zip(("CHECK_D", "CHECK_H", "CHECK_W"), spec.input_grad_bounds))
    constexprs |= dict(
        EVEN_K=spec.out_channels_per_group % cfg.block_k == 0,
        EVEN_N=spec.in_channels_per_group % cfg.block_n == 0,
        STORE_TRANSPOSED=store_transposed(dx),
        PRECISION=precision,
    )
    # dy's offsets hold group * K_G: a multiple of K_G, unless there is one group.
    constexprs |= dict(
        DY_RUN=operand_run(dy, spec.out_channels_per_group if spec.groups > 1 else 0), W_RUN=operand_run(w)
    )
    constexprs |= dict(
        K_RUN=alignment_run(spec.out_channels_per_group), C_RUN=alignment_run(spec.in_channels_per_group)
    )
    return Launch(implicit_gemm_input_grad_kernel, grid, args, constexprs, cfg.num_warps, cfg.num_stages)
