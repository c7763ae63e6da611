"""Helpers of the tus tests: headers, creation, and what an upload directory holds."""
from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import pytest
import webtest

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def meta(**pairs: str) -> str:
    """An ``Upload-Metadata`` value."""
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def patch_headers(offset: int, **extra: str) -> dict[str, str]:
    return {**TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS, **extra}


def files_under(upload_dir: Path, sub: str = "") -> list[str]:
    """Every file under the upload directory (or one of its subdirectories)."""
    base = upload_dir / sub if sub else upload_dir
    return sorted(str(p.relative_to(upload_dir)) for p in base.rglob("*") if p.is_file())


def stored_files(upload_dir: Path) -> list[str]:
    """Stored (finished) files: the top level of the upload directory."""
    return sorted(p.name for p in upload_dir.iterdir() if p.is_file())


@pytest.fixture
def create(testapp: webtest.TestApp) -> Any:
    """``create(length, filename="a.bin", **headers)`` -> Location path of a new upload."""

    def make(length: int, filename: str = "a.bin", status: int = 201, **headers: str) -> str:
        res = testapp.post("/files/", headers={**TUS, "Upload-Length": str(length),
                                               "Upload-Metadata": meta(filename=filename), **headers},
                           status=status)
        return res.headers.get("Location", "").replace("http://example.com", "")

    return make
