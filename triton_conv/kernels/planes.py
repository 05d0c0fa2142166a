"""Depthwise convolution of small planes on the matrix unit: a channel's whole plane as one product.

Where a channel's input and output planes each hold at most PLANE_MAX_PIXELS pixels (a 7x7
feature map, a short sequence), the convolution of one channel over a block of images is

    y[n, p] = sum over j of x[n, j] * T[j, p],
    T[j, p] = w[tap] where input pixel j reaches output pixel p through tap, zero elsewhere,

one ``tl.dot``: the images its rows, the input plane its reduction, the output plane its
columns, pixels flattened (W fastest). Steps, dilation and padding are all in T. The kernel reads
it, once per program, from the channel's filter frame (``plane_frames``): the filter placed in a
block of zeros such that T[j, p] is the frame's element at a row offset of j plus a column offset
of p, for every pair of the padded blocks, so T's loads take no mask and no per-element tests.

Why: the band kernels multiply along W in segments of 16 columns and more, so rows of 7 (a 7x7
map) leave most of a segment empty, and the direct kernels spend several instructions per
multiply-add on CUDA cores. Here a 7x7 map with a 7x7 filter pads the 49 pixels to 64: the
matrix unit computes 64 x 64 products per image where 1369 are useful (3x), and the plane's
loads and stores run along its contiguous pixels.

The input gradient is the same product against T transposed (``TRANSPOSED``), for any steps:
dx[n, j] = sum over p of dy[n, p] * T[j, p]. Non-finite values: T's zeros multiply every pixel
of the plane (IEEE 0 * inf is NaN), and a weight no output reads through a real pixel is not in T
at all (torch multiplies it by the padding's zeros), so the kernel sets a flag where the sum of
an image block's outputs or of the channel's filter is not finite, and the direct kernel, gated
on the flag, computes the output again (``dispatch.forward``, ``dispatch.input_grad``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ..spec import ConvSpec, as_3d, needs_int64
from ..tuning.configs import PLANE_INTERPRETER_TILE, PLANE_TILES, TARGET_PROGRAMS, KernelConfig
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
    N, K_G, IMAGE_BLOCKS,
    a_strides, frame_stride, w_strides, y_strides, bias_stride, residual_strides,
    IN_H: tl.constexpr, IN_W: tl.constexpr, IN_PIXELS: tl.constexpr,
    OUT_H: tl.constexpr, OUT_W: tl.constexpr, OUT_PIXELS: tl.constexpr,
    STRIDE_D: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
    FRAME_H: tl.constexpr, FRAME_W: tl.constexpr, LAST_OUT_D: tl.constexpr,
    TAPS: tl.constexpr, R: tl.constexpr, S: tl.constexpr, TAPS_PADDED: tl.constexpr,
    TRANSPOSED: tl.constexpr, DENSE_A: tl.constexpr, DENSE_Y: tl.constexpr, PREFETCH: tl.constexpr,
    HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, HAS_RESIDUAL: tl.constexpr, STORE_PRE_ACTIVATION: tl.constexpr,
    INDEX_64: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """y = activation(a @ T + bias + residual) per channel, for a depthwise convolution (one input
    channel per group) of input planes (IN_PIXELS pixels, rows of IN_W, planes of IN_H rows) into
    output planes (OUT_PIXELS, OUT_W, OUT_H) with steps STRIDE_*, T read from the channel's
    filter frame (``plane_frames``).

    Forward (TRANSPOSED false): a is the input x (N, C, D, H, W), y the output (N, K, D_OUT,
    H_OUT, W_OUT), channel k reading x's channel k // K_G. Input gradient (TRANSPOSED): a is dy,
    y is dx, one output channel per group (K_G 1), T read transposed; with a bias and an
    epilogue it is the transposed convolution.

    Args:
        a_ptr, a_strides: the operand read (5 strides, any); DENSE_A: its planes are dense
            (a pixel's offset is its flat index), which lets the compiler address a thread's
            neighbouring pixels from one register.
        frame_ptr, frame_stride: each channel's filter frame, (K, frame pixels), the second
            stride 1: T[j, p] is element ((jd * FRAME_H + jh) * FRAME_W + jw) + the column
            offset of p (``plane_frames``); zeros wherever no tap connects j and p, past the
            planes included, so that T is read with no mask.
        w_ptr, w_strides: the filter (K, 1, T, R, S), any strides (5): summed for the
            non-finite flag (TAPS taps, TAPS_PADDED its power of two).
        bias_ptr, bias_stride: bias of y's channels; read only if HAS_BIAS.
        y_ptr, y_strides: the result (5 strides, any); DENSE_Y as DENSE_A. residual_ptr,
            residual_strides: added before the activation if HAS_RESIDUAL; z_ptr: the
            pre-activation, y's strides, written if STORE_PRE_ACTIVATION.
        flag_ptr: an int32 set to 1 where an image block's sum or the channel's filter is not finite.
        N: images. K_G: output channels per group. IMAGE_BLOCKS: cdiv(N, BLOCK_M). PREFETCH:
            a program takes several image blocks.
        LAST_OUT_D: the last output plane index an output pixel of the padded block has.
        BLOCK_M: images per product. BLOCK_N, BLOCK_K: the result's and the operand's planes,
            rounded up to powers of two (at least 16).
        Grid: (channels of y, splits of the image blocks): program (c, s) takes image blocks s,
            s + splits, ...
    """
    pid_c = tl.program_id(0)
    pid_s = tl.program_id(1)
    splits = tl.num_programs(1)
    if INDEX_64:
        pid_c = pid_c.to(tl.int64)
    sa_n, sa_c, sa_d, sa_h, sa_w = a_strides
    sw_k, _, sw_t, sw_r, sw_s = w_strides
    sy_n, sy_c, sy_d, sy_h, sy_w = y_strides
    sr_n, sr_c, sr_d, sr_h, sr_w = residual_strides
    # The forward's input pixel j (rows of T) and output pixel p (columns), each unravelled once;
    # their frame offsets add up to T's element.
    j = tl.arange(0, BLOCK_N if TRANSPOSED else BLOCK_K)
    p = tl.arange(0, BLOCK_K if TRANSPOSED else BLOCK_N)
    jd, jh, jw = j // (IN_H * IN_W), j // IN_W % IN_H, j % IN_W
    od, oh, ow = p // (OUT_H * OUT_W), p // OUT_W % OUT_H, p % OUT_W
    j_frame = (jd * FRAME_H + jh) * FRAME_W + jw
    p_frame = ((LAST_OUT_D - od) * STRIDE_D * FRAME_H + (OUT_H - 1 - oh) * STRIDE_H) * FRAME_W
    p_frame += (OUT_W - 1 - ow) * STRIDE_W
    # The operand's pixels (the reduction, k) and the result's (the columns, q): the forward's
    # input and output pixels, or for the input gradient the other way round.
    if TRANSPOSED:
        k, kd, kh, kw, K_PIXELS = p, od, oh, ow, OUT_PIXELS
        q, qd, qh, qw, Q_PIXELS = j, jd, jh, jw, IN_PIXELS
        frame_offs = p_frame[:, None] + j_frame[None, :]
    else:
        k, kd, kh, kw, K_PIXELS = j, jd, jh, jw, IN_PIXELS
        q, qd, qh, qw, Q_PIXELS = p, od, oh, ow, OUT_PIXELS
        frame_offs = j_frame[:, None] + p_frame[None, :]
    a_cols = k if DENSE_A else kd * sa_d + kh * sa_h + kw * sa_w
    mask_k = k < K_PIXELS
    y_cols = q if DENSE_Y else qd * sy_d + qh * sy_h + qw * sy_w
    r_cols = qd * sr_d + qh * sr_h + qw * sr_w
    mask_n = q < Q_PIXELS
    band = tl.load(frame_ptr + pid_c * frame_stride + frame_offs)
    # A weight the frame leaves out (one reaching only the padding) still makes torch's sums NaN.
    t = tl.arange(0, TAPS_PADDED)
    w_all = tl.load(
        w_ptr + pid_c * sw_k + (t // (R * S)) * sw_t + (t // S % R) * sw_r + (t % S) * sw_s, mask=t < TAPS, other=0.0
    )
    filter_check = 0.0 * tl.sum(w_all.to(ACC_DTYPE))
    a_channel = pid_c // K_G
    if HAS_BIAS:
        bias = tl.load(bias_ptr + pid_c * bias_stride).to(ACC_DTYPE)
    a_base = a_ptr + a_channel * sa_c + a_cols[None, :]
    # The loop prefetches the next block's operand into registers itself where a program takes
    # several (PREFETCH): Triton's pipeliner copies 4 bytes and more, and a plane's pixels are 2.
    if PREFETCH:
        a = plane_operand(a_base, pid_s, N, sa_n, mask_k, INDEX_64, BLOCK_M)
    for block in tl.range(pid_s, IMAGE_BLOCKS, splits):
        if PREFETCH:
            next_a = plane_operand(a_base, block + splits, N, sa_n, mask_k, INDEX_64, BLOCK_M)
        else:
            a = plane_operand(a_base, block, N, sa_n, mask_k, INDEX_64, BLOCK_M)
        acc = tl.dot(dot_operand(a), dot_operand(band), out_dtype=ACC_DTYPE)
        if PREFETCH:
            a = next_a
        n = block * BLOCK_M + tl.arange(0, BLOCK_M)
        if INDEX_64:
            n = n.to(tl.int64)
        mask_m = n < N
        tl.store(flag_ptr, 1, mask=not_finite(tl.sum(acc) + filter_check))
        if HAS_BIAS:
            acc += bias
        y_offs = n[:, None] * sy_n + pid_c * sy_c + y_cols[None, :]
        r_offs = n[:, None] * sr_n + pid_c * sr_c + r_cols[None, :]
        finish_output(
            acc, y_ptr + y_offs, z_ptr + y_offs, residual_ptr + r_offs, mask_m[:, None] & mask_n[None, :],
            ACTIVATION, HAS_RESIDUAL, STORE_PRE_ACTIVATION,
        )  # fmt: skip


@triton.jit
def plane_operand(a_base, block, N, sa_n, mask_k, INDEX_64: tl.constexpr, BLOCK_M: tl.constexpr):
    """Image block ``block``'s operand: (BLOCK_M images, the operand's plane), zeros past N and
    past the plane (``mask_k``)."""
    n = block * BLOCK_M + tl.arange(0, BLOCK_M)
    if INDEX_64:
        n = n.to(tl.int64)
    return tl.load(a_base + n[:, None] * sa_n, mask=(n < N)[:, None] & mask_k[None, :], other=0.0)


def plane_pixels(size: tuple[int, int, int]) -> int:
    """A plane's pixels rounded up to a power of two, at least a dot's 16."""
    return max(16, 1 << (math.prod(size) - 1).bit_length())


def plane_gemm(spec: ConvSpec, transposed: bool) -> tuple[int, int, int]:
    """(images, result plane, operand plane): the product's (M, N, K) for every channel."""
    planes = (spec.input_size, spec.output_size)
    operand, result = reversed(planes) if transposed else planes
    return spec.batch, math.prod(result), math.prod(operand)


def plane_key_fields(spec: ConvSpec) -> tuple[str, ...]:
    """The channels (the grid's first axis) and both planes' padded pixels."""
    return (
        f"c{bucket_channels(spec.out_channels)}",
        f"i{plane_pixels(spec.input_size)}",
        f"o{plane_pixels(spec.output_size)}",
    )


def plane_kind(transposed: bool) -> KernelKind:
    """The plane kernel as tuning sees it: per channel, images by output plane over the input
    plane, or with ``transposed`` (the input gradient, reading dy) the other way round. Launches
    with a fused residual or pre-activation are not timed."""

    def plan(spec, x, w, b, y, tile):
        if transposed:
            return plan_plane(y, w, None, spec, torch.empty_like(x), new_flag(x.device), transposed=True, tile=tile)
        return plan_plane(x, w, b, spec, y, new_flag(x.device), tile=tile)

    return KernelKind(
        name="plane_input_grad" if transposed else "plane_forward",
        pass_="D" if transposed else "F",
        tiles=PLANE_TILES,
        interpreter_tile=PLANE_INTERPRETER_TILE,
        gemm_extents=lambda spec: plane_gemm(spec, transposed),
        dense_gemm=lambda spec: (spec.input_pixels if transposed else spec.output_pixels, 1, spec.taps),
        key_pixels=lambda spec: spec.batch,
        key_layout=lambda input, output: layout_of(output if transposed else input),
        plan=plan,
        key_fields=plane_key_fields,
    )


PLANE_FORWARD = plane_kind(transposed=False)
PLANE_INPUT_GRAD = plane_kind(transposed=True)


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
    kind = PLANE_INPUT_GRAD if transposed else PLANE_FORWARD
    if tile is None:
        heuristic = kind.heuristic(spec, a.dtype, dot_precision(a))
        fused = epilogue.residual is not None or epilogue.pre_activation is not None
        tile = heuristic if fused else select_config(
            kind, spec, a.dtype, dot_precision(a), layout_of(operand),
            lambda t: plan_plane(operand, weight, bias, spec, out, flag, epilogue, transposed, t),
            heuristic, a.device,
        )  # fmt: skip
    block_in, block_out = (tile.block_n, tile.block_k) if transposed else (tile.block_k, tile.block_n)
    frames, frame = plane_frames(weight, spec, block_in, block_out)
    image_blocks = triton.cdiv(spec.batch, tile.block_m)
    channels = y.shape[1]
    splits = min(image_blocks, max(1, TARGET_PROGRAMS // channels))
    w = as_3d(weight)
    args = arguments.tensors(a=a, w=w) | arguments.output("y", y, bias, epilogue) | arguments.flag(flag, y)
    args |= dict(frame_ptr=frames, frame_stride=frames.stride(0))
    args |= dict(N=spec.batch, K_G=spec.out_channels_per_group, IMAGE_BLOCKS=image_blocks)
    (_, in_h, in_w), (_, out_h, out_w) = spec.input_size, spec.output_size
    constexprs = dict(IN_H=in_h, IN_W=in_w, IN_PIXELS=math.prod(spec.input_size), OUT_H=out_h, OUT_W=out_w)
    constexprs |= dict(OUT_PIXELS=math.prod(spec.output_size), FRAME_H=frame.size[1], FRAME_W=frame.size[2])
    constexprs |= {f"STRIDE_{axis}": step for axis, step in zip("DHW", spec.stride)}
    constexprs |= dict(LAST_OUT_D=frame.last_outputs[0], TAPS=spec.taps, R=spec.kernel_size[1], S=spec.kernel_size[2])
    constexprs |= dict(TAPS_PADDED=triton.next_power_of_2(spec.taps), TRANSPOSED=transposed)
    constexprs |= dict(DENSE_A=dense_planes(a), DENSE_Y=dense_planes(y), PREFETCH=image_blocks > splits)
    constexprs |= arguments.output_flags(bias, epilogue)
    constexprs |= dict(
        INDEX_64=needs_int64(a, frames, w, y, args["residual_ptr"]), ACC_DTYPE=accumulator_dtype(a.dtype)
    )
    constexprs |= tile.blocks()
    return Launch(plane_forward_kernel, (channels, splits), args, constexprs, tile.num_warps, tile.num_stages)


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
    weight: torch.Tensor, spec: ConvSpec, block_in: int, block_out: int
) -> tuple[torch.Tensor, PlaneFrame]:
    """Each channel's filter frame, (K, frame pixels) dense, for padded blocks of ``block_in``
    input and ``block_out`` output pixels, and its geometry: tap k of a dimension sits at frame
    position k * dilation - padding + last_o * step (``PlaneFrame``), where the input coordinate
    k * dilation - padding + o * step reaches output coordinate o; everything else is zero. Two
    small launches per call, like the band matrices (a cached tensor would belong to the CUDA
    graph it was first made in)."""
    frame = PlaneFrame.of(spec, block_in, block_out)
    w = as_3d(weight)[:, 0]
    frames = w.new_zeros((w.shape[0], *frame.size))
    frame_slices, filter_slices = [], []
    for size, taps, dil, pad, last, step in zip(
        frame.size, spec.kernel_size, spec.dilation, spec.pad_lo, frame.last_outputs, spec.stride
    ):
        first = last * step - pad  # frame position of tap 0
        k0 = max(0, -(first // dil))  # the first tap at a position >= 0
        k1 = min(taps, (size - 1 - first) // dil + 1) if size - 1 >= first else 0
        if k1 <= k0:  # no tap of this dimension reaches the planes
            return frames.flatten(1), frame
        frame_slices.append(slice(first + k0 * dil, first + (k1 - 1) * dil + 1, dil))
        filter_slices.append(slice(k0, k1))
    frames[(slice(None), *frame_slices)] = w[(slice(None), *filter_slices)]
    return frames.flatten(1), frame


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
