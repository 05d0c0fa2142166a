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

from ..spec import ConvSpec, as_3d, needs_int64
from ..tuning.configs import KernelConfig, heuristic_config, split_k_for
from ..tuning.key import layout_of
from ..tuning.select import select_config
from .common import Launch, accumulator_dtype, dot_operand, dot_precision
from .indexing import inside, unravel_pixels, unravel_tap
from .split_k import partial_buffers, sum_splits


@triton.jit
def implicit_gemm_weight_grad_kernel(
    dy_ptr,
    x_ptr,
    dw_partial_ptr,
    db_partial_ptr,
    C_G,
    D,
    H,
    W,
    K,
    K_G,
    D_OUT,
    H_OUT,
    W_OUT,
    P,
    R,
    S,
    TAPS,
    GROUPS,
    SPLIT_K,
    CHUNK,
    stride_d,
    stride_h,
    stride_w,
    pad_d,
    pad_h,
    pad_w,
    dil_d,
    dil_h,
    dil_w,
    sdy_n,
    sdy_k,
    sdy_d,
    sdy_h,
    sdy_w,
    sx_n,
    sx_c,
    sx_d,
    sx_h,
    sx_w,
    HAS_BIAS_GRAD: tl.constexpr,
    INDEX_64: tl.constexpr,
    PRECISION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Partial dw (and db) of one split for a (BLOCK_M out channels) x (BLOCK_N in channels) tile of one tap.

    Args:
        dy_ptr: output gradient (N, K, D_OUT, H_OUT, W_OUT), any strides (sdy_*); K = GROUPS * K_G;
            P = N * D_OUT * H_OUT * W_OUT pixels, reduced in chunks of CHUNK (a multiple of BLOCK_K).
        x_ptr: input (N, C, D, H, W), any strides (sx_*); C = GROUPS * C_G.
        dw_partial_ptr: (SPLIT_K, K, C_G, TAPS) contiguous, ACC_DTYPE; split z writes slice z.
        db_partial_ptr: (SPLIT_K, K) contiguous, ACC_DTYPE; written only if HAS_BIAS_GRAD.
        Grid: (cdiv(K_G, BLOCK_M), TAPS * max(1, cdiv(C_G, BLOCK_N)), GROUPS * SPLIT_K), group fastest on axis 2.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    pid_z = tl.program_id(2)
    if INDEX_64:
        # Before any product with a block size or a stride, which would wrap in int32.
        pid_m = pid_m.to(tl.int64)
        pid_n = pid_n.to(tl.int64)
        pid_z = pid_z.to(tl.int64)
    group = pid_z % GROUPS
    split = pid_z // GROUPS
    tap = pid_n % TAPS
    c_block = pid_n // TAPS
    kt, kr, ks = unravel_tap(tap, R, S)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = c_block * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_p = tl.arange(0, BLOCK_K)
    if INDEX_64:
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
        offs_p = offs_p.to(tl.int64)
    mask_m = offs_m < K_G
    mask_n = offs_n < C_G
    k = group * K_G + offs_m
    # Element offsets; the base pointers join only at the loads: 64-bit pointer tensors held
    # across the loop take twice the registers and made small tiles spill.
    dy_cols = k * sdy_k
    x_cols = (group * C_G + offs_n) * sx_c

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    bias_acc = tl.zeros((BLOCK_M,), dtype=ACC_DTYPE)
    p_start = split * CHUNK
    p_end = tl.minimum(p_start + CHUNK, P)
    for p0 in range(p_start, p_end, BLOCK_K):
        p = p0 + offs_p
        mask_p = p < p_end
        n, od, oh, ow = unravel_pixels(p, D_OUT, H_OUT, W_OUT)
        id_ = od * stride_d - pad_d + kt * dil_d
        ih = oh * stride_h - pad_h + kr * dil_h
        iw = ow * stride_w - pad_w + ks * dil_w
        in_bounds = mask_p & inside(id_, ih, iw, D, H, W)
        dy_pix = n * sdy_n + od * sdy_d + oh * sdy_h + ow * sdy_w
        x_pix = n * sx_n + id_ * sx_d + ih * sx_h + iw * sx_w
        dy_offs = dy_cols[:, None] + dy_pix[None, :]
        x_offs = x_cols[None, :] + x_pix[:, None]
        a = tl.load(dy_ptr + dy_offs, mask=mask_m[:, None] & mask_p[None, :], other=0.0)
        b = tl.load(x_ptr + x_offs, mask=in_bounds[:, None] & mask_n[None, :], other=0.0)
        acc = tl.dot(dot_operand(a), dot_operand(b), acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        if HAS_BIAS_GRAD:
            bias_acc += tl.sum(a.to(ACC_DTYPE), axis=1)

    # Partial layout (split, k, c, tap) is dw's own contiguous (K, C_G, T, R, S) order per split.
    dw_ptrs = dw_partial_ptr + split * K * C_G * TAPS + (k * C_G * TAPS)[:, None] + (offs_n * TAPS + tap)[None, :]
    tl.store(dw_ptrs, acc, mask=mask_m[:, None] & mask_n[None, :])
    if HAS_BIAS_GRAD:
        if pid_n == 0:
            tl.store(db_partial_ptr + split * K + k, bias_acc, mask=mask_m)


def weight_grad_config(spec: ConvSpec, dtype: torch.dtype, precision: str) -> KernelConfig:
    kg, cg = spec.out_channels_per_group, spec.in_channels_per_group
    cfg = heuristic_config("weight_grad", dtype, precision, kg, cg, spec.output_pixels)
    tiles = triton.cdiv(kg, cfg.block_m) * triton.cdiv(cg, cfg.block_n) * spec.taps * spec.groups
    return replace(cfg, split_k=split_k_for(tiles, spec.output_pixels, cfg.block_k))


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
        spec.taps * max(1, triton.cdiv(spec.in_channels_per_group, config.block_n)),
        spec.groups * config.split_k,
    )
    _, r, s = spec.kernel_size
    args = (
        dy,
        x,
        dw_partial,
        db_partial if db_partial is not None else dw_partial,
        spec.in_channels_per_group,
        *spec.input_size,
        spec.out_channels,
        spec.out_channels_per_group,
        *spec.output_size,
        spec.output_pixels,
        r,
        s,
        spec.taps,
        spec.groups,
        config.split_k,
        blocks_per_split * config.block_k,
        *spec.stride,
        *spec.pad_lo,
        *spec.dilation,
        *dy.stride(),
        *x.stride(),
    )
    constexprs = dict(
        HAS_BIAS_GRAD=db_partial is not None,
        INDEX_64=needs_int64(dy, x, dw_partial),
        PRECISION=dot_precision(dy),
        ACC_DTYPE=accumulator_dtype(dy.dtype),
        **config.blocks(),
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
    """Write d(loss)/d(weight) into ``grad_weight`` (contiguous) and, if given, d(loss)/d(bias)."""
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
        "weight_grad",
        spec,
        grad_output.dtype,
        precision,
        layout_of(as_3d(input)),
        run_with,
        weight_grad_config(spec, grad_output.dtype, precision),
        grad_output.device,
    )
    dw_partial, db_partial = partial_buffers(grad_output, cfg.split_k, grad_weight.numel(), bias_elements)
    plan_weight_grad(grad_output, input, spec, dw_partial, db_partial, cfg)()
    sum_splits(dw_partial, grad_weight)
    if grad_bias is not None:
        sum_splits(db_partial, grad_bias)
