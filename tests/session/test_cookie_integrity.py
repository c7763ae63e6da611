"""Cookie integrity: several session cookies that disagree are trusted for
nothing (every store, and through a real pserve), and the ``__Host-`` name
prefix is checked at start-up against the cookie attributes it needs."""
from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pytest
import webtest
from pyramid.exceptions import ConfigurationError

from pyramid_sessup.demo import main

from ..support import free_port, running_server, write_ini
from .conftest import SECRET


def fresh(app: webtest.TestApp) -> webtest.TestApp:
    return webtest.TestApp(app.app, extra_environ={"HTTP_HOST": "example.com"})


def session_with(app: webtest.TestApp, who: str) -> str:
    client = fresh(app)
    client.get("/write", {"who": who})
    return client.cookies["sessup"]


def test_two_session_cookies_that_disagree_load_neither(make_host: Any) -> None:
    app = make_host()
    store = app.app.registry.sessup_store
    victim, attacker = session_with(app, "victim"), session_with(app, "attacker")
    loads: list[str] = []
    original = store.load
    store.load = lambda sid, **kw: (loads.append(sid), original(sid, **kw))[1]
    for header in (f"sessup={victim}; sessup={attacker}", f"sessup={attacker}; other=1; sessup={victim}",
                   f"sessup={victim};sessup={victim}x"):
        res = fresh(app).get("/read", headers={"Cookie": header})
        assert res.json == {"data": {}, "new": True}
        # A write on such a request stores nothing and sets no cookie either.
        res = fresh(app).get("/write", {"who": "planted"}, headers={"Cookie": header})
        assert res.headers.getall("Set-Cookie") == []
    assert loads == []  # the store was never asked
    assert store.count() == 2
    # Each cookie alone still names its own, untouched session.
    assert fresh(app).get("/read", headers={"Cookie": f"sessup={victim}"}).json["data"] == {"who": "victim"}
    assert fresh(app).get("/read", headers={"Cookie": f"sessup={attacker}"}).json["data"] == {"who": "attacker"}
    # The same value twice (a browser holding one cookie for two paths) is one session.
    same = fresh(app).get("/read", headers={"Cookie": f"sessup={victim}; sessup={victim}"})
    assert same.json["data"] == {"who": "victim"}


@pytest.mark.server
def test_two_session_cookies_through_pserve(tmp_path: Path) -> None:
    port = free_port()
    ini = write_ini(tmp_path, {"sessup.session.store": "file", "sessup.session.file.path": str(tmp_path / "s"),
                               "sessup.upload.path": str(tmp_path / "u")}, port=port)

    def get(cookie: str = "") -> tuple[dict[str, Any], list[str]]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.request("GET", "/session", headers={"Cookie": cookie} if cookie else {})
            res = conn.getresponse()
            cookies = [v.split(";", 1)[0] for k, v in res.getheaders() if k.lower() == "set-cookie"]
            return json.loads(res.read()), cookies
        finally:
            conn.close()

    with running_server(ini, port) as server:
        _, [victim] = get()
        _, [attacker] = get()
        assert get(f"{victim}; {attacker}") == ({"views": 1}, [])  # neither loaded, nothing stored
        assert get(f"{attacker}; {victim}") == ({"views": 1}, [])
        assert get(victim)[0] == {"views": 2} and get(attacker)[0] == {"views": 2}
        assert "Traceback" not in server.log()
    assert sum(1 for p in (tmp_path / "s").rglob("*.json")) == 2


# -- the __Host- prefix -------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, key", [
    ({}, "sessup.session.cookie.secure = true"),  # secure defaults to auto
    ({"sessup.session.cookie.secure": "false"}, "sessup.session.cookie.secure = true"),
    ({"sessup.session.cookie.secure": "true", "sessup.session.cookie.path": "/app"},
     "sessup.session.cookie.path = /"),
    ({"sessup.session.cookie.secure": "true", "sessup.session.cookie.domain": "example.com"},
     "sessup.session.cookie.domain to be empty"),
])
def test_host_prefix_is_checked_at_start_up(settings: dict[str, Any], overrides: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigurationError, match="sessup.session.name = __Host-sessup .*" + key):
        main({}, **{**settings, "sessup.session.name": "__Host-sessup", **overrides})


def test_secure_prefix_needs_secure_true(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="__Secure-sid .*sessup.session.cookie.secure = true"):
        main({}, **{**settings, "sessup.session.name": "__Secure-sid"})
    with pytest.raises(ConfigurationError, match="__host-sid"):  # browsers match the prefix in any case
        main({}, **{**settings, "sessup.session.name": "__host-sid"})


def test_host_prefix_cookies_carry_what_the_prefix_needs(settings: dict[str, Any]) -> None:
    app = webtest.TestApp(main({}, **{**settings, "sessup.session.name": "__Host-sessup",
                                    "sessup.session.cookie.secure": "true", "sessup.session.secret": SECRET}),
                          extra_environ={"HTTP_HOST": "example.com", "wsgi.url_scheme": "https"})
    first = app.get("https://example.com/csrf")
    token = first.json["csrf_token"]
    [nonce] = first.headers.getall("Set-Cookie")
    [session] = app.get("https://example.com/session").headers.getall("Set-Cookie")
    for header, name in ((nonce, "__Host-sessup_csrf="), (session, "__Host-sessup=")):
        assert header.startswith(name)
        assert "; Secure" in header and "; Path=/" in header and "Domain" not in header
    # Both cookies are read back under their prefixed names.
    regenerated = app.post("https://example.com/session/regenerate",
                           headers={"X-CSRF-Token": token, "Origin": "https://example.com"})
    assert regenerated.json == {"regenerated": True, "views": 1}
