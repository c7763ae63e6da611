"""The session store goes down under load, then comes back (real pserve, real servers).

Threads hammer ``GET /session`` (a write per request: it counts views) with
cookies of sessions created before the fault.  The store is then stopped:
Redis by SIGKILL (its append-only log is fsynced before each write is
acknowledged, so it loses nothing acknowledged), PostgreSQL by
``pg_ctl stop -m fast``; after a short outage it is started again on the same
port with the same data.  Requested behaviour:

* during the outage every answer is a clean 503 with ``Retry-After``
  (``on_store_error = fail``) or a 200 served without a session
  (``anonymous``: ``views`` is 1 and no cookie replaces the client's); never a
  500, never a hang (a client timeout would fail the test);
* afterwards the same application process serves the old sessions again;
* no session written before the fault is lost: each session's count goes on
  from where it was;
* one log line per incident, not one per request.
"""
from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from ..support import Server, free_port, running_server, write_ini
from .conftest import OwnPostgres, OwnRedis, wait_until

SESSIONS = 8
THREADS = 4
CLIENT_TIMEOUT = 20.0  # a hang shows up as a timeout: a failure
OUTAGE_SECONDS = 2.5
MAX_REQUESTS_PER_THREAD = 20_000


@dataclass
class Answer:
    session: int
    status: int
    views: int | None
    retry_after: str | None
    set_cookie: bool
    started: float
    ended: float
    error: str = ""

    @property
    def anonymous(self) -> bool:
        # Every session was primed to views >= 2, so 1 means "served without it".
        return self.status == 200 and self.views == 1


def get_session(port: int, cookie: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    try:
        headers = {"Accept": "application/json"}
        if cookie:
            headers["Cookie"] = cookie
        conn.request("GET", "/session", headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def new_sessions(port: int, count: int) -> list[str]:
    """``count`` sessions, each with views = 2."""
    cookies = []
    for _ in range(count):
        status, headers, _ = get_session(port, "")
        assert status == 200, status
        cookie = headers["set-cookie"].split(";", 1)[0]
        status, _, body = get_session(port, cookie)
        assert status == 200 and json.loads(body)["views"] == 2
        cookies.append(cookie)
    return cookies


class Hammer:
    """THREADS threads, each owning some sessions, asking one after another."""

    def __init__(self, port: int, cookies: list[str]) -> None:
        self.port = port
        self.cookies = cookies
        self.answers: list[Answer] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(THREADS)]

    def _run(self, index: int) -> None:
        mine = list(range(index, len(self.cookies), THREADS))
        for n in range(MAX_REQUESTS_PER_THREAD):
            if self.done.is_set():
                return
            session = mine[n % len(mine)]
            started = time.monotonic()
            try:
                status, headers, body = get_session(self.port, self.cookies[session])
            except (OSError, http.client.HTTPException) as exc:
                self.answers.append(Answer(session, 0, None, None, False, started, time.monotonic(),
                                           f"{type(exc).__name__}: {exc}"))
                continue
            views = json.loads(body).get("views") if status == 200 else None
            self.answers.append(Answer(session, status, views, headers.get("retry-after"),
                                       "set-cookie" in headers, started, time.monotonic()))

    def __enter__(self) -> Hammer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for t in self.threads:
            t.join(CLIENT_TIMEOUT * 2)

    def recovered_since(self, since: float) -> bool:
        """Every session got a real (non-anonymous) 200 for a request started after ``since``."""
        ok = {a.session for a in list(self.answers)
              if a.started >= since and a.status == 200 and not a.anonymous}
        return len(ok) == len(self.cookies)


def app_ini(tmp_path: Path, port: int, store: str, url: str, policy: str) -> Path:
    return write_ini(tmp_path, {
        "sessup.session.store": store,
        "sessup.session.url": url,
        "sessup.session.on_store_error": policy,
        "sessup.session.connect_timeout": "0.5",
        "sessup.session.socket_timeout": "0.5",
        "sessup.session.pool_size": "8",
        "sessup.upload.path": str(tmp_path / "uploads"),
    }, port=port)


def run_outage(server: Server, policy: str, stop: Callable[[], None], start: Callable[[], None]) -> None:
    cookies = new_sessions(server.port, SESSIONS)
    with Hammer(server.port, cookies) as hammer:
        wait_until(lambda: len(hammer.answers) >= 4 * SESSIONS, 30, "traffic before the fault")
        fault_at = time.monotonic()
        stop()
        time.sleep(OUTAGE_SECONDS)  # traffic keeps going against the dead store
        restart_at = time.monotonic()
        start()
        wait_until(lambda: hammer.recovered_since(restart_at), 60,
                   "every session to be served again")
        time.sleep(0.3)
    answers = hammer.answers

    # Never a 500, never a hang, never anything but the policy's answer.
    errors = [a for a in answers if a.error]
    assert not errors, errors[:5]
    statuses = {a.status for a in answers}
    assert 500 not in statuses
    if policy == "fail":
        assert statuses <= {200, 503}, statuses
        refused = [a for a in answers if a.status == 503]
        assert refused, "no request met the outage"
        assert all(a.retry_after and a.retry_after.isdigit() for a in refused)
        assert not [a for a in answers if a.anonymous]
    else:
        assert statuses == {200}, statuses
        anonymous = [a for a in answers if a.anonymous]
        assert anonymous, "no request met the outage"
        # Served without a session, and the client's cookie is left alone.
        assert not [a for a in anonymous if a.set_cookie]

    # Nothing written before the fault is lost; counts go on from there.
    for session, cookie in enumerate(cookies):
        before = [a.views for a in answers
                  if a.session == session and a.status == 200 and a.ended < fault_at]
        assert before, f"session {session} saw no traffic before the fault"
        answer: list[bytes] = []

        def served() -> bool:
            status, _, body = get_session(server.port, cookie)
            if status == 200:
                answer.append(body)
            return status == 200

        # psycopg_pool refills a pool that lost its connections with exponential
        # back-off; the store serves a call that times out waiting for it on a
        # direct connection, so this is served as soon as PostgreSQL answers.
        wait_until(served, 60, f"session {session} to be served", interval=0.5)
        assert json.loads(answer[0])["views"] > max(before), (session, max(before), answer[0])
        if policy == "fail":
            # A 200 means the write is stored: counts never go backwards.
            seen = [a.views for a in sorted(answers, key=lambda a: a.ended)
                    if a.session == session and a.status == 200]
            assert seen == sorted(seen) and len(set(seen)) == len(seen), seen

    # The same process recovered by itself; one log line for the incident.
    assert server.proc.poll() is None
    log = server.log()
    incident_lines = [line for line in log.splitlines() if "pyramid_sessup" in line]
    assert "session store reachable again" in log
    assert "Traceback" not in log, log[-3000:]
    incidents = [line for line in incident_lines if "unavailable" in line]
    assert len(incidents) == 1, incident_lines


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.redis
@pytest.mark.parametrize("policy", ["fail", "anonymous"])
def test_redis_outage_under_load(tmp_path: Path, own_redis: OwnRedis, policy: str) -> None:
    port = free_port()
    with running_server(app_ini(tmp_path, port, "redis", own_redis.url, policy), port) as server:
        run_outage(server, policy, own_redis.crash, own_redis.start)


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.postgres
@pytest.mark.parametrize("policy", ["fail", "anonymous"])
def test_postgresql_outage_under_load(tmp_path: Path, own_postgres: OwnPostgres, policy: str) -> None:
    port = free_port()
    table = f"sessup_faults_{policy}"
    ini = app_ini(tmp_path, port, "postgresql", own_postgres.url, policy)
    text = ini.read_text().replace("[app:main]\n", f"[app:main]\nsessup.session.table = {table}\n", 1)
    ini.write_text(text)
    with running_server(ini, port) as server:
        run_outage(server, policy, lambda: own_postgres.stop("fast"), own_postgres.start)


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("store", [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgresql", marks=pytest.mark.postgres),
])
def test_served_again_as_soon_as_the_store_is_back(tmp_path: Path, store: str,
                                                   request: pytest.FixtureRequest) -> None:
    """After a 20-second outage, the first requests once the store answers
    again are served (at most one request that was already waiting may still
    get its 503)."""
    server_fixture: OwnRedis | OwnPostgres = request.getfixturevalue("own_redis" if store == "redis"
                                                                     else "own_postgres")
    port = free_port()
    ini = app_ini(tmp_path, port, store, server_fixture.url, "fail")
    if store == "postgresql":
        ini.write_text(ini.read_text().replace("[app:main]\n", "[app:main]\nsessup.session.table = sessup_faults_back\n", 1))
    with running_server(ini, port) as server:
        [cookie] = new_sessions(server.port, 1)
        if isinstance(server_fixture, OwnRedis):
            server_fixture.crash()
        else:
            server_fixture.stop("fast")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the app keeps trying during the outage
            status, headers, _ = get_session(server.port, cookie)
            assert status == 503 and headers.get("retry-after")
            time.sleep(0.5)
        server_fixture.start()  # returns once the store accepts connections
        statuses = []
        for _ in range(8):
            statuses.append(get_session(server.port, cookie)[0])
            time.sleep(0.25)
        assert 500 not in statuses
        assert statuses[1:] == [200] * 7, statuses
