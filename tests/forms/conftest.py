"""Helpers of the form tests: the form's token, multipart posts, kept uids."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Iterable

import pytest
import webtest


def stored_files(upload_dir: Path) -> list[str]:
    """Stored (final) files only."""
    return sorted(p.name for p in upload_dir.iterdir() if p.is_file())


def temp_files(upload_dir: Path) -> list[str]:
    tmp = upload_dir / ".tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


def kept_uids(html: str) -> list[str]:
    return re.findall(r'name="inputFile\.keep" value="([^"]+)"', html)


def errors(html: str) -> list[str]:
    """Text of every field error shown."""
    return [re.sub(r"\s+", " ", m).strip() for m in re.findall(r'class="invalid-feedback"[^>]*>(.*?)</p>', html, re.S)]


def form_errors(html: str) -> list[str]:
    """Text of each message of the error box above the form (a refusal of the whole upload)."""
    box = re.search(r'<div id="form-errors" class="alert alert-danger" role="alert">(.*?)</div>', html, re.S)
    return [re.sub(r"\s+", " ", m).strip() for m in re.findall(r"<p[^>]*>(.*?)</p>", box.group(1), re.S)] if box else []


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FormClient:
    """Drives ``/upload`` like a browser: GET for the token, multipart POSTs."""

    def __init__(self, testapp: webtest.TestApp) -> None:
        self.app = testapp
        self.token = ""

    def open(self, url: str = "/upload", **kw: Any) -> webtest.TestResponse:
        page = self.app.get(url, **kw)
        self.token = page.forms["upload-form"]["csrf_token"].value
        return page

    def post(self, files: Iterable[tuple[str, bytes]] = (), description: str = "some files",
             keep: Iterable[str] = (), token: str | None = None, status: Any = "*",
             extra: Iterable[tuple[str, str]] = (), **kw: Any) -> webtest.TestResponse:
        if not self.token and token is None:
            self.open()
        fields: list[tuple[str, Any]] = [("csrf_token", self.token if token is None else token),
                                         ("description", description)]
        fields += [("inputFile.keep", uid) for uid in keep]
        fields += list(extra)
        uploads = [("inputFile", name, data) for name, data in files] or [("inputFile", "", b"")]
        return self.app.post("/upload", fields, upload_files=uploads, status=status, **kw)


@pytest.fixture
def form(testapp: webtest.TestApp) -> FormClient:
    client = FormClient(testapp)
    client.open()
    return client


@pytest.fixture
def make_form(make_app: Any):
    def make(**overrides: Any) -> FormClient:
        client = FormClient(webtest.TestApp(make_app(**overrides), extra_environ={"HTTP_HOST": "example.com"}))
        client.open()
        return client

    return make
