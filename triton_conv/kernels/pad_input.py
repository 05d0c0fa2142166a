"""Zero-padded copies that let kernels read aligned vectors.

``pad_input``: a channels-last copy of a convolution's input, for weight gradients of few channels.

With 3 input channels and spatial padding, the weight-gradient GEMM gathers every x element
on its own: an address, a bounds test and a 2-byte load per element, each element read about
taps / stride^2 times. Over a copy with the channels zero-filled to a multiple of 4 and the
padding written out, the same kernel reads aligned vectors of 4 channels, runs of S x 4 along W,
with no bounds test. The copy reads x once and writes the padded copy once (one kernel).

``widen_rows``: a copy whose rows along W are zero-filled to a multiple of a vector, for the band
kernels (``kernels/banded.py``), whose loads along W are whole vectors only where every row
starts at a multiple of one.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import triton
import triton.language as tl

from ..spec import ConvSpec, as_3d, needs_int64
from . import arguments
from .common import Launch
from .indexing import program_ids

# Elements per program of the padded copy, as the other elementwise kernels have: a program
# spans several rows (and images) where they are short, as a small first layer's are.
PAD_BLOCK_ELEMENTS = 1024


@triton.jit
def pad_input_kernel(
    x_ptr, out_ptr, C, input_size, padded_size, padding, x_strides, padded_rows,
    INDEX_64: tl.constexpr, CHANNELS: tl.constexpr, BLOCK_ROWS: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    """BLOCK_W pixels of BLOCK_ROWS padded rows (across images):
    out[n, d, h, w, c] = x[n, c, d - pad_d, h - pad_h, w - pad_w], zero outside x and for c >= C.
    A thread writes whole pixels (CHANNELS contiguous elements).

    Args:
        x_ptr, x_strides: input (N, C, D, H, W), any strides (5, in elements).
        out_ptr: (N, D_PAD, H_PAD, W_PAD, CHANNELS) contiguous.
        C: x's channels (at most CHANNELS). input_size: (D, H, W). padded_size: (D_PAD, H_PAD,
            W_PAD), the padded copy's. padding: the leading padding (D, H, W) written out.
        padded_rows: N * D_PAD * H_PAD.
        INDEX_64: compute offsets in int64. CHANNELS: the copy's channels (a power of two).
        BLOCK_ROWS, BLOCK_W: rows and pixels per row per program.
        Grid: (cdiv(padded_rows, BLOCK_ROWS), cdiv(W_PAD, BLOCK_W)).
    """
    D, H, W = input_size
    D_PAD, H_PAD, W_PAD = padded_size
    pad_d, pad_h, pad_w = padding
    sx_n, sx_c, sx_d, sx_h, sx_w = x_strides
    pid_rows, pid_w, _ = program_ids(INDEX_64)
    # The division by the padded sizes is per row, not per pixel.
    row = pid_rows * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    h = row % H_PAD - pad_h
    d = row // H_PAD % D_PAD - pad_d
    n = row // (H_PAD * D_PAD)
    # A row outside x reads nothing: no column is below an end of 0.
    w_end = tl.where((d >= 0) & (d < D) & (h >= 0) & (h < H) & (row < padded_rows), W, 0)
    w_out = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
    w = w_out - pad_w
    c = tl.arange(0, CHANNELS)
    inside = ((w[None, :] >= 0) & (w[None, :] < w_end[:, None]))[:, :, None] & (c < C)[None, None, :]
    x_rows = n * sx_n + d * sx_d + h * sx_h
    x_offs = (x_rows[:, None] + (w * sx_w)[None, :])[:, :, None] + (c * sx_c)[None, None, :]
    values = tl.load(x_ptr + x_offs, mask=inside, other=0.0)
    out_pixels = row[:, None] * W_PAD + w_out[None, :]
    out_offs = (out_pixels * CHANNELS)[:, :, None] + c[None, None, :]
    written = (row < padded_rows)[:, None] & (w_out < W_PAD)[None, :]
    tl.store(out_ptr + out_offs, values, mask=written[:, :, None])


def padded_spec(spec: ConvSpec, channels: int) -> ConvSpec:
    """The geometry of ``spec`` over ``pad_input``'s copy with ``channels`` channels."""
    return replace(spec.with_padded_input(), in_channels=channels)


def pad_input(input: torch.Tensor, spec: ConvSpec, channels: int) -> tuple[torch.Tensor, ConvSpec]:
    """``input`` copied channels-last with its channels zero-filled to ``channels`` (a power of two)
    and its padding written out (``ConvSpec.with_padded_input``), and the geometry of the same
    convolution over the copy; one group."""
    padded = padded_spec(spec, channels)
    d_pad, h_pad, w_pad = padded.input_size
    out = input.new_empty((spec.batch, *padded.spatial(padded.input_size), channels))
    x = as_3d(input)
    padded_rows = spec.batch * d_pad * h_pad
    block_w = min(PAD_BLOCK_ELEMENTS // channels, triton.next_power_of_2(w_pad))
    block_rows = max(1, PAD_BLOCK_ELEMENTS // (block_w * channels))
    Launch(
        pad_input_kernel,
        (triton.cdiv(padded_rows, block_rows), triton.cdiv(w_pad, block_w)),
        dict(
            **arguments.tensors(x=x),
            out_ptr=out,
            C=spec.in_channels,
            input_size=spec.input_size,
            padded_size=padded.input_size,
            padding=spec.pad_lo,
            padded_rows=padded_rows,
        ),
        {"INDEX_64": needs_int64(x, out), "CHANNELS": channels, "BLOCK_ROWS": block_rows, "BLOCK_W": block_w},
        num_warps=4,
    )()
    return out.movedim(-1, 1), padded


@triton.jit
def widen_rows_kernel(
    x_ptr, out_ptr, sizes, W, W_WIDE, x_strides,
    INDEX_64: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    """out[n, c, d, h, w] = x[n, c, d, h, w] for w < W, zero for W <= w < W_WIDE: a (channels x
    columns) tile of one (n, d, h) per program, so that it reads along whichever of C and W is
    contiguous in x (the default layout or channels-last) and writes along W.

    Args:
        x_ptr, x_strides: (N, C, D, H, W), any strides (5, in elements).
        out_ptr: (N, C, D, H, W_WIDE) contiguous.
        sizes: (C, D, H). W, W_WIDE: the widths of x's rows and out's.
        INDEX_64: compute offsets in int64. BLOCK_C, BLOCK_W: channels and columns per program.
        Grid: (N * D * H, cdiv(C, BLOCK_C), cdiv(W_WIDE, BLOCK_W)).
    """
    line, pid_c, pid_w = program_ids(INDEX_64)
    C, D, H = sizes
    sx_n, sx_c, sx_d, sx_h, sx_w = x_strides
    h = line % H
    d = line // H % D
    n = line // (H * D)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    w = pid_w * BLOCK_W + tl.arange(0, BLOCK_W)
    x_offs = (n * sx_n + d * sx_d + h * sx_h + c * sx_c)[:, None] + (w * sx_w)[None, :]
    mask_c = (c < C)[:, None]
    values = tl.load(x_ptr + x_offs, mask=mask_c & (w < W)[None, :], other=0.0)
    out_offs = (((n * C + c) * D + d) * H + h)[:, None] * W_WIDE + w[None, :]
    tl.store(out_ptr + out_offs, values, mask=mask_c & (w < W_WIDE)[None, :])


def widen_rows(t: torch.Tensor, multiple: int) -> torch.Tensor:
    """The (N, C, D, H, W) ``t`` copied contiguous with each row zero-filled to a multiple of
    ``multiple`` elements, so that every row starts at a multiple of it (one kernel)."""
    n, c, d, h, w = t.shape
    wide = -(-w // multiple) * multiple
    out = t.new_empty((n, c, d, h, wide))
    block_w = min(64, triton.next_power_of_2(wide))
    block_c = min(64, triton.next_power_of_2(c))
    if out.numel():
        Launch(
            widen_rows_kernel,
            (n * d * h, triton.cdiv(c, block_c), triton.cdiv(wide, block_w)),
            dict(**arguments.tensors(x=t), out_ptr=out, sizes=(c, d, h), W=w, W_WIDE=wide),
            {"INDEX_64": needs_int64(t, out), "BLOCK_C": block_c, "BLOCK_W": block_w},
            num_warps=4,
        )()
    return out
