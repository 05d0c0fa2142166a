"""Direct convolution for depthwise and few-channels-per-group convolutions.

With fewer than 16 input channels per group, a matrix unit would pad each group's reduction to
16 and waste most of its work (16x for depthwise). These kernels instead compute exactly the
useful multiply-adds on CUDA cores: a tile is (pixels) x (channels), channels innermost, so that
channels-last tensors load contiguously along channels, and each program loops over the filter
taps and the few channels of its group.

Channel k of the output belongs to group k // K_G and reads input channels
(k // K_G) * C_G + c for c < C_G; K_G > 1 is a channel multiplier.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..spec import ConvSpec, as_3d, needs_int64
from ..tuning.configs import direct_config, split_k_for
from .common import Launch, accumulator_dtype
from .epilogue import PLAIN, Epilogue, finish_output
from .indexing import inside, unravel_pixels, unravel_tap
from .split_k import partial_buffers, sum_splits


@triton.jit
def direct_forward_kernel(
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
    K,
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
    INDEX_64: tl.constexpr,
    ACC_DTYPE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """y = activation(z), z[n, k, o] = sum over c < C_G and taps of
    x[n, (k // K_G) * C_G + c, i(o, tap)] * w[k, c, tap] + bias[k] + residual[n, k, o].

    Args:
        x_ptr: input (N, C, D, H, W), any strides (sx_*).
        w_ptr: weight (K, C_G, T, R, S), any strides (sw_*); TAPS = T*R*S.
        bias_ptr: bias (K,), stride s_bias; read only if HAS_BIAS.
        y_ptr: output (N, K, D_OUT, H_OUT, W_OUT), any strides (sy_*); M = N*D_OUT*H_OUT*W_OUT.
        residual_ptr: (N, K, D_OUT, H_OUT, W_OUT), any strides (sr_*); read only if HAS_RESIDUAL.
        z_ptr: pre-activation z, y's strides; written only if STORE_PRE_ACTIVATION.
        Grid: (cdiv(M, BLOCK_P), cdiv(K, BLOCK_C)).
    """
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    if INDEX_64:
        pid_p = pid_p.to(tl.int64)
        pid_c = pid_c.to(tl.int64)
    offs_m = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_k = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_m = offs_m < M
    mask_k = offs_k < K
    first_channel = (offs_k // K_G) * C_G

    n, od, oh, ow = unravel_pixels(offs_m, D_OUT, H_OUT, W_OUT)
    id0 = od * stride_d - pad_d
    ih0 = oh * stride_h - pad_h
    iw0 = ow * stride_w - pad_w
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC_DTYPE)
    for tap in range(0, TAPS):
        kt, kr, ks = unravel_tap(tap, R, S)
        id_ = id0 + kt * dil_d
        ih = ih0 + kr * dil_h
        iw = iw0 + ks * dil_w
        in_bounds = mask_m & inside(id_, ih, iw, D, H, W)
        x_tap = x_ptr + n * sx_n + id_ * sx_d + ih * sx_h + iw * sx_w
        w_tap = w_ptr + offs_k * sw_k + kt * sw_t + kr * sw_r + ks * sw_s
        for c in range(0, C_G):
            x = tl.load(
                x_tap[:, None] + (first_channel + c)[None, :] * sx_c,
                mask=in_bounds[:, None] & mask_k[None, :],
                other=0.0,
            )
            w = tl.load(w_tap + c * sw_c, mask=mask_k, other=0.0)
            acc += x.to(ACC_DTYPE) * w.to(ACC_DTYPE)[None, :]

    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_k * s_bias, mask=mask_k, other=0.0).to(ACC_DTYPE)[None, :]
    y_offs = (n * sy_n + od * sy_d + oh * sy_h + ow * sy_w)[:, None] + offs_k[None, :] * sy_k
    r_offs = (n * sr_n + od * sr_d + oh * sr_h + ow * sr_w)[:, None] + offs_k[None, :] * sr_k
    finish_output(
        acc,
        y_ptr + y_offs,
        z_ptr + y_offs,
        residual_ptr + r_offs,
        mask_m[:, None] & mask_k[None, :],
        ACTIVATION,
        HAS_RESIDUAL,
        STORE_PRE_ACTIVATION,
    )


@triton.jit
def direct_input_grad_kernel(
    dy_ptr,
    w_ptr,
    dx_ptr,
    bias_ptr,
    residual_ptr,
    z_ptr,
    C,
    C_G,
    D,
    H,
    W,
    M,
    K_G,
    D_OUT,
    H_OUT,
    W_OUT,
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
    ACC_DTYPE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """dx[n, ch, i] = sum over the K_G output channels k of ch's group and taps of dy[n, k, o] * w[k, ch % C_G, tap].

    Args:
        dy_ptr: output gradient (N, K, D_OUT, H_OUT, W_OUT), any strides (sdy_*).
        w_ptr: weight (K, C_G, T, R, S), any strides (sw_*).
        dx_ptr: input gradient (N, C, D, H, W), any strides (sdx_*); M = N*D*H*W; all written.
        bias_ptr, residual_ptr, z_ptr: the epilogue of a transposed convolution (whose forward this
            is), as in direct_forward_kernel but over dx's (N, C, D, H, W); off by default.
        Grid: (cdiv(M, BLOCK_P), cdiv(C, BLOCK_C)); BLOCK_C runs over input channels here.
    """
    pid_p = tl.program_id(0)
    pid_c = tl.program_id(1)
    if INDEX_64:
        pid_p = pid_p.to(tl.int64)
        pid_c = pid_c.to(tl.int64)
    offs_m = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_m = offs_m < M
    mask_c = offs_c < C
    first_k = (offs_c // C_G) * K_G
    c_local = offs_c % C_G

    n, id_, ih, iw = unravel_pixels(offs_m, D, H, W)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=ACC_DTYPE)
    for tap in range(0, TAPS):
        kt, kr, ks = unravel_tap(tap, R, S)
        # o * stride = i + pad - tap * dil; only exact multiples of the stride are reached.
        num_d = id_ + pad_d - kt * dil_d
        num_h = ih + pad_h - kr * dil_h
        num_w = iw + pad_w - ks * dil_w
        od = num_d // stride_d
        oh = num_h // stride_h
        ow = num_w // stride_w
        reached = mask_m & (num_d % stride_d == 0) & (num_h % stride_h == 0) & (num_w % stride_w == 0)
        reached = reached & (num_d >= 0) & (od < D_OUT) & (num_h >= 0) & (oh < H_OUT) & (num_w >= 0) & (ow < W_OUT)
        dy_tap = dy_ptr + n * sdy_n + od * sdy_d + oh * sdy_h + ow * sdy_w
        w_tap = w_ptr + c_local * sw_c + kt * sw_t + kr * sw_r + ks * sw_s
        for j in range(0, K_G):
            dy = tl.load(
                dy_tap[:, None] + (first_k + j)[None, :] * sdy_k, mask=reached[:, None] & mask_c[None, :], other=0.0
            )
            w = tl.load(w_tap + (first_k + j) * sw_k, mask=mask_c, other=0.0)
            acc += dy.to(ACC_DTYPE) * w.to(ACC_DTYPE)[None, :]

    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_c * s_bias, mask=mask_c, other=0.0).to(ACC_DTYPE)[None, :]
    dx_offs = (n * sdx_n + id_ * sdx_d + ih * sdx_h + iw * sdx_w)[:, None] + offs_c[None, :] * sdx_c
    r_offs = (n * sr_n + id_ * sr_d + ih * sr_h + iw * sr_w)[:, None] + offs_c[None, :] * sr_c
    finish_output(
        acc,
        dx_ptr + dx_offs,
        z_ptr + dx_offs,
        residual_ptr + r_offs,
        mask_m[:, None] & mask_c[None, :],
        ACTIVATION,
        HAS_RESIDUAL,
        STORE_PRE_ACTIVATION,
    )


@triton.jit
def direct_weight_grad_kernel(
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
    ACC_DTYPE: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Partial dw[k, c, tap] (and db[k]) of one split of the N*D_OUT*H_OUT*W_OUT = P pixels.

    Args:
        dy_ptr: output gradient (N, K, D_OUT, H_OUT, W_OUT), any strides (sdy_*).
        x_ptr: input (N, C, D, H, W), any strides (sx_*).
        dw_partial_ptr: (SPLIT_K, K, C_G, TAPS) contiguous, ACC_DTYPE; split z writes slice z.
        db_partial_ptr: (SPLIT_K, K) contiguous, ACC_DTYPE; written only if HAS_BIAS_GRAD.
        Grid: (cdiv(K, BLOCK_C), max(1, C_G) * TAPS, SPLIT_K); split z reduces pixels [z*CHUNK, (z+1)*CHUNK).
    """
    pid_c = tl.program_id(0)
    column = tl.program_id(1)
    split = tl.program_id(2)
    if INDEX_64:
        pid_c = pid_c.to(tl.int64)
        split = split.to(tl.int64)
    offs_k = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    tap = column % TAPS
    c = column // TAPS
    kt, kr, ks = unravel_tap(tap, R, S)
    offs_p = tl.arange(0, BLOCK_P)
    if INDEX_64:
        offs_p = offs_p.to(tl.int64)
    mask_k = offs_k < K
    # Column c == 0 stands in when C_G == 0 (it still yields the bias gradient): no channel then.
    mask_kc = offs_k < tl.where(c < C_G, K, 0)
    x_channel = (offs_k // K_G) * C_G + c

    acc = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE)
    bias_acc = tl.zeros((BLOCK_C,), dtype=ACC_DTYPE)
    p_start = split * CHUNK
    p_end = tl.minimum(p_start + CHUNK, P)
    for p0 in range(p_start, p_end, BLOCK_P):
        p = p0 + offs_p
        mask_p = p < p_end
        n, od, oh, ow = unravel_pixels(p, D_OUT, H_OUT, W_OUT)
        id_ = od * stride_d - pad_d + kt * dil_d
        ih = oh * stride_h - pad_h + kr * dil_h
        iw = ow * stride_w - pad_w + ks * dil_w
        in_bounds = mask_p & inside(id_, ih, iw, D, H, W)
        dy_pix = n * sdy_n + od * sdy_d + oh * sdy_h + ow * sdy_w
        x_pix = n * sx_n + id_ * sx_d + ih * sx_h + iw * sx_w
        dy = tl.load(
            dy_ptr + dy_pix[:, None] + offs_k[None, :] * sdy_k, mask=mask_p[:, None] & mask_k[None, :], other=0.0
        ).to(ACC_DTYPE)
        x = tl.load(
            x_ptr + x_pix[:, None] + x_channel[None, :] * sx_c, mask=in_bounds[:, None] & mask_kc[None, :], other=0.0
        ).to(ACC_DTYPE)
        acc += tl.sum(dy * x, axis=0)
        if HAS_BIAS_GRAD:
            bias_acc += tl.sum(dy, axis=0)

    tl.store(dw_partial_ptr + split * K * C_G * TAPS + offs_k * C_G * TAPS + c * TAPS + tap, acc, mask=mask_kc)
    if HAS_BIAS_GRAD:
        if column == 0:
            tl.store(db_partial_ptr + split * K + offs_k, bias_acc, mask=mask_k)


def plan_direct_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    epilogue: Epilogue = PLAIN,
) -> Launch:
    """The launch writing activation(conv(input, weight) + bias + residual) into ``out``."""
    x, w, y = as_3d(input), as_3d(weight), as_3d(out)
    cfg = direct_config()
    grid = (triton.cdiv(spec.output_pixels, cfg.block_m), triton.cdiv(spec.out_channels, cfg.block_n))
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
        spec.out_channels,
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
        INDEX_64=needs_int64(x, w, y, residual),
        ACC_DTYPE=accumulator_dtype(x.dtype),
        BLOCK_P=cfg.block_m,
        BLOCK_C=cfg.block_n,
    )
    return Launch(direct_forward_kernel, grid, args, constexprs, cfg.num_warps, cfg.num_stages)


def plan_direct_input_grad(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    spec: ConvSpec,
    grad_input: torch.Tensor,
    bias: torch.Tensor | None = None,
    epilogue: Epilogue = PLAIN,
) -> Launch:
    """The launch writing d(loss)/d(input) into ``grad_input``; with ``bias`` and ``epilogue``,
    activation(that + bias + residual): a transposed convolution."""
    dy, w, dx = as_3d(grad_output), as_3d(weight), as_3d(grad_input)
    cfg = direct_config()
    grid = (triton.cdiv(spec.input_pixels, cfg.block_m), triton.cdiv(spec.in_channels, cfg.block_n))
    _, r, s = spec.kernel_size
    residual, pre_activation, *residual_strides = epilogue.args(dx)
    args = (
        dy,
        w,
        dx,
        bias if bias is not None else dx,
        residual,
        pre_activation,
        spec.in_channels,
        spec.in_channels_per_group,
        *spec.input_size,
        spec.input_pixels,
        spec.out_channels_per_group,
        *spec.output_size,
        r,
        s,
        spec.taps,
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
        ACC_DTYPE=accumulator_dtype(dy.dtype),
        BLOCK_P=cfg.block_m,
        BLOCK_C=cfg.block_n,
    )
    return Launch(direct_input_grad_kernel, grid, args, constexprs, cfg.num_warps, cfg.num_stages)


def direct_split_k(spec: ConvSpec) -> int:
    """Splits of the pixel reduction: enough programs to fill the GPU, chunks of at least 16 blocks."""
    cfg = direct_config()
    columns = triton.cdiv(spec.out_channels, cfg.block_n) * spec.in_channels_per_group * spec.taps
    return split_k_for(columns, spec.output_pixels, cfg.block_m)


def plan_direct_weight_grad(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    spec: ConvSpec,
    dw_partial: torch.Tensor,
    db_partial: torch.Tensor | None,
) -> Launch:
    """The launch writing split partials of dw (and db); ``dw_partial`` is (SPLIT_K, K * C_G * taps)."""
    dy, x = as_3d(grad_output), as_3d(input)
    split_k = dw_partial.shape[0]
    cfg = direct_config()
    chunk = triton.cdiv(triton.cdiv(spec.output_pixels, cfg.block_m), split_k) * cfg.block_m
    grid = (
        triton.cdiv(spec.out_channels, cfg.block_n),
        # At least one column, so that the bias gradient is computed even with no channels.
        max(1, spec.in_channels_per_group) * spec.taps,
        split_k,
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
        chunk,
        *spec.stride,
        *spec.pad_lo,
        *spec.dilation,
        *dy.stride(),
        *x.stride(),
    )
    constexprs = dict(
        HAS_BIAS_GRAD=db_partial is not None,
        INDEX_64=needs_int64(dy, x, dw_partial),
        ACC_DTYPE=accumulator_dtype(dy.dtype),
        BLOCK_P=cfg.block_m,
        BLOCK_C=cfg.block_n,
    )
    return Launch(direct_weight_grad_kernel, grid, args, constexprs, cfg.num_warps, cfg.num_stages)


def direct_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    epilogue: Epilogue = PLAIN,
) -> torch.Tensor:
    if out.numel() > 0:
        plan_direct_forward(input, weight, bias, spec, out, epilogue)()
    return out


def direct_input_grad(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    spec: ConvSpec,
    grad_input: torch.Tensor,
    bias: torch.Tensor | None = None,
    epilogue: Epilogue = PLAIN,
) -> torch.Tensor:
    if grad_input.numel() > 0:
        plan_direct_input_grad(grad_output, weight, spec, grad_input, bias, epilogue)()
    return grad_input


def direct_weight_grad(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    spec: ConvSpec,
    grad_weight: torch.Tensor,
    grad_bias: torch.Tensor | None = None,
    split_k: int | None = None,
) -> None:
    """Write d(loss)/d(weight) into ``grad_weight`` (contiguous) and, if given, d(loss)/d(bias)."""
    splits = split_k or direct_split_k(spec)
    bias_elements = spec.out_channels if grad_bias is not None else None
    dw_partial, db_partial = partial_buffers(grad_output, splits, grad_weight.numel(), bias_elements)
    plan_direct_weight_grad(grad_output, input, spec, dw_partial, db_partial)()
    sum_splits(dw_partial, grad_weight)
    if grad_bias is not None:
        sum_splits(db_partial, grad_bias)
