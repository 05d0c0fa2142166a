"""Input gradient as an implicit GEMM over input pixels with the transposed filter.

The same kernel is the forward of a transposed convolution (whose output is the gradient of the
convolution it transposes), so it ends in the forward kernels' epilogue: optional bias,
residual, saved pre-activation and activation, all off by default.

dx[n, c, i] = sum over taps and output channels k of dy[n, k, o] * w[k, c, tap], where
o * stride = i + pad - tap * dil. For a strided convolution only the taps with
(i + pad - tap * dil) divisible by the stride reach input pixel i, and which taps those are
depends only on i modulo the stride (its phase). Programs are therefore split by phase: each
covers pixels of one phase, skips the taps that cannot contribute with one scalar test, and
spends no work on them.
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
from .indexing import unravel_pixels, unravel_tap


@triton.jit
def implicit_gemm_input_grad_kernel(
    dy_ptr,
    w_ptr,
    dx_ptr,
    bias_ptr,
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
    D_PH,
    H_PH,
    W_PH,
    M_PH,
    R,
    S,
    TAPS,
    GROUPS,
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
    sw_k,
    sw_c,
    sw_t,
    sw_r,
    sw_s,
    sdx_n,
    sdx_c,
    sdx_d,
    sdx_h,
    sdx_w,
    s_bias,
    sr_n,
    sr_c,
    sr_d,
    sr_h,
    sr_w,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    STORE_PRE_ACTIVATION: tl.constexpr,
    INDEX_64: tl.constexpr,
    PRECISION: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """dx for one (BLOCK_M input pixels of one phase) x (BLOCK_N input channels) tile.

    Args:
        dy_ptr: output gradient (N, K, D_OUT, H_OUT, W_OUT), any strides (sdy_*), K = GROUPS * K_G.
        w_ptr: weight (K, C_G, T, R, S), any strides (sw_*); TAPS = T*R*S.
        dx_ptr: input gradient (N, C, D, H, W), any strides (sdx_*), C = GROUPS * C_G; every
            element is written (zero, or the bias, where no tap reaches it).
        bias_ptr: bias (C,), stride s_bias; read only if HAS_BIAS (a transposed convolution's).
        residual_ptr: (N, C, D, H, W), any strides (sr_*); read only if HAS_RESIDUAL.
        z_ptr: pre-activation, dx's strides; written only if STORE_PRE_ACTIVATION.
        D_PH, H_PH, W_PH: pixels per phase along each dimension (ceil(D / stride_d), ...);
            M_PH = N * D_PH * H_PH * W_PH.
        pad_*: leading padding per dimension.
        Grid axis 2 runs over GROUPS * stride_d * stride_h * stride_w (group fastest).
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
    phase = pid_z // GROUPS
    ph_w = phase % stride_w
    ph_h = (phase // stride_w) % stride_h
    ph_d = phase // (stride_w * stride_h)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    if INDEX_64:
        offs_m = offs_m.to(tl.int64)
        offs_n = offs_n.to(tl.int64)
        offs_k = offs_k.to(tl.int64)
    mask_n = offs_n < C_G

    n, jd, jh, jw = unravel_pixels(offs_m, D_PH, H_PH, W_PH)
    # Input pixel (ph + stride * j) in each dimension.
    id_ = ph_d + stride_d * jd
    ih = ph_h + stride_h * jh
    iw = ph_w + stride_w * jw
    mask_m = (offs_m < M_PH) & (id_ < D) & (ih < H) & (iw < W)
    # Element offsets; the base pointers join only at the loads: 64-bit pointer tensors held
    # across the loops take twice the registers and made small tiles spill.
    dy_rows = n * sdy_n + group * K_G * sdy_k
    w_cols = group * K_G * sw_k + offs_n * sw_c

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    for tap in range(0, TAPS):
        kt, kr, ks = unravel_tap(tap, R, S)
        # o * stride = ph + stride * j + pad - tap * dil: divisible for this phase or never.
        num_d = ph_d + pad_d - kt * dil_d
        num_h = ph_h + pad_h - kr * dil_h
        num_w = ph_w + pad_w - ks * dil_w
        if (num_d % stride_d == 0) & (num_h % stride_h == 0) & (num_w % stride_w == 0):
            od = jd + num_d // stride_d
            oh = jh + num_h // stride_h
            ow = jw + num_w // stride_w
            valid = mask_m & (od >= 0) & (od < D_OUT) & (oh >= 0) & (oh < H_OUT) & (ow >= 0) & (ow < W_OUT)
            dy_tap = dy_rows + od * sdy_d + oh * sdy_h + ow * sdy_w
            w_tap = w_cols + kt * sw_t + kr * sw_r + ks * sw_s
            for k0 in range(0, K_G, BLOCK_K):
                k = k0 + offs_k
                mask_k = k < K_G
                dy_offs = dy_tap[:, None] + k[None, :] * sdy_k
                w_offs = w_tap[None, :] + k[:, None] * sw_k
                a = tl.load(dy_ptr + dy_offs, mask=valid[:, None] & mask_k[None, :], other=0.0)
                b = tl.load(w_ptr + w_offs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
                acc = tl.dot(dot_operand(a), dot_operand(b), acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)

    c = group * C_G + offs_n
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c * s_bias, mask=mask_n, other=0.0).to(ACC_DTYPE)[None, :]
    dx_offs = (n * sdx_n + id_ * sdx_d + ih * sdx_h + iw * sdx_w)[:, None] + c[None, :] * sdx_c
    r_offs = (n * sr_n + id_ * sr_d + ih * sr_h + iw * sr_w)[:, None] + c[None, :] * sr_c
    finish_output(
        acc,
        dx_ptr + dx_offs,
        z_ptr + dx_offs,
        residual_ptr + r_offs,
        mask_m[:, None] & mask_n[None, :],
        ACTIVATION,
        HAS_RESIDUAL,
        STORE_PRE_ACTIVATION,
    )


def input_grad_config(spec: ConvSpec, dtype: torch.dtype, precision: str) -> KernelConfig:
    d, h, w = spec.pixels_per_phase
    return heuristic_config(
        "input_grad", dtype, precision, spec.batch * d * h * w, spec.in_channels_per_group, spec.out_channels_per_group
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
    """The launch writing d(loss)/d(input) into ``grad_input`` (all (N, C, *spatial), any strides);
    with ``bias`` and ``epilogue``, activation(that + bias + residual): a transposed convolution."""
    dy, w, dx = as_3d(grad_output), as_3d(weight), as_3d(grad_input)
    precision = dot_precision(dy)
    cfg = config or select_config(
        "input_grad",
        spec,
        dy.dtype,
        precision,
        layout_of(dy),
        lambda c: plan_input_grad(grad_output, weight, spec, grad_input, c, bias, epilogue),
        input_grad_config(spec, dy.dtype, precision),
        dy.device,
    )
    d_ph, h_ph, w_ph = spec.pixels_per_phase
    m_ph = spec.batch * d_ph * h_ph * w_ph
    phases = spec.stride[0] * spec.stride[1] * spec.stride[2]
    grid = (
        triton.cdiv(m_ph, cfg.block_m),
        triton.cdiv(spec.in_channels_per_group, cfg.block_n),
        spec.groups * phases,
    )
    _, r, s = spec.kernel_size
    residual, pre_activation, *residual_strides = epilogue.args(dx)
    args = (
        dy,
        w,
        dx,
        bias if bias is not None else dx,
        residual,
        pre_activation,
        spec.in_channels_per_group,
        *spec.input_size,
        spec.out_channels_per_group,
        *spec.output_size,
        d_ph,
        h_ph,
        w_ph,
        m_ph,
        r,
        s,
        spec.taps,
        spec.groups,
        *spec.stride,
        *spec.pad_lo,
        *spec.dilation,
        *dy.stride(),
        *w.stride(),
        *dx.stride(),
        bias.stride(0) if bias is not None else 0,
        *residual_strides,
    )
    constexprs = dict(
        HAS_BIAS=bias is not None,
        **epilogue.constexprs(),
        INDEX_64=needs_int64(dy, w, dx, residual),
        PRECISION=precision,
        ACC_DTYPE=accumulator_dtype(dy.dtype),
        **cfg.blocks(),
    )
    return Launch(implicit_gemm_input_grad_kernel, grid, args, constexprs, cfg.num_warps, cfg.num_stages)


def implicit_gemm_input_grad(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    spec: ConvSpec,
    grad_input: torch.Tensor,
    config: KernelConfig | None = None,
    bias: torch.Tensor | None = None,
    epilogue: Epilogue = PLAIN,
) -> torch.Tensor:
    """Write d(loss)/d(input) (with ``bias`` and ``epilogue``, a transposed convolution) into
    ``grad_input`` and return it."""
    if grad_input.numel() > 0:
        plan_input_grad(grad_output, weight, spec, grad_input, config, bias, epilogue)()
    return grad_input
