"""Helpers shared by the tests: real servers in subprocesses and service checks."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NoReturn, Sequence

import pytest

ROOT = Path(__file__).resolve().parent.parent
PSERVE = str(Path(sys.executable).with_name("pserve"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REDIS_URL = os.environ.get("SESSUP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get("SESSUP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_answers(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def unavailable(message: str) -> NoReturn:
    """Something a test needs is missing: skip on a developer machine, fail
    under CI=true (a skip there would hide a missing install or start step)."""
    if IN_CI:
        pytest.fail(message + " (CI=true: what a test needs must be there)")
    pytest.skip(message)


def require_service(name: str, host: str, port: int) -> None:
    """Return if the service answers; otherwise :func:`unavailable`."""
    if not port_answers(host, port):
        unavailable(f"{name} is not answering on {host}:{port}")


def write_ini(directory: Path, overrides: dict[str, str], base: str = "testing.ini", port: int | None = None) -> Path:
    """Write an INI derived from ``base`` with ``[app:main]`` keys overridden and a listen port."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep key case
    parser.read(ROOT / base)
    for key, value in overrides.items():
        parser.set("app:main", key, value)
    if port is not None:
        parser.set("server:main", "listen", f"127.0.0.1:{port}")
    path = directory / "test.ini"
    with open(path, "w") as f:
        parser.write(f)
    return path


def write_production_ini(directory: Path, overrides: dict[str, str], server: dict[str, str] | None = None,
                         name: str = "production.ini") -> Path:
    """``production.ini`` as shipped (gunicorn, its logging), with ``[app:main]``
    keys overridden; the port comes from pserve's ``http_port`` variable
    (:func:`start_production`)."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep key case
    parser.read(ROOT / "production.ini")
    for key, value in overrides.items():
        parser.set("app:main", key, value)
    for key, value in (server or {}).items():
        parser.set("server:main", key, value)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with open(path, "w") as f:
        parser.write(f)
    return path


#: SESSUP_SECRET for production-profile servers (production.ini refuses to start without one).
PRODUCTION_SECRET = "production-profile-test-secret-7c0b1e5a9d2f4e6a8b3c"


def start_production(ini: Path, port: int, env: dict[str, str] | None = None, **kw: object) -> Server:
    """``pserve production.ini http_port=PORT`` (gunicorn: a master and its workers)."""
    return start_server(ini, port, env={"SESSUP_SECRET": PRODUCTION_SECRET, **(env or {})},  # type: ignore[arg-type]
                        args=[f"http_port={port}"], **kw)


class Server:
    """A real ``pserve`` process (waitress; or gunicorn's master, whose workers are :meth:`children`)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self) -> list[int]:
        """PIDs of the processes this one started (gunicorn's workers)."""
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                return [int(pid) for pid in f.read().split()]
        except FileNotFoundError:
            return []

    def pids(self) -> list[int]:
        """This process and its children."""
        return [self.pid, *self.children()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def kill9(self) -> None:
        """SIGKILL; then wait (bounded) for its children, which notice their
        parent is gone and exit by themselves (gunicorn's workers within a second)."""
        children = self.children()
        self.proc.kill()
        self.proc.wait(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(exited(pid) for pid in children):
            time.sleep(0.05)


def io_written(pids: Sequence[int]) -> int:
    """Bytes the processes sent to storage so far (``write_bytes`` of ``/proc/PID/io``)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("write_bytes:"))
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def exited(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return True


def start_server(ini: Path, port: int, env: dict[str, str] | None = None, cwd: Path | None = None,
                 timeout: float = 30.0, args: Sequence[str] = (), probe: str = "/",
                 pserve: str = PSERVE) -> Server:
    """Start ``pserve ini *args`` and wait until ``probe`` answers HTTP on ``port``."""
    log_path = Path(tempfile.mkstemp(prefix="pserve-", suffix=".log")[1])
    full_env = {**os.environ, **(env or {})}
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([pserve, str(ini), *args], cwd=str(cwd or ini.parent), env=full_env,
                                stdout=log, stderr=subprocess.STDOUT)
    server = Server(proc, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pserve exited with {proc.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url + probe, timeout=5) as res:
                res.read()
            return server
        except urllib.error.HTTPError as exc:  # an HTTP answer, even an error, means it is up
            exc.close()
            return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"pserve did not answer on port {port} within {timeout}s:\n{server.log()}")


@contextmanager
def running_server(ini: Path, port: int, **kw: object) -> Iterator[Server]:
    server = start_server(ini, port, **kw)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
