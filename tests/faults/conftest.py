"""Private Redis and PostgreSQL servers the fault tests may stop and start.

The machine's shared Redis (6379) and PostgreSQL (5432) serve other tests at
the same time, so they are never stopped here: each fault test starts its own
``redis-server`` on a free port, and one PostgreSQL cluster (``initdb`` into a
temporary directory) serves this test session on another free port.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from ..support import free_port, port_answers, unavailable


def require_binary(path: str | None, what: str) -> str:
    """The binary, or skip (fail under CI=true) when it is not installed."""
    if path and os.access(path, os.X_OK):
        return path
    unavailable(f"{what} is not installed")


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


class OwnRedis:
    """A ``redis-server`` on a free port whose data survives a crash.

    ``--appendonly yes --appendfsync always``: Redis appends every write to its
    log and fsyncs it before acknowledging it, so a write the app saw succeed
    is on disk even if the server is killed with SIGKILL (which is how
    :meth:`crash` stops it: the harshest outage, no chance to save).
    """

    def __init__(self, directory: Path) -> None:
        self.binary = require_binary(shutil.which("redis-server"), "redis-server")
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = directory / "redis.log"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory),
             "--daemonize", "no", "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self._ping(), 20, f"redis-server on port {self.port}")

    def _ping(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1).ping())
        except redis.RedisError:
            return False

    def crash(self) -> None:
        """SIGKILL: the server vanishes mid-traffic, without a shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        wait_until(lambda: not port_answers("127.0.0.1", self.port, 0.2), 10, "redis port to close")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    directory = tmp_path / "redis"
    directory.mkdir()
    server = OwnRedis(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class OwnPostgres:
    """A private PostgreSQL cluster (trust auth, user postgres) on a free port.

    Run as the ``postgres`` user when the tests run as root (``initdb`` refuses
    root).  :meth:`stop` is ``pg_ctl stop -m fast``: clients are disconnected,
    committed data is checkpointed.
    """

    def __init__(self) -> None:
        candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                            key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
        initdb = require_binary(candidates[-1] if candidates else None, "PostgreSQL (initdb)")
        self.bindir = Path(initdb).parent
        self.base = Path(tempfile.mkdtemp(prefix="sessup-faults-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        os.chmod(self.base, 0o700)

    def _run(self, *argv: str, timeout: float = 120) -> None:
        command = list(argv)
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
                   "-c max_connections=60 -c shared_buffers=16MB")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def cleanup(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except RuntimeError:
                pass
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[OwnPostgres]:
    cluster = OwnPostgres()
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def own_postgres(postgres_cluster: OwnPostgres) -> Iterator[OwnPostgres]:
    """The private cluster, running; restarted after a test that left it stopped."""
    if not postgres_cluster.running():
        postgres_cluster.start()
    yield postgres_cluster
    if not postgres_cluster.running():
        postgres_cluster.start()
