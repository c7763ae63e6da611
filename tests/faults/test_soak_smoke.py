"""``bench/soak.py`` runs from a checkout and passes (a short run; the real
soak is 64 connections for 60 s, see its docstring)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from ..support import ROOT


@pytest.mark.slow
@pytest.mark.server
def test_soak_script_short_run_passes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--seconds", "5", "--warmup", "2", "--connections", "16"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "SOAK PASSED" in result.stdout
    assert "5xx:             0" in result.stdout
