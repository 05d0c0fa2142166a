"""Training a converted model over two processes (gloo) matches one process, with
DistributedDataParallel and with FSDP2 (``fully_shard``, every convolution and the root sharded).

Each rank takes half of a fixed global batch and a mean loss over its half; both wrappers average
the gradients across ranks, which is then the gradient of the mean loss over the whole batch.

triton_conv is imported inside the worker, after it has set ``TRITON_INTERPRET`` as the parent
had it: the kernels read that variable when they are imported.
"""

from __future__ import annotations

import os
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

pytestmark = pytest.mark.ddp

WORLD_SIZE = 2
STEPS = 3
BATCH = 4  # global batch, split evenly over the ranks
LR = 0.1
TIMEOUT_S = 120
TOL = 1e-10  # float64 relative error bound
STRATEGIES = ["ddp", "fsdp2"]


def _make_model(device: str) -> nn.Module:
    """A model of torch's modules (converted afterwards): groups, dilation, depthwise, padding modes."""
    torch.manual_seed(11)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"),
        nn.Tanh(),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2, padding_mode="circular"),
        nn.Tanh(),
        nn.Conv2d(4, 4, 3, padding="same", groups=4, padding_mode="replicate"),
        nn.Tanh(),
        nn.Conv2d(4, 2, 1, bias=False),
    ).to(device=device, dtype=torch.float64)


def _data(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets for every step: (STEPS, BATCH, C, H, W)."""
    generator = torch.Generator().manual_seed(12)
    x = torch.randn(STEPS, BATCH, 2, 6, 5, generator=generator, dtype=torch.float64)
    y = torch.randn(STEPS, BATCH, 2, 6, 5, generator=generator, dtype=torch.float64)
    return x.to(device), y.to(device)


def _train(model: nn.Module, params: list[nn.Parameter], x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """STEPS steps of SGD with a mean loss; returns the gradients of the first step."""
    optimizer = torch.optim.SGD(params, lr=LR, momentum=0.9)
    first_grads: list[torch.Tensor] = []
    for step in range(STEPS):
        optimizer.zero_grad()
        nn.functional.mse_loss(model(x[step]), y[step]).backward()
        if step == 0:
            first_grads = [p.grad.detach().clone() for p in params]
        optimizer.step()
    return first_grads


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly FSDP-sharded DTensor) parameter or gradient, on the CPU."""
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu()


def _wrap(model: nn.Module, strategy: str, device: str) -> nn.Module:
    if strategy == "ddp":
        return nn.parallel.DistributedDataParallel(model, device_ids=[0] if device == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    for module in model:
        if isinstance(module, nn.Conv2d):
            fully_shard(module)
    return fully_shard(model)


def _worker(rank: int, interpret: str | None, device: str, out_dir: str, strategy: str) -> None:
    if interpret is not None:
        os.environ["TRITON_INTERPRET"] = interpret
    import triton_conv
    from triton_conv.kernels import INTERPRETER

    # The ranks meet through a file in the test's own directory, not a TCP port: concurrent tests
    # (pytest-xdist) could pick the same free port between probing it and binding it.
    store = os.path.join(out_dir, "rendezvous")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = triton_conv.convert_model(_make_model(device))
        assert all(isinstance(m, triton_conv.Conv2d) for m in model if isinstance(m, nn.Conv2d))
        wrapped = _wrap(model, strategy, device)
        x, y = _data(device)
        half = BATCH // WORLD_SIZE
        shard = slice(rank * half, (rank + 1) * half)
        first_grads = _train(wrapped, list(model.parameters()), x[:, shard], y[:, shard])
        result = {
            "params": [_full(p) for p in model.parameters()],
            "first_grads": [_full(g) for g in first_grads],
            "interpreter": INTERPRETER,
        }
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _check_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    from triton_conv.testing import relative_error

    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    err = relative_error(actual, expected)
    assert err < TOL, f"{what}: relative error {err:.3e} >= {TOL:.0e}"


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_processes_match_single_process(tmp_path, strategy):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build of torch")
    import triton_conv
    from triton_conv.kernels import INTERPRETER

    from .reference import DEVICE

    # Start the workers first: the single-process reference runs while they start up.
    context = mp.spawn(
        _worker,
        args=(os.environ.get("TRITON_INTERPRET"), DEVICE, str(tmp_path), strategy),
        nprocs=WORLD_SIZE,
        join=False,
    )
    try:
        model = triton_conv.convert_model(_make_model(DEVICE))
        before = [p.detach().cpu().clone() for p in model.parameters()]
        x, y = _data(DEVICE)
        expected_grads = [g.cpu() for g in _train(model, list(model.parameters()), x, y)]
        expected_params = [p.detach().cpu() for p in model.parameters()]

        deadline = time.monotonic() + TIMEOUT_S
        while not context.join(timeout=1):  # raises if a worker failed, with its traceback
            if time.monotonic() > deadline:
                pytest.fail(f"{strategy} workers did not finish in {TIMEOUT_S} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
                process.join()

    for rank in range(WORLD_SIZE):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert result["interpreter"] == INTERPRETER, f"rank {rank} ran the kernels differently from this process"
        for i, (got, want) in enumerate(zip(result["first_grads"], expected_grads, strict=True)):
            _check_close(got, want, f"rank {rank}: gradient of parameter {i} at the first step")
        for i, (got, want, old) in enumerate(zip(result["params"], expected_params, before, strict=True)):
            assert not torch.equal(got, old), f"rank {rank}: parameter {i} did not train"
            _check_close(got, want, f"rank {rank}: parameter {i} after {STEPS} steps")
