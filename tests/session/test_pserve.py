"""The real ``pserve development.ini`` (waitress) in a subprocess, driven over HTTP."""
from __future__ import annotations

import http.cookiejar
import json
import os
import secrets
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ..support import PSERVE, ROOT, free_port, running_server


def _copy(name: str, directory: Path) -> Path:
    """An INI as shipped, copied so that its ./var lands in ``directory``."""
    ini = directory / name
    shutil.copy(ROOT / name, ini)
    return ini


def _pserve(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PSERVE, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.server
def test_pserve_development_ini_serves_sessions(tmp_path: Path) -> None:
    port = free_port()
    ini = _copy("development.ini", tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "SESSUP_SECRET"}
    with running_server(ini, port, env=env, args=[f"http_port={port}"]) as server:
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
    ini = _copy("production.ini", tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "SESSUP_SECRET"}
    result = _pserve(str(ini), f"http_port={free_port()}", env=env)
    assert result.returncode != 0
    assert "sessup.session.secret is required" in result.stderr
    env["SESSUP_SECRET"] = "dev-secret-change-me-0123456789abcdef"
    result = _pserve(str(ini), f"http_port={free_port()}", env=env)
    assert result.returncode != 0 and "development or short secret" in result.stderr


# -- the port, and a port already taken -----------------------------------------------------

def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/csrf", timeout=5).read()
        return True
    except OSError:
        return False


@pytest.mark.server
@pytest.mark.parametrize("name", ["development.ini", "production.ini"])
def test_http_port_on_the_command_line_wins_over_the_ini_default(name: str, tmp_path: Path) -> None:
    ini = _copy(name, tmp_path)
    default, chosen = free_port(), free_port()
    # The INI's own default ([server:main] port), moved off 6543 so the test owns the port.
    text = ini.read_text()
    assert text.count("\nport = 6543\n") == 1
    ini.write_text(text.replace("\nport = 6543\n", f"\nport = {default}\n"))
    env = {**os.environ, "SESSUP_SECRET": secrets.token_urlsafe(48)}
    with running_server(ini, default, env=env, probe="/csrf"):
        assert _answers(default)
    with running_server(ini, chosen, env=env, probe="/csrf", args=[f"http_port={chosen}"]):
        assert _answers(chosen) and not _answers(default)


@pytest.mark.server
@pytest.mark.parametrize("name", ["development.ini", "production.ini"])
def test_a_taken_port_is_one_clear_line(name: str, tmp_path: Path) -> None:
    ini = _copy(name, tmp_path)
    env = {**os.environ, "SESSUP_SECRET": secrets.token_urlsafe(48)}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _pserve(str(ini), f"http_port={port}", env=env)
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == [f"pserve: cannot listen on {'localhost' if name == 'development.ini' else '127.0.0.1'}:{port}: "
                     f"the address is already in use (another server is running there?). Stop the other server "
                     f"or choose another port: pserve {name} http_port={port + 1}"]
    # Refused before the application was built: nothing of it ran (no ./var created).
    assert not (tmp_path / "var").exists()


@pytest.mark.server
def test_production_ini_serves_the_addon_only_on_localhost_and_logs_where(tmp_path: Path) -> None:
    ini = _copy("production.ini", tmp_path)
    port = free_port()
    env = {**os.environ, "SESSUP_SECRET": secrets.token_urlsafe(48)}
    with running_server(ini, port, env=env, probe="/csrf", args=[f"http_port={port}"]) as server:
        # The add-on's routes answer; the demo pages are off (sessup.demo.pages = false).
        assert "csrf_token" in json.load(urllib.request.urlopen(server.url + "/csrf"))
        for path in ("/", "/upload", "/ajax", "/session/page", "/favicon.ico", "/static/sessup.css"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(server.url + path)
            assert refused.value.code == 404, path
        # Bound to 127.0.0.1 only: another address of this machine does not answer.
        other = _other_local_address()
        if other is not None:
            with pytest.raises(OSError):
                socket.create_connection((other, port), timeout=2).close()
        log = server.log()
    # At production's log levels the served address is still written.
    assert f"Serving on http://127.0.0.1:{port}" in log


def _other_local_address() -> str | None:
    """An address of this machine other than loopback (the one a default route uses), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address
