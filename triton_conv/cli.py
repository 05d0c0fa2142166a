"""The ``triton-conv`` command: ``demo``, ``bench``, ``tune`` and ``gpu-check``.

Each subcommand's arguments and work live beside the code they drive (``demo.py``,
``perf/cli.py``, ``tuning/cli.py``, ``gpu_check.py``); this module only dispatches.
"""

from __future__ import annotations

import argparse
import importlib

# subcommand -> (module, help). Each module has add_arguments(parser) and run(args) -> int.
SUBCOMMANDS = {
    "demo": ("triton_conv.demo", "train a small CNN on handwritten digits beside its torch twin"),
    "bench": ("triton_conv.perf.cli", "time the benchmark suite against cuDNN"),
    "tune": ("triton_conv.tuning.cli", "autotune the kernels for a model's or a file's conv shapes"),
    "gpu-check": ("triton_conv.gpu_check", "test, benchmark and tune on a CUDA machine in one bounded run"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="triton-conv", description="Triton convolution kernels for PyTorch")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        try:
            importlib.import_module(module_name).add_arguments(sub)
        except ModuleNotFoundError as missing:
            if not module_name.startswith(missing.name or "\0"):
                raise
            sub.set_defaults(unavailable=f"'{name}' is not built yet ({module_name} is missing)")
    args = parser.parse_args(argv)
    if getattr(args, "unavailable", None):
        parser.error(args.unavailable)
    return importlib.import_module(SUBCOMMANDS[args.command][0]).run(args)


if __name__ == "__main__":
    raise SystemExit(main())
