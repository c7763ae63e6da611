"""A small HTTP client for real waitress servers (keeps the session cookie),
and tus-js-client run by Node against them."""
from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..support import unavailable, write_ini

TUS = {"Tus-Resumable": "1.0.0"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Client:
    """One browser-like client: its own cookies, any server."""

    timeout: float = 60.0
    extra: dict[str, str] = field(default_factory=dict)
    jar: dict[str, str] = field(default_factory=dict)

    @property
    def cookie(self) -> str:
        """The ``Cookie`` header this client sends."""
        return "; ".join(f"{name}={value}" for name, value in self.jar.items())

    def request(self, method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
        parts = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        try:
            all_headers = {**self.extra, **(headers or {})}
            if self.cookie:
                all_headers["Cookie"] = self.cookie
            conn.request(method, parts.path or "/", body=body, headers=all_headers)
            res = conn.getresponse()
            data = res.read()
            headers_out = {k.lower(): v for k, v in res.getheaders()}
            for key, value in res.getheaders():
                if key.lower() == "set-cookie":
                    name, _, rest = value.split(";", 1)[0].partition("=")
                    if "Max-Age=0" in value:
                        self.jar.pop(name, None)
                    else:
                        self.jar[name] = rest
            return Reply(res.status, headers_out, data)
        finally:
            conn.close()


def tus_settings(upload_dir: Path, session_dir: Path, **overrides: str) -> dict[str, str]:
    """File sessions (shareable by processes), uploads in ``upload_dir``."""
    return {
        "sessup.upload.path": str(upload_dir),
        "sessup.session.store": "file",
        "sessup.session.file.path": str(session_dir),
        "sessup.upload.max_file_size": str(200 * 1024 * 1024),
        "sessup.upload.max_total_size": str(200 * 1024 * 1024),
        **overrides,
    }


def tus_ini(directory: Path, upload_dir: Path, session_dir: Path, port: int, **overrides: str) -> Path:
    """An INI for pserve (waitress) with :func:`tus_settings`."""
    directory.mkdir(parents=True, exist_ok=True)
    return write_ini(directory, tus_settings(upload_dir, session_dir, **overrides), port=port)


JS = Path(__file__).resolve().parent / "js"


def node() -> str:
    """The ``node`` executable, with tus-js-client installed (``npm ci`` in tests/tus/js)."""
    exe = shutil.which("node")
    if exe is None or not (JS / "node_modules" / "tus-js-client").is_dir():
        unavailable("node or tests/tus/js/node_modules (npm ci in tests/tus/js) is missing")
    return exe


def run(*args: str, script: str = "upload.js") -> dict[str, Any]:
    """Run a script of tests/tus/js; its last line of output, as JSON."""
    proc = subprocess.run([node(), str(JS / script), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
