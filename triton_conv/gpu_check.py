"""``triton-conv gpu-check``: validate and benchmark a CUDA machine in one bounded run.

Meant for a fresh GPU machine with torch and Triton preinstalled and no package index, on which
``make gpu-check`` first installs this checkout (``pip install --no-deps --no-build-isolation -e .``).
Stages run one after the other, each in its own process group with its own wall-clock limit; a
stage that fails or runs out of time is recorded and the next one starts, and everything is
written to the output folder as it happens:

  environment.json   GPU, driver, torch, Triton, CUDA and Python versions
  tests.log          the test suite on CUDA (pytest -v: one line per test, failures' tracebacks)
  results.csv        the benchmark rows (``triton-conv bench``, correctness-checked before timing)
  bench.log          the benchmark's progress, and which shapes ran out of time
  tune-shapes.json   the suite's convolutions, as ``triton-conv tune --shapes`` reads them
  tuning-cache/      the autotuning winners (``TRITON_CONV_CACHE_DIR``)
  tune.log           the tuning progress and, if it finished, its table
  stages.json        every stage's commands, limit, outcome and time (rewritten after each stage)
  summary.md         stages, test outcomes, per-class ratios to cuDNN, tuning winners (rewritten
                     after each stage, as is performance.md)
  performance.md     docs/performance.md regenerated from results.csv

The benchmark runs the heuristic tiles (no autotuning inside its time limit); the tuning stage
that follows reports how far tuned tiles beat them. Under ``--quick`` every stage runs a subset.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "gpu-check-out"


@dataclass(frozen=True)
class Limits:
    """Wall-clock seconds per stage, and per benchmark shape inside the benchmark stage.

    Triton compiles every kernel specialisation on first use, and that compile time counts:
    the test stage is mostly compilation, spread over parallel pytest processes.
    """

    environment: int
    tests: int
    bench: int
    tune: int
    bench_shape: int

    @property
    def total(self) -> int:
        return self.environment + self.tests + self.bench + self.tune


# The whole run within 8 minutes on an H200, --quick within 3 (GPU start-up not counted; the
# summary, rewritten after every stage, takes a second or two).
# The first import of torch on a fresh machine reads a cold disk: the environment stage has room.
FULL = Limits(environment=45, tests=200, bench=165, tune=70, bench_shape=75)
QUICK = Limits(environment=30, tests=65, bench=60, tune=25, bench_shape=40)

# The CUDA test selection: everything but the compile-for-sm_90/sm_80 tests, which need no GPU
# (CI runs them) and would take CPU time from the compiles the GPU tests need.
TEST_MARKERS = "not compile"
QUICK_TEST_FILES = ("tests/test_gpu.py",)
# The demo test trains on scikit-learn's digits with a tqdm bar; a bare GPU image may lack both.
DEMO_MODULES = ("sklearn", "tqdm")


@dataclass(frozen=True)
class BenchRound:
    """One ``triton-conv bench`` command line; ``after`` names an earlier round whose shapes it skips."""

    what: str
    argv: tuple[str, ...]
    after: str | None = None


# Most telling first: the class verdicts need bfloat16 in channels-last (and contiguous for the
# 1-D class) and judge F, D, W and E; forward+backward, float16, TF32 and the other layout follow.
CONTIGUOUS_1D = "bfloat16, contiguous, the 1-D class"
FULL_BENCH_ROUNDS = (
    BenchRound("bfloat16, channels-last, every shape", ("--dtype", "bfloat16", "--layout", "channels_last",
               "--pass", "F,D,W,E")),
    BenchRound(CONTIGUOUS_1D, ("--dtype", "bfloat16", "--layout", "contiguous", "--class", "conv1d_ncl")),
    BenchRound("bfloat16 forward+backward, channels-last", ("--dtype", "bfloat16", "--layout", "channels_last",
               "--pass", "FB")),
    BenchRound("float16 and TF32, channels-last", ("--dtype", "float16,tf32", "--layout", "channels_last")),
    BenchRound("bfloat16, contiguous, the other shapes", ("--dtype", "bfloat16", "--layout", "contiguous"),
               after=CONTIGUOUS_1D),
)  # fmt: skip
# One shape per main kernel path: dense 3x3, 1x1, grouped GEMM, depthwise (direct), then 1-D NCL.
QUICK_BENCH_ROUNDS = (
    BenchRound("bfloat16, channels-last, 4 shapes", ("--dtype", "bfloat16", "--layout", "channels_last", "--pass",
               "F,D,W", "--shape", "r50_c2_3x3,r50_c2_1x1,resnext_g32,mbv2_dw3")),
    BenchRound("bfloat16, contiguous, one 1-D shape", ("--dtype", "bfloat16", "--layout", "contiguous", "--pass",
               "F,D,W", "--shape", "w2v2_fe1")),
)  # fmt: skip
# Suite shapes tuned under --quick (forward, input and weight gradients each).
QUICK_TUNE_SHAPES = ("r50_c2_3x3",)
SHAPE_LINE = re.compile(r"^shape (\d+) ")
COMPLETED_LINE = re.compile(r"^\d+ rows appended to ")
# A CUDA error leaves the context unusable: every later row would fail, so the process restarts.
CUDA_ERROR = re.compile(r"CUDA error|illegal memory access|device-side assert")
TEST_OUTCOME = re.compile(r"(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)")
TEST_ID = re.compile(r"(tests/\S+::\S+)")
COLLECTION_ERROR = re.compile(r"ERROR (tests/\S+\.py)")
DURATION_LINE = re.compile(r"^(\d+\.\d+)s (setup|call|teardown) +(tests/\S+)", re.MULTILINE)


# ---------------------------------------------------------------------------------------------
# Stages


@dataclass
class Outcome:
    """What one stage did: ``status`` is not run, running, ok, failed, timed out or skipped."""

    name: str
    what: str
    limit_s: int
    commands: list[str]
    status: str = "not run"
    seconds: float = 0.0
    detail: str = ""


@dataclass
class Plan:
    """Everything a run will do, decided before it starts (and all that ``--dry-run`` prints)."""

    out: Path
    quick: bool
    limits: Limits
    python: str
    markers: str
    test_options: list[str]
    test_paths: list[str]  # empty: the testpaths of pyproject.toml
    workers: int
    use_xdist: bool
    bench_rounds: list[tuple[str, list[str]]]  # (what, argv with an explicit --shape list)
    tune_shapes: list[dict[str, object]]
    outcomes: list[Outcome] = field(default_factory=list)

    def bench_command(self, argv: list[str]) -> list[str]:
        return [self.python, "-m", "triton_conv.cli", "bench", *argv, "--csv", str(self.out / "results.csv")]

    def test_command(self, options: list[str], tests: list[str] | None = None) -> list[str]:
        """pytest with the run's options and ``options``, on ``tests`` (node ids) or the test paths."""
        return [
            self.python,
            "-m",
            "pytest",
            *self.test_options,
            *options,
            *(self.test_paths if tests is None else tests),
        ]

    def collect_command(self) -> list[str]:
        """The test command listing the tests it would run, one id a line."""
        options = [a for a in self.test_options if a != "-v"]
        return [self.python, "-m", "pytest", *options, "--collect-only", "-q", *self.test_paths]

    def tune_command(self) -> list[str]:
        shapes = self.out / "tune-shapes.json"
        return [self.python, "-m", "triton_conv.cli", "tune", "--shapes", str(shapes), "--backward"]

    def environment_command(self) -> list[str]:
        return [self.python, "-c", ENVIRONMENT_SCRIPT, str(self.out / "environment.json")]


ENVIRONMENT_SCRIPT = """
import json, platform, subprocess, sys
import torch, triton
info = dict(python=platform.python_version(), torch=torch.__version__, triton=triton.__version__,
            cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
if info["cuda_available"]:
    info.update(gpu=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
                gpu_count=torch.cuda.device_count())
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        info["driver"] = "unknown (no nvidia-smi)"
open(sys.argv[1], "w").write(json.dumps(info, indent=1) + "\\n")
print(json.dumps(info, indent=1))
sys.exit(0 if info["cuda_available"] else 3)
""".strip()


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def make_plan(out: Path, quick: bool) -> Plan:
    limits = QUICK if quick else FULL
    workers = max(1, min(14, (os.cpu_count() or 2) - 2))
    use_xdist = _has_module("xdist")
    markers = TEST_MARKERS if all(_has_module(m) for m in DEMO_MODULES) else f"{TEST_MARKERS} and not demo"
    # -v: one line per test as it finishes, so a run cut short still says what passed.
    test_options = ["-p", "no:cacheprovider", "-v", "--tb=short", "-rfE", "--durations=15", "-m", markers]
    return Plan(
        out=out,
        quick=quick,
        limits=limits,
        python=sys.executable,
        markers=markers,
        test_options=test_options,
        test_paths=list(QUICK_TEST_FILES) if quick else [],
        workers=workers,
        use_xdist=use_xdist,
        bench_rounds=_resolve_rounds(QUICK_BENCH_ROUNDS if quick else FULL_BENCH_ROUNDS),
        tune_shapes=tune_shapes(QUICK_TUNE_SHAPES if quick else None),
    )


def _resolve_rounds(rounds: tuple[BenchRound, ...]) -> list[tuple[str, list[str]]]:
    """Each round's command line with an explicit ``--shape`` list, so that a restart can skip the
    shapes already done; a round ``after`` another leaves out that round's shapes."""
    shapes_of: dict[str, list[int]] = {}
    resolved = []
    for bench_round in rounds:
        skipped = set(shapes_of[bench_round.after]) if bench_round.after else set()
        shapes = [s for s in round_shapes(list(bench_round.argv)) if s not in skipped]
        shapes_of[bench_round.what] = shapes
        resolved.append((bench_round.what, _with_shapes(list(bench_round.argv), shapes)))
    return resolved


def round_shapes(argv: list[str]) -> list[int]:
    """The suite shape numbers a ``triton-conv bench`` command line runs, in the order it runs them."""
    from .perf import cli as bench_cli

    parser = argparse.ArgumentParser()
    bench_cli.add_arguments(parser)
    jobs = bench_cli.select_jobs(parser.parse_args(argv), smoke=False)
    return list(dict.fromkeys(job.shape.number for job in jobs))


def _with_shapes(argv: list[str], shapes: list[int]) -> list[str]:
    """``argv`` with its ``--shape`` option replaced by ``shapes``."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--shape":
            skip = True
        else:
            kept.append(arg)
    return [*kept, "--shape", ",".join(map(str, shapes))] if shapes else kept


def tune_shapes(names: tuple[str, ...] | None) -> list[dict[str, object]]:
    """The suite's convolutions in bfloat16 (channels-last where there is such a layout) for ``tune --shapes``."""
    from .perf.suite import HEADLINE_DTYPE, SUITE

    # `tune` plans convolutions only: the transposed shapes are not tuned yet.
    chosen = [s for s in SUITE if not s.transposed and (names is None or s.name in names)]
    return [
        dict(
            input_shape=list(s.input_shape()),
            weight_shape=list(s.weight_shape()),
            stride=list(s.stride),
            padding=list(s.padding),
            dilation=list(s.dilation),
            groups=s.groups,
            dtype=HEADLINE_DTYPE,
            channels_last=s.dims > 1,
        )
        for s in chosen
    ]


def stage_environment(plan: Plan) -> dict[str, str]:
    """What every stage runs with: compiled kernels (never the interpreter), no buffered output,
    and a tuning cache inside the output folder, so that nothing writes to the user's."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(PYTHONUNBUFFERED="1", TRITON_CONV_CACHE_DIR=str(plan.out / "tuning-cache"))
    return env


# ---------------------------------------------------------------------------------------------
# Processes with deadlines


def _start(command: list[str], log: IO[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log.write(f"\n=== gpu-check: {shlex.join(command)}\n")
    log.flush()
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End ``process`` and everything it started (its own process group): TERM, then KILL.

    The group is killed even when its leader has exited, so that no worker it left behind keeps
    the GPU busy during the next stage.
    """
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            sig = signal.SIGKILL
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGKILL:
            return


def run_until(
    commands: list[list[str]], logs: list[Path], env: dict[str, str], deadline: float
) -> tuple[list[int | None], bool]:
    """Run ``commands`` side by side, each appending to its log; stop them at ``deadline``.

    Returns their exit codes (None for those stopped) and whether the deadline stopped any.
    """
    files = [log.open("a") for log in logs]
    try:
        processes = [_start(command, file, env) for command, file in zip(commands, files)]
        try:
            while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            timed_out = any(p.poll() is None for p in processes)
            for p in processes:
                _stop(p)
    finally:
        for file in files:
            file.close()
    return [None if timed_out and p.returncode < 0 else p.returncode for p in processes], timed_out


# ---------------------------------------------------------------------------------------------
# The stages


def _record(outcome: Outcome, status: str, started: float, detail: str = "") -> None:
    outcome.status, outcome.seconds, outcome.detail = status, round(time.monotonic() - started, 1), detail


def run_environment(plan: Plan, outcome: Outcome) -> bool:
    """Versions and the GPU into environment.json; False (and the run stops) only when torch says
    there is no GPU: any other failure here may spare the stages after it."""
    started = time.monotonic()
    log = plan.out / "environment.log"
    codes, timed_out = run_until(
        [plan.environment_command()], [log], stage_environment(plan), started + outcome.limit_s
    )
    if timed_out:
        _record(outcome, "timed out", started, "importing torch or querying the GPU did not finish")
    elif codes[0] == 3:
        _record(outcome, "failed", started, "torch sees no CUDA GPU: the stages after this one need one")
    elif codes[0] != 0:
        _record(outcome, "failed", started, f"exit {codes[0]}: see environment.log")
    else:
        _record(outcome, "ok", started)
    return codes[0] != 3


def run_tests(plan: Plan, outcome: Outcome) -> None:
    started = time.monotonic()
    deadline = started + outcome.limit_s
    env = stage_environment(plan)
    log = plan.out / "tests.log"
    if plan.use_xdist:
        commands = [plan.test_command(["-n", str(plan.workers)])]
    else:
        commands = [plan.test_command([], shard) for shard in _shards(plan, env, log, deadline)]
    # One log per process (pytest writes a test's id and its outcome separately), joined after.
    logs = [log] if len(commands) == 1 else [plan.out / f"tests-{i}.log" for i in range(len(commands))]
    codes, timed_out = run_until(commands, logs, env, deadline)
    if len(logs) > 1:
        with log.open("a") as joined:
            for part in logs:
                joined.write(part.read_text(errors="replace"))
                part.unlink()
    counts = count_tests(log.read_text(errors="replace"))
    detail = ", ".join(f"{n} {word}" for word, n in counts.items()) or "no test outcome in tests.log"
    if timed_out:
        _record(outcome, "timed out", started, f"{detail} before the limit")
    elif any(code not in (0, 5) for code in codes):  # 5: nothing collected
        _record(outcome, "failed", started, f"{detail} (pytest exit {', '.join(map(str, codes))})")
    else:
        _record(outcome, "ok", started, detail)


def _shards(plan: Plan, env: dict[str, str], log: Path, deadline: float) -> list[list[str] | None]:
    """Without pytest-xdist: the collected tests dealt round-robin to ``plan.workers`` pytest processes.

    Neighbouring tests of one file are much alike, so dealing them out spreads the compile work.
    """
    listing = plan.out / "tests-collected.txt"
    command = plan.collect_command()
    try:
        with listing.open("w") as out:
            returncode = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                        timeout=max(1.0, deadline - time.monotonic()), check=False).returncode  # fmt: skip
    except subprocess.TimeoutExpired:
        returncode = None
    ids = [line.strip() for line in listing.read_text().splitlines() if "::" in line]
    listing.unlink()
    if returncode != 0 or not ids:
        with log.open("a") as out:
            out.write(f"=== gpu-check: collection failed (exit {returncode}); running pytest in one process\n")
        return [None]
    count = min(plan.workers, len(ids))
    return [ids[i::count] for i in range(count)]


def count_tests(log_text: str) -> dict[str, int]:
    """passed/failed/error/skipped counts from pytest -v lines (with or without xdist's [gwN] prefix)."""
    counts: dict[str, int] = {}
    for line in log_text.splitlines():
        if not TEST_ID.search(line) or line.startswith(("FAILED ", "ERROR ")):  # -rfE repeats failures
            continue
        found = TEST_OUTCOME.search(line)
        if found:
            word = found.group(1).lower()
            counts[word] = counts.get(word, 0) + 1
    return counts


def failed_tests(log_text: str) -> list[str]:
    """The ids of failed and erroring tests (files, for collection errors), from the -v lines and
    pytest's short summary (-rfE)."""
    ids = []
    for line in log_text.splitlines():
        outcome = TEST_OUTCOME.search(line)
        found = TEST_ID.search(line) or (COLLECTION_ERROR.match(line) if line.startswith("ERROR ") else None)
        if found and outcome and outcome.group(1) in ("FAILED", "ERROR"):
            ids.append(found.group(1))
    return list(dict.fromkeys(ids))


def run_bench(plan: Plan, outcome: Outcome) -> None:
    """Each round in one ``triton-conv bench`` process; a shape over its cap, or a crash, restarts
    the round after that shape. The CSV keeps every row measured before a stop."""
    started = time.monotonic()
    deadline = started + outcome.limit_s
    env = {**stage_environment(plan), "TRITON_CONV_AUTOTUNE": "heuristic"}
    log_path = plan.out / "bench.log"
    notes: list[str] = []
    for what, argv in plan.bench_rounds:
        shapes = _shape_numbers(argv)
        while shapes and time.monotonic() < deadline:
            with log_path.open("a") as log:
                log.write(f"\n=== gpu-check: round '{what}'\n")
            stopped_at, reason = _watch_bench(plan.bench_command(_with_shapes(argv, shapes)), log_path, env,
                                              deadline, plan.limits.bench_shape)  # fmt: skip
            if stopped_at is None:
                if reason:
                    notes.append(f"{what}: {reason}")
                break
            notes.append(f"{what}: shape {stopped_at} {reason}")
            shapes = shapes[shapes.index(stopped_at) + 1 :] if stopped_at in shapes else []
    rows, not_ok = _csv_checks(plan.out / "results.csv")
    notes.insert(0, f"{rows} rows, {not_ok} failed their check or raised")
    if time.monotonic() >= deadline:
        _record(outcome, "timed out", started, "; ".join([*notes, "stage limit reached"]))
    else:
        _record(outcome, "failed" if len(notes) > 1 or not_ok else "ok", started, "; ".join(notes))


def _csv_checks(path: Path) -> tuple[int, int]:
    """Rows in a results CSV, and how many are not "ok"."""
    if not path.exists():
        return 0, 0
    with path.open(newline="") as f:
        checks = [record.get("check") for record in csv.DictReader(f)]
    return len(checks), sum(check != "ok" for check in checks)


def _shape_numbers(argv: list[str]) -> list[int]:
    return [int(s) for s in argv[argv.index("--shape") + 1].split(",")] if "--shape" in argv else []


def _watch_bench(
    command: list[str], log_path: Path, env: dict[str, str], deadline: float, shape_cap: float
) -> tuple[int | None, str]:
    """Run one bench process, reading its log as it grows.

    Returns (None, "") when it finished, (None, reason) when it failed before any shape, and
    (shape, reason) when it was stopped or died during ``shape``.
    """
    current: int | None = None
    shape_started = time.monotonic()
    completed = False
    pending = ""
    with log_path.open(errors="replace") as reader:
        reader.seek(0, os.SEEK_END)
        with log_path.open("a") as log:
            process = _start(command, log, env)
        try:
            while True:
                finished = process.poll() is not None
                # Whole lines only: a line read while being written would be seen as two.
                *lines, pending = (pending + reader.read()).split("\n")
                for line in lines:
                    if match := SHAPE_LINE.match(line):
                        current, shape_started = int(match.group(1)), time.monotonic()
                    elif COMPLETED_LINE.match(line):
                        completed = True
                    elif current is not None and CUDA_ERROR.search(line):
                        return current, "hit a CUDA error (the process restarts after it)"
                if finished:
                    break
                now = time.monotonic()
                if now >= deadline:
                    return current, "was running when the stage limit was reached"
                if current is not None and now - shape_started > shape_cap:
                    return current, f"took over {shape_cap:.0f} s and was stopped"
                time.sleep(0.5)
        finally:
            _stop(process)
    if completed:
        return None, ""
    if current is None:
        return None, f"exit {process.returncode} before the first shape: see bench.log"
    return current, f"ended the process (exit {process.returncode})"


def run_tune(plan: Plan, outcome: Outcome) -> None:
    started = time.monotonic()
    (plan.out / "tune-shapes.json").write_text(json.dumps(plan.tune_shapes, indent=1) + "\n")
    codes, timed_out = run_until(
        [plan.tune_command()], [plan.out / "tune.log"], stage_environment(plan), started + outcome.limit_s
    )
    entries = len(tuning_entries(plan.out))
    if timed_out:
        _record(outcome, "timed out", started, f"{entries} keys tuned before the limit (kept in tuning-cache/)")
    else:
        _record(outcome, "ok" if codes[0] == 0 else "failed", started, f"{entries} keys tuned")


# ---------------------------------------------------------------------------------------------
# The run


def _stages(plan: Plan) -> list[tuple[Outcome, Callable[[Plan, Outcome], bool | None]]]:
    limits = plan.limits
    tests = [shlex.join(plan.test_command(["-n", str(plan.workers)] if plan.use_xdist else []))]
    if not plan.use_xdist:
        tests[0] += f"  (pytest-xdist missing: the collected tests dealt to {plan.workers} such processes)"
    return [
        (Outcome("environment", "GPU and versions into environment.json", limits.environment,
                 [shlex.join(plan.environment_command()[:2]) + " <script> environment.json"]), run_environment),
        (Outcome("tests", "the test suite on CUDA (bfloat16, float16, TF32, int64, graphs, 8 warps...)", limits.tests,
                 tests), run_tests),
        (Outcome("bench", f"the benchmark suite, heuristic tiles, each shape capped at {limits.bench_shape} s; "
                 "gets the time earlier stages leave", limits.bench,
                 [f"{shlex.join(plan.bench_command(argv))}  # {what}" for what, argv in plan.bench_rounds]), run_bench),
        (Outcome("tune", f"autotune {len(plan.tune_shapes)} suite shapes (forward and gradients)", limits.tune,
                 [shlex.join(plan.tune_command())]), run_tune),
    ]  # fmt: skip


def write_stages(plan: Plan, started_at: str) -> None:
    document = {"started": started_at, "quick": plan.quick, "stages": [asdict(o) for o in plan.outcomes]}
    (plan.out / "stages.json").write_text(json.dumps(document, indent=1) + "\n")


def run(args: argparse.Namespace) -> int:
    if args.summarize is not None:
        if not args.summarize.is_dir():
            print(f"triton-conv gpu-check: no such output folder: {args.summarize}", file=sys.stderr)
            return 2
        print(f"wrote {write_summary(args.summarize)}")
        return 0
    started_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%SZ")
    out = args.out or DEFAULT_OUT / started_at
    plan = make_plan(out.resolve(), args.quick)
    stages = _stages(plan)
    plan.outcomes = [outcome for outcome, _ in stages]
    if args.dry_run:
        print(dry_run_text(plan))
        return 0
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("triton-conv gpu-check: TRITON_INTERPRET=1 is ignored: every stage runs compiled kernels")
    plan.out.mkdir(parents=True, exist_ok=True)
    print(f"gpu-check: writing to {plan.out} (limit {plan.limits.total} s)")
    run_started = time.monotonic()
    unused = 0.0
    usable = True
    for outcome, runner in stages:
        if not usable:
            outcome.status, outcome.detail = "skipped", "no usable CUDA GPU"
        else:
            if outcome.name == "bench":
                # The benchmark can always use more time: it gets what the stages before it left.
                outcome.limit_s += int(unused)
            outcome.status = "running"
            write_stages(plan, started_at)
            print(f"gpu-check: {outcome.name} (limit {outcome.limit_s} s) ...", flush=True)
            usable = runner(plan, outcome) is not False
            if outcome.name in ("environment", "tests"):
                unused += max(0.0, outcome.limit_s - outcome.seconds)
            print(
                f"gpu-check: {outcome.name}: {outcome.status} in {outcome.seconds:.0f} s; {outcome.detail}", flush=True
            )
        # After every stage, so that a run stopped from outside still leaves its summary.
        write_stages(plan, started_at)
        write_summary(plan.out)
    print(f"gpu-check: done in {time.monotonic() - run_started:.0f} s; see {plan.out / 'summary.md'}")
    return 0 if all(o.status == "ok" for o in plan.outcomes) else 1


def dry_run_text(plan: Plan) -> str:
    lines = [
        f"triton-conv gpu-check{' --quick' if plan.quick else ''}: {len(plan.outcomes)} stages, at most "
        f"{plan.limits.total} s in all (install and GPU start-up not counted); output: {plan.out}",
        "summary.md and performance.md are rewritten there after every stage.",
        "",
    ]
    for number, outcome in enumerate(plan.outcomes, 1):
        lines.append(f"{number}. {outcome.name} (limit {outcome.limit_s} s): {outcome.what}")
        lines += [f"     {command}" for command in outcome.commands]
    lines += ["", collected_tests_text(plan)]
    return "\n".join(lines)


def collected_tests_text(plan: Plan) -> str:
    """How many tests the test stage would run on CUDA, collected here (no GPU needed)."""
    env = dict(os.environ)
    if not _cuda_available():
        # Collect as a CUDA machine would (bfloat16 cases included); nothing runs.
        env.update(TRITON_INTERPRET="1", TRITON_CONV_TEST_DEVICE="cuda")
    command = plan.collect_command()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    ids = [line for line in done.stdout.splitlines() if "::" in line]
    if done.returncode != 0 or not ids:
        return f"CUDA tests: collection failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
    gpu_only = sum(line.startswith("tests/test_gpu.py") for line in ids)
    return f"CUDA tests collected: {len(ids)} (tests/test_gpu.py: {gpu_only}) with -m '{plan.markers}'"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# ---------------------------------------------------------------------------------------------
# The summary


def tuning_entries(out: Path) -> dict[str, dict[str, object]]:
    """Every tuned key in the output folder's cache files."""
    entries: dict[str, dict[str, object]] = {}
    for path in sorted((out / "tuning-cache").glob("*.json")):
        try:
            entries.update(json.loads(path.read_text()).get("entries", {}))
        except (OSError, ValueError, AttributeError):
            continue
    return entries


def write_summary(out: Path) -> Path:
    """summary.md (and, from results.csv, performance.md) in the output folder ``out``."""
    sections = []
    for section in (_heading, _stage_table, _tests_section, _bench_section, _tuning_section, _commit_section):
        try:
            sections.append(section(out))
        except Exception as error:  # a summary must come out of any run, however broken
            sections.append(f"({section.__name__.strip('_')} not written: {type(error).__name__}: {error})")
    path = out / "summary.md"
    path.write_text("\n\n".join(sections) + "\n")
    return path


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _heading(out: Path) -> str:
    env = _read_json(out / "environment.json")
    stages = _read_json(out / "stages.json")
    mode = " (--quick)" if stages.get("quick") else ""
    gpu = env.get("gpu", "GPU unknown")
    versions = ", ".join(
        f"{name} {env[key]}" for name, key in (("torch", "torch"), ("Triton", "triton"), ("CUDA", "cuda"),
                                               ("driver", "driver"), ("Python", "python")) if env.get(key)
    )  # fmt: skip
    return f"# gpu-check{mode}: {gpu}\n\nStarted {stages.get('started', 'unknown')}; {versions or 'versions unknown'}."


def _stage_table(out: Path) -> str:
    stages = _read_json(out / "stages.json").get("stages", [])
    lines = ["## Stages", "", "| stage | limit (s) | took (s) | outcome | detail |", "|---|---:|---:|---|---|"]
    for s in stages if isinstance(stages, list) else []:
        detail = str(s.get("detail", "")).replace("|", "/")
        lines.append(f"| {s.get('name')} | {s.get('limit_s')} | {s.get('seconds')} | {s.get('status')} | {detail} |")
    return "\n".join(lines)


def _tests_section(out: Path) -> str:
    log = out / "tests.log"
    if not log.exists():
        return "## Tests on CUDA\n\nNot run."
    text = log.read_text(errors="replace")
    counts = count_tests(text)
    failed = failed_tests(text)
    lines = ["## Tests on CUDA", "", ", ".join(f"{n} {word}" for word, n in counts.items()) or "No outcome logged."]
    if failed:
        lines += ["", f"Failed or erroring ({len(failed)}; tracebacks in tests.log):", ""]
        lines += [f"- `{test_id}`" for test_id in failed[:60]]
        lines += [f"- ... and {len(failed) - 60} more"] if len(failed) > 60 else []
    slowest = DURATION_LINE.findall(text)
    if slowest:
        lines += ["", "Slowest (seconds, phase, test; compile time included):", ""]
        lines += [f"- {seconds} {phase} `{test_id}`" for seconds, phase, test_id in slowest[:10]]
    return "\n".join(lines)


def _bench_section(out: Path) -> str:
    from .perf.harness import TIMING_CUDA, read_rows
    from .perf.report import class_summaries, class_table, latest, performance_page
    from .perf.suite import HEADLINE_DTYPE

    csv_path = out / "results.csv"
    rows = read_rows(csv_path) if csv_path.exists() else []
    (out / "performance.md").write_text(performance_page(rows))
    measured = [r for r in latest(rows) if r.timing == TIMING_CUDA]
    lines = ["## Benchmark", ""]
    if not measured:
        return "\n".join([*lines, "No GPU rows in results.csv."])
    ok = [r for r in measured if r.check == "ok"]
    lines.append(
        f"{len(measured)} rows ({len(ok)} checked and timed), heuristic tiles (no autotuning in this stage). "
        "Every row, with its time, rates and roofline share: performance.md."
    )
    for gpu in dict.fromkeys(r.gpu for r in measured):
        machine = [r for r in measured if r.gpu == gpu]
        lines += ["", f"### {gpu}: classes ({HEADLINE_DTYPE}; ratio = baseline time / triton-conv time)", ""]
        lines.append(class_table(class_summaries(machine, HEADLINE_DTYPE)))
    bad = [r for r in measured if r.check != "ok"]
    if bad:
        lines += ["", f"Rows that failed their check or raised ({len(bad)}):", ""]
        lines += [f"- {r.shape} {r.name} {r.pass_} {r.dtype} {r.layout}: {r.check}" for r in bad]
    return "\n".join(lines)


def _tuning_section(out: Path) -> str:
    entries = tuning_entries(out)
    lines = ["## Tuning", ""]
    if not entries:
        return "\n".join([*lines, "No key was tuned."])
    lines += ["| key | tile (M x N x K, warps, stages, split-K) | ms | search |", "|---|---|---:|---|"]
    for key, entry in entries.items():
        c = entry.get("config", {})
        tile = (
            f"{c.get('block_m')}x{c.get('block_n')}x{c.get('block_k')} w{c.get('num_warps')} "
            f"s{c.get('num_stages')} k{c.get('split_k', 1)}"
        )
        lines.append(f"| `{key}` | {tile} | {entry.get('ms', 0):.4g} | {entry.get('mode')} |")
    lines += ["", "Speed-ups over the heuristic tile, where the stage finished: the table at the end of tune.log."]
    return "\n".join(lines)


def _commit_section(out: Path) -> str:
    try:
        folder = out.resolve().relative_to(REPO)
    except ValueError:
        folder = out
    gpu = _read_json(out / "environment.json").get("gpu", "a GPU")
    return "\n".join([
        "## Committing this run",
        "",
        "```bash",
        f"cp {folder}/performance.md docs/performance.md",
        f"git add {folder} docs/performance.md",
        f'git commit -m "gpu-check on {gpu}: test log, benchmark results, tuning cache, summary"',
        "```",
    ])  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help=f"a subset of every stage, within {QUICK.total} s")
    parser.add_argument("--dry-run", action="store_true", help="list the stages, commands, limits and tests; run none")
    parser.add_argument(
        "--out", type=Path, metavar="DIR", help=f"output folder (default {DEFAULT_OUT.name}/<UTC time>)"
    )
    parser.add_argument(
        "--summarize", type=Path, metavar="DIR", help="only rewrite DIR's summary.md and performance.md"
    )
