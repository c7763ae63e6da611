#!/usr/bin/env python
"""Soak test: ``pserve production.ini`` under a mixed load, then a resource check.

    .venv/bin/python bench/soak.py            # 64 connections for 60 s
    .venv/bin/python bench/soak.py --quick    # 10 s
    .venv/bin/python bench/soak.py --seconds 600 --connections 64

What it does:

1. Copies ``production.ini`` into a fresh temporary directory, listening on a
   free 127.0.0.1 port, with the session files, the upload directory and the
   server's ``TMPDIR`` inside that directory, and starts ``pserve`` on it with
   a random 48-character ``SESSUP_SECRET`` (as a deployment would).
2. Warms the server up with the same mix for a few seconds, lets it settle,
   and takes a baseline, summed over its processes (gunicorn's master and
   workers), of its open descriptors (the file session store's lock files,
   which it keeps open per worker thread and stripe, are counted apart and
   checked against that bound), descriptors of deleted files (a server that
   spools request bodies keeps them in anonymous temporary files), files in
   the upload directory's ``.tmp``, files in its ``TMPDIR`` and its RSS.
3. Runs N connections (threads, one keep-alive connection and one session
   each) for the given time, mixing: session writes (``GET /session``) and
   reads (``GET /csrf``), 4 KiB and 5 MiB uploads to ``POST /upFile`` with
   the CSRF header, form posts to ``POST /upload`` (when that route exists),
   downloads of uploaded files (checked byte for byte by sha256), and 10 % of
   the uploads aborted midway (raw socket: headers and half the body, then
   close).  Each client keeps its last 8 uploads for downloads and deletes
   older ones from the upload directory, so disk use stays bounded.
4. Reports requests, 5xx, unexpected answers, p50/p99 latency, and the
   resources again after the server settles.  Exit status 1 if any 5xx or
   unexpected answer, or if descriptors, temporary files or upload temps did
   not return to the baseline, or RSS is not within 10 % of it.

Only 127.0.0.1 is contacted; the load is bounded by ``--seconds`` and
``--max-requests``.  The temporary directory is removed at the end
(``--keep`` keeps it for inspection).
"""
from __future__ import annotations

import argparse
import configparser
import hashlib
import http.client
import json
import os
import random
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PSERVE = Path(sys.executable).with_name("pserve")
KiB = 1024
MiB = 1024 * KiB
HOST = "127.0.0.1"
REQUEST_TIMEOUT = 60.0
#: Share of each operation in the mix (uploads: 10 % of them are aborted).
MIX = {"session": 30, "csrf": 20, "upload_small": 20, "upload_big": 4, "form": 6, "download": 20}
ABORT_SHARE = 0.10
#: Uploaded files each client keeps for downloads; older ones are deleted
#: from the upload directory (disk use stays bounded on long runs).
KEEP_PER_WORKER = 8
RSS_TOLERANCE = 0.10
#: glibc's dynamic mmap threshold lets a threaded server keep freed request
#: buffers in its malloc arenas, so its idle RSS wanders by +-15 % from one
#: idle moment to the next with no leak at all.  A fixed threshold returns
#: every buffer of 128 KiB or more to the system when freed, so idle RSS is
#: steady and the 10 % check detects leaks rather than allocator noise.
#: ``--glibc-defaults`` runs without it.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
SERVER_ENV: dict[str, str] = dict(MALLOC_ENV)


# --------------------------------------------------------------------------- the server

def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def write_ini(tmp: Path, port: int) -> Path:
    """production.ini with only the port and the data paths changed."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    parser.read(ROOT / "production.ini")
    parser.set("app:main", "sessup.session.file.path", str(tmp / "sessions"))
    parser.set("app:main", "sessup.upload.path", str(tmp / "uploads"))
    parser.set("server:main", "port", str(port))
    ini = tmp / "production.ini"
    with open(ini, "w") as f:
        parser.write(f)
    return ini


class Server:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.ini = write_ini(tmp, self.port)
        self.systmp = tmp / "systmp"
        self.systmp.mkdir()
        self.upload_tmp = tmp / "uploads" / ".tmp"
        self.lock_dir = tmp / "sessions" / ".merge"
        self.threads = int(_server_option(self.ini, "threads", "4"))
        self.log_path = tmp / "pserve.log"
        alphabet = string.ascii_letters + string.digits
        env = {**os.environ, **SERVER_ENV, "SESSUP_SECRET": "".join(secrets.choice(alphabet) for _ in range(48)),
               "TMPDIR": str(self.systmp)}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([str(PSERVE), str(self.ini)], cwd=str(tmp), env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid  # gunicorn's master; its workers are children

    def pids(self) -> list[int]:
        """The master and its workers."""
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                return [self.pid, *(int(p) for p in f.read().split())]
        except FileNotFoundError:
            return [self.pid]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pserve exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                status, _, _ = request(self.port, "GET", "/session")
                if status:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"pserve did not answer within {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        self._log.close()


@dataclass
class Resources:
    fds: int
    deleted_fds: int
    sockets: int
    upload_temps: int
    system_temps: int
    rss: int
    #: Descriptors of the file session store's lock files (``.merge/NN.lock``),
    #: which it keeps open per worker thread and stripe: bounded, not a leak.
    lock_fds: int = 0

    @property
    def other_fds(self) -> int:
        return self.fds - self.lock_fds

    @classmethod
    def of(cls, server: Server) -> Resources:
        """Summed over the server's processes (gunicorn's master and workers)."""
        fds = deleted = sockets = locks = rss = 0
        lock_prefix = str(server.lock_dir) + os.sep
        for pid in server.pids():
            fd_dir = f"/proc/{pid}/fd"
            try:
                names = os.listdir(fd_dir)
                with open(f"/proc/{pid}/status") as f:
                    rss += next(int(line.split()[1]) * KiB for line in f if line.startswith("VmRSS:"))
            except OSError:
                continue  # a worker that was just replaced
            for name in names:
                try:
                    target = os.readlink(os.path.join(fd_dir, name))
                except OSError:
                    continue  # closed meanwhile
                fds += 1
                deleted += target.endswith("(deleted)")
                sockets += target.startswith("socket:")
                locks += target.startswith(lock_prefix) and target.endswith(".lock")
        return cls(fds, deleted, sockets, _count_files(server.upload_tmp), _count_files(server.systmp), rss, locks)


def _server_option(ini: Path, key: str, default: str) -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ini)
    return parser.get("server:main", key, fallback=default)


def lock_fd_bound(threads: int, processes: int = 1) -> int:
    """Most lock-file descriptors the file store may hold: one per worker
    thread and stripe (plus the main thread's, from start-up), per process."""
    try:
        from pyramid_sessup.stores import file as file_store
        stripes = int(getattr(file_store, "_STRIPES", 16))
    except ImportError:  # pragma: no cover - the soak runs in the project's venv
        stripes = 16
    return (threads + 1) * stripes * processes


def _count_files(path: Path) -> int:
    try:
        return sum(1 for _ in os.scandir(path))
    except FileNotFoundError:
        return 0


# --------------------------------------------------------------------------- HTTP

def request(port: int, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@dataclass(frozen=True)
class Body:
    """A prebuilt multipart body (shared read-only by all workers)."""

    data: bytes
    content_type: str
    sha256: str
    size: int


def multipart(payload: bytes, filename: str, fields: dict[str, str] | None = None) -> Body:
    boundary = "----soak" + secrets.token_hex(12)
    parts = []
    for name, value in (fields or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="inputFile"; filename="{filename}"\r\n'
                 f'Content-Type: application/octet-stream\r\n\r\n'.encode() + payload + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return Body(b"".join(parts), f"multipart/form-data; boundary={boundary}",
                hashlib.sha256(payload).hexdigest(), len(payload))


@dataclass
class Stats:
    """Counters of one worker (merged at the end; no locking on the hot path)."""

    latencies: list[float] = field(default_factory=list)
    by_op: dict[str, int] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    transport_errors: int = 0
    aborted: int = 0
    bytes_up: int = 0
    bytes_down: int = 0

    def merge(self, other: Stats) -> None:
        self.latencies += other.latencies
        for k, v in other.by_op.items():
            self.by_op[k] = self.by_op.get(k, 0) + v
        for s, v in other.statuses.items():
            self.statuses[s] = self.statuses.get(s, 0) + v
        self.unexpected += other.unexpected
        self.transport_errors += other.transport_errors
        self.aborted += other.aborted
        self.bytes_up += other.bytes_up
        self.bytes_down += other.bytes_down


class Worker:
    """One client connection with its own session, looping over the mix."""

    def __init__(self, port: int, bodies: dict[str, Body], forms: bool, rng: random.Random,
                 upload_dir: Path) -> None:
        self.port = port
        self.upload_dir = upload_dir
        self.bodies = bodies
        self.forms = forms
        self.rng = rng
        self.conn: http.client.HTTPConnection | None = None
        self.cookie = ""
        self.jar: dict[str, str] = {}
        self.token = ""
        self.stored: list[tuple[str, Body]] = []  # (url, body it came from); at most KEEP_PER_WORKER
        self.stats = Stats()
        ops = [op for op in MIX if forms or op != "form"]
        self.ops = ops
        self.weights = [MIX[op] for op in ops]

    # -- plumbing ----------------------------------------------------------------------

    def _send(self, op: str, method: str, path: str, body: bytes | None = None,
              headers: dict[str, str] | None = None, expect: tuple[int, ...] = (200,)) -> tuple[int, dict[str, str], bytes] | None:
        hdrs = dict(headers or {})
        if self.cookie:
            hdrs["Cookie"] = self.cookie
        start = time.perf_counter()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(HOST, self.port, timeout=REQUEST_TIMEOUT)
            self.conn.request(method, path, body=body, headers=hdrs)
            resp = self.conn.getresponse()
            data = resp.read()
            status = resp.status
            rheaders = {k.lower(): v for k, v in resp.getheaders()}
            if resp.will_close:
                self._drop()
        except (OSError, http.client.HTTPException) as exc:
            self._drop()
            self.stats.transport_errors += 1
            self.stats.unexpected.append(f"{op} {method} {path}: {type(exc).__name__}: {exc}")
            return None
        self.stats.latencies.append(time.perf_counter() - start)
        self.stats.by_op[op] = self.stats.by_op.get(op, 0) + 1
        self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
        self.stats.bytes_up += len(body or b"")
        self.stats.bytes_down += len(data)
        for key, value in resp.getheaders():  # the session cookie and the CSRF nonce cookie
            if key.lower() == "set-cookie":
                name, _, rest = value.split(";", 1)[0].partition("=")
                self.jar[name] = rest
        self.cookie = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        if status not in expect:
            self.stats.unexpected.append(f"{op} {method} {path}: {status} {data[:200]!r}")
            return None
        return status, rheaders, data

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        self._drop()

    # -- operations --------------------------------------------------------------------

    def ensure_token(self) -> bool:
        if self.token:
            return True
        answer = self._send("csrf", "GET", "/csrf", headers={"Accept": "application/json"})
        if answer is None:
            return False
        self.token = json.loads(answer[2])["csrf_token"]
        return True

    def run_one(self) -> None:
        op = self.rng.choices(self.ops, self.weights)[0]
        if op == "session":
            self._send(op, "GET", "/session", headers={"Accept": "application/json"})
        elif op == "csrf":
            self._send(op, "GET", "/csrf", headers={"Accept": "application/json"})
        elif op == "download":
            if not self.stored:
                op = "upload_small"
            else:
                self.download()
                return
        if op in ("upload_small", "upload_big"):
            body = self.bodies["small" if op == "upload_small" else "big"]
            if self.rng.random() < ABORT_SHARE:
                self.abort_upload(body)
            else:
                self.upload(op, body)
        elif op == "form":
            self.form_post()

    def upload(self, op: str, body: Body) -> None:
        if not self.ensure_token():
            return
        answer = self._send(op, "POST", "/upFile", body=body.data, headers={
            "Content-Type": body.content_type, "X-CSRF-Token": self.token, "Accept": "application/json"})
        if answer is None:
            return
        info = json.loads(answer[2])["files"][0]
        if info["sha256"] != body.sha256 or info["size"] != body.size:
            self.stats.unexpected.append(f"{op}: server computed {info['size']} bytes {info['sha256']}")
        if len(self.stored) < KEEP_PER_WORKER:
            self.stored.append((info["url"], body))
        else:
            slot = self.rng.randrange(KEEP_PER_WORKER)
            self.forget(self.stored[slot][0])
            self.stored[slot] = (info["url"], body)

    def forget(self, url: str) -> None:
        """Delete a stored file this client will not download again, as an
        operator's clean-up would, so a long soak does not fill the disk."""
        name = url.rsplit("/", 1)[1]
        for path in (self.upload_dir / name, self.upload_dir / ".meta" / f"{name}.json"):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def download(self) -> None:
        url, body = self.rng.choice(self.stored)
        answer = self._send("download", "GET", url)
        if answer is not None and hashlib.sha256(answer[2]).hexdigest() != body.sha256:
            self.stats.unexpected.append(f"download {url}: content differs from what was uploaded")

    def form_post(self) -> None:
        if not self.ensure_token():
            return
        body = multipart(self.bodies["small"].data[:4 * KiB], "form.bin",
                         {"csrf_token": self.token, "description": "soak"})
        self._send("form", "POST", "/upload", body=body.data, headers={"Content-Type": body.content_type})

    def abort_upload(self, body: Body) -> None:
        """Headers and half the body over a raw socket, then close."""
        if not self.ensure_token():
            return
        head = (f"POST /upFile HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nContent-Type: {body.content_type}\r\n"
                f"Content-Length: {len(body.data)}\r\nX-CSRF-Token: {self.token}\r\nCookie: {self.cookie}\r\n"
                f"Accept: application/json\r\n\r\n").encode()
        try:
            with socket.create_connection((HOST, self.port), timeout=REQUEST_TIMEOUT) as s:
                s.sendall(head)
                s.sendall(memoryview(body.data)[: len(body.data) // 2])
        except OSError as exc:
            self.stats.transport_errors += 1
            self.stats.unexpected.append(f"aborted upload: {type(exc).__name__}: {exc}")
            return
        self.stats.aborted += 1


def drive(port: int, connections: int, seconds: float, max_requests: int, bodies: dict[str, Body],
          forms: bool, seed: int, upload_dir: Path) -> tuple[Stats, float]:
    """Run ``connections`` workers until ``seconds`` pass or ``max_requests`` are made."""
    deadline = time.monotonic() + seconds
    budget = [max_requests]
    budget_lock = threading.Lock()
    workers = [Worker(port, bodies, forms, random.Random(seed + i), upload_dir) for i in range(connections)]

    def take() -> bool:
        with budget_lock:
            if budget[0] <= 0:
                return False
            budget[0] -= 1
            return True

    def loop(worker: Worker) -> None:
        try:
            while time.monotonic() < deadline and take():
                worker.run_one()
        finally:
            worker.close()

    threads = [threading.Thread(target=loop, args=(w,), daemon=True) for w in workers]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline + REQUEST_TIMEOUT * 2 - time.monotonic()))
    elapsed = time.monotonic() - start
    total = Stats()
    for w in workers:
        total.merge(w.stats)
    hung = sum(t.is_alive() for t in threads)
    if hung:
        total.unexpected.append(f"{hung} client thread(s) still waiting for an answer")
    return total, elapsed


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class RssSampler:
    """The server's resources every ``every`` seconds while the load runs
    (peaks show the checks look at live resources: spooled bodies, temps)."""

    def __init__(self, server: Server, every: float = 1.0) -> None:
        self.server, self.every = server, every
        self.resources: list[Resources] = [Resources.of(server)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def samples(self) -> list[int]:
        return [r.rss for r in self.resources]

    def peak(self, attribute: str) -> int:
        return max(getattr(r, attribute) for r in self.resources)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.resources.append(Resources.of(self.server))
            except (OSError, StopIteration):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def settle(server: Server, baseline: Resources, seconds: float) -> Resources:
    """Wait up to ``seconds`` for descriptors and temp files to return to the baseline."""
    deadline = time.monotonic() + seconds
    time.sleep(min(3.0, seconds))
    now = Resources.of(server)
    while time.monotonic() < deadline and not _back(now, baseline):
        time.sleep(0.5)
        now = Resources.of(server)
    return now


def _back(now: Resources, base: Resources) -> bool:
    return (now.other_fds <= base.other_fds and now.deleted_fds <= base.deleted_fds and now.upload_temps <= base.upload_temps
            and now.system_temps <= base.system_temps)


# --------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the measured run (default 60)")
    parser.add_argument("--quick", action="store_true", help="a 10-second run (overrides --seconds)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (default 64)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds, same mix and connections (default 5)")
    parser.add_argument("--settle", type=float, default=20.0,
                        help="seconds the server gets to return to the baseline after the run (default 20)")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="upper bound on requests")
    parser.add_argument("--seed", type=int, default=1, help="seed of the operation mix")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--glibc-defaults", action="store_true",
                        help=f"start the server without {' '.join(f'{k}={v}' for k, v in MALLOC_ENV.items())} "
                             "(idle RSS then varies by about 15 %% between idle moments)")
    args = parser.parse_args(argv)
    if args.glibc_defaults:
        for key in MALLOC_ENV:
            SERVER_ENV.pop(key, None)
    seconds = 10.0 if args.quick else args.seconds
    warmup = args.warmup if args.warmup is not None else 5.0
    if not 1 <= args.connections <= 256 or seconds <= 0:
        parser.error("--connections must be 1..256 and --seconds positive")

    tmp = Path(tempfile.mkdtemp(prefix="sessup-soak-"))
    server = Server(tmp)
    failures: list[str] = []
    try:
        server.wait_ready()
        status, _, _ = request(server.port, "GET", "/upload")
        forms = status == 200
        rng = random.Random(args.seed)
        bodies = {"small": multipart(rng.randbytes(4 * KiB), "small.bin"),
                  "big": multipart(rng.randbytes(5 * MiB), "big.bin")}
        print(f"pserve production.ini (pids {server.pids()}) on {HOST}:{server.port}; data in {tmp}")
        print("server environment: SESSUP_SECRET (random, 48 characters), TMPDIR=<data>/systmp"
              + "".join(f", {k}={v}" for k, v in SERVER_ENV.items()))
        print(f"mix: {', '.join(f'{k} {v}' for k, v in MIX.items() if forms or k != 'form')} "
              f"(weights); {int(ABORT_SHARE * 100)} % of uploads aborted midway")
        if not forms:
            print(f"form posts skipped: GET /upload answered {status} (no upload form route)")

        upload_dir = tmp / "uploads"
        warm, _ = drive(server.port, args.connections, warmup, args.max_requests, bodies, forms, args.seed + 10_000,
                        upload_dir)
        if warm.unexpected:
            failures.append(f"warm-up: {len(warm.unexpected)} unexpected answers, e.g. {warm.unexpected[0]}")
        time.sleep(3.0)
        baseline = Resources.of(server)
        print(f"warm-up: {len(warm.latencies)} requests in {warmup:.0f} s; baseline taken 3 s later")

        sampler = RssSampler(server)
        stats, elapsed = drive(server.port, args.connections, seconds, args.max_requests, bodies, forms, args.seed,
                               upload_dir)
        sampler.stop()
        after = settle(server, baseline, args.settle)
        if server.proc.poll() is not None:
            failures.append(f"the server exited with {server.proc.returncode}")

        n5xx = sum(v for s, v in stats.statuses.items() if s >= 500)
        print()
        print(f"run: {args.connections} connections, {elapsed:.1f} s")
        print(f"requests:        {len(stats.latencies)} ({len(stats.latencies) / elapsed:.0f}/s) "
              f"+ {stats.aborted} aborted uploads")
        print("by operation:    " + ", ".join(f"{k} {v}" for k, v in sorted(stats.by_op.items())))
        print("statuses:        " + ", ".join(f"{k}: {v}" for k, v in sorted(stats.statuses.items())))
        print(f"5xx:             {n5xx}")
        print(f"unexpected:      {len(stats.unexpected)} (transport errors {stats.transport_errors})")
        for line in stats.unexpected[:10]:
            print(f"                 {line}")
        print(f"latency:         p50 {percentile(stats.latencies, 0.50) * 1000:.1f} ms, "
              f"p99 {percentile(stats.latencies, 0.99) * 1000:.1f} ms")
        print(f"RSS during run:  peak {max(sampler.samples) / MiB:.1f} MiB; every {sampler.every:.0f} s: "
              + " ".join(f"{v / MiB:.0f}" for v in sampler.samples[:: max(1, len(sampler.samples) // 12)]))
        print(f"peaks during run: {sampler.peak('fds')} descriptors, {sampler.peak('deleted_fds')} of deleted "
              f"files (spooled bodies), {sampler.peak('upload_temps')} upload temps")
        print(f"traffic:         {stats.bytes_up / MiB:.0f} MiB up, {stats.bytes_down / MiB:.0f} MiB down")
        print()
        print(f"{'resource':<34}{'baseline':>12}{'after':>12}  check")
        bound = lock_fd_bound(server.threads, len(server.pids()))
        rows = [
            ("open descriptors", baseline.fds, after.fds, True),
            (f"  session lock files (bound {bound})", baseline.lock_fds, after.lock_fds, after.lock_fds <= bound),
            ("  all others", baseline.other_fds, after.other_fds, after.other_fds <= baseline.other_fds),
            ("  of which sockets", baseline.sockets, after.sockets, True),
            ("descriptors of deleted files", baseline.deleted_fds, after.deleted_fds,
             after.deleted_fds <= baseline.deleted_fds),
            ("files in TMPDIR", baseline.system_temps, after.system_temps,
             after.system_temps <= baseline.system_temps),
            ("files in <upload dir>/.tmp", baseline.upload_temps, after.upload_temps,
             after.upload_temps <= baseline.upload_temps),
        ]
        for name, base, now, ok in rows:
            print(f"{name:<34}{base:>12}{now:>12}  {'ok' if ok else 'FAIL'}")
            if not ok:
                failures.append(f"{name}: {now} after the run, {base} before")
        rss_ok = after.rss <= baseline.rss * (1 + RSS_TOLERANCE)
        change = (after.rss - baseline.rss) / baseline.rss * 100
        print(f"{'RSS (MiB)':<34}{baseline.rss / MiB:>12.1f}{after.rss / MiB:>12.1f}  "
              f"{'ok' if rss_ok else 'FAIL'} ({change:+.1f} %, limit +{RSS_TOLERANCE * 100:.0f} %)")
        if not rss_ok:
            failures.append(f"RSS grew {change:+.1f} %")
        if n5xx:
            failures.append(f"{n5xx} answers were 5xx")
        if stats.unexpected:
            failures.append(f"{len(stats.unexpected)} unexpected answers or transport errors")
        log = server.log_path.read_text(errors="replace")
        if "Traceback" in log:
            failures.append("the server logged a traceback")
        print()
        log_lines = [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]
        print(f"server log: {len(log.splitlines())} lines, {len(log_lines)} error lines "
              f"({len(server.pids())} processes, {server.threads} threads each, {args.connections} connections)")
        for line in log_lines[:5]:
            print(f"    {line}")
    except Exception as exc:  # report, clean up, fail
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        server.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    if failures:
        print("SOAK FAILED:")
        for failure in failures:
            print(f"  - {failure}")
        return 1
    print("SOAK PASSED: 0 5xx, every resource back at its baseline (the file store's per-thread lock "
          "descriptors within their bound), RSS within 10 %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
