"""Two real servers (one INI, two ports) sharing a store: one session across
both, restarts lose nothing, and the lock and the per-key merge hold across
processes.  Each server is ``pserve`` with waitress (testing.ini: one
process) or with the production profile (production.ini: gunicorn, one
worker process per core, so requests land in several processes even on one
port); the production profile also shares the file store, its default."""
from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from ..support import (
    POSTGRES_URL,
    REDIS_URL,
    ROOT,
    Server,
    free_port,
    start_production,
    start_server,
    write_ini,
    write_production_ini,
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


def start(ini: Path, port: int, timeout: float = 30.0, profile: str = "waitress") -> Server:
    """``pserve INI http_port=PORT``, as a user starts a second process from the same INI."""
    # PYTHONPATH: for the test endpoints of tests/stores/app.py.
    env = {"PYTHONPATH": str(ROOT)}
    if profile == "production":
        return start_production(ini, port, env=env, timeout=timeout, probe="/session/info")
    return start_server(ini, port, env=env, timeout=timeout, args=[f"http_port={port}"], probe="/session/info")


class Client:
    """A browser's cookie handling, reduced to the session cookie."""

    def __init__(self) -> None:
        self.cookie = ""

    def get(self, url: str) -> dict[str, Any]:
        request = urllib.request.Request(url, headers={"Cookie": f"sessup={self.cookie}"} if self.cookie else {})
        with urllib.request.urlopen(request, timeout=60) as response:
            for header in response.headers.get_all("Set-Cookie") or []:
                name, _, rest = header.partition("=")
                if name.strip() == "sessup":
                    self.cookie = rest.split(";", 1)[0]
            return json.loads(response.read())

    def clone(self) -> Client:
        twin = Client()
        twin.cookie = self.cookie
        return twin


BACKENDS = [
    pytest.param(("waitress", "redis"), marks=pytest.mark.redis, id="waitress-redis"),
    pytest.param(("waitress", "postgresql"), marks=pytest.mark.postgres, id="waitress-postgresql"),
    pytest.param(("production", "file"), id="production-file"),
    pytest.param(("production", "redis"), marks=pytest.mark.redis, id="production-redis"),
    pytest.param(("production", "postgresql"), marks=pytest.mark.postgres, id="production-postgresql"),
]


@contextmanager
def running_cluster(profile_backend: tuple[str, str], lock: bool, directory: Path) -> Iterator[dict[str, Any]]:
    """One INI, two servers on two ports, a private store namespace."""
    profile, backend = profile_backend
    if backend == "file":
        store = {"sessup.session.store": "file", "sessup.session.file.path": str(directory / "sessions")}
    elif backend == "redis":
        require_redis()
        prefix = random_prefix()
        store = {"sessup.session.store": "redis", "sessup.session.url": REDIS_URL,
                 "sessup.session.key_prefix": prefix}
    else:
        require_postgres()
        table = random_table()
        store = {"sessup.session.store": "postgresql", "sessup.session.url": POSTGRES_URL,
                 "sessup.session.table": table}
    app = {
        "use": "call:tests.stores.app:main",
        "sessup.session.lock": str(lock).lower(),
        "sessup.session.lock_timeout": "30",
        "sessup.upload.path": str(directory / "uploads"),
        **store,
    }
    if profile == "production":
        ini = write_production_ini(directory, app)
    else:
        ini = write_ini(directory, app)
        text = ini.read_text()
        ini.write_text(text.replace("listen = 127.0.0.1:6544", "listen = 127.0.0.1:%(http_port)s"))
    info: dict[str, Any] = {"ini": ini, "servers": [], "backend": backend, "profile": profile}
    try:
        info["servers"] = [start(ini, free_port(), profile=profile), start(ini, free_port(), profile=profile)]
        yield info
    finally:
        for server in info["servers"]:
            server.stop()
        if backend == "redis":
            delete_redis_prefix(prefix)
        elif backend == "postgresql":
            drop_postgres_table(table)


@pytest.fixture(scope="module", params=BACKENDS)
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The default: no session lock."""
    with running_cluster(request.param, False, tmp_path_factory.mktemp("cluster")) as info:
        yield info


@pytest.fixture(scope="module", params=BACKENDS)
def locked_cluster(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """sessup.session.lock = true."""
    with running_cluster(request.param, True, tmp_path_factory.mktemp("locked")) as info:
        yield info


def test_alternating_between_processes_keeps_one_session(cluster: dict[str, Any]) -> None:
    a, b = cluster["servers"]
    client = Client()
    views = [client.get(server.url + "/session")["views"] for server in (a, b, a, b)]
    assert views == [1, 2, 3, 4]
    assert a.pid != b.pid


def test_restarting_a_process_loses_no_session(cluster: dict[str, Any]) -> None:
    a, b = cluster["servers"]
    client = Client()
    assert client.get(a.url + "/session")["views"] == 1
    assert client.get(b.url + "/session")["views"] == 2
    a.stop()  # a graceful restart
    a = cluster["servers"][0] = start(cluster["ini"], a.port, profile=cluster["profile"])
    assert client.get(a.url + "/session")["views"] == 3
    b.kill9()  # a crash
    b = cluster["servers"][1] = start(cluster["ini"], b.port, profile=cluster["profile"])
    assert client.get(b.url + "/session")["views"] == 4
    assert client.get(a.url + "/session")["views"] == 5


def _parallel(n: int, fn: Any) -> list[Any]:
    results: list[Any] = [None] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            barrier.wait(30)
            results[i] = fn(i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert errors == []
    return results


def test_lock_keeps_all_16_concurrent_increments_across_processes(locked_cluster: dict[str, Any]) -> None:
    """sessup.session.lock = true: 16 overlapping GET /session, split over both
    processes, all count (without the lock, 1 to 6 of 16 survived here)."""
    a, b = locked_cluster["servers"]
    client = Client()
    assert client.get(a.url + "/session")["views"] == 1
    _parallel(16, lambda i: client.clone().get((a, b)[i % 2].url + "/session"))
    assert client.get(b.url + "/session")["views"] == 18
    # The same with a deliberate pause between read and write.
    _parallel(16, lambda i: client.clone().get((a, b)[i % 2].url + "/test/incr?delay=0.01"))
    assert client.get(a.url + "/test/incr")["count"] == 17


def test_overlapping_writes_of_different_keys_both_persist(cluster: dict[str, Any]) -> None:
    """Without the lock: two requests of one session, in two processes, overlapping
    in time (each reads, waits 0.3 s, writes its own key), both persist."""
    a, b = cluster["servers"]
    client = Client()
    client.get(a.url + "/test/set/start")
    _parallel(2, lambda i: client.clone().get((a, b)[i].url + f"/test/set/k{i}?delay=0.3&value=v{i}"))
    final = client.get(b.url + "/test/set/end")
    assert final["k0"] == "v0" and final["k1"] == "v1"


@pytest.mark.parametrize("backend", [pytest.param("redis", marks=pytest.mark.redis),
                                     pytest.param("postgresql", marks=pytest.mark.postgres)])
@pytest.mark.parametrize("policy", ["fail", "anonymous"])
def test_process_starts_and_serves_while_the_store_is_down(backend: str, policy: str, tmp_path: Path) -> None:
    """pserve starts with its store unreachable; requests get the policy's answer, not a hang."""
    closed = free_port()
    url = f"redis://127.0.0.1:{closed}/0" if backend == "redis" else f"postgresql://postgres@127.0.0.1:{closed}/test"
    ini = write_ini(tmp_path, {"sessup.session.store": backend, "sessup.session.url": url,
                               "sessup.session.on_store_error": policy,
                               "sessup.session.connect_timeout": "0.3", "sessup.session.socket_timeout": "0.3",
                               "sessup.upload.path": str(tmp_path / "uploads")})
    ini.write_text(ini.read_text().replace("listen = 127.0.0.1:6544", "listen = 127.0.0.1:%(http_port)s"))
    server = start(ini, free_port())
    try:
        if policy == "fail":
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(server.url + "/session", timeout=60)
            err.value.close()
            assert err.value.code == 503 and err.value.headers["Retry-After"]
        else:
            with urllib.request.urlopen(server.url + "/session", timeout=60) as response:
                assert json.loads(response.read()) == {"views": 1}
                assert response.headers.get("Set-Cookie") is None
    finally:
        server.stop()
    assert "session store unavailable" in server.log()
