"""Depthwise convolution of small planes on the matrix unit: a channel's whole plane as one product.

Where a channel's input and output planes each hold at most PLANE_MAX_PIXELS pixels (a 7x7
feature map, a short sequence), the convolution of one channel over a block of images is

    y[n, p] = sum over j of x[n, j] * T[j, p],
    T[j, p] = w[tap] where input pixel j reaches output pixel p through tap, zero elsewhere,

one product: the images its rows, the input plane its reduction, the output plane its columns,
pixels flattened (W fastest). Steps, dilation and padding are all in T. A program takes a block
of channels and runs one batched ``tl.dot`` per block of images, the channels its batch. T is
read once per program from the channels' filter frames (``plane_frames``): each filter placed in
a block of zeros such that T[j, p] is the frame's element at a row offset of j plus a column
offset of p, for every pair of the padded blocks, so T's loads take no mask and no per-element
tests; the frames hold the channels contiguous, so T loads as vectors of channels.

Why: the band kernels multiply along W in segments of 16 columns and more, so rows of 7 (a 7x7
map) leave most of a segment empty, and the direct kernels spend several instructions per
multiply-add on CUDA cores. Here a 7x7 map with a 7x7 filter pads the 49 pixels to 64: the
matrix unit computes 64 x 64 products per image where 1369 are useful (3x). Blocks of channels
make every load and store of a channels-last tensor a vector of channels (16 bytes for 8
channels of 16 bits), and in the default layout, where a plane's pixels are contiguous, T's and
the address arithmetic's cost is shared by the block. The batch compiles to ``mma.sync`` (wgmma
has none), whose time is small beside the loads.

The input gradient is the same product against T transposed (``TRANSPOSED``), for any steps:
dx[n, j] = sum over p of dy[n, p] * T[j, p]. Non-finite values: T's zeros multiply every pixel
of the plane (IEEE 0 * inf is NaN), and a weight no output reads through a real pixel is not in T
at all (torch multiplies it by the padding's zeros), so the kernel sets a flag where the sum of
an image block's outputs or of the channels' filters is not finite, and the direct kernel, gated
on the flag, computes the output again (``dispatch.forward``, ``dispatch.input_grad``).
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
    PLANE_CHANNELS_LAST_TILES,
    PLANE_INTERPRETER_TILE,
    PLANE_TILES,
    TARGET_PROGRAMS,
    KernelConfig,
)
from ..tuning.key import bucket_channels, layout_of
from ..tuning.kinds import KernelKind
from ..tuning.select import select_config
from . import arguments
from .common import Launch, accumulator_dtype, dot_operand, dot_precision
from .epilogue import PLAIN, Epilogue, finish_output
from .non_finite import new_flag, not_finite

# The most pixels (a power of two) a plane the kernel takes may hold, input and output alike:
# one 64 x 64 T per channel, one reduction step.
PLANE_MAX_PIXELS = 64


@triton.jit
def plane_forward_kernel(
    a_ptr, frame_ptr, w_ptr, bias_ptr, y_ptr, residual_ptr, z_ptr, flag_ptr,
    N, K, K_G, IMAGE_BLOCKS,
    a_strides, frame_strides, w_strides, y_strides, bias_stride, residual_strides,
    IN_H: tl.constexpr, IN_W: tl.constexpr, IN_PIXELS: tl.constexpr,
    OUT_H: tl.constexpr, OUT_W: tl.constexpr, OUT_PIXELS: tl.constexpr,
    STRIDE_D: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    FRAME_H: tl.constexpr, FRAME_W: tl.constexpr, LAST_OUT_D: tl.constexpr,
    TAPS: tl.constexpr, R: tl.constexpr, S: tl.constexpr, TAPS_PADDED: tl.constexpr,
    TRANSPOSED: tl.constexpr, DENSE_A: tl.constexpr, DENSE_Y: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_PRE_ACTIVATION: tl.constexpr,
    INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """y = activation(a @ T + bias + residual) per channel, for a depthwise convolution (one input
    channel per group) of input planes (IN_PIXELS pixels, rows of IN_W, planes of IN_H rows) into
    output planes (OUT_PIXELS, OUT_W, OUT_H) with steps STRIDE_*, T read from the channels'
    filter frames (``plane_frames``): BLOCK_C channels per program, one batched product (the
    channels its batch) per block of BLOCK_M images.

    Forward (TRANSPOSED false): a is the input x (N, C, D, H, W), y the output (N, K, D_OUT,
    H_OUT, W_OUT), channel k reading x's channel k // K_G. Input gradient (TRANSPOSED): a is dy,
    y is dx, one output channel per group (K_G 1), T read transposed; with a bias and an
    epilogue it is the transposed convolution.

    Args:
        a_ptr, a_strides: the operand read (5 strides, any: channels-last moves vectors of
            channels); DENSE_A: its planes are dense (a pixel's offset is its flat index, which
            the compiler can tell contiguous: the default layout's loads run along the pixels).
        frame_ptr, frame_strides: the filter frames (``plane_frames``), the strides of a channel
            (1) and of a frame pixel: T[j, p] is the channel's frame pixel
            ((jd * FRAME_H + jh) * FRAME_W + jw) + the column offset of p; zeros wherever no tap
            connects j and p, past the planes and past the channels included, so that T is read
            with no mask.
        w_ptr, w_strides: the filter (K, 1, T, R, S), any strides (5): summed for the
            non-finite flag (TAPS taps, TAPS_PADDED its power of two).
        bias_ptr, bias_stride: bias of y's channels; read only if HAS_BIAS.
        y_ptr, y_strides: the result (5 strides, any); DENSE_Y as DENSE_A. residual_ptr,
            residual_strides: added before the activation if HAS_RESIDUAL; z_ptr: the
            pre-activation, y's strides, written if STORE_PRE_ACTIVATION.
        flag_ptr: an int32 set to 1 where an image block's sum or a channel's filter is not finite.
        N: images. K: y's channels. K_G: output channels per group. IMAGE_BLOCKS: cdiv(N, BLOCK_M).
        LAST_OUT_D: the last output plane index an output pixel of the padded block has.
        BLOCK_M: images per product. BLOCK_C: channels per program. BLOCK_N, BLOCK_K: the
            result's and the operand's planes, rounded up to powers of two (at least 16).
        Grid: (cdiv(K, BLOCK_C), splits of the image blocks): program (c, s) takes image blocks
            s, s + splits, ...
    """
    pid_c = tl.program_id(0)
    pid_s = tl.program_id(1)
    splits = tl.num_programs(1)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    if INDEX_64:
        c = c.to(tl.int64)
    mask_c = c < K
    a_cols, mask_k, k_frame, y_cols, r_cols, mask_q, q_frame = plane_columns(
        a_strides, y_strides, residual_strides,
        IN_H, IN_W, IN_PIXELS, OUT_H, OUT_W, OUT_PIXELS, STRIDE_D, STRIDE_H, STRIDE_W,
        FRAME_H, FRAME_W, LAST_OUT_D, TRANSPOSED, DENSE_A, DENSE_Y, BLOCK_N, BLOCK_K,
    )  # fmt: skip
    # T of every channel, (channels, operand plane, result plane), in vectors of channels: the
    # frames' channels are padded to whole blocks, so that T, too, is read with no mask.
    t_pixels = k_frame[:, None] + q_frame[None, :]
    if INDEX_64:
        t_pixels = t_pixels.to(tl.int64)
    t_offs = t_pixels[None, :, :] * frame_strides[1]
    band = tl.load(frame_ptr + c[:, None, None] * frame_strides[0] + t_offs)
    # A weight the frame leaves out (one reaching only the padding) still makes torch's sums NaN.
    w_all = plane_filter(w_ptr, w_strides, c[:, None], mask_c[:, None], TAPS, R, S, TAPS_PADDED)
    filter_check = 0.0 * tl.sum(w_all.to(ACC_DTYPE))
    if HAS_BIAS:
        bias = tl.load(bias_ptr + c * bias_stride, mask=mask_c, other=0.0).to(ACC_DTYPE)
    # Pointers and masks of (images, plane, channels) less the images' offsets.
    a_base = a_ptr + a_cols[None, :, None] + ((c // K_G) * a_strides[1])[None, None, :]
    y_base = y_cols[None, :, None] + (c * y_strides[1])[None, None, :]
    r_base = r_cols[None, :, None] + (c * residual_strides[1])[None, None, :]
    mask_a = mask_k[None, :, None] & mask_c[None, None, :]
    mask_y = mask_q[None, :, None] & mask_c[None, None, :]
    for block in tl.range(pid_s, IMAGE_BLOCKS, splits):
        n = block * BLOCK_M + tl.arange(0, BLOCK_M)
        if INDEX_64:
            n = n.to(tl.int64)
        # (images, operand plane, channels) as loaded, (channels, images, plane) for the product.
        a = tl.load(a_base + n[:, None, None] * a_strides[0], mask=(n < N)[:, None, None] & mask_a, other=0.0)
        acc = tl.dot(dot_operand(tl.permute(a, (2, 0, 1))), dot_operand(band), out_dtype=ACC_DTYPE)
        tl.store(flag_ptr, 1, mask=not_finite(tl.sum(acc) + filter_check))
        if HAS_BIAS:
            acc += bias[:, None, None]
        acc = tl.permute(acc, (1, 2, 0))
        y_offs = n[:, None, None] * y_strides[0] + y_base
        r_offs = n[:, None, None] * residual_strides[0] + r_base
        finish_output(
            acc, y_ptr + y_offs, z_ptr + y_offs, residual_ptr + r_offs, (n < N)[:, None, None] & mask_y,
            ACTIVATION, HAS_RESIDUAL, STORE_PRE_ACTIVATION,
        )  # fmt: skip


@triton.jit
def plane_columns(
    a_strides, y_strides, residual_strides,
    IN_H: tl.constexpr, IN_W: tl.constexpr, IN_PIXELS: tl.constexpr,
    OUT_H: tl.constexpr, OUT_W: tl.constexpr, OUT_PIXELS: tl.constexpr,
    STRIDE_D: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    FRAME_H: tl.constexpr, FRAME_W: tl.constexpr, LAST_OUT_D: tl.constexpr,
    TRANSPOSED: tl.constexpr, DENSE_A: tl.constexpr, DENSE_Y: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """The operand's pixels (the reduction, k: the forward's input pixels, or for the input
    gradient its output pixels) and the result's (the columns, q: the other plane): the operand's
    and the result's (and residual's) offsets within a plane, the masks of the real pixels, and
    the frame pixels whose sum k_frame[k] + q_frame[q] holds T[k, q]."""
    _, _, sa_d, sa_h, sa_w = a_strides
    _, _, sy_d, sy_h, sy_w = y_strides
    _, _, sr_d, sr_h, sr_w = residual_strides
    # The forward's input pixel j (rows of T) and output pixel p (columns), each unravelled once;
    # their frame offsets add up to T's element.
    j = tl.arange(0, BLOCK_N if TRANSPOSED else BLOCK_K)
    p = tl.arange(0, BLOCK_K if TRANSPOSED else BLOCK_N)
    jd, jh, jw = j // (IN_H * IN_W), j // IN_W % IN_H, j % IN_W
    od, oh, ow = p // (OUT_H * OUT_W), p // OUT_W % OUT_H, p % OUT_W
    j_frame = (jd * FRAME_H + jh) * FRAME_W + jw
    p_frame = ((LAST_OUT_D - od) * STRIDE_D * FRAME_H + (OUT_H - 1 - oh) * STRIDE_H) * FRAME_W
    p_frame += (OUT_W - 1 - ow) * STRIDE_W
    if TRANSPOSED:
        k, kd, kh, kw, K_PIXELS, k_frame = p, od, oh, ow, OUT_PIXELS, p_frame
        q, qd, qh, qw, Q_PIXELS, q_frame = j, jd, jh, jw, IN_PIXELS, j_frame
    else:
        k, kd, kh, kw, K_PIXELS, k_frame = j, jd, jh, jw, IN_PIXELS, j_frame
        q, qd, qh, qw, Q_PIXELS, q_frame = p, od, oh, ow, OUT_PIXELS, p_frame
    a_cols = k if DENSE_A else kd * sa_d + kh * sa_h + kw * sa_w
    y_cols = q if DENSE_Y else qd * sy_d + qh * sy_h + qw * sy_w
    r_cols = qd * sr_d + qh * sr_h + qw * sr_w
    return a_cols, k < K_PIXELS, k_frame, y_cols, r_cols, q < Q_PIXELS, q_frame


@triton.jit
def plane_filter(w_ptr, w_strides, channel, real_channel, TAPS: tl.constexpr, R: tl.constexpr, S: tl.constexpr,
                 TAPS_PADDED: tl.constexpr):  # fmt: skip
    """The filters of a column of channels, their taps along the last axis (TAPS_PADDED, zeros
    past TAPS and where ``real_channel`` is false)."""
    sw_k, _, sw_t, sw_r, sw_s = w_strides
    t = tl.arange(0, TAPS_PADDED)
    taps = (t // (R * S)) * sw_t + (t // S % R) * sw_r + (t % S) * sw_s
    return tl.load(w_ptr + channel * sw_k + taps, mask=(t < TAPS) & real_channel, other=0.0)


def plane_pixels(size: tuple[int, int, int]) -> int:
    """A plane's pixels rounded up to a power of two, at least a dot's 16."""
    return max(16, 1 << (math.prod(size) - 1).bit_length())


def plane_gemm(spec: ConvSpec, transposed: bool) -> tuple[int, int, int]:
    """(images, result plane, operand plane): the product's (M, N, K) for every channel."""
    planes = (spec.input_size, spec.output_size)
    operand, result = reversed(planes) if transposed else planes
    return spec.batch, math.prod(result), math.prod(operand)


def plane_key_fields(spec: ConvSpec) -> tuple[str, ...]:
    """The channels (whose blocks are the grid's first axis) and both planes' padded pixels."""
    return (
        f"c{bucket_channels(spec.out_channels)}",
        f"i{plane_pixels(spec.input_size)}",
        f"o{plane_pixels(spec.output_size)}",
    )


def fit_channel_block(spec: ConvSpec, tile: KernelConfig) -> KernelConfig:
    """A plane tile (images x channels) clipped to the problem: the images to the batch (at least
    a dot's 16 rows), the channels to the convolution's."""
    images = min(tile.block_m, max(MIN_DOT, triton.next_power_of_2(spec.batch)))
    channels = min(tile.block_n, triton.next_power_of_2(max(spec.in_channels, spec.out_channels)))
    return replace(tile, block_m=images, block_n=channels)


def plane_kind(transposed: bool, channels_last: bool) -> KernelKind:
    """The plane kernel as tuning sees it: per channel, images by output plane over the input
    plane, or with ``transposed`` (the input gradient, reading dy) the other way round; its tiles
    are images x channels per program, chosen for the operand's layout (``channels_last``; the
    key records the layout too). Launches with a fused residual or pre-activation are not timed."""

    def plan(spec, x, w, b, y, tile):
        if transposed:
            return plan_plane(y, w, None, spec, torch.empty_like(x), new_flag(x.device), transposed=True, tile=tile)
        return plan_plane(x, w, b, spec, y, new_flag(x.device), tile=tile)

    return KernelKind(
        name="plane_input_grad" if transposed else "plane_forward",
        pass_="D" if transposed else "F",
        tiles=PLANE_CHANNELS_LAST_TILES if channels_last else PLANE_TILES,
        interpreter_tile=PLANE_INTERPRETER_TILE,
        gemm_extents=lambda spec: plane_gemm(spec, transposed),
        dense_gemm=lambda spec: (spec.input_pixels if transposed else spec.output_pixels, 1, spec.taps),
        key_pixels=lambda spec: spec.batch,
        key_layout=lambda input, output: layout_of(output if transposed else input),
        plan=plan,
        key_fields=plane_key_fields,
        gemm_blocks=False,
        fit=fit_channel_block,
    )


PLANE_FORWARD = plane_kind(transposed=False, channels_last=False)
PLANE_INPUT_GRAD = plane_kind(transposed=True, channels_last=False)
PLANE_CHANNELS_LAST_FORWARD = plane_kind(transposed=False, channels_last=True)
PLANE_CHANNELS_LAST_INPUT_GRAD = plane_kind(transposed=True, channels_last=True)


def plane_kind_of(operand: torch.Tensor, transposed: bool) -> KernelKind:
    """The kind of a launch reading ``operand`` (x, or with ``transposed`` dy), by its layout."""
    if layout_of(operand) == "cl":
        return PLANE_CHANNELS_LAST_INPUT_GRAD if transposed else PLANE_CHANNELS_LAST_FORWARD
    return PLANE_INPUT_GRAD if transposed else PLANE_FORWARD


def plan_plane(
    operand: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    flag: torch.Tensor,
    epilogue: Epilogue = PLAIN,
    transposed: bool = False,
    tile: KernelConfig | None = None,
) -> Launch:
    """The launch writing activation(conv(operand, weight) + bias + residual) into ``out`` for a
    depthwise ``spec`` whose planes fit (``dispatch.uses_plane_kernel``), setting ``flag`` where a
    result is not finite; with ``transposed``, ``operand`` is dy and ``out`` dx (the input
    gradient, or with a bias the transposed convolution). ``tile`` overrides the one
    ``select_config`` picks (the heuristic's unless tuned; always with a residual or a stored
    pre-activation)."""
    a, y = as_3d(operand), as_3d(out)
    kind = plane_kind_of(a, transposed)
    if tile is None:
        heuristic = kind.heuristic(spec, a.dtype, dot_precision(a))
        fused = epilogue.residual is not None or epilogue.pre_activation is not None
        tile = heuristic if fused else select_config(
            kind, spec, a.dtype, dot_precision(a), layout_of(operand),
            lambda t: plan_plane(operand, weight, bias, spec, out, flag, epilogue, transposed, t),
            heuristic, a.device,
        )  # fmt: skip
    _, result_pixels, operand_pixels = plane_gemm(spec, transposed)
    blocks = dict(BLOCK_M=tile.block_m, BLOCK_C=tile.block_n)
    blocks |= dict(BLOCK_N=plane_pixels((result_pixels,)), BLOCK_K=plane_pixels((operand_pixels,)))
    block_in, block_out = (
        (blocks["BLOCK_N"], blocks["BLOCK_K"]) if transposed else (blocks["BLOCK_K"], blocks["BLOCK_N"])
    )
    frames, frame = plane_frames(weight, spec, block_in, block_out, tile.block_n)
    image_blocks = triton.cdiv(spec.batch, tile.block_m)
    channels = y.shape[1]
    channel_blocks = triton.cdiv(channels, tile.block_n)
    splits = min(image_blocks, max(1, TARGET_PROGRAMS // channel_blocks))
    w = as_3d(weight)
    args = arguments.tensors(a=a, w=w) | arguments.output("y", y, bias, epilogue) | arguments.flag(flag, y)
    args |= dict(frame_ptr=frames, frame_strides=frames.stride())
    args |= dict(N=spec.batch, K=channels, K_G=spec.out_channels_per_group, IMAGE_BLOCKS=image_blocks)
    (_, in_h, in_w), (_, out_h, out_w) = spec.input_size, spec.output_size
    constexprs = dict(IN_H=in_h, IN_W=in_w, IN_PIXELS=math.prod(spec.input_size), OUT_H=out_h, OUT_W=out_w)
    constexprs |= dict(OUT_PIXELS=math.prod(spec.output_size), FRAME_H=frame.size[1], FRAME_W=frame.size[2])
    constexprs |= {f"STRIDE_{axis}": step for axis, step in zip("DHW", spec.stride)}
    constexprs |= dict(LAST_OUT_D=frame.last_outputs[0], TAPS=spec.taps, R=spec.kernel_size[1], S=spec.kernel_size[2])
    constexprs |= dict(TAPS_PADDED=triton.next_power_of_2(spec.taps), TRANSPOSED=transposed)
    constexprs |= dict(DENSE_A=dense_planes(a), DENSE_Y=dense_planes(y))
    constexprs |= arguments.output_flags(bias, epilogue)
    constexprs |= dict(
        INDEX_64=needs_int64(a, frames, w, y, args["residual_ptr"]), ACC_DTYPE=accumulator_dtype(a.dtype)
    )
    constexprs |= blocks
    return Launch(plane_forward_kernel, (channel_blocks, splits), args, constexprs, tile.num_warps, tile.num_stages)


def dense_planes(t: torch.Tensor) -> bool:
    """Whether each (D, H, W) plane of the (N, C, D, H, W) ``t`` is dense, W fastest."""
    expected = 1
    for axis in (4, 3, 2):
        if t.shape[axis] > 1 and t.stride(axis) != expected:
            return False
        expected *= t.shape[axis]
    return True


@dataclass(frozen=True)
class PlaneFrame:
    """Where the kernel reads T: along each dimension (D, H, W), input coordinate i reaches output
    coordinate o through frame position i + (last_o - o) * step, last_o the last output
    coordinate of the padded blocks (``last_outputs``: along D the plane of the block's last
    pixel, which may lie past the output; the output size - 1 along H and W, whose coordinates
    wrap). ``size`` is the frame's extent along
    each dimension."""

    size: tuple[int, int, int]
    last_outputs: tuple[int, int, int]

    @staticmethod
    def of(spec: ConvSpec, block_in: int, block_out: int) -> PlaneFrame:
        # Pixels of a padded block past the plane unravel to planes past D.
        planes_in = max(spec.input_size[0], -(-block_in // math.prod(spec.input_size[1:])))
        planes_out = max(spec.output_size[0], -(-block_out // math.prod(spec.output_size[1:])))
        inputs = (planes_in, *spec.input_size[1:])
        last_outputs = (planes_out - 1, *(size - 1 for size in spec.output_size[1:]))
        size = tuple(i + last * step for i, last, step in zip(inputs, last_outputs, spec.stride))
        return PlaneFrame(size, last_outputs)  # type: ignore[arg-type]


def plane_frames(
    weight: torch.Tensor, spec: ConvSpec, block_in: int, block_out: int, channel_block: int
) -> tuple[torch.Tensor, PlaneFrame]:
    """Each channel's filter frame for padded blocks of ``block_in`` input and ``block_out``
    output pixels, as a (channels, frame pixels) view of a tensor whose channels are contiguous
    (the kernel reads T as vectors of channels), padded with zero filters to a multiple of
    ``channel_block`` and of 16 (a frame pixel's stride then divides by 16, which Triton needs to
    see to load whole vectors); and the frames' geometry: tap k of a dimension sits at frame position
    k * dilation - padding + last_o * step (``PlaneFrame``), where the input coordinate
    k * dilation - padding + o * step reaches output coordinate o; everything else is zero. Two
    small launches per call, like the band matrices (a cached tensor would belong to the CUDA
    graph it was first made in)."""
    frame = PlaneFrame.of(spec, block_in, block_out)
    w = as_3d(weight)[:, 0]
    whole = max(channel_block, 16)
    channels = triton.cdiv(w.shape[0], whole) * whole
    frames = w.new_zeros((*frame.size, channels)).permute(3, 0, 1, 2)
    frame_slices, filter_slices = [], []
    for size, taps, dil, pad, last, step in zip(
        frame.size, spec.kernel_size, spec.dilation, spec.pad_lo, frame.last_outputs, spec.stride
    ):
        first = last * step - pad  # frame position of tap 0
        k0 = max(0, -(first // dil))  # the first tap at a position >= 0
        k1 = min(taps, (size - 1 - first) // dil + 1) if size - 1 >= first else 0
        if k1 <= k0:  # no tap of this dimension reaches the planes
            break
        frame_slices.append(slice(first + k0 * dil, first + (k1 - 1) * dil + 1, dil))
        filter_slices.append(slice(k0, k1))
    else:
        frames[(slice(None, w.shape[0]), *frame_slices)] = w[(slice(None), *filter_slices)]
    return frames.permute(1, 2, 3, 0).flatten(0, 2).t(), frame


def plane_forward(
    operand: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    epilogue: Epilogue = PLAIN,
    transposed: bool = False,
) -> torch.Tensor:
    """Write ``plan_plane``'s result into ``out`` and return its non-finite flag, behind which the
    direct kernel must compute the result again (``dispatch.forward``, ``dispatch.input_grad``)."""
    flag = new_flag(operand.device)
    plan_plane(operand, weight, bias, spec, out, flag, epilogue, transposed)()
    return flag
