"""Helpers of the upload tests: hand-built multipart bodies, raw WSGI calls,
a check that an upload directory holds nothing new, and the storage backends
(``backend``: the upload directory, then a bucket of the S3 server process)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import webtest
from pyramid.config import Configurator
from webob import Request

BOUNDARY = "----sessupBoundary7MA4YWxkTrZu0gW"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def part(name: str, data: bytes, filename: str | None = None, content_type: str | None = None,
         disposition: str | None = None, extra: Iterable[str] = ()) -> bytes:
    """One part: headers, blank line, data (no delimiters)."""
    if disposition is None:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
    lines = [f"Content-Disposition: {disposition}"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.extend(extra)
    return "\r\n".join(lines).encode("utf-8") + b"\r\n\r\n" + data


def body(*parts: bytes, boundary: str = BOUNDARY, close: bool = True) -> bytes:
    """A multipart body of ``parts``; ``close=False`` omits the final boundary."""
    out = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    if close:
        out += b"--" + boundary.encode() + b"--\r\n"
    return out


def leftovers(upload_dir: Path) -> list[str]:
    """Every file under the upload directory (stored, temporary or metadata)."""
    return sorted(str(p.relative_to(upload_dir)) for p in upload_dir.rglob("*") if not p.is_dir())


class Backend:
    """One storage backend as the tests see it: its settings, and what it holds.

    ``local`` adds no setting (the tests' upload directory, as always); ``s3``
    stores in a fresh bucket of the S3 server process, under ``uploads/``.
    """

    def __init__(self, kind: str, upload_dir: Path, server: Any = None, bucket: str = "") -> None:
        self.kind = kind
        self.upload_dir = upload_dir
        self.server = server
        self.bucket = bucket
        self.prefix = "uploads/"
        self.settings: dict[str, str] = server.settings(bucket, self.prefix) if kind == "s3" else {}

    def __repr__(self) -> str:
        return self.kind

    def leftovers(self) -> list[str]:
        """Everything stored or left over: files under the upload directory and,
        for s3, every object and unfinished multipart upload in the bucket."""
        found = leftovers(self.upload_dir)
        if self.kind == "s3":
            found += [f"s3:{key}" for key in self.server.keys(self.bucket)]
            found += [f"unfinished:{key}" for key in self.server.unfinished(self.bucket)]
        return found

    def temps(self) -> list[str]:
        """Temporary files: ``.tmp`` entries, or temporary objects and uploads."""
        if self.kind == "local":
            return sorted(p.name for p in (self.upload_dir / ".tmp").iterdir())
        tmp = self.prefix + ".tmp/"
        keys = [k for k in self.server.keys(self.bucket) if k.startswith(tmp)]
        return sorted(keys + self.server.unfinished(self.bucket))

    def stored(self) -> list[str]:
        """Names of the stored files (anything else found where they live is
        listed as is, so that a pattern check catches it)."""
        if self.kind == "local":
            return sorted(p.name for p in self.upload_dir.iterdir() if not p.name.startswith("."))
        tmp = self.prefix + ".tmp/"
        return sorted(k.removeprefix(self.prefix) for k in self.server.keys(self.bucket) if not k.startswith(tmp))

    def read(self, name: str) -> bytes:
        if self.kind == "local":
            return (self.upload_dir / name).read_bytes()
        return bytes(self.server.read(self.bucket, self.prefix + name))

    def metadata(self, name: str) -> dict[str, Any]:
        """The metadata kept with a stored file, read where the backend keeps it."""
        if self.kind == "local":
            return dict(json.loads((self.upload_dir / ".meta" / (name + ".json")).read_text()))
        from pyramid_sessup.uploads.s3 import decode_metadata

        head = self.server.client().head_object(Bucket=self.bucket, Key=self.prefix + name)
        return decode_metadata(head["Metadata"])


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, upload_dir: Path) -> Backend:
    """Each storage backend in turn; a test that takes it runs on both."""
    if request.param == "local":
        return Backend("local", upload_dir)
    server = request.getfixturevalue("s3_server")
    return Backend("s3", upload_dir, server, request.getfixturevalue("s3_bucket"))


@pytest.fixture
def settings(settings: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    """The tests' settings, plus the backend's when the test takes ``backend``."""
    if "backend" in request.fixturenames:
        return {**settings, **request.getfixturevalue("backend").settings}
    return settings


class RaisingInput(io.RawIOBase):
    """A wsgi.input that yields ``data`` and then fails like a dropped connection."""

    def __init__(self, data: bytes, error: Exception | None = None) -> None:
        self.data = io.BytesIO(data)
        self.error = error

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        chunk = self.data.read(size)
        if not chunk and self.error is not None:
            raise self.error
        return chunk


def raw_call(app: Any, stream: Any, content_length: int | None, content_type: str = MULTIPART,
             headers: dict[str, str] | None = None) -> Any:
    """Call the WSGI app with an arbitrary wsgi.input and CONTENT_LENGTH."""
    req = Request.blank("/upFile", method="POST", headers=headers or {})
    req.environ["wsgi.input"] = stream
    req.environ["CONTENT_TYPE"] = content_type
    if content_length is None:
        req.environ.pop("CONTENT_LENGTH", None)
    else:
        req.environ["CONTENT_LENGTH"] = str(content_length)
    return req.get_response(app)


def addon_app(settings: dict[str, Any]) -> Any:
    """A host application with the add-on's session factory and its upload
    routes (``pyramid_sessup.uploads``) and session API (for ``/csrf``)."""
    with Configurator(settings=settings) as config:
        config.include("pyramid_sessup")
        config.include("pyramid_sessup.session_api")
        config.include("pyramid_sessup.uploads")
    return config.make_wsgi_app()


@pytest.fixture
def upapp(settings: dict[str, Any]) -> Callable[..., webtest.TestApp]:
    """A WebTest client of the add-on; CSRF is off unless asked for."""

    def make(**overrides: Any) -> webtest.TestApp:
        app = addon_app({**settings, "sessup.upload.require_csrf": "false", **overrides})
        return webtest.TestApp(app, extra_environ={"HTTP_HOST": "example.com"})

    return make


@pytest.fixture
def client(upapp: Callable[..., webtest.TestApp]) -> webtest.TestApp:
    return upapp()


def post_body(client: webtest.TestApp, data: bytes, content_type: str = MULTIPART, status: Any = "*",
              **headers: str) -> Any:
    """POST raw bytes to /upFile (WebTest's ``post`` would re-encode them),
    with the client's cookies."""
    headers.setdefault("Host", "example.com")  # the cookie domain of the fixtures' client
    return client.request("/upFile", method="POST", body=data, content_type=content_type, status=status,
                          headers=headers)
