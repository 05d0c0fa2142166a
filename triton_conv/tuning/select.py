"""Which config a launch uses: the heuristic, a cached winner, or one timed on first use.

``TRITON_CONV_AUTOTUNE`` picks the mode:

- ``heuristic``: never time anything; the kind's heuristic (``KernelKind.heuristic``).
- ``first_use`` (default): on a CUDA tensor, a key missing from the cache times the first few
  fitting tiles, clipped to the problem where they are GEMM blocks (and, for kinds with split-K,
  a few split counts);
  the winner goes to the in-memory and the on-disk cache.
- ``exhaustive``: as ``first_use``, over every fitting tile and every power-of-two split-K.

Under the interpreter, or for CPU tensors, the heuristic is used and nothing is timed.
``autotuning(mode)`` overrides the variable for the code it wraps and collects what was timed.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
import triton.testing
from triton.errors import TritonError

from ..runtime import INTERPRETER
from ..spec import ConvSpec
from .cache import TunedEntry, cache_for
from .configs import TARGET_PROGRAMS, KernelConfig, candidate_configs
from .key import autotune_key
from .kinds import KernelKind

AUTOTUNE_ENV = "TRITON_CONV_AUTOTUNE"
MODES = ("heuristic", "first_use", "exhaustive")
# How many of each kernel's fitting tiles (best first for large problems) first use times.
FIRST_USE_TILES = 4
# Split-K beyond four times the heuristic's target (about 8 waves on 132 SMs) only adds
# partial-sum traffic, and the cap bounds the float32 partials the timing runs allocate.
SPLIT_K_PROGRAM_CAP = 4 * TARGET_PROGRAMS
MAX_SPLIT_K = 64
# Each split keeps at least this many reduction blocks, or its fixed cost dominates.
MIN_BLOCKS_PER_SPLIT = 4

# What a launcher hands over to be timed: a config's launch (a ``Launch``, or for the weight
# gradient its launch followed by the split-K sum), ready to run repeatedly.
BuildLaunch = Callable[[KernelConfig], Callable[[], object]]


@dataclass(frozen=True)
class TuningRecord:
    """One key tuned in this process: the winner, its time and the heuristic's, in milliseconds."""

    key: str
    config: KernelConfig
    ms: float
    heuristic: KernelConfig
    heuristic_ms: float
    timed: int


@dataclass
class _Session:
    """What ``autotuning`` set: the mode (None: the environment's) and where the timed keys go."""

    mode: str | None
    records: list[TuningRecord]


# The innermost active ``autotuning``. Process-wide rather than a context variable: autograd runs
# the backward of CUDA tensors on its own threads, which must see the mode too.
_session: _Session | None = None
# One tuning at a time: threads missing the same key time it once, and no thread's launches
# disturb another's timings.
_tuning_lock = threading.RLock()


@contextlib.contextmanager
def autotuning(mode: str | None = None) -> Iterator[list[TuningRecord]]:
    """Within, selection runs in ``mode`` (by default ``TRITON_CONV_AUTOTUNE``'s) and every key
    it times is appended, in order, to the yielded list. Sessions nest; one thread opens them
    (the launches they cover may run on any)."""
    global _session
    if mode is not None:
        _check_mode(mode, "mode")
    outer, _session = _session, _Session(mode, [])
    try:
        yield _session.records
    finally:
        _session = outer


def autotune_mode() -> str:
    """The mode of the innermost ``autotuning``, else ``TRITON_CONV_AUTOTUNE``'s (default first_use)."""
    if _session is not None and _session.mode is not None:
        return _session.mode
    return _check_mode(os.environ.get(AUTOTUNE_ENV) or "first_use", AUTOTUNE_ENV)


def _check_mode(mode: str, name: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{name} must be one of {MODES}, got {mode!r}")
    return mode


def can_time(device: torch.device) -> bool:
    """Whether launches on ``device`` can be timed: a real GPU, not the interpreter."""
    return not INTERPRETER and device.type == "cuda"


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def time_ms(run: Callable[[], object]) -> float:
    """The median time of ``run`` in milliseconds (short warm-up and repetition: tuning is online)."""
    return float(triton.testing.do_bench(run, warmup=10, rep=40, return_mode="median"))


def split_k_choices(kind: KernelKind, spec: ConvSpec, tile: KernelConfig, exhaustive: bool) -> list[int]:
    """Powers of two (powers of four on first use) that keep every split busy, 1 included."""
    tiles = kind.output_tiles(spec, tile)
    _, _, reduction = kind.gemm_extents(spec)
    step = 2 if exhaustive else 4
    choices, split = [1], step
    while (
        split <= MAX_SPLIT_K
        and tiles * split <= SPLIT_K_PROGRAM_CAP
        and reduction >= split * MIN_BLOCKS_PER_SPLIT * tile.block_k
    ):
        choices.append(split)
        split *= step
    return choices


def search_space(
    kind: KernelKind, spec: ConvSpec, dtype: torch.dtype, precision: str, heuristic: KernelConfig, exhaustive: bool
) -> list[KernelConfig]:
    """The heuristic first, then the fitting tiles clipped to the problem (no tile wider than it,
    ``KernelKind.clipped``) that the kind admits."""
    tiles = candidate_configs(kind, dtype, precision)
    space = [heuristic]
    for base in tiles if exhaustive else tiles[:FIRST_USE_TILES]:
        tile = kind.clipped(spec, base)
        if kind.admits is not None and not kind.admits(spec, tile):
            continue
        splits = split_k_choices(kind, spec, tile, exhaustive) if kind.split_k is not None else [1]
        space += [c for c in (replace(tile, split_k=s) for s in splits) if c not in space]
    return space


def tune(space: list[KernelConfig], build_launch: BuildLaunch) -> list[tuple[KernelConfig, float]]:
    """Time every config of ``space``; those that fail to compile or launch are left out."""
    timings = []
    for config in space:
        try:
            timings.append((config, time_ms(build_launch(config))))
        except TritonError:
            continue  # e.g. out of shared memory on this GPU: not a candidate here
    return timings


def select_config(
    kind: KernelKind,
    spec: ConvSpec,
    dtype: torch.dtype,
    precision: str,
    layout: str,
    build_launch: BuildLaunch,
    heuristic: KernelConfig,
    device: torch.device,
) -> KernelConfig:
    """The config for ``kind`` on ``spec``: see the module docstring for the modes."""
    mode = autotune_mode()
    if mode == "heuristic" or not can_time(device):
        return heuristic
    key = autotune_key(kind, spec, dtype, precision, layout)
    cache = cache_for(device_name(device))
    config = _cached_config(cache.get(key), mode)
    if config is not None:
        return config
    with _tuning_lock:
        config = _cached_config(cache.get(key), mode)  # another thread may have tuned it meanwhile
        if config is not None:
            return config
        timings = tune(search_space(kind, spec, dtype, precision, heuristic, mode == "exhaustive"), build_launch)
        if not timings:
            raise RuntimeError(f"no {kind.name} config could be compiled and launched for {key}")
        config, ms = min(timings, key=lambda timing: timing[1])
        heuristic_ms = dict(timings).get(heuristic, float("nan"))
        if _session is not None:
            _session.records.append(TuningRecord(key, config, ms, heuristic, heuristic_ms, len(timings)))
        cache.put(key, TunedEntry(config, ms, mode))
        return config


def _cached_config(cached: TunedEntry | None, mode: str) -> KernelConfig | None:
    """The cached winner, if it answers ``mode``: a first-use winner does not answer an exhaustive
    search; an exhaustive one answers both."""
    if cached is not None and (mode == "first_use" or cached.mode == "exhaustive"):
        return cached.config
    return None
