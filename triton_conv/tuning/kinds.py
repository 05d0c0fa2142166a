"""What makes a GEMM kernel a kind of its own for tuning: one ``KernelKind`` per kernel.

Each kernel module defines its kind beside its launcher (``kernels/implicit_gemm_*.py``) and
``kernels/dispatch.py`` lists them in ``KERNEL_KINDS``, which ``triton-conv tune`` and the
static report iterate. Selection, the search space and the key take the kind, so a new kernel
(its own tiles in ``configs.py``, its own GEMM) needs no edit here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..spec import ConvSpec
from .configs import KernelConfig, clip_config, gpu_tiles, heuristic_config

# (M, N, K): the GEMM rows and columns a kernel tiles with BLOCK_M and BLOCK_N, and the
# reduction it takes BLOCK_K at a time.
GemmExtents = tuple[int, int, int]


@dataclass(frozen=True)
class KernelKind:
    """One kernel as tuning sees it: an implicit GEMM, a band, patch or plane kernel
    (``kernels/banded.py``, ``patches.py``, ``planes.py``) or a direct kernel (``kernels/direct.py``,
    whose tiles are CUDA-core knobs: ``gemm_blocks``).

    Attributes:
        name: the autotune key's first field (and so part of every cached entry's key).
        pass_: the pass of a training step it computes: "F" forward, "D" input gradient,
            "W" weight gradient (the benchmark suite's letters).
        tiles: its candidate tiles, best first for large problems (data in ``configs.py``).
        interpreter_tile: its tile under Triton's interpreter (``configs.INTERPRETER_CONFIGS``).
        gemm_extents: (M, N, K) of the GEMM it tiles, per group (and per stride phase for the
            input gradient), from the convolution's geometry.
        dense_gemm: (M, N, K) of the plain matmul doing its multiply-adds, per group: what the
            static report compares it against.
        key_pixels: the pixel count the autotune key buckets.
        key_layout: the key's layout field, from the convolution's input and output (N, C,
            *spatial) as the op holds them: the layout of the operand the kernel reads pixels from.
        plan: the kernel's launch (a ``kernels.common.Launch``, not run) with a given tile for
            the convolution of input x by weight w (bias b, or None) into output y:
            ``(spec, x, w, b, y, tile)``, what compile checks build. The forward adds the bias,
            the weight gradient computes its gradient too, the input gradient ignores it.
        adjust_tile: what the kind changes in the clipped first tile, if anything.
        split_k: the heuristic's split count of a reduction shared by ``tiles`` output tiles of a
            tile (``(spec, dtype, tile, tiles)``); None for kernels without split-K.
        key_fields: more of the geometry that decides its winner, as autotune-key fields
            (the band kernels' row width); None for none.
        admits: whether a (clipped) tile can run the problem at all (the TMA kernel's reduction
            block must divide C/groups); None: every tile can.
        gemm_blocks: its tiles are blocks of a GEMM on the matrix unit, so the register,
            shared-memory and wgmma budget (``configs.fits``) applies and a tile is clipped to
            the GEMM. False for the direct kernels, whose tiles are CUDA-core knobs used as given,
            and the band, patch and plane kernels, whose tiles are their own (some cut by ``fit``).
        fit: for a kind without ``gemm_blocks``, what of a tile the problem cuts (the band weight
            gradient's lines per step, the patch weight gradient's rows, the plane kernel's images
            and channels per program), so that tiles the same on a problem are timed once; None:
            used as given.
    """

    name: str
    pass_: str
    tiles: Sequence[KernelConfig]
    interpreter_tile: KernelConfig
    gemm_extents: Callable[[ConvSpec], GemmExtents]
    dense_gemm: Callable[[ConvSpec], GemmExtents]
    key_pixels: Callable[[ConvSpec], int]
    key_layout: Callable[[torch.Tensor, torch.Tensor], str]
    plan: Callable[[ConvSpec, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, KernelConfig], Any]
    adjust_tile: Callable[[ConvSpec, torch.dtype, str, KernelConfig], KernelConfig] | None = None
    split_k: Callable[[ConvSpec, torch.dtype, KernelConfig, int], int] | None = None
    key_fields: Callable[[ConvSpec], tuple[str, ...]] | None = None
    admits: Callable[[ConvSpec, KernelConfig], bool] | None = None
    gemm_blocks: bool = True
    fit: Callable[[ConvSpec, KernelConfig], KernelConfig] | None = None

    def output_tiles(self, spec: ConvSpec, tile: KernelConfig) -> int:
        """The (M x N) output tiles of every group: the programs of one split (at least one
        column block, as the weight gradient's bias rides along in the first)."""
        m, n, _ = self.gemm_extents(spec)
        return -(-m // tile.block_m) * max(1, -(-n // tile.block_n)) * spec.groups

    def clipped(self, spec: ConvSpec, tile: KernelConfig) -> KernelConfig:
        """``tile`` fitted to the problem ``spec``: clipped to its GEMM (see ``gemm_blocks``), or
        cut by ``fit``."""
        if self.gemm_blocks:
            return clip_config(tile, *self.gemm_extents(spec))
        return self.fit(spec, tile) if self.fit is not None else tile

    def heuristic(self, spec: ConvSpec, dtype: torch.dtype, precision: str) -> KernelConfig:
        """What runs without tuning: the first fitting tile clipped to the GEMM, adjusted by the
        kind, with its split-K count (GEMM kinds); for a kind whose tiles are not GEMM blocks, its
        first tile (its interpreter tile under the interpreter) cut by ``fit`` (the direct, band
        and patch kernels compute their own)."""
        if not self.gemm_blocks:
            return self.clipped(spec, self.tiles[0] if gpu_tiles() else self.interpreter_tile)
        tile = heuristic_config(self, dtype, precision, *self.gemm_extents(spec))
        if self.adjust_tile is not None:
            tile = self.adjust_tile(spec, dtype, precision, tile)
        if self.split_k is not None:
            tile = replace(tile, split_k=self.split_k(spec, dtype, tile, self.output_tiles(spec, tile)))
        return tile
