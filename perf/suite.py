"""The benchmark suite as data: the shapes, their dtypes, the per-class targets, and the roofline.

This module is the one statement of the suite and its targets; the harness, the reports and
``perf/NOTES.md`` read it from here rather than restating it.

Passes: ``F`` forward, ``D`` input gradient, ``W`` weight gradient, as each shape lists
them; ``FB`` forward plus the backward passes a shape lists (for every shape that lists
``D`` or ``W``); ``E`` the forward with the fused epilogue relu(conv + bias + residual) (for the
shapes of the fused-epilogue class).

Shapes 29-33 are transposed convolutions (``F.conv_transpose*``, upsampling layers). For them
``F`` is the transposed convolution, ``D`` its input gradient (a forward convolution of dy) and
``W`` its weight gradient; the weight is (in_channels, out_channels/groups, *kernel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from triton_conv.spec import ConvSpec, op_geometry, transposed_geometry

PASSES = ("F", "D", "W", "FB", "E")
LAYOUTS = ("channels_last", "contiguous")


@dataclass(frozen=True)
class DtypeSpec:
    """A benchmark dtype: the tensor dtype, and whether float32 runs on TF32 tensor cores."""

    dtype: torch.dtype
    tf32: bool = False


DTYPES: dict[str, DtypeSpec] = {
    "bfloat16": DtypeSpec(torch.bfloat16),
    "float16": DtypeSpec(torch.float16),
    "tf32": DtypeSpec(torch.float32, tf32=True),
    "float32": DtypeSpec(torch.float32),
}
HEADLINE_DTYPE = "bfloat16"
# Besides bfloat16, float16 and float32 (TF32) for shapes 2, 5, 12, 24.
EXTRA_DTYPES = ("float16", "tf32")
SUITE_DTYPES = (HEADLINE_DTYPE, *EXTRA_DTYPES)
# Stand-ins on CPU: float32 for bfloat16 (the interpreter's bfloat16 tl.dot is wrong); no TF32 there.
SMOKE_DTYPES = {"bfloat16": "float32", "float16": "float16"}


@dataclass(frozen=True)
class SuiteShape:
    """One benchmark convolution. Spatial tuples have ``dims`` entries (depth, height, width order).

    ``classes`` are the shape-level target classes it belongs to (see ``TARGETS``); the input-
    and weight-gradient classes follow from ``passes`` and the stride instead. ``transposed``
    shapes are ``F.conv_transpose*`` with ``output_padding``.
    """

    number: int
    name: str
    dims: int
    batch: int
    in_channels: int
    out_channels: int
    size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    passes: tuple[str, ...]
    classes: tuple[str, ...]
    extra_dtypes: tuple[str, ...] = ()
    transposed: bool = False
    output_padding: tuple[int, ...] = ()  # one entry per dimension for transposed shapes only

    @property
    def strided(self) -> bool:
        return any(s > 1 for s in self.stride)

    @property
    def one_by_one(self) -> bool:
        return all(k == 1 for k in self.kernel)

    @property
    def plain_gemm(self) -> bool:
        """A GEMM without overlap or padding: 1x1 filters, and patch embeddings (kernel = stride)."""
        return self.one_by_one or "patch_embedding" in self.classes

    @property
    def label(self) -> str:
        return f"{self.number} {self.name}"

    def all_passes(self) -> tuple[str, ...]:
        """The listed passes, forward+backward where the shape has a backward pass, and the fused epilogue."""
        forward_backward = ("FB",) if {"D", "W"} & set(self.passes) else ()
        fused = ("E",) if "fused_epilogue" in self.classes else ()
        return self.passes + forward_backward + fused

    def dtypes(self) -> tuple[str, ...]:
        return (HEADLINE_DTYPE, *self.extra_dtypes)

    def input_shape(self) -> tuple[int, ...]:
        return (self.batch, self.in_channels, *self.size)

    def weight_shape(self) -> tuple[int, ...]:
        if self.transposed:
            return (self.in_channels, self.out_channels // self.groups, *self.kernel)
        return (self.out_channels, self.in_channels // self.groups, *self.kernel)

    def geometry(self) -> ConvSpec:
        """The convolution's geometry as triton_conv's ops see it (sizes, FLOPs): for a transposed
        shape, the convolution it is the input gradient of (whose input is this shape's output)."""
        if self.transposed:
            return transposed_geometry(
                self.input_shape(), self.weight_shape(), self.stride, self.padding, self.output_padding,
                self.dilation, self.groups,
            )  # fmt: skip
        return op_geometry(
            self.input_shape(), self.weight_shape(), self.stride, self.padding * 2, self.dilation, self.groups
        )

    def output_shape(self) -> tuple[int, ...]:
        spec = self.geometry()
        return spec.in_shape if self.transposed else spec.out_shape


def _shape(
    number: int,
    name: str,
    batch: int,
    in_channels: int,
    out_channels: int,
    size: tuple[int, ...],
    kernel: int | tuple[int, ...],
    stride: int = 1,
    padding: int | tuple[int, ...] = 0,
    dilation: int = 1,
    groups: int = 1,
    passes: str = "F",
    classes: tuple[str, ...] = (),
    extra_dtypes: tuple[str, ...] = (),
    output_padding: int | None = None,
) -> SuiteShape:
    """A suite row in short form: ints stand for the same value in every dimension.
    An ``output_padding`` (0 included) makes it a transposed convolution."""
    dims = len(size)

    def expand(value: int | tuple[int, ...]) -> tuple[int, ...]:
        return value if isinstance(value, tuple) else (value,) * dims

    return SuiteShape(
        number, name, dims, batch, in_channels, out_channels, size, expand(kernel), expand(stride),
        expand(padding), expand(dilation), groups, tuple(passes), classes, extra_dtypes,
        output_padding is not None, expand(output_padding) if output_padding is not None else (),
    )  # fmt: skip


# The suite. Depthwise rows have groups = C = K. Shapes 25 and 26 give only a
# kernel; their padding is torchvision's R(2+1)D (Conv2Plus1D), which keeps 16x56x56.
SUITE: tuple[SuiteShape, ...] = (
    _shape(1, "r50_stem", 128, 3, 64, (224, 224), 7, 2, 3, passes="FW", classes=("first_layer",)),
    _shape(2, "r50_c2_3x3", 128, 64, 64, (56, 56), 3, 1, 1, passes="FDW", classes=("dense_forward", "fused_epilogue"), extra_dtypes=EXTRA_DTYPES),
    _shape(3, "r50_c2_1x1", 128, 64, 256, (56, 56), 1, passes="FDW", classes=("1x1", "1x1_vs_mm")),
    _shape(4, "r50_c3_3x3s2", 128, 128, 128, (56, 56), 3, 2, 1, passes="FDW"),
    _shape(5, "r50_c4_3x3", 128, 256, 256, (14, 14), 3, 1, 1, passes="FDW", classes=("dense_forward", "fused_epilogue"), extra_dtypes=EXTRA_DTYPES),
    _shape(6, "r50_c5_1x1", 128, 2048, 512, (7, 7), 1, passes="FW", classes=("1x1", "1x1_vs_mm")),
    _shape(7, "r50_ds_1x1s2", 128, 1024, 2048, (14, 14), 1, 2, passes="FD", classes=("1x1", "1x1_vs_mm")),
    _shape(8, "sd_vae_3x3", 1, 512, 512, (128, 128), 3, 1, 1, classes=("dense_forward",)),
    _shape(9, "aspp_d12", 16, 2048, 256, (33, 33), 3, 1, 12, 12, passes="FDW", classes=("dense_forward",)),
    _shape(10, "resnext_g32", 128, 128, 128, (56, 56), 3, 1, 1, groups=32, passes="FDW", classes=("grouped", "fused_epilogue")),
    _shape(11, "resnext_g32_s2", 128, 1024, 1024, (14, 14), 3, 2, 1, groups=32, classes=("grouped",)),
    _shape(12, "mbv2_dw3", 128, 144, 144, (56, 56), 3, 1, 1, groups=144, passes="FDW", classes=("depthwise",), extra_dtypes=EXTRA_DTYPES),
    _shape(13, "mbv2_dw3_s2", 128, 96, 96, (112, 112), 3, 2, 1, groups=96, passes="FD", classes=("depthwise",)),
    _shape(14, "effnet_dw5", 128, 240, 240, (28, 28), 5, 1, 2, groups=240, passes="FDW", classes=("depthwise",)),
    _shape(15, "convnext_dw7", 64, 96, 96, (56, 56), 7, 1, 3, groups=96, passes="FDW", classes=("depthwise", "large_kernel_depthwise")),
    _shape(16, "convnext_dw7_small", 64, 768, 768, (7, 7), 7, 1, 3, groups=768, classes=("depthwise", "large_kernel_depthwise")),
    _shape(17, "w2v2_fe0", 8, 1, 512, (160000,), 10, 5, classes=("first_layer", "conv1d_ncl")),
    _shape(18, "w2v2_fe1", 8, 512, 512, (31999,), 3, 2, passes="FDW", classes=("dense_forward", "conv1d_ncl")),
    _shape(19, "w2v2_posconv", 8, 768, 768, (499,), 128, 1, 64, groups=16, passes="FDW", classes=("grouped", "conv1d_ncl")),
    _shape(20, "conformer_dw31", 32, 512, 512, (1000,), 31, 1, 15, groups=512, passes="FDW", classes=("depthwise", "conv1d_ncl")),
    _shape(21, "conformer_pw", 32, 512, 1024, (1000,), 1, classes=("1x1", "1x1_vs_mm", "conv1d_ncl")),
    _shape(22, "conv1d_k3", 3072, 128, 384, (202,), 3, classes=("dense_forward", "conv1d_ncl")),
    _shape(23, "tcn_dilated", 8, 512, 512, (16384,), 3, 1, 16, 16, passes="FDW", classes=("dense_forward", "conv1d_ncl")),
    _shape(24, "c3d_conv2a", 8, 64, 128, (16, 56, 56), 3, 1, 1, passes="FDW", classes=("dense_forward",), extra_dtypes=EXTRA_DTYPES),
    _shape(25, "r2p1d_spatial", 8, 64, 144, (16, 56, 56), (1, 3, 3), 1, (0, 1, 1)),
    _shape(26, "r2p1d_temporal", 8, 144, 64, (16, 56, 56), (3, 1, 1), 1, (1, 0, 0)),
    _shape(27, "nnunet_s0", 2, 32, 32, (128, 128, 128), 3, 1, 1, passes="FDW", classes=("dense_forward",)),
    _shape(28, "video_vae", 1, 512, 512, (5, 64, 64), 3, 1, 1, classes=("dense_forward",)),
    _shape(29, "vit_patch", 64, 3, 768, (224, 224), 16, 16, passes="FW", classes=("patch_embedding",)),
    _shape(30, "video_patch", 16, 3, 1280, (2, 224, 224), (2, 14, 14), (2, 14, 14), classes=("patch_embedding",)),
    # Large-kernel depthwise: ConvNeXt's 7x7 at stage 3 with gradients, RepLKNet's 31x31.
    _shape(31, "convnext_dw7_bwd", 64, 384, 384, (14, 14), 7, 1, 3, groups=384, passes="FDW", classes=("depthwise",)),
    _shape(32, "replk_dw31", 32, 384, 384, (14, 14), 31, 1, 15, groups=384, passes="FDW", classes=("large_kernel_depthwise",)),
    # Transposed convolutions (upsampling): U-Net 2x2 s2, DCGAN 4x4 s2 p1, an SD-VAE-sized 3x3 s2
    # decoder layer, HiFi-GAN's first x8 upsample, a video decoder's spatial x2 upsample.
    _shape(33, "unet_up2x2", 16, 256, 128, (64, 64), 2, 2, 0, passes="FDW", classes=("transposed",), output_padding=0),
    _shape(34, "dcgan_up4x4", 128, 512, 256, (8, 8), 4, 2, 1, passes="FDW", classes=("transposed",), output_padding=0),
    _shape(35, "sd_vae_up3x3", 1, 512, 512, (64, 64), 3, 2, 1, classes=("transposed",), output_padding=1),
    _shape(36, "hifigan_up8", 16, 512, 256, (8192,), 16, 8, 4, passes="FDW", classes=("transposed",), output_padding=0),
    _shape(37, "video_dec_up", 2, 256, 128, (4, 32, 32), (3, 4, 4), (1, 2, 2), (1, 1, 1), passes="FDW", classes=("transposed",), output_padding=0),
)  # fmt: skip
SHAPES_BY_NUMBER = {s.number: s for s in SUITE}


def smoke_shape(shape: SuiteShape) -> SuiteShape:
    """A tiny version of ``shape`` for CPU smoke runs through the interpreter (seconds, not hours).

    Keeps what the harness branches on: dimensionality, passes, classes, groups versus channels
    (depthwise stays depthwise), stride, dilation, and whether there is padding. Kernels are cut
    to at most 3 taps per dimension because the interpreter's cost grows with every tap.
    """
    groups = min(shape.groups, 2)
    in_per_group = min(shape.in_channels // shape.groups, 4)
    out_per_group = min(shape.out_channels // shape.groups, 4)
    kernel = tuple(min(k, 3) for k in shape.kernel)
    stride = tuple(min(s, 2) for s in shape.stride)
    dilation = tuple(min(d, 2) for d in shape.dilation)
    padding = tuple(d * (k - 1) // 2 if p else 0 for p, k, d in zip(shape.padding, kernel, dilation))
    output_padding = tuple(min(op, s - 1) for op, s in zip(shape.output_padding, stride))
    # Room for about three output positions per dimension.
    size = tuple(min(n, d * (k - 1) + 1 + 2 * s) for n, k, d, s in zip(shape.size, kernel, dilation, stride))
    return replace(
        shape,
        batch=min(shape.batch, 2),
        in_channels=groups * in_per_group,
        out_channels=groups * out_per_group,
        size=size,
        kernel=kernel,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        output_padding=output_padding,
    )


# ---------------------------------------------------------------------------------------------
# Roofline


@dataclass(frozen=True)
class Ceilings:
    """Peak rates: dense matmul TFLOP/s per dtype name, and device copy bandwidth in GB/s."""

    tflops: dict[str, float]
    gbps: float

    def ridge(self, dtype: str) -> float:
        """The arithmetic intensity (FLOP/byte) above which a kernel is compute-bound."""
        return self.tflops[dtype] * 1e12 / (self.gbps * 1e9)


# Quoted figures for one H100 SXM (not measured here); used only for the static tables in NOTES.md, never
# for a measured result (the harness measures its own ceilings at the start of every run).
QUOTED_H100 = Ceilings(tflops={"bfloat16": 798.0}, gbps=3000.0)


def pass_flops(shape: SuiteShape, pass_: str) -> int:
    """2·N·K·(output pixels)·(C/groups)·taps per pass; forward+backward adds each backward pass listed.

    The fused epilogue counts as the forward: its few element-wise operations per output are noise.
    """
    one = shape.geometry().flops
    if pass_ == "FB":
        return one * (1 + len({"D", "W"} & set(shape.passes)))
    return one


def pass_bytes(shape: SuiteShape, pass_: str, itemsize: int) -> int:
    """Minimal traffic: each input of the pass read once, each output written once."""
    x = math.prod(shape.input_shape())
    w = math.prod(shape.weight_shape())
    y = math.prod(shape.output_shape())
    elements = {
        "F": x + w + y,  # reads x, w; writes y
        "D": y + w + x,  # reads dy, w; writes dx
        "W": y + x + w,  # reads dy, x; writes dw
        "E": x + w + shape.out_channels + y + y,  # reads x, w, bias, residual; writes y
    }
    if pass_ == "FB":
        # Reads x, w, dy; writes y and the gradients the shape's passes ask for.
        total = x + w + y + y
        total += x if "D" in shape.passes else 0
        total += w if "W" in shape.passes else 0
        return total * itemsize
    return elements[pass_] * itemsize


def roofline_ms(flops: int, nbytes: int, tflops: float, gbps: float) -> float:
    """The least time the roofline allows: the larger of compute time and memory time."""
    return max(flops / (tflops * 1e9), nbytes / (gbps * 1e6))


# ---------------------------------------------------------------------------------------------
# Targets


@dataclass(frozen=True)
class ClassTarget:
    """One class target: which (shape, pass) pairs, against what, how fast.

    Ratios are baseline time / triton-conv time in ``layout`` and the headline dtype. A single
    "must reach" number is read as a floor for every member (``must_each``);
    the dense class also has a floor on its geometric mean.
    """

    key: str
    title: str
    passes: tuple[str, ...]
    baseline: str
    must_each: float | None
    must_geomean: float | None = None
    aim: float | None = None
    layout: str = "channels_last"
    shape_class: str | None = None
    strided: bool | None = None
    must_bandwidth_fraction: float | None = None
    aim_compute_fraction_on_largest: float | None = None
    # Transposed shapes are judged only by the transposed class, convolutions only by the others.
    transposed: bool = False

    def members(self, shapes: tuple[SuiteShape, ...] = SUITE) -> list[tuple[SuiteShape, str]]:
        """(shape, pass) pairs this class judges, in suite order."""
        return [
            (shape, pass_)
            for shape in shapes
            if (self.shape_class is None or self.shape_class in shape.classes)
            and (self.strided is None or shape.strided == self.strided)
            and shape.transposed == self.transposed
            for pass_ in shape.all_passes()
            if pass_ in self.passes
        ]


ALL = ("F", "D", "W")
# The targets. Classes that name no pass take every pass their shapes list; the fused
# class is measured with relu(conv + bias + residual), a ResNet block's epilogue.
TARGETS: tuple[ClassTarget, ...] = (
    ClassTarget("dense_forward", "dense, compute-bound, forward", ("F",), "cudnn", 0.75, must_geomean=0.9, aim=1.0,
                shape_class="dense_forward", aim_compute_fraction_on_largest=0.7),
    ClassTarget("1x1", "1x1 against cuDNN", ALL, "cudnn", 0.95, aim=1.0, shape_class="1x1"),
    ClassTarget("1x1_vs_mm", "1x1 against torch.mm", ALL, "mm", 0.9, shape_class="1x1_vs_mm"),
    ClassTarget("input_grad_stride1", "input gradient, stride 1", ("D",), "cudnn", 0.85, aim=1.0, strided=False),
    ClassTarget("input_grad_strided", "input gradient, strided", ("D",), "cudnn", 0.75, aim=1.0, strided=True),
    ClassTarget("weight_grad", "weight gradient", ("W",), "cudnn", 0.75, aim=0.9),
    ClassTarget("first_layer", "first layer (C=3, C=1)", ALL, "cudnn", 0.6, aim=1.0, shape_class="first_layer"),
    ClassTarget("depthwise", "depthwise 1-D/2-D", ALL, "cudnn", 1.5, aim=3.0, shape_class="depthwise",
                must_bandwidth_fraction=0.8),
    ClassTarget("large_kernel_depthwise", "large-kernel depthwise", ALL, "cudnn", 2.0, aim=5.0,
                shape_class="large_kernel_depthwise"),
    ClassTarget("grouped", "grouped, 4-48 channels per group", ALL, "cudnn", 1.0, aim=2.0, shape_class="grouped"),
    ClassTarget("patch_embedding", "patch embedding (kernel = stride) against torch.mm", ALL, "mm", 0.9,
                shape_class="patch_embedding"),
    ClassTarget("patch_embedding_cudnn", "patch embedding against cuDNN", ALL, "cudnn", None, aim=5.0,
                shape_class="patch_embedding"),
    ClassTarget("conv1d_ncl", "1-D against default F.conv1d (NCL)", ALL, "cudnn", 1.5, layout="contiguous",
                shape_class="conv1d_ncl"),
    ClassTarget("fused_epilogue", "fused conv+bias+activation(+residual) against cuDNN conv then the epilogue",
                ("E",), "cudnn", 1.2, shape_class="fused_epilogue"),
    ClassTarget("transposed", "transposed convolution (upsampling), forward and both gradients", ALL, "cudnn", 1.0,
                shape_class="transposed", transposed=True),
)  # fmt: skip
TARGETS_BY_KEY = {t.key: t for t in TARGETS}
