"""The benchmark suite, harness, reports and ``triton-conv bench`` (perf/), on CPU.

The smoke run goes through the whole harness with the kernels in Triton's interpreter; the
rest checks the suite's data, the CSV round trip, the class logic and the generated docs.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

import pytest
import torch
from triton_conv.perf import cli, harness, report
from triton_conv.perf.suite import (
    DTYPES,
    SHAPES_BY_NUMBER,
    SUITE,
    TARGETS,
    TARGETS_BY_KEY,
    Ceilings,
    pass_bytes,
    pass_flops,
    smoke_shape,
)

from triton_conv.testing import tolerance

from .checks import result_row

pytestmark = pytest.mark.bench

# A smoke selection that covers dense with float16 and the fused epilogue, 1x1 (torch.mm),
# grouped, strided depthwise, 3-D, and transposed 1-D and 2-D: the cheapest shape of each kind in
# the interpreter (the shapes with three passes of heavier kernels, 10 and 12, took 45 of 70 s).
SMOKE_SHAPES = "2,3,11,13,26,35,36"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


# ---------------------------------------------------------------------------------------------
# The suite as data


def test_suite_table():
    assert [s.number for s in SUITE] == list(range(1, 38))
    assert len({s.name for s in SUITE}) == len(SUITE)
    shape_classes = {t.shape_class for t in TARGETS if t.shape_class}
    for s in SUITE:
        assert s.dims == len(s.size) == len(s.kernel) == len(s.stride) == len(s.padding) == len(s.dilation)
        assert set(s.passes) <= {"F", "D", "W"} and s.passes
        assert set(s.classes) <= shape_classes, s.name
        assert s.in_channels % s.groups == 0 and s.out_channels % s.groups == 0
        assert min(s.geometry().output_size) > 0 and min(s.geometry().input_size) > 0
        assert all(op < st for op, st in zip(s.output_padding, s.stride)) and s.transposed == bool(s.output_padding)
    assert {s.number for s in SUITE if s.extra_dtypes} == {2, 5, 12, 24}
    assert {s.number for s in SUITE if s.dims == 1} == {*range(17, 24), 36}
    assert {s.number for s in SUITE if s.dims == 3} == {*range(24, 29), 30, 37}
    assert {s.number for s in SUITE if s.transposed} == set(range(33, 38))
    assert all(d in DTYPES for s in SUITE for d in s.dtypes())


def test_flop_and_byte_formulas_on_a_known_case():
    s = SHAPES_BY_NUMBER[2]  # 128, 64 -> 64, 56x56, 3x3, stride 1, padding 1
    flops = 2 * 128 * 64 * (56 * 56) * 64 * 9
    assert pass_flops(s, "F") == pass_flops(s, "D") == pass_flops(s, "W") == flops
    assert pass_flops(s, "FB") == 3 * flops
    activations, weights = 128 * 64 * 56 * 56, 64 * 64 * 9
    assert pass_bytes(s, "F", 2) == 2 * (2 * activations + weights)
    assert pass_bytes(s, "E", 2) == 2 * (3 * activations + weights + 64)  # + residual and bias
    # Strided and grouped: resnext_g32_s2 has 32 channels per group and a 7x7 output.
    g = SHAPES_BY_NUMBER[11]
    assert pass_flops(g, "F") == 2 * 128 * 1024 * 49 * 32 * 9


def test_target_membership():
    def numbers(key: str, pass_: str | None = None) -> set[int]:
        return {s.number for s, p in TARGETS_BY_KEY[key].members() if pass_ in (None, p)}

    assert numbers("dense_forward") == {2, 5, 8, 9, 18, 22, 23, 24, 27, 28}
    assert {p for _, p in TARGETS_BY_KEY["dense_forward"].members()} == {"F"}
    assert numbers("1x1") == {3, 6, 7, 21}
    assert numbers("input_grad_strided") == {4, 7, 13, 18}
    convolutions = [s for s in SUITE if not s.transposed]
    assert numbers("input_grad_stride1") | numbers("input_grad_strided") == {
        s.number for s in convolutions if "D" in s.passes
    }
    assert numbers("weight_grad") == {s.number for s in convolutions if "W" in s.passes}
    assert numbers("first_layer") == {1, 17}
    assert numbers("patch_embedding") == numbers("patch_embedding_cudnn") == {29, 30}
    assert {s.number for s in SUITE if s.plain_gemm} == {3, 6, 7, 21, 29, 30}
    assert numbers("depthwise") == {12, 13, 14, 15, 16, 20, 31}
    assert numbers("large_kernel_depthwise") == {15, 16, 32}
    assert numbers("grouped") == {10, 11, 19}
    assert numbers("conv1d_ncl") == set(range(17, 24))
    assert TARGETS_BY_KEY["conv1d_ncl"].layout == "contiguous"
    assert numbers("fused_epilogue") == {2, 5, 10}
    assert {p for _, p in TARGETS_BY_KEY["fused_epilogue"].members()} == {"E"}
    assert numbers("transposed") == set(range(33, 38)) and TARGETS_BY_KEY["transposed"].must_each == 1.0


def test_transposed_shape_geometry():
    """HiFi-GAN's x8 upsample: L 8192 -> 8 * 8192, weight (in, out, k), F and D swap reductions."""
    s = SHAPES_BY_NUMBER[36]
    assert s.weight_shape() == (512, 256, 16) and s.output_shape() == (16, 256, 8 * 8192)
    assert pass_flops(s, "F") == 2 * 16 * 8192 * 512 * 256 * 16
    assert harness.reduction_length(s, "F") == 512 * 16 and harness.reduction_length(s, "D") == 256 * 16
    assert pass_bytes(s, "F", 2) == 2 * (16 * 512 * 8192 + 512 * 256 * 16 + 16 * 256 * 8 * 8192)


def test_smoke_shapes_keep_what_the_harness_branches_on():
    for s in SUITE:
        tiny = smoke_shape(s)
        assert min(tiny.geometry().output_size) > 0 and min(tiny.geometry().input_size) > 0, s.name
        assert (tiny.passes, tiny.classes, tiny.dims, tiny.one_by_one, tiny.strided, tiny.transposed) == (
            s.passes, s.classes, s.dims, s.one_by_one, s.strided, s.transposed,
        )  # fmt: skip
        depthwise = s.groups == s.in_channels == s.out_channels
        assert depthwise == (tiny.groups == tiny.in_channels == tiny.out_channels), s.name
        assert tiny.geometry().flops < 10**6


def test_tolerance_grows_with_reduction_and_is_capped():
    caps = {"bfloat16": 5e-2, "float16": 1e-2, "tf32": 1e-2, "float32": 1e-5, "float64": 1e-10}
    for dtype, cap in caps.items():
        assert tolerance(dtype, 9) < tolerance(dtype, 10**6) <= tolerance(dtype, 10**20) == cap
    assert tolerance("float64", 9) < tolerance("float32", 9) < tolerance("float16", 9) < tolerance("bfloat16", 9)
    assert tolerance(torch.float16, 9) == tolerance("float16", 9)
    s = SHAPES_BY_NUMBER[2]
    assert harness.reduction_length(s, "F") == 64 * 9
    assert harness.reduction_length(s, "W") == 128 * 56 * 56


# ---------------------------------------------------------------------------------------------
# The CSV and the reports


def test_csv_append_and_read_back(tmp_path: Path):
    path = tmp_path / "results" / "results.csv"
    first = [result_row(2, "F", 0.8), result_row(2, "D", 1.1, mm_ms=None)]
    harness.append_rows(path, first)
    second = [result_row(3, "W", 0.95, check="wrong: relative error 1e-1 > 5e-2", triton_ms=None, ratio_cudnn=None)]
    harness.append_rows(path, second)
    back = harness.read_rows(path)
    assert len(back) == 3 and path.read_text().count("timestamp,") == 1  # one header
    assert back[0].ratio_cudnn == pytest.approx(0.8) and back[0].shape == 2 and back[0].pass_ == "F"
    assert back[2].triton_ms is None and back[2].check.startswith("wrong")
    assert back[1].gpu == "NVIDIA H100 80GB HBM3" and back[1].triton_version == "3.6.0"

    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="expected"):
        harness.append_rows(other, first)


def test_latest_keeps_the_newest_row_per_measurement():
    old = result_row(2, "F", 0.5, timestamp="2026-01-01T00:00:00+00:00")
    new = result_row(2, "F", 0.9, timestamp="2026-02-01T00:00:00+00:00")
    other_layout = result_row(2, "F", 0.7, layout="contiguous")
    assert report.latest([new, old, other_layout]) == [new, other_layout]


def test_class_summary_geomean_and_shapes_under_target():
    ratios = {2: 1.0, 5: 0.7, 8: 1.2, 9: 0.9}
    rows = [result_row(n, "F", r) for n, r in ratios.items()]
    dense = next(s for s in report.class_summaries(rows, "bfloat16") if s.target.key == "dense_forward")
    assert dense.geomean == pytest.approx(math.prod(ratios.values()) ** (1 / 4))
    assert dense.under_must == ["5 r50_c4_3x3 F"]  # under 0.75x each
    assert dense.under_aim == ["5 r50_c4_3x3 F", "9 aspp_d12 F"]  # under 1.0x
    assert dense.verdict == "misses (4 of 10 measured)"
    assert dense.largest_compute_fraction[0] == "9 aspp_d12 F"  # the most FLOPs

    good = [result_row(n, "F", 1.0) for n in (2, 5, 8, 9, 18, 22, 23, 24, 27, 28)]
    dense = next(s for s in report.class_summaries(good, "bfloat16") if s.target.key == "dense_forward")
    assert dense.verdict == "meets" and dense.geomean == pytest.approx(1.0)

    # Geomean floor: every member over 0.75x, but the geometric mean under 0.9x.
    low = [result_row(n, "F", 0.8) for n in (2, 5, 8, 9, 18, 22, 23, 24, 27, 28)]
    dense = next(s for s in report.class_summaries(low, "bfloat16") if s.target.key == "dense_forward")
    assert not dense.under_must and dense.verdict == "misses"

    # Depthwise also needs 70% of the measured copy bandwidth.
    slow_memory = [result_row(12, "F", 1.2, gbps=1000.0)]
    depthwise = next(s for s in report.class_summaries(slow_memory, "bfloat16") if s.target.key == "depthwise")
    assert depthwise.under_bandwidth == ["12 mbv2_dw3 F"] and depthwise.verdict.startswith("misses")

    # The 1-D class is judged in the contiguous layout; wrong or other-dtype rows never count.
    rows = [result_row(18, "F", 2.0, layout="contiguous"), result_row(18, "F", 0.1), result_row(22, "F", 0.1, layout="contiguous",
            check="wrong: x"), result_row(23, "F", 0.1, layout="contiguous", dtype="float16")]  # fmt: skip
    ncl = next(s for s in report.class_summaries(rows, "bfloat16") if s.target.key == "conv1d_ncl")
    assert ncl.ratios == {"18 w2v2_fe1 F": 2.0}


def test_markdown_report(tmp_path: Path):
    path = tmp_path / "r.csv"
    harness.append_rows(path, [result_row(3, "F", 1.25, mm_ms=1.1, ratio_mm=1.1), result_row(2, "F", 0.8)])
    text = report.markdown_report(harness.read_rows(path))
    assert "NVIDIA H100 80GB HBM3: torch 2.11.0, Triton 3.6.0, CUDA 12.8" in text
    assert "| 3 | r50_c2_1x1 | F | bfloat16 | channels_last | 1.000 | 1.250 | 1.25x | 1.10x |" in text
    assert "| dense, compute-bound, forward | cuDNN, channels_last |" in text
    assert report.NOT_A_SPEED not in text
    cpu = dataclasses.replace(result_row(2, "F", 0.8), gpu="cpu", timing=harness.TIMING_CPU, dtype="float32")
    assert report.NOT_A_SPEED in report.markdown_report([cpu])


def test_plots_say_plainly_when_matplotlib_is_missing(tmp_path: Path):
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="matplotlib"):
            report.write_plots([result_row(2, "F", 0.8)], tmp_path)
    else:
        paths = report.write_plots([result_row(2, "F", 0.8), result_row(5, "F", 1.1)], tmp_path)
        assert [p.name for p in paths] == ["nvidia-h100-80gb-hbm3-ratio.png", "nvidia-h100-80gb-hbm3-roofline.png"]


def test_generated_docs_are_current():
    """NOTES.md's roofline table and docs/performance.md are what --write-docs would write now."""
    notes = report.NOTES.read_text()
    assert report.replace_generated(notes, report.roofline_markdown()) == notes
    rows = harness.read_rows(harness.DEFAULT_CSV) if harness.DEFAULT_CSV.exists() else []
    assert report.PERFORMANCE_PAGE.read_text() == report.performance_page(rows)
    if not any(r.timing == harness.TIMING_CUDA for r in rows):
        assert "No GPU measurement has been made yet" in report.PERFORMANCE_PAGE.read_text()


# ---------------------------------------------------------------------------------------------
# The harness and the command


def test_filters_select_jobs():
    jobs = cli.select_jobs(_args("--class", "input_grad_strided"), smoke=False)
    assert {(j.shape.number, j.passes) for j in jobs} == {(4, ("D",)), (7, ("D",)), (13, ("D",)), (18, ("D",))}
    jobs = cli.select_jobs(_args("--dtype", "tf32", "--pass", "F,FB"), smoke=False)
    assert [(j.shape.number, j.dtype, j.passes) for j in jobs] == [
        (2, "tf32", ("F", "FB")), (5, "tf32", ("F", "FB")), (12, "tf32", ("F", "FB")), (24, "tf32", ("F", "FB")),
    ]  # fmt: skip
    # Smoke: tiny shapes, float32 standing in for bfloat16, no TF32 on CPU.
    jobs = cli.select_jobs(_args("--shape", "r50_c2_3x3"), smoke=True)
    assert [j.dtype for j in jobs] == ["float32", "float16"]
    assert jobs[0].shape == smoke_shape(SHAPES_BY_NUMBER[2]) and jobs[0].passes == ("F", "D", "W", "FB", "E")
    assert cli.run(_args("--shape", "99")) == 2 and cli.run(_args("--dtype", "float32")) == 2
    assert cli.run(_args("--layout", "nhwc")) == 2


def test_smoke_argv_round_trips():
    args = _args("--smoke", "--shape", "2,3", "--class", "grouped", "--dtype", "float16", "--pass", "F", "--layout",
                 "contiguous", "--plots")  # fmt: skip
    rebuilt = _args(*cli._argv(args, "--smoke"))
    assert vars(rebuilt) == vars(args)


def test_wrong_result_is_recorded_and_not_timed(monkeypatch: pytest.MonkeyPatch):
    shape = smoke_shape(SHAPES_BY_NUMBER[3])
    env = harness.Environment.detect(torch.device("cpu"))
    ops = harness.Operands.random(shape, DTYPES["float32"], env.device)
    expected = harness.reference_outputs(shape, ops, ("F",))
    timed = []
    monkeypatch.setattr(harness, "triton_pass", lambda *a: lambda: {"y": expected["y"] + 1.0})
    run = harness.Run(env, lambda fn: timed.append(fn) or 1.0, Ceilings(tflops={"float32": 1.0}, gbps=1.0), "run")
    row = harness.measure(shape, "F", "float32", "contiguous", ops.cast(torch.float32, "contiguous"), expected, run)
    assert row.check.startswith("wrong: relative error") and row.triton_ms is None and not timed


def test_smoke_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    csv_path = tmp_path / "smoke.csv"
    assert cli.run(_args("--smoke", "--shape", SMOKE_SHAPES, "--csv", str(csv_path))) == 0
    out = capsys.readouterr().out
    assert "NOT a speed" in out and report.NOT_A_SPEED in out and report.NO_VERDICTS in out
    assert "misses" not in out and "meets" not in out and "| class |" not in out
    rows = harness.read_rows(csv_path)
    expected = {
        (s.number, p, d, layout)
        for s in (SHAPES_BY_NUMBER[int(n)] for n in SMOKE_SHAPES.split(","))
        for p in s.all_passes()
        for d in ("float32", *(["float16"] if s.extra_dtypes else []))
        for layout in ("channels_last", "contiguous")
    }
    assert {(r.shape, r.pass_, r.dtype, r.layout) for r in rows} == expected
    assert all(r.check == "ok" and r.timing == harness.TIMING_CPU and r.gpu == "cpu" for r in rows)
    assert all(r.triton_ms > 0 and r.cudnn_ms > 0 and r.ratio_cudnn > 0 and r.roofline_pct > 0 for r in rows)
    assert {r.shape for r in rows if r.mm_ms is not None} == {3}  # torch.mm for the 1x1 shape only
    assert all(r.max_rel_error <= r.tolerance for r in rows)

    # --report reads the same CSV back.
    assert cli.run(_args("--report", str(csv_path))) == 0
    assert "| 3 | r50_c2_1x1 | F | float32 | channels_last |" in capsys.readouterr().out


def test_static_configs_prints_a_table(capsys: pytest.CaptureFixture[str]):
    assert cli.run(_args("--static-configs", "--pass", "F", "--dtype", "float16", "--max-configs", "1")) == 0
    out = capsys.readouterr().out
    assert "| kernel | dtype | BLOCK_M x N x K |" in out
    line = next(line for line in out.splitlines() if line.startswith("| forward | float16 |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert int(cells[6]) > 0 and cells[7] == "0" and cells[9] == "yes" and cells[10] == "none"


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message is for machines without a GPU")
def test_no_gpu_says_so(capsys: pytest.CaptureFixture[str]):
    assert cli.run(_args()) == 2
    assert "this machine has no CUDA GPU" in capsys.readouterr().err
