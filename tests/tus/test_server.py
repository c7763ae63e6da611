"""tus against real servers (pserve: waitress, and the production profile's
gunicorn where processes matter): dropped connections, two processes on one
upload directory, ownership, expiry, termination, concurrent PATCHes."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from ..support import Server, free_port, running_server, start_production, write_production_ini
from .conftest import OCTETS, meta
from .servers import TUS, Client, tus_ini, tus_settings

pytestmark = pytest.mark.server

MiB = 1024 * 1024


@pytest.fixture
def shared(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "uploads", tmp_path / "sessions"


@contextmanager
def start(tmp_path: Path, shared: tuple[Path, Path], name: str, profile: str = "waitress",
          **overrides: str) -> Iterator[Server]:
    port = free_port()
    if profile == "waitress":
        with running_server(tus_ini(tmp_path / name, *shared, port, **overrides), port) as server:
            yield server
        return
    server = start_production(write_production_ini(tmp_path / name, tus_settings(*shared, **overrides)), port)
    try:
        yield server
    finally:
        server.stop()


PROFILES = ["waitress", "production"]


@pytest.fixture
def server(tmp_path: Path, shared: tuple[Path, Path]) -> Iterator[Server]:
    with start(tmp_path, shared, "a") as srv:
        yield srv


def create(client: Client, server: Server, length: int, filename: str = "f.bin") -> str:
    res = client.request("POST", server.url + "/files/",
                         headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": meta(filename=filename)})
    assert res.status == 201, res.body
    # A path (never built from the Host header), resolved against the server's URL as a client does.
    assert res.headers["location"].startswith("/files/")
    return server.url + res.headers["location"]


def patch(client: Client, url: str, offset: int, data: bytes, **headers: str):
    return client.request("PATCH", url, data, {**TUS, "Upload-Offset": str(offset), "Content-Type": OCTETS,
                                               **headers})


def offset_of(client: Client, url: str) -> int:
    res = client.request("HEAD", url, headers=TUS)
    assert res.status == 200
    return int(res.headers["upload-offset"])


def tus_files(upload_dir: Path) -> list[str]:
    return sorted(p.name for p in (upload_dir / ".tus").iterdir())


def test_connection_dropped_mid_patch(server: Server, shared: tuple[Path, Path]) -> None:
    data = os.urandom(4 * MiB)
    client = Client()
    url = create(client, server, len(data))
    assert patch(client, url, 0, data[:MiB]).status == 204
    # Half a PATCH, then the client vanishes.  Waitress buffers the body before
    # calling the application, so the application never sees this request.
    path = url.replace(server.url, "")
    head = (f"PATCH {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nCookie: {client.cookie}\r\n"
            f"Tus-Resumable: 1.0.0\r\nUpload-Offset: {MiB}\r\nContent-Type: {OCTETS}\r\n"
            f"Content-Length: {3 * MiB}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + data[MiB:MiB + MiB + MiB // 2])
    # The next HEAD shows a consistent offset: what was committed before the drop.
    assert offset_of(client, url) == MiB
    res = patch(client, url, MiB, data[MiB:])
    assert res.status == 204 and res.headers["upload-offset"] == str(len(data))
    assert res.headers["sessup-file-sha256"] == hashlib.sha256(data).hexdigest()
    download = client.request("GET", server.url + res.headers["sessup-file-url"])
    assert download.status == 200 and download.body == data
    assert "Traceback" not in server.log()


def test_resume_after_server_killed(tmp_path: Path, shared: tuple[Path, Path]) -> None:
    data = os.urandom(3 * MiB)
    client = Client()
    with start(tmp_path, shared, "a") as first:
        url = create(client, first, len(data)).replace(first.url, "")
        assert patch(client, first.url + url, 0, data[:MiB]).status == 204
        first.kill9()
    with start(tmp_path, shared, "b") as second:  # a new process, no running hash
        assert offset_of(client, second.url + url) == MiB
        res = patch(client, second.url + url, MiB, data[MiB:])
        assert res.status == 204
        assert res.headers["sessup-file-sha256"] == hashlib.sha256(data).hexdigest()
        assert client.request("GET", second.url + res.headers["sessup-file-url"]).body == data


@pytest.mark.parametrize("profile", PROFILES)
def test_two_processes_continue_one_upload(tmp_path: Path, shared: tuple[Path, Path], profile: str) -> None:
    data = os.urandom(6 * MiB + 123)
    half = len(data) // 2
    client = Client()
    with start(tmp_path, shared, "a", profile) as a, start(tmp_path, shared, "b", profile) as b:
        url_a = create(client, a, len(data), "two.bin")
        url_b = url_a.replace(a.url, b.url)
        assert patch(client, url_a, 0, data[:half]).status == 204
        assert offset_of(client, url_b) == half  # same session cookie, same state on disk
        res = patch(client, url_b, half, data[half:])
        assert res.status == 204
        result = client.request("GET", url_b).json()
        assert result["complete"] and result["size"] == len(data)
        assert result["sha256"] == hashlib.sha256(data).hexdigest()
        download = client.request("GET", a.url + result["url"])
        assert download.body == data
        assert client.request("GET", url_a).json() == result

        # Concurrent PATCHes at one offset, one per process: one wins, the
        # other gets 409, the bytes never interleave.
        chunk_a, chunk_b = os.urandom(8 * MiB), os.urandom(8 * MiB)
        url = create(client, a, 16 * MiB, "race.bin")
        statuses: dict[str, int] = {}

        def send(name: str, target: str, body: bytes) -> None:
            try:
                statuses[name] = patch(client, target, 0, body).status
            except OSError:
                # A server that streams bodies answers the loser's 409 before
                # reading its body, and closes the connection: this client
                # (http.client) fails sending and never reads the answer.
                statuses[name] = 0

        threads = [threading.Thread(target=send, args=("a", url, chunk_a)),
                   threading.Thread(target=send, args=("b", url.replace(a.url, b.url), chunk_b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(statuses.values()) in ([204, 409], [0, 204] if profile == "production" else [204, 409])
        winner = chunk_a if statuses["a"] == 204 else chunk_b
        assert offset_of(client, url) == 8 * MiB
        upload_id = url.rsplit("/", 1)[1]
        assert (shared[0] / ".tus" / f"{upload_id}.part").read_bytes() == winner


def test_another_session_gets_404(server: Server) -> None:
    owner, other = Client(), Client()
    url = create(owner, server, 10)
    assert patch(owner, url, 0, b"abc").status == 204
    assert other.request("GET", server.url + "/csrf").status == 200 and "sessup_csrf=" in other.cookie
    assert other.request("HEAD", url, headers=TUS).status == 404
    assert patch(other, url, 3, b"def").status == 404
    assert other.request("DELETE", url, headers=TUS).status == 404
    assert other.request("GET", url).status == 404
    assert offset_of(owner, url) == 3


@pytest.mark.parametrize("profile", PROFILES)
def test_expired_upload_then_swept(tmp_path: Path, shared: tuple[Path, Path], profile: str) -> None:
    client = Client()
    with start(tmp_path, shared, "a", profile, **{"sessup.upload.tus_expiry": "1"}) as srv:
        url = create(client, srv, 10)
        assert patch(client, url, 0, b"abc").status == 204
        time.sleep(1.5)  # let it expire (no timing is asserted)
        assert patch(client, url, 3, b"def").status == 410
        assert client.request("HEAD", url, headers=TUS).status == 404
        assert tus_files(shared[0]) == []
        # An upload abandoned while the server is down is swept at start-up.
        path = create(client, srv, 10).replace(srv.url, "")
        assert tus_files(shared[0])
    time.sleep(1.5)
    with start(tmp_path, shared, "b", profile, **{"sessup.upload.tus_expiry": "1"}) as srv:
        assert tus_files(shared[0]) == []
        assert client.request("HEAD", srv.url + path, headers=TUS).status == 404


def test_termination(server: Server, shared: tuple[Path, Path]) -> None:
    client = Client()
    url = create(client, server, 10)
    assert patch(client, url, 0, b"abc").status == 204
    res = client.request("DELETE", url, headers=TUS)
    assert res.status == 204 and res.headers["tus-resumable"] == "1.0.0"
    assert client.request("HEAD", url, headers=TUS).status == 404
    assert tus_files(shared[0]) == []
    assert [p.name for p in shared[0].iterdir() if p.is_file()] == []
