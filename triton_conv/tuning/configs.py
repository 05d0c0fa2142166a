"""Kernel configurations as data, and the heuristic that picks one per problem.

Each kernel has a list of candidate tiles. ``heuristic_config`` clips the default tile to the
problem so that small problems do not run mostly-masked programs; it is what runs without
tuning, and the only thing that runs under the interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass

# The matrix unit needs at least 16 along every dot dimension when compiled for a GPU.
MIN_DOT = 16


@dataclass(frozen=True)
class KernelConfig:
    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    split_k: int = 1

    def blocks(self) -> dict[str, int]:
        """The tile as the kernels' constexpr arguments."""
        return {"BLOCK_M": self.block_m, "BLOCK_N": self.block_n, "BLOCK_K": self.block_k}


# The tiles each GEMM-shaped kernel may use; the first is the default before clipping.
IMPLICIT_GEMM_CONFIGS: dict[str, list[KernelConfig]] = {
    "forward": [
        KernelConfig(128, 128, 64, 8, 3),
        KernelConfig(128, 64, 32, 4, 4),
        KernelConfig(64, 128, 32, 4, 4),
        KernelConfig(64, 64, 32, 4, 4),
        KernelConfig(128, 32, 32, 4, 4),
        KernelConfig(64, 32, 32, 2, 5),
        KernelConfig(32, 32, 16, 2, 4),
    ],
    "input_grad": [
        KernelConfig(128, 128, 64, 8, 3),
        KernelConfig(128, 64, 32, 4, 4),
        KernelConfig(64, 64, 32, 4, 4),
        KernelConfig(64, 32, 32, 2, 5),
        KernelConfig(32, 32, 16, 2, 4),
    ],
    "weight_grad": [
        KernelConfig(64, 64, 64, 4, 3),
        KernelConfig(128, 64, 32, 4, 4),
        KernelConfig(64, 128, 32, 4, 4),
        KernelConfig(32, 32, 64, 2, 4),
        KernelConfig(32, 32, 16, 2, 4),
    ],
}


def _fit(block: int, extent: int) -> int:
    """The smallest power of two covering ``extent``, between the dot minimum and ``block``."""
    size = MIN_DOT
    while size < extent and size < block:
        size *= 2
    return size


def heuristic_config(kind: str, gemm_m: int, gemm_n: int, gemm_k: int, max_split_k: int = 1) -> KernelConfig:
    """The default tile of ``kind`` clipped to a GEMM of ``gemm_m x gemm_n``, reduction ``gemm_k``.

    For the weight gradient, ``gemm_k`` is the long reduction over output pixels that split-K
    spreads over programs; ``max_split_k`` caps how many.
    """
    base = IMPLICIT_GEMM_CONFIGS[kind][0]
    block_m = _fit(base.block_m, gemm_m)
    block_n = _fit(base.block_n, gemm_n)
    block_k = _fit(base.block_k, gemm_k)
    tile = block_m * block_n
    num_warps = 8 if tile >= 128 * 128 else 4 if tile >= 64 * 64 else 2
    split_k = 1
    if max_split_k > 1:
        # Aim for chunks of at least 16 reduction blocks per program.
        split_k = max(1, min(max_split_k, gemm_k // (16 * block_k)))
    return KernelConfig(block_m, block_n, block_k, num_warps, base.num_stages, split_k)
