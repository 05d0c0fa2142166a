"""The ``triton-conv`` command."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triton-conv", description="Triton convolution kernels for PyTorch")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="train a small CNN on handwritten digits beside its torch twin")
    demo.add_argument("--epochs", type=int, default=3)
    demo.add_argument("--batch-size", type=int, default=64)
    demo.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from .demo import run_demo

        result = run_demo(epochs=args.epochs, batch_size=args.batch_size, device=args.device)
        return 0 if abs(result.triton_accuracy - result.torch_accuracy) <= 0.02 else 1
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
