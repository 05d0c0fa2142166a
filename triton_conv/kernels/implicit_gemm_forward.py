"""Forward convolution as an implicit GEMM over (D, H, W), for 1-D, 2-D and 3-D alike.

GEMM view, per group g: rows are the N*Do*Ho*Wo output pixels, columns the K/groups output
channels of the group, and the reduction runs over filter taps x the group's input channels in
one software-pipelined loop (``reduction.py``): a step adds a scalar offset to loop-invariant
offset tiles and tests each row against the padding only along dimensions that have padding.
"""

from __future__ import annotations

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
from .non_finite import flag_tile_not_finite
from .reduction import fold_rows, load_operands, next_step, rows_inside, zero_index


@triton.jit
def implicit_gemm_forward_kernel(
    x_ptr, w_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr, flag_ptr,
    C_G, input_size, K_G, output_size, M, kernel_size, TAPS, conv_stride, padding, dilation,
    x_strides, w_strides, y_strides, bias_stride, residual_strides,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_PRE_ACTIVATION: tl.constexpr,
    STORE_TRANSPOSED: tl.constexpr, FLAG_NOT_FINITE: tl.constexpr,
    CHECK_D: tl.constexpr, CHECK_H: tl.constexpr, CHECK_W: tl.constexpr, EVEN_C: tl.constexpr, EVEN_N: tl.constexpr,
    INDEX_64: tl.constexpr, PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    X_RUN: tl.constexpr, W_RUN: tl.constexpr, C_RUN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """y = activation(conv(x, w) + bias + residual) for one (BLOCK_M pixels) x (BLOCK_N channels)
    tile of group axis 2. Grid: (cdiv(M, BLOCK_M), cdiv(K_G, BLOCK_N), groups).

    Args:
        x_ptr, x_strides: input (N, C, D, H, W), C = groups * C_G; any strides (5, in elements).
        w_ptr, w_strides: weight (K, C_G, T, R, S), K = groups * K_G; any strides (5).
        y_ptr, y_strides: output (N, K, D_OUT, H_OUT, W_OUT); any strides (5).
        bias_ptr, bias_stride: bias (K,) and its stride; read only if HAS_BIAS.
        residual_ptr, residual_strides: added before the activation, y's shape, any strides (5);
            read only if HAS_RESIDUAL.
        z_ptr: the pre-activation, y's shape and strides; written only if STORE_PRE_ACTIVATION.
        flag_ptr: one int32, set to 1 if FLAG_NOT_FINITE and the tile's sum is not finite
            (``non_finite.flag_tile_not_finite``: bundled groups, ``dispatch.group_bundle``).
        input_size: (D, H, W). output_size: (D_OUT, H_OUT, W_OUT).
        padding: leading padding (D, H, W); the trailing padding only shapes output_size.
        kernel_size: filter size (T, R, S). conv_stride: the convolution's step (D, H, W) between
            output pixels (not a memory stride). dilation: (D, H, W) spacing of the taps.
        C_G, K_G: input and output channels per group.
        M: output pixels, N * D_OUT * H_OUT * W_OUT. TAPS: T * R * S.
        HAS_BIAS: add the bias. ACTIVATION: the activation's name ("none" for none).
        HAS_RESIDUAL: add the residual. STORE_PRE_ACTIVATION: write z.
        CHECK_D, CHECK_H, CHECK_W: whether taps can fall outside the input along D, H, W (padding
            there); where not, that dimension needs no bounds test (a 1x1 conv needs none: a plain GEMM).
        EVEN_C: C_G is a multiple of BLOCK_K, so no channel block needs a mask.
        EVEN_N: K_G is a multiple of BLOCK_N, so the weight tile needs no column mask.
        X_RUN, W_RUN: every pixel's, tap's and step's offset into x, and into w, is a multiple of
            it (``layout.operand_run``); C_RUN: C_G is (``layout.alignment_run``). Told to the
            compiler, which sees only strides divisible by 16, so that runs of channels load as
            vectors (1: nothing to tell).
        STORE_TRANSPOSED: store the tile as (channels x pixels) rather than (pixels x channels).
        INDEX_64: compute offsets in int64 (some tensor spans 2^31 elements or more).
        PRECISION: tl.dot input precision ("ieee" or "tf32").
        ACC_DTYPE: accumulator type (float32, or float64 for float64 inputs).
        BLOCK_M, BLOCK_N, BLOCK_K: the tile: output pixels, output channels, reduction channels per step.
    """
    pid_m, pid_n, group = program_ids(INDEX_64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    if INDEX_64:
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
        offs_k = offs_k.to(tl.int64)
    mask_m = offs_m < M
    if EVEN_N:
        # A constant: the compiler drops the weight tile's column test.
        mask_n = tl.full((BLOCK_N,), True, tl.int1)
    else:
        mask_n = offs_n < K_G

    D_OUT, H_OUT, W_OUT = output_size
    n, od, oh, ow = unravel_pixels(offs_m, D_OUT, H_OUT, W_OUT)
    # Input coordinate of tap 0; tap (t, r, s) adds (t*dil_d, r*dil_h, s*dil_w).
    id0 = od * conv_stride[0] - padding[0]
    ih0 = oh * conv_stride[1] - padding[1]
    iw0 = ow * conv_stride[2] - padding[2]
    # Element offsets of tap 0, channel 0; a step adds one scalar to every element. The base
    # pointers join only at the loads: 64-bit pointer tiles held across the loop take twice the
    # registers.
    sx_n, sx_c, sx_d, sx_h, sx_w = x_strides
    sw_k, sw_c, sw_t, sw_r, sw_s = w_strides
    x_rows = n * sx_n + group * C_G * sx_c + id0 * sx_d + ih0 * sx_h + iw0 * sx_w
    w_rows = (group * K_G + offs_n) * sw_k
    if X_RUN > 1:
        x_rows = tl.multiple_of(x_rows, X_RUN)
    if W_RUN > 1:
        w_rows = tl.multiple_of(w_rows, W_RUN)
    x_offs = x_rows[:, None] + offs_k[None, :] * sx_c
    w_offs = w_rows[None, :] + offs_k[:, None] * sw_c

    D, H, W = input_size
    id0, ih0, iw0 = fold_rows(mask_m, id0, ih0, iw0, D, H, W, CHECK_D, CHECK_H, CHECK_W)
    _, R, S = kernel_size
    dil_d, dil_h, dil_w = dilation

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    kt = zero_index(INDEX_64)
    kr = zero_index(INDEX_64)
    ks = zero_index(INDEX_64)
    c0 = zero_index(INDEX_64)
    for _ in range(0, TAPS * tl.cdiv(C_G, BLOCK_K)):
        dd = kt * dil_d
        dh = kr * dil_h
        dw = ks * dil_w
        rows = rows_inside(mask_m, id0 + dd, ih0 + dh, iw0 + dw, D, H, W, CHECK_D, CHECK_H, CHECK_W, INDEX_64)
        x_step = dd * sx_d + dh * sx_h + dw * sx_w + c0 * sx_c
        w_step = kt * sw_t + kr * sw_r + ks * sw_s + c0 * sw_c
        if X_RUN > 1:
            x_step = tl.multiple_of(x_step, X_RUN)
        if W_RUN > 1:
            w_step = tl.multiple_of(w_step, W_RUN)
        a_ptrs = x_ptr + x_step + x_offs
        b_ptrs = w_ptr + w_step + w_offs
        a, b = load_operands(a_ptrs, b_ptrs, rows, mask_n, c0, offs_k, C_G, EVEN_C, C_RUN)
        acc = tl.dot(dot_operand(a), dot_operand(b), acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        c0, kt, kr, ks = next_step(c0, kt, kr, ks, C_G, R, S, BLOCK_K)

    if FLAG_NOT_FINITE:
        flag_tile_not_finite(acc, mask_m, mask_n, flag_ptr)
    finish_tile(
        acc, bias_ptr, bias_stride, y_ptr, y_strides, z_ptr, residual_ptr, residual_strides,
        n, od, oh, ow, group * K_G + offs_n, mask_m, mask_n,
        HAS_BIAS, STORE_TRANSPOSED, ACTIVATION, HAS_RESIDUAL, STORE_PRE_ACTIVATION,
    )  # fmt: skip


# Rows are output pixels, columns the group's output channels; each tap's reduction runs over
# the group's input channels.
FORWARD = KernelKind(
    name="forward",
    pass_="F",
    tiles=IMPLICIT_GEMM_CONFIGS["forward"],
    interpreter_tile=INTERPRETER_CONFIGS["forward"],
    gemm_extents=lambda spec: (spec.output_pixels, spec.out_channels_per_group, spec.in_channels_per_group),
    dense_gemm=lambda spec: (spec.output_pixels, spec.out_channels_per_group, spec.in_channels_per_group * spec.taps),
    key_pixels=lambda spec: spec.output_pixels,
    key_layout=lambda input, output: gemm_operand_layout(input),
    plan=lambda spec, x, w, b, y, tile: plan_forward(x, w, b, spec, y, tile),
)


def plan_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    config: KernelConfig | None = None,
    epilogue: Epilogue = PLAIN,
    flag: torch.Tensor | None = None,
) -> Launch:
    """The launch writing activation(conv(input, weight) + bias + residual) into ``out``
    (all (N, C, *spatial), any strides; input and weight are read channels-last, copied so if
    they are not: ``layout.gemm_operand``); with ``flag`` (``non_finite.new_flag``), setting it
    where a tile is not finite."""
    x, w, y = gemm_operand(as_3d(input)), gemm_operand(as_3d(weight)), as_3d(out)
    precision = dot_precision(x)
    cfg = config or select_config(
        FORWARD,
        spec,
        x.dtype,
        precision,
        FORWARD.key_layout(input, out),
        lambda c: plan_forward(input, weight, bias, spec, out, c, epilogue, flag),
        FORWARD.heuristic(spec, x.dtype, precision),
        x.device,
    )
    grid = (
        triton.cdiv(spec.output_pixels, cfg.block_m),
        triton.cdiv(spec.out_channels_per_group, cfg.block_n),
        spec.groups,
    )
    args = arguments.tensors(x=x, w=w) | arguments.output("y", y, bias, epilogue) | arguments.sizes(spec)
    args |= arguments.filter_geometry(spec)
    args |= dict(C_G=spec.in_channels_per_group, K_G=spec.out_channels_per_group, M=spec.output_pixels, TAPS=spec.taps)
    args |= arguments.flag(flag, y)
    constexprs = arguments.output_flags(bias, epilogue) | dict(zip(("CHECK_D", "CHECK_H", "CHECK_W"), spec.padded))
    constexprs |= dict(FLAG_NOT_FINITE=flag is not None)
    constexprs |= dict(INDEX_64=needs_int64(x, w, y, args["residual_ptr"]), ACC_DTYPE=accumulator_dtype(x.dtype))
    constexprs |= cfg.blocks()
    constexprs |= dict(
        EVEN_C=spec.in_channels_per_group % cfg.block_k == 0,
        EVEN_N=spec.out_channels_per_group % cfg.block_n == 0,
        STORE_TRANSPOSED=store_transposed(y),
        PRECISION=precision,
    )
    # x's offsets hold group * C_G: a multiple of C_G, unless there is one group.
    constexprs |= dict(X_RUN=operand_run(x, spec.in_channels_per_group if spec.groups > 1 else 0), W_RUN=operand_run(w))
    constexprs |= dict(C_RUN=alignment_run(spec.in_channels_per_group))
    return Launch(implicit_gemm_forward_kernel, grid, args, constexprs, cfg.num_warps, cfg.num_stages)
