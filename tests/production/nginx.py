"""Debian's real nginx, run by the tests as their own process on loopback.

The site configuration is ``deploy/nginx.conf`` as shipped; only what ties it
to a machine is replaced (listen addresses, the upstream port, the certificate
paths), and each replacement must match exactly once, so the tests notice when
the file changes shape.  The ``nginx.conf`` around it (pid file, logs, temp
paths under a temporary prefix) is the tests' own.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

from ..support import ROOT, free_port, port_answers, unavailable

SITE = ROOT / "deploy" / "nginx.conf"


def nginx_binary() -> str:
    path = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(path, os.X_OK):
        unavailable("nginx is not installed (scripts/test.sh installs Debian's nginx)")
    return path


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 (the client does not verify it)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def _replace_once(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"deploy/nginx.conf: expected exactly one match of {pattern!r}, found {count}"
    return new


def render_site(upstream_port: int, https_port: int, http_port: int, cert: Path, key: Path) -> str:
    text = SITE.read_text()
    text = _replace_once(text, r"^(\s*server )127\.0\.0\.1:6543;", rf"\g<1>127.0.0.1:{upstream_port};")
    text = _replace_once(text, r"^(\s*listen )80;", rf"\g<1>127.0.0.1:{http_port};")
    text = _replace_once(text, r"^(\s*listen )443 ssl;", rf"\g<1>127.0.0.1:{https_port} ssl;")
    text = _replace_once(text, r"^(\s*ssl_certificate ).*;", rf"\g<1>{cert};")
    text = _replace_once(text, r"^(\s*ssl_certificate_key ).*;", rf"\g<1>{key};")
    return text


class Nginx:
    """nginx in front of ``upstream_port``, answering HTTPS on :attr:`port`."""

    def __init__(self, upstream_port: int) -> None:
        self.binary = nginx_binary()
        # Not under pytest's 0700 tmp: nginx's workers may run as another user.
        self.prefix = Path(tempfile.mkdtemp(prefix="sessup-nginx-"))
        os.chmod(self.prefix, 0o755)
        self.port = free_port()
        self.http_port = free_port()
        cert, key = self_signed(self.prefix)
        (self.prefix / "site.conf").write_text(render_site(upstream_port, self.port, self.http_port, cert, key))
        user = "user root root;\n" if os.geteuid() == 0 else ""
        temps = "".join(f"    {kind}_temp_path {self.prefix / kind};\n"
                        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (self.prefix / "nginx.conf").write_text(
            f"{user}worker_processes 1;\ndaemon off;\npid {self.prefix / 'nginx.pid'};\n"
            f"error_log {self.prefix / 'error.log'} warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"    access_log {self.prefix / 'access.log'};\n{temps}"
            f"    include {self.prefix / 'site.conf'};\n"
            "}\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.prefix / "stderr.log", "wb") as stderr:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [self.binary, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
                 "-e", str(self.prefix / "error.log")],
                stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 20
        while not port_answers("127.0.0.1", self.port, 0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start: {self.log()}")
            time.sleep(0.05)

    def pids(self) -> list[int]:
        """The master and its worker."""
        if self.proc is None:
            return []
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                return [self.proc.pid, *(int(p) for p in f.read().split())]
        except FileNotFoundError:
            return []

    def log(self) -> str:
        parts = []
        for name in ("stderr.log", "error.log"):
            path = self.prefix / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.prefix, ignore_errors=True)


@functools.cache
def client_context() -> ssl.SSLContext:
    """TLS without verification: the certificate is the tests' own, made a moment ago."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
