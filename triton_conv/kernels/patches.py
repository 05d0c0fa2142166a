"""Depthwise convolution of channels-last tensors on the matrix unit: output patches as GEMM rows.

The band kernels (``banded.py``) multiply along W, which needs the rows along W contiguous: in
channels-last they are strided by C, and the direct kernels, one FMA per multiply-add on CUDA
cores, are left bound by instruction issue for filters of 5x5 and more. Here the product runs
over whole patches instead. For one channel, a patch of PATCH_D x PATCH_H x PATCH_W output
pixels (unit steps) reads an input patch of IN_D x IN_H x IN_W pixels, and

    y[patch, p] = sum over k of x[patch, k] * band[k, p],
    band[k, p] = w[tap] where input pixel k of the patch reaches output pixel p through tap, zero elsewhere,

so that every (image, patch) pair of the channel is a row of one GEMM: M the rows, N the
patch's outputs, the reduction the input patch's pixels, BLOCK_J per step. A program takes
BLOCK_C channels, each its own band: a batched (3-D) ``tl.dot``. The input is read as vectors of
channels and turned channel-major on the way to the dot, through shared memory; for a 7x7 filter
and 2x8 patches the matrix unit computes 128 products per output (8 input rows of 14 columns,
padded to 16) where 49 are useful, a waste its 16x more multiply-adds per clock than FP32 FMAs
pay for.

The input gradient of a depthwise convolution with unit steps is the same product against the
flipped filter. Non-finite values: the band's zeros multiply every input pixel of a patch
(IEEE 0 * inf is NaN), so each launch sets a flag where a tile's first output pixel is not
finite (which every non-finite input or weight of the patch reaches: ``non_finite.py``) and
the direct kernel, gated on the flag, computes the whole output again (``dispatch.forward``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

from ..spec import ConvSpec, as_3d, needs_int64
from ..tuning.configs import (
    MIN_DOT,
    PATCH_CONFIG,
    PATCH_INTERPRETER_CONFIG,
    PATCH_SHAPES,
    PATCH_TILES,
    PatchConfig,
    gpu_tiles,
)
from ..tuning.key import bucket_channels, layout_of
from ..tuning.kinds import KernelKind
from ..tuning.select import select_config
from . import arguments
from .common import Launch, accumulator_dtype, dot_operand, dot_precision
from .epilogue import PLAIN, Epilogue, finish_tile
from .indexing import program_ids, unravel_pixels
from .non_finite import new_flag, not_finite
from .reduction import in_range, zero_index


@triton.jit
def patch_forward_kernel(
    x_ptr, band_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr, flag_ptr,
    C, ROWS, STEPS, input_size, output_size, padding, patches,
    x_strides, band_strides, y_strides, bias_stride, residual_strides,
    PATCH_D: tl.constexpr, PATCH_H: tl.constexpr, PATCH_W: tl.constexpr, IN_H: tl.constexpr, IN_W: tl.constexpr,
    ROW_SLOT: tl.constexpr, CHUNKS: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_PRE_ACTIVATION: tl.constexpr,
    INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_J: tl.constexpr,
):  # fmt: skip
    """y = activation(z), z[n, c, o] = sum over taps of x[n, c, i(o, tap)] * w[c, 0, tap] + bias[c]
    + residual[n, c, o], for a depthwise convolution (one channel per group, one output channel
    per group) with unit steps, the filter given as band matrices (``patch_bands``).

    Args:
        x_ptr, x_strides: input (N, C, D, H, W); any strides (5, in elements), C's 1 for vectors.
        band_ptr, band_strides: (C, STEPS * BLOCK_J, PATCH_D * PATCH_H * PATCH_W): row j of step s
            of channel c what the input pixel that step's column j reads (``PatchGeometry``)
            adds to each output pixel of a patch (W fastest) times; any strides (3), the last 1.
        y_ptr, y_strides: output (N, C, D_OUT, H_OUT, W_OUT); any strides (5).
        bias_ptr, bias_stride: bias (C,) and its stride; read only if HAS_BIAS.
        residual_ptr, residual_strides: added before the activation, y's shape, any strides (5);
            read only if HAS_RESIDUAL.
        z_ptr: the pre-activation z, y's shape and strides; written only if STORE_PRE_ACTIVATION.
        flag_ptr: an int32 set to 1 where a tile's first output pixel is not finite.
        C: channels. ROWS: N * patches' product. STEPS: the reduction's BLOCK_J-deep steps.
        input_size: (D, H, W). output_size: (D_OUT, H_OUT, W_OUT). padding: leading padding (D, H, W).
        patches: patches along (D_OUT, H_OUT, W_OUT), each PATCH_D x PATCH_H x PATCH_W outputs.
        IN_H, IN_W: an input patch's rows and columns (the output patch plus the dilated
            filter's reach). ROW_SLOT: columns a step gives each input row it reads (a power of
            two); a step reads BLOCK_J // ROW_SLOT rows, or, where CHUNKS > 1, BLOCK_J columns of one.
        HAS_BIAS: add the bias. ACTIVATION: the activation's name ("none" for none).
        HAS_RESIDUAL: add the residual. STORE_PRE_ACTIVATION: write z.
        INDEX_64: compute offsets in int64. ACC_DTYPE: float32.
        BLOCK_M, BLOCK_C, BLOCK_J: patches, channels and input pixels of a step's product.
        Grid: (cdiv(ROWS, BLOCK_M), cdiv(C, BLOCK_C)).
    """
    pid_m, pid_c, _ = program_ids(INDEX_64)
    D, H, W = input_size
    D_OUT, H_OUT, W_OUT = output_size
    pad_d, pad_h, pad_w = padding
    patches_d, patches_h, patches_w = patches
    sx_n, _, sx_d, sx_h, sx_w = x_strides
    sb_c, sb_k, _ = band_strides
    OUTPUTS: tl.constexpr = PATCH_D * PATCH_H * PATCH_W
    ROWS_PER_STEP: tl.constexpr = BLOCK_J // ROW_SLOT
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = rows < ROWS
    n, pd, ph, pw = unravel_pixels(rows, patches_d, patches_h, patches_w)
    id0 = pd * PATCH_D - pad_d
    ih0 = ph * PATCH_H - pad_h
    # Rows past the last start at W, where no column of a patch is inside.
    iw0 = tl.where(mask_m, pw * PATCH_W - pad_w, W)
    channels = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = channels < C
    # Column j of a step reads row j // ROW_SLOT of its rows, column j % ROW_SLOT of its chunk.
    j = tl.arange(0, BLOCK_J)
    j_row = j // ROW_SLOT
    j_col = j % ROW_SLOT
    # Everything per (patch, column) is computed once; a step adds scalars.
    x_offs = (n * sx_n + id0 * sx_d + ih0 * sx_h + iw0 * sx_w)[:, None] + (j_row * sx_h + j_col * sx_w)[None, :]
    h_of = ih0[:, None] + j_row[None, :]
    w_of = iw0[:, None] + j_col[None, :]
    cols_inside = in_range(w_of, W, INDEX_64) & (j_col < IN_W)[None, :]
    p = tl.arange(0, OUTPUTS)
    band_ptrs = band_ptr + channels[:, None, None] * sb_c + j[None, :, None] * sb_k + p[None, None, :]

    acc = tl.zeros((BLOCK_C, BLOCK_M, OUTPUTS), dtype=ACC_DTYPE)
    kd = zero_index(INDEX_64)
    kh = zero_index(INDEX_64)
    chunk = zero_index(INDEX_64)
    # A runtime trip count, as the band forward's (Triton 3.9 did not pipeline a constant one).
    for _ in range(0, STEPS):
        inside = in_range(h_of + kh, H, INDEX_64) & (j_row + kh < IN_H)[None, :]
        if CHUNKS == 1:
            inside = inside & cols_inside
        else:
            inside = inside & in_range(w_of + chunk * BLOCK_J, W, INDEX_64) & (j_col + chunk * BLOCK_J < IN_W)[None, :]
        inside = inside & in_range(id0 + kd, D, INDEX_64)[:, None]
        x_step = kd * sx_d + kh * sx_h + chunk * BLOCK_J * sx_w
        # Cached in L1 (".ca"; Triton's 16-byte copies bypass it otherwise): the patches of a
        # program overlap by the filter's reach, and the next steps read the rows below.
        a = tl.load(
            x_ptr + x_step + x_offs[:, :, None] + channels[None, None, :],
            mask=inside[:, :, None] & mask_c[None, None, :],
            other=0.0,
            cache_modifier=".ca",
        )
        band = tl.load(band_ptrs, mask=mask_c[:, None, None], other=0.0)
        acc = tl.dot(dot_operand(tl.permute(a, (2, 0, 1))), dot_operand(band), acc, out_dtype=ACC_DTYPE)
        band_ptrs += BLOCK_J * sb_k
        # The chunk fastest, then the input rows (a step's at a time), then the depth.
        chunk += 1
        row_done = chunk == CHUNKS
        chunk = tl.where(row_done, 0, chunk)
        kh = tl.where(row_done, kh + ROWS_PER_STEP, kh)
        plane_done = kh >= IN_H
        kh = tl.where(plane_done, 0, kh)
        kd = tl.where(plane_done, kd + 1, kd)

    # Every output pixel of a patch multiplies every input pixel the patch reads, and every tap
    # of the filter: a non-finite input or weight makes each of them non-finite, so the first
    # output pixel's sum tells (summing the whole tile cost about 200 more instructions per warp).
    total = tl.sum(tl.sum(tl.sum(tl.where(p[None, None, :] == 0, acc, 0.0), axis=2), axis=1), axis=0)
    tl.store(flag_ptr, 1, mask=not_finite(total))
    # (patch, output pixel) pairs as the pixels of a (pixels x channels) tile.
    PIXELS: tl.constexpr = BLOCK_M * OUTPUTS
    tile = tl.reshape(tl.permute(acc, (1, 2, 0)), (PIXELS, BLOCK_C))
    od = pd[:, None] * PATCH_D + (p // (PATCH_W * PATCH_H))[None, :]
    oh = ph[:, None] * PATCH_H + (p // PATCH_W % PATCH_H)[None, :]
    ow = pw[:, None] * PATCH_W + (p % PATCH_W)[None, :]
    real = mask_m[:, None] & (od < D_OUT) & (oh < H_OUT) & (ow < W_OUT)
    n_pixels = tl.reshape(n[:, None] + 0 * p[None, :], (PIXELS,))
    od, oh, ow = tl.reshape(od, (PIXELS,)), tl.reshape(oh, (PIXELS,)), tl.reshape(ow, (PIXELS,))
    real = tl.reshape(real, (PIXELS,))
    finish_tile(
        tile, bias_ptr, bias_stride, y_ptr, y_strides, z_ptr, residual_ptr, residual_strides,
        n_pixels, od, oh, ow, channels, real, mask_c,
        HAS_BIAS, False, ACTIVATION, HAS_RESIDUAL, STORE_PRE_ACTIVATION,
    )  # fmt: skip


@dataclass(frozen=True)
class PatchGeometry:
    """How the reduction of ``patch_forward_kernel`` walks an input patch of ``input_patch``
    (D, H, W) pixels: each step reads ``rows_per_step`` input rows of ``row_slot`` columns (a
    power of two, at least the row's width), or, where a row is wider than a step, one
    ``block_j``-column chunk of a row, ``chunks`` per row; depth planes outermost."""

    input_patch: tuple[int, int, int]
    block_j: int
    row_slot: int
    chunks: int

    @staticmethod
    def of(spec: ConvSpec, cfg: PatchConfig) -> PatchGeometry:
        in_patch = tuple(size + (taps - 1) * dil for size, taps, dil in zip(cfg.patch, spec.kernel_size, spec.dilation))
        width = in_patch[2]
        if width > cfg.block_j:
            return PatchGeometry(in_patch, cfg.block_j, cfg.block_j, -(-width // cfg.block_j))
        return PatchGeometry(in_patch, cfg.block_j, 1 << (width - 1).bit_length(), 1)

    @property
    def rows_per_step(self) -> int:
        return self.block_j // self.row_slot

    @property
    def steps(self) -> int:
        in_d, in_h, _ = self.input_patch
        return in_d * -(-in_h // self.rows_per_step) * self.chunks

    def band_row(self, d: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The band row (step * block_j + column) at which the kernel reads input pixel (d, h, w) of a patch."""
        step = (d * -(-self.input_patch[1] // self.rows_per_step) + h // self.rows_per_step) * self.chunks
        step = step + w // self.block_j
        return step * self.block_j + h % self.rows_per_step * self.row_slot + w % self.block_j


def patch_shape(spec: ConvSpec) -> tuple[int, int, int]:
    """Of PATCH_SHAPES, the patch whose steps over all the patches of an image (the partial ones at
    the edges included) are fewest."""

    def steps_per_image(patch: tuple[int, int, int]) -> int:
        patches = math.prod(-(-size // edge) for size, edge in zip(spec.output_size, patch))
        return patches * PatchGeometry.of(spec, replace(PATCH_CONFIG, patch=patch)).steps

    return min(PATCH_SHAPES, key=steps_per_image)


def patch_products_per_output(spec: ConvSpec) -> int:
    """The products the heuristic's patch tile computes per output: its reduction's depth."""
    return PatchGeometry.of(spec, replace(PATCH_CONFIG, patch=patch_shape(spec))).steps * PATCH_CONFIG.block_j


def patch_config(spec: ConvSpec) -> PatchConfig:
    """The heuristic's patch tile for a depthwise ``spec``: PATCH_CONFIG's (the interpreter's
    under it) with ``patch_shape``'s patches."""
    return replace(PATCH_CONFIG if gpu_tiles() else PATCH_INTERPRETER_CONFIG, patch=patch_shape(spec))


def patch_bands(weight: torch.Tensor, spec: ConvSpec, cfg: PatchConfig, flip: bool = False) -> torch.Tensor:
    """The band matrix of each channel of the depthwise ``weight`` (C, 1, T, R, S): (C, steps *
    block_j, outputs), element (k, p) the tap through which the input pixel the kernel reads at
    band row k (``PatchGeometry.band_row``) reaches output pixel p of a patch (W fastest), zero
    where none does; with ``flip``, of the filter flipped along every dimension."""
    w = as_3d(weight).flatten(1)
    if flip:
        w = w.flip(1)
    geometry = PatchGeometry.of(spec, cfg)
    dd, dh, dw = spec.dilation
    device = weight.device
    p = torch.arange(math.prod(cfg.patch), device=device)
    t, r, s = torch.unravel_index(torch.arange(w.shape[1], device=device), spec.kernel_size)
    p_d, p_h, p_w = (coord[:, None] for coord in torch.unravel_index(p, cfg.patch))
    k = geometry.band_row(p_d + t * dd, p_h + r * dh, p_w + s * dw)
    band = w.new_zeros((w.shape[0], geometry.steps * cfg.block_j, p.numel()))
    band[:, k, p[:, None].expand_as(k)] = w[:, None, :].expand(-1, p.numel(), -1)
    return band


# The patch forward (and the input gradient, its forward of the flipped filter) as tuning sees
# it: per channel, (image, patch) rows by a patch's 16 outputs, over the input pixels a patch
# reads; keyed by the channel count too, which sets the grid's second axis. Launches with a fused
# residual or pre-activation are not timed.
PATCH_FORWARD = KernelKind(
    name="patch_forward",
    pass_="F",
    tiles=PATCH_TILES,
    interpreter_tile=PATCH_INTERPRETER_CONFIG.tile(),
    gemm_extents=lambda spec: (
        spec.output_pixels // MIN_DOT,
        MIN_DOT,
        PatchGeometry.of(spec, patch_config(spec)).steps * MIN_DOT,
    ),
    dense_gemm=lambda spec: (spec.output_pixels, 1, spec.taps),
    key_pixels=lambda spec: spec.output_pixels,
    key_layout=lambda input, output: layout_of(input),
    plan=lambda spec, x, w, b, y, tile: plan_patch_forward(
        x, w, b, spec, y, new_flag(x.device), cfg=PatchConfig.of(tile, patch_shape(spec))
    ),
    key_fields=lambda spec: (f"c{bucket_channels(spec.in_channels)}",),
    gemm_blocks=False,
)


def plan_patch_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    flag: torch.Tensor,
    epilogue: Epilogue = PLAIN,
    flip_filter: bool = False,
    cfg: PatchConfig | None = None,
) -> Launch:
    """The launch writing activation(conv(input, weight) + bias + residual) into ``out`` for a
    depthwise ``spec`` with unit steps over a channels-last ``input`` (``dispatch.uses_patch_kernel``),
    setting ``flag`` where a tile is not finite; with ``flip_filter``, of ``weight`` flipped along
    every spatial dimension. ``cfg`` overrides the tile that ``select_config`` picks (the
    heuristic's, ``patch_config``, unless tuned; always the heuristic's with a residual or a
    stored pre-activation)."""
    x, y = as_3d(input), as_3d(out)
    fused = epilogue.residual is not None or epilogue.pre_activation is not None
    if cfg is None and fused:
        cfg = patch_config(spec)
    elif cfg is None:
        tile = select_config(
            PATCH_FORWARD,
            spec,
            x.dtype,
            dot_precision(x),
            PATCH_FORWARD.key_layout(input, out),
            lambda t: plan_patch_forward(
                input, weight, bias, spec, out, flag, epilogue, flip_filter, PatchConfig.of(t, patch_shape(spec))
            ),
            patch_config(spec).tile(),
            x.device,
        )
        cfg = PatchConfig.of(tile, patch_shape(spec))
    geometry = PatchGeometry.of(spec, cfg)
    band = patch_bands(weight, spec, cfg, flip_filter)
    patches = tuple(-(-size // edge) for size, edge in zip(spec.output_size, cfg.patch))
    rows = spec.batch * math.prod(patches)
    args = arguments.tensors(x=x, band=band) | arguments.output("y", y, bias, epilogue) | arguments.sizes(spec)
    args |= dict(C=spec.in_channels, ROWS=rows, STEPS=geometry.steps, patches=patches)
    args |= arguments.flag(flag, y)
    _, in_h, in_w = geometry.input_patch
    constexprs = dict(PATCH_D=cfg.patch[0], PATCH_H=cfg.patch[1], PATCH_W=cfg.patch[2], IN_H=in_h, IN_W=in_w)
    constexprs |= dict(ROW_SLOT=geometry.row_slot, CHUNKS=geometry.chunks)
    constexprs |= arguments.output_flags(bias, epilogue)
    constexprs |= dict(
        INDEX_64=needs_int64(x, band, y, args["residual_ptr"]),
        ACC_DTYPE=accumulator_dtype(x.dtype),
        BLOCK_M=cfg.block_m,
        BLOCK_C=cfg.block_c,
        BLOCK_J=cfg.block_j,
    )
    grid = (triton.cdiv(rows, cfg.block_m), triton.cdiv(spec.in_channels, cfg.block_c))
    return Launch(patch_forward_kernel, grid, args, constexprs, cfg.num_warps, cfg.num_stages)


def patch_forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    epilogue: Epilogue = PLAIN,
    flip_filter: bool = False,
) -> torch.Tensor:
    """Write ``plan_patch_forward``'s result into ``out`` and return its non-finite flag, behind
    which the direct kernel must recompute the output (``dispatch.forward``)."""
    flag = new_flag(input.device)
    plan_patch_forward(input, weight, bias, spec, out, flag, epilogue, flip_filter)()
    return flag
