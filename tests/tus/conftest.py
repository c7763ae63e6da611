"""Helpers of the tus tests: headers, creation, what an upload directory holds,
and the tus stores (``tus_backend``: the upload directory, then a bucket of the
S3 server process)."""
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


class TusBackend:
    """One tus store as the tests see it: its settings, and what it keeps.

    ``local`` adds no setting (the upload directory's ``.tus``); ``s3`` keeps
    uploads and files in a fresh bucket of the S3 server process, under
    ``uploads/`` (state, staging objects and multipart uploads under
    ``uploads/.tus/``).
    """

    prefix = "uploads/"

    def __init__(self, kind: str, upload_dir: Path, server: Any = None, bucket: str = "") -> None:
        self.kind = kind
        self.upload_dir = upload_dir
        self.server = server
        self.bucket = bucket
        self.settings: dict[str, str] = server.settings(bucket, self.prefix) if kind == "s3" else {}

    def __repr__(self) -> str:
        return self.kind

    @property
    def tus_prefix(self) -> str:
        return self.prefix + ".tus/"

    def leftovers(self) -> list[str]:
        """Everything kept: files under the upload directory and, for s3,
        every object and unfinished multipart upload in the bucket."""
        found = files_under(self.upload_dir)
        if self.kind == "s3":
            found += [f"s3:{key}" for key in self.server.keys(self.bucket)]
            found += [f"unfinished:{key}" for key in self.server.unfinished(self.bucket)]
        return found

    def tus_state(self) -> list[str]:
        """What the tus store keeps (state, bytes, locks; unfinished multipart uploads)."""
        if self.kind == "local":
            return files_under(self.upload_dir, ".tus")
        keys = [k.removeprefix(self.prefix) for k in self.server.keys(self.bucket) if k.startswith(self.tus_prefix)]
        return sorted(keys + [f"unfinished:{k}" for k in self.server.unfinished(self.bucket)])

    def records(self) -> list[str]:
        """The tus store's state records only (one per upload it still knows)."""
        suffix = ".json" if self.kind == "local" else ".info"
        return [name for name in self.tus_state() if name.endswith(suffix)]

    def bytes_kept(self) -> list[str]:
        """What the tus store keeps besides state records and locks: data
        files, staging objects, finished objects, unfinished multipart uploads."""
        return [name for name in self.tus_state() if not name.endswith((".json", ".lock", ".info"))]

    def stored(self) -> list[str]:
        """Names of the stored (finished) files."""
        if self.kind == "local":
            return stored_files(self.upload_dir)
        return sorted(k.removeprefix(self.prefix) for k in self.server.keys(self.bucket)
                      if not k.startswith((self.prefix + ".tmp/", self.tus_prefix)))

    def read(self, name: str) -> bytes:
        if self.kind == "local":
            return (self.upload_dir / name).read_bytes()
        return bytes(self.server.read(self.bucket, self.prefix + name))

    def metadata(self, name: str) -> dict[str, Any]:
        """The metadata kept with a stored file, read where the backend keeps it."""
        if self.kind == "local":
            import json

            return dict(json.loads((self.upload_dir / ".meta" / (name + ".json")).read_text()))
        from pyramid_sessup.uploads.s3 import decode_metadata

        head = self.server.client().head_object(Bucket=self.bucket, Key=self.prefix + name)
        return decode_metadata(head["Metadata"])

    def received(self, upload_id: str) -> bytes:
        """The bytes an upload holds: a finished partial's, or a short
        unfinished upload's (for s3, one that has no part yet)."""
        if self.kind == "local":
            return (self.upload_dir / ".tus" / (upload_id + ".part")).read_bytes()
        import json

        state = json.loads(self.server.read(self.bucket, f"{self.tus_prefix}{upload_id}.info"))["store"]
        if state.get("assembled"):
            return bytes(self.server.read(self.bucket, self.tus_prefix + upload_id))
        assert not state.get("parts") and not state.get("upload"), state
        staging = state.get("staging")
        if not staging:
            return b""
        return bytes(self.server.read(self.bucket, f"{self.tus_prefix}{upload_id}.part.{staging[0]}"))


@pytest.fixture(params=["local", "s3"])
def tus_backend(request: pytest.FixtureRequest, upload_dir: Path) -> TusBackend:
    """Each tus store in turn; a test that takes it runs on both."""
    if request.param == "local":
        return TusBackend("local", upload_dir)
    return TusBackend("s3", upload_dir, request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket"))


@pytest.fixture
def settings(settings: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    """The tests' settings, plus the tus store's when the test takes ``tus_backend``."""
    if "tus_backend" in request.fixturenames:
        return {**settings, **request.getfixturevalue("tus_backend").settings}
    return settings
