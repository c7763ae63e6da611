"""Uploads when the process dies or the disk refuses writes (real pserve).

* ``kill -9`` while the pipeline writes a 200 MiB file: the partial file stays
  in ``<upload dir>/.tmp`` (nothing can clean up after SIGKILL) and nowhere
  else; ``sessup-sweep`` leaves it while it is younger than
  ``sessup.upload.temp_max_age`` (it could belong to a running upload), and the
  next start-up removes it once older, as documented in
  ``pyramid_sessup/uploads/views.py`` and ``docs/deployment.md``.  Files stored
  before the crash are intact (sha256 on disk and over HTTP).
* The upload directory becomes read-only (a read-only bind mount: the tests
  run as root, for whom ``chmod`` changes nothing): ``POST /upFile`` answers a
  clear error that is not a 500, nothing is half-written, and uploads work
  again once the directory is writable.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from ..support import (
    exited,
    free_port,
    running_server,
    start_production,
    start_server,
    unavailable,
    write_ini,
    write_production_ini,
)
from .conftest import wait_until

MiB = 1024 * 1024
BIG = 200 * MiB
SWEEP = str(Path(sys.executable).with_name("sessup-sweep"))


def upload_ini(tmp_path: Path, port: int, **extra: str) -> Path:
    return write_ini(tmp_path, {
        "sessup.session.store": "file",
        "sessup.session.file.path": str(tmp_path / "sessions"),
        "sessup.upload.path": str(tmp_path / "uploads"),
        "sessup.upload.max_file_size": str(BIG + MiB),
        "sessup.upload.max_total_size": str(BIG + MiB),
        **extra,
    }, port=port)


class Client:
    """One browser-like client: a session cookie and its CSRF token."""

    def __init__(self, port: int) -> None:
        self.port = port
        status, headers, body = self.request("GET", "/csrf", headers={"Accept": "application/json"})
        assert status == 200
        self.cookie = headers["set-cookie"].split(";", 1)[0]
        self.token = json.loads(body)["csrf_token"]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            headers = dict(headers or {})
            if getattr(self, "cookie", None):
                headers["Cookie"] = self.cookie
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def upload(self, payload: bytes, filename: str, accept: str = "application/json") -> tuple[int, dict[str, str], bytes]:
        head, tail, content_type = framing(filename)
        return self.request("POST", "/upFile", body=head + payload + tail, headers={
            "Content-Type": content_type, "X-CSRF-Token": self.token, "Accept": accept})


def framing(filename: str) -> tuple[bytes, bytes, str]:
    boundary = "faultboundary7MA4YWxkTrZu0gW"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="inputFile"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    return head, f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def tree(root: Path) -> dict[str, int]:
    """Every file under ``root`` (relative path -> size)."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def store_some(client: Client, upload_dir: Path) -> dict[str, str]:
    """Three stored files (empty, every byte value, 1 MiB): name -> sha256."""
    stored = {}
    for payload, filename in ((b"", "empty.txt"), (bytes(range(256)) * 4, "bytes.bin"),
                              (os.urandom(MiB), "one-mib.dat")):
        status, _, body = client.upload(payload, filename)
        assert status == 200, body
        [info] = json.loads(body)["files"]
        assert info["sha256"] == hashlib.sha256(payload).hexdigest()
        assert sha256_file(upload_dir / info["path"]) == info["sha256"]
        stored[info["path"]] = info["sha256"]
    return stored


def assert_intact(client: Client, upload_dir: Path, stored: dict[str, str]) -> None:
    for name, digest in stored.items():
        assert sha256_file(upload_dir / name) == digest
        status, _, body = client.request("GET", f"/uploads/{name}")
        assert status == 200 and hashlib.sha256(body).hexdigest() == digest


def send_big_upload(port: int, client: Client, errors: list[BaseException]) -> None:
    """POST a 200 MiB file over a raw socket (waitress takes the whole body
    before the application runs; the pipeline then writes the file)."""
    head, tail, content_type = framing("big.bin")
    block = os.urandom(MiB)
    length = len(head) + BIG + len(tail)
    request_head = (f"POST /upFile HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {length}\r\nX-CSRF-Token: {client.token}\r\nCookie: {client.cookie}\r\n"
                    f"Accept: application/json\r\n\r\n").encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
            s.sendall(request_head + head)
            for _ in range(BIG // MiB):
                s.sendall(block)
            s.sendall(tail)
            s.recv(1)  # until the server answers or dies
    except OSError:
        pass  # the server was killed under us: expected
    except BaseException as exc:  # pragma: no cover - reported by the test
        errors.append(exc)


def largest_part(temp_dir: Path) -> int:
    sizes = [0]
    for path in temp_dir.glob("*.part"):
        try:
            sizes.append(path.stat().st_size)
        except FileNotFoundError:  # committed or discarded meanwhile
            pass
    return max(sizes)


@pytest.mark.slow
@pytest.mark.server
def test_kill_9_during_a_large_upload_then_restart(tmp_path: Path) -> None:
    upload_dir = tmp_path / "uploads"
    temp_dir = upload_dir / ".tmp"
    spool = tmp_path / "spool"  # waitress's TMPDIR for bodies it buffers
    spool.mkdir()
    env = {"TMPDIR": str(spool)}
    port = free_port()
    ini = upload_ini(tmp_path, port)
    server = start_server(ini, port, env=env)
    try:
        client = Client(port)
        stored = store_some(client, upload_dir)
        before = tree(upload_dir)

        errors: list[BaseException] = []
        sender = threading.Thread(target=send_big_upload, args=(port, client, errors), daemon=True)
        sender.start()
        # Kill while the pipeline is writing the file (16 MiB of 200 on disk).
        wait_until(lambda: largest_part(temp_dir) >= 16 * MiB, 120, "the pipeline to be writing", interval=0.002)
        server.kill9()
        sender.join(60)
        assert not errors
    finally:
        server.stop()

    [partial] = list(temp_dir.glob("*.part"))
    assert 16 * MiB <= partial.stat().st_size < BIG  # cut short mid-write
    # Nothing else was left: no stored or metadata file for the dead upload, and
    # waitress's buffer (an unlinked temporary file) died with the process.
    after = tree(upload_dir)
    assert {k: v for k, v in after.items() if not k.startswith(".tmp/")} == before
    assert list(spool.iterdir()) == []

    # sessup-sweep with the default age keeps a file this young (it might be an
    # upload still running in another process) ...
    result = subprocess.run([SWEEP, str(ini)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "removed 0 temporary file(s)" in result.stdout
    assert partial.exists()
    # ... and start-up removes it once it is older than sessup.upload.temp_max_age.
    old = time.time() - 120
    os.utime(partial, (old, old))
    port = free_port()
    ini = upload_ini(tmp_path, port, **{"sessup.upload.temp_max_age": "60"})
    with running_server(ini, port, env=env) as server:
        assert list(temp_dir.iterdir()) == []
        client = Client(port)
        assert_intact(client, upload_dir, stored)
        assert tree(upload_dir) == before
        # And the restarted app stores new files as usual.
        status, _, body = client.upload(b"after the crash", "after.txt")
        assert status == 200, body


# --------------------------------------------------------------------------- read-only directory

@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A directory outside pytest's basetemp: a concurrent pytest session's
    clean-up renames old basetemp directories, which would move a mount
    point under the test and leave the read-only mount behind."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="sessup-faults-ro-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _mount(*argv: str) -> None:
    subprocess.run(["mount", *argv], check=True, capture_output=True, text=True, timeout=30)


@contextmanager
def read_only(directory: Path, writable_tmp: Path | None = None) -> Iterator[None]:
    """``directory`` read-only (a read-only bind mount over itself); with
    ``writable_tmp``, its ``.tmp`` stays writable (a separate mount), as when
    temporary files live on another filesystem."""
    mounted: list[Path] = []
    try:
        try:
            _mount("--bind", str(directory), str(directory))
            mounted.append(directory)
            _mount("-o", "remount,ro,bind", str(directory))
            if writable_tmp is not None:
                _mount("--bind", str(writable_tmp), str(directory / ".tmp"))
                mounted.append(directory / ".tmp")
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            unavailable(f"cannot make a read-only bind mount (needs root): {detail.strip()}")
        yield
    finally:
        for path in reversed(mounted):
            # A download still closing can keep the mount busy for a moment: retry, then detach lazily.
            for _ in range(20):
                if subprocess.run(["umount", str(path)], capture_output=True, timeout=30).returncode == 0:
                    break
                time.sleep(0.1)
            else:
                subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def upload_while_read_only(tmp_path: Path, layout: str, accept: str) -> tuple[int, str]:
    """Store files, make the directory read-only, try an upload; check that
    nothing was half-written and that uploads work again afterwards.  Returns
    the refused upload's status and body."""
    upload_dir = tmp_path / "uploads"
    port = free_port()
    with running_server(upload_ini(tmp_path, port), port) as server:
        client = Client(port)
        stored = store_some(client, upload_dir)
        before = tree(upload_dir)
        writable_tmp = None
        if layout == "stored-files-only":
            writable_tmp = tmp_path / "other-fs-tmp"
            writable_tmp.mkdir(mode=0o700)
        with read_only(upload_dir, writable_tmp):
            with pytest.raises(OSError):
                (upload_dir / "probe").write_bytes(b"x")  # really read-only, even for root
            status, _, body = client.upload(os.urandom(64 * 1024), "refused.bin", accept=accept)
            assert tree(upload_dir) == before  # nothing half-written
            if writable_tmp is not None:
                assert list(writable_tmp.iterdir()) == []  # the temporary file was removed
            assert_intact(client, upload_dir, stored)  # downloads still work
        status_again, _, body_again = client.upload(b"writable again", "again.txt")
        assert status_again == 200, body_again
        assert server.proc.poll() is None
    return status, body.decode("utf-8", "replace")


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("layout", ["whole-directory", "stored-files-only"])
def test_read_only_upload_directory_leaves_nothing_behind(private_dir: Path, layout: str) -> None:
    status, text = upload_while_read_only(private_dir, layout, "application/json")
    assert status >= 400, (status, text)


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("layout", ["whole-directory", "stored-files-only"])
@pytest.mark.parametrize("accept", ["text/plain", "application/json"])
def test_read_only_upload_directory_answers_a_clear_error(private_dir: Path, layout: str, accept: str) -> None:
    status, text = upload_while_read_only(private_dir, layout, accept)
    assert status in (503, 507), (status, text)
    message = json.loads(text)["error"] if accept == "application/json" else text
    assert "writ" in message.lower() or "read-only" in message.lower(), message
    assert str(private_dir) not in text  # no server path in the answer


@pytest.mark.slow
@pytest.mark.server
@pytest.mark.parametrize("endpoint", ["form", "tus-create", "tus-patch"])
def test_read_only_upload_directory_form_and_tus_answer_clear_errors(private_dir: Path, endpoint: str) -> None:
    """The form and tus answer the same clear 507 as /upFile, and keep nothing."""
    import base64

    upload_dir = private_dir / "uploads"
    port = free_port()
    with running_server(upload_ini(private_dir, port), port):
        client = Client(port)
        tus = {"Tus-Resumable": "1.0.0", "X-CSRF-Token": client.token,
               "Upload-Metadata": "filename " + base64.b64encode(b"a.txt").decode()}
        status, headers, _ = client.request("POST", "/files/", headers={**tus, "Upload-Length": "5"})
        assert status == 201
        location = urllib_path(headers["location"])
        before = tree(upload_dir)
        with read_only(upload_dir):
            if endpoint == "form":
                boundary = "formboundary0123456789"
                data = (f'--{boundary}\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n{client.token}\r\n'
                        f'--{boundary}\r\nContent-Disposition: form-data; name="description"\r\n\r\nd\r\n'
                        f'--{boundary}\r\nContent-Disposition: form-data; name="inputFile"; filename="a.txt"\r\n'
                        f"Content-Type: text/plain\r\n\r\nx\r\n--{boundary}--\r\n").encode()
                status, _, body = client.request("POST", "/upload", body=data, headers={
                    "Content-Type": f"multipart/form-data; boundary={boundary}"})
            elif endpoint == "tus-create":
                status, _, body = client.request("POST", "/files/", headers={**tus, "Upload-Length": "5"})
            else:
                status, _, body = client.request("PATCH", location, body=b"hello", headers={
                    **tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"})
            assert tree(upload_dir) == before
        assert status in (503, 507), (status, body[:300])


def urllib_path(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path


# --------------------------------------------------------------------------- production profile

def _holds_file_under(pid: int, directory: Path) -> bool:
    prefix = str(directory) + os.sep
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith(prefix) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.server
def test_kill_9_of_a_production_worker_during_a_large_upload(tmp_path: Path) -> None:
    """``pserve production.ini`` (gunicorn): the worker writing a 200 MiB file
    is killed; the master replaces it and the server keeps serving; the partial
    file stays in ``.tmp`` only and files stored before are intact.  A kill -9
    of the master takes its workers with it, and the next start sweeps the
    partial file once it is old enough."""
    upload_dir = tmp_path / "uploads"
    temp_dir = upload_dir / ".tmp"
    overrides = {
        "sessup.session.file.path": str(tmp_path / "sessions"),
        "sessup.upload.path": str(upload_dir),
        "sessup.upload.max_file_size": str(BIG + MiB),
        "sessup.upload.max_total_size": str(BIG + MiB),
    }
    ini = write_production_ini(tmp_path, overrides)
    port = free_port()
    server = start_production(ini, port)
    try:
        workers = server.children()
        assert len(workers) >= 1
        client = Client(port)
        stored = store_some(client, upload_dir)
        before = tree(upload_dir)
        errors: list[BaseException] = []
        sender = threading.Thread(target=send_big_upload, args=(port, client, errors), daemon=True)
        sender.start()
        wait_until(lambda: largest_part(temp_dir) >= 16 * MiB, 120, "the pipeline to be writing", interval=0.002)
        [victim] = [pid for pid in server.children() if _holds_file_under(pid, temp_dir)]
        os.kill(victim, signal.SIGKILL)
        sender.join(60)
        assert not errors
        wait_until(lambda: victim not in server.children() and len(server.children()) == len(workers), 60,
                   "the master to replace the killed worker")
        [partial] = list(temp_dir.glob("*.part"))
        assert 16 * MiB <= partial.stat().st_size < BIG
        assert {k: v for k, v in tree(upload_dir).items() if not k.startswith(".tmp/")} == before
        client = Client(port)
        assert_intact(client, upload_dir, stored)
        status, _, body = client.upload(b"after the crash", "after.txt")
        assert status == 200, body
        # The whole server crashes: its workers do not outlive the master.
        workers = server.children()
        server.kill9()
        wait_until(lambda: all(exited(pid) for pid in workers), 30, "the workers to exit after their master")
    finally:
        server.stop()
    old = time.time() - 120
    os.utime(partial, (old, old))
    ini = write_production_ini(tmp_path, {**overrides, "sessup.upload.temp_max_age": "60"})
    port = free_port()
    server = start_production(ini, port)
    try:
        assert list(temp_dir.iterdir()) == []
        assert_intact(Client(port), upload_dir, stored)
    finally:
        server.stop()
