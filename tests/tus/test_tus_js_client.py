"""tus-js-client (the maintained JavaScript tus client, run by Node) against
real waitress: interrupted after some chunks, resumed by a new Upload with
the same URL, stored byte-exact.  Node and ``npm ci`` in tests/tus/js are
required (scripts/test.sh does it); missing, the test skips, under CI=true it fails."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ..support import free_port, running_server, unavailable
from .servers import TUS, Client, tus_ini

pytestmark = [pytest.mark.server]

JS = Path(__file__).resolve().parent / "js"
MiB = 1024 * 1024


def node() -> str:
    exe = shutil.which("node")
    if exe is None or not (JS / "node_modules" / "tus-js-client").is_dir():
        unavailable("node or tests/tus/js/node_modules (npm ci in tests/tus/js) is missing")
    return exe


def run(*args: str) -> dict[str, object]:
    proc = subprocess.run([node(), str(JS / "upload.js"), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_tus_js_client_interrupted_and_resumed(tmp_path: Path) -> None:
    node()
    data = os.urandom(12 * MiB + 5)
    source = tmp_path / "js.bin"
    source.write_bytes(data)
    port = free_port()
    with running_server(tus_ini(tmp_path / "srv", tmp_path / "uploads", tmp_path / "sessions", port), port) as server:
        browser = Client()
        # The visitor cookie (GET /csrf sets it) will own the upload; clients send it themselves.
        assert browser.request("GET", server.url + "/csrf").status == 200
        first = run(server.url + "/files/", str(source), browser.cookie, str(MiB), str(4 * MiB))
        url = str(first["url"])
        assert url.startswith(server.url + "/files/")
        offset = int(browser.request("HEAD", url, headers=TUS).headers["upload-offset"])
        assert 4 * MiB <= offset < len(data)

        second = run(server.url + "/files/", str(source), browser.cookie, str(MiB), "0", url)
        assert second["url"] == url
        result = browser.request("GET", url).json()
        assert result["filename"] == "from-tus-js-client.bin" and result["size"] == len(data)
        assert result["sha256"] == hashlib.sha256(data).hexdigest()
        assert browser.request("GET", server.url + result["url"]).body == data
