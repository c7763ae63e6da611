"""Slow and hostile clients against the production pairing (nginx, then gunicorn).

For about 17 seconds, 300 connections misbehave at once while a probe asks
for ``GET /`` every half second:

* 150 trickle a request's headers, a byte every half second, never ending
  them: nginx holds them (they cost gunicorn nothing) and closes each when
  ``client_header_timeout`` (10 s, deploy/nginx.conf) runs out;
* 150 send a body a byte every half second for 3 seconds and then stall,
  half to ``POST /upFile`` (streamed to gunicorn, from eight client
  addresses) and half to ``POST /session/destroy`` (read whole by nginx
  first).  Streaming uploads are capped (``limit_conn``: 16 in all, 4 per
  address), so at most 16 hold a gunicorn thread and the rest are answered
  503 at once; ``client_body_timeout`` (10 s without a byte) closes the
  stalled ones, and the application removes the partial uploads;
* one kept-alive connection idles until ``keepalive_timeout`` (15 s) closes it.

Every probe must get its answer.  The same attack straight at gunicorn, with
no nginx in front, holds its threads and the probes go unanswered: that is
why the profile puts nginx in front (docs/deployment.md).
"""
from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

import pytest

from .conftest import Browser, Stack
from .nginx import client_context

pytestmark = [pytest.mark.server, pytest.mark.slow]

TICK = 0.5  # seconds between two bytes of a slow client
BODY_STALL_AFTER = 3.0  # body tricklers stop sending then
RUN_FOR = 17.0  # past client_header_timeout, client_body_timeout after the stall, and keepalive_timeout
HEADER_TRICKLERS = 150
BODY_TRICKLERS = 150
UPLOAD_CAP = 16  # limit_conn sessup_uploads in deploy/nginx.conf
ADDRESSES = [f"127.0.0.{i}" for i in range(2, 10)]  # eight clients for the upload tricklers


@dataclass
class Slow:
    sock: ssl.SSLSocket
    kind: str  # "header", "upload" or "buffered"
    answer: bytes = b""
    closed_at: float | None = None


@dataclass
class Probes:
    statuses: list[int | str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, base: str) -> None:
        while not self.stop.wait(TICK):
            try:
                status, _, _ = Browser(base, timeout=5).request("GET", "/")
                self.statuses.append(status)
            except OSError as exc:
                self.statuses.append(type(exc).__name__)


def open_tls(port: int, source: str = "127.0.0.1") -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock = client_context().wrap_socket(raw, server_hostname="127.0.0.1")
    return sock


def test_slow_and_idle_clients_cannot_starve_the_server(stack: Stack) -> None:
    base = stack.front.url
    port = stack.front.port
    browser = Browser(base).login()
    host = f"127.0.0.1:{port}"
    slow: list[Slow] = []
    for _ in range(HEADER_TRICKLERS):
        sock = open_tls(port)
        sock.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode())
        slow.append(Slow(sock, "header"))
    boundary = "slowboundary"
    part = (f'--{boundary}\r\nContent-Disposition: form-data; name="inputFile"; filename="slow.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n")
    for i in range(BODY_TRICKLERS):
        if i % 2 == 0:
            sock = open_tls(port, ADDRESSES[i // 2 % len(ADDRESSES)])
            sock.sendall((f"POST /upFile HTTP/1.1\r\nHost: {host}\r\nOrigin: {base}\r\nCookie: {browser.cookie}\r\n"
                          f"X-CSRF-Token: {browser.token}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                          f"Content-Length: 100000\r\n\r\n{part}").encode())
            slow.append(Slow(sock, "upload"))
        else:
            sock = open_tls(port)
            sock.sendall((f"POST /session/destroy HTTP/1.1\r\nHost: {host}\r\nOrigin: {base}\r\n"
                          "Content-Type: application/x-www-form-urlencoded\r\n"
                          "Content-Length: 100000\r\n\r\n").encode())
            slow.append(Slow(sock, "buffered"))
    idle = open_tls(port)
    idle.sendall(f"GET /csrf HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    idle_answer = Slow(idle, "idle")
    for conn in (*slow, idle_answer):
        conn.sock.setblocking(False)

    probes = Probes()
    prober = threading.Thread(target=probes.run, args=(base,), daemon=True)
    start = time.monotonic()
    prober.start()
    try:
        while (now := time.monotonic() - start) < RUN_FOR:
            for conn in slow:
                if conn.closed_at is None and (conn.kind == "header" or now < BODY_STALL_AFTER):
                    try:
                        conn.sock.send(b"a")
                    except (ssl.SSLWantWriteError, BlockingIOError):
                        pass
                    except OSError:  # closed by the server: read what it said first
                        read(conn, now)
                        conn.closed_at = now
            deadline = time.monotonic() + TICK
            while (left := deadline - time.monotonic()) > 0:
                live = [c for c in (*slow, idle_answer) if c.closed_at is None]
                readable, _, _ = select.select([c.sock for c in live], [], [], left)
                for conn in live:
                    if conn.sock in readable:
                        read(conn, time.monotonic() - start)
    finally:
        probes.stop.set()
        prober.join(10)
        for conn in (*slow, idle_answer):
            conn.sock.close()

    # Every probe was answered, all along.
    assert len(probes.statuses) >= RUN_FOR / TICK / 2
    assert set(probes.statuses) == {200}, probes.statuses
    # Streaming uploads beyond the cap were refused at once (503; nginx then
    # discards their bodies); at most the cap held a gunicorn thread.
    uploads = [c for c in slow if c.kind == "upload"]
    refused = [c for c in uploads if c.answer.startswith(b"HTTP/1.1 503 ")]
    held = [c for c in uploads if c not in refused]
    assert 0 < len(held) <= UPLOAD_CAP
    # Stalled and trickling connections were closed by nginx's timeouts, idle ones too.
    for kind in ("header", "upload", "buffered"):
        still_open = [c for c in slow if c.kind == kind and c.closed_at is None]
        assert still_open == [], f"{len(still_open)} {kind} connections still open"
    assert idle_answer.answer.startswith(b"HTTP/1.1 200 ") and idle_answer.closed_at is not None
    # The uploads cut short left nothing behind.
    deadline = time.monotonic() + 10
    while list((stack.upload_dir / ".tmp").glob("*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list((stack.upload_dir / ".tmp").glob("*")) == []
    assert "Traceback" not in stack.server.log()


def read(conn: Slow, now: float) -> None:
    try:
        while True:
            data = conn.sock.recv(65536)
            if not data:
                conn.closed_at = now
                return
            conn.answer += data
    except (ssl.SSLWantReadError, BlockingIOError):
        return
    except OSError:
        conn.closed_at = now
