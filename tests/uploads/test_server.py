"""/upFile against real waitress (pserve in a subprocess): waitress buffers the
body before the application runs, so memory, disconnects and descriptors are
checked where they really happen."""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from ..support import Server, free_port, start_server, write_ini
from .conftest import BOUNDARY, MULTIPART, body, leftovers, part

pytestmark = pytest.mark.server

MiB = 1024 * 1024


def serve(tmp_path: Path, **overrides: str) -> tuple[Server, Path]:
    upload_dir = tmp_path / "uploads"
    settings = {"sessup.upload.path": str(upload_dir), "sessup.session.file.path": str(tmp_path / "sessions"),
                **overrides}
    port = free_port()
    return start_server(write_ini(tmp_path, settings, port=port), port), upload_dir


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    srv, upload_dir = serve(tmp_path, **{"sessup.upload.max_file_size": str(300 * MiB),
                                         "sessup.upload.max_total_size": str(300 * MiB)})
    try:
        yield srv, upload_dir
    finally:
        srv.stop()


def proc_status(pid: int, key: str) -> int:
    """A kB value of /proc/PID/status (VmHWM = peak resident memory)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(predicate, limit: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    """Poll until ``predicate()`` is true (bounded); returns its last value."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            return bool(predicate())
        time.sleep(0.05)
    return True


def csrf_session(srv: Server) -> tuple[str, str]:
    """(cookie header, token) of a fresh session, from GET /csrf."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("GET", "/csrf")
    res = conn.getresponse()
    token = json.loads(res.read())["csrf_token"]
    cookie = res.getheader("Set-Cookie").split(";", 1)[0]
    conn.close()
    return cookie, token


def file_blocks(size: int, seed: int = 7) -> tuple[Iterator[bytes], hashlib._Hash]:
    """``size`` pseudo-random bytes in 1 MiB blocks, and the sha256 they will have."""
    block = random.Random(seed).randbytes(MiB)
    digest = hashlib.sha256()

    def gen() -> Iterator[bytes]:
        sent = 0
        i = 0
        while sent < size:
            chunk = (i.to_bytes(8, "big") + block[8:])[: size - sent]
            digest.update(chunk)
            sent += len(chunk)
            i += 1
            yield chunk

    return gen(), digest


def stream_post(srv: Server, head: bytes, blocks: Iterator[bytes], tail: bytes, length: int,
                headers: dict[str, str]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=300)
    conn.putrequest("POST", "/upFile")
    conn.putheader("Content-Type", MULTIPART)
    conn.putheader("Content-Length", str(length))
    for key, value in headers.items():
        conn.putheader(key, value)
    conn.endheaders()
    conn.send(head)
    for block in blocks:
        conn.send(block)
    conn.send(tail)
    res = conn.getresponse()
    data = res.read()
    conn.close()
    return res.status, data


def big_upload_parts(size: int, filename: str = "big.bin") -> tuple[bytes, bytes, int]:
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"inputFile\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    return head, tail, len(head) + size + len(tail)


@pytest.mark.slow
def test_200_mib_upload_keeps_server_memory_flat(server: tuple[Server, Path]) -> None:
    srv, upload_dir = server
    cookie, token = csrf_session(srv)
    baseline_kb = proc_status(srv.pid, "VmHWM")
    size = 200 * MiB
    head, tail, length = big_upload_parts(size)
    blocks, digest = file_blocks(size)
    started = time.perf_counter()
    status, data = stream_post(srv, head, blocks, tail, length,
                               {"Cookie": cookie, "X-CSRF-Token": token, "Accept": "application/json"})
    elapsed = time.perf_counter() - started
    assert status == 200, data
    info = json.loads(data)["files"][0]
    assert info["size"] == size and info["sha256"] == digest.hexdigest()
    stored = upload_dir / info["path"]
    assert stored.stat().st_size == size
    peak_kb = proc_status(srv.pid, "VmHWM")
    print(f"\n200 MiB through waitress: {size / MiB / elapsed:.0f} MiB/s end to end, "
          f"server VmHWM {baseline_kb / 1024:.1f} MiB before, {peak_kb / 1024:.1f} MiB after")
    assert peak_kb < 100 * 1024, f"server peak RSS {peak_kb} kB"
    with stored.open("rb") as f:  # byte-exact, checked independently of the server's hash
        check = hashlib.sha256()
        while chunk := f.read(4 * MiB):
            check.update(chunk)
    assert check.hexdigest() == digest.hexdigest()
    assert os.listdir(upload_dir / ".tmp") == []


def test_three_files_and_csrf_through_waitress(server: tuple[Server, Path]) -> None:
    srv, upload_dir = server
    cookie, token = csrf_session(srv)
    files = [b"hello\n", b"", bytes(range(256))]
    data = body(*(part("inputFile", content, filename=f"f{i}.bin") for i, content in enumerate(files)))

    def post(headers: dict[str, str]) -> tuple[int, bytes]:
        return stream_post(srv, data, iter(()), b"", len(data), headers)

    status, text = post({"Cookie": cookie})
    assert status == 403 and leftovers(upload_dir) == []
    status, text = post({"Cookie": cookie, "X-CSRF-Token": "forged"})
    assert status == 403 and leftovers(upload_dir) == []
    status, text = post({"Cookie": cookie, "X-CSRF-Token": token})
    assert status == 200 and text.startswith(b"/uploads/")
    status, reply = post({"Cookie": cookie, "X-CSRF-Token": token, "Accept": "application/json"})
    got = json.loads(reply)["files"]
    assert [f["sha256"] for f in got] == [hashlib.sha256(c).hexdigest() for c in files]
    for f, content in zip(got, files):
        assert (upload_dir / f["path"]).read_bytes() == content


def raw_socket(srv: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=30)


def request_head(length: int, extra: str = "") -> bytes:
    return (f"POST /upFile HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {MULTIPART}\r\n"
            f"Content-Length: {length}\r\n{extra}\r\n").encode()


def server_settled(srv: Server, baseline: int) -> bool:
    return fd_count(srv.pid) <= baseline


@pytest.mark.parametrize("sent_mib", [0, 1, 50])
def test_client_closing_early_leaves_nothing(tmp_path: Path, sent_mib: int) -> None:
    """Content-Length larger than what the client sends, then the client closes:
    no file, no temporary file, descriptors back to where they were."""
    srv, upload_dir = serve(tmp_path, **{"sessup.upload.require_csrf": "false",
                                         "sessup.upload.max_file_size": str(100 * MiB),
                                         "sessup.upload.max_total_size": str(100 * MiB)})
    try:
        data = body(part("inputFile", b"x" * (100 * MiB - 1000), filename="a.bin"))
        ok = body(part("inputFile", b"ok", filename="ok.txt"))
        assert stream_post(srv, ok, iter(()), b"", len(ok), {})[0] == 200
        before = leftovers(upload_dir)
        baseline = fd_count(srv.pid)
        for _ in range(3):
            sock = raw_socket(srv)
            sock.sendall(request_head(len(data)))
            sock.sendall(data[: max(1000, sent_mib * MiB)])
            sock.close()
        assert wait_for(lambda: server_settled(srv, baseline)), (fd_count(srv.pid), baseline)
        assert leftovers(upload_dir) == before
        # The server is fine afterwards.
        assert stream_post(srv, ok, iter(()), b"", len(ok), {})[0] == 200
    finally:
        srv.stop()


def test_client_disconnect_while_the_app_reads(tmp_path: Path) -> None:
    """Even a server that streams the body to the app (none is waitress) must
    not keep anything: simulated here by a body that ends before its final
    boundary, sent completely."""
    srv, upload_dir = serve(tmp_path, **{"sessup.upload.require_csrf": "false"})
    try:
        data = body(part("inputFile", b"y" * (5 * MiB), filename="a.bin"), close=False)[:-100]
        baseline = None
        for i in range(5):
            status, text = stream_post(srv, data, iter(()), b"", len(data), {})
            assert status == 400 and b"Malformed" in text
            if baseline is None:
                baseline = fd_count(srv.pid)
        assert leftovers(upload_dir) == []
        assert wait_for(lambda: server_settled(srv, baseline))
    finally:
        srv.stop()


@pytest.mark.slow
def test_kill9_mid_upload_leftover_is_swept(tmp_path: Path) -> None:
    """A worker killed while writing leaves a temporary file; the next start
    (or sessup-sweep) removes it once it is older than temp_max_age."""
    overrides = {"sessup.upload.require_csrf": "false", "sessup.upload.chunk_size": "4096",
                 "sessup.upload.max_file_size": str(300 * MiB), "sessup.upload.max_total_size": str(300 * MiB)}
    srv, upload_dir = serve(tmp_path, **overrides)
    size = 300 * MiB
    head, tail, length = big_upload_parts(size)
    blocks, _ = file_blocks(size)
    errors: list[BaseException] = []

    def send() -> None:
        try:
            stream_post(srv, head, blocks, tail, length, {})
        except (OSError, http.client.HTTPException) as exc:
            errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        seen = wait_for(lambda: bool(os.listdir(upload_dir / ".tmp")) or not sender.is_alive(), limit=120)
        assert seen and os.listdir(upload_dir / ".tmp"), "the upload finished before it could be interrupted"
        srv.kill9()
    finally:
        sender.join(60)
        srv.stop()
    partial = os.listdir(upload_dir / ".tmp")
    assert len(partial) == 1 and not [n for n in os.listdir(upload_dir) if not n.startswith(".")]
    # Younger than temp_max_age: a restart keeps it (it could be an upload still running elsewhere).
    srv, _ = serve(tmp_path, **overrides)
    srv.stop()
    assert os.listdir(upload_dir / ".tmp") == partial
    old = time.time() - 7200
    os.utime(upload_dir / ".tmp" / partial[0], (old, old))
    srv, _ = serve(tmp_path, **overrides)
    srv.stop()
    assert os.listdir(upload_dir / ".tmp") == []


def test_sweep_command(tmp_path: Path) -> None:
    upload_dir = tmp_path / "uploads"
    ini = write_ini(tmp_path, {"sessup.upload.path": str(upload_dir)})
    (upload_dir / ".tmp").mkdir(parents=True)
    stale = upload_dir / ".tmp" / ("S" * 32 + ".part")
    fresh = upload_dir / ".tmp" / ("F" * 32 + ".part")
    stale.write_bytes(b"partial")
    fresh.write_bytes(b"in progress")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    sweep = str(Path(sys.executable).with_name("sessup-sweep"))
    out = subprocess.run([sweep, str(ini)], capture_output=True, text=True, check=True)
    assert "removed 1" in out.stdout
    assert not stale.exists() and fresh.exists()
    out = subprocess.run([sweep, str(ini), "--max-age", "0"], capture_output=True, text=True, check=True)
    assert "removed 1" in out.stdout and not fresh.exists()
    bad = subprocess.run([sweep, str(tmp_path / "missing.ini")], capture_output=True, text=True)
    assert bad.returncode == 2
    no_path = write_ini(tmp_path, {"sessup.upload.path": ""})
    bad = subprocess.run([sweep, str(no_path)], capture_output=True, text=True)
    assert bad.returncode == 2 and "sessup.upload.path" in bad.stderr


def test_chunked_request_through_waitress(tmp_path: Path) -> None:
    srv, upload_dir = serve(tmp_path, **{"sessup.upload.require_csrf": "false"})
    try:
        data = body(part("inputFile", bytes(range(256)) * 1000, filename="c.bin"))
        sock = raw_socket(srv)
        head = (f"POST /upFile HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {MULTIPART}\r\n"
                f"Transfer-Encoding: chunked\r\nAccept: application/json\r\nConnection: close\r\n\r\n").encode()
        sock.sendall(head)
        for i in range(0, len(data), 10_000):
            piece = data[i:i + 10_000]
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        sock.sendall(b"0\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        sock.close()
        assert reply.startswith(b"HTTP/1.1 200"), reply[:300]
        info = json.loads(reply.split(b"\r\n\r\n", 1)[1])["files"][0]
        assert info["sha256"] == hashlib.sha256(bytes(range(256)) * 1000).hexdigest()
    finally:
        srv.stop()


def test_disk_full_through_waitress(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (test_disk_full.py injects ENOSPC instead)")
    try:
        srv, _ = serve(tmp_path, **{"sessup.upload.require_csrf": "false", "sessup.upload.path": str(small)})
        try:
            baseline = None
            for _ in range(3):
                data = body(part("inputFile", os.urandom(3 * MiB), filename="huge.bin"))
                status, text = stream_post(srv, data, iter(()), b"", len(data), {})
                assert status == 507 and b"full" in text
                assert leftovers(small) == []
                baseline = baseline or fd_count(srv.pid)
            assert wait_for(lambda: server_settled(srv, baseline))
            data = body(part("inputFile", b"fits", filename="ok.txt"))
            status, text = stream_post(srv, data, iter(()), b"", len(data), {})
            assert status == 200 and (small / text.decode().rsplit("/", 1)[1]).read_bytes() == b"fits"
        finally:
            srv.stop()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def test_many_uploads_with_aborts_leave_no_leaks(tmp_path: Path) -> None:
    """200 uploads, every tenth cut short or over a limit: afterwards only the
    good files exist and the server holds no extra descriptors."""
    srv, upload_dir = serve(tmp_path, **{"sessup.upload.require_csrf": "false",
                                         "sessup.upload.max_file_size": "100000"})
    try:
        good = body(part("inputFile", b"g" * 5000, filename="g.bin"))
        too_big = body(part("inputFile", b"b" * 100_001, filename="b.bin"))
        truncated = good[:-20]
        stream_post(srv, good, iter(()), b"", len(good), {})
        baseline = fd_count(srv.pid)
        expected_files = 1
        for i in range(200):
            if i % 20 == 5:
                status, _ = stream_post(srv, too_big, iter(()), b"", len(too_big), {})
                assert status == 413
            elif i % 20 == 15:
                status, _ = stream_post(srv, truncated, iter(()), b"", len(truncated), {})
                assert status == 400
            elif i % 20 == 10:
                sock = raw_socket(srv)
                sock.sendall(request_head(len(good)) + good[:1000])
                sock.close()
            else:
                status, _ = stream_post(srv, good, iter(()), b"", len(good), {})
                assert status == 200
                expected_files += 1
        assert wait_for(lambda: server_settled(srv, baseline)), (fd_count(srv.pid), baseline)
        stored = [n for n in os.listdir(upload_dir) if not n.startswith(".")]
        assert len(stored) == expected_files
        assert os.listdir(upload_dir / ".tmp") == []
        assert len(os.listdir(upload_dir / ".meta")) == expected_files
    finally:
        srv.stop()
