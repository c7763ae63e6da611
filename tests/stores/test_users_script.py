"""``sessup-sessions INI list --user ID`` and the ``revoke`` forms end to end, as
an operator runs them (a subprocess on an INI), against sessions an
application signed in, on every store."""
from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import webtest
from pyramid.paster import get_appsettings

from pyramid_sessup.scripts import sessions as sessions_script
from pyramid_sessup.users import UsersConfig

from ..support import POSTGRES_URL, REDIS_URL, write_ini
from . import app as app_module

SCRIPT = str(Path(sys.executable).with_name("sessup-sessions"))
USER = "ann@example.com"
OTHER = "bob@example.com"
WHEN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")


def run(ini: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, str(ini), *args], capture_output=True, text=True, timeout=120)


class Site:
    """An INI for one store, and the application it configures, in this process."""

    def __init__(self, ini: Path) -> None:
        self.ini = ini
        self.app = app_module.main({}, **get_appsettings(str(ini)))
        self.users = UsersConfig.from_values(self.app.registry.sessup_settings)

    def browser(self, agent: str, user: str | None = None) -> webtest.TestApp:
        client = webtest.TestApp(self.app, extra_environ={"HTTP_HOST": "example.com", "HTTP_USER_AGENT": agent,
                                                          "REMOTE_ADDR": "198.51.100.4"})
        if user is not None:
            client.post("/test/sign-in", {"user": user})
        return client

    @staticmethod
    def sid(client: webtest.TestApp) -> str:
        return client.cookies["sessup"].split(".", 1)[0]

    def handle(self, client: webtest.TestApp) -> str:
        return self.users.handle(self.sid(client))

    @staticmethod
    def user(client: webtest.TestApp) -> Any:
        return client.get("/test/who").json["user"]


@pytest.fixture(params=[
    pytest.param("file", id="file"),
    pytest.param("redis", marks=pytest.mark.redis, id="redis"),
    pytest.param("postgresql", marks=pytest.mark.postgres, id="postgresql"),
])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Site]:
    kind = request.param
    overrides = {"sessup.session.store": kind, "sessup.session.timeout": "600",
                 "sessup.session.users.record_address": "true",
                 "sessup.upload.path": str(tmp_path / "uploads")}
    if kind == "file":
        overrides["sessup.session.file.path"] = str(tmp_path / "sessions")
    elif kind == "redis":
        overrides.update({"sessup.session.url": REDIS_URL,
                          "sessup.session.key_prefix": request.getfixturevalue("redis_namespace")})
    else:
        overrides.update({"sessup.session.url": POSTGRES_URL,
                          "sessup.session.table": request.getfixturevalue("postgres_table")})
    (tmp_path / "uploads").mkdir()
    site = Site(write_ini(tmp_path, overrides))
    yield site
    site.app.registry.sessup_store.close()


def test_list_and_revoke_by_user(site: Site) -> None:
    a, b = site.browser("Browser A/1.0", USER), site.browser("Browser\tB", USER)
    c = site.browser("Browser C", OTHER)
    result = run(site.ini, "list", "--user", USER)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    # Most recently seen first; the tab of b's User-Agent is not kept (nor any control character).
    assert [row[0] for row in rows] == [site.handle(b), site.handle(a)]
    assert [row[3:] for row in rows] == [["BrowserB", "198.51.100.4"], ["Browser A/1.0", "198.51.100.4"]]
    assert all(WHEN.match(row[1]) and WHEN.match(row[2]) for row in rows)
    assert site.sid(a) not in result.stdout and site.sid(b) not in result.stdout  # handles, never IDs
    # Sign out everywhere but one session.
    result = run(site.ini, "revoke", "--user", USER, "--except", site.sid(a))
    assert (result.returncode, result.stdout) == (0, "revoked 1 session(s)\n")
    assert site.user(b) is None and site.user(a) == USER and site.user(c) == OTHER
    result = run(site.ini, "revoke", "--user", USER, "--except", site.sid(a))
    assert result.returncode == 1 and "no session" in result.stderr
    # One session by its ID: it leaves its user's list too.
    result = run(site.ini, "revoke", site.sid(c))
    assert (result.returncode, result.stdout) == (0, f"revoked {site.sid(c)}\n")
    assert site.user(c) is None
    assert run(site.ini, "list", "--user", OTHER).stdout == ""
    assert site.app.registry.sessup_store.user_sessions(site.users.user_key(OTHER)) == []
    # One session by the handle list --user shows.
    result = run(site.ini, "revoke", "--user", USER, site.handle(a))
    assert (result.returncode, result.stdout) == (0, f"revoked {site.handle(a)}\n")
    assert site.user(a) is None
    assert run(site.ini, "revoke", "--user", USER).returncode == 1
    assert run(site.ini, "list", "--user", USER).stdout == ""


def test_revoke_by_user_ends_every_session(site: Site) -> None:
    clients = [site.browser(f"Browser {i}", USER) for i in range(3)]
    result = run(site.ini, "revoke", "--user", USER)
    assert (result.returncode, result.stdout) == (0, "revoked 3 session(s)\n")
    assert [site.user(client) for client in clients] == [None, None, None]


@pytest.fixture
def quiet_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    # In process, the INI's logging configuration would replace pytest's handlers.
    monkeypatch.setattr(sessions_script, "setup_logging", lambda config_uri: None)


def call(ini: Path, *args: str) -> tuple[int, str, str]:
    """The same command in process: quicker for the error paths."""
    out, err = io.StringIO(), io.StringIO()
    status = sessions_script.main([str(ini), *args], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_usage_errors_and_unknown_sessions(site: Site, quiet_logging: None) -> None:
    a = site.browser("A", USER)
    sid, handle = site.sid(a), site.handle(a)
    usage = [
        ("count", "--user", USER), ("show", sid, "--user", USER), ("list", "--except", sid),
        ("revoke", "--except", sid), ("revoke",), ("revoke", "../../etc/passwd"), ("revoke", handle),
        ("revoke", "--user", USER, "--except", "short"), ("revoke", "--user", USER, "not-a-handle"),
        ("revoke", "--user", USER, handle, "--except", sid), ("list", "--user", ""),
        ("list", "--user", "x" * 1025),
    ]
    for args in usage:
        status, out, err = call(site.ini, *args)
        assert (status, out) == (2, ""), args
        assert err.startswith("sessup-sessions: "), args
    # Unknown sessions, users and handles: 1, and nothing happens.
    dash = "-" + sid[1:] if sid[0] != "-" else "_" + sid[1:]  # an ID may start with "-"
    other_handle = "-" + handle[1:] if handle[0] != "-" else "_" + handle[1:]
    for args in [("revoke", dash), ("revoke", "--user", OTHER), ("revoke", "--user", USER, other_handle),
                 ("revoke", "--user", OTHER, handle), ("revoke", "--user", "-ann", "--except", dash)]:
        status, out, err = call(site.ini, *args)
        assert (status, out) == (1, ""), (args, err)
    assert site.user(a) == USER
    assert call(site.ini, "list", "--user", "-nobody") == (0, "", "")


def test_memory_store_sees_no_user_sessions(tmp_path: Path) -> None:
    (tmp_path / "uploads").mkdir()
    ini = write_ini(tmp_path, {"sessup.session.store": "memory", "sessup.upload.path": str(tmp_path / "uploads")})
    listed = run(ini, "list", "--user", USER)
    assert (listed.returncode, listed.stdout) == (0, "")
    assert "memory store lives inside each app process" in listed.stderr
    revoked = run(ini, "revoke", "--user", USER)
    assert revoked.returncode == 1 and "no session to revoke" in revoked.stderr
