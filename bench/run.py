#!/usr/bin/env python
"""pyramid_sessup's benchmark suite, side by side with the Node anchor.

    .venv/bin/python bench/run.py [--quick] [--only NAME[,NAME]] [--stores S[,S]] [--no-node]
                                  [--keep] [--update-readme]

Starts each server the way a user would (``pserve bench/<store>.ini`` for
sessup, ``node bench/node/server.js`` for express, ``bench/bare_app.py`` for the
baselines) on a free 127.0.0.1 port, runs the workloads with wrk and small
Python clients, measures the machine's ceilings in the same run, and prints
one Markdown table.  sessup runs the production profile (gunicorn, one
process per core; the memory store in one process).  Per cell: throughput,
p50/p99 latency, the peak RSS of any one server process during the workload
(VmHWM, reset through /proc/PID/clear_refs first), bytes the server's
processes wrote to storage (write_bytes of /proc/PID/io) and the CPU they
used together (1.00 = one core busy for the whole workload), also per request.

Workload names for --only: ceilings, nosession, session, increments,
upload-big, upload-many, upload-small, upload-checks (the 4 KiB and big
uploads again with the content check, and with clamd scanning each file).
Every load loop is bounded by a
duration or a count, and only 127.0.0.1 is contacted.  Results are also
written to bench/results/ (git-ignored).
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
PSERVE = BIN / "pserve"
NODE_DIR = HERE / "node"
RESULTS = HERE / "results"
KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
REDIS_URL = "redis://127.0.0.1:6379/14"
REDIS_PREFIXES = ("sessup-bench:", "sessup-bench-node:")
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_TABLE = "sessup_bench_sessions"
STORES = ("memory", "file", "redis", "postgresql")
STATIC_FILE = "/static/sessup.css"
WORKLOADS = ("ceilings", "nosession", "session", "increments", "upload-big", "upload-many", "upload-small",
             "upload-checks", "s3-big", "s3-small")
MOTO_SERVER = BIN / "moto_server"
S3_BUCKET = "sessup-bench"
S3_PREFIX = "uploads/"
#: The checks the upload-checks rows turn on, as sessup settings (the scanner's
#: socket is filled in when clamd runs).
VARIANTS = {"checked": {"sessup.upload.content_check": "always"},
            "scanned": {"sessup.upload.clamav": "unix://{clamd}"},
            "encrypted": {"sessup.session.encrypt": "true"}}  # the session rows with encryption at rest
#: A valid PNG header (signature and IHDR chunk) for the content-checked uploads: libmagic
#: reads only a file's head, so the random bytes after it cost the check nothing.
PNG_HEAD = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000100000001008020000009091683600000000")


@dataclass(frozen=True)
class Profile:
    duration: int          # seconds of each measured wrk run (wrk takes whole seconds)
    warmup: int            # seconds of an unmeasured wrk run before it (0: none)
    big_size: int          # the "1 GiB" upload
    many_repeats: int      # 200 x 256 KiB requests per side, alternating; the best is kept
    increment_rounds: int  # rounds of 16 concurrent increments
    ceiling_bytes: int     # bytes pushed through each socket ceiling
    repeats: int           # runs of each throughput workload, alternating sides; the best is kept


FULL = Profile(duration=5, warmup=1, big_size=GiB, many_repeats=3, increment_rounds=5, ceiling_bytes=2 * GiB,
               repeats=2)
QUICK = Profile(duration=1, warmup=0, big_size=256 * MiB, many_repeats=2, increment_rounds=2,
                ceiling_bytes=512 * MiB, repeats=1)
#: Only proves the code paths run (numbers meaningless): 8 MiB "big" upload.
TINY = Profile(duration=1, warmup=0, big_size=8 * MiB, many_repeats=1, increment_rounds=1,
               ceiling_bytes=32 * MiB, repeats=1)


# --------------------------------------------------------------------------- measurements

@dataclass
class Cell:
    """One server's result for one workload."""

    value: float | None = None
    unit: str = ""
    p50: float | None = None      # seconds
    p99: float | None = None      # seconds
    rss: int | None = None        # bytes, peak during the workload
    rss0: int | None = None       # bytes, resident when the workload started
    written: int | None = None    # bytes sent to storage by the server process
    cpu: float | None = None      # server CPU seconds / wall seconds
    note: str = ""


@dataclass
class Row:
    key: str
    label: str
    sessup: Cell | None = None
    node: Cell | None = None
    target: str = ""
    verdict: str = ""


@dataclass
class Report:
    rows: dict[str, Row] = field(default_factory=dict)

    def row(self, key: str, label: str, target: str = "") -> Row:
        if key not in self.rows:
            self.rows[key] = Row(key, label, target=target)
        return self.rows[key]


def _read_proc(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/{name}") as f:
        return f.read()


def peak_rss(pid: int, key: str = "VmHWM") -> int:
    match = re.search(rf"^{key}:\s+(\d+) kB", _read_proc(pid, "status"), re.M)
    return int(match.group(1)) * KiB if match else 0


def write_bytes(pid: int) -> int:
    match = re.search(r"^write_bytes:\s+(\d+)", _read_proc(pid, "io"), re.M)
    return int(match.group(1)) if match else 0


def cpu_seconds(pid: int) -> float:
    # Fields after the ")" of comm: utime and stime are the 12th and 13th.
    fields = _read_proc(pid, "stat").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS, so the next reading is this workload's peak."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Meter:
    """Peak RSS, bytes written and CPU of a server's processes over a ``with`` block.

    The production profile is several processes (gunicorn's master and its
    workers): CPU and bytes written are their sum, the peak RSS the largest
    peak of any one of them (each process's own VmHWM), with the number of
    processes in the cell's note."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def _alive(self, fn: Callable[[int], Any], default: Any) -> list[Any]:
        values = []
        for pid in self.pids:
            try:
                values.append(fn(pid))
            except OSError:  # a process that exited (a replaced worker)
                values.append(default)
        return values

    def __enter__(self) -> Meter:
        self.reset = all(self._alive(reset_peak_rss, False))
        self.rss0 = max(self._alive(lambda pid: peak_rss(pid, "VmRSS"), 0))
        self.written0 = sum(self._alive(write_bytes, 0))
        self.cpu0 = sum(self._alive(cpu_seconds, 0.0))
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.elapsed = time.monotonic() - self.t0
        self.rss = max(self._alive(peak_rss, 0))
        self.written = sum(self._alive(write_bytes, 0)) - self.written0
        self.cpu = (sum(self._alive(cpu_seconds, 0.0)) - self.cpu0) / max(self.elapsed, 1e-9)

    def fill(self, cell: Cell) -> Cell:
        cell.rss, cell.rss0, cell.written, cell.cpu = self.rss, self.rss0, self.written, self.cpu
        if len(self.pids) > 1:
            cell.note = (cell.note + "; " if cell.note else "") + f"{len(self.pids)} processes, RSS per process"
        if not self.reset:
            cell.note = (cell.note + "; " if cell.note else "") + "RSS peak is since start"
        return cell


# --------------------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess on 127.0.0.1:port, its log in the run's temp dir."""

    def __init__(self, name: str, argv: list[str], port: int, logdir: Path, env: dict[str, str] | None = None,
                 cwd: Path = ROOT) -> None:
        self.name, self.port = name, port
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=str(cwd), env={**os.environ, **(env or {})},
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        """The process started (pserve; gunicorn's master in the production profile)."""
        return self.proc.pid

    def pids(self) -> list[int]:
        """Every process that serves: this one and its children (gunicorn's workers)."""
        pids = [self.proc.pid]
        for pid in pids:  # grows while iterating: children of children too
            try:
                pids.extend(int(child) for child in _read_proc(pid, f"task/{pid}/children").split())
            except OSError:
                pass
        return pids

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                request(self.port, "GET", "/", timeout=2)  # any HTTP answer means it serves
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within {timeout:.0f}s: {self.log_tail()}")

    def log_tail(self, lines: int = 8) -> str:
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


@contextlib.contextmanager
def serving(name: str, argv: list[str], logdir: Path, port: int, env: dict[str, str] | None = None,
            cwd: Path = ROOT) -> Iterator[Server]:
    server = Server(name, argv, port, logdir, env=env, cwd=cwd)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def sessup_server(store: str, data: Path, logdir: Path, lock: bool = False) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    argv = [str(PSERVE), str(HERE / f"{store}.ini"), f"port={port}", f"data={data}", f"lock={str(lock).lower()}"]
    # PYTHONPATH: serve the pyramid_sessup of this checkout, even from a copy of the tree.
    return serving(f"sessup-{store}{'-lock' if lock else ''}", argv, logdir, port, env={"PYTHONPATH": str(ROOT)})


class CountingRelay:
    """A loopback TCP relay in front of the S3 server that counts the bytes sent
    to it: what the add-on sent to the object store, HTTP framing included.
    (``/proc/PID/io`` counts neither ``send`` nor ``recv``.)"""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.sent = 0
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, count: bool) -> None:
        try:
            while data := source.recv(256 * KiB):
                sink.sendall(data)
                if count:
                    with self._lock:
                        self.sent += len(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()


@contextlib.contextmanager
def sessup_s3_server(data: Path, logdir: Path) -> Iterator[Server]:
    """An S3 server (``moto_server``, its own process) with the bench's bucket, a
    counting relay in front of it, and ``pserve bench/s3.ini`` storing uploads there."""
    s3_port = free_port()
    with serving("s3-moto", [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(s3_port)], logdir, s3_port) as s3:
        s3_client(s3.port).create_bucket(Bucket=S3_BUCKET)
        relay = CountingRelay(s3.port)
        try:
            port = free_port()
            argv = [str(PSERVE), str(HERE / "s3.ini"), f"port={port}", f"data={data}", "lock=false",
                    f"s3=http://127.0.0.1:{relay.port}", f"bucket={S3_BUCKET}"]
            with serving("sessup-s3", argv, logdir, port, env={"PYTHONPATH": str(ROOT)}) as server:
                server.s3 = s3  # type: ignore[attr-defined]
                server.relay = relay  # type: ignore[attr-defined]
                yield server
        finally:
            relay.close()


def s3_client(port: int):  # type: ignore[no-untyped-def]
    """The bench's own boto3 client of the S3 server (to check and empty the bucket)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1", aws_access_key_id="bench-key",
        aws_secret_access_key="bench-secret-for-a-local-emulator-only",
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required"))


def sessup_variant_server(store: str, settings: dict[str, str], data: Path, logdir: Path,
                          name: str) -> contextlib.AbstractContextManager[Server]:
    """``bench/<store>.ini`` with extra ``[app:main]`` settings, from a copy in ``data``."""
    port = free_port()
    text = (HERE / f"{store}.ini").read_text()
    extra = "".join(f"{key} = {value}\n" for key, value in settings.items())
    ini = data / f"{store}-{name}.ini"
    ini.write_text(text.replace("[app:main]\n", "[app:main]\n" + extra, 1))
    argv = [str(PSERVE), str(ini), f"port={port}", f"data={data}", "lock=false"]
    return serving(f"sessup-{store}+{name}", argv, logdir, port, env={"PYTHONPATH": str(ROOT)})


def clamd_server(directory: Path, logdir: Path) -> contextlib.AbstractContextManager[Server]:
    """Debian's clamd through scripts/run-clamd.sh, on a one-signature database of
    the bench's own (official updates may not be reachable): the cost measured is
    the protocol and clamd's per-byte work, not a full database's."""
    db = directory / "db"
    db.mkdir(parents=True, exist_ok=True)
    (db / "bench.ndb").write_text("Sessup.Bench.Marker:0:*:" + b"SESSUP-BENCH-NEVER-SENT".hex() + "\n")
    return clamd_serving(directory, logdir)


@contextlib.contextmanager
def clamd_serving(directory: Path, logdir: Path) -> Iterator[Server]:
    server = Server("clamd", ["bash", str(ROOT / "scripts" / "run-clamd.sh"), str(directory)], 0, logdir)
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.proc.poll() is not None:
                raise RuntimeError(f"clamd exited with {server.proc.returncode}: {server.log_tail()}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(2)
                    s.connect(str(directory / "clamd.sock"))
                    s.sendall(b"zPING\0")
                    if s.recv(8) == b"PONG\0":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"clamd did not answer within 120 s: {server.log_tail()}")
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


def node_server(store: str, upload_dir: Path, logdir: Path) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    env = {"PORT": str(port), "STORE": store, "REDIS_URL": REDIS_URL, "UPLOAD_DIR": str(upload_dir)}
    return serving(f"node-{store}", ["node", str(NODE_DIR / "server.js")], logdir, port, env=env, cwd=NODE_DIR)


def bare_server(kind: str, logdir: Path) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    return serving(f"bare-{kind}", [sys.executable, str(HERE / "bare_app.py"), kind, str(port)], logdir, port)


# --------------------------------------------------------------------------- HTTP clients

def request(port: int, method: str, path: str, headers: dict[str, str] | None = None, body: bytes | None = None,
            timeout: float = 30) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def cookies_of(headers: http.client.HTTPMessage) -> dict[str, str]:
    jar = {}
    for value in headers.get_all("Set-Cookie") or []:
        name, _, rest = value.partition("=")
        jar[name.strip()] = rest.split(";", 1)[0].strip()
    return jar


def cookie_header(jar: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in jar.items())


def new_session(port: int) -> tuple[str, int]:
    """GET /session without a cookie: the new session's Cookie header and its view count."""
    status, headers, body = request(port, "GET", "/session")
    if status != 200:
        raise RuntimeError(f"GET /session answered {status}: {body[:200]!r}")
    jar = cookies_of(headers)
    if not jar:
        raise RuntimeError("GET /session set no cookie")
    return cookie_header(jar), int(json.loads(body)["views"])


def views(port: int, cookie: str) -> tuple[int, int]:
    status, _, body = request(port, "GET", "/session", headers={"Cookie": cookie})
    return status, (int(json.loads(body)["views"]) if status == 200 else -1)


def csrf_headers(port: int) -> dict[str, str]:
    """Cookie and X-CSRF-Token for sessup's uploads (GET /csrf); empty for a server without /csrf."""
    status, headers, body = request(port, "GET", "/csrf", headers={"Accept": "application/json"})
    if status == 404:
        return {}
    if status != 200:
        raise RuntimeError(f"GET /csrf answered {status}: {body[:200]!r}")
    return {"Cookie": cookie_header(cookies_of(headers)), "X-CSRF-Token": json.loads(body)["csrf_token"]}


Part = tuple[str, "bytes | Path"]   # (filename, content or a file to stream from disk)


def multipart_framing(parts: list[Part], boundary: str, field_name: str = "inputFile") -> tuple[list[bytes], bytes, int]:
    """Per-part header blocks, the closing delimiter, and the total Content-Length."""
    heads = [
        (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field_name}\"; filename=\"{name}\"\r\n"
         f"Content-Type: application/octet-stream\r\n\r\n").encode()
        for name, _ in parts
    ]
    tail = f"--{boundary}--\r\n".encode()
    sizes = [len(c) if isinstance(c, bytes) else c.stat().st_size for _, c in parts]
    length = sum(len(h) + s + 2 for h, s in zip(heads, sizes)) + len(tail)
    return heads, tail, length


@dataclass
class Posted:
    status: int
    body: bytes
    seconds: float  # connect to complete answer
    sent: float     # connect to the last byte handed to the kernel


def post_multipart(port: int, parts: list[Part], headers: dict[str, str], path: str = "/upFile",
                   timeout: float = 600) -> Posted:
    """POST a multipart body over a raw socket: framing from memory, files with sendfile (no copies
    in the client, so the client is not what is measured).

    ``sent`` shows where the time goes: a server that buffers the whole body
    before the application runs (waitress) answers well after the last byte is
    sent; a streaming one (Node) answers right after it."""
    boundary = "sessupbench" + secrets.token_hex(16)
    heads, tail, length = multipart_framing(parts, boundary)
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", f"Content-Length: {length}",
            f"Content-Type: multipart/form-data; boundary={boundary}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    t0 = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            for part_head, (_, content) in zip(heads, parts):
                sock.sendall(part_head)
                if isinstance(content, bytes):
                    sock.sendall(content)
                else:
                    with open(content, "rb") as f:
                        sock.sendfile(f)
                sock.sendall(b"\r\n")
            sock.sendall(tail)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered early (a limit); read what it said
        sent = time.monotonic() - t0
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        body = resp.read()
        return Posted(resp.status, body, time.monotonic() - t0, sent)
    finally:
        sock.close()


def dir_files(path: Path) -> list[Path]:
    """The stored uploads: regular files at the top of the upload directory
    (sessup keeps temporary files and metadata in hidden subdirectories)."""
    return [p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")]


def empty_dir(path: Path) -> None:
    """Delete every file under ``path`` but keep the directories the server made."""
    for child in path.rglob("*"):
        if not child.is_dir() or child.is_symlink():
            child.unlink()


# --------------------------------------------------------------------------- wrk

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(port: int, path: str, connections: int, duration: int, script: Path | None = None) -> Cell:
    """One wrk run (one thread: wrk shares the 2 cores with the server); req/s, p50, p99, errors."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    if script:
        argv += ["-s", str(script)]
    argv.append(f"http://127.0.0.1:{port}{path}")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    out = proc.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    cell = Cell(value=float(rate.group(1)) if rate else None, unit="req/s",
                p50=_seconds(p50.group(1)) if p50 else None, p99=_seconds(p99.group(1)) if p99 else None)
    problems = []
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        problems.append(f"{non2xx.group(1)} non-2xx")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors and any(int(n) for n in errors.groups()):
        problems.append("socket errors c/r/w/t " + "/".join(errors.groups()))
    if rate is None:
        problems.append("wrk failed: " + " ".join((out + proc.stderr).split())[-200:])
    cell.note = ", ".join(problems)
    return cell


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cookie_pool_script(path: Path, url_path: str, cookies: list[str]) -> Path:
    """wrk script rotating over a pool of session cookies: many users, not one hot session."""
    path.write_text(
        "local cookies = {" + ", ".join(lua_string(c) for c in cookies) + "}\n"
        "local n = math.random(#cookies)\n"
        "request = function()\n"
        "  n = n % #cookies + 1\n"
        f"  return wrk.format(\"GET\", {lua_string(url_path)}, {{[\"Cookie\"] = cookies[n]}})\n"
        "end\n"
    )
    return path


def upload_script(path: Path, body_file: Path, content_type: str, headers: dict[str, str]) -> Path:
    """wrk script POSTing the same multipart body (read from a file: binary-safe) on every request."""
    lines = [
        'wrk.method = "POST"',
        f'local f = assert(io.open({lua_string(str(body_file))}, "rb"))',
        'wrk.body = f:read("*a")',
        "f:close()",
        f'wrk.headers["Content-Type"] = {lua_string(content_type)}',
    ]
    lines += [f"wrk.headers[{lua_string(k)}] = {lua_string(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- workloads

class Bench:
    """Runs the workloads; servers start on first use and stay up, so each
    workload alternates between sessup and Node under the same machine load."""

    def __init__(self, profile: Profile, only: set[str], stores: list[str], node: bool, tmp: Path) -> None:
        self.profile, self.only, self.stores, self.with_node, self.tmp = profile, only, stores, node, tmp
        self.report = Report()
        self.logdir = tmp / "logs"
        self.logdir.mkdir()
        self._big: Path | None = None
        self._servers: dict[str, Server | Exception] = {}
        self._stack = contextlib.ExitStack()

    def wants(self, name: str) -> bool:
        return not self.only or name in self.only

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    # -- servers -----------------------------------------------------------------

    def upload_dir(self, name: str) -> Path:
        return self.tmp / name / "uploads"

    def server(self, name: str) -> Server:
        """``sessup-<store>[-lock]``, ``node-<store>`` or ``bare-pyramid``/``bare-wsgi``, started once."""
        if name not in self._servers:
            data = self.tmp / name
            (data / "uploads").mkdir(parents=True, exist_ok=True)
            (data / "sessions").mkdir(parents=True, exist_ok=True)
            kind, _, rest = name.partition("-")
            try:
                if name == "sessup-s3":
                    starter = sessup_s3_server(data, self.logdir)
                elif kind == "sessup" and "+" in rest:
                    store, _, variant = rest.partition("+")
                    settings = {k: v.format(clamd=self.clamd_socket()) if "{clamd}" in v else v
                                for k, v in VARIANTS[variant].items()}
                    starter = sessup_variant_server(store, settings, data, self.logdir, variant)
                elif kind == "sessup":
                    store, _, lock = rest.partition("-")
                    starter = sessup_server(store, data, self.logdir, lock=bool(lock))
                elif kind == "node":
                    self.ensure_node_modules()
                    starter = node_server(rest, data / "uploads", self.logdir)
                else:
                    starter = bare_server(rest, self.logdir)
                server = self._stack.enter_context(starter)
                self.log(f"started {name}: pids {server.pids()}, 127.0.0.1:{server.port}")
                self._servers[name] = server
            except Exception as exc:  # noqa: BLE001 - its cells become n/a, the run goes on
                self.log(f"{name} did not start: {exc}")
                self._servers[name] = exc
        entry = self._servers[name]
        if isinstance(entry, Exception):
            raise RuntimeError(f"{name} did not start: {str(entry)[:300]}")
        return entry

    def stop_servers(self) -> None:
        self._stack.close()

    def clamd_socket(self) -> Path:
        """The socket of the run's clamd, started on first use."""
        if "clamd" not in self._servers:
            directory = self.tmp / "clamd"
            self._servers["clamd"] = self._stack.enter_context(clamd_server(directory, self.logdir))
            self.log(f"started clamd: pid {self._servers['clamd'].pid}")
        return self.tmp / "clamd" / "clamd.sock"

    def clamd_cpu(self) -> float | None:
        entry = self._servers.get("clamd")
        if isinstance(entry, Server):
            with contextlib.suppress(OSError):
                return cpu_seconds(entry.pid)
        return None

    def ensure_node_modules(self) -> None:
        if not (NODE_DIR / "node_modules").is_dir():
            self.log("bench/node/node_modules missing: running `npm ci` there")
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300)

    # -- bookkeeping ---------------------------------------------------------------

    def compare(self, key: str, label: str, target: str, runs: dict[str, Callable[[], Cell]],
                repeats: int = 1) -> None:
        """Run each side's measurement ``repeats`` times, alternating sides, and
        keep each side's best: other processes on a small machine only ever
        make a run slower, so the best run is the least disturbed one."""
        best: dict[str, Cell] = {}
        for _ in range(repeats):
            for side, run in runs.items():
                try:
                    cell = run()
                except Exception as exc:  # noqa: BLE001 - report it, keep benchmarking the rest
                    cell = Cell(note=f"n/a: {type(exc).__name__}: {str(exc)[:300]}")
                self.log(f"{label} / {side}: {fmt_value(cell)} {cell.note}")
                old = best.get(side)
                if old is None or (cell.value is not None and (old.value is None or cell.value > old.value)):
                    best[side] = cell
        row = self.report.row(key, label, target)
        for side, cell in best.items():
            if repeats > 1 and cell.value is not None:
                cell.note = (cell.note + "; " if cell.note else "") + f"best of {repeats}"
            setattr(row, side, cell)

    def sides(self, sessup: str | None, node: str | None) -> dict[str, str]:
        sides = {}
        if sessup:
            sides["sessup"] = sessup
        if node and self.with_node:
            sides["node"] = node
        return sides

    # -- wrk workloads ---------------------------------------------------------------

    def measured_wrk(self, server: Server, path: str, connections: int, script: Path | None = None) -> Cell:
        if self.profile.warmup:
            wrk(server.port, path, connections, self.profile.warmup, script)
        with Meter(server.pids()) as meter:
            cell = wrk(server.port, path, connections, self.profile.duration, script)
        return meter.fill(cell)

    def nosession(self) -> None:
        # A static file never touches the session; the bare app serves the same file the same way.
        self.compare("bare-pyramid", f"bare Pyramid static view GET {STATIC_FILE}, 16 conn", "",
                     {"sessup": lambda: self.measured_wrk(self.server("bare-pyramid"), STATIC_FILE, 16)},
                     self.profile.repeats)
        runs = {side: (lambda name=name: self.measured_wrk(self.server(name), STATIC_FILE, 16))
                for side, name in self.sides("sessup-file", "node-memory").items()}
        self.compare("nosession", f"GET {STATIC_FILE} (never touches the session), 16 conn",
                     "sessup within 10 % of the bare Pyramid app", runs, self.profile.repeats)
        # The demo home page (a Chameleon template) as a first-time visitor gets it.
        runs = {side: (lambda name=name: self.measured_wrk(self.server(name), "/", 16))
                for side, name in self.sides("sessup-file", "node-memory").items()}
        self.compare("home", "GET / home page without cookie, file store, 16 conn", "",
                     runs, self.profile.repeats)

    def session_gets(self, store: str, variant: str = "") -> None:
        # The file store is compared with Express's MemoryStore (its one-machine counterpart).
        node = None if variant else {"memory": "node-memory", "file": "node-memory", "redis": "node-redis"}.get(store)
        sessup, suffix = (f"sessup-{store}+{variant}", f"-{variant}") if variant else (f"sessup-{store}", "")
        scripts: dict[str, tuple[Path, list[str]]] = {}

        def script(name: str) -> tuple[Path, list[str]]:
            # More sessions than connections, so one session's requests rarely overlap.
            if name not in scripts:
                port = self.server(name).port
                cookies = [new_session(port)[0] for _ in range(128)]
                scripts[name] = cookie_pool_script(self.tmp / f"cookies-{name}.lua", "/session", cookies), cookies
            return scripts[name]

        def run(name: str, connections: int) -> Cell:
            server = self.server(name)
            lua, cookies = script(name)
            probe = cookies[0]
            before = views(server.port, probe)[1]
            cell = self.measured_wrk(server, "/session", connections, lua)
            after = views(server.port, probe)[1]
            if after <= before:
                cell.note = (cell.note + "; " if cell.note else "") + f"views did not grow ({before}->{after})"
            return cell

        target = "" if variant else {"redis": "sessup >= express-session + connect-redis",
                                     "file": "sessup >= express-session MemoryStore"}.get(store, "")
        label = f"session GET with cookie, {store} store{', ' + variant if variant else ''}"
        for connections in (16, 64):
            runs = {side: (lambda name=name, c=connections: run(name, c))
                    for side, name in self.sides(sessup, node).items()}
            self.compare(f"session-{store}{suffix}-{connections}", f"{label}, {connections} conn",
                         target, runs, self.profile.repeats)

    # -- uploads -------------------------------------------------------------------

    def upload_headers(self, side: str, server: Server) -> dict[str, str]:
        # sessup requires CSRF on uploads; the express seed had none.
        return csrf_headers(server.port) if side == "sessup" else {}

    def upload_runs(self, fn: Callable[[str, Server, Path], Cell], sessup: str = "sessup-file",
                    node: str | None = "node-memory") -> dict[str, Callable[[], Cell]]:
        def run(side: str, name: str) -> Cell:
            # Start each upload with no dirty pages pending, so one run's writeback
            # (or another workload's) does not throttle the next.
            os.sync()
            return fn(side, self.server(name), self.upload_dir(name))

        return {side: (lambda side=side, name=name: run(side, name))
                for side, name in self.sides(sessup, node).items()}

    # -- uploads into object storage ------------------------------------------------------

    def bucket_sizes(self, server: Server) -> list[int]:
        """Sizes of the stored objects (temporary ones excluded), then empty the bucket."""
        client = s3_client(server.s3.port)  # type: ignore[attr-defined]
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=S3_BUCKET)
        keys = [(o["Key"], o["Size"]) for page in pages for o in page.get("Contents", ())]
        for key, _ in keys:
            client.delete_object(Bucket=S3_BUCKET, Key=key)
        unfinished = client.list_multipart_uploads(Bucket=S3_BUCKET).get("Uploads", ())
        if unfinished:
            raise RuntimeError(f"{len(unfinished)} unfinished multipart upload(s) left in the bucket")
        return [size for key, size in keys if not key.startswith(S3_PREFIX + ".tmp/")]

    def s3_big(self) -> None:
        size = self.profile.big_size

        def run(side: str, server: Server, upload_dir: Path) -> Cell:
            relay: CountingRelay = server.relay  # type: ignore[attr-defined]
            headers = self.upload_headers(side, server)
            time.sleep(1)  # requests a wrk run left in flight finish,
            self.bucket_sizes(server)  # and the bucket starts empty
            sent0 = relay.sent
            with Meter(server.pids()) as meter:
                posted = post_multipart(server.port, [("big.bin", self.big_file)], headers)
            if posted.status != 200:
                raise RuntimeError(f"answer {posted.status} {posted.body[:120]!r}")
            sent = relay.sent - sent0
            stored = self.bucket_sizes(server)
            seconds = posted.seconds
            cell = meter.fill(Cell(value=size / MiB / seconds, unit="MiB/s", p50=seconds, p99=seconds))
            cell.note = (f"sent to S3 {sent / size:.3f}x the file (HTTP included); "
                         f"written to disk {cell.written / size:.2f}x the file (a server's body buffer would show here); "
                         f"last byte sent at {posted.sent:.2f} s, answer {seconds - posted.sent:.2f} s later")
            if stored != [size]:
                cell.note += f"; bucket held {len(stored)} objects, {sum(stored)} bytes (expected one of {size})"
            return cell

        self.compare("upload-big-s3", f"one {size // MiB} MiB upload into S3 (moto_server)",
                     "RSS grows by a few parts (8 MiB each), not the file; sent to S3 ~ 1x the file",
                     self.upload_runs(run, "sessup-s3", None), self.profile.repeats)

    def s3_small(self) -> None:
        boundary = "sessupbench" + secrets.token_hex(16)
        content = os.urandom(4 * KiB)
        heads, tail, _ = multipart_framing([("small.bin", content)], boundary)
        body_file = self.tmp / "small-body-s3.bin"
        body_file.write_bytes(heads[0] + content + b"\r\n" + tail)

        def run(side: str, server: Server, upload_dir: Path) -> Cell:
            script = upload_script(self.tmp / f"upload-{server.name}.lua", body_file,
                                   f"multipart/form-data; boundary={boundary}", self.upload_headers(side, server))
            relay: CountingRelay = server.relay  # type: ignore[attr-defined]
            sent0 = relay.sent
            cell = self.measured_wrk(server, "/upFile", 16, script)
            sent = relay.sent - sent0
            stored = self.bucket_sizes(server)
            per_file = sent / len(stored) if stored else 0
            cell.note = ((cell.note + "; " if cell.note else "") + f"{len(stored)} objects stored; sent to S3 "
                         f"{per_file / KiB:.1f} KiB per stored file (PutObject, CopyObject, DeleteObject, "
                         f"HTTP included; warm-up uploads counted too)")
            return cell

        self.compare("upload-small-s3", "4 KiB single-file uploads into S3 (moto_server), 16 conn", "",
                     self.upload_runs(run, "sessup-s3", None), self.profile.repeats)

    @property
    def big_file(self) -> Path:
        """The big upload's content: random bytes (parsers are much faster on zeros), made once per run."""
        if self._big is None:
            path = self.tmp / "big.bin"
            self.log(f"writing {self.profile.big_size // MiB} MiB of random bytes")
            with open(path, "wb") as f:
                # A PNG's head, so the content-checked row has something to check (libmagic
                # reads only the head; the parser does not care).
                f.write(PNG_HEAD)
                remaining = self.profile.big_size - len(PNG_HEAD)
                while remaining:
                    chunk = os.urandom(min(16 * MiB, remaining))
                    f.write(chunk)
                    remaining -= len(chunk)
            self._big = path
        return self._big

    def upload_big(self) -> None:
        size = self.profile.big_size

        def run(side: str, server: Server, upload_dir: Path) -> Cell:
            big = self.big_file
            headers = self.upload_headers(side, server)
            with Meter(server.pids()) as meter:
                posted = post_multipart(server.port, [("big.bin", big)], headers)
            if posted.status != 200:
                raise RuntimeError(f"answer {posted.status} {posted.body[:120]!r}")
            stored = [p.stat().st_size for p in dir_files(upload_dir)]
            empty_dir(upload_dir)
            seconds = posted.seconds
            cell = meter.fill(Cell(value=size / MiB / seconds, unit="MiB/s", p50=seconds, p99=seconds))
            cell.note = (f"written {cell.written / size:.2f}x the file; last byte sent at {posted.sent:.2f} s, "
                         f"answer {seconds - posted.sent:.2f} s later")
            if stored != [size]:
                cell.note += f"; upload dir held {len(stored)} files, {sum(stored)} bytes (expected one of {size})"
            return cell

        self.compare("upload-big", f"one {size // MiB} MiB upload (random bytes)",
                     "sessup >= 1.5x node MiB/s; RSS < 64 MiB per process; written <= 1.05x the file",
                     self.upload_runs(run), self.profile.repeats)

    def upload_many(self) -> None:
        parts: list[Part] = [(f"f{i:03d}.bin", os.urandom(256 * KiB)) for i in range(200)]

        def run(side: str, server: Server, upload_dir: Path) -> Cell:
            headers = self.upload_headers(side, server)
            with Meter(server.pids()) as meter:
                posted = post_multipart(server.port, parts, headers)
            if posted.status != 200:
                raise RuntimeError(f"answer {posted.status} {posted.body[:120]!r}")
            stored = len(dir_files(upload_dir))
            empty_dir(upload_dir)
            if stored != 200:
                raise RuntimeError(f"upload dir held {stored} files, not 200")
            seconds = posted.seconds
            cell = meter.fill(Cell(value=50 / seconds, unit="MiB/s", p50=seconds, p99=seconds))
            cell.note = f"last byte sent at {posted.sent:.2f} s"
            return cell

        self.compare("upload-many", "200 files x 256 KiB in one request", "sessup time <= node time",
                     self.upload_runs(run), self.profile.many_repeats)

    def upload_small(self) -> None:
        boundary = "sessupbench" + secrets.token_hex(16)
        content = os.urandom(4 * KiB)
        heads, tail, _ = multipart_framing([("small.bin", content)], boundary)
        body_file = self.tmp / "small-body.bin"
        body_file.write_bytes(heads[0] + content + b"\r\n" + tail)

        def run(side: str, server: Server, upload_dir: Path) -> Cell:
            script = upload_script(self.tmp / f"upload-{server.name}.lua", body_file,
                                   f"multipart/form-data; boundary={boundary}", self.upload_headers(side, server))
            cell = self.measured_wrk(server, "/upFile", 16, script)
            count = len(dir_files(upload_dir))
            empty_dir(upload_dir)
            cell.note = (cell.note + "; " if cell.note else "") + f"{count} files stored"
            return cell

        self.compare("upload-small", "4 KiB single-file uploads, 16 conn", "sessup >= node",
                     self.upload_runs(run), self.profile.repeats)

    def upload_checks(self) -> None:
        """The 4 KiB and big uploads again, sessup only, with each file checked
        before it is stored: the content check (libmagic on a PNG's head) and the
        clamd scan (INSTREAM).  Compare with the upload-small and upload-big rows."""
        content = PNG_HEAD + os.urandom(4 * KiB - len(PNG_HEAD))
        boundary = "sessupbench" + secrets.token_hex(16)

        def small(variant: str, filename: str) -> Callable[[], Cell]:
            heads, tail, _ = multipart_framing([(filename, content)], boundary)
            body_file = self.tmp / f"small-body-{variant}.bin"
            body_file.write_bytes(heads[0] + content + b"\r\n" + tail)
            name = f"sessup-file+{variant}"

            def run() -> Cell:
                os.sync()
                server = self.server(name)
                script = upload_script(self.tmp / f"upload-{name}.lua", body_file,
                                       f"multipart/form-data; boundary={boundary}", csrf_headers(server.port))
                clamd0 = self.clamd_cpu() if variant == "scanned" else None
                cell = self.measured_wrk(server, "/upFile", 16, script)
                count = len(dir_files(self.upload_dir(name)))
                empty_dir(self.upload_dir(name))
                cell.note = (cell.note + "; " if cell.note else "") + f"{count} files stored"
                return self._with_clamd_cpu(cell, clamd0)

            return run

        def big(variant: str, filename: str) -> Callable[[], Cell]:
            name = f"sessup-file+{variant}"

            def run() -> Cell:
                os.sync()
                server, size = self.server(name), self.profile.big_size
                empty_dir(self.upload_dir(name))  # late answers of the 4 KiB run
                headers = csrf_headers(server.port)
                clamd0 = self.clamd_cpu() if variant == "scanned" else None
                with Meter(server.pids()) as meter:
                    posted = post_multipart(server.port, [(filename, self.big_file)], headers)
                if posted.status != 200:
                    raise RuntimeError(f"answer {posted.status} {posted.body[:120]!r}")
                stored = [p.stat().st_size for p in dir_files(self.upload_dir(name))]
                empty_dir(self.upload_dir(name))
                cell = meter.fill(Cell(value=size / MiB / posted.seconds, unit="MiB/s", p50=posted.seconds,
                                       p99=posted.seconds))
                cell.note = f"answer {posted.seconds - posted.sent:.2f} s after the last byte"
                if stored != [size]:
                    cell.note += f"; upload dir held {len(stored)} files (expected one of {size} bytes)"
                return self._with_clamd_cpu(cell, clamd0)

            return run

        size = self.profile.big_size // MiB
        self.compare("upload-small-checked", "4 KiB single-file uploads, 16 conn, content check (PNG)", "",
                     {"sessup": small("checked", "small.png")}, self.profile.repeats)
        self.compare("upload-small-scanned", "4 KiB single-file uploads, 16 conn, clamd scan", "",
                     {"sessup": small("scanned", "small.bin")}, self.profile.repeats)
        self.compare("upload-big-checked", f"one {size} MiB upload, content check (PNG)", "",
                     {"sessup": big("checked", "big.png")}, self.profile.repeats)
        self.compare("upload-big-scanned", f"one {size} MiB upload, clamd scan", "",
                     {"sessup": big("scanned", "big.bin")}, self.profile.repeats)

    def _with_clamd_cpu(self, cell: Cell, before: float | None) -> Cell:
        after = self.clamd_cpu()
        if before is not None and after is not None:
            cell.note = (cell.note + "; " if cell.note else "") + f"clamd used {after - before:.2f} s CPU"
        return cell

    # -- increments ------------------------------------------------------------------

    def increments(self, store: str, lock: bool) -> None:
        def run(name: str) -> Cell:
            server = self.server(name)
            kept, bad, times = [], 0, []
            with Meter(server.pids()) as meter:
                for _ in range(self.profile.increment_rounds):
                    cookie, first = new_session(server.port)
                    barrier = threading.Barrier(16)
                    statuses: list[int] = []

                    def one() -> None:
                        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                        try:
                            conn.connect()
                            barrier.wait(10)
                            t0 = time.monotonic()
                            conn.request("GET", "/session", headers={"Cookie": cookie})
                            resp = conn.getresponse()
                            resp.read()
                            times.append(time.monotonic() - t0)
                            statuses.append(resp.status)
                        finally:
                            conn.close()

                    threads = [threading.Thread(target=one) for _ in range(16)]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join(60)
                    bad += sum(1 for s in statuses if s != 200)
                    _, last = views(server.port, cookie)
                    kept.append((last - first - 1) / 16)
            cell = meter.fill(Cell(value=100 * statistics.mean(kept), unit="%",
                                   p50=statistics.median(times), p99=max(times)))
            cell.note = f"{len(kept)} rounds, min {100 * min(kept):.0f} %" + (f", {bad} non-200" if bad else "")
            return cell

        node = None if lock else {"memory": "node-memory", "redis": "node-redis"}.get(store)
        sessup = f"sessup-{store}-lock" if lock else f"sessup-{store}"
        runs = {side: (lambda name=name: run(name)) for side, name in self.sides(sessup, node).items()}
        self.compare(f"increments-{store}-{'lock' if lock else 'nolock'}",
                     f"16 concurrent increments kept, {store} store, lock {'on' if lock else 'off'}",
                     "100 %" if lock else "", runs)

    # -- ceilings ------------------------------------------------------------------

    def ceilings(self) -> None:
        total = self.profile.ceiling_bytes
        self.compare("ceil-tcp", "ceiling: loopback TCP", "", {"sessup": lambda: socket_ceiling(total, None)},
                     self.profile.repeats)
        sink = self.tmp / "ceiling.bin"
        self.compare("ceil-file", "ceiling: raw socket to file", "",
                     {"sessup": lambda: socket_ceiling(min(total, GiB), sink)}, self.profile.repeats)
        with contextlib.suppress(FileNotFoundError):
            sink.unlink()
        self.compare("ceil-wsgi", "ceiling: bare WSGI hello world (gunicorn as configured), 16 conn", "",
                     {"sessup": lambda: self.measured_wrk(self.server("bare-wsgi"), "/", 16)}, self.profile.repeats)

    # -- the run -------------------------------------------------------------------

    def run(self) -> None:
        try:
            if self.wants("ceilings"):
                self.ceilings()
            if self.wants("nosession"):
                self.nosession()
            if self.wants("session"):
                for store in self.stores:
                    self.session_gets(store)
                if "file" in self.stores:
                    self.session_gets("file", "encrypted")  # sessup.session.encrypt = true
            if "file" in self.stores:
                # The big upload last: its gigabytes of dirty pages would slow what follows.
                if self.wants("upload-small"):
                    self.upload_small()
                if self.wants("upload-many"):
                    self.upload_many()
                if self.wants("upload-checks"):
                    self.upload_checks()
                if self.wants("upload-big"):
                    self.upload_big()
            # Object storage only when asked for (--only s3-big,s3-small): it needs the testing extra.
            if "s3-small" in self.only:
                self.s3_small()
            if "s3-big" in self.only:
                self.s3_big()
            if self.wants("increments"):
                for store in self.stores:
                    self.increments(store, lock=False)
                    self.increments(store, lock=True)
        finally:
            self.stop_servers()


def socket_ceiling(total: int, sink: Path | None) -> Cell:
    """MiB/s through a loopback TCP connection, optionally written to a file by the receiver."""
    chunk = 1 * MiB
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    received = [0]

    def receive() -> None:
        conn, _ = listener.accept()
        buf = bytearray(chunk)
        view = memoryview(buf)
        out = open(sink, "wb") if sink else None
        try:
            while received[0] < total:
                n = conn.recv_into(buf)
                if not n:
                    break
                if out:
                    out.write(view[:n])
                received[0] += n
        finally:
            conn.close()
            if out:
                out.close()

    thread = threading.Thread(target=receive)
    thread.start()
    data = memoryview(os.urandom(chunk))
    written0 = write_bytes(os.getpid())
    t0 = time.monotonic()
    with socket.create_connection(listener.getsockname()) as sock:
        for _ in range(total // chunk):
            sock.sendall(data)
    thread.join(120)
    seconds = time.monotonic() - t0
    listener.close()
    cell = Cell(value=received[0] / MiB / seconds, unit="MiB/s", p50=seconds, p99=seconds)
    cell.note = f"{received[0] // MiB} MiB in 1 MiB chunks, one Python thread each side"
    if sink:
        cell.written = write_bytes(os.getpid()) - written0
    return cell


# --------------------------------------------------------------------------- services

def clean_services() -> None:
    """Remove what earlier runs left in Redis db 14 and the bench's PostgreSQL table."""
    with contextlib.suppress(Exception):
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
        for prefix in REDIS_PREFIXES:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i:i + 1000])
        client.close()
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=2, autocommit=True) as conn:
            # The store's table, and the lock table older versions of the store made beside it.
            conn.execute(f"DROP TABLE IF EXISTS {POSTGRES_TABLE}, {POSTGRES_TABLE}_locks")


# --------------------------------------------------------------------------- output

def fmt_num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def fmt_value(cell: Cell | None) -> str:
    if cell is None:
        return "—"
    if cell.value is None:
        return "n/a"
    return f"{fmt_num(cell.value)} {cell.unit}"


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    if n >= GiB:
        return f"{n / GiB:.2f} GiB"
    if n >= MiB:
        return f"{n / MiB:.0f} MiB"
    if n >= KiB:
        return f"{n / KiB:.0f} KiB"
    return f"{n} B"


def cell_columns(cell: Cell | None) -> list[str]:
    if cell is None:
        return ["—"] * 5
    latency = "—" if cell.p50 is None else f"{fmt_time(cell.p50)} / {fmt_time(cell.p99)}"
    cpu = "—" if cell.cpu is None else f"{cell.cpu:.2f}"
    if cell.cpu is not None and cell.unit == "req/s" and cell.value:
        # CPU per request: steadier than req/s when other processes share the machine.
        cpu += f" ({cell.cpu / cell.value * 1e6:,.0f} µs/req)"
    rss = fmt_bytes(cell.rss)
    if cell.rss is not None and cell.rss0:
        rss += f" (from {cell.rss0 // MiB})"  # what the workload added to the process's size
    return [fmt_value(cell), latency, rss, fmt_bytes(cell.written), cpu]


def judge(report: Report, big_size: int) -> None:
    """Fill each row's verdict against the issue's targets."""
    rows = report.rows

    def val(key: str, side: str) -> float | None:
        row = rows.get(key)
        cell = getattr(row, side) if row else None
        return cell.value if cell else None

    for row in rows.values():
        s = row.sessup
        if s is None or s.value is None:
            continue
        n = row.node.value if row.node and row.node.value is not None else None
        if row.key.startswith("session-redis") and n:
            row.verdict = f"{s.value / n:.2f}x node: " + ("met" if s.value >= n else "NOT met")
        elif row.key.startswith("session-file") and n:
            row.verdict = f"{s.value / n:.2f}x node: " + ("met" if s.value >= n else "NOT met")
        elif row.key == "nosession":
            bare = val("bare-pyramid", "sessup")
            if bare:
                row.verdict = f"{s.value / bare:.2f}x bare: " + ("met" if s.value >= 0.9 * bare else "NOT met")
        elif row.key == "upload-big":
            parts = []
            if n:
                parts.append(f"{s.value / n:.2f}x node " + ("met" if s.value >= 1.5 * n else "NOT met"))
            if s.rss is not None:
                parts.append("RSS " + ("met" if s.rss < 64 * MiB else "NOT met"))
            if s.written is not None:
                parts.append(f"written {s.written / big_size:.2f}x "
                             + ("met" if s.written <= 1.05 * big_size else "NOT met"))
            row.verdict = "; ".join(parts)
        elif row.key == "upload-many" and row.node and row.node.p50 and s.p50:
            row.verdict = f"{row.node.p50 / s.p50:.2f}x node speed: " + ("met" if s.p50 <= row.node.p50 else "NOT met")
        elif row.key == "upload-small" and n:
            row.verdict = f"{s.value / n:.2f}x node: " + ("met" if s.value >= n else "NOT met")
        elif row.key.startswith(("upload-small-", "upload-big-")):
            base = val(row.key.rsplit("-", 1)[0], "sessup")
            if base:
                row.verdict = f"{s.value / base:.2f}x without the check"
        elif row.key.startswith("increments") and row.key.endswith("-lock"):
            row.verdict = "met" if s.value >= 100 else "NOT met"


ORDER = (["ceil-tcp", "ceil-file", "ceil-wsgi", "bare-pyramid", "nosession", "home"]
         + [f"session-{s}-{c}" for s in STORES for c in (16, 64)]
         + ["upload-big", "upload-big-checked", "upload-big-scanned", "upload-many", "upload-small",
            "upload-small-checked", "upload-small-scanned", "upload-big-s3", "upload-small-s3"]
         + [f"increments-{s}-{m}" for s in STORES for m in ("nolock", "lock")])


def render(report: Report, machine: dict[str, str], profile_name: str) -> str:
    head = ["workload", "sessup", "p50 / p99", "peak RSS", "written", "CPU",
            "node", "p50 / p99", "peak RSS", "written", "CPU", "target", "notes"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = [k for k in ORDER if k in report.rows] + [k for k in report.rows if k not in ORDER]
    for key in keys:
        row = report.rows[key]
        notes = "; ".join(f"{side}: {c.note}" for side, c in (("sessup", row.sessup), ("node", row.node))
                          if c is not None and c.note)
        target = row.target + (f" → **{row.verdict}**" if row.verdict else "")
        notes = " ".join(notes.replace("|", "/").split())
        cols = [row.label] + cell_columns(row.sessup) + cell_columns(row.node) + [target, notes]
        lines.append("| " + " | ".join(cols) + " |")
    info = ", ".join(f"{k}: {v}" for k, v in machine.items())
    return f"Run ({profile_name}) {info}\n\n" + "\n".join(lines) + "\n"


def update_readme(table: str, readme: Path = HERE / "README.md") -> None:
    text = readme.read_text()
    start, end = "<!-- latest-table -->\n", "<!-- /latest-table -->"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    readme.write_text(head + start + table + end + tail)


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = match.group(1).strip() if match else cpu
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip() if shutil.which("node") else "absent"
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("[")[0].strip()
    from importlib.metadata import version

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": str(os.cpu_count()),
        "CPU": cpu,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "gunicorn": version("gunicorn"),
        "Node": node,
        "wrk": wrk_version,
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (under a minute), 256 MiB big upload")
    parser.add_argument("--tiny", action="store_true",
                        help="only check that the code runs: 1 s runs, 8 MiB big upload (numbers meaningless)")
    parser.add_argument("--only", default="", help="comma-separated workloads: " + ", ".join(WORKLOADS))
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated sessup stores")
    parser.add_argument("--no-node", action="store_true", help="skip the Node anchor")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, uploads)")
    parser.add_argument("--update-readme", action="store_true",
                        help="write the table into bench/README.md (between its latest-table markers)")
    args = parser.parse_args(argv)

    only = {w.strip() for w in args.only.split(",") if w.strip()}
    unknown = only - set(WORKLOADS)
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if unknown or set(stores) - set(STORES):
        parser.error(f"unknown workload or store: {sorted(unknown | (set(stores) - set(STORES)))}")
    if not shutil.which("wrk"):
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    profile = TINY if args.tiny else QUICK if args.quick else FULL
    machine = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="sessup-bench-"))
    clean_services()
    bench = Bench(profile, only, stores, not args.no_node and shutil.which("node") is not None, tmp)
    started = time.monotonic()
    try:
        bench.run()
    finally:
        clean_services()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    judge(bench.report, profile.big_size)
    machine["run time"] = f"{time.monotonic() - started:.0f} s"
    table = render(bench.report, machine, "tiny" if args.tiny else "quick" if args.quick else "full")
    print(table)
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (RESULTS / f"{stamp}.md").write_text(table)
    if args.update_readme:
        update_readme(table)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(
        {"machine": machine, "profile": asdict(profile), "rows": [asdict(r) for r in bench.report.rows.values()]},
        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
