"""The real ``pserve development.ini`` (waitress) in a subprocess, driven over HTTP."""
from __future__ import annotations

import http.cookiejar
import json
import os
import urllib.request
from pathlib import Path

import pytest

from ..support import ROOT, free_port, running_server


def _development_ini_on(port: int, directory: Path) -> Path:
    """development.ini as shipped, listening on ``port``, with ./var under ``directory``."""
    text = (ROOT / "development.ini").read_text()
    assert "listen = localhost:6543" in text
    ini = directory / "development.ini"
    ini.write_text(text.replace("listen = localhost:6543", f"listen = 127.0.0.1:{port}"))
    return ini


@pytest.mark.server
def test_pserve_development_ini_serves_sessions(tmp_path: Path) -> None:
    port = free_port()
    ini = _development_ini_on(port, tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "SESSUP_SECRET"}
    with running_server(ini, port, env=env) as server:
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        views = [json.load(opener.open(server.url + "/session"))["views"] for _ in range(3)]
        assert views == [1, 2, 3]
        [cookie] = list(jar)
        assert cookie.name == "sessup" and cookie.has_nonstandard_attr("HttpOnly")
        # The file store keeps the session under ./var/sessions beside the INI.
        sid = cookie.value.split(".")[0]
        record = tmp_path / "var" / "sessions" / sid[:2] / f"{sid}.json"
        assert json.loads(record.read_text())["views"] == 3
        token = json.load(opener.open(server.url + "/csrf"))["csrf_token"]
        request = urllib.request.Request(server.url + "/session/destroy", method="POST",
                                         headers={"X-CSRF-Token": token})
        assert json.load(opener.open(request)) == {"destroyed": True}
        assert json.loads(record.read_text()) is None  # a tombstone: the ID stays dead


@pytest.mark.server
def test_production_ini_refuses_to_start_without_secret(tmp_path: Path) -> None:
    import subprocess
    import sys

    ini = tmp_path / "production.ini"
    ini.write_text((ROOT / "production.ini").read_text())
    env = {k: v for k, v in os.environ.items() if k != "SESSUP_SECRET"}
    pserve = str(Path(sys.executable).with_name("pserve"))
    port = f"http_port={free_port()}"  # should it start after all, never on the shared default port
    result = subprocess.run([pserve, str(ini), port], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "sessup.session.secret is required" in result.stderr
    env["SESSUP_SECRET"] = "dev-secret-change-me-0123456789abcdef"
    result = subprocess.run([pserve, str(ini), port], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "development or short secret" in result.stderr
