"""Every error of the ``triton-conv`` command is one line on stderr with exit status 2; ``--debug``
shows the traceback of an unexpected one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from triton_conv.cli import main


def _fails_in_one_line(argv: list[str], capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2, f"exit status {status}: {err}"
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def test_shapes_row_torch_rejects_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "shapes.csv"
    rows = [
        "input_shape,weight_shape,stride,padding,dilation,groups",
        "2x4x8x8,4x4x3x3,1,1,1,1",
        "2x4x8x8,4x4x3x3,2,same,1,1",
    ]
    path.write_text("\n".join(rows) + "\n")
    _fails_in_one_line(["tune", "--shapes", str(path), "--dry-run"], capsys, f"{path}, line 3", "fix or remove")


def test_shapes_file_not_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "shapes.json"
    path.write_text("[{")
    _fails_in_one_line(["tune", "--shapes", str(path), "--dry-run"], capsys, "not valid JSON")


@pytest.mark.parametrize(
    "target, says",
    [
        ("torch.nn:Conv2d", "Conv2d() failed (TypeError"),
        ("triton_conv_no_such_module:build", "cannot import triton_conv_no_such_module"),
        ("torch.nn:NoSuchFactory", "has no callable 'NoSuchFactory'"),
        ("torch.nn", "must be 'module:factory'"),
    ],
)
def test_model_that_cannot_be_built(target: str, says: str, capsys: pytest.CaptureFixture[str]):
    _fails_in_one_line(["tune", "--model", target, "--input-shape", "1,3,8,8", "--dry-run"], capsys, says)


def test_model_forward_that_fails_on_the_input_shape(capsys: pytest.CaptureFixture[str]):
    argv = ["tune", "--model", "triton_conv.demo:digits_cnn", "--input-shape", "1,3,8,8", "--dry-run"]
    _fails_in_one_line(argv, capsys, "the model's forward failed", "check --input-shape")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message is for machines without a GPU")
def test_demo_on_cuda_without_a_gpu(capsys: pytest.CaptureFixture[str]):
    _fails_in_one_line(["demo", "--device", "cuda"], capsys, "--device cuda: this machine has no CUDA GPU")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message is for machines without a GPU")
def test_bench_without_a_gpu(capsys: pytest.CaptureFixture[str]):
    _fails_in_one_line(["bench"], capsys, "no CUDA GPU", "--smoke")


@pytest.mark.parametrize(
    "argv, says",
    [
        (["tune", "--dry-run"], "one of the arguments --model --shapes is required"),
        (["demo", "--device", "tpu9"], "--device tpu9"),
        (["bench", "--shape", "99"], "unknown --shape ['99']"),
        (["nonsense"], "invalid choice: 'nonsense'"),
    ],
)
def test_usage_errors(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]):
    _fails_in_one_line(argv, capsys, says)


def test_unexpected_error_is_one_line_and_debug_shows_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    argv = ["bench", "--report", str(tmp_path)]  # a directory where a CSV file should be
    _fails_in_one_line(argv, capsys, "IsADirectoryError", "--debug")
    with pytest.raises(IsADirectoryError):
        main([*argv, "--debug"])
