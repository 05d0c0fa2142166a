"""Every shipped forward tile compiles for Hopper (sm_90) and Ampere (sm_80), without a GPU.

The interpreter accepts tiles a GPU compiler rejects and never runs out of registers or shared
memory; these tests compile each launch for real and check what it costs on the device.
"""

import dataclasses

import pytest
import torch

from triton_conv.kernels.common import Launch
from triton_conv.kernels.gpu_compile import SHARED_MEMORY_LIMIT, GPUCompileError, compile_launch
from triton_conv.kernels.implicit_gemm_forward import plan_forward
from triton_conv.kernels.implicit_gemm_input_grad import plan_input_grad
from triton_conv.kernels.implicit_gemm_weight_grad import plan_weight_grad
from triton_conv.spec import conv_spec, output_memory_format
from triton_conv.tuning.configs import IMPLICIT_GEMM_CONFIGS, KernelConfig, candidate_configs

from .reference import THOROUGH

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


def _launch(kind: str, config: KernelConfig, dtype: torch.dtype, precision: str = "ieee") -> Launch:
    """The launch of ``kind`` for a small 3x3 conv2d with ``config``, as the ops would plan it.

    Channels-last, the layout whose loads the kernels vectorize and software-pipeline, so that
    shared memory is at its largest.
    """
    x = torch.empty(2, 32, 8, 8, dtype=dtype).to(memory_format=torch.channels_last)
    w = torch.empty(64, 32, 3, 3, dtype=dtype).to(memory_format=torch.channels_last)
    b = torch.empty(64, dtype=dtype)
    spec = conv_spec(x, w, b, stride=1, padding=1, dilation=1, groups=1, ndim=2)
    y = torch.empty(spec.out_shape, dtype=dtype, memory_format=output_memory_format(x, w))
    if kind == "forward":
        launch = plan_forward(x, w, b, spec, y, config)
    elif kind == "input_grad":
        launch = plan_input_grad(y, w, spec, torch.empty_like(x), config)
    else:
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        partial = torch.empty(config.split_k, w.numel(), dtype=acc)
        launch = plan_weight_grad(y, x, spec, partial, torch.empty(config.split_k, 64, dtype=acc), config)
    return dataclasses.replace(launch, constexprs={**launch.constexprs, "PRECISION": precision})


# Every shipped tile that fits each dtype; sm_80 in thorough mode (each compile takes seconds).
CASES = [
    pytest.param(kind, variant, config, arch, id=f"{kind}-{_variant_id(variant)}-{_config_id(config)}-sm{arch}")
    for arch in (ARCHS if THOROUGH else ARCHS[:1])
    for kind in IMPLICIT_GEMM_CONFIGS
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


def test_dot_under_16_fails_to_compile():
    """The interpreter runs a BLOCK_K=8 fp16 tile; the compiler for sm_90 must reject it."""
    bad = KernelConfig(block_m=64, block_n=64, block_k=8, num_warps=4, num_stages=3)
    with pytest.raises(GPUCompileError, match="K >= 16"):
        compile_launch(_launch("forward", bad, torch.float16), 90)
