"""Forward convolution as an implicit GEMM over (D, H, W), for 1-D, 2-D and 3-D alike.

GEMM view, per group g: rows are the N*Do*Ho*Wo output pixels, columns the K/groups output
channels of the group, and the reduction runs over filter taps (outer loop) and the group's
input channels (inner loop), so each tap's input coordinates and padding mask are computed once
per tap and reused for every channel block.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..spec import ConvSpec, as_3d, needs_int64
from ..tuning.configs import KernelConfig, heuristic_config
from ..tuning.key import layout_of
from ..tuning.select import select_config
from .common import Launch, accumulator_dtype, dot_operand, dot_precision
from .epilogue import PLAIN, Epilogue, finish_output
from .indexing import inside, unravel_pixels, unravel_tap


@triton.jit
def implicit_gemm_forward_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    y_ptr,
    residual_ptr,
    z_ptr,
    C_G,
    D,
    H,
    W,
    K_G,
    D_OUT,
    H_OUT,
    W_OUT,
    M,
    R,
    S,
    TAPS,
    stride_d,
    stride_h,
    stride_w,
    pad_d,
    pad_h,
    pad_w,
    dil_d,
    dil_h,
    dil_w,
    sx_n,
    sx_c,
    sx_d,
    sx_h,
    sx_w,
    sw_k,
    sw_c,
    sw_t,
    sw_r,
    sw_s,
    sy_n,
    sy_k,
    sy_d,
    sy_h,
    sy_w,
    s_bias,
    sr_n,
    sr_k,
    sr_d,
    sr_h,
    sr_w,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    STORE_PRE_ACTIVATION: tl.constexpr,
    POINTWISE: tl.constexpr,
    UNPADDED: tl.constexpr,
    INDEX_64: tl.constexpr,
    PRECISION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """y = activation(conv(x, w) + bias + residual) for one (BLOCK_M pixels) x (BLOCK_N channels)
    tile of group axis 2.

    Args:
        x_ptr: input (N, C, D, H, W), any strides (sx_*); C = groups * C_G.
        w_ptr: weight (K, C_G, T, R, S), any strides (sw_*); K = groups * K_G; TAPS = T*R*S.
        bias_ptr: bias (K,), stride s_bias; read only if HAS_BIAS.
        y_ptr: output (N, K, D_OUT, H_OUT, W_OUT), any strides (sy_*); M = N*D_OUT*H_OUT*W_OUT.
        residual_ptr: (N, K, D_OUT, H_OUT, W_OUT), any strides (sr_*); read only if HAS_RESIDUAL.
        z_ptr: pre-activation, y's strides; written only if STORE_PRE_ACTIVATION.
        pad_*: leading padding per dimension (trailing padding only shapes D_OUT/H_OUT/W_OUT).
        POINTWISE: a 1x1x1 filter without padding, a plain GEMM: no tap loop, no bounds checks.
        UNPADDED: no padding, so every tap of every output pixel is inside the input: no bounds
            checks (a patch embedding, kernel = stride, is a plain GEMM over its patches).
        INDEX_64: compute offsets in int64 (some tensor spans 2^31 elements or more).
        PRECISION: tl.dot input precision ("ieee" or "tf32").
        ACC_DTYPE: accumulator type (float32, or float64 for float64 inputs).
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2)
    if INDEX_64:
        # Before any product with a block size or a stride, which would wrap in int32.
        pid_m = pid_m.to(tl.int64)
        pid_n = pid_n.to(tl.int64)
        group = group.to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    if INDEX_64:
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
        offs_k = offs_k.to(tl.int64)
    mask_m = offs_m < M
    mask_n = offs_n < K_G

    n, od, oh, ow = unravel_pixels(offs_m, D_OUT, H_OUT, W_OUT)
    # Input coordinate of tap 0; tap (t, r, s) adds (t*dil_d, r*dil_h, s*dil_w).
    id0 = od * stride_d - pad_d
    ih0 = oh * stride_h - pad_h
    iw0 = ow * stride_w - pad_w
    # Element offsets; the base pointers join only at the loads: 64-bit pointer tensors held
    # across the loops take twice the registers and made small tiles spill.
    x_rows = n * sx_n + group * C_G * sx_c
    w_cols = (group * K_G + offs_n) * sw_k

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for tap in range(0, TAPS):
        if POINTWISE:
            # The only tap reads pixel o * stride, always inside the input.
            in_bounds = mask_m
            x_tap = x_rows + id0 * sx_d + ih0 * sx_h + iw0 * sx_w
            w_tap = w_cols
        else:
            kt, kr, ks = unravel_tap(tap, R, S)
            id_ = id0 + kt * dil_d
            ih = ih0 + kr * dil_h
            iw = iw0 + ks * dil_w
            if UNPADDED:
                in_bounds = mask_m
            else:
                in_bounds = mask_m & inside(id_, ih, iw, D, H, W)
            x_tap = x_rows + id_ * sx_d + ih * sx_h + iw * sx_w
            w_tap = w_cols + kt * sw_t + kr * sw_r + ks * sw_s
        for c0 in range(0, C_G, BLOCK_K):
            c = c0 + offs_k
            mask_c = c < C_G
            x_offs = x_tap[:, None] + c[None, :] * sx_c
            w_offs = w_tap[None, :] + c[:, None] * sw_c
            a = tl.load(x_ptr + x_offs, mask=in_bounds[:, None] & mask_c[None, :], other=0.0)
            b = tl.load(w_ptr + w_offs, mask=mask_c[:, None] & mask_n[None, :], other=0.0)
            acc = tl.dot(dot_operand(a), dot_operand(b), acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)

    if HAS_BIAS:
        bias = tl.load(bias_ptr + (group * K_G + offs_n) * s_bias, mask=mask_n, other=0.0)
        acc += bias.to(ACC_DTYPE)[None, :]

    k = group * K_G + offs_n
    y_offs = (n * sy_n + od * sy_d + oh * sy_h + ow * sy_w)[:, None] + k[None, :] * sy_k
    r_offs = (n * sr_n + od * sr_d + oh * sr_h + ow * sr_w)[:, None] + k[None, :] * sr_k
    finish_output(
        acc,
        y_ptr + y_offs,
        z_ptr + y_offs,
        residual_ptr + r_offs,
        mask_m[:, None] & mask_n[None, :],
        ACTIVATION,
        HAS_RESIDUAL,
        STORE_PRE_ACTIVATION,
    )


def forward_config(spec: ConvSpec, dtype: torch.dtype, precision: str) -> KernelConfig:
    return heuristic_config(
        "forward", dtype, precision, spec.output_pixels, spec.out_channels_per_group, spec.in_channels_per_group
    )


def plan_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    config: KernelConfig | None = None,
    epilogue: Epilogue = PLAIN,
) -> Launch:
    """The launch writing activation(conv(input, weight) + bias + residual) into ``out``
    (all (N, C, *spatial), any strides)."""
    x, w, y = as_3d(input), as_3d(weight), as_3d(out)
    precision = dot_precision(x)
    cfg = config or select_config(
        "forward",
        spec,
        x.dtype,
        precision,
        layout_of(x),
        lambda c: plan_forward(input, weight, bias, spec, out, c, epilogue),
        forward_config(spec, x.dtype, precision),
        x.device,
    )
    grid = (
        triton.cdiv(spec.output_pixels, cfg.block_m),
        triton.cdiv(spec.out_channels_per_group, cfg.block_n),
        spec.groups,
    )
    _, r, s = spec.kernel_size
    residual, pre_activation, *residual_strides = epilogue.args(y)
    args = (
        x,
        w,
        bias if bias is not None else x,
        y,
        residual,
        pre_activation,
        spec.in_channels_per_group,
        *spec.input_size,
        spec.out_channels_per_group,
        *spec.output_size,
        spec.output_pixels,
        r,
        s,
        spec.taps,
        *spec.stride,
        *spec.pad_lo,
        *spec.dilation,
        *x.stride(),
        *w.stride(),
        *y.stride(),
        bias.stride(0) if bias is not None else 0,
        *residual_strides,
    )
    constexprs = dict(
        HAS_BIAS=bias is not None,
        **epilogue.constexprs(),
        POINTWISE=spec.taps == 1 and spec.unpadded,
        UNPADDED=spec.unpadded,
        INDEX_64=needs_int64(x, w, y, residual),
        PRECISION=precision,
        ACC_DTYPE=accumulator_dtype(x.dtype),
        **cfg.blocks(),
    )
    return Launch(implicit_gemm_forward_kernel, grid, args, constexprs, cfg.num_warps, cfg.num_stages)


def implicit_gemm_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    epilogue: Epilogue = PLAIN,
    config: KernelConfig | None = None,
) -> torch.Tensor:
    """Write activation(conv(input, weight) + bias + residual) into ``out`` and return it."""
    if out.numel() > 0:
        plan_forward(input, weight, bias, spec, out, config, epilogue)()
    return out
