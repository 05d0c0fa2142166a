"""Several Python threads calling the convolutions, and tuning, at once: every result correct."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from triton_conv.testing import TRITON_CONV
from triton_conv.tuning import cache as cache_module
from triton_conv.tuning.configs import KernelConfig

from .reference import ConvCase, assert_close, make_inputs, reference_forward

pytestmark = pytest.mark.threads

THREADS = 4
CALLS = 25


def _case(thread: int, call: int) -> ConvCase:
    """A different small problem for every call: dimensionality, sizes, groups (GEMM and direct)."""
    ndim = 1 + (thread + call) % 3
    groups = 1 + call % 2
    size = tuple(3 + (call + d + thread) % 3 for d in range(ndim))
    return ConvCase(
        ndim, 1 + thread % 2, 2 * groups, 2 + call % 3 * groups, size, (2,) * ndim, padding=call % 2, groups=groups
    )


def _run(thread: int, call: int, start: threading.Barrier) -> None:
    case = _case(thread, call)
    x, w, b = make_inputs(case, torch.float32, requires_grad=call % 4 == 0)
    if call == 0:
        start.wait()  # every thread's first call at the same moment
    y = TRITON_CONV[case.ndim](x, w, b, **case.kwargs())
    assert_close(y, reference_forward(case, x, w, b).float(), torch.float32, case.reduction, f"{case.id} forward")
    if x.requires_grad:
        dy = torch.randn_like(y)
        got = torch.autograd.grad(y, [x, w, b], dy)
        ref = [t.detach().double().requires_grad_() for t in (x, w, b)]
        want = torch.autograd.grad(reference_forward(case, *ref), ref, dy.double())
        for name, g, r in zip(("input", "weight", "bias"), got, want):
            assert_close(g, r.float(), torch.float32, case.reduction * 8, f"{case.id} {name} gradient")


def test_concurrent_calls_are_correct():
    start = threading.Barrier(THREADS)

    def worker(thread: int) -> None:
        for call in range(CALLS):
            _run(thread, call, start)

    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(worker, t) for t in range(THREADS)]:
            future.result()  # re-raises a thread's failure


def test_concurrent_tuning_cache_writes_keep_every_entry(tmp_path, monkeypatch):
    """Threads putting entries into one device's cache: all of them in memory and on disk."""
    monkeypatch.setenv("TRITON_CONV_CACHE_DIR", str(tmp_path))
    device = "Threaded GPU"
    entry = cache_module.TunedEntry(KernelConfig(32, 32, 32, 4, 3), 1.0, "first_use")

    def put(thread: int) -> None:
        for i in range(CALLS):
            cache_module.cache_for(device).put(f"key-{thread}-{i}", entry)

    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(put, t) for t in range(THREADS)]:
            future.result()
    keys = {f"key-{t}-{i}" for t in range(THREADS) for i in range(CALLS)}
    assert set(cache_module.cache_for(device).entries()) >= keys
    assert set(cache_module.ConfigCache(device, folder=tmp_path).entries()) >= keys
