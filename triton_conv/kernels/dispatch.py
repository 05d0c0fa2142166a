"""Which algorithm computes a convolution: the one place the rule lives."""

from __future__ import annotations

import math
import os
from dataclasses import replace

import torch

from ..spec import ConvSpec, as_3d
from ..tuning.configs import MIN_DOT
from ..tuning.key import layout_of
from ..tuning.kinds import KernelKind
from .banded import band_bytes, banded_forward, banded_input_grad, banded_weight_grad
from .direct import channels_contiguous, direct_weight_grad, plan_direct_forward, plan_direct_input_grad
from .epilogue import PLAIN, Epilogue
from .implicit_gemm_forward import FORWARD, plan_forward
from .implicit_gemm_forward_tma import input_grad_filter, plan_forward_tma, tma_forward_applies
from .implicit_gemm_input_grad import INPUT_GRAD, plan_input_grad
from .implicit_gemm_weight_grad import WEIGHT_GRAD, implicit_gemm_weight_grad
from .layout import gemm_operand
from .non_finite import new_flag
from .pad_input import pad_input, padded_spec
from .patches import heuristic_partials_shape, patch_forward, patch_products_per_output, patch_weight_grad
from .planes import PLANE_MAX_PIXELS, plane_forward, plane_pixels

# Every tuned GEMM kernel, in pass order: what `triton-conv tune` lists and the static report compiles.
KERNEL_KINDS: tuple[KernelKind, ...] = (FORWARD, INPUT_GRAD, WEIGHT_GRAD)


def uses_direct_kernel(spec: ConvSpec) -> bool:
    """Grouped convolutions with fewer than 16 input channels per group (depthwise included).

    A matrix unit would pad each group's reduction to 16 channels and waste most of its work;
    the direct kernels do exactly the useful multiply-adds. An ungrouped convolution with few
    input channels (a network's first layer) keeps the implicit GEMM: with a single group its
    output channels fill the matrix unit's other dimension, which pays for the padding. (With 4
    or more channels per group in 16-bit dtypes, the passes bundle groups onto the GEMM instead,
    the forward and input gradient with the direct kernels behind them for non-finite data:
    ``group_bundle``.)
    """
    return spec.groups > 1 and spec.in_channels_per_group < MIN_DOT


# The kill switch: TRITON_CONV_BAND_KERNELS=0 sends every depthwise convolution to the direct
# kernels (the default, 1, lets the rules below pick the band kernels). Read at import; tests flip
# the module attribute.
BAND_KERNELS_ENABLED = os.environ.get("TRITON_CONV_BAND_KERNELS", "1") == "1"
# Filter rows at least this wide, of a depthwise convolution in 16-bit floats read along W, run as
# a GEMM against a band matrix (``kernels/banded.py``). A 3-wide row costs the matrix unit about
# 27x the useful products (16-deep steps over the segment's reach and alignment), still less
# issue time than the direct kernels' 4-10 instructions per FMA on CUDA cores in this layout
# (suite shape 12 compiled for sm_90: 42 against 126 us forward, 84 against 147 us weight gradient).
BANDED_MIN_WIDTH = 3
# Output rows narrower than this leave most of the narrowest segment (16 columns) empty: suite
# shape 16's rows of 7 compiled to more issue time than the direct kernel's.
BANDED_MIN_OUTPUT_WIDTH = 8
BANDED_DTYPES = (torch.float16, torch.bfloat16)
# Filter rows at least this wide take the band kernels in channels-last too, whose rows along W
# are strided by C: read through a copy with contiguous rows (``banded.aligned_rows``) and
# stored element by element. Against the direct kernels, whose work grows with the filter, that
# pays for wide filters only.
BANDED_STRIDED_MIN_WIDTH = 15
# The band forward launches one program column per output channel, on the grid's second axis,
# which CUDA caps at 65535.
BANDED_MAX_CHANNELS = 65535


def uses_banded_kernel(input: torch.Tensor, spec: ConvSpec) -> bool:
    """Depthwise (one input channel per group), a unit step along W, a filter row at least
    BANDED_MIN_WIDTH wide, output rows at least BANDED_MIN_OUTPUT_WIDTH, at most
    BANDED_MAX_CHANNELS channels, 16-bit floats, and
    ``input`` contiguous along W (the default layout), or a filter row at least
    BANDED_STRIDED_MIN_WIDTH wide; unless BAND_KERNELS_ENABLED is off."""
    filter_width = spec.kernel_size[2]
    return (
        BAND_KERNELS_ENABLED
        and spec.groups > 1
        and spec.in_channels_per_group == 1
        and spec.stride[2] == 1
        and filter_width >= BANDED_MIN_WIDTH
        and spec.output_size[2] >= BANDED_MIN_OUTPUT_WIDTH
        and spec.out_channels <= BANDED_MAX_CHANNELS
        and input.dtype in BANDED_DTYPES
        and (input.stride(-1) == 1 or filter_width >= BANDED_STRIDED_MIN_WIDTH)
    )


# Filters of at least this many taps, of a depthwise convolution (one input and one output
# channel per group) with unit steps in 16-bit floats over channels-last input, run as GEMMs over
# output patches (``kernels/patches.py``), where the band kernels do not take them (filter rows
# under BANDED_STRIDED_MIN_WIDTH, or rows or bands they do not fit). Compiled for sm_90, suite
# shape 15 (7x7) took 31.2 us issue-bound against the direct kernel's 50.1, 14 (5x5) 26.5 against
# 35.0; a 3x3 filter feeds each input pixel read half the useful products, and the direct
# kernels already meet its memory time.
PATCH_MIN_TAPS = 25
# Products per output the patch kernel may compute (its reduction over the input patch, zeros
# included) per useful one: dilation spreads the taps over a larger input patch (a 7x7 filter
# dilated 3 does 640 products for 49 useful ones), and the band matrices grow with it.
PATCH_MAX_WASTE = 6
# The fewest channels a patch program takes: its grid's second axis, cdiv(C, channels), is capped
# at 65535 like the band kernels'.
PATCH_MIN_CHANNEL_BLOCK = 8


def uses_patch_kernel(input: torch.Tensor, spec: ConvSpec) -> bool:
    """Depthwise with one output channel per group, unit steps, at least PATCH_MIN_TAPS taps, 16-bit
    floats, ``input``'s channels contiguous (channels-last); unless BAND_KERNELS_ENABLED is off."""
    return (
        BAND_KERNELS_ENABLED
        and spec.groups > 1
        and spec.in_channels_per_group == 1
        and spec.out_channels_per_group == 1
        and spec.stride == (1, 1, 1)
        and spec.taps >= PATCH_MIN_TAPS
        and input.dtype in BANDED_DTYPES
        and channels_contiguous(as_3d(input))
        and spec.in_channels <= BANDED_MAX_CHANNELS * PATCH_MIN_CHANNEL_BLOCK
        and patch_products_per_output(spec) <= PATCH_MAX_WASTE * spec.taps
    )


def uses_plane_kernel(input: torch.Tensor, spec: ConvSpec) -> bool:
    """Depthwise (one input channel per group) in 16-bit floats, ``input`` contiguous along W
    (the default layout) or along its channels (channels-last), both planes within
    PLANE_MAX_PIXELS pixels (``kernels/planes.py``): where the band kernels
    do not take it (rows under BANDED_MIN_OUTPUT_WIDTH); unless BAND_KERNELS_ENABLED is off."""
    return (
        BAND_KERNELS_ENABLED
        and spec.groups > 1
        and spec.in_channels_per_group == 1
        and input.dtype in BANDED_DTYPES
        and (input.stride(-1) == 1 or layout_of(input) == "cl")
        and max(plane_pixels(spec.input_size), plane_pixels(spec.output_size)) <= PLANE_MAX_PIXELS
    )


def uses_plane_input_grad(grad_output: torch.Tensor, spec: ConvSpec) -> bool:
    """``uses_plane_kernel`` for the input gradient, read from ``grad_output``: one output channel
    per group too (the product runs per channel of dx), any steps."""
    return spec.out_channels_per_group == 1 and uses_plane_kernel(grad_output, spec)


def uses_patch_input_grad(grad_output: torch.Tensor, spec: ConvSpec) -> bool:
    """``uses_patch_kernel`` for the input gradient, the forward of the flipped filter over
    ``grad_output`` (unit steps: ``ConvSpec.input_grad_as_forward``)."""
    return spec.stride == (1, 1, 1) and uses_patch_kernel(grad_output, spec.input_grad_as_forward())


def uses_patch_weight_grad(input: torch.Tensor, spec: ConvSpec) -> bool:
    """``uses_patch_kernel``, with the weight gradient's float32 partials
    (``patches.patch_partials_shape``: per split and channel, the input patch's lines (rows, or
    chunks of rows) by a patch's rows by the filter's columns)
    within the band matrices' budget (``band_fits``: large 3-D filters over large volumes would
    take hundreds of MB) and its splits within a grid axis."""
    if not uses_patch_kernel(input, spec):
        return False
    shape = heuristic_partials_shape(spec)
    limit = max(BAND_BYTES_FLOOR, BAND_BYTES_SHARE * input.numel() * input.element_size())
    return 4 * math.prod(shape) <= limit and shape[0] <= BANDED_MAX_CHANNELS


# The band matrices, built for every call, may take this many bytes, or at most this share of
# the input's beyond that: short filter rows of many 3-D filter rows (a 3x3x3 filter over 432
# channels and 112-wide rows: 38 MiB, for an 83 MiB clip of 8 frames) would otherwise spend about
# half as much memory and traffic on zeros as on the input.
BAND_BYTES_FLOOR = 32 * 2**20
BAND_BYTES_SHARE = 0.25


def band_fits(input: torch.Tensor, spec: ConvSpec) -> bool:
    """Whether the forward's band matrices (``banded.band_bytes``) stay within BAND_BYTES_FLOOR,
    or BAND_BYTES_SHARE of ``input``'s bytes. Sized with the heuristic's tile: a tuned one's
    (other segment widths, 32-deep steps) can be larger, up to 4x for rows of 16 columns or
    fewer (64-column segments where the heuristic's are 16)."""
    limit = max(BAND_BYTES_FLOOR, BAND_BYTES_SHARE * input.numel() * input.element_size())
    return band_bytes(spec, as_3d(input)) <= limit


def uses_banded_input_grad(grad_output: torch.Tensor, spec: ConvSpec) -> bool:
    """``uses_banded_kernel`` for the input gradient, read from ``grad_output``: also one output
    channel per group and unit steps in every dimension, where it is the forward of the flipped
    filter (``ConvSpec.input_grad_as_forward``)."""
    return (
        uses_banded_kernel(grad_output, spec)
        and spec.out_channels_per_group == 1
        and spec.stride == (1, 1, 1)
        and band_fits(grad_output, spec.input_grad_as_forward())
    )


def uses_banded_weight_grad(grad_output: torch.Tensor, input: torch.Tensor, spec: ConvSpec) -> bool:
    """``uses_banded_kernel`` for the weight gradient, whose ``grad_output`` is read like the input."""
    return uses_banded_kernel(input, spec) and uses_banded_kernel(grad_output, spec)


def folds_columns(input: torch.Tensor, spec: ConvSpec) -> bool:
    """Whether the forward reads ``input`` as its folded problem (``ConvSpec.fold_columns``) in
    place: W and C adjacent and dense, for patch embeddings (``ConvSpec.patch_rows``) and first
    layers of few channels whose filter is wider than a column. Each tap of the fold reads one run
    of kernel-width x C consecutive elements per pixel, where the GEMM would otherwise take a
    reduction block of C (mostly masked) per tap."""
    channels = spec.in_channels
    dense = input.stride(-1) == channels and (channels == 1 or input.stride(1) == 1)
    return spec.columns_fold and dense and (spec.patch_rows or few_channels_wide_rows(spec))


def few_channels_wide_rows(spec: ConvSpec) -> bool:
    """A network's first layer (``pads_input``) whose filter is more than one column wide and not
    dilated along W: its forward folds columns, in place or of a padded copy."""
    return pads_input(spec) and spec.kernel_size[2] > 1 and spec.dilation[2] == 1


def folds_columns_of_copy(input: torch.Tensor, spec: ConvSpec) -> bool:
    """Whether the forward folds the columns of a padded copy of ``input`` (``pad_input``): a first
    layer that cannot fold in place (padded along W, or W and C not adjacent: the default layout,
    a sliced view). The copy's channels, zero-filled to a multiple of PADDED_CHANNEL_RUN, also
    align every run to 8 bytes in 16-bit dtypes; in the default layout it replaces the
    channels-last copy the GEMM would make."""
    return few_channels_wide_rows(spec) and not folds_columns(input, spec)


def forward_spec(input: torch.Tensor, spec: ConvSpec) -> ConvSpec:
    """The problem the forward's GEMM kernels solve for ``spec`` over ``input``: of bundles of
    groups (``forward_bundle``), else ``forward_problem``'s."""
    if (bundle := forward_bundle(spec, input.dtype)) > 1:
        return bundled_spec(spec, bundle)
    if folds_columns_of_copy(input, spec):
        return padded_spec(spec, padded_channels(spec)).fold_columns()
    return spec.fold_columns() if folds_columns(gemm_operand(as_3d(input)), spec) else spec


def forward_problem(
    input: torch.Tensor, weight: torch.Tensor, spec: ConvSpec
) -> tuple[torch.Tensor, torch.Tensor, ConvSpec]:
    """The operands and geometry of the forward's GEMM (the input as ``gemm_operand`` makes it):
    ``fold_columns`` where it applies, of a padded copy for ``folds_columns_of_copy``."""
    if folds_columns_of_copy(input, spec):
        channels = padded_channels(spec)
        x, spec = pad_input(input, spec, channels)
        # The copy's zero channels meet zero weights.
        zeros = weight.new_zeros((weight.shape[0], channels - weight.shape[1], *weight.shape[2:]))
        weight = torch.cat([weight, zeros], 1)
    else:
        x = gemm_operand(as_3d(input))
        if not folds_columns(x, spec):
            return x, weight, spec
    return (*fold_columns(x, weight, spec), spec.fold_columns())


def forward_runs_tma(gemm_input: torch.Tensor, spec: ConvSpec, problem: ConvSpec) -> bool:
    """Whether the forward of ``spec`` runs the TMA kernel on ``problem`` (``forward_problem``'s)
    over ``gemm_input``: where ``tma_forward_applies``, never to a fold (its pixels overlap, or
    the copy left no padding for the boxes to supply)."""
    return problem == spec and tma_forward_applies(gemm_input, problem)


def fold_columns(input: torch.Tensor, weight: torch.Tensor, spec: ConvSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``input`` and ``weight`` of ``ConvSpec.fold_columns``, W and C adjacent in ``input``. The
    input becomes a view whose pixels overlap where the stride along W is below the kernel's
    width: channel s*C + c of folded column j is input column stride*j + s, channel c. The weight
    (K, C, ..., kw) becomes (K, kw*C, ..., 1), a view when it is channels-last."""
    folded = spec.fold_columns()
    sizes = [input.shape[0], folded.in_channels, *input.shape[2:-1], folded.input_size[2]]
    strides = [input.stride(0), 1, *input.stride()[2:-1], spec.stride[2] * input.stride(-1)]
    x = input.as_strided(sizes, strides, input.storage_offset())
    w = weight.movedim(-1, 1).reshape(weight.shape[0], folded.in_channels, *weight.shape[2:-1], 1)
    return x, w


def forward(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    epilogue: Epilogue = PLAIN,
) -> torch.Tensor:
    """activation(conv(input, weight) + bias + residual) into ``out``, by the kernel that fits."""
    if out.numel() == 0:
        return out
    if uses_banded_kernel(input, spec) and band_fits(input, spec):
        banded_forward(input, weight, bias, spec, out, epilogue)
        return out
    if uses_plane_kernel(input, spec):
        flag = plane_forward(input, weight, bias, spec, out, epilogue)
        launch = plan_direct_forward(input, weight, bias, spec, out, epilogue, gate=flag)
    elif uses_patch_kernel(input, spec):
        flag = patch_forward(input, weight, bias, spec, out, epilogue)
        launch = plan_direct_forward(input, weight, bias, spec, out, epilogue, gate=flag)
    elif forward_bundle(spec, input.dtype) > 1:
        flag = forward_of_bundles(input, weight, bias, spec, out, epilogue)
        launch = plan_direct_forward(input, weight, bias, spec, out, epilogue, gate=flag)
    elif uses_direct_kernel(spec):
        launch = plan_direct_forward(input, weight, bias, spec, out, epilogue)
    else:
        # The channels-last operand both GEMM kernels read (a copy of a default-layout input,
        # which the pointer kernel would make anyway): TMA then applies in either layout.
        x, w, problem = forward_problem(input, weight, spec)
        plan = plan_forward_tma if forward_runs_tma(x, spec, problem) else plan_forward
        launch = plan(x, w, bias, problem, out, epilogue=epilogue)
    launch()
    return out


def tma_input_grad_applies(grad_output: torch.Tensor, spec: ConvSpec) -> bool:
    """Whether the input gradient runs the TMA forward kernel, as the forward of the flipped
    filter over ``grad_output`` (``ConvSpec.input_grad_as_forward``, which holds for unit steps
    only: strided input gradients are split by phase instead), where ``tma_forward_applies`` to
    that forward problem."""
    return spec.stride == (1, 1, 1) and tma_forward_applies(grad_output, spec.input_grad_as_forward())


def input_grad(
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    spec: ConvSpec,
    grad_input: torch.Tensor,
    bias: torch.Tensor | None = None,
    epilogue: Epilogue = PLAIN,
) -> torch.Tensor:
    """d(loss)/d(input); with ``bias`` and ``epilogue`` it is the transposed convolution of
    ``grad_output`` (``spec`` from ``transposed_geometry``): activation(that + bias + residual)."""
    if grad_input.numel() == 0:
        return grad_input
    if uses_banded_input_grad(grad_output, spec):
        banded_input_grad(grad_output, weight, spec, grad_input, bias, epilogue)
    elif uses_plane_input_grad(grad_output, spec):
        flag = plane_forward(grad_output, weight, bias, spec, grad_input, epilogue, transposed=True)
        plan_direct_input_grad(grad_output, weight, spec, grad_input, bias, epilogue, gate=flag)()
    elif uses_patch_input_grad(grad_output, spec):
        forward = spec.input_grad_as_forward()
        flag = patch_forward(grad_output, weight, bias, forward, grad_input, epilogue, flip_filter=True)
        plan_direct_input_grad(grad_output, weight, spec, grad_input, bias, epilogue, gate=flag)()
    elif input_grad_bundle(spec, grad_output.dtype) > 1:
        # As the forward of the flipped filter (unit steps), over bundles of its groups.
        flipped = input_grad_filter(weight, spec.groups)
        forward = spec.input_grad_as_forward()
        flag = forward_of_bundles(grad_output, flipped, bias, forward, grad_input, epilogue)
        plan_direct_input_grad(grad_output, weight, spec, grad_input, bias, epilogue, gate=flag)()
    elif uses_direct_kernel(spec):
        plan_direct_input_grad(grad_output, weight, spec, grad_input, bias, epilogue)()
    else:
        grad_output = gemm_operand(as_3d(grad_output))  # as in ``forward``
        if tma_input_grad_applies(grad_output, spec):
            forward = spec.input_grad_as_forward()
            flipped = input_grad_filter(weight, spec.groups)
            plan_forward_tma(grad_output, flipped, bias, forward, grad_input, epilogue=epilogue)()
        else:
            plan_input_grad(grad_output, weight, spec, grad_input, bias=bias, epilogue=epilogue)()
    return grad_input


# Inputs of one group with fewer channels than this are padded for the weight gradient
# (``pads_input``), to a multiple of PADDED_CHANNEL_RUN channels: 8-byte vectors in 16-bit dtypes.
FEW_CHANNELS = 8
PADDED_CHANNEL_RUN = 4


def pads_input(spec: ConvSpec) -> bool:
    """Whether the weight gradient reads a padded copy of the input (``kernels/pad_input.py``): one
    group, fewer than ``FEW_CHANNELS`` channels (a network's first layer), not a patch embedding,
    whose rows are contiguous runs already (``ConvSpec.patch_rows``). The copy reads x once and
    writes it once; the kernel gathers each x element about taps / stride^2 times."""
    return spec.groups == 1 and 0 < spec.in_channels < FEW_CHANNELS and not spec.patch_rows and spec.output_pixels > 0


# A grouped convolution of BUNDLE_MIN_CHANNELS to MIN_DOT - 1 channels per group in its reduction
# (input channels; for the input gradient, output channels), in a 16-bit dtype, runs on the GEMM
# over bundles of neighbouring groups: each bundle one group of a multiple of MIN_DOT channels, at
# most BUNDLE_CHANNELS, whose filter between two different groups of a bundle is zero
# (``bundled_filter``) or, for the weight gradient, computed and dropped. A bundle of b groups
# does b times the useful multiply-adds on the matrix unit, still less issue time than the direct
# kernels' 2-4 instructions per FMA on CUDA cores: suite shape 10 (4 channels per group, bundles of
# 16) compiled for sm_90 to 74.7 against 118.1 us (weight gradient) and 68.4 (matrix-bound)
# against 122.5 (forward) in channels-last. Each output of the weight gradient is its own sum over
# pixels, so the dropped blocks cannot reach the kept ones, non-finite values included. In the
# forward and input gradient a zero of the filter times an infinite or NaN input makes NaN of
# the bundle's other groups at that pixel: the GEMM flags a tile that is not finite
# (``non_finite.py``), and the direct kernel, gated on the flag, computes the whole output again
# with torch's products. Depthwise convolutions (one channel per group) would do 16 to 64 times
# the work; float32 has no 16-bit matrix-unit rate to pay for it. Bundles of other channel counts
# (40, 56, 60) compiled to 255 registers and spills. TRITON_CONV_GROUP_BUNDLES=0 (read at import;
# tests flip the module attribute) keeps these convolutions on the direct kernels.
GROUP_BUNDLES_ENABLED = os.environ.get("TRITON_CONV_GROUP_BUNDLES", "1") == "1"
BUNDLE_CHANNELS = 64
BUNDLE_MIN_CHANNELS = 4
# The forward's GEMM over bundles whose output channels fill narrower tiles than this lost to the
# direct kernels (shape 10 with 1 output channel per group, bundles of 16 groups compiled for
# sm_90: 51.8 against 46.7 us issue-bound; with 2 per group, 53.8 against 66.0).
BUNDLE_MIN_OUTPUTS = 32
BUNDLE_DTYPES = (torch.float16, torch.bfloat16)


def group_bundle(spec: ConvSpec, dtype: torch.dtype) -> int:
    """Groups per bundle of the weight gradient's GEMM, and of the forward's where
    ``forward_bundle`` allows (1: none): the most that divide the groups and hold a multiple of
    MIN_DOT input channels, at most BUNDLE_CHANNELS, for a ``uses_direct_kernel`` convolution of
    at least BUNDLE_MIN_CHANNELS input channels per group in BUNDLE_DTYPES; unless
    GROUP_BUNDLES_ENABLED is off."""
    channels = spec.in_channels_per_group
    eligible = GROUP_BUNDLES_ENABLED and dtype in BUNDLE_DTYPES and uses_direct_kernel(spec)
    if not eligible or channels < BUNDLE_MIN_CHANNELS:
        return 1
    sizes = range(1, BUNDLE_CHANNELS // channels + 1)
    return max((b for b in sizes if spec.groups % b == 0 and b * channels % MIN_DOT == 0), default=1)


def forward_bundle(spec: ConvSpec, dtype: torch.dtype) -> int:
    """Groups per bundle of the forward's GEMM (1: none): ``group_bundle``'s, where the bundle's
    output channels number at least BUNDLE_MIN_OUTPUTS."""
    bundle = group_bundle(spec, dtype)
    return bundle if bundle * spec.out_channels_per_group >= BUNDLE_MIN_OUTPUTS else 1


def input_grad_bundle(spec: ConvSpec, dtype: torch.dtype) -> int:
    """Groups per bundle of the input gradient (1: none): with unit steps, of a
    ``uses_direct_kernel`` convolution, ``forward_bundle`` of its forward of the flipped filter
    (``ConvSpec.input_grad_as_forward``), whose reduction runs over the output channels."""
    if spec.stride != (1, 1, 1) or not uses_direct_kernel(spec):
        return 1
    return forward_bundle(spec.input_grad_as_forward(), dtype)


def bundled_spec(spec: ConvSpec, bundle: int) -> ConvSpec:
    """``spec`` with every ``bundle`` neighbouring groups one group."""
    return replace(spec, groups=spec.groups // bundle)


def diagonal_blocks(blocks: torch.Tensor, groups: int, bundle: int) -> torch.Tensor:
    """The view of a bundled (K, bundle * C_G, *filter) filter or gradient, ``groups`` groups in
    bundles of ``bundle``, holding each group's own (K_G, C_G) block: (bundles, K_G, C_G,
    *filter, bundle), the last index the group within its bundle."""
    out_per_group, in_per_group = blocks.shape[0] // groups, blocks.shape[1] // bundle
    per_bundle = blocks.unflatten(1, (bundle, in_per_group)).unflatten(0, (-1, bundle, out_per_group))
    return per_bundle.diagonal(dim1=1, dim2=3)


def bundled_filter(weight: torch.Tensor, groups: int, bundle: int) -> torch.Tensor:
    """The (K, C_G, *filter) ``weight`` of ``groups`` groups as the filter of their bundles of
    ``bundle``: (K, bundle * C_G, *filter), each output channel's filter at its group's channels
    of the bundle and zeros at the others'; channels-last, as the GEMM kernels read it."""
    blocks = weight.new_zeros((weight.shape[0], *weight.shape[2:], bundle * weight.shape[1])).movedim(-1, 1)
    diagonal_blocks(blocks, groups, bundle).copy_(
        weight.unflatten(0, (-1, bundle, weight.shape[0] // groups)).movedim(1, -1)
    )
    return blocks


def forward_of_bundles(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    spec: ConvSpec,
    out: torch.Tensor,
    epilogue: Epilogue,
) -> torch.Tensor:
    """Write the forward of ``spec`` into ``out`` as the GEMM of ``forward_bundle``'s bundles, and
    return its flag (``non_finite.py``): set where a tile was not finite, whose outputs a zero of
    the bundled filter may have made NaN where torch's are not."""
    bundle = forward_bundle(spec, input.dtype)
    x, problem = gemm_operand(as_3d(input)), bundled_spec(spec, bundle)
    flag = new_flag(x.device)
    plan = plan_forward_tma if tma_forward_applies(x, problem) else plan_forward
    plan(x, bundled_filter(weight, spec.groups, bundle), bias, problem, out, epilogue=epilogue, flag=flag)()
    return flag


def weight_grad_spec(spec: ConvSpec, dtype: torch.dtype) -> ConvSpec:
    """The problem the weight gradient's GEMM solves: over ``pad_input``'s channels-last copy
    where ``pads_input``, over bundles of groups where ``group_bundle`` makes them, else
    ``spec`` itself."""
    if pads_input(spec):
        return padded_spec(spec, padded_channels(spec))
    return bundled_spec(spec, group_bundle(spec, dtype))


def bundled_weight_grad(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    spec: ConvSpec,
    grad_weight: torch.Tensor,
    grad_bias: torch.Tensor | None,
) -> None:
    """``weight_grad`` through the GEMM of ``group_bundle``'s bundles: the gradient of each
    bundle's whole (output channel x input channel) block, of which the blocks of one group are kept."""
    bundle = group_bundle(spec, input.dtype)
    blocks = grad_weight.new_empty((spec.out_channels, bundle * spec.in_channels_per_group, *grad_weight.shape[2:]))
    implicit_gemm_weight_grad(grad_output, input, weight_grad_spec(spec, input.dtype), blocks, grad_bias)
    grad_weight.copy_(diagonal_blocks(blocks, spec.groups, bundle).movedim(-1, 1).flatten(0, 2))


def padded_channels(spec: ConvSpec) -> int:
    """The channels of ``pads_input``'s copy: the input's, rounded up to PADDED_CHANNEL_RUN."""
    return -(-spec.in_channels // PADDED_CHANNEL_RUN) * PADDED_CHANNEL_RUN


def weight_grad(
    grad_output: torch.Tensor,
    input: torch.Tensor,
    spec: ConvSpec,
    grad_weight: torch.Tensor,
    grad_bias: torch.Tensor | None,
) -> None:
    """d(loss)/d(weight) into ``grad_weight`` (contiguous) and, if given, d(loss)/d(bias)."""
    if grad_output.numel() == 0:  # no output pixel (an empty batch): sums over nothing
        grad_weight.zero_()
        if grad_bias is not None:
            grad_bias.zero_()
        return
    if uses_banded_weight_grad(grad_output, input, spec):
        banded_weight_grad(grad_output, input, spec, grad_weight, grad_bias)
        return
    if group_bundle(spec, input.dtype) > 1:
        bundled_weight_grad(grad_output, input, spec, grad_weight, grad_bias)
        return
    if uses_patch_weight_grad(input, spec):
        flag = patch_weight_grad(grad_output, input, spec, grad_weight, grad_bias)
        direct_weight_grad(grad_output, input, spec, grad_weight, grad_bias, gate=flag)
        return
    if uses_direct_kernel(spec):
        direct_weight_grad(grad_output, input, spec, grad_weight, grad_bias)
        return
    if pads_input(spec):
        x, padded = pad_input(input, spec, padded_channels(spec))
        # The padded channels' gradients are computed and dropped.
        padded_grad = grad_weight.new_empty((spec.out_channels, padded.in_channels, *grad_weight.shape[2:]))
        implicit_gemm_weight_grad(grad_output, x, padded, padded_grad, grad_bias)
        grad_weight.copy_(padded_grad[:, : spec.in_channels])
    else:
        implicit_gemm_weight_grad(grad_output, input, spec, grad_weight, grad_bias)
