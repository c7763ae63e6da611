"""Quotas hold across processes: two real pserve processes sharing the file,
Redis or PostgreSQL store, with concurrent uploads of one visitor split between
them; of all the racing requests exactly the quota's worth is stored."""
from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ..stores.conftest import (
    delete_redis_prefix,
    drop_postgres_table,
    random_prefix,
    random_table,
    require_postgres,
    require_redis,
)
from ..support import POSTGRES_URL, REDIS_URL, Server, free_port, start_server, write_ini

pytestmark = [pytest.mark.server, pytest.mark.slow]

QUOTA_FILES = 5
QUOTA_BYTES = 10_000
ROUNDS = 3
RACERS = 16

BACKENDS = [
    pytest.param("file", id="file"),
    pytest.param("redis", marks=pytest.mark.redis, id="redis"),
    pytest.param("postgresql", marks=pytest.mark.postgres, id="postgresql"),
]


@contextmanager
def cluster(backend: str, directory: Path, **settings: str) -> Iterator[list[Server]]:
    """One INI, two pserve processes on two ports, one store, one upload directory."""
    cleanup: Any = None
    if backend == "file":
        store = {"sessup.session.store": "file", "sessup.session.file.path": str(directory / "sessions")}
    elif backend == "redis":
        require_redis()
        prefix = random_prefix()
        store = {"sessup.session.store": "redis", "sessup.session.url": REDIS_URL, "sessup.session.key_prefix": prefix}
        cleanup = lambda: delete_redis_prefix(prefix)  # noqa: E731
    else:
        require_postgres()
        table = random_table()
        store = {"sessup.session.store": "postgresql", "sessup.session.url": POSTGRES_URL,
                 "sessup.session.table": table}
        cleanup = lambda: drop_postgres_table(table)  # noqa: E731
    ini = write_ini(directory, {"sessup.upload.path": str(directory / "uploads"), **store, **settings})
    ini.write_text(ini.read_text().replace("listen = 127.0.0.1:6544", "listen = 127.0.0.1:%(http_port)s"))
    servers: list[Server] = []
    try:
        for _ in range(2):
            port = free_port()
            servers.append(start_server(ini, port, args=[f"http_port={port}"], probe="/csrf"))
        yield servers
    finally:
        for server in servers:
            server.stop()
        if cleanup is not None:
            cleanup()


def call(server: Server, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def new_visitor(server: Server) -> tuple[str, str]:
    """A session (its cookie) and its CSRF token."""
    status, headers, body = call(server, "GET", "/csrf")
    assert status == 200
    cookie = headers["set-cookie"].split(";", 1)[0]
    return cookie, json.loads(body)["csrf_token"]


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"inputFile\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def race(servers: list[Server], fn: Any, n: int = RACERS) -> list[int]:
    """``fn(server, i)`` in ``n`` threads released together, alternating servers; their statuses."""
    statuses: list[int] = [0] * n
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(30)
            statuses[i] = fn(servers[i % 2], i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    return statuses


def stored(directory: Path) -> list[Path]:
    return [p for p in (directory / "uploads").iterdir() if p.is_file()]


@pytest.mark.parametrize("backend", BACKENDS)
def test_racing_uploads_of_one_session_on_two_processes(backend: str, tmp_path: Path) -> None:
    with cluster(backend, tmp_path, **{"sessup.upload.quota_files": str(QUOTA_FILES),
                                       "sessup.upload.quota_bytes": str(QUOTA_BYTES)}) as servers:
        assert servers[0].pid != servers[1].pid
        failures = []
        for round_ in range(ROUNDS):
            cookie, token = new_visitor(servers[round_ % 2])

            def upload(server: Server, i: int) -> int:
                body, content_type = multipart(f"r{round_}-{i}.bin", b"x" * 100)
                return call(server, "POST", "/upFile", body, {"Cookie": cookie, "X-CSRF-Token": token,
                                                              "Content-Type": content_type})[0]

            statuses = race(servers, upload)
            if sorted(statuses) != [200] * QUOTA_FILES + [429] * (RACERS - QUOTA_FILES):
                failures.append((round_, statuses))
        assert failures == []
        assert len(stored(tmp_path)) == QUOTA_FILES * ROUNDS
        # The bytes quota, racing too: 3 x 3,000 bytes fit in 10,000, a fourth does not.
        cookie, token = new_visitor(servers[0])

        def big(server: Server, i: int) -> int:
            body, content_type = multipart(f"big-{i}.bin", b"y" * 3000)
            return call(server, "POST", "/upFile", body, {"Cookie": cookie, "X-CSRF-Token": token,
                                                          "Content-Type": content_type})[0]

        assert sorted(race(servers, big, 8)) == [200] * 3 + [429] * 5
        # The refusals name the quota and say when to retry.
        status, headers, body = call(servers[1], "POST", "/upFile", *late_upload(cookie, token))
        assert status == 429 and int(headers["retry-after"]) > 0 and b"sessup.upload.quota_" in body


def late_upload(cookie: str, token: str) -> tuple[bytes, dict[str, str]]:
    body, content_type = multipart("late.bin", b"z" * 2000)
    return body, {"Cookie": cookie, "X-CSRF-Token": token, "Content-Type": content_type}


@pytest.mark.parametrize("backend", BACKENDS)
def test_racing_anonymous_empty_tus_creations_on_two_processes(backend: str, tmp_path: Path) -> None:
    with cluster(backend, tmp_path, **{"sessup.upload.quota_files": str(QUOTA_FILES)}) as servers:

        def create(server: Server, i: int) -> int:
            return call(server, "POST", "/files/", b"", {"Tus-Resumable": "1.0.0", "Upload-Length": "0"})[0]

        statuses = race(servers, create)
        assert sorted(statuses) == [201] * QUOTA_FILES + [429] * (RACERS - QUOTA_FILES)
        assert len(stored(tmp_path)) == QUOTA_FILES
