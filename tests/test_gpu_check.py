"""``triton-conv gpu-check`` on CPU: the dry run, the benchmark watchdog, and the summary.

No GPU is needed: the watchdog is driven by a stand-in for ``triton-conv bench`` that prints
what the harness prints, and the summary is written from a small fake results CSV.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
from triton_conv.perf import harness

from triton_conv import gpu_check
from triton_conv.cli import main

from .checks import result_row

pytestmark = pytest.mark.gpu_check


def test_budgets():
    assert gpu_check.FULL.total <= 8 * 60 and gpu_check.QUICK.total <= 3 * 60
    assert gpu_check.QUICK.bench_shape < gpu_check.QUICK.bench <= gpu_check.FULL.bench


@pytest.mark.parametrize("quick", [False, True], ids=["full", "quick"])
def test_dry_run_lists_stages_limits_and_tests(tmp_path, capsys, quick):
    out = tmp_path / "out"
    assert main(["gpu-check", "--dry-run", "--out", str(out), *(["--quick"] if quick else [])]) == 0
    text = capsys.readouterr().out
    limits = gpu_check.QUICK if quick else gpu_check.FULL
    for name in ("environment", "tests", "bench", "tune"):
        assert f". {name} (limit {getattr(limits, name)} s)" in text, name
    assert f"at most {limits.total} s" in text
    assert "-m pytest" in text and " bench --dtype bfloat16 " in text and " tune --shapes " in text
    collected = re.search(r"CUDA tests collected: (\d+) \(tests/test_gpu.py: (\d+)\)", text)
    assert collected and int(collected[2]) > 100, text[-3000:]
    # --quick runs tests/test_gpu.py alone; the full run the whole suite but the compile tests.
    assert (int(collected[1]) == int(collected[2])) == quick, collected[0]
    assert not out.exists(), "a dry run wrote its output folder"


def test_tune_reads_the_suite_shapes(tmp_path, capsys):
    path = tmp_path / "tune-shapes.json"
    shapes = gpu_check.tune_shapes(None)
    path.write_text(json.dumps(shapes))
    assert main(["tune", "--shapes", str(path), "--backward", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "forward:bfloat16:ieee:cl:" in out and out.strip().split("\n")[-1].startswith(f"{len(shapes)} problems")


# ---------------------------------------------------------------- the benchmark watchdog

# Prints what `triton-conv bench` prints per shape of its --shape list; hangs on shape 2 and
# crashes on shape 4, finishes the others, and ends as the real command does.
FAKE_BENCH = textwrap.dedent("""
    import sys, time
    shapes = sys.argv[sys.argv.index("--shape") + 1].split(",")
    for shape in shapes:
        print(f"shape {shape} name bfloat16: F D", flush=True)
        if shape == "2":
            time.sleep(60)
        if shape == "4":
            sys.exit(1)
        print("  row", flush=True)
    print(f"{len(shapes)} rows appended to results.csv", flush=True)
""")


def _fake_plan(tmp_path: Path, shapes: str) -> gpu_check.Plan:
    script = tmp_path / "fake_bench.py"
    script.write_text(FAKE_BENCH)
    limits = gpu_check.Limits(environment=1, tests=1, bench=30, tune=1, bench_shape=1)
    plan = gpu_check.Plan(
        out=tmp_path, quick=True, limits=limits, python=sys.executable, markers="", test_options=[], test_paths=[],
        workers=1,
        use_xdist=False, bench_rounds=[("fake round", ["--shape", shapes])], tune_shapes=[],
    )  # fmt: skip
    plan.bench_command = lambda argv: [sys.executable, str(script), *argv]  # type: ignore[method-assign]
    return plan


def test_bench_watchdog_skips_a_stuck_and_a_crashed_shape(tmp_path):
    plan = _fake_plan(tmp_path, "1,2,3,4,5")
    outcome = gpu_check.Outcome("bench", "", 30, [])
    gpu_check.run_bench(plan, outcome)
    assert outcome.status == "failed" and outcome.seconds < 20, outcome
    assert "shape 2 took over 1 s and was stopped" in outcome.detail
    assert "shape 4 ended the process (exit 1)" in outcome.detail
    log = (tmp_path / "bench.log").read_text()
    # Restarted after each stop, with the shapes left; shape 5 finished the round.
    assert "--shape 3,4,5" in log and "--shape 5" in log
    assert log.count("shape 5 name") == 1 and log.rstrip().endswith("1 rows appended to results.csv")


def test_bench_watchdog_lets_a_finished_round_be(tmp_path):
    plan = _fake_plan(tmp_path, "1,3")
    outcome = gpu_check.Outcome("bench", "", 30, [])
    gpu_check.run_bench(plan, outcome)
    assert outcome.status == "ok" and outcome.detail == "0 rows, 0 failed their check or raised"


# ---------------------------------------------------------------- the test stage without pytest-xdist

FAKE_TESTS = textwrap.dedent("""
    import pytest

    @pytest.mark.parametrize("n", range(5))
    def test_number(n):
        assert n != 3
""")


def test_test_stage_without_xdist_deals_tests_to_processes(tmp_path, monkeypatch):
    """Collected once, dealt to two pytest processes, their logs joined into tests.log."""
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_fake.py").write_text(FAKE_TESTS)
    monkeypatch.setattr(gpu_check, "REPO", tmp_path)  # where the stages run
    plan = gpu_check.Plan(
        out=tmp_path, quick=True, limits=gpu_check.QUICK, python=sys.executable, markers="",
        test_options=["-p", "no:cacheprovider", "-v"], test_paths=["tests"], workers=2, use_xdist=False,
        bench_rounds=[], tune_shapes=[],
    )  # fmt: skip
    outcome = gpu_check.Outcome("tests", "", 120, [])
    gpu_check.run_tests(plan, outcome)
    assert outcome.status == "failed" and outcome.detail.startswith("4 passed, 1 failed"), outcome
    log = (tmp_path / "tests.log").read_text()
    assert log.count("=== gpu-check: ") == 2 and not list(tmp_path.glob("tests-*"))
    assert gpu_check.failed_tests(log) == ["tests/test_fake.py::test_number[3]"]


# ---------------------------------------------------------------- the summary

TESTS_LOG = """
tests/test_forward.py::test_forward_table[2d-a-torch.float32] PASSED     [ 25%]
[gw1] [ 50%] PASSED tests/test_gpu.py::test_bfloat16_forward_table[2d-a-contiguous]
[gw0] [ 75%] FAILED tests/test_gpu.py::test_int64_offsets_direct_forward
[gw1] [100%] SKIPPED tests/test_bench.py::test_no_gpu_says_so
=========================== short test summary info ============================
FAILED tests/test_gpu.py::test_int64_offsets_direct_forward - AssertionError: forward, last rows
============================= slowest 15 durations =============================
12.50s call     tests/test_gpu.py::test_int64_offsets_direct_forward
"""


def test_test_log_counts_and_failures():
    assert gpu_check.count_tests(TESTS_LOG) == {"passed": 2, "failed": 1, "skipped": 1}
    assert gpu_check.failed_tests(TESTS_LOG + "ERROR tests/test_x.py - ImportError\n") == [
        "tests/test_gpu.py::test_int64_offsets_direct_forward",
        "tests/test_x.py",
    ]


def test_summary_from_a_fake_run(tmp_path):
    rows = [
        result_row(2, "F", 0.8),
        result_row(5, "F", 1.1),
        result_row(3, "F", 1.0),
        result_row(12, "F", 1.3, gbps=2900.0),
    ]
    rows.append(
        result_row(2, "D", 1.0, check="wrong: relative error 1.00e-01 > 5.0e-02", triton_ms=None, ratio_cudnn=None)
    )
    harness.append_rows(tmp_path / "results.csv", rows)
    (tmp_path / "tests.log").write_text(TESTS_LOG)
    (tmp_path / "environment.json").write_text(json.dumps({"gpu": "NVIDIA H200", "torch": "2.11.0"}))
    stages = [{"name": "tests", "limit_s": 210, "seconds": 12.5, "status": "failed", "detail": "2 passed, 1 failed"}]
    (tmp_path / "stages.json").write_text(json.dumps({"started": "2026-01-01T00-00-00Z", "stages": stages}))
    entry = {"config": {"block_m": 64, "block_n": 32, "block_k": 32, "num_warps": 4, "num_stages": 4, "split_k": 1}}
    (tmp_path / "tuning-cache").mkdir()
    (tmp_path / "tuning-cache" / "NVIDIA_H200-triton3.6.0.json").write_text(
        json.dumps({"entries": {"forward:bfloat16:ieee:cl:m4096": {**entry, "ms": 0.125, "mode": "first_use"}}})
    )

    assert main(["gpu-check", "--summarize", str(tmp_path)]) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert summary.startswith("# gpu-check: NVIDIA H200") and "torch 2.11.0" in summary
    assert "| tests | 210 | 12.5 | failed | 2 passed, 1 failed |" in summary
    assert "- 12.50 call `tests/test_gpu.py::test_int64_offsets_direct_forward`" in summary
    assert (
        "2 passed, 1 failed, 1 skipped" in summary
        and "`tests/test_gpu.py::test_int64_offsets_direct_forward`" in summary
    )
    # Per-class ratios to cuDNN: the dense class holds shapes 2 and 5 (geometric mean of 0.8 and 1.1).
    dense = next(line for line in summary.splitlines() if line.startswith("| dense, compute-bound, forward |"))
    assert f"{(0.8 * 1.1) ** 0.5:.2f}x" in dense
    assert "2 r50_c2_3x3 D bfloat16 channels_last: wrong: relative error" in summary
    assert "| `forward:bfloat16:ieee:cl:m4096` | 64x32x32 w4 s4 k1 | 0.125 | first_use |" in summary
    performance = (tmp_path / "performance.md").read_text()
    assert (
        performance.startswith("# Performance") and "| 5 | r50_c4_3x3 | F | bfloat16 | channels_last |" in performance
    )


def test_summary_of_a_run_that_stopped_early(tmp_path):
    """Nothing but the stage record: the summary still comes out, saying what is missing."""
    (tmp_path / "stages.json").write_text(json.dumps({"stages": [{"name": "environment", "status": "failed"}]}))
    text = gpu_check.write_summary(tmp_path).read_text()
    assert "| environment |" in text and "Not run." in text and "No key was tuned." in text
    assert "No GPU rows in results.csv." in text
    # A section that cannot be written is named; the others still are.
    (tmp_path / "tuning-cache").mkdir()
    (tmp_path / "tuning-cache" / "x.json").write_text(json.dumps({"entries": {"forward:k": 3}}))
    text = gpu_check.write_summary(tmp_path).read_text()
    assert "(tuning_section not written: AttributeError" in text and "## Committing this run" in text


def test_summarize_a_missing_folder_is_an_error(tmp_path, capsys):
    assert main(["gpu-check", "--summarize", str(tmp_path / "nothing")]) == 2
    assert "no such output folder" in capsys.readouterr().err
