"""Forward convolution as an implicit GEMM whose operands arrive through tensor descriptors (TMA).

Where the input is channels-last and the convolution has stride 1, a program's output tile is a
box of BLOCK_D x BLOCK_H x BLOCK_W output pixels of one image (of several whole images, where
they are smaller than the tile), so for a given tap the input it reads is a box of the same size,
shifted by the tap: one tensor-descriptor load of [images, BLOCK_D, BLOCK_H, BLOCK_W, BLOCK_K]
from the (N, D, H, W, C) input. The copy engine fills
whatever part of the box lies outside the input (negative coordinates included) with zeros, which
is exactly the convolution's zero padding: no per-row addresses, no bounds tests, no masks in the
loop. The weight is a second descriptor over its (K, taps x C/groups) channels-last matrix. The
reduction is the flat loop over taps x channel blocks of ``reduction.py``, so the pipeliner keeps
the copies of the next taps in flight while the current tap multiplies.

Hopper's copy engine is what makes this cheap on a GPU; Triton's interpreter runs the same loads
(zero fill included) on the CPU. A box of several rows reaches the tensor cores through registers
(Triton does not view a 5-D shared tile as a 2-D one), a single-row box straight from shared
memory (perf/NOTES.md, "Tensor descriptors"). ``tma_forward_applies`` says where the kernel
applies; other problems, and every problem while ``ENABLED`` is off, run the pointer kernel
(``implicit_gemm_forward.py``). The input gradient with unit steps runs this kernel too, as the
forward of the flipped filter (``input_grad_filter``, ``dispatch.tma_input_grad_applies``). Its
tiles are the forward's; autotuning times those it ``admits``
(``FORWARD_TMA``), the heuristic's first.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from ..spec import ConvSpec, as_3d, needs_int64
from ..tuning.configs import KernelConfig, heuristic_config
from ..tuning.kinds import KernelKind
from ..tuning.select import select_config
from . import arguments
from .common import INTERPRETER, Launch, accumulator_dtype, dot_operand, dot_precision
from .epilogue import PLAIN, Epilogue, finish_tile
from .implicit_gemm_forward import FORWARD
from .indexing import unravel_pixels
from .layout import store_transposed
from .non_finite import flag_tile_not_finite
from .reduction import next_step, zero_index

# The kill switch: TRITON_CONV_TMA_FORWARD=0 sends every forward convolution and input gradient
# to the pointer kernels (the default, 1, lets the dispatch use this one where it applies). Read
# at import; tests flip the module attribute.
ENABLED = os.environ.get("TRITON_CONV_TMA_FORWARD", "1") == "1"
# The copy engine's limits: boxes of at most 256 elements along each dimension, addresses and
# strides (but the innermost) 16-byte aligned.
MAX_BOX = 256
TMA_ALIGNMENT = 16
# Boxes computing more than 8/7 of the output's pixels leave the problem to the pointer kernel:
# compiled for sm_90, this kernel's K step is 20-30% shorter than the pointer kernel's on padded
# 3x3 convolutions (perf/NOTES.md, "Tensor descriptors"), which a box wasting 23% (14x14 images
# in 8x16 boxes) more than spends.
MIN_BOX_USE = 7 / 8


@triton.jit
def implicit_gemm_forward_tma_kernel(
    x_desc, w_desc, bias_ptr, y_ptr, residual_ptr, z_ptr, flag_ptr,
    N, C_G, K_G, output_size, boxes_per_dim, kernel_size, TAPS, padding, dilation,
    y_strides, bias_stride, residual_strides,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_PRE_ACTIVATION: tl.constexpr,
    STORE_TRANSPOSED: tl.constexpr, FLAG_NOT_FINITE: tl.constexpr, INDEX_64: tl.constexpr,
    PRECISION: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_IMAGES: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """y = activation(conv(x, w) + bias + residual) for one box of BLOCK_M = BLOCK_IMAGES x
    BLOCK_D x BLOCK_H x BLOCK_W output pixels by BLOCK_N output channels of group axis 2; stride 1 only.

    Args:
        x_desc: the input as (N, D, H, W, C), C = groups * C_G contiguous, block
            [BLOCK_IMAGES, BLOCK_D, BLOCK_H, BLOCK_W, BLOCK_K]; zero fill outside it is the
            padding (and the images past N).
        w_desc: the weight as (K, TAPS * C_G), (tap, channel) columns tap-major, s fastest
            (a channels-last (K, T, R, S, C_G) weight), K = groups * K_G; block [BLOCK_N, BLOCK_K].
        bias_ptr, bias_stride: bias (K,) and its stride; read only if HAS_BIAS.
        y_ptr, y_strides: output (N, K, D_OUT, H_OUT, W_OUT); any strides (5, in elements).
        residual_ptr, residual_strides: added before the activation, y's shape, any strides (5);
            read only if HAS_RESIDUAL.
        z_ptr: the pre-activation, y's shape and strides; written only if STORE_PRE_ACTIVATION.
        flag_ptr: one int32, set to 1 if FLAG_NOT_FINITE and the tile's sum is not finite
            (``non_finite.flag_tile_not_finite``: bundled groups, ``dispatch.group_bundle``).
        N: images. C_G: input channels per group, a multiple of BLOCK_K (a box never spans two groups,
            a weight block never two taps). K_G: output channels per group.
        output_size: (D_OUT, H_OUT, W_OUT). boxes_per_dim: boxes per image along D, H, W.
        kernel_size: filter size (T, R, S); TAPS = T * R * S. padding: leading padding (D, H, W).
        dilation: (D, H, W) spacing of the taps.
        HAS_BIAS: add the bias. ACTIVATION: the activation's name ("none" for none).
        HAS_RESIDUAL: add the residual. STORE_PRE_ACTIVATION: write z.
        STORE_TRANSPOSED: store the tile as (channels x pixels) (``layout.store_transposed``).
        INDEX_64: compute output offsets in int64 (some tensor spans 2^31 elements or more).
        PRECISION: tl.dot input precision ("ieee" or "tf32").
        ACC_DTYPE: accumulator type (float32, or float64 for float64 inputs).
        BLOCK_M, BLOCK_N, BLOCK_K: the tile: output pixels, output channels, reduction channels
            per step. BLOCK_IMAGES, BLOCK_D, BLOCK_H: the box's images (more than one only where
            the box holds each whole), depth and height (its width is the rest of BLOCK_M).
    """
    BLOCK_W: tl.constexpr = BLOCK_M // (BLOCK_IMAGES * BLOCK_D * BLOCK_H)
    D_OUT, H_OUT, W_OUT = output_size
    TILES_D, TILES_H, TILES_W = boxes_per_dim
    _, R, S = kernel_size
    pad_d, pad_h, pad_w = padding
    dil_d, dil_h, dil_w = dilation
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    group = tl.program_id(2)
    # Boxes W fastest, then H, D, image: neighbouring programs share most of their input rows.
    image_block, tile_d, tile_h, tile_w = unravel_pixels(pid_m, TILES_D, TILES_H, TILES_W)
    n0 = image_block * BLOCK_IMAGES
    od0 = tile_d * BLOCK_D
    oh0 = tile_h * BLOCK_H
    ow0 = tile_w * BLOCK_W
    c_base = group * C_G
    k0 = group * K_G + pid_n * BLOCK_N

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=ACC_DTYPE)
    kt = zero_index(False)
    kr = zero_index(False)
    ks = zero_index(False)
    c0 = zero_index(False)
    # The weight's column advances by BLOCK_K every step: taps x C_G columns, tap-major.
    for step in range(0, TAPS * (C_G // BLOCK_K)):
        # The box of tap (kt, kr, ks): zero-filled where it leaves the input, as the padding is.
        id0 = od0 + kt * dil_d - pad_d
        ih0 = oh0 + kr * dil_h - pad_h
        iw0 = ow0 + ks * dil_w - pad_w
        box = x_desc.load([n0, id0, ih0, iw0, c_base + c0])
        a = tl.reshape(box, (BLOCK_M, BLOCK_K))
        b = w_desc.load([k0, step * BLOCK_K])
        acc = tl.dot(dot_operand(a), dot_operand(tl.trans(b)), acc, input_precision=PRECISION, out_dtype=ACC_DTYPE)
        c0, kt, kr, ks = next_step(c0, kt, kr, ks, C_G, R, S, BLOCK_K)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < K_G
    # Row i of the tile is box element (image, d, h, w), W fastest.
    offs_m = tl.arange(0, BLOCK_M)
    n = n0 + offs_m // (BLOCK_D * BLOCK_H * BLOCK_W)
    od = od0 + offs_m // (BLOCK_H * BLOCK_W) % BLOCK_D
    oh = oh0 + offs_m // BLOCK_W % BLOCK_H
    ow = ow0 + offs_m % BLOCK_W
    mask_m = (n < N) & (od < D_OUT) & (oh < H_OUT) & (ow < W_OUT)
    k = group * K_G + offs_n
    if INDEX_64:
        n = n.to(tl.int64)
        od = od.to(tl.int64)
        oh = oh.to(tl.int64)
        ow = ow.to(tl.int64)
        k = k.to(tl.int64)
    if FLAG_NOT_FINITE:
        # Masked: rows past the output read real input, and columns past the group another group's weights.
        flag_tile_not_finite(acc, mask_m, mask_n, flag_ptr)
    finish_tile(
        acc, bias_ptr, bias_stride, y_ptr, y_strides, z_ptr, residual_ptr, residual_strides,
        n, od, oh, ow, k, mask_m, mask_n,
        HAS_BIAS, STORE_TRANSPOSED, ACTIVATION, HAS_RESIDUAL, STORE_PRE_ACTIVATION,
    )  # fmt: skip


def admits(spec: ConvSpec, tile: KernelConfig) -> bool:
    """Whether ``tile`` can run ``spec`` on this kernel and waste at most 1/8 of its boxes'
    pixels: its reduction block divides C/groups (blocks never span two groups or two taps)."""
    return (
        spec.in_channels_per_group % tile.block_k == 0
        and box_use(tile.block_m, spec.output_size, spec.batch) >= MIN_BOX_USE
    )


def box_use(block_m: int, output_size: tuple[int, int, int], batch: int) -> float:
    """The share of the pixels that ``box_shape``'s boxes compute that are output pixels."""
    box = box_shape(block_m, output_size, batch)
    return math.prod(output_size) / pixels_computed(output_size, box, batch)


def pixels_computed(output_size: tuple[int, int, int], box: tuple[int, int, int, int], batch: int) -> float:
    """The pixels that (images, D, H, W) boxes compute per image of ``output_size``, over a batch
    of ``batch`` (the last box's images past it included)."""
    images = box[0]
    per_image = math.prod(triton.cdiv(size, side) * side for size, side in zip(output_size, box[1:]))
    return per_image * triton.cdiv(batch, images) * images / batch


def box_shape(block_m: int, output_size: tuple[int, int, int], batch: int) -> tuple[int, int, int, int]:
    """The (images, BLOCK_D, BLOCK_H, BLOCK_W) box of ``block_m`` (a power of two) output pixels
    that computes the fewest pixels per image of ``output_size`` (D, H, W) over ``batch``
    images, W widest on a tie (longer contiguous rows per copy; a single-row box also feeds
    wgmma straight from shared memory); each side at most ``MAX_BOX``. A box spans several
    images only where it holds each whole (images smaller than the tile, as in late stages and
    small inputs): their programs would otherwise be too few rows for wgmma and each pay the
    loop's start."""
    best: tuple[float, tuple[int, int, int, int]] | None = None  # (pixels computed per image, box)
    sides = [2**i for i in range(int(math.log2(block_m)) + 1) if 2**i <= MAX_BOX]
    for images in sides:
        for block_w in reversed(sides):
            for block_h in reversed(sides):
                block_d = block_m // (images * block_w * block_h)
                if block_d < 1 or block_d > MAX_BOX or images * block_d * block_h * block_w != block_m:
                    continue
                box = (images, block_d, block_h, block_w)
                if images > 1 and any(side < size for side, size in zip(box[1:], output_size)):
                    continue
                pixels = pixels_computed(output_size, box, batch)
                if best is None or pixels < best[0]:
                    best = (pixels, box)
    assert best is not None, f"no box of {block_m} pixels within {MAX_BOX} per side"
    return best[1]


def tma_forward_config(spec: ConvSpec, dtype: torch.dtype, precision: str) -> KernelConfig:
    """The forward heuristic tile."""
    return heuristic_config(FORWARD, dtype, precision, *FORWARD_TMA.gemm_extents(spec))


# The kernel as tuning sees it: the forward's tiles, those whose reduction block divides
# C/groups and whose boxes waste at most 1/8 (``admits``). The input gradient it runs (the
# forward of the flipped filter) is keyed by that forward problem.
FORWARD_TMA = KernelKind(
    name="forward_tma",
    pass_="F",
    tiles=FORWARD.tiles,
    interpreter_tile=FORWARD.interpreter_tile,
    gemm_extents=FORWARD.gemm_extents,
    dense_gemm=FORWARD.dense_gemm,
    key_pixels=FORWARD.key_pixels,
    key_layout=lambda input, output: "cl",
    plan=lambda spec, x, w, b, y, tile: plan_forward_tma(x, w, b, spec, y, tile),
    admits=admits,
)


def input_boxes(input: torch.Tensor) -> torch.Tensor:
    """The (N, C, D, H, W) view of ``input`` as (N, D, H, W, C): what the input descriptor spans."""
    return as_3d(input).permute(0, 2, 3, 4, 1)


def has_tma(device: torch.device) -> bool:
    """Whether kernels on ``device`` get a copy engine for tensor descriptors: Hopper or newer,
    meta tensors (planned for an H100 by ``perf/static.py``) and the interpreter. An sm_80
    compile of this kernel emulates the copies with scalar loads (1324 instructions per step)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 9
    return device.type == "meta" or INTERPRETER


def tma_forward_applies(input: torch.Tensor, spec: ConvSpec) -> bool:
    """Whether the forward convolution of ``input`` runs this kernel: while ``ENABLED``, where
    ``has_tma(input.device)``, and where

    - the stride is 1 (an output box then reads an input box) and some dimension is padded
      (without padding the pointer kernel tests no bounds and is as short as a plain GEMM);
    - the input is dense channels-last at a 16-byte aligned address;
    - C/groups is a multiple of the heuristic tile's reduction block (16 to 64): blocks never
      span two groups or two taps, every descriptor stride is 16-byte aligned. A smaller block
      than the heuristic's lost to the pointer kernel's masked one (perf/NOTES.md);
    - the boxes waste at most 1/8 of the pixels they compute (``MIN_BOX_USE``).
    """
    if not (ENABLED and has_tma(input.device)):
        return False
    if spec.stride != (1, 1, 1) or not any(spec.padded):
        return False
    if input.numel() == 0 or not input_boxes(input).is_contiguous() or input.data_ptr() % TMA_ALIGNMENT:
        return False
    return admits(spec, tma_forward_config(spec, input.dtype, dot_precision(input)))


def weight_matrix(weight: torch.Tensor) -> torch.Tensor:
    """The (K, C_G, T, R, S) weight as a dense (K, T*R*S*C_G) matrix, columns tap-major: a view
    of a channels-last weight, else a copy (also if its address is not 16-byte aligned)."""
    w = as_3d(weight).permute(0, 2, 3, 4, 1).reshape(weight.shape[0], -1)
    if not w.is_contiguous() or w.data_ptr() % TMA_ALIGNMENT:
        w = w.clone(memory_format=torch.contiguous_format)
    return w


def input_grad_filter(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """The filter of ``ConvSpec.input_grad_as_forward``: the (K, C_G, T, R, S) ``weight`` with
    input and output channels swapped within each group and flipped along every spatial
    dimension, (C, K_G, T, R, S), stored channels-last (so ``weight_matrix`` takes it as it is):
    one copy, of the weight's size."""
    w = as_3d(weight)
    k, c_g, t, r, s = w.shape
    k_g, taps = k // groups, t * r * s
    # (groups, C_G, taps, K_G): each group's transpose, channels innermost. Flipping T, R and S
    # reverses the taps' order; index_select writes a new dense tensor (torch.flip would keep
    # the permuted strides, and making them channels-last would copy again).
    per_group = w.reshape(groups, k_g, c_g, taps).permute(0, 2, 3, 1)
    flipped = per_group.index_select(2, torch.arange(taps - 1, -1, -1, device=w.device))
    return flipped.reshape(groups * c_g, t, r, s, k_g).permute(0, 4, 1, 2, 3)


def dense_strides(shape: list[int]) -> list[int]:
    """Row-major strides of ``shape``: what a descriptor needs, whatever torch reports for size-1
    dimensions of a contiguous tensor."""
    strides = [1]
    for size in reversed(shape[1:]):
        strides.insert(0, strides[0] * size)
    return strides


def plan_forward_tma(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    config: KernelConfig | None = None,
    epilogue: Epilogue = PLAIN,
    flag: torch.Tensor | None = None,
) -> Launch:
    """The launch writing activation(conv(input, weight) + bias + residual) into ``out`` (any
    strides) where ``tma_forward_applies``; ``config`` (rows a power of two, a reduction block
    dividing C/groups) overrides the heuristic tile; ``flag`` as in ``plan_forward``."""
    boxes = input_boxes(input)
    w = weight_matrix(weight)
    y = as_3d(out)
    precision = dot_precision(input)
    cfg = config or select_config(
        FORWARD_TMA,
        spec,
        input.dtype,
        precision,
        FORWARD_TMA.key_layout(input, out),
        lambda c: plan_forward_tma(input, weight, bias, spec, out, c, epilogue, flag),
        tma_forward_config(spec, input.dtype, precision),
        input.device,
    )
    if spec.in_channels_per_group % cfg.block_k:
        raise ValueError(f"C/groups = {spec.in_channels_per_group} is not a multiple of BLOCK_K = {cfg.block_k}")
    images, block_d, block_h, block_w = box_shape(cfg.block_m, spec.output_size, spec.batch)
    box = [images, block_d, block_h, block_w, cfg.block_k]
    x_desc = TensorDescriptor(boxes, list(boxes.shape), dense_strides(list(boxes.shape)), box)
    w_desc = TensorDescriptor(w, list(w.shape), dense_strides(list(w.shape)), [cfg.block_n, cfg.block_k])
    tiles = [triton.cdiv(size, side) for size, side in zip(spec.output_size, box[1:4])]
    grid = (
        triton.cdiv(spec.batch, images) * math.prod(tiles),
        triton.cdiv(spec.out_channels_per_group, cfg.block_n),
        spec.groups,
    )
    args = dict(x_desc=x_desc, w_desc=w_desc) | arguments.output("y", y, bias, epilogue)
    args |= dict(output_size=spec.output_size, boxes_per_dim=tuple(tiles), padding=spec.pad_lo)
    args |= dict(kernel_size=spec.kernel_size, dilation=spec.dilation)
    args |= dict(N=spec.batch, C_G=spec.in_channels_per_group, K_G=spec.out_channels_per_group, TAPS=spec.taps)
    args |= arguments.flag(flag, y)
    constexprs = arguments.output_flags(bias, epilogue) | dict(FLAG_NOT_FINITE=flag is not None)
    constexprs |= dict(INDEX_64=needs_int64(y, args["residual_ptr"]), ACC_DTYPE=accumulator_dtype(input.dtype))
    constexprs |= dict(STORE_TRANSPOSED=store_transposed(y), PRECISION=precision)
    constexprs |= dict(BLOCK_M=cfg.block_m, BLOCK_IMAGES=images, BLOCK_D=block_d, BLOCK_H=block_h)
    constexprs |= dict(BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k)
    return Launch(implicit_gemm_forward_tma_kernel, grid, args, constexprs, cfg.num_warps, cfg.num_stages)
