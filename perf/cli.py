"""``triton-conv bench``: time the suite against cuDNN, or smoke-run, inspect or report it.

Modes (one at a time):
  (none)            the suite on the CUDA GPU, appended to perf/results/results.csv
  --smoke           the same harness on tiny shapes, on CPU through Triton's interpreter (not a speed)
  --static          the speed proxy: each suite pass's launches compiled for sm_90 and read (perf/static.py)
  --static-configs  registers, spills, shared memory and wgmma of every GEMM kernel and shipped config on sm_90
  --report CSV      the Markdown tables (and with --plots, PNGs in perf/plots/) of a results CSV
  --write-docs      regenerate docs/performance.md from the results CSV and perf/NOTES.md's roofline table
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch

from triton_conv.kernels import INTERPRETER
from triton_conv.kernels.dispatch import KERNEL_KINDS

from .harness import DEFAULT_CSV, SMOKE_CSV, Environment, Job, ResultRow, read_rows, run_jobs
from .report import markdown_report, write_docs, write_plots
from .static import (
    STATIC_PASSES,
    case_rows,
    config_rows,
    config_table,
    static_cases,
    static_table,
    write_dump,
)
from .suite import (
    HEADLINE_DTYPE,
    LAYOUTS,
    PASSES,
    SMOKE_DTYPES,
    SUITE,
    SUITE_DTYPES,
    TARGETS_BY_KEY,
    SuiteShape,
    smoke_shape,
)

NO_GPU = (
    "triton-conv bench: this machine has no CUDA GPU, so nothing can be timed; run --smoke (the harness on "
    "tiny shapes through Triton's interpreter, not a speed), --static (kernel costs compiled for sm_90) or "
    "--report CSV (the tables of results measured elsewhere)"
)


def _split(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated option values, flattened."""
    return [v for value in values or [] for v in value.split(",") if v]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny shapes on CPU through the interpreter (not a speed)")
    mode.add_argument("--static", action="store_true", help="compile each pass's launches for sm_90 and read them")
    mode.add_argument("--static-configs", action="store_true", help="compile every GEMM kernel and shipped config")
    mode.add_argument("--report", type=Path, metavar="CSV", help="print the Markdown report of a results CSV")
    mode.add_argument("--write-docs", action="store_true", help="regenerate docs/performance.md and perf/NOTES.md")
    parser.add_argument("--shape", "--shapes", action="append", metavar="N|NAME", help="suite shapes by number or name")
    parser.add_argument("--class", dest="classes", action="append", choices=list(TARGETS_BY_KEY), metavar="CLASS",
                        help=f"only the (shape, pass) pairs of target classes: {', '.join(TARGETS_BY_KEY)}")  # fmt: skip
    parser.add_argument("--dtype", action="append", metavar="DTYPE", help=f"{', '.join(SUITE_DTYPES)} (also --static)")
    parser.add_argument(
        "--pass",
        "--passes",
        dest="passes",
        action="append",
        metavar="PASS",
        help="F, D, W, FB, E (fused epilogue); --static: F, D, W",
    )
    parser.add_argument("--layout", action="append", metavar="LAYOUT", help=f"{', '.join(LAYOUTS)} (default: both)")
    parser.add_argument("--dump", type=Path, metavar="DIR", help="--static: write TTGIR, PTX, SASS and index.json")
    parser.add_argument("--csv", type=Path, help="results CSV to append to (or, with --write-docs, to read)")
    parser.add_argument("--plots", action="store_true", help="also draw PNG plots into perf/plots/ (needs matplotlib)")
    parser.add_argument("--max-configs", type=int, metavar="N", help="--static-configs: the first N configs per kernel")


def run(args: argparse.Namespace) -> int:
    try:
        _validate(args)
    except ValueError as e:
        print(f"triton-conv bench: {e}", file=sys.stderr)
        return 2
    if args.report is not None:
        return _report(args.report, args.plots)
    if args.write_docs:
        return _write_docs(args.csv)
    if args.static:
        return _static(args)
    if args.static_configs:
        return _static_configs(args)
    if args.smoke:
        return _smoke(args)
    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    return _measure(args, torch.device("cuda"))


def _validate(args: argparse.Namespace) -> None:
    unknown = [d for d in _split(args.dtype) if d not in SUITE_DTYPES]
    if unknown:
        raise ValueError(f"unknown --dtype {unknown}; choose from {list(SUITE_DTYPES)}")
    unknown = [p for p in _split(args.passes) if p not in PASSES]
    if unknown:
        raise ValueError(f"unknown --pass {unknown}; choose from {list(PASSES)}")
    unknown = [layout for layout in _split(args.layout) if layout not in LAYOUTS]
    if unknown:
        raise ValueError(f"unknown --layout {unknown}; choose from {list(LAYOUTS)}")
    _selected_shapes(args)


def _selected_shapes(args: argparse.Namespace) -> list[SuiteShape]:
    wanted = _split(args.shape)
    by_key = {str(s.number): s for s in SUITE} | {s.name: s for s in SUITE}
    unknown = [w for w in wanted if w not in by_key]
    if unknown:
        raise ValueError(f"unknown --shape {unknown}; give numbers 1-{len(SUITE)} or names such as {SUITE[0].name}")
    return [by_key[w] for w in dict.fromkeys(wanted)] if wanted else list(SUITE)


def select_jobs(args: argparse.Namespace, smoke: bool) -> list[Job]:
    """The (shape, dtype, passes) jobs the filters leave; smoke runs get tiny shapes and CPU dtypes.

    ``--class`` keeps exactly its classes' (shape, pass) pairs, so forward+backward, which no
    class judges, runs only without it.
    """
    passes_wanted = set(_split(args.passes))
    dtypes_wanted = set(_split(args.dtype))
    class_pairs = {(s.number, p) for key in args.classes or [] for s, p in TARGETS_BY_KEY[key].members()}
    jobs = []
    for shape in _selected_shapes(args):
        passes = tuple(
            p
            for p in shape.all_passes()
            if (not passes_wanted or p in passes_wanted) and (not class_pairs or (shape.number, p) in class_pairs)
        )
        if not passes:
            continue
        for dtype in shape.dtypes():
            if dtypes_wanted and dtype not in dtypes_wanted:
                continue
            if smoke:
                if dtype not in SMOKE_DTYPES:
                    continue
                jobs.append(Job(smoke_shape(shape), SMOKE_DTYPES[dtype], passes))
            else:
                jobs.append(Job(shape, dtype, passes))
    return jobs


def _measure(args: argparse.Namespace, device: torch.device) -> int:
    smoke = device.type == "cpu"
    jobs = select_jobs(args, smoke)
    if not jobs:
        print("triton-conv bench: the filters leave nothing to run", file=sys.stderr)
        return 2
    csv_path = args.csv or (SMOKE_CSV if smoke else DEFAULT_CSV)
    env = Environment.detect(device)
    if smoke:
        print("SMOKE RUN: tiny shapes on CPU through Triton's interpreter; times are wall clock, NOT a speed.")
    layouts = tuple(layout for layout in LAYOUTS if layout in _split(args.layout)) or LAYOUTS
    rows = run_jobs(jobs, env, csv_path, layouts=layouts)
    print(f"\n{len(rows)} rows appended to {csv_path}\n")
    print(markdown_report(rows))
    if args.plots:
        _plots(rows)
    failed = [r for r in rows if r.check != "ok"]
    for r in failed:
        print(f"FAILED: {r.shape} {r.name} {r.pass_} {r.dtype} {r.layout}: {r.check}", file=sys.stderr)
    return 1 if failed else 0


def _smoke(args: argparse.Namespace) -> int:
    if INTERPRETER:
        return _measure(args, torch.device("cpu"))
    # The kernels became interpreted or compiled when triton_conv was imported: run again in a
    # process that imports it with TRITON_INTERPRET=1, so that the smoke run is the real code path.
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    return subprocess.call([sys.executable, "-m", "triton_conv.cli", "bench", *_argv(args, "--smoke")], env=env)


def _argv(args: argparse.Namespace, mode: str) -> list[str]:
    """The command line of ``args`` for re-running ``mode`` (``--smoke`` or ``--static``) in another process."""
    argv = [mode]
    for flag, values in (("--shape", args.shape), ("--class", args.classes), ("--dtype", args.dtype),
                         ("--pass", args.passes), ("--layout", args.layout)):  # fmt: skip
        for value in values or []:
            argv += [flag, value]
    for flag, path in (("--csv", args.csv), ("--dump", args.dump)):
        if path is not None:
            argv += [flag, str(path)]
    if args.plots:
        argv.append("--plots")
    return argv


def _static(args: argparse.Namespace) -> int:
    if INTERPRETER:
        # The interpreter plans its own large tiles: plan and compile in a process without it.
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        return subprocess.call([sys.executable, "-m", "triton_conv.cli", "bench", *_argv(args, "--static")], env=env)
    shapes = [s.number for s in _selected_shapes(args)]
    passes = [p for p in _split(args.passes) if p in STATIC_PASSES] or list(STATIC_PASSES)
    cases = static_cases(shapes, passes, _split(args.dtype) or [HEADLINE_DTYPE], _split(args.layout) or None)
    print(f"Compiling {len(cases)} cases for sm_90 (no GPU needed; a few seconds to a minute each)...", flush=True)
    rows = []
    for case in cases:
        print(f"  {case.label}", flush=True)
        rows += case_rows(case)
    print(static_table(rows))
    if args.dump is not None:
        print(f"\nTTGIR, PTX, SASS and {write_dump(rows, args.dump)}")
    return 1 if any(r.error for r in rows) else 0


def _static_configs(args: argparse.Namespace) -> int:
    config_passes = list(dict.fromkeys(kind.pass_ for kind in KERNEL_KINDS))
    passes = [p for p in _split(args.passes) if p in config_passes] or config_passes
    dtypes = _split(args.dtype) or list(SUITE_DTYPES)
    kinds = [kind.name for kind in KERNEL_KINDS if kind.pass_ in passes]
    print(f"Compiling {', '.join(kinds)} for sm_90 in {', '.join(dtypes)}...")
    rows = config_rows(passes, dtypes, args.max_configs)
    print(config_table(rows))
    return 1 if any(r.error for r in rows) else 0


def _report(csv_path: Path, plots: bool) -> int:
    if not csv_path.exists():
        print(f"triton-conv bench: no such results CSV: {csv_path}", file=sys.stderr)
        return 2
    rows = read_rows(csv_path)
    print(markdown_report(rows))
    return _plots(rows) if plots else 0


def _plots(rows: list[ResultRow]) -> int:
    try:
        paths = write_plots(rows)
    except RuntimeError as e:
        print(f"triton-conv bench: {e}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"plot: {path}")
    return 0


def _write_docs(csv_path: Path | None) -> int:
    try:
        paths = write_docs(csv_path or DEFAULT_CSV)
    except RuntimeError as e:
        print(f"triton-conv bench: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0
