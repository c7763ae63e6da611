"""Verifiers and an UploadStored subscriber, as a host application writes them."""
from __future__ import annotations

import os
from typing import Any

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.router import Router

from pyramid_sessup.exceptions import UploadRejected
from pyramid_sessup.uploads.events import UploadStored
from pyramid_sessup.uploads.pipeline import StoredFile

#: What the verifiers and the subscriber saw, in order.
SEEN: list[tuple[str, Any]] = []


def no_pdf_javascript(file: StoredFile, request: Request) -> None:
    """Refuse a PDF that carries JavaScript (a verifier of the kind the setting is for)."""
    with open(file.temp_path, "rb") as f:
        data = f.read()
    if data.startswith(b"%PDF") and b"/JavaScript" in data:
        raise UploadRejected(f"File {file.filename!r}: PDF files with JavaScript are not accepted")


def record(file: StoredFile, request: Request) -> None:
    """Note each file a verifier is given: still temporary, not yet named."""
    SEEN.append(("verify", (file.filename, os.path.exists(file.temp_path), file.name, request.path)))


def explode(file: StoredFile, request: Request) -> None:
    raise RuntimeError("a verifier with a bug")


def on_stored(event: UploadStored) -> None:
    SEEN.append(("stored", (event.request.path, [(f.filename, f.name, f.temp_path, f.sha256) for f in event.files])))


def main(global_config: Any, **settings: Any) -> Router:
    """The demo's pages (form included) plus a subscriber to UploadStored."""
    import pyramid_sessup.demo

    app = pyramid_sessup.demo.main(global_config, **settings)
    with Configurator(registry=app.registry) as config:
        config.add_subscriber(on_stored, UploadStored)
    return app


def user_keys(request: Request) -> list[str]:
    """sessup.upload.quota_key for an app that binds users: the visitor's own key
    (session or address), then the user's (here from a test header)."""
    from pyramid_sessup.uploads.quota import visitor_keys

    user = request.headers.get("X-Test-User")
    return visitor_keys(request) + (["user:" + user] if user else [])
