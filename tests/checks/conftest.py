"""Helpers of the tests of what runs before a file is stored (content check,
virus scan, verifiers, quotas, the UploadStored event, vanishing folders): one
client that drives the three upload paths of the demo app, a real clamd, and
a look at what the upload directory holds."""
from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import webtest

from ..support import ROOT, unavailable

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = "application/offset+octet-stream"


def stored(upload_dir: Path) -> list[str]:
    """Stored (final) files: the top level of the upload directory."""
    return sorted(p.name for p in upload_dir.iterdir() if p.is_file())


def everything(upload_dir: Path) -> list[str]:
    """Every file under the upload directory (stored, temporary, metadata, tus)."""
    return sorted(str(p.relative_to(upload_dir)) for p in upload_dir.rglob("*") if p.is_file())


def tus_meta(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


class Paths:
    """One visitor (one cookie jar) uploading through ``/upFile``, the form and tus."""

    def __init__(self, app: webtest.TestApp) -> None:
        self.app = app

    def token(self) -> str:
        return self.app.get("/csrf").json["csrf_token"]

    def upfile(self, files: list[tuple[str, bytes]], status: Any = "*", **headers: str) -> webtest.TestResponse:
        return self.app.post("/upFile", [], upload_files=[("inputFile", n, d) for n, d in files],
                             headers={"X-CSRF-Token": self.token(), "Accept": "application/json", **headers},
                             status=status)

    def form(self, files: list[tuple[str, bytes]], status: Any = "*") -> webtest.TestResponse:
        """Post the form; a success is the page its redirect leads to (GET /upload/done)."""
        page = self.app.get("/upload")
        token = page.forms["upload-form"]["csrf_token"].value
        res = self.app.post("/upload", [("csrf_token", token), ("description", "x")],
                            upload_files=[("inputFile", n, d) for n, d in files] or [("inputFile", "", b"")],
                            status=status)
        return res.follow() if res.status_int == 303 else res

    def tus_create(self, length: int, filename: str, data: bytes | None = None, status: Any = "*",
                   **headers: str) -> webtest.TestResponse:
        extra = {"Content-Type": OCTETS} if data is not None else {}
        return self.app.request("/files/", method="POST", body=data or b"", status=status,
                                headers={**TUS, "Host": "example.com", "Upload-Length": str(length),
                                         "Upload-Metadata": tus_meta(filename=filename), **extra, **headers})

    def tus(self, filename: str, data: bytes, chunk: int | None = None, status: Any = "*") -> webtest.TestResponse:
        """Create a tus upload, then PATCH ``data`` (in ``chunk``-sized pieces); the last answer."""
        res = self.tus_create(len(data), filename, status=status)
        if res.status_int != 201:
            return res
        location = res.headers["Location"].replace("http://example.com", "")
        step = chunk or max(1, len(data))
        offset = 0
        while offset < len(data):
            piece = data[offset:offset + step]
            res = self.app.request(location, method="PATCH", body=piece, status=status,
                                   headers={**TUS, "Host": "example.com", "Upload-Offset": str(offset),
                                            "Content-Type": OCTETS})
            if res.status_int != 204:
                return res
            offset += len(piece)
        return res

    def upload(self, path: str, name: str, data: bytes, status: Any = "*") -> webtest.TestResponse:
        """One file through ``path`` (upfile, form or tus)."""
        if path == "upfile":
            return self.upfile([(name, data)], status=status)
        if path == "form":
            return self.form([(name, data)], status=status)
        return self.tus(name, data, status=status)


PATHS = ["upfile", "form", "tus"]


def refused_message(res: webtest.TestResponse) -> str:
    """The reason an upload was refused, whichever path answered: the developer
    text of ``/upFile`` and tus, the short message for people of the form."""
    if res.content_type == "application/json":
        return res.json["error"]
    text = res.text
    box = re.search(r'<div id="form-errors" class="alert alert-danger" role="alert">(.*?)</div>', text, re.S)
    if box:
        return " ".join(re.sub(r"\s+", " ", m).strip() for m in re.findall(r"<p[^>]*>(.*?)</p>", box.group(1), re.S))
    return text


@pytest.fixture
def visitor(make_app: Any) -> Any:
    """``visitor(**settings)``: a :class:`Paths` client of the demo app with those settings."""

    def make(**overrides: Any) -> Paths:
        app = make_app(**overrides)
        return Paths(webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"}))

    return make


# -- a real clamd, on signatures of its own ---------------------------------------------------

#: Content of the "malware" test files: random-looking but fixed, so a hash signature matches.
MALWARE = b"sessup test malware sample, not a virus\n" + bytes(range(256)) * 4
#: A body signature: these bytes anywhere in a file, at any offset, are "infected".
MARKER = b"SESSUP-TEST-BODY-SIGNATURE-7f3a9c"
HASH_SIGNATURE = "Sessup.Test.HashSignature"
BODY_SIGNATURE = "Sessup.Test.BodySignature"


class Clamd:
    """A clamd started by scripts/run-clamd.sh on a private database and socket."""

    def __init__(self, options: tuple[str, ...] = ()) -> None:
        if not os.path.exists("/usr/sbin/clamd"):
            unavailable("clamd is not installed (apt-get install clamav-daemon)")
        # A short path: a unix socket path may not exceed 107 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="clamd-"))
        db = self.dir / "db"
        db.mkdir()
        import hashlib

        (db / "sessup-test.hsb").write_text(f"{hashlib.sha256(MALWARE).hexdigest()}:{len(MALWARE)}:{HASH_SIGNATURE}\n")
        (db / "sessup-test.ndb").write_text(f"{BODY_SIGNATURE}:0:*:{MARKER.hex()}\n")
        self.socket = self.dir / "clamd.sock"
        self.url = f"unix://{self.socket}"
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.dir / "stdout.log", "wb") as out:  # the child keeps its own copy
            self.proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "run-clamd.sh"), str(self.dir),
                                          *self.options], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"clamd exited with {self.proc.returncode}:\n{self.log()}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"clamd did not answer within 60 s:\n{self.log()}")

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(str(self.socket))
                s.sendall(b"zPING\0")
                return s.recv(16) == b"PONG\0"
        except OSError:
            return False

    def log(self) -> str:
        parts = []
        for name in ("stdout.log", "clamd.log"):
            path = self.dir / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def clamd() -> Iterator[Clamd]:
    """One clamd for the test session (it is started once: loading is the slow part)."""
    daemon = Clamd()
    daemon.start()
    yield daemon
    daemon.remove()
