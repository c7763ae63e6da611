"""Virus scanning against Debian's real clamd (scripts/run-clamd.sh), on a
signature database the tests build: a hash signature of a generated file and
a body signature that matches anywhere in a file."""
from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pyramid_sessup.uploads.clamav import BLOCK, ClamdClient, ScanError

from .. import samples
from .conftest import BODY_SIGNATURE, HASH_SIGNATURE, MALWARE, MARKER, PATHS, Clamd, everything, refused_message, stored


def scanning(clamd: Clamd, **extra: str) -> dict[str, str]:
    return {"sessup.upload.clamav": clamd.url, **extra}


def test_client_verdicts(clamd: Clamd, tmp_path: Path) -> None:
    client = ClamdClient(clamd.url, timeout=10)
    assert client.ping()
    cases = {
        "clean.bin": (os.urandom(3 * BLOCK + 17), None),
        "empty.bin": (b"", None),
        "hash.bin": (MALWARE, HASH_SIGNATURE),
        # The marker straddles two INSTREAM blocks, deep inside a larger file.
        "body.bin": (b"a" * (BLOCK - 10) + MARKER + b"b" * (2 * BLOCK), BODY_SIGNATURE),
    }
    for name, (data, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        found = client.scan_file(str(path))
        assert (found or "").startswith(expected or "") and (found is None) == (expected is None), (name, found)


@pytest.mark.parametrize("path", PATHS)
def test_infected_file_is_422_naming_it_and_nothing_is_stored(
        clamd: Clamd, visitor: Any, upload_dir: Path, path: str, caplog: pytest.LogCaptureFixture) -> None:
    client = visitor(**scanning(clamd))
    caplog.set_level(logging.WARNING, "pyramid_sessup.uploads")
    res = client.upload(path, "report.bin", MALWARE)
    assert res.status_int == 422, res.text
    message = refused_message(res)
    # The form tells people in short what happened; the scanner's finding is for scripts and logs.
    assert "report.bin" in message and (HASH_SIGNATURE in message) == (path != "form")
    assert everything(upload_dir) == []
    assert any(HASH_SIGNATURE in r.getMessage() for r in caplog.records)
    clean = b"an ordinary file\n" * 1000
    ok = client.upload(path, "clean.txt", clean)
    assert ok.status_int in (200, 204), ok.text
    assert [(upload_dir / n).read_bytes() for n in stored(upload_dir)] == [clean]


def test_body_signature_anywhere_and_one_infected_file_refuses_all(clamd: Clamd, visitor: Any,
                                                                   upload_dir: Path) -> None:
    client = visitor(**scanning(clamd))
    infected = os.urandom(BLOCK + 5) + MARKER + os.urandom(1000)
    res = client.upfile([("a.txt", b"fine"), ("b.bin", infected), ("c.txt", b"fine too")])
    assert res.status_int == 422 and "b.bin" in res.json["error"] and BODY_SIGNATURE in res.json["error"]
    assert everything(upload_dir) == []


def test_tus_infected_upload_is_removed(clamd: Clamd, visitor: Any, upload_dir: Path) -> None:
    client = visitor(**scanning(clamd))
    data = b"x" * 5000 + MARKER + b"y" * 5000
    res = client.tus("chunks.bin", data, chunk=4096)
    assert res.status_int == 422 and "chunks.bin" in res.text
    assert everything(upload_dir) == []


def test_scanner_unreachable_fails_closed_with_retry_after(visitor: Any, upload_dir: Path, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    gone = f"unix://{tmp_path}/no-clamd.sock"
    caplog.set_level(logging.ERROR, "pyramid_sessup.uploads")
    for path in PATHS:
        client = visitor(**{"sessup.upload.clamav": gone})
        res = client.upload(path, "a.txt", b"hello")
        assert res.status_int == 503, (path, res.text)
        assert int(res.headers["Retry-After"]) > 0
        assert str(tmp_path) not in res.text  # the socket path stays in the log
        assert stored(upload_dir) == []
    assert any("no-clamd.sock" in r.getMessage() for r in caplog.records)
    # tcp:// that refuses, too
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = visitor(**{"sessup.upload.clamav": f"tcp://127.0.0.1:{port}"})
    assert client.upfile([("a.txt", b"hello")]).status_int == 503
    assert stored(upload_dir) == []


def test_on_error_allow_stores_unscanned_with_a_warning(visitor: Any, upload_dir: Path, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "pyramid_sessup.uploads")
    client = visitor(**{"sessup.upload.clamav": f"unix://{tmp_path}/none.sock",
                        "sessup.upload.clamav_on_error": "allow"})
    for path in PATHS:
        assert client.upload(path, f"{path}.txt", b"hello").status_int in (200, 204)
    assert len(stored(upload_dir)) == 3
    assert sum("stored unscanned" in r.getMessage() for r in caplog.records) == 3


@pytest.fixture
def silent_clamd() -> Iterator[str]:
    """A unix socket that accepts and reads, but never answers (a hung clamd)."""
    directory = tempfile.mkdtemp(prefix="hung-")
    path = os.path.join(directory, "clamd.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conns.append(conn)
            conn.settimeout(0.1)

            def drain(c: socket.socket = conn) -> None:
                while not stop.is_set():
                    try:
                        if not c.recv(65536):
                            return
                    except OSError:
                        continue

            threading.Thread(target=drain, daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"unix://{path}"
    stop.set()
    thread.join(5)
    for conn in conns:
        conn.close()
    listener.close()
    os.unlink(path)
    os.rmdir(directory)


def test_scanner_that_never_answers_times_out_as_503(visitor: Any, upload_dir: Path, silent_clamd: str) -> None:
    client = visitor(**{"sessup.upload.clamav": silent_clamd, "sessup.upload.clamav_timeout": "0.5",
                        "sessup.retry_after": "17"})
    started = time.monotonic()
    res = client.upfile([("a.txt", b"hello")])
    assert res.status_int == 503 and res.headers["Retry-After"] == "17"  # sessup.retry_after, as every 503
    assert time.monotonic() - started < 30  # bounded by the timeout, not hung
    assert everything(upload_dir) == []


def test_file_over_clamd_stream_limit_fails_closed(visitor: Any, upload_dir: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    small = Clamd(("StreamMaxLength", "1M"))
    small.start()
    try:
        client = visitor(**{"sessup.upload.clamav": small.url})
        assert client.upfile([("small.bin", os.urandom(1000))]).status_int == 200
        caplog.set_level(logging.ERROR, "pyramid_sessup.uploads")
        res = client.upfile([("big.bin", os.urandom(3 * 1024 * 1024))])
        assert res.status_int == 503, res.text
        assert any("size limit" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
        assert len(stored(upload_dir)) == 1
    finally:
        small.remove()


def test_scanner_restart_refuses_then_recovers(visitor: Any, upload_dir: Path) -> None:
    own = Clamd()
    own.start()
    try:
        client = visitor(**{"sessup.upload.clamav": own.url})
        assert client.upfile([("a.txt", b"one")]).status_int == 200
        own.stop()
        assert client.upfile([("b.txt", b"two")]).status_int == 503
        own.start()
        assert client.upfile([("c.txt", b"three")]).status_int == 200
        assert client.upfile([("d.bin", MALWARE)]).status_int == 422
        assert sorted((upload_dir / n).read_bytes() for n in stored(upload_dir)) == [b"one", b"three"]
    finally:
        own.remove()


def test_concurrent_scans_each_get_their_verdict(clamd: Clamd, tmp_path: Path) -> None:
    """Many threads scanning at once through one client: no verdict crosses over."""
    client = ClamdClient(clamd.url, timeout=30)
    files = []
    for i in range(40):
        infected = i % 3 == 0
        data = (MARKER if infected else b"") + os.urandom(20_000 + i)
        path = tmp_path / f"{i}.bin"
        path.write_bytes(data)
        files.append((str(path), infected))
    wrong: list[Any] = []

    def scan(path: str, infected: bool) -> None:
        try:
            found = client.scan_file(path)
        except ScanError as exc:
            wrong.append((path, exc))
            return
        if (found is not None) != infected:
            wrong.append((path, found))

    threads = [threading.Thread(target=scan, args=f) for f in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert wrong == []


def test_scanning_and_content_check_together(clamd: Clamd, visitor: Any, upload_dir: Path) -> None:
    client = visitor(**scanning(clamd, **{"sessup.upload.allowed_extensions": "png"}))
    assert client.upfile([("a.png", samples.HTML)]).status_int == 415  # checked before the scanner runs
    infected_png = samples.png() + MARKER  # a real PNG, with the signature trailing it
    assert client.upfile([("b.png", infected_png)]).status_int == 422
    assert client.upfile([("c.png", samples.png())]).status_int == 200
    assert len(stored(upload_dir)) == 1


def test_tus_completion_while_the_scanner_is_down_can_be_retried(visitor: Any, upload_dir: Path) -> None:
    own = Clamd()
    own.start()
    try:
        client = visitor(**{"sessup.upload.clamav": own.url})
        data = os.urandom(10_000)
        location = client.tus_create(len(data), "later.bin").headers["Location"].replace("http://example.com", "")
        headers = {"Tus-Resumable": "1.0.0", "Content-Type": "application/offset+octet-stream", "Host": "example.com"}
        assert client.app.request(location, method="PATCH", body=data[:6000], status="*",
                                  headers={**headers, "Upload-Offset": "0"}).status_int == 204
        own.stop()
        down = client.app.request(location, method="PATCH", body=data[6000:], status="*",
                                  headers={**headers, "Upload-Offset": "6000"})
        assert down.status_int == 503 and down.headers["Retry-After"]
        assert stored(upload_dir) == []
        # The upload is still there, at the offset before the refused chunk; send it again.
        head = client.app.request(location, method="HEAD", headers=headers, status="*")
        assert head.status_int == 200 and head.headers["Upload-Offset"] == "6000"
        own.start()
        again = client.app.request(location, method="PATCH", body=data[6000:], status="*",
                                   headers={**headers, "Upload-Offset": "6000"})
        assert again.status_int == 204, again.text
        assert [(upload_dir / n).read_bytes() for n in stored(upload_dir)] == [data]
    finally:
        own.remove()
