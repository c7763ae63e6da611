"""docs/from-express.md and its Chinese twin: the app they build is written
out block by block, served by a real pserve, and tried with their curl block."""
from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

import pytest

from ..support import free_port, running_server
from .blocks import GUIDES, blocks, run_shell, runnable

pytestmark = pytest.mark.server


@pytest.mark.parametrize("guide", GUIDES, ids=["en", "zh_CN"])
def test_every_block_is_run_or_is_the_express_side(guide: Path) -> None:
    kinds = {(b.marker.split() + [""])[:2][1] if b.marker.startswith("run:") else b.marker for b in blocks(guide)}
    assert kinds <= {"file", "serve", "sh", "browser", "express"}, kinds
    assert [b.lang for b in blocks(guide) if b.marker == "express"] == ["js"] * 4


def test_the_two_guides_run_the_same_code() -> None:
    english, chinese = ([(b.marker, b.code) for b in blocks(g) if b.marker != "express"] for g in GUIDES)
    assert english == chinese


def build(guide: Path, directory: Path) -> tuple[list[str], str]:
    """Write the guide's files into ``directory``; return the serve command and the shell block."""
    for block in runnable(guide, "file"):
        (directory / block.marker.split()[2]).write_text(block.code, encoding="utf-8")
    [serve] = runnable(guide, "serve")
    [shell] = runnable(guide, "sh")
    return shlex.split(serve.code.strip()), shell.code


def serve_guide_app(guide: Path, directory: Path, port: int):  # noqa: ANN201
    command = build(guide, directory)[0]
    assert command == ["PYTHONPATH=.", "pserve", "app.ini"]
    env = {**os.environ, "PYTHONPATH": str(directory)}
    return running_server(directory / "app.ini", port, env=env, cwd=directory, args=[f"http_port={port}"],
                          probe="/views")


@pytest.mark.parametrize("guide", GUIDES, ids=["en", "zh_CN"])
def test_the_guide_app_serves_and_its_curl_block_runs(guide: Path, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is missing (apt-get install curl)")
    port = free_port()
    _, shell = build(guide, tmp_path)
    with serve_guide_app(guide, tmp_path, port):
        segments = run_shell(shell, f"http://127.0.0.1:{port}", tmp_path)
    for segment in segments:
        assert segment.matches(), f"{segment.commands}\nexpected: {segment.expected}\ngot: {segment.output!r}"
    # The upload landed in the INI's upload directory, byte for byte.
    [stored] = [p for p in (tmp_path / "public" / "files").iterdir() if p.is_file()]
    assert stored.read_bytes() == (tmp_path / "app.ini").read_bytes()
