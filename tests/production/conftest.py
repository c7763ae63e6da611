"""The production profile: ``pserve production.ini`` (gunicorn) with Debian's
nginx in front configured by ``deploy/nginx.conf``."""
from __future__ import annotations

import http.client
import json
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from ..support import Server, free_port, start_production, write_production_ini
from .nginx import Nginx, client_context


@dataclass
class Stack:
    server: Server
    front: Nginx
    directory: Path

    @property
    def upload_dir(self) -> Path:
        return self.directory / "uploads"

    def pids(self) -> list[int]:
        """Every process of the stack: gunicorn's master and workers, nginx's master and worker."""
        return [*self.server.pids(), *self.front.pids()]


def production_app_ini(directory: Path, **overrides: str) -> Path:
    """production.ini with its data under ``directory``."""
    return write_production_ini(directory, {
        "sessup.session.file.path": str(directory / "sessions"),
        "sessup.upload.path": str(directory / "uploads"),
        **overrides,
    })


@pytest.fixture(scope="package")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("production")
    port = free_port()
    server = start_production(production_app_ini(directory), port)
    front = Nginx(port)
    try:
        front.start()
        yield Stack(server, front, directory)
    finally:
        front.stop()
        server.stop()


class Browser:
    """One client with its cookies (session, CSRF visitor) and CSRF token, over HTTP or HTTPS."""

    def __init__(self, base: str, timeout: float = 30.0) -> None:
        parts = urllib.parse.urlsplit(base)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or (443 if self.https else 80)
        self.timeout = timeout
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.cookies: dict[str, str] = {}
        self.token = ""

    @property
    def cookie(self) -> str:
        """The ``Cookie`` header this client sends."""
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())

    def connection(self) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout, context=client_context())
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = self.connection()
        try:
            all_headers = dict(headers or {})
            if self.https and method not in ("GET", "HEAD"):
                all_headers.setdefault("Origin", self.origin)  # as a browser sends it (Pyramid checks it on HTTPS)
            if self.cookie:
                all_headers["Cookie"] = self.cookie
            conn.request(method, path, body=body, headers=all_headers)
            res = conn.getresponse()
            data = res.read()
            got = {k.lower(): v for k, v in res.getheaders()}
            for name, value in res.getheaders():
                if name.lower() == "set-cookie":
                    pair = value.split(";", 1)[0]
                    key, _, val = pair.partition("=")
                    self.cookies[key.strip()] = val.strip()
            return res.status, got, data
        finally:
            conn.close()

    def login(self) -> Browser:
        """A session and its CSRF token (``GET /csrf``)."""
        status, _, body = self.request("GET", "/csrf", headers={"Accept": "application/json"})
        assert status == 200, body
        self.token = json.loads(body)["csrf_token"]
        assert self.cookie
        return self
