"""The README's and the guide's examples run as written, in order (with their small shapes)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from triton_conv.cli import main

REPO = Path(__file__).resolve().parent.parent


def _blocks(page: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", (REPO / page).read_text(), flags=re.S | re.M)


@pytest.mark.parametrize("page", ["README.md", "docs/guide.md"])
def test_python_examples_run_in_order(page: str, capsys: pytest.CaptureFixture[str]):
    blocks = _blocks(page, "python")
    assert blocks, f"{page} has no python examples"
    namespace: dict[str, object] = {}
    for number, block in enumerate(blocks, 1):
        try:
            exec(compile(block, f"{page} python block {number}", "exec"), namespace)
        except Exception as error:
            pytest.fail(f"{page}, python block {number}: {type(error).__name__}: {error}\n{block}")
    out = capsys.readouterr().out
    assert "BatchNorms folded" in out and "run triton_conv" in out


def test_guide_commands_that_need_no_gpu_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    """The guide's --dry-run commands, beside the shapes file it shows."""
    (tmp_path / "shapes.csv").write_text(_blocks("docs/guide.md", "csv")[0])
    monkeypatch.chdir(tmp_path)
    commands = [
        line
        for block in _blocks("docs/guide.md", "sh")
        for line in block.splitlines()
        if line.startswith("triton-conv ") and "--dry-run" in line
    ]
    assert len(commands) == 2, commands
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0, f"{command}: {capsys.readouterr().err}"
        assert re.search(r"\d+ problems, \d+ keys", capsys.readouterr().out), command
