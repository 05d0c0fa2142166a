"""The ``triton-conv`` command: ``demo``, ``bench``, ``tune`` and ``gpu-check``.

Each subcommand's arguments and work live beside the code they drive (``demo.py``,
``perf/cli.py``, ``tune.py``, ``gpu_check.py``); this module only dispatches. Every error ends the command
with one line on stderr and exit status 2; ``--debug`` shows the traceback of an unexpected one.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

# subcommand -> (module, help). Each module has add_arguments(parser) and run(args) -> int.
SUBCOMMANDS = {
    "demo": ("triton_conv.demo", "train a small CNN on handwritten digits beside its torch twin"),
    "bench": ("triton_conv.perf.cli", "time the benchmark suite against cuDNN"),
    "tune": ("triton_conv.tune", "autotune the kernels for a model's or a file's conv shapes"),
    "gpu-check": ("triton_conv.gpu_check", "test, benchmark and tune on a CUDA machine in one bounded run"),
}


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors on one line (the usage itself is in --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def one_line(error: BaseException) -> str:
    """An exception's message on one line: its first non-empty line, else its type's name."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="triton-conv", description="Triton convolution kernels for PyTorch")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--debug", action="store_true", help="on an unexpected error, show its traceback")
        try:
            importlib.import_module(module_name).add_arguments(sub)
        except ModuleNotFoundError as missing:
            if not module_name.startswith(missing.name or "\0"):
                raise
            sub.set_defaults(unavailable=f"'{name}' is not built yet ({module_name} is missing)")
    args = parser.parse_args(argv)
    if getattr(args, "unavailable", None):
        parser.error(args.unavailable)
    try:
        return importlib.import_module(SUBCOMMANDS[args.command][0]).run(args)
    except Exception as error:
        if args.debug:
            raise
        print(
            f"triton-conv {args.command}: {type(error).__name__}: {one_line(error)} "
            "(an unexpected error: run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
