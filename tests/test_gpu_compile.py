"""Every shipped forward tile compiles for Hopper (sm_90) and Ampere (sm_80), without a GPU.

The interpreter accepts tiles a GPU compiler rejects and never runs out of registers or shared
memory; these tests compile each launch for real and check what it costs on the device.
"""

import dataclasses

import pytest
import torch
from triton.runtime.jit import JITFunction
from triton_conv.perf.compiled_code import (
    dot_loop,
    hot_loop,
    is_mma,
    local_memory_in_loops,
    narrow_shared_access,
    parse_sass,
    sass_loops,
)

from triton_conv.kernels import dispatch
from triton_conv.kernels import implicit_gemm_forward_tma as tma
from triton_conv.kernels.common import Launch, accumulator_dtype, recording_launches
from triton_conv.kernels.direct import plan_direct_forward, plan_direct_input_grad, plan_direct_weight_grad
from triton_conv.kernels.dispatch import KERNEL_KINDS
from triton_conv.kernels.epilogue import Epilogue, activation_grad_kernel
from triton_conv.kernels.gpu_compile import SHARED_MEMORY_LIMIT, GPUCompileError, _Request, _specialize, compile_launch
from triton_conv.kernels.implicit_gemm_forward import FORWARD, implicit_gemm_forward_kernel, plan_forward
from triton_conv.kernels.implicit_gemm_input_grad import INPUT_GRAD, plan_input_grad
from triton_conv.kernels.implicit_gemm_weight_grad import ROW_BLOCKS_FOR_FEW_CHANNELS, WEIGHT_GRAD, plan_weight_grad
from triton_conv.kernels.patches import PATCH_FORWARD, PATCH_WEIGHT_GRAD
from triton_conv.kernels.planes import PLANE_CHANNELS_LAST_FORWARD, PLANE_FORWARD, plan_plane
from triton_conv.kernels.split_k import split_k_sum_kernel
from triton_conv.spec import conv_spec, output_memory_format
from triton_conv.tuning.configs import (
    PATCH_TILES,
    PATCH_WEIGHT_GRAD_TILES,
    KernelConfig,
    candidate_configs,
)
from triton_conv.tuning.kinds import KernelKind

from .cases import paired

pytestmark = pytest.mark.compile

ARCHS = [90, 80]
# (dtype, tl.dot input precision); float32 runs both ways on GPUs.
VARIANTS = [
    (torch.float16, "ieee"),
    (torch.bfloat16, "ieee"),
    (torch.float32, "ieee"),
    (torch.float32, "tf32"),
    (torch.float64, "ieee"),
]


def _config_id(c: KernelConfig) -> str:
    return f"{c.block_m}x{c.block_n}x{c.block_k}-w{c.num_warps}-s{c.num_stages}"


def _variant_id(variant: tuple[torch.dtype, str]) -> str:
    dtype, precision = variant
    name = str(dtype).removeprefix("torch.")
    return f"{name}-{precision}" if dtype == torch.float32 else name


def _launch(kind: KernelKind, config: KernelConfig, dtype: torch.dtype, precision: str = "ieee") -> Launch:
    """The launch of ``kind`` for a small 3x3 conv2d with ``config``, as the ops would plan it.

    Channels-last, the layout whose loads the kernels vectorize and software-pipeline, so that
    shared memory is at its largest.
    """
    x = torch.empty(2, 32, 8, 8, dtype=dtype).to(memory_format=torch.channels_last)
    w = torch.empty(64, 32, 3, 3, dtype=dtype).to(memory_format=torch.channels_last)
    b = torch.empty(64, dtype=dtype)
    spec = conv_spec(x, w, b, stride=1, padding=1, dilation=1, groups=1, ndim=2)
    y = torch.empty(spec.out_shape, dtype=dtype, memory_format=output_memory_format(x, w))
    launch = kind.plan(spec, x, w, b, y, config)
    return dataclasses.replace(launch, constexprs={**launch.constexprs, "PRECISION": precision})


# Every shipped tile that fits each dtype, for both architectures.
CASES = [
    pytest.param(kind, variant, config, arch, id=f"{kind.name}-{_variant_id(variant)}-{_config_id(config)}-sm{arch}")
    for arch in ARCHS
    for kind in KERNEL_KINDS
    for variant in VARIANTS
    for config in candidate_configs(kind, *variant)
]


@pytest.mark.parametrize(("kind", "variant", "config", "arch"), CASES)
def test_shipped_configs_compile(kind, variant, config, arch):
    dtype, precision = variant
    info = compile_launch(_launch(kind, config, dtype, precision), arch)
    assert info.shared_bytes <= SHARED_MEMORY_LIMIT[arch], f"shared memory over the sm_{arch} limit: {info}"
    assert info.spill_bytes == 0, f"register spills: {info}"
    if arch == 90 and dtype.itemsize == 2:
        assert info.uses_wgmma, f"no wgmma: {info}"


def test_tuple_arguments_specialize_like_scalars():
    """Each element of a tuple argument is specialised as Triton's launcher specialises a scalar:
    1 becomes a constant, a multiple of 16 carries the divisibility hint, keyed by (parameter, element)."""
    x = torch.empty(2, 32, 8, 8).to(memory_format=torch.channels_last)
    w = torch.empty(16, 32, 3, 3)
    spec = conv_spec(x, w, None, stride=1, padding=1, dilation=1, groups=1, ndim=2)
    config = candidate_configs(FORWARD, torch.float32, "ieee")[0]
    launch = plan_forward(x, w, None, spec, torch.empty(spec.out_shape), config)
    strides = launch.args["x_strides"]
    assert 1 in strides and any(s > 1 and s % 16 == 0 for s in strides), strides  # both cases occur
    fn = JITFunction(implicit_gemm_forward_kernel.fn)
    signature, constants, attrs = _specialize(fn, _Request.of(launch, 90, False))
    index = next(p.num for p in fn.params if p.name == "x_strides")
    assert signature["x_strides"] == tuple("constexpr" if s == 1 else "i32" for s in strides)
    for element, stride in enumerate(strides):
        assert constants.get((index, element)) == (1 if stride == 1 else None)
        hinted = attrs.get((index, element)) == [["tt.divisibility", 16]]
        assert hinted == (stride != 1 and stride % 16 == 0), (element, stride)


def test_dot_under_16_fails_to_compile():
    """The interpreter runs a BLOCK_K=8 fp16 tile; the compiler for sm_90 must reject it."""
    bad = KernelConfig(block_m=64, block_n=64, block_k=8, num_warps=4, num_stages=3)
    with pytest.raises(GPUCompileError, match="K >= 16"):
        compile_launch(_launch(FORWARD, bad, torch.float16), 90)


def _other_launches(what: str, dtype: torch.dtype) -> Launch:
    """Launches of the kernels outside the tile table: direct, fused epilogue, 1x1, elementwise."""
    x = torch.empty(2, 32, 8, 8, dtype=dtype).to(memory_format=torch.channels_last)
    depthwise_w = torch.empty(64, 1, 3, 3, dtype=dtype)
    spec = conv_spec(x, depthwise_w, None, stride=1, padding=1, dilation=1, groups=32, ndim=2)
    y = torch.empty(spec.out_shape, dtype=dtype, memory_format=torch.channels_last)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    if what == "direct_forward_fused":
        return plan_direct_forward(
            x, depthwise_w, None, spec, y, Epilogue("silu", torch.empty_like(y), torch.empty_like(y))
        )
    if what == "direct_input_grad":
        return plan_direct_input_grad(y, depthwise_w, spec, torch.empty_like(x))
    if what == "direct_weight_grad":
        partial = torch.empty(2, depthwise_w.numel(), dtype=acc)
        return plan_direct_weight_grad(y, x, spec, partial, torch.empty(2, 64, dtype=acc))
    w = torch.empty(64, 32, 1, 1, dtype=dtype)
    spec = conv_spec(x, w, None, stride=1, padding=0, dilation=1, groups=1, ndim=2)
    config = candidate_configs(FORWARD, dtype, "ieee")[0]
    if what == "pointwise_forward_fused":
        assert spec.taps == 1
        return plan_forward(x, w, None, spec, y, config, Epilogue("gelu", torch.empty_like(y), torch.empty_like(y)))
    if what == "activation_grad":
        return Launch(
            activation_grad_kernel,
            (1,),
            {"grad_ptr": y, "saved_ptr": y, "out_ptr": y, "numel": y.numel()},
            {"ACTIVATION": "gelu", "ACC_DTYPE": accumulator_dtype(dtype), "INDEX_64": False, "BLOCK": 1024},
        )
    partial = torch.empty(3, 64, dtype=acc)
    return Launch(
        split_k_sum_kernel,
        (1,),
        {"partial_ptr": partial, "out_ptr": torch.empty(64, dtype=dtype), "flag_ptr": partial, "E": 64, "SPLIT_K": 3},
        {"GATED": False, "INDEX_64": False, "BLOCK": 1024},
    )


OTHER = [
    "direct_forward_fused",
    "direct_input_grad",
    "direct_weight_grad",
    "pointwise_forward_fused",
    "activation_grad",
    "split_k_sum",
]


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"sm{a}")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("what", OTHER)
def test_other_kernels_compile(what, dtype, arch, gpu_tiles):
    info = compile_launch(_other_launches(what, dtype), arch)
    assert info.shared_bytes <= SHARED_MEMORY_LIMIT[arch], f"shared memory over the sm_{arch} limit: {info}"
    assert info.spill_bytes == 0, f"register spills: {info}"


def _channels_last_empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor with channels innermost, of any rank, without touching its memory."""
    order = [1, *range(len(shape) - 1, 1, -1), 0]  # innermost first: C, W, (H, D,) N
    strides, step = [0] * len(shape), 1
    for dim in order:
        strides[dim], step = step, step * shape[dim]
    return torch.empty_strided(shape, strides, dtype=dtype)


# Weight gradients of suite shapes, full size (N, C, K, spatial size, kernel, stride, padding):
# 64 out channels (suite shape 2), 32 (operands swapped, 3-D, shape 27), 3 input channels in
# patches (a ViT patch embedding: W runs of taps x channels), and a strided 1-D one (shape 18).
WEIGHT_GRAD_SHAPES = {
    "r50_c2_3x3": (128, 64, 64, (56, 56), 3, 1, 1),
    "nnunet_s0": (2, 32, 32, (128, 128, 128), 3, 1, 1),
    "vit_patch": (64, 3, 768, (224, 224), 16, 16, 0),
    "w2v2_fe1": (8, 512, 512, (31999,), 3, 2, 0),
}


@pytest.mark.parametrize("name", WEIGHT_GRAD_SHAPES)
def test_weight_grad_of_suite_shapes_uses_wgmma(name, gpu_tiles):
    """bf16, channels-last, the heuristic tile and split: Hopper wgmma, no spills, within shared memory."""
    batch, channels, out_channels, size, kernel, stride, padding = WEIGHT_GRAD_SHAPES[name]
    ndim = len(size)
    x = _channels_last_empty((batch, channels, *size), torch.bfloat16)
    w = _channels_last_empty((out_channels, channels, *(kernel,) * ndim), torch.bfloat16)
    spec = conv_spec(x, w, None, stride=stride, padding=padding, dilation=1, groups=1, ndim=ndim)
    dy = _channels_last_empty(spec.out_shape, torch.bfloat16)
    config = WEIGHT_GRAD.heuristic(spec, torch.bfloat16, "ieee")
    assert config.num_warps >= 4 and max(config.block_m, config.block_n) >= 64, config
    partial = torch.empty(config.split_k, w.numel(), dtype=torch.float32)
    info = compile_launch(plan_weight_grad(dy, x, spec, partial, None, config), 90)
    assert info.uses_wgmma and info.spill_bytes == 0, info
    assert info.shared_bytes <= SHARED_MEMORY_LIMIT[90], info


@pytest.mark.parametrize("kind", ["forward", "input_grad"])
def test_default_layout_compiles_like_channels_last(kind):
    """A contiguous (NCHW) bf16 problem reaches the channels-last kernel: wgmma, no spills, and
    software-pipelined copies (a shared buffer per stage; strided channels compiled to one)."""
    x = torch.empty(2, 64, 8, 8, dtype=torch.bfloat16)
    w = torch.empty(64, 64, 3, 3, dtype=torch.bfloat16)
    spec = conv_spec(x, w, None, stride=1, padding=1, dilation=1, groups=1, ndim=2)
    y = torch.empty(spec.out_shape, dtype=torch.bfloat16)
    config = candidate_configs(FORWARD if kind == "forward" else INPUT_GRAD, torch.bfloat16, "ieee")[0]
    launch = plan_forward(x, w, None, spec, y, config) if kind == "forward" else plan_input_grad(y, w, spec, x, config)
    info = compile_launch(launch, 90)
    stage_bytes = (config.block_m + config.block_n) * config.block_k * 2
    assert info.spill_bytes == 0 and info.uses_wgmma, info
    assert info.shared_bytes >= (config.num_stages - 1) * stage_bytes, info


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"sm{a}")
@pytest.mark.parametrize("what", ["forward", "forward_fused", "input_grad"])
def test_tf32_tiles_of_64_accumulators_compile(what, arch):
    """TF32's first forward and input-gradient tile holds 64 accumulators per thread: no spills on
    a strided, padded 3-D problem (more registers for coordinates and masks than the 2-D one
    above), nor with a fused epilogue; wgmma on Hopper."""
    dtype = torch.float32
    kind = FORWARD if what.startswith("forward") else INPUT_GRAD
    config = candidate_configs(kind, dtype, "tf32")[0]
    assert config.accumulators_per_thread() == 64, config
    x = _channels_last_empty((2, 32, 6, 8, 8), dtype)
    w = _channels_last_empty((64, 32, 3, 3, 3), dtype)
    spec = conv_spec(x, w, None, stride=2, padding=1, dilation=1, groups=1, ndim=3)
    y = _channels_last_empty(spec.out_shape, dtype)
    if kind is INPUT_GRAD:
        launch = plan_input_grad(y, w, spec, torch.empty_like(x), config)
    else:
        epilogue = Epilogue("gelu", torch.empty_like(y), torch.empty_like(y)) if what == "forward_fused" else None
        launch = plan_forward(x, w, None, spec, y, config, *([epilogue] if epilogue else []))
    info = compile_launch(dataclasses.replace(launch, constexprs={**launch.constexprs, "PRECISION": "tf32"}), arch)
    assert info.spill_bytes == 0, info
    assert info.shared_bytes <= SHARED_MEMORY_LIMIT[arch], info
    assert info.uses_wgmma or arch != 90, info


def test_stem_weight_grad_reads_padded_vectors(gpu_tiles):
    """A ResNet stem's weight gradient (3 channels, 7x7, stride 2, padding 3; bf16, full size) as
    the ops plan it: a padded 4-channel copy, then the GEMM reading it in aligned 4-channel
    vectors with no bounds test; wgmma, no spills."""
    x = _channels_last_empty((128, 3, 224, 224), torch.bfloat16)
    w = torch.empty(64, 3, 7, 7, dtype=torch.bfloat16)
    spec = conv_spec(x, w, None, stride=2, padding=3, dilation=1, groups=1, ndim=2)
    with recording_launches() as launches:
        dispatch.weight_grad(_channels_last_empty(spec.out_shape, torch.bfloat16), x, spec, torch.empty_like(w), None)
    pad, gemm = launches[0], launches[1]
    assert gemm.constexprs["X_VECTOR"] == 4 and not gemm.constexprs["MASK_W"], gemm.constexprs
    # 16-pixel blocks of the 112-wide rows under Triton before 3.9 (scalar row offsets).
    assert gemm.constexprs["ROW_BLOCKS"] == ROW_BLOCKS_FOR_FEW_CHANNELS, gemm.constexprs
    for launch in (pad, gemm):
        info = compile_launch(launch, 90)
        assert info.spill_bytes == 0, info
    assert info.uses_wgmma, info


@pytest.mark.parametrize("pass_", ["forward", "input_grad"])
def test_24_channel_runs_load_as_vectors(pass_, gpu_tiles):
    """A channels-last 24-channel layer (strides multiples of 8, not of 16, which is all Triton's
    specialisation sees), forward and input gradient: told runs of 8, the loop loads 16-byte
    async copies and is pipelined across taps; without the hint it loaded scalars, unpipelined
    (and the input gradient spilled)."""
    x = _channels_last_empty((64, 24, 56, 56), torch.bfloat16)
    w = _channels_last_empty((24, 24, 3, 3), torch.bfloat16)
    spec = conv_spec(x, w, None, stride=1, padding=1, dilation=1, groups=1, ndim=2)
    y = _channels_last_empty(spec.out_shape, torch.bfloat16)
    with recording_launches() as launches:
        if pass_ == "forward":
            dispatch.forward(x, w, None, spec, y)
        else:
            dispatch.input_grad(y, w, spec, torch.empty_like(x))
    (launch,) = launches
    runs = ("X_RUN", "W_RUN", "C_RUN") if pass_ == "forward" else ("DY_RUN", "W_RUN", "K_RUN", "C_RUN")
    assert all(launch.constexprs[run] == 8 for run in runs), launch.constexprs
    info = compile_launch(launch, 90, assembly=True)
    assert info.spill_bytes == 0 and info.uses_wgmma, info
    loop = hot_loop(parse_sass(info.assembly.sass))
    assert loop is not None and "LDGSTS" in loop.opcodes and "LDG" not in loop.opcodes, loop.opcodes
    assert dot_loop(info.assembly.ttgir).verdict == "across taps"


# Band-kernel launches of suite-like shapes with the GPU tiles: ConvNeXt's 7x7 on rows of 56
# (segments of 64, the largest accumulator) with the whole fused epilogue, RepLKNet's 31x31 on
# rows of 14 (a widened copy, segments of 16), and Conformer's 1-D 31 taps.
BAND_SHAPES = {
    "convnext_dw7": ((4, 96, 56, 56), (7, 7), 3),
    "replk_dw31": ((2, 64, 14, 14), (31, 31), 15),
    "conformer_dw31": ((2, 128, 1000), (31,), 15),
}


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"sm{a}")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", BAND_SHAPES)
def test_band_kernels_compile(name, dtype, arch, gpu_tiles):
    """Forward with bias, activation, residual and pre-activation, the input gradient, the weight
    gradient with the bias gradient (each with its recomputation of non-finite results), and the
    widening copy: no spills, shared memory within the limit; on sm_90, the band kernels on wgmma."""
    size, kernel, padding = BAND_SHAPES[name]
    ndim = len(kernel)
    x = torch.empty(size, dtype=dtype)
    w = torch.empty(size[1], 1, *kernel, dtype=dtype)
    spec = conv_spec(x, w, None, stride=1, padding=padding, dilation=1, groups=size[1], ndim=ndim)
    y = torch.empty(spec.out_shape, dtype=dtype)
    bias = torch.empty(size[1], dtype=dtype)
    assert dispatch.uses_banded_kernel(x, spec) and dispatch.uses_banded_weight_grad(y, x, spec)
    with recording_launches() as launches:
        dispatch.forward(x, w, bias, spec, y, Epilogue("silu", torch.empty_like(y), torch.empty_like(y)))
        dispatch.input_grad(y, w, spec, torch.empty_like(x))
        dispatch.weight_grad(y, x, spec, torch.empty_like(w), torch.empty_like(bias))
    kernels = {kernel_name for kernel_name in (launch.kernel.fn.__name__ for launch in launches)}
    band_kernels = {"banded_forward_kernel", "banded_weight_grad_kernel"}
    recomputations = {"banded_forward_recompute_kernel", "banded_weight_grad_recompute_kernel"}
    assert band_kernels | recomputations <= kernels, kernels
    if dtype == torch.float16:  # the recomputations' code differs only in a conversion: compiled in bf16
        launches = [launch for launch in launches if launch.kernel.fn.__name__ not in recomputations]
    for launch in launches:
        info = compile_launch(launch, arch)
        assert info.spill_bytes == 0, (launch.kernel.fn.__name__, info)
        assert info.shared_bytes <= SHARED_MEMORY_LIMIT[arch], (launch.kernel.fn.__name__, info)
        if arch == 90 and launch.kernel.fn.__name__ in band_kernels:
            assert info.uses_wgmma, (launch.kernel.fn.__name__, info)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    "groups, channels, out_channels",
    [(32, 128, 128), (6, 48, 18), (20, 80, 40)],
    ids=["resnext_g32", "bundle_of_48", "bundles_of_16"],
)
def test_bundled_weight_grad_compiles(groups, channels, out_channels, arch, gpu_tiles):
    """bf16, channels-last, a weight gradient over bundles of groups (``dispatch.group_bundle``)
    with the heuristic tile, as ResNeXt's stage 1 runs it: one GEMM launch, no spills, wgmma on
    Hopper. On sm_80 the operand-swapped tile of under 64 output channels spills (820 and 296
    bytes here), as it does for an ungrouped convolution of the same GEMM: it is Hopper's tile."""
    x = _channels_last_empty((128, channels, 56, 56), torch.bfloat16)
    w = _channels_last_empty((out_channels, channels // groups, 3, 3), torch.bfloat16)
    spec = conv_spec(x, w, None, stride=1, padding=1, dilation=1, groups=groups, ndim=2)
    dy = _channels_last_empty(spec.out_shape, torch.bfloat16)
    with recording_launches() as launches:
        dispatch.weight_grad(dy, x, spec, torch.empty(w.shape, dtype=torch.bfloat16, device="meta"), None)
    (gemm,) = [launch for launch in launches if "GROUPS" in launch.args and "SPLIT_K" in launch.args]
    assert gemm.args["GROUPS"] < groups, gemm.args
    info = compile_launch(gemm, arch)
    assert info.spill_bytes == 0 or (arch == 80 and gemm.constexprs["SWAP_AB"]), info
    assert info.uses_wgmma or arch != 90, info


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    "groups, channels, out_channels, stride",
    [(32, 128, 128, 1), (32, 128, 128, 2), (6, 48, 48, 1)],
    ids=["resnext_g32", "resnext_g32_s2", "bundle_of_48"],
)
def test_bundled_forward_and_input_grad_compile(groups, channels, out_channels, stride, arch, monkeypatch, gpu_tiles):
    """bf16, channels-last, the forward and input gradient over bundles of groups with the
    heuristic tile: the GEMM flagging tiles not finite (the TMA kernel on Hopper where it applies,
    else the pointer kernel, as on sm_80) compiles without spills, on wgmma on Hopper; the direct
    kernel gated behind it (reading the weight in place, not the tap-major copy) with no spill
    traffic in its loops (8 bytes outside them on sm_80, as the direct kernels' tiles may)."""
    monkeypatch.setattr(tma, "ENABLED", arch >= 90)
    x = _channels_last_empty((128, channels, 56, 56), torch.bfloat16)
    w = _channels_last_empty((out_channels, channels // groups, 3, 3), torch.bfloat16)
    spec = conv_spec(x, w, None, stride=stride, padding=1, dilation=1, groups=groups, ndim=2)
    dy = _channels_last_empty(spec.out_shape, torch.bfloat16)
    with recording_launches() as launches:
        dispatch.forward(x, w, None, spec, _channels_last_empty(spec.out_shape, torch.bfloat16))
        dispatch.input_grad(dy, w, spec, _channels_last_empty(x.shape, torch.bfloat16))
    gemms = [launch for launch in launches if launch.constexprs.get("FLAG_NOT_FINITE")]
    gated = [launch for launch in launches if launch.constexprs.get("GATED")]
    assert len(gemms) == len(gated) == (2 if stride == 1 else 1), launches
    for launch in gemms:
        info = compile_launch(launch, arch)
        assert info.spill_bytes == 0 and (info.uses_wgmma or arch != 90), info
    for launch in gated:
        info = compile_launch(launch, arch, assembly=True)
        in_loops = local_memory_in_loops(parse_sass(info.assembly.sass))
        assert info.spill_bytes <= 8 and in_loops == 0, info


# Suite shapes 15 (ConvNeXt's 7x7) and 14 (EfficientNet's 5x5), channels-last.
PATCH_SHAPES = {"convnext_dw7": ((64, 96, 56, 56), 7), "effnet_dw5": ((128, 240, 28, 28), 5)}


@pytest.mark.parametrize(
    ("dtype", "arch"),
    paired({"bfloat16": torch.bfloat16, "float16": torch.float16}, {f"sm{arch}": arch for arch in ARCHS}),
)
# EfficientNet's 5x5 by default; ConvNeXt's 7x7 (the same launches) with --thorough.
@pytest.mark.parametrize("name", ["effnet_dw5", pytest.param("convnext_dw7", marks=pytest.mark.slow)])
def test_patch_kernel_compiles(name, dtype, arch, gpu_tiles):
    """The channels-last depthwise forward with bias, activation, residual and pre-activation, the
    input gradient and the weight gradient with the bias's on the patch kernels
    (``kernels/patches.py``), each followed by the gated direct kernel (and split sums): no
    spills, shared memory within the limit, the next step's loads in flight while a step
    multiplies (prefetched into registers: a batched dot compiles to ``mma.sync``, not wgmma),
    and no 2-byte shared loads or stores in the loop (the dot's operands through ``STSM`` and
    ``LDSM``: pairs of pixels in one thread, under both Triton versions)."""
    size, kernel = PATCH_SHAPES[name]
    x = torch.empty(size, dtype=dtype).to(memory_format=torch.channels_last)
    w = torch.empty(size[1], 1, kernel, kernel, dtype=dtype)
    spec = conv_spec(x, w, None, stride=1, padding=kernel // 2, dilation=1, groups=size[1], ndim=2)
    y = torch.empty(spec.out_shape, dtype=dtype).to(memory_format=torch.channels_last)
    bias = torch.empty(size[1], dtype=dtype)
    with recording_launches() as launches:
        dispatch.forward(x, w, bias, spec, y, Epilogue("silu", torch.empty_like(y), torch.empty_like(y)))
        dispatch.input_grad(y, w, spec, torch.empty_like(x))
        dispatch.weight_grad(y, x, spec, torch.empty_like(w), torch.empty_like(bias))
    names = [launch.kernel.fn.__name__ for launch in launches]
    assert names == [
        "patch_forward_kernel",
        "direct_forward_kernel",
        "patch_forward_kernel",
        "direct_input_grad_kernel",
        "patch_weight_grad_kernel",
        "patch_taps_kernel",
        "direct_weight_grad_kernel",
        "split_k_sum_kernel",
        "split_k_sum_kernel",
    ]
    for launch in launches:
        dot = launch.kernel.fn.__name__ in ("patch_forward_kernel", "patch_weight_grad_kernel")
        info = compile_launch(launch, arch, assembly=dot)
        assert info.spill_bytes == 0, (launch.kernel.fn.__name__, info)
        assert info.shared_bytes <= SHARED_MEMORY_LIMIT[arch], (launch.kernel.fn.__name__, info)
        if info.assembly is not None:
            loop = dot_loop(info.assembly.ttgir)
            assert loop is not None and loop.verdict == "across taps", (launch.kernel.fn.__name__, loop)
            # Every loop that multiplies: the weight gradient's step-0 programs run one of their own.
            instructions = parse_sass(info.assembly.sass)
            dot_loops = [loop for loop in sass_loops(instructions) if any(map(is_mma, loop.body(instructions)))]
            assert len(dot_loops) == (2 if launch.kernel.fn.__name__ == "patch_weight_grad_kernel" else 1)
            for sass_loop in dot_loops:
                narrow = [
                    i
                    for i in sass_loop.body(instructions)
                    if narrow_shared_access(i, "LDS") or narrow_shared_access(i, "STS")
                ]
                assert not narrow, (launch.kernel.fn.__name__, narrow)


@pytest.mark.parametrize(
    "kind, tile",
    [(PATCH_FORWARD, PATCH_TILES[0]), (PATCH_WEIGHT_GRAD, PATCH_WEIGHT_GRAD_TILES[0])],
    ids=["forward", "weight_grad"],
)
@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"sm{a}")
def test_patch_kernels_compile_with_64_bit_offsets(arch, kind, tile, gpu_tiles):
    """The patch forward and weight gradient of suite shape 15 as a tensor past 2**31 elements
    would launch them (the forward's rows unravelled by integer division, not
    ``indexing.divmod_by``; the weight gradient's rows' images in int64): compile, no spills."""
    size, kernel = PATCH_SHAPES["convnext_dw7"]
    x = torch.empty(size, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    w = torch.empty(size[1], 1, kernel, kernel, dtype=torch.bfloat16)
    spec = conv_spec(x, w, None, stride=1, padding=kernel // 2, dilation=1, groups=size[1], ndim=2)
    y = torch.empty(spec.out_shape, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    launch = kind.plan(spec, x, w, None, y, tile)
    launch = dataclasses.replace(launch, constexprs={**launch.constexprs, "INDEX_64": True})
    info = compile_launch(launch, arch)
    assert info.spill_bytes == 0, info


@pytest.mark.parametrize(
    "kind, tile",
    [
        pytest.param(kind, t, id=f"{kind.name}-{_config_id(t)}")
        for kind, tiles in ((PATCH_FORWARD, PATCH_TILES), (PATCH_WEIGHT_GRAD, PATCH_WEIGHT_GRAD_TILES))
        for t in tiles
    ],
)
def test_patch_tuning_space_compiles(kind, tile, gpu_tiles):
    """Every tile the patch forward's and weight gradient's tuning times, on suite shape 15 (bf16,
    channels-last, sm_90): no spills, shared memory within the limit."""
    size, kernel = PATCH_SHAPES["convnext_dw7"]
    x = torch.empty(size, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    w = torch.empty(size[1], 1, kernel, kernel, dtype=torch.bfloat16)
    spec = conv_spec(x, w, None, stride=1, padding=kernel // 2, dilation=1, groups=size[1], ndim=2)
    y = torch.empty(spec.out_shape, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    info = compile_launch(kind.plan(spec, x, w, None, y, tile), 90)
    assert info.spill_bytes == 0 and info.shared_bytes <= SHARED_MEMORY_LIMIT[90], (tile, info)


# Suite shape 16 (ConvNeXt's 7x7 maps, 768 channels: one image block per program on the
# heuristic's tile) and a batch of 1024 over 128 channels, a 5x5 filter.
PLANE_SHAPES = [((64, 768, 7, 7), 7, 3), ((1024, 128, 7, 7), 5, 2)]


def _plane_compiles() -> list:
    """Per layout: the heuristic's tile, forward and input gradient, for every arch; every other
    tuned tile's forward for sm_90."""
    cases = []
    for channels_last, kind in ((False, PLANE_FORWARD), (True, PLANE_CHANNELS_LAST_FORWARD)):
        cases += [(kind.tiles[0], arch, transposed, channels_last) for arch in ARCHS for transposed in (False, True)]
        cases += [(tile, 90, False, channels_last) for tile in kind.tiles[1:]]
    return [
        pytest.param(
            *case, id=f"{'cl' if case[3] else 'nc'}-{_config_id(case[0])}-sm{case[1]}-{'dx' if case[2] else 'y'}"
        )
        for case in cases
    ]


@pytest.mark.parametrize("tile, arch, transposed, channels_last", _plane_compiles())
def test_plane_kernel_compiles(tile, arch, transposed, channels_last, gpu_tiles):
    """The plane kernel's forward and input gradient (T transposed), bf16, over default-layout
    and channels-last tensors: the heuristic's tile of each layout, with the whole fused epilogue,
    for sm_90 and sm_80, and every other tuned tile's forward without it (the fused epilogue runs
    the heuristic's tile only) for sm_90: no spills, shared memory within the limit; in
    channels-last the operand and the result moved as 16-byte vectors of channels where a
    program takes 8."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    kind = PLANE_CHANNELS_LAST_FORWARD if channels_last else PLANE_FORWARD
    for size, kernel, padding in PLANE_SHAPES:
        x = torch.empty(size, dtype=torch.bfloat16).to(memory_format=memory_format)
        w = torch.empty(size[1], 1, kernel, kernel, dtype=torch.bfloat16)
        b = torch.empty(size[1], dtype=torch.bfloat16)
        spec = conv_spec(x, w, b, stride=1, padding=padding, dilation=1, groups=size[1], ndim=2)
        y = torch.empty(spec.out_shape, dtype=torch.bfloat16).to(memory_format=memory_format)
        result = x if transposed else y
        fused = tile == kind.tiles[0]
        epilogue = Epilogue("silu", torch.empty_like(result), torch.empty_like(result)) if fused else Epilogue()
        launch = plan_plane(
            y if transposed else x, w, b, spec, torch.empty_like(result), torch.zeros((), dtype=torch.int32),
            epilogue, transposed, kind.clipped(spec, tile),
        )  # fmt: skip
        info = compile_launch(launch, arch, assembly=True)
        assert info.spill_bytes == 0 and info.shared_bytes <= SHARED_MEMORY_LIMIT[arch], (size, info)
        if channels_last and tile.block_n == 8:
            assert "LDG.E.128" in info.assembly.sass and "STG.E.128" in info.assembly.sass
