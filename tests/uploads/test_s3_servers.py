"""Object storage behind real servers (pserve in subprocesses) and the S3
server process: two application servers share one bucket and nothing else;
a server killed with SIGKILL mid-upload leaves nothing after a restart and a
sweep; a large upload keeps the server's memory flat."""
from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from ..s3 import SECRET_KEY, S3Server
from ..support import Server, free_port, start_server, write_ini
from .conftest import BOUNDARY, MULTIPART, body, part

pytestmark = pytest.mark.server

MiB = 1024 * 1024
SWEEP = str(Path(sys.executable).with_name("sessup-sweep"))


def serve(directory: Path, s3_server: S3Server, bucket: str, **overrides: str) -> Server:
    """A pserve process storing in ``bucket``, with its own (unshared) directories."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    settings = {**s3_server.settings(bucket), "sessup.upload.path": str(directory / "uploads"),
                "sessup.session.file.path": str(directory / "sessions"),
                "sessup.upload.max_file_size": str(300 * MiB), "sessup.upload.max_total_size": str(300 * MiB),
                **overrides}
    return start_server(write_ini(directory, settings, port=port), port)


class Visitor:
    """A client of one server: the CSRF cookie and token from ``GET /csrf``."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        status, headers, data = self.request("GET", "/csrf")
        assert status == 200
        self.cookie = headers["set-cookie"].split(";", 1)[0]
        self.token = json.loads(data)["csrf_token"]

    def request(self, method: str, path: str, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=300)
        try:
            headers = {"Accept": "application/json", **(headers or {})}
            if getattr(self, "cookie", None):
                headers["Cookie"] = self.cookie
            conn.request(method, path, body=data, headers=headers)
            res = conn.getresponse()
            return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
        finally:
            conn.close()

    def upload(self, *files: tuple[str, bytes]) -> list[dict[str, Any]]:
        data = body(*(part("inputFile", content, filename=name) for name, content in files))
        status, _, reply = self.request("POST", "/upFile", data, {"Content-Type": MULTIPART,
                                                                   "X-CSRF-Token": self.token})
        assert status == 200, reply
        return list(json.loads(reply)["files"])


def random_bytes(size: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(size)


@pytest.fixture
def two_servers(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> Iterator[tuple[Server, Server]]:
    first = serve(tmp_path / "a", s3_server, s3_bucket)
    try:
        second = serve(tmp_path / "b", s3_server, s3_bucket)
        try:
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def test_upload_through_one_server_download_through_the_other(two_servers: tuple[Server, Server], tmp_path: Path,
                                                              s3_server: S3Server, s3_bucket: str) -> None:
    a, b = two_servers
    files = [("page.html", b"<script>alert(1)</script>"), ("r\u00e9sum\u00e9.pdf", b"%PDF-1.4 x"),
             ("big.bin", random_bytes(12 * MiB + 7, 1))]
    stored = Visitor(a).upload(*files)
    reader = Visitor(b)
    for info, (filename, content) in zip(stored, files):
        assert info["filename"] == filename and info["sha256"] == hashlib.sha256(content).hexdigest()
        status, headers, data = reader.request("GET", info["url"])
        assert status == 200 and data == content
        assert headers["etag"] == f'"{info["sha256"]}"'
        assert headers["x-content-type-options"] == "nosniff" and headers["content-security-policy"] == "sandbox"
        same = Visitor(a).request("GET", info["url"])[1]
        for key in ("content-type", "content-disposition", "content-length", "etag", "last-modified"):
            assert headers[key] == same[key], key
    html, pdf, big = stored
    assert reader.request("GET", html["url"])[1]["content-disposition"].startswith("attachment;")
    assert reader.request("GET", pdf["url"])[1]["content-disposition"].startswith("inline;")
    status, headers, data = reader.request("GET", big["url"], headers={"Range": "bytes=5242870-5242889"})
    assert status == 206 and data == files[2][1][5242870:5242890]
    assert reader.request("HEAD", big["url"])[1]["content-length"] == str(12 * MiB + 7)
    # And the other way round; nothing was written to either server's directory.
    back = Visitor(b).upload(("b.txt", b"from b"))[0]
    assert Visitor(a).request("GET", back["url"])[2] == b"from b"
    for side in ("a", "b"):
        assert [p for p in (tmp_path / side / "uploads").rglob("*") if p.is_file()] == []
    assert s3_server.unfinished(s3_bucket) == []
    assert not [k for k in s3_server.keys(s3_bucket) if k.startswith("uploads/.tmp/")]


def test_redirect_mode_on_a_second_server(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    a = serve(tmp_path / "a", s3_server, s3_bucket)
    try:
        b = serve(tmp_path / "b", s3_server, s3_bucket, **{"sessup.upload.s3.download": "redirect"})
        try:
            info = Visitor(a).upload(("x.svg", b"<svg onload=alert(1)>"))[0]
            status, headers, _ = Visitor(b).request("GET", info["url"])
            assert status == 302 and headers["cache-control"] == "no-store"
            import urllib.request

            with urllib.request.urlopen(headers["location"]) as answer:
                assert answer.read() == b"<svg onload=alert(1)>"
                assert answer.headers["Content-Type"] == "application/octet-stream"
                assert answer.headers["Content-Disposition"] == 'attachment; filename="x.svg"'
            assert SECRET_KEY not in headers["location"]
        finally:
            b.stop()
    finally:
        a.stop()
    for srv in (a, b):
        assert SECRET_KEY not in srv.log()


def test_credentials_stay_out_of_a_debug_log(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    """Even with every logger at DEBUG (botocore's request dumps included), the
    secret key is never written; a failing service is logged without it too."""
    import configparser

    srv = serve(tmp_path / "a", s3_server, s3_bucket)
    srv.stop()
    ini = tmp_path / "a" / "test.ini"
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(ini)
    parser.set("logger_root", "level", "DEBUG")
    port = free_port()
    parser.set("server:main", "listen", f"127.0.0.1:{port}")
    with open(ini, "w") as f:
        parser.write(f)
    srv = start_server(ini, port)
    try:
        visitor = Visitor(srv)
        [info] = visitor.upload(("a.txt", random_bytes(6 * MiB, 2)))
        assert visitor.request("GET", info["url"])[0] == 200
    finally:
        srv.stop()
    log = srv.log()
    assert "botocore" in log and SECRET_KEY not in log


def test_concurrent_uploads_and_refusals_share_one_client(tmp_path: Path, s3_server: S3Server,
                                                          s3_bucket: str) -> None:
    """8 threads, 6 rounds each, against one server (its threads share one S3
    client): uploads (some multipart) and refused uploads interleave; every
    stored file is byte-exact, every refusal leaves nothing, failures counted."""
    from concurrent.futures import ThreadPoolExecutor

    srv = serve(tmp_path / "a", s3_server, s3_bucket, **{"sessup.upload.max_file_size": str(7 * MiB),
                                                          "sessup.upload.max_total_size": str(7 * MiB)})
    failures: list[str] = []
    stored: dict[str, bytes] = {}
    try:
        visitor = Visitor(srv)

        def one(worker: int, round_: int) -> None:
            size = (6 * MiB + worker) if (worker + round_) % 4 == 0 else 1000 * (worker + 1) + round_
            content = random_bytes(size, worker * 100 + round_)
            if (worker + round_) % 3 == 0:  # over the limit after a part went up: refused, aborted
                content += random_bytes(2 * MiB, 1)
            data = body(part("inputFile", content, filename=f"{worker}-{round_}.bin"))
            status, _, reply = visitor.request("POST", "/upFile", data, {"Content-Type": MULTIPART,
                                                                        "X-CSRF-Token": visitor.token})
            if len(content) > 7 * MiB:
                if status != 413:
                    failures.append(f"{worker}-{round_}: expected 413, got {status}")
                return
            if status != 200:
                failures.append(f"{worker}-{round_}: {status} {reply[:100]!r}")
                return
            info = json.loads(reply)["files"][0]
            stored["uploads/" + info["stored_name"]] = content

        with ThreadPoolExecutor(8) as pool:
            for future in [pool.submit(one, w, r) for w in range(8) for r in range(6)]:
                future.result()
    finally:
        srv.stop()
    assert failures == []
    assert s3_server.unfinished(s3_bucket) == [] and s3_server.keys(s3_bucket) == sorted(stored)
    for key, content in stored.items():
        assert s3_server.read(s3_bucket, key) == content


def parts_sent(s3_server: S3Server, bucket: str) -> int:
    client = s3_server.client()
    total = 0
    for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", ()):
        total += len(client.list_parts(Bucket=bucket, Key=upload["Key"],
                                       UploadId=upload["UploadId"]).get("Parts", ()))
    return total


def send_slowly(port: int, visitor: Visitor, size: int, stop: threading.Event) -> None:
    """POST a ``size``-byte file; waitress takes the whole body first, then the
    application streams it into the bucket, part by part."""
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="inputFile"; filename="big.bin"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.putrequest("POST", "/upFile")
        for key, value in (("Content-Type", MULTIPART), ("Content-Length", str(len(head) + size + len(tail))),
                           ("X-CSRF-Token", visitor.token), ("Cookie", visitor.cookie)):
            conn.putheader(key, value)
        conn.endheaders()
        conn.send(head)
        block = random_bytes(MiB, 3)
        for _ in range(size // MiB):
            if stop.is_set():
                return
            conn.send(block)
        conn.send(tail)
        conn.getresponse().read()
    except OSError:
        pass  # the server was killed under us: expected
    finally:
        conn.close()


@pytest.mark.slow
def test_kill_9_mid_upload_then_restart_and_sweep(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    srv = serve(tmp_path / "a", s3_server, s3_bucket)
    ini = tmp_path / "a" / "test.ini"
    stop = threading.Event()
    try:
        visitor = Visitor(srv)
        before = visitor.upload(("kept.txt", b"stored before the crash"), ("big.bin", random_bytes(6 * MiB, 5)))
        sender = threading.Thread(target=send_slowly, args=(srv.port, visitor, 150 * MiB, stop), daemon=True)
        sender.start()
        deadline = time.monotonic() + 120
        while parts_sent(s3_server, s3_bucket) < 2:  # the application is mid-file, parts in the bucket
            assert time.monotonic() < deadline, "the upload never reached the bucket"
            assert srv.proc.poll() is None
            time.sleep(0.05)
        srv.kill9()
    finally:
        stop.set()
        srv.stop()
    sender.join(60)
    # SIGKILL: nothing could clean up. The unfinished multipart upload is there.
    assert len(s3_server.unfinished(s3_bucket)) == 1
    stored_keys = sorted("uploads/" + f["stored_name"] for f in before)

    # Restarted: the start-up sweep leaves what may belong to a running upload
    # (younger than temp_max_age), and the server works.
    port = free_port()
    srv = start_server(write_ini(tmp_path / "a", {}, base=str(ini), port=port), port)
    try:
        assert len(s3_server.unfinished(s3_bucket)) == 1
        visitor = Visitor(srv)
        for info, content in zip(before, (b"stored before the crash", random_bytes(6 * MiB, 5))):
            assert visitor.request("GET", info["url"])[2] == content
        after = visitor.upload(("after.txt", b"after the crash"))[0]
    finally:
        srv.stop()
    time.sleep(1.1)
    done = subprocess.run([SWEEP, str(ini), "--max-age", "1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "removed 1 temporary" in done.stdout
    # No unfinished multipart upload, no temporary object: only what was stored.
    assert s3_server.unfinished(s3_bucket) == []
    assert s3_server.keys(s3_bucket) == sorted(stored_keys + ["uploads/" + after["stored_name"]])


def proc_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


@pytest.mark.slow
def test_100_mib_upload_keeps_server_memory_flat(tmp_path: Path, s3_server: S3Server, s3_bucket: str) -> None:
    srv = serve(tmp_path / "a", s3_server, s3_bucket, **{"sessup.upload.s3.part_size": str(8 * MiB)})
    try:
        visitor = Visitor(srv)
        visitor.upload(("warm.txt", b"x"))  # the client and its first connection exist
        baseline = proc_kb(srv.pid, "VmHWM")
        size = 100 * MiB
        data = random_bytes(size, 9)
        [info] = visitor.upload(("big.bin", data))
        peak = proc_kb(srv.pid, "VmHWM")
        print(f"\n100 MiB into the bucket: server VmHWM {baseline / 1024:.1f} MiB before, {peak / 1024:.1f} MiB after")
        assert info["sha256"] == hashlib.sha256(data).hexdigest()
        # One part (8 MiB) and a read block in flight, plus the HTTP library's copies: far below the file.
        assert peak - baseline < 40 * 1024, f"peak grew by {(peak - baseline) / 1024:.1f} MiB"
        assert s3_server.read(s3_bucket, "uploads/" + info["stored_name"]) == data
    finally:
        srv.stop()
    assert [p for p in (tmp_path / "a").rglob("*") if p.is_file() and "sessions" not in p.parts
            and p.name != "test.ini"] == []  # nothing spooled to the server's disk
