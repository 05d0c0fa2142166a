"""What each implicit-GEMM kernel costs on Hopper, per shipped config, without a GPU.

Every config that ``candidate_configs`` keeps for a dtype is compiled for sm_90 by Triton's
real compiler (``gpu_compile.compile_launch``), on the launch the ops would plan for suite
shape 2's channels and filter (64 -> 64, 3x3, channels-last) at a small spatial size: registers,
spills and shared memory depend on the tile and dtype, not on the problem's extent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from triton_conv.kernels.common import Launch
from triton_conv.kernels.gpu_compile import SHARED_MEMORY_LIMIT, GPUCompileError, compile_launch
from triton_conv.kernels.implicit_gemm_forward import plan_forward
from triton_conv.kernels.implicit_gemm_input_grad import plan_input_grad
from triton_conv.kernels.implicit_gemm_weight_grad import plan_weight_grad
from triton_conv.spec import output_memory_format
from triton_conv.tuning.configs import KernelConfig, candidate_configs

from .harness import in_layout
from .suite import DTYPES, SHAPES_BY_NUMBER

# Suite pass -> the kernel that computes it.
KERNELS = {"F": "forward", "D": "input_grad", "W": "weight_grad"}
ARCH = 90


@dataclass(frozen=True)
class StaticRow:
    """One kernel x dtype x config compiled for sm_90, or the compiler's error."""

    kernel: str
    dtype: str
    config: KernelConfig
    registers: int | None = None
    spill_bytes: int | None = None
    shared_bytes: int | None = None
    uses_wgmma: bool | None = None
    error: str = ""

    @property
    def problems(self) -> list[str]:
        """What would hurt on the GPU: a compile error, spills, shared memory over the limit, no wgmma for 16-bit."""
        if self.error:
            return [self.error]
        found = []
        if self.spill_bytes:
            found.append("spills")
        if self.shared_bytes > SHARED_MEMORY_LIMIT[ARCH]:
            found.append("shared memory over the limit")
        if DTYPES[self.dtype].dtype.itemsize == 2 and not self.uses_wgmma:
            found.append("no wgmma")
        return found


def static_launch(kernel: str, config: KernelConfig, dtype_name: str) -> Launch:
    """The launch of ``kernel`` with ``config`` as the ops would plan it, without bias (as benchmarked)."""
    dtype = DTYPES[dtype_name]
    shape = dataclasses.replace(SHAPES_BY_NUMBER[2], batch=2, size=(8, 8))
    spec = shape.geometry()
    x = in_layout(torch.empty(shape.input_shape(), dtype=dtype.dtype), "channels_last")
    w = in_layout(torch.empty(shape.weight_shape(), dtype=dtype.dtype), "channels_last")
    y = torch.empty(spec.out_shape, dtype=dtype.dtype, memory_format=output_memory_format(x, w))
    if kernel == "forward":
        launch = plan_forward(x, w, None, spec, y, config)
    elif kernel == "input_grad":
        launch = plan_input_grad(y, w, spec, torch.empty_like(x), config)
    else:
        partial = torch.empty(config.split_k, w.numel(), dtype=torch.float32)
        launch = plan_weight_grad(y, x, spec, partial, None, config)
    # On a CPU tensor the launchers pick IEEE; TF32 is what CUDA runs when cudnn.allow_tf32 is set.
    precision = "tf32" if dtype.tf32 else "ieee"
    return dataclasses.replace(launch, constexprs={**launch.constexprs, "PRECISION": precision})


def static_rows(passes: list[str], dtype_names: list[str], max_configs: int | None = None) -> list[StaticRow]:
    """Compile each kernel of ``passes`` for each dtype and shipped config (the first ``max_configs``)."""
    rows = []
    for pass_ in passes:
        kernel = KERNELS[pass_]
        for dtype_name in dtype_names:
            dtype = DTYPES[dtype_name]
            configs = candidate_configs(kernel, dtype.dtype, "tf32" if dtype.tf32 else "ieee")[:max_configs]
            for config in configs:
                try:
                    info = compile_launch(static_launch(kernel, config, dtype_name), ARCH)
                except GPUCompileError as e:
                    rows.append(StaticRow(kernel, dtype_name, config, error=str(e).splitlines()[0]))
                    continue
                rows.append(
                    StaticRow(
                        kernel, dtype_name, config, info.registers, info.spill_bytes, info.shared_bytes, info.uses_wgmma
                    )
                )
    return rows


def static_table(rows: list[StaticRow]) -> str:
    """A Markdown table: one line per kernel, dtype and config."""
    lines = [
        f"| kernel | dtype | BLOCK_M x N x K | warps | stages | split-K | registers | spill bytes "
        f"| shared KiB | wgmma | problems (sm_{ARCH}) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        c = r.config
        tile = f"{c.block_m} x {c.block_n} x {c.block_k}"
        if r.error:
            cost = "| | | | "
        else:
            cost = (
                f"| {r.registers} | {r.spill_bytes} | {r.shared_bytes / 1024:.1f} | {'yes' if r.uses_wgmma else 'no'} "
            )
        problems = "; ".join(r.problems) or "none"
        lines.append(
            f"| {r.kernel} | {r.dtype} | {tile} | {c.num_warps} | {c.num_stages} | {c.split_k} {cost}| {problems} |"
        )
    return "\n".join(lines)
