"""The main job: train a small CNN with triton_conv beside its plain-torch twin.

Data: scikit-learn's bundled handwritten digits (8x8 images, no download). Both models start
from the same weights and see the same batches in the same order; the demo prints both losses
per epoch, the test accuracies, and the largest difference between the two models.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

import triton_conv


@dataclass
class DemoResult:
    triton_losses: list[float]
    torch_losses: list[float]
    triton_accuracy: float
    torch_accuracy: float
    max_parameter_difference: float


def digits_dataset(device: torch.device, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """(train_x, train_y, test_x, test_y): 1797 digits as (N, 1, 8, 8) float32 in [0, 1], 80/20 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[order].to(device), y[order].to(device)
    split = int(0.8 * len(x))
    return x[:split], y[:split], x[split:], y[split:]


def digits_cnn() -> nn.Sequential:
    """A small CNN with a plain, a strided and a grouped convolution."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, groups=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        correct = (model(x).argmax(dim=1) == y).float().mean().item()
    model.train()
    return correct


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_demo(epochs: int = 4, batch_size: int = 64, seed: int = 0, device: str | None = None) -> DemoResult:
    from tqdm import tqdm

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)
    train_x, train_y, test_x, test_y = digits_dataset(dev, seed)
    reference = digits_cnn().to(dev)
    model = triton_conv.convert_model(copy.deepcopy(reference))
    models = {"triton_conv": model, "torch": reference}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=3e-3) for name, m in models.items()}
    loss_fn = nn.CrossEntropyLoss()
    step_seconds = {name: 0.0 for name in models}
    history: dict[str, list[float]] = {name: [] for name in models}

    print(f"Training a {sum(p.numel() for p in model.parameters())}-parameter CNN on {len(train_x)} digits ({dev}):")
    print(
        f"  {sum(isinstance(m, triton_conv.Conv2d) for m in model.modules())} convolutions run on triton_conv, "
        "beside the same model in plain torch, from the same initial weights."
    )
    steps = 0
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed + epoch)).to(dev)
        totals = {name: 0.0 for name in models}
        batches = range(0, len(train_x), batch_size)
        bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False)
        for start in bar:
            idx = order[start : start + batch_size]
            for name, m in models.items():
                _sync(dev)
                begin = time.perf_counter()
                optimizers[name].zero_grad()
                loss = loss_fn(m(train_x[idx]), train_y[idx])
                loss.backward()
                optimizers[name].step()
                _sync(dev)
                step_seconds[name] += time.perf_counter() - begin
                totals[name] += loss.item() * len(idx)
            steps += 1
            bar.set_postfix(
                triton=f"{totals['triton_conv'] / (start + len(idx)):.4f}",
                torch=f"{totals['torch'] / (start + len(idx)):.4f}",
            )
        for name in models:
            history[name].append(totals[name] / len(train_x))
        print(f"epoch {epoch}: loss triton_conv {history['triton_conv'][-1]:.5f}   torch {history['torch'][-1]:.5f}")

    accuracy = {name: _accuracy(m, test_x, test_y) for name, m in models.items()}
    difference = max((a - b).abs().max().item() for a, b in zip(model.parameters(), reference.parameters()))
    print(f"test accuracy: triton_conv {accuracy['triton_conv']:.2%}   torch {accuracy['torch']:.2%}")
    print(f"largest parameter difference after training: {difference:.2e}")
    print(
        f"largest per-epoch loss difference: "
        f"{max(abs(a - b) for a, b in zip(history['triton_conv'], history['torch'])):.2e}"
    )
    if dev.type == "cuda":
        ms = {name: 1e3 * s / steps for name, s in step_seconds.items()}
        print(
            f"time per training step: triton_conv {ms['triton_conv']:.2f} ms   torch/cuDNN {ms['torch']:.2f} ms "
            "(includes autotuning and compilation on first use)"
        )
    return DemoResult(history["triton_conv"], history["torch"], accuracy["triton_conv"], accuracy["torch"], difference)


def _cannot_run(args: argparse.Namespace) -> str | None:
    """Why the demo cannot run with these arguments on this machine (one line), or None."""
    if args.epochs < 1 or args.batch_size < 1:
        return f"--epochs ({args.epochs}) and --batch-size ({args.batch_size}) must be at least 1"
    if args.device is not None:
        try:
            device = torch.device(args.device)
        except RuntimeError:
            return f"--device {args.device}: not a device torch knows; use cpu or cuda"
        if device.type not in ("cpu", "cuda"):
            return f"--device {args.device}: the demo runs on cpu or cuda"
        if device.type == "cuda" and not torch.cuda.is_available():
            return f"--device {args.device}: this machine has no CUDA GPU (or torch is a CPU build); use --device cpu"
    missing = [name for name in ("sklearn", "tqdm") if importlib.util.find_spec(name) is None]
    if missing:
        return f"needs {' and '.join(missing)}, which are not installed; pip install scikit-learn tqdm"
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")


def run(args: argparse.Namespace) -> int:
    """Exit status 1 if the two models' test accuracies differ by more than two points, 2 if it cannot run."""
    problem = _cannot_run(args)
    if problem:
        print(f"triton-conv demo: {problem}", file=sys.stderr)
        return 2
    result = run_demo(epochs=args.epochs, batch_size=args.batch_size, device=args.device)
    return 0 if abs(result.triton_accuracy - result.torch_accuracy) <= 0.02 else 1
