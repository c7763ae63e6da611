"""README.md's curl block, run as written against a real ``pserve development.ini``."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ..support import ROOT, free_port, running_server
from .blocks import blocks, run_shell

pytestmark = pytest.mark.server


def readme_curl_block() -> str:
    [block] = [b for b in blocks(ROOT / "README.md") if b.marker.startswith("tested: tests/docs/test_readme_curl.py")]
    assert block.lang == "sh"
    return block.code


def test_readme_curl_block_runs_as_written(tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is missing (apt-get install curl)")
    shutil.copy(ROOT / "development.ini", tmp_path / "development.ini")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SESSUP_SECRET"}
    with running_server(tmp_path / "development.ini", port, env=env, args=[f"http_port={port}"], probe="/csrf"):
        work = tmp_path / "client"
        work.mkdir()
        # As written, but for the port: the README's localhost:6543 may be someone else's server.
        segments = run_shell(readme_curl_block(), f"http://localhost:{port}", work)
    for segment in segments:
        assert segment.matches(), f"{segment.commands}\nexpected: {segment.expected}\ngot: {segment.output!r}"
    assert len(segments) == 3 and all(s.expected for s in segments)  # every command checked
    # Both uploads are stored, byte for byte.
    stored = [p for p in (tmp_path / "var" / "uploads").iterdir() if p.is_file()]
    assert len(stored) == 2 and all(p.read_bytes() == b"hello from curl\n" for p in stored)
