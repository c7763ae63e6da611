"""A destroyed or regenerated session never comes back (real pserve, real stores).

Each round makes a fresh session; then four threads loop ``GET /test/incr``
with its cookie (a stolen copy: they never take a new cookie) while one
request destroys (``invalidate()``) or regenerates it.  Requests that loaded
the session before the logout are still writing after it.  Afterwards the old
cookie must find a new, empty session and the store must hold no live record
under the old ID, with or without ``sessup.session.lock``.  Before the store
learned tombstones, a write that found its record gone re-created it: 1 to 5
of 10 rounds brought the session back.
"""
from __future__ import annotations

import http.client
import json
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from pyramid_sessup.stores.base import SessionStore

from ..support import (
    POSTGRES_URL,
    REDIS_URL,
    ROOT,
    Server,
    free_port,
    start_server,
    write_ini,
)
from .conftest import (
    delete_redis_prefix,
    drop_postgres_table,
    random_prefix,
    random_table,
    require_postgres,
    require_redis,
)

pytestmark = [pytest.mark.server, pytest.mark.slow]

ROUNDS = 50
HAMMERS = 4
CLIENT_TIMEOUT = 30.0


def call(port: int, method: str, path: str, cookie: str | None) -> tuple[int, list[str], dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request(method, path, headers={"Cookie": f"sessup={cookie}"} if cookie else {})
        resp = conn.getresponse()
        body = resp.read()
        cookies = [v for k, v in resp.getheaders() if k.lower() == "set-cookie"]
        return resp.status, cookies, json.loads(body) if resp.status == 200 else {}
    finally:
        conn.close()


def session_cookie(headers: list[str]) -> str | None:
    """The value the response gives the ``sessup`` cookie ("" when it clears it)."""
    for header in headers:
        name, _, rest = header.partition("=")
        if name.strip() == "sessup":
            return rest.split(";", 1)[0]
    return None


class Backend:
    """One pserve process over one store, plus a store object to look inside it."""

    def __init__(self, kind: str, lock: bool, directory: Path, extra: dict[str, str] | None = None,
                 threads: int = 8) -> None:
        self.kind = kind
        self.cleanup: Callable[[], None] = lambda: None
        settings: dict[str, str] = {"sessup.session.store": kind}
        self.checker: SessionStore | None = None
        if kind == "file":
            from pyramid_sessup.stores.file import FileStore

            settings["sessup.session.file.path"] = str(directory / "sessions")
            self.checker = FileStore(settings["sessup.session.file.path"], timeout=1800)
        elif kind == "redis":
            from pyramid_sessup.stores.redis import RedisStore

            require_redis()
            prefix = random_prefix()
            settings.update({"sessup.session.url": REDIS_URL, "sessup.session.key_prefix": prefix})
            self.checker = RedisStore(REDIS_URL, timeout=1800, key_prefix=prefix)
            self.cleanup = lambda: delete_redis_prefix(prefix)
        elif kind == "postgresql":
            from pyramid_sessup.stores.postgresql import PostgresStore

            require_postgres()
            table = random_table()
            settings.update({"sessup.session.url": POSTGRES_URL, "sessup.session.table": table})
            self.checker = PostgresStore(POSTGRES_URL, timeout=1800, table=table)
            self.cleanup = lambda: drop_postgres_table(table)
        port = free_port()
        ini = write_ini(directory, {
            "use": "call:tests.stores.app:main",
            "sessup.session.timeout": "1800",
            "sessup.session.lock": str(lock).lower(),
            "sessup.session.lock_timeout": "20",
            "sessup.upload.path": str(directory / "uploads"),
            **settings,
            **(extra or {}),
        }, port=port)
        # More worker threads than concurrent clients: no request waits for a worker.
        ini.write_text(ini.read_text().replace(f"listen = 127.0.0.1:{port}",
                                               f"listen = 127.0.0.1:{port}\nthreads = {threads}"))
        self.server: Server = start_server(ini, port, env={"PYTHONPATH": str(ROOT)}, probe="/test/info")

    def close(self) -> None:
        self.server.stop()
        if self.checker is not None:
            self.checker.close()
        self.cleanup()


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, bool], Backend]]:
    """``backend(kind, lock)``: the running server for that pair; one at a time."""
    current: dict[tuple[str, bool], Backend] = {}

    def get(kind: str, lock: bool) -> Backend:
        if (kind, lock) not in current:
            for other in current.values():
                other.close()
            current.clear()
            current[kind, lock] = Backend(kind, lock, tmp_path_factory.mktemp(f"{kind}-{lock}"))
        return current[kind, lock]

    yield get
    for other in current.values():
        other.close()


def one_round(backend: Backend, op: str) -> tuple[list[str], int]:
    """One logout (or login) racing four requests on the same cookie: the problems
    seen, and how many requests met the race (loaded the session before the
    logout, wrote after it, and so cleared their cookie)."""
    port = backend.server.port
    status, headers, body = call(port, "GET", "/test/incr", None)
    cookie = session_cookie(headers)
    assert status == 200 and cookie, (status, headers)
    sid = cookie.split(".", 1)[0]
    answers: list[tuple[int, dict[str, Any], bool, str | None]] = []
    logged_out = threading.Event()
    failures: list[BaseException] = []

    def hammer() -> None:
        after = 0
        try:
            while after < 2:  # keep going until two requests started after the logout
                began_after = logged_out.is_set()
                status, headers, body = call(port, "GET", "/test/incr", cookie)
                answers.append((status, body, began_after, session_cookie(headers)))
                after += began_after
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(HAMMERS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + CLIENT_TIMEOUT
    while len(answers) < HAMMERS and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(random.random() * 0.004)  # vary where the logout lands in the others' requests
    status, headers, body = call(port, "POST", f"/test/{op}", cookie)
    logged_out.set()
    for t in threads:
        t.join(CLIENT_TIMEOUT * 2)
    assert not failures, failures
    assert status == 200, (op, status)

    problems = [f"{op}: status {s}" for s, _, _, _ in answers if s != 200]
    # A request that starts after the logout never sees the old data.
    problems += [f"{op}: a request after the logout counted {b['count']}" for s, b, after, _ in answers
                 if after and s == 200 and b["count"] != 1]
    raced = sum(1 for s, b, _, c in answers if s == 200 and b["count"] > 1 and c == "")
    status, _, info = call(port, "GET", "/test/info", cookie)
    if info != {"new": True, "count": 0}:
        problems.append(f"{op}: the old cookie loads a live session {info}")
    if backend.checker is not None and backend.checker.load(sid, touch=False) is not None:
        problems.append(f"{op}: the store holds a live record under the old ID")
    new_cookie = session_cookie(headers)
    if op == "destroy":
        assert new_cookie == "", headers  # the logout clears the cookie
    else:
        assert new_cookie and not new_cookie.startswith(sid + "."), headers
        status, _, info = call(port, "GET", "/test/info", new_cookie)
        assert info["new"] is False and info["count"] >= 1, info  # the data moved to the new ID
    return problems, raced


CASES = [
    pytest.param(kind, lock, op, marks=marks, id=f"{kind}-{'lock' if lock else 'nolock'}-{op}")
    for kind, marks in [("memory", []), ("file", []), ("redis", [pytest.mark.redis]),
                        ("postgresql", [pytest.mark.postgres])]
    for lock in (False, True)
    for op in ("destroy", "regenerate")
]


@pytest.mark.parametrize("kind, lock, op", CASES)
def test_logged_out_session_never_comes_back(backend: Callable[[str, bool], Backend], kind: str, lock: bool,
                                             op: str) -> None:
    server = backend(kind, lock)
    problems: list[str] = []
    raced = 0
    for _ in range(ROUNDS):
        found, met = one_round(server, op)
        problems += found
        raced += met
    assert "Traceback" not in server.server.log(), server.server.log()[-3000:]
    assert problems == [], f"{len(problems)} problems in {ROUNDS} rounds: {problems[:10]}"
    if not lock:
        # Without the lock, writes overlap the logout (in most rounds, measured):
        # the test really met the race it guards.
        assert raced > 0, "no request wrote after the logout: the race was never met"
